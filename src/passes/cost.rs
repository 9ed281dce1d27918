//! The cost of every node: trainable parameters (weights, biases, batchnorm scale and shift, as
//! torchvision counts them; running statistics excluded), multiply-accumulates of conv and dense
//! layers (one multiply-add counted once, as the papers count them), and the bytes of the node's
//! f32 output. [`totals`] sums them.

use super::Pass;
use crate::ir::op::Op;
use crate::ir::{Cost as NodeCost, Graph, Node};

pub struct Cost;

impl Pass for Cost {
    fn name(&self) -> &'static str {
        "cost"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let ids: Vec<_> = graph.g.node_indices().collect();
        for ix in ids {
            let input = graph.inputs_of(ix).first().map(|&i| graph.node(i).shape.clone());
            let node = graph.node_mut(ix);
            node.cost = Some(node_cost(node, input.as_ref().map(|s| s.0.as_slice()).unwrap_or(&[])));
        }
        Ok(())
    }
}

/// The cost of one node whose first input has dimensions `input`.
pub fn node_cost(node: &Node, input: &[usize]) -> NodeCost {
    let out = &node.shape;
    let (params, macs) = match &node.op {
        Op::Conv(c) => {
            let per_output = (input[1] / c.groups) as u64 * c.kernel.0 as u64 * c.kernel.1 as u64;
            let weights = c.out_channels as u64 * per_output;
            let bias = if c.bias { c.out_channels as u64 } else { 0 };
            (weights + bias, out.elements() * per_output)
        }
        Op::Dense { out_features, bias } => {
            let weights = *out_features as u64 * input[1] as u64;
            let b = if *bias { *out_features as u64 } else { 0 };
            (weights + b, input[0] as u64 * weights)
        }
        Op::BatchNorm { .. } => (2 * input[1] as u64, 0),
        _ => (0, 0),
    };
    NodeCost {
        params,
        macs,
        activation_bytes: out.bytes(),
    }
}

/// Sums of all nodes' costs (nodes the cost pass has not seen count as zero). A node's MACs can
/// approach 2^56, so the sums saturate at `u64::MAX` rather than overflow.
pub fn totals(graph: &Graph) -> NodeCost {
    graph
        .g
        .node_weights()
        .filter_map(|n| n.cost)
        .fold(NodeCost::default(), |a, c| NodeCost {
            params: a.params.saturating_add(c.params),
            macs: a.macs.saturating_add(c.macs),
            activation_bytes: a.activation_bytes.saturating_add(c.activation_bytes),
        })
}
