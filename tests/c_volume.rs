//! Drives `tests/c/volume_test.c` (the volume C API) with the shared C harness
//! (`tests/common/cbuild.rs`): compiled as C99 and as C++17 with `-Wall -Wextra -Werror
//! -pedantic`, linked against both `libmedregion.a` and `libmedregion.so` (built by
//! `cargo build --release` first), run on the committed volume fixtures, and run again under
//! valgrind memcheck where it is installed (required when `CI` is set): zero errors and zero
//! definite leaks.

#[path = "common/cbuild.rs"]
mod cbuild;

use cbuild::{check_all, root};

fn fixtures() -> [std::path::PathBuf; 2] {
    let dir = root().join("tests/fixtures/volume");
    [dir.join("lung1_small.nrrd"), dir.join("lung1_small_lps_sform.nii.gz")]
}

#[test]
fn volume_c99() {
    let [a, b] = fixtures();
    check_all("cc", "c99", &[root().join("tests/c/volume_test.c")], "volume", &[&a, &b]);
}

#[test]
fn volume_as_cpp17() {
    let [a, b] = fixtures();
    check_all("c++", "c++17", &[root().join("tests/c/volume_test.c")], "volume", &[&a, &b]);
}
