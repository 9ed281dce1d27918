//! Pooling kernels over NHWC buffers, vectorized across channels.
//!
//! Windowed pooling: a work item is one output row `(n, y)`. A window starts at
//! `(y * sh - pad_top, x * sw - pad_left)`; cells outside the input are skipped. Max pooling
//! ignores padding; average pooling divides by the window clipped to the padded input
//! (`count_include_pad`) or by the number of cells inside the input, a constant per output
//! position computed at compile time. Global pooling: a work item is one batch item.
//!
//! ```text
//! Windowed::new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>) -> Windowed
//! Global::new(kind: PoolKind, input: Buf, out: Buf, act: Option<Activation>) -> Global
//! ```
//!
//! `act` is applied to each pooled value before it is stored. `input` and `out` may be channel
//! slices of wider buffers (`stride > c`): only their `c` channels are read and written.

use super::eltwise::{for_channels, pixel_base};
use super::window::interior;
use super::Kernel;
use crate::codegen::emit::{Emit, F32X4};
use crate::codegen::layout::Buf;
use crate::ir::op::{Activation, Pool, PoolKind};
use cranelift_codegen::ir::{InstBuilder, Value};

pub struct Windowed {
    pool: Pool,
    input: Buf,
    out: Buf,
    act: Option<Activation>,
}

impl Windowed {
    /// `out` must have the input's batch and channel count and the spatial size `p` gives.
    pub fn new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>) -> Windowed {
        assert!(
            input.n == out.n && input.c == out.c,
            "pooling keeps the batch and the channels"
        );
        Windowed {
            pool: p.clone(),
            input,
            out,
            act,
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
        e.for_range(begin, end, 1, |e, item| {
            let n = e.b.ins().sdiv_imm_s(item, oh);
            let y = e.b.ins().srem_imm_s(item, oh);
            let row = Row { item, n, y };
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

/// The output row a windowed pooling item computes: item `n * oh + y`.
struct Row {
    item: Value,
    n: Value,
    y: Value,
}

impl Windowed {
    /// Pools output pixel `(row, x)` over the window columns `x * stride - pad_left + j` for `j`
    /// in `taps` (which must lie inside the input); `divisor_x` is a compile-time column with the
    /// same average-pooling divisors as `x`.
    fn column(&self, e: &mut Emit, row: &Row, x: Value, divisor_x: usize, taps: &[i64]) {
        let p = &self.pool;
        let ow = self.out.w as i64;
        let out_pixel = {
            let first = e.b.ins().imul_imm_s(row.item, ow);
            e.b.ins().iadd(first, x)
        };
        let dst = pixel_base(e, &self.out, out_pixel);
        let sx = e.b.ins().imul_imm_s(x, p.stride.1 as i64);
        let left = e.b.ins().iadd_imm_s(sx, -(p.pad.left as i64));
        for_channels(e, self.out.c, |e, c, ty| {
            let init = match (p.kind, ty == F32X4) {
                (PoolKind::Max, true) => e.splat(f32::NEG_INFINITY),
                (PoolKind::Max, false) => e.f32(f32::NEG_INFINITY),
                (PoolKind::Avg, true) => e.splat(0.0),
                (PoolKind::Avg, false) => e.f32(0.0),
            };
            let acc = e.b.declare_var(ty);
            e.b.def_var(acc, init);
            for i in 0..p.kernel.0 as i64 {
                let sy = e.b.ins().imul_imm_s(row.y, p.stride.0 as i64);
                let iy = e.b.ins().iadd_imm_s(sy, i - p.pad.top as i64);
                let inside = e.in_bounds(iy, self.input.h as i64);
                e.if_then(inside, |e| {
                    let rows = e.b.ins().imul_imm_s(row.n, self.input.h as i64);
                    let r = e.b.ins().iadd(rows, iy);
                    let first = e.b.ins().imul_imm_s(r, self.input.w as i64);
                    let at_left = e.b.ins().iadd(first, left);
                    for &j in taps {
                        let pixel = e.b.ins().iadd_imm_s(at_left, j);
                        let base = pixel_base(e, &self.input, pixel);
                        let at = e.b.ins().iadd(base, c);
                        let arena = e.arena;
                        let v = e.load(ty, arena, at, 0);
                        let a = e.b.use_var(acc);
                        let r = match p.kind {
                            PoolKind::Max => e.max(v, a),
                            PoolKind::Avg => e.b.ins().fadd(a, v),
                        };
                        e.b.def_var(acc, r);
                    }
                });
            }
            let mut r = e.b.use_var(acc);
            if p.kind == PoolKind::Avg {
                // The divisor depends on y only through the borders; compute it per row.
                let inv = self.row_inverse(e, row.y, divisor_x, ty);
                r = e.b.ins().fmul(r, inv);
            }
            let r = e.activate(r, self.act);
            let at = e.b.ins().iadd(dst, c);
            let arena = e.arena;
            e.store(r, arena, at, 0);
        });
    }

    /// `1 / divisor(y, x)` for a run-time `y` and a compile-time `x`: a select chain over the
    /// rows whose divisor differs from the interior's.
    fn row_inverse(&self, e: &mut Emit, y: Value, x: usize, ty: cranelift_codegen::ir::Type) -> Value {
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
        if ty == F32X4 {
            e.b.ins().splat(F32X4, v)
        } else {
            v
        }
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
