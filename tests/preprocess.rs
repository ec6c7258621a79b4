//! Preprocessing parity with the independent numpy/scipy/nibabel reference
//! (`scripts/volume/reference.py` → `tests/fixtures/volume/lung{1,2}_ref.json`) on the real
//! pyradiomics CTs and tumour masks, for four configurations (defaults; LPS orientation; the
//! AMOS-MM adaptive window; crop threshold −500 HU), plus orientation semantics on a synthetic
//! phantom stored in every axis order, mask geometry checks and the edge cases.
//!
//! Tolerances (the reference computes in f64, we in f32): sampled output voxels, per-slice
//! means and statistics 1e-5 absolute on [0, 1] values; windows 1e-3 HU; output affines 1e-6
//! mm; crop boxes, reorientations and every mask label exact.

#[path = "common/testdata.rs"]
mod testdata;

use medregion::preprocess::{labels_from_volume, preprocess, Interpolation, Orientation, PreprocessConfig};
use medregion::volume::{Affine, Coordinates, DType, Geometry, Volume, VoxelBuffer};
use medregion::Error;
use serde_json::Value;

const TOL: f64 = 1e-5;

fn reference(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn ct(name: &str) -> (Volume, Vec<u16>, Geometry) {
    let image = Volume::load(testdata::testdata("pyradiomics", &format!("data/{name}_image.nrrd"))).unwrap();
    let label = Volume::load(testdata::testdata("pyradiomics", &format!("data/{name}_label.nrrd"))).unwrap();
    (image, labels_from_volume(&label).unwrap(), label.geometry().clone())
}

#[test]
fn pyradiomics_parity_with_the_numpy_reference() {
    for name in ["lung1", "lung2"] {
        let r = reference(&format!("{name}_ref.json"));
        let (image, labels, label_geometry) = ct(name);
        for (variant, v) in r["variants"].as_object().unwrap() {
            let what = format!("{name}/{variant}");
            let config: PreprocessConfig = serde_json::from_value(v["config"].clone()).unwrap();
            let t = std::time::Instant::now();
            let p = preprocess(&image, &config).unwrap();
            let elapsed = t.elapsed();
            assert_eq!(p.shape, [32, 256, 256]);
            let ro = &v["reorientation"];
            assert_eq!(p.reorientation.source_axis.to_vec(), usizes(&ro["source_axis"]), "{what}");
            let flipped: Vec<bool> =
                ro["flipped"].as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect();
            assert_eq!(p.reorientation.flipped.to_vec(), flipped, "{what}");
            assert_eq!(
                (p.reorientation.from.as_str(), p.reorientation.to.as_str()),
                (ro["from"].as_str().unwrap(), ro["to"].as_str().unwrap())
            );
            for (mine, key) in [(p.crop_canonical, "crop_canonical"), (p.crop_stored, "crop_stored")] {
                assert_eq!(mine.start.to_vec(), usizes(&v[key]["start"]), "{what} {key}");
                assert_eq!(mine.end.to_vec(), usizes(&v[key]["end"]), "{what} {key}");
            }
            let w = v["window"].as_array().unwrap();
            assert!(
                (f64::from(p.window.lo) - f(&w[0])).abs() < 1e-3
                    && (f64::from(p.window.hi) - f(&w[1])).abs() < 1e-3,
                "{what}: window {:?} vs {w:?}",
                p.window
            );
            for (row, ref_row) in p.affine.iter().zip(v["affine"].as_array().unwrap()) {
                for (a, b) in row.iter().zip(ref_row.as_array().unwrap()) {
                    assert!(
                        (a - f(b)).abs() < 1e-6,
                        "{what}: output affine {:?} vs {}",
                        p.affine,
                        v["affine"]
                    );
                }
            }
            // Sampled voxels, per-slice means, statistics.
            let [_, hh, ww] = p.shape;
            let mut max_err = 0.0f64;
            for s in v["samples"].as_array().unwrap() {
                let s: Vec<f64> = s.as_array().unwrap().iter().map(f).collect();
                let got = p.data[(s[0] as usize * hh + s[1] as usize) * ww + s[2] as usize];
                max_err = max_err.max((f64::from(got) - s[3]).abs());
            }
            let plane = hh * ww;
            for (d, m) in v["slice_means"].as_array().unwrap().iter().enumerate() {
                let mean = p.data[d * plane..(d + 1) * plane].iter().map(|&x| f64::from(x)).sum::<f64>()
                    / plane as f64;
                max_err = max_err.max((mean - f(m)).abs());
            }
            let n = p.data.len() as f64;
            let mean = p.data.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
            let std = (p.data.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n).sqrt();
            let st = &v["stats"];
            for (a, b) in [(mean, &st["mean"]), (std, &st["std"])] {
                max_err = max_err.max((a - f(b)).abs());
            }
            let (lo, hi) = p.data.iter().fold((1.0f32, 0.0f32), |(l, h), &x| (l.min(x), h.max(x)));
            assert!(
                (f64::from(lo) - f(&st["min"])).abs() < TOL && (f64::from(hi) - f(&st["max"])).abs() < TOL
            );
            eprintln!("{what}: max abs error vs numpy/scipy {max_err:.2e}; preprocess {elapsed:.1?}");
            assert!(max_err < TOL, "{what}: max abs error {max_err:.3e} exceeds {TOL}");
            // The tumour mask through the same steps: counts, per-slice counts, samples, exact.
            let m = p.map_mask(&labels, &label_geometry).unwrap();
            let ones = m.iter().filter(|&&l| l == 1).count();
            assert_eq!(ones as u64, v["mask_counts"]["1"].as_u64().unwrap(), "{what}: mask voxels");
            let per_slice: Vec<usize> =
                m.chunks(plane).map(|s| s.iter().filter(|&&l| l > 0).count()).collect();
            assert_eq!(per_slice, usizes(&v["mask_slice_counts"]), "{what}");
            for s in v["mask_samples"].as_array().unwrap() {
                let s = usizes(s);
                assert_eq!(usize::from(m[(s[0] * hh + s[1]) * ww + s[2]]), s[3], "{what}: mask at {s:?}");
            }
        }
    }
}

/// A phantom with a bright block in the patient's right-anterior-superior octant, stored in
/// each of the 48 axis orders and directions: the block lands in the same output voxels every
/// time, at high W, high H and high D for RAS, and at low W, low H, high D for LPS.
#[test]
fn canonical_orientation_is_independent_of_storage_order() {
    let n = [6usize, 8, 10]; // patient extent in voxels along R, A, S
    let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let mut outputs = Vec::new();
    for target in [Orientation::Ras, Orientation::Lps] {
        let mut first: Option<Vec<f32>> = None;
        for perm in perms {
            for flips in 0..8u32 {
                // Stored axis i runs along patient axis perm[i], backwards when flip bit i is set.
                let dims = [n[perm[0]], n[perm[1]], n[perm[2]]];
                let mut affine: Affine = [[0.0; 4]; 4];
                affine[3][3] = 1.0;
                let mut data = vec![-1000i16; dims.iter().product()];
                for (i, &p) in perm.iter().enumerate() {
                    let back = flips & (1 << i) != 0;
                    affine[p][i] = if back { -1.5 } else { 1.5 };
                    affine[p][3] = if back { 1.5 * (dims[i] - 1) as f64 } else { 0.0 };
                }
                for z in 0..dims[2] {
                    for y in 0..dims[1] {
                        for x in 0..dims[0] {
                            let s = [x, y, z];
                            // Patient voxel index along R, A, S.
                            let mut pt = [0usize; 3];
                            for (i, &p) in perm.iter().enumerate() {
                                pt[p] = if flips & (1 << i) != 0 { dims[i] - 1 - s[i] } else { s[i] };
                            }
                            if pt[0] >= n[0] / 2 && pt[1] >= n[1] / 2 && pt[2] >= n[2] / 2 {
                                data[x + dims[0] * (y + dims[1] * z)] = 1000;
                            }
                        }
                    }
                }
                let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
                let mut buf = VoxelBuffer::dense(&bytes, DType::I16, dims, Coordinates::Ras);
                buf.affine = Some(affine);
                let v = Volume::from_buffer(&buf).unwrap();
                let config = PreprocessConfig {
                    orientation: target,
                    crop_foreground: false,
                    depth: n[2],
                    height: n[1],
                    width: n[0],
                    ..PreprocessConfig::default()
                };
                let p = preprocess(&v, &config).unwrap();
                match &first {
                    None => first = Some(p.data.clone()),
                    Some(f0) => assert_eq!(&p.data, f0, "{target:?} perm {perm:?} flips {flips:03b}"),
                }
            }
        }
        outputs.push(first.unwrap());
    }
    let at = |data: &Vec<f32>, d: usize, h: usize, w: usize| data[(d * n[1] + h) * n[0] + w];
    // RAS: bright at high w (right), high h (anterior), high d (superior).
    assert_eq!(
        (at(&outputs[0], 9, 7, 5), at(&outputs[0], 9, 0, 0), at(&outputs[0], 0, 7, 5)),
        (1.0, 0.0, 0.0)
    );
    // LPS: bright at low w (the right is at w = 0), low h (anterior at the top), high d.
    assert_eq!(
        (at(&outputs[1], 9, 0, 0), at(&outputs[1], 9, 7, 5), at(&outputs[1], 0, 0, 0)),
        (1.0, 0.0, 0.0)
    );
}

#[test]
fn masks_on_another_grid_are_refused_naming_both_geometries() {
    let data = vec![0u8; 2 * 4 * 4 * 4];
    let mut buf = VoxelBuffer::dense(&data, DType::I16, [4, 4, 4], Coordinates::Lps);
    buf.spacing = Some([1.0, 1.0, 2.0]);
    let v = Volume::from_buffer(&buf).unwrap();
    let p =
        preprocess(&v, &PreprocessConfig { depth: 2, height: 2, width: 2, ..Default::default() }).unwrap();
    let labels = vec![1u8; 64];
    assert_eq!(p.map_mask(&labels, v.geometry()).unwrap(), vec![1u8; 8]);
    let mut moved = v.geometry().clone();
    moved.affine[0][3] += 0.01; // 10 µm: beyond the 1 µm tolerance
    let e = p.map_mask(&labels, &moved).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, Error::Shape { .. }) && msg.contains("mask") && msg.contains("expected dims 4x4x4"),
        "{msg}"
    );
    let mut within = v.geometry().clone();
    within.affine[0][3] += 1e-4;
    assert!(p.map_mask(&labels, &within).is_ok());
    let mut tilted = v.geometry().clone();
    tilted.affine[1][0] = 1e-3;
    assert!(p.map_mask(&labels, &tilted).is_err());
    let other = Geometry::new([4, 4, 5], v.geometry().affine, "mask").unwrap();
    assert!(p.map_mask(&[0u8; 80], &other).unwrap_err().to_string().contains("4x4x5"));
    assert!(matches!(p.map_mask(&labels[..63], v.geometry()), Err(Error::Shape { .. })));
}

#[test]
fn no_foreground_means_no_crop_and_constant_volumes_are_fine() {
    let data: Vec<u8> = vec![-1024i16; 5 * 6 * 7].iter().flat_map(|v| v.to_ne_bytes()).collect();
    let mut buf = VoxelBuffer::dense(&data, DType::I16, [5, 6, 7], Coordinates::Lps);
    buf.spacing = Some([0.7, 0.7, 3.0]);
    let v = Volume::from_buffer(&buf).unwrap();
    for normalization in
        [medregion::preprocess::Normalization::HuWindow, medregion::preprocess::Normalization::AmosAdaptive]
    {
        let config = PreprocessConfig { normalization, depth: 4, height: 8, width: 8, ..Default::default() };
        let p = preprocess(&v, &config).unwrap();
        assert_eq!(p.crop_stored.size(), [5, 6, 7]);
        assert!(p.data.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn trilinear_majority_masks_and_nearest_volumes() {
    let (image, labels, geometry) = ct("lung1");
    let config = PreprocessConfig {
        mask_interpolation: Interpolation::Trilinear,
        volume_interpolation: Interpolation::Nearest,
        ..Default::default()
    };
    let p = preprocess(&image, &config).unwrap();
    let nearest = preprocess(&image, &PreprocessConfig::default()).unwrap();
    let m = p.map_mask(&labels, &geometry).unwrap();
    let mn = nearest.map_mask(&labels, &geometry).unwrap();
    let (a, b) = (m.iter().filter(|&&l| l == 1).count(), mn.iter().filter(|&&l| l == 1).count());
    // Majority and nearest-exact agree to within the tumour's boundary layer.
    assert!(a > 0 && (a as f64 - b as f64).abs() < 0.5 * b as f64, "majority {a} vs nearest {b}");
    // A nearest volume takes its values from the source voxels: every value is a windowed HU.
    assert!(p.data.iter().all(|&x| (x * 2000.0 - (x * 2000.0).round()).abs() < 1e-2));
}

#[test]
fn bad_configs_are_refused() {
    let data = vec![0u8; 2 * 8];
    let mut buf = VoxelBuffer::dense(&data, DType::I16, [2, 2, 2], Coordinates::Ras);
    buf.spacing = Some([1.0; 3]);
    let v = Volume::from_buffer(&buf).unwrap();
    for config in [
        PreprocessConfig { depth: 0, ..Default::default() },
        PreprocessConfig { hu_min: 10.0, hu_max: -10.0, ..Default::default() },
        PreprocessConfig { foreground_hu_threshold: f32::NAN, ..Default::default() },
        PreprocessConfig { amos_lower_percentile: 50.0, amos_upper_percentile: 40.0, ..Default::default() },
    ] {
        assert!(matches!(preprocess(&v, &config), Err(Error::InvalidArgument { .. })));
    }
}
