//! The wide (AVX-512 and AVX2) direct convolution, and the AVX2 depthwise convolution, against
//! the reference interpreter and against the f32x4 baseline kernels: random dense layers compiled as networks on every instruction set
//! this CPU runs (kernels 1-7 including rectangular ones, strides 1-3, paddings, dilation,
//! channel counts off the vector widths, batch > 1, a fused residual, outputs that are halves of a
//! concat), and random kernels built directly on channel slices of wider buffers, with every
//! epilogue, checked for their values (the depthwise kernels bit for bit against the baseline),
//! for leaving everything outside the output untouched and for giving bit-identical results
//! however their rows are split.

use netc::codegen::kernels::depthwise::Depthwise;
use netc::codegen::kernels::depthwise_wide::DepthwiseWide;
use netc::codegen::kernels::direct::Direct;
use netc::codegen::kernels::direct_wide::{tiles, DirectWide};
use netc::codegen::kernels::window::Epilogue;
use netc::codegen::kernels::winograd;
use netc::codegen::kernels::{Kernel, Packer};
use netc::codegen::layout::Buf;
use netc::codegen::{Isa, Level};
use netc::ir::op::{Activation, Conv, Hw, Pad};
use netc::runtime::input;
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

/// The wide levels this CPU runs.
fn wide_levels() -> Vec<Level> {
    Isa::testable()
        .into_iter()
        .map(|i| i.level())
        .filter(|&l| l >= Level::Avx2)
        .collect()
}

#[derive(Clone, Debug)]
struct Layer {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    /// `[top, bottom, left, right]`.
    pad: [usize; 4],
    bias: bool,
    batch: usize,
    /// `add(conv(x), x)` (forces `cout == cin` and a shape-preserving convolution).
    residual: bool,
    /// A second convolution of the same geometry concatenated after this one, so both write
    /// channel slices of the concat buffer.
    concat: Option<usize>,
}

fn layer() -> impl Strategy<Value = Layer> {
    (
        (1usize..40, 1usize..90),
        (1usize..16, 1usize..30),
        (1usize..8, 1usize..8),
        (1usize..4, 1usize..4),
        (1usize..3, 1usize..3),
        [0usize..4, 0usize..4, 0usize..4, 0usize..4],
        any::<bool>(),
        1usize..3,
        (any::<bool>(), prop::option::of(1usize..40)),
    )
        .prop_map(
            |((cin, cout), (h, w), kernel, stride, dilation, pad, bias, batch, (residual, concat))| Layer {
                cin,
                cout,
                h,
                w,
                kernel,
                stride,
                dilation,
                pad,
                bias,
                batch,
                residual,
                concat,
            },
        )
}

impl Layer {
    fn conv(&self, cout: usize, name: &str) -> String {
        let [t, b, l, r] = self.pad;
        format!(
            "conv({cout}, [{}, {}], stride = [{}, {}], pad = [{t}, {b}, {l}, {r}], dilation = [{}, {}], bias = {}) as {name}",
            self.kernel.0, self.kernel.1, self.stride.0, self.stride.1, self.dilation.0, self.dilation.1, self.bias
        )
    }

    fn source(&self) -> String {
        let body = if self.residual {
            // Odd kernels, stride 1 and centred padding keep the shape.
            let (kh, kw) = (self.kernel.0 | 1, self.kernel.1 | 1);
            let (ph, pw) = (kh / 2, kw / 2);
            format!(
                "let c = x |> conv({}, [{kh}, {kw}], pad = [{ph}, {pw}], bias = {}) as c\n    return add(c, x) as sum |> relu6",
                self.cin, self.bias
            )
        } else if let Some(other) = self.concat {
            format!(
                "let a = x |> {}\n    let b = x |> {} |> relu\n    return concat(b, a) as cat",
                self.conv(self.cout, "a"),
                self.conv(other, "b")
            )
        } else {
            format!("return x |> {} |> leaky_relu(0.1)", self.conv(self.cout, "c"))
        };
        format!(
            "net t() {{\n    input x: [{}, {}, {}]\n    {body}\n}}\n",
            self.cin, self.h, self.w
        )
    }
}

fn max_err(expected: &[f32], found: &[f32]) -> f32 {
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    expected
        .iter()
        .zip(found)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
        / scale
}

/// Compiles the layer's network (skipping configurations the shape rules reject) on every
/// instruction set and compares it with the reference interpreter, on one and two threads.
fn check_net(l: &Layer) -> Result<(), TestCaseError> {
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
    for isa in Isa::testable() {
        let options = netc::codegen::Options {
            isa,
            ..Default::default()
        };
        let mut exe = c.compile_jit(&w, &options).unwrap();
        let one = exe.run(&x, 1).unwrap();
        for (e, f) in expected.iter().zip(&one) {
            prop_assert_eq!(&e.shape, &f.shape);
            let err = max_err(&e.data, &f.data);
            prop_assert!(err <= TOLERANCE, "{:?}: relative error {} for\n{}", isa, err, src);
        }
        let two = exe.run(&x, 2).unwrap();
        prop_assert_eq!(one, two, "{:?}: 1 and 2 threads differ for\n{}", isa, src);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn dense_layers_match_reference(l in layer()) {
        check_net(&l)?;
    }
}

/// 3x3 convolutions of stride 1 and padding 1 (SqueezeNet's expands), which the AVX2 level runs
/// as Winograd F(2x2, 3x3): odd and even sizes (partial tiles at the right and bottom), input
/// channels around the kernel's bounds and its vector width, output channels around its 16-wide
/// panels and 64-wide blocks, an output that is a channel slice of a concat.
fn winograd_layer() -> impl Strategy<Value = Layer> {
    (
        (12usize..140, 1usize..150),
        (1usize..15, 1usize..30),
        any::<bool>(),
        1usize..3,
        prop::option::of(1usize..20),
    )
        .prop_map(|((cin, cout), (h, w), bias, batch, concat)| Layer {
            cin,
            cout,
            h,
            w,
            kernel: (3, 3),
            stride: (1, 1),
            dilation: (1, 1),
            pad: [1, 1, 1, 1],
            bias,
            batch,
            residual: false,
            concat,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn winograd_layers_match_reference(l in winograd_layer()) {
        check_net(&l)?;
    }
}

/// The AVX2 level runs SqueezeNet's 3x3 expands as Winograd convolutions (so the tests above
/// exercise that kernel), and only those: not a 3x3 convolution of stride 2, nor one with fewer
/// than 16 input channels.
#[test]
fn winograd_takes_the_stride_1_3x3_layers() {
    if !Isa::Avx2.supported() {
        return;
    }
    let calls = |l: &Layer| -> bool {
        let options = netc::Options {
            overrides: Default::default(),
            batch: 1,
        };
        let c = netc::compile_source("t.net", &l.source(), None, &options, None).unwrap();
        let options = netc::codegen::Options {
            isa: Isa::Avx2,
            ..Default::default()
        };
        let exe = c.compile_jit(&c.init_weights(0), &options).unwrap();
        exe.steps().iter().any(|s| s.hosts.contains(&winograd::AVX2.symbol))
    };
    let expand = Layer {
        cin: 16,
        cout: 64,
        h: 13,
        w: 13,
        kernel: (3, 3),
        stride: (1, 1),
        dilation: (1, 1),
        pad: [1, 1, 1, 1],
        bias: true,
        batch: 1,
        residual: false,
        concat: Some(64),
    };
    assert!(calls(&expand));
    assert!(!calls(&Layer {
        stride: (2, 2),
        ..expand.clone()
    }));
    assert!(!calls(&Layer { cin: 8, ..expand }));
}

/// The layers of the seed networks that take the direct convolution, at reduced sizes.
#[test]
fn seed_layers_match_reference() {
    let base = Layer {
        cin: 3,
        cout: 32,
        h: 21,
        w: 23,
        kernel: (3, 3),
        stride: (2, 2),
        dilation: (1, 1),
        pad: [1, 1, 1, 1],
        bias: true,
        batch: 2,
        residual: false,
        concat: None,
    };
    let cases = [
        // MobileNet's stem.
        base.clone(),
        // ShuffleNet's and ShuffleNetV2's 24-channel stem.
        Layer {
            cout: 24,
            ..base.clone()
        },
        // SqueezeNet v1.0's 7x7/2 stem and v1.1's 3x3/2 stem.
        Layer {
            cout: 96,
            h: 31,
            w: 37,
            kernel: (7, 7),
            pad: [0; 4],
            ..base.clone()
        },
        Layer {
            cout: 64,
            pad: [0; 4],
            ..base.clone()
        },
        // Fire modules' 3x3 expand beside the 1x1 expand (a concat), 13-pixel rows.
        Layer {
            cin: 16,
            cout: 64,
            h: 13,
            w: 13,
            stride: (1, 1),
            concat: Some(64),
            ..base.clone()
        },
        Layer {
            cin: 48,
            cout: 192,
            h: 9,
            w: 27,
            stride: (1, 1),
            concat: Some(192),
            ..base.clone()
        },
        // EffNet's 2x1 stride [1, 2] convolution.
        Layer {
            cin: 32,
            cout: 64,
            h: 8,
            w: 16,
            kernel: (2, 1),
            stride: (1, 2),
            pad: [0, 1, 0, 0],
            ..base
        },
    ];
    for l in cases {
        check_net(&l).unwrap();
    }
}

/// An explicit `--isa` is what runs; `native` narrows a direct convolution to AVX2 only at
/// AVX-512 on a CPU with split 512-bit FMAs, and only for channel counts that leave zmm lanes idle.
#[test]
fn direct_level_narrows_only_native_on_split_cpus() {
    let split = Level::cpu() == Level::Avx512 && !Level::full_width_512();
    for outputs in [3, 8, 16, 24, 32, 40, 96, 1000] {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Baseline] {
            assert_eq!(isa.direct_level(outputs), isa.level(), "{isa:?} {outputs}");
        }
        let expected = if split && !outputs.is_multiple_of(16) {
            Level::Avx2
        } else {
            Level::cpu()
        };
        assert_eq!(Isa::Native.direct_level(outputs), expected, "native {outputs}");
    }
}

#[test]
fn rows_split_into_balanced_tiles() {
    assert_eq!(tiles(13, 6).collect::<Vec<_>>(), [5, 4, 4]);
    assert_eq!(tiles(13, 8).collect::<Vec<_>>(), [7, 6]);
    assert_eq!(tiles(54, 6).collect::<Vec<_>>(), [6; 9]);
    assert_eq!(tiles(1, 8).collect::<Vec<_>>(), [1]);
    assert_eq!(tiles(0, 8).count(), 0);
}

const ACTIVATIONS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Relu6),
    Some(Activation::LeakyRelu { slope: 0.1 }),
];

/// Runs `k` on a copy of `arena` with its items split in calls at `splits` and returns the arena.
fn run(k: &dyn Kernel, pack: &Packer, arena: &[f32], splits: &[usize]) -> Vec<f32> {
    let mut arena = arena.to_vec();
    let (module, f) = netc::codegen::compile_kernel(k).unwrap();
    let items = k.items();
    let mut bounds: Vec<usize> = splits.iter().map(|&s| s.min(items)).collect();
    bounds.insert(0, 0);
    bounds.push(items);
    bounds.sort_unstable();
    for w in bounds.windows(2) {
        // SAFETY: the arena holds every buffer the kernel was built for.
        unsafe { f(arena.as_mut_ptr(), pack.data.as_ptr(), w[0] as i64, w[1] as i64) };
    }
    // SAFETY: nothing calls the code afterwards.
    unsafe { module.free_memory() };
    arena
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    input::random(&[len], seed).data.iter().map(|v| v * 2.0).collect()
}

/// A dense (or depthwise) convolution on channel slices of wider buffers.
#[derive(Clone, Debug)]
struct SliceCase {
    /// A depthwise convolution over `cin` channels (`cout` is ignored).
    depthwise: bool,
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: [usize; 4],
    batch: usize,
    act: usize,
    bias: bool,
    post: bool,
    residual: bool,
    /// Extra channels before and after the input, output and residual slices.
    extra: [(usize, usize); 3],
    splits: Vec<usize>,
}

fn slice_case() -> impl Strategy<Value = SliceCase> {
    (
        (1usize..24, 1usize..140),
        (1usize..9, 1usize..33),
        (1usize..8, 1usize..8),
        (1usize..4, 1usize..4),
        (1usize..3, 1usize..3),
        [0usize..4, 0usize..4, 0usize..4, 0usize..4],
        (1usize..3, 0usize..4),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        [(0usize..3, 0usize..5), (0usize..3, 0usize..5), (0usize..3, 0usize..5)],
        prop::collection::vec(0usize..40, 0..3),
    )
        .prop_map(
            |(
                (cin, cout),
                (h, w),
                kernel,
                stride,
                dilation,
                pad,
                (batch, act),
                (bias, post, residual),
                extra,
                splits,
            )| {
                SliceCase {
                    depthwise: false,
                    cin,
                    cout,
                    h,
                    w,
                    kernel,
                    stride,
                    dilation,
                    pad,
                    batch,
                    act,
                    bias,
                    post,
                    residual,
                    extra,
                    splits,
                }
            },
        )
}

impl SliceCase {
    /// The output size along one axis, if the window fits.
    fn out_size(size: usize, pads: usize, k: usize, stride: usize, dilation: usize) -> Option<usize> {
        let span = dilation * (k - 1) + 1;
        (size + pads >= span).then(|| (size + pads - span) / stride + 1)
    }

    /// Builds the wide kernel on every wide level and the baseline kernel on the same slices, and
    /// checks that they agree, write nothing outside the output and do not depend on the split.
    fn check(&self) {
        let [t, b, l, r] = self.pad;
        let (Some(oh), Some(ow)) = (
            Self::out_size(self.h, t + b, self.kernel.0, self.stride.0, self.dilation.0),
            Self::out_size(self.w, l + r, self.kernel.1, self.stride.1, self.dilation.1),
        ) else {
            return;
        };
        let cout = if self.depthwise { self.cin } else { self.cout };
        let c = Conv {
            out_channels: cout,
            kernel: Hw(self.kernel.0, self.kernel.1),
            stride: Hw(self.stride.0, self.stride.1),
            pad: Pad {
                top: t,
                bottom: b,
                left: l,
                right: r,
            },
            dilation: Hw(self.dilation.0, self.dilation.1),
            groups: if self.depthwise { self.cin } else { 1 },
            bias: self.bias,
        };
        let shapes = [
            (self.batch, self.h, self.w, self.cin),
            (self.batch, oh, ow, cout),
            (self.batch, oh, ow, cout),
        ];
        let mut offset = 3;
        let bufs: Vec<Buf> = shapes
            .iter()
            .zip(self.extra)
            .map(|(&(n, h, w, ch), (before, after))| {
                let stride = before + ch + after;
                let buf = Buf {
                    offset: offset + before,
                    n,
                    h,
                    w,
                    c: ch,
                    stride,
                };
                offset += n * h * w * stride + 7;
                buf
            })
            .collect();
        let (input, out, residual) = (bufs[0], bufs[1], bufs[2]);
        let per_output = if self.depthwise { 1 } else { self.cin };
        let weight = values(cout * per_output * self.kernel.0 * self.kernel.1, 1);
        let bias = values(cout, 2);
        let (scale, shift) = (values(cout, 3), values(cout, 4));
        let bias = self.bias.then_some(bias.as_slice());
        let post = self.post.then_some((scale.as_slice(), shift.as_slice()));
        let ep = Epilogue {
            act: ACTIVATIONS[self.act],
            residual: self.residual.then_some(residual),
        };
        let src = values(offset, 5);
        let mut pack = Packer::default();
        let want = if self.depthwise {
            run(
                &Depthwise::new(&c, input, out, &weight, bias, ep, post, &mut pack),
                &pack,
                &src,
                &[],
            )
        } else {
            run(
                &Direct::new(&c, input, out, &weight, bias, ep, post, &mut pack),
                &pack,
                &src,
                &[],
            )
        };
        for level in wide_levels() {
            // The depthwise row function is AVX2 on every wide level.
            let wide: Box<dyn Kernel> = if self.depthwise {
                Box::new(DepthwiseWide::new(&c, input, out, &weight, bias, ep, post, &mut pack))
            } else {
                Box::new(DirectWide::new(
                    &c, input, out, &weight, bias, ep, post, &mut pack, level,
                ))
            };
            let whole = run(wide.as_ref(), &pack, &src, &[]);
            let parts = run(wide.as_ref(), &pack, &src, &self.splits);
            assert_eq!(
                whole, parts,
                "{self:?} ({level:?}): splitting the rows changed the result"
            );
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let mut inside = vec![false; src.len()];
            for n in 0..out.n {
                for y in 0..out.h {
                    for x in 0..out.w {
                        for ch in 0..out.c {
                            let i = out.at(n, y, x) + ch;
                            inside[i] = true;
                            // The depthwise kernels compute each element by the same
                            // operations (the bias, one fused multiply-add per tap in the
                            // kernel's order, the epilogue): they agree bit for bit.
                            let agree = if self.depthwise {
                                whole[i].to_bits() == want[i].to_bits()
                            } else {
                                (whole[i] - want[i]).abs() <= TOLERANCE * scale
                            };
                            assert!(
                                agree,
                                "{self:?} ({level:?}): element ({n}, {y}, {x}, {ch}): {} vs baseline {}",
                                whole[i], want[i]
                            );
                        }
                    }
                }
            }
            for (i, (&got, &was)) in whole.iter().zip(&src).enumerate() {
                if !inside[i] {
                    assert_eq!(
                        got.to_bits(),
                        was.to_bits(),
                        "{self:?} ({level:?}): element {i} changed"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn wide_matches_baseline_on_channel_slices(case in slice_case()) {
        case.check();
    }

    #[test]
    fn depthwise_wide_matches_baseline_on_channel_slices(case in slice_case()) {
        SliceCase { depthwise: true, ..case }.check();
    }
}

/// The depthwise row function at every channel count around the vector width (the masked last
/// block), every row width around its tiles of 4 and 6 pixels, strides 1 and 2, kernel widths
/// with a compile-time (1, 3, 5) and a run-time (2, 7) unrolling, and every epilogue part.
#[test]
fn depthwise_channel_and_pixel_tails() {
    for cin in [1, 3, 7, 8, 9, 15, 16, 17, 58, 60] {
        for w in [1, 2, 5, 6, 7, 8, 9, 13, 14, 17] {
            for (kernel, stride, pad) in [
                ((3, 3), (1, 1), [1, 1, 1, 1]),
                ((3, 3), (2, 2), [0, 1, 0, 1]),
                ((1, 5), (1, 1), [0, 0, 2, 2]),
                ((3, 1), (1, 1), [1, 1, 0, 0]),
                ((2, 2), (1, 2), [1, 0, 1, 0]),
                ((7, 7), (1, 1), [3, 3, 3, 3]),
            ] {
                SliceCase {
                    depthwise: true,
                    cin,
                    cout: cin,
                    h: 4,
                    w,
                    kernel,
                    stride,
                    dilation: (1, 1),
                    pad,
                    batch: 1,
                    act: (cin + w) % 4,
                    bias: w % 2 == 0,
                    post: cin % 2 == 1,
                    residual: stride == (1, 1) && kernel.0 % 2 == 1 && kernel.1 % 2 == 1 && w > 5,
                    extra: [(0, 0), (1, 2), (2, 0)],
                    splits: vec![1],
                }
                .check();
            }
        }
    }
}

/// Every output channel count around the block and vector widths (the masked last vector, the
/// narrower last block, and on AVX2 the last 24 channels in one block of three vectors), each
/// pixel count up to two tiles, with every epilogue part.
#[test]
fn channel_and_pixel_tails() {
    for cout in [
        1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 33, 40, 47, 48, 49, 56, 63, 64, 65, 96, 130,
    ] {
        for w in [1, 3, 4, 5, 6, 7, 8, 9, 13, 17] {
            SliceCase {
                depthwise: false,
                cin: 5,
                cout,
                h: 3,
                w,
                kernel: (3, 3),
                stride: (1, 1),
                dilation: (1, 1),
                pad: [1, 1, 1, 1],
                batch: 1,
                act: cout % 4,
                bias: true,
                post: true,
                residual: true,
                extra: [(0, 0), (1, 2), (2, 0)],
                splits: vec![1],
            }
            .check();
        }
    }
}
