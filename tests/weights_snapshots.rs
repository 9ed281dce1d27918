//! Snapshots of `netc weights` (every tensor each seed network expects).

#[test]
fn weights_of_every_seed_network() {
    insta::glob!(concat!(env!("CARGO_MANIFEST_DIR"), "/nets"), "*.net", |path| {
        let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path);
        let c =
            netc::compile_file(relative, &netc::Options::default(), None).unwrap_or_else(|f| panic!("{}", f.render()));
        let listing: String = c
            .expected_weights()
            .iter()
            .map(|s| format!("{} {:?}\n", s.name, s.shape))
            .collect();
        insta::assert_snapshot!(listing);
    });
}
