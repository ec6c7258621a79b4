//! The LLaMA decode / prefill step on the GPU, except the weight matmuls and attention (issue #9):
//! embedding lookup, RMSNorm (with the fused residual add), RoPE, SwiGLU, the residual add, and
//! next-token selection (repetition penalty, banned ids, greedy and temperature / top-k / top-p
//! sampling) on the device. Kernels: `kernels/{embed,rms_norm,rope,swiglu,sampling}.cu`.
//!
//! The decode step is meant to be captured once as a CUDA graph and replayed, so everything
//! that changes per step lives in device memory: token ids ([`embed`]), positions ([`rope`]),
//! the uniform random numbers ([`sample`]), the chosen tokens, the repetition-penalty history
//! ([`observe`]). The per-step launchers only enqueue (no synchronization, no allocation; the
//! one-time set-up [`RopeTable::new`] and [`DeviceEmbedding::upload`] allocate and upload).
//! Launch shapes: one block per row (RMSNorm, up to 1024 threads), one block of 1024 threads per
//! sequence (selection), one thread per element or pair elsewhere; see each kernel's comment.
//!
//! | launcher | kernel(s) | CPU twin | numerics |
//! |---|---|---|---|
//! | [`embed`] ([`DeviceEmbedding`]) | `embed_{f32,f16,bf16,q8_0,q4_0,q4_1}` | `Weight::rows_to_f32` (+ `Input::Embeddings` rows) | bit-identical |
//! | [`rms_norm`] | `rms_norm_f32` | `llm::forward::rms_norm` | bit-identical but for the f64 sum order (see below) |
//! | [`rms_norm_add`] | `rms_norm_add_f32` | `add` then `rms_norm` | as above; the updated residual bit-identical |
//! | [`residual_add`] | `rms_norm_residual_add_f32` | `llm::forward::add` | bit-identical |
//! | [`rope`], [`rope_qkv`] ([`RopeTable`]) | `rope_f32` | `llm::rope::rotate` with `Rope::angles` | bit-identical |
//! | [`swiglu`], [`swiglu_in_place`], [`swiglu_fused`] | `swiglu_f32` | the SwiGLU loop of `llm::forward::forward` | bit-identical |
//! | [`repetition_penalty`], [`ban`] | `sampling_penalty_f32`, `sampling_ban_f32` | `Sampler::sample` | bit-identical |
//! | [`sample`] (greedy) | `sampling_argmax_f32` | `llm::sampling::argmax` | the same ids |
//! | [`sample`] (sampling) | `sampling_top_p_f32` | `Sampler::sample` given its `u` | the same ids but at ~1e-8-wide boundaries |
//! | [`observe`] | `sampling_observe` | `Sampler::observe` of the chosen id | exact |
//!
//! Numerics, in detail (the kernels run under `--fmad=false` and repeat the CPU's f32 operations
//! in the CPU's order):
//! - RMSNorm sums squares in f64 like the CPU, but in its own fixed tree (the CPU's is 8 lanes;
//!   `llm::forward::rms_norm`);
//!   the inverse norm (rounded once to f32) is therefore the CPU's unless its f64 value lies
//!   within ~1e-13 of an f32 rounding boundary (about one row in a million): such a row differs
//!   by an ulp or two, every other row is bit-identical.
//! - SwiGLU's `exp` is the CPU decoder's own (`ops::cpu::exp::exp`: e^x in f64, rounded once)
//!   reproduced operation for operation on the device, so bit-identical on any host.
//! - RoPE takes the CPU's own table (cos/sin computed in f64 on the host by `Rope::angles`,
//!   uploaded once by [`RopeTable::new`]), so the rotation is bit-identical.
//! - Top-p sampling weighs each id by round(exp(x − max) · 2^44) (u64, exact integer sums) and
//!   finds the CPU's nucleus and draw by a radix select on a key that sorts like the CPU (logit
//!   descending, id ascending) — no vocabulary sort. See `kernels/sampling.cu` for the algorithm
//!   and the exact relation to the CPU.
//! - Errors inside a graph cannot be returned: a selection writes token −1 where the CPU sampler
//!   returns an error (NaN / +inf logits, no finite logit, u outside [0, 1)); an id or position
//!   outside its range read from device memory poisons its row with NaN instead of reading out
//!   of bounds (and the sampler then writes −1).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::{bf16, f16};

use crate::backend::cuda::{launch_error, to_i32, Gpu};
use crate::llm::rope::Rope;
use crate::llm::SamplingParams;
use crate::quant::QuantType;
use crate::tensor::Weight;
use crate::{Error, Result};

/// Largest grid y / z dimension.
const GRID_YZ_MAX: usize = 65_535;

/// Checks that device buffer `what` holds at least `needed` elements.
fn need(what: &str, len: usize, needed: usize) -> Result<()> {
    if len < needed {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("at least {needed} elements"),
            found: format!("{len} elements"),
        });
    }
    Ok(())
}

/// Elements spanned by `rows` rows of `width` values `ld` apart (0 for no rows).
fn span(what: &str, rows: usize, ld: usize, width: usize) -> Result<usize> {
    if rows == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|x| x.checked_add(width))
        .ok_or_else(|| Error::invalid(what, format!("{rows} rows of stride {ld} overflow")))
}

/// Rejects a row stride shorter than the row.
fn check_ld(what: &str, ld: usize, width: usize) -> Result<()> {
    if ld < width {
        return Err(Error::invalid(
            what,
            format!("row stride {ld} is shorter than the row ({width} values)"),
        ));
    }
    Ok(())
}

fn check_grid_yz(what: &str, n: usize) -> Result<()> {
    if n > GRID_YZ_MAX {
        return Err(Error::invalid(what, format!("{n} exceeds {GRID_YZ_MAX} (one grid row each)")));
    }
    Ok(())
}

fn positive(what: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::invalid(what, "must be at least 1"));
    }
    Ok(())
}

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

fn blocks(n: usize, per: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(per))
        .map_err(|_| Error::invalid("grid", format!("{n} elements need too many blocks")))
}

// ---------------------------------------------------------------------------------------------
// RMSNorm and the residual stream.

/// Block size of the row kernels: one float4 per thread up to 1024 threads.
fn norm_threads(d: usize) -> u32 {
    (d.div_ceil(4).div_ceil(32) * 32).clamp(32, 1024) as u32
}

fn check_norm(x_len: usize, w_len: usize, out_len: usize, rows: usize, d: usize, eps: f32) -> Result<i32> {
    positive("d", d)?;
    let d_i = to_i32("d", d)?;
    let n =
        rows.checked_mul(d).ok_or_else(|| Error::invalid("rows", format!("{rows} rows of {d} overflow")))?;
    to_i32("rows", rows)?;
    need("rms_norm x", x_len, n)?;
    need("rms_norm weight", w_len, d)?;
    need("rms_norm out", out_len, n)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::invalid("eps", format!("{eps} is not a finite number ≥ 0")));
    }
    Ok(d_i)
}

/// `out = w ⊙ x / sqrt(mean(x²) + eps)` for each of `rows` rows of `d` (`x`, `out`: `[rows, d]`,
/// `w`: `[d]`). CPU twin: `llm::forward::rms_norm` (see the module doc for the numerics).
pub fn rms_norm(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let d_i = check_norm(x.len(), w.len(), out.len(), rows, d, eps)?;
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function("rms_norm_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(w).arg(out).arg(&d_i).arg(&eps);
    unsafe { b.launch(cfg((rows as u32, 1, 1), norm_threads(d))) }
        .map_err(|e| launch_error("rms_norm_f32", e))?;
    Ok(())
}

/// The residual add, then the next RMSNorm, fused: `x ← x + residual`, then
/// `out = rms_norm(x, w, eps)` (`x`, `residual`, `out`: `[rows, d]`). CPU twin: `add` then
/// `rms_norm` in `llm::forward::forward`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_add(
    gpu: &Gpu,
    x: &mut CudaViewMut<'_, f32>,
    residual: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let d_i = check_norm(x.len(), w.len(), out.len(), rows, d, eps)?;
    need("rms_norm_add residual", residual.len(), rows * d)?;
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.function("rms_norm_add_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(residual).arg(w).arg(out).arg(&d_i).arg(&eps);
    unsafe { b.launch(cfg((rows as u32, 1, 1), norm_threads(d))) }
        .map_err(|e| launch_error("rms_norm_add_f32", e))?;
    Ok(())
}

/// `x[i] ← x[i] + y[i]` for `i < n` (the residual add). CPU twin: `llm::forward::add`.
pub fn residual_add(gpu: &Gpu, x: &mut CudaViewMut<'_, f32>, y: &CudaView<'_, f32>, n: usize) -> Result<()> {
    need("residual_add x", x.len(), n)?;
    need("residual_add y", y.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let n_i = i64::try_from(n).map_err(|_| Error::invalid("n", format!("{n} is too large")))?;
    let grid = blocks(n, 1024)?.min(4096);
    let f = gpu.function("rms_norm_residual_add_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(y).arg(&n_i);
    unsafe { b.launch(cfg((grid, 1, 1), 256)) }.map_err(|e| launch_error("rms_norm_residual_add_f32", e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RoPE.

/// The CPU's RoPE angle table on the device: `cos`, `sin` `[positions, half]` f32, row `p` =
/// [`Rope::angles`]`(p)` (computed on the host in f64 and rounded once, exactly as the CPU).
#[derive(Debug)]
pub struct RopeTable {
    cos: CudaSlice<f32>,
    sin: CudaSlice<f32>,
    half: usize,
    positions: usize,
}

impl RopeTable {
    /// Computes and uploads the table of positions `0..positions` (e.g. the session context).
    pub fn new(gpu: &Gpu, rope: &Rope, positions: usize) -> Result<RopeTable> {
        let half = rope.half();
        positive("positions", positions)?;
        positive("rope half", half)?;
        let n = positions.checked_mul(half).filter(|&n| n <= i32::MAX as usize).ok_or_else(|| {
            Error::invalid("positions", format!("{positions} positions of {half} pairs are too many"))
        })?;
        let (mut cos, mut sin) = (vec![0.0f32; n], vec![0.0f32; n]);
        for p in 0..positions {
            rope.angles(p, &mut cos[p * half..(p + 1) * half], &mut sin[p * half..(p + 1) * half]);
        }
        Ok(RopeTable { cos: gpu.upload(&cos)?, sin: gpu.upload(&sin)?, half, positions })
    }

    /// `head_dim / 2`.
    pub fn half(&self) -> usize {
        self.half
    }

    /// Positions the table covers (`0..positions`).
    pub fn positions(&self) -> usize {
        self.positions
    }
}

/// Where the heads of a RoPE call are: `rows` rows; row `r` holds `n_q_heads` query heads of
/// `head_dim` at `q[r·ld_q..]` and `n_kv_heads` key heads at `k[r·ld_k..]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeLayout {
    pub rows: usize,
    pub n_q_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Row stride of `q` (≥ `n_q_heads · head_dim`).
    pub ld_q: usize,
    /// Row stride of `k` (≥ `n_kv_heads · head_dim`).
    pub ld_k: usize,
}

impl RopeLayout {
    /// Contiguous `q` `[rows, n_q_heads·head_dim]` and `k` `[rows, n_kv_heads·head_dim]`.
    pub fn packed(rows: usize, n_q_heads: usize, n_kv_heads: usize, head_dim: usize) -> RopeLayout {
        RopeLayout {
            rows,
            n_q_heads,
            n_kv_heads,
            head_dim,
            ld_q: n_q_heads * head_dim,
            ld_k: n_kv_heads * head_dim,
        }
    }
}

/// Checks a RoPE layout against a table; returns (q span, k span).
fn check_rope(l: &RopeLayout, table: &RopeTable) -> Result<(usize, usize)> {
    if l.head_dim == 0 || l.head_dim % 2 != 0 {
        return Err(Error::invalid("head_dim", format!("{} is not a positive even number", l.head_dim)));
    }
    if l.head_dim / 2 != table.half {
        return Err(Error::Shape {
            what: "RoPE table".into(),
            expected: format!("{} pairs per head (head_dim {})", l.head_dim / 2, l.head_dim),
            found: format!("{} pairs", table.half),
        });
    }
    l.n_q_heads.checked_add(l.n_kv_heads).ok_or_else(|| Error::invalid("heads", "overflow"))?;
    let qw = l.n_q_heads.checked_mul(l.head_dim).ok_or_else(|| Error::invalid("n_q_heads", "overflow"))?;
    let kw = l.n_kv_heads.checked_mul(l.head_dim).ok_or_else(|| Error::invalid("n_kv_heads", "overflow"))?;
    check_ld("ld_q", l.ld_q, qw)?;
    check_ld("ld_k", l.ld_k, kw)?;
    check_grid_yz("rows", l.rows)?;
    let pairs = l.n_q_heads.saturating_add(l.n_kv_heads).saturating_mul(table.half);
    to_i32("RoPE pairs per row", pairs)?;
    to_i32("ld_q", l.ld_q)?;
    to_i32("ld_k", l.ld_k)?;
    Ok((span("q", l.rows, l.ld_q, qw)?, span("k", l.rows, l.ld_k, kw)?))
}

#[allow(clippy::too_many_arguments)]
fn launch_rope(
    gpu: &Gpu,
    q: &mut CudaViewMut<'_, f32>,
    k: &mut CudaViewMut<'_, f32>,
    pos: &CudaView<'_, i32>,
    table: &RopeTable,
    l: &RopeLayout,
) -> Result<()> {
    let pairs = (l.n_q_heads + l.n_kv_heads) * table.half;
    if l.rows == 0 || pairs == 0 {
        return Ok(());
    }
    let f = gpu.function("rope_f32")?;
    let args =
        [l.rows, l.n_q_heads, l.n_kv_heads, table.half, table.positions, l.ld_q, l.ld_k].map(|v| v as i32);
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(q).arg(k).arg(pos).arg(&table.cos).arg(&table.sin);
    for a in &args {
        b.arg(a);
    }
    unsafe { b.launch(cfg((blocks(pairs, 256)?, l.rows as u32, 1), 256)) }
        .map_err(|e| launch_error("rope_f32", e))?;
    Ok(())
}

/// Rotates the query and key heads of `layout.rows` rows in place by the angles of their
/// positions `pos[r]` (device int32, `0 ≤ pos < table.positions()`; a position outside writes
/// NaN to that row). CPU twin: `llm::rope::rotate` per head with `Rope::angles(pos)`:
/// bit-identical.
pub fn rope(
    gpu: &Gpu,
    q: &mut CudaViewMut<'_, f32>,
    k: &mut CudaViewMut<'_, f32>,
    pos: &CudaView<'_, i32>,
    table: &RopeTable,
    layout: &RopeLayout,
) -> Result<()> {
    let (qs, ks) = check_rope(layout, table)?;
    need("rope q", q.len(), qs)?;
    need("rope k", k.len(), ks)?;
    need("rope positions", pos.len(), layout.rows)?;
    launch_rope(gpu, q, k, pos, table, layout)
}

/// [`rope`] on a fused projection output `qkv` `[rows, ld]`: row `r` holds `n_q_heads` query
/// heads, then `n_kv_heads` key heads (then anything, e.g. the values, untouched), all of
/// `head_dim`.
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv(
    gpu: &Gpu,
    qkv: &mut CudaViewMut<'_, f32>,
    pos: &CudaView<'_, i32>,
    table: &RopeTable,
    rows: usize,
    n_q_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    ld: usize,
) -> Result<()> {
    let width = n_q_heads
        .checked_add(n_kv_heads)
        .and_then(|h| h.checked_mul(head_dim))
        .ok_or_else(|| Error::invalid("heads", "overflow"))?;
    check_ld("ld", ld, width)?;
    let layout = RopeLayout { rows, n_q_heads, n_kv_heads, head_dim, ld_q: ld, ld_k: ld };
    check_rope(&layout, table)?;
    need("rope qkv", qkv.len(), span("qkv", rows, ld, width)?)?;
    need("rope positions", pos.len(), rows)?;
    if rows == 0 {
        return Ok(());
    }
    // The kernel reaches row r's query heads through the first view's pointer and its key heads
    // through the second's (each with stride ld): the split only gives the kernel two base
    // pointers; every element it touches is inside `qkv` (checked above) and belongs to exactly
    // one head. q_width ≤ width ≤ qkv.len().
    let q_width = n_q_heads * head_dim;
    let (mut q, mut k) = qkv.split_at_mut(q_width);
    launch_rope(gpu, &mut q, &mut k, pos, table, &layout)
}

// ---------------------------------------------------------------------------------------------
// SwiGLU.

#[allow(clippy::too_many_arguments)]
fn launch_swiglu(
    gpu: &Gpu,
    gate: Option<&CudaView<'_, f32>>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
    f: usize,
    ld_gate: usize,
    ld_up: usize,
    ld_out: usize,
) -> Result<()> {
    if rows == 0 || f == 0 {
        return Ok(());
    }
    let args = [rows, f, ld_gate, ld_up, ld_out].map(|v| v as i32);
    let null: u64 = 0;
    let func = gpu.function("swiglu_f32")?;
    let mut b = gpu.stream().launch_builder(&func);
    match gate {
        Some(g) => b.arg(g),
        // In place: a null gate pointer makes the kernel read gate from `out`.
        None => b.arg(&null),
    };
    b.arg(up);
    b.arg(out);
    for a in &args {
        b.arg(a);
    }
    unsafe { b.launch(cfg((blocks(f, 1024)?, rows as u32, 1), 256)) }
        .map_err(|e| launch_error("swiglu_f32", e))?;
    Ok(())
}

fn check_swiglu(rows: usize, f: usize, lds: &[(&str, usize, usize)]) -> Result<()> {
    check_grid_yz("rows", rows)?;
    to_i32("f", f)?;
    for &(what, ld, len) in lds {
        check_ld(what, ld, f)?;
        to_i32(what, ld)?;
        need(what, len, span(what, rows, ld, f)?)?;
    }
    Ok(())
}

/// `out = silu(gate) ⊙ up` (all `[rows, f]`, contiguous). CPU twin: the SwiGLU loop of
/// `llm::forward::forward` (bit-identical).
pub fn swiglu(
    gpu: &Gpu,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
    f: usize,
) -> Result<()> {
    check_swiglu(
        rows,
        f,
        &[("swiglu gate", f, gate.len()), ("swiglu up", f, up.len()), ("swiglu out", f, out.len())],
    )?;
    launch_swiglu(gpu, Some(gate), up, out, rows, f, f, f, f)
}

/// `gate ← silu(gate) ⊙ up` in place (`[rows, f]`), as the CPU does.
pub fn swiglu_in_place(
    gpu: &Gpu,
    gate: &mut CudaViewMut<'_, f32>,
    up: &CudaView<'_, f32>,
    rows: usize,
    f: usize,
) -> Result<()> {
    check_swiglu(rows, f, &[("swiglu gate", f, gate.len()), ("swiglu up", f, up.len())])?;
    launch_swiglu(gpu, None, up, gate, rows, f, f, f, f)
}

/// `out = silu(gate) ⊙ up` from a fused gate/up projection `gate_up` `[rows, 2f]` (row `r`:
/// `f` gate values, then `f` up values) into `out` `[rows, f]`.
pub fn swiglu_fused(
    gpu: &Gpu,
    gate_up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
    f: usize,
) -> Result<()> {
    let ld = f.checked_mul(2).ok_or_else(|| Error::invalid("f", "overflow"))?;
    check_swiglu(rows, f, &[("swiglu gate_up", ld, gate_up.len()), ("swiglu out", f, out.len())])?;
    if rows == 0 || f == 0 {
        return Ok(());
    }
    need("swiglu gate_up", gate_up.len(), span("gate_up", rows, ld, ld)?)?;
    let up = gate_up.slice(f..);
    launch_swiglu(gpu, Some(gate_up), &up, out, rows, f, ld, ld, f)
}

// ---------------------------------------------------------------------------------------------
// Embedding.

/// An embedding table `[vocab, d]` on the device, in any storage type a package weight can have
/// (f16/bf16 as their bit patterns; quantized in the package's structure-of-arrays layout).
#[derive(Debug)]
pub enum EmbedTable<'a> {
    F32(CudaView<'a, f32>),
    F16(CudaView<'a, u16>),
    Bf16(CudaView<'a, u16>),
    /// `values`: `vocab·d` int8 bytes; `scales`: `vocab·d/32` f16.
    Q8_0 {
        values: CudaView<'a, u8>,
        scales: CudaView<'a, u16>,
    },
    /// `values`: `vocab·d/2` bytes (ggml nibble order); `scales`: `vocab·d/32` f16.
    Q4_0 {
        values: CudaView<'a, u8>,
        scales: CudaView<'a, u16>,
    },
    /// As Q4_0, plus `mins`: `vocab·d/32` f16.
    Q4_1 {
        values: CudaView<'a, u8>,
        scales: CudaView<'a, u16>,
        mins: CudaView<'a, u16>,
    },
}

/// An embedding weight uploaded as stored (no conversion): see [`DeviceEmbedding::upload`].
#[derive(Debug)]
pub struct DeviceEmbedding {
    data: EmbedData,
    vocab: usize,
    d: usize,
}

#[derive(Debug)]
enum EmbedData {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
    Bf16(CudaSlice<u16>),
    Q8_0 { values: CudaSlice<u8>, scales: CudaSlice<u16> },
    Q4_0 { values: CudaSlice<u8>, scales: CudaSlice<u16> },
    Q4_1 { values: CudaSlice<u8>, scales: CudaSlice<u16>, mins: CudaSlice<u16> },
}

impl DeviceEmbedding {
    /// Uploads a `[vocab, d]` weight (e.g. `llm.embed_tokens.weight`) in its storage type.
    pub fn upload(gpu: &Gpu, w: &Weight<'_>) -> Result<DeviceEmbedding> {
        let shape = w.shape();
        if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
            return Err(Error::Shape {
                what: format!("embedding weight `{}`", w.name()),
                expected: "[vocab, d] with vocab, d ≥ 1".into(),
                found: format!("{shape:?}"),
            });
        }
        let (vocab, d) = (shape[0], shape[1]);
        let f16_bits = |v: &[f16]| gpu.upload(&v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>());
        let data = match w {
            Weight::F32(t) => EmbedData::F32(gpu.upload(t.data)?),
            Weight::F16(t) => EmbedData::F16(f16_bits(t.data)?),
            Weight::BF16(t) => {
                EmbedData::Bf16(gpu.upload(&t.data.iter().map(|x: &bf16| x.to_bits()).collect::<Vec<u16>>())?)
            }
            Weight::Quant(q) => {
                let (values, scales) = (gpu.upload(q.values)?, f16_bits(q.scales)?);
                match q.qtype {
                    QuantType::Q8_0 => EmbedData::Q8_0 { values, scales },
                    QuantType::Q4_0 => EmbedData::Q4_0 { values, scales },
                    QuantType::Q4_1 => EmbedData::Q4_1 { values, scales, mins: f16_bits(q.mins)? },
                }
            }
        };
        Ok(DeviceEmbedding { data, vocab, d })
    }

    /// Rows (ids).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The table, for [`embed`].
    pub fn table(&self) -> EmbedTable<'_> {
        match &self.data {
            EmbedData::F32(t) => EmbedTable::F32(t.as_view()),
            EmbedData::F16(t) => EmbedTable::F16(t.as_view()),
            EmbedData::Bf16(t) => EmbedTable::Bf16(t.as_view()),
            EmbedData::Q8_0 { values, scales } => {
                EmbedTable::Q8_0 { values: values.as_view(), scales: scales.as_view() }
            }
            EmbedData::Q4_0 { values, scales } => {
                EmbedTable::Q4_0 { values: values.as_view(), scales: scales.as_view() }
            }
            EmbedData::Q4_1 { values, scales, mins } => {
                EmbedTable::Q4_1 { values: values.as_view(), scales: scales.as_view(), mins: mins.as_view() }
            }
        }
    }
}

/// Gathers `rows` embedding rows into `out` `[rows, d]` f32: row `r` is the table row `ids[r]`
/// when `0 ≤ ids[r] < vocab`, or caller row `−ids[r] − 1` of `extra` `[n_extra, d]` when
/// `ids[r] < 0` (input embeddings such as image features, spliced in on the device), else NaN
/// (ids live in device memory and cannot be checked here). CPU twin: `Weight::rows_to_f32`
/// (bit-identical for every storage type).
#[allow(clippy::too_many_arguments)]
pub fn embed(
    gpu: &Gpu,
    table: &EmbedTable<'_>,
    vocab: usize,
    d: usize,
    ids: &CudaView<'_, i32>,
    extra: Option<(&CudaView<'_, f32>, usize)>,
    out: &mut CudaViewMut<'_, f32>,
    rows: usize,
) -> Result<()> {
    positive("vocab", vocab)?;
    positive("d", d)?;
    let (vocab_i, d_i) = (to_i32("vocab", vocab)?, to_i32("d", d)?);
    check_grid_yz("rows", rows)?;
    let numel = vocab.checked_mul(d).ok_or_else(|| Error::invalid("vocab", "vocab · d overflows"))?;
    need("embed ids", ids.len(), rows)?;
    need("embed out", out.len(), rows.saturating_mul(d))?;
    let n_extra = match extra {
        Some((e, n)) => {
            need("embed extra", e.len(), n.saturating_mul(d))?;
            to_i32("n_extra", n)?
        }
        None => 0,
    };
    let quant_blocks = |what: &str| -> Result<usize> {
        if d % 32 != 0 {
            return Err(Error::invalid("d", format!("{d} is not a multiple of 32 ({what} blocks)")));
        }
        Ok(numel / 32)
    };
    match table {
        EmbedTable::F32(t) => need("embed table", t.len(), numel)?,
        EmbedTable::F16(t) | EmbedTable::Bf16(t) => need("embed table", t.len(), numel)?,
        EmbedTable::Q8_0 { values, scales } => {
            let nb = quant_blocks("Q8_0")?;
            need("embed Q8_0 values", values.len(), numel)?;
            need("embed Q8_0 scales", scales.len(), nb)?;
        }
        EmbedTable::Q4_0 { values, scales } => {
            let nb = quant_blocks("Q4_0")?;
            need("embed Q4_0 values", values.len(), nb * 16)?;
            need("embed Q4_0 scales", scales.len(), nb)?;
        }
        EmbedTable::Q4_1 { values, scales, mins } => {
            let nb = quant_blocks("Q4_1")?;
            need("embed Q4_1 values", values.len(), nb * 16)?;
            need("embed Q4_1 scales", scales.len(), nb)?;
            need("embed Q4_1 mins", mins.len(), nb)?;
        }
    }
    if rows == 0 {
        return Ok(());
    }
    // With no extra rows the kernel never reads `extra`: a null pointer stands for it.
    let null: u64 = 0;
    let rows_i = rows as i32;
    let name = match table {
        EmbedTable::F32(_) => "embed_f32",
        EmbedTable::F16(_) => "embed_f16",
        EmbedTable::Bf16(_) => "embed_bf16",
        EmbedTable::Q8_0 { .. } => "embed_q8_0",
        EmbedTable::Q4_0 { .. } => "embed_q4_0",
        EmbedTable::Q4_1 { .. } => "embed_q4_1",
    };
    let f = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(&f);
    match table {
        EmbedTable::F32(t) => b.arg(t),
        EmbedTable::F16(t) | EmbedTable::Bf16(t) => b.arg(t),
        EmbedTable::Q8_0 { values, scales } | EmbedTable::Q4_0 { values, scales } => {
            b.arg(values).arg(scales)
        }
        EmbedTable::Q4_1 { values, scales, mins } => b.arg(values).arg(scales).arg(mins),
    };
    b.arg(ids);
    match extra {
        Some((e, _)) => b.arg(e),
        None => b.arg(&null),
    };
    b.arg(&n_extra).arg(out).arg(&rows_i).arg(&d_i).arg(&vocab_i);
    unsafe { b.launch(cfg((blocks(d, 256)?, rows as u32, 1), 256)) }.map_err(|e| launch_error(name, e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sampling.

/// Where the logits of a batch are: `n_seqs` rows of `vocab` values, `ld` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitsLayout {
    pub n_seqs: usize,
    pub vocab: usize,
    /// Row stride (≥ `vocab`).
    pub ld: usize,
}

impl LogitsLayout {
    /// Contiguous `[n_seqs, vocab]`.
    pub fn packed(n_seqs: usize, vocab: usize) -> LogitsLayout {
        LogitsLayout { n_seqs, vocab, ld: vocab }
    }

    fn check(&self, logits_len: usize) -> Result<(i32, i32)> {
        positive("vocab", self.vocab)?;
        check_ld("logits ld", self.ld, self.vocab)?;
        check_grid_yz("n_seqs", self.n_seqs)?;
        need("logits", logits_len, span("logits", self.n_seqs, self.ld, self.vocab)?)?;
        Ok((to_i32("vocab", self.vocab)?, to_i32("logits ld", self.ld)?))
    }
}

/// Largest vocabulary of [`sample`] with temperature (ids are 20-bit in its sort key).
pub const SAMPLE_VOCAB_MAX: usize = (1 << 20) - 1;

/// The next token of each sequence into `tokens[..n_seqs]` (device int32), as
/// `Sampler::sample` picks it after its penalty and ban (run [`repetition_penalty`] and [`ban`]
/// first when those are used):
/// - `params.temperature == 0`: greedy, the largest logit, the lowest id on a tie
///   (`sampling_argmax_f32`; `u` is not read and may be `None`);
/// - otherwise temperature, top-k and top-p with the uniform number `u[s]` ∈ [0, 1) of each
///   sequence (device f64; the CPU's `SplitMix64::next_f64`), `sampling_top_p_f32`.
///
/// A sequence whose logits contain NaN or +inf, or no finite value, or whose `u` is outside
/// [0, 1), gets token −1 (the CPU sampler returns an error there). `params.seed` and
/// `params.repetition_penalty` are not used here.
pub fn sample(
    gpu: &Gpu,
    logits: &CudaView<'_, f32>,
    layout: &LogitsLayout,
    params: &SamplingParams,
    u: Option<&CudaView<'_, f64>>,
    tokens: &mut CudaViewMut<'_, i32>,
) -> Result<()> {
    params.validate()?;
    let (vocab_i, ld_i) = layout.check(logits.len())?;
    need("tokens", tokens.len(), layout.n_seqs)?;
    let grid = (layout.n_seqs as u32, 1, 1);
    if params.is_greedy() {
        if layout.n_seqs == 0 {
            return Ok(());
        }
        let f = gpu.function("sampling_argmax_f32")?;
        let mut b = gpu.stream().launch_builder(&f);
        b.arg(logits).arg(&vocab_i).arg(&ld_i).arg(tokens);
        unsafe { b.launch(cfg(grid, 1024)) }.map_err(|e| launch_error("sampling_argmax_f32", e))?;
        return Ok(());
    }
    let u = u.ok_or_else(|| {
        Error::invalid("u", "sampling with a temperature needs one uniform number per sequence")
    })?;
    need("u", u.len(), layout.n_seqs)?;
    if layout.vocab > SAMPLE_VOCAB_MAX {
        return Err(Error::invalid(
            "vocab",
            format!("{} exceeds {SAMPLE_VOCAB_MAX} (the device sampler's id range)", layout.vocab),
        ));
    }
    if layout.n_seqs == 0 {
        return Ok(());
    }
    // top_k ≥ vocab means off, like the CPU; clamp so it fits an int.
    let top_k = params.top_k.min(layout.vocab) as i32;
    let f = gpu.function("sampling_top_p_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits)
        .arg(&vocab_i)
        .arg(&ld_i)
        .arg(&params.temperature)
        .arg(&top_k)
        .arg(&params.top_p)
        .arg(u)
        .arg(tokens);
    unsafe { b.launch(cfg(grid, 1024)) }.map_err(|e| launch_error("sampling_top_p_f32", e))?;
    Ok(())
}

/// The repetition penalty of `Sampler::sample`, in place: for each sequence `s` and id `j` with
/// `seen[s·seen_ld + j] != 0`, `l ← l / penalty` if `l > 0`, else `l · penalty` (bit-identical).
pub fn repetition_penalty(
    gpu: &Gpu,
    logits: &mut CudaViewMut<'_, f32>,
    layout: &LogitsLayout,
    seen: &CudaView<'_, u8>,
    seen_ld: usize,
    penalty: f32,
) -> Result<()> {
    let (vocab_i, ld_i) = layout.check(logits.len())?;
    check_ld("seen ld", seen_ld, layout.vocab)?;
    let seen_ld_i = to_i32("seen ld", seen_ld)?;
    need("seen", seen.len(), span("seen", layout.n_seqs, seen_ld, layout.vocab)?)?;
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(Error::invalid("repetition_penalty", format!("{penalty} is not a finite number > 0")));
    }
    if layout.n_seqs == 0 {
        return Ok(());
    }
    let f = gpu.function("sampling_penalty_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits).arg(seen).arg(&vocab_i).arg(&ld_i).arg(&seen_ld_i).arg(&penalty);
    unsafe { b.launch(cfg((blocks(layout.vocab, 256)?, layout.n_seqs as u32, 1), 256)) }
        .map_err(|e| launch_error("sampling_penalty_f32", e))?;
    Ok(())
}

/// Sets the logits of the banned ids `ids` (device int32; ids outside `0..vocab` are ignored,
/// like `Sampler::ban`) to −inf in every sequence.
pub fn ban(
    gpu: &Gpu,
    logits: &mut CudaViewMut<'_, f32>,
    layout: &LogitsLayout,
    ids: &CudaView<'_, i32>,
) -> Result<()> {
    let (vocab_i, ld_i) = layout.check(logits.len())?;
    let n_ids = to_i32("banned ids", ids.len())?;
    if layout.n_seqs == 0 || ids.is_empty() {
        return Ok(());
    }
    let f = gpu.function("sampling_ban_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(logits).arg(&ld_i).arg(&vocab_i).arg(ids).arg(&n_ids);
    unsafe { b.launch(cfg((blocks(ids.len(), 256)?, layout.n_seqs as u32, 1), 256)) }
        .map_err(|e| launch_error("sampling_ban_f32", e))?;
    Ok(())
}

/// Records each sequence's chosen token in its repetition-penalty history:
/// `seen[s·seen_ld + tokens[s]] ← 1` for `s < n_seqs` (tokens outside `0..vocab`, e.g. −1, are
/// skipped). CPU twin: `Sampler::observe` of the sampled id.
pub fn observe(
    gpu: &Gpu,
    seen: &mut CudaViewMut<'_, u8>,
    seen_ld: usize,
    tokens: &CudaView<'_, i32>,
    n_seqs: usize,
    vocab: usize,
) -> Result<()> {
    positive("vocab", vocab)?;
    check_ld("seen ld", seen_ld, vocab)?;
    let (seen_ld_i, n_i, vocab_i) =
        (to_i32("seen ld", seen_ld)?, to_i32("n_seqs", n_seqs)?, to_i32("vocab", vocab)?);
    need("seen", seen.len(), span("seen", n_seqs, seen_ld, vocab)?)?;
    need("tokens", tokens.len(), n_seqs)?;
    if n_seqs == 0 {
        return Ok(());
    }
    let f = gpu.function("sampling_observe")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(seen).arg(&seen_ld_i).arg(tokens).arg(&n_i).arg(&vocab_i);
    unsafe { b.launch(cfg((blocks(n_seqs, 32)?, 1, 1), 32)) }
        .map_err(|e| launch_error("sampling_observe", e))?;
    Ok(())
}
