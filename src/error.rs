//! One error type for the whole engine. Every variant carries what a person needs to fix the
//! problem (which argument, which tensor, what was expected, what was found) and maps 1:1 to a
//! C status code (see [`Error::status`] and `src/ffi/status.rs`).

use crate::ffi::status::*;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is out of range or otherwise not acceptable.
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument { name: String, reason: String },

    /// A required pointer argument was NULL (C ABI only).
    #[error("`{0}` must not be NULL")]
    NullPointer(&'static str),

    /// A caller-supplied buffer cannot hold the result.
    #[error("buffer for {what} is too small: {needed} bytes needed, {given} given")]
    BufferTooSmall { what: String, needed: usize, given: usize },

    /// The caller was compiled against another ABI version.
    #[error(
        "ABI version mismatch: the caller was built against medregion ABI {caller}, \
         this library implements ABI {library}; rebuild against this library's header"
    )]
    AbiMismatch { caller: u32, library: u32 },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// An input file or buffer is malformed.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },

    /// A valid input that this build cannot handle.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A shape, size or geometry disagrees with what it must match.
    #[error("{what}: expected {expected}, found {found}")]
    Shape { what: String, expected: String, found: String },

    /// An allocation failed or would exceed a limit.
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// A compute device is missing or failed.
    #[error("device: {0}")]
    Device(String),

    /// An object that allows one user at a time is in use.
    #[error("busy: {0}")]
    Busy(String),

    /// The caller cancelled the operation.
    #[error("cancelled")]
    Cancelled,

    /// A named item (tensor, region, device, file) does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// A bug in medregion (including a caught panic). Please report it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The C status code of this error.
    pub fn status(&self) -> mr_status {
        match self {
            Error::InvalidArgument { .. } => MR_ERR_INVALID_ARGUMENT,
            Error::NullPointer(_) => MR_ERR_NULL_POINTER,
            Error::BufferTooSmall { .. } => MR_ERR_BUFFER_TOO_SMALL,
            Error::AbiMismatch { .. } => MR_ERR_ABI_MISMATCH,
            Error::Io { .. } => MR_ERR_IO,
            Error::Format { .. } => MR_ERR_FORMAT,
            Error::Unsupported(_) => MR_ERR_UNSUPPORTED,
            Error::Shape { .. } => MR_ERR_SHAPE,
            Error::OutOfMemory(_) => MR_ERR_OUT_OF_MEMORY,
            Error::Device(_) => MR_ERR_DEVICE,
            Error::Busy(_) => MR_ERR_BUSY,
            Error::Cancelled => MR_ERR_CANCELLED,
            Error::NotFound(_) => MR_ERR_NOT_FOUND,
            Error::Internal(_) => MR_ERR_INTERNAL,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format { what: what.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`] with the path that failed.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}
