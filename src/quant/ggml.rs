//! ggml tensor types as they appear in GGUF files (array-of-structs blocks), and their
//! dequantization to f32 for import.
//!
//! Type ids, block sizes and byte sizes mirror `GGMLQuantizationType` / `GGML_QUANT_SIZES` in
//! gguf-py `constants.py` (== `enum ggml_type` / `type_traits` in ggml.c). Dequantization
//! mirrors gguf-py `quants.py` operation for operation, so the f32 results are bit-identical
//! to `gguf.quants.dequantize` (checked on a real model in `tests/quant_gguf.rs`). Only import
//! uses these: the engine runs on our SoA formats (`quant::Quantized`) or on f32/f16/bf16.

use half::f16;

use super::{kquants, q4_0, q4_1, q8_0, QuantType, QK};
use crate::{Error, Result};

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $bytes:expr;)*) => {
        /// A ggml tensor type (`enum ggml_type`). Ids not listed here are unknown to this build.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType { $($variant,)* }

        impl GgmlType {
            /// Every known type.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type with this id, if known.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id { $($id => Some(GgmlType::$variant),)* _ => None }
            }

            /// The numeric id stored in GGUF tensor infos.
            pub fn id(self) -> u32 {
                match self { $(GgmlType::$variant => $id,)* }
            }

            /// ggml's name: "F32", "Q4_K", ...
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$variant => $name,)* }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> usize {
                match self { $(GgmlType::$variant => $block,)* }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self { $(GgmlType::$variant => $bytes,)* }
            }
        }
    };
}

const QK_K: usize = kquants::QK_K;

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 2 + 16;
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16;
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16;
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16;
    Q8_0 = 8, "Q8_0", 32, 2 + 32;
    Q8_1 = 9, "Q8_1", 32, 4 + 4 + 32;
    Q2_K = 10, "Q2_K", 256, 2 + 2 + QK_K / 16 + QK_K / 4;
    Q3_K = 11, "Q3_K", 256, 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4_K = 12, "Q4_K", 256, 2 + 2 + QK_K / 2 + 12;
    Q5_K = 13, "Q5_K", 256, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    Q6_K = 14, "Q6_K", 256, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    Q8_K = 15, "Q8_K", 256, 4 + QK_K + QK_K / 8;
    IQ2_XXS = 16, "IQ2_XXS", 256, 2 + QK_K / 4;
    IQ2_XS = 17, "IQ2_XS", 256, 2 + QK_K / 4 + QK_K / 32;
    IQ3_XXS = 18, "IQ3_XXS", 256, 2 + QK_K / 4 + QK_K / 8;
    IQ1_S = 19, "IQ1_S", 256, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, "IQ4_NL", 32, 2 + 16;
    IQ3_S = 21, "IQ3_S", 256, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    IQ2_S = 22, "IQ2_S", 256, 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS = 23, "IQ4_XS", 256, 2 + 2 + QK_K / 2 + QK_K / 64;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 2 + 4 * 13;
    TQ2_0 = 35, "TQ2_0", 256, 2 + 64;
    MXFP4 = 39, "MXFP4", 32, 1 + 16;
    NVFP4 = 40, "NVFP4", 64, 4 + 32;
    Q1_0 = 41, "Q1_0", 128, 2 + 16;
}

impl GgmlType {
    /// Our SoA format with the same arithmetic, if there is one (Q8_0, Q4_0, Q4_1).
    pub fn quant_type(self) -> Option<QuantType> {
        QuantType::from_ggml_type_id(self.id())
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K)
    }

    /// Bytes of `n_elements` elements, or `None` when `n_elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.type_size() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantizes ggml blocks of type `ty` (`bytes`, as stored in GGUF) into `out`, exactly as
/// gguf-py's `quants.dequantize` does. `out.len()` is the element count and must match
/// `bytes.len()`; unsupported types are [`Error::Unsupported`].
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(Error::Unsupported(format!(
            "dequantizing ggml type {} (id {}); supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, \
             Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K",
            ty.name(),
            ty.id()
        )));
    }
    let want = ty.bytes_for(out.len() as u64);
    if want != Some(bytes.len() as u64) {
        return Err(Error::Shape {
            what: format!("{} data for {} elements", ty.name(), out.len()),
            expected: match want {
                Some(w) => format!("{w} bytes"),
                None => format!("a multiple of {} elements", ty.block_size()),
            },
            found: format!("{} bytes", bytes.len()),
        });
    }
    if let Some(qtype) = ty.quant_type() {
        dequantize_ours_aos(qtype, bytes, out);
        return Ok(());
    }
    let (bs, ts) = (ty.block_size(), ty.type_size());
    let blocks = bytes.chunks_exact(ts).zip(out.chunks_exact_mut(bs));
    match ty {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_to_f32_keep_nan(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        GgmlType::BF16 => {
            for (b, o) in blocks {
                // numpy: `(int16 as int32) << 16` viewed as f32, NaN payloads included.
                o[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        GgmlType::Q5_0 => blocks.for_each(|(b, o)| kquants::dequantize_q5_0(b, o)),
        GgmlType::Q5_1 => blocks.for_each(|(b, o)| kquants::dequantize_q5_1(b, o)),
        GgmlType::Q2_K => blocks.for_each(|(b, o)| kquants::dequantize_q2_k(b, o)),
        GgmlType::Q3_K => blocks.for_each(|(b, o)| kquants::dequantize_q3_k(b, o)),
        GgmlType::Q4_K => blocks.for_each(|(b, o)| kquants::dequantize_q4_k(b, o)),
        GgmlType::Q5_K => blocks.for_each(|(b, o)| kquants::dequantize_q5_k(b, o)),
        GgmlType::Q6_K => blocks.for_each(|(b, o)| kquants::dequantize_q6_k(b, o)),
        _ => return Err(Error::Internal(format!("no dequantizer for {}", ty.name()))),
    }
    Ok(())
}

/// Q8_0 / Q4_0 / Q4_1 blocks in ggml's array-of-structs layout, through the same per-block
/// kernels as our SoA data (so GGUF import and SoA dequantization agree bit for bit). Lengths
/// were checked by the caller.
fn dequantize_ours_aos(qtype: QuantType, bytes: &[u8], out: &mut [f32]) {
    let f16_at = |b: &[u8], at: usize| f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
    let blocks = bytes.chunks_exact(qtype.ggml_block_bytes()).zip(out.chunks_exact_mut(QK));
    for (b, o) in blocks {
        let Ok(o) = <&mut [f32; QK]>::try_from(o) else { continue };
        match qtype {
            QuantType::Q8_0 => {
                if let Ok(q) = b[2..].try_into() {
                    q8_0::dequantize_block(q, f16_at(b, 0), o);
                }
            }
            QuantType::Q4_0 => {
                if let Ok(q) = b[2..].try_into() {
                    q4_0::dequantize_block(q, f16_at(b, 0), o);
                }
            }
            QuantType::Q4_1 => {
                if let Ok(q) = b[4..].try_into() {
                    q4_1::dequantize_block(q, f16_at(b, 0), f16_at(b, 2), o);
                }
            }
        }
    }
}

/// f16 → f32 as numpy's `astype(np.float32)` does: exact, and NaNs keep their payload (a
/// signalling NaN stays signalling, where F16C's `vcvtph2ps` would quiet it).
#[inline]
fn f16_to_f32_keep_nan(bits: u16) -> f32 {
    if bits & 0x7C00 == 0x7C00 && bits & 0x03FF != 0 {
        let sign = ((bits & 0x8000) as u32) << 16;
        f32::from_bits(sign | 0x7F80_0000 | (((bits & 0x03FF) as u32) << 13))
    } else {
        f16::from_bits(bits).to_f32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_ids() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None); // Q4_2, removed from ggml
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q8_0.quant_type(), Some(QuantType::Q8_0));
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::Q8_0.bytes_for(63), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }

    #[test]
    fn plain_types() {
        let bytes = [0x00, 0x3C, 0x00, 0xC0]; // f16 1.0, -2.0 ; bf16 ~ 0x3C00 etc.
        let mut out = [0.0f32; 2];
        dequantize(GgmlType::F16, &bytes, &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0]);
        let bf = [0x80, 0x3F, 0x00, 0xC0];
        dequantize(GgmlType::BF16, &bf, &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0]);
        assert!(matches!(dequantize(GgmlType::F16, &bytes, &mut [0.0; 3]), Err(Error::Shape { .. })));
        // NaN payloads survive, as in numpy.
        assert_eq!(f16_to_f32_keep_nan(0x7C01).to_bits(), 0x7F80_2000);
        assert_eq!(f16_to_f32_keep_nan(0xFE00).to_bits(), 0xFFC0_0000);
        assert!(matches!(
            dequantize(GgmlType::IQ2_XXS, &[0; 66], &mut [0.0; 256]),
            Err(Error::Unsupported(_))
        ));
    }
}
