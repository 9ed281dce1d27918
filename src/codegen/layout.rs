//! Where every tensor lives while the network runs.
//!
//! Activations are channels-last (NHWC) inside the arena: a 1x1 convolution is then a matrix
//! multiply over contiguous rows of channels, a depthwise convolution vectorizes over contiguous
//! channels, and a channel slice of a tensor is a fixed offset with the same pixel stride. Flat
//! tensors (`[N, F]`) are stored as `N` pixels of `F` channels. The user-facing input and output stay
//! NCHW; the executor converts them at the edges.
//!
//! Which buffer a node lives in, and where its channels sit in that buffer's pixels, is decided
//! by the `place` pass; the `plan` pass gives each buffer its arena offset. This module turns
//! those decisions into [`Buf`]s for the kernels.

use crate::ir::{Graph, NodeId};
use crate::passes::place::contiguous;

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

/// The buffer of node `ix` as the `place` and `plan` passes left it: the node's shape at
/// channel slot `base` of its buffer's pixels.
pub fn buf_at(graph: &Graph, ix: NodeId, base: usize) -> Buf {
    let place = graph.node(ix).place.as_ref().expect("the graph is placed");
    let buffer = &graph.buffers[place.buffer];
    let offset = buffer.offset.expect("the graph is planned") + base;
    let mut b = Buf::dense(offset, &graph.node(ix).shape.0);
    b.stride = buffer.stride;
    b
}

/// The node's buffer at slot 0, and the slot of each of its channels.
pub fn slots(graph: &Graph, ix: NodeId) -> (Buf, &[usize]) {
    let place = graph.node(ix).place.as_ref().expect("the graph is placed");
    (buf_at(graph, ix, 0), &place.slots)
}

/// A tensor whose channels are a permutation of a contiguous range: the buffer at the range's
/// start, and the position of each logical channel in it.
pub fn permuted(graph: &Graph, ix: NodeId) -> (Buf, Vec<usize>) {
    let (_, slots) = slots(graph, ix);
    let (base, rel) = contiguous(slots).expect("the placement gives this kernel contiguous channels");
    (buf_at(graph, ix, base), rel)
}

/// A scratch buffer of the planned graph, holding `shape` with contiguous channels.
pub fn scratch(graph: &Graph, buffer: usize, shape: &[usize]) -> Buf {
    Buf::dense(graph.buffers[buffer].offset.expect("the graph is planned"), shape)
}
