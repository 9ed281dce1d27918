//! The matrix-multiply kernel (1x1 convolutions, grouped or not, and dense layers) against the
//! reference interpreter on random shapes, and its fused epilogue (bias, residual, activation,
//! affine) and channel slots against a plain Rust computation. Tolerance:
//! `max |jit - ref| / max(1, max |ref|) <= 1e-4`; elements outside the output's slots must be
//! left untouched; results must not depend on the thread count or on how the items are split.
//!
//! Every check runs on each instruction set of the tile this CPU supports ([`Isa::testable`]): the
//! f32x4 Cranelift tile (`baseline`), the AVX2 micro-kernel (`avx2`) and the AVX-512 one
//! (`avx512`); the wide ones take every slot layout, through offset tables where the slots are
//! not contiguous.

use netc::codegen::kernels::gemm::{Gemm, GemmSpec};
use netc::codegen::kernels::{avx2, avx512, Kernel, Packer};
use netc::codegen::layout::Buf;
use netc::codegen::{Isa, Level};
use netc::ir::op::Activation;
use netc::runtime::input;
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

/// The instruction sets this CPU runs, each a different tile.
fn isas() -> Vec<Isa> {
    Isa::testable()
}

fn max_err(expected: &[f32], found: &[f32]) -> f32 {
    assert_eq!(expected.len(), found.len());
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = expected
        .iter()
        .zip(found)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    err / scale
}

/// Compiles `body` in a network with input `[c, h, w]` and batch `batch`, and compares the JIT
/// (one and two threads) with the reference interpreter.
fn check_net(c: usize, h: usize, w: usize, batch: usize, body: &str) {
    let src = format!("net t {{\n    input x: [{c}, {h}, {w}]\n    {body}\n}}\n");
    let options = netc::Options {
        overrides: vec![],
        batch,
    };
    let compiled =
        netc::compile_source("t.net", &src, None, &options, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let weights = compiled.init_weights(3);
    let x = input::random(compiled.input_shape(), 7);
    let expected = compiled.run_reference(&weights, &x).unwrap();
    for isa in isas() {
        let options = netc::codegen::Options {
            isa,
            ..Default::default()
        };
        let mut exe = compiled.compile_jit(&weights, &options).unwrap();
        let one = exe.run(&x, 1).unwrap();
        for (e, f) in expected.iter().zip(&one) {
            assert_eq!(e.shape, f.shape);
            let err = max_err(&e.data, &f.data);
            assert!(err <= TOLERANCE, "{src} ({isa:?}): relative error {err}");
        }
        let two = exe.run(&x, 2).unwrap();
        assert_eq!(one, two, "{src} ({isa:?}): 1 and 2 threads differ");
    }
}

/// Input channels per group: mostly small (fully unrolled), sometimes past the unroll limit.
fn per_group_k() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 1usize..=24, 1 => 90usize..=130]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn conv1x1_matches_reference(
        k in per_group_k(),
        n in 1usize..=40,
        groups in prop_oneof![3 => Just(1usize), 1 => 2usize..=4],
        h in 1usize..=7,
        w in 1usize..=7,
        batch in 1usize..=3,
        bias in any::<bool>(),
    ) {
        let body = format!(
            "return x |> conv({}, 1, groups = {groups}, bias = {bias}) as c",
            n * groups
        );
        check_net(k * groups, h, w, batch, &body);
    }

    #[test]
    fn dense_matches_reference(
        fin in prop_oneof![3 => 1usize..=64, 1 => 90usize..=300],
        fout in 1usize..=40,
        batch in 1usize..=5,
        bias in any::<bool>(),
    ) {
        check_net(fin, 1, 1, batch, &format!("return x |> flatten |> dense({fout}, bias = {bias}) as fc"));
    }
}

#[test]
fn chained_1x1_convs_and_a_classifier() {
    // Channel counts of ShuffleNet and MobileNet layers that are not multiples of 8.
    check_net(
        24,
        5,
        6,
        2,
        "return x |> conv(58, 1) as a |> relu |> conv(116, 1, groups = 2) as b |> global_avgpool \
         |> flatten |> dense(1000) as fc",
    );
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    input::random(&[len], seed).data
}

fn activate(v: f32, act: Option<Activation>) -> f32 {
    match act {
        None => v,
        Some(Activation::Relu) => v.max(0.0),
        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
        Some(Activation::LeakyRelu { slope }) => {
            if v < 0.0 {
                slope * v
            } else {
                v
            }
        }
    }
}

/// Where a tensor's channels sit in its pixels: the pixel stride and the slots (`None`: `0..c`).
#[derive(Clone, Debug)]
struct Layout {
    stride: usize,
    slots: Option<Vec<usize>>,
}

impl Layout {
    fn dense(c: usize) -> Layout {
        Layout { stride: c, slots: None }
    }

    fn slot(&self, i: usize) -> usize {
        self.slots.as_ref().map_or(i, |s| s[i])
    }
}

/// Where the residual comes from.
#[derive(Clone, Debug)]
enum Residual {
    None,
    /// Its own buffer, with its own layout.
    Separate(Layout),
    /// The output buffer itself, same slots: `out = act(x W^T + bias + out)`.
    InPlace,
}

/// One matrix multiply to check.
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    groups: usize,
    input: Layout,
    out: Layout,
    /// Input and output share one buffer (their slots are disjoint).
    shared_io: bool,
    residual: Residual,
    bias: bool,
    post: bool,
    act: Option<Activation>,
}

/// SplitMix64, for the random slot layouts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// A layout of `c` channels (in `groups` groups) of the given kind.
fn layout(kind: usize, c: usize, groups: usize, rng: &mut Rng) -> Layout {
    match kind {
        // Identity, maybe in a wider pixel.
        0 => Layout {
            stride: c + rng.below(3),
            slots: None,
        },
        // Contiguous at an offset of a wider pixel (a slice of a concatenation).
        1 => {
            let extra = 1 + rng.below(8);
            let off = rng.below(extra + 1);
            Layout {
                stride: c + extra,
                slots: Some((off..off + c).collect()),
            }
        }
        // A permutation of a contiguous range.
        2 => {
            let extra = rng.below(4);
            let off = rng.below(extra + 1);
            let mut slots: Vec<usize> = (off..off + c).collect();
            rng.shuffle(&mut slots);
            Layout {
                stride: c + extra,
                slots: Some(slots),
            }
        }
        // A random subset of a wider pixel, in random order.
        3 => {
            let stride = 2 * c + 5;
            let mut all: Vec<usize> = (0..stride).collect();
            rng.shuffle(&mut all);
            all.truncate(c);
            Layout {
                stride,
                slots: Some(all),
            }
        }
        // A channel shuffle: channel `j` of group `g` at slot `j * groups + g`, so each group's
        // slots step by the group count.
        4 => {
            let g = if groups > 1 { groups } else { 2 };
            let g = if c.is_multiple_of(g) { g } else { 1 };
            let cg = c / g;
            Layout {
                stride: c + rng.below(2),
                slots: Some((0..c).map(|i| (i % cg) * g + i / cg).collect()),
            }
        }
        // Every second or third slot of a wider pixel, maybe permuted.
        5 => {
            let step = 2 + rng.below(2);
            let off = rng.below(step);
            let mut slots: Vec<usize> = (0..c).map(|i| off + i * step).collect();
            if rng.below(2) == 0 {
                rng.shuffle(&mut slots);
            }
            Layout {
                stride: c * step + 1,
                slots: Some(slots),
            }
        }
        // Two contiguous runs with a gap: the second halves of a concatenation's two inputs
        // (ShuffleNet v2's projections write those).
        7 => {
            let (first, gap) = (c / 2, 1 + rng.below(c + 1));
            let off = rng.below(3);
            Layout {
                stride: off + c + gap,
                slots: Some((0..c).map(|i| off + i + if i < first { 0 } else { gap }).collect()),
            }
        }
        // Contiguous runs of random lengths separated by gaps, maybe permuted.
        _ => {
            let mut slots = Vec::with_capacity(c);
            let mut next = rng.below(3);
            while slots.len() < c {
                let run = (1 + rng.below(40)).min(c - slots.len());
                slots.extend(next..next + run);
                next += run + 1 + rng.below(3);
            }
            if rng.below(2) == 0 {
                rng.shuffle(&mut slots);
            }
            Layout {
                stride: next,
                slots: Some(slots),
            }
        }
    }
}

/// A pointer that may be sent to another thread.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: the threads of `check` write disjoint rows.
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

/// [`check_isa`] on every instruction set.
fn check(case: &Case) {
    for isa in isas() {
        check_isa(case, isa);
    }
}

/// Generates the kernel of `case` for `isa`, runs it on a random arena and compares with plain
/// Rust: the output slots within 1e-4, every other element unchanged; then every split of the
/// items in two, in both orders and on two threads at once, must give the same bits.
fn check_isa(case: &Case, isa: Isa) -> Vec<&'static str> {
    let Case { m, k, n, groups, .. } = *case;
    let (cin, cout) = (k * groups, n * groups);
    let buf = |offset: usize, c: usize, l: &Layout| Buf {
        offset,
        n: 1,
        h: m,
        w: 1,
        c,
        stride: l.stride,
    };
    let input = buf(8, cin, &case.input);
    let out = if case.shared_io {
        buf(input.offset, cout, &case.out)
    } else {
        buf(input.offset + input.span() + 5, cout, &case.out)
    };
    let (residual, res_layout) = match &case.residual {
        Residual::None => (None, None),
        Residual::InPlace => (Some(out), Some(case.out.clone())),
        Residual::Separate(l) => (Some(buf(out.offset + out.span() + 3, cout, l)), Some(l.clone())),
    };
    let len = [input, out]
        .iter()
        .chain(residual.iter())
        .map(|b| b.offset + b.span())
        .max()
        .unwrap()
        + 7;
    let weight = values(cout * k, 1);
    let bias = values(cout, 2);
    let scale = values(cout, 4);
    let shift = values(cout, 5);
    let mut pack = Packer::default();
    let gemm = Gemm::new(
        &GemmSpec {
            input,
            in_slots: case.input.slots.as_deref(),
            out,
            out_slots: case.out.slots.as_deref(),
            groups,
            weight: &weight,
            bias: case.bias.then_some(&bias[..]),
            residual: residual.map(|r| (r, res_layout.as_ref().and_then(|l| l.slots.as_deref()))),
            act: case.act,
            post: case.post.then_some((&scale[..], &shift[..])),
        },
        &mut pack,
        isa,
    );
    let (module, f) = netc::codegen::compile_kernel(&gemm).unwrap();
    let arena0: Vec<f32> = values(len, 3).iter().map(|v| v * 3.0).collect();
    let mut expected = arena0.clone();
    let mut written = vec![false; len];
    for p in 0..m {
        for g in 0..groups {
            for o in 0..n {
                let oc = g * n + o;
                let mut acc = if case.bias { bias[oc] } else { 0.0 };
                for kk in 0..k {
                    let x = arena0[input.offset + p * input.stride + case.input.slot(g * k + kk)];
                    acc += x * weight[oc * k + kk];
                }
                if let (Some(r), Some(l)) = (&residual, &res_layout) {
                    acc += arena0[r.offset + p * r.stride + l.slot(oc)];
                }
                let mut v = activate(acc, case.act);
                if case.post {
                    v = v * scale[oc] + shift[oc];
                }
                let at = out.offset + p * out.stride + case.out.slot(oc);
                expected[at] = v;
                written[at] = true;
            }
        }
    }
    let items = gemm.items() as i64;
    let mut whole = arena0.clone();
    // SAFETY: the kernel was generated for this arena and these packed weights.
    unsafe { f(whole.as_mut_ptr(), pack.data.as_ptr(), 0, items) };
    let scale_ref = expected.iter().fold(1.0f32, |s, v| s.max(v.abs()));
    for i in 0..len {
        if written[i] {
            let err = (whole[i] - expected[i]).abs() / scale_ref;
            assert!(
                err <= TOLERANCE,
                "{case:?} ({isa:?}): element {i}: {} vs {}",
                whole[i],
                expected[i]
            );
        } else {
            assert_eq!(
                whole[i].to_bits(),
                arena0[i].to_bits(),
                "{case:?} ({isa:?}): element {i} was written"
            );
        }
    }
    for split in 1..items {
        for order in [false, true] {
            let mut parts = arena0.clone();
            let ranges = if order {
                [(split, items), (0, split)]
            } else {
                [(0, split), (split, items)]
            };
            for (b, e) in ranges {
                // SAFETY: as above; the two calls cover items 0..items.
                unsafe { f(parts.as_mut_ptr(), pack.data.as_ptr(), b, e) };
            }
            assert_eq!(whole, parts, "{case:?} ({isa:?}): split at {split} differs");
        }
    }
    if items > 1 {
        let mut parts = arena0.clone();
        let (arena, weights) = (Ptr(parts.as_mut_ptr()), Ptr(pack.data.as_ptr() as *mut f32));
        std::thread::scope(|s| {
            for (b, e) in [(0, items / 2), (items / 2, items)] {
                s.spawn(move || {
                    let (arena, weights) = (arena, weights);
                    // SAFETY: the two threads compute disjoint items of the same arena.
                    unsafe { f(arena.0, weights.0, b, e) };
                });
            }
        });
        assert_eq!(whole, parts, "{case:?} ({isa:?}): two threads differ");
    }
    // SAFETY: `f` is not used afterwards.
    unsafe { module.free_memory() };
    gemm.host_fns().iter().map(|h| h.symbol).collect()
}

const ACTS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Relu6),
    Some(Activation::LeakyRelu { slope: 0.1 }),
];

/// `out = act(x W^T + bias + residual)` with strided input and residual views.
#[test]
fn epilogue_bias_residual_activation() {
    for act in ACTS {
        for (m, k, n, groups) in [
            (7, 5, 11, 1),
            (9, 100, 19, 1),
            (6, 3, 4, 3),
            (1, 1, 1, 1),
            (13, 16, 8, 2),
            (3, 7, 9, 1),
            // Several chunks of row blocks.
            (45, 5, 1100, 1),
        ] {
            for residual in [false, true] {
                check(&Case {
                    m,
                    k,
                    n,
                    groups,
                    input: Layout {
                        stride: k * groups + 3,
                        slots: None,
                    },
                    out: Layout::dense(n * groups),
                    shared_io: false,
                    residual: if residual {
                        Residual::Separate(Layout {
                            stride: n * groups + 2,
                            slots: None,
                        })
                    } else {
                        Residual::None
                    },
                    bias: true,
                    post: false,
                    act,
                });
            }
        }
    }
}

/// A 1x1 conv writing a slice of a wider tensor (a concatenation) and one reading a channel
/// shuffle of its input, as a network would use them.
#[test]
fn concat_slice_and_shuffled_input() {
    let mut rng = Rng(11);
    for (kind_in, kind_out, groups) in [(0, 1, 1), (4, 0, 3), (4, 4, 2), (2, 1, 1), (1, 2, 2)] {
        let (k, n) = (12, 20);
        check(&Case {
            m: 29,
            k,
            n,
            groups,
            input: layout(kind_in, k * groups, groups, &mut rng),
            out: layout(kind_out, n * groups, groups, &mut rng),
            shared_io: false,
            residual: Residual::None,
            bias: true,
            post: true,
            act: Some(Activation::Relu),
        });
    }
}

/// K past the unroll limit with every kind of input slots (k-loops with steps of 1, 2, 3 and the
/// group count, mixed with unrolled steps, and past 512 irregular slots, offset tables), and every
/// kind of output slots.
#[test]
fn k_loops_and_panels_over_all_slot_kinds() {
    let mut rng = Rng(5);
    for kind in 0..9 {
        for (k, groups) in [(100, 1), (130, 2), (97, 3), (600, 1), (530, 2)] {
            let n = 19;
            check(&Case {
                m: 10,
                k,
                n,
                groups,
                input: layout(kind, k * groups, groups, &mut rng),
                out: layout(6 - kind, n * groups, groups, &mut rng),
                shared_io: false,
                residual: Residual::Separate(layout((kind + 3) % 7, n * groups, groups, &mut rng)),
                bias: true,
                post: kind % 2 == 0,
                act: ACTS[kind % 4],
            });
        }
    }
}

/// Many output panels with irregular slots (past the limit where their slots come from a table),
/// with irregular residual slots too, or in place.
#[test]
fn many_irregular_output_panels() {
    let mut rng = Rng(9);
    for (out_kind, groups, m) in [(3, 1, 7), (6, 1, 13), (3, 2, 6), (5, 2, 9), (7, 1, 5), (7, 2, 10)] {
        let (k, n) = (10, if out_kind == 7 { 60 } else { 45 });
        for residual in 0..3 {
            let out = if out_kind == 7 {
                // Two contiguous panels, then irregular slots.
                let c = n * groups;
                let mut rest: Vec<usize> = (16..2 * c).collect();
                rng.shuffle(&mut rest);
                let mut slots: Vec<usize> = (0..16).collect();
                slots.extend_from_slice(&rest[..c - 16]);
                Layout {
                    stride: 2 * c,
                    slots: Some(slots),
                }
            } else {
                layout(out_kind, n * groups, groups, &mut rng)
            };
            let residual = match residual {
                0 => Residual::None,
                1 => Residual::Separate(layout(3, n * groups, groups, &mut rng)),
                _ => Residual::InPlace,
            };
            check(&Case {
                m,
                k,
                n,
                groups,
                input: layout(2, k * groups, groups, &mut rng),
                out,
                shared_io: false,
                residual,
                bias: true,
                post: true,
                act: Some(Activation::Relu6),
            });
        }
    }
}

/// Row counts that the wide tiles share out between tiles of different heights (49 rows: 10, 10,
/// 10, 10, 9 at 12 rows a tile; 13: 7, 6), with contiguous and table-read inputs, one and two
/// weight vectors per row: every split of the items gives the same bits as one call.
#[test]
fn rows_shared_out_between_tiles() {
    let mut rng = Rng(21);
    for m in [13, 25, 37, 49, 61] {
        for (in_kind, n) in [(0, 20), (3, 40), (0, 9), (3, 16)] {
            check(&Case {
                m,
                k: 24,
                n,
                groups: 1,
                input: layout(in_kind, 24, 1, &mut rng),
                out: layout(0, n, 1, &mut rng),
                shared_io: false,
                residual: Residual::InPlace,
                bias: true,
                post: false,
                act: Some(Activation::Relu),
            });
        }
    }
}

fn act_strategy() -> impl Strategy<Value = Option<Activation>> {
    (0usize..4).prop_map(|i| ACTS[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random shapes, slot layouts (identity, offset, permuted, gapped, shuffled, strided, runs) for the
    /// input, output and residual, input and output sharing a buffer, an in-place residual, the
    /// affine on or off, every activation.
    #[test]
    fn slots_residual_affine(
        m in 1usize..=11,
        k in per_group_k(),
        n in 1usize..=26,
        groups in prop_oneof![2 => Just(1usize), 1 => 2usize..=3],
        in_kind in 0usize..9,
        out_kind in 0usize..9,
        res_kind in 0usize..10,
        shared_io in prop::bool::weighted(0.2),
        bias in any::<bool>(),
        post in any::<bool>(),
        act in act_strategy(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (cin, cout) = (k * groups, n * groups);
        let (input, out) = if shared_io {
            // Input and output take disjoint random slots of one wide pixel.
            let stride = cin + cout + rng.below(4);
            let mut all: Vec<usize> = (0..stride).collect();
            rng.shuffle(&mut all);
            let out = all[cin..cin + cout].to_vec();
            all.truncate(cin);
            (Layout { stride, slots: Some(all) }, Layout { stride, slots: Some(out) })
        } else {
            (layout(in_kind, cin, groups, &mut rng), layout(out_kind, cout, groups, &mut rng))
        };
        let residual = match res_kind {
            0..=2 => Residual::None,
            3 => Residual::InPlace,
            r => Residual::Separate(layout(r, cout, groups, &mut rng)),
        };
        check(&Case { m, k, n, groups, input, out, shared_io, residual, bias, post, act });
    }
}

/// Each instruction set picks its tile, whatever the slots: the AVX-512 micro-kernel at
/// `avx512`, the AVX2 one at `avx2`, the Cranelift f32x4 tile (no host function) at `baseline`;
/// `native` picks the widest this CPU has, but the AVX2 tile where 512-bit FMAs are split in two.
#[test]
fn each_level_picks_its_tile_for_every_slot_layout() {
    let (m, k, n) = (9, 12, 20);
    let input = Buf {
        offset: 0,
        n: 1,
        h: m,
        w: 1,
        c: k,
        stride: k + 4,
    };
    let out = Buf {
        offset: m * (k + 4),
        c: n,
        stride: 2 * n,
        ..input
    };
    let weight = values(n * k, 1);
    let permuted: Vec<usize> = (0..n).rev().map(|i| i + 2).collect();
    let gapped: Vec<usize> = (0..n).map(|i| i + usize::from(i >= 10)).collect();
    let strided: Vec<usize> = (0..n).map(|i| 2 * i).collect();
    let shuffled_in: Vec<usize> = (0..k).map(|i| (i % 6) * 2 + i / 6).collect();
    let gapped_in: Vec<usize> = (0..k).map(|i| i + usize::from(i >= 5)).collect();
    let tile = |isa: Isa, in_slots: Option<&[usize]>, out_slots: Option<&[usize]>| {
        let spec = GemmSpec {
            input,
            in_slots,
            out,
            out_slots,
            groups: 1,
            weight: &weight,
            bias: None,
            residual: Some((out, out_slots)),
            act: None,
            post: None,
        };
        let gemm = Gemm::new(&spec, &mut Packer::default(), isa);
        gemm.host_fns().iter().map(|f| f.symbol).collect::<Vec<_>>()
    };
    // Native takes the AVX2 tile on a CPU with AVX-512F whose 512-bit FMAs are split in two.
    let native = match Level::cpu() {
        Level::Avx512 if Level::full_width_512() => vec![avx512::SYMBOL],
        Level::Avx512 | Level::Avx2 => vec![avx2::SYMBOL],
        Level::Baseline => vec![],
    };
    for isa in isas().into_iter().chain([Isa::Native]) {
        let expected = match isa.gemm_level() {
            Level::Avx512 => vec![avx512::SYMBOL],
            Level::Avx2 => vec![avx2::SYMBOL],
            Level::Baseline => vec![],
        };
        if isa == Isa::Native {
            assert_eq!(expected, native);
        }
        if isa == Isa::Avx512 {
            assert_eq!(expected, vec![avx512::SYMBOL], "avx512 is testable only with AVX-512F");
        }
        for in_slots in [None, Some(&shuffled_in[..]), Some(&gapped_in[..])] {
            for out_slots in [None, Some(&permuted[..]), Some(&gapped[..]), Some(&strided[..])] {
                assert_eq!(
                    tile(isa, in_slots, out_slots),
                    expected,
                    "{isa:?} {in_slots:?} {out_slots:?}"
                );
            }
        }
    }
}

/// The wide tiles at every column count around their widths (16 for AVX2, 16 and 32 for
/// AVX-512, so one- and two-vector AVX-512 tiles and masked narrow panels), row counts around
/// their heights (6 and 12; 6 for AVX-512 tiles that read the input through an offset table),
/// with contiguous and irregular input, output and residual slots (offset tables, gathers and
/// scatters), grouped, in place.
#[test]
fn wide_tile_widths_row_tails_and_irregular_slots() {
    let mut rng = Rng(23);
    let ms = [1, 5, 6, 7, 11, 12, 13, 25, 31];
    for (i, n) in [1, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 70].into_iter().enumerate() {
        for (j, (in_kind, out_kind)) in [(0, 0), (0, 3), (4, 0), (6, 5), (3, 4)].into_iter().enumerate() {
            let groups = 1 + (i + j) % 3;
            let k = [3, 17, 40][(i + 2 * j) % 3];
            let residual = match (i + j) % 3 {
                0 => Residual::None,
                1 => Residual::InPlace,
                _ => Residual::Separate(layout(2 + 4 * (j % 2), n * groups, groups, &mut rng)),
            };
            check(&Case {
                m: ms[(i + 3 * j) % ms.len()],
                k,
                n,
                groups,
                input: layout(in_kind, k * groups, groups, &mut rng),
                out: layout(out_kind, n * groups, groups, &mut rng),
                shared_io: false,
                residual,
                bias: (i + j) % 2 == 0,
                post: j % 2 == 1,
                act: ACTS[(i + j) % 4],
            });
        }
    }
}

/// A narrow last panel of at most 8 columns after a full one (ShuffleNet's 20 and 40 columns per
/// group, 116 and 232 of ShuffleNet v2) is computed on AVX2 with the full panel, in tiles three
/// vectors wide, when the epilogue is a plain activation: every such width, row counts around
/// the tiles' height (3), contiguous and shuffled input (an offset table), residuals, in place;
/// and with an affine or a leaky slope, which take one call per panel.
#[test]
fn narrow_last_panels_joined_to_the_full_one_before() {
    let mut rng = Rng(41);
    let ms = [1, 3, 4, 5, 8, 9, 13, 26];
    for (i, n) in [17, 20, 23, 24, 40, 116].into_iter().enumerate() {
        for j in 0..4 {
            let groups = [1, 3][(i + j) % 2];
            let k = [20, 9, 80][(i + j) % 3];
            let residual = match j % 3 {
                0 => Residual::None,
                1 => Residual::InPlace,
                _ => Residual::Separate(layout(0, n * groups, groups, &mut rng)),
            };
            check(&Case {
                m: ms[(i + 3 * j) % ms.len()],
                k,
                n,
                groups,
                input: layout([0, 4][j % 2], k * groups, groups, &mut rng),
                out: layout(0, n * groups, groups, &mut rng),
                shared_io: false,
                residual,
                bias: (i + j) % 2 == 0,
                post: j == 3,
                act: ACTS[(i + j) % 4],
            });
        }
    }
}

/// A narrow last panel of 1-4 columns computed as dot products on AVX2 (`avx2_dot.rs`): `k`
/// a multiple of 8 or not (the last block masked), one to a few rows (pairs and a single row),
/// one or three groups, with or without bias, each plain activation, in wider pixels or at an
/// offset of one. A layer with a leaky slope, a residual, scattered input channels or `k` below
/// one vector keeps the register tile, and so does every other instruction set.
#[test]
fn narrow_last_panels_as_dot_products() {
    let mut rng = Rng(53);
    let avx2 = isas().into_iter().find(|i| i.gemm_level() == Level::Avx2);
    let mut dots = 0;
    for (i, n) in [1, 4, 17, 20, 35, 116].into_iter().enumerate() {
        for j in 0..6 {
            // Shuffled over three groups, a group's input channels are scattered.
            let groups = if j == 5 { 3 } else { [1, 3][(i + j) % 2] };
            let k = [8, 13, 20, 80, 5, 33][(i + 2 * j) % 6];
            // Cases 0-2 qualify (when k does); 3: leaky slope, 4: in-place residual, 5: input
            // read through an offset table.
            let case = Case {
                m: [1, 2, 3, 7, 12][(i + j) % 5],
                k,
                n,
                groups,
                input: layout(if j == 5 { 2 } else { j % 2 }, k * groups, groups, &mut rng),
                out: layout(j % 2, n * groups, groups, &mut rng),
                shared_io: false,
                residual: if j == 4 { Residual::InPlace } else { Residual::None },
                bias: (i + j) % 2 == 0,
                post: false,
                act: if j == 3 { ACTS[3] } else { ACTS[(i + j) % 3] },
            };
            for isa in isas() {
                let hosts = check_isa(&case, isa);
                let dot = hosts.contains(&netc::codegen::kernels::avx2_dot::SYMBOL);
                let qualifies = Some(isa) == avx2 && j < 3 && k >= 8;
                assert_eq!(dot, qualifies, "{case:?} ({isa:?}): dot products used");
                dots += usize::from(dot);
            }
        }
    }
    if avx2.is_some() {
        assert!(dots >= 10, "only {dots} cases took the dot products");
    }
}

/// Output columns in two runs whose boundary falls inside a panel (29 + 29 columns, as in
/// ShuffleNet v2): the panels inside a run store whole vectors, the straddling one goes through
/// the column table; with a residual in two runs too, contiguous, or the output itself.
#[test]
fn wide_panels_inside_and_across_output_runs() {
    let mut rng = Rng(31);
    for (i, n) in [29, 40, 58, 116].into_iter().enumerate() {
        for (j, residual_kind) in [None, Some(7), Some(0)].into_iter().enumerate() {
            let groups = 1 + (i + j) % 2;
            let residual = match residual_kind {
                None if j == 0 => Residual::None,
                None => Residual::InPlace,
                Some(kind) => Residual::Separate(layout(kind, n * groups, groups, &mut rng)),
            };
            for residual in [residual, Residual::InPlace] {
                check(&Case {
                    m: [7, 13, 31][(i + j) % 3],
                    k: [17, 58][(i + j) % 2],
                    n,
                    groups,
                    input: layout(7, [17, 58][(i + j) % 2] * groups, groups, &mut rng),
                    out: layout(7, n * groups, groups, &mut rng),
                    shared_io: false,
                    residual,
                    bias: (i + j) % 2 == 0,
                    post: j == 2,
                    act: ACTS[(i + j) % 4],
                });
            }
        }
    }
}

/// Layers whose weights are large (256 KiB or more) and whose rows are few are split between
/// threads by weight panels; a layer of one row (a classifier) computes up to four consecutive
/// panels per call on AVX2. Panel counts around that (7, 8, 9, 10 with a narrow last panel),
/// every epilogue, one and two rows, contiguous and scattered output columns: every split of the
/// panels gives the same bits as one call.
#[test]
fn classifier_rows_over_consecutive_panels() {
    let mut rng = Rng(29);
    let k = 640;
    for (i, n) in [112, 128, 144, 149].into_iter().enumerate() {
        for (j, residual) in [Residual::None, Residual::InPlace, Residual::Separate(Layout::dense(n))]
            .into_iter()
            .enumerate()
        {
            for (a, act) in ACTS.into_iter().enumerate() {
                let m = 1 + (i + a) % 4 / 3;
                let out = if (i + j + a) % 5 == 4 {
                    layout(3, n, 1, &mut rng)
                } else {
                    Layout::dense(n)
                };
                let case = Case {
                    m,
                    k,
                    n,
                    groups: 1,
                    input: Layout::dense(k),
                    out,
                    shared_io: false,
                    residual: residual.clone(),
                    bias: (i + a) % 2 == 0,
                    post: (j + a) % 3 == 2,
                    act,
                };
                check(&case);
            }
        }
    }
    // The split is by panels: one item per panel.
    let (weight, mut pack) = (vec![0.0f32; k * 149], Packer::default());
    let buf = |c: usize| Buf {
        offset: 0,
        n: 1,
        h: 1,
        w: 1,
        c,
        stride: c,
    };
    for isa in isas().into_iter().filter(|i| i.level() == Level::Avx2) {
        let gemm = Gemm::new(
            &GemmSpec {
                input: buf(k),
                in_slots: None,
                out: Buf { offset: k, ..buf(149) },
                out_slots: None,
                groups: 1,
                weight: &weight,
                bias: None,
                residual: None,
                act: None,
                post: None,
            },
            &mut pack,
            isa,
        );
        assert_eq!(gemm.items(), 10, "{isa:?}");
    }
}
