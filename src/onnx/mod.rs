//! ONNX, the standard interchange format for neural networks: the schema's message types, and the
//! export of a network with its weights as an ONNX model, so that ONNX Runtime, Netron and other
//! tools can open it.
//!
//! - `proto.rs` the message types of the ONNX schema (`proto/onnx.proto`, vendored from the onnx
//!   project), generated with prost; plain data, shared by everything that reads or writes ONNX.
//!   Regenerate it with `scripts/gen_onnx_proto.sh` (no `protoc` needed);
//! - `export.rs` the graph IR and its weights as a `ModelProto`: one ONNX node per IR node (three
//!   for a channel shuffle), named after it, with the weights as initializers under their netc
//!   names;
//! - `errors.rs` the diagnostics of all of the above.
//!
//! Export takes the unoptimized IR, the graph as it stands after the [`EXPORT_STAGE`] pass, so a
//! peer sees batchnorm, shuffle and concat as ONNX operators and does its own optimizing.

pub mod errors;
pub mod export;
pub mod import;
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto;

pub use export::{check_size, export, IR_VERSION, OPSET};

use crate::diag::Diagnostic;
use prost::Message;
use std::path::Path;

/// The pipeline stage whose graph is exported: the last one before any optimization.
pub const EXPORT_STAGE: &str = "cost";

/// The model as protobuf bytes.
pub fn encode(model: &proto::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Parses protobuf bytes as a model; `source` names them in the error.
pub fn decode(bytes: &[u8], source: &str) -> Result<proto::ModelProto, Diagnostic> {
    proto::ModelProto::decode(bytes).map_err(|e| errors::not_a_model(source, &e.to_string()))
}

/// Writes the model to `path`.
pub fn write(model: &proto::ModelProto, path: &Path) -> Result<(), Diagnostic> {
    std::fs::write(path, encode(model))
        .map_err(|e| crate::runtime::errors::unwritable(&path.display().to_string(), &e.to_string()))
}
