//! The C ABI (prefix `mr_`): the only module with `extern "C"`. `include/medregion.h` is
//! generated from this module by the pinned cbindgen (`tests/header.rs` regenerates it and
//! fails on any difference; `MEDREGION_BLESS=1 cargo test --release --test header` rewrites it).
//!
//! Conventions (DESIGN §5), enforced here for every export:
//! * every fallible call returns `mr_status`; out-parameters are written only on success
//!   (the one exception: size out-parameters of string copies also report the needed size when
//!   the buffer is too small);
//! * every body runs inside the panic boundary ([`boundary`]): no panic, abort or print
//!   crosses it, and a failure leaves a thread-local message for `mr_last_error_message`;
//! * structs start with `uint32_t struct_size`, are filled by `mr_*_default`, passed by
//!   pointer, and only ever grow at the end;
//! * every `mr_*_free(NULL)` is a no-op.

#![allow(non_camel_case_types)]

pub(crate) mod boundary;
mod core;
mod device;
mod log;
mod model;
pub mod status;
pub(crate) mod util;

pub use self::core::*;
pub use self::device::*;
pub use self::log::*;
pub use self::model::*;
pub use self::status::*;

mod volume;
pub use self::volume::*;

mod session;
pub use self::session::*;
mod attributes;
pub use self::attributes::*;
mod masks;
pub use self::masks::*;
mod report;
pub use self::report::*;
