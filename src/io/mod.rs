//! File formats: the model package, GGUF and Hugging Face imports.

pub mod gguf;
pub mod hf;
pub mod import;
pub mod package;
