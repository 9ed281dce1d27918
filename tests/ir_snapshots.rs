//! Snapshots of the IR of every network in `nets/` after each stage: elaboration, the analyses
//! (shapes and costs), and every optimization pass (dead-node removal, batchnorm folding,
//! epilogue fusion, block fusion, placement, memory planning).

use std::path::Path;

fn relative(path: &Path) -> &Path {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path)
}

fn print_after(path: &Path, after: &str) -> String {
    let options = netc::Options::default();
    match netc::compile_file(relative(path), &options, Some(after)) {
        Ok(c) => netc::ir::print::print(c.latest()),
        Err(f) => panic!("{} does not compile:\n{}", path.display(), f.render()),
    }
}

macro_rules! stage {
    ($test:ident, $stage:literal) => {
        #[test]
        fn $test() {
            insta::glob!(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"), "*.net", |path| {
                insta::assert_snapshot!(print_after(path, $stage));
            });
        }
    };
}

stage!(ir_after_elaboration, "elaborate");
stage!(ir_after_cost, "cost");
stage!(ir_after_dce, "dce");
stage!(ir_after_fold_bn, "fold_bn");
stage!(ir_after_fuse, "fuse");
stage!(ir_after_fuse_blocks, "fuse_blocks");
stage!(ir_after_place, "place");
stage!(ir_after_plan, "plan");

/// Every stage `netc ir --after` accepts has a snapshot test above.
#[test]
fn every_stage_is_snapshotted() {
    let source = include_str!("ir_snapshots.rs");
    for stage in netc::passes::stage_names() {
        if stage == "shape" {
            continue; // the cost snapshot shows shapes too
        }
        assert!(
            source.contains(&format!(", \"{stage}\");")),
            "no snapshot test for stage `{stage}`"
        );
    }
}
