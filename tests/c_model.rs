//! The model API from C (`tests/c/model_test.c`): a tiny synthetic package made by
//! `medregion convert --synthetic tiny`, loaded from a file and from memory, described, and
//! abused; as C99 against both libraries, and under valgrind.

use std::path::PathBuf;
use std::process::Command;

#[path = "common/cbuild.rs"]
mod cbuild;
use cbuild::{check_all, root};

#[test]
fn model_api_from_c() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-model");
    std::fs::create_dir_all(&dir).unwrap();
    let package = dir.join("tiny.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["convert", "--synthetic", "tiny", "--seed", "7", "--output"])
        .arg(&package)
        .output()
        .expect("run medregion convert");
    assert!(out.status.success(), "convert failed: {}", String::from_utf8_lossy(&out.stderr));
    let corrupt = dir.join("corrupt.safetensors");
    let mut bytes = std::fs::read(&package).unwrap();
    bytes[8..40].copy_from_slice(b"{\"not\": \"a medregion header\"    ");
    std::fs::write(&corrupt, &bytes).unwrap();
    check_all("cc", "c99", &[root().join("tests/c/model_test.c")], "model", &[&package, &corrupt]);
    check_all("c++", "c++17", &[root().join("tests/c/model_test.cpp")], "model", &[&package]);
}
