//! medregion — an embeddable inference engine that turns a 3D chest CT and its organ/lesion
//! masks into a structured radiology report, following MedRegion-CT (Kyung et al., 2025).
//!
//! The crate is one library with three faces:
//! * this safe Rust API (re-exported below),
//! * the stable C ABI in [`ffi`] (the only module with `extern "C"`), whose header
//!   `include/medregion.h` is generated from it by a pinned cbindgen,
//! * the `medregion` command-line tool (`src/bin/medregion`).
//!
//! See `README.md` for the conventions and `../shared/DESIGN.md` for the architecture.

pub mod attributes;
pub mod backend;
pub mod error;
pub mod eval;
pub mod ffi;
pub mod io;
pub mod llm;
pub mod log;
pub mod masks;
pub mod model;
pub mod ops;
pub mod phantom;
pub mod preprocess;
pub mod quant;
pub mod region;
pub mod report;
pub mod tensor;
pub mod tokenizer;
pub mod vision;
pub mod volume;

pub use backend::{devices, DeviceInfo, DeviceKind};
pub use error::{Error, Result};

/// The engine version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The C ABI version implemented by this build. Bumped only on an incompatible change of the C
/// ABI; structs that grow at the end (guarded by `struct_size`) do not bump it.
pub const ABI_VERSION: u32 = 1;
