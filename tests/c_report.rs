//! The end-to-end report from C and C++ (`tests/c/report_test.c`, `tests/c/report_test.cpp`,
//! `examples/c/report.c`, `bindings/cpp/report_example.cpp`) on the tiny synthetic package (`medregion convert
//! --synthetic tiny`) and the synthetic chest phantom (`medregion phantom`). The test program is
//! compiled as C99 and as C++17 (`-Wall -Wextra -Werror -pedantic`), against both libraries, run
//! in full and in its quick mode (one region, no threads); the quick mode also runs under
//! valgrind where installed (zero errors, zero definite leaks), for C99 against the static and
//! C++17 against the shared library (each run takes about 40 s). The C and C++ examples print the same bytes as
//! `medregion report --quiet`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[path = "common/cbuild.rs"]
mod cbuild;
use cbuild::{compile, have_valgrind, root, run, run_valgrind, Link};

/// The tokens per region everywhere here (the test program's `MAX_NEW_TOKENS`).
const MAX_NEW_TOKENS: &str = "4";

struct Inputs {
    package: PathBuf,
    ct: PathBuf,
    labels: PathBuf,
}

fn medregion(args: &[&str], extra: &Path) -> std::process::Output {
    let out =
        Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).arg(extra).output().expect("run medregion");
    assert!(out.status.success(), "medregion {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn inputs() -> &'static Inputs {
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-report");
        std::fs::create_dir_all(&dir).unwrap();
        let package = dir.join("tiny.safetensors");
        medregion(&["convert", "--synthetic", "tiny", "--seed", "3", "--output"], &package);
        let phantom = dir.join("phantom");
        medregion(&["phantom", "--out"], &phantom);
        Inputs { package, ct: phantom.join("ct.nrrd"), labels: phantom.join("labels.nrrd") }
    })
}

/// Compiles the test program against both libraries; runs it in full and quick, and quick under
/// valgrind against `valgrind_link`.
fn check(compiler: &str, std: &str, valgrind_link: Link) {
    let i = inputs();
    let args: [&Path; 3] = [&i.package, &i.ct, &i.labels];
    let quick: [&Path; 4] = [&i.package, &i.ct, &i.labels, Path::new("quick")];
    let valgrind = have_valgrind();
    for link in [Link::Static, Link::Shared] {
        let name = format!("report-{std}-{link:?}").to_lowercase().replace('+', "p");
        let bin = compile(compiler, std, &[root().join("tests/c/report_test.c")], link, &name);
        run(&bin, &args);
        run(&bin, &quick);
        if valgrind && format!("{link:?}") == format!("{valgrind_link:?}") {
            run_valgrind(&bin, &quick);
        }
    }
}

#[test]
fn report_api_from_c99() {
    check("cc", "c99", Link::Static);
}

#[test]
fn report_api_from_cpp17() {
    check("c++", "c++17", Link::Shared);
}

/// The C++ wrapper's report calls (`tests/c/report_test.cpp`): cancelling from either
/// `std::function`, an exception from a callback rethrown as itself, `Session::cancel()` from
/// another thread, a bad region key, and the session reused after every failure.
#[test]
fn report_wrapper_from_cpp17() {
    let i = inputs();
    let bin = compile(
        "c++",
        "c++17",
        &[root().join("tests/c/report_test.cpp")],
        Link::Shared,
        "report-wrapper-cpp17",
    );
    let out = run(&bin, &[&i.package, &i.ct, &i.labels]);
    assert!(out.contains("all checks passed"), "{out}");
}

/// Runs `bin MODEL CT MASKS` with `MEDREGION_MAX_NEW_TOKENS`; returns (stdout, stderr).
fn run_example(bin: &Path) -> (String, String) {
    let i = inputs();
    let out = Command::new(bin)
        .args([&i.package, &i.ct, &i.labels])
        .env("MEDREGION_MAX_NEW_TOKENS", MAX_NEW_TOKENS)
        .output()
        .expect("run example");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(out.status.success(), "{} failed:\n{stdout}{stderr}", bin.display());
    (stdout, stderr)
}

/// `examples/c/report.c` and `bindings/cpp/report_example.cpp` print exactly what
/// `medregion report --quiet` prints; failures exit non-zero with the library's message.
#[test]
fn examples_print_the_cli_report() {
    let i = inputs();
    let cli = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["report", "--quiet", "--max-new-tokens", MAX_NEW_TOKENS, "--model"])
        .arg(&i.package)
        .arg("--ct")
        .arg(&i.ct)
        .arg("--masks")
        .arg(&i.labels)
        .output()
        .expect("run medregion report");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli = String::from_utf8_lossy(&cli.stdout).to_string();
    assert!(cli.starts_with("Patient-specific attributes:\n- Lung volume:"), "{cli}");

    let c = compile("cc", "c99", &[root().join("examples/c/report.c")], Link::Shared, "report-example-c");
    let (stdout, stderr) = run_example(&c);
    assert_eq!(stdout, cli, "the C example and `medregion report` differ");
    for h in ["Lung", "Large airways", "Mediastinum", "Heart and great vessels", "Osseous structures"] {
        assert!(stdout.contains(&format!("\n{h}:\n")), "{h} missing:\n{stdout}");
    }
    assert!(stdout.contains("Lung nodules: 2 detected"), "{stdout}");
    assert!(stderr.starts_with("[Preprocess] (1)\n[Attributes] (1)\n[Encoder]"), "{stderr}");
    assert!(stderr.contains("[Region] upper_abdomen (6/6)"), "{stderr}");

    let cpp = compile(
        "c++",
        "c++17",
        &[root().join("bindings/cpp/report_example.cpp")],
        Link::Static,
        "report-example-cpp",
    );
    let (cpp_out, cpp_err) = run_example(&cpp);
    assert_eq!(cpp_out, stdout, "the C++ and C examples differ");
    assert_eq!(cpp_err, stderr, "the C++ and C examples' progress differs");

    // Failure: non-zero exit and the library's message naming the problem.
    for bin in [&c, &cpp] {
        let out = Command::new(bin)
            .args([&i.package, Path::new("/nonexistent/ct.nrrd"), &i.labels])
            .output()
            .expect("run example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
        assert!(stderr.contains("/nonexistent/ct.nrrd"), "{stderr}");
    }
}
