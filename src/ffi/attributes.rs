//! Patient-specific attributes through the C ABI: `mr_attributes_params_default`,
//! `mr_attributes_compute`, `mr_attributes_json`, `mr_attributes_text`, `mr_attributes_free`.
//! No model is needed. The result is an owned, immutable `mr_attributes` (thread-safe to read);
//! its JSON and text are copied out with the size-reporting convention of `mr_last_error_copy`.

use std::ffi::c_char;

use super::boundary::status_call;
use super::status::*;
use super::util::{c_str, copy_out_str, non_null, non_null_mut, read_versioned};
use super::volume::mr_volume;
use crate::attributes::{compute_volumes, Attributes, LabelScheme};
use crate::error::{Error, Result};
use crate::model::config::AttributeConfig;

/// Which label table a label map uses.
pub type mr_label_table = u32;
/// TotalSegmentator v2 `total` ids (plus the lesion subtasks at 118..; see README).
pub const MR_LABELS_TOTALSEG: mr_label_table = 0;
/// RadGenome-ChestCT regions merged into one map, ids 1..=10.
pub const MR_LABELS_RADGENOME: mr_label_table = 1;
/// A JSON label configuration given in `label_table_json`.
pub const MR_LABELS_JSON: mr_label_table = 2;
/// TotalSegmentator v2 subtask `lung_nodules`: {1 lung, 2 lung_nodules}.
pub const MR_LABELS_TOTALSEG_LUNG_NODULES: mr_label_table = 3;
/// TotalSegmentator v2 subtask `pleural_pericard_effusion`: {1 lung_pleural, 2 pleural_effusion,
/// 3 pericardial_effusion}.
pub const MR_LABELS_TOTALSEG_PLEURAL_PERICARD_EFFUSION: mr_label_table = 4;
/// TotalSegmentator v2 subtask `kidney_cysts`: {1 kidney_cyst_left, 2 kidney_cyst_right}.
pub const MR_LABELS_TOTALSEG_KIDNEY_CYSTS: mr_label_table = 5;

/// The scheme an `MR_LABELS_*` value selects (`json` read for `MR_LABELS_JSON`).
///
/// # Safety
/// `json` NULL or NUL-terminated.
pub(crate) unsafe fn label_scheme(label_table: mr_label_table, json: *const c_char) -> Result<LabelScheme> {
    match label_table {
        MR_LABELS_TOTALSEG => Ok(LabelScheme::totalseg()),
        MR_LABELS_RADGENOME => Ok(LabelScheme::radgenome()),
        MR_LABELS_JSON => {
            // SAFETY: forwarded caller contract.
            let json = unsafe { c_str(json, "params->label_table_json") }?;
            LabelScheme::from_json("json", json)
        }
        MR_LABELS_TOTALSEG_LUNG_NODULES => LabelScheme::totalseg_subtask("lung_nodules"),
        MR_LABELS_TOTALSEG_PLEURAL_PERICARD_EFFUSION => {
            LabelScheme::totalseg_subtask("pleural_pericard_effusion")
        }
        MR_LABELS_TOTALSEG_KIDNEY_CYSTS => LabelScheme::totalseg_subtask("kidney_cysts"),
        other => Err(Error::invalid("params->label_table", format!("{other} is not an MR_LABELS_* value"))),
    }
}

/// How to measure. Fill with `mr_attributes_params_default`, then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mr_attributes_params {
    /// `sizeof(mr_attributes_params)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `MR_LABELS_*` (default `MR_LABELS_TOTALSEG`).
    pub label_table: mr_label_table,
    /// With `MR_LABELS_JSON`: the label configuration, NUL-terminated UTF-8 JSON, e.g.
    /// `{"table": [{"id": 1, "name": "lung_nodules"}]}`. Otherwise NULL.
    pub label_table_json: *const c_char,
    /// Attribute settings as JSON (thresholds, text templates; the `attributes` section of a
    /// model config), or NULL (the default) for the built-in defaults.
    pub config_json: *const c_char,
}

/// Measured attributes (opaque, immutable, thread-safe); free with `mr_attributes_free`.
pub struct mr_attributes {
    json: String,
    text: String,
}

fn default_params() -> mr_attributes_params {
    mr_attributes_params {
        struct_size: std::mem::size_of::<mr_attributes_params>() as u32,
        label_table: MR_LABELS_TOTALSEG,
        label_table_json: std::ptr::null(),
        config_json: std::ptr::null(),
    }
}

/// Fills `*out` with the defaults (TotalSegmentator table, default settings) and the right
/// `struct_size`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_attributes_params`.
#[no_mangle]
pub unsafe extern "C" fn mr_attributes_params_default(out: *mut mr_attributes_params) -> mr_status {
    status_call("mr_attributes_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_params();
        Ok(())
    })
}

/// The label scheme and settings of the caller's params (NULL: defaults).
///
/// # Safety
/// `params` NULL or readable for its `struct_size` bytes, its strings NULL or NUL-terminated.
unsafe fn read_params(params: *const mr_attributes_params) -> Result<(LabelScheme, AttributeConfig)> {
    // SAFETY: forwarded caller contract.
    let p = unsafe { read_versioned(params, "params", default_params(), "mr_attributes_params_default") }?;
    // SAFETY: forwarded caller contract.
    let scheme = unsafe { label_scheme(p.label_table, p.label_table_json) }?;
    let config = if p.config_json.is_null() {
        AttributeConfig::default()
    } else {
        // SAFETY: forwarded caller contract; non-NULL.
        AttributeConfig::from_json(unsafe { c_str(p.config_json, "params->config_json") }?)?
    };
    Ok((scheme, config))
}

/// Measures the label map `labels` (integral, non-negative values on `ct`'s grid) of the CT
/// `ct`: organ volumes, lesions, locations (see the README section "Patient-specific
/// attributes"). `params` may be NULL (defaults). On success `*out` receives the result; on
/// failure `*out` is untouched (`MR_ERR_SHAPE`: another grid than the CT's, both described;
/// `MR_ERR_FORMAT`: a non-integral or negative label, or bad JSON in the params;
/// `MR_ERR_INVALID_ARGUMENT`: bad params). Works with no model loaded. Thread-safe.
///
/// # Safety
/// `ct`, `labels` NULL or live volumes; `params` NULL or a readable `mr_attributes_params`;
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_attributes_compute(
    ct: *const mr_volume,
    labels: *const mr_volume,
    params: *const mr_attributes_params,
    out: *mut *mut mr_attributes,
) -> mr_status {
    status_call("mr_attributes_compute", || {
        // SAFETY: forwarded caller contract.
        let ct = &unsafe { non_null(ct, "ct") }?.volume;
        // SAFETY: forwarded caller contract.
        let labels = &unsafe { non_null(labels, "labels") }?.volume;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract.
        let (scheme, config) = unsafe { read_params(params) }?;
        let doc: Attributes = compute_volumes(ct, labels, &scheme, &config)?;
        let json = serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        *out = Box::into_raw(Box::new(mr_attributes { json, text: doc.text }));
        Ok(())
    })
}

/// Copies the JSON document (schema version 1) into `buf`, NUL-terminated. `*out_needed` (if
/// not NULL) receives the size needed including the NUL, also when `buf` is too small;
/// `buf == NULL && buf_len == 0` only queries the size. Thread-safe.
///
/// # Safety
/// `attributes` a live result; `buf` NULL or writable for `buf_len` bytes; `out_needed` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mr_attributes_json(
    attributes: *const mr_attributes,
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
) -> mr_status {
    status_call("mr_attributes_json", || {
        // SAFETY: forwarded caller contract.
        let a = unsafe { non_null(attributes, "attributes") }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&a.json, buf, buf_len, out_needed, "the attributes JSON") }
    })
}

/// Copies the prompt text block into `buf`, NUL-terminated (same size convention as
/// `mr_attributes_json`). Thread-safe.
///
/// # Safety
/// As `mr_attributes_json`.
#[no_mangle]
pub unsafe extern "C" fn mr_attributes_text(
    attributes: *const mr_attributes,
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
) -> mr_status {
    status_call("mr_attributes_text", || {
        // SAFETY: forwarded caller contract.
        let a = unsafe { non_null(attributes, "attributes") }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&a.text, buf, buf_len, out_needed, "the attributes text") }
    })
}

/// Frees a result. NULL is a no-op.
///
/// # Safety
/// `attributes` NULL or a pointer from `mr_attributes_compute` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mr_attributes_free(attributes: *mut mr_attributes) {
    if attributes.is_null() {
        return;
    }
    status_call("mr_attributes_free", || {
        // SAFETY: the pointer came from Box::into_raw in mr_attributes_compute.
        drop(unsafe { Box::from_raw(attributes) });
        Ok(())
    });
}
