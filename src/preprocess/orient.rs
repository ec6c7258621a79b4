//! Canonical orientation: which stored voxel axis becomes each canonical axis, and whether it
//! runs backwards, from the volume's affine.
//!
//! Mirrors nibabel `io_orientation` + `ornt_transform` + `apply_orientation` (what
//! `as_closest_canonical` does for RAS), generalised to the target codes of
//! [`Orientation`]: canonical axis 0 (x, the output's W) points to the target's first
//! letter, axis 1 (y, H) to the second, axis 2 (z, D) to the third:
//!
//! | target | x / W grows towards | y / H grows towards | z / D grows towards |
//! |---|---|---|---|
//! | `ras` | patient Right | Anterior | Superior (feet → head) |
//! | `lps` | patient Left | Posterior | Superior (feet → head) |
//!
//! So every canonical slice is axial and D runs feet → head in both. Drawn with row 0 at the
//! top and column 0 at the left, an `lps` slice is the radiological view (anterior at the top,
//! patient's right on the viewer's left); a `ras` slice is that view rotated by 180°.
//!
//! Nothing is copied: `Reorientation::view` gives the canonical voxel → stored index map as a
//! base offset and signed strides, which the crop and the resampler read through.

use serde::Serialize;

use crate::model::config::Orientation;
use crate::volume::geometry::{io_orientation, matmul, Affine, Geometry};

/// How the canonical axes relate to the stored voxel axes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reorientation {
    /// `source_axis[c]`: the stored voxel axis (0 = x, 1 = y, 2 = z) that becomes canonical
    /// axis `c`.
    pub source_axis: [usize; 3],
    /// `flipped[c]`: canonical axis `c` runs opposite to its stored axis.
    pub flipped: [bool; 3],
    /// Orientation code of the stored axes (nibabel `aff2axcodes`), e.g. `"LPS"`.
    pub from: String,
    /// The canonical orientation code (`"RAS"` or `"LPS"`).
    pub to: String,
}

/// Canonical index → stored linear index: `base + Σ c[i] · strides[i]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub base: isize,
    pub strides: [isize; 3],
}

impl View {
    /// Linear stored index of canonical voxel `c` (which must be inside the canonical dims).
    #[cfg(test)]
    pub fn index(&self, c: [usize; 3]) -> usize {
        (self.base
            + c[0] as isize * self.strides[0]
            + c[1] as isize * self.strides[1]
            + c[2] as isize * self.strides[2]) as usize
    }
}

/// Patient direction (+1 or −1 along R, A, S) of each canonical axis.
fn target_signs(target: Orientation) -> [i8; 3] {
    match target {
        Orientation::Ras => [1, 1, 1],
        Orientation::Lps => [-1, -1, 1],
    }
}

impl Reorientation {
    /// The reorientation that brings `geometry`'s voxel axes to `target`.
    pub fn plan(geometry: &Geometry, target: Orientation) -> Reorientation {
        let ornt = io_orientation(&geometry.direction());
        let signs = target_signs(target);
        let mut source_axis = [0usize; 3];
        let mut flipped = [false; 3];
        for (axis, &(patient, sign)) in ornt.iter().enumerate() {
            source_axis[patient] = axis;
            flipped[patient] = sign != signs[patient];
        }
        let to = match target {
            Orientation::Ras => "RAS",
            Orientation::Lps => "LPS",
        };
        Reorientation { source_axis, flipped, from: geometry.orientation_code(), to: to.to_string() }
    }

    /// Canonical dims from stored dims.
    pub fn canonical_dims(&self, dims: [usize; 3]) -> [usize; 3] {
        self.source_axis.map(|a| dims[a])
    }

    /// The stored voxel index of canonical voxel `c`.
    pub fn to_stored(&self, c: [usize; 3], dims: [usize; 3]) -> [usize; 3] {
        let mut s = [0usize; 3];
        for ((&a, &flip), &ci) in self.source_axis.iter().zip(&self.flipped).zip(&c) {
            s[a] = if flip { dims[a] - 1 - ci } else { ci };
        }
        s
    }

    /// The canonical voxel index of stored voxel `s`.
    pub fn to_canonical(&self, s: [usize; 3], dims: [usize; 3]) -> [usize; 3] {
        let mut c = [0usize; 3];
        for ((ci, &a), &flip) in c.iter_mut().zip(&self.source_axis).zip(&self.flipped) {
            *ci = if flip { dims[a] - 1 - s[a] } else { s[a] };
        }
        c
    }

    /// The 4×4 map canonical index → stored index.
    fn index_transform(&self, dims: [usize; 3]) -> Affine {
        let mut t = [[0.0; 4]; 4];
        for i in 0..3 {
            let a = self.source_axis[i];
            if self.flipped[i] {
                t[a][i] = -1.0;
                t[a][3] = (dims[a] - 1) as f64;
            } else {
                t[a][i] = 1.0;
            }
        }
        t[3][3] = 1.0;
        t
    }

    /// Canonical voxel index → RAS+ mm.
    pub fn canonical_affine(&self, geometry: &Geometry) -> Affine {
        matmul(&geometry.affine, &self.index_transform(geometry.dims))
    }

    /// Canonical voxel → stored linear index, for stored data of `dims` (x fastest).
    pub(crate) fn view(&self, dims: [usize; 3]) -> View {
        let stored = [1isize, dims[0] as isize, (dims[0] * dims[1]) as isize];
        let mut base = 0isize;
        let mut strides = [0isize; 3];
        for ((stride, &a), &flip) in strides.iter_mut().zip(&self.source_axis).zip(&self.flipped) {
            if flip {
                base += (dims[a] as isize - 1) * stored[a];
                *stride = -stored[a];
            } else {
                *stride = stored[a];
            }
        }
        View { base, strides }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::geometry::lps_to_ras;

    fn lps_geometry() -> Geometry {
        let lps =
            [[0.5, 0.0, 0.0, -10.0], [0.0, 0.5, 0.0, -20.0], [0.0, 0.0, 5.0, -30.0], [0.0, 0.0, 0.0, 1.0]];
        Geometry::new([4, 3, 2], lps_to_ras(&lps), "t").unwrap()
    }

    #[test]
    fn lps_storage_to_ras_flips_x_and_y() {
        let g = lps_geometry();
        let r = Reorientation::plan(&g, Orientation::Ras);
        assert_eq!(r.source_axis, [0, 1, 2]);
        assert_eq!(r.flipped, [true, true, false]);
        assert_eq!(r.from, "LPS");
        let a = r.canonical_affine(&g);
        let can = Geometry::new(r.canonical_dims(g.dims), a, "t").unwrap();
        assert_eq!(can.orientation_code(), "RAS");
        // Canonical voxel 0 is stored voxel (3, 2, 0): the same patient position.
        let s = r.to_stored([0, 0, 0], g.dims);
        assert_eq!(s, [3, 2, 0]);
        let v = r.view(g.dims);
        assert_eq!(v.index([0, 0, 0]), 3 + 4 * 2);
        assert_eq!(r.to_canonical(s, g.dims), [0, 0, 0]);
        assert_eq!(Reorientation::plan(&g, Orientation::Lps).flipped, [false, false, false]);
    }

    #[test]
    fn permuted_storage() {
        // i → Superior, j → Right, k → Posterior ("SRP").
        let a = [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -3.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let g = Geometry::new([5, 6, 7], a, "t").unwrap();
        let r = Reorientation::plan(&g, Orientation::Ras);
        assert_eq!(r.source_axis, [1, 2, 0]);
        assert_eq!(r.flipped, [false, true, false]);
        assert_eq!(r.canonical_dims(g.dims), [6, 7, 5]);
        let can = Geometry::new(r.canonical_dims(g.dims), r.canonical_affine(&g), "t").unwrap();
        assert_eq!(can.orientation_code(), "RAS");
        for c in [[0, 0, 0], [5, 6, 4], [2, 3, 1]] {
            let s = r.to_stored(c, g.dims);
            assert_eq!(r.view(g.dims).index(c), s[0] + 5 * (s[1] + 6 * s[2]));
        }
    }
}
