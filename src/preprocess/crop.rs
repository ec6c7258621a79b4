//! Foreground crop: the bounding box of the voxels whose HU is strictly above a threshold.
//!
//! Mirrors MONAI `CropForeground` (`generate_spatial_bounding_box` with `margin=0`), with the
//! foreground rule of Reg2RG (`HU > threshold`, default −1000; SPEC §2) instead of MONAI's
//! `x > 0`. The box is the tight bounding box (no margin: the model config has no margin field,
//! and MONAI's default margin is 0). When no voxel is above the threshold, nothing is cropped.
//!
//! The box is found on the stored data (one linear pass) and expressed in both stored and
//! canonical voxel indices; a reorientation only permutes and flips axes, so a box stays a box.

use serde::Serialize;

use super::orient::Reorientation;

/// A half-open voxel box `start[i] .. end[i]` per axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CropBox {
    pub start: [usize; 3],
    pub end: [usize; 3],
}

impl CropBox {
    /// The whole grid.
    pub fn full(dims: [usize; 3]) -> CropBox {
        CropBox { start: [0; 3], end: dims }
    }

    /// Size along each axis.
    pub fn size(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.end[i] - self.start[i])
    }

    /// The same box in canonical indices, for a box in stored indices of `dims`.
    pub fn to_canonical(&self, r: &Reorientation, dims: [usize; 3]) -> CropBox {
        let last = [0, 1, 2].map(|i| self.end[i] - 1);
        let a = r.to_canonical(self.start, dims);
        let b = r.to_canonical(last, dims);
        CropBox { start: [0, 1, 2].map(|i| a[i].min(b[i])), end: [0, 1, 2].map(|i| a[i].max(b[i]) + 1) }
    }
}

/// Bounding box (stored indices) of `data > threshold`, x-fastest `data` of `dims`; `None`
/// when no voxel is above the threshold.
pub fn foreground_box(data: &[f32], dims: [usize; 3], threshold: f32) -> Option<CropBox> {
    let [nx, ny, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for (r, row) in data.chunks_exact(nx).enumerate() {
        let Some(first) = row.iter().position(|&v| v > threshold) else { continue };
        let last = row.iter().rposition(|&v| v > threshold).unwrap_or(first);
        let (y, z) = (r % ny, r / ny);
        lo = [lo[0].min(first), lo[1].min(y), lo[2].min(z)];
        hi = [hi[0].max(last), hi[1].max(y), hi[2].max(z)];
    }
    (lo[0] != usize::MAX).then(|| CropBox { start: lo, end: hi.map(|v| v + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_of_two_voxels() {
        let dims = [5, 4, 3];
        let mut d = vec![-1000.0f32; 60];
        d[1 + 5 * (2 + 4 * 0)] = 0.0;
        d[3 + 5 * (1 + 4 * 2)] = 0.0;
        let b = foreground_box(&d, dims, -1000.0).unwrap();
        assert_eq!(b, CropBox { start: [1, 1, 0], end: [4, 3, 3] });
        assert_eq!(b.size(), [3, 2, 3]);
        assert!(foreground_box(&vec![-1000.0; 60], dims, -1000.0).is_none());
    }
}
