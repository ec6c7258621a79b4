//! The whole pipeline end to end (`cargo bench --bench report`): the tiny synthetic package
//! (F32, written to a temporary file, removed afterwards) on the synthetic chest phantom, all
//! regions, 16 new tokens each, decoded as one batch (`report/tiny_batched`) and one region after
//! another (`report/tiny_sequential`). `MEDREGION_BENCH_THREADS=N` sets the threads. For the
//! per-stage breakdown and the bigger presets use `medregion bench report`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{black_box, Criterion};
use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::phantom::chest_phantom;
use medregion::report::{generate_report, Event, ReportOptions};
use medregion::tensor::WeightType;

fn threads() -> usize {
    std::env::var("MEDREGION_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Removes the temporary package when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let path = std::env::temp_dir().join(format!("medregion-bench-report-tiny-{}.mrm", std::process::id()));
    let _temp = TempFile(path.clone());
    write_synthetic(&path, Preset::Tiny, 1, QuantPolicy::all(WeightType::F32))
        .expect("write the tiny package");
    let model = Model::load(&path, &LoadOptions::default()).expect("load the tiny package");
    let phantom = chest_phantom().expect("phantom");
    let masks = Masks::from_label_map(&phantom.labels, &LabelScheme::totalseg()).expect("masks");

    let mut group = c.benchmark_group("report");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for (name, batched) in [("tiny_batched", true), ("tiny_sequential", false)] {
        let options = ReportOptions {
            regions: None,
            max_new_tokens: Some(16),
            threads: threads(),
            batch_regions: Some(batched),
            ..ReportOptions::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    generate_report(&model, &phantom.ct, &masks, &options, &mut |_: &Event<'_>| {
                        ControlFlow::Continue(())
                    })
                    .expect("report"),
                )
            })
        });
    }
    group.finish();
    c.final_summary();
}
