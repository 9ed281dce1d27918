//! The reference interpreter on small hand-computed cases: every padding and pooling mode,
//! groups and depthwise, channel shuffle, split and concat, ceil mode, and the elementwise ops.

use netc::runtime::{Tensor, Weights};

/// Compiles `body` as the body of a network with input `[c, h, w]`, sets the given weights and
/// runs it on `input` (`[1, c, h, w]`, values in row-major order).
fn run(c: usize, h: usize, w: usize, body: &str, weights: &[(&str, &[usize], &[f32])], input: &[f32]) -> Tensor {
    let src = format!("net t {{\n    input x: [{c}, {h}, {w}]\n{body}\n}}\n");
    let compiled = netc::compile_source("t.net", &src, None, &netc::Options::default(), None)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let mut wts = Weights::default();
    for (name, shape, data) in weights {
        wts.insert(*name, Tensor::new(shape.to_vec(), data.to_vec()));
    }
    let x = Tensor::new(vec![1, c, h, w], input.to_vec());
    compiled
        .run_reference(&wts, &x)
        .unwrap_or_else(|d| panic!("{d:?}"))
        .remove(0)
}

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|v| v as f32).collect()
}

fn assert_close(found: &Tensor, shape: &[usize], expected: &[f32]) {
    assert_eq!(found.shape, shape, "shape");
    assert_eq!(found.data.len(), expected.len());
    for (i, (a, b)) in found.data.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
            "element {i}: found {a}, expected {b}\n{:?}",
            found.data
        );
    }
}

#[test]
fn conv_symmetric_padding() {
    let out = run(
        1,
        3,
        3,
        "return x |> conv(1, 3, pad = 1, bias = false) as c",
        &[("c.weight", &[1, 1, 3, 3], &[1.0; 9])],
        &iota(9).iter().map(|v| v + 1.0).collect::<Vec<_>>(),
    );
    assert_close(
        &out,
        &[1, 1, 3, 3],
        &[12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0],
    );
}

#[test]
fn conv_same_padding_puts_the_odd_pixel_bottom_right() {
    // 4x4 input, 3x3 kernel, stride 2: the output is 2x2 and the one pixel of padding is after.
    let out = run(
        1,
        4,
        4,
        "return x |> conv(1, 3, stride = 2, pad = same, bias = false) as c",
        &[("c.weight", &[1, 1, 3, 3], &[1.0; 9])],
        &iota(16),
    );
    assert_close(&out, &[1, 1, 2, 2], &[45.0, 39.0, 66.0, 50.0]);
}

#[test]
fn conv_per_side_padding_and_bias() {
    let out = run(
        1,
        2,
        2,
        "return x |> conv(1, 1, pad = [1, 0, 0, 2]) as c",
        &[("c.weight", &[1, 1, 1, 1], &[2.0]), ("c.bias", &[1], &[0.5])],
        &[1.0, 2.0, 3.0, 4.0],
    );
    assert_close(
        &out,
        &[1, 1, 3, 4],
        &[0.5, 0.5, 0.5, 0.5, 2.5, 4.5, 0.5, 0.5, 6.5, 8.5, 0.5, 0.5],
    );
}

#[test]
fn conv_rectangular_kernel_and_stride() {
    // 1x3 kernel with stride [1, 2] over a 2x5 input.
    let out = run(
        1,
        2,
        5,
        "return x |> conv(1, [1, 3], stride = [1, 2], bias = false) as c",
        &[("c.weight", &[1, 1, 1, 3], &[1.0, 10.0, 100.0])],
        &iota(10),
    );
    assert_close(&out, &[1, 1, 2, 2], &[210.0, 432.0, 765.0, 987.0]);
}

#[test]
fn conv_dilation() {
    // A 3x3 kernel with dilation 2 reads rows and columns 0, 2, 4 of a 5x5 input.
    let out = run(
        1,
        5,
        5,
        "return x |> conv(1, 3, dilation = 2, bias = false) as c",
        &[("c.weight", &[1, 1, 3, 3], &[1.0; 9])],
        &iota(25),
    );
    assert_close(&out, &[1, 1, 1, 1], &[108.0]);
}

#[test]
fn grouped_conv_reads_only_its_groups_channels() {
    // 4 input channels, 2 groups: output 0 sees channels 0 and 1, output 1 sees 2 and 3.
    let out = run(
        4,
        1,
        1,
        "return x |> conv(2, 1, groups = 2, bias = false) as c",
        &[("c.weight", &[2, 2, 1, 1], &[1.0, 10.0, 100.0, 1000.0])],
        &[1.0, 2.0, 3.0, 4.0],
    );
    assert_close(&out, &[1, 2, 1, 1], &[21.0, 4300.0]);
}

#[test]
fn depthwise_conv_with_multiplier() {
    // Two channels, multiplier 2: outputs 0 and 1 come from channel 0, outputs 2 and 3 from channel 1.
    let out = run(
        2,
        1,
        2,
        "return x |> dwconv([1, 2], multiplier = 2, bias = false) as d",
        &[("d.weight", &[4, 1, 1, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0])],
        &[1.0, 2.0, 3.0, 4.0],
    );
    assert_close(&out, &[1, 4, 1, 1], &[1.0, 2.0, 7.0, 6.0]);
}

#[test]
fn max_pool_ceil_mode() {
    // 4x4, 3x3 window, stride 2: floor mode gives 1x1, ceil mode 2x2 with clipped windows.
    let floor = run(1, 4, 4, "return x |> maxpool(3, stride = 2)", &[], &iota(16));
    assert_close(&floor, &[1, 1, 1, 1], &[10.0]);
    let ceil = run(
        1,
        4,
        4,
        "return x |> maxpool(3, stride = 2, ceil = true)",
        &[],
        &iota(16),
    );
    assert_close(&ceil, &[1, 1, 2, 2], &[10.0, 11.0, 14.0, 15.0]);
}

#[test]
fn max_pool_ignores_padding() {
    let v: Vec<f32> = iota(4).iter().map(|v| -v - 1.0).collect();
    let out = run(1, 2, 2, "return x |> maxpool(2, stride = 1, pad = 1)", &[], &v);
    assert_close(
        &out,
        &[1, 1, 3, 3],
        &[-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0],
    );
}

#[test]
fn avg_pool_counts_padding_unless_told_not_to() {
    let ones = [1.0f32; 16];
    let with = run(1, 4, 4, "return x |> avgpool(3, stride = 2, pad = 1)", &[], &ones);
    assert_close(&with, &[1, 1, 2, 2], &[4.0 / 9.0, 6.0 / 9.0, 6.0 / 9.0, 1.0]);
    let without = run(
        1,
        4,
        4,
        "return x |> avgpool(3, stride = 2, pad = 1, include_pad = false)",
        &[],
        &ones,
    );
    assert_close(&without, &[1, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn avg_pool_ceil_mode_divides_by_the_clipped_window() {
    // 5x5, 2x2 window, stride 2, ceil: the last row and column of windows hold one cell each.
    let out = run(1, 5, 5, "return x |> avgpool(2, ceil = true)", &[], &iota(25));
    assert_close(
        &out,
        &[1, 1, 3, 3],
        &[3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0],
    );
}

#[test]
fn rectangular_pool_window() {
    // EffNet's 2x1 max pooling halves the height only.
    let out = run(1, 4, 2, "return x |> maxpool([2, 1])", &[], &iota(8));
    assert_close(&out, &[1, 1, 2, 2], &[2.0, 3.0, 6.0, 7.0]);
}

#[test]
fn channel_shuffle_order() {
    let input = iota(6);
    let g2 = run(6, 1, 1, "return x |> shuffle(2)", &[], &input);
    assert_close(&g2, &[1, 6, 1, 1], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let g3 = run(6, 1, 1, "return x |> shuffle(3)", &[], &input);
    assert_close(&g3, &[1, 6, 1, 1], &[0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
}

#[test]
fn split_and_concat() {
    let body = "    let (a, b) = split(x, [1, 3])\n    return concat(b, a)";
    let out = run(4, 1, 2, body, &[], &iota(8));
    assert_close(&out, &[1, 4, 1, 2], &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0, 1.0]);
    let halves = run(
        4,
        1,
        1,
        "    let (a, b) = split(x)\n    return a + b",
        &[],
        &[1.0, 2.0, 10.0, 20.0],
    );
    assert_close(&halves, &[1, 2, 1, 1], &[11.0, 22.0]);
}

#[test]
fn batchnorm_uses_its_statistics_and_eps() {
    let out = run(
        1,
        1,
        2,
        "return x |> batchnorm(eps = 1.0) as bn",
        &[
            ("bn.gamma", &[1], &[2.0]),
            ("bn.beta", &[1], &[1.0]),
            ("bn.mean", &[1], &[0.5]),
            ("bn.var", &[1], &[3.0]),
        ],
        &[1.0, 3.0],
    );
    assert_close(&out, &[1, 1, 1, 2], &[1.5, 3.5]);
}

#[test]
fn activations() {
    let v = [-2.0, -0.5, 0.0, 3.0, 7.0];
    assert_close(
        &run(5, 1, 1, "return x |> relu", &[], &v),
        &[1, 5, 1, 1],
        &[0.0, 0.0, 0.0, 3.0, 7.0],
    );
    assert_close(
        &run(5, 1, 1, "return x |> relu6", &[], &v),
        &[1, 5, 1, 1],
        &[0.0, 0.0, 0.0, 3.0, 6.0],
    );
    assert_close(
        &run(5, 1, 1, "return x |> leaky_relu(0.1)", &[], &v),
        &[1, 5, 1, 1],
        &[-0.2, -0.05, 0.0, 3.0, 7.0],
    );
}

#[test]
fn global_pools_dense_flatten_softmax() {
    let x = [1.0, 2.0, 3.0, 6.0, -1.0, 0.0, 0.0, 1.0];
    assert_close(
        &run(2, 2, 2, "return x |> global_avgpool", &[], &x),
        &[1, 2, 1, 1],
        &[3.0, 0.0],
    );
    assert_close(
        &run(2, 2, 2, "return x |> global_maxpool", &[], &x),
        &[1, 2, 1, 1],
        &[6.0, 1.0],
    );
    let out = run(
        2,
        1,
        1,
        "return x |> flatten |> dense(3) as fc",
        &[
            ("fc.weight", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ("fc.bias", &[3], &[0.5, 0.0, -1.0]),
        ],
        &[1.0, -1.0],
    );
    assert_close(&out, &[1, 3], &[-0.5, -1.0, -2.0]);
    let sm = run(2, 1, 1, "return x |> flatten |> softmax", &[], &[0.0, 3f32.ln()]);
    assert_close(&sm, &[1, 2], &[0.25, 0.75]);
}

#[test]
fn dropout_is_identity_and_add_sums() {
    let out = run(2, 1, 1, "return (x |> dropout(0.3)) + x", &[], &[1.5, -2.0]);
    assert_close(&out, &[1, 2, 1, 1], &[3.0, -4.0]);
}
