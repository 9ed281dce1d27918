//! Weights files, input files and outputs: the round trips that must hold, and every bad-input
//! case, each with the message it must give.

use netc::runtime::{input, Tensor, Weights};
use netc::Compiled;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

fn compile(file: &str, overrides: &[(&str, &str)]) -> Compiled {
    let options = netc::Options {
        overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        batch: 1,
    };
    netc::compile_file(Path::new(file), &options, None).unwrap_or_else(|f| panic!("{}", f.render()))
}

fn small_net() -> Compiled {
    compile(
        "nets/mobilenet_v2.net",
        &[("res", "32"), ("alpha", "0.35"), ("classes", "10")],
    )
}

/// A fresh directory under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file from (name, dtype, shape, bytes).
fn safetensors_file(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The tensors of `w` as (name, F32, shape, bytes), for building modified files.
fn entries(w: &Weights) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    w.iter()
        .map(|(n, t)| (n.clone(), Dtype::F32, t.shape.clone(), f32_bytes(&t.data)))
        .collect()
}

fn load_error(c: &Compiled, bytes: &[u8], dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let d = c.load_weights(&path).expect_err("loading must fail");
    format!(
        "{}: {}",
        d.code,
        [d.message.clone()]
            .into_iter()
            .chain(d.notes.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

#[test]
fn init_save_load_run_gives_identical_outputs() {
    let c = small_net();
    let dir = scratch("roundtrip");
    let w = c.init_weights(7);
    let path = dir.join("w.safetensors");
    w.save(&path).unwrap();
    let loaded = c.load_weights(&path).unwrap();
    assert_eq!(loaded, w);
    let x = input::random(c.input_shape(), 3);
    let a = c.run_reference(&w, &x).unwrap();
    let b = c.run_reference(&loaded, &x).unwrap();
    assert_eq!(a, b);
    assert!(a[0].all_finite());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn initialization_depends_on_the_seed_only() {
    let c = small_net();
    assert_eq!(c.init_weights(1), c.init_weights(1));
    assert_ne!(c.init_weights(1), c.init_weights(2));
    // Batchnorm statistics are not the identity, so a run exercises them.
    let w = c.init_weights(1);
    let var = w.get("stem.batchnorm.var").unwrap();
    assert!(var.data.iter().all(|v| (0.5..1.5).contains(v)));
    assert!(var.data.iter().any(|v| (v - 1.0).abs() > 0.05));
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let c = small_net();
    let dir = scratch("missing");
    let mut t = entries(&c.init_weights(0));
    t.retain(|e| e.0 != "stem.conv.weight");
    let msg = load_error(&c, &safetensors_file(&t), &dir, "w.safetensors");
    assert!(msg.starts_with("E0404"), "{msg}");
    assert!(msg.contains("has no tensor `stem.conv.weight`"), "{msg}");
    assert!(msg.contains("[16, 3, 3, 3]"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unexpected_tensor_is_named() {
    let c = small_net();
    let dir = scratch("unexpected");
    let mut t = entries(&c.init_weights(0));
    t.push(("stem.conv.wieght".into(), Dtype::F32, vec![1], f32_bytes(&[1.0])));
    let msg = load_error(&c, &safetensors_file(&t), &dir, "w.safetensors");
    assert!(msg.starts_with("E0405"), "{msg}");
    assert!(
        msg.contains("`stem.conv.wieght` that the network does not use"),
        "{msg}"
    );
    assert!(msg.contains("did you mean `stem.conv.weight`?"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn wrong_shape_names_both_shapes() {
    let c = small_net();
    let dir = scratch("shape");
    let mut t = entries(&c.init_weights(0));
    let e = t.iter_mut().find(|e| e.0 == "classifier.bias").unwrap();
    e.2 = vec![5, 2];
    let msg = load_error(&c, &safetensors_file(&t), &dir, "w.safetensors");
    assert!(msg.starts_with("E0406"), "{msg}");
    assert!(
        msg.contains("`classifier.bias`") && msg.contains("[5, 2]") && msg.contains("expects [10]"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_dtype_is_named() {
    let c = small_net();
    let dir = scratch("dtype");
    let mut t = entries(&c.init_weights(0));
    let e = t.iter_mut().find(|e| e.0 == "classifier.bias").unwrap();
    e.1 = Dtype::I32;
    let msg = load_error(&c, &safetensors_file(&t), &dir, "w.safetensors");
    assert!(msg.starts_with("E0407"), "{msg}");
    assert!(msg.contains("`classifier.bias` has dtype I32"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn half_precision_files_are_converted() {
    let c = small_net();
    let dir = scratch("half");
    let w = c.init_weights(0);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let t: Vec<_> = w
            .iter()
            .map(|(n, t)| {
                let bytes: Vec<u8> = t
                    .data
                    .iter()
                    .flat_map(|&v| match dtype {
                        Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                (n.clone(), dtype, t.shape.clone(), bytes)
            })
            .collect();
        let path = dir.join("half.safetensors");
        std::fs::write(&path, safetensors_file(&t)).unwrap();
        let loaded = c.load_weights(&path).unwrap();
        let a = &w.get("stem.conv.weight").unwrap().data;
        let b = &loaded.get("stem.conv.weight").unwrap().data;
        let tolerance = if dtype == Dtype::F16 { 1e-3 } else { 1e-2 };
        assert!(
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tolerance * x.abs().max(1e-2)),
            "{dtype:?}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let c = small_net();
    let dir = scratch("corrupt");
    let full = c.init_weights(0).to_safetensors().unwrap();
    let msg = load_error(&c, &full[..full.len() / 2], &dir, "half.safetensors");
    assert!(
        msg.starts_with("E0403") && msg.contains("not a valid safetensors file"),
        "{msg}"
    );
    let msg = load_error(&c, b"not a safetensors file at all", &dir, "text.safetensors");
    assert!(msg.starts_with("E0403"), "{msg}");
    let msg = load_error(&c, &[], &dir, "empty.safetensors");
    assert!(msg.starts_with("E0403"), "{msg}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn missing_weights_file_is_an_error() {
    let c = small_net();
    let d = c.load_weights(Path::new("does/not/exist.safetensors")).unwrap_err();
    assert_eq!(d.code, "E0401");
    assert!(
        d.message.contains("cannot read `does/not/exist.safetensors`"),
        "{}",
        d.message
    );
}

fn npy_bytes(descr: &str, shape: &[usize], payload: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(payload);
    out
}

#[test]
fn npy_input_round_trip() {
    let dir = scratch("npy");
    let t = input::random(&[1, 3, 4, 5], 9);
    let path = dir.join("x.npy");
    input::save_npy(&path, &t).unwrap();
    assert_eq!(input::npy(&path, &[1, 3, 4, 5]).unwrap(), t);
    // [C, H, W] is accepted for batch 1.
    let bytes = npy_bytes("<f4", &[3, 4, 5], &f32_bytes(&t.data));
    assert_eq!(input::npy_from_bytes(&bytes, "x.npy", &[1, 3, 4, 5]).unwrap(), t);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn npy_wrong_shape_dtype_and_truncation_are_errors() {
    let shape = [1, 3, 4, 4];
    let good = f32_bytes(&[0.5; 48]);
    let d = input::npy_from_bytes(
        &npy_bytes("<f4", &[1, 3, 4, 5], &f32_bytes(&[0.5; 60])),
        "x.npy",
        &shape,
    )
    .unwrap_err();
    assert_eq!(d.code, "E0505");
    assert!(
        d.message
            .contains("has shape [1, 3, 4, 5], the network's input is [1, 3, 4, 4]"),
        "{}",
        d.message
    );
    let d = input::npy_from_bytes(&npy_bytes("<f8", &shape, &[0; 384]), "x.npy", &shape).unwrap_err();
    assert_eq!(d.code, "E0504");
    assert!(d.message.contains("holds <f8 data"), "{}", d.message);
    let d = input::npy_from_bytes(&npy_bytes("<f4", &shape, &good[..100]), "x.npy", &shape).unwrap_err();
    assert_eq!(d.code, "E0503", "{}", d.message);
    let d = input::npy_from_bytes(b"garbage", "x.npy", &shape).unwrap_err();
    assert_eq!(d.code, "E0503");
    let d = input::npy(Path::new("no/such/input.npy"), &shape).unwrap_err();
    assert_eq!(d.code, "E0401");
}

#[test]
fn image_input_is_resized_cropped_and_normalized() {
    let dir = scratch("image");
    // A 40x20 image: left half black, right half white.
    let img = image::RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            image::Rgb([0, 0, 0])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    let path = dir.join("x.png");
    img.save(&path).unwrap();
    let none = input::Normalize::preset("none").unwrap();
    let t = input::image(&path, &[2, 3, 10, 10], none).unwrap();
    assert_eq!(t.shape, vec![2, 3, 10, 10]);
    // Scaled to 20x10 and the middle 10 columns kept: columns 0-4 black, 5-9 white.
    assert!(
        t.data[0].abs() < 1e-6 && (t.data[9] - 1.0).abs() < 1e-6,
        "{:?}",
        &t.data[..10]
    );
    let imagenet = input::Normalize::preset("imagenet").unwrap();
    let n = input::image(&path, &[1, 3, 10, 10], imagenet).unwrap();
    assert!((n.data[0] - (0.0 - 0.485) / 0.229).abs() < 1e-5);
    // Batch items are the same image.
    assert_eq!(t.data[..300], t.data[300..]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unreadable_images_are_errors() {
    let none = input::Normalize::preset("none").unwrap();
    let d = input::image_from_bytes(b"\x89PNG\r\n\x1a\nbroken", "x.png", &[1, 3, 8, 8], none).unwrap_err();
    assert_eq!(d.code, "E0506");
    assert!(d.message.contains("cannot decode image `x.png`"), "{}", d.message);
    let d = input::image_from_bytes(b"plain text", "x.jpg", &[1, 3, 8, 8], none).unwrap_err();
    assert_eq!(d.code, "E0506");
    let d = input::image_from_bytes(b"", "x.png", &[1, 4, 8, 8], none).unwrap_err();
    assert_eq!(d.code, "E0507");
    let d = input::image(Path::new("no/such/image.png"), &[1, 3, 8, 8], none).unwrap_err();
    assert_eq!(d.code, "E0401");
}

#[test]
fn wrong_input_shape_is_an_error() {
    let c = small_net();
    let d = c
        .run_reference(&c.init_weights(0), &Tensor::zeros(&[1, 3, 8, 8]))
        .unwrap_err();
    assert_eq!(d.code, "E0502");
    assert!(
        d.message.contains("must have shape [1, 3, 32, 32], found [1, 3, 8, 8]"),
        "{}",
        d.message
    );
}

#[test]
fn top_k_applies_softmax_and_ranks() {
    let t = Tensor::new(vec![1, 4], vec![0.0, 2.0, 1.0, 2.0]);
    let top = input::top_k(&t, 0, 3, false);
    assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3, 2]);
    let sum: f32 = input::top_k(&t, 0, 4, false).iter().map(|p| p.1).sum();
    assert!((sum - 1.0).abs() < 1e-6);
}

#[test]
fn activation_memory_beyond_the_limit_is_an_error() {
    // Ten 805 MB tensors live at once: each is under the tensor limit, the arena is not.
    let src = "net wide {\n    input x: [64, 1024, 1024]\n    let parts = [x |> relu, x |> relu6, x |> relu, x |> relu6, x |> relu, x |> relu6, x |> relu, x |> relu6, x |> relu, x |> relu6]\n    let s = parts[0]\n    for i in range(1, 10) {\n        s = add(s, parts[i])\n    }\n    return s\n}\n";
    let options = netc::Options {
        overrides: vec![],
        batch: 3,
    };
    let c = netc::compile_source("wide.net", src, None, &options, None).unwrap_or_else(|f| panic!("{}", f.render()));
    let Err(d) = c.compile_jit(&c.init_weights(0), &netc::codegen::Options::default()) else {
        panic!("a 9 GB arena must be refused");
    };
    assert_eq!(d.code, "E0511");
    assert!(
        d.message.contains("bytes of activation memory at batch 3"),
        "{}",
        d.message
    );
}
