//! The end-to-end pipeline: CT + masks → attributes → encoder → region tokens → one prompt per
//! region → decoding → the region reports and the merged report (DESIGN §1–§2, SPEC §9.3).
//!
//! [`generate_report`] runs the stages in order, once per study: preprocessing, the attribute
//! measurement (on the original grid), the encoder (all slices, the levels the mask extractor
//! needs), the region tokens of every requested region, then for each region a fresh decoder
//! context fed the region's spliced prompt embeddings and decoded greedily (the config's
//! sampling defaults) up to `max_new_tokens` or a stop token.
//!
//! Choices made here:
//! * **Decoding.** With `generation.batch_regions` (default) the regions decode as one batch
//!   (`Session::generate_batch_inputs`): the leading prompt rows that are bit-identical in every
//!   region (with the default `per_region_topk` pooling, everything before the image tokens) are
//!   fed once and shared, each region feeds the rest of its spliced prompt, and all regions
//!   decode in lock step, one forward per step. Otherwise (or above 8 regions) each region is
//!   decoded alone from an empty context. Greedy results are the same either way (tested).
//! * **Determinism.** Greedy decoding with the same weights, inputs and options gives the same
//!   bytes: every stage is deterministic, and the matmul and attention kernels give results
//!   that do not depend on the thread count (tested).
//! * **Merging.** Region texts are trimmed and joined with a blank line in region order; with
//!   `generation.merge_headers` each is prefixed "Header: "; with `generation.drop_no_findings`
//!   a region whose text equals `no_findings_text` is left out of the merged text (it stays in
//!   `regions`).
//! * **Events.** `on_event` sees each stage start (with counts), the encoder's progress after
//!   each batch of slices, and every streamed token; a `Break` from it cancels the run: the
//!   result is [`Error::Cancelled`], within one decode step (or one encoder batch).
//! * **Sessions.** [`generate_report`] makes a decoder session sized for the study;
//!   [`generate_report_in`] runs in a caller's session (the C ABI's `mr_session`): it resets the
//!   session's conversation, uses its threads for every stage, and honours its cancel flag
//!   (set from any thread) at every stage boundary, after every encoder batch, between prefill
//!   chunks (32 positions) and after every decode step. A prompt longer than the session's
//!   context is refused before decoding; a context too small for `max_new_tokens` ends the
//!   regions with `context_full`.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::attributes::{compute, Attributes};
#[cfg(feature = "cuda")]
use crate::backend::cuda::decoder::{DeviceSession, DeviceSessionOptions, MAX_BATCH as DEVICE_MAX_BATCH};
#[cfg(feature = "cuda")]
use crate::backend::cuda::encoder::DeviceEncoder;
#[cfg(feature = "cuda")]
use crate::backend::cuda::model::CudaModel;
#[cfg(feature = "cuda")]
use crate::llm::weights::DecoderWeights;
use crate::llm::{
    GenerateOptions, Generation, Input, OnBatchToken, OnToken, Session, SessionOptions, StopReason,
};
use crate::masks::{Masks, SlotMasks};
use crate::model::config::RegionConfig;
use crate::model::Model;
use crate::ops::{Activations, ThreadPool};
use crate::preprocess::preprocess;
use crate::region::{assemble, splice, MaskView, Prompt, RegionHeads, RegionTokens};
use crate::tokenizer::Tokenizer;
use crate::vision::{slices_from_volume, EncodeOptions, EncodeProfile, VisionEncoder};
use crate::volume::Volume;
use crate::{Error, Result};

/// Version of the report JSON ([`Report`]); fields are only ever added.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// What to run. `Default` = every region of the model, the config's token budget, all cores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// Region keys to report, in the model's region order when `None`.
    pub regions: Option<Vec<String>>,
    /// New tokens per region; `None` = `generation.max_new_tokens`.
    pub max_new_tokens: Option<usize>,
    /// Threads (0 = one per core); [`generate_report_in`] uses the session's threads instead.
    pub threads: usize,
    /// Decode the regions as one batch; `None` = `generation.batch_regions`.
    pub batch_regions: Option<bool>,
    /// How the decoder's products treat activations against quantized weights (see
    /// `llm::SessionOptions::activations`); [`generate_report_in`] uses the session's instead,
    /// and the CUDA pipeline refuses [`Activations::F32`] (a CPU path).
    pub activations: Activations,
}

/// A pipeline stage, reported when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Preprocess,
    Attributes,
    Encoder,
    Tokens,
    /// Decoding region `index` (of `count`).
    Region,
}

/// A progress event.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A stage starts; `index`/`count` are the region (or the slices for the encoder).
    Stage { stage: Stage, index: usize, count: usize, region: Option<&'a str> },
    /// Progress within a stage: `done` of `total` (encoder: slices encoded).
    Progress { stage: Stage, done: usize, total: usize },
    /// A region produced text.
    Token { region: &'a str, index: usize, text: &'a str },
}

/// Per-stage wall time in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timings {
    pub preprocess: f64,
    pub attributes: f64,
    pub encoder: f64,
    pub tokens: f64,
    pub prefill: f64,
    pub decode: f64,
    pub total: f64,
}

/// One region's output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionReport {
    pub key: String,
    pub header: String,
    pub text: String,
    /// Generated tokens (without the stop token).
    pub tokens: usize,
    pub prompt_tokens: usize,
    /// Why decoding ended: `stop_token`, `max_tokens`, `context_full`, `stop_string`.
    pub stop: String,
    /// The representative slices and the rule that chose them.
    pub slices: Vec<usize>,
    pub slice_rule: String,
}

/// Input geometry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Study {
    pub ct_source: String,
    pub ct_dims: [usize; 3],
    pub ct_spacing_mm: [f64; 3],
    pub ct_orientation: String,
    /// `[D, H, W]` after preprocessing.
    pub preprocessed_shape: [usize; 3],
    /// Slot keys whose masks are empty or missing.
    pub missing_structures: Vec<String>,
}

/// The report document (`schema_version` [`REPORT_SCHEMA_VERSION`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub engine_version: String,
    pub model_name: String,
    /// The package checksum (`sha256:<hex>`), which names the weights that wrote the report.
    pub model_checksum: String,
    pub study: Study,
    pub attributes: Attributes,
    pub regions: Vec<RegionReport>,
    /// The merged report.
    pub text: String,
    pub timings: Timings,
}

impl Report {
    /// The plain-text report: the attribute section, then each region's text under its heading
    /// (`Header:` on its own line), one blank line between sections.
    pub fn to_text(&self) -> String {
        let mut out = format!("{}\n", self.attributes.text.trim_end());
        for r in &self.regions {
            out.push_str(&format!("\n{}:\n{}\n", r.header, r.text));
        }
        out
    }

    /// The report JSON (pretty-printed, schema [`REPORT_SCHEMA_VERSION`], ending in a newline).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map(|j| j + "\n").map_err(|e| Error::Internal(e.to_string()))
    }
}

/// A cancellation check: a `Break` from the caller or the cancel flag (consumed when seen).
struct Cancel<'a> {
    on_event: &'a mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
    flag: Arc<AtomicBool>,
}

impl Cancel<'_> {
    fn emit(&mut self, e: Event<'_>) -> Result<()> {
        if self.flag.swap(false, Ordering::AcqRel) {
            return Err(Error::Cancelled);
        }
        match (self.on_event)(&e) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(Error::Cancelled),
        }
    }
}

/// The decoder a report runs on: the CPU [`Session`] or a CUDA session (feature `cuda`). The
/// decoding and merging steps are written once against it.
trait RegionDecoder {
    fn context(&self) -> usize;
    fn max_batch(&self) -> usize;
    /// Token embeddings of `ids` on the host (`[ids.len(), hidden_size]`), to splice into.
    fn embed(&self, ids: &[u32], out: &mut [f32]) -> Result<()>;
    fn reset(&mut self);
    fn generate(
        &mut self,
        prompt: Input<'_>,
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnToken<'_>,
    ) -> Result<Generation>;
    fn generate_batch_inputs(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[Input<'_>],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>>;
}

impl RegionDecoder for Session<'_> {
    fn context(&self) -> usize {
        Session::context(self)
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn embed(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        Session::embed(self, ids, out)
    }
    fn reset(&mut self) {
        Session::reset(self)
    }
    fn generate(
        &mut self,
        prompt: Input<'_>,
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnToken<'_>,
    ) -> Result<Generation> {
        Session::generate(self, prompt, opts, tokenizer, on_token)
    }
    fn generate_batch_inputs(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[Input<'_>],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>> {
        Session::generate_batch_inputs(self, prefix, suffixes, opts, tokenizer, on_token)
    }
}

/// A CUDA decoder session with the host's view of the token embedding (the prompts are
/// embedded and spliced on the host, as on the CPU, then uploaded row by row).
#[cfg(feature = "cuda")]
struct CudaDecoder<'m, 'd> {
    session: DeviceSession<'d>,
    weights: DecoderWeights<'m>,
}

#[cfg(feature = "cuda")]
impl RegionDecoder for CudaDecoder<'_, '_> {
    fn context(&self) -> usize {
        self.session.context()
    }
    fn max_batch(&self) -> usize {
        self.session.max_batch()
    }
    fn embed(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        crate::llm::session::embed_ids(&self.weights.embed, self.session.config(), ids, out)
    }
    fn reset(&mut self) {
        self.session.reset()
    }
    fn generate(
        &mut self,
        prompt: Input<'_>,
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnToken<'_>,
    ) -> Result<Generation> {
        self.session.generate(prompt, opts, tokenizer, on_token)
    }
    fn generate_batch_inputs(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[Input<'_>],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>> {
        self.session.generate_batch_inputs(prefix, suffixes, opts, tokenizer, on_token)
    }
}

/// Where the encoder runs.
#[derive(Clone, Copy)]
enum EncoderOn<'a> {
    Cpu,
    #[cfg(feature = "cuda")]
    /// The encoder, and the connector on the device (`None`: multiplied on the host).
    Cuda(&'a DeviceEncoder, Option<&'a crate::backend::cuda::region::DeviceConnector>),
    #[cfg(not(feature = "cuda"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

/// The encoder's output: on the host, or left on the device for the pooling.
enum Encoded<'a> {
    Host(crate::vision::VisionOutput),
    #[cfg(feature = "cuda")]
    Device(
        &'a DeviceEncoder,
        Option<&'a crate::backend::cuda::region::DeviceConnector>,
        crate::backend::cuda::encoder::DeviceVision,
    ),
    #[cfg(not(feature = "cuda"))]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

/// Everything before decoding, from [`prepare`]: the stages that do not need the decoder.
pub struct Prepared<'c> {
    /// The requested regions, in the requested (or the model's) order.
    pub regions: Vec<&'c RegionConfig>,
    /// New tokens per region (the options', or the config's default).
    pub max_new_tokens: usize,
    /// `[D, H, W]` after preprocessing.
    pub pre_shape: [usize; 3],
    /// The slot masks on the preprocessed grid.
    pub slot: SlotMasks,
    pub attributes: Attributes,
    /// Per region: slices, pooled and projected tokens.
    pub tokens: Vec<RegionTokens>,
    /// Per region: the assembled prompt (ids and the positions to splice).
    pub prompts: Vec<Prompt>,
    /// `preprocess`, `attributes`, `encoder` and `tokens` are filled.
    pub timings: Timings,
}

impl Prepared<'_> {
    fn longest_prompt(&self) -> usize {
        self.prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0)
    }
}

/// Runs the whole pipeline on one study in a decoder session made for it (see the module doc).
pub fn generate_report(
    model: &Model<'_>,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Report> {
    let t_start = Instant::now();
    let tokenizer = Tokenizer::from_package(model)?;
    let mut on = Cancel { on_event, flag: Arc::new(AtomicBool::new(false)) };
    let pool = ThreadPool::new(options.threads)?;
    let prepared = prepare_with(model, &tokenizer, &pool, EncoderOn::Cpu, ct, masks, options, &mut on)?;
    drop(pool);
    let max_pos = model.config().decoder.max_position_embeddings;
    let context = (prepared.longest_prompt() + prepared.max_new_tokens).min(max_pos);
    let mut session = Session::new(
        model,
        &SessionOptions {
            context,
            threads: options.threads,
            activations: options.activations,
            ..SessionOptions::default()
        },
    )?;
    on.flag = session.cancel_flag();
    decode(&mut session, model, &tokenizer, ct, prepared, options, &mut on, t_start)
}

/// [`generate_report`] with the encoder and the decoder on the GPU of `cuda` (uploaded once
/// from the same `model`): preprocessing, the attributes and the region tokens stay on the
/// CPU (`options.threads`), the encoder runs on the device in the [`CudaModel`]'s precision,
/// and the regions decode in one device session (batched like the CPU's, greedy selection on
/// the device). With the F32 encoder the report's text matches the CPU's, up to greedy ties
/// that float reordering in the encoder GEMMs and the attention can flip (see
/// `backend::cuda::decoder`).
#[cfg(feature = "cuda")]
pub fn generate_report_cuda(
    model: &Model<'_>,
    cuda: &CudaModel,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Report> {
    let cancel = Arc::new(AtomicBool::new(false));
    generate_report_cuda_cancellable(model, cuda, ct, masks, options, cancel, on_event)
}

/// [`generate_report_cuda`] that also stops (with [`Error::Cancelled`]) when `cancel` is set
/// from any thread, at every stage boundary and within one decode step (the C ABI passes the
/// `mr_session`'s flag); the flag is consumed when seen.
#[cfg(feature = "cuda")]
pub fn generate_report_cuda_cancellable(
    model: &Model<'_>,
    cuda: &CudaModel,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    cancel: Arc<AtomicBool>,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Report> {
    let t_start = Instant::now();
    if options.activations == Activations::F32 {
        return Err(Error::Unsupported(
            "activations: f32 activations run on the CPU only (the CUDA pipeline decodes with its own kernels)"
                .into(),
        ));
    }
    if cuda.decoder().config() != &model.config().decoder || cuda.encoder().config() != &model.config().vision
    {
        return Err(Error::invalid("cuda", "the device model was uploaded from another model"));
    }
    let tokenizer = Tokenizer::from_package(model)?;
    let mut on = Cancel { on_event, flag: Arc::clone(&cancel) };
    let pool = ThreadPool::new(options.threads)?;
    let encoder = EncoderOn::Cuda(cuda.encoder(), Some(cuda.connector()));
    let prepared = prepare_with(model, &tokenizer, &pool, encoder, ct, masks, options, &mut on)?;
    let max_ctx = cuda.decoder().max_context();
    let context = (prepared.longest_prompt() + prepared.max_new_tokens).min(max_ctx);
    let max_batch = prepared.regions.len().clamp(1, DEVICE_MAX_BATCH);
    let mut session = DeviceSession::new(
        cuda.decoder(),
        &DeviceSessionOptions { context, max_batch, ..DeviceSessionOptions::default() },
    )?;
    session.set_cancel_flag(cancel);
    on.flag = session.cancel_flag();
    let weights = DecoderWeights::load(model, &model.config().decoder)?;
    let mut dec = CudaDecoder { session, weights };
    decode(&mut dec, model, &tokenizer, ct, prepared, options, &mut on, t_start)
}

/// Runs the whole pipeline on one study in the caller's `session` over `model`, with the
/// model's `tokenizer` (see the module doc for what this does to the session).
pub fn generate_report_in(
    session: &mut Session<'_>,
    model: &Model<'_>,
    tokenizer: &Tokenizer,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Report> {
    let t_start = Instant::now();
    if session.config() != &model.config().decoder {
        return Err(Error::invalid("session", "was made for another model's decoder"));
    }
    session.reset();
    let mut on = Cancel { on_event, flag: session.cancel_flag() };
    let prepared =
        prepare_with(model, tokenizer, &session.pool, EncoderOn::Cpu, ct, masks, options, &mut on)?;
    decode(session, model, tokenizer, ct, prepared, options, &mut on, t_start)
}

/// The stages before decoding, on `pool`: checks the options, then preprocessing (and the
/// slot masks), attributes, the encoder, the region tokens and the prompts. Events and
/// cancellation as for [`generate_report`] (no `Region` or `Token` events). Used by the
/// pipeline and by `medregion tokens`.
pub fn prepare<'c>(
    model: &'c Model<'_>,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Prepared<'c>> {
    let mut on = Cancel { on_event, flag: Arc::new(AtomicBool::new(false)) };
    prepare_with(model, tokenizer, pool, EncoderOn::Cpu, ct, masks, options, &mut on)
}

/// [`prepare`] with the encoder on the GPU of `encoder` (the other stages on `pool`). Used by
/// `medregion tokens --device cuda:N`.
#[cfg(feature = "cuda")]
#[allow(clippy::too_many_arguments)]
pub fn prepare_cuda<'c>(
    model: &'c Model<'_>,
    encoder: &DeviceEncoder,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on_event: &mut dyn FnMut(&Event<'_>) -> ControlFlow<()>,
) -> Result<Prepared<'c>> {
    let mut on = Cancel { on_event, flag: Arc::new(AtomicBool::new(false)) };
    prepare_with(model, tokenizer, pool, EncoderOn::Cuda(encoder, None), ct, masks, options, &mut on)
}

#[allow(clippy::too_many_arguments)]
fn prepare_with<'c>(
    model: &'c Model<'_>,
    tokenizer: &Tokenizer,
    pool: &ThreadPool,
    encoder_on: EncoderOn<'_>,
    ct: &Volume,
    masks: &Masks,
    options: &ReportOptions,
    on: &mut Cancel<'_>,
) -> Result<Prepared<'c>> {
    let config = model.config();
    let regions: Vec<&RegionConfig> = match &options.regions {
        None => config.regions.iter().collect(),
        Some(keys) => keys
            .iter()
            .map(|k| {
                config.regions.iter().find(|r| &r.key == k).ok_or_else(|| {
                    let all: Vec<&str> = config.regions.iter().map(|r| r.key.as_str()).collect();
                    Error::invalid("regions", format!("`{k}` is not one of {all:?}"))
                })
            })
            .collect::<Result<_>>()?,
    };
    if regions.is_empty() {
        return Err(Error::invalid("regions", "no region to report"));
    }
    let max_new_tokens = options.max_new_tokens.unwrap_or(config.generation.max_new_tokens);
    if max_new_tokens == 0 {
        return Err(Error::invalid("max_new_tokens", "must be at least 1"));
    }
    let mut timings = Timings::default();

    on.emit(Event::Stage { stage: Stage::Preprocess, index: 0, count: 1, region: None })?;
    let t = Instant::now();
    let pre = preprocess(ct, &config.preprocess)?;
    let slot = masks.slot_masks(&pre, config)?;
    timings.preprocess = t.elapsed().as_secs_f64();

    on.emit(Event::Stage { stage: Stage::Attributes, index: 0, count: 1, region: None })?;
    let t = Instant::now();
    let (labels, scheme) = masks.merged_labels()?;
    let attributes = compute(ct.geometry(), masks.geometry(), &labels, &scheme, &config.attributes)?;
    timings.attributes = t.elapsed().as_secs_f64();

    let [depth, _, _] = pre.shape;
    on.emit(Event::Stage { stage: Stage::Encoder, index: 0, count: depth, region: None })?;
    let t = Instant::now();
    let heads = RegionHeads::new(model)?;
    let encode_options = EncodeOptions { levels: heads.levels(), batch: 0 };
    let vision = match encoder_on {
        EncoderOn::Cpu => {
            let encoder = VisionEncoder::new(model)?;
            let slices = slices_from_volume(&pre.data, pre.shape, encoder.config())?;
            encoder
                .encode_observed(
                    &slices,
                    depth,
                    &encode_options,
                    pool,
                    &mut EncodeProfile::default(),
                    &mut |done, total| match on.emit(Event::Progress { stage: Stage::Encoder, done, total }) {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(_) => ControlFlow::Break(()),
                    },
                )
                .map(Encoded::Host)?
        }
        #[cfg(feature = "cuda")]
        EncoderOn::Cuda(encoder, connector) => {
            // The features stay on the device for the R² pooling (backend::cuda::region).
            let slices = slices_from_volume(&pre.data, pre.shape, encoder.config())?;
            let out = encoder.encode_on_device(&slices, depth, &encode_options)?;
            encoder.gpu().sync()?; // the stage's time is the encoder's, not the pooling's
            on.emit(Event::Progress { stage: Stage::Encoder, done: depth, total: depth })?;
            Encoded::Device(encoder, connector, out)
        }
        #[cfg(not(feature = "cuda"))]
        EncoderOn::Never(_) => return Err(Error::Internal("no such encoder".into())),
    };
    timings.encoder = t.elapsed().as_secs_f64();

    on.emit(Event::Stage { stage: Stage::Tokens, index: 0, count: regions.len(), region: None })?;
    let t = Instant::now();
    let keys: Vec<&str> = regions.iter().map(|r| r.key.as_str()).collect();
    let view = MaskView { shape: slot.shape, keys: &slot.keys, masks: &slot.masks };
    let tokens = match &vision {
        Encoded::Host(v) => heads.tokens(v, view, &keys, pool)?,
        #[cfg(feature = "cuda")]
        Encoded::Device(encoder, connector, v) => {
            let (t, d) = (config.pooling.n_slices, config.vision.hidden_size);
            let mut features =
                crate::backend::cuda::region::DeviceFeatures::new(encoder.gpu(), v, heads.arrays(), t, d)?;
            if let Some(c) = connector {
                features = features.with_connector(c)?;
            }
            heads.tokens_with(&mut features, view, &keys, pool)?
        }
        #[cfg(not(feature = "cuda"))]
        Encoded::Never(_) => return Err(Error::Internal("no such encoder output".into())),
    };
    drop(vision);
    let prompts = tokens
        .iter()
        .map(|tk| assemble(config, tokenizer, &tk.region, &attributes.text))
        .collect::<Result<Vec<_>>>()?;
    timings.tokens = t.elapsed().as_secs_f64();
    Ok(Prepared { regions, max_new_tokens, pre_shape: pre.shape, slot, attributes, tokens, prompts, timings })
}

/// Decodes every region's prompt in `session` and assembles the report.
#[allow(clippy::too_many_arguments)]
fn decode(
    session: &mut dyn RegionDecoder,
    model: &Model<'_>,
    tokenizer: &Tokenizer,
    ct: &Volume,
    prepared: Prepared<'_>,
    options: &ReportOptions,
    on: &mut Cancel<'_>,
    t_start: Instant,
) -> Result<Report> {
    let config = model.config();
    let longest = prepared.longest_prompt();
    let Prepared { regions, max_new_tokens, pre_shape, slot, attributes, tokens, prompts, mut timings } =
        prepared;
    if longest >= session.context() {
        return Err(Error::invalid(
            "session context",
            format!(
                "{} positions cannot hold a region prompt of {longest} tokens plus one generated token",
                session.context()
            ),
        ));
    }
    let dm = config.decoder.hidden_size;
    let gen_opts = GenerateOptions { max_new_tokens, ..GenerateOptions::default() };
    let mut embeddings = Vec::with_capacity(prompts.len());
    for (prompt, tk) in prompts.iter().zip(&tokens) {
        let mut e = vec![0.0f32; prompt.ids.len() * dm];
        session.embed(&prompt.ids, &mut e)?;
        splice(prompt, tk, dm, &mut e)?;
        embeddings.push(e);
    }
    let batched = options.batch_regions.unwrap_or(config.generation.batch_regions)
        && regions.len() > 1
        && regions.len() <= session.max_batch();
    let generations = if batched {
        for (i, region) in regions.iter().enumerate() {
            on.emit(Event::Stage {
                stage: Stage::Region,
                index: i,
                count: regions.len(),
                region: Some(&region.key),
            })?;
        }
        // The rows every prompt shares (bit for bit) are fed once; each region feeds the rest.
        let rows = embeddings.iter().map(|e| e.len() / dm).min().unwrap_or(0);
        let shared = (0..rows)
            .take_while(|&r| {
                embeddings.iter().all(|e| e[r * dm..(r + 1) * dm] == embeddings[0][r * dm..(r + 1) * dm])
            })
            .count();
        let suffixes: Vec<Input<'_>> =
            embeddings.iter().map(|e| Input::Embeddings(&e[shared * dm..])).collect();
        let prefix = Input::Embeddings(&embeddings[0][..shared * dm]);
        // A `Break` sets the session's cancel flag, so the batch stops within one step; no
        // event is forwarded after it (the stopped sequences still flush their text).
        let flag = Arc::clone(&on.flag);
        let on_event = &mut *on.on_event;
        let mut cancelled = false;
        let mut on_batch = |i: usize, _id: u32, text: &str| -> ControlFlow<()> {
            if cancelled {
                return ControlFlow::Break(());
            }
            if text.is_empty() {
                return ControlFlow::Continue(());
            }
            let r = on_event(&Event::Token { region: &regions[i].key, index: i, text });
            if r.is_break() {
                cancelled = true;
                flag.store(true, Ordering::Release);
            }
            r
        };
        let t = Instant::now();
        let g =
            session.generate_batch_inputs(prefix, &suffixes, &gen_opts, Some(tokenizer), &mut on_batch)?;
        let wall = t.elapsed().as_secs_f64();
        if cancelled {
            // Our own request, not a caller's `mr_session_cancel` (which the batch consumed).
            flag.store(false, Ordering::Release);
        }
        if cancelled || g.iter().any(|g| matches!(g.stop, StopReason::Cancelled | StopReason::Callback)) {
            return Err(Error::Cancelled);
        }
        // Every sequence's prefill time includes the shared prefix: split the wall time instead.
        timings.decode = g.iter().map(|g| g.decode_secs).fold(0.0, f64::max);
        timings.prefill = (wall - timings.decode).max(0.0);
        g
    } else {
        let mut out = Vec::with_capacity(regions.len());
        for (i, (region, e)) in regions.iter().zip(&embeddings).enumerate() {
            on.emit(Event::Stage {
                stage: Stage::Region,
                index: i,
                count: regions.len(),
                region: Some(&region.key),
            })?;
            session.reset();
            let on_event = &mut *on.on_event;
            let mut on_token = |_id: u32, text: &str| -> ControlFlow<()> {
                if text.is_empty() {
                    return ControlFlow::Continue(());
                }
                on_event(&Event::Token { region: &region.key, index: i, text })
            };
            let g = session.generate(Input::Embeddings(e), &gen_opts, Some(tokenizer), &mut on_token)?;
            if matches!(g.stop, StopReason::Cancelled | StopReason::Callback) {
                return Err(Error::Cancelled);
            }
            timings.prefill += g.prefill_secs;
            timings.decode += g.decode_secs;
            out.push(g);
        }
        out
    };
    let mut outputs = Vec::with_capacity(regions.len());
    for ((region, tk), g) in regions.iter().zip(&tokens).zip(generations) {
        let stop = match g.stop {
            StopReason::StopToken(_) => "stop_token",
            StopReason::StopString(_) => "stop_string",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::Callback | StopReason::Cancelled => return Err(Error::Cancelled),
        };
        outputs.push(RegionReport {
            key: region.key.clone(),
            header: region.header.clone(),
            text: g.text.trim().to_string(),
            tokens: g.tokens.len(),
            prompt_tokens: g.prompt_tokens,
            stop: stop.to_string(),
            slices: tk.selection.slices.clone(),
            slice_rule: tk.selection.rule.to_string(),
        });
    }
    let gcfg = &config.generation;
    let text = outputs
        .iter()
        .filter(|r| !(gcfg.drop_no_findings && r.text == gcfg.no_findings_text))
        .map(|r| if gcfg.merge_headers { format!("{}: {}", r.header, r.text) } else { r.text.clone() })
        .collect::<Vec<_>>()
        .join("\n\n");
    timings.total = t_start.elapsed().as_secs_f64();
    let missing_structures =
        slot.keys.iter().zip(&slot.present).filter(|(_, &p)| !p).map(|(k, _)| k.clone()).collect();
    Ok(Report {
        schema_version: REPORT_SCHEMA_VERSION,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        model_name: config.name.clone(),
        model_checksum: model.checksum().to_string(),
        study: Study {
            ct_source: ct.source().to_string(),
            ct_dims: ct.dims(),
            ct_spacing_mm: ct.spacing(),
            ct_orientation: ct.orientation_code(),
            preprocessed_shape: pre_shape,
            missing_structures,
        },
        attributes,
        regions: outputs,
        text,
        timings,
    })
}
