//! Weights: the named tensors each parameterized node owns, their seeded initialization, and
//! safetensors files.
//!
//! Names are `<node name>.<tensor>`: a conv owns `weight` `[Cout, Cin / groups, kh, kw]` and, with
//! a bias, `bias` `[Cout]`; a dense layer `weight` `[out, in]` and `bias` `[out]` (PyTorch's
//! layouts); a batchnorm `gamma`, `beta`, `mean` and `var`, each `[C]`.
//!
//! The seeded initialization draws conv and dense weights from a Kaiming normal distribution
//! (standard deviation `sqrt(2 / fan_in)`), biases uniformly from `±1 / sqrt(fan_in)`, and
//! batchnorm statistics that are deliberately not the identity (gamma and var in [0.5, 1.5], beta
//! and mean in [-0.1, 0.1]), so a run exercises them. Each tensor has its own random stream,
//! derived from the seed and the tensor's name, so adding a layer does not change the others.

use super::errors;
use super::tensor::Tensor;
use crate::diag::Diagnostic;
use crate::ir::op::Op;
use crate::ir::Graph;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// What a tensor is for; decides its initialization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Weight { fan_in: usize },
    Bias { fan_in: usize },
    Gamma,
    Beta,
    Mean,
    Var,
}

/// A tensor the network expects.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

/// Every tensor the graph's nodes own, in topological order of the nodes.
pub fn expected(graph: &Graph) -> Vec<Spec> {
    let mut specs = Vec::new();
    let order = graph.topo_order().unwrap_or_else(|| graph.g.node_indices().collect());
    for ix in order {
        let node = graph.node(ix);
        let input = graph
            .inputs_of(ix)
            .first()
            .map(|&i| graph.node(i).shape.0.clone())
            .unwrap_or_default();
        let mut push = |suffix: &str, shape: Vec<usize>, role: Role| {
            specs.push(Spec {
                name: format!("{}.{suffix}", node.name),
                shape,
                role,
            });
        };
        match &node.op {
            Op::Conv(c) => {
                let cin_g = input[1] / c.groups;
                let fan_in = cin_g * c.kernel.0 * c.kernel.1;
                push(
                    "weight",
                    vec![c.out_channels, cin_g, c.kernel.0, c.kernel.1],
                    Role::Weight { fan_in },
                );
                if c.bias {
                    push("bias", vec![c.out_channels], Role::Bias { fan_in });
                }
            }
            Op::Dense { out_features, bias } => {
                let fan_in = input[1];
                push("weight", vec![*out_features, fan_in], Role::Weight { fan_in });
                if *bias {
                    push("bias", vec![*out_features], Role::Bias { fan_in });
                }
            }
            Op::BatchNorm { .. } => {
                let c = input[1];
                push("gamma", vec![c], Role::Gamma);
                push("beta", vec![c], Role::Beta);
                push("mean", vec![c], Role::Mean);
                push("var", vec![c], Role::Var);
            }
            _ => {}
        }
    }
    specs
}

/// A set of named tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

/// FNV-1a, to derive a stream per tensor name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn draw(spec: &Spec, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash(&spec.name));
    let n: usize = spec.shape.iter().product();
    let uniform = |lo: f32, hi: f32| Uniform::new(lo, hi).expect("bounds are finite and ordered");
    let data: Vec<f32> = match spec.role {
        Role::Weight { fan_in } => {
            let normal = Normal::new(0.0f32, (2.0 / fan_in.max(1) as f32).sqrt()).expect("std is finite");
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        }
        Role::Bias { fan_in } => {
            let b = 1.0 / (fan_in.max(1) as f32).sqrt();
            let u = uniform(-b, b);
            (0..n).map(|_| u.sample(&mut rng)).collect()
        }
        Role::Gamma | Role::Var => {
            let u = uniform(0.5, 1.5);
            (0..n).map(|_| u.sample(&mut rng)).collect()
        }
        Role::Beta | Role::Mean => {
            let u = uniform(-0.1, 0.1);
            (0..n).map(|_| u.sample(&mut rng)).collect()
        }
    };
    Tensor::new(spec.shape.clone(), data)
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// Converts one stored tensor to f32, or says why it cannot.
fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, Diagnostic> {
    let chunks = |size: usize| bytes.chunks_exact(size);
    Ok(match dtype {
        Dtype::F32 => chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => chunks(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => return Err(errors::tensor_dtype(name, &dtype_name(other))),
    })
}

impl Weights {
    /// The seeded initialization of every tensor the graph expects.
    pub fn init(graph: &Graph, seed: u64) -> Weights {
        Weights {
            tensors: expected(graph)
                .iter()
                .map(|s| (s.name.clone(), draw(s, seed)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Checks that the tensors are exactly those the graph expects, with the right shapes.
    pub fn check(&self, graph: &Graph, source: &str) -> Result<(), Diagnostic> {
        let specs = expected(graph);
        for s in &specs {
            match self.tensors.get(&s.name) {
                None => return Err(errors::missing_in_file(source, &s.name, &s.shape)),
                Some(t) if t.shape != s.shape => return Err(errors::tensor_shape(source, &s.name, &s.shape, &t.shape)),
                Some(_) => {}
            }
        }
        if let Some(extra) = self.tensors.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(errors::unexpected_tensor(source, extra, &names));
        }
        Ok(())
    }

    /// Parses a safetensors file's bytes (f32; f16, bf16 and f64 are converted).
    pub fn from_safetensors(bytes: &[u8], source: &str) -> Result<Weights, Diagnostic> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| errors::corrupt_weights(source, &e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = to_f32(&name, view.dtype(), view.data())?;
            let shape = view.shape().to_vec();
            if shape.iter().product::<usize>() != data.len() {
                return Err(errors::corrupt_weights(
                    source,
                    &format!("tensor `{name}` has the wrong number of bytes"),
                ));
            }
            tensors.insert(name, Tensor::new(shape, data));
        }
        Ok(Weights { tensors })
    }

    /// Loads a safetensors file and checks it against the graph.
    pub fn load(path: &Path, graph: &Graph) -> Result<Weights, Diagnostic> {
        let source = path.display().to_string();
        let expected_bytes: u64 = expected(graph)
            .iter()
            .map(|s| s.shape.iter().product::<usize>() as u64 * 8)
            .sum();
        let size = std::fs::metadata(path)
            .map_err(|e| errors::unreadable(&source, &e.to_string()))?
            .len();
        // A valid file holds at most the expected tensors in f64, plus a header.
        if size > expected_bytes + (16 << 20) {
            return Err(errors::weights_too_large(&source, size, expected_bytes + (16 << 20)));
        }
        let bytes = std::fs::read(path).map_err(|e| errors::unreadable(&source, &e.to_string()))?;
        let weights = Weights::from_safetensors(&bytes, &source)?;
        weights.check(graph, &source)?;
        Ok(weights)
    }

    /// The tensors as a safetensors file (f32, little-endian).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, Diagnostic> {
        let buffers: Vec<(&String, &Tensor, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| (name, t, t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let views = buffers
            .iter()
            .map(|(name, t, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), bytes)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| errors::internal(&e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize(views, None).map_err(|e| errors::internal(&e.to_string()))
    }

    pub fn save(&self, path: &Path) -> Result<(), Diagnostic> {
        let bytes = self.to_safetensors()?;
        std::fs::write(path, bytes).map_err(|e| errors::unwritable(&path.display().to_string(), &e.to_string()))
    }
}
