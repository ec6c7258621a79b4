//! `medregion inspect` (being built; see the model package issue).

use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    Err(Error::Unsupported("`medregion inspect` is not built yet".to_string()))
}
