//! The report JSON matches its published schema, `docs/report-schema.json` (JSON Schema
//! 2020-12, `additionalProperties: false` wherever the fields are fixed), checked with the
//! Python `jsonschema` package as an independent validator: the demo report, a report of two
//! regions, and a hand-broken copy that must be refused (so the check can fail).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validate(doc: &Path) -> (bool, String) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script = "import json, sys, jsonschema\n\
                  s = json.load(open(sys.argv[1])); d = json.load(open(sys.argv[2]))\n\
                  jsonschema.Draft202012Validator.check_schema(s)\n\
                  errors = list(jsonschema.Draft202012Validator(s).iter_errors(d))\n\
                  for e in errors: print(list(e.absolute_path), e.message)\n\
                  sys.exit(1 if errors else 0)\n";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(root().join("docs/report-schema.json"))
        .arg(doc)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("ModuleNotFoundError"), "install scripts/requirements-ci.txt: {text}");
    (out.status.success(), text)
}

#[test]
fn reports_match_the_published_schema() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("report-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full = dir.join("demo.json");
    let two = dir.join("two.json");
    for (path, extra) in [(&full, vec![]), (&two, vec!["--regions", "lung,osseous"])] {
        let mut args =
            vec!["report", "--demo", "--quiet", "--max-new-tokens", "3", "--json", path.to_str().unwrap()];
        args.extend(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_medregion")).args(&args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (ok, text) = validate(path);
        assert!(ok, "{} does not match docs/report-schema.json:\n{text}", path.display());
    }
    // A field the schema does not know, and a wrong type, are both refused.
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&two).unwrap()).unwrap();
    doc["regions"][0]["extra"] = 1.into();
    doc["timings"]["total"] = "slow".into();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (ok, text) = validate(&broken);
    assert!(!ok, "the schema accepted a broken report");
    assert!(text.contains("extra") && text.contains("slow"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
