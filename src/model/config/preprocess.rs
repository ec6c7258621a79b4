//! Input preprocessing (SPEC-model.md §2, DESIGN.md §2).

use serde::{Deserialize, Serialize};

use super::{check, check_finite};
use crate::Result;

/// Canonical orientation the volume and masks are brought to before cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Orientation {
    /// RAS+, the NIfTI / nibabel canonical orientation (`as_closest_canonical`).
    Ras,
    /// LPS+, the DICOM / ITK / NRRD patient coordinate system.
    Lps,
}

/// Intensity normalization to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Clip HU to `[hu_min, hu_max]`, then `(x - hu_min) / (hu_max - hu_min)` [INFERRED default:
    /// the paper's "consistent min-max normalization"].
    HuWindow,
    /// The authors' AMOS-MM per-volume adaptive normalization: foreground above the mean,
    /// clipped to its percentiles, z-scored, then min-max [CONFIRMED: AMOS-MM
    /// `multi_dataset*.py`].
    AmosAdaptive,
}

/// Resampling kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    Trilinear,
    Nearest,
}

/// Preprocessing of the CT volume and its masks (SPEC §2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Slices after resizing, D [PAPER: 32].
    pub depth: usize,
    /// Rows of each slice after resizing, H [PAPER: 256].
    pub height: usize,
    /// Columns of each slice after resizing, W [PAPER: 256].
    pub width: usize,
    /// Canonical orientation [INFERRED: RAS].
    pub orientation: Orientation,
    /// Crop to the foreground bounding box before resizing [CONFIRMED: AMOS-MM CropForeground].
    pub crop_foreground: bool,
    /// Foreground = HU strictly above this [CONFIRMED: Reg2RG, HU > -1000].
    pub foreground_hu_threshold: f32,
    /// Intensity normalization [INFERRED: hu_window].
    pub normalization: Normalization,
    /// Lower HU bound of the window [INFERRED: -1000].
    pub hu_min: f32,
    /// Upper HU bound of the window [INFERRED: 1000].
    pub hu_max: f32,
    /// Lower foreground percentile of `amos_adaptive` [CONFIRMED: 0.05].
    pub amos_lower_percentile: f32,
    /// Upper foreground percentile of `amos_adaptive` [CONFIRMED: 99.95].
    pub amos_upper_percentile: f32,
    /// Resampling of the CT [DESIGN: trilinear].
    pub volume_interpolation: Interpolation,
    /// Resampling of the masks [SPEC §2: nearest neighbour].
    pub mask_interpolation: Interpolation,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            depth: 32,
            height: 256,
            width: 256,
            orientation: Orientation::Ras,
            crop_foreground: true,
            foreground_hu_threshold: -1000.0,
            normalization: Normalization::HuWindow,
            hu_min: -1000.0,
            hu_max: 1000.0,
            amos_lower_percentile: 0.05,
            amos_upper_percentile: 99.95,
            volume_interpolation: Interpolation::Trilinear,
            mask_interpolation: Interpolation::Nearest,
        }
    }
}

impl PreprocessConfig {
    pub(super) fn validate(&self) -> Result<()> {
        for (field, v) in [("depth", self.depth), ("height", self.height), ("width", self.width)] {
            check(v > 0 && v <= 4096, || format!("preprocess.{field} ({v}) must be in 1..=4096"))?;
        }
        check_finite("preprocess.foreground_hu_threshold", self.foreground_hu_threshold)?;
        check_finite("preprocess.hu_min", self.hu_min)?;
        check_finite("preprocess.hu_max", self.hu_max)?;
        check(self.hu_min < self.hu_max, || {
            format!("preprocess.hu_min ({}) must be below preprocess.hu_max ({})", self.hu_min, self.hu_max)
        })?;
        let (lo, hi) = (self.amos_lower_percentile, self.amos_upper_percentile);
        check((0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo < hi, || {
            format!(
                "preprocess.amos_lower_percentile ({lo}) and preprocess.amos_upper_percentile ({hi}) \
                     must satisfy 0 <= lower < upper <= 100"
            )
        })?;
        Ok(())
    }
}
