//! CT volumes through the C ABI: `mr_volume_load`, `mr_volume_buffer_default`,
//! `mr_volume_from_buffer`, `mr_volume_free` and the getters `mr_volume_dims`,
//! `mr_volume_spacing`, `mr_volume_affine`, `mr_volume_hu_range`.
//!
//! An `mr_volume` is immutable once made and may be read from any number of threads at once.
//! Conventions of the volume (see `crate::volume`): voxels are f32 HU, x fastest; the affine
//! maps voxel indices to RAS+ millimetres, row-major.

use std::ffi::{c_char, c_void};

use super::boundary::status_call;
use super::status::*;
use super::util::{c_str, non_null, non_null_mut};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::mr_log;
use crate::volume::{Coordinates, DType, Volume, VoxelBuffer};

/// A CT volume (opaque): f32 HU voxels and their geometry. Immutable; thread-safe; free with
/// `mr_volume_free`.
pub struct mr_volume {
    pub(crate) volume: Volume,
}

/// Element type of a caller's voxel buffer.
pub type mr_dtype = u32;
/// Signed 8-bit integers.
pub const MR_DTYPE_I8: mr_dtype = 1;
/// Unsigned 8-bit integers.
pub const MR_DTYPE_U8: mr_dtype = 2;
/// Signed 16-bit integers (the usual CT storage).
pub const MR_DTYPE_I16: mr_dtype = 3;
/// Unsigned 16-bit integers.
pub const MR_DTYPE_U16: mr_dtype = 4;
/// Signed 32-bit integers.
pub const MR_DTYPE_I32: mr_dtype = 5;
/// 32-bit floats.
pub const MR_DTYPE_F32: mr_dtype = 6;
/// 64-bit floats.
pub const MR_DTYPE_F64: mr_dtype = 7;

/// Patient coordinate system of a caller's affine.
pub type mr_coordinates = u32;
/// Not set: `mr_volume_from_buffer` refuses it, so that left/right is never guessed.
pub const MR_COORDS_UNSET: mr_coordinates = 0;
/// RAS+ (NIfTI, nibabel): +x Right, +y Anterior, +z Superior.
pub const MR_COORDS_RAS: mr_coordinates = 1;
/// LPS+ (DICOM, ITK): +x Left, +y Posterior, +z Superior.
pub const MR_COORDS_LPS: mr_coordinates = 2;

/// A voxel buffer in caller memory, read during `mr_volume_from_buffer` only (copied, never
/// retained or modified). Fill with `mr_volume_buffer_default`, then set the fields.
#[repr(C)]
pub struct mr_volume_buffer {
    /// `sizeof(mr_volume_buffer)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `MR_DTYPE_*`; elements in the machine's native byte order.
    pub dtype: mr_dtype,
    /// The voxel bytes (need not be aligned).
    pub data: *const c_void,
    /// Readable bytes at `data`; must cover every voxel that `dims` and `strides` address.
    pub data_len: usize,
    /// Voxels along x, y, z (each 1..=4096, at most 2^30 in all).
    pub dims: [usize; 3],
    /// Byte step between neighbours along x, y, z, each > 0 and not overlapping; all three 0
    /// (the default) means dense with x fastest. Flipped axes go in the affine, not here.
    pub strides: [i64; 3],
    /// Spacing in mm along x, y, z; all three 0 (the default) means "the affine's column
    /// lengths". Given together with an affine, both must agree.
    pub spacing: [f64; 3],
    /// Voxel index -> patient mm, 4x4 row-major, in `coordinates`; all 16 zero (the default)
    /// means `diag(spacing)` with origin 0 (axes along the patient axes of `coordinates`).
    pub affine: [f64; 16],
    /// `MR_COORDS_LPS` (DICOM) or `MR_COORDS_RAS` (NIfTI); required.
    pub coordinates: mr_coordinates,
    /// Zero.
    pub reserved: u32,
    /// HU = `rescale_slope * stored + rescale_intercept` (DICOM Rescale Slope/Intercept);
    /// default 1 and 0.
    pub rescale_slope: f64,
    /// See `rescale_slope`.
    pub rescale_intercept: f64,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<mr_volume_buffer>() == 8 + 8 + 8 + 24 + 24 + 24 + 128 + 8 + 16);

fn default_buffer() -> mr_volume_buffer {
    mr_volume_buffer {
        struct_size: std::mem::size_of::<mr_volume_buffer>() as u32,
        dtype: MR_DTYPE_I16,
        data: std::ptr::null(),
        data_len: 0,
        dims: [0; 3],
        strides: [0; 3],
        spacing: [0.0; 3],
        affine: [0.0; 16],
        coordinates: MR_COORDS_UNSET,
        reserved: 0,
        rescale_slope: 1.0,
        rescale_intercept: 0.0,
    }
}

/// Fills `*out` with the defaults (int16, dense strides, rescale 1/0, coordinates unset, no
/// data) and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_volume_buffer`.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_buffer_default(out: *mut mr_volume_buffer) -> mr_status {
    status_call("mr_volume_buffer_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_buffer();
        Ok(())
    })
}

/// Reads a NIfTI-1 (`.nii`, `.nii.gz`) or NRRD (`.nrrd`) file at `path` (UTF-8). On success
/// `*out` receives the volume; on failure `*out` is untouched and the last error says why
/// (`MR_ERR_IO` unreadable file, `MR_ERR_FORMAT` malformed or truncated, `MR_ERR_SHAPE` not 3D
/// or too large, `MR_ERR_UNSUPPORTED` e.g. NIfTI-2 or detached NRRD data). Thread-safe.
///
/// # Safety
/// `path` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_load(path: *const c_char, out: *mut *mut mr_volume) -> mr_status {
    status_call("mr_volume_load", || {
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        let volume = Volume::load(path)?;
        mr_log!(Level::Info, "loaded volume {}", volume.source());
        *out = Box::into_raw(Box::new(mr_volume { volume }));
        Ok(())
    })
}

/// The caller's struct as the Rust description, after checking `struct_size`.
///
/// # Safety
/// `desc` non-NULL and readable for its `struct_size` bytes; `desc->data` readable for
/// `desc->data_len` bytes.
pub(crate) unsafe fn buffer_view<'a>(desc: *const mr_volume_buffer) -> Result<VoxelBuffer<'a>> {
    // SAFETY: `struct_size` is the first field of every version of the struct; read it alone
    // before trusting the caller's struct to be as large as ours.
    let size = unsafe { desc.cast::<u32>().read_unaligned() };
    let need = std::mem::size_of::<mr_volume_buffer>() as u32;
    if size < need {
        return Err(Error::invalid(
            "desc->struct_size",
            format!("is {size}, at least {need} needed (call mr_volume_buffer_default first)"),
        ));
    }
    // SAFETY: readable for at least `need` bytes, checked just above.
    let d = unsafe { &*desc };
    let dtype = match d.dtype {
        MR_DTYPE_I8 => DType::I8,
        MR_DTYPE_U8 => DType::U8,
        MR_DTYPE_I16 => DType::I16,
        MR_DTYPE_U16 => DType::U16,
        MR_DTYPE_I32 => DType::I32,
        MR_DTYPE_F32 => DType::F32,
        MR_DTYPE_F64 => DType::F64,
        other => return Err(Error::invalid("desc->dtype", format!("{other} is not an MR_DTYPE_* value"))),
    };
    let coordinates = match d.coordinates {
        MR_COORDS_RAS => Coordinates::Ras,
        MR_COORDS_LPS => Coordinates::Lps,
        other => {
            return Err(Error::invalid(
                "desc->coordinates",
                format!(
                    "is {other}: set MR_COORDS_LPS (DICOM) or MR_COORDS_RAS (NIfTI) so left/right is known"
                ),
            ))
        }
    };
    if d.data.is_null() {
        return Err(Error::NullPointer("desc->data"));
    }
    if d.data_len > isize::MAX as usize {
        return Err(Error::invalid("desc->data_len", "larger than the address space"));
    }
    // SAFETY: non-NULL, and the caller guarantees `data_len` readable bytes for this call.
    let data = unsafe { std::slice::from_raw_parts(d.data.cast::<u8>(), d.data_len) };
    let mut affine = [[0.0; 4]; 4];
    for (r, row) in affine.iter_mut().enumerate() {
        row.copy_from_slice(&d.affine[4 * r..4 * r + 4]);
    }
    Ok(VoxelBuffer {
        data,
        dtype,
        dims: d.dims,
        strides: (d.strides != [0; 3]).then_some(d.strides),
        spacing: (d.spacing != [0.0; 3]).then_some(d.spacing),
        affine: (d.affine != [0.0; 16]).then_some(affine),
        coordinates,
        rescale_slope: d.rescale_slope,
        rescale_intercept: d.rescale_intercept,
    })
}

/// Copies a caller's voxel buffer into a new volume (see `mr_volume_buffer`). Nothing the
/// caller owns is modified or retained. On failure `*out` is untouched (`MR_ERR_SHAPE`: dims out
/// of range or a buffer shorter than dims x strides; `MR_ERR_INVALID_ARGUMENT`: bad strides,
/// spacing, affine, rescale, coordinates, or NaN/Inf voxels). Thread-safe.
///
/// # Safety
/// `desc` NULL or a readable `mr_volume_buffer` whose `data` is readable for `data_len` bytes;
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_from_buffer(
    desc: *const mr_volume_buffer,
    out: *mut *mut mr_volume,
) -> mr_status {
    status_call("mr_volume_from_buffer", || {
        if desc.is_null() {
            return Err(Error::NullPointer("desc"));
        }
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract; `desc` is non-NULL.
        let buffer = unsafe { buffer_view(desc) }?;
        let volume = Volume::from_buffer(&buffer)?;
        *out = Box::into_raw(Box::new(mr_volume { volume }));
        Ok(())
    })
}

/// Frees a volume. NULL is a no-op.
///
/// # Safety
/// `volume` must be NULL or a pointer from `mr_volume_load` / `mr_volume_from_buffer` not yet
/// freed.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_free(volume: *mut mr_volume) {
    if volume.is_null() {
        return;
    }
    status_call("mr_volume_free", || {
        // SAFETY: the pointer came from Box::into_raw in mr_volume_* (caller contract).
        drop(unsafe { Box::from_raw(volume) });
        Ok(())
    });
}

/// Writes the voxel counts along x, y, z to `out[0..3]`. Thread-safe.
///
/// # Safety
/// `volume` NULL or live; `out` NULL or writable for 3 `size_t`.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_dims(volume: *const mr_volume, out: *mut usize) -> mr_status {
    status_call("mr_volume_dims", || {
        // SAFETY: forwarded caller contract.
        let v = &unsafe { non_null(volume, "volume") }?.volume;
        if out.is_null() {
            return Err(Error::NullPointer("out"));
        }
        // SAFETY: non-NULL and writable for 3 elements per the contract.
        unsafe { std::slice::from_raw_parts_mut(out, 3) }.copy_from_slice(&v.dims());
        Ok(())
    })
}

/// Writes the spacing in mm along x, y, z to `out[0..3]`. Thread-safe.
///
/// # Safety
/// `volume` NULL or live; `out` NULL or writable for 3 `double`.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_spacing(volume: *const mr_volume, out: *mut f64) -> mr_status {
    status_call("mr_volume_spacing", || {
        // SAFETY: forwarded caller contract.
        let v = &unsafe { non_null(volume, "volume") }?.volume;
        if out.is_null() {
            return Err(Error::NullPointer("out"));
        }
        // SAFETY: non-NULL and writable for 3 elements per the contract.
        unsafe { std::slice::from_raw_parts_mut(out, 3) }.copy_from_slice(&v.spacing());
        Ok(())
    })
}

/// Writes the voxel index -> RAS+ mm affine, 4x4 row-major, to `out[0..16]` (LPS inputs are
/// converted: negate rows 0 and 1 to get LPS). Thread-safe.
///
/// # Safety
/// `volume` NULL or live; `out` NULL or writable for 16 `double`.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_affine(volume: *const mr_volume, out: *mut f64) -> mr_status {
    status_call("mr_volume_affine", || {
        // SAFETY: forwarded caller contract.
        let v = &unsafe { non_null(volume, "volume") }?.volume;
        if out.is_null() {
            return Err(Error::NullPointer("out"));
        }
        // SAFETY: non-NULL and writable for 16 elements per the contract.
        let dst = unsafe { std::slice::from_raw_parts_mut(out, 16) };
        for (r, row) in v.affine().iter().enumerate() {
            dst[4 * r..4 * r + 4].copy_from_slice(row);
        }
        Ok(())
    })
}

/// Writes the smallest and largest voxel value in HU to `out[0..2]`. Thread-safe.
///
/// # Safety
/// `volume` NULL or live; `out` NULL or writable for 2 `double`.
#[no_mangle]
pub unsafe extern "C" fn mr_volume_hu_range(volume: *const mr_volume, out: *mut f64) -> mr_status {
    status_call("mr_volume_hu_range", || {
        // SAFETY: forwarded caller contract.
        let v = &unsafe { non_null(volume, "volume") }?.volume;
        if out.is_null() {
            return Err(Error::NullPointer("out"));
        }
        let [lo, hi] = v.hu_range();
        // SAFETY: non-NULL and writable for 2 elements per the contract.
        unsafe { std::slice::from_raw_parts_mut(out, 2) }.copy_from_slice(&[f64::from(lo), f64::from(hi)]);
        Ok(())
    })
}
