//! Snapshots of the IR of every network in `nets/`: right after elaboration, and after the whole
//! pass pipeline (with the cost of each node).

use std::path::Path;

fn relative(path: &Path) -> &Path {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path)
}

fn print_after(path: &Path, after: Option<&str>) -> String {
    let options = netc::Options::default();
    match netc::compile_file(relative(path), &options, after) {
        Ok(c) => netc::ir::print::print(&c.graph),
        Err(f) => panic!("{} does not compile:\n{}", path.display(), f.render()),
    }
}

#[test]
fn ir_after_elaboration() {
    insta::glob!(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"), "*.net", |path| {
        insta::assert_snapshot!(print_after(path, Some("elaborate")));
    });
}

#[test]
fn ir_after_pipeline() {
    insta::glob!(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"), "*.net", |path| {
        insta::assert_snapshot!(print_after(path, None));
    });
}
