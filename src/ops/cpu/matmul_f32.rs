//! Float weights (f32, and through [`FloatWeight`] also f16/bf16): `out[i][r] = x[i] · W[r]`,
//! both operands contiguous along k (an "NT" GEMM), f32 FMA accumulation.
//!
//! One register-blocked micro-kernel serves decode and prefill: it computes an `MR × NR` tile
//! of outputs (up to 4 activation rows × 3 weight rows: 12 accumulators + 3 weight vectors + 1
//! activation vector = the 16 AVX2 registers; 3 × 4 spills and runs at 40 % of peak) by
//! streaming both operands along k, 8 lanes at a time — the dot-product form of a GEMM
//! micro-kernel (like the "NT" kernels of BLIS/OpenBLAS, without packing, since both operands
//! are already k-contiguous). Loop order, innermost first: activation panels of 4 rows within
//! an L2-sized block of activation rows, then weight micro-panels of 3 rows (in L1 while every
//! panel of the block passes over them), then activation blocks. Decode (`n ≤ 8`) thus reads
//! each weight row from memory once for all rows; the encoder GEMM reaches ~75 % of FMA peak.
//!
//! What one output is, on every path (AVX2 or scalar, any tile shape, any thread count):
//!
//! ```text
//! acc_l = fma(x[8c + l], w[8c + l], acc_l)   for c = 0, 1, …; the last chunk zero-padded
//! out   = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
//! ```
//!
//! so decode in a batch of 6 gives bit-for-bit the rows of 6 single-sequence calls.

use super::simd::{hsum8_scalar, LANES};
use super::{Isa, OutPtr};

/// A float weight element converted exactly to f32 on load.
pub(crate) trait FloatWeight: Copy + Default + Send + Sync {
    /// The value as f32 (exact for f32, f16 and bf16).
    fn to_f32(self) -> f32;

    /// 8 consecutive weights as f32 lanes.
    ///
    /// # Safety
    /// `p` is valid for 8 reads; the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl FloatWeight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: `p` is valid for 8 reads (the trait's contract).
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

/// Computes `out[i][r]` for every `i < n` and `r` in `r0..r1`.
///
/// # Safety
/// `out` points to an `[n, rows]` buffer of which this call alone writes columns `r0..r1`;
/// `x` holds `n · k` values and `w` at least `r1 · k` (checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn float_rows<W: FloatWeight>(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[W],
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
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe {
            avx2::float_rows(x, n, k, w, r0, r1, out, rows)
        },
        _ => {
            for r in r0..r1 {
                let wr = &w[r * k..(r + 1) * k];
                for i in 0..n {
                    let v = dot_scalar(&x[i * k..(i + 1) * k], wr);
                    // SAFETY: (i, r) is in bounds of `[n, rows]` and column r is this task's.
                    unsafe { out.write(i * rows + r, v) };
                }
            }
        }
    }
}

/// Scalar twin of the AVX2 micro-kernel for one output.
fn dot_scalar<W: FloatWeight>(x: &[f32], w: &[W]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, wc) = (x.chunks_exact(LANES), w.chunks_exact(LANES));
    let (xr, wr) = (xc.remainder(), wc.remainder());
    for (xs, ws) in xc.zip(wc) {
        for l in 0..LANES {
            acc[l] = xs[l].mul_add(ws[l].to_f32(), acc[l]);
        }
    }
    if !xr.is_empty() {
        for (l, acc) in acc.iter_mut().enumerate() {
            let (a, b) = match (xr.get(l), wr.get(l)) {
                (Some(&a), Some(&b)) => (a, b.to_f32()),
                _ => (0.0, 0.0),
            };
            *acc = a.mul_add(b, *acc);
        }
    }
    hsum8_scalar(&acc)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::FloatWeight;
    use crate::ops::cpu::simd::avx2::hsum8;
    use crate::ops::cpu::simd::LANES;
    use crate::ops::cpu::OutPtr;

    /// Activation rows per micro-tile.
    const MR: usize = 4;
    /// Weight rows per micro-tile.
    const NR: usize = 3;
    /// Bytes of activation rows kept in L2 while the weight micro-panels pass over them.
    const X_BLOCK_BYTES: usize = 192 * 1024;

    /// See [`super::float_rows`]; same contract, plus the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn float_rows<W: FloatWeight>(
        x: &[f32],
        n: usize,
        k: usize,
        w: &[W],
        r0: usize,
        r1: usize,
        out: OutPtr,
        rows: usize,
    ) {
        let block = (X_BLOCK_BYTES / (4 * k).max(1)).max(MR) / MR * MR;
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + block).min(n);
            let mut r = r0;
            while r < r1 {
                let nr = (r1 - r).min(NR);
                let wp = w[r * k..].as_ptr();
                let mut i = i0;
                while i < i1 {
                    let mr = (i1 - i).min(MR);
                    let xp = x[i * k..].as_ptr();
                    // SAFETY: rows i..i + mr of x, r..r + nr of w and the outputs (i.., r..)
                    // are in bounds and this task's (caller's contract).
                    unsafe {
                        let op = out.0.add(i * rows + r);
                        match mr {
                            4 => tile_nr::<W, 4>(nr, xp, wp, k, op, rows),
                            3 => tile_nr::<W, 3>(nr, xp, wp, k, op, rows),
                            2 => tile_nr::<W, 2>(nr, xp, wp, k, op, rows),
                            _ => tile_nr::<W, 1>(nr, xp, wp, k, op, rows),
                        }
                    }
                    i += mr;
                }
                r += nr;
            }
            i0 = i1;
        }
    }

    /// Dispatches the weight-row count of a tile to a const parameter.
    ///
    /// # Safety
    /// As [`tile`] with `NR = nr`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile_nr<W: FloatWeight, const M: usize>(
        nr: usize,
        x: *const f32,
        w: *const W,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match nr {
                3 => tile::<W, M, 3>(x, w, k, out, ldo),
                2 => tile::<W, M, 2>(x, w, k, out, ldo),
                _ => tile::<W, M, 1>(x, w, k, out, ldo),
            }
        }
    }

    /// `out[i · ldo + r] = x[i] · w[r]` for `i < M`, `r < N`; rows of x and w are `k` apart.
    ///
    /// # Safety
    /// `x` is valid for `M · k` reads, `w` for `N · k`, `out` for the `M × N` strided writes;
    /// the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<W: FloatWeight, const M: usize, const N: usize>(
        x: *const f32,
        w: *const W,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let chunks = k / LANES;
        for c in 0..chunks {
            let o = c * LANES;
            // SAFETY: o + 8 ≤ k, so every load stays inside its row.
            unsafe {
                let mut wv = [_mm256_setzero_ps(); N];
                for (r, wv) in wv.iter_mut().enumerate() {
                    *wv = W::load8(w.add(r * k + o));
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(i * k + o));
                    for (acc, wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm256_fmadd_ps(xv, *wv, *acc);
                    }
                }
            }
        }
        let rem = k - chunks * LANES;
        if rem > 0 {
            let o = chunks * LANES;
            // SAFETY: elements o..k of every row exist; the padded copies have 8 elements.
            unsafe {
                let mut wv = [_mm256_setzero_ps(); N];
                for (r, wv) in wv.iter_mut().enumerate() {
                    let mut pad = [W::default(); LANES];
                    std::ptr::copy_nonoverlapping(w.add(r * k + o), pad.as_mut_ptr(), rem);
                    *wv = W::load8(pad.as_ptr());
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let mut pad = [0.0f32; LANES];
                    std::ptr::copy_nonoverlapping(x.add(i * k + o), pad.as_mut_ptr(), rem);
                    let xv = _mm256_loadu_ps(pad.as_ptr());
                    for (acc, wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm256_fmadd_ps(xv, *wv, *acc);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (r, acc) in acc.iter().enumerate() {
                // SAFETY: (i, r) is inside the tile (caller's contract).
                unsafe { *out.add(i * ldo + r) = hsum8(*acc) };
            }
        }
    }
}
