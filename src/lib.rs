//! netc: a compiler for `.net` files, a small language for convolutional networks.
//!
//! The pipeline runs one way: source text is parsed ([`syntax`]) into an AST, elaborated
//! ([`elab`]) into the graph IR ([`ir`]), and transformed by the passes ([`passes`]). Every stage's
//! output can be printed; the graph can be run ([`runtime`], [`codegen`]) or exported as an ONNX
//! model ([`onnx`]). This module is the public entry point: compile a file or a string with
//! hyperparameter overrides, stopping after any stage.

pub mod codegen;
pub mod diag;
pub mod elab;
pub mod ir;
pub mod load;
pub mod onnx;
pub mod passes;
pub mod report;
pub mod runtime;
pub mod source;
pub mod syntax;

use diag::{Diagnostic, Failure};
use ir::Graph;
use source::{SourceMap, Span};
use std::path::Path;

pub use elab::Options;

/// Largest total size of a network's weights, in bytes of f32.
pub const MAX_WEIGHT_BYTES: u64 = 4 << 30;

/// A compiled network: its IR and the sources it came from.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub sources: SourceMap,
    /// The network as written, with shapes and costs: what the reference interpreter runs and
    /// the weights are checked against.
    pub graph: Graph,
    /// The graph after the optimization passes (up to the requested one); `None` when
    /// compilation stopped before them.
    pub optimized: Option<Graph>,
}

fn internal(message: String) -> Diagnostic {
    Diagnostic::error("E0900", format!("internal compiler error: {message}"))
        .with_note("this is a bug in netc, not in the network description")
}

impl Compiled {
    /// The shape of the network's input, `[N, C, H, W]`.
    pub fn input_shape(&self) -> &[usize] {
        &self.graph.node(self.graph.inputs[0]).shape.0
    }

    /// Every tensor the network's weights must provide.
    pub fn expected_weights(&self) -> Vec<runtime::weights::Spec> {
        runtime::weights::expected(&self.graph)
    }

    /// The seeded initialization of the network's weights.
    pub fn init_weights(&self, seed: u64) -> runtime::Weights {
        runtime::Weights::init(&self.graph, seed)
    }

    /// Loads weights from a safetensors file, checked against the network.
    pub fn load_weights(&self, path: &Path) -> Result<runtime::Weights, Diagnostic> {
        runtime::Weights::load(path, &self.graph)
    }

    /// Runs the network with the reference interpreter; returns one tensor per output.
    pub fn run_reference(
        &self,
        weights: &runtime::Weights,
        input: &runtime::Tensor,
    ) -> Result<Vec<runtime::Tensor>, Diagnostic> {
        weights.check(&self.graph, "the weights")?;
        runtime::reference::run(&self.graph, weights, std::slice::from_ref(input))
    }

    /// The graph as far as compilation went: the optimized one if the optimizations ran.
    pub fn latest(&self) -> &Graph {
        self.optimized.as_ref().unwrap_or(&self.graph)
    }

    /// The fully optimized and planned graph (running the remaining passes if compilation
    /// stopped early).
    pub fn planned(&self) -> Result<std::borrow::Cow<'_, Graph>, Diagnostic> {
        match &self.optimized {
            Some(g) if g.arena.is_some() => Ok(std::borrow::Cow::Borrowed(g)),
            _ => {
                let mut g = self.graph.clone();
                passes::run_range(&mut g, passes::ANALYSES, passes::PIPELINE.len(), None).map_err(internal)?;
                Ok(std::borrow::Cow::Owned(g))
            }
        }
    }

    /// Generates native code for the optimized network with `weights` packed in.
    pub fn compile_jit(
        &self,
        weights: &runtime::Weights,
        options: &codegen::Options,
    ) -> Result<runtime::executor::Executable, Diagnostic> {
        weights.check(&self.graph, "the weights")?;
        codegen::compile(self.planned()?.as_ref(), weights, options)
    }

    /// The network as written (the unoptimized graph, with batchnorms, shuffles and concats as
    /// ONNX operators) and `weights` as an ONNX model.
    pub fn export_onnx(&self, weights: &runtime::Weights) -> Result<onnx::proto::ModelProto, Diagnostic> {
        onnx::export(&self.graph, weights)
    }

    /// Whether the network's first output already is a probability distribution (ends in softmax).
    pub fn outputs_probabilities(&self) -> bool {
        self.graph
            .outputs
            .first()
            .is_some_and(|&o| self.graph.node(o).op == ir::op::Op::Softmax)
    }
}

/// Compiles source text. `name` is shown in diagnostics; includes are resolved against `dir`
/// (the current directory when `None`). `after` stops the pipeline after the named stage
/// (see [`passes::stage_names`]).
pub fn compile_source(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    options: &Options,
    after: Option<&str>,
) -> Result<Compiled, Failure> {
    compile_source_with(name, text, dir, options, &ir::PassOptions::default(), after)
}

/// [`compile_source`] with the given choices of the optimization passes (such as turning block
/// fusion off).
pub fn compile_source_with(
    name: &str,
    text: &str,
    dir: Option<&Path>,
    options: &Options,
    passes_options: &ir::PassOptions,
    after: Option<&str>,
) -> Result<Compiled, Failure> {
    let mut sources = SourceMap::new();
    let result = (|| {
        let program = load::load(&mut sources, name, text.to_string(), dir)?;
        let mut graph = elab::elaborate(&program.files, Span::new(0, 0, 0), options)?;
        graph.options = passes_options.clone();
        let weight_bytes: u64 = runtime::weights::expected(&graph)
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64 * 4)
            .sum();
        if weight_bytes > MAX_WEIGHT_BYTES {
            return Err(elab::errors::weights_too_large(
                &graph.name,
                weight_bytes,
                MAX_WEIGHT_BYTES,
            ));
        }
        let optimize = after.is_none_or(passes::is_optimization);
        let analyses = passes::PIPELINE[passes::ANALYSES - 1].name();
        passes::run(&mut graph, if optimize { Some(analyses) } else { after }).map_err(internal)?;
        let optimized = if optimize {
            let mut o = graph.clone();
            passes::run_range(&mut o, passes::ANALYSES, passes::PIPELINE.len(), after).map_err(internal)?;
            Some(o)
        } else {
            None
        };
        Ok((graph, optimized))
    })();
    match result {
        Ok((graph, optimized)) => Ok(Compiled {
            sources,
            graph,
            optimized,
        }),
        Err(d) => Err(Failure {
            sources,
            diagnostics: vec![d],
        }),
    }
}

/// Compiles a file from disk.
pub fn compile_file(path: &Path, options: &Options, after: Option<&str>) -> Result<Compiled, Failure> {
    compile_file_with(path, options, &ir::PassOptions::default(), after)
}

/// [`compile_file`] with the given choices of the optimization passes.
pub fn compile_file_with(
    path: &Path,
    options: &Options,
    passes_options: &ir::PassOptions,
    after: Option<&str>,
) -> Result<Compiled, Failure> {
    let name = path.display().to_string();
    let text = load::read_source(path).map_err(|e| Failure {
        sources: SourceMap::new(),
        diagnostics: vec![Diagnostic::error("E0100", format!("cannot read `{name}`: {e}"))],
    })?;
    compile_source_with(&name, &text, path.parent(), options, passes_options, after)
}
