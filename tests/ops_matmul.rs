//! Parity, determinism and error tests of `ops::matmul` for every weight type.
//!
//! * every weight type × n ∈ {1, 3, 6, 8, 37} × odd shapes (rows not a multiple of any tile,
//!   k covering whole 8-block groups and tails), random inputs that are never zero, against the
//!   f64 reference on the dequantized weight, with the bounds of `ops::tolerance`;
//! * the quantized kernels also against the reference with the same activation rounding (the
//!   kernel's own arithmetic);
//! * the AVX2 and scalar paths bit-identical; 1, 2 and 4 threads bit-identical; a batch of rows
//!   bit-identical to the same rows one call each;
//! * bad shapes and too-small scratch are errors, never panics.
//!
//! `cargo test --release --test ops_matmul -- --nocapture` prints the worst error per type.

use half::{bf16, f16};
use medregion::ops::tolerance::{tolerance, ErrorStats, Op, Tolerance};
use medregion::ops::{self, reference, Isa, MatmulScratch, ThreadPool};
use medregion::quant::{self, QuantType, Quantized};
use medregion::tensor::{Dense, QuantWeight, Weight, WeightType};
use medregion::Error;

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

/// Deterministic xorshift values, never zero: uniform in ±(0, 1], or (`bell`) a sum of four
/// uniforms (roughly normal) with the sign of a fifth.
fn random(len: usize, seed: u64, bell: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| {
            if bell {
                let v = (u() + u() + u() + u() - 2.0).abs().max(1e-3);
                if u() < 0.5 {
                    -v
                } else {
                    v
                }
            } else {
                2.0 * u() - 1.0
            }
        })
        .collect()
}

fn is_quant(wt: WeightType) -> bool {
    matches!(wt, WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q4_1)
}

/// One product on every path; checks tolerances and bit-identity; returns the Op::Matmul errors.
fn check_case(
    wt: WeightType,
    n: usize,
    rows: usize,
    k: usize,
    seed: u64,
    bell: bool,
    pools: &[ThreadPool],
) -> ErrorStats {
    let src = random(rows * k, seed, bell);
    let x = random(n * k, seed ^ 0xABCD, bell);
    let owned = Owned::new(wt, &src);
    let shape = [rows, k];
    let w = owned.view(&shape);
    let wf = w.to_f32().unwrap();
    let want = reference::matmul_f64(&x, n, &wf, rows, k);
    let scale = reference::abs_products(&x, n, &wf, rows, k);
    let mut scratch = MatmulScratch::with_capacity(n, k.next_multiple_of(32)).unwrap();

    let mut got = vec![f32::NAN; n * rows];
    ops::matmul(&x, n, &w, &mut got, &pools[0]).unwrap();
    let stats = ErrorStats::measure(&got, &want, &scale);
    let tol = tolerance(Op::Matmul, wt).unwrap();
    assert!(tol.accepts(&stats), "{wt:?} n={n} rows={rows} k={k} bell={bell}: {stats:?} vs {tol:?}");
    if is_quant(wt) {
        let want_q = reference::matmul_quantized_activations_f64(&x, n, &wf, rows, k);
        let stats_q = ErrorStats::measure(&got, &want_q, &scale);
        let tol_q = tolerance(Op::MatmulQuantizedActivations, wt).unwrap();
        assert!(tol_q.accepts(&stats_q), "{wt:?} n={n} rows={rows} k={k}: kernel arithmetic {stats_q:?}");
    }

    // Every ISA and every thread count give the same bits.
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni].into_iter().filter(|i| i.available())
    {
        for pool in pools {
            let mut other = vec![f32::NAN; n * rows];
            ops::matmul_with_isa(&x, n, &w, &mut other, &mut scratch, pool, isa).unwrap();
            assert_bits_eq(
                &got,
                &other,
                &format!("{wt:?} n={n} rows={rows} k={k} {isa:?} threads={}", pool.threads()),
            );
        }
    }
    // A batch equals its rows one at a time.
    if n > 1 {
        for i in [0, n / 2, n - 1] {
            let mut one = vec![f32::NAN; rows];
            ops::matmul_into(&x[i * k..(i + 1) * k], 1, &w, &mut one, &mut scratch, &pools[0]).unwrap();
            assert_bits_eq(
                &got[i * rows..(i + 1) * rows],
                &one,
                &format!("{wt:?} row {i} of {n}, rows={rows} k={k}"),
            );
        }
    }
    stats
}

fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: element {i}: {x} vs {y}");
    }
}

fn pools() -> Vec<ThreadPool> {
    [1, 2, 4].into_iter().map(|t| ThreadPool::new(t).unwrap()).collect()
}

#[test]
fn every_type_every_batch_size_matches_reference() {
    let pools = pools();
    // (rows, k): rows never a multiple of 4 or 8; k = 32·m with m < 8, = 8, and with a tail group
    // of 1 to 5 blocks (1, 2, 3 and 4 take the compact tail on VNNI CPUs; 18 blocks is
    // SmolLM2's 576).
    let shapes = [(1, 32), (5, 96), (13, 256), (37, 288), (3, 544), (7, 576), (9, 384), (5, 64), (3, 416)];
    for wt in WeightType::ALL {
        let mut worst = ErrorStats::default();
        // Every n takes the interleaved path on AVX2 (1-row panels too: n = 1 and 9's last),
        // and the scalar path never does: the bits must still agree.
        for n in [1, 2, 3, 6, 8, 9, 37] {
            for (s, &(rows, k)) in shapes.iter().enumerate() {
                let e = check_case(wt, n, rows, k, (n * 31 + s) as u64, s % 2 == 1, &pools);
                worst.rel_l2 = worst.rel_l2.max(e.rel_l2);
                worst.max_rel_abs = worst.max_rel_abs.max(e.max_rel_abs);
            }
        }
        eprintln!(
            "{:>5}: worst rel_l2 {:.2e}, worst max_rel_abs {:.2e}",
            wt.name(),
            worst.rel_l2,
            worst.max_rel_abs
        );
    }
}

#[test]
fn float_weights_with_any_k() {
    let pools = pools();
    for wt in [WeightType::F32, WeightType::F16, WeightType::Bf16] {
        for (rows, k) in [(7, 1), (9, 7), (6, 29), (11, 300), (2, 588)] {
            for n in [1, 4, 37] {
                check_case(wt, n, rows, k, (rows * k + n) as u64, false, &pools);
            }
        }
    }
}

#[test]
fn long_rows_stay_within_tolerance() {
    // Real model widths: k = 4096 and 14336 (LLaMA-3-8B FFN down), a few rows.
    let pools = pools();
    for wt in WeightType::ALL {
        for (n, rows, k) in [(6, 9, 4096), (1, 3, 14336)] {
            let e = check_case(wt, n, rows, k, 7 + k as u64, true, &pools[..2]);
            eprintln!(
                "{:>5} n={n} rows={rows} k={k}: rel_l2 {:.2e}, max_rel_abs {:.2e}",
                wt.name(),
                e.rel_l2,
                e.max_rel_abs
            );
        }
    }
}

#[test]
fn empty_dimensions() {
    let pool = ThreadPool::single();
    let w = vec![1.0f32; 64];
    let shape = [2usize, 32];
    let weight = Weight::F32(Dense { name: "w", shape: &shape, data: &w });
    ops::matmul(&[], 0, &weight, &mut [], &pool).unwrap();
    let empty_shape = [0usize, 32];
    let empty = Weight::F32(Dense { name: "w", shape: &empty_shape, data: &[] });
    ops::matmul(&[1.0; 32], 1, &empty, &mut [], &pool).unwrap();
    let zero_k = [3usize, 0];
    let wk = Weight::F32(Dense { name: "w", shape: &zero_k, data: &[] });
    let mut out = [f32::NAN; 6];
    ops::matmul(&[], 2, &wk, &mut out, &pool).unwrap();
    assert_eq!(out, [0.0; 6]);
}

#[test]
fn bad_shapes_are_errors() {
    let pool = ThreadPool::new(2).unwrap();
    let src = random(4 * 64, 1, false);
    let q = quant::quantize(QuantType::Q4_1, &src).unwrap();
    let shape = [4usize, 64];
    let good = Weight::Quant(QuantWeight {
        name: "w",
        qtype: q.qtype,
        shape: &shape,
        values: &q.values,
        scales: &q.scales,
        mins: &q.mins,
    });
    let x = random(2 * 64, 2, false);
    let mut out = vec![0.0f32; 2 * 4];
    ops::matmul(&x, 2, &good, &mut out, &pool).unwrap();
    let shape_err = |r: medregion::Result<()>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    shape_err(ops::matmul(&x[1..], 2, &good, &mut out, &pool));
    shape_err(ops::matmul(&x, 3, &good, &mut out, &pool));
    shape_err(ops::matmul(&x, 2, &good, &mut out[1..], &pool));
    shape_err(reference::matmul(&x, 2, &good, &mut out[1..]));
    let mut bad = good;
    if let Weight::Quant(ref mut b) = bad {
        b.mins = &q.mins[1..];
    }
    shape_err(ops::matmul(&x, 2, &bad, &mut out, &pool));
    if let Weight::Quant(ref mut b) = bad {
        b.mins = &q.mins;
        b.scales = &q.scales[..3];
    }
    shape_err(ops::matmul(&x, 2, &bad, &mut out, &pool));
    if let Weight::Quant(ref mut b) = bad {
        b.scales = &q.scales;
        b.values = &q.values[..10];
    }
    shape_err(ops::matmul(&x, 2, &bad, &mut out, &pool));
    // Quantized weights need whole blocks of k.
    let odd_shape = [8usize, 32 + 16];
    let odd = Weight::Quant(QuantWeight {
        shape: &odd_shape,
        ..match good {
            Weight::Quant(g) => g,
            _ => unreachable!(),
        }
    });
    shape_err(ops::matmul(&random(48, 3, false), 1, &odd, &mut [0.0; 8], &pool));
    // Dense weights: rank and data length.
    let w = random(24, 4, false);
    let rank3 = [2usize, 3, 4];
    shape_err(ops::matmul(
        &random(4, 5, false),
        1,
        &Weight::F32(Dense { name: "w", shape: &rank3, data: &w }),
        &mut [0.0; 6],
        &pool,
    ));
    let short = [6usize, 5];
    shape_err(ops::matmul(
        &random(5, 5, false),
        1,
        &Weight::F16(Dense { name: "w", shape: &short, data: &[f16::ONE; 24] }),
        &mut [0.0; 6],
        &pool,
    ));
    // Overflowing shapes are errors, not panics.
    let huge = [usize::MAX, 2];
    assert!(ops::matmul(
        &[1.0, 2.0],
        1,
        &Weight::F32(Dense { name: "w", shape: &huge, data: &w }),
        &mut [0.0; 1],
        &pool
    )
    .is_err());
}

#[test]
fn scratch_must_be_large_enough() {
    let pool = ThreadPool::single();
    let src = random(2 * 64, 9, false);
    let q = quant::quantize(QuantType::Q8_0, &src).unwrap();
    let shape = [2usize, 64];
    let w = Weight::Quant(QuantWeight {
        name: "w",
        qtype: q.qtype,
        shape: &shape,
        values: &q.values,
        scales: &q.scales,
        mins: &[],
    });
    let x = random(3 * 64, 10, false);
    let mut out = vec![0.0f32; 6];
    let mut small = MatmulScratch::with_capacity(2, 64).unwrap();
    assert!(matches!(
        ops::matmul_into(&x, 3, &w, &mut out, &mut small, &pool),
        Err(Error::BufferTooSmall { .. })
    ));
    small.reserve(3, 64).unwrap();
    ops::matmul_into(&x, 3, &w, &mut out, &mut small, &pool).unwrap();
    // Float weights need no scratch at all.
    let f = random(2 * 64, 11, false);
    let wf = Weight::F32(Dense { name: "w", shape: &shape, data: &f });
    ops::matmul_into(&x, 3, &wf, &mut out, &mut MatmulScratch::new(), &pool).unwrap();
}

#[test]
fn tolerance_table_is_consistent() {
    for (op, wt, t) in ops::tolerance::TABLE {
        assert!(t.rel_l2 > 0.0 && t.max_rel_abs > 0.0, "{op:?} {wt:?}");
        if *op == Op::MatmulQuantizedActivations {
            let loose: Tolerance = tolerance(Op::Matmul, *wt).unwrap();
            assert!(t.rel_l2 <= loose.rel_l2);
        }
    }
}

/// `ops::gemm` (the packed many-row GEMM) for one weight type and shape: within the matmul
/// tolerance of the f64 reference; AVX2 and scalar, 1/2/4 threads, and every row computed
/// alone give the same bits; quantized weights give exactly `ops::matmul`'s result.
fn check_gemm(
    wt: WeightType,
    n: usize,
    rows: usize,
    k: usize,
    seed: u64,
    pools: &[ThreadPool],
) -> ErrorStats {
    let src = random(rows * k, seed, true);
    let x = random(n * k, seed ^ 0x5A5A, true);
    let owned = Owned::new(wt, &src);
    let shape = [rows, k];
    let w = owned.view(&shape);
    let wf = w.to_f32().unwrap();
    let want = reference::matmul_f64(&x, n, &wf, rows, k);
    let scale = reference::abs_products(&x, n, &wf, rows, k);
    let mut got = vec![f32::NAN; n * rows];
    ops::gemm(&x, n, &w, &mut got, &pools[0]).unwrap();
    let stats = ErrorStats::measure(&got, &want, &scale);
    let tol = tolerance(Op::Matmul, wt).unwrap();
    let what = format!("gemm {wt:?} n={n} rows={rows} k={k}");
    assert!(tol.accepts(&stats), "{what}: {stats:?} vs {tol:?}");
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni].into_iter().filter(|i| i.available())
    {
        for pool in pools {
            let mut other = vec![f32::NAN; n * rows];
            ops::gemm_with_isa(&x, n, &w, &mut other, pool, isa).unwrap();
            assert_bits_eq(&got, &other, &format!("{what} {isa:?} threads={}", pool.threads()));
        }
    }
    for i in [0, n / 2, n - 1] {
        let mut one = vec![f32::NAN; rows];
        ops::gemm(&x[i * k..(i + 1) * k], 1, &w, &mut one, &pools[0]).unwrap();
        assert_bits_eq(&got[i * rows..(i + 1) * rows], &one, &format!("{what}: row {i} alone"));
    }
    if is_quant(wt) {
        let mut m = vec![f32::NAN; n * rows];
        ops::matmul(&x, n, &w, &mut m, &pools[0]).unwrap();
        assert_bits_eq(&got, &m, &format!("{what}: quantized gemm = matmul"));
    }
    stats
}

#[test]
fn gemm_matches_reference_and_is_deterministic() {
    let pools = pools();
    // n around the 6-row micro-tile and the 120-row task block; rows around the 16-row panel;
    // k around the 256-long k block, with tails everywhere.
    let cases = [
        (1, 1, 1),
        (5, 15, 7),
        (7, 17, 255),
        (6, 16, 256),
        (13, 33, 257),
        (121, 40, 600),
        (250, 31, 96),
        (9, 18, 288),
    ];
    for wt in WeightType::ALL {
        let mut worst = ErrorStats::default();
        for (c, &(n, rows, k)) in cases.iter().enumerate() {
            if is_quant(wt) && k % 32 != 0 {
                continue; // block-32 formats: k a multiple of 32
            }
            let e = check_gemm(wt, n, rows, k, 100 + c as u64, &pools);
            worst.rel_l2 = worst.rel_l2.max(e.rel_l2);
            worst.max_rel_abs = worst.max_rel_abs.max(e.max_rel_abs);
        }
        eprintln!(
            "gemm {:>5}: worst rel_l2 {:.2e}, max_rel_abs {:.2e}",
            wt.name(),
            worst.rel_l2,
            worst.max_rel_abs
        );
    }
    // The vision encoder's widest product (k = 3072, ViT-B fc2) with a partial last block.
    let e = check_gemm(WeightType::F32, 130, 20, 3072, 9, &pools[..2]);
    eprintln!("gemm f32 k=3072: rel_l2 {:.2e}, max_rel_abs {:.2e}", e.rel_l2, e.max_rel_abs);
}

#[test]
fn gemm_bad_shapes_and_empty_dimensions() {
    let pool = ThreadPool::new(2).unwrap();
    let w = vec![1.0f32; 64];
    let shape = [2usize, 32];
    let weight = Weight::F32(Dense { name: "w", shape: &shape, data: &w });
    ops::gemm(&[], 0, &weight, &mut [], &pool).unwrap();
    let zero_k = [3usize, 0];
    let wk = Weight::F32(Dense { name: "w", shape: &zero_k, data: &[] });
    let mut out = [f32::NAN; 6];
    ops::gemm(&[], 2, &wk, &mut out, &pool).unwrap();
    assert_eq!(out, [0.0; 6]);
    // x too short, out too short, weight data not matching its shape: errors naming the weight.
    let mut out = [0.0f32; 4];
    let e = ops::gemm(&[1.0; 63], 2, &weight, &mut out, &pool).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let e = ops::gemm(&[1.0; 64], 2, &weight, &mut out[..3], &pool).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let bad = Weight::F32(Dense { name: "w", shape: &shape, data: &w[..60] });
    let e = ops::gemm(&[1.0; 64], 2, &bad, &mut out, &pool).unwrap_err();
    assert!(e.to_string().contains("`w`"), "{e}");
    assert_eq!(out, [0.0; 4], "a refused call leaves the output untouched");
}

/// The integer block sums at their extremes, on every ISA this CPU has (the VNNI kernels bias
/// Q8_0 weights by +128 and read Q4 nibbles unsigned, then subtract the bias from the
/// activation block sums): weights of −128, ±127 (Q8_0) and nibbles of 0 and 15 (Q4) against
/// activations that quantize to exactly ±127, with scales that are powers of two, so every f32
/// step is exact and the expected outputs are the integer dot products themselves.
#[test]
fn integer_extremes_are_exact_on_every_isa() {
    let pools = pools();
    // 9 to 13 blocks: one whole group of 8 and a masked tail of 1 to 5 (the compact tails of
    // 1, 2 and 4 blocks, 3 padded to 4, and 5 padded to 8); n = 1 (GEMV), 2..8 (interleaved)
    // and 9.
    let rows = 5;
    for (qtype, k) in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q4_1]
        .into_iter()
        .flat_map(|q| [288, 320, 352, 384, 416].map(|k| (q, k)))
    {
        let nb = k / 32;
        let values: Vec<u8> = (0..rows * nb)
            .flat_map(|b| {
                let bytes = if qtype == QuantType::Q8_0 { 32 } else { 16 };
                (0..bytes).map(move |j| match (qtype, (b + j) % 4) {
                    (QuantType::Q8_0, 0) => 0x80, // −128
                    (QuantType::Q8_0, 1) => 0x7F,
                    (QuantType::Q8_0, 2) => 0x81, // −127
                    (QuantType::Q8_0, _) => (b * 7 + j * 13) as u8,
                    (_, 0 | 1) => 0xFF, // both nibbles 15
                    (_, 2) => 0x00,
                    _ => (b * 7 + j * 13) as u8,
                })
            })
            .collect();
        let scales: Vec<f16> = (0..rows * nb).map(|b| f16::from_f32(1.0 / (1 << (b % 3)) as f32)).collect();
        let mins: Vec<f16> = if qtype == QuantType::Q4_1 {
            (0..rows * nb).map(|b| f16::from_f32(if b % 2 == 0 { -0.5 } else { 0.25 })).collect()
        } else {
            Vec::new()
        };
        let q = Quantized { qtype, values, scales, mins };
        let shape = [rows, k];
        let w = Weight::Quant(QuantWeight {
            name: "extremes",
            qtype,
            shape: &shape,
            values: &q.values,
            scales: &q.scales,
            mins: &q.mins,
        });
        let wf = w.to_f32().unwrap();
        for n in [1, 2, 3, 6, 8, 9] {
            // ±1 in every block (its max), so the int8 activations are exactly ±127 and the
            // activation scale 1/127.
            let x: Vec<f32> = (0..n * k).map(|i| if (i * 5 + i / 7) % 3 == 0 { -1.0 } else { 1.0 }).collect();
            // Exact: Σ_b d_w · (S_b / 127) (+ m_w · Σx / 127) with integer S_b; in f64.
            let terms: Vec<Vec<f64>> = (0..n * rows)
                .map(|o| {
                    let (i, r) = (o / rows, o % rows);
                    (0..k).map(|c| x[i * k + c] as f64 * wf[r * k + c] as f64).collect()
                })
                .collect();
            let want: Vec<f64> = terms.iter().map(|t| t.iter().sum()).collect();
            let size: Vec<f64> = terms.iter().map(|t| t.iter().map(|v| v.abs()).sum()).collect();
            let mut first: Option<Vec<f32>> = None;
            let mut scratch = MatmulScratch::with_capacity(n, k).unwrap();
            for isa in
                [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni].into_iter().filter(|i| i.available())
            {
                for pool in &pools {
                    let mut got = vec![f32::NAN; n * rows];
                    ops::matmul_with_isa(&x, n, &w, &mut got, &mut scratch, pool, isa).unwrap();
                    for (o, (&g, &e)) in got.iter().zip(&want).enumerate() {
                        // The f32 steps round (the activation scale 1/127, each product and
                        // sum): 1e-6 of the summed magnitudes. A wrong bias would be off by
                        // 8 or 128 times a block's activation sum: orders of magnitude more.
                        let tol = 1e-6 * size[o];
                        assert!(
                            (g as f64 - e).abs() <= tol,
                            "{qtype:?} {isa:?} n={n} threads={} out {o}: {g} vs exact {e}",
                            pool.threads()
                        );
                    }
                    // And every ISA and thread count gives the same bits.
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert_bits_eq(f, &got, &format!("{qtype:?} {isa:?} n={n}")),
                    }
                }
            }
        }
    }
}

/// `ops::matmul_group_into` gives each weight's `matmul_into` result bit for bit: the fused
/// path (one format: Q/K/V-like row counts, 1 to 4 weights, n = 1 and batched, 1 and 2
/// threads, a 2-block tail), mixed formats and float weights (one by one), and more than
/// `MATMUL_GROUP_MAX` weights.
#[test]
fn grouped_products_equal_one_call_each() {
    let pools = pools();
    let k = 576; // 18 blocks: two whole groups and a 2-block tail
    let row_counts = [576, 192, 192, 130, 70];
    let cases: [&[WeightType]; 6] = [
        &[WeightType::Q4_0, WeightType::Q4_0, WeightType::Q4_0],
        &[WeightType::Q8_0, WeightType::Q8_0],
        &[WeightType::Q4_1],
        &[WeightType::Q4_1, WeightType::Q4_1, WeightType::Q4_1, WeightType::Q4_1],
        &[WeightType::Q8_0, WeightType::Q4_0, WeightType::F16],
        &[WeightType::Q4_0, WeightType::Q4_0, WeightType::Q4_0, WeightType::Q4_0, WeightType::Q4_0],
    ];
    for (c, types) in cases.iter().enumerate() {
        let owned: Vec<Owned> = types
            .iter()
            .enumerate()
            .map(|(j, &wt)| Owned::new(wt, &random(row_counts[j] * k, (c * 10 + j) as u64, true)))
            .collect();
        let shapes: Vec<[usize; 2]> = (0..types.len()).map(|j| [row_counts[j], k]).collect();
        let ws: Vec<Weight<'_>> = owned.iter().zip(&shapes).map(|(o, s)| o.view(s)).collect();
        let refs: Vec<&Weight<'_>> = ws.iter().collect();
        for n in [1, 6] {
            let x = random(n * k, 77 + n as u64, true);
            let mut scratch = MatmulScratch::with_capacity(n, k).unwrap();
            for pool in &pools[..2] {
                let want: Vec<Vec<f32>> = ws
                    .iter()
                    .map(|w| {
                        let mut o = vec![f32::NAN; n * w.shape()[0]];
                        ops::matmul_into(&x, n, w, &mut o, &mut scratch, pool).unwrap();
                        o
                    })
                    .collect();
                let mut got: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.shape()[0]]).collect();
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| o.as_mut_slice()).collect();
                ops::matmul_group_into(&x, n, &refs, &mut outs, &mut scratch, pool).unwrap();
                for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                    let what = format!("case {c} weight {j} n={n} threads={}", pool.threads());
                    assert_bits_eq(g, w, &what);
                    // And both are right: the f64 product with the kernel's activation rounding
                    // (both calls share the kernels, so equality alone would not show it).
                    let (rows, wf) = (ws[j].shape()[0], ws[j].to_f32().unwrap());
                    let (want_f64, op) = if is_quant(types[j]) {
                        let r = reference::matmul_quantized_activations_f64(&x, n, &wf, rows, k);
                        (r, Op::MatmulQuantizedActivations)
                    } else {
                        (reference::matmul_f64(&x, n, &wf, rows, k), Op::Matmul)
                    };
                    let scale = reference::abs_products(&x, n, &wf, rows, k);
                    let stats = ErrorStats::measure(g, &want_f64, &scale);
                    let tol = tolerance(op, types[j]).unwrap();
                    assert!(tol.accepts(&stats), "{what}: {stats:?} vs {tol:?}");
                }
            }
        }
    }
}

/// `Activations::F32`: a quantized weight gives, on every ISA, thread count and batch size,
/// the bits of the float kernel on its dequantized f32 copy (the decoder then computes what
/// the dequantized model computes), within the F32 bound of the f64 reference; the int8 path
/// on the same scratch object gives different numbers (so the mode is really switched), and
/// a group of products equals one call each.
#[test]
fn f32_activations_equal_the_dequantized_product() {
    let pools = pools();
    let shapes = [(1, 32), (5, 96), (13, 256), (7, 576), (9, 288), (3, 1536)];
    for wt in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1] {
        for (s, &(rows, k)) in shapes.iter().enumerate() {
            let owned = Owned::new(wt, &random(rows * k, 900 + s as u64, s % 2 == 0));
            let shape = [rows, k];
            let w = owned.view(&shape);
            let wf = w.to_f32().unwrap();
            let dense = Weight::F32(Dense { name: "w", shape: &shape, data: &wf });
            for n in [1, 2, 3, 4, 6, 8, 9, 37] {
                let x = random(n * k, 31 * s as u64 + n as u64, true);
                let mut scratch = MatmulScratch::with_capacity(n, k).unwrap();
                let mut want = vec![f32::NAN; n * rows];
                ops::matmul_into(&x, n, &dense, &mut want, &mut scratch, &pools[0]).unwrap();
                let mut int8 = vec![f32::NAN; n * rows];
                ops::matmul_into(&x, n, &w, &mut int8, &mut scratch, &pools[0]).unwrap();
                assert!(
                    int8.iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()),
                    "{wt:?} {rows}x{k} n={n}: the int8 path gave the f32 path's bits"
                );
                let reference = reference::matmul_f64(&x, n, &wf, rows, k);
                let scale = reference::abs_products(&x, n, &wf, rows, k);
                let stats = ErrorStats::measure(&want, &reference, &scale);
                let tol = tolerance(Op::Matmul, WeightType::F32).unwrap();
                assert!(tol.accepts(&stats), "{wt:?} {rows}x{k} n={n}: {stats:?} vs {tol:?}");

                scratch.set_activations(ops::Activations::F32);
                for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni]
                    .into_iter()
                    .filter(|i| i.available())
                {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; n * rows];
                        ops::matmul_with_isa(&x, n, &w, &mut got, &mut scratch, pool, isa).unwrap();
                        let what = format!("{wt:?} {rows}x{k} n={n} {isa:?} threads={}", pool.threads());
                        assert_bits_eq(&got, &want, &what);
                    }
                }
                // Grouped (Q, K, V-like: the same weight three times) equals one call each.
                let mut outs = [vec![f32::NAN; n * rows], vec![f32::NAN; n * rows], vec![f32::NAN; n * rows]];
                let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                ops::matmul_group_into(&x, n, &[&w, &w, &w], &mut views, &mut scratch, &pools[1]).unwrap();
                for (j, o) in outs.iter().enumerate() {
                    assert_bits_eq(o, &want, &format!("{wt:?} {rows}x{k} n={n} grouped output {j}"));
                }
            }
        }
    }
}

/// Bad groups are errors before anything is computed: outputs and weights differ in count, or
/// one weight (not the first) has the wrong columns or output length; no output is touched.
#[test]
fn bad_groups_are_errors_and_touch_nothing() {
    let pool = ThreadPool::new(1).unwrap();
    let k = 64;
    let a = Owned::new(WeightType::Q8_0, &random(8 * k, 1, true));
    let b = Owned::new(WeightType::Q8_0, &random(4 * k, 2, true));
    let (sa, sb, sb_bad) = ([8, k], [4, k], [2, 2 * k]);
    let (wa, wb, wb_bad) = (a.view(&sa), b.view(&sb), b.view(&sb_bad));
    let x = random(2 * k, 3, true);
    let mut scratch = MatmulScratch::with_capacity(2, k).unwrap();
    let (mut oa, mut ob) = (vec![7.0f32; 16], vec![7.0f32; 8]);
    let err = ops::matmul_group_into(&x, 2, &[&wa, &wb], &mut [&mut oa[..]], &mut scratch, &pool);
    assert!(matches!(err, Err(Error::InvalidArgument { .. })), "{err:?}");
    let err =
        ops::matmul_group_into(&x, 2, &[&wa, &wb_bad], &mut [&mut oa[..], &mut ob[..]], &mut scratch, &pool);
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    let err =
        ops::matmul_group_into(&x, 2, &[&wa, &wb], &mut [&mut oa[..], &mut ob[..7]], &mut scratch, &pool);
    assert!(matches!(err, Err(Error::Shape { .. })), "{err:?}");
    assert!(oa.iter().chain(&ob).all(|&v| v == 7.0), "an output was written");
}
