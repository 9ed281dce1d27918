//! Depthwise convolution: `groups == input channels == output channels` (channel multiplier 1),
//! any kernel size, stride, padding and dilation, in Cranelift's f32x4 code: the baseline kernel,
//! and on x86-64 with AVX2 the reference for `depthwise_wide.rs`, which computes the same values.
//!
//! ```text
//! Depthwise::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!                epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer) -> Depthwise
//! ```
//!
//! computes `out = act(conv(input) + bias + residual) * scale + shift` (see [`Epilogue`]), with
//! `weight` in PyTorch's layout `[C][1][kh][kw]`, `bias`, `scale` and `shift` `[C]`. `input`,
//! `out` and the residual may be channel slices of wider buffers (`stride > c`): the kernel reads
//! and writes only their `c` channels. The output must not overlap the input or the residual.
//!
//! Channels are contiguous in NHWC, so the kernel vectorizes over them: four channels per f32x4,
//! the last `C % 4` channels one at a time in scalar code. A work item is one output row `(n, y)`.
//! The row is swept in tiles of a few neighbouring output pixels, and each tile runs through all
//! channel groups before the next tile starts:
//!
//! - the input is read in address order, every cache line of the input rows is used by all its
//!   channel groups while it is in L1, and the working set of a tile is a few input pixels per
//!   kernel row whatever the channel count (sweeping a whole row for one channel group at a time
//!   touched one 16-byte piece per 64-byte line, and with power-of-two pixel strides those lines
//!   fell into a few L1 sets and were evicted before the next group came back to them);
//! - per (tile, channel group) the kernel loads the group's weights once per tap and each input
//!   vector once per multiply-add (folded into the fma), plus the bias: the loads stay below the
//!   fma throughput on stride 1 and 2.
//!
//! A scheduling barrier (see `window.rs`) after every three taps keeps each tap's fmas next to
//! its loads, so the loads fold into the fmas and nothing spills.
//!
//! Measured on a 2-core Zen 4 VM: with the output in cache (a one-layer network), MobileNet's
//! 3x3 stride-1 layers run at 50-70 GFLOP/s and stride-2 layers at 25-50 (the large ones are
//! bound by reading their input from L3). Inside a network every node writes a fresh arena region
//! that is not in any cache, and the output stores bound the kernel: cold 16-byte stores stream at
//! about 8 GB/s there, at most 36 GFLOP/s for a 3x3 window even without arithmetic; in MobileNets
//! the layers measure 16-40.
//!
//! Interior tiles, whose windows lie inside the input, run in a loop without bounds checks; the
//! border columns, known at compile time, are unrolled with only their in-bounds taps. Every output
//! row runs the same code: when some window reaches into the vertical padding, the kernel rows
//! outside the input point at a zero row in the weights buffer, chosen with a `select` per row.
//! The border rows then multiply zeros (for a 3x3 window with padding 1, a third of the work of
//! two rows), which costs less than the compile time of giving each border row its own copy of
//! the row's code.
//!
//! Weights are packed `[kh][kw][C rounded up to 4]`, zero padded; the bias `[C rounded up to 4]`;
//! the post affine `[scale; C rounded up][shift; C rounded up]`.
//!
//! The scheduling barrier, row pointers, interior range and epilogue are in `window.rs`, shared
//! with the vectorized dense convolution in `direct.rs`.

use super::window::{
    at, barrier, finish, interior, mem, opaque_false, pack_bias, pack_post, pin, pixel_row, row_pointers, zero_of,
    Epilogue,
};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Conv, Hw, Pad};
use cranelift_codegen::ir::{types::Type, InstBuilder, Value};
use cranelift_frontend::Variable;

pub struct Depthwise {
    input: Buf,
    out: Buf,
    kernel: Hw,
    stride: Hw,
    pad: Pad,
    dilation: Hw,
    /// Packed weights `[kh][kw][cp]`.
    weights: usize,
    /// Packed bias `[cp]`.
    bias: Option<usize>,
    /// Packed post affine `[scale; cp][shift; cp]`.
    post: Option<usize>,
    /// A zero row of `input.w * input.stride` elements (at least `cp`), read by the kernel rows
    /// in the padding; `None` when every window lies inside the input vertically.
    zero: Option<usize>,
    epilogue: Epilogue,
}

/// Taps between two scheduling barriers: per barrier, the tile's accumulators go through
/// `TAPS_PER_STEP` multiply-adds each. One kernel row of a 3x3 window: a barrier per tap costs a
/// compare and branch per 2-4 fmas, and much longer steps let the mid-end group the fmas by
/// accumulator into long dependent chains (both measured 10-35% slower).
const TAPS_PER_STEP: i64 = 3;

/// Depthwise weights in PyTorch's layout `[C][1][kh][kw]` packed tap by tap, `[kh][kw][cp]`,
/// each tap's `C` channels zero padded to `cp`.
pub(super) fn pack_taps(weight: &[f32], ch: usize, Hw(kh, kw): Hw, cp: usize) -> Vec<f32> {
    let mut packed = vec![0.0f32; kh * kw * cp];
    for k in 0..ch {
        for i in 0..kh {
            for j in 0..kw {
                packed[(i * kw + j) * cp + k] = weight[(k * kh + i) * kw + j];
            }
        }
    }
    packed
}

/// Channels rounded up to whole vectors.
fn padded(c: usize) -> usize {
    c.div_ceil(4) * 4
}

impl Depthwise {
    /// `weight` is in PyTorch's layout `[C][1][kh][kw]`, `bias` `[C]`, `post` the per-channel
    /// `(scale, shift)` applied after the activation. `out` must have the input's batch and
    /// channel count and the spatial size `c` gives; `input`, `out` and the residual may have a
    /// pixel stride larger than `C`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: &Conv,
        input: Buf,
        out: Buf,
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        post: Option<(&[f32], &[f32])>,
        pack: &mut Packer,
    ) -> Depthwise {
        let ch = input.c;
        assert!(
            c.groups == ch && c.out_channels == ch && out.c == ch,
            "not a depthwise convolution"
        );
        epilogue.check(&out);
        let cp = padded(ch);
        let weights = pack.push(&pack_taps(weight, ch, c.kernel, cp));
        let bias = pack_bias(bias, ch, cp, pack);
        let post = pack_post(post, ch, cp, pack);
        let mut k = Depthwise {
            input,
            out,
            kernel: c.kernel,
            stride: c.stride,
            pad: c.pad,
            dilation: c.dilation,
            weights,
            bias,
            post,
            zero: None,
            epilogue,
        };
        if k.border_rows() {
            k.zero = Some(pack.push(&vec![0.0; (input.w * input.stride).max(cp)]));
        }
        k
    }

    /// Whether the window of some output row reaches into the vertical padding.
    fn border_rows(&self) -> bool {
        let ih = self.input.h as i64;
        (0..self.out.h).any(|y| {
            (0..self.kernel.0)
                .any(|i| !(0..ih).contains(&((y * self.stride.0 + i * self.dilation.0) as i64 - self.pad.top as i64)))
        })
    }

    /// Output pixels of a tile.
    ///
    /// Measured in MobileNets, where every output is written to memory that is not in cache:
    /// three pixels ran faster than four on stride 1 (fewer cache lines in flight per tile, and
    /// with power-of-two pixel strides fewer lines competing for the same L1 sets), two on
    /// stride 2, whose tiles read twice as many input columns. On rows of at most 8 pixels, four
    /// cover a stride-1 row in fewer tiles. (Without the cold output, four pixels are up to 15%
    /// faster.)
    fn unroll(&self) -> i64 {
        if self.stride.1 > 1 {
            2
        } else if self.out.w <= 8 {
            4
        } else {
            3
        }
    }
}

impl Kernel for Depthwise {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.kernel.0 * self.kernel.1
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let never = opaque_false(e, end);
        let (x0, x1) = interior(
            self.out.w,
            self.input.w,
            self.kernel.1,
            self.stride.1,
            self.dilation.1,
            self.pad.left,
        );
        let u = self.unroll();
        // Columns `0..start` (the left border, filled up to whole tiles with interior columns)
        // and `loop_end..ow` (what the interior loop leaves, and the right border) are unrolled.
        let start = ((x0 + u - 1) / u * u).min(x1);
        let loop_end = start + (x1 - start) / u * u;
        let oh = self.out.h as i64;
        e.for_range(begin, end, 1, |e, item| {
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            let row = self.row(e, never, item, n, y);
            self.sweep(e, &row, (start, loop_end));
        });
    }
}

/// Addresses of one output row `(n, y)`.
struct Row {
    never: Value,
    /// Input pixel `(n, iy_i, 0)` (or the zero row) for each kernel row `i` that is computed.
    rows: Vec<Value>,
    /// Output pixel `(n, y, 0)`.
    out: Value,
    residual: Option<Value>,
}

/// Byte offsets of the interior loop's column in the input, the output and the residual.
type Shift = (Value, Value, Option<Value>);

/// The addresses of a tile, before the channel offset: with a shift they point at the loop's
/// column and the tile's columns are relative to it.
struct Tile {
    rows: Vec<Value>,
    out: Value,
    residual: Option<Value>,
}

impl Depthwise {
    /// The addresses of output row `(n, y)` (item `item`): every kernel row is computed, rows
    /// outside the input reading the zero row.
    fn row(&self, e: &mut Emit, never: Value, item: Value, n: Value, y: Value) -> Row {
        let kh = self.kernel.0;
        let rows: Vec<Value> = match self.zero {
            None => {
                let first = e.b.ins().imul_imm_s(n, self.input.h as i64);
                let sy = e.b.ins().imul_imm_s(y, self.stride.0 as i64);
                let top = e.b.ins().iadd(first, sy);
                (0..kh)
                    .map(|i| {
                        let off = (i * self.dilation.0) as i64 - self.pad.top as i64;
                        let r = e.b.ins().iadd_imm_s(top, off);
                        pixel_row(e, &self.input, r)
                    })
                    .collect()
            }
            Some(zero) => row_pointers(
                e,
                &self.input,
                n,
                y,
                kh,
                self.stride.0,
                self.dilation.0,
                self.pad.top,
                zero,
            ),
        };
        let mut all = rows;
        all.push(pixel_row(e, &self.out, item));
        all.extend(self.epilogue.residual.map(|r| pixel_row(e, &r, item)));
        let mut pinned = pin(e, never, &all).into_iter();
        let rows = (0..kh).map(|_| pinned.next().expect("a kernel row")).collect();
        Row {
            never,
            rows,
            out: pinned.next().expect("the output row"),
            residual: pinned.next(),
        }
    }

    /// Sweeps the output row: unrolled tiles over `0..start`, the interior loop over
    /// `start..loop_end`, unrolled tiles over the rest.
    fn sweep(&self, e: &mut Emit, row: &Row, (start, loop_end): (i64, i64)) {
        let u = self.unroll();
        let left: Vec<i64> = (0..start).collect();
        for xs in left.chunks(u as usize) {
            self.tile(e, row, None, xs);
        }
        if loop_end > start {
            let (s, t) = (e.int(start), e.int(loop_end));
            let in_step = self.stride.1 as i64 * self.input.stride as i64 * 4;
            let out_step = self.out.stride as i64 * 4;
            let res_step = self.epilogue.residual.map(|r| r.stride as i64 * 4);
            let xs: Vec<i64> = (0..u).collect();
            e.for_range(s, t, u, |e, x| {
                let si = e.b.ins().imul_imm_s(x, in_step);
                let so = e.b.ins().imul_imm_s(x, out_step);
                let sr = res_step.map(|step| e.b.ins().imul_imm_s(x, step));
                self.tile(e, row, Some((si, so, sr)), &xs);
            });
        }
        let right: Vec<i64> = (loop_end..self.out.w as i64).collect();
        for xs in right.chunks(u as usize) {
            self.tile(e, row, None, xs);
        }
    }

    /// Computes output columns `xs` of the row for every channel: the channel groups in a loop,
    /// then the remaining channels one at a time. With `shift` (input, output and residual byte
    /// offsets of the loop's column), `xs` are relative to that column and lie in the interior; without it
    /// they are absolute and only their in-bounds taps are emitted.
    fn tile(&self, e: &mut Emit, row: &Row, shift: Option<Shift>, xs: &[i64]) {
        let t = match shift {
            Some((si, so, sr)) => Tile {
                rows: row.rows.iter().map(|&r| e.b.ins().iadd(r, si)).collect(),
                out: e.b.ins().iadd(row.out, so),
                residual: row.residual.zip(sr).map(|(r, sr)| e.b.ins().iadd(r, sr)),
            },
            None => Tile {
                rows: row.rows.clone(),
                out: row.out,
                residual: row.residual,
            },
        };
        let ch = self.out.c as i64;
        let full = ch / 4;
        if full > 0 {
            let (s, end) = (e.int(0), e.int(full * 16));
            e.for_range(s, end, 16, |e, cb| {
                self.pixels(e, row.never, F32X4, &t, cb, shift.is_some(), xs);
            });
        }
        for k in full * 4..ch {
            let cb = e.int(k * 4);
            self.pixels(e, row.never, F32, &t, cb, shift.is_some(), xs);
        }
    }

    /// Computes and stores columns `xs` of the tile for the channel group (`ty` F32X4) or the
    /// channel (`ty` F32) at byte offset `cb`. `interior`: every tap of every column is inside
    /// the input.
    #[allow(clippy::too_many_arguments)]
    fn pixels(&self, e: &mut Emit, never: Value, ty: Type, t: &Tile, cb: Value, interior: bool, xs: &[i64]) {
        let (kh, kw) = (self.kernel.0 as i64, self.kernel.1 as i64);
        let (sw, dw, pl) = (self.stride.1 as i64, self.dilation.1 as i64, self.pad.left as i64);
        let iw = self.input.w as i64;
        let is4 = self.input.stride as i64 * 4;
        let cp4 = padded(self.out.c) as i64 * 4;
        // The packed weights with this group's channel offset.
        let wb = e.b.ins().iadd(e.weights, cb);
        let (ww, wo) = at(e, wb, self.weights as i64 * 4);
        let rows: Vec<Value> = t.rows.iter().map(|&r| e.b.ins().iadd(r, cb)).collect();
        let bias = match self.bias {
            Some(b) => {
                let (a, off) = at(e, wb, b as i64 * 4);
                e.b.ins().load(ty, mem(), a, off)
            }
            None => zero_of(e, ty),
        };
        let accs: Vec<Variable> = xs
            .iter()
            .map(|_| {
                let v = e.b.declare_var(ty);
                e.b.def_var(v, bias);
                v
            })
            .collect();
        let vars: Vec<(Variable, Type)> = accs.iter().map(|&a| (a, ty)).collect();
        let mut emitted = 0;
        for i in 0..kh {
            let row = rows[i as usize];
            for j in 0..kw {
                let tap = i * kw + j;
                let cols: Vec<(usize, i64)> = xs
                    .iter()
                    .enumerate()
                    .map(|(u, &x)| (u, x * sw - pl + j * dw))
                    .filter(|&(_, col)| interior || (0..iw).contains(&col))
                    .collect();
                if cols.is_empty() {
                    continue;
                }
                if emitted > 0 && emitted % TAPS_PER_STEP == 0 {
                    barrier(e, never, &vars);
                }
                emitted += 1;
                let w = e.b.ins().load(ty, mem(), ww, wo + (tap * cp4) as i32);
                for (u, col) in cols {
                    let x = e.b.ins().load(ty, mem(), row, (col * is4) as i32);
                    let a = e.b.use_var(accs[u]);
                    let a = e.b.ins().fma(x, w, a);
                    e.b.def_var(accs[u], a);
                }
            }
        }
        let post = self.post.map(|p| {
            let (a, off) = at(e, wb, p as i64 * 4);
            let scale = e.b.ins().load(ty, mem(), a, off);
            let shift = e.b.ins().load(ty, mem(), a, off + cp4 as i32);
            (scale, shift)
        });
        let os4 = self.out.stride as i64 * 4;
        let rs4 = self.epilogue.residual.map_or(0, |r| r.stride as i64 * 4);
        let out = e.b.ins().iadd(t.out, cb);
        let residual = t.residual.map(|r| e.b.ins().iadd(r, cb));
        for (u, &x) in xs.iter().enumerate() {
            let v = e.b.use_var(accs[u]);
            let residual = residual.map(|r| (r, (x * rs4) as i32));
            finish(e, &self.epilogue, v, residual, post, (out, (x * os4) as i32));
        }
    }
}
