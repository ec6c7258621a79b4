//! Region tokens for one study (`cargo bench --bench region`): R² pooling, the mask extractor
//! and the connector at the full model's widths (RAD-DINO 768, 4 levels, embed 1024, decoder
//! 4096) for T = 32 slices of 18×18 patches and the nine default slot masks at 32×256×256, all
//! six regions (`per_region_topk`: each region its own slices), F32 weights.
//!
//! Criterion: `region/tokens_6_regions`. `MEDREGION_REGION_REPORT=1 cargo bench --bench
//! region` prints the issue's ratio instead: the tokens' time against the encoder's time for
//! the same 32 slices at 256 px, measured in the same run (the encoder runs 2 slices; its time
//! is linear in the slices). `MEDREGION_BENCH_THREADS=N` sets the threads.

#[path = "common/vision_package.rs"]
mod vision_package;

use std::time::Instant;

use criterion::{black_box, Criterion};
use medregion::model::config::ModelConfig;
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::region::{MaskView, RegionHeads};
use medregion::tensor::{Dense, Weight, WeightType};
use medregion::vision::{EncodeOptions, VisionEncoder, VisionOutput};

const T: usize = 32;
const S: usize = 256;

fn threads() -> usize {
    std::env::var("MEDREGION_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Deterministic pseudo-random values in [-0.5, 0.5).
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed * 97)) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

struct Study {
    config: ModelConfig,
    weights: Vec<(String, Vec<usize>, Vec<f32>)>,
    vision: VisionOutput,
    keys: Vec<String>,
    masks: Vec<Vec<u8>>,
}

fn study() -> Study {
    let config = ModelConfig::default();
    let names = medregion::model::names::expected_tensors(&config);
    let weights = names
        .into_iter()
        .filter(|t| t.name.starts_with("mask.") || t.name.starts_with("proj."))
        .enumerate()
        .map(|(i, t)| {
            let n = t.shape.iter().product();
            (t.name, t.shape, values(n, i))
        })
        .collect();
    let (n1, d) = (1 + 18 * 18, config.vision.hidden_size);
    let len = T * n1 * d;
    let vision = VisionOutput {
        n_slices: T,
        n_tokens: n1,
        hidden_size: d,
        last_hidden_state: values(len, 1),
        hidden_states: config.mask_extractor.levels.iter().map(|&l| (l, values(len, 10 + l))).collect(),
    };
    let keys: Vec<String> = config.segmentation.iter().map(|s| s.key.clone()).collect();
    // Nine blobs of different extents (the effusion slot empty).
    let masks = (0..keys.len())
        .map(|s| {
            let mut m = vec![0u8; T * S * S];
            if s != 7 {
                for z in (s % 5)..(T - s % 7) {
                    for y in (20 + 10 * s)..(60 + 15 * s).min(S) {
                        for x in 30..(90 + 12 * s).min(S) {
                            m[(z * S + y) * S + x] = 1;
                        }
                    }
                }
            }
            m
        })
        .collect();
    Study { config, weights, vision, keys, masks }
}

fn heads(st: &Study) -> RegionHeads<'_> {
    RegionHeads::from_lookup(&st.config, |name| {
        let (_, shape, data) = st.weights.iter().find(|(n, _, _)| n == name).expect("weight");
        Ok(Weight::F32(Dense { name: "bench", shape, data }))
    })
    .expect("heads")
}

fn regions(st: &Study) -> Vec<&str> {
    st.config.regions.iter().map(|r| r.key.as_str()).collect()
}

fn report() {
    let pool = ThreadPool::new(threads()).expect("pool");
    let st = study();
    let h = heads(&st);
    let view = MaskView { shape: [T, S, S], keys: &st.keys, masks: &st.masks };
    let regions = regions(&st);
    black_box(h.tokens(&st.vision, view, &regions, &pool).expect("tokens"));
    let reps = 3;
    let start = Instant::now();
    for _ in 0..reps {
        black_box(h.tokens(&st.vision, view, &regions, &pool).expect("tokens"));
    }
    let tokens = start.elapsed().as_secs_f64() / reps as f64;

    let model = Model::load(vision_package::vision_package(S, WeightType::F32), &LoadOptions::default())
        .expect("vision package");
    let enc = VisionEncoder::new(&model).expect("encoder");
    let n = 2;
    let px = values(n * 3 * S * S, 3);
    let opts = EncodeOptions { levels: vec![3, 6, 9, 12], batch: 0 };
    let start = Instant::now();
    black_box(enc.encode(&px, n, &opts, &pool).expect("encode"));
    let encoder = start.elapsed().as_secs_f64() * (T / n) as f64;
    println!("# region tokens, {} threads, {T} slices at {S} px, 9 masks, 6 regions", pool.threads());
    println!("tokens (pooling + mask extractor + connector, 6 regions): {:.3} s", tokens);
    println!("encoder (32 slices, from 2 measured): {encoder:.2} s");
    println!("ratio: {:.2}% of the encoder (target < 2%)", 100.0 * tokens / encoder);
}

fn main() {
    if std::env::var_os("MEDREGION_REGION_REPORT").is_some() {
        report();
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let pool = ThreadPool::new(threads()).expect("pool");
    let st = study();
    let h = heads(&st);
    let view = MaskView { shape: [T, S, S], keys: &st.keys, masks: &st.masks };
    let regions = regions(&st);
    let mut group = c.benchmark_group("region");
    group.sample_size(10);
    group.bench_function("tokens_6_regions", |b| {
        b.iter(|| black_box(h.tokens(&st.vision, view, &regions, &pool).expect("tokens")))
    });
    group.finish();
    c.final_summary();
}
