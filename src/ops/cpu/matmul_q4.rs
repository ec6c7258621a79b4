//! Q4_0 and Q4_1 weights × int8 activations: the block dot products of ggml's
//! `ggml_vec_dot_q4_0_q8_0` and `ggml_vec_dot_q4_1_q8_1` (AVX2 branches of
//! `ggml-cpu/arch/x86/quants.c`).
//!
//! A block's 16 bytes unpack to 32 unsigned nibbles in element order (byte j: element j low,
//! element j + 16 high), which `maddubs` multiplies directly with the signed activations
//! (pair sums ≤ `2 · 15 · 127`, no saturation). Q4_0's offset is applied once per block from
//! the activation block sum: `Σ (q − 8) · x = Σ q · x − 8 · Σ x`, where ggml instead subtracts 8
//! from every nibble and uses the sign trick; the integers are the same.

use super::matmul_quant::QuantFormat;
use crate::quant::{q4_0, q4_1, QK};

/// The Q4_0 format (value = (q − 8) · d).
pub(crate) struct Q4_0;

/// The Q4_1 format (value = q · d + m).
pub(crate) struct Q4_1;

/// `Σ (nibble_j − offset) · x_j` over one block.
#[inline]
fn nibble_dot(values: &[u8], x: &[i8; QK], offset: i32) -> i32 {
    let (lo, hi) = x.split_at(QK / 2);
    values
        .iter()
        .zip(lo.iter().zip(hi))
        .map(|(&b, (&xl, &xh))| {
            ((b & 0x0F) as i32 - offset) * xl as i32 + ((b >> 4) as i32 - offset) * xh as i32
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::ops::cpu::matmul_quant::Unpacked;

    /// 16 packed bytes → 32 nibbles in element order: the bytes go to both 128-bit halves,
    /// the high half is shifted right by 4 (32-bit lanes; the bits that cross into a byte from
    /// its neighbour are masked off with the other nibble), then every byte is masked to 4 bits.
    ///
    /// # Safety
    /// `p` is valid for 16 bytes; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn unpack(p: *const u8) -> Unpacked {
        // SAFETY: `p` is valid for 16 bytes (the caller's contract).
        let raw = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast())) };
        let shifted = _mm256_srlv_epi32(raw, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }

    /// The `Σ nibble · x` of `blocks ≤ 8` blocks; lanes `≥ blocks` are 0.
    ///
    /// # Safety
    /// `x` is valid for `blocks · 32` reads; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn group_sums(u: &[Unpacked; 8], x: *const i8, blocks: usize) -> __m256i {
        let mut p = [_mm256_setzero_si256(); 8];
        for (b, (p, &w)) in p.iter_mut().zip(u).enumerate().take(blocks) {
            // SAFETY: block b < blocks of `x` is readable (the caller's contract).
            let xv = unsafe { _mm256_loadu_si256(x.add(32 * b).cast()) };
            // Pair sums ≤ 2 · 15 · 127; eight of them fit in i16 (`reduce8_i16`).
            *p = _mm256_maddubs_epi16(w, xv);
        }
        crate::ops::cpu::simd::avx2::reduce8_i16(&p)
    }

    /// 8 blocks (128 bytes) → the 8 interleaved chunks of nibbles: 32-bit word `m` of a block
    /// holds elements `4m..4m + 4` (low nibbles) and `16 + 4m..` (high nibbles), so a 4 × 4
    /// transpose per 128-bit half (blocks 0–3 low, 4–7 high) followed by the two nibble masks
    /// gives chunks `m` and `m + 4`.
    ///
    /// # Safety
    /// `p` is valid for 128 bytes; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn transpose(p: *const u8) -> [__m256i; 8] {
        // SAFETY: blocks j and j + 4 (16 bytes each) lie within the 128 readable bytes.
        let y: [__m256i; 4] = std::array::from_fn(|j| unsafe {
            let lo = _mm256_castsi128_si256(_mm_loadu_si128(p.add(16 * j).cast()));
            _mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(p.add(16 * (j + 4)).cast()))
        });
        let t0 = _mm256_unpacklo_epi32(y[0], y[1]);
        let t1 = _mm256_unpackhi_epi32(y[0], y[1]);
        let t2 = _mm256_unpacklo_epi32(y[2], y[3]);
        let t3 = _mm256_unpackhi_epi32(y[2], y[3]);
        let words = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        let m = _mm256_set1_epi8(0x0F);
        let lo = words.map(|w| _mm256_and_si256(w, m));
        let hi = words.map(|w| _mm256_and_si256(_mm256_srli_epi16::<4>(w), m));
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    }

    /// The 8 block sums `Σ nibble · x` of a transposed group with one interleaved activation
    /// group: the `maddubs` pair sums (≤ 2 · 15 · 127) of the 8 chunks add up in i16 without
    /// overflow (≤ 30480), and one `madd` gives lane l = block l.
    ///
    /// # Safety
    /// `x` is valid for 256 reads; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn group_sums_il(w: &[__m256i; 8], x: *const i8) -> __m256i {
        let mut acc = [_mm256_setzero_si256(); 2];
        for (c, &w) in w.iter().enumerate() {
            // SAFETY: chunk c of the 256-byte group is readable (the caller's contract).
            let xv = unsafe { _mm256_loadu_si256(x.add(32 * c).cast()) };
            acc[c % 2] = _mm256_add_epi16(acc[c % 2], _mm256_maddubs_epi16(w, xv));
        }
        crate::ops::cpu::simd::avx2::pairs_to_i32(_mm256_add_epi16(acc[0], acc[1]))
    }
}

/// The two 4-bit formats differ only in their constants and the scalar offset; the AVX2 path is
/// shared (Q4_0's −8 is applied by `accumulate` from the activation sums).
macro_rules! q4_format {
    ($ty:ident, $module:ident, offset8: $offset8:expr, has_min: $has_min:expr, scalar_offset: $off:expr,
     vnni_bias_log2: $vbias:expr) => {
        impl QuantFormat for $ty {
            const VALUE_BYTES: usize = $module::VALUE_BYTES;
            const OFFSET8: bool = $offset8;
            const HAS_MIN: bool = $has_min;

            #[inline]
            fn block_dot_scalar(values: &[u8], x: &[i8; QK]) -> i32 {
                nibble_dot(values, x, $off)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn unpack(p: *const u8) -> super::matmul_quant::Unpacked {
                // SAFETY: forwarded contract (16 readable bytes, AVX2 present).
                unsafe { avx2::unpack(p) }
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn group_sums(
                u: &[super::matmul_quant::Unpacked; 8],
                x: *const i8,
                blocks: usize,
            ) -> std::arch::x86_64::__m256i {
                // SAFETY: forwarded contract (`blocks` readable activation blocks, AVX2 present).
                unsafe { avx2::group_sums(u, x, blocks) }
            }

            #[cfg(target_arch = "x86_64")]
            type Group = [std::arch::x86_64::__m256i; 8];

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn transpose(p: *const u8) -> Self::Group {
                // SAFETY: forwarded contract (8 readable blocks, AVX2 present).
                unsafe { avx2::transpose(p) }
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn group_sums_il(w: &Self::Group, x: *const i8) -> std::arch::x86_64::__m256i {
                // SAFETY: forwarded contract (256 readable bytes, AVX2 present).
                unsafe { avx2::group_sums_il(w, x) }
            }

            const VNNI_BIAS_LOG2: u32 = $vbias;
            const NIBBLES: bool = true;

            /// The nibbles are the unsigned operand of `vpdpbusd` as they are.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            #[inline]
            unsafe fn transpose_vnni(p: *const u8) -> [std::arch::x86_64::__m256i; 8] {
                // SAFETY: forwarded contract (8 readable blocks, AVX2 present).
                unsafe { avx2::transpose(p) }
            }
        }
    };
}

q4_format!(Q4_0, q4_0, offset8: true, has_min: false, scalar_offset: 8, vnni_bias_log2: 3);
q4_format!(Q4_1, q4_1, offset8: false, has_min: true, scalar_offset: 0, vnni_bias_log2: 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_nibble_order() {
        // byte j: element j low nibble, element j + 16 high nibble.
        let mut values = [0u8; 16];
        values[0] = 0x3 | (0xA << 4);
        let mut x = [0i8; QK];
        x[0] = 5;
        x[16] = -7;
        assert_eq!(Q4_1::block_dot_scalar(&values, &x), 3 * 5 + 10 * -7);
        // Q4_0 also subtracts 8 from every nibble, including the zero bytes.
        assert_eq!(Q4_0::block_dot_scalar(&values, &x), (3 - 8) * 5 + (10 - 8) * -7);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_block_dot_matches_scalar() {
        use std::arch::x86_64::*;
        if !crate::ops::cpu::Isa::Avx2.available() {
            return;
        }
        let values: Vec<u8> = (0..16).map(|i| (i * 77 + 13) as u8).collect();
        let x: [i8; QK] = std::array::from_fn(|i| ((i as i32 * 91) % 255 - 127) as i8);
        let sx: i32 = x.iter().map(|&v| v as i32).sum();
        // SAFETY: AVX2/FMA/F16C are available (checked above); unpack reads the 16 value bytes
        // and group_sums three 32-byte activation blocks.
        let (q0, q1) = unsafe {
            let xs = [x, x, x].concat();
            let u = [Q4_0::unpack(values.as_ptr()); 8];
            let (mut a, mut b) = ([0i32; 8], [0i32; 8]);
            _mm256_storeu_si256(a.as_mut_ptr().cast(), Q4_0::group_sums(&u, xs.as_ptr(), 3));
            _mm256_storeu_si256(b.as_mut_ptr().cast(), Q4_1::group_sums(&u, xs.as_ptr(), 3));
            assert_eq!((a[0], a[1], a[2], &a[3..]), (a[0], a[0], a[0], &[0; 5][..]));
            (a[0], b[0])
        };
        assert_eq!(q0 - 8 * sx, Q4_0::block_dot_scalar(&values, &x));
        assert_eq!(q1, Q4_1::block_dot_scalar(&values, &x));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_interleaved_group_matches_scalar_at_the_extremes() {
        use crate::ops::cpu::quantize_act::interleave_rows;
        use std::arch::x86_64::*;
        if !crate::ops::cpu::Isa::Avx2.available() {
            return;
        }
        // 8 blocks of nibbles, mostly 15 (the largest i16 sums: 8 chunks · 2 · 15 · 127), with
        // a different pattern per block so a lane mix-up shows.
        let values: Vec<u8> = (0..8 * 16).map(|i| if i % 7 == 3 { (i * 29) as u8 } else { 0xFF }).collect();
        let x: Vec<i8> = (0..8 * QK).map(|i| if i % 11 == 5 { -127 } else { 127 }).collect();
        let mut il = vec![0i8; 8 * QK];
        interleave_rows(&x, 1, 8, &mut il);
        let (mut a, mut b) = ([0i32; 8], [0i32; 8]);
        // SAFETY: AVX2/FMA/F16C are available (checked above); transpose reads the 128 value
        // bytes and group_sums_il the 256 interleaved activation bytes.
        unsafe {
            let g = Q4_0::transpose(values.as_ptr());
            _mm256_storeu_si256(a.as_mut_ptr().cast(), Q4_0::group_sums_il(&g, il.as_ptr()));
            _mm256_storeu_si256(b.as_mut_ptr().cast(), Q4_1::group_sums_il(&g, il.as_ptr()));
        }
        for blk in 0..8 {
            let xb: &[i8; QK] = x[blk * QK..(blk + 1) * QK].try_into().unwrap();
            let sx: i32 = xb.iter().map(|&v| v as i32).sum();
            let v = &values[blk * 16..(blk + 1) * 16];
            assert_eq!(a[blk] - 8 * sx, Q4_0::block_dot_scalar(v, xb), "Q4_0 block {blk}");
            assert_eq!(b[blk], Q4_1::block_dot_scalar(v, xb), "Q4_1 block {blk}");
        }
    }
}
