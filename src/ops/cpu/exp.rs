//! `exp` of f32 values that is the same function on every path: [`exp`] (scalar) and
//! `avx2::exp8` (8 lanes) perform the same IEEE operations in the same order, so the
//! decoder's softmax and SiLU give the same bits whichever path runs them (and
//! `avx2::exp8_avx512`, the same lanes in 512-bit vectors, too), and the vector path
//! costs a fraction of a call to the C library's `expf` per element (which the compiler cannot
//! vectorize, and whose last bit may differ between C libraries).
//!
//! The value is computed in f64 and rounded once to f32, which makes it the correctly rounded
//! `e^x` except where the exact value lies within about 1e-15 (relative) of a point halfway
//! between two f32 values (a few inputs in 10^8; glibc's `expf`, the previous function here,
//! is within 0.502 ulp and so also misrounds in a sliver of cases). With `x` widened to f64:
//!
//! ```text
//! n = round(x · log2 e)          (ties to even)
//! r = x − n · ln 2               (two fused steps, ln 2 = hi + lo)
//! e^x = 2^n · Σ_{k ≤ 12} r^k / k!   (Horner, fused multiply-adds; |r| ≤ ln 2 / 2, so the
//!                                    truncation is below 2e-16 relative)
//! ```
//!
//! `x` is clamped to `[−110, 90]` first, where `2^n` is a normal f64 and the f32 rounding gives
//! 0 below −103.98 (subnormal results from −87.34 are rounded, not flushed) and +∞ above
//! 88.73; NaN gives NaN. Fused multiply-adds are exact on every CPU (`f64::mul_add` is
//! correctly rounded whether or not the CPU has FMA), which is what makes the paths agree.

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// `ln 2 = LN2_HI + LN2_LO` (fdlibm's split: `LN2_HI` ends in 32 zero bits).
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
/// `1 / k!` for `k = 12` down to 2 (then `r + 1`).
const INV_FACT: [f64; 11] = [
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];
/// The clamp of the input (see the module docs).
const LO: f64 = -110.0;
const HI: f64 = 90.0;

/// `e^x`, correctly rounded but for rare near-halfway cases (see the module docs).
#[inline]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = (x as f64).clamp(LO, HI);
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = INV_FACT[0];
    for &c in &INV_FACT[1..] {
        p = p.mul_add(r, c);
    }
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.0);
    // |n| ≤ 159, so 2^n is a normal f64.
    (p * f64::from_bits(((n as i64 + 1023) as u64) << 52)) as f32
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{HI, INV_FACT, LN2_HI, LN2_LO, LO, LOG2E};

    /// [`super::exp`] of 4 lanes already widened to f64 (NaN lanes give unspecified values).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn exp4(x: __m256d) -> __m128 {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let x = _mm256_min_pd(_mm256_max_pd(x, _mm256_set1_pd(LO)), _mm256_set1_pd(HI));
        let n = _mm256_round_pd::<NEAREST>(_mm256_mul_pd(x, _mm256_set1_pd(LOG2E)));
        let r = _mm256_fmadd_pd(n, _mm256_set1_pd(-LN2_HI), x);
        let r = _mm256_fmadd_pd(n, _mm256_set1_pd(-LN2_LO), r);
        let mut p = _mm256_set1_pd(INV_FACT[0]);
        for &c in &INV_FACT[1..] {
            p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
        }
        let one = _mm256_set1_pd(1.0);
        let p = _mm256_fmadd_pd(_mm256_fmadd_pd(p, r, one), r, one);
        // 2^n from the exponent field: n + 1023 in bits 52.. of each 64-bit lane.
        let e = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n));
        let e = _mm256_slli_epi64::<52>(_mm256_add_epi64(e, _mm256_set1_epi64x(1023)));
        _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(e)))
    }

    /// [`super::exp`] of 8 lanes: the same operations, so the same bits lane for lane.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn exp8(x: __m256) -> __m256 {
        let lo = exp4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        let hi = exp4(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
        let y = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi);
        _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }

    /// [`exp8`] with the 8 lanes widened into one 512-bit vector: half the instructions, the
    /// same operations per lane, so the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    pub(crate) fn exp8_avx512(x: __m256) -> __m256 {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let xd = _mm512_cvtps_pd(x);
        let xd = _mm512_min_pd(_mm512_max_pd(xd, _mm512_set1_pd(LO)), _mm512_set1_pd(HI));
        let n = _mm512_roundscale_pd::<NEAREST>(_mm512_mul_pd(xd, _mm512_set1_pd(LOG2E)));
        let r = _mm512_fmadd_pd(n, _mm512_set1_pd(-LN2_HI), xd);
        let r = _mm512_fmadd_pd(n, _mm512_set1_pd(-LN2_LO), r);
        let mut p = _mm512_set1_pd(INV_FACT[0]);
        for &c in &INV_FACT[1..] {
            p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(c));
        }
        let one = _mm512_set1_pd(1.0);
        let p = _mm512_fmadd_pd(_mm512_fmadd_pd(p, r, one), r, one);
        let e = _mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(n));
        let e = _mm512_slli_epi64::<52>(_mm512_add_epi64(e, _mm512_set1_epi64(1023)));
        let y = _mm512_cvtpd_ps(_mm512_mul_pd(p, _mm512_castsi512_pd(e)));
        _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }

    /// [`exp8_avx512`] with `W512`, else [`exp8`] (the same bits): for kernels generic over the
    /// vector width, inlined into the entry point that enables the features.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C, and with `W512` AVX512F/VL.
    #[inline(always)]
    pub(crate) unsafe fn exp8_either<const W512: bool>(x: __m256) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe {
            if W512 {
                exp8_avx512(x)
            } else {
                exp8(x)
            }
        }
    }

    /// Whether the CPU can run [`exp8_avx512`] (besides AVX2, FMA and F16C).
    pub(crate) fn has_avx512() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense sweep of [-110, 95] plus the edges and specials.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..=820_000).map(|i| -110.0 + i as f32 * 0.00025).collect();
        v.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            -87.33,
            -87.34,
            -103.97,
            -103.98,
            88.72,
            88.73,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            0.5 * std::f32::consts::LN_2,
            -0.5 * std::f32::consts::LN_2,
        ]);
        v
    }

    /// Against f64 `exp` rounded to f32 (itself correctly rounded but for ~1e-8 of inputs):
    /// equal on all but a handful of the 820k inputs, and never more than 1 ulp apart. Also
    /// counts how often glibc's `expf` (what `f32::exp` calls) differs, for the record.
    #[test]
    fn correctly_rounded_but_for_rare_halfway_cases() {
        let (mut differ, mut libm_differ) = (0, 0);
        for x in inputs() {
            let got = exp(x);
            let want = (x as f64).exp() as f32;
            if got.to_bits() != want.to_bits() {
                differ += 1;
                let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
                assert!(ulps <= 1, "exp({x}) = {got}, correctly rounded {want}");
            }
            libm_differ += usize::from(x.exp().to_bits() != want.to_bits());
        }
        assert!(differ <= 4, "{differ} inputs not correctly rounded");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        eprintln!("exp: {differ} not correctly rounded; the C library's expf: {libm_differ}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_equals_scalar_bit_for_bit() {
        if !crate::ops::Isa::Avx2.available() {
            return;
        }
        let mut xs = inputs();
        xs.push(f32::NAN);
        for chunk in xs.chunks(8) {
            let mut lanes = [0.0f32; 8];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let (mut got, mut got512) = ([0.0f32; 8], [0.0f32; 8]);
            // SAFETY: AVX2/FMA/F16C are available (checked above), AVX512F/VL where
            // `has_avx512` says so; 8-lane loads and stores of 8-element arrays.
            unsafe {
                use std::arch::x86_64::*;
                let v = _mm256_loadu_ps(lanes.as_ptr());
                _mm256_storeu_ps(got.as_mut_ptr(), avx2::exp8(v));
                if avx2::has_avx512() {
                    _mm256_storeu_ps(got512.as_mut_ptr(), avx2::exp8_avx512(v));
                } else {
                    got512 = got;
                }
            }
            for ((&x, &g), &g5) in lanes.iter().zip(&got).zip(&got512) {
                let want = exp(x);
                for (g, what) in [(g, "exp8"), (g5, "exp8_avx512")] {
                    assert!(
                        g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                        "{what}({x}) = {g}, scalar {want}"
                    );
                }
            }
        }
    }
}
