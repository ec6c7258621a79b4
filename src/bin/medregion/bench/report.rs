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
//!   (all regions) / decode seconds. Prefill is the wall-clock rest of the run (see
//!   [`wall_timings`]; the JSON also has the report's own figure). The ratio compares prefill + decode time, batched over
//!   sequential (< 1: batching is faster); the other stages are the same work in both modes.
//! * Greedy decoding gives the same region texts either way: any difference is an error.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use medregion::attributes::LabelScheme;
use medregion::io::package::PackageBuilder;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::config::SpecialToken;
use medregion::model::names::Component;
use medregion::model::synthetic::{bytes_tokenizer, Preset, SyntheticSource};
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::phantom::chest_phantom;
use medregion::report::{generate_report, Event, Report, ReportOptions, Timings};
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
    /// New tokens per region.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Runs per mode; the median is reported (default: 3 for tiny, 1 otherwise).
    #[arg(long)]
    repeat: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Removes the temporary package when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

/// Writes `preset`'s synthetic package (seed 1). The real-shaped presets (small, full) have a
/// byte-level tokenizer with the 256 bytes and the Llama 3 special tokens only, while their
/// random decoder samples from the whole vocabulary, so decoding a sampled id to text would fail:
/// every other id gets a placeholder special token ("\x7f" + id: a first byte no prompt contains,
/// so prompt tokenization is unchanged). The weights and shapes are the preset's.
fn write_preset(path: &std::path::Path, preset: Preset) -> Result<()> {
    let mut config = preset.config();
    if preset != Preset::Tiny {
        let vocab = config.decoder.vocab_size as u32;
        let taken: std::collections::HashSet<u32> =
            config.tokenizer.special_tokens.iter().map(|t| t.id).collect();
        let padding = (256..vocab).filter(|id| !taken.contains(id));
        config
            .tokenizer
            .special_tokens
            .extend(padding.map(|id| SpecialToken { id, text: format!("\u{7f}{id}") }));
    }
    PackageBuilder::new(config, bytes_tokenizer())
        .policy(preset_policy(preset))
        .write(path, &mut SyntheticSource::new(1))?;
    Ok(())
}

/// The median of one mode's runs, stage by stage.
struct ModeResult {
    timings: Timings,
    /// Median of prefill + decode (wall clock).
    prefill_decode: f64,
    /// Median of the report's own `timings.prefill` (see [`wall_timings`]).
    library_prefill: f64,
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
            "report_timings_prefill_s": self.library_prefill,
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

/// One run's stages with prefill taken from the wall clock: the report's own `prefill` is the
/// sum of each region's prefill, which in batched mode counts the shared prompt prefix once per
/// region (it exceeds the run's total on the tiny preset), so here prefill = total − preprocess
/// − attributes − encoder − tokens − decode (the decoder session set-up included).
fn wall_timings(t: &Timings) -> Timings {
    let before = t.preprocess + t.attributes + t.encoder + t.tokens;
    Timings { prefill: (t.total - before - t.decode).max(0.0), ..t.clone() }
}

fn summarize(reports: &[Report]) -> ModeResult {
    let runs: Vec<Timings> = reports.iter().map(|r| wall_timings(&r.timings)).collect();
    let stage = |f: fn(&Timings) -> f64| median(runs.iter().map(f).collect());
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
    let library_prefill = median(reports.iter().map(|r| r.timings.prefill).collect());
    let generated_tokens = reports.first().map_or(0, |r| r.regions.iter().map(|g| g.tokens).sum());
    ModeResult { timings, prefill_decode, library_prefill, generated_tokens }
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
            write_preset(&path, p)?;
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

    let mut modes = Vec::new();
    for batched in [true, false] {
        let options = ReportOptions {
            regions: None,
            max_new_tokens: Some(a.max_new_tokens),
            threads: a.threads,
            batch_regions: Some(batched),
        };
        let mut reports = Vec::with_capacity(repeat);
        for i in 0..repeat {
            if !a.json {
                let mode = if batched { "batched" } else { "sequential" };
                eprintln!("{mode} run {}/{repeat} ...", i + 1);
            }
            let report = generate_report(&model, &phantom.ct, &masks, &options, &mut |_: &Event<'_>| {
                ControlFlow::Continue(())
            })?;
            reports.push(report);
        }
        modes.push(reports);
    }
    let reference = &modes[0][0];
    for report in modes.iter().flatten().skip(1) {
        if let Some(diff) = first_difference(reference, report) {
            return Err(Error::invalid(
                "bench report",
                format!("batched and sequential decoding (or two repeats) gave different texts: {diff}"),
            ));
        }
    }
    let n_regions = reference.regions.len();
    let batched = summarize(&modes[0]);
    let sequential = summarize(&modes[1]);
    let ratio = if sequential.prefill_decode() > 0.0 {
        batched.prefill_decode() / sequential.prefill_decode()
    } else {
        0.0
    };

    if a.json {
        let doc = serde_json::json!({
            "model": name,
            "preset": preset.map(Preset::name),
            "package_write_s": write_secs,
            "load_s": load_secs,
            "threads": threads,
            "regions": n_regions,
            "max_new_tokens": a.max_new_tokens,
            "repeat": repeat,
            "batched": batched.json(),
            "sequential": sequential.json(),
            "prefill_decode_ratio_batched_over_sequential": ratio,
            "same_texts": true,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    if let Some(s) = write_secs {
        println!("package written in {s:.2} s (not part of the times below)");
    }
    println!(
        "{name}: {n_regions} regions, {} new tokens max, {threads} threads, median of {repeat}, loaded in {load_secs:.2} s",
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
    for (label, m) in [("batched", &batched), ("sequential", &sequential)] {
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
    println!(
        "prefill+decode batched / sequential: {:.3} / {:.3} s = {ratio:.2}; region texts identical",
        batched.prefill_decode(),
        sequential.prefill_decode()
    );
    Ok(())
}
