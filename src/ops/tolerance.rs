//! How far each fast kernel may be from its reference: one table keyed by (op, weight type)
//! (STYLE.md rule 4), used by the parity tests and by model-level comparisons.
//!
//! Two measures, both against the f64 reference of [`super::reference`] on the dequantized
//! weight (`ref`):
//!
//! * `rel_l2 = ‖got − ref‖₂ / ‖ref‖₂` over one output tensor (llama.cpp's `test-backend-ops`
//!   budgets the square of this, the NMSE);
//! * `max_rel_abs = max |got − ref| / Σ_k |x_k · w_k|` per element: the error of each output
//!   relative to the size of the terms it sums, which stays meaningful when the output is
//!   near zero by cancellation.
//!
//! Where the errors come from:
//!
//! * f32 / f16 / bf16 weights: the weight converts exactly to f32; the only error is f32
//!   rounding in 8 FMA lanes plus a 3-level tree, at most `(k/8 + 3) · 2⁻²⁴ · Σ|x·w|` per element
//!   (≈ 6·10⁻⁵ at k = 8192) and in practice ~100× below that.
//! * Q8_0 / Q4_0 / Q4_1 weights ([`Op::Matmul`]): the activations are rounded to int8 per block
//!   of 32 (`|x − x̂| ≤ amax_block / 254`), which dominates: for activations without extreme
//!   outliers inside a block this gives ~0.3–0.5 % relative L2 error, independent of k. The
//!   weight's own quantization error is not counted (the reference uses the same dequantized
//!   weight). Activations with one huge value per block lose precision in that block's other
//!   values (as in llama.cpp).
//! * [`Op::MatmulQuantizedActivations`]: the same kernels against a reference that applies the
//!   same activation rounding ([`super::reference::matmul_quantized_activations_f64`]): what is
//!   left is f32 rounding of `d_w · d_x` and of the accumulation, ~10⁻⁷ relative.
//!
//! The bounds hold with margin for random inputs up to k = 16384; they are tested with
//! random (never zero) inputs in `tests/ops_matmul.rs`.

use crate::tensor::WeightType;

/// An operation whose results a tolerance applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `ops::matmul` against the f64 product of the unrounded activations and the dequantized
    /// weight.
    Matmul,
    /// `ops::matmul` on a quantized weight against the f64 product with the activations rounded
    /// as the kernel rounds them (isolates the kernel's own arithmetic).
    MatmulQuantizedActivations,
}

/// Error bounds for one (op, weight type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Bound on `‖got − ref‖₂ / ‖ref‖₂` over an output tensor.
    pub rel_l2: f64,
    /// Bound on `|got − ref| / Σ_k |x_k · w_k|` for every element.
    pub max_rel_abs: f64,
}

/// The table. Float weights have no `MatmulQuantizedActivations` row (nothing is quantized).
pub const TABLE: &[(Op, WeightType, Tolerance)] = &[
    (Op::Matmul, WeightType::F32, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
    (Op::Matmul, WeightType::F16, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
    (Op::Matmul, WeightType::Bf16, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
    (Op::Matmul, WeightType::Q8_0, Tolerance { rel_l2: 1.5e-2, max_rel_abs: 1.5e-2 }),
    (Op::Matmul, WeightType::Q4_0, Tolerance { rel_l2: 1.5e-2, max_rel_abs: 1.5e-2 }),
    (Op::Matmul, WeightType::Q4_1, Tolerance { rel_l2: 1.5e-2, max_rel_abs: 1.5e-2 }),
    (Op::MatmulQuantizedActivations, WeightType::Q8_0, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
    (Op::MatmulQuantizedActivations, WeightType::Q4_0, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
    (Op::MatmulQuantizedActivations, WeightType::Q4_1, Tolerance { rel_l2: 1e-6, max_rel_abs: 2e-6 }),
];

/// The tolerance for `(op, weight type)`, if the table has one.
pub fn tolerance(op: Op, weight_type: WeightType) -> Option<Tolerance> {
    TABLE.iter().find(|(o, w, _)| *o == op && *w == weight_type).map(|(_, _, t)| *t)
}

/// Measured errors of one output tensor against a reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// `‖got − ref‖₂ / ‖ref‖₂` (0 when both are zero).
    pub rel_l2: f64,
    /// `max |got − ref| / scale` over elements (elements with scale 0 must match exactly,
    /// else this is infinite).
    pub max_rel_abs: f64,
    /// `max |got − ref|`.
    pub max_abs: f64,
}

impl ErrorStats {
    /// Compares `got` with `reference`, per-element scales `scale` (`Σ_k |x_k · w_k|`, see
    /// [`super::reference::abs_products`]). The three slices must have equal lengths; extra
    /// elements of the longer ones are ignored.
    pub fn measure(got: &[f32], reference: &[f64], scale: &[f64]) -> ErrorStats {
        let (mut err2, mut ref2) = (0.0f64, 0.0f64);
        let mut s = ErrorStats::default();
        for ((&g, &r), &sc) in got.iter().zip(reference).zip(scale) {
            let e = (g as f64 - r).abs();
            err2 += e * e;
            ref2 += r * r;
            s.max_abs = s.max_abs.max(e);
            let rel = if sc > 0.0 {
                e / sc
            } else if e == 0.0 {
                0.0
            } else {
                f64::INFINITY
            };
            // NaN (a NaN output) must fail the comparison below.
            s.max_rel_abs = if rel.is_nan() { f64::INFINITY } else { s.max_rel_abs.max(rel) };
        }
        s.rel_l2 = if ref2 > 0.0 {
            (err2 / ref2).sqrt()
        } else if err2 == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        if s.rel_l2.is_nan() {
            s.rel_l2 = f64::INFINITY;
        }
        s
    }
}

impl Tolerance {
    /// Whether `stats` are within both bounds.
    pub fn accepts(&self, stats: &ErrorStats) -> bool {
        stats.rel_l2 <= self.rel_l2 && stats.max_rel_abs <= self.max_rel_abs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_weight_type_has_a_matmul_row() {
        for t in WeightType::ALL {
            assert!(tolerance(Op::Matmul, t).is_some(), "{t:?}");
        }
        assert!(tolerance(Op::MatmulQuantizedActivations, WeightType::F32).is_none());
    }

    #[test]
    fn measure() {
        let s = ErrorStats::measure(&[1.0, 2.0], &[1.0, 2.5], &[1.0, 5.0]);
        assert_eq!(s.max_abs, 0.5);
        assert_eq!(s.max_rel_abs, 0.1);
        assert!((s.rel_l2 - 0.5 / (1.0f64 + 6.25).sqrt()).abs() < 1e-15);
        let nan = ErrorStats::measure(&[f32::NAN], &[1.0], &[1.0]);
        assert!(!Tolerance { rel_l2: 1.0, max_rel_abs: 1.0 }.accepts(&nan));
    }
}
