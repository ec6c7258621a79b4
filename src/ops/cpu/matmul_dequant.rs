//! Quantized weights with f32 activations ([`crate::ops::Activations::F32`]): Q8_0, Q4_0 and
//! Q4_1 blocks dequantized in registers and fed to the float micro-kernel of
//! [`super::matmul_f32`], instead of the int8 activations of [`super::matmul_quant`].
//!
//! Each weight is dequantized with exactly the operations of `quant::*::dequantize_block` (and
//! of gguf-py's `dequantize`, which transformers' GGUF loader uses): Q8_0 `q · d`, Q4_0
//! `(q − 8) · d`, Q4_1 `q · d + m` (a product, then a sum: two roundings, no FMA), with `d`
//! and `m` the f16 scales converted exactly. The float kernel's operations per output do not
//! depend on where its weights come from, so a product on quantized weights here gives the
//! same bits as the same product on the dequantized f32 matrix (`tests/ops_matmul.rs` checks
//! it on every ISA, thread count and batch size): the decoder then computes what the
//! dequantized model computes, to f32 rounding, which is what a validation against
//! transformers' dequantized model asks. The price is speed: 8 weights cost a widening, a
//! conversion and a multiply (plus a shift for high nibbles, an add for Q4_1) in place of a
//! quarter of a `vpdpbusd`. A single activation row takes whole blocks ([`Dequant::load32`]:
//! one 16-byte load and one scale conversion for 32 nibbles), and more than 8 rows take each
//! weight micro-panel from a per-thread f32 copy (`matmul_f32`, [`WeightRows::CONVERTS`]).
//! The helpers here are `#[inline(always)]` functions without target features of their own,
//! which get the kernel's once inlined into it; a closure inside them does not (it is not
//! inside a `#[target_feature]` function), so they call intrinsics directly, never through a
//! closure: `[_; 4]::map` made decode 30× slower.

use std::marker::PhantomData;

use half::f16;

use super::matmul_f32::WeightRows;
use super::matmul_quant::QMatrix;
use crate::quant::QK;

/// How one block format dequantizes (the operations of `quant::*::dequantize_block`).
pub(crate) trait Dequant: Send + Sync {
    /// Bytes of packed values per block.
    const VALUE_BYTES: usize;
    /// Blocks carry a min (Q4_1).
    const HAS_MIN: bool;

    /// Value `j < 32` of the block whose packed values are `v`, with scale `d` and min `m`.
    fn value(v: &[u8], d: f32, m: f32, j: usize) -> f32;

    /// Values `j..j + 8` (`j` a multiple of 8 below 32) of the block at `p`, with the scale
    /// and the min broadcast in `d` and `m`.
    ///
    /// # Safety
    /// `p` is valid for `VALUE_BYTES` reads; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(
        p: *const u8,
        d: std::arch::x86_64::__m256,
        m: std::arch::x86_64::__m256,
        j: usize,
    ) -> std::arch::x86_64::__m256;

    /// The whole block at `p` as four [`Dequant::load8`] vectors (values 0–7, 8–15, 16–23,
    /// 24–31), each with the same bits.
    ///
    /// # Safety
    /// As [`Dequant::load8`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load32(
        p: *const u8,
        d: std::arch::x86_64::__m256,
        m: std::arch::x86_64::__m256,
    ) -> [std::arch::x86_64::__m256; 4] {
        // SAFETY: forwarded contract.
        unsafe {
            [
                Self::load8(p, d, m, 0),
                Self::load8(p, d, m, 8),
                Self::load8(p, d, m, 16),
                Self::load8(p, d, m, 24),
            ]
        }
    }
}

impl Dequant for super::matmul_q8_0::Q8_0 {
    const VALUE_BYTES: usize = crate::quant::q8_0::VALUE_BYTES;
    const HAS_MIN: bool = false;

    #[inline(always)]
    fn value(v: &[u8], d: f32, _m: f32, j: usize) -> f32 {
        (v[j] as i8) as f32 * d
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(
        p: *const u8,
        d: std::arch::x86_64::__m256,
        _m: std::arch::x86_64::__m256,
        j: usize,
    ) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: j + 8 ≤ 32 = VALUE_BYTES (the contract), so the 8 bytes are the block's.
        let q = unsafe { _mm_loadl_epi64(p.add(j).cast()) };
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d)
    }
}

/// Nibble `j` of a 4-bit block: byte `j` low for `j < 16`, byte `j − 16` high above.
#[inline(always)]
fn nibble(v: &[u8], j: usize) -> u8 {
    if j < QK / 2 {
        v[j] & 0x0F
    } else {
        v[j - QK / 2] >> 4
    }
}

/// Nibbles `j..j + 8` of the 4-bit block at `p` as i32 lanes.
///
/// # Safety
/// `p` is valid for 16 reads, `j` a multiple of 8 below 32; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibbles8(p: *const u8, j: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: j % 16 + 8 ≤ 16 bytes of the block (the contract).
    let b = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p.add(j % (QK / 2)).cast()) });
    let b = if j >= QK / 2 { _mm256_srli_epi32::<4>(b) } else { b };
    _mm256_and_si256(b, _mm256_set1_epi32(0x0F))
}

/// All 32 nibbles of the 4-bit block at `p` as four i32 vectors (values 0–7, 8–15, 16–23,
/// 24–31), from one 16-byte load: what four [`nibbles8`] give.
///
/// # Safety
/// `p` is valid for 16 reads; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> [std::arch::x86_64::__m256i; 4] {
    use std::arch::x86_64::*;
    // SAFETY: the block's 16 bytes (the contract).
    let v = unsafe { _mm_loadu_si128(p.cast()) };
    let (lo, hi) = (_mm256_cvtepu8_epi32(v), _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v)));
    let mask = _mm256_set1_epi32(0x0F);
    [
        _mm256_and_si256(lo, mask),
        _mm256_and_si256(hi, mask),
        _mm256_and_si256(_mm256_srli_epi32::<4>(lo), mask),
        _mm256_and_si256(_mm256_srli_epi32::<4>(hi), mask),
    ]
}

/// A 4-bit format's values from its nibbles as i32 lanes.
trait FromNibbles {
    /// # Safety
    /// The CPU has AVX2 (every caller runs under its `target_feature`).
    #[cfg(target_arch = "x86_64")]
    unsafe fn finish(
        q: std::arch::x86_64::__m256i,
        d: std::arch::x86_64::__m256,
        m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256;
}

impl FromNibbles for super::matmul_q4::Q4_0 {
    /// `d · (q − 8)`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish(
        q: std::arch::x86_64::__m256i,
        d: std::arch::x86_64::__m256,
        _m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has AVX2 (the contract).
        unsafe { _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(8)))) }
    }
}

impl FromNibbles for super::matmul_q4::Q4_1 {
    /// `d · q + m`: a product, then a sum (two roundings, as the dequantizer).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn finish(
        q: std::arch::x86_64::__m256i,
        d: std::arch::x86_64::__m256,
        m: std::arch::x86_64::__m256,
    ) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the CPU has AVX2 (the contract).
        unsafe { _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m) }
    }
}

/// The [`Dequant`] of a 4-bit format from its [`FromNibbles`].
macro_rules! dequant_nibbles {
    ($format:ty, $bytes:expr, $has_min:expr, |$d:ident, $m:ident, $q:ident| $value:expr) => {
        impl Dequant for $format {
            const VALUE_BYTES: usize = $bytes;
            const HAS_MIN: bool = $has_min;

            #[inline(always)]
            fn value(v: &[u8], $d: f32, $m: f32, j: usize) -> f32 {
                let $q = nibble(v, j);
                $value
            }

            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn load8(
                p: *const u8,
                d: std::arch::x86_64::__m256,
                m: std::arch::x86_64::__m256,
                j: usize,
            ) -> std::arch::x86_64::__m256 {
                // SAFETY: forwarded contract (16 readable bytes, AVX2).
                unsafe { <$format as FromNibbles>::finish(nibbles8(p, j), d, m) }
            }

            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            unsafe fn load32(
                p: *const u8,
                d: std::arch::x86_64::__m256,
                m: std::arch::x86_64::__m256,
            ) -> [std::arch::x86_64::__m256; 4] {
                // SAFETY: forwarded contract (16 readable bytes, AVX2). No closure (`map`):
                // a closure would not inherit the caller's target features.
                unsafe {
                    let [a, b, c, e] = nibbles32(p);
                    [
                        <$format as FromNibbles>::finish(a, d, m),
                        <$format as FromNibbles>::finish(b, d, m),
                        <$format as FromNibbles>::finish(c, d, m),
                        <$format as FromNibbles>::finish(e, d, m),
                    ]
                }
            }
        }
    };
}

dequant_nibbles!(super::matmul_q4::Q4_0, crate::quant::q4_0::VALUE_BYTES, false, |d, _m, q| d
    * (q as i32 - 8) as f32);
dequant_nibbles!(super::matmul_q4::Q4_1, crate::quant::q4_1::VALUE_BYTES, true, |d, m, q| d * q as f32 + m);

/// A quantized `[rows, nb · 32]` matrix as the float kernel's [`WeightRows`].
pub(crate) struct DequantRows<'a, F> {
    m: QMatrix<'a>,
    format: PhantomData<fn() -> F>,
}

impl<F> Clone for DequantRows<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for DequantRows<'_, F> {}

impl<'a, F: Dequant> DequantRows<'a, F> {
    /// `m`'s arrays hold whole rows of `m.nb` blocks (checked by the caller).
    pub(crate) fn new(m: QMatrix<'a>) -> Self {
        DequantRows { m, format: PhantomData }
    }
}

impl<F: Dequant> WeightRows for DequantRows<'_, F> {
    const CONVERTS: bool = true;

    #[inline(always)]
    fn get(self, r: usize, o: usize) -> f32 {
        let b = r * self.m.nb + o / QK;
        let v = &self.m.values[b * F::VALUE_BYTES..(b + 1) * F::VALUE_BYTES];
        let m = if F::HAS_MIN { self.m.mins[b].to_f32() } else { 0.0 };
        F::value(v, self.m.scales[b].to_f32(), m, o % QK)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load32(self, r: usize, o: usize) -> [std::arch::x86_64::__m256; 4] {
        debug_assert!(o.is_multiple_of(QK), "load32 at {o}: not a block start");
        let b = r * self.m.nb + o / QK;
        // SAFETY: row r exists and o + 32 ≤ k with o a multiple of 32 (the trait's contract),
        // so block b is whole.
        unsafe {
            let (d, m) = self.scale_min(b);
            F::load32(self.m.values.as_ptr().add(b * F::VALUE_BYTES), d, m)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(self, r: usize, o: usize) -> std::arch::x86_64::__m256 {
        let b = r * self.m.nb + o / QK;
        // SAFETY: row r exists and o + 8 ≤ k (the trait's contract), so block b is inside the
        // arrays, and o % 32 is a multiple of 8 below 32.
        unsafe {
            let (d, m) = self.scale_min(b);
            F::load8(self.m.values.as_ptr().add(b * F::VALUE_BYTES), d, m, o % QK)
        }
    }
}

impl<F: Dequant> DequantRows<'_, F> {
    /// Block `b`'s scale and min (zero without mins), converted with `vcvtph2ps` (exact, as
    /// `f16::to_f32`) and broadcast to 8 lanes.
    ///
    /// # Safety
    /// Block `b` exists; the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scale_min(self, b: usize) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        use std::arch::x86_64::*;
        let bits = |h: &f16| h.to_bits() as i16;
        // SAFETY: block b exists (the contract), so its scale (and min) are in the arrays; the
        // intrinsics are called here, not in a closure, so they get this function's features.
        unsafe {
            let d = _mm256_cvtph_ps(_mm_set1_epi16(bits(self.m.scales.get_unchecked(b))));
            let m = if F::HAS_MIN {
                _mm256_cvtph_ps(_mm_set1_epi16(bits(self.m.mins.get_unchecked(b))))
            } else {
                _mm256_setzero_ps()
            };
            (d, m)
        }
    }
}
