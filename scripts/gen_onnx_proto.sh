#!/usr/bin/env bash
# Regenerates src/onnx/proto.rs (the ONNX message types) from proto/onnx.proto. Needs only cargo:
# the schema is compiled by protox, a protobuf compiler written in Rust, not by protoc. Run it
# after replacing proto/onnx.proto with a newer schema, and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p src/onnx
cargo run --quiet --release --manifest-path tools/onnx-proto-gen/Cargo.toml -- "$PWD"
