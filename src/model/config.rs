//! The typed model configuration: every hyper-parameter, preprocessing constant, pooling mode,
//! prompt template, region list, label table and attribute threshold of a MedRegion-CT model.
//!
//! It is stored as JSON in the `medregion.config` metadata of the model package
//! (`crate::io::package`) and is the single source of truth for the shapes of the package's
//! tensors (`crate::model::names`). Each struct mirrors one section of `SPEC-model.md`:
//!
//! | field | struct | SPEC |
//! |---|---|---|
//! | `preprocess` | [`PreprocessConfig`] | §2 input preprocessing |
//! | `vision` | [`VisionConfig`] | §3 RAD-DINO / DINOv2 ViT-B/14 |
//! | `pooling` | [`PoolingConfig`] | §4 R² token pooling |
//! | `mask_extractor` | [`MaskExtractorConfig`] | §6 mask-driven visual extractor |
//! | `connector` | [`ConnectorConfig`] | §5 linear connector |
//! | `decoder` | [`DecoderConfig`] | §10 LLaMA-3 (+ added tokens) |
//! | `tokenizer` | [`TokenizerConfig`] | §10.3 |
//! | `prompt`, `generation` | [`PromptConfig`], [`GenerationConfig`] | §9 |
//! | `regions`, `segmentation`, `labels` | [`RegionConfig`], [`SlotConfig`], [`LabelConfig`] | §1, §6.3, §8 |
//! | `attributes` | [`AttributeConfig`] | §7 |
//!
//! Defaults are the full model (RAD-DINO + Llama-3.1-8B-Instruct, Option A pooling); every
//! value SPEC-model.md marks INFERRED is a field, and its doc comment says `[INFERRED]`.
//!
//! Parsing is strict: unknown fields are errors (`deny_unknown_fields`), a missing field takes
//! its default, and [`ModelConfig::validate`] rejects out-of-range and inconsistent values with
//! a message that names the field path, e.g.
//! `decoder.n_kv_heads (3) must divide decoder.n_heads (8)`.
//! The canonical JSON ([`ModelConfig::to_json`]) is compact, with fields in declaration order.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod attributes;
mod decoder;
mod labels;
mod mask;
mod pooling;
mod preprocess;
mod text;
mod vision;

pub use attributes::{AttributeConfig, AttributeText, FleischnerDiameter};
pub use decoder::{DecoderActivation, DecoderConfig, LoraInfo, RopeScaling, RopeType};
pub use labels::{
    default_regions, default_slots, radgenome_labels, ClassGroup, LabelConfig, LabelEntry, LobeName,
    RegionConfig, SlotConfig,
};
pub use mask::{LevelNorm, MaskExtractorConfig, SpatialInput};
pub use pooling::{ConnectorConfig, PoolingConfig, PoolingMode, SliceSelect};
pub use preprocess::{Interpolation, Normalization, Orientation, PreprocessConfig};
pub use text::{
    added_tokens, llama3_special_tokens, GenerationConfig, PromptConfig, SpecialToken, TokenizerConfig,
    TokenizerKind, BYTES_TOKENIZER_MAGIC, LLAMA3_PATTERN,
};
pub use vision::{VisionConfig, VisionFeature, VitActivation};

/// Everything a deployment needs to know about a model besides its weights.
// Field-level defaults (not container-level): a missing field takes its default, and the
// defaults of present fields are never built (the tokenizer and label defaults are large).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A human-readable model name (e.g. `medregion-synthetic-tiny`).
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    #[serde(default)]
    pub vision: VisionConfig,
    #[serde(default)]
    pub pooling: PoolingConfig,
    #[serde(default)]
    pub mask_extractor: MaskExtractorConfig,
    #[serde(default)]
    pub connector: ConnectorConfig,
    #[serde(default)]
    pub decoder: DecoderConfig,
    #[serde(default)]
    pub tokenizer: TokenizerConfig,
    #[serde(default)]
    pub prompt: PromptConfig,
    #[serde(default)]
    pub generation: GenerationConfig,
    /// Report regions, in report order [PAPER: the six regions].
    #[serde(default = "default_regions")]
    pub regions: Vec<RegionConfig>,
    /// Segmentation slots, in prompt order [INFERRED: six regions, then three lesions].
    #[serde(default = "default_slots")]
    pub segmentation: Vec<SlotConfig>,
    #[serde(default)]
    pub labels: LabelConfig,
    #[serde(default)]
    pub attributes: AttributeConfig,
}

fn default_name() -> String {
    "medregion-ct".to_string()
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            name: default_name(),
            preprocess: PreprocessConfig::default(),
            vision: VisionConfig::default(),
            pooling: PoolingConfig::default(),
            mask_extractor: MaskExtractorConfig::default(),
            connector: ConnectorConfig::default(),
            decoder: DecoderConfig::default(),
            tokenizer: TokenizerConfig::default(),
            prompt: PromptConfig::default(),
            generation: GenerationConfig::default(),
            regions: default_regions(),
            segmentation: default_slots(),
            labels: LabelConfig::default(),
            attributes: AttributeConfig::default(),
        }
    }
}

impl ModelConfig {
    /// Parses and validates a JSON config. Unknown fields, wrong types and invalid values are
    /// [`Error::Format`] errors naming the field.
    pub fn from_json(json: &str) -> Result<ModelConfig> {
        let config: ModelConfig = serde_json::from_str(json)
            .map_err(|e| Error::format("model config", format!("invalid JSON config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// The canonical JSON form (compact, declaration order); what the package stores.
    pub fn to_json(&self) -> String {
        // Serializing plain structs, vectors, strings and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The config as indented JSON, for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Vision tokens after pooling (T + K·g²).
    pub fn n_image_tokens(&self) -> usize {
        self.pooling.n_tokens()
    }

    /// Checks ranges and cross-field consistency; the error names the field path.
    pub fn validate(&self) -> Result<()> {
        check(self.name.len() <= 256, || "name is longer than 256 bytes".to_string())?;
        self.preprocess.validate()?;
        self.vision.validate()?;
        self.pooling.validate(self.preprocess.depth, self.vision.grid())?;
        self.decoder.validate()?;
        self.mask_extractor.validate(self.vision.n_layers, self.decoder.hidden_size)?;
        self.connector.validate(self.vision.hidden_size, self.decoder.hidden_size)?;
        self.tokenizer.validate(self.decoder.vocab_size)?;
        let d = &self.decoder;
        self.prompt.validate(
            &self.tokenizer,
            [
                ("decoder.image_token_id", d.image_token_id),
                ("decoder.mask_token_id", d.mask_token_id),
                ("decoder.pos_token_id", d.pos_token_id),
            ],
        )?;
        self.generation.validate(d.max_position_embeddings)?;
        labels::validate(&self.regions, &self.segmentation, &self.labels)?;
        if self.pooling.select == SliceSelect::FixedRegions {
            for (i, key) in self.pooling.fixed_regions.iter().enumerate() {
                check(self.segmentation.iter().any(|s| &s.key == key), || {
                    format!("pooling.fixed_regions[{i}] (`{key}`) is not a segmentation slot key")
                })?;
            }
        }
        self.attributes.validate()
    }
}

/// `Ok` when `ok`, else a config [`Error::Format`] with the message.
pub(crate) fn check(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::format("model config", message()))
    }
}

fn check_finite(field: &str, v: f32) -> Result<()> {
    check(v.is_finite(), || format!("{field} ({v}) must be finite"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = ModelConfig::default();
        c.validate().unwrap();
        assert_eq!(c.n_image_tokens(), 356);
        assert_eq!(c.vision.n_positions(), 1 + 18 * 18);
        let json = c.to_json();
        let back = ModelConfig::from_json(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.to_json(), json);
    }

    #[test]
    fn missing_fields_take_defaults() {
        let c = ModelConfig::from_json(r#"{"decoder":{"n_layers":2}}"#).unwrap();
        assert_eq!(c.decoder.n_layers, 2);
        assert_eq!(c.decoder.hidden_size, 4096);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let e = ModelConfig::from_json(r#"{"decoder":{"n_layer":2}}"#).unwrap_err();
        assert!(message(e).contains("n_layer"));
        let e = ModelConfig::from_json(r#"{"colour":"blue"}"#).unwrap_err();
        assert!(message(e).contains("colour"));
        let e = ModelConfig::from_json(r#"{"pooling":{"mode":"lita"}}"#).unwrap_err();
        assert!(message(e).contains("lita"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ModelConfig::default();
        c.decoder.n_heads = 8;
        c.decoder.n_kv_heads = 3;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("decoder.n_kv_heads (3) must divide decoder.n_heads (8)"), "{e}");

        let mut c = ModelConfig::default();
        c.pooling.n_slices = 16;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("pooling.n_slices (16) must equal preprocess.depth (32)"), "{e}");

        let mut c = ModelConfig::default();
        c.mask_extractor.levels = vec![3, 13];
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("mask_extractor.levels[1] (13)"), "{e}");

        let mut c = ModelConfig::default();
        c.decoder.image_token_id = 200_000;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("decoder.image_token_id (200000) must be below decoder.vocab_size"), "{e}");

        let mut c = ModelConfig::default();
        c.connector.out_dim = 2048;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("connector.out_dim (2048) must equal decoder.hidden_size (4096)"), "{e}");

        let mut c = ModelConfig::default();
        c.prompt.template = c.prompt.template.replace("{image}", "");
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("prompt.template must contain {image}"), "{e}");

        let mut c = ModelConfig::default();
        c.vision.layer_norm_eps = -1.0;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("vision.layer_norm_eps"), "{e}");

        let mut c = ModelConfig::default();
        c.pooling.select = SliceSelect::FixedRegions;
        c.pooling.fixed_regions[0] = "spleen".into();
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("pooling.fixed_regions[0] (`spleen`)"), "{e}");

        let mut c = ModelConfig::default();
        c.attributes.connectivity = 7;
        let e = message(c.validate().unwrap_err());
        assert!(e.contains("attributes.connectivity (7)"), "{e}");
    }

    #[test]
    fn special_token_ids_match_the_prompt() {
        let c = ModelConfig::default();
        assert_eq!(c.tokenizer.special_id("<|begin_of_text|>"), Some(128_000));
        assert_eq!(c.tokenizer.special_id("<|eot_id|>"), Some(128_009));
        assert_eq!(c.tokenizer.special_id("<|reserved_special_token_245|>"), Some(128_255));
        assert_eq!(c.tokenizer.special_id("<pos>"), Some(128_258));
        let mut c = ModelConfig::default();
        c.decoder.mask_token_id = 128_000;
        assert!(message(c.validate().unwrap_err()).contains("prompt.mask_token"));
    }
}
