//! Constant tensors of a model (initializers and `Constant` nodes) decoded from their protobuf
//! form, and the attribute accessors the operator mappings use.

use super::errors;
use crate::diag::Diagnostic;
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::tensor_proto::{DataLocation, DataType};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};

/// Most elements of one constant tensor: 1 GiB of float32, netc's limit for a single tensor.
pub const MAX_ELEMENTS: u64 = 1 << 28;

/// The elements of a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    /// A type netc does not read; the name of the type.
    Other(String),
}

/// A decoded constant tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Data,
}

fn dtype_name(code: i32) -> String {
    DataType::try_from(code)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("#{code}"))
}

/// Decodes a tensor; `name` is used when the tensor carries none (a `Constant`'s value).
pub fn decode(t: &TensorProto, name: &str) -> Result<Const, Diagnostic> {
    let name = t
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| name.to_string());
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        return Err(errors::external_data(&name));
    }
    if t.segment.is_some() {
        return Err(errors::bad_tensor(&name, "segmented tensors are not supported"));
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut count: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            return Err(errors::bad_tensor(&name, &format!("negative dimension {d}")));
        }
        count = count.saturating_mul(d as u64);
        dims.push(d as usize);
    }
    if count > MAX_ELEMENTS {
        return Err(errors::too_large(
            &format!("tensor `{name}` with {count} elements"),
            MAX_ELEMENTS,
        ));
    }
    let n = count as usize;
    let code = t.data_type.unwrap_or(0);
    let raw = t.raw_data.as_deref();
    let check = |len: usize| -> Result<(), Diagnostic> {
        if len == n {
            Ok(())
        } else {
            Err(errors::bad_tensor(
                &name,
                &format!("its shape {:?} holds {n} elements, but it stores {len}", dims),
            ))
        }
    };
    let data = match DataType::try_from(code) {
        Ok(DataType::Float) => {
            let v: Vec<f32> = match raw {
                Some(b) => {
                    if b.len() % 4 != 0 {
                        return Err(errors::bad_tensor(&name, "raw data is not a whole number of float32"));
                    }
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                None => t.float_data.clone(),
            };
            check(v.len())?;
            Data::F32(v)
        }
        Ok(DataType::Int64) => {
            let v: Vec<i64> = match raw {
                Some(b) => {
                    if b.len() % 8 != 0 {
                        return Err(errors::bad_tensor(&name, "raw data is not a whole number of int64"));
                    }
                    b.chunks_exact(8)
                        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                        .collect()
                }
                None => t.int64_data.clone(),
            };
            check(v.len())?;
            Data::I64(v)
        }
        Ok(DataType::Int32) => {
            let v: Vec<i64> = match raw {
                Some(b) => {
                    if b.len() % 4 != 0 {
                        return Err(errors::bad_tensor(&name, "raw data is not a whole number of int32"));
                    }
                    b.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                        .collect()
                }
                None => t.int32_data.iter().map(|&v| v as i64).collect(),
            };
            check(v.len())?;
            Data::I64(v)
        }
        Ok(DataType::Bool | DataType::Uint8) => {
            let v: Vec<i64> = match raw {
                Some(b) => b.iter().map(|&x| x as i64).collect(),
                None => t.int32_data.iter().map(|&v| v as i64).collect(),
            };
            check(v.len())?;
            Data::I64(v)
        }
        _ => Data::Other(dtype_name(code)),
    };
    Ok(Const { name, dims, data })
}

impl Const {
    /// The elements as float32, for a tensor that is used as `role`.
    pub fn f32s(&self, role: &str) -> Result<&[f32], Diagnostic> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => Err(errors::tensor_dtype(&self.name, "int64", role)),
            Data::Other(t) => Err(errors::tensor_dtype(&self.name, t, role)),
        }
    }

    /// The elements as integers, for a tensor that is used as `role`.
    pub fn i64s(&self, role: &str) -> Result<&[i64], Diagnostic> {
        match &self.data {
            Data::I64(v) => Ok(v),
            Data::F32(_) => Err(errors::tensor_dtype(&self.name, "float", role)),
            Data::Other(t) => Err(errors::tensor_dtype(&self.name, t, role)),
        }
    }

    /// The single float of a scalar (or one-element) tensor.
    pub fn scalar_f32(&self, role: &str) -> Result<f32, Diagnostic> {
        match self.f32s(role)? {
            [v] => Ok(*v),
            v => Err(errors::bad_tensor(
                &self.name,
                &format!("{role} must be a single value, not {} values", v.len()),
            )),
        }
    }
}

/// The value of a `Constant` node (its `value`, `value_float(s)` or `value_int(s)` attribute).
pub fn constant_value(node: &NodeProto, name: &str) -> Result<Option<Const>, Diagnostic> {
    for a in &node.attribute {
        let key = a.name.as_deref().unwrap_or("");
        let c = match key {
            "value" => match &a.t {
                Some(t) => decode(t, name)?,
                None => return Ok(None),
            },
            "value_float" => Const {
                name: name.into(),
                dims: vec![],
                data: Data::F32(vec![a.f.unwrap_or(0.0)]),
            },
            "value_floats" => Const {
                name: name.into(),
                dims: vec![a.floats.len()],
                data: Data::F32(a.floats.clone()),
            },
            "value_int" => Const {
                name: name.into(),
                dims: vec![],
                data: Data::I64(vec![a.i.unwrap_or(0)]),
            },
            "value_ints" => Const {
                name: name.into(),
                dims: vec![a.ints.len()],
                data: Data::I64(a.ints.clone()),
            },
            _ => continue,
        };
        return Ok(Some(c));
    }
    Ok(None)
}

/// The node's attribute `name`, if present.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

pub fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i.unwrap_or(0))
}

pub fn attr_float(node: &NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f.unwrap_or(0.0))
}

pub fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

pub fn attr_str(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(a.s.as_deref().unwrap_or(&[])).into_owned())
}

/// Whether an attribute is a graph (a control-flow body), which netc never imports.
pub fn has_subgraph(node: &NodeProto) -> bool {
    node.attribute.iter().any(|a| {
        a.g.is_some()
            || !a.graphs.is_empty()
            || matches!(
                a.r#type.and_then(|t| AttributeType::try_from(t).ok()),
                Some(AttributeType::Graph | AttributeType::Graphs)
            )
    })
}
