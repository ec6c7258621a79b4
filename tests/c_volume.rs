//! Drives `tests/c/volume_test.c` (the volume C API) the way `tests/c_abi.rs` drives the core
//! ABI tests: compiled as C99 with `-Wall -Wextra -Werror -pedantic`, linked against both
//! `libmedregion.a` and `libmedregion.so` (built by `cargo build --release` first; a library
//! older than the sources is refused), run on the committed volume fixtures, and run again
//! under valgrind memcheck where it is installed (required when `CI` is set): zero errors and
//! zero definite leaks.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

/// `target/<profile>`, holding fresh `libmedregion.{a,so}`.
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

fn compile(shared: bool) -> PathBuf {
    let name = if shared { "volume-test-shared" } else { "volume-test-static" };
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-volume").join(name);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let lib = lib_dir();
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-I"])
        .arg(root().join("include"))
        .arg(root().join("tests/c/volume_test.c"))
        .arg("-o")
        .arg(&out);
    if shared {
        cmd.arg("-L").arg(&lib).arg("-lmedregion").arg(format!("-Wl,-rpath,{}", lib.display()));
    } else {
        cmd.arg(lib.join("libmedregion.a")).args(["-lpthread", "-ldl", "-lm"]);
    }
    cmd.arg("-lm");
    let output = cmd.output().expect("run cc");
    assert!(
        output.status.success(),
        "compiling {name} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn fixtures() -> [PathBuf; 2] {
    let dir = root().join("tests/fixtures/volume");
    [dir.join("lung1_small.nrrd"), dir.join("lung1_small_lps_sform.nii.gz")]
}

fn have_valgrind() -> bool {
    let ok = Command::new("valgrind").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("valgrind is required in CI (install it: apt-get install valgrind)");
    }
    ok
}

#[test]
fn volume_c_api_static_and_shared_under_valgrind() {
    let valgrind = have_valgrind();
    for shared in [false, true] {
        let bin = compile(shared);
        let output = Command::new(&bin).args(fixtures()).output().expect("run volume_test");
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success() && text.contains("volume C test: ok"),
            "{} failed:\n{text}",
            bin.display()
        );
        if valgrind {
            let output = Command::new("valgrind")
                .args([
                    "--error-exitcode=97",
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite",
                    "--show-leak-kinds=definite",
                ])
                .arg(&bin)
                .args(fixtures())
                .output()
                .expect("run valgrind");
            let log = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "valgrind reported errors for {}:\n{log}", bin.display());
            assert!(log.contains("ERROR SUMMARY: 0 errors"), "valgrind summary not clean:\n{log}");
        }
    }
}
