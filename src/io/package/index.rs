//! Parsing and checking a package header: the tensor table, the metadata and the match
//! against the tensors the config implies.
//!
//! Nothing from the file is trusted before it is checked: the 8-byte header length is compared
//! with the 100 MB limit and the file size before the header is touched; the JSON header is
//! parsed (typed, no `Value` tree) from that bounded string; every tensor's dtype, shape, byte
//! length and offsets (in range, no overlap, no gap, 64-byte aligned) are checked, then the
//! tensor set is matched against the list the config implies. Nothing is allocated in
//! proportion to a size read from the file, and no data byte is read.

use std::collections::{BTreeMap, HashMap};

use super::checksum::is_well_formed;
use super::{keys, ALIGNMENT, FORMAT_VERSION, MAX_HEADER_LEN};
use crate::model::config::{ModelConfig, TokenizerKind};
use crate::model::names::{
    expected_tensors, is_quantizable, parse_quant_part, quant_part, ExpectedTensor, QuantPart, TensorRole,
    PAD_PREFIX,
};
use crate::quant::{QuantType, QK};
use crate::tensor::{numel, shape_string, DType, WeightType};
use crate::{Error, Result};

/// Largest tensor rank accepted.
const MAX_RANK: usize = 8;

/// One stored tensor.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Relative to the data section (the header's `data_offsets`).
    pub begin: usize,
    pub end: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum Storage {
    Dense(usize),
    Quant { qtype: QuantType, values: usize, scales: usize, mins: Option<usize> },
}

/// One logical weight.
#[derive(Clone, Debug)]
pub(crate) struct WeightEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub storage: Storage,
}

/// Everything parsed from the header; positions only, no borrowed bytes.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) header_len: usize,
    pub(crate) config: ModelConfig,
    pub(crate) config_json: String,
    pub(crate) tokenizer_kind: TokenizerKind,
    pub(crate) checksum: String,
    pub(crate) metadata: BTreeMap<String, String>,
    /// Sorted by offset, fillers included.
    pub(crate) entries: Vec<Entry>,
    pub(crate) entry_by_name: HashMap<String, usize>,
    /// In package order.
    pub(crate) weights: Vec<WeightEntry>,
    pub(crate) weight_by_name: HashMap<String, usize>,
    pub(crate) tokenizer: usize,
}

pub(crate) fn truncated(what: &str, len: u64) -> Error {
    Error::format(what, format!("truncated: {len} bytes, shorter than the 8-byte header length field"))
}

fn msg_name(name: &str) -> String {
    crate::tensor::truncate_for_message(name)
}

/// Parses and checks everything but the checksum.
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Index> {
    let len = bytes.len();
    let Some(len_field) = bytes.get(..8) else {
        return Err(truncated(what, len as u64));
    };
    let n = u64::from_le_bytes(len_field.try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_LEN {
        return Err(Error::format(
            what,
            format!("declared header length {n} bytes exceeds the limit of {MAX_HEADER_LEN} bytes"),
        ));
    }
    let n = n as usize;
    if n + 8 > len {
        return Err(Error::format(
            what,
            format!("declared header length {n} bytes runs past the end of the file ({len} bytes): truncated file?"),
        ));
    }
    let header = std::str::from_utf8(&bytes[8..8 + n]).map_err(|e| {
        Error::format(what, format!("header is not valid UTF-8 (at byte {})", 8 + e.valid_up_to()))
    })?;
    let header: RawHeader = serde_json::from_str(header)
        .map_err(|e| Error::format(what, format!("header is not a valid safetensors JSON header: {e}")))?;
    let Some(metadata) = header.metadata else {
        return Err(Error::format(what, "the header has no `__metadata__`: not a medregion model package"));
    };
    let get = |key: &str| -> Result<&str> {
        metadata.get(key).map(String::as_str).ok_or_else(|| {
            Error::format(what, format!("`__metadata__` has no `{key}`: not a medregion model package"))
        })
    };
    let version = get(keys::FORMAT_VERSION)?;
    if version != FORMAT_VERSION.to_string() {
        return Err(Error::Unsupported(format!(
            "{what}: package format version `{}`; this build reads version {FORMAT_VERSION}",
            msg_name(version)
        )));
    }
    let config_json = get(keys::CONFIG)?.to_string();
    let config: ModelConfig = serde_json::from_str(&config_json)
        .map_err(|e| Error::format(what, format!("`{}` is not a valid config: {e}", keys::CONFIG)))?;
    config.validate()?;
    let tokenizer_text = get(keys::TOKENIZER)?;
    let tokenizer_kind = TokenizerKind::parse(tokenizer_text).ok_or_else(|| {
        Error::format(
            what,
            format!(
                "unknown tokenizer kind `{}` (expected bytes, hf-json, tiktoken or gguf)",
                msg_name(tokenizer_text)
            ),
        )
    })?;
    if tokenizer_kind != config.tokenizer.kind {
        return Err(Error::format(
            what,
            format!(
                "`{}` is `{}` but config.tokenizer.kind is `{}`",
                keys::TOKENIZER,
                tokenizer_kind.name(),
                config.tokenizer.kind.name()
            ),
        ));
    }
    let checksum = get(keys::CHECKSUM)?.to_string();
    if !is_well_formed(&checksum) {
        return Err(Error::format(
            what,
            format!(
                "`{}` is `{}`, not sha256: followed by 64 lower-case hex digits",
                keys::CHECKSUM,
                msg_name(&checksum)
            ),
        ));
    }

    // Tensor table.
    let data_start = 8 + n;
    let data_len = len - data_start;
    let mut entries = Vec::with_capacity(header.tensors.len());
    for (name, raw) in header.tensors {
        entries.push(check_entry(name, raw, data_len).map_err(|e| in_file(what, e))?);
    }
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut expected_begin = 0usize;
    for (i, e) in entries.iter().enumerate() {
        if e.begin < expected_begin {
            return Err(Error::format(
                what,
                format!(
                    "tensors `{}` and `{}` overlap (data bytes {}..{} and {}..{})",
                    msg_name(&entries[i - 1].name),
                    msg_name(&e.name),
                    entries[i - 1].begin,
                    entries[i - 1].end,
                    e.begin,
                    e.end
                ),
            ));
        }
        if e.begin > expected_begin {
            return Err(Error::format(
                what,
                format!(
                    "{} unused bytes before tensor `{}` (data bytes {expected_begin}..{}): safetensors data must be contiguous",
                    e.begin - expected_begin,
                    msg_name(&e.name),
                    e.begin
                ),
            ));
        }
        if !e.name.starts_with(PAD_PREFIX) && !(data_start + e.begin).is_multiple_of(ALIGNMENT) {
            return Err(Error::format(
                what,
                format!(
                    "tensor `{}` starts at file offset {}, not a multiple of {ALIGNMENT}",
                    msg_name(&e.name),
                    data_start + e.begin
                ),
            ));
        }
        if e.name.starts_with(PAD_PREFIX) && (e.dtype != DType::U8 || e.shape.len() != 1) {
            return Err(Error::format(what, format!("filler tensor `{}` must be U8 [n]", msg_name(&e.name))));
        }
        expected_begin = e.end;
    }
    if expected_begin != data_len {
        return Err(Error::format(
            what,
            format!(
                "{} bytes after the last tensor (data section is {data_len} bytes, tensors cover {expected_begin})",
                data_len - expected_begin
            ),
        ));
    }

    // These checks are a superset of the official safetensors validator's (header size, UTF-8,
    // JSON, dtype × shape = length, contiguous offsets covering the data section exactly); the
    // tests and the fuzz target check that whatever we accept, `safetensors` accepts too.
    let mut entry_by_name: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if entry_by_name.insert(e.name.clone(), i).is_some() {
            return Err(Error::format(
                what,
                format!("tensor `{}` appears twice in the header", msg_name(&e.name)),
            ));
        }
    }
    let (weights, tokenizer) = match_expected(&config, &entries, &entry_by_name, what)?;
    let weight_by_name = weights.iter().enumerate().map(|(i, w)| (w.name.clone(), i)).collect();
    Ok(Index {
        header_len: n,
        config,
        config_json,
        tokenizer_kind,
        checksum,
        metadata,
        entries,
        entry_by_name,
        weights,
        weight_by_name,
        tokenizer,
    })
}

/// Prefixes an error about one tensor with the file it is in.
fn in_file(file: &str, e: Error) -> Error {
    match e {
        Error::Format { what, reason } => Error::Format { what: format!("{file}: {what}"), reason },
        Error::Unsupported(m) => Error::Unsupported(format!("{file}: {m}")),
        other => other,
    }
}

/// One header entry as written in the JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The safetensors header: `__metadata__` (string values) and the tensor entries, in file
/// order of the JSON (no intermediate `Value` tree).
struct RawHeader {
    metadata: Option<BTreeMap<String, String>>,
    tensors: Vec<(String, RawInfo)>,
}

impl<'de> serde::Deserialize<'de> for RawHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct HeaderVisitor;
        impl<'de> serde::de::Visitor<'de> for HeaderVisitor {
            type Value = RawHeader;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensor entries and `__metadata__`")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawHeader, A::Error> {
                use serde::de::Error as _;
                let mut h = RawHeader { metadata: None, tensors: Vec::new() };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "__metadata__" {
                        if h.metadata.is_some() {
                            return Err(A::Error::custom("`__metadata__` appears twice"));
                        }
                        let m = map.next_value::<BTreeMap<String, String>>().map_err(|e| {
                            A::Error::custom(format!("`__metadata__` must map strings to strings: {e}"))
                        })?;
                        h.metadata = Some(m);
                    } else {
                        let info = map
                            .next_value::<RawInfo>()
                            .map_err(|e| A::Error::custom(format!("tensor `{}`: {e}", msg_name(&key))))?;
                        h.tensors.push((key, info));
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(HeaderVisitor)
    }
}

fn check_entry(name: String, raw: RawInfo, data_len: usize) -> Result<Entry> {
    let what = || format!("tensor `{}`", msg_name(&name));
    let dtype = DType::parse(&raw.dtype, &name)?;
    if raw.shape.len() > MAX_RANK {
        return Err(Error::format(
            what(),
            format!("rank {} exceeds the maximum of {MAX_RANK}", raw.shape.len()),
        ));
    }
    let shape = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| Error::format(what(), "a dimension does not fit in usize"))?;
    let (begin, end) = raw.data_offsets;
    if begin > end || end > data_len as u64 {
        return Err(Error::format(
            what(),
            format!("data_offsets [{begin}, {end}) lie outside the data section ({data_len} bytes): truncated file?"),
        ));
    }
    let (begin, end) = (begin as usize, end as usize);
    let size = numel(&shape).and_then(|n| n.checked_mul(dtype.size()));
    if size != Some(end - begin) {
        return Err(Error::format(
            what(),
            format!(
                "{dtype} {} needs {} bytes but data_offsets [{begin}, {end}) hold {}",
                shape_string(&shape),
                size.map_or("an overflowing number of".to_string(), |s| s.to_string()),
                end - begin
            ),
        ));
    }
    Ok(Entry { name, dtype, shape, begin, end })
}

/// Matches the stored tensors with the tensors the config implies; every stored tensor must be
/// claimed (fillers aside).
fn match_expected(
    config: &ModelConfig,
    entries: &[Entry],
    by_name: &HashMap<String, usize>,
    what: &str,
) -> Result<(Vec<WeightEntry>, usize)> {
    let mut claimed = vec![false; entries.len()];
    let mut weights = Vec::new();
    let mut tokenizer = None;
    // Quantized parts by logical name, from one pass over the stored names.
    let mut quant_parts: HashMap<&str, Vec<(QuantType, QuantPart, usize)>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some((logical, q, p)) = parse_quant_part(&e.name) {
            quant_parts.entry(logical).or_default().push((q, p, i));
        }
    }
    for expected in expected_tensors(config) {
        match expected.role {
            TensorRole::Bytes => {
                let i = *by_name.get(&expected.name).ok_or_else(|| {
                    Error::NotFound(format!(
                        "tensor `{}` (U8 [n], the tokenizer bytes) is missing from {what}",
                        expected.name
                    ))
                })?;
                let e = &entries[i];
                if e.dtype != DType::U8 || e.shape.len() != 1 || e.shape[0] == 0 {
                    return Err(Error::Shape {
                        what: format!("tensor `{}`", e.name),
                        expected: "U8 [n] with n >= 1".to_string(),
                        found: format!("{} {}", e.dtype, shape_string(&e.shape)),
                    });
                }
                claimed[i] = true;
                tokenizer = Some(i);
            }
            TensorRole::Weight => {
                let parts = quant_parts.get(expected.name.as_str()).map_or(&[][..], Vec::as_slice);
                let w = match_weight(&expected, entries, by_name, parts, &mut claimed, what)?;
                weights.push(w);
            }
        }
    }
    if let Some((_, e)) =
        entries.iter().enumerate().find(|(i, e)| !claimed[*i] && !e.name.starts_with(PAD_PREFIX))
    {
        return Err(Error::format(
            what,
            format!(
                "unexpected tensor `{}` ({} {}): not part of the model the config describes",
                msg_name(&e.name),
                e.dtype,
                shape_string(&e.shape)
            ),
        ));
    }
    let tokenizer = tokenizer.ok_or_else(|| Error::Internal("no tokenizer in the expected list".into()))?;
    Ok((weights, tokenizer))
}

fn match_weight(
    expected: &ExpectedTensor,
    entries: &[Entry],
    by_name: &HashMap<String, usize>,
    quant_parts: &[(QuantType, QuantPart, usize)],
    claimed: &mut [bool],
    what: &str,
) -> Result<WeightEntry> {
    let name = &expected.name;
    let shape = &expected.shape;
    let dense = by_name.get(name).copied();
    let quant: Vec<QuantType> =
        QuantType::ALL.into_iter().filter(|q| quant_parts.iter().any(|(pq, _, _)| pq == q)).collect();
    let found_forms = dense.iter().count() + quant.len();
    if found_forms > 1 {
        return Err(Error::format(
            what,
            format!("weight `{name}` is stored more than once (dense and/or several quantized forms)"),
        ));
    }
    let expected_text = || format!("F32, F16 or BF16 {} (or a q8_0/q4_0/q4_1 form)", shape_string(shape));
    if let Some(i) = dense {
        let e = &entries[i];
        if !e.dtype.is_float() {
            return Err(Error::Shape {
                what: format!("dtype of tensor `{name}`"),
                expected: "F32, F16 or BF16".to_string(),
                found: e.dtype.to_string(),
            });
        }
        if &e.shape != shape {
            return Err(Error::Shape {
                what: format!("shape of tensor `{name}`"),
                expected: shape_string(shape),
                found: shape_string(&e.shape),
            });
        }
        claimed[i] = true;
        return Ok(WeightEntry { name: name.clone(), shape: shape.clone(), storage: Storage::Dense(i) });
    }
    let Some(&qtype) = quant.first() else {
        return Err(Error::NotFound(format!("tensor `{name}` ({}) is missing from {what}", expected_text())));
    };
    if !is_quantizable(shape) {
        return Err(Error::format(
            what,
            format!(
                "weight `{name}` {} is stored as {qtype} but cannot be block-quantized",
                shape_string(shape)
            ),
        ));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let blocks = vec![rows, cols / QK];
    let mut part = |p: QuantPart, dtype: DType, want: Vec<usize>| -> Result<Option<usize>> {
        let Some(&(_, _, i)) = quant_parts.iter().find(|(q, pp, _)| *q == qtype && *pp == p) else {
            return Ok(None);
        };
        let e = &entries[i];
        let stored = &e.name;
        if e.dtype != dtype {
            return Err(Error::Shape {
                what: format!("dtype of tensor `{stored}`"),
                expected: dtype.to_string(),
                found: e.dtype.to_string(),
            });
        }
        if e.shape != want {
            return Err(Error::Shape {
                what: format!("shape of tensor `{stored}`"),
                expected: shape_string(&want),
                found: shape_string(&e.shape),
            });
        }
        claimed[i] = true;
        Ok(Some(i))
    };
    let missing = |p: QuantPart, dtype: DType, want: &[usize]| {
        Error::NotFound(format!(
            "tensor `{}` ({dtype} {}) is missing from {what}",
            quant_part(name, qtype, p),
            shape_string(want)
        ))
    };
    let values_shape = vec![rows, cols / QK * qtype.value_bytes_per_block()];
    let values = part(QuantPart::Values, DType::U8, values_shape.clone())?
        .ok_or_else(|| missing(QuantPart::Values, DType::U8, &values_shape))?;
    let scales = part(QuantPart::Scales, DType::F16, blocks.clone())?
        .ok_or_else(|| missing(QuantPart::Scales, DType::F16, &blocks))?;
    let mins = if qtype.has_mins() {
        let m = part(QuantPart::Mins, DType::F16, blocks.clone())?;
        Some(m.ok_or_else(|| missing(QuantPart::Mins, DType::F16, &blocks))?)
    } else {
        None
    };
    // A `mins` array for a type without mins stays unclaimed and is reported as unexpected.
    Ok(WeightEntry {
        name: name.clone(),
        shape: shape.clone(),
        storage: Storage::Quant { qtype, values, scales, mins },
    })
}

/// The weight type a stored weight entry has.
pub(crate) fn weight_type_of(w: &WeightEntry, entries: &[Entry]) -> WeightType {
    match &w.storage {
        Storage::Dense(i) => WeightType::from_dtype(entries[*i].dtype).unwrap_or(WeightType::F32),
        Storage::Quant { qtype, .. } => WeightType::from_quant(*qtype),
    }
}

/// Bytes a stored weight entry occupies.
pub(crate) fn weight_bytes(w: &WeightEntry, entries: &[Entry]) -> usize {
    let size = |i: usize| entries[i].end - entries[i].begin;
    match &w.storage {
        Storage::Dense(i) => size(*i),
        Storage::Quant { values, scales, mins, .. } => size(*values) + size(*scales) + mins.map_or(0, size),
    }
}
