//! Robustness tests: no input may panic the compiler, hang it, or exhaust its memory or stack.
//! Every compilation must end in success or in a diagnostic, and rendering the diagnostic must
//! not panic either.
//!
//! The property tests feed arbitrary text, random token sequences, mutations of the networks in
//! `nets/` (read when the tests run) and random layer pipelines, with random `--set` overrides and
//! batch sizes; a successful compilation is also printed in every output format. The plain tests
//! after them cover the deep and huge inputs that random generation would not reach: long
//! operator chains, deep nesting, long block and function call chains, huge loops, lists, names,
//! shapes and sizes, and includes of special files. They run on the default test thread stack, so
//! any recursion must be bounded by the compiler's limits.

use netc::diag::Failure;
use netc::{Compiled, Options};
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest time one compilation may take before the test calls it a hang. Generous, since tests
/// run in parallel on a debug build.
const SLOW: Duration = Duration::from_secs(20);

fn compile_with(text: &str, overrides: Vec<(String, String)>, batch: usize) -> Result<Compiled, Failure> {
    let options = Options { overrides, batch };
    let start = Instant::now();
    let result = netc::compile_source("fuzz.net", text, Some(Path::new("nets")), &options, None);
    match &result {
        Err(failure) => {
            assert!(!failure.diagnostics.is_empty(), "a failure without diagnostics");
            let rendered = failure.render();
            assert!(!rendered.is_empty(), "a diagnostic rendered as nothing");
        }
        // Everything the command line prints about a compiled network must not panic either.
        Ok(compiled) if compiled.graph.node_count() <= 2_000 => {
            let planned = compiled.planned().unwrap();
            let _ = netc::report::table(&compiled.graph, &planned);
            let _ = serde_json::to_string(&netc::report::stats(&compiled.graph, &planned));
            let _ = netc::ir::print::print(&compiled.graph);
            let _ = netc::ir::dot::dot(&compiled.graph);
        }
        Ok(compiled) => {
            let _ = netc::passes::cost::totals(&compiled.graph);
        }
    }
    let took = start.elapsed();
    assert!(took < SLOW, "compilation took {took:?}");
    result
}

fn compile(text: &str) -> Result<Compiled, Failure> {
    compile_with(text, Vec::new(), 1)
}

/// The code of the first diagnostic, or a panic with the rendered diagnostics.
fn error_code(text: &str) -> &'static str {
    match compile(text) {
        Ok(c) => panic!("compiled without error ({} nodes)", c.graph.node_count()),
        Err(f) => {
            let d = &f.diagnostics[0];
            assert!(!d.message.is_empty());
            d.code
        }
    }
}

fn assert_code(text: &str, code: &str) {
    match compile(text) {
        Ok(c) => panic!(
            "expected {code}, compiled without error ({} nodes)",
            c.graph.node_count()
        ),
        Err(f) => assert_eq!(f.diagnostics[0].code, code, "{}", f.render()),
    }
}

// ---- the networks in nets/ ----

struct NetFile {
    path: PathBuf,
    text: String,
    /// Hyperparameter names (from a successful compile), or every word of the text otherwise.
    names: Vec<String>,
}

fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn net_files() -> &'static [NetFile] {
    static FILES: OnceLock<Vec<NetFile>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir("nets")
            .expect("nets/ is readable")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "net"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let text = std::fs::read_to_string(&path).ok()?;
                let names = match compile(&text) {
                    Ok(c) if !c.graph.hyper.is_empty() => c.graph.hyper.iter().map(|(n, _)| n.clone()).collect(),
                    _ => words(&text),
                };
                Some(NetFile { path, text, names })
            })
            .collect()
    })
}

// ---- mutations ----

const TOKENS: &[&str] = &[
    "|>",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "=",
    "==",
    "as",
    "as n{i}",
    "let",
    "let y =",
    "for",
    "for i in",
    "in",
    "if",
    "else",
    "return",
    "x.c",
    "x.h",
    ".",
    ":",
    "+",
    "-",
    "*",
    "//",
    "/",
    "%",
    "<",
    ">=",
    "and",
    "or",
    "not",
    "true",
    "false",
    "\"",
    "\"same\"",
    "#",
    "\n",
    "0",
    "1",
    "-1",
    "0.5",
    "x",
    "y",
    "conv",
    "conv(8, 3)",
    "dwconv(3)",
    "batchnorm",
    "relu",
    "relu6",
    "maxpool(2)",
    "avgpool(3, 2)",
    "global_avgpool",
    "flatten",
    "dense(10)",
    "concat",
    "add",
    "split",
    "split(x, 2)",
    "shuffle(2)",
    "dropout(0.5)",
    "softmax",
    "slice(0, 1)",
    "identity",
    "leaky_relu",
    "range(3)",
    "range(100000)",
    "len",
    "make_divisible",
    "min",
    "max",
    "round",
    "error(\"e\")",
    "block",
    "net",
    "fn",
    "const",
    "include",
    "input",
    "tensor",
    "int",
    "float",
    "same",
    "valid",
    "stride = 2",
    "pad = 1",
    "groups = 2",
    "kernel = 3",
    "x |> relu",
    "[x, x]",
    "(x, x)",
];

fn token() -> impl Strategy<Value = String> {
    (
        prop::sample::select(TOKENS),
        prop::sample::select(&["", " ", "\n"][..]),
        any::<bool>(),
    )
        .prop_map(|(t, sep, before)| {
            if before {
                format!("{sep}{t}")
            } else {
                format!("{t}{sep}")
            }
        })
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "0",
                "1",
                "-1",
                "2",
                "-0",
                "9223372036854775807",
                "-9223372036854775808",
                "9223372036854775808",
                "99999999999999999999999",
                "1000000000000000000",
                "1_000_000",
                "16777216",
                "16777217",
                "1073741824",
                "4294967296",
                "0.0",
                "0.5",
                "-0.5",
                "1.5",
                "1e308",
                "1e309",
                "1e-320",
                "2.5e10",
                "3.0",
            ][..]
        )
        .prop_map(str::to_string),
        any::<i64>().prop_map(|v| v.to_string()),
        (0i64..300).prop_map(|v| v.to_string()),
        (-300i64..0).prop_map(|v| v.to_string()),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:?}")),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Swap(Index, Index, usize),
    Number(Index, String),
    Insert(Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 1usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => (any::<Index>(), 1usize..200, any::<Index>()).prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
        1 => (any::<Index>(), any::<Index>(), 1usize..60).prop_map(|(a, b, n)| Mutation::Swap(a, b, n)),
        4 => (any::<Index>(), number()).prop_map(|(a, v)| Mutation::Number(a, v)),
        2 => (any::<Index>(), token()).prop_map(|(a, t)| Mutation::Insert(a, t)),
    ]
}

/// Byte offsets of every char boundary of `text`, the end included.
fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}

/// Byte ranges of the numbers in `text` (a digit followed by digits, `_`, `.` and exponents).
fn numbers(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts =
            bytes[i].is_ascii_digit() && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let s = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || matches!(bytes[i], b'_' | b'.' | b'e' | b'E')) {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

fn apply(text: &str, m: &Mutation) -> String {
    let b = boundaries(text);
    let last = b.len() - 1;
    let at = |i: &Index| i.index(b.len());
    match m {
        Mutation::Delete(a, n) => {
            let s = at(a);
            let e = (s + n).min(last);
            format!("{}{}", &text[..b[s]], &text[b[e]..])
        }
        Mutation::Duplicate(a, n, to) => {
            let s = at(a);
            let e = (s + n).min(last);
            let piece = &text[b[s]..b[e]];
            let t = b[at(to)];
            format!("{}{piece}{}", &text[..t], &text[t..])
        }
        Mutation::Swap(x, y, n) => {
            let (i, j) = (at(x).min(at(y)), at(x).max(at(y)));
            let l = (*n).min(j - i);
            if l == 0 {
                return text.to_string();
            }
            let r1 = b[i]..b[i + l];
            let r2 = b[j]..b[(j + l).min(last)];
            format!(
                "{}{}{}{}{}",
                &text[..r1.start],
                &text[r2.clone()],
                &text[r1.end..r2.start],
                &text[r1.clone()],
                &text[r2.end..]
            )
        }
        Mutation::Number(i, v) => {
            let nums = numbers(text);
            if nums.is_empty() {
                return text.to_string();
            }
            let (s, e) = nums[i.index(nums.len())];
            format!("{}{v}{}", &text[..s], &text[e..])
        }
        Mutation::Insert(a, t) => {
            let p = b[at(a)];
            format!("{}{t}{}", &text[..p], &text[p..])
        }
    }
}

// ---- overrides ----

#[derive(Clone, Debug)]
enum Name {
    /// One of the network's own names.
    Own(Index),
    Random(String),
}

fn override_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(
            &[
                "0", "1", "-1", "2", "3", "8", "224", "9223372036854775807", "-9223372036854775808",
                "9223372036854775808", "1000000000000000000", "16777217", "0.0", "0.25", "1.0", "-1.5", "1e308",
                "1e309", "nan", "NaN", "inf", "-inf", "infinity", "", " ", " 4 ", "true", "false", "True", "1_000",
                "0x10", "abc", "=", "1=2", "\u{0}", "\u{1F600}",
            ][..]
        )
        .prop_map(str::to_string),
        3 => (1i64..300).prop_map(|v| v.to_string()),
        2 => (0.05f64..3.0).prop_map(|v| v.to_string()),
        1 => number(),
        1 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| v.to_string()),
        1 => ".{0,12}",
    ]
}

fn override_pair() -> impl Strategy<Value = (Name, String)> {
    let name = prop_oneof![
        8 => any::<Index>().prop_map(Name::Own),
        1 => "[a-z_]{0,8}".prop_map(Name::Random),
        1 => ".{0,6}".prop_map(Name::Random),
    ];
    (name, override_value())
}

fn resolve(names: &[String], pairs: Vec<(Name, String)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(n, v)| match n {
            Name::Own(i) if !names.is_empty() => (names[i.index(names.len())].clone(), v),
            Name::Own(_) => ("alpha".to_string(), v),
            Name::Random(s) => (s, v),
        })
        .collect()
}

// ---- random programs ----

const LAYERS: &[&str] = &[
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
    "b",
];

const PARAMS: &[&str] = &[
    "out",
    "kernel",
    "stride",
    "pad",
    "dilation",
    "groups",
    "bias",
    "multiplier",
    "eps",
    "slope",
    "ceil",
    "include_pad",
    "p",
    "parts",
    "start",
    "end",
    "k",
];

/// A small number most of the time, sometimes an extreme one.
fn size_literal() -> impl Strategy<Value = String> {
    prop_oneof![6 => (0i64..20).prop_map(|v| v.to_string()), 1 => number()]
}

/// An expression for an argument: numbers, lists, padding modes, arithmetic, builtin calls.
fn arg_value() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        8 => size_literal(),
        1 => Just("same".to_string()),
        1 => Just("valid".to_string()),
        1 => Just("true".to_string()),
        1 => Just("x.c".to_string()),
        1 => Just("x".to_string()),
        1 => Just("\"s\"".to_string()),
        1 => Just("a".to_string()),
        1 => Just("f".to_string()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            (
                inner.clone(),
                prop::sample::select(&["+", "-", "*", "//", "/", "%", "==", "<", "and"][..]),
                inner.clone()
            )
                .prop_map(|(l, o, r)| format!("({l} {o} {r})")),
            (
                prop::sample::select(
                    &[
                        "min",
                        "max",
                        "round",
                        "floor",
                        "ceil",
                        "int",
                        "abs",
                        "make_divisible",
                        "range",
                        "len"
                    ][..]
                ),
                prop::collection::vec(inner.clone(), 0..3),
            )
                .prop_map(|(f, a)| format!("{f}({})", a.join(", "))),
            (inner.clone(), inner.clone(), inner).prop_map(|(a, c, b)| format!("({a} if {c} else {b})")),
        ]
    })
    .boxed()
}

fn layer_call() -> impl Strategy<Value = String> {
    (
        prop::sample::select(LAYERS),
        prop::collection::vec(arg_value(), 0..4),
        prop::collection::vec((prop::sample::select(PARAMS), arg_value()), 0..3),
    )
        .prop_map(|(layer, positional, named)| {
            let mut args = positional;
            args.extend(named.into_iter().map(|(k, v)| format!("{k} = {v}")));
            if args.is_empty() {
                layer.to_string()
            } else {
                format!("{layer}({})", args.join(", "))
            }
        })
}

/// A size: small and valid most of the time.
fn size() -> BoxedStrategy<String> {
    prop_oneof![40 => (1i64..17).prop_map(|v| v.to_string()), 1 => Just("0".to_string()), 2 => number()].boxed()
}

fn pair_value() -> BoxedStrategy<String> {
    prop_oneof![3 => size(), 1 => (size(), size()).prop_map(|(h, w)| format!("[{h}, {w}]"))].boxed()
}

fn pad_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => size(),
        1 => (size(), size()).prop_map(|(h, w)| format!("[{h}, {w}]")),
        1 => (size(), size(), size(), size()).prop_map(|(t, b, l, r)| format!("[{t}, {b}, {l}, {r}]")),
        1 => Just("same".to_string()),
        1 => Just("valid".to_string()),
    ]
    .boxed()
}

fn named(name: &'static str, value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop::option::of(value)
        .prop_map(move |v| v.map_or(String::new(), |v| format!(", {name} = {v}")))
        .boxed()
}

/// A call of a layer with arguments of the right kinds and random values.
fn typed_layer_call() -> BoxedStrategy<String> {
    let flag = || {
        prop::sample::select(&["true", "false"][..])
            .prop_map(str::to_string)
            .boxed()
    };
    prop_oneof![
        3 => (size(), pair_value(), named("stride", pair_value()), named("pad", pad_value()), named("dilation", pair_value()), named("groups", size()))
            .prop_map(|(o, k, s, p, d, g)| format!("conv({o}, {k}{s}{p}{d}{g})")).boxed(),
        2 => (pair_value(), named("stride", pair_value()), named("pad", pad_value()), named("dilation", pair_value()), named("multiplier", size()))
            .prop_map(|(k, s, p, d, m)| format!("dwconv({k}{s}{p}{d}{m})")).boxed(),
        2 => (prop::sample::select(&["maxpool", "avgpool"][..]), pair_value(), named("stride", pair_value()), named("pad", pad_value()), named("ceil", flag()))
            .prop_map(|(l, k, s, p, c)| format!("{l}({k}{s}{p}{c})")).boxed(),
        1 => size().prop_map(|o| format!("flatten |> dense({o})")),
        1 => size().prop_map(|g| format!("shuffle({g})")),
        1 => prop_oneof![size(), prop::collection::vec(size(), 0..4).prop_map(|v| format!("[{}]", v.join(", ")))]
            .prop_map(|p| format!("split({p}) |> concat")),
        1 => (size(), size()).prop_map(|(a, b)| format!("slice({a}, {b})")),
        1 => prop::sample::select(&["relu", "relu6", "batchnorm", "global_avgpool", "global_maxpool", "softmax", "identity", "dropout(0.1)", "leaky_relu(0.2)", "b", "b(k = 5)"][..]).prop_map(str::to_string),
    ]
    .boxed()
}

fn random_program() -> BoxedStrategy<String> {
    (
        (size(), size(), size()),
        prop::collection::vec(prop_oneof![6 => typed_layer_call(), 1 => layer_call()], 1..6),
        prop::collection::vec(
            prop::sample::select(
                &[
                    "y = y + x",
                    "y = concat(y, x)",
                    "y = concat([y, y])",
                    "let (p, q) = split(y)\n    y = concat(q, p)",
                    "y = y |> b(3) as blk",
                    "for i in range(a) { y = y |> relu as r{i} }",
                    "if y.c > 4 { y = y |> conv(4, 1) }",
                    "y = y |> conv(y.c * 2, 3, pad = same, stride = 2)",
                    "y = y |> flatten |> dense(10)",
                    "let z = [y.n, y.c]",
                ][..],
            ),
            0..3,
        ),
    )
        .prop_map(|((c, h, w), stages, extra)| {
            let mut text = String::from("fn f(v: int) = v * 2 + 1\n");
            text.push_str("block b(x: tensor, k: int = 3) {\n    return x |> conv(x.c, k, pad = k // 2) |> relu\n}\n");
            text.push_str(&format!(
                "net n(a: int = 3, g: float = 0.5) {{\n    input x: [{c}, {h}, {w}]\n"
            ));
            text.push_str(&format!("    let y = x |> {}\n", stages.join(" |> ")));
            for e in extra {
                text.push_str(&format!("    {e}\n"));
            }
            text.push_str("    return y\n}\n");
            text
        })
        .boxed()
}

// ---- property tests ----

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(6000))]

    #[test]
    fn arbitrary_text(text in prop_oneof![".*", "\\PC*", "[\\x00-\\x7f]*", "[(){}\\[\\]|>,=a-z0-9 \n.#\"]*"]) {
        let _ = compile(&text);
    }

    #[test]
    fn token_soup(
        tokens in prop::collection::vec(token(), 0..80),
        prefix in prop::sample::select(&["", "net n {", "net n(a: int = 3) { input x: [3, 8, 8]\n", "block b(x: tensor) {"][..]),
    ) {
        let text = format!("{prefix}{}", tokens.concat());
        let _ = compile(&text);
        let _ = compile(&format!("{text}\n}}"));
    }
}

fn pick(file: &Index) -> Option<&'static NetFile> {
    let files = net_files();
    (!files.is_empty()).then(|| &files[file.index(files.len())])
}

proptest! {
    #![proptest_config(config(4000))]

    /// Every kind of mutation: most results are syntax errors.
    #[test]
    fn mutated_nets(
        file in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        overrides in prop::collection::vec(override_pair(), 0..3),
        batch in prop_oneof![Just(1usize), 1usize..=4096],
    ) {
        let Some(f) = pick(&file) else { return Ok(()) };
        let mut text = f.text.clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        let _ = compile_with(&text, resolve(&f.names, overrides), batch);
    }

    /// Numbers replaced, the text otherwise intact: reaches elaboration, shapes and costs.
    #[test]
    fn mutated_numbers(
        file in any::<Index>(),
        numbers in prop::collection::vec((any::<Index>(), number()), 1..4),
        batch in prop_oneof![3 => Just(1usize), 1 => 1usize..=4096],
    ) {
        let Some(f) = pick(&file) else { return Ok(()) };
        let mut text = f.text.clone();
        for (at, value) in numbers {
            text = apply(&text, &Mutation::Number(at, value));
        }
        let _ = compile_with(&text, Vec::new(), batch);
    }

    /// Random pipelines of layers with random arguments.
    #[test]
    fn random_layer_pipelines(
        text in random_program(),
        overrides in prop_oneof![
            Just(Vec::new()),
            prop::collection::vec((prop::sample::select(&["a", "g"][..]), override_value()), 1..3),
        ],
        batch in prop_oneof![3 => Just(1usize), 1 => 1usize..=4096],
    ) {
        let overrides = overrides.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let _ = compile_with(&text, overrides, batch);
    }

    /// The networks as they are, with overrides and a batch size.
    #[test]
    fn overrides_and_batch(
        file in any::<Index>(),
        overrides in prop::collection::vec(override_pair(), 1..3),
        batch in prop_oneof![Just(1usize), 1usize..=64, 1usize..=4096],
    ) {
        let Some(f) = pick(&file) else { return Ok(()) };
        let overrides = resolve(&f.names, overrides);
        let _ = compile_with(&f.text, overrides, batch);
    }
}

// ---- deep and huge inputs ----

fn net(body: &str) -> String {
    format!("net n {{\n    input x: [3, 8, 8]\n{body}\n    return x\n}}\n")
}

#[test]
fn every_seed_network_compiles() {
    for f in net_files() {
        if let Err(failure) = compile(&f.text) {
            // Another file in nets/ may be work in progress; a diagnostic is all that is required.
            assert!(!failure.diagnostics.is_empty(), "{}", f.path.display());
        }
    }
}

#[test]
fn deep_parentheses() {
    let depth = 10_000;
    let text = net(&format!("    let a = {}1{}", "(".repeat(depth), ")".repeat(depth)));
    assert_code(&text, "E0103");
}

#[test]
fn deep_brackets_of_every_kind() {
    for (open, close) in [("[", "]"), ("{", "}"), ("f(", ")")] {
        let text = net(&format!("    let a = {}1{}", open.repeat(10_000), close.repeat(10_000)));
        assert_code(&text, "E0103");
    }
}

#[test]
fn nesting_at_the_limit_is_accepted() {
    let depth = netc::syntax::MAX_NESTING - 1;
    let text = net(&format!("    let a = {}1{}", "(".repeat(depth), ")".repeat(depth)));
    compile(&text).map_err(|f| f.render()).unwrap();
}

#[test]
fn long_sum() {
    let text = net(&format!("    let a = 1{}", "+1".repeat(100_000)));
    assert_code(&text, "E0104");
}

#[test]
fn long_pipe() {
    let text = format!(
        "net n {{\n    input x: [3, 8, 8]\n    return x{}\n}}\n",
        " |> relu".repeat(50_000)
    );
    assert_code(&text, "E0104");
}

#[test]
fn too_large_source() {
    let text = net(&format!("    # {}", "x".repeat(netc::syntax::MAX_SOURCE_BYTES)));
    assert_code(&text, "E0102");
}

#[test]
fn huge_range() {
    assert_code(&net("    for i in range(100000000) { let y = i }"), "E0218");
    assert_code(
        &net("    for i in range(-9223372036854775807 - 1, 9223372036854775807) { let y = i }"),
        "E0218",
    );
}

#[test]
fn nested_loops_with_a_huge_product() {
    let text = net(
        "    for i in range(100000) {\n        for j in range(100000) {\n            let y = i * j\n        }\n    }",
    );
    assert_code(&text, "E0218");
}

#[test]
fn loop_building_too_many_nodes() {
    let text = net(
        "    for i in range(100000) {\n        for j in range(100000) {\n            x = x |> relu\n        }\n    }",
    );
    assert_code(&text, "E0218");
}

#[test]
fn huge_input_shape() {
    let text = "net n {\n    input x: [3, 1000000, 1000000]\n    return x\n}\n";
    assert_code(text, "E0306");
    let text = "net n {\n    input x: [3, 9223372036854775807, 9223372036854775807]\n    return x\n}\n";
    assert_code(text, "E0221");
    let text = "net n {\n    input x: [0, -1, 8]\n    return x\n}\n";
    assert_code(text, "E0305");
}

#[test]
fn huge_batch() {
    let text = "net n {\n    input x: [64, 1024, 1024]\n    return x\n}\n";
    let failure = compile_with(text, Vec::new(), 4096).expect_err("too large");
    assert_eq!(failure.diagnostics[0].code, "E0306");
    let failure = compile_with(text, Vec::new(), usize::MAX).expect_err("too large");
    assert_eq!(failure.diagnostics[0].code, "E0306");
}

#[test]
fn sizes_near_i64_max() {
    let max = i64::MAX;
    for call in [
        format!("conv(8, {max})"),
        format!("conv(8, 3, stride = {max})"),
        format!("conv(8, 3, pad = {max})"),
        format!("conv(8, 3, pad = [{max}, 0, 0, {max}])"),
        format!("conv(8, 3, dilation = {max})"),
        format!("conv({max}, 3)"),
        format!("conv(8, 3, groups = {max})"),
        format!("conv(8, [{max}, {max}])"),
        format!("maxpool({max})"),
        format!("avgpool(2, stride = {max})"),
        format!("dwconv(3, multiplier = {max})"),
        format!("shuffle({max})"),
        format!("slice(0, {max})"),
        format!("slice({max}, 1)"),
        format!("split({max})"),
        format!("flatten |> dense({max})"),
    ] {
        let text = format!("net n {{\n    input x: [3, 8, 8]\n    return x |> {call}\n}}\n");
        let code = error_code(&text);
        assert!(code.starts_with("E02") || code.starts_with("E03"), "{call}: {code}");
    }
}

#[test]
fn sizes_at_the_size_limit() {
    let big = netc::elab::MAX_SIZE;
    for call in [
        format!("conv({big}, 1)"),
        format!("conv(8, 3, pad = {big})"),
        format!("conv(8, 3, stride = {big})"),
        format!("conv(8, 3, dilation = {big})"),
        format!("conv(8, 3, pad = same, stride = {big}, dilation = {big})"),
        format!("maxpool({big}, pad = {})", big - 1),
        format!("maxpool(3, stride = {big}, ceil = true)"),
        format!("avgpool([{big}, 1], pad = [{}, 0], ceil = true)", big - 1),
        format!("flatten |> dense({big})"),
    ] {
        let text = format!("net n {{\n    input x: [3, 8, 8]\n    return x |> {call}\n}}\n");
        let _ = compile(&text);
    }
}

#[test]
fn integer_overflow_in_expressions() {
    let max = i64::MAX;
    for e in [
        format!("{max} + 1"),
        format!("-{max} - 2"),
        format!("{max} * 2"),
        "-9223372036854775807 - 1 // -1".to_string(),
        "(-9223372036854775807 - 1) % -1".to_string(),
        "-(-9223372036854775807 - 1)".to_string(),
        "abs(-9223372036854775807 - 1)".to_string(),
        "1 // 0".to_string(),
        "1 % 0".to_string(),
        "1 / 0".to_string(),
        "1.0 // 0.0".to_string(),
        "1e308 * 10.0".to_string(),
        "round(1e300)".to_string(),
        "int(1e19)".to_string(),
        "make_divisible(1e300, 8)".to_string(),
        format!("make_divisible({max}, {max})"),
        format!("make_divisible(-1e300, 8, {max})"),
        "make_divisible(8, 0)".to_string(),
        "9223372036854775808".to_string(),
        "1e400".to_string(),
    ] {
        let text = net(&format!("    let a = {e}\n    let b = x |> conv(a, 1)"));
        let _ = compile(&text);
    }
}

#[test]
fn long_block_chain() {
    let n = 1000;
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{}", i + 1)
        } else {
            "x |> relu".to_string()
        };
        text.push_str(&format!("block b{i}(x: tensor) {{\n    return {next}\n}}\n"));
    }
    assert_code(&text, "E0218");
}

#[test]
fn long_function_chain() {
    let n = 1000;
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> conv(f0(1), 1)\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("f{}(v)", i + 1)
        } else {
            "v".to_string()
        };
        text.push_str(&format!("fn f{i}(v: int) = {next}\n"));
    }
    assert_code(&text, "E0218");
}

#[test]
fn call_chain_within_the_limit_compiles() {
    let n = netc::elab::MAX_CALL_DEPTH;
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{}", i + 1)
        } else {
            "x |> relu".to_string()
        };
        text.push_str(&format!("block b{i}(x: tensor) {{\n    return {next}\n}}\n"));
    }
    let compiled = compile(&text).map_err(|f| f.render()).unwrap();
    assert_eq!(compiled.graph.node_count(), 2);
}

/// Calls nested as deep as allowed, each at the bottom of a long conditional expression: the
/// evaluation depth limit must stop the recursion before the stack runs out.
#[test]
fn deep_expressions_in_deep_calls() {
    let n = netc::elab::MAX_CALL_DEPTH;
    let chain = "v if v < 0 else ".repeat(100);
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> conv(f0(1), 1)\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("f{}(v)", i + 1)
        } else {
            "v".to_string()
        };
        text.push_str(&format!("fn f{i}(v: int) = {chain}{next}\n"));
    }
    assert_code(&text, "E0218");
    let chain = "x if false else ".repeat(100);
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{}", i + 1)
        } else {
            "x |> relu".to_string()
        };
        text.push_str(&format!("block b{i}(x: tensor) {{\n    return {chain}{next}\n}}\n"));
    }
    assert_code(&text, "E0218");
    // Long operator chains in every call, the call at the bottom of each.
    let sum = " + 0".repeat(netc::syntax::MAX_OPERATORS);
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> conv(f0(1), 1)\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("f{}(v)", i + 1)
        } else {
            "v".to_string()
        };
        text.push_str(&format!("fn f{i}(v: int) = {next}{sum}\n"));
    }
    assert_code(&text, "E0218");
}

#[test]
fn long_conditional_expression_chain() {
    assert_code(
        &net(&format!("    let a = {}1", "1 if true else ".repeat(60_000))),
        "E0103",
    );
    let _ = compile(&net(&format!(
        "    let a = {}1",
        "1 if true else ".repeat(netc::syntax::MAX_DEPTH / 2 - 8)
    )));
}

#[test]
fn long_else_if_chain() {
    assert_code(
        &net(&format!(
            "    if false {{ }}{} else {{ }}",
            " else if false { }".repeat(50_000)
        )),
        "E0103",
    );
    let n = netc::syntax::MAX_DEPTH / 3 - 4;
    let _ = compile(&net(&format!(
        "    if false {{ }}{} else {{ }}",
        " else if false { }".repeat(n)
    )));
}

#[test]
fn long_field_and_index_chains() {
    assert_code(&net(&format!("    let a = x{}", ".c".repeat(200_000))), "E0103");
    assert_code(&net(&format!("    let a = [1]{}", "[0]".repeat(200_000))), "E0103");
    let _ = error_code(&net(&format!("    let a = f(){}", "(1)".repeat(200_000))));
    let n = netc::syntax::MAX_DEPTH - 16;
    let _ = compile(&net(&format!("    let a = x{}", ".c".repeat(n))));
    let _ = compile(&net(&format!("    let a = [1]{}", "[0]".repeat(n))));
}

#[test]
fn long_prefix_chains() {
    let max = netc::syntax::MAX_OPERATORS;
    compile(&net(&format!("    let a = {}1", "-".repeat(max))))
        .map_err(|f| f.render())
        .unwrap();
    compile(&net(&format!("    let a = {}true", "not ".repeat(max))))
        .map_err(|f| f.render())
        .unwrap();
    compile(&net(&format!("    let a = 1{}", " + 1".repeat(max))))
        .map_err(|f| f.render())
        .unwrap();
    assert_code(&net(&format!("    let a = {}1", "- ".repeat(100_000))), "E0104");
    // Operator chains at the limit in every level of nesting.
    let depth = netc::syntax::MAX_NESTING - 1;
    for level in [
        format!("{}(", "-".repeat(max - 1)),
        format!("{}(", "1 + ".repeat(max - 1)),
    ] {
        assert_code(
            &net(&format!("    let a = {}1{}", level.repeat(depth), ")".repeat(depth))),
            "E0103",
        );
    }
}

#[test]
fn nested_tuples_do_not_backtrack_exponentially() {
    let depth = netc::syntax::MAX_NESTING - 1;
    let start = Instant::now();
    compile(&net(&format!(
        "    let a = {}1{}",
        "(".repeat(depth),
        ",)".repeat(depth)
    )))
    .map_err(|f| f.render())
    .unwrap();
    let _ = error_code(&net(&format!(
        "    let a = {}1{}",
        "f(".repeat(depth),
        ",)".repeat(depth)
    )));
    let _ = error_code(&net(&format!(
        "    let a = {}1{}",
        "(".repeat(depth),
        " if".repeat(depth)
    )));
    let _ = error_code(&net(&format!(
        "    let a = {}1{}",
        "(1 if ".repeat(depth),
        ")".repeat(depth)
    )));
    compile(&net(&format!(
        "    let a = {}1{}",
        "[(".repeat(depth / 2),
        ",)]".repeat(depth / 2)
    )))
    .map_err(|f| f.render())
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn deeply_nested_values() {
    // A list nested one level deeper on every iteration.
    assert_code(
        &net("    let l = [1]\n    for i in range(100000) {\n        l = [l]\n    }\n    let y = l + 1"),
        "E0218",
    );
    // A list doubling on every iteration.
    assert_code(
        &net("    let l = [1]\n    for i in range(100) {\n        l = [l, l]\n    }"),
        "E0218",
    );
    // A long list copied on every iteration.
    assert_code(
        &net("    let l = range(100000)\n    for i in range(100000) {\n        let y = l[i]\n    }"),
        "E0218",
    );
    // A long string copied on every iteration.
    let s = "a".repeat(500_000);
    assert_code(
        &net(&format!(
            "    let s = \"{s}\"\n    for i in range(100000) {{\n        let t = s\n    }}"
        )),
        "E0218",
    );
    // Many edges: a concat of many tensors, repeated.
    let many = vec!["x"; 50_000].join(", ");
    let text = net(&format!(
        "    for i in range(100000) {{\n        let y = concat({many})\n    }}"
    ));
    assert_code(&text, "E0218");
}

#[test]
fn long_node_names() {
    let label = "a".repeat(500_000);
    assert_code(
        &net(&format!(
            "    for i in range(100000) {{\n        x = x |> relu as {label}{{i}}\n    }}"
        )),
        "E0218",
    );
    // Long names made of many short block scopes.
    let n = netc::elab::MAX_CALL_DEPTH;
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{} as scope_{}", i + 1, "s".repeat(20))
        } else {
            "x |> relu".to_string()
        };
        text.push_str(&format!("block b{i}(x: tensor) {{\n    return {next}\n}}\n"));
    }
    assert_code(&text, "E0218");
}

#[test]
fn long_labels_from_interpolation() {
    // A long name made of many interpolations of a long string is refused while it is built.
    let s = "a".repeat(300_000);
    let parts = "{s}".repeat(100_000);
    assert_code(
        &net(&format!("    let s = \"{s}\"\n    x = x |> relu as n{parts}")),
        "E0218",
    );
    let parts = "{s}.".repeat(100_000);
    assert_code(
        &net(&format!("    let s = \"{s}\"\n    x = x |> relu as n{parts}n")),
        "E0218",
    );
}

#[test]
fn huge_weight_totals_are_refused() {
    // Each conv has a 1 GiB weight and about 2^56 MACs; 300 of them would overflow a u64 sum of
    // MACs, but their weights exceed the limit on a network's weights first. (Under that limit
    // the MACs of a network stay below 2^58.)
    let text = "net n {\n    input x: [1, 16384, 16384]\n    for i in range(300) {\n        let y = x |> conv(1, 16384, pad = 8191, bias = false)\n    }\n    return x\n}\n";
    assert_code(text, "E0310");
    // Three of them are within the limit, and their cost totals add up.
    let compiled = compile(&text.replace("range(300)", "range(3)"))
        .map_err(|f| f.render())
        .unwrap();
    let totals = netc::passes::cost::totals(&compiled.graph);
    assert_eq!(totals.macs, 3 * 16383 * 16383 * 16384 * 16384);
    let _ = netc::report::table(&compiled.graph, &compiled.planned().unwrap());
}

#[test]
fn includes_of_special_files() {
    for path in [
        "/dev/zero",
        "/dev/null",
        "/dev/urandom",
        "/",
        ".",
        "nets",
        "does/not/exist.net",
    ] {
        let text = format!("include \"{path}\"\n{}", net(""));
        let code = error_code(&text);
        assert!(code == "E0219" || code.starts_with("E01"), "{path}: {code}");
    }
    assert_code(&format!("include \"/dev/zero\"\n{}", net("")), "E0219");
}

#[test]
fn odd_overrides() {
    let text =
        "net n(a: int = 3, b: float = 1.0, c: bool = true) {\n    input x: [3, 8, 8]\n    return x |> conv(a, 1)\n}\n";
    for (k, v) in [
        ("a", "9223372036854775807"),
        ("a", "9223372036854775808"),
        ("a", "-1"),
        ("a", "0"),
        ("a", ""),
        ("a", "1.5"),
        ("b", "nan"),
        ("b", "inf"),
        ("b", "1e309"),
        ("c", "yes"),
        ("", ""),
        ("zzz", "1"),
        ("\u{0}", "\u{0}"),
    ] {
        let _ = compile_with(text, vec![(k.to_string(), v.to_string())], 1);
    }
}

#[test]
fn nested_bodies_in_nested_calls() {
    let n = netc::elab::MAX_CALL_DEPTH;
    let depth = netc::syntax::MAX_NESTING - 2;
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{}", i + 1)
        } else {
            "x |> relu".to_string()
        };
        let open = "if true { ".repeat(depth);
        let close = "} ".repeat(depth);
        text.push_str(&format!(
            "block b{i}(x: tensor) {{\n    {open}return {next} {close}\n}}\n"
        ));
    }
    let _ = compile(&text);
    let chain = " else if false { }".repeat(netc::syntax::MAX_DEPTH / 3 - 8);
    let mut text = String::from("net n {\n    input x: [3, 8, 8]\n    return x |> b0\n}\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("x |> b{}", i + 1)
        } else {
            "x |> relu".to_string()
        };
        text.push_str(&format!(
            "block b{i}(x: tensor) {{\n    if false {{ }}{chain} else {{ return {next} }}\n}}\n"
        ));
    }
    let _ = compile(&text);
}
