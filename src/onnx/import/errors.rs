//! Diagnostic constructors of ONNX import (codes `E07xx`).

use crate::diag::Diagnostic;

/// The node as a diagnostic names it: `node `name` (Op)`.
fn node_ref(node: &str, op: &str) -> String {
    format!("node `{node}` ({op})")
}

pub fn not_a_model(source: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0701", format!("`{source}` is not a valid ONNX model: {reason}"))
        .with_note("the file may be truncated, or not an ONNX protobuf file at all")
}

pub fn no_graph(source: &str) -> Diagnostic {
    Diagnostic::error("E0702", format!("`{source}` holds no graph"))
}

pub fn unsupported_op(node: &str, op: &str, domain: &str) -> Diagnostic {
    let op_name = if domain.is_empty() || domain == "ai.onnx" {
        op.to_string()
    } else {
        format!("{domain}::{op}")
    };
    Diagnostic::error(
        "E0703",
        format!(
            "{}: netc has no layer for the operator `{op_name}`",
            node_ref(node, &op_name)
        ),
    )
    .with_note(
        "supported: Conv, BatchNormalization, Relu, Clip (0..6), LeakyRelu, MaxPool, AveragePool, \
         GlobalAveragePool, GlobalMaxPool, ReduceMean (spatial), Concat, Add, Split, Slice (channels), \
         Reshape-Transpose-Reshape (channel shuffle), Flatten, Reshape (to flat), Gemm, MatMul, Softmax, \
         Dropout, Identity, Constant; Shape, Gather and integer Add/Sub/Mul/Div on shapes (folded)",
    )
}

pub fn unsupported_attribute(node: &str, op: &str, attribute: &str, value: &str, supported: &str) -> Diagnostic {
    Diagnostic::error(
        "E0704",
        format!(
            "{}: attribute `{attribute}` = {value} is not supported",
            node_ref(node, op)
        ),
    )
    .with_note(format!("netc supports {supported}"))
}

pub fn bad_attribute(node: &str, op: &str, attribute: &str, reason: &str) -> Diagnostic {
    Diagnostic::error(
        "E0705",
        format!("{}: attribute `{attribute}` is invalid: {reason}", node_ref(node, op)),
    )
}

pub fn external_data(tensor: &str) -> Diagnostic {
    Diagnostic::error("E0706", format!("tensor `{tensor}` is stored in an external data file"))
        .with_note("netc imports only models whose tensors are stored inside the .onnx file")
        .with_help("convert the model with `onnx.save_model(onnx.load(path), out, save_as_external_data=False)`")
}

pub fn tensor_dtype(tensor: &str, dtype: &str, role: &str) -> Diagnostic {
    Diagnostic::error(
        "E0707",
        format!(
            "tensor `{tensor}` has element type {dtype}, but {role} must be {}",
            expected_dtype(role)
        ),
    )
    .with_note("netc runs float32 networks; quantized or half-precision models are not imported")
}

fn expected_dtype(role: &str) -> &'static str {
    if role.contains("shape") || role.contains("index") || role.contains("axes") || role.contains("sizes") {
        "int64"
    } else {
        "float32"
    }
}

pub fn bad_tensor(tensor: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0708", format!("tensor `{tensor}` is malformed: {reason}"))
}

pub fn input_count(found: usize) -> Diagnostic {
    Diagnostic::error(
        "E0709",
        format!("the model has {found} graph inputs besides its initializers; netc networks have exactly one"),
    )
}

pub fn input_shape(input: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0710", format!("input `{input}`: {reason}"))
        .with_note("netc needs an input of shape [N, C, H, W] with fixed C, H and W")
        .with_help("fix the input shape when exporting the model (e.g. without dynamic axes other than the batch)")
}

pub fn missing_value(node: &str, op: &str, value: &str) -> Diagnostic {
    Diagnostic::error(
        "E0711",
        format!(
            "{}: input `{value}` is neither a graph input, an initializer nor another node's output",
            node_ref(node, op)
        ),
    )
}

pub fn cycle() -> Diagnostic {
    Diagnostic::error("E0712", "the graph has a cycle: its nodes cannot be ordered")
}

pub fn wrong_input(node: &str, op: &str, what: &str) -> Diagnostic {
    Diagnostic::error("E0713", format!("{}: {what}", node_ref(node, op)))
}

pub fn shape_mismatch(node: &str, op: &str, what: &str) -> Diagnostic {
    Diagnostic::error("E0714", format!("{}: inconsistent shapes: {what}", node_ref(node, op)))
}

pub fn bad_output(output: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0715", format!("graph output `{output}`: {reason}"))
}

pub fn does_not_compile(rendered: &str) -> Diagnostic {
    Diagnostic::error("E0716", "the imported network does not compile")
        .with_note(rendered.trim_end().to_string())
        .with_note("this is a bug in netc's importer, or a model outside what netc can express")
}

pub fn too_large(what: &str, limit: u64) -> Diagnostic {
    Diagnostic::error("E0717", format!("{what} exceeds netc's limit of {limit}"))
}
