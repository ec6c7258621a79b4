//! Parity of the CUDA vision kernels (`kernels/{resample,patch_embed,layer_norm,gelu,pool}.cu`
//! through `medregion::backend::cuda::ops::vision`) with their CPU twins, on fresh seeded random
//! inputs with odd sizes and tails. Every test needs a device, so every test is ignored;
//! `scripts/gpu-check.sh` runs them with `--include-ignored`.
//!
//! The contract is bit-identity with the CPU. Tolerances per (op, output dtype):
//!
//! | op (launcher) | CPU twin | f32 | f16 / bf16 output |
//! |---|---|---|---|
//! | `resample_volume` trilinear / nearest | `preprocess::preprocess` (`Preprocessed::data`) | bit-identical | — |
//! | `resample_volume`, no window | f64 trilinear here | max rel 2e-6 | — |
//! | `volume_patches` | `vision::slices_from_volume` + the encoder's unfold (mirrored here) | bit-identical | bits of `half::{f16,bf16}::from_f32(cpu)` |
//! | `unfold_patches` | the encoder's unfold (an exact copy) | bit-identical | bits of `from_f32` |
//! | `assemble_embeddings` | the encoder's embedding loop (mirrored here in f32) | bit-identical | — |
//! | `layer_norm` | `vision::layer_norm` | bit-identical; vs f64 `reference::layer_norm_f64` max rel ≤ `max_rel(LayerNorm)` (2e-6) | bits of `from_f32` |
//! | `residual_layer_norm` | encoder `residual` (mirrored: `λ.mul_add(y + b, h)`) + `vision::layer_norm` | bit-identical (h and out) | bits of `from_f32` |
//! | `gelu`, `bias_act`, `bias_act_to` | `vision::math::gelu`, `v + b` | bit-identical; vs f64 `reference::gelu_f64` max rel ≤ `max_rel(Gelu)` (1e-6) | bits of `from_f32` |
//! | `global_tokens` | `region::pool::mean_rows` per slice | bit-identical | — |
//! | `adaptive_pool` | `region::pool::adaptive_pool_rows` per slice | bit-identical | — |
//! | `bilinear_masks` | `region::pool::bilinear_mask` per slice | bit-identical | — |
//! | `mask_areas` | voxel counts | exact | — |
//! | `masked_mean` | the Osprey weights of `RegionHeads::tokens` (mirrored here in f32) | bit-identical; vs f64 max rel 1e-6 | — |
//!
//! Validation: wrong lengths, shapes that do not fit, bad parameters are errors naming what is
//! wrong, and nothing is launched (the output buffer stays untouched).

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::{gpu, XorShift as Rng};

use cudarc::driver::CudaSlice;
use medregion::backend::cuda::ops::vision::{
    adaptive_pool, assemble_embeddings, bias_act, bias_act_to, bilinear_masks, gelu, global_tokens,
    layer_norm, mask_areas, masked_mean, resample_volume, residual_layer_norm, unfold_patches,
    volume_patches, Activation, LayerNormParams, MaskWeights, Out, TokenGrid, VolumeResize, MAX_POOL_SLICES,
};
use medregion::backend::cuda::Gpu;
use medregion::model::config::{Interpolation, Normalization, PreprocessConfig, VisionConfig};
use medregion::ops::ThreadPool;
use medregion::preprocess::resample::linear_table;
use medregion::preprocess::{preprocess, CropBox, Reorientation};
use medregion::region::pool::{adaptive_pool_rows, bilinear_mask, mean_rows};
use medregion::vision::math::gelu as cpu_gelu;
use medregion::vision::reference::{gelu_f64, layer_norm_f64};
use medregion::vision::tolerance::{max_rel, rel_errors, VisionOp};
use medregion::volume::{Affine, Geometry, Volume};
use medregion::Error;

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits()) {
        panic!(
            "{what}: element {i} of {} differs: gpu {:e} ({:#010x}), cpu {:e} ({:#010x})",
            got.len(),
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

fn assert_u16(what: &str, got: &[u16], want: &[u16]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: element {i} of {} differs: gpu {:#06x}, cpu {:#06x}", got.len(), got[i], want[i]);
    }
}

fn f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()
}

fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}

fn up<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, v: &[T]) -> CudaSlice<T> {
    gpu.upload(v).expect("upload")
}

fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    gpu: &Gpu,
    n: usize,
) -> CudaSlice<T> {
    gpu.alloc::<T>(n).expect("alloc")
}

fn down<T: cudarc::driver::DeviceRepr + Default + Clone>(gpu: &Gpu, v: &CudaSlice<T>) -> Vec<T> {
    gpu.download(v).expect("download (a kernel fault shows here)")
}

/// Runs `launch` with an f32, an f16 and a bf16 destination of `n` elements and checks each
/// against the CPU's f32 result `want` (bits, and the RNE conversions of those bits).
fn check_all_outputs(gpu: &Gpu, what: &str, n: usize, want: &[f32], mut launch: impl FnMut(Out<'_>)) {
    let mut o32 = zeros::<f32>(gpu, n);
    launch(Out::F32(o32.as_view_mut()));
    assert_bits(&format!("{what} (f32)"), &down(gpu, &o32), want);
    let mut o16 = zeros::<u16>(gpu, n);
    launch(Out::F16(o16.as_view_mut()));
    assert_u16(&format!("{what} (f16)"), &down(gpu, &o16), &f16_bits(want));
    let mut ob = zeros::<u16>(gpu, n);
    launch(Out::Bf16(ob.as_view_mut()));
    assert_u16(&format!("{what} (bf16)"), &down(gpu, &ob), &bf16_bits(want));
}

// ---------------------------------------------------------------------------------------------
// Resample

/// A CT-like volume: air (−1024) around a random box of tissue values, so the foreground crop
/// cuts something on every side.
fn ct_volume(rng: &mut Rng, dims: [usize; 3], affine: Affine) -> Volume {
    let [nx, ny, nz] = dims;
    let mut data = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let inside = x >= 2 && x + 1 < nx && y >= 1 && y + 2 < ny && z >= 1 && z + 1 < nz;
                data.push(if inside { rng.f32(-1200.0, 1600.0) } else { -1024.0 });
            }
        }
    }
    let geometry = Geometry::new(dims, affine, "test").unwrap();
    Volume::from_vec(data, geometry, "test").unwrap()
}

fn geometries() -> Vec<([usize; 3], Affine)> {
    vec![
        // RAS storage: canonical = stored.
        (
            [21, 17, 9],
            [[0.7, 0.0, 0.0, -10.0], [0.0, 0.8, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]],
        ),
        // LPS storage (DICOM-like): x and y flipped.
        (
            [19, 23, 7],
            [[-0.6, 0.0, 0.0, 10.0], [0.0, -0.6, 0.0, 20.0], [0.0, 0.0, 3.0, -5.0], [0.0, 0.0, 0.0, 1.0]],
        ),
        // Permuted and flipped axes: i → S, j → R, k → P.
        (
            [11, 13, 15],
            [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, -3.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        ),
    ]
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn resample_matches_preprocess_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    let shapes = [[5usize, 11, 13], [16, 9, 31], [3, 40, 7]]; // down, up and mixed per axis
    for (gi, (dims, affine)) in geometries().into_iter().enumerate() {
        let volume = ct_volume(&mut rng, dims, affine);
        let src = up(&gpu, volume.data());
        for (si, &[d, h, w]) in shapes.iter().enumerate() {
            for interpolation in [Interpolation::Trilinear, Interpolation::Nearest] {
                for (normalization, crop) in [
                    (Normalization::HuWindow, true),
                    (Normalization::AmosAdaptive, true),
                    (Normalization::HuWindow, false),
                ] {
                    let config = PreprocessConfig {
                        depth: d,
                        height: h,
                        width: w,
                        crop_foreground: crop,
                        normalization,
                        volume_interpolation: interpolation,
                        ..PreprocessConfig::default()
                    };
                    let pre = preprocess(&volume, &config).unwrap();
                    let mut out = zeros::<f32>(&gpu, d * h * w);
                    resample_volume(
                        &gpu,
                        &src.as_view(),
                        &VolumeResize::of(&pre, interpolation),
                        &mut out.as_view_mut(),
                    )
                    .unwrap();
                    let what =
                        format!("geometry {gi} shape {si} {interpolation:?} {normalization:?} crop {crop}");
                    assert_bits(&what, &down(&gpu, &out), &pre.data);
                }
            }
        }
    }
}

/// Trilinear resize of the canonical crop of `data` in f64 (no window): the same tables.
fn trilinear_f64(
    data: &[f32],
    dims: [usize; 3],
    r: &Reorientation,
    crop: &CropBox,
    out: [usize; 3],
) -> Vec<f64> {
    let size = crop.size();
    let [d_out, h_out, w_out] = out;
    let (tx, ty, tz) =
        (linear_table(size[0], w_out), linear_table(size[1], h_out), linear_table(size[2], d_out));
    let at = |c: [usize; 3]| -> f64 {
        let s = r.to_stored([crop.start[0] + c[0], crop.start[1] + c[1], crop.start[2] + c[2]], dims);
        data[s[0] + dims[0] * (s[1] + dims[1] * s[2])] as f64
    };
    let mut v = Vec::with_capacity(d_out * h_out * w_out);
    for d in 0..d_out {
        let (z0, z1, lz) = (tz.i0[d], tz.i1[d], tz.l1[d] as f64);
        for h in 0..h_out {
            let (y0, y1, ly) = (ty.i0[h], ty.i1[h], ty.l1[h] as f64);
            for w in 0..w_out {
                let (x0, x1, lx) = (tx.i0[w], tx.i1[w], tx.l1[w] as f64);
                let row = |y: usize, z: usize| (1.0 - lx) * at([x0, y, z]) + lx * at([x1, y, z]);
                let plane = |z: usize| (1.0 - ly) * row(y0, z) + ly * row(y1, z);
                v.push((1.0 - lz) * plane(z0) + lz * plane(z1));
            }
        }
    }
    v
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn resample_without_window_matches_f64() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for (dims, affine) in geometries() {
        let volume = ct_volume(&mut rng, dims, affine);
        let config = PreprocessConfig { depth: 6, height: 9, width: 14, ..PreprocessConfig::default() };
        let pre = preprocess(&volume, &config).unwrap();
        let mut plan = VolumeResize::of(&pre, Interpolation::Trilinear);
        plan.window = None;
        let src = up(&gpu, volume.data());
        let mut out = zeros::<f32>(&gpu, 6 * 9 * 14);
        resample_volume(&gpu, &src.as_view(), &plan, &mut out.as_view_mut()).unwrap();
        let want = trilinear_f64(volume.data(), dims, &pre.reorientation, &pre.crop_canonical, pre.shape);
        let (rel, _) = rel_errors(&down(&gpu, &out), &want);
        assert!(rel <= 2e-6, "no-window trilinear: rel {rel:e} > 2e-6");
    }
}

// ---------------------------------------------------------------------------------------------
// Patch embedding

/// The encoder's `unfold_patches`, restated (it is private): row `b·g² + gy·g + gx`, column
/// `(c·p + ky)·p + kx`.
fn unfold_cpu(pixels: &[f32], bs: usize, channels: usize, s: usize, p: usize) -> Vec<f32> {
    let g = s / p;
    let cols = channels * p * p;
    let mut patches = vec![0.0f32; bs * g * g * cols];
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
    patches
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn volume_patches_match_slices_from_volume_and_unfold() {
    let gpu = gpu();
    let mut rng = Rng::new(3);
    // (D, H, W, S, p): no resize with a dropped remainder, down/up-sizing, non-square, ViT-B/14.
    for &(d, h, w, s, p) in &[
        (3usize, 30usize, 30usize, 30usize, 7usize),
        (2, 23, 41, 32, 5),
        (2, 64, 50, 28, 14),
        (1, 9, 9, 16, 4),
        (2, 256, 256, 256, 14),
    ] {
        let config = VisionConfig {
            image_size: s,
            patch_size: p,
            image_mean: [0.5307, 0.41, 0.6],
            image_std: [0.2583, 0.3, 0.21],
            ..VisionConfig::default()
        };
        let volume = rng.vec(d * h * w, 0.0, 1.0);
        let pixels = medregion::vision::slices_from_volume(&volume, [d, h, w], &config).unwrap();
        let want = unfold_cpu(&pixels, d, 3, s, p);
        let src = up(&gpu, &volume);
        check_all_outputs(
            &gpu,
            &format!("volume_patches {d}x{h}x{w} -> {s}/{p}"),
            want.len(),
            &want,
            |out| volume_patches(&gpu, &src.as_view(), [d, h, w], &config, out).unwrap(),
        );
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn unfold_patches_is_the_encoders_unfold() {
    let gpu = gpu();
    let mut rng = Rng::new(4);
    for &(bs, c, s, p) in &[(2usize, 3usize, 33usize, 7usize), (1, 1, 14, 14), (3, 2, 20, 3), (2, 3, 256, 14)]
    {
        let pixels = rng.vec(bs * c * s * s, -3.0, 3.0);
        let want = unfold_cpu(&pixels, bs, c, s, p);
        let src = up(&gpu, &pixels);
        check_all_outputs(&gpu, &format!("unfold {bs}x{c}x{s} p{p}"), want.len(), &want, |out| {
            unfold_patches(&gpu, &src.as_view(), bs, c, s, p, out).unwrap()
        });
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn assemble_embeddings_matches_the_encoder_loop() {
    let gpu = gpu();
    let mut rng = Rng::new(5);
    for &(bs, g, d) in &[(2usize, 3usize, 17usize), (1, 1, 768), (3, 5, 8), (2, 18, 768)] {
        let (g2, t) = (g * g, 1 + g * g);
        let pe = rng.vec(bs * g2 * d, -3.0, 3.0);
        let bias = rng.vec(d, -1.0, 1.0);
        let cls = rng.vec(d, -1.0, 1.0);
        let pos = rng.vec(t * d, -1.0, 1.0);
        // encoder.rs forward_batch: `x + p` for CLS, `(x + bias) + p` for patches.
        let mut want = vec![0.0f32; bs * t * d];
        for b in 0..bs {
            for j in 0..t {
                for c in 0..d {
                    want[(b * t + j) * d + c] = if j == 0 {
                        cls[c] + pos[c]
                    } else {
                        (pe[(b * g2 + j - 1) * d + c] + bias[c]) + pos[j * d + c]
                    };
                }
            }
        }
        let (pe_d, bias_d, cls_d, pos_d) = (up(&gpu, &pe), up(&gpu, &bias), up(&gpu, &cls), up(&gpu, &pos));
        let mut out = zeros::<f32>(&gpu, want.len());
        assemble_embeddings(
            &gpu,
            &pe_d.as_view(),
            &bias_d.as_view(),
            &cls_d.as_view(),
            &pos_d.as_view(),
            bs,
            &mut out.as_view_mut(),
        )
        .unwrap();
        assert_bits(&format!("assemble b{bs} g{g} d{d}"), &down(&gpu, &out), &want);
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm

/// Rows with different means and scales (so the two-pass variance matters).
fn ln_input(rng: &mut Rng, rows: usize, d: usize) -> Vec<f32> {
    (0..rows * d)
        .map(|i| rng.f32(-4.0, 4.0) * (1.0 + (i / d % 5) as f32) + (i / d % 7) as f32 * 0.37)
        .collect()
}

const LN_SHAPES: [(usize, usize); 7] = [(37, 768), (650, 768), (5, 37), (33, 8), (3, 1), (9, 1000), (40, 13)];

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn layer_norm_matches_cpu_bit_for_bit() {
    let gpu = gpu();
    let pool = ThreadPool::single();
    let mut rng = Rng::new(6);
    for &(rows, d) in &LN_SHAPES {
        let x = ln_input(&mut rng, rows, d);
        let w = rng.vec(d, 0.5, 1.5);
        let b = rng.vec(d, -0.5, 0.5);
        let eps = 1e-6f32;
        let mut want = vec![0.0f32; rows * d];
        medregion::vision::layer_norm(&x, &mut want, &w, &b, eps, &pool).unwrap();
        let (x_d, w_d, b_d) = (up(&gpu, &x), up(&gpu, &w), up(&gpu, &b));
        let norm = LayerNormParams { weight: w_d.as_view(), bias: b_d.as_view(), eps };
        check_all_outputs(&gpu, &format!("layer_norm {rows}x{d}"), want.len(), &want, |out| {
            layer_norm(&gpu, &x_d.as_view(), &norm, out).unwrap()
        });
        let mut o = zeros::<f32>(&gpu, rows * d);
        layer_norm(&gpu, &x_d.as_view(), &norm, Out::F32(o.as_view_mut())).unwrap();
        let got = down(&gpu, &o);
        let (rel, _) = rel_errors(&got, &layer_norm_f64(&x, &w, &b, eps as f64));
        let budget = max_rel(VisionOp::LayerNorm).unwrap();
        assert!(rel <= budget, "layer_norm {rows}x{d} vs f64: rel {rel:e} > {budget:e}");
        // Run to run: the same bits.
        layer_norm(&gpu, &x_d.as_view(), &norm, Out::F32(o.as_view_mut())).unwrap();
        assert_bits("layer_norm rerun", &down(&gpu, &o), &got);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn residual_layer_norm_matches_residual_then_layer_norm() {
    let gpu = gpu();
    let pool = ThreadPool::single();
    let mut rng = Rng::new(7);
    for &(rows, d) in &LN_SHAPES {
        let h0 = ln_input(&mut rng, rows, d);
        let y = rng.vec(rows * d, -2.0, 2.0);
        let yb = rng.vec(d, -0.3, 0.3);
        let lambda = rng.vec(d, 0.05, 1.0);
        let w = rng.vec(d, 0.5, 1.5);
        let b = rng.vec(d, -0.5, 0.5);
        let eps = 1e-6f32;
        // encoder.rs residual_body: h = λ.mul_add(y + b, h).
        let mut h_want = h0.clone();
        for (r, row) in h_want.chunks_exact_mut(d).enumerate() {
            for i in 0..d {
                row[i] = lambda[i].mul_add(y[r * d + i] + yb[i], row[i]);
            }
        }
        let mut want = vec![0.0f32; rows * d];
        medregion::vision::layer_norm(&h_want, &mut want, &w, &b, eps, &pool).unwrap();
        let (y_d, yb_d, l_d, w_d, b_d) =
            (up(&gpu, &y), up(&gpu, &yb), up(&gpu, &lambda), up(&gpu, &w), up(&gpu, &b));
        let norm = LayerNormParams { weight: w_d.as_view(), bias: b_d.as_view(), eps };
        check_all_outputs(&gpu, &format!("residual_layer_norm {rows}x{d}"), want.len(), &want, |out| {
            // A fresh residual stream each time: the kernel updates it in place.
            let mut h = up(&gpu, &h0);
            residual_layer_norm(
                &gpu,
                &mut h.as_view_mut(),
                &y_d.as_view(),
                &yb_d.as_view(),
                &l_d.as_view(),
                &norm,
                out,
            )
            .unwrap();
            assert_bits(&format!("residual stream {rows}x{d}"), &down(&gpu, &h), &h_want);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// GELU and bias

fn gelu_inputs(rng: &mut Rng) -> Vec<f32> {
    let mut x = rng.vec(100_003, -12.0, 12.0);
    x.extend(rng.vec(10_000, -0.01, 0.01));
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-40, // subnormal
        -1e-40,
        3.0,
        -3.0,
        9.0,
        -9.0,
        13.2,
        -13.2,
        100.0,
        -100.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
    ]);
    x
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn gelu_is_the_cpu_gelu_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let x = gelu_inputs(&mut rng);
    let want: Vec<f32> = x.iter().map(|&v| cpu_gelu(v)).collect();
    let mut x_d = up(&gpu, &x);
    gelu(&gpu, &mut x_d.as_view_mut()).unwrap();
    let got = down(&gpu, &x_d);
    assert_bits("gelu", &got, &want);
    // The approximation itself, on the ordinary range (finite f64 reference).
    let n = 110_003;
    let reference: Vec<f64> = x[..n].iter().map(|&v| gelu_f64(v as f64)).collect();
    let (rel, _) = rel_errors(&got[..n], &reference);
    let budget = max_rel(VisionOp::Gelu).unwrap();
    assert!(rel <= budget, "gelu vs f64: rel {rel:e} > {budget:e}");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn bias_act_matches_bias_gelu_and_add_bias() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    for &(rows, cols) in &[(37usize, 131usize), (650, 3072), (3, 1), (17, 768)] {
        let x = rng.vec(rows * cols, -6.0, 6.0);
        let b = rng.vec(cols, -1.0, 1.0);
        let (x_d, b_d) = (up(&gpu, &x), up(&gpu, &b));
        for act in [Activation::Identity, Activation::Gelu] {
            let want: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| match act {
                    Activation::Identity => v + b[i % cols],
                    Activation::Gelu => cpu_gelu(v + b[i % cols]),
                })
                .collect();
            let mut inplace = up(&gpu, &x);
            bias_act(&gpu, &mut inplace.as_view_mut(), &b_d.as_view(), act).unwrap();
            assert_bits(&format!("bias_act {act:?} {rows}x{cols}"), &down(&gpu, &inplace), &want);
            check_all_outputs(
                &gpu,
                &format!("bias_act_to {act:?} {rows}x{cols}"),
                want.len(),
                &want,
                |out| bias_act_to(&gpu, &x_d.as_view(), &b_d.as_view(), act, out).unwrap(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn global_tokens_and_adaptive_pool_match_region_pool() {
    let gpu = gpu();
    let mut rng = Rng::new(10);
    // (T, gp, d, g, selected slices): the real 32×(1+18²)×768 → 9×9 shape, odd grids, g = gp,
    // g > gp (PyTorch's overlapping windows), unsorted and repeated selections.
    let cases: Vec<(usize, usize, usize, usize, Vec<usize>)> = vec![
        (32, 18, 768, 9, vec![3, 10, 21, 31]),
        (5, 6, 33, 3, vec![4, 0, 1]),
        (4, 5, 7, 3, vec![2]),
        (3, 7, 13, 7, vec![0, 2, 2]),
        (2, 4, 5, 6, vec![1, 0]),
        (3, 11, 1, 4, (0..3).collect()),
    ];
    for (t, gp, d, g, sel) in cases {
        let layout = TokenGrid::features(t, gp, d);
        let n1 = 1 + gp * gp;
        let x = rng.vec(t * n1 * d, -2.0, 2.0);
        let grid_of = |s: usize| &x[(s * n1 + 1) * d..(s + 1) * n1 * d];
        let mut want_g = Vec::new();
        for s in 0..t {
            mean_rows(grid_of(s), gp * gp, d, &mut want_g);
        }
        let mut want_r = Vec::new();
        for &s in &sel {
            adaptive_pool_rows(grid_of(s), gp, d, g, &mut want_r);
        }
        // Both into one buffer V = [globals; grids], as tokens.rs lays it out.
        let x_d = up(&gpu, &x);
        let mut v = zeros::<f32>(&gpu, want_g.len() + want_r.len());
        global_tokens(&gpu, &x_d.as_view(), &layout, &mut v.slice_mut(..want_g.len())).unwrap();
        adaptive_pool(&gpu, &x_d.as_view(), &layout, &sel, g, &mut v.slice_mut(want_g.len()..)).unwrap();
        let got = down(&gpu, &v);
        assert_bits(&format!("global tokens t{t} gp{gp} d{d}"), &got[..want_g.len()], &want_g);
        assert_bits(&format!("adaptive pool t{t} gp{gp} d{d} g{g} {sel:?}"), &got[want_g.len()..], &want_r);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn mask_pooling_matches_region_pool() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    // (n slices, H, W, gp, g): the real 32×256×256 → 18² → 9², odd and upsampling sizes.
    for &(n, h, w, gp, g) in &[
        (32usize, 256usize, 256usize, 18usize, 9usize),
        (3, 20, 17, 6, 5),
        (2, 5, 7, 11, 4),
        (2, 9, 9, 9, 9),
    ] {
        let masks: Vec<u8> =
            (0..n * h * w).map(|i| u8::from(rng.next() % 3 == 0 || (i / w) % h < h / 4)).collect();
        let plane = h * w;
        let mut want_pm = Vec::new();
        for s in 0..n {
            want_pm.extend(bilinear_mask(&masks[s * plane..(s + 1) * plane], h, w, gp, gp));
        }
        let want_areas: Vec<u32> = (0..n)
            .map(|s| masks[s * plane..(s + 1) * plane].iter().filter(|&&v| v != 0).count() as u32)
            .collect();
        let m_d = up(&gpu, &masks);
        let mut pm = zeros::<f32>(&gpu, n * gp * gp);
        bilinear_masks(&gpu, &m_d.as_view(), n, [h, w], [gp, gp], &mut pm.as_view_mut()).unwrap();
        assert_bits(&format!("bilinear masks {n}x{h}x{w} -> {gp}"), &down(&gpu, &pm), &want_pm);
        let mut areas = zeros::<u32>(&gpu, n);
        mask_areas(&gpu, &m_d.as_view(), n, plane, &mut areas.as_view_mut()).unwrap();
        assert_eq!(down(&gpu, &areas), want_areas, "mask areas {n}x{h}x{w}");

        // The mask vector m = [mean of each slice; pooled grids of the selected slices].
        let sel: Vec<usize> = vec![n - 1, 0];
        let mut want_m = Vec::new();
        for s in 0..n {
            mean_rows(&want_pm[s * gp * gp..(s + 1) * gp * gp], gp * gp, 1, &mut want_m);
        }
        for &s in &sel {
            adaptive_pool_rows(&want_pm[s * gp * gp..(s + 1) * gp * gp], gp, 1, g, &mut want_m);
        }
        let layout = TokenGrid::masks(n, gp);
        let mut m = zeros::<f32>(&gpu, n + sel.len() * g * g);
        global_tokens(&gpu, &pm.as_view(), &layout, &mut m.slice_mut(..n)).unwrap();
        adaptive_pool(&gpu, &pm.as_view(), &layout, &sel, g, &mut m.slice_mut(n..)).unwrap();
        assert_bits(&format!("mask vector {n}x{gp} -> {g}"), &down(&gpu, &m), &want_m);
    }
}

/// The Osprey weights and weighted sum of tokens.rs, restated in f32 (same operations).
fn masked_mean_cpu(m: &[f32], v: &[f32], n_tokens: usize, d: usize, thr: f32, eps: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; m.len() / n_tokens * d];
    for (row, ms) in out.chunks_exact_mut(d).zip(m.chunks_exact(n_tokens)) {
        let on: Vec<f32> = ms.iter().map(|&x| if x > thr { 1.0 } else { 0.0 }).collect();
        let inv = 1.0 / (on.iter().sum::<f32>() + eps);
        for (i, &o) in on.iter().enumerate() {
            let wi = o * inv;
            if wi != 0.0 {
                row.iter_mut().zip(&v[i * d..(i + 1) * d]).for_each(|(r, &f)| *r += wi * f);
            }
        }
    }
    out
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn masked_mean_matches_the_osprey_weights() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for &(slots, nt, d, thr, eps) in &[
        (9usize, 356usize, 768usize, 0.0f32, 1e-8f32),
        (4, 41, 300, 0.25, 1e-8),
        (2, 7, 5, 0.5, 1e-3),
        (1, 1, 1, 0.0, 1e-8),
    ] {
        let mut m = rng.vec(slots * nt, -0.5, 1.0);
        for v in &mut m[..nt] {
            *v = v.min(thr); // slot 0 is empty: a zero row
        }
        let v = rng.vec(nt * d, -2.0, 2.0);
        let want = masked_mean_cpu(&m, &v, nt, d, thr, eps);
        let (m_d, v_d) = (up(&gpu, &m), up(&gpu, &v));
        let mut out = zeros::<f32>(&gpu, slots * d);
        masked_mean(
            &gpu,
            &m_d.as_view(),
            slots,
            &v_d.as_view(),
            d,
            MaskWeights { threshold: thr, eps },
            &mut out.as_view_mut(),
        )
        .unwrap();
        let got = down(&gpu, &out);
        assert_bits(&format!("masked mean {slots}x{nt}x{d}"), &got, &want);
        // f64: the same weights, exact sums.
        let mut reference = vec![0.0f64; slots * d];
        for (s, ms) in m.chunks_exact(nt).enumerate() {
            let on: Vec<bool> = ms.iter().map(|&x| x > thr).collect();
            let inv = 1.0 / (on.iter().filter(|&&o| o).count() as f64 + eps as f64);
            for (i, _) in on.iter().enumerate().filter(|(_, &o)| o) {
                for c in 0..d {
                    reference[s * d + c] += inv * v[i * d + c] as f64;
                }
            }
        }
        let (rel, _) = rel_errors(&got, &reference);
        assert!(rel <= 1e-6, "masked mean vs f64: rel {rel:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: errors name what is wrong, and nothing is launched.

/// `r` is an error whose text contains every one of `words`.
fn assert_err(r: medregion::Result<()>, words: &[&str]) {
    let e = r.expect_err("an invalid call must fail");
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "error {text:?} does not mention {w:?}");
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn launchers_refuse_bad_shapes_without_launching() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    let sentinel = 7.5f32;
    let mut out = up(&gpu, &vec![sentinel; 64]);
    let x = up(&gpu, &rng.vec(60, -1.0, 1.0));
    let w8 = up(&gpu, &rng.vec(8, 0.5, 1.5));
    let w7 = up(&gpu, &rng.vec(7, 0.5, 1.5));

    // LayerNorm: rows not a multiple of d, output of another size, bias of another size, eps.
    let norm = LayerNormParams { weight: w8.as_view(), bias: w8.as_view(), eps: 1e-6 };
    assert_err(
        layer_norm(&gpu, &x.as_view(), &norm, Out::F32(out.slice_mut(..60))),
        &["LayerNorm input", "multiple of 8"],
    );
    let x64 = up(&gpu, &rng.vec(64, -1.0, 1.0));
    assert_err(
        layer_norm(&gpu, &x64.as_view(), &norm, Out::F32(out.slice_mut(..56))),
        &["LayerNorm output", "64"],
    );
    let bad = LayerNormParams { weight: w8.as_view(), bias: w7.as_view(), eps: 1e-6 };
    assert_err(layer_norm(&gpu, &x64.as_view(), &bad, Out::F32(out.as_view_mut())), &["LayerNorm bias"]);
    let bad = LayerNormParams { weight: w8.as_view(), bias: w8.as_view(), eps: f32::NAN };
    assert_err(layer_norm(&gpu, &x64.as_view(), &bad, Out::F32(out.as_view_mut())), &["eps"]);
    let mut h = up(&gpu, &vec![0.0f32; 64]);
    assert_err(
        residual_layer_norm(
            &gpu,
            &mut h.as_view_mut(),
            &x.as_view(),
            &w8.as_view(),
            &w8.as_view(),
            &norm,
            Out::F32(out.as_view_mut()),
        ),
        &["residual branch output"],
    );
    assert_err(
        residual_layer_norm(
            &gpu,
            &mut h.as_view_mut(),
            &x64.as_view(),
            &w8.as_view(),
            &w7.as_view(),
            &norm,
            Out::F32(out.as_view_mut()),
        ),
        &["LayerScale lambda"],
    );

    // GELU / bias: input not [rows, cols], output of another size.
    assert_err(
        bias_act(&gpu, &mut out.slice_mut(..60), &w8.as_view(), Activation::Gelu),
        &["bias/activation input", "multiple of"],
    );
    let mut half = zeros::<u16>(&gpu, 56);
    assert_err(
        bias_act_to(&gpu, &x64.as_view(), &w8.as_view(), Activation::Gelu, Out::Bf16(half.as_view_mut())),
        &["bias/activation output"],
    );

    // Patch embedding: pixels of the wrong size, a patch larger than the image, 1 channel.
    assert_err(
        unfold_patches(&gpu, &x.as_view(), 1, 3, 5, 2, Out::F32(out.as_view_mut())),
        &["pixels", "[1, 3, 5, 5]"],
    );
    assert_err(
        unfold_patches(&gpu, &x64.as_view(), 1, 1, 8, 9, Out::F32(out.as_view_mut())),
        &["patch_size"],
    );
    let one_channel =
        VisionConfig { num_channels: 1, image_size: 8, patch_size: 4, ..VisionConfig::default() };
    assert_err(
        volume_patches(&gpu, &x64.as_view(), [1, 8, 8], &one_channel, Out::F32(out.as_view_mut())),
        &["num_channels"],
    );
    let config = VisionConfig { image_size: 8, patch_size: 4, ..VisionConfig::default() };
    assert_err(
        volume_patches(&gpu, &x.as_view(), [1, 8, 8], &config, Out::F32(out.as_view_mut())),
        &["volume", "[1, 8, 8]"],
    );
    // positions [1 + g², d] with d = 8: 64 values = 8 positions, not 1 + g² for pe of 60 values.
    assert_err(
        assemble_embeddings(
            &gpu,
            &x.as_view(),
            &w8.as_view(),
            &w8.as_view(),
            &x64.as_view(),
            1,
            &mut out.as_view_mut(),
        ),
        &["patch embeddings"],
    );
    assert_err(
        assemble_embeddings(
            &gpu,
            &x64.as_view(),
            &w8.as_view(),
            &w7.as_view(),
            &x64.as_view(),
            1,
            &mut out.as_view_mut(),
        ),
        &["cls token"],
    );

    // Pooling: a grid that does not fit its slice, slices out of range or too many, masks that
    // do not fit their shape, mask vectors that do not fit the features.
    let bad_grid = TokenGrid { n_slices: 2, rows_per_slice: 4, first: 1, grid: 2, dim: 8 };
    assert_err(
        global_tokens(&gpu, &x64.as_view(), &bad_grid, &mut out.slice_mut(..16)),
        &["token grid", "2×2"],
    );
    let grid = TokenGrid::features(2, 2, 6); // [2, 5, 6] = 60 values
    assert_err(
        adaptive_pool(&gpu, &x.as_view(), &grid, &[2], 1, &mut out.slice_mut(..6)),
        &["slice 2", "2 slices"],
    );
    let many = vec![0usize; MAX_POOL_SLICES + 1];
    assert_err(adaptive_pool(&gpu, &x.as_view(), &grid, &many, 1, &mut out.slice_mut(..6)), &["at most"]);
    assert_err(
        adaptive_pool(&gpu, &x.as_view(), &grid, &[1, 0], 1, &mut out.slice_mut(..6)),
        &["pooled grids", "[2, 1, 1, 6]"],
    );
    let masks = up(&gpu, &[1u8; 2 * 5 * 6]);
    assert_err(
        bilinear_masks(&gpu, &masks.as_view(), 2, [6, 6], [3, 3], &mut out.slice_mut(..18)),
        &["masks", "[2, 6, 6]", "60"],
    );
    assert_err(
        bilinear_masks(&gpu, &masks.as_view(), 2, [5, 6], [3, 3], &mut out.slice_mut(..16)),
        &["resized masks", "[2, 3, 3]"],
    );
    let mut areas = zeros::<u32>(&gpu, 3);
    assert_err(mask_areas(&gpu, &masks.as_view(), 3, 30, &mut areas.slice_mut(..3)), &["masks", "[3, 30]"]);
    let weights = MaskWeights { threshold: 0.0, eps: 1e-8 };
    // features [10 tokens, 6]; 3 slots need 30 mask values, 64 given.
    assert_err(
        masked_mean(&gpu, &x64.as_view(), 3, &x.as_view(), 6, weights, &mut out.slice_mut(..18)),
        &["mask vectors", "3 slots", "10 tokens", "[10, 6]"],
    );
    assert_err(
        masked_mean(&gpu, &x.as_view(), 6, &x.as_view(), 7, weights, &mut out.slice_mut(..42)),
        &["features", "[n_tokens, 7]"],
    );

    // Resample: a crop outside the canonical dims, a source of another size.
    let volume = ct_volume(&mut rng, [6, 5, 4], geometries()[0].1);
    let pre = preprocess(
        &volume,
        &PreprocessConfig { depth: 2, height: 2, width: 2, ..PreprocessConfig::default() },
    )
    .unwrap();
    let src = up(&gpu, volume.data());
    let mut plan = VolumeResize::of(&pre, Interpolation::Trilinear);
    plan.crop = CropBox { start: [0, 0, 0], end: [7, 5, 4] };
    assert_err(
        resample_volume(&gpu, &src.as_view(), &plan, &mut out.slice_mut(..8)),
        &["crop box", "[6, 5, 4]"],
    );
    let plan = VolumeResize::of(&pre, Interpolation::Trilinear);
    assert_err(
        resample_volume(&gpu, &x.as_view(), &plan, &mut out.slice_mut(..8)),
        &["resample source volume", "120"],
    );
    assert_err(
        resample_volume(&gpu, &src.as_view(), &plan, &mut out.slice_mut(..9)),
        &["resample output", "[2, 2, 2]"],
    );

    // Nothing was launched: the sentinel values are intact.
    assert!(down(&gpu, &out).iter().all(|&v| v == sentinel), "a refused call wrote to its output");
    assert!(down(&gpu, &areas).iter().all(|&v| v == 0));
    assert!(matches!(
        layer_norm(&gpu, &x.as_view(), &norm, Out::F32(out.slice_mut(..60))),
        Err(Error::Shape { .. })
    ));
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn empty_work_launches_nothing() {
    let gpu = gpu();
    let empty = zeros::<f32>(&gpu, 1);
    let w = up(&gpu, &[1.0f32; 4]);
    let norm = LayerNormParams { weight: w.as_view(), bias: w.as_view(), eps: 1e-6 };
    let mut out = zeros::<f32>(&gpu, 1);
    layer_norm(&gpu, &empty.slice(..0), &norm, Out::F32(out.slice_mut(..0))).unwrap();
    gelu(&gpu, &mut out.slice_mut(..0)).unwrap();
    let grid = TokenGrid::features(0, 2, 4);
    global_tokens(&gpu, &empty.slice(..0), &grid, &mut out.slice_mut(..0)).unwrap();
    gpu.sync().unwrap();
}
