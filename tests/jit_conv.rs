//! The depthwise and vectorized dense convolution kernels against the reference interpreter, over
//! random layer configurations (and the stride-2 shapes of the depthwise kernel in particular);
//! their epilogue (residual add, activation, post-activation affine) on kernels built directly,
//! also for the scalar fallback and for pooling (activation); and every constructor on tensors
//! that are channel slices of wider buffers.

use netc::codegen::kernels::conv::Scalar;
use netc::codegen::kernels::depthwise::Depthwise;
use netc::codegen::kernels::direct::Direct;
use netc::codegen::kernels::pool::{Global, Windowed};
use netc::codegen::kernels::pool_wide::PoolWide;
use netc::codegen::kernels::window::{self, Epilogue};
use netc::codegen::kernels::{Kernel, Packer};
use netc::codegen::layout::Buf;
use netc::codegen::Level;
use netc::ir::op::{Activation, Conv, Hw, Pad, Pool, PoolKind};
use netc::runtime::input;
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

#[derive(Clone, Debug)]
enum Padding {
    Int(usize),
    Hw(usize, usize),
    Sides(usize, usize, usize, usize),
    Same,
    Valid,
}

impl Padding {
    fn source(&self) -> String {
        match self {
            Padding::Int(p) => p.to_string(),
            Padding::Hw(h, w) => format!("[{h}, {w}]"),
            Padding::Sides(t, b, l, r) => format!("[{t}, {b}, {l}, {r}]"),
            Padding::Same => "same".into(),
            Padding::Valid => "valid".into(),
        }
    }
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        (0usize..4).prop_map(Padding::Int),
        (0usize..4, 0usize..4).prop_map(|(h, w)| Padding::Hw(h, w)),
        (0usize..4, 0usize..4, 0usize..4, 0usize..4).prop_map(|(t, b, l, r)| Padding::Sides(t, b, l, r)),
        Just(Padding::Same),
        Just(Padding::Valid),
    ]
}

#[derive(Clone, Debug)]
struct Layer {
    depthwise: bool,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: Padding,
    bias: bool,
    batch: usize,
}

fn layer(depthwise: bool) -> impl Strategy<Value = Layer> {
    (
        (1usize..21, 1usize..20),
        (1usize..13, 1usize..24),
        (1usize..8, 1usize..8),
        (1usize..4, 1usize..4),
        (1usize..3, 1usize..3),
        padding(),
        any::<bool>(),
        1usize..4,
    )
        .prop_map(
            move |((cin, cout), (h, w), kernel, stride, dilation, pad, bias, batch)| Layer {
                depthwise,
                cin,
                cout: if depthwise { cin } else { cout },
                h,
                w,
                kernel,
                stride,
                dilation,
                pad,
                bias,
                batch,
            },
        )
}

impl Layer {
    fn source(&self) -> String {
        let common = format!(
            "[{}, {}], stride = [{}, {}], pad = {}, dilation = [{}, {}], bias = {}",
            self.kernel.0,
            self.kernel.1,
            self.stride.0,
            self.stride.1,
            self.pad.source(),
            self.dilation.0,
            self.dilation.1,
            self.bias
        );
        let layer = if self.depthwise {
            format!("dwconv({common})")
        } else {
            format!("conv({}, {common})", self.cout)
        };
        format!(
            "net t() {{\n    input x: [{}, {}, {}]\n    return x |> {layer} as c\n}}\n",
            self.cin, self.h, self.w
        )
    }
}

/// Compiles the one-layer net (skipping configurations the shape rules reject) and compares the
/// generated code, on one and two threads, with the reference interpreter.
fn check(l: &Layer) -> Result<(), TestCaseError> {
    compare_with_reference(&l.source(), l.batch, &[netc::codegen::Isa::Native])
}

/// Compiles a one-layer net `src` at `batch` (skipping configurations the shape rules reject) and,
/// at each of `isas`, compares the generated code with the reference interpreter within
/// `TOLERANCE` and checks that one and two threads give the same bits.
fn compare_with_reference(src: &str, batch: usize, isas: &[netc::codegen::Isa]) -> Result<(), TestCaseError> {
    let options = netc::Options {
        overrides: Default::default(),
        batch,
    };
    let Ok(c) = netc::compile_source("t.net", src, None, &options, None) else {
        return Ok(());
    };
    let w = c.init_weights(3);
    let x = input::random(c.input_shape(), 7);
    let expected = c.run_reference(&w, &x).unwrap();
    for &isa in isas {
        let mut exe = c
            .compile_jit(&w, &netc::codegen::Options { keep_clif: false, isa })
            .unwrap();
        let one = exe.run(&x, 1).unwrap();
        for (e, f) in expected.iter().zip(&one) {
            prop_assert_eq!(&e.shape, &f.shape);
            let scale = e.max_abs().max(1.0);
            let err = e.max_abs_diff(f);
            prop_assert!(
                err / scale <= TOLERANCE,
                "max error {} (scale {}) at {:?} for\n{}",
                err,
                scale,
                isa,
                src
            );
        }
        let two = exe.run(&x, 2).unwrap();
        prop_assert_eq!(one, two, "1 and 2 threads differ at {:?} for\n{}", isa, src);
    }
    Ok(())
}

/// Depthwise layers of the shapes the stride-2 (and stride-1) interior loop handles: odd and even
/// sizes wider than a few tiles, padding, dilation, kernels 3 and 5 and the line kernels 1x3 and
/// 3x1, channel counts with and without a scalar remainder.
fn strided_depthwise() -> impl Strategy<Value = Layer> {
    (
        prop_oneof![Just(3usize), Just(4), Just(8), Just(13), Just(16), Just(24)],
        (5usize..30, 5usize..40),
        prop_oneof![Just((3usize, 3usize)), Just((5, 5)), Just((1, 3)), Just((3, 1))],
        prop_oneof![Just((2usize, 2usize)), Just((1, 1)), Just((2, 1)), Just((1, 2))],
        (1usize..3, 1usize..3),
        padding(),
        any::<bool>(),
        1usize..3,
    )
        .prop_map(|(c, (h, w), kernel, stride, dilation, pad, bias, batch)| Layer {
            depthwise: true,
            cin: c,
            cout: c,
            h,
            w,
            kernel,
            stride,
            dilation,
            pad,
            bias,
            batch,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn depthwise_matches_reference(l in layer(true)) {
        check(&l)?;
    }

    #[test]
    fn dense_matches_reference(l in layer(false)) {
        check(&l)?;
    }

    #[test]
    fn strided_depthwise_matches_reference(l in strided_depthwise()) {
        check(&l)?;
    }
}

#[test]
fn seed_shapes_match_reference() {
    let cases = [
        // MobileNetV2's stem and a depthwise stride-2 layer.
        (false, 3, 16, 17, 19, (3, 3), (2, 2), Padding::Int(1)),
        (true, 32, 32, 15, 15, (3, 3), (2, 2), Padding::Int(1)),
        // SqueezeNet's 7x7/2 stem and 3x3 expand; EffNet's line kernels and 2x1/[1, 2] conv.
        (false, 3, 12, 23, 23, (7, 7), (2, 2), Padding::Int(0)),
        (false, 16, 64, 13, 13, (3, 3), (1, 1), Padding::Int(1)),
        (false, 64, 20, 9, 9, (3, 3), (1, 1), Padding::Int(1)),
        (true, 36, 36, 16, 16, (1, 3), (1, 1), Padding::Same),
        (true, 36, 36, 8, 16, (3, 1), (1, 1), Padding::Same),
        (false, 32, 64, 8, 16, (2, 1), (1, 2), Padding::Same),
        (true, 1, 1, 5, 40, (5, 5), (1, 1), Padding::Same),
        // MobileNets' stride-2 depthwise layers, scaled down; odd sizes.
        (true, 96, 96, 12, 12, (3, 3), (2, 2), Padding::Int(1)),
        (true, 64, 64, 11, 13, (3, 3), (2, 2), Padding::Int(1)),
        (true, 20, 20, 9, 23, (5, 5), (2, 2), Padding::Int(2)),
        (true, 12, 12, 15, 9, (1, 3), (2, 2), Padding::Same),
        (true, 12, 12, 15, 9, (3, 1), (2, 2), Padding::Same),
        // Many border rows (they share the path that reads a zero row), and no interior row.
        (true, 12, 12, 11, 13, (7, 7), (1, 1), Padding::Int(3)),
        (true, 9, 9, 3, 12, (5, 5), (1, 1), Padding::Int(2)),
    ];
    for (depthwise, cin, cout, h, w, kernel, stride, pad) in cases {
        let l = Layer {
            depthwise,
            cin,
            cout,
            h,
            w,
            kernel,
            stride,
            dilation: (1, 1),
            pad,
            bias: true,
            batch: 2,
        };
        check(&l).unwrap();
    }
}

fn act(a: Option<Activation>, v: f32) -> f32 {
    match a {
        None => v,
        Some(Activation::Relu) => v.max(0.0),
        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
        Some(Activation::LeakyRelu { slope }) => {
            if v < 0.0 {
                v * slope
            } else {
                v
            }
        }
    }
}

const ACTIVATIONS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Relu6),
    Some(Activation::LeakyRelu { slope: 0.1 }),
];

/// Runs `k` on a copy of `arena`, its items split in two calls at `split` (as two threads would
/// split them), and returns the arena.
fn run(k: &dyn Kernel, pack: &Packer, arena: &[f32], split: usize) -> Vec<f32> {
    let mut arena = arena.to_vec();
    let (module, f) = netc::codegen::compile_kernel(k).unwrap();
    let items = k.items() as i64;
    let split = (split as i64).min(items);
    // SAFETY: the arena holds every buffer the kernel was built for.
    unsafe {
        f(arena.as_mut_ptr(), pack.data.as_ptr(), 0, split);
        f(arena.as_mut_ptr(), pack.data.as_ptr(), split, items);
    }
    // SAFETY: nothing calls the code afterwards.
    unsafe { module.free_memory() };
    arena
}

/// Random values of moderate size (so that relu6 clips some of them).
fn values(len: usize, seed: u64) -> Vec<f32> {
    input::random(&[len], seed).data.iter().map(|v| v * 4.0).collect()
}

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= TOLERANCE * want.abs().max(1.0)
}

/// The post affines a fused kernel is checked with: none, and a random one.
fn posts(channels: usize) -> [Option<(Vec<f32>, Vec<f32>)>; 2] {
    [None, Some((values(channels, 21), values(channels, 22)))]
}

type Build<'a> = &'a dyn Fn(Epilogue, Option<(&[f32], &[f32])>, &mut Packer) -> Box<dyn Kernel>;

/// Runs a kernel built with and without an epilogue on the same arena and checks
/// `with = act(without + residual) * scale + shift` everywhere (for every activation, with and
/// without the affine), that nothing outside the output changed, and that splitting the items
/// changes nothing.
fn check_epilogue(build: Build, out: Buf, residual: Buf) {
    for a in ACTIVATIONS {
        for post in posts(out.c) {
            let mut pack = Packer::default();
            let plain = build(Epilogue::default(), None, &mut pack);
            let post = post.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()));
            let fused = build(
                Epilogue {
                    act: a,
                    residual: Some(residual),
                },
                post,
                &mut pack,
            );
            let len = residual.offset + residual.span() + 16;
            let src = values(len, 9);
            let p = run(plain.as_ref(), &pack, &src, 0);
            let q = run(fused.as_ref(), &pack, &src, 0);
            let halves = run(fused.as_ref(), &pack, &src, fused.items() / 2);
            assert_eq!(q, halves, "splitting the items changed the result");
            let mut outside = vec![true; len];
            for n in 0..out.n {
                for y in 0..out.h {
                    for x in 0..out.w {
                        for c in 0..out.c {
                            let o = out.at(n, y, x) + c;
                            outside[o] = false;
                            let mut want = act(a, p[o] + src[residual.at(n, y, x) + c]);
                            if let Some((scale, shift)) = post {
                                want = want * scale[c] + shift[c];
                            }
                            assert!(close(q[o], want), "{a:?}, post {}: {} vs {want}", post.is_some(), q[o]);
                        }
                    }
                }
            }
            for i in 0..len {
                if outside[i] {
                    assert_eq!(
                        q[i].to_bits(),
                        src[i].to_bits(),
                        "element {i} outside the output changed"
                    );
                    assert_eq!(
                        p[i].to_bits(),
                        src[i].to_bits(),
                        "element {i} outside the output changed"
                    );
                }
            }
        }
    }
}

fn conv(out: usize, kernel: Hw, stride: Hw, pad: Pad, groups: usize) -> Conv {
    Conv {
        out_channels: out,
        kernel,
        stride,
        pad,
        dilation: Hw(1, 1),
        groups,
        bias: true,
    }
}

#[test]
fn depthwise_epilogue() {
    // 10 channels (two vectors and two scalar channels), 3x3 stride 1 pad 1, batch 2.
    let input = Buf::dense(0, &[2, 10, 7, 9]);
    let out = Buf::dense(input.span() + 3, &[2, 10, 7, 9]);
    let residual = Buf::dense(out.offset + out.span() + 5, &[2, 10, 7, 9]);
    let c = conv(10, Hw(3, 3), Hw(1, 1), Pad::uniform(1), 10);
    let weight = input::random(&[10 * 9], 1).data;
    let bias = input::random(&[10], 2).data;
    check_epilogue(
        &|ep, post, pack| Box::new(Depthwise::new(&c, input, out, &weight, Some(&bias), ep, post, pack)),
        out,
        residual,
    );
}

#[test]
fn depthwise_stride2_epilogue() {
    // 13 channels, 5x5 stride 2 pad 2 on an odd-sized map wide enough for the interior loop.
    let input = Buf::dense(0, &[1, 13, 11, 29]);
    let out = Buf::dense(input.span() + 1, &[1, 13, 6, 15]);
    let residual = Buf::dense(out.offset + out.span() + 2, &[1, 13, 6, 15]);
    let c = conv(13, Hw(5, 5), Hw(2, 2), Pad::uniform(2), 13);
    let weight = input::random(&[13 * 25], 1).data;
    check_epilogue(
        &|ep, post, pack| Box::new(Depthwise::new(&c, input, out, &weight, None, ep, post, pack)),
        out,
        residual,
    );
}

#[test]
fn direct_epilogue() {
    // 3 -> 13 channels (a full block and a partial one of 5), 3x3 stride 2 pad 1.
    let input = Buf::dense(0, &[1, 3, 11, 12]);
    let out = Buf::dense(input.span() + 1, &[1, 13, 6, 6]);
    let residual = Buf::dense(out.offset + out.span() + 7, &[1, 13, 6, 6]);
    let c = conv(13, Hw(3, 3), Hw(2, 2), Pad::uniform(1), 1);
    let weight = input::random(&[13 * 3 * 9], 1).data;
    let bias = input::random(&[13], 2).data;
    check_epilogue(
        &|ep, post, pack| Box::new(Direct::new(&c, input, out, &weight, Some(&bias), ep, post, pack)),
        out,
        residual,
    );
}

#[test]
fn direct_epilogue_many_input_channels() {
    // 20 input channels (the looped `cin` steps), 16 outputs (two full blocks), batch 2.
    let input = Buf::dense(0, &[2, 20, 6, 10]);
    let out = Buf::dense(input.span() + 5, &[2, 16, 6, 10]);
    let residual = Buf::dense(out.offset + out.span() + 3, &[2, 16, 6, 10]);
    let c = conv(16, Hw(3, 3), Hw(1, 1), Pad::uniform(1), 1);
    let weight = input::random(&[16 * 20 * 9], 1).data;
    check_epilogue(
        &|ep, post, pack| Box::new(Direct::new(&c, input, out, &weight, None, ep, post, pack)),
        out,
        residual,
    );
}

#[test]
fn scalar_conv_epilogue() {
    // A grouped convolution (4 groups of 2 -> 3 channels), 3x3 stride 2 pad 1, batch 2.
    let input = Buf::dense(0, &[2, 8, 7, 8]);
    let out = Buf::dense(input.span() + 1, &[2, 12, 4, 4]);
    let residual = Buf::dense(out.offset + out.span() + 2, &[2, 12, 4, 4]);
    let c = conv(12, Hw(3, 3), Hw(2, 2), Pad::uniform(1), 4);
    let weight = input::random(&[12 * 2 * 9], 1).data;
    let bias = input::random(&[12], 2).data;
    check_epilogue(
        &|ep, post, pack| Box::new(Scalar::new(&c, input, out, &weight, Some(&bias), ep, post, pack)),
        out,
        residual,
    );
}

/// The scalar fallback computes what the specialized kernels compute, epilogue included, so a
/// node can be moved to it with its fused epilogue.
#[test]
fn scalar_conv_matches_specialized_kernels() {
    let cases = [
        // (depthwise, cin, cout, h, w, kernel, stride, dilation, pad)
        (true, 10, 10, 9, 11, Hw(3, 3), Hw(2, 2), Hw(1, 1), Pad::uniform(1)),
        (true, 7, 7, 8, 8, Hw(5, 5), Hw(1, 1), Hw(2, 1), Pad::uniform(3)),
        (false, 5, 11, 9, 10, Hw(3, 3), Hw(1, 2), Hw(1, 1), Pad::uniform(1)),
        (false, 20, 9, 6, 7, Hw(2, 1), Hw(1, 1), Hw(1, 1), Pad::default()),
    ];
    for (depthwise, cin, cout, h, w, kernel, stride, dilation, pad) in cases {
        let c = Conv {
            out_channels: cout,
            kernel,
            stride,
            pad,
            dilation,
            groups: if depthwise { cin } else { 1 },
            bias: true,
        };
        let oh = (h + pad.top + pad.bottom - dilation.0 * (kernel.0 - 1) - 1) / stride.0 + 1;
        let ow = (w + pad.left + pad.right - dilation.1 * (kernel.1 - 1) - 1) / stride.1 + 1;
        let input = Buf::dense(0, &[2, cin, h, w]);
        let out = Buf::dense(input.span(), &[2, cout, oh, ow]);
        let residual = Buf::dense(out.offset + out.span(), &[2, cout, oh, ow]);
        let weight = values(cout * (cin / c.groups) * kernel.0 * kernel.1, 3);
        let bias = values(cout, 4);
        let (scale, shift) = (values(cout, 5), values(cout, 6));
        let ep = Epilogue {
            act: Some(Activation::Relu6),
            residual: Some(residual),
        };
        let post = Some((scale.as_slice(), shift.as_slice()));
        let mut pack = Packer::default();
        let special: Box<dyn Kernel> = if depthwise {
            Box::new(Depthwise::new(
                &c,
                input,
                out,
                &weight,
                Some(&bias),
                ep,
                post,
                &mut pack,
            ))
        } else {
            Box::new(Direct::new(&c, input, out, &weight, Some(&bias), ep, post, &mut pack))
        };
        let scalar = Scalar::new(&c, input, out, &weight, Some(&bias), ep, post, &mut pack);
        let src = values(residual.offset + residual.span(), 8);
        let a = run(special.as_ref(), &pack, &src, 0);
        let b = run(&scalar, &pack, &src, 1);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(close(*y, *x), "element {i}: scalar {y} vs specialized {x} ({c:?})");
        }
    }
}

/// A convolution whose padded border is too wide for the window kernels goes to the scalar one,
/// which takes the same arguments.
#[test]
fn wide_borders_go_to_the_scalar_conv() {
    let input = Buf::dense(0, &[1, 8, 5, 5]);
    let narrow = conv(8, Hw(3, 3), Hw(1, 1), Pad::uniform(1), 8);
    assert!(window::fits(&narrow, &input, &Buf::dense(0, &[1, 8, 5, 5])));
    let wide = conv(8, Hw(3, 3), Hw(1, 1), Pad::uniform(40), 8);
    let out = Buf::dense(input.span(), &[1, 8, 83, 83]);
    assert!(!window::fits(&wide, &input, &out));
    let weight = values(8 * 9, 1);
    let ep = Epilogue {
        act: Some(Activation::Relu),
        residual: None,
    };
    let (scale, shift) = (values(8, 2), values(8, 3));
    let mut pack = Packer::default();
    let k = Scalar::new(&wide, input, out, &weight, None, ep, Some((&scale, &shift)), &mut pack);
    let src = values(out.offset + out.span(), 4);
    let r = run(&k, &pack, &src, 40);
    // Far from the input, the window sees only padding: relu(0) * scale + shift.
    for c in 0..8 {
        assert_eq!(r[out.at(0, 0, 0) + c], shift[c]);
    }
}

fn pool(kind: PoolKind, k: usize, s: usize, pad: Pad, count_include_pad: bool) -> Pool {
    Pool {
        kind,
        kernel: Hw(k, k),
        stride: Hw(s, s),
        pad,
        ceil: false,
        count_include_pad,
    }
}

/// A kernel without and with an activation, and its output.
type PlainAndFused = (Box<dyn Kernel>, Box<dyn Kernel>, Buf);

/// Pooling with an activation stores `act(pooled)`.
#[test]
fn pool_activation() {
    let input = Buf::dense(0, &[2, 10, 9, 8]);
    for a in ACTIVATIONS {
        for (kind, include) in [(PoolKind::Max, false), (PoolKind::Avg, false), (PoolKind::Avg, true)] {
            let p = pool(kind, 3, 2, Pad::uniform(1), include);
            let out = Buf::dense(input.span() + 3, &[2, 10, 5, 4]);
            let global = Buf::dense(input.span() + 3, &[2, 10]);
            let mut pack = Packer::default();
            let mut kernels: Vec<PlainAndFused> = vec![
                (
                    Box::new(Windowed::new(&p, input, out, None, &mut pack)),
                    Box::new(Windowed::new(&p, input, out, a, &mut pack)),
                    out,
                ),
                (
                    Box::new(Global::new(kind, input, global, None)),
                    Box::new(Global::new(kind, input, global, a)),
                    global,
                ),
            ];
            if Level::cpu() >= Level::Avx2 {
                kernels.push((
                    Box::new(PoolWide::new(&p, input, out, None, &mut pack)),
                    Box::new(PoolWide::new(&p, input, out, a, &mut pack)),
                    out,
                ));
                let g = PoolWide::global(kind, input).expect("a plane of 10 rows");
                kernels.push((
                    Box::new(PoolWide::new(&g, input, global, None, &mut pack)),
                    Box::new(PoolWide::new(&g, input, global, a, &mut pack)),
                    global,
                ));
            }
            let src = values(input.span() + out.span() + 16, 11);
            for (plain, fused, out) in &kernels {
                let p = run(plain.as_ref(), &pack, &src, 0);
                let q = run(fused.as_ref(), &pack, &src, 1);
                for i in 0..src.len() {
                    let inside = (out.offset..out.offset + out.span()).contains(&i);
                    let want = if inside { act(a, p[i]) } else { src[i] };
                    assert_eq!(q[i].to_bits(), want.to_bits(), "{kind:?} {a:?}: element {i}");
                }
            }
        }
    }
}

/// Where the tensors of a kernel live when they are channel slices of wider buffers.
#[derive(Clone, Copy, Debug)]
struct Slice {
    /// Extra channels of the wider buffer, before and after the slice.
    before: usize,
    after: usize,
}

/// `count` tensors of shapes `shapes` (NCHW), each a slice of a wider buffer laid out one
/// after the other; returns their buffers and the arena length.
fn layout(shapes: &[[usize; 4]], slices: &[Slice]) -> (Vec<Buf>, usize) {
    let mut offset = 3;
    let mut bufs = vec![];
    for (s, sl) in shapes.iter().zip(slices) {
        let [n, c, h, w] = *s;
        let stride = sl.before + c + sl.after;
        bufs.push(Buf {
            offset: offset + sl.before,
            n,
            h,
            w,
            c,
            stride,
        });
        offset += n * h * w * stride + 5;
    }
    (bufs, offset)
}

/// Copies tensor `from` of arena `a` into tensor `to` of arena `b` (same shape).
fn copy(a: &[f32], from: &Buf, b: &mut [f32], to: &Buf) {
    for n in 0..from.n {
        for y in 0..from.h {
            for x in 0..from.w {
                for c in 0..from.c {
                    b[to.at(n, y, x) + c] = a[from.at(n, y, x) + c];
                }
            }
        }
    }
}

type BuildOn<'a> = &'a dyn Fn(Buf, Buf, Option<Buf>, &mut Packer) -> Box<dyn Kernel>;

/// Builds a kernel on dense tensors and on channel slices of wider buffers (input, output and,
/// with `residual`, the residual), runs both on the same values and checks that the slices
/// give exactly the dense results and that no element outside the output slice changed.
fn check_slices(build: BuildOn, input: [usize; 4], out: [usize; 4], residual: bool) {
    let dense = Slice { before: 0, after: 0 };
    let shapes = [input, out, out];
    let (d, dlen) = layout(&shapes, &[dense; 3]);
    let slices = [
        Slice { before: 2, after: 5 },
        Slice { before: 3, after: 6 },
        Slice { before: 1, after: 2 },
    ];
    let (s, slen) = layout(&shapes, &slices);
    let mut pack = Packer::default();
    let kd = build(d[0], d[1], residual.then_some(d[2]), &mut pack);
    let ks = build(s[0], s[1], residual.then_some(s[2]), &mut pack);
    let dsrc = values(dlen, 12);
    let mut ssrc = values(slen, 13);
    copy(&dsrc, &d[0], &mut ssrc, &s[0]);
    copy(&dsrc, &d[2], &mut ssrc, &s[2]);
    let dres = run(kd.as_ref(), &pack, &dsrc, 0);
    let sres = run(ks.as_ref(), &pack, &ssrc, ks.items() / 2);
    let mut want = ssrc.clone();
    copy(&dres, &d[1], &mut want, &s[1]);
    for i in 0..slen {
        assert_eq!(
            sres[i].to_bits(),
            want[i].to_bits(),
            "element {i}: {} vs {} (slices {:?})",
            sres[i],
            want[i],
            s
        );
    }
}

fn out_size(size: usize, pad: usize, k: usize, stride: usize, dilation: usize) -> usize {
    (size + pad - dilation * (k - 1) - 1) / stride + 1
}

#[derive(Clone, Debug)]
struct SliceCase {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: usize,
    act: usize,
    post: bool,
}

fn slice_case() -> impl Strategy<Value = SliceCase> {
    (
        (1usize..19, 1usize..19),
        (3usize..10, 3usize..26),
        prop_oneof![
            Just((3usize, 3usize)),
            Just((5, 5)),
            Just((1, 3)),
            Just((3, 1)),
            Just((2, 2))
        ],
        (1usize..3, 1usize..3),
        (1usize..3, 1usize..3),
        0usize..3,
        0usize..4,
        any::<bool>(),
    )
        .prop_map(
            |((cin, cout), (h, w), kernel, stride, dilation, pad, act, post)| SliceCase {
                cin,
                cout,
                h: h + (kernel.0 - 1) * dilation.0,
                w: w + (kernel.1 - 1) * dilation.1,
                kernel,
                stride,
                dilation,
                pad,
                act,
                post,
            },
        )
}

impl SliceCase {
    fn conv(&self, depthwise: bool) -> Conv {
        Conv {
            out_channels: if depthwise { self.cin } else { self.cout },
            kernel: Hw(self.kernel.0, self.kernel.1),
            stride: Hw(self.stride.0, self.stride.1),
            pad: Pad::uniform(self.pad),
            dilation: Hw(self.dilation.0, self.dilation.1),
            groups: if depthwise { self.cin } else { 1 },
            bias: true,
        }
    }

    fn shapes(&self, c: &Conv) -> ([usize; 4], [usize; 4]) {
        let oh = out_size(self.h, 2 * self.pad, self.kernel.0, self.stride.0, self.dilation.0);
        let ow = out_size(self.w, 2 * self.pad, self.kernel.1, self.stride.1, self.dilation.1);
        ([2, self.cin, self.h, self.w], [2, c.out_channels, oh, ow])
    }

    /// Checks the kernel a constructor builds from this case on slices of wider buffers.
    fn check(&self, depthwise: bool, scalar: bool) {
        let c = self.conv(depthwise);
        let (input, out) = self.shapes(&c);
        let cout = c.out_channels;
        let weight = values(cout * (self.cin / c.groups) * self.kernel.0 * self.kernel.1, 1);
        let bias = values(cout, 2);
        let (scale, shift) = (values(cout, 3), values(cout, 4));
        let post = self.post.then_some((scale.as_slice(), shift.as_slice()));
        let act = ACTIVATIONS[self.act];
        let build = |i: Buf, o: Buf, r: Option<Buf>, pack: &mut Packer| -> Box<dyn Kernel> {
            let ep = Epilogue { act, residual: r };
            if scalar {
                Box::new(Scalar::new(&c, i, o, &weight, Some(&bias), ep, post, pack))
            } else if depthwise {
                Box::new(Depthwise::new(&c, i, o, &weight, Some(&bias), ep, post, pack))
            } else {
                Box::new(Direct::new(&c, i, o, &weight, Some(&bias), ep, post, pack))
            }
        };
        for residual in [false, true] {
            check_slices(&build, input, out, residual);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn depthwise_on_channel_slices(case in slice_case()) {
        case.check(true, false);
    }

    #[test]
    fn direct_on_channel_slices(case in slice_case()) {
        case.check(false, false);
    }

    #[test]
    fn scalar_conv_on_channel_slices(case in slice_case()) {
        case.check(false, true);
    }
}

#[test]
fn pools_on_channel_slices() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (k, s, pad) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
            let p = pool(kind, k, s, Pad::uniform(pad), false);
            let (h, w) = (9, 10);
            let out = [2, 7, out_size(h, 2 * pad, k, s, 1), out_size(w, 2 * pad, k, s, 1)];
            check_slices(
                &|i, o, _, pack| Box::new(Windowed::new(&p, i, o, Some(Activation::Relu), pack)),
                [2, 7, h, w],
                out,
                false,
            );
            if Level::cpu() >= Level::Avx2 {
                // Channel slices of 19: two full vectors and a masked tail.
                let out = [2, 19, out[2], out[3]];
                check_slices(
                    &|i, o, _, pack| Box::new(PoolWide::new(&p, i, o, Some(Activation::Relu), pack)),
                    [2, 19, h, w],
                    out,
                    false,
                );
            }
        }
        check_slices(
            &|i, o, _, _| Box::new(Global::new(kind, i, o, Some(Activation::Relu6))),
            [2, 9, 5, 6],
            [2, 9, 1, 1],
            false,
        );
        if Level::cpu() >= Level::Avx2 {
            check_slices(
                &|i, o, _, pack| {
                    let g = PoolWide::global(kind, i).expect("a plane of 5 rows");
                    Box::new(PoolWide::new(&g, i, o, Some(Activation::Relu6), pack))
                },
                [2, 41, 5, 6],
                [2, 41, 1, 1],
                false,
            );
        }
    }
}

/// Global pooling on the wide path gives the same bits as `Global`, which adds the pixels in
/// the same order (channel counts around the four-vector groups and the masked tail).
#[test]
fn wide_global_pool_matches_the_f32x4_kernel_bit_for_bit() {
    if Level::cpu() < Level::Avx2 {
        return;
    }
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for c in [3, 8, 24, 33, 1000] {
            let input = Buf::dense(0, &[2, c, 13, 13]);
            let out = Buf::dense(input.span(), &[2, c]);
            let mut pack = Packer::default();
            let g = PoolWide::global(kind, input).expect("a plane of 13 rows");
            let wide = PoolWide::new(&g, input, out, None, &mut pack);
            let plain = Global::new(kind, input, out, None);
            let src = values(input.span() + out.span(), 17);
            let (a, b) = (run(&wide, &pack, &src, 1), run(&plain, &pack, &src, 0));
            for i in out.offset..out.offset + out.span() {
                assert_eq!(a[i].to_bits(), b[i].to_bits(), "{kind:?}, {c} channels: element {i}");
            }
        }
    }
}

/// One windowed pooling layer: maps wide enough for the interior column loop, rectangular
/// windows, per-side padding, ceil mode and both average-pooling divisors.
#[derive(Clone, Debug)]
struct PoolLayer {
    max: bool,
    c: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Padding,
    ceil: bool,
    include_pad: bool,
    batch: usize,
}

fn pool_layer() -> impl Strategy<Value = PoolLayer> {
    (
        any::<bool>(),
        prop_oneof![Just(1usize), Just(5), Just(8), Just(19)],
        (1usize..14, 1usize..30),
        (1usize..5, 1usize..5),
        (1usize..4, 1usize..4),
        padding(),
        (any::<bool>(), any::<bool>()),
        1usize..3,
    )
        .prop_map(
            |(max, c, (h, w), kernel, stride, pad, (ceil, include_pad), batch)| PoolLayer {
                max,
                c,
                h,
                w,
                kernel,
                stride,
                pad,
                ceil,
                include_pad,
                batch,
            },
        )
}

impl PoolLayer {
    /// The one-layer net, as a [`Layer`]'s source is checked.
    fn source(&self) -> String {
        let mut layer = format!(
            "{}([{}, {}], stride = [{}, {}], pad = {}, ceil = {}",
            if self.max { "maxpool" } else { "avgpool" },
            self.kernel.0,
            self.kernel.1,
            self.stride.0,
            self.stride.1,
            self.pad.source(),
            self.ceil
        );
        if !self.max {
            layer += &format!(", include_pad = {}", self.include_pad);
        }
        format!(
            "net t() {{\n    input x: [{}, {}, {}]\n    return x |> {layer}) as p\n}}\n",
            self.c, self.h, self.w
        )
    }
}

/// Compiles the one-layer pooling net (skipping configurations the shape rules reject) and
/// compares it, on one and two threads and at every instruction set, with the reference.
fn check_pool(l: &PoolLayer) -> Result<(), TestCaseError> {
    compare_with_reference(&l.source(), l.batch, &netc::codegen::Isa::testable())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn windowed_pool_matches_reference(l in pool_layer()) {
        check_pool(&l)?;
    }
}
