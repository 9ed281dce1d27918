//! The optimization passes: what the optimized IR of every seed network no longer runs, that the
//! memory plan never lets two live buffers overlap, and small networks that exercise each rewrite
//! and each case where a rewrite must not happen, every one run against the reference
//! interpreter on the unoptimized graph (`max |jit - ref| / max(1, max |ref|) <= 1e-4`).

use netc::ir::op::Op;
use netc::ir::{Graph, Kernel, Runs};
use netc::runtime::input;
use std::collections::HashMap;
use std::path::Path;

fn seed_nets() -> Vec<std::path::PathBuf> {
    let mut nets: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    nets.sort();
    nets
}

fn compile_net(path: &Path) -> netc::Compiled {
    netc::compile_file(path, &netc::Options::default(), None).unwrap_or_else(|f| panic!("{}", f.render()))
}

fn compile_src(src: &str, batch: usize) -> netc::Compiled {
    let options = netc::Options {
        overrides: vec![],
        batch,
    };
    netc::compile_source("t.net", src, None, &options, None).unwrap_or_else(|f| panic!("{}", f.render()))
}

/// What runs for each node of the optimized graph, by name.
fn runs(c: &netc::Compiled) -> HashMap<String, Runs> {
    let g = c.optimized.as_ref().unwrap();
    g.g.node_weights()
        .map(|n| (n.name.clone(), n.place.as_ref().unwrap().runs))
        .collect()
}

/// The JIT on the optimized graph against the reference interpreter on the unoptimized one, at
/// one and two threads.
fn check_numerics(c: &netc::Compiled) {
    let w = c.init_weights(21);
    let x = input::random(c.input_shape(), 8);
    let expected = c.run_reference(&w, &x).unwrap();
    let mut exe = c.compile_jit(&w, &netc::codegen::Options::default()).unwrap();
    let one = exe.run(&x, 1).unwrap();
    for (e, f) in expected.iter().zip(&one) {
        assert_eq!(e.shape, f.shape);
        let scale = e.max_abs().max(1.0);
        let err = e.max_abs_diff(f);
        assert!(err / scale <= 1e-4, "max error {err} (scale {scale})");
    }
    assert_eq!(one, exe.run(&x, 2).unwrap(), "1 and 2 threads differ");
}

#[test]
fn seed_nets_run_no_batchnorm_activation_or_channel_copy_kernel() {
    for path in seed_nets() {
        let c = compile_net(&path);
        let g = c.optimized.as_ref().unwrap();
        for n in g.g.node_weights() {
            let moves_data = matches!(
                n.op,
                Op::BatchNorm { .. }
                    | Op::Dropout { .. }
                    | Op::Act(_)
                    | Op::Shuffle { .. }
                    | Op::Concat
                    | Op::Slice { .. }
                    | Op::Add
            );
            let kernel = matches!(n.place.as_ref().unwrap().runs, Runs::Kernel(_));
            assert!(
                !(moves_data && kernel),
                "{}: `{}` ({}) still runs a kernel",
                path.display(),
                n.name,
                n.op.kind()
            );
            assert!(
                n.place.as_ref().unwrap().staged.is_empty(),
                "{}: `{}` stages an input",
                path.display(),
                n.name
            );
        }
    }
}

/// Independently of the planner: a buffer is live from the first node placed in it to the last
/// node reading any node placed in it (the input from the start, outputs to the end); live
/// buffers must not share memory.
fn assert_plan_sound(g: &Graph) {
    let order = g.topo_order().unwrap();
    let pos: HashMap<_, _> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut live: HashMap<usize, (usize, usize)> = HashMap::new();
    for &ix in &order {
        let p = g.node(ix).place.as_ref().unwrap();
        let from = if g.inputs.contains(&ix) { 0 } else { pos[&ix] };
        let to = if g.outputs.contains(&ix) {
            usize::MAX
        } else {
            g.users_of(ix)
                .iter()
                .map(|u| pos[u])
                .max()
                .unwrap_or(pos[&ix])
                .max(pos[&ix])
        };
        let e = live.entry(p.buffer).or_insert((from, to));
        *e = (e.0.min(from), e.1.max(to));
        for &(_, b) in &p.staged {
            live.entry(b).or_insert((pos[&ix], pos[&ix]));
        }
    }
    let arena = g.arena.unwrap();
    let bufs: Vec<_> = live.into_iter().collect();
    for (i, &(a, (af, at))) in bufs.iter().enumerate() {
        let ba = &g.buffers[a];
        let (ao, al) = (ba.offset.unwrap(), ba.len());
        assert!(ao + al <= arena, "b{a} ends past the arena");
        for &(b, (bf, bt)) in &bufs[i + 1..] {
            let bb = &g.buffers[b];
            let (bo, bl) = (bb.offset.unwrap(), bb.len());
            let together = af <= bt && bf <= at;
            let overlap = ao < bo + bl && bo < ao + al && al > 0 && bl > 0;
            assert!(
                !(together && overlap),
                "{}: b{a} {:?} and b{b} {:?} are live together and overlap",
                g.name,
                (af, at),
                (bf, bt)
            );
        }
    }
}

#[test]
fn memory_plans_never_overlap_live_buffers() {
    for path in seed_nets() {
        let c = compile_net(&path);
        assert_plan_sound(c.optimized.as_ref().unwrap());
    }
}

#[test]
fn arena_is_far_below_the_sum_of_activations() {
    let c = compile_net(Path::new("nets/mobilenet_v2.net"));
    let planned = c.planned().unwrap();
    let s = netc::report::stats(&c.graph, &planned);
    // The 112x112x96 expansion (4.8 MB) and its 56x56x96 depthwise output (1.2 MB) are live
    // together; everything else fits around them.
    assert!(s.arena_bytes < 7_000_000, "MobileNetV2 arena {}", s.arena_bytes);
    assert!(s.arena_bytes * 10 < s.activation_bytes);
}

#[test]
fn batchnorm_folds_into_the_conv_before_it() {
    let c = compile_src(
        "net t {\n input x: [5, 9, 9]\n return x |> conv(7, 3, pad = 1) as c |> batchnorm as bn |> relu6\n}\n",
        2,
    );
    let r = runs(&c);
    assert_eq!(r["c"], Runs::Kernel(Kernel::Direct));
    assert!(!r.contains_key("bn"));
    let g = c.optimized.as_ref().unwrap();
    let conv = g.g.node_weights().find(|n| n.name == "c").unwrap();
    assert_eq!(conv.fused.bn.as_ref().unwrap().name, "bn");
    assert!(conv.fused.act.is_some());
    check_numerics(&c);
}

#[test]
fn batchnorm_does_not_fold_into_a_conv_with_another_user() {
    let c = compile_src(
        "net t {\n input x: [4, 6, 6]\n let y = x |> conv(4, 1) as c\n return add(y, y |> batchnorm as bn)\n}\n",
        1,
    );
    let r = runs(&c);
    assert_eq!(r["bn"], Runs::Kernel(Kernel::ScaleShift));
    check_numerics(&c);
}

#[test]
fn batchnorm_after_an_activation_becomes_a_post_scale() {
    let c = compile_src(
        "net t {\n input x: [6, 8, 8]\n return x |> conv(6, 3, pad = 1, groups = 6) as dw |> leaky_relu(0.3) |> batchnorm as bn\n}\n",
        1,
    );
    let g = c.optimized.as_ref().unwrap();
    let dw = g.g.node_weights().find(|n| n.name == "dw").unwrap();
    assert_eq!(dw.fused.post_bn.as_ref().unwrap().name, "bn");
    check_numerics(&c);
}

#[test]
fn residual_add_and_activation_join_the_conv() {
    let c = compile_src(
        "net t {\n input x: [8, 7, 7]\n let y = x |> conv(8, 1) as a |> batchnorm |> relu |> conv(8, 1) as b |> batchnorm\n return add(x, y) as sum |> relu\n}\n",
        3,
    );
    let r = runs(&c);
    assert!(!r.contains_key("sum"));
    let g = c.optimized.as_ref().unwrap();
    let b = g.g.node_weights().find(|n| n.name == "b").unwrap();
    assert!(b.fused.residual && b.fused.act.is_some());
    check_numerics(&c);
}

#[test]
fn activation_after_a_concat_joins_every_part() {
    let c = compile_src(
        "net t {\n input x: [4, 9, 9]\n let a = x |> avgpool(3, stride = 2, pad = 1) as p\n let b = x |> conv(4, 3, stride = 2, pad = 1) as c\n return concat(a, b) as cat |> relu |> conv(3, 1)\n}\n",
        1,
    );
    let r = runs(&c);
    assert_eq!(r["cat"], Runs::View);
    check_numerics(&c);
}

#[test]
fn a_concat_that_is_an_output_is_copied() {
    let c = compile_src(
        "net t {\n input x: [3, 5, 5]\n return concat(x |> conv(2, 1) as a, x |> conv(3, 1) as b) as cat\n}\n",
        1,
    );
    assert_eq!(runs(&c)["cat"], Runs::Kernel(Kernel::Gather));
    check_numerics(&c);
}

#[test]
fn shuffles_and_splits_are_views_through_residuals() {
    // ShuffleNet V2's unit twice, then a depthwise conv over the permuted channels and a
    // residual add with a permuted operand.
    let src = "net t {\n input x: [8, 6, 6]\n let s = x |> conv(8, 1) as stem\n for i in range(2) {\n  let (l, r) = split(s, 2) as split{i}\n  let b = r |> conv(4, 1) |> relu |> conv(4, 1) as pw{i} |> relu\n  s = concat(l, b) as cat{i} |> shuffle(2) as shuf{i}\n }\n let d = s |> dwconv(3, pad = 1) as dw\n return add(d |> conv(8, 1) as last, s) as sum\n}\n";
    let c = compile_src(src, 2);
    let r = runs(&c);
    for name in ["split0.0", "split0.1", "cat0", "shuf0", "cat1", "shuf1"] {
        assert_eq!(r[name], Runs::View, "{name}");
    }
    check_numerics(&c);
}

/// The slots a node's output occupies.
fn slots_of(c: &netc::Compiled, name: &str) -> Vec<usize> {
    let g = c.optimized.as_ref().unwrap();
    let node = g.g.node_weights().find(|n| n.name == name).unwrap();
    node.place.as_ref().unwrap().slots.clone()
}

#[test]
fn a_grouped_conv_before_a_shuffle_writes_in_order_when_its_readers_take_any_order() {
    // ShuffleNet's unit: the shuffled channels go through a depthwise conv into a grouped 1x1
    // conv, which reads them through offsets, so the first grouped conv writes its channels in
    // order and the shuffle is a permuted view.
    let unit = "net t {\n input x: [12, 6, 6]\n let y = x |> conv(12, 1, groups = 3) as g1 |> relu |> shuffle(3) as sh |> dwconv(3, pad = 1) as dw |> conv(12, 1, groups = 3) as g2\n return add(y, x) |> relu\n}\n";
    let c = compile_src(unit, 2);
    assert_eq!(slots_of(&c, "g1"), (0..12).collect::<Vec<_>>());
    assert_eq!(runs(&c)["sh"], Runs::View);
    check_numerics(&c);
    // Before a softmax, which reads its channels in order, the conv writes them shuffled.
    let ordered = "net t {\n input x: [12, 6, 6]\n return x |> conv(12, 1, groups = 3) as g1 |> shuffle(3) as sh |> softmax |> conv(4, 1)\n}\n";
    let c = compile_src(ordered, 1);
    assert_ne!(slots_of(&c, "g1"), (0..12).collect::<Vec<_>>());
    assert_eq!(runs(&c)["sh"], Runs::View);
    check_numerics(&c);
}

#[test]
fn a_shuffle_output_is_copied_in_order() {
    let c = compile_src("net t {\n input x: [6, 3, 3]\n return x |> shuffle(3) as s\n}\n", 1);
    assert_eq!(runs(&c)["s"], Runs::Kernel(Kernel::Gather));
    check_numerics(&c);
}

#[test]
fn dropout_and_unused_nodes_are_removed() {
    let c = compile_src(
        "net t {\n input x: [3, 4, 4]\n let unused = x |> conv(5, 1) as u\n return x |> dropout(0.5) as d |> conv(2, 1) as c\n}\n",
        1,
    );
    let r = runs(&c);
    assert!(!r.contains_key("u") && !r.contains_key("d"));
    check_numerics(&c);
}

/// One random step of a generated network: `s` is the current tensor of `c` channels.
fn step(kind: u8, c: usize, i: usize, arg: usize) -> (String, usize) {
    match kind % 9 {
        // 1x1 conv, batchnorm and maybe an activation
        0 => {
            let out = 2 + arg % 7;
            let act = ["", " |> relu", " |> relu6", " |> leaky_relu(0.1)"][arg % 4];
            (format!("s = s |> conv({out}, 1) as pw{i} |> batchnorm{act}"), out)
        }
        // depthwise 3x3, stride 1, batchnorm
        1 => (format!("s = s |> dwconv(3, pad = 1) as dw{i} |> batchnorm"), c),
        // channel shuffle
        2 if c.is_multiple_of(2) => (format!("s = s |> shuffle(2) as sh{i}"), c),
        // ShuffleNet V2 unit
        3 if c.is_multiple_of(2) => {
            let h = c / 2;
            (
                format!(
                    "let (l{i}, r{i}) = split(s, 2) as split{i}\n s = concat(l{i}, r{i} |> conv({h}, 1) |> relu |> dwconv(3, pad = 1) |> batchnorm |> conv({h}, 1) |> batchnorm |> relu) as cat{i} |> shuffle(2)"
                ),
                c,
            )
        }
        // a concat of a pooling and a conv branch, activation after the concat
        4 => {
            let b = 1 + arg % 5;
            (
                format!("s = concat(s |> avgpool(3, stride = 1, pad = 1), s |> conv({b}, 3, pad = 1) |> batchnorm) as cat{i} |> relu"),
                c + b,
            )
        }
        // residual block
        5 => (
            format!(
                "s = add(s, s |> conv({c}, 1) |> batchnorm |> relu |> conv({c}, 1) |> batchnorm) as add{i} |> relu"
            ),
            c,
        ),
        // a slice
        6 if c > 2 => {
            let end = 1 + arg % (c - 1);
            (format!("s = slice(s, 0, {end}) as slice{i}"), end)
        }
        // a standalone batchnorm and activation after a pool (nothing to fold into)
        7 => (
            format!("s = s |> maxpool(3, stride = 1, pad = 1) |> batchnorm as bn{i} |> relu"),
            c,
        ),
        // grouped 1x1 conv when the channels divide
        _ if c.is_multiple_of(2) => (
            format!("s = s |> conv({c}, 1, groups = 2) as gc{i} |> batchnorm |> relu"),
            c,
        ),
        _ => (format!("s = s |> conv({c}, 1) as pw{i}"), c),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

    /// Random networks of convolutions, batchnorms, activations, splits, shuffles, concats,
    /// slices and residual adds: the optimized code against the reference interpreter.
    #[test]
    fn random_networks_keep_their_numerics(
        c0 in 1usize..9,
        hw in 1usize..8,
        batch in 1usize..3,
        steps in proptest::collection::vec((0u8..9, 0usize..64), 1..7),
    ) {
        let mut body = String::from(" let s = x\n");
        let mut c = c0;
        for (i, &(kind, arg)) in steps.iter().enumerate() {
            let (line, next) = step(kind, c, i, arg);
            body += &format!(" {line}\n");
            c = next;
        }
        let src = format!("net t {{\n input x: [{c0}, {hw}, {}]\n{body} return s |> conv(3, 1) as head\n}}\n", hw + 1);
        let compiled = compile_src(&src, batch);
        check_numerics(&compiled);
        assert_plan_sound(compiled.optimized.as_ref().unwrap());
    }
}

#[test]
fn an_input_a_kernel_cannot_read_in_place_is_gathered_first() {
    // After the shuffle, the first four channels sit in slots 0, 4, 1, 5: not a contiguous
    // range, which a depthwise conv needs.
    let src = "net t {\n input x: [8, 5, 5]\n let s = concat(x |> conv(4, 1) as a, x |> conv(4, 3, pad = 1) as b) as cat |> shuffle(2) as sh\n return slice(s, 0, 4) as part |> dwconv(3, pad = 1) as dw |> conv(2, 1)\n}\n";
    let c = compile_src(src, 2);
    let g = c.optimized.as_ref().unwrap();
    let dw = g.g.node_weights().find(|n| n.name == "dw").unwrap();
    assert_eq!(
        dw.place.as_ref().unwrap().staged.len(),
        1,
        "the depthwise input is staged"
    );
    check_numerics(&c);
}
