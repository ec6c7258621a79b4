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

/// Where the float micro-kernel reads its weights: rows of `k` values along k, each converted
/// exactly to f32 on load. [`DenseRows`] is a dense f32/f16/bf16 matrix;
/// `matmul_dequant::DequantRows` dequantizes Q8_0/Q4_0/Q4_1 blocks in registers (the
/// f32-activation path). The kernel's operations per output do not depend on the source, so
/// a quantized matrix gives the bits its dequantized f32 copy gives.
pub(crate) trait WeightRows: Copy + Send + Sync {
    /// Loading converts more than a format's width (dequantization): with many activation rows
    /// the AVX2 kernel converts each weight micro-panel once into an f32 buffer and runs the
    /// tiles on that, instead of converting it again for every 4-row activation panel.
    const CONVERTS: bool = false;

    /// Element `o` of row `r` as f32.
    fn get(self, r: usize, o: usize) -> f32;

    /// Elements `o..o + 8` of row `r` as f32 lanes (each equal to [`WeightRows::get`]'s).
    ///
    /// # Safety
    /// Row `r` exists, `o + 8 ≤ k`, and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(self, r: usize, o: usize) -> std::arch::x86_64::__m256;

    /// Elements `o..o + 32` of row `r` as four [`WeightRows::load8`] vectors, for a
    /// converting source that unpacks a whole block of 32 more cheaply than four slices of 8.
    ///
    /// # Safety
    /// Row `r` exists, `o` is a multiple of 32 with `o + 32 ≤ k`, and the CPU has AVX2, FMA
    /// and F16C.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load32(self, r: usize, o: usize) -> [std::arch::x86_64::__m256; 4] {
        // SAFETY: the contract covers the four slices of 8.
        unsafe { [self.load8(r, o), self.load8(r, o + 8), self.load8(r, o + 16), self.load8(r, o + 24)] }
    }
}

/// A dense row-major `[rows, k]` float matrix as [`WeightRows`].
#[derive(Clone, Copy)]
pub(crate) struct DenseRows<'a, W> {
    pub w: &'a [W],
    pub k: usize,
}

impl<W: FloatWeight> WeightRows for DenseRows<'_, W> {
    #[inline(always)]
    fn get(self, r: usize, o: usize) -> f32 {
        self.w[r * self.k + o].to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(self, r: usize, o: usize) -> std::arch::x86_64::__m256 {
        // SAFETY: row r exists and o + 8 ≤ k (the trait's contract), so the 8 reads are inside
        // `w`; the CPU features are the caller's.
        unsafe { W::load8(self.w.as_ptr().add(r * self.k + o)) }
    }
}

/// Computes `out[i][r]` for every `i < n` and `r` in `r0..r1`.
///
/// # Safety
/// `out` points to an `[n, rows]` buffer of which this call alone writes columns `r0..r1`;
/// `x` holds `n · k` values and `w` at least `r1` rows of `k` (checked by the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn float_rows<S: WeightRows>(
    x: &[f32],
    n: usize,
    k: usize,
    w: S,
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
                for i in 0..n {
                    let v = dot_scalar(&x[i * k..(i + 1) * k], |o| w.get(r, o));
                    // SAFETY: (i, r) is in bounds of `[n, rows]` and column r is this task's.
                    unsafe { out.write(i * rows + r, v) };
                }
            }
        }
    }
}

/// Scalar twin of the AVX2 micro-kernel for one output: `x` against the weight row whose
/// element `o` is `w(o)`.
fn dot_scalar(x: &[f32], w: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let xc = x.chunks_exact(LANES);
    let (xr, base) = (xc.remainder(), x.len() - x.len() % LANES);
    for (c, xs) in xc.enumerate() {
        for l in 0..LANES {
            acc[l] = xs[l].mul_add(w(c * LANES + l), acc[l]);
        }
    }
    if !xr.is_empty() {
        for (l, acc) in acc.iter_mut().enumerate() {
            let (a, b) = match xr.get(l) {
                Some(&a) => (a, w(base + l)),
                None => (0.0, 0.0),
            };
            *acc = a.mul_add(b, *acc);
        }
    }
    hsum8_scalar(&acc)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::WeightRows;
    use crate::ops::cpu::simd::avx2::hsum8;
    use crate::ops::cpu::simd::LANES;
    use crate::ops::cpu::OutPtr;

    /// Activation rows per micro-tile.
    const MR: usize = 4;
    /// Weight rows per micro-tile.
    const NR: usize = 3;
    /// Bytes of activation rows kept in L2 while the weight micro-panels pass over them.
    const X_BLOCK_BYTES: usize = 192 * 1024;
    /// Most activation rows for which a converting source ([`WeightRows::CONVERTS`]) is read
    /// directly: batched decode (≤ 8 rows) never touches the buffer, so it never allocates.
    const DIRECT_MAX_ROWS: usize = 8;

    thread_local! {
        /// One weight micro-panel converted to f32 (`NR · k`): grows to the largest `k` seen.
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// See [`super::float_rows`]; same contract, plus the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn float_rows<S: WeightRows>(
        x: &[f32],
        n: usize,
        k: usize,
        w: S,
        r0: usize,
        r1: usize,
        out: OutPtr,
        rows: usize,
    ) {
        if S::CONVERTS && n > DIRECT_MAX_ROWS && k.is_multiple_of(LANES) {
            let done = PANEL.with(|cell| match cell.try_borrow_mut() {
                Ok(mut buf) => {
                    // SAFETY: forwarded contract; `buf` is this thread's alone.
                    unsafe { blocked(x, n, k, w, r0, r1, out, rows, Some(&mut buf)) };
                    true
                }
                Err(_) => false, // re-entered on this thread: read the source directly
            });
            if done {
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { blocked(x, n, k, w, r0, r1, out, rows, None) }
    }

    /// The loop nest of [`float_rows`]. With `buf`, each weight micro-panel is converted once
    /// per activation block (`w.load8`: the values the tiles would load) and the tiles read
    /// that f32 copy: the same operations on the same values, so the same bits.
    ///
    /// # Safety
    /// As [`float_rows`]; with `buf`, `k` is a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked<S: WeightRows>(
        x: &[f32],
        n: usize,
        k: usize,
        w: S,
        r0: usize,
        r1: usize,
        out: OutPtr,
        rows: usize,
        mut buf: Option<&mut Vec<f32>>,
    ) {
        if let Some(buf) = buf.as_deref_mut().filter(|b| b.len() < NR * k) {
            buf.resize(NR * k, 0.0);
        }
        let block = (X_BLOCK_BYTES / (4 * k).max(1)).max(MR) / MR * MR;
        let mut i0 = 0;
        while i0 < n {
            let i1 = (i0 + block).min(n);
            let mut r = r0;
            while r < r1 {
                let nr = (r1 - r).min(NR);
                // SAFETY (both): rows i0..i1 of x, rows r..r + nr of w (or 0..nr of the
                // converted panel) and the outputs (i0..i1, r..r + nr) are in bounds and this
                // task's (caller's contract).
                match buf.as_deref_mut() {
                    Some(buf) => {
                        for j in 0..nr {
                            for o in (0..k).step_by(LANES) {
                                // SAFETY: row r + j < r1 exists, o + 8 ≤ k, `buf` holds NR · k.
                                unsafe {
                                    _mm256_storeu_ps(buf.as_mut_ptr().add(j * k + o), w.load8(r + j, o))
                                };
                            }
                        }
                        let panel = super::DenseRows { w: &buf[..nr * k], k };
                        unsafe { panels(x, i0, i1, k, panel, 0, nr, out.0.add(r), rows) };
                    }
                    None => unsafe { panels(x, i0, i1, k, w, r, nr, out.0.add(r), rows) },
                }
                r += nr;
            }
            i0 = i1;
        }
    }

    /// Activation rows `i0..i1` in panels of up to `MR` against weight rows `r..r + nr` of `w`,
    /// written to `out[i · ldo + j]`.
    ///
    /// # Safety
    /// As [`tile`] for every panel; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels<S: WeightRows>(
        x: &[f32],
        i0: usize,
        i1: usize,
        k: usize,
        w: S,
        r: usize,
        nr: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut i = i0;
        while i < i1 {
            let mr = (i1 - i).min(MR);
            let xp = x[i * k..].as_ptr();
            // SAFETY: the caller's contract, for rows i..i + mr.
            unsafe {
                let op = out.add(i * ldo);
                match mr {
                    4 => tile_nr::<S, 4>(nr, xp, w, r, k, op, ldo),
                    3 => tile_nr::<S, 3>(nr, xp, w, r, k, op, ldo),
                    2 => tile_nr::<S, 2>(nr, xp, w, r, k, op, ldo),
                    _ => tile_nr::<S, 1>(nr, xp, w, r, k, op, ldo),
                }
            }
            i += mr;
        }
    }

    /// Dispatches the weight-row count of a tile to a const parameter.
    ///
    /// # Safety
    /// As [`tile`] with `NR = nr`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile_nr<S: WeightRows, const M: usize>(
        nr: usize,
        x: *const f32,
        w: S,
        r: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match nr {
                3 => tile::<S, M, 3>(x, w, r, k, out, ldo),
                2 => tile::<S, M, 2>(x, w, r, k, out, ldo),
                _ => tile::<S, M, 1>(x, w, r, k, out, ldo),
            }
        }
    }

    /// `out[i · ldo + j] = x[i] · w[r + j]` for `i < M`, `j < N`; rows of x are `k` apart.
    ///
    /// # Safety
    /// `x` is valid for `M · k` reads, `w` has rows `r..r + N` of `k`, `out` is valid for the
    /// `M × N` strided writes; the CPU has AVX2/FMA/F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<S: WeightRows, const M: usize, const N: usize>(
        x: *const f32,
        w: S,
        r: usize,
        k: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); N]; M];
        let chunks = k / LANES;
        // One activation row against a converting source (decode of a quantized weight with
        // f32 activations): whole blocks of 32 at a time, each accumulator still takes its
        // chunks in order (the same FMAs, the same bits). More rows would need more registers
        // than AVX2 has for 4 chunks of every weight row.
        let mut first = 0;
        if M == 1 && S::CONVERTS {
            while first + 4 <= chunks {
                let o = first * LANES;
                // SAFETY: o is a multiple of 32 (first steps by 4 chunks of 8) and o + 32 ≤ k.
                unsafe {
                    let mut wv = [[_mm256_setzero_ps(); 4]; N];
                    for (j, wv) in wv.iter_mut().enumerate() {
                        *wv = w.load32(r + j, o);
                    }
                    for q in 0..4 {
                        let xv = _mm256_loadu_ps(x.add(o + q * LANES));
                        for (acc, wv) in acc[0].iter_mut().zip(&wv) {
                            *acc = _mm256_fmadd_ps(xv, wv[q], *acc);
                        }
                    }
                }
                first += 4;
            }
        }
        for c in first..chunks {
            let o = c * LANES;
            // SAFETY: o + 8 ≤ k, so every load stays inside its row.
            unsafe {
                let mut wv = [_mm256_setzero_ps(); N];
                for (j, wv) in wv.iter_mut().enumerate() {
                    *wv = w.load8(r + j, o);
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
                for (j, wv) in wv.iter_mut().enumerate() {
                    let mut pad = [0.0f32; LANES];
                    for (e, p) in pad.iter_mut().enumerate().take(rem) {
                        *p = w.get(r + j, o + e);
                    }
                    *wv = _mm256_loadu_ps(pad.as_ptr());
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
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: (i, j) is inside the tile (caller's contract).
                unsafe { *out.add(i * ldo + j) = hsum8(*acc) };
            }
        }
    }
}
