//! Slow f64 twins of the encoder's kernels (the oracles of the parity tests): plain loops,
//! whole score matrices, f64 everywhere. Not used on any fast path.

/// `erf(x)` in f64 from the series `erf x = 2/√π · e^{−x²} · Σ_n 2ⁿ x^{2n+1} / (1·3···(2n+1))`
/// (all terms positive: no cancellation), exact to a few ulp for |x| < 6; ±1 beyond (the
/// difference is below 10⁻¹⁶).
pub fn erf_f64(x: f64) -> f64 {
    if !x.is_finite() {
        return if x.is_nan() { x } else { x.signum() };
    }
    if x.abs() >= 6.0 {
        return x.signum();
    }
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// Exact GELU in f64.
pub fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2))
}

/// LayerNorm of each row of `x` `[n, d]` (`d = w.len()`), biased variance, in f64.
pub fn layer_norm_f64(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((&v, &wi), &bi) in row.iter().zip(w).zip(b) {
            y.push((v as f64 - mean) * rstd * wi as f64 + bi as f64);
        }
    }
    y
}

/// Multi-head self-attention in f64 with the whole score matrix: `q`, `k`, `v` `[B·T, D]`,
/// head `h` in columns `h·hd..(h+1)·hd`; returns `[B·T, D]`.
pub fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_seq: usize,
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
) -> Vec<f64> {
    let d = n_heads * head_dim;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0.0f64; n_seq * n_tokens * d];
    let mut scores = vec![0.0f64; n_tokens];
    for b in 0..n_seq {
        for h in 0..n_heads {
            let col = h * head_dim;
            for i in 0..n_tokens {
                let qi = &q[(b * n_tokens + i) * d + col..][..head_dim];
                for (j, s) in scores.iter_mut().enumerate() {
                    let kj = &k[(b * n_tokens + j) * d + col..][..head_dim];
                    *s = qi.iter().zip(kj).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>() * scale;
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut denom = 0.0;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    denom += *s;
                }
                let o = &mut out[(b * n_tokens + i) * d + col..][..head_dim];
                for (j, &p) in scores.iter().enumerate() {
                    let vj = &v[(b * n_tokens + j) * d + col..][..head_dim];
                    for (x, &vv) in o.iter_mut().zip(vj) {
                        *x += p / denom * vv as f64;
                    }
                }
            }
        }
    }
    out
}
