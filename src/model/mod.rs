//! The model: its typed configuration ([`config`]), canonical tensor names ([`names`]),
//! synthetic presets ([`synthetic`]) and the loaded package ([`Model`], defined with the
//! package reader in `crate::io::package`).

pub mod config;
pub mod names;
pub mod synthetic;

pub use crate::io::package::{LoadOptions, Model};
pub use config::ModelConfig;
