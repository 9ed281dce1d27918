//! `netc bench` as a user runs it: the JSON fields and their relations, the table, the profile.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the netc binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const TINY: &str = "
net tiny(width: int = 8, res: int = 16) {
    input image: [3, res, res]
    let x = image |> conv(width, 3, stride = 2, pad = 1) |> batchnorm |> relu6
    x = x |> dwconv(3, pad = 1) |> relu
    x = (x |> conv(width, 1)) + x
    x = x |> maxpool(2)
    return x |> global_avgpool |> flatten |> dense(4) |> softmax
}
";

/// Writes the tiny network to a scratch directory and returns its path.
fn tiny_net(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.net");
    std::fs::write(&path, TINY).unwrap();
    path
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let o = netc(args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_str(&text(&o.stdout)).expect("bench --json prints JSON")
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` is a number in {v}"))
}

/// The names of the kernels the network compiles to, in execution order.
fn kernel_names(file: &Path, overrides: &[(&str, &str)]) -> Vec<String> {
    let options = netc::Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch: 1,
    };
    let c = netc::compile_file(file, &options, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let exe = c
        .compile_jit(&c.init_weights(0), &netc::codegen::Options::default())
        .unwrap();
    exe.steps().iter().map(|s| s.name.clone()).collect()
}

#[test]
fn json_has_sane_timings() {
    let net = tiny_net("json");
    for threads in ["1", "2"] {
        let v = bench_json(&[
            "bench",
            net.to_str().unwrap(),
            "--runs",
            "7",
            "--warmup",
            "1",
            "--threads",
            threads,
            "--json",
        ]);
        assert_eq!(v["threads"].as_u64(), Some(threads.parse().unwrap()), "{v}");
        assert_eq!(v["runs"].as_u64(), Some(7));
        assert_eq!(v["net"], "tiny(width=8, res=16)");
        assert!(f(&v, "compile_ms") > 0.0, "{v}");
        assert!((f(&v, "compile_ms") - f(&v, "elaborate_ms") - f(&v, "codegen_ms")).abs() < 1e-6);
        let (p10, median, p90) = (f(&v, "p10_ms"), f(&v, "median_ms"), f(&v, "p90_ms"));
        assert!(0.0 < p10 && p10 <= median && median <= p90, "{v}");
        assert!(f(&v, "min_ms") <= p10 && p90 <= f(&v, "max_ms"), "{v}");
        let macs = v["macs"].as_u64().unwrap();
        // conv 3->8 3x3 on 8x8, depthwise 3x3 on 8x8x8, 1x1 8->8 on 8x8, dense 8->4.
        assert_eq!(macs, 8 * 8 * 8 * 27 + 8 * 8 * 8 * 9 + 8 * 8 * 8 * 8 + 8 * 4);
        let gflops = f(&v, "gflops");
        assert!(
            (gflops - 2.0 * macs as f64 / (median * 1e6)).abs() <= 1e-9 * gflops.max(1.0),
            "{v}"
        );
        assert!(v.get("nodes").is_none(), "no profile without --profile: {v}");
        assert!(v["weights_bytes"].as_u64().unwrap() > 0, "{v}");
        if cfg!(target_os = "linux") {
            assert!(v["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "{v}");
            // The tiny net's buffers are far below a huge page.
            assert_eq!(v["huge_page_bytes"].as_u64(), Some(0), "{v}");
        }
    }
}

#[test]
fn json_macs_match_stats() {
    let stats = netc(&["stats", "nets/effnet.net", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&text(&stats.stdout)).unwrap();
    let v = bench_json(&["bench", "nets/effnet.net", "--runs", "2", "--warmup", "0", "--json"]);
    assert_eq!(v["macs"], stats["macs"]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(
        v["threads"].as_u64(),
        Some(cores),
        "threads default to the available cores"
    );
}

#[test]
fn profile_lists_every_kernel_in_execution_order() {
    let net = tiny_net("profile");
    let v = bench_json(&[
        "bench",
        net.to_str().unwrap(),
        "--runs",
        "5",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--profile",
        "--peak-gflops",
        "10",
        "--json",
    ]);
    let nodes = v["nodes"].as_array().expect("--profile adds a nodes array");
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, kernel_names(&net, &[]));
    assert_eq!(f(&v, "peak_gflops"), 10.0);
    assert_eq!(v["peak_source"], "given");
    assert!(v.get("peaks").is_none(), "a given peak is not measured: {v}");
    let share: f64 = nodes.iter().map(|n| f(n, "share_pct")).sum();
    assert!((share - 100.0).abs() < 1e-6, "shares sum to 100%: {share}");
    let total: f64 = nodes.iter().map(|n| f(n, "median_ms")).sum();
    assert!((total - f(&v, "profile_total_ms")).abs() < 1e-9);
    let node_macs: u64 = nodes.iter().map(|n| n["macs"].as_u64().unwrap()).sum();
    assert_eq!(Some(node_macs), v["macs"].as_u64());
    for n in nodes {
        assert!(f(n, "median_ms") >= 0.0, "{n}");
        if n["macs"].as_u64().unwrap() > 0 {
            let g = f(n, "gflops");
            assert!(g > 0.0, "{n}");
            assert!((f(n, "peak_pct") - 10.0 * g).abs() < 1e-9 * g.max(1.0), "{n}");
        } else {
            assert!(n["gflops"].is_null() && n["peak_pct"].is_null(), "{n}");
        }
    }
    // Each step names its op and the kernel family computing it; batchnorm, the activations and
    // the residual add are fused into the convolutions.
    let ops: Vec<&str> = nodes.iter().map(|n| n["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "conv/direct",
            "conv/depthwise",
            "conv/gemm",
            "maxpool/pool",
            "global_avgpool/global_pool",
            "dense/gemm",
            "softmax/softmax"
        ]
    );
}

#[test]
fn profile_table_names_every_kernel_of_a_seed_network() {
    let o = netc(&[
        "bench",
        "nets/mobilenet_v2.net",
        "--set",
        "res=32",
        "--set",
        "alpha=0.35",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--profile",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("mobilenet_v2(alpha=0.35, res=32, classes=1000)"),
        "{out}"
    );
    for word in [
        "compile:",
        "median",
        "p10",
        "p90",
        "GFLOP/s",
        "% peak",
        "execution order",
    ] {
        assert!(out.contains(word), "`{word}` missing:\n{out}");
    }
    let names = kernel_names(Path::new("nets/mobilenet_v2.net"), &[("res", "32"), ("alpha", "0.35")]);
    let rows: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| names.iter().any(|n| n == w))
        .collect();
    assert_eq!(rows, names, "one row per kernel, in execution order");
}

#[test]
fn bad_arguments_fail() {
    let o = netc(&["bench", "nets/effnet.net", "--peak-gflops", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--peak-gflops"), "{}", text(&o.stderr));
    let o = netc(&["bench", "nets/effnet.net", "--runs", "0"]);
    assert!(!o.status.success());
    let o = netc(&["bench", "nets/effnet.net", "--set", "nope=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("error"), "{}", text(&o.stderr));
}

#[test]
fn isa_is_reported() {
    let net = tiny_net("isa");
    let bench = |isa: &str| {
        bench_json(&[
            "bench",
            net.to_str().unwrap(),
            "--runs",
            "2",
            "--warmup",
            "0",
            "--isa",
            isa,
            "--json",
        ])
    };
    let baseline = bench("baseline");
    assert_eq!(baseline["isa"], "baseline");
    assert!(
        baseline.get("peak_gflops").is_none() && baseline.get("peaks").is_none(),
        "no peak is measured without --profile or --measure-peak: {baseline}"
    );
    assert_eq!(baseline["gemm_isa"], "baseline");
    let native = bench("native");
    let cpu = netc::codegen::Level::cpu();
    assert_eq!(native["isa"], cpu.name());
    // The matrix multiply runs narrower than the rest only at AVX-512 with split 512-bit FMAs.
    let split = cpu == netc::codegen::Level::Avx512 && !netc::codegen::Level::full_width_512();
    assert_eq!(native["gemm_isa"], if split { "avx2" } else { cpu.name() });
    let bad = netc(&["bench", net.to_str().unwrap(), "--isa", "sse9"]);
    assert!(!bad.status.success());
}

/// The FMA peaks of each vector width this CPU has, as `--measure-peak` and `--profile` report.
fn check_peaks(v: &serde_json::Value) {
    let peaks = &v["peaks"];
    let width = |w: &str| peaks[w].as_f64();
    #[cfg(target_arch = "x86_64")]
    {
        let has = |feature: bool, w: &str| {
            assert_eq!(width(w).is_some(), feature, "{w} measured iff the CPU has it: {v}");
            if let Some(g) = width(w) {
                assert!(g.is_finite() && g > 0.1, "{w}: {v}");
            }
        };
        let fma = std::arch::is_x86_feature_detected!("fma");
        has(fma, "f32x4");
        has(fma && std::arch::is_x86_feature_detected!("avx2"), "f32x8");
        has(std::arch::is_x86_feature_detected!("avx512f"), "f32x16");
    }
    // Per-node shares are of the 256-bit peak (the 128-bit one on a CPU without AVX2).
    let (source, reference) = match (width("f32x8"), width("f32x4")) {
        (Some(g), _) => ("f32x8", Some(g)),
        (None, Some(g)) => ("f32x4", Some(g)),
        (None, None) => ("", None),
    };
    if let Some(reference) = reference {
        assert_eq!(v["peak_source"], source, "{v}");
        assert_eq!(f(v, "peak_gflops"), reference, "{v}");
    }
}

#[test]
fn profile_measures_the_peaks_and_compares_with_the_256_bit_one() {
    let net = tiny_net("peaks");
    let v = bench_json(&[
        "bench",
        net.to_str().unwrap(),
        "--runs",
        "3",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--profile",
        "--json",
    ]);
    check_peaks(&v);
    if let Some(peak) = v["peak_gflops"].as_f64() {
        for n in v["nodes"].as_array().unwrap() {
            if let Some(g) = n["gflops"].as_f64() {
                assert!((f(n, "peak_pct") - 100.0 * g / peak).abs() < 1e-9 * g.max(1.0), "{n}");
            }
        }
    }
    // Measured on request without a profile, and named in the table.
    let v = bench_json(&[
        "bench",
        net.to_str().unwrap(),
        "--runs",
        "1",
        "--measure-peak",
        "--json",
    ]);
    check_peaks(&v);
    assert!(v.get("nodes").is_none(), "{v}");
    let o = netc(&["bench", net.to_str().unwrap(), "--runs", "1", "--profile"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    if cfg!(target_arch = "x86_64") {
        assert!(out.contains("measured single-core FMA peaks: f32x4 "), "{out}");
    }
    if v["peak_source"] == "f32x8" {
        assert!(out.contains("share of the measured 256-bit (f32x8) FMA peak"), "{out}");
    }
    // A given peak replaces the measured one.
    let o = netc(&[
        "bench",
        net.to_str().unwrap(),
        "--runs",
        "1",
        "--profile",
        "--peak-gflops",
        "12.5",
    ]);
    assert!(
        text(&o.stdout).contains("share of the given peak, 12.5 GFLOP/s"),
        "{}",
        text(&o.stdout)
    );
}
