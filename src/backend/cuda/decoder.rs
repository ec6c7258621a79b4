//! The LLaMA-3 decoder on the GPU (issue #9), composed from the launchers of [`super::ops`]:
//! the device twin of the CPU decoder (`llm::forward`, [`crate::llm::Session`]).
//!
//! ```text
//! DeviceDecoder::upload(gpu, &model)   every decoder weight once per device (immutable, shareable)
//! DeviceSession::new(&decoder, opts)   all mutable device state and a stream, allocated once
//!   .prefill(&ids) / .prefill_input(Input)  -> logits of the last position   (chunks of `chunk` rows)
//!   .decode_step(token)    -> logits of the token's position             (one row)
//!   .prefill_all_logits(input, out) -> logits of every position fed       (like the CPU's)
//!   .logits()              -> logits of the last position fed, if any    (like Session::logits)
//!   .generate_greedy(prompt, max_new, stop) -> generated ids             (device argmax)
//!   .generate(input, &GenerateOptions, tokenizer, on_token)              (the CPU's Session::generate)
//!   .generate_batch_inputs(prefix, suffixes, ...)                        (the CPU's batched twin)
//! ```
//!
//! # Design
//! * [`DeviceDecoder`] holds the weights: every matrix as a [`DeviceWeight`] in its stored type
//!   (f32 / f16 / bf16 / Q8_0 / Q4_0 / Q4_1), the norm vectors as f32, and the CPU's RoPE table
//!   ([`RopeTable`], computed on the host exactly as `Rope::angles`) for the positions sessions
//!   may use. The token embedding is one [`DeviceWeight`] that the `embed_*` kernels read
//!   through an [`EmbedTable`] view of its buffers (the layouts are the same), so a tied head
//!   (`tie_word_embeddings`) shares the one copy instead of uploading the `[V, D]` table twice
//!   (a `DeviceEmbedding` would be that second copy). Uploading ends with a synchronisation, so
//!   sessions on other streams may read the weights.
//! * [`DeviceSession`] owns the mutable device state and a stream of its own
//!   ([`Gpu::with_new_stream`]; sessions on several threads run concurrently): the KV cache
//!   `[max_batch, layers, context, kv_dim]` (keys and values, f32, the CPU's layout per
//!   sequence), with `max_batch > 1` a shared-prefix cache `[1, layers, context, kv_dim]`, the
//!   activation scratch for `max(chunk, max_batch)` rows, [`QuantizedActs`], caller-embedding
//!   rows, the decode-attention workspace, the logits `[max_batch, V]`, and the token ids,
//!   per-row positions, per-sequence KV positions and the prefix length in device memory.
//! * Launch shapes depend only on host sizes (rows, layer), never on a position (the kernels
//!   read positions from device memory), so each decode-step shape (rows, cache) is captured
//!   once as a CUDA graph on first use and replayed; the ids and positions are copied to the
//!   device before each launch (small pageable copies, outside the graph). A decode step
//!   allocates nothing on the device once its shape has run; [`DeviceSession::prefill`] and
//!   [`DeviceSession::decode_step`] download the logits (a sync); generation downloads only
//!   the chosen ids: the device applies the repetition penalty (each row's history uploaded as
//!   a byte mask) and the bans, then picks (greedy: the argmax; a temperature: the device
//!   sampler, given each sequence's uniform number from its host RNG, so it draws what the
//!   CPU's sampler would). Only `keep_logits` downloads the logits rows and runs the CPU's
//!   sampler.
//! * Generation reuses the CPU's per-sequence state (`llm::generate::SeqState`: stop ids and
//!   strings, streaming whole UTF-8 characters, seeds `seed + i` per batched sequence), so the
//!   stopping and streaming rules are the CPU's own code. A batch resets the session and leaves
//!   it empty; a sequence that stops keeps its row in the steps, with its id and position
//!   frozen and its output ignored (the decode kernels take sequences `0..n` and the graphs
//!   keep one shape; an extra row costs almost nothing in a weight-bound step).
//! * Per layer, exactly the CPU's order: `h = rms_norm(x)`; `q, k, v = h·Wᵀ`; RoPE on `q`, `k`;
//!   store `k`, `v` in the cache; attention over the prefix and the cache (GQA); `x += a·Woᵀ`
//!   fused with the next `rms_norm` ([`super::ops::llm::rms_norm_add`]); `gate, up = h·Wᵀ`;
//!   `gate = silu(gate)·up`; `x += gate·Wdᵀ` fused with the next layer's (or the final) norm;
//!   logits = `h·Whᵀ`. Quantized projections that read the same input (q/k/v, gate/up)
//!   quantize it once. Caller embeddings enter through `embed`'s negative ids.
//! * Prefill runs in chunks of `chunk` rows (default 1024) and the causal prefill attention
//!   kernel; a one-row chunk of sequence 0 (and every decode step) uses the split-K decode
//!   attention kernel. A chunk's weight products go either through the batched GEMV launchers
//!   ([`super::ops::matmul::matmul`] splits the rows into launches of 8, reading each weight
//!   once per 8 rows) or, for chunks of at least `gemm_rows` rows (default 64,
//!   [`DEFAULT_GEMM_ROWS`] says why), through cuBLAS (the "GEMM prefill", DESIGN.md §6): a
//!   quantized weight is dequantized into one scratch matrix (`[rows, k]` of the largest layer
//!   weight, f16 by default, [`DeviceSessionOptions::gemm_type`]) right before its product,
//!   the chunk's input is rounded to the same type once per product group, and cuBLAS
//!   multiplies with f32 accumulation into the same f32 outputs the GEMV writes; F16 / BF16
//!   weights need no copy, F32 weights multiply in f32. Decode steps never use it (their one
//!   row per sequence is what the GEMV kernels are for). Without a usable cuBLAS the session
//!   logs a warning and prefills on the GEMV kernels ([`DeviceSession::gemm_status`] says
//!   why). Choice: the weights are dequantized per chunk rather than kept as a second 16-bit
//!   copy (which would be 3.6× a Q4_0 model's memory); with long chunks that costs one extra
//!   pass over the weights per chunk, ~5 ms for an 8B Q4_0 model at H200 bandwidth.
//! * A chunk of `m` rows that is neither 1 nor `chunk` needs row buffers of exactly `m` rows
//!   (the attention launchers take exact-size buffers): they are allocated on first use and
//!   kept until a different `m` comes (prefill may allocate).
//!
//! # Numerics (what is bit-identical to the CPU, what is not)
//! * Bit-identical per operation: the embedding lookup, every weight matmul on the GEMV
//!   kernels (each output is the CPU's 8-lane FMA chain and `hsum8`; int8 activation
//!   quantization for the block formats),
//!   RoPE (the CPU's own cos/sin table), SwiGLU (the CPU's `exp` reproduced), the residual adds;
//!   RMSNorm too but for ~1 row in 10⁶ whose f64 inverse norm lies within ~1e-13 of an f32
//!   rounding boundary (an ulp or two there). Each row's result does not depend on the other
//!   rows of its launch, so batched and single generation agree bit for bit on the device.
//! * Not bit-identical: attention over the KV cache (`kv_attention_{prefill,decode}_*`: a
//!   tiled / split-K online softmax with the device `exp`, vs the CPU's key-at-a-time online
//!   softmax with libm `exp`): ~1e-6 relative per attention output, which the following layers
//!   propagate. So logits agree to a tolerance (tests/cuda_decoder.rs: `max |Δ| ≤ 1e-4 ·
//!   max |logit|`), not bit for bit, and a greedy token can differ from the CPU's only where the
//!   top two logits are that close.
//! * The GEMM prefill is not bit-identical: its products read inputs rounded to 16 bits
//!   (f16 by default; an F32 model's products stay f32, in cuBLAS's summation order) instead
//!   of the CPU's int8 block quantization (block types) or exact f32 (dense types). For the
//!   block types it is the closer of the two to the exact dequantized weights (f16 rounds each
//!   input by ≤ 2⁻¹¹, int8 by up to 2⁻⁸ of the block's max). tests/cuda_decoder.rs bounds it
//!   against the CPU on the exact weights.
//! * Greedy selection is `sampling_argmax_f32` (largest logit, lowest id on a tie: the CPU's
//!   `argmax`), after banning the input-only ids (image / mask / pos tokens) exactly like the
//!   CPU's `Session::generate`.
//!
//! # Not done yet
//! * Keeping the logits of a batched generation (`generate_batch_inputs` refuses
//!   `keep_logits`; single generation keeps them).
//! * Everything here is compile-checked only: no GPU has run it yet (tests/cuda_decoder.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, CudaView, CudaViewMut};

use super::blas::{f32_to_half, Blas, Half};
use super::ops::attention::{
    kv_decode_attention, kv_decode_workspace_len, kv_prefill_attention, kv_store, KvCache, KvCacheMut,
    KvDims, KvPositions, KvRows,
};
use super::ops::llm::{
    ban, embed, repetition_penalty, rms_norm, rms_norm_add, rope, sample, swiglu_in_place, EmbedTable,
    LogitsLayout, RopeLayout, RopeTable, SAMPLE_VOCAB_MAX,
};
use super::ops::matmul::{matmul, matmul_quant, quantize_act, DenseBuffer, DeviceWeight, QuantizedActs};
use super::{driver_error, Gpu};
use crate::io::package::Model;
use crate::llm::generate::{check_batch, SeqState};
use crate::llm::rope::Rope;
use crate::llm::session::{check_finite, check_input};
use crate::llm::weights::DecoderWeights;
use crate::llm::{GenerateOptions, Generation, Input, OnBatchToken, OnToken, SamplingParams, StopReason};
use crate::model::config::DecoderConfig;
use crate::quant::{QuantType, QK};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The most sequences a [`DeviceSession`] sizes its state for (the decode kernels' 8-row tiles;
/// the six regions of a report fit).
pub const MAX_BATCH: usize = 8;

/// The most rows of one prefill chunk.
pub const MAX_CHUNK: usize = 1024;

/// Head widths the KV attention kernels support.
const HEAD_DIMS: [usize; 2] = [64, 128];

/// One decoder layer on the device.
#[derive(Debug)]
struct DeviceLayer {
    attn_norm: CudaSlice<f32>,
    q: DeviceWeight,
    k: DeviceWeight,
    v: DeviceWeight,
    o: DeviceWeight,
    mlp_norm: CudaSlice<f32>,
    gate: DeviceWeight,
    up: DeviceWeight,
    down: DeviceWeight,
}

/// Every decoder weight of a model on one device, uploaded once; shared (read-only) by any
/// number of [`DeviceSession`]s.
#[derive(Debug)]
pub struct DeviceDecoder {
    gpu: Arc<Gpu>,
    cfg: DecoderConfig,
    /// `embed_tokens` `[V, D]` (also the head when tied).
    embed: DeviceWeight,
    layers: Vec<DeviceLayer>,
    /// Final `norm` `[D]`.
    norm: CudaSlice<f32>,
    /// `lm_head` `[V, D]`; `None` when tied to `embed`.
    head: Option<DeviceWeight>,
    rope: RopeTable,
}

impl DeviceDecoder {
    /// Uploads `model`'s decoder with a RoPE table for the CPU session's default context,
    /// `min(max_position_embeddings, 4096)` positions.
    pub fn upload(gpu: &Arc<Gpu>, model: &Model<'_>) -> Result<DeviceDecoder> {
        let positions = model.config().decoder.max_position_embeddings.min(4096);
        DeviceDecoder::upload_with_positions(gpu, model, positions)
    }

    /// Uploads `model`'s decoder with a RoPE table for positions `0..positions` (the largest
    /// context a session over it may use; at most `max_position_embeddings`).
    pub fn upload_with_positions(
        gpu: &Arc<Gpu>,
        model: &Model<'_>,
        positions: usize,
    ) -> Result<DeviceDecoder> {
        let cfg = model.config().decoder.clone();
        if !HEAD_DIMS.contains(&cfg.head_dim) {
            return Err(Error::Unsupported(format!(
                "CUDA decoder with head_dim {} (the KV attention kernels support {HEAD_DIMS:?})",
                cfg.head_dim
            )));
        }
        if positions == 0 || positions > cfg.max_position_embeddings {
            return Err(Error::invalid(
                "positions",
                format!(
                    "{positions} is outside 1..={} (max_position_embeddings)",
                    cfg.max_position_embeddings
                ),
            ));
        }
        // The CPU decoder's lookup and shape checks, then one upload per weight.
        let cpu = DecoderWeights::load(model, &cfg)?;
        let layers = cpu
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    attn_norm: gpu.upload(&l.attn_norm)?,
                    q: DeviceWeight::upload(gpu, &l.q)?,
                    k: DeviceWeight::upload(gpu, &l.k)?,
                    v: DeviceWeight::upload(gpu, &l.v)?,
                    o: DeviceWeight::upload(gpu, &l.o)?,
                    mlp_norm: gpu.upload(&l.mlp_norm)?,
                    gate: DeviceWeight::upload(gpu, &l.gate)?,
                    up: DeviceWeight::upload(gpu, &l.up)?,
                    down: DeviceWeight::upload(gpu, &l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = DeviceWeight::upload(gpu, &cpu.embed)?;
        // Checks early that the embedding kernels can read this storage type.
        embed_table(&embed)?;
        // Tied: the CPU's head is the embedding view; here it is the same device buffer.
        let head = if cfg.tie_word_embeddings { None } else { Some(DeviceWeight::upload(gpu, &cpu.head)?) };
        let norm = gpu.upload(&cpu.norm)?;
        let rope = RopeTable::new(gpu, &Rope::new(&cfg), positions)?;
        gpu.sync()?;
        Ok(DeviceDecoder { gpu: Arc::clone(gpu), cfg, embed, layers, norm, head, rope })
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Keeps a dequantized `half` copy of every quantized layer weight, so the GEMM prefill
    /// multiplies it directly instead of dequantizing the weight for each chunk (one pass over
    /// the weights saved per chunk) — at the cost of the copies' memory (2 bytes per weight:
    /// ~14 GB more for an 8B Q4_0 model). Sessions then use each copy's type for its weight
    /// (whatever their `gemm_type`). Returns the bytes the copies take. Call before creating
    /// sessions (it needs the decoder to itself).
    pub fn keep_prefill_copies(&mut self, half: Half) -> Result<usize> {
        let gpu = Arc::clone(&self.gpu);
        let mut bytes = 0;
        for l in &mut self.layers {
            for w in [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
                bytes += w.keep_half_copy(&gpu, half)?;
            }
        }
        gpu.sync()?;
        Ok(bytes)
    }

    /// The decoder config.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Positions the RoPE table covers: the largest session context.
    pub fn max_context(&self) -> usize {
        self.rope.positions()
    }

    /// Device bytes of the weight matrices (the table and norms not counted).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].iter().map(|w| w.bytes()).sum::<usize>()
            })
            .sum();
        layers + self.embed.bytes() + self.head.as_ref().map_or(0, DeviceWeight::bytes)
    }

    /// The output projection (the embedding when tied).
    fn head(&self) -> &DeviceWeight {
        self.head.as_ref().unwrap_or(&self.embed)
    }
}

/// The `embed_*` kernels' view of an embedding stored as a [`DeviceWeight`] (same layouts:
/// row-major dense, 16-bit floats as bit patterns, block-32 quantized structure-of-arrays).
fn embed_table(w: &DeviceWeight) -> Result<EmbedTable<'_>> {
    if let Some(q) = w.quant() {
        if w.k() % QK != 0 {
            return Err(Error::Internal(format!("quantized embedding `{}` with k = {}", w.name(), w.k())));
        }
        let (values, scales) = (q.values.as_view(), q.scales.as_view());
        return Ok(match q.qtype {
            QuantType::Q8_0 => EmbedTable::Q8_0 { values, scales },
            QuantType::Q4_0 => EmbedTable::Q4_0 { values, scales },
            QuantType::Q4_1 => {
                let mins = q
                    .mins
                    .ok_or_else(|| Error::Internal(format!("Q4_1 embedding `{}` without mins", w.name())))?;
                EmbedTable::Q4_1 { values, scales, mins: mins.as_view() }
            }
        });
    }
    match w.dense() {
        Some(DenseBuffer::F32(b)) => Ok(EmbedTable::F32(b.as_view())),
        Some(DenseBuffer::F16(b)) => Ok(EmbedTable::F16(b.as_view())),
        Some(DenseBuffer::Bf16(b)) => Ok(EmbedTable::Bf16(b.as_view())),
        None => Err(Error::Internal(format!("device weight `{}` has no data", w.name()))),
    }
}

/// How a [`DeviceSession`] is sized; everything is allocated by [`DeviceSession::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSessionOptions {
    /// Positions the KV cache holds per sequence (prompt + generated); `0` = the decoder's
    /// [`DeviceDecoder::max_context`]. More than that is an error.
    pub context: usize,
    /// Sequences the KV cache and decode buffers are sized for (1..=[`MAX_BATCH`]; default 1;
    /// the single-sequence API uses sequence 0). Above 1, the shared-prefix cache of
    /// [`DeviceSession::generate_batch_inputs`] is allocated too.
    pub max_batch: usize,
    /// Rows per prefill chunk (1..=[`MAX_CHUNK`], default 1024: a full-size region prompt of
    /// ~1,290 rows in two chunks, so the GEMM prefill dequantizes the weights twice per region;
    /// the activation scratch grows with it, ~270 MB at 1024 rows for an 8B model). A session
    /// with a shorter context uses chunks of its context.
    pub chunk: usize,
    /// Capture each decode-step shape once as a CUDA graph and replay it (default on; a capture
    /// that fails turns graphs off for the session, see [`DeviceSession::graph_status`]).
    pub graphs: bool,
    /// Prefill chunks of at least this many rows run their weight products on cuBLAS (the
    /// module doc's "GEMM prefill"); shorter chunks and every decode step use the GEMV kernels.
    /// `0` = never (every product bit-identical to the CPU's). Default [`DEFAULT_GEMM_ROWS`].
    pub gemm_rows: usize,
    /// The 16-bit type quantized weights are dequantized to, and their inputs rounded to, for
    /// the GEMM prefill (default f16: 3 more mantissa bits than bf16, and the normed
    /// activations these products read stay far inside its range). F16 / BF16 weights are
    /// multiplied in their own type, F32 weights in f32.
    pub gemm_type: Half,
}

/// Default [`DeviceSessionOptions::gemm_rows`]: where the GEMM prefill starts to pay for a
/// Q4_0 model. The GEMV kernels read the weights once per 8 rows (`m / 8 × 0.56` bytes per
/// weight); the GEMM path reads them once, writes and reads an f16 copy (`0.56 + 2 + 2`
/// bytes), so the two read about the same at 64 rows, and beyond it the GEMM's cost grows only
/// with its (tensor-core) arithmetic.
pub const DEFAULT_GEMM_ROWS: usize = 64;

impl Default for DeviceSessionOptions {
    fn default() -> Self {
        DeviceSessionOptions {
            context: 0,
            max_batch: 1,
            chunk: 1024,
            graphs: true,
            gemm_rows: DEFAULT_GEMM_ROWS,
            gemm_type: Half::F16,
        }
    }
}

/// The GEMM prefill's state: a cuBLAS handle on the session's stream and 16-bit scratch.
struct Gemm {
    blas: Blas,
    /// [`DeviceSessionOptions::gemm_type`].
    half: Half,
    /// [`DeviceSessionOptions::gemm_rows`] (≥ 1).
    min_rows: usize,
    /// One dequantized layer weight `[rows, k]` (sized for the largest quantized one without a
    /// kept copy; one element when there is none).
    w: CudaSlice<u16>,
    /// A chunk's input rounded to 16 bits `[chunk, max k]`.
    x: CudaSlice<u16>,
}

impl Gemm {
    /// The GEMM state of a session over `dec` with chunks of up to `chunk` rows, `blas` on its
    /// stream.
    fn new(
        blas: Blas,
        gpu: &Gpu,
        dec: &DeviceDecoder,
        half: Half,
        min_rows: usize,
        chunk: usize,
    ) -> Result<Gemm> {
        let cfg = &dec.cfg;
        let quantized = dec
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .filter(|w| w.quant().is_some() && w.half_copy().is_none())
            .map(|w| w.rows() * w.k())
            .max()
            .unwrap_or(1);
        let k_max = cfg.hidden_size.max(cfg.intermediate_size).max(cfg.q_dim());
        Ok(Gemm { blas, half, min_rows, w: gpu.alloc(quantized)?, x: gpu.alloc(chunk * k_max)? })
    }
}

/// Exact-size buffers of one row count `m` (the KV launchers take whole buffers of exactly
/// `m` rows): `q`, `att` `[m, nh·hd]`, `k`, `v` `[m, nkv·hd]`.
struct RowBufs {
    m: usize,
    q: CudaSlice<f32>,
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    att: CudaSlice<f32>,
}

impl RowBufs {
    fn new(gpu: &Gpu, cfg: &DecoderConfig, m: usize) -> Result<RowBufs> {
        Ok(RowBufs {
            m,
            q: gpu.alloc(m * cfg.q_dim())?,
            k: gpu.alloc(m * cfg.kv_dim())?,
            v: gpu.alloc(m * cfg.kv_dim())?,
            att: gpu.alloc(m * cfg.q_dim())?,
        })
    }
}

/// The row buffers of every row count a session uses.
struct Bufs {
    /// One row (single decode steps, one-row chunks).
    one: RowBufs,
    /// A full prefill chunk (`None` when `chunk == 1`).
    full: Option<RowBufs>,
    /// The last partial prefill chunk's (reallocated when another size comes).
    tail: Option<RowBufs>,
    /// A batch decode step's (one row per sequence; allocated by the first batched step).
    batch: Option<RowBufs>,
}

impl Bufs {
    /// Buffers of a prefill chunk of `m` rows (a full chunk, one row, or a tail).
    fn chunk(&mut self, gpu: &Gpu, cfg: &DecoderConfig, m: usize, chunk: usize) -> Result<&mut RowBufs> {
        if m == 1 {
            return Ok(&mut self.one);
        }
        if m == chunk {
            return self.full.as_mut().ok_or_else(|| Error::Internal("no chunk buffers".into()));
        }
        if self.tail.as_ref().is_none_or(|t| t.m != m) {
            self.tail = None;
            self.tail = Some(RowBufs::new(gpu, cfg, m)?);
        }
        self.tail.as_mut().ok_or_else(|| Error::Internal("no tail buffers".into()))
    }

    /// Whether [`Bufs::decode`] of `n` rows would allocate.
    fn decode_allocates(&self, n: usize) -> bool {
        n > 1 && self.batch.as_ref().is_none_or(|t| t.m != n)
    }

    /// Buffers of a decode step of `n` sequences.
    fn decode(&mut self, gpu: &Gpu, cfg: &DecoderConfig, n: usize) -> Result<&mut RowBufs> {
        if n == 1 {
            return Ok(&mut self.one);
        }
        if self.batch.as_ref().is_none_or(|t| t.m != n) {
            self.batch = None;
            self.batch = Some(RowBufs::new(gpu, cfg, n)?);
        }
        self.batch.as_mut().ok_or_else(|| Error::Internal("no batch buffers".into()))
    }
}

/// The shared read-only prefix of a batch: keys and values `[1, layers, context, kv_dim]`.
struct PrefixCache {
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    dims: KvDims,
}

/// The device state every row count shares.
struct State {
    /// Residual stream `[rows, D]`.
    x: CudaSlice<f32>,
    /// Normed activations `[rows, D]`.
    h: CudaSlice<f32>,
    /// Projection outputs `[rows, D]`.
    out: CudaSlice<f32>,
    /// `[rows, F]` each.
    gate: CudaSlice<f32>,
    up: CudaSlice<f32>,
    acts: QuantizedActs,
    /// Keys and values `[max_batch, layers, context, kv_dim]`.
    cache_k: CudaSlice<f32>,
    cache_v: CudaSlice<f32>,
    dims: KvDims,
    /// The batch's shared prefix (`max_batch > 1`).
    prefix: Option<PrefixCache>,
    /// Decode attention partials.
    workspace: CudaSlice<f32>,
    /// `[max_batch, V]`.
    logits: CudaSlice<f32>,
    /// `[max_batch, V]`: a copy of `logits` with the input-only ids banned, for the device
    /// argmax (so `logits` stays what the model gave, [`DeviceSession::logits`]).
    picked: CudaSlice<f32>,
    /// Token ids of the rows `[rows]`; a negative id `−j − 1` reads row `j` of `extra`.
    ids: CudaSlice<i32>,
    /// Caller-made input embeddings of a chunk `[rows, D]`.
    extra: CudaSlice<f32>,
    /// Absolute position of each row `[rows]` (RoPE).
    row_pos: CudaSlice<i32>,
    /// Absolute position of each sequence's first new token `[max_batch]` (KV kernels).
    kv_pos: CudaSlice<i32>,
    /// The shared prefix length `[1]` (0 outside a batch).
    prefix_len: CudaSlice<i32>,
    /// Selected tokens `[max_batch]`.
    next: CudaSlice<i32>,
    /// The uniform number of each sequence's draw `[max_batch]` (device sampling).
    uniform: CudaSlice<f64>,
    /// Each row's repetition history as a byte mask `[max_batch, V]` (device penalty).
    seen: CudaSlice<u8>,
    /// The input-only ids banned from generation `[3]`.
    banned: CudaSlice<i32>,
    /// The GEMM prefill (`None`: every product on the GEMV kernels).
    gemm: Option<Gemm>,
}

/// One decoder conversation on the device: the KV cache and every buffer a step uses, over a
/// [`DeviceDecoder`]. Use from one thread at a time (every state change takes `&mut self`).
pub struct DeviceSession<'d> {
    dec: &'d DeviceDecoder,
    /// The decoder's device with a stream of the session's own: every launch, copy and
    /// allocation of the session goes there (the weights were uploaded and synchronised
    /// before, so any stream may read them).
    gpu: Arc<Gpu>,
    st: State,
    bufs: Bufs,
    /// Host staging of the ids and positions of a chunk (`max(chunk, max_batch)` each).
    host_ids: Vec<i32>,
    host_pos: Vec<i32>,
    /// Host staging of the repetition masks (`[rows, V]`, grown on first use).
    host_seen: Vec<u8>,
    chunk: usize,
    max_batch: usize,
    context: usize,
    /// Positions filled (sequence 0).
    len: usize,
    /// The value in `st.prefix_len`.
    prefix_len: usize,
    /// Whether `st.logits[..V]` holds the logits of sequence 0's last position.
    has_logits: bool,
    cancel: Arc<AtomicBool>,
    /// Captured decode steps by (rows, cache); empty when graphs are off.
    graphs: Vec<(usize, Cache, CudaGraph)>,
    use_graphs: bool,
    /// Decode steps run by replaying a graph.
    graph_replays: u64,
    /// Why graphs were turned off, when a capture failed.
    graph_error: Option<String>,
    /// Why the GEMM prefill is off although the options asked for it (cuBLAS unusable).
    gemm_error: Option<String>,
}

impl Drop for DeviceSession<'_> {
    /// Waits for the session's stream first: its kernels may still read the decoder's weights
    /// (freed on another stream when the decoder goes) and its graphs may still run.
    fn drop(&mut self) {
        let _ = self.gpu.sync();
    }
}

impl std::fmt::Debug for DeviceSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("context", &self.context)
            .field("len", &self.len)
            .field("chunk", &self.chunk)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

/// Which rows' logits a forward computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    None,
    /// The last row's, into `logits[..V]`.
    Last,
    /// Every row's, into `logits[..m·V]` (`m ≤ max_batch`).
    All,
}

/// Where a forward's keys and values go and what its rows attend to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// The sequences' own caches, no prefix (the single-sequence API).
    Own,
    /// The shared prefix cache, as the own cache of its one sequence (a batch's prefix).
    Prefix,
    /// The own caches, after the shared prefix (a batch's suffixes and decode steps).
    OwnAfterPrefix,
}

/// One forward pass: `tokens` consecutive rows of each sequence `seq0..seq0 + n_seq`
/// (sequence-major; ids in `st.ids`, RoPE positions in `st.row_pos`, each sequence's first
/// position in `st.kv_pos`), with caller embeddings in `st.extra` for negative ids.
#[derive(Clone, Copy)]
struct Pass {
    seq0: usize,
    n_seq: usize,
    tokens: usize,
    extra: usize,
    cache: Cache,
    want: Want,
}

/// Whether `opts` lets the device pick the tokens (no logits kept; greedy, or a temperature
/// over a vocabulary the device sampler's sort key holds): then only the ids come back to the
/// host. The repetition penalty and the bans run on the device first; a draw's uniform number
/// comes from its sequence's host RNG, so the picks are the CPU sampler's.
fn device_picks(opts: &GenerateOptions, vocab: usize) -> bool {
    !opts.keep_logits && (opts.sampling.is_greedy() || vocab <= SAMPLE_VOCAB_MAX)
}

/// A device argmax result as a token id: −1 (or anything outside the vocabulary) means the
/// logits held NaN or +inf, or no finite value, which the CPU sampler also refuses.
fn checked_id(id: i32, vocab: usize) -> Result<u32> {
    if id < 0 || id as usize >= vocab {
        return Err(Error::Internal(format!(
            "the device argmax returned {id}: the logits hold NaN or +inf, or no finite value"
        )));
    }
    Ok(id as u32)
}

impl<'d> DeviceSession<'d> {
    /// A session over `dec` with all its device memory allocated now.
    pub fn new(dec: &'d DeviceDecoder, options: &DeviceSessionOptions) -> Result<DeviceSession<'d>> {
        let cfg = &dec.cfg;
        let session_gpu = dec.gpu.with_new_stream()?;
        let gpu = &*session_gpu;
        let max_ctx = dec.max_context();
        let context = if options.context == 0 { max_ctx } else { options.context };
        if context > max_ctx {
            return Err(Error::invalid(
                "context",
                format!(
                    "{context} exceeds the {max_ctx} positions of the decoder's RoPE table \
                     (DeviceDecoder::upload_with_positions)"
                ),
            ));
        }
        if !(1..=MAX_BATCH).contains(&options.max_batch) {
            return Err(Error::invalid(
                "max_batch",
                format!("{} is outside 1..={MAX_BATCH}", options.max_batch),
            ));
        }
        if !(1..=MAX_CHUNK).contains(&options.chunk) {
            return Err(Error::invalid("chunk", format!("{} is outside 1..={MAX_CHUNK}", options.chunk)));
        }
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        // No chunk is longer than the context: size for what can come.
        let chunk = options.chunk.min(context);
        let rows = chunk.max(options.max_batch);
        let dims = KvDims {
            n_seqs: options.max_batch,
            n_layers: cfg.n_layers,
            capacity: context,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
        };
        let cache_len = dims.elements()?;
        let prefix = if options.max_batch > 1 {
            let pdims = KvDims { n_seqs: 1, ..dims };
            let n = pdims.elements()?;
            Some(PrefixCache { k: gpu.alloc(n)?, v: gpu.alloc(n)?, dims: pdims })
        } else {
            None
        };
        let ws_len =
            kv_decode_workspace_len(&dims, prefix.as_ref().map(|p| &p.dims), options.max_batch, cfg.n_heads)?;
        // Any n·k up to the capacity fits later; k rounded up to whole blocks of 32.
        let k_max = d.max(f).max(cfg.q_dim()).next_multiple_of(QK);
        let banned = cfg.input_only_ids().map(|id| id as i32);
        // The GEMM prefill when some chunk can reach `gemm_rows`; without a usable cuBLAS the
        // session still works, on the GEMV kernels, and says why (`gemm_status`).
        let (gemm, gemm_error) = if options.gemm_rows > 0 && chunk >= options.gemm_rows {
            match Blas::new(&session_gpu) {
                Ok(blas) => {
                    (Some(Gemm::new(blas, gpu, dec, options.gemm_type, options.gemm_rows, chunk)?), None)
                }
                Err(e) => {
                    crate::log::emit(
                        crate::log::Level::Warn,
                        &format!("prefilling on the GEMV kernels, without cuBLAS: {e}"),
                    );
                    (None, Some(e.to_string()))
                }
            }
        } else {
            (None, None)
        };
        let st = State {
            x: gpu.alloc(rows * d)?,
            h: gpu.alloc(rows * d)?,
            out: gpu.alloc(rows * d)?,
            gate: gpu.alloc(rows * f)?,
            up: gpu.alloc(rows * f)?,
            acts: QuantizedActs::new(gpu, rows, k_max)?,
            cache_k: gpu.alloc(cache_len)?,
            cache_v: gpu.alloc(cache_len)?,
            dims,
            prefix,
            workspace: gpu.alloc(ws_len.max(1))?,
            logits: gpu.alloc(options.max_batch * v)?,
            picked: gpu.alloc(options.max_batch * v)?,
            ids: gpu.alloc(rows)?,
            extra: gpu.alloc(rows * d)?,
            row_pos: gpu.alloc(rows)?,
            kv_pos: gpu.alloc(options.max_batch)?,
            prefix_len: gpu.alloc(1)?,
            next: gpu.alloc(options.max_batch)?,
            uniform: gpu.alloc(options.max_batch)?,
            seen: gpu.alloc(options.max_batch * v)?,
            banned: gpu.upload(&banned)?,
            gemm,
        };
        let bufs = Bufs {
            one: RowBufs::new(gpu, cfg, 1)?,
            full: if chunk > 1 { Some(RowBufs::new(gpu, cfg, chunk)?) } else { None },
            tail: None,
            batch: None,
        };
        gpu.sync()?;
        Ok(DeviceSession {
            dec,
            gpu: session_gpu,
            st,
            bufs,
            host_ids: vec![0; rows],
            host_pos: vec![0; rows],
            host_seen: Vec::new(),
            chunk,
            max_batch: options.max_batch,
            context,
            len: 0,
            prefix_len: 0,
            has_logits: false,
            cancel: Arc::new(AtomicBool::new(false)),
            graphs: Vec::new(),
            use_graphs: options.graphs,
            graph_replays: 0,
            graph_error: None,
            gemm_error,
        })
    }

    /// The GEMM prefill: `(chunks of at least this many rows use cuBLAS (None: never), why it
    /// is off although the options asked for it)`.
    pub fn gemm_status(&self) -> (Option<usize>, Option<&str>) {
        (self.st.gemm.as_ref().map(|g| g.min_rows), self.gemm_error.as_deref())
    }

    /// CUDA graphs of the decode step: `(in use, steps replayed from a graph, why a capture
    /// failed)`.
    pub fn graph_status(&self) -> (bool, u64, Option<&str>) {
        (self.use_graphs, self.graph_replays, self.graph_error.as_deref())
    }

    /// One decode step of `n` rows (sequences `0..n`, one token each, ids and positions already
    /// uploaded) into `cache`, every row's logits into `st.logits[..n·V]`: replayed from its
    /// CUDA graph, captured on first use, or launched directly when graphs are off. A graph
    /// holds only kernels (the ids and positions are read from device memory, uploaded before
    /// it), and the buffers it reads stay allocated while it lives (the batch buffers are
    /// reallocated only with their graphs dropped).
    fn forward_step(&mut self, n: usize, cache: Cache) -> Result<()> {
        let pass = Pass { seq0: 0, n_seq: n, tokens: 1, extra: 0, cache, want: Want::All };
        let (gpu, cfg) = (&*self.gpu, &self.dec.cfg);
        if !self.use_graphs {
            let rb = self.bufs.decode(gpu, cfg, n)?;
            return forward(gpu, self.dec, &mut self.st, rb, pass);
        }
        if let Some((_, _, g)) = self.graphs.iter().find(|(m, c, _)| *m == n && *c == cache) {
            g.launch().map_err(|e| driver_error("replaying the decode-step graph", e))?;
            self.graph_replays += 1;
            return Ok(());
        }
        // Allocate before capturing (allocation is not allowed in a capture).
        if self.bufs.decode_allocates(n) {
            self.graphs.retain(|(m, _, _)| *m == 1);
        }
        let rb = self.bufs.decode(gpu, cfg, n)?;
        let stream = Arc::clone(gpu.stream());
        let captured = match stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) {
            Err(e) => Err(format!("begin capture: {e:?}")),
            Ok(()) => {
                let run = forward(gpu, self.dec, &mut self.st, rb, pass);
                let end = stream.end_capture(CUgraphInstantiate_flags(0));
                match (run, end) {
                    (Ok(()), Ok(Some(g))) => Ok(g),
                    (Err(e), _) => return Err(e),
                    (Ok(()), Ok(None)) => Err("the capture recorded no graph".to_string()),
                    (Ok(()), Err(e)) => Err(format!("end capture / instantiate: {e:?}")),
                }
            }
        };
        match captured {
            Ok(g) => {
                g.launch().map_err(|e| driver_error("launching the decode-step graph", e))?;
                self.graphs.push((n, cache, g));
                self.graph_replays += 1;
                Ok(())
            }
            Err(why) => {
                // Nothing ran during the failed capture: turn graphs off and launch directly.
                crate::log::emit(
                    crate::log::Level::Warn,
                    &format!("CUDA graph capture failed ({why}); decoding without graphs"),
                );
                self.use_graphs = false;
                self.graphs.clear();
                self.graph_error = Some(why);
                let rb = self.bufs.decode(gpu, cfg, n)?;
                forward(gpu, self.dec, &mut self.st, rb, pass)
            }
        }
    }

    /// The decoder config.
    pub fn config(&self) -> &DecoderConfig {
        &self.dec.cfg
    }

    /// Vocabulary size (length of a logits row).
    pub fn vocab_size(&self) -> usize {
        self.dec.cfg.vocab_size
    }

    /// Positions the KV cache holds.
    pub fn context(&self) -> usize {
        self.context
    }

    /// The most sequences [`DeviceSession::generate_batch_inputs`] takes.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Positions filled so far (sequence 0; a batch leaves the session empty).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed since creation or [`DeviceSession::reset`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position (keeps the allocations).
    pub fn reset(&mut self) {
        self.len = 0;
        self.has_logits = false;
    }

    /// A flag that stops [`DeviceSession::generate`] and [`DeviceSession::generate_batch_inputs`]
    /// within one step when set (from any thread); consumed when seen.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Uses `flag` as the cancel flag from now on (e.g. a C session's, set by
    /// `mr_session_cancel`).
    pub fn set_cancel_flag(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = flag;
    }

    fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::AcqRel)
    }

    /// Feeds `tokens` (any length up to the room left, run in chunks) and returns the logits
    /// of the last position (`[vocab]`). Errors (empty input, ids outside the vocabulary, no
    /// room) leave the session unchanged.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.prefill_input(Input::Tokens(tokens))
    }

    /// [`DeviceSession::prefill`] of ids or of caller-made input embeddings `[n, hidden_size]`
    /// (a region prompt with its image and mask rows spliced in).
    pub fn prefill_input(&mut self, input: Input<'_>) -> Result<Vec<f32>> {
        self.feed(input)?;
        self.download_logits()
    }

    /// Feeds one token and returns its logits (the distribution of the next token).
    pub fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.feed(Input::Tokens(std::slice::from_ref(&token)))?;
        self.download_logits()
    }

    /// Feeds `prompt` (after whatever the session holds; [`DeviceSession::reset`] first for a
    /// fresh one) and generates greedily with the device argmax, as the CPU's
    /// `Session::generate` with greedy sampling does: the input-only ids (image / mask / pos
    /// tokens) are banned; a token in `stop` ends generation and is not returned; at most
    /// `max_new` ids are returned; a full context ends generation early.
    pub fn generate_greedy(&mut self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        let v = self.dec.cfg.vocab_size;
        if max_new == 0 {
            return Err(Error::invalid("max_new", "must be at least 1"));
        }
        if let Some(&id) = stop.iter().find(|&&id| id as usize >= v) {
            return Err(Error::invalid("stop", format!("{id} is outside the vocabulary (0..{v})")));
        }
        self.feed(Input::Tokens(prompt))?;
        let mut tokens = Vec::with_capacity(max_new);
        loop {
            let id = checked_id(self.select(1, &SamplingParams::greedy(), &[])?[0], v)?;
            if stop.contains(&id) {
                break;
            }
            tokens.push(id);
            if tokens.len() >= max_new || self.len >= self.context {
                break;
            }
            self.feed(Input::Tokens(std::slice::from_ref(&id)))?;
        }
        Ok(tokens)
    }

    /// The device twin of the CPU's `Session::generate`: feeds `prompt` after whatever the
    /// session holds and generates until a stop condition, streaming each token to `on_token`,
    /// with the same [`GenerateOptions`] semantics (stop ids and strings; the penalty and the
    /// bans on the device, then the device argmax when greedy or the device sampler with the
    /// host RNG's numbers for a temperature). With `keep_logits`, every
    /// prompt position's logits and every step's are kept as on the CPU (the steps then take
    /// the host sampler on downloaded logits).
    pub fn generate(
        &mut self,
        prompt: Input<'_>,
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnToken<'_>,
    ) -> Result<Generation> {
        let v = self.dec.cfg.vocab_size;
        opts.validate(tokenizer, v)?;
        let banned = self.dec.cfg.input_only_ids();
        let mut seq = SeqState::new(opts, opts.sampling.seed, tokenizer, v, &banned)?;
        if let Input::Tokens(ids) = prompt {
            seq.sampler.observe(ids)?;
        }
        let stop_ids = opts.stop_ids_for(&self.dec.cfg).to_vec();
        let t0 = Instant::now();
        let before = self.len;
        if opts.keep_logits {
            // Every prompt position's logits, as the CPU keeps them; the last row is added by
            // `accept` (the steps then take the host sampler, which keeps each row).
            let n = prompt.rows(self.dec.cfg.hidden_size);
            let mut rows = vec![0.0f32; n * v];
            self.prefill_all_logits(prompt, &mut rows)?;
            rows.truncate(n.saturating_sub(1) * v);
            seq.logits = rows;
        } else {
            self.feed(prompt)?;
        }
        seq.prompt_tokens = self.len - before;
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        loop {
            self.choose(opts, &mut [(0, &mut seq)], &stop_ids, &mut |_, id, text| on_token(id, text))?;
            if seq.stop.is_some() {
                break;
            }
            if self.take_cancel() {
                seq.stop = Some(StopReason::Cancelled);
                seq.flush(on_token)?;
                break;
            }
            if self.len >= self.context {
                seq.stop = Some(StopReason::ContextFull);
                seq.flush(on_token)?;
                break;
            }
            let id = *seq.tokens.last().unwrap_or(&0);
            self.feed(Input::Tokens(std::slice::from_ref(&id)))?;
        }
        Ok(seq.finish(prefill_secs, t1.elapsed().as_secs_f64()))
    }

    /// The device twin of the CPU's `Session::generate_batch_inputs` (same checks, same
    /// results per sequence, same streaming): the prefix is fed once into the shared prefix
    /// cache, each suffix into its sequence's own cache, then every sequence decodes in lock
    /// step, one forward (each weight read once) per step. Resets the session first and leaves
    /// it empty.
    ///
    /// Choice: a sequence that stops keeps its row in the step (its id and position frozen,
    /// its output ignored) rather than leaving the batch: the decode kernels take sequences
    /// `0..n` and the launch shapes stay the same every step, while an extra row costs almost
    /// nothing in a weight-bound step.
    pub fn generate_batch_inputs(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[Input<'_>],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>> {
        let cfg = &self.dec.cfg;
        let (v, d) = (cfg.vocab_size, cfg.hidden_size);
        let n = suffixes.len();
        let plen = check_batch(prefix, suffixes, v, d, self.context, self.max_batch)?;
        opts.validate(tokenizer, v)?;
        if opts.keep_logits {
            return Err(Error::Unsupported("keeping the logits of a CUDA generation".into()));
        }
        check_finite(&prefix, "prefix")?;
        for (i, s) in suffixes.iter().enumerate() {
            check_finite(s, &format!("suffixes[{i}]"))?;
        }
        if plen > 0 && self.st.prefix.is_none() {
            return Err(Error::invalid(
                "prefix",
                "this session has no shared-prefix cache (DeviceSessionOptions::max_batch is 1)",
            ));
        }
        let banned = cfg.input_only_ids();
        let mut seqs = (0..n)
            .map(|i| SeqState::new(opts, opts.sampling.seed.wrapping_add(i as u64), tokenizer, v, &banned))
            .collect::<Result<Vec<_>>>()?;
        let stop_ids = opts.stop_ids_for(cfg).to_vec();
        let t0 = Instant::now();
        self.len = 0;
        self.has_logits = false;
        let cache = if plen > 0 { Cache::OwnAfterPrefix } else { Cache::Own };
        let mut prefix_logits = Vec::new();
        if plen > 0 {
            self.set_prefix_len(0)?;
            self.feed_rows(prefix, 0, 0, Cache::Prefix)?;
            if let Input::Tokens(ids) = prefix {
                seqs.iter_mut().try_for_each(|s| s.sampler.observe(ids))?;
            }
            if suffixes.iter().any(|s| s.rows(d) == 0) {
                prefix_logits = self.download_logits()?;
            }
        }
        self.set_prefix_len(plen)?;
        let mut own = [0usize; MAX_BATCH];
        let mut prefill_secs = vec![0.0; n];
        for (i, input) in suffixes.iter().enumerate() {
            let ts = Instant::now();
            if i > 0 && self.take_cancel() {
                return Err(Error::Cancelled);
            }
            if let Input::Tokens(ids) = input {
                seqs[i].sampler.observe(ids)?;
            }
            let slen = input.rows(d);
            seqs[i].prompt_tokens = plen + slen;
            let mut cb = |id: u32, text: &str| on_token(i, id, text);
            if slen == 0 {
                seqs[i].accept(&prefix_logits, &stop_ids, opts, &mut cb)?;
            } else {
                self.feed_rows(*input, i, plen, cache)?;
                own[i] = slen;
                self.choose(opts, &mut [(0, &mut seqs[i])], &stop_ids, &mut |_, id, text| cb(id, text))?;
            }
            prefill_secs[i] = ts.elapsed().as_secs_f64();
        }
        let prefix_secs = t0.elapsed().as_secs_f64() - prefill_secs.iter().sum::<f64>();
        let t1 = Instant::now();
        loop {
            for (i, s) in seqs.iter_mut().enumerate() {
                if s.stop.is_none() && plen + own[i] >= self.context {
                    s.stop = Some(StopReason::ContextFull);
                    s.flush(&mut |id: u32, text: &str| on_token(i, id, text))?;
                }
            }
            if seqs.iter().all(|s| s.stop.is_some()) {
                break;
            }
            if self.take_cancel() {
                for (i, s) in seqs.iter_mut().enumerate().filter(|(_, s)| s.stop.is_none()) {
                    s.stop = Some(StopReason::Cancelled);
                    s.flush(&mut |id: u32, text: &str| on_token(i, id, text))?;
                }
                break;
            }
            for (i, s) in seqs.iter().enumerate() {
                // Stopped sequences re-run their last position (inside their own cache).
                let pos = (plen + own[i]).min(self.context - 1);
                self.host_ids[i] = *s.tokens.last().unwrap_or(&0) as i32;
                self.host_pos[i] = pos as i32;
            }
            self.upload_staged(n, 0, n)?;
            self.forward_step(n, cache)?;
            for (i, s) in seqs.iter().enumerate() {
                if s.stop.is_none() {
                    own[i] += 1;
                }
            }
            let mut live: Vec<(usize, &mut SeqState<'_>)> =
                seqs.iter_mut().enumerate().filter(|(_, s)| s.stop.is_none()).collect();
            self.choose(opts, &mut live, &stop_ids, on_token)?;
        }
        let decode_secs = t1.elapsed().as_secs_f64();
        self.len = 0;
        Ok(seqs
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.finish(prefix_secs + prefill_secs[i], decode_secs))
            .collect())
    }

    /// Chooses the next token of each `(row, sequence)` from the logits rows in `st.logits`
    /// (row `r` at `r·V`) and hands it to the sequence: the device's pick after the penalty and
    /// the bans when [`device_picks`] (only the ids are downloaded), else the CPU sampler on
    /// the downloaded rows. `on_token` gets the sequence's index in `seqs`'
    /// original numbering (its row).
    fn choose(
        &mut self,
        opts: &GenerateOptions,
        seqs: &mut [(usize, &mut SeqState<'_>)],
        stop_ids: &[u32],
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<()> {
        let Some(rows) = seqs.iter().map(|(r, _)| r + 1).max() else { return Ok(()) };
        let v = self.dec.cfg.vocab_size;
        if device_picks(opts, v) {
            // One uniform number per row from its sequence's RNG (a frozen row's is unused).
            let mut u = Vec::new();
            if !opts.sampling.is_greedy() {
                u = vec![0.5f64; rows];
                for (r, s) in seqs.iter_mut() {
                    u[*r] = s.sampler.next_uniform();
                }
            }
            // The penalty's history: each row's sequence's seen ids, as a byte mask (uploaded
            // per step: the row a sequence reads changes between its first pick and the rest).
            if opts.sampling.repetition_penalty != 1.0 {
                self.host_seen.clear();
                self.host_seen.resize(rows * v, 0);
                for (r, s) in seqs.iter() {
                    for &id in s.sampler.seen() {
                        self.host_seen[*r * v + id as usize] = 1;
                    }
                }
                self.gpu
                    .stream()
                    .memcpy_htod(&self.host_seen[..], &mut self.st.seen.slice_mut(..rows * v))
                    .map_err(|e| driver_error("uploading the repetition history", e))?;
            }
            let ids = self.select(rows, &opts.sampling, &u)?;
            for (r, s) in seqs.iter_mut() {
                let r = *r;
                let id = checked_id(ids[r], v)?;
                s.accept_id(id, stop_ids, opts, &mut |id: u32, text: &str| on_token(r, id, text))?;
            }
        } else {
            let logits = self.gpu.download(&self.st.logits.slice(..rows * v))?;
            for (r, s) in seqs.iter_mut() {
                let r = *r;
                let row = &logits[r * v..(r + 1) * v];
                s.accept(row, stop_ids, opts, &mut |id: u32, text: &str| on_token(r, id, text))?;
            }
        }
        Ok(())
    }

    /// Applies the repetition penalty (with `st.seen`, when `params` has one) and the bans to
    /// a copy of the first `rows` logits rows, picks each row's token on the device (the argmax
    /// when `params` is greedy, else the draw of `u[row]` under its temperature / top-k /
    /// top-p) and returns them (−1 for a row without a finite maximum; see [`checked_id`]).
    fn select(&mut self, rows: usize, params: &SamplingParams, u: &[f64]) -> Result<Vec<i32>> {
        let gpu = &*self.gpu;
        if !params.is_greedy() {
            if u.len() != rows {
                return Err(Error::Internal(format!("{} uniform numbers for {rows} rows", u.len())));
            }
            gpu.stream()
                .memcpy_htod(u, &mut self.st.uniform.slice_mut(..rows))
                .map_err(|e| driver_error("uploading the uniform numbers", e))?;
        }
        let v = self.dec.cfg.vocab_size;
        let layout = LogitsLayout::packed(rows, v);
        {
            let mut picked = self.st.picked.slice_mut(..rows * v);
            gpu.stream()
                .memcpy_dtod(&self.st.logits.slice(..rows * v), &mut picked)
                .map_err(|e| driver_error("copying the logits", e))?;
            if params.repetition_penalty != 1.0 {
                let seen = self.st.seen.slice(..rows * v);
                repetition_penalty(gpu, &mut picked, &layout, &seen, v, params.repetition_penalty)?;
            }
            ban(gpu, &mut picked, &layout, &self.st.banned.as_view())?;
        }
        let logits = self.st.picked.slice(..rows * v);
        let mut next = self.st.next.slice_mut(..rows);
        let uniform = self.st.uniform.slice(..rows);
        let u = (!params.is_greedy()).then_some(&uniform);
        sample(gpu, &logits, &layout, params, u, &mut next)?;
        gpu.download(&self.st.next.slice(..rows))
    }

    /// The logits of sequence 0's last position (what the CPU's `Session::logits` holds):
    /// `None` on an empty session, after a batch, or after a feed that failed part-way.
    /// Downloads them (a sync).
    pub fn logits(&self) -> Result<Option<Vec<f32>>> {
        if !self.has_logits {
            return Ok(None);
        }
        self.download_logits().map(Some)
    }

    /// The logits of the last position fed.
    fn download_logits(&self) -> Result<Vec<f32>> {
        self.gpu.download(&self.st.logits.slice(..self.dec.cfg.vocab_size))
    }

    /// Checks `input` and appends it to sequence 0 (no prefix), leaving its last position's
    /// logits in `st.logits[..V]`. An error leaves the session's length unchanged.
    fn feed(&mut self, input: Input<'_>) -> Result<()> {
        self.feed_keeping(input, None)
    }

    /// [`DeviceSession::feed`], also copying every row's logits to `keep` (`[rows, V]`).
    fn feed_keeping(&mut self, input: Input<'_>, keep: Option<&mut [f32]>) -> Result<()> {
        check_input(&input, &self.dec.cfg, self.len, self.context)?;
        self.has_logits = false;
        self.set_prefix_len(0)?;
        let n = input.rows(self.dec.cfg.hidden_size);
        let start = self.len;
        self.feed_rows_keeping(input, 0, start, Cache::Own, keep)?;
        self.len += n;
        self.has_logits = true;
        Ok(())
    }

    /// Runs the rows of `input` (checked by the caller) through the decoder in chunks, as
    /// sequence `seq` from absolute position `start` into `cache`; the last row's logits land
    /// in `st.logits[..V]`.
    fn feed_rows(&mut self, input: Input<'_>, seq: usize, start: usize, cache: Cache) -> Result<()> {
        self.feed_rows_keeping(input, seq, start, cache, None)
    }

    /// [`DeviceSession::feed_rows`], also copying every row's logits to `keep` (`[rows, V]`)
    /// when given.
    fn feed_rows_keeping(
        &mut self,
        input: Input<'_>,
        seq: usize,
        start: usize,
        cache: Cache,
        mut keep: Option<&mut [f32]>,
    ) -> Result<()> {
        let (d, v) = (self.dec.cfg.hidden_size, self.dec.cfg.vocab_size);
        let n = input.rows(d);
        let mut done = 0;
        while done < n {
            let m = self.chunk.min(n - done);
            let extra = match input {
                Input::Tokens(ids) => {
                    for (h, &id) in self.host_ids[..m].iter_mut().zip(&ids[done..done + m]) {
                        *h = id as i32;
                    }
                    0
                }
                Input::Embeddings(e) => {
                    for (j, h) in self.host_ids[..m].iter_mut().enumerate() {
                        *h = -(j as i32) - 1;
                    }
                    self.gpu
                        .stream()
                        .memcpy_htod(&e[done * d..(done + m) * d], &mut self.st.extra.slice_mut(..m * d))
                        .map_err(|e| driver_error("uploading input embeddings", e))?;
                    m
                }
            };
            for (j, h) in self.host_pos[..m].iter_mut().enumerate() {
                *h = (start + done + j) as i32;
            }
            self.upload_staged(m, seq, 1)?;
            if m == 1 && seq == 0 && extra == 0 && cache != Cache::Prefix {
                // A decode step (the last row's logits are its only row's).
                self.forward_step(1, cache)?;
            } else {
                let want = if done + m == n { Want::Last } else { Want::None };
                let rb = self.bufs.chunk(&self.gpu, &self.dec.cfg, m, self.chunk)?;
                let pass = Pass { seq0: seq, n_seq: 1, tokens: m, extra, cache, want };
                forward(&self.gpu, self.dec, &mut self.st, rb, pass)?;
            }
            if let Some(k) = keep.as_deref_mut() {
                self.copy_chunk_logits(m, &mut k[done * v..(done + m) * v])?;
                if done + m == n {
                    // The pieces overwrote `st.logits`: the last row's again, where the
                    // generation reads them.
                    let (gpu, dec, st) = (&*self.gpu, self.dec, &mut self.st);
                    let last = st.h.slice((m - 1) * d..m * d);
                    matmul(gpu, dec.head(), &last, 1, &mut st.acts, &mut st.logits.slice_mut(..v))?;
                }
            }
            done += m;
        }
        Ok(())
    }

    /// Copies the logits of the `m` rows whose final hidden states a forward just left in
    /// `st.h` to `keep` (`[m, V]`): the head on the GEMV kernels, `max_batch` rows at a time
    /// through `st.logits` (each row's logits are what a one-row head gives, bit for bit).
    fn copy_chunk_logits(&mut self, m: usize, keep: &mut [f32]) -> Result<()> {
        let (gpu, dec) = (&*self.gpu, self.dec);
        let (d, v) = (dec.cfg.hidden_size, dec.cfg.vocab_size);
        let st = &mut self.st;
        for r0 in (0..m).step_by(self.max_batch) {
            let q = self.max_batch.min(m - r0);
            let h = st.h.slice(r0 * d..(r0 + q) * d);
            matmul(gpu, dec.head(), &h, q, &mut st.acts, &mut st.logits.slice_mut(..q * v))?;
            gpu.stream()
                .memcpy_dtoh(&st.logits.slice(..q * v), &mut keep[r0 * v..(r0 + q) * v])
                .map_err(|e| driver_error("downloading logits", e))?;
        }
        gpu.sync()
    }

    /// Feeds `input` like [`DeviceSession::prefill_input`] and writes the logits of every one
    /// of its positions to `out` (`[rows, V]`), as the CPU's `Session::prefill_all_logits`
    /// (the head of each chunk's rows is run and downloaded `max_batch` rows at a time).
    pub fn prefill_all_logits(&mut self, input: Input<'_>, out: &mut [f32]) -> Result<()> {
        let cfg = &self.dec.cfg;
        let n = input.rows(cfg.hidden_size);
        if out.len() != n * cfg.vocab_size {
            return Err(Error::Shape {
                what: "all-logits output".into(),
                expected: format!("[{n}, {}]", cfg.vocab_size),
                found: format!("{} values", out.len()),
            });
        }
        self.feed_keeping(input, Some(out))
    }

    /// Copies the staged ids and positions of `rows` rows to the device, and the first
    /// position of each of the `n_seq` sequences from `seq0` into `kv_pos`. The rows are either
    /// one sequence's (`n_seq == 1`) or one per sequence (`rows == n_seq`): either way those
    /// first positions are `host_pos[..n_seq]`.
    fn upload_staged(&mut self, rows: usize, seq0: usize, n_seq: usize) -> Result<()> {
        if n_seq != 1 && rows != n_seq {
            return Err(Error::Internal(format!("{rows} staged rows for {n_seq} sequences")));
        }
        // Ids are < vocab ≤ 2^24 and positions < context ≤ max_position_embeddings ≤ 2^24
        // (checked by the config and the callers), so they fit an i32.
        let stream = self.gpu.stream();
        stream
            .memcpy_htod(&self.host_ids[..rows], &mut self.st.ids.slice_mut(..rows))
            .map_err(|e| driver_error("uploading token ids", e))?;
        stream
            .memcpy_htod(&self.host_pos[..rows], &mut self.st.row_pos.slice_mut(..rows))
            .map_err(|e| driver_error("uploading positions", e))?;
        stream
            .memcpy_htod(&self.host_pos[..n_seq], &mut self.st.kv_pos.slice_mut(seq0..seq0 + n_seq))
            .map_err(|e| driver_error("uploading the KV positions", e))?;
        Ok(())
    }

    /// Sets the device prefix length (`st.prefix_len`) when it changes.
    fn set_prefix_len(&mut self, p: usize) -> Result<()> {
        if self.prefix_len != p {
            let v = [p as i32];
            self.gpu
                .stream()
                .memcpy_htod(&v[..], &mut self.st.prefix_len.slice_mut(..1))
                .map_err(|e| driver_error("uploading the prefix length", e))?;
            self.prefix_len = p;
        }
        Ok(())
    }
}

/// `outs[i] = x · ws[i]ᵀ` for weights that read the same input `x` `[m, k]`. On the GEMV
/// kernels (`gemm` = `None`), quantized weights share one quantization of `x` (the CPU
/// quantizes the same values identically for each, so the bits are the same as separate
/// [`matmul`] calls); with `gemm`, on cuBLAS ([`project_gemm`]).
fn project(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    m: usize,
    acts: &mut QuantizedActs,
    gemm: Option<&mut Gemm>,
    ws: &[&DeviceWeight],
    outs: &mut [CudaViewMut<'_, f32>],
) -> Result<()> {
    if let Some(g) = gemm {
        return project_gemm(gpu, g, x, m, ws, outs);
    }
    let k = ws.first().map_or(0, |w| w.k());
    let shared = !ws.is_empty() && ws.iter().all(|w| w.quant().is_some() && w.k() == k);
    if shared {
        quantize_act(gpu, x, m, k, acts)?;
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        match (shared, w.quant()) {
            (true, Some(q)) => matmul_quant(gpu, &q, w.rows(), w.k(), acts, out)?,
            _ => matmul(gpu, w, x, m, acts, out)?,
        }
    }
    Ok(())
}

/// [`project`] on cuBLAS (f32 accumulation and output): an F32 weight multiplies `x` in f32;
/// an F16 / BF16 weight multiplies `x` rounded to its own type; a quantized weight multiplies
/// `x` rounded to the type of its kept copy ([`DeviceDecoder::keep_prefill_copies`]), or is
/// first dequantized into `g.w` as `g.half` (each value computed in f32 as `quant::dequantize`
/// does, then rounded). `x` is rounded once per type for all of `ws`.
fn project_gemm(
    gpu: &Gpu,
    g: &mut Gemm,
    x: &CudaView<'_, f32>,
    m: usize,
    ws: &[&DeviceWeight],
    outs: &mut [CudaViewMut<'_, f32>],
) -> Result<()> {
    // (type, k) of the values in `g.x`.
    let mut rounded: Option<(Half, usize)> = None;
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let (n, k) = (w.rows(), w.k());
        // The 16-bit operand: the weight itself, its kept copy, or a fresh dequantization.
        let (ty, wh) = match (w.dense(), w.half_copy()) {
            (Some(DenseBuffer::F32(b)), _) => {
                g.blas.gemm_xwt_f32(x, b, out, m, n, k)?;
                continue;
            }
            (Some(DenseBuffer::F16(b)), _) => (Half::F16, b),
            (Some(DenseBuffer::Bf16(b)), _) => (Half::Bf16, b),
            (None, Some((ty, copy))) => (ty, copy),
            (None, None) => {
                w.dequantize(gpu, g.half, &mut g.w)?;
                (g.half, &g.w)
            }
        };
        if rounded != Some((ty, k)) {
            f32_to_half(gpu, ty, x, &mut g.x.slice_mut(..m * k), m * k)?;
            rounded = Some((ty, k));
        }
        g.blas.gemm_xwt(ty, &g.x.slice(..m * k), wh, out, m, n, k)?;
    }
    Ok(())
}

/// One forward pass (`pass`, see [`Pass`]): appends the rows' keys and values to the cache
/// `pass.cache` names and leaves the logits `pass.want` asks for in `st.logits`. Only enqueues.
fn forward(gpu: &Gpu, dec: &DeviceDecoder, st: &mut State, rb: &mut RowBufs, pass: Pass) -> Result<()> {
    let cfg = &dec.cfg;
    let m = rb.m;
    if m != pass.n_seq * pass.tokens {
        return Err(Error::Internal(format!("{m} row buffers for {} × {} rows", pass.n_seq, pass.tokens)));
    }
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    let eps = cfg.rms_norm_eps;
    let md = m * d;
    let positions = KvPositions { pos: &st.kv_pos, prefix_len: &st.prefix_len };
    let rope_layout = RopeLayout::packed(m, nh, nkv, hd);
    if pass.cache != Cache::Own && st.prefix.is_none() {
        return Err(Error::Internal("a prefix pass in a session without a prefix cache".into()));
    }

    // x = embed(ids, extra); h = rms_norm(x, input_layernorm of layer 0).
    let table = embed_table(&dec.embed)?;
    let extra = st.extra.slice(..pass.extra * d);
    let extra = (pass.extra > 0).then_some((&extra, pass.extra));
    embed(gpu, &table, v, d, &st.ids.slice(..m), extra, &mut st.x.slice_mut(..md), m)?;
    let first_norm = dec.layers.first().map_or(&dec.norm, |l| &l.attn_norm);
    rms_norm(gpu, &st.x.slice(..md), &first_norm.as_view(), &mut st.h.slice_mut(..md), m, d, eps)?;

    // The weight products of a prefill chunk long enough go to cuBLAS (never a decode step's).
    let gemm_on = pass.tokens > 1 && st.gemm.as_ref().is_some_and(|g| m >= g.min_rows);
    for (il, l) in dec.layers.iter().enumerate() {
        // Attention block (h holds rms_norm(x, input_layernorm)).
        {
            let (qn, kn) = (m * cfg.q_dim(), m * cfg.kv_dim());
            let mut outs = [rb.q.slice_mut(..qn), rb.k.slice_mut(..kn), rb.v.slice_mut(..kn)];
            let gemm = st.gemm.as_mut().filter(|_| gemm_on);
            project(gpu, &st.h.slice(..md), m, &mut st.acts, gemm, &[&l.q, &l.k, &l.v], &mut outs)?;
        }
        {
            let (mut q, mut k) = (rb.q.as_view_mut(), rb.k.as_view_mut());
            rope(gpu, &mut q, &mut k, &st.row_pos.slice(..m), &dec.rope, &rope_layout)?;
        }
        let rows = KvRows { layer: il, seq0: pass.seq0, n_seq: pass.n_seq, tokens: pass.tokens };
        // The cache the rows are stored in and the prefix they attend to.
        let (own, prefix, pcap) = match (pass.cache, st.prefix.as_mut()) {
            (Cache::Prefix, Some(p)) => (KvCacheMut { k: &mut p.k, v: &mut p.v, dims: p.dims }, None, 0),
            (Cache::OwnAfterPrefix, Some(p)) => (
                KvCacheMut { k: &mut st.cache_k, v: &mut st.cache_v, dims: st.dims },
                Some(KvCache { k: &p.k, v: &p.v, dims: p.dims }),
                p.dims.capacity,
            ),
            _ => (KvCacheMut { k: &mut st.cache_k, v: &mut st.cache_v, dims: st.dims }, None, 0),
        };
        let mut own = own;
        kv_store(gpu, &rb.k, &rb.v, &mut own, pcap, rows, positions)?;
        let cache = KvCache { k: own.k, v: own.v, dims: own.dims };
        if pass.tokens == 1 && pass.seq0 == 0 {
            kv_decode_attention(
                gpu,
                &rb.q,
                &mut rb.att,
                cache,
                prefix,
                nh,
                il,
                pass.n_seq,
                positions,
                &mut st.workspace,
            )?;
        } else {
            kv_prefill_attention(gpu, &rb.q, &mut rb.att, cache, prefix, nh, rows, positions)?;
        }
        {
            let gemm = st.gemm.as_mut().filter(|_| gemm_on);
            project(gpu, &rb.att.as_view(), m, &mut st.acts, gemm, &[&l.o], &mut [st.out.slice_mut(..md)])?;
        }
        // x += a·Woᵀ; h = rms_norm(x, post_attention_layernorm).
        rms_norm_add(
            gpu,
            &mut st.x.slice_mut(..md),
            &st.out.slice(..md),
            &l.mlp_norm.as_view(),
            &mut st.h.slice_mut(..md),
            m,
            d,
            eps,
        )?;

        // MLP block.
        let mf = m * f;
        {
            let mut outs = [st.gate.slice_mut(..mf), st.up.slice_mut(..mf)];
            let gemm = st.gemm.as_mut().filter(|_| gemm_on);
            project(gpu, &st.h.slice(..md), m, &mut st.acts, gemm, &[&l.gate, &l.up], &mut outs)?;
        }
        swiglu_in_place(gpu, &mut st.gate.slice_mut(..mf), &st.up.slice(..mf), m, f)?;
        {
            let gemm = st.gemm.as_mut().filter(|_| gemm_on);
            let mut outs = [st.out.slice_mut(..md)];
            project(gpu, &st.gate.slice(..mf), m, &mut st.acts, gemm, &[&l.down], &mut outs)?;
        }
        // x += mlp; h = rms_norm(x, next layer's input_layernorm, or the final norm).
        let next_norm = dec.layers.get(il + 1).map_or(&dec.norm, |n| &n.attn_norm);
        rms_norm_add(
            gpu,
            &mut st.x.slice_mut(..md),
            &st.out.slice(..md),
            &next_norm.as_view(),
            &mut st.h.slice_mut(..md),
            m,
            d,
            eps,
        )?;
    }

    // h holds rms_norm(x, norm) for every row (per row, so each row's bits are the CPU's
    // rms_norm of that row alone).
    match pass.want {
        Want::None => {}
        Want::Last => {
            let last = st.h.slice((m - 1) * d..md);
            matmul(gpu, dec.head(), &last, 1, &mut st.acts, &mut st.logits.slice_mut(..v))?;
        }
        Want::All => {
            if m * v > st.logits.len() {
                return Err(Error::Internal(format!(
                    "logits of {m} rows in a buffer of {}",
                    st.logits.len()
                )));
            }
            matmul(gpu, dec.head(), &st.h.slice(..md), m, &mut st.acts, &mut st.logits.slice_mut(..m * v))?;
        }
    }
    Ok(())
}
