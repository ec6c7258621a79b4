//! f16 and bf16 weights: the float micro-kernel of [`super::matmul_f32`] with a converting load.
//!
//! * f16 → f32 with F16C `vcvtph2ps` (8 values per instruction; exact).
//! * bf16 → f32 is a 16-bit shift (bf16 is the upper half of an f32): zero-extend 8 u16 to
//!   u32 lanes and shift left by 16 — vectorized here because `half`'s slice conversion is
//!   scalar for bf16 (DESIGN.md §9).
//!
//! Weights are converted in registers, never to a buffer: decode is bound by the bytes read,
//! and a 2-byte weight halves them.

use half::{bf16, f16};

use super::matmul_f32::FloatWeight;

impl FloatWeight for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: `p` is valid for 8 f16 = 16 bytes (the trait's contract).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }
}

impl FloatWeight for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: `p` is valid for 8 bf16 = 16 bytes (the trait's contract).
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_exact() {
        let vals = [0.0f32, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 3.0e38, -1.0e-40];
        for v in vals {
            assert_eq!(
                FloatWeight::to_f32(bf16::from_f32(v)).to_bits(),
                bf16::from_f32(v).to_f32().to_bits()
            );
            assert_eq!(FloatWeight::to_f32(f16::from_f32(v)).to_bits(), f16::from_f32(v).to_f32().to_bits());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_loads_match_scalar() {
        if !crate::ops::cpu::Isa::Avx2.available() {
            return;
        }
        let src = [1.0f32, -3.25, 1e-6, 60000.0, -0.0, 7.0e-39, 0.333, -1e30];
        let h: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
        let b: Vec<bf16> = src.iter().map(|&v| bf16::from_f32(v)).collect();
        let (mut gh, mut gb) = ([0.0f32; 8], [0.0f32; 8]);
        // SAFETY: AVX2/FMA/F16C are available (checked above); each buffer has 8 elements.
        unsafe {
            use std::arch::x86_64::_mm256_storeu_ps;
            _mm256_storeu_ps(gh.as_mut_ptr(), <f16 as FloatWeight>::load8(h.as_ptr()));
            _mm256_storeu_ps(gb.as_mut_ptr(), <bf16 as FloatWeight>::load8(b.as_ptr()));
        }
        for i in 0..8 {
            assert_eq!(gh[i].to_bits(), h[i].to_f32().to_bits());
            assert_eq!(gb[i].to_bits(), b[i].to_f32().to_bits());
        }
    }
}
