//! GPU parity of the weight matmuls (`kernels/matmul_quant.cu`, `kernels/matmul_dense.cu`,
//! launchers in `medregion::backend::cuda::ops::matmul`) with the CPU. Every test needs a CUDA
//! device and is ignored otherwise; `scripts/gpu-check.sh` runs them with `--include-ignored`.
//!
//! Tolerances, per (op, dtype) — every kernel here promises bit-identity, so all are exact:
//!
//! | op | dtype | compared with | tolerance |
//! |---|---|---|---|
//! | `quantize_act` | f32 → int8 + f32 scale + i32 sum | the CPU's `quantize_block_scalar`, transcribed below (it is crate-private) | bit-identical |
//! | `matmul` (GEMV, n ≤ 8 per launch, n = 13 split) | q8_0, q4_0, q4_1 | `medregion::ops::matmul` | bit-identical |
//! | `matmul` | f32, f16, bf16 | `medregion::ops::matmul` | bit-identical |
//! | `dequantize` | q8_0, q4_0, q4_1 → f16, bf16 | `Weight::to_f32`, then `half::{f16, bf16}::from_f32` | bit-identical |
//!
//! Inputs are fresh seeded xorshift values, never zero (plus deliberate zero and tie blocks for
//! the quantizer); shapes cover odd row counts (not multiples of the 8-row blocks), k = 32, 96,
//! 288 (a partial 8-block group), 2048 and 4096, dense k that is not a multiple of 8 (the
//! unaligned staging path) or of a 256/128-element tile, and n = 1..8 and 13. The launchers'
//! validation is checked too (wrong lengths and shapes are errors, and nothing was launched:
//! the stream stays healthy).

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::gpu;

use half::{bf16, f16};
use medregion::backend::cuda::blas::Half;
use medregion::backend::cuda::ops::matmul::{
    dequantize, matmul, matmul_dense, matmul_quant, quantize_act, DenseBuffer, DeviceWeight, QuantBuffers,
    QuantizedActs,
};
use medregion::backend::cuda::Gpu;
use medregion::ops::{self, ThreadPool};
use medregion::quant::{self, QuantType, Quantized};
use medregion::tensor::{Dense, QuantWeight, Weight, WeightType};
use medregion::Error;

/// Deterministic xorshift values in ±(0, 1]·scale, never zero.
fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32; // (0, 1)
            (2.0 * u - 1.0) * scale
        })
        .map(|v| if v == 0.0 { scale * 1e-3 } else { v })
        .collect()
}

/// Owned storage of one weight type, viewed as a [`Weight`].
enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    Quant(Quantized),
}

impl Owned {
    fn new(wt: WeightType, src: &[f32]) -> Owned {
        match wt {
            WeightType::F32 => Owned::F32(src.to_vec()),
            WeightType::F16 => Owned::F16(src.iter().map(|&v| f16::from_f32(v)).collect()),
            WeightType::Bf16 => Owned::Bf16(src.iter().map(|&v| bf16::from_f32(v)).collect()),
            WeightType::Q8_0 => Owned::Quant(quant::quantize(QuantType::Q8_0, src).unwrap()),
            WeightType::Q4_0 => Owned::Quant(quant::quantize(QuantType::Q4_0, src).unwrap()),
            WeightType::Q4_1 => Owned::Quant(quant::quantize(QuantType::Q4_1, src).unwrap()),
        }
    }

    fn view<'a>(&'a self, shape: &'a [usize]) -> Weight<'a> {
        match self {
            Owned::F32(d) => Weight::F32(Dense { name: "w", shape, data: d }),
            Owned::F16(d) => Weight::F16(Dense { name: "w", shape, data: d }),
            Owned::Bf16(d) => Weight::BF16(Dense { name: "w", shape, data: d }),
            Owned::Quant(q) => Weight::Quant(QuantWeight {
                name: "w",
                qtype: q.qtype,
                shape,
                values: &q.values,
                scales: &q.scales,
                mins: &q.mins,
            }),
        }
    }
}

/// A weight whose rows have different magnitudes (so blocks get different scales).
fn weight_source(rows: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut src = random(rows * k, seed, 1.0);
    for (r, row) in src.chunks_mut(k.max(1)).enumerate() {
        let s = 0.02 * (1.0 + (r % 7) as f32);
        row.iter_mut().for_each(|v| *v *= s);
    }
    src
}

/// Asserts `got == want` bit for bit; the message names the case and the worst difference.
fn assert_bits(case: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{case}: lengths");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
    if let Some(&first) = bad.first() {
        let worst = bad.iter().map(|&i| (got[i] - want[i]).abs()).fold(0.0f32, f32::max);
        panic!(
            "{case}: {} of {} outputs differ from the CPU; first [{first}] = {} (CPU {}), worst |Δ| {worst:e}",
            bad.len(),
            got.len(),
            got[first],
            want[first]
        );
    }
}

/// The CPU product `ops::matmul` and the GPU product `matmul` of one case; asserts bit-identity.
fn check_matmul(gpu: &Gpu, wt: WeightType, rows: usize, k: usize, n: usize, seed: u64) {
    let src = weight_source(rows, k, seed);
    let owned = Owned::new(wt, &src);
    let shape = [rows, k];
    let w = owned.view(&shape);
    let x = random(n * k, seed ^ 0x5EED, 1.5);
    let pool = ThreadPool::single();
    let mut want = vec![f32::NAN; n * rows];
    ops::matmul(&x, n, &w, &mut want, &pool).unwrap();

    let dw = DeviceWeight::upload(gpu, &w).unwrap();
    let xd = gpu.upload(&x).unwrap();
    let mut acts = QuantizedActs::new(gpu, n, k.next_multiple_of(32)).unwrap();
    let mut out = gpu.alloc::<f32>(n * rows).unwrap();
    matmul(gpu, &dw, &xd.slice(..), n, &mut acts, &mut out.slice_mut(..)).unwrap();
    let got = gpu.download(&out).unwrap();
    assert_bits(&format!("{} rows={rows} k={k} n={n}", wt.name()), &got, &want);
}

const QUANT_SHAPES: [(usize, usize); 6] = [(37, 32), (19, 96), (129, 288), (13, 4096), (1, 256), (64, 2048)];
const DENSE_SHAPES: [(usize, usize); 9] =
    [(37, 100), (9, 8), (3, 1), (21, 264), (5, 131), (129, 2050), (13, 4096), (64, 2048), (8, 520)];
const NS: [usize; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 13];

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn quantized_matmul_is_bit_identical_to_cpu() {
    let gpu = gpu();
    for wt in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1] {
        for (s, &(rows, k)) in QUANT_SHAPES.iter().enumerate() {
            for &n in &NS {
                check_matmul(&gpu, wt, rows, k, n, 1000 + 31 * s as u64 + n as u64);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn dense_matmul_is_bit_identical_to_cpu() {
    let gpu = gpu();
    for wt in [WeightType::F32, WeightType::F16, WeightType::Bf16] {
        for (s, &(rows, k)) in DENSE_SHAPES.iter().enumerate() {
            for &n in &NS {
                check_matmul(&gpu, wt, rows, k, n, 2000 + 31 * s as u64 + n as u64);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn matmul_writes_only_its_part_of_a_larger_output() {
    let gpu = gpu();
    let (rows, k, n, pad) = (45, 256, 6, 17);
    for wt in [WeightType::Q4_1, WeightType::F16] {
        let owned = Owned::new(wt, &weight_source(rows, k, 7));
        let shape = [rows, k];
        let w = owned.view(&shape);
        let x = random(n * k, 8, 1.0);
        let mut want = vec![0.0f32; n * rows];
        ops::matmul(&x, n, &w, &mut want, &ThreadPool::single()).unwrap();

        let dw = DeviceWeight::upload(&gpu, &w).unwrap();
        // The activations also start inside a larger buffer.
        let mut xp = vec![9.0f32; pad];
        xp.extend_from_slice(&x);
        let xd = gpu.upload(&xp).unwrap();
        let mut acts = QuantizedActs::new(&gpu, n, k).unwrap();
        let mut out = gpu.alloc::<f32>(n * rows + 2 * pad).unwrap();
        matmul(&gpu, &dw, &xd.slice(pad..), n, &mut acts, &mut out.slice_mut(pad..pad + n * rows)).unwrap();
        let got = gpu.download(&out).unwrap();
        assert!(
            got[..pad].iter().chain(&got[pad + n * rows..]).all(|&v| v == 0.0),
            "{}: wrote outside",
            wt.name()
        );
        assert_bits(&format!("{} into a view", wt.name()), &got[pad..pad + n * rows], &want);
    }
}

/// The CPU's `quantize_block_scalar` (src/ops/cpu/quantize_act.rs, crate-private), transcribed.
fn quantize_block_cpu(x: &[f32]) -> ([i8; 32], f32, i32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; 32];
    let mut sum = 0;
    for (qi, &xi) in q.iter_mut().zip(x) {
        let v = (xi * id).round_ties_even() as i32;
        *qi = v.clamp(-128, 127) as i8;
        sum += *qi as i32;
    }
    (q, d, sum)
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn quantize_act_is_bit_identical_to_cpu() {
    let gpu = gpu();
    for (n, k, seed) in [(1, 32, 1u64), (13, 96, 2), (6, 4096, 3), (8, 2048, 4)] {
        let mut x = random(n * k, seed, 3.0);
        if n * k >= 128 {
            // A zero block, a block whose scale is exactly 1 with ties at .5 (half to even), and
            // a block led by a negative maximum.
            x[32..64].iter_mut().for_each(|v| *v = 0.0);
            let ties = [127.0f32, 2.5, 3.5, -0.5, -1.5, 126.5, -126.5, 0.5];
            for (j, v) in x[64..96].iter_mut().enumerate() {
                *v = ties[j % ties.len()];
            }
            x[96] = -127.0;
        }
        let xd = gpu.upload(&x).unwrap();
        let mut acts = QuantizedActs::new(&gpu, n, k).unwrap();
        quantize_act(&gpu, &xd.slice(..), n, k, &mut acts).unwrap();
        assert_eq!(acts.shape(), (n, k));
        let q = gpu.download(acts.values()).unwrap();
        let d = gpu.download(acts.scales()).unwrap();
        let s = gpu.download(acts.sums()).unwrap();
        for b in 0..n * k / 32 {
            let (wq, wd, ws) = quantize_block_cpu(&x[b * 32..(b + 1) * 32]);
            assert_eq!(&q[b * 32..(b + 1) * 32], &wq[..], "n={n} k={k} block {b}: values");
            assert_eq!(d[b].to_bits(), wd.to_bits(), "n={n} k={k} block {b}: scale {} vs {wd}", d[b]);
            assert_eq!(s[b], ws, "n={n} k={k} block {b}: sum");
        }
        if n * k >= 128 {
            assert_eq!(&q[64..72], &[127, 2, 4, 0, -2, 126, -126, 0], "ties round half to even");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn dequantize_is_bit_identical_to_the_crate() {
    let gpu = gpu();
    for wt in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1] {
        for (rows, k) in [(1, 32), (37, 96), (3, 4096)] {
            let owned = Owned::new(wt, &weight_source(rows, k, 11 + rows as u64));
            let shape = [rows, k];
            let w = owned.view(&shape);
            let want = w.to_f32().unwrap();
            let dw = DeviceWeight::upload(&gpu, &w).unwrap();
            for to in [Half::F16, Half::Bf16] {
                let mut out = gpu.alloc::<u16>(rows * k).unwrap();
                dw.dequantize(&gpu, to, &mut out).unwrap();
                let got = gpu.download(&out).unwrap();
                for (i, (&g, &v)) in got.iter().zip(&want).enumerate() {
                    let e = match to {
                        Half::F16 => f16::from_f32(v).to_bits(),
                        Half::Bf16 => bf16::from_f32(v).to_bits(),
                    };
                    assert_eq!(g, e, "{} -> {to:?} rows={rows} k={k} element {i} (value {v})", wt.name());
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn launchers_reject_bad_sizes_before_launching() {
    let gpu = gpu();
    let shape_err = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    let invalid = |r: Result<(), Error>| assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");

    // quantize_act: k not a multiple of 32, x too short, scratch too small.
    let x = gpu.upload(&random(4 * 64, 5, 1.0)).unwrap();
    let mut acts = QuantizedActs::new(&gpu, 2, 64).unwrap();
    shape_err(quantize_act(&gpu, &x.slice(..), 2, 48, &mut acts));
    shape_err(quantize_act(&gpu, &x.slice(..100), 2, 64, &mut acts));
    let r = quantize_act(&gpu, &x.slice(..), 4, 64, &mut acts);
    assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{r:?}");
    assert!(QuantizedActs::new(&gpu, 1, 33).is_err());

    // matmul_quant: a weight of 3 rows × 64 (Q4_1).
    let q = quant::quantize(QuantType::Q4_1, &weight_source(3, 64, 6)).unwrap();
    let values = gpu.upload(&q.values).unwrap();
    let scales = gpu.upload(&q.scales.iter().map(|h| h.to_bits()).collect::<Vec<_>>()).unwrap();
    let mins = gpu.upload(&q.mins.iter().map(|h| h.to_bits()).collect::<Vec<_>>()).unwrap();
    let wq = QuantBuffers { qtype: QuantType::Q4_1, values: &values, scales: &scales, mins: Some(&mins) };
    quantize_act(&gpu, &x.slice(..), 2, 64, &mut acts).unwrap();
    let mut out = gpu.alloc::<f32>(2 * 3).unwrap();
    matmul_quant(&gpu, &wq, 3, 64, &acts, &mut out.slice_mut(..)).unwrap();
    shape_err(matmul_quant(&gpu, &wq, 4, 64, &acts, &mut out.slice_mut(..))); // weight too short
    shape_err(matmul_quant(&gpu, &wq, 3, 96, &acts, &mut out.slice_mut(..))); // k ≠ the activations'
    shape_err(matmul_quant(&gpu, &wq, 3, 40, &acts, &mut out.slice_mut(..))); // k % 32
    shape_err(matmul_quant(&gpu, &wq, 3, 64, &acts, &mut out.slice_mut(..5))); // output too short
    let no_mins = QuantBuffers { mins: None, ..wq };
    invalid(matmul_quant(&gpu, &no_mins, 3, 64, &acts, &mut out.slice_mut(..)));
    let q8_with_mins = QuantBuffers { qtype: QuantType::Q8_0, ..wq };
    invalid(matmul_quant(&gpu, &q8_with_mins, 1, 64, &acts, &mut out.slice_mut(..)));

    // matmul_dense: weight, input or output too short.
    let wd = gpu.upload(&random(3 * 64, 7, 1.0)).unwrap();
    matmul_dense(&gpu, DenseBuffer::F32(&wd), 3, 64, &x.slice(..), 2, &mut out.slice_mut(..)).unwrap();
    shape_err(matmul_dense(&gpu, DenseBuffer::F32(&wd), 4, 64, &x.slice(..), 2, &mut out.slice_mut(..)));
    shape_err(matmul_dense(&gpu, DenseBuffer::F32(&wd), 3, 64, &x.slice(..127), 2, &mut out.slice_mut(..)));
    shape_err(matmul_dense(&gpu, DenseBuffer::F32(&wd), 3, 64, &x.slice(..), 2, &mut out.slice_mut(..5)));

    // dequantize: output too short, a dense weight.
    let mut half_out = gpu.alloc::<u16>(3 * 64 - 1).unwrap();
    shape_err(dequantize(&gpu, &wq, 6, Half::F16, &mut half_out));
    let dense_src = random(2 * 64, 8, 1.0);
    let dense = Weight::F32(Dense { name: "d", shape: &[2, 64], data: &dense_src });
    let dd = DeviceWeight::upload(&gpu, &dense).unwrap();
    invalid(dd.dequantize(&gpu, Half::Bf16, &mut half_out));

    // DeviceWeight::upload: not 2-D, wrong data length, k % 32 for a quantized weight, empty.
    shape_err(
        DeviceWeight::upload(&gpu, &Weight::F32(Dense { name: "d", shape: &[2, 4, 16], data: &dense_src }))
            .map(|_| ()),
    );
    shape_err(
        DeviceWeight::upload(&gpu, &Weight::F32(Dense { name: "d", shape: &[3, 64], data: &dense_src }))
            .map(|_| ()),
    );
    let bad_k = Weight::Quant(QuantWeight {
        name: "q",
        qtype: QuantType::Q4_1,
        shape: &[4, 48],
        values: &q.values,
        scales: &q.scales,
        mins: &q.mins,
    });
    shape_err(DeviceWeight::upload(&gpu, &bad_k).map(|_| ()));
    let bad_mins = Weight::Quant(QuantWeight {
        name: "q",
        qtype: QuantType::Q4_1,
        shape: &[3, 64],
        values: &q.values,
        scales: &q.scales,
        mins: &q.mins[1..],
    });
    shape_err(DeviceWeight::upload(&gpu, &bad_mins).map(|_| ()));
    invalid(
        DeviceWeight::upload(&gpu, &Weight::F32(Dense { name: "e", shape: &[0, 64], data: &[] })).map(|_| ()),
    );

    // Nothing bad was launched: the stream is healthy and the good products ran.
    gpu.sync().unwrap();
}
