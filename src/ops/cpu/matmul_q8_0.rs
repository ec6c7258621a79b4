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

    #[cfg(target_arch = "x86_64")]
    type Group = Q8Group;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn transpose(p: *const u8) -> Q8Group {
        use std::arch::x86_64::*;
        // SAFETY: 8 blocks of 32 bytes are readable at `p` (the trait's contract).
        let v: [__m256i; 8] = std::array::from_fn(|b| unsafe { _mm256_loadu_si256(p.add(32 * b).cast()) });
        let w = super::simd::avx2::transpose8x32(&v);
        // |w| (with |−128| = 0x80, i.e. 128 as the unsigned operand of `maddubs`).
        Q8Group { abs: w.map(|v| _mm256_sign_epi8(v, v)), w }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn group_sums_il(g: &Q8Group, x: *const i8) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_setzero_si256(); 2];
        for c in 0..8 {
            // SAFETY: chunk c of the 256-byte interleaved group is readable (the contract).
            let xv = unsafe { _mm256_loadu_si256(x.add(32 * c).cast()) };
            // Pair sums ≤ 2 · 128 · 127 (no saturation); lane l gathers block l only.
            let prod = _mm256_maddubs_epi16(g.abs[c], _mm256_sign_epi8(xv, g.w[c]));
            acc[c % 2] = _mm256_add_epi32(acc[c % 2], super::simd::avx2::pairs_to_i32(prod));
        }
        _mm256_add_epi32(acc[0], acc[1])
    }

    /// `vpdpbusd` multiplies unsigned by signed bytes: the weights go in as `q + 128` (the sign
    /// bit flipped), and the `128 · Σ q_x` this adds is taken off by the kernel.
    const VNNI_BIAS_LOG2: u32 = 7;
    const NIBBLES: bool = false;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn transpose_vnni(p: *const u8) -> [std::arch::x86_64::__m256i; 8] {
        use std::arch::x86_64::*;
        // SAFETY: 8 blocks of 32 bytes are readable at `p` (the trait's contract).
        let v: [__m256i; 8] = std::array::from_fn(|b| unsafe { _mm256_loadu_si256(p.add(32 * b).cast()) });
        // q + 128 as an unsigned byte is q with its sign bit flipped. Per lane of `vpdpbusd`:
        // Σ (q + 128) · x ≤ 32 · 255 · 127, far inside i32.
        let flip = _mm256_set1_epi8(-128);
        super::simd::avx2::transpose8x32(&v).map(|v| _mm256_xor_si256(v, flip))
    }

    /// Block `b` of the two rows as the halves of one 512-bit vector, then one 8 × 8 transpose
    /// of both halves at once and the sign flip: 8 inserts, 24 shuffles and 8 xors for two rows
    /// where [`Q8_0::transpose_vnni`] takes 24 shuffles and 8 xors for one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    unsafe fn transpose_vnni_pair(p0: *const u8, p1: *const u8) -> [std::arch::x86_64::__m512i; 8] {
        use std::arch::x86_64::*;
        // SAFETY: 8 blocks of 32 bytes are readable at `p0` and at `p1` (the trait's contract).
        let v: [__m512i; 8] = std::array::from_fn(|b| unsafe {
            let lo = _mm256_loadu_si256(p0.add(32 * b).cast());
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), _mm256_loadu_si256(p1.add(32 * b).cast()))
        });
        let flip = _mm512_set1_epi8(-128);
        super::simd::avx2::transpose8x32_halves(&v).map(|v| _mm512_xor_si512(v, flip))
    }
}

/// A transposed Q8_0 weight group: the values and their magnitudes (`maddubs` operands).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Q8Group {
    abs: [std::arch::x86_64::__m256i; 8],
    w: [std::arch::x86_64::__m256i; 8],
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_interleaved_group_matches_scalar_at_the_extremes() {
        use crate::ops::cpu::quantize_act::interleave_rows;
        use std::arch::x86_64::*;
        if !crate::ops::cpu::Isa::Avx2.available() {
            return;
        }
        // 8 blocks: −128 and ±127 weights against ±127 activations (the largest pair sums).
        let values: Vec<u8> = (0..8 * QK)
            .map(|i| match i % 5 {
                0 => 0x80,
                1 => 127,
                2 => (-127i8) as u8,
                _ => ((i * 37) as u8).wrapping_sub(100),
            })
            .collect();
        let x: Vec<i8> = (0..8 * QK).map(|i| if (i / 3) % 2 == 0 { 127 } else { -127 }).collect();
        let mut il = vec![0i8; 8 * QK];
        interleave_rows(&x, 1, 8, &mut il);
        let mut lanes = [0i32; 8];
        // SAFETY: AVX2/FMA/F16C are available (checked above); transpose reads the 256 value
        // bytes and group_sums_il the 256 interleaved activation bytes.
        unsafe {
            let g = Q8_0::transpose(values.as_ptr());
            _mm256_storeu_si256(lanes.as_mut_ptr().cast(), Q8_0::group_sums_il(&g, il.as_ptr()));
        }
        for (b, &got) in lanes.iter().enumerate() {
            let xb: &[i8; QK] = x[b * QK..(b + 1) * QK].try_into().unwrap();
            assert_eq!(got, Q8_0::block_dot_scalar(&values[b * QK..(b + 1) * QK], xb), "block {b}");
        }
    }
}
