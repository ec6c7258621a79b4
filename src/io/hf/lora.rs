//! PEFT LoRA adapters merged into the base weights at conversion time (SPEC-model.md §10.4).
//!
//! Reference: PEFT 0.21 `tuners/lora/layer.py` (`Linear.get_delta_weight`, `merge`) and
//! `LoraLayer.update_layer` (scaling), `tuners/lora/model.py` (`rank_pattern` / `alpha_pattern`
//! via `utils/other.py::get_pattern_key`), `utils/save_and_load.py` (saved names).
//!
//! For every adapted `nn.Linear` with weight W [out, in], `lora_A.weight` A [r, in] and
//! `lora_B.weight` B [out, r]:
//! ```text
//! W' = W + s · B·A,   s = α / r   (α / √r with use_rslora)
//! ```
//! which is what `PeftModel.merge_and_unload()` computes. PEFT does it in the weight dtype (f32
//! here); we accumulate B·A and the sum in f64 and round once, so we agree with PEFT to within the
//! f32 rounding of its own result. `fan_in_fan_out` is ignored exactly as PEFT ignores it for
//! `nn.Linear` targets (it warns and resets it to false).
//!
//! `modules_to_save` copies (saved as `base_model.model.<param>` without the wrapper prefix)
//! replace the base tensor when their shape matches. Adapter variants that change the merge
//! (DoRA, LoRA biases, layer replication, embedding LoRA, trainable tokens, …) are refused.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::safetensors_in::{check_shape, read_json, SafetensorsSet};
use super::NamedTensor;
use crate::{Error, Result};

/// `target_modules`: a list of module-name suffixes or one regex string (PEFT semantics).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

/// The parts of `adapter_config.json` that decide the merge.
#[derive(Debug, Clone, Deserialize)]
pub struct LoraConfig {
    #[serde(default)]
    pub peft_type: Option<String>,
    /// Default rank.
    pub r: usize,
    /// Default α.
    pub lora_alpha: f64,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// "none" | "all" | "lora_only"; only "none" is supported.
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Per-module rank overrides (PEFT regex keys).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module α overrides (PEFT regex keys).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub alpha_pattern: BTreeMap<String, f64>,
}

/// `null` (some PEFT versions) reads as an empty map.
fn null_as_empty<'de, D, V>(d: D) -> std::result::Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    Ok(Option::<BTreeMap<String, V>>::deserialize(d)?.unwrap_or_default())
}

/// Config keys of LoRA variants whose merge is not W + s·B·A; refused when set (not false/null/empty).
const UNSUPPORTED_FEATURES: &[(&str, &str)] = &[
    ("use_dora", "DoRA (weight-decomposed LoRA)"),
    ("lora_bias", "LoRA bias terms"),
    ("layer_replication", "layer replication"),
    ("target_parameters", "LoRA on raw parameters"),
    ("trainable_token_indices", "trainable token indices"),
    ("alora_invocation_tokens", "activated LoRA (aLoRA)"),
    ("use_qalora", "QA-LoRA"),
    ("use_bdlora", "block-diagonal LoRA"),
    ("velora_config", "VeLoRA"),
    ("monteclora_config", "MonteCLoRA"),
    ("arrow_config", "Arrow routing"),
    ("kasa_config", "KaSA"),
];

/// Whether a JSON value counts as "set".
fn is_set(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// PEFT `get_pattern_key` matching, `re.match(rf"(.*\.)?({key})$", module)`, for keys written
/// with `[A-Za-z0-9_.]` only (`.` is the regex wildcard there). `None` when the key uses other regex
/// syntax, which we do not evaluate.
fn pattern_matches(key: &str, module: &str) -> Option<bool> {
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return None;
    }
    let matches_at = |start: usize| {
        let tail = &module.as_bytes()[start..];
        tail.len() == key.len() && key.bytes().zip(tail).all(|(k, &m)| k == b'.' || k == m)
    };
    let hit = (0..=module.len()).any(|p| (p == 0 || module.as_bytes()[p - 1] == b'.') && matches_at(p));
    Some(hit)
}

/// The first pattern key matching `module` (PEFT iterates the dict in insertion order; JSON
/// objects here are sorted, so overlapping keys are refused rather than guessed).
fn pattern_lookup<'a, V>(
    patterns: &'a BTreeMap<String, V>,
    module: &str,
    field: &str,
) -> Result<Option<&'a V>> {
    let mut found = None;
    for (key, v) in patterns {
        match pattern_matches(key, module) {
            None => {
                return Err(Error::Unsupported(format!(
                    "adapter_config.json: {field} key `{key}` uses regex syntax; only plain module names are supported"
                )))
            }
            Some(true) if found.is_some() => {
                return Err(Error::Unsupported(format!(
                    "adapter_config.json: several {field} keys match module `{module}`"
                )))
            }
            Some(true) => found = Some(v),
            Some(false) => {}
        }
    }
    Ok(found)
}

/// PEFT `check_target_module_exists` for a list: the module name equals a target or ends with
/// `.target`.
fn targeted(targets: &[String], module: &str) -> bool {
    targets.iter().any(|t| module == t || module.ends_with(&format!(".{t}")))
}

/// One adapted module: where its A and B live in the adapter file.
#[derive(Debug, Clone)]
struct LoraPair {
    a: Option<String>,
    b: Option<String>,
}

/// An opened adapter folder: config plus mapped `adapter_model.safetensors`.
#[derive(Debug)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    set: SafetensorsSet,
    /// Module path (e.g. `model.layers.0.self_attn.q_proj`) → its A/B tensor names.
    modules: BTreeMap<String, LoraPair>,
    /// Base tensor name → adapter tensor name, for `modules_to_save` replacements.
    replacements: BTreeMap<String, String>,
}

/// The prefix PEFT puts on every saved key (`PeftModel.base_model.model`).
const PEFT_PREFIX: &str = "base_model.model.";

impl LoraAdapter {
    /// Open `<dir>/adapter_config.json` and `<dir>/adapter_model.safetensors`, refusing unsupported
    /// adapter features.
    pub fn open(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let value: serde_json::Value = read_json(&cfg_path)?;
        let what = cfg_path.display().to_string();
        for (key, feature) in UNSUPPORTED_FEATURES {
            if let Some(v) = value.get(*key).filter(|v| is_set(v)) {
                return Err(Error::Unsupported(format!(
                    "{what}: `{key}` = {v} ({feature}) cannot be merged as W + (alpha/r)·B·A; \
                     merge the adapter with PEFT's merge_and_unload() and import the merged checkpoint"
                )));
            }
        }
        let config: LoraConfig =
            serde_json::from_value(value).map_err(|e| Error::format(&what, e.to_string()))?;
        if let Some(t) = config.peft_type.as_deref() {
            if t != "LORA" {
                return Err(Error::Unsupported(format!(
                    "{what}: peft_type `{t}` (only LORA adapters are merged)"
                )));
            }
        }
        if let Some(b) = config.bias.as_deref() {
            if b != "none" {
                return Err(Error::Unsupported(format!(
                    "{what}: `bias` = \"{b}\" (only \"none\" is supported)"
                )));
            }
        }
        if config.r == 0 {
            return Err(Error::format(&what, "field `r`: must be positive"));
        }

        let weights = dir.join("adapter_model.safetensors");
        if !weights.is_file() && dir.join("adapter_model.bin").is_file() {
            return Err(Error::Unsupported(format!(
                "{}: only adapter_model.safetensors is read (found adapter_model.bin)",
                dir.display()
            )));
        }
        let set = SafetensorsSet::open_file(&weights)?;

        let mut modules: BTreeMap<String, LoraPair> = BTreeMap::new();
        let mut replacements = BTreeMap::new();
        for name in set.names() {
            let key = name.strip_prefix(PEFT_PREFIX).unwrap_or(name);
            if let Some((module, which)) = split_lora_key(key) {
                let pair = modules.entry(module.to_string()).or_insert(LoraPair { a: None, b: None });
                let slot = if which == 'A' { &mut pair.a } else { &mut pair.b };
                if slot.replace(name.to_string()).is_some() {
                    return Err(Error::format(
                        set.origin(),
                        format!(
                            "module `{module}` has two lora_{which} tensors (several adapters in one file?)"
                        ),
                    ));
                }
            } else if key.contains("lora_") {
                // lora_magnitude_vector (DoRA), lora_embedding_A/B, lora_A.bias, ...
                return Err(Error::Unsupported(format!(
                    "adapter tensor `{name}` in {}: only lora_A.weight / lora_B.weight of Linear layers are merged",
                    set.origin()
                )));
            } else {
                let module = key.rsplit_once('.').map_or(key, |(m, _)| m);
                let saved = config.modules_to_save.as_deref().unwrap_or(&[]);
                if !targeted(saved, module) {
                    return Err(Error::format(
                        set.origin(),
                        format!("unexpected adapter tensor `{name}` (not LoRA and not in modules_to_save)"),
                    ));
                }
                replacements.insert(key.to_string(), name.to_string());
            }
        }
        for (module, pair) in &modules {
            if pair.a.is_none() || pair.b.is_none() {
                let missing = if pair.a.is_none() { "lora_A" } else { "lora_B" };
                return Err(Error::format(
                    set.origin(),
                    format!("module `{module}` has no {missing}.weight"),
                ));
            }
            if let Some(TargetModules::List(targets)) = &config.target_modules {
                if !targets.iter().any(|t| t == "all-linear") && !targeted(targets, module) {
                    return Err(Error::format(
                        set.origin(),
                        format!(
                            "module `{module}` has LoRA weights but is not in target_modules {targets:?}"
                        ),
                    ));
                }
            }
        }
        Ok(Self { config, set, modules, replacements })
    }

    /// (rank, scaling) PEFT uses for `module`.
    fn rank_and_scale(&self, module: &str) -> Result<(usize, f64)> {
        let c = &self.config;
        let r = *pattern_lookup(&c.rank_pattern, module, "rank_pattern")?.unwrap_or(&c.r);
        let alpha = *pattern_lookup(&c.alpha_pattern, module, "alpha_pattern")?.unwrap_or(&c.lora_alpha);
        if r == 0 {
            return Err(Error::format("adapter_config.json", format!("rank of module `{module}` is 0")));
        }
        let scale = if c.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
        Ok((r, scale))
    }

    /// Merge into `base` (tensors under HF names): every adapted module must exist there with
    /// matching shapes.
    pub fn apply(&self, base: &mut [NamedTensor]) -> Result<()> {
        let origin = self.set.origin().to_string();
        for (base_name, saved) in &self.replacements {
            let target = base.iter_mut().find(|t| &t.name == base_name).ok_or_else(|| {
                Error::NotFound(format!(
                    "adapter tensor `{saved}` ({origin}) replaces `{base_name}`, which the base model lacks"
                ))
            })?;
            let (shape, data) = self.set.read_f32(saved)?;
            check_shape(saved, &target.shape, &shape)?;
            target.data = data;
        }
        for (module, pair) in &self.modules {
            let (a_name, b_name) =
                (pair.a.as_deref().unwrap_or_default(), pair.b.as_deref().unwrap_or_default());
            let weight_name = format!("{module}.weight");
            let target = base.iter_mut().find(|t| t.name == weight_name).ok_or_else(|| {
                Error::NotFound(format!(
                    "adapter module `{module}` ({origin}): the base model has no tensor `{weight_name}`"
                ))
            })?;
            let (r, scale) = self.rank_and_scale(module)?;
            let [out, inp] = target.shape[..] else {
                return Err(Error::Shape {
                    what: format!("tensor `{weight_name}` (LoRA target)"),
                    expected: "2-D [out, in]".into(),
                    found: format!("{:?}", target.shape),
                });
            };
            // A: [r, in], B: [out, r].
            let (a_shape, a) = self.set.read_f32(a_name)?;
            let (b_shape, b) = self.set.read_f32(b_name)?;
            if a_shape.len() != 2 || b_shape.len() != 2 || b_shape.get(1) != a_shape.first() {
                return Err(Error::Shape {
                    what: format!("LoRA rank of `{module}`: `{a_name}` {a_shape:?} vs `{b_name}`"),
                    expected: format!("[{out}, {}]", a_shape.first().copied().unwrap_or(r)),
                    found: format!("{b_shape:?}"),
                });
            }
            check_shape(a_name, &[r, inp], &a_shape)?;
            check_shape(b_name, &[out, r], &b_shape)?;
            merge_lora(&mut target.data, out, inp, &a, &b, r, scale);
        }
        Ok(())
    }
}

/// `<module>.lora_A.weight` / `<module>.lora_A.<adapter>.weight` → (module, 'A'); same for B.
fn split_lora_key(key: &str) -> Option<(&str, char)> {
    let stem = key.strip_suffix(".weight")?;
    for (tag, which) in [(".lora_A", 'A'), (".lora_B", 'B')] {
        if let Some(module) = stem.strip_suffix(tag) {
            return Some((module, which));
        }
        // Adapter name kept in the key (`lora_A.default.weight`).
        if let Some((head, adapter)) = stem.rsplit_once('.') {
            if !adapter.is_empty() && !adapter.contains("lora_") {
                if let Some(module) = head.strip_suffix(tag) {
                    return Some((module, which));
                }
            }
        }
    }
    None
}

/// W [out, in] += scale · B [out, r] · A [r, in], accumulated in f64 and rounded once per element.
///
/// # Panics
/// If the slices are not `out·in`, `r·in` and `out·r` long ([`LoraAdapter::apply`] checks shapes).
pub fn merge_lora(w: &mut [f32], out: usize, inp: usize, a: &[f32], b: &[f32], r: usize, scale: f64) {
    assert!(w.len() == out * inp && a.len() == r * inp && b.len() == out * r, "merge_lora: bad shapes");
    if inp == 0 {
        return;
    }
    let merge_rows = |w_rows: &mut [f32], row0: usize| {
        let mut acc = vec![0f64; inp];
        for (i, w_row) in w_rows.chunks_exact_mut(inp).enumerate() {
            acc.fill(0.0);
            // acc = B[row, :] · A  (row of B·A)
            for (k, &b_ik) in b[(row0 + i) * r..(row0 + i + 1) * r].iter().enumerate() {
                let b_ik = b_ik as f64;
                acc.iter_mut()
                    .zip(&a[k * inp..(k + 1) * inp])
                    .for_each(|(s, &a_kj)| *s += b_ik * a_kj as f64);
            }
            w_row.iter_mut().zip(&acc).for_each(|(w, &d)| *w = (*w as f64 + scale * d) as f32);
        }
    };
    // Large layers (8B: 14336 × 4096 × r) are split over threads; tiny ones stay on this thread.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(out);
    if threads <= 1 || out * inp * r < (1 << 22) {
        merge_rows(w, 0);
        return;
    }
    let rows_per = out.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, chunk) in w.chunks_mut(rows_per * inp).enumerate() {
            let merge_rows = &merge_rows;
            s.spawn(move || merge_rows(chunk, t * rows_per));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_matches_hand_computation() {
        // W = 0 [2, 3], A = [[1, 2, 3]] (r = 1), B = [[1], [-2]], scale 0.5.
        let mut w = vec![0f32; 6];
        merge_lora(&mut w, 2, 3, &[1.0, 2.0, 3.0], &[1.0, -2.0], 1, 0.5);
        assert_eq!(w, [0.5, 1.0, 1.5, -1.0, -2.0, -3.0]);
    }

    #[test]
    fn threaded_merge_equals_single_thread() {
        let (out, inp, r) = (1030, 1024, 4);
        let a: Vec<f32> = (0..r * inp).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        let b: Vec<f32> = (0..out * r).map(|i| ((i * 104729 % 1000) as f32 - 500.0) * 1e-3).collect();
        let mut w1 = vec![0.25f32; out * inp];
        merge_lora(&mut w1, out, inp, &a, &b, r, 2.0);
        // The same rows, one at a time (each below the threading threshold).
        let mut w2 = vec![0.25f32; out * inp];
        for i in 0..out {
            merge_lora(&mut w2[i * inp..(i + 1) * inp], 1, inp, &a, &b[i * r..(i + 1) * r], r, 2.0);
        }
        assert_eq!(w1, w2);
    }

    #[test]
    fn lora_keys_are_split() {
        assert_eq!(
            split_lora_key("model.layers.0.self_attn.q_proj.lora_A.weight"),
            Some(("model.layers.0.self_attn.q_proj", 'A'))
        );
        assert_eq!(
            split_lora_key("model.layers.0.mlp.up_proj.lora_B.default.weight"),
            Some(("model.layers.0.mlp.up_proj", 'B'))
        );
        assert_eq!(split_lora_key("model.layers.0.self_attn.q_proj.lora_magnitude_vector"), None);
        assert_eq!(split_lora_key("lm_head.weight"), None);
    }

    #[test]
    fn pattern_keys_follow_peft_regex() {
        let m = "model.layers.1.self_attn.q_proj";
        assert_eq!(pattern_matches("q_proj", m), Some(true));
        assert_eq!(pattern_matches("self_attn.q_proj", m), Some(true));
        assert_eq!(pattern_matches("layers.1.self_attn.q_proj", m), Some(true));
        assert_eq!(pattern_matches("proj", m), Some(false)); // must start after a '.'
        assert_eq!(pattern_matches("k_proj", m), Some(false));
        assert_eq!(pattern_matches(m, m), Some(true));
        assert_eq!(pattern_matches(r"layers\.1\..*q_proj", m), None);
    }
}
