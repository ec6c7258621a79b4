//! `medregion volume-info --ct FILE [--json]`: what a CT file holds, as medregion reads it
//! (dims, spacing, the voxel → RAS+ affine, orientation code, HU range), and optionally the
//! preprocessing plan with the default configuration (crop box, reorientation, window).

use std::path::PathBuf;

use medregion::preprocess::{preprocess, PreprocessConfig, Preprocessed};
use medregion::volume::{Volume, VolumeSummary};
use medregion::Result;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// CT volume: NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd).
    #[arg(long)]
    ct: PathBuf,
    /// Also run the default preprocessing and show its crop box, reorientation and window.
    #[arg(long)]
    preprocess: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The JSON document: the volume summary, then the preprocessing plan when asked for.
#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    volume: &'a VolumeSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocess: Option<&'a Preprocessed>,
}

pub fn run(args: Args) -> Result<()> {
    let volume = Volume::load(&args.ct)?;
    let summary = volume.summary();
    let plan = if args.preprocess { Some(preprocess(&volume, &PreprocessConfig::default())?) } else { None };
    if args.json {
        let doc = Doc { volume: &summary, preprocess: plan.as_ref() };
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    let [nx, ny, nz] = summary.dims;
    let [sx, sy, sz] = summary.spacing_mm;
    println!("source:       {}", summary.source);
    println!("stored type:  {}", summary.stored_dtype.name());
    println!("dims:         {nx} x {ny} x {nz} (x fastest)");
    println!("spacing:      {sx:.6} x {sy:.6} x {sz:.6} mm");
    println!("orientation:  {} (voxel axes i, j, k point to these patient directions)", summary.orientation);
    println!("affine (voxel -> RAS+ mm):");
    for row in &summary.affine_ras {
        println!("  [{:>12.6} {:>12.6} {:>12.6} {:>12.6}]", row[0], row[1], row[2], row[3]);
    }
    println!("HU range:     [{}, {}], mean {:.2}", summary.hu_range[0], summary.hu_range[1], summary.hu_mean);
    if let Some(p) = plan {
        let r = &p.reorientation;
        println!(
            "preprocess:   {} -> {} (canonical axis <- stored axis {:?}, flipped {:?}), crop x {:?} y {:?} z {:?} \
             (stored voxels, half-open), window [{}, {}] HU, output {:?} [D, H, W]",
            r.from,
            r.to,
            r.source_axis,
            r.flipped,
            [p.crop_stored.start[0], p.crop_stored.end[0]],
            [p.crop_stored.start[1], p.crop_stored.end[1]],
            [p.crop_stored.start[2], p.crop_stored.end[2]],
            p.window.lo,
            p.window.hi,
            p.shape
        );
    }
    Ok(())
}
