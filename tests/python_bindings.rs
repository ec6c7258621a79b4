//! Runs the Python (ctypes) binding tests in `bindings/python/tests` against the freshly built
//! `libmedregion.so`, with the standard library's unittest (no extra packages needed), on a tiny
//! synthetic package (`medregion convert --synthetic tiny`) and the synthetic chest phantom
//! (`medregion phantom`); no test may be skipped.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_bindings() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().and_then(|d| d.parent()).unwrap().join("libmedregion.so");
    assert!(lib.exists(), "{} missing: run `cargo build --release` first", lib.display());
    let package = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-tiny.safetensors");
    let made = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["convert", "--synthetic", "tiny", "--seed", "3", "--output"])
        .arg(&package)
        .output()
        .expect("run medregion convert");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let phantom = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-phantom");
    let made = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["phantom", "--out"])
        .arg(&phantom)
        .output()
        .expect("run medregion phantom");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(root.join("bindings/python/tests"))
        .env("PYTHONPATH", root.join("bindings/python"))
        .env("MEDREGION_LIBRARY", &lib)
        .env("MEDREGION_TEST_PACKAGE", &package)
        .env("MEDREGION_TEST_CT", phantom.join("ct.nrrd"))
        .env("MEDREGION_TEST_MASKS", phantom.join("labels.nrrd"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "python binding tests failed:\n{text}");
    assert!(text.contains("OK") && !text.contains("skipped"), "{text}");
}
