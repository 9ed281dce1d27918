//! Diagnostic constructors of ONNX export and decoding (codes `E06xx`).

use crate::diag::Diagnostic;

pub fn model_too_large(net: &str, bytes: u64, limit: u64) -> Diagnostic {
    Diagnostic::error(
        "E0601",
        format!("the ONNX model of `{net}` needs {bytes} bytes, more than the {limit} bytes a protobuf file can hold"),
    )
    .with_note("netc stores the weights inside the model file; ONNX external data files are not supported")
    .with_help("export a smaller configuration of the network (`--set`)")
}

pub fn not_a_model(source: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0602", format!("`{source}` is not a valid ONNX model: {reason}"))
}
