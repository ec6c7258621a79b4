//! R² (region-representative) token pooling (SPEC-model.md §4) and the linear connector (§5).

use serde::{Deserialize, Serialize};

use super::check;
use crate::Result;

/// How the K representative slices are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolingMode {
    /// R² pooling: slices picked by pseudo-mask area [PAPER; default].
    R2,
    /// LITA's uniform slices `round(linspace(0, T-1, K))` (the "Ablation-LITA" variant).
    Uniform,
}

/// The slice-selection rule of `r2` mode (SPEC §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SliceSelect {
    /// For the region being reported: the K slices with the most mask pixels, ties to the lower
    /// index, sorted ascending [INFERRED default].
    PerRegionTopk,
    /// The argmax slice of each of `fixed_regions`, de-duplicated, gaps filled with the next
    /// highest slices.
    FixedRegions,
}

/// R² pooling: T global tokens (per-slice mean) + K·g² region tokens (SPEC §4.1, Option A).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolingConfig {
    /// Slice choice [PAPER: r2].
    pub mode: PoolingMode,
    /// Global tokens T = slices of the volume; must equal `preprocess.depth` [INFERRED: 32].
    pub n_slices: usize,
    /// Representative slices K [INFERRED: 4].
    pub k_slices: usize,
    /// Side g of the adaptive-average-pooled grid per representative slice [INFERRED: 9].
    pub grid: usize,
    /// Selection rule in `r2` mode [INFERRED: per_region_topk].
    pub select: SliceSelect,
    /// Segmentation slot keys whose argmax slices are used by `fixed_regions` (exactly K)
    /// [INFERRED: lung, heart and great vessels, mediastinum, upper abdomen].
    pub fixed_regions: Vec<String>,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            mode: PoolingMode::R2,
            n_slices: 32,
            k_slices: 4,
            grid: 9,
            select: SliceSelect::PerRegionTopk,
            fixed_regions: ["lung", "heart_great_vessels", "mediastinum", "upper_abdomen"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl PoolingConfig {
    /// Vision tokens after pooling: T + K·g² (356 by default), global tokens first.
    pub fn n_tokens(&self) -> usize {
        self.n_slices + self.k_slices * self.grid * self.grid
    }

    pub(super) fn validate(&self, depth: usize, patch_grid: usize) -> Result<()> {
        check(self.n_slices == depth, || {
            format!("pooling.n_slices ({}) must equal preprocess.depth ({depth})", self.n_slices)
        })?;
        check(self.k_slices >= 1 && self.k_slices <= self.n_slices, || {
            format!(
                "pooling.k_slices ({}) must be in 1..=pooling.n_slices ({})",
                self.k_slices, self.n_slices
            )
        })?;
        check(self.grid >= 1 && self.grid <= patch_grid, || {
            format!("pooling.grid ({}) must be in 1..=the encoder patch grid ({patch_grid})", self.grid)
        })?;
        check(self.n_tokens() <= 1 << 16, || {
            format!("pooling yields {} image tokens; at most 65536", self.n_tokens())
        })?;
        if self.mode == PoolingMode::R2 && self.select == SliceSelect::FixedRegions {
            check(self.fixed_regions.len() == self.k_slices, || {
                format!(
                    "pooling.fixed_regions has {} entries; pooling.select = fixed_regions needs \
                     pooling.k_slices ({})",
                    self.fixed_regions.len(),
                    self.k_slices
                )
            })?;
        }
        Ok(())
    }
}

/// The multimodal connector [PAPER: "a linear layer"]: `proj.weight` `[out_dim, in_dim]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Input width = `vision.hidden_size` [768].
    pub in_dim: usize,
    /// Output width = `decoder.hidden_size` [4096].
    pub out_dim: usize,
    /// Whether `proj.bias` exists [PAPER/SPEC §5: Linear(768, 4096, bias=True)].
    pub bias: bool,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig { in_dim: 768, out_dim: 4096, bias: true }
    }
}

impl ConnectorConfig {
    pub(super) fn validate(&self, vision_hidden: usize, decoder_hidden: usize) -> Result<()> {
        check(self.in_dim == vision_hidden, || {
            format!("connector.in_dim ({}) must equal vision.hidden_size ({vision_hidden})", self.in_dim)
        })?;
        check(self.out_dim == decoder_hidden, || {
            format!("connector.out_dim ({}) must equal decoder.hidden_size ({decoder_hidden})", self.out_dim)
        })
    }
}
