//! Elaboration: the AST of a program to the graph IR.
//!
//! Elaboration evaluates the network's body with the hyperparameters bound: expressions are
//! computed, loops unrolled, conditionals decided, and every block call is expanded inline under a
//! name scope, so each node gets a stable hierarchical name (`stage2.unit3.conv`). Layers become
//! nodes as they are called; their shape rule (`ir::shape`) runs at once, so a shape error points
//! at the call that caused it, and an error inside a block lists every instantiation that led
//! there (the labels are added as the error leaves each block call).
//!
//! Scoping is per block call, as in Python: `let` declares a name in the current block, `=`
//! rebinds it, and loops and `if` share the block's names. Hyperparameters and constants are
//! visible everywhere.

mod builtins;
pub mod errors;
mod layers;
mod value;

pub use value::{Callable, Type, Value};

use crate::diag::Diagnostic;
use crate::ir::op::Op;
use crate::ir::shape::Shape;
use crate::ir::{Graph, HyperValue, Node, NodeId};
use crate::source::Span;
use crate::syntax::ast::*;
use std::collections::{HashMap, HashSet};

pub type Result<T> = std::result::Result<T, Diagnostic>;

/// Most nodes a network may have.
pub const MAX_NODES: u64 = 200_000;
/// Most evaluation steps one elaboration may take: statements, calls and expressions, plus one
/// per list element or 64 bytes of text in every value an expression yields (values are copied
/// when they are used, so this bounds the copying too).
pub const MAX_STEPS: u64 = 5_000_000;
/// Largest value a size attribute (channels, kernel, stride, padding, input size) may have.
pub const MAX_SIZE: i64 = 1 << 24;
/// Deepest nesting of expression evaluation, counted through block and function calls, so that
/// elaboration cannot exhaust the stack.
pub const MAX_EVAL_DEPTH: usize = 768;
/// Deepest nesting of block and function calls.
pub const MAX_CALL_DEPTH: usize = 64;
/// Levels of [`MAX_EVAL_DEPTH`] one nested `if` or `for` body counts as.
const BODY_DEPTH: usize = 2;
/// Deepest nesting of lists in a value.
pub const MAX_LIST_DEPTH: usize = 64;
/// Longest node name (or `as` label), in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// Options that are not part of the source.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--set name=value` overrides, in order.
    pub overrides: Vec<(String, String)>,
    /// Batch size of the input.
    pub batch: usize,
}

impl std::default::Default for Options {
    fn default() -> Options {
        Options {
            overrides: Vec::new(),
            batch: 1,
        }
    }
}

/// All definitions of a program (the network file and the files it includes).
struct Defs<'a> {
    net: &'a NetDef,
    blocks: HashMap<&'a str, &'a BlockDef>,
    fns: HashMap<&'a str, &'a FnDef>,
    consts: Vec<(&'a Ident, &'a Expr)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Net,
    Block,
    Fn,
}

/// One block (or network, or function) being expanded.
struct Frame {
    kind: FrameKind,
    name: String,
    /// Name prefix of the nodes it creates ("" for the network).
    prefix: String,
    locals: HashMap<String, Value>,
    taken: HashSet<String>,
    counters: HashMap<String, usize>,
}

impl Frame {
    fn new(kind: FrameKind, name: &str, prefix: String) -> Frame {
        Frame {
            kind,
            name: name.to_string(),
            prefix,
            locals: HashMap::new(),
            taken: HashSet::new(),
            counters: HashMap::new(),
        }
    }
}

struct Elab<'a> {
    defs: Defs<'a>,
    globals: HashMap<String, Value>,
    graph: Graph,
    frames: Vec<Frame>,
    /// Where each tensor was made, for error labels.
    origins: HashMap<NodeId, Span>,
    input_span: Option<Span>,
    steps: u64,
    /// Nesting of expressions and statement bodies being evaluated, in [`MAX_EVAL_DEPTH`] levels.
    depth: usize,
    batch: usize,
}

/// Whether `word` names a layer, a builtin function or a builtin constant of the language.
pub fn is_builtin(word: &str) -> bool {
    layers::lookup(word).is_some() || builtins::lookup(word).is_some() || builtins::CONSTANTS.contains(&word)
}

/// Elaborates a program: `files` are the parsed network file first, then its includes.
pub fn elaborate(files: &[File], main_span: Span, options: &Options) -> Result<Graph> {
    let defs = collect(files, main_span)?;
    let mut e = Elab {
        graph: Graph::new(defs.net.name.name.clone()),
        defs,
        globals: HashMap::new(),
        frames: Vec::new(),
        origins: HashMap::new(),
        input_span: None,
        steps: 0,
        depth: 0,
        batch: options.batch.max(1),
    };
    e.bind_hyperparameters(&options.overrides)?;
    e.eval_consts()?;
    let net = e.defs.net;
    e.frames.push(Frame::new(FrameKind::Net, &net.name.name, String::new()));
    let result = e.exec(&net.body)?;
    if e.input_span.is_none() {
        return Err(errors::no_input(net.name.span));
    }
    let Some((value, span)) = result else {
        return Err(errors::no_return(
            net.name.span,
            &format!("network `{}`", net.name.name),
        ));
    };
    e.graph.outputs = match &value {
        Value::Tensor(t) => vec![*t],
        Value::List(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::Tensor(t) => Ok(*t),
                other => Err(errors::output_not_tensor(span, other)),
            })
            .collect::<Result<_>>()?,
        other => return Err(errors::output_not_tensor(span, other)),
    };
    Ok(e.graph)
}

fn collect(files: &[File], main_span: Span) -> Result<Defs<'_>> {
    let mut net: Option<&NetDef> = None;
    let mut blocks: HashMap<&str, &BlockDef> = HashMap::new();
    let mut fns: HashMap<&str, &FnDef> = HashMap::new();
    let mut consts: Vec<(&Ident, &Expr)> = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        for item in &file.items {
            let (name, what) = match item {
                Item::Include { .. } => continue,
                Item::Net(n) => {
                    if i > 0 {
                        // Networks in included files are ignored: includes bring libraries.
                        continue;
                    }
                    if let Some(prev) = net {
                        return Err(errors::two_nets(n.name.span, prev.name.span));
                    }
                    net = Some(n);
                    continue;
                }
                Item::Block(b) => (&b.name, "block"),
                Item::Fn(f) => (&f.name, "function"),
                Item::Const { name, .. } => (name, "constant"),
            };
            if let Some(prev) = seen.get(name.name.as_str()) {
                return Err(errors::duplicate_definition(name.span, what, &name.name, *prev));
            }
            seen.insert(&name.name, name.span);
            match item {
                Item::Block(b) => {
                    blocks.insert(&b.name.name, b);
                }
                Item::Fn(f) => {
                    fns.insert(&f.name.name, f);
                }
                Item::Const { name, value } => consts.push((name, value)),
                _ => {}
            }
        }
    }
    let net = net.ok_or_else(|| errors::no_net(main_span))?;
    Ok(Defs {
        net,
        blocks,
        fns,
        consts,
    })
}

/// What copying a value costs, in steps (one per list element, nested ones included, and one per
/// 64 bytes of text), and how deeply its lists nest. Values are checked against
/// [`MAX_LIST_DEPTH`] as they are made, so the recursion is bounded.
fn value_cost(v: &Value) -> (u64, usize) {
    match v {
        Value::List(items) => items.iter().fold((items.len() as u64, 1), |(cost, depth), item| {
            let (c, d) = value_cost(item);
            (cost + c, depth.max(d + 1))
        }),
        Value::Str(s) => (s.len() as u64 / 64, 0),
        _ => (0, 0),
    }
}

fn join(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_string()
    } else {
        format!("{prefix}.{local}")
    }
}

impl<'a> Elab<'a> {
    fn frame(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("elaboration always runs inside a frame")
    }

    fn step(&mut self, span: Span) -> Result<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(errors::limit(span, "elaboration step count", MAX_STEPS));
        }
        Ok(())
    }

    // ---- hyperparameters and constants ----

    fn declared_type(&mut self, p: &Param) -> Result<Option<Type>> {
        match &p.ty {
            None => Ok(None),
            Some(t) => Type::parse(&t.name)
                .map(Some)
                .ok_or_else(|| errors::unknown_type(t.span, &t.name)),
        }
    }

    fn bind_hyperparameters(&mut self, overrides: &[(String, String)]) -> Result<()> {
        let net = self.defs.net;
        self.frames
            .push(Frame::new(FrameKind::Net, &net.name.name, String::new()));
        let mut known: Vec<(String, String)> = Vec::new();
        let mut decls: Vec<(&Param, Type, Option<Value>)> = Vec::new();
        for p in &net.params {
            let declared = self.declared_type(p)?;
            let default = match &p.default {
                Some(e) => Some(self.eval(e)?),
                None => None,
            };
            let ty = match (declared, &default) {
                (Some(t), _) => t,
                (None, Some(Value::Int(_))) => Type::Int,
                (None, Some(Value::Float(_))) => Type::Float,
                (None, Some(Value::Bool(_))) => Type::Bool,
                (None, _) => Type::Any,
            };
            if !matches!(ty, Type::Int | Type::Float | Type::Bool) {
                let found = default.clone().unwrap_or(Value::Str(String::new()));
                return Err(errors::wrong_type(
                    p.span,
                    &format!("hyperparameter `{}`", p.name.name),
                    "an int, float or bool",
                    &found,
                ));
            }
            let default = match default {
                Some(v) => {
                    let span = p.default.as_ref().map_or(p.span, |e| e.span);
                    Some(v.clone().coerce(ty).ok_or_else(|| {
                        errors::wrong_type(span, &format!("the default of `{}`", p.name.name), ty.name(), &v)
                    })?)
                }
                None => None,
            };
            let shown = match &default {
                Some(v) => format!("{}, default {v}", ty.name()),
                None => ty.name().to_string(),
            };
            known.push((p.name.name.clone(), shown));
            decls.push((p, ty, default));
        }
        let mut values: Vec<Option<Value>> = decls.iter().map(|d| d.2.clone()).collect();
        for (name, text) in overrides {
            let Some(i) = decls.iter().position(|d| d.0.name.name == *name) else {
                return Err(errors::unknown_hyperparameter(name, net.name.span, &known));
            };
            let (p, ty, _) = &decls[i];
            let parsed = match ty {
                Type::Int => text.trim().parse::<i64>().ok().map(Value::Int),
                Type::Float => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Value::Float),
                Type::Bool => match text.trim() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                _ => None,
            };
            let expected = match ty {
                Type::Int => "an int",
                Type::Float => "a float",
                _ => "true or false",
            };
            values[i] = Some(parsed.ok_or_else(|| errors::bad_hyper_value(name, text, expected, p.name.span, &known))?);
        }
        self.frames.pop();
        for ((p, _, _), v) in decls.iter().zip(values) {
            let v = v.ok_or_else(|| errors::missing_hyperparameter(p.span, &p.name.name))?;
            self.graph.hyper.push((
                p.name.name.clone(),
                match &v {
                    Value::Int(i) => HyperValue::Int(*i),
                    Value::Float(f) => HyperValue::Float(*f),
                    Value::Bool(b) => HyperValue::Bool(*b),
                    _ => unreachable!("hyperparameters are scalars"),
                },
            ));
            self.globals.insert(p.name.name.clone(), v);
        }
        Ok(())
    }

    fn eval_consts(&mut self) -> Result<()> {
        self.frames.push(Frame::new(FrameKind::Fn, "const", String::new()));
        for (name, expr) in self.defs.consts.clone() {
            let v = self.eval(expr)?;
            if let Value::Tensor(_) = v {
                return Err(errors::wrong_type(expr.span, "a constant", "a scalar or list", &v));
            }
            self.globals.insert(name.name.clone(), v);
        }
        self.frames.pop();
        Ok(())
    }

    // ---- statements ----

    /// Runs statements; returns the value of a `return`, if one ran.
    fn exec(&mut self, stmts: &[Stmt]) -> Result<Option<(Value, Span)>> {
        for s in stmts {
            if let Some(r) = self.exec_one(s)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Runs the body of an `if` or `for`. Nested bodies count towards [`MAX_EVAL_DEPTH`], each
    /// as [`BODY_DEPTH`] levels since running a statement takes more stack than an expression.
    fn exec_nested(&mut self, stmts: &[Stmt], span: Span) -> Result<Option<(Value, Span)>> {
        if self.depth + BODY_DEPTH > MAX_EVAL_DEPTH {
            return Err(errors::limit(
                span,
                "the nesting depth of evaluation",
                MAX_EVAL_DEPTH as u64,
            ));
        }
        self.depth += BODY_DEPTH;
        let result = self.exec(stmts);
        self.depth -= BODY_DEPTH;
        result
    }

    fn exec_one(&mut self, stmt: &Stmt) -> Result<Option<(Value, Span)>> {
        match stmt {
            Stmt::Input { name, dims, span } => {
                self.step(*span)?;
                self.input(name, dims, *span)?;
            }
            Stmt::Let { pattern, value, span } => {
                self.step(*span)?;
                let v = self.eval(value)?;
                self.bind(pattern, v, true, Some(value.span))?;
            }
            Stmt::Assign { pattern, value, span } => {
                self.step(*span)?;
                let v = self.eval(value)?;
                self.bind(pattern, v, false, Some(value.span))?;
            }
            Stmt::For {
                pattern,
                iter,
                body,
                span,
            } => {
                let items = match self.eval(iter)? {
                    Value::List(items) => items,
                    other => return Err(errors::wrong_type(iter.span, "the value looped over", "a list", &other)),
                };
                for item in items {
                    self.step(*span)?;
                    self.bind(pattern, item, true, None)?;
                    if let Some(r) = self.exec_nested(body, *span)? {
                        return Ok(Some(r));
                    }
                }
            }
            Stmt::If {
                cond,
                then,
                otherwise,
                span,
            } => {
                self.step(*span)?;
                let branch = if self.eval_bool(cond, "the condition of `if`")? {
                    then
                } else {
                    otherwise
                };
                return self.exec_nested(branch, *span);
            }
            Stmt::Assert { cond, message, span } => {
                self.step(*span)?;
                if !self.eval_bool(cond, "the condition of `assert`")? {
                    let text = match message {
                        None => None,
                        Some(m) => match self.eval(m)? {
                            Value::Str(t) => Some(t),
                            other => {
                                return Err(errors::wrong_type(m.span, "the message of `assert`", "a str", &other))
                            }
                        },
                    };
                    let hyper: Vec<String> = self.graph.hyper.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    return Err(errors::assertion_failed(cond.span, text.as_deref(), &hyper));
                }
            }
            Stmt::Return { value, span } => {
                self.step(*span)?;
                let v = self.eval(value)?;
                return Ok(Some((v, value.span)));
            }
        }
        Ok(None)
    }

    fn bind(&mut self, pattern: &Pattern, value: Value, declare: bool, value_span: Option<Span>) -> Result<()> {
        match pattern {
            Pattern::Name(id) => self.bind_name(id, value, declare),
            Pattern::Tuple(ids, span) => match value {
                Value::List(items) if items.len() == ids.len() => {
                    for (id, v) in ids.iter().zip(items) {
                        self.bind_name(id, v, declare)?;
                    }
                    Ok(())
                }
                other => Err(errors::pattern_mismatch(*span, ids.len(), &other, value_span)),
            },
        }
    }

    fn bind_name(&mut self, id: &Ident, value: Value, declare: bool) -> Result<()> {
        let frame = self.frame();
        if !declare && !frame.locals.contains_key(&id.name) {
            return Err(errors::undeclared_assignment(id.span, &id.name));
        }
        frame.locals.insert(id.name.clone(), value);
        Ok(())
    }

    fn input(&mut self, name: &Ident, dims: &[Expr; 3], span: Span) -> Result<()> {
        if self.frames.len() != 1 || self.frames[0].kind != FrameKind::Net {
            return Err(errors::input_outside_net(span));
        }
        if let Some(prev) = self.input_span {
            return Err(errors::second_input(span, prev));
        }
        let mut shape = vec![self.batch];
        for (d, what) in dims.iter().zip(["input channels", "input height", "input width"]) {
            let v = self.eval(d)?;
            shape.push(self.size(&v, d.span, what)?);
        }
        let shape = Shape(shape);
        crate::ir::shape::check_size(&shape).map_err(|e| errors::shape(&e, "input", span, &[]))?;
        self.input_span = Some(span);
        self.frame().taken.insert(name.name.clone());
        let ix = self
            .graph
            .add(Node::new(name.name.clone(), Op::Input, shape, span), &[]);
        self.graph.inputs.push(ix);
        self.origins.insert(ix, name.span);
        self.frame().locals.insert(name.name.clone(), Value::Tensor(ix));
        Ok(())
    }

    // ---- expressions ----

    fn eval_bool(&mut self, e: &Expr, what: &str) -> Result<bool> {
        match self.eval(e)? {
            Value::Bool(b) => Ok(b),
            other => Err(errors::wrong_type(e.span, what, "a bool", &other)),
        }
    }

    fn lookup(&self, id: &Ident) -> Option<Value> {
        if let Some(v) = self.frames.last().and_then(|f| f.locals.get(&id.name)) {
            return Some(v.clone());
        }
        if let Some(v) = self.globals.get(&id.name) {
            return Some(v.clone());
        }
        self.global_callable(&id.name)
            .map(Value::Callable)
            .or_else(|| builtins::constant(&id.name))
    }

    fn global_callable(&self, name: &str) -> Option<Callable> {
        if self.defs.blocks.contains_key(name) {
            Some(Callable::Block(name.to_string()))
        } else if self.defs.fns.contains_key(name) {
            Some(Callable::Fn(name.to_string()))
        } else if let Some(l) = layers::lookup(name) {
            Some(Callable::Layer(l))
        } else {
            builtins::lookup(name).map(Callable::Builtin)
        }
    }

    /// Every name visible here, for "did you mean" hints.
    fn visible_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .frames
            .last()
            .map(|f| f.locals.keys().cloned().collect())
            .unwrap_or_default();
        names.extend(self.globals.keys().cloned());
        names.extend(self.callable_names());
        names.extend(builtins::CONSTANTS.iter().map(|s| s.to_string()));
        names
    }

    fn callable_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.defs.blocks.keys().map(|s| s.to_string()).collect();
        names.extend(self.defs.fns.keys().map(|s| s.to_string()));
        names.extend(layers::NAMES.iter().map(|s| s.to_string()));
        names.extend(builtins::NAMES.iter().map(|s| s.to_string()));
        names
    }

    /// Evaluates an expression. The nesting is counted, so that deep recursion through
    /// expressions and calls ends in a diagnostic, and the value is charged to the step count.
    fn eval(&mut self, e: &Expr) -> Result<Value> {
        if self.depth >= MAX_EVAL_DEPTH {
            return Err(errors::limit(
                e.span,
                "the nesting depth of evaluation",
                MAX_EVAL_DEPTH as u64,
            ));
        }
        self.step(e.span)?;
        self.depth += 1;
        let v = self.eval_unguarded(e);
        self.depth -= 1;
        let v = v?;
        let (cost, depth) = value_cost(&v);
        if depth > MAX_LIST_DEPTH {
            return Err(errors::limit(
                e.span,
                "the nesting depth of lists",
                MAX_LIST_DEPTH as u64,
            ));
        }
        self.steps += cost;
        if self.steps > MAX_STEPS {
            return Err(errors::limit(e.span, "elaboration step count", MAX_STEPS));
        }
        Ok(v)
    }

    fn eval_unguarded(&mut self, e: &Expr) -> Result<Value> {
        Ok(match &e.kind {
            ExprKind::Int(v) => Value::Int(*v),
            ExprKind::Float(v) => Value::Float(*v),
            ExprKind::Bool(v) => Value::Bool(*v),
            ExprKind::Str(v) => Value::Str(v.clone()),
            ExprKind::Name(id) => match self.lookup(id) {
                Some(v) => v,
                None => {
                    let names = self.visible_names();
                    return Err(errors::unknown_name(
                        id.span,
                        &id.name,
                        &errors::similar(&id.name, names.iter().map(|s| s.as_str())),
                    ));
                }
            },
            ExprKind::Tuple(items) | ExprKind::List(items) => {
                Value::List(items.iter().map(|i| self.eval(i)).collect::<Result<_>>()?)
            }
            ExprKind::Call(call) => self.call(call, None)?,
            ExprKind::Pipe(head, stages) => {
                let mut v = self.eval(head)?;
                let mut span = head.span;
                for stage in stages {
                    v = self.call(stage, Some((v, span)))?;
                    span = span.to(stage.span);
                }
                v
            }
            ExprKind::Field(base, field) => {
                let v = self.eval(base)?;
                self.field(&v, field)?
            }
            ExprKind::Index(base, index) => {
                let v = self.eval(base)?;
                let i = self.eval(index)?;
                match (&v, &i) {
                    (Value::List(items), Value::Int(k)) => {
                        if *k < 0 || *k as usize >= items.len() {
                            return Err(errors::index_out_of_range(index.span, *k, items.len()));
                        }
                        items[*k as usize].clone()
                    }
                    (Value::List(_), other) => return Err(errors::wrong_type(index.span, "an index", "an int", other)),
                    (other, _) => return Err(errors::wrong_type(base.span, "an indexed value", "a list", other)),
                }
            }
            ExprKind::Unary(op, inner) => {
                let v = self.eval(inner)?;
                match (op, v) {
                    (UnOp::Neg, Value::Int(i)) => Value::Int(
                        i.checked_neg()
                            .ok_or_else(|| errors::arithmetic(e.span, "integer overflow"))?,
                    ),
                    (UnOp::Neg, Value::Float(f)) => Value::Float(-f),
                    (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
                    (op, v) => {
                        return Err(errors::bad_operand(
                            e.span,
                            if *op == UnOp::Neg { "-" } else { "not" },
                            &v,
                        ))
                    }
                }
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r, e.span)?,
            ExprKind::Cond { cond, then, otherwise } => {
                if self.eval_bool(cond, "the condition of `if`")? {
                    self.eval(then)?
                } else {
                    self.eval(otherwise)?
                }
            }
        })
    }

    fn field(&mut self, v: &Value, field: &Ident) -> Result<Value> {
        let Value::Tensor(t) = v else {
            return Err(errors::unknown_field(field.span, &field.name, v, None));
        };
        let shape = &self.graph.node(*t).shape;
        let axis = match (field.name.as_str(), shape.rank()) {
            ("n", _) => 0,
            ("c", _) => 1,
            ("h", 4) => 2,
            ("w", 4) => 3,
            _ => return Err(errors::unknown_field(field.span, &field.name, v, Some(shape.rank()))),
        };
        Ok(Value::Int(shape.0[axis] as i64))
    }

    fn binary(&mut self, op: BinOp, l: &Expr, r: &Expr, span: Span) -> Result<Value> {
        if matches!(op, BinOp::And | BinOp::Or) {
            let left = self.eval_bool(l, &format!("the left side of `{}`", op.symbol()))?;
            if (op == BinOp::And && !left) || (op == BinOp::Or && left) {
                return Ok(Value::Bool(left));
            }
            return Ok(Value::Bool(
                self.eval_bool(r, &format!("the right side of `{}`", op.symbol()))?,
            ));
        }
        let a = self.eval(l)?;
        let b = self.eval(r)?;
        if let (BinOp::Add, Value::Tensor(x), Value::Tensor(y)) = (op, &a, &b) {
            let (x, y) = (*x, *y);
            let name = self.auto_name("add");
            let t = self.add_node(Op::Add, &[(x, l.span), (y, r.span)], name, span, "add")?;
            return Ok(Value::Tensor(t));
        }
        let zero = matches!(b, Value::Int(0)) || matches!(b, Value::Float(f) if f == 0.0);
        if zero
            && matches!(op, BinOp::Div | BinOp::FloorDiv | BinOp::Rem)
            && matches!(a, Value::Int(_) | Value::Float(_))
        {
            return Err(errors::division_by_zero(span, r.span, op.symbol(), &a, &b));
        }
        builtins::binary(op, &a, &b, span)
    }

    // ---- calls ----

    fn call(&mut self, call: &Call, piped: Option<(Value, Span)>) -> Result<Value> {
        self.step(call.span)?;
        let callee = match self
            .frames
            .last()
            .and_then(|f| f.locals.get(&call.callee.name))
            .cloned()
        {
            Some(Value::Callable(c)) => c,
            Some(other) => return Err(errors::not_callable(call.callee.span, &call.callee.name, &other)),
            None => match self.global_callable(&call.callee.name) {
                Some(c) => c,
                None => {
                    if let Some(value) = self.globals.get(&call.callee.name) {
                        return Err(errors::not_callable(call.callee.span, &call.callee.name, value));
                    }
                    let names = self.callable_names();
                    let similar = errors::similar(&call.callee.name, names.iter().map(|s| s.as_str()));
                    return Err(errors::unknown_callee(call.callee.span, &call.callee.name, &similar));
                }
            },
        };
        let mut args: Vec<(Option<Ident>, Value, Span)> = Vec::new();
        if let Some((v, span)) = piped {
            args.push((None, v, span));
        }
        for a in &call.args {
            let v = self.eval(&a.value)?;
            args.push((a.name.clone(), v, a.value.span));
        }
        let label = match &call.label {
            Some(l) => Some((self.label(l)?, l.span)),
            None => None,
        };
        let creates_nodes = matches!(callee, Callable::Layer(_) | Callable::Block(_));
        if creates_nodes && self.frames.last().is_some_and(|f| f.kind == FrameKind::Fn) {
            let name = self.frames.last().map(|f| f.name.clone()).unwrap_or_default();
            return Err(errors::tensor_in_fn(call.span, &name));
        }
        let local = match (&label, creates_nodes) {
            (Some((name, span)), _) => {
                if !self.frame().taken.insert(name.clone()) {
                    return Err(errors::duplicate_node_name(*span, name));
                }
                name.clone()
            }
            (None, true) => self.auto_name(callee.name()),
            (None, false) => String::new(),
        };
        match callee {
            Callable::Layer(layer) => self.call_layer(layer, args, local, call),
            Callable::Block(name) => self.call_block(&name, args, local, call),
            Callable::Fn(name) => self.call_fn(&name, args, call),
            Callable::Builtin(name) => {
                let bound = self.bind_args(name, builtins::params(name), args, call)?;
                builtins::call(name, bound, call.span)
            }
        }
    }

    fn label(&mut self, label: &Label) -> Result<String> {
        let mut segments = Vec::new();
        for seg in &label.segments {
            let mut s = String::new();
            for part in seg {
                match part {
                    LabelPart::Text(t) => s.push_str(t),
                    LabelPart::Expr(e) => match self.eval(e)? {
                        Value::Int(i) => s.push_str(&i.to_string()),
                        Value::Str(t) if !t.is_empty() && t.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                            s.push_str(&t)
                        }
                        other => return Err(errors::bad_label(e.span, &other)),
                    },
                }
                // Checked as the name grows, so that a long one is never built.
                if s.len() > MAX_NAME_BYTES {
                    return Err(errors::limit(
                        label.span,
                        "the length of a node name",
                        MAX_NAME_BYTES as u64,
                    ));
                }
            }
            segments.push(s);
        }
        let name = segments.join(".");
        if name.len() > MAX_NAME_BYTES {
            return Err(errors::limit(
                label.span,
                "the length of a node name",
                MAX_NAME_BYTES as u64,
            ));
        }
        Ok(name)
    }

    /// A fresh name for a node or block scope in the current frame: `base`, then `base_2`, ...
    fn auto_name(&mut self, base: &str) -> String {
        let frame = self.frame();
        let mut n = *frame.counters.get(base).unwrap_or(&0);
        loop {
            n += 1;
            let candidate = if n == 1 {
                base.to_string()
            } else {
                format!("{base}_{n}")
            };
            if frame.taken.insert(candidate.clone()) {
                frame.counters.insert(base.to_string(), n);
                return candidate;
            }
        }
    }

    /// Binds call arguments to a signature: positional in order, then named; applies defaults.
    /// Returns one entry per parameter (`None` where an optional parameter was not given).
    fn bind_args(
        &mut self,
        callee: &str,
        params: Vec<Signature>,
        args: Vec<(Option<Ident>, Value, Span)>,
        call: &Call,
    ) -> Result<Vec<Option<(Value, Span)>>> {
        let owned: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        let names: Vec<&str> = owned.iter().map(String::as_str).collect();
        let shown: Vec<String> = params
            .iter()
            .map(|p| match &p.default {
                Default::Required => p.name.clone(),
                Default::Value(v) => format!("{} = {v}", p.name),
                Default::Absent => format!("{} (optional)", p.name),
            })
            .collect();
        let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
        let total_positional = args.iter().filter(|a| a.0.is_none()).count();
        // The piped tensor is the one argument that is not written in the call's parentheses.
        let piped = args.len() > call.args.len();
        let extra_span = args
            .iter()
            .filter(|a| a.0.is_none())
            .skip(params.len())
            .map(|a| a.2)
            .reduce(|a, b| a.to(b));
        let mut bound: Vec<Option<(Value, Span)>> = vec![None; params.len()];
        let mut positional = 0;
        for (name, value, span) in args {
            let i = match name {
                None => {
                    if positional >= params.len() {
                        let span = extra_span.unwrap_or(span);
                        return Err(errors::too_many_arguments(
                            span,
                            callee,
                            params.len(),
                            total_positional,
                            &shown,
                            piped,
                        ));
                    }
                    positional += 1;
                    positional - 1
                }
                Some(id) => {
                    let Some(i) = names.iter().position(|n| *n == id.name) else {
                        return Err(errors::unknown_argument(id.span, callee, &id.name, &shown));
                    };
                    if let Some((_, first)) = &bound[i] {
                        return Err(errors::duplicate_argument(id.span, callee, &id.name, Some(*first)));
                    }
                    i
                }
            };
            let p = &params[i];
            let checked = value.clone().coerce(p.ty).ok_or_else(|| {
                errors::wrong_type(
                    span,
                    &format!("argument `{}` of `{callee}`", p.name),
                    p.ty.name(),
                    &value,
                )
            })?;
            bound[i] = Some((checked, span));
        }
        for (i, p) in params.into_iter().enumerate() {
            if bound[i].is_none() {
                match p.default {
                    Default::Required => {
                        let span = call.args_span.unwrap_or(call.span);
                        return Err(errors::missing_argument(span, callee, &p.name, &shown));
                    }
                    Default::Value(v) => bound[i] = Some((v, call.span)),
                    Default::Absent => {}
                }
            }
        }
        Ok(bound)
    }

    fn call_block(
        &mut self,
        name: &str,
        args: Vec<(Option<Ident>, Value, Span)>,
        local: String,
        call: &Call,
    ) -> Result<Value> {
        let def = self.defs.blocks[name];
        if let Some(cycle) = self.cycle(FrameKind::Block, name) {
            return Err(errors::recursion(call.callee.span, name, false, &cycle));
        }
        self.check_call_depth(call)?;
        let prefix = join(&self.frame().prefix.clone(), &local);
        let shown = prefix.clone();
        let locals = self.bind_user(name, &def.params, args, call)?;
        let mut frame = Frame::new(FrameKind::Block, name, prefix);
        frame.locals = locals;
        self.frames.push(frame);
        let result = self.exec(&def.body);
        self.frames.pop();
        let context =
            |d: Diagnostic| d.with_secondary(call.span, format!("in block `{name}`, instantiated here as `{shown}`"));
        match result.map_err(context)? {
            Some((v, _)) => Ok(v),
            None => Err(context(errors::no_return(def.name.span, &format!("block `{name}`")))),
        }
    }

    fn call_fn(&mut self, name: &str, args: Vec<(Option<Ident>, Value, Span)>, call: &Call) -> Result<Value> {
        let def = self.defs.fns[name];
        if let Some(cycle) = self.cycle(FrameKind::Fn, name) {
            return Err(errors::recursion(call.callee.span, name, true, &cycle));
        }
        self.check_call_depth(call)?;
        let locals = self.bind_user(name, &def.params, args, call)?;
        let mut frame = Frame::new(FrameKind::Fn, name, String::new());
        frame.locals = locals;
        self.frames.push(frame);
        let result = self.eval(&def.body);
        self.frames.pop();
        result.map_err(|d| d.with_secondary(call.span, format!("in function `{name}`, called here")))
    }

    /// Rejects a block or function call nested more than [`MAX_CALL_DEPTH`] calls deep.
    fn check_call_depth(&self, call: &Call) -> Result<()> {
        let calls = self.frames.iter().filter(|f| f.kind != FrameKind::Net).count();
        if calls >= MAX_CALL_DEPTH {
            let what = "the nesting depth of block and function calls";
            return Err(errors::limit(call.callee.span, what, MAX_CALL_DEPTH as u64));
        }
        Ok(())
    }

    /// If a block (or function) `name` is being expanded already: the blocks (or functions) from
    /// that expansion to the current one.
    fn cycle(&self, kind: FrameKind, name: &str) -> Option<Vec<String>> {
        let start = self.frames.iter().position(|f| f.kind == kind && f.name == name)?;
        Some(
            self.frames[start..]
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.name.clone())
                .collect(),
        )
    }

    /// Binds the arguments of a block or function call to its declared parameters.
    fn bind_user(
        &mut self,
        name: &str,
        params: &[Param],
        args: Vec<(Option<Ident>, Value, Span)>,
        call: &Call,
    ) -> Result<HashMap<String, Value>> {
        // Defaults are evaluated where the block is defined: with only globals in scope.
        self.frames.push(Frame::new(FrameKind::Fn, name, String::new()));
        let mut sig = Vec::new();
        let mut failed = None;
        for p in params {
            let ty = match self.declared_type(p) {
                Ok(t) => t.unwrap_or(Type::Any),
                Err(d) => {
                    failed = Some(d);
                    break;
                }
            };
            let default = match &p.default {
                None => Default::Required,
                Some(e) => match self.eval(e) {
                    Ok(v) => Default::Value(v),
                    Err(d) => {
                        failed = Some(d);
                        break;
                    }
                },
            };
            sig.push(Signature {
                name: p.name.name.clone(),
                ty,
                default,
            });
        }
        self.frames.pop();
        if let Some(d) = failed {
            return Err(d);
        }
        let bound = self.bind_args(name, sig, args, call)?;
        Ok(params
            .iter()
            .zip(bound)
            .filter_map(|(p, b)| b.map(|(v, _)| (p.name.name.clone(), v)))
            .collect())
    }

    /// Creates a node for `op` on `inputs` (each with the span of the argument it came from).
    fn add_node(
        &mut self,
        op: Op,
        inputs: &[(NodeId, Span)],
        local: String,
        span: Span,
        layer: &str,
    ) -> Result<NodeId> {
        if self.graph.node_count() as u64 >= MAX_NODES {
            return Err(errors::limit(span, "the number of nodes", MAX_NODES));
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|(t, _)| &self.graph.node(*t).shape).collect();
        let shape = crate::ir::shape::infer(&op, &shapes).map_err(|err| {
            let with_shapes: Vec<(Span, Shape)> = inputs
                .iter()
                .map(|(t, s)| (*s, self.graph.node(*t).shape.clone()))
                .collect();
            errors::shape(&err, layer, span, &with_shapes)
        })?;
        let name = join(&self.frame().prefix.clone(), &local);
        if name.len() > MAX_NAME_BYTES {
            return Err(errors::limit(span, "the length of a node name", MAX_NAME_BYTES as u64));
        }
        let ids: Vec<NodeId> = inputs.iter().map(|(t, _)| *t).collect();
        let ix = self.graph.add(Node::new(name, op, shape, span), &ids);
        self.origins.insert(ix, span);
        Ok(ix)
    }

    /// Checks that `v` is an int in `1..=MAX_SIZE`.
    fn size(&self, v: &Value, span: Span, what: &str) -> Result<usize> {
        match v {
            Value::Int(i) if *i < 1 => Err(errors::non_positive(span, what, *i)),
            Value::Int(i) if *i > MAX_SIZE => Err(errors::invalid_value(span, what, &format!("at most {MAX_SIZE}"), v)),
            Value::Int(i) => Ok(*i as usize),
            other => Err(errors::wrong_type(span, what, "an int", other)),
        }
    }
}

/// A parameter of a layer, builtin, block or function.
pub(crate) struct Signature {
    pub name: String,
    pub ty: Type,
    pub default: Default,
}

pub(crate) enum Default {
    Required,
    Value(Value),
    /// Optional without a value; the callee decides.
    Absent,
}
