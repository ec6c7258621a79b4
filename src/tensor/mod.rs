//! Tensor views, storage dtypes and weights.
//!
//! * [`DType`]: the element types a model package stores (`F32`, `F16`, `BF16`, `U8`).
//! * [`WeightType`]: how a logical weight is stored: a float dtype, or one of the block-32
//!   quantized formats of [`crate::quant`] (`q8_0`, `q4_0`, `q4_1`).
//! * [`TensorView`]: a zero-copy view (name, dtype, shape, bytes) over mapped package bytes.
//! * [`Weight`]: a logical weight with typed, zero-copy data. Quantization is a property of the
//!   weight (DESIGN.md §4): model code asks for `weight(name)` and the matmul dispatches on the
//!   variant; [`Weight::to_f32`] gives the dequantized values for references and tests.
//!
//! Everything here assumes a little-endian host, like the safetensors format itself.

mod cast;
mod dtype;
mod view;
mod weight;

pub use cast::{as_bytes, cast_slice, Element};
pub(crate) use dtype::truncate_for_message;
pub use dtype::{DType, WeightType};
pub use view::TensorView;
pub use weight::{Dense, QuantWeight, Weight};

#[cfg(not(target_endian = "little"))]
compile_error!("medregion reads little-endian tensor data in place and supports little-endian hosts only");

/// Number of elements of a shape (1 for a scalar), `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A shape as the text used in error messages and `inspect`: `[768, 3, 14, 14]`.
pub fn shape_string(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
