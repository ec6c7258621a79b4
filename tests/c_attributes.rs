//! Drives `tests/c/attributes_test.c` (the attributes C API, no model loaded) with the shared C
//! harness (`tests/common/cbuild.rs`): compiled as C99 and as C++17 with `-Wall -Wextra -Werror
//! -pedantic`, linked against both `libmedregion.a` and `libmedregion.so` (built by
//! `cargo build --release` first), run on the real pyradiomics CT and tumour masks (fetched on
//! first use), and again under valgrind memcheck where it is installed (required when `CI` is
//! set): zero errors and zero definite leaks.

#[path = "common/cbuild.rs"]
mod cbuild;
#[path = "common/testdata.rs"]
mod testdata;

use cbuild::{check_all, root};

fn inputs() -> [std::path::PathBuf; 3] {
    [
        testdata::testdata("pyradiomics", "data/lung1_image.nrrd"),
        testdata::testdata("pyradiomics", "data/lung1_label.nrrd"),
        testdata::testdata("pyradiomics", "data/lung2_label.nrrd"),
    ]
}

#[test]
fn attributes_c99() {
    let [a, b, c] = inputs();
    check_all("cc", "c99", &[root().join("tests/c/attributes_test.c")], "attributes", &[&a, &b, &c]);
}

#[test]
fn attributes_as_cpp17() {
    let [a, b, c] = inputs();
    check_all("c++", "c++17", &[root().join("tests/c/attributes_test.c")], "attributes", &[&a, &b, &c]);
}
