//! Drives the C and C++ ABI tests from `cargo test`: compiles `tests/c/abi_test.c` as C99 and
//! C11 and `tests/c/abi_test.cpp` as C++17 (all with `-Wall -Wextra -Werror -pedantic`), links
//! each against BOTH `libmedregion.a` and `libmedregion.so`, runs them, and, where valgrind is
//! installed (always in CI: `CI` set makes its absence a failure), runs each binary under
//! memcheck with `--leak-check=full`, requiring zero errors and zero definite leaks. The README's
//! minimal C example and the C++ example are compiled and run the same way.

use std::process::Command;

#[path = "common/cbuild.rs"]
mod cbuild;
use cbuild::{check_all, compile, lib_dir, root, run, Link};

#[test]
fn c99() {
    check_all("cc", "c99", &[root().join("tests/c/abi_test.c")], "abi", &[]);
}

#[test]
fn c11() {
    check_all("cc", "c11", &[root().join("tests/c/abi_test.c")], "abi", &[]);
}

#[test]
fn cpp17() {
    check_all("c++", "c++17", &[root().join("tests/c/abi_test.cpp")], "abi", &[]);
}

#[test]
fn cpp_example() {
    check_all("c++", "c++17", &[root().join("bindings/cpp/example.cpp")], "cpp-example", &[]);
}

/// The README shows `examples/c/minimal.c` verbatim, and it compiles and runs.
#[test]
fn readme_minimal_example() {
    let example = std::fs::read_to_string(root().join("examples/c/minimal.c")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```c\n{example}```")),
        "README.md must contain examples/c/minimal.c verbatim in a ```c block"
    );
    check_all("cc", "c99", &[root().join("examples/c/minimal.c")], "minimal", &[]);
    let out =
        run(&compile("cc", "c99", &[root().join("examples/c/minimal.c")], Link::Shared, "minimal-out"), &[]);
    assert!(out.contains("medregion ") && out.contains("cpu 0:"), "unexpected output:\n{out}");
}

/// The shared library exports the `mr_*` API and nothing else.
#[test]
fn shared_library_exports_only_mr_symbols() {
    let so = lib_dir().join("libmedregion.so");
    let output = Command::new("nm").args(["-D", "--defined-only"]).arg(&so).output().expect("run nm");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (_addr, kind, name) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if kind == "T" || kind == "D" || kind == "B" || kind == "R" {
            names.push(name.to_string());
        }
    }
    assert!(names.iter().any(|n| n == "mr_init"), "mr_init not exported: {names:?}");
    let foreign: Vec<_> = names.iter().filter(|n| !n.starts_with("mr_")).collect();
    assert!(foreign.is_empty(), "non-mr_ symbols exported: {foreign:?}");
}
