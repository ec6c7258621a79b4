//! `medregion convert`: build a model package.
//!
//! Sources: `--synthetic tiny|small|full --seed N` (random weights in the real architecture,
//! byte-level tokenizer, no download). Importers (HF LLaMA/LoRA/Dinov2, GGUF) plug in as
//! another [`WeightSource`] passed to the same [`PackageBuilder`]: build the config, the
//! tokenizer bytes and the source, then call [`write_package`].
//!
//! Storage types: `--quant` (one type for all, or per component: `llm=q4_0,vit=f16`), the
//! default keep-f32 list (norms, biases, LayerScale, the ViT CLS token and position table; see
//! `medregion::io::package::QuantPolicy`) plus `--keep-f32 GLOB`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use medregion::io::package::{BuildReport, PackageBuilder, QuantPolicy, WeightSource};
use medregion::model::synthetic::{synthetic_builder, Preset, SyntheticSource};
use medregion::tensor::WeightType;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Write a synthetic package (random weights, byte-level tokenizer): tiny, small or full.
    #[arg(long, value_name = "PRESET")]
    synthetic: Option<String>,

    /// Seed of the synthetic weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Output file (written to a temporary file, then renamed into place).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Storage type: one of f32, f16, bf16, q8_0, q4_0, q4_1 for every component, or per
    /// component, e.g. `llm=q4_0,vit=f16,mask=f32,proj=f32` (unnamed components: f16).
    #[arg(long, default_value = "f16", value_name = "SPEC")]
    quant: String,

    /// Keep weights matching this glob in f32 (repeatable, or comma-separated); added to the
    /// default list `*norm*`, `*.bias`, `*.lambda1`, `vit.embeddings.cls_token`,
    /// `vit.embeddings.position_embeddings`.
    #[arg(long = "keep-f32", value_name = "GLOB", value_delimiter = ',')]
    keep_f32: Vec<String>,

    /// Do not apply the default keep-f32 list (1-D tensors still stay f32).
    #[arg(long)]
    no_default_keep_f32: bool,

    /// Threads for generation and quantization (default: all cores).
    #[arg(long)]
    threads: Option<usize>,

    /// Print the plan (each weight's storage type) and the file size, write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// The quantization policy the arguments describe.
pub fn policy(args: &Args) -> Result<QuantPolicy> {
    let mut p = QuantPolicy::parse(&args.quant, WeightType::F16)?;
    if args.no_default_keep_f32 {
        p = p.without_default_keep();
    }
    for g in args.keep_f32.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        p = p.keep_f32(g);
    }
    Ok(p)
}

pub fn run(args: Args) -> Result<()> {
    let policy = policy(&args)?;
    let Some(preset) = &args.synthetic else {
        return Err(Error::invalid(
            "source",
            "give --synthetic tiny|small|full (Hugging Face and GGUF import are not wired into this command yet)",
        ));
    };
    let preset = Preset::parse(preset)?;
    let mut builder = synthetic_builder(preset, policy);
    let mut source = SyntheticSource::new(args.seed);
    if let Some(n) = args.threads {
        builder = builder.threads(n);
        source.threads = n.max(1);
    }
    if args.dry_run {
        return print_plan(&builder);
    }
    let report = write_package(&builder, &args.output, &mut source)?;
    println!(
        "wrote {} ({}, {} parameters, synthetic {} seed {})",
        report.path.display(),
        human_bytes(report.file_len),
        report.n_params,
        preset.name(),
        args.seed
    );
    println!("checksum {}", report.checksum);
    Ok(())
}

/// Writes with a progress line on a terminal and a timing summary.
pub fn write_package(
    builder: &PackageBuilder,
    output: &Path,
    source: &mut dyn WeightSource,
) -> Result<BuildReport> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let report = builder.write_with_progress(output, source, &mut |done, total, name| {
        if tty {
            eprint!("\r\x1b[2K[{done}/{total}] {name}");
        }
    })?;
    if tty {
        eprintln!("\r\x1b[2K[done] {:.1} s", start.elapsed().as_secs_f64());
    }
    Ok(report)
}

fn print_plan(builder: &PackageBuilder) -> Result<()> {
    let plan = builder.plan()?;
    let mut total = 0u64;
    for (name, shape, ty) in &plan {
        let n: usize = shape.iter().product();
        let bytes = ty.storage_bytes(n) as u64;
        total += bytes;
        println!("{:<6} {:>12} {:?} {name}", ty.name(), bytes, shape);
    }
    println!("{} weights, about {} (fillers and header not counted)", plan.len(), human_bytes(total));
    Ok(())
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
