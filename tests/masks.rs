//! The masks input (`medregion::masks`): slot masks from TotalSegmentator label maps (with the
//! subtask maps added), RadGenome mask folders against the same regions as one label map,
//! missing structures, the merged label map against the attribute extractor, and every bad
//! input of the module doc. Synthetic volumes on small grids, written as NIfTI / NRRD files
//! where a file path is exercised (`tests/common/maskfiles.rs`).

#[path = "common/maskfiles.rs"]
mod maskfiles;

use std::path::Path;

use maskfiles::{as_f32, fresh_dir, write_nifti, write_nrrd, Affine};
use medregion::attributes::{compute, Attributes, LabelScheme};
use medregion::masks::{Masks, SlotMasks};
use medregion::model::config::{AttributeConfig, Interpolation, ModelConfig, Orientation, PreprocessConfig};
use medregion::preprocess::{preprocess, Preprocessed};
use medregion::volume::{Geometry, Volume};
use medregion::Error;

const DIMS: [usize; 3] = [12, 10, 8];

fn ras_affine() -> Affine {
    [[0.8, 0.0, 0.0, -5.0], [0.0, 0.8, 0.0, -4.0], [0.0, 0.0, 2.0, -8.0], [0.0, 0.0, 0.0, 1.0]]
}

fn geometry() -> Geometry {
    Geometry::new(DIMS, ras_affine(), "test grid").unwrap()
}

fn n() -> usize {
    DIMS.iter().product()
}

fn idx(x: usize, y: usize, z: usize) -> usize {
    x + DIMS[0] * (y + DIMS[1] * z)
}

fn volume(labels: &[u16], name: &str) -> Volume {
    Volume::from_vec(as_f32(labels), geometry(), name).unwrap()
}

fn ct() -> Volume {
    Volume::from_vec(vec![-500.0; n()], geometry(), "ct").unwrap()
}

/// Preprocessing that changes nothing: RAS grid in, same dims out, no crop, nearest masks.
fn identity_pre() -> Preprocessed {
    let config = PreprocessConfig {
        depth: DIMS[2],
        height: DIMS[1],
        width: DIMS[0],
        orientation: Orientation::Ras,
        crop_foreground: false,
        ..PreprocessConfig::default()
    };
    preprocess(&ct(), &config).unwrap()
}

/// Sets `labels` in the box `lo..hi` (voxel indices, half-open) to `label`.
fn fill(labels: &mut [u16], lo: [usize; 3], hi: [usize; 3], label: u16) {
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                labels[idx(x, y, z)] = label;
            }
        }
    }
}

/// A deterministic "TotalSegmentator" map drawing every voxel from `values` (xorshift).
fn scrambled(values: &[u16], seed: u64) -> Vec<u16> {
    let mut s = seed;
    (0..n())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            values[(s % values.len() as u64) as usize]
        })
        .collect()
}

/// The slot masks computed directly from one label map and a scheme, voxel by voxel.
fn direct(labels: &[u16], scheme: &LabelScheme, key: &str) -> Vec<u8> {
    let g = scheme.labels.slots.iter().find(|g| g.key == key).unwrap();
    let name = |l: u16| scheme.labels.table.iter().find(|e| e.id == u32::from(l)).map(|e| e.name.as_str());
    labels
        .iter()
        .map(|&l| match name(l) {
            Some(c) => u8::from(g.classes.iter().any(|x| x == c) && !g.exclude.iter().any(|x| x == c)),
            None => 0,
        })
        .collect()
}

fn slots(masks: &Masks) -> SlotMasks {
    masks.slot_masks(&identity_pre(), &ModelConfig::default()).unwrap()
}

fn slot<'a>(s: &'a SlotMasks, key: &str) -> (&'a [u8], bool) {
    let i = s.keys.iter().position(|k| k == key).unwrap();
    (&s.masks[i], s.present[i])
}

// TotalSegmentator `total` ids and the packed subtask ids of the `totalseg` scheme.
const LUL: u16 = 10;
const LLL: u16 = 11;
const RUL: u16 = 12;
const RML: u16 = 13;
const RLL: u16 = 14;
const ESOPHAGUS: u16 = 15;
const TRACHEA: u16 = 16;
const LIVER: u16 = 5;
const KIDNEY_R: u16 = 2;
const KIDNEY_L: u16 = 3;
const HEART: u16 = 51;
const AORTA: u16 = 52;
const T5: u16 = 39;
const RIB_L3: u16 = 94;
const AUTOCHTHON_L: u16 = 86;
const CYST_L: u16 = 23;
const NODULE: u16 = 118;
const EFFUSION: u16 = 119;
const MEDIASTINUM: u16 = 121;

#[test]
fn totalseg_slot_masks_are_the_union_of_their_classes() {
    let values = [
        0,
        0,
        0,
        LUL,
        LLL,
        RUL,
        RML,
        RLL,
        ESOPHAGUS,
        TRACHEA,
        LIVER,
        KIDNEY_R,
        KIDNEY_L,
        HEART,
        AORTA,
        T5,
        RIB_L3,
        AUTOCHTHON_L,
        CYST_L,
        NODULE,
        EFFUSION,
        MEDIASTINUM,
        999,
    ];
    let labels = scrambled(&values, 0x9e3779b97f4a7c15);
    let scheme = LabelScheme::totalseg();
    let masks = Masks::from_label_map(&volume(&labels, "total"), &scheme).unwrap();
    let s = slots(&masks);
    assert_eq!(s.shape, [DIMS[2], DIMS[1], DIMS[0]]);
    let config = ModelConfig::default();
    assert_eq!(s.keys, config.segmentation.iter().map(|k| k.key.clone()).collect::<Vec<_>>());
    for key in &s.keys {
        let (mask, present) = slot(&s, key);
        let want = direct(&labels, &scheme, key);
        assert!(present, "{key}");
        assert!(want.contains(&1), "{key}: the phantom has voxels");
        assert_eq!(mask, &want[..], "{key}");
    }
    // Spot checks against the SPEC §8.3 table.
    let (lung, _) = slot(&s, "lung");
    for (i, &l) in labels.iter().enumerate() {
        let lobe_or_effusion = [LUL, LLL, RUL, RML, RLL, EFFUSION].contains(&l);
        assert_eq!(lung[i] == 1, lobe_or_effusion, "voxel {i} label {l}");
    }
    let (heart, _) = slot(&s, "heart_great_vessels");
    assert!(labels.iter().zip(heart).all(|(&l, &m)| (m == 1) == (l == HEART || l == AORTA)));
    // Unknown label values are reported (not an error); autochthon is a known, unused class.
    let r = masks.report();
    assert_eq!(r.unknown_labels.len(), 1);
    assert_eq!(r.unknown_labels[0].label, 999);
    assert_eq!(r.unknown_labels[0].voxels, labels.iter().filter(|&&l| l == 999).count() as u64);
    assert!(r.unused_classes.iter().any(|c| c.class == "autochthon_left"));
    assert!(!r.empty);
}

#[test]
fn resampled_slot_masks_equal_the_resampled_label_map_looked_up() {
    // An LPS-stored grid, cropped and resized: nearest-exact slot masks must equal the label map
    // sent through the same steps, then looked up (an independent path).
    let affine: Affine =
        [[-0.8, 0.0, 0.0, 5.0], [0.0, -0.8, 0.0, 4.0], [0.0, 0.0, 2.0, -8.0], [0.0, 0.0, 0.0, 1.0]];
    let g = Geometry::new(DIMS, affine, "lps").unwrap();
    let mut hu = vec![-1024.0f32; n()];
    fill_f32(&mut hu, [2, 1, 1], [11, 9, 7], 40.0);
    let ct = Volume::from_vec(hu, g.clone(), "ct").unwrap();
    let config = PreprocessConfig { depth: 5, height: 7, width: 6, ..PreprocessConfig::default() };
    let pre = preprocess(&ct, &config).unwrap();
    let labels = scrambled(&[0, LUL, RLL, HEART, MEDIASTINUM, ESOPHAGUS, TRACHEA, NODULE], 77);
    let scheme = LabelScheme::totalseg();
    let masks =
        Masks::from_label_map(&Volume::from_vec(as_f32(&labels), g.clone(), "m").unwrap(), &scheme).unwrap();
    let s = masks.slot_masks(&pre, &ModelConfig::default()).unwrap();
    let mapped = pre.map_mask(&labels, &g).unwrap();
    assert_eq!(s.shape, [5, 7, 6]);
    for key in ["lung", "mediastinum", "large_airways", "lung_nodule"] {
        assert_eq!(slot(&s, key).0, &direct(&mapped, &scheme, key)[..], "{key}");
    }
    // Trilinear (majority) masks are the majority of each slot's own mask.
    let config = PreprocessConfig { mask_interpolation: Interpolation::Trilinear, ..config };
    let pre = preprocess(&ct, &config).unwrap();
    let s = masks.slot_masks(&pre, &ModelConfig::default()).unwrap();
    let lung = direct(&labels, &scheme, "lung");
    assert_eq!(slot(&s, "lung").0, &pre.map_mask(&lung, &g).unwrap()[..]);
}

fn fill_f32(v: &mut [f32], lo: [usize; 3], hi: [usize; 3], value: f32) {
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                v[idx(x, y, z)] = value;
            }
        }
    }
}

/// A small anatomy: right and left lobes, heart, trachea, liver, kidneys.
fn anatomy() -> Vec<u16> {
    let mut l = vec![0u16; n()];
    fill(&mut l, [0, 0, 4], [5, 10, 8], RUL);
    fill(&mut l, [0, 0, 2], [5, 10, 4], RLL);
    fill(&mut l, [7, 0, 2], [12, 10, 8], LUL);
    fill(&mut l, [5, 3, 3], [7, 7, 6], HEART);
    fill(&mut l, [5, 4, 6], [7, 6, 8], TRACHEA);
    fill(&mut l, [0, 0, 0], [6, 10, 2], LIVER);
    fill(&mut l, [8, 0, 0], [10, 3, 2], KIDNEY_L);
    l
}

#[test]
fn mediastinum_excludes_the_heart_across_sources() {
    let total = anatomy();
    let mut cavities = vec![0u16; n()];
    fill(&mut cavities, [4, 2, 2], [8, 8, 7], 1); // overlaps the heart box
    let trunk =
        LabelScheme::from_json("trunk_cavities", r#"{"table":[{"id":1,"name":"mediastinum"}]}"#).unwrap();
    let mut masks = Masks::from_label_map(&volume(&total, "total"), &LabelScheme::totalseg()).unwrap();
    masks.add_label_map(&volume(&cavities, "trunk"), &trunk).unwrap();
    let s = slots(&masks);
    let (med, present) = slot(&s, "mediastinum");
    assert!(present);
    for i in 0..n() {
        assert_eq!(med[i] == 1, cavities[i] == 1 && total[i] != HEART, "voxel {i}");
    }
    assert!(med.contains(&1));
}

#[test]
fn subtask_maps_add_lesions_and_merge_over_the_lobes() {
    let total = anatomy();
    let mut nodules = vec![0u16; n()];
    fill(&mut nodules, [0, 0, 2], [5, 10, 8], 1); // lung_nodules:lung over the right lobes
    fill(&mut nodules, [1, 1, 5], [3, 3, 7], 2); // a nodule in the right upper lobe
    let mut effusion = vec![0u16; n()];
    fill(&mut effusion, [10, 8, 3], [12, 10, 5], 2); // pleural_effusion in the left lobe
    let mut cysts = vec![0u16; n()];
    fill(&mut cysts, [8, 0, 0], [10, 2, 2], 1); // kidney_cyst_left in the kidney
    let mut masks = Masks::from_label_map(&volume(&total, "total"), &LabelScheme::totalseg()).unwrap();
    let before = slots(&masks);
    assert!(!slot(&before, "lung_nodule").1 && !slot(&before, "pleural_effusion").1);
    for (map, task) in
        [(&nodules, "lung_nodules"), (&effusion, "pleural_pericard_effusion"), (&cysts, "kidney_cysts")]
    {
        let scheme = LabelScheme::from_arg(&format!("totalseg:{task}")).unwrap();
        masks.add_label_map(&volume(map, task), &scheme).unwrap();
    }
    let s = slots(&masks);
    let (nod, present) = slot(&s, "lung_nodule");
    assert!(present);
    assert!((0..n()).all(|i| (nod[i] == 1) == (nodules[i] == 2)));
    let (eff, _) = slot(&s, "pleural_effusion");
    assert!((0..n()).all(|i| (eff[i] == 1) == (effusion[i] == 2)));
    // The effusion is part of the lung slot (pleural space, SPEC §8.3).
    let (lung, _) = slot(&s, "lung");
    assert!((0..n()).all(|i| (lung[i] == 1) == ([RUL, RLL, LUL].contains(&total[i]) || effusion[i] == 2)));
    let (cyst, _) = slot(&s, "kidney_cyst");
    assert_eq!(cyst.iter().filter(|&&v| v == 1).count(), 8);
    let r = masks.report();
    assert_eq!(r.sources.len(), 4);
    assert_eq!(r.sources[1].label_table, "totalseg:lung_nodules");
    // lung_nodules:lung and lung_pleural are known classes no group uses.
    assert!(r.unused_classes.iter().any(|c| c.class == "lung"));

    // Merged: lesions over lobes; the subtask's `lung` only where nothing else is.
    let (merged, scheme) = masks.merged_labels().unwrap();
    let id = |name: &str| scheme.labels.id_of(name).unwrap() as u16;
    assert_eq!(id("lung_nodules"), NODULE);
    assert_eq!(id("pleural_effusion"), EFFUSION);
    for i in 0..n() {
        let want = if nodules[i] == 2 {
            NODULE
        } else if effusion[i] == 2 {
            EFFUSION
        } else if cysts[i] == 1 {
            CYST_L
        } else if total[i] != 0 {
            total[i]
        } else if nodules[i] == 1 {
            id("lung")
        } else {
            0
        };
        assert_eq!(merged[i], want, "voxel {i}");
    }
    let doc = attributes(&merged, &scheme);
    let lesion = |kind: &str| doc.lesions.iter().find(|l| l.kind == kind).unwrap().count;
    assert_eq!((lesion("lung_nodule"), lesion("pleural_effusion"), lesion("kidney_cyst")), (1, 1, 1));
    let lungs = organ_voxels(&doc, "lungs").unwrap();
    let lobes = total.iter().filter(|l| [RUL, RLL, LUL].contains(l)).count() as u64;
    assert_eq!(lungs, lobes - 8 - 8, "the nodule (8) and effusion (8) voxels are drawn over lobes");
}

fn attributes(labels: &[u16], scheme: &LabelScheme) -> Attributes {
    let g = geometry();
    compute(&g, &g, labels, scheme, &AttributeConfig::default()).unwrap()
}

fn organ_voxels(doc: &Attributes, key: &str) -> Option<u64> {
    doc.organs.iter().find(|o| o.key == key).unwrap().voxels
}

const RADGENOME: [&str; 10] = [
    "abdomen",
    "bone",
    "breast",
    "esophagus",
    "heart",
    "lung",
    "mediastinum",
    "pleura",
    "thyroid",
    "trachea and bronchie",
];

/// A RadGenome merged map (ids 1..=10 in the order above), with no overlaps.
fn radgenome_map() -> Vec<u16> {
    let mut l = vec![0u16; n()];
    fill(&mut l, [0, 0, 0], [12, 10, 2], 1); // abdomen
    fill(&mut l, [0, 0, 2], [1, 10, 8], 2); // bone
    fill(&mut l, [1, 9, 2], [11, 10, 8], 3); // breast
    fill(&mut l, [5, 0, 6], [6, 1, 8], 4); // esophagus
    fill(&mut l, [4, 3, 2], [8, 7, 5], 5); // heart
    fill(&mut l, [1, 0, 2], [4, 9, 8], 6); // lung (right)
    fill(&mut l, [8, 0, 2], [11, 9, 8], 6); // lung (left)
    fill(&mut l, [4, 3, 5], [8, 7, 6], 7); // mediastinum
    fill(&mut l, [11, 0, 2], [12, 9, 8], 8); // pleura
    fill(&mut l, [5, 3, 7], [7, 4, 8], 9); // thyroid
    fill(&mut l, [5, 5, 6], [7, 7, 8], 10); // trachea and bronchie
    l
}

/// Writes the RadGenome folder layout (`<region>.nii.gz`) of `map` into `dir`.
fn write_radgenome_folder(dir: &Path, map: &[u16]) {
    for (i, name) in RADGENOME.iter().enumerate() {
        let mask: Vec<f32> = map.iter().map(|&l| if l == i as u16 + 1 { 1.0 } else { 0.0 }).collect();
        write_nifti(&dir.join(format!("{name}.nii.gz")), DIMS, &ras_affine(), &mask);
    }
}

#[test]
fn radgenome_folder_equals_the_merged_label_map() {
    let map = radgenome_map();
    let dir = fresh_dir("radgenome");
    write_radgenome_folder(&dir, &map);
    // An extra structure (unused) and a file that is not a mask (ignored).
    let mut extra = vec![0.0f32; n()];
    extra[idx(6, 8, 3)] = 1.0;
    write_nifti(&dir.join("extra_structure.nii"), DIMS, &ras_affine(), &extra);
    std::fs::write(dir.join("notes.txt"), "not a mask").unwrap();
    let scheme = LabelScheme::radgenome();
    let folder = Masks::load(&dir, &scheme).unwrap();
    let file = dir.parent().unwrap().join("radgenome-map.nrrd");
    write_nrrd(&file, DIMS, &ras_affine(), &as_f32(&map));
    let single = Masks::load(&file, &scheme).unwrap();
    let (a, b) = (slots(&folder), slots(&single));
    assert_eq!(a.keys, b.keys);
    assert_eq!(a.present, b.present);
    assert_eq!(a.masks, b.masks);
    assert_eq!(a.present, [true, true, true, true, true, true, false, false, false]);
    let (lung, _) = slot(&a, "lung");
    assert!((0..n()).all(|i| (lung[i] == 1) == (map[i] == 6 || map[i] == 8)));
    let (med, _) = slot(&a, "mediastinum");
    assert!((0..n()).all(|i| (med[i] == 1) == [4, 7, 9].contains(&map[i])));
    let r = folder.report();
    assert_eq!(r.sources.len(), 11);
    assert!(r.sources.iter().all(|s| s.kind == "binary_mask"));
    assert_eq!(r.ignored_files, ["notes.txt"]);
    let unused: Vec<&str> = r.unused_classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(unused, ["breast", "extra_structure"]);
    let kc = r.slots.iter().find(|g| g.key == "kidney_cyst").unwrap();
    assert!(!kc.present && kc.missing == ["kidney_cyst_left", "kidney_cyst_right"]);

    // Merged: the regions' own ids (1..=10), the extra class after them.
    let (merged, mscheme) = folder.merged_labels().unwrap();
    assert_eq!(mscheme.labels.id_of("extra_structure"), Some(11));
    for i in 0..n() {
        let want = if i == idx(6, 8, 3) && map[i] == 0 { 11 } else { map[i] };
        assert_eq!(merged[i], want, "voxel {i}");
    }
    let from_map = attributes(&map, &scheme);
    let from_folder = attributes(&merged, &mscheme);
    for key in ["lungs", "heart", "liver"] {
        assert_eq!(organ_voxels(&from_folder, key), organ_voxels(&from_map, key), "{key}");
    }
    assert_eq!(organ_voxels(&from_folder, "lungs"), Some(map.iter().filter(|&&l| l == 6).count() as u64));

    // `medregion attributes --masks FOLDER` measures the folder like the merged map.
    let ct_path = dir.parent().unwrap().join("radgenome-ct.nrrd");
    write_nrrd(&ct_path, DIMS, &ras_affine(), &ct().data().to_vec());
    let cli = |masks: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medregion"))
            .args(["attributes", "--ct", ct_path.to_str().unwrap(), "--masks", masks.to_str().unwrap()])
            .args(["--labels", "radgenome"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let text = cli(&dir);
    assert_eq!(text, cli(&file));
    assert!(text.contains("Lung volume"), "{text}");
}

#[test]
fn merged_labels_of_one_map_measure_like_the_map() {
    let mut labels = anatomy();
    fill(&mut labels, [1, 1, 5], [3, 3, 7], NODULE);
    let scheme = LabelScheme::totalseg();
    let masks = Masks::from_label_map(&volume(&labels, "total"), &scheme).unwrap();
    let (merged, mscheme) = masks.merged_labels().unwrap();
    assert_eq!(merged, labels);
    let (a, b) = (attributes(&labels, &scheme), attributes(&merged, &mscheme));
    assert_eq!(a.organs, b.organs);
    assert_eq!(organ_voxels(&a, "heart"), Some(2 * 4 * 3));
    assert_eq!(a.lesions, b.lesions);
}

#[test]
fn missing_structures_are_reported_not_errors() {
    let mut labels = vec![0u16; n()];
    fill(&mut labels, [0, 0, 2], [5, 10, 8], RUL);
    fill(&mut labels, [5, 3, 3], [7, 7, 6], HEART);
    let masks = Masks::from_label_map(&volume(&labels, "partial"), &LabelScheme::totalseg()).unwrap();
    let s = slots(&masks);
    assert_eq!(s.present, [true, false, false, true, false, false, false, false, false]);
    for (mask, &present) in s.masks.iter().zip(&s.present) {
        assert_eq!(mask.len(), n());
        assert_eq!(mask.contains(&1), present);
    }
    let r = masks.report();
    let lung = r.slots.iter().find(|g| g.key == "lung").unwrap();
    assert_eq!(lung.found.len(), 1);
    assert_eq!((lung.found[0].class.as_str(), lung.found[0].voxels), ("lung_upper_lobe_right", 5 * 10 * 6));
    assert!(lung.missing.contains(&"lung_lower_lobe_left".to_string()));
    let osseous = r.slots.iter().find(|g| g.key == "osseous").unwrap();
    assert!(!osseous.present && osseous.found.is_empty() && osseous.missing.len() > 30);
    let liver = r.organs.iter().find(|g| g.key == "liver").unwrap();
    assert!(!liver.present && liver.missing == ["liver"]);
    let heart = r.organs.iter().find(|g| g.key == "heart").unwrap();
    assert!(heart.present);
}

#[test]
fn an_all_empty_label_map_is_allowed_and_says_so() {
    let masks = Masks::from_label_map(&volume(&vec![0; n()], "empty"), &LabelScheme::totalseg()).unwrap();
    let s = slots(&masks);
    assert!(s.present.iter().all(|&p| !p));
    assert!(s.masks.iter().all(|m| m.iter().all(|&v| v == 0)));
    let r = masks.report();
    assert!(r.empty && r.slots.iter().all(|g| !g.present) && r.unknown_labels.is_empty());
    let (merged, scheme) = masks.merged_labels().unwrap();
    assert!(merged.iter().all(|&v| v == 0));
    let doc = attributes(&merged, &scheme);
    assert!(doc.organs.iter().all(|o| o.voxels.is_none()));
    // Only unknown values: still empty (no class), the values reported.
    let masks = Masks::from_label_map(&volume(&vec![999; n()], "unknown"), &LabelScheme::totalseg()).unwrap();
    let r = masks.report();
    assert!(r.empty);
    assert_eq!((r.unknown_labels[0].label, r.unknown_labels[0].voxels), (999, n() as u64));
}

#[test]
fn geometry_mismatches_are_shape_errors() {
    let labels = anatomy();
    let masks = Masks::from_label_map(&volume(&labels, "total"), &LabelScheme::totalseg()).unwrap();
    // Against the CT: other dims, then other spacing.
    let other_dims = Geometry::new([12, 10, 9], ras_affine(), "ct9").unwrap();
    let ct9 = Volume::from_vec(vec![0.0; 12 * 10 * 9], other_dims, "ct9").unwrap();
    let config =
        PreprocessConfig { crop_foreground: false, depth: 4, height: 4, width: 4, ..Default::default() };
    let pre = preprocess(&ct9, &config).unwrap();
    let e = masks.slot_masks(&pre, &ModelConfig::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { .. }) && msg.contains("12x10x9") && msg.contains("12x10x8"), "{msg}");
    let mut a = ras_affine();
    a[2][2] = 2.5;
    let ct_sp = Volume::from_vec(vec![0.0; n()], Geometry::new(DIMS, a, "sp").unwrap(), "sp").unwrap();
    let e = masks.slot_masks(&preprocess(&ct_sp, &config).unwrap(), &ModelConfig::default()).unwrap_err();
    assert!(e.to_string().contains("geometry must match the CT"), "{e}");
    // Between sources.
    let mut m = masks.clone();
    let shifted = {
        let mut a = ras_affine();
        a[0][3] += 1.0;
        Volume::from_vec(vec![0.0; n()], Geometry::new(DIMS, a, "s").unwrap(), "shifted.nii.gz").unwrap()
    };
    let e = m.add_label_map(&shifted, &LabelScheme::totalseg_subtask("lung_nodules").unwrap()).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("shifted.nii.gz"), "{e}");
    assert!(e.to_string().contains("first mask source"), "{e}");
    assert_eq!(m.report(), masks.report(), "a failed add changes nothing");
}

#[test]
fn tables_naming_unknown_structures_are_refused() {
    let e = LabelScheme::from_json(
        "user.json",
        r#"{"table":[{"id":1,"name":"lung_nodules"}],
            "slots":[{"key":"lung","classes":["lungs_typo"]},
                     {"key":"large_airways","classes":["trachea"]},
                     {"key":"mediastinum","classes":["mediastinum"]},
                     {"key":"heart_great_vessels","classes":["heart"]},
                     {"key":"osseous","classes":["sternum"]},
                     {"key":"upper_abdomen","classes":["liver"]},
                     {"key":"lung_nodule","classes":["lung_nodules"]},
                     {"key":"pleural_effusion","classes":["pleural_effusion"]},
                     {"key":"kidney_cyst","classes":["kidney_cyst_left"]}]}"#,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("`lungs_typo`") && msg.contains("labels.slots `lung`") && msg.contains("user.json"),
        "{msg}"
    );
    // Organs and exclusions too.
    let e =
        LabelScheme::from_json("u", r#"{"organs":[{"key":"heart","classes":["heart"],"exclude":["hart"]}]}"#)
            .unwrap_err();
    assert!(e.to_string().contains("`hart`"), "{e}");
    // A class of the file's own table is known.
    let ok = LabelScheme::from_json(
        "own",
        r#"{"table":[{"id":1,"name":"my_heart"}],"organs":[{"key":"heart","classes":["my_heart"]}]}"#,
    )
    .unwrap();
    let mut l = vec![0u16; n()];
    fill(&mut l, [0, 0, 0], [2, 2, 2], 1);
    let m = Masks::from_label_map(&volume(&l, "own"), &ok).unwrap();
    assert!(m.report().organs.iter().find(|g| g.key == "heart").unwrap().present);
    // Through a file path, and a scheme built in code.
    let dir = fresh_dir("tables");
    let path = dir.join("bad.json");
    std::fs::write(&path, r#"{"organs":[{"key":"liver","classes":["livr"]}]}"#).unwrap();
    assert!(LabelScheme::from_arg(path.to_str().unwrap()).unwrap_err().to_string().contains("`livr`"));
    let mut bad = LabelScheme::totalseg();
    bad.labels.lobes[0].class = "lobe_x".into();
    let e = Masks::from_label_map(&volume(&l, "x"), &bad).unwrap_err();
    assert!(e.to_string().contains("`lobe_x`"), "{e}");
}

#[test]
fn label_scheme_names() {
    assert_eq!(LabelScheme::from_arg("totalseg").unwrap().labels.id_of("autochthon_left"), Some(86));
    assert_eq!(LabelScheme::from_arg("totalseg").unwrap().labels.id_of("lung_nodules"), Some(118));
    let s = LabelScheme::from_arg("totalseg:pleural_pericard_effusion").unwrap();
    assert_eq!(
        (s.name.as_str(), s.labels.id_of("pericardial_effusion")),
        ("totalseg:pleural_pericard_effusion", Some(3))
    );
    assert_eq!(LabelScheme::from_arg("totalseg:lung_nodules").unwrap().labels.id_of("lung_nodules"), Some(2));
    assert_eq!(LabelScheme::from_arg("radgenome").unwrap().labels.id_of("trachea and bronchie"), Some(10));
    let e = LabelScheme::from_arg("totalseg:lung_vessels").unwrap_err().to_string();
    assert!(e.contains("lung_nodules, pleural_pericard_effusion, kidney_cysts"), "{e}");
    assert!(matches!(LabelScheme::from_arg("/no/such/table.json"), Err(Error::Io { .. })));
}

#[test]
fn bad_mask_folders_and_files_name_the_file() {
    let scheme = LabelScheme::radgenome();
    let affine = ras_affine();
    // Empty folder; a folder without mask files.
    let dir = fresh_dir("empty");
    assert!(Masks::load(&dir, &scheme).unwrap_err().to_string().contains("no mask files"));
    std::fs::write(dir.join("readme.md"), "x").unwrap();
    std::fs::create_dir(dir.join("lung.nii.gz")).unwrap(); // a folder named like a mask
    assert!(Masks::load(&dir, &scheme).unwrap_err().to_string().contains("no mask files"));
    // Another geometry than the first file.
    let dir = fresh_dir("geometry");
    let ones = vec![1.0f32; n()];
    write_nifti(&dir.join("heart.nii.gz"), DIMS, &affine, &ones);
    write_nifti(&dir.join("lung.nii.gz"), [12, 10, 9], &affine, &vec![0.0; 12 * 10 * 9]);
    let e = Masks::load(&dir, &scheme).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("lung.nii.gz"), "{e}");
    // Two non-zero values; a non-integer value; a negative value.
    for (name, value, want) in [
        ("two", 2.0f32, "has 1 and 2"),
        ("half", 0.5, "label value 0.5 at voxel (3, 0, 0)"),
        ("neg", -1.0, "label value -1"),
    ] {
        let dir = fresh_dir(name);
        let mut v = vec![0.0f32; n()];
        v[1] = 1.0;
        v[3] = value;
        write_nifti(&dir.join("lung.nii"), DIMS, &affine, &v);
        let e = Masks::load(&dir, &scheme).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("lung.nii"), "{name}: {e}");
    }
    // 0/255 masks are fine.
    let dir = fresh_dir("u255");
    let mut v = vec![0.0f32; n()];
    v[5] = 255.0;
    write_nrrd(&dir.join("heart.nrrd"), DIMS, &affine, &v);
    let m = Masks::load(&dir, &scheme).unwrap();
    assert_eq!(m.report().slots.iter().find(|g| g.key == "heart_great_vessels").unwrap().found[0].voxels, 1);
    // The same class twice.
    write_nifti(&dir.join("heart.nii"), DIMS, &affine, &v);
    assert!(Masks::load(&dir, &scheme).unwrap_err().to_string().contains("two files give the class `heart`"));
    // Not a volume at all.
    let dir = fresh_dir("garbage");
    std::fs::write(dir.join("lung.nii.gz"), b"definitely not a NIfTI file").unwrap();
    let e = Masks::load(&dir, &scheme).unwrap_err().to_string();
    assert!(e.contains("lung.nii.gz"), "{e}");
    // A 4D file with 2 volumes is not 3D.
    let dir = fresh_dir("4d");
    let mut bytes = maskfiles::nifti_bytes(DIMS, &affine, &vec![0.0; n()]);
    bytes[40..42].copy_from_slice(&4i16.to_le_bytes());
    bytes[48..50].copy_from_slice(&2i16.to_le_bytes());
    bytes.extend(vec![0u8; 4 * n()]);
    std::fs::write(dir.join("lung.nii"), bytes).unwrap();
    assert!(Masks::load(&dir, &scheme).unwrap_err().to_string().contains("lung.nii"));
    // A missing path.
    assert!(matches!(Masks::load(Path::new("/no/such/masks"), &scheme), Err(Error::Io { .. })));
}

#[test]
fn a_slot_the_scheme_does_not_group_is_an_error() {
    let masks = Masks::from_label_map(&volume(&anatomy(), "total"), &LabelScheme::totalseg()).unwrap();
    let mut config = ModelConfig::default();
    config.segmentation[0].key = "lung_vessels".into();
    let e = masks.slot_masks(&identity_pre(), &config).unwrap_err();
    assert!(e.to_string().contains("`lung_vessels`"), "{e}");
}
