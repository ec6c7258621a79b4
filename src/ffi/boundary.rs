//! The panic boundary and the thread-local last-error message shared by every export.
//!
//! Every `extern "C"` function runs its body through [`status_call`] (fallible calls) or
//! [`value_call`] (calls that return a value): a Rust error becomes its status code and message,
//! a panic becomes `MR_ERR_INTERNAL` with the panic message and location, and nothing unwinds
//! into the host. A process-wide panic hook (installed once, chaining to the previous hook for
//! panics outside the boundary) keeps panics inside the boundary from printing to stderr; their
//! message goes to the log sink instead.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CString};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use super::status::*;
use crate::error::{Error, Result};
use crate::log::{self, Level};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the panic hook (idempotent, cheap after the first call).
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let inside = DEPTH.try_with(|d| d.get() > 0).unwrap_or(false);
            if !inside {
                previous(info);
                return;
            }
            let payload = payload_text(info.payload());
            let msg = match info.location() {
                Some(loc) => format!("panic at {}:{}: {payload}", loc.file(), loc.line()),
                None => format!("panic: {payload}"),
            };
            let _ = PANIC_MESSAGE.try_with(|p| *p.borrow_mut() = Some(msg));
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Records `message` as this thread's last error (NUL bytes are replaced).
pub(crate) fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message; valid until the next failing call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}

/// A copy of this thread's last error message.
pub(crate) fn last_error_string() -> String {
    LAST_ERROR.try_with(|e| e.borrow().to_string_lossy().into_owned()).unwrap_or_default()
}

/// Runs `f` with panics caught. `Err(message)` when it panicked.
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_panic_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    result.map_err(|payload| {
        PANIC_MESSAGE
            .try_with(|p| p.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| format!("panic: {}", payload_text(&*payload)))
    })
}

/// Body of a fallible export: error → status + last-error message, panic → `MR_ERR_INTERNAL`.
pub(crate) fn status_call(function: &'static str, f: impl FnOnce() -> Result<()>) -> mr_status {
    match guarded(f) {
        Ok(Ok(())) => MR_OK,
        Ok(Err(err)) => fail(function, &err),
        Err(panic_msg) => {
            let err = Error::Internal(panic_msg);
            log::emit(Level::Error, &format!("{function}: {err}"));
            set_last_error(&format!("{function}: {err}"));
            MR_ERR_INTERNAL
        }
    }
}

/// Records `err` for `function` and returns its status.
pub(crate) fn fail(function: &'static str, err: &Error) -> mr_status {
    let msg = format!("{function}: {err}");
    crate::mr_log!(Level::Debug, "{msg}");
    set_last_error(&msg);
    err.status()
}

/// Body of an export that returns a value and cannot fail: a panic yields `fallback` and is
/// recorded as the last error.
pub(crate) fn value_call<T>(function: &'static str, fallback: T, f: impl FnOnce() -> T) -> T {
    match guarded(f) {
        Ok(v) => v,
        Err(panic_msg) => {
            let msg = format!("{function}: internal error: {panic_msg}");
            log::emit(Level::Error, &msg);
            set_last_error(&msg);
            fallback
        }
    }
}

/// Like [`status_call`] but never touches the last-error message (for the calls that read it).
pub(crate) fn quiet_call(f: impl FnOnce() -> Result<()>) -> mr_status {
    match guarded(f) {
        Ok(Ok(())) => MR_OK,
        Ok(Err(err)) => err.status(),
        Err(_) => MR_ERR_INTERNAL,
    }
}
