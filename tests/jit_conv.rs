//! The depthwise and vectorized dense convolution kernels against the reference interpreter, over
//! random layer configurations; and their epilogue (residual add, activation) on kernels built
//! directly.

use netc::codegen::kernels::depthwise::Depthwise;
use netc::codegen::kernels::direct::Direct;
use netc::codegen::kernels::window::Epilogue;
use netc::codegen::kernels::{Kernel, Packer};
use netc::codegen::layout::Buf;
use netc::ir::op::{Activation, Conv, Hw, Pad};
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
    let options = netc::Options {
        overrides: Default::default(),
        batch: l.batch,
    };
    let src = l.source();
    let Ok(c) = netc::compile_source("t.net", &src, None, &options, None) else {
        return Ok(());
    };
    let w = c.init_weights(3);
    let x = input::random(c.input_shape(), 7);
    let expected = c.run_reference(&w, &x).unwrap();
    let mut exe = c.compile_jit(&w, &netc::codegen::Options::default()).unwrap();
    let one = exe.run(&x, 1).unwrap();
    for (e, f) in expected.iter().zip(&one) {
        prop_assert_eq!(&e.shape, &f.shape);
        let scale = e.max_abs().max(1.0);
        let err = e
            .data
            .iter()
            .zip(&f.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        prop_assert!(
            err / scale <= TOLERANCE,
            "max error {} (scale {}) for\n{}",
            err,
            scale,
            src
        );
    }
    let two = exe.run(&x, 2).unwrap();
    prop_assert_eq!(one, two, "1 and 2 threads differ for\n{}", src);
    Ok(())
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

/// Runs a kernel built with and without an epilogue on the same arena and checks
/// `with = act(without + residual)` everywhere, and that nothing outside the output changed.
fn check_epilogue(build: impl Fn(Epilogue, &mut Packer) -> Box<dyn Kernel>, out: Buf, residual: Buf) {
    for a in [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu { slope: 0.1 }),
    ] {
        let mut pack = Packer::default();
        let plain = build(Epilogue::default(), &mut pack);
        let fused = build(
            Epilogue {
                act: a,
                residual: Some(residual),
            },
            &mut pack,
        );
        let len = residual.offset + residual.span() + 16;
        let src = input::random(&[len], 9)
            .data
            .iter()
            .map(|v| v * 8.0)
            .collect::<Vec<f32>>();
        let run = |k: &dyn Kernel| {
            let mut arena = src.clone();
            let (module, f) = netc::codegen::compile_kernel(k).unwrap();
            // SAFETY: the arena holds every buffer the kernel was built for.
            unsafe { f(arena.as_mut_ptr(), pack.data.as_ptr(), 0, k.items() as i64) };
            // SAFETY: nothing calls the code afterwards.
            unsafe { module.free_memory() };
            arena
        };
        let p = run(plain.as_ref());
        let q = run(fused.as_ref());
        let mut outside = vec![true; len];
        for n in 0..out.n {
            for y in 0..out.h {
                for x in 0..out.w {
                    for c in 0..out.c {
                        let o = out.at(n, y, x) + c;
                        outside[o] = false;
                        let want = act(a, p[o] + src[residual.at(n, y, x) + c]);
                        assert!(
                            (q[o] - want).abs() <= 1e-5 * want.abs().max(1.0),
                            "{a:?}: {} vs {want}",
                            q[o]
                        );
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
        |ep, pack| Box::new(Depthwise::new(&c, input, out, &weight, Some(&bias), ep, pack)),
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
        |ep, pack| Box::new(Direct::new(&c, input, out, &weight, Some(&bias), ep, pack)),
        out,
        residual,
    );
}
