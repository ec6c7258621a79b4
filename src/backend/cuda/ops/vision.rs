//! The image side on the GPU (issue #9): preprocessing's volume resize, the kernels around the
//! vision encoder's GEMMs (which go to cuBLAS), and R² / mask pooling. Kernels:
//! `kernels/{resample,patch_embed,layer_norm,gelu,pool}.cu`.
//!
//! | launcher | kernel(s) | CPU twin |
//! |---|---|---|
//! | [`resample_volume`] | `resample_trilinear_f32`, `resample_nearest_f32` | `preprocess::resample::{trilinear, nearest}` + the window map, as `preprocess::preprocess` calls them |
//! | [`volume_patches`] | `patch_embed_volume_{f32,f16,bf16}` | `vision::slices_from_volume` then the encoder's `unfold_patches` |
//! | [`unfold_patches`] | `patch_embed_unfold_{f32,f16,bf16}` | the encoder's `unfold_patches` |
//! | [`assemble_embeddings`] | `patch_embed_assemble_f32` | the embedding loop of the encoder (`cls + pos`, `(x + bias) + pos`) |
//! | [`layer_norm`] | `layer_norm_{f32,f16,bf16}` | `vision::layer_norm` |
//! | [`residual_layer_norm`] | `layer_norm_residual_{f32,f16,bf16}` | the encoder's `residual` (`h = λ·(y + b) + h`, fused) then `vision::layer_norm` |
//! | [`gelu`], [`bias_act`], [`bias_act_to`] | `gelu_f32`, `gelu_bias_f32`, `gelu_bias_to_{f32,f16,bf16}` | `vision::math::gelu`, the encoder's `bias_gelu` / `add_bias` |
//! | [`global_tokens`] | `pool_mean_rows_f32` | `region::pool::mean_rows` per slice |
//! | [`adaptive_pool`] | `pool_adaptive_f32` | `region::pool::adaptive_pool_rows` per selected slice |
//! | [`bilinear_masks`] | `pool_bilinear_mask_u8` | `region::pool::bilinear_mask` per slice |
//! | [`mask_areas`] | `pool_mask_area_u8` | the per-slice voxel counts of `RegionHeads::tokens` |
//! | [`masked_mean`] | `pool_masked_mean_f32` | the Osprey weights and `wᵀ V` of `RegionHeads::tokens` |
//!
//! **Numerics contract: every f32 output is bit-identical to its CPU twin** (tested by
//! `tests/cuda_vision.rs` on a device). The kernels run under `--fmad=false` and repeat the
//! CPU's f32 operations in the CPU's order: the GELU is the CPU's own `exp`/`erf` polynomial with
//! its constants bit for bit; LayerNorm reproduces `sum8` (8 partial sums by index mod 8, fixed
//! tree) with 8 threads per row; every pooled value is summed by one thread in the CPU's order
//! (no parallel float reductions, no atomics: the same input gives the same bits on every run);
//! the linear-interpolation tables are recomputed on the device in f64 with the CPU's
//! `linear_table` arithmetic. f16/bf16 outputs ([`Out::F16`], [`Out::Bf16`], the inputs of the
//! encoder's half-precision cuBLAS GEMMs) are the round-to-nearest-even conversion of those f32
//! bits (`half::f16::from_f32` / `half::bf16::from_f32` of the CPU value).
//!
//! Choices:
//! * Buffers are views ([`CudaView`] / [`CudaViewMut`], e.g. `buf.as_view()`,
//!   `buf.slice_mut(a..b)`), so results can be written straight into their place in a larger
//!   buffer (the global tokens and the K pooled grids of `V` are consecutive ranges of one
//!   buffer). Every length must be exact; every size is checked (and must fit the kernels'
//!   `int`) before anything is launched; empty work launches nothing.
//! * The resize reads the stored CT through the reorientation and crop ([`VolumeResize`]), so
//!   orientation, crop, window and resize are one kernel over the uploaded volume.
//! * [`volume_patches`] goes from the preprocessed volume straight to the patch GEMM's rows (the
//!   `[D, 3, S, S]` pixel tensor is never stored); [`residual_layer_norm`] fuses every residual
//!   update of a block with the LayerNorm that follows it.
//! * Launches are asynchronous on the [`Gpu`]'s stream.

use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::backend::cuda::{launch_error, to_i32, Gpu};
use crate::model::config::{Interpolation, VisionConfig};
use crate::preprocess::{CropBox, Preprocessed, Reorientation, Window};
use crate::{Error, Result};

/// Threads per block of every launch here.
const BLOCK: u32 = 256;
/// Largest grid of the grid-stride kernels (about 31 blocks of 256 per SM on 132 SMs).
const MAX_GRID: u32 = 4096;
/// Rows per block of the LayerNorm kernels (8 threads per row).
const LN_ROWS_PER_BLOCK: usize = BLOCK as usize / 8;
/// Most slices one [`adaptive_pool`] launch takes (the kernel's by-value slice list).
pub const MAX_POOL_SLICES: usize = 16;
/// Most slots one [`masked_mean`] launch takes (grid.y).
pub const MAX_MASK_SLOTS: usize = 65_535;

/// Where a kernel that feeds a GEMM writes: f32, or the f16 / bf16 bit patterns cuBLAS takes.
#[derive(Debug)]
pub enum Out<'a> {
    F32(CudaViewMut<'a, f32>),
    F16(CudaViewMut<'a, u16>),
    Bf16(CudaViewMut<'a, u16>),
}

impl Out<'_> {
    /// Elements of the destination.
    pub fn len(&self) -> usize {
        match self {
            Out::F32(v) => v.len(),
            Out::F16(v) | Out::Bf16(v) => v.len(),
        }
    }

    /// True when the destination holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kernel-name suffix of this output type.
    fn suffix(&self) -> &'static str {
        match self {
            Out::F32(_) => "f32",
            Out::F16(_) => "f16",
            Out::Bf16(_) => "bf16",
        }
    }
}

/// Enqueues kernel `$name` with the arguments in the kernel's parameter order.
macro_rules! launch {
    ($gpu:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let name: &str = $name;
        let cfg: LaunchConfig = $cfg;
        let f = $gpu.function(name)?;
        let mut b = $gpu.stream().launch_builder(&f);
        $( b.arg($arg); )+
        // SAFETY: the arguments match the kernel's parameter list in number, order and type
        // (pointers as device views, `int` as i32, `float` as f32, by-value structs as their
        // #[repr(C)] twins), and the caller validated every size, so every access the kernel
        // makes with this launch configuration is inside the buffers.
        unsafe { b.launch(cfg) }.map(|_| ()).map_err(|e| launch_error(name, e))
    }};
}

/// [`launch!`] of `<$base>_<suffix>` with the [`Out`] destination between two argument lists.
macro_rules! launch_out {
    ($gpu:expr, $base:expr, $cfg:expr, $out:expr, [$($pre:expr),*], [$($post:expr),*]) => {{
        let name = format!("{}_{}", $base, $out.suffix());
        match $out {
            Out::F32(v) => launch!($gpu, &name, $cfg, $($pre,)* v, $($post),*),
            Out::F16(v) | Out::Bf16(v) => launch!($gpu, &name, $cfg, $($pre,)* v, $($post),*),
        }
    }};
}

/// One thread per output, grid-stride: `n` outputs (n ≥ 1).
fn cfg_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_GRID as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// The product of `dims`, or an error naming `what` when it overflows or exceeds the kernels'
/// `int` range.
fn count(what: &str, dims: &[usize]) -> Result<usize> {
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match n {
        Some(n) => {
            to_i32(what, n)?;
            Ok(n)
        }
        None => Err(Error::invalid(what, format!("{dims:?} has more elements than a CUDA kernel takes"))),
    }
}

/// `found == expected`, else a shape error naming `what` and the expected `shape`.
fn exact(what: &str, found: usize, expected: usize, shape: &str) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(Error::Shape {
        what: what.to_string(),
        expected: format!("{shape} = {expected} elements"),
        found: format!("{found} elements"),
    })
}

fn positive(name: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::invalid(name, "must be at least 1"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resample

/// `struct ResampleView` of kernels/resample.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ResampleView {
    base: i64,
    stride: [i64; 3],
    start: [i32; 3],
    size: [i32; 3],
}

/// `struct ResampleWindow` of kernels/resample.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ResampleWindow {
    on: i32,
    lo: f32,
    hi: f32,
    scale: f32,
}

// SAFETY: plain #[repr(C)] structs of integers and floats, laid out like the kernels' structs.
unsafe impl DeviceRepr for ResampleView {}
// SAFETY: as above.
unsafe impl DeviceRepr for ResampleWindow {}

/// The plan of a volume resize: which voxels of the stored CT, through which window, to which
/// size (what `preprocess::preprocess` decides on the CPU).
#[derive(Clone, Debug)]
pub struct VolumeResize<'r> {
    /// Stored dims `[nx, ny, nz]` of the uploaded volume (x fastest).
    pub dims: [usize; 3],
    /// Stored → canonical axes.
    pub reorientation: &'r Reorientation,
    /// The box to resize, in canonical voxel indices (half-open).
    pub crop: CropBox,
    /// The intensity window applied to every tap; `None` resizes the values as they are.
    pub window: Option<Window>,
    /// Trilinear or nearest-exact.
    pub interpolation: Interpolation,
    /// Output `[D, H, W]`.
    pub out_shape: [usize; 3],
}

impl<'r> VolumeResize<'r> {
    /// The resize `preprocess::preprocess` did for `pre` (its window, crop and shape), with
    /// `interpolation` (the config's `volume_interpolation`).
    pub fn of(pre: &'r Preprocessed, interpolation: Interpolation) -> VolumeResize<'r> {
        VolumeResize {
            dims: pre.source_geometry.dims,
            reorientation: &pre.reorientation,
            crop: pre.crop_canonical,
            window: Some(pre.window),
            interpolation,
            out_shape: pre.shape,
        }
    }
}

/// Resizes the canonical crop box of the stored volume `src` (`[nz, ny, nx]` values, x
/// fastest) to `out` `[D, H, W]` (W fastest), windowing every tap: `preprocess`'s step 4 with
/// its steps 1–3 folded in. Bit-identical to the CPU.
pub fn resample_volume(
    gpu: &Gpu,
    src: &CudaView<'_, f32>,
    plan: &VolumeResize<'_>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let dims = plan.dims;
    if dims.contains(&0) {
        return Err(Error::invalid("resample dims", format!("{dims:?}: every axis needs a voxel")));
    }
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid("resample dims", format!("{dims:?} overflows")))?;
    exact("resample source volume", src.len(), n, &format!("dims {dims:?}"))?;
    let axes = plan.reorientation.source_axis;
    let mut seen = [false; 3];
    for &a in &axes {
        if a > 2 || std::mem::replace(&mut seen[a], true) {
            return Err(Error::invalid(
                "reorientation",
                format!("source_axis {axes:?} is not a permutation of the axes 0, 1, 2"),
            ));
        }
    }
    let canonical = plan.reorientation.canonical_dims(dims);
    let crop = &plan.crop;
    if (0..3).any(|i| crop.start[i] >= crop.end[i] || crop.end[i] > canonical[i]) {
        return Err(Error::Shape {
            what: "resample crop box".into(),
            expected: format!("a non-empty box inside the canonical dims {canonical:?}"),
            found: format!("{:?}..{:?}", crop.start, crop.end),
        });
    }
    let [d, h, w] = plan.out_shape;
    if plan.out_shape.contains(&0) {
        return Err(Error::invalid(
            "resample out_shape",
            format!("{:?}: every axis needs a voxel", plan.out_shape),
        ));
    }
    let total = count("resample output", &plan.out_shape)?;
    exact("resample output", out.len(), total, &format!("[D, H, W] = {:?}", plan.out_shape))?;
    let view = plan.reorientation.view(dims);
    let size = crop.size();
    // Every index is < MAX_VOXELS-sized dims here, so the conversions below cannot truncate;
    // they are checked anyway.
    let i32s = |v: [usize; 3], what: &str| -> Result<[i32; 3]> {
        Ok([to_i32(what, v[0])?, to_i32(what, v[1])?, to_i32(what, v[2])?])
    };
    let rv = ResampleView {
        base: view.base as i64,
        stride: view.strides.map(|s| s as i64),
        start: i32s(crop.start, "resample crop start")?,
        size: i32s(size, "resample crop size")?,
    };
    // The CPU's WindowMap: scale = 1 / (hi − lo) in f32; an empty window maps to 0.
    let rw = match plan.window {
        None => ResampleWindow { on: 0, lo: 0.0, hi: 0.0, scale: 0.0 },
        Some(win) if win.hi > win.lo => {
            ResampleWindow { on: 1, lo: win.lo, hi: win.hi, scale: 1.0 / (win.hi - win.lo) }
        }
        Some(win) => ResampleWindow { on: 1, lo: win.lo, hi: win.lo, scale: 0.0 },
    };
    let (od, oh, ow) = (to_i32("D", d)?, to_i32("H", h)?, to_i32("W", w)?);
    let name = match plan.interpolation {
        Interpolation::Trilinear => "resample_trilinear_f32",
        Interpolation::Nearest => "resample_nearest_f32",
    };
    launch!(gpu, name, cfg_1d(total), src, &mut *out, &rv, &rw, &od, &oh, &ow)
}

// ---------------------------------------------------------------------------------------------
// Patch embedding

/// `struct PeNorm` of kernels/patch_embed.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PeNorm {
    mean: [f32; 3],
    std: [f32; 3],
}

// SAFETY: a plain #[repr(C)] struct of floats, laid out like the kernel's.
unsafe impl DeviceRepr for PeNorm {}

/// Checks the patch geometry; returns the grid side `image_size / patch`.
fn patch_grid(image_size: usize, patch: usize) -> Result<usize> {
    if patch == 0 || image_size < patch {
        return Err(Error::invalid(
            "patch_size",
            format!("{patch} must be in 1..=image_size ({image_size})"),
        ));
    }
    Ok(image_size / patch)
}

/// im2col of normalized pixels `[batch, channels, s, s]` into the patch GEMM's rows
/// `[batch·g², channels·p·p]` (`g = s / p`; row `b·g² + gy·g + gx`, column `(c·p + ky)·p + kx`,
/// the flattened conv weight's order). f32: an exact copy.
pub fn unfold_patches(
    gpu: &Gpu,
    pixels: &CudaView<'_, f32>,
    batch: usize,
    channels: usize,
    image_size: usize,
    patch: usize,
    mut out: Out<'_>,
) -> Result<()> {
    positive("channels", channels)?;
    let g = patch_grid(image_size, patch)?;
    let n_in = count("pixels", &[batch, channels, image_size, image_size])?;
    exact("pixels", pixels.len(), n_in, &format!("[{batch}, {channels}, {image_size}, {image_size}]"))?;
    let rows = count("patch rows", &[batch, g, g, channels, patch, patch])?;
    exact(
        "patch rows",
        out.len(),
        rows,
        &format!("[{batch}·{g}², {channels}·{patch}²] = [{}, {}]", batch * g * g, channels * patch * patch),
    )?;
    if rows == 0 {
        return Ok(());
    }
    let (b, c, s, p) = (
        to_i32("batch", batch)?,
        to_i32("channels", channels)?,
        to_i32("s", image_size)?,
        to_i32("p", patch)?,
    );
    launch_out!(gpu, "patch_embed_unfold", cfg_1d(rows), &mut out, [pixels], [&b, &c, &s, &p])
}

/// `vision::slices_from_volume` and [`unfold_patches`] in one pass: the preprocessed volume
/// `[D, H, W]` (values in [0, 1]) → the patch GEMM's rows `[D·g², 3·p·p]`, each slice resized
/// to `image_size` (bilinear, when not already that size) and normalized with `image_mean` /
/// `image_std` of `config`.
pub fn volume_patches(
    gpu: &Gpu,
    volume: &CudaView<'_, f32>,
    shape: [usize; 3],
    config: &VisionConfig,
    mut out: Out<'_>,
) -> Result<()> {
    let [depth, height, width] = shape;
    if height == 0 || width == 0 {
        return Err(Error::invalid("volume shape", format!("{shape:?}: H and W must be at least 1")));
    }
    if config.num_channels != 3 {
        return Err(Error::Unsupported(format!(
            "vision.num_channels = {}: a CT slice is repeated to 3 channels",
            config.num_channels
        )));
    }
    let (s, p) = (config.image_size, config.patch_size);
    let g = patch_grid(s, p)?;
    let n_in = count("volume for the vision encoder", &shape)?;
    exact("volume for the vision encoder", volume.len(), n_in, &format!("[D, H, W] = {shape:?}"))?;
    let rows = count("patch rows", &[depth, g, g, 3, p, p])?;
    exact(
        "patch rows",
        out.len(),
        rows,
        &format!("[{depth}·{g}², 3·{p}²] = [{}, {}]", depth * g * g, 3 * p * p),
    )?;
    if rows == 0 {
        return Ok(());
    }
    let norm = PeNorm { mean: config.image_mean, std: config.image_std };
    let (d, h, w) = (to_i32("D", depth)?, to_i32("H", height)?, to_i32("W", width)?);
    let (s, p) = (to_i32("image_size", s)?, to_i32("patch_size", p)?);
    launch_out!(gpu, "patch_embed_volume", cfg_1d(rows), &mut out, [volume], [&d, &h, &w, &s, &p, &norm])
}

/// The embeddings (`hidden_states[0]`) after the patch GEMM: `h[b, 0] = cls + pos[0]`,
/// `h[b, j] = (pe[b·g² + j − 1] + bias) + pos[j]`. `pe` is `[batch·g², d]` without bias,
/// `positions` the baked table `[1 + g², d]` (d = `bias.len()`), `out` `[batch·(1 + g²), d]`.
pub fn assemble_embeddings(
    gpu: &Gpu,
    pe: &CudaView<'_, f32>,
    bias: &CudaView<'_, f32>,
    cls: &CudaView<'_, f32>,
    positions: &CudaView<'_, f32>,
    batch: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let d = bias.len();
    positive("patch-embedding bias length (hidden size)", d)?;
    exact("cls token", cls.len(), d, &format!("[{d}]"))?;
    if positions.len() % d != 0 || positions.len() < d {
        return Err(Error::Shape {
            what: "position table".into(),
            expected: format!("[1 + g², {d}]"),
            found: format!("{} elements", positions.len()),
        });
    }
    let t = positions.len() / d;
    let g2 = t - 1;
    let n_pe = count("patch embeddings", &[batch, g2, d])?;
    exact(
        "patch embeddings",
        pe.len(),
        n_pe,
        &format!("[{batch}·{g2}, {d}] (g² = {g2} from the position table)"),
    )?;
    let n_out = count("embeddings", &[batch, t, d])?;
    exact("embeddings", out.len(), n_out, &format!("[{batch}·{t}, {d}]"))?;
    if n_out == 0 {
        return Ok(());
    }
    let (b, g2, d) = (to_i32("batch", batch)?, to_i32("g²", g2)?, to_i32("hidden size", d)?);
    launch!(gpu, "patch_embed_assemble_f32", cfg_1d(n_out), pe, bias, cls, positions, &mut *out, &b, &g2, &d)
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm weights: `weight` and `bias` `[d]`, and epsilon.
#[derive(Debug)]
pub struct LayerNormParams<'a> {
    pub weight: CudaView<'a, f32>,
    pub bias: CudaView<'a, f32>,
    pub eps: f32,
}

/// Checks the norm against `n` input values; returns `(rows, d)`.
fn check_norm(norm: &LayerNormParams<'_>, n: usize, what: &str) -> Result<(usize, usize)> {
    let d = norm.weight.len();
    positive("LayerNorm weight length", d)?;
    exact("LayerNorm bias", norm.bias.len(), d, &format!("[{d}] (the weight's length)"))?;
    if !(norm.eps.is_finite() && norm.eps >= 0.0) {
        return Err(Error::invalid("LayerNorm eps", format!("{} must be finite and non-negative", norm.eps)));
    }
    if n % d != 0 {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("[rows, {d}] (a multiple of {d} elements)"),
            found: format!("{n} elements"),
        });
    }
    to_i32(what, n)?;
    Ok((n / d, d))
}

fn cfg_rows(rows: usize) -> LaunchConfig {
    let blocks = rows.div_ceil(LN_ROWS_PER_BLOCK) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// `out[r] = LayerNorm(x[r])·weight + bias` for every row of `x` `[rows, d]` (`d` =
/// `weight.len()`); `out` has the same shape, in f32 or half precision.
pub fn layer_norm(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    norm: &LayerNormParams<'_>,
    mut out: Out<'_>,
) -> Result<()> {
    let (rows, d) = check_norm(norm, x.len(), "LayerNorm input")?;
    exact("LayerNorm output", out.len(), x.len(), &format!("[{rows}, {d}]"))?;
    if rows == 0 {
        return Ok(());
    }
    let (r, dd) = (to_i32("rows", rows)?, to_i32("d", d)?);
    launch_out!(
        gpu,
        "layer_norm",
        cfg_rows(rows),
        &mut out,
        [x, &norm.weight, &norm.bias],
        [&r, &dd, &norm.eps]
    )
}

/// The encoder's residual update and the LayerNorm after it, in one pass:
/// `h = λ·(y + y_bias) + h` (one fused multiply-add, `h` updated in place), then
/// `out = LayerNorm(h)·weight + bias`. `h`, `y`, `out` are `[rows, d]`; `y_bias`, `lambda` `[d]`.
pub fn residual_layer_norm(
    gpu: &Gpu,
    h: &mut CudaViewMut<'_, f32>,
    y: &CudaView<'_, f32>,
    y_bias: &CudaView<'_, f32>,
    lambda: &CudaView<'_, f32>,
    norm: &LayerNormParams<'_>,
    mut out: Out<'_>,
) -> Result<()> {
    let (rows, d) = check_norm(norm, h.len(), "residual stream")?;
    let shape = format!("[{rows}, {d}]");
    exact("residual branch output", y.len(), h.len(), &shape)?;
    exact("residual branch bias", y_bias.len(), d, &format!("[{d}]"))?;
    exact("LayerScale lambda", lambda.len(), d, &format!("[{d}]"))?;
    exact("LayerNorm output", out.len(), h.len(), &shape)?;
    if rows == 0 {
        return Ok(());
    }
    let (r, dd) = (to_i32("rows", rows)?, to_i32("d", d)?);
    launch_out!(
        gpu,
        "layer_norm_residual",
        cfg_rows(rows),
        &mut out,
        [&mut *h, y, y_bias, lambda, &norm.weight, &norm.bias],
        [&r, &dd, &norm.eps]
    )
}

// ---------------------------------------------------------------------------------------------
// GELU and bias

/// The function applied after the bias add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x + bias` (the q/k/v projections).
    Identity,
    /// Exact GELU of `x + bias` (fc1).
    Gelu,
}

impl Activation {
    fn flag(self) -> i32 {
        match self {
            Activation::Identity => 0,
            Activation::Gelu => 1,
        }
    }
}

/// `x = gelu(x)` element-wise, in place (any shape).
pub fn gelu(gpu: &Gpu, x: &mut CudaViewMut<'_, f32>) -> Result<()> {
    let n = to_i32("GELU input length", x.len())?;
    if n == 0 {
        return Ok(());
    }
    launch!(gpu, "gelu_f32", cfg_1d(x.len()), &mut *x, &n)
}

/// Checks `[rows, cols]` against a bias of `cols`; returns `(rows, cols)`.
fn check_bias(n: usize, bias: usize, what: &str) -> Result<(usize, usize)> {
    positive("bias length", bias)?;
    if n % bias != 0 {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: format!("[rows, {bias}] (a multiple of the bias length {bias})"),
            found: format!("{n} elements"),
        });
    }
    to_i32(what, n)?;
    Ok((n / bias, bias))
}

/// `x[r, c] = act(x[r, c] + bias[c])` in place, `x` `[rows, cols]`, `cols = bias.len()`.
pub fn bias_act(
    gpu: &Gpu,
    x: &mut CudaViewMut<'_, f32>,
    bias: &CudaView<'_, f32>,
    act: Activation,
) -> Result<()> {
    let (rows, cols) = check_bias(x.len(), bias.len(), "bias/activation input")?;
    if rows == 0 {
        return Ok(());
    }
    let (r, c, a) = (to_i32("rows", rows)?, to_i32("cols", cols)?, act.flag());
    launch!(gpu, "gelu_bias_f32", cfg_1d(x.len()), &mut *x, bias, &r, &c, &a)
}

/// `out[r, c] = act(x[r, c] + bias[c])`, out of place, in f32 or half precision (the input of
/// the next GEMM).
pub fn bias_act_to(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    bias: &CudaView<'_, f32>,
    act: Activation,
    mut out: Out<'_>,
) -> Result<()> {
    let (rows, cols) = check_bias(x.len(), bias.len(), "bias/activation input")?;
    exact("bias/activation output", out.len(), x.len(), &format!("[{rows}, {cols}]"))?;
    if rows == 0 {
        return Ok(());
    }
    let (r, c, a) = (to_i32("rows", rows)?, to_i32("cols", cols)?, act.flag());
    launch_out!(gpu, "gelu_bias_to", cfg_1d(x.len()), &mut out, [x, bias], [&r, &c, &a])
}

// ---------------------------------------------------------------------------------------------
// Pooling

/// The layout of per-slice token grids in a buffer: `n_slices` groups of `rows_per_slice` rows
/// of `dim` values; the `grid × grid` patch grid (row-major) starts at row `first` of each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    pub n_slices: usize,
    pub rows_per_slice: usize,
    pub first: usize,
    pub grid: usize,
    pub dim: usize,
}

impl TokenGrid {
    /// Encoder features `[n_slices, 1 + grid², dim]` (CLS first, skipped).
    pub fn features(n_slices: usize, grid: usize, dim: usize) -> TokenGrid {
        TokenGrid { n_slices, rows_per_slice: 1 + grid * grid, first: 1, grid, dim }
    }

    /// Masks at patch resolution `[n_slices, grid²]` (one value per cell).
    pub fn masks(n_slices: usize, grid: usize) -> TokenGrid {
        TokenGrid { n_slices, rows_per_slice: grid * grid, first: 0, grid, dim: 1 }
    }

    /// Checks the layout against a buffer of `len` values named `what`.
    fn check(&self, what: &str, len: usize) -> Result<()> {
        positive("token grid side", self.grid)?;
        positive("token dim", self.dim)?;
        let cells = self.grid.checked_mul(self.grid).and_then(|c| c.checked_add(self.first));
        if cells.is_none_or(|c| c > self.rows_per_slice) {
            return Err(Error::Shape {
                what: format!("{what}: token grid"),
                expected: format!(
                    "{} rows per slice holding {} skipped + {}×{} grid rows",
                    self.rows_per_slice, self.first, self.grid, self.grid
                ),
                found: "a grid that does not fit its slice".into(),
            });
        }
        let n = count(what, &[self.n_slices, self.rows_per_slice, self.dim])?;
        exact(what, len, n, &format!("[{}, {}, {}]", self.n_slices, self.rows_per_slice, self.dim))
    }
}

/// The global tokens: `out[t] = mean of the grid² rows of slice t` (`[n_slices, dim]`), each
/// summed in row order as `region::pool::mean_rows`. With [`TokenGrid::masks`] it gives the
/// global mask weights.
pub fn global_tokens(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    layout: &TokenGrid,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    layout.check("global-token input", x.len())?;
    let n_out = count("global tokens", &[layout.n_slices, layout.dim])?;
    exact("global tokens", out.len(), n_out, &format!("[{}, {}]", layout.n_slices, layout.dim))?;
    if n_out == 0 {
        return Ok(());
    }
    let args = (
        to_i32("n_slices", layout.n_slices)?,
        to_i32("slice stride", count("slice stride", &[layout.rows_per_slice, layout.dim])?)?,
        to_i32("first", layout.first)?,
        to_i32("grid²", layout.grid * layout.grid)?,
        to_i32("dim", layout.dim)?,
    );
    launch!(
        gpu,
        "pool_mean_rows_f32",
        cfg_1d(n_out),
        x,
        &mut *out,
        &args.0,
        &args.1,
        &args.2,
        &args.3,
        &args.4
    )
}

/// Adaptive average pooling (`F.adaptive_avg_pool2d`) of the `grid × grid` patch grid of each
/// slice in `slices` (any order, at most [`MAX_POOL_SLICES`]) to `g × g`:
/// `out` `[slices.len(), g, g, dim]`, as `region::pool::adaptive_pool_rows` per slice.
pub fn adaptive_pool(
    gpu: &Gpu,
    x: &CudaView<'_, f32>,
    layout: &TokenGrid,
    slices: &[usize],
    g: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    layout.check("adaptive-pool input", x.len())?;
    positive("pooled grid side", g)?;
    if slices.len() > MAX_POOL_SLICES {
        return Err(Error::invalid(
            "slices",
            format!("{} slices in one call; at most {MAX_POOL_SLICES}", slices.len()),
        ));
    }
    if let Some(&bad) = slices.iter().find(|&&s| s >= layout.n_slices) {
        return Err(Error::invalid(
            "slices",
            format!("slice {bad} is outside the {} slices of the input", layout.n_slices),
        ));
    }
    let n_out = count("pooled grids", &[slices.len(), g, g, layout.dim])?;
    exact("pooled grids", out.len(), n_out, &format!("[{}, {g}, {g}, {}]", slices.len(), layout.dim))?;
    if n_out == 0 {
        return Ok(());
    }
    let mut sel = [0i32; MAX_POOL_SLICES];
    for (dst, &s) in sel.iter_mut().zip(slices) {
        *dst = to_i32("slice", s)?;
    }
    let args = (
        to_i32("slices", slices.len())?,
        to_i32("slice stride", count("slice stride", &[layout.rows_per_slice, layout.dim])?)?,
        to_i32("first", layout.first)?,
        to_i32("grid", layout.grid)?,
        to_i32("g", g)?,
        to_i32("dim", layout.dim)?,
    );
    launch!(
        gpu,
        "pool_adaptive_f32",
        cfg_1d(n_out),
        x,
        &mut *out,
        &sel,
        &args.0,
        &args.1,
        &args.2,
        &args.3,
        &args.4,
        &args.5
    )
}

/// Bilinear resize (`align_corners=False`, no antialiasing) of `n` byte masks `[n, h, w]`
/// (`size = [h, w]`) to `out` `[n, oh, ow]` f32 (`out_size = [oh, ow]`), as
/// `region::pool::bilinear_mask` per mask.
pub fn bilinear_masks(
    gpu: &Gpu,
    masks: &CudaView<'_, u8>,
    n: usize,
    size: [usize; 2],
    out_size: [usize; 2],
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let ([h, w], [oh, ow]) = (size, out_size);
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(Error::invalid(
            "mask resize",
            format!("masks {h}×{w} → {oh}×{ow}: every side must be at least 1"),
        ));
    }
    let n_in = count("masks", &[n, h, w])?;
    exact("masks", masks.len(), n_in, &format!("[{n}, {h}, {w}]"))?;
    let n_out = count("resized masks", &[n, oh, ow])?;
    exact("resized masks", out.len(), n_out, &format!("[{n}, {oh}, {ow}]"))?;
    if n_out == 0 {
        return Ok(());
    }
    let args = (to_i32("n", n)?, to_i32("h", h)?, to_i32("w", w)?, to_i32("oh", oh)?, to_i32("ow", ow)?);
    launch!(
        gpu,
        "pool_bilinear_mask_u8",
        cfg_1d(n_out),
        masks,
        &mut *out,
        &args.0,
        &args.1,
        &args.2,
        &args.3,
        &args.4
    )
}

/// The nonzero count of each of the `n` planes of `masks` (`[n, plane]` bytes) into `out`
/// `[n]` (exact integer sums).
pub fn mask_areas(
    gpu: &Gpu,
    masks: &CudaView<'_, u8>,
    n: usize,
    plane: usize,
    out: &mut CudaViewMut<'_, u32>,
) -> Result<()> {
    let n_in = count("masks", &[n, plane])?;
    exact("masks", masks.len(), n_in, &format!("[{n}, {plane}]"))?;
    exact("mask areas", out.len(), n, &format!("[{n}]"))?;
    if n == 0 {
        return Ok(());
    }
    let plane = to_i32("plane", plane)?;
    let cfg = LaunchConfig {
        grid_dim: (to_i32("n", n)? as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(gpu, "pool_mask_area_u8", cfg, masks, &mut *out, &plane)
}

/// Binarization of the mask vectors in [`masked_mean`] (tokens.rs: `mask_extractor`'s
/// `binarize_threshold` and `eps`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskWeights {
    /// A token is on when its mask value is `> threshold`.
    pub threshold: f32,
    /// `w = on / (Σ on + eps)`.
    pub eps: f32,
}

/// The Osprey masked mean of every slot: `on_i = m[slot, i] > threshold`,
/// `w_i = on_i / (Σ on + eps)`, `out[slot] = Σ_i w_i · features[i]` (zero weights skipped, in
/// token order). `masks` is `[n_slots, n_tokens]`, `features` `[n_tokens, dim]` (one level's
/// R²-pooled tokens), `out` `[n_slots, dim]`.
pub fn masked_mean(
    gpu: &Gpu,
    masks: &CudaView<'_, f32>,
    n_slots: usize,
    features: &CudaView<'_, f32>,
    dim: usize,
    weights: MaskWeights,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    positive("feature dim", dim)?;
    if n_slots > MAX_MASK_SLOTS {
        return Err(Error::invalid(
            "n_slots",
            format!("{n_slots} slots in one call; at most {MAX_MASK_SLOTS}"),
        ));
    }
    if features.len() % dim != 0 {
        return Err(Error::Shape {
            what: "masked-mean features".into(),
            expected: format!("[n_tokens, {dim}]"),
            found: format!("{} elements", features.len()),
        });
    }
    let n_tokens = features.len() / dim;
    positive("n_tokens (features rows)", n_tokens)?;
    if n_tokens >= 1 << 24 {
        return Err(Error::invalid(
            "n_tokens",
            format!("{n_tokens}: the mask count must stay exact in f32 (< 2^24)"),
        ));
    }
    to_i32("masked-mean features", features.len())?;
    let n_masks = count("mask vectors", &[n_slots, n_tokens])?;
    if masks.len() != n_masks {
        return Err(Error::Shape {
            what: "mask vectors".into(),
            expected: format!(
                "[{n_slots} slots, {n_tokens} tokens] = {n_masks} elements, to fit the features [{n_tokens}, {dim}]"
            ),
            found: format!("{} elements", masks.len()),
        });
    }
    if !weights.eps.is_finite() || weights.threshold.is_nan() {
        return Err(Error::invalid(
            "mask weights",
            format!("threshold {} and eps {} must be numbers (eps finite)", weights.threshold, weights.eps),
        ));
    }
    let n_out = count("masked means", &[n_slots, dim])?;
    exact("masked means", out.len(), n_out, &format!("[{n_slots}, {dim}]"))?;
    if n_out == 0 {
        return Ok(());
    }
    let (nt, d) = (to_i32("n_tokens", n_tokens)?, to_i32("dim", dim)?);
    let cfg = LaunchConfig {
        grid_dim: (dim.div_ceil(BLOCK as usize) as u32, n_slots as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(
        gpu,
        "pool_masked_mean_f32",
        cfg,
        masks,
        features,
        &mut *out,
        &nt,
        &d,
        &weights.threshold,
        &weights.eps
    )
}
