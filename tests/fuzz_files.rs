//! Weights files, `.npy` files and images built from random or mutated bytes never panic the
//! loaders: each either loads or gives a diagnostic.

use netc::runtime::{input, Weights};
use proptest::prelude::*;
use std::sync::OnceLock;

fn net() -> &'static netc::Compiled {
    static NET: OnceLock<netc::Compiled> = OnceLock::new();
    NET.get_or_init(|| {
        let options = netc::Options {
            overrides: vec![("res".into(), "32".into()), ("alpha".into(), "0.35".into())],
            batch: 1,
        };
        netc::compile_file(std::path::Path::new("nets/mobilenet_v2.net"), &options, None).unwrap()
    })
}

fn valid_weights() -> &'static Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| net().init_weights(0).to_safetensors().unwrap())
}

fn valid_npy() -> &'static Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("netc-fuzz-{}.npy", std::process::id()));
        input::save_npy(&path, &input::random(&[1, 3, 8, 8], 1)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(path).ok();
        bytes
    })
}

/// Applies edits (position, new byte) and an optional truncation to `base`.
fn mutate(base: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn check_weights(bytes: &[u8]) {
    match Weights::from_safetensors(bytes, "fuzz.safetensors") {
        Ok(w) => {
            let _ = w.check(&net().graph, "fuzz.safetensors");
        }
        Err(d) => assert!(d.code.starts_with("E04"), "{d:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_as_weights(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_weights(&bytes);
    }

    #[test]
    fn mutated_weights(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in proptest::option::of(any::<usize>())) {
        // Edits fall mostly in the JSON header, where they matter most.
        let base = valid_weights();
        let header_len = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(i, v)| (i % header_len.max(1), v)).collect();
        check_weights(&mutate(base, &edits, cut));
    }

    #[test]
    fn random_bytes_as_npy(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = input::npy_from_bytes(&bytes, "fuzz.npy", &[1, 3, 8, 8]);
    }

    #[test]
    fn mutated_npy(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in proptest::option::of(any::<usize>())) {
        let base = valid_npy();
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(i, v)| (i % 128, v)).collect();
        if let Ok(t) = input::npy_from_bytes(&mutate(base, &edits, cut), "fuzz.npy", &[1, 3, 8, 8]) {
            prop_assert_eq!(t.shape, vec![1, 3, 8, 8]);
        }
    }

    #[test]
    fn random_bytes_as_image(prefix in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let magic: &[u8] = [&b"\x89PNG\r\n\x1a\n"[..], &b"\xff\xd8\xff"[..], &b""[..]][prefix];
        let data = [magic, &bytes].concat();
        let norm = input::Normalize::preset("imagenet").unwrap();
        let _ = input::image_from_bytes(&data, "fuzz.png", &[1, 3, 8, 8], norm);
    }
}

#[test]
fn header_claiming_huge_tensors_is_rejected() {
    let header = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 16]);
    let d = Weights::from_safetensors(&bytes, "huge.safetensors").unwrap_err();
    assert_eq!(d.code, "E0403");
}
