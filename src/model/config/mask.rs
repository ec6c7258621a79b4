//! The mask-driven visual extractor (Osprey → MAIRA-Seg → MedRegion-CT; SPEC-model.md §6).

use serde::{Deserialize, Serialize};

use super::check;
use crate::Result;

/// Whether each encoder level is used raw or after the final LayerNorm (SPEC §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelNorm {
    /// Raw `hidden_states[l]` [INFERRED default].
    Raw,
    /// `vit.layernorm` applied to every level (Dinov2Backbone style).
    FinalLayernorm,
}

/// Input of the spatial ("position") token MLP (SPEC §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpatialInput {
    /// S1: the R²-tokenized mask vector itself (`pooling.n_tokens` values) [INFERRED default].
    R2Flat,
    /// S2: a bilinear `mask_shape`×`mask_shape` resize of the mask on a representative slice
    /// (MAIRA-Seg / Osprey faithful).
    Slice2d,
}

/// Mask extractor: per-level masked mean → `res{l}` → sum → `feat_linear` = mask token;
/// mask vector → `mask_linear` MLP = spatial token. Two tokens per segmentation slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskExtractorConfig {
    /// Encoder levels (indices into `hidden_states`: 0 = embeddings, i = output of layer i);
    /// tensor `mask.res{k}` (k = 1..) projects level `levels[k-1]` [INFERRED: 3, 6, 9, 12].
    pub levels: Vec<usize>,
    /// Raw levels or LayerNorm-ed ones [INFERRED: raw].
    pub level_norm: LevelNorm,
    /// Width of the per-level projections `res{k}` [INFERRED: 1024, Osprey embed_dim].
    pub embed_dim: usize,
    /// Token width = `decoder.hidden_size` [4096].
    pub out_dim: usize,
    /// Input of the spatial-token MLP [INFERRED: r2_flat].
    pub spatial_input: SpatialInput,
    /// Side of the resized mask for `slice2d` [CONFIRMED Osprey: 112].
    pub mask_shape: usize,
    /// Hidden width of the spatial-token MLP [CONFIRMED Osprey: 1024].
    pub mlp_hidden_dim: usize,
    /// Linear layers of the spatial-token MLP, ReLU between them [CONFIRMED Osprey: 3].
    pub mlp_layers: usize,
    /// Denominator epsilon of the masked mean [CONFIRMED Osprey: 1e-8].
    pub eps: f32,
    /// A mask cell counts when its value is above this [CONFIRMED Osprey: `m > 0`].
    pub binarize_threshold: f32,
}

impl Default for MaskExtractorConfig {
    fn default() -> Self {
        MaskExtractorConfig {
            levels: vec![3, 6, 9, 12],
            level_norm: LevelNorm::Raw,
            embed_dim: 1024,
            out_dim: 4096,
            spatial_input: SpatialInput::R2Flat,
            mask_shape: 112,
            mlp_hidden_dim: 1024,
            mlp_layers: 3,
            eps: 1e-8,
            binarize_threshold: 0.0,
        }
    }
}

impl MaskExtractorConfig {
    /// Width of the spatial MLP's input: `n_tokens` (r2_flat) or `mask_shape²` (slice2d).
    pub fn spatial_in_dim(&self, pooled_tokens: usize) -> usize {
        match self.spatial_input {
            SpatialInput::R2Flat => pooled_tokens,
            SpatialInput::Slice2d => self.mask_shape * self.mask_shape,
        }
    }

    /// `(out, in)` of each `mask.mask_linear.layers.{i}` weight.
    pub fn mlp_dims(&self, pooled_tokens: usize) -> Vec<(usize, usize)> {
        let n = self.mlp_layers;
        (0..n)
            .map(|i| {
                let input = if i == 0 { self.spatial_in_dim(pooled_tokens) } else { self.mlp_hidden_dim };
                let output = if i + 1 == n { self.out_dim } else { self.mlp_hidden_dim };
                (output, input)
            })
            .collect()
    }

    pub(super) fn validate(&self, vision_layers: usize, decoder_hidden: usize) -> Result<()> {
        check(!self.levels.is_empty() && self.levels.len() <= 64, || {
            format!("mask_extractor.levels has {} entries; it needs 1..=64", self.levels.len())
        })?;
        for (i, &l) in self.levels.iter().enumerate() {
            check(l <= vision_layers, || {
                format!("mask_extractor.levels[{i}] ({l}) must be at most vision.n_layers ({vision_layers})")
            })?;
        }
        for (field, v) in [
            ("embed_dim", self.embed_dim),
            ("mask_shape", self.mask_shape),
            ("mlp_hidden_dim", self.mlp_hidden_dim),
        ] {
            check(v > 0 && v <= 1 << 20, || format!("mask_extractor.{field} ({v}) must be in 1..=1048576"))?;
        }
        check(self.mask_shape <= 4096, || {
            format!("mask_extractor.mask_shape ({}) must be at most 4096", self.mask_shape)
        })?;
        check(self.mlp_layers >= 1 && self.mlp_layers <= 16, || {
            format!("mask_extractor.mlp_layers ({}) must be in 1..=16", self.mlp_layers)
        })?;
        check(self.out_dim == decoder_hidden, || {
            format!(
                "mask_extractor.out_dim ({}) must equal decoder.hidden_size ({decoder_hidden})",
                self.out_dim
            )
        })?;
        check(self.eps > 0.0 && self.eps.is_finite(), || {
            format!("mask_extractor.eps ({}) must be positive", self.eps)
        })?;
        check(self.binarize_threshold.is_finite(), || {
            format!("mask_extractor.binarize_threshold ({}) must be finite", self.binarize_threshold)
        })
    }
}
