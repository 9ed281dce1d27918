//! Benchmarking the generated code: compile time, latency statistics over repeated runs, and a
//! per-node profile.
//!
//! [`prepare`] elaborates a network and generates its code, timing both stages. [`run`] then
//! warms up, times `runs` calls of [`Executable::run`] on a seeded random input and, if asked,
//! profiles every step with [`Executable::profile`] (each step timed once per run, on one thread)
//! and keeps the median per step. Throughput is `2 * MACs / time`, with MACs from the cost pass
//! (multiply-accumulates of conv and dense layers only; pooling and element-wise nodes count zero).

use super::executor::Executable;
use super::{input, Weights};
use crate::codegen::{self, Isa};
use crate::diag::Diagnostic;
use crate::ir::Graph;
use crate::passes::cost;
use crate::Compiled;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Single-core peak of independent f32x4 (128-bit) FMA chains measured on the machine the project
/// runs on (a 2-vCPU Intel Xeon virtual machine) with `cargo run --release --example fma_peak`: 66 GFLOP/s. The x64
/// Cranelift backend emits no vector wider than 128 bits, so this is the ceiling of one thread of
/// Cranelift-generated code (the `baseline` ISA).
pub const PEAK_GFLOPS_F32X4: f64 = 66.0;

/// Single-core peak of independent f32x8 (256-bit) FMA chains on the same machine, measured the
/// same way: 132 GFLOP/s, the ceiling of the AVX2 matrix-multiply micro-kernel.
pub const PEAK_GFLOPS_F32X8: f64 = 132.0;

/// The single-core FMA peak of the vector width `isa` runs at.
pub fn peak_gflops(isa: Isa) -> f64 {
    if isa.wide() {
        PEAK_GFLOPS_F32X8
    } else {
        PEAK_GFLOPS_F32X4
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Config {
    /// Threads of [`Executable::run`].
    pub threads: usize,
    /// Timed runs (at least 1).
    pub runs: usize,
    /// Untimed runs before the timed ones.
    pub warmup: usize,
    /// Seed of the weights and of the random input.
    pub seed: u64,
    /// Also profile every step.
    pub profile: bool,
    /// Peak GFLOP/s that per-node throughput is compared against.
    pub peak_gflops: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threads: 1,
            runs: 50,
            warmup: 5,
            seed: 0,
            profile: false,
            peak_gflops: PEAK_GFLOPS_F32X4,
        }
    }
}

/// Summary of a sample of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub min_ms: f64,
    pub p10_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The `q`-quantile (`0 <= q <= 1`) of sorted values, interpolating linearly between the two
/// nearest ranks (NumPy's default). `NaN` for an empty slice.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = pos - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Summarizes durations given in seconds.
pub fn summarize(seconds: &[f64]) -> Summary {
    let mut ms: Vec<f64> = seconds.iter().map(|s| s * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = if ms.is_empty() {
        f64::NAN
    } else {
        ms.iter().sum::<f64>() / ms.len() as f64
    };
    Summary {
        min_ms: ms.first().copied().unwrap_or(f64::NAN),
        p10_ms: percentile(&ms, 0.1),
        median_ms: percentile(&ms, 0.5),
        p90_ms: percentile(&ms, 0.9),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        mean_ms: mean,
    }
}

/// GFLOP/s of `macs` multiply-accumulates (two flops each) done in `seconds`; 0 when either is 0.
pub fn gflops(macs: u64, seconds: f64) -> f64 {
    if macs == 0 || seconds <= 0.0 {
        0.0
    } else {
        2.0 * macs as f64 / seconds / 1e9
    }
}

/// A compiled network with its generated code and the time each stage took.
pub struct Prepared {
    pub compiled: Compiled,
    pub exe: Executable,
    /// Reading, parsing, elaboration and the passes.
    pub elaborate_ms: f64,
    /// Code generation of every kernel, weight packing included (weight initialization is not).
    pub codegen_ms: f64,
    /// The matrix multiply's instruction set that runs (see [`Isa::name`]).
    pub isa: &'static str,
}

/// Why [`prepare`] failed: in elaboration (the caller's error) or in code generation.
pub enum PrepareError<E> {
    Elaborate(E),
    Codegen(Diagnostic),
}

/// Runs `elaborate` (which compiles the description) and generates code with the seeded weights
/// and `options`, timing each stage.
pub fn prepare<E>(
    elaborate: impl FnOnce() -> Result<Compiled, E>,
    seed: u64,
    options: &codegen::Options,
) -> Result<Prepared, PrepareError<E>> {
    let t = Instant::now();
    let compiled = elaborate().map_err(PrepareError::Elaborate)?;
    let elaborate_ms = t.elapsed().as_secs_f64() * 1e3;
    let weights: Weights = compiled.init_weights(seed);
    let t = Instant::now();
    let exe = compiled.compile_jit(&weights, options).map_err(PrepareError::Codegen)?;
    let codegen_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Prepared {
        compiled,
        exe,
        elaborate_ms,
        codegen_ms,
        isa: options.isa.name(),
    })
}

/// The profile of one step (one node's kernel).
#[derive(Clone, Debug, Serialize)]
pub struct NodeProfile {
    pub name: String,
    pub op: String,
    /// Work items of the step (the unit the executor splits across threads).
    pub items: usize,
    pub macs: u64,
    /// Median over the profiled runs.
    pub median_ms: f64,
    /// Share of the sum of all steps' medians, in percent.
    pub share_pct: f64,
    /// `2 * macs / median`; `None` for nodes without MACs.
    pub gflops: Option<f64>,
    /// `gflops` as a percentage of the peak; `None` for nodes without MACs.
    pub peak_pct: Option<f64>,
}

/// Everything `netc bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The network with its hyperparameters, as `netc stats` names it.
    pub net: String,
    pub batch: usize,
    /// The matrix multiply's instruction set: `avx2` or `baseline`.
    pub isa: String,
    pub threads: usize,
    pub runs: usize,
    pub warmup: usize,
    pub seed: u64,
    /// `elaborate_ms + codegen_ms`.
    pub compile_ms: f64,
    pub elaborate_ms: f64,
    pub codegen_ms: f64,
    pub kernels: usize,
    pub arena_bytes: usize,
    pub macs: u64,
    #[serde(flatten)]
    pub latency: Summary,
    /// `2 * macs / median`.
    pub gflops: f64,
    pub peak_gflops: f64,
    /// Per step in execution order, with `--profile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeProfile>>,
    /// Sum of the steps' median times, with `--profile` (one thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_total_ms: Option<f64>,
    /// Peak resident memory of the process so far (compilation, weights, code, the runs), where
    /// the system tells it (Linux: `VmHWM`); `None` elsewhere.
    pub peak_rss_bytes: Option<u64>,
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), where there is one.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `name(k=v, ...)` of a graph.
pub fn net_title(graph: &Graph) -> String {
    let hyper: Vec<String> = graph.hyper.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}({})", graph.name, hyper.join(", "))
}

/// Warms up, times the runs and, if asked, profiles every step.
pub fn run(p: &mut Prepared, config: &Config) -> Result<Report, Diagnostic> {
    let graph = &p.compiled.graph;
    let x = input::random(p.compiled.input_shape(), config.seed);
    let threads = config.threads.max(1);
    let runs = config.runs.max(1);
    for _ in 0..config.warmup {
        p.exe.run(&x, threads)?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = p.exe.run(&x, threads)?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let latency = summarize(&times);
    let macs = cost::totals(graph).macs;
    let (nodes, profile_total_ms) = if config.profile {
        let (nodes, total) = profile(p, &x, runs, config.peak_gflops)?;
        (Some(nodes), Some(total))
    } else {
        (None, None)
    };
    let graph = &p.compiled.graph;
    Ok(Report {
        net: net_title(graph),
        batch: p.compiled.input_shape()[0],
        isa: p.isa.to_string(),
        threads,
        runs,
        warmup: config.warmup,
        seed: config.seed,
        compile_ms: p.elaborate_ms + p.codegen_ms,
        elaborate_ms: p.elaborate_ms,
        codegen_ms: p.codegen_ms,
        kernels: p.exe.steps().len(),
        arena_bytes: p.exe.arena_bytes(),
        macs,
        latency,
        gflops: gflops(macs, latency.median_ms / 1e3),
        peak_gflops: config.peak_gflops,
        nodes,
        profile_total_ms,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Profiles every step `runs` times; returns the steps in execution order and the sum of their
/// medians in milliseconds.
fn profile(p: &mut Prepared, x: &super::Tensor, runs: usize, peak: f64) -> Result<(Vec<NodeProfile>, f64), Diagnostic> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); p.exe.steps().len()];
    // One untimed pass so the first sample does not pay for cold caches alone.
    p.exe.profile(x)?;
    for _ in 0..runs {
        for (i, (_, secs)) in p.exe.profile(x)?.into_iter().enumerate() {
            samples[i].push(secs);
        }
    }
    let by_name: HashMap<&str, &crate::ir::Node> = p
        .compiled
        .latest()
        .g
        .node_weights()
        .map(|n| (n.name.as_str(), n))
        .collect();
    let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
    let total: f64 = medians.iter().sum();
    let nodes = p
        .exe
        .steps()
        .iter()
        .zip(&medians)
        .map(|(step, &secs)| {
            let node = by_name.get(step.name.as_str());
            let macs = node.and_then(|n| n.cost).map_or(0, |c| c.macs);
            let g = (macs > 0).then(|| gflops(macs, secs));
            NodeProfile {
                name: step.name.clone(),
                // The op and the kernel family that computes it (`conv/gemm`); a step without
                // a node of its own gathers a staged input.
                op: node.map_or("gather".to_string(), |n| match n.place.as_ref().map(|p| p.runs) {
                    Some(crate::ir::Runs::Kernel(k)) => format!("{}/{k}", n.op.kind()),
                    _ => n.op.kind().to_string(),
                }),
                items: step.items,
                macs,
                median_ms: secs * 1e3,
                share_pct: if total > 0.0 { 100.0 * secs / total } else { 0.0 },
                gflops: g,
                peak_pct: g.map(|g| 100.0 * g / peak),
            }
        })
        .collect();
    Ok((nodes, total * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert!((percentile(&v, 0.1) - 1.4).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 4.6).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.3), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn median_of_an_even_sample_is_the_midpoint() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn summary_is_ordered() {
        let s = summarize(&[0.003, 0.001, 0.002, 0.010, 0.004]);
        assert!(s.min_ms <= s.p10_ms && s.p10_ms <= s.median_ms);
        assert!(s.median_ms <= s.p90_ms && s.p90_ms <= s.max_ms);
        assert!((s.median_ms - 3.0).abs() < 1e-9);
        assert!((s.mean_ms - 4.0).abs() < 1e-9);
    }

    #[test]
    fn gflops_counts_two_flops_per_mac() {
        assert_eq!(gflops(1_000_000_000, 1.0), 2.0);
        assert_eq!(gflops(0, 1.0), 0.0);
        assert_eq!(gflops(5, 0.0), 0.0);
    }
}
