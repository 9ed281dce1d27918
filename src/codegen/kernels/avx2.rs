//! The AVX2 + FMA micro-kernel of the matrix multiply on x86-64 (see `gemm.rs`).
//!
//! Cranelift's x64 backend lowers no vector wider than 128 bits, so the wide tile is a Rust
//! function compiled for AVX2 + FMA, registered as a host symbol of the JIT module
//! ([`SYMBOL`]) and called from the generated loop nest once per (16-column weight panel, block of
//! rows). It computes, for the rows `0..rows` and the valid columns `0..cols` of one panel:
//!
//! ```text
//! acc = bias[c] + sum_k a[r][k] * panel[k][c] + residual[r][c]
//! out[r][c] = act(acc) * scale[c] + shift[c]
//! ```
//!
//! in tiles of at most 6 rows x 16 columns (12 ymm accumulators, two weight vectors and one
//! broadcast), the rows shared out evenly between as few tiles as possible. The epilogue (bias,
//! residual, activation, affine) runs on the accumulators while they are in registers.
//!
//! # Calling convention
//!
//! `extern "C"`, all integers `i64`, all pointers to `f32` or `u32`, strides and offsets in
//! elements; the same arguments as the AVX-512 tile (`avx512.rs`, [`avx512::PARAMS`]):
//!
//! | argument | meaning |
//! |---|---|
//! | `a`, `a_stride` | row 0 of the input at the group's first channel; row `r` starts at `a + r * a_stride` |
//! | `a_offsets` | null when the `k` channels of a row are contiguous; else `k` `u32` offsets from the row start |
//! | `panel`, `k` | the packed panel: `k` rows of 16 floats, zero-padded past `cols` |
//! | `rows`, `cols` | rows to compute (`>= 0`), valid columns (`1..=16`); or `16 + t` (`t` in `1..=15`) for a full panel and the first `t` columns of the next; or `16 * n` (`n` in `2..=`[`ROW_PANELS`]) for `n` consecutive full panels (see below) |
//! | `bias`, `scale`, `shift` | 16 floats each (zero-padded past `cols`), or null |
//! | `res`, `res_stride` | row 0 of the residual, or null |
//! | `out`, `out_stride` | row 0 of the output |
//! | `cols_at` | null when the columns are contiguous; else 16 `u32` output offsets then 16 residual offsets of the columns from the row starts |
//! | `act`, `slope` | [`ACT_NONE`], [`ACT_RELU`], [`ACT_RELU6`] or [`ACT_LEAKY`] with its slope |
//! | `ahead`, `ahead_lines` | lines of 16 floats of a later kernel's weights to prefetch (null and 0 for none) |
//!
//! A call with `cols = 16 * n` computes the panels `panel + p * k * 16` (`p < n`) with their
//! bias, scale and shift at `+ 16 * p`, writing output (and reading residual) columns `16 * p..`;
//! `cols_at` must then be null. With one row and a plain epilogue (no affine, activation none,
//! relu or relu6), the `n` panels share the row's broadcasts and keep `2 * n` accumulator chains
//! in flight: a classifier's one row computed a panel at a time waited on the latency of two
//! chains of `k` FMAs.
//!
//! A call with `cols = 16 + t` and contiguous columns (`cols_at` null), no affine and activation
//! none, relu or relu6, computes with `t <= 8` tiles of 3 rows x 24 columns ([`MR_THREE`]); in
//! any other case it is the two calls of one panel each.
//!
//! Only the `cols` valid columns of the residual and the output are touched (masked loads,
//! stores and gathers, and per-column stores through `cols_at`), so the kernel reads and writes
//! nothing outside the tensors. Each
//! element is computed by the same sequence of operations (the bias, then one FMA per k in order,
//! then the epilogue) whatever the row count of the call, so results do not depend on how rows are
//! split between calls or threads. The residual may be the output itself (same elements): each
//! element is read before it is written. The function never panics.
//!
//! While it computes, the call prefetches the `k` lines of the panel that follows its own in the
//! packed weights (the next call's, in the loop nests of `gemm.rs`): tile `i` of `t` prefetches
//! lines `i, i + t, ...`, one every `t` k-steps, so the requests are spread over the whole call.
//! Only `prefetcht0` hints read there, which never fault, so the panel may be the last one. In a
//! network, a layer's weights have left L2 (and often L3) since the previous run, and the first
//! tile of every call waited on its panel. Each tile prefetching its share in a burst at its
//! start took ShuffleNetV2's sum of node times from 4.03 to 3.91 ms (best of ten alternating
//! profiles); spreading the requests, against the bursts (best of six to eight): MobileNet v1
//! 13.35 -> 13.07 ms (its 7x7 1x1 layers 10-14% faster, at the speed they reach when timed a
//! second time in a row), ShuffleNetV2 3.97 -> 3.86, MobileNetV2 7.87 -> 7.47.
//!
//! The call also prefetches its first `ahead_lines` (at most `k`) lines from `ahead`, at the same
//! k-steps: the code generator gives a classifier's weights (4-5 MB read once per run, from
//! memory) to the layer before it, whose calls split them (`Kernel::prefetch_ahead`). Best of
//! eight alternating profiles, MobileNet v1's classifier took 0.18 -> 0.10 ms and its last 1x1
//! layer 0.01 ms more (`prefetcht2` and `prefetchnta` slowed that layer by 0.02-0.06 ms).

use super::avx512;
use crate::codegen::host::HostFn;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The name the micro-kernel is registered under in the JIT module.
pub const SYMBOL: &str = "netc_gemm_avx2_6x16";
/// Columns of a panel: two ymm vectors.
pub const NR: usize = 16;
/// Rows of a full register tile.
pub const MR: usize = 6;
/// Most consecutive full panels one call computes (`cols = 16 * n`).
pub const ROW_PANELS: usize = 4;

pub const ACT_NONE: i64 = 0;
pub const ACT_RELU: i64 = 1;
pub const ACT_RELU6: i64 = 2;
pub const ACT_LEAKY: i64 = 3;

/// Whether this CPU runs the micro-kernel (x86-64 with AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The micro-kernel as a host function of the generated code (see the calling convention above).
pub static GEMM: HostFn = HostFn {
    symbol: SYMBOL,
    params: avx512::PARAMS,
    returns: &[],
    address,
};

fn address() -> Option<*const u8> {
    #[cfg(target_arch = "x86_64")]
    if available() {
        return Some(gemm_avx2_6x16 as *const u8);
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
    /// Lane mask of the valid columns of each half, when `cols < 16`.
    mask: Option<[__m256i; 2]>,
    /// Valid columns.
    cols: usize,
    /// With `cols_at`: the output and residual offsets of each half's lanes.
    scatter: Option<[[__m256i; 2]; 2]>,
}

/// See the module documentation.
///
/// # Safety
///
/// The CPU supports AVX2 and FMA, and every pointer covers what the arguments describe.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gemm_avx2_6x16(
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
    ahead: *const f32,
    ahead_lines: i64,
) {
    if rows <= 0 || cols <= 0 {
        return;
    }
    let affine = !scale.is_null() && !shift.is_null();
    // A full panel and the narrow one after it (see the module documentation).
    let joined = cols > NR as i64 && cols < 2 * NR as i64;
    let three = joined
        && cols <= (NR + NR / 2) as i64
        && cols_at.is_null()
        && !affine
        && matches!(act, ACT_NONE | ACT_RELU | ACT_RELU6);
    if joined && !three {
        // One call per panel. With a column table the row pointers stay at the group's bases
        // and the second panel's offsets follow the first's.
        let at = |p: *const f32| if p.is_null() { p } else { p.add(NR) };
        let next = panel.add(k.max(0) as usize * NR);
        let (res2, out2, cols_at2) = match cols_at.is_null() {
            true => (at(res), out.add(NR), cols_at),
            false => (res, out, cols_at.add(2 * NR)),
        };
        #[rustfmt::skip]
        gemm_avx2_6x16(
            a, a_stride, a_offsets, panel, k, rows, NR as i64, bias, scale, shift, res, res_stride,
            out, out_stride, cols_at, act, slope, ahead, ahead_lines,
        );
        #[rustfmt::skip]
        gemm_avx2_6x16(
            a, a_stride, a_offsets, next, k, rows, cols - NR as i64, at(bias), at(scale), at(shift),
            res2, res_stride, out2, out_stride, cols_at2, act, slope, std::ptr::null(), 0,
        );
        return;
    }
    if cols > NR as i64 && !three {
        let n = (cols as usize / NR).min(ROW_PANELS);
        let plain = scale.is_null() || shift.is_null();
        if rows == 1 && a_offsets.is_null() && cols_at.is_null() && plain {
            let args = (a, panel, k.max(0) as usize, bias, res, out);
            match act {
                ACT_NONE => return row_panels::<ACT_NONE>(n, args),
                ACT_RELU => return row_panels::<ACT_RELU>(n, args),
                ACT_RELU6 => return row_panels::<ACT_RELU6>(n, args),
                _ => {}
            }
        }
        let at = |p: *const f32, i: usize| if p.is_null() { p } else { p.add(NR * i) };
        for i in 0..n {
            gemm_avx2_6x16(
                a,
                a_stride,
                a_offsets,
                panel.add(i * k.max(0) as usize * NR),
                k,
                rows,
                NR as i64,
                at(bias, i),
                at(scale, i),
                at(shift, i),
                at(res, i),
                res_stride,
                out.add(NR * i),
                out_stride,
                std::ptr::null(),
                act,
                slope,
                std::ptr::null(),
                0,
            );
        }
        return;
    }
    let mask = (cols < NR as i64).then(|| {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let lo = _mm256_set1_epi32(cols as i32);
        let hi = _mm256_set1_epi32(cols as i32 - 8);
        // Lane `l` of a half is valid when `l < valid columns of that half`.
        [_mm256_cmpgt_epi32(lo, lane), _mm256_cmpgt_epi32(hi, lane)]
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
        cols: cols as usize,
        scatter: (!cols_at.is_null()).then(|| {
            let at = |i: usize| _mm256_loadu_si256(cols_at.add(8 * i) as *const __m256i);
            [[at(0), at(1)], [at(2), at(3)]]
        }),
    };
    let k = k.max(0) as usize;
    let a_stride = a_stride as isize;
    let ahead = (ahead, ahead_lines.clamp(0, k as i64) as usize);
    if three {
        return match act {
            ACT_NONE => three_vectors::<ACT_NONE>(a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead),
            ACT_RELU => three_vectors::<ACT_RELU>(a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead),
            _ => three_vectors::<ACT_RELU6>(a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead),
        };
    }
    // Calls whose residual, if any, is not read through an offset table take tiles whose
    // epilogue is resolved at compile time: at small K (16-64) a run-time epilogue of branches
    // per row and half cost as much as the FMAs. A panel of at most 8 valid columns (the narrow
    // last panel of 24 or 40 channels) is computed one vector wide, in taller tiles, when the
    // epilogue is a plain activation (no affine, no leaky slope).
    let unrolled = ep.scatter.is_none() || ep.res.is_null();
    let table = !a_offsets.is_null();
    let res = !ep.res.is_null();
    let half = cols <= 8 && !affine && act != ACT_LEAKY;
    // Panels whose computed columns are all valid (16, or 8 one vector wide) and contiguous in
    // the output store their accumulators straight from registers: with a run-time test of the
    // columns in the epilogue, the compiler moved all twelve accumulators through the stack after
    // every tile. This holds with input offset tables too (ShuffleNet's shuffled inputs).
    let dense = cols == if half { NR / 2 } else { NR } as i64 && ep.scatter.is_none();
    // `rows_of` with the const parameters of the run-time flags.
    macro_rules! go {
        ($nv:literal, $table:literal, $act:expr, $aff:literal, $res:literal, $dense:literal) => {
            rows_of::<$nv, $table, true, $act, $aff, $res, $dense>(
                a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead,
            )
        };
    }
    macro_rules! full {
        ($act:expr, $aff:literal) => {
            match (table, res, dense) {
                (false, false, false) => go!(2, false, $act, $aff, false, false),
                (false, false, true) => go!(2, false, $act, $aff, false, true),
                (false, true, false) => go!(2, false, $act, $aff, true, false),
                (false, true, true) => go!(2, false, $act, $aff, true, true),
                (true, false, false) => go!(2, true, $act, $aff, false, false),
                (true, false, true) => go!(2, true, $act, $aff, false, true),
                (true, true, false) => go!(2, true, $act, $aff, true, false),
                (true, true, true) => go!(2, true, $act, $aff, true, true),
            }
        };
    }
    macro_rules! plain {
        ($act:expr) => {
            match (half, table, res, dense) {
                (false, ..) => full!($act, false),
                (true, false, false, false) => go!(1, false, $act, false, false, false),
                (true, false, false, true) => go!(1, false, $act, false, false, true),
                (true, false, true, false) => go!(1, false, $act, false, true, false),
                (true, false, true, true) => go!(1, false, $act, false, true, true),
                (true, true, false, false) => go!(1, true, $act, false, false, false),
                (true, true, false, true) => go!(1, true, $act, false, false, true),
                (true, true, true, false) => go!(1, true, $act, false, true, false),
                (true, true, true, true) => go!(1, true, $act, false, true, true),
            }
        };
    }
    match (unrolled, affine, act) {
        (true, false, ACT_NONE) => plain!(ACT_NONE),
        (true, false, ACT_RELU) => plain!(ACT_RELU),
        (true, false, ACT_RELU6) => plain!(ACT_RELU6),
        (true, false, ACT_LEAKY) => full!(ACT_LEAKY, false),
        (true, true, ACT_NONE) => full!(ACT_NONE, true),
        (true, true, ACT_RELU) => full!(ACT_RELU, true),
        (true, true, ACT_RELU6) => full!(ACT_RELU6, true),
        (true, true, ACT_LEAKY) => full!(ACT_LEAKY, true),
        _ if table => rows_of::<2, true, false, ACT_NONE, false, false, false>(
            a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead,
        ),
        _ => rows_of::<2, false, false, ACT_NONE, false, false, false>(
            a, a_stride, a_offsets, panel, k, rows, &mut ep, ahead,
        ),
    }
}

/// A full panel and the narrow panel after it (`17..=24` valid columns, contiguous), with the
/// plain epilogue `ACT` and no affine, in tiles of three vectors (see [`MR_THREE`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn three_vectors<const ACT: i64>(
    a: *const f32,
    a_stride: isize,
    a_offsets: *const u32,
    panel: *const f32,
    k: usize,
    rows: i64,
    ep: &mut Epilogue,
    ahead: (*const f32, usize),
) {
    macro_rules! go {
        ($table:literal, $res:literal, $dense:literal) => {
            rows_of::<3, $table, true, ACT, false, $res, $dense>(a, a_stride, a_offsets, panel, k, rows, ep, ahead)
        };
    }
    match (!a_offsets.is_null(), !ep.res.is_null(), ep.cols == 3 * 8) {
        (false, false, false) => go!(false, false, false),
        (false, false, true) => go!(false, false, true),
        (false, true, false) => go!(false, true, false),
        (false, true, true) => go!(false, true, true),
        (true, false, false) => go!(true, false, false),
        (true, false, true) => go!(true, false, true),
        (true, true, false) => go!(true, true, false),
        (true, true, true) => go!(true, true, true),
    }
}

/// One row of `n` (`2..=`[`ROW_PANELS`]) consecutive full panels with the plain epilogue `ACT`
/// (see the module documentation).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_panels<const ACT: i64>(n: usize, args: RowArgs) {
    match n {
        2 => row_of::<2, ACT>(args),
        3 => row_of::<3, ACT>(args),
        _ => row_of::<4, ACT>(args),
    }
}

/// The input row, the first panel, `k`, the bias, the residual and the output of a call of
/// [`row_panels`].
#[cfg(target_arch = "x86_64")]
type RowArgs = (*const f32, *const f32, usize, *const f32, *const f32, *mut f32);

/// One row of `P` consecutive full panels: per element the bias, one FMA per k in order, the
/// residual, the activation `ACT`, as in [`tile`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_of<const P: usize, const ACT: i64>((a, panel, k, bias, res, out): RowArgs) {
    let mut acc = [[_mm256_setzero_ps(); 2]; P];
    if !bias.is_null() {
        for (p, acc) in acc.iter_mut().enumerate() {
            for (h, v) in acc.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(bias.add(NR * p + 8 * h));
            }
        }
    }
    for kk in 0..k {
        let x = _mm256_broadcast_ss(&*a.add(kk));
        let w = panel.add(kk * NR);
        for (p, acc) in acc.iter_mut().enumerate() {
            for (h, v) in acc.iter_mut().enumerate() {
                *v = _mm256_fmadd_ps(x, _mm256_loadu_ps(w.add(p * k * NR + 8 * h)), *v);
            }
        }
    }
    for (p, acc) in acc.iter().enumerate() {
        for (h, &v) in acc.iter().enumerate() {
            let at = NR * p + 8 * h;
            let mut v = v;
            if !res.is_null() {
                v = _mm256_add_ps(v, _mm256_loadu_ps(res.add(at)));
            }
            _mm256_storeu_ps(out.add(at), activate::<ACT>(v, _mm256_setzero_ps()));
        }
    }
}

/// The plain epilogue's activation `ACT` ([`ACT_NONE`], [`ACT_RELU`], [`ACT_RELU6`] or
/// [`ACT_LEAKY`] with `slope` in every lane) of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn activate<const ACT: i64>(v: __m256, slope: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    match ACT {
        ACT_RELU => _mm256_max_ps(v, zero),
        ACT_RELU6 => _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(6.0)),
        ACT_LEAKY => {
            let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero);
            _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), neg)
        }
        _ => v,
    }
}

/// Rows of a tile one vector wide: 12 accumulators, as in a full tile.
const MR_HALF: usize = 12;
/// Rows of a tile three vectors wide (a full panel and 8 columns of the next): 9 accumulators,
/// three weight vectors and the broadcasts, one load per FMA and a half, as in a full tile. Split
/// into a full tile and a one-vector tile, the narrow columns cost a broadcast per FMA: ShuffleNet
/// v2's 1x1 layers of 116 columns 0.0556 -> 0.0494 ms at 14x14. With 4 rows (12 accumulators,
/// and all 16 registers) the compiler passed accumulators through moves: twice as slow.
const MR_THREE: usize = 3;

/// All rows of the call, in as few tiles of at most [`MR`] rows ([`MR_HALF`] when `NV` is 1) as
/// possible, of heights that differ by at most one (a tile of one or two rows waits on the
/// latency of its few FMA chains). `NV`: vectors of 8 columns computed (1 when the panel has at
/// most 8 valid columns, then only with `PLAIN`); `TABLE`: the input offsets come from
/// `a_offsets`; `PLAIN`: the epilogue is resolved at compile time, the activation `ACT` after the
/// residual when `RES` and before the affine when `AFFINE` (see [`tile`]). Every element is
/// computed by the same operations whatever the height of its tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_of<
    const NV: usize,
    const TABLE: bool,
    const PLAIN: bool,
    const ACT: i64,
    const AFFINE: bool,
    const RES: bool,
    const DENSE: bool,
>(
    a: *const f32,
    a_stride: isize,
    a_offsets: *const u32,
    panel: *const f32,
    k: usize,
    rows: i64,
    ep: &mut Epilogue,
    (ahead, ahead_lines): (*const f32, usize),
) {
    let rows = rows.max(0) as usize;
    let tiles = rows.div_ceil(match NV {
        1 => MR_HALF,
        3 => MR_THREE,
        _ => MR,
    });
    if tiles == 0 {
        return;
    }
    // The first `rows % tiles` tiles have one row more than the others.
    let (short, taller) = (rows / tiles, rows % tiles);
    let mut a = a;
    macro_rules! heights {
        ($($h:literal)*) => {
            |height: usize, a: *const f32, ep: &Epilogue, fetch: Fetch| match height {
                $($h => tile::<$h, NV, TABLE, PLAIN, ACT, AFFINE, RES, DENSE>(a, a_stride, a_offsets, panel, k, ep, fetch),)*
                _ => {}
            }
        };
    }
    // Tile `i` prefetches lines `i, i + tiles, ...` of the next panel, one every `tiles`
    // k-steps (see the module documentation).
    let next = panel.wrapping_add(NR * k * if NV == 3 { 2 } else { 1 });
    for i in 0..tiles {
        let height = short + usize::from(i < taller);
        let fetch = Fetch {
            next: next.wrapping_add(NR * i),
            every: tiles,
            ahead: ahead.wrapping_add(NR * i),
            ahead_steps: ahead_lines.saturating_sub(i),
        };
        if NV == 1 {
            heights!(1 2 3 4 5 6 7 8 9 10 11 12)(height, a, ep, fetch);
        } else if NV == 3 {
            heights!(1 2 3)(height, a, ep, fetch);
        } else {
            heights!(1 2 3 4 5 6)(height, a, ep, fetch);
        }
        let step = height as isize;
        a = a.wrapping_offset(a_stride.wrapping_mul(step));
        ep.out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(step));
        if !ep.res.is_null() {
            ep.res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(step));
        }
    }
}

/// The first `n` (`0..=8`) lanes of the vector at `p`, the others zero, reading only them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn load_first(p: *const f32, n: usize) -> __m256 {
    if n >= 8 {
        return _mm256_loadu_ps(p);
    }
    let mut lanes = [0.0f32; 8];
    std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n);
    _mm256_loadu_ps(lanes.as_ptr())
}

/// Stores the first `n` (`0..=8`) lanes of `v` at `p`, writing nothing else: 4-, 2- and 1-lane
/// stores (a masked store is slow on some AMD cores).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn store_first(p: *mut f32, n: usize, v: __m256) {
    if n >= 8 {
        _mm256_storeu_ps(p, v);
        return;
    }
    let (mut x, mut p, mut n) = (_mm256_castps256_ps128(v), p, n);
    if n >= 4 {
        _mm_storeu_ps(p, x);
        x = _mm256_extractf128_ps::<1>(v);
        p = p.add(4);
        n -= 4;
    }
    if n >= 2 {
        _mm_storel_pd(p as *mut f64, _mm_castps_pd(x));
        x = _mm_movehl_ps(x, x);
        p = p.add(2);
        n -= 2;
    }
    if n == 1 {
        _mm_store_ss(p, x);
    }
}

/// What a tile prefetches: at k-steps `0, every, 2 * every, ...` the line at `next + 16 * k-step`
/// (the next panel), and while the k-step is below `ahead_steps`, the line at
/// `ahead + 16 * k-step` (the call's share of a later kernel's weights).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Fetch {
    next: *const f32,
    every: usize,
    ahead: *const f32,
    ahead_steps: usize,
}

/// One tile of `R` rows x 16 columns (8 when `NV` is 1; 24 when `NV` is 3, the third vector
/// from the next panel, only with `PLAIN` and contiguous columns). With `PLAIN` the epilogue is the
/// residual when `RES` (which then is contiguous), the activation `ACT`, then the affine when
/// `AFFINE`, unrolled with no run-time test but the store's; otherwise the epilogue follows `ep`.
/// Both compute the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile<
    const R: usize,
    const NV: usize,
    const TABLE: bool,
    const PLAIN: bool,
    const ACT: i64,
    const AFFINE: bool,
    const RES: bool,
    const DENSE: bool,
>(
    a: *const f32,
    a_stride: isize,
    a_offsets: *const u32,
    panel: *const f32,
    k: usize,
    ep: &Epilogue,
    fetch: Fetch,
) {
    let mut bias = [_mm256_setzero_ps(); NV];
    if !ep.bias.is_null() {
        for (h, b) in bias.iter_mut().enumerate() {
            *b = _mm256_loadu_ps(ep.bias.add(8 * h));
        }
    }
    let mut acc = [bias; R];
    let mut rows = [a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = a.wrapping_offset(a_stride.wrapping_mul(r as isize));
    }
    let mut w = panel;
    let mut due = 0;
    for kk in 0..k {
        if kk == due {
            _mm_prefetch::<_MM_HINT_T0>(fetch.next.wrapping_add(NR * kk) as *const i8);
            if kk < fetch.ahead_steps {
                _mm_prefetch::<_MM_HINT_T0>(fetch.ahead.wrapping_add(NR * kk) as *const i8);
            }
            due += fetch.every;
        }
        let mut wv = [_mm256_setzero_ps(); NV];
        for (h, x) in wv.iter_mut().enumerate() {
            // The third vector is the first of the next panel's.
            *x = _mm256_loadu_ps(w.add(if h < 2 { 8 * h } else { NR * k }));
        }
        let off = if TABLE { *a_offsets.add(kk) as usize } else { 0 };
        for r in 0..R {
            let x = _mm256_broadcast_ss(&*rows[r].add(off));
            for h in 0..NV {
                acc[r][h] = _mm256_fmadd_ps(x, wv[h], acc[r][h]);
            }
            if !TABLE {
                rows[r] = rows[r].add(1);
            }
        }
        w = w.add(NR);
    }
    let zero = _mm256_setzero_ps();
    let six = _mm256_set1_ps(6.0);
    let slope = _mm256_set1_ps(ep.slope);
    // The affine's scales and shifts of the tile's vectors (read only with `AFFINE`).
    let mut post = [(zero, zero); NV];
    if AFFINE {
        for (h, p) in post.iter_mut().enumerate() {
            *p = (
                _mm256_loadu_ps(ep.scale.add(8 * h)),
                _mm256_loadu_ps(ep.shift.add(8 * h)),
            );
        }
    }
    let finish = |v: __m256, h: usize| {
        let v = activate::<ACT>(v, slope);
        if AFFINE {
            _mm256_fmadd_ps(v, post[h].0, post[h].1)
        } else {
            v
        }
    };
    if PLAIN && DENSE {
        for (r, acc) in acc.iter().enumerate() {
            let out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(r as isize));
            let res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(r as isize));
            for (h, &v) in acc.iter().enumerate() {
                let mut v = v;
                if RES {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(res.wrapping_add(8 * h)));
                }
                _mm256_storeu_ps(out.wrapping_add(8 * h), finish(v, h));
            }
        }
        return;
    }
    if PLAIN {
        let full = ep.cols == 8 * NV;
        for (r, acc) in acc.iter().enumerate() {
            let out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(r as isize));
            let res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(r as isize));
            for (h, &v) in acc.iter().enumerate() {
                let valid = if full { 8 } else { ep.cols.saturating_sub(8 * h).min(8) };
                let mut v = v;
                if RES {
                    v = _mm256_add_ps(v, load_first(res.wrapping_add(8 * h), valid));
                }
                v = finish(v, h);
                match &ep.scatter {
                    None => store_first(out.wrapping_add(8 * h), valid, v),
                    Some(at) => {
                        let mut lanes = [0.0f32; 8];
                        let mut slots = [0u32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                        _mm256_storeu_si256(slots.as_mut_ptr() as *mut __m256i, at[0][h]);
                        for l in 0..valid {
                            *out.add(slots[l] as usize) = lanes[l];
                        }
                    }
                }
            }
        }
        return;
    }
    let post = (!ep.scale.is_null() && !ep.shift.is_null()).then(|| {
        [
            (_mm256_loadu_ps(ep.scale), _mm256_loadu_ps(ep.shift)),
            (_mm256_loadu_ps(ep.scale.add(8)), _mm256_loadu_ps(ep.shift.add(8))),
        ]
    });
    for (r, acc) in acc.iter().enumerate() {
        let out = ep.out.wrapping_offset(ep.out_stride.wrapping_mul(r as isize));
        let res = ep.res.wrapping_offset(ep.res_stride.wrapping_mul(r as isize));
        for (h, &v) in acc.iter().enumerate() {
            let mut v = v;
            if !ep.res.is_null() {
                let x = match (&ep.scatter, ep.mask) {
                    (None, None) => _mm256_loadu_ps(res.wrapping_add(8 * h)),
                    (None, Some(m)) => _mm256_maskload_ps(res.wrapping_add(8 * h), m[h]),
                    (Some(at), m) => {
                        let m = m.map_or(_mm256_set1_epi32(-1), |m| m[h]);
                        _mm256_mask_i32gather_ps::<4>(zero, res, at[1][h], _mm256_castsi256_ps(m))
                    }
                };
                v = _mm256_add_ps(v, x);
            }
            v = match ep.act {
                ACT_RELU => _mm256_max_ps(v, zero),
                ACT_RELU6 => _mm256_min_ps(_mm256_max_ps(v, zero), six),
                ACT_LEAKY => {
                    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero);
                    _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), neg)
                }
                _ => v,
            };
            if let Some(p) = &post {
                v = _mm256_fmadd_ps(v, p[h].0, p[h].1);
            }
            match (&ep.scatter, ep.mask) {
                (None, None) => _mm256_storeu_ps(out.wrapping_add(8 * h), v),
                (None, Some(m)) => _mm256_maskstore_ps(out.wrapping_add(8 * h), m[h], v),
                (Some(at), _) => {
                    // No scatter in AVX2: one store per valid column.
                    let mut lanes = [0.0f32; 8];
                    let mut slots = [0u32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                    _mm256_storeu_si256(slots.as_mut_ptr() as *mut __m256i, at[0][h]);
                    for l in 0..ep.cols.saturating_sub(8 * h).min(8) {
                        *out.add(slots[l] as usize) = lanes[l];
                    }
                }
            }
        }
    }
}
