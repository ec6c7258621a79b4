//! Versions, initialisation, status names and the last-error message.

use std::ffi::c_char;

use super::boundary::{last_error_ptr, last_error_string, quiet_call, status_call, value_call};
use super::status::*;
use super::util::{c_str, copy_out_str};
use crate::error::Error;
use crate::mr_log;

/// The ABI version of this header. Pass it to `mr_init`; the library refuses another value.
pub const MR_ABI_VERSION: u32 = 1;

const _: () = assert!(MR_ABI_VERSION == crate::ABI_VERSION);

/// Checks that the caller was compiled against this library's ABI and prepares the library
/// (installs the panic boundary's hook). Call it once, first, as `mr_init(MR_ABI_VERSION)`;
/// calling it again is harmless. Returns `MR_ERR_ABI_MISMATCH` when `abi_version` differs.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn mr_init(abi_version: u32) -> mr_status {
    status_call("mr_init", || {
        if abi_version != MR_ABI_VERSION {
            return Err(Error::AbiMismatch { caller: abi_version, library: MR_ABI_VERSION });
        }
        mr_log!(crate::log::Level::Info, "medregion {} initialised (ABI {})", crate::VERSION, MR_ABI_VERSION);
        Ok(())
    })
}

/// The ABI version this library implements. Thread-safe.
#[no_mangle]
pub extern "C" fn mr_abi_version() -> u32 {
    MR_ABI_VERSION
}

/// The engine version as a static NUL-terminated string, e.g. "0.1.0". Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn mr_version_string() -> *const c_char {
    static VERSION: &std::ffi::CStr =
        match std::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(s) => s,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// The name of a status code as a static string ("MR_OK", "MR_ERR_IO", ...);
/// "MR_UNKNOWN_STATUS" for a value this library does not define. Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn mr_status_name(status: mr_status) -> *const c_char {
    value_call("mr_status_name", c"MR_UNKNOWN_STATUS".as_ptr(), || {
        STATUS_NAMES
            .iter()
            .find(|(code, _)| *code == status)
            .map(|(_, name)| name.as_ptr())
            .unwrap_or(c"MR_UNKNOWN_STATUS".as_ptr())
    })
}

/// The message of the last failed call on the calling thread ("" if none). The pointer stays
/// valid until the next failing `mr_*` call on this thread; copy it if you need it longer.
/// Reading it does not change it. Never NULL. Thread-safe (the message is per thread).
#[no_mangle]
pub extern "C" fn mr_last_error_message() -> *const c_char {
    value_call("mr_last_error_message", c"".as_ptr(), last_error_ptr)
}

/// Copies the last error message of the calling thread into `buf` (NUL-terminated).
///
/// `*out_needed` (if not NULL) receives the size needed including the NUL, also when `buf` is
/// too small. `buf == NULL && buf_len == 0` only queries the size and returns `MR_OK`. Returns
/// `MR_ERR_BUFFER_TOO_SMALL` (buffer untouched) when `buf_len` is less than needed. This call
/// never changes the stored message, so it can be retried with a larger buffer. Thread-safe.
///
/// # Safety
/// `buf` must be NULL or writable for `buf_len` bytes; `out_needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_last_error_copy(
    buf: *mut c_char,
    buf_len: usize,
    out_needed: *mut usize,
) -> mr_status {
    quiet_call(|| {
        let msg = last_error_string();
        // SAFETY: forwarded caller contract.
        unsafe { copy_out_str(&msg, buf, buf_len, out_needed, "the last error message") }
    })
}

/// Test hook for integrators and for our own tests of the panic boundary: panics inside the
/// library with `message` (NULL: a default message). Always returns `MR_ERR_INTERNAL` with the
/// panic message as the last error; the process is unaffected. Thread-safe.
///
/// # Safety
/// `message` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mr_test_panic(message: *const c_char) -> mr_status {
    status_call("mr_test_panic", || {
        // SAFETY: forwarded caller contract.
        let text =
            if message.is_null() { "deliberate test panic" } else { unsafe { c_str(message, "message") }? };
        panic!("{text}");
    })
}
