//! The graph IR and its weights as an ONNX model: opset 13 (IR version 7), float32, the input's
//! batch size as compiled.
//!
//! Every IR node becomes one ONNX node with the node's hierarchical name, whose output value has
//! the same name; the input keeps its name; the weights are initializers under their netc names
//! (`stem.conv.weight`). Helper constants and the values between the nodes of a multi-node mapping
//! are named after their node with a `/` (`stage2.unit0.shuffle/transpose`), a character netc
//! names never contain. Every value's shape is recorded (`value_info`), so viewers show it.
//!
//! | netc | ONNX |
//! |---|---|
//! | `conv` | `Conv`: `kernel_shape`, `strides`, `pads` `[top, left, bottom, right]`, `dilations`, `group` |
//! | `batchnorm` | `BatchNormalization`: `epsilon`; inputs gamma, beta, mean, var |
//! | `relu`, `leaky_relu` | `Relu`, `LeakyRelu` (`alpha` = slope) |
//! | `relu6` | `Clip` with the inputs `min` = 0 and `max` = 6 (shared scalar initializers) |
//! | `maxpool`, `avgpool` | `MaxPool`, `AveragePool`: `kernel_shape`, `strides`, `pads`, `count_include_pad`; ceil mode as explicit padding (below) |
//! | `global_avgpool`, `global_maxpool` | `GlobalAveragePool`, `GlobalMaxPool` |
//! | `dense` | `Gemm` with `transB` = 1 (the weight is `[out, in]`) |
//! | `flatten` | `Flatten` with `axis` = 1 |
//! | `concat` | `Concat` with `axis` = 1 |
//! | `add` | `Add` |
//! | `slice` | `Slice` with `starts`, `ends`, `axes` = `[1]` as initializers |
//! | `shuffle` | `Reshape` to `[N, g, C/g, H, W]`, `Transpose` `[0, 2, 1, 3, 4]`, `Reshape` to `[N, C, H, W]` |
//! | `dropout` | `Dropout` with its `ratio` (an identity at inference) |
//! | `softmax` | `Softmax` with `axis` = 1 (per position, over channels, as opset 13 defines it) |
//!
//! **Ceil-mode pooling** is exported in floor mode (`ceil_mode` = 0) with the end padding made just
//! large enough for the extra window, and still smaller than the window, as ONNX requires:
//! consumers disagree on ceil mode's last window (at opset 13, ONNX's shape inference for
//! `AveragePool` keeps a window that starts in the end padding; ONNX Runtime's kernel, PyTorch and
//! netc drop it), and on what an average over a window that runs past the padding divides by. A
//! max pool ignores the padding either way, and so does an average that excludes it. An `avgpool`
//! that counts padded cells (`include_pad = true`, the default) and whose last window runs past
//! the padding becomes a `Pad` (`<node>/pad`, explicit zeros) and an `AveragePool` that counts
//! only the cells of its now padded input: netc divides such a window by its cells inside the
//! padded input, as PyTorch does, where ONNX Runtime would divide by the whole window.
//!
//! A graph output that is the input, or that another output already names, goes through an
//! `Identity` node, since an ONNX graph output must be a distinct value.

use super::errors;
use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_proto::DataType;
use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::diag::Diagnostic;
use crate::ir::op::{Activation, Op, Pool, PoolKind};
use crate::ir::{Graph, Node, NodeId};
use crate::runtime::{errors as runtime_errors, weights, Weights};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// The ONNX operator set the model imports (the default domain).
pub const OPSET: i64 = 13;
/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 7;
/// Largest serialized model: protobuf messages are limited to 2 GiB.
pub const MAX_MODEL_BYTES: u64 = i32::MAX as u64;

/// The graph with `weights` as an ONNX model. The weights are checked against the graph first.
pub fn export(graph: &Graph, weights: &Weights) -> Result<ModelProto, Diagnostic> {
    check_size(graph)?;
    weights.check(graph, "the weights")?;
    let specs = weights::expected(graph);
    let mut b = Builder {
        graph,
        weights,
        values: HashSet::new(),
        node_names: HashSet::new(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        shapes: Vec::new(),
        value_of: HashMap::new(),
        constants: HashMap::new(),
    };
    // The weights keep their netc names: reserve them before any other value is named.
    for s in &specs {
        b.values.insert(s.name.clone());
    }
    let mut inputs = Vec::new();
    for &ix in &graph.inputs {
        let node = graph.node(ix);
        let name = b.fresh_value(&node.name);
        inputs.push(value_info(&name, &node.shape.0));
        b.value_of.insert(ix, name);
    }
    let order = graph
        .topo_order()
        .ok_or_else(|| runtime_errors::internal("the graph has a cycle"))?;
    for ix in order {
        if graph.node(ix).op != Op::Input {
            b.node(ix)?;
        }
    }
    // Graph outputs must be distinct values, and not the input.
    let input_values: HashSet<&str> = inputs.iter().filter_map(|v| v.name.as_deref()).collect();
    let mut output_names: Vec<String> = Vec::new();
    for (k, &ix) in graph.outputs.iter().enumerate() {
        let value = b.value(ix)?;
        let name = if input_values.contains(value.as_str()) || output_names.contains(&value) {
            let out = b.fresh_value(&format!("{value}/output{k}"));
            let node_name = b.fresh_node(&format!("{value}/output{k}"));
            b.push_node("Identity", node_name, vec![value], out.clone(), Vec::new(), None);
            out
        } else {
            value
        };
        output_names.push(name);
    }
    let outputs: Vec<ValueInfoProto> = graph
        .outputs
        .iter()
        .zip(&output_names)
        .map(|(&ix, name)| value_info(name, &graph.node(ix).shape.0))
        .collect();
    let value_infos: Vec<ValueInfoProto> = b
        .shapes
        .iter()
        .filter(|(name, _)| !output_names.contains(name))
        .map(|(name, shape)| value_info(name, shape))
        .collect();
    let hyper: Vec<String> = graph.hyper.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let signature = format!("{}({})", graph.name, hyper.join(", "));
    let mut metadata: Vec<StringStringEntryProto> = graph
        .hyper
        .iter()
        .map(|(k, v)| entry(&format!("netc.hyper.{k}"), &v.to_string()))
        .collect();
    metadata.push(entry("netc.network", &graph.name));
    let model = ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("netc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        model_version: Some(1),
        doc_string: Some(format!("{signature}, exported by netc from its unoptimized graph")),
        metadata_props: metadata,
        graph: Some(GraphProto {
            name: Some(graph.name.clone()),
            doc_string: Some(signature),
            node: b.nodes,
            initializer: b.initializers,
            input: inputs,
            output: outputs,
            value_info: value_infos,
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    };
    let size = model.encoded_len() as u64;
    if size > MAX_MODEL_BYTES {
        return Err(errors::model_too_large(&graph.name, size, MAX_MODEL_BYTES));
    }
    Ok(model)
}

/// Checks that the graph's weights fit in one ONNX file (protobuf's 2 GiB), before any weights are
/// made or loaded.
pub fn check_size(graph: &Graph) -> Result<(), Diagnostic> {
    let weight_bytes: u64 = weights::expected(graph)
        .iter()
        .map(|s| s.shape.iter().product::<usize>() as u64 * 4)
        .sum();
    if weight_bytes > MAX_MODEL_BYTES {
        return Err(errors::model_too_large(&graph.name, weight_bytes, MAX_MODEL_BYTES));
    }
    Ok(())
}

/// The model under construction.
struct Builder<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    /// Every value name given out (weights, node outputs, constants).
    values: HashSet<String>,
    /// Every node name given out.
    node_names: HashSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Shapes of the values that nodes produce, in order.
    shapes: Vec<(String, Vec<usize>)>,
    /// The value that holds each IR node's output.
    value_of: HashMap<NodeId, String>,
    /// Initializers shared by several nodes, by purpose.
    constants: HashMap<&'static str, String>,
}

fn unique(taken: &mut HashSet<String>, want: &str) -> String {
    if taken.insert(want.to_string()) {
        return want.to_string();
    }
    (2..)
        .map(|k| format!("{want}_{k}"))
        .find(|n| taken.insert(n.clone()))
        .expect("some suffix is free")
}

impl Builder<'_> {
    fn fresh_value(&mut self, want: &str) -> String {
        unique(&mut self.values, want)
    }

    fn fresh_node(&mut self, want: &str) -> String {
        unique(&mut self.node_names, want)
    }

    /// The value that holds an IR node's output.
    fn value(&self, ix: NodeId) -> Result<String, Diagnostic> {
        self.value_of.get(&ix).cloned().ok_or_else(|| {
            runtime_errors::internal(&format!("`{}` is used before it is exported", self.graph.node(ix).name))
        })
    }

    fn push_node(
        &mut self,
        op_type: &str,
        name: String,
        inputs: Vec<String>,
        output: String,
        attribute: Vec<AttributeProto>,
        doc: Option<String>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output],
            name: Some(name),
            op_type: Some(op_type.into()),
            attribute,
            doc_string: doc,
            ..NodeProto::default()
        });
    }

    /// Adds the node's weight tensor `<node>.<suffix>` as an initializer; returns its name.
    fn weight(&mut self, node: &Node, suffix: &str) -> Result<String, Diagnostic> {
        let name = format!("{}.{suffix}", node.name);
        let t = self
            .weights
            .get(&name)
            .ok_or_else(|| runtime_errors::missing_tensor(&name))?;
        self.initializers.push(f32_tensor(&name, &t.shape, &t.data));
        Ok(name)
    }

    /// Adds an int64 initializer named after a node; returns its name.
    fn ints(&mut self, want: &str, dims: &[usize], data: &[i64]) -> String {
        let name = self.fresh_value(want);
        self.initializers.push(i64_tensor(&name, dims, data));
        name
    }

    /// A scalar f32 initializer shared by every node that needs the same constant.
    fn shared_scalar(&mut self, key: &'static str, value: f32) -> String {
        if let Some(name) = self.constants.get(key) {
            return name.clone();
        }
        let name = self.fresh_value(key);
        self.initializers.push(f32_tensor(&name, &[], &[value]));
        self.constants.insert(key, name.clone());
        name
    }

    /// Exports one IR node (not an input).
    fn node(&mut self, ix: NodeId) -> Result<(), Diagnostic> {
        let graph = self.graph;
        let node = graph.node(ix);
        let mut ins = graph
            .inputs_of(ix)
            .into_iter()
            .map(|i| self.value(i))
            .collect::<Result<Vec<String>, Diagnostic>>()?;
        let shape = &node.shape.0;
        let in_shape = graph
            .inputs_of(ix)
            .first()
            .map(|&i| graph.node(i).shape.0.clone())
            .unwrap_or_default();
        let doc = {
            let attrs = node.op.attrs();
            Some(if attrs.is_empty() {
                format!("netc {}", node.op.kind())
            } else {
                format!("netc {} {attrs}", node.op.kind())
            })
        };
        let (op_type, attrs): (&str, Vec<AttributeProto>) = match &node.op {
            Op::Input => return Err(runtime_errors::internal("an input node is exported as a node")),
            Op::Block(_) => return Err(runtime_errors::internal("a fused block is exported as a node")),
            Op::Conv(c) => {
                ins.push(self.weight(node, "weight")?);
                if c.bias {
                    ins.push(self.weight(node, "bias")?);
                }
                (
                    "Conv",
                    vec![
                        attr_ints("kernel_shape", &[c.kernel.0, c.kernel.1]),
                        attr_ints("strides", &[c.stride.0, c.stride.1]),
                        attr_ints("pads", &[c.pad.top, c.pad.left, c.pad.bottom, c.pad.right]),
                        attr_ints("dilations", &[c.dilation.0, c.dilation.1]),
                        attr_int("group", c.groups as i64),
                    ],
                )
            }
            Op::BatchNorm { eps } => {
                for suffix in ["gamma", "beta", "mean", "var"] {
                    ins.push(self.weight(node, suffix)?);
                }
                ("BatchNormalization", vec![attr_float("epsilon", *eps)])
            }
            Op::Act(Activation::Relu) => ("Relu", Vec::new()),
            Op::Act(Activation::Relu6) => {
                ins.push(self.shared_scalar("relu6/min", 0.0));
                ins.push(self.shared_scalar("relu6/max", 6.0));
                ("Clip", Vec::new())
            }
            Op::Act(Activation::LeakyRelu { slope }) => ("LeakyRelu", vec![attr_float("alpha", *slope)]),
            Op::Pool(p) => {
                let past = past_padding(p, &in_shape, shape);
                if p.kind == PoolKind::Avg && p.count_include_pad && past != (0, 0) {
                    return self.padded_avgpool(ix, ins, p, past, doc);
                }
                let pads = [p.pad.top, p.pad.left, p.pad.bottom + past.0, p.pad.right + past.1];
                let mut attrs = vec![
                    attr_ints("kernel_shape", &[p.kernel.0, p.kernel.1]),
                    attr_ints("strides", &[p.stride.0, p.stride.1]),
                    attr_ints("pads", &pads),
                    attr_int("ceil_mode", 0),
                ];
                match p.kind {
                    PoolKind::Max => ("MaxPool", attrs),
                    PoolKind::Avg => {
                        attrs.push(attr_int("count_include_pad", p.count_include_pad as i64));
                        ("AveragePool", attrs)
                    }
                }
            }
            Op::GlobalPool(PoolKind::Avg) => ("GlobalAveragePool", Vec::new()),
            Op::GlobalPool(PoolKind::Max) => ("GlobalMaxPool", Vec::new()),
            Op::Dense { bias, .. } => {
                ins.push(self.weight(node, "weight")?);
                if *bias {
                    ins.push(self.weight(node, "bias")?);
                }
                ("Gemm", vec![attr_int("transB", 1)])
            }
            Op::Flatten => ("Flatten", vec![attr_int("axis", 1)]),
            Op::Concat => ("Concat", vec![attr_int("axis", 1)]),
            Op::Add => ("Add", Vec::new()),
            Op::Slice { start, end } => {
                let starts = self.ints(&format!("{}/starts", node.name), &[1], &[*start as i64]);
                let ends = self.ints(&format!("{}/ends", node.name), &[1], &[*end as i64]);
                let axes = self.ints(&format!("{}/axes", node.name), &[1], &[1]);
                ins.extend([starts, ends, axes]);
                ("Slice", Vec::new())
            }
            Op::Shuffle { groups } => return self.shuffle(ix, ins, &in_shape, *groups, doc),
            Op::Dropout { p } => {
                let ratio = self.fresh_value(&format!("{}/ratio", node.name));
                self.initializers.push(f32_tensor(&ratio, &[], &[*p]));
                ins.push(ratio);
                ("Dropout", Vec::new())
            }
            Op::Softmax => ("Softmax", vec![attr_int("axis", 1)]),
        };
        let out = self.fresh_value(&node.name);
        let name = self.fresh_node(&node.name);
        self.push_node(op_type, name, ins, out.clone(), attrs, doc);
        self.shapes.push((out.clone(), shape.clone()));
        self.value_of.insert(ix, out);
        Ok(())
    }

    /// An average pool that counts padded cells and whose last window (in ceil mode) runs `past`
    /// the padding: an explicit zero `Pad`, then an `AveragePool` that counts only the cells of its
    /// padded input, with end padding for the last window, in floor mode.
    fn padded_avgpool(
        &mut self,
        ix: NodeId,
        ins: Vec<String>,
        p: &Pool,
        past: (usize, usize),
        doc: Option<String>,
    ) -> Result<(), Diagnostic> {
        let node = self.graph.node(ix);
        let x = ins.into_iter().next().unwrap_or_default();
        let mut padded_shape = self
            .graph
            .inputs_of(ix)
            .first()
            .map(|&i| self.graph.node(i).shape.0.clone())
            .unwrap_or_default();
        if padded_shape.len() != 4 {
            return Err(runtime_errors::internal(&format!(
                "pool `{}` has an input of rank {}",
                node.name,
                padded_shape.len()
            )));
        }
        padded_shape[2] += p.pad.top + p.pad.bottom;
        padded_shape[3] += p.pad.left + p.pad.right;
        let pads = self.ints(
            &format!("{}/pads", node.name),
            &[8],
            &[0, 0, p.pad.top, p.pad.left, 0, 0, p.pad.bottom, p.pad.right].map(|v| v as i64),
        );
        let padded = self.fresh_value(&format!("{}/pad", node.name));
        let name = self.fresh_node(&format!("{}/pad", node.name));
        self.push_node("Pad", name, vec![x, pads], padded.clone(), Vec::new(), doc.clone());
        self.shapes.push((padded.clone(), padded_shape));

        let out = self.fresh_value(&node.name);
        let name = self.fresh_node(&node.name);
        let attrs = vec![
            attr_ints("kernel_shape", &[p.kernel.0, p.kernel.1]),
            attr_ints("strides", &[p.stride.0, p.stride.1]),
            attr_ints("pads", &[0, 0, past.0, past.1]),
            attr_int("ceil_mode", 0),
            attr_int("count_include_pad", 0),
        ];
        self.push_node("AveragePool", name, vec![padded], out.clone(), attrs, doc);
        self.shapes.push((out.clone(), node.shape.0.clone()));
        self.value_of.insert(ix, out);
        Ok(())
    }

    /// A channel shuffle as three nodes: split the channels into `(groups, C / groups)`, swap the
    /// two axes, merge them again.
    fn shuffle(
        &mut self,
        ix: NodeId,
        ins: Vec<String>,
        in_shape: &[usize],
        groups: usize,
        doc: Option<String>,
    ) -> Result<(), Diagnostic> {
        let node = self.graph.node(ix);
        let &[n, c, h, w] = in_shape else {
            return Err(runtime_errors::internal(&format!(
                "shuffle `{}` has an input of rank {}",
                node.name,
                in_shape.len()
            )));
        };
        if groups == 0 || c % groups != 0 {
            return Err(runtime_errors::internal(&format!(
                "shuffle `{}`: {groups} groups do not divide {c} channels",
                node.name
            )));
        }
        let grouped = [n, groups, c / groups, h, w];
        let swapped = [n, c / groups, groups, h, w];
        let to_i64 = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();
        let grouped_shape = self.ints(&format!("{}/grouped_shape", node.name), &[5], &to_i64(&grouped));
        let shape = self.ints(&format!("{}/shape", node.name), &[4], &to_i64(in_shape));

        let reshaped = self.fresh_value(&format!("{}/reshape", node.name));
        let name = self.fresh_node(&format!("{}/reshape", node.name));
        let x = ins.into_iter().next().unwrap_or_default();
        self.push_node(
            "Reshape",
            name,
            vec![x, grouped_shape],
            reshaped.clone(),
            Vec::new(),
            doc.clone(),
        );
        self.shapes.push((reshaped.clone(), grouped.to_vec()));

        let transposed = self.fresh_value(&format!("{}/transpose", node.name));
        let name = self.fresh_node(&format!("{}/transpose", node.name));
        self.push_node(
            "Transpose",
            name,
            vec![reshaped],
            transposed.clone(),
            vec![attr_ints("perm", &[0, 2, 1, 3, 4])],
            doc.clone(),
        );
        self.shapes.push((transposed.clone(), swapped.to_vec()));

        let out = self.fresh_value(&node.name);
        let name = self.fresh_node(&node.name);
        self.push_node("Reshape", name, vec![transposed, shape], out.clone(), Vec::new(), doc);
        self.shapes.push((out.clone(), node.shape.0.clone()));
        self.value_of.insert(ix, out);
        Ok(())
    }
}

/// How far (height, width) the last window of a pool reaches past the end of its padded input:
/// zero unless ceil mode added a window, and then less than the window.
fn past_padding(p: &Pool, input: &[usize], output: &[usize]) -> (usize, usize) {
    let past = |o: usize, s: usize, k: usize, padded: usize| ((o.max(1) - 1) * s + k).saturating_sub(padded);
    match (input, output) {
        ([_, _, h, w], [_, _, oh, ow]) => (
            past(*oh, p.stride.0, p.kernel.0, h + p.pad.top + p.pad.bottom),
            past(*ow, p.stride.1, p.kernel.1, w + p.pad.left + p.pad.right),
        ),
        _ => (0, 0),
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..AttributeProto::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..AttributeProto::default()
    }
}

fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..TensorProto::default()
    }
}

fn i64_tensor(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..TensorProto::default()
    }
}

/// A float32 tensor value of a fixed shape.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            denotation: None,
                        })
                        .collect(),
                }),
            })),
            denotation: None,
        }),
        ..ValueInfoProto::default()
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}
