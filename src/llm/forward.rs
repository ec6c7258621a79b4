//! The decoder forward pass over a batch of rows (HF `LlamaForCausalLM`, SPEC-model.md §10.2):
//!
//! ```text
//! x = embed(ids)                                         [n, D]
//! per layer:
//!   h = rms_norm(x, input_layernorm)                     [n, D]
//!   q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ                         [n, nh·hd], [n, nkv·hd] ×2
//!   q, k = rope(q, pos), rope(k, pos); cache ← k, v
//!   a = softmax(q·Kᵀ / √hd, causal) · V  (GQA: query head j reads kv head j / (nh/nkv))
//!   x = x + a·Woᵀ                                        [n, D]
//!   h = rms_norm(x, post_attention_layernorm)
//!   x = x + (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ                    [n, F] → [n, D]
//! logits = rms_norm(x, norm)·Whᵀ                         [n, V]
//! ```
//!
//! Each row is one token of some sequence at some absolute position. All rows go through every
//! matmul together (each weight is read once per call, whatever `n`): a prefill chunk is many
//! rows of one sequence, a batched decode step one row per live sequence. A row attends to the
//! optional shared read-only prefix cache (positions `0..base`) and then to its own sequence's
//! cache (positions `base..=pos`); the rows' keys/values are written before any row attends, so
//! a chunk is causal within itself. Everything accumulates in f32; the buffers are allocated
//! once ([`Scratch::new`]) and a call allocates nothing.

use super::rope::{rotate, Rope};
use super::weights::DecoderWeights;
use crate::model::config::DecoderConfig;
use crate::ops::cpu::exp::exp;
use crate::ops::{matmul_group_into, matmul_into, Activations, MatmulScratch, ThreadPool};
use crate::{Error, Result};
use std::mem::MaybeUninit;

/// Keys and values of one sequence, all layers: `k`, `v` `[n_layers, capacity, nkv·hd]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    capacity: usize,
    kv_dim: usize,
    /// Positions filled.
    pub len: usize,
}

impl KvCache {
    pub fn new(cfg: &DecoderConfig, capacity: usize) -> Result<KvCache> {
        let kv_dim = cfg.kv_dim();
        let n = cfg
            .n_layers
            .checked_mul(capacity)
            .and_then(|x| x.checked_mul(kv_dim))
            .ok_or_else(|| Error::OutOfMemory(format!("KV cache of {capacity} positions overflows")))?;
        let alloc = |what: &str| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| {
                Error::OutOfMemory(format!(
                    "KV cache {what}: {capacity} positions need {} MiB",
                    (n * 4) >> 20
                ))
            })?;
            v.resize(n, 0.0);
            Ok(v)
        };
        Ok(KvCache { k: alloc("keys")?, v: alloc("values")?, capacity, kv_dim, len: 0 })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn offset(&self, layer: usize, slot: usize) -> usize {
        (layer * self.capacity + slot) * self.kv_dim
    }
}

/// Where a row goes: which sequence cache, which absolute position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub seq: usize,
    pub pos: usize,
}

/// Which rows need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logits {
    /// None (a prefill chunk that is not the last).
    None,
    /// Only the last row's, into `logits[..V]`.
    Last,
    /// Every row's, into `logits[..n·V]`.
    All,
}

/// Activation buffers for up to `rows` rows.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub rows: usize,
    /// Residual stream `[rows, D]`; callers write the input embeddings here.
    pub x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `[rows, V]`.
    pub logits: Vec<f32>,
    mm: MatmulScratch,
}

impl Scratch {
    /// Fills the inputs [`products`] reads (`h`, `att`) with a fixed pattern in [−1, 1]
    /// (no zeros, no subnormals).
    pub fn fill_pattern(&mut self) {
        for buf in [&mut self.h, &mut self.att] {
            for (i, v) in buf.iter_mut().enumerate() {
                *v = ((i * 37 + 11) % 97) as f32 / 48.0 - 1.0 + 1.0 / 96.0;
            }
        }
    }

    pub fn new(cfg: &DecoderConfig, rows: usize, activations: Activations) -> Result<Scratch> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        let half = cfg.head_dim / 2;
        let k_max = d.max(f).max(cfg.q_dim());
        Ok(Scratch {
            rows,
            x: vec![0.0; rows * d],
            h: vec![0.0; rows * d],
            q: vec![0.0; rows * cfg.q_dim()],
            k: vec![0.0; rows * cfg.kv_dim()],
            v: vec![0.0; rows * cfg.kv_dim()],
            att: vec![0.0; rows * cfg.q_dim()],
            out: vec![0.0; rows * d],
            gate: vec![0.0; rows * f],
            up: vec![0.0; rows * f],
            cos: vec![0.0; rows * half],
            sin: vec![0.0; rows * half],
            logits: vec![0.0; rows * cfg.vocab_size],
            mm: {
                let mut mm = MatmulScratch::with_capacity(rows, k_max)?;
                mm.set_activations(activations);
                mm
            },
        })
    }

    /// How the products treat activations against quantized weights.
    pub fn activations(&self) -> Activations {
        self.mm.activations()
    }
}

/// `out = w ⊙ x / sqrt(mean(x²) + eps)` per row of `d`.
///
/// The sum of squares is taken in f64 (each square is exact there) as 8 interleaved partial
/// sums (lane `j` adds elements `j, j + 8, …` in order) joined by a fixed tree, the same order
/// on every CPU. Unlike one left-to-right sum this is not a chain of dependent adds, so it
/// vectorizes: a left-to-right f64 sum made the six rows of a batched decode step a serial
/// stretch of ~4 µs per norm while the other threads waited. The two orders round the f64 sum
/// differently by ~1e-16 relative, which changes the f32 inverse norm only for an f64 value
/// within that of an f32 rounding boundary.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = sum_squares_f64(xr);
        let inv = (1.0 / (ss / d as f64 + eps as f64).sqrt()) as f32;
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = g * (v * inv);
        }
    }
}

/// `Σ x_i²` in f64: lane `j` of 8 sums elements `j, j + 8, …` left to right, then
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))`.
fn sum_squares_f64(x: &[f32]) -> f64 {
    let mut lane = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lane.iter_mut().zip(c) {
            *l += v as f64 * v as f64;
        }
    }
    for (l, &v) in lane.iter_mut().zip(rest) {
        *l += v as f64 * v as f64;
    }
    ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]))
}

/// A raw output pointer shared by attention tasks that write disjoint ranges.
struct SharedOut(*mut f32);
// SAFETY: every task writes only its own `[row, head]` slice of the buffer (disjoint ranges),
// and the buffer outlives the `pool.run` call that uses the pointer.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// Runs rows `rows` (inputs in `s.x[..n·D]`) through the decoder, appending their keys and
/// values to `caches[row.seq]` (slot `pos − base`, `base` = the prefix length, 0 without one)
/// and writing the requested logits to `s.logits`. The caller checks ids, positions and
/// capacities; this re-checks the capacity and returns an error rather than index out of range.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    cfg: &DecoderConfig,
    w: &DecoderWeights<'_>,
    rope: &Rope,
    s: &mut Scratch,
    pool: &ThreadPool,
    rows: &[Row],
    prefix: Option<&KvCache>,
    caches: &mut [KvCache],
    want: Logits,
) -> Result<()> {
    let n = rows.len();
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (qd, kvd, half) = (cfg.q_dim(), cfg.kv_dim(), hd / 2);
    let (nh, group) = (cfg.n_heads, cfg.n_heads / cfg.n_kv_heads);
    let base = prefix.map_or(0, |p| p.len);
    if n == 0 || n > s.rows {
        return Err(Error::Internal(format!("forward of {n} rows with scratch for {}", s.rows)));
    }
    for r in rows {
        let slot_ok = r.pos >= base && caches.get(r.seq).is_some_and(|c| r.pos - base < c.capacity);
        if !slot_ok {
            return Err(Error::Internal(format!(
                "row at position {} does not fit sequence {}'s cache",
                r.pos, r.seq
            )));
        }
    }
    for (i, r) in rows.iter().enumerate() {
        rope.angles(r.pos, &mut s.cos[i * half..(i + 1) * half], &mut s.sin[i * half..(i + 1) * half]);
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let avx2 = crate::ops::Isa::detect().avx2();

    for (il, l) in w.layers.iter().enumerate() {
        // Attention block.
        rms_norm(&s.x[..n * d], &l.attn_norm, cfg.rms_norm_eps, &mut s.h[..n * d]); // [n, D]

        // Q [n, nh·hd], K and V [n, nkv·hd]: one quantization of h, one pool call.
        let mut qkv = [&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]];
        matmul_group_into(&s.h[..n * d], n, &[&l.q, &l.k, &l.v], &mut qkv, &mut s.mm, pool)?;
        for (i, r) in rows.iter().enumerate() {
            let (cos, sin) = (&s.cos[i * half..(i + 1) * half], &s.sin[i * half..(i + 1) * half]);
            for head in s.q[i * qd..(i + 1) * qd].chunks_exact_mut(hd) {
                rotate(head, cos, sin);
            }
            for head in s.k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd) {
                rotate(head, cos, sin);
            }
            let c = &mut caches[r.seq];
            let at = c.offset(il, r.pos - base);
            c.k[at..at + kvd].copy_from_slice(&s.k[i * kvd..(i + 1) * kvd]);
            c.v[at..at + kvd].copy_from_slice(&s.v[i * kvd..(i + 1) * kvd]);
        }
        {
            let caches: &[KvCache] = caches;
            let q = &s.q;
            let att = SharedOut(s.att.as_mut_ptr());
            let att = &att;
            // One task per (group of rows, kv head, up to GROUP_MAX of its query heads): each
            // key and value is read once for all the query heads that share it (GQA). Rows
            // that share a prefix (batched decoding, suffix prefill) are grouped, up to
            // ROW_TILE per task, and walk the prefix together in chunks of PREFIX_CHUNK keys,
            // so the prefix's keys and values are read from memory once per task rather than
            // once per row; without a prefix each row is its own task. Over the prefix the
            // rows' query heads are side by side (up to FLAT_MAX values), in calls of up to
            // GROUP_MAX heads, so SmolLM2's 3 heads per row make calls of 4–6 heads (whole
            // pairs for the paired scores, fuller value passes: 7.1–7.7 → 6.2–6.7 ns per head
            // and key in the kernel alone) instead of 3. Each row's keys still come in
            // position order, and `attend` gives the same bits however the keys are split
            // and whichever heads share a call, so the grouping never changes a result.
            let per_kv = group.div_ceil(GROUP_MAX);
            let nkv = nh / group;
            let head_tasks = nkv * per_kv;
            let rows_per = if base > 0 && n > 1 {
                // Enough tasks for every thread twice over, at most ROW_TILE rows each.
                let groups = (2 * pool.threads()).div_ceil(head_tasks).max(1);
                n.div_ceil(groups).clamp(1, ROW_TILE)
            } else {
                1
            };
            let task = move |t: usize| {
                let (rg, rest) = (t / head_tasks, t % head_tasks);
                let (kvh, sub) = (rest / per_kv, rest % per_kv);
                let h0 = kvh * group + sub * GROUP_MAX;
                let g = GROUP_MAX.min((kvh + 1) * group - h0);
                let (i0, i1) = (rg * rows_per, (rg * rows_per + rows_per).min(n));
                let qv = |i: usize| &q[i * qd + h0 * hd..i * qd + (h0 + g) * hd];
                // SAFETY: task t alone writes `att[i·qd + h0·hd ..][..g·hd]` for its rows i
                // (disjoint per t and per row); `s.att` has `rows · qd ≥ n · qd` values and is
                // not otherwise borrowed here.
                let out =
                    |i: usize| unsafe { std::slice::from_raw_parts_mut(att.0.add(i * qd + h0 * hd), g * hd) };
                // Online softmax per row and query head (running max `m`, running sum `sum`),
                // keys in position order.
                let mut st: [Softmax; ROW_TILE] = std::array::from_fn(|_| Softmax {
                    m: [f32::NEG_INFINITY; GROUP_MAX],
                    sum: [0.0; GROUP_MAX],
                });
                for i in i0..i1 {
                    out(i).fill(0.0);
                }
                if let Some(p) = prefix.filter(|_| base > 0) {
                    let at = p.offset(il, 0) + kvh * hd;
                    // The rows' query heads side by side, in calls of up to GROUP_MAX heads (a
                    // row's g heads alone leave a lone head or a short value pass): the same
                    // per-head operations, so the same bits. Else one row at a time.
                    let heads = (i1 - i0) * g;
                    let flat = i1 - i0 > 1 && heads * hd <= FLAT_MAX;
                    let mut qbuf = [const { MaybeUninit::<f32>::uninit() }; FLAT_MAX];
                    let mut obuf = [const { MaybeUninit::<f32>::uninit() }; FLAT_MAX];
                    let used = if flat { heads * hd } else { 0 };
                    for i in (i0..i1).filter(|_| flat) {
                        let f = (i - i0) * g * hd;
                        for ((qd, &qs), od) in qbuf[f..used].iter_mut().zip(qv(i)).zip(&mut obuf[f..used]) {
                            qd.write(qs);
                            od.write(0.0);
                        }
                    }
                    // SAFETY: the first `used` elements of both were written above.
                    let (qf, of) = unsafe {
                        (
                            std::slice::from_raw_parts(qbuf.as_ptr().cast::<f32>(), used),
                            std::slice::from_raw_parts_mut(obuf.as_mut_ptr().cast::<f32>(), used),
                        )
                    };
                    let calls = heads.div_ceil(GROUP_MAX);
                    let bounds = |b: usize| (b * heads / calls, (b + 1) * heads / calls);
                    let mut cst: [Softmax; ROW_TILE] = std::array::from_fn(|_| Softmax {
                        m: [f32::NEG_INFINITY; GROUP_MAX],
                        sum: [0.0; GROUP_MAX],
                    });
                    let mut start = 0;
                    while start < base {
                        let len = PREFIX_CHUNK.min(base - start);
                        let (k, v) = (&p.k[at + start * kvd..], &p.v[at + start * kvd..]);
                        if flat {
                            for (b, st) in cst.iter_mut().enumerate().take(calls) {
                                let (f0, f1) = bounds(b);
                                let (q, o) = (&qf[f0 * hd..f1 * hd], &mut of[f0 * hd..f1 * hd]);
                                attend(q, hd, k, v, kvd, len, scale, st, o, avx2);
                            }
                        } else {
                            for i in i0..i1 {
                                attend(qv(i), hd, k, v, kvd, len, scale, &mut st[i - i0], out(i), avx2);
                            }
                        }
                        start += len;
                    }
                    if flat {
                        for (b, c) in cst.iter().enumerate().take(calls) {
                            let (f0, f1) = bounds(b);
                            for f in f0..f1 {
                                let (r, h) = (f / g, f % g);
                                (st[r].m[h], st[r].sum[h]) = (c.m[f - f0], c.sum[f - f0]);
                            }
                        }
                        for i in i0..i1 {
                            out(i).copy_from_slice(&of[(i - i0) * g * hd..(i - i0 + 1) * g * hd]);
                        }
                    }
                }
                for i in i0..i1 {
                    let (r, o) = (rows[i], out(i));
                    let c = &caches[r.seq];
                    let at = c.offset(il, 0) + kvh * hd;
                    attend(
                        qv(i),
                        hd,
                        &c.k[at..],
                        &c.v[at..],
                        kvd,
                        r.pos - base + 1,
                        scale,
                        &mut st[i - i0],
                        o,
                        avx2,
                    );
                    st[i - i0].normalize(o, hd);
                }
            };
            pool.run(n.div_ceil(rows_per) * head_tasks, &task)?;
        }
        matmul_into(&s.att[..n * qd], n, &l.o, &mut s.out[..n * d], &mut s.mm, pool)?; // [n, D]
        add(&mut s.x[..n * d], &s.out[..n * d]);

        // MLP block.
        rms_norm(&s.x[..n * d], &l.mlp_norm, cfg.rms_norm_eps, &mut s.h[..n * d]); // [n, D]
        let mut gate_up = [&mut s.gate[..n * f], &mut s.up[..n * f]]; // [n, F] each
        matmul_group_into(&s.h[..n * d], n, &[&l.gate, &l.up], &mut gate_up, &mut s.mm, pool)?;
        silu_mul(&mut s.gate[..n * f], &s.up[..n * f], pool, avx2)?; // silu(g) · u
        matmul_into(&s.gate[..n * f], n, &l.down, &mut s.out[..n * d], &mut s.mm, pool)?; // [n, D]
        add(&mut s.x[..n * d], &s.out[..n * d]);
    }
    for r in rows {
        let c = &mut caches[r.seq];
        c.len = c.len.max(r.pos - base + 1);
    }

    let v = cfg.vocab_size;
    match want {
        Logits::None => {}
        Logits::Last => {
            let last = &s.x[(n - 1) * d..n * d];
            rms_norm(last, &w.norm, cfg.rms_norm_eps, &mut s.h[..d]);
            matmul_into(&s.h[..d], 1, &w.head, &mut s.logits[..v], &mut s.mm, pool)?;
            // [1, V]
        }
        Logits::All => {
            rms_norm(&s.x[..n * d], &w.norm, cfg.rms_norm_eps, &mut s.h[..n * d]);
            matmul_into(&s.h[..n * d], n, &w.head, &mut s.logits[..n * v], &mut s.mm, pool)?;
            // [n, V]
        }
    }
    Ok(())
}

/// Only the matrix products of one [`forward`] call of `n` rows (every layer's Q/K/V, output,
/// gate/up and down projections, then the head for all `n` rows, as a batched decode step
/// asks), with the same calls, shapes and threads, on whatever the scratch buffers hold: the
/// part of a step that batching shares. Attention, norms, RoPE and the KV cache are left out,
/// so the time it takes is a floor under any step of `n` rows with these kernels. Overwrites
/// the scratch (logits included); touches no cache.
pub(crate) fn products(w: &DecoderWeights<'_>, s: &mut Scratch, pool: &ThreadPool, n: usize) -> Result<()> {
    if n == 0 || n > s.rows {
        return Err(Error::Internal(format!("products of {n} rows with scratch for {}", s.rows)));
    }
    let Some(l0) = w.layers.first() else { return Ok(()) };
    let (d, qd, kvd) = (l0.q.shape()[1], l0.q.shape()[0], l0.k.shape()[0]);
    let (f, v) = (l0.gate.shape()[0], w.head.shape()[0]);
    for l in &w.layers {
        let mut qkv = [&mut s.q[..n * qd], &mut s.k[..n * kvd], &mut s.v[..n * kvd]];
        matmul_group_into(&s.h[..n * d], n, &[&l.q, &l.k, &l.v], &mut qkv, &mut s.mm, pool)?;
        matmul_into(&s.att[..n * qd], n, &l.o, &mut s.out[..n * d], &mut s.mm, pool)?;
        let mut gate_up = [&mut s.gate[..n * f], &mut s.up[..n * f]];
        matmul_group_into(&s.h[..n * d], n, &[&l.gate, &l.up], &mut gate_up, &mut s.mm, pool)?;
        // The down projection reads the up projection's output (no SwiGLU here): the shape
        // `forward`'s `silu(g) · u` has.
        matmul_into(&s.up[..n * f], n, &l.down, &mut s.out[..n * d], &mut s.mm, pool)?;
    }
    matmul_into(&s.h[..n * d], n, &w.head, &mut s.logits[..n * v], &mut s.mm, pool)
}

/// The decode attention of `q.len() / hd` query heads (at most 8, sharing one key/value head)
/// over `count` keys, key `i` at `k[i · stride..][..hd]` (values alike), normalized, into
/// `out[..q.len()]`: the kernel [`forward`] runs per task, on this CPU's best path. For the
/// criterion bench (`cargo bench --bench llm -- attend`); errors name a shape that does not fit.
#[doc(hidden)]
pub fn attend_heads(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    out: &mut [f32],
) -> Result<()> {
    let heads = q.len().checked_div(hd).unwrap_or(0);
    let need = if count == 0 { 0 } else { (count - 1) * stride + hd };
    if heads == 0 || heads > GROUP_MAX || q.len() != heads * hd || out.len() < q.len() || stride < hd {
        return Err(Error::Internal(format!(
            "attention of {} query values with head dim {hd} (1 to {GROUP_MAX} heads), key stride {stride}, {} outputs",
            q.len(),
            out.len()
        )));
    }
    if k.len() < need || v.len() < need {
        return Err(Error::Internal(format!(
            "{count} keys of stride {stride} need {need} values; keys have {}, values {}",
            k.len(),
            v.len()
        )));
    }
    let mut st = Softmax { m: [f32::NEG_INFINITY; GROUP_MAX], sum: [0.0; GROUP_MAX] };
    let out = &mut out[..q.len()];
    out.fill(0.0);
    let avx2 = crate::ops::Isa::detect().avx2();
    attend(q, hd, k, v, stride, count, 1.0 / (hd as f32).sqrt(), &mut st, out, avx2);
    st.normalize(out, hd);
    Ok(())
}

/// Keys scored together before their softmax weights are applied.
const KEY_CHUNK: usize = 32;

/// Most query heads one attention task serves (the GQA group, or part of it).
const GROUP_MAX: usize = 8;

/// Most rows one attention task serves when they share a prefix.
const ROW_TILE: usize = 8;

/// Most values (query heads × head dim) of the rows of one attention task that walk a shared
/// prefix with their heads side by side (8 rows × 8 heads of 64, or 4 × 8 of 128; 32 KiB of
/// stack for the two buffers); more take the rows one at a time (the same bits).
const FLAT_MAX: usize = ROW_TILE * GROUP_MAX * 64;

/// Prefix keys one group of rows attends to before moving on (their keys and values, 64 · 128
/// · 4 bytes · 2 = 64 KiB at head dim 128, stay in L2 across the rows).
const PREFIX_CHUNK: usize = 64;

/// Running softmax state of up to [`GROUP_MAX`] query heads.
struct Softmax {
    m: [f32; GROUP_MAX],
    sum: [f32; GROUP_MAX],
}

impl Softmax {
    /// Divides each head's unnormalized output (`out`, `[heads, hd]`) by its running sum, as a
    /// multiply by the sum's reciprocal.
    fn normalize(&self, out: &mut [f32], hd: usize) {
        for (o, &sum) in out.chunks_exact_mut(hd).zip(&self.sum) {
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// Online-softmax attention of `q.len() / hd ≤ GROUP_MAX` query heads over `count` shared
/// keys/values, key `i` at `k[i · stride..][..hd]` (values alike), continuing the running
/// state `st` and the unnormalized outputs `out` (`[heads, hd]`). Keys are taken in chunks of
/// [`KEY_CHUNK`] (a chunk's scores first), then each key in order exactly as a one-key-at-a-time
/// online softmax would: rescale when it raises the max, add its weighted value. So results do
/// not depend on where the keys are split (a shared prefix and a sequence's own cache give the
/// same bits as one cache). Each head's operations and their order do not depend on the other
/// heads; the AVX2 build compiles the same operations (no FMA contraction), so both give
/// the same bits.
#[allow(clippy::too_many_arguments)]
fn attend(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    scale: f32,
    st: &mut Softmax,
    out: &mut [f32],
    avx2: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when `Isa::detect()` found AVX2, FMA and F16C on this CPU;
        // the AVX-512 build runs only where `has_avx512` found AVX512F/VL.
        unsafe {
            if crate::ops::cpu::exp::avx2::has_avx512() {
                attend_avx512(q, hd, k, v, stride, count, scale, st, out);
            } else {
                attend_avx2(q, hd, k, v, stride, count, scale, st, out);
            }
        }
        return;
    }
    let _ = avx2;
    attend_portable(q, hd, k, v, stride, count, scale, st, out);
}

/// [`attend_portable`] with explicit vectors: the same per-lane multiplies and adds (no FMA),
/// the same lane reduction order, so the same bits. The loops are arranged for the vector unit,
/// which does not change any element's sequence of operations (each head is independent of the
/// others):
/// * scores, per head, 8 keys at a time: 8 independent accumulators (no chain of dependent
///   adds), then one transpose-and-add over the 8 that makes exactly [`dot`]'s tree per key
///   (`((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`), instead of a horizontal sum per key; with
///   `W512` two heads at once ([`dot8x8_pair`]: half the multiplies and adds);
/// * the softmax state of a head, 8 keys at a time: the running max before and after each key
///   by a log-step scan over the lanes ([`running_max8`], the scalar loop's values), both
///   exponentials (`exp8`, or with `W512` its 512-bit twin `exp8_avx512`: the same bits as the
///   scalar `exp` either way; the rescale factor only when a key of the 8 raises the max), then
///   the running sum key by key (scalar). The scan replaced a scalar loop whose 8 one-lane
///   stores each 8-lane load then waited on (a store-forwarding stall per load);
/// * the outputs of several heads at once ([`pv_heads`]) accumulated in registers over all the
///   chunk's keys and stored once, instead of a load and store of the output per key (rescaled
///   only by keys that raise the max, as the portable kernel does): each value is loaded once
///   for those heads, and with `W512` in 512-bit vectors.
///
/// On one Sapphire Rapids core, 3 query heads of dimension 64 over 80 and 544 keys (SmolLM2's
/// GQA group) went from 10.8 and 11.4 to 8.2–8.9 ns per head and key with the scan, the skipped
/// exponentials and the value step, and to 7.2–7.6 with the paired scores.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C (`Isa::Avx2`; F16C lets `hsum8`, compiled for the kernels'
/// common feature set, inline here instead of costing a call per key and head), and with `W512`
/// AVX512F/VL; the caller enables them (this is always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_x86<const W512: bool>(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    scale: f32,
    st: &mut Softmax,
    out: &mut [f32],
) {
    use crate::ops::cpu::exp::avx2::exp8_either;
    use crate::ops::cpu::simd::avx2::{hsum8, hsum8x8};
    use std::arch::x86_64::*;
    if !hd.is_multiple_of(8) || hd == 0 {
        attend_portable(q, hd, k, v, stride, count, scale, st, out);
        return;
    }
    let heads = (q.len() / hd).min(GROUP_MAX);
    assert!(out.len() >= heads * hd && (count == 0 || k.len().min(v.len()) >= (count - 1) * stride + hd));
    let (qp, kp, vp, op) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), out.as_mut_ptr());
    let mut scores = [[0.0f32; KEY_CHUNK]; GROUP_MAX];
    // Per head and key of the chunk: the factor the output is rescaled by before the key's
    // value is added (1.0 when the key does not raise the running max, and then skipped:
    // `o · 1.0 = o`), and its weight.
    let mut shrink = [[1.0f32; KEY_CHUNK]; GROUP_MAX];
    let mut weight = [[0.0f32; KEY_CHUNK]; GROUP_MAX];
    // The running max before each key of the chunk.
    let mut m_before = [0.0f32; KEY_CHUNK];
    let scale_v = _mm256_set1_ps(scale);
    let mut start = 0;
    // SAFETY: every pointer offset stays inside the slices: query head h < heads reads
    // q[h·hd..][..hd], key/value i < count reads [i·stride..][..hd] (asserted above), output
    // head h writes out[h·hd..][..hd]; `scores`, `shrink`, `weight` are indexed below `len`.
    unsafe {
        while start < count {
            let len = KEY_CHUNK.min(count - start);
            // Scores, 8 keys at a time (with `W512` two heads at once, one per 256-bit half),
            // then `dot`'s tree for the 8 at once; the last keys one at a time.
            let whole = len - len % 8;
            let mut h = 0;
            if W512 {
                while h + 2 <= heads {
                    let (q0, q1) = (qp.add(h * hd), qp.add((h + 1) * hd));
                    for i in (0..whole).step_by(8) {
                        let sc = dot8x8_pair(q0, q1, kp.add((start + i) * stride), stride, hd);
                        let sc = _mm512_mul_ps(sc, _mm512_set1_ps(scale));
                        _mm256_storeu_ps(scores[h].as_mut_ptr().add(i), _mm512_castps512_ps256(sc));
                        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(sc)));
                        _mm256_storeu_ps(scores[h + 1].as_mut_ptr().add(i), hi);
                    }
                    h += 2;
                }
            }
            for (h, scores) in scores.iter_mut().enumerate().take(heads).skip(h) {
                let qh = qp.add(h * hd);
                for i in (0..whole).step_by(8) {
                    let acc = dot8x8(qh, kp.add((start + i) * stride), stride, hd);
                    let sc = _mm256_mul_ps(hsum8x8(&acc), scale_v);
                    _mm256_storeu_ps(scores.as_mut_ptr().add(i), sc);
                }
            }
            for (h, scores) in scores.iter_mut().enumerate().take(heads) {
                let qh = qp.add(h * hd);
                for (i, score) in scores.iter_mut().enumerate().take(len).skip(whole) {
                    *score = hsum8(dot8(qh, kp.add((start + i) * stride), hd)) * scale;
                }
            }
            for h in 0..heads {
                let scores = &scores[h];
                // The head's softmax state over the chunk, 8 keys at a time: the running max
                // before and after each key, both exponentials (`exp8`, the scalar `exp`'s
                // bits), then the running sum key by key (scalar).
                let mut m = st.m[h];
                let mut i = 0;
                while i < len {
                    // Lanes past `len` compute on stale values and are never read.
                    let sc = _mm256_loadu_ps(scores.as_ptr().add(i));
                    let (before, after) = running_max8(sc, m);
                    _mm256_storeu_ps(m_before.as_mut_ptr().add(i), before);
                    let raises = _mm256_cmp_ps::<_CMP_GT_OQ>(sc, before);
                    // Past the first keys the max rarely moves: no exponential then.
                    let sh = if _mm256_movemask_ps(raises) == 0 {
                        _mm256_set1_ps(1.0)
                    } else {
                        let sh = exp8_either::<W512>(_mm256_sub_ps(before, sc));
                        _mm256_blendv_ps(_mm256_set1_ps(1.0), sh, raises)
                    };
                    _mm256_storeu_ps(shrink[h].as_mut_ptr().add(i), sh);
                    let w = exp8_either::<W512>(_mm256_sub_ps(sc, after));
                    _mm256_storeu_ps(weight[h].as_mut_ptr().add(i), w);
                    // The max after the group's last key.
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), after);
                    m = lanes[(len - i).min(8) - 1];
                    i += 8;
                }
                st.m[h] = m;
                for i in 0..len {
                    if scores[i] > m_before[i] {
                        st.sum[h] *= shrink[h][i];
                    }
                    st.sum[h] += weight[h][i];
                }
            }
            // out = out · shrink + weight · value, key by key, several heads at once.
            let mut h0 = 0;
            while h0 < heads {
                let hc = (heads - h0).min(if W512 { 4 } else { 2 });
                let (sh, wt, oh) = (&shrink[h0..], &weight[h0..], op.add(h0 * hd));
                let vs = vp.add(start * stride);
                match hc {
                    4 => pv_heads::<4, W512>(oh, hd, vs, stride, len, sh, wt),
                    3 => pv_heads::<3, W512>(oh, hd, vs, stride, len, sh, wt),
                    2 => pv_heads::<2, W512>(oh, hd, vs, stride, len, sh, wt),
                    _ => pv_heads::<1, W512>(oh, hd, vs, stride, len, sh, wt),
                }
                h0 += hc;
            }
            start += len;
        }
    }
}

/// The running max of the scalar loop `if s > m { m = s }` over the 8 scores of `s`, starting
/// at `m`: per lane, the max before and after that key. `max_ps(later, earlier)` is exactly that
/// step (`later > earlier ? later : earlier`: ties keep the earlier value, a NaN score never
/// wins), and with the NaN scores made −∞ (which never wins either) the step is associative,
/// so a log-step scan over the lanes gives the loop's values: the same bits.
///
/// # Safety
/// The caller enables AVX2 (always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn running_max8(
    s: std::arch::x86_64::__m256,
    m: f32,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let s = _mm256_blendv_ps(s, neg_inf, _mm256_cmp_ps::<_CMP_UNORD_Q>(s, s));
    let i1 = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
    let i2 = _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5);
    let i4 = _mm256_setr_epi32(0, 0, 0, 0, 0, 1, 2, 3);
    // Lane i takes lane i − k (−∞, or `m`, below k); no closures, which would not inherit the
    // caller's target features.
    let a = _mm256_max_ps(s, _mm256_blend_ps::<0b0000_0001>(_mm256_permutevar8x32_ps(s, i1), neg_inf));
    let a = _mm256_max_ps(a, _mm256_blend_ps::<0b0000_0011>(_mm256_permutevar8x32_ps(a, i2), neg_inf));
    let a = _mm256_max_ps(a, _mm256_blend_ps::<0b0000_1111>(_mm256_permutevar8x32_ps(a, i4), neg_inf));
    let mv = _mm256_set1_ps(m);
    let after = _mm256_max_ps(a, mv);
    (_mm256_blend_ps::<0b0000_0001>(_mm256_permutevar8x32_ps(after, i1), mv), after)
}

/// [`dot`]'s 8 lanes of one query head (`q`, `hd` a multiple of 8) with one key: per lane, a
/// multiply and an add (no fused multiply-add: [`dot`]'s roundings) over the 8-element chunks in
/// order.
///
/// # Safety
/// `q` and `key` are valid for `hd` reads; the caller enables AVX2 (always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot8(q: *const f32, key: *const f32, hd: usize) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for c in (0..hd).step_by(8) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(q.add(c)), _mm256_loadu_ps(key.add(c))));
        }
        acc
    }
}

/// [`dot8`] for 8 consecutive keys (`k`, key `j` at `k + j · stride`): 8 independent
/// accumulators, ready for `hsum8x8`.
///
/// # Safety
/// `q` is valid for `hd` reads and each key for `hd` reads; the caller enables AVX2 (always
/// inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot8x8(q: *const f32, k: *const f32, stride: usize, hd: usize) -> [std::arch::x86_64::__m256; 8] {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qv = _mm256_loadu_ps(q.add(c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_mul_ps(qv, _mm256_loadu_ps(k.add(j * stride + c))));
            }
        }
        acc
    }
}

/// [`dot8x8`] for two query heads at once (`q0`, `q1`), in 512-bit vectors whose low half
/// belongs to `q0` and high half to `q1` (each key chunk broadcast to both halves), then
/// `hsum8x8`'s tree in both halves: lanes 0–7 of the result are `q0`'s 8 dot products, lanes
/// 8–15 `q1`'s, each with exactly [`dot`]'s operations (half the multiplies and adds of two
/// [`dot8x8`]).
///
/// # Safety
/// `q0`, `q1` are valid for `hd` reads and each key for `hd` reads; the caller enables AVX2,
/// AVX512F and AVX512VL (always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot8x8_pair(
    q0: *const f32,
    q1: *const f32,
    k: *const f32,
    stride: usize,
    hd: usize,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); 8];
        for c in (0..hd).step_by(8) {
            let qv = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(q0.add(c)))),
                _mm256_castps_pd(_mm256_loadu_ps(q1.add(c))),
            ));
            for (j, a) in acc.iter_mut().enumerate() {
                let kv = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(
                    k.add(j * stride + c),
                ))));
                *a = _mm512_add_ps(*a, _mm512_mul_ps(qv, kv));
            }
        }
        // 128-bit lanes of a vector: [h0.lo, h0.hi, h1.lo, h1.hi]. t = lo + hi per head, two
        // vectors per result: [t(a, h0), t(a, h1), t(b, h0), t(b, h1)].
        let (mut t, mut u) = ([_mm512_setzero_ps(); 4], [_mm512_setzero_ps(); 2]);
        for (p, t) in t.iter_mut().enumerate() {
            let (a, b) = (acc[2 * p], acc[2 * p + 1]);
            *t = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            );
        }
        // u = [t_0 + t_2, t_1 + t_3] per vector, in each 128-bit lane: lanes 0, 1 hold vectors
        // 2p and 2p + 2 (heads 0, 1), lanes 2, 3 vectors 2p + 1 and 2p + 3.
        for (r, u) in u.iter_mut().enumerate() {
            let (a, b) = (t[2 * r], t[2 * r + 1]);
            *u = _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
                _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
            );
        }
        let sum = _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(u[0], u[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(u[0], u[1]),
        );
        // Lane k of 128-bit lane L: head L % 2, vector 2 · (L / 2) + ... (see above); in order.
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), sum)
    }
}

/// The value step of [`attend_x86`] for `H` heads (outputs at `op`, head `h` at `op + h · hd`)
/// over `len` keys (values at `vp + i · stride`): per key, each head's output is rescaled by its
/// `shrink` when that is not 1, then gets `weight · value` added (a multiply and an add, no
/// FMA), 64 or 32 columns at a time (`W512`: 4 vectors of 16, otherwise of 8), then 8. Every
/// output element sees exactly the portable loop's operations in the same order.
///
/// # Safety
/// The reads and writes are in bounds (as [`attend_x86`]'s); the caller enables AVX2, and with
/// `W512` AVX512F/VL (always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pv_heads<const H: usize, const W512: bool>(
    op: *mut f32,
    hd: usize,
    vp: *const f32,
    stride: usize,
    len: usize,
    shrink: &[[f32; KEY_CHUNK]],
    weight: &[[f32; KEY_CHUNK]],
) {
    use std::arch::x86_64::{__m256, __m512};
    let at = PvAt { op, hd, vp, stride, len };
    // SAFETY: the caller's contract; each block covers columns c..c + width ≤ hd.
    unsafe {
        let mut c = 0;
        if W512 {
            while c + 64 <= hd {
                pv_block::<__m512, H, 4>(at, c, shrink, weight);
                c += 64;
            }
        }
        while c + 32 <= hd {
            pv_block::<__m256, H, 4>(at, c, shrink, weight);
            c += 32;
        }
        while c < hd {
            pv_block::<__m256, H, 1>(at, c, shrink, weight);
            c += 8;
        }
    }
}

/// Where [`pv_heads`] reads and writes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct PvAt {
    op: *mut f32,
    hd: usize,
    vp: *const f32,
    stride: usize,
    len: usize,
}

/// [`pv_heads`] for the `X · V::LANES` columns from `c`: the heads' outputs in `H × X`
/// registers over all the keys, each value vector loaded once for all heads.
///
/// # Safety
/// As [`pv_heads`], with `c + X · V::LANES ≤ hd`; the caller enables `V`'s features (always
/// inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pv_block<V: F32Lanes, const H: usize, const X: usize>(
    at: PvAt,
    c: usize,
    shrink: &[[f32; KEY_CHUNK]],
    weight: &[[f32; KEY_CHUNK]],
) {
    let PvAt { op, hd, vp, stride, len } = at;
    // SAFETY: the caller's contract.
    unsafe {
        let mut o = [[V::zero(); X]; H];
        for (h, o) in o.iter_mut().enumerate() {
            for (x, o) in o.iter_mut().enumerate() {
                *o = V::load(op.add(h * hd + c + V::LANES * x));
            }
        }
        for i in 0..len {
            let val = vp.add(i * stride + c);
            let mut vv = [V::zero(); X];
            for (x, vv) in vv.iter_mut().enumerate() {
                *vv = V::load(val.add(V::LANES * x));
            }
            for (h, o) in o.iter_mut().enumerate() {
                if shrink[h][i] != 1.0 {
                    let sv = V::splat(shrink[h][i]);
                    for o in o.iter_mut() {
                        *o = o.mul(sv);
                    }
                }
                let pv = V::splat(weight[h][i]);
                for (o, &vv) in o.iter_mut().zip(&vv) {
                    *o = o.add(pv.mul(vv));
                }
            }
        }
        for (h, o) in o.iter().enumerate() {
            for (x, o) in o.iter().enumerate() {
                o.store(op.add(h * hd + c + V::LANES * x));
            }
        }
    }
}

/// The f32 vector operations [`pv_block`] needs, for 256- and 512-bit vectors.
///
/// # Safety (every method)
/// The pointers are valid for `LANES` floats; the caller enables the vector's features (the
/// methods are always inlined into it).
#[cfg(target_arch = "x86_64")]
trait F32Lanes: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(x: f32) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
}

/// [`F32Lanes`] for one vector type, from its intrinsics.
#[cfg(target_arch = "x86_64")]
macro_rules! f32_lanes {
    ($ty:ident, $lanes:expr, $zero:ident, $load:ident, $store:ident, $splat:ident, $mul:ident, $add:ident) => {
        impl F32Lanes for std::arch::x86_64::$ty {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn zero() -> Self {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$zero() }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$load(p) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$store(p, self) }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$splat(x) }
            }
            #[inline(always)]
            unsafe fn mul(self, b: Self) -> Self {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$mul(self, b) }
            }
            #[inline(always)]
            unsafe fn add(self, b: Self) -> Self {
                // SAFETY: the trait's contract.
                unsafe { std::arch::x86_64::$add(self, b) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
f32_lanes!(
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_mul_ps,
    _mm256_add_ps
);
#[cfg(target_arch = "x86_64")]
f32_lanes!(
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_mul_ps,
    _mm512_add_ps
);

/// [`attend_x86`] with 256-bit exponentials.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    scale: f32,
    st: &mut Softmax,
    out: &mut [f32],
) {
    // SAFETY: this function enables the features `attend_x86::<false>` needs.
    unsafe { attend_x86::<false>(q, hd, k, v, stride, count, scale, st, out) }
}

/// [`attend_x86`] with the exponentials in 512-bit vectors (the same bits).
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX512F/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx512(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    scale: f32,
    st: &mut Softmax,
    out: &mut [f32],
) {
    // SAFETY: this function enables the features `attend_x86::<true>` needs.
    unsafe { attend_x86::<true>(q, hd, k, v, stride, count, scale, st, out) }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn attend_portable(
    q: &[f32],
    hd: usize,
    k: &[f32],
    v: &[f32],
    stride: usize,
    count: usize,
    scale: f32,
    st: &mut Softmax,
    out: &mut [f32],
) {
    let heads = (q.len() / hd).min(GROUP_MAX);
    let mut scores = [[0.0f32; KEY_CHUNK]; GROUP_MAX];
    let mut start = 0;
    while start < count {
        let len = KEY_CHUNK.min(count - start);
        for i in 0..len {
            let at = (start + i) * stride;
            let key = &k[at..at + hd];
            for (h, qh) in q.chunks_exact(hd).take(heads).enumerate() {
                scores[h][i] = dot(qh, key) * scale;
            }
        }
        for i in 0..len {
            let at = (start + i) * stride;
            let val = &v[at..at + hd];
            for (h, oh) in out.chunks_exact_mut(hd).take(heads).enumerate() {
                let score = scores[h][i];
                if score > st.m[h] {
                    let shrink = exp(st.m[h] - score);
                    st.sum[h] *= shrink;
                    oh.iter_mut().for_each(|o| *o *= shrink);
                    st.m[h] = score;
                }
                let p = exp(score - st.m[h]);
                st.sum[h] += p;
                oh.iter_mut().zip(val).for_each(|(o, &v)| *o += p * v);
            }
        }
        start += len;
    }
}

/// `Σ a_i · b_i` in 8 lanes (lane l sums the elements `≡ l mod 8`, in order) reduced in
/// a fixed order: independent lanes the compiler vectorizes, where
/// one running sum is a chain of dependent adds. Same bits on every CPU.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[l] += x * y;
    }
    let t = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// `g = silu(g) · u` elementwise, in parallel chunks when there are enough elements for the
/// threads to pay (a batched step of SmolLM2 has 6 · 1536 per layer, each an `exp`); every
/// element's operations are the same whichever thread runs it, and with `avx2` 8 at a time
/// ([`silu_mul_avx2`], the same operations as [`silu_mul_portable`]).
fn silu_mul(g: &mut [f32], u: &[f32], pool: &ThreadPool, avx2: bool) -> Result<()> {
    const CHUNK: usize = 2048;
    let f = |g: &mut [f32], u: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: `avx2` is true only when `Isa::detect()` found AVX2, FMA and F16C; the
            // AVX-512 build runs only where `has_avx512` found AVX512F/VL.
            unsafe {
                if crate::ops::cpu::exp::avx2::has_avx512() {
                    silu_mul_avx512(g, u);
                } else {
                    silu_mul_avx2(g, u);
                }
            }
            return;
        }
        let _ = avx2;
        silu_mul_portable(g, u);
    };
    if pool.threads() < 2 || g.len() < 2 * CHUNK {
        f(g, u);
        return Ok(());
    }
    let len = g.len();
    let gp = SharedOut(g.as_mut_ptr());
    let gp = &gp;
    pool.run(len.div_ceil(CHUNK), &|t| {
        let (a, b) = (t * CHUNK, (t * CHUNK + CHUNK).min(len));
        // SAFETY: task t alone writes g[a..b] (disjoint per t), and `g` is borrowed mutably
        // for the whole call.
        let g = unsafe { std::slice::from_raw_parts_mut(gp.0.add(a), b - a) };
        f(g, &u[a..b]);
    })
}

/// `g = g / (1 + exp(−g)) · u` per element ([`exp`]).
fn silu_mul_portable(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// [`silu_mul_portable`] 8 elements at a time (`exp8` is `exp` lane for lane, and so is
/// `exp8_avx512` with `W512`; the negation, add, divide and multiply are the same IEEE
/// operations), the rest by the portable loop.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C, and with `W512` AVX512F/VL; the caller enables them (this
/// is always inlined).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn silu_mul_x86<const W512: bool>(g: &mut [f32], u: &[f32]) {
    use crate::ops::cpu::exp::avx2::exp8_either;
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    let exp8 = |x: __m256| unsafe { exp8_either::<W512>(x) };
    let len = g.len().min(u.len());
    let whole = len / 8 * 8;
    let (gp, up) = (g.as_mut_ptr(), u.as_ptr());
    let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 ≤ len, inside both slices.
        unsafe {
            let x = _mm256_loadu_ps(gp.add(i));
            let e = exp8(_mm256_xor_ps(x, sign));
            let y = _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(up.add(i)));
            _mm256_storeu_ps(gp.add(i), y);
        }
    }
    silu_mul_portable(&mut g[whole..len], &u[whole..len]);
}

/// [`silu_mul_x86`] with 256-bit exponentials.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    // SAFETY: this function enables the features `silu_mul_x86::<false>` needs.
    unsafe { silu_mul_x86::<false>(g, u) }
}

/// [`silu_mul_x86`] with the exponentials in 512-bit vectors (the same bits).
///
/// # Safety
/// The CPU has AVX2, FMA, F16C and AVX512F/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
unsafe fn silu_mul_avx512(g: &mut [f32], u: &[f32]) {
    // SAFETY: this function enables the features `silu_mul_x86::<true>` needs.
    unsafe { silu_mul_x86::<true>(g, u) }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2) (xorshift64*), so the test needs no RNG crate.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// The attention kernels.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kernel {
        Portable,
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        Avx2,
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        Avx512,
    }

    /// Attention of `heads` query heads over `count` keys, split into calls at `splits`, then
    /// normalized, with `kernel`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        q: &[f32],
        hd: usize,
        k: &[f32],
        v: &[f32],
        stride: usize,
        count: usize,
        splits: &[usize],
        kernel: Kernel,
    ) -> Vec<f32> {
        let heads = q.len() / hd;
        let mut st = Softmax { m: [f32::NEG_INFINITY; GROUP_MAX], sum: [0.0; GROUP_MAX] };
        let mut out = vec![0.0f32; heads * hd];
        let mut at = 0;
        for &end in splits.iter().chain(std::iter::once(&count)) {
            let (k, v) = (&k[at * stride..], &v[at * stride..]);
            let scale = 1.0 / (hd as f32).sqrt();
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the test picks the AVX2 and AVX-512 kernels only where the CPU has them.
                Kernel::Avx2 => unsafe {
                    attend_avx2(q, hd, k, v, stride, end - at, scale, &mut st, &mut out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Kernel::Avx512 => unsafe {
                    attend_avx512(q, hd, k, v, stride, end - at, scale, &mut st, &mut out)
                },
                _ => attend_portable(q, hd, k, v, stride, end - at, scale, &mut st, &mut out),
            }
            at = end;
        }
        for (o, &sum) in out.chunks_exact_mut(hd).zip(&st.sum) {
            o.iter_mut().for_each(|o| *o /= sum);
        }
        out
    }

    /// The parallel (and, where the CPU has it, AVX2) SiLU gives the portable serial loop's
    /// bits, with chunks that do not divide the length, below the parallel threshold, and with
    /// gates where `e^−g` overflows or rounds to zero; the portable loop is within 1e-6
    /// relative of the f64 `g / (1 + e^−g) · u` (a few ulp), or 1e-30 absolute where a gate
    /// below −88.7 makes `e^−g` overflow (exact results there are below 1e-36).
    #[test]
    fn silu_mul_in_parallel_equals_serial() {
        let pool = ThreadPool::new(2).unwrap();
        for len in [10, 4095, 4096, 9217] {
            let mut g0: Vec<f32> = values(len as u64, len).iter().map(|x| x * 8.0).collect();
            for (g, x) in g0.iter_mut().step_by(7).zip([-100.0, -88.5, 87.5, 95.0, -0.0, 1e-30]) {
                *g = x;
            }
            let u = values(len as u64 + 1, len);
            let mut serial = g0.clone();
            silu_mul_portable(&mut serial, &u);
            for ((&g, &u), &got) in g0.iter().zip(&u).zip(&serial) {
                let (g, u) = (g as f64, u as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!(
                    (got as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                    "silu({g}) · {u}: {got} vs {want}"
                );
            }
            let mut par = g0.clone();
            silu_mul(&mut par, &u, &pool, crate::ops::Isa::detect().avx2()).unwrap();
            assert_eq!(
                par.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                serial.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "len {len}"
            );
        }
    }

    /// The bench entry point is the kernel the decoder runs (normalized as `forward` does) and
    /// refuses shapes that do not fit with an error instead of reading out of bounds.
    #[test]
    fn attend_heads_is_the_kernel_and_checks_shapes() {
        let (hd, heads, count, kvd) = (64, 3, 45, 200);
        let q = values(5, heads * hd);
        let (k, v) = (values(6, count * kvd), values(7, count * kvd));
        let mut out = vec![0.0f32; heads * hd];
        attend_heads(&q, hd, &k, &v, kvd, count, &mut out).unwrap();
        // The portable kernel, normalized as `forward` does (by the reciprocal of the sum).
        let mut st = Softmax { m: [f32::NEG_INFINITY; GROUP_MAX], sum: [0.0; GROUP_MAX] };
        let mut want = vec![0.0f32; heads * hd];
        attend_portable(&q, hd, &k, &v, kvd, count, 1.0 / (hd as f32).sqrt(), &mut st, &mut want);
        st.normalize(&mut want, hd);
        assert_eq!(
            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        let short = &k[..(count - 1) * kvd + hd - 1];
        let e = attend_heads(&q, hd, short, &v, kvd, count, &mut out).unwrap_err().to_string();
        assert!(e.contains("45 keys of stride 200"), "{e}");
        let e = attend_heads(&q, 0, &k, &v, kvd, count, &mut out).unwrap_err().to_string();
        assert!(e.contains("head dim 0"), "{e}");
        let e = attend_heads(&values(1, 9 * hd), hd, &k, &v, kvd, count, &mut vec![0.0; 9 * hd]).unwrap_err();
        assert!(e.to_string().contains("1 to 8 heads"), "{e}");
        assert!(attend_heads(&q, hd, &k, &v, kvd, count, &mut out[..hd]).is_err());
    }

    /// The AVX2 and AVX-512 kernels give the portable kernel's bits (head dims with and without
    /// 64-, 32- and 16-column blocks and a half block, every key count around the 8-key groups
    /// and the chunk, keys split across calls),
    /// and both agree with an f64 softmax within 4e-6 absolute + 1e-5 relative (values are in ±2).
    #[test]
    fn attend_kernels_agree_bit_for_bit_and_with_f64() {
        let avx2 = crate::ops::Isa::detect().avx2();
        #[cfg(target_arch = "x86_64")]
        let avx512 = avx2 && crate::ops::cpu::exp::avx2::has_avx512();
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        let simd: Vec<Kernel> = [(avx2, Kernel::Avx2), (avx512, Kernel::Avx512)]
            .into_iter()
            .filter_map(|(has, k)| has.then_some(k))
            .collect();
        let mut seed = 1;
        for hd in [8, 16, 24, 64, 72, 96, 128] {
            for heads in [1, 3, 8] {
                for count in [1, 2, 7, 8, 9, 31, 32, 33, 40, 71, 100] {
                    seed += 1;
                    let kvd = hd * 2 + 8; // a row stride wider than one head, as with GQA
                    let q = values(seed, heads * hd);
                    // Larger keys on some seeds so the running max moves often.
                    let amp = if seed % 2 == 0 { 1.0 } else { 6.0 };
                    let k: Vec<f32> = values(seed + 1000, count * kvd).iter().map(|x| x * amp).collect();
                    let v = values(seed + 2000, count * kvd);
                    let splits: Vec<usize> = [count / 3, count / 2].into_iter().filter(|&s| s > 0).collect();
                    let port = run(&q, hd, &k, &v, kvd, count, &splits, Kernel::Portable);
                    let one = run(&q, hd, &k, &v, kvd, count, &[], Kernel::Portable);
                    assert_eq!(
                        port.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        one.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "split keys changed the bits (hd {hd}, heads {heads}, count {count})"
                    );
                    for &kernel in &simd {
                        let fast = run(&q, hd, &k, &v, kvd, count, &splits, kernel);
                        assert_eq!(
                            fast.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            port.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            "{kernel:?} and portable attention differ (hd {hd}, heads {heads}, count {count})"
                        );
                    }
                    for h in 0..heads {
                        let qh = &q[h * hd..(h + 1) * hd];
                        let s: Vec<f64> = (0..count)
                            .map(|i| {
                                let key = &k[i * kvd..i * kvd + hd];
                                qh.iter().zip(key).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                                    / (hd as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        for c in 0..hd {
                            let want: f64 =
                                (0..count).map(|i| (s[i] - m).exp() / z * v[i * kvd + c] as f64).sum();
                            let got = port[h * hd + c] as f64;
                            assert!(
                                (got - want).abs() <= 4e-6 + 1e-5 * want.abs(),
                                "hd {hd} heads {heads} count {count} head {h} col {c}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
