//! The `medregion` command-line tool. Each subcommand lives in its own file; errors are printed
//! once, as `medregion: error: ...`, with a non-zero exit status (never a panic trace).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod attributes;
mod bench;
mod convert;
mod device;
mod encode;
mod eval;
mod files;
mod generate;
mod info;
mod inspect;
mod phantom;
mod progress;
mod report;
mod tokens;
mod volume_info;

#[derive(Parser)]
#[command(
    name = "medregion",
    version,
    about = "3D chest CT + masks -> structured radiology report (MedRegion-CT)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, build features and the compute devices of this machine.
    Info(info::Args),
    /// Build a model package from HF / GGUF checkpoints, or a synthetic one.
    Convert(convert::Args),
    /// Describe a model package: config, tensors, sizes, checksum.
    Inspect(inspect::Args),
    /// Describe a CT volume (NIfTI-1 / NRRD): dims, spacing, affine, orientation, HU range.
    VolumeInfo(volume_info::Args),
    /// Speed benchmarks (`bench llm`).
    Bench(bench::Args),
    /// Generate text with the model's decoder (streams to stdout, speed on stderr).
    Generate(generate::Args),
    /// Preprocess a CT and run the vision encoder; dump every intermediate as safetensors.
    Encode(encode::Args),
    /// Region tokens of a study (R² pooling, mask/spatial tokens, prompts) dumped as safetensors.
    Tokens(tokens::Args),
    /// Patient-specific attributes from a label map: organ volumes, lesions (no model needed).
    Attributes(attributes::Args),
    /// The whole pipeline: CT + masks -> region reports (`--demo` needs no files; several CTs = batch).
    Report(report::Args),
    /// Write the synthetic chest phantom (CT + label map) as NRRD files.
    Phantom(phantom::Args),
    /// Score generated reports against references (BLEU-1..4, ROUGE-L, METEOR).
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => info::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::VolumeInfo(args) => volume_info::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Attributes(args) => attributes::run(args),
        Command::Phantom(args) => phantom::run(args),
        Command::Report(args) => report::run(args),
        Command::Tokens(args) => tokens::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("medregion: error: {err}");
            ExitCode::FAILURE
        }
    }
}
