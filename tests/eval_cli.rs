//! `medregion eval` end to end: the built binary on small inputs in a temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use medregion::eval::{Scorer, REGIONS};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medregion-eval-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn medregion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medregion"))
        .arg("eval")
        .args(args)
        .env_remove("MEDREGION_WORDNET")
        .output()
        .expect("run medregion")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const REF: &str = r#"{"id": "s1", "regions": {"lung": {"text": "Small left pleural effusion."}, "airways": {"text": "Trachea is patent."}, "mediastinum": {"text": "No lymphadenopathy."}, "heart_great_vessels": {"text": "Heart size is enlarged."}, "osseous": {"text": "No fracture."}, "upper_abdomen": {"text": "No relevant findings."}}}
{"id": "s2", "regions": {"lung": "Bilateral ground-glass opacities.", "airways": "Patent airways.", "mediastinum": "Normal.", "heart_great_vessels": "Normal heart size.", "osseous": "Degenerative changes.", "upper_abdomen": "Hepatic cyst."}}
{"id": "only-ref", "text": "Normal chest."}
"#;

const PRED: &str = r#"{"id": "s2", "regions": {"lung": "Ground-glass opacities in both lungs.", "airways": "Airways are patent.", "mediastinum": "Normal.", "heart_great_vessels": "Heart size is normal.", "osseous": "Degenerative change of the spine.", "upper_abdomen": "No relevant findings."}}
{"id": "s1", "regions": {"lung": {"text": "Small left pleural effusions."}, "airways": {"text": "The trachea is patent."}, "mediastinum": {"text": "No lymphadenopathy."}, "heart_great_vessels": {"text": "The heart is enlarged."}, "osseous": {"text": "No fractures."}, "upper_abdomen": {"text": "No relevant findings."}}}
{"id": "only-pred", "text": "Normal."}
"#;

fn write_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let (p, r) = (dir.join("pred.jsonl"), dir.join("ref.jsonl"));
    std::fs::write(&p, PRED).unwrap();
    std::fs::write(&r, REF).unwrap();
    (p, r)
}

#[test]
fn by_region_json_and_table() {
    let dir = scratch("by-region");
    let (p, r) = write_inputs(&dir);
    let out = dir.join("scores.json");
    let o = medregion(&["--pred", s(&p), "--ref", s(&r), "--by-region", "--json", s(&out)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");

    // Markdown: one row per region plus overall, unmatched ids listed.
    for region in REGIONS {
        assert!(stdout.contains(&format!("| {region} | 2 |")), "{stdout}");
    }
    assert!(stdout.contains("| **overall** | 2 |"), "{stdout}");
    assert!(stdout.contains("only in --pred: only-pred"), "{stdout}");
    assert!(stdout.contains("only in --ref: only-ref"), "{stdout}");
    assert!(stdout.contains("synonym stage off"), "{stdout}");
    assert!(stderr.contains("2 id(s) unmatched"), "{stderr}");

    let j: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(j["matched"], 2);
    assert_eq!(j["pred_only"], serde_json::json!(["only-pred"]));
    assert_eq!(j["ref_only"], serde_json::json!(["only-ref"]));
    assert!(j["config"]["wordnet"].is_null());
    let regions = j["regions"].as_array().unwrap();
    assert_eq!(regions.iter().map(|r| r["region"].as_str().unwrap()).collect::<Vec<_>>(), REGIONS);

    // Same numbers as the library, matched by id (s1 with s1, s2 with s2).
    let pred: Vec<Value> = PRED.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let refs: Vec<Value> = REF.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text =
        |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v["text"].as_str().unwrap().to_string());
    for (k, region) in REGIONS.iter().enumerate() {
        let pairs = [
            (text(&pred[1]["regions"][region]), text(&refs[0]["regions"][region])),
            (text(&pred[0]["regions"][region]), text(&refs[1]["regions"][region])),
        ];
        let want = Scorer::new(None).score_corpus(pairs.iter().map(|(a, b)| (a, b)));
        let got = &regions[k];
        assert_eq!(got["n"], 2);
        for n in 0..4 {
            assert!((got["bleu"][n].as_f64().unwrap() - want.bleu[n]).abs() < 1e-12, "{region}");
            assert!((got["bleu_nltk"][n].as_f64().unwrap() - want.bleu_nltk[n]).abs() < 1e-12, "{region}");
        }
        assert!((got["rouge_l_f"].as_f64().unwrap() - want.rouge_l_f).abs() < 1e-12);
        assert!((got["meteor"].as_f64().unwrap() - want.meteor).abs() < 1e-12);
    }
    // Overall: region texts joined in region order with a space.
    let joined = |v: &Value| REGIONS.iter().map(|r| text(&v["regions"][r])).collect::<Vec<_>>().join(" ");
    let want = Scorer::new(None)
        .score_corpus([(joined(&pred[1]), joined(&refs[0])), (joined(&pred[0]), joined(&refs[1]))]);
    assert!((j["overall"]["bleu"][3].as_f64().unwrap() - want.bleu[3]).abs() < 1e-12);
    assert!((j["overall"]["rouge_l_stem_f"].as_f64().unwrap() - want.rouge_l_stem_f).abs() < 1e-12);
}

#[test]
fn overall_only_and_json_to_stdout() {
    let dir = scratch("overall");
    let (p, r) = write_inputs(&dir);
    let o = medregion(&["--pred", s(&p), "--ref", s(&r), "--json", "-"]);
    assert!(o.status.success());
    let j: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert!(j.get("regions").is_none());
    assert_eq!(j["overall"]["n"], 2);
    let o = medregion(&["--pred", s(&p), "--ref", s(&r)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains("| lung |"));
    assert!(stdout.contains("| **overall** | 2 |"));
}

#[test]
fn report_directory_against_jsonl() {
    let dir = scratch("dir");
    let (_, r) = write_inputs(&dir);
    let reports = dir.join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    for line in PRED.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_str().unwrap();
        std::fs::write(reports.join(format!("{id}.json")), serde_json::to_string_pretty(&v).unwrap())
            .unwrap();
    }
    let from_dir = medregion(&["--pred", s(&reports), "--ref", s(&r), "--by-region", "--json", "-"]);
    let (p, _) = write_inputs(&dir);
    let from_jsonl = medregion(&["--pred", s(&p), "--ref", s(&r), "--by-region", "--json", "-"]);
    assert!(from_dir.status.success(), "{}", String::from_utf8_lossy(&from_dir.stderr));
    let a: Value = serde_json::from_slice(&from_dir.stdout).unwrap();
    let b: Value = serde_json::from_slice(&from_jsonl.stdout).unwrap();
    assert_eq!(a["overall"], b["overall"]);
    assert_eq!(a["regions"], b["regions"]);
}

#[test]
fn errors_are_reported_not_panicked() {
    let dir = scratch("errors");
    let (p, r) = write_inputs(&dir);
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"s1\", \"text\": \"ok\"}\n{\"id\": \"s2\", \"text\": }\n").unwrap();
    let o = medregion(&["--pred", s(&bad), "--ref", s(&r)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("bad.jsonl:2") && stderr.contains("invalid JSON"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let o = medregion(&["--pred", s(&p), "--ref", s(&r), "--strict"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only-pred"));

    let other = dir.join("other.jsonl");
    std::fs::write(&other, "{\"id\": \"zzz\", \"text\": \"x\"}\n").unwrap();
    let o = medregion(&["--pred", s(&other), "--ref", s(&r)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no study id is in both inputs"));

    let o = medregion(&["--pred", s(&p), "--ref", s(&r), "--wordnet", s(&dir.join("no-such-dir"))]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("wordnet"));
}

#[test]
fn wordnet_option_turns_on_synonyms() {
    let dir = scratch("wordnet");
    let wn = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval/wordnet");
    let (p, r) = (dir.join("p.jsonl"), dir.join("r.jsonl"));
    // "thorax" and "chest" are WordNet synonyms (and Porter-stem to themselves).
    std::fs::write(&p, "{\"id\": \"1\", \"text\": \"the thorax is clear\"}\n").unwrap();
    std::fs::write(&r, "{\"id\": \"1\", \"text\": \"the chest is clear\"}\n").unwrap();
    let with = medregion(&["--pred", s(&p), "--ref", s(&r), "--wordnet", s(&wn), "--json", "-"]);
    let without = medregion(&["--pred", s(&p), "--ref", s(&r), "--json", "-"]);
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let a: Value = serde_json::from_slice(&with.stdout).unwrap();
    let b: Value = serde_json::from_slice(&without.stdout).unwrap();
    assert!(a["overall"]["meteor"].as_f64().unwrap() > b["overall"]["meteor"].as_f64().unwrap());
    assert_eq!(a["config"]["wordnet"].as_str().unwrap(), s(&wn));
    // The environment variable does the same; --no-wordnet overrides it.
    let env = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["eval", "--pred", s(&p), "--ref", s(&r), "--json", "-"])
        .env("MEDREGION_WORDNET", &wn)
        .output()
        .unwrap();
    let c: Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(c["overall"]["meteor"], a["overall"]["meteor"]);
    let off = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["eval", "--pred", s(&p), "--ref", s(&r), "--json", "-", "--no-wordnet"])
        .env("MEDREGION_WORDNET", &wn)
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&off.stdout).unwrap();
    assert_eq!(d["overall"]["meteor"], b["overall"]["meteor"]);
}
