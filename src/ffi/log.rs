//! `mr_log_set`: routes every diagnostic of the library to the host's callback.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::boundary::status_call;
use super::status::*;
use crate::error::Error;
use crate::log::{self, Level};

/// Severity of a log message (lower is more severe).
pub type mr_log_level = u32;
/// No messages.
pub const MR_LOG_NONE: mr_log_level = 0;
/// Failures (including caught internal errors).
pub const MR_LOG_ERROR: mr_log_level = 1;
/// Something unexpected that the library worked around.
pub const MR_LOG_WARN: mr_log_level = 2;
/// Milestones (model loaded, report finished).
pub const MR_LOG_INFO: mr_log_level = 3;
/// Details useful when diagnosing (every error returned to the caller is logged here).
pub const MR_LOG_DEBUG: mr_log_level = 4;
/// Very verbose tracing.
pub const MR_LOG_TRACE: mr_log_level = 5;

/// Log callback: `level`, a NUL-terminated one-line `message` (valid only during the call), and
/// the `user_data` given to `mr_log_set`. May be called from any thread the library runs on.
pub type mr_log_callback =
    Option<unsafe extern "C" fn(level: mr_log_level, message: *const c_char, user_data: *mut c_void)>;

struct CallbackSink {
    callback: unsafe extern "C" fn(mr_log_level, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

impl CallbackSink {
    fn deliver(&self, level: Level, message: &str) {
        let c = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
        // SAFETY: the callback is the host's function with the documented signature; the
        // message outlives the call.
        unsafe { (self.callback)(level as mr_log_level, c.as_ptr(), self.user_data) }
    }
}

// SAFETY: the host promises (header contract) that its callback and user_data may be used from
// any thread; the library only passes `user_data` back, never dereferences it.
unsafe impl Send for CallbackSink {}
// SAFETY: as above.
unsafe impl Sync for CallbackSink {}

/// Sends every library message with `level <= max_level` to `callback` (process-wide; replaces
/// the previous callback). `callback == NULL` or `max_level == MR_LOG_NONE` turns logging off.
/// The library never prints; without a callback its messages are dropped. Values above
/// `MR_LOG_TRACE` are refused with `MR_ERR_INVALID_ARGUMENT`. Thread-safe; the callback is
/// invoked without any library lock held.
#[no_mangle]
pub extern "C" fn mr_log_set(
    callback: mr_log_callback,
    max_level: mr_log_level,
    user_data: *mut c_void,
) -> mr_status {
    status_call("mr_log_set", || {
        if max_level > MR_LOG_TRACE {
            return Err(Error::invalid("max_level", format!("{max_level} is not a log level (0..=5)")));
        }
        match (callback, Level::from_u32(max_level)) {
            (Some(cb), Some(level)) => {
                let sink = CallbackSink { callback: cb, user_data };
                log::set_sink(Some(Arc::new(move |lvl: Level, msg: &str| sink.deliver(lvl, msg))), level);
            }
            _ => log::set_sink(None, Level::Error),
        }
        Ok(())
    })
}
