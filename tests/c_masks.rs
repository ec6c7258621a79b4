//! Drives `tests/c/masks_test.c` (the masks C API) with the shared C harness
//! (`tests/common/cbuild.rs`): compiled as C99 and as C++17 with `-Wall -Wextra -Werror
//! -pedantic`, linked against both `libmedregion.a` and `libmedregion.so` (built by
//! `cargo build --release` first), run on synthetic label maps and a RadGenome-style mask
//! folder written here, and again under valgrind memcheck where it is installed.

#[path = "common/cbuild.rs"]
mod cbuild;
#[path = "common/maskfiles.rs"]
mod maskfiles;

use std::path::PathBuf;

use cbuild::{check_all, root};
use maskfiles::{fresh_dir, write_nifti, Affine};

const DIMS: [usize; 3] = [8, 6, 4];

fn affine() -> Affine {
    [[-0.8, 0.0, 0.0, 10.0], [0.0, -0.8, 0.0, 5.0], [0.0, 0.0, 2.5, -20.0], [0.0, 0.0, 0.0, 1.0]]
}

/// labels.nii.gz (TotalSegmentator ids: right upper lobe, heart, an unknown 999),
/// nodules.nii.gz (lung_nodules subtask: 1 lung, 2 nodule), other.nii.gz (another grid),
/// radgenome/{lung,heart,trachea and bronchie}.nii.gz, and an empty folder.
fn inputs(name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    let n: usize = DIMS.iter().product();
    let mut labels = vec![0.0f32; n];
    let mut nodules = vec![0.0f32; n];
    for (i, (l, m)) in labels.iter_mut().zip(&mut nodules).enumerate() {
        let x = i % DIMS[0];
        *l = match x {
            0..=2 => 12.0,
            4 => 51.0,
            _ => 0.0,
        };
        *m = if x <= 2 { 1.0 } else { 0.0 };
    }
    labels[n - 1] = 999.0;
    nodules[1] = 2.0;
    write_nifti(&dir.join("labels.nii.gz"), DIMS, &affine(), &labels);
    write_nifti(&dir.join("nodules.nii.gz"), DIMS, &affine(), &nodules);
    write_nifti(&dir.join("other.nii.gz"), [8, 6, 5], &affine(), &vec![0.0; 8 * 6 * 5]);
    let rg = dir.join("radgenome");
    std::fs::create_dir(&rg).unwrap();
    for (class, x) in [("lung", 0), ("heart", 4), ("trachea and bronchie", 6)] {
        let mask: Vec<f32> = (0..n).map(|i| if i % DIMS[0] == x { 1.0 } else { 0.0 }).collect();
        write_nifti(&rg.join(format!("{class}.nii.gz")), DIMS, &affine(), &mask);
    }
    std::fs::create_dir(dir.join("empty")).unwrap();
    dir
}

#[test]
fn masks_c99() {
    let dir = inputs("c99");
    check_all("cc", "c99", &[root().join("tests/c/masks_test.c")], "masks", &[&dir]);
}

#[test]
fn masks_as_cpp17() {
    let dir = inputs("cpp17");
    check_all("c++", "c++17", &[root().join("tests/c/masks_test.c")], "masks", &[&dir]);
}
