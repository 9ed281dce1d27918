//! Graphviz DOT output: one box per node with its name, op and shape; edges labelled with the
//! input port when a node has several inputs.

use super::Graph;
use std::fmt::Write;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"monospace\", fontsize=10];");
    let order = graph.topo_order().unwrap_or_else(|| graph.g.node_indices().collect());
    for &ix in &order {
        let n = graph.node(ix);
        let attrs = n.op.attrs();
        let label = if attrs.is_empty() {
            format!("{}\\n{} {}", escape(&n.name), n.op.kind(), n.shape)
        } else {
            format!("{}\\n{} {}\\n{}", escape(&n.name), n.op.kind(), escape(&attrs), n.shape)
        };
        let _ = writeln!(out, "  n{} [label=\"{}\"];", ix.index(), label);
    }
    for &ix in &order {
        let inputs = graph.inputs_of(ix);
        for (port, src) in inputs.iter().enumerate() {
            if inputs.len() > 1 {
                let _ = writeln!(out, "  n{} -> n{} [label=\"{}\"];", src.index(), ix.index(), port);
            } else {
                let _ = writeln!(out, "  n{} -> n{};", src.index(), ix.index());
            }
        }
    }
    let _ = writeln!(out, "}}");
    out
}
