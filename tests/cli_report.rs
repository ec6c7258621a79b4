//! `medregion report`: the demo runs with no files, prints the attributes and every region
//! under its heading, writes a valid JSON report, is byte-identical across runs and thread
//! counts; bad input fails cleanly without leaving a JSON file.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/maskfiles.rs"]
mod maskfiles;

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
    assert_eq!(doc["model_name"], "medregion-synthetic-demo");
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
        (vec!["--model", "/nonexistent/m.mrm", "--ct", "/nonexistent/ct.nrrd", "--masks", "/x"], "m.mrm"),
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
    // A flag value clap refuses (its own message, naming the flag and the choices).
    let out = medregion(&["report", "--json", j, "--demo", "--activations", "f16"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--activations") && err.contains("`f32`"), "{err}");
    assert!(!json.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// The tiny package and the phantom (ct.nrrd, labels.nrrd) in `dir`.
fn inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("tiny.safetensors");
    let out =
        medregion(&["convert", "--synthetic", "tiny", "--seed", "5", "--output", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ph = dir.join("phantom");
    let out = medregion(&["phantom", "--out", ph.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (model, ph.join("ct.nrrd"), ph.join("labels.nrrd"))
}

fn json_without_timings(path: &Path) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc.as_object_mut().unwrap().remove("timings");
    doc
}

#[test]
fn batch_mode_reports_every_study_and_survives_a_bad_one() {
    let dir = work_dir("batch");
    let (model, ct, labels) = inputs(&dir);
    let (cts, masks, out) = (dir.join("cts"), dir.join("masks"), dir.join("out"));
    std::fs::create_dir_all(&cts).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for s in ["a", "b", "c", "d", "e"] {
        std::fs::copy(&ct, cts.join(format!("{s}.nrrd"))).unwrap();
    }
    std::fs::write(cts.join("notes.txt"), "not a volume").unwrap();
    std::fs::write(cts.join("b.nrrd"), "NRRD0004\ngarbage").unwrap(); // a corrupt CT
    std::fs::copy(&labels, masks.join("a.nrrd")).unwrap();
    std::fs::copy(&labels, masks.join("b.nrrd")).unwrap();
    // c has no masks.
    std::fs::copy(&labels, masks.join("d.nrrd")).unwrap();
    // e's label map is on another grid than its CT.
    let eye = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
    std::fs::write(masks.join("e.nii"), maskfiles::nifti_bytes([8, 6, 4], &eye, &[1.0; 8 * 6 * 4])).unwrap();
    let m = model.to_str().unwrap();
    let args = ["report", "--model", m, "--ct", cts.to_str().unwrap(), "--masks", masks.to_str().unwrap()];
    let mut with_out = args.to_vec();
    with_out.extend(["--out", out.to_str().unwrap(), "--max-new-tokens", "4", "--threads", "1"]);
    with_out.push("--progress-json");
    let run = medregion(&with_out);
    assert!(!run.status.success(), "two studies failed: the exit status says so");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stdout.contains("a: ok") && stdout.contains("d: ok"), "{stdout}");
    assert!(stdout.contains("b: FAILED") && stdout.contains("c: FAILED: "), "{stdout}");
    assert!(stdout.contains("no masks for study `c`"), "{stdout}");
    assert!(
        stdout.contains("e: FAILED: ") && stdout.contains("e.nii"),
        "the grid mismatch names the file: {stdout}"
    );
    assert!(stdout.contains("2 of 5 studies reported"), "{stdout}");
    assert!(stderr.contains("3 of 5 failed") && !stderr.contains("panicked"), "{stderr}");
    // Progress lines name their study.
    let first: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(first["study"], "a");
    assert_eq!(first["stage"], "preprocess");
    for s in ["a", "d"] {
        assert!(out.join(format!("{s}.json")).exists() && out.join(format!("{s}.txt")).exists());
    }
    for s in ["b", "c", "e"] {
        assert!(!out.join(format!("{s}.json")).exists() && !out.join(format!("{s}.txt")).exists());
    }
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["ok"], 2);
    assert_eq!(summary["failed"], 3);
    let statuses: Vec<&str> =
        summary["studies"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["ok", "failed", "failed", "ok", "failed"]);
    // A batch study's report is the single-study report of the same files.
    let single = dir.join("single.json");
    let one = medregion(&[
        "report",
        "--model",
        m,
        "--ct",
        ct.to_str().unwrap(),
        "--masks",
        labels.to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--threads",
        "2",
        "--quiet",
        "--json",
        single.to_str().unwrap(),
    ]);
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let mut a = json_without_timings(&out.join("a.json"));
    let mut b = json_without_timings(&single);
    a["study"]["ct_source"] = "".into();
    b["study"]["ct_source"] = "".into();
    assert_eq!(a, b);
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), String::from_utf8_lossy(&one.stdout));

    // Paired lists: one masks path per CT, in order.
    let out2 = dir.join("out2");
    let paired = medregion(&[
        "report",
        "--model",
        m,
        "--ct",
        cts.join("a.nrrd").to_str().unwrap(),
        cts.join("d.nrrd").to_str().unwrap(),
        "--masks",
        labels.to_str().unwrap(),
        labels.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--max-new-tokens",
        "4",
        "--quiet",
    ]);
    assert!(paired.status.success(), "{}", String::from_utf8_lossy(&paired.stderr));
    assert_eq!(
        std::fs::read_to_string(out2.join("d.txt")).unwrap(),
        std::fs::read_to_string(out.join("d.txt")).unwrap()
    );
    // Batch mode needs --out, refuses --json, and needs masks that pair up.
    let e = medregion(&args);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--out DIR"));
    let mut j = args.to_vec();
    j.extend(["--json", "x.json"]);
    let e = medregion(&j);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("takes one study"));
    let e = medregion(&[
        "report",
        "--model",
        m,
        "--ct",
        ct.to_str().unwrap(),
        ct.to_str().unwrap(),
        "--masks",
        labels.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && err.contains("same study name"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn device_is_checked_before_any_work() {
    for (device, needle) in [
        ("cuda:0", "device cuda:0"),
        ("cuda", "device cuda"),
        ("tpu", "`tpu` is not"),
        ("cuda:x", "`cuda:x`"),
    ] {
        let out = medregion(&["report", "--demo", "--device", device]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{device} should be refused: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{device}: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
    }
    let out = medregion(&["report", "--demo", "--device", "cpu", "--quiet", "--max-new-tokens", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // --gpu-encoder: f32 or bf16 (ignored on the CPU), anything else refused by the parser.
    let args = ["report", "--demo", "--device", "cpu", "--quiet", "--max-new-tokens", "2", "--gpu-encoder"];
    let bf16 = medregion(&[&args[..], &["bf16"]].concat());
    assert!(bf16.status.success(), "{}", String::from_utf8_lossy(&bf16.stderr));
    assert_eq!(bf16.stdout, out.stdout, "the CPU ignores --gpu-encoder");
    let bad = medregion(&[&args[..], &["fp8"]].concat());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("fp8") && !err.contains("panicked"), "{err}");
}

#[test]
fn every_computing_command_checks_its_device_first() {
    // The files do not exist: the device must be refused before anything is opened.
    let commands: [&[&str]; 6] = [
        &["generate", "--model", "missing.safetensors", "--prompt", "hi"],
        &["encode", "--model", "missing.safetensors", "--ct", "missing.nrrd", "--dump", "x.safetensors"],
        &["tokens", "--model", "missing.safetensors", "--ct", "missing.nrrd", "--masks", "m", "--dump", "x"],
        &["bench", "llm", "--model", "missing.safetensors"],
        &["bench", "vision", "--model", "missing.safetensors"],
        &["bench", "report", "--model", "missing.safetensors"],
    ];
    for args in commands {
        for (device, needle) in [("cuda:0", "device cuda:0"), ("gpu", "`gpu` is not")] {
            let mut full = args.to_vec();
            full.extend(["--device", device]);
            let out = medregion(&full);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{full:?} should fail: {err}");
            assert!(err.contains(needle) && !err.contains("missing"), "{full:?}: {err}");
        }
    }
}
