//! CPU kernels: run-time ISA selection, work partitioning and the per-format kernels.
//!
//! * [`Isa`]: AVX2 + FMA + F16C when the CPU has them (checked once with
//!   `is_x86_feature_detected!` and cached), plus the 256-bit int8 dot product `vpdpbusd`
//!   (AVX-VNNI, or AVX512-VNNI with AVX512-VL) for the batched quantized kernel when the CPU has
//!   that too ([`Isa::Avx2Vnni`], [`Isa::Avx512Vnni`]), else the portable scalar path. All compute every output with
//!   the same operations in the same order (exact integer block sums, 8 f32 lanes, FMA, one
//!   fixed final reduction; see `matmul_f32` and `matmul_quant`), so they agree bit for bit;
//!   the parity tests check that. `MEDREGION_OPS_ISA=scalar` in the environment forces the
//!   scalar path, `MEDREGION_OPS_ISA=avx2` AVX2 without VNNI, `avx2+vnni` no AVX-512 (read once,
//!   at the first matmul).
//! * Work is split over weight rows ([`plan`]): each task owns a range of rows, computes every
//!   output of those rows for all `n` activation rows, and nothing else. One output is always
//!   computed by one task with one summation order, so results do not depend on the number of
//!   threads or on which thread ran which task.
//! * [`gemm`] (the vision encoder's many-row products) is the one exception to "rows are
//!   split over tasks": `gemm_f32` packs both operands and gives each task a block of
//!   activation rows; its per-k-block FMA chains are also independent of threads and tiling.
//! * Files: `gemm_f32` (packed GEMM), `matmul_f32` (float micro-kernel, f32), `matmul_f16` (f16/bf16 loads),
//!   `matmul_quant` (shared quantized kernel), `matmul_q8_0`, `matmul_q4` (block dot products),
//!   `matmul_dequant` (quantized weights dequantized in registers for the float kernel: the
//!   f32-activation path),
//!   `quantize_act` (int8 activations, [`MatmulScratch`]), `simd` (reductions), `threads`
//!   ([`ThreadPool`]).

pub mod exp;
mod gemm_f32;
mod matmul_dequant;
mod matmul_f16;
mod matmul_f32;
mod matmul_q4;
mod matmul_q8_0;
mod matmul_quant;
mod quantize_act;
pub(crate) mod simd;
pub mod threads;

use std::sync::OnceLock;

pub use quantize_act::MatmulScratch;
pub use threads::ThreadPool;

use crate::quant::{QuantType, QK};
use crate::tensor::Weight;
use crate::Result;
use matmul_dequant::DequantRows;
use matmul_f32::{DenseRows, WeightRows};
use matmul_quant::{QMatrix, QuantFormat};

/// The instruction set a kernel runs with (more may be added: match with a wildcard arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust (`f32::mul_add`), any CPU.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// [`Isa::Avx2`] plus AVX-VNNI's 256-bit `vpdpbusd` (VEX; Alder Lake, Sapphire Rapids,
    /// Zen 5), which the quantized kernel uses for its interleaved activation rows (1 to 8 per
    /// panel: decode, batched decode, prefill); every other kernel runs as with [`Isa::Avx2`].
    Avx2Vnni,
    /// [`Isa::Avx2Vnni`] with AVX512-VNNI (EVEX; Ice Lake and later servers, Zen 4): the same
    /// kernel with 32 vector registers instead of 16, and 512-bit vectors for 4-bit weights.
    /// Preferred when both are there (on a Sapphire Rapids VM, 6 and 8 rows of a 2048 × 2048
    /// Q4_0 or Q8_0 matrix ran 11–18 % faster than with AVX-VNNI, before the 512-bit 4-bit path).
    Avx512Vnni,
}

/// Which encoding of `vpdpbusd` the quantized kernel uses (the instruction is the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vnni {
    /// AVX-VNNI (VEX).
    Avx,
    /// AVX512-VNNI (EVEX).
    Avx512,
}

impl Isa {
    /// The best ISA this CPU supports, unless `MEDREGION_OPS_ISA` names the most it may use
    /// (`scalar`, `avx2`, `avx2+vnni`); decided once.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let forced = std::env::var("MEDREGION_OPS_ISA").unwrap_or_default().to_ascii_lowercase();
            let all = [Isa::Avx512Vnni, Isa::Avx2Vnni, Isa::Avx2, Isa::Scalar];
            let allowed = match forced.as_str() {
                "scalar" => &all[3..],
                "avx2" => &all[2..],
                "avx2+vnni" => &all[1..],
                _ => &all[..],
            };
            allowed.iter().copied().find(|i| i.available()).unwrap_or(Isa::Scalar)
        })
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Isa::Scalar => true,
                Isa::Avx2 => avx2,
                Isa::Avx2Vnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Isa::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Scalar
        }
    }

    /// Whether the AVX2 kernels run (every ISA but [`Isa::Scalar`]).
    pub fn avx2(self) -> bool {
        self != Isa::Scalar
    }

    /// The encoding of `vpdpbusd` the quantized kernel may use.
    pub(crate) fn vnni(self) -> Option<Vnni> {
        match self {
            Isa::Avx2Vnni => Some(Vnni::Avx),
            Isa::Avx512Vnni => Some(Vnni::Avx512),
            Isa::Scalar | Isa::Avx2 => None,
        }
    }

    /// `"scalar"`, `"avx2"`, `"avx2+vnni"` or `"avx512vnni"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx2Vnni => "avx2+vnni",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }
}

/// The output buffer shared by the tasks of one call.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);

// SAFETY: tasks write disjoint elements (each owns a range of weight rows, i.e. of output
// columns), and the `&mut [f32]` the pointer comes from is borrowed for the whole call.
unsafe impl Send for OutPtr {}
// SAFETY: as above: shared only to let each task write its own elements.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Writes element `i`.
    ///
    /// # Safety
    /// `i` is in bounds of the output and owned by the calling task.
    #[inline(always)]
    pub(crate) unsafe fn write(self, i: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { *self.0.add(i) = v };
    }
}

/// Bytes of quantized weights a task covers at most, so that its rows stay in L2 while every
/// 8-row activation panel passes over them (Zen 3: 512 KiB L2 per core; leave room).
const TASK_WEIGHT_BYTES: usize = 192 * 1024;

/// Tasks per thread when the weights would allow fewer, so a busy core does not hold back
/// the others (each task is claimed from a shared counter).
const TASKS_PER_THREAD: usize = 4;

/// Weight rows per task: about [`TASKS_PER_THREAD`] tasks per thread, at most `max_rows`,
/// a multiple of `align` (the micro-tile). Affects speed only, never results.
pub(crate) fn plan(rows: usize, threads: usize, max_rows: usize, align: usize) -> usize {
    let by_balance = rows.div_ceil(threads.max(1) * TASKS_PER_THREAD).max(1);
    by_balance.min(max_rows).max(1).next_multiple_of(align)
}

/// `out[i][r] = Σ_k x[i][k] · W[r][k]` with shapes already checked (`x`: `[n, k]`, `W`:
/// `[rows, k]` with consistent data, `out`: `[n, rows]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    x: &[f32],
    n: usize,
    k: usize,
    w: &Weight<'_>,
    rows: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let out = OutPtr(out.as_mut_ptr());
    match w {
        Weight::F32(d) => run_float(x, n, k, DenseRows { w: d.data, k }, rows, out, pool, isa),
        Weight::F16(d) => run_float(x, n, k, DenseRows { w: d.data, k }, rows, out, pool, isa),
        Weight::BF16(d) => run_float(x, n, k, DenseRows { w: d.data, k }, rows, out, pool, isa),
        Weight::Quant(q) => {
            let m = QMatrix { values: q.values, scales: q.scales, mins: q.mins, nb: k / QK };
            if scratch.activations() == crate::ops::Activations::F32 {
                // The float kernel over the blocks dequantized in registers (`matmul_dequant`).
                return match q.qtype {
                    QuantType::Q8_0 => {
                        run_float(x, n, k, DequantRows::<matmul_q8_0::Q8_0>::new(m), rows, out, pool, isa)
                    }
                    QuantType::Q4_0 => {
                        run_float(x, n, k, DequantRows::<matmul_q4::Q4_0>::new(m), rows, out, pool, isa)
                    }
                    QuantType::Q4_1 => {
                        run_float(x, n, k, DequantRows::<matmul_q4::Q4_1>::new(m), rows, out, pool, isa)
                    }
                };
            }
            match q.qtype {
                QuantType::Q8_0 => run_quant::<matmul_q8_0::Q8_0>(x, n, k, m, rows, out, scratch, pool, isa),
                QuantType::Q4_0 => run_quant::<matmul_q4::Q4_0>(x, n, k, m, rows, out, scratch, pool, isa),
                QuantType::Q4_1 => run_quant::<matmul_q4::Q4_1>(x, n, k, m, rows, out, scratch, pool, isa),
            }
        }
    }
}

/// [`matmul`] of several weights with the same activations (`dims[j] = (rows_j, k)`, all
/// checked by the caller, at most `ops::MATMUL_GROUP_MAX`): quantized weights of one format
/// share one quantization of `x` and one pool call; anything else runs [`matmul`] per weight.
/// The same results as [`matmul`] per weight either way.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_group(
    x: &[f32],
    n: usize,
    ws: &[&Weight<'_>],
    dims: &[(usize, usize)],
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    const MAX: usize = crate::ops::MATMUL_GROUP_MAX;
    let qtype = match ws.first() {
        Some(Weight::Quant(q)) => Some(q.qtype),
        _ => None,
    };
    // With n > 0 every weight has the same k: the caller checked each against x = [n, k].
    let k = dims.first().map_or(0, |d| d.1);
    let fused = n > 0
        && scratch.activations() == crate::ops::Activations::Int8
        && ws.len() <= MAX
        && qtype.is_some()
        && ws.iter().all(|w| matches!(w, Weight::Quant(q) if Some(q.qtype) == qtype));
    let Some(qtype) = qtype.filter(|_| fused) else {
        for ((w, out), &(rows, k)) in ws.iter().zip(outs.iter_mut()).zip(dims) {
            matmul(x, n, k, w, rows, out, scratch, pool, isa)?;
        }
        return Ok(());
    };
    let empty = QMatrix { values: &[], scales: &[], mins: &[], nb: k / QK };
    let mut ms = [empty; MAX];
    let mut rows = [0usize; MAX];
    let mut ptrs = [OutPtr(std::ptr::null_mut()); MAX];
    for (j, ((w, out), &(r, _))) in ws.iter().zip(outs.iter_mut()).zip(dims).enumerate() {
        if let Weight::Quant(q) = w {
            ms[j] = QMatrix { values: q.values, scales: q.scales, mins: q.mins, nb: k / QK };
        }
        rows[j] = r;
        ptrs[j] = OutPtr(out.as_mut_ptr());
    }
    let g = QGroup { ms: &ms[..ws.len()], rows: &rows[..ws.len()], outs: &ptrs[..ws.len()] };
    match qtype {
        QuantType::Q8_0 => run_quant_group::<matmul_q8_0::Q8_0>(x, n, k, g, scratch, pool, isa),
        QuantType::Q4_0 => run_quant_group::<matmul_q4::Q4_0>(x, n, k, g, scratch, pool, isa),
        QuantType::Q4_1 => run_quant_group::<matmul_q4::Q4_1>(x, n, k, g, scratch, pool, isa),
    }
}

/// The weights, row counts and outputs of a fused [`matmul_group`].
#[derive(Clone, Copy)]
struct QGroup<'a> {
    ms: &'a [QMatrix<'a>],
    rows: &'a [usize],
    outs: &'a [OutPtr],
}

/// [`matmul`]'s many-row twin for float weights (the packed GEMM of `gemm_f32`: a sequential
/// FMA chain per k block of 256 per output); the caller sends quantized weights to [`matmul`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    x: &[f32],
    n: usize,
    k: usize,
    w: &Weight<'_>,
    rows: usize,
    out: &mut [f32],
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    if n == 0 || rows == 0 {
        return Ok(());
    }
    if k == 0 {
        out[..n * rows].fill(0.0); // empty sums (the packed path has no k step to store them)
        return Ok(());
    }
    let o = OutPtr(out.as_mut_ptr());
    // SAFETY (all three): the caller checked x = [n, k], w = [rows, k], out = [n, rows].
    match w {
        Weight::F32(d) => unsafe { gemm_f32::gemm(x, n, k, d.data, rows, o, pool, isa) },
        Weight::F16(d) => unsafe { gemm_f32::gemm(x, n, k, d.data, rows, o, pool, isa) },
        Weight::BF16(d) => unsafe { gemm_f32::gemm(x, n, k, d.data, rows, o, pool, isa) },
        Weight::Quant(q) => Err(crate::Error::Internal(format!(
            "gemm called with quantized weight `{}` (ops::gemm sends those to matmul)",
            q.name
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_float<S: WeightRows>(
    x: &[f32],
    n: usize,
    k: usize,
    w: S,
    rows: usize,
    out: OutPtr,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    // The float kernel keeps activations in L2 and streams weight rows, so tasks need no cap.
    let per = plan(rows, pool.threads(), usize::MAX, 3);
    pool.run(rows.div_ceil(per), &|t| {
        let r0 = t * per;
        let r1 = (r0 + per).min(rows);
        // SAFETY: the caller checked x = [n, k], w = [rows, k], out = [n, rows]; task t alone
        // writes the columns r0..r1.
        unsafe { matmul_f32::float_rows(x, n, k, w, r0, r1, out, rows, isa) }
    })
}

/// Quantizes `x` (interleaved as well for batched calls, with the biased sums the VNNI
/// kernels start from, `QActs::bsum`) and runs the quantized kernel over all weight rows.
#[allow(clippy::too_many_arguments)]
fn run_quant<F: QuantFormat>(
    x: &[f32],
    n: usize,
    k: usize,
    w: QMatrix<'_>,
    rows: usize,
    out: OutPtr,
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    let g = QGroup { ms: &[w], rows: &[rows], outs: &[out] };
    run_quant_group::<F>(x, n, k, g, scratch, pool, isa)
}

/// [`run_quant`] for one or more weights of format `F` with the same activations: one
/// quantization, then every weight's row tasks (planned as for that weight alone) in one pool
/// call.
fn run_quant_group<F: QuantFormat>(
    x: &[f32],
    n: usize,
    k: usize,
    g: QGroup<'_>,
    scratch: &mut MatmulScratch,
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    const MAX: usize = crate::ops::MATMUL_GROUP_MAX;
    let interleave = isa.avx2() && n >= quantize_act::INTERLEAVE_MIN_ROWS;
    let bias = F::VNNI_BIAS_LOG2;
    let vnni_bias = (interleave && isa.vnni().is_some() && bias > 0).then_some(bias);
    // The tail kernels start their sums at the biased sums: the VNNI bias, or without VNNI
    // Q4_0's offset (the AVX2 kernel's `− 8 · Σ q`, folded in).
    let tail_bias = vnni_bias.or((interleave && F::OFFSET8).then_some(3));
    let acts = scratch.quantize(x, n, k, isa, interleave, vnni_bias, tail_bias)?;
    // Rows per task and the first task of each weight.
    let (mut per, mut first) = ([1usize; MAX], [0usize; MAX + 1]);
    for (j, (m, &rows)) in g.ms.iter().zip(g.rows).enumerate().take(MAX) {
        let row_bytes = m.nb * (F::VALUE_BYTES + 2 + if F::HAS_MIN { 2 } else { 0 });
        per[j] = plan(rows, pool.threads(), TASK_WEIGHT_BYTES / row_bytes.max(1), 4);
        first[j + 1] = first[j] + rows.div_ceil(per[j]);
    }
    let count = g.ms.len().min(MAX);
    pool.run(first[count], &|t| {
        let j = first[1..=count].iter().position(|&end| t < end).unwrap_or(0);
        let (rows, per) = (g.rows[j], per[j]);
        let r0 = (t - first[j]) * per;
        let r1 = (r0 + per).min(rows);
        // SAFETY: the caller checked each weight's arrays against [rows_j, nb · 32] and its
        // output against [n, rows_j], and x was quantized as n rows of nb blocks; task t alone
        // writes the columns r0..r1 of output j.
        unsafe { matmul_quant::quant_rows::<F>(acts, n, g.ms[j], r0, r1, g.outs[j], rows, isa) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_capped_and_balanced() {
        // 4096 Q8_0 rows of 4096 (4352 bytes): 45 rows fit the cache budget, rounded up to 48.
        assert_eq!(plan(4096, 2, TASK_WEIGHT_BYTES / 4352, 4), 48);
        // Small matrices: balance decides (576 rows, 2 threads → 8 tasks of 72).
        assert_eq!(plan(576, 2, usize::MAX, 3), 72);
        assert_eq!(plan(1, 4, usize::MAX, 4), 4);
        assert_eq!(plan(5, 1, 0, 3), 3);
    }

    #[test]
    fn detect_is_available() {
        assert!(Isa::detect().available());
        assert!(Isa::Scalar.available());
    }
}
