//! The LLaMA-3 decoder (SPEC-model.md §10).

use serde::{Deserialize, Serialize};

use super::check;
use crate::Result;

/// MLP activation of the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderActivation {
    /// SwiGLU: `down(silu(gate(x)) * up(x))` [CONFIRMED].
    Silu,
}

/// RoPE frequency scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeType {
    /// Llama 3.1 wavelength-dependent scaling [CONFIRMED: vLLM `Llama3RotaryEmbedding`].
    Llama3,
}

/// `rope_scaling` of Llama 3.1 / 3.2 (HF field names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    pub rope_type: RopeType,
    /// [CONFIRMED 3.1: 8.0; 3.2: 32.0]
    pub factor: f64,
    /// [CONFIRMED: 1.0]
    pub low_freq_factor: f64,
    /// [CONFIRMED: 4.0]
    pub high_freq_factor: f64,
    /// [CONFIRMED: 8192]
    pub original_max_position_embeddings: usize,
}

impl Default for RopeScaling {
    fn default() -> Self {
        RopeScaling {
            rope_type: RopeType::Llama3,
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    }
}

/// Provenance of a LoRA adapter merged at conversion as `W + (alpha/r)·B·A` (informational).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraInfo {
    /// Rank [PAPER: 16].
    pub r: usize,
    /// Scale numerator [PAPER: 32].
    pub alpha: f64,
    /// Which projections the adapter touched [CONFIRMED: q,k,v,o,gate,up,down].
    pub target_modules: Vec<String>,
}

/// LLaMA-3 decoder hyper-parameters, with the ids of the added multimodal tokens.
///
/// Defaults: Llama-3.1-8B-Instruct (the authors' AMOS-MM base; the paper says "LLaMA3-8B", base
/// or Instruct and 3.0 or 3.1 not stated [INFERRED]) plus 3 added tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderConfig {
    /// Rows of `embed_tokens` / `lm_head` [INFERRED: 128256 + 3 added tokens].
    pub vocab_size: usize,
    /// d_model [CONFIRMED: 4096].
    pub hidden_size: usize,
    /// SwiGLU width [CONFIRMED: 14336].
    pub intermediate_size: usize,
    /// Decoder layers [CONFIRMED: 32].
    pub n_layers: usize,
    /// Query heads [CONFIRMED: 32].
    pub n_heads: usize,
    /// Key/value heads (GQA) [CONFIRMED: 8].
    pub n_kv_heads: usize,
    /// Per-head width [CONFIRMED: 128].
    pub head_dim: usize,
    /// MLP activation [CONFIRMED: silu].
    pub hidden_act: DecoderActivation,
    /// RMSNorm epsilon [CONFIRMED: 1e-5].
    pub rms_norm_eps: f32,
    /// RoPE base [CONFIRMED: 500000].
    pub rope_theta: f64,
    /// `llama3` RoPE scaling (Llama 3.1+), or none (Llama 3.0) [INFERRED: 3.1 values].
    pub rope_scaling: Option<RopeScaling>,
    /// [CONFIRMED 3.1: 131072; 3.0: 8192]
    pub max_position_embeddings: usize,
    /// Output projection shares `embed_tokens` (then `llm.lm_head.weight` is absent)
    /// [CONFIRMED 8B: false; 3.2-1B: true].
    pub tie_word_embeddings: bool,
    /// `<|begin_of_text|>` [CONFIRMED: 128000].
    pub bos_token_id: u32,
    /// Stop tokens [CONFIRMED 3.1-Instruct: 128001, 128008, 128009].
    pub eos_token_ids: Vec<u32>,
    /// Id of `<im_patch>` [INFERRED: 128256].
    pub image_token_id: u32,
    /// Id of `<mask>` [INFERRED: 128257].
    pub mask_token_id: u32,
    /// Id of `<pos>` [INFERRED: 128258].
    pub pos_token_id: u32,
    /// The merged LoRA adapter, if any (informational; PAPER: r 16, alpha 32).
    pub lora: Option<LoraInfo>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            vocab_size: 128_259,
            hidden_size: 4096,
            intermediate_size: 14336,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            hidden_act: DecoderActivation::Silu,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: Some(RopeScaling::default()),
            max_position_embeddings: 131_072,
            tie_word_embeddings: false,
            bos_token_id: 128_000,
            eos_token_ids: vec![128_001, 128_008, 128_009],
            image_token_id: 128_256,
            mask_token_id: 128_257,
            pos_token_id: 128_258,
            lora: None,
        }
    }
}

impl DecoderConfig {
    /// Width of the query projection: `n_heads * head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of each of the key and value projections: `n_kv_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The input-only tokens (`<im_patch>`, `<mask>`, `<pos>`), which generation never samples.
    pub fn input_only_ids(&self) -> [u32; 3] {
        [self.image_token_id, self.mask_token_id, self.pos_token_id]
    }

    pub(super) fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            check(v > 0 && v <= 1 << 24, || format!("decoder.{field} ({v}) must be in 1..=16777216"))?;
        }
        check(self.n_heads.is_multiple_of(self.n_kv_heads), || {
            format!("decoder.n_kv_heads ({}) must divide decoder.n_heads ({})", self.n_kv_heads, self.n_heads)
        })?;
        check(self.head_dim.is_multiple_of(2), || {
            format!("decoder.head_dim ({}) must be even (RoPE rotates pairs)", self.head_dim)
        })?;
        check(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite(), || {
            format!("decoder.rms_norm_eps ({}) must be positive", self.rms_norm_eps)
        })?;
        check(self.rope_theta > 1.0 && self.rope_theta.is_finite(), || {
            format!("decoder.rope_theta ({}) must be greater than 1", self.rope_theta)
        })?;
        if let Some(s) = &self.rope_scaling {
            check(s.factor >= 1.0 && s.factor.is_finite(), || {
                format!("decoder.rope_scaling.factor ({}) must be at least 1", s.factor)
            })?;
            check(
                s.low_freq_factor > 0.0
                    && s.high_freq_factor > s.low_freq_factor
                    && s.high_freq_factor.is_finite(),
                || {
                    format!(
                        "decoder.rope_scaling.high_freq_factor ({}) must exceed \
                         decoder.rope_scaling.low_freq_factor ({}) > 0",
                        s.high_freq_factor, s.low_freq_factor
                    )
                },
            )?;
            check(s.original_max_position_embeddings > 0, || {
                "decoder.rope_scaling.original_max_position_embeddings must be positive".to_string()
            })?;
        }
        check(!self.eos_token_ids.is_empty(), || {
            "decoder.eos_token_ids must list at least one token".to_string()
        })?;
        let vocab = self.vocab_size;
        let mut ids: Vec<(String, u32)> = vec![
            ("decoder.bos_token_id".into(), self.bos_token_id),
            ("decoder.image_token_id".into(), self.image_token_id),
            ("decoder.mask_token_id".into(), self.mask_token_id),
            ("decoder.pos_token_id".into(), self.pos_token_id),
        ];
        for (i, &id) in self.eos_token_ids.iter().enumerate() {
            ids.push((format!("decoder.eos_token_ids[{i}]"), id));
        }
        for (field, id) in &ids {
            check((*id as usize) < vocab, || {
                format!("{field} ({id}) must be below decoder.vocab_size ({vocab})")
            })?;
        }
        let added = [self.image_token_id, self.mask_token_id, self.pos_token_id];
        check(added[0] != added[1] && added[1] != added[2] && added[0] != added[2], || {
            format!(
                "decoder.image_token_id ({}), decoder.mask_token_id ({}) and decoder.pos_token_id ({}) \
                 must be distinct",
                added[0], added[1], added[2]
            )
        })?;
        if let Some(lora) = &self.lora {
            check(lora.r > 0 && lora.alpha.is_finite(), || {
                format!("decoder.lora.r ({}) must be positive and decoder.lora.alpha finite", lora.r)
            })?;
        }
        Ok(())
    }
}
