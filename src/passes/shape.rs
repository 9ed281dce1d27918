//! Shape inference over the whole graph: recomputes every node's shape from its inputs with the
//! op's shape rule, in topological order. Elaboration already did this node by node; running it
//! as a pass keeps shapes right after any rewrite.

use super::Pass;
use crate::ir::{shape, Graph};

pub struct InferShapes;

impl Pass for InferShapes {
    fn name(&self) -> &'static str {
        "shape"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        for ix in order {
            if graph.inputs.contains(&ix) {
                continue;
            }
            let inputs: Vec<shape::Shape> = graph
                .op_inputs_of(ix)
                .iter()
                .map(|&i| graph.node(i).shape.clone())
                .collect();
            let refs: Vec<&shape::Shape> = inputs.iter().collect();
            let node = graph.node_mut(ix);
            node.shape = shape::infer(&node.op, &refs).map_err(|e| format!("`{}`: {e}", node.name))?;
        }
        Ok(())
    }
}
