//! Running a compiled network: its weights, its inputs and outputs, and the reference
//! interpreter.
//!
//! - `weights.rs` the named tensors of every node, seeded initialization, safetensors files;
//! - `input.rs` images, `.npy` files, random inputs, top-K;
//! - `reference.rs` the slow, obviously correct interpreter that is the numerics oracle;
//! - `executor.rs` runs the generated kernels over the arena; `pool.rs` its worker threads;
//!   `pages.rs` the arena's and the weights' memory, on huge pages where the system allows;
//! - `bench.rs` compile time, latency statistics and per-node profiles of the generated code;
//! - `errors.rs` the diagnostics of all of the above.

pub mod bench;
pub mod errors;
pub mod executor;
pub mod input;
mod interleave;
pub mod pages;
pub mod pool;
pub mod reference;
pub mod tensor;
pub mod weights;

pub use tensor::Tensor;
pub use weights::Weights;
