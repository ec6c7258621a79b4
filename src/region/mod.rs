//! Region-focused tokens, the heart of MedRegion-CT (SPEC-model.md §4, §5, §6.3, §9.2): R²
//! token pooling of the encoder features, the linear connector, the mask-driven visual
//! extractor (two tokens per segmentation slot) and the region prompt with those tokens spliced
//! into its input embeddings.
//!
//! ```text
//! F = encoder feature [T, 1+N, D] (CLS dropped), N = gp²; idx = K slices (rules below)
//! V = R2(F) = [ mean_n F[t] for t < T ;  adaptive_avg_pool(F[s] as gp×gp, g×g) for s in idx ]   [T+K·g², D]
//! image tokens  = proj(V)                                                                       [n_tokens, dm]
//! for each slot mask M [T, H, W] (0/1 on the preprocessed grid):
//!   Mp[t] = bilinear(M[t], gp×gp);  m = [ mean(Mp[t]) for t ;  adaptive_avg_pool(Mp[s], g×g) for s in idx ]
//!   w = (m > binarize_threshold) / (Σ(m > binarize_threshold) + eps)                            (Osprey)
//!   mask token    = feat_linear( Σ_l res_l( wᵀ R2(F_l) ) )    F_l = hidden_states[l] (raw, or final LN)
//!   spatial token = MLP(m)  (r2_flat)  |  MLP(bilinear(M[argmax-area slice], s×s))  (slice2d)
//! ```
//!
//! Choices made where the SPEC leaves room (each is a config field or stated here, and tested):
//! * **Image feature**: `vision.feature` (`last_hidden_state` by default, or the last layer's raw
//!   output). The mask-extractor levels are `hidden_states[l]`, raw or through `vit.layernorm`
//!   (`mask_extractor.level_norm`).
//! * **Slice selection** (`pooling.mode`, `pooling.select`), areas counted in voxels of the
//!   preprocessed `[T, H, W]` slot masks:
//!   - `uniform`: `round(linspace(0, T−1, K))` with numpy's rounding (half to even);
//!   - `r2` + `per_region_topk` (default): the region's own mask, slices by area descending,
//!     ties to the lower index, first K, sorted ascending. Slices with no voxels are taken (in
//!     index order) when fewer than K have any; an **empty region mask falls back to the uniform
//!     slices** (rule `uniform_fallback`), since ranking zeros would pick slices 0..K;
//!   - `r2` + `fixed_regions`: round-robin over `pooling.fixed_regions` in order — rank 0 of each
//!     region's non-empty slices, then rank 1, … — skipping slices already chosen, until K;
//!     any gap left (empty masks) is filled from the uniform slices, then the lowest unused
//!     indices; sorted ascending. All fixed masks empty: `uniform_fallback`.
//! * **Token order**: T global tokens first (LITA), then the K grids in ascending slice order,
//!   each `g×g` row-major. Mask and spatial tokens follow `segmentation` order; every slot gets
//!   its two tokens even when its mask is empty (then `w = 0`: the mask token is
//!   `feat_linear(Σ_l bias_l) + bias`, the spatial token `MLP(0)` in `r2_flat`).
//! * **Patch-resolution masks** are the bilinear (`align_corners=False`, no antialias) resize of
//!   the whole `H×W` slice to `gp×gp`, as Osprey resizes masks to the feature map; the global
//!   mask weight of slice t is the mean of that resized slice (the analogue of the global token
//!   being the mean of the patch tokens).
//! * **slice2d** uses, per slot, its own largest-area slice (ties to the lower index).
//! * **Sharing**: regions with the same selection (always, outside `per_region_topk`) share one
//!   computation; per-slice pooled grids and their connector rows are computed once per study.
//! * **Prompt**: the config's `prompt` templates, substituted in one pass; the attribute block is
//!   the attribute text when masks allow measuring, else [`NO_ATTRIBUTES`]. Placeholders are
//!   found by token id after tokenization; any other count is an error.
//!
//! The reference is `scripts/region/reference.py` (PyTorch, float64, written from the SPEC);
//! `tests/region.rs` compares every mode against its committed fixture.

pub mod pool;
pub mod prompt;
pub(crate) mod tokens;

pub use pool::{select_slices, uniform_slices, Selection};
pub use prompt::{assemble, render, segmentation_text, splice, Prompt};
pub use tokens::{FeatureArrays, HostFeatures, MaskView, PooledFeatures, RegionHeads, RegionTokens};

/// The attribute block used when no attributes were measured.
pub const NO_ATTRIBUTES: &str = "Patient attributes: not available.";
