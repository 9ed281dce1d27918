//! Measures this machine's single-core peak of 128-bit (f32x4), 256-bit (f32x8) and, where the
//! CPU has AVX-512F, 512-bit (f32x16) fused multiply-adds: 12 independent accumulator chains, so
//! the FMA units, not the latency of one chain, bound the loop.
//!
//! `cargo run --release --example fma_peak`

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::time::Instant;

    const ITERS: u64 = 50_000_000;
    const CHAINS: u64 = 12;

    /// GFLOP/s of `ITERS` rounds of 12 independent f32x4 FMAs.
    #[target_feature(enable = "fma")]
    unsafe fn f32x4() -> f64 {
        let m = _mm_set1_ps(0.999_999);
        let a = _mm_set1_ps(1e-7);
        let mut acc = [_mm_set1_ps(1.0); CHAINS as usize];
        let t = Instant::now();
        for _ in 0..ITERS {
            for x in acc.iter_mut() {
                *x = _mm_fmadd_ps(*x, m, a);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        (ITERS * CHAINS * 4 * 2) as f64 / secs / 1e9
    }

    /// The same with f32x8.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn f32x8() -> f64 {
        let m = _mm256_set1_ps(0.999_999);
        let a = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); CHAINS as usize];
        let t = Instant::now();
        for _ in 0..ITERS {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, m, a);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        (ITERS * CHAINS * 8 * 2) as f64 / secs / 1e9
    }

    /// The same with f32x16 (AVX-512).
    #[target_feature(enable = "avx512f")]
    unsafe fn f32x16() -> f64 {
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); CHAINS as usize];
        let t = Instant::now();
        for _ in 0..ITERS {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, a);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(acc);
        (ITERS * CHAINS * 16 * 2) as f64 / secs / 1e9
    }

    pub fn main() {
        if !(is_x86_feature_detected!("fma") && is_x86_feature_detected!("avx2")) {
            eprintln!("this CPU has no FMA/AVX2");
            return;
        }
        // Best of several runs: the machine may be shared.
        let best = |f: unsafe fn() -> f64| (0..5).map(|_| unsafe { f() }).fold(0.0, f64::max);
        println!("f32x4 FMA peak: {:.1} GFLOP/s", best(f32x4));
        println!("f32x8 FMA peak: {:.1} GFLOP/s", best(f32x8));
        if is_x86_feature_detected!("avx512f") {
            println!("f32x16 FMA peak: {:.1} GFLOP/s", best(f32x16));
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("this example measures x86-64 FMA units only");
}
