//! The main job of this stage: `medregion --version` and `medregion info` (text and JSON).

use std::process::Command;

fn medregion(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_flag() {
    let (ok, out, _) = medregion(&["--version"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("medregion {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn info_json_lists_the_cpu_first() {
    let (ok, out, err) = medregion(&["info", "--json"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(doc["abi_version"], 1);
    let devices = doc["devices"].as_array().expect("devices array");
    assert_eq!(devices[0]["kind"], "cpu");
    assert_eq!(devices[0]["available"], true);
    for d in &devices[1..] {
        assert_eq!(d["kind"], "cuda");
        if d["available"] == false {
            assert!(!d["reason"].as_str().unwrap().is_empty());
        }
    }
}

#[test]
fn info_text_and_bad_arguments() {
    let (ok, out, _) = medregion(&["info"]);
    assert!(ok);
    assert!(out.contains("devices:") && out.contains("cpu"), "{out}");
    let (ok, _, err) = medregion(&["info", "--no-such-flag"]);
    assert!(!ok);
    assert!(err.contains("--no-such-flag"), "{err}");
}
