//! Matmul kernels on named real-model shapes (`cargo bench --bench matmul`).
//!
//! Criterion groups: decode GEMV (`n = 1`) and batched decode (`n = 6`) for Q8_0, Q4_0, Q4_1,
//! F16 and F32 weights of LLaMA-3-8B (4096×4096), SmolLM2 (1536×576, 576×1536) and
//! Llama-3.2-1B (2048×8192); encoder GEMM (`n = 512`, ViT-B 768→768 and 768→3072) in F32 and
//! F16; with 1 and 2 threads. Throughput is reported as weight bytes (GEMV) or FLOP/2 (GEMM).
//! The weights here stay hot in cache between iterations where they fit; the cold,
//! bandwidth-relative numbers come from `medregion::ops::bench_report`:
//!
//! ```sh
//! MEDREGION_MATMUL_REPORT=1 cargo bench --bench matmul          # Markdown + JSON report only
//! ```

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use half::f16;
use medregion::ops::{self, BenchOptions, MatmulScratch, ThreadPool};
use medregion::quant::{self, QuantType, Quantized};
use medregion::tensor::{Dense, QuantWeight, Weight};

enum Owned {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Quant(Quantized),
}

impl Owned {
    fn view<'a>(&'a self, shape: &'a [usize]) -> Weight<'a> {
        match self {
            Owned::F32(d) => Weight::F32(Dense { name: "bench", shape, data: d }),
            Owned::F16(d) => Weight::F16(Dense { name: "bench", shape, data: d }),
            Owned::Quant(q) => Weight::Quant(QuantWeight {
                name: "bench",
                qtype: q.qtype,
                shape,
                values: &q.values,
                scales: &q.scales,
                mins: &q.mins,
            }),
        }
    }
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 + 0.5) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn weights(rows: usize, cols: usize, types: &[&'static str]) -> Vec<(&'static str, Owned, usize)> {
    let src = random(rows * cols, rows as u64 ^ cols as u64);
    types
        .iter()
        .map(|&t| {
            let owned = match t {
                "f32" => Owned::F32(src.clone()),
                "f16" => Owned::F16(src.iter().map(|&v| f16::from_f32(v)).collect()),
                q => Owned::Quant(
                    quant::quantize(QuantType::parse(q).expect("known type"), &src).expect("quantize"),
                ),
            };
            let bytes = match &owned {
                Owned::F32(d) => d.len() * 4,
                Owned::F16(d) => d.len() * 2,
                Owned::Quant(q) => q.values.len() + 2 * (q.scales.len() + q.mins.len()),
            };
            (t, owned, bytes)
        })
        .collect()
}

fn gemv(c: &mut Criterion, pools: &[ThreadPool]) {
    let shapes = [
        ("llama3-8b 4096x4096", 4096, 4096),
        ("smollm2 1536x576", 1536, 576),
        ("smollm2 576x1536", 576, 1536),
        ("llama3.2-1b 2048x8192", 2048, 8192),
    ];
    for (name, rows, cols) in shapes {
        let mut g = c.benchmark_group(format!("gemv {name}"));
        g.sample_size(20)
            .warm_up_time(std::time::Duration::from_millis(300))
            .measurement_time(std::time::Duration::from_secs(1));
        let shape = [rows, cols];
        for (t, owned, bytes) in weights(rows, cols, &["q8_0", "q4_0", "q4_1", "f16", "f32"]) {
            let w = owned.view(&shape);
            g.throughput(Throughput::Bytes(bytes as u64));
            for n in [1, 6] {
                let x = random(n * cols, 7);
                let mut out = vec![0.0f32; n * rows];
                let mut scratch = MatmulScratch::with_capacity(n, cols).expect("scratch");
                for pool in pools {
                    let id = BenchmarkId::new(format!("{t} n={n}"), format!("{}t", pool.threads()));
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            ops::matmul_into(black_box(&x), n, &w, &mut out, &mut scratch, pool)
                                .expect("matmul")
                        })
                    });
                }
            }
        }
        g.finish();
    }
}

fn gemm(c: &mut Criterion, pools: &[ThreadPool]) {
    let n = 512;
    for (k, rows) in [(768, 768), (768, 3072)] {
        let mut g = c.benchmark_group(format!("gemm vit-b n=512 {k}->{rows}"));
        g.sample_size(10)
            .warm_up_time(std::time::Duration::from_millis(300))
            .measurement_time(std::time::Duration::from_secs(2));
        g.throughput(Throughput::Elements((n * k * rows) as u64));
        let shape = [rows, k];
        let x = random(n * k, 3);
        let mut out = vec![0.0f32; n * rows];
        for (t, owned, _) in weights(rows, k, &["f32", "f16"]) {
            let w = owned.view(&shape);
            for pool in pools {
                g.bench_function(BenchmarkId::new(t, format!("{}t", pool.threads())), |b| {
                    b.iter(|| ops::matmul(black_box(&x), n, &w, &mut out, pool).expect("matmul"))
                });
            }
        }
        g.finish();
    }
}

fn main() {
    if std::env::var_os("MEDREGION_MATMUL_REPORT").is_some() {
        let report = ops::bench_report(&BenchOptions::default()).expect("bench report");
        println!("{}", report.to_markdown());
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return;
    }
    let pools: Vec<ThreadPool> = [1, 2].into_iter().map(|t| ThreadPool::new(t).expect("pool")).collect();
    let mut c = Criterion::default().configure_from_args();
    gemv(&mut c, &pools);
    gemm(&mut c, &pools);
    c.final_summary();
}
