//! The AVX-512F micro-kernel of the matrix multiply on x86-64 (see `gemm.rs`).
//!
//! Same role as the AVX2 tile in `avx2.rs`: a Rust function compiled for AVX-512F, registered as
//! a host symbol of the JIT module ([`SYMBOL`]) and called from the generated loop nest once per
//! (32-column weight panel, block of rows). It computes, for the rows `0..rows` and the valid
//! columns `0..cols` of one panel:
//!
//! ```text
//! acc = bias[c] + sum_k a[r][koff(k)] * panel[k][c] + residual[r][roff(c)]
//! out[r][ooff(c)] = act(acc) * scale[c] + shift[c]
//! ```
//!
//! in tiles of at most [`MR`] (12) rows x 32 columns (24 zmm accumulators, two weight vectors,
//! one broadcast), the rows shared out evenly between as few tiles as possible; tiles that read
//! their input through an offset table are at most 6 rows tall. A panel of at most 16 valid
//! columns is packed 16 floats wide and computed with one zmm per row. The epilogue (bias,
//! residual, activation, affine) runs on the accumulators while they are in registers.
//!
//! # Calling convention
//!
//! `extern "C"`, all integers `i64`, all pointers to `f32` or `u32`, strides and offsets in
//! elements; the AVX2 tile takes the same arguments (with 16-column panels):
//!
//! | argument | meaning |
//! |---|---|
//! | `a`, `a_stride` | row 0 of the input at the group's first channel; row `r` starts at `a + r * a_stride` |
//! | `a_offsets` | null when the `k` channels of a row are contiguous (`koff(k) = k`); else `k` `u32` offsets from the row start |
//! | `panel`, `k` | the packed panel: `k` rows of `w` floats, `w = 16` when `cols <= 16` and 32 otherwise, zero-padded past `cols` |
//! | `rows`, `cols` | rows to compute (`>= 0`), valid columns (`1..=32`) |
//! | `bias`, `scale`, `shift` | `w` floats each (zero-padded past `cols`), or null |
//! | `res`, `res_stride` | row 0 of the residual, or null |
//! | `out`, `out_stride` | row 0 of the output |
//! | `cols_at` | null when the columns are contiguous (`ooff(c) = roff(c) = c`); else 32 `u32` output offsets `ooff(0..32)` then 32 residual offsets `roff(0..32)` from the row starts |
//! | `act`, `slope` | `ACT_NONE`, `ACT_RELU`, `ACT_RELU6` or `ACT_LEAKY` (see `avx2.rs`) with its slope |
//! | `ahead`, `ahead_lines` | lines of a later kernel's weights to prefetch (see `avx2.rs`); this tile ignores them |
//!
//! Only the `cols` valid columns of the residual and the output are touched (masked loads, stores,
//! gathers and scatters with a `__mmask16` per vector), so the kernel reads and writes nothing
//! outside the tensors. Each element is computed by the same sequence of operations (the bias,
//! then one FMA per k in order, then the epilogue) whatever the row count of the call and the tile
//! that holds it, so results do not depend on how rows are split between calls or threads. The
//! residual may be the output itself (same elements): each row is read before it is written. The
//! function never panics.

#[cfg(target_arch = "x86_64")]
use super::avx2::{ACT_LEAKY, ACT_RELU, ACT_RELU6};
use crate::codegen::host::{HostFn, Ty};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The name the micro-kernel is registered under in the JIT module.
pub const SYMBOL: &str = "netc_gemm_avx512_12x32";
/// Columns of a panel: two zmm vectors.
pub const NR: usize = 32;
/// Rows of a full register tile.
pub const MR: usize = 12;

/// Whether this CPU runs the micro-kernel (x86-64 with AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The parameters of the wide micro-kernels (this one and the AVX2 tile), in order.
pub const PARAMS: &[Ty] = &[
    Ty::Ptr, // a
    Ty::I64, // a_stride
    Ty::Ptr, // a_offsets
    Ty::Ptr, // panel
    Ty::I64, // k
    Ty::I64, // rows
    Ty::I64, // cols
    Ty::Ptr, // bias
    Ty::Ptr, // scale
    Ty::Ptr, // shift
    Ty::Ptr, // res
    Ty::I64, // res_stride
    Ty::Ptr, // out
    Ty::I64, // out_stride
    Ty::Ptr, // cols_at
    Ty::I64, // act
    Ty::F32, // slope
    Ty::Ptr, // ahead
    Ty::I64, // ahead_lines
];

/// The micro-kernel as a host function of the generated code (see the calling convention above).
pub static GEMM: HostFn = HostFn {
    symbol: SYMBOL,
    params: PARAMS,
    returns: &[],
    address,
};

fn address() -> Option<*const u8> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        return Some(gemm_avx512_12x32 as *const u8);
    }
    None
}

/// The epilogue's constants and the output columns, shared by every tile of a call.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Epilogue {
    bias: *const f32,
    scale: *const f32,
    shift: *const f32,
    res: *const f32,
    res_stride: isize,
    out: *mut f32,
    out_stride: isize,
    act: i64,
    slope: f32,
    /// The valid lanes of each vector.
    mask: [__mmask16; 2],
    /// With `cols_at`: the output and residual offsets of each vector's lanes.
    scatter: Option<[[__m512i; 2]; 2]>,
}

/// See the module documentation.
///
/// # Safety
///
/// The CPU supports AVX-512F, and every pointer covers what the arguments describe.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gemm_avx512_12x32(
    a: *const f32,
    a_stride: i64,
    a_offsets: *const u32,
    panel: *const f32,
    k: i64,
    rows: i64,
    cols: i64,
    bias: *const f32,
    scale: *const f32,
    shift: *const f32,
    res: *const f32,
    res_stride: i64,
    out: *mut f32,
    out_stride: i64,
    cols_at: *const u32,
    act: i64,
    slope: f32,
    // The AVX-512 tile does not prefetch for later kernels.
    _ahead: *const f32,
    _ahead_lines: i64,
) {
    if rows <= 0 || cols <= 0 {
        return;
    }
    let cols = cols.min(NR as i64) as u32;
    // Lane `l` of vector `v` is valid when `16 v + l < cols`.
    let lanes = |valid: u32| -> __mmask16 {
        if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as __mmask16
        }
    };
    let mask = [lanes(cols), lanes(cols.saturating_sub(16))];
    let scatter = (!cols_at.is_null()).then(|| {
        let at = |i: usize| _mm512_loadu_si512(cols_at.add(16 * i) as *const _);
        [[at(0), at(1)], [at(2), at(3)]]
    });
    let mut ep = Epilogue {
        bias,
        scale,
        shift,
        res,
        res_stride: res_stride as isize,
        out,
        out_stride: out_stride as isize,
        act,
        slope,
        mask,
        scatter,
    };
    let k = k.max(0) as usize;
    let a_stride = a_stride as isize;
    // Tiles that read their input through `a_offsets` are half as tall: with all the row
    // broadcasts of a k-step hoisted above its FMAs (as LLVM schedules them), a full one spills.
    if cols <= 16 {
        if a_offsets.is_null() {
            rows_of::<1, false, MR>(a, a_stride, a_offsets, panel, k, rows, &mut ep);
        } else {
            rows_of::<1, true, { MR / 2 }>(a, a_stride, a_offsets, panel, k, rows, &mut ep);
        }
    } else if a_offsets.is_null() {
        rows_of::<2, false, MR>(a, a_stride, a_offsets, panel, k, rows, &mut ep);
    } else {
        rows_of::<2, true, { MR / 2 }>(a, a_stride, a_offsets, panel, k, rows, &mut ep);
    }
}

/// All rows of the call, in as few tiles of at most `T` rows as possible, of heights that differ
/// by at most one (49 rows of a 7x7 layer: 10, 10, 10, 10, 9 rather than 12, 12, 12, 12, 1: a
/// tile of one to three rows waits on the latency of its few FMA chains). `V` zmm per row;
/// `TABLE`: the input offsets come from `a_offsets`. Every element is computed by the same
/// operations whatever the height of its tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_of<const V: usize, const TABLE: bool, const T: usize>(
    a: *const f32,
    a_stride: isize,
    a_offsets: *const u32,
    panel: *const f32,
    k: usize,
    rows: i64,
    ep: &mut Epilogue,
) {
    let rows = rows.max(0) as usize;
    let tiles = rows.div_ceil(T);
    if tiles == 0 {
        return;
    }
    // The first `rows % tiles` tiles have one row more than the others.
    let (short, taller) = (rows / tiles, rows % tiles);
    let mut a = a;
    for i in 0..tiles {
        let height = short + usize::from(i < taller);
        let t = (a, a_stride, a_offsets, panel, k);
        match height {
            1 => tile::<1, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            2 => tile::<2, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            3 => tile::<3, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            4 => tile::<4, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            5 => tile::<5, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            6 => tile::<6, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            7 => tile::<7, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            8 => tile::<8, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            9 => tile::<9, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            10 => tile::<10, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            11 => tile::<11, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            12 => tile::<12, V, TABLE>(t.0, t.1, t.2, t.3, t.4, ep),
            _ => {}
        }
        let step = height as isize;
        a = a.wrapping_offset(a_stride.wrapping_mul(step));
        ep.out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(step));
        if !ep.res.is_null() {
            ep.res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(step));
        }
    }
}

/// One tile of `R` rows x `16 V` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const V: usize, const TABLE: bool>(
    a: *const f32,
    a_stride: isize,
    a_offsets: *const u32,
    panel: *const f32,
    k: usize,
    ep: &Epilogue,
) {
    let mut init = [_mm512_setzero_ps(); V];
    if !ep.bias.is_null() {
        for (v, x) in init.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(ep.bias.add(16 * v));
        }
    }
    let mut acc = [init; R];
    let mut w = panel;
    for kk in 0..k {
        let off = if TABLE {
            *a_offsets.add(kk) as isize
        } else {
            kk as isize
        };
        let mut wv = [_mm512_setzero_ps(); V];
        for (v, x) in wv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(w.add(16 * v));
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.offset(r as isize * a_stride + off));
            for v in 0..V {
                acc[v] = _mm512_fmadd_ps(x, wv[v], acc[v]);
            }
        }
        w = w.add(16 * V);
    }
    let zero = _mm512_setzero_ps();
    let six = _mm512_set1_ps(6.0);
    let slope = _mm512_set1_ps(ep.slope);
    let mut post = [(zero, zero); V];
    let has_post = !ep.scale.is_null() && !ep.shift.is_null();
    if has_post {
        for (v, p) in post.iter_mut().enumerate() {
            *p = (
                _mm512_loadu_ps(ep.scale.add(16 * v)),
                _mm512_loadu_ps(ep.shift.add(16 * v)),
            );
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(r as isize));
        let res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(r as isize));
        for (v, &x) in acc.iter().enumerate() {
            let m = ep.mask[v];
            let mut x = x;
            if !ep.res.is_null() {
                let y = match &ep.scatter {
                    None => _mm512_maskz_loadu_ps(m, res.wrapping_add(16 * v)),
                    Some(at) => _mm512_mask_i32gather_ps::<4>(zero, m, at[1][v], res),
                };
                x = _mm512_add_ps(x, y);
            }
            x = match ep.act {
                ACT_RELU => _mm512_max_ps(x, zero),
                ACT_RELU6 => _mm512_min_ps(_mm512_max_ps(x, zero), six),
                ACT_LEAKY => {
                    let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
                    _mm512_mask_mul_ps(x, neg, x, slope)
                }
                _ => x,
            };
            if has_post {
                x = _mm512_fmadd_ps(x, post[v].0, post[v].1);
            }
            match &ep.scatter {
                None => _mm512_mask_storeu_ps(out.wrapping_add(16 * v), m, x),
                Some(at) => _mm512_mask_i32scatter_ps::<4>(out, m, at[0][v], x),
            }
        }
    }
}
