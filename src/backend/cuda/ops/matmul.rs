//! The decoder's weight matmuls on the GPU (issue #9): `out[i][r] = Σ_k x[i][k] · W[r][k]` for
//! `x` `[n, k]` f32 and a weight `W` `[rows, k]` of any [`WeightType`], each weight read from
//! device memory once for up to 8 activation rows (the six regions decode together).
//! Kernels: `kernels/matmul_quant.cu`, `kernels/matmul_dense.cu`.
//!
//! | launcher | kernel(s) | CPU twin | numerics |
//! |---|---|---|---|
//! | [`quantize_act`] | `matmul_quant_quantize_act` | `ops::cpu::quantize_act` (`quantize_block_scalar`) | bit-identical (int8 values, f32 scales, i32 sums) |
//! | [`matmul_quant`] | `matmul_quant_{q8_0,q4_0,q4_1}_n{1..8}` | [`crate::ops::matmul`] (`ops::cpu::matmul_quant`) | bit-identical |
//! | [`matmul_dense`] | `matmul_dense_{f32,f16,bf16}_n{1..8}` | [`crate::ops::matmul`] (`ops::cpu::matmul_f32`) | bit-identical |
//! | [`matmul`] ([`DeviceWeight`]) | the above | [`crate::ops::matmul`] | bit-identical |
//! | [`dequantize`] | `matmul_quant_dequantize_{q8_0,q4_0,q4_1}_{f16,bf16}` | `quant::dequantize`, then `f16`/`bf16::from_f32` | bit-identical |
//!
//! Why bit-identical, and how: the CPU defines every output as 8 lane accumulators, lane `l`
//! taking blocks `8g + l` (quantized: `fma(d_w · d_x, S_b, acc)` with the exact integer block sum
//! `S_b`) or elements `8c + l` (float: `fma(x, w, acc)`) in order, then one fixed horizontal sum
//! (`hsum8`). The kernels give each (weight row, lane) to one thread, which runs that lane's
//! chain in the same order with the same f32 operations (`--fmad=false`, explicit `fmaf`), and
//! join the 8 lanes with a shuffle butterfly in `hsum8`'s order. Integer block sums (`__dp4a`)
//! are exact in any order. So a GPU decode step gives the CPU's logits bit for bit, and a batch
//! of rows gives the same bits as the rows one at a time.
//!
//! Choices:
//! - `n > 8` is cut into launches of 8 rows (each weight is then read once per 8 rows): still
//!   bit-identical, since every output is computed on its own. Prefill with many rows should go
//!   through [`dequantize`] and cuBLAS instead.
//! - Quantized activations live in a caller-owned [`QuantizedActs`] (allocated once per session,
//!   like [`crate::ops::MatmulScratch`]), so a decode step allocates nothing and can be captured
//!   in a CUDA graph.
//! - Weights are uploaded once as a [`DeviceWeight`] (structure-of-arrays, as on the CPU; f16 and
//!   bf16 as their 16-bit patterns). The raw launchers take the weight's device buffers for
//!   callers that keep their own.
//! - Activations and outputs are views, so a product can read and write part of a larger buffer
//!   (e.g. one row range of a fused QKV output). Weight buffers and the quantized activations
//!   are whole allocations: the quantized kernels read them with 16-byte loads, which need the
//!   alignment of an allocation's start.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::slice::HalfFloatSliceExt;

use crate::backend::cuda::blas::Half;
use crate::backend::cuda::{launch_error, to_i32, Gpu};
use crate::quant::{QuantType, QK};
use crate::tensor::{shape_string, Weight, WeightType};
use crate::{Error, Result};

/// Most activation rows one kernel launch serves; larger `n` is split into launches of this many.
pub const MAX_ROWS_PER_LAUNCH: usize = 8;

/// Threads per block of the GEMV kernels: 8 weight rows × 8 lanes.
const GEMV_THREADS: u32 = 64;
/// Weight rows per block of the GEMV kernels.
const GEMV_ROWS_PER_BLOCK: usize = 8;
/// Threads per block of the activation quantizer (one warp per block of 32 values).
const QUANT_THREADS: u32 = 256;
/// Blocks of 32 activations per quantizer block.
const QUANT_BLOCKS_PER_BLOCK: usize = QUANT_THREADS as usize / 32;
/// Threads per block of the dequantizers (one 16-byte unit of values each).
const DEQUANT_THREADS: u32 = 256;

/// GEMV kernel names by format (Q8_0, Q4_0, Q4_1) and activation rows − 1 (static, so a decode
/// step allocates nothing on the host either).
const QUANT_KERNELS: [[&str; MAX_ROWS_PER_LAUNCH]; 3] = [
    [
        "matmul_quant_q8_0_n1",
        "matmul_quant_q8_0_n2",
        "matmul_quant_q8_0_n3",
        "matmul_quant_q8_0_n4",
        "matmul_quant_q8_0_n5",
        "matmul_quant_q8_0_n6",
        "matmul_quant_q8_0_n7",
        "matmul_quant_q8_0_n8",
    ],
    [
        "matmul_quant_q4_0_n1",
        "matmul_quant_q4_0_n2",
        "matmul_quant_q4_0_n3",
        "matmul_quant_q4_0_n4",
        "matmul_quant_q4_0_n5",
        "matmul_quant_q4_0_n6",
        "matmul_quant_q4_0_n7",
        "matmul_quant_q4_0_n8",
    ],
    [
        "matmul_quant_q4_1_n1",
        "matmul_quant_q4_1_n2",
        "matmul_quant_q4_1_n3",
        "matmul_quant_q4_1_n4",
        "matmul_quant_q4_1_n5",
        "matmul_quant_q4_1_n6",
        "matmul_quant_q4_1_n7",
        "matmul_quant_q4_1_n8",
    ],
];
/// Dense GEMV kernel names by type (f32, f16, bf16) and activation rows − 1.
const DENSE_KERNELS: [[&str; MAX_ROWS_PER_LAUNCH]; 3] = [
    [
        "matmul_dense_f32_n1",
        "matmul_dense_f32_n2",
        "matmul_dense_f32_n3",
        "matmul_dense_f32_n4",
        "matmul_dense_f32_n5",
        "matmul_dense_f32_n6",
        "matmul_dense_f32_n7",
        "matmul_dense_f32_n8",
    ],
    [
        "matmul_dense_f16_n1",
        "matmul_dense_f16_n2",
        "matmul_dense_f16_n3",
        "matmul_dense_f16_n4",
        "matmul_dense_f16_n5",
        "matmul_dense_f16_n6",
        "matmul_dense_f16_n7",
        "matmul_dense_f16_n8",
    ],
    [
        "matmul_dense_bf16_n1",
        "matmul_dense_bf16_n2",
        "matmul_dense_bf16_n3",
        "matmul_dense_bf16_n4",
        "matmul_dense_bf16_n5",
        "matmul_dense_bf16_n6",
        "matmul_dense_bf16_n7",
        "matmul_dense_bf16_n8",
    ],
];
/// Dequantizer names by format (Q8_0, Q4_0, Q4_1) and output type (f16, bf16).
const DEQUANT_KERNELS: [[&str; 2]; 3] = [
    ["matmul_quant_dequantize_q8_0_f16", "matmul_quant_dequantize_q8_0_bf16"],
    ["matmul_quant_dequantize_q4_0_f16", "matmul_quant_dequantize_q4_0_bf16"],
    ["matmul_quant_dequantize_q4_1_f16", "matmul_quant_dequantize_q4_1_bf16"],
];

/// Row of [`QUANT_KERNELS`] / [`DEQUANT_KERNELS`] for a format.
fn format_index(q: QuantType) -> usize {
    match q {
        QuantType::Q8_0 => 0,
        QuantType::Q4_0 => 1,
        QuantType::Q4_1 => 2,
    }
}

/// Checks that device buffer `what` holds at least `needed` elements.
fn need(what: &str, len: usize, needed: usize) -> Result<()> {
    need_with(len, needed, || what.to_string())
}

/// [`need`] with the buffer's description built only on failure (launchers allocate nothing on
/// success).
fn need_with(len: usize, needed: usize, what: impl FnOnce() -> String) -> Result<()> {
    if len < needed {
        return Err(Error::Shape {
            what: what(),
            expected: format!("at least {needed} elements"),
            found: format!("{len} elements"),
        });
    }
    Ok(())
}

/// `a · b`, or an error naming `what` when it overflows.
fn product(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| Error::invalid(what, format!("{a} × {b} overflows")))
}

/// Checks `k % 32 == 0` for a quantized product (`what` built only on failure).
fn check_k_blocks(k: usize, what: impl FnOnce() -> String) -> Result<()> {
    if k % QK != 0 {
        return Err(Error::Shape {
            what: what(),
            expected: format!("a multiple of {QK}"),
            found: k.to_string(),
        });
    }
    Ok(())
}

/// Grid size for `units` work items of `per_block` each, as a kernel dimension.
fn grid(what: &str, units: usize, per_block: usize) -> Result<u32> {
    let blocks = units.div_ceil(per_block);
    u32::try_from(blocks).map_err(|_| Error::invalid(what, format!("{units} is too large for one CUDA grid")))
}

// ------------------------------------------------------------------------------------------------
// Activations

/// Activations quantized to int8 per block of 32 on the device (the GPU twin of
/// [`crate::ops::MatmulScratch`]): `n` rows of `k` values as int8 values `[n, k]`, one f32 scale
/// and one i32 sum `Σ q` per block `[n, k / 32]`. Allocate once with the largest `n · k` a
/// session needs; [`quantize_act`] fills it and records the shape it holds.
pub struct QuantizedActs {
    values: CudaSlice<i8>,
    scales: CudaSlice<f32>,
    sums: CudaSlice<i32>,
    n: usize,
    k: usize,
}

impl QuantizedActs {
    /// Room for `n` rows of `k` activations (`k % 32 == 0`; any `n · k` up to the same total
    /// works later).
    pub fn new(gpu: &Gpu, n: usize, k: usize) -> Result<QuantizedActs> {
        check_k_blocks(k, || "columns of quantized activations".into())?;
        // At least one block: CUDA allocations are never empty.
        let elements = product("quantized activations", n, k)?.max(QK);
        Ok(QuantizedActs {
            values: gpu.alloc::<i8>(elements)?,
            scales: gpu.alloc::<f32>(elements / QK)?,
            sums: gpu.alloc::<i32>(elements / QK)?,
            n: 0,
            k: 0,
        })
    }

    /// How many activation values fit.
    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    /// `(n, k)` of the activations held (set by the last [`quantize_act`]; `(0, 0)` before).
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// The int8 values, row-major `[n, k]` (and unspecified values past them).
    pub fn values(&self) -> &CudaSlice<i8> {
        &self.values
    }

    /// The f32 block scales `d = amax / 127`, `[n, k / 32]`.
    pub fn scales(&self) -> &CudaSlice<f32> {
        &self.scales
    }

    /// The i32 block sums `Σ q`, `[n, k / 32]`.
    pub fn sums(&self) -> &CudaSlice<i32> {
        &self.sums
    }
}

/// Quantizes `x` `[n, k]` (`k % 32 == 0`) into `acts`, per block of 32 exactly as the CPU's
/// `quantize_block_scalar`: `amax = max |x|`, `d = amax / 127`, `q = clamp(round_half_even(x ·
/// 127 / amax), −128, 127)`, plus `Σ q`. Bit-identical to the CPU for finite inputs.
pub fn quantize_act(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    n: usize,
    k: usize,
    acts: &mut QuantizedActs,
) -> Result<()> {
    check_k_blocks(k, || "columns of activations to quantize".into())?;
    let elements = product("activations to quantize", n, k)?;
    need("quantize_act input x [n, k]", x.len(), elements)?;
    if acts.capacity() < elements {
        return Err(Error::BufferTooSmall {
            what: "quantized activations (QuantizedActs)".into(),
            needed: elements,
            given: acts.capacity(),
        });
    }
    let blocks = elements / QK;
    let blocks_i32 = to_i32("activation blocks (n · k / 32)", blocks)?;
    let g = grid("activation blocks", blocks, QUANT_BLOCKS_PER_BLOCK)?;
    (acts.n, acts.k) = (n, k);
    if blocks == 0 {
        return Ok(());
    }
    let name = "matmul_quant_quantize_act";
    let f = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(&mut acts.values).arg(&mut acts.scales).arg(&mut acts.sums).arg(&blocks_i32);
    // SAFETY: the kernel reads blocks·32 floats of x and writes blocks·32 values and `blocks`
    // scales and sums of acts (all checked above); one warp per block, grid covers every block.
    unsafe {
        b.launch(LaunchConfig { grid_dim: (g, 1, 1), block_dim: (QUANT_THREADS, 1, 1), shared_mem_bytes: 0 })
    }
    .map_err(|e| launch_error(name, e))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Raw launchers

/// The device buffers of a block-32 quantized weight `[rows, k]`, structure-of-arrays as in
/// `crate::quant`: packed values (`rows · k / 32 · qtype.value_bytes_per_block()` bytes), f16
/// scales as bit patterns (`rows · k / 32`), and for Q4_1 the f16 mins (`None` otherwise).
#[derive(Clone, Copy)]
pub struct QuantBuffers<'a> {
    pub qtype: QuantType,
    pub values: &'a CudaSlice<u8>,
    pub scales: &'a CudaSlice<u16>,
    pub mins: Option<&'a CudaSlice<u16>>,
}

impl QuantBuffers<'_> {
    /// Checks the buffers hold `blocks` blocks; returns the mins buffer to pass to a kernel (the
    /// scales stand in for formats without mins: never read).
    fn check(&self, what: &str, blocks: usize) -> Result<&CudaSlice<u16>> {
        let q = self.qtype;
        let value_bytes = product(what, blocks, q.value_bytes_per_block())?;
        need_with(self.values.len(), value_bytes, || format!("{what}: {q} values (bytes)"))?;
        need_with(self.scales.len(), blocks, || format!("{what}: {q} scales"))?;
        match (q.has_mins(), self.mins) {
            (true, Some(m)) => {
                need_with(m.len(), blocks, || format!("{what}: {q} mins"))?;
                Ok(m)
            }
            (true, None) => Err(Error::invalid("mins", format!("{what}: {q} weights need their mins"))),
            (false, Some(_)) => Err(Error::invalid("mins", format!("{what}: {q} weights have no mins"))),
            (false, None) => Ok(self.scales),
        }
    }
}

/// `out[i][r] = Σ_k x[i][k] · W[r][k]` for the quantized weight `w` `[rows, k]` and the
/// activations held by `acts` (`[n, k]`, from [`quantize_act`]); `out` `[n, rows]` row-major
/// (at least `n · rows` elements). Launches `ceil(n / 8)` kernels; bit-identical to
/// [`crate::ops::matmul`] on the CPU.
pub fn matmul_quant(
    gpu: &Gpu,
    w: &QuantBuffers<'_>,
    rows: usize,
    k: usize,
    acts: &QuantizedActs,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    check_k_blocks(k, || format!("columns of the {} weight", w.qtype))?;
    let (n, ak) = acts.shape();
    if n > 0 && ak != k {
        return Err(Error::Shape {
            what: "quantized activations for matmul_quant".into(),
            expected: format!("rows of k = {k} values (the weight's columns)"),
            found: format!("rows of {ak} values"),
        });
    }
    let nb = k / QK;
    let blocks = product("weight blocks", rows, nb)?;
    let mins = w.check("matmul_quant weight", blocks)?;
    let out_len = product("matmul_quant output", n, rows)?;
    need("matmul_quant output [n, rows]", out.len(), out_len)?;
    let rows_i32 = to_i32("rows", rows)?;
    let nb_i32 = to_i32("blocks per row (k / 32)", nb)?;
    let g = grid("rows", rows, GEMV_ROWS_PER_BLOCK)?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let mut i0 = 0;
    while i0 < n {
        let m = (n - i0).min(MAX_ROWS_PER_LAUNCH);
        let name = QUANT_KERNELS[format_index(w.qtype)][m - 1];
        let f = gpu.function(name)?;
        let qx = acts.values.slice(i0 * k..(i0 + m) * k);
        let dx = acts.scales.slice(i0 * nb..(i0 + m) * nb);
        let sx = acts.sums.slice(i0 * nb..(i0 + m) * nb);
        let mut o = out.slice_mut(i0 * rows..(i0 + m) * rows);
        let mut b = gpu.stream().launch_builder(&f);
        b.arg(w.values).arg(w.scales).arg(mins).arg(&qx).arg(&dx).arg(&sx).arg(&mut o);
        b.arg(&rows_i32).arg(&nb_i32);
        // SAFETY: the kernel reads rows·nb blocks of the weight (values, scales, Q4_1 mins),
        // m·nb activation blocks (values, scales, sums) and writes m·rows outputs; every length
        // was checked above. The weight values and the activation values are whole allocations
        // (16-byte aligned) and the activation chunk starts at a multiple of 8·k bytes.
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (g, 1, 1),
                block_dim: (GEMV_THREADS, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(|e| launch_error(name, e))?;
        i0 += m;
    }
    Ok(())
}

/// The device buffer of a dense weight `[rows, k]`, row-major; f16 and bf16 as bit patterns.
#[derive(Clone, Copy)]
pub enum DenseBuffer<'a> {
    F32(&'a CudaSlice<f32>),
    F16(&'a CudaSlice<u16>),
    Bf16(&'a CudaSlice<u16>),
}

impl DenseBuffer<'_> {
    fn name(&self) -> &'static str {
        match self {
            DenseBuffer::F32(_) => "f32",
            DenseBuffer::F16(_) => "f16",
            DenseBuffer::Bf16(_) => "bf16",
        }
    }

    /// Row of [`DENSE_KERNELS`].
    fn index(&self) -> usize {
        match self {
            DenseBuffer::F32(_) => 0,
            DenseBuffer::F16(_) => 1,
            DenseBuffer::Bf16(_) => 2,
        }
    }

    fn len(&self) -> usize {
        match self {
            DenseBuffer::F32(b) => b.len(),
            DenseBuffer::F16(b) | DenseBuffer::Bf16(b) => b.len(),
        }
    }
}

/// `out[i][r] = Σ_k x[i][k] · W[r][k]` for the dense weight `w` `[rows, k]`, `x` `[n, k]` f32
/// and `out` `[n, rows]` row-major (each at least that long); f32 FMA accumulation. Launches
/// `ceil(n / 8)` kernels; bit-identical to [`crate::ops::matmul`] on the CPU.
pub fn matmul_dense(
    gpu: &Gpu,
    w: DenseBuffer<'_>,
    rows: usize,
    k: usize,
    x: &CudaView<'_, f32>,
    n: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    need_with(w.len(), product("weight", rows, k)?, || {
        format!("matmul_dense {} weight [rows, k]", w.name())
    })?;
    need("matmul_dense input x [n, k]", x.len(), product("matmul_dense input", n, k)?)?;
    need("matmul_dense output [n, rows]", out.len(), product("matmul_dense output", n, rows)?)?;
    let rows_i32 = to_i32("rows", rows)?;
    let k_i32 = to_i32("k", k)?;
    let g = grid("rows", rows, GEMV_ROWS_PER_BLOCK)?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let mut i0 = 0;
    while i0 < n {
        let m = (n - i0).min(MAX_ROWS_PER_LAUNCH);
        let name = DENSE_KERNELS[w.index()][m - 1];
        let f = gpu.function(name)?;
        let xs = x.slice(i0 * k..(i0 + m) * k);
        let mut o = out.slice_mut(i0 * rows..(i0 + m) * rows);
        let mut b = gpu.stream().launch_builder(&f);
        match w {
            DenseBuffer::F32(buf) => b.arg(buf),
            DenseBuffer::F16(buf) | DenseBuffer::Bf16(buf) => b.arg(buf),
        };
        b.arg(&xs).arg(&mut o).arg(&rows_i32).arg(&k_i32);
        // SAFETY: the kernel reads rows·k weights and m·k activations and writes m·rows outputs
        // (checked above); it takes its 16-byte path only when the weight rows are 16-byte
        // aligned (checked in the kernel) and reads the activations 4 bytes at a time.
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (g, 1, 1),
                block_dim: (GEMV_THREADS, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(|e| launch_error(name, e))?;
        i0 += m;
    }
    Ok(())
}

/// Dequantizes `blocks` blocks of 32 of the quantized weight `w` into `out` (at least
/// `blocks · 32` elements, element order) as f16 or bf16 bit patterns, for cuBLAS at prefill:
/// each value computed in f32 exactly as `quant::dequantize` does, then rounded to nearest even.
pub fn dequantize(
    gpu: &Gpu,
    w: &QuantBuffers<'_>,
    blocks: usize,
    to: Half,
    out: &mut CudaSlice<u16>,
) -> Result<()> {
    let mins = w.check("dequantize", blocks)?;
    need("dequantize output", out.len(), product("dequantize output", blocks, QK)?)?;
    let blocks_i32 = to_i32("blocks", blocks)?;
    // One thread per 16 bytes of values: half a Q8_0 block, a whole Q4 block.
    let units = blocks * (w.qtype.value_bytes_per_block() / 16);
    let g = grid("dequantize blocks", units, DEQUANT_THREADS as usize)?;
    if blocks == 0 {
        return Ok(());
    }
    let to_index = match to {
        Half::F16 => 0,
        Half::Bf16 => 1,
    };
    let name = DEQUANT_KERNELS[format_index(w.qtype)][to_index];
    let f = gpu.function(name)?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(w.values).arg(w.scales).arg(mins).arg(out).arg(&blocks_i32);
    // SAFETY: the kernel reads `blocks` blocks of the weight and writes blocks·32 elements of
    // `out`, both whole allocations (16-byte aligned for its vector loads and stores); lengths
    // checked above.
    unsafe {
        b.launch(LaunchConfig {
            grid_dim: (g, 1, 1),
            block_dim: (DEQUANT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        })
    }
    .map_err(|e| launch_error(name, e))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Device weights

/// The storage of a [`DeviceWeight`].
enum DeviceData {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
    Bf16(CudaSlice<u16>),
    Quant { qtype: QuantType, values: CudaSlice<u8>, scales: CudaSlice<u16>, mins: Option<CudaSlice<u16>> },
}

/// A 2-D model weight `[rows, k]` in device memory, stored like the host [`Weight`] (dense
/// row-major, or block-32 quantized structure-of-arrays); a quantized one may also keep a
/// dequantized 16-bit copy for GEMMs ([`DeviceWeight::keep_half_copy`]).
pub struct DeviceWeight {
    name: String,
    rows: usize,
    k: usize,
    data: DeviceData,
    half_copy: Option<(Half, CudaSlice<u16>)>,
}

impl std::fmt::Debug for DeviceWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceWeight")
            .field("name", &self.name)
            .field("type", &self.weight_type())
            .field("rows", &self.rows)
            .field("k", &self.k)
            .finish()
    }
}

impl DeviceWeight {
    /// Copies a 2-D weight to the device (enqueued on the stream). Checks the shape and the
    /// lengths of its arrays like [`crate::ops::matmul`]; empty weights are an error.
    pub fn upload(gpu: &Gpu, w: &Weight<'_>) -> Result<DeviceWeight> {
        let name = w.name();
        let &[rows, k] = w.shape() else {
            return Err(Error::Shape {
                what: format!("device weight `{name}`"),
                expected: "a 2-D weight [rows, k]".into(),
                found: shape_string(w.shape()),
            });
        };
        let numel = product(&format!("weight `{name}`"), rows, k)?;
        if numel == 0 {
            return Err(Error::invalid("weight", format!("`{name}` {} is empty", shape_string(w.shape()))));
        }
        let exact = |what: String, len: usize, expected: usize| -> Result<()> {
            if len != expected {
                return Err(Error::Shape { what, expected: expected.to_string(), found: len.to_string() });
            }
            Ok(())
        };
        let data = match w {
            Weight::F32(d) => {
                exact(format!("data of weight `{name}`"), d.data.len(), numel)?;
                DeviceData::F32(gpu.upload(d.data)?)
            }
            Weight::F16(d) => {
                exact(format!("data of weight `{name}`"), d.data.len(), numel)?;
                DeviceData::F16(gpu.upload(d.data.reinterpret_cast())?)
            }
            Weight::BF16(d) => {
                exact(format!("data of weight `{name}`"), d.data.len(), numel)?;
                DeviceData::Bf16(gpu.upload(d.data.reinterpret_cast())?)
            }
            Weight::Quant(q) => {
                check_k_blocks(k, || format!("columns of {} weight `{name}`", q.qtype))?;
                let blocks = numel / QK;
                exact(
                    format!("{} values of `{name}` (bytes)", q.qtype),
                    q.values.len(),
                    blocks * q.qtype.value_bytes_per_block(),
                )?;
                exact(format!("{} scales of `{name}`", q.qtype), q.scales.len(), blocks)?;
                let mins = if q.qtype.has_mins() {
                    exact(format!("{} mins of `{name}`", q.qtype), q.mins.len(), blocks)?;
                    Some(gpu.upload(q.mins.reinterpret_cast())?)
                } else {
                    None
                };
                DeviceData::Quant {
                    qtype: q.qtype,
                    values: gpu.upload(q.values)?,
                    scales: gpu.upload(q.scales.reinterpret_cast())?,
                    mins,
                }
            }
        };
        Ok(DeviceWeight { name: name.to_string(), rows, k, data, half_copy: None })
    }

    /// The weight's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the weight is stored.
    pub fn weight_type(&self) -> WeightType {
        match &self.data {
            DeviceData::F32(_) => WeightType::F32,
            DeviceData::F16(_) => WeightType::F16,
            DeviceData::Bf16(_) => WeightType::Bf16,
            DeviceData::Quant { qtype, .. } => WeightType::from_quant(*qtype),
        }
    }

    /// Rows (outputs of a matmul).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs of a matmul).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Device bytes of the weight's arrays.
    pub fn bytes(&self) -> usize {
        match &self.data {
            DeviceData::F32(b) => 4 * b.len(),
            DeviceData::F16(b) | DeviceData::Bf16(b) => 2 * b.len(),
            DeviceData::Quant { values, scales, mins, .. } => {
                values.len() + 2 * scales.len() + 2 * mins.as_ref().map_or(0, |m| m.len())
            }
        }
    }

    /// The buffers of a quantized weight (`None` for a dense one).
    pub fn quant(&self) -> Option<QuantBuffers<'_>> {
        match &self.data {
            DeviceData::Quant { qtype, values, scales, mins } => {
                Some(QuantBuffers { qtype: *qtype, values, scales, mins: mins.as_ref() })
            }
            _ => None,
        }
    }

    /// The buffer of a dense weight (`None` for a quantized one).
    pub fn dense(&self) -> Option<DenseBuffer<'_>> {
        match &self.data {
            DeviceData::F32(b) => Some(DenseBuffer::F32(b)),
            DeviceData::F16(b) => Some(DenseBuffer::F16(b)),
            DeviceData::Bf16(b) => Some(DenseBuffer::Bf16(b)),
            DeviceData::Quant { .. } => None,
        }
    }

    /// Keeps a dequantized `[rows, k]` copy in `half` ([`DeviceWeight::dequantize`]) for GEMMs,
    /// so they need not dequantize each time (e.g. the decoder's GEMM prefill); returns its
    /// bytes. A dense weight keeps nothing (it is its own 16- or 32-bit operand): 0.
    pub fn keep_half_copy(&mut self, gpu: &Gpu, half: Half) -> Result<usize> {
        if self.quant().is_none() {
            return Ok(0);
        }
        if let Some((h, c)) = &self.half_copy {
            if *h == half {
                return Ok(2 * c.len());
            }
        }
        self.half_copy = None;
        let mut copy = gpu.alloc::<u16>(product("half copy", self.rows, self.k)?)?;
        self.dequantize(gpu, half, &mut copy)?;
        let bytes = 2 * copy.len();
        self.half_copy = Some((half, copy));
        Ok(bytes)
    }

    /// The dequantized 16-bit copy, if kept.
    pub fn half_copy(&self) -> Option<(Half, &CudaSlice<u16>)> {
        self.half_copy.as_ref().map(|(h, c)| (*h, c))
    }

    /// Dequantizes the whole weight into `out` (`[rows, k]` f16/bf16 bit patterns, at least
    /// `rows · k` elements). A dense weight is an error (it needs no dequantization).
    pub fn dequantize(&self, gpu: &Gpu, to: Half, out: &mut CudaSlice<u16>) -> Result<()> {
        let q = self.quant().ok_or_else(|| {
            Error::invalid(
                "weight",
                format!(
                    "`{}` is {}, not quantized: nothing to dequantize",
                    self.name,
                    self.weight_type().name()
                ),
            )
        })?;
        dequantize(gpu, &q, self.rows * self.k / QK, to, out)
    }
}

/// `out[i][r] = Σ_k x[i][k] · W[r][k]` for `x` `[n, k]`, the device weight `w` `[rows, k]` and
/// `out` `[n, rows]` — the GPU's [`crate::ops::matmul_into`], bit-identical to it. A quantized
/// weight first quantizes `x` into `acts` (which must hold `n · k` values); a dense one leaves
/// `acts` alone.
pub fn matmul(
    gpu: &Gpu,
    w: &DeviceWeight,
    x: &CudaView<'_, f32>,
    n: usize,
    acts: &mut QuantizedActs,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    match w.quant() {
        Some(q) => {
            quantize_act(gpu, x, n, w.k, acts)?;
            matmul_quant(gpu, &q, w.rows, w.k, acts, out)
        }
        None => match w.dense() {
            Some(d) => matmul_dense(gpu, d, w.rows, w.k, x, n, out),
            None => Err(Error::Internal(format!("device weight `{}` has no data", w.name))),
        },
    }
}
