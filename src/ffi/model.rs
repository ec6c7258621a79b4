//! Model packages through the C ABI: `mr_model_load`, `mr_model_load_from_memory`,
//! `mr_model_free`, `mr_model_info`, `mr_model_config_json`.
//!
//! An `mr_model` is immutable once loaded and may be used from any number of threads at once.

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};

use super::boundary::status_call;
use super::device::{mr_device_kind, MR_DEVICE_CPU, MR_DEVICE_CUDA};
use super::status::*;
use super::util::{c_str, copy_out_str, fill_char_array, non_null, non_null_mut};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::model::{LoadOptions, Model};
use crate::mr_log;
use crate::tokenizer::Tokenizer;

/// A loaded model package (opaque). Immutable; thread-safe; free with `mr_model_free`.
pub struct mr_model {
    /// Shared with the sessions created from it, which keep it alive.
    model: Arc<Model<'static>>,
    /// Built on first use (`mr_tokenize`, sessions) and shared.
    tokenizer: Mutex<Option<Arc<Tokenizer>>>,
    /// The GPU copy when loaded with `MR_DEVICE_CUDA`, shared with the sessions.
    device: OnDevice,
}

/// A model's copy on a GPU (`MR_DEVICE_CUDA`), or nothing (the CPU).
#[derive(Clone, Default)]
pub(crate) struct OnDevice {
    #[cfg(feature = "cuda")]
    pub(crate) cuda: Option<Arc<crate::backend::cuda::model::CudaModel>>,
}

/// Where and how `mr_model_load*` uploads a model to a GPU (from `mr_model_params`).
#[derive(Clone, Copy, Debug)]
struct GpuLoad {
    ordinal: usize,
    /// `MR_GPU_PRECISION_BF16` encoder GEMMs.
    bf16_encoder: bool,
    /// f16 copies of the quantized decoder weights for the prefill.
    prefill_copies: bool,
}

impl OnDevice {
    /// Uploads `model` as `gpu` says (`None`: the CPU, nothing to do).
    fn upload(model: &Model<'_>, gpu: Option<GpuLoad>) -> Result<OnDevice> {
        let Some(gpu) = gpu else { return Ok(OnDevice::default()) };
        #[cfg(feature = "cuda")]
        {
            use crate::backend::cuda::encoder::Precision;
            use crate::backend::cuda::model::{CudaModel, CudaOptions};
            let options = CudaOptions {
                ordinal: gpu.ordinal,
                encoder: if gpu.bf16_encoder { Precision::Bf16 } else { Precision::F32 },
                prefill_copies: gpu.prefill_copies,
            };
            let cuda = CudaModel::upload(model, &options)?;
            Ok(OnDevice { cuda: Some(Arc::new(cuda)) })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = model;
            Err(Error::Unsupported(format!(
                "device cuda:{}: this build has no CUDA backend (feature `cuda`; bf16 encoder {}, prefill copies {})",
                gpu.ordinal, gpu.bf16_encoder, gpu.prefill_copies
            )))
        }
    }
}

impl mr_model {
    fn new(model: Model<'static>, device: OnDevice) -> mr_model {
        mr_model { model: Arc::new(model), tokenizer: Mutex::new(None), device }
    }

    /// The GPU copy (if loaded with `MR_DEVICE_CUDA`), shared.
    pub(crate) fn device(&self) -> OnDevice {
        self.device.clone()
    }

    /// The model, shared.
    pub(crate) fn shared(&self) -> Arc<Model<'static>> {
        Arc::clone(&self.model)
    }

    /// The package's tokenizer, built once (a failure is not cached: it is reported each time).
    pub(crate) fn tokenizer(&self) -> Result<Arc<Tokenizer>> {
        let mut slot = self.tokenizer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(Tokenizer::from_package(&self.model)?);
        *slot = Some(Arc::clone(&t));
        Ok(t)
    }
}

/// How to load a model. Fill with `mr_model_params_default`, then change fields.
#[repr(C)]
pub struct mr_model_params {
    /// `sizeof(mr_model_params)` as the caller compiled it.
    pub struct_size: u32,
    /// Non-zero: recompute the content checksum and refuse a mismatch (reads the whole file:
    /// seconds for a multi-GB model). Default 0: only the header is read and checked.
    pub verify_checksum: i32,
    /// `MR_DEVICE_CPU` (default) or `MR_DEVICE_CUDA`: the model is also uploaded to GPU
    /// `device_ordinal`, and the sessions over it run there: `mr_session_generate_report`
    /// (encoder and decoding) and the token-level calls (`mr_session_prefill`,
    /// `_next_token`, `_generate`, on a device session allocated by the first of them). A
    /// build without CUDA, a missing driver or device: `MR_ERR_UNSUPPORTED` with the reason.
    pub device_kind: mr_device_kind,
    /// The N of `cuda:N` (0 for the CPU).
    pub device_ordinal: i32,
    /// With `MR_DEVICE_CUDA`: the vision encoder's GEMMs, `MR_GPU_PRECISION_F32` (default: the
    /// report matches the CPU's) or `MR_GPU_PRECISION_BF16` (bf16 inputs, f32 accumulation:
    /// the production speed). Fields from here on were added after the first release: a caller
    /// whose `struct_size` ends before a field gets its default.
    pub gpu_encoder: mr_gpu_precision,
    /// With `MR_DEVICE_CUDA`: non-zero keeps f16 copies of the decoder's quantized weights on
    /// the GPU, so the prefill does not dequantize them for every chunk (faster; 2 more bytes of
    /// device memory per weight). Default 0.
    pub gpu_prefill_copies: i32,
}

/// The vision encoder's GEMM precision on a GPU (`mr_model_params.gpu_encoder`).
pub type mr_gpu_precision = i32;
/// f32 GEMMs: a report on the GPU matches the CPU's (the default).
pub const MR_GPU_PRECISION_F32: mr_gpu_precision = 0;
/// bf16 GEMM inputs with f32 accumulation: the production speed.
pub const MR_GPU_PRECISION_BF16: mr_gpu_precision = 1;

/// `struct_size` of the first `mr_model_params` (through `device_ordinal`): the smallest the
/// library takes.
const MODEL_PARAMS_V1: u32 = 16;

/// What `mr_model_info` reports. Set `struct_size` first (`mr_model_desc_default` does it).
#[repr(C)]
pub struct mr_model_desc {
    /// `sizeof(mr_model_desc)` as the caller compiled it.
    pub struct_size: u32,
    /// Package format version.
    pub format_version: u32,
    /// Number of logical weights (a quantized weight counts once).
    pub n_weights: u64,
    /// Number of parameters (logical elements of all weights).
    pub n_params: u64,
    /// Size of the package in bytes.
    pub file_bytes: u64,
    /// Model name from the config, NUL-terminated (truncated if longer).
    pub name: [c_char; 128],
    /// Content checksum as stored in the package, e.g. "sha256:<64 hex>", NUL-terminated.
    pub checksum: [c_char; 80],
    /// Tokenizer kind ("bytes", "hf-json", "tiktoken", "gguf"), NUL-terminated.
    pub tokenizer: [c_char; 16],
}

const _: () = assert!(std::mem::size_of::<mr_model_desc>() == 8 + 8 * 3 + 128 + 80 + 16);
const _: () = assert!(std::mem::size_of::<mr_model_params>() == 24);

fn default_params() -> mr_model_params {
    mr_model_params {
        struct_size: std::mem::size_of::<mr_model_params>() as u32,
        verify_checksum: 0,
        device_kind: MR_DEVICE_CPU,
        device_ordinal: 0,
        gpu_encoder: MR_GPU_PRECISION_F32,
        gpu_prefill_copies: 0,
    }
}

/// Fills `*out` with the defaults (CPU, no checksum verification) and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_model_params`.
#[no_mangle]
pub unsafe extern "C" fn mr_model_params_default(out: *mut mr_model_params) -> mr_status {
    status_call("mr_model_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_params();
        Ok(())
    })
}

/// Reads the caller's params (NULL means defaults) into load options and the GPU upload
/// (`None` for the CPU), refusing what this build cannot do. A `struct_size` from an older
/// header (at least the first version's) reads the fields it has; the rest keep their defaults.
///
/// # Safety
/// `params` must be NULL or point to a readable struct of at least its `struct_size` bytes.
unsafe fn load_options(params: *const mr_model_params) -> Result<(LoadOptions, Option<GpuLoad>)> {
    let p = if params.is_null() {
        default_params()
    } else {
        // SAFETY: `struct_size` is the first field of every version; read it alone first.
        let size = unsafe { params.cast::<u32>().read_unaligned() };
        if size < MODEL_PARAMS_V1 {
            return Err(Error::invalid(
                "params->struct_size",
                format!("is {size}, at least {MODEL_PARAMS_V1} needed (call mr_model_params_default first)"),
            ));
        }
        let mut p = default_params();
        let n = (size as usize).min(std::mem::size_of::<mr_model_params>());
        // SAFETY: the caller's struct is readable for `size ≥ n` bytes; `p` is a plain
        // `repr(C)` struct of integers, valid for any bytes, at least `n` long.
        unsafe {
            std::ptr::copy_nonoverlapping(
                params.cast::<u8>(),
                (&mut p as *mut mr_model_params).cast::<u8>(),
                n,
            )
        };
        p
    };
    let bf16_encoder = match p.gpu_encoder {
        MR_GPU_PRECISION_F32 => false,
        MR_GPU_PRECISION_BF16 => true,
        other => {
            return Err(Error::invalid(
                "params->gpu_encoder",
                format!("{other} is not MR_GPU_PRECISION_F32 (0) or MR_GPU_PRECISION_BF16 (1)"),
            ))
        }
    };
    let device = match p.device_kind {
        MR_DEVICE_CPU => None,
        MR_DEVICE_CUDA => {
            let n = usize::try_from(p.device_ordinal).map_err(|_| {
                Error::invalid("params->device_ordinal", format!("{} is negative", p.device_ordinal))
            })?;
            // Refused before anything is read when the device cannot be used (not compiled in,
            // no driver, no such device), with the probe's reason.
            let listed = crate::backend::devices()
                .iter()
                .find(|d| d.kind == crate::backend::DeviceKind::Cuda && d.ordinal as usize == n);
            match listed {
                Some(d) if d.available => {
                    Some(GpuLoad { ordinal: n, bf16_encoder, prefill_copies: p.gpu_prefill_copies != 0 })
                }
                Some(d) => return Err(Error::Unsupported(format!("device cuda:{n}: {}", d.reason))),
                None => return Err(Error::Unsupported(format!("device cuda:{n}: there is no such device"))),
            }
        }
        other => return Err(Error::invalid("params->device_kind", format!("{other} is not a device kind"))),
    };
    Ok((LoadOptions { verify_checksum: p.verify_checksum != 0, ..LoadOptions::default() }, device))
}

/// Maps the package at `path` (UTF-8) and checks it against its config; `params` may be NULL
/// (defaults). Milliseconds whatever the model size unless `verify_checksum` is set. The file must
/// not be truncated or rewritten while the model lives (replace model files by atomic rename).
/// On success `*out` receives the model; on failure `*out` is untouched. Thread-safe.
///
/// # Safety
/// `path` NUL-terminated; `params` NULL or valid; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_model_load(
    path: *const c_char,
    params: *const mr_model_params,
    out: *mut *mut mr_model,
) -> mr_status {
    status_call("mr_model_load", || {
        // SAFETY: forwarded caller contract.
        let path = unsafe { c_str(path, "path") }?;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract.
        let (options, cuda) = unsafe { load_options(params) }?;
        let model = Model::load(path, &options)?;
        let device = OnDevice::upload(&model, cuda)?;
        mr_log!(Level::Info, "loaded model '{}' from {path}", model.config().name);
        *out = Box::into_raw(Box::new(mr_model::new(model, device)));
        Ok(())
    })
}

/// Checks a package held in caller memory and uses it in place (zero-copy). The `len` bytes at
/// `data` must stay valid and unchanged until `mr_model_free` and the `mr_session_free` of every session made from the model, and `data` must be at least 4-byte
/// aligned (any malloc result is). On failure `*out` is untouched. Thread-safe.
///
/// # Safety
/// `data` readable for `len` bytes for the model's whole life; `params` NULL or valid; `out`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mr_model_load_from_memory(
    data: *const c_void,
    len: usize,
    params: *const mr_model_params,
    out: *mut *mut mr_model,
) -> mr_status {
    status_call("mr_model_load_from_memory", || {
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        if data.is_null() {
            return Err(Error::NullPointer("data"));
        }
        // SAFETY: forwarded caller contract.
        let (options, cuda) = unsafe { load_options(params) }?;
        // SAFETY: the caller guarantees `len` readable bytes that outlive the model; the
        // 'static lifetime is that promise, documented in the header.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        let model = Model::load_from_memory(bytes, &options)?;
        let device = OnDevice::upload(&model, cuda)?;
        mr_log!(Level::Info, "loaded model '{}' from {len} bytes of memory", model.config().name);
        *out = Box::into_raw(Box::new(mr_model::new(model, device)));
        Ok(())
    })
}

/// Frees a model. NULL is a no-op. No other thread may be using the model in a call; sessions
/// created from it keep it alive (the file stays mapped until the last one is freed).
///
/// # Safety
/// `model` must be NULL or a pointer from `mr_model_load*` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mr_model_free(model: *mut mr_model) {
    if model.is_null() {
        return;
    }
    // Dropping unmaps the file; keep it behind the boundary like every export.
    status_call("mr_model_free", || {
        // SAFETY: the pointer came from Box::into_raw in mr_model_load* (caller contract).
        drop(unsafe { Box::from_raw(model) });
        Ok(())
    });
}

/// Fills `*out` with zeros and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for one `mr_model_desc`.
#[no_mangle]
pub unsafe extern "C" fn mr_model_desc_default(out: *mut mr_model_desc) -> mr_status {
    status_call("mr_model_desc_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = blank_desc();
        Ok(())
    })
}

fn blank_desc() -> mr_model_desc {
    mr_model_desc {
        struct_size: std::mem::size_of::<mr_model_desc>() as u32,
        format_version: 0,
        n_weights: 0,
        n_params: 0,
        file_bytes: 0,
        name: [0; 128],
        checksum: [0; 80],
        tokenizer: [0; 16],
    }
}

/// Describes a loaded model. `out->struct_size` must be at least `sizeof(mr_model_desc)`.
/// Thread-safe.
///
/// # Safety
/// `model` a live model; `out` NULL or a writable `mr_model_desc` with `struct_size` set.
#[no_mangle]
pub unsafe extern "C" fn mr_model_info(model: *const mr_model, out: *mut mr_model_desc) -> mr_status {
    status_call("mr_model_info", || {
        // SAFETY: forwarded caller contract.
        let model = &unsafe { non_null(model, "model") }?.model;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        let need = std::mem::size_of::<mr_model_desc>() as u32;
        if out.struct_size < need {
            return Err(Error::invalid(
                "out->struct_size",
                format!("is {}, at least {need} needed (call mr_model_desc_default first)", out.struct_size),
            ));
        }
        let info = model.info();
        let mut desc = blank_desc();
        desc.struct_size = out.struct_size;
        desc.format_version = info.format_version;
        desc.n_weights = info.weights.len() as u64;
        desc.n_params = info.params;
        desc.file_bytes = info.file_bytes;
        fill_char_array(&mut desc.name, &info.model_name);
        fill_char_array(&mut desc.checksum, model.checksum());
        fill_char_array(&mut desc.tokenizer, &info.tokenizer);
        *out = desc;
        Ok(())
    })
}

/// Copies the model's configuration (canonical JSON) into `buf`, NUL-terminated. `*out_needed`
/// (if not NULL) receives the size needed including the NUL, also when `buf` is too small;
/// `buf == NULL && buf_len == 0` only queries the size. Thread-safe.
///
/// # Safety
/// `model` a live model; `buf` NULL or writable for `buf_len` bytes; `out_needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_model_config_json(
    model: *const mr_model,
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
) -> mr_status {
    status_call("mr_model_config_json", || {
        // SAFETY: forwarded caller contract.
        let model = &unsafe { non_null(model, "model") }?.model;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(model.config_json(), buf, buf_len, out_needed, "the model config JSON") }
    })
}
