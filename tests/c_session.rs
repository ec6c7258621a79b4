//! Sessions and the tokenizer from C (`tests/c/session_test.c`): a tiny synthetic package made
//! by `medregion convert --synthetic tiny`; compiled as C99 and as C++17 (`-Wall -Wextra -Werror
//! -pedantic`), against both libraries, and under valgrind (zero errors, zero definite leaks).

use std::path::PathBuf;
use std::process::Command;

#[path = "common/cbuild.rs"]
mod cbuild;
use cbuild::{check_all, root};

fn package() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-session");
    std::fs::create_dir_all(&dir).unwrap();
    let package = dir.join("tiny.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["convert", "--synthetic", "tiny", "--seed", "3", "--quant", "llm=q8_0", "--output"])
        .arg(&package)
        .output()
        .expect("run medregion convert");
    assert!(out.status.success(), "convert failed: {}", String::from_utf8_lossy(&out.stderr));
    package
}

#[test]
fn session_api_from_c() {
    let p = package();
    check_all("cc", "c99", &[root().join("tests/c/session_test.c")], "session", &[&p]);
    check_all("c++", "c++17", &[root().join("tests/c/session_test.c")], "session", &[&p]);
}
