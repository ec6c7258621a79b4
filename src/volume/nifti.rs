//! NIfTI-1 single-file volumes (`.nii`, `.nii.gz`), per the NIfTI-1 standard (`nifti1.h`,
//! NIfTI DFWG 2004) and its reference reader `nifti1_io.c`.
//!
//! The 348-byte header is parsed by the `nifti` crate (`NiftiHeader::from_reader`: field
//! layout, byte-order detection by `dim[0]`, magic check). Everything after it is ours, for
//! three reasons the crate's `into_ndarray` does not meet: the header is validated before any
//! voxel memory is allocated (the crate sizes buffers from `dim[]`), a truncated file is a
//! clear error, and all inputs share one decoder ([`super::buffer`]). The crate's
//! `qform_affine` is not used either (it panics on negative spacing); the affine is computed
//! here:
//!
//! * `sform_code > 0`: method 3, the rows `srow_x`, `srow_y`, `srow_z`;
//! * else `qform_code > 0`: method 2, the quaternion (`nifti_quatern_to_mat44`): `a` from
//!   `b, c, d` (renormalised when `b² + c² + d² > 1`), spacing `pixdim[1..3]`, and
//!   `qfac = pixdim[0]`, where a negative value flips k (any other value counts as +1, as in
//!   `nifti1_io`; nibabel refuses values other than ±1);
//! * else method 1: `diag(pixdim[1], pixdim[2], pixdim[3])`, origin 0, exactly as the standard
//!   says (nibabel instead centres the grid and flips x, the ANALYZE convention).
//!
//! `pixdim[1..3]` must be finite and > 0 when methods 1 or 2 use them. The world frame is
//! NIfTI's RAS+, our convention, so no conversion follows.
//!
//! Scaling: `scl_slope == 0` (or non-finite) means no scaling, per the standard; otherwise
//! `HU = scl_slope · stored + scl_inter`, and a non-finite `scl_inter` is refused (as nibabel
//! does). Datatypes: int8/16/32/64, uint8/16/32/64, float32/64; complex and RGB are refused.
//!
//! Dimensions: `dim[0] == 3`; `dim[0]` in 4..=7 is accepted as 3D when every extra axis has
//! size 1 (e.g. a 4D file with `nt = 1`); 2D files and real 4D series are refused. The
//! two-file `.hdr`/`.img` form (magic `ni1`) and NIfTI-2 are refused as unsupported.

use std::io::Read;

use ::nifti::{Endianness, NiftiHeader, NiftiType};
use flate2::read::MultiGzDecoder;

use super::buffer::{decode_dense, ByteOrder, DType, Rescale};
use super::geometry::{check_affine, check_dims, non_finite, Affine, Geometry};
use super::{check_gzip_tail, read_exact_bounded, Volume};
use crate::error::{Error, Result};

/// NIfTI-1 header size (`sizeof_hdr`).
const HEADER_SIZE: usize = 348;
/// Smallest `vox_offset` of a single `.nii` file (header + 4-byte extension flag).
const MIN_VOX_OFFSET: usize = 352;
/// Largest `vox_offset` accepted (extensions are skipped, not stored).
const MAX_VOX_OFFSET: usize = 64 << 20;

/// Reads a NIfTI-1 file already in memory (gzip-compressed or not; detected by the gzip
/// magic bytes). `name` is used in error messages and in the volume's source.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Volume> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut stream = MultiGzDecoder::new(bytes);
        let vol = read_stream(&mut stream, None, name, "gzip")?;
        check_gzip_tail(&mut stream, name)?;
        Ok(vol)
    } else {
        let mut cursor = bytes;
        read_stream(&mut cursor, Some(bytes), name, "raw")
    }
}

/// `raw`: the whole file when it is uncompressed, so the voxel data is sliced, not copied.
fn read_stream(stream: &mut impl Read, raw: Option<&[u8]>, name: &str, encoding: &str) -> Result<Volume> {
    let mut head = [0u8; HEADER_SIZE];
    stream.read_exact(&mut head).map_err(|e| {
        Error::format(name, format!("not a NIfTI-1 file: truncated or unreadable header ({e})"))
    })?;
    let sizeof_hdr = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if sizeof_hdr != 348 && sizeof_hdr.swap_bytes() != 348 {
        if sizeof_hdr == 540 || sizeof_hdr.swap_bytes() == 540 {
            return Err(Error::Unsupported(format!("{name}: NIfTI-2 files (convert to NIfTI-1)")));
        }
        return Err(Error::format(
            name,
            format!(
                "neither NIfTI-1 (sizeof_hdr is {sizeof_hdr}, NIfTI-1 requires 348) nor NRRD (no `NRRD000x` \
                 magic)"
            ),
        ));
    }
    let hdr = NiftiHeader::from_reader(&head[..]).map_err(|_| {
        Error::format(
            name,
            format!(
                "not a NIfTI-1 file: magic is {:?}, expected \"n+1\\0\"",
                String::from_utf8_lossy(&head[344..348])
            ),
        )
    })?;
    if &hdr.magic == b"ni1\0" {
        return Err(Error::Unsupported(format!(
            "{name}: two-file NIfTI (.hdr/.img, magic \"ni1\"); convert it to a single .nii file"
        )));
    }
    let dims = volume_dims(&hdr, name)?;
    let nvox = check_dims(&dims, name)?;
    let dtype = dtype_of(&hdr, name)?;
    let rescale = rescale_of(&hdr, name)?;
    let (affine, method) = affine_of(&hdr, name)?;
    let geometry = Geometry::new(dims, affine, name)?;

    let offset = hdr.vox_offset;
    if !(offset.is_finite() && offset >= MIN_VOX_OFFSET as f32 && offset <= MAX_VOX_OFFSET as f32)
        || offset.fract() != 0.0
    {
        return Err(Error::format(
            name,
            format!("vox_offset {offset} is not an integer in {MIN_VOX_OFFSET}..={MAX_VOX_OFFSET}"),
        ));
    }
    let offset = offset as usize;
    let nbytes = nvox * dtype.size(); // nvox ≤ 2^30, size ≤ 8: no overflow on 64-bit.
    let order = match hdr.endianness {
        Endianness::Little => ByteOrder::Little,
        Endianness::Big => ByteOrder::Big,
    };
    let data = match raw {
        Some(file) => {
            let available = file.len().saturating_sub(offset);
            if available < nbytes {
                return Err(Error::format(
                    name,
                    format!(
                        "truncated: {nbytes} bytes of voxel data expected at offset {offset}, the file has {available}"
                    ),
                ));
            }
            decode_dense(&file[offset..offset + nbytes], dtype, order, rescale)
        }
        None => {
            let skip = (offset - HEADER_SIZE) as u64;
            let skipped = std::io::copy(&mut stream.take(skip), &mut std::io::sink())
                .map_err(|e| Error::format(name, format!("corrupt or truncated gzip stream: {e}")))?;
            if skipped < skip {
                return Err(Error::format(name, "truncated: the stream ends before vox_offset"));
            }
            let bytes = read_exact_bounded(stream, nbytes, name)?;
            decode_dense(&bytes, dtype, order, rescale)
        }
    };
    if let Some((count, p)) = non_finite(&data, dims) {
        return Err(Error::format(
            name,
            format!(
                "{count} voxels are NaN or infinite after scaling; the first is at voxel ({}, {}, {})",
                p[0], p[1], p[2]
            ),
        ));
    }
    let source = format!("{name} (NIfTI-1, {}, {encoding}, {method})", dtype.name());
    Ok(Volume { data, geometry, dtype, source })
}

/// `[nx, ny, nz]` from `dim[]` (see the module doc for the 4D..7D rule).
fn volume_dims(hdr: &NiftiHeader, name: &str) -> Result<[usize; 3]> {
    let d: Vec<i16> = hdr.dim.iter().map(|&v| v as i16).collect();
    let ndim = d[0];
    let extra_ok = (4..=7).contains(&ndim) && d[4..=ndim as usize].iter().all(|&v| v == 1);
    if ndim != 3 && !extra_ok {
        let found = match ndim {
            1..=7 => format!("{ndim}D, dim = {:?}", &d[1..=ndim as usize]),
            _ => format!("dim[0] = {ndim}"),
        };
        return Err(Error::Shape {
            what: format!("{name}: NIfTI dimensions"),
            expected: "a 3D volume (dim[0] = 3, or 4..7 with every axis beyond z of size 1)".into(),
            found,
        });
    }
    if d[1..=3].iter().any(|&v| v <= 0) {
        return Err(Error::Shape {
            what: format!("{name}: NIfTI dimensions"),
            expected: "dim[1..3] > 0".into(),
            found: format!("{:?}", &d[1..=3]),
        });
    }
    Ok([d[1] as usize, d[2] as usize, d[3] as usize])
}

fn dtype_of(hdr: &NiftiHeader, name: &str) -> Result<DType> {
    let t = hdr
        .data_type()
        .map_err(|_| Error::format(name, format!("unknown NIfTI datatype code {}", hdr.datatype)))?;
    let dtype = match t {
        NiftiType::Int8 => DType::I8,
        NiftiType::Uint8 => DType::U8,
        NiftiType::Int16 => DType::I16,
        NiftiType::Uint16 => DType::U16,
        NiftiType::Int32 => DType::I32,
        NiftiType::Uint32 => DType::U32,
        NiftiType::Int64 => DType::I64,
        NiftiType::Uint64 => DType::U64,
        NiftiType::Float32 => DType::F32,
        NiftiType::Float64 => DType::F64,
        other => {
            return Err(Error::Unsupported(format!(
                "{name}: NIfTI datatype {other:?} (code {}); a CT must be scalar integer or float",
                hdr.datatype
            )))
        }
    };
    if hdr.bitpix as usize != dtype.size() * 8 {
        return Err(Error::format(
            name,
            format!(
                "bitpix {} does not match datatype {} ({} bits)",
                hdr.bitpix,
                dtype.name(),
                dtype.size() * 8
            ),
        ));
    }
    Ok(dtype)
}

fn rescale_of(hdr: &NiftiHeader, name: &str) -> Result<Rescale> {
    let (slope, inter) = (f64::from(hdr.scl_slope), f64::from(hdr.scl_inter));
    if slope == 0.0 || !slope.is_finite() {
        return Ok(Rescale::IDENTITY);
    }
    if !inter.is_finite() {
        return Err(Error::format(name, format!("scl_slope {slope} is valid but scl_inter is {inter}")));
    }
    Ok(Rescale { slope, intercept: inter })
}

/// The voxel → RAS+ affine and a description of the method used.
fn affine_of(hdr: &NiftiHeader, name: &str) -> Result<(Affine, String)> {
    let (affine, method) = if hdr.sform_code > 0 {
        let row = |r: [f32; 4]| r.map(f64::from);
        let a = [row(hdr.srow_x), row(hdr.srow_y), row(hdr.srow_z), [0.0, 0.0, 0.0, 1.0]];
        (a, format!("sform code {}", hdr.sform_code))
    } else if hdr.qform_code > 0 {
        (qform_affine(hdr, pixdim_spacing(hdr, name)?), format!("qform code {}", hdr.qform_code))
    } else {
        let s = pixdim_spacing(hdr, name)?;
        let a = [[s[0], 0.0, 0.0, 0.0], [0.0, s[1], 0.0, 0.0], [0.0, 0.0, s[2], 0.0], [0.0, 0.0, 0.0, 1.0]];
        (a, "no qform/sform: pixdim only (method 1)".to_string())
    };
    check_affine(&affine).map_err(|r| Error::format(name, format!("{method}: {r}")))?;
    Ok((affine, method))
}

fn pixdim_spacing(hdr: &NiftiHeader, name: &str) -> Result<[f64; 3]> {
    let s = [hdr.pixdim[1], hdr.pixdim[2], hdr.pixdim[3]].map(f64::from);
    if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::format(
            name,
            format!("zero, negative or non-finite spacing pixdim[1..3] = {:?} (must be > 0 mm)", s),
        ));
    }
    Ok(s)
}

/// `nifti_quatern_to_mat44` of `nifti1_io.c`, in f64.
fn qform_affine(hdr: &NiftiHeader, spacing: [f64; 3]) -> Affine {
    let (mut b, mut c, mut d) =
        (f64::from(hdr.quatern_b), f64::from(hdr.quatern_c), f64::from(hdr.quatern_d));
    let mut a = 1.0 - (b * b + c * c + d * d);
    if a < 1e-7 {
        let n = 1.0 / (b * b + c * c + d * d).sqrt();
        b *= n;
        c *= n;
        d *= n;
        a = 0.0;
    } else {
        a = a.sqrt();
    }
    let [xd, yd, mut zd] = spacing;
    if hdr.pixdim[0] < 0.0 {
        zd = -zd;
    }
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let q = [hdr.quatern_x, hdr.quatern_y, hdr.quatern_z].map(f64::from);
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        m[i] = [r[i][0] * xd, r[i][1] * yd, r[i][2] * zd, q[i]];
    }
    m[3] = [0.0, 0.0, 0.0, 1.0];
    m
}
