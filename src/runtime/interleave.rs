//! Interleaving three planes into pixels: an RGB image in NCHW order becomes the NHWC input
//! buffer of the generated code (three floats per pixel).
//!
//! On x86-64 with AVX2, eight pixels at a time: each plane's eight values are permuted into the
//! lanes they take in the three output vectors and blended, three loads and three stores per
//! eight pixels. Elsewhere, and for the pixels past the last multiple of eight, pixel by pixel.
//! Both write the same values: this only moves floats.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Writes `out[3 * p + c] = planes[c][p]` for every pixel `p` of the three equal planes;
/// `out` holds exactly three floats per pixel.
pub fn interleave3(r: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) {
    let n = r.len().min(g.len()).min(b.len()).min(out.len() / 3);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present, and every slice holds the `n` pixels it is read or written at.
        done = unsafe { interleave3_avx2(&r[..n], &g[..n], &b[..n], &mut out[..3 * n]) };
    }
    for p in done..n {
        out[3 * p..3 * p + 3].copy_from_slice(&[r[p], g[p], b[p]]);
    }
}

/// The whole groups of eight pixels of [`interleave3`]; returns how many pixels it wrote.
///
/// # Safety
///
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn interleave3_avx2(r: &[f32], g: &[f32], b: &[f32], out: &mut [f32]) -> usize {
    // Output vector 0 is r0 g0 b0 r1 g1 b1 r2 g2, vector 1 b2 r3 g3 b3 r4 g4 b4 r5, vector 2
    // g5 b5 r6 g6 b6 r7 g7 b7: per vector, where each plane's values go (lanes of the other
    // planes are don't-care, 0 here).
    let at = |i: [i32; 8]| _mm256_setr_epi32(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7]);
    let (r0, g0, b0) = (
        at([0, 0, 0, 1, 0, 0, 2, 0]),
        at([0, 0, 0, 0, 1, 0, 0, 2]),
        at([0, 0, 0, 0, 0, 1, 0, 0]),
    );
    let (r1, g1, b1) = (
        at([0, 3, 0, 0, 4, 0, 0, 5]),
        at([0, 0, 3, 0, 0, 4, 0, 0]),
        at([2, 0, 0, 3, 0, 0, 4, 0]),
    );
    let (r2, g2, b2) = (
        at([0, 0, 6, 0, 0, 7, 0, 0]),
        at([5, 0, 0, 6, 0, 0, 7, 0]),
        at([0, 5, 0, 0, 6, 0, 0, 7]),
    );
    let n = r.len() / 8 * 8;
    for p in (0..n).step_by(8) {
        let x = _mm256_loadu_ps(r.as_ptr().add(p));
        let y = _mm256_loadu_ps(g.as_ptr().add(p));
        let z = _mm256_loadu_ps(b.as_ptr().add(p));
        let perm = _mm256_permutevar8x32_ps;
        // Lanes 1, 4, 7 come from g and 2, 5 from b in vector 0; and so on.
        let v0 = _mm256_blend_ps::<0b0010_0100>(_mm256_blend_ps::<0b1001_0010>(perm(x, r0), perm(y, g0)), perm(z, b0));
        let v1 = _mm256_blend_ps::<0b0100_1001>(_mm256_blend_ps::<0b0010_0100>(perm(x, r1), perm(y, g1)), perm(z, b1));
        let v2 = _mm256_blend_ps::<0b1001_0010>(_mm256_blend_ps::<0b0100_1001>(perm(x, r2), perm(y, g2)), perm(z, b2));
        let o = out.as_mut_ptr().add(3 * p);
        _mm256_storeu_ps(o, v0);
        _mm256_storeu_ps(o.add(8), v1);
        _mm256_storeu_ps(o.add(16), v2);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::interleave3;

    #[test]
    fn interleaves_every_pixel_in_order() {
        // Lengths around multiples of eight exercise the vector groups and the scalar tail.
        for n in [0, 1, 7, 8, 9, 16, 23, 24, 61] {
            let plane = |c: usize| (0..n).map(|p| (c * 1000 + p) as f32).collect::<Vec<_>>();
            let (r, g, b) = (plane(0), plane(1), plane(2));
            let mut out = vec![-1.0; 3 * n];
            interleave3(&r, &g, &b, &mut out);
            let want: Vec<f32> = (0..n).flat_map(|p| [r[p], g[p], b[p]]).collect();
            assert_eq!(out, want, "{n} pixels");
        }
    }
}
