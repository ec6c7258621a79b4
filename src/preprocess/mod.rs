//! Preprocessing of a CT volume and its masks (SPEC-model.md §2, DESIGN.md §2), driven by the
//! model package's [`PreprocessConfig`]:
//!
//! 1. canonical orientation ([`orient`]): axial slices, D feet → head, rows and columns along
//!    the axes of `config.orientation` (`ras` by default);
//! 2. foreground crop ([`crop`]): tight bounding box of `HU > config.foreground_hu_threshold`
//!    (−1000 by default), no margin; no crop when nothing is above it or `crop_foreground` is
//!    off;
//! 3. intensity window to [0, 1] ([`window`]): `[hu_min, hu_max]` (default [−1000, 1000]) or the
//!    AMOS-MM adaptive window;
//! 4. resize to `[D, H, W] = [depth, height, width]` (default 32×256×256) ([`resample`]):
//!    trilinear with PyTorch `align_corners=False` semantics (or nearest-exact).
//!
//! The output is `[D, H, W]` f32 in [0, 1], W fastest: `data[(d · H + h) · W + w]` is canonical
//! voxel `(x, y, z)` = `(w, h, d)` of the resized box. [`Preprocessed::map_mask`] sends a label
//! map on the CT's grid through the same reorientation, crop and resize (nearest-exact, or
//! trilinear-majority when `mask_interpolation` is `trilinear`), after checking its geometry.
//!
//! The reference is `scripts/volume/reference.py` (nibabel orientation, numpy crop and window,
//! scipy `map_coordinates` with the same sample positions); `tests/preprocess.rs` compares.

pub mod crop;
pub mod orient;
pub mod resample;
pub mod window;

use serde::Serialize;

pub use crate::model::config::{Interpolation, Normalization, Orientation, PreprocessConfig};
pub use crop::CropBox;
pub use orient::Reorientation;
pub use window::Window;

use crate::error::{Error, Result};
use crate::volume::geometry::{matmul, Affine, Geometry, MAX_VOXELS};
use crate::volume::Volume;

/// A preprocessed volume and everything needed to send masks through the same steps.
#[derive(Clone, Debug, Serialize)]
pub struct Preprocessed {
    /// `[D, H, W]` values in [0, 1], W fastest.
    #[serde(skip)]
    pub data: Vec<f32>,
    /// `[D, H, W]`.
    pub shape: [usize; 3],
    /// Stored → canonical axes.
    pub reorientation: Reorientation,
    /// The crop in the stored volume's voxel indices (x, y, z; half-open).
    pub crop_stored: CropBox,
    /// The crop in canonical voxel indices (axes of `reorientation.to`; half-open).
    pub crop_canonical: CropBox,
    /// The HU window mapped to [0, 1].
    pub window: Window,
    /// Output index `(w, h, d)` → RAS+ mm, with `align_corners=False` voxel centres.
    pub affine: Affine,
    /// The geometry of the source CT (masks must match it).
    pub source_geometry: Geometry,
    #[serde(skip)]
    mask_interpolation: Interpolation,
}

fn check_config(config: &PreprocessConfig) -> Result<[usize; 3]> {
    let shape = [config.depth, config.height, config.width];
    if shape.iter().any(|&v| v == 0 || v > 4096) || shape.iter().product::<usize>() > MAX_VOXELS {
        return Err(Error::invalid(
            "preprocess.depth/height/width",
            format!("{shape:?}: each must be in 1..=4096 and the product at most {MAX_VOXELS}"),
        ));
    }
    let finite = [config.hu_min, config.hu_max, config.foreground_hu_threshold].iter().all(|v| v.is_finite());
    if !finite || config.hu_min >= config.hu_max {
        return Err(Error::invalid(
            "preprocess.hu_min/hu_max/foreground_hu_threshold",
            format!(
                "must be finite with hu_min < hu_max (found {}, {}, {})",
                config.hu_min, config.hu_max, config.foreground_hu_threshold
            ),
        ));
    }
    let (lo, hi) = (config.amos_lower_percentile, config.amos_upper_percentile);
    if !((0.0..=100.0).contains(&lo) && (0.0..=100.0).contains(&hi) && lo < hi) {
        return Err(Error::invalid(
            "preprocess.amos_lower_percentile/amos_upper_percentile",
            format!("must satisfy 0 <= lower < upper <= 100 (found {lo}, {hi})"),
        ));
    }
    Ok(shape)
}

/// Runs the four steps of the module doc on `volume`.
pub fn preprocess(volume: &Volume, config: &PreprocessConfig) -> Result<Preprocessed> {
    let shape = check_config(config)?;
    let geometry = volume.geometry().clone();
    let dims = geometry.dims;
    let reorientation = Reorientation::plan(&geometry, config.orientation);
    let crop_stored = if config.crop_foreground {
        crop::foreground_box(volume.data(), dims, config.foreground_hu_threshold)
            .unwrap_or(CropBox::full(dims))
    } else {
        CropBox::full(dims)
    };
    let crop_canonical = crop_stored.to_canonical(&reorientation, dims);
    let window = match config.normalization {
        Normalization::HuWindow => Window { lo: config.hu_min, hi: config.hu_max },
        Normalization::AmosAdaptive => {
            window::amos_window(volume.data(), config.amos_lower_percentile, config.amos_upper_percentile)
        }
    };
    let view = reorientation.view(dims);
    let [d, h, w] = shape;
    let map = window.mapper();
    let data = match config.volume_interpolation {
        Interpolation::Trilinear => {
            resample::trilinear(volume.data(), &view, &crop_canonical, [d, h, w], |v| map.apply(v))
        }
        Interpolation::Nearest => resample::nearest(volume.data(), &view, &crop_canonical, [d, h, w])
            .into_iter()
            .map(|v| map.apply(v))
            .collect(),
    };
    let affine = output_affine(&reorientation.canonical_affine(&geometry), &crop_canonical, shape);
    Ok(Preprocessed {
        data,
        shape,
        reorientation,
        crop_stored,
        crop_canonical,
        window,
        affine,
        source_geometry: geometry,
        mask_interpolation: config.mask_interpolation,
    })
}

/// Output `(w, h, d)` → canonical continuous index `start + (o + 0.5) · n_in / n_out − 0.5`,
/// composed with the canonical affine.
fn output_affine(canonical: &Affine, crop: &CropBox, shape: [usize; 3]) -> Affine {
    let out = [shape[2], shape[1], shape[0]];
    let size = crop.size();
    let mut t = [[0.0; 4]; 4];
    for i in 0..3 {
        let scale = size[i] as f64 / out[i] as f64;
        t[i][i] = scale;
        t[i][3] = crop.start[i] as f64 + 0.5 * scale - 0.5;
    }
    t[3][3] = 1.0;
    matmul(canonical, &t)
}

impl Preprocessed {
    /// Sends a label map on the CT's grid (`labels[x + nx * (y + ny * z)]`, with `geometry`)
    /// through the same reorientation, crop and resize; returns `[D, H, W]` labels, W fastest.
    /// A geometry that differs from the CT's (dims, or affine beyond
    /// [`GEOMETRY_TOL_MM`](crate::volume::GEOMETRY_TOL_MM) /
    /// [`GEOMETRY_TOL_DIR`](crate::volume::GEOMETRY_TOL_DIR)) is refused with both described.
    pub fn map_mask<T: Copy + PartialEq>(&self, labels: &[T], geometry: &Geometry) -> Result<Vec<T>> {
        self.source_geometry.check_same_grid(geometry, "mask")?;
        if labels.len() != geometry.voxel_count() {
            return Err(Error::Shape {
                what: "mask data length".into(),
                expected: format!("{} voxels (dims {:?})", geometry.voxel_count(), geometry.dims),
                found: labels.len().to_string(),
            });
        }
        let view = self.reorientation.view(geometry.dims);
        Ok(match self.mask_interpolation {
            Interpolation::Nearest => resample::nearest(labels, &view, &self.crop_canonical, self.shape),
            Interpolation::Trilinear => resample::majority(labels, &view, &self.crop_canonical, self.shape),
        })
    }
}

/// Integer labels from a volume read from a label file (e.g. an NRRD or NIfTI segmentation):
/// every value must be an integer in 0..=65535.
pub fn labels_from_volume(volume: &Volume) -> Result<Vec<u16>> {
    let mut out = Vec::with_capacity(volume.data().len());
    for (i, &v) in volume.data().iter().enumerate() {
        if !((0.0..=65535.0).contains(&v) && v.fract() == 0.0) {
            let [nx, ny, _] = volume.dims();
            return Err(Error::format(
                volume.source(),
                format!(
                    "label value {v} at voxel ({}, {}, {}) is not an integer in 0..=65535",
                    i % nx,
                    (i / nx) % ny,
                    i / (nx * ny)
                ),
            ));
        }
        out.push(v as u16);
    }
    Ok(out)
}
