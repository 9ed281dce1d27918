//! Builtin scalar functions, constants and arithmetic.
//!
//! Semantics follow Python, since the seed networks' reference implementations are Python:
//! `/` always gives a float, `//` and `%` floor, `round` rounds halves to even, and
//! `make_divisible` is torchvision's `_make_divisible`.

use super::errors;
use super::value::{Type, Value};
use super::{Default, Result, Signature};
use crate::source::Span;
use crate::syntax::ast::BinOp;

/// Names of the builtin functions.
pub const NAMES: [&str; 13] = [
    "min",
    "max",
    "round",
    "floor",
    "ceil",
    "int",
    "float",
    "abs",
    "make_divisible",
    "range",
    "len",
    "error",
    "lookup",
];

/// Names of the builtin constants.
pub const CONSTANTS: [&str; 2] = ["same", "valid"];

/// Longest list `range` may build.
pub const MAX_RANGE: i64 = 100_000;

pub fn lookup(name: &str) -> Option<&'static str> {
    NAMES.iter().find(|n| **n == name).copied()
}

/// `same` and `valid` name padding modes.
pub fn constant(name: &str) -> Option<Value> {
    CONSTANTS.contains(&name).then(|| Value::Str(name.to_string()))
}

fn p(name: &str, ty: Type, default: Default) -> Signature {
    Signature {
        name: name.to_string(),
        ty,
        default,
    }
}

pub fn params(name: &str) -> Vec<Signature> {
    use Default::*;
    match name {
        // Numbers are checked in `call`, so that ints stay ints through min, max and abs.
        "min" | "max" => vec![p("a", Type::Any, Required), p("b", Type::Any, Required)],
        "round" | "floor" | "ceil" | "int" | "float" | "abs" => vec![p("x", Type::Any, Required)],
        "make_divisible" => vec![
            p("value", Type::Float, Required),
            p("divisor", Type::Int, Value(super::Value::Int(8))),
            p("min_value", Type::Int, Absent),
        ],
        "range" => vec![p("start", Type::Int, Required), p("end", Type::Int, Absent)],
        "len" => vec![p("list", Type::List, Required)],
        "lookup" => vec![p("table", Type::List, Required), p("key", Type::Any, Required)],
        "error" => vec![p("message", Type::Str, Required)],
        _ => unreachable!("not a builtin: {name}"),
    }
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => unreachable!("arguments are coerced to float"),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        _ => unreachable!("arguments are coerced to int"),
    }
}

/// Converts a float to an int, or says it is out of range.
fn to_int(f: f64, span: Span) -> Result<Value> {
    if f.is_finite() && f.abs() < 9.0e15 {
        Ok(Value::Int(f as i64))
    } else {
        Err(errors::arithmetic(span, &format!("{f} does not fit an int")))
    }
}

/// Python's round: halves go to the even neighbour.
fn round_half_even(f: f64) -> f64 {
    let r = f.round();
    if (f - f.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - f.signum()
    } else {
        r
    }
}

pub fn call(name: &str, args: Vec<Option<(Value, Span)>>, span: Span) -> Result<Value> {
    // `error`, `len` and `lookup` have typed parameters; the others take numbers.
    let numeric = !matches!(name, "error" | "len" | "lookup");
    for (v, s) in args.iter().flatten().filter(|_| numeric) {
        if !matches!(v, Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::List(_)) {
            return Err(errors::wrong_type(
                *s,
                &format!("the argument of `{name}`"),
                "a number",
                v,
            ));
        }
        if matches!(v, Value::Str(_) | Value::List(_)) {
            return Err(errors::wrong_type(
                *s,
                &format!("the argument of `{name}`"),
                "a number",
                v,
            ));
        }
    }
    let arg = |i: usize| args[i].as_ref().map(|(v, _)| v);
    // An int stays an int through min, max and abs.
    let both_int = |a: &Value, b: &Value| matches!((a, b), (Value::Int(_), Value::Int(_)));
    Ok(match name {
        "min" | "max" => {
            let (a, b) = (arg(0).unwrap(), arg(1).unwrap());
            let (x, y) = (float(a), float(b));
            let pick_first = if name == "min" { x <= y } else { x >= y };
            let v = if pick_first { a } else { b };
            if both_int(a, b) {
                v.clone()
            } else {
                Value::Float(float(v))
            }
        }
        "abs" => match arg(0).unwrap() {
            Value::Int(i) => Value::Int(
                i.checked_abs()
                    .ok_or_else(|| errors::arithmetic(span, "integer overflow"))?,
            ),
            v => Value::Float(float(v).abs()),
        },
        "round" => to_int(round_half_even(float(arg(0).unwrap())), span)?,
        "floor" => to_int(float(arg(0).unwrap()).floor(), span)?,
        "ceil" => to_int(float(arg(0).unwrap()).ceil(), span)?,
        "int" => to_int(float(arg(0).unwrap()).trunc(), span)?,
        "float" => Value::Float(float(arg(0).unwrap())),
        "make_divisible" => {
            let v = float(arg(0).unwrap());
            let divisor = int(arg(1).unwrap());
            if divisor < 1 {
                return Err(errors::non_positive(
                    args[1].as_ref().unwrap().1,
                    "the divisor of `make_divisible`",
                    divisor,
                ));
            }
            let min_value = arg(2).map_or(divisor, int);
            let d = divisor as f64;
            let rounded = ((v + d / 2.0) / d).floor() * d;
            let mut new_v = rounded.max(min_value as f64);
            if new_v < 0.9 * v {
                new_v += d;
            }
            to_int(new_v, span)?
        }
        "range" => {
            let (start, end) = match arg(1) {
                None => (0, int(arg(0).unwrap())),
                Some(e) => (int(arg(0).unwrap()), int(e)),
            };
            let len = end.saturating_sub(start).max(0);
            if len > MAX_RANGE {
                return Err(errors::limit(span, "the length of `range`", MAX_RANGE as u64));
            }
            Value::List((start..end).map(Value::Int).collect())
        }
        "len" => match arg(0).unwrap() {
            Value::List(items) => Value::Int(items.len() as i64),
            _ => unreachable!("argument is coerced to a list"),
        },
        "lookup" => {
            let (Value::List(rows), key) = (arg(0).unwrap(), arg(1).unwrap()) else {
                unreachable!("the table is coerced to a list")
            };
            let first = |row: &Value| match row {
                Value::List(items) => items.first().cloned(),
                _ => None,
            };
            match rows.iter().find(|row| first(row).is_some_and(|f| equal(&f, key))) {
                Some(row) => row.clone(),
                None => {
                    let keys: Vec<String> = rows.iter().filter_map(first).map(|k| k.to_string()).collect();
                    return Err(errors::not_in_table(args[1].as_ref().unwrap().1, key, &keys));
                }
            }
        }
        "error" => match arg(0).unwrap() {
            Value::Str(m) => return Err(errors::user_error(span, m)),
            _ => unreachable!("argument is coerced to a string"),
        },
        _ => unreachable!("not a builtin: {name}"),
    })
}

/// Equality as `==` sees it (ints and floats compare by value); values `==` cannot compare are
/// unequal.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q)),
        _ => matches!(binary(BinOp::Eq, a, b, Span::default()), Ok(Value::Bool(true))),
    }
}

/// Arithmetic and comparison of two scalars (`and`/`or` and tensor `+` are handled by the caller).
pub fn binary(op: BinOp, a: &Value, b: &Value, span: Span) -> Result<Value> {
    use BinOp::*;
    let overflow = || errors::arithmetic(span, "integer overflow");
    let v = match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            match op {
                Add => Value::Int(x.checked_add(y).ok_or_else(overflow)?),
                Sub => Value::Int(x.checked_sub(y).ok_or_else(overflow)?),
                Mul => Value::Int(x.checked_mul(y).ok_or_else(overflow)?),
                Div => {
                    if y == 0 {
                        return Err(errors::arithmetic(span, "division by zero"));
                    }
                    Value::Float(x as f64 / y as f64)
                }
                FloorDiv | Rem => {
                    if y == 0 {
                        return Err(errors::arithmetic(span, "division by zero"));
                    }
                    let q = x.checked_div_euclid(y).ok_or_else(overflow)?;
                    let r = x.checked_rem_euclid(y).ok_or_else(overflow)?;
                    // Python floors toward negative infinity; the euclidean result differs when y < 0.
                    let (q, r) = if y < 0 && r != 0 { (q - 1, r + y) } else { (q, r) };
                    Value::Int(if op == FloorDiv { q } else { r })
                }
                Eq => Value::Bool(x == y),
                Ne => Value::Bool(x != y),
                Lt => Value::Bool(x < y),
                Le => Value::Bool(x <= y),
                Gt => Value::Bool(x > y),
                Ge => Value::Bool(x >= y),
                And | Or => unreachable!("handled by the caller"),
                In => return Err(errors::bad_operands(span, op.symbol(), a, b)),
            }
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            let (x, y) = (float(a), float(b));
            let r = match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div | FloorDiv | Rem if y == 0.0 => return Err(errors::arithmetic(span, "division by zero")),
                Div => x / y,
                FloorDiv => (x / y).floor(),
                Rem => x - (x / y).floor() * y,
                Eq => return Ok(Value::Bool(x == y)),
                Ne => return Ok(Value::Bool(x != y)),
                Lt => return Ok(Value::Bool(x < y)),
                Le => return Ok(Value::Bool(x <= y)),
                Gt => return Ok(Value::Bool(x > y)),
                Ge => return Ok(Value::Bool(x >= y)),
                And | Or => unreachable!("handled by the caller"),
                In => return Err(errors::bad_operands(span, op.symbol(), a, b)),
            };
            if !r.is_finite() {
                return Err(errors::arithmetic(span, "the result is not a finite number"));
            }
            Value::Float(r)
        }
        (_, Value::List(items)) if op == In => Value::Bool(items.iter().any(|item| equal(a, item))),
        (Value::Bool(x), Value::Bool(y)) if matches!(op, Eq | Ne) => Value::Bool((x == y) == (op == Eq)),
        (Value::Str(x), Value::Str(y)) if matches!(op, Eq | Ne) => Value::Bool((x == y) == (op == Eq)),
        _ => return Err(errors::bad_operands(span, op.symbol(), a, b)),
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call1(name: &str, args: &[Value]) -> Value {
        let span = Span::default();
        call(name, args.iter().map(|v| Some((v.clone(), span))).collect(), span).unwrap()
    }

    #[test]
    fn make_divisible_is_torchvisions_rounding() {
        let md = |v: f64| call1("make_divisible", &[Value::Float(v), Value::Int(8), Value::Int(8)]);
        assert_eq!(md(32.0 * 0.35), Value::Int(16)); // 11.2 -> 8 would lose more than 10%, so 16
        assert_eq!(md(16.0 * 0.5), Value::Int(8));
        assert_eq!(md(24.0 * 0.75), Value::Int(24)); // 18 -> 16 is more than 10% down -> 24
        assert_eq!(md(1280.0 * 1.4), Value::Int(1792));
        assert_eq!(md(3.0), Value::Int(8)); // never below the divisor
    }

    #[test]
    fn round_halves_to_even_as_python() {
        assert_eq!(call1("round", &[Value::Float(2.5)]), Value::Int(2));
        assert_eq!(call1("round", &[Value::Float(3.5)]), Value::Int(4));
        assert_eq!(call1("round", &[Value::Float(-2.5)]), Value::Int(-2));
        assert_eq!(call1("round", &[Value::Float(2.6)]), Value::Int(3));
    }

    #[test]
    fn floor_division_and_remainder_floor_as_python() {
        let s = Span::default();
        assert_eq!(
            binary(BinOp::FloorDiv, &Value::Int(-7), &Value::Int(2), s),
            Ok(Value::Int(-4))
        );
        assert_eq!(
            binary(BinOp::Rem, &Value::Int(-7), &Value::Int(2), s),
            Ok(Value::Int(1))
        );
        assert_eq!(
            binary(BinOp::FloorDiv, &Value::Int(7), &Value::Int(-2), s),
            Ok(Value::Int(-4))
        );
        assert_eq!(
            binary(BinOp::Rem, &Value::Int(7), &Value::Int(-2), s),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            binary(BinOp::Div, &Value::Int(7), &Value::Int(2), s),
            Ok(Value::Float(3.5))
        );
        assert!(binary(BinOp::FloorDiv, &Value::Int(1), &Value::Int(0), s).is_err());
        assert!(binary(BinOp::Mul, &Value::Int(i64::MAX), &Value::Int(2), s).is_err());
    }

    #[test]
    fn membership_compares_by_value() {
        let s = Span::default();
        let list = Value::List(vec![Value::Float(0.5), Value::Int(1), Value::Str("same".into())]);
        assert_eq!(binary(BinOp::In, &Value::Int(1), &list, s), Ok(Value::Bool(true)));
        assert_eq!(binary(BinOp::In, &Value::Float(1.0), &list, s), Ok(Value::Bool(true)));
        assert_eq!(binary(BinOp::In, &Value::Float(0.25), &list, s), Ok(Value::Bool(false)));
        assert_eq!(
            binary(BinOp::In, &Value::Str("same".into()), &list, s),
            Ok(Value::Bool(true))
        );
        assert!(binary(BinOp::In, &Value::Int(1), &Value::Int(1), s).is_err());
    }

    #[test]
    fn lookup_returns_the_first_matching_row() {
        let table = Value::List(vec![
            Value::List(vec![Value::Int(1), Value::Int(144)]),
            Value::List(vec![Value::Int(3), Value::Int(240)]),
        ]);
        let span = Span::default();
        let found = call(
            "lookup",
            vec![Some((table.clone(), span)), Some((Value::Int(3), span))],
            span,
        )
        .unwrap();
        assert_eq!(found, Value::List(vec![Value::Int(3), Value::Int(240)]));
        let missing = call("lookup", vec![Some((table, span)), Some((Value::Int(5), span))], span).unwrap_err();
        assert_eq!(missing.code, "E0216");
    }

    #[test]
    fn min_and_max_keep_ints() {
        assert_eq!(call1("max", &[Value::Int(1280), Value::Int(640)]), Value::Int(1280));
        assert_eq!(call1("min", &[Value::Int(3), Value::Float(2.5)]), Value::Float(2.5));
    }
}
