//! The masks input through the C ABI: `mr_masks_params_default`, `mr_masks_load` (a label-map
//! file, or a folder of binary masks by name), `mr_masks_from_buffer` (a label map in caller
//! memory), `mr_masks_from_volume`, `mr_masks_add_label_map` (e.g. a TotalSegmentator subtask
//! map with its own table), `mr_masks_report_json` and `mr_masks_free`. See the README section
//! "Masks input" and `crate::masks` for the decided behaviours.
//!
//! An `mr_masks` may be read (`mr_masks_report_json`) from any number of threads at once;
//! `mr_masks_add_label_map` changes it and must not run concurrently with any other call on
//! the same object.

use std::ffi::c_char;
use std::path::Path;

use super::attributes::{label_scheme, mr_label_table, MR_LABELS_TOTALSEG};
use super::boundary::status_call;
use super::status::*;
use super::util::{c_str, copy_out_str, non_null, non_null_mut, read_versioned};
use super::volume::{buffer_view, mr_volume, mr_volume_buffer};
use crate::error::{Error, Result};
use crate::masks::{LabelScheme, Masks};
use crate::volume::Volume;

/// Which label table masks use. Fill with `mr_masks_params_default`, then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mr_masks_params {
    /// `sizeof(mr_masks_params)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `MR_LABELS_*` (default `MR_LABELS_TOTALSEG`). For a folder of binary masks it
    /// gives the groups (slots, organs) the file names are matched against.
    pub label_table: mr_label_table,
    /// With `MR_LABELS_JSON`: the label configuration, NUL-terminated UTF-8 JSON (read during
    /// the call only). Otherwise NULL.
    pub label_table_json: *const c_char,
}

/// Organ and lesion masks on one grid (opaque); free with `mr_masks_free`.
pub struct mr_masks {
    pub(crate) masks: Masks,
    report_json: String,
}

impl mr_masks {
    fn new(masks: Masks) -> Result<mr_masks> {
        let report_json = report_json(&masks)?;
        Ok(mr_masks { masks, report_json })
    }
}

fn report_json(masks: &Masks) -> Result<String> {
    serde_json::to_string_pretty(&masks.report()).map_err(|e| Error::Internal(e.to_string()))
}

fn default_params() -> mr_masks_params {
    mr_masks_params {
        struct_size: std::mem::size_of::<mr_masks_params>() as u32,
        label_table: MR_LABELS_TOTALSEG,
        label_table_json: std::ptr::null(),
    }
}

/// Fills `*out` with the defaults (TotalSegmentator table) and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_masks_params`.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_params_default(out: *mut mr_masks_params) -> mr_status {
    status_call("mr_masks_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_params();
        Ok(())
    })
}

/// The scheme of the caller's params (NULL: the defaults).
///
/// # Safety
/// `params` NULL or readable for its `struct_size` bytes, its string NULL or NUL-terminated.
unsafe fn read_params(params: *const mr_masks_params) -> Result<LabelScheme> {
    // SAFETY: forwarded caller contract.
    let p = unsafe { read_versioned(params, "params", default_params(), "mr_masks_params_default") }?;
    // SAFETY: forwarded caller contract.
    unsafe { label_scheme(p.label_table, p.label_table_json) }
}

/// Reads masks from `path` (UTF-8): a NIfTI/NRRD label map read with the params' table, or a
/// folder of binary masks, one `<class>.nii.gz|.nii|.nrrd` per class. `params` may be NULL
/// (TotalSegmentator). On failure `*out` is untouched (`MR_ERR_IO`, `MR_ERR_FORMAT`: unreadable
/// or malformed file, non-integer labels, a mask folder without mask files, a table naming an
/// unknown class; `MR_ERR_SHAPE`: mask files of different grids). Thread-safe.
///
/// # Safety
/// `path` NULL or NUL-terminated; `params` NULL or a readable `mr_masks_params`; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_load(
    path: *const c_char,
    params: *const mr_masks_params,
    out: *mut *mut mr_masks,
) -> mr_status {
    status_call("mr_masks_load", || {
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract.
        let scheme = unsafe { read_params(params) }?;
        let m = mr_masks::new(Masks::load(Path::new(path), &scheme)?)?;
        *out = Box::into_raw(Box::new(m));
        Ok(())
    })
}

/// Masks from a label map in caller memory (`labels`, as for `mr_volume_from_buffer`: copied,
/// never retained) read with the params' table. On failure `*out` is untouched. Thread-safe.
///
/// # Safety
/// `labels` NULL or a readable `mr_volume_buffer` whose `data` is readable for `data_len`
/// bytes; `params` NULL or a readable `mr_masks_params`; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_from_buffer(
    labels: *const mr_volume_buffer,
    params: *const mr_masks_params,
    out: *mut *mut mr_masks,
) -> mr_status {
    status_call("mr_masks_from_buffer", || {
        if labels.is_null() {
            return Err(Error::NullPointer("labels"));
        }
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract; `labels` is non-NULL.
        let buffer = unsafe { buffer_view(labels) }?;
        // SAFETY: forwarded caller contract.
        let scheme = unsafe { read_params(params) }?;
        let volume = Volume::from_buffer(&buffer)?;
        let m = mr_masks::new(Masks::from_label_map(&volume, &scheme)?)?;
        *out = Box::into_raw(Box::new(m));
        Ok(())
    })
}

/// Masks from a label map already loaded as a volume (`mr_volume_load` of a segmentation).
/// On failure `*out` is untouched. Thread-safe.
///
/// # Safety
/// `labels` NULL or a live volume; `params` NULL or a readable `mr_masks_params`; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_from_volume(
    labels: *const mr_volume,
    params: *const mr_masks_params,
    out: *mut *mut mr_masks,
) -> mr_status {
    status_call("mr_masks_from_volume", || {
        // SAFETY: forwarded caller contract.
        let labels = &unsafe { non_null(labels, "labels") }?.volume;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract.
        let scheme = unsafe { read_params(params) }?;
        let m = mr_masks::new(Masks::from_label_map(labels, &scheme)?)?;
        *out = Box::into_raw(Box::new(m));
        Ok(())
    })
}

/// Adds a label map on the same grid, read with the params' table (e.g.
/// `MR_LABELS_TOTALSEG_LUNG_NODULES` for that subtask's output); slots and organs keep the
/// groups of the first table. On failure (`MR_ERR_SHAPE`: another grid, both described;
/// `MR_ERR_FORMAT`: non-integer labels) `masks` is unchanged. Not thread-safe on one `masks`.
///
/// # Safety
/// `masks` NULL or live and not used by another thread during the call; `labels` NULL or a
/// live volume; `params` NULL or a readable `mr_masks_params`.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_add_label_map(
    masks: *mut mr_masks,
    labels: *const mr_volume,
    params: *const mr_masks_params,
) -> mr_status {
    status_call("mr_masks_add_label_map", || {
        // SAFETY: forwarded caller contract.
        let m = unsafe { non_null_mut(masks, "masks") }?;
        // SAFETY: forwarded caller contract.
        let labels = &unsafe { non_null(labels, "labels") }?.volume;
        // SAFETY: forwarded caller contract.
        let scheme = unsafe { read_params(params) }?;
        // `add_label_map` changes nothing when it fails.
        m.masks.add_label_map(labels, &scheme)?;
        m.report_json = report_json(&m.masks)?;
        Ok(())
    })
}

/// Copies the masks report (JSON: sources, per slot and organ the classes found and missing,
/// unused classes, unknown label values, `empty`) into `buf`, NUL-terminated, with the size
/// convention of `mr_attributes_json`. Thread-safe.
///
/// # Safety
/// `masks` a live object; `buf` NULL or writable for `buf_len` bytes; `out_needed` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_report_json(
    masks: *const mr_masks,
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
) -> mr_status {
    status_call("mr_masks_report_json", || {
        // SAFETY: forwarded caller contract.
        let m = unsafe { non_null(masks, "masks") }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&m.report_json, buf, buf_len, out_needed, "the masks report") }
    })
}

/// Frees masks. NULL is a no-op.
///
/// # Safety
/// `masks` NULL or a pointer from `mr_masks_load` / `mr_masks_from_buffer` /
/// `mr_masks_from_volume` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mr_masks_free(masks: *mut mr_masks) {
    if masks.is_null() {
        return;
    }
    status_call("mr_masks_free", || {
        // SAFETY: the pointer came from Box::into_raw in mr_masks_* (caller contract).
        drop(unsafe { Box::from_raw(masks) });
        Ok(())
    });
}
