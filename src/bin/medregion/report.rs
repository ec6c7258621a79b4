//! `medregion report --model M --ct CT --masks SEG [--labels totalseg|radgenome|FILE]
//! [--device cpu|cuda:N] [--gpu-encoder f32|bf16] [--regions LIST] [--max-new-tokens N]
//! [--threads N] [--json OUT]
//! [--out DIR] [--quiet | --progress-json]` and `medregion report --demo`: the whole pipeline
//! (`medregion::report`); the report (attributes, then each region under its heading) on
//! stdout, progress on stderr (see `progress.rs`).
//!
//! **One study** (one CT file): the text report on stdout; `--json OUT` and/or `--out DIR`
//! (`DIR/<study>.json`, `DIR/<study>.txt`) also write it.
//!
//! **Batch mode** (several `--ct` values, or a folder of `.nii.gz`/`.nii`/`.nrrd` files; the
//! study name is the file name without its extension): `--out DIR` is required and each study
//! gets `DIR/<study>.json` and `DIR/<study>.txt`, plus `DIR/summary.json` listing every study
//! with its status. The masks are either one `--masks` path per CT, in the same order, or one
//! folder holding each study's masks as `<study>.nii.gz` / `.nii` / `.nrrd` (a label map) or
//! `<study>/` (a folder of binary masks). The model is loaded once. A study that fails (bad
//! file, missing masks, a grid mismatch, even an internal panic) is reported and the others
//! go on; stdout gets one line per study; the exit status is non-zero if any study failed.
//!
//! `--demo` needs no input and no network: the tiny synthetic package (written to a temporary
//! file, removed afterwards) and the synthetic chest phantom with its label map. Its weights
//! are random, so the region texts are noise; the attribute section is a real measurement.
//!
//! Output files are written under a temporary name and renamed, so a failed run leaves none.
//! `--device cuda[:N]` (a build with the `cuda` feature) uploads the model to the GPU once and
//! runs the encoder, the feature pooling and the decoding there
//! (`medregion::report::generate_report_cuda`), the encoder's GEMMs in `--gpu-encoder`
//! precision (f32 by default: the CPU's report); a device that cannot be used is refused
//! before any work, with the reason.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::device::Engine;
use crate::files::{write_atomic, TempFile};
use crate::progress::{Mode, Progress};

use medregion::attributes::LabelScheme;
use medregion::masks::{volume_stem, Masks};
use medregion::model::synthetic::write_demo;
use medregion::model::{LoadOptions, Model};
use medregion::phantom::chest_phantom;
use medregion::report::{Event, Report, ReportOptions};
use medregion::volume::Volume;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Model package (.mrm / .safetensors).
    #[arg(long, required_unless_present = "demo")]
    model: Option<PathBuf>,
    /// Read the model into memory (huge pages) instead of mapping it: slower to load, faster
    /// to decode (see `LoadOptions::in_memory`).
    #[arg(long)]
    in_memory: bool,
    /// CT volume(s): NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd) files, or folders of them. More
    /// than one study is batch mode (needs --out).
    #[arg(long, num_args = 1.., required_unless_present = "demo")]
    ct: Vec<PathBuf>,
    /// Masks on each CT's grid: a label map file or a folder of binary masks named by class;
    /// in batch mode one per CT (same order), or one folder with `<study>.nii.gz` or
    /// `<study>/` per study.
    #[arg(long, num_args = 1.., required_unless_present = "demo")]
    masks: Vec<PathBuf>,
    /// Label table: totalseg, totalseg:SUBTASK, radgenome, or a JSON label configuration file.
    #[arg(long, default_value = "totalseg")]
    labels: String,
    /// Run the built-in demo: tiny synthetic model, synthetic chest phantom (no files needed).
    #[arg(long, conflicts_with_all = ["model", "ct", "masks"])]
    demo: bool,
    /// Compute device: cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    gpu_encoder: crate::device::GpuEncoderArg,
    /// Regions to report, comma-separated keys (default: all of the model's regions).
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// New tokens per region (default: the model's generation.max_new_tokens; 32 with --demo).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// How the decoder's activations meet quantized weights: int8 (llama.cpp's scheme, fast)
    /// or f32 (the dequantized model's arithmetic; CPU only, slower).
    #[arg(long, default_value = "int8", value_parser = crate::device::parse_activations)]
    activations: medregion::ops::Activations,
    /// Also write the report JSON here (one study only).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write `<study>.json` and `<study>.txt` per study (and `summary.json` in batch mode)
    /// into this folder (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Progress on stderr as one JSON object per line (for scripts).
    #[arg(long, conflicts_with = "quiet")]
    progress_json: bool,
}

/// One study of the run.
struct Study {
    name: String,
    ct: PathBuf,
    /// Its masks, or why none were found (reported as that study's failure).
    masks: std::result::Result<PathBuf, String>,
}

impl Study {
    /// The CT and its masks (a missing masks path is this study's error).
    fn load(&self, scheme: &LabelScheme) -> Result<(Volume, Masks)> {
        let ct = Volume::load(&self.ct)?;
        let masks = self.masks.as_ref().map_err(|e| Error::invalid("--masks", e.clone()))?;
        Ok((ct, Masks::load(masks, scheme)?))
    }
}

fn is_volume_file(p: &Path) -> bool {
    p.is_file() && p.file_name().and_then(|n| n.to_str()).and_then(volume_stem).is_some()
}

fn stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    volume_stem(&name).map(str::to_string).unwrap_or(name)
}

/// The CT files: files as given, folders expanded to their volume files (sorted by name).
fn expand_cts(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_volume_file(f))
                .collect();
            if found.is_empty() {
                return Err(Error::invalid(
                    "--ct",
                    format!("folder {} holds no .nii.gz, .nii or .nrrd file", p.display()),
                ));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Pairs every CT with its masks (see the module doc); refuses duplicate study names.
fn studies(cts: &[PathBuf], masks: &[PathBuf]) -> Result<Vec<Study>> {
    let cts = expand_cts(cts)?;
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    for ct in &cts {
        if let Some(first) = seen.insert(stem(ct), ct) {
            return Err(Error::invalid(
                "--ct",
                format!("{} and {} have the same study name `{}`", first.display(), ct.display(), stem(ct)),
            ));
        }
    }
    let paired = masks.len() == cts.len() && !(cts.len() > 1 && masks.len() == 1);
    if paired {
        return Ok(cts
            .into_iter()
            .zip(masks)
            .map(|(ct, m)| Study { name: stem(&ct), ct, masks: Ok(m.clone()) })
            .collect());
    }
    if masks.len() != 1 || !masks[0].is_dir() {
        return Err(Error::invalid(
            "--masks",
            format!(
                "{} path(s) for {} studies: give one per CT in the same order, or one folder with \
                 <study>.nii.gz or <study>/ per study",
                masks.len(),
                cts.len()
            ),
        ));
    }
    let dir = &masks[0];
    Ok(cts
        .into_iter()
        .map(|ct| {
            let name = stem(&ct);
            let candidates =
                [format!("{name}.nii.gz"), format!("{name}.nii"), format!("{name}.nrrd"), name.clone()];
            let masks = candidates.iter().map(|c| dir.join(c)).find(|p| p.exists()).ok_or_else(|| {
                format!(
                    "no masks for study `{name}` in {} (looked for {})",
                    dir.display(),
                    candidates.join(", ")
                )
            });
            Study { name, ct, masks }
        })
        .collect())
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device::resolve(&args.device)?;
    let mut options = ReportOptions {
        regions: args.regions.clone(),
        max_new_tokens: args.max_new_tokens,
        threads: args.threads,
        batch_regions: None,
        activations: args.activations,
    };
    crate::device::check_activations(&device, args.activations)?;
    if args.demo {
        let path = std::env::temp_dir().join(format!("medregion-demo-{}.mrm", std::process::id()));
        let _temp = TempFile(path.clone());
        write_demo(&path)?;
        let p = chest_phantom()?;
        let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg())?;
        options.max_new_tokens = options.max_new_tokens.or(Some(32));
        let model = Model::load(&path, &LoadOptions::default())?;
        let engine = Engine::new(&model, device, &args.gpu_encoder)?;
        let mut progress =
            Progress::new(Mode::choose(args.quiet, args.progress_json), 1, tokens_hint(&model, &options));
        let report = run_one(&model, &engine, &p.ct, &masks, &options, &mut progress)?;
        progress.finish();
        println!(
            "DEMO: the model weights are synthetic and untrained, so the region texts below are noise; \
             the patient attributes are real measurements of the synthetic phantom.\n"
        );
        return write_single(&args, "demo", &report);
    }
    // clap guarantees the model, CT and masks without --demo.
    let model_path =
        args.model.clone().ok_or_else(|| Error::invalid("--model", "required without --demo"))?;
    let studies = studies(&args.ct, &args.masks)?;
    let batch = studies.len() > 1;
    if batch && args.json.is_some() {
        return Err(Error::invalid("--json", "takes one study; with several, use --out DIR"));
    }
    if batch && args.out.is_none() {
        return Err(Error::invalid(
            "--out",
            format!("{} studies need --out DIR for their reports", studies.len()),
        ));
    }
    let scheme = LabelScheme::from_arg(&args.labels)?;
    let model =
        Model::load(&model_path, &LoadOptions { in_memory: args.in_memory, ..LoadOptions::default() })?;
    let engine = Engine::new(&model, device, &args.gpu_encoder)?;
    let mode = Mode::choose(args.quiet, args.progress_json);
    let mut progress = Progress::new(mode, studies.len(), tokens_hint(&model, &options));
    if !batch {
        let s = &studies[0];
        let (ct, masks) = s.load(&scheme)?;
        progress.start_study(&s.name, false);
        let report = run_one(&model, &engine, &ct, &masks, &options, &mut progress)?;
        progress.finish();
        return write_single(&args, &s.name, &report);
    }
    let out = args.out.as_ref().expect("checked above");
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut summary = Vec::with_capacity(studies.len());
    let mut failed = 0;
    for s in &studies {
        progress.start_study(&s.name, true);
        let t = Instant::now();
        // A panic in one study (a bug) must not stop the others.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(PathBuf, PathBuf)> {
            let (ct, masks) = s.load(&scheme)?;
            let report = run_one(&model, &engine, &ct, &masks, &options, &mut progress)?;
            write_outputs(out, &s.name, &report)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::Internal(format!("panic: {msg}")))
        });
        progress.end_study();
        let secs = t.elapsed().as_secs_f64();
        let mut entry = serde_json::json!({
            "study": s.name, "ct": s.ct.display().to_string(),
            "masks": s.masks.as_ref().map(|m| m.display().to_string()).ok(), "seconds": secs,
        });
        match result {
            Ok((json, text)) => {
                println!("{}: ok ({secs:.2} s) -> {}", s.name, json.display());
                entry["status"] = "ok".into();
                entry["json"] = json.display().to_string().into();
                entry["text"] = text.display().to_string().into();
            }
            Err(e) => {
                failed += 1;
                println!("{}: FAILED: {e}", s.name);
                entry["status"] = "failed".into();
                entry["error"] = e.to_string().into();
            }
        }
        summary.push(entry);
    }
    progress.finish();
    let doc = serde_json::json!({ "studies": summary, "ok": studies.len() - failed, "failed": failed });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))? + "\n";
    write_atomic(&out.join("summary.json"), text.as_bytes())?;
    println!(
        "{} of {} studies reported; summary in {}",
        studies.len() - failed,
        studies.len(),
        out.join("summary.json").display()
    );
    if failed > 0 {
        return Err(Error::invalid("studies", format!("{failed} of {} failed (see above)", studies.len())));
    }
    Ok(())
}

/// Expected tokens per region, for the decode bar.
fn tokens_hint(model: &Model<'_>, options: &ReportOptions) -> usize {
    options.max_new_tokens.unwrap_or(model.config().generation.max_new_tokens)
}

fn run_one(
    model: &Model<'_>,
    engine: &Engine,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    progress: &mut Progress,
) -> Result<Report> {
    let report = engine.report(model, ct, masks, options, &mut |e: &Event<'_>| {
        progress.event(e);
        ControlFlow::Continue(())
    })?;
    progress.timings(&report.timings);
    Ok(report)
}

/// `DIR/<name>.json` and `DIR/<name>.txt`.
fn write_outputs(dir: &Path, name: &str, report: &Report) -> Result<(PathBuf, PathBuf)> {
    let (json, text) = (dir.join(format!("{name}.json")), dir.join(format!("{name}.txt")));
    write_atomic(&json, report.to_json()?.as_bytes())?;
    write_atomic(&text, report.to_text().as_bytes())?;
    Ok((json, text))
}

/// One study: the text on stdout, then the requested files.
fn write_single(args: &Args, name: &str, report: &Report) -> Result<()> {
    print!("{}", report.to_text());
    if let Some(path) = &args.json {
        write_atomic(path, report.to_json()?.as_bytes())?;
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_outputs(dir, name, report)?;
    }
    Ok(())
}
