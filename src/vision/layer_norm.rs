//! LayerNorm over the last dimension (HF `nn.LayerNorm(hidden, eps)`), f32, one row at a time:
//!
//! ```text
//! mean = Σx / d;  var = Σ(x − mean)² / d  (two passes, biased, like torch)
//! y    = (x − mean) · 1/√(var + eps) · w + b
//! ```
//!
//! Sums use 8 lanes of partial sums then a fixed tree, so the AVX2 build and the portable build
//! give the same bits. Rows are independent: [`layer_norm`] splits them over the pool.

use super::simd_dispatch;
use crate::ops::{Isa, ThreadPool};
use crate::{Error, Result};

/// Sum of a slice with 8 partial sums and a fixed final tree.
#[inline(always)]
pub(crate) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        acc[l] += v;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

#[inline(always)]
fn row_body(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = x.len() as f32;
    let mean = sum8(x) / d;
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            let t = c[l] - mean;
            acc[l] = t.mul_add(t, acc[l]);
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        let t = v - mean;
        acc[l] = t.mul_add(t, acc[l]);
    }
    let var = (((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))) / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((yo, &xi), &wi), &bi) in y.iter_mut().zip(x).zip(w).zip(b) {
        *yo = ((xi - mean) * rstd).mul_add(wi, bi);
    }
}

#[inline(always)]
fn rows_body(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        row_body(xr, yr, w, b, eps);
    }
}

simd_dispatch!(rows_avx2, rows_portable, rows_body(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32));

/// LayerNorm of every row of `x` (`[n, d]`, `d = w.len()`) into `y`, on one thread.
pub fn layer_norm_rows(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32, isa: Isa) -> Result<()> {
    check(x, y, w, b)?;
    match isa {
        // SAFETY: `Isa::Avx2` is only used when the CPU has AVX2 and FMA (`Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni if isa.available() => unsafe {
            rows_avx2(x, y, w, b, eps)
        },
        _ => rows_portable(x, y, w, b, eps),
    }
    Ok(())
}

/// [`layer_norm_rows`] with the rows split over `pool`. Results do not depend on the thread
/// count (each row is computed by one task, the same way).
pub fn layer_norm(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32, pool: &ThreadPool) -> Result<()> {
    check(x, y, w, b)?;
    let d = w.len();
    let n = x.len() / d;
    let isa = Isa::detect();
    let per = rows_per_task(n, pool.threads());
    let out = super::SyncPtr(y.as_mut_ptr());
    pool.run(n.div_ceil(per), &|t| {
        let r0 = t * per;
        let r1 = (r0 + per).min(n);
        // SAFETY: task t alone writes rows r0..r1 of `y`, which outlives the call.
        let yr = unsafe { out.slice(r0 * d, (r1 - r0) * d) };
        let _ = layer_norm_rows(&x[r0 * d..r1 * d], yr, w, b, eps, isa);
    })
}

/// Rows per task for cheap row-wise kernels: about 8 tasks per thread.
pub(crate) fn rows_per_task(n: usize, threads: usize) -> usize {
    n.div_ceil(threads.max(1) * 8).max(1)
}

fn check(x: &[f32], y: &[f32], w: &[f32], b: &[f32]) -> Result<()> {
    let d = w.len();
    if d == 0 || b.len() != d || !x.len().is_multiple_of(d) || y.len() != x.len() {
        return Err(Error::Shape {
            what: "layer_norm".into(),
            expected: format!("x and y [n, d] with d = weight length = bias length ({d})"),
            found: format!("x {} values, y {}, bias {}", x.len(), y.len(), b.len()),
        });
    }
    Ok(())
}
