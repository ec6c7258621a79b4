//! Diagnostics. medregion never prints: every message goes to the sink the host installed
//! (`mr_log_set` in the C ABI, [`set_sink`] in Rust) and is dropped when there is none.
//!
//! The sink is process-wide and may be called from any thread; it is invoked without any lock
//! held, so a sink may itself call back into medregion (even `set_sink`).

use std::sync::{Arc, RwLock};

/// Severity of a message. Lower is more severe; a sink with threshold `L` receives every
/// message whose level is `<= L`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    /// The level for a C `mr_log_level` value; values above `Trace` clamp to `Trace`, 0 is `None`
    /// (nothing is delivered).
    pub fn from_u32(v: u32) -> Option<Level> {
        match v {
            0 => None,
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            _ => Some(Level::Trace),
        }
    }

    /// Lower-case name, for text output.
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// A log sink: receives the level and the message (one line, no trailing newline).
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<(Sink, Level)>> = RwLock::new(None);

/// Installs (or with `None`, removes) the process-wide sink with its level threshold.
pub fn set_sink(sink: Option<Sink>, max_level: Level) {
    let mut guard = SINK.write().unwrap_or_else(|p| p.into_inner());
    *guard = sink.map(|s| (s, max_level));
}

/// Whether a message of `level` would reach a sink (lets callers skip formatting).
pub fn enabled(level: Level) -> bool {
    let guard = SINK.read().unwrap_or_else(|p| p.into_inner());
    matches!(&*guard, Some((_, max)) if level <= *max)
}

/// Sends one message to the sink, if any accepts `level`.
pub fn emit(level: Level, message: &str) {
    let sink = {
        let guard = SINK.read().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((s, max)) if level <= *max => Some(Arc::clone(s)),
            _ => None,
        }
    };
    if let Some(sink) = sink {
        sink(level, message);
    }
}

/// `mr_log!(Level::Info, "loaded {} tensors", n)`: formats only when a sink wants the level.
#[macro_export]
macro_rules! mr_log {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::log::enabled(level) {
            $crate::log::emit(level, &format!($($arg)+));
        }
    }};
}
