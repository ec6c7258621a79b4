//! The vision encoder (RAD-DINO = DINOv2 ViT-B/14, 12 layers, synthetic weights) on the CPU
//! (`cargo bench --bench vision`).
//!
//! Criterion: `encoder/256px` (4 slices, throughput in slices) and `encoder/518px` (1 slice),
//! with F32 weights and all threads. The synthetic package (~350 MB) is written once to the
//! temp folder and reused.
//!
//! `MEDREGION_VISION_REPORT=1 cargo bench --bench vision` skips criterion and prints one study
//! instead: 32 slices at 256 px (and then at 518 px with `MEDREGION_VISION_518=1`), slices/s,
//! the encoder's GFLOP/s, and the GFLOP/s of each GEMM shape; compare with
//! `scripts/vision/bench_torch.py` (numpy sgemm peak and PyTorch's Dinov2 on the same shapes),
//! run on the same machine at the same time. `MEDREGION_BENCH_THREADS=N` sets the threads,
//! `MEDREGION_VISION_SLICES=N` the slices of the study (default 32).

use std::time::Instant;

#[path = "common/vision_package.rs"]
mod vision_package;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use medregion::model::config::VisionConfig;
use medregion::model::{LoadOptions, Model};
use medregion::ops::{self, ThreadPool};
use medregion::tensor::{Dense, Weight, WeightType};
use medregion::vision::{attention, AttentionShape, EncodeOptions, VisionEncoder};

fn threads() -> usize {
    std::env::var("MEDREGION_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn pixels(n: usize, cfg: &VisionConfig) -> Vec<f32> {
    let len = n * 3 * cfg.image_size * cfg.image_size;
    (0..len).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect()
}

/// Multiply-adds of one slice: the GEMMs, and attention (QKᵀ and PV).
fn flops_per_slice(cfg: &VisionConfig) -> (f64, f64) {
    let (t, d, i, g) =
        (cfg.n_positions() as f64, cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.grid() as f64);
    let p2c = (cfg.patch_size * cfg.patch_size * cfg.num_channels) as f64;
    let gemm = 2.0 * (g * g * p2c * d + cfg.n_layers as f64 * t * (4.0 * d * d + 2.0 * d * i));
    let attn = 2.0 * cfg.n_layers as f64 * 2.0 * t * t * d;
    (gemm, attn)
}

fn report() {
    let pool = ThreadPool::new(threads()).expect("pool");
    println!(
        "# vision encoder, {} threads (F32 weights, synthetic RAD-DINO ViT-B/14, 12 layers)",
        pool.threads()
    );
    let mut sizes = vec![256];
    if std::env::var_os("MEDREGION_VISION_518").is_some() {
        sizes.push(518);
    }
    for size in sizes {
        let path = vision_package::vision_package(size, WeightType::F32);
        let model = Model::load(&path, &LoadOptions::default()).expect("load");
        let enc = VisionEncoder::new(&model).expect("encoder");
        let cfg = enc.config().clone();
        let n = std::env::var("MEDREGION_VISION_SLICES").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
        let px = pixels(n, &cfg);
        let opts = EncodeOptions { levels: vec![3, 6, 9, 12], batch: 0 };
        let start = Instant::now();
        black_box(enc.encode(&px, n, &opts, &pool).expect("encode"));
        let secs = start.elapsed().as_secs_f64();
        let (gemm, attn) = flops_per_slice(&cfg);
        println!(
            "encoder {size}px: {n} slices in {secs:.2} s = {:.2} slices/s, {:.1} GFLOP/s overall ({:.0}% of the FLOPs in GEMMs)",
            n as f64 / secs,
            n as f64 * (gemm + attn) / secs / 1e9,
            100.0 * gemm / (gemm + attn)
        );
        let t = cfg.n_positions();
        let rows = 8 * t;
        for (name, k, out) in
            [("qkv/o 768x768", 768, 768), ("fc1 768->3072", 768, 3072), ("fc2 3072->768", 3072, 768)]
        {
            let w: Vec<f32> = (0..k * out).map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5).collect();
            let shape = [out, k];
            let weight = Weight::F32(Dense { name: "bench", shape: &shape, data: &w });
            let x: Vec<f32> = (0..rows * k).map(|i| ((i * 17) % 89) as f32 / 89.0 - 0.5).collect();
            let mut y = vec![0.0f32; rows * out];
            ops::gemm(&x, rows, &weight, &mut y, &pool).expect("gemm");
            let reps = 3;
            let start = Instant::now();
            for _ in 0..reps {
                ops::gemm(&x, rows, &weight, &mut y, &pool).expect("gemm");
            }
            let secs = start.elapsed().as_secs_f64() / reps as f64;
            println!(
                "gemm {size}px {name} n={rows}: {:.1} GFLOP/s",
                2.0 * (rows * k * out) as f64 / secs / 1e9
            );
        }
        let shape = AttentionShape { n_seq: 8, n_tokens: t, n_heads: cfg.n_heads, head_dim: cfg.head_dim() };
        let len = 8 * t * cfg.hidden_size;
        let qkv: Vec<f32> = (0..len).map(|i| ((i * 13) % 101) as f32 / 50.0 - 1.0).collect();
        let mut o = vec![0.0f32; len];
        let start = Instant::now();
        attention(&qkv, &qkv, &qkv, &mut o, shape, &pool).expect("attention");
        let secs = start.elapsed().as_secs_f64();
        let flops = 8.0 * 4.0 * (t * t * cfg.hidden_size) as f64;
        println!(
            "attention {size}px 8 slices x {t} tokens: {:.1} GFLOP/s ({:.3} s per layer)",
            flops / secs / 1e9,
            secs
        );
    }
}

fn bench(c: &mut Criterion) {
    if std::env::var_os("MEDREGION_VISION_REPORT").is_some() {
        report();
        return;
    }
    let pool = ThreadPool::new(threads()).expect("pool");
    let mut group = c.benchmark_group("encoder");
    group.sample_size(10);
    for (size, n) in [(256usize, 4usize), (518, 1)] {
        let path = vision_package::vision_package(size, WeightType::F32);
        let model = Model::load(&path, &LoadOptions::default()).expect("load");
        let enc = VisionEncoder::new(&model).expect("encoder");
        let px = pixels(n, enc.config());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("f32", format!("{size}px")), &n, |b, &n| {
            b.iter(|| black_box(enc.encode(&px, n, &EncodeOptions::default(), &pool).expect("encode")))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
