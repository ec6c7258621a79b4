//! CT input and preprocessing on the real pyradiomics lung1 CT (512×512×48 int16, gzip NRRD,
//! fetched once by `scripts/fetch_testdata.py`): load (read + gunzip + decode), preprocess with
//! the default config (RAS, crop at −1000 HU, window [−1000, 1000], trilinear to 32×256×256),
//! the tumour mask through the same steps (nearest-exact), and load + preprocess together.
//!
//! `cargo bench --bench preprocess`

#[path = "../tests/common/testdata.rs"]
mod testdata;

use criterion::{criterion_group, criterion_main, Criterion};
use medregion::preprocess::{labels_from_volume, preprocess, PreprocessConfig};
use medregion::volume::Volume;

fn bench_preprocess(c: &mut Criterion) {
    let image = testdata::testdata("pyradiomics", "data/lung1_image.nrrd");
    let label = testdata::testdata("pyradiomics", "data/lung1_label.nrrd");
    let config = PreprocessConfig::default();
    let volume = Volume::load(&image).expect("load lung1");
    let label_volume = Volume::load(&label).expect("load the lung1 label");
    let labels = labels_from_volume(&label_volume).expect("labels");
    let plan = preprocess(&volume, &config).expect("preprocess");

    let mut group = c.benchmark_group("lung1_512x512x48");
    group.sample_size(20);
    group.bench_function("load_nrrd_gzip", |b| b.iter(|| Volume::load(&image).expect("load").dims()));
    group.bench_function("preprocess_32x256x256", |b| {
        b.iter(|| preprocess(&volume, &config).expect("preprocess").data.len())
    });
    group.bench_function("mask_nearest_32x256x256", |b| {
        b.iter(|| plan.map_mask(&labels, label_volume.geometry()).expect("mask").len())
    });
    group.bench_function("load_and_preprocess", |b| {
        b.iter(|| preprocess(&Volume::load(&image).expect("load"), &config).expect("preprocess").data.len())
    });
    group.finish();
}

criterion_group!(benches, bench_preprocess);
criterion_main!(benches);
