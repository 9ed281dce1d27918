//! Diagnostic constructors of elaboration: names, arguments, types, hyperparameters, limits and
//! the shape errors of layers.

use super::value::Value;
use crate::diag::Diagnostic;
use crate::ir::shape::{Shape, ShapeError, AXES, MAX_TENSOR_BYTES};
use crate::source::Span;

/// Up to three known names close to `name`, best first.
pub fn similar<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= (name.len().max(k.len()) / 3).max(1))
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(3).map(|(_, k)| k.to_string()).collect()
}

fn did_you_mean(d: Diagnostic, candidates: &[String]) -> Diagnostic {
    match candidates {
        [] => d,
        [one] => d.with_help(format!("did you mean `{one}`?")),
        many => d.with_help(format!(
            "did you mean {}?",
            many.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" or ")
        )),
    }
}

pub fn unknown_name(span: Span, name: &str, candidates: &[String]) -> Diagnostic {
    did_you_mean(
        Diagnostic::error("E0201", format!("unknown name `{name}`")).with_primary(span, "not defined here"),
        candidates,
    )
}

pub fn unknown_callee(span: Span, name: &str, candidates: &[String]) -> Diagnostic {
    did_you_mean(
        Diagnostic::error("E0202", format!("unknown layer or block `{name}`"))
            .with_primary(span, "no layer, block or function has this name"),
        candidates,
    )
}

pub fn not_callable(span: Span, name: &str, value: &Value) -> Diagnostic {
    Diagnostic::error("E0202", format!("`{name}` is a {}, not a layer or block", value.type_name()))
        .with_primary(span, "called here")
}

pub fn unknown_argument(span: Span, callee: &str, arg: &str, params: &[&str]) -> Diagnostic {
    let candidates = similar(arg, params.iter().copied());
    did_you_mean(
        Diagnostic::error("E0203", format!("`{callee}` has no parameter `{arg}`"))
            .with_primary(span, "unknown argument")
            .with_note(format!("`{callee}` takes: {}", params.join(", "))),
        &candidates,
    )
}

pub fn duplicate_argument(span: Span, callee: &str, arg: &str) -> Diagnostic {
    Diagnostic::error("E0203", format!("argument `{arg}` of `{callee}` is given twice"))
        .with_primary(span, "given again here")
}

pub fn too_many_arguments(span: Span, callee: &str, expected: usize, found: usize, params: &[&str]) -> Diagnostic {
    Diagnostic::error("E0204", format!("`{callee}` takes at most {expected} arguments, found {found}"))
        .with_primary(span, format!("{} too many", found - expected))
        .with_note(format!("`{callee}` takes: {}", params.join(", ")))
}

pub fn missing_argument(span: Span, callee: &str, param: &str, params: &[&str]) -> Diagnostic {
    Diagnostic::error("E0204", format!("`{callee}` is missing its argument `{param}`"))
        .with_primary(span, format!("`{param}` is required"))
        .with_note(format!("`{callee}` takes: {}", params.join(", ")))
}

pub fn wrong_type(span: Span, what: &str, expected: &str, found: &Value) -> Diagnostic {
    let mut d = Diagnostic::error("E0205", format!("{what} must be {expected}, found {}", found.type_name()))
        .with_primary(span, format!("this is a {} ({})", found.type_name(), found));
    if let (Value::Float(_), true) = (found, expected.contains("int")) {
        d = d.with_help("use `//` for integer division, or `round(...)`, `floor(...)` or `ceil(...)`");
    }
    d
}

pub fn bad_operands(span: Span, op: &str, left: &Value, right: &Value) -> Diagnostic {
    Diagnostic::error("E0205", format!("cannot apply `{op}` to {} and {}", left.type_name(), right.type_name()))
        .with_primary(span, format!("{} {op} {}", left.type_name(), right.type_name()))
}

pub fn bad_operand(span: Span, op: &str, value: &Value) -> Diagnostic {
    Diagnostic::error("E0205", format!("cannot apply `{op}` to {}", value.type_name()))
        .with_primary(span, format!("this is a {}", value.type_name()))
}

pub fn unknown_type(span: Span, name: &str) -> Diagnostic {
    did_you_mean(
        Diagnostic::error("E0205", format!("unknown type `{name}`"))
            .with_primary(span, "not a type")
            .with_note(format!("types are: {}", super::value::Type::NAMES.join(", "))),
        &similar(name, super::value::Type::NAMES),
    )
}

fn known_hyper_note(known: &[(String, String)]) -> String {
    if known.is_empty() {
        "this network has no hyperparameters".to_string()
    } else {
        let list: Vec<String> = known.iter().map(|(n, d)| format!("{n} ({d})")).collect();
        format!("hyperparameters: {}", list.join(", "))
    }
}

pub fn unknown_hyperparameter(name: &str, net_span: Span, known: &[(String, String)]) -> Diagnostic {
    did_you_mean(
        Diagnostic::error("E0206", format!("unknown hyperparameter `{name}` in --set"))
            .with_primary(net_span, "the network is declared here")
            .with_note(known_hyper_note(known)),
        &similar(name, known.iter().map(|(n, _)| n.as_str())),
    )
}

pub fn bad_hyper_value(name: &str, value: &str, expected: &str, span: Span, known: &[(String, String)]) -> Diagnostic {
    Diagnostic::error("E0207", format!("--set {name}={value}: expected {expected}"))
        .with_primary(span, format!("`{name}` is declared here"))
        .with_note(known_hyper_note(known))
}

pub fn malformed_set(text: &str) -> Diagnostic {
    Diagnostic::error("E0207", format!("--set `{text}` is not of the form name=value"))
        .with_help("write, for example, --set alpha=0.5")
}

pub fn missing_hyperparameter(span: Span, name: &str) -> Diagnostic {
    Diagnostic::error("E0207", format!("hyperparameter `{name}` has no default and no value"))
        .with_primary(span, "declared without a default")
        .with_help(format!("pass --set {name}=..."))
}

pub fn recursion(span: Span, block: &str) -> Diagnostic {
    Diagnostic::error("E0208", format!("block `{block}` instantiates itself"))
        .with_primary(span, "recursive instantiation")
        .with_note("blocks are expanded inline, so recursion would never end")
}

pub fn duplicate_definition(span: Span, what: &str, name: &str, previous: Span) -> Diagnostic {
    Diagnostic::error("E0209", format!("{what} `{name}` is defined twice"))
        .with_primary(span, "defined again here")
        .with_secondary(previous, "first defined here")
}

pub fn duplicate_node_name(span: Span, name: &str) -> Diagnostic {
    Diagnostic::error("E0209", format!("node name `{name}` is already used in this scope"))
        .with_primary(span, "names must be unique")
        .with_help("give a different name after `as`, for example with the loop index: `as unit{i}`")
}

pub fn bad_label(span: Span, value: &Value) -> Diagnostic {
    Diagnostic::error("E0209", format!("a node name can only contain text and integers, found {}", value.type_name()))
        .with_primary(span, "in this name")
}

pub fn undeclared_assignment(span: Span, name: &str) -> Diagnostic {
    Diagnostic::error("E0210", format!("`{name}` is assigned before it is declared"))
        .with_primary(span, "no `let` declared this name")
        .with_help(format!("declare it first: `let {name} = ...`"))
}

pub fn no_return(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error("E0211", format!("{what} ends without `return`"))
        .with_primary(span, "no value is returned")
        .with_help("end it with `return <value>`")
}

pub fn pattern_mismatch(span: Span, names: usize, value: &Value) -> Diagnostic {
    let found = match value {
        Value::List(items) => format!("{} values", items.len()),
        v => format!("a {}", v.type_name()),
    };
    Diagnostic::error("E0212", format!("cannot unpack {found} into {names} names")).with_primary(span, "here")
}

pub fn no_net(span: Span) -> Diagnostic {
    Diagnostic::error("E0213", "this file declares no network")
        .with_primary(span, "expected `net name(...) { ... }` in this file")
}

pub fn two_nets(span: Span, previous: Span) -> Diagnostic {
    Diagnostic::error("E0213", "a file declares at most one network")
        .with_primary(span, "second network")
        .with_secondary(previous, "first network")
}

pub fn input_outside_net(span: Span) -> Diagnostic {
    Diagnostic::error("E0214", "`input` is only allowed in the body of the network")
        .with_primary(span, "inside a block or loop")
        .with_help("declare the input in the network and pass tensors to blocks as arguments")
}

pub fn second_input(span: Span, previous: Span) -> Diagnostic {
    Diagnostic::error("E0214", "a network has exactly one input")
        .with_primary(span, "second input")
        .with_secondary(previous, "first input")
}

pub fn no_input(span: Span) -> Diagnostic {
    Diagnostic::error("E0214", "the network declares no input")
        .with_primary(span, "in this network")
        .with_help("declare it first in the body: `input image: [3, 224, 224]`")
}

pub fn output_not_tensor(span: Span, value: &Value) -> Diagnostic {
    Diagnostic::error("E0214", format!("a network returns tensors, found {}", value.type_name()))
        .with_primary(span, "returned here")
}

pub fn unknown_field(span: Span, field: &str, value: &Value, rank: Option<usize>) -> Diagnostic {
    let mut d = Diagnostic::error("E0215", format!("{} has no field `{field}`", value.type_name()))
        .with_primary(span, "unknown field");
    d = match rank {
        Some(4) => d.with_note("a tensor has the fields n, c, h and w"),
        Some(_) => d.with_note("a flat tensor has the fields n and c"),
        None => d,
    };
    d
}

pub fn index_out_of_range(span: Span, index: i64, len: usize) -> Diagnostic {
    Diagnostic::error("E0216", format!("index {index} is out of range for {len} values"))
        .with_primary(span, format!("valid indices are 0 to {}", len as i64 - 1))
}

pub fn arithmetic(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error("E0217", what.to_string()).with_primary(span, "in this expression")
}

pub fn limit(span: Span, what: &str, limit: u64) -> Diagnostic {
    Diagnostic::error("E0218", format!("{what} exceeds the limit of {limit}")).with_primary(span, "here")
}

pub fn include_failed(span: Span, path: &str, reason: &str) -> Diagnostic {
    Diagnostic::error("E0219", format!("cannot include `{path}`: {reason}")).with_primary(span, "included here")
}

pub fn user_error(span: Span, message: &str) -> Diagnostic {
    Diagnostic::error("E0220", message.to_string()).with_primary(span, "raised here")
}

pub fn invalid_value(span: Span, what: &str, expected: &str, found: &Value) -> Diagnostic {
    Diagnostic::error("E0221", format!("{what} must be {expected}, found {found}")).with_primary(span, "invalid value")
}

pub fn non_positive(span: Span, what: &str, found: i64) -> Diagnostic {
    Diagnostic::error("E0305", format!("{what} must be at least 1, found {found}"))
        .with_primary(span, format!("this is {found}"))
}

pub fn tensor_in_fn(span: Span, name: &str) -> Diagnostic {
    Diagnostic::error("E0222", format!("function `{name}` must compute a scalar, but it builds a layer"))
        .with_primary(span, "layer call inside a `fn`")
        .with_help("use a `block` for anything that builds layers")
}

/// A shape error of a layer, pointing at the call (`span`) and at its tensor arguments.
pub fn shape(err: &ShapeError, layer: &str, span: Span, inputs: &[(Span, Shape)]) -> Diagnostic {
    let input = |i: usize| inputs.get(i).or(inputs.first());
    let mut d = match err {
        ShapeError::Mismatch { left, right } => {
            let axis = (0..left.rank().min(right.rank())).find(|&a| left.0[a] != right.0[a]);
            let what = match (left.rank() == right.rank(), axis) {
                (true, Some(1)) => "channel mismatch in add",
                (true, Some(_)) => "spatial mismatch in add",
                _ => "rank mismatch in add",
            };
            Diagnostic::error("E0301", format!("{what}: {left} + {right}"))
                .with_primary(span, format!("left is {left}, right is {right}"))
                .with_note("add needs two tensors of exactly the same shape")
        }
        ShapeError::ConcatMismatch { input: i, axis, first, found } => {
            let what = match axis {
                2 | 3 => "spatial mismatch in concat",
                _ => "mismatch in concat",
            };
            let axis_name = ["batch", "channels", "height", "width"].get(*axis).copied().unwrap_or("rank");
            Diagnostic::error("E0302", format!("{what}: input {i} has {axis_name} {}, input 0 has {}",
                found.0.get(*axis).map_or("?".into(), |v| v.to_string()),
                first.0.get(*axis).map_or("?".into(), |v| v.to_string())))
            .with_primary(span, format!("input 0 is {first}, input {i} is {found}"))
            .with_note("concat joins along channels; every other dimension must match")
        }
        ShapeError::GroupsInput { channels, groups } => {
            Diagnostic::error("E0303", format!("{groups} groups do not divide the {channels} input channels of `{layer}`"))
                .with_primary(span, format!("{channels} channels in, groups = {groups}"))
        }
        ShapeError::GroupsOutput { channels, groups } => {
            Diagnostic::error("E0303", format!("{groups} groups do not divide the {channels} output channels of `{layer}`"))
                .with_primary(span, format!("{channels} channels out, groups = {groups}"))
        }
        ShapeError::KernelTooLarge { axis, kernel, padded, input } => Diagnostic::error(
            "E0304",
            format!("`{layer}` window {} {kernel} is larger than its padded input {padded}", AXES[*axis]),
        )
        .with_primary(span, format!("input {} is {input}, {padded} with padding", AXES[*axis])),
        ShapeError::PoolPadding { axis, pad, kernel } => Diagnostic::error(
            "E0309",
            format!("`{layer}` {} padding {pad} must be smaller than its window {kernel}", AXES[*axis]),
        )
        .with_primary(span, "padding too large"),
        ShapeError::ZeroAttr { attr } => {
            Diagnostic::error("E0305", format!("`{attr}` of `{layer}` must be at least 1, found 0"))
                .with_primary(span, "zero size")
        }
        ShapeError::Rank { input: i, expected, found } => {
            let mut d = Diagnostic::error(
                "E0307",
                format!("`{layer}` expects a rank-{} tensor, found {found}", expected.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" or rank-")),
            )
            .with_primary(input(*i).map_or(span, |x| x.0), format!("this is {found}"));
            if layer == "dense" && found.rank() == 4 {
                d = d.with_help("flatten it first: `|> flatten |> dense(...)`");
            }
            d
        }
        ShapeError::SliceRange { start, end, channels } => {
            Diagnostic::error("E0308", format!("channels {start}..{end} are outside the {channels} channels of the input"))
                .with_primary(span, "invalid channel range")
        }
        ShapeError::TooLarge { shape, bytes, weight } => {
            let what = if *weight { "weight tensor" } else { "output" };
            Diagnostic::error("E0306", format!("`{layer}` {what} {shape} is too large ({bytes} bytes)"))
                .with_primary(span, format!("{what} of this layer"))
                .with_note(format!("the limit is {MAX_TENSOR_BYTES} bytes per tensor"))
        }
        ShapeError::Arity { expected, found } => {
            Diagnostic::error("E0204", format!("`{layer}` takes {expected} tensors, found {found}"))
                .with_primary(span, "here")
        }
    };
    if !matches!(err, ShapeError::Rank { .. }) {
        for (i, (s, shape)) in inputs.iter().enumerate() {
            if *s != span {
                let which = if inputs.len() > 1 { format!("input {i}") } else { "input".to_string() };
                d = d.with_secondary(*s, format!("{which} is {shape}"));
            }
        }
    }
    d
}
