//! Names in the generated `.net` text: node labels derived from ONNX names, and variables.

use std::collections::HashSet;

/// Longest label the importer gives (netc allows 512 bytes for a whole name).
const MAX_LABEL: usize = 200;

/// Words of the language a variable may not be besides its keywords, layers, builtins and
/// constants: the `input` statement and the parameter types.
const OTHER_WORDS: &[&str] = &["input", "str", "bool", "list", "tensor", "layer", "any"];

/// Whether a variable may not be named `word`.
fn reserved(word: &str) -> bool {
    crate::syntax::is_keyword(word) || OTHER_WORDS.contains(&word) || crate::elab::is_builtin(word)
}

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
        if reserved(&s) {
            s.push_str("_out");
        }
        unique(&mut self.vars, &s)
    }
}
