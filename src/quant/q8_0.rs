//! Q8_0: 32 int8 values and one f16 scale per block; value = q · d.
//!
//! Mirrors `gguf.quants.Q8_0` (gguf-py) and `quantize_row_q8_0_ref` / `dequantize_row_q8_0`
//! (ggml-quants.c):
//!
//! ```text
//! d  = max|x| / 127                       (f32)
//! id = d == 0 ? 0 : 1 / d                 (f32)
//! q  = round_half_away_from_zero(x · id)  (int8; gguf-py's np_roundf == C roundf)
//! stored d = f16(d); dequantized value = f32(q) · f32(stored d)
//! ```

use half::f16;

use super::numpy_compat::{absmax, round_cast_low_byte};
use super::QK;

/// Bytes of values per block (one int8 per element).
pub const VALUE_BYTES: usize = QK;

/// Quantizes one block: writes the 32 int8 values (as bytes) and returns the f16 scale.
#[inline]
pub fn quantize_block(x: &[f32; QK], q: &mut [u8; VALUE_BYTES]) -> f16 {
    let d = absmax(x) / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (qi, &xi) in q.iter_mut().zip(x) {
        // inf/NaN (only when 1/d overflowed) cast to 0, as in numpy.
        *qi = round_cast_low_byte(xi * id);
    }
    f16::from_f32(d)
}

/// Dequantizes one block.
#[inline]
pub fn dequantize_block(q: &[u8; VALUE_BYTES], d: f16, out: &mut [f32; QK]) {
    let d = d.to_f32();
    for (o, &qi) in out.iter_mut().zip(q) {
        *o = (qi as i8) as f32 * d;
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
    fn rounds_half_away_from_zero() {
        // max|x| = 127 → d = 1, id = 1: ties round away from zero like C roundf.
        let mut x = [0.0f32; QK];
        x[..6].copy_from_slice(&[127.0, 2.5, -2.5, 0.5, -0.5, 126.5]);
        let mut q = [0u8; QK];
        let d = quantize_block(&x, &mut q);
        assert_eq!(d, f16::ONE);
        let got: Vec<i8> = q[..6].iter().map(|&b| b as i8).collect();
        assert_eq!(got, [127, 3, -3, 1, -1, 127]);
    }

    #[test]
    fn zero_block() {
        let x = [-0.0f32; QK];
        let mut q = [1u8; QK];
        assert_eq!(quantize_block(&x, &mut q).to_bits(), 0);
        assert_eq!(q, [0; QK]);
    }
}
