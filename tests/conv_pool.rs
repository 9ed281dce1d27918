//! A dense convolution with the max pooling after it fused (`+maxpool`, `kernels/conv_pool.rs`)
//! against the reference interpreter, which runs the two layers as written: random convolution
//! and pooling shapes (strides above, equal to and below the window, padding, `ceil`), batches
//! whose images share a ring, channel counts around the vector widths, on every instruction set
//! of this CPU, with one and two threads giving the same bits. And the fusion rule: which
//! networks fuse, and that the fused network's arena no longer holds the convolution's output.

use netc::codegen::Isa;
use netc::runtime::input;
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

fn compile(src: &str, batch: usize) -> netc::Compiled {
    let options = netc::Options {
        overrides: vec![],
        batch,
    };
    netc::compile_source("t.net", src, None, &options, None).unwrap_or_else(|f| panic!("{}", f.render()))
}

/// Runs `src` on every instruction set, one and two threads, against the reference; returns
/// the printed IR.
fn check(src: &str, batch: usize) -> String {
    let compiled = compile(src, batch);
    let weights = compiled.init_weights(5);
    let x = input::random(compiled.input_shape(), 11);
    let expected = compiled.run_reference(&weights, &x).unwrap();
    for isa in Isa::testable() {
        let options = netc::codegen::Options {
            isa,
            ..Default::default()
        };
        let mut exe = compiled.compile_jit(&weights, &options).unwrap();
        let one = exe.run(&x, 1).unwrap();
        for (e, f) in expected.iter().zip(&one) {
            assert_eq!(e.shape, f.shape, "{src}");
            let scale = e.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = e
                .data
                .iter()
                .zip(&f.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
                / scale;
            assert!(err <= TOLERANCE, "{src} ({isa:?}): relative error {err}");
        }
        let two = exe.run(&x, 2).unwrap();
        assert_eq!(one, two, "{src} ({isa:?}): 1 and 2 threads differ");
    }
    netc::ir::print::print(&compiled.planned().unwrap())
}

fn net(c: usize, h: usize, w: usize, body: &str) -> String {
    format!("net t {{\n    input x: [{c}, {h}, {w}]\n    {body}\n}}\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fused_stems_match_the_reference(
        cin in 1usize..=4,
        cout in prop_oneof![2usize..=40, Just(64), Just(96)],
        (h, w) in (9usize..=23, 9usize..=23),
        k in 2usize..=4,
        stride in 1usize..=2,
        pad in 0usize..=1,
        (pk, ps) in prop_oneof![Just((3usize, 2usize)), Just((2, 2)), Just((3, 1)), Just((1, 2)), Just((2, 3))],
        pool_pad in 0usize..=1,
        ceil in any::<bool>(),
        relu in any::<bool>(),
        batch in 1usize..=2,
    ) {
        let pool_pad = pool_pad.min(pk / 2);
        let act = if relu { " |> relu" } else { "" };
        let body = format!(
            "return x |> conv({cout}, {k}, stride = {stride}, pad = {pad}) as c |> batchnorm as bn{act} \
             |> maxpool({pk}, stride = {ps}, pad = {pool_pad}, ceil = {ceil}) as p"
        );
        let src = net(cin, h, w, &body);
        let ir = check(&src, batch);
        prop_assert!(ir.contains("+maxpool("), "not fused:\n{ir}");
    }
}

#[test]
fn the_seed_stems_fuse_and_their_output_leaves_the_arena() {
    for (file, stem) in [
        ("nets/shufflenet.net", "conv1"),
        ("nets/shufflenet_v2.net", "conv1"),
        ("nets/squeezenet.net", "conv1"),
        ("nets/squeezenet_v1_1.net", "conv1"),
    ] {
        let options = netc::Options {
            overrides: vec![],
            batch: 1,
        };
        let compiled =
            netc::compile_file(std::path::Path::new(file), &options, None).unwrap_or_else(|f| panic!("{}", f.render()));
        let planned = compiled.planned().unwrap();
        let g: &netc::ir::Graph = &planned;
        let ix = g.g.node_indices().find(|&i| g.node(i).name == stem).expect("the stem");
        let node = g.node(ix);
        assert!(node.fused.pool.is_some(), "{file}: {stem} has no fused pooling");
        // The node now has the pooling's shape, and no buffer holds the convolution's output.
        let pooled: usize = node.shape.0.iter().product();
        let conv_out = netc::passes::place::conv_shape(g, ix).0.iter().product::<usize>();
        assert!(conv_out > 3 * pooled, "{file}");
        assert!(
            g.buffers.iter().all(|b| b.len() < conv_out),
            "{file}: a buffer is as large as the convolution's output"
        );
    }
}

#[test]
fn a_pooling_that_cannot_join_stays_a_layer() {
    let cases = [
        // Average pooling.
        "return x |> conv(8, 3, pad = 1) as c |> avgpool(2, stride = 2) as p",
        // A convolution with another user.
        "let c = x |> conv(8, 3, pad = 1) as c\n    return concat(c |> maxpool(3, stride = 1, pad = 1) as p, c)",
        // A 1x1 convolution (a matrix multiply) and a depthwise one.
        "return x |> conv(8, 1) as c |> maxpool(2, stride = 2) as p",
        "return x |> conv(4, 3, pad = 1, groups = 4) as c |> maxpool(2, stride = 2) as p",
        // A ring of 16 rows of 512 pixels by 16 channels: 512 KiB.
        "return x |> conv(16, 3, pad = 1) as c |> maxpool(16, stride = 16) as p",
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let (h, w) = if i == 4 { (32, 512) } else { (9, 9) };
        let ir = check(&net(4, h, w, body), 1);
        assert!(!ir.contains("+maxpool("), "fused:\n{ir}");
        assert!(ir.contains(" = maxpool(") || ir.contains(" = avgpool("), "{ir}");
    }
}

#[test]
fn an_activation_after_the_pooling_stays_a_layer() {
    // Nothing joins a node after its pooling: the leaky relu (not monotonic for a negative
    // slope) runs on the pooled values.
    let body = "return x |> conv(8, 3, pad = 1) as c |> maxpool(3, stride = 2) as p |> leaky_relu(-0.5) as a";
    let ir = check(&net(3, 11, 12, body), 2);
    assert!(ir.contains("+maxpool("), "{ir}");
    assert!(ir.contains(" = leaky_relu("), "{ir}");
}
