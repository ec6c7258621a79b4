//! [`Weight`]: a logical model weight with typed, zero-copy data.
//!
//! A float weight is one stored tensor; a quantized weight `W` of logical shape `[rows, cols]`
//! (`cols % 32 == 0`) is three stored arrays, structure-of-arrays (see `crate::io::package`):
//! `W.<qtype>.values` (q8_0: `[rows, cols]` int8 bits; q4: `[rows, cols/2]` packed nibbles, ggml
//! order), `W.<qtype>.scales` (`[rows, cols/32]` f16) and, for q4_1, `W.<qtype>.mins`.

use half::{bf16, f16, slice::HalfFloatSliceExt};

use super::{numel, WeightType};
use crate::quant::{self, QuantType, QK};
use crate::{Error, Result};

/// A dense weight of element type `T` (f32, f16 or bf16), row-major.
#[derive(Clone, Copy, Debug)]
pub struct Dense<'a, T> {
    /// The logical (canonical) name.
    pub name: &'a str,
    /// The logical shape, outermost first.
    pub shape: &'a [usize],
    /// `numel(shape)` values.
    pub data: &'a [T],
}

/// A block-32 quantized weight of logical shape `[rows, cols]`, stored structure-of-arrays.
#[derive(Clone, Copy, Debug)]
pub struct QuantWeight<'a> {
    /// The logical (canonical) name.
    pub name: &'a str,
    /// The block format.
    pub qtype: QuantType,
    /// The logical shape `[rows, cols]`.
    pub shape: &'a [usize],
    /// `rows * cols / 32 * qtype.value_bytes_per_block()` bytes.
    pub values: &'a [u8],
    /// One f16 scale per block: `rows * cols / 32`.
    pub scales: &'a [f16],
    /// One f16 min per block for q4_1, empty otherwise.
    pub mins: &'a [f16],
}

/// A logical weight: dense f32/f16/bf16 or block-quantized. One model definition serves every
/// format; the kernels dispatch on the variant.
#[derive(Clone, Copy, Debug)]
pub enum Weight<'a> {
    F32(Dense<'a, f32>),
    F16(Dense<'a, f16>),
    BF16(Dense<'a, bf16>),
    Quant(QuantWeight<'a>),
}

impl<'a> Weight<'a> {
    /// The logical name.
    pub fn name(&self) -> &'a str {
        match self {
            Weight::F32(d) => d.name,
            Weight::F16(d) => d.name,
            Weight::BF16(d) => d.name,
            Weight::Quant(q) => q.name,
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> &'a [usize] {
        match self {
            Weight::F32(d) => d.shape,
            Weight::F16(d) => d.shape,
            Weight::BF16(d) => d.shape,
            Weight::Quant(q) => q.shape,
        }
    }

    /// How the weight is stored.
    pub fn weight_type(&self) -> WeightType {
        match self {
            Weight::F32(_) => WeightType::F32,
            Weight::F16(_) => WeightType::F16,
            Weight::BF16(_) => WeightType::Bf16,
            Weight::Quant(q) => WeightType::from_quant(q.qtype),
        }
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        numel(self.shape()).unwrap_or(0)
    }

    /// Rows of the weight seen as a matrix: the product of all but the last dimension.
    pub fn rows(&self) -> usize {
        let shape = self.shape();
        match shape.split_last() {
            Some((_, lead)) => numel(lead).unwrap_or(0),
            None => 1,
        }
    }

    /// Columns of the weight seen as a matrix: the last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape().last().copied().unwrap_or(1)
    }

    /// Bytes the weight occupies in the package.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Weight::F32(d) => std::mem::size_of_val(d.data),
            Weight::F16(d) => std::mem::size_of_val(d.data),
            Weight::BF16(d) => std::mem::size_of_val(d.data),
            Weight::Quant(q) => q.values.len() + 2 * (q.scales.len() + q.mins.len()),
        }
    }

    /// The values as f32 (dequantized for a quantized weight): for references and tests.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.numel()];
        self.rows_to_f32(0, self.rows(), &mut out)?;
        Ok(out)
    }

    /// Rows `first..first + count` as f32 into `out` (`count * cols` values), e.g. an
    /// embedding lookup. Allocates nothing.
    pub fn rows_to_f32(&self, first: usize, count: usize, out: &mut [f32]) -> Result<()> {
        let (rows, cols) = (self.rows(), self.cols());
        let in_range = first.checked_add(count).is_some_and(|end| end <= rows);
        if !in_range {
            return Err(Error::invalid(
                "rows",
                format!(
                    "rows {first}..{} of weight `{}` out of range (it has {rows} rows)",
                    first.saturating_add(count),
                    self.name()
                ),
            ));
        }
        if out.len() != count * cols {
            return Err(Error::Shape {
                what: format!("output for rows of weight `{}`", self.name()),
                expected: (count * cols).to_string(),
                found: out.len().to_string(),
            });
        }
        let span = first * cols..(first + count) * cols;
        match self {
            Weight::F32(d) => out.copy_from_slice(&d.data[span]),
            Weight::F16(d) => d.data[span].convert_to_f32_slice(out),
            Weight::BF16(d) => d.data[span].convert_to_f32_slice(out),
            Weight::Quant(q) => {
                let vb = q.qtype.value_bytes_per_block();
                let blocks = span.start / QK..span.end / QK;
                let values = &q.values[blocks.start * vb..blocks.end * vb];
                let scales = &q.scales[blocks.clone()];
                let mins = if q.mins.is_empty() { q.mins } else { &q.mins[blocks] };
                quant::dequantize(q.qtype, values, scales, mins, out)?;
            }
        }
        Ok(())
    }
}
