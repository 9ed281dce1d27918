//! `netc run`, `netc init` and `netc weights` as a user runs them, on every seed network.

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

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn seed_nets() -> Vec<PathBuf> {
    let mut nets: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("nets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .map(|p| Path::new("nets").join(p.file_name().unwrap()))
        .collect();
    nets.sort();
    nets
}

#[test]
fn every_seed_network_runs_with_the_reference_engine() {
    let dir = scratch("seed");
    for net in seed_nets() {
        let net = net.to_str().unwrap();
        let compiled = netc::compile_file(Path::new(net), &netc::Options::default(), None).unwrap();
        let classes = compiled.graph.node(compiled.graph.outputs[0]).shape.0.clone();
        let mut outputs = Vec::new();
        for run in 0..2 {
            let out = dir.join(format!("out{run}.npy"));
            let o = netc(&["run", net, "--engine", "reference", "--output", out.to_str().unwrap()]);
            assert!(o.status.success(), "{net}: {}", text(&o.stderr));
            let stdout = text(&o.stdout);
            assert_eq!(stdout.lines().count(), 5, "{net} prints a top-5:\n{stdout}");
            assert!(
                stdout.lines().next().unwrap().trim_start().starts_with("1. class"),
                "{stdout}"
            );
            let stderr = text(&o.stderr);
            assert!(stderr.contains("using the seeded initialization"), "{stderr}");
            assert!(stderr.contains("random input"), "{stderr}");
            let t = netc::runtime::input::npy(&out, &classes).unwrap();
            assert!(t.all_finite(), "{net} output is not finite");
            assert!(t.max_abs() > 0.0, "{net} output is all zero");
            outputs.push(t);
        }
        assert_eq!(outputs[0], outputs[1], "{net}: two runs differ");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn init_then_run_with_weights_labels_and_npy_input() {
    let dir = scratch("init");
    let w = dir.join("w.safetensors");
    let o = netc(&["init", "nets/effnet.net", "-o", w.to_str().unwrap(), "--seed", "3"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, (0..10).map(|i| format!("label{i}\n")).collect::<String>()).unwrap();
    let x = dir.join("x.npy");
    netc::runtime::input::save_npy(&x, &netc::runtime::input::random(&[1, 3, 32, 32], 5)).unwrap();
    let args = [
        "run",
        "nets/effnet.net",
        "--weights",
        w.to_str().unwrap(),
        "--input",
        x.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--top",
        "3",
    ];
    let o = netc(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains("  label")), "{stdout}");
    assert!(!text(&o.stderr).contains("seeded initialization"));
    // The same weights and input give the same answer.
    assert_eq!(text(&netc(&args).stdout), stdout);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn run_reports_bad_files_clearly() {
    let dir = scratch("bad");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let o = netc(&["run", "nets/effnet.net", "--weights", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("is not a valid safetensors file"),
        "{}",
        text(&o.stderr)
    );
    let o = netc(&["run", "nets/effnet.net", "--input", "no/such/file.png"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot read `no/such/file.png`"),
        "{}",
        text(&o.stderr)
    );
    let o = netc(&["run", "nets/effnet.net", "--mean", "1,2"]);
    assert_eq!(o.status.code(), Some(1));
    let o = netc(&["run", "nets/effnet.net", "--input", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("cannot decode image"), "{}", text(&o.stderr));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn weights_lists_every_tensor() {
    let o = netc(&["weights", "nets/squeezenet.net"]);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.contains("conv1.weight"), "{out}");
    assert!(out.trim_end().ends_with("52 tensors, 1,248,424 values"), "{out}");
    let j = netc(&["weights", "nets/squeezenet.net", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 52);
    assert_eq!(v[0]["dtype"], "F32");
}

#[test]
fn buffers_on_the_heap_give_the_same_bits_as_mapped_ones() {
    // `NETC_HEAP_BUFFERS` (set by `scripts/valgrind.sh`) keeps the arena and the weights on the
    // heap instead of their own (huge-page) mappings: the kernels must not care where they are.
    let dir = scratch("heap");
    let mut outputs = Vec::new();
    for heap in [false, true] {
        let out = dir.join(format!("out-{heap}.npy"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_netc"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "run",
            "nets/mobilenet.net",
            "--set",
            "res=96",
            "--threads",
            "2",
            "--output",
            out.to_str().unwrap(),
        ]);
        if heap {
            command.env("NETC_HEAP_BUFFERS", "1");
        } else {
            command.env_remove("NETC_HEAP_BUFFERS");
        }
        let o = command.output().expect("the netc binary runs");
        assert!(o.status.success(), "{}", text(&o.stderr));
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
}
