//! Writes small synthetic label maps and binary masks as NIfTI-1 (`.nii` / `.nii.gz`, float32
//! voxels, sform = the RAS+ affine) and NRRD (`space: RAS`) files, for the masks tests.
//! Included with `#[path = "common/maskfiles.rs"] mod maskfiles;`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// Voxel → RAS+ mm, row-major.
pub type Affine = [[f64; 4]; 4];

/// A fresh, empty directory under the test binary's temp dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("masks-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// NIfTI-1 bytes (header field by field from nifti1.h): float32 voxels, x fastest, sform.
pub fn nifti_bytes(dims: [usize; 3], affine: &Affine, data: &[f32]) -> Vec<u8> {
    assert_eq!(data.len(), dims.iter().product::<usize>());
    let mut h: Vec<u8> = Vec::with_capacity(352 + 4 * data.len());
    h.extend(348i32.to_le_bytes());
    h.extend([0u8; 10 + 18]); // data_type, db_name
    h.extend(0i32.to_le_bytes()); // extents
    h.extend(0i16.to_le_bytes()); // session_error
    h.extend([b'r', 0]); // regular, dim_info
    for d in [3, dims[0] as i16, dims[1] as i16, dims[2] as i16, 1, 1, 1, 1] {
        h.extend(d.to_le_bytes());
    }
    h.extend([0u8; 12]); // intent_p1..3
    h.extend(0i16.to_le_bytes()); // intent_code
    h.extend(16i16.to_le_bytes()); // datatype: float32
    h.extend(32i16.to_le_bytes()); // bitpix
    h.extend(0i16.to_le_bytes()); // slice_start
    let col = |c: usize| (affine[0][c].powi(2) + affine[1][c].powi(2) + affine[2][c].powi(2)).sqrt() as f32;
    for p in [1.0, col(0), col(1), col(2), 1.0, 0.0, 0.0, 0.0] {
        h.extend(p.to_le_bytes());
    }
    h.extend(352f32.to_le_bytes()); // vox_offset
    h.extend(0f32.to_le_bytes()); // scl_slope (0: no scaling)
    h.extend(0f32.to_le_bytes()); // scl_inter
    h.extend(0i16.to_le_bytes()); // slice_end
    h.extend([0u8, 2]); // slice_code, xyzt_units (mm)
    h.extend([0u8; 16 + 8]); // cal_max, cal_min, slice_duration, toffset, glmax, glmin
    h.extend([0u8; 80 + 24]); // descrip, aux_file
    h.extend(0i16.to_le_bytes()); // qform_code
    h.extend(1i16.to_le_bytes()); // sform_code
    h.extend([0u8; 24]); // quatern_b..qoffset_z
    for row in affine.iter().take(3) {
        for v in row {
            h.extend((*v as f32).to_le_bytes());
        }
    }
    h.extend([0u8; 16]); // intent_name
    h.extend(*b"n+1\0");
    assert_eq!(h.len(), 348);
    h.extend([0u8; 4]); // no extensions
    for v in data {
        h.extend(v.to_le_bytes());
    }
    h
}

/// Writes `data` as NIfTI (gzip-compressed when `path` ends with `.gz`).
pub fn write_nifti(path: &Path, dims: [usize; 3], affine: &Affine, data: &[f32]) {
    let bytes = nifti_bytes(dims, affine, data);
    let bytes = if path.to_string_lossy().ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap()
    } else {
        bytes
    };
    std::fs::write(path, bytes).unwrap();
}

/// Writes `data` as an NRRD file with attached raw float data in RAS space.
pub fn write_nrrd(path: &Path, dims: [usize; 3], affine: &Affine, data: &[f32]) {
    let a = affine;
    let dir = |c: usize| format!("({},{},{})", a[0][c], a[1][c], a[2][c]);
    let mut bytes = format!(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: {} {} {}\nspace: RAS\nspace directions: {} {} {}\n\
         space origin: ({},{},{})\nendian: little\nencoding: raw\n\n",
        dims[0],
        dims[1],
        dims[2],
        dir(0),
        dir(1),
        dir(2),
        a[0][3],
        a[1][3],
        a[2][3]
    )
    .into_bytes();
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// u16 labels as f32 voxels.
pub fn as_f32(labels: &[u16]) -> Vec<f32> {
    labels.iter().map(|&l| f32::from(l)).collect()
}
