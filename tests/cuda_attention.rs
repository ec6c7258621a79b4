//! Parity tests of the CUDA attention kernels (`kernels/attention.cu`, `kernels/kv_attention.cu`,
//! launchers in `medregion::backend::cuda::ops::attention`). Every test needs a CUDA device and
//! is ignored otherwise; `scripts/gpu-check.sh` runs them with `--include-ignored`.
//!
//! Fresh seeded random inputs (normal, q/k scale 1.5 so softmax is far from uniform), odd sizes
//! (token counts and key ranges that are not multiples of the 64-wide tiles and chunks, single
//! tokens), head widths 64 and 128, GQA ratios 1 and 4, with and without a shared prefix.
//!
//! Tolerances, per (op, dtype), metric `rel = max |got − ref| / max |ref|` over the whole output
//! (`vision::tolerance::rel_errors`):
//!
//! | op                                 | dtype | reference                          | budget           |
//! |------------------------------------|-------|------------------------------------|------------------|
//! | `attention_encoder`                | f32   | `vision::attention` (CPU twin)     | bit-identical    |
//! | `attention_encoder`                | f32   | `vision::reference::attention_f64` | `max_rel(Attention)` = 2e-6 |
//! | `kv_store`                         | f32   | the same copy on the host          | bit-identical    |
//! | `kv_prefill_attention`             | f32   | f64 attention in this file         | [`KV_ATTENTION_REL`] |
//! | `kv_decode_attention`              | f32   | f64 attention in this file         | [`KV_ATTENTION_REL`] |
//! | decode, run twice / graph replay   | f32   | itself                             | bit-identical    |
//!
//! The decoder kernels are not bit-identical to the CPU's `llm::forward` (libm `exp`, key-at-a-time
//! online softmax) and that function is crate-private, hence the f64 oracle written here with the
//! CPU's semantics (prefix positions `0..P`, own slots `0..=pos − P`, kv head `h / group`).

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::gpu;

use cudarc::driver::CudaSlice;
use medregion::backend::cuda::ops::attention::{
    attention_encoder, kv_decode_attention, kv_decode_workspace_len, kv_prefill_attention, kv_store, KvCache,
    KvCacheMut, KvDims, KvPositions, KvRows,
};
use medregion::backend::cuda::Gpu;
use medregion::ops::ThreadPool;
use medregion::vision::reference::attention_f64;
use medregion::vision::tolerance::{max_rel, rel_errors, VisionOp};
use medregion::vision::{attention, AttentionShape};
use medregion::Error;

/// Budget of the decoder kernels against the f64 oracle: f32 dot products of ≤ 128 terms, a
/// softmax over ≤ 300 keys (2-ulp `exp`, f32 sums) and the chunk combine; the measured error is
/// expected near 10⁻⁶, so 10⁻⁵ leaves margin without hiding a wrong key range (which costs ~10⁻¹).
const KV_ATTENTION_REL: f64 = 1e-5;

/// SplitMix64 with Box–Muller normals: seeded, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn randn(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..n).map(|_| (rng.normal() * scale) as f32).collect()
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

// ------------------------------------------------------------------------------------------------
// Encoder.

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn encoder_attention_is_the_cpu_kernel_bit_for_bit() {
    let gpu = gpu();
    let pool = ThreadPool::new(2).unwrap();
    // (n_seq, T, heads, hd, also against f64): T = 1, tails of 1 and 13 past a tile, two and
    // three tiles, the 224-px ViT's 257 tokens; hd 64 and 128.
    let cases = [
        (1, 1, 1, 64, true),
        (2, 5, 3, 64, true),
        (3, 64, 2, 64, true),
        (2, 65, 2, 64, true),
        (2, 77, 3, 64, true),
        (1, 130, 4, 64, true),
        (2, 257, 2, 64, false),
        (1, 1, 2, 128, true),
        (2, 77, 2, 128, true),
        (1, 150, 3, 128, true),
    ];
    for (i, &(n_seq, t, heads, hd, vs_f64)) in cases.iter().enumerate() {
        let shape = AttentionShape { n_seq, n_tokens: t, n_heads: heads, head_dim: hd };
        let len = n_seq * t * heads * hd;
        let seed = 100 + 10 * i as u64;
        let (q, k, v) = (randn(seed, len, 1.5), randn(seed + 1, len, 1.5), randn(seed + 2, len, 1.0));
        let mut want = vec![f32::NAN; len];
        attention(&q, &k, &v, &mut want, shape, &pool).unwrap();

        let (dq, dk, dv) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap(), gpu.upload(&v).unwrap());
        let mut dout = gpu.upload(&vec![f32::NAN; len]).unwrap();
        attention_encoder(&gpu, &dq, &dk, &dv, &mut dout, shape).unwrap();
        let got = gpu.download(&dout).unwrap();
        let mismatches = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        let (rel_cpu, _) = rel_errors(&got, &want.iter().map(|&x| x as f64).collect::<Vec<_>>());
        assert_eq!(
            mismatches, 0,
            "{shape:?}: {mismatches} of {len} values differ from the CPU (rel {rel_cpu:e})"
        );
        if vs_f64 {
            let reference = attention_f64(&q, &k, &v, n_seq, t, heads, hd);
            let (rel, rms) = rel_errors(&got, &reference);
            assert!(
                rel < max_rel(VisionOp::Attention).unwrap(),
                "{shape:?}: rel {rel:e} (rms {rms:e}) vs f64"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn encoder_attention_rejects_bad_shapes_without_launching() {
    let gpu = gpu();
    let shape = AttentionShape { n_seq: 2, n_tokens: 3, n_heads: 2, head_dim: 64 };
    let len = 2 * 3 * 2 * 64;
    let x = gpu.upload(&vec![1.0f32; len]).unwrap();
    let short = gpu.upload(&vec![1.0f32; len - 1]).unwrap();
    let mut out = gpu.upload(&vec![7.0f32; len]).unwrap();
    assert!(matches!(attention_encoder(&gpu, &short, &x, &x, &mut out, shape), Err(Error::Shape { .. })));
    assert!(matches!(attention_encoder(&gpu, &x, &x, &short, &mut out, shape), Err(Error::Shape { .. })));
    let mut short_out = gpu.upload(&vec![7.0f32; len - 1]).unwrap();
    assert!(attention_encoder(&gpu, &x, &x, &x, &mut short_out, shape).is_err());
    // Head width 32: not compiled.
    let hd32 = AttentionShape { n_seq: 2, n_tokens: 3, n_heads: 4, head_dim: 32 };
    assert!(matches!(attention_encoder(&gpu, &x, &x, &x, &mut out, hd32), Err(Error::Unsupported(_))));
    let zero_heads = AttentionShape { n_seq: 2, n_tokens: 3, n_heads: 0, head_dim: 64 };
    assert!(matches!(
        attention_encoder(&gpu, &x, &x, &x, &mut out, zero_heads),
        Err(Error::InvalidArgument { .. })
    ));
    // Nothing ran.
    assert!(gpu.download(&out).unwrap().iter().all(|&v| v == 7.0));
}

// ------------------------------------------------------------------------------------------------
// Decoder: a host model of the device caches and the f64 oracle.

/// Host copy of a device cache: `[n_seqs, n_layers, capacity, kv_dim]` keys and values.
struct HostKv {
    dims: KvDims,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl HostKv {
    /// Every slot random (so a kernel that reads past a valid range sees garbage, not zeros).
    fn random(dims: KvDims, seed: u64) -> HostKv {
        let n = dims.elements().unwrap();
        HostKv { dims, k: randn(seed, n, 1.5), v: randn(seed + 1, n, 1.0) }
    }

    fn at(&self, seq: usize, layer: usize, slot: usize) -> usize {
        ((seq * self.dims.n_layers + layer) * self.dims.capacity + slot) * self.dims.kv_dim()
    }

    /// Key and value of kv head `kvh` at (seq, layer, slot).
    fn kv(&self, seq: usize, layer: usize, slot: usize, kvh: usize) -> (&[f32], &[f32]) {
        let o = self.at(seq, layer, slot) + kvh * self.dims.head_dim;
        let hd = self.dims.head_dim;
        (&self.k[o..o + hd], &self.v[o..o + hd])
    }

    /// What `kv_store` does: row `r` of `k_new`/`v_new` to sequence `seq0 + r / tokens`, slot
    /// `pos[seq] − plen + r % tokens` (skipped outside the cache).
    fn store(&mut self, k_new: &[f32], v_new: &[f32], rows: KvRows, pos: &[i32], plen: i32) {
        let kvd = self.dims.kv_dim();
        for r in 0..rows.n_seq * rows.tokens {
            let seq = rows.seq0 + r / rows.tokens;
            let slot = pos[seq] as i64 - plen as i64 + (r % rows.tokens) as i64;
            if slot < 0 || slot >= self.dims.capacity as i64 {
                continue;
            }
            let o = self.at(seq, rows.layer, slot as usize);
            self.k[o..o + kvd].copy_from_slice(&k_new[r * kvd..(r + 1) * kvd]);
            self.v[o..o + kvd].copy_from_slice(&v_new[r * kvd..(r + 1) * kvd]);
        }
    }

    fn upload(&self, gpu: &Gpu) -> (CudaSlice<f32>, CudaSlice<f32>) {
        (gpu.upload(&self.k).unwrap(), gpu.upload(&self.v).unwrap())
    }
}

/// `softmax(q·kᵀ/√hd)·v` over `keys` in f64.
fn attend_f64(q: &[f32], keys: &[(&[f32], &[f32])]) -> Vec<f64> {
    let hd = q.len();
    let scale = 1.0 / (hd as f64).sqrt();
    let scores: Vec<f64> = keys
        .iter()
        .map(|(k, _)| q.iter().zip(*k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale)
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut out = vec![0.0f64; hd];
    for (wj, (_, v)) in w.iter().zip(keys) {
        for (o, &x) in out.iter_mut().zip(*v) {
            *o += wj / total * x as f64;
        }
    }
    out
}

/// The oracle for one query row: token at absolute position `p` of sequence `seq`, query head
/// `h`, layer `layer`: prefix positions `0..plen`, own slots `0..=p − plen`.
#[allow(clippy::too_many_arguments)]
fn reference_row(
    q: &[f32],
    own: &HostKv,
    prefix: Option<&HostKv>,
    plen: usize,
    seq: usize,
    layer: usize,
    p: usize,
    kvh: usize,
) -> Vec<f64> {
    let mut keys = Vec::new();
    if let Some(pre) = prefix {
        for j in 0..plen {
            keys.push(pre.kv(0, layer, j, kvh));
        }
    }
    for j in 0..=(p - plen) {
        keys.push(own.kv(seq, layer, j, kvh));
    }
    attend_f64(q, &keys)
}

/// The oracle of a decode step: row `s` of `q` (`[n_seq, nh · hd]`) is sequence `s` at `pos[s]`.
fn decode_reference(
    q: &[f32],
    own: &HostKv,
    prefix: Option<&HostKv>,
    plen: usize,
    pos: &[i32],
    layer: usize,
    nh: usize,
) -> Vec<f64> {
    let hd = own.dims.head_dim;
    let group = nh / own.dims.n_kv_heads;
    let mut reference = Vec::with_capacity(q.len());
    for (s, &p) in pos.iter().enumerate() {
        for h in 0..nh {
            let at = (s * nh + h) * hd;
            reference.extend(reference_row(
                &q[at..at + hd],
                own,
                prefix,
                plen,
                s,
                layer,
                p as usize,
                h / group,
            ));
        }
    }
    reference
}

/// (head_dim, n_heads, n_kv_heads): head widths 64 and 128, GQA ratios 1 and 4.
const HEADS: [(usize, usize, usize); 4] = [(64, 4, 4), (64, 8, 2), (128, 8, 2), (128, 3, 3)];

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn store_then_prefill_matches_f64() {
    let gpu = gpu();
    let mut case = 0u64;
    for &(hd, nh, nkv) in &HEADS {
        // (new tokens, prefix length, first own slot of sequence seq0): 1 token; a prefix that
        // is not a multiple of 64 and a chunk after earlier tokens; tokens·group past a 64-row
        // block; 130 tokens after a prefix of 100.
        for &(tokens, plen, own0) in &[(1usize, 0usize, 0usize), (7, 37, 5), (70, 0, 3), (130, 100, 0)] {
            case += 1;
            let group = nh / nkv;
            let layers = 2;
            let dims = KvDims {
                n_seqs: 3,
                n_layers: layers,
                capacity: own0 + tokens + 6,
                n_kv_heads: nkv,
                head_dim: hd,
            };
            let pdims =
                KvDims { n_seqs: 1, n_layers: layers, capacity: plen + 9, n_kv_heads: nkv, head_dim: hd };
            let rows = KvRows { layer: 1, seq0: 1, n_seq: 2, tokens };
            // Sequence 1 starts at own slot own0, sequence 2 at own0 + 1; sequence 0 is unused.
            let pos = [0i32, (plen + own0) as i32, (plen + own0 + 1) as i32];
            let mut own = HostKv::random(dims, 1000 * case);
            let prefix = (plen > 0).then(|| HostKv::random(pdims, 1000 * case + 7));
            let kvd = nkv * hd;
            let n_rows = rows.n_seq * tokens;
            let k_new = randn(1000 * case + 11, n_rows * kvd, 1.5);
            let v_new = randn(1000 * case + 12, n_rows * kvd, 1.0);
            let q = randn(1000 * case + 13, n_rows * nh * hd, 1.5);

            let (mut dk, mut dv) = own.upload(&gpu);
            let dprefix = prefix.as_ref().map(|p| p.upload(&gpu));
            let dpos = gpu.upload(&pos).unwrap();
            let dplen = gpu.upload(&[plen as i32]).unwrap();
            let positions = KvPositions { pos: &dpos, prefix_len: &dplen };
            let (dkn, dvn, dq) =
                (gpu.upload(&k_new).unwrap(), gpu.upload(&v_new).unwrap(), gpu.upload(&q).unwrap());
            let mut dout = gpu.upload(&vec![f32::NAN; q.len()]).unwrap();
            let pcap = if plen > 0 { pdims.capacity } else { 0 };
            kv_store(
                &gpu,
                &dkn,
                &dvn,
                &mut KvCacheMut { k: &mut dk, v: &mut dv, dims },
                pcap,
                rows,
                positions,
            )
            .unwrap();
            let cache = KvCache { k: &dk, v: &dv, dims };
            let pcache = dprefix.as_ref().map(|(k, v)| KvCache { k, v, dims: pdims });
            kv_prefill_attention(&gpu, &dq, &mut dout, cache, pcache, nh, rows, positions).unwrap();
            let got = gpu.download(&dout).unwrap();

            own.store(&k_new, &v_new, rows, &pos, plen as i32);
            let what = format!("hd {hd}, {nh}/{nkv} heads, {tokens} tokens, prefix {plen}, own start {own0}");
            assert_eq!(bits(&gpu.download(&dk).unwrap()), bits(&own.k), "{what}: cached keys");
            assert_eq!(bits(&gpu.download(&dv).unwrap()), bits(&own.v), "{what}: cached values");
            let mut reference = Vec::with_capacity(q.len());
            for s in 0..rows.n_seq {
                let seq = rows.seq0 + s;
                for t in 0..tokens {
                    for h in 0..nh {
                        let at = ((s * tokens + t) * nh + h) * hd;
                        let p = pos[seq] as usize + t;
                        reference.extend(reference_row(
                            &q[at..at + hd],
                            &own,
                            prefix.as_ref(),
                            plen,
                            seq,
                            rows.layer,
                            p,
                            h / group,
                        ));
                    }
                }
            }
            let (rel, rms) = rel_errors(&got, &reference);
            assert!(rel < KV_ATTENTION_REL, "{what}: prefill rel {rel:e} (rms {rms:e})");
        }
    }
}

/// One decode step on the device: store the new rows, attend; returns the output.
#[allow(clippy::too_many_arguments)]
fn decode_once(
    gpu: &Gpu,
    own: &HostKv,
    prefix: Option<&HostKv>,
    pos: &[i32],
    plen: usize,
    nh: usize,
    k_new: &[f32],
    v_new: &[f32],
    q: &[f32],
    layer: usize,
) -> (Vec<f32>, Vec<f32>) {
    let dims = own.dims;
    let n_seq = pos.len();
    let (mut dk, mut dv) = own.upload(gpu);
    let dprefix = prefix.map(|p| p.upload(gpu));
    let dpos = gpu.upload(pos).unwrap();
    let dplen = gpu.upload(&[plen as i32]).unwrap();
    let positions = KvPositions { pos: &dpos, prefix_len: &dplen };
    let (dkn, dvn, dq) = (gpu.upload(k_new).unwrap(), gpu.upload(v_new).unwrap(), gpu.upload(q).unwrap());
    let pcap = prefix.map_or(0, |p| p.dims.capacity);
    let rows = KvRows { layer, seq0: 0, n_seq, tokens: 1 };
    kv_store(gpu, &dkn, &dvn, &mut KvCacheMut { k: &mut dk, v: &mut dv, dims }, pcap, rows, positions)
        .unwrap();
    let ws_len = kv_decode_workspace_len(&dims, prefix.map(|p| &p.dims), n_seq, nh).unwrap();
    let mut ws = gpu.upload(&vec![f32::NAN; ws_len]).unwrap();
    let cache = KvCache { k: &dk, v: &dv, dims };
    let pcache = dprefix.as_ref().map(|(k, v)| KvCache { k, v, dims: prefix.unwrap().dims });
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut dout = gpu.upload(&vec![f32::NAN; q.len()]).unwrap();
        kv_decode_attention(gpu, &dq, &mut dout, cache, pcache, nh, layer, n_seq, positions, &mut ws)
            .unwrap();
        outs.push(gpu.download(&dout).unwrap());
    }
    let second = outs.pop().unwrap();
    (outs.pop().unwrap(), second)
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn decode_matches_f64_and_is_deterministic() {
    let gpu = gpu();
    let mut case = 0u64;
    for &(hd, nh, nkv) in &HEADS {
        // (prefix length, own lengths after the new token): 8 sequences of 1..200 keys across
        // chunk boundaries (63, 64, 65, 129); a prefix of 100 (two chunks, the second partial);
        // one sequence of 5 after a prefix of 37.
        let plans: [(usize, &[usize]); 3] =
            [(0, &[1, 2, 63, 64, 65, 130, 7, 200]), (100, &[1, 64, 129, 3]), (37, &[5])];
        for &(plen, lens) in &plans {
            case += 1;
            let n_seq = lens.len();
            let layers = 3;
            let layer = 2;
            let dims =
                KvDims { n_seqs: n_seq + 1, n_layers: layers, capacity: 210, n_kv_heads: nkv, head_dim: hd };
            let pdims = KvDims { n_seqs: 1, n_layers: layers, capacity: 130, n_kv_heads: nkv, head_dim: hd };
            let mut own = HostKv::random(dims, 5000 + 100 * case);
            let prefix = (plen > 0).then(|| HostKv::random(pdims, 5000 + 100 * case + 7));
            let pos: Vec<i32> = lens.iter().map(|&l| (plen + l - 1) as i32).collect();
            let kvd = nkv * hd;
            let k_new = randn(5000 + 100 * case + 11, n_seq * kvd, 1.5);
            let v_new = randn(5000 + 100 * case + 12, n_seq * kvd, 1.0);
            let q = randn(5000 + 100 * case + 13, n_seq * nh * hd, 1.5);
            let (got, again) =
                decode_once(&gpu, &own, prefix.as_ref(), &pos, plen, nh, &k_new, &v_new, &q, layer);
            let what = format!("hd {hd}, {nh}/{nkv} heads, prefix {plen}, lengths {lens:?}");
            assert_eq!(bits(&got), bits(&again), "{what}: two runs differ");

            own.store(&k_new, &v_new, KvRows { layer, seq0: 0, n_seq, tokens: 1 }, &pos, plen as i32);
            let reference = decode_reference(&q, &own, prefix.as_ref(), plen, &pos, layer, nh);
            let (rel, rms) = rel_errors(&got, &reference);
            assert!(rel < KV_ATTENTION_REL, "{what}: decode rel {rel:e} (rms {rms:e})");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn decode_step_captured_once_replays_with_device_positions() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};

    let gpu = gpu();
    // Buffers created from here on are not tracked with events (a capture must not wait on
    // events recorded outside it); this test's Gpu has a single stream.
    // SAFETY: only this test uses this Gpu, and only on its one stream.
    unsafe { gpu.context().disable_event_tracking() };
    let (hd, nh, nkv, layers, layer) = (64, 8, 2, 2, 1);
    let plen = 20;
    let dims = KvDims { n_seqs: 4, n_layers: layers, capacity: 96, n_kv_heads: nkv, head_dim: hd };
    let pdims = KvDims { n_seqs: 1, n_layers: layers, capacity: 32, n_kv_heads: nkv, head_dim: hd };
    let n_seq = 4;
    let mut own = HostKv::random(dims, 777);
    let prefix = HostKv::random(pdims, 778);
    let kvd = nkv * hd;
    let (mut dk, mut dv) = own.upload(&gpu);
    let (pk, pv) = prefix.upload(&gpu);
    let mut lens = [1usize, 60, 64, 90];
    let pos_of = |lens: &[usize]| lens.iter().map(|&l| (plen + l - 1) as i32).collect::<Vec<i32>>();
    let mut dpos = gpu.upload(&pos_of(&lens)).unwrap();
    let dplen = gpu.upload(&[plen as i32]).unwrap();
    let mut dkn = gpu.alloc::<f32>(n_seq * kvd).unwrap();
    let mut dvn = gpu.alloc::<f32>(n_seq * kvd).unwrap();
    let mut dq = gpu.alloc::<f32>(n_seq * nh * hd).unwrap();
    let mut dout = gpu.alloc::<f32>(n_seq * nh * hd).unwrap();
    let mut ws = gpu.alloc::<f32>(kv_decode_workspace_len(&dims, Some(&pdims), n_seq, nh).unwrap()).unwrap();
    gpu.sync().unwrap();

    let stream = gpu.stream().clone();
    stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).unwrap();
    {
        let positions = KvPositions { pos: &dpos, prefix_len: &dplen };
        let rows = KvRows { layer, seq0: 0, n_seq, tokens: 1 };
        kv_store(
            &gpu,
            &dkn,
            &dvn,
            &mut KvCacheMut { k: &mut dk, v: &mut dv, dims },
            pdims.capacity,
            rows,
            positions,
        )
        .unwrap();
        let cache = KvCache { k: &dk, v: &dv, dims };
        let pcache = KvCache { k: &pk, v: &pv, dims: pdims };
        kv_decode_attention(&gpu, &dq, &mut dout, cache, Some(pcache), nh, layer, n_seq, positions, &mut ws)
            .unwrap();
    }
    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).unwrap().expect("a captured graph");

    for step in 0..3u64 {
        // New token per sequence; positions advance on the device only.
        let pos = pos_of(&lens);
        let k_new = randn(9000 + 10 * step, n_seq * kvd, 1.5);
        let v_new = randn(9001 + 10 * step, n_seq * kvd, 1.0);
        let q = randn(9002 + 10 * step, n_seq * nh * hd, 1.5);
        stream.memcpy_htod(&pos[..], &mut dpos).unwrap();
        stream.memcpy_htod(&k_new[..], &mut dkn).unwrap();
        stream.memcpy_htod(&v_new[..], &mut dvn).unwrap();
        stream.memcpy_htod(&q[..], &mut dq).unwrap();
        graph.launch().unwrap();
        let got = gpu.download(&dout).unwrap();

        own.store(&k_new, &v_new, KvRows { layer, seq0: 0, n_seq, tokens: 1 }, &pos, plen as i32);
        let reference = decode_reference(&q, &own, Some(&prefix), plen, &pos, layer, nh);
        let (rel, rms) = rel_errors(&got, &reference);
        assert!(rel < KV_ATTENTION_REL, "replay {step}, lengths {lens:?}: rel {rel:e} (rms {rms:e})");
        for l in lens.iter_mut() {
            *l += 1;
        }
    }
    assert_eq!(bits(&gpu.download(&dk).unwrap()), bits(&own.k), "cached keys after the replays");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn kv_launchers_reject_bad_arguments_without_launching() {
    let gpu = gpu();
    let (hd, nh, nkv) = (64, 8, 2);
    let dims = KvDims { n_seqs: 2, n_layers: 2, capacity: 16, n_kv_heads: nkv, head_dim: hd };
    let pdims = KvDims { n_seqs: 1, n_layers: 2, capacity: 8, n_kv_heads: nkv, head_dim: hd };
    let n = dims.elements().unwrap();
    let kvd = nkv * hd;
    let (mut dk, mut dv) = (gpu.upload(&vec![3.0f32; n]).unwrap(), gpu.upload(&vec![3.0f32; n]).unwrap());
    let (pk, pv) = (
        gpu.upload(&vec![3.0f32; pdims.elements().unwrap()]).unwrap(),
        gpu.upload(&vec![3.0f32; pdims.elements().unwrap()]).unwrap(),
    );
    let dpos = gpu.upload(&[0i32, 0]).unwrap();
    let short_pos = gpu.upload(&[0i32]).unwrap();
    let dplen = gpu.upload(&[0i32]).unwrap();
    let positions = KvPositions { pos: &dpos, prefix_len: &dplen };
    let rows = KvRows { layer: 1, seq0: 0, n_seq: 2, tokens: 3 };
    let kn = gpu.upload(&vec![1.0f32; 2 * 3 * kvd]).unwrap();
    let kn_short = gpu.upload(&vec![1.0f32; 2 * 3 * kvd - 1]).unwrap();

    let mut store = |kn: &CudaSlice<f32>, dims: KvDims, rows: KvRows, positions: KvPositions<'_>| {
        kv_store(&gpu, kn, kn, &mut KvCacheMut { k: &mut dk, v: &mut dv, dims }, 0, rows, positions)
    };
    assert!(matches!(store(&kn_short, dims, rows, positions), Err(Error::Shape { .. })), "short new keys");
    assert!(store(&kn, dims, KvRows { layer: 2, ..rows }, positions).is_err(), "layer out of range");
    assert!(store(&kn, dims, KvRows { seq0: 1, ..rows }, positions).is_err(), "sequences out of range");
    assert!(
        store(&kn, dims, rows, KvPositions { pos: &short_pos, prefix_len: &dplen }).is_err(),
        "pos shorter than the sequences"
    );
    assert!(store(&kn, KvDims { capacity: 17, ..dims }, rows, positions).is_err(), "cache length vs dims");
    assert!(store(&kn, KvDims { capacity: 0, ..dims }, rows, positions).is_err(), "zero capacity");
    assert!(
        store(&kn, dims, KvRows { tokens: 17, ..rows }, positions).is_err(),
        "more new tokens than the capacity"
    );

    let q = gpu.upload(&vec![1.0f32; 2 * 3 * nh * hd]).unwrap();
    let mut out = gpu.upload(&vec![7.0f32; 2 * 3 * nh * hd]).unwrap();
    let cache = KvCache { k: &dk, v: &dv, dims };
    let pcache = KvCache { k: &pk, v: &pv, dims: pdims };
    let bad_prefix = KvCache { k: &pk, v: &pv, dims: KvDims { n_kv_heads: 1, head_dim: 128, ..pdims } };
    assert!(
        matches!(
            kv_prefill_attention(&gpu, &q, &mut out, cache, Some(pcache), 6, rows, positions),
            Err(Error::Shape { .. })
        ),
        "q sized for 8 heads, 6 given"
    );
    assert!(
        kv_prefill_attention(&gpu, &q, &mut out, cache, Some(pcache), 7, rows, positions).is_err(),
        "7 heads over 2 kv heads"
    );
    assert!(
        kv_prefill_attention(&gpu, &q, &mut out, cache, Some(bad_prefix), nh, rows, positions).is_err(),
        "prefix with other kv heads"
    );
    let odd = KvDims { head_dim: 32, n_kv_heads: 4, ..dims };
    assert!(
        matches!(
            kv_prefill_attention(
                &gpu,
                &q,
                &mut out,
                KvCache { k: &dk, v: &dv, dims: odd },
                None,
                nh,
                rows,
                positions
            ),
            Err(Error::Unsupported(_))
        ),
        "head width 32"
    );

    let q1 = gpu.upload(&vec![1.0f32; 2 * nh * hd]).unwrap();
    let mut out1 = gpu.upload(&vec![7.0f32; 2 * nh * hd]).unwrap();
    let need = kv_decode_workspace_len(&dims, Some(&pdims), 2, nh).unwrap();
    let mut small_ws = gpu.upload(&vec![0.0f32; need - 1]).unwrap();
    assert!(
        matches!(
            kv_decode_attention(
                &gpu,
                &q1,
                &mut out1,
                cache,
                Some(pcache),
                nh,
                1,
                2,
                positions,
                &mut small_ws
            ),
            Err(Error::Shape { .. })
        ),
        "workspace too small"
    );
    let mut ws = gpu.upload(&vec![0.0f32; need]).unwrap();
    assert!(
        kv_decode_attention(&gpu, &q1, &mut out1, cache, Some(pcache), nh, 1, 3, positions, &mut ws).is_err(),
        "more sequences than the cache"
    );
    assert!(
        kv_decode_attention(&gpu, &q1, &mut out1, cache, Some(pcache), nh, 2, 2, positions, &mut ws).is_err(),
        "layer out of range"
    );
    assert!(
        kv_decode_attention(&gpu, &q, &mut out1, cache, Some(pcache), nh, 1, 2, positions, &mut ws).is_err(),
        "q of another size"
    );
    // Nothing ran.
    assert!(gpu.download(&out).unwrap().iter().all(|&v| v == 7.0));
    assert!(gpu.download(&out1).unwrap().iter().all(|&v| v == 7.0));
    assert!(gpu.download(&dk).unwrap().iter().all(|&v| v == 3.0));
}
