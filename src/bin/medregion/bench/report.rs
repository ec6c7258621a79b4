//! `medregion bench report [--preset tiny|small|full | --model M] [--threads N]
//! [--max-new-tokens N] [--repeat N] [--json]`: the whole pipeline (`medregion::report`) on the
//! synthetic chest phantom, end to end, with the regions decoded as one batch and one after
//! another.
//!
//! * The model: a package (`--model`), or a preset's synthetic package (default: tiny) written
//!   to a temporary file, removed afterwards; the time writing it took is printed on its own.
//!   tiny: F32 throughout (as `report --demo`); small and full: `llm=q4_0,vit=f16` (full also
//!   keeps `llm.embed_tokens.*` F32), as the README's `convert --synthetic` lines.
//! * Each mode runs `--repeat` times (default 3 for tiny, 1 otherwise); every stage time is the
//!   median of its repeats, and so is the end-to-end total. Decode tokens/s = generated tokens
//!   (all regions) / decode seconds; stage times are the report's own `timings`. The ratio
//!   compares prefill + decode time, batched over sequential (< 1: batching is faster); the
//!   other stages are the same work in both modes.
//! * Greedy decoding gives the same region texts either way: any difference is an error.
//! * `--device cuda:N` uploads the package once (not timed: `load_s` is the mapping only) and
//!   runs the encoder and the decoding on the GPU; the other stages stay on the CPU.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use crate::device::Engine;
use crate::files::TempFile;

use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::names::Component;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::phantom::chest_phantom;
use medregion::report::{Event, Report, ReportOptions, Timings};
use medregion::tensor::WeightType;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A synthetic package: tiny, small or full (the default is tiny).
    #[arg(long, conflicts_with = "model")]
    preset: Option<String>,
    /// The model package instead.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,
    #[command(flatten)]
    gpu_encoder: crate::device::GpuEncoderArg,
    /// New tokens per region.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Runs per mode; the median is reported (default: 3 for tiny, 1 otherwise).
    #[arg(long)]
    repeat: Option<usize>,
    /// Decoding modes to run: both (and their ratio), batched or sequential (for big packages,
    /// where one mode takes many minutes).
    #[arg(long, default_value = "both", value_parser = ["both", "batched", "sequential"])]
    modes: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The storage types of a preset's synthetic package.
fn preset_policy(preset: Preset) -> QuantPolicy {
    match preset {
        Preset::Tiny => QuantPolicy::all(WeightType::F32),
        Preset::Small => QuantPolicy::all(WeightType::F16).component(Component::Llm, WeightType::Q4_0),
        Preset::Full => QuantPolicy::all(WeightType::F16)
            .component(Component::Llm, WeightType::Q4_0)
            .keep_f32("llm.embed_tokens.*"),
    }
}

/// The median of one mode's runs, stage by stage.
struct ModeResult {
    timings: Timings,
    /// Median of prefill + decode.
    prefill_decode: f64,
    generated_tokens: usize,
}

impl ModeResult {
    fn prefill_decode(&self) -> f64 {
        self.prefill_decode
    }
    fn decode_tps(&self) -> f64 {
        if self.timings.decode > 0.0 {
            self.generated_tokens as f64 / self.timings.decode
        } else {
            0.0
        }
    }
    fn json(&self) -> serde_json::Value {
        let t = &self.timings;
        serde_json::json!({
            "total_s": t.total,
            "stages": {
                "preprocess": t.preprocess, "attributes": t.attributes, "encoder": t.encoder,
                "tokens": t.tokens, "prefill": t.prefill, "decode": t.decode,
            },
            "prefill_decode_s": self.prefill_decode(),
            "generated_tokens": self.generated_tokens,
            "decode_tokens_per_s": self.decode_tps(),
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summarize(reports: &[Report]) -> ModeResult {
    let runs: Vec<&Timings> = reports.iter().map(|r| &r.timings).collect();
    let stage = |f: fn(&Timings) -> f64| median(runs.iter().map(|t| f(t)).collect());
    let timings = Timings {
        preprocess: stage(|t| t.preprocess),
        attributes: stage(|t| t.attributes),
        encoder: stage(|t| t.encoder),
        tokens: stage(|t| t.tokens),
        prefill: stage(|t| t.prefill),
        decode: stage(|t| t.decode),
        total: stage(|t| t.total),
    };
    let prefill_decode = median(runs.iter().map(|t| t.prefill + t.decode).collect());
    let generated_tokens = reports.first().map_or(0, |r| r.regions.iter().map(|g| g.tokens).sum());
    ModeResult { timings, prefill_decode, generated_tokens }
}

/// The first region whose text differs between `a` and `b`, if any.
fn first_difference(a: &Report, b: &Report) -> Option<String> {
    if a.regions.len() != b.regions.len() {
        return Some(format!("{} regions vs {}", a.regions.len(), b.regions.len()));
    }
    a.regions
        .iter()
        .zip(&b.regions)
        .find(|(x, y)| x.key != y.key || x.text != y.text)
        .map(|(x, y)| format!("region {}: {:?} vs {:?}", x.key, x.text, y.text))
}

pub fn run(a: ReportArgs) -> Result<()> {
    let device = a.device.resolve()?;
    if a.max_new_tokens == 0 {
        return Err(Error::invalid("--max-new-tokens", "must be at least 1"));
    }
    if a.repeat == Some(0) {
        return Err(Error::invalid("--repeat", "must be at least 1"));
    }
    let preset = match (&a.preset, &a.model) {
        (Some(p), _) => Some(
            Preset::parse(p)
                .map_err(|_| Error::invalid("--preset", format!("`{p}` is not one of tiny, small, full")))?,
        ),
        (None, None) => Some(Preset::Tiny),
        (None, Some(_)) => None,
    };
    let repeat = a.repeat.unwrap_or(if preset == Some(Preset::Tiny) { 3 } else { 1 });

    // The package: the given one, or the preset's written to a temporary file.
    let (_temp, path, name, write_secs) = match (preset, &a.model) {
        (Some(p), _) => {
            let path = std::env::temp_dir().join(format!(
                "medregion-bench-report-{}-{}.mrm",
                p.name(),
                std::process::id()
            ));
            let temp = TempFile(path.clone());
            if !a.json {
                eprintln!("writing the synthetic {} package to {} ...", p.name(), path.display());
            }
            let start = Instant::now();
            write_synthetic(&path, p, 1, preset_policy(p))?;
            let secs = start.elapsed().as_secs_f64();
            (Some(temp), path, format!("synthetic {}", p.name()), Some(secs))
        }
        (None, Some(m)) => (None, m.clone(), m.display().to_string(), None),
        (None, None) => return Err(Error::invalid("--preset/--model", "give one")),
    };
    let start = Instant::now();
    let model = Model::load(&path, &LoadOptions::default())?;
    let load_secs = start.elapsed().as_secs_f64();
    let phantom = chest_phantom()?;
    let masks = Masks::from_label_map(&phantom.labels, &LabelScheme::totalseg())?;
    let threads = ThreadPool::new(a.threads)?.threads();
    let engine = Engine::new(&model, device, &a.gpu_encoder)?;
    let runs_on = engine.describe(threads);

    let wanted: &[bool] = match a.modes.as_str() {
        "batched" => &[true],
        "sequential" => &[false],
        _ => &[true, false],
    };
    let mut modes = Vec::new();
    for &batched in wanted {
        let options = ReportOptions {
            regions: None,
            max_new_tokens: Some(a.max_new_tokens),
            threads: a.threads,
            batch_regions: Some(batched),
            ..ReportOptions::default()
        };
        let mut reports = Vec::with_capacity(repeat);
        for i in 0..repeat {
            if !a.json {
                let mode = if batched { "batched" } else { "sequential" };
                eprintln!("{mode} run {}/{repeat} ...", i + 1);
            }
            let report = engine.report(&model, &phantom.ct, &masks, &options, &mut |_: &Event<'_>| {
                ControlFlow::Continue(())
            })?;
            reports.push(report);
        }
        modes.push((batched, reports));
    }
    let reference = &modes[0].1[0];
    for report in modes.iter().flat_map(|(_, r)| r).skip(1) {
        if let Some(diff) = first_difference(reference, report) {
            return Err(Error::invalid(
                "bench report",
                format!("batched and sequential decoding (or two repeats) gave different texts: {diff}"),
            ));
        }
    }
    let n_regions = reference.regions.len();
    let results: Vec<(&str, ModeResult)> =
        modes.iter().map(|(b, r)| (if *b { "batched" } else { "sequential" }, summarize(r))).collect();
    let mode = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, m)| m);
    // Batched over sequential prefill + decode, when both ran.
    let ratio = match (mode("batched"), mode("sequential")) {
        (Some(b), Some(s)) if s.prefill_decode() > 0.0 => {
            Some((b, s, b.prefill_decode() / s.prefill_decode()))
        }
        _ => None,
    };

    if a.json {
        let doc = serde_json::json!({
            "model": name,
            "preset": preset.map(Preset::name),
            "package_write_s": write_secs,
            "load_s": load_secs,
            "threads": threads,
            "device": runs_on,
            "regions": n_regions,
            "max_new_tokens": a.max_new_tokens,
            "repeat": repeat,
            "batched": mode("batched").map(ModeResult::json),
            "sequential": mode("sequential").map(ModeResult::json),
            "prefill_decode_ratio_batched_over_sequential": ratio.map(|(_, _, r)| r),
            "same_texts": true,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    if let Some(s) = write_secs {
        println!("package written in {s:.2} s (not part of the times below)");
    }
    println!(
        "{name}: {n_regions} regions, {} new tokens max, {runs_on}, median of {repeat}, loaded in {load_secs:.2} s",
        a.max_new_tokens
    );
    println!(
        "{:<10} {:>9} {:>10} {:>10} {:>9} {:>8} {:>9} {:>9} {:>7} {:>10}",
        "mode",
        "total s",
        "preprocess",
        "attributes",
        "encoder",
        "tokens",
        "prefill",
        "decode",
        "tokens",
        "decode t/s"
    );
    for (label, m) in &results {
        let t = &m.timings;
        println!(
            "{label:<10} {:>9.3} {:>10.3} {:>10.3} {:>9.3} {:>8.3} {:>9.3} {:>9.3} {:>7} {:>10.1}",
            t.total,
            t.preprocess,
            t.attributes,
            t.encoder,
            t.tokens,
            t.prefill,
            t.decode,
            m.generated_tokens,
            m.decode_tps()
        );
    }
    if let Some((b, s, ratio)) = ratio {
        println!(
            "prefill+decode batched / sequential: {:.3} / {:.3} s = {ratio:.2}; region texts identical",
            b.prefill_decode(),
            s.prefill_decode()
        );
    }
    Ok(())
}
