//! Longest axial diameter and its perpendicular, from the convex hull of a lesion's outline on
//! each axial slice.
//!
//! **Which points.** A voxel of a slice contributes the midpoints of its four in-plane edges
//! (centre ± half a voxel along each in-plane axis). The hull of these "diamonds" is exactly
//! the hull of the iso-contour at level 0.5 that `skimage.measure.find_contours` traces through
//! the slice's voxel centres (its vertices are the midpoints between an inside and an outside
//! voxel centre), so the numbers are RadGPT's definition (SPEC §7) computed without tracing.
//! A single voxel measures its larger in-plane spacing; a row of n voxels along x measures
//! n·sx. Only the first and last voxel of each run on a row can be hull vertices, so a slice
//! costs O(rows) points, not O(voxels).
//!
//! **How.** Points are kept as exact integers in half-voxel units; Andrew's monotone chain
//! gives the hull (collinear points dropped); the diameter is the largest distance between two
//! hull vertices (all vertex pairs: a digital convex polygon on an n×n grid has O(n^(2/3))
//! vertices, so this is small), measured with the slice's metric (the in-plane affine columns,
//! so anisotropic and sheared grids are honoured). Ties keep the first pair found, and across
//! slices the first slice, so results are deterministic. The perpendicular diameter is the
//! hull's extent perpendicular to that long axis, in the slice plane (what RadGPT's "rotate the
//! slice so the long axis is horizontal, take the vertical extent" measures).

/// A horizontal stretch of voxels in a slice: row `r`, in-plane index `a0..=a1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Segment {
    /// Slice index along the axial storage axis.
    pub s: u32,
    pub r: u32,
    pub a0: u32,
    pub a1: u32,
}

/// The in-plane metric: physical length² of a step `(da, dr)` in half-voxel units is
/// `g_aa·da² + 2·g_ar·da·dr + g_rr·dr²`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaneMetric {
    pub g_aa: f64,
    pub g_ar: f64,
    pub g_rr: f64,
}

impl PlaneMetric {
    /// From the physical vectors (mm) of one voxel step along the `a` and `r` axes.
    pub fn new(col_a: [f64; 3], col_r: [f64; 3]) -> PlaneMetric {
        let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
        // Half-voxel units: each vector is halved, so each product is quartered.
        PlaneMetric {
            g_aa: dot(col_a, col_a) / 4.0,
            g_ar: dot(col_a, col_r) / 4.0,
            g_rr: dot(col_r, col_r) / 4.0,
        }
    }

    fn len2(&self, da: i64, dr: i64) -> f64 {
        let (da, dr) = (da as f64, dr as f64);
        self.g_aa * da * da + 2.0 * self.g_ar * da * dr + self.g_rr * dr * dr
    }

    /// Physical area of the unit half-voxel cell.
    fn cell_area(&self) -> f64 {
        (self.g_aa * self.g_rr - self.g_ar * self.g_ar).max(0.0).sqrt()
    }
}

/// The measurement on the slice with the longest diameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AxialMeasure {
    pub slice: u32,
    pub longest_mm: f64,
    pub perpendicular_mm: f64,
    /// Ends of the long axis, `(a, r)` in half-voxel units (voxel index × 2).
    pub ends: [[i64; 2]; 2],
}

/// Reusable buffers.
#[derive(Default)]
pub(crate) struct HullScratch {
    points: Vec<[i64; 2]>,
    hull: Vec<[i64; 2]>,
}

fn cross(o: [i64; 2], a: [i64; 2], b: [i64; 2]) -> i64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Andrew's monotone chain: the hull of `points` (sorted and deduplicated here) into `hull`,
/// counter-clockwise, without collinear vertices.
fn convex_hull(points: &mut Vec<[i64; 2]>, hull: &mut Vec<[i64; 2]>) {
    points.sort_unstable();
    points.dedup();
    hull.clear();
    if points.len() < 3 {
        hull.extend_from_slice(points);
        return;
    }
    for &p in points.iter() {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in points.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
}

/// Measures one slice's segments (all with the same `s`); `None` for no segment.
fn measure_slice(
    segments: &[Segment],
    metric: &PlaneMetric,
    scratch: &mut HullScratch,
) -> Option<AxialMeasure> {
    let first = segments.first()?;
    let pts = &mut scratch.points;
    pts.clear();
    for g in segments {
        let (a0, a1, r) = (2 * i64::from(g.a0), 2 * i64::from(g.a1), 2 * i64::from(g.r));
        pts.extend_from_slice(&[
            [a0 - 1, r],
            [a1 + 1, r],
            [a0, r - 1],
            [a0, r + 1],
            [a1, r - 1],
            [a1, r + 1],
        ]);
    }
    convex_hull(pts, &mut scratch.hull);
    let hull = &scratch.hull;
    let (mut best, mut ends) = (-1.0f64, [hull[0], hull[0]]);
    for (i, &p) in hull.iter().enumerate() {
        for &q in &hull[i + 1..] {
            let d2 = metric.len2(q[0] - p[0], q[1] - p[1]);
            if d2 > best {
                best = d2;
                ends = [p, q];
            }
        }
    }
    let longest = best.max(0.0).sqrt();
    let (l, p1) = ([ends[1][0] - ends[0][0], ends[1][1] - ends[0][1]], ends[0]);
    let (mut lo, mut hi) = (0i64, 0i64);
    for &v in hull {
        let c = l[0] * (v[1] - p1[1]) - l[1] * (v[0] - p1[0]);
        lo = lo.min(c);
        hi = hi.max(c);
    }
    let perpendicular = if longest > 0.0 { (hi - lo) as f64 * metric.cell_area() / longest } else { 0.0 };
    Some(AxialMeasure { slice: first.s, longest_mm: longest, perpendicular_mm: perpendicular, ends })
}

/// The longest axial diameter over all slices of one lesion. `segments` must be sorted by
/// slice (`s`) first; `None` when empty.
pub(crate) fn longest_axial(
    segments: &[Segment],
    metric: &PlaneMetric,
    scratch: &mut HullScratch,
) -> Option<AxialMeasure> {
    let mut best: Option<AxialMeasure> = None;
    for slice in segments.chunk_by(|x, y| x.s == y.s) {
        if let Some(m) = measure_slice(slice, metric, scratch) {
            if best.is_none_or(|b| m.longest_mm > b.longest_mm) {
                best = Some(m);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(s: f64) -> PlaneMetric {
        PlaneMetric::new([s, 0.0, 0.0], [0.0, s, 0.0])
    }

    fn seg(s: u32, r: u32, a0: u32, a1: u32) -> Segment {
        Segment { s, r, a0, a1 }
    }

    #[test]
    fn single_voxel_and_rows() {
        let m = PlaneMetric::new([0.7, 0.0, 0.0], [0.0, 0.5, 0.0]);
        let mut sc = HullScratch::default();
        let one = longest_axial(&[seg(0, 3, 4, 4)], &m, &mut sc).unwrap();
        assert!((one.longest_mm - 0.7).abs() < 1e-12);
        assert!((one.perpendicular_mm - 0.5).abs() < 1e-12);
        let row = longest_axial(&[seg(0, 3, 4, 13)], &m, &mut sc).unwrap();
        assert!((row.longest_mm - 7.0).abs() < 1e-12);
        assert!((row.perpendicular_mm - 0.5).abs() < 1e-12);
    }

    #[test]
    fn square_diagonal_and_width() {
        // A 10x10 voxel square at 1 mm: the diamond hull is an octagon; its diameter runs
        // between opposite corner-cut edges: sqrt(10^2 + 9^2).
        let segs: Vec<Segment> = (0..10).map(|r| seg(0, r, 0, 9)).collect();
        let m = longest_axial(&segs, &iso(1.0), &mut HullScratch::default()).unwrap();
        assert!((m.longest_mm - (181.0f64).sqrt()).abs() < 1e-9, "{m:?}");
        assert!(m.perpendicular_mm > 9.0 && m.perpendicular_mm < 10.0 * 2f64.sqrt());
    }

    #[test]
    fn largest_slice_wins_and_ties_keep_the_first() {
        let segs = [seg(1, 0, 0, 2), seg(2, 0, 0, 5), seg(3, 0, 0, 5)];
        let m = longest_axial(&segs, &iso(1.0), &mut HullScratch::default()).unwrap();
        assert_eq!(m.slice, 2);
        assert!((m.longest_mm - 6.0).abs() < 1e-12);
    }

    #[test]
    fn hull_drops_collinear_points() {
        let mut pts = vec![[0, 0], [1, 0], [2, 0], [2, 2], [0, 2], [1, 1]];
        let mut hull = Vec::new();
        convex_hull(&mut pts, &mut hull);
        assert_eq!(hull, vec![[0, 0], [2, 0], [2, 2], [0, 2]]);
    }
}
