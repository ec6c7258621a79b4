//! The vision encoder (src/vision): kernels against their f64 twins, and the whole encoder
//! against transformers' `Dinov2Model` at ViT-B/14 width (2 layers), at 518 px (native) and at
//! 256 px (position table interpolated by the converter), for F32/F16/BF16/Q8_0 weights.
//!
//! The Dinov2 checkpoint is not committed (56 MB): both this test and
//! `scripts/vision/make_reference.py` generate the same weights and input from a seed
//! (see that script's doc); only the reference outputs are committed
//! (`tests/fixtures/vision/dinov2_vitb_2layer_ref.safetensors`). Tolerances come from
//! `medregion::vision::tolerance`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use medregion::io::import::{import, ImportOptions};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy};
use medregion::model::names::Component;
use medregion::model::synthetic::{bits_to_normal, fnv1a64, splitmix64_mix, Preset, SplitMix64};
use medregion::ops::{Isa, ThreadPool};
use medregion::tensor::WeightType;
use medregion::vision::attention::{attention_with_isa, AttentionShape};
use medregion::vision::layer_norm::layer_norm_rows;
use medregion::vision::reference::{attention_f64, erf_f64, gelu_f64, layer_norm_f64};
use medregion::vision::tolerance::{max_rel, rel_errors, VisionOp};
use medregion::vision::{math, slices_from_volume, EncodeOptions, VisionEncoder};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

const SEED: u64 = 20261129;
const D: usize = 768;
const HEADS: usize = 12;
const MLP: usize = 3072;
const PATCH: usize = 14;
const NATIVE: usize = 518;
const N_SLICES: usize = 2;

// ---------------------------------------------------------------------------------------------
// Kernels

fn randn(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_normal() * scale).collect()
}

fn as_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni, Isa::Avx512Vnni].into_iter().filter(|i| i.available()).collect()
}

#[test]
fn exp_erf_gelu_match_f64() {
    let mut worst = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..=200_000 {
        let x = -12.0 + 24.0 * i as f64 / 200_000.0;
        let xf = x as f32;
        let e = math::exp(xf) as f64;
        let ee = (xf as f64).exp();
        worst.0 = worst.0.max(((e - ee) / ee).abs());
        worst.1 = worst.1.max((math::erf(xf) as f64 - erf_f64(xf as f64)).abs());
        let g = gelu_f64(xf as f64);
        worst.2 = worst.2.max((math::gelu(xf) as f64 - g).abs() / (xf.abs() as f64).max(1.0));
    }
    // exp: a few ulp; erf: A&S 7.1.26 (1.5e-7) plus f32 cancellation in 1 − poly·e^{−x²} near 0
    // (measured 6.2e-7); gelu error relative to max(|x|, 1).
    assert!(worst.0 < 4e-7, "exp max rel error {}", worst.0);
    assert!(worst.1 < 1e-6, "erf max abs error {}", worst.1);
    assert!(worst.2 < max_rel(VisionOp::Gelu).unwrap(), "gelu error {}", worst.2);
    // exp over the whole clamped range, and erf's tails.
    for x in [-87.0f32, -50.0, 0.0, 1e-8, 50.0, 88.0] {
        let (got, want) = (math::exp(x) as f64, (x as f64).exp());
        assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
    }
    assert_eq!(math::erf(10.0), 1.0);
    assert_eq!(math::erf(-10.0), -1.0);
    assert_eq!(math::gelu(0.0), 0.0);
    eprintln!("exp rel {:.2e}, erf abs {:.2e}, gelu {:.2e}", worst.0, worst.1, worst.2);
}

#[test]
fn erf_f64_reference_is_exact() {
    // erf(1), erf(0.5), erf(2) to 16 digits (Abramowitz & Stegun table 7.1).
    for (x, want) in
        [(0.5, 0.520_499_877_813_046_5), (1.0, 0.842_700_792_949_714_9), (2.0, 0.995_322_265_018_952_7)]
    {
        assert!((erf_f64(x) - want).abs() < 1e-15, "erf({x}) = {}", erf_f64(x));
        assert!((erf_f64(-x) + want).abs() < 1e-15);
    }
}

#[test]
fn layer_norm_matches_f64_on_every_isa() {
    for d in [768usize, 37] {
        let n = 19;
        let mut x = randn(1, n * d, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += (i / d) as f32 * 3.0; // a different mean per row
        }
        let w = randn(2, d, 0.3).into_iter().map(|v| v + 1.0).collect::<Vec<_>>();
        let b = randn(3, d, 0.3);
        let want = layer_norm_f64(&x, &w, &b, 1e-6);
        let mut first: Option<Vec<f32>> = None;
        for isa in isas() {
            let mut y = vec![0.0f32; n * d];
            layer_norm_rows(&x, &mut y, &w, &b, 1e-6, isa).unwrap();
            let (rel, _) = rel_errors(&y, &want);
            assert!(rel < max_rel(VisionOp::LayerNorm).unwrap(), "{isa:?} d={d}: rel {rel}");
            match &first {
                None => first = Some(y),
                Some(f) => assert_eq!(f, &y, "AVX2 and portable LayerNorm differ"),
            }
        }
        let pool = ThreadPool::new(2).unwrap();
        let mut y = vec![0.0f32; n * d];
        medregion::vision::layer_norm(&x, &mut y, &w, &b, 1e-6, &pool).unwrap();
        assert_eq!(first.as_deref(), Some(&y[..]), "threaded LayerNorm differs from one thread");
    }
    let mut y = vec![0.0f32; 10];
    assert!(layer_norm_rows(&[0.0; 10], &mut y, &[1.0; 3], &[0.0; 3], 1e-6, Isa::Scalar).is_err());
}

#[test]
fn attention_matches_f64_on_every_isa_and_thread_count() {
    // T = 77: two query blocks and two key tiles, both partial; hd = 64 and 20 (not a multiple of 8).
    for (t, heads, hd) in [(77usize, 3usize, 64usize), (5, 2, 20), (130, 1, 8)] {
        let shape = AttentionShape { n_seq: 2, n_tokens: t, n_heads: heads, head_dim: hd };
        let len = 2 * t * heads * hd;
        // Scale 1.5: scores of a few units, so softmax is far from uniform.
        let (q, k, v) = (randn(10, len, 1.5), randn(11, len, 1.5), randn(12, len, 1.0));
        let want = attention_f64(&q, &k, &v, 2, t, heads, hd);
        let mut outs = Vec::new();
        for isa in isas() {
            for threads in [1, 2] {
                let pool = ThreadPool::new(threads).unwrap();
                let mut out = vec![f32::NAN; len];
                attention_with_isa(&q, &k, &v, &mut out, shape, &pool, isa).unwrap();
                let (rel, rms) = rel_errors(&out, &want);
                assert!(
                    rel < max_rel(VisionOp::Attention).unwrap(),
                    "{shape:?} {isa:?}: rel {rel}, rms {rms}"
                );
                outs.push(out);
            }
        }
        assert!(
            outs.windows(2).all(|w| w[0] == w[1]),
            "attention results differ across ISAs or thread counts"
        );
    }
    let shape = AttentionShape { n_seq: 1, n_tokens: 4, n_heads: 2, head_dim: 8 };
    let mut out = vec![0.0; 63];
    let err = attention_with_isa(
        &[0.0; 64],
        &[0.0; 64],
        &[0.0; 64],
        &mut out,
        shape,
        &ThreadPool::single(),
        Isa::Scalar,
    );
    assert!(err.is_err());
}

// ---------------------------------------------------------------------------------------------
// Fixture: seeded Dinov2 weights and input, identical to scripts/vision/make_reference.py

fn fixture_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let leaf = name.rsplit('.').next().unwrap();
    let (offset, scale) = if name.contains("norm") && leaf == "weight" {
        (1.0f32, 0.1f32)
    } else if leaf == "bias" {
        (0.0, 0.1)
    } else if leaf == "lambda1" {
        (0.5, 0.1)
    } else if name == "embeddings.cls_token" {
        (0.0, 1.0)
    } else if name == "embeddings.position_embeddings" {
        (0.0, 0.5)
    } else if name == "embeddings.mask_token" {
        (0.0, 0.02)
    } else {
        let fan_in: usize = shape[1..].iter().product();
        (0.0, 1.0f32 / (fan_in as f32).sqrt())
    };
    let stream = splitmix64_mix(SEED ^ fnv1a64(name.as_bytes()));
    let n: usize = shape.iter().product();
    (0..n as u64).map(|i| offset + scale * bits_to_normal(SplitMix64::at(stream, i))).collect()
}

fn hf_tensors(layers: usize) -> Vec<(String, Vec<usize>)> {
    let g = NATIVE / PATCH;
    let mut t = vec![
        ("embeddings.cls_token".to_string(), vec![1, 1, D]),
        ("embeddings.mask_token".to_string(), vec![1, D]),
        ("embeddings.position_embeddings".to_string(), vec![1, 1 + g * g, D]),
        ("embeddings.patch_embeddings.projection.weight".to_string(), vec![D, 3, PATCH, PATCH]),
        ("embeddings.patch_embeddings.projection.bias".to_string(), vec![D]),
    ];
    for i in 0..layers {
        let p = |leaf: &str| format!("encoder.layer.{i}.{leaf}");
        for (leaf, shape) in [
            ("norm1.weight", vec![D]),
            ("norm1.bias", vec![D]),
            ("attention.attention.query.weight", vec![D, D]),
            ("attention.attention.query.bias", vec![D]),
            ("attention.attention.key.weight", vec![D, D]),
            ("attention.attention.key.bias", vec![D]),
            ("attention.attention.value.weight", vec![D, D]),
            ("attention.attention.value.bias", vec![D]),
            ("attention.output.dense.weight", vec![D, D]),
            ("attention.output.dense.bias", vec![D]),
            ("layer_scale1.lambda1", vec![D]),
            ("norm2.weight", vec![D]),
            ("norm2.bias", vec![D]),
            ("mlp.fc1.weight", vec![MLP, D]),
            ("mlp.fc1.bias", vec![MLP]),
            ("mlp.fc2.weight", vec![D, MLP]),
            ("mlp.fc2.bias", vec![D]),
            ("layer_scale2.lambda1", vec![D]),
        ] {
            t.push((p(leaf), shape));
        }
    }
    t.push(("layernorm.weight".to_string(), vec![D]));
    t.push(("layernorm.bias".to_string(), vec![D]));
    t
}

/// The raw slices `[N_SLICES, size, size]` in [0, 1].
fn fixture_volume(size: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(N_SLICES * size * size);
    for s in 0..N_SLICES {
        for i in 0..size {
            for j in 0..size {
                v.push(((i * i + 3 * j * j + 5 * i * j + 97 * s) % 1021) as f32 / 1020.0);
            }
        }
    }
    v
}

/// Per-process scratch for packages (each test removes its own files).
fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vision-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The seeded HF Dinov2 checkpoint folder with `layers` layers: 56 MB (2 layers) or 344 MB
/// (12), written once under the cargo target's temp folder and reused by later runs (a fixed
/// path, so disk use does not grow; written to a private folder, then renamed into place).
fn hf_dir(layers: usize) -> &'static Path {
    static DIRS: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    DIRS[usize::from(layers != 2)].get_or_init(|| {
        let done =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dinov2-vitb-{layers}layer-seed{SEED}"));
        if done.join("config.json").exists() {
            return done;
        }
        let dir = work_dir().join(format!("dinov2-vitb-{layers}layer"));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = hf_tensors(layers)
            .into_iter()
            .map(|(name, shape)| {
                let bytes = fixture_values(&name, &shape).iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, shape, bytes)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        let config = serde_json::json!({
            "architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": D,
            "num_hidden_layers": layers, "num_attention_heads": HEADS, "mlp_ratio": MLP / D,
            "image_size": NATIVE, "patch_size": PATCH, "num_channels": 3, "hidden_act": "gelu",
            "layer_norm_eps": 1e-6, "layerscale_value": 1.0, "qkv_bias": true,
            "use_swiglu_ffn": false, "drop_path_rate": 0.0, "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0
        });
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
        // Another test process may have finished first: then keep its folder.
        if std::fs::rename(&dir, &done).is_err() {
            std::fs::remove_dir_all(&dir).ok();
        }
        done
    })
}

/// Converts the `layers`-layer checkpoint for `size` px with vit weights stored as `ty`.
fn package(size: usize, ty: WeightType, layers: usize) -> PathBuf {
    let opts = ImportOptions {
        vit_hf: Some(hf_dir(layers).to_path_buf()),
        vit_image_size: Some(size),
        fill: Preset::Tiny,
        seed: 1,
        threads: 2,
        ..ImportOptions::default()
    };
    let imported = import(&opts).unwrap();
    let policy = QuantPolicy::all(WeightType::F32).component(Component::Vit, ty);
    let path = work_dir().join(format!("vitb-{layers}-{size}-{}.mrm", ty.name()));
    let mut source = imported.source;
    PackageBuilder::new(imported.config, imported.tokenizer)
        .policy(policy)
        .threads(2)
        .write(&path, &mut source)
        .unwrap();
    path
}

struct Reference {
    f32s: HashMap<String, Vec<f32>>,
    i64s: HashMap<String, Vec<i64>>,
}

const REF_2: &str = "dinov2_vitb_2layer_ref.safetensors";
const REF_12: &str = "dinov2_vitb_12layer_ref.safetensors";

fn reference(file: &str) -> &'static Reference {
    static REFS: [OnceLock<Reference>; 2] = [OnceLock::new(), OnceLock::new()];
    REFS[usize::from(file != REF_2)].get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision").join(file);
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut r = Reference { f32s: HashMap::new(), i64s: HashMap::new() };
        for (name, view) in st.tensors() {
            match view.dtype() {
                Dtype::F32 => {
                    r.f32s.insert(
                        name,
                        view.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    );
                }
                Dtype::I64 => {
                    r.i64s.insert(
                        name,
                        view.data()
                            .chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    );
                }
                other => panic!("unexpected dtype {other:?} of {name}"),
            }
        }
        r
    })
}

#[test]
fn fixture_generator_matches_the_python_script() {
    let r = reference(REF_2);
    let shapes: HashMap<String, Vec<usize>> = hf_tensors(2).into_iter().collect();
    let mut checked = 0;
    for (key, want) in &r.f32s {
        let Some(name) = key.strip_prefix("check.") else { continue };
        if name == "pixels" {
            let cfg = medregion::model::config::VisionConfig { image_size: NATIVE, ..Default::default() };
            let px = slices_from_volume(&fixture_volume(NATIVE), [N_SLICES, NATIVE, NATIVE], &cfg).unwrap();
            assert_eq!(&px[..want.len()], &want[..], "input pixels differ from the script's");
        } else {
            let got = fixture_values(name, &shapes[name]);
            assert_eq!(&got[..want.len()], &want[..], "generated `{name}` differs from the script's");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} check tensors in the reference");
}

/// Encodes the fixture input at `size` with `ty` weights through a `layers`-layer model and
/// compares every stored statistic of hidden_states[levels] and last_hidden_state with the
/// reference `file`; returns (key, rel, rel_rms) per key.
fn encoder_parity(
    size: usize,
    ty: WeightType,
    layers: usize,
    levels: &[usize],
    file: &str,
) -> Vec<(String, f64, f64)> {
    let r = reference(file);
    let path = package(size, ty, layers);
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let encoder = VisionEncoder::new(&model).unwrap();
    let cfg = encoder.config().clone();
    assert_eq!((cfg.image_size, cfg.hidden_size, cfg.n_layers), (size, D, layers));
    let pixels = slices_from_volume(&fixture_volume(size), [N_SLICES, size, size], &cfg).unwrap();
    let pool = ThreadPool::new(2).unwrap();
    let opts = EncodeOptions { levels: levels.to_vec(), batch: 0 };
    let out = encoder.encode(&pixels, N_SLICES, &opts, &pool).unwrap();
    let t = out.n_tokens;
    assert_eq!(t, 1 + (size / PATCH).pow(2));
    let rows = &r.i64s[&format!("{size}.rows")];
    let mut results = Vec::new();
    let keys: Vec<String> = levels.iter().map(|l| format!("hs{l}")).chain(["last".to_string()]).collect();
    for key in &keys {
        let key = key.as_str();
        let ours: &[f32] = match key {
            "last" => &out.last_hidden_state,
            _ => out.hidden_state(key[2..].parse().unwrap()).unwrap(),
        };
        assert_eq!(ours.len(), N_SLICES * t * D);
        let mut got_rows = Vec::new();
        let mut norms = Vec::new();
        let mut means = vec![0.0f64; N_SLICES * D];
        for b in 0..N_SLICES {
            for &row in rows {
                got_rows.extend_from_slice(&ours[(b * t + row as usize) * D..][..D]);
            }
            for j in 0..t {
                let tok = &ours[(b * t + j) * D..][..D];
                norms.push(tok.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32);
                for (m, &v) in means[b * D..(b + 1) * D].iter_mut().zip(tok) {
                    *m += v as f64 / t as f64;
                }
            }
        }
        let means: Vec<f32> = means.into_iter().map(|v| v as f32).collect();
        let mut worst = (0.0f64, 0.0f64);
        for (stat, got) in [("rows", &got_rows), ("token_norms", &norms), ("channel_mean", &means)] {
            let want = as_f64(&r.f32s[&format!("{size}.{key}.{stat}")]);
            let (rel, rms) = rel_errors(got, &want);
            worst = (worst.0.max(rel), worst.1.max(rms));
        }
        results.push((key.to_string(), worst.0, worst.1));
    }
    let budget = max_rel(VisionOp::Encoder(ty)).unwrap();
    for (key, rel, rms) in &results {
        eprintln!("parity {layers} layers {size} px {}: {key} max rel {rel:.3e}, rel rms {rms:.3e} (budget {budget:.0e})", ty.name());
    }
    for (key, rel, _) in &results {
        assert!(
            *rel <= budget,
            "{size} px {} weights: {key} is {rel:.3e} from transformers (budget {budget:.0e})",
            ty.name()
        );
    }
    std::fs::remove_file(&path).ok();
    results
}

#[test]
fn encoder_f32_matches_transformers_at_518_and_256() {
    for size in [NATIVE, 256] {
        encoder_parity(size, WeightType::F32, 2, &[0, 1, 2], REF_2);
    }
}

#[test]
fn encoder_f16_matches_transformers_within_tolerance() {
    for size in [NATIVE, 256] {
        encoder_parity(size, WeightType::F16, 2, &[0, 1, 2], REF_2);
    }
}

#[test]
fn encoder_bf16_matches_transformers_within_tolerance() {
    for size in [NATIVE, 256] {
        encoder_parity(size, WeightType::Bf16, 2, &[0, 1, 2], REF_2);
    }
}

#[test]
fn encoder_q8_0_matches_transformers_within_tolerance() {
    for size in [NATIVE, 256] {
        encoder_parity(size, WeightType::Q8_0, 2, &[0, 1, 2], REF_2);
    }
}

/// The full 12-layer ViT-B/14 at 256 px (F32): a 344 MB cached checkpoint and about a minute on 2
/// cores, so opt-in: `cargo test --release --test vision -- --ignored`.
#[test]
#[ignore]
fn encoder_12_layers_f32_matches_transformers_at_256() {
    encoder_parity(256, WeightType::F32, 12, &[0, 3, 6, 9, 12], REF_12);
}

// ---------------------------------------------------------------------------------------------
// Batching, threads and bad input (synthetic tiny package: fast)

fn tiny_package() -> PathBuf {
    let path = work_dir().join("tiny.mrm");
    medregion::model::synthetic::write_synthetic(&path, Preset::Tiny, 7, QuantPolicy::all(WeightType::F32))
        .unwrap();
    path
}

#[test]
fn batching_and_threads_do_not_change_results_and_bad_input_is_an_error() {
    let path = tiny_package();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let encoder = VisionEncoder::new(&model).unwrap();
    let cfg = encoder.config().clone();
    let s = cfg.image_size;
    let n = 5;
    let volume: Vec<f32> = (0..n * s * s).map(|i| ((i * 7919) % 1000) as f32 / 999.0).collect();
    let pixels = slices_from_volume(&volume, [n, s, s], &cfg).unwrap();
    let all_levels: Vec<usize> = (0..=cfg.n_layers).collect();
    let one = ThreadPool::single();
    let two = ThreadPool::new(2).unwrap();
    let base =
        encoder.encode(&pixels, n, &EncodeOptions { levels: all_levels.clone(), batch: 1 }, &one).unwrap();
    for (batch, pool) in [(2, &two), (5, &two), (0, &one)] {
        let other =
            encoder.encode(&pixels, n, &EncodeOptions { levels: all_levels.clone(), batch }, pool).unwrap();
        assert_eq!(base, other, "batch {batch} / {} threads changed the outputs", pool.threads());
    }
    // Slices are independent: slice 3 alone equals slice 3 of the batch.
    let per = 3 * s * s;
    let alone = encoder.encode(&pixels[3 * per..4 * per], 1, &EncodeOptions::default(), &two).unwrap();
    let tok = base.n_tokens * base.hidden_size;
    assert_eq!(alone.last_hidden_state, base.last_hidden_state[3 * tok..4 * tok]);
    // The last hidden state is the final LayerNorm of the last level: rows have mean ≈ bias mean.
    assert!(base.last_hidden_state.iter().all(|v| v.is_finite()));
    assert_ne!(base.hidden_state(cfg.n_layers).unwrap(), &base.last_hidden_state[..]);

    // Bad input: errors naming the problem, never a panic.
    let e = encoder.encode(&pixels[1..], n, &EncodeOptions::default(), &one).unwrap_err().to_string();
    assert!(e.contains("pixels"), "{e}");
    let e = encoder
        .encode(&pixels, n, &EncodeOptions { levels: vec![cfg.n_layers + 1], batch: 0 }, &one)
        .unwrap_err()
        .to_string();
    assert!(e.contains("levels") || e.contains("hidden state"), "{e}");
    let mut nan = pixels.clone();
    nan[17] = f32::NAN;
    let e = encoder.encode(&nan, n, &EncodeOptions::default(), &one).unwrap_err().to_string();
    assert!(e.contains("finite"), "{e}");
    assert!(slices_from_volume(&volume[1..], [n, s, s], &cfg).is_err());
    // A slice of another size is resized; a 1×1 slice still works.
    let resized = slices_from_volume(&[0.5; 3 * 4 * 6], [3, 4, 6], &cfg).unwrap();
    assert_eq!(resized.len(), 3 * 3 * s * s);
    let v = (0.5 - cfg.image_mean[0]) / cfg.image_std[0];
    assert!(resized.iter().all(|&x| (x - v).abs() < 1e-6));
    std::fs::remove_file(&path).ok();
}
