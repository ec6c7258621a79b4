//! Loading a model package: parse and check the header, map the file, read no weight byte.
//! The time should be milliseconds and independent of the package size.
//!
//! `cargo bench --bench package` loads `tiny` and `small` (Llama-3.2-1B-shaped decoder, q4_0,
//! ~850 MB, generated once into the cargo target temp dir, about a minute).
//! `MEDREGION_BENCH_LARGE=full` adds `full` (Llama-3-8B shapes, q4_0, ~5 GB, several minutes
//! to generate once); `MEDREGION_BENCH_LARGE=none` skips the large packages.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use medregion::io::package::{LoadOptions, Model, QuantPolicy};
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::tensor::WeightType;

/// The package of `preset`, generated on first use and reused while it loads.
fn package(preset: Preset) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-packages");
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let path = dir.join(format!("{}-q4_0-seed1.safetensors", preset.name()));
    if Model::load(&path, &LoadOptions::default()).is_err() {
        eprintln!("generating {} (once) ...", path.display());
        let policy =
            QuantPolicy::parse("llm=q4_0,vit=f16,mask=f16,proj=f16", WeightType::F16).expect("policy");
        write_synthetic(&path, preset, 1, policy).expect("write the package");
    }
    path
}

fn bench_load(c: &mut Criterion) {
    let mut presets = vec![Preset::Tiny];
    match std::env::var("MEDREGION_BENCH_LARGE").as_deref() {
        Ok("none") => {}
        Ok("full") => presets.extend([Preset::Small, Preset::Full]),
        _ => presets.push(Preset::Small),
    }
    let mut group = c.benchmark_group("package_load");
    for preset in presets {
        let path = package(preset);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let n_tensors = Model::load(&path, &LoadOptions::default()).map(|m| m.tensors().count()).unwrap_or(0);
        eprintln!("{}: {:.1} MiB, {n_tensors} stored tensors", preset.name(), size as f64 / (1 << 20) as f64);
        group.bench_function(format!("{}_q4_0_{}MiB", preset.name(), size >> 20), |b| {
            b.iter(|| {
                let model = Model::load(&path, &LoadOptions::default()).expect("load");
                std::hint::black_box(model.checksum().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
