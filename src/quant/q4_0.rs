//! Q4_0: 32 unsigned 4-bit values and one f16 scale per block; value = (q − 8) · d.
//!
//! Mirrors `gguf.quants.Q4_0` (gguf-py) and `quantize_row_q4_0_ref` / `dequantize_row_q4_0`
//! (ggml-quants.c):
//!
//! ```text
//! max = x[argmax |x|]              (signed; the first one on a tie)
//! d   = max / -8                   (f32)
//! id  = d == 0 ? 0 : 1 / d         (f32)
//! q   = min(15, trunc(x · id + 8.5))
//! stored d = f16(d); dequantized value = f32(stored d) · f32(q − 8)
//! ```
//!
//! Nibble layout as in ggml: byte `j` (0..16) holds element `j` in its low nibble and element
//! `j + 16` in its high nibble, so GGUF blocks import as byte copies.

use half::f16;

use super::numpy_compat::{cast_low_byte, first_absmax};
use super::QK;

/// Bytes of values per block (two 4-bit values per byte).
pub const VALUE_BYTES: usize = QK / 2;

/// Quantizes one block: writes the 16 packed bytes and returns the f16 scale.
#[inline]
pub fn quantize_block(x: &[f32; QK], q: &mut [u8; VALUE_BYTES]) -> f16 {
    let d = first_absmax(x) / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let nibble = |v: f32| cast_low_byte(v * id + 8.5).min(15);
    for (j, b) in q.iter_mut().enumerate() {
        *b = nibble(x[j]) | (nibble(x[j + VALUE_BYTES]) << 4);
    }
    f16::from_f32(d)
}

/// Dequantizes one block.
#[inline]
pub fn dequantize_block(q: &[u8; VALUE_BYTES], d: f16, out: &mut [f32; QK]) {
    let d = d.to_f32();
    let (lo, hi) = out.split_at_mut(VALUE_BYTES);
    for ((&b, l), h) in q.iter().zip(lo).zip(hi) {
        *l = d * ((b & 0x0F) as i32 - 8) as f32;
        *h = d * ((b >> 4) as i32 - 8) as f32;
    }
}

/// Quantizes whole blocks. Lengths are checked by the caller (`quant::quantize`).
pub(crate) fn quantize_into(src: &[f32], values: &mut [u8], scales: &mut [f16]) {
    let blocks = src.chunks_exact(QK).zip(values.chunks_exact_mut(VALUE_BYTES));
    for ((x, q), d) in blocks.zip(scales.iter_mut()) {
        if let (Ok(x), Ok(q)) = (x.try_into(), q.try_into()) {
            *d = quantize_block(x, q);
        }
    }
}

/// Dequantizes whole blocks. Lengths are checked by the caller (`quant::dequantize`).
pub(crate) fn dequantize_into(values: &[u8], scales: &[f16], out: &mut [f32]) {
    let blocks = values.chunks_exact(VALUE_BYTES).zip(out.chunks_exact_mut(QK));
    for ((q, o), &d) in blocks.zip(scales) {
        if let (Ok(q), Ok(o)) = (q.try_into(), o.try_into()) {
            dequantize_block(q, d, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibble_layout_and_extremes() {
        // max = -8 → d = 1: x = -8 → q = 0, x = 7 → q = 15, x = 8 → clipped to 15.
        let mut x = [0.0f32; QK];
        x[0] = -8.0;
        x[16] = 7.0;
        x[1] = 8.0;
        x[17] = -1.0;
        let mut q = [0u8; VALUE_BYTES];
        let d = quantize_block(&x, &mut q);
        assert_eq!(d.to_f32(), 1.0);
        assert_eq!(q[0], 15 << 4); // low nibble 0 (x[0]), high nibble 15 (x[16])
        assert_eq!(q[1], 15 | (7 << 4));
        let mut out = [0.0f32; QK];
        dequantize_block(&q, d, &mut out);
        assert_eq!((out[0], out[16], out[1], out[17]), (-8.0, 7.0, 7.0, -1.0));
    }
}
