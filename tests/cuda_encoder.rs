//! The vision encoder on the GPU (`medregion::backend::cuda::encoder::DeviceEncoder`) against
//! the CPU encoder (`medregion::vision::VisionEncoder`) on the same seeded random slices,
//! through small synthetic packages whose ViT has heads of 64 and 128 values (the widths the
//! CUDA attention kernel takes; the `tiny` preset's 16-wide heads are refused, tested below).
//! Every test needs a device, so every test is ignored; `scripts/gpu-check.sh` runs them with
//! `--include-ignored`.
//!
//! Metric: `vision::tolerance::rel_errors` (`max |gpu − cpu| / max |cpu|` over a whole tensor),
//! for `last_hidden_state` and every hidden state 0..=L:
//!
//! | path | why it differs from the CPU | max rel |
//! |---|---|---|
//! | `Precision::F32` | element-wise kernels and attention are bit-identical; cuBLAS SGEMM sums each output's `k` products in its own order (f32 rounding, ~1e-7 per GEMM) | 1e-4 |
//! | `Precision::Bf16` | both GEMM operands rounded to bf16 (2⁻⁹ relative each), f32 accumulation, through 2 layers | 3e-2 |
//!
//! Also asserted: shapes of the output equal the CPU's, two runs of the same input give the
//! same bits (deterministic), 0 slices give empty outputs, and bad input (wrong pixel count,
//! non-finite pixel, unknown level, unsupported head width) is an error naming the problem.
//!
//! Model variants: A = D 128, 2 heads of 64, I 256, 130 px (9×9 patches, T = 82: two query
//! blocks with a tail; the last 4 pixel rows/columns are dropped like the convolution), with
//! LayerScale and q/k/v biases; B = D 256, 2 heads of 128, I 512, 84 px (T = 37), without
//! LayerScale and q/k/v biases. Weights: Dinov2-like scales (linear N(0, 1/fan_in), norms
//! 1 + 0.1·z, biases 0.1·z, LayerScale 0.5 + 0.1·z) so every branch matters.

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::{gpu, XorShift as Rng};
use std::path::{Path, PathBuf};

use medregion::backend::cuda::encoder::{DeviceEncoder, Precision};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy, SourceTensor, WeightSource};
use medregion::model::synthetic::{
    bits_to_normal, bytes_tokenizer, fnv1a64, splitmix64_mix, Preset, SplitMix64, SyntheticSource,
};
use medregion::model::ModelConfig;
use medregion::ops::ThreadPool;
use medregion::tensor::WeightType;
use medregion::vision::tolerance::rel_errors;
use medregion::vision::{EncodeOptions, VisionEncoder, VisionOutput};

/// Max rel of the F32 path against the CPU (table above).
const TOL_F32: f64 = 1e-4;
/// Max rel of the Bf16 path against the CPU's f32 encoder (table above).
const TOL_BF16: f64 = 3e-2;
const SEED: u64 = 0x00c0_ffee;

/// The ViT shape of one test model.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    hidden: usize,
    heads: usize,
    inter: usize,
    image: usize,
    layerscale: bool,
    qkv_bias: bool,
}

const VARIANTS: [Variant; 2] = [
    Variant { name: "a", hidden: 128, heads: 2, inter: 256, image: 130, layerscale: true, qkv_bias: true },
    Variant { name: "b", hidden: 256, heads: 2, inter: 512, image: 84, layerscale: false, qkv_bias: false },
];

/// The tiny preset with the ViT of `v` (2 layers; the rest of the model is untouched apart
/// from the connector's input width, which must equal the ViT's).
fn config(v: &Variant) -> ModelConfig {
    let mut c = Preset::Tiny.config();
    c.vision.hidden_size = v.hidden;
    c.vision.n_heads = v.heads;
    c.vision.intermediate_size = v.inter;
    c.vision.image_size = v.image;
    c.vision.pretrained_image_size = v.image;
    c.vision.layerscale = v.layerscale;
    c.vision.qkv_bias = v.qkv_bias;
    c.connector.in_dim = v.hidden;
    c.validate().expect("test config is valid");
    c
}

/// Dinov2-like `vit.*` weights (module doc); everything else from the synthetic source.
struct VitSource(SyntheticSource);

impl WeightSource for VitSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> medregion::Result<SourceTensor> {
        if !name.starts_with("vit.") {
            return self.0.tensor(name, shape);
        }
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let (offset, scale) = if name.contains("norm") && leaf == "weight" {
            (1.0f32, 0.1f32)
        } else if leaf == "bias" {
            (0.0, 0.1)
        } else if leaf == "lambda1" {
            (0.5, 0.1)
        } else if leaf == "cls_token" {
            (0.0, 1.0)
        } else if leaf == "position_embeddings" {
            (0.0, 0.5)
        } else {
            let fan_in: usize = shape.iter().skip(1).product();
            (0.0, 1.0 / (fan_in.max(1) as f32).sqrt())
        };
        let stream = splitmix64_mix(SEED ^ fnv1a64(name.as_bytes()));
        let n: usize = shape.iter().product();
        Ok(SourceTensor::F32(
            (0..n as u64).map(|i| offset + scale * bits_to_normal(SplitMix64::at(stream, i))).collect(),
        ))
    }
}

fn package_path(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cuda-encoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{tag}.mrm"))
}

/// Writes the F32 package of variant `v`.
fn package(v: &Variant) -> PathBuf {
    let path = package_path(v.name);
    PackageBuilder::new(config(v), bytes_tokenizer())
        .policy(QuantPolicy::all(WeightType::F32))
        .threads(2)
        .write(&path, &mut VitSource(SyntheticSource { seed: 3, threads: 2 }))
        .unwrap();
    path
}

/// Asserts `gpu` has the CPU's shape and every tensor within `tol` of it; returns the worst
/// max rel.
fn compare(what: &str, gpu: &VisionOutput, cpu: &VisionOutput, tol: f64) -> f64 {
    assert_eq!(
        (gpu.n_slices, gpu.n_tokens, gpu.hidden_size),
        (cpu.n_slices, cpu.n_tokens, cpu.hidden_size),
        "{what}: output shape"
    );
    let levels = |o: &VisionOutput| o.hidden_states.iter().map(|(l, _)| *l).collect::<Vec<_>>();
    assert_eq!(levels(gpu), levels(cpu), "{what}: levels");
    let mut pairs = vec![("last_hidden_state".to_string(), &gpu.last_hidden_state, &cpu.last_hidden_state)];
    for ((l, g), (_, c)) in gpu.hidden_states.iter().zip(&cpu.hidden_states) {
        pairs.push((format!("hidden_states[{l}]"), g, c));
    }
    let mut worst = 0.0f64;
    for (name, g, c) in pairs {
        assert_eq!(g.len(), c.len(), "{what}: {name} length");
        let want: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        let (rel, rms) = rel_errors(g, &want);
        eprintln!("{what}: {name} max rel {rel:.3e}, rel rms {rms:.3e} (budget {tol:.0e})");
        assert!(rel <= tol, "{what}: {name} is {rel:.3e} from the CPU encoder (budget {tol:.0e})");
        worst = worst.max(rel);
    }
    worst
}

fn assert_same_bits(what: &str, a: &VisionOutput, b: &VisionOutput) {
    let bits = |o: &VisionOutput| {
        let mut v: Vec<u32> = o.last_hidden_state.iter().map(|x| x.to_bits()).collect();
        for (_, h) in &o.hidden_states {
            v.extend(h.iter().map(|x| x.to_bits()));
        }
        v
    };
    assert!(bits(a) == bits(b), "{what}: two runs of the same input differ (not deterministic)");
}

/// CPU vs GPU in `precision` for every variant: 5 slices in batches of 2 (a shorter last
/// batch), every level.
fn parity(precision: Precision, tol: f64) {
    let gpu = gpu();
    let pool = ThreadPool::new(2).unwrap();
    for v in &VARIANTS {
        let path = package(v);
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let cpu = VisionEncoder::new(&model).unwrap();
        let dev = DeviceEncoder::upload(&gpu, &model, precision).unwrap();
        assert_eq!(dev.precision(), precision);
        let c = cpu.config().clone();
        assert_eq!(dev.config(), &c);
        let n = 5;
        let mut rng = Rng::new(SEED ^ v.hidden as u64);
        // Normalized pixels are roughly standard normal: [-2.5, 2.5).
        let pixels = rng.vec(n * c.num_channels * c.image_size * c.image_size, -2.5, 2.5);
        let opts = EncodeOptions { levels: (0..=c.n_layers).rev().collect(), batch: 2 };
        let want = cpu.encode(&pixels, n, &opts, &pool).unwrap();
        let got = dev.encode(&pixels, n, &opts).unwrap();
        let what = format!("variant {} ({:?})", v.name, precision);
        compare(&what, &got, &want, tol);
        let again = dev.encode(&pixels, n, &opts).unwrap();
        assert_same_bits(&what, &got, &again);
        // Default batch (all 5 slices in one batch), only the last hidden state.
        let one = dev.encode(&pixels, n, &EncodeOptions::default()).unwrap();
        assert!(one.hidden_states.is_empty());
        let cpu_one = cpu.encode(&pixels, n, &EncodeOptions::default(), &pool).unwrap();
        compare(&format!("{what}, one batch"), &one, &cpu_one, tol);
        // Back to batches of 2 with every level: the kept scratch is rebuilt for that shape and
        // gives the same bits as the first run.
        let third = dev.encode(&pixels, n, &opts).unwrap();
        assert_same_bits(&format!("{what}, after another shape"), &got, &third);
        drop(dev);
        drop(model);
        std::fs::remove_file(&path).ok();
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn f32_path_matches_the_cpu_encoder() {
    parity(Precision::F32, TOL_F32);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn bf16_path_matches_the_cpu_encoder_within_bf16_rounding() {
    parity(Precision::Bf16, TOL_BF16);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn bad_input_is_an_error() {
    let gpu = gpu();
    let v = &VARIANTS[0];
    let path = package(v);
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let dev = DeviceEncoder::upload(&gpu, &model, Precision::Bf16).unwrap();
    let c = dev.config().clone();
    let per = c.num_channels * c.image_size * c.image_size;
    let n = 2;
    let pixels = Rng::new(7).vec(n * per, -2.0, 2.0);

    let e = dev.encode(&pixels[1..], n, &EncodeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("pixels"), "{e}");
    let e = dev.encode(&pixels, n + 1, &EncodeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("pixels"), "{e}");
    let mut nan = pixels.clone();
    nan[per + 11] = f32::NAN;
    let e = dev.encode(&nan, n, &EncodeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("finite"), "{e}");
    let bad_level = EncodeOptions { levels: vec![c.n_layers + 1], batch: 0 };
    let e = dev.encode(&pixels, n, &bad_level).unwrap_err().to_string();
    assert!(e.contains("levels") || e.contains("hidden state"), "{e}");

    // No slices: empty outputs of the right shape.
    let empty = dev.encode(&[], 0, &EncodeOptions { levels: vec![0], batch: 0 }).unwrap();
    assert_eq!((empty.n_slices, empty.n_tokens, empty.hidden_size), (0, c.n_positions(), c.hidden_size));
    assert!(empty.last_hidden_state.is_empty() && empty.hidden_states[0].1.is_empty());

    // Still usable after the errors.
    dev.encode(&pixels, n, &EncodeOptions::default()).unwrap();
    drop(dev);
    drop(model);
    std::fs::remove_file(&path).ok();

    // The tiny preset's heads of 16 values: refused at upload, naming the supported widths.
    let tiny = package_path("tiny");
    medregion::model::synthetic::write_synthetic(&tiny, Preset::Tiny, 7, QuantPolicy::all(WeightType::F32))
        .unwrap();
    let model = Model::load(&tiny, &LoadOptions::default()).unwrap();
    let e = DeviceEncoder::upload(&gpu, &model, Precision::F32).unwrap_err().to_string();
    assert!(e.contains("64 or 128"), "{e}");
    drop(model);
    std::fs::remove_file(&tiny).ok();
}
