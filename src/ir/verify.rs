//! The graph invariants, checked after elaboration and after every pass:
//! acyclic; every node's input ports are exactly `0..n` with `n` allowed by its op; every node's
//! shape is what its op's shape rule gives for its inputs (then its fused pooling's); a fused
//! residual has the node's shape; names are unique and non-empty; inputs are `Input` nodes and
//! outputs exist. A violation is a compiler bug, reported with the node's name.

use super::op::{Arity, Op};
use super::{shape, Graph};
use petgraph::Direction;
use std::collections::HashSet;

/// Checks every invariant; the error names the first violation.
pub fn verify(graph: &Graph) -> Result<(), String> {
    let order = graph.topo_order().ok_or("the graph has a cycle")?;
    let mut names = HashSet::new();
    for &ix in &order {
        let node = graph.node(ix);
        if node.name.is_empty() {
            return Err(format!("node {} has no name", ix.index()));
        }
        if !names.insert(node.name.as_str()) {
            return Err(format!("two nodes are named `{}`", node.name));
        }
        let mut ports: Vec<usize> = graph
            .g
            .edges_directed(ix, Direction::Incoming)
            .map(|e| e.weight().port)
            .collect();
        ports.sort_unstable();
        if ports.iter().enumerate().any(|(i, &p)| i != p) {
            return Err(format!(
                "`{}` has input ports {ports:?}, expected 0..{}",
                node.name,
                ports.len()
            ));
        }
        let residual = usize::from(node.fused.residual);
        let op_ports = ports.len().saturating_sub(residual);
        let ok = ports.len() >= residual
            && match node.op.arity() {
                Arity::Exactly(n) => op_ports == n,
                Arity::AtLeast(n) => op_ports >= n,
            };
        if !ok {
            return Err(format!(
                "`{}` ({}) has {} inputs",
                node.name,
                node.op.kind(),
                ports.len()
            ));
        }
        if node.op == Op::Input {
            if !graph.inputs.contains(&ix) {
                return Err(format!("input node `{}` is not listed as a graph input", node.name));
            }
            continue;
        }
        if node.fused.residual {
            let r = *graph.inputs_of(ix).last().expect("arity checked");
            if graph.node(r).shape != node.shape {
                return Err(format!(
                    "`{}` adds a residual of shape {} to its output of shape {}",
                    node.name,
                    graph.node(r).shape,
                    node.shape
                ));
            }
        }
        if let Some(p) = &node.place {
            let channels = node.shape.0[1];
            let buffer = graph
                .buffers
                .get(p.buffer)
                .ok_or(format!("`{}` is placed in no buffer", node.name))?;
            if p.slots.len() != channels || p.slots.iter().any(|&s| s >= buffer.stride) {
                return Err(format!(
                    "`{}` has {channels} channels but {} slots in a buffer of {} per pixel",
                    node.name,
                    p.slots.len(),
                    buffer.stride
                ));
            }
        }
        let inputs: Vec<_> = graph
            .op_inputs_of(ix)
            .into_iter()
            .map(|i| &graph.node(i).shape)
            .collect();
        let mut expected = shape::infer(&node.op, &inputs).map_err(|e| format!("`{}`: {e}", node.name))?;
        if let Some(p) = &node.fused.pool {
            let pool = Op::Pool(p.clone());
            expected = shape::infer(&pool, &[&expected]).map_err(|e| format!("`{}`: {e}", node.name))?;
        }
        if expected != node.shape {
            return Err(format!(
                "`{}` has shape {}, its op gives {}",
                node.name, node.shape, expected
            ));
        }
    }
    for &ix in &graph.inputs {
        if !graph.g.contains_node(ix) || graph.node(ix).op != Op::Input {
            return Err("a graph input is not an input node".into());
        }
    }
    if graph.outputs.is_empty() {
        return Err("the graph has no output".into());
    }
    for &ix in &graph.outputs {
        if !graph.g.contains_node(ix) {
            return Err("a graph output was removed".into());
        }
    }
    Ok(())
}
