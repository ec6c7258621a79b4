//! HF `LlamaForCausalLM` (LLaMA-3 / 3.1) import: `config.json` → [`HfLlamaConfig`], weights →
//! `llm.*` (SPEC-model.md §10).
//!
//! Reference: transformers `models/llama/configuration_llama.py` and `modeling_llama.py`. Both
//! `config.json` dialects are read: transformers 4.x (`rope_theta` + `rope_scaling`, as on the Hub
//! for Meta-Llama-3/3.1) and transformers 5.x (`rope_parameters` holding `rope_theta` and the
//! scaling; matched against 5.24.0, which wrote the test fixtures).
//!
//! Name mapping (shapes with D = hidden_size, F = intermediate_size, V = vocab_size,
//! Hq = num_attention_heads, Hkv = num_key_value_heads, d = head_dim):
//! ```text
//! model.embed_tokens.weight                        [V, D]      → llm.embed_tokens.weight
//! model.layers.{i}.input_layernorm.weight          [D]         → llm.layers.{i}.input_layernorm.weight
//! model.layers.{i}.self_attn.q_proj.weight         [Hq·d, D]   → llm.layers.{i}.self_attn.q_proj.weight
//! model.layers.{i}.self_attn.{k,v}_proj.weight     [Hkv·d, D]  → llm.layers.{i}.self_attn.{k,v}_proj.weight
//! model.layers.{i}.self_attn.o_proj.weight         [D, Hq·d]   → llm.layers.{i}.self_attn.o_proj.weight
//! model.layers.{i}.post_attention_layernorm.weight [D]         → llm.layers.{i}.post_attention_layernorm.weight
//! model.layers.{i}.mlp.{gate,up}_proj.weight       [F, D]      → llm.layers.{i}.mlp.{gate,up}_proj.weight
//! model.layers.{i}.mlp.down_proj.weight            [D, F]      → llm.layers.{i}.mlp.down_proj.weight
//! model.norm.weight                                [D]         → llm.norm.weight
//! lm_head.weight                                   [V, D]      → llm.lm_head.weight (absent when tied)
//! ```
//! HF checkpoints already hold q/k in the rotate-half RoPE layout; nothing is permuted here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::lora;
use super::safetensors_in::{read_json, SafetensorsSet};
use super::NamedTensor;
use crate::{Error, Result};

/// The `llama3` RoPE frequency scaling of Llama 3.1 (SPEC-model.md §10.1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Llama3RopeScaling {
    /// Wavelength stretch of the low frequencies (8.0 for 3.1).
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    /// Context length the base frequencies were trained for (8192 for 3.1).
    pub original_max_position_embeddings: usize,
}

/// The hyper-parameters of an HF `LlamaForCausalLM`, normalised across config dialects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HfLlamaConfig {
    /// D, the residual width.
    pub hidden_size: usize,
    /// F, the SwiGLU inner width.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    /// Hq.
    pub num_attention_heads: usize,
    /// Hkv (GQA); equals Hq when the config omits it.
    pub num_key_value_heads: usize,
    /// d; `hidden_size / num_attention_heads` when the config omits it.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `None` for plain RoPE (`rope_scaling: null` or `rope_type: "default"`).
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    /// V.
    pub vocab_size: usize,
    /// When true there is no `lm_head.weight`; the head reuses `embed_tokens`.
    pub tie_word_embeddings: bool,
    /// BOS id(s); empty when the config has none.
    pub bos_token_id: Vec<u32>,
    /// EOS id(s) (Llama 3.1 Instruct lists three); empty when the config has none.
    pub eos_token_id: Vec<u32>,
}

/// A token id field: an int, a list of ints, or null.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

/// `rope_scaling` (4.x) or `rope_parameters` (5.x); the type key is `rope_type` (or legacy `type`).
#[derive(Debug, Deserialize)]
struct RawRope {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

/// `config.json` as written; unknown fields are ignored (HF configs carry many).
#[derive(Debug, Deserialize)]
struct RawLlamaConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
}

fn token_ids(ids: Option<TokenIds>) -> Vec<u32> {
    match ids {
        None => Vec::new(),
        Some(TokenIds::One(id)) => vec![id],
        Some(TokenIds::Many(ids)) => ids,
    }
}

impl HfLlamaConfig {
    /// Parse and validate `config.json` text; `what` names the file in errors.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let raw: RawLlamaConfig =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        Self::from_raw(raw, what)
    }

    /// Read and validate `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let raw: RawLlamaConfig = read_json(&path)?;
        Self::from_raw(raw, &path.display().to_string())
    }

    fn from_raw(raw: RawLlamaConfig, what: &str) -> Result<Self> {
        let field = |name: &str, reason: String| Error::format(what, format!("field `{name}`: {reason}"));
        if let Some(t) = raw.model_type.as_deref() {
            if t != "llama" {
                return Err(Error::Unsupported(format!("{what}: model_type `{t}` (only `llama` is read)")));
            }
        }
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(Error::Unsupported(format!("{what}: hidden_act `{act}` (LLaMA uses `silu`)")));
            }
        }
        if raw.attention_bias || raw.mlp_bias {
            return Err(Error::Unsupported(format!(
                "{what}: attention_bias / mlp_bias = true (LLaMA-3 has no biases)"
            )));
        }
        for (name, v) in [
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("vocab_size", raw.vocab_size),
            ("max_position_embeddings", raw.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(field(name, "must be positive".into()));
            }
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(field(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads {}",
                    raw.num_attention_heads
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(0) => return Err(field("head_dim", "must be positive".into())),
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(raw.num_attention_heads) => {
                raw.hidden_size / raw.num_attention_heads
            }
            None => {
                return Err(field(
                    "head_dim",
                    format!(
                        "absent and hidden_size {} is not a multiple of num_attention_heads",
                        raw.hidden_size
                    ),
                ))
            }
        };
        if raw.rms_norm_eps.is_nan() || raw.rms_norm_eps <= 0.0 {
            return Err(field("rms_norm_eps", format!("{} must be positive", raw.rms_norm_eps)));
        }

        // 4.x: top-level rope_theta + rope_scaling; 5.x: rope_parameters holds both.
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0);
        if rope_theta.is_nan() || rope_theta <= 0.0 {
            return Err(field("rope_theta", format!("{rope_theta} must be positive")));
        }
        let (rope_field, rope) = match (raw.rope_scaling, raw.rope_parameters) {
            (Some(s), _) => ("rope_scaling", Some(s)),
            (None, p) => ("rope_parameters", p),
        };
        let rope_scaling = match rope {
            None => None,
            Some(r) => match r.rope_type.as_deref() {
                None | Some("default") => None,
                Some("llama3") => {
                    let need = |v: Option<f64>, k: &str| {
                        v.ok_or_else(|| field(rope_field, format!("rope_type llama3 needs `{k}`")))
                    };
                    let s = Llama3RopeScaling {
                        factor: need(r.factor, "factor")?,
                        low_freq_factor: need(r.low_freq_factor, "low_freq_factor")?,
                        high_freq_factor: need(r.high_freq_factor, "high_freq_factor")?,
                        original_max_position_embeddings: r.original_max_position_embeddings.ok_or_else(
                            || {
                                field(
                                    rope_field,
                                    "rope_type llama3 needs `original_max_position_embeddings`".into(),
                                )
                            },
                        )?,
                    };
                    if !(s.factor > 0.0 && s.low_freq_factor > 0.0 && s.high_freq_factor > s.low_freq_factor)
                    {
                        return Err(field(rope_field, format!("inconsistent llama3 scaling {s:?}")));
                    }
                    Some(s)
                }
                Some(other) => {
                    return Err(Error::Unsupported(format!(
                        "{what}: {rope_field}.rope_type `{other}` (only `default` and `llama3` are supported)"
                    )))
                }
            },
        };

        Ok(Self {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            vocab_size: raw.vocab_size,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: token_ids(raw.bos_token_id),
            eos_token_id: token_ids(raw.eos_token_id),
        })
    }

    /// Every tensor the checkpoint must hold: (HF name, canonical name, shape), in model order.
    pub fn expected_tensors(&self) -> Vec<(String, String, Vec<usize>)> {
        let (d, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
        for i in 0..self.num_hidden_layers {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), vec![d]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, d]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, d]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, d]));
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, q]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![f, d]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![f, d]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![d, f]));
        }
        out.push(("model.norm.weight".to_string(), vec![d]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, d]));
        }
        out.into_iter()
            .map(|(hf, shape)| {
                let canonical = canonical_name(&hf);
                (hf, canonical, shape)
            })
            .collect()
    }
}

/// HF LLaMA name → package name (`model.X` → `llm.X`, `lm_head.X` → `llm.lm_head.X`).
pub fn canonical_name(hf: &str) -> String {
    match hf.strip_prefix("model.") {
        Some(rest) => format!("llm.{rest}"),
        None => format!("llm.{hf}"),
    }
}

/// Checkpoint tensors that carry no weights (old transformers saved RoPE buffers).
fn is_ignorable(name: &str, cfg: &HfLlamaConfig) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && name == "lm_head.weight")
}

/// Import an HF `LlamaForCausalLM` folder (`config.json` + safetensors, single or sharded),
/// merging the PEFT LoRA adapter folder `lora` when given (W + (α/r)·B·A, see [`lora`]).
///
/// Returns the config and the tensors in model order under canonical `llm.*` names. Every shape
/// is checked against the config; a missing, misshapen or unexpected tensor is an error naming it.
pub fn load_llama(dir: &Path, lora: Option<&Path>) -> Result<(HfLlamaConfig, Vec<NamedTensor>)> {
    let cfg = HfLlamaConfig::from_dir(dir)?;
    let set = SafetensorsSet::open_dir(dir)?;
    let expected = cfg.expected_tensors();

    // A tensor we would silently drop is a conversion bug waiting to happen: refuse it.
    for name in set.names() {
        if !is_ignorable(name, &cfg) && !expected.iter().any(|(hf, _, _)| hf == name) {
            return Err(Error::format(
                set.origin(),
                format!("unexpected tensor `{name}` (not part of LlamaForCausalLM with this config.json)"),
            ));
        }
    }

    // Read under HF names first: the adapter refers to HF module paths.
    let mut tensors = Vec::with_capacity(expected.len());
    for (hf, _, shape) in &expected {
        if !set.contains(hf) {
            return Err(Error::NotFound(format!(
                "tensor `{hf}` (required by config.json) is missing from {}",
                set.origin()
            )));
        }
        tensors.push(set.read_named(hf, hf, shape)?);
    }

    if let Some(adapter_dir) = lora {
        lora::LoraAdapter::open(adapter_dir)?.apply(&mut tensors)?;
    }

    for (t, (_, canonical, _)) in tensors.iter_mut().zip(&expected) {
        t.name = canonical.clone();
    }
    Ok((cfg, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// meta-llama/Llama-3.1-8B-Instruct config.json (transformers 4.x dialect).
    const LLAMA31_8B: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu",
      "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
      "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
      "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
      "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
      "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256}"#;

    #[test]
    fn parses_llama31_hub_config() {
        let c = HfLlamaConfig::from_json(LLAMA31_8B, "config.json").unwrap();
        assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (4096, 14336, 32));
        assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (32, 8, 128));
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rms_norm_eps, 1e-5);
        let s = c.rope_scaling.as_ref().unwrap();
        assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor), (8.0, 1.0, 4.0));
        assert_eq!(s.original_max_position_embeddings, 8192);
        assert_eq!(c.bos_token_id, vec![128000]);
        assert_eq!(c.eos_token_id, vec![128001, 128008, 128009]);
        let t = c.expected_tensors();
        assert_eq!(t.len(), 2 + 32 * 9 + 1);
        assert_eq!(
            t[2],
            (
                "model.layers.0.self_attn.q_proj.weight".into(),
                "llm.layers.0.self_attn.q_proj.weight".into(),
                vec![4096, 4096]
            )
        );
        assert_eq!(t[3].2, vec![1024, 4096]);
        assert_eq!(t.last().unwrap().1, "llm.lm_head.weight");
    }

    #[test]
    fn parses_llama3_base_without_scaling_and_v5_dialect() {
        let base = LLAMA31_8B.replace(
            r#""rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"}"#,
            r#""rope_scaling": null"#,
        );
        let c = HfLlamaConfig::from_json(&base, "config.json").unwrap();
        assert_eq!(c.rope_scaling, None);

        let v5 = r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 512, "vocab_size": 256, "bos_token_id": null, "eos_token_id": 2,
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}}"#;
        let c = HfLlamaConfig::from_json(v5, "config.json").unwrap();
        assert_eq!((c.rope_theta, c.head_dim, c.rope_scaling.is_none()), (500000.0, 16, true));
        assert!(c.bos_token_id.is_empty());
        assert_eq!(c.eos_token_id, vec![2]);
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = HfLlamaConfig::from_json(
            &LLAMA31_8B.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#),
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let e = HfLlamaConfig::from_json(&LLAMA31_8B.replace(r#""hidden_size": 4096,"#, ""), "c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hidden_size"), "{e}");
        let e = HfLlamaConfig::from_json(&LLAMA31_8B.replace("llama3", "yarn"), "c").unwrap_err().to_string();
        assert!(e.contains("yarn"), "{e}");
        let e = HfLlamaConfig::from_json("{not json", "c").unwrap_err().to_string();
        assert!(e.starts_with("c:"), "{e}");
    }
}
