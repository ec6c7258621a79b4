//! Bicubic resampling of a 2-D grid of vectors, bit-for-bit in spirit with PyTorch's
//! `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)`.
//!
//! Used once, at conversion time, to bake the Dinov2 position-embedding table for a non-native
//! encoder input size (`interpolate_pos_encoding` in HF `modeling_dinov2.py`).
//!
//! Reference code (PyTorch 2.x, `aten/src/ATen/native/UpSample.h` and
//! `aten/src/ATen/native/cpu/UpSampleKernel.cpp`):
//! * plain bicubic (`antialias=False`): `area_pixel_compute_scale`, `compute_scales_value`,
//!   `area_pixel_compute_source_index(.., cubic=true)`, `get_cubic_upsample_coefficients`
//!   (Keys cubic convolution with A = −0.75), taps at `floor(src) − 1 .. floor(src) + 2` clamped
//!   to the border (`HelperInterpCubic::compute_indices_weights`);
//! * antialiased bicubic (`antialias=True`): `HelperInterpBase::_compute_indices_min_size_weights_aa`
//!   with `HelperInterpCubic::aa_filter` (PIL's cubic, A = −0.5), support 2 (widened by the scale
//!   when down-sampling), taps outside the grid dropped and the weights renormalised; separable,
//!   width first, then height.
//!
//! Precision: we compute positions, weights and sums in f64 and round once to f32, which agrees
//! with PyTorch run on f64 tensors to ~1e-15. PyTorch on the f32 table HF interpolates uses f32
//! throughout (and its compiled weight polynomials are FMA-contracted in a build-dependent way), so
//! it differs from the exact result by its own rounding: ≤ 2.2e-7 on the test table (|v| < 0.5),
//! 6e-6 on an O(1) table at RAD-DINO's 37 → 18 grid, where an f32 source position near 36 is only
//! good to ~4e-6 px. Emulating that f32 arithmetic bit for bit was tried and does not reproduce
//! PyTorch's binary exactly. The cubic kernel interpolates (continuous across integer source
//! positions), so rounding never changes which taps matter.
//!
//! Why our own code and not a crate: the point is to reproduce PyTorch's index arithmetic exactly
//! (the `scale_factor` path uses `1/scale_factor`, not `in/out`), which image crates do not do.

/// Which PyTorch bicubic kernel to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BicubicKernel {
    /// `antialias=False`: cubic convolution A = −0.75, clamped border taps.
    Plain,
    /// `antialias=True`: PIL-style cubic A = −0.5, filter widened when down-sampling,
    /// out-of-grid taps dropped and weights renormalised.
    Antialias,
}

/// Keys cubic convolution for |x| ≤ 1 (PyTorch `cubic_convolution1`).
fn cubic_convolution1(x: f64, a: f64) -> f64 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys cubic convolution for 1 < |x| < 2 (PyTorch `cubic_convolution2`).
fn cubic_convolution2(x: f64, a: f64) -> f64 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The four weights of the taps at `floor(src) − 1 ..= floor(src) + 2` for the fractional part
/// `t` (PyTorch `get_cubic_upsample_coefficients`, A = −0.75).
pub(crate) fn cubic_coefficients(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let x2 = 1.0 - t;
    [
        cubic_convolution2(t + 1.0, A),
        cubic_convolution1(t, A),
        cubic_convolution1(x2, A),
        cubic_convolution2(x2 + 1.0, A),
    ]
}

/// PIL's cubic filter (PyTorch `HelperInterpCubic::aa_filter`, A = −0.5).
fn aa_cubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        cubic_convolution1(x, A)
    } else if x < 2.0 {
        cubic_convolution2(x, A)
    } else {
        0.0
    }
}

/// Input pixels per output pixel along one axis (PyTorch `area_pixel_compute_scale` with
/// `align_corners=False`): `1/scale_factor` when a positive scale factor is given, else `in/out`.
pub(crate) fn source_scale(input_size: usize, output_size: usize, scale_factor: Option<f64>) -> f64 {
    match scale_factor {
        Some(s) if s > 0.0 => 1.0 / s,
        _ => input_size as f64 / output_size as f64,
    }
}

/// The source taps of one output position along one axis: (first input index, weights).
/// Plain taps may fall outside the grid and are clamped when read; antialias taps never do.
#[derive(Debug, Clone)]
struct Taps {
    /// Input index of the first weight (may be negative for the plain kernel).
    start: isize,
    /// One weight per consecutive input index.
    weights: Vec<f64>,
}

/// Taps for every output position along an axis of `input_size` → `output_size`.
fn axis_taps(
    input_size: usize,
    output_size: usize,
    scale_factor: Option<f64>,
    kernel: BicubicKernel,
) -> Vec<Taps> {
    let scale = source_scale(input_size, output_size, scale_factor);
    match kernel {
        BicubicKernel::Plain => (0..output_size)
            .map(|i| {
                // area_pixel_compute_source_index(scale, i, align_corners=false, cubic=true):
                // no clamping of the source position for cubic.
                let real = scale * (i as f64 + 0.5) - 0.5;
                let floor = real.floor();
                Taps { start: floor as isize - 1, weights: cubic_coefficients(real - floor).to_vec() }
            })
            .collect(),
        BicubicKernel::Antialias => {
            // interp_size = 4 for cubic; support grows with the scale when down-sampling.
            let (support, invscale) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
            let max_taps = (support.ceil() as usize) * 2 + 1;
            (0..output_size)
                .map(|i| {
                    let center = scale * (i as f64 + 0.5);
                    // `static_cast<int64_t>` truncates toward zero; clamped at 0 either way.
                    let xmin = ((center - support + 0.5).trunc() as i64).max(0);
                    let xmax = ((center + support + 0.5).trunc() as i64).min(input_size as i64);
                    let size = (xmax - xmin).clamp(0, max_taps as i64);
                    let mut weights: Vec<f64> = (0..size)
                        .map(|j| aa_cubic_filter((j as f64 + xmin as f64 - center + 0.5) * invscale))
                        .collect();
                    let total: f64 = weights.iter().sum();
                    if total != 0.0 {
                        weights.iter_mut().for_each(|w| *w /= total);
                    }
                    Taps { start: xmin as isize, weights }
                })
                .collect()
        }
    }
}

/// Clamp a (possibly out-of-grid) index to `0..len` (PyTorch clamps plain bicubic taps).
fn clamp_index(i: isize, len: usize) -> usize {
    i.clamp(0, len as isize - 1) as usize
}

/// Resample an HWC grid (`src` is `[h, w, c]`, row-major, channels fastest) to
/// `[out_h, out_w, c]` with PyTorch's plain bicubic (`antialias=False`, `align_corners=False`).
///
/// `scale` is PyTorch's `scale_factor` `(h, w)` (output/input) when the caller passed one: the
/// source positions then use `1/scale_factor` rather than `in/out`, exactly as PyTorch does. With
/// `None` the explicit-`size` path is reproduced.
///
/// # Panics
/// If `src.len() != h * w * c`, or if the input grid is empty while the output is not (callers in
/// this crate validate shapes first and return errors).
pub fn bicubic_resize_grid(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
    scale: Option<(f64, f64)>,
) -> Vec<f32> {
    resize_grid_with(src, h, w, c, out_h, out_w, scale, BicubicKernel::Plain)
}

/// [`bicubic_resize_grid`] with the kernel chosen explicitly (plain or antialiased).
///
/// # Panics
/// As [`bicubic_resize_grid`].
#[allow(clippy::too_many_arguments)]
pub fn resize_grid_with(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    out_h: usize,
    out_w: usize,
    scale: Option<(f64, f64)>,
    kernel: BicubicKernel,
) -> Vec<f32> {
    assert_eq!(src.len(), h * w * c, "bicubic_resize_grid: src is not [h, w, c]");
    if out_h == 0 || out_w == 0 || c == 0 {
        return Vec::new();
    }
    assert!(h > 0 && w > 0, "bicubic_resize_grid: empty input grid");
    let taps_y = axis_taps(h, out_h, scale.map(|s| s.0), kernel);
    let taps_x = axis_taps(w, out_w, scale.map(|s| s.1), kernel);
    match kernel {
        // Plain: PyTorch evaluates the 4×4 taps directly (outer sum over rows).
        BicubicKernel::Plain => {
            let mut out = vec![0f32; out_h * out_w * c];
            let mut acc = vec![0f64; c];
            for (oy, ty) in taps_y.iter().enumerate() {
                for (ox, tx) in taps_x.iter().enumerate() {
                    acc.fill(0.0);
                    for (j, wy) in ty.weights.iter().enumerate() {
                        let iy = clamp_index(ty.start + j as isize, h);
                        for (k, wx) in tx.weights.iter().enumerate() {
                            let ix = clamp_index(tx.start + k as isize, w);
                            let wgt = wy * wx;
                            let px = &src[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                            acc.iter_mut().zip(px).for_each(|(a, &v)| *a += wgt * v as f64);
                        }
                    }
                    let o = &mut out[(oy * out_w + ox) * c..(oy * out_w + ox + 1) * c];
                    o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
                }
            }
            out
        }
        // Antialias: separable, width pass then height pass (intermediate kept in f64).
        BicubicKernel::Antialias => {
            // tmp: [h, out_w, c]
            let mut tmp = vec![0f64; h * out_w * c];
            for y in 0..h {
                for (ox, tx) in taps_x.iter().enumerate() {
                    let t = &mut tmp[(y * out_w + ox) * c..(y * out_w + ox + 1) * c];
                    for (k, wx) in tx.weights.iter().enumerate() {
                        let ix = tx.start as usize + k;
                        let px = &src[(y * w + ix) * c..(y * w + ix + 1) * c];
                        t.iter_mut().zip(px).for_each(|(a, &v)| *a += wx * v as f64);
                    }
                }
            }
            // out: [out_h, out_w, c]
            let mut out = vec![0f32; out_h * out_w * c];
            let mut acc = vec![0f64; out_w * c];
            for (oy, ty) in taps_y.iter().enumerate() {
                acc.fill(0.0);
                for (j, wy) in ty.weights.iter().enumerate() {
                    let iy = ty.start as usize + j;
                    let row = &tmp[iy * out_w * c..(iy + 1) * out_w * c];
                    acc.iter_mut().zip(row).for_each(|(a, &v)| *a += wy * v);
                }
                let o = &mut out[oy * out_w * c..(oy + 1) * out_w * c];
                o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_at_integer_position_pick_the_sample() {
        assert_eq!(cubic_coefficients(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn coefficients_at_half_are_hand_checked() {
        // A = −0.75, t = 0.5: w0 = w3 = −0.09375, w1 = w2 = 0.59375 (sum 1).
        let w = cubic_coefficients(0.5);
        let expected = [-0.09375, 0.59375, 0.59375, -0.09375];
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
    }

    #[test]
    fn coefficients_at_quarter_are_hand_checked() {
        // t = 0.25 (A = −0.75): w0 = ((A·1.25 − 5A)·1.25 + 8A)·1.25 − 4A = −0.10546875,
        // w1 = (1.25·0.25 − 2.25)·0.25² + 1 = 0.87890625, w2 = the same at 0.75 = 0.26171875,
        // w3 = the w0 formula at 1.75 = −0.03515625.
        let w = cubic_coefficients(0.25);
        let expected = [-0.10546875, 0.87890625, 0.26171875, -0.03515625];
        for (a, b) in w.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
    }

    #[test]
    fn identity_at_same_size() {
        let src: Vec<f32> = (0..3 * 5 * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(bicubic_resize_grid(&src, 3, 5, 2, 3, 5, None), src);
        assert_eq!(resize_grid_with(&src, 3, 5, 2, 3, 5, None, BicubicKernel::Antialias), src);
    }

    #[test]
    fn constant_grid_stays_constant() {
        let src = vec![0.5f32; 4 * 4];
        for (oh, ow) in [(7, 7), (3, 2), (1, 9)] {
            let out = bicubic_resize_grid(&src, 4, 4, 1, oh, ow, None);
            assert!(out.iter().all(|&v| (v - 0.5).abs() < 1e-7), "{out:?}");
        }
    }

    #[test]
    fn one_dimensional_upsample_two_to_four_is_hand_checked() {
        // in = [0, 1] → 4 outputs, scale 0.5: source positions −0.25, 0.25, 0.75, 1.25.
        // x=0: floor −1, t = 0.75, taps (−2..=1) clamp to (0,0,0,1): w3(0.75) = −0.10546875.
        // x=1: t = 0.25, taps (−1..=2) → (0,0,1,1): w2 + w3 = 0.26171875 − 0.03515625.
        // x=2: t = 0.75, same taps: 0.87890625 − 0.10546875. x=3: t = 0.25, (0,1,1,1): 1 − w0.
        let out = bicubic_resize_grid(&[0.0, 1.0], 1, 2, 1, 1, 4, None);
        let expected = [-0.10546875, 0.2265625, 0.7734375, 1.10546875];
        assert_eq!(out.iter().map(|&v| v as f64).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn scale_factor_path_uses_inverse_scale() {
        // 4 → 7 with scale_factor (7.1/4): source scale 4/7.1, not 4/7.
        assert!((source_scale(4, 7, Some(7.1 / 4.0)) - 4.0 / 7.1).abs() < 1e-15);
        assert!((source_scale(4, 7, None) - 4.0 / 7.0).abs() < 1e-15);
        let src: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let a = bicubic_resize_grid(&src, 4, 4, 1, 7, 7, Some((7.1 / 4.0, 7.1 / 4.0)));
        let b = bicubic_resize_grid(&src, 4, 4, 1, 7, 7, None);
        assert_ne!(a, b);
    }

    #[test]
    fn antialias_upsample_matches_hand_computed_weights() {
        // 2 → 4 (scale 0.5), output 0: center 0.25 (edge coordinates), taps 0..2 at distances
        // 0.25 and 1.25; PIL cubic A = −0.5: f(0.25) = (1.5·0.25 − 2.5)·0.25² + 1 = 0.8671875,
        // f(1.25) = ((−0.5·1.25 + 2.5)·1.25 − 4)·1.25 + 2 = −0.0703125; normalised, the value at
        // input [0, 1] is −0.0703125 / 0.796875.
        let out = resize_grid_with(&[0.0, 1.0], 1, 2, 1, 1, 4, None, BicubicKernel::Antialias);
        assert!((out[0] as f64 + 0.0703125 / 0.796875).abs() < 1e-7, "{out:?}");
    }
}
