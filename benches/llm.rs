//! Decoder speed on synthetic packages (`cargo bench --bench llm`): one decode step, a batch-6
//! lock-step decode step (via `generate_batch`, 8 tokens each), and a 64-token prefill, for the
//! `tiny` preset in F32 / Q8_0 / Q4_0 and 1 / 2 threads. Packages are written to the temp folder
//! once. Set `MEDREGION_BENCH_LLM_MODEL=/path/to/package` to bench a real package instead (for
//! SmolLM2 / Llama-3.2-1B-shaped models; the `small` preset takes minutes to write).
//! For bandwidth figures use `medregion bench llm`. The `attend` group times the decode
//! attention kernel alone: 3 query heads of dimension 64 sharing a key/value head (SmolLM2's
//! GQA group) over 80 and 544 keys, throughput in head-keys.

use std::ops::ControlFlow;
use std::path::PathBuf;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use medregion::io::package::{LoadOptions, Model, QuantPolicy};
use medregion::llm::forward::attend_heads;
use medregion::llm::{argmax, GenerateOptions, Input, Session, SessionOptions};
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::tensor::WeightType;

fn packages() -> Vec<(String, PathBuf)> {
    if let Ok(p) = std::env::var("MEDREGION_BENCH_LLM_MODEL") {
        return vec![("custom".into(), PathBuf::from(p))];
    }
    [WeightType::F32, WeightType::Q8_0, WeightType::Q4_0]
        .into_iter()
        .map(|t| {
            let path = std::env::temp_dir().join(format!("medregion-bench-llm-tiny-{t:?}.mrpk"));
            if !path.exists() {
                write_synthetic(&path, Preset::Tiny, 1, QuantPolicy::all(t)).expect("write package");
            }
            (format!("tiny-{t:?}"), path)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    for (name, path) in packages() {
        let model = Model::load(&path, &LoadOptions::default()).expect("load");
        let vocab = model.config().decoder.vocab_size as u32;
        let prompt: Vec<u32> = (0..64u32).map(|i| (i * 2_654_435 + 17) % vocab).collect();
        for threads in [1, 2] {
            let opts = SessionOptions { context: 512, threads, max_batch: 6, ..Default::default() };
            let mut s = Session::new(&model, &opts).expect("session");
            let mut g = c.benchmark_group(format!("llm/{name}/t{threads}"));
            g.throughput(Throughput::Elements(1));
            g.bench_function("decode_step", |b| {
                s.reset();
                let mut id = argmax(s.prefill(Input::Tokens(&prompt[..8])).unwrap());
                b.iter(|| {
                    if s.len() + 1 >= s.context() {
                        s.truncate(8).unwrap();
                    }
                    id = argmax(black_box(s.step(id).unwrap()));
                })
            });
            g.throughput(Throughput::Elements(64));
            g.bench_function(BenchmarkId::new("prefill", 64), |b| {
                b.iter(|| {
                    s.reset();
                    black_box(s.prefill(Input::Tokens(&prompt)).unwrap());
                })
            });
            let suffixes: Vec<Vec<u32>> = (0..6u32).map(|i| vec![(i * 31 + 5) % vocab]).collect();
            let refs: Vec<&[u32]> = suffixes.iter().map(Vec::as_slice).collect();
            let gen = GenerateOptions { max_new_tokens: 8, stop_ids: Some(Vec::new()), ..Default::default() };
            g.throughput(Throughput::Elements(6 * 8));
            g.bench_function("batch6_generate8_after_prefix8", |b| {
                b.iter(|| {
                    black_box(
                        s.generate_batch(Input::Tokens(&prompt[..8]), &refs, &gen, None, &mut |_, _, _| {
                            ControlFlow::Continue(())
                        })
                        .unwrap(),
                    )
                })
            });
            g.finish();
        }
    }
}

fn bench_attend(c: &mut Criterion) {
    let (heads, hd, stride) = (3, 64, 192);
    let mut g = c.benchmark_group("attend/3x64");
    for count in [80usize, 544] {
        // Deterministic values in (−2, 2).
        let vals = |seed: usize, n: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 2_654_435_761 + seed) % 4001) as f32 / 1000.0 - 2.0).collect()
        };
        let (q, k, v) = (vals(1, heads * hd), vals(2, count * stride), vals(3, count * stride));
        let mut out = vec![0.0f32; heads * hd];
        g.throughput(Throughput::Elements((heads * count) as u64));
        g.bench_function(BenchmarkId::new("keys", count), |b| {
            b.iter(|| attend_heads(black_box(&q), hd, &k, &v, stride, count, &mut out).unwrap())
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().sample_size(20).configure_from_args();
    bench_attend(&mut c);
    bench(&mut c);
    c.final_summary();
}
