//! Block fusion: a depthwise convolution and the 1x1 convolution that consumes it (MobileNet's
//! depthwise-separable pair), with the convolution that feeds the depthwise convolution when
//! there is one (a 1x1 expansion: MobileNetV2's inverted residual; or a dense convolution of any
//! window: MobileNetV2's stem before its first block), become one [`Op::Block`] node. Its kernel
//! streams over output rows, so the wide tensors between the stages (the expanded tensor and the
//! depthwise output) are never materialized; only a ring of a few rows is (see
//! `codegen::kernels::block`).
//!
//! The stages keep what `fold_bn` and `fuse` gave them (batchnorms, activations, a post-activation
//! batchnorm); the projection's residual add becomes the block's. A stage joins only when the next
//! stage is its one user and its result is not a graph output, and the depthwise convolution must
//! have a border the windowed kernel handles.
//!
//! The pass runs when [`PassOptions::fuse_blocks`](crate::ir::PassOptions) is set, and fuses a block
//! only when its widest inner tensor is at least `fuse_min_bytes` (a small block never holds the
//! network's peak memory, and its few rows split badly across threads), and a pair without
//! expansion only when it narrows the channels (MobileNetV2's first block, not MobileNet v1's
//! pairs, whose pointwise output is the larger tensor anyway). A chain with an expansion fuses
//! only when its widest inner tensor is at least [`WIDENING`] times its input and output
//! together: MobileNet v1's pointwise, depthwise, pointwise chains (widening 1) run faster as
//! three layers, MobileNetV2's blocks (widening 3 to 5) do not. A dense first stage joins a pair
//! that fuses when the block's input and output together are smaller than the stage's output and
//! the depthwise output together. A `fuse_min_bytes` of 0 turns the size rules off, so that every
//! chain the kernel can run fuses.

use super::Pass;
use crate::codegen::layout::Buf;
use crate::ir::op::{Block, Conv, Op, Stage};
use crate::ir::{Cost, Fused, Graph, Node, NodeId};

/// How many times its input and output together a chain's widest inner tensor must be to fuse.
const WIDENING: usize = 2;

pub struct FuseBlocks;

impl Pass for FuseBlocks {
    fn name(&self) -> &'static str {
        "fuse_blocks"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        if !graph.options.fuse_blocks {
            return Ok(());
        }
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        for project in order {
            if !graph.g.contains_node(project) {
                continue;
            }
            if let Some(chain) = chain(graph, project) {
                replace(graph, &chain);
            }
        }
        Ok(())
    }
}

/// The nodes of a fusable chain ending in `project`.
struct Chain {
    first: Option<NodeId>,
    depthwise: NodeId,
    project: NodeId,
}

fn conv(graph: &Graph, ix: NodeId) -> Option<&Conv> {
    match &graph.node(ix).op {
        Op::Conv(c) => Some(c),
        _ => None,
    }
}

fn channels(graph: &Graph, ix: NodeId) -> usize {
    graph.node(ix).shape.0[1]
}

/// Whether `ix` feeds only `user`, is not a graph output, and adds no residual and no pooling.
fn inner(graph: &Graph, ix: NodeId, user: NodeId) -> bool {
    let fused = &graph.node(ix).fused;
    graph.users_of(ix) == [user] && !graph.outputs.contains(&ix) && !fused.residual && fused.pool.is_none()
}

/// Whether dense convolution `c` (node `ix`) can lead a block: its rows are computed by the
/// window kernels (`direct.rs`, `direct_wide.rs`) straight into the block's ring.
fn dense_fits(graph: &Graph, ix: NodeId, c: &Conv) -> bool {
    let input = &graph.node(graph.op_inputs_of(ix)[0]).shape.0;
    let (in_buf, out_buf) = (Buf::dense(0, input), Buf::dense(0, &graph.node(ix).shape.0));
    input.len() == 4 && crate::codegen::kernels::window::fits(c, &in_buf, &out_buf)
}

fn bytes(graph: &Graph, ix: NodeId) -> usize {
    graph.node(ix).shape.0.iter().product::<usize>() * 4
}

fn chain(graph: &Graph, project: NodeId) -> Option<Chain> {
    let p = conv(graph, project)?;
    if !p.pointwise() || graph.node(project).shape.0.len() != 4 {
        return None;
    }
    let depthwise = graph.op_inputs_of(project)[0];
    let d = conv(graph, depthwise)?;
    let input = graph.op_inputs_of(depthwise)[0];
    let in_shape = &graph.node(input).shape.0;
    let ch = in_shape[1];
    if d.groups != ch || d.out_channels != ch || !inner(graph, depthwise, project) {
        return None;
    }
    let (in_buf, out_buf) = (Buf::dense(0, in_shape), Buf::dense(0, &graph.node(depthwise).shape.0));
    if !crate::codegen::kernels::window::fits(d, &in_buf, &out_buf) {
        return None;
    }
    let first = conv(graph, input)
        .filter(|c| c.groups == 1 && inner(graph, input, depthwise) && graph.node(input).shape.0.len() == 4)
        .filter(|c| c.pointwise() || dense_fits(graph, input, c));
    if channels(graph, depthwise) == 0 {
        return None;
    }
    let min = graph.options.fuse_min_bytes;
    let sized = min > 0;
    let ends = |head: NodeId| bytes(graph, graph.op_inputs_of(head)[0]) + bytes(graph, project);
    let first = match first {
        // A chain whose expanded tensor is not much wider than its input and output together
        // (MobileNet v1's pointwise, depthwise, pointwise chains, not MobileNetV2's expansion
        // by 6) saves less memory traffic than its streaming costs.
        Some(e) if e.pointwise() => {
            let wide = bytes(graph, depthwise).max(bytes(graph, input));
            if wide < min || (sized && wide < WIDENING * ends(input)) {
                return None;
            }
            return Some(Chain {
                first: Some(input),
                depthwise,
                project,
            });
        }
        // A dense convolution joins a pair that fuses when the chain then holds less than the
        // convolution's output and the depthwise output together (MobileNetV2's stem: 0.6 + 0.8
        // MB instead of 1.6 + 1.6); its rows cost far more to compute than to stream.
        Some(_) if !sized || ends(input) < bytes(graph, input) + bytes(graph, depthwise) => Some(input),
        _ => None,
    };
    // A pair whose output is at least as large as the depthwise output saves nothing: its input
    // and output are live together either way, and the rings would come on top.
    if bytes(graph, depthwise) < min || (sized && bytes(graph, project) >= bytes(graph, depthwise)) {
        return None;
    }
    Some(Chain {
        first,
        depthwise,
        project,
    })
}

fn stage(graph: &Graph, ix: NodeId) -> Stage {
    let n = graph.node(ix);
    let Op::Conv(conv) = &n.op else {
        unreachable!("block stages are convolutions")
    };
    Stage {
        name: n.name.clone(),
        conv: conv.clone(),
        fused: Fused {
            residual: false,
            ..n.fused.clone()
        },
    }
}

fn replace(graph: &mut Graph, chain: &Chain) {
    let head = chain.first.unwrap_or(chain.depthwise);
    let input = graph.op_inputs_of(head)[0];
    let p = graph.node(chain.project);
    let residual = p
        .fused
        .residual
        .then(|| *graph.inputs_of(chain.project).last().expect("residual"));
    let members: Vec<NodeId> = chain
        .first
        .into_iter()
        .chain([chain.depthwise, chain.project])
        .collect();
    let mut cost: Option<Cost> = None;
    for &m in &members {
        if let Some(c) = graph.node(m).cost {
            let t = cost.get_or_insert_with(Cost::default);
            t.params += c.params;
            t.macs += c.macs;
            t.activation_bytes = c.activation_bytes;
        }
    }
    let block = Box::new(Block {
        first: chain.first.map(|e| stage(graph, e)),
        depthwise: stage(graph, chain.depthwise),
        project: stage(graph, chain.project),
    });
    let mut node = Node::new(p.name.clone(), Op::Block(block), p.shape.clone(), p.span);
    node.cost = cost;
    node.fused.residual = residual.is_some();
    let inputs: Vec<NodeId> = std::iter::once(input).chain(residual).collect();
    let ix = graph.add(node, &inputs);
    graph.replace_uses(chain.project, ix);
    for m in members.into_iter().rev() {
        graph.remove(m);
    }
}
