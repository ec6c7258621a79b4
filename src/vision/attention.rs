//! Multi-head self-attention without the score matrix (flash-attention style, CPU):
//!
//! ```text
//! out[b, i, h] = Σ_j softmax_j(q[b,i,h] · k[b,j,h] / √hd) · v[b,j,h]
//! ```
//!
//! `q`, `k`, `v` and `out` are `[B·T, D]` row-major with head `h` in columns `h·hd..(h+1)·hd`
//! (the layout the q/k/v projections produce, no transposes). One task per (sequence, head):
//! it copies that head's keys transposed (`kᵀ` `[hd, T']`, `T'` = T rounded up to the key
//! tile, zero-padded) and its values (`[T', hd]`) into task-local buffers that stay in L2, then
//! walks query blocks of [`QUERY_BLOCK`] rows; for each key tile of [`KEY_BLOCK`] keys it forms
//! the `QUERY_BLOCK × KEY_BLOCK` score tile, and folds it into a running maximum `m`, running
//! denominator `l` and unnormalized output `o` (online softmax, Milakov & Gimelshein 2018;
//! Dao et al. 2022):
//!
//! ```text
//! m' = max(m, max_j s_j);  c = e^{m − m'};  p_j = e^{s_j − m'}
//! l  = c·l + Σ_j p_j;      o = c·o + Σ_j p_j · v_j;      finally out = o / l
//! ```
//!
//! At most one score tile (32 × 64 floats) exists at a time. Every output is computed by one
//! task in a fixed order, so results do not depend on the number of threads, and the AVX2 and
//! portable builds agree bit for bit (explicit `mul_add`, lane-wise partial sums).

use super::layer_norm::sum8;
use super::math::exp;
use super::SyncPtr;
use crate::ops::{Isa, ThreadPool};
use crate::{Error, Result};

/// Query rows per block (rows of the score tile).
pub const QUERY_BLOCK: usize = 32;
/// Keys per tile (columns of the score tile).
pub const KEY_BLOCK: usize = 64;

/// The shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Independent sequences (slices), `B`.
    pub n_seq: usize,
    /// Tokens per sequence, `T`.
    pub n_tokens: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width of one head, `hd`; `D = n_heads · hd`.
    pub head_dim: usize,
}

impl AttentionShape {
    /// `D = n_heads · head_dim`.
    pub fn width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    fn check(&self, q: &[f32], k: &[f32], v: &[f32], out: &[f32]) -> Result<usize> {
        let len = self
            .n_seq
            .checked_mul(self.n_tokens)
            .and_then(|n| n.checked_mul(self.width()))
            .ok_or_else(|| Error::invalid("attention shape", format!("{self:?} overflows")))?;
        if self.head_dim == 0 || self.n_heads == 0 {
            return Err(Error::invalid(
                "attention shape",
                format!("{self:?}: heads and head_dim must be positive"),
            ));
        }
        for (name, t) in [("q", q.len()), ("k", k.len()), ("v", v.len()), ("out", out.len())] {
            if t != len {
                return Err(Error::Shape {
                    what: format!("attention {name}"),
                    expected: format!(
                        "[{} · {}, {}] = {len} values",
                        self.n_seq,
                        self.n_tokens,
                        self.width()
                    ),
                    found: t.to_string(),
                });
            }
        }
        Ok(len)
    }
}

/// Self-attention of every (sequence, head), split over `pool` (see the module doc).
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    pool: &ThreadPool,
) -> Result<()> {
    attention_with_isa(q, k, v, out, shape, pool, Isa::detect())
}

/// [`attention`] on a chosen ISA (the tests compare AVX2 with the portable build).
pub fn attention_with_isa(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    shape.check(q, k, v, out)?;
    if !isa.available() {
        return Err(Error::Unsupported(format!("{} kernels on this CPU", isa.name())));
    }
    if shape.n_seq == 0 || shape.n_tokens == 0 {
        return Ok(());
    }
    let out = SyncPtr(out.as_mut_ptr());
    pool.run(shape.n_seq * shape.n_heads, &|task| {
        let (b, h) = (task / shape.n_heads, task % shape.n_heads);
        match isa {
            // SAFETY: AVX2 and FMA are present (checked above); the task writes only its own
            // (sequence, head) columns of `out` (disjoint from every other task's).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { head_avx2(q, k, v, out, shape, b, h) },
            // SAFETY: as above, minus the ISA.
            _ => unsafe { head_portable(q, k, v, out, shape, b, h) },
        }
    })
}

/// One (sequence `b`, head `h`).
///
/// # Safety
/// `out` points to `[B·T, D]` floats of which this call alone writes the columns of head `h`
/// in the rows of sequence `b`; the shapes were checked.
#[inline(always)]
unsafe fn head_body<T: Tile>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: SyncPtr,
    shape: AttentionShape,
    b: usize,
    h: usize,
) {
    let (t, hd, d) = (shape.n_tokens, shape.head_dim, shape.width());
    let t_pad = t.next_multiple_of(KEY_BLOCK);
    let row0 = b * t;
    let col0 = h * hd;
    // kᵀ [hd, t_pad] and v [t_pad, hd] of this head, zero-padded.
    let mut kt = vec![0.0f32; hd * t_pad];
    let mut vh = vec![0.0f32; t_pad * hd];
    for j in 0..t {
        let src = (row0 + j) * d + col0;
        for (c, &x) in k[src..src + hd].iter().enumerate() {
            kt[c * t_pad + j] = x;
        }
        vh[j * hd..(j + 1) * hd].copy_from_slice(&v[src..src + hd]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut qs = vec![0.0f32; QUERY_BLOCK * hd];
    let mut o = vec![0.0f32; QUERY_BLOCK * hd];
    let mut s = [0.0f32; KEY_BLOCK];
    let mut m = [f32::NEG_INFINITY; QUERY_BLOCK];
    let mut l = [0.0f32; QUERY_BLOCK];
    for i0 in (0..t).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(t - i0);
        for r in 0..rows {
            let src = (row0 + i0 + r) * d + col0;
            for (dst, &x) in qs[r * hd..(r + 1) * hd].iter_mut().zip(&q[src..src + hd]) {
                *dst = x * scale;
            }
        }
        o.fill(0.0);
        m.fill(f32::NEG_INFINITY);
        l.fill(0.0);
        for j0 in (0..t).step_by(KEY_BLOCK) {
            let cols = KEY_BLOCK.min(t - j0);
            for r in 0..rows {
                // s = q_r · kᵀ[:, j0..j0 + KEY_BLOCK]
                // SAFETY: the ISA of `T` is available (the dispatch in `attention_with_isa`).
                unsafe { T::scores(&qs[r * hd..(r + 1) * hd], &kt, t_pad, j0, &mut s) };
                let mut mx = [f32::NEG_INFINITY; 8];
                for (j, &sj) in s[..cols].iter().enumerate() {
                    mx[j % 8] = mx[j % 8].max(sj);
                }
                let tile_max =
                    ((mx[0].max(mx[4])).max(mx[2].max(mx[6]))).max((mx[1].max(mx[5])).max(mx[3].max(mx[7])));
                let m_new = m[r].max(tile_max);
                let corr = exp(m[r] - m_new);
                for (j, sj) in s.iter_mut().enumerate() {
                    *sj = if j < cols { exp(*sj - m_new) } else { 0.0 };
                }
                l[r] = l[r].mul_add(corr, sum8(&s));
                m[r] = m_new;
                // o_r = corr · o_r + Σ_j p_j · v_j
                // SAFETY: as above.
                unsafe { T::accumulate(&mut o[r * hd..(r + 1) * hd], corr, &s[..cols], &vh, j0) };
            }
        }
        for r in 0..rows {
            let inv = 1.0 / l[r];
            // SAFETY: row i0 + r of sequence b, columns of head h: owned by this task (the
            // function's contract).
            let dst = unsafe { out.slice((row0 + i0 + r) * d + col0, hd) };
            for (x, &y) in dst.iter_mut().zip(&o[r * hd..(r + 1) * hd]) {
                *x = y * inv;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// # Safety
/// The CPU has AVX2 and FMA; the contract of `head_body`.
unsafe fn head_avx2(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: SyncPtr,
    shape: AttentionShape,
    b: usize,
    h: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { head_body::<Avx2Tile>(q, k, v, out, shape, b, h) }
}

/// # Safety
/// The contract of `head_body`.
unsafe fn head_portable(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: SyncPtr,
    shape: AttentionShape,
    b: usize,
    h: usize,
) {
    // SAFETY: forwarded contract.
    unsafe { head_body::<PortableTile>(q, k, v, out, shape, b, h) }
}

/// The two inner products of a tile. Both implementations perform, per output lane, the same
/// fused multiply-adds in the same order, so they give identical bits.
trait Tile {
    /// `s[j] = Σ_c q[c] · kt[c·t_pad + j0 + j]` for `j < KEY_BLOCK`, summed in order of `c`.
    ///
    /// # Safety
    /// The implementation's ISA is available; `kt` holds `q.len()` rows of `t_pad ≥ j0 +
    /// KEY_BLOCK` values.
    unsafe fn scores(q: &[f32], kt: &[f32], t_pad: usize, j0: usize, s: &mut [f32; KEY_BLOCK]);

    /// `o = o · corr`, then `o[d] = fma(p[j], v[(j0 + j)·hd + d], o[d])` for `j` in order, with
    /// `hd = o.len()`.
    ///
    /// # Safety
    /// The implementation's ISA is available; `vh` holds rows `j0..j0 + p.len()` of `hd` values.
    unsafe fn accumulate(o: &mut [f32], corr: f32, p: &[f32], vh: &[f32], j0: usize);
}

struct PortableTile;

impl Tile for PortableTile {
    #[inline(always)]
    unsafe fn scores(q: &[f32], kt: &[f32], t_pad: usize, j0: usize, s: &mut [f32; KEY_BLOCK]) {
        s.fill(0.0);
        for (c, &qv) in q.iter().enumerate() {
            let krow = &kt[c * t_pad + j0..c * t_pad + j0 + KEY_BLOCK];
            for (sj, &kj) in s.iter_mut().zip(krow) {
                *sj = qv.mul_add(kj, *sj);
            }
        }
    }

    #[inline(always)]
    unsafe fn accumulate(o: &mut [f32], corr: f32, p: &[f32], vh: &[f32], j0: usize) {
        let hd = o.len();
        for x in o.iter_mut() {
            *x *= corr;
        }
        for (j, &pj) in p.iter().enumerate() {
            let vrow = &vh[(j0 + j) * hd..(j0 + j + 1) * hd];
            for (x, &vv) in o.iter_mut().zip(vrow) {
                *x = pj.mul_add(vv, *x);
            }
        }
    }
}

/// AVX2 register tiles: the 64 scores of a row stay in 8 registers over the whole `c` loop,
/// and an output row of `hd ≤ 64` (a multiple of 8) in `hd/8` registers over the whole key
/// tile; other head widths use the portable loops.
#[cfg(target_arch = "x86_64")]
struct Avx2Tile;

#[cfg(target_arch = "x86_64")]
impl Avx2Tile {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn accumulate_n<const NV: usize>(o: &mut [f32], corr: f32, p: &[f32], vh: &[f32], j0: usize) {
        use std::arch::x86_64::*;
        let hd = NV * 8;
        debug_assert_eq!(o.len(), hd);
        let c = _mm256_set1_ps(corr);
        let mut acc = [_mm256_setzero_ps(); NV];
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: o has hd = 8·NV values.
            *a = _mm256_mul_ps(unsafe { _mm256_loadu_ps(o.as_ptr().add(8 * i)) }, c);
        }
        for (j, &pj) in p.iter().enumerate() {
            let b = _mm256_set1_ps(pj);
            let row = &vh[(j0 + j) * hd..(j0 + j + 1) * hd];
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: row has hd = 8·NV values.
                *a = _mm256_fmadd_ps(b, unsafe { _mm256_loadu_ps(row.as_ptr().add(8 * i)) }, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: o has hd = 8·NV values.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * i), *a) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2Tile {
    #[inline(always)]
    unsafe fn scores(q: &[f32], kt: &[f32], t_pad: usize, j0: usize, s: &mut [f32; KEY_BLOCK]) {
        // SAFETY: the caller guarantees AVX2/FMA and the `kt` bounds (checked by the slice).
        unsafe { avx2_scores(q, kt, t_pad, j0, s) }
    }

    #[inline(always)]
    unsafe fn accumulate(o: &mut [f32], corr: f32, p: &[f32], vh: &[f32], j0: usize) {
        // SAFETY: the caller guarantees AVX2/FMA; the lengths are those `accumulate_n` needs.
        unsafe {
            match o.len() {
                64 => Avx2Tile::accumulate_n::<8>(o, corr, p, vh, j0),
                32 => Avx2Tile::accumulate_n::<4>(o, corr, p, vh, j0),
                16 => Avx2Tile::accumulate_n::<2>(o, corr, p, vh, j0),
                8 => Avx2Tile::accumulate_n::<1>(o, corr, p, vh, j0),
                _ => PortableTile::accumulate(o, corr, p, vh, j0),
            }
        }
    }
}

/// `s = q · kᵀ[:, j0..j0 + 64]` with the 64 sums in 8 registers.
///
/// # Safety
/// AVX2 and FMA are available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2_scores(q: &[f32], kt: &[f32], t_pad: usize, j0: usize, s: &mut [f32; KEY_BLOCK]) {
    use std::arch::x86_64::*;
    const NV: usize = KEY_BLOCK / 8;
    let mut acc = [_mm256_setzero_ps(); NV];
    for (c, &qv) in q.iter().enumerate() {
        let b = _mm256_set1_ps(qv);
        let row = &kt[c * t_pad + j0..c * t_pad + j0 + KEY_BLOCK];
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: row has KEY_BLOCK = 8·NV values.
            *a = _mm256_fmadd_ps(b, unsafe { _mm256_loadu_ps(row.as_ptr().add(8 * i)) }, *a);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        // SAFETY: s has KEY_BLOCK values.
        unsafe { _mm256_storeu_ps(s.as_mut_ptr().add(8 * i), *a) };
    }
}
