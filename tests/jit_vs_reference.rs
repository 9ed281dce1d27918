//! The generated code against the reference interpreter: every seed network, hyperparameter
//! variants, and thread counts. The tolerance is `max |jit - ref| / max(1, max |ref|) <= 1e-4`.

use netc::runtime::input;
use std::path::Path;

const TOLERANCE: f32 = 1e-4;

fn check(file: &str, overrides: &[(&str, &str)], batch: usize) {
    let options = netc::Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch,
    };
    let c = netc::compile_file(Path::new(file), &options, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let w = c.init_weights(11);
    let x = input::random(c.input_shape(), 5);
    let expected = c.run_reference(&w, &x).unwrap();
    let mut exe = c.compile_jit(&w, &netc::codegen::Options::default()).unwrap();
    let one = exe.run(&x, 1).unwrap();
    for (e, f) in expected.iter().zip(&one) {
        assert_eq!(e.shape, f.shape);
        let scale = e.max_abs().max(1.0);
        let err = e.max_abs_diff(f);
        assert!(
            err / scale <= TOLERANCE,
            "{file} {overrides:?}: max error {err} (scale {scale})"
        );
    }
    let two = exe.run(&x, 2).unwrap();
    assert_eq!(one, two, "{file}: 1 and 2 threads differ");
}

#[test]
fn mobilenet_v2() {
    check("nets/mobilenet_v2.net", &[], 1);
}

#[test]
fn mobilenet_v2_variants() {
    check("nets/mobilenet_v2.net", &[("alpha", "0.35"), ("res", "96")], 2);
}

#[test]
fn squeezenet() {
    check("nets/squeezenet.net", &[], 1);
    check("nets/squeezenet_v1_1.net", &[], 1);
}

#[test]
fn shufflenet() {
    check("nets/shufflenet.net", &[], 1);
    check("nets/shufflenet.net", &[("groups", "8"), ("scale", "0.5")], 1);
}

#[test]
fn shufflenet_v2() {
    check("nets/shufflenet_v2.net", &[("scale", "0.5")], 1);
}

#[test]
fn mobilenet() {
    check("nets/mobilenet.net", &[("res", "128"), ("alpha", "0.5")], 1);
}

#[test]
fn effnet() {
    check("nets/effnet.net", &[], 3);
}

#[test]
fn fd_mobilenet() {
    check("nets/fd_mobilenet.net", &[("res", "160")], 1);
}
