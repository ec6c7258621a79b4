//! Q4_1: 32 unsigned 4-bit values, an f16 scale and an f16 min per block; value = q · d + m.
//!
//! Mirrors `gguf.quants.Q4_1` (gguf-py) and `quantize_row_q4_1_ref` / `dequantize_row_q4_1`
//! (ggml-quants.c):
//!
//! ```text
//! d  = (max − min) / 15            (f32)
//! id = d == 0 ? 0 : 1 / d          (f32)
//! q  = min(15, trunc((x − min) · id + 0.5))
//! stored d = f16(d), m = f16(min); dequantized value = (f32(d) · f32(q)) + f32(m)
//! ```
//!
//! Same nibble layout as Q4_0. min and max are taken the way numpy reduces (see
//! `numpy_compat`), which decides which zero is stored when a block holds both `+0.0` and
//! `-0.0`.

use half::f16;

use super::numpy_compat::{block_max, block_min, cast_low_byte};
use super::QK;

/// Bytes of values per block (two 4-bit values per byte).
pub const VALUE_BYTES: usize = QK / 2;

/// Quantizes one block: writes the 16 packed bytes and returns `(scale, min)` as f16.
#[inline]
pub fn quantize_block(x: &[f32; QK], q: &mut [u8; VALUE_BYTES]) -> (f16, f16) {
    let max = block_max(x);
    let min = block_min(x);
    let d = (max - min) / 15.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let nibble = |v: f32| cast_low_byte((v - min) * id + 0.5).min(15);
    for (j, b) in q.iter_mut().enumerate() {
        *b = nibble(x[j]) | (nibble(x[j + VALUE_BYTES]) << 4);
    }
    (f16::from_f32(d), f16::from_f32(min))
}

/// Dequantizes one block.
#[inline]
pub fn dequantize_block(q: &[u8; VALUE_BYTES], d: f16, m: f16, out: &mut [f32; QK]) {
    let (d, m) = (d.to_f32(), m.to_f32());
    let (lo, hi) = out.split_at_mut(VALUE_BYTES);
    for ((&b, l), h) in q.iter().zip(lo).zip(hi) {
        *l = d * (b & 0x0F) as f32 + m;
        *h = d * (b >> 4) as f32 + m;
    }
}

/// Quantizes whole blocks. Lengths are checked by the caller (`quant::quantize`).
pub(crate) fn quantize_into(src: &[f32], values: &mut [u8], scales: &mut [f16], mins: &mut [f16]) {
    let blocks = src.chunks_exact(QK).zip(values.chunks_exact_mut(VALUE_BYTES));
    for (((x, q), d), m) in blocks.zip(scales.iter_mut()).zip(mins.iter_mut()) {
        if let (Ok(x), Ok(q)) = (x.try_into(), q.try_into()) {
            (*d, *m) = quantize_block(x, q);
        }
    }
}

/// Dequantizes whole blocks. Lengths are checked by the caller (`quant::dequantize`).
pub(crate) fn dequantize_into(values: &[u8], scales: &[f16], mins: &[f16], out: &mut [f32]) {
    let blocks = values.chunks_exact(VALUE_BYTES).zip(out.chunks_exact_mut(QK));
    for (((q, o), &d), &m) in blocks.zip(scales).zip(mins) {
        if let (Ok(q), Ok(o)) = (q.try_into(), o.try_into()) {
            dequantize_block(q, d, m, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_exact() {
        // min 0, max 15 → d = 1, m = 0: integers 0..=15 come back exactly.
        let x: [f32; QK] = std::array::from_fn(|i| (i % 16) as f32);
        let mut q = [0u8; VALUE_BYTES];
        let (d, m) = quantize_block(&x, &mut q);
        assert_eq!((d.to_f32(), m.to_f32()), (1.0, 0.0));
        let mut out = [0.0f32; QK];
        dequantize_block(&q, d, m, &mut out);
        assert_eq!(out, x);
    }

    #[test]
    fn constant_block() {
        let x = [2.5f32; QK];
        let mut q = [0xFFu8; VALUE_BYTES];
        let (d, m) = quantize_block(&x, &mut q);
        assert_eq!((d.to_f32(), m.to_f32()), (0.0, 2.5));
        assert_eq!(q, [0; VALUE_BYTES]);
    }
}
