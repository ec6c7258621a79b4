//! `medregion phantom --out DIR`: writes the project's synthetic chest phantom
//! (`medregion::phantom`) as `DIR/ct.nrrd` (int16 HU) and `DIR/labels.nrrd` (uint16,
//! TotalSegmentator ids of the default `totalseg` table), so every command that takes a CT and
//! masks can be tried with no download. Each file is written under a temporary name and renamed.

use std::path::PathBuf;

use crate::files::write_atomic;

use medregion::phantom::chest_phantom;
use medregion::volume::buffer::DType;
use medregion::volume::nrrd::write_bytes;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let p = chest_phantom()?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(args.out.display().to_string(), e))?;
    let (ct, labels) = (args.out.join("ct.nrrd"), args.out.join("labels.nrrd"));
    write_atomic(&ct, &write_bytes(&p.ct, DType::I16)?)?;
    write_atomic(&labels, &write_bytes(&p.labels, DType::U16)?)?;
    println!(
        "wrote {} and {} ({:?} voxels of {:?} mm)",
        ct.display(),
        labels.display(),
        p.ct.dims(),
        p.ct.spacing()
    );
    Ok(())
}
