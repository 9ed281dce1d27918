//! Running generated code: a fixed sequence of kernel calls over one arena allocated at compile
//! time, with no allocation, locking or dispatch by op kind while the network runs.
//!
//! With several threads, each step's work items are split into equal contiguous chunks, one
//! per thread, when the step has enough work to gain; a spinning barrier separates steps. Each
//! item is computed by the same code whatever the split, so results do not depend on the thread
//! count.

use super::errors;
use super::tensor::Tensor;
use crate::codegen::layout::Buf;
use crate::diag::Diagnostic;
use cranelift_jit::JITModule;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A kernel: `(arena, weights, begin, end)`.
pub type KernelFn = unsafe extern "C" fn(*mut f32, *const f32, i64, i64);

/// One kernel call of the forward pass.
pub struct Step {
    pub name: String,
    pub f: KernelFn,
    pub items: usize,
    pub work_per_item: usize,
}

/// Work below which a step runs on one thread.
const PARALLEL_WORK: usize = 32 * 1024;

/// A compiled network, ready to run.
pub struct Executable {
    // Owns the code the steps point into; freed when the executable is dropped.
    module: Option<JITModule>,
    steps: Vec<Step>,
    weights: Vec<f32>,
    arena: Vec<f32>,
    input: Buf,
    input_shape: Vec<usize>,
    outputs: Vec<(Buf, Vec<usize>)>,
    clif: Vec<(String, String)>,
}

impl Drop for Executable {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: the steps are dropped with `self`; nothing calls the code afterwards.
            unsafe { m.free_memory() };
        }
    }
}

/// Raw pointers shared by the threads of one run.
#[derive(Clone, Copy)]
struct Shared {
    arena: *mut f32,
    weights: *const f32,
}

// SAFETY: threads write disjoint item ranges of each step and are separated by a barrier
// between steps, so no two threads touch the same element without synchronization.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Runs items `begin..end` of a step.
    ///
    /// # Safety
    /// The step's kernel must have been generated for this arena and weight layout; concurrent
    /// calls must cover disjoint items of the same step.
    unsafe fn call(&self, s: &Step, begin: usize, end: usize) {
        unsafe { (s.f)(self.arena, self.weights, begin as i64, end as i64) }
    }
}

/// A barrier that spins: the threads of a run meet after every step.
struct SpinBarrier {
    count: AtomicUsize,
    generation: AtomicUsize,
    threads: usize,
}

impl SpinBarrier {
    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
        } else {
            // Spin briefly (steps are short), then yield so that an oversubscribed machine
            // still makes progress.
            let mut spins = 0u32;
            while self.generation.load(Ordering::Acquire) == generation {
                if spins < 4096 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

impl Executable {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        module: JITModule,
        steps: Vec<Step>,
        weights: Vec<f32>,
        arena: Vec<f32>,
        input: Buf,
        input_shape: Vec<usize>,
        outputs: Vec<(Buf, Vec<usize>)>,
        clif: Vec<(String, String)>,
    ) -> Executable {
        Executable {
            module: Some(module),
            steps,
            weights,
            arena,
            input,
            input_shape,
            outputs,
            clif,
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The Cranelift IR of each kernel, if it was kept.
    pub fn clif(&self) -> &[(String, String)] {
        &self.clif
    }

    pub fn arena_bytes(&self) -> usize {
        self.arena.len() * 4
    }

    /// Runs the network on an NCHW input with `threads` threads; returns the outputs (NCHW).
    pub fn run(&mut self, input: &Tensor, threads: usize) -> Result<Vec<Tensor>, Diagnostic> {
        if input.shape != self.input_shape {
            return Err(errors::input_shape("input", &self.input_shape, &input.shape));
        }
        self.write_input(input);
        self.run_steps(threads.max(1));
        Ok(self
            .outputs
            .iter()
            .map(|(buf, shape)| read(&self.arena, buf, shape))
            .collect())
    }

    fn write_input(&mut self, x: &Tensor) {
        let b = self.input;
        let (h, w, c) = (b.h, b.w, b.c);
        for n in 0..b.n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        self.arena[b.at(n, y, xx) + ch] = x.data[((n * c + ch) * h + y) * w + xx];
                    }
                }
            }
        }
    }

    /// Times each step once (one thread), for profiling: `(name, seconds)`.
    pub fn profile(&mut self, input: &Tensor) -> Result<Vec<(String, f64)>, Diagnostic> {
        if input.shape != self.input_shape {
            return Err(errors::input_shape("input", &self.input_shape, &input.shape));
        }
        self.write_input(input);
        let shared = Shared {
            arena: self.arena.as_mut_ptr(),
            weights: self.weights.as_ptr(),
        };
        Ok(self
            .steps
            .iter()
            .map(|s| {
                let t = std::time::Instant::now();
                // SAFETY: the kernel was generated for this arena and weight layout.
                unsafe { shared.call(s, 0, s.items) };
                (s.name.clone(), t.elapsed().as_secs_f64())
            })
            .collect())
    }

    fn run_steps(&mut self, threads: usize) {
        let shared = Shared {
            arena: self.arena.as_mut_ptr(),
            weights: self.weights.as_ptr(),
        };
        let steps = &self.steps;
        if threads == 1 {
            for s in steps {
                // SAFETY: the kernel was generated for this arena and weight layout, and only
                // touches the elements its items cover, all inside the arena.
                unsafe { shared.call(s, 0, s.items) };
            }
            return;
        }
        let barrier = SpinBarrier {
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            threads,
        };
        let work = |t: usize| {
            for s in steps {
                let split = s.items >= threads && s.items * s.work_per_item >= PARALLEL_WORK;
                let (begin, end) = if split {
                    (s.items * t / threads, s.items * (t + 1) / threads)
                } else if t == 0 {
                    (0, s.items)
                } else {
                    (0, 0)
                };
                if begin < end {
                    // SAFETY: as above; threads run disjoint item ranges of the same step.
                    unsafe { shared.call(s, begin, end) };
                }
                barrier.wait();
            }
        };
        std::thread::scope(|scope| {
            for t in 1..threads {
                let work = &work;
                scope.spawn(move || work(t));
            }
            work(0);
        });
    }
}

/// Reads an NHWC buffer back as an NCHW (or NF) tensor.
fn read(arena: &[f32], b: &Buf, shape: &[usize]) -> Tensor {
    let mut out = Tensor::zeros(shape);
    let (h, w, c) = (b.h, b.w, b.c);
    for n in 0..b.n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out.data[((n * c + ch) * h + y) * w + x] = arena[b.at(n, y, x) + ch];
                }
            }
        }
    }
    out
}
