//! Pooling kernels over NHWC buffers, vectorized across channels.
//!
//! Windowed pooling: a work item is one output row `(n, y)`. A window starts at
//! `(y * sh - pad_top, x * sw - pad_left)`. Each kernel row reads an input row, or, where the
//! row lies in the padding, a fill row packed with the weights: `-inf` for max pooling and zero
//! for average pooling, so that every window row is read without a branch and contributes
//! nothing. Columns outside the input are skipped at compile time (the border columns are
//! unrolled; the interior ones share a loop). The taps of a window are combined as a balanced
//! tree, so a window of `k` values waits on `log2 k` dependent operations rather than `k`.
//! Average pooling divides by the window clipped to the padded input (`count_include_pad`) or by
//! the number of cells inside the input, a constant per output position computed at compile
//! time. Global pooling: a work item is one batch item.
//!
//! ```text
//! Windowed::new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>, pack: &mut Packer) -> Windowed
//! Global::new(kind: PoolKind, input: Buf, out: Buf, act: Option<Activation>) -> Global
//! ```
//!
//! `act` is applied to each pooled value before it is stored. `input` and `out` may be channel
//! slices of wider buffers (`stride > c`): only their `c` channels are read and written.

use super::eltwise::{for_channels, pixel_base};
use super::window::{at, interior, mem, opaque_false, pin, pixel_row, row_pointers};
use super::{Kernel, Packer};
use crate::codegen::emit::{Emit, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Activation, Pool, PoolKind};
use cranelift_codegen::ir::{InstBuilder, Value};

pub struct Windowed {
    pool: Pool,
    input: Buf,
    out: Buf,
    act: Option<Activation>,
    /// Element offset in the weights of the fill row (`input.w * input.stride` elements) that
    /// kernel rows in the padding read.
    fill: usize,
}

impl Windowed {
    /// `out` must have the input's batch and channel count and the spatial size `p` gives. Packs
    /// the fill row into `pack`.
    pub fn new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>, pack: &mut Packer) -> Windowed {
        assert!(
            input.n == out.n && input.c == out.c,
            "pooling keeps the batch and the channels"
        );
        let value = match p.kind {
            PoolKind::Max => f32::NEG_INFINITY,
            PoolKind::Avg => 0.0,
        };
        let fill = pack.push(&vec![value; (input.w * input.stride).max(1)]);
        Windowed {
            pool: p.clone(),
            input,
            out,
            act,
            fill,
        }
    }

    /// The divisor of average pooling at output `(y, x)`.
    fn divisor(&self, y: usize, x: usize) -> f32 {
        let p = &self.pool;
        let (h, w) = (self.input.h as isize, self.input.w as isize);
        let y0 = (y * p.stride.0) as isize - p.pad.top as isize;
        let x0 = (x * p.stride.1) as isize - p.pad.left as isize;
        let y1 = (y0 + p.kernel.0 as isize).min(h + p.pad.bottom as isize);
        let x1 = (x0 + p.kernel.1 as isize).min(w + p.pad.right as isize);
        if p.count_include_pad {
            ((y1 - y0) * (x1 - x0)) as f32
        } else {
            ((y1.min(h) - y0.max(0)) * (x1.min(w) - x0.max(0))) as f32
        }
    }
}

impl Kernel for Windowed {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }
    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.pool.kernel.0 * self.pool.kernel.1
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let p = &self.pool;
        let oh = self.out.h as i64;
        let (x0, x1) = interior(self.out.w, self.input.w, p.kernel.1, p.stride.1, 1, p.pad.left);
        let never = opaque_false(e, end);
        e.for_range(begin, end, 1, |e, item| {
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            let rows = row_pointers(e, &self.input, n, y, p.kernel.0, p.stride.0, 1, p.pad.top, self.fill);
            let out_row = pixel_row(e, &self.out, item);
            let mut pinned = rows;
            pinned.push(out_row);
            let pinned = pin(e, never, &pinned);
            let (rows, out_row) = pinned.split_at(p.kernel.0);
            let row = Row {
                y,
                inputs: rows.to_vec(),
                out: out_row[0],
            };
            // Border columns, known at compile time, with only their in-bounds taps.
            for x in (0..x0).chain(x1..self.out.w as i64) {
                let left = x * p.stride.1 as i64 - p.pad.left as i64;
                let taps: Vec<i64> = (0..p.kernel.1 as i64)
                    .filter(|j| (0..self.input.w as i64).contains(&(left + j)))
                    .collect();
                let xv = e.int(x);
                self.column(e, &row, xv, x as usize, &taps);
            }
            // Interior columns, whose windows lie inside the input horizontally, in one loop:
            // they share the divisor's horizontal extent, so `x0` stands for all of them.
            if x0 < x1 {
                let taps: Vec<i64> = (0..p.kernel.1 as i64).collect();
                let (s, t) = (e.int(x0), e.int(x1));
                e.for_range(s, t, 1, |e, x| self.column(e, &row, x, x0 as usize, &taps));
            }
        });
    }
}

/// The output row `(n, y)` a windowed pooling item computes.
struct Row {
    y: Value,
    /// Byte address of pixel 0 of the input row (or the fill row) of each kernel row.
    inputs: Vec<Value>,
    /// Byte address of pixel 0 of the output row.
    out: Value,
}

impl Windowed {
    /// Pools output pixel `(row, x)` over the window columns `x * stride - pad_left + j` for `j`
    /// in `taps` (which must lie inside the input); `divisor_x` is a compile-time column with the
    /// same average-pooling divisors as `x`.
    fn column(&self, e: &mut Emit, row: &Row, x: Value, divisor_x: usize, taps: &[i64]) {
        let p = &self.pool;
        let (in_pixel, out_pixel) = ((self.input.stride * 4) as i64, (self.out.stride * 4) as i64);
        let sx = e.b.ins().imul_imm_s(x, p.stride.1 as i64);
        let left = e.b.ins().iadd_imm_s(sx, -(p.pad.left as i64));
        let left = e.b.ins().imul_imm_s(left, in_pixel);
        let bases: Vec<Value> = row.inputs.iter().map(|&r| e.b.ins().iadd(r, left)).collect();
        let dst = {
            let off = e.b.ins().imul_imm_s(x, out_pixel);
            e.b.ins().iadd(row.out, off)
        };
        let inverse = (p.kind == PoolKind::Avg).then(|| self.row_inverse(e, row.y, divisor_x));
        for_channels(e, self.out.c, |e, c, ty| {
            let bytes = e.b.ins().ishl_imm_s(c, 2);
            let mut values = Vec::with_capacity(bases.len() * taps.len());
            for &base in &bases {
                let base = e.b.ins().iadd(base, bytes);
                for &j in taps {
                    let (a, off) = at(e, base, j * in_pixel);
                    values.push(e.b.ins().load(ty, mem(), a, off));
                }
            }
            // A balanced tree: neighbours first, so the order is fixed by the window alone.
            while values.len() > 1 {
                let mut next = Vec::with_capacity(values.len().div_ceil(2));
                for pair in values.chunks(2) {
                    next.push(match (pair, p.kind) {
                        ([a, b], PoolKind::Max) => e.max(*a, *b),
                        ([a, b], PoolKind::Avg) => e.b.ins().fadd(*a, *b),
                        (_, _) => pair[0],
                    });
                }
                values = next;
            }
            let mut r = values[0];
            if let Some(inverse) = inverse {
                let inv = if ty == F32X4 {
                    e.b.ins().splat(F32X4, inverse)
                } else {
                    inverse
                };
                r = e.b.ins().fmul(r, inv);
            }
            let r = e.activate(r, self.act);
            let out = e.b.ins().iadd(dst, bytes);
            e.b.ins().store(mem(), r, out, 0);
        });
    }

    /// `1 / divisor(y, x)` (f32) for a run-time `y` and a compile-time `x`: a select chain over
    /// the rows whose divisor differs from the interior's.
    fn row_inverse(&self, e: &mut Emit, y: Value, x: usize) -> Value {
        let oh = self.out.h;
        let interior = oh / 2;
        let base = 1.0 / self.divisor(interior, x);
        let mut v = e.f32(base);
        for row in 0..oh {
            let d = 1.0 / self.divisor(row, x);
            if d != base {
                let is_row =
                    e.b.ins()
                        .icmp_imm_s(cranelift_codegen::ir::condcodes::IntCC::Equal, y, row as i64);
                let dv = e.f32(d);
                v = e.b.ins().select(is_row, dv, v);
            }
        }
        v
    }
}

/// Mean or max over each channel's plane.
pub struct Global {
    kind: PoolKind,
    input: Buf,
    out: Buf,
    act: Option<Activation>,
}

impl Global {
    /// `out` holds one pixel per batch item (`[N, C, 1, 1]` or `[N, C]`) with the input's
    /// channel count.
    pub fn new(kind: PoolKind, input: Buf, out: Buf, act: Option<Activation>) -> Global {
        assert!(
            input.n == out.n && input.c == out.c && out.h * out.w == 1,
            "global pooling gives one pixel per batch item"
        );
        Global { kind, input, out, act }
    }
}

impl Kernel for Global {
    fn items(&self) -> usize {
        self.out.n
    }
    fn work_per_item(&self) -> usize {
        self.input.h * self.input.w * self.input.c
    }
    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let plane = (self.input.h * self.input.w) as i64;
        e.for_range(begin, end, 1, |e, n| {
            let dst = pixel_base(e, &self.out, n);
            for_channels(e, self.out.c, |e, c, ty| {
                let init = match (self.kind, ty == F32X4) {
                    (PoolKind::Max, true) => e.splat(f32::NEG_INFINITY),
                    (PoolKind::Max, false) => e.f32(f32::NEG_INFINITY),
                    (_, true) => e.splat(0.0),
                    (_, false) => e.f32(0.0),
                };
                let acc = e.b.declare_var(ty);
                e.b.def_var(acc, init);
                e.for_const(0, plane, |e, k| {
                    let first = e.b.ins().imul_imm_s(n, plane);
                    let pixel = e.b.ins().iadd(first, k);
                    let base = pixel_base(e, &self.input, pixel);
                    let at = e.b.ins().iadd(base, c);
                    let arena = e.arena;
                    let v = e.load(ty, arena, at, 0);
                    let a = e.b.use_var(acc);
                    let r = match self.kind {
                        PoolKind::Max => e.max(v, a),
                        PoolKind::Avg => e.b.ins().fadd(a, v),
                    };
                    e.b.def_var(acc, r);
                });
                let mut r = e.b.use_var(acc);
                if self.kind == PoolKind::Avg {
                    let inv = if ty == F32X4 {
                        e.splat(1.0 / plane as f32)
                    } else {
                        e.f32(1.0 / plane as f32)
                    };
                    r = e.b.ins().fmul(r, inv);
                }
                let r = e.activate(r, self.act);
                let at = e.b.ins().iadd(dst, c);
                let arena = e.arena;
                e.store(r, arena, at, 0);
            });
        });
    }
}
