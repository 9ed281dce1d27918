//! Dead-node removal: dropout is the identity at inference, so its consumers read its input
//! directly; nodes whose output reaches no graph output are removed.

use super::Pass;
use crate::ir::op::Op;
use crate::ir::Graph;
use std::collections::HashSet;

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        for &ix in &order {
            if let Op::Dropout { .. } = graph.node(ix).op {
                let input = graph.inputs_of(ix)[0];
                graph.replace_uses(ix, input);
                graph.remove(ix);
            }
        }
        // Everything an output depends on stays, and so do the network's inputs.
        let mut live = HashSet::new();
        let mut stack = graph.outputs.clone();
        while let Some(ix) = stack.pop() {
            if live.insert(ix) {
                stack.extend(graph.inputs_of(ix));
            }
        }
        let dead: Vec<_> = graph
            .g
            .node_indices()
            .filter(|ix| !live.contains(ix) && !graph.inputs.contains(ix))
            .collect();
        for ix in dead {
            graph.remove(ix);
        }
        Ok(())
    }
}
