//! Activation quantization for the integer dot products: each row of `x` is cut into blocks of
//! 32 and stored as int8 values, an f32 scale and the block's integer sum ([`MatmulScratch`]).
//!
//! This follows ggml's `quantize_row_q8_0` (AVX2 branch, `ggml-cpu/arch/x86/quants.c`) and
//! `quantize_row_q8_1` (the per-block sum, used for Q4_1's min and our Q4_0 offset):
//!
//! ```text
//! amax = max |x_i|;   d = amax / 127;   id = amax != 0 ? 127 / amax : 0
//! q_i  = round_half_to_even(x_i · id)    (|q_i| ≤ 127, never −128)
//! sum  = Σ q_i
//! ```
//!
//! Unlike ggml, `d` stays f32 (ggml rounds it to f16): a little more accurate, and the scale
//! costs nothing extra here. The AVX2 and scalar versions perform the same f32 operations and
//! give identical bytes for finite inputs (NaN/inf inputs give unspecified values, no panic).
//!
//! On AVX2 (`n ≥` [`INTERLEAVE_MIN_ROWS`], so every call) the values are also written
//! *interleaved* ([`interleave_rows`]): per row and group of 8 blocks, 8 chunks of 32 bytes in
//! which the 4-byte lane `l` of chunk `c` holds elements `4c..4c + 4` of block `l`. The batched
//! kernel transposes each weight group into the same layout once and then sums all 8 blocks of
//! a row with plain vector adds (`matmul_quant`'s module docs); the integers are the same.
//!
//! When a row ends in a partial group of 1 to 4 blocks, its last group is also written
//! *compact* ([`compact_tail_rows`], [`QActs::tail`]): `T` ([`tail_width`]: 1, 2 or 4) chunks
//! of 32 bytes in which lane `k` of chunk `v` holds word `v · 8/T + k / T` (elements `4m..4m +
//! 4` of word `m`) of block `k % T` of the group. A product then takes `T` `vpdpbusd` per row
//! and two or three shuffles to add up each block's lanes, where the padded group took 8.

use crate::quant::QK;
use crate::{Error, Result};

use super::Isa;
use crate::ops::Activations;

/// Caller-owned scratch for quantized activations, so that [`crate::ops::matmul_into`]
/// allocates nothing: create it once per session with the largest `n · k` it will see. It
/// also says how activations meet quantized weights in the products that use it
/// ([`MatmulScratch::set_activations`]; int8 by default).
#[derive(Clone, Debug, Default)]
pub struct MatmulScratch {
    activations: Activations,
    qs: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
    /// `−2^bias · sum`, for the VNNI kernels ([`QActs::bsum`]).
    bsum: Vec<i32>,
    /// The interleaved copy of `qs` for batched calls: rows of whole groups of 8 blocks.
    il: Vec<i8>,
    /// The compact copy of each row's partial last group ([`QActs::tail`]).
    tail: Vec<i8>,
    /// The scales and sums of each row's partial last group, lanes past the row zero
    /// ([`QActs::tail_lanes`]).
    tail_lanes: Vec<TailLanes>,
}

/// The scale, the integer sum and the biased sum (`−2^bias · Σ q` for the call's tail bias:
/// the VNNI kernels' bias, or Q4_0's offset of 8 for the AVX2 kernel; else 0) of the blocks of
/// a row's partial last group, lane `l` for block `8 · (nb / 8) + l`, and 0 in the lanes past
/// the row: what the kernels' masked last group computes with, masked once per call instead of
/// once per weight row. The tail kernels start their integer sums at `bsum` (its zero lanes
/// add nothing when the compact tail's lanes are folded together) and scale with `d` and `sum`
/// as loaded.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct TailLanes {
    pub d: [f32; 8],
    pub sum: [i32; 8],
    pub bsum: [i32; 8],
}

/// Fewest activation rows for which the AVX2 kernels use the interleaved layout: every call,
/// single-sequence decode included. One row used to keep the per-row reduction tree, on the
/// reading that it is bound by memory either way (Zen 3: from 2 rows on the shared transpose
/// won, 2 rows of hot 4096-wide Q4_0 0.63–0.81 ns per block and row against 1.19–1.21 with the
/// tree). It is not: the tree kernel has no `vpdpbusd` and reduces every group of every row
/// with shuffles, and ran at ~24 GMAC/s on a Sapphire Rapids core whatever the ISA, about one
/// core's DRAM bandwidth for 4-bit weights, so a decode fed partly from the L3 was bound by
/// it. The interleaved kernels with one row (hot, one core, the same bits): 1536 × 576 Q4_0
/// 24.1 → 51.2 GMAC/s with AVX512-VNNI (51.1 AVX-VNNI, 32.3 AVX2), 4096 × 576 Q8_0 22.9 → 35.3
/// (33.7, 24.1), 577 × 1536 Q4_1 31.1 → 52.4 (52.4, 37.6); single-sequence decode (`bench
/// llm`, AVX512-VNNI, two runs each) SmolLM2 Q4_0 +47–66 %, Q8_0 +18–34 %, the 1B shape +4–13 %
/// (Q4_0 from 76–77 to 88–100 % of the read bandwidth).
pub(crate) const INTERLEAVE_MIN_ROWS: usize = 1;

/// A block's biased sum `−2^bias · Σ q` ([`QActs::bsum`], [`TailLanes::bsum`]). |Σ q| ≤ 32 ·
/// 127, so it fits i32 for any bias the formats use (≤ 7); wrapping keeps the slack's
/// unspecified values from panicking.
fn biased_sum(sum: i32, bias: u32) -> i32 {
    sum.wrapping_shl(bias).wrapping_neg()
}

/// Blocks per interleaved row: `nb` rounded up to whole groups of 8, the padding zero.
pub(crate) fn interleaved_blocks(nb: usize) -> usize {
    nb.next_multiple_of(8)
}

/// The width `T` of the compact copy of a row's last group ([`compact_tail_rows`]) for rows of
/// `nb` blocks: 1, 2 or 4 blocks when the row ends in a partial group of that many (3: 4,
/// the last one zero); `None` when it ends in a whole group or one of 5 to 7 blocks (the
/// padded group costs about as much).
pub(crate) fn tail_width(nb: usize) -> Option<usize> {
    match nb % 8 {
        1 => Some(1),
        2 => Some(2),
        3 | 4 => Some(4),
        _ => None,
    }
}

/// Most bytes per row of the compact tail: 4 blocks.
const TAIL_MAX_BYTES: usize = 4 * QK;

/// Blocks of slack after the last activation block: the AVX2 kernel reads whole groups of 8
/// blocks (and masks what lies past a row), so its last group may run up to 7 blocks past the
/// end of the last row. Never part of any result.
pub(crate) const SLACK_BLOCKS: usize = 8;

/// Quantized activations: `n` rows of `nb` blocks, followed by [`SLACK_BLOCKS`] readable
/// blocks of unspecified content.
#[derive(Clone, Copy)]
pub(crate) struct QActs<'a> {
    /// int8 values, row-major `[n, nb · 32]`.
    pub qs: &'a [i8],
    /// The same values interleaved (`[n, interleaved_blocks(nb) · 32]`, see the module docs),
    /// when the call asked for them and the scratch had room.
    pub il: Option<&'a [i8]>,
    /// One scale per block, `[n, nb]`.
    pub d: &'a [f32],
    /// Σ q per block, `[n, nb]`.
    pub sum: &'a [i32],
    /// `−2^bias · Σ q` per block (`[n, nb]` plus the slack), when [`MatmulScratch::quantize`]
    /// was given a VNNI bias: the starting value of the VNNI kernels' integer sums, which makes
    /// them the exact `S_b` without a shift and a subtraction per group and row.
    pub bsum: Option<&'a [i32]>,
    /// Each row's partial last group in the compact layout (`[n, T · 32]`, `T =`
    /// [`tail_width`]`(nb)`, see the module docs), with [`QActs::il`] when `T` is `Some`.
    pub tail: Option<&'a [i8]>,
    /// Each row's [`TailLanes`] (`[n]`), exactly when [`QActs::tail`] is there.
    pub tail_lanes: Option<&'a [TailLanes]>,
}

impl MatmulScratch {
    /// Empty scratch: enough for float weights only (they need none).
    pub const fn new() -> MatmulScratch {
        MatmulScratch {
            activations: Activations::Int8,
            qs: Vec::new(),
            d: Vec::new(),
            sum: Vec::new(),
            bsum: Vec::new(),
            il: Vec::new(),
            tail: Vec::new(),
            tail_lanes: Vec::new(),
        }
    }

    /// How the products that use this scratch treat activations against quantized weights.
    pub fn activations(&self) -> Activations {
        self.activations
    }

    /// Sets how the products that use this scratch treat activations against quantized
    /// weights: [`Activations::Int8`] (the default, llama.cpp's scheme) or
    /// [`Activations::F32`] (the dequantized model's arithmetic; needs no capacity).
    pub fn set_activations(&mut self, activations: Activations) {
        self.activations = activations;
    }

    /// Scratch for quantized weights with up to `n` rows of `k` activations (`k` a multiple of
    /// 32; any `n · k` up to the same total works).
    pub fn with_capacity(n: usize, k: usize) -> Result<MatmulScratch> {
        let mut s = MatmulScratch::new();
        s.reserve(n, k)?;
        Ok(s)
    }

    /// Grows the scratch to hold `n` rows of `k` activations (allocates when it grows).
    pub fn reserve(&mut self, n: usize, k: usize) -> Result<()> {
        let elements = n
            .checked_mul(k)
            .ok_or_else(|| Error::invalid("n", format!("{n} rows of {k} activations overflow usize")))?;
        let blocks = elements.div_ceil(QK) + SLACK_BLOCKS;
        if self.qs.len() < blocks * QK {
            self.qs.resize(blocks * QK, 0);
            self.d.resize(blocks, 0.0);
            self.sum.resize(blocks, 0);
            self.bsum.resize(blocks, 0);
        }
        // Room for the interleaved copy of this exact shape (other shapes of the same total
        // may not fit; they then take the row-by-row path, with the same results).
        let il = n.saturating_mul(interleaved_blocks(k.div_ceil(QK))).saturating_mul(QK);
        if self.il.len() < il {
            self.il.resize(il, 0);
        }
        let tail = n.saturating_mul(TAIL_MAX_BYTES);
        if self.tail.len() < tail {
            self.tail.resize(tail, 0);
        }
        if self.tail_lanes.len() < n {
            self.tail_lanes.resize(n, TailLanes::default());
        }
        Ok(())
    }

    /// How many activation values fit.
    pub fn capacity(&self) -> usize {
        self.qs.len().saturating_sub(SLACK_BLOCKS * QK)
    }

    /// Quantizes `n` rows of `k` values (`k % 32 == 0`) into this scratch; with `interleave`,
    /// also writes the interleaved copy when it fits (else [`QActs::il`] is `None`) and the
    /// compact tail when the rows have one ([`QActs::tail`]) with its lanes, whose biased sums
    /// are `−2^tail_bias · Σ q` (0 without a `tail_bias`); with a `vnni_bias`, also
    /// [`QActs::bsum`] for it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn quantize(
        &mut self,
        x: &[f32],
        n: usize,
        k: usize,
        isa: Isa,
        interleave: bool,
        vnni_bias: Option<u32>,
        tail_bias: Option<u32>,
    ) -> Result<QActs<'_>> {
        let elements =
            n.checked_mul(k).filter(|&e| e == x.len() && k.is_multiple_of(QK)).ok_or_else(|| {
                Error::Shape {
                    what: "activations to quantize".into(),
                    expected: format!("{n} rows of {k} values, k a multiple of {QK}"),
                    found: format!("{} values", x.len()),
                }
            })?;
        if self.capacity() < elements {
            return Err(Error::BufferTooSmall {
                what: "matmul activation scratch".into(),
                needed: elements,
                given: self.capacity(),
            });
        }
        let blocks = elements / QK;
        let (qs, d, sum) = (&mut self.qs[..elements], &mut self.d[..blocks], &mut self.sum[..blocks]);
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` is only ever selected when the CPU has AVX2, FMA and F16C
            // (see `Isa::available`), the precondition of the `target_feature` function.
            Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe { avx2::quantize_blocks(x, qs, d, sum) },
            _ => quantize_blocks_scalar(x, qs, d, sum),
        }
        let (end, bend) = (elements + SLACK_BLOCKS * QK, blocks + SLACK_BLOCKS);
        let nb = k / QK;
        let il_len = n * interleaved_blocks(nb) * QK;
        let with_il = interleave && n > 0 && il_len <= self.il.len();
        let with_tail = with_il && tail_width(nb).is_some_and(|t| n * t * QK <= self.tail.len());
        let il = if with_il {
            // With a compact tail the kernels never read the padded last group (they take the
            // tail wherever they take the interleaved rows), so it is not written.
            let (qs, il) = (&self.qs[..elements], &mut self.il[..il_len]);
            let groups = if with_tail { nb / 8 } else { nb.div_ceil(8) };
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for `quantize_blocks` above.
                Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe {
                    avx2::interleave_rows(qs, n, nb, il, groups)
                },
                _ => interleave_groups(qs, n, nb, il, 0, groups),
            }
            Some(&self.il[..il_len])
        } else {
            None
        };
        let tail = match tail_width(nb) {
            Some(t) if with_tail => {
                let dst = &mut self.tail[..n * t * QK];
                compact_tail_rows(&self.qs[..elements], n, nb, dst);
                Some(&self.tail[..n * t * QK])
            }
            _ => None,
        };
        let bsum = match vnni_bias {
            Some(bias) => {
                for (b, &s) in self.bsum[..bend].iter_mut().zip(&self.sum[..bend]) {
                    *b = biased_sum(s, bias);
                }
                Some(&self.bsum[..bend])
            }
            None => None,
        };
        let tail_lanes = match tail {
            Some(_) if self.tail_lanes.len() >= n => {
                let (first, rem) = (nb / 8 * 8, nb % 8);
                for (i, t) in self.tail_lanes[..n].iter_mut().enumerate() {
                    *t = TailLanes::default();
                    let at = i * nb + first;
                    t.d[..rem].copy_from_slice(&self.d[at..at + rem]);
                    t.sum[..rem].copy_from_slice(&self.sum[at..at + rem]);
                    if let Some(bias) = tail_bias {
                        for (b, &s) in t.bsum[..rem].iter_mut().zip(&t.sum[..rem]) {
                            *b = biased_sum(s, bias);
                        }
                    }
                }
                Some(&self.tail_lanes[..n])
            }
            _ => None,
        };
        // The compact tail goes with its lanes (the kernels take both or neither).
        let tail = tail.filter(|_| tail_lanes.is_some());
        Ok(QActs {
            qs: &self.qs[..end],
            il,
            d: &self.d[..bend],
            sum: &self.sum[..bend],
            bsum,
            tail,
            tail_lanes,
        })
    }
}

/// Writes `n` rows of `nb` blocks of `qs` interleaved into `il` (`[n, interleaved_blocks(nb) ·
/// 32]`): in row `i`, group `g`, chunk `c`, lane `l` hold `qs[i][(8g + l) · 32 + 4c .. + 4]`,
/// zero where block `8g + l` is past the row. The layout's definition: `quantize` writes it
/// through [`interleave_groups`] (without the padded last group when a compact tail is
/// written); the kernels' tests build their inputs with this.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn interleave_rows(qs: &[i8], n: usize, nb: usize, il: &mut [i8]) {
    interleave_groups(qs, n, nb, il, 0, nb.div_ceil(8));
}

/// [`interleave_rows`] for the groups `first ≤ g < end` of every row.
fn interleave_groups(qs: &[i8], n: usize, nb: usize, il: &mut [i8], first: usize, end: usize) {
    let nbp = interleaved_blocks(nb);
    for i in 0..n {
        let src = &qs[i * nb * QK..(i + 1) * nb * QK];
        let dst = &mut il[i * nbp * QK..(i + 1) * nbp * QK];
        for (g, dst) in dst.chunks_exact_mut(8 * QK).enumerate().take(end).skip(first) {
            for (c, chunk) in dst.chunks_exact_mut(QK).enumerate() {
                for (l, lane) in chunk.chunks_exact_mut(4).enumerate() {
                    let b = 8 * g + l;
                    if b < nb {
                        lane.copy_from_slice(&src[b * QK + 4 * c..b * QK + 4 * c + 4]);
                    } else {
                        lane.fill(0);
                    }
                }
            }
        }
    }
}

/// Writes the compact copy of the last group of each of `n` rows of `nb` blocks of `qs` into
/// `dst` (`[n, T · 32]`, `T =` [`tail_width`]`(nb)`, which is `Some`): in row `i`, chunk `v`,
/// lane `k` holds word `m = v · 8/T + k / T` (`qs[i][b · 32 + 4m .. + 4]`) of block `b = 8 ·
/// (nb / 8) + k % T`, zero where `b` is past the row.
pub(crate) fn compact_tail_rows(qs: &[i8], n: usize, nb: usize, dst: &mut [i8]) {
    let Some(t) = tail_width(nb) else { return };
    let first = nb / 8 * 8;
    for (i, row) in dst.chunks_exact_mut(t * QK).take(n).enumerate() {
        let src = &qs[i * nb * QK..(i + 1) * nb * QK];
        for (v, chunk) in row.chunks_exact_mut(QK).enumerate() {
            for (k, lane) in chunk.chunks_exact_mut(4).enumerate() {
                let (b, m) = (first + k % t, v * 8 / t + k / t);
                if b < nb {
                    lane.copy_from_slice(&src[b * QK + 4 * m..b * QK + 4 * m + 4]);
                } else {
                    lane.fill(0);
                }
            }
        }
    }
}

/// The scale and the reciprocal used to quantize a block with largest magnitude `amax`.
#[inline(always)]
fn scale_of(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// Quantizes whole blocks: `x` and `qs` hold `d.len() == sum.len()` blocks of 32.
fn quantize_blocks_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
    let blocks = x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).zip(d.iter_mut().zip(sum.iter_mut()));
    for ((xb, qb), (db, sb)) in blocks {
        if let (Ok(xb), Ok(qb)) = (xb.try_into(), qb.try_into()) {
            (*db, *sb) = quantize_block_scalar(xb, qb);
        }
    }
}

/// Scalar twin of [`avx2::quantize_block`]: returns `(d, Σq)`.
pub(crate) fn quantize_block_scalar(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let (d, id) = scale_of(amax);
    let mut sum = 0i32;
    for (qi, &xi) in q.iter_mut().zip(x) {
        // Saturating cast; finite inputs give |v| ≤ 127.
        let v = (xi * id).round_ties_even() as i32;
        *qi = v.clamp(-128, 127) as i8;
        sum += *qi as i32;
    }
    (d, sum)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{interleave_groups, interleaved_blocks, scale_of, QK};
    use crate::ops::cpu::simd::avx2::{hmax8, hsum8_i32, reduce8_i32, reduce8_max, transpose8x32};

    /// [`super::interleave_rows`] for the first `groups` groups of each row: each whole group
    /// of 8 blocks is one 8 × 8 transpose of 32-bit words; the last, partial group of a row (if
    /// `groups` includes it) goes through the scalar code.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn interleave_rows(qs: &[i8], n: usize, nb: usize, il: &mut [i8], groups: usize) {
        let (nbp, full) = (interleaved_blocks(nb), nb / 8);
        for i in 0..n {
            let src = &qs[i * nb * QK..(i + 1) * nb * QK];
            let dst = &mut il[i * nbp * QK..(i + 1) * nbp * QK];
            for (s, d) in src.chunks_exact(8 * QK).zip(dst.chunks_exact_mut(8 * QK)).take(full) {
                // SAFETY: `s` and `d` are 256 bytes each: 8 unaligned 32-byte loads and stores.
                unsafe {
                    let v: [__m256i; 8] =
                        std::array::from_fn(|b| _mm256_loadu_si256(s.as_ptr().add(32 * b).cast()));
                    for (c, t) in transpose8x32(&v).iter().enumerate() {
                        _mm256_storeu_si256(d.as_mut_ptr().add(32 * c).cast(), *t);
                    }
                }
            }
        }
        if full < groups.min(nbp / 8) {
            interleave_groups(qs, n, nb, il, full, groups);
        }
    }

    /// Quantizes whole blocks (lengths as in `quantize_blocks_scalar`), 8 at a time: the 8
    /// largest magnitudes in one vector ([`reduce8_max`]), both divisions of `scale_of` for all
    /// 8 at once, the 8 sums in one [`reduce8_i32`]. Each block's quantization alone is a chain
    /// of dependent steps (a horizontal max, two divisions, a horizontal sum) that the core
    /// could not overlap enough across blocks; the values and their order are those of
    /// [`quantize_block`] (correctly rounded divisions, exact max and integer sums), so the
    /// bytes are the same. The last `nb % 8` blocks go through [`quantize_block`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn quantize_blocks(x: &[f32], qs: &mut [i8], d: &mut [f32], sum: &mut [i32]) {
        let nb = d.len().min(sum.len()).min(x.len() / QK).min(qs.len() / QK);
        let whole = nb / 8 * 8;
        let (xg, qg) = (x[..whole * QK].chunks_exact(8 * QK), qs[..whole * QK].chunks_exact_mut(8 * QK));
        for (g, (xg, qg)) in xg.zip(qg).enumerate() {
            let block = |j: usize| -> &[f32; QK] { xg[j * QK..(j + 1) * QK].try_into().expect("32 values") };
            let amax = reduce8_max(&std::array::from_fn(|j| abs_max(&load_block(block(j)))));
            let c127 = _mm256_set1_ps(127.0);
            // scale_of: d = amax / 127, id = 127 / amax (0 where amax is 0).
            let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(amax, _mm256_setzero_ps());
            let (mut dv, mut id) = ([0f32; 8], [0f32; 8]);
            // SAFETY (both stores): 8 f32 into 8-element arrays.
            unsafe {
                _mm256_storeu_ps(dv.as_mut_ptr(), _mm256_div_ps(amax, c127));
                _mm256_storeu_ps(id.as_mut_ptr(), _mm256_andnot_ps(zero, _mm256_div_ps(c127, amax)));
            }
            let mut qb = qg.chunks_exact_mut(QK);
            let sums: [__m256i; 8] = std::array::from_fn(|j| {
                let q = qb.next().and_then(|q| q.try_into().ok()).expect("32 bytes");
                quantize_values(&load_block(block(j)), _mm256_set1_ps(id[j]), q)
            });
            d[8 * g..8 * g + 8].copy_from_slice(&dv);
            let mut s = [0i32; 8];
            // SAFETY: 8 i32 into an 8-element array.
            unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), reduce8_i32(&sums)) };
            sum[8 * g..8 * g + 8].copy_from_slice(&s);
        }
        let blocks = x[whole * QK..].chunks_exact(QK).zip(qs[whole * QK..].chunks_exact_mut(QK));
        for ((xb, qb), (db, sb)) in blocks.zip(d[whole..nb].iter_mut().zip(sum[whole..nb].iter_mut())) {
            if let (Ok(xb), Ok(qb)) = (xb.try_into(), qb.try_into()) {
                (*db, *sb) = quantize_block(xb, qb);
            }
        }
    }

    /// Quantizes one block of 32 (ggml's `quantize_row_q8_0` AVX2 branch); returns `(d, Σq)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32) {
        let v = load_block(x);
        let (d, id) = scale_of(hmax8(abs_max(&v)));
        (d, hsum8_i32(quantize_values(&v, _mm256_set1_ps(id), q)))
    }

    /// A block's 32 values as four vectors.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn load_block(x: &[f32; QK]) -> [__m256; 4] {
        // SAFETY: the four unaligned loads read x[0..8], x[8..16], x[16..24] and x[24..32].
        std::array::from_fn(|c| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * c)) })
    }

    /// Lane by lane, the largest magnitude of a block's four vectors (`hmax8` of it is the
    /// block's largest).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn abs_max(v: &[__m256; 4]) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let m01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        let m23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
        _mm256_max_ps(m01, m23)
    }

    /// Writes `round_half_even(v · id)` of a block into `q` and returns the 8 lane sums of
    /// those integers (`hsum8_i32` of it is the block's `Σ q`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn quantize_values(v: &[__m256; 4], id: __m256, q: &mut [i8; QK]) -> __m256i {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let r = |c: usize| _mm256_cvtps_epi32(_mm256_round_ps::<NEAREST>(_mm256_mul_ps(v[c], id)));
        let (q0, q1, q2, q3) = (r(0), r(1), r(2), r(3));
        // packs interleave the 128-bit halves; the permutation puts the 32 bytes back in order.
        let p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: one 32-byte unaligned store into a 32-byte array.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), p) };
        _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> [f32; QK] {
        std::array::from_fn(|i| {
            let h = (i as u32 + 1).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503));
            ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * (1.0 + seed as f32)
        })
    }

    #[test]
    fn scalar_block_is_within_half_a_step() {
        for seed in 0..50 {
            let x = block(seed);
            let mut q = [0i8; QK];
            let (d, sum) = quantize_block_scalar(&x, &mut q);
            assert_eq!(sum, q.iter().map(|&v| v as i32).sum::<i32>());
            for (&xi, &qi) in x.iter().zip(&q) {
                assert!((xi - qi as f32 * d).abs() <= 0.5 * d * 1.0001, "{xi} vs {qi}·{d}");
                assert!(qi != -128);
            }
        }
        let mut q = [1i8; QK];
        assert_eq!(quantize_block_scalar(&[0.0; QK], &mut q), (0.0, 0));
        assert_eq!(q, [0; QK]);
    }

    #[test]
    fn avx2_block_matches_scalar() {
        if !Isa::Avx2.available() {
            return;
        }
        for seed in 0..200 {
            let mut x = block(seed);
            if seed % 7 == 0 {
                x[3] = 127.0 * 0.5 / 127.0 * x[0].abs().max(1e-3); // a tie-ish value
            }
            let (mut qa, mut qs) = ([0i8; QK], [0i8; QK]);
            // SAFETY: AVX2/FMA/F16C are available (checked above).
            let a = unsafe { avx2::quantize_block(&x, &mut qa) };
            let s = quantize_block_scalar(&x, &mut qs);
            assert_eq!((a.0.to_bits(), a.1, qa), (s.0.to_bits(), s.1, qs), "seed {seed}");
        }
    }

    /// The 8-blocks-at-a-time AVX2 quantizer gives the scalar bytes, scales and sums for every
    /// block count around the groups of 8, with all-zero blocks, ties and mixed magnitudes.
    #[test]
    fn avx2_blocks_match_scalar() {
        if !Isa::Avx2.available() {
            return;
        }
        for nb in [1, 7, 8, 9, 15, 16, 17, 18, 48, 49] {
            let mut x: Vec<f32> = (0..nb as u32).flat_map(|b| block(b * 31 + nb as u32)).collect();
            for (i, v) in x.iter_mut().enumerate().step_by(13) {
                *v = (i % 5) as f32 * 0.5 - 1.0; // exact halves: ties after scaling
            }
            if nb > 1 {
                x[QK..2 * QK].fill(0.0); // an all-zero block: d = 0, id = 0
            }
            let (mut qa, mut da, mut sa) = (vec![0i8; nb * QK], vec![0f32; nb], vec![0i32; nb]);
            let (mut qb, mut db, mut sb) = (vec![1i8; nb * QK], vec![1f32; nb], vec![1i32; nb]);
            // SAFETY: AVX2/FMA/F16C are available (checked above).
            unsafe { avx2::quantize_blocks(&x, &mut qa, &mut da, &mut sa) };
            quantize_blocks_scalar(&x, &mut qb, &mut db, &mut sb);
            assert_eq!(qa, qb, "bytes, {nb} blocks");
            assert_eq!(sa, sb, "sums, {nb} blocks");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&da), bits(&db), "scales, {nb} blocks");
        }
    }

    #[test]
    fn too_small_scratch_is_an_error() {
        let mut s = MatmulScratch::with_capacity(1, 64).unwrap();
        assert_eq!(s.capacity(), 64);
        assert!(matches!(
            s.quantize(&[1.0; 96], 1, 96, Isa::Scalar, false, None, None),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(s.quantize(&[1.0; 64], 2, 32, Isa::Scalar, false, None, None).is_ok());
        // The interleaved copy pads each row to 8 blocks: 2 rows of 1 block do not fit the
        // room reserved for 1 row of 2, so that call takes the row-by-row path.
        assert!(s.quantize(&[1.0; 64], 2, 32, Isa::Scalar, true, None, None).unwrap().il.is_none());
        assert!(s.quantize(&[1.0; 64], 1, 64, Isa::Scalar, true, None, None).unwrap().il.is_some());
    }

    #[test]
    fn compact_tail_layout() {
        // Rows ending in partial groups of 1 to 7 blocks: 1, 2 and 4 (for 3 and 4) blocks are
        // written compact, 5 to 7 not at all.
        for nb in [1, 2, 3, 4, 9, 10, 11, 12, 18, 5, 15] {
            let n = 3;
            let qs: Vec<i8> = (0..n * nb * QK).map(|i| (i % 241) as i8 - 120).collect();
            let mut s = MatmulScratch::with_capacity(n, nb * QK).unwrap();
            let x: Vec<f32> = qs.iter().map(|&q| q as f32).collect();
            let acts = s.quantize(&x, n, nb * QK, Isa::Scalar, true, None, None).unwrap();
            let Some(t) = tail_width(nb) else {
                assert!(acts.tail.is_none(), "nb {nb}");
                continue;
            };
            let tail = acts.tail.expect("a compact tail");
            assert_eq!(tail.len(), n * t * QK);
            let first = nb / 8 * 8;
            // Every element of the tail blocks appears once, at the documented place.
            for i in 0..n {
                for bl in 0..t {
                    for e in 0..QK {
                        let (m, j) = (e / 4, e % 4);
                        // Word m of block bl: chunk v = m / (8/T), lane k = (m % (8/T)) · T + bl.
                        let (v, k) = (m / (8 / t), (m % (8 / t)) * t + bl);
                        let at = i * t * QK + v * QK + 4 * k + j;
                        let b = first + bl;
                        let want = if b < nb { acts.qs[i * nb * QK + b * QK + e] } else { 0 };
                        assert_eq!(tail[at], want, "nb {nb} row {i} block {b} element {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn interleaved_layout() {
        // 2 rows of 9 blocks (a full group and a 1-block tail group), values = their index.
        let (n, nb) = (2, 9);
        let qs: Vec<i8> = (0..n * nb * QK).map(|i| (i % 251) as i8).collect();
        let nbp = interleaved_blocks(nb);
        assert_eq!(nbp, 16);
        let mut il = vec![-1i8; n * nbp * QK];
        interleave_rows(&qs, n, nb, &mut il);
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.available() {
            let mut il2 = vec![-1i8; n * nbp * QK];
            // SAFETY: AVX2/FMA/F16C are available (checked above).
            unsafe { avx2::interleave_rows(&qs, n, nb, &mut il2, nb.div_ceil(8)) };
            assert_eq!(il, il2);
        }
        for i in 0..n {
            for b in 0..nbp {
                for e in 0..QK {
                    let (g, l, c, j) = (b / 8, b % 8, e / 4, e % 4);
                    let at = i * nbp * QK + g * 8 * QK + c * QK + l * 4 + j;
                    let want = if b < nb { qs[i * nb * QK + b * QK + e] } else { 0 };
                    assert_eq!(il[at], want, "row {i} block {b} element {e}");
                }
            }
        }
    }
}
