//! `medregion eval` (being built; see the eval issue).

use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    Err(Error::Unsupported(
        "`medregion eval` is not built yet".to_string(),
    ))
}
