//! Kernel families: each turns one node into the body of a Cranelift function.
//!
//! A [`Kernel`] knows how many work items it has (the executor may split them across threads)
//! and emits the code for a range of them. Lowering a node picks the family, packs the node's
//! weights in the order that family reads them, and bakes every shape, stride and offset in.

pub mod conv;
pub mod depthwise;
pub mod direct;
pub mod eltwise;
pub mod gemm;
pub mod pool;
pub mod window;

use super::emit::Emit;
use super::layout::Buf;
use crate::ir::op::{Hw, Op, Pad};
use crate::ir::Node;
use crate::runtime::Weights;
use cranelift_codegen::ir::Value;

/// The code of one node.
pub trait Kernel {
    /// Work items `0..items()`; the kernel computes any sub-range `begin..end`.
    fn items(&self) -> usize;
    /// Multiply-accumulates (or element operations) per item, so the executor can judge whether
    /// splitting the items across threads pays.
    fn work_per_item(&self) -> usize;
    /// Emits the body that computes items `begin..end`.
    fn emit(&self, e: &mut Emit, begin: Value, end: Value);
}

/// The packed weights of the whole network, one f32 buffer; each kernel reads its part at
/// constant offsets.
#[derive(Default)]
pub struct Packer {
    pub data: Vec<f32>,
}

impl Packer {
    /// Appends `values` at a 64-byte aligned offset and returns that offset.
    pub fn push(&mut self, values: &[f32]) -> usize {
        let offset = self.data.len().div_ceil(16) * 16;
        self.data.resize(offset, 0.0);
        self.data.extend_from_slice(values);
        offset
    }
}

/// The weights of a node by suffix (the caller has checked they exist).
pub fn tensor<'w>(weights: &'w Weights, node: &Node, suffix: &str) -> &'w [f32] {
    &weights
        .get(&format!("{}.{suffix}", node.name))
        .expect("weights are checked before lowering")
        .data
}

/// Chooses the kernel for a node; `None` for nodes that need no code (views, inputs).
pub fn lower(node: &Node, ins: &[Buf], out: Buf, weights: &Weights, pack: &mut Packer) -> Option<Box<dyn Kernel>> {
    Some(match &node.op {
        Op::Input | Op::Dropout { .. } => return None,
        Op::Flatten if ins[0].h * ins[0].w == 1 => return None,
        Op::Conv(c) if c.groups == ins[0].c && c.out_channels == c.groups => {
            depthwise::lower(node, c, ins[0], out, weights, pack)
        }
        Op::Conv(c) if c.groups == 1 && !(c.kernel == Hw(1, 1) && c.stride == Hw(1, 1) && c.pad == Pad::default()) => {
            direct::lower(node, c, ins[0], out, weights, pack)
        }
        Op::Conv(c) if c.kernel == Hw(1, 1) && c.stride == Hw(1, 1) && c.pad == Pad::default() => {
            gemm::lower_conv(node, c, ins[0], out, weights, pack)
        }
        Op::Conv(c) => conv::lower(node, c, ins[0], out, weights, pack),
        Op::Dense { bias, .. } => gemm::lower_dense(node, *bias, ins[0], out, weights, pack),
        Op::Pool(p) => pool::lower(p, ins[0], out),
        Op::GlobalPool(kind) => pool::lower_global(*kind, ins[0], out),
        Op::BatchNorm { eps } => eltwise::lower_batchnorm(node, *eps, ins[0], out, weights, pack),
        Op::Act(a) => Box::new(eltwise::Map {
            input: ins[0],
            out,
            act: *a,
        }),
        Op::Add => Box::new(eltwise::Add {
            a: ins[0],
            b: ins[1],
            out,
        }),
        Op::Concat => Box::new(eltwise::Copy::concat(ins, out)),
        Op::Slice { start, .. } => Box::new(eltwise::Copy::slice(ins[0], *start, out)),
        Op::Shuffle { groups } => Box::new(eltwise::Copy::shuffle(ins[0], *groups, out)),
        Op::Flatten => Box::new(eltwise::Copy::flatten(ins[0], out)),
        Op::Softmax => Box::new(eltwise::Softmax { input: ins[0], out }),
    })
}
