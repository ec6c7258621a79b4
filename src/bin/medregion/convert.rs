//! `medregion convert` (being built; see the model package issue).

use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    Err(Error::Unsupported("`medregion convert` is not built yet".to_string()))
}
