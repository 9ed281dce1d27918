//! The deterministic text form of a graph: a header with the hyperparameters, then one line per
//! node in topological order, `name: shape = op(inputs) attrs`, with the node's cost when the cost
//! pass has run, and the outputs last. Snapshot tests hold this text.

use super::Graph;
use std::fmt::Write;

pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let hyper: Vec<String> = graph.hyper.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "net {}({})", graph.name, hyper.join(", "));
    let order = graph.topo_order().unwrap_or_else(|| graph.g.node_indices().collect());
    let width = order.iter().map(|&ix| graph.node(ix).name.len()).max().unwrap_or(0);
    for ix in order {
        let node = graph.node(ix);
        let inputs: Vec<String> = graph
            .inputs_of(ix)
            .iter()
            .map(|&i| graph.node(i).name.clone())
            .collect();
        let mut line = format!(
            "  {:width$} : {:18} = {}({})",
            node.name,
            node.shape.to_string(),
            node.op.kind(),
            inputs.join(", ")
        );
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            line.push(' ');
            line.push_str(&attrs);
        }
        if let Some(c) = node.cost {
            let mut parts = Vec::new();
            if c.params > 0 {
                parts.push(format!("params={}", c.params));
            }
            if c.macs > 0 {
                parts.push(format!("macs={}", c.macs));
            }
            if !parts.is_empty() {
                let _ = write!(line, "  # {}", parts.join(" "));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let outputs: Vec<String> = graph.outputs.iter().map(|&o| graph.node(o).name.clone()).collect();
    let _ = writeln!(out, "  return {}", outputs.join(", "));
    out
}
