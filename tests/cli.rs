//! The `netc` binary, run the way the README tells a user to run it.

use std::process::{Command, Output};

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the netc binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_accepts_a_seed_network() {
    let o = netc(&["check", "nets/mobilenet_v2.net"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok"));
}

#[test]
fn check_rejects_a_broken_network_with_a_diagnostic() {
    let dir = std::env::temp_dir().join(format!("netc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.net");
    std::fs::write(
        &file,
        "net broken {\n    input x: [3, 8, 8]\n    return x |> conv(4, 3) + x\n}\n",
    )
    .unwrap();
    let o = netc(&["check", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("error[E0106]"), "{err}");
    assert!(err.contains("broken.net:3:17"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stats_json_has_the_totals_and_layers() {
    let o = netc(&["stats", "nets/mobilenet_v2.net", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("stats --json prints JSON");
    assert_eq!(v["params"].as_u64(), Some(3_504_872));
    assert!(v["macs"].as_u64().unwrap() > 290_000_000);
    assert!(v["activation_bytes"].as_u64().unwrap() > 0);
    let layers = v["layers"].as_array().expect("layers is an array");
    assert_eq!(layers[0]["name"], "image");
    assert_eq!(layers.last().unwrap()["shape"], serde_json::json!([1, 1000]));
    let sum: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(sum, 3_504_872);
}

#[test]
fn stats_table_applies_set_overrides() {
    let o = netc(&[
        "stats",
        "nets/mobilenet_v2.net",
        "--set",
        "alpha=0.5",
        "--set",
        "res=160",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("mobilenet_v2(alpha=0.5, res=160, classes=1000)"),
        "{out}"
    );
    assert!(out.contains("[1, 3, 160, 160]"), "{out}");
    assert!(out.contains("params:"));
}

#[test]
fn unknown_hyperparameter_lists_the_known_ones() {
    let o = netc(&["stats", "nets/mobilenet_v2.net", "--set", "alpah=0.5"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("unknown hyperparameter `alpah`"), "{err}");
    assert!(err.contains("alpha (float, default 1.0)"), "{err}");
    assert!(err.contains("did you mean `alpha`?"), "{err}");
}

#[test]
fn malformed_set_is_an_error() {
    let o = netc(&["check", "nets/mobilenet_v2.net", "--set", "alpha"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not of the form name=value"));
}

#[test]
fn ir_stops_after_the_named_stage() {
    let elaborated = netc(&["ir", "nets/mobilenet_v2.net", "--after", "elaborate"]);
    assert!(elaborated.status.success());
    assert!(
        !stdout(&elaborated).contains("macs="),
        "costs appear only after the cost pass"
    );
    let full = netc(&["ir", "nets/mobilenet_v2.net"]);
    assert!(stdout(&full).contains("macs="));
    let bad = netc(&["ir", "nets/mobilenet_v2.net", "--after", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("stages are: elaborate, shape, cost"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn dot_prints_a_graph() {
    let o = netc(&["dot", "nets/mobilenet_v2.net"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.starts_with("digraph \"mobilenet_v2\" {"));
    assert!(out.contains("->"));
    assert!(out.trim_end().ends_with('}'));
}

#[test]
fn missing_file_is_a_clear_error() {
    let o = netc(&["check", "nets/does_not_exist.net"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read `nets/does_not_exist.net`"),
        "{}",
        stderr(&o)
    );
}
