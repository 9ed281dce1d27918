//! Benchmarking the generated code: compile time, latency statistics over repeated runs, and a
//! per-node profile.
//!
//! [`prepare`] elaborates a network and generates its code, timing both stages. [`run`] then
//! warms up, times `runs` calls of [`Executable::run`] on a seeded random input and, if asked,
//! profiles every step with [`Executable::profile`] (each step timed once per run, on one thread)
//! and keeps the median per step. Throughput is `2 * MACs / time`, with MACs from the cost pass
//! (multiply-accumulates of conv and dense layers only; pooling and element-wise nodes count zero).
//! A profile compares each node's throughput with this machine's single-core 256-bit FMA peak,
//! measured at run time ([`measure_peaks`]) rather than assumed, since the machines netc runs on
//! differ (a 512-bit datapath doubles it, a shared or throttled core lowers it).

use super::executor::Executable;
use super::pages::kib_field;
use super::{input, Weights};
use crate::codegen;
use crate::diag::Diagnostic;
use crate::ir::Graph;
use crate::passes::cost;
use crate::Compiled;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// This machine's single-core peaks of independent FMA chains, per vector width, in GFLOP/s:
/// measured at run time by [`measure_peaks`]. `None` where the CPU lacks the width (or the
/// architecture has no measurement here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Peaks {
    /// 128-bit FMAs: the ceiling of one thread of Cranelift-generated code (the `baseline` ISA).
    pub f32x4: Option<f64>,
    /// 256-bit FMAs (AVX2 + FMA): the reference per-node throughput is compared against.
    pub f32x8: Option<f64>,
    /// 512-bit FMAs (AVX-512F).
    pub f32x16: Option<f64>,
}

impl Peaks {
    /// The peak per-node throughput is reported against: the 256-bit one, or the 128-bit one on
    /// a CPU without AVX2, with its name.
    pub fn reference(&self) -> Option<(&'static str, f64)> {
        self.f32x8.map(|p| ("f32x8", p)).or(self.f32x4.map(|p| ("f32x4", p)))
    }
}

/// Length of one calibration run, and runs per vector width (the best counts: the machine may
/// be shared).
const CALIBRATION_SECS: f64 = 0.02;
const CALIBRATION_RUNS: usize = 3;

/// Measures the single-core FMA peak of each vector width this CPU has: 12 independent
/// accumulator chains (so the FMA units, not the latency of one chain, bound the loop), best of
/// [`CALIBRATION_RUNS`] runs of about 20 ms each. Takes about 200 ms.
pub fn measure_peaks() -> Peaks {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = is_x86_feature_detected!("fma");
        let avx2 = fma && is_x86_feature_detected!("avx2");
        let avx512 = is_x86_feature_detected!("avx512f");
        // SAFETY (all three): each loop runs only when the CPU has the features it is compiled for.
        Peaks {
            f32x4: fma.then(|| best_rate(|n| unsafe { fma_x86::f32x4(n) }, 12.0 * 4.0 * 2.0)),
            f32x8: avx2.then(|| best_rate(|n| unsafe { fma_x86::f32x8(n) }, 12.0 * 8.0 * 2.0)),
            f32x16: avx512.then(|| best_rate(|n| unsafe { fma_x86::f32x16(n) }, 12.0 * 16.0 * 2.0)),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Peaks::default()
}

/// GFLOP/s of a loop `run(iterations) -> seconds` doing `flops` per iteration: a short probe
/// sizes the runs to about [`CALIBRATION_SECS`], the best run counts.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn best_rate(run: impl Fn(u64) -> f64, flops: f64) -> f64 {
    const PROBE: u64 = 1 << 16;
    let probe = run(PROBE).max(1e-7);
    let iterations = (CALIBRATION_SECS / probe * PROBE as f64).clamp(PROBE as f64, 1e10) as u64;
    (0..CALIBRATION_RUNS)
        .map(|_| flops * iterations as f64 / run(iterations).max(1e-9) / 1e9)
        .fold(0.0, f64::max)
}

/// The FMA loops of [`measure_peaks`]; each returns the seconds `iterations` rounds of 12
/// independent FMAs took.
#[cfg(target_arch = "x86_64")]
mod fma_x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const CHAINS: usize = 12;

    /// # Safety
    /// The CPU must have FMA.
    #[target_feature(enable = "fma")]
    pub unsafe fn f32x4(iterations: u64) -> f64 {
        let (m, a) = (_mm_set1_ps(0.999_999), _mm_set1_ps(1e-7));
        let mut acc = [_mm_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm_fmadd_ps(*x, m, a);
            }
        }
        std::hint::black_box(acc);
        t.elapsed().as_secs_f64()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn f32x8(iterations: u64) -> f64 {
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        std::hint::black_box(acc);
        t.elapsed().as_secs_f64()
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn f32x16(iterations: u64) -> f64 {
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        let t = Instant::now();
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        std::hint::black_box(acc);
        t.elapsed().as_secs_f64()
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
    /// Measure this machine's FMA peaks (see [`measure_peaks`]); profiling does unless
    /// `peak_gflops` is given.
    pub measure_peak: bool,
    /// Peak GFLOP/s that per-node throughput is compared against, instead of the measured
    /// 256-bit peak.
    pub peak_gflops: Option<f64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threads: 1,
            runs: 50,
            warmup: 5,
            seed: 0,
            profile: false,
            measure_peak: false,
            peak_gflops: None,
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
    /// The instruction set that runs (see [`codegen::Isa::name`]).
    pub isa: &'static str,
    /// The matrix multiply's (see [`codegen::Isa::gemm_level`]).
    pub gemm_isa: &'static str,
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
        gemm_isa: options.isa.gemm_level().name(),
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
    /// `gflops` as a percentage of the report's `peak_gflops` (the 256-bit FMA peak unless
    /// another is given); `None` for nodes without MACs or without a peak.
    pub peak_pct: Option<f64>,
}

/// Everything `netc bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The network with its hyperparameters, as `netc stats` names it.
    pub net: String,
    pub batch: usize,
    /// The instruction set that runs: `avx512`, `avx2` or `baseline`.
    pub isa: String,
    /// The matrix multiply's: the same, or `avx2` at `avx512` on a CPU whose 512-bit FMAs are
    /// no faster than its 256-bit ones.
    pub gemm_isa: String,
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
    /// Bytes of the packed weights.
    pub weights_bytes: usize,
    /// Bytes of the arena and the weights on huge pages after the runs, where the system tells
    /// (Linux); `None` elsewhere.
    pub huge_page_bytes: Option<u64>,
    pub macs: u64,
    #[serde(flatten)]
    pub latency: Summary,
    /// `2 * macs / median`.
    pub gflops: f64,
    /// The FMA peaks measured on this machine, when profiling or asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peaks: Option<Peaks>,
    /// The peak per-node throughput is compared against (`peak_pct`): the measured 256-bit one
    /// (see [`Peaks::reference`]) or the one given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_gflops: Option<f64>,
    /// Where `peak_gflops` comes from: `"f32x8"` or `"f32x4"` (measured), or `"given"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_source: Option<String>,
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
    status.lines().find_map(|l| kib_field(l, "VmHWM:"))
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
    let peaks = (config.measure_peak || (config.profile && config.peak_gflops.is_none())).then(measure_peaks);
    let (peak_source, peak_gflops) = match (config.peak_gflops, peaks.and_then(|p| p.reference())) {
        (Some(given), _) => (Some("given".to_string()), Some(given)),
        (None, Some((width, peak))) => (Some(width.to_string()), Some(peak)),
        (None, None) => (None, None),
    };
    let (nodes, profile_total_ms) = if config.profile {
        let (nodes, total) = profile(p, &x, runs, peak_gflops)?;
        (Some(nodes), Some(total))
    } else {
        (None, None)
    };
    let graph = &p.compiled.graph;
    Ok(Report {
        net: net_title(graph),
        batch: p.compiled.input_shape()[0],
        isa: p.isa.to_string(),
        gemm_isa: p.gemm_isa.to_string(),
        threads,
        runs,
        warmup: config.warmup,
        seed: config.seed,
        compile_ms: p.elaborate_ms + p.codegen_ms,
        elaborate_ms: p.elaborate_ms,
        codegen_ms: p.codegen_ms,
        kernels: p.exe.steps().len(),
        arena_bytes: p.exe.arena_bytes(),
        weights_bytes: p.exe.weights_bytes(),
        huge_page_bytes: p.exe.huge_page_bytes(),
        macs,
        latency,
        gflops: gflops(macs, latency.median_ms / 1e3),
        peaks,
        peak_gflops,
        peak_source,
        nodes,
        profile_total_ms,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Profiles every step `runs` times; returns the steps in execution order and the sum of their
/// medians in milliseconds.
fn profile(
    p: &mut Prepared,
    x: &super::Tensor,
    runs: usize,
    peak: Option<f64>,
) -> Result<(Vec<NodeProfile>, f64), Diagnostic> {
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
                op: node.map_or("gather".to_string(), |n| {
                    match (n.place.as_ref().map(|p| p.runs), step.kind) {
                        // A kernel other than the node's family names itself (`conv/winograd`).
                        (Some(crate::ir::Runs::Kernel(_)), Some(kind)) => format!("{}/{kind}", n.op.kind()),
                        (Some(crate::ir::Runs::Kernel(k)), None) => format!("{}/{k}", n.op.kind()),
                        _ => n.op.kind().to_string(),
                    }
                }),
                items: step.items,
                macs,
                median_ms: secs * 1e3,
                share_pct: if total > 0.0 { 100.0 * secs / total } else { 0.0 },
                gflops: g,
                peak_pct: g.zip(peak).map(|(g, peak)| 100.0 * g / peak),
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
