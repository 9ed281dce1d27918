//! ONNX export: every seed network exports to a model that decodes back with the expected nodes,
//! initializers and shapes; a readable dump of `tests/onnx/all_ops.net`'s model (every op) is a
//! snapshot; and every bad input to `netc export` is a clear error. That ONNX Runtime computes what
//! netc computes is checked by `scripts/check_onnx.py`.

use netc::ir::op::Op;
use netc::onnx::proto::attribute_proto::AttributeType;
use netc::onnx::proto::tensor_proto::DataType;
use netc::onnx::proto::tensor_shape_proto::dimension;
use netc::onnx::proto::{type_proto, AttributeProto, ModelProto, TensorProto, ValueInfoProto};
use netc::runtime::Weights;
use netc::Compiled;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn compile(file: &str, overrides: &[(&str, &str)], batch: usize) -> Compiled {
    let options = netc::Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch,
    };
    netc::compile_file(Path::new(file), &options, Some(netc::onnx::EXPORT_STAGE))
        .unwrap_or_else(|f| panic!("{file}: {}", f.render()))
}

/// Exports, encodes and decodes again: what a reader of the file sees.
fn round_trip(c: &Compiled, weights: &Weights) -> ModelProto {
    let model = c.export_onnx(weights).unwrap_or_else(|d| panic!("{}", d.message));
    let bytes = netc::onnx::encode(&model);
    let decoded = netc::onnx::decode(&bytes, "the export").unwrap();
    assert_eq!(decoded, model);
    decoded
}

fn seed_nets() -> Vec<PathBuf> {
    let mut nets: Vec<PathBuf> = std::fs::read_dir("nets")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "net"))
        .collect();
    nets.sort();
    assert_eq!(nets.len(), 8, "the seed networks");
    nets
}

fn dims(v: &ValueInfoProto) -> Vec<i64> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            assert_eq!(t.elem_type, Some(DataType::Float as i32));
            t.shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) => v,
                    ref other => panic!("dimension {other:?}"),
                })
                .collect()
        }
        other => panic!("not a tensor type: {other:?}"),
    }
}

fn f32_data(t: &TensorProto) -> Vec<f32> {
    assert_eq!(t.data_type, Some(DataType::Float as i32), "{:?}", t.name);
    t.raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i64_data(t: &TensorProto) -> Vec<i64> {
    assert_eq!(t.data_type, Some(DataType::Int64 as i32), "{:?}", t.name);
    t.raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn as_i64(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Checks the invariants every exported model must hold, and that it is the graph with these
/// weights: one node per IR node (three per shuffle), in an order where every input is defined
/// before use, every weight as an initializer with its netc name, shape and values.
fn check_model(c: &Compiled, weights: &Weights, model: &ModelProto) {
    assert_eq!(model.ir_version, Some(netc::onnx::IR_VERSION));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!(model.opset_import[0].domain.as_deref(), Some(""));
    assert_eq!(model.opset_import[0].version, Some(netc::onnx::OPSET));
    assert_eq!(model.producer_name.as_deref(), Some("netc"));
    let g = model.graph.as_ref().unwrap();
    let graph = &c.graph;
    assert_eq!(g.name.as_deref(), Some(graph.name.as_str()));

    // The input keeps its name and shape.
    assert_eq!(g.input.len(), 1);
    let input = graph.node(graph.inputs[0]);
    assert_eq!(g.input[0].name.as_deref(), Some(input.name.as_str()));
    assert_eq!(dims(&g.input[0]), as_i64(&input.shape.0));

    // Every weight is an initializer under its netc name, with its shape and values.
    let inits: BTreeMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name.as_deref().unwrap(), t)).collect();
    assert_eq!(inits.len(), g.initializer.len(), "initializer names are unique");
    for spec in c.expected_weights() {
        let t = inits
            .get(spec.name.as_str())
            .unwrap_or_else(|| panic!("no initializer `{}`", spec.name));
        assert_eq!(t.dims, as_i64(&spec.shape), "{}", spec.name);
        assert_eq!(f32_data(t), weights.get(&spec.name).unwrap().data, "{}", spec.name);
    }

    // One node per IR node, named after it; a shuffle is three, a ceil-mode average pool that
    // counts the padding and runs past it two (with a Pad), a repeated output adds an Identity.
    let mut expected_nodes = 0;
    let ir_names: Vec<&str> = graph
        .g
        .node_weights()
        .filter(|n| n.op != Op::Input)
        .map(|n| {
            expected_nodes += if matches!(n.op, Op::Shuffle { .. }) { 3 } else { 1 };
            n.name.as_str()
        })
        .collect();
    let pads = g.node.iter().filter(|n| n.op_type.as_deref() == Some("Pad")).count();
    let mut outputs: Vec<&str> = graph.outputs.iter().map(|&o| graph.node(o).name.as_str()).collect();
    let distinct: HashSet<&str> = outputs.drain(..).collect();
    let identities = graph.outputs.len() - distinct.len();
    assert_eq!(g.node.len(), expected_nodes + pads + identities);
    let node_names: HashSet<&str> = g.node.iter().map(|n| n.name.as_deref().unwrap()).collect();
    assert_eq!(node_names.len(), g.node.len(), "node names are unique");
    for name in &ir_names {
        assert!(node_names.contains(name), "no ONNX node named `{name}`");
    }

    // Topological order; every value is produced once; every input is defined before use.
    let mut defined: HashSet<&str> = inits.keys().copied().collect();
    defined.insert(g.input[0].name.as_deref().unwrap());
    for n in &g.node {
        for i in &n.input {
            assert!(
                defined.contains(i.as_str()),
                "`{i}` is used by {:?} before it is defined",
                n.name
            );
        }
        assert_eq!(n.output.len(), 1);
        assert!(
            defined.insert(n.output[0].as_str()),
            "`{}` is produced twice",
            n.output[0]
        );
    }
    let out_names: Vec<&str> = g.output.iter().map(|o| o.name.as_deref().unwrap()).collect();
    assert_eq!(out_names.len(), graph.outputs.len());
    assert_eq!(
        out_names.iter().collect::<HashSet<_>>().len(),
        out_names.len(),
        "outputs are distinct"
    );
    for (o, &ix) in g.output.iter().zip(&graph.outputs) {
        assert!(defined.contains(o.name.as_deref().unwrap()));
        assert_eq!(dims(o), as_i64(&graph.node(ix).shape.0));
    }
    // Every other value has its shape recorded.
    let infos: HashSet<&str> = g.value_info.iter().map(|v| v.name.as_deref().unwrap()).collect();
    for n in &g.node {
        let v = n.output[0].as_str();
        assert!(infos.contains(v) || out_names.contains(&v), "no shape for `{v}`");
    }

    // The ops map one to one.
    let count = |op: &str| g.node.iter().filter(|n| n.op_type.as_deref() == Some(op)).count();
    let ir_count = |f: &dyn Fn(&Op) -> bool| graph.g.node_weights().filter(|n| f(&n.op)).count();
    assert_eq!(count("Conv"), ir_count(&|op| matches!(op, Op::Conv(_))));
    assert_eq!(
        count("BatchNormalization"),
        ir_count(&|op| matches!(op, Op::BatchNorm { .. }))
    );
    assert_eq!(count("Gemm"), ir_count(&|op| matches!(op, Op::Dense { .. })));
    assert_eq!(count("Concat"), ir_count(&|op| *op == Op::Concat));
    assert_eq!(count("Add"), ir_count(&|op| *op == Op::Add));
    assert_eq!(count("Transpose"), ir_count(&|op| matches!(op, Op::Shuffle { .. })));
    assert_eq!(count("Slice"), ir_count(&|op| matches!(op, Op::Slice { .. })));
    assert_eq!(count("Softmax"), ir_count(&|op| *op == Op::Softmax));
}

#[test]
fn every_seed_network_exports_and_decodes() {
    for net in seed_nets() {
        let c = compile(net.to_str().unwrap(), &[], 1);
        let w = c.init_weights(0);
        let model = round_trip(&c, &w);
        check_model(&c, &w, &model);
    }
}

#[test]
fn the_op_coverage_network_exports_every_op() {
    let c = compile("tests/onnx/all_ops.net", &[], 1);
    let kinds: HashSet<&str> = c.graph.g.node_weights().map(|n| n.op.kind()).collect();
    for kind in [
        "input",
        "conv",
        "batchnorm",
        "relu",
        "relu6",
        "leaky_relu",
        "maxpool",
        "avgpool",
        "global_avgpool",
        "global_maxpool",
        "dense",
        "flatten",
        "concat",
        "add",
        "slice",
        "shuffle",
        "dropout",
        "softmax",
    ] {
        assert!(kinds.contains(kind), "all_ops.net has no {kind}");
    }
    let w = c.init_weights(3);
    let model = round_trip(&c, &w);
    check_model(&c, &w, &model);
    // The output that is returned twice goes through an Identity the second time.
    let g = model.graph.as_ref().unwrap();
    let outs: Vec<&str> = g.output.iter().map(|o| o.name.as_deref().unwrap()).collect();
    assert_eq!(outs, ["dense", "softmax_2", "add_2", "add_2/output3"]);
    // Ceil-mode pools are exported in floor mode with explicit end padding; the average that
    // counts the padding and whose last window runs past it pads explicitly first.
    let ops: Vec<(&str, &str)> = g
        .node
        .iter()
        .map(|n| (n.name.as_deref().unwrap(), n.op_type.as_deref().unwrap()))
        .filter(|(_, op)| op.ends_with("Pool") || *op == "Pad")
        .collect();
    assert_eq!(
        ops,
        [
            ("maxpool", "MaxPool"),
            ("avgpool/pad", "Pad"),
            ("avgpool", "AveragePool"),
            ("avgpool_2", "AveragePool"),
            ("global_avgpool", "GlobalAveragePool"),
            ("maxpool_2", "MaxPool"),
            ("global_maxpool", "GlobalMaxPool"),
        ]
    );
    for n in &g.node {
        for a in &n.attribute {
            if a.name.as_deref() == Some("ceil_mode") {
                assert_eq!(a.i, Some(0), "{:?}", n.name);
            }
        }
    }
}

#[test]
fn batch_size_is_the_compiled_one() {
    let c = compile("nets/shufflenet_v2.net", &[], 3);
    let w = c.init_weights(0);
    let model = round_trip(&c, &w);
    check_model(&c, &w, &model);
    let g = model.graph.as_ref().unwrap();
    assert_eq!(dims(&g.input[0]), [3, 3, 224, 224]);
    assert_eq!(dims(&g.output[0]), [3, 1000]);
    // The shuffles' reshapes carry the batch size too.
    let shuffle = c
        .graph
        .g
        .node_weights()
        .find(|n| matches!(n.op, Op::Shuffle { .. }))
        .expect("shufflenet_v2 shuffles");
    let Op::Shuffle { groups } = shuffle.op else {
        unreachable!()
    };
    let grouped = g
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(format!("{}/grouped_shape", shuffle.name).as_str()))
        .expect("the shuffle's grouped shape");
    let s = &shuffle.shape.0;
    assert_eq!(s[0], 3);
    assert_eq!(i64_data(grouped), as_i64(&[3, groups, s[1] / groups, s[2], s[3]]));
}

/// A readable form of a model: inputs, outputs, initializers (name, shape, and values of small
/// integer ones), and every node with its inputs, output and attributes.
fn dump(model: &ModelProto) -> String {
    fn attr(a: &AttributeProto) -> String {
        let name = a.name.as_deref().unwrap_or("?");
        match AttributeType::try_from(a.r#type.unwrap_or(0)) {
            Ok(AttributeType::Int) => format!("{name}={}", a.i.unwrap_or(0)),
            Ok(AttributeType::Float) => format!("{name}={}", a.f.unwrap_or(0.0)),
            Ok(AttributeType::Ints) => format!("{name}={:?}", a.ints),
            other => format!("{name}=<{other:?}>"),
        }
    }
    let g = model.graph.as_ref().unwrap();
    let mut out = format!(
        "ir_version {:?}, opset {:?}, producer {:?}\ngraph {:?}: {:?}\n",
        model.ir_version, model.opset_import[0].version, model.producer_name, g.name, g.doc_string
    );
    for m in &model.metadata_props {
        out += &format!(
            "metadata {} = {}\n",
            m.key.as_deref().unwrap(),
            m.value.as_deref().unwrap()
        );
    }
    for i in &g.input {
        out += &format!("input  {} {:?}\n", i.name.as_deref().unwrap(), dims(i));
    }
    for o in &g.output {
        out += &format!("output {} {:?}\n", o.name.as_deref().unwrap(), dims(o));
    }
    for t in &g.initializer {
        let values = if t.data_type == Some(DataType::Int64 as i32) {
            format!(" = {:?}", i64_data(t))
        } else if t.dims.is_empty() {
            format!(" = {:?}", f32_data(t))
        } else {
            String::new()
        };
        let ty = DataType::try_from(t.data_type.unwrap()).unwrap().as_str_name();
        out += &format!("init   {} {ty} {:?}{values}\n", t.name.as_deref().unwrap(), t.dims);
    }
    for n in &g.node {
        let attrs: Vec<String> = n.attribute.iter().map(attr).collect();
        out += &format!(
            "node   {}: {}({}) -> {}{}{}\n",
            n.name.as_deref().unwrap(),
            n.op_type.as_deref().unwrap(),
            n.input.join(", "),
            n.output.join(", "),
            if attrs.is_empty() {
                String::new()
            } else {
                format!("  {}", attrs.join(" "))
            },
            n.doc_string.as_deref().map(|d| format!("  # {d}")).unwrap_or_default(),
        );
    }
    let shapes: Vec<String> = g
        .value_info
        .iter()
        .map(|v| format!("{} {:?}", v.name.as_deref().unwrap(), dims(v)))
        .collect();
    out += &format!("value_info {}\n", shapes.join(", "));
    out
}

#[test]
fn all_ops_model_snapshot() {
    let c = compile("tests/onnx/all_ops.net", &[], 1);
    let model = round_trip(&c, &c.init_weights(0));
    insta::assert_snapshot!(dump(&model));
}

#[test]
fn garbage_is_not_a_model() {
    let d = netc::onnx::decode(b"\xff\xff\xff\xff not protobuf", "junk.onnx").unwrap_err();
    assert_eq!(d.code, "E0602");
    assert!(
        d.message.contains("`junk.onnx` is not a valid ONNX model"),
        "{}",
        d.message
    );
}

#[test]
fn weights_of_another_network_are_refused() {
    let c = compile("nets/effnet.net", &[], 1);
    let other = compile("nets/squeezenet.net", &[], 1);
    let d = c.export_onnx(&other.init_weights(0)).unwrap_err();
    assert_eq!(d.code, "E0404", "{}", d.message);
}

#[test]
fn a_model_over_two_gib_is_refused_before_any_weights_exist() {
    let dir = scratch("huge");
    let file = dir.join("huge.net");
    std::fs::write(
        &file,
        "net huge {\n    input x: [16384, 1, 1]\n    return x |> flatten |> dense(16000) |> dense(16000) |> dense(16000)\n}\n",
    )
    .unwrap();
    let c = compile(file.to_str().unwrap(), &[], 1);
    let d = netc::onnx::check_size(&c.graph).unwrap_err();
    assert_eq!(d.code, "E0601");
    assert!(d.message.contains("more than the 2147483647"), "{}", d.message);
    let d = c.export_onnx(&Weights::default()).unwrap_err();
    assert_eq!(d.code, "E0601");
    let o = netc(&[
        "export",
        file.to_str().unwrap(),
        "-o",
        dir.join("huge.onnx").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E0601]"), "{}", stderr(&o));
    assert!(!dir.join("huge.onnx").exists());
    std::fs::remove_dir_all(&dir).ok();
}

// The command line.

fn netc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the netc binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-onnx-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn export_writes_a_model_with_the_given_weights() {
    let dir = scratch("cli");
    let w = dir.join("w.safetensors");
    let out = dir.join("effnet.onnx");
    let o = netc(&["init", "nets/effnet.net", "--seed", "7", "-o", w.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = netc(&[
        "export",
        "nets/effnet.net",
        "--weights",
        w.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("effnet.onnx (ONNX opset 13: 42 nodes, 62 initializers)"),
        "{err}"
    );
    assert!(!err.contains("seeded initialization"), "{err}");
    let model = netc::onnx::decode(&std::fs::read(&out).unwrap(), "effnet.onnx").unwrap();
    let c = compile("nets/effnet.net", &[], 1);
    check_model(&c, &c.init_weights(7), &model);

    // Without --weights: the seeded initialization, saying so; --set and --batch apply.
    let o = netc(&[
        "export",
        "nets/mobilenet_v2.net",
        "--set",
        "res=96",
        "--batch",
        "2",
        "--seed",
        "5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("using the seeded initialization (seed 5)"));
    let model = netc::onnx::decode(&std::fs::read(&out).unwrap(), "m.onnx").unwrap();
    let c = compile("nets/mobilenet_v2.net", &[("res", "96")], 2);
    check_model(&c, &c.init_weights(5), &model);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_weights_are_clear_errors() {
    let dir = scratch("bad-weights");
    let out = dir.join("out.onnx");
    let out_arg = out.to_str().unwrap();

    // Weights of another network: the first missing tensor is named.
    let w = dir.join("squeezenet.safetensors");
    assert!(netc(&["init", "nets/squeezenet.net", "-o", w.to_str().unwrap()])
        .status
        .success());
    let o = netc(&[
        "export",
        "nets/effnet.net",
        "--weights",
        w.to_str().unwrap(),
        "-o",
        out_arg,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("error[E0404]"), "{err}");
    assert!(err.contains("has no tensor `block1.pw1x1.weight`"), "{err}");

    // Not a safetensors file.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let o = netc(&[
        "export",
        "nets/effnet.net",
        "--weights",
        junk.to_str().unwrap(),
        "-o",
        out_arg,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E0403]"), "{}", stderr(&o));

    // No such file.
    let missing = dir.join("missing.safetensors");
    let o = netc(&[
        "export",
        "nets/effnet.net",
        "--weights",
        missing.to_str().unwrap(),
        "-o",
        out_arg,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("error[E0401]: cannot read"), "{err}");
    assert!(err.contains("missing.safetensors"), "{err}");

    assert!(!out.exists(), "nothing is written when the weights are bad");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unwritable_output_is_a_clear_error() {
    let dir = scratch("unwritable");
    for bad in [dir.join("no/such/dir/model.onnx"), dir.clone()] {
        let o = netc(&["export", "nets/effnet.net", "-o", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("error[E0402]: cannot write `{}`", bad.display())),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_broken_network_is_reported_as_by_every_command() {
    let dir = scratch("broken");
    let file = dir.join("broken.net");
    std::fs::write(
        &file,
        "net broken {\n    input x: [3, 8, 8]\n    return x |> conv(4, 3) + x\n}\n",
    )
    .unwrap();
    let out = dir.join("out.onnx");
    let o = netc(&["export", file.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error[E0106]"), "{}", stderr(&o));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).ok();
}
