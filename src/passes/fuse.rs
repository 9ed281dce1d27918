//! Epilogue fusion: work that a kernel can do on its results while they are still in registers
//! moves into the node that produces them.
//!
//! - An activation after a convolution, dense layer or pooling joins its producer
//!   ([`Fused::act`](crate::ir::Fused)); after a concat of such producers, it joins each of them.
//! - An add of a convolution's (or dense layer's) result and another tensor becomes the
//!   convolution's residual input ([`Fused::residual`]), added before its activation, so a
//!   following activation can still join.
//! - A batchnorm after an activation or a residual (one that `fold_bn` could not fold into
//!   weights) joins as a per-channel scale and shift after the activation ([`Fused::post_bn`]).
//! - A max pooling after a dense convolution that runs on the window kernels (a stem: ShuffleNet's
//!   and SqueezeNet's) joins it ([`Fused::pool`]) when the rows its windows span fit a small ring
//!   (`codegen::kernels::conv_pool`): the kernel pools each group of convolution rows while they
//!   are in L1, and the convolution's full output, the network's largest tensor there, is never
//!   written. Nothing joins a node after its pooling.
//!
//! A producer only takes work when the fused node is its one user and its result is not a graph
//! output, so no other consumer ever sees the unfused value.

use super::{place, Pass};
use crate::codegen::kernels::conv_pool;
use crate::ir::op::{Op, Pool, PoolKind};
use crate::ir::{FoldedBn, Graph, Kernel, NodeId};

pub struct Fuse;

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        for ix in order {
            match graph.node(ix).op.clone() {
                Op::Act(act) => {
                    let input = graph.inputs_of(ix)[0];
                    let targets = if takes_act(graph, input, ix) {
                        vec![input]
                    } else if graph.node(input).op == Op::Concat && only_user(graph, input, ix) {
                        let parts = graph.inputs_of(input);
                        if !parts.iter().all(|&p| takes_act(graph, p, input)) {
                            continue;
                        }
                        parts
                    } else {
                        continue;
                    };
                    for t in targets {
                        graph.node_mut(t).fused.act = Some(act);
                    }
                    graph.replace_uses(ix, input);
                    graph.remove(ix);
                }
                Op::Add => {
                    let ins = graph.inputs_of(ix);
                    if ins[0] == ins[1] {
                        continue;
                    }
                    // Prefer the operand computed last: the other one is then ready before it.
                    let Some(k) = [1, 0].into_iter().find(|&k| takes_residual(graph, ins[k], ix)) else {
                        continue;
                    };
                    let (conv, other) = (ins[k], ins[1 - k]);
                    let port = graph.inputs_of(conv).len();
                    graph.g.add_edge(other, conv, crate::ir::Edge { port });
                    graph.node_mut(conv).fused.residual = true;
                    graph.replace_uses(ix, conv);
                    graph.remove(ix);
                }
                Op::Pool(pool) if pool.kind == PoolKind::Max => {
                    let input = graph.inputs_of(ix)[0];
                    if !takes_pool(graph, input, ix, &pool) {
                        continue;
                    }
                    let shape = graph.node(ix).shape.clone();
                    let conv = graph.node_mut(input);
                    conv.fused.pool = Some(pool);
                    conv.shape = shape;
                    graph.replace_uses(ix, input);
                    graph.remove(ix);
                }
                Op::BatchNorm { eps } => {
                    let input = graph.inputs_of(ix)[0];
                    let p = graph.node(input);
                    let fits = matches!(p.op, Op::Conv(_) | Op::Dense { .. })
                        && p.fused.post_bn.is_none()
                        && p.fused.pool.is_none()
                        && (p.fused.act.is_some() || p.fused.residual)
                        && only_user(graph, input, ix);
                    if !fits {
                        continue;
                    }
                    let name = graph.node(ix).name.clone();
                    graph.node_mut(input).fused.post_bn = Some(FoldedBn { name, eps });
                    graph.replace_uses(ix, input);
                    graph.remove(ix);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether `user` is the only consumer of `ix`, and `ix` is not a graph output.
fn only_user(graph: &Graph, ix: NodeId, user: NodeId) -> bool {
    graph.users_of(ix) == [user] && !graph.outputs.contains(&ix)
}

/// Whether `ix` can apply an activation for its only user `user`.
fn takes_act(graph: &Graph, ix: NodeId, user: NodeId) -> bool {
    let n = graph.node(ix);
    let kind = matches!(n.op, Op::Conv(_) | Op::Dense { .. } | Op::Pool(_) | Op::GlobalPool(_));
    kind && n.fused.act.is_none() && n.fused.post_bn.is_none() && n.fused.pool.is_none() && only_user(graph, ix, user)
}

/// Whether `ix` can add a residual for its only user `user`.
fn takes_residual(graph: &Graph, ix: NodeId, user: NodeId) -> bool {
    let n = graph.node(ix);
    matches!(n.op, Op::Conv(_) | Op::Dense { .. })
        && !n.fused.residual
        && n.fused.act.is_none()
        && n.fused.post_bn.is_none()
        && n.fused.pool.is_none()
        && only_user(graph, ix, user)
}

/// Whether convolution `ix` can pool its result for its only user, max pooling `user`: a dense
/// convolution on the window kernels with no residual (which has the convolution's shape), whose
/// pooling windows' rows fit the kernel's ring.
fn takes_pool(graph: &Graph, ix: NodeId, user: NodeId, pool: &Pool) -> bool {
    let n = graph.node(ix);
    let Op::Conv(c) = &n.op else {
        return false;
    };
    if n.fused.residual || n.fused.pool.is_some() || !only_user(graph, ix, user) || n.shape.0.len() != 4 {
        return false;
    }
    let input = &graph.node(graph.op_inputs_of(ix)[0]).shape.0;
    place::conv_kernel(c, input, &n.shape.0) == Kernel::Direct && conv_pool::fits(pool, n.shape.0[3], n.shape.0[1])
}
