//! Attention on the GPU: the encoder's bidirectional self-attention (`kernels/attention.cu`) and
//! the decoder's attention over the KV cache (`kernels/kv_attention.cu`): storing new keys and
//! values, causal prefill, and decode (issue #9).
//!
//! CPU twins and layouts (the same on both sides):
//! * [`attention_encoder`] is [`crate::vision::attention`]: `q`, `k`, `v`, `out` `[B·T, D]`,
//!   head `h` in columns `h·hd..(h+1)·hd`, scale `1/√hd` computed as the CPU does. The kernel
//!   performs the CPU kernel's operations in the CPU kernel's order (tiles of 64 keys, the CPU's
//!   `exp` polynomial and `sum8` tree, fused multiply-adds exactly where the CPU fuses), so the
//!   result is **bit-identical** to `vision::attention`.
//! * The decoder functions mirror the attention step of `llm::forward` (SPEC-model.md §10.2):
//!   a cache is `[n_seqs, n_layers, capacity, n_kv_heads·hd]` f32 for keys and the same for
//!   values — the CPU's per-sequence `KvCache` (`[n_layers, capacity, kv_dim]`) with the
//!   sequences stacked — and the shared read-only prefix of a batch is one more cache with
//!   `n_seqs = 1` (the CPU's session cache in `generate_batch`). A token of sequence `s` at
//!   absolute position `p` goes to slot `p − P` of its own cache (`P` = prefix length) and
//!   attends to prefix positions `0..P` and to its own slots `0..=p − P`; query head `h` reads kv
//!   head `h / (n_heads / n_kv_heads)` (GQA). Not bit-identical to the CPU (which uses libm's
//!   `exp` and a key-at-a-time online softmax): within the tolerance of `tests/cuda_attention.rs`
//!   against an f64 reference.
//!
//! Positions live in device memory ([`KvPositions`]): `pos[s]` is the absolute position of
//! sequence `s`'s first new token and `prefix_len[0]` is `P` (0 without a prefix). A decode step
//! can therefore be captured once as a CUDA graph and replayed while the positions advance on the
//! device: the launch configuration depends only on host sizes (capacities, head counts, batch
//! size), never on the positions. The host cannot check device-resident values; the kernels
//! clamp them so no access leaves a buffer (see `kernels/kv_attention.cu`).
//!
//! Choices:
//! * f32 everywhere (the CPU's cache and activations are f32), SIMT FMA rather than tensor cores:
//!   the encoder must match the CPU to 2·10⁻⁶ and TF32/BF16 tensor-core products do not.
//! * Head widths 64 and 128 (RAD-DINO / SmolLM2 use 64, LLaMA-3-8B 128); others are
//!   [`Error::Unsupported`].
//! * Decode is split over fixed chunks of [`DECODE_CHUNK`] keys (flash-decoding): every chunk's
//!   partial softmax goes to a caller-provided workspace ([`kv_decode_workspace_len`]), then a
//!   second kernel combines the chunks of each (sequence, head) in a fixed order. The shared
//!   prefix is read once per 8 query rows of the whole batch, not once per sequence. Results do
//!   not depend on the grid (deterministic).
//! * Every launcher validates every size and buffer length first and launches nothing on error;
//!   launches are asynchronous on the [`Gpu`]'s stream.

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::backend::cuda::{launch_error, Gpu};
use crate::vision::AttentionShape;
use crate::{Error, Result};

/// Query rows per block of the encoder and prefill kernels.
const ROWS_PER_BLOCK: usize = 64;
/// Threads per block of the encoder and prefill kernels.
const ENGINE_THREADS: u32 = 256;
/// Keys per decode chunk (the fixed split of every key range; `DEC_CH` in the kernel).
pub const DECODE_CHUNK: usize = 64;
/// Query rows per decode block (`DEC_ROWS`).
const DECODE_ROWS: usize = 8;
/// Blocks the decode grid aims at (4 per SM of an H100/H200); only the speed depends on it.
const DECODE_TARGET_BLOCKS: usize = 4 * 132;
/// The largest grid y and z dimensions.
const GRID_YZ_MAX: usize = 65_535;

/// `1/√hd` in f32, exactly as the CPU computes it (`vision::attention`, `llm::forward`).
fn softmax_scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// Dynamic shared memory of the tile engine (`AttSmem<HD>::BYTES` in attention.cu).
fn engine_smem_bytes(head_dim: usize) -> u32 {
    let (qs, ks) = (ROWS_PER_BLOCK + 4, 64 + 4);
    let kv = (head_dim * ks).max(64 * head_dim);
    ((head_dim * qs + kv + 64 * qs + 5 * ROWS_PER_BLOCK) * 4) as u32
}

/// The kernel `{stem}_hd{64|128}`, or `Unsupported` for other head widths.
fn kernel_for(stem: &str, head_dim: usize) -> Result<String> {
    match head_dim {
        64 | 128 => Ok(format!("{stem}_hd{head_dim}")),
        _ => Err(Error::Unsupported(format!(
            "CUDA attention for heads of {head_dim} values (supported: 64, 128)"
        ))),
    }
}

/// Allows `bytes` of dynamic shared memory for `f` (above the 48 KiB default; every sm_80+ GPU
/// allows at least 99 KiB per block). Not a stream operation, so it may run during a capture.
fn allow_smem(gpu: &Gpu, f: &CudaFunction, name: &str, bytes: u32) -> Result<()> {
    gpu.context().bind_to_thread().map_err(|e| launch_error(name, e))?;
    f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
        .map_err(|e| launch_error(name, e))
}

fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(name, format!("{v} is too large for a CUDA kernel (max {})", i32::MAX)))
}

fn grid_dim(name: &str, v: usize, max: usize) -> Result<u32> {
    if v == 0 || v > max {
        return Err(Error::invalid(name, format!("{v} blocks: the grid takes 1..={max}")));
    }
    Ok(v as u32)
}

fn product(name: &str, parts: &[usize]) -> Result<usize> {
    parts
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::invalid(name, format!("{parts:?} overflows")))
}

/// `buf` holds exactly `expected` elements.
fn check_exact<T>(what: &str, buf: &CudaSlice<T>, expected: usize, layout: &str) -> Result<()> {
    if buf.len() != expected {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("{layout} = {expected} elements"),
            found: format!("{} elements", buf.len()),
        });
    }
    Ok(())
}

/// `buf` holds at least `needed` elements.
fn check_at_least<T>(what: &str, buf: &CudaSlice<T>, needed: usize, layout: &str) -> Result<()> {
    if buf.len() < needed {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("at least {needed} elements ({layout})"),
            found: format!("{} elements", buf.len()),
        });
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Encoder.

/// Encoder self-attention of every (sequence, head): the GPU twin of
/// [`crate::vision::attention`] with the same shapes and the same bits (module doc).
///
/// `q`, `k`, `v`, `out`: `[n_seq · n_tokens, n_heads · head_dim]` f32, row-major. `head_dim`
/// must be 64 or 128. Kernel `attention_encoder_hd{64,128}`: grid `(⌈T/64⌉, n_heads, n_seq)`,
/// 256 threads, 53.5 / 88.3 KB of dynamic shared memory.
pub fn attention_encoder(
    gpu: &Gpu,
    q: &CudaSlice<f32>,
    k: &CudaSlice<f32>,
    v: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    shape: AttentionShape,
) -> Result<()> {
    if shape.n_heads == 0 || shape.head_dim == 0 {
        return Err(Error::invalid(
            "attention shape",
            format!("{shape:?}: heads and head_dim must be positive"),
        ));
    }
    let name = kernel_for("attention_encoder", shape.head_dim)?;
    let len = product("attention shape", &[shape.n_seq, shape.n_tokens, shape.n_heads, shape.head_dim])?;
    int("attention elements", len)?;
    let layout = format!("[{} · {}, {} · {}]", shape.n_seq, shape.n_tokens, shape.n_heads, shape.head_dim);
    check_exact("attention q", q, len, &layout)?;
    check_exact("attention k", k, len, &layout)?;
    check_exact("attention v", v, len, &layout)?;
    check_exact("attention out", out, len, &layout)?;
    if len == 0 {
        return Ok(());
    }
    let grid = (
        grid_dim("attention query blocks", shape.n_tokens.div_ceil(ROWS_PER_BLOCK), i32::MAX as usize)?,
        grid_dim("attention heads", shape.n_heads, GRID_YZ_MAX)?,
        grid_dim("attention sequences", shape.n_seq, GRID_YZ_MAX)?,
    );
    let (n_tokens, n_heads) = (int("n_tokens", shape.n_tokens)?, int("n_heads", shape.n_heads)?);
    let scale = softmax_scale(shape.head_dim);
    let smem = engine_smem_bytes(shape.head_dim);
    let f = gpu.function(&name)?;
    allow_smem(gpu, &f, &name, smem)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(q).arg(k).arg(v).arg(&mut *out).arg(&scale).arg(&n_tokens).arg(&n_heads);
    // SAFETY: argument list and types match `attention_encoder_hd*` (kernels/attention.cu);
    // q, k, v, out hold exactly n_seq·T·n_heads·hd floats (checked), the grid covers exactly
    // the (query block, head, sequence) triples the kernel indexes, and the dynamic shared
    // memory is the size the kernel's plan (AttSmem<HD>) uses.
    unsafe {
        b.launch(LaunchConfig { grid_dim: grid, block_dim: (ENGINE_THREADS, 1, 1), shared_mem_bytes: smem })
    }
    .map_err(|e| launch_error(&name, e))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Decoder: KV cache.

/// Sizes of a device KV cache: keys and values each `[n_seqs, n_layers, capacity,
/// n_kv_heads · head_dim]` f32 (a prefix cache has `n_seqs == 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvDims {
    pub n_seqs: usize,
    pub n_layers: usize,
    /// Positions per sequence.
    pub capacity: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl KvDims {
    /// `n_kv_heads · head_dim`: one position's keys (or values).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Elements of the key buffer (and of the value buffer).
    pub fn elements(&self) -> Result<usize> {
        product("KV cache size", &[self.n_seqs, self.n_layers, self.capacity, self.n_kv_heads, self.head_dim])
    }

    fn check(&self, what: &str) -> Result<usize> {
        if self.n_seqs == 0
            || self.n_layers == 0
            || self.capacity == 0
            || self.n_kv_heads == 0
            || self.head_dim == 0
        {
            return Err(Error::invalid(what, format!("{self:?}: every size must be positive")));
        }
        if self.kv_dim() % 4 != 0 {
            return Err(Error::invalid(
                what,
                format!("{self:?}: n_kv_heads · head_dim must be a multiple of 4"),
            ));
        }
        let n = self.elements()?;
        // Offsets inside the kernels are 64-bit; the per-call sizes they take are `int`.
        int(&format!("{what} capacity"), self.capacity)?;
        int(&format!("{what} kv_dim"), self.kv_dim())?;
        int(&format!("{what} layers"), self.n_layers)?;
        Ok(n)
    }

    fn layout(&self) -> String {
        format!(
            "[{}, {}, {}, {} · {}]",
            self.n_seqs, self.n_layers, self.capacity, self.n_kv_heads, self.head_dim
        )
    }
}

/// A device KV cache, read by the attention kernels.
#[derive(Clone, Copy, Debug)]
pub struct KvCache<'a> {
    pub k: &'a CudaSlice<f32>,
    pub v: &'a CudaSlice<f32>,
    pub dims: KvDims,
}

impl KvCache<'_> {
    fn check(&self, what: &str) -> Result<()> {
        let n = self.dims.check(what)?;
        check_exact(&format!("{what} keys"), self.k, n, &self.dims.layout())?;
        check_exact(&format!("{what} values"), self.v, n, &self.dims.layout())
    }
}

/// A device KV cache being written by [`kv_store`].
#[derive(Debug)]
pub struct KvCacheMut<'a> {
    pub k: &'a mut CudaSlice<f32>,
    pub v: &'a mut CudaSlice<f32>,
    pub dims: KvDims,
}

/// The device-resident positions of a batch: `pos[s]` = absolute position of sequence `s`'s
/// first new token (`int[n_seqs]` of the own cache, indexed by sequence), `prefix_len[0]` = the
/// prefix length `P` (0 without a prefix). Read by the kernels when they run.
#[derive(Clone, Copy, Debug)]
pub struct KvPositions<'a> {
    pub pos: &'a CudaSlice<i32>,
    pub prefix_len: &'a CudaSlice<i32>,
}

impl KvPositions<'_> {
    /// `pos` covers sequences `0..n_seq`, `prefix_len` has its value.
    fn check(&self, n_seq: usize) -> Result<()> {
        check_at_least("KV positions `pos`", self.pos, n_seq, "one per sequence, indexed by sequence")?;
        check_at_least("KV positions `prefix_len`", self.prefix_len, 1, "the prefix length")
    }
}

/// The new rows of a store or prefill: `tokens` consecutive tokens of each sequence
/// `seq0 .. seq0 + n_seq` (rows sequence-major), at layer `layer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvRows {
    pub layer: usize,
    pub seq0: usize,
    pub n_seq: usize,
    pub tokens: usize,
}

impl KvRows {
    fn check(&self, dims: &KvDims) -> Result<usize> {
        if self.layer >= dims.n_layers {
            return Err(Error::invalid(
                "layer",
                format!("{} is not below n_layers = {}", self.layer, dims.n_layers),
            ));
        }
        if self.seq0.checked_add(self.n_seq).is_none_or(|end| end > dims.n_seqs) {
            return Err(Error::invalid(
                "sequences",
                format!(
                    "seq0 {} + n_seq {} exceeds the cache's {} sequences",
                    self.seq0, self.n_seq, dims.n_seqs
                ),
            ));
        }
        if self.tokens > dims.capacity {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "{} new tokens per sequence exceed the capacity of {} positions",
                    self.tokens, dims.capacity
                ),
            ));
        }
        let rows = product("KV rows", &[self.n_seq, self.tokens])?;
        int("KV rows", rows)?;
        Ok(rows)
    }
}

/// The prefix pointers, its capacity and its checks: `(k, v, capacity)`; without a prefix the
/// own cache's buffers stand in (never read: capacity 0).
fn prefix_args<'a>(
    cache: &KvCache<'a>,
    prefix: Option<&KvCache<'a>>,
) -> Result<(&'a CudaSlice<f32>, &'a CudaSlice<f32>, usize)> {
    match prefix {
        None => Ok((cache.k, cache.v, 0)),
        Some(p) => {
            p.check("prefix KV cache")?;
            let (a, b) = (&p.dims, &cache.dims);
            if a.n_seqs != 1
                || a.n_layers != b.n_layers
                || a.n_kv_heads != b.n_kv_heads
                || a.head_dim != b.head_dim
            {
                return Err(Error::Shape {
                    what: "prefix KV cache".into(),
                    expected: format!("[1, {}, any capacity, {} · {}]", b.n_layers, b.n_kv_heads, b.head_dim),
                    found: a.layout(),
                });
            }
            Ok((p.k, p.v, a.capacity))
        }
    }
}

/// Query heads per kv head, checked.
fn gqa_group(n_heads: usize, dims: &KvDims) -> Result<usize> {
    if n_heads == 0 || n_heads % dims.n_kv_heads != 0 {
        return Err(Error::invalid(
            "n_heads",
            format!("{n_heads} query heads is not a positive multiple of the {} kv heads", dims.n_kv_heads),
        ));
    }
    Ok(n_heads / dims.n_kv_heads)
}

/// Writes the new keys and values `k_new`, `v_new` (`[n_seq · tokens, n_kv_heads · head_dim]`,
/// after RoPE, as `llm::forward` stores them) into `cache` at layer `rows.layer`: row `t` of
/// sequence `s` goes to slot `pos[s] − P + t` (module doc; `P` = `prefix_len[0]` clamped to
/// `prefix_capacity`, 0 without a prefix). A bit-exact copy; slots outside the cache are
/// skipped. Kernel `kv_attention_store`: grid `(n_seq · tokens)`, 128 threads.
pub fn kv_store(
    gpu: &Gpu,
    k_new: &CudaSlice<f32>,
    v_new: &CudaSlice<f32>,
    cache: &mut KvCacheMut<'_>,
    prefix_capacity: usize,
    rows: KvRows,
    positions: KvPositions<'_>,
) -> Result<()> {
    let dims = cache.dims;
    let n = dims.check("KV cache")?;
    check_exact("KV cache keys", cache.k, n, &dims.layout())?;
    check_exact("KV cache values", cache.v, n, &dims.layout())?;
    let n_rows = rows.check(&dims)?;
    let layout = format!("[{} · {}, {}]", rows.n_seq, rows.tokens, dims.kv_dim());
    let len = product("new keys", &[n_rows, dims.kv_dim()])?;
    check_exact("new keys", k_new, len, &layout)?;
    check_exact("new values", v_new, len, &layout)?;
    positions.check(rows.seq0 + rows.n_seq)?;
    let pcap = int("prefix capacity", prefix_capacity)?;
    if n_rows == 0 {
        return Ok(());
    }
    let name = "kv_attention_store";
    let args = [
        int("tokens", rows.tokens)?,
        int("seq0", rows.seq0)?,
        int("kv_dim", dims.kv_dim())?,
        int("n_layers", dims.n_layers)?,
        int("layer", rows.layer)?,
        int("capacity", dims.capacity)?,
        pcap,
    ];
    let f = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(k_new)
        .arg(v_new)
        .arg(&mut *cache.k)
        .arg(&mut *cache.v)
        .arg(positions.pos)
        .arg(positions.prefix_len);
    for a in &args {
        b.arg(a);
    }
    // SAFETY: arguments match `kv_attention_store`; the new rows hold n_rows·kv_dim floats, the
    // caches n_seqs·n_layers·capacity·kv_dim (checked), sequences seq0..seq0+n_seq exist and have
    // a `pos` entry, `prefix_len` has one; kv_dim is a multiple of 4 (float4 copies) and device
    // allocations are 256-byte aligned; the kernel skips slots outside [0, capacity).
    unsafe {
        b.launch(LaunchConfig {
            grid_dim: (n_rows as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    .map_err(|e| launch_error(name, e))?;
    Ok(())
}

/// Causal attention of `rows.tokens` new tokens of each sequence `rows.seq0..+rows.n_seq`
/// (`q`, `out`: `[n_seq · tokens, n_heads · head_dim]`) over the shared `prefix` (if any) and
/// each sequence's own cache, once [`kv_store`] has written the new keys and values: token `t`
/// of sequence `s` (absolute position `pos[s] + t`) sees every prefix position and its own slots
/// `0..=pos[s] − P + t`. GQA: the `n_heads / n_kv_heads` query heads of a kv head share its key
/// tiles. Kernel `kv_attention_prefill_hd{64,128}`: grid `(⌈tokens·group/64⌉, n_kv_heads,
/// n_seq)`, 256 threads, the encoder's dynamic shared memory.
#[allow(clippy::too_many_arguments)]
pub fn kv_prefill_attention(
    gpu: &Gpu,
    q: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    cache: KvCache<'_>,
    prefix: Option<KvCache<'_>>,
    n_heads: usize,
    rows: KvRows,
    positions: KvPositions<'_>,
) -> Result<()> {
    cache.check("KV cache")?;
    let dims = cache.dims;
    let name = kernel_for("kv_attention_prefill", dims.head_dim)?;
    let (pk, pv, pcap) = prefix_args(&cache, prefix.as_ref())?;
    let group = gqa_group(n_heads, &dims)?;
    let n_rows = rows.check(&dims)?;
    let len = product("queries", &[n_rows, n_heads, dims.head_dim])?;
    int("query elements", len)?;
    let layout = format!("[{} · {}, {} · {}]", rows.n_seq, rows.tokens, n_heads, dims.head_dim);
    check_exact("prefill q", q, len, &layout)?;
    check_exact("prefill out", out, len, &layout)?;
    positions.check(rows.seq0 + rows.n_seq)?;
    if n_rows == 0 {
        return Ok(());
    }
    let pairs = product("prefill rows", &[rows.tokens, group])?;
    int("prefill rows", pairs)?;
    let grid = (
        grid_dim("prefill row blocks", pairs.div_ceil(ROWS_PER_BLOCK), i32::MAX as usize)?,
        grid_dim("prefill kv heads", dims.n_kv_heads, GRID_YZ_MAX)?,
        grid_dim("prefill sequences", rows.n_seq, GRID_YZ_MAX)?,
    );
    let scale = softmax_scale(dims.head_dim);
    let args = [
        int("tokens", rows.tokens)?,
        int("seq0", rows.seq0)?,
        int("n_heads", n_heads)?,
        int("n_kv_heads", dims.n_kv_heads)?,
        int("n_layers", dims.n_layers)?,
        int("layer", rows.layer)?,
        int("capacity", dims.capacity)?,
        int("prefix capacity", pcap)?,
    ];
    let smem = engine_smem_bytes(dims.head_dim);
    let f = gpu.function(&name)?;
    allow_smem(gpu, &f, &name, smem)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(q).arg(&mut *out).arg(cache.k).arg(cache.v).arg(pk).arg(pv);
    b.arg(positions.pos).arg(positions.prefix_len).arg(&scale);
    for a in &args {
        b.arg(a);
    }
    // SAFETY: arguments match `kv_attention_prefill_hd*`; q and out hold n_seq·tokens·n_heads·hd
    // floats, the caches their full [n_seqs, n_layers, capacity, kv_dim] (checked; the prefix has
    // the same layers and kv heads), n_heads is a multiple of n_kv_heads, the grid is the one the
    // kernel indexes, the kernel clamps device positions to the caches, and the dynamic shared
    // memory matches its plan.
    unsafe {
        b.launch(LaunchConfig { grid_dim: grid, block_dim: (ENGINE_THREADS, 1, 1), shared_mem_bytes: smem })
    }
    .map_err(|e| launch_error(&name, e))?;
    Ok(())
}

/// Chunk slots of a decode record row: (prefix chunks, own chunks).
fn decode_slots(cache: &KvDims, prefix_capacity: usize) -> (usize, usize) {
    (prefix_capacity.div_ceil(DECODE_CHUNK), cache.capacity.div_ceil(DECODE_CHUNK))
}

/// Floats of the workspace [`kv_decode_attention`] needs for `n_seq` sequences and `n_heads`
/// query heads with these caches: `n_seq · n_heads · (⌈prefix capacity/64⌉ + ⌈capacity/64⌉) ·
/// (head_dim + 4)`. Allocate it once (it does not depend on the positions).
pub fn kv_decode_workspace_len(
    cache: &KvDims,
    prefix: Option<&KvDims>,
    n_seq: usize,
    n_heads: usize,
) -> Result<usize> {
    let (npc, noc) = decode_slots(cache, prefix.map_or(0, |p| p.capacity));
    product("decode workspace", &[n_seq, n_heads, npc + noc, cache.head_dim + 4])
}

/// Decode attention: one new token for each sequence `0..n_seq` of `cache` (`q`, `out`:
/// `[n_seq, n_heads · head_dim]`, row `s` = sequence `s` at absolute position `pos[s]`) over the
/// shared `prefix` (if any) and its own slots `0..=pos[s] − P`, once [`kv_store`] has written the
/// token's key and value. Split over chunks of [`DECODE_CHUNK`] keys (kernel
/// `kv_attention_decode_hd{64,128}`: grid `(workers, ⌈n_seq·group/8⌉ + n_seq·⌈group/8⌉,
/// n_kv_heads)`, 128 threads), then combined in a fixed order (`kv_attention_decode_combine`:
/// grid `(n_heads, n_seq)`, 32 threads). `workspace` holds at least
/// [`kv_decode_workspace_len`] floats. The launch depends only on host sizes, so the two
/// launches can be captured in a CUDA graph and replayed as the positions advance.
#[allow(clippy::too_many_arguments)]
pub fn kv_decode_attention(
    gpu: &Gpu,
    q: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    cache: KvCache<'_>,
    prefix: Option<KvCache<'_>>,
    n_heads: usize,
    layer: usize,
    n_seq: usize,
    positions: KvPositions<'_>,
    workspace: &mut CudaSlice<f32>,
) -> Result<()> {
    cache.check("KV cache")?;
    let dims = cache.dims;
    let name = kernel_for("kv_attention_decode", dims.head_dim)?;
    let (pk, pv, pcap) = prefix_args(&cache, prefix.as_ref())?;
    let group = gqa_group(n_heads, &dims)?;
    KvRows { layer, seq0: 0, n_seq, tokens: 1 }.check(&dims)?;
    let len = product("queries", &[n_seq, n_heads, dims.head_dim])?;
    int("query elements", len)?;
    let layout = format!("[{n_seq}, {n_heads} · {}]", dims.head_dim);
    check_exact("decode q", q, len, &layout)?;
    check_exact("decode out", out, len, &layout)?;
    positions.check(n_seq)?;
    let ws_len = kv_decode_workspace_len(&dims, prefix.as_ref().map(|p| &p.dims), n_seq, n_heads)?;
    check_at_least("decode workspace", workspace, ws_len, "see kv_decode_workspace_len")?;
    if n_seq == 0 {
        return Ok(());
    }
    let (npc, noc) = decode_slots(&dims, pcap);
    let items = n_seq * group.div_ceil(DECODE_ROWS) + (n_seq * group).div_ceil(DECODE_ROWS);
    let busy = items * dims.n_kv_heads;
    let workers = DECODE_TARGET_BLOCKS.div_ceil(busy).clamp(1, npc.max(noc));
    let grid = (
        workers as u32,
        grid_dim("decode items", items, GRID_YZ_MAX)?,
        grid_dim("decode kv heads", dims.n_kv_heads, GRID_YZ_MAX)?,
    );
    let scale = softmax_scale(dims.head_dim);
    let (n_seq_i, n_heads_i, cap, pcap_i) = (
        int("n_seq", n_seq)?,
        int("n_heads", n_heads)?,
        int("capacity", dims.capacity)?,
        int("prefix capacity", pcap)?,
    );
    let (npc_i, noc_i) = (int("prefix chunks", npc)?, int("chunks", noc)?);
    let args = [
        n_seq_i,
        n_heads_i,
        int("n_kv_heads", dims.n_kv_heads)?,
        int("n_layers", dims.n_layers)?,
        int("layer", layer)?,
        cap,
        pcap_i,
        npc_i,
        noc_i,
    ];
    let f = gpu.function(&name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(q).arg(cache.k).arg(cache.v).arg(pk).arg(pv).arg(positions.pos).arg(positions.prefix_len);
    b.arg(&mut *workspace).arg(&scale);
    for a in &args {
        b.arg(a);
    }
    // SAFETY: arguments match `kv_attention_decode_hd*`; q holds n_seq·n_heads·hd floats, the
    // caches their full layouts (checked; sequences 0..n_seq exist, each with a `pos` entry),
    // the workspace the n_seq·n_heads·(npc + noc) records of hd + 4 floats the kernel indexes;
    // the kernel clamps device positions, so chunk indices stay below npc and noc.
    unsafe { b.launch(LaunchConfig { grid_dim: grid, block_dim: (128, 1, 1), shared_mem_bytes: 0 }) }
        .map_err(|e| launch_error(&name, e))?;

    let combine = "kv_attention_decode_combine";
    let hd = int("head_dim", dims.head_dim)?;
    let f = gpu.function(combine)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(&*workspace).arg(&mut *out).arg(positions.pos).arg(positions.prefix_len);
    b.arg(&n_heads_i).arg(&hd).arg(&cap).arg(&pcap_i).arg(&npc_i).arg(&noc_i);
    // SAFETY: arguments match `kv_attention_decode_combine`; the workspace and out sizes were
    // checked above; head_dim is 64 or 128 (a multiple of 32, at most 128); the grid is
    // (n_heads, n_seq) and the kernel reads only records of chunks that hold keys, which the
    // partial pass just wrote (same stream, so in order).
    unsafe {
        b.launch(LaunchConfig {
            grid_dim: (
                grid_dim("decode heads", n_heads, i32::MAX as usize)?,
                grid_dim("decode sequences", n_seq, GRID_YZ_MAX)?,
                1,
            ),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    .map_err(|e| launch_error(combine, e))?;
    Ok(())
}
