//! A synthetic chest CT phantom with its TotalSegmentator-style label map, made by the project
//! for demos and tests that must run with no files and no network (DESIGN §7 has no organ
//! masks for the public CTs).
//!
//! Geometry: 192 × 192 × 80 voxels of 1.8 × 1.8 × 4 mm (346 × 346 × 320 mm), axis-aligned RAS+
//! (voxel x → patient right, y → anterior, z → superior), centred on the origin. Anatomy is a
//! set of analytic shapes in millimetres, painted in a fixed order (later shapes win):
//!
//! | structure | shape | HU | label (default `totalseg` table) |
//! |---|---|---|---|
//! | body | elliptic cylinder 160 × 110 mm, 10 mm fat rim | 40, fat −100 | 0 |
//! | lungs | ellipsoids at x = ±70 mm; lobes split by planes | −850 | 10–14 |
//! | pleural effusion | right lung, posterior base | 15 | 119 |
//! | trachea | cylinder r = 9 mm above z = 100 mm, 2 mm wall | −1000 | 16 |
//! | heart | ellipsoid 55 × 45 × 50 mm | 40 | 51 |
//! | aorta | cylinder r = 12 mm, descending | 45 | 52 |
//! | liver | ellipsoid under the right lung | 60 | 5 |
//! | kidneys | ellipsoids at x = ±60 mm | 30 | 2, 3 |
//! | kidney cyst | sphere r = 10 mm on the left kidney | 5 | 23 |
//! | spine | vertebral bodies r = 18 mm, 25 mm levels | 400 | T/L vertebrae |
//! | ribs | 8 mm ring segments, 10 mm bands every 25 mm | 700 | rib_left/right_i |
//! | sternum | 20 × 10 mm bar | 400 | 116 |
//! | lung nodules | spheres r = 5 mm (right upper lobe), 9 mm (left lower lobe) | 30 | 118 |
//!
//! A deterministic ±10 HU texture (a hash of the voxel index) is added to tissue (not to air),
//! so intensities are not piecewise constant. The result is the same on every machine.

use crate::model::synthetic::splitmix64_mix;
use crate::volume::geometry::Geometry;
use crate::volume::Volume;
use crate::Result;

/// Voxels per axis.
pub const DIMS: [usize; 3] = [192, 192, 80];
/// Millimetres per voxel.
pub const SPACING: [f64; 3] = [1.8, 1.8, 4.0];

/// The phantom CT (HU) and its label map on the same grid.
#[derive(Clone, Debug)]
pub struct Phantom {
    pub ct: Volume,
    pub labels: Volume,
}

/// Label ids (TotalSegmentator v2 `total`, plus the subtask classes of the default table).
mod id {
    pub const LUNG_UPPER_LEFT: u16 = 10;
    pub const LUNG_LOWER_LEFT: u16 = 11;
    pub const LUNG_UPPER_RIGHT: u16 = 12;
    pub const LUNG_MIDDLE_RIGHT: u16 = 13;
    pub const LUNG_LOWER_RIGHT: u16 = 14;
    pub const TRACHEA: u16 = 16;
    pub const KIDNEY_RIGHT: u16 = 2;
    pub const KIDNEY_LEFT: u16 = 3;
    pub const LIVER: u16 = 5;
    pub const KIDNEY_CYST_LEFT: u16 = 23;
    pub const HEART: u16 = 51;
    pub const AORTA: u16 = 52;
    pub const STERNUM: u16 = 116;
    pub const LUNG_NODULES: u16 = 118;
    pub const PLEURAL_EFFUSION: u16 = 119;
    /// `vertebrae_T12` is 32, T1 43; L5 27 .. L1 31.
    pub const T12: u16 = 32;
    /// `rib_left_1` is 92, `rib_right_1` 104.
    pub const RIB_LEFT_1: u16 = 92;
    pub const RIB_RIGHT_1: u16 = 104;
}

fn sq(v: f64) -> f64 {
    v * v
}

fn in_ellipsoid(p: [f64; 3], c: [f64; 3], r: [f64; 3]) -> bool {
    sq((p[0] - c[0]) / r[0]) + sq((p[1] - c[1]) / r[1]) + sq((p[2] - c[2]) / r[2]) <= 1.0
}

/// What one voxel centre `p` (mm) holds: (HU, label).
fn tissue(p: [f64; 3]) -> (f32, u16) {
    let [x, y, z] = p;
    let body = sq(x / 160.0) + sq(y / 110.0);
    if body > 1.0 {
        return (-1000.0, 0);
    }
    let mut v = if sq(x / 150.0) + sq(y / 100.0) > 1.0 { (-100.0, 0) } else { (40.0, 0) };
    // Lungs and lobes.
    if in_ellipsoid(p, [70.0, 0.0, 40.0], [55.0, 70.0, 110.0]) {
        let lobe = if z > 60.0 {
            id::LUNG_UPPER_RIGHT
        } else if z > 10.0 && y > 0.0 {
            id::LUNG_MIDDLE_RIGHT
        } else {
            id::LUNG_LOWER_RIGHT
        };
        v = (-850.0, lobe);
        if y < -35.0 && z < -20.0 {
            v = (15.0, id::PLEURAL_EFFUSION);
        }
    }
    if in_ellipsoid(p, [-70.0, 0.0, 40.0], [52.0, 68.0, 105.0]) {
        v = (-850.0, if z > 30.0 { id::LUNG_UPPER_LEFT } else { id::LUNG_LOWER_LEFT });
    }
    // Trachea (air inside a 2 mm wall).
    let rt = (sq(x) + sq(y - 20.0)).sqrt();
    if z > 100.0 && rt <= 11.0 {
        v = if rt <= 9.0 { (-1000.0, id::TRACHEA) } else { (50.0, id::TRACHEA) };
    }
    if in_ellipsoid(p, [-20.0, 30.0, 10.0], [55.0, 45.0, 50.0]) {
        v = (40.0, id::HEART);
    }
    if z < 80.0 && sq(x + 15.0) + sq(y + 30.0) <= sq(12.0) {
        v = (45.0, id::AORTA);
    }
    if in_ellipsoid(p, [60.0, 10.0, -90.0], [80.0, 70.0, 50.0]) {
        v = (60.0, id::LIVER);
    }
    for (cx, label) in [(60.0, id::KIDNEY_RIGHT), (-60.0, id::KIDNEY_LEFT)] {
        if in_ellipsoid(p, [cx, -50.0, -110.0], [25.0, 25.0, 40.0]) {
            v = (30.0, label);
        }
    }
    if sq(x + 80.0) + sq(y + 50.0) + sq(z + 110.0) <= sq(10.0) {
        v = (5.0, id::KIDNEY_CYST_LEFT);
    }
    // Spine: one vertebral level per 25 mm, T12 at z in [-125, -100), upwards to T1, L1.. below.
    if sq(x) + sq(y + 70.0) <= sq(18.0) {
        let level = ((z + 125.0) / 25.0).floor() as i64; // 0 = T12, 1 = T11, ..., -1 = L1
        let label = if (0..12).contains(&level) {
            id::T12 + level as u16
        } else if (-5..0).contains(&level) {
            (id::T12 as i64 + level) as u16 // 31 = L1 .. 27 = L5
        } else {
            0
        };
        v = (400.0, label);
    }
    // Ribs: bands 10 mm thick every 25 mm from the top down, on the posterior and lateral ring.
    let ring = (sq(x / 145.0) + sq(y / 95.0)).sqrt();
    let band = ((160.0 - z) / 25.0).floor();
    let within = (160.0 - z) - band * 25.0;
    if (0.94..=1.0).contains(&ring) && y < 60.0 && within < 10.0 && (0.0..12.0).contains(&band) {
        let i = band as u16;
        v = (700.0, if x >= 0.0 { id::RIB_RIGHT_1 + i } else { id::RIB_LEFT_1 + i });
    }
    if x.abs() <= 10.0 && (90.0..=100.0).contains(&y) && (-20.0..=120.0).contains(&z) {
        v = (400.0, id::STERNUM);
    }
    for (c, r) in [([75.0, 10.0, 100.0], 5.0), ([-80.0, -20.0, 0.0], 9.0)] {
        if sq(x - c[0]) + sq(y - c[1]) + sq(z - c[2]) <= sq(r) {
            v = (30.0, id::LUNG_NODULES);
        }
    }
    v
}

/// The phantom's grid: voxel (i, j, k) → `(i − (n−1)/2) · spacing` mm on each axis.
pub fn geometry() -> Result<Geometry> {
    let mut a = [[0.0; 4]; 4];
    for i in 0..3 {
        a[i][i] = SPACING[i];
        a[i][3] = -((DIMS[i] - 1) as f64) / 2.0 * SPACING[i];
    }
    a[3][3] = 1.0;
    Geometry::new(DIMS, a, "phantom geometry")
}

/// Builds the phantom (about 3 M voxels; a fraction of a second).
pub fn chest_phantom() -> Result<Phantom> {
    let geometry = geometry()?;
    let [nx, ny, nz] = DIMS;
    let mut ct = Vec::with_capacity(nx * ny * nz);
    let mut labels = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = [0, 1, 2].map(|a| {
                    let idx = [i, j, k][a] as f64;
                    geometry.affine[a][a] * idx + geometry.affine[a][3]
                });
                let (hu, label) = tissue(p);
                let n = ct.len() as u64;
                let texture = if hu > -900.0 { (splitmix64_mix(n) % 21) as f32 - 10.0 } else { 0.0 };
                ct.push(hu + texture);
                labels.push(f32::from(label));
            }
        }
    }
    Ok(Phantom {
        ct: Volume::from_vec(ct, geometry.clone(), "phantom CT")?,
        labels: Volume::from_vec(labels, geometry, "phantom labels")?,
    })
}
