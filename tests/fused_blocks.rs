//! Block fusion (the `fuse_blocks` pass and the streaming block kernel): every seed network with
//! every eligible block fused, and random inverted-residual and depthwise-separable blocks, run
//! against the reference interpreter on the unoptimized graph
//! (`max |jit - ref| / max(1, max |ref|) <= 1e-4`) on every instruction set this CPU runs, with
//! bit-identical results on 1, 2 and 3 threads; and the memory figures `netc stats` reports.

use netc::codegen::Isa;
use netc::ir::op::Op;
use netc::ir::PassOptions;
use netc::runtime::input;
use proptest::prelude::*;
use std::path::Path;

const TOLERANCE: f32 = 1e-4;

/// Block fusion wherever the pass can apply it, whatever the tensor sizes.
fn everywhere() -> PassOptions {
    PassOptions {
        fuse_blocks: true,
        fuse_min_bytes: 0,
    }
}

fn options(overrides: &[(&str, &str)], batch: usize) -> netc::Options {
    netc::Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch,
    }
}

fn blocks(c: &netc::Compiled) -> usize {
    let g = c.optimized.as_ref().unwrap();
    g.g.node_weights().filter(|n| matches!(n.op, Op::Block(_))).count()
}

/// Runs `c` on every testable ISA against the reference; returns how many blocks were fused.
fn check(c: &netc::Compiled, what: &str) -> usize {
    let w = c.init_weights(3);
    let x = input::random(c.input_shape(), 9);
    let expected = c.run_reference(&w, &x).unwrap();
    for isa in Isa::testable() {
        let opts = netc::codegen::Options {
            isa,
            ..Default::default()
        };
        let mut exe = c.compile_jit(&w, &opts).unwrap();
        let one = exe.run(&x, 1).unwrap();
        for (e, f) in expected.iter().zip(&one) {
            assert_eq!(e.shape, f.shape);
            let scale = e.max_abs().max(1.0);
            let err = e.max_abs_diff(f);
            assert!(
                err / scale <= TOLERANCE,
                "{what} {isa:?}: max error {err} (scale {scale})"
            );
        }
        for threads in [2, 3] {
            assert_eq!(
                one,
                exe.run(&x, threads).unwrap(),
                "{what} {isa:?}: 1 and {threads} threads differ"
            );
        }
    }
    blocks(c)
}

fn seed(file: &str, overrides: &[(&str, &str)], batch: usize) -> usize {
    let c = netc::compile_file_with(Path::new(file), &options(overrides, batch), &everywhere(), None)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    check(&c, file)
}

#[test]
fn mobilenet_v2_fused() {
    // Every block: 16 inverted residuals and the first depthwise-separable pair.
    assert_eq!(seed("nets/mobilenet_v2.net", &[("res", "96")], 1), 17);
    assert!(seed("nets/mobilenet_v2.net", &[("alpha", "0.35"), ("res", "67")], 2) > 0);
}

#[test]
fn other_seed_nets_fused() {
    for file in ["nets/mobilenet.net", "nets/fd_mobilenet.net"] {
        assert!(seed(file, &[("res", "96")], 1) > 0, "{file}: nothing fused");
    }
    for file in [
        "nets/shufflenet.net",
        "nets/shufflenet_v2.net",
        "nets/effnet.net",
        "nets/squeezenet.net",
        "nets/squeezenet_v1_1.net",
    ] {
        seed(file, &[], 1);
    }
}

#[test]
fn mobilenet_v2_arena() {
    let c = netc::compile_file(Path::new("nets/mobilenet_v2.net"), &netc::Options::default(), None).unwrap();
    let s = netc::report::stats(&c.graph, &c.planned().unwrap());
    assert!(s.arena_bytes <= (26 << 20) / 10, "arena {} > 2.6 MiB", s.arena_bytes);
    assert_eq!(s.arena_bytes, s.arena_bytes_fused);
    assert!(
        s.arena_bytes_unfused > 5_000_000,
        "unfused arena {}",
        s.arena_bytes_unfused
    );
    // The stem streams into the first block: the largest tensor is the first bottleneck
    // (112x112x16), not the stem's 112x112x32 output or a block's expanded tensor.
    assert_eq!(s.largest_tensor_bytes_fused, 112 * 112 * 16 * 4);
    let first = c
        .optimized
        .as_ref()
        .unwrap()
        .g
        .node_weights()
        .find_map(|n| match &n.op {
            Op::Block(b) if b.project.name == "block1.project.conv" => b.first.as_ref().map(|s| s.name.clone()),
            _ => None,
        });
    assert_eq!(first.as_deref(), Some("stem.conv"));
    assert_eq!(s.largest_tensor_bytes_unfused, 112 * 112 * 96 * 4);

    let off = PassOptions {
        fuse_blocks: false,
        ..Default::default()
    };
    let c = netc::compile_file_with(
        Path::new("nets/mobilenet_v2.net"),
        &netc::Options::default(),
        &off,
        None,
    )
    .unwrap();
    assert_eq!(blocks(&c), 0);
    let s = netc::report::stats(&c.graph, &c.planned().unwrap());
    assert_eq!(s.arena_bytes, s.arena_bytes_unfused);
}

/// One block: an optional expansion (`t > 1`) or a dense `kh x kw` convolution with stride
/// `sd` to `cin * t` channels (`dense`), a `k x k` depthwise convolution with stride `s`, a
/// projection (with a relu and a batchnorm after it when `post`), and a residual when asked and
/// the shapes allow it, over a `cin x h x w` input.
#[derive(Debug)]
struct BlockCase {
    cin: usize,
    t: usize,
    dense: Option<(usize, usize, usize)>,
    k: usize,
    s: usize,
    cout: usize,
    h: usize,
    w: usize,
    residual: bool,
    post: bool,
}

fn block_net(b: &BlockCase) -> String {
    let BlockCase {
        cin,
        t,
        dense,
        k,
        s,
        cout,
        h,
        w,
        residual,
        post,
    } = *b;
    let hidden = cin * t;
    let expand = match dense {
        Some((kh, kw, sd)) => {
            format!(
                "y = y |> conv({hidden}, [{kh}, {kw}], stride = {sd}, pad = same, bias = true) |> batchnorm |> relu\n"
            )
        }
        None if t > 1 => format!("y = y |> conv({hidden}, 1, bias = false) |> batchnorm |> relu6\n"),
        None => String::new(),
    };
    let same_size = dense.is_none_or(|(_, _, sd)| sd == 1);
    let project_act = if post { " |> relu |> batchnorm" } else { "" };
    let out = if residual && s == 1 && same_size && cin == cout {
        "x + y"
    } else {
        "y"
    };
    format!(
        "net t {{
    input image: [{cin}, {h}, {w}]
    let x = image |> relu
    let y = x
    {expand}
    y = y |> conv({hidden}, {k}, stride = {s}, pad = {p}, groups = {hidden}, bias = true) |> batchnorm |> relu6
    y = y |> conv({cout}, 1, bias = false) |> batchnorm{project_act}
    return {out} |> relu
}}",
        p = (k - 1) / 2
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn random_blocks(
        cin in 1usize..=21,
        t in 1usize..=6,
        dense in prop::option::weighted(0.3, (1usize..=4, 1usize..=4, 1usize..=2)),
        k in prop::sample::select(&[3usize, 5][..]),
        s in 1usize..=2,
        cout in 1usize..=21,
        h in 1usize..=19,
        w in 1usize..=19,
        residual in any::<bool>(),
        post in any::<bool>(),
        batch in 1usize..=2,
    ) {
        let cout = if residual { cin } else { cout };
        let src = block_net(&BlockCase { cin, t, dense, k, s, cout, h, w, residual, post });
        let c = netc::compile_source_with("t.net", &src, None, &options(&[], batch), &everywhere(), None)
            .unwrap_or_else(|f| panic!("{}\n{src}", f.render()));
        let fused = check(&c, &src);
        // Without the size rules, every block fuses, its first stage with it.
        prop_assert_eq!(fused, 1, "{}", src);
        if dense.is_some() || t > 1 {
            let optimized = c.optimized.as_ref().unwrap();
            let led = optimized.g.node_weights().any(|n| matches!(&n.op, Op::Block(b) if b.first.is_some()));
            prop_assert!(led, "the first stage did not join: {}", src);
        }
    }
}
