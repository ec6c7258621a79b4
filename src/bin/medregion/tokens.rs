//! `medregion tokens --model M --ct CT --masks SEG [--labels totalseg|radgenome|FILE]
//! [--regions LIST] --dump OUT.safetensors [--threads N]`: everything the decoder would read for
//! each region — R²-pooled image tokens, mask and spatial tokens, the selected slices and the
//! assembled prompt — dumped as safetensors for comparison with another implementation
//! (Python: `safetensors.numpy.load_file`; metadata via `safe_open(...).metadata()`).
//!
//! Dumped tensors (little-endian, C order), for each region key `r`:
//! * `r.slices` I64 `[K]`: the representative slices (ascending);
//! * `r.pooled` F32 `[n_tokens, vision_hidden]`: R²-pooled features before the connector;
//! * `r.image_tokens` F32 `[n_tokens, decoder_hidden]`: after the connector;
//! * `r.mask_vectors` F32 `[n_slots, n_tokens]`: each slot's R²-pooled mask;
//! * `r.mask_tokens`, `r.spatial_tokens` F32 `[n_slots, decoder_hidden]`;
//! * `r.prompt_ids` I64 `[L]`: the tokenized prompt;
//!
//! and `slot_masks` U8 `[n_slots, D, H, W]` (the preprocessed slot masks). Metadata (strings):
//! `model`, `ct`, `masks`, `slots` (JSON keys in order), `rules` (JSON region → rule),
//! `prompts` (JSON region → text), `attributes` (the attribute text), `masks_report` (JSON).
//! The file is written to a temporary name and renamed: no partial dump is left on error.

use std::ops::ControlFlow;
use std::path::PathBuf;

use crate::files::write_atomic;

use medregion::attributes::LabelScheme;
use medregion::masks::Masks;
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::report::{prepare, Event, Prepared, ReportOptions};
use medregion::tokenizer::Tokenizer;
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
    /// Masks on the CT's grid: a label map file, or a folder of binary masks named by class.
    #[arg(long)]
    masks: PathBuf,
    /// Label table: totalseg, radgenome, or a JSON label configuration file.
    #[arg(long, default_value = "totalseg")]
    labels: String,
    /// Regions to prepare, comma-separated keys (default: all of the model's regions).
    #[arg(long, value_delimiter = ',')]
    regions: Option<Vec<String>>,
    /// Output safetensors file.
    #[arg(long)]
    dump: PathBuf,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes<T: Copy + TryInto<i64>>(v: &[T]) -> Vec<u8> {
    v.iter().flat_map(|&x| x.try_into().unwrap_or(-1).to_le_bytes()).collect()
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    let model = Model::load(&args.model, &LoadOptions::default())?;
    let config = model.config();
    let ct = Volume::load(&args.ct)?;
    let scheme = LabelScheme::from_arg(&args.labels)?;
    let masks = Masks::load(&args.masks, &scheme)?;
    let tokenizer = Tokenizer::from_package(&model)?;
    let pool = ThreadPool::new(args.threads)?;
    // The report pipeline's own stages up to the prompts (nothing decoded).
    let options =
        ReportOptions { regions: args.regions.clone(), threads: args.threads, ..Default::default() };
    let mut quiet = |_: &Event<'_>| ControlFlow::Continue(());
    let prepared = match device {
        crate::device::Device::Cpu => prepare(&model, &tokenizer, &pool, &ct, &masks, &options, &mut quiet)?,
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(ordinal) => {
            use medregion::backend::cuda::encoder::{DeviceEncoder, Precision};
            let gpu = medregion::backend::cuda::Gpu::open(ordinal)?;
            let encoder = DeviceEncoder::upload(&gpu, &model, Precision::F32)?;
            medregion::report::prepare_cuda(
                &model, &encoder, &tokenizer, &pool, &ct, &masks, &options, &mut quiet,
            )?
        }
        #[cfg(not(feature = "cuda"))]
        crate::device::Device::Cuda(ordinal) => return Err(crate::device::not_compiled(ordinal)),
    };
    let Prepared { slot, attributes, tokens, prompts: region_prompts, .. } = prepared;

    let (n_tokens, n_slots) = (config.pooling.n_tokens(), config.segmentation.len());
    let (vh, dh) = (config.vision.hidden_size, config.decoder.hidden_size);
    let [d, h, w] = slot.shape;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut prompts = serde_json::Map::new();
    let mut rules = serde_json::Map::new();
    for (t, prompt) in tokens.iter().zip(region_prompts) {
        let r = &t.region;
        let k = t.selection.slices.len();
        tensors.push((format!("{r}.slices"), Dtype::I64, vec![k], i64_bytes(&t.selection.slices)));
        tensors.push((format!("{r}.pooled"), Dtype::F32, vec![n_tokens, vh], f32_bytes(&t.pooled)));
        tensors.push((format!("{r}.image_tokens"), Dtype::F32, vec![n_tokens, dh], f32_bytes(&t.image)));
        tensors.push((
            format!("{r}.mask_vectors"),
            Dtype::F32,
            vec![n_slots, n_tokens],
            f32_bytes(&t.mask_vectors),
        ));
        tensors.push((format!("{r}.mask_tokens"), Dtype::F32, vec![n_slots, dh], f32_bytes(&t.mask_tokens)));
        tensors.push((
            format!("{r}.spatial_tokens"),
            Dtype::F32,
            vec![n_slots, dh],
            f32_bytes(&t.spatial_tokens),
        ));
        tensors.push((format!("{r}.prompt_ids"), Dtype::I64, vec![prompt.ids.len()], i64_bytes(&prompt.ids)));
        println!(
            "{r}: slices {:?} ({}), prompt {} tokens ({} image, {} mask + {} spatial)",
            t.selection.slices,
            t.selection.rule,
            prompt.ids.len(),
            prompt.image_positions.len(),
            prompt.mask_positions.len(),
            prompt.pos_positions.len()
        );
        prompts.insert(r.clone(), prompt.text.into());
        rules.insert(r.clone(), t.selection.rule.into());
    }
    let all_masks: Vec<u8> = slot.masks.concat();
    tensors.push(("slot_masks".into(), Dtype::U8, vec![n_slots, d, h, w], all_masks));
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Internal(format!("dump tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = [
        ("model", config.name.clone()),
        ("ct", args.ct.display().to_string()),
        ("masks", args.masks.display().to_string()),
        ("slots", serde_json::to_string(&slot.keys).unwrap_or_default()),
        ("rules", serde_json::Value::Object(rules).to_string()),
        ("prompts", serde_json::Value::Object(prompts).to_string()),
        ("attributes", attributes.text.clone()),
        ("masks_report", serde_json::to_string(&masks.report()).unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::Internal(format!("serializing the dump: {e}")))?;
    write_atomic(&args.dump, &bytes)?;
    let missing: Vec<&str> =
        slot.keys.iter().zip(&slot.present).filter(|(_, &p)| !p).map(|(k, _)| k.as_str()).collect();
    if !missing.is_empty() {
        println!("missing structures (empty masks, tokens still present): {}", missing.join(", "));
    }
    println!("wrote {}", args.dump.display());
    Ok(())
}
