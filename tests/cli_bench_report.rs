//! `medregion bench report`: the tiny preset end to end, batched and sequential, as JSON (every
//! stage timed, positive, consistent with the total; tokens/s consistent with the counts; the
//! batched/sequential ratio), the temporary package removed, `--modes batched` alone; bad
//! arguments fail with a message.

use std::process::Command;

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` missing or not a number in {v}"))
}

#[test]
fn tiny_preset_json() {
    let child = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args([
            "bench",
            "report",
            "--preset",
            "tiny",
            "--repeat",
            "1",
            "--max-new-tokens",
            "4",
            "--threads",
            "2",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run medregion");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for medregion");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["preset"], "tiny");
    assert_eq!(doc["threads"], 2);
    assert_eq!(doc["repeat"], 1);
    assert_eq!(doc["max_new_tokens"], 4);
    assert_eq!(doc["same_texts"], true);
    assert!(num(&doc, "package_write_s") > 0.0);
    let regions = doc["regions"].as_u64().expect("regions") as usize;
    assert!(regions >= 1, "{doc}");
    for mode in ["batched", "sequential"] {
        let m = &doc[mode];
        let stages = &m["stages"];
        let mut sum = 0.0;
        for s in ["preprocess", "attributes", "encoder", "tokens", "prefill", "decode"] {
            let t = num(stages, s);
            assert!(t > 0.0 && t.is_finite(), "{mode} {s}: {t}");
            sum += t;
        }
        // One run: the stages fit in the total (which also has model set-up and embedding).
        let total = num(m, "total_s");
        assert!(sum <= total * (1.0 + 1e-9), "{mode}: total {total} < the sum of the stages {sum}");
        let pd = num(m, "prefill_decode_s");
        assert!((pd - num(stages, "prefill") - num(stages, "decode")).abs() <= 1e-6 * pd, "{m}");
        let tokens = m["generated_tokens"].as_u64().expect("generated_tokens") as f64;
        assert!(tokens >= 1.0 && tokens <= (4 * regions) as f64, "{mode}: {tokens} tokens");
        let tps = num(m, "decode_tokens_per_s");
        assert!((tps - tokens / num(stages, "decode")).abs() <= 1e-6 * tps, "{mode}: {tps} tokens/s");
    }
    let ratio = num(&doc, "prefill_decode_ratio_batched_over_sequential");
    let expect = num(&doc["batched"], "prefill_decode_s") / num(&doc["sequential"], "prefill_decode_s");
    assert!(ratio > 0.0 && (ratio - expect).abs() < 1e-9, "ratio {ratio}, expected {expect}");
    // Same greedy texts in both modes means the same number of generated tokens.
    assert_eq!(doc["batched"]["generated_tokens"], doc["sequential"]["generated_tokens"]);
    let package = std::env::temp_dir().join(format!("medregion-bench-report-tiny-{pid}.mrm"));
    assert!(!package.exists(), "the temporary package {} was not removed", package.display());
}

#[test]
fn table_output_and_bad_arguments() {
    let out = medregion(&["bench", "report", "--repeat", "1", "--max-new-tokens", "2", "--threads", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for word in
        ["synthetic tiny", "batched", "sequential", "preprocess", "decode t/s", "region texts identical"]
    {
        assert!(stdout.contains(word), "`{word}` missing from:\n{stdout}");
    }
    assert!(stdout.contains("package written in"), "{stdout}");

    let out = medregion(&["bench", "report", "--preset", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--preset nope succeeded");
    assert!(err.contains("nope") && err.contains("tiny"), "unclear message: {err}");
    assert!(!err.contains("panicked"), "{err}");

    for bad in [["--repeat", "0"], ["--max-new-tokens", "0"]] {
        let out = medregion(&["bench", "report", bad[0], bad[1]]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} succeeded");
        assert!(err.contains(bad[0]) && err.contains("at least 1"), "{bad:?}: {err}");
    }
    // One mode only: no ratio.
    let out = medregion(&[
        "bench",
        "report",
        "--repeat",
        "1",
        "--max-new-tokens",
        "2",
        "--modes",
        "batched",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(num(&doc["batched"], "total_s") > 0.0 && doc["sequential"].is_null(), "{doc}");
    assert!(doc["prefill_decode_ratio_batched_over_sequential"].is_null(), "{doc}");
    let out = medregion(&["bench", "report", "--modes", "sideways"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("sideways"));
    let out = medregion(&["bench", "report", "--preset", "tiny", "--model", "x.mrm"]);
    assert!(!out.status.success(), "--preset with --model succeeded");
}
