//! The graph IR: a petgraph `StableGraph` of nodes (op, hierarchical name, source span, output
//! shape) whose edges carry the input port. Node indices stay valid when passes remove nodes.
//!
//! - `op.rs` the operations, plain data;
//! - `shape.rs` the shape rule of every op;
//! - `verify.rs` the invariants checked after every pass;
//! - `print.rs` the deterministic text form the snapshot tests hold;
//! - `dot.rs` Graphviz output.

pub mod dot;
pub mod op;
pub mod print;
pub mod shape;
pub mod verify;

use crate::source::Span;
use op::Op;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use shape::Shape;
use std::collections::BinaryHeap;

pub use petgraph::stable_graph::NodeIndex as NodeId;

/// What a node costs, filled in by the cost pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Cost {
    /// Trainable parameters: weights, biases, batchnorm scale and shift.
    pub params: u64,
    /// Multiply-accumulates of conv and dense layers.
    pub macs: u64,
    /// Bytes of the node's f32 output.
    pub activation_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// Hierarchical name, unique in the graph (`stage2.unit3.expand`).
    pub name: String,
    pub op: Op,
    pub shape: Shape,
    /// The source text that created the node.
    pub span: Span,
    pub cost: Option<Cost>,
}

/// An edge feeds the source node's output into input `port` of the target node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub port: usize,
}

/// A hyperparameter value as the network was compiled with it.
#[derive(Clone, Debug, PartialEq)]
pub enum HyperValue {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl std::fmt::Display for HyperValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HyperValue::Int(v) => write!(f, "{v}"),
            HyperValue::Float(v) => write!(f, "{v:?}"),
            HyperValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The network's name.
    pub name: String,
    /// Hyperparameters with the values used, in declaration order.
    pub hyper: Vec<(String, HyperValue)>,
    pub g: StableDiGraph<Node, Edge>,
    pub inputs: Vec<NodeIndex>,
    pub outputs: Vec<NodeIndex>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node fed by `inputs` (in port order).
    pub fn add(&mut self, node: Node, inputs: &[NodeIndex]) -> NodeIndex {
        let ix = self.g.add_node(node);
        for (port, &src) in inputs.iter().enumerate() {
            self.g.add_edge(src, ix, Edge { port });
        }
        ix
    }

    pub fn node(&self, ix: NodeIndex) -> &Node {
        &self.g[ix]
    }

    pub fn node_mut(&mut self, ix: NodeIndex) -> &mut Node {
        &mut self.g[ix]
    }

    /// The producers of a node's inputs, in port order.
    pub fn inputs_of(&self, ix: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(usize, NodeIndex)> = self
            .g
            .edges_directed(ix, Direction::Incoming)
            .map(|e| (e.weight().port, e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// The consumers of a node's output (each once), in index order.
    pub fn users_of(&self, ix: NodeIndex) -> Vec<NodeIndex> {
        let mut users: Vec<NodeIndex> = self.g.neighbors_directed(ix, Direction::Outgoing).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// Nodes in a deterministic topological order: among ready nodes, the oldest first.
    /// Returns `None` if the graph has a cycle.
    pub fn topo_order(&self) -> Option<Vec<NodeIndex>> {
        let mut pending: std::collections::HashMap<NodeIndex, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<std::cmp::Reverse<NodeIndex>> = pending
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| std::cmp::Reverse(n))
            .collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(std::cmp::Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = pending.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(std::cmp::Reverse(e.target()));
                }
            }
        }
        (order.len() == self.g.node_count()).then_some(order)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }
}
