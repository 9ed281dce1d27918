//! Passes over the graph IR. Each pass is a unit with a name in its own file; [`PIPELINE`] lists
//! them in order, and [`run`] applies them, verifying the graph after each one, optionally
//! stopping after a named pass (`netc ir --after PASS`).

pub mod cost;
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
pub const PIPELINE: &[&dyn Pass] = &[&shape::InferShapes, &cost::Cost];

/// The names `--after` accepts: `elaborate` (no pass) and every pass.
pub fn stage_names() -> Vec<&'static str> {
    std::iter::once("elaborate")
        .chain(PIPELINE.iter().map(|p| p.name()))
        .collect()
}

/// Runs the pipeline up to and including the pass named `after` (all of it for `None`).
pub fn run(graph: &mut Graph, after: Option<&str>) -> Result<(), String> {
    verify::verify(graph).map_err(|e| format!("after elaboration: {e}"))?;
    if after == Some("elaborate") {
        return Ok(());
    }
    for pass in PIPELINE {
        pass.run(graph).map_err(|e| format!("in pass `{}`: {e}", pass.name()))?;
        verify::verify(graph).map_err(|e| format!("after pass `{}`: {e}", pass.name()))?;
        if after == Some(pass.name()) {
            break;
        }
    }
    Ok(())
}
