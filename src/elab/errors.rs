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
        .map(|k| (strsim::osa_distance(name, k), k))
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

/// `int` becomes `an int`; a phrase that is not a bare type name is kept as it is.
fn article(ty: &str) -> String {
    if !super::value::Type::NAMES.contains(&ty) {
        return ty.to_string();
    }
    let an = ty.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {ty}", if an { "an" } else { "a" })
}

/// A value for a label: its type, and the value itself where that says more.
fn describe_value(v: &Value) -> String {
    match v {
        Value::Tensor(_) => "a tensor".to_string(),
        v => format!("{} ({v})", article(v.type_name())),
    }
}

/// The bare parameter names of a signature shown as `name = default`.
fn param_names<'a>(params: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    params.iter().map(|p| p.split([' ', '=']).next().unwrap_or(p))
}

fn signature_note(callee: &str, params: &[&str]) -> String {
    format!("`{callee}` takes ({})", params.join(", "))
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
    Diagnostic::error(
        "E0202",
        format!("`{name}` is {}, not a layer or block", article(value.type_name())),
    )
    .with_primary(span, format!("this is {}, called like a layer", describe_value(value)))
}

/// `params` are the parameters as shown to the user: `name` or `name = default`.
pub fn unknown_argument(span: Span, callee: &str, arg: &str, params: &[&str]) -> Diagnostic {
    let candidates = similar(arg, param_names(params));
    did_you_mean(
        Diagnostic::error("E0203", format!("`{callee}` has no parameter `{arg}`"))
            .with_primary(span, "unknown argument")
            .with_note(signature_note(callee, params)),
        &candidates,
    )
}

/// `first` is the value given first, when it was written in the call.
pub fn duplicate_argument(span: Span, callee: &str, arg: &str, first: Option<Span>) -> Diagnostic {
    let d = Diagnostic::error("E0203", format!("argument `{arg}` of `{callee}` is given twice"))
        .with_primary(span, "given again here");
    match first {
        Some(s) => d.with_secondary(s, "first given here"),
        None => d,
    }
}

fn arguments(n: usize) -> String {
    format!("{n} argument{}", if n == 1 { "" } else { "s" })
}

/// `expected` and `found` count positional arguments, the piped tensor included; `span` covers
/// the extra ones.
pub fn too_many_arguments(
    span: Span,
    callee: &str,
    expected: usize,
    found: usize,
    params: &[&str],
    piped: bool,
) -> Diagnostic {
    let extra = found - expected;
    let message = if piped {
        format!(
            "`{callee}` takes at most {} after the piped tensor, found {}",
            arguments(expected.saturating_sub(1)),
            found - 1
        )
    } else {
        format!("`{callee}` takes at most {}, found {found}", arguments(expected))
    };
    let mut d = Diagnostic::error("E0204", message)
        .with_primary(span, format!("{} too many", arguments(extra)))
        .with_note(signature_note(callee, params));
    if piped {
        d = d.with_note(format!(
            "the tensor piped in with `|>` is the first argument, `{}`",
            param_names(params).next().unwrap_or("x")
        ));
    }
    d
}

pub fn missing_argument(span: Span, callee: &str, param: &str, params: &[&str]) -> Diagnostic {
    Diagnostic::error("E0204", format!("`{callee}` is missing its argument `{param}`"))
        .with_primary(span, format!("`{param}` is required"))
        .with_note(signature_note(callee, params))
}

pub fn wrong_type(span: Span, what: &str, expected: &str, found: &Value) -> Diagnostic {
    let found_type = article(found.type_name());
    let mut d = Diagnostic::error(
        "E0205",
        format!("{what} must be {}, found {found_type}", article(expected)),
    )
    .with_primary(span, format!("this is {}", describe_value(found)));
    if let (Value::Float(_), true) = (found, expected.contains("int")) {
        d = d.with_help("use `//` for integer division, or `round(...)`, `floor(...)` or `ceil(...)`");
    }
    d
}

pub fn bad_operands(span: Span, op: &str, left: &Value, right: &Value) -> Diagnostic {
    let d = Diagnostic::error(
        "E0205",
        format!(
            "cannot apply `{op}` to {} and {}",
            article(left.type_name()),
            article(right.type_name())
        ),
    )
    .with_primary(span, format!("{} {op} {}", left.type_name(), right.type_name()));
    if matches!(left, Value::Tensor(_)) || matches!(right, Value::Tensor(_)) {
        d.with_note("the only operator on tensors is `+`, which adds two tensors of the same shape")
    } else {
        d
    }
}

pub fn bad_operand(span: Span, op: &str, value: &Value) -> Diagnostic {
    Diagnostic::error(
        "E0205",
        format!("cannot apply `{op}` to {}", article(value.type_name())),
    )
    .with_primary(span, format!("this is {}", describe_value(value)))
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
    Diagnostic::error(
        "E0207",
        format!("invalid value for --set {name}: expected {expected}, found `{value}`"),
    )
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

/// `cycle` lists the blocks (or functions) from the first instantiation of `name` to the one
/// that instantiates it again.
pub fn recursion(span: Span, name: &str, function: bool, cycle: &[String]) -> Diagnostic {
    let (what, verb, done) = if function {
        ("function", "calls", "called")
    } else {
        ("block", "instantiates", "instantiated")
    };
    let through: Vec<String> = cycle.iter().skip(1).map(|n| format!("`{n}`")).collect();
    let message = if through.is_empty() {
        format!("{what} `{name}` {verb} itself")
    } else {
        format!("{what} `{name}` {verb} itself through {}", through.join(", "))
    };
    let mut d = Diagnostic::error("E0208", message).with_primary(span, format!("`{name}` {done} again here"));
    if !through.is_empty() {
        d = d.with_note(format!("the cycle is {} -> {name}", cycle.join(" -> ")));
    }
    if function {
        d.with_note("functions are evaluated at compile time, so recursion would never end")
    } else {
        d.with_note("blocks are expanded inline, so recursion would never end")
            .with_help(format!(
                "to repeat `{name}`, call it in a loop: `for i in range(n) {{ x = x |> {name}(...) }}`"
            ))
    }
}

pub fn duplicate_definition(span: Span, what: &str, name: &str, previous: Span) -> Diagnostic {
    Diagnostic::error("E0209", format!("{what} `{name}` is defined twice"))
        .with_primary(span, "defined again here")
        .with_secondary(previous, "first defined here")
        .with_help("blocks, functions and constants share one namespace; rename one of them")
}

pub fn duplicate_node_name(span: Span, name: &str) -> Diagnostic {
    Diagnostic::error("E0209", format!("node name `{name}` is already used in this scope"))
        .with_primary(span, "names must be unique")
        .with_help("give a different name after `as`, for example with the loop index: `as unit{i}`")
}

pub fn bad_label(span: Span, value: &Value) -> Diagnostic {
    Diagnostic::error(
        "E0209",
        format!(
            "a node name can only contain text and integers, found {}",
            value.type_name()
        ),
    )
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

/// `value_span` is where the value comes from, when it is an expression of its own.
pub fn pattern_mismatch(span: Span, names: usize, value: &Value, value_span: Option<Span>) -> Diagnostic {
    let found = match value {
        Value::List(items) if items.len() == 1 => "1 value".to_string(),
        Value::List(items) => format!("{} values", items.len()),
        v => article(v.type_name()),
    };
    let d = Diagnostic::error("E0212", format!("cannot unpack {found} into {names} names"))
        .with_primary(span, format!("{names} names"));
    match value_span {
        Some(s) => d.with_secondary(s, format!("this gives {found}")),
        None => d,
    }
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
        .with_primary(span, "inside a block")
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
    Diagnostic::error(
        "E0214",
        format!(
            "a network must return a tensor or a list of tensors, found {}",
            article(value.type_name())
        ),
    )
    .with_primary(span, format!("this is {}", describe_value(value)))
}

pub fn unknown_field(span: Span, field: &str, value: &Value, rank: Option<usize>) -> Diagnostic {
    let mut d = Diagnostic::error(
        "E0215",
        format!("{} has no field `{field}`", article(value.type_name())),
    )
    .with_primary(span, "unknown field");
    d = match rank {
        Some(4) => d.with_note("a tensor has the fields n, c, h and w"),
        Some(_) => d.with_note("a flat tensor has the fields n and c"),
        None => d,
    };
    d
}

pub fn index_out_of_range(span: Span, index: i64, len: usize) -> Diagnostic {
    let (list, label) = match len {
        0 => ("an empty list".to_string(), "the list is empty".to_string()),
        1 => ("a list of 1 value".to_string(), "the only valid index is 0".to_string()),
        n => (
            format!("a list of {n} values"),
            format!("valid indices are 0 to {}", n - 1),
        ),
    };
    Diagnostic::error("E0216", format!("index {index} is out of range for {list}")).with_primary(span, label)
}

pub fn arithmetic(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error("E0217", what.to_string()).with_primary(span, "in this expression")
}

/// `left op right` with a zero `right` (at `divisor`); `span` is the whole expression.
pub fn division_by_zero(span: Span, divisor: Span, op: &str, left: &Value, right: &Value) -> Diagnostic {
    let d = Diagnostic::error("E0217", format!("division by zero: {left} {op} {right}"));
    if divisor == span {
        d.with_primary(span, "divides by zero")
    } else {
        d.with_primary(divisor, format!("this is {right}"))
            .with_secondary(span, "in this expression")
    }
}

pub fn limit(span: Span, what: &str, limit: u64) -> Diagnostic {
    Diagnostic::error("E0218", format!("{what} exceeds the limit of {limit}")).with_primary(span, "here")
}

/// `resolved` is where the file was looked for: `path` relative to the including file.
pub fn include_failed(span: Span, path: &str, resolved: &str, reason: &str) -> Diagnostic {
    // An I/O error reads "No such file or directory (os error 2)"; keep the words only.
    let reason = match reason.rfind(" (os error ") {
        Some(i) if reason.ends_with(')') => &reason[..i],
        _ => reason,
    };
    let mut chars = reason.chars();
    let reason: String = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default();
    Diagnostic::error("E0219", format!("cannot include `{path}`: {reason}"))
        .with_primary(span, "included here")
        .with_note(format!(
            "looked for `{resolved}`; an include is relative to the including file"
        ))
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
    Diagnostic::error(
        "E0222",
        format!("function `{name}` must compute a scalar, but it builds a layer"),
    )
    .with_primary(span, "layer call inside a `fn`")
    .with_help("use a `block` for anything that builds layers")
}

/// A byte count for people: `2 GiB`, `111.8 GiB`.
fn bytes(n: u128) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The axes of a tensor of this rank, as the user knows them.
fn layout(rank: usize) -> &'static str {
    match rank {
        2 => "[batch, features]",
        4 => "[batch, channels, height, width]",
        _ => "a tensor",
    }
}

const AXIS_NAMES: [&str; 4] = ["batch size", "channels", "height", "width"];

/// A shape error of a layer, pointing at the call (`span`) and at its tensor arguments.
pub fn shape(err: &ShapeError, layer: &str, span: Span, inputs: &[(Span, Shape)]) -> Diagnostic {
    let input = |i: usize| inputs.get(i).or(inputs.first());
    // Labels on the tensor arguments, unless the error labels them itself.
    let mut label_inputs = true;
    let mut d = match err {
        ShapeError::Mismatch { left, right } => {
            let axis = (0..left.rank().min(right.rank())).find(|&a| left.0[a] != right.0[a]);
            let (what, differ) = match (left.rank() == right.rank(), axis) {
                (true, Some(1)) => ("channel mismatch in add", "the channels differ".to_string()),
                (true, Some(a)) => ("spatial mismatch in add", format!("the {} differs", AXIS_NAMES[a])),
                _ => (
                    "rank mismatch in add",
                    format!("rank {} and rank {}", left.rank(), right.rank()),
                ),
            };
            let differ = match axis {
                Some(a) if left.rank() == right.rank() => format!("{differ}: {} and {}", left.0[a], right.0[a]),
                _ => differ,
            };
            let mut d = Diagnostic::error("E0301", format!("{what}: {left} + {right}"))
                .with_primary(span, differ)
                .with_note("add needs two tensors of exactly the same shape");
            if inputs.len() == 2 && inputs[0].0 != inputs[1].0 {
                label_inputs = false;
                d = d
                    .with_secondary(inputs[0].0, format!("left is {left}"))
                    .with_secondary(inputs[1].0, format!("right is {right}"));
            }
            match axis {
                Some(1) if left.rank() == right.rank() => d.with_help(format!(
                    "for a residual connection, project the shortcut to the other side's channels with a \
                     1x1 convolution, e.g. `conv({}, 1)`",
                    left.c().max(right.c())
                )),
                Some(2 | 3) if left.rank() == right.rank() => d.with_help(
                    "for a residual connection, downsample the shortcut with the same stride as the other side",
                ),
                _ => d,
            }
        }
        ShapeError::ConcatMismatch {
            input: i,
            axis,
            first,
            found,
        } => {
            label_inputs = false;
            let (s0, si) = (inputs.first().map(|x| x.0), inputs.get(*i).map(|x| x.0));
            let own_spans = match (s0, si) {
                (Some(s0), Some(si)) if s0 != si && s0 != span && si != span => Some((s0, si)),
                _ => None,
            };
            let (message, differ) = if first.rank() != found.rank() {
                (
                    format!(
                        "rank mismatch in concat: input {i} has rank {}, input 0 has rank {}",
                        found.rank(),
                        first.rank()
                    ),
                    format!("rank {} and rank {}", first.rank(), found.rank()),
                )
            } else {
                let what = if matches!(axis, 2 | 3) {
                    "spatial mismatch in concat"
                } else {
                    "mismatch in concat"
                };
                let name = AXIS_NAMES.get(*axis).copied().unwrap_or("size");
                let (a, b) = (first.0[*axis], found.0[*axis]);
                (
                    format!("{what}: input {i} has {name} {b}, input 0 has {a}"),
                    format!("the {name} differs: {a} and {b}"),
                )
            };
            let mut d = Diagnostic::error("E0302", message);
            d = match own_spans {
                Some((s0, si)) => d
                    .with_primary(span, differ)
                    .with_secondary(s0, format!("input 0 is {first}"))
                    .with_secondary(si, format!("input {i} is {found}")),
                None => d.with_primary(span, format!("input 0 is {first}, input {i} is {found}")),
            };
            d.with_note("concat joins tensors along channels; all other dimensions must be equal")
        }
        ShapeError::GroupsInput { channels, groups } if layer == "split" => Diagnostic::error(
            "E0303",
            format!("`split` cannot divide {channels} channels into {groups} equal parts"),
        )
        .with_primary(span, format!("{channels} channels, {groups} parts"))
        .with_help("give the sizes of the parts as a list, e.g. `split(x, [a, b])`"),
        ShapeError::GroupsInput { channels, groups } => {
            let d = Diagnostic::error(
                "E0303",
                format!("{groups} groups do not divide the {channels} input channels of `{layer}`"),
            )
            .with_primary(span, format!("{channels} channels in, groups = {groups}"));
            if layer == "shuffle" {
                d
            } else {
                d.with_note("a grouped convolution splits its input and output channels into `groups` equal parts")
            }
        }
        ShapeError::GroupsOutput { channels, groups } => Diagnostic::error(
            "E0303",
            format!("{groups} groups do not divide the {channels} output channels of `{layer}`"),
        )
        .with_primary(span, format!("{channels} channels out, groups = {groups}"))
        .with_note("a grouped convolution splits its input and output channels into `groups` equal parts"),
        ShapeError::KernelTooLarge {
            axis,
            kernel,
            padded,
            input,
        } => {
            let pool = layer.ends_with("pool");
            let window = if pool { "window" } else { "kernel" };
            let axis = AXES[*axis];
            let label = if padded == input {
                format!("the input {axis} is {input}, without padding")
            } else {
                format!("the input {axis} is {input}, {padded} with padding")
            };
            Diagnostic::error(
                "E0304",
                format!("`{layer}` {window} {axis} {kernel} is larger than its padded input {axis} {padded}"),
            )
            .with_primary(span, label)
            .with_help(if pool {
                "use a smaller window, or pool earlier while the input is larger".to_string()
            } else {
                "pad the input (`pad = same` keeps its size) or use a smaller kernel".to_string()
            })
        }
        ShapeError::PoolPadding { axis, pad, kernel } => Diagnostic::error(
            "E0309",
            format!(
                "`{layer}` {} padding {pad} must be smaller than its window {kernel}",
                AXES[*axis]
            ),
        )
        .with_primary(span, format!("padding {pad}, window {kernel}")),
        ShapeError::ZeroAttr { attr } => {
            Diagnostic::error("E0305", format!("`{attr}` of `{layer}` must be at least 1, found 0"))
                .with_primary(span, "zero size")
        }
        ShapeError::Rank {
            input: i,
            expected,
            found,
        } => {
            label_inputs = false;
            let ranks = expected
                .iter()
                .map(|r| format!("rank-{r}"))
                .collect::<Vec<_>>()
                .join(" or ");
            let at = input(*i).map_or(span, |x| x.0);
            let mut d = Diagnostic::error(
                "E0307",
                format!(
                    "`{layer}` expects a {ranks} tensor, found a rank-{} tensor {found}",
                    found.rank()
                ),
            )
            .with_primary(at, format!("this is {found}"));
            if at != span {
                let layouts = expected.iter().map(|r| layout(*r)).collect::<Vec<_>>().join(" or ");
                d = d.with_secondary(span, format!("`{layer}` takes {layouts}"));
            }
            if layer == "dense" && found.rank() == 4 {
                d = d.with_help("flatten it first: `|> flatten |> dense(...)`");
            } else if expected == &[4] && found.rank() == 2 {
                d = d.with_help(format!(
                    "this tensor is flat; apply `{layer}` before `flatten` or `dense`"
                ));
            }
            d
        }
        ShapeError::SliceRange { start, end, channels } => Diagnostic::error(
            "E0308",
            format!("channels {start}..{end} are outside the {channels} channels of the input"),
        )
        .with_primary(span, format!("the input has channels 0..{channels}"))
        .with_note("a channel range start..end needs start < end <= channels"),
        ShapeError::TooLarge {
            shape,
            bytes: size,
            weight,
        } => {
            let limit = format!(
                "the limit is {} ({MAX_TENSOR_BYTES} bytes) per tensor",
                bytes(MAX_TENSOR_BYTES as u128)
            );
            let size = format!("{} ({size} bytes)", bytes(*size));
            if layer == "input" {
                Diagnostic::error("E0306", format!("the input tensor {shape} is too large: {size}"))
                    .with_primary(span, "declared here")
                    .with_note(limit)
                    .with_help("use a smaller resolution or batch size")
            } else if *weight {
                Diagnostic::error(
                    "E0306",
                    format!("the weights of `{layer}`, {shape}, are too large: {size}"),
                )
                .with_primary(span, "weights of this layer")
                .with_note(limit)
            } else {
                Diagnostic::error(
                    "E0306",
                    format!("the output of `{layer}`, {shape}, is too large: {size}"),
                )
                .with_primary(span, format!("output {shape}"))
                .with_note(limit)
                .with_help("use fewer channels, or downsample earlier with a stride or pooling")
            }
        }
        ShapeError::Arity { expected, found } => {
            Diagnostic::error("E0204", format!("`{layer}` takes {expected} tensors, found {found}"))
                .with_primary(span, "here")
        }
    };
    if label_inputs {
        for (i, (s, shape)) in inputs.iter().enumerate() {
            if *s != span {
                let which = if inputs.len() > 1 {
                    format!("input {i}")
                } else {
                    "input".to_string()
                };
                d = d.with_secondary(*s, format!("{which} is {shape}"));
            }
        }
    }
    d
}

pub fn assertion_failed(span: Span, message: Option<&str>, hyperparameters: &[String]) -> Diagnostic {
    let d = Diagnostic::error("E0220", message.unwrap_or("assertion failed").to_string())
        .with_primary(span, "this condition is false");
    if hyperparameters.is_empty() {
        d
    } else {
        d.with_note(format!("hyperparameters: {}", hyperparameters.join(", ")))
    }
}

pub fn not_in_table(span: Span, key: &Value, keys: &[String]) -> Diagnostic {
    Diagnostic::error("E0216", format!("no row of the table starts with {key}"))
        .with_primary(span, "looked up here")
        .with_note(format!("the rows start with: {}", keys.join(", ")))
}

pub fn weights_too_large(net: &str, bytes: u64, limit: u64) -> Diagnostic {
    Diagnostic::error("E0310", format!("the weights of `{net}` take {bytes} bytes"))
        .with_note(format!("the limit is {limit} bytes for all of a network's weights"))
        .with_help("use fewer or narrower layers")
}
