//! Where every tensor lives while the network runs.
//!
//! Activations are channels-last (NHWC) inside the arena: a 1x1 convolution is then a matrix
//! multiply over contiguous rows of channels, a depthwise convolution vectorizes over contiguous
//! channels, and a channel slice of a tensor is a fixed offset with the same pixel stride. Flat
//! tensors (`[N, F]`) are stored as `N` pixels of `F` channels. The user-facing input and output stay
//! NCHW; the executor converts them at the edges.
//!
//! Each node gets its own region of one arena (memory reuse is the memory planner's job);
//! dropout aliases its input, and so does a flatten whose input has a 1x1 plane.

use crate::ir::op::Op;
use crate::ir::{Graph, NodeId};
use std::collections::HashMap;

/// A tensor in the arena: element `(n, y, x, c)` is at
/// `offset + ((n * h + y) * w + x) * stride + c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub offset: usize,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Elements between consecutive pixels (`c` for a dense tensor).
    pub stride: usize,
}

impl Buf {
    /// The NHWC view of a logical NCHW or NF shape at `offset`.
    pub fn dense(offset: usize, shape: &[usize]) -> Buf {
        match *shape {
            [n, c, h, w] => Buf {
                offset,
                n,
                h,
                w,
                c,
                stride: c,
            },
            [n, f] => Buf {
                offset,
                n,
                h: 1,
                w: 1,
                c: f,
                stride: f,
            },
            _ => unreachable!("tensors are rank 2 or 4"),
        }
    }

    pub fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }

    /// Elements the buffer spans.
    pub fn span(&self) -> usize {
        self.pixels() * self.stride
    }

    /// Element index of pixel `(n, y, x)`, channel 0.
    pub fn at(&self, n: usize, y: usize, x: usize) -> usize {
        self.offset + ((n * self.h + y) * self.w + x) * self.stride
    }
}

/// The arena layout of a graph.
pub struct Plan {
    pub bufs: HashMap<NodeId, Buf>,
    /// Arena length in f32 elements.
    pub len: usize,
}

/// Whether a node's output is its input's buffer, reinterpreted.
pub fn is_view(graph: &Graph, ix: NodeId) -> bool {
    match &graph.node(ix).op {
        Op::Dropout { .. } => true,
        Op::Flatten => {
            let input = graph.inputs_of(ix)[0];
            let s = &graph.node(input).shape.0;
            s.len() == 2 || (s[2] == 1 && s[3] == 1)
        }
        _ => false,
    }
}

/// Gives every node a buffer, in topological order; views share their input's memory.
pub fn plan(graph: &Graph) -> Plan {
    let mut bufs = HashMap::new();
    let mut len = 0usize;
    for ix in graph.topo_order().expect("the verifier rejects cycles") {
        let shape = &graph.node(ix).shape.0;
        let buf = if is_view(graph, ix) {
            let src: Buf = bufs[&graph.inputs_of(ix)[0]];
            Buf::dense(src.offset, shape)
        } else {
            let b = Buf::dense(len, shape);
            // Keep every buffer 64-byte aligned.
            len += b.span().div_ceil(16) * 16;
            b
        };
        bufs.insert(ix, buf);
    }
    Plan { bufs, len }
}
