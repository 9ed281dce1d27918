//! The deterministic text form of a graph: a header with the hyperparameters, then one line per
//! node in topological order, `name: shape = op(inputs) attrs`, then what the fusion passes
//! folded into it (`+bn=NAME +residual +relu6 +post_bn=NAME +maxpool(kernel=3x3 ...)`), where the
//! placement put it (`-> gemm b3[0..96]`: the kernel or `view`, the buffer, the channel slots),
//! the node's cost when the cost pass has run, and the outputs last. After memory planning, the
//! buffers are listed with their arena offsets. Snapshot tests hold this text.

use super::{Fused, Graph, Place, Runs};
use std::fmt::Write;

/// The fused work of a node, ` +bn=conv1_bn +relu`.
fn fused(f: &Fused) -> String {
    let mut s = String::new();
    if let Some(bn) = &f.bn {
        let _ = write!(s, " +bn={}", bn.name);
    }
    if f.residual {
        s.push_str(" +residual");
    }
    if let Some(a) = f.act {
        let _ = write!(s, " +{a}");
    }
    if let Some(bn) = &f.post_bn {
        let _ = write!(s, " +post_bn={}", bn.name);
    }
    if let Some(p) = &f.pool {
        let _ = write!(s, " +maxpool({})", super::op::Op::Pool(p.clone()).attrs());
    }
    s
}

/// Channel slots as ascending runs: `0..58,116..145,60`; long lists are cut after 6 runs.
pub fn slots(slots: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &s in slots {
        match runs.last_mut() {
            Some((_, end)) if *end == s => *end += 1,
            _ => runs.push((s, s + 1)),
        }
    }
    let text = |&(a, b): &(usize, usize)| if b == a + 1 { a.to_string() } else { format!("{a}..{b}") };
    let mut parts: Vec<String> = runs.iter().take(6).map(text).collect();
    if runs.len() > 6 {
        parts.push(format!("... {} runs", runs.len()));
    }
    parts.join(",")
}

fn place(p: &Place) -> String {
    let what = match p.runs {
        Runs::Input => "input".to_string(),
        Runs::View => "view".to_string(),
        Runs::Kernel(k) => k.to_string(),
    };
    let mut s = format!(" -> {what} b{}[{}]", p.buffer, slots(&p.slots));
    for (port, b) in &p.staged {
        let _ = write!(s, " staged{port}=b{b}");
    }
    if let Some(b) = p.scratch {
        let _ = write!(s, " scratch=b{b}");
    }
    s
}

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
        line.push_str(&fused(&node.fused));
        if let Some(p) = &node.place {
            line.push_str(&place(p));
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
    if let Some(arena) = graph.arena {
        let _ = writeln!(out, "arena {} floats", arena);
        for (i, b) in graph.buffers.iter().enumerate() {
            let at = b.offset.map_or("-".to_string(), |o| o.to_string());
            let _ = writeln!(out, "  b{i}: {} pixels x {} at {at} ({})", b.pixels, b.stride, b.owner);
        }
    }
    out
}
