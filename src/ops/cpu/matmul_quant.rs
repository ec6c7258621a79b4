//! The quantized matmul shared by Q8_0, Q4_0 and Q4_1: integer block dot products against
//! activations quantized to int8 ([`super::quantize_act`]), scaled in f32.
//!
//! The approach is ggml's (`ggml_vec_dot_q8_0_q8_0`, `ggml_vec_dot_q4_0_q8_0`,
//! `ggml_vec_dot_q4_1_q8_1` in `ggml-cpu/arch/x86/quants.c`): the 32 products of a block are
//! summed exactly in integers with `_mm256_maddubs_epi16` + `_mm256_madd_epi16`, then scaled
//! by `d_w · d_x`. We write our own because this is the product (DESIGN.md §4, STYLE.md rule
//! 12): the weights are stored structure-of-arrays (values, scales and mins in separate
//! arrays), decode reads each weight row once for up to 8 sequences, and every result must be
//! reproducible bit for bit on every path.
//!
//! What one output `out[i][r]` is, on every path (AVX2 and scalar, any tile, any thread):
//!
//! ```text
//! S_b  = exact integer block dot: Σ_j q_w[j] · q_x[j]   (Q4_0: Σ_j (q_w[j] − 8) · q_x[j])
//! for each group of 8 blocks (the last one padded with S = d = 0), lane l = block 8g + l:
//!     acc_l = fma(f32(d_w) · d_x, f32(S_b), acc_l)
//!     acc_l = fma(f32(m_w) · d_x, f32(Σ_j q_x[j]), acc_l)          (Q4_1 only)
//! out  = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
//! ```
//!
//! The AVX2 kernel sums the 8 blocks of a group with one transpose-and-add tree
//! (`simd::avx2::reduce8_i32`, or `reduce8_i16` for 4-bit weights, which skips the widening
//! `madd`) and converts them to f32 together, where ggml converts and scales every block on its
//! own. On Zen 3 `maddubs`, `madd`, `cvtdq2ps` and FMA share two pipes, so this does about
//! half the work of ggml's loop per block, which is what batched decode is bound by; it also
//! gives the exact per-block integers above.
//!
//! With 1 to 8 activation rows (decode, batched decode, prefill; see
//! `quantize_act::INTERLEAVE_MIN_ROWS` for why one row too) the tree moves from the results to
//! the weights: each group of 8 weight blocks is transposed once ([`QuantFormat::transpose`]) so
//! that 32-bit lane `l` of every vector belongs to block `l`, the activations come in the same
//! interleaved layout (`quantize_act::interleave_rows`), and a row's 8 block sums are plain
//! vector adds of `maddubs` results (4-bit weights: 8 `maddubs` + adds + one `madd` per group
//! and row; no shuffle per row). Same integers `S_b`, same f32 operations: same bits.
//!
//! With VNNI ([`Isa::Avx2Vnni`], [`Isa::Avx512Vnni`]) those rows take `vpdpbusd` instead,
//! which multiplies unsigned by signed bytes and adds four products into each i32 lane without
//! saturating: one instruction per 32 products where `maddubs` + `madd` (+ `sign` for Q8_0)
//! took two or three. The unsigned operand is the weights: Q4 nibbles as they are, Q8_0 values
//! with their sign bit flipped (`q + 128`); `2^VNNI_BIAS_LOG2 · Σ q_x`
//! ([`QuantFormat::VNNI_BIAS_LOG2`]: 8 for Q4_0's stored offset, 128 for Q8_0's flip) is taken
//! back off, which gives the same exact `S_b`: the activations come with `−2^bias · Σ q_x` per
//! block ([`QActs::bsum`], computed once per call), and the 512-bit kernel starts its integer
//! sums there, the 256-bit one adds it (a shift and a subtraction per group and row before;
//! without them hot 6-row products of 576- and 768-wide rows run 6–10 % faster, 2048-wide ones
//! the same). With AVX512-VNNI, weights go two weight rows at a time through 512-bit vectors
//! (`avx2::row_pair`: low half one row, high half the other, activations broadcast to both; an
//! odd last row takes the 256-bit kernel); AVX-VNNI stays in 256 bits. The f32 steps are the
//! ones above, lane for lane, so every ISA gives the same bits (`tests/ops_matmul.rs` compares
//! all of them, and checks exact results at the extreme values).
//!
//! A row whose last group holds only 1 to 4 blocks (SmolLM2's 576 = 2 whole groups and 2
//! blocks) would still pay 8 `vpdpbusd` (or 8 `maddubs`) per activation row for it. The
//! batched kernels take that group from a compact copy instead ([`QActs::tail`],
//! `quantize_act::tail_width`: 1, 2 or 4 blocks, lane `k` belongs to block `k % T`): `T`
//! `vpdpbusd` (or `maddubs` + `madd`) per row ([`QuantFormat::tail_vnni`] and
//! `simd::avx2::{word_tail, nibble_tail}` lay the weights out alike), then two or three
//! shuffles and adds put each block's sum in its lane. The same integers, the same f32 steps,
//! the same bits. Hot 6-row products of SmolLM2's 1536 × 576 on one Sapphire Rapids core (3
//! alternating runs each): VNNI Q4_0 84–89 → 92–95 GMAC/s, Q8_0 72–75 → 81–84; the AVX2
//! kernel (`ops::matmul_with_isa(.., Isa::Avx2)`) Q4_0 47–48 → 53–55, Q4_1 47–49 → 55–57,
//! Q8_0 30–32 → 38.5–39.
//!
//! Even so the 2-block tail cost about 90 % of a whole group per row (1.6 ns against 1.75 per
//! weight row and activation row, timed as 1536 × 576 against 1536 × 512 and × 768): beyond
//! its `vpdpbusd` it paid, per activation row, the lane folding, the mask of its scales and
//! sums and the add of the biased sums, as many vector operations as a group's 8 `vpdpbusd`.
//! So `quantize` now writes each row's [`QActs::tail_lanes`] once per call (that group's
//! scales, sums and biased sums, zero past the row): the integer sums start at the biased
//! sums (whose zero lanes add nothing when a block's lanes are folded), the scales need no
//! mask, and the 512-bit kernel folds two rows' lanes together. The same values in every lane
//! that counts: the same bits. Hot 6-row 1536 × 576 on one core (3 alternating runs): VNNI
//! Q4_0 98.6–99.2 → 105.7–106.8 GMAC/s, Q4_1 89 → 94, Q8_0 (49152 × 576, SmolLM2's head) 84 →
//! 86.5.

use half::f16;

use super::quantize_act::QActs;
use super::simd::{hsum8_scalar, LANES};
use super::{Isa, OutPtr, Vnni};
use crate::quant::QK;

/// A block-32 weight format seen by the quantized matmul.
pub(crate) trait QuantFormat: Send + Sync {
    /// Bytes of packed values per block.
    const VALUE_BYTES: usize;
    /// The stored 4-bit code is `q + 8` (Q4_0): the kernel subtracts `8 · Σ q_x`.
    const OFFSET8: bool;
    /// Blocks carry a min: value = q · d + m (Q4_1).
    const HAS_MIN: bool;

    /// The exact integer dot product `S_b` of one block's values with 32 int8 activations.
    fn block_dot_scalar(values: &[u8], x: &[i8; QK]) -> i32;

    /// Unpacks one block of values for [`QuantFormat::group_sums`].
    ///
    /// # Safety
    /// `p` is valid for `VALUE_BYTES` reads and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack(p: *const u8) -> Unpacked;

    /// The 8 block sums `S_b` (before the Q4_0 offset) of `blocks ≤ 8` unpacked weight blocks
    /// with the activation blocks at `x` (32 bytes each); lanes `≥ blocks` are 0.
    ///
    /// # Safety
    /// `x` is valid for `blocks · 32` reads; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group_sums(u: &[Unpacked; 8], x: *const i8, blocks: usize) -> std::arch::x86_64::__m256i;

    /// One group of 8 weight blocks transposed into the interleaved activation layout
    /// (`quantize_act::interleave_rows`), ready for [`QuantFormat::group_sums_il`].
    #[cfg(target_arch = "x86_64")]
    type Group: Copy;

    /// Loads and transposes the 8 blocks of values at `p`.
    ///
    /// # Safety
    /// `p` is valid for `8 · VALUE_BYTES` reads and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn transpose(p: *const u8) -> Self::Group;

    /// The 8 block sums `S_b` (before the Q4_0 offset) of a transposed group with one row's
    /// interleaved activation group at `x` (256 bytes).
    ///
    /// # Safety
    /// `x` is valid for 256 reads; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group_sums_il(w: &Self::Group, x: *const i8) -> std::arch::x86_64::__m256i;

    /// The bias of the VNNI kernel's block sums, as a power of two: `S_b = S' − (Σ_j q_x[j]) ·
    /// 2^VNNI_BIAS_LOG2`, where `S'` is the VNNI kernel's sum ([`QuantFormat::transpose_vnni`]; Q4_0: the
    /// stored `+8`; Q8_0: the `+128` that makes the weights the unsigned operand of `vpdpbusd`;
    /// Q4_1: none, 0).
    const VNNI_BIAS_LOG2: u32;

    /// Blocks are 16 bytes of packed nibbles (Q4_0, Q4_1): the VNNI kernel takes their sums
    /// from [`Dpbusd::nibble_sums`] instead of [`QuantFormat::transpose_vnni`].
    const NIBBLES: bool;

    /// Loads the 8 blocks of values at `p` transposed into the interleaved activation layout
    /// (like [`QuantFormat::transpose`]) as the unsigned operand of `vpdpbusd`: the VNNI
    /// kernel's block sums are then `S' = Σ_j u[j] · q_x[j]` per lane.
    ///
    /// # Safety
    /// `p` is valid for `8 · VALUE_BYTES` reads and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn transpose_vnni(p: *const u8) -> [std::arch::x86_64::__m256i; 8];

    /// The first `T` (1, 2 or 4) blocks of values at `p` in the compact tail layout of the
    /// activations (`quantize_act::compact_tail_rows`: lane `k` of chunk `v` is word
    /// `v · 8/T + k / T` of block `k % T`), as the unsigned operand of `vpdpbusd` with the
    /// bias of [`QuantFormat::transpose_vnni`]: 4-bit nibbles as they are, otherwise (Q8_0)
    /// signed bytes with their sign bit flipped.
    ///
    /// # Safety
    /// `p` is valid for `T · VALUE_BYTES` reads and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tail_vnni<const T: usize>(p: *const u8) -> [std::arch::x86_64::__m256i; T] {
        use super::simd::avx2::{nibble_tail, word_tail};
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (16- or 32-byte blocks as the format says).
        unsafe {
            if Self::NIBBLES {
                nibble_tail::<T>(p)
            } else {
                word_tail::<T>(p, _mm256_set1_epi8(-128))
            }
        }
    }

    /// [`QuantFormat::transpose_vnni`] of two weight rows' groups at once, in 512-bit vectors:
    /// the low half of output `c` is chunk `c` of the group at `p0`, the high half that of the
    /// group at `p1`. The default joins two 256-bit transposes; Q8_0 transposes both in one
    /// pass of 512-bit shuffles.
    ///
    /// # Safety
    /// `p0` and `p1` are valid for `8 · VALUE_BYTES` reads; the CPU has AVX2, FMA, F16C and
    /// AVX512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    unsafe fn transpose_vnni_pair(p0: *const u8, p1: *const u8) -> [std::arch::x86_64::__m512i; 8] {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract, forwarded.
        let (a, b) = unsafe { (Self::transpose_vnni(p0), Self::transpose_vnni(p1)) };
        std::array::from_fn(|c| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a[c]), b[c]))
    }
}

/// One encoding of `vpdpbusd` (per 32-bit lane: `acc + Σ` of the 4 products of unsigned bytes
/// of `u` with the signed bytes of `s`, in i32 without saturation), and the 4-bit group sums
/// built on it.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Dpbusd {
    /// The 256-bit `vpdpbusd`.
    ///
    /// # Safety
    /// The CPU has the encoding's features.
    unsafe fn dpbusd(
        acc: std::arch::x86_64::__m256i,
        u: std::arch::x86_64::__m256i,
        s: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i;

    /// The 8 block sums `Σ_j nibble_j · q_x[j]` (lane l = block l) of the group of 8 packed
    /// 4-bit blocks at `w` (128 bytes) with each of `M` rows' interleaved activation groups, row
    /// `j` at `x + j · row_il` (256 bytes each).
    ///
    /// # Safety
    /// The reads are valid; the CPU has AVX2, FMA, F16C and the encoding's features.
    unsafe fn nibble_sums<const M: usize>(
        w: *const u8,
        x: *const i8,
        row_il: usize,
    ) -> [std::arch::x86_64::__m256i; M];
}

/// `vpdpbusd` in its AVX-VNNI (VEX) encoding.
#[cfg(target_arch = "x86_64")]
pub(crate) struct AvxVnni;

/// `vpdpbusd` in its AVX512-VNNI (EVEX) encoding.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512Vnni;

/// The biased block sums of a transposed group (`t`, [`QuantFormat::transpose_vnni`]) with
/// `M` interleaved activation rows: the chunk loop outside the row loop, so one weight vector
/// is live at a time, two accumulators per row below 5 rows (enough `vpdpbusd` chains in
/// flight).
///
/// # Safety
/// `x + j · row_il` is valid for 256 reads for every `j < M`; the CPU has `D`'s features (the
/// caller enables them: this is always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn sums_256<D: Dpbusd, const M: usize>(
    t: &[std::arch::x86_64::__m256i; 8],
    x: *const i8,
    row_il: usize,
) -> [std::arch::x86_64::__m256i; M] {
    use std::arch::x86_64::*;
    let split = if M <= 4 { 2 } else { 1 };
    // SAFETY: the caller's contract.
    unsafe {
        let mut s = [[_mm256_setzero_si256(); 2]; M];
        for (c, &wc) in t.iter().enumerate() {
            for (j, s) in s.iter_mut().enumerate() {
                let xv = _mm256_loadu_si256(x.add(j * row_il + 32 * c).cast());
                s[c % split] = D::dpbusd(s[c % split], wc, xv);
            }
        }
        s.map(|s| if split == 2 { _mm256_add_epi32(s[0], s[1]) } else { s[0] })
    }
}

#[cfg(target_arch = "x86_64")]
impl Dpbusd for AvxVnni {
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn dpbusd(
        acc: std::arch::x86_64::__m256i,
        u: std::arch::x86_64::__m256i,
        s: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i {
        std::arch::x86_64::_mm256_dpbusd_avx_epi32(acc, u, s)
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    #[inline]
    unsafe fn nibble_sums<const M: usize>(
        w: *const u8,
        x: *const i8,
        row_il: usize,
    ) -> [std::arch::x86_64::__m256i; M] {
        // SAFETY: the trait's contract; the nibbles, transposed, are `vpdpbusd`'s unsigned
        // operand as they are.
        unsafe { sums_256::<AvxVnni, M>(&super::matmul_q4::avx2::transpose(w), x, row_il) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Dpbusd for Avx512Vnni {
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn dpbusd(
        acc: std::arch::x86_64::__m256i,
        u: std::arch::x86_64::__m256i,
        s: std::arch::x86_64::__m256i,
    ) -> std::arch::x86_64::__m256i {
        std::arch::x86_64::_mm256_dpbusd_epi32(acc, u, s)
    }

    /// In 512-bit vectors: the 128 bytes of the group are two loads; one two-source dword
    /// permute per pair of 32-bit words `m, m + 1` gathers word `m` of blocks 0–7 into the low
    /// half and word `m + 1` into the high half (dword `4l + m` of the two sources is word `m`
    /// of block `l`), and the two nibble masks make those chunks `m, m + 1` and `m + 4, m + 5`
    /// of the interleaved layout, where two consecutive chunks of a row are 64 contiguous
    /// bytes. So a row is 4 `vpdpbusd` on 512 bits and one add of the halves, and the group
    /// costs 2 permutes and 6 logic ops instead of the 256-bit transpose's 20.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn nibble_sums<const M: usize>(
        w: *const u8,
        x: *const i8,
        row_il: usize,
    ) -> [std::arch::x86_64::__m256i; M] {
        use std::arch::x86_64::*;
        // SAFETY: the trait's contract (128 weight bytes, 256 activation bytes per row).
        unsafe {
            let [p01, p23] = nibble_words_512(w);
            let m = _mm512_set1_epi8(0x0F);
            // Chunks 0–1, 2–3 (low nibbles), 4–5, 6–7 (high nibbles; the bits a 32-bit shift
            // brings in from the next byte are masked off).
            let c = [
                _mm512_and_si512(p01, m),
                _mm512_and_si512(p23, m),
                _mm512_and_si512(_mm512_srli_epi32::<4>(p01), m),
                _mm512_and_si512(_mm512_srli_epi32::<4>(p23), m),
            ];
            let mut s = [_mm512_setzero_si512(); M];
            for (k, &ck) in c.iter().enumerate() {
                for (j, s) in s.iter_mut().enumerate() {
                    let xv = _mm512_loadu_si512(x.add(j * row_il + 64 * k).cast());
                    *s = _mm512_dpbusd_epi32(*s, ck, xv);
                }
            }
            s.map(|s| _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s)))
        }
    }
}

/// The 8 packed 4-bit blocks at `w` (128 bytes) as two 512-bit vectors of 32-bit words:
/// `[word 0 | word 1]` and `[word 2 | word 3]` of blocks 0–7, lane `l` of each half from block
/// `l` (dword `4l + m` of the two 64-byte halves is word `m` of block `l`; one two-source
/// permute per pair of words).
///
/// # Safety
/// `w` is valid for 128 reads; the CPU has AVX512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[inline]
pub(crate) unsafe fn nibble_words_512(w: *const u8) -> [std::arch::x86_64::__m512i; 2] {
    use std::arch::x86_64::*;
    // SAFETY: 128 readable bytes (the caller's contract).
    let (a, b) = unsafe { (_mm512_loadu_si512(w.cast()), _mm512_loadu_si512(w.add(64).cast())) };
    let i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    let i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    [_mm512_permutex2var_epi32(a, i01, b), _mm512_permutex2var_epi32(a, i23, b)]
}

/// One unpacked weight block: 32 bytes in element order (Q8_0: the signed values; Q4: the
/// unsigned nibbles), the operand of `maddubs` (after `abs` for Q8_0).
#[cfg(target_arch = "x86_64")]
pub(crate) type Unpacked = std::arch::x86_64::__m256i;

/// One quantized weight matrix `[rows, nb · 32]`, SoA.
#[derive(Clone, Copy)]
pub(crate) struct QMatrix<'a> {
    pub values: &'a [u8],
    pub scales: &'a [f16],
    /// Empty unless the format has mins.
    pub mins: &'a [f16],
    /// Blocks per row.
    pub nb: usize,
}

/// Computes `out[i][r]` for every `i < acts` row count `n` and `r` in `r0..r1`.
///
/// # Safety
/// `out` points to an `[n, rows]` buffer; no other thread writes columns `r0..r1`. `w` holds
/// at least `r1` rows and `acts` `n` rows of `w.nb` blocks (checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn quant_rows<F: QuantFormat>(
    acts: QActs<'_>,
    n: usize,
    w: QMatrix<'_>,
    r0: usize,
    r1: usize,
    out: OutPtr,
    rows: usize,
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an AVX2 ISA is selected only when the CPU has AVX2/FMA/F16C, and a VNNI one
        // only with its encoding of `vpdpbusd`; the bounds are the caller's contract, forwarded.
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe {
            avx2::quant_rows::<F>(acts, n, w, r0, r1, out, rows, isa.vnni())
        },
        _ => {
            let (nb, vb) = (w.nb, F::VALUE_BYTES);
            for r in r0..r1 {
                let values = &w.values[r * nb * vb..(r + 1) * nb * vb];
                let scales = &w.scales[r * nb..(r + 1) * nb];
                let mins = if F::HAS_MIN { &w.mins[r * nb..(r + 1) * nb] } else { &[][..] };
                for i in 0..n {
                    let x = QActs {
                        qs: &acts.qs[i * nb * QK..(i + 1) * nb * QK],
                        il: None,
                        d: &acts.d[i * nb..(i + 1) * nb],
                        sum: &acts.sum[i * nb..(i + 1) * nb],
                        bsum: None,
                        tail: None,
                        tail_lanes: None,
                    };
                    // SAFETY: (i, r) is in bounds of `[n, rows]` and column r is this task's.
                    unsafe { out.write(i * rows + r, row_dot_scalar::<F>(values, scales, mins, x)) };
                }
            }
        }
    }
}

/// Scalar twin of the AVX2 row kernel: one weight row against one activation row.
fn row_dot_scalar<F: QuantFormat>(values: &[u8], scales: &[f16], mins: &[f16], x: QActs<'_>) -> f32 {
    let nb = scales.len();
    let mut acc = [0.0f32; LANES];
    for g in 0..nb.div_ceil(LANES) {
        for (l, acc) in acc.iter_mut().enumerate() {
            let b = g * LANES + l;
            if b >= nb {
                // The AVX2 kernel's padded lanes: fma(0, 0, acc).
                *acc = 0.0f32.mul_add(0.0, *acc);
                if F::HAS_MIN {
                    *acc = 0.0f32.mul_add(0.0, *acc);
                }
                continue;
            }
            let xq: &[i8; QK] = match x.qs[b * QK..(b + 1) * QK].try_into() {
                Ok(xq) => xq,
                Err(_) => continue, // unreachable: the slice has exactly QK elements
            };
            let s = F::block_dot_scalar(&values[b * F::VALUE_BYTES..(b + 1) * F::VALUE_BYTES], xq);
            *acc = (scales[b].to_f32() * x.d[b]).mul_add(s as f32, *acc);
            if F::HAS_MIN {
                *acc = (mins[b].to_f32() * x.d[b]).mul_add(x.sum[b] as f32, *acc);
            }
        }
    }
    hsum8_scalar(&acc)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{
        nibble_words_512, row_dot_scalar, sums_256, Avx512Vnni, AvxVnni, Dpbusd, QActs, QMatrix, QuantFormat,
        Unpacked, Vnni,
    };
    use crate::ops::cpu::quantize_act::{interleaved_blocks, tail_width, TailLanes, INTERLEAVE_MIN_ROWS};
    use crate::ops::cpu::simd::avx2::{hsum8, hsum8x8, tail_sums_256, tail_sums_halves};
    use crate::ops::cpu::simd::LANES;
    use crate::ops::cpu::OutPtr;
    use crate::quant::QK;

    /// Most activation rows one pass over the weights serves (decode batches up to 8).
    const MR_MAX: usize = 8;
    /// How far ahead of the blocks being computed the weight values are prefetched, in bytes.
    /// The block dot products cost too many instructions per byte for the out-of-order window
    /// to keep enough cache misses in flight on its own (measured on Zen 3: a 4-bit GEMV ran at
    /// half the streaming-read bandwidth without it).
    const PREFETCH_BYTES: usize = 2048;

    /// See [`super::quant_rows`]; same contract, plus the CPU has AVX2/FMA/F16C and, when
    /// `vnni` is given, that encoding of `vpdpbusd` (used for 1 to 8 interleaved rows).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn quant_rows<F: QuantFormat>(
        acts: QActs<'_>,
        n: usize,
        w: QMatrix<'_>,
        r0: usize,
        r1: usize,
        out: OutPtr,
        rows: usize,
        vnni: Option<Vnni>,
    ) {
        let nb = w.nb;
        // The VNNI kernels of the biased formats start from the biased activation sums; without
        // them, the other kernels (the same bits).
        let vnni = vnni.filter(|_| F::VNNI_BIAS_LOG2 == 0 || acts.bsum.is_some());
        // The last group of a row reads whole 8-block groups; rows whose last group would run
        // past the end of the weight arrays go through a zero-padded copy on the stack (the
        // same kernels, so the same bits), or the scalar twin when the row is too long for it.
        let over = (LANES - nb % LANES) % LANES;
        let mut total = w.scales.len().min(w.values.len() / F::VALUE_BYTES);
        if F::HAS_MIN {
            total = total.min(w.mins.len());
        }
        let fast_end = if over == 0 { r1 } else { (total.saturating_sub(over) / nb.max(1)).clamp(r0, r1) };
        let padded = nb + over;
        let mut i0 = 0;
        while i0 < n {
            let mr = (n - i0).min(MR_MAX);
            let x = Panel {
                qs: acts.qs[i0 * nb * QK..].as_ptr(),
                d: acts.d[i0 * nb..].as_ptr(),
                sum: acts.sum[i0 * nb..].as_ptr(),
                bsum: acts.bsum.map_or(std::ptr::null(), |b| b[i0 * nb..].as_ptr()),
                // With the interleaved rows only (the kernels that read it), and with its lanes.
                tail: match (acts.tail, acts.tail_lanes, tail_width(nb)) {
                    (Some(t), Some(_), Some(tw)) if mr >= INTERLEAVE_MIN_ROWS => t[i0 * tw * QK..].as_ptr(),
                    _ => std::ptr::null(),
                },
                lanes: match acts.tail_lanes {
                    Some(l) if acts.tail.is_some() && mr >= INTERLEAVE_MIN_ROWS => l[i0..].as_ptr(),
                    _ => std::ptr::null(),
                },
                nb,
            };
            let o = OutPtr(out.0.wrapping_add(i0 * rows));
            let il = acts
                .il
                .filter(|_| mr >= INTERLEAVE_MIN_ROWS)
                .map(|il| il[i0 * interleaved_blocks(nb) * QK..].as_ptr());
            // SAFETY: the panel holds rows i0..i0 + mr of `acts` plus the slack blocks after
            // the last row; the rows r0..fast_end can be over-read by `over` blocks (checked
            // above); the outputs (i0 + j, r) for r in r0..r1 belong to this task.
            unsafe { dispatch::<F>(mr, il, vnni, Rows { w, r0, r1: fast_end }, x, o, rows) };
            for r in fast_end..r1 {
                if padded <= TAIL_BLOCKS {
                    // Row r, then zero blocks up to a whole group.
                    let mut values = [0u8; TAIL_BLOCKS * QK];
                    let mut scales = [f16::ZERO; TAIL_BLOCKS];
                    let mut mins = [f16::ZERO; TAIL_BLOCKS];
                    let vb = F::VALUE_BYTES;
                    values[..nb * vb].copy_from_slice(&w.values[r * nb * vb..(r + 1) * nb * vb]);
                    scales[..nb].copy_from_slice(&w.scales[r * nb..(r + 1) * nb]);
                    if F::HAS_MIN {
                        mins[..nb].copy_from_slice(&w.mins[r * nb..(r + 1) * nb]);
                    }
                    let pw = QMatrix {
                        values: &values[..padded * vb],
                        scales: &scales[..padded],
                        mins: &mins[..padded],
                        nb,
                    };
                    let po = OutPtr(o.0.wrapping_add(r));
                    // SAFETY: the copy holds one row and its last group whole; output column
                    // 0 of `po` is column r of this task's panel.
                    unsafe { dispatch::<F>(mr, il, vnni, Rows { w: pw, r0: 0, r1: 1 }, x, po, rows) };
                    continue;
                }
                let (vb, values) = (F::VALUE_BYTES, w.values);
                let v = &values[r * nb * vb..(r + 1) * nb * vb];
                let sc = &w.scales[r * nb..(r + 1) * nb];
                let mi = if F::HAS_MIN { &w.mins[r * nb..(r + 1) * nb] } else { &[][..] };
                for j in 0..mr {
                    let i = i0 + j;
                    let xa = QActs {
                        qs: &acts.qs[i * nb * QK..(i + 1) * nb * QK],
                        il: None,
                        d: &acts.d[i * nb..(i + 1) * nb],
                        sum: &acts.sum[i * nb..(i + 1) * nb],
                        bsum: None,
                        tail: None,
                        tail_lanes: None,
                    };
                    // SAFETY: (i, r) is in bounds of `[n, rows]` and column r is this task's.
                    unsafe { out.write(i * rows + r, row_dot_scalar::<F>(v, sc, mi, xa)) };
                }
            }
            i0 += mr;
        }
    }

    /// Most blocks (a row and its padding) of the stack copy that lets a matrix's last rows
    /// take the vector kernels: 8 KiB of values at Q8_0.
    const TAIL_BLOCKS: usize = 256;

    /// The kernel for `mr` activation rows (interleaved when `il` is given) against `rows`.
    ///
    /// # Safety
    /// As the kernels: `rows` valid for whole last groups, `x` (and `il`) for `mr` rows and
    /// their slack, the outputs `(j, r)`, `j < mr`, `r` in `rows.r0..rows.r1`, this task's.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dispatch<F: QuantFormat>(
        mr: usize,
        il: Option<*const i8>,
        vnni: Option<Vnni>,
        fast: Rows<'_>,
        x: Panel,
        o: OutPtr,
        rows: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match (mr, il) {
                // 1 to 8 rows: interleaved activations, one transposed weight group for all.
                (8, Some(il)) => panel_il_any::<F, 8>(vnni, fast, x, il, o, rows),
                (7, Some(il)) => panel_il_any::<F, 7>(vnni, fast, x, il, o, rows),
                (6, Some(il)) => panel_il_any::<F, 6>(vnni, fast, x, il, o, rows),
                (5, Some(il)) => panel_il_any::<F, 5>(vnni, fast, x, il, o, rows),
                (4, Some(il)) => panel_il_any::<F, 4>(vnni, fast, x, il, o, rows),
                (3, Some(il)) => panel_il_any::<F, 3>(vnni, fast, x, il, o, rows),
                (2, Some(il)) => panel_il_any::<F, 2>(vnni, fast, x, il, o, rows),
                (1, Some(il)) => panel_il_any::<F, 1>(vnni, fast, x, il, o, rows),
                (8, _) => panel::<F, 8, 1>(fast, x, o, rows),
                (7, _) => panel::<F, 7, 1>(fast, x, o, rows),
                (6, _) => panel::<F, 6, 1>(fast, x, o, rows),
                (5, _) => panel::<F, 5, 1>(fast, x, o, rows),
                (4, _) => panel::<F, 4, 2>(fast, x, o, rows),
                (3, _) => panel::<F, 3, 2>(fast, x, o, rows),
                (2, _) => panel::<F, 2, 4>(fast, x, o, rows),
                // Without the interleaved copy (it did not fit the scratch): one weight row at
                // a time, a single sequential stream that the prefetchers follow (88–108 % of
                // the streaming-read bandwidth on Zen 3 for Q8_0 and Q4_0 matrices of 4–32 MB,
                // where four interleaved rows reached 47–79 %).
                _ => panel::<F, 1, 1>(fast, x, o, rows),
            }
        }
    }

    /// Weight rows `r0..r1` of a matrix.
    #[derive(Clone, Copy)]
    struct Rows<'a> {
        w: QMatrix<'a>,
        r0: usize,
        r1: usize,
    }

    /// One weight row: `nb` blocks of values, scales and (Q4_1) mins.
    #[derive(Clone, Copy)]
    struct WRow {
        values: *const u8,
        scales: *const f16,
        mins: *const f16,
    }

    impl Rows<'_> {
        /// Weight row `r` (pointers only; the callers' contracts bound what is read).
        fn row<F: QuantFormat>(&self, r: usize) -> WRow {
            let (w, nb) = (self.w, self.w.nb);
            WRow {
                values: w.values.as_ptr().wrapping_add(r * nb * F::VALUE_BYTES),
                scales: w.scales.as_ptr().wrapping_add(r * nb),
                mins: if F::HAS_MIN { w.mins.as_ptr().wrapping_add(r * nb) } else { std::ptr::null() },
            }
        }
    }

    /// Consecutive activation rows of `nb` blocks each.
    #[derive(Clone, Copy)]
    struct Panel {
        qs: *const i8,
        d: *const f32,
        sum: *const i32,
        /// [`QActs::bsum`]'s rows (null without them; the VNNI kernels of formats with a bias
        /// run only when they are there).
        bsum: *const i32,
        /// [`QActs::tail`]'s rows (null without them: the kernels then take the padded last
        /// group from the interleaved rows).
        tail: *const i8,
        /// [`QActs::tail_lanes`]' rows, with `tail` (null without it).
        lanes: *const TailLanes,
        nb: usize,
    }

    impl Panel {
        /// The compact tail's width when the panel has one (`quantize_act::tail_width`).
        fn tail_width(&self) -> Option<usize> {
            tail_width(self.nb).filter(|_| !self.tail.is_null() && !self.lanes.is_null())
        }
    }

    /// All weight rows of `rows` against the `M` activation rows of `x`, `N` weight rows at a
    /// time (then one at a time), into `out[j · ldo + r]`.
    ///
    /// # Safety
    /// As [`tile`] for every row of `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panel<F: QuantFormat, const M: usize, const N: usize>(
        rows: Rows<'_>,
        x: Panel,
        out: OutPtr,
        ldo: usize,
    ) {
        let row = |r: usize| rows.row::<F>(r);
        let mut r = rows.r0;
        // SAFETY: forwarded contract; every tile covers rows below r1.
        unsafe {
            while r + N <= rows.r1 {
                let ws: [WRow; N] = std::array::from_fn(|q| row(r + q));
                tile::<F, M, N>(ws, x, OutPtr(out.0.wrapping_add(r)), ldo);
                r += N;
            }
            while r < rows.r1 {
                tile::<F, M, 1>([row(r)], x, OutPtr(out.0.wrapping_add(r)), ldo);
                r += 1;
            }
        }
    }

    /// The lane mask for the last, partial group of a row: lanes `< nb % 8` set.
    #[derive(Clone, Copy)]
    struct TailMask {
        lane: __m256i,
    }

    /// The `M × N` dot products of `M` activation rows with `N` weight rows, written to
    /// `out[j · ldo + q]`. Each weight block is unpacked once and used for all `M` rows. Whole
    /// groups of 8 blocks are read, also for the last group of a row when `nb % 8 != 0`: its
    /// extra blocks (the next row's, or the activation slack) are masked to zero, which adds
    /// exactly what the scalar twin's padded lanes add.
    ///
    /// # Safety
    /// Every `w[q]` is valid for `nb.next_multiple_of(8)` blocks, `x` for `M` rows plus the
    /// over-read of the last group, `out` for the `M × N` strided writes; the CPU has
    /// AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<F: QuantFormat, const M: usize, const N: usize>(
        w: [WRow; N],
        x: Panel,
        out: OutPtr,
        ldo: usize,
    ) {
        let nb = x.nb;
        let vb = F::VALUE_BYTES;
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let groups = nb.div_ceil(LANES);
        let rem = nb % LANES;
        let tail = TailMask { lane: tail_lanes(rem) };
        for g in 0..groups {
            let b0 = g * LANES;
            let masked = rem != 0 && g + 1 == groups;
            for q in 0..N {
                let wq = w[q];
                // SAFETY: blocks b0..b0 + 8 of this weight row and of the activation rows are
                // readable (the caller's contract, including the over-read of the last group);
                // prefetches never fault.
                unsafe {
                    let p = wq.values.add(b0 * vb);
                    let (dw, mw) = group_scales::<F, PREFETCH_BYTES>(wq, b0, masked, tail.lane);
                    // Constant indices only, so the 8 blocks can live in registers.
                    let mut u: [Unpacked; LANES] = [
                        F::unpack(p),
                        F::unpack(p.add(vb)),
                        F::unpack(p.add(2 * vb)),
                        F::unpack(p.add(3 * vb)),
                        F::unpack(p.add(4 * vb)),
                        F::unpack(p.add(5 * vb)),
                        F::unpack(p.add(6 * vb)),
                        F::unpack(p.add(7 * vb)),
                    ];
                    if masked {
                        for (b, u) in u.iter_mut().enumerate() {
                            if b >= rem {
                                *u = _mm256_setzero_si256();
                            }
                        }
                    }
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let s = F::group_sums(&u, x.qs.add((j * nb + b0) * QK), LANES);
                        let (xd, xs) = act_scales(x, j, b0, masked, tail.lane);
                        acc[q] = accumulate::<F>(acc[q], s, dw, mw, xd, xs);
                    }
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            for (q, acc) in acc.iter().enumerate() {
                // SAFETY: (j, q) is inside the tile (caller's contract).
                unsafe { out.write(j * ldo + q, hsum8(*acc)) };
            }
        }
    }

    /// [`panel`] for `M` ≥ 2 activation rows in the interleaved layout (`il`: row `j` at
    /// `il + j · interleaved_blocks(nb) · 32`), one weight row at a time.
    ///
    /// # Safety
    /// As [`tile_il`] for every row of `rows`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panel_il<F: QuantFormat, const M: usize>(
        rows: Rows<'_>,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        for r in rows.r0..rows.r1 {
            let wr = rows.row::<F>(r);
            // SAFETY: forwarded contract; r < r1.
            unsafe { tile_il::<F, M>(wr, x, il, OutPtr(out.0.wrapping_add(r)), ldo) };
        }
    }

    /// One weight row against `M` interleaved activation rows: each group of 8 weight blocks is
    /// transposed once and used for every row. Padded activation blocks are zero, so the
    /// over-read weight blocks of the last group add nothing; their scales are masked as in
    /// [`tile`], which makes the f32 steps those of the scalar twin's padded lanes.
    ///
    /// # Safety
    /// `w` is valid for `nb.next_multiple_of(8)` blocks, `il` for `M` interleaved rows, `x`
    /// for the scales and sums of `M` rows plus the over-read of the last group, `out` for the
    /// `M` strided writes; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_il<F: QuantFormat, const M: usize>(
        w: WRow,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        let nb = x.nb;
        let mut acc = [_mm256_setzero_ps(); M];
        let (full, rem) = (nb / LANES, nb % LANES);
        // SAFETY (both): the caller's contract covers every group, the last one's over-read
        // included.
        for g in 0..full {
            unsafe { il_group::<F, M, false>(w, x, il, g * LANES, rem, &mut acc) };
        }
        if rem != 0 {
            let b0 = full * LANES;
            match x.tail_width() {
                Some(1) => unsafe { il_tail::<F, M, 1>(w, x, b0, rem, &mut acc) },
                Some(2) => unsafe { il_tail::<F, M, 2>(w, x, b0, rem, &mut acc) },
                Some(4) => unsafe { il_tail::<F, M, 4>(w, x, b0, rem, &mut acc) },
                _ => unsafe { il_group::<F, M, true>(w, x, il, b0, rem, &mut acc) },
            }
        }
        // SAFETY: rows j < M of the tile (caller's contract).
        unsafe { store_sums::<M>(&acc, out, ldo) };
    }

    /// Writes `hsum8(acc[j])` to `out[j · ldo]` for every `j < M ≤ 8`, the sums of all rows
    /// computed together (`simd::avx2::hsum8x8`, the same bits).
    ///
    /// # Safety
    /// `out[j · ldo]` is this task's for `j < M`; the CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn store_sums<const M: usize>(acc: &[__m256; M], out: OutPtr, ldo: usize) {
        let all: [__m256; 8] = std::array::from_fn(|j| if j < M { acc[j] } else { _mm256_setzero_ps() });
        let mut sums = [0.0f32; 8];
        // SAFETY: an 8-lane store into an 8-element array.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), hsum8x8(&all)) };
        for (j, &v) in sums.iter().enumerate().take(M) {
            // SAFETY: the caller's contract.
            unsafe { out.write(j * ldo, v) };
        }
    }

    /// One group of [`tile_il`] (blocks `b0..b0 + 8`); `MASKED` for the last, partial group,
    /// whose lanes `≥ rem` get zero scales and sums (the scalar twin's padded lanes).
    ///
    /// # Safety
    /// As [`tile_il`], for this group.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn il_group<F: QuantFormat, const M: usize, const MASKED: bool>(
        w: WRow,
        x: Panel,
        il: *const i8,
        b0: usize,
        rem: usize,
        acc: &mut [__m256; M],
    ) {
        let (nb, vb) = (x.nb, F::VALUE_BYTES);
        let row_il = interleaved_blocks(nb) * QK;
        let tail = tail_lanes(rem);
        // SAFETY: blocks b0..b0 + 8 of the weight row (incl. the last group's over-read), the
        // interleaved group of every row and the scales/sums of blocks b0..b0 + 8 of every row
        // (plus slack) are readable: the caller's contract. Prefetches never fault.
        unsafe {
            let (dw, mw) = group_scales::<F, PREFETCH_BYTES>(w, b0, MASKED, tail);
            let t = F::transpose(w.values.add(b0 * vb));
            for (j, acc) in acc.iter_mut().enumerate() {
                let s = F::group_sums_il(&t, il.add(j * row_il + b0 * QK));
                let (xd, xs) = act_scales(x, j, b0, MASKED, tail);
                *acc = accumulate::<F>(*acc, s, dw, mw, xd, xs);
            }
        }
    }

    /// The last, partial group of [`tile_il`] (blocks `b0..b0 + rem`) from the compact tail of
    /// width `T` (1, 2 or 4; `quantize_act::tail_width`), without VNNI: per row `T` `maddubs`
    /// and `madd` (4-bit weights: the nibbles as the unsigned operand, at most 2 · 15 · 127 per
    /// pair; Q8_0: |w| against x with w's sign, as [`QuantFormat::group_sums_il`] does), then the
    /// lane sums of `simd::avx2::tail_sums_256`: the same block sums before the Q4_0 offset as
    /// [`il_group`]'s masked group, and the same f32 steps, with the row's [`TailLanes`] as its
    /// masked scales and sums.
    ///
    /// # Safety
    /// As [`il_group`] for the last group; the panel has a compact tail of width `T`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn il_tail<F: QuantFormat, const M: usize, const T: usize>(
        w: WRow,
        x: Panel,
        b0: usize,
        rem: usize,
        acc: &mut [__m256; M],
    ) {
        use crate::ops::cpu::simd::avx2::{nibble_tail, word_tail};
        let vb = F::VALUE_BYTES;
        // SAFETY: as in `row_pair_tail`, for one weight row.
        unsafe {
            let tail = tail_lanes(rem);
            let (dw, mw) = group_scales::<F, PREFETCH_BYTES>(w, b0, true, tail);
            let p = w.values.add(b0 * vb);
            // Unsigned nibbles, or Q8_0's signed values (no flip: `maddubs` saturates at 255).
            let (t, mag): ([__m256i; T], [__m256i; T]) = if F::NIBBLES {
                let t = nibble_tail::<T>(p);
                (t, t)
            } else {
                let t = word_tail::<T>(p, _mm256_setzero_si256());
                (t, t.map(|v| _mm256_sign_epi8(v, v)))
            };
            let mut sums = [_mm256_setzero_si256(); M];
            for (j, s) in sums.iter_mut().enumerate() {
                *s = tail_dots_256::<F, T>(&t, &mag, x, j);
            }
            scale_tail_rows::<F, M, T>(&sums, x, dw, mw, acc);
        }
    }

    /// The f32 steps of a 256-bit kernel's compact tail ([`il_tail`], [`il_tail_vnni`]) for
    /// the `M` rows' lane sums `sums` (lane `k` part of block `k % T`): each block's lanes
    /// folded together (two rows at once with 1 or 2 blocks, [`fold_tail_pair_256`]; else
    /// `simd::avx2::tail_sums_256`), then [`scale`] with the row's [`TailLanes`].
    ///
    /// # Safety
    /// The `M` rows' lanes are readable; always inlined into a function that enables AVX2 and
    /// FMA.
    #[inline(always)]
    unsafe fn scale_tail_rows<F: QuantFormat, const M: usize, const T: usize>(
        sums: &[__m256i; M],
        x: Panel,
        dw: __m256,
        mw: __m256,
        acc: &mut [__m256; M],
    ) {
        // SAFETY: the caller's contract (row j's lanes at x.lanes + j).
        unsafe {
            let mut j = 0;
            if T <= 2 {
                while j + 2 <= M {
                    let (sa, sb) = fold_tail_pair_256::<T>(sums[j], sums[j + 1]);
                    let (xd, xs) = tail_scales(&*x.lanes.add(j));
                    acc[j] = scale::<F>(acc[j], sa, dw, mw, xd, xs);
                    let (xd, xs) = tail_scales(&*x.lanes.add(j + 1));
                    acc[j + 1] = scale::<F>(acc[j + 1], sb, dw, mw, xd, xs);
                    j += 2;
                }
            }
            while j < M {
                let (xd, xs) = tail_scales(&*x.lanes.add(j));
                acc[j] = scale::<F>(acc[j], tail_sums_256::<T>(sums[j]), dw, mw, xd, xs);
                j += 1;
            }
        }
    }

    /// Row `j`'s `maddubs` of [`il_tail`]: lane `k` then holds part of block `k % T`'s sum, and
    /// the lanes of a block add up to its exact `S_b`. Q4_0's offset is folded in (the sums
    /// start at the row's [`TailLanes::bsum`], `−8 · Σ q` and zero past the row), so the f32
    /// steps follow without [`accumulate`]'s subtraction; 4-bit weights add their `T` `maddubs`
    /// in 16 bits (at most 4 · 2 · 15 · 127) before one `madd`, Q8_0 (up to 2 · 128 · 127 per
    /// pair) widens each.
    ///
    /// # Safety
    /// As [`il_tail`], for row `j < M`; always inlined into it.
    #[inline(always)]
    unsafe fn tail_dots_256<F: QuantFormat, const T: usize>(
        t: &[__m256i; T],
        mag: &[__m256i; T],
        x: Panel,
        j: usize,
    ) -> __m256i {
        use crate::ops::cpu::simd::avx2::pairs_to_i32;
        // SAFETY: the caller's contract: row j's T compact chunks and its lanes are readable.
        unsafe {
            let xr = x.tail.add(j * T * QK);
            let init = if F::OFFSET8 {
                _mm256_loadu_si256((*x.lanes.add(j)).bsum.as_ptr().cast())
            } else {
                _mm256_setzero_si256()
            };
            if F::NIBBLES {
                let mut s16 = _mm256_setzero_si256();
                for (v, &m) in mag.iter().enumerate() {
                    let xv = _mm256_loadu_si256(xr.add(32 * v).cast());
                    s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(m, xv));
                }
                _mm256_add_epi32(init, pairs_to_i32(s16))
            } else {
                let mut s = init;
                for (v, (&m, &sign)) in mag.iter().zip(t).enumerate() {
                    let xv = _mm256_sign_epi8(_mm256_loadu_si256(xr.add(32 * v).cast()), sign);
                    s = _mm256_add_epi32(s, pairs_to_i32(_mm256_maddubs_epi16(m, xv)));
                }
                s
            }
        }
    }

    /// `tail_sums_256` of two rows' compact-tail sums at once (`T` = 1 or 2), as
    /// [`fold_tail_pair`] does in each 256-bit half: each row's block sums in lanes `0..T`.
    #[inline(always)]
    fn fold_tail_pair_256<const T: usize>(a: __m256i, b: __m256i) -> (__m256i, __m256i) {
        // SAFETY: the callers enable AVX2 (always inlined into `il_tail`).
        unsafe {
            if T == 1 {
                let u = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
                let u = _mm256_add_epi32(u, _mm256_shuffle_epi32::<0x4E>(u));
                let v = _mm256_add_epi32(u, _mm256_permute4x64_epi64::<0x4E>(u));
                (v, _mm256_shuffle_epi32::<0xB1>(v))
            } else {
                let u = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
                let v = _mm256_add_epi32(u, _mm256_permute4x64_epi64::<0x4E>(u));
                (v, _mm256_shuffle_epi32::<0x4E>(v))
            }
        }
    }

    /// [`panel_il`], or its VNNI twin when the CPU has `vpdpbusd` (same integers, same f32
    /// steps: same bits).
    ///
    /// # Safety
    /// As [`panel_il`]; `vnni` is an encoding this CPU has.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn panel_il_any<F: QuantFormat, const M: usize>(
        vnni: Option<Vnni>,
        rows: Rows<'_>,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract; each VNNI entry point is taken only with its encoding.
        unsafe {
            match vnni {
                None => panel_il::<F, M>(rows, x, il, out, ldo),
                Some(Vnni::Avx) => panel_il_avxvnni::<F, M>(rows, x, il, out, ldo),
                Some(Vnni::Avx512) => panel_il_avx512vnni::<F, M>(rows, x, il, out, ldo),
            }
        }
    }

    /// [`panel_il_vnni`] compiled for AVX-VNNI.
    ///
    /// # Safety
    /// As [`panel_il`], and the CPU has AVX-VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn panel_il_avxvnni<F: QuantFormat, const M: usize>(
        rows: Rows<'_>,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract; this function enables AvxVnni's features.
        unsafe { panel_il_vnni::<F, M, AvxVnni>(rows, x, il, out, ldo) }
    }

    /// Pairs of weight rows through [`row_pair`] (512-bit vectors), then an odd last row
    /// through [`panel_il_vnni`] (256-bit vectors, 32 registers), compiled for AVX512-VNNI.
    ///
    /// # Safety
    /// As [`panel_il`], and the CPU has AVX512-VNNI and AVX512-VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    unsafe fn panel_il_avx512vnni<F: QuantFormat, const M: usize>(
        rows: Rows<'_>,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract (pairs of rows below r1, then the rest); this function
        // enables Avx512Vnni's features.
        unsafe {
            let mut r = rows.r0;
            while r + 2 <= rows.r1 {
                row_pair::<F, M>([rows.row::<F>(r), rows.row::<F>(r + 1)], x, il, out.0.wrapping_add(r), ldo);
                r += 2;
            }
            panel_il_vnni::<F, M, Avx512Vnni>(Rows { r0: r, ..rows }, x, il, out, ldo)
        }
    }

    /// Two weight rows against `M` interleaved activation rows, in 512-bit vectors whose low
    /// half belongs to the first weight row and whose high half to the second: per group, the
    /// two rows' blocks are transposed together (4-bit: 4 two-source permutes, 4 128-bit lane
    /// shuffles, the nibble masks; Q8_0: [`QuantFormat::transpose_vnni_pair`]), each activation
    /// chunk is broadcast to both halves, and 8 `vpdpbusd` give both rows' 8 block sums in one
    /// vector. Every lane then takes the f32 steps of the module docs in 512-bit instructions,
    /// and each half ends in `hsum8`: the same operations per output as the 256-bit kernel,
    /// so the same bits. About half the instructions per product of the one-row kernel, which
    /// matters because 512-bit instructions leave only two vector ports. Each row's prefetches
    /// run twice the usual distance ahead: the rows of a pair are consecutive, so
    /// [`PREFETCH_BYTES`] ahead of the first row is where the second row is being read (on the
    /// 1B-shaped synthetic model in Q4_0, batch-6 decode went from 4.18–4.26× to 4.52–4.65×
    /// sequential on 1 thread). Q8_0 took this path later: 6 rows of hot 4096 × 768 and
    /// 2048 × 2048 weights went from 75 and 88 to 92 and 109 GMAC/s (one thread).
    ///
    /// # Safety
    /// Both weight rows are valid for `nb.next_multiple_of(8)` blocks, `il` for `M`
    /// interleaved rows, `x` for the scales and sums of `M` rows plus the over-read of the
    /// last group, `out` for the writes `out[j · ldo + q]`, `j < M`, `q < 2`; the CPU has
    /// AVX2/FMA/F16C, AVX512F/VL and AVX512-VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn row_pair<F: QuantFormat, const M: usize>(
        w: [WRow; 2],
        x: Panel,
        il: *const i8,
        out: *mut f32,
        ldo: usize,
    ) {
        let nb = x.nb;
        let (full, rem) = (nb / LANES, nb % LANES);
        let mut acc = [_mm512_setzero_ps(); M];
        // SAFETY (all): the caller's contract covers every group of both rows, the last one's
        // over-read included, and the 2 · M outputs.
        for g in 0..full {
            unsafe { row_pair_group::<F, M, false>(w, x, il, g * LANES, rem, &mut acc) };
        }
        if rem != 0 {
            let b0 = full * LANES;
            match x.tail_width() {
                Some(1) => unsafe { row_pair_tail::<F, M, 1>(w, x, b0, rem, &mut acc) },
                Some(2) => unsafe { row_pair_tail::<F, M, 2>(w, x, b0, rem, &mut acc) },
                Some(4) => unsafe { row_pair_tail::<F, M, 4>(w, x, b0, rem, &mut acc) },
                _ => unsafe { row_pair_group::<F, M, true>(w, x, il, b0, rem, &mut acc) },
            }
        }
        // SAFETY: the 2 · M outputs are the caller's.
        unsafe { store_pair_sums::<M>(&acc, out, ldo) };
    }

    /// Writes the sums of the two 256-bit halves of each `acc[j]` (low half: a pair's first
    /// weight row) to `out[j · ldo]` and `out[j · ldo + 1]`, each with `hsum8`'s operations
    /// (`t_i = a_i + a_{i+4}`, then `(t_0 + t_2) + (t_1 + t_3)`), for all rows together: one
    /// exchange of 128-bit lanes per two accumulators, one in-lane shuffle step per four, and
    /// a permute and 64-bit stores per four rows, where one `hsum8` per half took 6
    /// instructions and a store (a seventh of a 576-wide row pair's work at 6 rows). Hot 6-row
    /// products, one core, 3 alternating runs: 1536 × 576 Q4_0 94–96 → 102–104 GMAC/s, Q8_0
    /// 82–85 → 90–91; 4096 × 768 Q4_0 122–124 → 126–131; 2048 × 2048 Q8_0 108–110 → 112–115.
    ///
    /// # Safety
    /// `out[j · ldo]` and `out[j · ldo + 1]` are writable for `j < M ≤ 8`; the CPU has AVX2,
    /// FMA, F16C and AVX512F/VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    unsafe fn store_pair_sums<const M: usize>(acc: &[__m512; M], out: *mut f32, ldo: usize) {
        let zero = _mm512_setzero_ps();
        let get = |j: usize| if j < M { acc[j] } else { zero };
        // t[p]: the 4 partial sums t of A = acc[2p] (its halves r0, r1), then of B = acc[2p + 1],
        // one per 128-bit lane: [t(A.r0), t(A.r1), t(B.r0), t(B.r1)].
        let pairs = M.div_ceil(2);
        let mut t = [zero; 4];
        for (p, t) in t.iter_mut().enumerate().take(pairs) {
            let (a, b) = (get(2 * p), get(2 * p + 1));
            let x = _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b); // [a.l0, a.l2, b.l0, b.l2]
            let y = _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b); // [a.l1, a.l3, b.l1, b.l3]
            *t = _mm512_add_ps(x, y);
        }
        // Rows 4q..4q + 4 from t[2q] (u) and t[2q + 1] (v): per 128-bit lane k, element 0 is
        // u's lane k summed, element 2 v's; the permute puts the (r0, r1) pairs in row order.
        let order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
        for q in 0..pairs.div_ceil(2) {
            let (u, v) = (t[2 * q], if 2 * q + 1 < pairs { t[2 * q + 1] } else { zero });
            let lo = _mm512_shuffle_ps::<0b01_00_01_00>(u, v); // [u0, u1, v0, v1] per lane
            let hi = _mm512_shuffle_ps::<0b11_10_11_10>(u, v); // [u2, u3, v2, v3]
            let s = _mm512_add_ps(lo, hi); // [u0 + u2, u1 + u3, v0 + v2, v1 + v3]
            let r = _mm512_add_ps(s, _mm512_shuffle_ps::<0b10_11_00_01>(s, s));
            let g = _mm512_permutexvar_ps(order, r);
            let (g01, g23) = (_mm512_castps512_ps128(g), _mm512_extractf32x4_ps::<1>(g));
            for m in 0..4 {
                let j = 4 * q + m;
                if j >= M {
                    break;
                }
                let dst = out.wrapping_add(j * ldo);
                let half = if m < 2 { g01 } else { g23 };
                // SAFETY: out[j · ldo] and out[j · ldo + 1] are the caller's (8 bytes).
                unsafe {
                    if m % 2 == 0 {
                        _mm_storel_epi64(dst.cast(), _mm_castps_si128(half));
                    } else {
                        _mm_storeh_pd(dst.cast(), _mm_castps_pd(half));
                    }
                }
            }
        }
    }

    /// One group of [`row_pair`] (blocks `b0..b0 + 8` of both rows); `MASKED` as in
    /// [`il_group`].
    ///
    /// # Safety
    /// As [`row_pair`], for this group.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn row_pair_group<F: QuantFormat, const M: usize, const MASKED: bool>(
        w: [WRow; 2],
        x: Panel,
        il: *const i8,
        b0: usize,
        rem: usize,
        acc: &mut [__m512; M],
    ) {
        let (nb, vb) = (x.nb, F::VALUE_BYTES);
        let row_il = interleaved_blocks(nb) * QK;
        // SAFETY: the caller's contract covers these reads (blocks b0..b0 + 8 of both rows,
        // the interleaved group and the scales/sums of every activation row); prefetches never
        // fault.
        unsafe {
            let tail = tail_lanes(rem);
            let tail2 = _mm512_broadcast_i64x4(tail);
            let (dw0, mw0) = group_scales::<F, { 2 * PREFETCH_BYTES }>(w[0], b0, MASKED, tail);
            let (dw1, mw1) = group_scales::<F, { 2 * PREFETCH_BYTES }>(w[1], b0, MASKED, tail);
            let (dw, mw) = (join_ps(dw0, dw1), join_ps(mw0, mw1));
            let (p0, p1) = (w[0].values.add(b0 * vb), w[1].values.add(b0 * vb));
            let chunks = if F::NIBBLES {
                // Per row [word m | word m + 1] of blocks 0–7; the shuffles pair the rows.
                let [a01, a23] = nibble_words_512(p0);
                let [b01, b23] = nibble_words_512(p1);
                let words = [
                    _mm512_shuffle_i64x2::<0x44>(a01, b01),
                    _mm512_shuffle_i64x2::<0xEE>(a01, b01),
                    _mm512_shuffle_i64x2::<0x44>(a23, b23),
                    _mm512_shuffle_i64x2::<0xEE>(a23, b23),
                ];
                let m = _mm512_set1_epi8(0x0F);
                let lo = words.map(|v| _mm512_and_si512(v, m));
                let hi = words.map(|v| _mm512_and_si512(_mm512_srli_epi32::<4>(v), m));
                [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
            } else {
                F::transpose_vnni_pair(p0, p1)
            };
            for (j, acc) in acc.iter_mut().enumerate() {
                let xr = il.add(j * row_il + b0 * QK);
                let at = j * nb + b0;
                // The sums start at −2^bias · Σ q_x (`QActs::bsum`, there when the format has a
                // bias), so they end as the exact S_b; the lanes past a partial group hold
                // whatever their scales (zeroed) multiply.
                let init = if F::VNNI_BIAS_LOG2 > 0 {
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(x.bsum.add(at).cast()))
                } else {
                    _mm512_setzero_si512()
                };
                let mut s = [init, _mm512_setzero_si512()];
                for (c, &wc) in chunks.iter().enumerate() {
                    let xv = _mm512_broadcast_i64x4(_mm256_loadu_si256(xr.add(32 * c).cast()));
                    s[c % 2] = _mm512_dpbusd_epi32(s[c % 2], wc, xv);
                }
                let s = _mm512_add_epi32(s[0], s[1]);
                *acc = pair_scale::<F, MASKED>(*acc, s, dw, mw, x, at, tail2);
            }
        }
    }

    /// 256-bit halves into one 512-bit vector: low = first row, high = second.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    fn join_ps(lo: __m256, hi: __m256) -> __m512 {
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
            _mm256_castps_pd(hi),
        ))
    }

    /// The f32 steps of the module docs for one group of both rows of [`row_pair`]: `s` holds
    /// the exact block sums `S_b` (low half: first weight row), `dw` and `mw` the two rows'
    /// scales and mins (masked in a partial group), `at` the activation row's first block;
    /// `MASKED` zeroes the activation scales and sums of lanes outside `tail2`.
    ///
    /// # Safety
    /// Blocks `at..at + 8` of the panel's scales and sums are readable; the CPU has AVX2, FMA,
    /// F16C and AVX512F/VL.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    unsafe fn pair_scale<F: QuantFormat, const MASKED: bool>(
        acc: __m512,
        s: __m512i,
        dw: __m512,
        mw: __m512,
        x: Panel,
        at: usize,
        tail2: __m512i,
    ) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe {
            let mut xd =
                _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x.d.add(at)))));
            let mut xs = _mm512_setzero_si512();
            if MASKED {
                xd = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(xd), tail2));
            }
            if F::HAS_MIN {
                xs = _mm512_broadcast_i64x4(_mm256_loadu_si256(x.sum.add(at).cast()));
                if MASKED {
                    xs = _mm512_and_si512(xs, tail2);
                }
            }
            pair_steps::<F>(acc, s, dw, mw, xd, xs)
        }
    }

    /// The f32 steps of the module docs for both rows of a pair, lane for lane: `fma(d_w · d_x,
    /// S, acc)`, then (Q4_1) `fma(m_w · d_x, Σ q_x, ·)`; `xs` is read only with mins.
    #[inline(always)]
    fn pair_steps<F: QuantFormat>(
        acc: __m512,
        s: __m512i,
        dw: __m512,
        mw: __m512,
        xd: __m512,
        xs: __m512i,
    ) -> __m512 {
        // SAFETY: the callers enable AVX512F (always inlined into `pair_scale`, `row_pair_tail`).
        unsafe {
            let a = _mm512_fmadd_ps(_mm512_mul_ps(dw, xd), _mm512_cvtepi32_ps(s), acc);
            if F::HAS_MIN {
                _mm512_fmadd_ps(_mm512_mul_ps(mw, xd), _mm512_cvtepi32_ps(xs), a)
            } else {
                a
            }
        }
    }

    /// The last, partial group of [`row_pair`] (blocks `b0..b0 + rem`) from the compact tails
    /// (`T` = `quantize_act::tail_width`, 1, 2 or 4 blocks): per activation row `T`
    /// `vpdpbusd` on both weight rows' [`QuantFormat::tail_vnni`] chunks from the row's biased
    /// sums ([`tail_dots_512`]), the lanes of each block folded together (two rows at once with
    /// 1 or 2 blocks, [`fold_tail_pair`]; else `simd::avx2::tail_sums_halves`), where the
    /// padded group takes 8 `vpdpbusd`; the same integers, then the same f32 steps as
    /// [`row_pair_group`]'s masked group, with the row's [`TailLanes`] as its masked scales.
    ///
    /// # Safety
    /// As [`row_pair`] for its last group; the panel has a compact tail of width `T`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn row_pair_tail<F: QuantFormat, const M: usize, const T: usize>(
        w: [WRow; 2],
        x: Panel,
        b0: usize,
        rem: usize,
        acc: &mut [__m512; M],
    ) {
        let vb = F::VALUE_BYTES;
        // SAFETY: the caller's contract covers these reads (T ≤ 8 blocks from b0 of both
        // rows, T chunks and the lanes of every row's compact tail); prefetches never fault.
        unsafe {
            let tail = tail_lanes(rem);
            let (dw0, mw0) = group_scales::<F, { 2 * PREFETCH_BYTES }>(w[0], b0, true, tail);
            let (dw1, mw1) = group_scales::<F, { 2 * PREFETCH_BYTES }>(w[1], b0, true, tail);
            let (dw, mw) = (join_ps(dw0, dw1), join_ps(mw0, mw1));
            let a = F::tail_vnni::<T>(w[0].values.add(b0 * vb));
            let b = F::tail_vnni::<T>(w[1].values.add(b0 * vb));
            let chunks: [__m512i; T] =
                std::array::from_fn(|v| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a[v]), b[v]));
            let mut j = 0;
            // With 1 or 2 blocks, two rows' lanes are folded together (fewer shuffles per row).
            if T <= 2 {
                while j + 2 <= M {
                    let sa = tail_dots_512::<F, T>(&chunks, x, j);
                    let sb = tail_dots_512::<F, T>(&chunks, x, j + 1);
                    let (sa, sb) = fold_tail_pair::<T>(sa, sb);
                    acc[j] = pair_scale_lanes::<F>(acc[j], sa, dw, mw, x.lanes.add(j));
                    acc[j + 1] = pair_scale_lanes::<F>(acc[j + 1], sb, dw, mw, x.lanes.add(j + 1));
                    j += 2;
                }
            }
            while j < M {
                let s = tail_sums_halves::<T>(tail_dots_512::<F, T>(&chunks, x, j));
                acc[j] = pair_scale_lanes::<F>(acc[j], s, dw, mw, x.lanes.add(j));
                j += 1;
            }
        }
    }

    /// Row `j`'s `T` `vpdpbusd` of [`row_pair_tail`], starting at the row's biased sums
    /// ([`TailLanes::bsum`], zero in the lanes past the row, when the format has a bias): lane
    /// `k` of each half then holds part of block `k % T`'s sum, and the lanes of a block add up
    /// to its exact `S_b` (`tail_sums_halves`, [`fold_tail_pair`]).
    ///
    /// # Safety
    /// As [`row_pair_tail`], for row `j < M`; always inlined into it.
    #[inline(always)]
    unsafe fn tail_dots_512<F: QuantFormat, const T: usize>(
        chunks: &[__m512i; T],
        x: Panel,
        j: usize,
    ) -> __m512i {
        // SAFETY: the caller's contract: row j's T compact chunks and its lanes are readable.
        unsafe {
            let xr = x.tail.add(j * T * QK);
            let mut s = if F::VNNI_BIAS_LOG2 > 0 {
                _mm512_broadcast_i64x4(_mm256_loadu_si256((*x.lanes.add(j)).bsum.as_ptr().cast()))
            } else {
                _mm512_setzero_si512()
            };
            for (v, &wc) in chunks.iter().enumerate() {
                let xv = _mm512_broadcast_i64x4(_mm256_loadu_si256(xr.add(32 * v).cast()));
                s = _mm512_dpbusd_epi32(s, wc, xv);
            }
            s
        }
    }

    /// `tail_sums_halves` of two rows' compact-tail sums at once (`T` = 1 or 2): returns each
    /// row's block sums in lanes `0..T` of both halves (the other lanes hold the other row's,
    /// which the zero scales past the row ignore). The same integer additions, grouped
    /// differently: the same exact sums.
    #[inline(always)]
    fn fold_tail_pair<const T: usize>(a: __m512i, b: __m512i) -> (__m512i, __m512i) {
        // SAFETY: the callers enable AVX512F (always inlined into `row_pair_tail`).
        unsafe {
            if T == 1 {
                // Per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3], then a's four in
                // lane 0 and b's in lane 1, then both 128-bit lanes of each half.
                let u = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
                let u = _mm512_add_epi32(u, _mm512_shuffle_epi32::<0x4E>(u));
                let v = _mm512_add_epi32(u, _mm512_shuffle_i64x2::<0xB1>(u, u));
                (v, _mm512_shuffle_epi32::<0xB1>(v))
            } else {
                // Per 128-bit lane: [a0 + a2, a1 + a3, b0 + b2, b1 + b3] (block k % 2 in lane
                // k), then both 128-bit lanes of each half: a's two blocks in lanes 0, 1 and
                // b's in lanes 2, 3.
                let u = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
                let v = _mm512_add_epi32(u, _mm512_shuffle_i64x2::<0xB1>(u, u));
                (v, _mm512_shuffle_epi32::<0x4E>(v))
            }
        }
    }

    /// [`pair_scale`]'s masked steps with the row's [`TailLanes`] (scales and sums already
    /// zero past the row): the same values in every lane, so the same bits.
    ///
    /// # Safety
    /// `lanes` is readable; the CPU has AVX2, FMA, F16C and AVX512F/VL (always inlined into
    /// [`row_pair_tail`]).
    #[inline(always)]
    unsafe fn pair_scale_lanes<F: QuantFormat>(
        acc: __m512,
        s: __m512i,
        dw: __m512,
        mw: __m512,
        lanes: *const TailLanes,
    ) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe {
            let xd = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(
                (*lanes).d.as_ptr(),
            ))));
            let xs = _mm512_broadcast_i64x4(_mm256_loadu_si256((*lanes).sum.as_ptr().cast()));
            pair_steps::<F>(acc, s, dw, mw, xd, xs)
        }
    }

    /// [`panel_il`] with `vpdpbusd`: per group and row, 8 `vpdpbusd` give the biased block
    /// sums `S'` ([`QuantFormat::transpose_vnni`]), adding the biased activation sums
    /// ([`QActs::bsum`]) makes them the exact `S_b`, then the same f32 steps as [`il_group`].
    /// Always inlined into the entry point that enables `D`.
    ///
    /// # Safety
    /// As [`panel_il`]; the CPU has `D`'s features.
    #[inline(always)]
    unsafe fn panel_il_vnni<F: QuantFormat, const M: usize, D: Dpbusd>(
        rows: Rows<'_>,
        x: Panel,
        il: *const i8,
        out: OutPtr,
        ldo: usize,
    ) {
        let nb = rows.w.nb;
        let (full, rem) = (nb / LANES, nb % LANES);
        for r in rows.r0..rows.r1 {
            let wr = rows.row::<F>(r);
            let mut acc = [_mm256_setzero_ps(); M];
            // SAFETY (all): the caller's contract covers every group of the row, the last
            // one's over-read included, and the M outputs of the row.
            for g in 0..full {
                unsafe { il_group_vnni::<F, M, D, false>(wr, x, il, g * LANES, rem, &mut acc) };
            }
            if rem != 0 {
                let b0 = full * LANES;
                match x.tail_width() {
                    Some(1) => unsafe { il_tail_vnni::<F, M, D, 1>(wr, x, b0, rem, &mut acc) },
                    Some(2) => unsafe { il_tail_vnni::<F, M, D, 2>(wr, x, b0, rem, &mut acc) },
                    Some(4) => unsafe { il_tail_vnni::<F, M, D, 4>(wr, x, b0, rem, &mut acc) },
                    _ => unsafe { il_group_vnni::<F, M, D, true>(wr, x, il, b0, rem, &mut acc) },
                }
            }
            unsafe { store_sums::<M>(&acc, OutPtr(out.0.wrapping_add(r)), ldo) };
        }
    }

    /// One group of [`panel_il_vnni`]: [`il_group`] with the VNNI block sums. The chunk loop
    /// is outside the row loop, so one weight vector is live at a time and each row keeps its
    /// own integer accumulator (two below 5 rows, to keep enough `vpdpbusd` chains in flight).
    ///
    /// # Safety
    /// As [`il_group`]; the CPU has `D`'s features.
    #[inline(always)]
    unsafe fn il_group_vnni<F: QuantFormat, const M: usize, D: Dpbusd, const MASKED: bool>(
        w: WRow,
        x: Panel,
        il: *const i8,
        b0: usize,
        rem: usize,
        acc: &mut [__m256; M],
    ) {
        let (nb, vb) = (x.nb, F::VALUE_BYTES);
        let row_il = interleaved_blocks(nb) * QK;
        // SAFETY: as in `il_group` (the same reads); the intrinsics need AVX2 and `D`, which
        // the caller enables.
        unsafe {
            let tail = tail_lanes(rem);
            let (dw, mw) = group_scales::<F, PREFETCH_BYTES>(w, b0, MASKED, tail);
            let (p, xg) = (w.values.add(b0 * vb), il.add(b0 * QK));
            let s: [__m256i; M] = if F::NIBBLES {
                D::nibble_sums::<M>(p, xg, row_il)
            } else {
                sums_256::<D, M>(&F::transpose_vnni(p), xg, row_il)
            };
            for (j, (acc, &s)) in acc.iter_mut().zip(&s).enumerate() {
                let (xd, xs) = act_scales(x, j, b0, MASKED, tail);
                // Plus −2^bias · Σ q_x (`QActs::bsum`): the exact S_b.
                let s = if F::VNNI_BIAS_LOG2 > 0 {
                    _mm256_add_epi32(s, _mm256_loadu_si256(x.bsum.add(j * nb + b0).cast()))
                } else {
                    s
                };
                *acc = scale::<F>(*acc, s, dw, mw, xd, xs);
            }
        }
    }

    /// The last, partial group of [`panel_il_vnni`] (blocks `b0..b0 + rem`) from the compact
    /// tail of width `T` (1, 2 or 4): per row `T` `vpdpbusd` from the row's biased sums and
    /// the lane sums folded by [`scale_tail_rows`] instead of the padded group's 8
    /// `vpdpbusd`; the same integers and f32 steps as [`il_group_vnni`]'s masked group, with
    /// the row's [`TailLanes`] as its masked scales.
    ///
    /// # Safety
    /// As [`il_group_vnni`] for the last group; the panel has a compact tail of width `T`.
    #[inline(always)]
    unsafe fn il_tail_vnni<F: QuantFormat, const M: usize, D: Dpbusd, const T: usize>(
        w: WRow,
        x: Panel,
        b0: usize,
        rem: usize,
        acc: &mut [__m256; M],
    ) {
        let vb = F::VALUE_BYTES;
        // SAFETY: as in `row_pair_tail`, for one weight row; the caller enables AVX2 and `D`.
        unsafe {
            let tail = tail_lanes(rem);
            let (dw, mw) = group_scales::<F, PREFETCH_BYTES>(w, b0, true, tail);
            let t = F::tail_vnni::<T>(w.values.add(b0 * vb));
            let mut sums = [_mm256_setzero_si256(); M];
            for (j, s) in sums.iter_mut().enumerate() {
                *s = tail_dots_vnni::<F, D, T>(&t, x, j);
            }
            scale_tail_rows::<F, M, T>(&sums, x, dw, mw, acc);
        }
    }

    /// Row `j`'s `T` `vpdpbusd` of [`il_tail_vnni`] from its biased sums (zero past the row),
    /// as [`tail_dots_512`] does in 256 bits.
    ///
    /// # Safety
    /// As [`il_tail_vnni`], for row `j < M`; always inlined into it.
    #[inline(always)]
    unsafe fn tail_dots_vnni<F: QuantFormat, D: Dpbusd, const T: usize>(
        t: &[__m256i; T],
        x: Panel,
        j: usize,
    ) -> __m256i {
        // SAFETY: the caller's contract: row j's T compact chunks and its lanes are readable.
        unsafe {
            let xr = x.tail.add(j * T * QK);
            let mut s = if F::VNNI_BIAS_LOG2 > 0 {
                _mm256_loadu_si256((*x.lanes.add(j)).bsum.as_ptr().cast())
            } else {
                _mm256_setzero_si256()
            };
            for (v, &wc) in t.iter().enumerate() {
                s = D::dpbusd(s, wc, _mm256_loadu_si256(xr.add(32 * v).cast()));
            }
            s
        }
    }

    /// Lanes `< rem` set: the mask of the last, partial group of a row.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tail_lanes(rem: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// A row's [`TailLanes`] scales and integer sums (zero past the row: what [`act_scales`]
    /// gives for the masked last group).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn tail_scales(lanes: &TailLanes) -> (__m256, __m256i) {
        // SAFETY: two 8-lane loads of 8-element arrays.
        unsafe { (_mm256_loadu_ps(lanes.d.as_ptr()), _mm256_loadu_si256(lanes.sum.as_ptr().cast())) }
    }

    /// The scales and integer sums of blocks `b0..b0 + 8` of activation row `j`, lanes outside
    /// `tail` zeroed when `masked` (the scalar twin's padded lanes).
    ///
    /// # Safety
    /// Blocks `b0..b0 + 8` of row `j`'s scales and sums (plus slack) are readable; the CPU has
    /// AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn act_scales(x: Panel, j: usize, b0: usize, masked: bool, tail: __m256i) -> (__m256, __m256i) {
        // SAFETY: the caller's contract.
        let (xd, xs) = unsafe {
            let at = j * x.nb + b0;
            (_mm256_loadu_ps(x.d.add(at)), _mm256_loadu_si256(x.sum.add(at).cast()))
        };
        if masked {
            (_mm256_and_ps(xd, _mm256_castsi256_ps(tail)), _mm256_and_si256(xs, tail))
        } else {
            (xd, xs)
        }
    }

    /// Prefetches what the group `AHEAD` bytes (usually [`PREFETCH_BYTES`]) ahead of block `b0`
    /// of weight row `w` will read (values, scales, mins), and returns the scales and mins of
    /// blocks `b0..b0 + 8` in f32, lanes `≥ rem` zeroed when `masked` (the scalar twin's padded
    /// lanes).
    ///
    /// # Safety
    /// Blocks `b0..b0 + 8` of the row's scales (and mins) are readable (prefetches never
    /// fault); the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn group_scales<F: QuantFormat, const AHEAD: usize>(
        w: WRow,
        b0: usize,
        masked: bool,
        tail: __m256i,
    ) -> (__m256, __m256) {
        let vb = F::VALUE_BYTES;
        // SAFETY: the caller's contract; f16 is 2 bytes, so 8 scales are one 16-byte load.
        unsafe {
            let ahead = w.values.wrapping_add(b0 * vb + AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            if vb * LANES > 128 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(192).cast());
            }
            let sahead = w.scales.add(b0).cast::<u8>().wrapping_add(AHEAD * 2 / vb);
            _mm_prefetch::<_MM_HINT_T0>(sahead.cast());
            if F::HAS_MIN {
                let mahead = w.mins.add(b0).cast::<u8>().wrapping_add(AHEAD * 2 / vb);
                _mm_prefetch::<_MM_HINT_T0>(mahead.cast());
            }
            let mut dw = _mm256_cvtph_ps(_mm_loadu_si128(w.scales.add(b0).cast()));
            let mut mw = if F::HAS_MIN {
                _mm256_cvtph_ps(_mm_loadu_si128(w.mins.add(b0).cast()))
            } else {
                _mm256_setzero_ps()
            };
            if masked {
                dw = _mm256_and_ps(dw, _mm256_castsi256_ps(tail));
                mw = _mm256_and_ps(mw, _mm256_castsi256_ps(tail));
            }
            (dw, mw)
        }
    }

    /// Adds one group of 8 block sums `s` (before the Q4_0 offset) to `acc` (lane l = block l
    /// of the group).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn accumulate<F: QuantFormat>(
        acc: __m256,
        s: __m256i,
        dw: __m256,
        mw: __m256,
        xd: __m256,
        xs: __m256i,
    ) -> __m256 {
        let s = if F::OFFSET8 { _mm256_sub_epi32(s, _mm256_slli_epi32::<3>(xs)) } else { s };
        scale::<F>(acc, s, dw, mw, xd, xs)
    }

    /// Adds one group of 8 exact block sums `S_b` to `acc`: the f32 steps of the module docs.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn scale<F: QuantFormat>(
        acc: __m256,
        s: __m256i,
        dw: __m256,
        mw: __m256,
        xd: __m256,
        xs: __m256i,
    ) -> __m256 {
        let acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, xd), _mm256_cvtepi32_ps(s), acc);
        if F::HAS_MIN {
            _mm256_fmadd_ps(_mm256_mul_ps(mw, xd), _mm256_cvtepi32_ps(xs), acc)
        } else {
            acc
        }
    }
}
