//! The worker threads of a multi-threaded run: created once per executable and thread count,
//! parked between runs, joined when the executable is dropped.
//!
//! A run with `threads` threads uses the calling thread plus `threads - 1` workers, so the
//! process never runs more threads than asked for. The forward pass becomes a [`Plan`]: a list
//! of parallel steps, each preceded by the serial steps (too small to gain from splitting) that
//! the calling thread runs alone. The calling thread publishes each parallel step once the steps
//! before it are complete; every thread then claims chunks of its items from a shared counter
//! ("guided" scheduling: a chunk is a share of what is left, so the first chunks are large and
//! contiguous and the last ones small) and counts the items it completed. A step is complete when
//! all its items are, not when every thread has passed by: a worker that the operating system
//! delays (the machine is shared) takes fewer chunks, or none, and never holds the others up
//! unless it holds a chunk. Each item is computed by the same kernel code whatever the chunk it
//! was claimed in, so the results do not depend on the thread count or on the timing.
//!
//! The claim and completion counters only grow: run `r` claims items `r * items..(r + 1) *
//! items` of a step, so a worker that falls a whole run behind finds nothing left to claim in the
//! runs it missed and catches up without touching the arena.
//!
//! Waiting for the next step or run spins for a short bounded time, then yields, then sleeps on
//! a condition variable, so idle workers cost no CPU between runs.

use super::executor::{KernelFn, Step};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Work (multiply-accumulates or element operations) below which a step runs on one thread:
/// about a microsecond on one core, the order of what handing a step to another core costs.
pub const PARALLEL_WORK: usize = 32 * 1024;

/// Smallest chunk of a parallel step a thread claims, in work units, so that claiming (one
/// atomic operation) and calling the kernel stay small against the work.
const MIN_CHUNK_WORK: usize = 8 * 1024;

/// How long a worker waiting for the next step or run spins, then yields, before it sleeps:
/// long enough to catch back-to-back steps and runs, short enough that an idle process costs
/// nothing.
const SPIN: Duration = Duration::from_micros(100);
const YIELD: Duration = Duration::from_micros(900);

/// How long the calling thread spins, waiting for a worker's last chunk of a step, before it
/// yields (the worker may have been descheduled).
const CHUNK_SPIN: Duration = Duration::from_micros(50);

/// A counter that only grows, and that threads wait on.
struct Signal {
    value: AtomicUsize,
    /// Threads sleeping (or about to sleep) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            value: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Sets the value and wakes every waiter. Everything the calling thread wrote before is
    /// visible to a waiter once it sees the value.
    fn publish(&self, value: usize) {
        self.value.store(value, Ordering::SeqCst);
        // A waiter registers in `sleepers` before it checks the value for the last time (both
        // sequentially consistent), so either it sees the new value or this sees it sleeping.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }

    /// Waits until the value is at least `target`: spins for [`SPIN`], yields for [`YIELD`],
    /// then sleeps.
    fn wait_for(&self, target: usize) {
        let start = Instant::now();
        let mut polls = 0u32;
        while self.value.load(Ordering::Acquire) < target {
            polls = polls.wrapping_add(1);
            // Reading the clock costs more than a poll: look at it every 64 polls.
            if !polls.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let waited = start.elapsed();
            if waited < SPIN {
                std::hint::spin_loop();
            } else if waited < SPIN + YIELD {
                std::thread::yield_now();
            } else {
                self.sleep_until(target);
                return;
            }
        }
    }

    fn sleep_until(&self, target: usize) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.value.load(Ordering::SeqCst) < target {
            guard = self.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A step whose items the threads share.
struct Parallel {
    f: KernelFn,
    items: usize,
    /// Smallest chunk to claim, in items.
    min_chunk: usize,
    /// Items claimed, over all runs: run `r` claims `r * items..(r + 1) * items`.
    claimed: AtomicUsize,
    /// Items completed, over all runs.
    completed: AtomicUsize,
}

impl Parallel {
    /// Claims and runs chunks of run `run` until none are left, with `threads` threads sharing
    /// the work.
    ///
    /// # Safety
    /// During run `run`, `arena` and `weights` must be the buffers the kernel was generated for,
    /// with every step before this one complete.
    unsafe fn work(&self, run: usize, threads: usize, arena: *mut f32, weights: *const f32) {
        let (base, limit) = (run * self.items, (run + 1) * self.items);
        let mut claimed = self.claimed.load(Ordering::Relaxed);
        while claimed < limit {
            let left = limit - claimed;
            let n = (left / (2 * threads)).max(self.min_chunk).min(left);
            match self
                .claimed
                .compare_exchange_weak(claimed, claimed + n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    let begin = (claimed - base) as i64;
                    // SAFETY: this thread alone claimed these items of this run (which is live
                    // until they are completed); the kernel writes only its items' elements.
                    unsafe { (self.f)(arena, weights, begin, begin + n as i64) };
                    self.completed.fetch_add(n, Ordering::Release);
                    claimed = self.claimed.load(Ordering::Relaxed);
                }
                Err(now) => claimed = now,
            }
        }
    }

    /// Waits until every item of run `run` is complete.
    fn wait_complete(&self, run: usize) {
        let target = (run + 1) * self.items;
        let start = Instant::now();
        let mut polls = 0u32;
        while self.completed.load(Ordering::Acquire) < target {
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(64) && start.elapsed() >= CHUNK_SPIN {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The order in which a run's threads work: for each parallel step, the serial steps the calling
/// thread runs before it (alone), then the parallel step (by all); then the serial tail.
pub struct Plan {
    phases: Vec<(Range<usize>, usize)>,
    tail: Range<usize>,
}

impl Plan {
    /// Whether a step is worth splitting between threads.
    pub fn splits(step: &Step) -> bool {
        step.items >= 2 && step.items.saturating_mul(step.work_per_item) >= PARALLEL_WORK
    }

    pub fn new(steps: &[Step]) -> Plan {
        let mut phases = Vec::new();
        let mut first_serial = 0;
        for (i, s) in steps.iter().enumerate() {
            if Plan::splits(s) {
                phases.push((first_serial..i, i));
                first_serial = i + 1;
            }
        }
        Plan {
            phases,
            tail: first_serial..steps.len(),
        }
    }
}

/// What the workers share with the calling thread.
struct Shared {
    /// Parallel steps published so far, over all runs: run `r` publishes its step `k` as
    /// `r * phases.len() + k + 1`.
    published: Signal,
    stop: AtomicBool,
    /// The arena and weights of the current run, set before its first step is published.
    arena: AtomicPtr<f32>,
    weights: AtomicPtr<f32>,
    /// The parallel steps, in order.
    phases: Vec<Parallel>,
    /// Threads of a run, the calling one included: the workers that started, plus one. Set
    /// before the first run.
    threads: AtomicUsize,
}

impl Shared {
    fn worker(&self) {
        let count = self.phases.len();
        for run in 0.. {
            for (k, phase) in self.phases.iter().enumerate() {
                self.published.wait_for(run * count + k + 1);
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                let arena = self.arena.load(Ordering::Relaxed);
                let weights = self.weights.load(Ordering::Relaxed);
                let threads = self.threads.load(Ordering::Relaxed);
                // SAFETY: the calling thread set the buffers before publishing the run's first
                // step and keeps them borrowed until every step of the run is complete; it
                // publishes a step once the steps before it are complete.
                unsafe { phase.work(run, threads, arena, weights) };
            }
        }
    }
}

/// Workers for runs with a fixed number of threads, and the plan they follow.
pub struct Pool {
    shared: Arc<Shared>,
    plan: Plan,
    workers: Vec<JoinHandle<()>>,
    /// The thread count the pool was made for (more than it runs if workers failed to start).
    asked: usize,
    /// Runs so far.
    runs: usize,
}

impl Pool {
    /// Starts `threads - 1` workers (fewer if the system refuses to start more) for `steps`.
    pub fn new(threads: usize, steps: &[Step]) -> Pool {
        let plan = Plan::new(steps);
        let phases = plan
            .phases
            .iter()
            .map(|&(_, step)| {
                let s = &steps[step];
                Parallel {
                    f: s.f,
                    items: s.items,
                    min_chunk: MIN_CHUNK_WORK.div_ceil(s.work_per_item.max(1)),
                    claimed: AtomicUsize::new(0),
                    completed: AtomicUsize::new(0),
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            published: Signal::new(),
            stop: AtomicBool::new(false),
            arena: AtomicPtr::new(std::ptr::null_mut()),
            weights: AtomicPtr::new(std::ptr::null_mut()),
            phases,
            threads: AtomicUsize::new(1),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        if !plan.phases.is_empty() {
            for t in 1..threads {
                let s = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("netc-worker-{t}"))
                    .spawn(move || s.worker());
                match spawned {
                    Ok(handle) => workers.push(handle),
                    // Run with the workers that did start.
                    Err(_) => break,
                }
            }
        }
        shared.threads.store(workers.len() + 1, Ordering::Relaxed);
        Pool {
            shared,
            plan,
            workers,
            asked: threads,
            runs: 0,
        }
    }

    /// Whether the pool was made for runs with `threads` threads.
    pub fn made_for(&self, threads: usize) -> bool {
        self.asked == threads
    }

    /// Worker threads (the calling thread is the other one of a run).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs `steps` (those the pool was made for) on `arena` and `weights`.
    ///
    /// # Safety
    /// The steps' kernels must have been generated for this arena and weight layout, and the
    /// buffers must stay valid and unaliased until this returns.
    pub unsafe fn run(&mut self, steps: &[Step], arena: *mut f32, weights: *const f32) {
        let serial = |range: Range<usize>| {
            for s in &steps[range] {
                // SAFETY: as the caller promises; the workers run nothing until the next
                // parallel step is published.
                unsafe { (s.f)(arena, weights, 0, s.items as i64) };
            }
        };
        if self.workers.is_empty() {
            serial(0..steps.len());
            return;
        }
        let sh = &*self.shared;
        let (run, count, threads) = (self.runs, sh.phases.len(), self.workers.len() + 1);
        self.runs += 1;
        sh.arena.store(arena, Ordering::Relaxed);
        sh.weights.store(weights.cast_mut(), Ordering::Relaxed);
        for (k, (before, _)) in self.plan.phases.iter().enumerate() {
            if k > 0 {
                sh.phases[k - 1].wait_complete(run);
            }
            serial(before.clone());
            sh.published.publish(run * count + k + 1);
            // SAFETY: as the caller promises; every step before this one is complete.
            unsafe { sh.phases[k].work(run, threads, arena, weights) };
        }
        sh.phases[count - 1].wait_complete(run);
        serial(self.plan.tail.clone());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.published.publish(usize::MAX);
        for w in self.workers.drain(..) {
            // A worker only runs generated code, which does not panic; nothing to report.
            let _ = w.join();
        }
    }
}
