//! Reinterpreting aligned little-endian bytes as typed element slices, without copying.
//!
//! The package format puts every tensor on a 64-byte boundary of the file, and the loader checks
//! the alignment of the mapped (or caller-supplied) bytes before it hands out a view, so the casts
//! here succeed for every tensor of a loaded package.

use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type that may be read in place from package bytes: plain old data for which every
/// bit pattern is a valid value (`u8`, `f32`, `f16`, `bf16`). Sealed: no other type implements it.
pub trait Element: sealed::Sealed + Copy + 'static {}
impl Element for u8 {}
impl Element for f32 {}
impl Element for f16 {}
impl Element for bf16 {}

/// `bytes` as `&[T]`, or `None` when the length is not a multiple of `size_of::<T>()` or the
/// start is not aligned for `T`.
pub fn cast_slice<T: Element>(bytes: &[u8]) -> Option<&[T]> {
    // SAFETY: `T: Element` is sealed to u8, f32, f16 and bf16: `Copy` types without padding for
    // which every bit pattern is a valid value, so viewing initialized bytes as `T` is sound.
    // `align_to` only puts correctly aligned, in-bounds elements in the middle slice; we accept
    // the result only when nothing is left over on either side, so no byte is dropped.
    let (head, body, tail) = unsafe { bytes.align_to::<T>() };
    if head.is_empty() && tail.is_empty() {
        Some(body)
    } else {
        None
    }
}

/// The bytes of a typed slice (little-endian host), for writing.
pub fn as_bytes<T: Element>(values: &[T]) -> &[u8] {
    // SAFETY: `T: Element` has no padding and no invalid bit patterns (see above), `u8` has
    // alignment 1, and the byte length `size_of_val(values)` covers exactly the same allocation
    // for the same lifetime.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_round_trip_and_misalignment() {
        let values = [1.0f32, -2.5, 3.25];
        let bytes = as_bytes(&values);
        assert_eq!(bytes.len(), 12);
        assert_eq!(cast_slice::<f32>(bytes).unwrap(), &values);
        // Length not a multiple of 4.
        assert!(cast_slice::<f32>(&bytes[..11]).is_none());
        // Misaligned start.
        assert!(cast_slice::<f32>(&bytes[1..9]).is_none());
        assert_eq!(cast_slice::<u8>(&bytes[1..9]).unwrap().len(), 8);
    }
}
