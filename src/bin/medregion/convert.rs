//! `medregion convert`: build a model package.
//!
//! Sources: `--synthetic tiny|small|full --seed N` (random weights in the real architecture,
//! byte-level tokenizer, no download), or any combination of `--gguf FILE` / `--llm-hf DIR
//! [--lora DIR]` (the decoder), `--vit-hf DIR` (the encoder) and `--heads FILE` (mask extractor
//! and connector), with whatever is not given filled by the `--fill` preset's synthetic weights
//! (`medregion::io::import` documents every rule). Both paths build a config, the tokenizer bytes
//! and a [`WeightSource`] for the same [`PackageBuilder`].
//!
//! GGUF tensors keep their storage type unless `--quant` names one for `llm` (a single type, or
//! `llm=...`): F32/F16/BF16/Q8_0/Q4_0/Q4_1 are copied bit for bit, K-quants re-stored as
//! `--kquant-fallback` (q8_0).
//!
//! Storage types: `--quant` (one type for all, or per component: `llm=q4_0,vit=f16`), the
//! default keep-f32 list (norms, biases, LayerScale, the ViT CLS token and position table; see
//! `medregion::io::package::QuantPolicy`) plus `--keep-f32 GLOB`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use medregion::io::import::{import, ImportOptions};
use medregion::io::package::{BuildReport, PackageBuilder, QuantPolicy, WeightSource};
use medregion::model::synthetic::{synthetic_builder, Preset, SyntheticSource};
use medregion::tensor::WeightType;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Write a synthetic package (random weights, byte-level tokenizer): tiny, small or full.
    #[arg(long, value_name = "PRESET")]
    synthetic: Option<String>,

    /// The decoder (and its tokenizer) from a GGUF file of the llama architecture.
    #[arg(long, value_name = "FILE")]
    gguf: Option<PathBuf>,

    /// The decoder from a Hugging Face LlamaForCausalLM folder (safetensors, sharded or not).
    #[arg(long = "llm-hf", value_name = "DIR")]
    llm_hf: Option<PathBuf>,

    /// A PEFT LoRA adapter folder merged into --llm-hf as W + (alpha/r)·B·A.
    #[arg(long, value_name = "DIR")]
    lora: Option<PathBuf>,

    /// The vision encoder from a Hugging Face Dinov2 / RAD-DINO folder.
    #[arg(long = "vit-hf", value_name = "DIR")]
    vit_hf: Option<PathBuf>,

    /// Encoder input size the position table is re-interpolated for (default: the fill preset's).
    #[arg(long = "vit-image-size", value_name = "N")]
    vit_image_size: Option<usize>,

    /// Mask extractor and connector weights (`mask.*`, `proj.*`) from a safetensors file.
    #[arg(long, value_name = "FILE")]
    heads: Option<PathBuf>,

    /// Tokenizer file: tokenizer.json, a tiktoken tokenizer.model, or a .gguf (default: the
    /// decoder's own).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,

    /// Use the byte-level tokenizer for an imported decoder that has none.
    #[arg(long)]
    byte_tokenizer: bool,

    /// Preset whose shapes and seeded random weights fill the components not given.
    #[arg(long, default_value = "tiny", value_name = "PRESET")]
    fill: String,

    /// Storage type for GGUF tensors that cannot be copied losslessly (K-quants).
    #[arg(long = "kquant-fallback", default_value = "q8_0", value_name = "TYPE")]
    kquant_fallback: String,

    /// Seed of the synthetic weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Output file (written to a temporary file, then renamed into place).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,

    /// Storage type: one of f32, f16, bf16, q8_0, q4_0, q4_1 for every component, or per
    /// component, e.g. `llm=q4_0,vit=f16,mask=f32,proj=f32` (unnamed components: f16;
    /// GGUF decoders keep their own types unless `llm` is named). Default f16.
    #[arg(long, value_name = "SPEC")]
    quant: Option<String>,

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
    let mut p = QuantPolicy::parse(args.quant.as_deref().unwrap_or("f16"), WeightType::F16)?;
    if args.no_default_keep_f32 {
        p = p.without_default_keep();
    }
    for g in args.keep_f32.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
        p = p.keep_f32(g);
    }
    Ok(p)
}

/// Whether `--quant` chose a type for the decoder (a single type, or `llm=`).
fn quant_names_llm(args: &Args) -> bool {
    args.quant
        .as_deref()
        .is_some_and(|q| !q.contains('=') || q.split(',').any(|i| i.trim().starts_with("llm=")))
}

pub fn run(args: Args) -> Result<()> {
    let importing =
        args.gguf.is_some() || args.llm_hf.is_some() || args.vit_hf.is_some() || args.heads.is_some();
    if importing {
        if args.synthetic.is_some() {
            return Err(Error::invalid(
                "source",
                "--synthetic builds a whole package; to fill the parts an import lacks use --fill PRESET",
            ));
        }
        return run_import(args);
    }
    if args.lora.is_some() || args.tokenizer.is_some() || args.vit_image_size.is_some() || args.byte_tokenizer
    {
        return Err(Error::invalid("source", "--lora, --tokenizer, --vit-image-size and --byte-tokenizer need an import source (--llm-hf, --gguf, --vit-hf)"));
    }
    let policy = policy(&args)?;
    let Some(preset) = &args.synthetic else {
        return Err(Error::invalid(
            "source",
            "give --synthetic tiny|small|full, or import with --gguf FILE, --llm-hf DIR [--lora DIR], --vit-hf DIR, --heads FILE",
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

fn run_import(args: Args) -> Result<()> {
    let mut policy = policy(&args)?;
    let mut opts = ImportOptions {
        gguf: args.gguf.clone(),
        llm_hf: args.llm_hf.clone(),
        lora: args.lora.clone(),
        vit_hf: args.vit_hf.clone(),
        vit_image_size: args.vit_image_size,
        heads: args.heads.clone(),
        tokenizer: args.tokenizer.clone(),
        byte_tokenizer: args.byte_tokenizer,
        fill: Preset::parse(&args.fill)?,
        seed: args.seed,
        kquant_fallback: WeightType::parse(&args.kquant_fallback)?,
        ..ImportOptions::default()
    };
    if let Some(n) = args.threads {
        opts.threads = n.max(1);
    }
    let imported = import(&opts)?;
    if !quant_names_llm(&args) {
        for (name, ty) in &imported.source_types {
            policy = policy.with_override(name, *ty);
        }
    }
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    if !imported.synthetic.is_empty() {
        let names: Vec<&str> = imported.synthetic.iter().map(|c| c.name()).collect();
        eprintln!(
            "note: synthetic weights (preset {}, seed {}) for: {}",
            opts.fill.name(),
            opts.seed,
            names.join(", ")
        );
    }
    let mut builder = PackageBuilder::new(imported.config, imported.tokenizer).policy(policy);
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    if args.dry_run {
        return print_plan(&builder);
    }
    let mut source = imported.source;
    let report = write_package(&builder, &args.output, &mut source)?;
    for e in source.conversion_errors() {
        eprintln!(
            "note: {} ({} in the GGUF) stored as {}: relative RMS error {:.2e}, max abs error {:.2e}",
            e.name, e.gguf_type, e.stored_as, e.rel_rms, e.max_abs
        );
    }
    println!(
        "wrote {} ({}, {} parameters, {})",
        report.path.display(),
        human_bytes(report.file_len),
        report.n_params,
        builder.config().name
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
