//! The packed GEMM for many activation rows (the vision encoder's linear layers):
//! `out[i][r] = x[i] · W[r]` with f32 (or f16/bf16, converted exactly) weights.
//!
//! [`super::matmul_f32`] is a dot-product kernel: it streams a row of `x` against a row of `W`
//! along k and reduces 8 lanes at the end, which is right for decode (it reads each weight
//! once) but spends ~10 % of a 768-long dot product on the final reductions and keeps seven
//! k-strided streams in flight. This is the outer-product form instead, as in BLIS and
//! OpenBLAS: both operands are packed into k-major micro-panels (`x`: 6 rows, `W`: 16 rows),
//! and a 6 × 16 register tile of outputs is updated by one rank-1 step per k (2 vector loads,
//! 6 broadcasts, 12 FMAs; 12 accumulators + 3 operands of the 16 AVX2 registers), with no
//! reduction at the end.
//!
//! Blocking (Zen 2/3: 32 KiB L1d, 512 KiB L2 per core, shared L3):
//! * `W` is packed once per call (all threads, one task per group of micro-panels) into
//!   `[rows/16][k][16]`; a `KC × 16` micro-panel (16 KiB) stays in L1 while every x panel of
//!   the block passes over it.
//! * `x` is split into blocks of [`MC`] rows, one task each; a task packs its rows once
//!   (`[k block][panel][kc][6]`), then for each group of [`NC_PANELS`] weight micro-panels (whose
//!   `MC × 256` outputs stay in L2) runs the k blocks in order, sweeping each weight micro-panel
//!   over the block's `MC × KC` packed rows (120 KiB, L2) and adding into `out`.
//!
//! Measured against OpenBLAS (numpy) on the same shapes and threads, interleaved: see the
//! README's vision section.
//!
//! What one output is, on every path (AVX2 and scalar, any block, any thread count, any `n`):
//!
//! ```text
//! for each k block b of KC = 256 (the last one shorter):
//!     s_b = 0; for j in block b: s_b = fma(x[i][j], w[r][j], s_b)
//! out[i][r] = ((s_0 + s_1) + s_2) + …
//! ```
//!
//! a sequential FMA chain per k block, the blocks added in order (which also keeps the rounding
//! error growing with `KC + k/KC` rather than `k`), so results do not depend on tiling, threads
//! or which rows share a call.
//! They differ in rounding from [`super::matmul_f32`]'s 8-lane order, which is why the decoder
//! (whose batched and one-by-one rows must agree bit for bit) does not use this path.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::cell::RefCell;

use super::matmul_f32::FloatWeight;
use super::{Isa, OutPtr, ThreadPool};
use crate::{Error, Result};

/// Activation rows per micro-tile.
const MR: usize = 6;
/// Weight rows per micro-tile (two 8-lane vectors).
const NR: usize = 16;
/// The k block: a `KC × NR` weight micro-panel is 16 KiB (L1).
const KC: usize = 256;
/// Activation rows per task (a multiple of `MR`): the packed `MC × KC` block is 120 KiB (L2).
const MC: usize = 120;
/// Weight micro-panels whose outputs a task finishes before the next ones: `MC × 256` outputs
/// (120 KiB) stay in L2 through all k blocks.
const NC_PANELS: usize = 16;
/// Weight micro-panels packed per packing task.
const PACK_PANELS: usize = 8;

thread_local! {
    /// The packed weight of the current call (on the calling thread; grows, never shrinks).
    static PACKED_W: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One task's packed activation block (on each worker thread).
    static PACKED_X: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Grows `buf` to `len` values, reporting an allocation failure as an error.
fn grow(buf: &mut Vec<f32>, len: usize, what: &str) -> Result<()> {
    if buf.len() < len {
        buf.try_reserve_exact(len - buf.len())
            .map_err(|_| Error::invalid("gemm", format!("cannot allocate {len} floats for the {what}")))?;
        buf.resize(len, 0.0);
    }
    Ok(())
}

/// Computes `out = x · Wᵀ` for `x` `[n, k]`, `w` `[rows, k]`, `out` `[n, rows]`.
///
/// # Safety
/// The shapes are as stated (checked by the caller) and `out` is not aliased.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<W: FloatWeight>(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[W],
    rows: usize,
    out: OutPtr,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if isa.avx2() {
        // SAFETY: the caller's contract, and Avx2 is only selected on a CPU that has it.
        return unsafe { packed(x, n, k, w, rows, out, pool) };
    }
    pool.run(n, &|i| {
        for r in 0..rows {
            let (xr, wr) = (&x[i * k..(i + 1) * k], &w[r * k..(r + 1) * k]);
            let mut acc = 0.0f32;
            for (b, (xb, wb)) in xr.chunks(KC).zip(wr.chunks(KC)).enumerate() {
                let s = xb.iter().zip(wb).fold(0.0f32, |s, (&a, &b)| a.mul_add(b.to_f32(), s));
                acc = if b == 0 { s } else { acc + s };
            }
            // SAFETY: (i, r) is in bounds of `[n, rows]`; task i alone writes row i.
            unsafe { out.write(i * rows + r, acc) };
        }
    })
}

/// The AVX2 path of [`gemm`]: pack the weight, then one task per block of [`MC`] rows.
///
/// # Safety
/// As [`gemm`]; the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
unsafe fn packed<W: FloatWeight>(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[W],
    rows: usize,
    out: OutPtr,
    pool: &ThreadPool,
) -> Result<()> {
    let panels = rows.div_ceil(NR);
    PACKED_W.with(|cell| {
        let mut guard;
        let mut fresh = Vec::new();
        // A nested call on this thread (not made by us) gets its own buffer.
        let packed: &mut Vec<f32> = match cell.try_borrow_mut() {
            Ok(g) => {
                guard = g;
                &mut guard
            }
            Err(_) => &mut fresh,
        };
        grow(packed, panels * k * NR, "packed weight")?;
        let wp = OutPtr(packed.as_mut_ptr());
        pool.run(panels.div_ceil(PACK_PANELS), &|t| {
            let base = wp; // the whole (Sync) wrapper, not its raw field
            for p in t * PACK_PANELS..((t + 1) * PACK_PANELS).min(panels) {
                // SAFETY: panel p occupies `[p·k·NR, (p+1)·k·NR)` of the packed buffer, which
                // holds `panels·k·NR` values; task t alone writes its panels.
                let dst = unsafe { std::slice::from_raw_parts_mut(base.0.add(p * k * NR), k * NR) };
                pack_w(w, k, rows, p * NR, dst);
            }
        })?;
        let packed: &[f32] = packed;
        let failed = std::sync::atomic::AtomicBool::new(false);
        pool.run(n.div_ceil(MC), &|t| {
            let i0 = t * MC;
            let i1 = (i0 + MC).min(n);
            let ok = PACKED_X.with(|cell| match cell.try_borrow_mut() {
                Ok(mut xp) => {
                    if grow(&mut xp, MC * k, "packed activations").is_err() {
                        return false;
                    }
                    // SAFETY: shapes checked by the caller; task t alone writes rows i0..i1.
                    unsafe { block(x, k, i0, i1, packed, rows, &mut xp, out) };
                    true
                }
                Err(_) => false,
            });
            if !ok {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })?;
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::invalid("gemm", "cannot allocate the packed activation block"));
        }
        Ok(())
    })
}

/// Packs weight rows `r0..r0 + NR` (zero past `rows`) into `dst` `[k][NR]`.
fn pack_w<W: FloatWeight>(w: &[W], k: usize, rows: usize, r0: usize, dst: &mut [f32]) {
    for j in 0..NR {
        let r = r0 + j;
        if r < rows {
            for (kk, &v) in w[r * k..(r + 1) * k].iter().enumerate() {
                dst[kk * NR + j] = v.to_f32();
            }
        } else {
            for kk in 0..k {
                dst[kk * NR + j] = 0.0;
            }
        }
    }
}

/// Packs `x` rows `i0..i1` (zero rows past `i1`, up to whole panels of [`MR`]) into `dst`:
/// for each k block of [`KC`] (the last one `kc` wide) starting at `p0`, at offset
/// `panels · MR · p0`, the panels `[panel][kc][MR]`.
fn pack_x(x: &[f32], k: usize, i0: usize, i1: usize, dst: &mut [f32]) {
    let panels = (i1 - i0).div_ceil(MR);
    let mut p0 = 0;
    while p0 < k {
        let kc = (k - p0).min(KC);
        let blk = &mut dst[panels * MR * p0..][..panels * MR * kc];
        for p in 0..panels {
            let d = &mut blk[p * kc * MR..(p + 1) * kc * MR];
            for i in 0..MR {
                let row = i0 + p * MR + i;
                if row < i1 {
                    for (kk, &v) in x[row * k + p0..row * k + p0 + kc].iter().enumerate() {
                        d[kk * MR + i] = v;
                    }
                } else {
                    for kk in 0..kc {
                        d[kk * MR + i] = 0.0;
                    }
                }
            }
        }
        p0 += kc;
    }
}

/// All outputs of rows `i0..i1`: pack the rows once, then for each group of [`NC_PANELS`]
/// weight micro-panels (whose outputs stay in L2) run the k blocks in order, each weight
/// micro-panel (L1) against every x micro-panel (L2).
///
/// # Safety
/// Shapes as in [`gemm`]; `xp` holds `(i1 − i0).div_ceil(MR) · MR · k` values; the CPU has
/// AVX2/FMA; no other task writes rows `i0..i1` of `out`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: &[f32],
    k: usize,
    i0: usize,
    i1: usize,
    packed_w: &[f32],
    rows: usize,
    xp: &mut [f32],
    out: OutPtr,
) {
    pack_x(x, k, i0, i1, xp);
    let x_panels = (i1 - i0).div_ceil(MR);
    let w_panels = rows.div_ceil(NR);
    for jc in (0..w_panels).step_by(NC_PANELS) {
        let mut p0 = 0;
        while p0 < k {
            let kc = (k - p0).min(KC);
            let xblk = &xp[x_panels * MR * p0..][..x_panels * MR * kc];
            for jp in jc..(jc + NC_PANELS).min(w_panels) {
                let wpanel = &packed_w[jp * k * NR + p0 * NR..][..kc * NR];
                let cols = (rows - jp * NR).min(NR);
                for ip in 0..x_panels {
                    let xpanel = &xblk[ip * kc * MR..(ip + 1) * kc * MR];
                    let row = i0 + ip * MR;
                    let m = (i1 - row).min(MR);
                    // SAFETY: the tile (row.., jp·NR..) of m × cols outputs is in bounds and
                    // this task's; the panels hold kc steps; the CPU has AVX2/FMA (caller).
                    unsafe {
                        avx2::tile(kc, xpanel, wpanel, out.0.add(row * rows + jp * NR), rows, p0 > 0, m, cols)
                    };
                }
            }
            p0 += kc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// `c[i][j] = (c[i][j] +) s[i][j]` for the `m × cols` corner of a 6 × 16 tile, where
    /// `s[i][j]` is one FMA per p, in order of p, from zero: `fma(xp[p][i], wp[p][j], s)`.
    ///
    /// # Safety
    /// `xp` holds `kc · MR` and `wp` `kc · NR` values; `c` is valid for the `m × cols` tile
    /// with row stride `ldc`; the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        kc: usize,
        xp: &[f32],
        wp: &[f32],
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        m: usize,
        cols: usize,
    ) {
        let full = m == MR && cols == NR;
        // Partial tiles go through a full 6 × 16 buffer (the padded rows and columns of the
        // panels are zero, so the extra lanes are computed and dropped).
        let mut buf = [0.0f32; MR * NR];
        let (cp, ld) = if full { (c, ldc) } else { (buf.as_mut_ptr(), NR) };
        // SAFETY: every pointer below stays inside the tile or the panels (contract above).
        unsafe {
            if !full && accumulate {
                for i in 0..m {
                    std::ptr::copy_nonoverlapping(c.add(i * ldc), buf.as_mut_ptr().add(i * NR), cols);
                }
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            let (mut x, mut w) = (xp.as_ptr(), wp.as_ptr());
            for _ in 0..kc {
                let w0 = _mm256_loadu_ps(w);
                let w1 = _mm256_loadu_ps(w.add(8));
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*x.add(i));
                    a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                }
                x = x.add(MR);
                w = w.add(NR);
            }
            if accumulate {
                for (i, a) in acc.iter_mut().enumerate() {
                    a[0] = _mm256_add_ps(_mm256_loadu_ps(cp.add(i * ld)), a[0]);
                    a[1] = _mm256_add_ps(_mm256_loadu_ps(cp.add(i * ld + 8)), a[1]);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(cp.add(i * ld), a[0]);
                _mm256_storeu_ps(cp.add(i * ld + 8), a[1]);
            }
            if !full {
                for i in 0..m {
                    std::ptr::copy_nonoverlapping(buf.as_ptr().add(i * NR), c.add(i * ldc), cols);
                }
            }
        }
    }
}
