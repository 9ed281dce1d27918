//! Wide pooling on x86-64: the nodes of `pool.rs`'s [`Windowed`](super::pool::Windowed) (max or
//! average, any window, stride and padding, `count_include_pad` either way, an optional
//! activation), and its `Global` pooling as one window over the plane ([`PoolWide::global`]),
//! computed by a Rust `std::arch` row function for AVX2 (with the lane masks, loads and partial
//! stores of the wide direct convolution's), one call per output row from the Cranelift loop.
//!
//! ```text
//! PoolWide::new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>, pack: &mut Packer)
//!     -> PoolWide
//! ```
//!
//! computes what `Windowed::new` computes with the same arguments. Pooling does one load per
//! operation: where its input is in cache, eight channels per ymm load instead of four make it
//! faster; where the input comes from memory, it is bound by that either way. Best of six to
//! eight alternating profiles against the f32x4 kernel: ShuffleNet's shortcut 3x3 average
//! poolings 0.032 -> 0.020 ms (28x28x240) and 0.016 -> 0.010 (14x14x480), its stem's max pooling
//! 0.041 -> 0.039; SqueezeNet v1.1's max poolings 0.107 -> 0.093, 0.050 -> 0.041 and 0.026 ->
//! 0.021; but SqueezeNet v1.0's first two (4.6 and 3 MB of input, from memory) 0.183 -> 0.194
//! and 0.130 -> 0.141 (as one-layer nets with their input just written: 0.146 -> 0.138 and
//! 0.111 -> 0.117).
//!
//! Per output pixel, the row function takes the window's rows and columns that lie inside the
//! input (the padding contributes nothing to a maximum or a sum), and per four vectors of eight
//! channels (four independent chains), then the last one to three vectors, combines them in the
//! order of the rows, then the columns; windows of two or three columns inside the input have
//! their taps unrolled. Channels past the
//! last multiple of eight are read with a lane mask and stored lane by lane. Average pooling
//! multiplies by `1 / divisor`, the window clipped to the padded input (`count_include_pad`) or
//! to the input, as `pool.rs` does. A maximum is exact in any order; a sum may differ from
//! `pool.rs`'s balanced tree in the last bits. Results do not depend on how the rows are split
//! between threads.
//!
//! The shapes go in a packed [`PoolGeometry`]; the calling convention is that of the wide direct
//! convolution's row function (the weights and residual pointers are unused).

use super::direct_wide::{act_code, call_rows, pack_words};
use super::{Kernel, Packer};
use crate::codegen::emit::Emit;
use crate::codegen::host::{HostFn, Ty};
use crate::codegen::layout::Buf;
use crate::codegen::Level;
use crate::ir::op::{Activation, Hw, Pad, Pool, PoolKind};
use cranelift_codegen::ir::Value;

/// Most kernel rows the row function takes (it keeps their pointers on the stack).
pub const MAX_KH: usize = 16;

/// What the row function needs to know, packed with the weights as `i64` words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolGeometry {
    pub(super) in_h: i64,
    pub(super) in_w: i64,
    /// Elements between consecutive input pixels.
    pub(super) in_stride: i64,
    pub(super) c: i64,
    pub(super) kh: i64,
    pub(super) kw: i64,
    pub(super) sh: i64,
    pub(super) sw: i64,
    pub(super) pad_top: i64,
    pub(super) pad_left: i64,
    pub(super) pad_bottom: i64,
    pub(super) pad_right: i64,
    pub(super) out_w: i64,
    pub(super) out_stride: i64,
    /// 1 for max pooling, 0 for average pooling.
    pub(super) max: i64,
    pub(super) count_include_pad: i64,
    /// `ACT_*` of `direct_wide`.
    pub(super) act: i64,
    /// The leaky slope's `f32` bits.
    pub(super) slope: i64,
}

impl PoolGeometry {
    /// The shapes and epilogue of pooling `p` from `input` to `out`.
    pub(super) fn of(p: &Pool, input: &Buf, out: &Buf, act: Option<Activation>) -> PoolGeometry {
        let (act, slope) = act_code(act);
        PoolGeometry {
            in_h: input.h as i64,
            in_w: input.w as i64,
            in_stride: input.stride as i64,
            c: input.c as i64,
            kh: p.kernel.0 as i64,
            kw: p.kernel.1 as i64,
            sh: p.stride.0 as i64,
            sw: p.stride.1 as i64,
            pad_top: p.pad.top as i64,
            pad_left: p.pad.left as i64,
            pad_bottom: p.pad.bottom as i64,
            pad_right: p.pad.right as i64,
            out_w: out.w as i64,
            out_stride: out.stride as i64,
            max: i64::from(p.kind == PoolKind::Max),
            count_include_pad: i64::from(p.count_include_pad),
            act,
            slope: i64::from(slope.to_bits()),
        }
    }

    /// The geometry as packed data (see `direct_wide::pack_words`).
    pub(super) fn words(&self) -> Vec<f32> {
        pack_words(&self.fields())
    }

    fn fields(&self) -> [i64; 18] {
        [
            self.in_h,
            self.in_w,
            self.in_stride,
            self.c,
            self.kh,
            self.kw,
            self.sh,
            self.sw,
            self.pad_top,
            self.pad_left,
            self.pad_bottom,
            self.pad_right,
            self.out_w,
            self.out_stride,
            self.max,
            self.count_include_pad,
            self.act,
            self.slope,
        ]
    }
}

row_host_fn!(
    /// The AVX2 row function.
    AVX2,
    "netc_pool_avx2",
    Level::Avx2,
    x86::row
);

/// The ring row function of a fused max pooling, `extern "C" fn(geometry, ring, y, out)`: output
/// row `y` from the input rows of its window, row `iy` at ring row `iy mod kh` (see `conv_pool.rs`;
/// the geometry a [`PoolGeometry`] over the convolution's output).
pub static RING_AVX2: HostFn = HostFn {
    symbol: "netc_pool_ring_avx2",
    params: &[Ty::Ptr, Ty::Ptr, Ty::I64, Ty::Ptr],
    returns: &[],
    address: || {
        #[cfg(target_arch = "x86_64")]
        if crate::codegen::Level::cpu() >= Level::Avx2 {
            return Some(x86::ring_row as *const u8);
        }
        None
    },
};

pub struct PoolWide {
    input: Buf,
    out: Buf,
    /// Window cells.
    taps: usize,
    /// Packed [`PoolGeometry`].
    geometry: usize,
}

impl PoolWide {
    /// Whether the row function takes pooling `p`: its window has at most [`MAX_KH`] rows.
    pub fn supports(p: &Pool) -> bool {
        p.kernel.0 <= MAX_KH
    }

    /// Global pooling of `input` as one window over its whole plane, if the row function takes
    /// it: the sums run over the pixels in order, as `pool.rs`'s `Global` adds them, so the
    /// results are the same bits. Each of its chains of dependent additions (one per vector of
    /// channels) is as long as the plane, and the row function runs four of them at once where
    /// `Global` runs one. Best of five alternating profiles: SqueezeNet v1.1's 13x13x1000 average
    /// 0.045 -> 0.017 ms, MobileNetV2's 7x7x1280 0.026 -> 0.010, FD-MobileNet's 0.014 -> 0.005.
    pub fn global(kind: PoolKind, input: Buf) -> Option<Pool> {
        let p = Pool {
            kind,
            kernel: Hw(input.h, input.w),
            stride: Hw(1, 1),
            pad: Pad::uniform(0),
            ceil: false,
            count_include_pad: false,
        };
        Self::supports(&p).then_some(p)
    }

    /// `out` must have the input's batch and channel count and the spatial size `p` gives;
    /// either may have a pixel stride larger than its channel count. The CPU runs AVX2, and
    /// [`Self::supports`] `p`.
    pub fn new(p: &Pool, input: Buf, out: Buf, act: Option<Activation>, pack: &mut Packer) -> PoolWide {
        assert!(
            input.n == out.n && input.c == out.c,
            "pooling keeps the batch and the channels"
        );
        assert!(Self::supports(p), "a window of at most {MAX_KH} rows");
        let geometry = pack.push(&PoolGeometry::of(p, &input, &out, act).words());
        PoolWide {
            input,
            out,
            taps: p.kernel.0 * p.kernel.1,
            geometry,
        }
    }
}

impl Kernel for PoolWide {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.taps
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        call_rows(e, (begin, end), &AVX2, (&self.input, &self.out, None), self.geometry);
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        vec![&AVX2]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::direct_wide::x86::avx2::{load, load_masked, mask, store_first, zero, Mask, LANES, V};
    use super::super::direct_wide::{ACT_LEAKY, ACT_NONE, ACT_RELU, ACT_RELU6};
    use super::{PoolGeometry, MAX_KH};
    use std::arch::x86_64::*;

    /// The row function (see the module documentation).
    ///
    /// # Safety
    ///
    /// The CPU runs AVX2 and FMA, and the pointers cover what the packed geometry describes:
    /// `input` at pixel `(n, 0, 0)` of the input, `out` at pixel `(n, y, 0)` of the output.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn row(
        geometry: *const f32,
        _weights: *const f32,
        input: *const f32,
        y: i64,
        out: *mut f32,
        _residual: *const f32,
    ) {
        let g = std::ptr::read_unaligned(geometry as *const PoolGeometry);
        let row_len = g.in_w * g.in_stride;
        let row = |iy: i64| input.add((iy * row_len) as usize);
        if g.max != 0 {
            pixels::<true>(&g, y, out, row);
        } else {
            pixels::<false>(&g, y, out, row);
        }
    }

    /// The ring row function of a fused max pooling (see `conv_pool.rs` and [`super::RING_AVX2`]).
    ///
    /// # Safety
    ///
    /// The CPU runs AVX2 and FMA; `ring` holds `kh` rows of `in_w * in_stride` floats, input row
    /// `iy` of the window of output row `y` at ring row `iy mod kh`; `out` is output row `y`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn ring_row(geometry: *const f32, ring: *const f32, y: i64, out: *mut f32) {
        let g = std::ptr::read_unaligned(geometry as *const PoolGeometry);
        let row_len = g.in_w * g.in_stride;
        let kh = g.kh.clamp(1, MAX_KH as i64);
        pixels::<true>(&g, y, out, |iy| ring.add(((iy % kh) * row_len) as usize));
    }

    /// Every output pixel of row `y`, input row `iy` at `row(iy)`; `MAX`: max pooling, else
    /// average pooling.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pixels<const MAX: bool>(g: &PoolGeometry, y: i64, out: *mut f32, row: impl Fn(i64) -> *const f32) {
        let iy0 = y * g.sh - g.pad_top;
        // The window's rows inside the input.
        let mut rows = [std::ptr::null::<f32>(); MAX_KH];
        let mut len = 0;
        for iy in iy0..iy0 + g.kh.clamp(0, MAX_KH as i64) {
            if (0..g.in_h).contains(&iy) {
                rows[len] = row(iy);
                len += 1;
            }
        }
        let rows = &rows[..len];
        let (y0, y1) = (iy0, (iy0 + g.kh).min(g.in_h + g.pad_bottom));
        let c = g.c.max(0) as usize;
        for x in 0..g.out_w {
            let x0 = x * g.sw - g.pad_left;
            let (j0, j1) = (x0.max(0), (x0 + g.kw).min(g.in_w));
            let inverse = if MAX {
                1.0
            } else {
                let x1 = (x0 + g.kw).min(g.in_w + g.pad_right);
                let cells = if g.count_include_pad != 0 {
                    (y1 - y0) * (x1 - x0)
                } else {
                    (y1.min(g.in_h) - y0.max(0)) * (j1 - j0)
                };
                1.0 / cells as f32
            };
            let win = Window {
                rows,
                first: (j0 * g.in_stride) as isize,
                taps: (j1 - j0).max(0) as usize,
                step: g.in_stride as usize,
            };
            let dst = out.add((x * g.out_stride) as usize);
            let inverse = _mm256_set1_ps(inverse);
            // Windows of 2 or 3 columns all inside the input have their taps unrolled.
            match (win.taps, g.kw) {
                (2, 2) => channels::<MAX, 2>(&win, dst, c, g, inverse),
                (3, 3) => channels::<MAX, 3>(&win, dst, c, g, inverse),
                _ => channels::<MAX, 0>(&win, dst, c, g, inverse),
            }
        }
    }

    /// The window of one output pixel: `taps` columns from element `first` of each row, `step`
    /// elements apart.
    struct Window<'a> {
        rows: &'a [*const f32],
        first: isize,
        taps: usize,
        step: usize,
    }

    /// One output pixel, channels `0..c` at `dst` (`KW`: the window's column count when it is
    /// known at compile time, else 0): four vectors at a time (four independent chains), then the
    /// last one to three together, then the masked tail.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn channels<const MAX: bool, const KW: usize>(
        win: &Window,
        dst: *mut f32,
        c: usize,
        g: &PoolGeometry,
        inverse: V,
    ) {
        let full = c / LANES * LANES;
        let mut c0 = 0;
        while c0 + 4 * LANES <= full {
            vectors::<MAX, 4, KW>(win, dst, c0, g, inverse);
            c0 += 4 * LANES;
        }
        match (full - c0) / LANES {
            3 => vectors::<MAX, 3, KW>(win, dst, c0, g, inverse),
            2 => vectors::<MAX, 2, KW>(win, dst, c0, g, inverse),
            1 => vectors::<MAX, 1, KW>(win, dst, c0, g, inverse),
            _ => {}
        }
        if full < c {
            let [v] = window::<MAX, true, 1, KW>(win, full, mask(c - full));
            store_first(dst.add(full), c - full, epilogue::<MAX>(g, v, inverse));
        }
    }

    /// Channels `c0..c0 + 8 * NV` of one output pixel (see [`channels`]).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn vectors<const MAX: bool, const NV: usize, const KW: usize>(
        win: &Window,
        dst: *mut f32,
        c0: usize,
        g: &PoolGeometry,
        inverse: V,
    ) {
        let v = window::<MAX, false, NV, KW>(win, c0, mask(LANES));
        for (i, v) in v.into_iter().enumerate() {
            store_first(dst.add(c0 + i * LANES), LANES, epilogue::<MAX>(g, v, inverse));
        }
    }

    /// The maximums (`MAX`) or the sums over the window of channels `c0..c0 + 8 * NV`, in the
    /// order of the rows then the columns; `MASKED`: only the lanes of `m` are read. An empty
    /// window gives `-inf` or zero, as the padding would.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn window<const MAX: bool, const MASKED: bool, const NV: usize, const KW: usize>(
        win: &Window,
        c0: usize,
        m: Mask,
    ) -> [V; NV] {
        let taps = if KW > 0 { KW } else { win.taps };
        let mut acc = [if MAX { _mm256_set1_ps(f32::NEG_INFINITY) } else { zero() }; NV];
        for &r in win.rows {
            let p = r.offset(win.first).add(c0);
            for j in 0..taps {
                let p = p.add(j * win.step);
                for (i, a) in acc.iter_mut().enumerate() {
                    let at = p.add(i * LANES);
                    let v = if MASKED { load_masked(at, m) } else { load(at) };
                    *a = if MAX {
                        _mm256_max_ps(v, *a)
                    } else {
                        _mm256_add_ps(*a, v)
                    };
                }
            }
        }
        acc
    }

    /// The average's scaling and the activation.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn epilogue<const MAX: bool>(g: &PoolGeometry, v: V, inverse: V) -> V {
        let v = if MAX { v } else { _mm256_mul_ps(v, inverse) };
        let zero = zero();
        match g.act {
            ACT_NONE => v,
            ACT_RELU => _mm256_max_ps(v, zero),
            ACT_RELU6 => _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(6.0)),
            ACT_LEAKY => {
                let scaled = _mm256_mul_ps(v, _mm256_set1_ps(f32::from_bits(g.slope as u32)));
                _mm256_blendv_ps(v, scaled, _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero))
            }
            _ => v,
        }
    }
}
