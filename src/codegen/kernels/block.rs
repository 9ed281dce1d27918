//! A fused block (`Op::Block`): an optional first stage (a 1x1 expansion or a dense convolution),
//! a depthwise convolution and a 1x1 projection with the projection's residual add, computed a
//! band of output rows at a time so that the first stage's output and the depthwise output never
//! exist in full.
//!
//! The kernel is composed from the other families' generators, each built over a small scratch
//! region at constant offsets:
//!
//! ```text
//!  input rows ──copy──▶ stage ──expand GEMM──▶ ring (L rows of the expanded tensor)
//!                                               │ depthwise, vertical padding 0
//!                                               ▼
//!  output rows ◀──────────── project GEMM ──── dw (P output rows)
//!                                 ▲
//!  residual rows ─────────────────┘
//! ```
//!
//! A band is `P` output rows; it needs `L = (P - 1) * stride + kh_eff` ring rows (`kh_eff` the
//! dilated kernel height). Consecutive bands share `carry = kh_eff - stride` rows, so a band
//! computes only its `n = L - carry` new rows. With a first stage on AVX2, when `carry <= n`, the
//! ring rotates ([`Geometry::rotates`]): it holds `2 n` rows, band `b` writes its new rows at ring
//! row `n * (b mod 2)`, and the depthwise row function reads rows modulo the ring, so the shared
//! rows never move (moving them cost MobileNetV2's blocks 2-4 0.02-0.10 ms each). Otherwise, after
//! a band, the last `carry` ring rows move to the ring's front. Ring rows outside the image (the
//! depthwise convolution's vertical padding) are zero, so the depthwise convolution runs without
//! vertical padding.
//!
//! How the ring is filled depends on the first stage:
//! - a 1x1 expansion reads a band's input rows in place when they all lie inside the image, and
//!   otherwise from the stage, where the rows are copied (zero rows for the padding);
//! - a dense convolution of any window (MobileNetV2's 3x3 stride-2 stem) computes each ring row
//!   with the window kernels' row code (`direct_wide.rs` one call per row, `direct.rs` its row
//!   loop), reading the block's input in place, kernel rows in its padding skipped: the ring's
//!   rows have the convolution's output width, and no stage is needed;
//! - without a first stage, the AVX2 depthwise row function (`depthwise_wide.rs`) reads the
//!   block's input in place, skipping the kernel rows in the padding, and no ring is filled
//!   (MobileNetV2's first block: 0.53 -> 0.38 ms, against 0.40 for its two layers unfused); the
//!   f32x4 path copies the input rows into the ring.
//!
//! The projection reads the depthwise output from the scratch region and the residual from its
//! tensor, and writes the output rows in place, at run-time row addresses ([`Gemm::emit_at`]); a
//! partial last band has a projection of its own height. The other stages see their scratch
//! region only.
//!
//! # Items and threads
//!
//! A work item is one of `slots` contiguous ranges of bands (of every image in the batch), and
//! item `i` owns scratch region `i`: items never share memory, whatever thread runs them, and
//! each item starts its ring from scratch, so every output element is computed by the same
//! operations whatever the split. The stages' generated code is emitted with the arena pointer
//! moved to the item's region.
//!
//! `P` (up to [`MAX_BAND`]) is the band of least estimated cost whose region fits the block's
//! budget (between [`MIN_SLOT_BYTES`] and [`MAX_SLOT_BYTES`], see [`LIVE_BYTES`]); `slots` is at
//! most [`SLOTS`]. The scratch buffer (`slots` regions) is what the memory planner reserves for
//! the node while it runs.

use super::depthwise_wide::DepthwiseWide;
use super::direct::Direct;
use super::direct_wide::DirectWide;
use super::gemm::{Arenas, Gemm, GemmSpec};
use super::window::{if_else, opaque_false, Epilogue};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::host::HostFn;
use crate::codegen::layout::Buf;
use crate::codegen::params::Layer;
use crate::codegen::Isa;
use crate::ir::op::{Block, Conv, Op, Pad, Stage};
use crate::ir::shape::Shape;
use crate::ir::Node;
use crate::runtime::Weights;
use crate::source::Span;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};

/// Scratch regions of a block: the most threads that share its work.
pub const SLOTS: usize = 2;
/// The smallest budget of a scratch region a band size is chosen for.
pub const MIN_SLOT_BYTES: usize = 128 << 10;
/// The largest budget of a scratch region (two of them stay in a 1 MiB L2).
pub const MAX_SLOT_BYTES: usize = 384 << 10;
/// A block's scratch grows past [`MIN_SLOT_BYTES`] only while its input, its output and its
/// scratch together stay within this many bytes, so the blocks that hold a network's peak keep
/// small regions and the others get bands tall enough to amortize the carried rows. (MobileNetV2's
/// first block, with the stem streamed into it, holds the peak: 1.75 MiB gave it 1.67 MiB of
/// arena against 2.00 with 2 MiB, at the same speed.)
pub const LIVE_BYTES: usize = 7 << 18;
/// The most output rows of a band.
pub const MAX_BAND: usize = 16;

/// Region offsets are multiples of this many f32 (64 bytes).
const ALIGN: usize = 16;

fn aligned(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// The sizes of a fused block's streaming, shared by the placement (which reserves the scratch
/// buffer) and the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub c_in: usize,
    /// Height and width of the depthwise convolution's input (the ring's rows).
    pub h_mid: usize,
    pub w_mid: usize,
    /// Channels of the depthwise convolution.
    pub hid: usize,
    pub h_out: usize,
    pub w_out: usize,
    pub c_out: usize,
    pub first: First,
    pub residual: bool,
    /// Vertical stride, dilated kernel height and top padding of the depthwise convolution.
    pub stride: usize,
    pub kh_eff: usize,
    pub pad_top: usize,
    /// Output rows per band (`P`).
    pub band: usize,
    /// Scratch regions (work items).
    pub slots: usize,
}

/// What computes a block's ring rows from its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum First {
    /// Nothing: the depthwise convolution reads the block's input.
    None,
    /// A 1x1 expansion, a matrix multiply over staged or in-place input rows.
    Expand,
    /// A dense convolution of any window, one row at a time by the window kernels.
    Dense,
}

/// Output height and width of convolution `c` over an `h x w` input.
fn window_out(c: &Conv, h: usize, w: usize) -> (usize, usize) {
    let k_eff = |k: usize, d: usize| (k - 1) * d + 1;
    let oh = (h + c.pad.top + c.pad.bottom - k_eff(c.kernel.0, c.dilation.0)) / c.stride.0 + 1;
    let ow = (w + c.pad.left + c.pad.right - k_eff(c.kernel.1, c.dilation.1)) / c.stride.1 + 1;
    (oh, ow)
}

impl Geometry {
    /// The geometry of `block` over an input of shape `[n, c, h, w]`.
    pub fn of(block: &Block, input: &[usize], residual: bool) -> Geometry {
        let d = &block.depthwise.conv;
        let hid = block.first.as_ref().map_or(input[1], |e| e.conv.out_channels);
        let first = match &block.first {
            None => First::None,
            Some(s) if s.conv.pointwise() => First::Expand,
            Some(_) => First::Dense,
        };
        let (h_mid, w_mid) = match &block.first {
            Some(s) if first == First::Dense => window_out(&s.conv, input[2], input[3]),
            _ => (input[2], input[3]),
        };
        let kh_eff = (d.kernel.0 - 1) * d.dilation.0 + 1;
        let (h_out, w_out) = window_out(d, h_mid, w_mid);
        let mut g = Geometry {
            n: input[0],
            h_in: input[2],
            w_in: input[3],
            c_in: input[1],
            h_mid,
            w_mid,
            hid,
            h_out,
            w_out,
            c_out: block.project.conv.out_channels,
            first,
            residual,
            stride: d.stride.0,
            kh_eff,
            pad_top: d.pad.top,
            band: 1,
            slots: 1,
        };
        let tensors = (g.n * g.h_in * g.w_in * g.c_in + g.n * h_out * w_out * g.c_out) * 4;
        let budget = (LIVE_BYTES.saturating_sub(tensors) / SLOTS).clamp(MIN_SLOT_BYTES, MAX_SLOT_BYTES);
        g.band = (1..=MAX_BAND.min(h_out))
            .filter(|&p| p == 1 || Geometry { band: p, ..g }.slot_len() * 4 <= budget)
            .min_by_key(|&p| (Geometry { band: p, ..g }.cost(), std::cmp::Reverse(p)))
            .unwrap_or(1);
        g.slots = SLOTS.min(g.bands());
        g
    }

    fn bands(&self) -> usize {
        self.h_out.div_ceil(self.band)
    }

    /// The estimated cost of this band height, in units of half an expanded row: every band
    /// expands its new rows, copies the carried ones (unless the ring rotates), and pays about
    /// one row of fixed costs (the stages' calls, the row copies' loops, the matrix multiply's
    /// edge tiles). The busiest item (the time on two threads) counts twice, all items (the time
    /// on one) once.
    fn cost(&self) -> usize {
        let copied = if self.rotates() { 0 } else { self.carry() };
        let band = 2 * self.band * self.stride + copied + 2;
        let bands = self.bands();
        (2 * bands.div_ceil(SLOTS) + bands) * band
    }

    /// Expanded rows a band reads (`L`).
    pub fn rows(&self) -> usize {
        (self.band - 1) * self.stride + self.kh_eff
    }

    /// Rows the next band shares with this one.
    pub fn carry(&self) -> usize {
        self.kh_eff.saturating_sub(self.stride)
    }

    /// New rows of a band, past those it shares with the previous one (`n`).
    fn new_rows(&self) -> usize {
        self.band * self.stride
    }

    /// Whether the ring can rotate instead of moving the carried rows to its front after each
    /// band: with a first stage, and a carry of at most one band's new rows, a ring of `2 * n`
    /// rows takes each band's new rows at row `n * (band index mod 2)`, in one piece, and the
    /// depthwise convolution reads its rows modulo the ring (AVX2 only; the f32x4 path moves the
    /// carried rows, in the same ring).
    pub fn rotates(&self) -> bool {
        self.first != First::None && self.carry() > 0 && self.carry() <= self.new_rows()
    }

    /// Rows of the ring: `2 * n` when it rotates, otherwise `L`.
    fn ring_rows(&self) -> usize {
        if self.rotates() {
            2 * self.new_rows()
        } else {
            self.rows()
        }
    }

    /// Element offsets inside a region: ring, stage, depthwise output; and the region's length.
    fn layout(&self) -> [usize; 4] {
        let ring = aligned(self.ring_rows() * self.w_mid * self.hid);
        let stage_rows = if self.first == First::Expand {
            self.carry().max(self.rows() - self.carry())
        } else {
            0
        };
        let stage = aligned(stage_rows * self.w_in * self.c_in);
        let dw = aligned(self.band * self.w_out * self.hid);
        let mut at = [0; 4];
        for (i, len) in [ring, stage, dw].into_iter().enumerate() {
            at[i + 1] = at[i] + len;
        }
        at
    }

    fn slot_len(&self) -> usize {
        self.layout()[3]
    }

    /// Output rows of the last band of an image.
    fn last_band(&self) -> usize {
        self.h_out - (self.bands() - 1) * self.band
    }

    /// Elements of the scratch buffer: one region per slot.
    pub fn scratch_len(&self) -> usize {
        self.slots * self.slot_len()
    }
}

/// The kernel of a fused block.
pub struct FusedBlock {
    g: Geometry,
    input: Buf,
    out: Buf,
    residual: Option<Buf>,
    /// Arena element offset of the scratch buffer.
    scratch: usize,
    /// Expansion of the first `carry` ring rows of an item, and of the new rows of every band.
    expand_first: Option<Gemm>,
    expand_next: Option<Gemm>,
    /// The same, reading the block's input rows in place: for the bands whose rows all lie
    /// inside the image.
    expand_first_at: Option<Gemm>,
    expand_next_at: Option<Gemm>,
    /// A dense first stage.
    dense: Option<DenseStage>,
    depthwise: DepthwiseStage,
    /// The projection of a band, and of a shorter last band.
    project: Gemm,
    project_last: Option<Gemm>,
}

/// How the depthwise convolution gets its input rows.
enum DepthwiseStage {
    /// From the ring, over the scratch region (rows in the vertical padding are zero there).
    Ring(Box<dyn Kernel>),
    /// Without an expansion, on AVX2: straight from the block's input, skipping the kernel rows
    /// in the padding, so no input row is copied; its output rows go to the region's `dw` part.
    Input(DepthwiseWide),
    /// From a ring that rotates ([`Geometry::rotates`]), on AVX2: rows read modulo the ring.
    Rotating(DepthwiseWide),
}

/// Ring rows to fill: rows `t0..t0 + count` of the window of the band whose first output row is
/// `y0` in image `image`, written `shift` bytes past where a ring that does not rotate holds them.
#[derive(Clone, Copy)]
struct Fill {
    image: i64,
    y0: Value,
    t0: usize,
    count: usize,
    shift: Value,
}

impl Fill {
    /// Row of the depthwise convolution's input (negative in its top padding) that ring row `t0`
    /// holds.
    fn first_row(&self, e: &mut Emit, g: &Geometry) -> Value {
        let sy = e.b.ins().imul_imm_s(self.y0, g.stride as i64);
        e.b.ins().iadd_imm_s(sy, self.t0 as i64 - g.pad_top as i64)
    }
}

/// A dense first stage: computes one row of the depthwise convolution's input into the ring,
/// reading the block's input in place (kernel rows in the padding skipped).
enum DenseStage {
    Wide(DirectWide),
    Baseline(Direct),
}

/// The parameters of a stage, with its fused batchnorms applied.
fn layer(stage: &Stage, weights: &Weights) -> Layer {
    let mut node = Node::new(
        stage.name.clone(),
        Op::Conv(stage.conv.clone()),
        Shape(vec![]),
        Span::default(),
    );
    node.fused = stage.fused.clone();
    Layer::of(&node, stage.conv.bias, stage.conv.out_channels, weights)
}

fn post(layer: &Layer) -> Option<(&[f32], &[f32])> {
    layer.post.as_ref().map(|(s, t)| (s.as_slice(), t.as_slice()))
}

fn rows_buf(offset: usize, h: usize, w: usize, c: usize) -> Buf {
    Buf {
        offset,
        n: 1,
        h,
        w,
        c,
        stride: c,
    }
}

impl FusedBlock {
    /// `input` and `out` are contiguous channel ranges holding logical channel `i` at position
    /// `in_rel[i]` / `out_rel[i]`, the residual likewise at `res_rel`; `scratch` is the arena
    /// offset of a buffer of [`Geometry::scratch_len`] elements.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        block: &Block,
        (input, in_rel): (Buf, &[usize]),
        (out, out_rel): (Buf, &[usize]),
        residual: Option<(Buf, &[usize])>,
        scratch: usize,
        weights: &Weights,
        pack: &mut Packer,
        isa: Isa,
    ) -> FusedBlock {
        let g = Geometry::of(block, &[input.n, input.c, input.h, input.w], residual.is_some());
        let [ring, stage, dw, _] = g.layout().map(|o| o + scratch);
        let (l, carry) = (g.rows(), g.carry());
        let expand = block
            .first
            .as_ref()
            .filter(|_| g.first == First::Expand)
            .map(|s| (s, layer(s, weights)));
        let expands = g.first == First::Expand;
        // Reads `count` rows from the stage, or with `in_place` from the block's input at a
        // run-time address (a band whose rows all lie inside the image).
        let expansion = |t0: usize, count: usize, in_place: bool, pack: &mut Packer| {
            let (s, w) = expand.as_ref().expect("an expansion");
            let input = if in_place {
                Buf {
                    offset: 0,
                    stride: input.stride,
                    ..rows_buf(0, count, g.w_in, g.c_in)
                }
            } else {
                rows_buf(stage, count, g.w_in, g.c_in)
            };
            let spec = GemmSpec {
                input,
                in_slots: Some(in_rel),
                out: rows_buf(ring + t0 * g.w_in * g.hid, count, g.w_in, g.hid),
                out_slots: None,
                groups: s.conv.groups,
                weight: &w.weight,
                bias: w.bias.as_deref(),
                residual: None,
                act: s.fused.act,
                post: post(w),
            };
            Gemm::new(&spec, pack, isa)
        };
        let expand_first = (expands && carry > 0).then(|| expansion(0, carry, false, pack));
        let expand_next = expands.then(|| expansion(carry, l - carry, false, pack));
        let in_place = |count: usize| expands && count > 0 && count <= g.h_in;
        let expand_first_at = in_place(carry).then(|| expansion(0, carry, true, pack));
        let expand_next_at = in_place(l - carry).then(|| expansion(carry, l - carry, true, pack));

        let dense = block.first.as_ref().filter(|_| g.first == First::Dense).map(|s| {
            let mut w = layer(s, weights);
            w.permute_inputs(in_rel, s.conv.kernel.0 * s.conv.kernel.1);
            let row = rows_buf(0, 1, g.w_mid, g.hid);
            let epilogue = Epilogue {
                act: s.fused.act,
                residual: None,
            };
            let (weight, bias) = (&w.weight, w.bias.as_deref());
            if isa.wide() {
                let k = DirectWide::new(
                    &s.conv,
                    input,
                    row,
                    weight,
                    bias,
                    epilogue,
                    post(&w),
                    pack,
                    isa.direct_level(s.conv.out_channels),
                );
                DenseStage::Wide(k)
            } else {
                DenseStage::Baseline(Direct::new(&s.conv, input, row, weight, bias, epilogue, post(&w), pack))
            }
        });

        let d = &block.depthwise;
        let mut dl = layer(d, weights);
        if g.first == First::None {
            dl.permute_outputs(in_rel);
        }
        let conv = crate::ir::op::Conv {
            pad: Pad {
                top: 0,
                bottom: 0,
                ..d.conv.pad
            },
            ..d.conv.clone()
        };
        let dw_out = rows_buf(dw, g.band, g.w_out, g.hid);
        let epilogue = Epilogue {
            act: d.fused.act,
            residual: None,
        };
        let wide = isa.wide() && DepthwiseWide::supports(&d.conv);
        let (dw_weight, dw_bias) = (&dl.weight, dl.bias.as_deref());
        let depthwise = if wide && g.first == First::None {
            let k = DepthwiseWide::new(&d.conv, input, dw_out, dw_weight, dw_bias, epilogue, post(&dl), pack);
            DepthwiseStage::Input(k)
        } else if wide && g.rotates() {
            let ring = rows_buf(ring, g.ring_rows(), g.w_mid, g.hid);
            let k = DepthwiseWide::over_ring(
                &d.conv,
                carry,
                ring,
                dw_out,
                dw_weight,
                dw_bias,
                epilogue,
                post(&dl),
                pack,
            );
            DepthwiseStage::Rotating(k)
        } else {
            DepthwiseStage::Ring(super::depthwise(
                isa,
                &conv,
                rows_buf(ring, l, g.w_mid, g.hid),
                dw_out,
                &dl.weight,
                dl.bias.as_deref(),
                epilogue,
                post(&dl),
                pack,
            ))
        };

        let p = &block.project;
        let pl = layer(p, weights);
        // `rows` output rows from the band's first one: the output and the residual are relative
        // to the addresses of that row, passed at run time.
        let projection = |rows: usize, pack: &mut Packer| {
            let strided = |stride: usize| Buf {
                stride,
                ..rows_buf(0, rows, g.w_out, g.c_out)
            };
            let spec = GemmSpec {
                input: rows_buf(dw, rows, g.w_out, g.hid),
                in_slots: (g.first == First::None).then_some(in_rel),
                out: strided(out.stride),
                out_slots: Some(out_rel),
                groups: p.conv.groups,
                weight: &pl.weight,
                bias: pl.bias.as_deref(),
                residual: residual.map(|(r, rel)| (strided(r.stride), Some(rel))),
                act: p.fused.act,
                post: post(&pl),
            };
            Gemm::new(&spec, pack, isa)
        };
        let project = projection(g.band, pack);
        let project_last = (g.last_band() < g.band).then(|| projection(g.last_band(), pack));
        FusedBlock {
            g,
            input,
            out,
            residual: residual.map(|(b, _)| b),
            scratch,
            expand_first,
            expand_next,
            expand_first_at,
            expand_next_at,
            dense,
            depthwise,
            project,
            project_last,
        }
    }

    /// Emits `k` for all its items with the arena pointer moved to a scratch region.
    fn run_in(e: &mut Emit, region: Value, k: &dyn Kernel) {
        let arena = e.arena;
        e.arena = region;
        let (begin, end) = (e.int(0), e.int(k.items() as i64));
        k.emit(e, begin, end);
        e.arena = arena;
    }

    /// Fills ring rows `t0..t0 + count` for the band whose first output row is `y0`: a dense
    /// first stage computes them ([`Self::fill_dense`]); when the rows all lie inside the image
    /// and the block expands, the expansion reads them in place; otherwise they are staged (zero
    /// rows for the padding) first.
    fn fill(&self, e: &mut Emit, region: Value, f: Fill) {
        let g = &self.g;
        let Fill {
            image,
            t0,
            count,
            shift,
            ..
        } = f;
        if let Some(dense) = &self.dense {
            self.fill_dense(e, dense, region, f);
            return;
        }
        let in_place = if t0 == 0 {
            self.expand_first_at.as_ref()
        } else {
            self.expand_next_at.as_ref()
        };
        let Some(gemm) = in_place else {
            self.fill_staged(e, region, f);
            return;
        };
        let first = f.first_row(e, g);
        // `0 <= first <= h_in - count`, in one unsigned compare.
        let inside = e.in_bounds(first, (g.h_in - count) as i64 + 1);
        if_else(
            e,
            inside,
            |e| {
                let src = Self::row_addr(e, &self.input, image, first);
                let arenas = Arenas {
                    input: src,
                    out: e.b.ins().iadd(region, shift),
                    res: region,
                };
                let (begin, end) = (e.int(0), e.int(gemm.items() as i64));
                gemm.emit_at(e, begin, end, arenas);
            },
            |e| self.fill_staged(e, region, f),
        );
    }

    /// [`Self::fill`] through the stage (or, without an expansion, straight into the ring).
    fn fill_staged(&self, e: &mut Emit, region: Value, f: Fill) {
        let g = &self.g;
        let Fill {
            image,
            t0,
            count,
            shift,
            ..
        } = f;
        let ring_region = e.b.ins().iadd(region, shift);
        let [ring, stage, ..] = g.layout();
        let first = f.first_row(e, g);
        let row_len = (g.w_in * g.c_in) as i64;
        // Without an expansion, input rows go straight into the ring.
        let expands = g.first == First::Expand;
        let (dst0, base) = if expands {
            (stage, region)
        } else {
            (ring + t0 * g.w_in * g.hid, ring_region)
        };
        let dst0 = dst0 + self.scratch;
        let arena = e.arena;
        e.for_const(0, count as i64, |e, t| {
            let r = e.b.ins().iadd(first, t);
            let valid = e.in_bounds(r, g.h_in as i64);
            let d = e.b.ins().imul_imm_s(t, row_len * 4);
            let d = e.b.ins().iadd(base, d);
            let dst = e.b.ins().iadd_imm_s(d, dst0 as i64 * 4);
            if_else(
                e,
                valid,
                |e| {
                    let row = e.b.ins().iadd_imm_s(r, image * g.h_in as i64);
                    let at = e.b.ins().imul_imm_s(row, (g.w_in * self.input.stride * 4) as i64);
                    let at = e.b.ins().iadd(arena, at);
                    let src = e.b.ins().iadd_imm_s(at, self.input.offset as i64 * 4);
                    let pixels = e.int(g.w_in as i64);
                    copy(e, src, self.input.stride, dst, g.c_in, g.c_in, pixels);
                },
                |e| zero(e, dst, row_len as usize),
            );
        });
        if !expands {
            return;
        }
        let gemm = if t0 == 0 {
            self.expand_first.as_ref()
        } else {
            self.expand_next.as_ref()
        };
        let gemm = gemm.expect("an expansion");
        let arenas = Arenas {
            input: region,
            out: ring_region,
            res: region,
        };
        let (begin, end) = (e.int(0), e.int(gemm.items() as i64));
        gemm.emit_at(e, begin, end, arenas);
        // Rows in the vertical padding are zero, not the expansion of zero.
        let hid_row = (g.w_in * g.hid) as i64;
        e.for_const(0, count as i64, |e, t| {
            let r = e.b.ins().iadd(first, t);
            let valid = e.in_bounds(r, g.h_in as i64);
            if_else(
                e,
                valid,
                |_| {},
                |e| {
                    let d = e.b.ins().imul_imm_s(t, hid_row * 4);
                    let d = e.b.ins().iadd(ring_region, d);
                    let dst =
                        e.b.ins()
                            .iadd_imm_s(d, (self.scratch + ring + t0 * g.w_in * g.hid) as i64 * 4);
                    zero(e, dst, hid_row as usize);
                },
            );
        });
    }

    /// [`Self::fill`] by a dense first stage: each ring row inside the image is computed in
    /// place from the block's input, the others (the depthwise convolution's vertical padding)
    /// are zero.
    fn fill_dense(&self, e: &mut Emit, dense: &DenseStage, region: Value, f: Fill) {
        let g = &self.g;
        let Fill {
            image,
            t0,
            count,
            shift,
            ..
        } = f;
        let region = e.b.ins().iadd(region, shift);
        let ring = g.layout()[0];
        let first = f.first_row(e, g);
        let row_len = g.w_mid * g.hid;
        let never = opaque_false(e, f.y0);
        e.for_const(0, count as i64, |e, t| {
            let r = e.b.ins().iadd(first, t);
            let valid = e.in_bounds(r, g.h_mid as i64);
            let d = e.b.ins().imul_imm_s(t, row_len as i64 * 4);
            let d = e.b.ins().iadd(region, d);
            let dst = e.b.ins().iadd_imm_s(d, (self.scratch + ring + t0 * row_len) as i64 * 4);
            if_else(
                e,
                valid,
                |e| match dense {
                    DenseStage::Wide(k) => {
                        let n = e.int(image);
                        k.emit_row(e, n, r, dst);
                    }
                    DenseStage::Baseline(k) => {
                        let n = e.int(image);
                        k.emit_row(e, never, n, r, dst);
                    }
                },
                |e| zero(e, dst, row_len),
            );
        });
    }

    /// Byte address of pixel row `(image, y)` of `buf`.
    fn row_addr(e: &mut Emit, buf: &Buf, image: i64, y: Value) -> Value {
        let row = e.b.ins().iadd_imm_s(y, image * buf.h as i64);
        let at = e.b.ins().imul_imm_s(row, (buf.w * buf.stride * 4) as i64);
        let at = e.b.ins().iadd(e.arena, at);
        e.b.ins().iadd_imm_s(at, buf.offset as i64 * 4)
    }
}

impl Kernel for FusedBlock {
    fn items(&self) -> usize {
        self.g.slots
    }

    fn work_per_item(&self) -> usize {
        let g = &self.g;
        let first = match &self.dense {
            Some(DenseStage::Wide(k)) => k.work_per_item(),
            Some(DenseStage::Baseline(k)) => k.work_per_item(),
            None if g.first == First::Expand => g.w_mid * g.hid * g.c_in,
            None => 0,
        };
        let per_row = g.w_out * g.hid * (g.c_out + 9);
        (g.n * (g.h_out * per_row + g.h_mid * first)) / g.slots
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        let mut fns = self.project.host_fns();
        fns.extend(self.project_last.iter().flat_map(|k| k.host_fns()));
        let expansions = [
            &self.expand_first,
            &self.expand_next,
            &self.expand_first_at,
            &self.expand_next_at,
        ];
        for k in expansions.into_iter().flatten() {
            fns.extend(k.host_fns());
        }
        fns.extend(match &self.dense {
            Some(DenseStage::Wide(k)) => k.host_fns(),
            Some(DenseStage::Baseline(k)) => k.host_fns(),
            None => vec![],
        });
        fns.extend(match &self.depthwise {
            DepthwiseStage::Ring(k) => k.host_fns(),
            DepthwiseStage::Input(k) | DepthwiseStage::Rotating(k) => k.host_fns(),
        });
        fns.sort_by_key(|f| f.symbol);
        fns.dedup_by_key(|f| f.symbol);
        fns
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let g = self.g;
        let [ring_at, _, dw, slot_len] = g.layout();
        let (l, carry, band) = (g.rows(), g.carry(), g.band as i64);
        let (bands, slots) = (g.bands() as i64, g.slots as i64);
        let arena = e.arena;
        e.for_range(begin, end, 1, |e, item| {
            // Region `item`, as an arena pointer for the stages' code (their buffers are at
            // offsets inside region 0).
            let shift = e.b.ins().imul_imm_s(item, slot_len as i64 * 4);
            let region = e.b.ins().iadd(arena, shift);
            let lo = e.b.ins().imul_imm_s(item, bands);
            let lo = e.b.ins().sdiv_imm_s(lo, slots);
            let hi = e.b.ins().iadd_imm_s(item, 1);
            let hi = e.b.ins().imul_imm_s(hi, bands);
            let hi = e.b.ins().sdiv_imm_s(hi, slots);
            let row_bytes = (g.w_mid * g.hid * 4) as i64;
            let (n, cap) = (g.new_rows() as i64, g.ring_rows() as i64);
            // Band `b`'s new rows go to ring row `n * (b mod 2)` when the ring rotates; the
            // carried rows of the item's first band, before them modulo the ring.
            let parity = |e: &mut Emit, b: Value| e.b.ins().band_imm_s(b, 1);
            for image in 0..g.n as i64 {
                let copies = matches!(self.depthwise, DepthwiseStage::Ring(_));
                let rotates = matches!(self.depthwise, DepthwiseStage::Rotating(_));
                if carry > 0 && (copies || rotates) {
                    let y0 = e.b.ins().imul_imm_s(lo, band);
                    let shift = if rotates {
                        let odd = parity(e, lo);
                        let back = e.b.ins().imul_imm_s(odd, -n * row_bytes);
                        e.b.ins().iadd_imm_s(back, (cap - carry as i64) * row_bytes)
                    } else {
                        e.int(0)
                    };
                    let f = Fill {
                        image,
                        y0,
                        t0: 0,
                        count: carry,
                        shift,
                    };
                    self.fill(e, region, f);
                }
                e.for_range(lo, hi, 1, |e, b| {
                    let y0 = e.b.ins().imul_imm_s(b, band);
                    let dw_at = e.b.ins().iadd_imm_s(region, (self.scratch + dw) as i64 * 4);
                    let new_rows = |shift: Value| Fill {
                        image,
                        y0,
                        t0: carry,
                        count: l - carry,
                        shift,
                    };
                    match &self.depthwise {
                        DepthwiseStage::Ring(k) => {
                            let shift = e.int(0);
                            self.fill(e, region, new_rows(shift));
                            Self::run_in(e, region, k.as_ref());
                        }
                        DepthwiseStage::Rotating(k) => {
                            let odd = parity(e, b);
                            let at = e.b.ins().imul_imm_s(odd, n * row_bytes);
                            let shift = e.b.ins().iadd_imm_s(at, -(carry as i64) * row_bytes);
                            self.fill(e, region, new_rows(shift));
                            k.emit_band(e, region, 0, y0, g.band, dw_at);
                        }
                        DepthwiseStage::Input(k) => k.emit_band(e, arena, image, y0, g.band, dw_at),
                    }
                    let out = Self::row_addr(e, &self.out, image, y0);
                    let res = match &self.residual {
                        Some(r) => Self::row_addr(e, r, image, y0),
                        None => out,
                    };
                    let arenas = Arenas {
                        input: region,
                        out,
                        res,
                    };
                    let project = |e: &mut Emit, k: &Gemm| {
                        let (begin, end) = (e.int(0), e.int(k.items() as i64));
                        k.emit_at(e, begin, end, arenas);
                    };
                    match &self.project_last {
                        Some(last) => {
                            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, b, bands - 1);
                            if_else(e, is_last, |e| project(e, last), |e| project(e, &self.project));
                        }
                        None => project(e, &self.project),
                    }
                    if carry > 0 && copies {
                        let from = self.scratch + ring_at + (l - carry) * g.w_mid * g.hid;
                        let src = e.b.ins().iadd_imm_s(region, from as i64 * 4);
                        let dst = e.b.ins().iadd_imm_s(region, (self.scratch + ring_at) as i64 * 4);
                        let one = e.int(1);
                        let n = carry * g.w_mid * g.hid;
                        copy(e, src, n, dst, n, n, one);
                    }
                });
            }
        });
    }
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Vectors per pixel up to which a copy is unrolled.
const UNROLL_VECTORS: usize = 16;

/// Copies `pixels` pixels of `c` channels from byte address `src` (pixel stride `src_stride`
/// elements) to `dst` (`dst_stride`).
fn copy(e: &mut Emit, src: Value, src_stride: usize, dst: Value, dst_stride: usize, c: usize, pixels: Value) {
    let start = e.int(0);
    e.for_range(start, pixels, 1, |e, p| {
        let s = e.b.ins().imul_imm_s(p, src_stride as i64 * 4);
        let s = e.b.ins().iadd(src, s);
        let d = e.b.ins().imul_imm_s(p, dst_stride as i64 * 4);
        let d = e.b.ins().iadd(dst, d);
        each_vector(e, c, |e, off, ty| {
            let (s, d, off) = off.resolve(e, s, d);
            let v = e.b.ins().load(ty, flags(), s, off);
            e.b.ins().store(flags(), v, d, off);
        });
    });
}

/// Stores zero over `len` elements at byte address `dst`.
fn zero(e: &mut Emit, dst: Value, len: usize) {
    let (v4, v1) = (e.splat(0.0), e.f32(0.0));
    each_vector(e, len, |e, off, ty| {
        let (_, d, off) = off.resolve(e, dst, dst);
        let v = if ty == F32X4 { v4 } else { v1 };
        e.b.ins().store(flags(), v, d, off);
    });
}

/// A byte offset inside a pixel: constant, or a loop index over vectors plus a constant.
#[derive(Clone, Copy)]
enum Offset {
    Const(i32),
    Vector(Value),
}

impl Offset {
    /// Both base addresses moved by the offset, and the immediate offset left.
    fn resolve(self, e: &mut Emit, a: Value, b: Value) -> (Value, Value, i32) {
        match self {
            Offset::Const(o) => (a, b, o),
            Offset::Vector(i) => {
                let bytes = e.b.ins().imul_imm_s(i, 16);
                (e.b.ins().iadd(a, bytes), e.b.ins().iadd(b, bytes), 0)
            }
        }
    }
}

/// Calls `f` for every f32x4 of the first `c / 4 * 4` elements and every f32 of the rest.
fn each_vector(e: &mut Emit, c: usize, mut f: impl FnMut(&mut Emit, Offset, cranelift_codegen::ir::Type)) {
    let vectors = c / 4;
    if vectors <= UNROLL_VECTORS {
        for v in 0..vectors {
            f(e, Offset::Const(v as i32 * 16), F32X4);
        }
    } else {
        e.for_const(0, vectors as i64, |e, v| f(e, Offset::Vector(v), F32X4));
    }
    for k in vectors * 4..c {
        f(e, Offset::Const(k as i32 * 4), F32);
    }
}
