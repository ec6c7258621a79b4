//! Shared harness for the C/C++ ABI tests: compile a C or C++ source against the committed
//! header, link it against `libmedregion.a` or `libmedregion.so`, run it (optionally under
//! valgrind memcheck). Included by each C test driver with
//! `#[path = "common/cbuild.rs"] mod cbuild;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`, where `cargo build` put `libmedregion.{a,so}`. `cargo test` alone does
/// not build the static and shared libraries, hence the README's test command
/// `cargo build --release && cargo test --release`; a library older than any source file is
/// refused rather than silently tested (`MEDREGION_ALLOW_STALE_LIB=1` skips that check, for
/// working on tests while sources change under you).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let newest_source = match std::env::var_os("MEDREGION_ALLOW_STALE_LIB") {
        Some(_) => None,
        // The CLI's sources (src/bin) are not part of the library: cargo does not rebuild it for them.
        None => newest_mtime(&root().join("src"), &root().join("src/bin")),
    };
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

/// The newest modification time of the files below `dir`, not looking into `skip`.
fn newest_mtime(dir: &Path, skip: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        let t =
            if path.is_dir() { newest_mtime(&path, skip) } else { entry.metadata().ok()?.modified().ok() };
        newest = newest.max(t);
    }
    newest
}

#[derive(Clone, Copy, Debug)]
pub enum Link {
    Static,
    Shared,
}

/// Compiles `sources` with `-std=<std> -Wall -Wextra -Werror -pedantic` into a binary named `name`.
pub fn compile(compiler: &str, std: &str, sources: &[PathBuf], link: Link, name: &str) -> PathBuf {
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

/// Runs `bin args...`, asserting success; returns stdout + stderr.
pub fn run(bin: &Path, args: &[&Path]) -> String {
    let output = Command::new(bin).args(args).output().expect("run test binary");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{} failed:\n{text}", bin.display());
    text
}

/// Whether valgrind can be used; in CI (`CI` set) its absence is a failure.
pub fn have_valgrind() -> bool {
    let ok = Command::new("valgrind").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("valgrind is required in CI (install it: apt-get install valgrind)");
    }
    ok
}

/// Runs `bin args...` under memcheck: zero errors and zero definite leaks required.
pub fn run_valgrind(bin: &Path, args: &[&Path]) {
    let output = Command::new("valgrind")
        .args([
            "--error-exitcode=97",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
        ])
        .arg(bin)
        .args(args)
        .output()
        .expect("run valgrind");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "valgrind reported errors for {}:\n{text}", bin.display());
    assert!(text.contains("ERROR SUMMARY: 0 errors"), "valgrind summary not clean:\n{text}");
    if let Some(line) = text.lines().find(|l| l.contains("definitely lost:")) {
        assert!(line.contains("definitely lost: 0 bytes"), "definite leak in {}: {line}", bin.display());
    }
}

/// Compiles `sources` against both libraries, runs each binary with `args`, and under valgrind
/// where available.
pub fn check_all(compiler: &str, std: &str, sources: &[PathBuf], stem: &str, args: &[&Path]) {
    let valgrind = have_valgrind();
    for link in [Link::Static, Link::Shared] {
        let name = format!("{stem}-{std}-{link:?}").to_lowercase().replace('+', "p");
        let bin = compile(compiler, std, sources, link, &name);
        run(&bin, args);
        if valgrind {
            run_valgrind(&bin, args);
        }
    }
}
