//! CT volume input: NIfTI-1 files ([`nifti`]), NRRD files ([`nrrd`]) and caller buffers
//! ([`buffer`]), all producing one [`Volume`].
//!
//! A [`Volume`] holds
//! * voxels as f32 Hounsfield units (after the file's or caller's rescale), x fastest, then y,
//!   then z: voxel `(x, y, z)` is `data[x + nx * (y + ny * z)]`;
//! * its [`Geometry`]: dims `[nx, ny, nz]` and a 4×4 voxel → patient affine in **RAS+** mm
//!   (NRRD/DICOM LPS+ inputs are converted at load time; see [`geometry`]); spacing is the
//!   affine's column lengths;
//! * the stored element type and a one-line description of the source.
//!
//! Every input is checked before anything sized by it is allocated (dims ≤ [`MAX_AXIS`] per
//! axis and ≤ [`MAX_VOXELS`] in all, data present in full), and after decoding (no NaN/Inf
//! voxel). Bad input is a `crate::Error`, never a panic.

pub mod buffer;
pub mod geometry;
pub mod nifti;
pub mod nrrd;

use std::io::Read;
use std::path::Path;

use serde::Serialize;

pub use buffer::{ByteOrder, Coordinates, DType, VoxelBuffer};
pub use geometry::{Affine, Geometry, GEOMETRY_TOL_DIR, GEOMETRY_TOL_MM, MAX_AXIS, MAX_VOXELS};

use crate::error::{Error, Result};

/// A 3D CT volume in Hounsfield units with its geometry (see the module doc).
#[derive(Clone, Debug)]
pub struct Volume {
    data: Vec<f32>,
    geometry: Geometry,
    dtype: DType,
    source: String,
}

/// A summary of a volume (what `medregion volume-info` prints).
#[derive(Clone, Debug, Serialize)]
pub struct VolumeSummary {
    pub source: String,
    pub stored_dtype: DType,
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Voxel → RAS+ mm, row-major.
    pub affine_ras: Affine,
    /// nibabel `aff2axcodes` of the voxel axes, e.g. `"LPS"`.
    pub orientation: String,
    /// `[min, max]` in HU.
    pub hu_range: [f32; 2],
    pub hu_mean: f64,
}

impl Volume {
    /// Reads a NIfTI-1 (`.nii`, `.nii.gz`) or NRRD (`.nrrd`, attached data) file, recognised by
    /// its content (`NRRD000x` magic, else NIfTI-1, gzip or not).
    pub fn load(path: impl AsRef<Path>) -> Result<Volume> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        let name = path.display().to_string();
        let lower = name.to_ascii_lowercase();
        if bytes.starts_with(b"NRRD") {
            nrrd::read_bytes(&bytes, &name)
        } else if lower.ends_with(".nrrd") || lower.ends_with(".nhdr") {
            Err(Error::format(name, "not an NRRD file: it does not start with the magic \"NRRD\""))
        } else {
            nifti::read_bytes(&bytes, &name)
        }
    }

    /// A volume from decoded HU values (x fastest) and a checked geometry; refuses a length
    /// that does not match the dims and NaN/Inf values.
    pub fn from_vec(data: Vec<f32>, geometry: Geometry, source: impl Into<String>) -> Result<Volume> {
        if data.len() != geometry.voxel_count() {
            return Err(Error::Shape {
                what: "voxel data length".into(),
                expected: format!("{} (dims {:?})", geometry.voxel_count(), geometry.dims),
                found: data.len().to_string(),
            });
        }
        if let Some((count, p)) = geometry::non_finite(&data, geometry.dims) {
            return Err(Error::invalid(
                "data",
                format!(
                    "{count} voxels are NaN or infinite; the first is at voxel ({}, {}, {})",
                    p[0], p[1], p[2]
                ),
            ));
        }
        Ok(Volume { data, geometry, dtype: DType::F32, source: source.into() })
    }

    /// HU values, `data[x + nx * (y + ny * z)]`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The voxel values, consuming the volume.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// `[nx, ny, nz]`.
    pub fn dims(&self) -> [usize; 3] {
        self.geometry.dims
    }

    /// Spacing in mm along x, y, z.
    pub fn spacing(&self) -> [f64; 3] {
        self.geometry.spacing()
    }

    /// Voxel → RAS+ mm affine.
    pub fn affine(&self) -> &Affine {
        &self.geometry.affine
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The element type the voxels were stored as.
    pub fn stored_dtype(&self) -> DType {
        self.dtype
    }

    /// Where the volume came from (file name, format, type, encoding).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The HU value at voxel `(x, y, z)`, `None` outside.
    pub fn get(&self, x: usize, y: usize, z: usize) -> Option<f32> {
        let [nx, ny, nz] = self.geometry.dims;
        (x < nx && y < ny && z < nz).then(|| self.data[x + nx * (y + ny * z)])
    }

    /// `[min, max]` HU.
    pub fn hu_range(&self) -> [f32; 2] {
        self.data.iter().fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], &v| [lo.min(v), hi.max(v)])
    }

    /// Orientation code of the voxel axes (nibabel `aff2axcodes`), e.g. `"LPS"`.
    pub fn orientation_code(&self) -> String {
        self.geometry.orientation_code()
    }

    /// Dims, spacing, affine, orientation and HU statistics.
    pub fn summary(&self) -> VolumeSummary {
        let sum: f64 = self.data.iter().map(|&v| f64::from(v)).sum();
        VolumeSummary {
            source: self.source.clone(),
            stored_dtype: self.dtype,
            dims: self.dims(),
            spacing_mm: self.spacing(),
            affine_ras: self.geometry.affine,
            orientation: self.orientation_code(),
            hu_range: self.hu_range(),
            hu_mean: sum / self.data.len() as f64,
        }
    }
}

/// Reads exactly `len` bytes of voxel data from `reader` (a gzip stream), growing the buffer
/// as data arrives, so a header that claims more than the stream holds costs no more memory
/// than the stream's real content. Short data is a "truncated" [`Error::Format`].
pub(crate) fn read_exact_bounded(reader: &mut impl Read, len: usize, what: &str) -> Result<Vec<u8>> {
    const FIRST_CHUNK: usize = 64 << 20;
    let mut out = Vec::with_capacity(len.min(FIRST_CHUNK));
    let got = reader
        .take(len as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::format(what, format!("corrupt or truncated compressed data: {e}")))?;
    if got < len {
        return Err(Error::format(
            what,
            format!("truncated: {len} bytes of voxel data expected, the stream ends after {got}"),
        ));
    }
    Ok(out)
}

/// Reads (at most 64 KiB of) what follows the voxel data in a gzip stream, so that a corrupt
/// stream (CRC or length mismatch, missing trailer) is reported.
pub(crate) fn check_gzip_tail(reader: &mut impl Read, what: &str) -> Result<()> {
    std::io::copy(&mut reader.take(64 << 10), &mut std::io::sink()).map(|_| ()).map_err(|e| {
        Error::format(what, format!("corrupt or truncated gzip stream after the voxel data: {e}"))
    })
}
