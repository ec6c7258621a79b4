//! Storage element types ([`DType`]) and weight storage types ([`WeightType`]).

use serde::{Deserialize, Serialize};

use crate::quant::{QuantType, QK};
use crate::{Error, Result};

/// The element type of one stored tensor, named as in the safetensors header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    BF16,
    /// Bytes: the tokenizer, quantized values, filler tensors.
    U8,
}

/// Every dtype name the safetensors format defines (0.8); the ones that are not a [`DType`] are
/// valid safetensors but unsupported in a model package.
const SAFETENSORS_DTYPES: &[&str] = &[
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
];

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// The safetensors name (`"F32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::U8 => "U8",
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U8)
    }

    /// Parses a safetensors dtype name. A name safetensors knows but a package may not hold
    /// (e.g. `F64`) is [`Error::Unsupported`]; anything else is [`Error::Format`].
    pub fn parse(name: &str, tensor: &str) -> Result<DType> {
        match name {
            "F32" => Ok(DType::F32),
            "F16" => Ok(DType::F16),
            "BF16" => Ok(DType::BF16),
            "U8" => Ok(DType::U8),
            _ if SAFETENSORS_DTYPES.contains(&name) => Err(Error::Unsupported(format!(
                "tensor `{tensor}` has dtype {name}; a model package holds F32, F16, BF16 and U8 tensors only"
            ))),
            _ => Err(Error::format(
                format!("tensor `{tensor}`"),
                format!("unknown dtype `{}`", truncate_for_message(name)),
            )),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a logical weight is stored: a float dtype or a block-32 quantized format.
///
/// Serialized (and parsed on the command line) in snake case: `f32`, `f16`, `bf16`, `q8_0`,
/// `q4_0`, `q4_1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    F32,
    F16,
    Bf16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
    #[serde(rename = "q4_1")]
    Q4_1,
}

impl WeightType {
    /// All weight types, in a stable order.
    pub const ALL: [WeightType; 6] = [
        WeightType::F32,
        WeightType::F16,
        WeightType::Bf16,
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4_1,
    ];

    /// The lower-case name (`"q4_0"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::F16 => "f16",
            WeightType::Bf16 => "bf16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4_1 => "q4_1",
        }
    }

    /// Parses a lower- or upper-case name.
    pub fn parse(text: &str) -> Result<WeightType> {
        let lower = text.trim().to_ascii_lowercase();
        WeightType::ALL.into_iter().find(|t| t.name() == lower).ok_or_else(|| {
            Error::invalid(
                "weight type",
                format!("`{}` is not one of f32, f16, bf16, q8_0, q4_0, q4_1", truncate_for_message(text)),
            )
        })
    }

    /// The quantized format, if this is one.
    pub fn quant(self) -> Option<QuantType> {
        match self {
            WeightType::Q8_0 => Some(QuantType::Q8_0),
            WeightType::Q4_0 => Some(QuantType::Q4_0),
            WeightType::Q4_1 => Some(QuantType::Q4_1),
            _ => None,
        }
    }

    /// The float storage dtype, if this is a float type.
    pub fn float_dtype(self) -> Option<DType> {
        match self {
            WeightType::F32 => Some(DType::F32),
            WeightType::F16 => Some(DType::F16),
            WeightType::Bf16 => Some(DType::BF16),
            _ => None,
        }
    }

    /// The weight type of a float dtype (`None` for `U8`).
    pub fn from_dtype(dtype: DType) -> Option<WeightType> {
        match dtype {
            DType::F32 => Some(WeightType::F32),
            DType::F16 => Some(WeightType::F16),
            DType::BF16 => Some(WeightType::Bf16),
            DType::U8 => None,
        }
    }

    /// The weight type of a quantized format.
    pub fn from_quant(qtype: QuantType) -> WeightType {
        match qtype {
            QuantType::Q8_0 => WeightType::Q8_0,
            QuantType::Q4_0 => WeightType::Q4_0,
            QuantType::Q4_1 => WeightType::Q4_1,
        }
    }

    /// Bytes needed to store `numel` elements (for quantized types `numel` must be a multiple
    /// of the block size; values plus scales plus mins).
    pub fn storage_bytes(self, numel: usize) -> usize {
        match self.quant() {
            None => numel * self.float_dtype().map_or(4, DType::size),
            Some(q) => {
                let blocks = numel / QK;
                let per_block = q.value_bytes_per_block() + 2 + if q.has_mins() { 2 } else { 0 };
                blocks * per_block
            }
        }
    }
}

impl std::fmt::Display for WeightType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Untrusted text cut to a length fit for an error message.
pub(crate) fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_type_names_round_trip() {
        for t in WeightType::ALL {
            assert_eq!(WeightType::parse(t.name()).unwrap(), t);
            assert_eq!(WeightType::parse(&t.name().to_uppercase()).unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<WeightType>(&json).unwrap(), t);
        }
        assert!(WeightType::parse("q5_k").is_err());
    }

    #[test]
    fn dtype_parse_errors() {
        assert_eq!(DType::parse("BF16", "t").unwrap(), DType::BF16);
        assert!(matches!(DType::parse("F64", "t"), Err(Error::Unsupported(_))));
        assert!(matches!(DType::parse("F17", "t"), Err(Error::Format { .. })));
    }

    #[test]
    fn storage_bytes() {
        assert_eq!(WeightType::F32.storage_bytes(64), 256);
        assert_eq!(WeightType::Bf16.storage_bytes(64), 128);
        assert_eq!(WeightType::Q8_0.storage_bytes(64), 2 * 34);
        assert_eq!(WeightType::Q4_0.storage_bytes(64), 2 * 18);
        assert_eq!(WeightType::Q4_1.storage_bytes(64), 2 * 20);
    }
}
