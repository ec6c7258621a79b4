//! Multi-head self-attention without the score matrix (flash-attention style, CPU):
//!
//! ```text
//! out[b, i, h] = Σ_j softmax_j(q[b,i,h] · k[b,j,h] / √hd) · v[b,j,h]
//! ```
//!
//! `q`, `k`, `v` and `out` are `[B·T, D]` row-major with head `h` in columns `h·hd..(h+1)·hd`
//! (the layout the q/k/v projections produce, no transposes). One task per (sequence, head):
//! it packs that head's keys once, transposed in panels of [`KEY_PANEL`] keys (`[T'/16][hd][16]`,
//! `T'` = T rounded up to 16, zero-padded), and copies its values (`[T, hd]`) into task-local
//! buffers, then walks query blocks of [`QUERY_BLOCK`] rows; for each key tile of [`KEY_BLOCK`]
//! keys (the last one cut to whole panels, so at most 15 padded keys per head) and each group
//! of [`GROUP`] query rows it forms the `GROUP × KEY_BLOCK` score tile in AVX2 registers
//! (`GROUP × 16` at a time, each loaded key vector serving 6 rows), and folds it into a
//! running maximum `m`, running denominator `l` and unnormalized output `o` (online softmax,
//! Milakov & Gimelshein 2018; Dao et al. 2022):
//!
//! ```text
//! m' = max(m, max_j s_j);  c = e^{m − m'};  p_j = e^{s_j − m'}
//! l  = c·l + Σ_j p_j;      o = c·o + Σ_j p_j · v_j;      finally out = o / l
//! ```
//!
//! At most one score tile (6 × 64 floats) exists at a time; the value update uses the same
//! 6-row register tiles. Every output is computed by one task in a fixed order, so results do
//! not depend on the number of threads, and the AVX2 and portable builds agree bit for bit
//! (explicit `mul_add`, lane-wise partial sums). Per output value the FMAs are the same, in the
//! same order, as in the earlier one-row kernel, so the outputs did not change either.

use super::layer_norm::sum8;
use super::math::exp;
use super::SyncPtr;
use crate::ops::{Isa, ThreadPool};
use crate::{Error, Result};

/// Query rows per block (their running max, sum and output stay in task-local buffers).
pub const QUERY_BLOCK: usize = 48;
/// Keys per tile (columns of the score tile; the online-softmax step).
pub const KEY_BLOCK: usize = 64;
/// Query rows per register tile (rows of the score tile).
pub const GROUP: usize = 6;
/// Keys per packed panel of `kᵀ` (the key tile is cut to whole panels, not to `KEY_BLOCK`).
pub const KEY_PANEL: usize = 16;

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
            Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe { head_avx2(q, k, v, out, shape, b, h) },
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
    let t_pad = t.next_multiple_of(KEY_PANEL);
    let row0 = b * t;
    let col0 = h * hd;
    // This head's keys packed in panels of KEY_PANEL keys (`kp[p][c][j]` = key `p·16 + j`,
    // channel `c`; zero-padded to t_pad keys) and its values `[T, hd]`, both built once.
    let mut kp = vec![0.0f32; hd * t_pad];
    let mut vh = vec![0.0f32; t * hd];
    for j in 0..t {
        let src = (row0 + j) * d + col0;
        let panel = &mut kp[(j / KEY_PANEL) * hd * KEY_PANEL..][..hd * KEY_PANEL];
        for (c, &x) in k[src..src + hd].iter().enumerate() {
            panel[c * KEY_PANEL + j % KEY_PANEL] = x;
        }
        vh[j * hd..(j + 1) * hd].copy_from_slice(&v[src..src + hd]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut qs = vec![0.0f32; QUERY_BLOCK * hd];
    let mut o = vec![0.0f32; QUERY_BLOCK * hd];
    let mut s: Scores = [[0.0f32; KEY_BLOCK]; GROUP];
    let mut m = [f32::NEG_INFINITY; QUERY_BLOCK];
    let mut l = [0.0f32; QUERY_BLOCK];
    let mut corr = [0.0f32; GROUP];
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
            let panels = cols.div_ceil(KEY_PANEL);
            let kt = &kp[j0 * hd..(j0 + panels * KEY_PANEL) * hd];
            let vt = &vh[j0 * hd..(j0 + cols) * hd];
            for g0 in (0..rows).step_by(GROUP) {
                let gr = GROUP.min(rows - g0);
                // s[r][j] = q_r · k_j for the group's rows and the tile's keys.
                // SAFETY: the ISA of `T` is available (the dispatch in `attention_with_isa`);
                // the lengths are those the trait documents.
                unsafe { T::scores(&qs[g0 * hd..(g0 + gr) * hd], gr, hd, kt, panels, &mut s) };
                // p = e^{s − m'} in place, with the running max, sum and correction.
                // SAFETY: as above.
                unsafe { T::softmax(&mut s, gr, cols, &mut m[g0..g0 + gr], &mut l[g0..g0 + gr], &mut corr) };
                // o_r = corr_r · o_r + Σ_j p_rj · v_j
                // SAFETY: as above.
                unsafe { T::accumulate(&mut o[g0 * hd..(g0 + gr) * hd], gr, hd, &corr, &s, cols, vt) };
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

/// The scores of one group of query rows against one key tile.
type Scores = [[f32; KEY_BLOCK]; GROUP];

/// The two inner products of a tile, for a group of `rows ≤ GROUP` query rows. Both
/// implementations perform, per output value, the same fused multiply-adds in the same order,
/// so they give identical bits.
trait Tile {
    /// `s[r][j] = Σ_c q[r·hd + c] · k_j[c]`, summed in order of `c` from 0, for `r < rows` and
    /// the `panels · KEY_PANEL` keys of `kp` (packed panels `[panels][hd][KEY_PANEL]`).
    ///
    /// # Safety
    /// The implementation's ISA is available; `q.len() == rows · hd`, `rows ≤ GROUP`,
    /// `kp.len() == panels · hd · KEY_PANEL`, `panels · KEY_PANEL ≤ KEY_BLOCK`.
    unsafe fn scores(q: &[f32], rows: usize, hd: usize, kp: &[f32], panels: usize, s: &mut Scores);

    /// The online-softmax step of a score tile, for `r < rows`: `m' = max(m[r], max_{j<cols}
    /// s[r][j])`, `corr[r] = e^{m[r] − m'}`, `s[r][j] = e^{s[r][j] − m'}` for `j < cols` and 0
    /// beyond, `l[r] = fma(l[r], corr[r], sum8(s[r]))`, `m[r] = m'` (with `exp` and `sum8`
    /// exactly as in `vision::math` and `layer_norm::sum8`).
    ///
    /// # Safety
    /// The implementation's ISA is available; `rows ≤ GROUP`, `cols ≤ KEY_BLOCK`, `m` and `l`
    /// hold `rows` values.
    unsafe fn softmax(
        s: &mut Scores,
        rows: usize,
        cols: usize,
        m: &mut [f32],
        l: &mut [f32],
        corr: &mut [f32; GROUP],
    );

    /// For `r < rows`: `o_r = o_r · corr[r]`, then `o_r[x] = fma(s[r][j], v[j·hd + x], o_r[x])`
    /// for `j < cols` in order.
    ///
    /// # Safety
    /// The implementation's ISA is available; `o.len() == rows · hd`, `rows ≤ GROUP`,
    /// `v.len() == cols · hd`, `cols ≤ KEY_BLOCK`.
    unsafe fn accumulate(
        o: &mut [f32],
        rows: usize,
        hd: usize,
        corr: &[f32; GROUP],
        s: &Scores,
        cols: usize,
        v: &[f32],
    );
}

struct PortableTile;

impl Tile for PortableTile {
    #[inline(always)]
    unsafe fn softmax(
        s: &mut Scores,
        rows: usize,
        cols: usize,
        m: &mut [f32],
        l: &mut [f32],
        corr: &mut [f32; GROUP],
    ) {
        for r in 0..rows {
            let (sr, mr, lr) = (&mut s[r], &mut m[r], &mut l[r]);
            let mut mx = [f32::NEG_INFINITY; 8];
            // Lane j % 8 keeps the max of keys j, j + 8, … (a compare-select rather than
            // `f32::max`, whose NaN rule keeps LLVM from vectorizing; scores are finite).
            for chunk in sr[..cols].chunks(8) {
                for (mv, &sj) in mx.iter_mut().zip(chunk) {
                    *mv = if sj > *mv { sj } else { *mv };
                }
            }
            let tile_max =
                ((mx[0].max(mx[4])).max(mx[2].max(mx[6]))).max((mx[1].max(mx[5])).max(mx[3].max(mx[7])));
            let m_new = mr.max(tile_max);
            corr[r] = exp(*mr - m_new);
            for sj in sr[..cols].iter_mut() {
                *sj = exp(*sj - m_new);
            }
            sr[cols..].fill(0.0);
            *lr = lr.mul_add(corr[r], sum8(sr));
            *mr = m_new;
        }
    }

    #[inline(always)]
    unsafe fn scores(q: &[f32], rows: usize, hd: usize, kp: &[f32], panels: usize, s: &mut Scores) {
        for (r, sr) in s.iter_mut().enumerate().take(rows) {
            let qr = &q[r * hd..(r + 1) * hd];
            for p in 0..panels {
                let acc = &mut sr[p * KEY_PANEL..(p + 1) * KEY_PANEL];
                acc.fill(0.0);
                for (c, &qv) in qr.iter().enumerate() {
                    let krow = &kp[(p * hd + c) * KEY_PANEL..][..KEY_PANEL];
                    for (a, &kv) in acc.iter_mut().zip(krow) {
                        *a = qv.mul_add(kv, *a);
                    }
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn accumulate(
        o: &mut [f32],
        rows: usize,
        hd: usize,
        corr: &[f32; GROUP],
        s: &Scores,
        cols: usize,
        v: &[f32],
    ) {
        for r in 0..rows {
            let or = &mut o[r * hd..(r + 1) * hd];
            for x in or.iter_mut() {
                *x *= corr[r];
            }
            for (j, &pj) in s[r][..cols].iter().enumerate() {
                for (x, &vv) in or.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                    *x = pj.mul_add(vv, *x);
                }
            }
        }
    }
}

/// AVX2 register tiles of `R ≤ 6` query rows: scores `R × 16` keys (12 registers) over the
/// whole channel loop, and the output `R × 8·NV` columns over the whole key tile, so each
/// loaded key or value vector serves `R` rows. Head widths that are not a multiple of 8 use
/// the portable update.
#[cfg(target_arch = "x86_64")]
struct Avx2Tile;

#[cfg(target_arch = "x86_64")]
impl Avx2Tile {
    /// [`Tile::softmax`] on whole vectors: the max and the exponentials of a row take 8
    /// scores per instruction (the last, partial vector masked: `-∞` for the max, 0 after
    /// `exp`); the sum adds the vectors in order like `sum8` (the all-zero vectors past `cols`
    /// are skipped: adding +0 to a non-negative sum changes nothing) and reduces with
    /// `hsum8`, `sum8`'s tree.
    ///
    /// # Safety
    /// AVX2/FMA/F16C; the contract of [`Tile::softmax`].
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn softmax_avx2(
        s: &mut Scores,
        rows: usize,
        cols: usize,
        m: &mut [f32],
        l: &mut [f32],
        corr: &mut [f32; GROUP],
    ) {
        use std::arch::x86_64::*;

        use crate::ops::cpu::simd::avx2::{hmax8, hsum8};
        use crate::vision::math::avx2::exp8;
        assert!(rows <= GROUP && cols <= KEY_BLOCK && m.len() == rows && l.len() == rows);
        let full = cols / 8;
        let tail = cols % 8;
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane));
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        for r in 0..rows {
            let sp = s[r].as_mut_ptr();
            // SAFETY (whole block): vector c < cols.div_ceil(8) ≤ KEY_BLOCK / 8 reads and
            // writes s[r][8c..8c + 8], inside the row.
            unsafe {
                let mut mx = neg_inf;
                for c in 0..full {
                    mx = _mm256_max_ps(mx, _mm256_loadu_ps(sp.add(8 * c)));
                }
                if tail > 0 {
                    let v = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(sp.add(8 * full)), keep);
                    mx = _mm256_max_ps(mx, v);
                }
                let m_new = m[r].max(hmax8(mx));
                corr[r] = exp(m[r] - m_new);
                let mv = _mm256_set1_ps(m_new);
                let mut sum = _mm256_setzero_ps();
                for c in 0..full {
                    let p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(8 * c)), mv));
                    _mm256_storeu_ps(sp.add(8 * c), p);
                    sum = _mm256_add_ps(sum, p);
                }
                if tail > 0 {
                    let p = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(8 * full)), mv));
                    let p = _mm256_and_ps(p, keep);
                    _mm256_storeu_ps(sp.add(8 * full), p);
                    sum = _mm256_add_ps(sum, p);
                }
                for c in cols.div_ceil(8)..KEY_BLOCK / 8 {
                    _mm256_storeu_ps(sp.add(8 * c), _mm256_setzero_ps());
                }
                l[r] = l[r].mul_add(corr[r], hsum8(sum));
                m[r] = m_new;
            }
        }
    }

    /// # Safety
    /// AVX2/FMA; the contract of [`Tile::scores`] with `rows == R`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn scores_r<const R: usize>(q: &[f32], hd: usize, kp: &[f32], panels: usize, s: &mut Scores) {
        use std::arch::x86_64::*;
        assert!(q.len() == R * hd && kp.len() == panels * hd * KEY_PANEL && panels * KEY_PANEL <= KEY_BLOCK);
        let (qp, kp) = (q.as_ptr(), kp.as_ptr());
        for p in 0..panels {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            // SAFETY (whole loop): c < hd, so panel row c is in bounds (asserted length) and
            // q[r·hd + c] with r < R too.
            unsafe {
                let panel = kp.add(p * hd * KEY_PANEL);
                for c in 0..hd {
                    let k0 = _mm256_loadu_ps(panel.add(c * KEY_PANEL));
                    let k1 = _mm256_loadu_ps(panel.add(c * KEY_PANEL + 8));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&*qp.add(r * hd + c));
                        a[0] = _mm256_fmadd_ps(b, k0, a[0]);
                        a[1] = _mm256_fmadd_ps(b, k1, a[1]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let dst = &mut s[r][p * KEY_PANEL..(p + 1) * KEY_PANEL];
                // SAFETY: dst has KEY_PANEL = 16 values.
                unsafe {
                    _mm256_storeu_ps(dst.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(dst.as_mut_ptr().add(8), a[1]);
                }
            }
        }
    }

    /// # Safety
    /// AVX2/FMA; the contract of [`Tile::accumulate`] with `rows == R` and `hd` a multiple of
    /// `8·NV`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn accumulate_r<const R: usize, const NV: usize>(
        o: &mut [f32],
        hd: usize,
        corr: &[f32; GROUP],
        s: &Scores,
        cols: usize,
        v: &[f32],
    ) {
        use std::arch::x86_64::*;
        assert!(o.len() == R * hd && v.len() == cols * hd && hd.is_multiple_of(8 * NV) && cols <= KEY_BLOCK);
        let (op, vp) = (o.as_mut_ptr(), v.as_ptr());
        for x0 in (0..hd).step_by(8 * NV) {
            let mut acc = [[_mm256_setzero_ps(); NV]; R];
            // SAFETY (whole block): x0 + 8·NV ≤ hd, r < R, j < cols: in bounds of the asserted
            // lengths.
            unsafe {
                for (r, a) in acc.iter_mut().enumerate() {
                    let c = _mm256_set1_ps(corr[r]);
                    for (i, ai) in a.iter_mut().enumerate() {
                        *ai = _mm256_mul_ps(_mm256_loadu_ps(op.add(r * hd + x0 + 8 * i)), c);
                    }
                }
                // `j` indexes both the value rows (by pointer) and every row of `s`.
                #[allow(clippy::needless_range_loop)]
                for j in 0..cols {
                    let mut vv = [_mm256_setzero_ps(); NV];
                    for (i, x) in vv.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(vp.add(j * hd + x0 + 8 * i));
                    }
                    for (r, a) in acc.iter_mut().enumerate() {
                        let b = _mm256_broadcast_ss(&s[r][j]);
                        for (ai, &x) in a.iter_mut().zip(&vv) {
                            *ai = _mm256_fmadd_ps(b, x, *ai);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    for (i, ai) in a.iter().enumerate() {
                        _mm256_storeu_ps(op.add(r * hd + x0 + 8 * i), *ai);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tile for Avx2Tile {
    #[inline(always)]
    unsafe fn softmax(
        s: &mut Scores,
        rows: usize,
        cols: usize,
        m: &mut [f32],
        l: &mut [f32],
        corr: &mut [f32; GROUP],
    ) {
        // SAFETY: the caller guarantees AVX2/FMA/F16C and the lengths.
        unsafe { Avx2Tile::softmax_avx2(s, rows, cols, m, l, corr) }
    }

    #[inline(always)]
    unsafe fn scores(q: &[f32], rows: usize, hd: usize, kp: &[f32], panels: usize, s: &mut Scores) {
        // SAFETY: the caller guarantees AVX2/FMA and the lengths (asserted again inside).
        unsafe {
            match rows {
                6 => Avx2Tile::scores_r::<6>(q, hd, kp, panels, s),
                5 => Avx2Tile::scores_r::<5>(q, hd, kp, panels, s),
                4 => Avx2Tile::scores_r::<4>(q, hd, kp, panels, s),
                3 => Avx2Tile::scores_r::<3>(q, hd, kp, panels, s),
                2 => Avx2Tile::scores_r::<2>(q, hd, kp, panels, s),
                _ => Avx2Tile::scores_r::<1>(q, hd, kp, panels, s),
            }
        }
    }

    #[inline(always)]
    unsafe fn accumulate(
        o: &mut [f32],
        rows: usize,
        hd: usize,
        corr: &[f32; GROUP],
        s: &Scores,
        cols: usize,
        v: &[f32],
    ) {
        macro_rules! by_rows {
            ($nv:literal) => {
                match rows {
                    6 => Avx2Tile::accumulate_r::<6, $nv>(o, hd, corr, s, cols, v),
                    5 => Avx2Tile::accumulate_r::<5, $nv>(o, hd, corr, s, cols, v),
                    4 => Avx2Tile::accumulate_r::<4, $nv>(o, hd, corr, s, cols, v),
                    3 => Avx2Tile::accumulate_r::<3, $nv>(o, hd, corr, s, cols, v),
                    2 => Avx2Tile::accumulate_r::<2, $nv>(o, hd, corr, s, cols, v),
                    _ => Avx2Tile::accumulate_r::<1, $nv>(o, hd, corr, s, cols, v),
                }
            };
        }
        // SAFETY: the caller guarantees AVX2/FMA and the lengths (asserted again inside).
        unsafe {
            if hd.is_multiple_of(16) {
                by_rows!(2)
            } else if hd.is_multiple_of(8) {
                by_rows!(1)
            } else {
                PortableTile::accumulate(o, rows, hd, corr, s, cols, v)
            }
        }
    }
}
