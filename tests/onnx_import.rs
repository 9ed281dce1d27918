//! ONNX import: every seed network survives export -> import -> export with the same outputs and
//! node count; hand-built models cover the operators the exporter does not write; random and
//! damaged files never panic.

use netc::onnx::import::{import, import_model};
use netc::onnx::proto::attribute_proto::AttributeType;
use netc::onnx::proto::tensor_proto::DataType;
use netc::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use netc::onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use netc::runtime::{input, Tensor};
use netc::{compile_file, compile_source, Compiled, Options};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn show(d: &netc::diag::Diagnostic) -> String {
    netc::diag::render(&netc::source::SourceMap::new(), std::slice::from_ref(d))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-onnx-import-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn compile_export_stage(path: &Path, overrides: &[(&str, &str)]) -> Compiled {
    let options = Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch: 1,
    };
    compile_file(path, &options, Some(netc::onnx::EXPORT_STAGE)).unwrap_or_else(|f| panic!("{}", f.render()))
}

fn assert_close(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.shape, b.shape, "{what}: shapes");
    let scale = a.max_abs().max(1e-6);
    for (k, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * scale.max(x.abs()),
            "{what}: element {k}: {x} vs {y}"
        );
    }
}

/// Smaller configurations of the large seed networks, so the interpreter runs them quickly.
fn overrides(net: &str) -> Vec<(&'static str, &'static str)> {
    match net {
        "mobilenet" | "mobilenet_v2" | "fd_mobilenet" => vec![("res", "96")],
        _ => vec![],
    }
}

#[test]
fn every_seed_network_round_trips() {
    let dir = temp_dir("roundtrip");
    let mut nets: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    nets.sort();
    assert!(nets.len() >= 8);
    for path in nets {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let over = overrides(&stem);
        let original = compile_export_stage(&path, &over);
        let weights = original.init_weights(7);
        let model = original.export_onnx(&weights).unwrap();
        let bytes = netc::onnx::encode(&model);
        let imported =
            import(&bytes, &format!("{stem}.onnx"), &stem).unwrap_or_else(|d| panic!("{stem}: {}", show(&d)));

        let net_path = dir.join(format!("{stem}.net"));
        let w_path = dir.join(format!("{stem}.safetensors"));
        std::fs::write(&net_path, &imported.text).unwrap();
        imported.weights.save(&w_path).unwrap();
        let reimported = compile_export_stage(&net_path, &[]);
        let w2 = reimported
            .load_weights(&w_path)
            .unwrap_or_else(|d| panic!("{stem}: {}", show(&d)));

        let x = input::random(original.input_shape(), 3);
        let a = original.run_reference(&weights, &x).unwrap();
        let b = reimported.run_reference(&w2, &x).unwrap();
        assert_eq!(a.len(), b.len(), "{stem}: outputs");
        for (ta, tb) in a.iter().zip(&b) {
            assert_close(ta, tb, &stem);
        }
        let again = reimported.export_onnx(&w2).unwrap();
        assert_eq!(
            again.graph.as_ref().unwrap().node.len(),
            model.graph.as_ref().unwrap().node.len(),
            "{stem}: node count of the re-exported model"
        );
    }
}

// ---- hand-built models ----

fn dim(v: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(v)),
        denotation: None,
    }
}

fn value(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            denotation: None,
        }),
        ..ValueInfoProto::default()
    }
}

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data.to_vec(),
        ..TensorProto::default()
    }
}

fn ints(name: &str, data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![data.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: data.to_vec(),
        ..TensorProto::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..NodeProto::default()
    }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..AttributeProto::default()
    }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..AttributeProto::default()
    }
}

fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..AttributeProto::default()
    }
}

fn model(input: ValueInfoProto, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, outputs: &[&str]) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            name: Some("hand".into()),
            node: nodes,
            initializer: inits,
            input: vec![input],
            output: outputs.iter().map(|o| value(o, vec![])).collect(),
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

/// Compiles an import's text with its weights and runs the interpreter.
fn run_imported(text: &str, weights: &netc::runtime::Weights, x: &Tensor) -> Vec<Tensor> {
    let c = compile_source(
        "t.net",
        text,
        None,
        &Options {
            overrides: vec![],
            batch: 1,
        },
        Some(netc::onnx::EXPORT_STAGE),
    )
    .unwrap_or_else(|f| panic!("{}\n{text}", f.render()));
    c.run_reference(weights, x).unwrap()
}

#[test]
fn reduce_mean_matmul_add_split_identity() {
    // x [1, 4, 2, 2] -> Split [1, 3] -> Identity(second) -> Concat -> ReduceMean(2, 3; keepdims 0)
    // -> MatMul W [4, 2] -> Add b [2]
    let w: Vec<f32> = (0..8).map(|v| v as f32 * 0.5 - 1.0).collect();
    let b = [0.25f32, -0.5];
    let m = model(
        value("x", vec![dim(1), dim(4), dim(2), dim(2)]),
        vec![
            node(
                "Split",
                "/split",
                &["x", "sizes"],
                &["s0", "s1"],
                vec![a_int("axis", 1)],
            ),
            node("Identity", "id", &["s1"], &["s1b"], vec![]),
            node("Concat", "cat", &["s0", "s1b"], &["c"], vec![a_int("axis", 1)]),
            node(
                "ReduceMean",
                "gap",
                &["c"],
                &["g"],
                vec![a_ints("axes", &[2, 3]), a_int("keepdims", 0)],
            ),
            node("MatMul", "fc/MatMul", &["g", "W"], &["mm"], vec![]),
            node("Add", "fc/Add", &["mm", "B"], &["y"], vec![]),
        ],
        vec![ints("sizes", &[1, 3]), floats("W", &[4, 2], &w), floats("B", &[2], &b)],
        &["y"],
    );
    let imp = import_model(&m, "hand.onnx", "hand").unwrap_or_else(|d| panic!("{}", show(&d)));
    assert!(imp.text.contains("split(x, [1, 3]) as split"), "{}", imp.text);
    assert!(imp.text.contains("global_avgpool as gap"), "{}", imp.text);
    assert!(imp.text.contains("dense(2) as fc.MatMul"), "{}", imp.text);
    assert!(imp.text.contains("# MatMul + Add"), "{}", imp.text);
    let x = input::random(&[1, 4, 2, 2], 1);
    let y = &run_imported(&imp.text, &imp.weights, &x)[0];
    assert_eq!(y.shape, vec![1, 2]);
    let means: Vec<f32> = (0..4)
        .map(|c| x.data[c * 4..c * 4 + 4].iter().sum::<f32>() / 4.0)
        .collect();
    for j in 0..2 {
        let expect = b[j] + (0..4).map(|k| means[k] * w[k * 2 + j]).sum::<f32>();
        assert!((y.data[j] - expect).abs() < 1e-5, "{} vs {expect}", y.data[j]);
    }
}

/// PyTorch exports `x.chunk(2, dim=1)` as shape arithmetic: Shape -> Gather -> Add -> Div -> Mul
/// giving the bounds of two Slices. The importer folds it to constants and writes two slices.
#[test]
fn pytorch_chunk_shape_arithmetic_folds_to_slices() {
    let c = |name: &str, v: &[i64]| {
        node(
            "Constant",
            name,
            &[],
            &[name],
            vec![AttributeProto {
                name: Some("value".into()),
                r#type: Some(AttributeType::Tensor as i32),
                t: Some(ints(name, v)),
                ..AttributeProto::default()
            }],
        )
    };
    let m = model(
        value("x", vec![dim(1), dim(6), dim(2), dim(3)]),
        vec![
            node("Shape", "chunk/Shape", &["x"], &["shape"], vec![]),
            c("one", &[1]),
            c("zero", &[0]),
            c("two", &[2]),
            node(
                "Gather",
                "chunk/Gather",
                &["shape", "one"],
                &["channels"],
                vec![a_int("axis", 0)],
            ),
            node("Add", "chunk/Add", &["channels", "one"], &["plus"], vec![]),
            node("Div", "chunk/Div", &["plus", "two"], &["half"], vec![]),
            node("Mul", "chunk/Mul", &["half", "one"], &["end0"], vec![]),
            node("Mul", "chunk/Mul_1", &["half", "two"], &["end1"], vec![]),
            node("Sub", "chunk/Sub", &["end1", "zero"], &["end1b"], vec![]),
            node("Slice", "chunk/Slice", &["x", "zero", "end0", "one"], &["a"], vec![]),
            node("Slice", "chunk/Slice_1", &["x", "end0", "end1b", "one"], &["b"], vec![]),
            node("Relu", "relu", &["b"], &["rb"], vec![]),
            node("Concat", "cat", &["rb", "a"], &["y"], vec![a_int("axis", 1)]),
        ],
        vec![],
        &["y"],
    );
    let imp = import_model(&m, "chunk.onnx", "chunk").unwrap_or_else(|d| panic!("{}", show(&d)));
    insta::assert_snapshot!(imp.text);
    let x = input::random(&[1, 6, 2, 3], 3);
    let y = &run_imported(&imp.text, &imp.weights, &x)[0];
    assert_eq!(y.shape, vec![1, 6, 2, 3]);
    let expect: Vec<f32> = x.data[18..]
        .iter()
        .map(|v| v.max(0.0))
        .chain(x.data[..18].iter().copied())
        .collect();
    assert_eq!(y.data, expect);
}

/// Folding refuses what it cannot compute, naming the node.
#[test]
fn shape_arithmetic_errors_name_the_node() {
    let m = model(
        value("x", vec![dim(1), dim(6), dim(2), dim(3)]),
        vec![
            node("Shape", "s", &["x"], &["shape"], vec![]),
            node("Gather", "g", &["shape", "nine"], &["bad"], vec![a_int("axis", 0)]),
            node("Slice", "sl", &["x", "zero", "bad", "one"], &["y"], vec![]),
        ],
        vec![ints("nine", &[9]), ints("zero", &[0]), ints("one", &[1])],
        &["y"],
    );
    let d = import_model(&m, "g.onnx", "g").unwrap_err();
    let text = show(&d);
    assert!(
        text.contains("`g`") && text.contains("index 9 is outside a tensor of 4 elements"),
        "{text}"
    );
    let m = model(
        value("x", vec![dim(1), dim(6), dim(2), dim(3)]),
        vec![
            node("Shape", "s", &["x"], &["shape"], vec![]),
            node("Div", "d", &["shape", "zero"], &["bad"], vec![]),
            node("Slice", "sl", &["x", "zero", "bad", "one"], &["y"], vec![]),
        ],
        vec![ints("zero", &[0]), ints("one", &[1])],
        &["y"],
    );
    let text = show(&import_model(&m, "d.onnx", "d").unwrap_err());
    assert!(text.contains("`d`") && text.contains("divides by zero"), "{text}");
    let m = model(
        value("x", vec![dim(1), dim(6), dim(2), dim(3)]),
        vec![node("Mul", "m", &["x", "x"], &["y"], vec![])],
        vec![],
        &["y"],
    );
    let text = show(&import_model(&m, "m.onnx", "m").unwrap_err());
    assert!(text.contains("`m`") && text.contains("`Mul`"), "{text}");
}

#[test]
fn conv_same_upper_and_relu6_clip() {
    let w: Vec<f32> = (0..2 * 3 * 3 * 3).map(|v| (v % 7) as f32 * 0.1 - 0.3).collect();
    let m = model(
        value("img", vec![dim(1), dim(3), dim(7), dim(7)]),
        vec![
            node(
                "Conv",
                "stem",
                &["img", "W"],
                &["c"],
                vec![a_str("auto_pad", "SAME_UPPER"), a_ints("strides", &[2, 2])],
            ),
            node("Clip", "act", &["c", "lo", "hi"], &["y"], vec![]),
        ],
        vec![
            floats("W", &[2, 3, 3, 3], &w),
            floats("lo", &[], &[0.0]),
            floats("hi", &[], &[6.0]),
        ],
        &["y"],
    );
    let imp = import_model(&m, "hand.onnx", "hand").unwrap_or_else(|d| panic!("{}", show(&d)));
    assert!(
        imp.text
            .contains("conv(2, 3, stride = 2, pad = same, bias = false) as stem"),
        "{}",
        imp.text
    );
    assert!(imp.text.contains("relu6 as act"), "{}", imp.text);
    let x = input::random(&[1, 3, 7, 7], 2);
    let y = &run_imported(&imp.text, &imp.weights, &x)[0];
    assert_eq!(y.shape, vec![1, 2, 4, 4]);
    // SAME_UPPER at 7 with stride 2 pads one pixel on each side: output (0, 0) sees rows and
    // columns -1..2.
    let mut acc = 0.0f32;
    for c in 0..3 {
        for i in 0..3 {
            for j in 0..3 {
                let (r, s) = (i as i64 - 1, j as i64 - 1);
                if r >= 0 && s >= 0 {
                    acc += x.data[c * 49 + r as usize * 7 + s as usize] * w[c * 9 + i * 3 + j];
                }
            }
        }
    }
    assert!((y.data[0] - acc.clamp(0.0, 6.0)).abs() < 1e-5);
}

#[test]
fn clip_with_other_bounds_names_the_attribute() {
    let m = model(
        value("x", vec![dim(1), dim(2), dim(4), dim(4)]),
        vec![node("Clip", "/act/Clip", &["x", "lo", "hi"], &["y"], vec![])],
        vec![floats("lo", &[], &[0.0]), floats("hi", &[], &[5.0])],
        &["y"],
    );
    let d = show(&import_model(&m, "hand.onnx", "hand").unwrap_err());
    assert!(
        d.contains("E0704") && d.contains("/act/Clip") && d.contains("`max`") && d.contains("5.0"),
        "{d}"
    );
}

#[test]
fn unsupported_op_names_node_and_op() {
    let m = model(
        value("x", vec![dim(1), dim(2), dim(4), dim(4)]),
        vec![node("Sigmoid", "gate", &["x"], &["y"], vec![])],
        vec![],
        &["y"],
    );
    let d = show(&import_model(&m, "hand.onnx", "hand").unwrap_err());
    assert!(
        d.contains("E0703") && d.contains("`gate`") && d.contains("Sigmoid"),
        "{d}"
    );
}

#[test]
fn symbolic_batch_is_batch_one_and_symbolic_channels_are_refused() {
    let sym = Dimension {
        value: Some(dimension::Value::DimParam("N".into())),
        denotation: None,
    };
    let relu = || vec![node("Relu", "r", &["x"], &["y"], vec![])];
    let m = model(
        value("x", vec![sym.clone(), dim(2), dim(4), dim(4)]),
        relu(),
        vec![],
        &["y"],
    );
    let imp = import_model(&m, "hand.onnx", "hand").unwrap();
    assert_eq!(imp.batch, 1);
    assert!(imp.text.contains("symbolic"), "{}", imp.text);
    let m = model(value("x", vec![dim(1), sym, dim(4), dim(4)]), relu(), vec![], &["y"]);
    let d = show(&import_model(&m, "hand.onnx", "hand").unwrap_err());
    assert!(d.contains("E0710") && d.contains("channels"), "{d}");
}

#[test]
fn external_data_is_refused() {
    let mut w = floats("W", &[2, 2, 1, 1], &[]);
    w.data_location = Some(1);
    let m = model(
        value("x", vec![dim(1), dim(2), dim(4), dim(4)]),
        vec![node("Conv", "c", &["x", "W"], &["y"], vec![])],
        vec![w],
        &["y"],
    );
    let d = show(&import_model(&m, "hand.onnx", "hand").unwrap_err());
    assert!(d.contains("E0706") && d.contains("external"), "{d}");
}

#[test]
fn truncated_model_is_a_diagnostic() {
    let c = compile_export_stage(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/nets/effnet.net")), &[]);
    let bytes = netc::onnx::encode(&c.export_onnx(&c.init_weights(0)).unwrap());
    let d = show(&import(&bytes[..bytes.len() / 2], "cut.onnx", "cut").unwrap_err());
    assert!(d.contains("E0701") && d.contains("cut.onnx"), "{d}");
}

// ---- the command line ----

#[test]
fn cli_imports_and_runs_and_refuses_unsupported_ops() {
    let dir = temp_dir("cli");
    let c = compile_export_stage(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/nets/effnet.net")), &[]);
    let onnx = dir.join("effnet.onnx");
    netc::onnx::write(&c.export_onnx(&c.init_weights(0)).unwrap(), &onnx).unwrap();
    let out = dir.join("effnet_imported.net");
    let netc_bin = env!("CARGO_BIN_EXE_netc");
    let o = std::process::Command::new(netc_bin)
        .args(["import", onnx.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = dir.join("effnet_imported.safetensors");
    assert!(weights.exists());
    let o = std::process::Command::new(netc_bin)
        .args(["run", out.to_str().unwrap(), "--weights", weights.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let bad = dir.join("sigmoid.onnx");
    let m = model(
        value("x", vec![dim(1), dim(2), dim(4), dim(4)]),
        vec![node("Sigmoid", "gate", &["x"], &["y"], vec![])],
        vec![],
        &["y"],
    );
    netc::onnx::write(&m, &bad).unwrap();
    let o = std::process::Command::new(netc_bin)
        .args([
            "import",
            bad.to_str().unwrap(),
            "-o",
            dir.join("bad.net").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("E0703") && err.contains("Sigmoid"), "{err}");
}

// ---- random and damaged files ----

fn effnet_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let c = compile_export_stage(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/nets/effnet.net")), &[]);
        netc::onnx::encode(&c.export_onnx(&c.init_weights(0)).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = import(&bytes, "random.onnx", "random");
    }

    #[test]
    fn damaged_models_never_panic(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<proptest::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = effnet_bytes().to_vec();
        for (at, v) in edits {
            let k = at.index(bytes.len());
            bytes[k] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Err(d) = import(&bytes, "damaged.onnx", "damaged") {
            prop_assert!(d.code.starts_with("E07") || d.code.starts_with("E04"), "{}", show(&d));
        }
    }
}
