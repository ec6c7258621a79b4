//! `--device cpu|cuda[:N]`, shared by every command that computes.
//!
//! The CUDA kernels are built and checked (`--features cuda`), but no command runs its model on
//! the GPU yet, so a CUDA device is refused before any work, with the reason: not compiled in,
//! no driver, no such device, or that the command does not run on CUDA yet.

use medregion::{DeviceKind, Error, Result};

/// The `--device` option.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArg {
    /// Compute device: cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DeviceArg {
    /// Checks the device for `what` (e.g. "the report pipeline"); `Ok` for the CPU.
    pub fn check(&self, what: &str) -> Result<()> {
        check(&self.device, what)
    }
}

/// `cpu` or `cuda[:N]`; CUDA is refused with the reason it cannot run `what`.
pub fn check(spec: &str, what: &str) -> Result<()> {
    let bad = || Error::invalid("--device", format!("`{spec}` is not `cpu` or `cuda[:N]`"));
    let (kind, ordinal) = match spec.split_once(':') {
        None if spec == "cpu" => return Ok(()),
        None if spec == "cuda" => (DeviceKind::Cuda, 0),
        Some(("cuda", n)) => (DeviceKind::Cuda, n.parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let devices = medregion::devices();
    let found = devices.iter().find(|d| d.kind == kind && d.ordinal == ordinal);
    let why = match found {
        Some(d) if !d.available => d.reason.clone(),
        Some(_) => format!("the CUDA backend does not run {what} yet; use --device cpu"),
        None => {
            let n = devices.iter().filter(|d| d.kind == kind && d.available).count();
            format!("there is no such device ({n} CUDA device(s) available)")
        }
    };
    Err(Error::Unsupported(format!("device {spec}: {why}")))
}
