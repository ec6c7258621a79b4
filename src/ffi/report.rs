//! The end-to-end report through the C ABI: `mr_session_generate_report` runs the whole
//! pipeline (`crate::report::generate_report_in`: preprocessing, attributes, encoder, region
//! tokens, one prompt per region, decoding) on a CT and its masks in the caller's session, and
//! returns an `mr_report`, read with `mr_report_json` / `mr_report_text` /
//! `mr_report_region_*` and freed with `mr_report_free`.
//!
//! * The call holds the session like every session call (a concurrent call on the same session
//!   gets `MR_ERR_BUSY`); it resets the session's conversation and uses its threads. Sessions
//!   over one model run reports on separate threads at once; the same inputs and options give
//!   the same bytes on any thread and with any thread count (greedy decoding).
//! * Cancelling: a callback's non-zero return or `mr_session_cancel` (any thread) stops the
//!   run at the next stage boundary, encoder batch or decode step: `MR_ERR_CANCELLED`, no
//!   report, and no callback after the one that asked.
//! * An `mr_report` is immutable: any number of threads may read it at once.

use std::ffi::{c_char, c_void, CString};
use std::ops::ControlFlow;

use super::boundary::status_call;
use super::masks::mr_masks;
use super::session::{mr_session, with_session_parts};
use super::status::*;
use super::util::{c_str, copy_out_str, non_null, non_null_mut, read_versioned};
use super::volume::mr_volume;
use crate::error::{Error, Result};
use crate::report::{generate_report_in, Event, Report, ReportOptions, Stage};

/// A pipeline stage (`mr_report_event.stage`).
pub type mr_stage = i32;
/// Resampling and windowing of the CT, mask lookup.
pub const MR_STAGE_PREPROCESS: mr_stage = 0;
/// Patient attributes measured from the masks.
pub const MR_STAGE_ATTRIBUTES: mr_stage = 1;
/// The vision encoder over every slice (`count` = slices; progress events follow).
pub const MR_STAGE_ENCODER: mr_stage = 2;
/// Region tokens and prompts (`count` = regions).
pub const MR_STAGE_TOKENS: mr_stage = 3;
/// Decoding region `index` of `count` (`region` = its key). Batched decoding announces every
/// region first, then decodes them together.
pub const MR_STAGE_REGION: mr_stage = 4;

/// What an `mr_report_event` says.
pub type mr_report_event_kind = i32;
/// A stage starts: `index` of `count` (the region for `MR_STAGE_REGION`, else 0).
pub const MR_REPORT_EVENT_STAGE: mr_report_event_kind = 0;
/// Progress within a stage: `index` = done of `count` = total (the encoder: slices encoded).
pub const MR_REPORT_EVENT_PROGRESS: mr_report_event_kind = 1;

/// A progress event handed to `mr_report_progress_callback`, valid during the call only.
#[repr(C)]
pub struct mr_report_event {
    /// `sizeof(mr_report_event)` as the library was compiled.
    pub struct_size: u32,
    /// One of `MR_REPORT_EVENT_*`.
    pub kind: mr_report_event_kind,
    /// One of `MR_STAGE_*`.
    pub stage: mr_stage,
    /// `MR_REPORT_EVENT_STAGE`: the item starting (region index, else 0);
    /// `MR_REPORT_EVENT_PROGRESS`: items done.
    pub index: u32,
    /// `MR_REPORT_EVENT_STAGE`: items in the stage; `MR_REPORT_EVENT_PROGRESS`: the total.
    pub count: u32,
    /// `MR_STAGE_REGION` starts: the region key (NUL-terminated); otherwise NULL.
    pub region: *const c_char,
}

/// Called at each stage start and progress step, on the calling thread. Return 0 to go on,
/// non-zero to cancel (the call returns `MR_ERR_CANCELLED`). Must not call into the same session
/// (`MR_ERR_BUSY`), except `mr_session_cancel`.
pub type mr_report_progress_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, event: *const mr_report_event) -> i32>;

/// Called with each piece of text a region produces: the region's index among the reported
/// regions, its key (NUL-terminated) and the text (`piece`, `len` bytes of UTF-8, whole
/// characters, not NUL-terminated, never empty). Return 0 to go on, non-zero to cancel (the call
/// returns `MR_ERR_CANCELLED` within one decode step; no token callback follows).
pub type mr_report_token_callback = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        region_index: u32,
        region: *const c_char,
        piece: *const c_char,
        len: usize,
    ) -> i32,
>;

/// What `mr_session_generate_report` runs. Fill with `mr_report_params_default`, then change
/// fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mr_report_params {
    /// `sizeof(mr_report_params)` as the caller compiled it.
    pub struct_size: u32,
    /// New tokens per region at most; 0 (default) = the model's `generation.max_new_tokens`.
    pub max_new_tokens: u32,
    /// Region keys to report, comma-separated, in the order given (NUL-terminated, read during
    /// the call only); NULL or "" (default) = every region of the model, in its order.
    pub regions: *const c_char,
    /// -1 (default) = the model's `generation.batch_regions`; 0 = one region after another;
    /// 1 = the regions decode as one batch (same text either way).
    pub batch_regions: i32,
    /// Stage and progress events (NULL = none).
    pub on_progress: mr_report_progress_callback,
    /// Streamed region text (NULL = none).
    pub on_token: mr_report_token_callback,
    /// Passed to both callbacks as `user`.
    pub user_data: *mut c_void,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<mr_report_event>() == 32);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<mr_report_params>() == 48);

/// A finished report (opaque, immutable, readable from any number of threads at once); free
/// with `mr_report_free`.
pub struct mr_report {
    report: Report,
    json: String,
    text: String,
}

fn default_params() -> mr_report_params {
    mr_report_params {
        struct_size: std::mem::size_of::<mr_report_params>() as u32,
        max_new_tokens: 0,
        regions: std::ptr::null(),
        batch_regions: -1,
        on_progress: None,
        on_token: None,
        user_data: std::ptr::null_mut(),
    }
}

/// The pipeline options of the caller's params.
///
/// # Safety
/// `p.regions` NULL or NUL-terminated.
unsafe fn options_of(p: &mr_report_params) -> Result<ReportOptions> {
    let regions = if p.regions.is_null() {
        None
    } else {
        // SAFETY: forwarded caller contract.
        let list = unsafe { c_str(p.regions, "params->regions") }?;
        if list.trim().is_empty() {
            None
        } else {
            let keys: Vec<String> = list.split(',').map(|k| k.trim().to_string()).collect();
            if keys.iter().any(String::is_empty) {
                return Err(Error::invalid("params->regions", format!("`{list}` has an empty region key")));
            }
            Some(keys)
        }
    };
    let batch_regions = match p.batch_regions {
        -1 => None,
        0 => Some(false),
        1 => Some(true),
        v => return Err(Error::invalid("params->batch_regions", format!("is {v}, must be -1, 0 or 1"))),
    };
    Ok(ReportOptions {
        regions,
        max_new_tokens: (p.max_new_tokens > 0).then_some(p.max_new_tokens as usize),
        threads: 0,
        batch_regions,
        // The session's own mode decides (`generate_report_in`).
        activations: crate::ops::Activations::Int8,
    })
}

fn stage_code(stage: Stage) -> mr_stage {
    match stage {
        Stage::Preprocess => MR_STAGE_PREPROCESS,
        Stage::Attributes => MR_STAGE_ATTRIBUTES,
        Stage::Encoder => MR_STAGE_ENCODER,
        Stage::Tokens => MR_STAGE_TOKENS,
        Stage::Region => MR_STAGE_REGION,
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Fills `*out` with the defaults (every region, the model's token budget and batching, no
/// callbacks) and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_report_params_default(out: *mut mr_report_params) -> mr_status {
    status_call("mr_report_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_params();
        Ok(())
    })
}

/// Runs the whole pipeline on `ct` and `masks` (the CT's grid) in `session` (reset first; its
/// threads) and writes a new report to `*out`. `params` may be NULL (defaults). The session's
/// context must hold the longest region prompt plus one token (context 0 = 4096 does); a
/// smaller one is `MR_ERR_INVALID_ARGUMENT`, one too small for `max_new_tokens` ends the regions
/// early (`stop` "context_full" in the JSON). Errors: `MR_ERR_NULL_POINTER` (a NULL argument),
/// `MR_ERR_INVALID_ARGUMENT` (an unknown region key, named; bad params), `MR_ERR_SHAPE` and
/// others from the inputs (masks on another grid), `MR_ERR_BUSY`, `MR_ERR_CANCELLED` (a
/// callback's non-zero return or `mr_session_cancel`). On failure `*out` is untouched; the
/// session stays usable.
///
/// # Safety
/// `session` from `mr_session_create`; `ct` and `masks` live objects (not changed by another
/// thread during the call); `params` NULL or readable, its callbacks callable with `user_data`;
/// `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_generate_report(
    session: *mut mr_session,
    ct: *const mr_volume,
    masks: *const mr_masks,
    params: *const mr_report_params,
    out: *mut *mut mr_report,
) -> mr_status {
    status_call("mr_session_generate_report", || {
        if session.is_null() {
            return Err(Error::NullPointer("session"));
        }
        // SAFETY: forwarded caller contract.
        let ct = &unsafe { non_null(ct, "ct") }?.volume;
        // SAFETY: forwarded caller contract.
        let masks = &unsafe { non_null(masks, "masks") }?.masks;
        if out.is_null() {
            return Err(Error::NullPointer("out"));
        }
        // SAFETY: forwarded caller contract.
        let p = unsafe { read_versioned(params, "params", default_params(), "mr_report_params_default") }?;
        // SAFETY: forwarded caller contract.
        let options = unsafe { options_of(&p) }?;
        let run = |s: &mut crate::llm::Session<'static>,
                   model: &crate::model::Model<'static>,
                   tokenizer: &crate::tokenizer::Tokenizer,
                   device: &super::model::OnDevice|
         -> Result<Report> {
            // NUL-terminated region keys for the callbacks.
            let keys: Vec<(String, CString)> = model
                .config()
                .regions
                .iter()
                .map(|r| (r.key.clone(), CString::new(r.key.replace('\0', "?")).unwrap_or_default()))
                .collect();
            let c_key = |key: &str| -> *const c_char {
                keys.iter().find(|(k, _)| k == key).map_or(c"".as_ptr(), |(_, c)| c.as_ptr())
            };
            let mut on_event = |e: &Event<'_>| -> ControlFlow<()> {
                let stop = match *e {
                    Event::Stage { stage, index, count, region } => p.on_progress.map(|f| {
                        let ev = mr_report_event {
                            struct_size: std::mem::size_of::<mr_report_event>() as u32,
                            kind: MR_REPORT_EVENT_STAGE,
                            stage: stage_code(stage),
                            index: clamp_u32(index),
                            count: clamp_u32(count),
                            region: region.map_or(std::ptr::null(), c_key),
                        };
                        // SAFETY: the caller's callback with the caller's user data; `ev` lives
                        // for the call.
                        unsafe { f(p.user_data, &ev) }
                    }),
                    Event::Progress { stage, done, total } => p.on_progress.map(|f| {
                        let ev = mr_report_event {
                            struct_size: std::mem::size_of::<mr_report_event>() as u32,
                            kind: MR_REPORT_EVENT_PROGRESS,
                            stage: stage_code(stage),
                            index: clamp_u32(done),
                            count: clamp_u32(total),
                            region: std::ptr::null(),
                        };
                        // SAFETY: as above.
                        unsafe { f(p.user_data, &ev) }
                    }),
                    Event::Token { region, index, text } => p.on_token.map(|f| {
                        // SAFETY: as above; `text` and the key outlive the call.
                        unsafe {
                            f(p.user_data, clamp_u32(index), c_key(region), text.as_ptr().cast(), text.len())
                        }
                    }),
                };
                match stop {
                    Some(v) if v != 0 => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                }
            };
            #[cfg(feature = "cuda")]
            if let Some(cuda) = &device.cuda {
                // The session's cancel flag (mr_session_cancel) stops the GPU run too, and its
                // threads run the CPU stages.
                let options = crate::report::ReportOptions { threads: s.threads(), ..options.clone() };
                return crate::report::generate_report_cuda_cancellable(
                    model,
                    cuda,
                    ct,
                    masks,
                    &options,
                    s.cancel_flag(),
                    &mut on_event,
                );
            }
            let _ = device;
            generate_report_in(s, model, tokenizer, ct, masks, &options, &mut on_event)
        };
        // SAFETY: forwarded caller contract.
        let report = unsafe { with_session_parts(session, run) }?;
        let json = report.to_json()?;
        let text = report.to_text();
        // SAFETY: non-NULL, writable (caller contract).
        unsafe { *out = Box::into_raw(Box::new(mr_report { report, json, text })) };
        Ok(())
    })
}

/// Copies the report JSON (schema version 1: study, attributes, regions with their text, stop
/// reason and slices, the merged text, timings; pretty-printed, ending in a newline) into `buf`,
/// NUL-terminated. `*needed` (may be NULL) receives the size with the NUL, also when `buf` is
/// too small (`MR_ERR_BUFFER_TOO_SMALL`, `buf` untouched); `buf = NULL, len = 0` asks the size.
///
/// # Safety
/// `report` a live report; `buf` NULL or writable for `len` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_report_json(
    report: *const mr_report,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> mr_status {
    status_call("mr_report_json", || {
        // SAFETY: forwarded caller contract.
        let r = unsafe { non_null(report, "report") }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&r.json, buf, len, needed, "the report JSON") }
    })
}

/// Copies the plain-text report (the attribute section, then each region's text under its
/// heading line `Header:`, a blank line between sections; the same text as
/// `medregion report` prints) into `buf`, with the size convention of `mr_report_json`.
///
/// # Safety
/// As `mr_report_json`.
#[no_mangle]
pub unsafe extern "C" fn mr_report_text(
    report: *const mr_report,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> mr_status {
    status_call("mr_report_text", || {
        // SAFETY: forwarded caller contract.
        let r = unsafe { non_null(report, "report") }?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&r.text, buf, len, needed, "the report text") }
    })
}

/// The number of regions in the report (`*out`).
///
/// # Safety
/// `report` a live report; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_report_region_count(report: *const mr_report, out: *mut usize) -> mr_status {
    status_call("mr_report_region_count", || {
        // SAFETY: forwarded caller contract.
        let r = unsafe { non_null(report, "report") }?;
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = r.report.regions.len();
        Ok(())
    })
}

/// Region `index` of the report, or `MR_ERR_INVALID_ARGUMENT` naming the index.
fn region(r: &mr_report, index: usize) -> Result<&crate::report::RegionReport> {
    r.report.regions.get(index).ok_or_else(|| {
        Error::invalid("index", format!("is {index}, the report has {} regions", r.report.regions.len()))
    })
}

/// Copies the key of region `index` (0-based, below `mr_report_region_count`) into `buf`, with
/// the size convention of `mr_report_json`.
///
/// # Safety
/// As `mr_report_json`.
#[no_mangle]
pub unsafe extern "C" fn mr_report_region_key(
    report: *const mr_report,
    index: usize,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> mr_status {
    status_call("mr_report_region_key", || {
        // SAFETY: forwarded caller contract.
        let r = region(unsafe { non_null(report, "report") }?, index)?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&r.key, buf, len, needed, "the region key") }
    })
}

/// Copies the generated text of region `index` (trimmed; the `text` of that region in the JSON)
/// into `buf`, with the size convention of `mr_report_json`.
///
/// # Safety
/// As `mr_report_json`.
#[no_mangle]
pub unsafe extern "C" fn mr_report_region_text(
    report: *const mr_report,
    index: usize,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> mr_status {
    status_call("mr_report_region_text", || {
        // SAFETY: forwarded caller contract.
        let r = region(unsafe { non_null(report, "report") }?, index)?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&r.text, buf, len, needed, "the region text") }
    })
}

/// Frees a report (NULL is a no-op).
///
/// # Safety
/// `report` NULL or from `mr_session_generate_report`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mr_report_free(report: *mut mr_report) {
    if report.is_null() {
        return;
    }
    status_call("mr_report_free", || {
        // SAFETY: from Box::into_raw in mr_session_generate_report (caller contract).
        drop(unsafe { Box::from_raw(report) });
        Ok(())
    });
}
