//! The oracle for every matmul kernel: plain loops, no SIMD, no threads, f64 accumulation.
//!
//! * [`matmul_f64`]: `Σ_k x[i][k] · W[r][k]` in f64 on the dequantized weight (`Weight::to_f32`,
//!   exact for f32/f16/bf16 and equal to gguf-py's dequantization for the block formats).
//! * [`matmul`]: the same rounded to f32, behind the same shape checks as `ops::matmul`.
//! * [`abs_products`]: `Σ_k |x[i][k] · W[r][k]|`, the scale the per-element tolerances of
//!   [`super::tolerance`] are relative to.
//! * [`quantize_activations`]: the int8-per-block activation rounding the quantized kernels
//!   apply (written out independently of `cpu::quantize_act`), so a test can separate the
//!   kernel's arithmetic from the activation-quantization error.

use crate::quant::QK;
use crate::tensor::Weight;
use crate::Result;

/// `out[i][r] = Σ_k x[i][k] · w[r][k]` in f64; `x` `[n, k]`, `w` `[rows, k]`.
pub fn matmul_f64(x: &[f32], n: usize, w: &[f32], rows: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * rows];
    for i in 0..n {
        for r in 0..rows {
            let mut s = 0.0f64;
            for j in 0..k {
                s += x[i * k + j] as f64 * w[r * k + j] as f64;
            }
            out[i * rows + r] = s;
        }
    }
    out
}

/// `out[i][r] = Σ_k |x[i][k] · w[r][k]|` in f64.
pub fn abs_products(x: &[f32], n: usize, w: &[f32], rows: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * rows];
    for i in 0..n {
        for r in 0..rows {
            let mut s = 0.0f64;
            for j in 0..k {
                s += (x[i * k + j] as f64 * w[r * k + j] as f64).abs();
            }
            out[i * rows + r] = s;
        }
    }
    out
}

/// The reference matmul on any weight: dequantize, accumulate in f64, round to f32. Same shape
/// checks and errors as [`super::matmul`]; allocates freely.
pub fn matmul(x: &[f32], n: usize, w: &Weight<'_>, out: &mut [f32]) -> Result<()> {
    let (rows, k) = super::check(x, n, w, out)?;
    let wf = w.to_f32()?;
    for (o, v) in out.iter_mut().zip(matmul_f64(x, n, &wf, rows, k)) {
        *o = v as f32;
    }
    Ok(())
}

/// `x` (`len % 32 == 0`) after the quantized kernels' activation rounding, per block of 32:
/// `d = amax / 127`, `q = round_half_even(x · (127 / amax))`, value `q · d` (computed in f64;
/// the kernels keep `q` and `d` separately). Blocks that are all zero stay zero.
pub fn quantize_activations(x: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for block in x.chunks(QK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for &v in block {
            let q = (v * id).round_ties_even();
            out.push(q as f64 * d as f64);
        }
    }
    out
}

/// [`matmul_f64`] with the activations rounded as the quantized kernels round them: the value
/// a quantized kernel approximates up to f32 rounding of its scales and sums.
pub fn matmul_quantized_activations_f64(x: &[f32], n: usize, w: &[f32], rows: usize, k: usize) -> Vec<f64> {
    let xq = quantize_activations(x);
    let mut out = vec![0.0f64; n * rows];
    for i in 0..n {
        for r in 0..rows {
            let mut s = 0.0f64;
            for j in 0..k {
                s += xq[i * k + j] * w[r * k + j] as f64;
            }
            out[i * rows + r] = s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Dense;

    #[test]
    fn small_product() {
        // x = [[1, 2], [3, 4]], W = [[1, 0], [0, 1], [1, 1]] → out = [[1, 2, 3], [3, 4, 7]].
        let w = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0];
        let shape = [3usize, 2];
        let weight = Weight::F32(Dense { name: "w", shape: &shape, data: &w });
        let mut out = [0.0f32; 6];
        matmul(&[1.0, 2.0, 3.0, 4.0], 2, &weight, &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
        assert_eq!(abs_products(&[1.0, -2.0], 1, &w, 3, 2), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn activation_rounding() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5; // a tie: rounds to even
        x[2] = -3.5;
        let q = quantize_activations(&x);
        assert_eq!((q[0], q[1], q[2]), (127.0, 2.0, -4.0));
        assert!(quantize_activations(&[0.0; 32]).iter().all(|&v| v == 0.0));
    }
}
