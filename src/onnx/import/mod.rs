//! ONNX import: an ONNX model as a readable `.net` file and its weights, which then compile and
//! run like any other network (`netc import MODEL.onnx -o OUT.net`).
//!
//! This module owns everything of that direction:
//!
//! - `mod.rs` the entry points: decoding, the graph's input, the header of the generated file, and
//!   the check that the generated network compiles, with the shapes and weights the model has;
//! - `tensors.rs` initializers and `Constant` values decoded from protobuf, and attribute access;
//! - `convert.rs` the graph walk: every node, in topological order, mapped to a netc layer or
//!   folded into a recognized pattern, with the shapes ONNX's rules give;
//! - `names.rs` node labels derived from ONNX node names, and variable names;
//! - `emit.rs` the `.net` text;
//! - `errors.rs` the diagnostics (codes `E07xx`).
//!
//! | ONNX | netc |
//! |---|---|
//! | `Conv` | `conv`, or `dwconv` when `group` equals the input channels; `auto_pad` `SAME_UPPER` as `pad = same`, `SAME_LOWER` as explicit padding |
//! | `BatchNormalization` | `batchnorm` (`eps`) |
//! | `Relu`, `LeakyRelu` | `relu`, `leaky_relu` (`slope`) |
//! | `Clip` | `relu6` for the bounds 0 and 6, `relu` for 0 and none; other bounds are refused |
//! | `MaxPool`, `AveragePool` | `maxpool`, `avgpool` (`ceil`, `include_pad`) |
//! | `Pad` of zeros | folded into the `Conv` or `AveragePool` that reads it |
//! | `GlobalAveragePool`, `GlobalMaxPool`, `ReduceMean` over H, W | `global_avgpool`, `global_maxpool` (and `flatten` without `keepdims`) |
//! | `Concat`, `Add`, `Split`, `Slice` (channels) | `concat`, `add`, `split`, `slice` |
//! | `Reshape` `Transpose` `Reshape` | `shuffle` |
//! | `Flatten`, `Reshape` to `[N, C*H*W]` | `flatten` |
//! | `Gemm`, `MatMul` (+ `Add` of a bias) | `dense` |
//! | `Softmax`, `Dropout` | `softmax`, `dropout` |
//! | `Identity`, `Constant` | no layer |
//!
//! Every layer is labelled (`as NAME`) with its ONNX node name made a valid netc name, so the
//! weights are `NAME.weight`, `NAME.bias`, `NAME.gamma`, ... A symbolic (or missing) batch
//! dimension is taken as 1, which the generated file says; a fixed batch is the batch the
//! generated network is checked with (compile it with `--batch N`). Tensors in external data
//! files, non-float weights, and symbolic channels or spatial sizes are refused.

pub mod convert;
pub mod emit;
pub mod errors;
pub mod names;
pub mod tensors;

use super::proto::tensor_proto::DataType;
use super::proto::{tensor_shape_proto::dimension, type_proto, ModelProto, ValueInfoProto};
use crate::diag::Diagnostic;
use crate::runtime::Weights;
use prost::Message;
use std::collections::HashSet;
use std::path::Path;

/// Largest model file read, in bytes (protobuf's limit).
pub const MAX_MODEL_BYTES: u64 = i32::MAX as u64;

/// An imported model.
#[derive(Debug)]
pub struct Imported {
    /// The `.net` source.
    pub text: String,
    /// The weights, under the generated network's names.
    pub weights: Weights,
    /// The batch size the model was checked with.
    pub batch: usize,
    /// What the importer assumed, for the user (also in the text as comments).
    pub notes: Vec<String>,
}

/// The dimensions of a tensor value: `Some(n)` fixed, `None` symbolic or unknown.
fn dims(v: &ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = t.shape.as_ref()?;
    let dims = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) if v > 0 => Some(v),
            _ => None,
        })
        .collect();
    Some((t.elem_type.unwrap_or(0), dims))
}

/// A netc identifier from any text (the network's name).
fn ident(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    s.truncate(64);
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("net_{s}");
    }
    let keywords = [
        "include", "const", "fn", "block", "net", "let", "for", "in", "if", "else", "return", "assert", "and", "or",
        "not", "true", "false", "as",
    ];
    if keywords.contains(&s.as_str()) {
        s.push_str("_net");
    }
    s
}

/// Imports a model from protobuf bytes. `source` names the model in diagnostics and in the
/// generated file's header; `net_name` is the generated network's name (an identifier is made of
/// it).
pub fn import(bytes: &[u8], source: &str, net_name: &str) -> Result<Imported, Diagnostic> {
    let model = ModelProto::decode(bytes).map_err(|e| errors::not_a_model(source, &e.to_string()))?;
    import_model(&model, source, net_name)
}

/// Imports a model file.
pub fn import_file(path: &Path) -> Result<Imported, Diagnostic> {
    let source = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|e| crate::runtime::errors::unreadable(&source, &e.to_string()))?
        .len();
    if size > MAX_MODEL_BYTES {
        return Err(errors::too_large(
            &format!("`{source}` with {size} bytes"),
            MAX_MODEL_BYTES,
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| crate::runtime::errors::unreadable(&source, &e.to_string()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("imported");
    import(&bytes, &source, stem)
}

/// Imports a decoded model.
pub fn import_model(model: &ModelProto, source: &str, net_name: &str) -> Result<Imported, Diagnostic> {
    let graph = model.graph.as_ref().ok_or_else(|| errors::no_graph(source))?;
    let opset = convert::default_opset(model);
    let initializers: HashSet<&str> = graph.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|v| !initializers.contains(v.name.as_deref().unwrap_or("")))
        .collect();
    let &[input] = inputs.as_slice() else {
        return Err(errors::input_count(inputs.len()));
    };
    let input_name = input.name.clone().unwrap_or_default();
    let Some((elem, shape)) = dims(input) else {
        return Err(errors::input_shape(&input_name, "the model gives no tensor shape"));
    };
    if elem != DataType::Float as i32 {
        let t = DataType::try_from(elem).map_or("unknown".to_string(), |d| d.as_str_name().to_ascii_lowercase());
        return Err(errors::input_shape(
            &input_name,
            &format!("its element type is {t}, not float"),
        ));
    }
    if shape.len() != 4 {
        return Err(errors::input_shape(
            &input_name,
            &format!("it has rank {}, not 4", shape.len()),
        ));
    }
    let mut notes = Vec::new();
    let batch = match shape[0] {
        Some(n) if n <= 4096 => n as usize,
        Some(n) => {
            return Err(errors::input_shape(
                &input_name,
                &format!("batch {n} is more than netc's 4096"),
            ))
        }
        None => {
            notes.push(format!(
                "the batch size of input `{input_name}` is symbolic; imported with batch 1"
            ));
            1
        }
    };
    let mut chw = [0usize; 3];
    for (k, axis) in ["channels", "height", "width"].iter().enumerate() {
        match shape[k + 1] {
            Some(v) if v <= convert::MAX_SIZE => chw[k] = v as usize,
            Some(v) => {
                return Err(errors::input_shape(
                    &input_name,
                    &format!("its {axis} {v} exceed netc's limit"),
                ))
            }
            None => {
                return Err(errors::input_shape(
                    &input_name,
                    &format!("its {axis} are symbolic or unknown"),
                ))
            }
        }
    }
    let in_shape = [batch, chw[0], chw[1], chw[2]];
    let converted = convert::convert(graph, opset, (&input_name, &in_shape))?;
    notes.extend(converted.notes.iter().cloned());

    // The declared output shapes, where the model gives them, must be what the layers compute.
    for (o, &v) in graph.output.iter().zip(&converted.outputs) {
        let name = o.name.clone().unwrap_or_default();
        let computed = &converted.values[v].shape;
        if let Some((_, declared)) = dims(o) {
            let fits = declared.len() == computed.len()
                && declared
                    .iter()
                    .zip(computed)
                    .skip(1)
                    .all(|(d, &c)| d.is_none_or(|d| d as usize == c));
            if !declared.is_empty() && !fits {
                return Err(errors::bad_output(
                    &name,
                    &format!("the model declares shape {declared:?}, but its layers compute {computed:?}"),
                ));
            }
        }
    }

    let producer = model.producer_name.clone().unwrap_or_default();
    let mut header = vec![format!(
        "Imported from {source} by netc import ({}opset {opset}).",
        if producer.is_empty() {
            String::new()
        } else {
            format!("produced by {producer}, ")
        }
    )];
    if batch != 1 {
        header.push(format!(
            "The model's batch size is {batch}: compile with --batch {batch}."
        ));
    }
    header.extend(notes.iter().map(|n| format!("Note: {n}.")));
    header.push(format!(
        "Weights: {} tensors, named <layer>.weight, .bias, .gamma, .beta, .mean, .var.",
        converted.weights.len()
    ));
    let text = emit::emit(&converted, &ident(net_name), &header);

    // The generated network must compile, compute the same shapes and take exactly these weights.
    let options = crate::Options {
        overrides: Vec::new(),
        batch,
    };
    let compiled = crate::compile_source("imported.net", &text, None, &options, Some(super::EXPORT_STAGE))
        .map_err(|f| errors::does_not_compile(&crate::diag::render(&f.sources, &f.diagnostics)))?;
    for (k, (&ix, &v)) in compiled.graph.outputs.iter().zip(&converted.outputs).enumerate() {
        let got = &compiled.graph.node(ix).shape.0;
        if got != &converted.values[v].shape {
            return Err(errors::does_not_compile(&format!(
                "output {k} has shape {got:?} in netc but {:?} by ONNX's rules",
                converted.values[v].shape
            )));
        }
    }
    converted
        .weights
        .check(&compiled.graph, "the imported weights")
        .map_err(|d| errors::does_not_compile(&crate::diag::render(&crate::source::SourceMap::new(), &[d])))?;
    Ok(Imported {
        text,
        weights: converted.weights,
        batch,
        notes,
    })
}
