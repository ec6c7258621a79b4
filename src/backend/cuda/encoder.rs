//! The RAD-DINO vision encoder on the GPU (issue #9): the twin of the CPU's
//! [`crate::vision::VisionEncoder`], composed from the launchers of [`super::ops::vision`],
//! [`super::ops::attention`] and the cuBLAS GEMMs of [`super::blas`].
//!
//! Design — per batch of `bs` slices (`n = bs·T` rows, `T = 1 + g²`), everything on the
//! [`Gpu`]'s stream, one host synchronisation at the end of the batch:
//!
//! ```text
//! pixels [bs,C,S,S] ─ unfold_patches ─► patches ─ GEMM patch weight ─► pe [bs·g², D]
//! h = assemble_embeddings(pe, bias, cls, positions)           → hidden_states[0]
//! a = layer_norm(h, norm1 of block 0)
//! for each block i:
//!     q,k,v = GEMM(a, Wq/Wk/Wv) + bias (bias_act Identity, in place)
//!     a = attention_encoder(q, k, v)
//!     y = GEMM(a, Wo)
//!     h += λ1·(y + bo);  a = LN2(h)                           (residual_layer_norm, fused)
//!     m = gelu(GEMM(a, W1) + b1)                               (bias_act / bias_act_to)
//!     y = GEMM(m, W2)
//!     h += λ2·(y + b2);  a = LN(h) with norm1 of block i+1, or the final norm after the last
//!                                                              → hidden_states[i + 1] = h
//! last_hidden_state = a
//! ```
//!
//! The CPU's order of operations is kept exactly (`residual` then `layer_norm` is what the
//! fused kernel repeats); only the GEMMs differ. Requested hidden states are copied on the
//! device into per-level buffers while the batch runs, then downloaded with
//! `last_hidden_state` once per batch.
//!
//! [`Precision`]:
//! * [`Precision::F32`] (validation): weights stay f32, GEMMs are [`Blas::gemm_xwt_f32`]
//!   (`CUBLAS_COMPUTE_32F`, no TF32). Every element-wise kernel (unfold, embeddings,
//!   LayerNorm, residual, bias, GELU, attention) is bit-identical to the CPU, so the only
//!   difference is the order in which cuBLAS sums the `k` products of each GEMM output (f32
//!   rounding, about 1e-7 relative per GEMM, carried through the layers): within
//!   `max_rel(VisionOp::Encoder(F32))`-class tolerance of the CPU (tests/cuda_encoder.rs: 1e-4).
//! * [`Precision::Bf16`] (production): the linear weights are rounded to bf16 once (round to
//!   nearest even, `half::bf16::from_f32`), and every GEMM input activation is rounded to bf16
//!   by the kernel that produces it (`Out::Bf16` of LayerNorm / unfold / bias-GELU,
//!   `f32_to_half` for the attention output); cuBLAS accumulates in f32 and writes f32.
//!   Biases, norms, LayerScale, CLS, positions, the residual stream and attention stay f32.
//!   The error is the bf16 rounding of both GEMM operands (2⁻⁸ relative each) propagated
//!   through the layers: tests/cuda_encoder.rs allows 3e-2 against the CPU's f32 encoder.
//!
//! Limits / left to do:
//! * Head widths 64 and 128 only (the attention kernel's); other configs are refused by
//!   [`DeviceEncoder::upload`] with [`Error::Unsupported`].
//! * The scratch of a full batch is kept from one [`DeviceEncoder::encode`] call to the next
//!   (reallocated only when the batch size or the number of kept levels changes); a shorter
//!   last batch gets a set of its own for that call (the attention launcher wants exact buffer
//!   lengths). Calls on one encoder take turns. No CUDA graph, no pinned host memory, no
//!   overlap of the pixel upload with compute. q/k/v are three GEMMs (a fused `[3D, D]` weight would need a strided
//!   attention input).
//! * Weights are read dequantized (`Weight::to_f32`) then rounded: a Q8_0/Q4 package runs with
//!   bf16 (or f32) copies of its dequantized weights, not with the quantized GEMV kernels.
//! * Wired into the pipeline through [`super::model::CudaModel`] (`report::generate_report_cuda`,
//!   `medregion encode|tokens|report --device cuda:N`).

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::blas::{f32_to_half, Blas, Half};
use super::ops::attention::attention_encoder;
use super::ops::vision::{
    assemble_embeddings, bias_act, bias_act_to, layer_norm, residual_layer_norm, unfold_patches, Activation,
    LayerNormParams, Out,
};
use super::{driver_error, Gpu};
use crate::model::config::VisionConfig;
use crate::model::Model;
use crate::tensor::Weight;
use crate::vision::{AttentionShape, EncodeOptions, VisionEncoder, VisionOutput};
use crate::{Error, Result};

/// How the linear layers run (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// bf16 weights and GEMM inputs, f32 accumulation (production).
    Bf16,
    /// f32 weights and GEMMs (validation).
    F32,
}

/// A linear layer's weight `[rows, cols]` on the device, in the encoder's precision.
enum DeviceWeight {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

/// `y = x·Wᵀ` (+ `bias`, applied by the caller's kernel): `w` `[rows, cols]`, `bias` `[rows]`.
struct Linear {
    w: DeviceWeight,
    bias: CudaSlice<f32>,
    rows: usize,
    cols: usize,
}

/// LayerNorm weight and bias `[D]`.
struct Norm {
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
}

/// One pre-norm block (HF `Dinov2Layer`).
struct Block {
    norm1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    lambda1: CudaSlice<f32>,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    lambda2: CudaSlice<f32>,
}

/// The vision encoder's weights on one GPU, uploaded once; `encode` runs the forward pass.
pub struct DeviceEncoder {
    gpu: Arc<Gpu>,
    blas: Blas,
    config: VisionConfig,
    precision: Precision,
    patch: Linear, // [D, C·p·p], bias [D]
    cls: CudaSlice<f32>,
    positions: CudaSlice<f32>, // [T, D]
    blocks: Vec<Block>,
    final_norm: Norm,
    /// The scratch of the last full batch, kept for the next `encode` (one study after another
    /// allocates nothing); a shorter last batch gets a set of its own for that call.
    cache: std::sync::Mutex<Option<Scratch>>,
}

impl std::fmt::Debug for DeviceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEncoder")
            .field("gpu", &self.gpu.ordinal())
            .field("precision", &self.precision)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Checks the config against what the GPU path supports.
fn check_config(c: &VisionConfig) -> Result<()> {
    if c.hidden_size == 0 || c.n_heads == 0 || c.hidden_size % c.n_heads != 0 {
        return Err(Error::invalid(
            "vision config",
            format!("hidden_size {} is not a positive multiple of n_heads {}", c.hidden_size, c.n_heads),
        ));
    }
    let hd = c.hidden_size / c.n_heads;
    if hd != 64 && hd != 128 {
        return Err(Error::Unsupported(format!(
            "CUDA vision encoder with heads of {hd} values (the attention kernel takes 64 or 128)"
        )));
    }
    if c.patch_size == 0 || c.image_size < c.patch_size || c.num_channels == 0 || c.intermediate_size == 0 {
        return Err(Error::invalid(
            "vision config",
            format!(
                "image_size {}, patch_size {}, num_channels {}, intermediate_size {}: need 1 ≤ patch ≤ image and channels, intermediate ≥ 1",
                c.image_size, c.patch_size, c.num_channels, c.intermediate_size
            ),
        ));
    }
    Ok(())
}

impl DeviceEncoder {
    /// Reads the `vit.*` weights of `model` through the CPU encoder ([`VisionEncoder::new`]:
    /// the same names and shape checks) and uploads them to `gpu` once, the linear weights in
    /// `precision`.
    pub fn upload(gpu: &Arc<Gpu>, model: &Model<'_>, precision: Precision) -> Result<DeviceEncoder> {
        check_config(&model.config().vision)?;
        let cpu = VisionEncoder::new(model)?;
        let blas = Blas::new(gpu)?;
        let weight = |host: Vec<f32>| -> Result<DeviceWeight> {
            Ok(match precision {
                Precision::F32 => DeviceWeight::F32(gpu.upload(&host)?),
                Precision::Bf16 => {
                    let bits: Vec<u16> = host.iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
                    DeviceWeight::Bf16(gpu.upload(&bits)?)
                }
            })
        };
        let linear = |(w, bias): &(Weight<'_>, Vec<f32>)| -> Result<Linear> {
            let (rows, cols) = (w.shape()[0], w.shape()[1]);
            Ok(Linear { w: weight(w.to_f32()?)?, bias: gpu.upload(bias)?, rows, cols })
        };
        let norm = |(w, b): &(Vec<f32>, Vec<f32>)| -> Result<Norm> {
            Ok(Norm { weight: gpu.upload(w)?, bias: gpu.upload(b)? })
        };
        let blocks = cpu
            .blocks
            .iter()
            .map(|b| {
                let [q, k, v] = &b.qkv;
                Ok(Block {
                    norm1: norm(&b.norm1)?,
                    q: linear(q)?,
                    k: linear(k)?,
                    v: linear(v)?,
                    out: linear(&b.out)?,
                    lambda1: gpu.upload(&b.lambda1)?,
                    norm2: norm(&b.norm2)?,
                    fc1: linear(&b.fc1)?,
                    fc2: linear(&b.fc2)?,
                    lambda2: gpu.upload(&b.lambda2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let [rows, cols] = cpu.patch_shape;
        let patch =
            Linear { w: weight(cpu.patch_weight.clone())?, bias: gpu.upload(&cpu.patch_bias)?, rows, cols };
        let enc = DeviceEncoder {
            cls: gpu.upload(&cpu.cls)?,
            positions: gpu.upload(&cpu.positions)?,
            final_norm: norm(&cpu.final_norm)?,
            gpu: gpu.clone(),
            blas,
            patch,
            blocks,
            precision,
            config: cpu.config.clone(),
            cache: std::sync::Mutex::new(None),
        };
        enc.gpu.sync()?;
        Ok(enc)
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// The device the encoder runs on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Encodes `n_slices` slices `pixels` `[n_slices, C, S, S]` (normalized, as
    /// [`crate::vision::slices_from_volume`] makes them; the CPU encoder's input), in batches of
    /// `options.batch` slices (0 = [`DEFAULT_BATCH`]), returning `last_hidden_state` and the
    /// hidden states of `options.levels` exactly as [`crate::vision::VisionEncoder::encode`]
    /// does (same layout; values within the tolerance of the module doc). Bad shapes,
    /// non-finite pixels and unknown levels are errors (nothing is launched).
    pub fn encode(&self, pixels: &[f32], n_slices: usize, options: &EncodeOptions) -> Result<VisionOutput> {
        let c = &self.config;
        let (mut output, batch) = crate::vision::encoder::plan(c, pixels, n_slices, options)?;
        let levels: Vec<usize> = output.hidden_states.iter().map(|(l, _)| *l).collect();
        let stream = self.gpu.stream();
        self.run_batches(pixels, n_slices, batch, &levels, |sc, span| {
            stream
                .memcpy_dtoh(&sc.a, &mut output.last_hidden_state[span.clone()])
                .map_err(|e| driver_error("last_hidden_state download", e))?;
            for ((_, dst), src) in output.hidden_states.iter_mut().zip(&sc.levels) {
                stream
                    .memcpy_dtoh(src, &mut dst[span.clone()])
                    .map_err(|e| driver_error("hidden state download", e))?;
            }
            // The host buffers are read after the call: wait for the copies.
            self.gpu.sync()
        })?;
        Ok(output)
    }

    /// [`DeviceEncoder::encode`] with the outputs left in device memory (same layout, same
    /// values), for the stages that continue on the device (the R² pooling of the region
    /// tokens): nothing of the study's features crosses the bus. Enqueued; the arrays are
    /// ready in stream order.
    pub fn encode_on_device(
        &self,
        pixels: &[f32],
        n_slices: usize,
        options: &EncodeOptions,
    ) -> Result<DeviceVision> {
        let c = &self.config;
        let plan = crate::vision::encoder::check_plan(c, pixels, n_slices, options)?;
        let gpu = &*self.gpu;
        let total = plan.total.max(1);
        let mut out = DeviceVision {
            n_slices,
            n_tokens: c.n_positions(),
            hidden_size: c.hidden_size,
            last_hidden_state: gpu.alloc(total)?,
            hidden_states: plan.levels.iter().map(|&l| Ok((l, gpu.alloc(total)?))).collect::<Result<_>>()?,
        };
        let stream = gpu.stream();
        self.run_batches(pixels, n_slices, plan.batch, &plan.levels, |sc, span| {
            stream
                .memcpy_dtod(&sc.a, &mut out.last_hidden_state.slice_mut(span.clone()))
                .map_err(|e| driver_error("last_hidden_state copy", e))?;
            for ((_, dst), src) in out.hidden_states.iter_mut().zip(&sc.levels) {
                stream
                    .memcpy_dtod(src, &mut dst.slice_mut(span.clone()))
                    .map_err(|e| driver_error("hidden state copy", e))?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs the batches of a checked input, handing each batch's scratch (outputs in `sc.a`
    /// and `sc.levels`) and its element range of the `[n_slices, T, D]` outputs to `sink`.
    fn run_batches(
        &self,
        pixels: &[f32],
        n_slices: usize,
        batch: usize,
        levels: &[usize],
        mut sink: impl FnMut(&Scratch, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let c = &self.config;
        let (d, t, per_slice) =
            (c.hidden_size, c.n_positions(), c.num_channels * c.image_size * c.image_size);
        if n_slices == 0 {
            return Ok(());
        }
        // Calls on one encoder take turns (they share the cached scratch and the stream).
        let mut cached = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut short: Option<Scratch> = None;
        for b0 in (0..n_slices).step_by(batch) {
            let bs = batch.min(n_slices - b0);
            let slot = if bs == batch { &mut *cached } else { &mut short };
            if slot.as_ref().is_none_or(|sc| sc.bs != bs || sc.levels.len() != levels.len()) {
                drop(slot.take()); // free the previous set first
                *slot = Some(self.scratch(bs, levels.len())?);
            }
            let Some(sc) = slot.as_mut() else {
                return Err(Error::Internal("encoder scratch was not allocated".into()));
            };
            self.gpu
                .stream()
                .memcpy_htod(&pixels[b0 * per_slice..(b0 + bs) * per_slice], &mut sc.pixels)
                .map_err(|e| driver_error("pixel upload", e))?;
            self.forward_batch(sc, levels)?;
            sink(sc, b0 * t * d..(b0 + bs) * t * d)?;
        }
        // The short batch's scratch is freed when this returns: its copies must be done.
        if short.is_some() {
            self.gpu.sync()?;
        }
        Ok(())
    }

    /// Device buffers for a batch of `bs` slices keeping `n_levels` hidden states.
    fn scratch(&self, bs: usize, n_levels: usize) -> Result<Scratch> {
        let c = &self.config;
        let (d, inter, t, g) = (c.hidden_size, c.intermediate_size, c.n_positions(), c.grid());
        let n = bs * t;
        let n_patches = bs * g * g;
        let gpu = &self.gpu;
        let half = match self.precision {
            Precision::F32 => None,
            Precision::Bf16 => {
                let len = (n * d).max(n * inter).max(n_patches * self.patch.cols);
                Some(gpu.alloc::<u16>(len)?)
            }
        };
        let patches = match self.precision {
            Precision::F32 => Some(gpu.alloc::<f32>(n_patches * self.patch.cols)?),
            Precision::Bf16 => None,
        };
        Ok(Scratch {
            bs,
            pixels: gpu.alloc(bs * c.num_channels * c.image_size * c.image_size)?,
            patches,
            half,
            h: gpu.alloc(n * d)?,
            a: gpu.alloc(n * d)?,
            q: gpu.alloc(n * d)?,
            k: gpu.alloc(n * d)?,
            v: gpu.alloc(n * d)?,
            mlp: gpu.alloc(n * inter)?,
            levels: (0..n_levels).map(|_| gpu.alloc(n * d)).collect::<Result<_>>()?,
        })
    }

    /// `out[m, rows] = x[m, cols] · Wᵀ` for the GEMM input of this precision (`x` f32 on the
    /// F32 path, `x16` bf16 bits on the Bf16 path).
    fn gemm(
        &self,
        lin: &Linear,
        x: &CudaSlice<f32>,
        x16: Option<&CudaSlice<u16>>,
        m: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        match (&lin.w, x16) {
            (DeviceWeight::F32(w), _) => self.blas.gemm_xwt_f32(x, w, out, m, lin.rows, lin.cols),
            (DeviceWeight::Bf16(w), Some(x16)) => {
                self.blas.gemm_xwt(Half::Bf16, x16, w, out, m, lin.rows, lin.cols)
            }
            (DeviceWeight::Bf16(_), None) => {
                Err(Error::Internal("bf16 GEMM without its bf16 input buffer".into()))
            }
        }
    }

    /// One batch: pixels in `sc.pixels`; leaves `last_hidden_state` in `sc.a` and
    /// `hidden_states[levels[j]]` in `sc.levels[j]` (enqueued, not synchronised).
    fn forward_batch(&self, sc: &mut Scratch, levels: &[usize]) -> Result<()> {
        let gpu = &*self.gpu;
        let c = &self.config;
        let (d, inter, t, g) = (c.hidden_size, c.intermediate_size, c.n_positions(), c.grid());
        let bs = sc.bs;
        let n = bs * t;
        let n_patches = bs * g * g;
        let eps = c.layer_norm_eps;
        let keep = |sc: &mut Scratch, level: usize| -> Result<()> {
            if let Some(j) = levels.iter().position(|&l| l == level) {
                gpu.stream()
                    .memcpy_dtod(&sc.h, &mut sc.levels[j])
                    .map_err(|e| driver_error("hidden state copy", e))?;
            }
            Ok(())
        };

        // Embeddings: patches [bs·g², C·p·p] → pe [bs·g², D] (in q); h = cat(cls, pe + b) + pos.
        let pcols = self.patch.cols;
        let patches = match (&mut sc.patches, &mut sc.half) {
            (Some(p), _) => Out::F32(p.slice_mut(..n_patches * pcols)),
            (None, Some(x16)) => Out::Bf16(x16.slice_mut(..n_patches * pcols)),
            (None, None) => return Err(Error::Internal("encoder scratch without a patch buffer".into())),
        };
        unfold_patches(gpu, &sc.pixels.as_view(), bs, c.num_channels, c.image_size, c.patch_size, patches)?;
        match &sc.patches {
            Some(p) => self.gemm(&self.patch, p, None, n_patches, &mut sc.q)?,
            None => self.gemm(&self.patch, &sc.a, sc.half.as_ref(), n_patches, &mut sc.q)?,
        }
        assemble_embeddings(
            gpu,
            &sc.q.slice(..n_patches * d),
            &self.patch.bias.as_view(),
            &self.cls.as_view(),
            &self.positions.as_view(),
            bs,
            &mut sc.h.as_view_mut(),
        )?;
        keep(sc, 0)?;

        // The GEMM input of the next linear layer: LN output / attention output / GELU output,
        // in `a` / `mlp` (f32) or in `half` (bf16 bits).
        let first_norm = self.blocks.first().map_or(&self.final_norm, |b| &b.norm1);
        if self.blocks.is_empty() {
            // last_hidden_state = LN_final(embeddings), in f32.
            layer_norm(
                gpu,
                &sc.h.as_view(),
                &norm_params(&self.final_norm, eps),
                Out::F32(sc.a.as_view_mut()),
            )?;
            return Ok(());
        }
        layer_norm(
            gpu,
            &sc.h.as_view(),
            &norm_params(first_norm, eps),
            gemm_input(&mut sc.a, &mut sc.half, n * d),
        )?;

        let shape = AttentionShape { n_seq: bs, n_tokens: t, n_heads: c.n_heads, head_dim: c.head_dim() };
        for (i, blk) in self.blocks.iter().enumerate() {
            // h = h + λ1 ⊙ attn(LN1(h)); LN1(h) is in a / half.
            self.gemm(&blk.q, &sc.a, sc.half.as_ref(), n, &mut sc.q)?;
            bias_act(gpu, &mut sc.q.as_view_mut(), &blk.q.bias.as_view(), Activation::Identity)?;
            self.gemm(&blk.k, &sc.a, sc.half.as_ref(), n, &mut sc.k)?;
            bias_act(gpu, &mut sc.k.as_view_mut(), &blk.k.bias.as_view(), Activation::Identity)?;
            self.gemm(&blk.v, &sc.a, sc.half.as_ref(), n, &mut sc.v)?;
            bias_act(gpu, &mut sc.v.as_view_mut(), &blk.v.bias.as_view(), Activation::Identity)?;
            attention_encoder(gpu, &sc.q, &sc.k, &sc.v, &mut sc.a, shape)?;
            if let Some(x16) = sc.half.as_mut() {
                f32_to_half(gpu, Half::Bf16, &sc.a.as_view(), &mut x16.as_view_mut(), n * d)?;
            }
            self.gemm(&blk.out, &sc.a, sc.half.as_ref(), n, &mut sc.q)?;
            residual_layer_norm(
                gpu,
                &mut sc.h.as_view_mut(),
                &sc.q.as_view(),
                &blk.out.bias.as_view(),
                &blk.lambda1.as_view(),
                &norm_params(&blk.norm2, eps),
                gemm_input(&mut sc.a, &mut sc.half, n * d),
            )?;

            // h = h + λ2 ⊙ fc2(gelu(fc1(LN2(h)))); LN2(h) is in a / half.
            self.gemm(&blk.fc1, &sc.a, sc.half.as_ref(), n, &mut sc.mlp)?;
            match sc.half.as_mut() {
                Some(x16) => bias_act_to(
                    gpu,
                    &sc.mlp.as_view(),
                    &blk.fc1.bias.as_view(),
                    Activation::Gelu,
                    Out::Bf16(x16.slice_mut(..n * inter)),
                )?,
                None => bias_act(gpu, &mut sc.mlp.as_view_mut(), &blk.fc1.bias.as_view(), Activation::Gelu)?,
            }
            self.gemm(&blk.fc2, &sc.mlp, sc.half.as_ref(), n, &mut sc.q)?;
            // The LayerNorm after this residual: norm1 of the next block, or the final norm
            // (whose output, last_hidden_state, is f32 on both paths).
            let last = i + 1 == self.blocks.len();
            let (next_norm, out) = if last {
                (&self.final_norm, Out::F32(sc.a.as_view_mut()))
            } else {
                (&self.blocks[i + 1].norm1, gemm_input(&mut sc.a, &mut sc.half, n * d))
            };
            residual_layer_norm(
                gpu,
                &mut sc.h.as_view_mut(),
                &sc.q.as_view(),
                &blk.fc2.bias.as_view(),
                &blk.lambda2.as_view(),
                &norm_params(next_norm, eps),
                out,
            )?;
            keep(sc, i + 1)?;
        }
        Ok(())
    }
}

/// LayerNorm parameters of `nm` with `eps`.
fn norm_params(nm: &Norm, eps: f32) -> LayerNormParams<'_> {
    LayerNormParams { weight: nm.weight.as_view(), bias: nm.bias.as_view(), eps }
}

/// Where a kernel writes the `[n, D]` (`len` values) input of the next GEMM: the bf16 buffer
/// on the Bf16 path (it exists only there), else `a` in f32.
fn gemm_input<'a>(a: &'a mut CudaSlice<f32>, half: &'a mut Option<CudaSlice<u16>>, len: usize) -> Out<'a> {
    match half {
        Some(x16) => Out::Bf16(x16.slice_mut(..len)),
        None => Out::F32(a.as_view_mut()),
    }
}

/// The encoder's outputs in device memory ([`DeviceEncoder::encode_on_device`]): the
/// [`VisionOutput`] layout, `[n_slices, n_tokens, hidden_size]` per array.
pub struct DeviceVision {
    pub n_slices: usize,
    /// Tokens per slice, CLS first: `1 + g²`.
    pub n_tokens: usize,
    pub hidden_size: usize,
    /// After the final LayerNorm.
    pub last_hidden_state: CudaSlice<f32>,
    /// `(level, array)` for each requested level, in increasing order.
    pub hidden_states: Vec<(usize, CudaSlice<f32>)>,
}

impl DeviceVision {
    /// The hidden state of `level`, if it was requested.
    pub fn hidden_state(&self, level: usize) -> Option<&CudaSlice<f32>> {
        self.hidden_states.iter().find(|(l, _)| *l == level).map(|(_, v)| v)
    }
}

impl std::fmt::Debug for DeviceVision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceVision")
            .field("n_slices", &self.n_slices)
            .field("n_tokens", &self.n_tokens)
            .field("hidden_size", &self.hidden_size)
            .field("levels", &self.hidden_states.iter().map(|(l, _)| *l).collect::<Vec<_>>())
            .finish()
    }
}

/// Device activations of one batch of `bs` slices (`n = bs·T` rows).
struct Scratch {
    bs: usize,
    pixels: CudaSlice<f32>,          // [bs, C, S, S]
    patches: Option<CudaSlice<f32>>, // [bs·g², C·p·p] (F32 path)
    half: Option<CudaSlice<u16>>,    // bf16 GEMM inputs, max([n, D], [n, I], patches) (Bf16 path)
    h: CudaSlice<f32>,               // [n, D] residual stream
    a: CudaSlice<f32>,               // [n, D] LN output (F32) / attention output / last_hidden_state
    q: CudaSlice<f32>,               // [n, D] q, patch embeddings, projection outputs
    k: CudaSlice<f32>,               // [n, D]
    v: CudaSlice<f32>,               // [n, D]
    mlp: CudaSlice<f32>,             // [n, I]
    levels: Vec<CudaSlice<f32>>,     // [n, D] per requested level
}
