//! Running generated code: a fixed sequence of kernel calls over one arena allocated at compile
//! time, with no allocation, locking or dispatch by op kind while the network runs.
//!
//! With several threads, the steps large enough to gain share their work items between the
//! calling thread and the workers of a [`Pool`], which the executable creates on its first run
//! with that thread count and keeps (parked) until it is dropped or runs with another count.
//! Each item is computed by the same code whatever the split, so results do not depend on the
//! thread count.

use super::errors;
use super::interleave::interleave3;
use super::pages::Pages;
use super::pool::Pool;
use super::tensor::Tensor;
use crate::codegen::layout::Buf;
use crate::diag::Diagnostic;
use cranelift_jit::JITModule;

/// A kernel: `(arena, weights, begin, end)`.
pub type KernelFn = unsafe extern "C" fn(*mut f32, *const f32, i64, i64);

/// One kernel call of the forward pass.
pub struct Step {
    pub name: String,
    pub f: KernelFn,
    pub items: usize,
    pub work_per_item: usize,
    /// The symbols of the host functions the kernel calls (its register tiles, see
    /// `codegen::host`).
    pub hosts: Vec<&'static str>,
    /// The kernel's name where it is not the node's family (see `Kernel::kind`).
    pub kind: Option<&'static str>,
}

/// A compiled network, ready to run.
pub struct Executable {
    // Owns the code the steps point into; freed when the executable is dropped.
    module: Option<JITModule>,
    steps: Vec<Step>,
    weights: Pages,
    arena: Pages,
    input: Buf,
    input_shape: Vec<usize>,
    outputs: Vec<(Buf, Vec<usize>)>,
    clif: Vec<(String, String)>,
    /// The workers of multi-threaded runs, once there has been one.
    pool: Option<Pool>,
}

impl Drop for Executable {
    fn drop(&mut self) {
        // Join the workers before the code they could call goes away.
        self.pool = None;
        if let Some(m) = self.module.take() {
            // SAFETY: the steps are dropped with `self`; nothing calls the code afterwards.
            unsafe { m.free_memory() };
        }
    }
}

impl Executable {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        module: JITModule,
        steps: Vec<Step>,
        weights: Pages,
        arena: Pages,
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
            pool: None,
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

    /// Bytes of the packed weights.
    pub fn weights_bytes(&self) -> usize {
        self.weights.len() * 4
    }

    /// Bytes of the arena and the packed weights that the system backs with huge pages, where
    /// it tells (see `pages.rs`).
    pub fn huge_page_bytes(&self) -> Option<u64> {
        Some(self.arena.huge_page_bytes()? + self.weights.huge_page_bytes()?)
    }

    /// Worker threads alive for multi-threaded runs (0 before the first one).
    pub fn workers(&self) -> usize {
        self.pool.as_ref().map_or(0, Pool::workers)
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

    /// Writes the NCHW input into its NHWC buffer, pixel by pixel: each arena line is written
    /// once, while the `c` input planes are read as `c` sequential streams.
    fn write_input(&mut self, x: &Tensor) {
        let b = self.input;
        let (hw, c) = (b.h * b.w, b.c);
        for n in 0..b.n {
            let planes = &x.data[n * c * hw..(n + 1) * c * hw];
            let start = b.at(n, 0, 0);
            let pixels = self.arena[start..start + hw * b.stride].chunks_exact_mut(b.stride);
            if c == 3 {
                // An image: its three planes interleaved in one pass with no index arithmetic
                // (0.11 -> 0.06 ms for 3x224x224, against the loop below), eight pixels at a
                // time where the pixels are packed.
                let (r, rest) = planes.split_at(hw);
                let (g, bl) = rest.split_at(hw);
                if b.stride == 3 {
                    interleave3(r, g, bl, &mut self.arena[start..start + hw * 3]);
                    continue;
                }
                for (pixel, ((&x, &y), &z)) in pixels.zip(r.iter().zip(g).zip(bl)) {
                    pixel[..3].copy_from_slice(&[x, y, z]);
                }
                continue;
            }
            for (p, pixel) in pixels.enumerate() {
                for (ch, v) in pixel[..c].iter_mut().enumerate() {
                    *v = planes[ch * hw + p];
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
        let (arena, weights) = (self.arena.as_mut_ptr(), self.weights.as_ptr());
        Ok(self
            .steps
            .iter()
            .map(|s| {
                let t = std::time::Instant::now();
                // SAFETY: the kernel was generated for this arena and weight layout.
                unsafe { (s.f)(arena, weights, 0, s.items as i64) };
                (s.name.clone(), t.elapsed().as_secs_f64())
            })
            .collect())
    }

    fn run_steps(&mut self, threads: usize) {
        let (arena, weights) = (self.arena.as_mut_ptr(), self.weights.as_ptr());
        if threads == 1 {
            for s in &self.steps {
                // SAFETY: the kernel was generated for this arena and weight layout, and only
                // touches the elements its items cover, all inside the arena.
                unsafe { (s.f)(arena, weights, 0, s.items as i64) };
            }
            return;
        }
        if !self.pool.as_ref().is_some_and(|p| p.made_for(threads)) {
            // Join the old workers before starting new ones.
            self.pool = None;
            self.pool = Some(Pool::new(threads, &self.steps));
        }
        let pool = self.pool.as_mut().expect("created above");
        // SAFETY: the pool was made for these steps, which were generated for this arena and
        // weight layout; both stay borrowed by `self` until the run returns.
        unsafe { pool.run(&self.steps, arena, weights) };
    }
}

/// Reads an NHWC buffer back as an NCHW (or NF) tensor, pixel by pixel.
fn read(arena: &[f32], b: &Buf, shape: &[usize]) -> Tensor {
    let mut out = Tensor::zeros(shape);
    let (hw, c) = (b.h * b.w, b.c);
    for n in 0..b.n {
        let planes = &mut out.data[n * c * hw..(n + 1) * c * hw];
        let start = b.at(n, 0, 0);
        for (p, pixel) in arena[start..start + hw * b.stride].chunks_exact(b.stride).enumerate() {
            for (ch, &v) in pixel[..c].iter().enumerate() {
                planes[ch * hw + p] = v;
            }
        }
    }
    out
}
