//! Values of the language during elaboration.

use crate::ir::NodeId;
use std::fmt;

/// Something that can be called: a builtin layer, a builtin function, a block or a `fn`.
#[derive(Clone, Debug, PartialEq)]
pub enum Callable {
    Layer(&'static str),
    Builtin(&'static str),
    Block(String),
    Fn(String),
}

impl Callable {
    pub fn name(&self) -> &str {
        match self {
            Callable::Layer(n) | Callable::Builtin(n) => n,
            Callable::Block(n) | Callable::Fn(n) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// A tensor: the node that produces it.
    Tensor(NodeId),
    /// A tuple or list.
    List(Vec<Value>),
    Callable(Callable),
}

/// The types a parameter can be declared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Int,
    Float,
    Bool,
    Str,
    Tensor,
    List,
    Layer,
    Any,
}

impl Type {
    pub fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "str" => Type::Str,
            "tensor" => Type::Tensor,
            "list" => Type::List,
            "layer" => Type::Layer,
            "any" => Type::Any,
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 8] = ["int", "float", "bool", "str", "tensor", "list", "layer", "any"];

    pub fn name(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
            Type::Str => "str",
            Type::Tensor => "tensor",
            Type::List => "list",
            Type::Layer => "layer",
            Type::Any => "any",
        }
    }
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Str(_) => "str",
            Value::Tensor(_) => "tensor",
            Value::List(_) => "list",
            Value::Callable(_) => "layer",
        }
    }

    /// Converts to `ty`, widening int to float; `None` if the value is of another type.
    pub fn coerce(self, ty: Type) -> Option<Value> {
        match (ty, self) {
            (Type::Any, v) => Some(v),
            (Type::Float, Value::Int(i)) => Some(Value::Float(i as f64)),
            (Type::Float, v @ Value::Float(_)) => Some(v),
            (Type::Int, v @ Value::Int(_)) => Some(v),
            (Type::Bool, v @ Value::Bool(_)) => Some(v),
            (Type::Str, v @ Value::Str(_)) => Some(v),
            (Type::Tensor, v @ Value::Tensor(_)) => Some(v),
            (Type::List, v @ Value::List(_)) => Some(v),
            (Type::Layer, v @ Value::Callable(_)) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "\"{v}\""),
            Value::Tensor(_) => write!(f, "tensor"),
            Value::List(items) => {
                write!(f, "(")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, ")")
            }
            Value::Callable(c) => write!(f, "{}", c.name()),
        }
    }
}
