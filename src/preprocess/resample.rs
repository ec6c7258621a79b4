//! Resizing a (cropped, canonical) box of voxels to `[D, H, W]`.
//!
//! Geometry is PyTorch's `align_corners=False` (half-pixel centres) on every axis: output index
//! `o` samples source coordinate `s = (o + 0.5) · n_in / n_out − 0.5`, so the output grid covers
//! the same extent as the input box.
//!
//! * `trilinear`: `F.interpolate(mode="trilinear", align_corners=False)`
//!   (`aten/src/ATen/native/UpSample.h`, `area_pixel_compute_source_index`): `s` is clamped
//!   below at 0, `i0 = floor(s)`, `i1 = min(i0 + 1, n_in − 1)`, weights `1 − λ, λ` with
//!   `λ = s − i0`; no antialiasing when shrinking. Evaluated in f32 (z and y first, then x;
//!   PyTorch goes x first, a rounding-level difference); index tables are computed in f64.
//! * `nearest`: `mode="nearest-exact"`: `i = min(floor((o + 0.5) · n_in / n_out), n_in − 1)`,
//!   the nearest source centre, so masks follow exactly the geometry of the trilinear image
//!   (PyTorch's legacy `mode="nearest"`, `floor(o · n_in / n_out)`, is shifted by half a voxel
//!   and is not used).
//! * `majority`: labels by "one-hot trilinear, then argmax": for each output voxel the label
//!   with the largest total trilinear weight among the 8 taps (ties: the first tap's order).
//!
//! The source is read through the canonical `View` (no copy); `map` (the intensity window)
//! is applied to each tap before interpolation, which equals windowing the volume first.

use super::crop::CropBox;
use super::orient::View;

/// Per-axis linear interpolation table: taps `i0`, `i1` (source indices) and weight `l1` of `i1`.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearTable {
    pub i0: Vec<usize>,
    pub i1: Vec<usize>,
    pub l1: Vec<f32>,
}

/// The `align_corners=False` linear table from `n_in` to `n_out` samples.
pub fn linear_table(n_in: usize, n_out: usize) -> LinearTable {
    let scale = n_in as f64 / n_out as f64;
    let mut t = LinearTable {
        i0: Vec::with_capacity(n_out),
        i1: Vec::with_capacity(n_out),
        l1: Vec::with_capacity(n_out),
    };
    for o in 0..n_out {
        let s = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        t.i0.push(i0);
        t.i1.push(i1);
        t.l1.push((s - i0 as f64) as f32);
    }
    t
}

/// The `nearest-exact` table from `n_in` to `n_out` samples.
pub fn nearest_table(n_in: usize, n_out: usize) -> Vec<usize> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out).map(|o| (((o as f64 + 0.5) * scale).floor() as usize).min(n_in - 1)).collect()
}

/// Stored offsets (relative to the view's base) of the canonical indices `start + idx[o]`
/// along canonical axis `axis`.
fn offsets(view: &View, axis: usize, start: usize, idx: &[usize]) -> Vec<isize> {
    idx.iter().map(|&i| (start + i) as isize * view.strides[axis]).collect()
}

/// Trilinear resize of the canonical box `crop` of `data` (through `view`) to `out = [D, H, W]`,
/// with `map` applied to every source tap. Output is `[D, H, W]`, W fastest.
///
/// Per output row `(d, h)`: the four source rows `(z0|z1, y0|y1)` are blended over the whole
/// crop width (`t0·(h0·a + h1·b) + t1·(h0·c + h1·d)`, contiguous when the canonical x axis is the
/// stored x axis, forwards or backwards, so it vectorises), then the row is sampled in x
/// (`w0·r[x0] + w1·r[x1]`). Only the order of the x step differs from PyTorch's.
pub(crate) fn trilinear(
    data: &[f32],
    view: &View,
    crop: &CropBox,
    out: [usize; 3],
    map: impl Fn(f32) -> f32 + Copy,
) -> Vec<f32> {
    let size = crop.size();
    let [d_out, h_out, w_out] = out;
    let (tw, th, td) =
        (linear_table(size[0], w_out), linear_table(size[1], h_out), linear_table(size[2], d_out));
    let (y0, y1) = (offsets(view, 1, crop.start[1], &th.i0), offsets(view, 1, crop.start[1], &th.i1));
    let (z0, z1) = (offsets(view, 2, crop.start[2], &td.i0), offsets(view, 2, crop.start[2], &td.i1));
    let row_start = view.base + crop.start[0] as isize * view.strides[0];
    let mut row = vec![0.0f32; size[0]];
    let mut result = Vec::with_capacity(d_out * h_out * w_out);
    for d in 0..d_out {
        let (t1, t0) = (td.l1[d], 1.0 - td.l1[d]);
        for h in 0..h_out {
            let (h1, h0) = (th.l1[h], 1.0 - th.l1[h]);
            let starts = [z0[d] + y0[h], z0[d] + y1[h], z1[d] + y0[h], z1[d] + y1[h]].map(|o| row_start + o);
            blend_rows(&mut row, data, starts, view.strides[0], |a, b, c, e| {
                t0 * (h0 * map(a) + h1 * map(b)) + t1 * (h0 * map(c) + h1 * map(e))
            });
            result.extend((0..w_out).map(|w| (1.0 - tw.l1[w]) * row[tw.i0[w]] + tw.l1[w] * row[tw.i1[w]]));
        }
    }
    result
}

/// `row[i] = f(data[s0 + i·step], data[s1 + i·step], data[s2 + i·step], data[s3 + i·step])`,
/// with slices (vectorisable) for steps ±1.
fn blend_rows(
    row: &mut [f32],
    data: &[f32],
    starts: [isize; 4],
    step: isize,
    f: impl Fn(f32, f32, f32, f32) -> f32,
) {
    let n = row.len();
    match step {
        1 => {
            let [a, b, c, e] = starts.map(|s| &data[s as usize..s as usize + n]);
            for (i, r) in row.iter_mut().enumerate() {
                *r = f(a[i], b[i], c[i], e[i]);
            }
        }
        -1 => {
            // Canonical x runs backwards through memory: slice [s − (n − 1), s], read reversed.
            let [a, b, c, e] = starts.map(|s| &data[(s as usize + 1 - n)..=s as usize]);
            for (i, r) in row.iter_mut().enumerate() {
                let j = n - 1 - i;
                *r = f(a[j], b[j], c[j], e[j]);
            }
        }
        _ => {
            for (i, r) in row.iter_mut().enumerate() {
                let at = |s: isize| data[(s + i as isize * step) as usize];
                *r = f(at(starts[0]), at(starts[1]), at(starts[2]), at(starts[3]));
            }
        }
    }
}

/// Nearest-exact resize of the canonical box `crop` of `data` to `out = [D, H, W]`.
pub(crate) fn nearest<T: Copy>(data: &[T], view: &View, crop: &CropBox, out: [usize; 3]) -> Vec<T> {
    let size = crop.size();
    let [d_out, h_out, w_out] = out;
    let xs = offsets(view, 0, crop.start[0], &nearest_table(size[0], w_out));
    let ys = offsets(view, 1, crop.start[1], &nearest_table(size[1], h_out));
    let zs = offsets(view, 2, crop.start[2], &nearest_table(size[2], d_out));
    let mut result = Vec::with_capacity(d_out * h_out * w_out);
    for &z in &zs {
        for &y in &ys {
            let row = view.base + z + y;
            result.extend(xs.iter().map(|&x| data[(row + x) as usize]));
        }
    }
    result
}

/// Label resize by the largest trilinear weight (see the module doc).
pub(crate) fn majority<T: Copy + PartialEq>(
    data: &[T],
    view: &View,
    crop: &CropBox,
    out: [usize; 3],
) -> Vec<T> {
    let size = crop.size();
    let [d_out, h_out, w_out] = out;
    let (tw, th, td) =
        (linear_table(size[0], w_out), linear_table(size[1], h_out), linear_table(size[2], d_out));
    let (x0, x1) = (offsets(view, 0, crop.start[0], &tw.i0), offsets(view, 0, crop.start[0], &tw.i1));
    let (y0, y1) = (offsets(view, 1, crop.start[1], &th.i0), offsets(view, 1, crop.start[1], &th.i1));
    let (z0, z1) = (offsets(view, 2, crop.start[2], &td.i0), offsets(view, 2, crop.start[2], &td.i1));
    let mut result = Vec::with_capacity(d_out * h_out * w_out);
    for d in 0..d_out {
        let wz = [1.0 - td.l1[d], td.l1[d]];
        for h in 0..h_out {
            let wy = [1.0 - th.l1[h], th.l1[h]];
            for w in 0..w_out {
                let wx = [1.0 - tw.l1[w], tw.l1[w]];
                let mut labels: [(Option<T>, f32); 8] = [(None, 0.0); 8];
                for (k, (oz, oy, ox)) in [
                    (z0[d], y0[h], x0[w]),
                    (z0[d], y0[h], x1[w]),
                    (z0[d], y1[h], x0[w]),
                    (z0[d], y1[h], x1[w]),
                    (z1[d], y0[h], x0[w]),
                    (z1[d], y0[h], x1[w]),
                    (z1[d], y1[h], x0[w]),
                    (z1[d], y1[h], x1[w]),
                ]
                .into_iter()
                .enumerate()
                {
                    let weight = wz[k >> 2] * wy[(k >> 1) & 1] * wx[k & 1];
                    let label = data[(view.base + oz + oy + ox) as usize];
                    let slot = labels.iter().position(|(l, _)| l.is_none_or(|l| l == label)).unwrap_or(k);
                    labels[slot] = (Some(label), labels[slot].1 + weight);
                }
                let best = labels.iter().fold((None, f32::NEG_INFINITY), |acc, &(l, wt)| match l {
                    Some(_) if wt > acc.1 => (l, wt),
                    _ => acc,
                });
                // The first tap always holds a label, so `best.0` is `Some`.
                if let Some(l) = best.0 {
                    result.push(l);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_table_matches_pytorch_downsample_and_upsample() {
        // torch: F.interpolate(x[1,1,4], size=2, mode="linear", align_corners=False)
        // samples s = 0.5 and 2.5.
        let t = linear_table(4, 2);
        assert_eq!((t.i0.clone(), t.i1.clone()), (vec![0, 2], vec![1, 3]));
        assert_eq!(t.l1, vec![0.5, 0.5]);
        // upsample 2 → 4: s = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (i0 = 1, i1 = 1).
        let t = linear_table(2, 4);
        assert_eq!(t.i0, vec![0, 0, 0, 1]);
        assert_eq!(t.i1, vec![1, 1, 1, 1]);
        assert_eq!(t.l1, vec![0.0, 0.25, 0.75, 0.25]);
        assert_eq!(nearest_table(4, 2), vec![1, 3]);
        assert_eq!(nearest_table(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(nearest_table(3, 3), vec![0, 1, 2]);
    }

    #[test]
    fn identity_size_is_a_copy() {
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let view = View { base: 0, strides: [1, 2, 6] };
        let crop = CropBox::full([2, 3, 4]);
        assert_eq!(trilinear(&data, &view, &crop, [4, 3, 2], |v| v), data);
        assert_eq!(nearest(&data, &view, &crop, [4, 3, 2]), data);
        assert_eq!(majority(&data, &view, &crop, [4, 3, 2]), data);
    }
}
