//! The arithmetic of R² pooling (SPEC-model.md §4, §6.3): slice selection, adaptive average
//! pooling, the bilinear mask resize and the per-slice means. Pure functions on f32 slices, each
//! mirroring one PyTorch call of `scripts/region/reference.py`.

use crate::model::config::{PoolingConfig, PoolingMode, SliceSelect};
use crate::preprocess::resample::linear_table;
use crate::{Error, Result};

/// How a set of slices was chosen (reported with the tokens).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Selection {
    /// `K` slice indices, ascending.
    pub slices: Vec<usize>,
    /// `uniform`, `per_region_topk`, `fixed_regions`, or `uniform_fallback` (an `r2` rule had
    /// no mask voxels to rank and fell back to uniform slices).
    pub rule: &'static str,
}

/// `np.round(np.linspace(0, t - 1, k)).astype(int)`: numpy's `linspace` (`i · step`, the last
/// sample exactly `t − 1`) and round-half-to-even. Distinct when `k ≤ t`.
pub fn uniform_slices(t: usize, k: usize) -> Vec<usize> {
    if k == 0 || t == 0 {
        return Vec::new();
    }
    if k == 1 {
        return vec![0];
    }
    let step = (t - 1) as f64 / (k - 1) as f64;
    (0..k)
        .map(|i| if i + 1 == k { (t - 1) as f64 } else { i as f64 * step })
        .map(|v| v.round_ties_even() as usize)
        .collect()
}

/// Slice indices ranked by mask area: area descending, ties to the lower index.
fn ranked(areas: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..areas.len()).collect();
    order.sort_by(|&a, &b| areas[b].cmp(&areas[a]).then(a.cmp(&b)));
    order
}

/// The `K` representative slices for the region `region` (see the module doc of
/// `crate::region` for the rules). `areas[s][t]` is the voxel count of slot `s` on slice `t`;
/// `slot_keys[s]` its key.
pub fn select_slices(
    config: &PoolingConfig,
    region: &str,
    slot_keys: &[String],
    areas: &[Vec<u64>],
) -> Result<Selection> {
    let (t, k) = (config.n_slices, config.k_slices);
    if k == 0 || k > t {
        return Err(Error::invalid(
            "pooling.k_slices",
            format!("{k} representative slices cannot be chosen from {t} slices"),
        ));
    }
    let area_of = |key: &str| -> Result<&[u64]> {
        let s = slot_keys.iter().position(|s| s == key).ok_or_else(|| {
            Error::invalid("region", format!("`{key}` is not a segmentation slot of this model"))
        })?;
        Ok(&areas[s])
    };
    let uniform = || Selection { slices: uniform_slices(t, k), rule: "uniform" };
    let fallback = || Selection { slices: uniform_slices(t, k), rule: "uniform_fallback" };
    match (config.mode, config.select) {
        (PoolingMode::Uniform, _) => Ok(uniform()),
        (PoolingMode::R2, SliceSelect::PerRegionTopk) => {
            let a = area_of(region)?;
            if a.iter().all(|&v| v == 0) {
                return Ok(fallback());
            }
            let mut slices: Vec<usize> = ranked(a).into_iter().take(k).collect();
            slices.sort_unstable();
            Ok(Selection { slices, rule: "per_region_topk" })
        }
        (PoolingMode::R2, SliceSelect::FixedRegions) => {
            let lists: Vec<Vec<usize>> = config
                .fixed_regions
                .iter()
                .map(|key| area_of(key).map(|a| ranked(a).into_iter().filter(|&s| a[s] > 0).collect()))
                .collect::<Result<_>>()?;
            if lists.iter().all(Vec::is_empty) {
                return Ok(fallback());
            }
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            let mut rank = 0;
            while chosen.len() < k && lists.iter().any(|l| rank < l.len()) {
                for l in &lists {
                    if chosen.len() < k {
                        if let Some(&s) = l.get(rank) {
                            if !chosen.contains(&s) {
                                chosen.push(s);
                            }
                        }
                    }
                }
                rank += 1;
            }
            for s in uniform_slices(t, k).into_iter().chain(0..t) {
                if chosen.len() == k {
                    break;
                }
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
            chosen.sort_unstable();
            Ok(Selection { slices: chosen, rule: "fixed_regions" })
        }
    }
}

/// `F.adaptive_avg_pool2d` window `[start, end)` of output cell `i` of `n_out` over `n_in`.
#[inline]
fn window(i: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    (i * n_in / n_out, ((i + 1) * n_in).div_ceil(n_out))
}

/// Adaptive average pooling of a `[gp, gp, d]` grid (row-major cells, `d` channels each) to
/// `[g, g, d]`, appended to `out` row-major (`h` then `w`), as
/// `F.adaptive_avg_pool2d(x.permute(2, 0, 1), (g, g)).permute(1, 2, 0)`.
pub fn adaptive_pool_rows(grid: &[f32], gp: usize, d: usize, g: usize, out: &mut Vec<f32>) {
    debug_assert_eq!(grid.len(), gp * gp * d);
    let mut acc = vec![0.0f32; d];
    for oh in 0..g {
        let (h0, h1) = window(oh, gp, g);
        for ow in 0..g {
            let (w0, w1) = window(ow, gp, g);
            acc.iter_mut().for_each(|a| *a = 0.0);
            for h in h0..h1 {
                for w in w0..w1 {
                    let cell = &grid[(h * gp + w) * d..][..d];
                    acc.iter_mut().zip(cell).for_each(|(a, &v)| *a += v);
                }
            }
            let inv = 1.0 / ((h1 - h0) * (w1 - w0)) as f32;
            out.extend(acc.iter().map(|&a| a * inv));
        }
    }
}

/// Mean of the `n` rows (`d` wide) of `rows`, appended to `out`.
pub fn mean_rows(rows: &[f32], n: usize, d: usize, out: &mut Vec<f32>) {
    let mut acc = vec![0.0f32; d];
    for r in rows.chunks_exact(d).take(n) {
        acc.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
    }
    let inv = 1.0 / n as f32;
    out.extend(acc.iter().map(|&a| a * inv));
}

/// Bilinear resize (`F.interpolate(mode="bilinear", align_corners=False)`, no antialiasing) of a
/// `[h, w]` 0/1 mask to `[oh, ow]` f32.
pub fn bilinear_mask(mask: &[u8], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let (ty, tx) = (linear_table(h, oh), linear_table(w, ow));
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let (r0, r1) = (&mask[ty.i0[y] * w..][..w], &mask[ty.i1[y] * w..][..w]);
        let ly = ty.l1[y];
        for x in 0..ow {
            let (x0, x1, lx) = (tx.i0[x], tx.i1[x], tx.l1[x]);
            let top = (1.0 - lx) * r0[x0] as f32 + lx * r0[x1] as f32;
            let bottom = (1.0 - lx) * r1[x0] as f32 + lx * r1[x1] as f32;
            out.push((1.0 - ly) * top + ly * bottom);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_matches_numpy_round_half_even() {
        // np.round(np.linspace(0, 31, 4)) = [0, 10, 21, 31]; linspace(0, 5, 3) = [0, 2.5, 5] -> 2.
        assert_eq!(uniform_slices(32, 4), vec![0, 10, 21, 31]);
        assert_eq!(uniform_slices(6, 3), vec![0, 2, 5]);
        assert_eq!(uniform_slices(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(uniform_slices(9, 1), vec![0]);
    }

    #[test]
    fn adaptive_windows_overlap_like_pytorch() {
        // 18 -> 9 is exact pairs; 5 -> 3: [0,2), [1,4), [3,5).
        assert_eq!(window(0, 5, 3), (0, 2));
        assert_eq!(window(1, 5, 3), (1, 4));
        assert_eq!(window(2, 5, 3), (3, 5));
        assert_eq!(window(4, 18, 9), (8, 10));
    }

    fn config(mode: PoolingMode, select: SliceSelect, k: usize, t: usize) -> PoolingConfig {
        PoolingConfig {
            mode,
            select,
            n_slices: t,
            k_slices: k,
            grid: 1,
            fixed_regions: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn topk_ties_go_to_the_lower_index_and_empty_falls_back() {
        let keys = vec!["a".to_string(), "b".to_string()];
        let areas = vec![vec![0, 5, 5, 9, 5, 0], vec![0; 6]];
        let c = config(PoolingMode::R2, SliceSelect::PerRegionTopk, 3, 6);
        let s = select_slices(&c, "a", &keys, &areas).unwrap();
        assert_eq!((s.slices, s.rule), (vec![1, 2, 3], "per_region_topk"));
        let s = select_slices(&c, "b", &keys, &areas).unwrap();
        assert_eq!((s.slices, s.rule), (vec![0, 2, 5], "uniform_fallback"));
        assert!(select_slices(&c, "zz", &keys, &areas).is_err());
    }

    #[test]
    fn fixed_regions_round_robin_then_fill() {
        let keys = vec!["a".to_string(), "b".to_string()];
        // a ranks 3, 1; b ranks 3 (dup), then 4.
        let areas = vec![vec![0, 2, 0, 9, 0, 0], vec![0, 0, 0, 7, 1, 0]];
        let c = config(PoolingMode::R2, SliceSelect::FixedRegions, 3, 6);
        let s = select_slices(&c, "a", &keys, &areas).unwrap();
        assert_eq!(s.slices, vec![1, 3, 4]);
        // Only two distinct non-empty slices with K = 4: filled from the uniform slices.
        let areas = vec![vec![0, 0, 0, 9, 0, 0], vec![0, 0, 0, 7, 1, 0]];
        let c = config(PoolingMode::R2, SliceSelect::FixedRegions, 4, 6);
        let s = select_slices(&c, "a", &keys, &areas).unwrap();
        assert_eq!(s.slices, vec![0, 2, 3, 4]); // uniform(6, 4) = [0, 2, 3, 5]: 0 and 2 fill
    }

    #[test]
    fn bilinear_of_a_constant_mask_is_constant() {
        let m = vec![1u8; 20 * 20];
        assert!(bilinear_mask(&m, 20, 20, 6, 6).iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }
}
