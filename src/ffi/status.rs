//! Status codes of the C ABI. APPEND-ONLY: a code, once released, keeps its number and meaning.

/// Return code of every fallible `mr_*` call. `MR_OK` (0) is success; anything else is an error
/// whose explanation is available from `mr_last_error_message` on the same thread.
pub type mr_status = u32;

/// Success.
pub const MR_OK: mr_status = 0;
/// An argument is out of range or otherwise invalid (the message names it).
pub const MR_ERR_INVALID_ARGUMENT: mr_status = 1;
/// A required pointer argument was NULL (the message names it).
pub const MR_ERR_NULL_POINTER: mr_status = 2;
/// A caller buffer is too small; the needed size was written to the size out-parameter.
pub const MR_ERR_BUFFER_TOO_SMALL: mr_status = 3;
/// `mr_init` was given another ABI version than this library implements.
pub const MR_ERR_ABI_MISMATCH: mr_status = 4;
/// A file could not be opened, read or written (the message names the path).
pub const MR_ERR_IO: mr_status = 5;
/// An input file or buffer is malformed or corrupt.
pub const MR_ERR_FORMAT: mr_status = 6;
/// A valid input this build does not support (a dtype, a feature not compiled in).
pub const MR_ERR_UNSUPPORTED: mr_status = 7;
/// Shapes, sizes or geometries disagree (e.g. a mask that does not fit the volume).
pub const MR_ERR_SHAPE: mr_status = 8;
/// Memory could not be allocated.
pub const MR_ERR_OUT_OF_MEMORY: mr_status = 9;
/// A compute device is unavailable or failed.
pub const MR_ERR_DEVICE: mr_status = 10;
/// The object is in use by another thread (sessions allow one thread at a time).
pub const MR_ERR_BUSY: mr_status = 11;
/// The operation was cancelled by the caller (cancel call or a callback's non-zero return).
pub const MR_ERR_CANCELLED: mr_status = 12;
/// A named item (tensor, region, device index) does not exist.
pub const MR_ERR_NOT_FOUND: mr_status = 13;
/// A bug in medregion, including a caught panic. The host process is unaffected.
pub const MR_ERR_INTERNAL: mr_status = 14;

/// Every status with its name, in code order (used by `mr_status_name` and the tests).
pub(crate) const STATUS_NAMES: [(mr_status, &std::ffi::CStr); 15] = [
    (MR_OK, c"MR_OK"),
    (MR_ERR_INVALID_ARGUMENT, c"MR_ERR_INVALID_ARGUMENT"),
    (MR_ERR_NULL_POINTER, c"MR_ERR_NULL_POINTER"),
    (MR_ERR_BUFFER_TOO_SMALL, c"MR_ERR_BUFFER_TOO_SMALL"),
    (MR_ERR_ABI_MISMATCH, c"MR_ERR_ABI_MISMATCH"),
    (MR_ERR_IO, c"MR_ERR_IO"),
    (MR_ERR_FORMAT, c"MR_ERR_FORMAT"),
    (MR_ERR_UNSUPPORTED, c"MR_ERR_UNSUPPORTED"),
    (MR_ERR_SHAPE, c"MR_ERR_SHAPE"),
    (MR_ERR_OUT_OF_MEMORY, c"MR_ERR_OUT_OF_MEMORY"),
    (MR_ERR_DEVICE, c"MR_ERR_DEVICE"),
    (MR_ERR_BUSY, c"MR_ERR_BUSY"),
    (MR_ERR_CANCELLED, c"MR_ERR_CANCELLED"),
    (MR_ERR_NOT_FOUND, c"MR_ERR_NOT_FOUND"),
    (MR_ERR_INTERNAL, c"MR_ERR_INTERNAL"),
];
