//! The reference interpreter: every op on NCHW f32 tensors, written for clarity with plain loops.
//!
//! It runs the unoptimized IR node by node and is the oracle that every faster engine is tested
//! against; it is not the fast path. Each op's semantics are documented on its function.

use super::errors;
use super::tensor::Tensor;
use super::weights::Weights;
use crate::diag::Diagnostic;
use crate::ir::op::{Activation, Conv, Op, Pool, PoolKind};
use crate::ir::{Graph, NodeId};
use std::collections::HashMap;

/// Runs the graph on `inputs` (one per graph input, in order) and returns its outputs.
/// The weights must have been checked against the graph (`Weights::check`).
pub fn run(graph: &Graph, weights: &Weights, inputs: &[Tensor]) -> Result<Vec<Tensor>, Diagnostic> {
    if inputs.len() != graph.inputs.len() {
        return Err(errors::input_count(graph.inputs.len(), inputs.len()));
    }
    let order = graph
        .topo_order()
        .ok_or_else(|| errors::internal("the graph has a cycle"))?;
    // How many consumers still need each value, so values can be dropped after their last use.
    let mut remaining: HashMap<NodeId, usize> = HashMap::new();
    for &ix in &order {
        for i in graph.inputs_of(ix) {
            *remaining.entry(i).or_default() += 1;
        }
    }
    let mut values: HashMap<NodeId, Tensor> = HashMap::new();
    for &ix in &order {
        let node = graph.node(ix);
        let out = if node.op == Op::Input {
            let k = graph
                .inputs
                .iter()
                .position(|&i| i == ix)
                .expect("input nodes are graph inputs");
            let t = &inputs[k];
            if t.shape != node.shape.0 {
                return Err(errors::input_shape(&node.name, &node.shape.0, &t.shape));
            }
            t.clone()
        } else {
            let ins: Vec<&Tensor> = graph.inputs_of(ix).iter().map(|i| &values[i]).collect();
            let w = |suffix: &str| -> Result<&Tensor, Diagnostic> {
                let name = format!("{}.{suffix}", node.name);
                weights.get(&name).ok_or_else(|| errors::missing_tensor(&name))
            };
            let out = match &node.op {
                Op::Input => unreachable!("handled above"),
                Op::Conv(c) => {
                    let bias = if c.bias { Some(w("bias")?) } else { None };
                    conv(ins[0], c, w("weight")?, bias)
                }
                Op::BatchNorm { eps } => batchnorm(ins[0], w("gamma")?, w("beta")?, w("mean")?, w("var")?, *eps),
                Op::Act(a) => activation(ins[0], *a),
                Op::Pool(p) => pool(ins[0], p),
                Op::GlobalPool(kind) => global_pool(ins[0], *kind),
                Op::Dense { bias, .. } => {
                    let b = if *bias { Some(w("bias")?) } else { None };
                    dense(ins[0], w("weight")?, b)
                }
                Op::Flatten => Tensor::new(node.shape.0.clone(), ins[0].data.clone()),
                Op::Concat => concat(&ins),
                Op::Add => add(ins[0], ins[1]),
                Op::Slice { start, end } => slice(ins[0], *start, *end),
                Op::Shuffle { groups } => shuffle(ins[0], *groups),
                Op::Dropout { .. } => ins[0].clone(),
                Op::Softmax => softmax(ins[0]),
                Op::Block(_) => return Err(errors::internal("the reference interpreter runs unfused graphs")),
            };
            if out.shape != node.shape.0 {
                return Err(errors::internal(&format!(
                    "`{}` produced shape {:?}, expected {}",
                    node.name, out.shape, node.shape
                )));
            }
            out
        };
        for i in graph.inputs_of(ix) {
            let r = remaining.get_mut(&i).expect("counted above");
            *r -= 1;
            if *r == 0 && !graph.outputs.contains(&i) {
                values.remove(&i);
            }
        }
        values.insert(ix, out);
    }
    Ok(graph.outputs.iter().map(|o| values[o].clone()).collect())
}

/// Splits an NCHW shape.
fn nchw(t: &Tensor) -> (usize, usize, usize, usize) {
    (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
}

/// Convolution with zero padding: `out[n, o, y, x] = bias[o] + sum over the group's input
/// channels c and the window (i, j) of w[o, c, i, j] * in[n, g * Cin/G + c, y*sh - pad_top + i*dh,
/// x*sw - pad_left + j*dw]`, where `g = o / (Cout/G)`; positions outside the input read 0.
/// Weights are `[Cout, Cin / groups, kh, kw]`.
pub fn conv(x: &Tensor, c: &Conv, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (n, cin, h, w) = nchw(x);
    let (kh, kw) = (c.kernel.0, c.kernel.1);
    let (sh, sw) = (c.stride.0, c.stride.1);
    let (dh, dw) = (c.dilation.0, c.dilation.1);
    let oh = (h + c.pad.top + c.pad.bottom - dh * (kh - 1) - 1) / sh + 1;
    let ow = (w + c.pad.left + c.pad.right - dw * (kw - 1) - 1) / sw + 1;
    let cout = c.out_channels;
    let cin_g = cin / c.groups;
    let cout_g = cout / c.groups;
    let mut out = Tensor::zeros(&[n, cout, oh, ow]);
    for b in 0..n {
        for o in 0..cout {
            let g = o / cout_g;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = bias.map_or(0.0, |t| t.data[o]);
                    for ci in 0..cin_g {
                        let channel = g * cin_g + ci;
                        for i in 0..kh {
                            let iy = (y * sh + i * dh) as isize - c.pad.top as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for j in 0..kw {
                                let ix = (xo * sw + j * dw) as isize - c.pad.left as isize;
                                if ix < 0 || ix >= w as isize {
                                    continue;
                                }
                                let v = x.data[((b * cin + channel) * h + iy as usize) * w + ix as usize];
                                let k = weight.data[((o * cin_g + ci) * kh + i) * kw + j];
                                acc += v * k;
                            }
                        }
                    }
                    out.data[((b * cout + o) * oh + y) * ow + xo] = acc;
                }
            }
        }
    }
    out
}

/// Inference batchnorm per channel: `gamma * (x - mean) / sqrt(var + eps) + beta`.
pub fn batchnorm(x: &Tensor, gamma: &Tensor, beta: &Tensor, mean: &Tensor, var: &Tensor, eps: f32) -> Tensor {
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let mut out = x.clone();
    for (k, v) in out.data.iter_mut().enumerate() {
        let ch = (k / inner) % c;
        *v = gamma.data[ch] * (*v - mean.data[ch]) / (var.data[ch] + eps).sqrt() + beta.data[ch];
    }
    out
}

/// Elementwise activation: relu `max(x, 0)`, relu6 `min(max(x, 0), 6)`, leaky relu
/// `x if x >= 0 else slope * x`.
pub fn activation(x: &Tensor, a: Activation) -> Tensor {
    let f = |v: f32| match a {
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
        Activation::LeakyRelu { slope } => {
            if v >= 0.0 {
                v
            } else {
                slope * v
            }
        }
    };
    Tensor::new(x.shape.clone(), x.data.iter().map(|&v| f(v)).collect())
}

/// Max or average pooling. A window starts at `(y*sh - pad_top, x*sw - pad_left)`.
/// Max ignores padded cells. Average divides by the window clipped to the padded input
/// (`count_include_pad`, as PyTorch) or by the cells inside the input.
pub fn pool(x: &Tensor, p: &Pool) -> Tensor {
    let (n, c, h, w) = nchw(x);
    let (kh, kw) = (p.kernel.0, p.kernel.1);
    let (sh, sw) = (p.stride.0, p.stride.1);
    let out_len = |input: usize, before: usize, after: usize, k: usize, s: usize| {
        let span = input + before + after - k;
        let mut o = if p.ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
        if p.ceil && (o - 1) * s >= input + before {
            o -= 1;
        }
        o
    };
    let oh = out_len(h, p.pad.top, p.pad.bottom, kh, sh);
    let ow = out_len(w, p.pad.left, p.pad.right, kw, sw);
    let mut out = Tensor::zeros(&[n, c, oh, ow]);
    for plane in 0..n * c {
        let src = &x.data[plane * h * w..(plane + 1) * h * w];
        for y in 0..oh {
            for xo in 0..ow {
                let y0 = (y * sh) as isize - p.pad.top as isize;
                let x0 = (xo * sw) as isize - p.pad.left as isize;
                let y_end = (y0 + kh as isize).min((h + p.pad.bottom) as isize);
                let x_end = (x0 + kw as isize).min((w + p.pad.right) as isize);
                let padded_area = ((y_end - y0) * (x_end - x0)) as f32;
                let (ya, yb) = (y0.max(0) as usize, y_end.min(h as isize) as usize);
                let (xa, xb) = (x0.max(0) as usize, x_end.min(w as isize) as usize);
                let v = match p.kind {
                    PoolKind::Max => {
                        let mut m = f32::NEG_INFINITY;
                        for iy in ya..yb {
                            for ix in xa..xb {
                                m = m.max(src[iy * w + ix]);
                            }
                        }
                        m
                    }
                    PoolKind::Avg => {
                        let mut s = 0.0;
                        for iy in ya..yb {
                            for ix in xa..xb {
                                s += src[iy * w + ix];
                            }
                        }
                        let count = if p.count_include_pad {
                            padded_area
                        } else {
                            ((yb - ya) * (xb - xa)) as f32
                        };
                        s / count
                    }
                };
                out.data[(plane * oh + y) * ow + xo] = v;
            }
        }
    }
    out
}

/// Mean or max over each channel's whole plane, giving `[N, C, 1, 1]`.
pub fn global_pool(x: &Tensor, kind: PoolKind) -> Tensor {
    let (n, c, h, w) = nchw(x);
    let mut out = Tensor::zeros(&[n, c, 1, 1]);
    for plane in 0..n * c {
        let src = &x.data[plane * h * w..(plane + 1) * h * w];
        out.data[plane] = match kind {
            PoolKind::Avg => src.iter().sum::<f32>() / (h * w) as f32,
            PoolKind::Max => src.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
        };
    }
    out
}

/// `out[n, o] = bias[o] + sum_i w[o, i] * x[n, i]`; weights are `[out, in]`.
pub fn dense(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    let (n, fin) = (x.shape[0], x.shape[1]);
    let fout = weight.shape[0];
    let mut out = Tensor::zeros(&[n, fout]);
    for b in 0..n {
        for o in 0..fout {
            let mut acc = bias.map_or(0.0, |t| t.data[o]);
            for i in 0..fin {
                acc += weight.data[o * fin + i] * x.data[b * fin + i];
            }
            out.data[b * fout + o] = acc;
        }
    }
    out
}

/// Concatenation along channels, inputs in order.
pub fn concat(xs: &[&Tensor]) -> Tensor {
    let n = xs[0].shape[0];
    let inner: usize = xs[0].shape[2..].iter().product();
    let channels: usize = xs.iter().map(|t| t.shape[1]).sum();
    let mut shape = xs[0].shape.clone();
    shape[1] = channels;
    let mut data = Vec::with_capacity(n * channels * inner);
    for b in 0..n {
        for t in xs {
            let block = t.shape[1] * inner;
            data.extend_from_slice(&t.data[b * block..(b + 1) * block]);
        }
    }
    Tensor::new(shape, data)
}

/// Elementwise sum.
pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    Tensor::new(
        a.shape.clone(),
        a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect(),
    )
}

/// Channels `start..end`.
pub fn slice(x: &Tensor, start: usize, end: usize) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner: usize = x.shape[2..].iter().product();
    let mut shape = x.shape.clone();
    shape[1] = end - start;
    let mut data = Vec::with_capacity(n * (end - start) * inner);
    for b in 0..n {
        data.extend_from_slice(&x.data[(b * c + start) * inner..(b * c + end) * inner]);
    }
    Tensor::new(shape, data)
}

/// Channel shuffle: view channels as `(groups, C / groups)`, transpose, flatten. Output channel
/// `j * groups + i` is input channel `i * (C / groups) + j`.
pub fn shuffle(x: &Tensor, groups: usize) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner: usize = x.shape[2..].iter().product();
    let per = c / groups;
    let mut out = Tensor::zeros(&x.shape);
    for b in 0..n {
        for i in 0..groups {
            for j in 0..per {
                let src = (b * c + i * per + j) * inner;
                let dst = (b * c + j * groups + i) * inner;
                out.data[dst..dst + inner].copy_from_slice(&x.data[src..src + inner]);
            }
        }
    }
    out
}

/// Softmax over channels at each position: `exp(x - max) / sum exp(x - max)`.
pub fn softmax(x: &Tensor) -> Tensor {
    let (n, c) = (x.shape[0], x.shape[1]);
    let inner: usize = x.shape[2..].iter().product();
    let mut out = x.clone();
    for b in 0..n {
        for p in 0..inner {
            let at = |k: usize| (b * c + k) * inner + p;
            let m = (0..c).map(|k| x.data[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..c).map(|k| (x.data[at(k)] - m).exp()).sum();
            for k in 0..c {
                out.data[at(k)] = (x.data[at(k)] - m).exp() / sum;
            }
        }
    }
    out
}
