//! Voxel grid geometry: dimensions, the 4×4 voxel → patient affine, and the checks every volume
//! passes before any voxel memory is allocated.
//!
//! Convention: the affine maps a voxel index `(i, j, k, 1)` (i along x, the fastest memory axis)
//! to patient coordinates in millimetres in **RAS+** (x grows towards the patient's Right, y
//! towards Anterior, z towards Superior), the NIfTI-1 / nibabel world. Inputs in LPS+ (DICOM,
//! ITK, NRRD `left-posterior-superior`) are converted once, at load time, by negating the first
//! two rows ([`lps_to_ras`]). Spacing is the length of each affine column.
//!
//! Axis codes ([`Geometry::axis_codes`]) follow nibabel's `aff2axcodes` with the RAS labels:
//! for each voxel axis, the patient direction it points to (`"LPS"`: i → Left, j → Posterior,
//! k → Superior). The axis matching is nibabel's `io_orientation` (greedy by voxel axis, largest
//! absolute direction cosine), without its SVD orthogonalisation step, which changes nothing for
//! the orthogonal and gantry-tilted grids CT produces.

use serde::Serialize;

use crate::error::{Error, Result};

/// A 4×4 row-major affine: `patient = affine · (i, j, k, 1)ᵀ`, in mm, RAS+.
pub type Affine = [[f64; 4]; 4];

/// Largest accepted size of one axis, in voxels.
pub const MAX_AXIS: usize = 4096;

/// Largest accepted number of voxels (2³⁰: 4 GiB as f32). Checked before any allocation.
pub const MAX_VOXELS: usize = 1 << 30;

/// Two origins closer than this (mm) are the same; also the tolerance on each spacing (mm).
pub const GEOMETRY_TOL_MM: f64 = 1e-3;

/// Two direction cosines closer than this are the same.
pub const GEOMETRY_TOL_DIR: f64 = 1e-4;

/// Smallest accepted `|det(R)| / (|c0|·|c1|·|c2|)` of the 3×3 part (1 for orthogonal axes);
/// below it the axes are (nearly) coplanar and the affine is refused as not invertible.
const MIN_NORMALISED_DET: f64 = 1e-6;

/// Dimensions and voxel → patient affine of a 3D grid.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Geometry {
    /// `[nx, ny, nz]`; voxel `(x, y, z)` is at `x + nx * (y + ny * z)` in memory.
    pub dims: [usize; 3],
    /// Voxel index → RAS+ millimetres (row-major).
    pub affine: Affine,
}

impl Geometry {
    /// A checked geometry: dims within [`MAX_AXIS`] / [`MAX_VOXELS`], affine finite, last row
    /// `[0, 0, 0, 1]`, and invertible. Errors name `what` (a file or argument).
    pub fn new(dims: [usize; 3], affine: Affine, what: &str) -> Result<Geometry> {
        check_dims(&dims, what)?;
        check_affine(&affine).map_err(|reason| Error::invalid(what, reason))?;
        Ok(Geometry { dims, affine })
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Voxel spacing along x, y, z in mm (the affine's column lengths).
    pub fn spacing(&self) -> [f64; 3] {
        column_norms(&self.affine)
    }

    /// Unit direction of each voxel axis in RAS+ (`direction()[axis][patient]`).
    pub fn direction(&self) -> [[f64; 3]; 3] {
        let norms = self.spacing();
        let mut d = [[0.0; 3]; 3];
        for (axis, row) in d.iter_mut().enumerate() {
            for (p, v) in row.iter_mut().enumerate() {
                *v = self.affine[p][axis] / norms[axis];
            }
        }
        d
    }

    /// Patient position (RAS+ mm) of voxel (0, 0, 0).
    pub fn origin(&self) -> [f64; 3] {
        [self.affine[0][3], self.affine[1][3], self.affine[2][3]]
    }

    /// For each voxel axis, the patient direction it points to (`'R'`/`'L'`, `'A'`/`'P'`,
    /// `'S'`/`'I'`), nibabel's `aff2axcodes`.
    pub fn axis_codes(&self) -> [char; 3] {
        const LABELS: [[char; 2]; 3] = [['L', 'R'], ['P', 'A'], ['I', 'S']];
        let ornt = io_orientation(&self.direction());
        let mut codes = ['?'; 3];
        for (axis, (patient, sign)) in ornt.iter().enumerate() {
            codes[axis] = LABELS[*patient][usize::from(*sign > 0)];
        }
        codes
    }

    /// The axis codes as a string, e.g. `"LPS"`.
    pub fn orientation_code(&self) -> String {
        self.axis_codes().iter().collect()
    }

    /// `Ok` when `other` is the same grid within [`GEOMETRY_TOL_MM`] / [`GEOMETRY_TOL_DIR`]
    /// (dims exactly equal); otherwise [`Error::Shape`] describing both.
    pub fn check_same_grid(&self, other: &Geometry, what: &str) -> Result<()> {
        let mismatch = || Error::Shape {
            what: format!("{what}: geometry must match the CT"),
            expected: self.describe(),
            found: other.describe(),
        };
        if self.dims != other.dims {
            return Err(mismatch());
        }
        let (sa, sb) = (self.spacing(), other.spacing());
        let (da, db) = (self.direction(), other.direction());
        let (oa, ob) = (self.origin(), other.origin());
        let spacing_ok = (0..3).all(|i| (sa[i] - sb[i]).abs() <= GEOMETRY_TOL_MM);
        let direction_ok = (0..3).all(|i| (0..3).all(|p| (da[i][p] - db[i][p]).abs() <= GEOMETRY_TOL_DIR));
        if spacing_ok && direction_ok && dist(oa, ob) <= GEOMETRY_TOL_MM {
            Ok(())
        } else {
            Err(mismatch())
        }
    }

    /// One line: dims, spacing, orientation code, origin and the affine.
    pub fn describe(&self) -> String {
        let s = self.spacing();
        let o = self.origin();
        format!(
            "dims {}x{}x{}, spacing ({:.6}, {:.6}, {:.6}) mm, {}, origin ({:.4}, {:.4}, {:.4}) mm, affine {}",
            self.dims[0],
            self.dims[1],
            self.dims[2],
            s[0],
            s[1],
            s[2],
            self.orientation_code(),
            o[0],
            o[1],
            o[2],
            format_affine(&self.affine)
        )
    }
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The affine's rows as `[[a, b, c, d], ...]` with 6 significant decimals.
pub fn format_affine(a: &Affine) -> String {
    let rows: Vec<String> = a
        .iter()
        .map(|r| format!("[{}]", r.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>().join(", ")))
        .collect();
    format!("[{}]", rows.join(", "))
}

/// Checks the dimensions against [`MAX_AXIS`] and [`MAX_VOXELS`]; returns the voxel count.
/// Every reader calls this before allocating anything sized by the dims.
pub fn check_dims(dims: &[usize; 3], what: &str) -> Result<usize> {
    let found = format!("{}x{}x{}", dims[0], dims[1], dims[2]);
    if dims.iter().any(|&d| d == 0 || d > MAX_AXIS) {
        return Err(Error::Shape {
            what: format!("{what}: volume dimensions"),
            expected: format!("each axis in 1..={MAX_AXIS}"),
            found,
        });
    }
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match count {
        Some(n) if n <= MAX_VOXELS => Ok(n),
        _ => Err(Error::Shape {
            what: format!("{what}: volume size"),
            expected: format!("at most {MAX_VOXELS} voxels (4 GiB as f32)"),
            found,
        }),
    }
}

/// Checks an affine: finite, last row `[0, 0, 0, 1]`, non-zero columns, invertible 3×3 part.
/// The error is a reason to wrap in [`Error::format`] or [`Error::invalid`].
pub fn check_affine(a: &Affine) -> std::result::Result<(), String> {
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("affine has non-finite entries: {}", format_affine(a)));
    }
    if a[3] != [0.0, 0.0, 0.0, 1.0] {
        return Err(format!("affine's last row must be [0, 0, 0, 1], found {:?}", a[3]));
    }
    let norms = column_norms(a);
    if let Some(axis) = norms.iter().position(|&n| n <= 0.0) {
        return Err(format!(
            "affine cannot be inverted: voxel axis {axis} has zero spacing ({})",
            format_affine(a)
        ));
    }
    let det = det3(a);
    let normalised = det.abs() / (norms[0] * norms[1] * norms[2]);
    if normalised.is_nan() || normalised < MIN_NORMALISED_DET {
        return Err(format!(
            "affine cannot be inverted: its voxel axes are (nearly) coplanar, det {det:.3e} ({})",
            format_affine(a)
        ));
    }
    Ok(())
}

/// Lengths of the first three columns of the 3×3 part.
pub fn column_norms(a: &Affine) -> [f64; 3] {
    let mut n = [0.0; 3];
    for (axis, v) in n.iter_mut().enumerate() {
        *v = (a[0][axis].powi(2) + a[1][axis].powi(2) + a[2][axis].powi(2)).sqrt();
    }
    n
}

fn det3(a: &Affine) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

/// An LPS+ affine as RAS+ (negate the x and y rows); its own inverse.
pub fn lps_to_ras(a: &Affine) -> Affine {
    let mut r = *a;
    for row in r.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v + 0.0; // + 0.0: no negative zeros in printed affines
        }
    }
    r
}

/// `a · b`.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    let mut r = [[0.0; 4]; 4];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

/// The inverse of an affine that passed [`check_affine`] (3×3 inverse by cofactors, then the
/// translation); `None` when the 3×3 part is singular.
pub fn invert(a: &Affine) -> Option<Affine> {
    let det = det3(a);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let m = |r: usize, c: usize| a[r][c];
    let mut inv = [[0.0; 4]; 4];
    for (r, row) in inv.iter_mut().enumerate().take(3) {
        for (c, v) in row.iter_mut().enumerate().take(3) {
            // Cofactor of element (c, r) divided by det (adjugate transpose).
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
    }
    for row in inv.iter_mut().take(3) {
        row[3] = -(0..3).map(|k| row[k] * a[k][3]).sum::<f64>();
    }
    inv[3] = [0.0, 0.0, 0.0, 1.0];
    Some(inv)
}

/// nibabel's `io_orientation` for unit axis directions (`dir[axis][patient]`): for each voxel
/// axis in order, the RAS patient axis with the largest |cosine| not yet taken, and its sign.
pub fn io_orientation(dir: &[[f64; 3]; 3]) -> [(usize, i8); 3] {
    let mut taken = [false; 3];
    let mut out = [(0usize, 1i8); 3];
    for (axis, col) in dir.iter().enumerate() {
        let mut best = None::<usize>;
        for p in 0..3 {
            if taken[p] {
                continue;
            }
            if best.is_none_or(|b| col[p].abs() > col[b].abs()) {
                best = Some(p);
            }
        }
        // Three axes, three patient directions: one is always left.
        let p = best.unwrap_or(axis);
        taken[p] = true;
        out[axis] = (p, if col[p] < 0.0 { -1 } else { 1 });
    }
    out
}

/// Count and first voxel position of non-finite values in x-fastest data of `dims`.
pub fn non_finite(data: &[f32], dims: [usize; 3]) -> Option<(usize, [usize; 3])> {
    let mut count = 0usize;
    let mut first = None;
    for (i, v) in data.iter().enumerate() {
        if !v.is_finite() {
            count += 1;
            if first.is_none() {
                first = Some(i);
            }
        }
    }
    first.map(|i| (count, [i % dims[0], (i / dims[0]) % dims[1], i / (dims[0] * dims[1])]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(s: [f64; 3]) -> Affine {
        [[s[0], 0.0, 0.0, 1.0], [0.0, s[1], 0.0, 2.0], [0.0, 0.0, s[2], 3.0], [0.0, 0.0, 0.0, 1.0]]
    }

    #[test]
    fn inverse_and_codes() {
        let a = lps_to_ras(&diag([0.5, 0.5, 5.0]));
        let inv = invert(&a).unwrap();
        let id = matmul(&a, &inv);
        for (i, row) in id.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!((v - f64::from(u8::from(i == j))).abs() < 1e-12);
            }
        }
        let g = Geometry::new([4, 4, 4], a, "t").unwrap();
        assert_eq!(g.orientation_code(), "LPS");
        assert_eq!(g.spacing(), [0.5, 0.5, 5.0]);
    }

    #[test]
    fn permuted_axes_codes() {
        // i → Superior, j → Right, k → Posterior.
        let a = [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -3.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert_eq!(Geometry::new([2, 2, 2], a, "t").unwrap().orientation_code(), "SRP");
    }

    #[test]
    fn bad_affines_and_dims() {
        let mut a = diag([1.0, 1.0, 1.0]);
        a[2][2] = 0.0;
        assert!(check_affine(&a).unwrap_err().contains("zero spacing"));
        let mut b = diag([1.0, 1.0, 1.0]);
        b[0][1] = 1.0;
        b[1][1] = 0.0;
        b[1][0] = 0.0;
        b[0][0] = 1.0;
        assert!(check_affine(&b).unwrap_err().contains("coplanar"));
        assert!(check_dims(&[0, 1, 1], "t").is_err());
        assert!(check_dims(&[4096, 4096, 4096], "t").is_err());
        assert_eq!(check_dims(&[512, 512, 48], "t").unwrap(), 512 * 512 * 48);
    }

    #[test]
    fn first_non_finite_position() {
        let mut d = vec![0.0f32; 24];
        d[2 * (1 + 3)] = f32::NAN; // (0, 1, 1)
        d[23] = f32::INFINITY;
        assert_eq!(non_finite(&d, [2, 3, 4]), Some((2, [0, 1, 1])));
    }
}
