//! Drives the C and C++ ABI tests from `cargo test`: compiles `tests/c/abi_test.c` as C99 and
//! C11 and `tests/c/abi_test.cpp` as C++17 (all with `-Wall -Wextra -Werror -pedantic`), links
//! each against BOTH `libmedregion.a` and `libmedregion.so`, runs them, and, where valgrind is
//! installed (always in CI: `CI` set makes its absence a failure), runs each binary under
//! memcheck with `--leak-check=full`, requiring zero errors and zero definite leaks. The README's
//! minimal C example and the C++ example are compiled and run the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`, where `cargo build` put `libmedregion.{a,so}`. `cargo test` alone does
/// not build the static and shared libraries, hence the README's test command
/// `cargo build --release && cargo test --release`; a library older than any source file is
/// refused rather than silently tested.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let newest_source = newest_mtime(&root().join("src"));
    for lib in ["libmedregion.a", "libmedregion.so"] {
        let path = dir.join(lib);
        let built = path.metadata().and_then(|m| m.modified()).unwrap_or_else(|_| {
            panic!("{} not found: run `cargo build --release` before `cargo test --release`", path.display())
        });
        assert!(
            newest_source.is_none_or(|src| built >= src),
            "{} is older than the sources: run `cargo build --release` first",
            path.display()
        );
    }
    dir
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() { newest_mtime(&path) } else { entry.metadata().ok()?.modified().ok() };
        newest = newest.max(t);
    }
    newest
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Static,
    Shared,
}

fn compile(compiler: &str, std: &str, sources: &[PathBuf], link: Link, name: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-abi").join(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(root().join("bindings/cpp"))
        .args(sources)
        .arg("-o")
        .arg(&out);
    match link {
        Link::Static => {
            cmd.arg(lib.join("libmedregion.a")).args(["-lpthread", "-ldl", "-lm"]);
        }
        Link::Shared => {
            cmd.arg("-L").arg(&lib).arg("-lmedregion").arg(format!("-Wl,-rpath,{}", lib.display()));
        }
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "compiling {name} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn run(bin: &Path) -> String {
    let output = Command::new(bin).output().expect("run test binary");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} failed:\n{text}", bin.display());
    text
}

fn have_valgrind() -> bool {
    let ok = Command::new("valgrind").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("valgrind is required in CI (install it: apt-get install valgrind)");
    }
    ok
}

fn run_valgrind(bin: &Path) {
    let output = Command::new("valgrind")
        .args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ])
        .arg(bin)
        .output()
        .expect("run valgrind");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "valgrind reported errors for {}:\n{text}", bin.display());
    assert!(text.contains("ERROR SUMMARY: 0 errors"), "valgrind summary not clean:\n{text}");
    let definitely_lost = text.lines().find(|l| l.contains("definitely lost:"));
    if let Some(line) = definitely_lost {
        assert!(line.contains("definitely lost: 0 bytes"), "definite leak in {}: {line}", bin.display());
    }
}

fn check_all(compiler: &str, std: &str, sources: &[PathBuf], stem: &str) {
    let valgrind = have_valgrind();
    for link in [Link::Static, Link::Shared] {
        let name = format!("{stem}-{std}-{link:?}").to_lowercase().replace('+', "p");
        let bin = compile(compiler, std, sources, link, &name);
        run(&bin);
        if valgrind {
            run_valgrind(&bin);
        }
    }
}

#[test]
fn c99() {
    check_all("cc", "c99", &[root().join("tests/c/abi_test.c")], "abi");
}

#[test]
fn c11() {
    check_all("cc", "c11", &[root().join("tests/c/abi_test.c")], "abi");
}

#[test]
fn cpp17() {
    check_all("c++", "c++17", &[root().join("tests/c/abi_test.cpp")], "abi");
}

#[test]
fn cpp_example() {
    check_all("c++", "c++17", &[root().join("bindings/cpp/example.cpp")], "cpp-example");
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
    check_all("cc", "c99", &[root().join("examples/c/minimal.c")], "minimal");
    let out = run(&compile("cc", "c99", &[root().join("examples/c/minimal.c")], Link::Shared, "minimal-out"));
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
