//! Parsing the GGUF header (magic, version, counts, metadata, tensor infos) from a byte slice,
//! hardened for hostile input.
//!
//! Rules, so that a malformed or malicious file fails fast with a specific message:
//! * every length or count read from the file is checked against the bytes that remain
//!   before anything is allocated for it (a count is capped by `remaining / min_size`, where
//!   `min_size` is the fewest bytes one item can take), so memory stays proportional to the
//!   file, never to a number in it;
//! * all offset arithmetic is checked (`checked_add` / `checked_mul`);
//! * nesting of metadata arrays is limited ([`MAX_ARRAY_DEPTH`]) so recursion cannot
//!   overflow the stack;
//! * tensor data must lie inside the data section, aligned, without overlapping another
//!   tensor; dims must be whole blocks of the tensor's type.

use std::collections::HashMap;

use super::value::{type_id, GgufArray, GgufValue};
use super::GgufTensorInfo;
use crate::quant::ggml::GgmlType;
use crate::{Error, Result};

/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML_MAX_DIMS.
pub const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays in metadata we accept (real files use 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Fewest bytes of one tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;
/// Fewest bytes of one metadata entry: key length, value type, a one-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// Everything in the header.
pub(super) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub metadata_index: HashMap<String, usize>,
    pub tensors: Vec<GgufTensorInfo>,
    pub tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

/// Describes the item being read, built only when an error needs it.
type Item<'s> = &'s dyn Fn() -> String;

impl<'a> Cursor<'a> {
    fn err(&self, reason: String) -> Error {
        Error::format(self.what, reason)
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, item: Item) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "{} needs {n} bytes at offset {} but only {} remain (file is {} bytes)",
                item(),
                self.pos,
                self.remaining(),
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn bytes<const N: usize>(&mut self, item: Item) -> Result<[u8; N]> {
        let s = self.take(N as u64, item)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, item: Item) -> Result<u32> {
        self.bytes(item).map(u32::from_le_bytes)
    }

    fn u64(&mut self, item: Item) -> Result<u64> {
        self.bytes(item).map(u64::from_le_bytes)
    }

    fn bool(&mut self, item: Item) -> Result<bool> {
        let pos = self.pos;
        match self.bytes::<1>(item)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("{} at offset {pos} is a bool of value {b}, not 0 or 1", item()))),
        }
    }

    fn string(&mut self, item: Item) -> Result<String> {
        let len = self.u64(&|| format!("{} (string length)", item()))?;
        let pos = self.pos;
        let bytes = self.take(len, &|| format!("{} ({len}-byte string)", item()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.err(format!(
                "{} at offset {pos} is not valid UTF-8 (invalid byte at position {} of {len})",
                item(),
                e.valid_up_to()
            ))),
        }
    }

    /// Checks that `n` items of at least `min` bytes each can fit in what remains.
    fn check_count(&self, n: u64, min: u64, item: Item) -> Result<usize> {
        match n.checked_mul(min) {
            Some(b) if b <= self.remaining() => Ok(n as usize),
            _ => Err(self.err(format!(
                "{} declares {n} entries (at least {min} bytes each) at offset {} but only {} \
                 bytes remain",
                item(),
                self.pos,
                self.remaining()
            ))),
        }
    }
}

fn read_value(c: &mut Cursor, ty: u32, item: Item) -> Result<GgufValue> {
    use type_id::*;
    Ok(match ty {
        U8 => GgufValue::U8(c.bytes::<1>(item)?[0]),
        I8 => GgufValue::I8(i8::from_le_bytes(c.bytes(item)?)),
        U16 => GgufValue::U16(u16::from_le_bytes(c.bytes(item)?)),
        I16 => GgufValue::I16(i16::from_le_bytes(c.bytes(item)?)),
        U32 => GgufValue::U32(c.u32(item)?),
        I32 => GgufValue::I32(i32::from_le_bytes(c.bytes(item)?)),
        F32 => GgufValue::F32(f32::from_le_bytes(c.bytes(item)?)),
        U64 => GgufValue::U64(c.u64(item)?),
        I64 => GgufValue::I64(i64::from_le_bytes(c.bytes(item)?)),
        F64 => GgufValue::F64(f64::from_le_bytes(c.bytes(item)?)),
        BOOL => GgufValue::Bool(c.bool(item)?),
        STRING => GgufValue::String(c.string(item)?),
        ARRAY => GgufValue::Array(read_array(c, 1, item)?),
        _ => return Err(c.err(format!("{} has unknown value type {ty}", item()))),
    })
}

fn read_array(c: &mut Cursor, depth: usize, item: Item) -> Result<GgufArray> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(c.err(format!("{} nests arrays deeper than {MAX_ARRAY_DEPTH} levels", item())));
    }
    let ety = c.u32(&|| format!("{} (array element type)", item()))?;
    let n = c.u64(&|| format!("{} (array length)", item()))?;
    let Some(min) = type_id::min_encoded_size(ety) else {
        return Err(c.err(format!("{} is an array of unknown value type {ety}", item())));
    };
    let n = c.check_count(n, min, &|| format!("{} ({} array)", item(), type_id::name(ety)))?;
    macro_rules! scalars {
        ($variant:ident, $t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let bytes = c.take((n * W) as u64, item)?;
            GgufArray::$variant(
                bytes
                    .chunks_exact(W)
                    .map(|b| {
                        let mut a = [0u8; W];
                        a.copy_from_slice(b);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    use type_id::*;
    Ok(match ety {
        U8 => GgufArray::U8(c.take(n as u64, item)?.to_vec()),
        I8 => scalars!(I8, i8),
        U16 => scalars!(U16, u16),
        I16 => scalars!(I16, i16),
        U32 => scalars!(U32, u32),
        I32 => scalars!(I32, i32),
        F32 => scalars!(F32, f32),
        U64 => scalars!(U64, u64),
        I64 => scalars!(I64, i64),
        F64 => scalars!(F64, f64),
        BOOL => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.bool(&|| format!("{}[{i}]", item()))?);
            }
            GgufArray::Bool(v)
        }
        STRING => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("{}[{i}]", item()))?);
            }
            GgufArray::String(v)
        }
        _ => {
            // ARRAY: each element is itself (element type, length, data).
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_array(c, depth + 1, &|| format!("{}[{i}]", item()))?);
            }
            GgufArray::Array(v)
        }
    })
}

fn check_version(what: &str, version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(Error::Unsupported(format!(
            "{what}: GGUF version 1 (32-bit lengths, 2023); re-convert it with a current llama.cpp"
        ))),
        v if v != 0 && v & 0xFFFF == 0 => Err(Error::Unsupported(format!(
            "{what}: big-endian GGUF (version field {v:#010x}); only little-endian files are read"
        ))),
        v => Err(Error::Unsupported(format!("{what}: GGUF version {v}; this build reads versions 2 and 3"))),
    }
}

/// Parses the header of `buf`. `what` names the file in error messages ("GGUF file X").
pub(super) fn parse_header(what: &str, buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0, what };
    if buf.len() < 4 {
        return Err(c.err(format!("file is {} bytes, too short for a GGUF header", buf.len())));
    }
    let magic = c.bytes::<4>(&|| "magic".into())?;
    if &magic != b"GGUF" {
        return Err(c.err(format!("not a GGUF file: starts with {magic:02x?}, expected \"GGUF\"")));
    }
    let version = c.u32(&|| "GGUF version".into())?;
    check_version(what, version)?;
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    let n_kv = c.check_count(n_kv, MIN_KV, &|| "the header's metadata count".into())?;
    let n_tensors = c.check_count(n_tensors, MIN_TENSOR_INFO, &|| "the header's tensor count".into())?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut metadata_index = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let ty = c.u32(&|| format!("metadata '{key}' (value type)"))?;
        let value = read_value(&mut c, ty, &|| format!("metadata '{key}'"))?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(c.err(format!("metadata key '{key}' appears twice")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(v) => {
            return Err(c.err(format!(
                "general.alignment must be a non-zero power of two of type uint32, found {} {v:?}",
                v.type_name()
            )))
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("tensor info #{i} (name)"))?;
        let n_dims = c.u32(&|| format!("tensor '{name}' (dimension count)"))?;
        if n_dims > MAX_DIMS {
            return Err(c.err(format!("tensor '{name}' has {n_dims} dimensions; GGUF allows {MAX_DIMS}")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("tensor '{name}' (dimension {d})"))?);
        }
        let type_id = c.u32(&|| format!("tensor '{name}' (type)"))?;
        let offset = c.u64(&|| format!("tensor '{name}' (data offset)"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            Error::Unsupported(format!(
                "{what}: tensor '{name}' has ggml type {type_id}, which this build does not know"
            ))
        })?;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| c.err(format!("tensor '{name}' dims {dims:?} overflow a 64-bit element count")))?;
        let row = dims.first().copied().unwrap_or(1);
        if row % ggml_type.block_size() as u64 != 0 {
            return Err(c.err(format!(
                "tensor '{name}' of type {ggml_type} has rows of {row} elements, not a multiple \
                 of its block size {}",
                ggml_type.block_size()
            )));
        }
        let n_bytes = ggml_type.bytes_for(n_elements).ok_or_else(|| {
            c.err(format!("tensor '{name}' ({n_elements} elements of {ggml_type}) overflows"))
        })?;
        if offset % alignment != 0 {
            return Err(c.err(format!(
                "tensor '{name}' data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(c.err(format!("tensor '{name}' appears twice")));
        }
        tensors.push(GgufTensorInfo { name, ggml_type, dims, n_elements, offset, n_bytes, range: 0..0 });
    }

    let data_offset = (c.pos as u64)
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| c.err("data section offset overflows".into()))?;
    let file_len = buf.len() as u64;
    for t in &mut tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => t.range = s as usize..e as usize,
            (Some(s), Some(e)) => {
                return Err(c.err(format!(
                    "tensor '{}' data [{s}, {e}) extends past end of file ({file_len} bytes)",
                    t.name
                )))
            }
            _ => {
                return Err(c.err(format!(
                    "tensor '{}' data offset {} + {} bytes overflows",
                    t.name, t.offset, t.n_bytes
                )))
            }
        }
    }
    let mut order: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| (t.range.start, t.range.end));
    for w in order.windows(2) {
        if w[0].range.end > w[1].range.start {
            return Err(c.err(format!(
                "tensors '{}' [{}, {}) and '{}' [{}, {}) overlap",
                w[0].name, w[0].range.start, w[0].range.end, w[1].name, w[1].range.start, w[1].range.end
            )));
        }
    }
    Ok(Header { version, metadata, metadata_index, tensors, tensor_index, alignment, data_offset })
}
