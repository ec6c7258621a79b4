//! The LLaMA-3 decoder step on the GPU (issue #9), composed from the launchers of
//! [`super::ops`]: the device twin of the CPU decoder (`llm::forward`, [`crate::llm::Session`]).
//!
//! ```text
//! DeviceDecoder::upload(gpu, &model)   every decoder weight once per device (immutable, shareable)
//! DeviceSession::new(&decoder, opts)   all mutable device state, allocated once
//!   .prefill(&prompt)      -> logits of the prompt's last position      (chunks of `chunk` rows)
//!   .decode_step(token)    -> logits of the token's position             (one row)
//!   .generate_greedy(prompt, max_new, stop) -> generated ids             (device argmax)
//! ```
//!
//! # Design
//! * [`DeviceDecoder`] holds the weights: every matrix as a [`DeviceWeight`] in its stored type
//!   (f32 / f16 / bf16 / Q8_0 / Q4_0 / Q4_1), the norm vectors as f32, and the CPU's RoPE table
//!   ([`RopeTable`], computed on the host exactly as `Rope::angles`) for the positions sessions
//!   may use. The token embedding is one [`DeviceWeight`] that the `embed_*` kernels read
//!   through an [`EmbedTable`] view of its buffers (the layouts are the same), so a tied head
//!   (`tie_word_embeddings`) shares the one copy instead of uploading the `[V, D]` table twice
//!   (a `DeviceEmbedding` would be that second copy).
//! * [`DeviceSession`] owns the mutable device state: the KV cache `[max_batch, layers, context,
//!   kv_dim]` (keys and values, f32, the CPU's layout per sequence), the activation scratch for
//!   `max(chunk, max_batch)` rows, [`QuantizedActs`], the decode-attention workspace, the logits
//!   buffer, and the token ids, per-row positions, KV positions and prefix length in device
//!   memory. The per-step launches depend only on host sizes (rows, layer), never on the
//!   position, which is read by the kernels from device memory: the decode step is ready to be
//!   captured as a CUDA graph (not done yet, see below). A step allocates nothing on the
//!   device; it copies its id and position to the device (three 4-byte copies from pageable
//!   host memory, each of which waits for the stream; graph replay would need them written by a
//!   kernel, or copied from a fixed pinned buffer, instead). [`DeviceSession::prefill`] and
//!   [`DeviceSession::decode_step`] download the logits (a sync); `generate_greedy` downloads
//!   only the chosen id.
//! * Per layer, exactly the CPU's order: `h = rms_norm(x)`; `q, k, v = h·Wᵀ`; RoPE on `q`, `k`;
//!   store `k`, `v` in the cache; attention over the cache (GQA); `x += a·Woᵀ` fused with the
//!   next `rms_norm` ([`super::ops::llm::rms_norm_add`]); `gate, up = h·Wᵀ`; `gate = silu(gate)·up`;
//!   `x += gate·Wdᵀ` fused with the next layer's (or the final) norm; logits = `h_last·Whᵀ`.
//!   Quantized projections that read the same input (q/k/v, gate/up) quantize it once.
//! * Prefill runs in chunks of `chunk` rows (default 64) through the batched GEMV launchers
//!   ([`super::ops::matmul::matmul`] splits the rows into launches of 8) and the causal prefill
//!   attention kernel; a chunk of one row (and every decode step) uses the split-K decode
//!   attention kernel. A prompt's last chunk of `m < chunk` rows (m > 1) needs row buffers of
//!   exactly `m` rows (the attention launchers take exact-size buffers): they are allocated on
//!   first use and kept until a different `m` comes (prefill may allocate; decode never does).
//!
//! # Numerics (what is bit-identical to the CPU, what is not)
//! * Bit-identical per operation: the embedding lookup, every weight matmul (each output is the
//!   CPU's 8-lane FMA chain and `hsum8`; int8 activation quantization for the block formats),
//!   RoPE (the CPU's own cos/sin table), SwiGLU (glibc's `expf` reproduced), the residual adds;
//!   RMSNorm too but for ~1 row in 10⁶ whose f64 inverse norm lies within ~1e-13 of an f32
//!   rounding boundary (an ulp or two there).
//! * Not bit-identical: attention over the KV cache (`kv_attention_{prefill,decode}_*`: a
//!   tiled / split-K online softmax with the device `exp`, vs the CPU's key-at-a-time online
//!   softmax with libm `exp`): ~1e-6 relative per attention output, which the following layers
//!   propagate. So logits agree to a tolerance (tests/cuda_decoder.rs: `max |Δ| ≤ 1e-4 ·
//!   max |logit|`), not bit for bit, and a greedy token can differ from the CPU's only where the
//!   top two logits are that close.
//! * Greedy selection is `sampling_argmax_f32` (largest logit, lowest id on a tie: the CPU's
//!   `argmax`), after banning the input-only ids (image / mask / pos tokens) exactly like the
//!   CPU's `Session::generate`.
//!
//! # Not done yet
//! * Batched decode of the 6 regions with a shared prefix: the cache, the positions and the
//!   scratch are already sized for `max_batch ≤ 8` sequences and the attention launchers take
//!   a prefix cache, but no method drives it (each live-sequence count would need its own
//!   exact-size row buffers, like the prefill tail).
//! * Caller-made input embeddings (image tokens spliced in): `ops::llm::embed` supports extra
//!   rows through negative ids; the session API takes token ids only.
//! * CUDA-graph capture of the decode step (the launches are capture-safe; the id/position
//!   uploads are not graph nodes yet).
//! * cuBLAS prefill for long prompts (dequantize + GEMM); prefill is GEMV-based, bit-identical
//!   to the CPU's matmuls but reading each weight once per 8 rows.
//! * Repetition penalty and temperature sampling in `generate` (the launchers exist).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

use super::ops::attention::{
    kv_decode_attention, kv_decode_workspace_len, kv_prefill_attention, kv_store, KvCache, KvCacheMut,
    KvDims, KvPositions, KvRows,
};
use super::ops::llm::{
    ban, embed, rms_norm, rms_norm_add, rope, sample, swiglu_in_place, EmbedTable, LogitsLayout, RopeLayout,
    RopeTable,
};
use super::ops::matmul::{matmul, matmul_quant, quantize_act, DenseBuffer, DeviceWeight, QuantizedActs};
use super::{driver_error, Gpu};
use crate::io::package::Model;
use crate::llm::rope::Rope;
use crate::llm::weights::DecoderWeights;
use crate::llm::SamplingParams;
use crate::model::config::DecoderConfig;
use crate::quant::{QuantType, QK};
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
    /// the single-sequence API uses sequence 0).
    pub max_batch: usize,
    /// Rows per prefill chunk (1..=[`MAX_CHUNK`], default 64).
    pub chunk: usize,
}

impl Default for DeviceSessionOptions {
    fn default() -> Self {
        DeviceSessionOptions { context: 0, max_batch: 1, chunk: 64 }
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
    /// Decode attention partials.
    workspace: CudaSlice<f32>,
    /// `[max_batch, V]`.
    logits: CudaSlice<f32>,
    /// Token ids of the rows `[rows]`.
    ids: CudaSlice<i32>,
    /// Absolute position of each row `[rows]` (RoPE).
    row_pos: CudaSlice<i32>,
    /// Absolute position of each sequence's first new token `[max_batch]` (KV kernels).
    kv_pos: CudaSlice<i32>,
    /// The shared prefix length `[1]` (always 0 here).
    prefix_len: CudaSlice<i32>,
    /// Selected tokens `[max_batch]`.
    next: CudaSlice<i32>,
    /// The input-only ids banned from generation `[3]`.
    banned: CudaSlice<i32>,
}

/// One decoder conversation on the device: the KV cache and every buffer a step uses, over a
/// [`DeviceDecoder`]. Use from one thread at a time (every state change takes `&mut self`).
pub struct DeviceSession<'d> {
    dec: &'d DeviceDecoder,
    st: State,
    /// Row buffers of one row (decode steps, one-row chunks).
    one: RowBufs,
    /// Row buffers of a full prefill chunk (`None` when `chunk == 1`).
    full: Option<RowBufs>,
    /// Row buffers of the last partial chunk used.
    tail: Option<RowBufs>,
    chunk: usize,
    max_batch: usize,
    context: usize,
    /// Positions filled (sequence 0).
    len: usize,
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
    Last,
}

impl<'d> DeviceSession<'d> {
    /// A session over `dec` with all its device memory allocated now.
    pub fn new(dec: &'d DeviceDecoder, options: &DeviceSessionOptions) -> Result<DeviceSession<'d>> {
        let cfg = &dec.cfg;
        let gpu = &*dec.gpu;
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
        let rows = options.chunk.max(options.max_batch);
        let dims = KvDims {
            n_seqs: options.max_batch,
            n_layers: cfg.n_layers,
            capacity: context,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
        };
        let cache_len = dims.elements()?;
        let ws_len = kv_decode_workspace_len(&dims, None, options.max_batch, cfg.n_heads)?;
        // Any n·k up to the capacity fits later; k rounded up to whole blocks of 32.
        let k_max = d.max(f).max(cfg.q_dim()).next_multiple_of(QK);
        let banned = [cfg.image_token_id, cfg.mask_token_id, cfg.pos_token_id].map(|id| id as i32);
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
            workspace: gpu.alloc(ws_len.max(1))?,
            logits: gpu.alloc(options.max_batch * v)?,
            ids: gpu.alloc(rows)?,
            row_pos: gpu.alloc(rows)?,
            kv_pos: gpu.alloc(options.max_batch)?,
            prefix_len: gpu.alloc(1)?,
            next: gpu.alloc(options.max_batch)?,
            banned: gpu.upload(&banned)?,
        };
        let one = RowBufs::new(gpu, cfg, 1)?;
        let full = if options.chunk > 1 { Some(RowBufs::new(gpu, cfg, options.chunk)?) } else { None };
        gpu.sync()?;
        Ok(DeviceSession {
            dec,
            st,
            one,
            full,
            tail: None,
            chunk: options.chunk,
            max_batch: options.max_batch,
            context,
            len: 0,
        })
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

    /// Positions filled so far.
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
    }

    /// Checks token ids against the vocabulary.
    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.dec.cfg.vocab_size;
        match ids.iter().position(|&id| id as usize >= v) {
            Some(i) => Err(Error::invalid(
                "token id",
                format!("{} at index {i} is outside the vocabulary (0..{v})", ids[i]),
            )),
            None => Ok(()),
        }
    }

    /// Checks `n` more positions fit.
    fn check_room(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("input", "no tokens to feed"));
        }
        if self.len + n > self.context {
            return Err(Error::invalid(
                "input",
                format!(
                    "{n} tokens after the {} already held exceed the context of {} positions",
                    self.len, self.context
                ),
            ));
        }
        Ok(())
    }

    /// Feeds `tokens` (any length up to the room left, run in chunks) and returns the logits
    /// of the last position (`[vocab]`). Errors (empty input, ids outside the vocabulary, no
    /// room) leave the session unchanged.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.feed(tokens)?;
        self.download_logits()
    }

    /// Feeds one token and returns its logits (the distribution of the next token).
    pub fn decode_step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.feed(std::slice::from_ref(&token))?;
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
        self.feed(prompt)?;
        let mut tokens = Vec::with_capacity(max_new);
        loop {
            let id = self.select_greedy()?;
            if stop.contains(&id) {
                break;
            }
            tokens.push(id);
            if tokens.len() >= max_new || self.len >= self.context {
                break;
            }
            self.feed(std::slice::from_ref(&id))?;
        }
        Ok(tokens)
    }

    /// Bans the input-only ids in the logits of the last position, takes the device argmax
    /// and returns it (checked).
    fn select_greedy(&mut self) -> Result<u32> {
        let gpu = &*self.dec.gpu;
        let v = self.dec.cfg.vocab_size;
        let layout = LogitsLayout::packed(1, v);
        {
            let mut logits = self.st.logits.slice_mut(..v);
            ban(gpu, &mut logits, &layout, &self.st.banned.as_view())?;
        }
        let logits = self.st.logits.slice(..v);
        let mut next = self.st.next.slice_mut(..1);
        sample(gpu, &logits, &layout, &SamplingParams::greedy(), None, &mut next)?;
        let id = gpu.download(&self.st.next.slice(..1))?[0];
        if id < 0 || id as usize >= v {
            return Err(Error::Internal(format!(
                "the device argmax returned {id}: the logits hold NaN or +inf, or no finite value"
            )));
        }
        Ok(id as u32)
    }

    /// The logits of the last position fed.
    fn download_logits(&self) -> Result<Vec<f32>> {
        self.dec.gpu.download(&self.st.logits.slice(..self.dec.cfg.vocab_size))
    }

    /// Runs `tokens` through the decoder in chunks, appending them to sequence 0, and leaves
    /// the last position's logits in `st.logits[..V]`. Checks everything first; a failing chunk
    /// leaves the session at the last complete one.
    fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.check_ids(tokens)?;
        self.check_room(tokens.len())?;
        let n = tokens.len();
        let mut done = 0;
        while done < n {
            let m = self.chunk.min(n - done);
            let want = if done + m == n { Want::Last } else { Want::None };
            self.upload_rows(&tokens[done..done + m], self.len)?;
            let rb = match m {
                1 => &mut self.one,
                _ if m == self.chunk => {
                    self.full.as_mut().ok_or_else(|| Error::Internal("no chunk buffers".into()))?
                }
                _ => {
                    if self.tail.as_ref().is_none_or(|t| t.m != m) {
                        self.tail = None;
                        self.tail = Some(RowBufs::new(&self.dec.gpu, &self.dec.cfg, m)?);
                    }
                    self.tail.as_mut().ok_or_else(|| Error::Internal("no tail buffers".into()))?
                }
            };
            forward(self.dec, &mut self.st, rb, want)?;
            self.len += m;
            done += m;
        }
        Ok(())
    }

    /// Copies the ids and positions of `ids.len()` new rows of sequence 0 starting at absolute
    /// position `start` to the device.
    fn upload_rows(&mut self, ids: &[u32], start: usize) -> Result<()> {
        let m = ids.len();
        // Ids are < vocab ≤ 2^24 and positions < context ≤ max_position_embeddings ≤ 2^24
        // (checked by the config and by feed), so they fit an i32.
        let mut host = [0i32; 64];
        let stream = self.dec.gpu.stream();
        let mut at = 0;
        while at < m {
            let c = (m - at).min(host.len());
            for (h, &id) in host[..c].iter_mut().zip(&ids[at..at + c]) {
                *h = id as i32;
            }
            stream
                .memcpy_htod(&host[..c], &mut self.st.ids.slice_mut(at..at + c))
                .map_err(|e| driver_error("uploading token ids", e))?;
            for (j, h) in host[..c].iter_mut().enumerate() {
                *h = (start + at + j) as i32;
            }
            stream
                .memcpy_htod(&host[..c], &mut self.st.row_pos.slice_mut(at..at + c))
                .map_err(|e| driver_error("uploading positions", e))?;
            at += c;
        }
        let first = [start as i32];
        stream
            .memcpy_htod(&first[..], &mut self.st.kv_pos.slice_mut(..1))
            .map_err(|e| driver_error("uploading the KV position", e))?;
        Ok(())
    }
}

/// `outs[i] = x · ws[i]ᵀ` for weights that read the same input `x` `[m, k]`: quantized
/// weights share one quantization of `x` (the CPU quantizes the same values identically for
/// each, so the bits are the same as separate [`matmul`] calls).
fn project(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    m: usize,
    acts: &mut QuantizedActs,
    ws: &[&DeviceWeight],
    outs: &mut [CudaViewMut<'_, f32>],
) -> Result<()> {
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

/// One forward pass of `rb.m` rows of sequence 0 (ids in `st.ids`, positions in
/// `st.row_pos` and `st.kv_pos[0]`), appending their keys and values to the cache; with
/// [`Want::Last`], the last row's logits into `st.logits[..V]`. Only enqueues.
fn forward(dec: &DeviceDecoder, st: &mut State, rb: &mut RowBufs, want: Want) -> Result<()> {
    let gpu = &*dec.gpu;
    let cfg = &dec.cfg;
    let m = rb.m;
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    let eps = cfg.rms_norm_eps;
    let md = m * d;
    let positions = KvPositions { pos: &st.kv_pos, prefix_len: &st.prefix_len };
    let rope_layout = RopeLayout::packed(m, nh, nkv, hd);

    // x = embed(ids); h = rms_norm(x, input_layernorm of layer 0).
    let table = embed_table(&dec.embed)?;
    embed(gpu, &table, v, d, &st.ids.slice(..m), None, &mut st.x.slice_mut(..md), m)?;
    let first_norm = dec.layers.first().map_or(&dec.norm, |l| &l.attn_norm);
    rms_norm(gpu, &st.x.slice(..md), &first_norm.as_view(), &mut st.h.slice_mut(..md), m, d, eps)?;

    for (il, l) in dec.layers.iter().enumerate() {
        // Attention block (h holds rms_norm(x, input_layernorm)).
        {
            let (qn, kn) = (m * cfg.q_dim(), m * cfg.kv_dim());
            let mut outs = [rb.q.slice_mut(..qn), rb.k.slice_mut(..kn), rb.v.slice_mut(..kn)];
            project(gpu, &st.h.slice(..md), m, &mut st.acts, &[&l.q, &l.k, &l.v], &mut outs)?;
        }
        {
            let (mut q, mut k) = (rb.q.as_view_mut(), rb.k.as_view_mut());
            rope(gpu, &mut q, &mut k, &st.row_pos.slice(..m), &dec.rope, &rope_layout)?;
        }
        let rows = KvRows { layer: il, seq0: 0, n_seq: 1, tokens: m };
        {
            let mut cache = KvCacheMut { k: &mut st.cache_k, v: &mut st.cache_v, dims: st.dims };
            kv_store(gpu, &rb.k, &rb.v, &mut cache, 0, rows, positions)?;
        }
        let cache = KvCache { k: &st.cache_k, v: &st.cache_v, dims: st.dims };
        if m == 1 {
            kv_decode_attention(
                gpu,
                &rb.q,
                &mut rb.att,
                cache,
                None,
                nh,
                il,
                1,
                positions,
                &mut st.workspace,
            )?;
        } else {
            kv_prefill_attention(gpu, &rb.q, &mut rb.att, cache, None, nh, rows, positions)?;
        }
        matmul(gpu, &l.o, &rb.att.as_view(), m, &mut st.acts, &mut st.out.slice_mut(..md))?;
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
            project(gpu, &st.h.slice(..md), m, &mut st.acts, &[&l.gate, &l.up], &mut outs)?;
        }
        swiglu_in_place(gpu, &mut st.gate.slice_mut(..mf), &st.up.slice(..mf), m, f)?;
        matmul(gpu, &l.down, &st.gate.slice(..mf), m, &mut st.acts, &mut st.out.slice_mut(..md))?;
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

    if want == Want::Last {
        // h holds rms_norm(x, norm) for every row (per row, so the last row's bits are the
        // CPU's rms_norm of the last row alone).
        let last = st.h.slice((m - 1) * d..md);
        matmul(gpu, dec.head(), &last, 1, &mut st.acts, &mut st.logits.slice_mut(..v))?;
    }
    Ok(())
}
