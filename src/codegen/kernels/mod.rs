//! Kernel families: each turns one node into the body of a Cranelift function.
//!
//! A [`Kernel`] knows how many work items it has (the executor may split them across threads)
//! and emits the code for a range of them. Lowering a node picks the family, packs the node's
//! weights in the order that family reads them, and bakes every shape, stride and offset in.

/// A row function's [`HostFn`] (the calling convention of `direct_wide::ROW_PARAMS`): `$symbol`,
/// with the address of `$row` when this CPU runs `$level`.
macro_rules! row_host_fn {
    ($(#[$doc:meta])* $name:ident, $symbol:literal, $level:expr, $row:path) => {
        $(#[$doc])*
        pub static $name: crate::codegen::host::HostFn = crate::codegen::host::HostFn {
            symbol: $symbol,
            params: crate::codegen::kernels::direct_wide::ROW_PARAMS,
            returns: &[],
            address: || {
                #[cfg(target_arch = "x86_64")]
                if crate::codegen::Level::cpu() >= $level {
                    return Some($row as *const u8);
                }
                None
            },
        };
    };
}

pub mod avx2;
pub mod avx2_dot;
pub mod avx512;
pub mod block;
pub mod conv;
pub mod conv_pool;
pub mod depthwise;
pub mod depthwise_wide;
pub mod direct;
pub mod direct_wide;
pub mod eltwise;
pub mod gemm;
pub mod pool;
pub mod pool_wide;
pub mod window;
pub mod winograd;

use super::emit::Emit;
use super::host::HostFn;
use super::layout::{self, Buf};
use super::params;
use super::Isa;
use crate::ir::op::Op;
use crate::ir::{FoldedBn, Graph, Kernel as Family, NodeId, Runs};
use crate::passes::place::shuffle_source;
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
    /// The kernel's name where it is not its node's family (a direct convolution computed by
    /// the Winograd kernel), for profiles.
    fn kind(&self) -> Option<&'static str> {
        None
    }
    /// The host functions the code calls besides `expf` (see [`Emit::host`]).
    fn host_fns(&self) -> Vec<&'static HostFn> {
        Vec::new()
    }
    /// The kernel's weights, `(offset, floats)` in the packed weights, when it is bound by
    /// reading them from memory (each used once), so that an earlier kernel should prefetch them.
    fn streamed_weights(&self) -> Option<(usize, usize)> {
        None
    }
    /// Lines of 16 floats the kernel can prefetch for a later one while it computes.
    fn prefetch_capacity(&self) -> usize {
        0
    }
    /// Makes the kernel prefetch the lines of 16 floats from element `offset` of the packed
    /// weights on (`offset` is a multiple of 16), as many of `lines` as its capacity allows.
    fn prefetch_ahead(&mut self, _offset: usize, _lines: usize) {}
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

/// The kernels of node `ix` of a placed and planned graph, in the order they run: a gather per
/// staged input, then the node's own kernel. Nodes that run nothing give none. `isa` picks the
/// register tiles of the matrix multiply and of the direct convolution.
pub fn lower(graph: &Graph, ix: NodeId, weights: &Weights, pack: &mut Packer, isa: Isa) -> Vec<Box<dyn Kernel>> {
    let node = graph.node(ix);
    let place = node.place.as_ref().expect("the graph is placed");
    let Runs::Kernel(kind) = place.runs else {
        return vec![];
    };
    let all_inputs = graph.inputs_of(ix);
    let mut kernels: Vec<Box<dyn Kernel>> = Vec::new();
    // Where each input is read: its own placement, or the scratch buffer it was gathered into.
    let mut staged: Vec<Option<Buf>> = vec![None; all_inputs.len()];
    for &(port, buffer) in &place.staged {
        let input = all_inputs[port];
        let to = layout::scratch(graph, buffer, &graph.node(input).shape.0);
        let (from, slots) = layout::slots(graph, input);
        kernels.push(Box::new(eltwise::Copy::gather(&[(from, slots.to_vec())], to)));
        staged[port] = Some(to);
    }
    // An input as slots of a buffer.
    let slotted = |port: usize| -> (Buf, Vec<usize>) {
        match staged[port] {
            Some(b) => (b, (0..b.c).collect()),
            None => {
                let (b, s) = layout::slots(graph, all_inputs[port]);
                (b, s.to_vec())
            }
        }
    };
    // An input as a contiguous range and the position of each channel in it.
    let ranged = |port: usize| -> (Buf, Vec<usize>) {
        match staged[port] {
            Some(b) => (b, (0..b.c).collect()),
            None => layout::permuted(graph, all_inputs[port]),
        }
    };
    let residual_port = node.fused.residual.then(|| all_inputs.len() - 1);
    let act = node.fused.act;
    let out_slots = &place.slots;

    let kernel: Box<dyn Kernel> = match (&node.op, kind) {
        (Op::Conv(_) | Op::Dense { .. }, Family::Gemm) => {
            let (groups, has_bias) = match &node.op {
                Op::Conv(c) => (c.groups, c.bias),
                Op::Dense { bias, .. } => (1, *bias),
                _ => unreachable!(),
            };
            let outputs = node.shape.0[1];
            let layer = params::Layer::of(node, has_bias, outputs, weights);
            let (input, in_slots) = slotted(0);
            let residual = residual_port.map(slotted);
            let (out, _) = layout::slots(graph, ix);
            let spec = gemm::GemmSpec {
                input,
                in_slots: Some(&in_slots),
                out,
                out_slots: Some(out_slots),
                groups,
                weight: &layer.weight,
                bias: layer.bias.as_deref(),
                residual: residual.as_ref().map(|(b, s)| (*b, Some(s.as_slice()))),
                act,
                post: layer.post.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice())),
            };
            Box::new(gemm::Gemm::new(&spec, pack, isa))
        }
        (Op::Conv(c), Family::Depthwise | Family::Direct | Family::Conv) => {
            // Channel-wise kernels keep their input's channel order (the placement gave the output
            // the same one); the others absorb both orders into the weights.
            let (input, rel_in) = ranged(0);
            let (out, rel_out) = layout::permuted(graph, ix);
            let mut layer = params::Layer::of(node, c.bias, c.out_channels, weights);
            if kind != Family::Depthwise && c.groups == 1 {
                layer.permute_inputs(&rel_in, c.kernel.0 * c.kernel.1);
            }
            layer.permute_outputs(&rel_out);
            let epilogue = window::Epilogue {
                act,
                residual: residual_port.map(|p| ranged(p).0),
            };
            let (w, b, post) = (&layer.weight, layer.bias.as_deref(), post(&layer));
            if let (Some(pool), Family::Direct) = (&node.fused.pool, kind) {
                // Rows of the convolution into a ring, pooled from there (see `conv_pool`).
                let conv = crate::passes::place::conv_shape(graph, ix).0;
                let (h, w_px) = (conv[2], conv[3]);
                let row = Buf {
                    offset: 0,
                    n: 1,
                    h: 1,
                    w: w_px,
                    c: out.c,
                    stride: out.c,
                };
                let rows = if isa.wide() {
                    let level = isa.direct_level(c.out_channels);
                    conv_pool::Rows::Wide(direct_wide::DirectWide::new(
                        c, input, row, w, b, epilogue, post, pack, level,
                    ))
                } else {
                    conv_pool::Rows::Baseline(direct::Direct::new(c, input, row, w, b, epilogue, post, pack))
                };
                let scratch = place.scratch.expect("a fused pooling has a scratch buffer");
                let scratch = graph.buffers[scratch].offset.expect("the graph is planned");
                kernels.push(Box::new(conv_pool::ConvPool::new(
                    rows,
                    (h, w_px),
                    pool,
                    out,
                    scratch,
                    pack,
                )));
                return kernels;
            }
            match kind {
                Family::Depthwise => depthwise(isa, c, input, out, w, b, epilogue, post, pack),
                Family::Direct if winograd::Winograd::supports(c, &input, &out, &epilogue, isa) => {
                    Box::new(winograd::Winograd::new(c, input, out, w, b, epilogue, post, pack))
                }
                Family::Direct if isa.wide() => {
                    let level = isa.direct_level(c.out_channels);
                    Box::new(direct_wide::DirectWide::new(
                        c, input, out, w, b, epilogue, post, pack, level,
                    ))
                }
                Family::Direct => Box::new(direct::Direct::new(c, input, out, w, b, epilogue, post, pack)),
                _ => Box::new(conv::Scalar::new(c, input, out, w, b, epilogue, post, pack)),
            }
        }
        (Op::Block(block), Family::Block) => {
            let (input, in_rel) = ranged(0);
            let (out, out_rel) = layout::permuted(graph, ix);
            let residual = residual_port.map(ranged);
            let scratch = place.scratch.expect("a block has a scratch buffer");
            let scratch = graph.buffers[scratch].offset.expect("the graph is planned");
            Box::new(block::FusedBlock::new(
                block,
                (input, &in_rel),
                (out, &out_rel),
                residual.as_ref().map(|(b, rel)| (*b, rel.as_slice())),
                scratch,
                weights,
                pack,
                isa,
            ))
        }
        (Op::Pool(p), Family::Pool) if isa.wide() && pool_wide::PoolWide::supports(p) => Box::new(
            pool_wide::PoolWide::new(p, ranged(0).0, out_range(graph, ix), act, pack),
        ),
        (Op::Pool(p), Family::Pool) => Box::new(pool::Windowed::new(p, ranged(0).0, out_range(graph, ix), act, pack)),
        (Op::GlobalPool(k), Family::GlobalPool) => {
            let (input, out) = (ranged(0).0, out_range(graph, ix));
            match pool_wide::PoolWide::global(*k, input) {
                Some(p) if isa.wide() => Box::new(pool_wide::PoolWide::new(&p, input, out, act, pack)),
                _ => Box::new(pool::Global::new(*k, input, out, act)),
            }
        }
        (Op::BatchNorm { eps }, Family::ScaleShift) => {
            let (input, rel) = ranged(0);
            let bn = FoldedBn {
                name: node.name.clone(),
                eps: *eps,
            };
            let (scale, shift) = params::batchnorm(weights, &bn);
            let mut packed = params::scatter(&scale, &rel);
            packed.extend(params::scatter(&shift, &rel));
            Box::new(eltwise::ScaleShift {
                input,
                out: out_range(graph, ix),
                params: pack.push(&packed),
            })
        }
        (Op::Act(a), Family::Map) => Box::new(eltwise::Map {
            input: ranged(0).0,
            out: out_range(graph, ix),
            act: *a,
        }),
        (Op::Add, Family::Add) => Box::new(eltwise::Add {
            a: ranged(0).0,
            b: ranged(1).0,
            out: out_range(graph, ix),
        }),
        (Op::Softmax, Family::Softmax) => Box::new(eltwise::Softmax {
            input: ranged(0).0,
            out: out_range(graph, ix),
        }),
        (Op::Flatten, Family::Gather) if graph.node(all_inputs[0]).shape.0.len() == 4 => {
            Box::new(eltwise::Copy::flatten(ranged(0).0, out_range(graph, ix)))
        }
        (_, Family::Gather) => {
            let parts: Vec<(Buf, Vec<usize>)> = match &node.op {
                Op::Concat => (0..all_inputs.len()).map(slotted).collect(),
                Op::Slice { start, end } => {
                    let (b, s) = slotted(0);
                    vec![(b, s[*start..*end].to_vec())]
                }
                Op::Shuffle { groups } => {
                    let (b, s) = slotted(0);
                    let c = s.len();
                    let src = (0..c).map(|j| s[shuffle_source(c, *groups, j)]).collect();
                    vec![(b, src)]
                }
                _ => vec![slotted(0)],
            };
            Box::new(eltwise::Copy::gather(&parts, out_range(graph, ix)))
        }
        (op, kind) => unreachable!("`{}` is not computed by a {kind} kernel", op.kind()),
    };
    kernels.push(kernel);
    kernels
}

/// The depthwise convolution kernel for `isa`: the AVX2 row function when the ISA has wide
/// tiles and the function takes the kernel's height, else Cranelift's f32x4 code.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    isa: Isa,
    c: &crate::ir::op::Conv,
    input: Buf,
    out: Buf,
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: window::Epilogue,
    post: Option<(&[f32], &[f32])>,
    pack: &mut Packer,
) -> Box<dyn Kernel> {
    if isa.wide() && depthwise_wide::DepthwiseWide::supports(c) {
        Box::new(depthwise_wide::DepthwiseWide::new(
            c, input, out, weight, bias, epilogue, post, pack,
        ))
    } else {
        Box::new(depthwise::Depthwise::new(
            c, input, out, weight, bias, epilogue, post, pack,
        ))
    }
}

/// The output of a kernel that writes a contiguous channel range (its channel order is the
/// placement's business).
fn out_range(graph: &Graph, ix: NodeId) -> Buf {
    layout::permuted(graph, ix).0
}

fn post(layer: &params::Layer) -> Option<(&[f32], &[f32])> {
    layer.post.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()))
}
