//! Code generation: every node of the graph becomes one Cranelift function, with every shape,
//! stride, padding and offset a constant.
//!
//! - `layout.rs` where each tensor lives in the arena (channels-last), as the `place` and `plan`
//!   passes decided;
//! - `params.rs` the parameters kernels pack (folded batchnorms, permuted channels);
//! - `emit.rs` helpers for writing kernels;
//! - `kernels/` one file per kernel family, each packing its weights in the order it reads them.
//!
//! [`compile`] returns an [`Executable`](crate::runtime::executor::Executable): the finalized
//! functions in execution order, the packed weights and the arena size.

pub mod emit;
pub mod kernels;
pub mod layout;
pub mod params;

use crate::diag::Diagnostic;
use crate::ir::Graph;
use crate::runtime::executor::{Executable, KernelFn, Step};
use crate::runtime::{errors, Weights};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature, UserFuncName};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module};
use emit::Emit;
use kernels::Kernel;

/// Options of code generation.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep the Cranelift IR text of every kernel (for `netc clif`).
    pub keep_clif: bool,
    /// Which instruction set the matrix multiply uses.
    pub isa: Isa,
}

/// The instruction set of the matrix multiply's register tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isa {
    /// The widest tile this CPU runs: the AVX2 + FMA micro-kernel on x86-64 CPUs that have
    /// both, the f32x4 Cranelift tile otherwise.
    #[default]
    Native,
    /// The f32x4 Cranelift tile everywhere.
    Baseline,
}

impl Isa {
    /// Whether the matrix multiply uses the AVX2 + FMA micro-kernel.
    pub fn wide(self) -> bool {
        self == Isa::Native && kernels::avx2::available()
    }

    /// The instruction set that actually runs: `"avx2"` or `"baseline"`.
    pub fn name(self) -> &'static str {
        if self.wide() {
            "avx2"
        } else {
            "baseline"
        }
    }
}

extern "C" fn host_expf(x: f32) -> f32 {
    x.exp()
}

/// A JIT module set up for kernels: host ISA flags, the kernel signature
/// `fn(arena, weights, begin, end)`, and the host functions kernels call (`expf`, and on x86-64
/// CPUs with AVX2 and FMA the matrix multiply's micro-kernel, see [`kernels::avx2`]).
pub struct KernelModule {
    module: JITModule,
    sig: Signature,
    expf: FuncId,
    /// Whether the micro-kernel is registered (this CPU runs it).
    wide: bool,
    /// The micro-kernel, declared when the first kernel that calls it is defined (so the
    /// function ids of modules without one do not change).
    gemm_wide: Option<FuncId>,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
}

impl KernelModule {
    pub fn new() -> Result<KernelModule, String> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        flags.set("is_pic", "false").map_err(|e| e.to_string())?;
        flags
            .set("use_colocated_libcalls", "false")
            .map_err(|e| e.to_string())?;
        flags
            .set("enable_verifier", if cfg!(debug_assertions) { "true" } else { "false" })
            .map_err(|e| e.to_string())?;
        let isa = cranelift_native::builder()?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())?;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.symbol("netc_expf", host_expf as *const u8);
        #[cfg(target_arch = "x86_64")]
        let wide = kernels::avx2::available();
        #[cfg(target_arch = "x86_64")]
        if wide {
            builder.symbol(kernels::avx2::SYMBOL, kernels::avx2::address());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let wide = false;
        let mut module = JITModule::new(builder);
        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        for ty in [ptr, ptr, types::I64, types::I64] {
            sig.params.push(AbiParam::new(ty));
        }
        let mut exp_sig = module.make_signature();
        exp_sig.params.push(AbiParam::new(types::F32));
        exp_sig.returns.push(AbiParam::new(types::F32));
        let expf = module
            .declare_function("netc_expf", Linkage::Import, &exp_sig)
            .map_err(|e| e.to_string())?;
        let ctx = module.make_context();
        Ok(KernelModule {
            module,
            sig,
            expf,
            wide,
            gemm_wide: None,
            ctx,
            fctx: FunctionBuilderContext::new(),
        })
    }

    /// The imported micro-kernel of the wide matrix multiply (see the calling convention in
    /// [`kernels::avx2`]), declared on first use.
    fn gemm_wide(&mut self) -> Result<FuncId, String> {
        if let Some(id) = self.gemm_wide {
            return Ok(id);
        }
        if !self.wide {
            return Err("the AVX2 micro-kernel is not available on this CPU".into());
        }
        let ptr = self.module.target_config().pointer_type();
        let mut sig = self.module.make_signature();
        let params = [
            ptr,
            types::I64,
            ptr,
            types::I64,
            types::I64,
            types::I64,
            ptr,
            ptr,
            ptr,
            ptr,
            types::I64,
            ptr,
            types::I64,
            types::I64,
            types::F32,
        ];
        for ty in params {
            sig.params.push(AbiParam::new(ty));
        }
        let id = self
            .module
            .declare_function(kernels::avx2::SYMBOL, Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        self.gemm_wide = Some(id);
        Ok(id)
    }

    /// Generates the function of one kernel; with `keep_clif`, also returns its Cranelift IR.
    pub fn define(
        &mut self,
        name: &str,
        kernel: &dyn Kernel,
        keep_clif: bool,
    ) -> Result<(FuncId, Option<String>), String> {
        let id = self
            .module
            .declare_function(name, Linkage::Local, &self.sig)
            .map_err(|e| e.to_string())?;
        let gemm_wide = if kernel.calls_wide_gemm() {
            Some(self.gemm_wide()?)
        } else {
            None
        };
        let target = self.module.target_config();
        self.ctx.func.signature = self.sig.clone();
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let expf = self.module.declare_func_in_func(self.expf, b.func);
            let gemm_wide = match (kernel.calls_wide_gemm(), gemm_wide) {
                (true, Some(id)) => Some(self.module.declare_func_in_func(id, b.func)),
                _ => None,
            };
            let mut e = Emit {
                b: &mut b,
                arena: p[0],
                weights: p[1],
                expf,
                gemm_wide,
            };
            kernel.emit(&mut e, p[2], p[3]);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(target);
        }
        let clif = keep_clif.then(|| self.ctx.func.display().to_string());
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| format!("{e:?}"))?;
        self.module.clear_context(&mut self.ctx);
        Ok((id, clif))
    }

    /// Makes every defined function executable; returns the module (which owns the code) and
    /// the entry point of each of `ids`.
    pub fn finish(mut self, ids: &[FuncId]) -> Result<(JITModule, Vec<KernelFn>), String> {
        self.module.finalize_definitions().map_err(|e| e.to_string())?;
        let fns = ids
            .iter()
            .map(|&id| {
                let code = self.module.get_finalized_function(id);
                // SAFETY: every function was declared with the kernel signature.
                unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
            })
            .collect();
        Ok((self.module, fns))
    }
}

/// Generates one kernel on its own (for tests of a kernel family).
pub fn compile_kernel(kernel: &dyn Kernel) -> Result<(JITModule, KernelFn), String> {
    let mut m = KernelModule::new()?;
    let (id, _) = m.define("kernel", kernel, false)?;
    let (module, fns) = m.finish(&[id])?;
    Ok((module, fns[0]))
}

/// Largest activation arena the JIT allocates, in bytes.
pub const MAX_ARENA_BYTES: usize = 8 << 30;

/// The zeroed arena, or a diagnostic if it is too large or cannot be allocated.
fn allocate_arena(len: usize, batch: usize) -> Result<Vec<f32>, Diagnostic> {
    let bytes = len.saturating_mul(4);
    let too_large = |why: &str| {
        Diagnostic::error(
            "E0511",
            format!("the network needs {bytes} bytes of activation memory at batch {batch}"),
        )
        .with_note(why.to_string())
        .with_help("use a smaller --batch or a lower resolution")
    };
    if bytes > MAX_ARENA_BYTES {
        return Err(too_large(&format!("the limit is {MAX_ARENA_BYTES} bytes")));
    }
    let mut arena = Vec::new();
    arena
        .try_reserve_exact(len)
        .map_err(|_| too_large("the memory cannot be allocated"))?;
    arena.resize(len, 0.0);
    Ok(arena)
}

/// Generates and finalizes the code of every node of a placed and planned `graph` (see
/// [`crate::Compiled::planned`]), with `weights` (checked against the unoptimized graph) packed in.
pub fn compile(graph: &Graph, weights: &Weights, options: &Options) -> Result<Executable, Diagnostic> {
    let fail = |what: &str, e: String| errors::internal(&format!("{what}: {e}"));
    let len = graph
        .arena
        .ok_or_else(|| fail("code generation", "the graph is not planned".into()))?;
    let mut module = KernelModule::new().map_err(|e| fail("cannot set up the JIT", e))?;
    let arena = allocate_arena(len, graph.node(graph.inputs[0]).shape.0[0])?;
    let mut pack = kernels::Packer::default();
    let mut pending = Vec::new();
    let mut clif = Vec::new();
    for ix in graph.topo_order().expect("the verifier rejects cycles") {
        let node = graph.node(ix);
        let lowered = kernels::lower(graph, ix, weights, &mut pack, options.isa);
        let count = lowered.len();
        for (i, kernel) in lowered.into_iter().enumerate() {
            // Gathers of staged inputs run before the node's own kernel, under their own names.
            let name = if i + 1 == count {
                node.name.clone()
            } else {
                format!("{}.gather{i}", node.name)
            };
            let (id, text) = module
                .define(&format!("k{}", pending.len()), kernel.as_ref(), options.keep_clif)
                .map_err(|e| fail(&name, e))?;
            clif.extend(text.map(|t| (name.clone(), t)));
            pending.push((id, name, kernel.items(), kernel.work_per_item()));
        }
    }
    let ids: Vec<FuncId> = pending.iter().map(|p| p.0).collect();
    let (module, fns) = module.finish(&ids).map_err(|e| fail("finalizing", e))?;
    let steps = pending
        .into_iter()
        .zip(fns)
        .map(|((_, name, items, work_per_item), f)| Step {
            name,
            f,
            items,
            work_per_item,
        })
        .collect();
    let input = layout::buf_at(graph, graph.inputs[0], 0);
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| (layout::permuted(graph, o).0, graph.node(o).shape.0.clone()))
        .collect();
    Ok(Executable::new(
        module,
        steps,
        pack.data,
        arena,
        input,
        graph.node(graph.inputs[0]).shape.0.clone(),
        outputs,
        clif,
    ))
}
