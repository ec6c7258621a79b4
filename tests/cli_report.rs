//! `medregion report`: the demo runs with no files, prints the attributes and every region
//! under its heading, writes a valid JSON report, is byte-identical across runs and thread
//! counts; bad input fails cleanly without leaving a JSON file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn work_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-report-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn demo_report_runs_and_is_reproducible() {
    let dir = work_dir("demo");
    let json = dir.join("report.json");
    let out = medregion(&["report", "--demo", "--threads", "1", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("untrained"), "{stdout}");
    assert!(stdout.contains("Lung nodules: 2 detected"), "{stdout}");
    for h in [
        "Lung:",
        "Large airways:",
        "Mediastinum:",
        "Heart and great vessels:",
        "Osseous structures:",
        "Upper abdomen:",
    ] {
        assert!(stdout.contains(&format!("\n{h}\n")), "{h} missing: {stdout}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[Encoder]") && stderr.contains("done in"), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["regions"].as_array().unwrap().len(), 6);
    assert_eq!(doc["model_name"], "medregion-synthetic-tiny");
    for r in doc["regions"].as_array().unwrap() {
        assert!(r["tokens"].as_u64().unwrap() >= 1 && r["tokens"].as_u64().unwrap() <= 32, "{r}");
    }
    // Same bytes with 2 threads and machine-readable progress.
    let out2 = medregion(&["report", "--demo", "--threads", "2", "--progress-json"]);
    assert!(out2.status.success());
    assert_eq!(String::from_utf8_lossy(&out2.stdout), stdout);
    let first = String::from_utf8_lossy(&out2.stderr).lines().next().unwrap().to_string();
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["event"], "stage");
    assert_eq!(event["stage"], "preprocess");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn report_bad_input_is_a_clean_error() {
    let dir = work_dir("bad");
    let json = dir.join("never.json");
    let j = json.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--model", "/nonexistent/m.mrm", "--ct", "/nonexistent/ct.nrrd", "--masks", "/x"], "ct.nrrd"),
        (vec!["--demo", "--regions", "spleen"], "`spleen`"),
        (vec!["--demo", "--max-new-tokens", "0"], "max_new_tokens"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["report", "--json", j];
        args.extend(extra.iter().copied());
        let out = medregion(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains("medregion: error:") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!json.exists(), "no JSON after a failure");
    }
    std::fs::remove_dir_all(&dir).ok();
}
