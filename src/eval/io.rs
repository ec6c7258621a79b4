//! Reading studies for `medregion eval` and matching predictions to references by id.
//!
//! An input is either a **JSONL file** (one JSON object per line; blank lines are skipped) or a
//! **directory** of report JSON files (`*.json`, not recursive, read in file-name order), each one
//! study as `medregion report` writes it. A study object is
//!
//! ```json
//! {"id": "study-001", "text": "merged report text"}
//! {"id": "study-001", "regions": {"lung": {"text": "..."}, "airways": "...", ...}}
//! {"id": "study-001", "regions": {...}, "text": "merged text"}
//! ```
//!
//! * `id`: a string or an integer; required in JSONL, defaults to the file stem in a directory.
//! * `regions`: keys from [`REGIONS`] (`large_airways` is accepted for `airways`); a value is a
//!   string, `{"text": string}` (other fields ignored) or `null`. A region missing from a study
//!   that has `regions` is an empty text (the model said nothing about it).
//! * `text`: the merged report. When absent, the merged text is the non-empty region texts
//!   joined in [`REGIONS`] order with one space (the metrics' tokenizers make any whitespace
//!   equivalent).
//! * Other fields are ignored. A study needs `text` or `regions`.
//!
//! Errors name the file and line (or file) and never panic. Duplicate ids in one input are an
//! error; ids present on only one side are reported by [`match_studies`], not dropped silently.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// The six report regions (SPEC-model §8.2), as stable snake_case keys, in report order.
pub const REGIONS: [&str; 6] =
    ["lung", "airways", "mediastinum", "heart_great_vessels", "osseous", "upper_abdomen"];

/// Other spellings accepted on input, and the key they stand for.
const REGION_ALIASES: [(&str, &str); 1] = [("large_airways", "airways")];

/// One study: an id and its report text, merged and/or per region.
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    pub id: String,
    /// The merged report, if the input gave one.
    pub text: Option<String>,
    /// The region texts in [`REGIONS`] order, if the input gave `regions`.
    pub regions: Option<[String; 6]>,
    /// Where it came from (`file:line` or file), for messages.
    pub source: String,
}

impl Study {
    /// The text scored as "overall": `text`, else the region texts joined (see module doc).
    pub fn merged_text(&self) -> String {
        if let Some(t) = &self.text {
            return t.clone();
        }
        match &self.regions {
            Some(r) => r.iter().filter(|t| !t.is_empty()).map(String::as_str).collect::<Vec<_>>().join(" "),
            None => String::new(),
        }
    }

    /// The text of region `k` (index into [`REGIONS`]), if the study has regions.
    pub fn region(&self, k: usize) -> Option<&str> {
        self.regions.as_ref().and_then(|r| r.get(k)).map(String::as_str)
    }
}

/// Studies matched by id.
#[derive(Debug, Default)]
pub struct Matched {
    /// (prediction, reference), in the order of the reference input.
    pub pairs: Vec<(Study, Study)>,
    /// Ids only in the predictions, in input order.
    pub pred_only: Vec<String>,
    /// Ids only in the references, in input order.
    pub ref_only: Vec<String>,
}

/// Reads a JSONL file or a directory of report JSON files.
pub fn read_studies(path: impl AsRef<Path>) -> Result<Vec<Study>> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let studies = if meta.is_dir() { read_dir(path)? } else { read_jsonl(path)? };
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for s in &studies {
        if let Some(first) = seen.insert(&s.id, &s.source) {
            return Err(Error::format(
                s.source.clone(),
                format!("duplicate id `{}` (first at {first})", s.id),
            ));
        }
    }
    Ok(studies)
}

fn read_jsonl(path: &Path) -> Result<Vec<Study>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let what = format!("{}:{}", path.display(), i + 1);
        let line =
            std::str::from_utf8(line).map_err(|e| Error::format(what.clone(), format!("not UTF-8: {e}")))?;
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::format(what.clone(), format!("invalid JSON: {e}")))?;
        out.push(parse_study(&value, &what, None)?);
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<Study>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            files.push(p);
        }
    }
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for p in files {
        let what = p.display().to_string();
        let text = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| Error::format(what.clone(), format!("invalid JSON: {e}")))?;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
        out.push(parse_study(&value, &what, stem.as_deref())?);
    }
    Ok(out)
}

/// Parses one study object (see the module doc); `what` names it in errors, `default_id` is
/// used when it has no `id`.
pub fn parse_study(value: &Value, what: &str, default_id: Option<&str>) -> Result<Study> {
    let bad = |reason: String| Error::format(what.to_string(), reason);
    let obj =
        value.as_object().ok_or_else(|| bad(format!("expected a JSON object, found {}", kind(value))))?;
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(bad(format!("`id` must be a string or an integer, found {}", kind(other))))
        }
        None => match default_id {
            Some(d) => d.to_string(),
            None => return Err(bad("missing `id`".to_string())),
        },
    };
    let text = match obj.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(bad(format!("`text` must be a string, found {}", kind(other)))),
    };
    let regions = match obj.get("regions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let mut texts: [String; 6] = Default::default();
            let mut given = HashSet::new();
            for (key, v) in map {
                let canon = REGION_ALIASES.iter().find(|(a, _)| a == key).map_or(key.as_str(), |(_, k)| k);
                let Some(k) = REGIONS.iter().position(|r| *r == canon) else {
                    return Err(bad(format!(
                        "unknown region `{key}` (expected one of {})",
                        REGIONS.join(", ")
                    )));
                };
                if !given.insert(k) {
                    return Err(bad(format!("region `{}` given twice", REGIONS[k])));
                }
                texts[k] = match v {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    Value::Object(o) => match o.get("text") {
                        Some(Value::String(s)) => s.clone(),
                        None | Some(Value::Null) => String::new(),
                        Some(other) => {
                            return Err(bad(format!(
                                "`regions.{key}.text` must be a string, found {}",
                                kind(other)
                            )))
                        }
                    },
                    other => {
                        return Err(bad(format!(
                            "`regions.{key}` must be a string or {{\"text\": ...}}, found {}",
                            kind(other)
                        )))
                    }
                };
            }
            Some(texts)
        }
        Some(other) => return Err(bad(format!("`regions` must be an object, found {}", kind(other)))),
    };
    if text.is_none() && regions.is_none() {
        return Err(bad(format!("study `{id}` has neither `text` nor `regions`")));
    }
    Ok(Study { id, text, regions, source: what.to_string() })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Matches predictions to references by id.
pub fn match_studies(predictions: Vec<Study>, references: Vec<Study>) -> Matched {
    let ref_ids: HashSet<String> = references.iter().map(|s| s.id.clone()).collect();
    let mut preds: HashMap<String, Study> = HashMap::with_capacity(predictions.len());
    let mut pred_only = Vec::new();
    for p in predictions {
        if ref_ids.contains(&p.id) {
            preds.insert(p.id.clone(), p);
        } else {
            pred_only.push(p.id);
        }
    }
    let mut pairs = Vec::with_capacity(preds.len());
    let mut ref_only = Vec::new();
    for r in references {
        match preds.remove(&r.id) {
            Some(p) => pairs.push((p, r)),
            None => ref_only.push(r.id),
        }
    }
    Matched { pairs, pred_only, ref_only }
}
