//! `medregion eval`: scores generated reports against references with BLEU-1..4, ROUGE-L and
//! METEOR (see `medregion::eval` for the exact metric variants and the input formats), prints a
//! markdown table and optionally writes JSON.

use std::path::PathBuf;

use medregion::eval::{self, WordNet};
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Generated reports: a JSONL file (one study per line) or a directory of report JSON files.
    #[arg(long, value_name = "PRED")]
    pred: PathBuf,
    /// Reference reports, same formats; studies are matched by `id`.
    #[arg(long = "ref", value_name = "REF")]
    reference: PathBuf,
    /// Also score each of the six regions (studies given with `regions` on both sides).
    #[arg(long)]
    by_region: bool,
    /// Write the scores as JSON to this file (`-` for stdout, instead of the table).
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// WordNet 3.0 database directory for METEOR's synonym stage (e.g. /usr/share/wordnet from
    /// the `wordnet-base` package); default: $MEDREGION_WORDNET, else no synonym stage.
    #[arg(long, value_name = "DIR", conflicts_with = "no_wordnet")]
    wordnet: Option<PathBuf>,
    /// Do not use WordNet even if $MEDREGION_WORDNET is set.
    #[arg(long)]
    no_wordnet: bool,
    /// Fail when an id is present on only one side (default: list them and score the rest).
    #[arg(long)]
    strict: bool,
}

pub fn run(args: Args) -> Result<()> {
    let wordnet = if args.no_wordnet {
        None
    } else if let Some(dir) = &args.wordnet {
        Some(WordNet::open(dir)?)
    } else {
        WordNet::from_env()?
    };
    let preds = eval::read_studies(&args.pred)?;
    let refs = eval::read_studies(&args.reference)?;
    let matched = eval::match_studies(preds, refs);
    let unmatched = matched.pred_only.len() + matched.ref_only.len();
    if matched.pairs.is_empty() {
        return Err(Error::invalid(
            "--pred/--ref",
            format!(
                "no study id is in both inputs ({} only in --pred, {} only in --ref)",
                matched.pred_only.len(),
                matched.ref_only.len()
            ),
        ));
    }
    if args.strict && unmatched > 0 {
        let mut ids: Vec<&str> =
            matched.pred_only.iter().chain(&matched.ref_only).map(String::as_str).collect();
        ids.truncate(20);
        return Err(Error::invalid(
            "--strict",
            format!("{unmatched} id(s) present on one side only: {}", ids.join(", ")),
        ));
    }
    let result = eval::evaluate(&matched, wordnet.as_ref(), args.by_region);
    let to_stdout_json = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if !to_stdout_json {
        print!("{}", result.to_markdown());
    }
    if let Some(out) = &args.json {
        let text = result.to_json()?;
        if to_stdout_json {
            println!("{text}");
        } else {
            std::fs::write(out, text + "\n").map_err(|e| Error::io(out, e))?;
        }
    }
    if unmatched > 0 {
        eprintln!(
            "medregion: warning: {unmatched} id(s) unmatched ({} only in --pred, {} only in --ref); listed in the output",
            matched.pred_only.len(),
            matched.ref_only.len()
        );
    }
    Ok(())
}
