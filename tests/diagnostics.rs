//! Snapshot tests of diagnostics: every file in `tests/errors/` is a broken network that must fail
//! to compile, and its rendered diagnostics are compared with `tests/snapshots/`.
//!
//! A file's leading comment may hold hyperparameter overrides, as `--set` would pass them:
//! `# set: alpha=0.5 res=160`.

use std::path::PathBuf;

/// The overrides of a `# set: name=value ...` line among the file's leading comment lines.
fn overrides(text: &str) -> Vec<(String, String)> {
    text.lines()
        .take_while(|l| l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim_start().strip_prefix('#')?.trim_start().strip_prefix("set:"))
        .flat_map(|rest| rest.split_whitespace())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("`{pair}` is not name=value"));
            (name.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn diagnostics() {
    insta::glob!("errors/*.net", |path| {
        // insta gives canonical paths; the crate root may be reached through a symbolic link.
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = root.canonicalize().unwrap_or(root);
        let relative = path.strip_prefix(&root).expect("the corpus is inside the crate");
        let text = std::fs::read_to_string(path).expect("the corpus file is readable");
        let options = netc::Options {
            overrides: overrides(&text),
            batch: 1,
        };
        let failure =
            netc::compile_file(relative, &options, None).expect_err("a file in tests/errors must not compile");
        insta::assert_snapshot!(failure.render());
    });
}
