//! The model package: one safetensors file holding everything a deployment needs.
//!
//! # Format (version 1)
//!
//! A package is a valid [safetensors] file (any safetensors reader can open it):
//!
//! ```text
//! [u64 LE n][n bytes of UTF-8 JSON header, padded with spaces][data section]
//! ```
//!
//! * `8 + n` is a multiple of 64, and **every tensor's data starts at a file offset that is a
//!   multiple of 64**. safetensors forbids gaps between tensors, so the space before a tensor is
//!   filled by a `U8` filler tensor named `__pad.N` (`N` = 0, 1, ...; 1..=63 bytes of zeros),
//!   which readers ignore. The last tensor ends at the end of the file.
//! * `__metadata__` (string values only):
//!   * `medregion.format_version`: `"1"`;
//!   * `medregion.config`: the [`ModelConfig`](crate::model::config::ModelConfig) as compact JSON
//!     (its canonical form, [`ModelConfig::to_json`](crate::model::config::ModelConfig::to_json));
//!   * `medregion.tokenizer`: how to read the `tokenizer` tensor: `bytes` (the synthetic
//!     byte-level tokenizer), `hf-json` (a `tokenizer.json`), `tiktoken` (a Llama 3
//!     `tokenizer.model` rank file) or `gguf` (GGUF tokenizer metadata as JSON); it must equal
//!     `config.tokenizer.kind`;
//!   * `medregion.checksum`: `sha256:` + 64 lower-case hex digits (definition below);
//!   * `medregion.writer`: the software that wrote the file (informational).
//!
//!   Other metadata keys are ignored.
//! * Tensors under canonical names ([`crate::model::names`]): `vit.*` (vision encoder),
//!   `mask.*` (mask extractor), `proj.*` (connector), `llm.*` (decoder) and `tokenizer` (`U8`
//!   `[n]`, the tokenizer bytes). The set of tensors and their logical shapes follow from the
//!   config; the loader rejects a missing tensor, an extra tensor, a wrong dtype or shape.
//! * Weight storage: `F32`, `F16` or `BF16` under the weight's own name, or block-32 quantized,
//!   structure-of-arrays, for a 2-D weight `W` of logical shape `[rows, cols]` with
//!   `cols % 32 == 0`:
//!
//!   | stored tensor | dtype | shape |
//!   |---|---|---|
//!   | `W.q8_0.values` | U8 (int8 bits) | `[rows, cols]` |
//!   | `W.q4_0.values`, `W.q4_1.values` | U8 (packed nibbles) | `[rows, cols / 2]` |
//!   | `W.<qtype>.scales` | F16 | `[rows, cols / 32]` |
//!   | `W.q4_1.mins` | F16 | `[rows, cols / 32]` |
//!
//!   Block arithmetic and the nibble order within a block are ggml's ([`crate::quant`]):
//!   q8_0 `x = q·d`; q4_0 `x = (q − 8)·d`; q4_1 `x = q·d + m`; byte `j` of a q4 block holds
//!   element `j` (low nibble) and `j + 16` (high nibble).
//!
//! # Checksum
//!
//! `medregion.checksum` = `"sha256:" + hex(SHA-256(P ‖ D))`, where `D` is the data section (file
//! bytes from `8 + n` to the end, filler tensors included) and `P` is this UTF-8 text:
//!
//! ```text
//! medregion-package\n
//! format_version=1\n
//! tokenizer=<medregion.tokenizer>\n
//! config=<byte length of medregion.config, decimal>\n<medregion.config, verbatim>\n
//! for every tensor (fillers included), in increasing data offset:
//!     tensor=<name> <DTYPE> [<dims joined by ",">] <begin> <end>\n
//! data=<byte length of D, decimal>\n
//! ```
//!
//! (`begin`/`end` are the header's `data_offsets`, relative to the data section.) It therefore
//! covers the config, the tokenizer kind, every tensor's name, dtype, shape and place, and every
//! data byte; it does not cover the header's whitespace or `medregion.writer`. Loading checks it
//! only when asked ([`LoadOptions::verify_checksum`]: it reads the whole file);
//! `medregion inspect` checks it by default.
//!
//! # Loading
//!
//! [`Model::load`] maps the file (memmap2) and parses and checks the header only: every offset,
//! length, dtype and shape against the config, before any use, without reading weight bytes,
//! so loading takes milliseconds whatever the size. [`Model::load_from_memory`] does the same
//! over caller bytes, zero-copy.
//!
//! **Replace model files by atomic rename, never rewrite them in place.** A mapped file that is
//! truncated or rewritten while a process uses it makes that process crash with SIGBUS (or read
//! changed weights). [`PackageWriter`] writes to a temporary file next to the target and renames
//! it over the target when complete; do the same when deploying (`cp new.tmp && mv`).
//!
//! [safetensors]: https://github.com/huggingface/safetensors

mod build;
mod checksum;
mod index;
mod info;
mod policy;
mod reader;
mod writer;

pub use build::{BuildReport, PackageBuilder, SourceTensor, WeightSource};
pub use checksum::CHECKSUM_PREFIX;
pub use info::{PackageInfo, SizeRow, StoredTensorInfo, WeightInfo};
pub use policy::{glob_match, QuantPolicy, DEFAULT_KEEP_F32};
pub use reader::{LoadOptions, Model};
pub use writer::{PackageWriter, TensorSpec};

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Alignment of every tensor's data, in bytes from the start of the file.
pub const ALIGNMENT: usize = 64;

/// Largest header accepted (the safetensors limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Metadata keys.
pub mod keys {
    pub const FORMAT_VERSION: &str = "medregion.format_version";
    pub const CONFIG: &str = "medregion.config";
    pub const TOKENIZER: &str = "medregion.tokenizer";
    pub const CHECKSUM: &str = "medregion.checksum";
    pub const WRITER: &str = "medregion.writer";
}
