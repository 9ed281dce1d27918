//! Building the AST from pest's pairs.

use super::ast::*;
use super::errors;
use super::{NetParser, Rule, MAX_DEPTH, MAX_NESTING, MAX_OPERATORS, MAX_SOURCE_BYTES};
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::sync::{Mutex, OnceLock};

type Result<T> = std::result::Result<T, Diagnostic>;

pub fn parse_file(file: FileId, text: &str) -> Result<File> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err(errors::too_large(Span::new(file, 0, 0), text.len(), MAX_SOURCE_BYTES));
    }
    check_brackets(file, text)?;
    let mut pairs = NetParser::parse(Rule::file, text).map_err(|e| match &e.variant {
        // Pest stops when its recursion would exhaust the stack: code nested too deeply.
        pest::error::ErrorVariant::CustomError { message } if message.ends_with("limit reached") => {
            let pos = match e.location {
                pest::error::InputLocation::Pos(p) => p,
                pest::error::InputLocation::Span((s, _)) => s,
            };
            errors::too_deep_code(Span::new(file, pos, next_char_end(text, pos)), MAX_DEPTH)
        }
        _ => from_pest(file, text, e),
    })?;
    let b = Builder { file };
    let top = pairs.next().expect("the file rule always yields one pair");
    b.check_depth(&top)?;
    let mut items = Vec::new();
    for p in top.into_inner() {
        if p.as_rule() != Rule::EOI {
            items.push(b.item(p)?);
        }
    }
    Ok(File { items })
}

fn from_pest(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let positives = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let (pos, positives, tokens) = match literal_attempts(text) {
        Some((at, tokens)) if at > pos => (at, Vec::new(), tokens),
        Some((at, tokens)) if at == pos => (pos, positives, tokens),
        _ => (pos, positives, Vec::new()),
    };
    let end = next_char_end(text, pos);
    errors::syntax(Span::new(file, pos, end), text, &positives, &tokens)
}

/// The punctuation the parser expected where it got furthest, and that position. Pest's error
/// names only the rules it tried, so a missing `=` or `,` would be reported at the start of the
/// statement; parsing again with pest's error details finds the literal tokens it tried as well.
fn literal_attempts(text: &str) -> Option<(usize, Vec<String>)> {
    // The switch is global and doubles the cost of parsing, so it is on only while some thread
    // parses a file again for its error.
    static DETAILED_PARSES: Mutex<usize> = Mutex::new(0);
    let count = || DETAILED_PARSES.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut n = count();
        *n += 1;
        pest::set_error_detail(true);
    }
    let result = NetParser::parse(Rule::file, text);
    {
        let mut n = count();
        *n -= 1;
        if *n == 0 {
            pest::set_error_detail(false);
        }
    }
    let attempts = result.err()?.parse_attempts()?;
    let tokens: Vec<String> = attempts
        .expected_tokens()
        .into_iter()
        .map(|t| t.to_string())
        .filter(|t| errors::PUNCTUATION.contains(&t.as_str()))
        .collect();
    (!tokens.is_empty()).then_some((attempts.max_position, tokens))
}

fn next_char_end(text: &str, pos: usize) -> usize {
    text[pos.min(text.len())..]
        .chars()
        .next()
        .map_or(pos, |c| pos + c.len_utf8())
}

/// Checks that brackets (outside comments and strings) match and are not nested too deeply, so
/// that the recursive-descent parser and the passes after it never run out of stack.
fn check_brackets(file: FileId, text: &str) -> Result<()> {
    let mut stack: Vec<(char, usize)> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '#' => {
                while let Some((_, c)) = chars.peek() {
                    if *c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '"' => {
                for (_, c) in chars.by_ref() {
                    if c == '"' || c == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => {
                stack.push((c, i));
                if stack.len() > MAX_NESTING {
                    return Err(errors::too_deep(Span::new(file, i, i + 1), MAX_NESTING));
                }
            }
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((o, _)) if o == open => {}
                    Some((o, at)) => {
                        let (open, close) = (Span::new(file, at, at + 1), Span::new(file, i, i + 1));
                        return Err(errors::mismatched_bracket(open, o, close, c));
                    }
                    None => return Err(errors::unmatched_bracket(Span::new(file, i, i + 1), c)),
                }
            }
            _ => {}
        }
    }
    match stack.pop() {
        Some((o, at)) => Err(errors::unclosed_bracket(Span::new(file, at, at + 1), o)),
        None => Ok(()),
    }
}

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::pipe, Assoc::Left))
            .op(Op::infix(Rule::or, Assoc::Left))
            .op(Op::infix(Rule::and, Assoc::Left))
            .op(Op::prefix(Rule::not))
            .op(Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left)
                | Op::infix(Rule::in_op, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::floordiv, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg))
    })
}

struct Builder {
    file: FileId,
}

/// The length of `text` without trailing whitespace and comments. Pest includes the whitespace a
/// rule skipped before an optional part that did not match; spans should end at the last token.
fn trimmed_len(text: &str) -> usize {
    let mut t = text;
    loop {
        let before = t.len();
        t = t.trim_end();
        let line_start = t.rfind('\n').map_or(0, |i| i + 1);
        if let Some(hash) = comment_start(&t[line_start..]) {
            t = &t[..line_start + hash];
        }
        if t.len() == before {
            return t.len();
        }
    }
}

/// Where a `#` comment starts in one line, ignoring `#` inside strings.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return Some(i),
            _ => {}
        }
    }
    None
}

impl Builder {
    /// Checks, without recursion, that the tree is at most [`MAX_DEPTH`] levels deep, so that
    /// building the AST, evaluating it and dropping it cannot exhaust the stack. Every pair is a
    /// level; so is every operator of an operation (unary operators nest, and a chain of binary
    /// operators becomes a chain of nodes) and every `.field` or `[index]` after a primary; a
    /// conditional expression counts two, `if` and `for` statements three.
    /// Operations with more than [`MAX_OPERATORS`] operators are reported as such.
    fn check_depth(&self, top: &Pair<Rule>) -> Result<()> {
        let mut stack: Vec<(Pair<Rule>, usize)> = vec![(top.clone(), 0)];
        while let Some((p, above)) = stack.pop() {
            let weight = match p.as_rule() {
                Rule::operation => {
                    let operators = p
                        .clone()
                        .into_inner()
                        .filter(|q| q.as_rule() != Rule::postfix_expr)
                        .count();
                    if operators > MAX_OPERATORS {
                        return Err(errors::too_many_operators(self.span(&p), operators, MAX_OPERATORS));
                    }
                    1 + operators
                }
                Rule::postfix_expr => p.clone().into_inner().count(),
                // A conditional expression nests the next one in its `else` branch.
                Rule::expr if p.clone().into_inner().any(|q| q.as_rule() == Rule::kw_if) => 2,
                // Building a statement takes a large stack frame; `else if` chains nest them.
                Rule::if_stmt | Rule::for_stmt => 3,
                _ => 1,
            };
            let depth = above + weight;
            if depth > MAX_DEPTH {
                let start = p.as_span().start();
                let end = start + p.as_str().chars().next().map_or(0, char::len_utf8);
                return Err(errors::too_deep_code(Span::new(self.file, start, end), MAX_DEPTH));
            }
            // Children in reverse, so that they are visited in source order.
            let children: Vec<Pair<Rule>> = p.into_inner().collect();
            stack.extend(children.into_iter().rev().map(|q| (q, depth)));
        }
        Ok(())
    }

    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), s.start() + trimmed_len(s.as_str()))
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn item(&self, p: Pair<Rule>) -> Result<Item> {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut it = p.into_inner();
        Ok(match rule {
            Rule::include => {
                let s = it.next().unwrap();
                Item::Include {
                    path: string_text(s),
                    span,
                }
            }
            Rule::const_def => {
                let name = self.ident(it.next().unwrap());
                let value = self.expr(it.next().unwrap())?;
                Item::Const { name, value }
            }
            Rule::fn_def => {
                let name = self.ident(it.next().unwrap());
                let mut params = Vec::new();
                let mut body = None;
                for q in it {
                    match q.as_rule() {
                        Rule::params => params = self.params(q)?,
                        _ => body = Some(self.expr(q)?),
                    }
                }
                Item::Fn(FnDef {
                    name,
                    params,
                    body: body.unwrap(),
                    span,
                })
            }
            Rule::block_def | Rule::net_def => {
                let name = self.ident(it.next().unwrap());
                let mut params = Vec::new();
                let mut body = Vec::new();
                for q in it {
                    match q.as_rule() {
                        Rule::params => params = self.params(q)?,
                        _ => body = self.body(q)?,
                    }
                }
                if rule == Rule::block_def {
                    Item::Block(BlockDef {
                        name,
                        params,
                        body,
                        span,
                    })
                } else {
                    Item::Net(NetDef {
                        name,
                        params,
                        body,
                        span,
                    })
                }
            }
            r => unreachable!("unexpected item rule {r:?}"),
        })
    }

    fn params(&self, p: Pair<Rule>) -> Result<Vec<Param>> {
        p.into_inner()
            .map(|q| {
                let span = self.span(&q);
                let mut it = q.into_inner();
                let name = self.ident(it.next().unwrap());
                let mut ty = None;
                let mut default = None;
                for r in it {
                    match r.as_rule() {
                        Rule::ident => ty = Some(self.ident(r)),
                        _ => default = Some(self.expr(r)?),
                    }
                }
                Ok(Param {
                    name,
                    ty,
                    default,
                    span,
                })
            })
            .collect()
    }

    fn body(&self, p: Pair<Rule>) -> Result<Vec<Stmt>> {
        p.into_inner().map(|q| self.stmt(q)).collect()
    }

    fn pattern(&self, p: Pair<Rule>) -> Pattern {
        match p.as_rule() {
            Rule::ident => Pattern::Name(self.ident(p)),
            _ => {
                let span = self.span(&p);
                Pattern::Tuple(p.into_inner().map(|q| self.ident(q)).collect(), span)
            }
        }
    }

    fn stmt(&self, p: Pair<Rule>) -> Result<Stmt> {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut it = p.into_inner();
        Ok(match rule {
            Rule::input_stmt => {
                let name = self.ident(it.next().unwrap());
                let c = self.expr(it.next().unwrap())?;
                let h = self.expr(it.next().unwrap())?;
                let w = self.expr(it.next().unwrap())?;
                Stmt::Input {
                    name,
                    dims: Box::new([c, h, w]),
                    span,
                }
            }
            Rule::let_stmt | Rule::assign_stmt => {
                let pattern = self.pattern(it.next().unwrap());
                let value = self.expr(it.next().unwrap())?;
                if rule == Rule::let_stmt {
                    Stmt::Let { pattern, value, span }
                } else {
                    Stmt::Assign { pattern, value, span }
                }
            }
            Rule::for_stmt => {
                let pattern = self.pattern(it.next().unwrap());
                let iter = self.expr(it.next().unwrap())?;
                let body = self.body(it.next().unwrap())?;
                Stmt::For {
                    pattern,
                    iter,
                    body,
                    span,
                }
            }
            Rule::if_stmt => {
                let cond = self.expr(it.next().unwrap())?;
                let then = self.body(it.next().unwrap())?;
                let otherwise = match it.next() {
                    None => Vec::new(),
                    Some(q) if q.as_rule() == Rule::if_stmt => vec![self.stmt(q)?],
                    Some(q) => self.body(q)?,
                };
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                    span,
                }
            }
            Rule::assert_stmt => {
                let cond = self.expr(it.next().unwrap())?;
                let message = it.next().map(|q| self.expr(q)).transpose()?;
                Stmt::Assert { cond, message, span }
            }
            Rule::return_stmt => Stmt::Return {
                value: self.expr(it.next().unwrap())?,
                span,
            },
            r => unreachable!("unexpected statement rule {r:?}"),
        })
    }

    fn expr(&self, p: Pair<Rule>) -> Result<Expr> {
        debug_assert_eq!(p.as_rule(), Rule::expr);
        let span = self.span(&p);
        let mut it = p.into_inner();
        let then = self.operation(it.next().unwrap())?;
        match it.next() {
            None => Ok(then),
            Some(_kw_if) => {
                let cond = self.operation(it.next().unwrap())?;
                let _kw_else = it.next();
                let otherwise = self.expr(it.next().unwrap())?;
                Ok(Expr {
                    kind: ExprKind::Cond {
                        cond: Box::new(cond),
                        then: Box::new(then),
                        otherwise: Box::new(otherwise),
                    },
                    span,
                })
            }
        }
    }

    fn operation(&self, p: Pair<Rule>) -> Result<Expr> {
        let span = self.span(&p);
        let operators = p
            .clone()
            .into_inner()
            .filter(|q| !matches!(q.as_rule(), Rule::postfix_expr))
            .count();
        if operators > MAX_OPERATORS {
            return Err(errors::too_many_operators(span, operators, MAX_OPERATORS));
        }
        pratt()
            .map_primary(|q| self.postfix(q))
            .map_prefix(|op, rhs| {
                let rhs = rhs?;
                let span = self.span(&op).to(rhs.span);
                let op = if op.as_rule() == Rule::neg {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                Ok(Expr {
                    kind: ExprKind::Unary(op, Box::new(rhs)),
                    span,
                })
            })
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let span = lhs.span.to(rhs.span);
                let bin = match op.as_rule() {
                    Rule::pipe => return self.pipe(lhs, rhs, span),
                    Rule::or => BinOp::Or,
                    Rule::and => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::in_op => BinOp::In,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    Rule::floordiv => BinOp::FloorDiv,
                    Rule::rem => BinOp::Rem,
                    r => unreachable!("unexpected operator {r:?}"),
                };
                Ok(Expr {
                    kind: ExprKind::Binary(bin, Box::new(lhs), Box::new(rhs)),
                    span,
                })
            })
            .parse(p.into_inner())
    }

    fn pipe(&self, lhs: Expr, rhs: Expr, span: Span) -> Result<Expr> {
        let stage = match rhs.kind {
            ExprKind::Call(c) => c,
            ExprKind::Name(callee) => Call {
                span: callee.span,
                callee,
                args: Vec::new(),
                args_span: None,
                label: None,
            },
            _ => return Err(errors::pipe_target(rhs.span)),
        };
        Ok(match lhs.kind {
            ExprKind::Pipe(head, mut stages) => {
                stages.push(stage);
                Expr {
                    kind: ExprKind::Pipe(head, stages),
                    span,
                }
            }
            _ => Expr {
                kind: ExprKind::Pipe(Box::new(lhs), vec![stage]),
                span,
            },
        })
    }

    fn postfix(&self, p: Pair<Rule>) -> Result<Expr> {
        let mut it = p.into_inner();
        let mut e = self.primary(it.next().unwrap())?;
        for q in it {
            let span = e.span.to(self.span(&q));
            let inner = q.clone().into_inner().next().unwrap();
            e = match q.as_rule() {
                Rule::field => Expr {
                    kind: ExprKind::Field(Box::new(e), self.ident(inner)),
                    span,
                },
                _ => Expr {
                    kind: ExprKind::Index(Box::new(e), Box::new(self.expr(inner)?)),
                    span,
                },
            };
        }
        Ok(e)
    }

    fn primary(&self, p: Pair<Rule>) -> Result<Expr> {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::int => {
                let digits: String = p.as_str().chars().filter(|c| *c != '_').collect();
                ExprKind::Int(digits.parse().map_err(|_| errors::bad_number(span, p.as_str()))?)
            }
            Rule::float => {
                let v: f64 = p.as_str().parse().map_err(|_| errors::bad_number(span, p.as_str()))?;
                if !v.is_finite() {
                    return Err(errors::bad_number(span, p.as_str()));
                }
                ExprKind::Float(v)
            }
            Rule::bool => ExprKind::Bool(p.as_str() == "true"),
            Rule::string => ExprKind::Str(string_text(p)),
            Rule::paren => return self.expr(p.into_inner().next().unwrap()),
            Rule::tuple => {
                let inner: Vec<Pair<Rule>> = p.into_inner().collect();
                if let [single] = &inner[..] {
                    // `(a)` without a comma: parentheses, not a tuple.
                    return self.expr(single.clone());
                }
                let items = inner.into_iter().filter(|q| q.as_rule() != Rule::tuple_comma);
                ExprKind::Tuple(items.map(|q| self.expr(q)).collect::<Result<_>>()?)
            }
            Rule::list => ExprKind::List(p.into_inner().map(|q| self.expr(q)).collect::<Result<_>>()?),
            Rule::call => {
                let mut it = p.into_inner();
                let callee = self.ident(it.next().unwrap());
                let mut args = None;
                let mut args_span = None;
                let mut label = None;
                for q in it {
                    match q.as_rule() {
                        Rule::call_args => {
                            args_span = Some(self.span(&q));
                            args = Some(self.args(q)?);
                        }
                        _ => label = Some(self.label(q)?),
                    }
                }
                if args.is_none() && label.is_none() {
                    ExprKind::Name(callee)
                } else {
                    ExprKind::Call(Call {
                        callee,
                        args: args.unwrap_or_default(),
                        args_span,
                        label,
                        span,
                    })
                }
            }
            r => unreachable!("unexpected primary {r:?}"),
        };
        Ok(Expr { kind, span })
    }

    fn args(&self, p: Pair<Rule>) -> Result<Vec<Arg>> {
        p.into_inner()
            .map(|q| match q.as_rule() {
                Rule::named_arg => {
                    let mut it = q.into_inner();
                    let name = self.ident(it.next().unwrap());
                    Ok(Arg {
                        name: Some(name),
                        value: self.expr(it.next().unwrap())?,
                    })
                }
                _ => Ok(Arg {
                    name: None,
                    value: self.expr(q)?,
                }),
            })
            .collect()
    }

    fn label(&self, p: Pair<Rule>) -> Result<Label> {
        let span = self.span(&p);
        let name = p.into_inner().find(|q| q.as_rule() == Rule::label_name).unwrap();
        let mut segments = Vec::new();
        for part in name.into_inner() {
            let mut pieces = Vec::new();
            for piece in part.into_inner() {
                match piece.as_rule() {
                    Rule::label_text => pieces.push(LabelPart::Text(piece.as_str().to_string())),
                    _ => pieces.push(LabelPart::Expr(self.expr(piece.into_inner().next().unwrap())?)),
                }
            }
            segments.push(pieces);
        }
        Ok(Label { segments, span })
    }
}

fn string_text(p: Pair<Rule>) -> String {
    p.into_inner()
        .next()
        .map(|q| q.as_str().to_string())
        .unwrap_or_default()
}
