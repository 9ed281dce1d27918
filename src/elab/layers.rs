//! Builtin layers: their signatures, and how a call becomes IR nodes.
//!
//! `pad` accepts an int (all sides), `[h, w]`, `[top, bottom, left, right]`, `valid` (no padding)
//! or `same` (TensorFlow: output size `ceil(in / stride)`, the odd pixel of padding at the bottom
//! and right). `kernel`, `stride` and `dilation` accept an int or `[h, w]`.

use super::errors;
use super::value::{Type, Value};
use super::{Default, Elab, Result, Signature};
use crate::ir::op::{Activation, Conv, Hw, Op, Pad, Pool, PoolKind};
use crate::ir::NodeId;
use crate::source::Span;
use crate::syntax::ast::{Call, Ident};

pub const NAMES: [&str; 20] = [
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

pub fn lookup(name: &str) -> Option<&'static str> {
    NAMES.iter().find(|n| **n == name).copied()
}

fn p(name: &str, ty: Type, default: Default) -> Signature {
    Signature {
        name: name.to_string(),
        ty,
        default,
    }
}

fn int(v: i64) -> Default {
    Default::Value(Value::Int(v))
}

fn signature(layer: &str) -> Vec<Signature> {
    use Default::*;
    let x = || p("x", Type::Tensor, Required);
    match layer {
        "conv" => vec![
            x(),
            p("out", Type::Int, Required),
            p("kernel", Type::Any, Required),
            p("stride", Type::Any, int(1)),
            p("pad", Type::Any, int(0)),
            p("dilation", Type::Any, int(1)),
            p("groups", Type::Int, int(1)),
            p("bias", Type::Bool, Value(super::Value::Bool(true))),
        ],
        "dwconv" => vec![
            x(),
            p("kernel", Type::Any, Required),
            p("stride", Type::Any, int(1)),
            p("pad", Type::Any, int(0)),
            p("dilation", Type::Any, int(1)),
            p("multiplier", Type::Int, int(1)),
            p("bias", Type::Bool, Value(super::Value::Bool(true))),
        ],
        "batchnorm" => vec![x(), p("eps", Type::Float, Value(super::Value::Float(1e-5)))],
        "leaky_relu" => vec![x(), p("slope", Type::Float, Value(super::Value::Float(0.01)))],
        "maxpool" | "avgpool" => {
            let mut s = vec![
                x(),
                p("kernel", Type::Any, Required),
                p("stride", Type::Any, Absent),
                p("pad", Type::Any, int(0)),
                p("ceil", Type::Bool, Value(super::Value::Bool(false))),
            ];
            if layer == "avgpool" {
                s.push(p("include_pad", Type::Bool, Value(super::Value::Bool(true))));
            }
            s
        }
        "dense" => {
            vec![
                x(),
                p("out", Type::Int, Required),
                p("bias", Type::Bool, Value(super::Value::Bool(true))),
            ]
        }
        "add" => vec![p("a", Type::Tensor, Required), p("b", Type::Tensor, Required)],
        "split" => vec![x(), p("parts", Type::Any, int(2))],
        "slice" => vec![x(), p("start", Type::Int, Required), p("end", Type::Int, Required)],
        "shuffle" => vec![x(), p("groups", Type::Int, Required)],
        "dropout" => vec![x(), p("p", Type::Float, Value(super::Value::Float(0.5)))],
        _ => vec![x()],
    }
}

/// Bound arguments by position in the signature.
struct Args {
    values: Vec<Option<(Value, Span)>>,
}

impl Args {
    fn get(&self, i: usize) -> Option<&(Value, Span)> {
        self.values[i].as_ref()
    }

    fn tensor(&self, i: usize) -> (NodeId, Span) {
        match self.get(i) {
            Some((Value::Tensor(t), s)) => (*t, *s),
            _ => unreachable!("tensor parameters are type-checked when bound"),
        }
    }

    fn int(&self, i: usize) -> (i64, Span) {
        match self.get(i) {
            Some((Value::Int(v), s)) => (*v, *s),
            _ => unreachable!("int parameters are type-checked when bound"),
        }
    }

    fn float(&self, i: usize) -> f64 {
        match self.get(i) {
            Some((Value::Float(v), _)) => *v,
            Some((Value::Int(v), _)) => *v as f64,
            _ => unreachable!("float parameters are type-checked when bound"),
        }
    }

    fn bool(&self, i: usize) -> bool {
        matches!(self.get(i), Some((Value::Bool(true), _)))
    }
}

/// An int or `[h, w]` of ints, each in `min..=MAX_SIZE`.
fn pair(v: &Value, span: Span, what: &str, min: i64) -> Result<Hw> {
    let one = |v: &Value| -> Result<usize> {
        match v {
            Value::Int(i) if *i < min && min == 1 => Err(errors::non_positive(span, what, *i)),
            Value::Int(i) if *i < min => Err(errors::invalid_value(span, what, "not negative", v)),
            Value::Int(i) if *i > super::MAX_SIZE => Err(errors::invalid_value(
                span,
                what,
                &format!("at most {}", super::MAX_SIZE),
                v,
            )),
            Value::Int(i) => Ok(*i as usize),
            other => Err(errors::wrong_type(span, what, "an int or [h, w]", other)),
        }
    };
    match v {
        Value::List(items) if items.len() == 2 => Ok(Hw(one(&items[0])?, one(&items[1])?)),
        Value::List(_) => Err(errors::invalid_value(span, what, "an int or a list [h, w]", v)),
        v => {
            let x = one(v)?;
            Ok(Hw(x, x))
        }
    }
}

/// TensorFlow `same` padding along one axis: output `ceil(input / stride)`, extra pixel after.
fn same(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let effective = dilation * (kernel - 1) + 1;
    let total = ((out - 1) * stride + effective).saturating_sub(input);
    (total / 2, total - total / 2)
}

fn padding(
    v: &Value,
    span: Span,
    what: &str,
    input: (usize, usize),
    kernel: Hw,
    stride: Hw,
    dilation: Hw,
) -> Result<Pad> {
    match v {
        Value::Str(s) if s == "same" => {
            let (top, bottom) = same(input.0, kernel.0, stride.0, dilation.0);
            let (left, right) = same(input.1, kernel.1, stride.1, dilation.1);
            Ok(Pad {
                top,
                bottom,
                left,
                right,
            })
        }
        Value::Str(s) if s == "valid" => Ok(Pad::default()),
        Value::List(items) if items.len() == 4 => {
            let mut sides = [0usize; 4];
            for (i, item) in items.iter().enumerate() {
                sides[i] = pair(item, span, what, 0)?.0;
            }
            Ok(Pad {
                top: sides[0],
                bottom: sides[1],
                left: sides[2],
                right: sides[3],
            })
        }
        Value::Int(_) | Value::List(_) => {
            let hw = pair(v, span, what, 0).map_err(|_| {
                errors::invalid_value(
                    span,
                    what,
                    "an int, [h, w], [top, bottom, left, right], same or valid",
                    v,
                )
            })?;
            Ok(Pad {
                top: hw.0,
                bottom: hw.0,
                left: hw.1,
                right: hw.1,
            })
        }
        other => Err(errors::invalid_value(
            span,
            what,
            "an int, [h, w], [top, bottom, left, right], same or valid",
            other,
        )),
    }
}

impl Elab<'_> {
    pub(super) fn call_layer(
        &mut self,
        layer: &'static str,
        args: Vec<(Option<Ident>, Value, Span)>,
        local: String,
        call: &Call,
    ) -> Result<Value> {
        if layer == "concat" {
            return self.concat(args, local, call);
        }
        let values = self.bind_args(layer, signature(layer), args, call)?;
        let a = Args { values };
        let span = call.span;
        let what = |name: &str| format!("`{name}` of `{layer}`");
        let spatial = |e: &Self, t: NodeId| -> Result<(usize, usize)> {
            let s = &e.graph.node(t).shape;
            if s.rank() == 4 {
                Ok((s.0[2], s.0[3]))
            } else {
                Err(errors::shape(
                    &crate::ir::shape::ShapeError::Rank {
                        input: 0,
                        expected: &[4],
                        found: s.clone(),
                    },
                    layer,
                    span,
                    &[(a.tensor(0).1, s.clone())],
                ))
            }
        };
        let op = match layer {
            "identity" => return Ok(Value::Tensor(a.tensor(0).0)),
            "conv" | "dwconv" => {
                let (x, _) = a.tensor(0);
                let hw = spatial(self, x)?;
                let channels = self.graph.node(x).shape.c();
                let (out, k) = if layer == "conv" {
                    let (out, s) = a.int(1);
                    (self.size(&Value::Int(out), s, &what("out"))?, 2)
                } else {
                    let (m, s) = a.int(5);
                    let m = self.size(&Value::Int(m), s, &what("multiplier"))?;
                    (channels * m, 1)
                };
                let (kv, ks) = a.get(k).unwrap();
                let kernel = pair(kv, *ks, &what("kernel"), 1)?;
                let (sv, ss) = a.get(k + 1).unwrap();
                let stride = pair(sv, *ss, &what("stride"), 1)?;
                let (dv, ds) = a.get(k + 3).unwrap();
                let dilation = pair(dv, *ds, &what("dilation"), 1)?;
                let (pv, ps) = a.get(k + 2).unwrap();
                let pad = padding(pv, *ps, &what("pad"), hw, kernel, stride, dilation)?;
                let (groups, bias) = if layer == "conv" {
                    let (g, gs) = a.int(6);
                    (self.size(&Value::Int(g), gs, &what("groups"))?, a.bool(7))
                } else {
                    (channels, a.bool(6))
                };
                Op::Conv(Conv {
                    out_channels: out,
                    kernel,
                    stride,
                    pad,
                    dilation,
                    groups,
                    bias,
                })
            }
            "batchnorm" => {
                let eps = a.float(1);
                if !(eps > 0.0 && eps.is_finite()) {
                    let (v, s) = a.get(1).unwrap();
                    return Err(errors::invalid_value(*s, &what("eps"), "a positive number", v));
                }
                Op::BatchNorm { eps: eps as f32 }
            }
            "relu" => Op::Act(Activation::Relu),
            "relu6" => Op::Act(Activation::Relu6),
            "leaky_relu" => Op::Act(Activation::LeakyRelu {
                slope: a.float(1) as f32,
            }),
            "maxpool" | "avgpool" => {
                let (x, _) = a.tensor(0);
                let hw = spatial(self, x)?;
                let (kv, ks) = a.get(1).unwrap();
                let kernel = pair(kv, *ks, &what("kernel"), 1)?;
                let stride = match a.get(2) {
                    Some((v, s)) => pair(v, *s, &what("stride"), 1)?,
                    None => kernel,
                };
                let (pv, ps) = a.get(3).unwrap();
                let pad = padding(pv, *ps, &what("pad"), hw, kernel, stride, Hw(1, 1))?;
                let kind = if layer == "maxpool" {
                    PoolKind::Max
                } else {
                    PoolKind::Avg
                };
                let count_include_pad = layer == "avgpool" && a.bool(5);
                Op::Pool(Pool {
                    kind,
                    kernel,
                    stride,
                    pad,
                    ceil: a.bool(4),
                    count_include_pad,
                })
            }
            "global_avgpool" => Op::GlobalPool(PoolKind::Avg),
            "global_maxpool" => Op::GlobalPool(PoolKind::Max),
            "dense" => {
                let (out, s) = a.int(1);
                Op::Dense {
                    out_features: self.size(&Value::Int(out), s, &what("out"))?,
                    bias: a.bool(2),
                }
            }
            "flatten" => Op::Flatten,
            "softmax" => Op::Softmax,
            "dropout" => {
                let p = a.float(1);
                if !(0.0..1.0).contains(&p) {
                    let (v, s) = a.get(1).unwrap();
                    return Err(errors::invalid_value(*s, &what("p"), "in [0, 1)", v));
                }
                Op::Dropout { p: p as f32 }
            }
            "shuffle" => {
                let (g, s) = a.int(1);
                Op::Shuffle {
                    groups: self.size(&Value::Int(g), s, &what("groups"))?,
                }
            }
            "slice" => {
                let (start, ss) = a.int(1);
                let (end, es) = a.int(2);
                if start < 0 {
                    return Err(errors::invalid_value(
                        ss,
                        &what("start"),
                        "not negative",
                        &Value::Int(start),
                    ));
                }
                let end = self.size(&Value::Int(end), es, &what("end"))?;
                Op::Slice {
                    start: start as usize,
                    end,
                }
            }
            "add" => {
                let (x, xs) = a.tensor(0);
                let (y, ys) = a.tensor(1);
                return Ok(Value::Tensor(self.add_node(
                    Op::Add,
                    &[(x, xs), (y, ys)],
                    local,
                    span,
                    layer,
                )?));
            }
            "split" => return self.split(&a, local, call),
            _ => unreachable!("every layer name has a case: {layer}"),
        };
        let input = a.tensor(0);
        Ok(Value::Tensor(self.add_node(op, &[input], local, span, layer)?))
    }

    /// `concat(a, b, ...)` or `concat(list)`: joins tensors along channels.
    fn concat(&mut self, args: Vec<(Option<Ident>, Value, Span)>, local: String, call: &Call) -> Result<Value> {
        let mut inputs = Vec::new();
        for (name, value, span) in args {
            if let Some(id) = name {
                return Err(errors::unknown_argument(id.span, "concat", &id.name, &["tensors..."]));
            }
            match value {
                Value::Tensor(t) => inputs.push((t, span)),
                Value::List(items) => {
                    for item in items {
                        match item {
                            Value::Tensor(t) => inputs.push((t, span)),
                            other => return Err(errors::wrong_type(span, "an input of `concat`", "a tensor", &other)),
                        }
                    }
                }
                other => return Err(errors::wrong_type(span, "an input of `concat`", "a tensor", &other)),
            }
        }
        if inputs.is_empty() {
            return Err(errors::missing_argument(
                call.args_span.unwrap_or(call.span),
                "concat",
                "tensors",
                &["tensors..."],
            ));
        }
        Ok(Value::Tensor(self.add_node(
            Op::Concat,
            &inputs,
            local,
            call.span,
            "concat",
        )?))
    }

    /// `split(x, parts)`: `parts` equal channel groups, or groups of the listed sizes.
    fn split(&mut self, a: &Args, local: String, call: &Call) -> Result<Value> {
        let (x, xs) = a.tensor(0);
        let shape = self.graph.node(x).shape.clone();
        let channels = shape.c();
        let (pv, ps) = a.get(1).unwrap().clone();
        let sizes: Vec<usize> = match &pv {
            Value::Int(_) => {
                let n = self.size(&pv, ps, "`parts` of `split`")?;
                if !channels.is_multiple_of(n) {
                    return Err(errors::shape(
                        &crate::ir::shape::ShapeError::GroupsInput { channels, groups: n },
                        "split",
                        call.span,
                        &[(xs, shape)],
                    ));
                }
                if n as u64 > super::MAX_NODES {
                    return Err(errors::limit(ps, "the number of nodes", super::MAX_NODES));
                }
                vec![channels / n; n]
            }
            Value::List(items) => items
                .iter()
                .map(|v| self.size(v, ps, "a size in `parts` of `split`"))
                .collect::<Result<_>>()?,
            other => {
                return Err(errors::wrong_type(
                    ps,
                    "`parts` of `split`",
                    "an int or a list of sizes",
                    other,
                ))
            }
        };
        let total: usize = sizes.iter().sum();
        if total != channels {
            return Err(errors::invalid_value(
                ps,
                "`parts` of `split`",
                &format!("sizes that add up to the {channels} input channels"),
                &pv,
            ));
        }
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let op = Op::Slice {
                start,
                end: start + size,
            };
            parts.push(Value::Tensor(self.add_node(
                op,
                &[(x, xs)],
                format!("{local}.{i}"),
                call.span,
                "split",
            )?));
            start += size;
        }
        Ok(Value::List(parts))
    }
}
