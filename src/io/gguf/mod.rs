//! GGUF reader (versions 2 and 3, little-endian): metadata, tensor infos, tensor data as f32
//! or as our lossless SoA quantized formats.
//!
//! Format reference: ggml's `docs/gguf.md` and `gguf.cpp`; the behaviour we match bit for bit
//! is gguf-py's `GGUFReader` + `quants.dequantize` (tests/quant_gguf.rs checks every tensor
//! of a real model). We parse GGUF ourselves, rather than bind ggml, because the reader must
//! never abort the host process on a bad file (`GGML_ASSERT` does) and because it is small.
//!
//! The reader works over any byte buffer (`Gguf<B: AsRef<[u8]>>`): a slice, a `Vec<u8>`, or a
//! memory map ([`GgufFile::open`]). Parsing reads only the header; tensor data is touched when
//! asked for. Every length, count and offset in the file is validated before use (see
//! `parse.rs`), and every error says which file, which key or tensor, what was expected and
//! what was found.
//!
//! Memory-mapped files: a file truncated or rewritten while mapped makes the process crash
//! with SIGBUS. Replace model files by writing a new file and renaming it over the old one
//! (atomic), never by rewriting in place.
//!
//! Architecture: [`Gguf::parse`] and [`GgufFile::open`] accept only `general.architecture =
//! "llama"` (the decoder we run); the `*_any_architecture` variants read any GGUF, for tools
//! such as `medregion inspect`. The LLaMA-specific parts (hyper-parameters, tokenizer, tensor
//! names, the Q/K row permutation) are in [`llama`].

pub mod llama;
mod parse;
pub mod value;

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

pub use llama::{
    hf_tensor_name, permute_qk, unpermute_qk, unpermute_qk_rows, GgufLlamaParams, GgufRopeScaling,
    GgufTokenizer,
};
pub use value::{GgufArray, GgufValue};

pub use crate::quant::ggml::GgmlType;
use crate::quant::{ggml, QuantType, Quantized};
use crate::{Error, Result};

/// The architecture [`Gguf::parse`] accepts.
pub const LLAMA_ARCHITECTURE: &str = "llama";

/// One tensor's entry in the GGUF header.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// GGUF name, e.g. `blk.0.attn_q.weight` (see [`hf_tensor_name`]).
    pub name: String,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Dimensions in GGUF order: `dims[0]` (ne0) is the innermost, contiguous one, so the
    /// PyTorch / numpy shape is `dims` reversed (a `[576, 49152]` GGUF embedding is a
    /// `(49152, 576)` matrix).
    pub dims: Vec<u64>,
    /// Product of `dims`.
    pub n_elements: u64,
    /// Offset of the data relative to the start of the data section (as stored).
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
    /// Absolute byte range of the data in the file.
    pub range: Range<usize>,
}

impl GgufTensorInfo {
    /// Shape in PyTorch / numpy order (outermost first): `dims` reversed.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Elements per row (`dims[0]`), 1 for a scalar.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// A parsed GGUF file over the bytes `B` (a slice, a `Vec<u8>` or a memory map).
pub struct Gguf<B> {
    what: String,
    bytes: B,
    header: parse::Header,
}

/// A GGUF file opened with a read-only memory map.
pub type GgufFile = Gguf<memmap2::Mmap>;

impl GgufFile {
    /// Memory-maps and parses a LLaMA-architecture GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_impl(path.as_ref(), true)
    }

    /// Memory-maps and parses a GGUF file of any architecture.
    pub fn open_any_architecture(path: impl AsRef<Path>) -> Result<GgufFile> {
        Self::open_impl(path.as_ref(), false)
    }

    fn open_impl(path: &Path, llama_only: bool) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process; it stays valid as long as
        // the file is not truncated or modified by another process while mapped (that would
        // raise SIGBUS or change the bytes under us). The module doc tells users to replace
        // model files by atomic rename; every offset read from the map is bounds-checked.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Gguf::parse_impl(format!("GGUF file {}", path.display()), map, llama_only)
    }
}

impl<B: AsRef<[u8]>> Gguf<B> {
    /// Parses a LLaMA-architecture GGUF held in `bytes`; `name` (a path or a label) is used
    /// in error messages as "GGUF file NAME".
    pub fn parse(name: impl std::fmt::Display, bytes: B) -> Result<Gguf<B>> {
        Self::parse_impl(format!("GGUF file {name}"), bytes, true)
    }

    /// Parses a GGUF of any architecture (inspection tools, test fixtures).
    pub fn parse_any_architecture(name: impl std::fmt::Display, bytes: B) -> Result<Gguf<B>> {
        Self::parse_impl(format!("GGUF file {name}"), bytes, false)
    }

    fn parse_impl(what: String, bytes: B, llama_only: bool) -> Result<Gguf<B>> {
        let header = parse::parse_header(&what, bytes.as_ref())?;
        let g = Gguf { what, bytes, header };
        if llama_only {
            match g.get("general.architecture") {
                None => return Err(Error::format(&g.what, "no general.architecture key")),
                Some(GgufValue::String(a)) if a == LLAMA_ARCHITECTURE => {}
                Some(GgufValue::String(a)) => {
                    return Err(Error::Unsupported(format!(
                        "{}: architecture '{a}'; medregion runs LLaMA-architecture decoders \
                         ('{LLAMA_ARCHITECTURE}') only",
                        g.what
                    )))
                }
                Some(v) => {
                    return Err(Error::format(
                        &g.what,
                        format!("general.architecture is a {}, not a string", v.type_name()),
                    ))
                }
            }
        }
        Ok(g)
    }

    /// "GGUF file NAME", as used in error messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.header.metadata
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.metadata_index.get(key).map(|&i| &self.header.metadata[i].1)
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.header.tensors
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.header.tensor_index.get(name).map(|&i| &self.header.tensors[i])
    }

    fn tensor_or_err(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor(name).ok_or_else(|| Error::NotFound(format!("tensor '{name}' in {}", self.what)))
    }

    /// The raw bytes of tensor `name` (ggml blocks as stored).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_or_err(name)?;
        // The range was checked against the file length at parse time.
        self.bytes()
            .get(t.range.clone())
            .ok_or_else(|| Error::Internal(format!("{}: tensor '{name}' range outside the file", self.what)))
    }

    /// Tensor `name` dequantized to f32, bit-identical to gguf-py's
    /// `quants.dequantize(tensor.data, tensor.tensor_type)`. Supports F32, F16, BF16, Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K; other types are
    /// [`Error::Unsupported`].
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_or_err(name)?;
        let n = usize::try_from(t.n_elements).map_err(|_| {
            Error::OutOfMemory(format!("{}: tensor '{name}' has {} elements", self.what, t.n_elements))
        })?;
        if !t.ggml_type.can_dequantize() {
            return Err(Error::Unsupported(format!(
                "{}: tensor '{name}' is of ggml type {} (id {}), which medregion cannot \
                 dequantize; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, \
                 Q3_K, Q4_K, Q5_K, Q6_K",
                self.what,
                t.ggml_type,
                t.ggml_type.id()
            )));
        }
        // Up to 12 bytes of f32 per file byte (Q2_K): fail with an error, not an abort, when
        // that does not fit.
        let mut out = Vec::new();
        out.try_reserve_exact(n).map_err(|_| {
            Error::OutOfMemory(format!("{}: tensor '{name}' needs {n} f32 values", self.what))
        })?;
        out.resize(n, 0.0f32);
        self.tensor_f32_into(name, &mut out)?;
        Ok(out)
    }

    /// Like [`Gguf::tensor_f32`], into a caller-provided buffer of exactly `n_elements`.
    pub fn tensor_f32_into(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let t = self.tensor_or_err(name)?;
        if out.len() as u64 != t.n_elements {
            return Err(Error::Shape {
                what: format!("output for tensor '{name}' of {}", self.what),
                expected: format!("{} elements", t.n_elements),
                found: format!("{} elements", out.len()),
            });
        }
        let data = self.tensor_data(name)?;
        ggml::dequantize(t.ggml_type, data, out).map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("{}: tensor '{name}': {m}", self.what)),
            other => other,
        })
    }

    /// Tensor `name` as our SoA quantized format, losslessly (a byte copy of each block's
    /// scale, min and values), when it is stored as Q8_0, Q4_0 or Q4_1; `None` otherwise.
    pub fn tensor_quantized(&self, name: &str) -> Result<Option<Quantized>> {
        let t = self.tensor_or_err(name)?;
        let Some(qtype) = t.ggml_type.quant_type() else {
            return Ok(None);
        };
        Quantized::from_ggml_blocks(qtype, self.tensor_data(name)?).map(Some)
    }

    /// The SoA format of tensor `name`, if it has one.
    pub fn tensor_quant_type(&self, name: &str) -> Option<QuantType> {
        self.tensor(name).and_then(|t| t.ggml_type.quant_type())
    }

    /// Count of tensors per ggml type, for summaries.
    pub fn type_counts(&self) -> Vec<(GgmlType, usize)> {
        let mut m: HashMap<GgmlType, usize> = HashMap::new();
        for t in self.tensors() {
            *m.entry(t.ggml_type).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|(t, _)| t.id());
        v
    }
}

impl<B> std::fmt::Debug for Gguf<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("what", &self.what)
            .field("version", &self.header.version)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .finish()
    }
}
