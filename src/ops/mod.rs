//! Operators: the matrix product of activations with model weights of every storage type.
//!
//! ```text
//! out[i][r] = Σ_k x[i][k] · W[r][k]      x: [n, k] f32, W: [rows, k] (any Weight), out: [n, rows]
//! ```
//!
//! One entry point ([`matmul`]) dispatches on the weight's type (DESIGN.md §4: quantization is
//! a property of the weight): f32, f16, bf16 (f32 FMA after an exact conversion in registers)
//! and Q8_0 / Q4_0 / Q4_1 (integer block dot products against activations quantized to int8
//! per block of 32, scaled in f32 — llama.cpp's approach, see `cpu::matmul_quant`; or, with
//! [`Activations::F32`] set on the scratch, f32 activations against the blocks dequantized in
//! registers, `cpu::matmul_dequant`: the bits of the dequantized f32 matrix). `n = 1` is
//! decode, `n = 2..=8` batched decode (each weight row is read once for all rows), larger `n`
//! prefill (cache-tiled). The same code serves all three.
//!
//! [`gemm`] is the second entry point, for the vision encoder's products of thousands of rows:
//! a packed outer-product GEMM (BLIS-style 6 × 16 micro-tiles) for float weights, about 1.1×
//! `matmul`'s speed there; its outputs are summed in k blocks of 256 rather than in 8 lanes,
//! so a caller uses one entry point or the other for a given product, never both.
//!
//! * [`reference`] is the oracle (plain loops, f64); [`tolerance`] is the one table of how far
//!   each weight type may be from it; `tests/ops_matmul.rs` checks every path against both.
//! * Results are bit-identical across thread counts, across AVX2 and the scalar fallback, and
//!   between a batch of rows and the same rows one at a time.
//! * Decode allocates nothing: [`matmul_into`] takes the activation scratch from the caller;
//!   [`matmul`] keeps one per thread that only grows (allocation on the first, largest use).
//!   With [`Activations::F32`] and more than 8 rows (prefill), each thread also keeps one
//!   dequantized weight micro-panel that grows the same way; up to 8 rows never touch it.
//! * [`bench_report`] measures the kernels against the machine's read bandwidth and FMA peak.

mod bench;
pub mod cpu;
pub mod reference;
pub mod tolerance;

use std::cell::RefCell;

pub use bench::{
    bench_report, machine_int8_peak, machine_read_bandwidth, BenchOptions, BenchReport, Int8Peak,
};
pub use cpu::{Isa, MatmulScratch, ThreadPool};

use crate::quant::QK;
use crate::tensor::{shape_string, Weight};
use crate::{Error, Result};

/// How activations meet quantized (Q8_0 / Q4_0 / Q4_1) weights in a product; float weights
/// always take f32 activations. Set per scratch ([`MatmulScratch::set_activations`]); the
/// decoder takes it from `llm::SessionOptions::activations`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activations {
    /// Activations quantized to int8 per block of 32, exact integer block products scaled in
    /// f32: llama.cpp's scheme and the fast path (`cpu::matmul_quant`). Each product's
    /// activation rounding costs ~0.4 % relative error ([`tolerance`]).
    #[default]
    Int8,
    /// f32 activations against the weights dequantized in registers, f32 FMA: the bits of the
    /// same product on the dequantized f32 matrix (`cpu::matmul_dequant`), so a decoder
    /// computes what the dequantized model computes. Slower than [`Activations::Int8`]: SmolLM2
    /// Q4_1 decodes and prefills 2–3× slower (README, "The decoder").
    F32,
}

impl Activations {
    /// `"int8"` or `"f32"`.
    pub fn name(self) -> &'static str {
        match self {
            Activations::Int8 => "int8",
            Activations::F32 => "f32",
        }
    }

    /// The inverse of [`Activations::name`].
    pub fn parse(s: &str) -> Option<Activations> {
        match s {
            "int8" => Some(Activations::Int8),
            "f32" => Some(Activations::F32),
            _ => None,
        }
    }
}

/// `out[i][r] = Σ_k x[i][k] · W[r][k]` for `x` `[n, k]` row-major, `W` `[rows, k]` of any
/// weight type, `out` `[n, rows]`; f32 accumulation. Quantized weights quantize `x` to int8
/// per block of 32 first (error bounds in [`tolerance`]).
///
/// The activation scratch for quantized weights lives in a per-thread buffer that grows to the
/// largest `n · k` seen, so repeated calls (a decode loop) allocate nothing after the first.
/// Shape mismatches are [`Error::Shape`].
pub fn matmul(x: &[f32], n: usize, w: &Weight<'_>, out: &mut [f32], pool: &ThreadPool) -> Result<()> {
    thread_local! {
        static SCRATCH: RefCell<MatmulScratch> = const { RefCell::new(MatmulScratch::new()) };
    }
    let (rows, k) = check(x, n, w, out)?;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if matches!(w, Weight::Quant(_)) {
                scratch.reserve(n, k)?;
            }
            cpu::matmul(x, n, k, w, rows, out, &mut scratch, pool, Isa::detect())
        }
        // Only reachable if a matmul task calls matmul on the same thread: use a fresh one.
        Err(_) => {
            let mut scratch = MatmulScratch::with_capacity(n, k)?;
            cpu::matmul(x, n, k, w, rows, out, &mut scratch, pool, Isa::detect())
        }
    })
}

/// [`matmul`] for many activation rows (the vision encoder's linear layers, `n` in the
/// thousands): a packed outer-product GEMM (`cpu::gemm_f32`) for f32/f16/bf16 weights, where
/// each output is a sequential FMA chain per k block of 256, the blocks added in order.
/// Results are bit-identical across thread counts, ISAs and batch composition, like
/// [`matmul`]'s, but they round differently from [`matmul`]'s 8-lane sums, so a caller uses one
/// or the other for a given product. Quantized weights are [`matmul`] itself (with its
/// per-thread activation scratch).
pub fn gemm(x: &[f32], n: usize, w: &Weight<'_>, out: &mut [f32], pool: &ThreadPool) -> Result<()> {
    if matches!(w, Weight::Quant(_)) {
        return matmul(x, n, w, out, pool);
    }
    gemm_with_isa(x, n, w, out, pool, Isa::detect())
}

/// [`gemm`] on a chosen ISA (tests compare the AVX2 and scalar paths with it). An ISA this CPU
/// lacks is [`Error::Unsupported`].
#[doc(hidden)]
pub fn gemm_with_isa(
    x: &[f32],
    n: usize,
    w: &Weight<'_>,
    out: &mut [f32],
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    if !isa.available() {
        return Err(Error::Unsupported(format!("{} kernels on this CPU", isa.name())));
    }
    let (rows, k) = check(x, n, w, out)?;
    if matches!(w, Weight::Quant(_)) {
        let mut scratch = MatmulScratch::with_capacity(n, k)?;
        return cpu::matmul(x, n, k, w, rows, out, &mut scratch, pool, isa);
    }
    cpu::gemm(x, n, k, w, rows, out, pool, isa)
}

/// [`matmul`] with a caller-owned activation scratch: never allocates. Quantized weights need
/// `scratch.capacity() >= n · k` (see [`MatmulScratch::with_capacity`]), else
/// [`Error::BufferTooSmall`]; float weights ignore it.
pub fn matmul_into(
    x: &[f32],
    n: usize,
    w: &Weight<'_>,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
) -> Result<()> {
    matmul_with_isa(x, n, w, out, scratch, pool, Isa::detect())
}

/// Most weights [`matmul_group_into`] runs in one pool call (the attention's Q, K and V).
pub const MATMUL_GROUP_MAX: usize = 4;

/// Several products of the same activations, `out_j = x · W_jᵀ` for each weight `ws[j]` and
/// output `outs[j]` (`[n, rows_j]`): the attention's Q, K and V, the MLP's gate and up. The
/// results are [`matmul_into`]'s for each weight, bit for bit. When the weights are all
/// quantized in one format and there are at most [`MATMUL_GROUP_MAX`], the activations are
/// quantized once and the tasks of all the products run in one pool call, which saves a
/// quantization and a fork/join per extra weight (a decode step issues hundreds of small
/// products); otherwise the products run one after another. Never allocates; the scratch
/// contract is [`matmul_into`]'s. Every weight and output is checked before anything is
/// computed.
pub fn matmul_group_into(
    x: &[f32],
    n: usize,
    ws: &[&Weight<'_>],
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
) -> Result<()> {
    if ws.len() != outs.len() {
        return Err(Error::invalid(
            "outs",
            format!("{} outputs for {} weights (one each)", outs.len(), ws.len()),
        ));
    }
    let mut dims = [(0usize, 0usize); MATMUL_GROUP_MAX];
    for (j, (w, out)) in ws.iter().zip(outs.iter()).enumerate() {
        let d = check(x, n, w, out)?;
        if let Some(slot) = dims.get_mut(j) {
            *slot = d;
        }
    }
    let isa = Isa::detect();
    if ws.len() > MATMUL_GROUP_MAX {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (rows, k) = check(x, n, w, out)?;
            cpu::matmul(x, n, k, w, rows, out, scratch, pool, isa)?;
        }
        return Ok(());
    }
    cpu::matmul_group(x, n, ws, &dims[..ws.len()], outs, scratch, pool, isa)
}

/// [`matmul_into`] on a chosen ISA (tests compare the AVX2 and scalar paths with it). An ISA
/// this CPU lacks is [`Error::Unsupported`].
#[doc(hidden)]
pub fn matmul_with_isa(
    x: &[f32],
    n: usize,
    w: &Weight<'_>,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    if !isa.available() {
        return Err(Error::Unsupported(format!("{} kernels on this CPU", isa.name())));
    }
    let (rows, k) = check(x, n, w, out)?;
    cpu::matmul(x, n, k, w, rows, out, scratch, pool, isa)
}

/// Checks `x` `[n, k]`, `W` `[rows, k]` (and its data arrays), `out` `[n, rows]`; returns
/// `(rows, k)`.
pub(crate) fn check(x: &[f32], n: usize, w: &Weight<'_>, out: &[f32]) -> Result<(usize, usize)> {
    let name = w.name();
    let shape = w.shape();
    let &[rows, k] = shape else {
        return Err(Error::Shape {
            what: format!("matmul weight `{name}`"),
            expected: "a 2-D weight [rows, k]".into(),
            found: shape_string(shape),
        });
    };
    let shape_err = |what: String, expected: String, found: usize| Error::Shape {
        what,
        expected,
        found: found.to_string(),
    };
    let numel = rows
        .checked_mul(k)
        .ok_or_else(|| Error::invalid("weight", format!("`{name}` {} overflows", shape_string(shape))))?;
    let data_len = |len: usize| -> Result<()> {
        if len != numel {
            return Err(shape_err(
                format!("data of weight `{name}` {}", shape_string(shape)),
                format!("{numel} values"),
                len,
            ));
        }
        Ok(())
    };
    match w {
        Weight::F32(d) => data_len(d.data.len())?,
        Weight::F16(d) => data_len(d.data.len())?,
        Weight::BF16(d) => data_len(d.data.len())?,
        Weight::Quant(q) => {
            if k % QK != 0 {
                return Err(shape_err(
                    format!("columns of {} weight `{name}`", q.qtype),
                    format!("a multiple of {QK}"),
                    k,
                ));
            }
            let blocks = numel / QK;
            let value_bytes = blocks * q.qtype.value_bytes_per_block();
            if q.values.len() != value_bytes {
                return Err(shape_err(
                    format!("{} values of `{name}` (bytes)", q.qtype),
                    value_bytes.to_string(),
                    q.values.len(),
                ));
            }
            if q.scales.len() != blocks {
                return Err(shape_err(
                    format!("{} scales of `{name}`", q.qtype),
                    blocks.to_string(),
                    q.scales.len(),
                ));
            }
            if q.qtype.has_mins() && q.mins.len() != blocks {
                return Err(shape_err(
                    format!("{} mins of `{name}`", q.qtype),
                    blocks.to_string(),
                    q.mins.len(),
                ));
            }
        }
    }
    let x_len =
        n.checked_mul(k).ok_or_else(|| Error::invalid("n", format!("{n} rows of {k} overflow usize")))?;
    if x.len() != x_len {
        return Err(shape_err(
            format!("matmul input for `{name}`"),
            format!("[{n}, {k}] = {x_len} values"),
            x.len(),
        ));
    }
    let out_len = n
        .checked_mul(rows)
        .ok_or_else(|| Error::invalid("n", format!("{n} rows of {rows} overflow usize")))?;
    if out.len() != out_len {
        return Err(shape_err(
            format!("matmul output for `{name}`"),
            format!("[{n}, {rows}] = {out_len} values"),
            out.len(),
        ));
    }
    Ok((rows, k))
}
