//! Dequantization of the ggml block types we only import (Q5_0, Q5_1 and the K-quants
//! Q2_K..Q6_K), from the array-of-structs bytes stored in GGUF.
//!
//! Each function mirrors the matching `dequantize_blocks` of gguf-py `quants.py` operation
//! for operation (products and differences in f32, in the same order, never fused), so the
//! results are bit-identical to `gguf.quants.dequantize`. Layout comments follow
//! `block_q*_K` in ggml-common.h. Callers pass exactly one block (`ty.type_size()` bytes) and
//! its output (`ty.block_size()` floats); `ggml::dequantize` guarantees that.

use half::f16;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q5_0 block: d: f16, qh: u32 (bit i = high bit of element i), qs: [u8; 16] (low nibbles,
/// element j and j + 16 in byte j). value = d · (q − 16).
pub fn dequantize_q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for (i, o) in out.iter_mut().enumerate().take(32) {
        let ql = (qs[i % 16] >> (4 * (i / 16))) & 0x0F;
        let q = (ql | ((((qh >> i) & 1) as u8) << 4)) as i32 - 16;
        *o = d * q as f32;
    }
}

/// Q5_1 block: d: f16, m: f16, qh: u32, qs: [u8; 16]. value = d · q + m.
pub fn dequantize_q5_1(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for (i, o) in out.iter_mut().enumerate().take(32) {
        let ql = (qs[i % 16] >> (4 * (i / 16))) & 0x0F;
        let q = ql | ((((qh >> i) & 1) as u8) << 4);
        *o = d * q as f32 + m;
    }
}

/// Q2_K block: scales: [u8; 16] (low nibble scale, high nibble min, per 16 elements),
/// qs: [u8; 64] (2-bit values), d: f16, dmin: f16.
/// value = (d · sc) · q − (dmin · m).
pub fn dequantize_q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for (idx, o) in out.iter_mut().enumerate().take(QK_K) {
        let (g, s, i) = (idx / 128, (idx / 32) % 4, idx % 32);
        let q = (qs[32 * g + i] >> (2 * s)) & 3;
        let sc = scales[idx / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

/// Q3_K block: hmask: [u8; 32] (high bit, inverted), qs: [u8; 64] (low 2 bits),
/// scales: [u8; 12] (16 packed 6-bit scales, offset 32), d: f16.
/// value = (d · (sc − 32)) · (q_low − 4·(1 − q_high)).
pub fn dequantize_q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let mut dl = [0.0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let lo = (scales[i % 8] >> (4 * (i / 8))) & 0x0F;
        let hi = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *dl = d * ((lo | (hi << 4)) as i8 - 32) as f32;
    }
    for (idx, o) in out.iter_mut().enumerate().take(QK_K) {
        let (g, s, i) = (idx / 128, (idx / 32) % 4, idx % 32);
        let ql = ((qs[32 * g + i] >> (2 * s)) & 3) as i8;
        let qh = ((hmask[i] >> (idx / 32)) & 1) ^ 1;
        *o = dl[idx / 16] * (ql - (qh << 2) as i8) as f32;
    }
}

/// The 8 6-bit scales and mins packed in 12 bytes (Q4_K, Q5_K); `get_scale_min` in gguf-py.
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[4 + j] & 0x3F;
        sc[4 + j] = (s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K block: d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] (sub-block 2g in the low
/// nibbles of bytes 32g..32g+32, sub-block 2g+1 in their high nibbles).
/// value = (d · sc) · q − (dmin · m).
pub fn dequantize_q4_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for (idx, o) in out.iter_mut().enumerate().take(QK_K) {
        let (j, i) = (idx / 32, idx % 32);
        let q = (qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F;
        let dl = d * sc[j] as f32;
        let ml = dmin * mn[j] as f32;
        *o = dl * q as f32 - ml;
    }
}

/// Q5_K block: d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32] (bit j of byte i = high bit
/// of element i of sub-block j), qs: [u8; 128] (as Q4_K).
/// value = (d · sc) · q − (dmin · m).
pub fn dequantize_q5_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for (idx, o) in out.iter_mut().enumerate().take(QK_K) {
        let (j, i) = (idx / 32, idx % 32);
        let ql = (qs[32 * (j / 2) + i] >> (4 * (j % 2))) & 0x0F;
        let q = ql | (((qh[i] >> j) & 1) << 4);
        let dl = d * sc[j] as f32;
        let ml = dmin * mn[j] as f32;
        *o = dl * q as f32 - ml;
    }
}

/// Q6_K block: ql: [u8; 128] (low 4 bits), qh: [u8; 64] (high 2 bits), scales: [i8; 16]
/// (per 16 elements), d: f16. value = (d · sc) · (q − 32).
pub fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (idx, o) in out.iter_mut().enumerate().take(QK_K) {
        let (g, t) = (idx / 128, idx % 128);
        let lo = (ql[64 * g + t % 64] >> (4 * (t / 64))) & 0x0F;
        let hi = (qh[32 * g + t % 32] >> (2 * (t / 32))) & 0x03;
        let q = (lo | (hi << 4)) as i8 - 32;
        let dl = d * (scales[idx / 16] as i8) as f32;
        *o = dl * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q6_K element order against ggml's `dequantize_row_q6_K` loop (l, l+32, l+64, l+96).
    #[test]
    fn q6_k_matches_ggml_loop() {
        let mut b = [0u8; 210];
        for (i, x) in b.iter_mut().enumerate() {
            *x = ((i as u32).wrapping_mul(2654435761) >> 13) as u8;
        }
        b[192..208].iter_mut().enumerate().for_each(|(i, s)| *s = (i as i8 - 7) as u8);
        b[208..210].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
        let mut ours = [0.0f32; QK_K];
        dequantize_q6_k(&b, &mut ours);
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = 0.25f32;
        let mut want = [0.0f32; QK_K];
        for n in 0..2 {
            let (ql, qh, sc, y) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..], &mut want[128 * n..]);
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
        assert_eq!(ours, want);
    }
}
