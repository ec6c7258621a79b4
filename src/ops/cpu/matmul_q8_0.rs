//! Q8_0 weights × int8 activations: the block dot product of ggml's `ggml_vec_dot_q8_0_q8_0`
//! (AVX2 branch of `ggml-cpu/arch/x86/quants.c`).
//!
//! `maddubs` multiplies unsigned by signed bytes, so a signed × signed block uses the sign
//! trick: `|w| · (x · sign(w))`. With `|x| ≤ 127` (our activations never hold −128) each pair
//! sum is at most `2 · 128 · 127 = 32512`, so the i16 saturation of `maddubs` never triggers,
//! even for a stored weight of −128.

use super::matmul_quant::QuantFormat;
use crate::quant::{q8_0, QK};

/// The Q8_0 format (value = q · d, int8 q).
pub(crate) struct Q8_0;

impl QuantFormat for Q8_0 {
    const VALUE_BYTES: usize = q8_0::VALUE_BYTES;
    const OFFSET8: bool = false;
    const HAS_MIN: bool = false;

    #[inline]
    fn block_dot_scalar(values: &[u8], x: &[i8; QK]) -> i32 {
        values.iter().zip(x).map(|(&w, &x)| (w as i8) as i32 * x as i32).sum()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn unpack(p: *const u8) -> super::matmul_quant::Unpacked {
        // SAFETY: `p` is valid for 32 bytes (the trait's contract).
        unsafe { std::arch::x86_64::_mm256_loadu_si256(p.cast()) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn group_sums(
        u: &[super::matmul_quant::Unpacked; 8],
        x: *const i8,
        blocks: usize,
    ) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let mut p = [_mm256_setzero_si256(); 8];
        for (b, (p, &w)) in p.iter_mut().zip(u).enumerate().take(blocks) {
            // SAFETY: block b < blocks of `x` is readable (the trait's contract).
            let xv = unsafe { _mm256_loadu_si256(x.add(32 * b).cast()) };
            // |w| · (x · sign(w)); |−128| is 0x80 = 128 as an unsigned byte.
            let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
            *p = super::simd::avx2::pairs_to_i32(prod);
        }
        super::simd::avx2::reduce8_i32(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_block_dot_is_signed() {
        let values: Vec<u8> = (0..32).map(|i| (i as i8 - 16) as u8).collect();
        let x: [i8; QK] = std::array::from_fn(|i| if i % 2 == 0 { 127 } else { -127 });
        let want: i32 = (0..32).map(|i| (i - 16) * if i % 2 == 0 { 127 } else { -127 }).sum();
        assert_eq!(Q8_0::block_dot_scalar(&values, &x), want);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_block_dot_matches_scalar_including_minus_128() {
        use std::arch::x86_64::*;
        if !crate::ops::cpu::Isa::Avx2.available() {
            return;
        }
        let mut values: Vec<u8> = (0..32).map(|i| ((i * 37) as u8).wrapping_sub(100)).collect();
        values[3] = 0x80; // −128
        values[4] = 0;
        let x: [i8; QK] = std::array::from_fn(|i| ((i as i32 * 53) % 255 - 127) as i8);
        // SAFETY: AVX2/FMA/F16C are available (checked above); unpack reads the 32 value bytes
        // and group_sums one 32-byte activation block.
        let got = unsafe {
            let u = [Q8_0::unpack(values.as_ptr()); 8];
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), Q8_0::group_sums(&u, x.as_ptr(), 1));
            assert_eq!(&lanes[1..], &[0; 7]);
            lanes[0]
        };
        assert_eq!(got, Q8_0::block_dot_scalar(&values, &x));
    }
}
