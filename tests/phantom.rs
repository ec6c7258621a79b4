//! The synthetic chest phantom: deterministic, on its stated grid, and measured by the attribute
//! extractor as designed (two nodules in the right upper and left lower lobes, a right effusion,
//! one left kidney cyst, organ volumes close to the analytic shapes).

use medregion::attributes::{compute_volumes, LabelScheme, Status};
use medregion::model::config::AttributeConfig;
use medregion::phantom::{chest_phantom, DIMS, SPACING};

fn ellipsoid_ml(r: [f64; 3]) -> f64 {
    4.0 / 3.0 * std::f64::consts::PI * r[0] * r[1] * r[2] / 1000.0
}

#[test]
fn phantom_is_deterministic_and_plausible() {
    let a = chest_phantom().unwrap();
    let b = chest_phantom().unwrap();
    assert_eq!(a.ct.data(), b.ct.data());
    assert_eq!(a.labels.data(), b.labels.data());
    assert_eq!(a.ct.dims(), DIMS);
    assert_eq!(a.ct.spacing(), SPACING);
    assert_eq!(a.ct.orientation_code(), "RAS");
    let [lo, hi] = a.ct.hu_range();
    assert!(lo >= -1000.0 && lo < -990.0 && hi > 690.0 && hi <= 710.0, "HU range {lo}..{hi}");
    // Lung voxels are air-like, bone dense, soft tissue near water.
    for (&hu, &label) in a.ct.data().iter().zip(a.labels.data()) {
        match label as u32 {
            10..=14 => assert!((-860.0..=-840.0).contains(&hu), "lung {hu}"),
            51 | 5 | 2 | 3 => assert!((20.0..=70.0).contains(&hu), "organ {hu}"),
            92..=115 => assert!(hu >= 690.0, "rib {hu}"),
            _ => {}
        }
    }
}

#[test]
fn attributes_of_the_phantom_are_what_was_drawn() {
    let p = chest_phantom().unwrap();
    let doc =
        compute_volumes(&p.ct, &p.labels, &LabelScheme::totalseg(), &AttributeConfig::default()).unwrap();
    assert!(doc.unknown_labels.is_empty(), "{:?}", doc.unknown_labels);
    let organ = |key: &str| doc.organs.iter().find(|o| o.key == key).unwrap();
    let heart = organ("heart").volume_ml.unwrap();
    let want = ellipsoid_ml([55.0, 45.0, 50.0]);
    assert!((heart / want - 1.0).abs() < 0.05, "heart {heart} mL vs {want}");
    for key in ["lungs", "liver", "kidney_right", "kidney_left"] {
        assert_eq!(organ(key).status, Status::Measured, "{key}");
    }
    let kidney = organ("kidney_right").volume_ml.unwrap();
    let want = ellipsoid_ml([25.0, 25.0, 40.0]);
    assert!((kidney / want - 1.0).abs() < 0.1, "right kidney {kidney} mL vs {want}");

    let lesion = |kind: &str| doc.lesions.iter().find(|l| l.kind == kind).unwrap();
    let nodules = lesion("lung_nodule");
    assert_eq!(nodules.count, 2);
    let mut lobes: Vec<String> =
        nodules.lesions.iter().map(|l| l.location.lobe_phrase.clone().unwrap_or_default()).collect();
    lobes.sort();
    assert_eq!(lobes, ["left lower lobe", "right upper lobe"]);
    // The larger nodule (r = 9 mm) first, its longest axial diameter near 18 mm.
    let d = nodules.lesions[0].longest_diameter_mm;
    assert!((15.0..=20.0).contains(&d), "nodule diameter {d}");
    let effusion = lesion("pleural_effusion");
    assert!(effusion.count >= 1);
    assert!(effusion.sides.iter().all(|s| s.side == "right"), "{:?}", effusion.sides);
    let cysts = lesion("kidney_cyst");
    assert_eq!(cysts.count, 1);
    assert_eq!(cysts.lesions[0].location.side.as_deref(), Some("left"));
    assert!(doc.text.contains("right upper lobe") && doc.text.contains("left lower lobe"), "{}", doc.text);
    println!("{}", doc.text);
}

#[test]
fn phantom_cli_writes_nrrd_that_reads_back_identically() {
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("phantom-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["phantom", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = chest_phantom().unwrap();
    let ct = medregion::volume::Volume::load(dir.join("ct.nrrd")).unwrap();
    let labels = medregion::volume::Volume::load(dir.join("labels.nrrd")).unwrap();
    assert_eq!(ct.data(), p.ct.data());
    assert_eq!(labels.data(), p.labels.data());
    assert_eq!(ct.affine(), p.ct.affine());
    assert_eq!(labels.geometry(), p.labels.geometry());
    assert!(!dir.join("ct.partial").exists());
    std::fs::remove_dir_all(&dir).ok();
}
