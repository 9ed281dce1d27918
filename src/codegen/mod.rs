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
use crate::runtime::pages::Pages;
use crate::runtime::{errors, Weights};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder, Signature, UserFuncName};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, FuncId, Linkage, Module, ModuleReloc};
use emit::Emit;
use host::HostFn;
use kernels::Kernel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

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
    /// The widest this CPU runs: AVX-512F, else AVX2 + FMA, else the f32x4 Cranelift tiles; but
    /// AVX2 for the matrix multiply and for some direct convolutions where 512-bit FMAs are not
    /// faster than 256-bit ones (see [`Isa::gemm_level`] and [`Isa::direct_level`]).
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

    /// Whether this CPU's 512-bit FMAs do twice the work of its 256-bit ones per cycle. AMD's
    /// cores up to family 19h (Zen 4) split each 512-bit operation into two 256-bit halves, so
    /// the peak is the same, and on a Zen 4 EPYC the 12x32 AVX-512 matrix-multiply tile ran
    /// slower than the 6x16 AVX2 one on every 1x1 layer measured (MobileNet v1's at 88-113
    /// GFLOP/s against 109-115, ShuffleNet's grouped ones at 0.082 ms against 0.069). Other
    /// x86-64 CPUs with AVX-512F are taken to have the full width. Read once (`cpuid` may trap
    /// to the hypervisor in a virtual machine).
    pub fn full_width_512() -> bool {
        static FULL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FULL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::x86_64::__cpuid;
                let (vendor, signature) = (__cpuid(0), __cpuid(1).eax);
                // "AuthenticAMD" in EBX, EDX, ECX.
                let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
                let base = (signature >> 8) & 0xf;
                let family = if base == 0xf {
                    base + ((signature >> 20) & 0xff)
                } else {
                    base
                };
                !(amd && family <= 0x19)
            }
            #[cfg(not(target_arch = "x86_64"))]
            false
        })
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

    /// The level of the matrix multiply's tile: [`Isa::level`], except that `Native` takes the
    /// AVX2 tile over the AVX-512 one on a CPU whose 512-bit FMAs are not wider in throughput
    /// ([`Level::full_width_512`]). `Avx512` always takes the AVX-512 tile where it runs.
    pub fn gemm_level(self) -> Level {
        match self.level() {
            Level::Avx512 if self == Isa::Native && !Level::full_width_512() => Level::Avx2,
            level => level,
        }
    }

    /// The level of a dense direct convolution of `outputs` channels: [`Isa::level`], except
    /// that `Native` takes the AVX2 row function over the AVX-512 one on a CPU whose 512-bit
    /// FMAs are split in two when `outputs` is not a multiple of 16. The AVX-512 tiles then
    /// leave lanes idle that cost as much as used ones, and the AVX2 function has a 3-vector
    /// block for 24 channels: on a Zen 4 EPYC the 24-channel stems of ShuffleNet and ShuffleNet
    /// v2 took 0.172-0.177 ms at AVX2 against 0.204-0.205 at AVX-512, while MobileNet v1's
    /// 32-channel stem took 0.205 at AVX-512 against 0.245 at AVX2 (best of three profiles).
    pub fn direct_level(self, outputs: usize) -> Level {
        match self.level() {
            Level::Avx512 if self == Isa::Native && !Level::full_width_512() && !outputs.is_multiple_of(16) => {
                Level::Avx2
            }
            level => level,
        }
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
///
/// [`define`](KernelModule::define) generates a kernel's Cranelift IR on the calling thread and
/// queues it; compiler threads (one per other core, started with the first kernel) turn queued
/// functions into machine code while the caller generates the next ones, and
/// [`finish`](KernelModule::finish) compiles what is left on the caller's thread too, then places
/// the code in the module in definition order. The code of a kernel does not depend on which
/// thread compiled it.
pub struct KernelModule {
    module: JITModule,
    isa: OwnedTargetIsa,
    sig: Signature,
    /// Host functions declared so far, by symbol (each is declared when the first kernel that
    /// calls it is defined, so the function ids of modules without it do not change).
    hosts: Vec<(&'static str, FuncId)>,
    fctx: FunctionBuilderContext,
    compilers: Option<Compilers>,
    /// Kernels defined so far.
    defined: usize,
}

/// A function's machine code, ready to be placed in the module.
struct Code {
    bytes: Vec<u8>,
    alignment: u64,
    relocs: Vec<ModuleReloc>,
}

/// A function to compile: its id, its name (for errors) and its IR.
type Job = (FuncId, String, Function);

/// The compiler threads of a [`KernelModule`] and the queues between them and the caller.
struct Compilers {
    /// Functions to compile; `None` once every kernel is defined.
    jobs: Option<mpsc::Sender<Job>>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    results: mpsc::Receiver<(FuncId, Result<Code, String>)>,
    /// Kept to hand to the caller's own compiler loop in `finish`.
    results_to: mpsc::Sender<(FuncId, Result<Code, String>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Set when the module is dropped before `finish`: queued functions are skipped.
    cancel: Arc<AtomicBool>,
}

impl Compilers {
    fn start(isa: &OwnedTargetIsa) -> Compilers {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let (results_to, results) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let extra = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
        let threads = (0..extra)
            .map_while(|i| {
                let (isa, queue, out, cancel) = (isa.clone(), queue.clone(), results_to.clone(), cancel.clone());
                std::thread::Builder::new()
                    .name(format!("netc-compile-{i}"))
                    .spawn(move || compile_queued(&*isa, &queue, &out, &cancel))
                    .ok()
            })
            .collect();
        Compilers {
            jobs: Some(jobs),
            queue,
            results,
            results_to,
            threads,
            cancel,
        }
    }

    /// Closes the queue and waits for the compiler threads.
    fn join(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            // The threads only run the compiler, whose errors are results, not panics.
            let _ = t.join();
        }
    }
}

impl Drop for Compilers {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.join();
    }
}

/// Compiles queued functions until the queue is closed and empty, sending each result.
fn compile_queued(
    isa: &dyn TargetIsa,
    queue: &Mutex<mpsc::Receiver<Job>>,
    out: &mpsc::Sender<(FuncId, Result<Code, String>)>,
    cancel: &AtomicBool,
) {
    let mut ctx = cranelift_codegen::Context::new();
    loop {
        // Hold the lock only to take a job, not while compiling it.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((id, name, func)) = job else { return };
        if cancel.load(Ordering::Relaxed) {
            continue;
        }
        ctx.clear();
        ctx.func = func;
        let code = match ctx.compile(isa, &mut ControlPlane::default()) {
            Err(e) => Err(format!("{name}: {:?}", e.inner)),
            Ok(_) => {
                let compiled = ctx.compiled_code().expect("compiled just now");
                Ok(Code {
                    bytes: compiled.code_buffer().to_vec(),
                    alignment: compiled.buffer.alignment as u64,
                    relocs: compiled
                        .buffer
                        .relocs()
                        .iter()
                        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
                        .collect(),
                })
            }
        };
        if out.send((id, code)).is_err() {
            return;
        }
    }
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
        let mut builder = JITBuilder::with_isa(isa.clone(), default_libcall_names());
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
        Ok(KernelModule {
            module,
            isa,
            sig,
            hosts: Vec::new(),
            fctx: FunctionBuilderContext::new(),
            compilers: None,
            defined: 0,
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

    /// Generates the Cranelift IR of one kernel and queues it for compilation; with `keep_clif`,
    /// also returns the IR. `name` is the kernel's symbol and names it in errors.
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
        let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), self.sig.clone());
        {
            let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
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
        let clif = keep_clif.then(|| func.display().to_string());
        let compilers = self.compilers.get_or_insert_with(|| Compilers::start(&self.isa));
        let queued = compilers
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((id, name.to_string(), func)).is_ok());
        if !queued {
            return Err(format!("{name}: the compiler threads stopped"));
        }
        self.defined += 1;
        Ok((id, clif))
    }

    /// Compiles every queued kernel (on this thread and the compiler threads), makes the code
    /// executable, and returns the module (which owns the code) and the entry point of each of
    /// `ids`.
    pub fn finish(mut self, ids: &[FuncId]) -> Result<(JITModule, Vec<KernelFn>), String> {
        let mut codes = Vec::with_capacity(self.defined);
        if let Some(mut c) = self.compilers.take() {
            c.jobs = None;
            compile_queued(&*self.isa, &c.queue, &c.results_to, &c.cancel);
            c.join();
            codes.extend(c.results.try_iter());
        }
        if codes.len() != self.defined {
            return Err(format!("{} of {} kernels were compiled", codes.len(), self.defined));
        }
        // Place the code in definition order, whichever thread finished first.
        codes.sort_by_key(|(id, _)| *id);
        for (id, code) in codes {
            let code = code?;
            self.module
                .define_function_bytes(id, code.alignment, &code.bytes, &code.relocs)
                .map_err(|e| format!("{e:?}"))?;
        }
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
fn allocate_arena(len: usize, batch: usize) -> Result<Pages, Diagnostic> {
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
    Pages::zeroed(len).ok_or_else(|| too_large("the memory cannot be allocated"))
}

/// Kernels this far back (or fewer) may prefetch a later kernel's weights.
const PREFETCH_REACH: usize = 3;

/// Gives the weights of every kernel that streams them from memory (a classifier at batch 1:
/// 4-5 MB read once per run, long evicted since the previous run) to the nearest of the
/// [`PREFETCH_REACH`] kernels before it that can prefetch while it computes (the last 1x1
/// layer, which is bound by its multiply-adds).
fn prefetch_streamed_weights(kernels: &mut [(String, Box<dyn kernels::Kernel>)]) {
    for i in 0..kernels.len() {
        let Some((offset, floats)) = kernels[i].1.streamed_weights() else {
            continue;
        };
        let earlier = i.saturating_sub(PREFETCH_REACH)..i;
        if let Some(j) = earlier.rev().find(|&j| kernels[j].1.prefetch_capacity() > 0) {
            kernels[j].1.prefetch_ahead(offset, floats.div_ceil(16));
        }
    }
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
    // Room for every parameter (kernels pack them once, with some padding), so that packing
    // does not copy the buffer over and over as it grows.
    let params: usize = weights.iter().map(|(_, t)| t.data.len() + 16).sum();
    let mut pack = kernels::Packer {
        data: Vec::with_capacity(params + params / 8),
    };
    let mut lowered = Vec::new();
    for ix in graph.topo_order().expect("the verifier rejects cycles") {
        let node = graph.node(ix);
        let kernels = kernels::lower(graph, ix, weights, &mut pack, options.isa);
        let count = kernels.len();
        for (i, kernel) in kernels.into_iter().enumerate() {
            // Gathers of staged inputs run before the node's own kernel, under their own names.
            let name = if i + 1 == count {
                node.name.clone()
            } else {
                format!("{}.gather{i}", node.name)
            };
            lowered.push((name, kernel));
        }
    }
    prefetch_streamed_weights(&mut lowered);
    let mut pending = Vec::new();
    let mut clif = Vec::new();
    for (name, kernel) in lowered {
        let (id, text) = module
            .define(&format!("k{}", pending.len()), kernel.as_ref(), options.keep_clif)
            .map_err(|e| fail(&name, e))?;
        clif.extend(text.map(|t| (name.clone(), t)));
        let hosts = kernel.host_fns().iter().map(|h| h.symbol).collect();
        pending.push((id, name, kernel.items(), kernel.work_per_item(), hosts, kernel.kind()));
    }
    let ids: Vec<FuncId> = pending.iter().map(|p| p.0).collect();
    let (module, fns) = module.finish(&ids).map_err(|e| fail("finalizing", e))?;
    let steps = pending
        .into_iter()
        .zip(fns)
        .map(|((_, name, items, work_per_item, hosts, kind), f)| Step {
            name,
            f,
            items,
            work_per_item,
            hosts,
            kind,
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
        Pages::from_vec(pack.data),
        arena,
        input,
        graph.node(graph.inputs[0]).shape.0.clone(),
        outputs,
        clif,
    ))
}

#[cfg(test)]
mod tests {
    use super::kernels::Kernel;
    use super::{prefetch_streamed_weights, Emit};
    use cranelift_codegen::ir::Value;
    use std::cell::Cell;
    use std::rc::Rc;

    /// What a probe was asked to prefetch.
    type Given = Rc<Cell<Option<(usize, usize)>>>;
    /// Named kernels, as the code generator holds them.
    type Kernels = Vec<(String, Box<dyn Kernel>)>;

    /// A kernel that only answers the prefetch questions and records what it was given.
    struct Probe {
        streams: Option<(usize, usize)>,
        capacity: usize,
        given: Given,
    }

    impl Kernel for Probe {
        fn items(&self) -> usize {
            1
        }
        fn work_per_item(&self) -> usize {
            1
        }
        fn emit(&self, _: &mut Emit, _: Value, _: Value) {}
        fn streamed_weights(&self) -> Option<(usize, usize)> {
            self.streams
        }
        fn prefetch_capacity(&self) -> usize {
            self.capacity
        }
        fn prefetch_ahead(&mut self, offset: usize, lines: usize) {
            self.given.set(Some((offset, lines.min(self.capacity))));
        }
    }

    fn probes(specs: &[(Option<(usize, usize)>, usize)]) -> (Kernels, Vec<Given>) {
        let given: Vec<_> = specs.iter().map(|_| Rc::new(Cell::new(None))).collect();
        let kernels = specs
            .iter()
            .zip(&given)
            .enumerate()
            .map(|(i, (&(streams, capacity), given))| {
                let probe = Probe {
                    streams,
                    capacity,
                    given: given.clone(),
                };
                (format!("k{i}"), Box::new(probe) as Box<dyn Kernel>)
            })
            .collect();
        (kernels, given)
    }

    #[test]
    fn streamed_weights_go_to_the_nearest_earlier_kernel_that_can_prefetch() {
        // A layer that can prefetch, one that cannot (a pooling), then a classifier streaming
        // 3200 floats (200 lines) from offset 160.
        let (mut kernels, given) = probes(&[(None, 1000), (None, 64), (None, 0), (Some((160, 3200)), 0)]);
        prefetch_streamed_weights(&mut kernels);
        assert_eq!(given[0].get(), None, "a farther kernel is not asked");
        assert_eq!(given[1].get(), Some((160, 64)), "the nearest one, within its capacity");
        assert_eq!(given[2].get(), None);
        assert_eq!(given[3].get(), None);
    }

    #[test]
    fn streamed_weights_beyond_reach_are_not_prefetched() {
        let (mut kernels, given) = probes(&[(None, 1000), (None, 0), (None, 0), (None, 0), (Some((0, 1600)), 0)]);
        prefetch_streamed_weights(&mut kernels);
        assert!(given.iter().all(|g| g.get().is_none()));
    }
}
