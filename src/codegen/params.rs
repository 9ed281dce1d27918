//! The parameters a kernel packs, derived from the network's weights as the optimized node
//! needs them: a batchnorm folded into a convolution's weights and bias, a batchnorm after the
//! activation as a per-channel scale and shift, and channel permutations.
//!
//! Tensors are looked up by the names of the unoptimized graph (`<node>.weight`, `<bn>.gamma`),
//! which the weights were checked against.

use crate::ir::{FoldedBn, Node};
use crate::runtime::Weights;

fn get<'w>(weights: &'w Weights, name: &str, suffix: &str) -> &'w [f32] {
    &weights
        .get(&format!("{name}.{suffix}"))
        .expect("weights are checked before lowering")
        .data
}

/// A batchnorm as `y = x * scale + shift`.
pub fn batchnorm(weights: &Weights, bn: &FoldedBn) -> (Vec<f32>, Vec<f32>) {
    let gamma = get(weights, &bn.name, "gamma");
    let beta = get(weights, &bn.name, "beta");
    let mean = get(weights, &bn.name, "mean");
    let var = get(weights, &bn.name, "var");
    let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + bn.eps).sqrt()).collect();
    let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    (scale, shift)
}

/// The weights of a convolution or dense layer, output channel major (`[out][...]`), with its
/// bias and post-activation scale and shift, all in logical channel order.
pub struct Layer {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub post: Option<(Vec<f32>, Vec<f32>)>,
}

impl Layer {
    /// The parameters of `node` (a conv or dense layer with `outputs` output channels), with
    /// its fused batchnorms applied.
    pub fn of(node: &Node, has_bias: bool, outputs: usize, weights: &Weights) -> Layer {
        let mut weight = get(weights, &node.name, "weight").to_vec();
        let mut bias = has_bias.then(|| get(weights, &node.name, "bias").to_vec());
        if let Some(bn) = &node.fused.bn {
            let (scale, shift) = batchnorm(weights, bn);
            let per = weight.len() / outputs;
            for (o, row) in weight.chunks_mut(per).enumerate() {
                row.iter_mut().for_each(|w| *w *= scale[o]);
            }
            let b = bias.get_or_insert_with(|| vec![0.0; outputs]);
            for o in 0..outputs {
                b[o] = b[o] * scale[o] + shift[o];
            }
        }
        let post = node.fused.post_bn.as_ref().map(|bn| batchnorm(weights, bn));
        Layer { weight, bias, post }
    }

    /// Moves output channel `o` to position `to[o]` (weights, bias and post alike).
    pub fn permute_outputs(&mut self, to: &[usize]) {
        let per = self.weight.len() / to.len();
        let mut w = vec![0.0; self.weight.len()];
        for (o, &t) in to.iter().enumerate() {
            w[t * per..(t + 1) * per].copy_from_slice(&self.weight[o * per..(o + 1) * per]);
        }
        self.weight = w;
        if let Some(b) = &mut self.bias {
            *b = scatter(b, to);
        }
        if let Some((s, t)) = &mut self.post {
            *s = scatter(s, to);
            *t = scatter(t, to);
        }
    }

    /// Moves input channel `i` of a `[out][in][kh][kw]` weight to position `to[i]`.
    pub fn permute_inputs(&mut self, to: &[usize], taps: usize) {
        let cin = to.len();
        let per_out = cin * taps;
        let mut w = vec![0.0; self.weight.len()];
        for (o_row, src) in w.chunks_mut(per_out).zip(self.weight.chunks(per_out)) {
            for (i, &t) in to.iter().enumerate() {
                o_row[t * taps..(t + 1) * taps].copy_from_slice(&src[i * taps..(i + 1) * taps]);
            }
        }
        self.weight = w;
    }
}

/// `out[to[i]] = v[i]`.
pub fn scatter(v: &[f32], to: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for (i, &t) in to.iter().enumerate() {
        out[t] = v[i];
    }
    out
}
