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

use half::f16;

use super::quantize_act::QActs;
use super::simd::{hsum8_scalar, LANES};
use super::{Isa, OutPtr};
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
        // SAFETY: `Isa::Avx2` is selected only when the CPU has AVX2/FMA/F16C; the bounds are
        // the caller's contract, forwarded.
        Isa::Avx2 => unsafe { avx2::quant_rows::<F>(acts, n, w, r0, r1, out, rows) },
        _ => {
            let (nb, vb) = (w.nb, F::VALUE_BYTES);
            for r in r0..r1 {
                let values = &w.values[r * nb * vb..(r + 1) * nb * vb];
                let scales = &w.scales[r * nb..(r + 1) * nb];
                let mins = if F::HAS_MIN { &w.mins[r * nb..(r + 1) * nb] } else { &[][..] };
                for i in 0..n {
                    let x = QActs {
                        qs: &acts.qs[i * nb * QK..(i + 1) * nb * QK],
                        d: &acts.d[i * nb..(i + 1) * nb],
                        sum: &acts.sum[i * nb..(i + 1) * nb],
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

    use super::{QActs, QMatrix, QuantFormat, Unpacked};
    use crate::ops::cpu::simd::avx2::hsum8;
    use crate::ops::cpu::simd::LANES;
    use crate::ops::cpu::OutPtr;
    use crate::quant::QK;

    /// Most activation rows one pass over the weights serves (decode batches up to 8).
    const MR_MAX: usize = 8;
    /// Weight rows streamed together: four concurrent streams keep more memory reads in flight
    /// than one (≈ 9.5 vs 7 GB/s for a cold Q8_0 GEMV on one Zen 3 core).
    const NR: usize = 4;

    /// See [`super::quant_rows`]; same contract, plus the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quant_rows<F: QuantFormat>(
        acts: QActs<'_>,
        n: usize,
        w: QMatrix<'_>,
        r0: usize,
        r1: usize,
        out: OutPtr,
        rows: usize,
    ) {
        let nb = w.nb;
        let row = |r: usize| WRow {
            values: w.values[r * nb * F::VALUE_BYTES..].as_ptr(),
            scales: w.scales[r * nb..].as_ptr(),
            mins: if F::HAS_MIN { w.mins[r * nb..].as_ptr() } else { std::ptr::null() },
        };
        let mut i0 = 0;
        while i0 < n {
            let mr = (n - i0).min(MR_MAX);
            let x = Panel {
                qs: acts.qs[i0 * nb * QK..].as_ptr(),
                d: acts.d[i0 * nb..].as_ptr(),
                sum: acts.sum[i0 * nb..].as_ptr(),
                nb,
            };
            let mut r = r0;
            while r < r1 {
                let o = OutPtr(out.0.wrapping_add(i0 * rows + r));
                // SAFETY: the panel holds rows i0..i0 + mr of `acts`, weight rows r..r + NR (or
                // r) are below r1 ≤ rows (caller's contract), and the outputs (i0 + j, r + q)
                // belong to this task.
                unsafe {
                    if r + NR <= r1 {
                        let ws = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                        match_mr::<F, NR>(mr, ws, x, o, rows);
                        r += NR;
                    } else {
                        match_mr::<F, 1>(mr, [row(r)], x, o, rows);
                        r += 1;
                    }
                }
            }
            i0 += mr;
        }
    }

    /// Dispatches the activation-row count of a tile to a const parameter.
    ///
    /// # Safety
    /// As [`tile`] with `MR = mr`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn match_mr<F: QuantFormat, const N: usize>(
        mr: usize,
        w: [WRow; N],
        x: Panel,
        out: OutPtr,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match mr {
                8 => tile::<F, 8, N>(w, x, out, ldo),
                7 => tile::<F, 7, N>(w, x, out, ldo),
                6 => tile::<F, 6, N>(w, x, out, ldo),
                5 => tile::<F, 5, N>(w, x, out, ldo),
                4 => tile::<F, 4, N>(w, x, out, ldo),
                3 => tile::<F, 3, N>(w, x, out, ldo),
                2 => tile::<F, 2, N>(w, x, out, ldo),
                _ => tile::<F, 1, N>(w, x, out, ldo),
            }
        }
    }

    /// One weight row: `nb` blocks of values, scales and (Q4_1) mins.
    #[derive(Clone, Copy)]
    struct WRow {
        values: *const u8,
        scales: *const f16,
        mins: *const f16,
    }

    /// Consecutive activation rows of `nb` blocks each.
    #[derive(Clone, Copy)]
    struct Panel {
        qs: *const i8,
        d: *const f32,
        sum: *const i32,
        nb: usize,
    }

    /// The `M × N` dot products of `M` activation rows with `N` weight rows, written to
    /// `out[j · ldo + q]`. Each weight block is unpacked once and used for all `M` rows.
    ///
    /// # Safety
    /// Every `w[q]` is valid for `nb` blocks, `x` for `M` rows, `out` for the `M × N` strided
    /// writes; the CPU has AVX2/FMA/F16C.
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
        let groups = nb / LANES;
        for g in 0..groups {
            let b0 = g * LANES;
            for (q, wq) in w.iter().enumerate() {
                // SAFETY: blocks b0..b0 + 8 < nb of this weight row and of the activation rows
                // exist (the caller's contract); f16 is 2 bytes, so 8 scales are one 16-byte
                // load.
                unsafe {
                    // Constant indices only, so the 8 blocks can live in registers.
                    let p = wq.values.add(b0 * vb);
                    let u: [Unpacked; LANES] = [
                        F::unpack(p),
                        F::unpack(p.add(vb)),
                        F::unpack(p.add(2 * vb)),
                        F::unpack(p.add(3 * vb)),
                        F::unpack(p.add(4 * vb)),
                        F::unpack(p.add(5 * vb)),
                        F::unpack(p.add(6 * vb)),
                        F::unpack(p.add(7 * vb)),
                    ];
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(wq.scales.add(b0).cast()));
                    let mw = if F::HAS_MIN {
                        _mm256_cvtph_ps(_mm_loadu_si128(wq.mins.add(b0).cast()))
                    } else {
                        _mm256_setzero_ps()
                    };
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let s = F::group_sums(&u, x.qs.add((j * nb + b0) * QK), LANES);
                        let xd = _mm256_loadu_ps(x.d.add(j * nb + b0));
                        let xs = _mm256_loadu_si256(x.sum.add(j * nb + b0).cast());
                        acc[q] = accumulate::<F>(acc[q], s, dw, mw, xd, xs);
                    }
                }
            }
        }
        let rem = nb - groups * LANES;
        if rem > 0 {
            let b0 = groups * LANES;
            for (q, wq) in w.iter().enumerate() {
                let mut u = [_mm256_setzero_si256(); LANES];
                let (mut dw16, mut mw16) = ([f16::ZERO; LANES], [f16::ZERO; LANES]);
                let (mut xd, mut xs) = ([[0.0f32; LANES]; M], [[0i32; LANES]; M]);
                // SAFETY: blocks b0..nb of this weight row and of the activation rows exist
                // (the caller's contract); the padded arrays have 8 elements, so the 16- and
                // 32-byte loads stay inside them.
                unsafe {
                    for b in 0..rem {
                        u[b] = F::unpack(wq.values.add((b0 + b) * vb));
                        dw16[b] = *wq.scales.add(b0 + b);
                        if F::HAS_MIN {
                            mw16[b] = *wq.mins.add(b0 + b);
                        }
                        for j in 0..M {
                            xd[j][b] = *x.d.add(j * nb + b0 + b);
                            xs[j][b] = *x.sum.add(j * nb + b0 + b);
                        }
                    }
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(dw16.as_ptr().cast()));
                    let mw = _mm256_cvtph_ps(_mm_loadu_si128(mw16.as_ptr().cast()));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let s = F::group_sums(&u, x.qs.add((j * nb + b0) * QK), rem);
                        let xdv = _mm256_loadu_ps(xd[j].as_ptr());
                        let xsv = _mm256_loadu_si256(xs[j].as_ptr().cast());
                        acc[q] = accumulate::<F>(acc[q], s, dw, mw, xdv, xsv);
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

    /// Adds one group of 8 block sums `s` to `acc` (lane l = block l of the group).
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
        let acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, xd), _mm256_cvtepi32_ps(s), acc);
        if F::HAS_MIN {
            _mm256_fmadd_ps(_mm256_mul_ps(mw, xd), _mm256_cvtepi32_ps(xs), acc)
        } else {
            acc
        }
    }
}
