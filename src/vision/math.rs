//! Element-wise math of the encoder in f32: `exp`, `erf`, exact GELU, written so that LLVM
//! vectorizes them (branch-free, no library calls) and so that the AVX2 and portable builds
//! of the same loop give the same bits (every multiply-add is an explicit `mul_add`).
//!
//! * `exp`: Cody–Waite range reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, then the degree-6
//!   Taylor polynomial of `e^r` (truncation error `r⁷/7! ≤ 1.2·10⁻⁷` relative), then `2ⁿ`
//!   built in the exponent bits. Inputs are clamped to `[-87.3, 88.7]` (below: a tiny normal
//!   number instead of 0 or a denormal; softmax and GELU never need more). Max relative error
//!   about 2 ulp (checked against f64 in the tests).
//! * `erf`: Abramowitz & Stegun 7.1.26 (`1 − (a₁t + … + a₅t⁵)·e^{−x²}`, `t = 1/(1 + p|x|)`), max
//!   absolute error 1.5·10⁻⁷ by the formula plus f32 cancellation in `1 − poly·e^{−x²}` near 0
//!   (6.2·10⁻⁷ measured; GELU's error stays below 2·10⁻⁷·max(|x|, 1)); odd symmetry by
//!   `copysign`.
//!   Chosen over a rational minimax fit because its coefficients are published and it needs only
//!   the `exp` above.
//! * `gelu`: `0.5·x·(1 + erf(x/√2))`, the exact (erf) GELU of HF `hidden_act: "gelu"`.

/// `1.5 · 2²³`: adding and subtracting it rounds an f32 of magnitude < 2²² to an integer
/// (ties to even), branch-free and vectorizable.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for |n| ≤ 2⁹.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.7;

/// `e^x` in f32 (see the module doc). NaN propagates (the clamp keeps NaN in `max`/`min`
/// order below, so the result is NaN or a finite value; callers never pass NaN).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    // Horner form of Σ r^i / i!, i = 0..=6.
    let mut p = 1.0 / 720.0f32;
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n ∈ [-126, 128]: 2ⁿ from the exponent bits (n = 128 only for x near 88.7: split in two).
    // SAFETY: a finite `n` is an integer in [-126, 128] (x was clamped above), so the unchecked
    // conversion is exact; NaN maps to 0 as `as i32` does. Same values as `n as i32`, whose
    // saturating conversion LLVM does not vectorize.
    let n: i32 = if n.is_finite() { unsafe { n.to_int_unchecked() } } else { 0 };
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    p * s1 * s2
}

/// A&S 7.1.26 constants.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// `erf(x)` in f32 (see the module doc).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / ERF_P.mul_add(a, 1.0);
    let mut poly = ERF_A[4];
    poly = poly.mul_add(t, ERF_A[3]);
    poly = poly.mul_add(t, ERF_A[2]);
    poly = poly.mul_add(t, ERF_A[1]);
    poly = poly.mul_add(t, ERF_A[0]);
    poly *= t;
    let y = (-poly).mul_add(exp(-a * a), 1.0);
    y.copysign(x)
}

/// Exact GELU: `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `gelu` over a slice, in place.
#[inline(always)]
pub fn gelu_slice(values: &mut [f32]) {
    for v in values {
        *v = gelu(*v);
    }
}

/// 8-lane AVX2 twins of the scalar functions above: the same operations in the same order
/// (separate multiply and add where the scalar code has them, FMA where it has `mul_add`), so
/// every lane gives the bits of the scalar function.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, LN2_HI, LN2_LO, LOG2E, ROUND_MAGIC};

    /// [`super::exp`] of each lane, for finite inputs (softmax scores).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn exp8(x: __m256) -> __m256 {
        // clamp(min, max) as `f32::clamp` for non-NaN x.
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
        let magic = _mm256_set1_ps(ROUND_MAGIC);
        let n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), magic), magic);
        let neg_n = _mm256_xor_ps(n, _mm256_set1_ps(-0.0));
        let r =
            _mm256_fmadd_ps(neg_n, _mm256_set1_ps(LN2_LO), _mm256_fmadd_ps(neg_n, _mm256_set1_ps(LN2_HI), x));
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        let n = _mm256_cvttps_epi32(n); // exact: n is an integer in [-126, 128]
        let half = _mm256_srai_epi32::<1>(n);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(half, bias)));
        let s2 =
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_sub_epi32(n, half), bias)));
        _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)
    }
}

#[cfg(test)]
mod tests {
    /// The AVX2 `exp8` gives the scalar `exp`'s bits in every lane.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_matches_scalar_bits() {
        use std::arch::x86_64::*;
        if !crate::ops::Isa::Avx2.available() {
            return;
        }
        let mut x = -100.0f32;
        while x < 100.0 {
            let xs: [f32; 8] = std::array::from_fn(|l| x + l as f32 * 1.3e-3);
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2/FMA/F16C checked above; both arrays hold 8 values.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), super::avx2::exp8(_mm256_loadu_ps(xs.as_ptr()))) };
            for (g, &v) in got.iter().zip(&xs) {
                assert_eq!(g.to_bits(), super::exp(v).to_bits(), "exp({v})");
            }
            x += 0.0173;
        }
    }
}
