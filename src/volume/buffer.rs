//! Voxel decoding shared by every input, and volumes from a caller's in-memory buffer.
//!
//! All three inputs (NIfTI-1, NRRD, a caller's buffer) end in the same place: raw elements of a
//! [`DType`] in a byte order, converted to f32 as `slope · raw + intercept` computed in f64 (so
//! i32 and f64 inputs are rounded once, to f32, at the end). Identity rescale (1, 0) skips the
//! arithmetic. Unaligned data is fine: elements are read with `from_{le,be,ne}_bytes`.
//!
//! Caller buffers ([`VoxelBuffer`], the C struct `mr_volume_buffer`): elements in native byte
//! order; byte strides per axis, **positive only** (a flipped axis is expressed by the affine,
//! not by a negative stride), or `None` for dense x-fastest data; the layout must not overlap
//! itself (sorted by stride, each stride at least the extent of the axes below it). The buffer
//! is read during the call only and copied into the [`Volume`]; nothing it points to is
//! modified or retained.

use serde::Serialize;

use super::geometry::{self, check_dims, lps_to_ras, non_finite, Affine, Geometry};
use super::Volume;
use crate::error::{Error, Result};

/// Element type of stored voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 => 8,
        }
    }

    /// Lower-case name (`"int16"`, `"float32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::U32 => "uint32",
            DType::I64 => "int64",
            DType::U64 => "uint64",
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }
}

/// Byte order of stored elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    /// The byte order of this machine.
    pub const NATIVE: ByteOrder =
        if cfg!(target_endian = "big") { ByteOrder::Big } else { ByteOrder::Little };
}

/// Patient coordinate system of a caller-supplied affine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Coordinates {
    /// RAS+ (NIfTI, nibabel): +x Right, +y Anterior, +z Superior.
    Ras,
    /// LPS+ (DICOM, ITK): +x Left, +y Posterior, +z Superior.
    Lps,
}

/// Element → f64 conversion from a byte order (one impl per stored type).
trait Element: Copy {
    const SIZE: usize;
    fn read(bytes: &[u8], order: ByteOrder) -> f64;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline(always)]
            fn read(bytes: &[u8], order: ByteOrder) -> f64 {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&bytes[..Self::SIZE]);
                (match order {
                    ByteOrder::Little => <$t>::from_le_bytes(a),
                    ByteOrder::Big => <$t>::from_be_bytes(a),
                }) as f64
            }
        }
    };
}
element!(i8);
element!(u8);
element!(i16);
element!(u16);
element!(i32);
element!(u32);
element!(i64);
element!(u64);
element!(f32);
element!(f64);

/// `slope · x + intercept`, rounded to f32; the identity skips the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rescale {
    pub slope: f64,
    pub intercept: f64,
}

impl Rescale {
    pub const IDENTITY: Rescale = Rescale { slope: 1.0, intercept: 0.0 };

    #[inline(always)]
    fn apply(self, x: f64) -> f32 {
        if self == Rescale::IDENTITY {
            x as f32
        } else {
            (self.slope * x + self.intercept) as f32
        }
    }
}

fn decode_dense_as<T: Element>(bytes: &[u8], order: ByteOrder, rescale: Rescale) -> Vec<f32> {
    // One loop per (byte order, identity rescale) so neither test runs per element.
    let chunks = bytes.chunks_exact(T::SIZE);
    match (order, rescale == Rescale::IDENTITY) {
        (ByteOrder::Little, true) => chunks.map(|c| T::read(c, ByteOrder::Little) as f32).collect(),
        (ByteOrder::Big, true) => chunks.map(|c| T::read(c, ByteOrder::Big) as f32).collect(),
        (order, false) => chunks.map(|c| rescale.apply(T::read(c, order))).collect(),
    }
}

/// Every element of dense `bytes` (whose length is a multiple of the element size) as f32.
/// Called only once the bytes are present, so the output is sized by real data.
pub(crate) fn decode_dense(bytes: &[u8], dtype: DType, order: ByteOrder, rescale: Rescale) -> Vec<f32> {
    match dtype {
        DType::I8 => decode_dense_as::<i8>(bytes, order, rescale),
        DType::U8 => decode_dense_as::<u8>(bytes, order, rescale),
        DType::I16 => decode_dense_as::<i16>(bytes, order, rescale),
        DType::U16 => decode_dense_as::<u16>(bytes, order, rescale),
        DType::I32 => decode_dense_as::<i32>(bytes, order, rescale),
        DType::U32 => decode_dense_as::<u32>(bytes, order, rescale),
        DType::I64 => decode_dense_as::<i64>(bytes, order, rescale),
        DType::U64 => decode_dense_as::<u64>(bytes, order, rescale),
        DType::F32 => decode_dense_as::<f32>(bytes, order, rescale),
        DType::F64 => decode_dense_as::<f64>(bytes, order, rescale),
    }
}

fn decode_strided_as<T: Element>(
    bytes: &[u8],
    dims: [usize; 3],
    strides: [usize; 3],
    rescale: Rescale,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            let row = z * strides[2] + y * strides[1];
            out.extend(
                (0..dims[0])
                    .map(|x| rescale.apply(T::read(&bytes[row + x * strides[0]..], ByteOrder::NATIVE))),
            );
        }
    }
    out
}

/// A caller's voxel buffer, borrowed for the duration of [`Volume::from_buffer`].
#[derive(Clone, Copy, Debug)]
pub struct VoxelBuffer<'a> {
    /// The voxel bytes, elements in native byte order.
    pub data: &'a [u8],
    pub dtype: DType,
    /// `[nx, ny, nz]`.
    pub dims: [usize; 3],
    /// Byte step between neighbours along x, y, z (all > 0); `None`: dense, x fastest.
    pub strides: Option<[i64; 3]>,
    /// Spacing in mm; `None`: the affine's column lengths. Both given: they must agree.
    pub spacing: Option<[f64; 3]>,
    /// Voxel → patient affine in `coordinates`; `None`: `diag(spacing)` (axes along the
    /// patient axes of `coordinates`, origin 0).
    pub affine: Option<Affine>,
    /// The patient frame of `affine` (or of the axis-aligned grid when `affine` is `None`).
    pub coordinates: Coordinates,
    /// HU = `rescale_slope · stored + rescale_intercept` (DICOM Rescale Slope / Intercept).
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

impl<'a> VoxelBuffer<'a> {
    /// A dense x-fastest buffer with identity rescale; set `spacing` and/or `affine` next.
    pub fn dense(data: &'a [u8], dtype: DType, dims: [usize; 3], coordinates: Coordinates) -> Self {
        VoxelBuffer {
            data,
            dtype,
            dims,
            strides: None,
            spacing: None,
            affine: None,
            coordinates,
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
        }
    }
}

/// Byte strides checked: positive, non-overlapping, and the farthest element inside `len`.
fn checked_strides(buf: &VoxelBuffer<'_>) -> Result<[usize; 3]> {
    let size = buf.dtype.size();
    let d = buf.dims;
    let strides = match buf.strides {
        None => {
            let sx = size;
            let sy = d[0].checked_mul(sx);
            let sz = sy.and_then(|sy| sy.checked_mul(d[1]));
            match (sy, sz) {
                (Some(sy), Some(sz)) => [sx, sy, sz],
                _ => return Err(Error::invalid("dims", "dims × element size overflows")),
            }
        }
        Some(s) => {
            if let Some(axis) = s.iter().position(|&v| v <= 0) {
                return Err(Error::invalid(
                    "strides",
                    format!(
                        "byte strides must be positive (found {:?}, axis {axis}); express flipped axes \
                         through the affine",
                        s
                    ),
                ));
            }
            let mut u = [0usize; 3];
            for (dst, &src) in u.iter_mut().zip(s.iter()) {
                *dst = usize::try_from(src).map_err(|_| Error::invalid("strides", "stride too large"))?;
            }
            // Non-overlap: sorted by stride, each at least the extent of the smaller axes.
            let mut order = [0usize, 1, 2];
            order.sort_by_key(|&a| u[a]);
            let mut extent = size;
            for &a in &order {
                if d[a] == 1 {
                    continue;
                }
                if u[a] < extent {
                    return Err(Error::invalid(
                        "strides",
                        format!(
                            "byte strides {:?} with dims {:?} and {size}-byte elements make voxels overlap",
                            s, d
                        ),
                    ));
                }
                extent = u[a].saturating_mul(d[a]);
            }
            u
        }
    };
    let last =
        (0..3).try_fold(size, |acc, a| (d[a] - 1).checked_mul(strides[a]).and_then(|o| acc.checked_add(o)));
    match last {
        Some(need) if need <= buf.data.len() => Ok(strides),
        _ => Err(Error::Shape {
            what: "voxel buffer length".into(),
            expected: match last {
                Some(need) => format!(
                    "at least {need} bytes for dims {:?}, byte strides {:?}, {}",
                    d,
                    strides,
                    buf.dtype.name()
                ),
                None => "a size that fits in memory".into(),
            },
            found: format!("{} bytes", buf.data.len()),
        }),
    }
}

/// The RAS+ affine of a buffer from its affine and/or spacing.
fn buffer_affine(buf: &VoxelBuffer<'_>) -> Result<Affine> {
    if let Some(s) = buf.spacing {
        if let Some(axis) = s.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
            return Err(Error::invalid(
                "spacing",
                format!("spacing must be finite and > 0 mm, found {:?} (axis {axis})", s),
            ));
        }
    }
    let native = match (buf.affine, buf.spacing) {
        (Some(a), spacing) => {
            geometry::check_affine(&a).map_err(|r| Error::invalid("affine", r))?;
            if let Some(s) = spacing {
                let n = geometry::column_norms(&a);
                if (0..3).any(|i| (n[i] - s[i]).abs() > 1e-4 * s[i].max(1.0)) {
                    return Err(Error::Shape {
                        what: "spacing vs affine column lengths".into(),
                        expected: format!("{:?}", n),
                        found: format!("{:?}", s),
                    });
                }
            }
            a
        }
        (None, Some(s)) => {
            [[s[0], 0.0, 0.0, 0.0], [0.0, s[1], 0.0, 0.0], [0.0, 0.0, s[2], 0.0], [0.0, 0.0, 0.0, 1.0]]
        }
        (None, None) => return Err(Error::invalid("spacing", "give the spacing, the affine, or both")),
    };
    Ok(match buf.coordinates {
        Coordinates::Ras => native,
        Coordinates::Lps => lps_to_ras(&native),
    })
}

impl Volume {
    /// Copies a caller's buffer into a volume (see the module doc for the layout rules).
    ///
    /// Errors: dims out of range or a buffer shorter than dims × strides ([`Error::Shape`]);
    /// non-positive or overlapping strides, bad spacing, a non-invertible affine, a bad rescale,
    /// NaN/Inf voxels ([`Error::InvalidArgument`], naming the count and first voxel).
    pub fn from_buffer(buf: &VoxelBuffer<'_>) -> Result<Volume> {
        check_dims(&buf.dims, "voxel buffer")?;
        let affine = buffer_affine(buf)?;
        let (slope, intercept) = (buf.rescale_slope, buf.rescale_intercept);
        if !(slope.is_finite() && slope != 0.0 && intercept.is_finite()) {
            return Err(Error::invalid(
                "rescale",
                format!("slope must be finite and non-zero, intercept finite (found {slope}, {intercept})"),
            ));
        }
        let strides = checked_strides(buf)?;
        let geometry = Geometry::new(buf.dims, affine, "affine")?;
        let rescale = Rescale { slope, intercept };
        let b = buf.data;
        let data = match buf.dtype {
            DType::I8 => decode_strided_as::<i8>(b, buf.dims, strides, rescale),
            DType::U8 => decode_strided_as::<u8>(b, buf.dims, strides, rescale),
            DType::I16 => decode_strided_as::<i16>(b, buf.dims, strides, rescale),
            DType::U16 => decode_strided_as::<u16>(b, buf.dims, strides, rescale),
            DType::I32 => decode_strided_as::<i32>(b, buf.dims, strides, rescale),
            DType::U32 => decode_strided_as::<u32>(b, buf.dims, strides, rescale),
            DType::I64 => decode_strided_as::<i64>(b, buf.dims, strides, rescale),
            DType::U64 => decode_strided_as::<u64>(b, buf.dims, strides, rescale),
            DType::F32 => decode_strided_as::<f32>(b, buf.dims, strides, rescale),
            DType::F64 => decode_strided_as::<f64>(b, buf.dims, strides, rescale),
        };
        if let Some((count, p)) = non_finite(&data, buf.dims) {
            return Err(Error::invalid(
                "data",
                format!(
                    "{count} voxels are NaN or infinite after rescale; the first is at voxel ({}, {}, {})",
                    p[0], p[1], p[2]
                ),
            ));
        }
        let source = format!(
            "buffer ({}, {}x{}x{}, {:?})",
            buf.dtype.name(),
            buf.dims[0],
            buf.dims[1],
            buf.dims[2],
            buf.coordinates
        );
        Ok(Volume { data, geometry, dtype: buf.dtype, source })
    }
}
