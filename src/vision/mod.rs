//! The vision encoder: RAD-DINO = DINOv2 ViT-B/14 run on every axial slice of a preprocessed
//! CT (SPEC-model.md §3, DESIGN.md §2), on the CPU. Mirrors HF `modeling_dinov2.py`
//! (`Dinov2Model`), reading the package's `vit.*` weights by their HF names:
//!
//! ```text
//! pixels [B,3,S,S] ─ unfold 14×14 patches ─► [B·g², 3·14·14] ─ matmul patch weight ─► [B·g², D]
//! h = cat(cls, patches) + position table (baked for S by the converter)     [B, T = 1+g², D]
//! for each layer:  h = h + λ1 ⊙ attn(LN1(h));  h = h + λ2 ⊙ fc2(gelu(fc1(LN2(h))))
//! last_hidden_state = LN_final(h);  hidden_states[0] = embeddings, [i] = output of layer i
//! ```
//!
//! * Linear layers (patch embedding, q/k/v/o, fc1, fc2) go through [`crate::ops::gemm`] (the
//!   packed GEMM for thousands of rows; quantized weights fall back to `ops::matmul`), so
//!   one forward serves F32/F16/BF16/Q8_0/Q4 weights (DESIGN.md §4); the patch-embedding
//!   convolution (stride = kernel, no padding) is exactly a matmul over unfolded patches. Rows
//!   and columns that the stride-14 convolution does not reach (the last `S mod 14` pixels)
//!   are dropped, as in the convolution.
//! * Attention ([`attention`]) never holds more than one 6×64 tile of scores; LayerNorm
//!   ([`layer_norm`]), GELU and `exp` ([`math`]) are our own vectorizable f32 loops; each has an
//!   f64 twin in [`reference`] and a parity test (`tests/vision.rs`, unit tests here).
//! * Slices are encoded in batches of [`EncodeOptions::batch`] slices (default 8): all slices of
//!   a batch share every matmul (better weight reuse), while the activations of a batch stay
//!   bounded (8 slices at 256 px: about 45 MB of scratch; at 518 px about 190 MB).
//! * Small vectors (biases, norms, LayerScale, CLS, position table) are converted to f32 once,
//!   in [`VisionEncoder::new`]; the big matrices stay zero-copy views of the package.
//!
//! Input ([`slices_from_volume`], SPEC §2): each `[H, W]` slice of the `[D, H, W]` volume in
//! [0, 1] is resized to `S × S` when it is not already that size (bilinear, `align_corners =
//! False`, no antialiasing — [INFERRED]: the RAD-DINO processor resizes bicubically from 8-bit
//! images; our slices are already at `image_size` with the default config, so no resize
//! happens), repeated to 3 channels and normalized as BitImageProcessor does after its
//! rescale: `(x − mean_c) / std_c` in f32.

pub mod attention;
pub(crate) mod encoder;
pub mod layer_norm;
pub mod math;
pub mod reference;
pub mod tolerance;

pub use attention::{attention, AttentionShape};
pub use encoder::{EncodeOptions, EncodeProfile, EncoderFlops, VisionEncoder, VisionOutput, DEFAULT_BATCH};
pub use layer_norm::layer_norm;

use crate::model::config::VisionConfig;
use crate::preprocess::resample::linear_table;
use crate::{Error, Result};

/// A raw output pointer shared by the tasks of one parallel call, each writing its own part.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);

// SAFETY: tasks write disjoint ranges (each call site documents its split) of a buffer that is
// mutably borrowed for the whole parallel call.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// `len` floats from `start`.
    ///
    /// # Safety
    /// The range is in bounds of the buffer and no other live reference overlaps it.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// Defines an AVX2+FMA instance and a portable instance of an `#[inline(always)]` body, so
/// LLVM vectorizes the same source for both (results identical: explicit `mul_add`).
macro_rules! simd_dispatch {
    ($avx:ident, $portable:ident, $body:ident($($arg:ident: $ty:ty),*)) => {
        /// # Safety
        /// The CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($arg: $ty),*) {
            $body($($arg),*)
        }

        fn $portable($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// The encoder input for every slice of a `[D, H, W]` volume with values in [0, 1]:
/// `[D, 3, S, S]` with `S = config.image_size` (see the module doc for the resize and the
/// normalization).
pub fn slices_from_volume(volume: &[f32], shape: [usize; 3], config: &VisionConfig) -> Result<Vec<f32>> {
    let [depth, height, width] = shape;
    let n = depth.checked_mul(height).and_then(|v| v.checked_mul(width));
    if n != Some(volume.len()) || height == 0 || width == 0 {
        return Err(Error::Shape {
            what: "volume for the vision encoder".into(),
            expected: format!("{depth}×{height}×{width} values with H, W > 0"),
            found: volume.len().to_string(),
        });
    }
    if config.num_channels != 3 {
        return Err(Error::Unsupported(format!(
            "vision.num_channels = {}: a CT slice is repeated to 3 channels",
            config.num_channels
        )));
    }
    let s = config.image_size;
    let plane = s * s;
    let mut out = vec![0.0f32; depth * 3 * plane];
    let mut resized = vec![0.0f32; plane];
    let (ty, tx) = (linear_table(height, s), linear_table(width, s));
    for d in 0..depth {
        let src = &volume[d * height * width..(d + 1) * height * width];
        let slice: &[f32] = if height == s && width == s {
            src
        } else {
            for (oy, row) in resized.chunks_exact_mut(s).enumerate() {
                let (r0, r1, ly) =
                    (&src[ty.i0[oy] * width..][..width], &src[ty.i1[oy] * width..][..width], ty.l1[oy]);
                for (ox, v) in row.iter_mut().enumerate() {
                    let (a, b, lx) = (tx.i0[ox], tx.i1[ox], tx.l1[ox]);
                    let top = r0[a] + (r0[b] - r0[a]) * lx;
                    let bottom = r1[a] + (r1[b] - r1[a]) * lx;
                    *v = top + (bottom - top) * ly;
                }
            }
            &resized
        };
        for c in 0..3 {
            let (mean, std) = (config.image_mean[c], config.image_std[c]);
            let dst = &mut out[(d * 3 + c) * plane..(d * 3 + c + 1) * plane];
            for (o, &x) in dst.iter_mut().zip(slice) {
                *o = (x - mean) / std;
            }
        }
    }
    Ok(out)
}
