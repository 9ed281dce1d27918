//! The ONNX graph as a list of netc layers: every node in topological order mapped to a layer
//! call (or folded into a recognized pattern), with the shapes ONNX's rules give, and the
//! initializers under the netc weight names of the layer that owns them.

use super::errors;
use super::names::Names;
use super::tensors::{self, attr_float, attr_int, attr_ints, attr_str, Const};
use crate::diag::Diagnostic;
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::runtime::{Tensor, Weights};
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Largest size netc accepts for channels, extents, kernels, strides and padding.
pub const MAX_SIZE: i64 = 1 << 24;
/// Most nodes a graph may have (netc's limit on a network).
pub const MAX_NODES: usize = 200_000;

/// How a layer is written.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `x |> TEXT as name`: a layer of one tensor.
    Pipe(String),
    /// `TEXT(a, b, ...) as name`: a layer of several tensors (`concat`, `add`).
    Multi(&'static str),
    /// `let (a, b) = split(x, PARTS) as name`.
    Split(String),
}

/// One netc layer call.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The node name, given with `as`.
    pub name: String,
    pub call: Call,
    /// Values read (netc value ids).
    pub inputs: Vec<usize>,
    /// Values written.
    pub outputs: Vec<usize>,
    /// What the importer recognized, as a comment.
    pub comment: Option<String>,
}

/// A netc value: its shape, and a name hint for the variable that holds it.
#[derive(Clone, Debug)]
pub struct Value {
    pub shape: Vec<usize>,
    pub hint: String,
}

/// The converted graph.
#[derive(Debug)]
pub struct Converted {
    pub input_label: String,
    pub values: Vec<Value>,
    pub layers: Vec<Layer>,
    pub outputs: Vec<usize>,
    pub weights: Weights,
    pub notes: Vec<String>,
}

struct Cx<'a> {
    nodes: &'a [NodeProto],
    opset: i64,
    consts: HashMap<String, Const>,
    /// ONNX value name -> netc value id.
    tensors: HashMap<String, usize>,
    values: Vec<Value>,
    layers: Vec<Layer>,
    weights: Weights,
    names: Names,
    /// ONNX value name -> the nodes that read it.
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
    done: Vec<bool>,
    notes: Vec<String>,
}

/// What a node is called in diagnostics: its name, or its first output.
pub fn display_name(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match node.output.first() {
            Some(o) if !o.is_empty() => format!("<unnamed, output `{o}`>"),
            _ => "<unnamed>".to_string(),
        },
    }
}

fn op(node: &NodeProto) -> &str {
    node.op_type.as_deref().unwrap_or("")
}

fn fmt_f32(v: f32) -> String {
    format!("{v:?}")
}

/// `3` or `[3, 1]`.
fn fmt_pair(h: usize, w: usize) -> String {
    if h == w {
        h.to_string()
    } else {
        format!("[{h}, {w}]")
    }
}

/// Padding as netc writes it: `1`, `[1, 2]` (height, width) or `[top, bottom, left, right]`.
fn fmt_pad(t: usize, b: usize, l: usize, r: usize) -> String {
    if t == b && l == r {
        fmt_pair(t, l)
    } else {
        format!("[{t}, {b}, {l}, {r}]")
    }
}

/// Output extent of a window: netc's (and PyTorch's) rule, in ceil mode the last window must
/// start inside the input or its leading padding.
fn window_out(input: usize, k: usize, s: usize, d: usize, before: usize, after: usize, ceil: bool) -> Option<usize> {
    let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = input.checked_add(before)?.checked_add(after)?;
    if padded < span || s == 0 {
        return None;
    }
    let num = padded - span;
    let mut o = if ceil { num.div_ceil(s) } else { num / s } + 1;
    if ceil && o > 1 && (o - 1) * s >= input + before {
        o -= 1;
    }
    Some(o)
}

/// Topological order of the nodes, keeping the file's order where it already is one.
fn topo_order(nodes: &[NodeProto]) -> Result<Vec<usize>, Diagnostic> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() {
                return Err(errors::wrong_input(
                    &display_name(n),
                    op(n),
                    &format!("its output `{o}` is also the output of another node"),
                ));
            }
        }
    }
    let mut pending = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let deps: HashSet<usize> = n
            .input
            .iter()
            .filter_map(|v| producer.get(v.as_str()).copied())
            .collect();
        pending[i] = deps.len();
        for d in deps {
            users[d].push(i);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.push(std::cmp::Reverse(u));
            }
        }
    }
    if order.len() != nodes.len() {
        return Err(errors::cycle());
    }
    Ok(order)
}

/// The opset of the default domain.
pub fn default_opset(model: &crate::onnx::proto::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(13)
}

/// Converts the graph. `input` is the graph input with its shape `[N, C, H, W]`.
pub fn convert(graph: &GraphProto, opset: i64, input: (&str, &[usize])) -> Result<Converted, Diagnostic> {
    if graph.node.len() > MAX_NODES {
        return Err(errors::too_large(
            &format!("a graph of {} nodes", graph.node.len()),
            MAX_NODES as u64,
        ));
    }
    let mut consts = HashMap::new();
    for (k, t) in graph.initializer.iter().enumerate() {
        let c = tensors::decode(t, &format!("initializer{k}"))?;
        consts.insert(c.name.clone(), c);
    }
    let mut names = Names::default();
    let input_label = Names::default().var(input.0);
    let input_label = names.label(&input_label, "input");
    let mut cx = Cx {
        nodes: &graph.node,
        opset,
        consts,
        tensors: HashMap::from([(input.0.to_string(), 0)]),
        values: vec![Value {
            shape: input.1.to_vec(),
            hint: input_label.clone(),
        }],
        layers: Vec::new(),
        weights: Weights::default(),
        names,
        consumers: HashMap::new(),
        graph_outputs: graph.output.iter().filter_map(|o| o.name.clone()).collect(),
        done: vec![false; graph.node.len()],
        notes: Vec::new(),
    };
    for (i, n) in graph.node.iter().enumerate() {
        for v in &n.input {
            cx.consumers.entry(v.clone()).or_default().push(i);
        }
    }
    // Constant nodes have no inputs: take their values first, so that a pattern matched ahead
    // finds a constant that comes later in the list (PyTorch puts the target shape of a
    // shuffle's second Reshape after its Transpose).
    for (i, n) in graph.node.iter().enumerate() {
        if op(n) == "Constant" {
            cx.done[i] = true;
            cx.node(i)?;
        }
    }
    for i in topo_order(&graph.node)? {
        if !cx.done[i] {
            cx.done[i] = true;
            cx.node(i)?;
        }
    }
    let mut outputs = Vec::new();
    for o in &graph.output {
        let name = o.name.clone().unwrap_or_default();
        match cx.tensors.get(&name) {
            Some(&v) => outputs.push(v),
            None if cx.consts.contains_key(&name) => {
                return Err(errors::bad_output(
                    &name,
                    "it is a constant; a netc network returns computed tensors",
                ))
            }
            None => return Err(errors::bad_output(&name, "no node computes it")),
        }
    }
    if outputs.is_empty() {
        return Err(errors::bad_output("-", "the graph has no outputs"));
    }
    Ok(Converted {
        input_label,
        values: cx.values,
        layers: cx.layers,
        outputs,
        weights: cx.weights,
        notes: cx.notes,
    })
}

/// A pair attribute (`[h, w]`) with a default, each value in `min..=MAX_SIZE`.
fn pair_attr(node: &NodeProto, name: &str, default: i64, min: i64) -> Result<(usize, usize), Diagnostic> {
    let v = match attr_ints(node, name) {
        None => return Ok((default as usize, default as usize)),
        Some(v) => v,
    };
    match v {
        [h, w] if (min..=MAX_SIZE).contains(h) && (min..=MAX_SIZE).contains(w) => Ok((*h as usize, *w as usize)),
        [_, _] => Err(errors::bad_attribute(
            &display_name(node),
            op(node),
            name,
            &format!("{v:?}: each value must be in {min}..={MAX_SIZE}"),
        )),
        _ => Err(errors::unsupported_attribute(
            &display_name(node),
            op(node),
            name,
            &format!("{v:?}"),
            "two spatial dimensions (NCHW tensors)",
        )),
    }
}

/// Explicit padding `[top, bottom, left, right]` from `pads` (`[top, left, bottom, right]`) or
/// `auto_pad`; the second value says whether it was `SAME_UPPER` (netc's `same`).
fn pads_attr(
    node: &NodeProto,
    input: (usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
) -> Result<([usize; 4], bool), Diagnostic> {
    let auto = attr_str(node, "auto_pad").unwrap_or_default();
    let same = |i: usize, k: usize, s: usize, d: usize, upper: bool| {
        let out = i.div_ceil(s);
        let total = ((out.max(1) - 1) * s + d * (k - 1) + 1).saturating_sub(i);
        let small = total / 2;
        if upper {
            (small, total - small)
        } else {
            (total - small, small)
        }
    };
    match auto.as_str() {
        "" | "NOTSET" => {}
        "VALID" => return Ok(([0; 4], false)),
        "SAME_UPPER" | "SAME_LOWER" => {
            let upper = auto == "SAME_UPPER";
            let (t, b) = same(input.0, kernel.0, stride.0, dilation.0, upper);
            let (l, r) = same(input.1, kernel.1, stride.1, dilation.1, upper);
            return Ok(([t, b, l, r], upper));
        }
        other => {
            return Err(errors::unsupported_attribute(
                &display_name(node),
                op(node),
                "auto_pad",
                &format!("\"{other}\""),
                "NOTSET, VALID, SAME_UPPER and SAME_LOWER",
            ))
        }
    }
    match attr_ints(node, "pads") {
        None => Ok(([0; 4], false)),
        Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|v| (0..=MAX_SIZE).contains(v)) => {
            Ok(([t as usize, b as usize, l as usize, r as usize], false))
        }
        Some(v) => Err(errors::unsupported_attribute(
            &display_name(node),
            op(node),
            "pads",
            &format!("{v:?}"),
            "four non-negative values [top, left, bottom, right]",
        )),
    }
}

impl Cx<'_> {
    fn node_ref(&self, i: usize) -> (String, String) {
        let n = &self.nodes[i];
        (display_name(n), op(n).to_string())
    }

    /// The node's netc label, unique.
    fn label(&mut self, i: usize) -> String {
        let n = &self.nodes[i];
        let base = match n.name.as_deref() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => n.output.first().cloned().unwrap_or_default(),
        };
        let fallback = op(n).to_ascii_lowercase();
        self.names.label(&base, &fallback)
    }

    /// Input `k` of node `i`, which must be a computed tensor.
    fn tensor_in(&self, i: usize, k: usize) -> Result<usize, Diagnostic> {
        let n = &self.nodes[i];
        let (name, op) = self.node_ref(i);
        let Some(v) = n.input.get(k).filter(|v| !v.is_empty()) else {
            return Err(errors::wrong_input(&name, &op, &format!("input {k} is missing")));
        };
        if let Some(&id) = self.tensors.get(v) {
            return Ok(id);
        }
        if self.consts.contains_key(v) {
            return Err(errors::wrong_input(
                &name,
                &op,
                &format!("input `{v}` is a constant; netc needs a tensor the network computes there"),
            ));
        }
        Err(errors::missing_value(&name, &op, v))
    }

    /// Optional input `k` of node `i`, which must be a constant.
    fn const_in(&self, i: usize, k: usize) -> Result<Option<&Const>, Diagnostic> {
        let n = &self.nodes[i];
        let Some(v) = n.input.get(k).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if let Some(c) = self.consts.get(v) {
            return Ok(Some(c));
        }
        let (name, op) = self.node_ref(i);
        if self.tensors.contains_key(v) {
            return Err(errors::wrong_input(
                &name,
                &op,
                &format!("input `{v}` must be a constant (an initializer), but the network computes it"),
            ));
        }
        Err(errors::missing_value(&name, &op, v))
    }

    fn req_const(&self, i: usize, k: usize, what: &str) -> Result<&Const, Diagnostic> {
        self.const_in(i, k)?.ok_or_else(|| {
            let (name, op) = self.node_ref(i);
            errors::wrong_input(&name, &op, &format!("the {what} (input {k}) is missing"))
        })
    }

    /// A float vector of exactly `len` elements.
    fn vector(&self, i: usize, k: usize, what: &str, len: usize) -> Result<Vec<f32>, Diagnostic> {
        let c = self.req_const(i, k, what)?;
        let v = c.f32s(what)?;
        if v.len() != len || c.dims.len() > 1 && c.dims.iter().filter(|&&d| d != 1).count() > 1 {
            let (name, op) = self.node_ref(i);
            return Err(errors::shape_mismatch(
                &name,
                &op,
                &format!("the {what} `{}` has shape {:?}, expected [{len}]", c.name, c.dims),
            ));
        }
        Ok(v.to_vec())
    }

    fn shape(&self, v: usize) -> &[usize] {
        &self.values[v].shape
    }

    /// The input's shape, which must have rank 4.
    fn nchw(&self, i: usize, v: usize) -> Result<[usize; 4], Diagnostic> {
        match *self.shape(v) {
            [n, c, h, w] => Ok([n, c, h, w]),
            ref s => {
                let (name, op) = self.node_ref(i);
                Err(errors::shape_mismatch(
                    &name,
                    &op,
                    &format!("the input has shape {s:?}; this needs [N, C, H, W]"),
                ))
            }
        }
    }

    /// Appends a layer with one output; maps the node's output `out_k` to it.
    fn push(
        &mut self,
        i: usize,
        label: String,
        call: Call,
        inputs: Vec<usize>,
        shape: Vec<usize>,
        comment: Option<String>,
    ) -> usize {
        let id = self.values.len();
        self.values.push(Value {
            shape,
            hint: label.clone(),
        });
        self.layers.push(Layer {
            name: label,
            call,
            inputs,
            outputs: vec![id],
            comment,
        });
        if let Some(o) = self.nodes[i].output.first() {
            self.tensors.insert(o.clone(), id);
        }
        id
    }

    /// The only node reading value `v`, if exactly one does and `v` is no graph output.
    fn sole_consumer(&self, v: &str) -> Option<usize> {
        if self.graph_outputs.contains(v) {
            return None;
        }
        match self.consumers.get(v).map(Vec::as_slice) {
            Some(&[c]) if !self.done[c] => Some(c),
            _ => None,
        }
    }

    /// Errors if any output after the first is read (BatchNormalization's statistics, Dropout's
    /// mask, MaxPool's indices).
    fn only_first_output(&self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        for o in n.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if self.consumers.contains_key(o) || self.graph_outputs.contains(o) {
                let (name, op) = self.node_ref(i);
                return Err(errors::wrong_input(
                    &name,
                    &op,
                    &format!("its output `{o}` is used; netc computes only the first output at inference"),
                ));
            }
        }
        Ok(())
    }

    fn add_weight(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) {
        self.weights.insert(name, Tensor::new(shape, data));
    }

    fn node(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let domain = n.domain.clone().unwrap_or_default();
        if !(domain.is_empty() || domain == "ai.onnx") || tensors::has_subgraph(n) {
            return Err(errors::unsupported_op(&name, &op_type, &domain));
        }
        match op_type.as_str() {
            "Constant" => {
                let out = n.output.first().cloned().unwrap_or_default();
                match tensors::constant_value(n, &out)? {
                    Some(mut c) => {
                        c.name = out.clone();
                        self.consts.insert(out, c);
                        Ok(())
                    }
                    None => Err(errors::unsupported_attribute(
                        &name,
                        &op_type,
                        "value",
                        "(absent or sparse)",
                        "a dense `value` tensor, `value_float(s)` or `value_int(s)`",
                    )),
                }
            }
            "Identity" => {
                let v = n.input.first().cloned().unwrap_or_default();
                let out = n.output.first().cloned().unwrap_or_default();
                if let Some(&id) = self.tensors.get(&v) {
                    self.tensors.insert(out, id);
                } else if let Some(c) = self.consts.get(&v).cloned() {
                    self.consts.insert(out, c);
                } else {
                    return Err(errors::missing_value(&name, &op_type, &v));
                }
                Ok(())
            }
            "Conv" => self.conv(i, None),
            "BatchNormalization" => self.batchnorm(i),
            "Relu" => self.unary(i, "relu".into(), None),
            "LeakyRelu" => {
                let alpha = attr_float(n, "alpha").unwrap_or(0.01);
                let call = if alpha == 0.01 {
                    "leaky_relu".to_string()
                } else {
                    format!("leaky_relu(slope = {})", fmt_f32(alpha))
                };
                self.unary(i, call, None)
            }
            "Clip" => self.clip(i),
            "MaxPool" | "AveragePool" => self.pool(i, None),
            "Pad" => self.pad(i),
            "GlobalAveragePool" => self.unary_pool(i, "global_avgpool", None),
            "GlobalMaxPool" => self.unary_pool(i, "global_maxpool", None),
            "ReduceMean" => self.reduce_mean(i),
            "Concat" => self.concat(i),
            "Shape" => self.shape_of(i),
            "Gather" => self.gather(i),
            "Add" | "Sub" | "Mul" | "Div" if self.all_const(i) => self.arith(i),
            "Add" => self.add(i),
            "Split" => self.split(i),
            "Slice" => self.slice(i),
            "Reshape" => self.reshape(i),
            "Flatten" => self.flatten(i),
            "Gemm" => self.gemm(i),
            "MatMul" => self.matmul(i),
            "Softmax" => self.softmax(i),
            "Dropout" => self.dropout(i),
            _ => Err(errors::unsupported_op(&name, &op_type, &domain)),
        }
    }

    /// Whether every input of node `i` is a constant (shape arithmetic, folded at import).
    fn all_const(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        !n.input.is_empty() && n.input.iter().all(|v| self.consts.contains_key(v))
    }

    /// Records the constant an integer node computes as its first output.
    fn set_const(&mut self, i: usize, dims: Vec<usize>, data: Vec<i64>) {
        let out = self.nodes[i].output.first().cloned().unwrap_or_default();
        let c = Const {
            name: out.clone(),
            dims,
            data: tensors::Data::I64(data),
        };
        self.consts.insert(out, c);
    }

    /// `Shape`: the dimensions of a tensor, all known at import, as an int64 constant (`start`
    /// and `end` select a range of them, opset 15).
    fn shape_of(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let x = self.tensor_in(i, 0)?;
        let dims: Vec<i64> = self.shape(x).iter().map(|&d| d as i64).collect();
        let rank = dims.len() as i64;
        let bound = |v: i64| if v < 0 { (v + rank).max(0) } else { v.min(rank) };
        let start = bound(attr_int(n, "start").unwrap_or(0));
        let end = bound(attr_int(n, "end").unwrap_or(rank));
        let picked = dims[start as usize..end.max(start) as usize].to_vec();
        self.set_const(i, vec![picked.len()], picked);
        Ok(())
    }

    /// `Gather` on an int64 constant (a shape), folded: the only gather small CNN exports need.
    fn gather(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        if !self.all_const(i) {
            return Err(errors::wrong_input(
                &name,
                &op_type,
                "netc folds a Gather of a constant shape only; this one reads a computed tensor",
            ));
        }
        let data = self.req_const(i, 0, "data")?;
        let indices = self.req_const(i, 1, "indices")?;
        if data.dims.len() != 1 || attr_int(n, "axis").unwrap_or(0) != 0 {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axis",
                &format!(
                    "{} on a tensor of shape {:?}",
                    attr_int(n, "axis").unwrap_or(0),
                    data.dims
                ),
                "axis 0 of a one-dimensional int64 constant",
            ));
        }
        let values = data.i64s("data")?;
        let len = values.len() as i64;
        let mut picked = Vec::new();
        for &k in indices.i64s("indices")? {
            let at = if k < 0 { k + len } else { k };
            if !(0..len).contains(&at) {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("index {k} is outside a tensor of {len} elements"),
                ));
            }
            picked.push(values[at as usize]);
        }
        let dims = indices.dims.clone();
        self.set_const(i, dims, picked);
        Ok(())
    }

    /// `Add`, `Sub`, `Mul` or `Div` of two int64 constants (shape arithmetic such as PyTorch's
    /// `chunk`), folded with ONNX's broadcasting of one-element operands and truncating division.
    fn arith(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        if n.input.len() != 2 {
            return Err(errors::wrong_input(&name, &op_type, "it needs two inputs"));
        }
        let a = self.req_const(i, 0, "A")?;
        let b = self.req_const(i, 1, "B")?;
        let (x, y) = match (a.i64s("A"), b.i64s("B")) {
            (Ok(x), Ok(y)) => (x, y),
            _ => {
                return Err(errors::wrong_input(
                    &name,
                    &op_type,
                    "netc folds arithmetic on int64 constants (shapes) only; these are not both int64",
                ))
            }
        };
        let (dims, len) = match (x.len(), y.len()) {
            (p, q) if p == q && (a.dims == b.dims || p == 1) => (a.dims.clone(), p),
            (1, q) => (b.dims.clone(), q),
            (p, 1) => (a.dims.clone(), p),
            _ => {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("constants of shapes {:?} and {:?} do not broadcast", a.dims, b.dims),
                ))
            }
        };
        let at = |v: &[i64], k: usize| if v.len() == 1 { v[0] } else { v[k] };
        let mut out = Vec::with_capacity(len);
        for k in 0..len {
            let (p, q) = (at(x, k), at(y, k));
            let v = match op_type.as_str() {
                "Add" => p.checked_add(q),
                "Sub" => p.checked_sub(q),
                "Mul" => p.checked_mul(q),
                _ => p.checked_div(q),
            };
            out.push(v.ok_or_else(|| {
                errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("{p} {op_type} {q} overflows or divides by zero"),
                )
            })?);
        }
        self.set_const(i, dims, out);
        Ok(())
    }

    /// A layer of one tensor that keeps its shape.
    fn unary(&mut self, i: usize, call: String, comment: Option<String>) -> Result<(), Diagnostic> {
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        let label = self.label(i);
        self.push(i, label, Call::Pipe(call), vec![x], shape, comment);
        Ok(())
    }

    fn unary_pool(&mut self, i: usize, call: &str, comment: Option<String>) -> Result<(), Diagnostic> {
        let x = self.tensor_in(i, 0)?;
        let [n, c, _, _] = self.nchw(i, x)?;
        let label = self.label(i);
        self.push(i, label, Call::Pipe(call.into()), vec![x], vec![n, c, 1, 1], comment);
        Ok(())
    }

    /// A convolution; `extra_pad` is the padding of a `Pad` folded into it.
    fn conv(&mut self, i: usize, extra_pad: Option<([usize; 4], usize)>) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = match extra_pad {
            Some((_, v)) => v,
            None => self.tensor_in(i, 0)?,
        };
        let [_, cin, h, w] = self.nchw(i, x)?;
        let wc = self.req_const(i, 1, "weight")?;
        let wdata = wc.f32s("a Conv weight")?.to_vec();
        let &[cout, cin_g, kh, kw] = wc.dims.as_slice() else {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "kernel_shape",
                &format!("(a weight of shape {:?})", wc.dims),
                "2-D convolutions: a weight [Cout, Cin / group, kh, kw]",
            ));
        };
        if [cout, cin_g, kh, kw].iter().any(|&d| d == 0 || d as i64 > MAX_SIZE) {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("the weight has shape {:?}", wc.dims),
            ));
        }
        if let Some(k) = attr_ints(n, "kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(errors::bad_attribute(
                    &name,
                    &op_type,
                    "kernel_shape",
                    &format!("{k:?} does not match the weight's [{kh}, {kw}]"),
                ));
            }
        }
        let group = attr_int(n, "group").unwrap_or(1);
        if !(1..=MAX_SIZE).contains(&group) {
            return Err(errors::bad_attribute(
                &name,
                &op_type,
                "group",
                &format!("{group} is not a positive count"),
            ));
        }
        let g = group as usize;
        if cin_g * g != cin || !cout.is_multiple_of(g) {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!(
                    "{cin} input channels, group {g} and a weight of shape {:?} (Cin / group must be {cin_g}, Cout a multiple of the groups)",
                    wc.dims
                ),
            ));
        }
        let stride = pair_attr(n, "strides", 1, 1)?;
        let dilation = pair_attr(n, "dilations", 1, 1)?;
        let (mut pads, same) = pads_attr(n, (h, w), (kh, kw), stride, dilation)?;
        let same = same && extra_pad.is_none();
        if let Some((p, _)) = extra_pad {
            for k in 0..4 {
                pads[k] += p[k];
            }
        }
        let oh = window_out(h, kh, stride.0, dilation.0, pads[0], pads[1], false);
        let ow = window_out(w, kw, stride.1, dilation.1, pads[2], pads[3], false);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("a {kh}x{kw} kernel (dilation {dilation:?}) does not fit the padded {h}x{w} input"),
            ));
        };
        let bias = match self.const_in(i, 2)? {
            Some(_) => Some(self.vector(i, 2, "bias", cout)?),
            None => None,
        };
        let mut args = Vec::new();
        let depthwise = g == cin && g > 1 && cout.is_multiple_of(cin);
        if !depthwise {
            args.push(cout.to_string());
        }
        args.push(fmt_pair(kh, kw));
        if stride != (1, 1) {
            args.push(format!("stride = {}", fmt_pair(stride.0, stride.1)));
        }
        if same {
            args.push("pad = same".into());
        } else if pads != [0; 4] {
            args.push(format!("pad = {}", fmt_pad(pads[0], pads[1], pads[2], pads[3])));
        }
        if dilation != (1, 1) {
            args.push(format!("dilation = {}", fmt_pair(dilation.0, dilation.1)));
        }
        if depthwise && cout / cin > 1 {
            args.push(format!("multiplier = {}", cout / cin));
        } else if !depthwise && g > 1 {
            args.push(format!("groups = {g}"));
        }
        if bias.is_none() {
            args.push("bias = false".into());
        }
        let call = format!("{}({})", if depthwise { "dwconv" } else { "conv" }, args.join(", "));
        let comment = extra_pad.map(|_| "Pad + Conv: the padding folded into the convolution".to_string());
        let label = self.label(i);
        self.add_weight(format!("{label}.weight"), vec![cout, cin_g, kh, kw], wdata);
        if let Some(b) = bias {
            self.add_weight(format!("{label}.bias"), vec![cout], b);
        }
        let nb = self.shape(x)[0];
        self.push(i, label, Call::Pipe(call), vec![x], vec![nb, cout, oh, ow], comment);
        Ok(())
    }

    fn batchnorm(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        if let Some(t) = attr_int(n, "training_mode").filter(|&t| t != 0) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "training_mode",
                &t.to_string(),
                "inference (0)",
            ));
        }
        self.only_first_output(i)?;
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        if shape.len() != 4 && shape.len() != 2 {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("the input has shape {shape:?}"),
            ));
        }
        let c = shape[1];
        let eps = attr_float(n, "epsilon").unwrap_or(1e-5);
        if !(eps.is_finite() && eps > 0.0) {
            return Err(errors::bad_attribute(
                &name,
                &op_type,
                "epsilon",
                &format!("{eps} is not a positive number"),
            ));
        }
        let parts = [
            ("gamma", 1, "scale"),
            ("beta", 2, "bias"),
            ("mean", 3, "mean"),
            ("var", 4, "var"),
        ];
        let mut tensors = Vec::new();
        for (suffix, k, what) in parts {
            tensors.push((suffix, self.vector(i, k, what, c)?));
        }
        let label = self.label(i);
        for (suffix, data) in tensors {
            self.add_weight(format!("{label}.{suffix}"), vec![c], data);
        }
        let call = if eps == 1e-5 {
            "batchnorm".to_string()
        } else {
            format!("batchnorm(eps = {})", fmt_f32(eps))
        };
        self.push(i, label, Call::Pipe(call), vec![x], shape, None);
        Ok(())
    }

    fn clip(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let (lo, hi) = if self.opset >= 11 {
            let lo = match self.const_in(i, 1)? {
                Some(c) => Some(c.scalar_f32("Clip's min")?),
                None => None,
            };
            let hi = match self.const_in(i, 2)? {
                Some(c) => Some(c.scalar_f32("Clip's max")?),
                None => None,
            };
            (lo, hi)
        } else {
            (attr_float(n, "min"), attr_float(n, "max"))
        };
        let show = |v: Option<f32>| v.map_or("(none)".to_string(), fmt_f32);
        if lo != Some(0.0) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "min",
                &show(lo),
                "Clip with min = 0 and max = 6 (relu6) or no max (relu)",
            ));
        }
        match hi {
            Some(6.0) => self.unary(i, "relu6".into(), Some("Clip(0, 6)".into())),
            None => self.unary(i, "relu".into(), Some("Clip(0, none)".into())),
            Some(v) if v == f32::INFINITY => self.unary(i, "relu".into(), Some("Clip(0, inf)".into())),
            other => Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "max",
                &show(other),
                "Clip with min = 0 and max = 6 (relu6) or no max (relu)",
            )),
        }
    }

    /// A pooling node; `padded` is the padding and input of a `Pad` before an `AveragePool`
    /// (the exporter's form of a ceil-mode average that counts padded cells).
    fn pool(&mut self, i: usize, padded: Option<([usize; 4], usize)>) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let max = op_type == "MaxPool";
        if max {
            self.only_first_output(i)?;
            if let Some(s) = attr_int(n, "storage_order").filter(|&s| s != 0) {
                return Err(errors::unsupported_attribute(
                    &name,
                    &op_type,
                    "storage_order",
                    &s.to_string(),
                    "0",
                ));
            }
        }
        let x = match padded {
            Some((_, v)) => v,
            None => self.tensor_in(i, 0)?,
        };
        let [nb, c, h, w] = self.nchw(i, x)?;
        if attr_ints(n, "kernel_shape").is_none() {
            return Err(errors::bad_attribute(&name, &op_type, "kernel_shape", "it is required"));
        }
        let kernel = pair_attr(n, "kernel_shape", 1, 1)?;
        let stride = pair_attr(n, "strides", 1, 1)?;
        let dilation = pair_attr(n, "dilations", 1, 1)?;
        if dilation != (1, 1) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "dilations",
                &format!("[{}, {}]", dilation.0, dilation.1),
                "pooling without dilation ([1, 1])",
            ));
        }
        let ceil_attr = attr_int(n, "ceil_mode").unwrap_or(0);
        if !(0..=1).contains(&ceil_attr) {
            return Err(errors::bad_attribute(
                &name,
                &op_type,
                "ceil_mode",
                &format!("{ceil_attr} is not 0 or 1"),
            ));
        }
        let include = attr_int(n, "count_include_pad").unwrap_or(0);
        if !max && !(0..=1).contains(&include) {
            return Err(errors::bad_attribute(
                &name,
                &op_type,
                "count_include_pad",
                &format!("{include} is not 0 or 1"),
            ));
        }
        let (pads, same) = pads_attr(n, (h, w), kernel, stride, (1, 1))?;
        let mut ceil = ceil_attr == 1;
        let mut include_pad = include == 1;
        let mut pads = pads;
        let mut same = same;
        let mut comment = None;
        if let Some((p, _)) = padded {
            // Pad, then an average over the padded input with end padding that only makes room
            // for ceil mode's last window: netc's ceil-mode average counting padded cells.
            let floor_h = window_out(h + p[0] + p[1], kernel.0, stride.0, 1, pads[0], pads[1], ceil);
            let floor_w = window_out(w + p[2] + p[3], kernel.1, stride.1, 1, pads[2], pads[3], ceil);
            let ceil_h = window_out(h, kernel.0, stride.0, 1, p[0], p[1], true);
            let ceil_w = window_out(w, kernel.1, stride.1, 1, p[2], p[3], true);
            if ceil || include_pad || pads[0] != 0 || pads[2] != 0 || floor_h != ceil_h || floor_w != ceil_w {
                return Err(errors::unsupported_op(&name, "Pad", ""));
            }
            pads = p;
            ceil = pads_attr(n, (h, w), kernel, stride, (1, 1))?.0 != [0; 4];
            include_pad = true;
            same = false;
            comment = Some("Pad + AveragePool: an average that counts the padding".to_string());
        }
        if pads[0] >= kernel.0 || pads[1] >= kernel.0 || pads[2] >= kernel.1 || pads[3] >= kernel.1 {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "pads",
                &format!("{pads:?} with a {}x{} window", kernel.0, kernel.1),
                "padding smaller than the window",
            ));
        }
        let oh = window_out(h, kernel.0, stride.0, 1, pads[0], pads[1], ceil);
        let ow = window_out(w, kernel.1, stride.1, 1, pads[2], pads[3], ceil);
        let (Some(oh), Some(ow)) = (oh, ow) else {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!(
                    "a {}x{} window does not fit the padded {h}x{w} input",
                    kernel.0, kernel.1
                ),
            ));
        };
        let mut args = vec![fmt_pair(kernel.0, kernel.1)];
        if stride != kernel {
            args.push(format!("stride = {}", fmt_pair(stride.0, stride.1)));
        }
        if same && !max {
            // netc's `same` padding counts in the average like explicit padding; say it explicitly.
            args.push(format!("pad = {}", fmt_pad(pads[0], pads[1], pads[2], pads[3])));
        } else if same {
            args.push("pad = same".into());
        } else if pads != [0; 4] {
            args.push(format!("pad = {}", fmt_pad(pads[0], pads[1], pads[2], pads[3])));
        }
        if ceil {
            args.push("ceil = true".into());
        }
        if !max && !include_pad && (pads != [0; 4] || ceil) {
            args.push("include_pad = false".into());
        }
        let layer = if max { "maxpool" } else { "avgpool" };
        let label = self.label(i);
        self.push(
            i,
            label,
            Call::Pipe(format!("{layer}({})", args.join(", "))),
            vec![x],
            vec![nb, c, oh, ow],
            comment,
        );
        Ok(())
    }

    /// A `Pad` of zeros on the spatial axes, folded into the convolution or average pool that
    /// reads it.
    fn pad(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let unsupported = || errors::unsupported_op(&name, &op_type, "");
        let mode = attr_str(n, "mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "mode",
                &format!("\"{mode}\""),
                "constant (zero) padding before a Conv or AveragePool",
            ));
        }
        let x = self.tensor_in(i, 0)?;
        self.nchw(i, x)?;
        let pads: Vec<i64> = if self.opset >= 11 {
            self.req_const(i, 1, "pads")?.i64s("pads")?.to_vec()
        } else {
            attr_ints(n, "pads").unwrap_or(&[]).to_vec()
        };
        let value = if self.opset >= 11 {
            match self.const_in(i, 2)? {
                Some(c) => c.scalar_f32("the padding value")?,
                None => 0.0,
            }
        } else {
            attr_float(n, "value").unwrap_or(0.0)
        };
        let &[0, 0, t, l, 0, 0, b, r] = pads.as_slice() else {
            return Err(unsupported());
        };
        if value != 0.0 || [t, l, b, r].iter().any(|v| !(0..=MAX_SIZE).contains(v)) {
            return Err(unsupported());
        }
        let p = [t as usize, b as usize, l as usize, r as usize];
        let out = n.output.first().cloned().unwrap_or_default();
        let Some(c) = self.sole_consumer(&out) else {
            return Err(unsupported());
        };
        let consumer = &self.nodes[c];
        if consumer.input.first() != Some(&out) {
            return Err(unsupported());
        }
        match op(consumer) {
            "AveragePool" => {
                self.done[c] = true;
                self.pool(c, Some((p, x)))
            }
            "Conv" => {
                self.done[c] = true;
                self.conv(c, Some((p, x)))
            }
            _ => Err(unsupported()),
        }
    }

    fn reduce_mean(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let [nb, c, _, _] = self.nchw(i, x)?;
        let axes: Vec<i64> = match attr_ints(n, "axes") {
            Some(a) => a.to_vec(),
            None => match self.const_in(i, 1)? {
                Some(c) => c.i64s("axes")?.to_vec(),
                None => Vec::new(),
            },
        };
        let mut norm: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).collect();
        norm.sort_unstable();
        if norm != [2, 3] {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axes",
                &format!("{axes:?}"),
                "ReduceMean over the spatial axes [2, 3] (a global average pool)",
            ));
        }
        let keep = attr_int(n, "keepdims").unwrap_or(1) != 0;
        let label = self.label(i);
        if keep {
            self.push(
                i,
                label,
                Call::Pipe("global_avgpool".into()),
                vec![x],
                vec![nb, c, 1, 1],
                Some("ReduceMean over H, W".into()),
            );
        } else {
            let pooled = self.values.len();
            self.values.push(Value {
                shape: vec![nb, c, 1, 1],
                hint: label.clone(),
            });
            self.layers.push(Layer {
                name: label.clone(),
                call: Call::Pipe("global_avgpool".into()),
                inputs: vec![x],
                outputs: vec![pooled],
                comment: Some("ReduceMean over H, W without keepdims".into()),
            });
            let flat = self.names.label(&format!("{label}_flatten"), "flatten");
            self.push(i, flat, Call::Pipe("flatten".into()), vec![pooled], vec![nb, c], None);
        }
        Ok(())
    }

    /// The channel axis of a tensor of `rank`, given as `axis` (negative counts from the end).
    fn is_channel_axis(axis: i64, rank: usize) -> bool {
        axis == 1 || axis + rank as i64 == 1
    }

    fn concat(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let count = n.input.len();
        if count == 0 {
            return Err(errors::wrong_input(&name, &op_type, "it has no inputs"));
        }
        let ins = (0..count)
            .map(|k| self.tensor_in(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let first = self.shape(ins[0]).to_vec();
        let axis = attr_int(n, "axis").unwrap_or(0);
        if first.len() < 2 || !Self::is_channel_axis(axis, first.len()) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axis",
                &axis.to_string(),
                "concatenation along channels (axis 1)",
            ));
        }
        let mut out = first.clone();
        out[1] = 0;
        for &v in &ins {
            let s = self.shape(v);
            if s.len() != first.len() || s[0] != first[0] || s[2..] != first[2..] {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("{first:?} and {s:?} differ in more than their channels"),
                ));
            }
            out[1] += s[1];
        }
        if ins.len() == 1 {
            self.tensors
                .insert(n.output.first().cloned().unwrap_or_default(), ins[0]);
            return Ok(());
        }
        let label = self.label(i);
        self.push(i, label, Call::Multi("concat"), ins, out, None);
        Ok(())
    }

    fn add(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        if n.input.len() != 2 {
            return Err(errors::wrong_input(&name, &op_type, "it needs two inputs"));
        }
        let a = self.tensor_in(i, 0)?;
        let b = self.tensor_in(i, 1)?;
        if self.shape(a) != self.shape(b) {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!(
                    "{:?} + {:?}; netc adds tensors of the same shape",
                    self.shape(a),
                    self.shape(b)
                ),
            ));
        }
        let shape = self.shape(a).to_vec();
        let label = self.label(i);
        self.push(i, label, Call::Multi("add"), vec![a, b], shape, None);
        Ok(())
    }

    fn split(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        let axis = attr_int(n, "axis").unwrap_or(0);
        if shape.len() < 2 || !Self::is_channel_axis(axis, shape.len()) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axis",
                &axis.to_string(),
                "splits along channels (axis 1)",
            ));
        }
        let c = shape[1];
        let outs = n.output.len();
        let sizes: Vec<i64> = match (self.const_in(i, 1)?, attr_ints(n, "split")) {
            (Some(s), _) => s.i64s("split sizes")?.to_vec(),
            (None, Some(s)) => s.to_vec(),
            (None, None) => {
                if outs == 0 || !c.is_multiple_of(outs) {
                    return Err(errors::shape_mismatch(
                        &name,
                        &op_type,
                        &format!("{c} channels do not split into {outs} equal parts"),
                    ));
                }
                vec![(c / outs) as i64; outs]
            }
        };
        if sizes.len() != outs || sizes.iter().any(|&s| s <= 0) || sizes.iter().sum::<i64>() != c as i64 {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("split sizes {sizes:?} into {outs} outputs for {c} channels"),
            ));
        }
        let sizes: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
        let label = self.label(i);
        if outs == 1 {
            self.tensors.insert(n.output[0].clone(), x);
            return Ok(());
        }
        let parts = if sizes.iter().all(|&s| s == sizes[0]) {
            outs.to_string()
        } else {
            format!(
                "[{}]",
                sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
            )
        };
        let mut ids = Vec::new();
        for (k, &s) in sizes.iter().enumerate() {
            let mut sh = shape.clone();
            sh[1] = s;
            let id = self.values.len();
            let out_name = n.output[k].clone();
            self.values.push(Value {
                shape: sh,
                hint: format!("{label}_{k}"),
            });
            self.tensors.insert(out_name, id);
            ids.push(id);
        }
        self.layers.push(Layer {
            name: label,
            call: Call::Split(parts),
            inputs: vec![x],
            outputs: ids,
            comment: None,
        });
        Ok(())
    }

    fn slice(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let mut shape = self.shape(x).to_vec();
        #[allow(clippy::type_complexity)]
        let (starts, ends, axes, steps): (Vec<i64>, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>) = if self.opset >= 10
        {
            let get = |k: usize, what: &str| -> Result<Option<Vec<i64>>, Diagnostic> {
                Ok(match self.const_in(i, k)? {
                    Some(c) => Some(c.i64s(what)?.to_vec()),
                    None => None,
                })
            };
            (
                get(1, "starts")?.unwrap_or_default(),
                get(2, "ends")?.unwrap_or_default(),
                get(3, "axes")?,
                get(4, "steps")?,
            )
        } else {
            (
                attr_ints(n, "starts").unwrap_or(&[]).to_vec(),
                attr_ints(n, "ends").unwrap_or(&[]).to_vec(),
                attr_ints(n, "axes").map(<[i64]>::to_vec),
                None,
            )
        };
        let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let rank = shape.len();
        let (&[start], &[end], &[axis]) = (starts.as_slice(), ends.as_slice(), axes.as_slice()) else {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axes",
                &format!("{axes:?}"),
                "a slice of the channels only (axes = [1])",
            ));
        };
        if rank < 2 || !Self::is_channel_axis(axis, rank) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axes",
                &format!("{axes:?}"),
                "a slice of the channels only (axes = [1])",
            ));
        }
        if let Some(s) = steps.filter(|s| s.as_slice() != [1]) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "steps",
                &format!("{s:?}"),
                "step 1",
            ));
        }
        let c = shape[1] as i64;
        let clamp = |v: i64| if v < 0 { (v.saturating_add(c)).max(0) } else { v.min(c) };
        let (s, e) = (clamp(start), clamp(end));
        if s >= e {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("the slice {start}..{end} of {c} channels is empty"),
            ));
        }
        if s == 0 && e == c {
            self.tensors.insert(n.output.first().cloned().unwrap_or_default(), x);
            return Ok(());
        }
        shape[1] = (e - s) as usize;
        let label = self.label(i);
        self.push(i, label, Call::Pipe(format!("slice({s}, {e})")), vec![x], shape, None);
        Ok(())
    }

    /// A target shape with ONNX's `0` (copy) and `-1` (infer) resolved against `input`.
    fn resolve_shape(&self, i: usize, input: &[usize], target: &[i64]) -> Result<Vec<usize>, Diagnostic> {
        let (name, op_type) = self.node_ref(i);
        let allowzero = attr_int(&self.nodes[i], "allowzero").unwrap_or(0) != 0;
        let total: usize = input.iter().product();
        let mut out = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &d) in target.iter().enumerate() {
            match d {
                0 if !allowzero => out.push(*input.get(k).ok_or_else(|| {
                    errors::shape_mismatch(
                        &name,
                        &op_type,
                        &format!("target {target:?} copies a dimension the input {input:?} lacks"),
                    )
                })?),
                -1 if infer.is_none() => {
                    infer = Some(k);
                    out.push(1);
                }
                d if (0..=(1i64 << 40)).contains(&d) => out.push(d as usize),
                _ => {
                    return Err(errors::shape_mismatch(
                        &name,
                        &op_type,
                        &format!("invalid target shape {target:?}"),
                    ))
                }
            }
        }
        let known = out
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .unwrap_or(usize::MAX);
        if let Some(k) = infer {
            if known == 0 || !total.is_multiple_of(known) {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("{input:?} cannot be reshaped to {target:?}"),
                ));
            }
            out[k] = total / known;
        } else if known != total {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("{input:?} cannot be reshaped to {target:?}"),
            ));
        }
        Ok(out)
    }

    fn reshape_target(&self, i: usize, input: &[usize]) -> Result<Vec<usize>, Diagnostic> {
        let target: Vec<i64> = match self.const_in(i, 1)? {
            Some(c) => c.i64s("the target shape")?.to_vec(),
            None => attr_ints(&self.nodes[i], "shape").unwrap_or(&[]).to_vec(),
        };
        self.resolve_shape(i, input, &target)
    }

    fn reshape(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        let target = self.reshape_target(i, &shape)?;
        let out_name = n.output.first().cloned().unwrap_or_default();
        if target == shape {
            self.tensors.insert(out_name, x);
            return Ok(());
        }
        if let (&[nb, c, h, w], 2) = (shape.as_slice(), target.len()) {
            if target == [nb, c * h * w] {
                return self.unary_flat(i, x, vec![nb, c * h * w], Some("Reshape to [N, C*H*W]".into()));
            }
        }
        if let (&[nb, c, h, w], &[tn, g, cg, th, tw]) = (shape.as_slice(), target.as_slice()) {
            if tn == nb && th == h && tw == w && g > 0 && g * cg == c {
                if let Some(done) = self.shuffle(i, x, nb, c, h, w, g)? {
                    return Ok(done);
                }
            }
        }
        Err(errors::unsupported_attribute(
            &name,
            &op_type,
            "shape",
            &format!("{shape:?} -> {target:?}"),
            "Reshape to [N, C*H*W] (a flatten), or the Reshape-Transpose-Reshape of a channel shuffle",
        ))
    }

    /// Reshape [N, g, C/g, H, W] -> Transpose [0, 2, 1, 3, 4] -> Reshape [N, C, H, W]: a shuffle.
    /// Returns `None` when the nodes after `i` are not that pattern.
    #[allow(clippy::too_many_arguments)]
    fn shuffle(
        &mut self,
        i: usize,
        x: usize,
        nb: usize,
        c: usize,
        h: usize,
        w: usize,
        g: usize,
    ) -> Result<Option<()>, Diagnostic> {
        let out = self.nodes[i].output.first().cloned().unwrap_or_default();
        let Some(t) = self.sole_consumer(&out) else {
            return Ok(None);
        };
        let tn = &self.nodes[t];
        if op(tn) != "Transpose" || attr_ints(tn, "perm") != Some(&[0, 2, 1, 3, 4]) || tn.input.first() != Some(&out) {
            return Ok(None);
        }
        let tout = tn.output.first().cloned().unwrap_or_default();
        let Some(r) = self.sole_consumer(&tout) else {
            return Ok(None);
        };
        let rn = &self.nodes[r];
        if op(rn) != "Reshape" || rn.input.first() != Some(&tout) {
            return Ok(None);
        }
        let target = self.reshape_target(r, &[nb, c / g, g, h, w])?;
        if target != [nb, c, h, w] {
            return Ok(None);
        }
        self.done[t] = true;
        self.done[r] = true;
        let label = self.label(r);
        self.push(
            r,
            label,
            Call::Pipe(format!("shuffle({g})")),
            vec![x],
            vec![nb, c, h, w],
            Some("Reshape-Transpose-Reshape: a channel shuffle".into()),
        );
        Ok(Some(()))
    }

    fn unary_flat(&mut self, i: usize, x: usize, shape: Vec<usize>, comment: Option<String>) -> Result<(), Diagnostic> {
        let label = self.label(i);
        self.push(i, label, Call::Pipe("flatten".into()), vec![x], shape, comment);
        Ok(())
    }

    fn flatten(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        let axis = attr_int(n, "axis").unwrap_or(1);
        if axis != 1 && axis + shape.len() as i64 != 1 {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axis",
                &axis.to_string(),
                "Flatten with axis 1",
            ));
        }
        match shape.as_slice() {
            &[nb, c, h, w] => self.unary_flat(i, x, vec![nb, c * h * w], None),
            &[_, _] => {
                self.tensors.insert(n.output.first().cloned().unwrap_or_default(), x);
                Ok(())
            }
            s => Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("the input has shape {s:?}"),
            )),
        }
    }

    /// A dense layer from a weight `[out, in]` and an optional bias `[out]`.
    fn dense(
        &mut self,
        i: usize,
        x: usize,
        weight: Vec<f32>,
        out: usize,
        bias: Option<Vec<f32>>,
        comment: Option<String>,
    ) -> Result<(), Diagnostic> {
        let (name, op_type) = self.node_ref(i);
        let &[nb, k] = self.shape(x) else {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!(
                    "the input has shape {:?}; a dense layer needs [N, features] (flatten first)",
                    self.shape(x)
                ),
            ));
        };
        let label = self.label(i);
        self.add_weight(format!("{label}.weight"), vec![out, k], weight);
        let call = match bias {
            Some(b) => {
                self.add_weight(format!("{label}.bias"), vec![out], b);
                format!("dense({out})")
            }
            None => format!("dense({out}, bias = false)"),
        };
        self.push(i, label, Call::Pipe(call), vec![x], vec![nb, out], comment);
        Ok(())
    }

    /// A weight matrix as `[out, in]`: `b` is `[in, out]`, or `[out, in]` when `transposed`.
    fn weight_matrix(
        &self,
        i: usize,
        b: &Const,
        k: usize,
        transposed: bool,
        scale: f32,
    ) -> Result<(Vec<f32>, usize), Diagnostic> {
        let (name, op_type) = self.node_ref(i);
        let data = b.f32s("a weight matrix")?;
        let &[r, c] = b.dims.as_slice() else {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("the weight `{}` has shape {:?}, not 2-D", b.name, b.dims),
            ));
        };
        let (rows_in, out) = if transposed { (c, r) } else { (r, c) };
        if rows_in != k || out == 0 {
            return Err(errors::shape_mismatch(
                &name,
                &op_type,
                &format!("{k} input features and a weight `{}` of shape {:?}", b.name, b.dims),
            ));
        }
        let w: Vec<f32> = if transposed {
            data.iter().map(|v| v * scale).collect()
        } else {
            let mut w = vec![0.0; r * c];
            for row in 0..r {
                for col in 0..c {
                    w[col * r + row] = data[row * c + col] * scale;
                }
            }
            w
        };
        Ok((w, out))
    }

    fn gemm(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        if let Some(t) = attr_int(n, "transA").filter(|&t| t != 0) {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "transA",
                &t.to_string(),
                "transA = 0",
            ));
        }
        let trans_b = attr_int(n, "transB").unwrap_or(0) != 0;
        let alpha = attr_float(n, "alpha").unwrap_or(1.0);
        let beta = attr_float(n, "beta").unwrap_or(1.0);
        let x = self.tensor_in(i, 0)?;
        let k = match self.shape(x) {
            &[_, k] => k,
            s => {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("the input has shape {s:?}; Gemm needs [N, features]"),
                ))
            }
        };
        let b = self.req_const(i, 1, "weight")?.clone();
        let (w, out) = self.weight_matrix(i, &b, k, trans_b, alpha)?;
        let bias = match self.const_in(i, 2)? {
            Some(_) => Some(self.vector(i, 2, "bias", out)?.iter().map(|v| v * beta).collect()),
            None => None,
        };
        let comment = (!trans_b).then(|| "Gemm with transB = 0: the weight is stored transposed".to_string());
        self.dense(i, x, w, out, bias, comment)
    }

    fn matmul(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let k = match self.shape(x) {
            &[_, k] => k,
            s => {
                return Err(errors::shape_mismatch(
                    &name,
                    &op_type,
                    &format!("the input has shape {s:?}; MatMul needs [N, features]"),
                ))
            }
        };
        let b = self.req_const(i, 1, "weight")?.clone();
        let (w, out) = self.weight_matrix(i, &b, k, false, 1.0)?;
        // MatMul + Add of a constant [out]: one dense layer with a bias.
        let mm_out = n.output.first().cloned().unwrap_or_default();
        if let Some(a) = self.sole_consumer(&mm_out) {
            let an = &self.nodes[a];
            if op(an) == "Add" && an.input.len() == 2 {
                let other = if an.input[0] == mm_out { 1 } else { 0 };
                if let Some(c) = self.consts.get(&an.input[other]) {
                    if c.f32s("a bias").map(|v| v.len()) == Ok(out) && c.dims.iter().filter(|&&d| d != 1).count() <= 1 {
                        let bias = c.f32s("a bias")?.to_vec();
                        self.done[a] = true;
                        let out_value = an.output.first().cloned().unwrap_or_default();
                        // Name the layer after the MatMul; the Add's output is its value.
                        self.dense(
                            i,
                            x,
                            w,
                            out,
                            Some(bias),
                            Some("MatMul + Add: a dense layer with a bias".into()),
                        )?;
                        let id = self.values.len() - 1;
                        self.tensors.insert(out_value, id);
                        return Ok(());
                    }
                }
            }
        }
        self.dense(i, x, w, out, None, Some("MatMul: a dense layer without bias".into()))
    }

    fn softmax(&mut self, i: usize) -> Result<(), Diagnostic> {
        let n = &self.nodes[i];
        let (name, op_type) = self.node_ref(i);
        let x = self.tensor_in(i, 0)?;
        let shape = self.shape(x).to_vec();
        let default = if self.opset >= 13 { -1 } else { 1 };
        let axis = attr_int(n, "axis").unwrap_or(default);
        let ok = match shape.len() {
            2 => Self::is_channel_axis(axis, 2),
            4 if self.opset >= 13 => Self::is_channel_axis(axis, 4),
            4 => axis == 1 && shape[2] * shape[3] == 1,
            _ => false,
        };
        if !ok {
            return Err(errors::unsupported_attribute(
                &name,
                &op_type,
                "axis",
                &axis.to_string(),
                "a softmax over the channels (axis 1)",
            ));
        }
        self.unary(i, "softmax".into(), None)
    }

    fn dropout(&mut self, i: usize) -> Result<(), Diagnostic> {
        self.only_first_output(i)?;
        let n = &self.nodes[i];
        let ratio = match self.const_in(i, 1)? {
            Some(c) => c.scalar_f32("the dropout ratio")?,
            None => attr_float(n, "ratio").unwrap_or(0.5),
        };
        if let Some(t) = self.const_in(i, 2)? {
            let training = match &t.data {
                tensors::Data::I64(v) => v.iter().any(|&b| b != 0),
                tensors::Data::F32(v) => v.iter().any(|&b| b != 0.0),
                tensors::Data::Other(_) => true,
            };
            if training {
                let (name, op_type) = self.node_ref(i);
                return Err(errors::unsupported_attribute(
                    &name,
                    &op_type,
                    "training_mode",
                    "true",
                    "inference",
                ));
            }
        }
        let call = if ratio == 0.5 {
            "dropout".to_string()
        } else if (0.0..1.0).contains(&ratio) {
            format!("dropout(p = {})", fmt_f32(ratio))
        } else {
            let (name, op_type) = self.node_ref(i);
            return Err(errors::bad_attribute(
                &name,
                &op_type,
                "ratio",
                &format!("{ratio} is not in [0, 1)"),
            ));
        };
        self.unary(i, call, None)
    }
}
