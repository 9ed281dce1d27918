//! Diagnostic constructors of the runtime: weights files, inputs and outputs.

use super::tensor::ShapeDisplay;
use crate::diag::Diagnostic;

pub fn internal(message: &str) -> Diagnostic {
    Diagnostic::error("E0900", format!("internal error: {message}"))
        .with_note("this is a bug in netc, not in the network or its inputs")
}

pub fn unreadable(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0401", format!("cannot read `{path}`: {reason}"))
}

pub fn unwritable(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0402", format!("cannot write `{path}`: {reason}"))
}

pub fn corrupt_weights(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0403", format!("`{path}` is not a valid safetensors file: {reason}"))
        .with_help("write a valid file with `netc init FILE -o W.safetensors`")
}

pub fn weights_too_large(path: &str, size: u64, limit: u64) -> Diagnostic {
    Diagnostic::error(
        "E0403",
        format!("`{path}` has {size} bytes, more than this network's weights can take"),
    )
    .with_note(format!(
        "a file of this network's tensors has at most {limit} bytes, even in f64"
    ))
}

pub fn missing_in_file(path: &str, name: &str, shape: &[usize]) -> Diagnostic {
    Diagnostic::error("E0404", format!("`{path}` has no tensor `{name}`"))
        .with_note(format!(
            "the network expects `{name}` with shape {}",
            ShapeDisplay(shape)
        ))
        .with_help("`netc weights FILE` lists every tensor the network expects")
}

pub fn missing_tensor(name: &str) -> Diagnostic {
    Diagnostic::error("E0404", format!("no weights for tensor `{name}`"))
}

pub fn unexpected_tensor(path: &str, name: &str, expected: &[&str]) -> Diagnostic {
    let similar = crate::elab::errors::similar(name, expected.iter().copied());
    let d = Diagnostic::error(
        "E0405",
        format!("`{path}` has a tensor `{name}` that the network does not use"),
    )
    .with_help("`netc weights FILE` lists every tensor the network expects");
    match similar.first() {
        Some(s) => d.with_note(format!("did you mean `{s}`?")),
        None => d,
    }
}

pub fn tensor_shape(path: &str, name: &str, expected: &[usize], found: &[usize]) -> Diagnostic {
    Diagnostic::error(
        "E0406",
        format!(
            "tensor `{name}` in `{path}` has shape {}, the network expects {}",
            ShapeDisplay(found),
            ShapeDisplay(expected)
        ),
    )
}

pub fn tensor_dtype(name: &str, dtype: &str) -> Diagnostic {
    Diagnostic::error("E0407", format!("tensor `{name}` has dtype {dtype}"))
        .with_note("weights must be F32, F16, BF16 or F64")
}

pub fn input_count(expected: usize, found: usize) -> Diagnostic {
    Diagnostic::error(
        "E0501",
        format!("the network takes {expected} inputs, {found} were given"),
    )
}

pub fn input_shape(name: &str, expected: &[usize], found: &[usize]) -> Diagnostic {
    Diagnostic::error(
        "E0502",
        format!(
            "input `{name}` must have shape {}, found {}",
            ShapeDisplay(expected),
            ShapeDisplay(found)
        ),
    )
}

pub fn bad_npy(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0503", format!("`{path}` is not a valid .npy file: {reason}"))
}

pub fn npy_dtype(path: &str, dtype: &str) -> Diagnostic {
    Diagnostic::error(
        "E0504",
        format!("`{path}` holds {dtype} data; netc reads float32 (`<f4`)"),
    )
    .with_help("convert it with numpy: `np.save(path, array.astype(np.float32))`")
}

pub fn npy_shape(path: &str, expected: &[usize], found: &[u64]) -> Diagnostic {
    let found: Vec<usize> = found.iter().map(|&d| d as usize).collect();
    Diagnostic::error(
        "E0505",
        format!(
            "`{path}` has shape {}, the network's input is {}",
            ShapeDisplay(&found),
            ShapeDisplay(expected)
        ),
    )
}

pub fn bad_image(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0506", format!("cannot decode image `{path}`: {reason}"))
        .with_note("images must be PNG or JPEG")
}

pub fn image_channels(channels: usize) -> Diagnostic {
    Diagnostic::error(
        "E0507",
        format!("an image can only feed a network with 1 or 3 input channels, not {channels}"),
    )
    .with_help("pass a .npy tensor instead")
}

pub fn bad_normalization(what: &str, value: &str) -> Diagnostic {
    Diagnostic::error("E0508", format!("{what} `{value}` is not valid"))
        .with_help("give three numbers, such as --mean 0.485,0.456,0.406, or --normalize imagenet|inception|none")
}

pub fn bad_labels(path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0509", format!("cannot use labels file `{path}`: {reason}"))
}

pub fn isa_unsupported(isa: &str) -> Diagnostic {
    Diagnostic::error("E0512", format!("this CPU cannot run `--isa {isa}`"))
        .with_note(format!(
            "the widest instruction set it runs is {}",
            crate::codegen::Level::cpu().name()
        ))
        .with_help("use --isa native, which picks the widest this CPU runs")
}
