//! A dense convolution with its max pooling fused (`Fused::pool`, see `passes::fuse`): a network
//! stem, whose convolution output is the largest tensor around it, computed a few rows at a time
//! into a small ring and pooled from there, so it is never written in full.
//!
//! ```text
//! ConvPool::new(conv: Rows, (conv_h, conv_w): (usize, usize), pool: &Pool, out: Buf,
//!               scratch: usize, pack: &mut Packer) -> ConvPool
//! ```
//!
//! `conv` computes one row of the convolution (with its bias, activation and affine) into a
//! given address: the window kernels' row code, `direct_wide.rs`'s row function or `direct.rs`'s
//! row loop, built for an output of one row of `conv_w` pixels by `c` dense channels. Pooled
//! output row `p` reads convolution rows `p * stride - pad_top ..` (`kh` of them, clipped to the
//! image); convolution row `r` lives in ring row `r mod kh`. Walking pooled rows in order, each
//! step computes only the rows its window needs that the ring does not hold yet (the window
//! overlaps the previous one by `kh - stride` rows), then a ring row function pools them into the
//! output row. A window's row `r` is always overwritten after its last reader, because the next
//! window starts at least one stride further down.
//!
//! # Items and threads
//!
//! As in a fused block (`block.rs`), a work item is one of at most [`SLOTS`] contiguous ranges of
//! pooled rows (over the whole batch), and item `i` owns scratch region `i` (one ring): items
//! share no memory whatever thread runs them. Each item starts with an empty ring, so the rows
//! shared by two items' windows are computed by both; every element is computed by the same
//! operations whatever the split.
//!
//! # The pooling
//!
//! With the wide row function, the AVX2 pooling row function of `pool_wide.rs` reads the window's
//! rows from the ring ([`pool_wide::RING_AVX2`]); with the f32x4 row loop, [`MAXPOOL_RING`], a
//! portable Rust function: per output pixel, the maximum over the window's rows and columns
//! inside the convolution output (the padding contributes nothing to a maximum), combined in the
//! order of the rows then the columns, with `v > m` deciding as `maxps` does. A maximum is exact
//! in any order, so both give the unfused layers' values.
//!
//! Measured (best of three alternating profiles against the two layers): SqueezeNet v1.0's stem
//! 3.011 + 0.166 -> 3.076 ms, v1.1's 0.400 + 0.100 -> 0.456; the ShuffleNets' unchanged (0.168 +
//! 0.029 -> 0.196-0.200: pooling their 56x56x24 outputs costs its per-pixel work, in L1 or not).
//! The planned arenas shrink by a third to a half (SqueezeNet v1.1 3.75 -> 1.83 MiB).

use super::direct::Direct;
use super::direct_wide::DirectWide;
use super::pool_wide::{self, PoolGeometry};
use super::window::{opaque_false, pixel_row};
use super::{Kernel, Packer};
use crate::codegen::emit::Emit;
use crate::codegen::host::{HostFn, Ty};
use crate::codegen::layout::Buf;
use crate::ir::op::Pool;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Scratch regions (rings): the most threads that share the kernel's work.
pub const SLOTS: usize = 2;
/// The largest ring, in bytes: a few rows of a stem's output, meant to stay in L1 and L2.
pub const MAX_RING_BYTES: usize = 256 << 10;

/// Floats of one ring: `kh` rows of `conv_w` pixels of `c` channels.
pub fn ring_len(pool: &Pool, conv_w: usize, c: usize) -> usize {
    pool.kernel.0 * conv_w * c
}

/// Floats of the scratch buffer: [`SLOTS`] rings.
pub fn scratch_len(pool: &Pool, conv_w: usize, c: usize) -> usize {
    SLOTS * ring_len(pool, conv_w, c)
}

/// Whether a convolution output `conv_w` pixels wide with `c` channels can be pooled by `pool`
/// through a ring: a window of one to `pool_wide::MAX_KH` rows (the most the ring row functions
/// take) and at least one column, and a ring of at most [`MAX_RING_BYTES`].
pub fn fits(pool: &Pool, conv_w: usize, c: usize) -> bool {
    let (kh, kw) = (pool.kernel.0, pool.kernel.1);
    let bytes = kh.saturating_mul(conv_w).saturating_mul(c).saturating_mul(4);
    (1..=pool_wide::MAX_KH).contains(&kh)
        && kw >= 1
        && pool.stride.0 >= 1
        && pool.stride.1 >= 1
        && bytes <= MAX_RING_BYTES
}

/// The row code of the fused convolution: the wide row function or the f32x4 row loop.
pub enum Rows {
    Wide(DirectWide),
    Baseline(Direct),
}

impl Rows {
    fn emit_row(&self, e: &mut Emit, never: Value, image: Value, y: Value, dst: Value) {
        match self {
            Rows::Wide(k) => k.emit_row(e, image, y, dst),
            Rows::Baseline(k) => k.emit_row(e, never, image, y, dst),
        }
    }

    fn kernel(&self) -> &dyn Kernel {
        match self {
            Rows::Wide(k) => k,
            Rows::Baseline(k) => k,
        }
    }
}

/// `extern "C" fn(geometry, ring, p, out)`: pools output row `p` (of one image) at `out` from the
/// convolution rows of its window, row `r` at ring row `r mod kh`.
pub static MAXPOOL_RING: HostFn = HostFn {
    symbol: "netc_maxpool_ring",
    params: &[Ty::Ptr, Ty::Ptr, Ty::I64, Ty::Ptr],
    returns: &[],
    address: || Some(maxpool_ring as *const u8),
};

/// See [`MAXPOOL_RING`].
///
/// # Safety
///
/// `geometry` points at a packed [`PoolGeometry`] over the convolution's output (dense rows);
/// `ring` holds `kh` rows of `in_w * c` floats, the window's rows of output row `p` among them;
/// `out` covers `out_w` pixels at `out_stride` with `c` channels each.
unsafe extern "C" fn maxpool_ring(geometry: *const i64, ring: *const f32, p: i64, out: *mut f32) {
    let g = std::ptr::read_unaligned(geometry as *const PoolGeometry);
    let c = g.c.max(0) as usize;
    let top = p * g.sh - g.pad_top;
    let rows = top.max(0)..(top + g.kh).min(g.in_h);
    let row_len = g.in_w.max(0) as usize * c;
    for x in 0..g.out_w.max(0) {
        let left = x * g.sw - g.pad_left;
        let cols = left.max(0)..(left + g.kw).min(g.in_w);
        let dst = std::slice::from_raw_parts_mut(out.add(x as usize * g.out_stride as usize), c);
        dst.fill(f32::NEG_INFINITY);
        for r in rows.clone() {
            let row = ring.add((r % g.kh) as usize * row_len);
            for col in cols.clone() {
                let src = std::slice::from_raw_parts(row.add(col as usize * c), c);
                for (m, &v) in dst.iter_mut().zip(src) {
                    *m = if v > *m { v } else { *m };
                }
            }
        }
    }
}

pub struct ConvPool {
    conv: Rows,
    /// The pooled output.
    out: Buf,
    conv_h: usize,
    /// Floats of one ring.
    ring: usize,
    /// Element offset of the scratch buffer in the arena.
    scratch: usize,
    /// The pooling's row function over a ring ([`pool_wide::RING_AVX2`] with the wide row
    /// function, else [`MAXPOOL_RING`]) and its packed [`PoolGeometry`].
    pooling: (&'static HostFn, usize),
    /// Pooling window height and stride, top padding.
    kh: usize,
    sh: usize,
    pad_top: usize,
    items: usize,
}

impl ConvPool {
    /// `conv` computes rows of `conv_h x conv_w` pixels of `out.c` dense channels (its output
    /// `Buf` is one such row); `out` is the pooled output, whose channels are the convolution's
    /// in order; `scratch` is the element offset of a buffer of [`scratch_len`] floats.
    pub fn new(
        conv: Rows,
        (conv_h, conv_w): (usize, usize),
        pool: &Pool,
        out: Buf,
        scratch: usize,
        pack: &mut Packer,
    ) -> ConvPool {
        assert!(fits(pool, conv_w, out.c), "the pooling window does not fit a ring");
        let image = Buf {
            offset: 0,
            n: 1,
            h: conv_h,
            w: conv_w,
            c: out.c,
            stride: out.c,
        };
        let geometry = pack.push(&PoolGeometry::of(pool, &image, &Buf { n: 1, ..out }, None).words());
        let f = match conv {
            Rows::Wide(_) => &pool_wide::RING_AVX2,
            Rows::Baseline(_) => &MAXPOOL_RING,
        };
        let pooled = out.n * out.h;
        ConvPool {
            conv,
            out,
            conv_h,
            ring: ring_len(pool, conv_w, out.c),
            scratch,
            pooling: (f, geometry),
            kh: pool.kernel.0,
            sh: pool.stride.0,
            pad_top: pool.pad.top,
            items: pooled.clamp(1, SLOTS),
        }
    }
}

impl Kernel for ConvPool {
    fn items(&self) -> usize {
        self.items
    }

    fn work_per_item(&self) -> usize {
        let rows = self.out.n * self.conv_h;
        rows * self.conv.kernel().work_per_item() / self.items
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let pool = e.host(self.pooling.0);
        let never = opaque_false(e, end);
        let (ph, total) = (self.out.h as i64, (self.out.n * self.out.h) as i64);
        let (kh, sh, pad) = (self.kh as i64, self.sh as i64, self.pad_top as i64);
        let items = self.items as i64;
        e.for_range(begin, end, 1, |e, item| {
            // Pooled rows `q0..q1` of the flattened `(image, row)` range, into ring `item`.
            let q0 = e.b.ins().imul_imm_s(item, total);
            let q0 = e.b.ins().sdiv_imm_s(q0, items);
            let next = e.b.ins().iadd_imm_s(item, 1);
            let q1 = e.b.ins().imul_imm_s(next, total);
            let q1 = e.b.ins().sdiv_imm_s(q1, items);
            let at = e.b.ins().imul_imm_s(item, (self.ring * 4) as i64);
            let ring = e.b.ins().iadd(e.arena, at);
            let ring = e.b.ins().iadd_imm_s(ring, (self.scratch * 4) as i64);
            // The last convolution row in the ring, and its image (-1: none yet).
            let done = e.b.declare_var(I64);
            let image = e.b.declare_var(I64);
            let none = e.int(-1);
            e.b.def_var(done, none);
            e.b.def_var(image, none);
            e.for_range(q0, q1, 1, |e, q| {
                let n = e.b.ins().sdiv_imm_s(q, ph);
                let p = e.b.ins().srem_imm_s(q, ph);
                let same = {
                    let held = e.b.use_var(image);
                    e.b.ins().icmp(IntCC::Equal, held, n)
                };
                let held = e.b.use_var(done);
                let none = e.int(-1);
                let last = e.b.ins().select(same, held, none);
                let top = e.b.ins().imul_imm_s(p, sh);
                let top = e.b.ins().iadd_imm_s(top, -pad);
                let zero = e.int(0);
                let lo = e.b.ins().smax(top, zero);
                let bottom = e.b.ins().iadd_imm_s(top, kh);
                let h = e.int(self.conv_h as i64);
                let hi = e.b.ins().smin(bottom, h);
                let after = e.b.ins().iadd_imm_s(last, 1);
                let from = e.b.ins().smax(lo, after);
                e.for_range(from, hi, 1, |e, r| {
                    let slot = e.b.ins().srem_imm_s(r, kh);
                    let off = e.b.ins().imul_imm_s(slot, (self.ring / self.kh * 4) as i64);
                    let dst = e.b.ins().iadd(ring, off);
                    self.conv.emit_row(e, never, n, r, dst);
                });
                let end_row = e.b.ins().iadd_imm_s(hi, -1);
                let now = e.b.ins().smax(last, end_row);
                e.b.def_var(done, now);
                e.b.def_var(image, n);
                let out_row = pixel_row(e, &self.out, q);
                let geometry = e.b.ins().iadd_imm_s(e.weights, self.pooling.1 as i64 * 4);
                e.b.ins().call(pool, &[geometry, ring, p, out_row]);
            });
        });
    }

    fn kind(&self) -> Option<&'static str> {
        Some("direct+maxpool")
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        let mut fns = self.conv.kernel().host_fns();
        fns.push(self.pooling.0);
        fns
    }
}
