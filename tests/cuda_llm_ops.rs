//! GPU parity of the LLM step kernels (`medregion::backend::cuda::ops::llm`) against their CPU
//! twins: embedding lookup, RMSNorm (+ fused residual add), residual add, RoPE, SwiGLU, repetition
//! penalty / ban / observe, greedy argmax and temperature / top-k / top-p sampling. Fresh seeded
//! random inputs (never zeros), odd sizes and misaligned views (scalar paths), several shapes.
//!
//! Every test needs a device (`scripts/gpu-check.sh` runs them with `--include-ignored`).
//!
//! | op | dtype | CPU twin (how compared) | tolerance |
//! |---|---|---|---|
//! | embed | f32, f16, bf16, q8_0, q4_0, q4_1 | `Weight::rows_to_f32` (public) | bit-identical |
//! | embed, caller rows (id < 0) | f32 | the caller's rows | bit-identical |
//! | rms_norm, rms_norm_add | f32 | `llm::forward::rms_norm` re-stated here (crate-private) | bit-identical, except a row whose f64 inverse norm lies within 1e-12 (relative) of an f32 rounding boundary: ≤ 2 ulp |
//! | rms_norm_add: updated residual, residual_add | f32 | `x + y` | bit-identical |
//! | rope, rope_qkv | f32 | `llm::rope::rotate` with `Rope::angles` (public) | bit-identical |
//! | swiglu (3 layouts) | f32 | `g / (1.0 + exp(-g)) * u` (the forward loop, crate-private; `ops::cpu::exp::exp`) | bit-identical |
//! | repetition penalty, ban, observe | f32 / u8 | `Sampler::sample` rules re-stated | bit-identical |
//! | argmax | f32 | `llm::argmax` (public) | same id |
//! | top-p / top-k / temperature | f32 | (a) host implementation of the kernel's fixed-point rule; (b) `Sampler::sample` with the same `u` (its first `SplitMix64::next_f64`) | same id, unless the threshold lies within 2^18 units of 2^−44 (1.5e−8 relative) of a running-sum boundary |
//! | errors inside a graph | — | −1 token / NaN rows | exact |

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::{gpu, XorShiftStar as Rng};

use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use medregion::backend::cuda::ops::llm::{
    self, DeviceEmbedding, LogitsLayout, RopeLayout, RopeTable, SAMPLE_VOCAB_MAX,
};
use medregion::backend::cuda::Gpu;
use medregion::llm::rope::{rotate, Rope};
use medregion::llm::{argmax, Sampler, SamplingParams};
use medregion::model::config::{DecoderConfig, RopeScaling};
use medregion::model::synthetic::SplitMix64;
use medregion::quant::{quantize, QuantType, Quantized};
use medregion::tensor::{Dense, QuantWeight, Weight};
use medregion::Error;

fn ulps(a: f32, b: f32) -> u32 {
    if a.to_bits() == b.to_bits() {
        return 0;
    }
    let key = |x: f32| {
        let b = x.to_bits() as i64;
        if b & 0x8000_0000 != 0 {
            -(b & 0x7fff_ffff)
        } else {
            b
        }
    };
    (key(a) - key(b)).unsigned_abs().min(u32::MAX as u64) as u32
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        assert!(
            same,
            "{what}: element {i}: gpu {g:e} ({:#x}) vs cpu {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

fn up<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, v: &[T]) -> CudaSlice<T> {
    gpu.upload(v).expect("upload")
}

fn down<T: cudarc::driver::DeviceRepr + Default + Clone>(gpu: &Gpu, v: &CudaSlice<T>) -> Vec<T> {
    gpu.download(v).expect("download")
}

// ---------------------------------------------------------------------------------------------
// RMSNorm.

/// The CPU's `llm::forward::rms_norm` (crate-private), op for op; also returns each row's f64
/// inverse norm before rounding.
fn cpu_rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f64>) {
    let d = w.len();
    let mut out = vec![0.0f32; x.len()];
    let mut invs = Vec::new();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let inv64 = 1.0 / (ss / d as f64 + eps as f64).sqrt();
        let inv = inv64 as f32;
        invs.push(inv64);
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = g * (v * inv);
        }
    }
    (out, invs)
}

/// Whether an f64 value lies within `rel` of a point halfway between two f32 values (where a
/// different summation order may round it the other way).
fn near_f32_tie(v: f64, rel: f64) -> bool {
    let f = v as f32;
    let next = f32::from_bits(f.to_bits() + 1) as f64;
    let prev = f32::from_bits(f.to_bits() - 1) as f64;
    let f = f as f64;
    let mids = [(f + next) / 2.0, (f + prev) / 2.0];
    mids.iter().any(|m| ((v - m) / v).abs() < rel)
}

fn check_norm_rows(what: &str, got: &[f32], want: &[f32], invs: &[f64], d: usize) {
    for (r, ((g, w), &inv)) in got.chunks(d).zip(want.chunks(d)).zip(invs).enumerate() {
        if near_f32_tie(inv, 1e-12) {
            let worst = g.iter().zip(w).map(|(a, b)| ulps(*a, *b)).max().unwrap_or(0);
            assert!(worst <= 2, "{what}: row {r} (near an f32 tie): {worst} ulp");
        } else {
            assert_bits(&format!("{what} row {r}"), g, w);
        }
    }
}

const NORM_SHAPES: [(usize, usize); 6] = [(1, 4096), (8, 4096), (3, 2048), (5, 1000), (7, 77), (2, 3)];

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn rms_norm_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for (i, &(rows, d)) in NORM_SHAPES.iter().enumerate() {
        for offset in [0usize, 1] {
            let scale = [0.01f32, 1.0, 30.0][i % 3];
            let x = rng.vec(rows * d + offset, scale);
            let w: Vec<f32> = (0..d + offset).map(|_| rng.range(0.5, 1.5)).collect();
            let eps = 1e-5f32;
            let (want, invs) = cpu_rms_norm(&x[offset..], &w[offset..], eps);
            let (xd, wd) = (up(&gpu, &x), up(&gpu, &w));
            let mut out = gpu.alloc::<f32>(rows * d + offset).unwrap();
            llm::rms_norm(
                &gpu,
                &xd.slice(offset..),
                &wd.slice(offset..),
                &mut out.slice_mut(offset..),
                rows,
                d,
                eps,
            )
            .unwrap();
            let got = down(&gpu, &out);
            check_norm_rows(&format!("rms_norm [{rows}, {d}] +{offset}"), &got[offset..], &want, &invs, d);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn rms_norm_add_matches_cpu_add_then_norm() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for &(rows, d) in &NORM_SHAPES {
        for offset in [0usize, 3] {
            let x = rng.vec(rows * d + offset, 2.0);
            let r = rng.vec(rows * d + offset, 0.5);
            let w: Vec<f32> = (0..d).map(|_| rng.range(0.5, 1.5)).collect();
            let sum: Vec<f32> = x[offset..].iter().zip(&r[offset..]).map(|(a, b)| a + b).collect();
            let (want, invs) = cpu_rms_norm(&sum, &w, 1e-5);
            let (mut xd, rd, wd) = (up(&gpu, &x), up(&gpu, &r), up(&gpu, &w));
            let mut out = gpu.alloc::<f32>(rows * d).unwrap();
            llm::rms_norm_add(
                &gpu,
                &mut xd.slice_mut(offset..),
                &rd.slice(offset..),
                &wd.as_view(),
                &mut out.as_view_mut(),
                rows,
                d,
                1e-5,
            )
            .unwrap();
            let (gx, go) = (down(&gpu, &xd), down(&gpu, &out));
            assert_bits("rms_norm_add residual", &gx[offset..], &sum);
            assert_bits("rms_norm_add untouched prefix", &gx[..offset], &x[..offset]);
            check_norm_rows(&format!("rms_norm_add [{rows}, {d}] +{offset}"), &go, &want, &invs, d);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn residual_add_is_exact() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    for n in [1usize, 3, 4096, 8 * 4096 + 5, 1_000_003] {
        for offset in [0usize, 1] {
            let x = rng.vec(n + offset, 3.0);
            let y = rng.vec(n + offset, 0.1);
            let want: Vec<f32> = x[offset..].iter().zip(&y[offset..]).map(|(a, b)| a + b).collect();
            let (mut xd, yd) = (up(&gpu, &x), up(&gpu, &y));
            llm::residual_add(&gpu, &mut xd.slice_mut(offset..), &yd.slice(offset..), n).unwrap();
            assert_bits(&format!("residual_add {n} +{offset}"), &down(&gpu, &xd)[offset..], &want);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE.

fn rope_cfgs() -> Vec<(DecoderConfig, &'static str)> {
    let llama31 = DecoderConfig::default(); // head_dim 128, theta 5e5, llama3 scaling ×8
    let plain =
        DecoderConfig { head_dim: 64, rope_theta: 10_000.0, rope_scaling: None, ..Default::default() };
    let small = DecoderConfig {
        head_dim: 6,
        rope_theta: 100.0,
        rope_scaling: Some(RopeScaling {
            factor: 4.0,
            original_max_position_embeddings: 16,
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![(llama31, "llama3.1"), (plain, "plain"), (small, "tiny")]
}

/// The CPU path: `rotate` each head of each row with `Rope::angles(pos)`.
fn cpu_rope(rope: &Rope, x: &mut [f32], ld: usize, heads: usize, hd: usize, pos: &[i32]) {
    let half = hd / 2;
    let (mut cos, mut sin) = (vec![0.0f32; half], vec![0.0f32; half]);
    for (r, &p) in pos.iter().enumerate() {
        rope.angles(p as usize, &mut cos, &mut sin);
        for h in 0..heads {
            rotate(&mut x[r * ld + h * hd..r * ld + (h + 1) * hd], &cos, &sin);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn rope_matches_cpu_rotate() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    for (cfg, name) in rope_cfgs() {
        let rope = Rope::new(&cfg);
        let positions = 3000;
        let table = RopeTable::new(&gpu, &rope, positions).unwrap();
        assert_eq!((table.half(), table.positions()), (cfg.head_dim / 2, positions));
        let hd = cfg.head_dim;
        for &(rows, nq, nkv) in &[(1usize, 32usize, 8usize), (8, 32, 8), (37, 5, 1), (3, 4, 0)] {
            let pos: Vec<i32> = (0..rows)
                .map(|r| match r {
                    0 => 0,
                    1 => positions as i32 - 1,
                    _ => rng.below(positions) as i32,
                })
                .collect();
            // Separate q and k, with padded row strides.
            let (ld_q, ld_k) = (nq * hd + 3, nkv * hd + 1);
            let q = rng.vec(rows * ld_q, 1.5);
            let k = rng.vec(rows * ld_k, 1.5);
            let (mut wq, mut wk) = (q.clone(), k.clone());
            cpu_rope(&rope, &mut wq, ld_q, nq, hd, &pos);
            cpu_rope(&rope, &mut wk, ld_k, nkv, hd, &pos);
            let (mut qd, mut kd, pd) = (up(&gpu, &q), up(&gpu, &k), up(&gpu, &pos));
            let layout = RopeLayout { rows, n_q_heads: nq, n_kv_heads: nkv, head_dim: hd, ld_q, ld_k };
            llm::rope(&gpu, &mut qd.as_view_mut(), &mut kd.as_view_mut(), &pd.as_view(), &table, &layout)
                .unwrap();
            assert_bits(&format!("rope {name} q [{rows}, {nq}]"), &down(&gpu, &qd), &wq);
            assert_bits(&format!("rope {name} k [{rows}, {nkv}]"), &down(&gpu, &kd), &wk);

            // Fused qkv rows: q heads, k heads, v heads (untouched).
            let ld = (nq + 2 * nkv) * hd;
            let qkv = rng.vec(rows * ld, 1.0);
            let mut want = qkv.clone();
            cpu_rope(&rope, &mut want, ld, nq + nkv, hd, &pos);
            let mut qkvd = up(&gpu, &qkv);
            llm::rope_qkv(&gpu, &mut qkvd.as_view_mut(), &pd.as_view(), &table, rows, nq, nkv, hd, ld)
                .unwrap();
            assert_bits(&format!("rope_qkv {name} [{rows}, {nq}+{nkv}]"), &down(&gpu, &qkvd), &want);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn rope_position_out_of_range_poisons_its_row_only() {
    let gpu = gpu();
    let cfg = DecoderConfig { head_dim: 8, ..Default::default() };
    let rope = Rope::new(&cfg);
    let table = RopeTable::new(&gpu, &rope, 10).unwrap();
    let mut rng = Rng::new(5);
    let (rows, nq, nkv) = (3, 2, 1);
    let q = rng.vec(rows * nq * 8, 1.0);
    let k = rng.vec(rows * nkv * 8, 1.0);
    let pos = [3i32, 10, -1];
    let (mut qd, mut kd, pd) = (up(&gpu, &q), up(&gpu, &k), up(&gpu, &pos));
    llm::rope(
        &gpu,
        &mut qd.as_view_mut(),
        &mut kd.as_view_mut(),
        &pd.as_view(),
        &table,
        &RopeLayout::packed(rows, nq, nkv, 8),
    )
    .unwrap();
    let (gq, gk) = (down(&gpu, &qd), down(&gpu, &kd));
    let mut wq = q[..nq * 8].to_vec();
    cpu_rope(&rope, &mut wq, nq * 8, nq, 8, &pos[..1]);
    assert_bits("row 0", &gq[..nq * 8], &wq);
    assert!(gq[nq * 8..].iter().all(|v| v.is_nan()), "rows 1, 2 (positions 10, -1) must be NaN");
    assert!(gk[nkv * 8..].iter().all(|v| v.is_nan()));
    assert!(gk[..nkv * 8].iter().all(|v| v.is_finite()));
}

// ---------------------------------------------------------------------------------------------
// SwiGLU.

/// The forward loop's SwiGLU (crate-private there), op for op, with the decoder's `exp`.
fn cpu_swiglu(g: f32, u: f32) -> f32 {
    g / (1.0 + medregion::ops::cpu::exp::exp(-g)) * u
}

fn swiglu_inputs(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut g = rng.vec(n, 4.0);
    // Some extreme gates: where e^−g overflows, rounds to a subnormal or to zero.
    for (i, v) in
        [-200.0f32, -104.0, -103.9, -88.5, -87.0, 87.0, 88.8, 100.0, -0.0, 1e-30].into_iter().enumerate()
    {
        if i * 7 < n {
            g[i * 7] = v;
        }
    }
    let u = rng.vec(n, 1.0);
    (g, u)
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn swiglu_matches_cpu_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(6);
    for &(rows, f) in &[(1usize, 14336usize), (8, 14336), (3, 1001), (5, 7), (2, 1)] {
        let (g, u) = swiglu_inputs(&mut rng, rows * f);
        let want: Vec<f32> = g.iter().zip(&u).map(|(&a, &b)| cpu_swiglu(a, b)).collect();
        // Out of place.
        let (gd, ud) = (up(&gpu, &g), up(&gpu, &u));
        let mut out = gpu.alloc::<f32>(rows * f).unwrap();
        llm::swiglu(&gpu, &gd.as_view(), &ud.as_view(), &mut out.as_view_mut(), rows, f).unwrap();
        assert_bits(&format!("swiglu [{rows}, {f}]"), &down(&gpu, &out), &want);
        // In place, misaligned by one element.
        let mut g1 = vec![7.0f32];
        g1.extend_from_slice(&g);
        let mut u1 = vec![7.0f32];
        u1.extend_from_slice(&u);
        let (mut gd1, ud1) = (up(&gpu, &g1), up(&gpu, &u1));
        llm::swiglu_in_place(&gpu, &mut gd1.slice_mut(1..), &ud1.slice(1..), rows, f).unwrap();
        let got = down(&gpu, &gd1);
        assert_eq!(got[0], 7.0);
        assert_bits(&format!("swiglu in place [{rows}, {f}] +1"), &got[1..], &want);
        // Fused gate/up rows.
        let fused: Vec<f32> = (0..rows)
            .flat_map(|r| g[r * f..(r + 1) * f].iter().chain(&u[r * f..(r + 1) * f]).copied())
            .collect();
        let fd = up(&gpu, &fused);
        let mut out2 = gpu.alloc::<f32>(rows * f).unwrap();
        llm::swiglu_fused(&gpu, &fd.as_view(), &mut out2.as_view_mut(), rows, f).unwrap();
        assert_bits(&format!("swiglu fused [{rows}, {f}]"), &down(&gpu, &out2), &want);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn swiglu_exp_matches_the_cpu_exp_on_a_dense_sweep() {
    // Every 4099th f32 bit pattern with |g| < 110 (≈ 500 k gates), u = 1: the kernel's `exp`
    // against the CPU decoder's (`ops::cpu::exp::exp`).
    let gpu = gpu();
    let g: Vec<f32> = (0u32..=u32::MAX / 4099)
        .map(|i| f32::from_bits(i.wrapping_mul(4099)))
        .filter(|v| v.is_finite() && v.abs() < 110.0)
        .collect();
    let u = vec![1.0f32; g.len()];
    let want: Vec<f32> = g.iter().map(|&a| cpu_swiglu(a, 1.0)).collect();
    let (gd, ud) = (up(&gpu, &g), up(&gpu, &u));
    let mut out = gpu.alloc::<f32>(g.len()).unwrap();
    llm::swiglu(&gpu, &gd.as_view(), &ud.as_view(), &mut out.as_view_mut(), 1, g.len()).unwrap();
    assert_bits("swiglu sweep", &down(&gpu, &out), &want);
}

// ---------------------------------------------------------------------------------------------
// Embedding.

fn qweight<'a>(q: &'a Quantized, shape: &'a [usize]) -> Weight<'a> {
    Weight::Quant(QuantWeight {
        name: "embed",
        qtype: q.qtype,
        shape,
        values: &q.values,
        scales: &q.scales,
        mins: &q.mins,
    })
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn embed_matches_rows_to_f32_for_every_weight_type() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    for &(vocab, d) in &[(1000usize, 4096usize), (37, 96), (5, 32)] {
        let data = rng.vec(vocab * d, 0.05);
        let shape = [vocab, d];
        let h16: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
        let b16: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
        let q8 = quantize(QuantType::Q8_0, &data).unwrap();
        let q40 = quantize(QuantType::Q4_0, &data).unwrap();
        let q41 = quantize(QuantType::Q4_1, &data).unwrap();
        let qw = |q| qweight(q, &shape);
        let weights = [
            ("f32", Weight::F32(Dense { name: "embed", shape: &shape, data: &data })),
            ("f16", Weight::F16(Dense { name: "embed", shape: &shape, data: &h16 })),
            ("bf16", Weight::BF16(Dense { name: "embed", shape: &shape, data: &b16 })),
            ("q8_0", qw(&q8)),
            ("q4_0", qw(&q40)),
            ("q4_1", qw(&q41)),
        ];
        let n_extra = 3;
        let extra = rng.vec(n_extra * d, 1.0);
        let extra_d = up(&gpu, &extra);
        // Ids: table rows (first, last, random), caller rows (−1 … −n_extra), and bad ids.
        let mut ids: Vec<i32> = vec![0, vocab as i32 - 1, -1, -(n_extra as i32)];
        ids.extend((0..9).map(|_| rng.below(vocab) as i32));
        ids.extend([-2, vocab as i32, -(n_extra as i32) - 1, i32::MIN]);
        let idd = up(&gpu, &ids);
        for (name, w) in &weights {
            let dev = DeviceEmbedding::upload(&gpu, w).unwrap();
            assert_eq!((dev.vocab(), dev.dim()), (vocab, d));
            let mut out = gpu.alloc::<f32>(ids.len() * d).unwrap();
            llm::embed(
                &gpu,
                &dev.table(),
                vocab,
                d,
                &idd.as_view(),
                Some((&extra_d.as_view(), n_extra)),
                &mut out.as_view_mut(),
                ids.len(),
            )
            .unwrap();
            let got = down(&gpu, &out);
            let mut row = vec![0.0f32; d];
            for (r, &id) in ids.iter().enumerate() {
                let g = &got[r * d..(r + 1) * d];
                if id >= 0 && (id as usize) < vocab {
                    w.rows_to_f32(id as usize, 1, &mut row).unwrap();
                    assert_bits(&format!("embed {name} [{vocab}, {d}] id {id}"), g, &row);
                } else if id < 0 && id >= -(n_extra as i32) {
                    let e = (-id - 1) as usize;
                    assert_bits(&format!("embed {name} caller row {e}"), g, &extra[e * d..(e + 1) * d]);
                } else {
                    assert!(g.iter().all(|v| v.is_nan()), "embed {name}: bad id {id} must give NaN");
                }
            }
            // Without caller rows, negative ids are bad ids.
            let mut out2 = gpu.alloc::<f32>(ids.len() * d).unwrap();
            llm::embed(
                &gpu,
                &dev.table(),
                vocab,
                d,
                &idd.as_view(),
                None,
                &mut out2.as_view_mut(),
                ids.len(),
            )
            .unwrap();
            let got2 = down(&gpu, &out2);
            assert!(got2[2 * d..3 * d].iter().all(|v| v.is_nan()), "embed {name}: id −1 without extra rows");
            assert_bits(&format!("embed {name} no extra, id 0"), &got2[..d], &got[..d]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling.

const VOCAB: usize = 128_259; // Llama-3 + 3 added tokens: odd, so rows are not 16-byte aligned

/// LLM-like logits: a normal bulk, a few strong candidates, some ties.
fn llm_logits(rng: &mut Rng, vocab: usize, kind: usize) -> Vec<f32> {
    match kind % 5 {
        0 => {
            let mut l = rng.vec(vocab, 2.0);
            for _ in 0..5 {
                let i = rng.below(vocab);
                l[i] = rng.range(10.0, 18.0);
            }
            l
        }
        // Coarsely quantized: many exact ties.
        1 => (0..vocab).map(|_| (rng.normal(2.0) * 2.0).round() / 2.0).collect(),
        // Nearly flat: huge nuclei, every value in one binade (deep radix levels).
        2 => (0..vocab).map(|_| 1.0 + rng.normal(1e-4)).collect(),
        // Some banned (−inf) and ±0.
        3 => {
            let mut l = rng.vec(vocab, 3.0);
            for _ in 0..vocab / 50 {
                let i = rng.below(vocab);
                l[i] = f32::NEG_INFINITY;
            }
            l[rng.below(vocab)] = 0.0;
            l[rng.below(vocab)] = -0.0;
            l
        }
        // One dominant token.
        _ => {
            let mut l = rng.vec(vocab, 1.0);
            l[rng.below(vocab)] = 40.0;
            l
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn argmax_matches_cpu_with_ties() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for &(n, vocab) in &[(8usize, VOCAB), (1, VOCAB), (6, 128_256), (3, 1000), (5, 3), (2, 1)] {
        let mut all = Vec::new();
        for s in 0..n {
            let mut l = llm_logits(&mut rng, vocab, s);
            if vocab > 10 && s % 2 == 0 {
                // The maximum at several ids: the lowest must win.
                let m = l.iter().cloned().fold(f32::NEG_INFINITY, f32::max) + 1.0;
                for _ in 0..3 {
                    let i = rng.below(vocab);
                    l[i] = m;
                }
            }
            all.extend(l);
        }
        let want: Vec<i32> = all.chunks(vocab).map(|r| argmax(r) as i32).collect();
        for offset in [0usize, 1] {
            let mut buf = vec![0.5f32; offset];
            buf.extend_from_slice(&all);
            let ld = up(&gpu, &buf);
            let mut tok = gpu.alloc::<i32>(n).unwrap();
            let layout = LogitsLayout::packed(n, vocab);
            llm::sample(
                &gpu,
                &ld.slice(offset..),
                &layout,
                &SamplingParams::greedy(),
                None,
                &mut tok.as_view_mut(),
            )
            .unwrap();
            assert_eq!(down(&gpu, &tok), want, "argmax n {n} vocab {vocab} offset {offset}");
        }
    }
    // ±0 tie: the lower id; −inf skipped; broken rows give −1.
    let rows: Vec<Vec<f32>> = vec![
        vec![-1.0, 0.0, -0.0, -3.0],
        vec![-1.0, -0.0, 0.0, -3.0],
        vec![f32::NEG_INFINITY, -5.0, f32::NEG_INFINITY, -5.0],
        vec![1.0, f32::NAN, 2.0, 0.0],
        vec![1.0, f32::INFINITY, 2.0, 0.0],
        vec![f32::NEG_INFINITY; 4],
    ];
    let flat: Vec<f32> = rows.concat();
    let ld = up(&gpu, &flat);
    let mut tok = gpu.alloc::<i32>(rows.len()).unwrap();
    llm::sample(
        &gpu,
        &ld.as_view(),
        &LogitsLayout::packed(rows.len(), 4),
        &SamplingParams::greedy(),
        None,
        &mut tok.as_view_mut(),
    )
    .unwrap();
    assert_eq!(down(&gpu, &tok), vec![1, 1, 1, -1, -1, -1]);
    assert_eq!(argmax(&rows[0]), 1);
    assert_eq!(argmax(&rows[1]), 1);
}

fn fixed_key(x: f32, j: usize) -> u64 {
    let b = x.to_bits();
    let asc = if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 };
    ((!asc as u64) << 20) | j as u64
}

fn fixed_q(x: f32, m: f32) -> u64 {
    let d = x - m;
    if d.is_nan() || d < -32.0 {
        return 0;
    }
    ((d as f64).exp() * 17_592_186_044_416.0).round_ties_even() as u64
}

/// The kernel's rule (see kernels/sampling.cu) on a full sort: the chosen id, and how close (in
/// units of 2^−44) the thresholds came to a running-sum boundary.
fn host_fixed_point(logits: &[f32], p: &SamplingParams, u: f64) -> (u32, u64) {
    let inv_t = 1.0f32 / p.temperature;
    let x: Vec<f32> = logits.iter().map(|&l| l * inv_t).collect();
    let m = x.iter().cloned().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by_key(|&j| fixed_key(x[j], j));
    let k = if p.top_k == 0 || p.top_k >= x.len() { x.len() } else { p.top_k };
    let q: Vec<u64> = order[..k].iter().map(|&j| fixed_q(x[j], m)).collect();
    let total: u64 = q.iter().sum();
    let mut margin = u64::MAX;
    // First index whose running sum reaches t; also the distance of t to its boundaries.
    let find = |t: u64, end: usize, margin: &mut u64| -> usize {
        let mut acc = 0u64;
        for (i, &qi) in q[..end].iter().enumerate() {
            let prev = acc;
            acc += qi;
            if acc >= t {
                *margin = (*margin).min(t - prev).min(acc - t + 1);
                return i;
            }
        }
        end - 1
    };
    let mut end = k;
    if p.top_p < 1.0 {
        let t1 = ((p.top_p as f64 * total as f64).ceil() as u64).clamp(1, total);
        end = find(t1, k, &mut margin) + 1;
    }
    let nucleus: u64 = q[..end].iter().sum();
    let y = (u * nucleus as f64).floor();
    let t2 = if y >= nucleus as f64 { nucleus } else { y as u64 + 1 }.min(nucleus);
    let i = find(t2, end, &mut margin);
    (order[i] as u32, margin)
}

/// `Sampler::sample` on a row that may hold −inf (banned) logits: the CPU rejects non-finite
/// input, so those ids are given a finite logit and banned instead (the Sampler's own path).
fn cpu_pick(row: &[f32], p: &SamplingParams) -> u32 {
    let banned: Vec<u32> = (0..row.len() as u32).filter(|&j| row[j as usize] == f32::NEG_INFINITY).collect();
    let finite: Vec<f32> = row.iter().map(|&l| if l == f32::NEG_INFINITY { 0.0 } else { l }).collect();
    let mut cpu = Sampler::new(p, row.len()).unwrap();
    cpu.ban(&banned);
    cpu.sample(&finite).unwrap()
}

/// Margin (units of 2^−44) under which the device may legitimately differ from a host rule.
const MARGIN: u64 = 1 << 18;

fn run_sample(gpu: &Gpu, logits: &[f32], n: usize, vocab: usize, p: &SamplingParams, u: &[f64]) -> Vec<i32> {
    let ld = up(gpu, logits);
    let ud = up(gpu, u);
    let mut tok = gpu.alloc::<i32>(n).unwrap();
    llm::sample(
        gpu,
        &ld.as_view(),
        &LogitsLayout::packed(n, vocab),
        p,
        Some(&ud.as_view()),
        &mut tok.as_view_mut(),
    )
    .unwrap();
    down(gpu, &tok)
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn top_p_matches_host_rule_and_cpu_sampler() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let settings: [(f32, usize, f32); 7] = [
        (1.0, 0, 1.0),
        (0.7, 0, 0.9),
        (1.0, 50, 0.95),
        (1.3, 0, 0.5),
        (0.5, 1, 1.0),
        (2.0, 1000, 1.0),
        (1.0, 0, 0.999),
    ];
    let (mut draws, mut close_calls) = (0usize, 0usize);
    for &(n, vocab) in &[(8usize, VOCAB), (3, 5000), (4, 17), (2, 1)] {
        for (si, &(temperature, top_k, top_p)) in settings.iter().enumerate() {
            let seed0 = 1000 * si as u64 + vocab as u64;
            let p = SamplingParams { temperature, top_k, top_p, repetition_penalty: 1.0, seed: seed0 };
            let logits: Vec<f32> = (0..n).flat_map(|s| llm_logits(&mut rng, vocab, s + si)).collect();
            // u of sequence s: the first draw of a Sampler seeded seed0 + s.
            let u: Vec<f64> = (0..n).map(|s| SplitMix64::new(seed0 + s as u64).next_f64()).collect();
            let got = run_sample(&gpu, &logits, n, vocab, &p, &u);
            // Determinism: the same inputs give the same ids.
            assert_eq!(run_sample(&gpu, &logits, n, vocab, &p, &u), got, "rerun differs");
            for s in 0..n {
                let row = &logits[s * vocab..(s + 1) * vocab];
                let (want, margin) = host_fixed_point(row, &p, u[s]);
                let cpu_id = cpu_pick(row, &SamplingParams { seed: seed0 + s as u64, ..p.clone() });
                let ctx = format!("n {n} vocab {vocab} setting {si} seq {s}: gpu {} host {want} cpu {cpu_id} margin {margin}", got[s]);
                draws += 1;
                if margin < MARGIN {
                    close_calls += 1;
                    continue;
                }
                assert_eq!(got[s], want as i32, "host rule: {ctx}");
                assert_eq!(got[s], cpu_id as i32, "CPU sampler: {ctx}");
            }
        }
    }
    eprintln!("top-p: {draws} draws, {close_calls} within {MARGIN} units of a boundary (not compared)");
    assert!(close_calls * 20 <= draws, "too many close calls: {close_calls} of {draws}");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn top_p_draws_follow_u_across_the_whole_range() {
    // One row, many u: every u gives the host rule's id (the inverse CDF, boundaries included).
    let gpu = gpu();
    let mut rng = Rng::new(10);
    let vocab = 3000;
    let row = llm_logits(&mut rng, vocab, 0);
    let p = SamplingParams { temperature: 1.5, top_k: 0, top_p: 0.97, repetition_penalty: 1.0, seed: 0 };
    let n = 256;
    let mut u: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    u[n - 1] = 1.0 - f64::EPSILON / 2.0; // the largest u < 1
    let logits: Vec<f32> = (0..n).flat_map(|_| row.iter().copied()).collect();
    let got = run_sample(&gpu, &logits, n, vocab, &p, &u);
    for (i, &g) in got.iter().enumerate() {
        let (want, margin) = host_fixed_point(&row, &p, u[i]);
        if margin >= MARGIN {
            assert_eq!(g, want as i32, "u = {}", u[i]);
        }
    }
    // u out of [0, 1) and broken rows give −1.
    let bad = run_sample(&gpu, &logits[..4 * vocab], 4, vocab, &p, &[1.0, -0.1, f64::NAN, 0.5]);
    assert_eq!(&bad[..3], &[-1, -1, -1]);
    assert!(bad[3] >= 0);
    let mut broken = row.clone();
    broken[7] = f32::NAN;
    assert_eq!(run_sample(&gpu, &broken, 1, vocab, &p, &[0.5]), vec![-1]);
    let all_banned = vec![f32::NEG_INFINITY; vocab];
    assert_eq!(run_sample(&gpu, &all_banned, 1, vocab, &p, &[0.5]), vec![-1]);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn penalty_ban_observe_match_the_cpu_sampler() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    let (n, vocab) = (4usize, 1001usize);
    let penalty = 1.3f32;
    let banned: Vec<u32> = vec![1000, 999, 998, 5000];
    // Finite rows only (kinds 0, 1, 2, 4): here the Sampler sees the raw logits.
    let mut logits: Vec<f32> = (0..n).flat_map(|s| llm_logits(&mut rng, vocab, [0, 1, 2, 4][s])).collect();
    // Make the banned ids the favourites, so the ban matters.
    for s in 0..n {
        logits[s * vocab + 1000] = 100.0;
    }
    let mut seen = vec![0u8; n * vocab];
    let mut history: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (s, h) in history.iter_mut().enumerate() {
        for _ in 0..40 {
            let id = rng.below(vocab) as u32;
            seen[s * vocab + id as usize] = 1;
            h.push(id);
        }
    }
    let layout = LogitsLayout::packed(n, vocab);
    let mut ld = up(&gpu, &logits);
    let sd = up(&gpu, &seen);
    let banned_i: Vec<i32> = banned.iter().map(|&b| b as i32).collect();
    let bd = up(&gpu, &banned_i);
    llm::repetition_penalty(&gpu, &mut ld.as_view_mut(), &layout, &sd.as_view(), vocab, penalty).unwrap();
    llm::ban(&gpu, &mut ld.as_view_mut(), &layout, &bd.as_view()).unwrap();
    let got_logits = down(&gpu, &ld);
    let mut want = logits.clone();
    for s in 0..n {
        for j in 0..vocab {
            let l = &mut want[s * vocab + j];
            if seen[s * vocab + j] != 0 {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
        for &b in &banned {
            if (b as usize) < vocab {
                want[s * vocab + b as usize] = f32::NEG_INFINITY;
            }
        }
    }
    assert_bits("penalty + ban", &got_logits, &want);

    // Greedy and sampled picks against Samplers with the same history and ban list.
    for params in [
        SamplingParams { repetition_penalty: penalty, ..SamplingParams::greedy() },
        SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, repetition_penalty: penalty, seed: 77 },
    ] {
        let u: Vec<f64> = (0..n).map(|s| SplitMix64::new(params.seed + s as u64).next_f64()).collect();
        let ud = up(&gpu, &u);
        let mut tok = gpu.alloc::<i32>(n).unwrap();
        llm::sample(&gpu, &ld.as_view(), &layout, &params, Some(&ud.as_view()), &mut tok.as_view_mut())
            .unwrap();
        let got = down(&gpu, &tok);
        for s in 0..n {
            let mut cpu =
                Sampler::new(&SamplingParams { seed: params.seed + s as u64, ..params.clone() }, vocab)
                    .unwrap();
            cpu.ban(&banned);
            cpu.observe(&history[s]).unwrap();
            let want = cpu.sample(&logits[s * vocab..(s + 1) * vocab]).unwrap();
            let (_, margin) = if params.is_greedy() {
                (0, u64::MAX)
            } else {
                host_fixed_point(&got_logits[s * vocab..(s + 1) * vocab], &params, u[s])
            };
            if margin >= MARGIN {
                assert_eq!(got[s], want as i32, "{params:?} seq {s}");
            }
        }
        // observe: the chosen ids join the history.
        let mut sd2 = up(&gpu, &seen);
        llm::observe(&gpu, &mut sd2.as_view_mut(), vocab, &tok.as_view(), n, vocab).unwrap();
        let mut want_seen = seen.clone();
        for (s, &t) in got.iter().enumerate() {
            if t >= 0 {
                want_seen[s * vocab + t as usize] = 1;
            }
        }
        assert_eq!(down(&gpu, &sd2), want_seen);
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: wrong sizes are errors and nothing is launched (the output keeps its sentinel).

fn is_shape(r: medregion::Result<()>) -> bool {
    matches!(r, Err(Error::Shape { .. }))
}

fn is_invalid(r: medregion::Result<()>) -> bool {
    matches!(r, Err(Error::InvalidArgument { .. }))
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn launchers_reject_bad_sizes_before_launching() {
    let gpu = gpu();
    let sentinel = vec![-7.0f32; 64];
    let x = up(&gpu, &[1.0f32; 64]);
    let w = up(&gpu, &[1.0f32; 16]);
    let mut out = up(&gpu, &sentinel);

    // RMSNorm: x too short, w too short, out too short, d = 0, bad eps.
    assert!(is_shape(llm::rms_norm(&gpu, &x.slice(..63), &w.as_view(), &mut out.as_view_mut(), 4, 16, 1e-5)));
    assert!(is_shape(llm::rms_norm(&gpu, &x.as_view(), &w.slice(..15), &mut out.as_view_mut(), 4, 16, 1e-5)));
    assert!(is_shape(llm::rms_norm(&gpu, &x.as_view(), &w.as_view(), &mut out.slice_mut(..60), 4, 16, 1e-5)));
    assert!(is_invalid(llm::rms_norm(&gpu, &x.as_view(), &w.as_view(), &mut out.as_view_mut(), 4, 0, 1e-5)));
    assert!(is_invalid(llm::rms_norm(
        &gpu,
        &x.as_view(),
        &w.as_view(),
        &mut out.as_view_mut(),
        4,
        16,
        f32::NAN
    )));
    let mut xm = up(&gpu, &[1.0f32; 64]);
    assert!(is_shape(llm::rms_norm_add(
        &gpu,
        &mut xm.as_view_mut(),
        &x.slice(..10),
        &w.as_view(),
        &mut out.as_view_mut(),
        4,
        16,
        1e-5
    )));
    assert!(is_shape(llm::residual_add(&gpu, &mut xm.slice_mut(..10), &x.as_view(), 11)));

    // SwiGLU: short operands.
    assert!(is_shape(llm::swiglu(&gpu, &x.slice(..31), &x.as_view(), &mut out.as_view_mut(), 2, 16)));
    assert!(is_shape(llm::swiglu_fused(&gpu, &x.slice(..63), &mut out.as_view_mut(), 2, 16)));
    assert!(is_shape(llm::swiglu_in_place(&gpu, &mut out.slice_mut(..20), &x.as_view(), 2, 16)));
    assert!(is_invalid(llm::swiglu(&gpu, &x.as_view(), &x.as_view(), &mut out.as_view_mut(), 70_000, 0)));

    // RoPE: head_dim not matching the table, odd head_dim, short buffers, short positions.
    let cfg = DecoderConfig { head_dim: 8, ..Default::default() };
    let table = RopeTable::new(&gpu, &Rope::new(&cfg), 4).unwrap();
    let pos = up(&gpu, &[0i32, 1]);
    let mut k = up(&gpu, &[1.0f32; 16]);
    let r = |hd: usize| RopeLayout::packed(2, 2, 1, hd);
    assert!(is_shape(llm::rope(
        &gpu,
        &mut out.as_view_mut(),
        &mut k.as_view_mut(),
        &pos.as_view(),
        &table,
        &r(4)
    )));
    assert!(is_invalid(llm::rope(
        &gpu,
        &mut out.as_view_mut(),
        &mut k.as_view_mut(),
        &pos.as_view(),
        &table,
        &r(7)
    )));
    assert!(is_shape(llm::rope(
        &gpu,
        &mut out.slice_mut(..31),
        &mut k.as_view_mut(),
        &pos.as_view(),
        &table,
        &r(8)
    )));
    assert!(is_shape(llm::rope(
        &gpu,
        &mut out.as_view_mut(),
        &mut k.slice_mut(..15),
        &pos.as_view(),
        &table,
        &r(8)
    )));
    assert!(is_shape(llm::rope(
        &gpu,
        &mut out.as_view_mut(),
        &mut k.as_view_mut(),
        &pos.slice(..1),
        &table,
        &r(8)
    )));
    let bad_ld = RopeLayout { ld_q: 15, ..r(8) };
    assert!(is_invalid(llm::rope(
        &gpu,
        &mut out.as_view_mut(),
        &mut k.as_view_mut(),
        &pos.as_view(),
        &table,
        &bad_ld
    )));
    assert!(is_invalid(llm::rope_qkv(&gpu, &mut out.as_view_mut(), &pos.as_view(), &table, 2, 2, 1, 8, 20)));
    assert!(is_invalid(RopeTable::new(&gpu, &Rope::new(&cfg), 0).map(|_| ())));

    // Embedding: short table, d not a multiple of 32 for quantized, short ids / out / extra.
    let data = vec![0.5f32; 4 * 32];
    let shape = [4usize, 32];
    let emb =
        DeviceEmbedding::upload(&gpu, &Weight::F32(Dense { name: "e", shape: &shape, data: &data })).unwrap();
    let ids = up(&gpu, &[0i32, 1]);
    assert!(is_shape(llm::embed(&gpu, &emb.table(), 5, 32, &ids.as_view(), None, &mut out.as_view_mut(), 2)));
    assert!(is_shape(llm::embed(
        &gpu,
        &emb.table(),
        4,
        32,
        &ids.slice(..1),
        None,
        &mut out.as_view_mut(),
        2
    )));
    assert!(is_shape(llm::embed(
        &gpu,
        &emb.table(),
        4,
        32,
        &ids.as_view(),
        None,
        &mut out.slice_mut(..63),
        2
    )));
    assert!(is_shape(llm::embed(
        &gpu,
        &emb.table(),
        4,
        32,
        &ids.as_view(),
        Some((&x.slice(..40), 2)),
        &mut out.as_view_mut(),
        2
    )));
    let q = quantize(QuantType::Q8_0, &data).unwrap();
    let shape16 = [8usize, 16];
    let qw = Weight::Quant(QuantWeight {
        name: "e",
        qtype: QuantType::Q8_0,
        shape: &shape16,
        values: &q.values,
        scales: &q.scales,
        mins: &q.mins,
    });
    let qemb = DeviceEmbedding::upload(&gpu, &qw).unwrap();
    assert!(is_invalid(llm::embed(
        &gpu,
        &qemb.table(),
        8,
        16,
        &ids.as_view(),
        None,
        &mut out.as_view_mut(),
        2
    )));

    // Sampling: short logits, tokens, u; missing u; bad params; vocab too large; ld < vocab.
    let logits = up(&gpu, &[0.0f32; 64]);
    let mut tok = up(&gpu, &[-9i32; 4]);
    let u = up(&gpu, &[0.5f64; 4]);
    let hot = SamplingParams { temperature: 1.0, ..SamplingParams::greedy() };
    let l = LogitsLayout::packed(4, 16);
    assert!(is_shape(llm::sample(
        &gpu,
        &logits.slice(..63),
        &l,
        &hot,
        Some(&u.as_view()),
        &mut tok.as_view_mut()
    )));
    assert!(is_shape(llm::sample(
        &gpu,
        &logits.as_view(),
        &l,
        &hot,
        Some(&u.as_view()),
        &mut tok.slice_mut(..3)
    )));
    assert!(is_shape(llm::sample(
        &gpu,
        &logits.as_view(),
        &l,
        &hot,
        Some(&u.slice(..3)),
        &mut tok.as_view_mut()
    )));
    assert!(is_invalid(llm::sample(&gpu, &logits.as_view(), &l, &hot, None, &mut tok.as_view_mut())));
    let bad_p = SamplingParams { top_p: 0.0, ..hot.clone() };
    assert!(is_invalid(llm::sample(
        &gpu,
        &logits.as_view(),
        &l,
        &bad_p,
        Some(&u.as_view()),
        &mut tok.as_view_mut()
    )));
    let big = LogitsLayout::packed(1, SAMPLE_VOCAB_MAX + 1);
    let huge = gpu.alloc::<f32>(SAMPLE_VOCAB_MAX + 1).unwrap();
    assert!(is_invalid(llm::sample(
        &gpu,
        &huge.as_view(),
        &big,
        &hot,
        Some(&u.as_view()),
        &mut tok.as_view_mut()
    )));
    let bad_ld = LogitsLayout { n_seqs: 2, vocab: 16, ld: 15 };
    assert!(is_invalid(llm::sample(
        &gpu,
        &logits.as_view(),
        &bad_ld,
        &hot,
        Some(&u.as_view()),
        &mut tok.as_view_mut()
    )));
    let seen = up(&gpu, &[0u8; 64]);
    let mut lm = up(&gpu, &[0.0f32; 64]);
    assert!(is_shape(llm::repetition_penalty(&gpu, &mut lm.as_view_mut(), &l, &seen.slice(..63), 16, 1.2)));
    assert!(is_invalid(llm::repetition_penalty(&gpu, &mut lm.as_view_mut(), &l, &seen.as_view(), 16, 0.0)));
    let mut seen_m = up(&gpu, &[0u8; 64]);
    assert!(is_shape(llm::observe(&gpu, &mut seen_m.as_view_mut(), 16, &tok.slice(..3), 4, 16)));
    assert!(is_invalid(llm::observe(&gpu, &mut seen_m.as_view_mut(), 15, &tok.as_view(), 4, 16)));

    // Nothing ran: the outputs keep their sentinels.
    assert_eq!(down(&gpu, &out), sentinel);
    assert_eq!(down(&gpu, &tok), vec![-9; 4]);
    assert_eq!(down(&gpu, &xm), vec![1.0f32; 64]);
    assert_eq!(down(&gpu, &seen_m), vec![0u8; 64]);
}
