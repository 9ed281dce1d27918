//! Names in the generated `.net` text: node labels derived from ONNX names, and variables.

use std::collections::HashSet;

/// Longest label the importer gives (netc allows 512 bytes for a whole name).
const MAX_LABEL: usize = 200;

/// Words a variable may not be: keywords, layers, builtins and constants of the language.
const RESERVED: &[&str] = &[
    "include",
    "const",
    "fn",
    "block",
    "net",
    "let",
    "for",
    "in",
    "if",
    "else",
    "return",
    "assert",
    "and",
    "or",
    "not",
    "true",
    "false",
    "as",
    "input",
    "same",
    "valid",
    "min",
    "max",
    "round",
    "floor",
    "ceil",
    "int",
    "float",
    "abs",
    "make_divisible",
    "range",
    "len",
    "error",
    "lookup",
    "str",
    "bool",
    "list",
    "tensor",
    "layer",
    "any",
    "conv",
    "dwconv",
    "batchnorm",
    "relu",
    "relu6",
    "leaky_relu",
    "identity",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "global_maxpool",
    "dense",
    "flatten",
    "concat",
    "add",
    "split",
    "shuffle",
    "dropout",
    "softmax",
    "slice",
];

/// The labels and variables given out so far.
#[derive(Debug, Default)]
pub struct Names {
    labels: HashSet<String>,
    vars: HashSet<String>,
}

/// An ONNX name as a netc label: `/features/features.0/Conv` -> `features.features.0.Conv`.
/// Dots and slashes separate parts, other characters outside `[A-Za-z0-9_]` become `_`.
pub fn sanitize_label(raw: &str) -> String {
    let parts: Vec<String> = raw
        .split(['.', '/', ':'])
        .map(|p| {
            p.chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                .collect::<String>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    let mut s = parts.join(".");
    if s.len() > MAX_LABEL {
        s.truncate(MAX_LABEL);
        while s.ends_with('.') {
            s.pop();
        }
    }
    s
}

fn unique(taken: &mut HashSet<String>, want: &str) -> String {
    if taken.insert(want.to_string()) {
        return want.to_string();
    }
    (2..)
        .map(|k| format!("{want}_{k}"))
        .find(|n| taken.insert(n.clone()))
        .unwrap_or_default()
}

impl Names {
    /// A fresh label for a node called `raw` in ONNX (`fallback` if nothing of it is usable).
    pub fn label(&mut self, raw: &str, fallback: &str) -> String {
        let mut s = sanitize_label(raw);
        if s.is_empty() {
            s = sanitize_label(fallback);
        }
        if s.is_empty() {
            s = "node".into();
        }
        unique(&mut self.labels, &s)
    }

    /// A fresh variable named after `hint` (a label): dots become underscores.
    pub fn var(&mut self, hint: &str) -> String {
        let mut s: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
            .collect();
        if s.len() > 64 {
            // Keep the end: it names the layer, the start only the scopes around it.
            let cut = s.len() - 64;
            s = s[cut..].trim_start_matches('_').to_string();
        }
        if s.is_empty() {
            s = "t".into();
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            s = format!("t{s}");
        }
        if RESERVED.contains(&s.as_str()) {
            s.push_str("_out");
        }
        unique(&mut self.vars, &s)
    }
}
