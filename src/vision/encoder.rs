//! [`VisionEncoder`]: the Dinov2 forward pass (see the module doc of `crate::vision`).

use std::ops::ControlFlow;
use std::time::Instant;

use super::attention::{attention, AttentionShape};
use super::layer_norm::{layer_norm, rows_per_task};
use super::math::gelu;
use super::{simd_dispatch, SyncPtr};
use crate::model::config::VisionConfig;
use crate::model::names::vit_layer;
use crate::model::Model;
use crate::ops::{self, Isa, ThreadPool};
use crate::tensor::{Dense, Weight};
use crate::{Error, Result};

/// Default slices per batch (see the module doc).
pub const DEFAULT_BATCH: usize = 8;

/// Options of [`VisionEncoder::encode`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Which `hidden_states` to return (HF indexing: 0 = embeddings, `i` = output of layer `i`,
    /// before the final LayerNorm); sorted and deduplicated. Usually
    /// `config.mask_extractor.levels`.
    pub levels: Vec<usize>,
    /// Slices encoded together; 0 = [`DEFAULT_BATCH`].
    pub batch: usize,
}

/// The encoder outputs for `n_slices` slices.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionOutput {
    pub n_slices: usize,
    /// Tokens per slice, CLS first: `1 + g²`.
    pub n_tokens: usize,
    /// `D`.
    pub hidden_size: usize,
    /// `[n_slices, n_tokens, D]`: after the final LayerNorm.
    pub last_hidden_state: Vec<f32>,
    /// `(level, [n_slices, n_tokens, D])` for each requested level, in increasing order.
    pub hidden_states: Vec<(usize, Vec<f32>)>,
}

impl VisionOutput {
    /// The hidden state of `level`, if it was requested.
    pub fn hidden_state(&self, level: usize) -> Option<&[f32]> {
        self.hidden_states.iter().find(|(l, _)| *l == level).map(|(_, v)| v.as_slice())
    }
}

/// Floating-point operations of one slice through the encoder (a multiply-add counts 2), by
/// op: what `medregion bench vision` divides by the time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncoderFlops {
    /// Patch embedding `[g², C·p·p] · [C·p·p, D]`: `2·g²·C·p²·D`.
    pub patch_embed: f64,
    /// q, k, v projections over all layers: `L · 3 · 2·T·D·D`.
    pub qkv: f64,
    /// Attention output projection: `L · 2·T·D·D`.
    pub out: f64,
    /// `fc1`: `L · 2·T·D·I`.
    pub fc1: f64,
    /// `fc2`: `L · 2·T·I·D`.
    pub fc2: f64,
    /// Attention `QKᵀ` and `PV` over all heads and layers: `L · 2 · 2·T²·D`.
    pub attention: f64,
}

impl EncoderFlops {
    /// The counts for one slice of `config`.
    pub fn per_slice(config: &VisionConfig) -> EncoderFlops {
        let (t, d, i, g) = (
            config.n_positions() as f64,
            config.hidden_size as f64,
            config.intermediate_size as f64,
            config.grid() as f64,
        );
        let cols = (config.num_channels * config.patch_size * config.patch_size) as f64;
        let l = config.n_layers as f64;
        EncoderFlops {
            patch_embed: 2.0 * g * g * cols * d,
            qkv: l * 3.0 * 2.0 * t * d * d,
            out: l * 2.0 * t * d * d,
            fc1: l * 2.0 * t * d * i,
            fc2: l * 2.0 * t * i * d,
            attention: l * 2.0 * 2.0 * t * t * d,
        }
    }

    /// Every GEMM (patch embedding and the linear layers).
    pub fn gemm(&self) -> f64 {
        self.patch_embed + self.qkv + self.out + self.fc1 + self.fc2
    }

    /// GEMMs and attention.
    pub fn total(&self) -> f64 {
        self.gemm() + self.attention
    }
}

/// Wall-clock seconds of one [`VisionEncoder::encode_profiled`] call by kind of op.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncodeProfile {
    /// `ops::gemm` calls (patch embedding, q/k/v/o, fc1, fc2).
    pub gemm_secs: f64,
    /// The attention kernel.
    pub attention_secs: f64,
    /// Everything else: patch unfolding, embeddings, LayerNorms, biases, GELU, residuals,
    /// copies of the requested hidden states.
    pub other_secs: f64,
}

impl EncodeProfile {
    pub fn total_secs(&self) -> f64 {
        self.gemm_secs + self.attention_secs + self.other_secs
    }
}

/// Runs `f`, adding its wall-clock time to `acc`.
#[inline]
fn timed<T>(acc: &mut f64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    *acc += start.elapsed().as_secs_f64();
    r
}

/// One pre-norm block's weights (HF `Dinov2Layer`); vectors are f32 copies.
/// (The CUDA encoder uploads these fields as they are: one reader of the `vit.*` names.)
pub(crate) struct Block<'m> {
    pub(crate) norm1: (Vec<f32>, Vec<f32>),      // [D], [D]
    pub(crate) qkv: [(Weight<'m>, Vec<f32>); 3], // [D, D] each, bias [D] (zeros without qkv_bias)
    pub(crate) out: (Weight<'m>, Vec<f32>),      // [D, D], [D]
    pub(crate) lambda1: Vec<f32>,                // [D] (ones without LayerScale)
    pub(crate) norm2: (Vec<f32>, Vec<f32>),      // [D], [D]
    pub(crate) fc1: (Weight<'m>, Vec<f32>),      // [I, D], [I]
    pub(crate) fc2: (Weight<'m>, Vec<f32>),      // [D, I], [D]
    pub(crate) lambda2: Vec<f32>,                // [D]
}

/// The encoder, borrowing its matrices from a loaded [`Model`]. Immutable; `Sync`.
pub struct VisionEncoder<'m> {
    pub(crate) config: VisionConfig,
    /// `[D, C·p·p]` (the conv weight flattened, f32 copy), name kept for errors.
    pub(crate) patch_weight: Vec<f32>,
    pub(crate) patch_shape: [usize; 2],
    pub(crate) patch_bias: Vec<f32>, // [D]
    pub(crate) cls: Vec<f32>,        // [D]
    pub(crate) positions: Vec<f32>,  // [1 + g², D]
    pub(crate) blocks: Vec<Block<'m>>,
    pub(crate) final_norm: (Vec<f32>, Vec<f32>), // [D], [D]
}

impl std::fmt::Debug for VisionEncoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionEncoder").field("config", &self.config).finish_non_exhaustive()
    }
}

const PATCH_NAME: &str = "vit.embeddings.patch_embeddings.projection.weight";

fn vector(model: &Model<'_>, name: &str, len: usize) -> Result<Vec<f32>> {
    let w = model.weight(name)?;
    if w.numel() != len {
        return Err(Error::Shape {
            what: format!("weight `{name}`"),
            expected: format!("{len} values"),
            found: w.numel().to_string(),
        });
    }
    w.to_f32()
}

fn matrix<'m>(model: &'m Model<'_>, name: &str, rows: usize, cols: usize) -> Result<Weight<'m>> {
    let w = model.weight(name)?;
    if w.shape() != [rows, cols] {
        return Err(Error::Shape {
            what: format!("weight `{name}`"),
            expected: format!("[{rows}, {cols}]"),
            found: crate::tensor::shape_string(w.shape()),
        });
    }
    Ok(w)
}

impl<'m> VisionEncoder<'m> {
    /// Reads the `vit.*` weights of `model` (shapes checked against its `vision` config).
    pub fn new(model: &'m Model<'_>) -> Result<VisionEncoder<'m>> {
        let config = model.config().vision.clone();
        let (d, inter) = (config.hidden_size, config.intermediate_size);
        let p = config.patch_size;
        let patch_cols = config.num_channels * p * p;
        let linear = |prefix: &str, rows: usize, cols: usize, bias: bool| -> Result<(Weight<'m>, Vec<f32>)> {
            let w = matrix(model, &format!("{prefix}.weight"), rows, cols)?;
            let b = if bias { vector(model, &format!("{prefix}.bias"), rows)? } else { vec![0.0; rows] };
            Ok((w, b))
        };
        let norm = |prefix: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((vector(model, &format!("{prefix}.weight"), d)?, vector(model, &format!("{prefix}.bias"), d)?))
        };
        let scale = |name: String| -> Result<Vec<f32>> {
            if config.layerscale {
                vector(model, &name, d)
            } else {
                Ok(vec![1.0; d])
            }
        };
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let attn =
                |leaf: &str, bias: bool| linear(&vit_layer(i, &format!("attention.{leaf}")), d, d, bias);
            blocks.push(Block {
                norm1: norm(&vit_layer(i, "norm1"))?,
                qkv: [
                    attn("attention.query", config.qkv_bias)?,
                    attn("attention.key", config.qkv_bias)?,
                    attn("attention.value", config.qkv_bias)?,
                ],
                out: attn("output.dense", true)?,
                lambda1: scale(vit_layer(i, "layer_scale1.lambda1"))?,
                norm2: norm(&vit_layer(i, "norm2"))?,
                fc1: linear(&vit_layer(i, "mlp.fc1"), inter, d, true)?,
                fc2: linear(&vit_layer(i, "mlp.fc2"), d, inter, true)?,
                lambda2: scale(vit_layer(i, "layer_scale2.lambda1"))?,
            });
        }
        Ok(VisionEncoder {
            patch_weight: vector(model, PATCH_NAME, d * patch_cols)?,
            patch_shape: [d, patch_cols],
            patch_bias: vector(model, "vit.embeddings.patch_embeddings.projection.bias", d)?,
            cls: vector(model, "vit.embeddings.cls_token", d)?,
            positions: vector(model, "vit.embeddings.position_embeddings", config.n_positions() * d)?,
            blocks,
            final_norm: norm("vit.layernorm")?,
            config,
        })
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// Encodes `n_slices` slices `pixels` `[n_slices, 3, S, S]` (already normalized, see
    /// [`super::slices_from_volume`]), returning `last_hidden_state` and the requested hidden
    /// states. Bad shapes or levels are errors.
    pub fn encode(
        &self,
        pixels: &[f32],
        n_slices: usize,
        options: &EncodeOptions,
        pool: &ThreadPool,
    ) -> Result<VisionOutput> {
        self.encode_profiled(pixels, n_slices, options, pool, &mut EncodeProfile::default())
    }

    /// [`encode`](Self::encode), adding the time spent in GEMMs, attention and the rest to
    /// `profile` (same results).
    pub fn encode_profiled(
        &self,
        pixels: &[f32],
        n_slices: usize,
        options: &EncodeOptions,
        pool: &ThreadPool,
        profile: &mut EncodeProfile,
    ) -> Result<VisionOutput> {
        self.encode_observed(pixels, n_slices, options, pool, profile, &mut |_, _| ControlFlow::Continue(()))
    }

    /// [`encode_profiled`](Self::encode_profiled), calling `on_batch(done, n_slices)` after each
    /// batch of slices; a `Break` stops the encoder there with [`Error::Cancelled`] (same
    /// results otherwise).
    pub fn encode_observed(
        &self,
        pixels: &[f32],
        n_slices: usize,
        options: &EncodeOptions,
        pool: &ThreadPool,
        profile: &mut EncodeProfile,
        on_batch: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<VisionOutput> {
        let start = Instant::now();
        let (gemm0, attn0) = (profile.gemm_secs, profile.attention_secs);
        let c = &self.config;
        let (d, t, per_slice) =
            (c.hidden_size, c.n_positions(), c.num_channels * c.image_size * c.image_size);
        let (mut output, batch) = plan(c, pixels, n_slices, options)?;
        let mut scratch =
            Scratch::new(batch * t, d, c.intermediate_size, batch * c.grid() * c.grid(), self.patch_shape[1]);
        for b0 in (0..n_slices).step_by(batch) {
            let bs = batch.min(n_slices - b0);
            let span = b0 * t * d..(b0 + bs) * t * d;
            self.forward_batch(
                &pixels[b0 * per_slice..(b0 + bs) * per_slice],
                bs,
                &mut scratch,
                pool,
                profile,
                |level, h| {
                    if let Some((_, dst)) = output.hidden_states.iter_mut().find(|(l, _)| *l == level) {
                        dst[span.clone()].copy_from_slice(h);
                    }
                },
            )?;
            output.last_hidden_state[span.clone()].copy_from_slice(&scratch.a[..bs * t * d]);
            if on_batch(b0 + bs, n_slices).is_break() {
                return Err(Error::Cancelled);
            }
        }
        let inner = (profile.gemm_secs - gemm0) + (profile.attention_secs - attn0);
        profile.other_secs += (start.elapsed().as_secs_f64() - inner).max(0.0);
        Ok(output)
    }

    /// One batch of `bs` slices; `keep(level, h)` sees every hidden state; leaves
    /// `last_hidden_state` in `scratch.a`.
    fn forward_batch(
        &self,
        pixels: &[f32],
        bs: usize,
        sc: &mut Scratch,
        pool: &ThreadPool,
        prof: &mut EncodeProfile,
        mut keep: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let c = &self.config;
        let (d, t, g) = (c.hidden_size, c.n_positions(), c.grid());
        let n = bs * t;
        let eps = c.layer_norm_eps;
        let isa = Isa::detect();
        let (h, a) = (&mut sc.h[..n * d], &mut sc.a[..n * d]);

        // Embeddings: patches [bs·g², C·p·p] → [bs·g², D]; h = cat(cls, patches) + positions.
        let patches = &mut sc.patches[..bs * g * g * self.patch_shape[1]];
        unfold_patches(pixels, bs, c.num_channels, c.image_size, c.patch_size, patches);
        let patch_w =
            Weight::F32(Dense { name: PATCH_NAME, shape: &self.patch_shape, data: &self.patch_weight });
        let pe = &mut sc.q[..bs * g * g * d];
        timed(&mut prof.gemm_secs, || ops::gemm(patches, bs * g * g, &patch_w, pe, pool))?; // [bs·g², D]
        for b in 0..bs {
            for j in 0..t {
                let row = &mut h[(b * t + j) * d..(b * t + j + 1) * d];
                let pos = &self.positions[j * d..(j + 1) * d];
                if j == 0 {
                    for ((o, &x), &p) in row.iter_mut().zip(&self.cls).zip(pos) {
                        *o = x + p;
                    }
                } else {
                    let src = &pe[(b * g * g + j - 1) * d..][..d];
                    for (((o, &x), &bias), &p) in row.iter_mut().zip(src).zip(&self.patch_bias).zip(pos) {
                        *o = (x + bias) + p;
                    }
                }
            }
        }
        keep(0, h); // hidden_states[0]: embeddings [bs·T, D]

        let shape = AttentionShape { n_seq: bs, n_tokens: t, n_heads: c.n_heads, head_dim: c.head_dim() };
        for (i, blk) in self.blocks.iter().enumerate() {
            // h = h + λ1 ⊙ attn(LN1(h))
            layer_norm(h, a, &blk.norm1.0, &blk.norm1.1, eps, pool)?; // [n, D]
            let (q, k, v) = (&mut sc.q[..n * d], &mut sc.k[..n * d], &mut sc.v[..n * d]);
            for (dst, (w, bias)) in [&mut *q, &mut *k, &mut *v].into_iter().zip(&blk.qkv) {
                timed(&mut prof.gemm_secs, || ops::gemm(a, n, w, dst, pool))?; // [n, D]
                add_bias(dst, bias, pool)?;
            }
            timed(&mut prof.attention_secs, || attention(q, k, v, a, shape, pool))?; // [n, D]
            timed(&mut prof.gemm_secs, || ops::gemm(a, n, &blk.out.0, q, pool))?; // [n, D]
            residual(h, q, &blk.out.1, &blk.lambda1, pool, isa)?;
            // h = h + λ2 ⊙ fc2(gelu(fc1(LN2(h))))
            layer_norm(h, a, &blk.norm2.0, &blk.norm2.1, eps, pool)?; // [n, D]
            let m = &mut sc.mlp[..n * c.intermediate_size];
            timed(&mut prof.gemm_secs, || ops::gemm(a, n, &blk.fc1.0, m, pool))?; // [n, I]
            bias_gelu(m, &blk.fc1.1, pool, isa)?;
            timed(&mut prof.gemm_secs, || ops::gemm(m, n, &blk.fc2.0, q, pool))?; // [n, D]
            residual(h, q, &blk.fc2.1, &blk.lambda2, pool, isa)?;
            keep(i + 1, h); // hidden_states[i + 1]
        }
        layer_norm(h, a, &self.final_norm.0, &self.final_norm.1, eps, pool) // last_hidden_state
    }
}

/// Reusable activations of one batch.
struct Scratch {
    h: Vec<f32>,       // [n, D] residual stream
    a: Vec<f32>,       // [n, D] normed input / attention output / last_hidden_state
    q: Vec<f32>,       // [n, D] (also patch embeddings and projection outputs)
    k: Vec<f32>,       // [n, D]
    v: Vec<f32>,       // [n, D]
    mlp: Vec<f32>,     // [n, I]
    patches: Vec<f32>, // [bs·g², C·p·p]
}

impl Scratch {
    fn new(n: usize, d: usize, inter: usize, n_patches: usize, patch_cols: usize) -> Scratch {
        Scratch {
            h: vec![0.0; n * d],
            a: vec![0.0; n * d],
            q: vec![0.0; n * d],
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
            mlp: vec![0.0; n * inter],
            patches: vec![0.0; n_patches * patch_cols],
        }
    }
}

/// `patches[b·g² + gy·g + gx][(c·p + ky)·p + kx] = pixels[b][c][gy·p + ky][gx·p + kx]`: the
/// order of the conv weight `[D, C, p, p]` flattened.
fn unfold_patches(pixels: &[f32], bs: usize, channels: usize, s: usize, p: usize, patches: &mut [f32]) {
    let g = s / p;
    let cols = channels * p * p;
    for b in 0..bs {
        for gy in 0..g {
            for gx in 0..g {
                let row = &mut patches[(b * g * g + gy * g + gx) * cols..][..cols];
                for ch in 0..channels {
                    for ky in 0..p {
                        let src = ((b * channels + ch) * s + gy * p + ky) * s + gx * p;
                        row[(ch * p + ky) * p..][..p].copy_from_slice(&pixels[src..src + p]);
                    }
                }
            }
        }
    }
}

/// Runs `f(row_index, row)` on every `width`-wide row of `buf`, rows split over the pool.
fn for_rows(
    buf: &mut [f32],
    width: usize,
    pool: &ThreadPool,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) -> Result<()> {
    let n = buf.len() / width;
    let per = rows_per_task(n, pool.threads());
    let ptr = SyncPtr(buf.as_mut_ptr());
    pool.run(n.div_ceil(per), &|task| {
        for r in task * per..((task + 1) * per).min(n) {
            // SAFETY: row r belongs to this task only; `buf` is borrowed for the whole call.
            f(r, unsafe { ptr.slice(r * width, width) });
        }
    })
}

fn add_bias(x: &mut [f32], bias: &[f32], pool: &ThreadPool) -> Result<()> {
    for_rows(x, bias.len(), pool, &|_, row| {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    })
}

#[inline(always)]
fn residual_body(h: &mut [f32], y: &[f32], bias: &[f32], lambda: &[f32]) {
    for (((hv, &yv), &b), &l) in h.iter_mut().zip(y).zip(bias).zip(lambda) {
        *hv = l.mul_add(yv + b, *hv);
    }
}
simd_dispatch!(residual_avx2, residual_portable, residual_body(h: &mut [f32], y: &[f32], bias: &[f32], lambda: &[f32]));

/// `h += λ ⊙ (y + bias)` row by row (HF: `hidden = layer_scale(dropout(out)) + hidden`).
fn residual(
    h: &mut [f32],
    y: &[f32],
    bias: &[f32],
    lambda: &[f32],
    pool: &ThreadPool,
    isa: Isa,
) -> Result<()> {
    let d = bias.len();
    for_rows(h, d, pool, &|r, row| {
        let yr = &y[r * d..(r + 1) * d];
        match isa {
            // SAFETY: `Isa::Avx2` comes from `Isa::detect`, so the CPU has AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe { residual_avx2(row, yr, bias, lambda) },
            _ => residual_portable(row, yr, bias, lambda),
        }
    })
}

#[inline(always)]
fn bias_gelu_body(x: &mut [f32], bias: &[f32]) {
    for (v, &b) in x.iter_mut().zip(bias) {
        *v = gelu(*v + b);
    }
}
simd_dispatch!(bias_gelu_avx2, bias_gelu_portable, bias_gelu_body(x: &mut [f32], bias: &[f32]));

/// `x = gelu(x + bias)` row by row.
fn bias_gelu(x: &mut [f32], bias: &[f32], pool: &ThreadPool, isa: Isa) -> Result<()> {
    for_rows(x, bias.len(), pool, &|_, row| match isa {
        // SAFETY: `Isa::Avx2` comes from `Isa::detect`, so the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx2Vnni | Isa::Avx512Vnni => unsafe { bias_gelu_avx2(row, bias) },
        _ => bias_gelu_portable(row, bias),
    })
}

/// Checks the encoder's input (pixel count, finite pixels, levels) and returns the zeroed output
/// (with one buffer per requested level, sorted and deduplicated) and the batch size in slices.
/// Shared by the CPU encoder and the CUDA one (`backend::cuda::encoder`), so both refuse the
/// same inputs with the same messages.
pub(crate) fn plan(
    c: &VisionConfig,
    pixels: &[f32],
    n_slices: usize,
    options: &EncodeOptions,
) -> Result<(VisionOutput, usize)> {
    let p = check_plan(c, pixels, n_slices, options)?;
    let output = VisionOutput {
        n_slices,
        n_tokens: c.n_positions(),
        hidden_size: c.hidden_size,
        last_hidden_state: vec![0.0; p.total],
        hidden_states: p.levels.iter().map(|&l| (l, vec![0.0; p.total])).collect(),
    };
    Ok((output, p.batch))
}

/// What [`check_plan`] found valid: the requested levels (sorted, unique), the batch size,
/// and the values of each output array (`n_slices · T · D`).
pub(crate) struct Plan {
    pub levels: Vec<usize>,
    pub batch: usize,
    pub total: usize,
}

/// The checks of [`plan`] without the host output (the CUDA encoder's device output).
pub(crate) fn check_plan(
    c: &VisionConfig,
    pixels: &[f32],
    n_slices: usize,
    options: &EncodeOptions,
) -> Result<Plan> {
    let (s, d) = (c.image_size, c.hidden_size);
    let per_slice = c.num_channels * s * s;
    if n_slices.checked_mul(per_slice) != Some(pixels.len()) {
        return Err(Error::Shape {
            what: "encoder input pixels".into(),
            expected: format!(
                "[{n_slices}, {}, {s}, {s}] = {} values",
                c.num_channels,
                n_slices.saturating_mul(per_slice)
            ),
            found: pixels.len().to_string(),
        });
    }
    if let Some(bad) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid("pixels", format!("value {bad} is {} (must be finite)", pixels[bad])));
    }
    let mut levels = options.levels.clone();
    levels.sort_unstable();
    levels.dedup();
    if let Some(&bad) = levels.iter().find(|&&l| l > c.n_layers) {
        return Err(Error::invalid(
            "levels",
            format!("hidden state {bad} does not exist (0 = embeddings ..= {} layers)", c.n_layers),
        ));
    }
    let t = c.n_positions();
    let batch = if options.batch == 0 { DEFAULT_BATCH } else { options.batch }.min(n_slices.max(1));
    let total = n_slices
        .checked_mul(t)
        .and_then(|v| v.checked_mul(d))
        .ok_or_else(|| Error::invalid("n_slices", format!("{n_slices} slices overflow the output size")))?;
    Ok(Plan { levels, batch, total })
}
