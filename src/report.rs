//! Reports on a compiled graph: the per-layer cost table of `netc stats` and its JSON form, with
//! what the optimized graph runs for each layer and the planned activation memory, with and
//! without block fusion (the `fuse_blocks` pass), and the largest tensor the plan materializes.

use crate::ir::op::Op;
use crate::ir::{Graph, NodeId, Runs};
use crate::passes::{self, cost};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// `1234567` as `1,234,567`.
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3504872` as `3.50M`.
pub fn short(v: u64) -> String {
    match v {
        0..=999 => v.to_string(),
        1_000..=999_999 => format!("{:.2}K", v as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", v as f64 / 1e6),
        _ => format!("{:.2}G", v as f64 / 1e9),
    }
}

/// Bytes in binary units.
pub fn bytes(v: u64) -> String {
    if v >= 1 << 20 {
        format!("{:.2} MiB", v as f64 / (1u64 << 20) as f64)
    } else if v >= 1 << 10 {
        format!("{:.1} KiB", v as f64 / 1024.0)
    } else {
        format!("{v} B")
    }
}

#[derive(Serialize)]
pub struct Layer {
    pub name: String,
    pub op: String,
    pub shape: Vec<usize>,
    pub inputs: Vec<String>,
    pub params: u64,
    pub macs: u64,
    pub activation_bytes: u64,
    /// What runs for the layer after optimization: a kernel family (`gemm`, `depthwise`, ...),
    /// `view` (no kernel: it reads or writes its input's memory), `input`, `fused` (folded into
    /// another layer's kernel) or `removed` (dropout, dead code).
    pub runs: String,
    /// Whether a kernel runs for the layer.
    pub kernel: bool,
}

#[derive(Serialize)]
pub struct Stats {
    pub net: String,
    pub hyperparameters: serde_json::Map<String, serde_json::Value>,
    pub params: u64,
    pub macs: u64,
    pub activation_bytes: u64,
    /// The planned arena: the activation memory the compiled network needs.
    pub arena_bytes: u64,
    /// The planned arena with block fusion (`fuse_blocks`) on and off.
    pub arena_bytes_fused: u64,
    pub arena_bytes_unfused: u64,
    /// The largest tensor the compiled network materializes (a buffer nodes' outputs live in;
    /// a fused block's row rings are not tensors), with block fusion on and off: the quantity
    /// of the MobileNetV2 paper's Table 3.
    pub largest_tensor_bytes_fused: u64,
    pub largest_tensor_bytes_unfused: u64,
    pub layers: Vec<Layer>,
}

/// What the optimized graph runs for the node named `name` of kind `op`.
fn runs(optimized: &Graph, by_name: &HashMap<&str, NodeId>, name: &str, op: &str) -> (String, bool) {
    match by_name.get(name).and_then(|&ix| optimized.node(ix).place.as_ref()) {
        Some(p) => match p.runs {
            Runs::Input => ("input".into(), false),
            Runs::View => ("view".into(), false),
            Runs::Kernel(k) => (k.to_string(), true),
        },
        None if matches!(op, "batchnorm" | "add" | "relu" | "relu6" | "leaky_relu") => ("fused".into(), false),
        None => ("removed".into(), false),
    }
}

/// Collects the per-layer costs of `graph` (the cost pass must have run) and what the planned
/// graph `optimized` runs for each layer.
pub fn stats(graph: &Graph, optimized: &Graph) -> Stats {
    let mut by_name: HashMap<&str, NodeId> = HashMap::new();
    for ix in optimized.g.node_indices() {
        let node = optimized.node(ix);
        by_name.insert(node.name.as_str(), ix);
        if let Op::Block(b) = &node.op {
            for s in b.stages() {
                by_name.insert(s.name.as_str(), ix);
            }
        }
    }
    let [fused, unfused] = [true, false].map(|on| {
        if optimized.arena.is_some() && optimized.options.fuse_blocks == on {
            return memory(optimized);
        }
        let mut g = graph.clone();
        g.options.fuse_blocks = on;
        match passes::run_range(&mut g, passes::ANALYSES, passes::PIPELINE.len(), None) {
            Ok(()) => memory(&g),
            Err(_) => (0, 0),
        }
    });
    let order = graph.topo_order().unwrap_or_else(|| graph.g.node_indices().collect());
    let layers = order
        .iter()
        .map(|&ix| {
            let n = graph.node(ix);
            let c = n.cost.unwrap_or_default();
            let (runs, kernel) = runs(optimized, &by_name, &n.name, n.op.kind());
            Layer {
                name: n.name.clone(),
                op: n.op.kind().to_string(),
                shape: n.shape.0.clone(),
                inputs: graph
                    .inputs_of(ix)
                    .iter()
                    .map(|&i| graph.node(i).name.clone())
                    .collect(),
                params: c.params,
                macs: c.macs,
                activation_bytes: c.activation_bytes,
                runs,
                kernel,
            }
        })
        .collect();
    let t = cost::totals(graph);
    let hyperparameters = graph
        .hyper
        .iter()
        .map(|(k, v)| {
            let j = match v {
                crate::ir::HyperValue::Int(i) => serde_json::json!(i),
                crate::ir::HyperValue::Float(f) => serde_json::json!(f),
                crate::ir::HyperValue::Bool(b) => serde_json::json!(b),
            };
            (k.clone(), j)
        })
        .collect();
    Stats {
        net: graph.name.clone(),
        hyperparameters,
        params: t.params,
        macs: t.macs,
        activation_bytes: t.activation_bytes,
        arena_bytes: optimized.arena.unwrap_or(0) as u64 * 4,
        arena_bytes_fused: fused.0,
        arena_bytes_unfused: unfused.0,
        largest_tensor_bytes_fused: fused.1,
        largest_tensor_bytes_unfused: unfused.1,
        layers,
    }
}

/// The arena and the largest buffer a node's output lives in, in bytes, of a planned graph.
fn memory(planned: &Graph) -> (u64, u64) {
    let largest = planned
        .g
        .node_weights()
        .filter_map(|n| n.place.as_ref())
        .map(|p| planned.buffers[p.buffer].len() as u64 * 4)
        .max()
        .unwrap_or(0);
    (planned.arena.unwrap_or(0) as u64 * 4, largest)
}

/// The table `netc stats` prints.
pub fn table(graph: &Graph, optimized: &Graph) -> String {
    let s = stats(graph, optimized);
    let name_w = s.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
    let op_w = s.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).max(2);
    let runs_w = s.layers.iter().map(|l| l.runs.len()).max().unwrap_or(4).max(4);
    let shape_w = s
        .layers
        .iter()
        .map(|l| format!("{:?}", l.shape).len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let hyper: Vec<String> = graph.hyper.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "{}({})", s.net, hyper.join(", "));
    let header = format!(
        "{:name_w$}  {:op_w$}  {:shape_w$}  {:>12}  {:>14}  {:>12}  {:runs_w$}",
        "layer", "op", "output", "params", "MACs", "activations", "runs"
    );
    let rule = "-".repeat(header.len());
    let header = header.trim_end().to_string();
    let _ = writeln!(out, "{header}\n{rule}");
    for l in &s.layers {
        let line = format!(
            "{:name_w$}  {:op_w$}  {:shape_w$}  {:>12}  {:>14}  {:>12}  {}",
            l.name,
            l.op,
            format!("{:?}", l.shape),
            thousands(l.params),
            thousands(l.macs),
            bytes(l.activation_bytes),
            l.runs
        );
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "params:      {:>15}  ({})", thousands(s.params), short(s.params));
    let _ = writeln!(out, "MACs:        {:>15}  ({})", thousands(s.macs), short(s.macs));
    let _ = writeln!(
        out,
        "activations: {:>15}  ({}, the sum of every node's output)",
        thousands(s.activation_bytes),
        bytes(s.activation_bytes)
    );
    let _ = writeln!(
        out,
        "arena:       {:>15}  ({}, planned activation memory)",
        thousands(s.arena_bytes),
        bytes(s.arena_bytes)
    );
    for (what, arena, largest) in [
        ("fused blocks", s.arena_bytes_fused, s.largest_tensor_bytes_fused),
        ("unfused", s.arena_bytes_unfused, s.largest_tensor_bytes_unfused),
    ] {
        let _ = writeln!(
            out,
            "  {what:12} {:>15}  ({}; largest tensor {})",
            thousands(arena),
            bytes(arena),
            bytes(largest)
        );
    }
    out
}
