//! Decoder sessions and the tokenizer through the C ABI.
//!
//! * `mr_tokenize` / `mr_detokenize` work on a model (its tokenizer is built once, on first use,
//!   and shared by every thread).
//! * An `mr_session` owns one decoder conversation (KV cache, buffers, threads, the sampler's
//!   state) over a model. It keeps the model alive: `mr_model_free` may come before
//!   `mr_session_free`. One thread at a time: a call made while another call on the same session
//!   is running fails at once with `MR_ERR_BUSY` (nothing waits, nothing is changed).
//!   `mr_session_cancel` is the exception: any thread, any time; the running (or next)
//!   generation stops after the current step and returns `MR_ERR_CANCELLED`, keeping what it
//!   streamed; a running prefill (or report) stops between chunks of 32 positions, keeping the
//!   positions already fed.
//! * Low level: `mr_session_prefill(ids)`, then `mr_session_logits` (the distribution of the next
//!   token) and `mr_session_next_token` (sample one with the session's sampler, feed it, return
//!   it). High level: `mr_session_generate(prompt text)` streams each token to a callback; a
//!   non-zero return stops it (status `MR_OK`, `stop_reason = MR_STOP_CALLBACK`).
//!
//! * A session over a model loaded with `MR_DEVICE_CUDA` runs the token-level calls on the GPU:
//!   a device session (KV cache and buffers on the device, the session's context) is allocated
//!   by the first token-level call, so a session used only for reports allocates none. The
//!   logits of the last position are downloaded after each feed (`mr_session_logits` and the
//!   host sampler behind `mr_session_next_token` read them); `mr_session_generate` picks on the
//!   device (argmax, or the device sampler with the host RNG's numbers; only the ids come back).
//!   Its prefill is not cancellable part-way (a cancel stops the generation after the prompt).
//!   A report (`mr_session_generate_report`) leaves that conversation empty.
//!
//! Choices: the sampler behind `mr_session_next_token` is created on first use from the given
//! params and recreated when they change; it remembers every token fed since the last
//! `mr_session_reset` (for the repetition penalty) and its RNG continues across calls, so the
//! same calls give the same tokens. Token pieces handed to callbacks are whole UTF-8 characters
//! (a character split across tokens arrives with the token that completes it).

use std::ffi::{c_char, c_void};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::boundary::status_call;
use super::model::{mr_model, OnDevice};
use super::status::*;
use super::util::{c_str, copy_out_str, non_null, non_null_mut, read_versioned, read_versioned_since};
use crate::error::{Error, Result};
use crate::io::package::Model;
use crate::llm::{
    Activations, GenerateOptions, Input, Sampler, SamplingParams, Session, SessionOptions, StopReason,
};
use crate::tokenizer::{ChatTemplate, EncodeOptions, Tokenizer};

/// A decoder session (opaque). One thread at a time; free with `mr_session_free`.
pub struct mr_session {
    // Field order matters: `gpu` borrows the device model `device` keeps alive and `session`
    // the model `_model` keeps alive, so both drop first.
    /// The token-level calls' device session (a GPU model, after the first such call).
    #[cfg(feature = "cuda")]
    gpu: Option<GpuTokens>,
    session: Session<'static>,
    sampler: Option<(SamplingParams, Sampler)>,
    /// Tokens fed since the last reset (the sampler's repetition history).
    history: Vec<u32>,
    busy: AtomicBool,
    cancel: Arc<AtomicBool>,
    /// Keeps the model (and its mapping) alive for `session`.
    _model: Arc<Model<'static>>,
    tokenizer: Arc<Tokenizer>,
    /// The model's GPU copy (`MR_DEVICE_CUDA`): reports run there.
    device: OnDevice,
}

/// The token-level conversation of a session over a GPU model.
#[cfg(feature = "cuda")]
struct GpuTokens {
    /// Borrows the decoder inside the `CudaModel` that `mr_session::device` keeps alive.
    session: crate::backend::cuda::decoder::DeviceSession<'static>,
    /// The logits of the last position fed (downloaded once per feed).
    logits: Option<Vec<f32>>,
}

impl mr_session {
    /// The token-level device session, created on first use; `None` for a CPU model.
    #[cfg(feature = "cuda")]
    fn gpu_tokens(&mut self) -> Result<Option<&mut GpuTokens>> {
        use crate::backend::cuda::decoder::{DeviceDecoder, DeviceSession, DeviceSessionOptions};
        let Some(cuda) = self.device.cuda.as_ref() else { return Ok(None) };
        if self.gpu.is_none() {
            // SAFETY: the decoder lives inside the `Arc<CudaModel>` that `self.device` owns: it
            // never moves and outlives `self.gpu`, which drops first (field order) and is never
            // moved out of the session.
            let decoder: &'static DeviceDecoder = unsafe { &*(cuda.decoder() as *const DeviceDecoder) };
            let options = DeviceSessionOptions { context: self.session.context(), ..Default::default() };
            let mut session = DeviceSession::new(decoder, &options)?;
            session.set_cancel_flag(Arc::clone(&self.cancel));
            self.gpu = Some(GpuTokens { session, logits: None });
        }
        Ok(self.gpu.as_mut())
    }

    /// Positions used and the capacity of the token-level conversation.
    fn positions(&self) -> (usize, usize) {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return (g.session.len(), g.session.context());
        }
        (self.session.len(), self.session.context())
    }

    /// The logits of the conversation's last position.
    fn last_logits(&self) -> Option<&[f32]> {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return g.logits.as_deref();
        }
        self.session.logits()
    }

    /// Feeds `ids` to the conversation (on the device for a GPU model).
    fn feed(&mut self, ids: &[u32]) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu_tokens()? {
            let fed = g.session.prefill(ids);
            return g.settle(fed);
        }
        self.session.prefill(Input::Tokens(ids)).map(|_| ())
    }

    /// Feeds one sampled token.
    fn feed_one(&mut self, id: u32) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu_tokens()? {
            let fed = g.session.decode_step(id);
            return g.settle(fed);
        }
        self.session.step(id).map(|_| ())
    }

    /// Generates after feeding `ids` (see `Session::generate`).
    fn generate(
        &mut self,
        ids: &[u32],
        opts: &GenerateOptions,
        tok: &Tokenizer,
        cb: &mut crate::llm::OnToken<'_>,
    ) -> Result<crate::llm::Generation> {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu_tokens()? {
            g.logits = None;
            let generation = g.session.generate(Input::Tokens(ids), opts, Some(tok), cb)?;
            g.logits = g.session.logits()?;
            return Ok(generation);
        }
        self.session.generate(Input::Tokens(ids), opts, Some(tok), cb)
    }

    /// Empties the conversation (keeps the allocations).
    fn reset_tokens(&mut self) {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu.as_mut() {
            g.session.reset();
            g.logits = None;
        }
        self.session.reset();
    }
}

#[cfg(feature = "cuda")]
impl GpuTokens {
    /// Keeps the logits a feed returned; after a failed feed, whatever the session still holds
    /// (a refused input changes nothing; one that failed part-way leaves none).
    fn settle(&mut self, fed: Result<Vec<f32>>) -> Result<()> {
        match fed {
            Ok(logits) => {
                self.logits = Some(logits);
                Ok(())
            }
            Err(e) => {
                self.logits = self.session.logits().unwrap_or(None);
                Err(e)
            }
        }
    }
}

/// How to create a session. Fill with `mr_session_params_default`, then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mr_session_params {
    /// `sizeof(mr_session_params)` as the caller compiled it.
    pub struct_size: u32,
    /// Positions the KV cache holds (prompt + generated); 0 = min(the model's maximum, 4096).
    pub context: u32,
    /// Threads, the caller's included; 0 = one per core.
    pub threads: u32,
    /// The most sequences decoded together by batched generation (default 8, at most 64).
    pub max_batch: u32,
    /// How activations meet quantized weights: `MR_ACTIVATIONS_INT8` (default; llama.cpp's
    /// scheme, the fast one) or `MR_ACTIVATIONS_F32` (the weights dequantized in registers: the
    /// dequantized model's logits to f32 rounding, slower; CPU only). Added in version 2 of
    /// this struct: a caller compiled against the 16-byte version 1 gets the default.
    pub activations: mr_activations,
}

/// How activations meet quantized weights (`mr_session_params::activations`).
pub type mr_activations = u32;
/// Activations quantized to int8 per block of 32 (llama.cpp's scheme; the default).
pub const MR_ACTIVATIONS_INT8: mr_activations = 0;
/// f32 activations against the weights dequantized in registers (validation against a
/// dequantized reference model; CPU only).
pub const MR_ACTIVATIONS_F32: mr_activations = 1;

/// `sizeof(mr_session_params)` of version 1 (before `activations`), still accepted.
const SESSION_PARAMS_V1_SIZE: u32 = 16;

/// Sampling and stopping for `mr_session_next_token` / `mr_session_generate`. Fill with
/// `mr_generate_params_default` (greedy, 256 new tokens), then change fields.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mr_generate_params {
    /// `sizeof(mr_generate_params)` as the caller compiled it.
    pub struct_size: u32,
    /// New tokens at most (>= 1).
    pub max_new_tokens: u32,
    /// 0 = greedy (default); otherwise > 0 and finite.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: u32,
    /// > 0; 1 = off.
    pub repetition_penalty: f32,
    /// RNG seed (sampling only).
    pub seed: u64,
    /// `mr_session_generate`: wrap the prompt in the model's chat template (non-zero) or feed it
    /// as is (0, default).
    pub chat: i32,
    /// `mr_session_generate`: recognise special tokens such as `<|eot_id|>` in the prompt text
    /// (non-zero) or treat them as plain text (0, default: safe for untrusted text).
    pub allow_special: i32,
}

/// Why `mr_session_generate` stopped.
pub type mr_stop_reason = i32;
/// A stop token was generated.
pub const MR_STOP_TOKEN: mr_stop_reason = 0;
/// `max_new_tokens` were generated.
pub const MR_STOP_MAX_TOKENS: mr_stop_reason = 1;
/// The session's context is full.
pub const MR_STOP_CONTEXT_FULL: mr_stop_reason = 2;
/// The token callback returned non-zero.
pub const MR_STOP_CALLBACK: mr_stop_reason = 3;
/// `mr_session_cancel` was called (the call returns `MR_ERR_CANCELLED`).
pub const MR_STOP_CANCELLED: mr_stop_reason = 4;

/// What `mr_session_generate` did. Set `struct_size` (`mr_generate_result_default`).
#[repr(C)]
pub struct mr_generate_result {
    /// `sizeof(mr_generate_result)` as the caller compiled it.
    pub struct_size: u32,
    /// One of `MR_STOP_*`.
    pub stop_reason: mr_stop_reason,
    /// Tokens of the prompt fed.
    pub n_prompt_tokens: u32,
    /// Tokens generated (a stop token not counted).
    pub n_generated: u32,
    /// Seconds feeding the prompt.
    pub prefill_seconds: f64,
    /// Seconds generating.
    pub decode_seconds: f64,
}

/// Called once per generated token with its id and the text it completes (`piece`, `len`
/// bytes, not NUL-terminated, possibly empty). Return 0 to go on, non-zero to stop.
pub type mr_token_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, token: u32, piece: *const c_char, len: usize) -> i32>;

const _: () = assert!(std::mem::size_of::<mr_session_params>() == 20);
const _: () = assert!(std::mem::size_of::<mr_generate_params>() == 40);
const _: () = assert!(std::mem::size_of::<mr_generate_result>() == 32);

fn default_session_params() -> mr_session_params {
    mr_session_params {
        struct_size: std::mem::size_of::<mr_session_params>() as u32,
        context: 0,
        threads: 0,
        max_batch: 8,
        activations: MR_ACTIVATIONS_INT8,
    }
}

fn default_generate_params() -> mr_generate_params {
    mr_generate_params {
        struct_size: std::mem::size_of::<mr_generate_params>() as u32,
        max_new_tokens: 256,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 0,
        chat: 0,
        allow_special: 0,
    }
}

fn sampling_of(p: &mr_generate_params) -> SamplingParams {
    SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        repetition_penalty: p.repetition_penalty,
        seed: p.seed,
    }
}

/// Marks the session busy for the guard's life; a second concurrent call gets `MR_ERR_BUSY`.
struct BusyGuard<'a>(&'a AtomicBool);

impl<'a> BusyGuard<'a> {
    fn take(flag: &'a AtomicBool) -> Result<BusyGuard<'a>> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| BusyGuard(flag))
            .map_err(|_| {
                Error::Busy(
                    "the session is in use by another call (sessions are one thread at a time)".into(),
                )
            })
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Runs `f` on the session with the busy flag held.
unsafe fn with_session<R>(s: *mut mr_session, f: impl FnOnce(&mut mr_session) -> Result<R>) -> Result<R> {
    if s.is_null() {
        return Err(Error::NullPointer("session"));
    }
    // Only the atomic is touched before the flag is held: a concurrent call sees BUSY.
    // SAFETY: non-NULL, from mr_session_create (caller contract); the flag is an atomic.
    let flag: &AtomicBool = unsafe { &(*s).busy };
    let _guard = BusyGuard::take(flag)?;
    // SAFETY: we hold the busy flag, so no other call has a reference to the session.
    f(unsafe { &mut *s })
}

/// Runs `f` on the session's decoder, model and tokenizer with the busy flag held (a concurrent
/// call gets `MR_ERR_BUSY`), after forgetting the sampler and its history: `f` may reset the
/// conversation (the report pipeline does).
///
/// # Safety
/// `s` NULL or from `mr_session_create` and not yet freed.
pub(crate) unsafe fn with_session_parts<R>(
    s: *mut mr_session,
    f: impl FnOnce(&mut Session<'static>, &Model<'static>, &Tokenizer, &OnDevice) -> Result<R>,
) -> Result<R> {
    // SAFETY: forwarded caller contract.
    unsafe {
        with_session(s, |s| {
            s.history.clear();
            s.sampler = None;
            #[cfg(feature = "cuda")]
            if let Some(g) = s.gpu.as_mut() {
                g.session.reset();
                g.logits = None;
            }
            let model = Arc::clone(&s._model);
            let tokenizer = Arc::clone(&s.tokenizer);
            let device = s.device.clone();
            f(&mut s.session, &model, &tokenizer, &device)
        })
    }
}

/// Fills `*out` with the defaults and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_params_default(out: *mut mr_session_params) -> mr_status {
    status_call("mr_session_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_session_params();
        Ok(())
    })
}

/// Fills `*out` with the defaults (greedy, 256 new tokens, no chat template, special tokens
/// in the prompt as plain text) and the right `struct_size`.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_generate_params_default(out: *mut mr_generate_params) -> mr_status {
    status_call("mr_generate_params_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = default_generate_params();
        Ok(())
    })
}

/// Sets `struct_size` and zeroes the rest.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_generate_result_default(out: *mut mr_generate_result) -> mr_status {
    status_call("mr_generate_result_default", || {
        // SAFETY: forwarded caller contract.
        *unsafe { non_null_mut(out, "out") }? = mr_generate_result {
            struct_size: std::mem::size_of::<mr_generate_result>() as u32,
            stop_reason: MR_STOP_TOKEN,
            n_prompt_tokens: 0,
            n_generated: 0,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
        };
        Ok(())
    })
}

/// Creates a session over `model` (which it keeps alive) with everything allocated now: the KV
/// cache for `params->context` positions, buffers, threads. `params` may be NULL (defaults).
///
/// # Safety
/// `model` from `mr_model_load*`; `params` NULL or readable; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_create(
    model: *const mr_model,
    params: *const mr_session_params,
    out: *mut *mut mr_session,
) -> mr_status {
    status_call("mr_session_create", || {
        // SAFETY: forwarded caller contract.
        let m = unsafe { non_null(model, "model") }?;
        // SAFETY: forwarded caller contract.
        let out = unsafe { non_null_mut(out, "out") }?;
        // SAFETY: forwarded caller contract.
        let p = unsafe {
            read_versioned_since(
                params,
                "params",
                default_session_params(),
                "mr_session_params_default",
                SESSION_PARAMS_V1_SIZE,
            )
        }?;
        let activations = match p.activations {
            MR_ACTIVATIONS_INT8 => Activations::Int8,
            MR_ACTIVATIONS_F32 => Activations::F32,
            other => {
                return Err(Error::invalid(
                    "params->activations",
                    format!("is {other}, not MR_ACTIVATIONS_INT8 (0) or MR_ACTIVATIONS_F32 (1)"),
                ))
            }
        };
        let arc = m.shared();
        let tokenizer = m.tokenizer()?;
        // SAFETY: the Arc's contents never move and live at least as long as `arc`, which the
        // session struct owns and drops after `session` (field order).
        let model_ref: &'static Model<'static> = unsafe { &*Arc::as_ptr(&arc) };
        let options = SessionOptions {
            context: p.context as usize,
            threads: p.threads as usize,
            max_batch: p.max_batch as usize,
            activations,
            ..SessionOptions::default()
        };
        let device = m.device();
        #[cfg(feature = "cuda")]
        if device.cuda.is_some() && activations == Activations::F32 {
            return Err(Error::Unsupported(
                "params->activations: MR_ACTIVATIONS_F32 runs on the CPU only (load the model with \
                 MR_DEVICE_CPU)"
                    .into(),
            ));
        }
        let session = Session::new(model_ref, &options)?;
        #[cfg(feature = "cuda")]
        if let Some(cuda) = &device.cuda {
            let max = cuda.decoder().max_context();
            if session.context() > max {
                return Err(Error::invalid(
                    "params->context",
                    format!(
                        "{} exceeds the {max} positions the model's GPU copy holds (load it with \
                         MR_DEVICE_CPU for a longer context)",
                        session.context()
                    ),
                ));
            }
        }
        let cancel = session.cancel_flag();
        *out = Box::into_raw(Box::new(mr_session {
            #[cfg(feature = "cuda")]
            gpu: None,
            session,
            sampler: None,
            history: Vec::new(),
            busy: AtomicBool::new(false),
            cancel,
            _model: arc,
            tokenizer,
            device,
        }));
        Ok(())
    })
}

/// Frees a session (NULL is a no-op). Must not race with another call on it.
///
/// # Safety
/// `session` from `mr_session_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mr_session_free(session: *mut mr_session) {
    if session.is_null() {
        return;
    }
    status_call("mr_session_free", || {
        // SAFETY: from Box::into_raw in mr_session_create (caller contract).
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    });
}

/// Empties the session (KV cache, sampler history); keeps its allocations.
///
/// # Safety
/// `session` from `mr_session_create`.
#[no_mangle]
pub unsafe extern "C" fn mr_session_reset(session: *mut mr_session) -> mr_status {
    status_call("mr_session_reset", || {
        // SAFETY: forwarded caller contract.
        unsafe {
            with_session(session, |s| {
                s.reset_tokens();
                s.history.clear();
                s.sampler = None;
                Ok(())
            })
        }
    })
}

/// Asks the running (or next) generation on `session` to stop after the current step (a long
/// prefill: after the current chunk of 32 positions; a report: at the next stage boundary,
/// encoder batch, prefill chunk or decode step). Safe from any thread, while another thread is
/// inside a call on the session.
///
/// # Safety
/// `session` from `mr_session_create` and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mr_session_cancel(session: *const mr_session) -> mr_status {
    status_call("mr_session_cancel", || {
        // SAFETY: forwarded caller contract; only the shared atomic flag is touched.
        let s = unsafe { non_null(session, "session") }?;
        s.cancel.store(true, Ordering::Release);
        Ok(())
    })
}

/// Positions used in the session's context (`*len`) and its capacity (`*capacity`); either may
/// be NULL.
///
/// # Safety
/// `session` from `mr_session_create`; the out pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_length(
    session: *mut mr_session,
    len: *mut u32,
    capacity: *mut u32,
) -> mr_status {
    status_call("mr_session_length", || {
        // SAFETY: forwarded caller contract.
        let (l, c) = unsafe { with_session(session, |s| Ok(s.positions())) }?;
        if !len.is_null() {
            // SAFETY: non-NULL, writable per the contract.
            unsafe { *len = l as u32 };
        }
        if !capacity.is_null() {
            // SAFETY: as above.
            unsafe { *capacity = c as u32 };
        }
        Ok(())
    })
}

/// Tokenizes UTF-8 `text` with the model's tokenizer. `add_bos` prepends the BOS id;
/// `allow_special` recognises special tokens in the text (0: plain text). Writes up to
/// `capacity` ids to `ids` and the count to `*n_ids` (also when `capacity` is too small:
/// `MR_ERR_BUFFER_TOO_SMALL`, `ids` untouched; `ids = NULL, capacity = 0` asks the count).
///
/// # Safety
/// `model` from `mr_model_load*`; `text` NUL-terminated; `ids` NULL or writable for `capacity`
/// values; `n_ids` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_tokenize(
    model: *const mr_model,
    text: *const c_char,
    add_bos: i32,
    allow_special: i32,
    ids: *mut u32,
    capacity: usize,
    n_ids: *mut usize,
) -> mr_status {
    status_call("mr_tokenize", || {
        // SAFETY: forwarded caller contract.
        let m = unsafe { non_null(model, "model") }?;
        // SAFETY: forwarded caller contract.
        let text = unsafe { c_str(text, "text") }?;
        // SAFETY: forwarded caller contract.
        let n_out = unsafe { non_null_mut(n_ids, "n_ids") }?;
        let tok = m.tokenizer()?;
        let opts = EncodeOptions {
            add_bos: add_bos != 0,
            allow_special: allow_special != 0,
            ..EncodeOptions::default()
        };
        let out = tok.encode_with(text, &opts)?;
        *n_out = out.len();
        if ids.is_null() {
            return if capacity == 0 { Ok(()) } else { Err(Error::NullPointer("ids")) };
        }
        if capacity < out.len() {
            return Err(Error::BufferTooSmall {
                what: "token ids".into(),
                needed: out.len(),
                given: capacity,
            });
        }
        // SAFETY: `ids` writable for `capacity >= out.len()` values (caller contract).
        unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), ids, out.len()) };
        Ok(())
    })
}

/// Decodes `n` token ids to UTF-8 text (invalid byte sequences become U+FFFD) into `buf`
/// (NUL-terminated); the needed size (with the NUL) goes to `*needed` if not NULL.
///
/// # Safety
/// `model` from `mr_model_load*`; `ids` readable for `n` values (NULL only if `n` is 0); `buf`
/// NULL or writable for `buf_len` bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_detokenize(
    model: *const mr_model,
    ids: *const u32,
    n: usize,
    buf: *mut c_char,
    buf_len: usize,
    needed: *mut usize,
) -> mr_status {
    status_call("mr_detokenize", || {
        // SAFETY: forwarded caller contract.
        let m = unsafe { non_null(model, "model") }?;
        let ids: &[u32] = if n == 0 {
            &[]
        } else if ids.is_null() {
            return Err(Error::NullPointer("ids"));
        } else {
            // SAFETY: readable for `n` values (caller contract).
            unsafe { std::slice::from_raw_parts(ids, n) }
        };
        let text = m.tokenizer()?.decode(ids)?;
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&text, buf, buf_len, needed, "text") }
    })
}

/// Feeds `n` token ids (checked against the vocabulary and the context) after what the session
/// holds; afterwards `mr_session_logits` gives the next-token distribution.
///
/// # Safety
/// `session` from `mr_session_create`; `ids` readable for `n` values.
#[no_mangle]
pub unsafe extern "C" fn mr_session_prefill(
    session: *mut mr_session,
    ids: *const u32,
    n: usize,
) -> mr_status {
    status_call("mr_session_prefill", || {
        if n == 0 {
            return Err(Error::invalid("n", "no tokens to feed"));
        }
        if ids.is_null() {
            return Err(Error::NullPointer("ids"));
        }
        // SAFETY: readable for `n` values (caller contract).
        let ids = unsafe { std::slice::from_raw_parts(ids, n) };
        // SAFETY: forwarded caller contract.
        unsafe {
            with_session(session, |s| {
                s.feed(ids)?;
                s.history.extend_from_slice(ids);
                if let Some((_, sampler)) = &mut s.sampler {
                    sampler.observe(ids)?;
                }
                Ok(())
            })
        }
    })
}

/// Copies the logits of the last fed position (`vocab` floats) to `out`; `*vocab` (if not NULL)
/// receives the vocabulary size, also when `capacity` is too small. Fails with
/// `MR_ERR_INVALID_ARGUMENT` before anything was fed.
///
/// # Safety
/// `session` from `mr_session_create`; `out` NULL or writable for `capacity` floats; `vocab`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_logits(
    session: *mut mr_session,
    out: *mut f32,
    capacity: usize,
    vocab: *mut usize,
) -> mr_status {
    status_call("mr_session_logits", || {
        // SAFETY: forwarded caller contract.
        unsafe {
            with_session(session, |s| {
                let v = s.session.vocab_size();
                if !vocab.is_null() {
                    *vocab = v;
                }
                let logits = s.last_logits().ok_or_else(|| {
                    Error::invalid("session", "no logits yet: feed tokens first (mr_session_prefill)")
                })?;
                if out.is_null() {
                    return if capacity == 0 { Ok(()) } else { Err(Error::NullPointer("out")) };
                }
                if capacity < v {
                    return Err(Error::BufferTooSmall { what: "logits".into(), needed: v, given: capacity });
                }
                std::ptr::copy_nonoverlapping(logits.as_ptr(), out, v);
                Ok(())
            })
        }
    })
}

/// Samples the next token from the current logits with `params` (NULL: greedy), feeds it, and
/// writes it to `*token`. The caller decides when to stop (compare with the model's stop ids).
///
/// # Safety
/// `session` from `mr_session_create`; `params` NULL or readable; `token` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_session_next_token(
    session: *mut mr_session,
    params: *const mr_generate_params,
    token: *mut u32,
) -> mr_status {
    status_call("mr_session_next_token", || {
        // SAFETY: forwarded caller contract.
        let token = unsafe { non_null_mut(token, "token") }?;
        // SAFETY: forwarded caller contract.
        let p = unsafe {
            read_versioned(params, "params", default_generate_params(), "mr_generate_params_default")
        }?;
        let sampling = sampling_of(&p);
        // SAFETY: forwarded caller contract.
        unsafe {
            with_session(session, |s| {
                let (len, context) = s.positions();
                if len >= context {
                    return Err(Error::invalid(
                        "session",
                        format!("the context is full ({context} positions)"),
                    ));
                }
                let vocab = s.session.vocab_size();
                let fresh = !matches!(&s.sampler, Some((old, _)) if *old == sampling);
                if fresh {
                    let mut sampler = Sampler::new(&sampling, vocab)?;
                    sampler.ban(&s.session.input_only_ids());
                    sampler.observe(&s.history)?;
                    s.sampler = Some((sampling.clone(), sampler));
                }
                // The sampler is taken out while the logits are borrowed, and always put back.
                let Some((params, mut sampler)) = s.sampler.take() else {
                    return Err(Error::Internal("sampler missing".into()));
                };
                let fed = match s.last_logits() {
                    None => Err(Error::invalid(
                        "session",
                        "no logits yet: feed tokens first (mr_session_prefill)",
                    )),
                    Some(logits) => sampler.sample(logits),
                }
                .and_then(|id| s.feed_one(id).map(|()| id))
                .and_then(|id| sampler.observe(std::slice::from_ref(&id)).map(|()| id));
                s.sampler = Some((params, sampler));
                let id = fed?;
                s.history.push(id);
                *token = id;
                Ok(())
            })
        }
    })
}

/// Tokenizes `prompt` (UTF-8; with the chat template if `params->chat`), feeds it after what the
/// session holds, and generates until a stop token, `max_new_tokens`, a full context, the
/// callback's non-zero return or `mr_session_cancel`. Each token goes to `on_token` (may be
/// NULL). `result` (may be NULL) receives counts, times and the stop reason. A cancel returns
/// `MR_ERR_CANCELLED` (result filled).
///
/// # Safety
/// `session` from `mr_session_create`; `prompt` NUL-terminated; `params` NULL or readable;
/// `result` NULL or writable with `struct_size` set; `on_token` callable with `user`.
#[no_mangle]
pub unsafe extern "C" fn mr_session_generate(
    session: *mut mr_session,
    prompt: *const c_char,
    params: *const mr_generate_params,
    on_token: mr_token_callback,
    user: *mut c_void,
    result: *mut mr_generate_result,
) -> mr_status {
    status_call("mr_session_generate", || {
        // SAFETY: forwarded caller contract.
        let prompt = unsafe { c_str(prompt, "prompt") }?;
        // SAFETY: forwarded caller contract.
        let p = unsafe {
            read_versioned(params, "params", default_generate_params(), "mr_generate_params_default")
        }?;
        if !result.is_null() {
            // SAFETY: non-NULL, readable (caller contract).
            let size = unsafe { (*result).struct_size };
            let need = std::mem::size_of::<mr_generate_result>() as u32;
            if size < need {
                return Err(Error::invalid(
                    "result->struct_size",
                    format!("is {size}, at least {need} needed (call mr_generate_result_default first)"),
                ));
            }
        }
        let run = |s: &mut mr_session| -> Result<crate::llm::Generation> {
            let tok = s.tokenizer.clone();
            let ids = if p.chat != 0 {
                let template = tok.chat_template().unwrap_or(ChatTemplate::Llama3);
                tok.encode_chat(template, None, prompt, p.allow_special != 0)?
            } else {
                let add_bos = s.positions().0 == 0 && tok.bos_id().is_some();
                tok.encode_with(
                    prompt,
                    &EncodeOptions {
                        add_bos,
                        allow_special: p.allow_special != 0,
                        ..EncodeOptions::default()
                    },
                )?
            };
            if ids.is_empty() {
                return Err(Error::invalid("prompt", "encodes to no tokens"));
            }
            let opts = GenerateOptions {
                max_new_tokens: p.max_new_tokens as usize,
                sampling: sampling_of(&p),
                ..GenerateOptions::default()
            };
            let mut cb = |id: u32, piece: &str| -> ControlFlow<()> {
                match on_token {
                    // SAFETY: the caller's callback with the caller's user data; `piece`
                    // is valid for the call.
                    Some(f) if unsafe { f(user, id, piece.as_ptr().cast(), piece.len()) } != 0 => {
                        ControlFlow::Break(())
                    }
                    _ => ControlFlow::Continue(()),
                }
            };
            let g = s.generate(&ids, &opts, &tok, &mut cb)?;
            s.history.extend_from_slice(&ids);
            s.history.extend_from_slice(&g.tokens);
            s.sampler = None;
            Ok(g)
        };
        // SAFETY: forwarded caller contract.
        let generation = unsafe { with_session(session, run) }?;
        let reason = match generation.stop {
            StopReason::StopToken(_) | StopReason::StopString(_) => MR_STOP_TOKEN,
            StopReason::MaxTokens => MR_STOP_MAX_TOKENS,
            StopReason::ContextFull => MR_STOP_CONTEXT_FULL,
            StopReason::Callback => MR_STOP_CALLBACK,
            StopReason::Cancelled => MR_STOP_CANCELLED,
        };
        if !result.is_null() {
            // SAFETY: checked writable with a large enough struct_size above.
            unsafe {
                *result = mr_generate_result {
                    struct_size: std::mem::size_of::<mr_generate_result>() as u32,
                    stop_reason: reason,
                    n_prompt_tokens: generation.prompt_tokens as u32,
                    n_generated: generation.tokens.len() as u32,
                    prefill_seconds: generation.prefill_secs,
                    decode_seconds: generation.decode_secs,
                }
            };
        }
        if reason == MR_STOP_CANCELLED {
            return Err(Error::Cancelled);
        }
        Ok(())
    })
}
