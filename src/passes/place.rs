//! Placement: decides, for every node, which kernel computes it (or that none does), which
//! buffer its output lives in, and where each of its channels sits inside a pixel of that buffer
//! ([`Place`]). Activations are channels-last; a buffer holds `pixels x stride` elements.
//!
//! Channel movement becomes bookkeeping here:
//!
//! - a **slice** (channel split) is a view: its slots are a sub-list of its input's;
//! - a **shuffle** is a view: its slots are its input's, permuted. When its input comes from a
//!   matrix-multiply kernel used by nothing else, that kernel writes its channels in shuffled
//!   order instead (its weights are permuted at code generation), so the view is the identity;
//! - a **concat** is a view of one buffer its inputs' kernels write straight into. When one input
//!   is already a view of a buffer whose other channels are dead by the time the other inputs are
//!   computed (ShuffleNet V2's channel split: the half that passes through, and the branch that
//!   replaces the other half), the concat reuses that buffer and the other inputs are written
//!   into the freed channels, wherever they are;
//! - a **flatten** of a 1x1 plane and a **dropout** are views of their input.
//!
//! Kernels read their inputs where they are when they can: a matrix multiply reads any channel
//! slots (each k-step has its own constant offset); channel-wise kernels (depthwise convolution,
//! pooling, elementwise ops) and the sliding-window dense convolution read any permutation of a
//! contiguous channel range, and channel-wise kernels keep that permutation in their output. An
//! input a kernel cannot read in place is first gathered into a scratch buffer ([`Place::staged`]).
//!
//! A fused block (see `fuse_blocks`) also gets a scratch buffer for its row rings
//! ([`Place::scratch`]), live only while it runs.
//!
//! A 1x1 convolution whose fused residual dies with it writes its output over the residual (its
//! epilogue reads each residual element just before it writes the same element).
//!
//! Graph outputs always have contiguous channels in order, which the executor reads.

use super::Pass;
use crate::codegen::layout::Buf;
use crate::ir::op::{Conv, Hw, Op, Pad};
use crate::ir::shape::{self, Shape};
use crate::ir::{Buffer, Graph, Kernel, NodeId, Place, Runs};
use std::collections::{HashMap, HashSet};

pub struct Placement;

impl Pass for Placement {
    fn name(&self) -> &'static str {
        "place"
    }

    fn run(&self, graph: &mut Graph) -> Result<(), String> {
        let order = graph.topo_order().ok_or("the graph has a cycle")?;
        let mut p = Placer::new(graph, order);
        p.place_all();
        let Placer { places, buffers, .. } = p;
        for (ix, place) in places {
            graph.node_mut(ix).place = Some(place);
        }
        graph.buffers = buffers;
        graph.arena = None;
        Ok(())
    }
}

/// The kernel family of a node, before views are decided (concat, slice and shuffle are views
/// here; a flatten of a 1x1 plane too).
pub fn runs(graph: &Graph, ix: NodeId) -> Runs {
    let node = graph.node(ix);
    let input = || &graph.node(graph.op_inputs_of(ix)[0]).shape.0;
    Runs::Kernel(match &node.op {
        Op::Input => return Runs::Input,
        Op::Dropout { .. } | Op::Concat | Op::Slice { .. } | Op::Shuffle { .. } => return Runs::View,
        Op::Flatten => {
            let s = input();
            if s.len() == 2 || (s[2] == 1 && s[3] == 1) {
                return Runs::View;
            }
            Kernel::Gather
        }
        Op::Conv(c) => conv_kernel(c, input(), &conv_shape(graph, ix).0),
        Op::Dense { .. } => Kernel::Gemm,
        Op::Pool(_) => Kernel::Pool,
        Op::GlobalPool(_) => Kernel::GlobalPool,
        Op::BatchNorm { .. } => Kernel::ScaleShift,
        Op::Act(_) => Kernel::Map,
        Op::Add => Kernel::Add,
        Op::Softmax => Kernel::Softmax,
        Op::Block(_) => Kernel::Block,
    })
}

/// The shape of convolution `ix`'s own result: its node's shape, or with a fused pooling (see
/// `fuse`), what the pooling reads.
pub fn conv_shape(graph: &Graph, ix: NodeId) -> Shape {
    let node = graph.node(ix);
    let input = &graph.node(graph.op_inputs_of(ix)[0]).shape;
    match node.fused.pool {
        Some(_) => shape::infer(&node.op, &[input]).unwrap_or_else(|_| node.shape.clone()),
        None => node.shape.clone(),
    }
}

/// The kernel of convolution `c` from `input` to `out` (NCHW shapes).
pub fn conv_kernel(c: &Conv, input: &[usize], out: &[usize]) -> Kernel {
    let in_c = input[1];
    let pointwise = c.kernel == Hw(1, 1) && c.stride == Hw(1, 1) && c.pad == Pad::default();
    let (input_buf, out_buf) = (Buf::dense(0, input), Buf::dense(0, out));
    let border_ok = || crate::codegen::kernels::window::fits(c, &input_buf, &out_buf);
    if c.groups == in_c && c.out_channels == in_c {
        if border_ok() {
            Kernel::Depthwise
        } else {
            Kernel::Conv
        }
    } else if pointwise {
        Kernel::Gemm
    } else if c.groups == 1 && border_ok() {
        Kernel::Direct
    } else {
        Kernel::Conv
    }
}

/// What a kernel needs of the channel slots of the tensors it reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Any slots (matrix multiply).
    Any,
    /// A permutation of a contiguous range; the output keeps the permutation.
    ChannelWise,
    /// A permutation of a contiguous range; the output order is free.
    Permuted,
    /// Contiguous, in order.
    Ordered,
}

fn reads(k: Kernel) -> Reads {
    match k {
        Kernel::Gemm | Kernel::Gather => Reads::Any,
        Kernel::Depthwise | Kernel::Pool | Kernel::GlobalPool | Kernel::Map | Kernel::Add | Kernel::ScaleShift => {
            Reads::ChannelWise
        }
        Kernel::Direct | Kernel::Block => Reads::Permuted,
        Kernel::Conv | Kernel::Softmax => Reads::Ordered,
    }
}

/// Elements between the pixels of a new kernel output buffer of `c` channels.
///
/// Kernels that slide a window read the same channels of several neighbouring pixels in a row,
/// and a window kernel reads several input rows. When a pixel spans a multiple of 2 KiB
/// (512, 1024 or 2048 channels), all those lines fall into one or two of the 64 sets of a
/// 32 KiB 8-way L1 and evict each other before the next channel group comes back to them: a 3x3
/// depthwise convolution over 7x7x1024 ran at 9 GFLOP/s, and at 25 over 1040 channels. One
/// spare cache line per pixel moves consecutive pixels to consecutive sets.
pub fn pixel_stride(c: usize, pixels: usize) -> usize {
    if pixels > 1 && c.is_multiple_of(512) {
        c + 16
    } else {
        c
    }
}

/// Whether every reader of `ix` takes its channels in any order at no cost: a matrix multiply
/// (an offset per k-step), a kernel that absorbs the order into its weights, or a channel-wise
/// kernel whose own readers are matrix multiplies (ShuffleNet's shuffle, depthwise convolution,
/// grouped 1x1 convolution). A matrix multiply writing in a shuffle's order scatters every
/// column; reading the shuffled channels through offsets instead measured ShuffleNet's grouped
/// 1x1 layers before the shuffles 6-8% faster and the others unchanged.
fn any_order(graph: &Graph, ix: NodeId) -> bool {
    let kernel_reads = |n: NodeId| match runs(graph, n) {
        Runs::Kernel(k) => Some(reads(k)),
        _ => None,
    };
    let users = graph.users_of(ix);
    !users.is_empty()
        && users.iter().all(|&u| match kernel_reads(u) {
            Some(Reads::Any | Reads::Permuted) => true,
            Some(Reads::ChannelWise) => {
                let next = graph.users_of(u);
                !graph.outputs.contains(&u)
                    && !next.is_empty()
                    && next.iter().all(|&w| kernel_reads(w) == Some(Reads::Any))
            }
            _ => false,
        })
}

/// `slots` as `base + perm`, when they are a permutation of a contiguous range.
pub fn contiguous(slots: &[usize]) -> Option<(usize, Vec<usize>)> {
    let base = *slots.iter().min()?;
    let rel: Vec<usize> = slots.iter().map(|&s| s - base).collect();
    let mut seen = vec![false; slots.len()];
    for &r in &rel {
        if r >= slots.len() || std::mem::replace(&mut seen[r], true) {
            return None;
        }
    }
    Some((base, rel))
}

fn is_identity(rel: &[usize]) -> bool {
    rel.iter().enumerate().all(|(i, &r)| i == r)
}

/// Logical channel `j` of a shuffle's output is channel `src(j)` of its input.
pub fn shuffle_source(channels: usize, groups: usize, j: usize) -> usize {
    let per = channels / groups;
    (j % groups) * per + j / groups
}

fn pixels(shape: &[usize]) -> usize {
    shape[0] * shape.get(2).unwrap_or(&1) * shape.get(3).unwrap_or(&1)
}

/// A concat's buffer, and the slots each of its pending parts writes.
type Assignment = (usize, Vec<(NodeId, Vec<usize>)>);

struct Placer<'g> {
    graph: &'g Graph,
    order: Vec<NodeId>,
    index: HashMap<NodeId, usize>,
    places: HashMap<NodeId, Place>,
    buffers: Vec<Buffer>,
    /// Concat inputs whose placement waits for their concat.
    deferred: HashSet<NodeId>,
    /// Where a deferred node must write: its concat's buffer and one slot per channel.
    targets: HashMap<NodeId, (usize, Vec<usize>)>,
}

impl<'g> Placer<'g> {
    fn new(graph: &'g Graph, order: Vec<NodeId>) -> Placer<'g> {
        let index = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut deferred = HashSet::new();
        for &ix in &order {
            if graph.node(ix).op != Op::Concat || graph.outputs.contains(&ix) {
                continue;
            }
            let parts = graph.inputs_of(ix);
            for &p in &parts {
                let once = parts.iter().filter(|&&q| q == p).count() == 1;
                let kernel = matches!(runs(graph, p), Runs::Kernel(_));
                if once && kernel && graph.users_of(p) == [ix] && !graph.outputs.contains(&p) {
                    deferred.insert(p);
                }
            }
        }
        Placer {
            graph,
            order,
            index,
            places: HashMap::new(),
            buffers: Vec::new(),
            deferred,
            targets: HashMap::new(),
        }
    }

    fn shape(&self, ix: NodeId) -> &'g [usize] {
        &self.graph.node(ix).shape.0
    }

    fn channels(&self, ix: NodeId) -> usize {
        self.shape(ix)[1]
    }

    fn new_buffer(&mut self, owner: NodeId, pixels: usize, stride: usize) -> usize {
        self.buffers.push(Buffer {
            owner: self.graph.node(owner).name.clone(),
            pixels,
            stride,
            offset: None,
        });
        self.buffers.len() - 1
    }

    fn place_all(&mut self) {
        for i in 0..self.order.len() {
            let ix = self.order[i];
            if !self.deferred.contains(&ix) {
                self.place(ix);
            }
        }
    }

    fn place(&mut self, ix: NodeId) {
        let graph = self.graph;
        let node = graph.node(ix);
        let is_output = graph.outputs.contains(&ix);
        let place = match runs(graph, ix) {
            Runs::Input => {
                let b = self.new_buffer(ix, pixels(self.shape(ix)), self.channels(ix));
                Place {
                    buffer: b,
                    slots: (0..self.channels(ix)).collect(),
                    runs: Runs::Input,
                    staged: vec![],
                    scratch: None,
                }
            }
            Runs::View => match &node.op {
                Op::Concat => self.place_concat(ix),
                _ => {
                    let src = &self.places[&graph.inputs_of(ix)[0]];
                    let slots = match node.op {
                        Op::Slice { start, end } => src.slots[start..end].to_vec(),
                        Op::Shuffle { groups } => {
                            let c = src.slots.len();
                            (0..c).map(|j| src.slots[shuffle_source(c, groups, j)]).collect()
                        }
                        _ => src.slots.clone(),
                    };
                    Place {
                        buffer: src.buffer,
                        slots,
                        runs: Runs::View,
                        staged: vec![],
                        scratch: None,
                    }
                }
            },
            Runs::Kernel(k) => {
                let mut place = self.place_kernel(ix, k);
                if let Op::Block(b) = &node.op {
                    let input = self.shape(graph.op_inputs_of(ix)[0]);
                    let len = crate::codegen::kernels::block::Geometry::of(b, input, node.fused.residual).scratch_len();
                    place.scratch = Some(self.new_buffer(ix, 1, len));
                }
                if let Some(pool) = &node.fused.pool {
                    let (w, c) = (conv_shape(graph, ix).0[3], node.shape.0[1]);
                    let len = crate::codegen::kernels::conv_pool::scratch_len(pool, w, c);
                    place.scratch = Some(self.new_buffer(ix, 1, len));
                }
                place
            }
        };
        // Outputs must be contiguous and in order: a view that is not becomes a copy.
        let place = if is_output && place.runs == Runs::View && !self.ordered(&place.slots) {
            self.fresh(ix, Kernel::Gather)
        } else {
            place
        };
        self.places.insert(ix, place);
    }

    fn ordered(&self, slots: &[usize]) -> bool {
        contiguous(slots).is_some_and(|(_, rel)| is_identity(&rel))
    }

    /// A new buffer of exactly the node's channels, in order.
    fn fresh(&mut self, ix: NodeId, k: Kernel) -> Place {
        let c = self.channels(ix);
        let b = self.new_buffer(ix, pixels(self.shape(ix)), c);
        Place {
            buffer: b,
            slots: (0..c).collect(),
            runs: Runs::Kernel(k),
            staged: vec![],
            scratch: None,
        }
    }

    fn place_kernel(&mut self, ix: NodeId, k: Kernel) -> Place {
        let graph = self.graph;
        let node = graph.node(ix);
        // A flatten that copies reorders pixels, so it reads its input in order.
        let mode = if node.op == Op::Flatten {
            Reads::Ordered
        } else {
            reads(k)
        };
        let op_inputs = graph.op_inputs_of(ix);
        let residual = node
            .fused
            .residual
            .then(|| *graph.inputs_of(ix).last().expect("residual"));
        let is_output = graph.outputs.contains(&ix);
        let mut staged = Vec::new();
        // The permutation the output keeps (channel-wise kernels), after any staging.
        let mut keep: Option<Vec<usize>> = None;
        for (port, &input) in op_inputs.iter().enumerate() {
            let slots = &self.places[&input].slots;
            let fits = match mode {
                Reads::Any => true,
                Reads::Permuted => contiguous(slots).is_some(),
                Reads::ChannelWise => match contiguous(slots) {
                    Some((_, rel)) => match &keep {
                        None => {
                            // An output must come out in order, so its input must be too.
                            let ok = !is_output || is_identity(&rel);
                            if ok {
                                keep = Some(rel);
                            }
                            ok
                        }
                        Some(k) => *k == rel,
                    },
                    None => false,
                },
                Reads::Ordered => self.ordered(slots),
            };
            if !fits {
                staged.push(port);
            }
        }
        if mode == Reads::ChannelWise && !staged.is_empty() {
            // Staged inputs come in order; the others must then be in order too.
            keep = None;
            staged.clear();
            for (port, &input) in op_inputs.iter().enumerate() {
                if !self.ordered(&self.places[&input].slots) {
                    staged.push(port);
                }
            }
        }
        let c = self.channels(ix);
        let rel: Vec<usize> = keep.unwrap_or_else(|| (0..c).collect());
        // The residual is read at the output's permutation by every kernel but the matrix
        // multiply, which reads any slots.
        if let Some(r) = residual {
            let slots = &self.places[&r].slots;
            let fits = match mode {
                Reads::Any => true,
                _ => contiguous(slots).is_some_and(|(_, rr)| rr == rel),
            };
            if !fits {
                staged.push(op_inputs.len());
            }
        }
        let staged: Vec<(usize, usize)> = staged
            .into_iter()
            .map(|port| {
                let input = graph.inputs_of(ix)[port];
                let b = self.new_buffer(ix, pixels(self.shape(input)), self.channels(input));
                (port, b)
            })
            .collect();
        let residual_staged = staged.iter().any(|&(p, _)| p == op_inputs.len());
        let rel = if residual_staged && mode != Reads::Any {
            // A staged residual is in order, so the output must be too.
            (0..c).collect()
        } else {
            rel
        };

        if let Some((buffer, slots)) = self.targets.get(&ix).cloned() {
            // A concat input: write into the concat's buffer.
            let slots = match contiguous(&slots) {
                Some((base, _)) if mode == Reads::ChannelWise => rel.iter().map(|&r| base + r).collect(),
                _ => slots,
            };
            return Place {
                buffer,
                slots,
                runs: Runs::Kernel(k),
                staged,
                scratch: None,
            };
        }

        // Over a residual that dies here: the matrix multiply reads each residual element just
        // before it writes the same element (the window kernels want them apart).
        if let Some(r) = residual.filter(|_| !residual_staged && k == Kernel::Gemm && !is_output) {
            let rp = &self.places[&r];
            let b = rp.buffer;
            let input_buffers: Vec<usize> = op_inputs.iter().map(|i| self.places[i].buffer).collect();
            let whole = contiguous(&rp.slots).is_some_and(|(base, _)| base == 0)
                && self.buffers[b].stride == pixel_stride(c, pixels(self.shape(ix)))
                && self.buffers[b].pixels == pixels(self.shape(ix));
            if whole && !input_buffers.contains(&b) && b != self.input_buffer() && self.dies_at(b, ix) {
                return Place {
                    buffer: b,
                    slots: rp.slots.clone(),
                    runs: Runs::Kernel(k),
                    staged,
                    scratch: None,
                };
            }
        }

        let px = pixels(self.shape(ix));
        let stride = if is_output { c } else { pixel_stride(c, px) };
        let b = self.new_buffer(ix, px, stride);
        let mut slots = rel;
        if k == Kernel::Gemm && !is_output {
            // Write in the order of a shuffle that is the only consumer, so the shuffle is the
            // identity view, unless the shuffle's readers take its channels in any order anyway.
            if let [user] = graph.users_of(ix)[..] {
                if let Op::Shuffle { groups } = graph.node(user).op {
                    if !graph.outputs.contains(&user) && !any_order(graph, user) {
                        for j in 0..c {
                            slots[shuffle_source(c, groups, j)] = j;
                        }
                    }
                }
            }
        }
        Place {
            buffer: b,
            slots,
            runs: Runs::Kernel(k),
            staged,
            scratch: None,
        }
    }

    fn input_buffer(&self) -> usize {
        self.places[&self.graph.inputs[0]].buffer
    }

    /// Whether nothing in buffer `b` is read after node `ix` (nor is a graph output).
    fn dies_at(&self, b: usize, ix: NodeId) -> bool {
        let at = self.index[&ix];
        self.places
            .iter()
            .filter(|(_, p)| p.buffer == b)
            .all(|(&n, _)| self.last_use(n) <= at && !self.graph.outputs.contains(&n))
    }

    /// The position of the last node that reads `ix`.
    fn last_use(&self, ix: NodeId) -> usize {
        self.graph
            .users_of(ix)
            .iter()
            .map(|u| self.index[u])
            .max()
            .unwrap_or(self.index[&ix])
    }

    fn place_concat(&mut self, ix: NodeId) -> Place {
        let graph = self.graph;
        let parts = graph.inputs_of(ix);
        let pending: Vec<NodeId> = parts.iter().copied().filter(|p| self.deferred.contains(p)).collect();
        let placed: Vec<NodeId> = parts.iter().copied().filter(|p| !self.deferred.contains(p)).collect();
        let px = pixels(self.shape(ix));
        let total = self.channels(ix);

        let decided: Option<Assignment> = if placed.is_empty() {
            // All parts are computed here: a new buffer, one channel range each.
            let b = self.new_buffer(ix, px, total);
            let mut at = 0;
            let ranges = parts
                .iter()
                .map(|&p| {
                    let c = self.channels(p);
                    at += c;
                    (p, (at - c..at).collect())
                })
                .collect();
            Some((b, ranges))
        } else if let [kept] = placed[..] {
            self.reuse(ix, kept, &pending)
        } else {
            None
        };

        match decided {
            Some((buffer, assigned)) => {
                for (p, slots) in &assigned {
                    self.targets.insert(*p, (buffer, slots.clone()));
                }
                for &p in &pending {
                    self.place(p);
                }
                let slots = parts.iter().flat_map(|p| self.places[p].slots.clone()).collect();
                Place {
                    buffer,
                    slots,
                    runs: Runs::View,
                    staged: vec![],
                    scratch: None,
                }
            }
            None => {
                for &p in &pending {
                    self.place(p);
                }
                self.fresh(ix, Kernel::Gather)
            }
        }
    }

    /// A concat whose one already-placed part `kept` lives in a buffer whose other channels are
    /// free by the time the pending parts are computed: the pending parts take those channels.
    fn reuse(&mut self, ix: NodeId, kept: NodeId, pending: &[NodeId]) -> Option<Assignment> {
        let kp = &self.places[&kept];
        let b = kp.buffer;
        let buf = &self.buffers[b];
        if buf.pixels != pixels(self.shape(ix)) || b == self.input_buffer() {
            return None;
        }
        let used: HashSet<usize> = kp.slots.iter().copied().collect();
        let free: Vec<usize> = (0..buf.stride).filter(|s| !used.contains(s)).collect();
        let need: usize = pending.iter().map(|&p| self.channels(p)).sum();
        if free.len() != need || pending.is_empty() {
            return None;
        }
        // Every value in the buffer that overlaps the free channels is dead before the first
        // pending part runs.
        let first = pending.iter().map(|p| self.index[p]).min().expect("pending parts");
        let free_set: HashSet<usize> = free.iter().copied().collect();
        let clear = self.places.iter().filter(|(_, p)| p.buffer == b).all(|(&n, p)| {
            !p.slots.iter().any(|s| free_set.contains(s))
                || (self.last_use(n) < first && !self.graph.outputs.contains(&n))
        });
        if !clear {
            return None;
        }
        let mut at = 0;
        let mut assigned = Vec::new();
        for &p in pending {
            let c = self.channels(p);
            let slots = free[at..at + c].to_vec();
            at += c;
            // Only the matrix multiply writes channels that are not a contiguous range.
            let writable = contiguous(&slots).is_some() || runs(self.graph, p) == Runs::Kernel(Kernel::Gemm);
            if !writable {
                return None;
            }
            assigned.push((p, slots));
        }
        Some((b, assigned))
    }
}
