//! The Cranelift IR of a few small kernels, as `netc clif` prints it. A change to a kernel family
//! shows up here as a diff; after an intended change, regenerate with
//! `INSTA_UPDATE=always cargo test --test clif_snapshots` and review the diff.

use netc::codegen::{Isa, Options};

/// Compiles `source` and returns the CLIF text of every kernel, `; name` before each.
fn clif(name: &str, source: &str) -> String {
    let c = netc::compile_source(name, source, None, &netc::Options::default(), None)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let exe = c
        .compile_jit(
            &c.init_weights(0),
            &Options {
                keep_clif: true,
                // The f32x4 tile on every CPU, so the snapshots do not depend on the host.
                isa: Isa::Baseline,
            },
        )
        .unwrap_or_else(|d| panic!("{}", d.message));
    let kernels = exe.clif();
    assert_eq!(kernels.len(), exe.steps().len(), "one CLIF text per kernel");
    kernels
        .iter()
        .map(|(node, text)| format!("; {node}\n{text}\n"))
        .collect()
}

#[test]
fn pointwise_conv() {
    let text = clif(
        "pointwise.net",
        "net pointwise { input x: [8, 4, 4]\n return x |> conv(8, 1, bias = false) as pw }",
    );
    insta::assert_snapshot!(text);
}

#[test]
fn depthwise_conv() {
    let text = clif(
        "depthwise.net",
        "net depthwise { input x: [8, 6, 6]\n return x |> dwconv(3, pad = 1) as dw }",
    );
    insta::assert_snapshot!(text);
}

#[test]
fn max_pool() {
    let text = clif(
        "maxpool.net",
        "net maxpool { input x: [4, 6, 6]\n return x |> maxpool(3, stride = 2, pad = 1) as pool }",
    );
    insta::assert_snapshot!(text);
}
