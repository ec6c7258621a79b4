//! 3D connected components of lesion voxels, on runs.
//!
//! Our own code (STYLE §12: no well-kept crate labels 3D components with 6/18/26-connectivity
//! on a borrowed label map). One pass over the label map finds the *runs*: maximal stretches
//! of voxels along x (the fastest memory axis) with the same non-zero lesion kind. Runs of the
//! same kind on neighbouring lines are joined with a union-find (path halving, the smaller run
//! index stays the root). The neighbouring lines of line `(y, z)` already seen are
//! `(y-1, z)`, `(y-1, z-1)`, `(y, z-1)` and `(y+1, z-1)`; two runs `[a0, a1)` and `[b0, b1)`
//! touch when `a0 < b1 + e && b0 < a1 + e`, with `e = 1` where the connectivity allows a
//! diagonal step along x and `e = 0` where it does not:
//!
//! | connectivity | (y-1, z) and (y, z-1) | (y-1, z-1) and (y+1, z-1) |
//! |---|---|---|
//! | 6 | e = 0 | not neighbours |
//! | 18 | e = 1 | e = 0 |
//! | 26 | e = 1 | e = 1 |
//!
//! Each line's runs are sorted by x, so each pair of lines is merged in one sweep: the whole
//! labelling is O(voxels + runs), whatever the number of components. Components are numbered
//! in raster order of their first voxel (z, then y, then x), as `scipy.ndimage.label` does.

use super::Kind;

/// A maximal stretch `[x0, x1)` of one lesion kind on line `line = y + ny·z`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub line: u32,
    pub x0: u32,
    pub x1: u32,
    pub kind: Kind,
}

/// Runs of every lesion kind, in raster order, with the index of each line's first run.
pub(crate) struct Runs {
    pub runs: Vec<Run>,
    /// `line_start[l]..line_start[l + 1]` are the runs of line `l` (length `ny·nz + 1`).
    pub line_start: Vec<u32>,
}

/// One pass over the label map: the lesion runs (by `kind_of[label]`, 0 = not a lesion) and
/// the voxel count of every label value (`histogram[label]`).
pub(crate) fn scan(labels: &[u16], dims: [usize; 3], kind_of: &[u8; 65536]) -> (Runs, Vec<u64>) {
    let [nx, ny, nz] = dims;
    let mut histogram = vec![0u64; 65536];
    let mut runs = Vec::new();
    let mut line_start = Vec::with_capacity(ny * nz + 1);
    for (line, row) in labels.chunks_exact(nx).enumerate() {
        line_start.push(runs.len() as u32);
        let mut x = 0usize;
        while x < nx {
            let label = row[x];
            histogram[label as usize] += 1;
            let kind = kind_of[label as usize];
            if kind == 0 {
                x += 1;
                continue;
            }
            let x0 = x;
            x += 1;
            while x < nx && kind_of[row[x] as usize] == kind {
                histogram[row[x] as usize] += 1;
                x += 1;
            }
            runs.push(Run { line: line as u32, x0: x0 as u32, x1: x as u32, kind: Kind::from_u8(kind) });
        }
    }
    line_start.push(runs.len() as u32);
    (Runs { runs, line_start }, histogram)
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let grand = parent[parent[i as usize] as usize];
        parent[i as usize] = grand;
        i = grand;
    }
    i
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

/// Joins the runs of line `a` with those of line `b` that touch (extension `e`, same kind).
/// For each run of `a` (increasing x) the first candidate of `b` only moves forward; the pairs
/// visited are the touching ones, so the cost is O(runs of a + runs of b + touching pairs).
fn merge_lines(runs: &[Run], line_start: &[u32], a: usize, b: usize, e: u32, parent: &mut [u32]) {
    let mut first = line_start[b];
    let b_end = line_start[b + 1];
    for i in line_start[a]..line_start[a + 1] {
        let ra = runs[i as usize];
        while first < b_end && runs[first as usize].x1 + e <= ra.x0 {
            first += 1;
        }
        let mut j = first;
        while j < b_end && runs[j as usize].x0 < ra.x1 + e {
            if runs[j as usize].kind == ra.kind {
                union(parent, i, j);
            }
            j += 1;
        }
    }
}

/// The component of every run: `(component_of_run, n_components)`, components numbered
/// 0.. in raster order of their first voxel.
pub(crate) fn label(runs: &Runs, dims: [usize; 3], connectivity: u32) -> (Vec<u32>, usize) {
    let [_, ny, nz] = dims;
    let n = runs.runs.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let (e_face, diag) = match connectivity {
        6 => (0, None),
        18 => (1, Some(0)),
        _ => (1, Some(1)),
    };
    for z in 0..nz {
        for y in 0..ny {
            let line = y + ny * z;
            if runs.line_start[line] == runs.line_start[line + 1] {
                continue;
            }
            if y > 0 {
                merge_lines(&runs.runs, &runs.line_start, line, line - 1, e_face, &mut parent);
            }
            if z > 0 {
                let below = line - ny;
                merge_lines(&runs.runs, &runs.line_start, line, below, e_face, &mut parent);
                if let Some(e) = diag {
                    if y > 0 {
                        merge_lines(&runs.runs, &runs.line_start, line, below - 1, e, &mut parent);
                    }
                    if y + 1 < ny {
                        merge_lines(&runs.runs, &runs.line_start, line, below + 1, e, &mut parent);
                    }
                }
            }
        }
    }
    // Roots are the smallest run index of their set, so numbering roots in run order numbers
    // the components in raster order of their first run.
    let mut component = vec![u32::MAX; n];
    let mut count = 0u32;
    for i in 0..n {
        let r = find(&mut parent, i as u32) as usize;
        if r == i {
            component[i] = count;
            count += 1;
        } else {
            component[i] = component[r];
        }
    }
    (component, count as usize)
}

/// Run indices grouped by component (counting sort, raster order kept within a component):
/// the runs of component `c` are `order[start[c]..start[c + 1]]`.
pub(crate) fn group(component: &[u32], n_components: usize) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n_components + 1];
    for &c in component {
        start[c as usize + 1] += 1;
    }
    for c in 0..n_components {
        start[c + 1] += start[c];
    }
    let mut fill = start.clone();
    let mut order = vec![0u32; component.len()];
    for (i, &c) in component.iter().enumerate() {
        order[fill[c as usize] as usize] = i as u32;
        fill[c as usize] += 1;
    }
    (order, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(lesion: &[u16]) -> Box<[u8; 65536]> {
        let mut k = Box::new([0u8; 65536]);
        for &l in lesion {
            k[l as usize] = 1;
        }
        k
    }

    fn count(labels: &[u16], dims: [usize; 3], conn: u32) -> usize {
        let (runs, _) = scan(labels, dims, &kinds(&[1]));
        label(&runs, dims, conn).1
    }

    #[test]
    fn diagonal_neighbours_follow_the_connectivity() {
        // Two voxels touching by a corner: (0,0,0) and (1,1,1).
        let dims = [2, 2, 2];
        let mut v = vec![0u16; 8];
        v[0] = 1;
        v[7] = 1;
        assert_eq!(count(&v, dims, 26), 1);
        assert_eq!(count(&v, dims, 18), 2);
        assert_eq!(count(&v, dims, 6), 2);
        // Touching by an edge: (0,0,0) and (1,1,0).
        let mut v = vec![0u16; 8];
        v[0] = 1;
        v[3] = 1;
        assert_eq!(count(&v, dims, 26), 1);
        assert_eq!(count(&v, dims, 18), 1);
        assert_eq!(count(&v, dims, 6), 2);
        // Edge in y-z: (0,0,0) and (0,1,1); and the (y+1, z-1) line: (0,1,0) and (0,0,1).
        for (a, b) in [(0, 6), (2, 4)] {
            let mut v = vec![0u16; 8];
            v[a] = 1;
            v[b] = 1;
            assert_eq!(count(&v, dims, 18), 1);
            assert_eq!(count(&v, dims, 6), 2);
        }
    }

    #[test]
    fn a_u_shape_joins_late() {
        // Two columns joined only on the last row: one component.
        let dims = [5, 4, 1];
        #[rustfmt::skip]
        let v = vec![
            1, 0, 0, 0, 1,
            1, 0, 0, 0, 1,
            1, 0, 0, 0, 1,
            1, 1, 1, 1, 1u16,
        ];
        assert_eq!(count(&v, dims, 6), 1);
        let (runs, hist) = scan(&v, dims, &kinds(&[1]));
        assert_eq!(hist[1], 11);
        assert_eq!(runs.runs.len(), 7);
    }

    #[test]
    fn adjacent_runs_of_other_kinds_do_not_hide_diagonal_contacts() {
        // Line 0: kind 1 on x 0..2, kind 2 on x 2..4; line 1: kind 2 on x 0..2. The kind-2 run
        // of line 1 touches the kind-2 run of line 0 only diagonally, at (1, 1) - (2, 0).
        let dims = [4, 2, 1];
        let v = vec![1u16, 1, 2, 2, 2, 2, 0, 0];
        let mut k = Box::new([0u8; 65536]);
        k[1] = 1;
        k[2] = 2;
        let (runs, _) = scan(&v, dims, &k);
        assert_eq!(label(&runs, dims, 26).1, 2);
        assert_eq!(label(&runs, dims, 6).1, 3);
    }

    #[test]
    fn kinds_do_not_merge() {
        let dims = [4, 1, 1];
        let v = vec![1u16, 2, 2, 1];
        let mut k = Box::new([0u8; 65536]);
        k[1] = 1;
        k[2] = 2;
        let (runs, _) = scan(&v, dims, &k);
        assert_eq!(runs.runs.len(), 3);
        assert_eq!(label(&runs, dims, 26).1, 3);
    }
}
