//! `medregion report --model M --ct CT --masks SEG [--labels totalseg|radgenome|FILE]
//! [--regions LIST] [--max-new-tokens N] [--threads N] [--json OUT] [--quiet | --progress-json]`
//! and `medregion report --demo`: the whole pipeline (`medregion::report`) on one study; the
//! report (region headings) on stdout, progress on stderr.
//!
//! `--demo` needs no input and no network: the tiny synthetic package (written to a temporary
//! file, removed afterwards) and the synthetic chest phantom with its label map. Its weights are
//! random, so the region texts are noise; the attribute section is a real measurement.
//! `--json` is written under a temporary name and renamed, so a failed run leaves nothing.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use crate::files::write_atomic;

use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::phantom::chest_phantom;
use medregion::report::{generate_report, Event, ReportOptions};
use medregion::tensor::WeightType;
use medregion::volume::Volume;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Model package (.mrm / .safetensors).
    #[arg(long, required_unless_present = "demo")]
    model: Option<PathBuf>,
    /// CT volume: NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd).
    #[arg(long, required_unless_present = "demo")]
    ct: Option<PathBuf>,
    /// Masks on the CT's grid: a label map file, or a folder of binary masks named by class.
    #[arg(long, required_unless_present = "demo")]
    masks: Option<PathBuf>,
    /// Label table: totalseg, totalseg:SUBTASK, radgenome, or a JSON label configuration file.
    #[arg(long, default_value = "totalseg")]
    labels: String,
    /// Run the built-in demo: tiny synthetic model, synthetic chest phantom (no files needed).
    #[arg(long, conflicts_with_all = ["model", "ct", "masks"])]
    demo: bool,
    /// Regions to report, comma-separated keys (default: all of the model's regions).
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// New tokens per region (default: the model's generation.max_new_tokens; 32 with --demo).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also write the report JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
    /// Progress on stderr as one JSON object per line (for scripts).
    #[arg(long, conflicts_with = "quiet")]
    progress_json: bool,
}

/// Removes the demo's temporary package when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut options = ReportOptions {
        regions: args.regions.clone(),
        max_new_tokens: args.max_new_tokens,
        threads: args.threads,
        batch_regions: None,
    };
    let (_temp, model_path, ct, masks) = if args.demo {
        let path = std::env::temp_dir().join(format!("medregion-demo-{}.mrm", std::process::id()));
        let temp = TempFile(path.clone());
        write_synthetic(&path, Preset::Tiny, 1, QuantPolicy::all(WeightType::F32))?;
        let p = chest_phantom()?;
        let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg())?;
        options.max_new_tokens = options.max_new_tokens.or(Some(32));
        (Some(temp), path, p.ct, masks)
    } else {
        // clap guarantees the three paths without --demo.
        let missing = || Error::invalid("--model/--ct/--masks", "required without --demo");
        let model = args.model.clone().ok_or_else(missing)?;
        let ct = Volume::load(args.ct.as_ref().ok_or_else(missing)?)?;
        let scheme = LabelScheme::from_arg(&args.labels)?;
        let masks = Masks::load(args.masks.as_ref().ok_or_else(missing)?, &scheme)?;
        (None, model, ct, masks)
    };
    let model = Model::load(&model_path, &LoadOptions::default())?;
    let mut stderr = std::io::stderr().lock();
    let report = generate_report(&model, &ct, &masks, &options, &mut |e: &Event<'_>| {
        if args.progress_json {
            let _ = writeln!(stderr, "{}", serde_json::to_string(e).unwrap_or_default());
        } else if !args.quiet {
            match e {
                Event::Stage { stage, index, count, region } => {
                    let _ = match region {
                        Some(r) => writeln!(stderr, "[{stage:?}] {r} ({}/{count})", index + 1),
                        None => writeln!(stderr, "[{stage:?}] ({count})"),
                    };
                }
                Event::Token { .. } | Event::Progress { .. } => {}
            }
        }
        ControlFlow::Continue(())
    })?;
    drop(stderr);
    if args.demo {
        println!(
            "DEMO: the model weights are synthetic and untrained, so the region texts below are noise; \
             the patient attributes are real measurements of the synthetic phantom.\n"
        );
    }
    print!("{}", report.to_text());
    if let Some(path) = &args.json {
        write_atomic(path, report.to_json()?.as_bytes())?;
    }
    if !args.quiet && !args.progress_json {
        let t = &report.timings;
        eprintln!(
            "done in {:.2} s (preprocess {:.2}, attributes {:.2}, encoder {:.2}, tokens {:.2}, prefill {:.2}, decode {:.2})",
            t.total, t.preprocess, t.attributes, t.encoder, t.tokens, t.prefill, t.decode
        );
    }
    Ok(())
}
