//! The matrix-multiply kernel (1x1 convolutions, grouped or not, and dense layers) against the
//! reference interpreter on random shapes, and its fused epilogue (bias, residual, activation)
//! against a plain Rust computation. Tolerance: `max |jit - ref| / max(1, max |ref|) <= 1e-4`;
//! results must not depend on the thread count or on how the items are split.

use netc::codegen::kernels::gemm::Gemm;
use netc::codegen::kernels::{Kernel, Packer};
use netc::codegen::layout::Buf;
use netc::ir::op::Activation;
use netc::runtime::input;
use proptest::prelude::*;

const TOLERANCE: f32 = 1e-4;

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
    let mut exe = compiled
        .compile_jit(&weights, &netc::codegen::Options::default())
        .unwrap();
    let one = exe.run(&x, 1).unwrap();
    for (e, f) in expected.iter().zip(&one) {
        assert_eq!(e.shape, f.shape);
        let err = max_err(&e.data, &f.data);
        assert!(err <= TOLERANCE, "{src}: relative error {err}");
    }
    let two = exe.run(&x, 2).unwrap();
    assert_eq!(one, two, "{src}: 1 and 2 threads differ");
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

/// `out = act(x W^T + bias + residual)` with strided input and residual views, checked against
/// plain Rust, for every way of splitting the items in two.
fn check_epilogue(m: usize, k: usize, n: usize, groups: usize, act: Option<Activation>, with_residual: bool) {
    let (cin, cout) = (k * groups, n * groups);
    // Input: pixels of `cin + 3` floats, channels at offset 8 within the arena.
    let input = Buf {
        offset: 8,
        n: 1,
        h: 1,
        w: m,
        c: cin,
        stride: cin + 3,
    };
    let residual = Buf {
        offset: input.offset + m * input.stride + 5,
        n: 1,
        h: m,
        w: 1,
        c: cout,
        stride: cout + 2,
    };
    let out = Buf {
        offset: residual.offset + m * residual.stride + 16,
        n: 1,
        h: m,
        w: 1,
        c: cout,
        stride: cout,
    };
    let len = out.offset + m * out.stride + 7;
    let weight = values(cout * k, 1);
    let bias = values(cout, 2);
    let mut pack = Packer::default();
    let gemm = Gemm::new(
        input,
        out,
        groups,
        &weight,
        Some(&bias),
        with_residual.then_some(residual),
        act,
        &mut pack,
    );
    let (module, f) = netc::codegen::compile_kernel(&gemm).unwrap();
    let arena0: Vec<f32> = values(len, 3).iter().map(|v| v * 3.0).collect();
    let mut expected = arena0.clone();
    for p in 0..m {
        for g in 0..groups {
            for o in 0..n {
                let oc = g * n + o;
                let mut acc = bias[oc];
                for kk in 0..k {
                    acc += arena0[input.offset + p * input.stride + g * k + kk] * weight[oc * k + kk];
                }
                if with_residual {
                    acc += arena0[residual.offset + p * residual.stride + oc];
                }
                expected[out.offset + p * out.stride + oc] = activate(acc, act);
            }
        }
    }
    let items = gemm.items() as i64;
    let mut whole = arena0.clone();
    // SAFETY: the kernel was generated for this arena and these packed weights.
    unsafe { f(whole.as_mut_ptr(), pack.data.as_ptr(), 0, items) };
    let err = max_err(&expected, &whole);
    assert!(
        err <= TOLERANCE,
        "m {m} k {k} n {n} groups {groups} {act:?} residual {with_residual}: error {err}"
    );
    for split in 1..items {
        let mut parts = arena0.clone();
        // SAFETY: as above; the two calls cover items 0..items.
        unsafe {
            f(parts.as_mut_ptr(), pack.data.as_ptr(), split, items);
            f(parts.as_mut_ptr(), pack.data.as_ptr(), 0, split);
        }
        assert_eq!(whole, parts, "split at {split} differs");
    }
    // SAFETY: `f` is not used afterwards.
    unsafe { module.free_memory() };
}

#[test]
fn epilogue_bias_residual_activation() {
    let acts = [
        None,
        Some(Activation::Relu),
        Some(Activation::Relu6),
        Some(Activation::LeakyRelu { slope: 0.1 }),
    ];
    for act in acts {
        for (m, k, n, groups) in [
            (7, 5, 11, 1),
            (9, 100, 19, 1),
            (6, 3, 4, 3),
            (1, 1, 1, 1),
            (13, 16, 8, 2),
        ] {
            for residual in [false, true] {
                check_epilogue(m, k, n, groups, act, residual);
            }
        }
    }
}
