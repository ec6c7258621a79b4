//! Rotary position embedding, HF `rotate_half` layout, with the optional `llama3` frequency
//! scaling (transformers `modeling_rope_utils._compute_llama3_parameters`, SPEC-model.md §10.2).
//!
//! Frequencies and angles are computed in f64 and rounded once to f32 (transformers computes
//! `inv_freq` and the angles in f32; the difference is below f32 rounding of the result for the
//! positions a session holds, and we are the more exact of the two).

use crate::model::config::DecoderConfig;

/// The per-pair inverse frequencies of one head (`head_dim / 2` of them).
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f64>,
}

impl Rope {
    /// The frequencies a decoder config implies.
    pub fn new(cfg: &DecoderConfig) -> Rope {
        Rope { inv_freq: inv_freq(cfg) }
    }

    /// `head_dim / 2`.
    pub fn half(&self) -> usize {
        self.inv_freq.len()
    }

    /// The inverse frequencies (after scaling).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Writes `cos` and `sin` of `pos · inv_freq[i]` (each `head_dim / 2` values).
    pub fn angles(&self, pos: usize, cos: &mut [f32], sin: &mut [f32]) {
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let a = pos as f64 * f;
            cos[i] = a.cos() as f32;
            sin[i] = a.sin() as f32;
        }
    }
}

/// Rotates one head vector in place: pairs `(i, i + d/2)` by the angle of pair `i`
/// (`x' = x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(-x[d/2:], x[:d/2])`).
pub fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (lo, hi) = x.split_at_mut(half);
    // Zipped slices (no index checks), so the loop vectorizes; the same operations per pair.
    for (((lo, hi), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (a, b) = (*lo, *hi);
        *lo = a * c - b * s;
        *hi = b * c + a * s;
    }
}

/// `inv_freq_i = theta^(-2i/d)`, then the `llama3` rule when configured: wavelengths shorter
/// than `orig / high_freq_factor` keep their frequency, longer than `orig / low_freq_factor`
/// are divided by `factor`, and those between are interpolated with
/// `smooth = (orig / wavelen − low) / (high − low)`.
fn inv_freq(cfg: &DecoderConfig) -> Vec<f64> {
    let d = cfg.head_dim;
    (0..d / 2)
        .map(|i| {
            let f = 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64);
            let Some(s) = &cfg.rope_scaling else { return f };
            let orig = s.original_max_position_embeddings as f64;
            let low_wavelen = orig / s.low_freq_factor;
            let high_wavelen = orig / s.high_freq_factor;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::RopeScaling;

    #[test]
    fn llama3_scaling_bands() {
        let mut cfg = DecoderConfig { head_dim: 16, rope_theta: 10000.0, ..DecoderConfig::default() };
        cfg.rope_scaling = None;
        let plain = Rope::new(&cfg);
        cfg.rope_scaling = Some(RopeScaling {
            factor: 4.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 16,
            ..RopeScaling::default()
        });
        let scaled = Rope::new(&cfg);
        // wavelengths 2π·10000^(i/8): i=0 is 6.28 (between 4 and 16: smoothed), i≥1 > 16: ÷4.
        let (p, s) = (plain.inv_freq(), scaled.inv_freq());
        let smooth = (16.0 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
        assert!((s[0] - ((1.0 - smooth) * p[0] / 4.0 + smooth * p[0])).abs() < 1e-15);
        for i in 1..8 {
            assert!((s[i] - p[i] / 4.0).abs() < 1e-15, "{i}");
        }
    }

    #[test]
    fn rotation_preserves_norm_and_matches_angle() {
        let mut x: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let before: f32 = x.iter().map(|v| v * v).sum();
        let cos = [0.6f32, 1.0, 0.0, -1.0];
        let sin = [0.8f32, 0.0, 1.0, 0.0];
        let orig = x.clone();
        rotate(&mut x, &cos, &sin);
        let after: f32 = x.iter().map(|v| v * v).sum();
        assert!((before - after).abs() < 1e-4);
        assert_eq!(x[0], orig[0] * 0.6 - orig[4] * 0.8);
        assert_eq!(x[2], -orig[6]);
        assert_eq!(x[6], orig[2]);
    }
}
