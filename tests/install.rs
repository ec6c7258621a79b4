//! `scripts/install.sh` into a fresh temp prefix (`--no-build`: the libraries and the CLI come
//! from `cargo build --release`, found like the C ABI tests find them), then the installed
//! package used the three ways the README documents:
//!
//! * pkg-config: `examples/c/minimal.c` compiled with `pkg-config --cflags --libs medregion`
//!   and run with `LD_LIBRARY_PATH=<prefix>/lib`; statically with `pkg-config --static --libs`,
//!   its `-lmedregion` replaced by `<libdir>/libmedregion.a` (the explicit archive: `-Bstatic`
//!   would also make glibc's `-lm` static, which does not link into a dynamic executable);
//! * CMake: `examples/cmake` (`find_package(medregion CONFIG REQUIRED)`) configured with
//!   `-DCMAKE_PREFIX_PATH=<prefix>`, against the shared and the static target, then a moved copy
//!   of the prefix (the config is relocatable), and a request for an incompatible version;
//! * the installed headers are byte-equal to the repository's.
//!
//! cmake comes from PATH or the pip package `cmake` (`python3 -m pip install cmake`); without
//! it the CMake part is skipped with a note, except in CI (`CI` set), where that is a failure.

#[path = "common/cbuild.rs"]
mod cbuild;

use std::path::{Path, PathBuf};
use std::process::Command;

fn version_line() -> String {
    format!("medregion {}", env!("CARGO_PKG_VERSION"))
}

/// Runs `cmd`, asserting success; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("install-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Installs into a fresh prefix named `name`; returns the prefix.
fn install(name: &str) -> PathBuf {
    let lib = cbuild::lib_dir();
    assert!(lib.join("medregion").is_file(), "{} missing: run `cargo build --release` first", lib.display());
    let target_dir = lib.parent().expect("target dir");
    let prefix = fresh_dir(name).join("prefix");
    let out = ok(Command::new("bash")
        .arg(cbuild::root().join("scripts/install.sh"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-build")
        .env("CARGO_TARGET_DIR", target_dir));
    assert!(out.contains(&format!("installed {}", version_line())), "install.sh said: {out}");
    prefix
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = ok(Command::new("pkg-config").env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")).args(args));
    out.split_whitespace().map(str::to_string).collect()
}

fn needed(bin: &Path) -> String {
    ok(Command::new("readelf").arg("-d").arg(bin))
}

#[test]
fn install_layout_and_headers() {
    let prefix = install("layout");
    for f in [
        "lib/libmedregion.so",
        "lib/libmedregion.a",
        "bin/medregion",
        "lib/cmake/medregion/medregionConfig.cmake",
        "lib/cmake/medregion/medregionConfigVersion.cmake",
        "lib/pkgconfig/medregion.pc",
    ] {
        assert!(prefix.join(f).is_file(), "{f} not installed under {}", prefix.display());
    }
    for (installed, source) in [
        ("include/medregion.h", "include/medregion.h"),
        ("include/medregion.hpp", "bindings/cpp/medregion.hpp"),
    ] {
        let a = std::fs::read(prefix.join(installed)).unwrap();
        let b = std::fs::read(cbuild::root().join(source)).unwrap();
        assert!(a == b, "installed {installed} differs from {source}");
    }
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/medregion.pc")).unwrap();
    assert!(pc.contains(&format!("Version: {}\n", env!("CARGO_PKG_VERSION"))), "{pc}");
    assert!(pc.contains(&format!("prefix={}\n", prefix.display())), "{pc}");
    let cfg =
        std::fs::read_to_string(prefix.join("lib/cmake/medregion/medregionConfigVersion.cmake")).unwrap();
    assert!(cfg.contains(&format!("set(PACKAGE_VERSION \"{}\")", env!("CARGO_PKG_VERSION"))), "{cfg}");
    assert!(!cfg.contains('@'), "unsubstituted template variable:\n{cfg}");
    // The installed CLI runs and reports the same version.
    let v = ok(Command::new(prefix.join("bin/medregion")).arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "medregion --version: {v}");

    // Missing build outputs: a clear error, nothing half-installed.
    let empty = fresh_dir("empty-target");
    let bad_prefix = fresh_dir("bad").join("prefix");
    let out = Command::new("bash")
        .arg(cbuild::root().join("scripts/install.sh"))
        .args(["--no-build", "--prefix"])
        .arg(&bad_prefix)
        .env("CARGO_TARGET_DIR", &empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "install.sh succeeded without build outputs");
    assert!(err.contains("build outputs missing") && err.contains("libmedregion.so"), "stderr: {err}");
    assert!(!bad_prefix.join("lib").exists(), "install.sh installed something despite the error");
    let out =
        Command::new("bash").arg(cbuild::root().join("scripts/install.sh")).arg("--bogus").output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown argument"));
}

#[test]
fn pkg_config_shared_and_static() {
    let prefix = install("pkgconfig");
    let dir = prefix.parent().unwrap().to_path_buf();
    let src = cbuild::root().join("examples/c/minimal.c");

    let shared = dir.join("minimal-shared");
    let flags = pkg_config(&prefix, &["--cflags", "--libs", "medregion"]);
    assert!(flags.contains(&"-lmedregion".to_string()), "{flags:?}");
    ok(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror"])
        .arg(&src)
        .args(&flags)
        .arg("-o")
        .arg(&shared));
    let out = ok(Command::new(&shared).env("LD_LIBRARY_PATH", prefix.join("lib")));
    assert!(out.starts_with(&format!("{}\n", version_line())), "output: {out}");
    assert!(needed(&shared).contains("libmedregion.so"), "not linked against the shared library");

    // Static: `pkg-config --static --libs` with the archive named explicitly.
    let libdir = pkg_config(&prefix, &["--variable=libdir", "medregion"]).concat();
    let mut libs = pkg_config(&prefix, &["--static", "--libs", "medregion"]);
    for l in ["-lpthread", "-ldl", "-lm"] {
        assert!(libs.iter().any(|x| x == l), "--static --libs lacks {l}: {libs:?}");
    }
    let at = libs.iter().position(|x| x == "-lmedregion").expect("-lmedregion");
    libs[at] = format!("{libdir}/libmedregion.a");
    let cflags = pkg_config(&prefix, &["--cflags", "medregion"]);
    let stat = dir.join("minimal-static");
    ok(Command::new("cc")
        .args(["-std=c99", "-Wall", "-Werror"])
        .arg(&src)
        .args(&cflags)
        .args(&libs)
        .arg("-o")
        .arg(&stat));
    assert!(!needed(&stat).contains("libmedregion"), "static binary still needs libmedregion.so");
    let out = ok(Command::new(&stat).env_remove("LD_LIBRARY_PATH"));
    assert!(out.starts_with(&format!("{}\n", version_line())), "output: {out}");
}

/// cmake on PATH, else the pip package's binary; None (a note) when absent outside CI.
fn find_cmake() -> Option<PathBuf> {
    let works =
        |p: &Path| Command::new(p).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if works(Path::new("cmake")) {
        return Some(PathBuf::from("cmake"));
    }
    let pip = Command::new("python3").args(["-c", "import cmake; print(cmake.CMAKE_BIN_DIR)"]).output();
    if let Ok(o) = pip {
        let bin = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("cmake");
        if o.status.success() && works(&bin) {
            return Some(bin);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("cmake is required in CI (python3 -m pip install -r scripts/requirements-ci.txt)");
    }
    eprintln!(
        "note: cmake not found (PATH or `python3 -m pip install cmake`): skipping the CMake consumer check"
    );
    None
}

/// Configures and builds examples/cmake against `prefix`; returns the configure+build outcome.
fn cmake_build(cmake: &Path, prefix: &Path, build: &Path, extra: &[&str]) -> std::process::Output {
    let out = Command::new(cmake)
        .arg("-S")
        .arg(cbuild::root().join("examples/cmake"))
        .arg("-B")
        .arg(build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .args(extra)
        .output()
        .expect("run cmake");
    if !out.status.success() {
        return out;
    }
    Command::new(cmake).arg("--build").arg(build).output().expect("run cmake --build")
}

#[test]
fn cmake_find_package() {
    let Some(cmake) = find_cmake() else { return };
    let prefix = install("cmake");
    let dir = prefix.parent().unwrap().to_path_buf();
    for (name, extra) in [("shared", "-DMEDREGION_STATIC=OFF"), ("static", "-DMEDREGION_STATIC=ON")] {
        let build = dir.join(format!("build-{name}"));
        let out = cmake_build(&cmake, &prefix, &build, &[extra]);
        assert!(
            out.status.success(),
            "cmake ({name}) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let app = build.join("app");
        let text = ok(Command::new(&app).env_remove("LD_LIBRARY_PATH"));
        assert!(text.starts_with(&format!("{}\n", version_line())), "{name} app printed: {text}");
        assert!(text.lines().any(|l| l.starts_with("cpu 0: ")), "{name} app listed no CPU device: {text}");
        assert_eq!(needed(&app).contains("libmedregion.so"), name == "shared", "{name} app's dynamic deps");
    }

    // Relocatable: the prefix moved elsewhere still configures, and links the moved library.
    let moved = dir.join("moved");
    std::fs::rename(&prefix, &moved).unwrap();
    let build = dir.join("build-moved");
    let out = cmake_build(&cmake, &moved, &build, &[]);
    assert!(out.status.success(), "moved prefix: {}", String::from_utf8_lossy(&out.stderr));
    let cache = std::fs::read_to_string(build.join("CMakeCache.txt")).unwrap();
    assert!(cache.contains(&format!("medregion_DIR:PATH={}", moved.join("lib/cmake/medregion").display())));
    let text = ok(Command::new(build.join("app")).env_remove("LD_LIBRARY_PATH"));
    assert!(text.starts_with(&format!("{}\n", version_line())), "{text}");

    // Version rules: 0.x needs the same minor version; a newer patch than installed fails.
    let v = fresh_dir("version");
    let (major, minor) = (env!("CARGO_PKG_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MINOR"));
    let cases = [
        (format!("{major}.{minor}"), true),
        (major.to_string(), true),
        (format!("{major}.{}", minor.parse::<u32>().unwrap() + 1), false),
        (format!("{}.0", major.parse::<u32>().unwrap() + 1), false),
        (format!("{major}.{minor}.{}", env!("CARGO_PKG_VERSION_PATCH").parse::<u32>().unwrap() + 1), false),
    ];
    for (i, (req, accepted)) in cases.iter().enumerate() {
        let src = v.join(format!("p{i}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("CMakeLists.txt"),
            format!("cmake_minimum_required(VERSION 3.16)\nproject(v NONE)\nfind_package(medregion {req} CONFIG REQUIRED)\n"),
        )
        .unwrap();
        let out = Command::new(&cmake)
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(src.join("build"))
            .arg(format!("-DCMAKE_PREFIX_PATH={}", moved.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), *accepted, "find_package(medregion {req}): {err}");
        if !accepted {
            assert!(
                err.contains("not compatible") || err.contains("compatible with requested version"),
                "{err}"
            );
        }
    }
}
