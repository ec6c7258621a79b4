//! `medregion attributes --ct CT --masks SEG [--labels totalseg[:SUBTASK]|radgenome|FILE] [--config FILE]
//! [--json OUT]`: the patient-specific attributes of a study (organ volumes, lesion counts,
//! diameters, locations), measured from a label map on the CT's grid. Prints the prompt text
//! block; `--json` also writes the JSON document (schema in `medregion::attributes::schema`).
//! Needs no model.

use std::path::PathBuf;

use medregion::attributes::{compute, compute_volumes, LabelScheme};
use medregion::masks::Masks;
use medregion::model::config::AttributeConfig;
use medregion::volume::Volume;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// CT volume: NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd).
    #[arg(long)]
    ct: PathBuf,
    /// Label map on the CT's grid (integral, non-negative values), NIfTI-1 or NRRD; or a folder
    /// of binary masks named by class (`<class>.nii.gz`, the RadGenome layout).
    #[arg(long)]
    masks: PathBuf,
    /// Label table: `totalseg` (TotalSegmentator v2 ids), `totalseg:lung_nodules`,
    /// `totalseg:pleural_pericard_effusion`, `totalseg:kidney_cysts` (a subtask's own map),
    /// `radgenome` (merged RadGenome regions 1..=10), or a JSON label configuration file (e.g.
    /// `{"table": [{"id": 1, "name": "lung_nodules"}]}`). See the README's "Masks input".
    #[arg(long, default_value = "totalseg")]
    labels: String,
    /// Attribute settings as JSON (the `attributes` section of a model config); defaults
    /// otherwise.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the JSON document to this file (`-` for stdout, after the text).
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let config = match &args.config {
        Some(path) => {
            AttributeConfig::from_json(&std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?)?
        }
        None => AttributeConfig::default(),
    };
    let scheme = LabelScheme::from_arg(&args.labels)?;
    let ct = Volume::load(&args.ct)?;
    let doc = if args.masks.is_dir() {
        // A folder of binary masks by class name (the RadGenome layout): merged into one map.
        let masks = Masks::load(&args.masks, &scheme)?;
        let (labels, merged) = masks.merged_labels()?;
        compute(ct.geometry(), masks.geometry(), &labels, &merged, &config)?
    } else {
        compute_volumes(&ct, &Volume::load(&args.masks)?, &scheme, &config)?
    };
    println!("{}", doc.text);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n").map_err(|e| Error::io(path, e))?;
        }
    }
    Ok(())
}
