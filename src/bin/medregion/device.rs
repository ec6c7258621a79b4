//! `--device cpu|cuda[:N]`, shared by every command that computes.
//!
//! Every command that computes (`report`, `generate`, `encode`, `tokens`, `bench llm|vision|
//! report`) runs on a CUDA device when the binary is built with the `cuda` feature and the
//! device is usable ([`resolve`]); a CUDA device that cannot be used is refused before any work
//! (before the model is opened), with the reason: not compiled in, no driver, no such device.

use std::ops::ControlFlow;

use medregion::masks::Masks;
use medregion::model::Model;
use medregion::report::{generate_report, Event, Report, ReportOptions};
use medregion::volume::Volume;
use medregion::{DeviceKind, Error, Result};

/// The `--device` option.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArg {
    /// Compute device: cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl DeviceArg {
    /// The device to run on (see [`resolve`]).
    pub fn resolve(&self) -> Result<Device> {
        resolve(&self.device)
    }
}

/// `--gpu-encoder`: the vision encoder's GEMM precision on a CUDA device (`report`, `bench
/// report`).
#[derive(clap::Args, Clone, Debug)]
pub struct GpuEncoderArg {
    /// Vision encoder GEMMs on a CUDA device: f32 (the report matches the CPU's) or bf16
    /// (production speed; bf16 GEMM inputs, f32 accumulation). Ignored on the CPU.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub gpu_encoder: String,
    /// Keep f16 copies of the decoder's quantized weights on a CUDA device: a faster GEMM
    /// prefill (no dequantization per chunk) for 2 more bytes of device memory per weight.
    #[arg(long)]
    pub gpu_prefill_copies: bool,
}

/// A usable compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// `cuda:N`, found and usable (only with the `cuda` feature).
    Cuda(usize),
}

/// `cpu` or `cuda[:N]` into a device, or the reason the CUDA device cannot be used.
pub fn resolve(spec: &str) -> Result<Device> {
    let bad = || Error::invalid("--device", format!("`{spec}` is not `cpu` or `cuda[:N]`"));
    let ordinal = match spec.split_once(':') {
        None if spec == "cpu" => return Ok(Device::Cpu),
        None if spec == "cuda" => 0,
        Some(("cuda", n)) => n.parse::<usize>().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let devices = medregion::devices();
    let found = devices.iter().find(|d| d.kind == DeviceKind::Cuda && d.ordinal as usize == ordinal);
    let why = match found {
        Some(d) if d.available => return Ok(Device::Cuda(ordinal)),
        Some(d) => d.reason.clone(),
        None => {
            let n = devices.iter().filter(|d| d.kind == DeviceKind::Cuda && d.available).count();
            format!("there is no such device ({n} CUDA device(s) available)")
        }
    };
    Err(Error::Unsupported(format!("device {spec}: {why}")))
}

/// `--activations int8|f32` (clap value parser).
pub fn parse_activations(s: &str) -> std::result::Result<medregion::ops::Activations, String> {
    medregion::ops::Activations::parse(s).ok_or_else(|| format!("`{s}` is not `int8` or `f32`"))
}

/// `--activations f32` is a CPU path: refused on a CUDA device before any work.
pub fn check_activations(device: &Device, activations: medregion::ops::Activations) -> Result<()> {
    match (device, activations) {
        (Device::Cuda(n), medregion::ops::Activations::F32) => Err(Error::Unsupported(format!(
            "--activations f32 on cuda:{n}: the f32-activation products run on the CPU only (use --device cpu)"
        ))),
        _ => Ok(()),
    }
}

/// What `cuda:N` means in a binary built without the `cuda` feature (never reached: such a
/// device is never listed as usable).
#[cfg(not(feature = "cuda"))]
pub fn not_compiled(ordinal: usize) -> Error {
    Error::Unsupported(format!("device cuda:{ordinal}: this build has no CUDA backend (feature `cuda`)"))
}

/// Where the report pipeline runs: the CPU, or the model uploaded to a GPU once (for every
/// study of a run).
pub enum Engine {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Box<medregion::backend::cuda::model::CudaModel>),
}

impl Engine {
    /// The CPU, or `model` uploaded to `device` with its encoder in the `encoder` precision.
    pub fn new(model: &Model<'_>, device: Device, encoder: &GpuEncoderArg) -> Result<Engine> {
        match device {
            Device::Cpu => Ok(Engine::Cpu),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                use medregion::backend::cuda::encoder::Precision;
                use medregion::backend::cuda::model::{CudaModel, CudaOptions};
                let precision = match encoder.gpu_encoder.as_str() {
                    "f32" => Precision::F32,
                    "bf16" => Precision::Bf16,
                    other => {
                        return Err(Error::invalid("--gpu-encoder", format!("`{other}` is not f32 or bf16")))
                    }
                };
                let options =
                    CudaOptions { ordinal, encoder: precision, prefill_copies: encoder.gpu_prefill_copies };
                let cuda = CudaModel::upload(model, &options)?;
                Ok(Engine::Cuda(Box::new(cuda)))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(ordinal) => {
                let _ = (model, encoder);
                Err(not_compiled(ordinal))
            }
        }
    }

    /// The whole pipeline on one study (`medregion::report`).
    pub fn report(
        &self,
        model: &Model<'_>,
        ct: &Volume,
        masks: &Masks,
        options: &ReportOptions,
        on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
    ) -> Result<Report> {
        match self {
            Engine::Cpu => generate_report(model, ct, masks, options, on_event),
            #[cfg(feature = "cuda")]
            Engine::Cuda(cuda) => {
                medregion::report::generate_report_cuda(model, cuda, ct, masks, options, on_event)
            }
        }
    }

    /// Where it runs, for output lines.
    pub fn describe(&self, threads: usize) -> String {
        match self {
            Engine::Cpu => format!("{threads} threads"),
            #[cfg(feature = "cuda")]
            Engine::Cuda(cuda) => format!(
                "cuda:{} ({}), encoder {:?}",
                cuda.gpu().ordinal(),
                cuda.gpu().name(),
                cuda.encoder().precision()
            ),
        }
    }
}
