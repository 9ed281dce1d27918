//! Batchnorm folding: a batchnorm whose input is a convolution or dense layer used by nothing
//! else becomes part of that layer. The layer keeps its name and records the batchnorm
//! ([`Fused::bn`](crate::ir::Fused)); code generation rewrites its weights and bias as
//! `w' = w * gamma / sqrt(var + eps)` and `b' = (b - mean) * gamma / sqrt(var + eps) + beta`.

use super::Pass;
use crate::ir::op::Op;
use crate::ir::{FoldedBn, Graph};

pub struct FoldBn;

impl Pass for FoldBn {
    fn name(&self) -> &'static str {
        "fold_bn"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        for ix in order {
            let Op::BatchNorm { eps } = graph.node(ix).op else {
                continue;
            };
            let producer = graph.inputs_of(ix)[0];
            let p = graph.node(producer);
            let foldable = matches!(p.op, Op::Conv(_) | Op::Dense { .. })
                && p.fused.is_empty()
                && graph.users_of(producer) == [ix]
                && !graph.outputs.contains(&producer);
            if !foldable {
                continue;
            }
            let name = graph.node(ix).name.clone();
            graph.node_mut(producer).fused.bn = Some(FoldedBn { name, eps });
            graph.replace_uses(ix, producer);
            graph.remove(ix);
        }
        Ok(())
    }
}
