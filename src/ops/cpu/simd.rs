//! Helpers shared by the kernels: the fixed 8-lane reductions, AVX2 versions and their scalar
//! twins.
//!
//! Every kernel accumulates in 8 f32 lanes and ends with [`hsum8`]'s fixed order, which the
//! scalar path reproduces operation for operation ([`hsum8_scalar`]); that is what makes the
//! AVX2 and the portable results bit-identical.

/// Lanes of one accumulator (one AVX2 `__m256`).
pub(crate) const LANES: usize = 8;

/// The horizontal sum of 8 lanes in the order the AVX2 [`avx2::hsum8`] uses:
/// `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
#[inline(always)]
pub(crate) fn hsum8_scalar(a: &[f32; LANES]) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 f32 lanes, in [`super::hsum8_scalar`]'s order.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hsum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)); // [t0, t1, t2, t3]
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // [t0 + t2, t1 + t3, ..]
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// Horizontal max of 8 f32 lanes (exact in any order).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hmax8(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }

    /// Horizontal sum of 8 i32 lanes (exact in any order while it does not overflow).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hsum8_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
    }

    /// Reduces 8 vectors of 8 i32 partial sums to one vector whose lane `i` is the total of
    /// `v[i]` (a transpose-and-add tree of `hadd`s; integer, so exact).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn reduce8_i32(v: &[__m256i; 8]) -> __m256i {
        // hadd works per 128-bit half: [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7].
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // [v0:0-3, v1:0-3, v2:0-3, v3:0-3 | v0:4-7, v1:4-7, v2:4-7, v3:4-7], and v4..v7 likewise.
        let a = _mm256_hadd_epi32(h01, h23);
        let b = _mm256_hadd_epi32(h45, h67);
        let lo = _mm256_permute2x128_si256::<0x20>(a, b);
        let hi = _mm256_permute2x128_si256::<0x31>(a, b);
        _mm256_add_epi32(lo, hi)
    }

    /// `_mm256_madd_epi16(v, 1)`: adds adjacent i16 pairs into i32 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn pairs_to_i32(v: __m256i) -> __m256i {
        _mm256_madd_epi16(v, _mm256_set1_epi16(1))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reductions_match_scalar() {
            if !crate::ops::cpu::Isa::Avx2.available() {
                return;
            }
            let a: [f32; 8] = [1e8, 1.0, -1e8, 3.5, 0.25, -7.0, 1e-3, 2.0];
            let iv: [[i32; 8]; 8] = std::array::from_fn(|i| std::array::from_fn(|l| (i * 100 + l) as i32 - 300));
            // SAFETY: AVX2/FMA/F16C are available (checked above); the loads read 8 lanes from
            // arrays of exactly 8 elements.
            unsafe {
                let v = _mm256_loadu_ps(a.as_ptr());
                assert_eq!(hsum8(v).to_bits(), super::super::hsum8_scalar(&a).to_bits());
                assert_eq!(hmax8(v), 1e8);
                let vs: [__m256i; 8] = std::array::from_fn(|i| _mm256_loadu_si256(iv[i].as_ptr().cast()));
                let mut out = [0i32; 8];
                _mm256_storeu_si256(out.as_mut_ptr().cast(), reduce8_i32(&vs));
                for i in 0..8 {
                    assert_eq!(out[i], iv[i].iter().sum::<i32>());
                    assert_eq!(hsum8_i32(vs[i]), iv[i].iter().sum::<i32>());
                }
            }
        }
    }
}
