//! Inputs and outputs of a run: images, `.npy` tensors, seeded random tensors, and top-K.
//!
//! An image is decoded (PNG or JPEG), resized with a triangle filter so that it covers the
//! network's input (its shorter side fits), center-cropped to the input size, scaled to [0, 1] and
//! normalized per channel with `(v - mean) / std`. A `.npy` file must hold little-endian float32 in
//! C order, of exactly the input's shape (`[C, H, W]` is accepted for batch 1).

use super::errors;
use super::tensor::Tensor;
use crate::diag::Diagnostic;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::io::Cursor;
use std::path::Path;

/// Largest image width or height accepted.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Per-channel normalization of an image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// `imagenet` (torchvision's statistics), `inception` (to [-1, 1]) or `none`.
    pub fn preset(name: &str) -> Option<Normalize> {
        Some(match name {
            "imagenet" => Normalize {
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
            },
            "inception" => Normalize {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            "none" => Normalize {
                mean: [0.0; 3],
                std: [1.0; 3],
            },
            _ => return None,
        })
    }

    /// Parses `R,G,B`.
    pub fn triple(text: &str, what: &str) -> Result<[f32; 3], Diagnostic> {
        let parts: Vec<Option<f32>> = text.split(',').map(|p| p.trim().parse::<f32>().ok()).collect();
        match parts.as_slice() {
            [Some(r), Some(g), Some(b)] if [r, g, b].iter().all(|v| v.is_finite()) => Ok([*r, *g, *b]),
            _ => Err(errors::bad_normalization(what, text)),
        }
    }
}

/// A seeded standard-normal tensor.
pub fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        (0..n).map(|_| StandardNormal.sample(&mut rng)).collect(),
    )
}

/// Loads an image file as a `shape` (`[N, C, H, W]`) tensor, the same image in every batch item.
pub fn image(path: &Path, shape: &[usize], norm: Normalize) -> Result<Tensor, Diagnostic> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| errors::unreadable(&source, &e.to_string()))?;
    image_from_bytes(&bytes, &source, shape, norm)
}

/// Decodes image bytes; see [`image`].
pub fn image_from_bytes(bytes: &[u8], source: &str, shape: &[usize], norm: Normalize) -> Result<Tensor, Diagnostic> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if c != 1 && c != 3 {
        return Err(errors::image_channels(c));
    }
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| errors::bad_image(source, &e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| errors::bad_image(source, &e.to_string()))?
        .to_rgb8();
    let (iw, ih) = img.dimensions();
    // Scale so the image covers h x w, then cut the middle.
    let scale = (h as f64 / ih as f64).max(w as f64 / iw as f64);
    let rw = ((iw as f64 * scale).round() as u32).max(w as u32);
    let rh = ((ih as f64 * scale).round() as u32).max(h as u32);
    let resized = image::imageops::resize(&img, rw, rh, image::imageops::FilterType::Triangle);
    let (x0, y0) = ((rw - w as u32) / 2, (rh - h as u32) / 2);
    let mut one = vec![0.0f32; c * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32).0;
            let rgb = [p[0] as f32 / 255.0, p[1] as f32 / 255.0, p[2] as f32 / 255.0];
            if c == 1 {
                let gray = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                one[y * w + x] = (gray - norm.mean[0]) / norm.std[0];
            } else {
                for k in 0..3 {
                    one[(k * h + y) * w + x] = (rgb[k] - norm.mean[k]) / norm.std[k];
                }
            }
        }
    }
    Ok(Tensor::new(shape.to_vec(), one.repeat(n)))
}

/// Loads a `.npy` float32 tensor of the input's shape.
pub fn npy(path: &Path, shape: &[usize]) -> Result<Tensor, Diagnostic> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| errors::unreadable(&source, &e.to_string()))?;
    npy_from_bytes(&bytes, &source, shape)
}

/// Parses `.npy` bytes; see [`npy`].
pub fn npy_from_bytes(bytes: &[u8], source: &str, shape: &[usize]) -> Result<Tensor, Diagnostic> {
    let file = npyz::NpyFile::new(Cursor::new(bytes)).map_err(|e| errors::bad_npy(source, &e.to_string()))?;
    let dtype = match file.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => format!("{other:?}"),
    };
    if dtype != "<f4" {
        return Err(errors::npy_dtype(source, &dtype));
    }
    if file.order() == npyz::Order::Fortran {
        return Err(errors::bad_npy(
            source,
            "the array is in Fortran order; save it in C order",
        ));
    }
    let found = file.shape().to_vec();
    let matches = found.iter().map(|&d| d as usize).eq(shape.iter().copied())
        || (shape[0] == 1 && found.iter().map(|&d| d as usize).eq(shape[1..].iter().copied()));
    if !matches {
        return Err(errors::npy_shape(source, shape, &found));
    }
    let data: Vec<f32> = file.into_vec().map_err(|e| errors::bad_npy(source, &e.to_string()))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(errors::bad_npy(source, "the data is shorter than its shape"));
    }
    Ok(Tensor::new(shape.to_vec(), data))
}

/// Writes a tensor as a little-endian float32 `.npy` file.
pub fn save_npy(path: &Path, t: &Tensor) -> Result<(), Diagnostic> {
    let target = path.display().to_string();
    let fail = |e: std::io::Error| errors::unwritable(&target, &e.to_string());
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut bytes)
            .begin_nd()
            .map_err(fail)?;
        writer.extend(t.data.iter().copied()).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    std::fs::write(path, bytes).map_err(fail)
}

/// The `k` most probable classes of batch item `item`: `(class, probability)`, most probable
/// first. `probabilities` says whether the output already is a softmax; otherwise one is applied.
pub fn top_k(output: &Tensor, item: usize, k: usize, probabilities: bool) -> Vec<(usize, f32)> {
    let per_item = output.len() / output.shape[0].max(1);
    let row = &output.data[item * per_item..(item + 1) * per_item];
    let probs: Vec<f32> = if probabilities {
        row.to_vec()
    } else {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
        let sum: f32 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    };
    let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}
