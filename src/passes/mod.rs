//! Passes over the graph IR. Each pass is a unit with a name in its own file; [`PIPELINE`] lists
//! them in order, and [`run`] applies them, verifying the graph after each one, optionally
//! stopping after a named pass (`netc ir --after PASS`).
//!
//! The first [`ANALYSES`] passes annotate the elaborated graph (shapes, costs): their result is
//! the network as written, which the reference interpreter runs and the weights are checked
//! against. The passes after them optimize it for code generation.

pub mod cost;
pub mod dce;
pub mod fold_bn;
pub mod fuse;
pub mod fuse_blocks;
pub mod place;
pub mod plan;
pub mod shape;

use crate::ir::{verify, Graph};

/// A transformation or annotation of the graph.
pub trait Pass {
    /// The name `--after` accepts.
    fn name(&self) -> &'static str;
    /// Runs the pass. An error is a compiler bug (user errors are caught by elaboration).
    fn run(&self, graph: &mut Graph) -> Result<(), String>;
}

/// The passes, in the order they run.
pub const PIPELINE: &[&dyn Pass] = &[
    &shape::InferShapes,
    &cost::Cost,
    &dce::Dce,
    &fold_bn::FoldBn,
    &fuse::Fuse,
    &fuse_blocks::FuseBlocks,
    &place::Placement,
    &plan::Plan,
];

/// How many passes of [`PIPELINE`] analyse rather than optimize.
pub const ANALYSES: usize = 2;

/// The names `--after` accepts: `elaborate` (no pass) and every pass.
pub fn stage_names() -> Vec<&'static str> {
    std::iter::once("elaborate")
        .chain(PIPELINE.iter().map(|p| p.name()))
        .collect()
}

/// Runs the pipeline up to and including the pass named `after` (all of it for `None`).
pub fn run(graph: &mut Graph, after: Option<&str>) -> Result<(), String> {
    verify::verify(graph).map_err(|e| format!("after elaboration: {e}"))?;
    run_range(graph, 0, PIPELINE.len(), after)
}

/// Runs passes `from..to` of the pipeline, stopping after the pass named `after`.
pub fn run_range(graph: &mut Graph, from: usize, to: usize, after: Option<&str>) -> Result<(), String> {
    if after == Some("elaborate") {
        return Ok(());
    }
    for pass in &PIPELINE[from..to] {
        pass.run(graph).map_err(|e| format!("in pass `{}`: {e}", pass.name()))?;
        verify::verify(graph).map_err(|e| format!("after pass `{}`: {e}", pass.name()))?;
        if after == Some(pass.name()) {
            break;
        }
    }
    Ok(())
}

/// Whether `stage` names an optimization pass (one after the analyses).
pub fn is_optimization(stage: &str) -> bool {
    PIPELINE[ANALYSES..].iter().any(|p| p.name() == stage)
}
