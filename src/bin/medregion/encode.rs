//! `medregion encode --model M --ct FILE [--masks FILE] --dump OUT.safetensors [--threads N]`:
//! preprocesses a CT with the package's config, runs the vision encoder on every slice and
//! dumps every intermediate as safetensors, so another implementation can be compared tensor
//! by tensor (Python: `safetensors.numpy.load_file`).
//!
//! Dumped tensors (all little-endian, C order):
//! * `volume` F32 `[D, H, W]`: the preprocessed volume in [0, 1];
//! * `slices` F32 `[D, 3, S, S]`: the encoder input (normalized, 3 channels);
//! * `last_hidden_state` F32 `[D, T, hidden]` (T = 1 + g², CLS first);
//! * `hidden_states.{l}` F32 `[D, T, hidden]` for each level (default: the mask extractor's
//!   levels, HF indexing: 0 = embeddings);
//! * `mask` U16 `[D, H, W]` with `--masks`: the label map sent through the same geometry.
//!
//! Metadata (strings): `model`, `ct`, `vision_config` (JSON), `levels`, `threads`,
//! `encode_seconds`.

use std::path::PathBuf;
use std::time::Instant;

use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::preprocess::{labels_from_volume, preprocess};
use medregion::vision::{slices_from_volume, EncodeOptions, VisionEncoder};
use medregion::volume::Volume;
use medregion::{Error, Result};
use safetensors::tensor::{Dtype, TensorView};

#[derive(clap::Args)]
pub struct Args {
    /// Model package (.mrm / .safetensors).
    #[arg(long)]
    model: PathBuf,
    /// CT volume: NIfTI-1 (.nii, .nii.gz) or NRRD (.nrrd).
    #[arg(long)]
    ct: PathBuf,
    /// Label map on the CT's grid (integers 0..=65535), sent through the same preprocessing.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Output safetensors file.
    #[arg(long)]
    dump: PathBuf,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,
    /// Hidden states to dump, comma-separated (default: the mask extractor's levels).
    #[arg(long, value_delimiter = ',')]
    levels: Option<Vec<usize>>,
    /// Slices per encoder batch (0 = the encoder's default).
    #[arg(long, default_value_t = 0)]
    batch: usize,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    let model = Model::load(&args.model, &LoadOptions::default())?;
    let config = model.config();
    let volume = Volume::load(&args.ct)?;
    let pre = preprocess(&volume, &config.preprocess)?;
    let mask = match &args.masks {
        Some(path) => {
            let labels = Volume::load(path)?;
            Some(pre.map_mask(&labels_from_volume(&labels)?, labels.geometry())?)
        }
        None => None,
    };
    let encoder = VisionEncoder::new(&model)?;
    let vcfg = encoder.config().clone();
    let [depth, height, width] = pre.shape;
    let slices = slices_from_volume(&pre.data, pre.shape, &vcfg)?;
    let pool = ThreadPool::new(args.threads)?;
    let levels = args.levels.clone().unwrap_or_else(|| config.mask_extractor.levels.clone());
    let options = EncodeOptions { levels, batch: args.batch };
    let (out, seconds, runs_on) = match device {
        crate::device::Device::Cpu => {
            let start = Instant::now();
            let out = encoder.encode(&slices, depth, &options, &pool)?;
            (out, start.elapsed().as_secs_f64(), format!("{} threads", pool.threads()))
        }
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(ordinal) => {
            use medregion::backend::cuda::encoder::{DeviceEncoder, Precision};
            let gpu = medregion::backend::cuda::Gpu::open(ordinal)?;
            let dev = DeviceEncoder::upload(&gpu, &model, Precision::F32)?;
            // The timing starts after the upload, like the CPU's after loading.
            let start = Instant::now();
            let out = dev.encode(&slices, depth, &options)?;
            (out, start.elapsed().as_secs_f64(), format!("cuda:{ordinal} ({}, f32)", gpu.name()))
        }
        #[cfg(not(feature = "cuda"))]
        crate::device::Device::Cuda(ordinal) => return Err(crate::device::not_compiled(ordinal)),
    };

    let s = vcfg.image_size;
    let states = [out.n_slices, out.n_tokens, out.hidden_size];
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("volume".into(), Dtype::F32, vec![depth, height, width], f32_bytes(&pre.data)),
        ("slices".into(), Dtype::F32, vec![depth, 3, s, s], f32_bytes(&slices)),
        ("last_hidden_state".into(), Dtype::F32, states.to_vec(), f32_bytes(&out.last_hidden_state)),
    ];
    for (level, data) in &out.hidden_states {
        tensors.push((format!("hidden_states.{level}"), Dtype::F32, states.to_vec(), f32_bytes(data)));
    }
    if let Some(m) = &mask {
        let bytes = m.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push(("mask".into(), Dtype::U16, vec![depth, height, width], bytes));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Internal(format!("dump tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let levels: Vec<String> = out.hidden_states.iter().map(|(l, _)| l.to_string()).collect();
    let metadata = [
        ("model", config.name.clone()),
        ("ct", args.ct.display().to_string()),
        ("vision_config", serde_json::to_string(&vcfg).unwrap_or_default()),
        ("levels", levels.join(",")),
        ("threads", pool.threads().to_string()),
        ("device", runs_on.clone()),
        ("encode_seconds", format!("{seconds:.6}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize_to_file(views, Some(metadata), &args.dump)
        .map_err(|e| Error::Internal(format!("writing {}: {e}", args.dump.display())))?;
    println!(
        "encoded {depth} slices of {s}x{s} ({} tokens x {}) in {seconds:.3} s ({:.2} slices/s, {runs_on}); wrote {}",
        out.n_tokens,
        out.hidden_size,
        depth as f64 / seconds.max(1e-9),
        args.dump.display()
    );
    Ok(())
}
