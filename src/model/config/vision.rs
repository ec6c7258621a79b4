//! The vision encoder: RAD-DINO = DINOv2 ViT-B/14 (SPEC-model.md §3).

use serde::{Deserialize, Serialize};

use super::{check, check_finite};
use crate::Result;

/// Activation of the ViT MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitActivation {
    /// Exact (erf) GELU [CONFIRMED: RAD-DINO `hidden_act: "gelu"`].
    Gelu,
}

/// Which encoder output feeds R² pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionFeature {
    /// The post-final-LayerNorm `last_hidden_state` [INFERRED default, SPEC §4.3].
    LastHiddenState,
    /// The last layer's output before the final LayerNorm (`hidden_states[-1]`).
    LastLayerRaw,
}

/// DINOv2 / RAD-DINO encoder hyper-parameters (SPEC §3.1), applied to each axial slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    /// Width of the residual stream [CONFIRMED: 768].
    pub hidden_size: usize,
    /// Transformer layers [CONFIRMED: 12].
    pub n_layers: usize,
    /// Attention heads [CONFIRMED: 12, head_dim 64].
    pub n_heads: usize,
    /// MLP width [CONFIRMED: 3072 = 4 × 768].
    pub intermediate_size: usize,
    /// Patch size of the stride-`patch_size` convolution [CONFIRMED: 14].
    pub patch_size: usize,
    /// Input channels; a CT slice is repeated to 3 [CONFIRMED: 3].
    pub num_channels: usize,
    /// Side of the square slice fed to the encoder; the position table in the package is baked
    /// (bicubic-interpolated at conversion) for this size [INFERRED: 256 → 18×18 patches].
    pub image_size: usize,
    /// Side the checkpoint was pre-trained at (informational) [CONFIRMED: 518 → 37×37].
    pub pretrained_image_size: usize,
    /// LayerNorm epsilon [CONFIRMED: 1e-6].
    pub layer_norm_eps: f32,
    /// Whether each block has LayerScale (`layer_scale{1,2}.lambda1`) [CONFIRMED: true].
    pub layerscale: bool,
    /// Whether query/key/value have biases [CONFIRMED: true].
    pub qkv_bias: bool,
    /// MLP activation [CONFIRMED: exact GELU].
    pub hidden_act: VitActivation,
    /// Per-channel normalization mean applied to [0,1] slices [CONFIRMED: 0.5307].
    pub image_mean: [f32; 3],
    /// Per-channel normalization std [CONFIRMED: 0.2583].
    pub image_std: [f32; 3],
    /// Encoder output used for the image tokens [INFERRED: last_hidden_state].
    pub feature: VisionFeature,
    /// Drop the CLS token before pooling [INFERRED: true].
    pub drop_cls: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            n_layers: 12,
            n_heads: 12,
            intermediate_size: 3072,
            patch_size: 14,
            num_channels: 3,
            image_size: 256,
            pretrained_image_size: 518,
            layer_norm_eps: 1e-6,
            layerscale: true,
            qkv_bias: true,
            hidden_act: VitActivation::Gelu,
            image_mean: [0.5307; 3],
            image_std: [0.2583; 3],
            feature: VisionFeature::LastHiddenState,
            drop_cls: true,
        }
    }
}

impl VisionConfig {
    /// Patches per side: `image_size / patch_size` (the remainder is dropped by the stride).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Positions of the (baked) position table: 1 CLS + grid².
    pub fn n_positions(&self) -> usize {
        1 + self.grid() * self.grid()
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads.max(1)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("num_channels", self.num_channels),
            ("image_size", self.image_size),
            ("pretrained_image_size", self.pretrained_image_size),
        ];
        for (field, v) in positive {
            check(v > 0 && v <= 1 << 20, || format!("vision.{field} ({v}) must be in 1..=1048576"))?;
        }
        check(self.hidden_size.is_multiple_of(self.n_heads), || {
            format!("vision.n_heads ({}) must divide vision.hidden_size ({})", self.n_heads, self.hidden_size)
        })?;
        check(self.image_size <= 16384, || {
            format!("vision.image_size ({}) must be at most 16384", self.image_size)
        })?;
        check(self.image_size >= self.patch_size, || {
            format!(
                "vision.image_size ({}) must be at least vision.patch_size ({})",
                self.image_size, self.patch_size
            )
        })?;
        check(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite(), || {
            format!("vision.layer_norm_eps ({}) must be positive", self.layer_norm_eps)
        })?;
        for (i, (m, s)) in self.image_mean.iter().zip(&self.image_std).enumerate() {
            check_finite(&format!("vision.image_mean[{i}]"), *m)?;
            check(*s > 0.0 && s.is_finite(), || format!("vision.image_std[{i}] ({s}) must be positive"))?;
        }
        Ok(())
    }
}
