//! Code generation: every node of the graph becomes one Cranelift function, with every shape,
//! stride, padding and offset a constant.
//!
//! - `layout.rs` where each tensor lives in the arena (channels-last), as the `place` and `plan`
//!   passes decided;
//! - `params.rs` the parameters kernels pack (folded batchnorms, permuted channels);
//! - `emit.rs` helpers for writing kernels;
//! - `host.rs` the Rust functions generated code calls (wide register tiles, `expf`);
//! - `kernels/` one file per kernel family, each packing its weights in the order it reads them.
//!
//! [`compile`] returns an [`Executable`](crate::runtime::executor::Executable): the finalized
//! functions in execution order, the packed weights and the arena size.

pub mod emit;
pub mod host;
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
use host::HostFn;
use kernels::Kernel;

/// Options of code generation.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Keep the Cranelift IR text of every kernel (for `netc clif`).
    pub keep_clif: bool,
    /// Which instruction set the matrix multiply uses.
    pub isa: Isa,
}

/// Which instruction set the wide register tiles may use: a ceiling, resolved against this CPU's
/// features by [`Isa::level`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isa {
    /// The widest this CPU runs: AVX-512F, else AVX2 + FMA, else the f32x4 Cranelift tiles.
    #[default]
    Native,
    /// At most AVX-512F.
    Avx512,
    /// At most AVX2 + FMA (256-bit).
    Avx2,
    /// The f32x4 Cranelift tiles everywhere.
    Baseline,
}

/// The instruction set that actually runs, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

impl Level {
    /// The widest level this CPU runs.
    pub fn cpu() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            if kernels::avx2::available() {
                return if std::arch::is_x86_feature_detected!("avx512f") {
                    Level::Avx512
                } else {
                    Level::Avx2
                };
            }
        }
        Level::Baseline
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

impl Isa {
    /// The widest level this CPU runs that the choice allows.
    pub fn level(self) -> Level {
        let ceiling = match self {
            Isa::Native | Isa::Avx512 => Level::Avx512,
            Isa::Avx2 => Level::Avx2,
            Isa::Baseline => Level::Baseline,
        };
        ceiling.min(Level::cpu())
    }

    /// Whether this CPU runs everything the choice asks for (`Native` and `Baseline` always).
    pub fn supported(self) -> bool {
        match self {
            Isa::Native | Isa::Baseline => true,
            Isa::Avx512 => Level::cpu() >= Level::Avx512,
            Isa::Avx2 => Level::cpu() >= Level::Avx2,
        }
    }

    /// Whether the wide (AVX2 or wider) register tiles run.
    pub fn wide(self) -> bool {
        self.level() >= Level::Avx2
    }

    /// The instruction set that actually runs: `"avx512"`, `"avx2"` or `"baseline"`.
    pub fn name(self) -> &'static str {
        self.level().name()
    }

    /// Every choice this CPU supports, each resolving to a different level, widest first (what
    /// tests run every kernel on).
    pub fn testable() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Baseline]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }
}

/// A JIT module set up for kernels: host ISA flags, the kernel signature
/// `fn(arena, weights, begin, end)`, and the host functions kernels call (see [`host`]).
pub struct KernelModule {
    module: JITModule,
    sig: Signature,
    /// Host functions declared so far, by symbol (each is declared when the first kernel that
    /// calls it is defined, so the function ids of modules without it do not change).
    hosts: Vec<(&'static str, FuncId)>,
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
        for f in host::ALL {
            if let Some(address) = (f.address)() {
                builder.symbol(f.symbol, address);
            }
        }
        let module = JITModule::new(builder);
        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        for ty in [ptr, ptr, types::I64, types::I64] {
            sig.params.push(AbiParam::new(ty));
        }
        let ctx = module.make_context();
        Ok(KernelModule {
            module,
            sig,
            hosts: Vec::new(),
            ctx,
            fctx: FunctionBuilderContext::new(),
        })
    }

    /// The imported host function `f`, declared on first use.
    fn host(&mut self, f: &'static HostFn) -> Result<FuncId, String> {
        if let Some(&(_, id)) = self.hosts.iter().find(|(s, _)| *s == f.symbol) {
            return Ok(id);
        }
        if (f.address)().is_none() {
            return Err(format!("{} is not available on this CPU", f.symbol));
        }
        let ptr = self.module.target_config().pointer_type();
        let ty = |t: &host::Ty| match t {
            host::Ty::Ptr => ptr,
            host::Ty::I64 => types::I64,
            host::Ty::F32 => types::F32,
        };
        let mut sig = self.module.make_signature();
        sig.params.extend(f.params.iter().map(|t| AbiParam::new(ty(t))));
        sig.returns.extend(f.returns.iter().map(|t| AbiParam::new(ty(t))));
        let id = self
            .module
            .declare_function(f.symbol, Linkage::Import, &sig)
            .map_err(|e| e.to_string())?;
        self.hosts.push((f.symbol, id));
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
        let mut wanted = vec![&host::EXPF];
        wanted.extend(kernel.host_fns());
        let ids = wanted
            .iter()
            .map(|&f| Ok((f.symbol, self.host(f)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let target = self.module.target_config();
        self.ctx.func.signature = self.sig.clone();
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            let hosts = ids
                .iter()
                .map(|&(symbol, id)| (symbol, self.module.declare_func_in_func(id, b.func)))
                .collect();
            let mut e = Emit {
                b: &mut b,
                arena: p[0],
                weights: p[1],
                hosts,
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
