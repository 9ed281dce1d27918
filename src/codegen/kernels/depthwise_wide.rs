//! Wide depthwise convolution on x86-64: the same nodes as `depthwise.rs` (channel multiplier 1,
//! any stride, padding and dilation, kernels up to [`MAX_KH`] rows), computed by a Rust
//! `std::arch` row function for AVX2 + FMA, one call per output row from the Cranelift loop.
//!
//! ```text
//! DepthwiseWide::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!                    epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer)
//!     -> DepthwiseWide
//! ```
//!
//! computes what `Depthwise::new` computes with the same arguments,
//! `out = act(conv(input) + bias + residual) * scale + shift`. Cranelift's f32x4 code of that
//! kernel tops out at half of the 256-bit FMA rate; this one holds eight channels per ymm register.
//! It serves the AVX-512 level too: the depthwise window reads as many values as it multiplies, so
//! wider registers would mostly widen the loads.
//!
//! # The tile
//!
//! A tile is [`PIXELS`] neighbouring output pixels of the row by eight channels: one ymm
//! accumulator per pixel. Per kernel row inside the input and per tap, the tile loads the tap's
//! eight weights once and each pixel's input vector once, into one FMA per pixel. In the interior
//! at stride 1 or 2 without dilation, with a kernel width known at compile time, the input
//! vectors of a kernel row are loaded once into registers and shared by the taps that read them
//! (`SLIDE`): at stride 1 a 3-wide row of six pixels takes 8 input loads instead of 18, which
//! took the 3x3 layers from 34 to 45-51 GFLOP/s (the loads, not the FMAs, were the bound). A tile
//! of one channel block has one chain of dependent FMAs per pixel; where the chains are too few
//! to hide the FMA latency, a tile takes several channel blocks at once (`x86::blocks`): two at
//! stride 2, where the loads do not slide (MobileNet v1's stride-2 layers went from 20.7-26.1 to
//! 24-30 GFLOP/s), and four for a border pixel. As in
//! `depthwise.rs`, a tile runs through every channel block before the next tile starts, so the
//! input is read in address order and every line of the tile's input pixels is used by all its
//! channel blocks while it is in L1. Channels past the last multiple of eight are computed in one
//! more block whose input is read with a lane mask and whose output is stored lane by lane.
//!
//! Kernel rows whose input row lies in the padding are skipped for the whole output row; the
//! border columns (those whose window reaches into the horizontal padding) are computed one pixel
//! at a time with only their in-bounds taps; the interior in tiles, and the interior's last few
//! pixels in one narrower tile. The kernel width is a compile-time constant for widths 1, 3 and 5
//! (the taps of a row are then unrolled), a run-time one otherwise.
//!
//! Every output element is computed by the same sequence of operations as in `depthwise.rs`: the
//! bias, one FMA per in-bounds tap in the order of the kernel's rows and columns, the epilogue.
//! Results do not depend on how the rows are split between threads.
//!
//! Weights are packed `[kh][kw][C rounded up to 8]`, zero padded; the bias and the post affine
//! `[C rounded up to 8]` (scales, then shifts). The shapes go in a packed `direct_wide::Geometry`,
//! and the calling convention is that of the wide direct convolution's row function.

use super::depthwise::pack_taps;
use super::direct_wide::{call_rows, Geometry};
use super::window::Epilogue;
use super::{Kernel, Packer};
use crate::codegen::emit::Emit;
use crate::codegen::host::HostFn;
use crate::codegen::layout::Buf;
use crate::codegen::Level;
use crate::ir::op::Conv;
use cranelift_codegen::ir::{InstBuilder, Value};

/// Most kernel rows the row function takes (it keeps their pointers on the stack).
pub const MAX_KH: usize = 16;

/// Output pixels of an interior tile at horizontal stride 1: one accumulator each. Measured in
/// MobileNet v1 against tiles of 3 and 4 pixels: 6 ran its 112x112x32 layer 5-13% faster and
/// the others as fast or up to 7% faster.
const PIXELS_STRIDE_1: usize = 6;

/// Output pixels of an interior tile at larger strides, whose tiles read twice as many input
/// columns: 4 (6 ran MobileNet v1's 28x28 -> 14x14 layer 25% slower).
const PIXELS: usize = 4;

/// f32 lanes of a ymm register.
const LANES: usize = 8;

row_host_fn!(
    /// The AVX2 + FMA row function.
    AVX2,
    "netc_depthwise_avx2",
    Level::Avx2,
    x86::row
);

pub struct DepthwiseWide {
    input: Buf,
    out: Buf,
    /// Taps of the window.
    taps: usize,
    /// Packed [`Geometry`].
    geometry: usize,
    residual: Option<Buf>,
}

impl DepthwiseWide {
    /// Whether the row function takes convolution `c`: its kernel has at most [`MAX_KH`] rows.
    pub fn supports(c: &Conv) -> bool {
        c.kernel.0 <= MAX_KH
    }

    /// `weight` is in PyTorch's layout `[C][1][kh][kw]`, `bias` `[C]`, `post` the per-channel
    /// `(scale, shift)` applied after the activation. `out` must have the input's batch and
    /// channel count and the spatial size `c` gives; `input`, `out` and the residual may have a
    /// pixel stride larger than `C`. The CPU runs AVX2 and FMA, and [`Self::supports`] `c`.
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
    ) -> DepthwiseWide {
        Self::build(c, input, out, (weight, bias), epilogue, post, pack, 0)
    }

    /// The depthwise convolution `c` of a fused block over a ring of `ring.h` rows that the
    /// input rows wrap around in: output row `y` (of the whole output, written where
    /// [`Self::emit_band`] says) reads rows `(y * stride - first + i * dilation) mod ring.h` for
    /// its kernel rows `i`, with `first` the ring's rows before the first output row's window
    /// (the convolution's vertical padding is in the ring: rows of zeros). The other arguments
    /// are those of [`Self::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn over_ring(
        c: &Conv,
        first: usize,
        ring: Buf,
        out: Buf,
        weight: &[f32],
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        post: Option<(&[f32], &[f32])>,
        pack: &mut Packer,
    ) -> DepthwiseWide {
        let c = Conv {
            pad: crate::ir::op::Pad {
                top: first,
                bottom: 0,
                ..c.pad
            },
            ..c.clone()
        };
        let rows = ring.h as i64;
        Self::build(&c, ring, out, (weight, bias), epilogue, post, pack, rows)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        c: &Conv,
        input: Buf,
        out: Buf,
        (weight, bias): (&[f32], Option<&[f32]>),
        epilogue: Epilogue,
        post: Option<(&[f32], &[f32])>,
        pack: &mut Packer,
        ring: i64,
    ) -> DepthwiseWide {
        let ch = input.c;
        assert!(
            c.groups == ch && c.out_channels == ch && out.c == ch,
            "not a depthwise convolution"
        );
        assert!(Self::supports(c), "the kernel has more than {MAX_KH} rows");
        epilogue.check(&out);
        let cp = ch.div_ceil(LANES) * LANES;
        let weights = pack.push(&pack_taps(weight, ch, c.kernel, cp));
        let g = Geometry {
            zero: -1,
            ring,
            ..Geometry::of(c, &input, &out, &epilogue).with_params(weights, bias, post, cp, pack)
        };
        DepthwiseWide {
            input,
            out,
            taps: c.kernel.0 * c.kernel.1,
            geometry: pack.push(&g.words()),
            residual: epilogue.residual,
        }
    }
}

impl DepthwiseWide {
    /// Emits the calls for output rows `y0..y0 + rows` of image `image`, reading the input
    /// from the arena at `arena` and writing row `y0 + t` at byte address `out + t * row bytes`
    /// instead of at its place in `out` (a fused block's band of rows in its scratch region).
    /// Rows past the output's height read only rows of the input or nothing, and are written
    /// like the others.
    pub fn emit_band(&self, e: &mut Emit, arena: Value, image: i64, y0: Value, rows: usize, out: Value) {
        let f = e.host(&AVX2);
        let image_bytes = (self.input.h * self.input.w * self.input.stride * 4) as i64;
        let input =
            e.b.ins()
                .iadd_imm_s(arena, self.input.offset as i64 * 4 + image * image_bytes);
        let geometry = e.b.ins().iadd_imm_s(e.weights, self.geometry as i64 * 4);
        let row_bytes = (self.out.w * self.out.stride * 4) as i64;
        let null = e.int(0);
        e.for_const(0, rows as i64, |e, t| {
            let y = e.b.ins().iadd(y0, t);
            let at = e.b.ins().imul_imm_s(t, row_bytes);
            let at = e.b.ins().iadd(out, at);
            let weights = e.weights;
            e.b.ins().call(f, &[geometry, weights, input, y, at, null]);
        });
    }
}

impl Kernel for DepthwiseWide {
    fn items(&self) -> usize {
        self.out.n * self.out.h
    }

    fn work_per_item(&self) -> usize {
        self.out.w * self.out.c * self.taps
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        call_rows(
            e,
            (begin, end),
            &AVX2,
            (&self.input, &self.out, self.residual),
            self.geometry,
        );
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        vec![&AVX2]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::direct_wide::x86::avx2::{finish, fma, load, load_masked, mask, zero, Mask, V};
    use super::super::direct_wide::x86::Row;
    use super::super::direct_wide::{ACT_NONE, ACT_RELU, ACT_RELU6, ANY_EPILOGUE};
    use super::super::window::interior;
    use super::{LANES, MAX_KH, PIXELS, PIXELS_STRIDE_1};

    /// Input pixels a sliding kernel row holds: `SLIDE * (NP - 1) + KW` for the widest tile,
    /// stride and kernel (6 pixels at stride 1 or 4 at stride 2, width 5: 10 and 11).
    const MAX_SLIDE: usize = 16;

    /// The kernel rows of one output row that lie inside the input: a pointer to each one's
    /// input row and the offset of its weights.
    struct Rows {
        input: [*const f32; MAX_KH],
        weights: [usize; MAX_KH],
        len: usize,
    }

    /// The row function (see the module documentation).
    ///
    /// # Safety
    ///
    /// The CPU runs AVX2 and FMA, and the pointers cover what the packed geometry describes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn row(
        geometry: *const f32,
        weights: *const f32,
        input: *const f32,
        y: i64,
        out: *mut f32,
        residual: *const f32,
    ) {
        let r = Row::new(geometry, weights, input, y, out, residual);
        let plain = r.residual.is_null() && r.scale.is_null();
        let epi = match r.g.act {
            ACT_NONE | ACT_RELU | ACT_RELU6 if plain => r.g.act,
            _ => ANY_EPILOGUE,
        };
        match r.g.kw {
            1 => by_epilogue::<1>(&r, weights, epi),
            3 => by_epilogue::<3>(&r, weights, epi),
            5 => by_epilogue::<5>(&r, weights, epi),
            _ => by_epilogue::<0>(&r, weights, epi),
        }
    }

    /// `KW`: the kernel width, or 0 to read it from the geometry.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn by_epilogue<const KW: usize>(r: &Row, weights: *const f32, epi: i64) {
        match epi {
            ACT_NONE => sweep::<KW, ACT_NONE>(r, weights),
            ACT_RELU => sweep::<KW, ACT_RELU>(r, weights),
            ACT_RELU6 => sweep::<KW, ACT_RELU6>(r, weights),
            _ => sweep::<KW, ANY_EPILOGUE>(r, weights),
        }
    }

    /// Every output pixel of the row: the border columns one by one, the interior in tiles.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sweep<const KW: usize, const EPI: i64>(r: &Row, weights: *const f32) {
        let g = &r.g;
        let kw = if KW > 0 { KW } else { g.kw.max(0) as usize };
        let cp = g.post_stride.max(0) as usize;
        let row_len = g.in_w * g.in_stride;
        let mut rows = Rows {
            input: [std::ptr::null(); MAX_KH],
            weights: [0; MAX_KH],
            len: 0,
        };
        for i in 0..g.kh.clamp(0, MAX_KH as i64) {
            let mut iy = r.iy0 + i * g.dh;
            if g.ring > 0 {
                iy = iy.rem_euclid(g.ring);
            }
            if (0..g.in_h).contains(&iy) {
                rows.input[rows.len] = r.input.add((iy * row_len) as usize);
                rows.weights[rows.len] = g.weights.max(0) as usize + i as usize * kw * cp;
                rows.len += 1;
            }
        }
        let (x0, x1) = interior(
            g.out_w.max(0) as usize,
            g.in_w.max(0) as usize,
            kw,
            g.sw.max(1) as usize,
            g.dw.max(1) as usize,
            g.pad_left.max(0) as usize,
        );
        for x in 0..x0 {
            columns::<KW, 1, EPI, true, 0>(r, weights, &rows, x);
        }
        let slides = g.dw == 1 && KW > 0;
        match g.sw {
            1 if slides => interior_tiles::<KW, EPI, PIXELS_STRIDE_1, 1>(r, weights, &rows, (x0, x1)),
            2 if slides => interior_tiles::<KW, EPI, PIXELS, 2>(r, weights, &rows, (x0, x1)),
            1 => interior_tiles::<KW, EPI, PIXELS_STRIDE_1, 0>(r, weights, &rows, (x0, x1)),
            _ => interior_tiles::<KW, EPI, PIXELS, 0>(r, weights, &rows, (x0, x1)),
        }
        for x in x1..g.out_w {
            columns::<KW, 1, EPI, true, 0>(r, weights, &rows, x);
        }
    }

    /// The interior pixels `x0..x1` in tiles of `N` pixels (4 or 6), and one narrower tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn interior_tiles<const KW: usize, const EPI: i64, const N: usize, const SLIDE: usize>(
        r: &Row,
        weights: *const f32,
        rows: &Rows,
        (x0, x1): (i64, i64),
    ) {
        let mut x = x0;
        while x + N as i64 <= x1 {
            columns::<KW, N, EPI, false, SLIDE>(r, weights, rows, x);
            x += N as i64;
        }
        match x1 - x {
            5 => columns::<KW, 5, EPI, false, SLIDE>(r, weights, rows, x),
            4 => columns::<KW, 4, EPI, false, SLIDE>(r, weights, rows, x),
            3 => columns::<KW, 3, EPI, false, SLIDE>(r, weights, rows, x),
            2 => columns::<KW, 2, EPI, false, SLIDE>(r, weights, rows, x),
            1 => columns::<KW, 1, EPI, false, SLIDE>(r, weights, rows, x),
            _ => {}
        }
    }

    /// Output pixels `x..x + NP` of the row, every channel block. `BORDER`: some taps of the
    /// pixels fall outside the input and are skipped (then `NP` is 1).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn columns<const KW: usize, const NP: usize, const EPI: i64, const BORDER: bool, const SLIDE: usize>(
        r: &Row,
        weights: *const f32,
        rows: &Rows,
        x: i64,
    ) {
        let c = r.g.cin.max(0) as usize;
        let full = c / LANES * LANES;
        let mut c0 = 0;
        if BORDER {
            while c0 + 4 * LANES <= full {
                blocks::<KW, NP, EPI, true, 4, 0>(r, weights, rows, x, c0);
                c0 += 4 * LANES;
            }
        }
        if BORDER || SLIDE == 2 {
            while c0 + 2 * LANES <= full {
                blocks::<KW, NP, EPI, BORDER, 2, SLIDE>(r, weights, rows, x, c0);
                c0 += 2 * LANES;
            }
        }
        while c0 < full {
            pixels::<KW, NP, EPI, BORDER, false, SLIDE>(r, weights, rows, x, c0, LANES);
            c0 += LANES;
        }
        if c0 < c {
            pixels::<KW, NP, EPI, BORDER, true, SLIDE>(r, weights, rows, x, c0, c - c0);
        }
    }

    /// Channels `c0..c0 + NB * 8` (`NB` full blocks) of output pixels `x..x + NP`: what
    /// [`pixels`] computes for each block, with the blocks' multiply-adds interleaved. A tile of
    /// one block has one chain of dependent multiply-adds per pixel, too few to hide their latency
    /// when the pixels are few (a border pixel) or the input loads do not slide (stride 2).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn blocks<
        const KW: usize,
        const NP: usize,
        const EPI: i64,
        const BORDER: bool,
        const NB: usize,
        const STRIDE: usize,
    >(
        r: &Row,
        weights: *const f32,
        rows: &Rows,
        x: i64,
        c0: usize,
    ) {
        let g = &r.g;
        let kw = if KW > 0 { KW } else { g.kw.max(0) as usize };
        let cp = g.post_stride.max(0) as usize;
        let mut acc: [[V; NP]; NB] = [[zero(); NP]; NB];
        if !r.bias.is_null() {
            for (h, a) in acc.iter_mut().enumerate() {
                *a = [load(r.bias.add(c0 + h * LANES)); NP];
            }
        }
        let is = g.in_stride as isize;
        // With `STRIDE` > 0, the stride is `STRIDE` and the dilation 1.
        let (step, tap) = match STRIDE {
            0 => (g.sw as isize * is, g.dw as isize * is),
            s => (s as isize * is, is),
        };
        let first = x * g.sw - g.pad_left;
        for k in 0..rows.len {
            let w = weights.add(rows.weights[k] + c0);
            let p = rows.input[k].wrapping_offset(first as isize * is).wrapping_add(c0);
            for j in 0..kw {
                if BORDER && !(0..g.in_w).contains(&(first + j as i64 * g.dw)) {
                    continue;
                }
                let pj = p.wrapping_offset(j as isize * tap);
                for (h, acc) in acc.iter_mut().enumerate() {
                    let wv = load(w.add(j * cp + h * LANES));
                    for (u, a) in acc.iter_mut().enumerate() {
                        let xv = load(pj.wrapping_offset(u as isize * step).wrapping_add(h * LANES));
                        *a = fma(xv, wv, *a);
                    }
                }
            }
        }
        let os = g.out_stride as usize;
        let rs = g.res_stride as usize;
        for (h, acc) in acc.iter().enumerate() {
            let c = c0 + h * LANES;
            for (u, &a) in acc.iter().enumerate() {
                let xo = x as usize + u;
                let out = r.out.add(xo * os + c);
                let res = r.residual.wrapping_add(xo * rs + c);
                finish::<EPI>(r, a, out, res, c, LANES);
            }
        }
    }

    /// Channels `c0..c0 + valid` of output pixels `x..x + NP`; `MASKED`: `valid < 8`, and the
    /// input is read with a lane mask.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn pixels<
        const KW: usize,
        const NP: usize,
        const EPI: i64,
        const BORDER: bool,
        const MASKED: bool,
        const SLIDE: usize,
    >(
        r: &Row,
        weights: *const f32,
        rows: &Rows,
        x: i64,
        c0: usize,
        valid: usize,
    ) {
        let g = &r.g;
        let kw = if KW > 0 { KW } else { g.kw.max(0) as usize };
        let cp = g.post_stride.max(0) as usize;
        let m: Mask = mask(valid);
        let b = if r.bias.is_null() { zero() } else { load(r.bias.add(c0)) };
        let mut acc: [V; NP] = [b; NP];
        let is = g.in_stride as isize;
        // Elements between the inputs of neighbouring pixels, and between neighbouring taps.
        let step = g.sw as isize * is;
        let tap = g.dw as isize * is;
        let first = x * g.sw - g.pad_left;
        for k in 0..rows.len {
            let w = weights.add(rows.weights[k] + c0);
            let p = rows.input[k].wrapping_offset(first as isize * is).wrapping_add(c0);
            if SLIDE > 0 {
                // Stride `SLIDE`, dilation 1: the `SLIDE * (NP - 1) + KW` input pixels of the
                // kernel row are loaded once each and shared by the taps that read them (the
                // loads, not the multiply-adds, bounded the tile: 34 -> 45-51 GFLOP/s at stride 1).
                let mut xs = [zero(); MAX_SLIDE];
                for (i, v) in xs.iter_mut().enumerate().take(SLIDE * (NP - 1) + KW) {
                    let at = p.wrapping_offset(i as isize * is);
                    *v = if MASKED { load_masked(at, m) } else { load(at) };
                }
                for j in 0..KW {
                    let wv = load(w.add(j * cp));
                    for (u, a) in acc.iter_mut().enumerate() {
                        *a = fma(xs[u * SLIDE + j], wv, *a);
                    }
                }
                continue;
            }
            for j in 0..kw {
                if BORDER && !(0..g.in_w).contains(&(first + j as i64 * g.dw)) {
                    continue;
                }
                let wv = load(w.add(j * cp));
                let pj = p.wrapping_offset(j as isize * tap);
                for (u, a) in acc.iter_mut().enumerate() {
                    let at = pj.wrapping_offset(u as isize * step);
                    let xv = if MASKED { load_masked(at, m) } else { load(at) };
                    *a = fma(xv, wv, *a);
                }
            }
        }
        let os = g.out_stride as usize;
        let rs = g.res_stride as usize;
        for (u, &a) in acc.iter().enumerate() {
            let xo = x as usize + u;
            let out = r.out.add(xo * os + c0);
            let res = r.residual.wrapping_add(xo * rs + c0);
            finish::<EPI>(r, a, out, res, c0, valid);
        }
    }
}
