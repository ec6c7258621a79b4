//! The CI fuzz smoke run (issue: "a CI smoke run of each [fuzz target] finds nothing"): runs
//! `scripts/fuzz-smoke.sh` (cargo-fuzz, AddressSanitizer, debug assertions) on every target in
//! `fuzz/fuzz_targets` for `MEDREGION_FUZZ_SECONDS` seconds each (default 60), seeded from
//! `fuzz/seeds/`. A crash, a sanitizer report, a timeout (10 s per input) or an input needing more
//! than 2 GB fails the test; the reproducer is left in `fuzz/artifacts/TARGET`.
//!
//! It needs cargo-fuzz (`.ci/run` installs it). Where it is missing the test is skipped with a
//! message, except under CI (`CI` set), where that is a failure. `MEDREGION_FUZZ_SECONDS=0`
//! skips it on purpose (local quick runs).

use std::path::Path;
use std::process::Command;

#[test]
fn fuzz_targets_find_nothing_in_a_smoke_run() {
    let secs = std::env::var("MEDREGION_FUZZ_SECONDS").unwrap_or_else(|_| "60".to_string());
    if secs == "0" {
        eprintln!("SKIP: MEDREGION_FUZZ_SECONDS=0");
        return;
    }
    let have_fuzz =
        Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have_fuzz {
        assert!(std::env::var_os("CI").is_none(), "cargo-fuzz is required under CI (.ci/run installs it)");
        eprintln!("SKIP: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/fuzz-smoke.sh"))
        .arg(&secs)
        // The test's own cargo environment must not leak into the nested fuzz build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run scripts/fuzz-smoke.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.starts_with("==") || l.contains("stat::number_of_executed_units"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    assert!(out.status.success(), "fuzz smoke failed:\n{stdout}\n{tail}");
    let targets = std::fs::read_dir(root.join("fuzz/fuzz_targets")).unwrap().count();
    assert_eq!(stdout.matches(": no crash").count(), targets, "every target ran to the end:\n{stdout}");
}
