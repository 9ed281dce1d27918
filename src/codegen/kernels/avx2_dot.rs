//! The AVX2 + FMA kernel of a matrix multiply's narrow last panel, as dot products (see
//! `gemm.rs`).
//!
//! A group whose output columns end in a panel of at most [`MAX_COLS`] columns (ShuffleNet's 20
//! columns per group are a full panel and 4) wastes most of the lanes of the register tile on
//! that panel: the tile broadcasts one input value per k-step and row into a vector of 8 columns,
//! of which 4 are used. This kernel computes those columns the other way round: for each row and
//! column, 8 k-steps per vector (the row's inputs times the column's weights), the 8 partial sums
//! reduced at the end. A column then costs `k / 8` FMAs per row instead of `k`.
//!
//! ```text
//! out[r][c] = act(bias[c] + sum_k a[r][k] * w[c][k])      r < rows, c < cols
//! ```
//!
//! # Calling convention
//!
//! `extern "C"`, all integers `i64`, strides in elements, once per (chunk of rows, group):
//!
//! | argument | meaning |
//! |---|---|
//! | `a`, `a_stride` | row 0 of the input at the group's first channel (`k` contiguous floats per row) |
//! | `w`, `k` | the packed panel: `cols` columns of `k` weights rounded up to a multiple of 8 ([`padded`]), zero-padded |
//! | `rows`, `cols` | rows to compute (`>= 0`), columns (`1..=`[`MAX_COLS`]) |
//! | `bias` | `cols` floats, or null |
//! | `out`, `out_stride` | row 0 of the output (`cols` contiguous floats per row) |
//! | `act` | `avx2::ACT_NONE`, `ACT_RELU` or `ACT_RELU6` |
//! | `next` | the next panel, whose first `k` lines of 16 floats are prefetched, spread over the rows |
//!
//! Rows are computed two at a time (sharing the weight loads), the last one alone; each row's
//! value is the same sequence of operations either way (the FMAs of its 8-lane blocks in order,
//! the last block's lanes past `k` read as zero, the reduction, the bias, the activation), so
//! results do not depend on how rows are split between calls or threads. Only the `k` valid
//! inputs of a row and the `cols` outputs are touched. The function never panics.

#[cfg(target_arch = "x86_64")]
use super::avx2::{load_first, store_first, ACT_NONE, ACT_RELU, ACT_RELU6};
use crate::codegen::host::{HostFn, Ty};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The name the kernel is registered under in the JIT module.
pub const SYMBOL: &str = "netc_gemm_avx2_dot";
/// Most columns the kernel computes.
pub const MAX_COLS: usize = 4;
/// Fewest k-steps the kernel is used for: below one vector of inputs, it has nothing to gain.
pub const MIN_K: usize = 8;

/// Floats per packed column: `k` rounded up to a whole vector.
pub fn padded(k: usize) -> usize {
    k.next_multiple_of(8)
}

/// The kernel's parameters, in order.
const PARAMS: &[Ty] = &[
    Ty::Ptr, // a
    Ty::I64, // a_stride
    Ty::Ptr, // w
    Ty::I64, // k
    Ty::I64, // rows
    Ty::I64, // cols
    Ty::Ptr, // bias
    Ty::Ptr, // out
    Ty::I64, // out_stride
    Ty::I64, // act
    Ty::Ptr, // next
];

/// The kernel as a host function of the generated code (see the calling convention above).
pub static DOT: HostFn = HostFn {
    symbol: SYMBOL,
    params: PARAMS,
    returns: &[],
    address,
};

fn address() -> Option<*const u8> {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        return Some(gemm_avx2_dot as *const u8);
    }
    None
}

/// See the module documentation.
///
/// # Safety
///
/// The CPU runs AVX2 and FMA, and the pointers cover what the arguments describe.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gemm_avx2_dot(
    a: *const f32,
    a_stride: i64,
    w: *const f32,
    k: i64,
    rows: i64,
    cols: i64,
    bias: *const f32,
    out: *mut f32,
    out_stride: i64,
    act: i64,
    next: *const f32,
) {
    let args = Args {
        a,
        a_stride: a_stride as isize,
        w,
        k: k.max(0) as usize,
        rows: rows.max(0) as usize,
        bias,
        out,
        out_stride: out_stride as isize,
        next,
    };
    macro_rules! go {
        ($act:expr) => {
            match cols {
                1 => rows_of::<1, { $act }>(&args),
                2 => rows_of::<2, { $act }>(&args),
                3 => rows_of::<3, { $act }>(&args),
                4 => rows_of::<4, { $act }>(&args),
                _ => {}
            }
        };
    }
    match act {
        ACT_RELU => go!(ACT_RELU),
        ACT_RELU6 => go!(ACT_RELU6),
        _ => go!(ACT_NONE),
    }
}

/// The arguments of one call.
#[cfg(target_arch = "x86_64")]
struct Args {
    a: *const f32,
    a_stride: isize,
    w: *const f32,
    k: usize,
    rows: usize,
    bias: *const f32,
    out: *mut f32,
    out_stride: isize,
    next: *const f32,
}

/// Every row of the call, two at a time, for `C` columns and the activation `ACT`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_of<const C: usize, const ACT: i64>(args: &Args) {
    let bias = match args.bias.is_null() {
        true => _mm_setzero_ps(),
        false => _mm256_castps256_ps128(load_first(args.bias, C)),
    };
    let mut fetched = 0;
    let mut r = 0;
    while r < args.rows {
        // Prefetch the next panel's lines, four per pair of rows, until all `k` are requested.
        for _ in 0..4 {
            if fetched < args.k {
                _mm_prefetch::<_MM_HINT_T0>(args.next.wrapping_add(16 * fetched) as *const i8);
                fetched += 1;
            }
        }
        if r + 1 < args.rows {
            rows::<C, ACT, 2>(args, r, bias);
            r += 2;
        } else {
            rows::<C, ACT, 1>(args, r, bias);
            r += 1;
        }
    }
}

/// Rows `r..r + R` (`R` is 1 or 2): per row and column, one FMA per 8 k-steps (the last block
/// of a `k` that is not a multiple of 8 read with a lane mask), then the reduction, the bias and
/// the activation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows<const C: usize, const ACT: i64, const R: usize>(args: &Args, r: usize, bias: __m128) {
    let per_column = padded(args.k);
    let (full, rest) = (args.k / 8, args.k % 8);
    let mut a = [args.a; R];
    for (i, a) in a.iter_mut().enumerate() {
        *a = args.a.offset(args.a_stride * (r + i) as isize);
    }
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let step = |acc: &mut [[__m256; C]; R], x: [__m256; R], b: usize| {
        for c in 0..C {
            let wv = _mm256_loadu_ps(args.w.add(c * per_column + 8 * b));
            for (acc, &x) in acc.iter_mut().zip(&x) {
                acc[c] = _mm256_fmadd_ps(x, wv, acc[c]);
            }
        }
    };
    for b in 0..full {
        let mut x = [_mm256_setzero_ps(); R];
        for (x, a) in x.iter_mut().zip(&a) {
            *x = _mm256_loadu_ps(a.add(8 * b));
        }
        step(&mut acc, x, b);
    }
    if rest > 0 {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rest as i32), lane);
        let mut x = [_mm256_setzero_ps(); R];
        for (x, a) in x.iter_mut().zip(&a) {
            *x = _mm256_maskload_ps(a.add(8 * full), mask);
        }
        step(&mut acc, x, full);
    }
    for (i, acc) in acc.iter().enumerate() {
        let v = activate::<ACT>(_mm_add_ps(reduce::<C>(acc), bias));
        // Only the low half's lanes are stored (`C <= 4`).
        store_first(
            args.out.offset(args.out_stride * (r + i) as isize),
            C,
            _mm256_castps128_ps256(v),
        );
    }
}

/// The sums of the lanes of each of the `C` vectors, in lanes `0..C` (the others zero): pairs of
/// lanes added within each half, then the halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn reduce<const C: usize>(acc: &[__m256; C]) -> __m128 {
    let at = |c: usize| if c < C { acc[c] } else { _mm256_setzero_ps() };
    let s = _mm256_hadd_ps(_mm256_hadd_ps(at(0), at(1)), _mm256_hadd_ps(at(2), at(3)));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s))
}

/// `ACT` of the four lanes of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn activate<const ACT: i64>(v: __m128) -> __m128 {
    match ACT {
        ACT_RELU => _mm_max_ps(v, _mm_setzero_ps()),
        ACT_RELU6 => _mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(6.0)),
        _ => v,
    }
}
