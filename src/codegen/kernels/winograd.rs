//! Winograd convolution F(2x2, 3x3) on x86-64 with AVX2 + FMA, for the dense 3x3 convolutions
//! of stride 1 whose output is the size of their input (SqueezeNet's 3x3 expands).
//!
//! ```text
//! Winograd::new(c: &Conv, input: Buf, out: Buf, weight: &[f32], bias: Option<&[f32]>,
//!               epilogue: Epilogue, post: Option<(&[f32], &[f32])>, pack: &mut Packer)
//!     -> Winograd
//! ```
//!
//! computes what `direct_wide::DirectWide::new` computes with the same arguments (no residual),
//! `out = act(conv(input) + bias) * scale + shift`, with 16 multiplies per 2x2 output tile and
//! channel pair instead of 36:
//!
//! ```text
//! U = G g G^T    (4x4, per output and input channel, at compile time)
//! V = B^T d B    (4x4, per input tile d of 4x4 pixels and input channel)
//! M[xi] = V[xi] U[xi]      (16 matrix multiplies: tiles x cin times cin x cout)
//! Y = A^T M A    (2x2 outputs per tile and output channel)
//! ```
//!
//! with `G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]`, `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0;
//! 0 1 0 -1]` and `A^T = [1 1 1 0; 0 1 -1 -1]`. Input tiles start every 2 pixels one pixel
//! before the output tile (the padding of 1), and read zero outside the input.
//!
//! # Work and memory
//!
//! A work item is a row of tiles (two output rows). The row function walks its tiles in chunks of
//! at most [`CHUNK`]; per chunk it transforms the input into `V` (16 x tiles x cin, on its stack),
//! then per block of [`BLOCK`] output channels multiplies `V` by the packed `U` into `M` (16 x
//! tiles x 64, on its stack, in L1) with 6x16 register tiles and transforms `M` into the output
//! with the epilogue. Both buffers stay in L1 and L2, and no arena memory is needed.
//!
//! The transforms change the order of the arithmetic, so results differ from the direct
//! convolution's in the last bits (the tests hold them to the reference within 1e-5 of the
//! output's scale); each output element is computed by the same operations whatever the rows a
//! thread takes, so results do not depend on the thread count.
//!
//! Weights are packed `[xi][panel][cin][16]` (panels of 16 output channels, zero padded), the
//! bias and the post affine `[cout rounded up to 64]`. The shapes go in a packed
//! `direct_wide::Geometry`; the calling convention is the row function's (see `direct_wide.rs`),
//! with `y` the row of tiles and `input`, `out` at pixel `(n, 0, 0)` of the image.

use super::direct_wide::Geometry;
use super::window::Epilogue;
use super::{Kernel, Packer};
use crate::codegen::emit::Emit;
use crate::codegen::host::HostFn;
use crate::codegen::layout::Buf;
use crate::codegen::{Isa, Level};
use crate::ir::op::{Conv, Hw, Pad};
use cranelift_codegen::ir::{InstBuilder, Value};

/// Most tiles a chunk transforms at once.
pub const CHUNK: usize = 12;
/// Output channels multiplied and transformed together.
pub const BLOCK: usize = 64;
/// Most input channels (bounds the row function's stack: `16 * CHUNK * MAX_CIN` floats).
pub const MAX_CIN: usize = 128;
/// Fewest input channels: below, the transforms cost more than the multiplies they save.
pub const MIN_CIN: usize = 16;

row_host_fn!(
    /// The AVX2 row function.
    AVX2,
    "netc_winograd_avx2",
    Level::Avx2,
    x86::row
);

pub struct Winograd {
    input: Buf,
    out: Buf,
    /// Packed [`Geometry`].
    geometry: usize,
}

impl Winograd {
    /// Whether the Winograd kernel takes convolution `c` from `input` to `out` at `isa`: a dense
    /// 3x3 convolution, stride 1, no dilation, padding 1 on every side, [`MIN_CIN`] to
    /// [`MAX_CIN`] input channels, no residual; and the matrix multiply runs on the AVX2 tile
    /// (where AVX-512 doubles the FMA rate, the direct convolution's 512-bit tiles are not
    /// measured against it).
    pub fn supports(c: &Conv, input: &Buf, out: &Buf, epilogue: &Epilogue, isa: Isa) -> bool {
        isa.gemm_level() == Level::Avx2
            && c.groups == 1
            && c.kernel == Hw(3, 3)
            && c.stride == Hw(1, 1)
            && c.dilation == Hw(1, 1)
            && c.pad
                == Pad {
                    top: 1,
                    left: 1,
                    bottom: 1,
                    right: 1,
                }
            && (MIN_CIN..=MAX_CIN).contains(&input.c)
            && (input.h, input.w) == (out.h, out.w)
            && epilogue.residual.is_none()
    }

    /// `weight` is in PyTorch's layout `[Cout][Cin][3][3]`, `bias` `[Cout]`, `post` the
    /// per-output-channel `(scale, shift)` applied after the activation; see [`Winograd::supports`].
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
    ) -> Winograd {
        assert!(c.groups == 1 && out.c == c.out_channels, "not a dense convolution");
        assert!(epilogue.residual.is_none(), "the Winograd kernel takes no residual");
        epilogue.check(&out);
        let (cin, cout) = (input.c, out.c);
        let panels = cout.div_ceil(16);
        let mut packed = vec![0.0f32; 16 * panels * cin * 16];
        for o in 0..cout {
            for i in 0..cin {
                let g = &weight[(o * cin + i) * 9..(o * cin + i) * 9 + 9];
                let u = transform_kernel(g);
                for (xi, &v) in u.iter().enumerate() {
                    packed[((xi * panels + o / 16) * cin + i) * 16 + o % 16] = v;
                }
            }
        }
        let padded = cout.div_ceil(BLOCK) * BLOCK;
        let weights = pack.push(&packed);
        let g = Geometry::of(c, &input, &out, &epilogue).with_params(weights, bias, post, padded, pack);
        let geometry = pack.push(&g.words());
        Winograd { input, out, geometry }
    }

    /// Rows of tiles of one image.
    fn tile_rows(&self) -> usize {
        self.out.h.div_ceil(2)
    }
}

/// `G g G^T` of a 3x3 kernel `g` (row-major), row-major 4x4.
fn transform_kernel(g: &[f32]) -> [f32; 16] {
    // t = G g: 4x3.
    let mut t = [[0.0f32; 3]; 4];
    for j in 0..3 {
        let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
        t[0][j] = a;
        t[1][j] = 0.5 * (a + b + c);
        t[2][j] = 0.5 * (a - b + c);
        t[3][j] = c;
    }
    let mut u = [0.0f32; 16];
    for (i, row) in t.iter().enumerate() {
        let [a, b, c] = *row;
        u[i * 4] = a;
        u[i * 4 + 1] = 0.5 * (a + b + c);
        u[i * 4 + 2] = 0.5 * (a - b + c);
        u[i * 4 + 3] = c;
    }
    u
}

impl Kernel for Winograd {
    fn items(&self) -> usize {
        self.out.n * self.tile_rows()
    }

    fn work_per_item(&self) -> usize {
        2 * self.out.w * self.out.c * 9 * self.input.c
    }

    fn emit(&self, e: &mut Emit, begin: Value, end: Value) {
        let f = e.host(&AVX2);
        let rows = self.tile_rows() as i64;
        let in_image = (self.input.h * self.input.w * self.input.stride * 4) as i64;
        let out_image = (self.out.h * self.out.w * self.out.stride * 4) as i64;
        let (input, out, geometry) = (self.input, self.out, self.geometry);
        e.for_range(begin, end, 1, |e, item| {
            let n = e.b.ins().sdiv_imm_s(item, rows);
            let ty = e.b.ins().srem_imm_s(item, rows);
            let at = e.b.ins().imul_imm_s(n, in_image);
            let input_at = e.b.ins().iadd(e.arena, at);
            let input_at = e.b.ins().iadd_imm_s(input_at, input.offset as i64 * 4);
            let at = e.b.ins().imul_imm_s(n, out_image);
            let out_at = e.b.ins().iadd(e.arena, at);
            let out_at = e.b.ins().iadd_imm_s(out_at, out.offset as i64 * 4);
            let geometry = e.b.ins().iadd_imm_s(e.weights, geometry as i64 * 4);
            let (weights, none) = (e.weights, e.int(0));
            e.b.ins().call(f, &[geometry, weights, input_at, ty, out_at, none]);
        });
    }

    fn kind(&self) -> Option<&'static str> {
        Some("winograd")
    }

    fn host_fns(&self) -> Vec<&'static HostFn> {
        vec![&AVX2]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::avx2::activate;
    use super::super::direct_wide::x86::avx2::{fma, load, load_masked, mask, store_first, zero};
    use super::super::direct_wide::{tiles, Geometry, ACT_LEAKY, ACT_NONE, ACT_RELU, ACT_RELU6};
    use super::{BLOCK, CHUNK, MAX_CIN};
    use std::arch::x86_64::*;

    /// Input channels of `V` rounded up to a vector.
    const CIN_STRIDE: usize = MAX_CIN;

    /// The row function: tiles of row `ty` (output rows `2 ty` and `2 ty + 1`) of one image.
    ///
    /// # Safety
    /// The CPU runs AVX2 and FMA; `geometry` is a packed [`Geometry`] of a convolution that
    /// `Winograd::supports`, `weights` the packed weights it refers to, `input` and `out` pixel
    /// `(n, 0, 0)` of the input and the output, and `ty` a row of tiles of the image.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe extern "C" fn row(
        geometry: *const f32,
        weights: *const f32,
        input: *const f32,
        ty: i64,
        out: *mut f32,
        _residual: *const f32,
    ) {
        let g = std::ptr::read_unaligned(geometry as *const Geometry);
        let (ty, cout) = (ty.max(0) as usize, g.cout.max(0) as usize);
        let row_tiles = (g.out_w.max(0) as usize).div_ceil(2);
        // Every element read from either buffer is written first in the same chunk: `V` for the
        // chunk's tiles and the input channels rounded up to a vector, `M` for its tiles and the
        // block's panels (zero padded past the last channel).
        let mut v = std::mem::MaybeUninit::<[f32; 16 * CHUNK * CIN_STRIDE]>::uninit();
        let mut m = std::mem::MaybeUninit::<[f32; 16 * CHUNK * BLOCK]>::uninit();
        let (v, m) = (v.as_mut_ptr() as *mut f32, m.as_mut_ptr() as *mut f32);
        let mut t0 = 0;
        for n in tiles(row_tiles, CHUNK) {
            transform_input(&g, input, ty, t0, n, v);
            for b0 in (0..cout).step_by(BLOCK) {
                multiply(&g, weights, v, n, b0, m);
                transform_output(&g, weights, m, ty, t0, n, b0, out);
            }
            t0 += n;
        }
    }

    /// `V = B^T d B` of tiles `t0..t0 + n` of tile row `ty`, every input channel, into
    /// `v[xi][tile][channel]` (channel stride [`CIN_STRIDE`]).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_input(g: &Geometry, input: *const f32, ty: usize, t0: usize, n: usize, v: *mut f32) {
        let (h, w, stride, cin) = (g.in_h, g.in_w, g.in_stride as usize, g.cin as usize);
        let mut c = 0;
        while c < cin {
            let valid = (cin - c).min(8);
            let m = mask(valid);
            for t in 0..n {
                let (y0, x0) = (2 * ty as i64 - 1, 2 * (t0 + t) as i64 - 1);
                let mut d = [[zero(); 4]; 4];
                for (i, row) in d.iter_mut().enumerate() {
                    let y = y0 + i as i64;
                    if !(0..h).contains(&y) {
                        continue;
                    }
                    for (j, x) in row.iter_mut().enumerate() {
                        let xx = x0 + j as i64;
                        if (0..w).contains(&xx) {
                            let p = input.add((y as usize * w as usize + xx as usize) * stride + c);
                            *x = if valid == 8 { load(p) } else { load_masked(p, m) };
                        }
                    }
                }
                // Rows: B^T d.
                let mut r = [[zero(); 4]; 4];
                for j in 0..4 {
                    r[0][j] = _mm256_sub_ps(d[0][j], d[2][j]);
                    r[1][j] = _mm256_add_ps(d[1][j], d[2][j]);
                    r[2][j] = _mm256_sub_ps(d[2][j], d[1][j]);
                    r[3][j] = _mm256_sub_ps(d[1][j], d[3][j]);
                }
                // Columns: (B^T d) B.
                for (i, r) in r.iter().enumerate() {
                    let out = [
                        _mm256_sub_ps(r[0], r[2]),
                        _mm256_add_ps(r[1], r[2]),
                        _mm256_sub_ps(r[2], r[1]),
                        _mm256_sub_ps(r[1], r[3]),
                    ];
                    for (j, o) in out.iter().enumerate() {
                        let xi = i * 4 + j;
                        _mm256_storeu_ps(v.add((xi * CHUNK + t) * CIN_STRIDE + c), *o);
                    }
                }
            }
            c += 8;
        }
    }

    /// `M[xi] = V[xi] U[xi]` for the `n` tiles and output channels `b0..b0 + BLOCK` (panels of
    /// 16 past the last channel are skipped), into `m[xi][tile][channel - b0]`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn multiply(g: &Geometry, weights: *const f32, v: *const f32, n: usize, b0: usize, m: *mut f32) {
        let (cin, cout) = (g.cin as usize, g.cout as usize);
        let panels = cout.div_ceil(16);
        let u = weights.add(g.weights as usize);
        for xi in 0..16 {
            let a = v.add(xi * CHUNK * CIN_STRIDE);
            let mo = m.add(xi * CHUNK * BLOCK);
            for p in b0 / 16..(b0 / 16 + BLOCK / 16).min(panels) {
                let panel = u.add((xi * panels + p) * cin * 16);
                let col = p * 16 - b0;
                // Tiles of at most 6 rows, of heights that differ by at most one (a tile of
                // one or two rows waits on the latency of its few chains of multiply-adds).
                let mut r0 = 0;
                for rows in tiles(n, 6) {
                    let (a, out) = (a.add(r0 * CIN_STRIDE), mo.add(r0 * BLOCK + col));
                    match rows {
                        6 => tile::<6>(a, panel, cin, out),
                        5 => tile::<5>(a, panel, cin, out),
                        4 => tile::<4>(a, panel, cin, out),
                        3 => tile::<3>(a, panel, cin, out),
                        2 => tile::<2>(a, panel, cin, out),
                        _ => tile::<1>(a, panel, cin, out),
                    }
                    r0 += rows;
                }
            }
        }
    }

    /// `R` rows of `a` (stride [`CIN_STRIDE`]) times a `k` x 16 panel, into rows of `out`
    /// (stride [`BLOCK`]).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(a: *const f32, panel: *const f32, k: usize, out: *mut f32) {
        let mut acc = [[zero(); 2]; R];
        for kk in 0..k {
            let w0 = load(panel.add(kk * 16));
            let w1 = load(panel.add(kk * 16 + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r * CIN_STRIDE + kk));
                acc[0] = fma(x, w0, acc[0]);
                acc[1] = fma(x, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * BLOCK), acc[0]);
            _mm256_storeu_ps(out.add(r * BLOCK + 8), acc[1]);
        }
    }

    /// [`transform_output`] with the activation `g.act` resolved at compile time.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn transform_output(
        g: &Geometry,
        weights: *const f32,
        m: *const f32,
        ty: usize,
        t0: usize,
        n: usize,
        b0: usize,
        out: *mut f32,
    ) {
        match g.act {
            ACT_RELU => transform_output_act::<ACT_RELU>(g, weights, m, ty, t0, n, b0, out),
            ACT_RELU6 => transform_output_act::<ACT_RELU6>(g, weights, m, ty, t0, n, b0, out),
            ACT_LEAKY => transform_output_act::<ACT_LEAKY>(g, weights, m, ty, t0, n, b0, out),
            _ => transform_output_act::<ACT_NONE>(g, weights, m, ty, t0, n, b0, out),
        }
    }

    /// `Y = A^T M A` of the `n` tiles for output channels `b0..b0 + BLOCK`, plus the bias, then
    /// the activation `ACT` and the affine, stored at the output pixels inside the image.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn transform_output_act<const ACT: i64>(
        g: &Geometry,
        weights: *const f32,
        m: *const f32,
        ty: usize,
        t0: usize,
        n: usize,
        b0: usize,
        out: *mut f32,
    ) {
        let (h, w, stride, cout) = (
            g.in_h as usize,
            g.out_w as usize,
            g.out_stride as usize,
            g.cout as usize,
        );
        let at = |o: i64| (o >= 0).then(|| weights.add(o as usize));
        let (bias, post) = (at(g.bias), at(g.post));
        let slope = _mm256_set1_ps(f32::from_bits(g.slope as u32));
        let zero = zero();
        let mut c = b0;
        while c < (b0 + BLOCK).min(cout) {
            let valid = (cout - c).min(8);
            let b = bias.map_or(zero, |p| load(p.add(c)));
            let affine = post.map(|p| (load(p.add(c)), load(p.add(g.post_stride as usize + c))));
            for t in 0..n {
                let mm = |xi: usize| load(m.add((xi * CHUNK + t) * BLOCK + c - b0));
                // Rows: A^T M (2x4).
                let column = |j: usize| {
                    let (m0, m1, m2, m3) = (mm(j), mm(4 + j), mm(8 + j), mm(12 + j));
                    (
                        _mm256_add_ps(_mm256_add_ps(m0, m1), m2),
                        _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
                    )
                };
                let cols = [column(0), column(1), column(2), column(3)];
                let r = [cols.map(|c| c.0), cols.map(|c| c.1)];
                for (i, r) in r.iter().enumerate() {
                    let y = 2 * ty + i;
                    if y >= h {
                        break;
                    }
                    let ys = [
                        _mm256_add_ps(_mm256_add_ps(r[0], r[1]), r[2]),
                        _mm256_sub_ps(_mm256_sub_ps(r[1], r[2]), r[3]),
                    ];
                    for (j, &value) in ys.iter().enumerate() {
                        let x = 2 * (t0 + t) + j;
                        if x >= w {
                            break;
                        }
                        let mut value = _mm256_add_ps(value, b);
                        value = activate::<ACT>(value, slope);
                        if let Some((scale, shift)) = affine {
                            value = fma(value, scale, shift);
                        }
                        store_first(out.add((y * w + x) * stride + c), valid, value);
                    }
                }
            }
            c += 8;
        }
    }
}
