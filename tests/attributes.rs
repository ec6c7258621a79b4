//! Patient-specific attributes (`medregion::attributes`): synthetic phantoms with analytic
//! answers at anisotropic spacing (0.7 × 0.7 × 2.5 mm), bad input, and the real pyradiomics
//! tumour masks against the independent reference `scripts/attributes/reference.py`
//! (`tests/fixtures/attributes/pyradiomics_reference.json`).
//!
//! Tolerances: volumes within 2 % of the analytic solid; diameters within one in-plane voxel
//! diagonal (0.99 mm) of the analytic chord on the measured slice; counts and locations exact;
//! against the reference: voxel counts and volumes exact, component counts exact, diameters
//! within 0.5 mm (they agree to 1e-6 in practice: same definition, other algorithm).

#[path = "common/testdata.rs"]
mod testdata;

use std::f64::consts::PI;

use medregion::attributes::{
    compute, compute_volumes, Attributes, LabelScheme, Lesion, LesionFinding, Status,
};
use medregion::model::config::{AttributeConfig, LabelConfig, ModelConfig};
use medregion::volume::{Affine, Coordinates, DType, Geometry, Volume, VoxelBuffer};
use medregion::Error;

const S: [f64; 3] = [0.7, 0.7, 2.5];
const DIAG_2D: f64 = 0.98995; // sqrt(0.7² + 0.7²)

// TotalSegmentator ids of the default table (SPEC §8.3) and the INFERRED subtask ids.
const RUL: u16 = 12;
const RLL: u16 = 14;
const LUL: u16 = 10;
const LLL: u16 = 11;
const HEART: u16 = 51;
const NODULE: u16 = 118;
const EFFUSION: u16 = 119;
const CYST_LEFT: u16 = 23;

/// An LPS-like RAS affine: x and y flipped (index x grows to the patient's left).
fn affine(s: [f64; 3]) -> Affine {
    [[-s[0], 0.0, 0.0, 60.0], [0.0, -s[1], 0.0, 80.0], [0.0, 0.0, s[2], -100.0], [0.0, 0.0, 0.0, 1.0]]
}

struct Phantom {
    geometry: Geometry,
    labels: Vec<u16>,
}

impl Phantom {
    fn new(dims: [usize; 3]) -> Phantom {
        Phantom {
            geometry: Geometry::new(dims, affine(S), "phantom").unwrap(),
            labels: vec![0; dims.iter().product()],
        }
    }

    fn idx(&self, x: usize, y: usize, z: usize) -> usize {
        let [nx, ny, _] = self.geometry.dims;
        x + nx * (y + ny * z)
    }

    /// Sets every voxel whose centre (in mm from voxel (0,0,0), along the voxel axes) satisfies
    /// `inside`, to `label`; returns the count.
    fn paint(&mut self, label: u16, inside: impl Fn([f64; 3]) -> bool) -> usize {
        let [nx, ny, nz] = self.geometry.dims;
        let mut n = 0;
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    if inside([x as f64 * S[0], y as f64 * S[1], z as f64 * S[2]]) {
                        let i = self.idx(x, y, z);
                        self.labels[i] = label;
                        n += 1;
                    }
                }
            }
        }
        n
    }

    fn measure(&self, config: &AttributeConfig) -> Attributes {
        compute(&self.geometry, &self.geometry, &self.labels, &LabelScheme::totalseg(), config).unwrap()
    }
}

fn ellipsoid(c: [f64; 3], r: [f64; 3]) -> impl Fn([f64; 3]) -> bool {
    move |p| (0..3).map(|i| ((p[i] - c[i]) / r[i]).powi(2)).sum::<f64>() <= 1.0
}

fn finding<'a>(doc: &'a Attributes, kind: &str) -> &'a LesionFinding {
    doc.lesions.iter().find(|f| f.kind == kind).unwrap()
}

fn nodules(doc: &Attributes) -> &[Lesion] {
    &finding(doc, "lung_nodule").lesions
}

/// Half-chord of the ellipse cut of an ellipsoid (semi-axis `r` in-plane, `rz` along z) at
/// distance `dz` from its centre: `r · sqrt(1 - (dz/rz)²)`. The measured slice is the one
/// nearest the centre.
fn chord(r: f64, rz: f64, cz: f64) -> f64 {
    let dz = (0..200).map(|k| (k as f64 * S[2] - cz).abs()).fold(f64::INFINITY, f64::min);
    2.0 * r * (1.0 - (dz / rz).powi(2)).sqrt()
}

#[test]
fn spheres_and_ellipsoids_match_the_analytic_solids() {
    let mut p = Phantom::new([200, 200, 40]);
    // Sphere r = 10 mm; centres off the voxel grid.
    let (c1, r1) = ([40.3, 40.1, 50.0], 10.0);
    p.paint(NODULE, ellipsoid(c1, [r1; 3]));
    // Axis-aligned ellipsoid, semi-axes 12 x 6 x 8 mm.
    let (c2, r2) = ([90.2, 50.35, 52.5], [12.0, 6.0, 8.0]);
    p.paint(NODULE, ellipsoid(c2, r2));
    // The same ellipsoid turned 30° in-plane: the long axis is not along a voxel axis.
    let (c3, a) = ([60.0, 105.0, 40.0], 30f64.to_radians());
    p.paint(NODULE, move |q| {
        let (dx, dy) = (q[0] - c3[0], q[1] - c3[1]);
        let (u, v) = (dx * a.cos() + dy * a.sin(), -dx * a.sin() + dy * a.cos());
        (u / 12.0).powi(2) + (v / 6.0).powi(2) + ((q[2] - c3[2]) / 8.0).powi(2) <= 1.0
    });
    let doc = p.measure(&AttributeConfig::default());
    let f = finding(&doc, "lung_nodule");
    assert_eq!(f.status, Status::Measured);
    assert_eq!((f.components, f.count), (3, 3));
    let ell_volume = 4.0 / 3.0 * PI * 12.0 * 6.0 * 8.0;
    let sphere_volume = 4.0 / 3.0 * PI * r1.powi(3);
    // Sorted by longest diameter: the two ellipsoids (24 mm) first, then the sphere (20 mm),
    // although the sphere has the larger volume (4189 vs 2413 mm³).
    let n = nodules(&doc);
    assert_eq!(n.iter().map(|l| l.rank).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(n.windows(2).all(|w| w[0].longest_diameter_mm >= w[1].longest_diameter_mm));
    let (ellipsoids, sphere) = (&n[..2], &n[2]);
    let rel = |got: f64, want: f64| (got - want).abs() / want;
    assert!(rel(sphere.volume_mm3, sphere_volume) < 0.02, "sphere {} vs {sphere_volume}", sphere.volume_mm3);
    for l in ellipsoids {
        assert!(rel(l.volume_mm3, ell_volume) < 0.02, "ellipsoid {} vs {ell_volume}", l.volume_mm3);
        assert!((l.volume_ml - l.volume_mm3 / 1000.0).abs() < 1e-12);
    }
    let d = sphere.longest_diameter_mm;
    let want = chord(r1, r1, c1[2]);
    assert!((d - want).abs() <= DIAG_2D, "sphere diameter {d} vs {want}");
    assert!((sphere.perpendicular_diameter_mm - want).abs() <= DIAG_2D);
    for l in ellipsoids {
        let cz = l.centroid_voxel[2] * S[2];
        let (long, short) = (chord(12.0, 8.0, cz), chord(6.0, 8.0, cz));
        assert!((l.longest_diameter_mm - long).abs() <= DIAG_2D, "{} vs {long}", l.longest_diameter_mm);
        assert!(
            (l.perpendicular_diameter_mm - short).abs() <= DIAG_2D,
            "{} vs {short}",
            l.perpendicular_diameter_mm
        );
    }
    // Centroids: the analytic centres, within a fraction of a voxel.
    for (l, c) in [(sphere, c1)] {
        for i in 0..3 {
            assert!(
                (l.centroid_voxel[i] * S[i] - c[i]).abs() < 0.1 * S[i],
                "{:?} vs {c:?}",
                l.centroid_voxel
            );
        }
        let ras = l.centroid_ras_mm;
        assert!((ras[0] - (60.0 - c[0])).abs() < 0.1 && (ras[2] - (c[2] - 100.0)).abs() < 0.25, "{ras:?}");
    }
    // The long axis ends are the diameter apart, on the measured slice.
    for l in n {
        let [e0, e1] = l.long_axis_ras_mm;
        let len = ((e0[0] - e1[0]).powi(2) + (e0[1] - e1[1]).powi(2) + (e0[2] - e1[2]).powi(2)).sqrt();
        assert!((len - l.longest_diameter_mm).abs() < 1e-9);
        assert_eq!(e0[2], e1[2]);
    }
    // Nodule categories: all > 8 mm by the mean diameter, none above 30 mm.
    assert!(n.iter().all(|l| l.category.as_deref() == Some(">8 mm")));
}

#[test]
fn touching_and_separate_lesions_are_counted_exactly() {
    let mut p = Phantom::new([80, 80, 12]);
    // Two cubes sharing only a corner: one lesion at 26-connectivity, two at 6 and 18.
    let cube = |x0: usize, y0: usize, z0: usize, p: &mut Phantom| {
        for z in z0..z0 + 3 {
            for y in y0..y0 + 6 {
                for x in x0..x0 + 6 {
                    let i = p.idx(x, y, z);
                    p.labels[i] = NODULE;
                }
            }
        }
    };
    cube(10, 10, 2, &mut p);
    cube(16, 16, 5, &mut p);
    // Two cubes one voxel apart: always two lesions.
    cube(40, 10, 2, &mut p);
    cube(47, 10, 2, &mut p);
    // Two overlapping spheres: one lesion.
    p.paint(NODULE, ellipsoid([20.0, 40.0, 15.0], [5.0; 3]));
    p.paint(NODULE, ellipsoid([26.0, 40.0, 15.0], [5.0; 3]));
    let mut config = AttributeConfig::default();
    let count = |c: &AttributeConfig| finding(&p.measure(c), "lung_nodule").count;
    assert_eq!(count(&config), 4);
    config.connectivity = 18;
    assert_eq!(count(&config), 5);
    config.connectivity = 6;
    assert_eq!(count(&config), 5);
}

/// Lobes: RAS x > 0 is the right lung (upper lobe above z = 0 mm, lower below), x < 0 the
/// left; a 6 mm band of background around the volume's rim.
fn lobes_phantom() -> Phantom {
    let mut p = Phantom::new([170, 170, 40]);
    let [nx, ny, nz] = p.geometry.dims;
    for z in 0..nz {
        for y in 8..ny - 8 {
            for x in 8..nx - 8 {
                let ras_x = 60.0 - x as f64 * S[0];
                let ras_z = z as f64 * S[2] - 100.0;
                let label = match (ras_x > 0.0, ras_z > -50.0) {
                    (true, true) => RUL,
                    (true, false) => RLL,
                    (false, true) => LUL,
                    (false, false) => LLL,
                };
                let i = p.idx(x, y, z);
                p.labels[i] = label;
            }
        }
    }
    p
}

#[test]
fn nodule_locations_follow_the_lobes() {
    let mut p = lobes_phantom();
    // Inside the right upper lobe (RAS x = +30, z = -20).
    p.paint(NODULE, ellipsoid([30.0, 60.0, 80.0], [4.0; 3]));
    // Across the right upper / lower boundary (z = -50 mm ↔ 50 mm from voxel 0), mostly below.
    p.paint(NODULE, ellipsoid([20.0, 40.0, 47.0], [5.0, 5.0, 6.0]));
    // In the left lower lobe.
    p.paint(NODULE, ellipsoid([100.0, 60.0, 20.0], [3.5; 3]));
    // In the background rim at y < 5.6 mm, about 2.5 mm from the left upper lobe (RAS x -40):
    // no contact, so the nearest lobe.
    p.paint(NODULE, ellipsoid([100.0, 3.0, 80.0], [1.5, 1.5, 2.6]));
    let doc = p.measure(&AttributeConfig::default());
    let n = nodules(&doc);
    assert_eq!(n.len(), 4);
    let by_lobe =
        |phrase: &str| n.iter().filter(|l| l.location.lobe_phrase.as_deref() == Some(phrase)).count();
    assert_eq!(by_lobe("right upper lobe"), 1);
    assert_eq!(by_lobe("right lower lobe"), 1);
    assert_eq!(by_lobe("left lower lobe"), 1);
    assert_eq!(by_lobe("left upper lobe"), 1);
    let across = n.iter().find(|l| (l.centroid_voxel[0] * S[0] - 20.0).abs() < 1.0).unwrap();
    assert_eq!(across.location.lobe.as_deref(), Some("lung_lower_lobe_right"));
    assert_eq!(across.location.method, "contact");
    assert_eq!(across.location.side.as_deref(), Some("right"));
    let rim = n.iter().find(|l| l.location.method == "nearest").unwrap();
    assert_eq!(rim.location.lobe.as_deref(), Some("lung_upper_lobe_left"));
    let d = rim.location.distance_mm.unwrap();
    assert!(d > 1.0 && d < 6.0, "{d}");
    // Lobe volumes are exact voxel counts.
    let rul = p.labels.iter().filter(|&&l| l == RUL).count() as f64;
    let organ = |k: &str| doc.organs.iter().find(|o| o.key == k).unwrap();
    assert!(
        (organ("lung_upper_lobe_right").volume_ml.unwrap() - rul * 0.7 * 0.7 * 2.5 / 1000.0).abs() < 1e-9
    );
    let lobes_total: f64 =
        ["lung_upper_lobe_right", "lung_lower_lobe_right", "lung_upper_lobe_left", "lung_lower_lobe_left"]
            .iter()
            .map(|k| organ(k).volume_ml.unwrap())
            .sum();
    assert!((organ("lungs").volume_ml.unwrap() - lobes_total).abs() < 1e-9);
    assert_eq!(organ("lung_middle_lobe_right").status, Status::NotAssessed);
    assert!(doc.text.contains("in the right lower lobe"), "{}", doc.text);
}

#[test]
fn a_lesion_outside_every_lobe_is_outside_the_lungs() {
    let mut p = lobes_phantom();
    // Erase the right lobes, put a nodule where they were, far (> 30 mm) from the left lobes.
    for l in p.labels.iter_mut() {
        if *l == RUL || *l == RLL {
            *l = 0;
        }
    }
    p.paint(NODULE, ellipsoid([15.0, 60.0, 50.0], [3.0; 3]));
    let doc = p.measure(&AttributeConfig::default());
    let n = nodules(&doc);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].location.method, "none");
    assert_eq!(n[0].location.lobe, None);
    assert!(doc.text.contains("outside the lungs"), "{}", doc.text);
    // With a larger search radius the left lobes are found.
    let config = AttributeConfig { nearest_lobe_max_mm: 100.0, ..AttributeConfig::default() };
    let doc = p.measure(&config);
    assert_eq!(nodules(&doc)[0].location.side.as_deref(), Some("left"));
}

#[test]
fn organs_effusions_cysts_and_the_text_block() {
    let mut p = lobes_phantom();
    let heart = p.paint(HEART, ellipsoid([60.0, 60.0, 50.0], [10.0, 8.0, 12.0]));
    // Effusion touching the right lower lobe, and one on the left in the background rim with no
    // lobe contact (side by centroid).
    p.paint(EFFUSION, ellipsoid([30.0, 100.0, 20.0], [6.0, 6.0, 8.0]));
    let left_effusion = p.paint(EFFUSION, ellipsoid([116.5, 2.0, 20.0], [1.5, 1.5, 6.0]));
    assert!(left_effusion > 0);
    // A kidney cyst (left class), anywhere.
    p.paint(CYST_LEFT, ellipsoid([20.0, 20.0, 60.0], [3.0; 3]));
    let doc = p.measure(&AttributeConfig::default());
    let organ = |k: &str| doc.organs.iter().find(|o| o.key == k).unwrap();
    assert_eq!(organ("heart").voxels, Some(heart as u64));
    assert_eq!(organ("liver").status, Status::NotAssessed);
    assert_eq!(organ("liver").volume_ml, None);
    assert!(organ("liver").reason.as_deref().unwrap().contains("no voxel"));
    let e = finding(&doc, "pleural_effusion");
    assert_eq!(e.count, 2);
    let sides: Vec<(&str, &str)> =
        e.lesions.iter().map(|l| (l.location.side.as_deref().unwrap(), l.location.method.as_str())).collect();
    assert_eq!(sides, vec![("right", "contact"), ("left", "centroid")]);
    assert_eq!(e.sides.iter().map(|s| s.side.as_str()).collect::<Vec<_>>(), vec!["right", "left"]);
    assert_eq!(e.sides[0].grade, "small");
    let c = finding(&doc, "kidney_cyst");
    assert_eq!(c.count, 1);
    assert_eq!(c.lesions[0].location.side.as_deref(), Some("left"));
    assert_eq!(c.lesions[0].location.method, "class");
    assert_eq!(c.lesions[0].category, None);
    let text = &doc.text;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    assert_eq!(lines[0], "Patient-specific attributes:");
    let heart_ml = heart as f64 * 0.7 * 0.7 * 2.5 / 1000.0;
    assert_eq!(lines[2], format!("- Heart volume: {heart_ml:.1} mL."));
    assert_eq!(lines[3], "- Liver volume: not assessed.");
    assert_eq!(lines[4], "- Kidney volume: right not assessed, left not assessed.");
    assert_eq!(lines[5], "- Lung nodules: none detected.");
    assert!(lines[6].starts_with("- Pleural effusion: right ("), "{}", lines[6]);
    assert!(lines[6].contains("; left ("), "{}", lines[6]);
    assert!(
        lines[7].starts_with("- Kidney cysts: 1 detected; ") && lines[7].ends_with("in the left kidney."),
        "{}",
        lines[7]
    );
    // The JSON round-trips and carries the same text.
    let json = serde_json::to_string(&doc).unwrap();
    let back: Attributes = serde_json::from_str(&json).unwrap();
    // (serde_json parses floats to within an ulp, not exactly; compare the structure.)
    assert_eq!((back.schema_version, back.text.as_str()), (1, doc.text.as_str()));
    assert_eq!(back.organs.len(), doc.organs.len());
    for (a, b) in back.lesions.iter().zip(&doc.lesions) {
        assert_eq!((a.count, &a.kind, a.lesions.len()), (b.count, &b.kind, b.lesions.len()));
        for (la, lb) in a.lesions.iter().zip(&b.lesions) {
            assert!((la.volume_mm3 - lb.volume_mm3).abs() <= 1e-12 * lb.volume_mm3);
            assert_eq!((la.voxels, &la.location), (lb.voxels, &lb.location));
        }
    }
}

#[test]
fn empty_mask_and_missing_tables_say_so() {
    let p = Phantom::new([20, 20, 5]);
    let doc = p.measure(&ModelConfig::default().attributes);
    for f in &doc.lesions {
        assert_eq!((f.status, f.count, f.components), (Status::Measured, 0, 0));
    }
    assert!(doc.organs.iter().all(|o| o.status == Status::NotAssessed && o.volume_ml.is_none()));
    assert!(doc.text.contains("- Lung nodules: none detected."), "{}", doc.text);
    assert!(doc.text.contains("- Lung volume: not assessed"), "{}", doc.text);
    // RadGenome regions: no lesion classes, so lesions are not assessed (never "none detected").
    let doc =
        compute(&p.geometry, &p.geometry, &p.labels, &LabelScheme::radgenome(), &AttributeConfig::default())
            .unwrap();
    assert!(doc.lesions.iter().all(|f| f.status == Status::NotAssessed));
    assert!(doc.text.contains("- Lung nodules: not assessed."), "{}", doc.text);
    assert!(!doc.text.contains("none detected"), "{}", doc.text);
}

#[test]
fn min_volume_single_voxels_and_border_lesions() {
    let mut p = Phantom::new([30, 30, 6]);
    let set = |p: &mut Phantom, x, y, z| {
        let i = p.idx(x, y, z);
        p.labels[i] = NODULE;
    };
    set(&mut p, 10, 10, 3); // one voxel: 1.225 mm³
    for x in 0..4 {
        set(&mut p, x, 20, 0); // a row on the border, 4.9 mm³
    }
    let doc = p.measure(&AttributeConfig::default());
    let f = finding(&doc, "lung_nodule");
    assert_eq!((f.components, f.dropped_below_min_volume, f.count), (2, 2, 0));
    assert!(doc.text.contains("none detected"));
    let config = AttributeConfig { min_lesion_volume_mm3: 0.0, ..AttributeConfig::default() };
    let doc = p.measure(&config);
    let n = nodules(&doc);
    assert_eq!(n.len(), 2);
    let (row, one) = (&n[0], &n[1]);
    assert_eq!(one.voxels, 1);
    assert!((one.volume_mm3 - 1.225).abs() < 1e-12);
    assert!(
        (one.longest_diameter_mm - 0.7).abs() < 1e-9 && (one.perpendicular_diameter_mm - 0.7).abs() < 1e-9
    );
    assert!(!one.touches_border);
    assert!(row.touches_border);
    assert!((row.longest_diameter_mm - 2.8).abs() < 1e-9);
    // Erosion-based denoising drops both (no voxel has all six face neighbours).
    let config =
        AttributeConfig { min_lesion_volume_mm3: 0.0, denoise_erosion: true, ..AttributeConfig::default() };
    let f = finding(&p.measure(&config), "lung_nodule").clone();
    assert_eq!((f.dropped_by_erosion, f.count), (2, 0));
}

#[test]
fn a_hundred_thousand_tiny_components_stay_linear() {
    // 100 x 100 x 10 isolated single voxels (every other voxel on each axis).
    let mut p = Phantom::new([200, 200, 20]);
    for z in (0..20).step_by(2) {
        for y in (0..200).step_by(2) {
            for x in (0..200).step_by(2) {
                let i = p.idx(x, y, z);
                p.labels[i] = NODULE;
            }
        }
    }
    let f = finding(&p.measure(&AttributeConfig::default()), "lung_nodule").clone();
    assert_eq!((f.components, f.dropped_below_min_volume, f.count), (100_000, 100_000, 0));
    let config = AttributeConfig { min_lesion_volume_mm3: 0.0, ..AttributeConfig::default() };
    let doc = p.measure(&config);
    assert_eq!(finding(&doc, "lung_nodule").count, 100_000);
    assert!(doc.text.contains("- Lung nodules: 100000 detected; largest 0.7 mm"), "{}", doc.text);
    assert!(doc.text.contains("and 99997 more."), "{}", doc.text);
}

#[test]
fn axial_comes_from_the_affine_not_the_storage_order() {
    // The same ellipsoid stored z-fastest: voxel axis 0 runs S-I.
    let (c, r) = ([30.0, 25.0, 20.0], [12.0, 6.0, 8.0]);
    let mut p = Phantom::new([64, 64, 24]);
    p.paint(NODULE, ellipsoid(c, r));
    let reference = nodules(&p.measure(&AttributeConfig::default()))[0].clone();
    let dims = [24, 64, 64]; // (k, i, j) of the phantom
    let a = affine(S);
    // Column 0 of the new affine is the old k column, 1 the old i, 2 the old j.
    let mut b = a;
    for row in 0..3 {
        b[row][0] = a[row][2];
        b[row][1] = a[row][0];
        b[row][2] = a[row][1];
    }
    let g = Geometry::new(dims, b, "permuted").unwrap();
    let mut labels = vec![0u16; p.labels.len()];
    for z in 0..24 {
        for y in 0..64 {
            for x in 0..64 {
                labels[z + 24 * (x + 64 * y)] = p.labels[p.idx(x, y, z)];
            }
        }
    }
    let doc = compute(&g, &g, &labels, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap();
    assert_eq!(doc.grid.axial_axis, 0);
    let l = &nodules(&doc)[0];
    assert_eq!(l.voxels, reference.voxels);
    assert!((l.longest_diameter_mm - reference.longest_diameter_mm).abs() < 1e-9);
    assert!((l.perpendicular_diameter_mm - reference.perpendicular_diameter_mm).abs() < 1e-9);
    for i in 0..3 {
        assert!((l.centroid_ras_mm[i] - reference.centroid_ras_mm[i]).abs() < 1e-9);
    }
}

#[test]
fn oblique_grids_measure_in_the_slice_plane_and_report_the_tilt() {
    // A sphere on a grid tilted 20° about x: in-plane cuts of a sphere are still circles.
    let t = 20f64.to_radians();
    let a: Affine = [
        [0.7, 0.0, 0.0, 0.0],
        [0.0, 0.7 * t.cos(), -2.5 * t.sin(), 0.0],
        [0.0, 0.7 * t.sin(), 2.5 * t.cos(), 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::new([80, 80, 30], a, "tilted").unwrap();
    let c = [28.0, 28.0, 37.5]; // centre in index-axis mm (on a slice)
    let mut labels = vec![0u16; 80 * 80 * 30];
    for z in 0..30 {
        for y in 0..80 {
            for x in 0..80 {
                // Axis directions are orthonormal, so index-axis mm are an isometry.
                let d2 = (x as f64 * 0.7 - c[0]).powi(2)
                    + (y as f64 * 0.7 - c[1]).powi(2)
                    + (z as f64 * 2.5 - c[2]).powi(2);
                if d2 <= 100.0 {
                    labels[x + 80 * (y + 80 * z)] = NODULE;
                }
            }
        }
    }
    let doc = compute(&g, &g, &labels, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap();
    assert!((doc.grid.axial_tilt_deg - 20.0).abs() < 1e-9);
    assert_eq!(doc.grid.axial_axis, 2);
    let l = &nodules(&doc)[0];
    assert!((l.longest_diameter_mm - 20.0).abs() <= DIAG_2D, "{}", l.longest_diameter_mm);
    assert!((l.volume_mm3 - 4.0 / 3.0 * PI * 1000.0).abs() / (4.0 / 3.0 * PI * 1000.0) < 0.02);
}

#[test]
fn flipped_axes_give_the_same_numbers() {
    let mut p = Phantom::new([60, 60, 20]);
    p.paint(NODULE, ellipsoid([20.0, 20.0, 25.0], [9.0, 5.0, 7.0]));
    let a = p.measure(&AttributeConfig::default());
    let mut flipped = affine(S);
    flipped[2][2] = -S[2]; // k runs S → I
    let g = Geometry::new(p.geometry.dims, flipped, "flipped").unwrap();
    let b = compute(&g, &g, &p.labels, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap();
    let (la, lb) = (&nodules(&a)[0], &nodules(&b)[0]);
    assert_eq!(la.voxels, lb.voxels);
    assert_eq!(a.grid.voxel_volume_mm3, b.grid.voxel_volume_mm3);
    assert!((la.longest_diameter_mm - lb.longest_diameter_mm).abs() < 1e-12);
}

#[test]
fn bad_input_is_refused_with_reasons() {
    let p = Phantom::new([20, 20, 5]);
    // Another geometry than the CT: dims, then spacing.
    let other = Geometry::new([20, 20, 6], affine(S), "other").unwrap();
    let labels6 = vec![0u16; 20 * 20 * 6];
    let e = compute(&p.geometry, &other, &labels6, &LabelScheme::totalseg(), &AttributeConfig::default())
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { .. }) && msg.contains("20x20x5") && msg.contains("20x20x6"), "{msg}");
    let other = Geometry::new([20, 20, 5], affine([0.7, 0.7, 3.0]), "other").unwrap();
    let e = compute(&p.geometry, &other, &p.labels, &LabelScheme::totalseg(), &AttributeConfig::default())
        .unwrap_err();
    assert!(e.to_string().contains("geometry must match the CT"), "{e}");
    // Wrong data length.
    let e =
        compute(&p.geometry, &p.geometry, &labels6, &LabelScheme::totalseg(), &AttributeConfig::default())
            .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Zero spacing: no geometry can be made; a hand-built one is refused by compute.
    assert!(Geometry::new([20, 20, 5], affine([0.7, 0.0, 2.5]), "zero").is_err());
    let bad = Geometry { dims: [20, 20, 5], affine: affine([0.7, 0.0, 2.5]) };
    let e =
        compute(&bad, &bad, &p.labels, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap_err();
    assert!(e.to_string().contains("zero spacing"), "{e}");
    // Negative or zero spacing in a caller buffer.
    let bytes = vec![0u8; 20 * 20 * 5 * 2];
    for spacing in [[-0.7, 0.7, 2.5], [0.7, 0.7, 0.0]] {
        let mut buf = VoxelBuffer::dense(&bytes, DType::I16, [20, 20, 5], Coordinates::Ras);
        buf.spacing = Some(spacing);
        let e = Volume::from_buffer(&buf).unwrap_err();
        assert!(e.to_string().contains("spacing"), "{e}");
    }
    // Labels that are not integral non-negative values.
    let ct = Volume::from_vec(vec![0.0; 20 * 20 * 5], p.geometry.clone(), "ct").unwrap();
    let mut values = vec![0.0f32; 20 * 20 * 5];
    values[7] = -1.0;
    let masks = Volume::from_vec(values.clone(), p.geometry.clone(), "masks").unwrap();
    let e = compute_volumes(&ct, &masks, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap_err();
    assert!(e.to_string().contains("label value -1"), "{e}");
    values[7] = 1.5;
    let masks = Volume::from_vec(values, p.geometry.clone(), "masks").unwrap();
    assert!(compute_volumes(&ct, &masks, &LabelScheme::totalseg(), &AttributeConfig::default()).is_err());
    // Config: RadGPT's 1 mm resampling is not implemented, and says so.
    let config = AttributeConfig { resample_mm: 1.0, ..AttributeConfig::default() };
    let e = compute(&p.geometry, &p.geometry, &p.labels, &LabelScheme::totalseg(), &config).unwrap_err();
    assert!(e.to_string().contains("attributes.resample_mm"), "{e}");
    // Unknown labels are reported, not guessed.
    let mut q = Phantom::new([20, 20, 5]);
    q.labels[3] = 999;
    let doc = q.measure(&AttributeConfig::default());
    assert_eq!(doc.unknown_labels.len(), 1);
    assert_eq!((doc.unknown_labels[0].label, doc.unknown_labels[0].voxels), (999, 1));
}

#[test]
fn label_files_are_strict() {
    let c = LabelConfig::from_json(r#"{"table":[{"id":1,"name":"lung_nodules"}]}"#).unwrap();
    assert_eq!(c.id_of("lung_nodules"), Some(1));
    assert!(LabelConfig::from_json(r#"{"table":[{"id":0,"name":"x"}]}"#).is_err());
    assert!(LabelConfig::from_json(r#"{"tables":[]}"#).is_err());
}

fn reference() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/attributes/pyradiomics_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn pyradiomics_tumours_match_the_independent_reference() {
    let reference = reference();
    let scheme = LabelScheme {
        name: "pyradiomics".into(),
        labels: LabelConfig::from_json(r#"{"table":[{"id":1,"name":"lung_nodules"}]}"#).unwrap(),
    };
    for name in ["lung1", "lung2"] {
        let want = &reference["cases"][name];
        let ct = Volume::load(testdata::testdata("pyradiomics", &format!("data/{name}_image.nrrd"))).unwrap();
        let masks =
            Volume::load(testdata::testdata("pyradiomics", &format!("data/{name}_label.nrrd"))).unwrap();
        let doc = compute_volumes(&ct, &masks, &scheme, &AttributeConfig::default()).unwrap();
        // numpy's LU determinant and ours differ in the last bit: "exact" is to 1e-12 relative.
        let exact = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
        assert!(exact(doc.grid.voxel_volume_mm3, want["voxel_volume_mm3"].as_f64().unwrap()), "{name}");
        assert_eq!(doc.grid.axial_axis as u64, want["axial_axis"].as_u64().unwrap());
        let f = finding(&doc, "lung_nodule");
        assert_eq!(f.components as u64, want["components"].as_u64().unwrap(), "{name}");
        assert_eq!(f.count as u64, want["kept_min_10mm3"].as_u64().unwrap(), "{name}");
        let lesions = want["lesions"].as_array().unwrap();
        for (got, want) in f.lesions.iter().zip(lesions) {
            assert_eq!(got.voxels, want["voxels"].as_u64().unwrap(), "{name}");
            assert!(exact(got.volume_mm3, want["volume_mm3"].as_f64().unwrap()), "{name}");
            let (gd, wd) = (got.longest_diameter_mm, want["longest_diameter_mm"].as_f64().unwrap());
            assert!((gd - wd).abs() <= 0.5, "{name}: longest {gd} vs reference {wd}");
            let (gp, wp) =
                (got.perpendicular_diameter_mm, want["perpendicular_diameter_mm"].as_f64().unwrap());
            assert!((gp - wp).abs() <= 0.5, "{name}: perpendicular {gp} vs reference {wp}");
            eprintln!("{name}: {} voxels, longest {gd:.4} mm (reference {wd:.4}), perpendicular {gp:.4} (reference {wp:.4})", got.voxels);
            for i in 0..3 {
                let c = want["centroid_voxel"][i].as_f64().unwrap();
                assert!(
                    (got.centroid_voxel[i] - c).abs() < 1e-6,
                    "{name}: centroid {:?}",
                    got.centroid_voxel
                );
            }
        }
    }
}

fn medregion(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(args)
        .output()
        .expect("run medregion");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prints_the_text_and_writes_the_json() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("attributes-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let table = dir.join("labels.json");
    std::fs::write(&table, r#"{"table":[{"id":1,"name":"lung_nodules"}]}"#).unwrap();
    let json = dir.join("lung1.json");
    let _ = std::fs::remove_file(&json);
    let ct = testdata::testdata("pyradiomics", "data/lung1_image.nrrd");
    let masks = testdata::testdata("pyradiomics", "data/lung1_label.nrrd");
    let other = testdata::testdata("pyradiomics", "data/lung2_label.nrrd");
    let os = |s: &str| std::ffi::OsString::from(s);
    let (ok, out, err) = medregion(&[
        &os("attributes"),
        &os("--ct"),
        ct.as_os_str(),
        &os("--masks"),
        masks.as_os_str(),
        &os("--labels"),
        table.as_os_str(),
        &os("--json"),
        json.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let want = reference()["cases"]["lung1"]["lesions"][0]["longest_diameter_mm"].as_f64().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Patient-specific attributes:");
    assert_eq!(
        lines[5],
        format!("- Lung nodules: 1 detected; largest {want:.1} mm (location not assessed).")
    );
    assert_eq!(lines[3], "- Liver volume: not assessed.");
    let doc: Attributes = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc.schema_version, 1);
    assert_eq!(doc.text, out.trim_end());
    // RadGenome regions have no nodule class: not assessed, never "none detected".
    let (ok, out, err) = medregion(&[
        &os("attributes"),
        &os("--ct"),
        ct.as_os_str(),
        &os("--masks"),
        masks.as_os_str(),
        &os("--labels"),
        &os("radgenome"),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("- Lung nodules: not assessed."), "{out}");
    // A label map of another CT: refused, both geometries named.
    let (ok, _, err) =
        medregion(&[&os("attributes"), &os("--ct"), ct.as_os_str(), &os("--masks"), other.as_os_str()]);
    assert!(!ok);
    assert!(err.starts_with("medregion: error: label map: geometry must match the CT"), "{err}");
    assert!(err.contains("512x512x48") && err.contains("512x512x61"), "{err}");
    let (ok, _, err) = medregion(&[
        &os("attributes"),
        &os("--ct"),
        ct.as_os_str(),
        &os("--masks"),
        masks.as_os_str(),
        &os("--labels"),
        &os("nope.json"),
    ]);
    assert!(!ok && err.contains("nope.json"), "{err}");
}
