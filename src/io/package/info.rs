//! [`PackageInfo`]: what `medregion inspect` shows (serializable as JSON).

use serde::Serialize;

use super::index::{weight_bytes, weight_type_of, Entry, WeightEntry};
use super::FORMAT_VERSION;
use crate::model::config::{ModelConfig, TokenizerKind};
use crate::model::names::{Component, PAD_PREFIX};
use crate::tensor::{numel, DType, WeightType};

/// One logical weight.
#[derive(Clone, Debug, Serialize)]
pub struct WeightInfo {
    pub name: String,
    pub component: String,
    pub weight_type: WeightType,
    pub shape: Vec<usize>,
    /// Bytes stored (all parts of a quantized weight).
    pub bytes: u64,
}

/// One stored tensor.
#[derive(Clone, Debug, Serialize)]
pub struct StoredTensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute file offset of the data.
    pub offset: u64,
    pub bytes: u64,
}

/// A size total (per component or per type).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SizeRow {
    pub name: String,
    pub tensors: usize,
    /// Logical elements.
    pub params: u64,
    pub bytes: u64,
}

/// A package summary.
#[derive(Clone, Debug, Serialize)]
pub struct PackageInfo {
    pub path: Option<String>,
    pub file_bytes: u64,
    pub data_offset: u64,
    pub format_version: u32,
    pub model_name: String,
    pub tokenizer: String,
    pub tokenizer_bytes: u64,
    pub checksum: String,
    pub writer: Option<String>,
    /// Logical elements of all weights.
    pub params: u64,
    pub padding_bytes: u64,
    pub components: Vec<SizeRow>,
    pub weight_types: Vec<SizeRow>,
    pub weights: Vec<WeightInfo>,
    pub tensors: Vec<StoredTensorInfo>,
}

fn add(rows: &mut Vec<SizeRow>, name: &str, params: u64, bytes: u64) {
    match rows.iter_mut().find(|r| r.name == name) {
        Some(r) => {
            r.tensors += 1;
            r.params += params;
            r.bytes += bytes;
        }
        None => rows.push(SizeRow { name: name.to_string(), tensors: 1, params, bytes }),
    }
}

impl PackageInfo {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        path: Option<String>,
        file_bytes: u64,
        data_offset: usize,
        config: &ModelConfig,
        tokenizer: TokenizerKind,
        checksum: &str,
        writer: Option<String>,
        entries: &[Entry],
        weights: &[WeightEntry],
    ) -> PackageInfo {
        let mut components = Vec::new();
        let mut weight_types: Vec<SizeRow> = Vec::new();
        let mut infos = Vec::with_capacity(weights.len());
        let mut params = 0u64;
        for w in weights {
            let ty = weight_type_of(w, entries);
            let bytes = weight_bytes(w, entries) as u64;
            let n = numel(&w.shape).unwrap_or(0) as u64;
            let comp = Component::of(&w.name).map_or("other", Component::name);
            add(&mut components, comp, n, bytes);
            add(&mut weight_types, ty.name(), n, bytes);
            params += n;
            infos.push(WeightInfo {
                name: w.name.clone(),
                component: comp.to_string(),
                weight_type: ty,
                shape: w.shape.clone(),
                bytes,
            });
        }
        weight_types.sort_by_key(|r| WeightType::ALL.iter().position(|t| t.name() == r.name));
        let mut tokenizer_bytes = 0;
        let mut padding_bytes = 0;
        let tensors = entries
            .iter()
            .map(|e| {
                let bytes = (e.end - e.begin) as u64;
                if e.name.starts_with(PAD_PREFIX) {
                    padding_bytes += bytes;
                } else if Component::of(&e.name) == Some(Component::Tokenizer) {
                    tokenizer_bytes = bytes;
                }
                StoredTensorInfo {
                    name: e.name.clone(),
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    offset: (data_offset + e.begin) as u64,
                    bytes,
                }
            })
            .collect();
        add(&mut components, "tokenizer", 0, tokenizer_bytes);
        PackageInfo {
            path,
            file_bytes,
            data_offset: data_offset as u64,
            format_version: FORMAT_VERSION,
            model_name: config.name.clone(),
            tokenizer: tokenizer.name().to_string(),
            tokenizer_bytes,
            checksum: checksum.to_string(),
            writer,
            params,
            padding_bytes,
            components,
            weight_types,
            weights: infos,
            tensors,
        }
    }
}
