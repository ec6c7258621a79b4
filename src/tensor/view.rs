//! [`TensorView`]: one stored tensor, viewed in place.

use half::{bf16, f16, slice::HalfFloatSliceExt};

use super::cast::{cast_slice, Element};
use super::{numel, shape_string, DType};
use crate::{Error, Result};

/// A zero-copy view of one stored tensor: its name, dtype, shape and bytes (row-major,
/// little-endian). Cheap to copy; borrows the model it came from.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    name: &'a str,
    dtype: DType,
    shape: &'a [usize],
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// A view over `data`, which must hold exactly `numel(shape) * dtype.size()` bytes.
    pub fn new(name: &'a str, dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Result<Self> {
        let expected = numel(shape).and_then(|n| n.checked_mul(dtype.size()));
        if expected != Some(data.len()) {
            return Err(Error::Shape {
                what: format!("bytes of tensor `{name}` ({dtype} {})", shape_string(shape)),
                expected: expected.map_or("an overflow".to_string(), |n| n.to_string()),
                found: data.len().to_string(),
            });
        }
        Ok(TensorView { name, dtype, shape, data })
    }

    /// The tensor's name in the package.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The stored element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// The raw bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The data as `&[T]`; an error when `T` is not the stored dtype or the bytes are misaligned.
    pub fn typed<T: Element>(&self) -> Result<&'a [T]> {
        let want = element_dtype::<T>();
        if want != self.dtype {
            return Err(Error::Shape {
                what: format!("dtype of tensor `{}`", self.name),
                expected: want.to_string(),
                found: self.dtype.to_string(),
            });
        }
        cast_slice::<T>(self.data).ok_or_else(|| {
            Error::format(
                format!("tensor `{}`", self.name),
                format!("data is not aligned for {}", self.dtype),
            )
        })
    }

    /// The values converted to f32 (a float tensor only; `U8` is an error).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.numel()];
        self.to_f32_into(&mut out)?;
        Ok(out)
    }

    /// Converts the values to f32 into `out` (of length `numel`).
    pub fn to_f32_into(&self, out: &mut [f32]) -> Result<()> {
        if out.len() != self.numel() {
            return Err(Error::Shape {
                what: format!("output for tensor `{}`", self.name),
                expected: self.numel().to_string(),
                found: out.len().to_string(),
            });
        }
        match self.dtype {
            DType::F32 => out.copy_from_slice(self.typed::<f32>()?),
            DType::F16 => self.typed::<f16>()?.convert_to_f32_slice(out),
            DType::BF16 => self.typed::<bf16>()?.convert_to_f32_slice(out),
            DType::U8 => {
                return Err(Error::Unsupported(format!(
                    "tensor `{}` holds bytes (U8), not floating-point values",
                    self.name
                )))
            }
        }
        Ok(())
    }
}

/// The [`DType`] stored for element type `T`.
pub(crate) fn element_dtype<T: Element>() -> DType {
    let id = std::any::TypeId::of::<T>();
    if id == std::any::TypeId::of::<f32>() {
        DType::F32
    } else if id == std::any::TypeId::of::<f16>() {
        DType::F16
    } else if id == std::any::TypeId::of::<bf16>() {
        DType::BF16
    } else {
        DType::U8
    }
}

impl std::fmt::Display for TensorView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.name, self.dtype, shape_string(self.shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::cast::as_bytes;

    #[test]
    fn view_checks_length_and_converts() {
        let values = [f16::from_f32(1.5), f16::from_f32(-2.0)];
        let shape = [2usize];
        let v = TensorView::new("x", DType::F16, &shape, as_bytes(&values)).unwrap();
        assert_eq!(v.to_f32().unwrap(), vec![1.5, -2.0]);
        assert!(v.typed::<f32>().is_err());
        assert!(TensorView::new("x", DType::F32, &shape, as_bytes(&values)).is_err());
    }
}
