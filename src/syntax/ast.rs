//! The abstract syntax tree of a `.net` file. Every node carries the span it was parsed from.

use crate::source::Span;

#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A parsed file.
#[derive(Clone, Debug, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug)]
pub enum Item {
    Include { path: String, span: Span },
    Const { name: Ident, value: Expr },
    Fn(FnDef),
    Block(BlockDef),
    Net(NetDef),
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<Ident>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct FnDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Expr,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct NetDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

/// The left side of `let`, `=` and `for`: one name or a tuple of names.
#[derive(Clone, Debug)]
pub enum Pattern {
    Name(Ident),
    Tuple(Vec<Ident>, Span),
}

impl Pattern {
    pub fn span(&self) -> Span {
        match self {
            Pattern::Name(i) => i.span,
            Pattern::Tuple(_, s) => *s,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Input {
        name: Ident,
        dims: Box<[Expr; 3]>,
        span: Span,
    },
    Let {
        pattern: Pattern,
        value: Expr,
        span: Span,
    },
    Assign {
        pattern: Pattern,
        value: Expr,
        span: Span,
    },
    For {
        pattern: Pattern,
        iter: Expr,
        body: Vec<Stmt>,
        span: Span,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Vec<Stmt>,
        span: Span,
    },
    /// `assert cond, message`
    Assert {
        cond: Expr,
        message: Option<Expr>,
        span: Span,
    },
    Return {
        value: Expr,
        span: Span,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

/// An argument of a call, positional or named (`stride = 2`).
#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

/// One piece of a node label: literal text or an interpolated expression (`unit{i}`).
#[derive(Clone, Debug)]
pub enum LabelPart {
    Text(String),
    Expr(Expr),
}

/// `as stage{s}.unit{i}`: dot-separated segments, each a sequence of parts.
#[derive(Clone, Debug)]
pub struct Label {
    pub segments: Vec<Vec<LabelPart>>,
    pub span: Span,
}

/// A call of a layer, block or function: `conv(32, 3, stride = 2) as stem`.
#[derive(Clone, Debug)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    /// Span of the argument list; `None` for a bare name in a pipe (`|> relu`).
    pub args_span: Option<Span>,
    pub label: Option<Label>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(Ident),
    Call(Call),
    /// `head |> stage1 |> stage2`: each stage is called with the previous value as first argument.
    Pipe(Box<Expr>, Vec<Call>),
    Tuple(Vec<Expr>),
    List(Vec<Expr>),
    Field(Box<Expr>, Ident),
    Index(Box<Expr>, Box<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `then if cond else otherwise`
    Cond {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}
