//! HF checkpoint import (`medregion::io::hf`) against references made by PyTorch, transformers and
//! PEFT (`scripts/hf/make_fixtures.py`, versions in `tests/fixtures/hf/VERSIONS.json`).
//!
//! Reference checks read the fixtures with the `safetensors` crate directly, not through the code
//! under test. Bad-input checks copy a fixture into a temporary folder, break one thing, and expect
//! an `Err` whose message names the culprit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use medregion::io::hf::{
    self, bicubic_resize_grid, dinov2::interpolate_pos_table, load_dinov2, load_dinov2_with, load_llama,
    NamedTensor, PosInterpolation, SafetensorsSet,
};
use medregion::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// LoRA merge vs PEFT `merge_and_unload`, and position tables vs PyTorch: max abs difference.
const TOL: f32 = 1e-6;
/// Position tables vs the same resampling run by PyTorch in float64 (values |v| < 1): we compute
/// in f64 and round once, so only the final f32 rounding (≤ 0.5 ulp < 6e-8) separates us.
const TOL_EXACT: f64 = 6e-8;

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(p)
}

/// Every F32 tensor of a safetensors file as (shape, data), read with the safetensors crate.
fn read_reference(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == Dtype::F32)
        .map(|(name, view)| {
            let data =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

/// Every F64 tensor of a safetensors file as (shape, data).
fn read_reference_f64(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() == Dtype::F64)
        .map(|(name, view)| {
            let data =
                view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
            (name, (view.shape().to_vec(), data))
        })
        .collect()
}

fn max_abs_diff_f64(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max)
}

/// All shards of a checkpoint folder, merged.
fn read_checkpoint(dir: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            all.extend(read_reference(&p));
        }
    }
    all
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A temporary copy of fixture folders, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "medregion-hf-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Copy fixture folder `name` to `<scratch>/<name>` and return the copy's path.
    fn copy(&self, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
        dst
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tensor to write: name, dtype, shape, raw little-endian bytes.
type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrite a safetensors file through `edit` (which sees every tensor as F32 raw data).
fn rewrite(path: &Path, edit: impl Fn(&mut Vec<RawTensor>)) {
    let mut tensors: Vec<RawTensor> =
        read_reference(path).into_iter().map(|(n, (s, d))| (n, Dtype::F32, s, f32_bytes(&d))).collect();
    edit(&mut tensors);
    write_safetensors(path, &tensors);
}

fn edit_text(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn find<'a>(tensors: &'a [NamedTensor], name: &str) -> &'a NamedTensor {
    tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
}

const LORA_TARGETS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

// ---------------------------------------------------------------------------------------------
// LLaMA

#[test]
fn llama_sharded_import_has_canonical_names_shapes_and_exact_values() {
    let dir = fixture("llama");
    assert!(dir.join("model.safetensors.index.json").is_file(), "fixture must be sharded");
    let (cfg, tensors) = load_llama(&dir, None).unwrap();
    assert_eq!((cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers), (64, 128, 2));
    assert_eq!((cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim), (4, 2, 16));
    assert_eq!((cfg.vocab_size, cfg.max_position_embeddings, cfg.tie_word_embeddings), (256, 512, false));
    assert_eq!((cfg.rope_theta, cfg.rms_norm_eps), (500000.0, 1e-5));
    let s = cfg.rope_scaling.as_ref().expect("llama3 rope scaling");
    assert_eq!(
        (s.factor, s.low_freq_factor, s.high_freq_factor, s.original_max_position_embeddings),
        (8.0, 1.0, 4.0, 64)
    );
    assert_eq!((cfg.bos_token_id.clone(), cfg.eos_token_id.clone()), (vec![1], vec![2, 3]));

    assert_eq!(tensors.len(), 1 + 2 * 9 + 2);
    assert_eq!(tensors[0].name, "llm.embed_tokens.weight");
    assert_eq!(tensors[0].shape, [256, 64]);
    assert_eq!(find(&tensors, "llm.layers.1.self_attn.k_proj.weight").shape, [32, 64]);
    assert_eq!(find(&tensors, "llm.layers.1.self_attn.o_proj.weight").shape, [64, 64]);
    assert_eq!(find(&tensors, "llm.layers.0.mlp.down_proj.weight").shape, [64, 128]);
    assert_eq!(tensors.last().unwrap().name, "llm.lm_head.weight");

    let checkpoint = read_checkpoint(&dir);
    assert_eq!(checkpoint.len(), tensors.len());
    for t in &tensors {
        let hf = t.name.strip_prefix("llm.").unwrap();
        let hf = if hf == "lm_head.weight" { hf.to_string() } else { format!("model.{hf}") };
        let (shape, data) = &checkpoint[&hf];
        assert_eq!(&t.shape, shape, "{hf}");
        assert_eq!(bits(&t.data), bits(data), "{hf} differs from the checkpoint");
    }
}

#[test]
fn lora_merge_matches_peft_merge_and_unload() {
    let (_, merged) = load_llama(&fixture("llama"), Some(&fixture("lora"))).unwrap();
    let reference = read_reference(&fixture("merged_reference.safetensors"));
    let checkpoint = read_checkpoint(&fixture("llama"));
    assert_eq!(merged.len(), reference.len());
    let mut worst = 0f32;
    let mut n_merged = 0;
    for t in &merged {
        let hf = t.name.strip_prefix("llm.").unwrap();
        let hf = if hf == "lm_head.weight" { hf.to_string() } else { format!("model.{hf}") };
        let (shape, want) = &reference[&hf];
        assert_eq!(&t.shape, shape, "{hf}");
        if LORA_TARGETS.iter().any(|m| hf.ends_with(&format!("{m}.weight"))) {
            let err = max_abs_diff(&t.data, want);
            assert!(err <= TOL, "{hf}: max |ours - PEFT| = {err:e}");
            // The adapter really changed the weight.
            assert!(max_abs_diff(&t.data, &checkpoint[&hf].1) > 1e-3, "{hf} unchanged");
            worst = worst.max(err);
            n_merged += 1;
        } else {
            assert_eq!(
                bits(&t.data),
                bits(&checkpoint[&hf].1),
                "{hf} must be bit-identical to the checkpoint"
            );
            assert_eq!(bits(&t.data), bits(want), "{hf} must be bit-identical to PEFT's");
        }
    }
    assert_eq!(n_merged, 7 * 2);
    eprintln!("LoRA merge vs PEFT merge_and_unload: max abs error {worst:e} over {n_merged} tensors");
}

#[test]
fn lora_rank_alpha_patterns_rslora_and_modules_to_save_match_peft() {
    let (_, merged) = load_llama(&fixture("llama"), Some(&fixture("lora_variant"))).unwrap();
    let changed = read_reference(&fixture("merged_variant_reference.safetensors"));
    let checkpoint = read_checkpoint(&fixture("llama"));
    let mut worst = 0f32;
    for t in &merged {
        let hf = t.name.strip_prefix("llm.").unwrap();
        let hf = if hf == "lm_head.weight" { hf.to_string() } else { format!("model.{hf}") };
        match changed.get(&hf) {
            Some((shape, want)) => {
                assert_eq!(&t.shape, shape);
                let err = max_abs_diff(&t.data, want);
                assert!(err <= TOL, "{hf}: max |ours - PEFT| = {err:e}");
                worst = worst.max(err);
            }
            None => assert_eq!(bits(&t.data), bits(&checkpoint[&hf].1), "{hf}"),
        }
    }
    // modules_to_save replaces lm_head outright.
    assert_eq!(bits(&find(&merged, "llm.lm_head.weight").data), bits(&changed["lm_head.weight"].1));
    eprintln!("LoRA (rank/alpha patterns, rsLoRA) vs PEFT: max abs error {worst:e}");
}

#[test]
fn half_precision_tensors_convert_exactly() {
    let set = SafetensorsSet::open_file(&fixture("dtypes.safetensors")).unwrap();
    let reference = read_reference(&fixture("dtypes.safetensors"));
    for (name, want) in [("f32", "f32"), ("f16", "f16_as_f32"), ("bf16", "bf16_as_f32")] {
        let (shape, data) = set.read_f32(name).unwrap();
        assert_eq!(shape, [5, 7]);
        assert_eq!(bits(&data), bits(&reference[want].1), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Dinov2

#[test]
fn dinov2_import_names_shapes_and_values() {
    let dir = fixture("dinov2");
    let checkpoint = read_checkpoint(&dir);
    for target in [None, Some(56), Some(69)] {
        let (cfg, tensors) = load_dinov2(&dir, target).unwrap();
        assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads), (32, 2, 2));
        assert_eq!(
            (cfg.intermediate_size, cfg.patch_size, cfg.image_size, cfg.encoder_grid),
            (128, 14, 56, 4)
        );
        assert_eq!(tensors.len(), checkpoint.len() - 1, "all but mask_token");
        assert!(tensors.iter().all(|t| t.name.starts_with("vit.")));
        assert!(!tensors.iter().any(|t| t.name.contains("mask_token")));
        for t in &tensors {
            let (shape, data) = &checkpoint[t.name.strip_prefix("vit.").unwrap()];
            assert_eq!(&t.shape, shape, "{}", t.name);
            // Native grid: the position table is passed through untouched, like HF's early return.
            assert_eq!(bits(&t.data), bits(data), "{}", t.name);
        }
        assert_eq!(
            find(&tensors, "vit.embeddings.patch_embeddings.projection.weight").shape,
            [32, 3, 14, 14]
        );
        assert_eq!(find(&tensors, "vit.encoder.layer.1.attention.attention.query.weight").shape, [32, 32]);
        assert_eq!(find(&tensors, "vit.encoder.layer.0.mlp.fc1.weight").shape, [128, 32]);
        assert_eq!(find(&tensors, "vit.encoder.layer.0.layer_scale2.lambda1").shape, [32]);
    }
}

#[test]
fn dinov2_position_embeddings_match_transformers() {
    let dir = fixture("dinov2");
    let reference = read_reference(&fixture("dinov2_pos_ref.safetensors"));
    let exact = read_reference_f64(&fixture("dinov2_pos_ref.safetensors"));
    let mut report = Vec::new();
    let mut check = |label: String, ours: &NamedTensor, key: &str| {
        let (shape, want) = &reference[key];
        assert_eq!(&ours.shape, shape, "{label}");
        let err = max_abs_diff(&ours.data, want);
        assert!(err <= TOL, "{label}: max |ours - PyTorch| = {err:e}");
        let mut line = format!("{label}: {err:.1e}");
        if let Some((_, want64)) = exact.get(&format!("{key}_f64")) {
            let err64 = max_abs_diff_f64(&ours.data, want64);
            assert!(err64 <= TOL_EXACT, "{label}: max |ours - PyTorch f64| = {err64:e}");
            line += &format!(" (f64 ref {err64:.1e})");
        }
        report.push(line);
    };
    for (size, grid) in [(98, 7), (42, 3), (75, 5), (56, 4)] {
        let (cfg, tensors) = load_dinov2(&dir, Some(size)).unwrap();
        assert_eq!((cfg.encoder_image_size, cfg.encoder_grid), (size, grid));
        let pos = find(&tensors, "vit.embeddings.position_embeddings");
        assert_eq!(pos.shape, [1, 1 + grid * grid, 32]);
        check(format!("{size}px"), pos, &format!("size_{size}"));
    }
    for (variant, key) in [
        (PosInterpolation::ScaleFactorPlusTenth, "legacy_scale"),
        (PosInterpolation::SizeAntialias, "antialias"),
    ] {
        for size in [98, 42] {
            let (_, tensors) = load_dinov2_with(&dir, Some(size), variant).unwrap();
            check(
                format!("{key} {size}px"),
                find(&tensors, "vit.embeddings.position_embeddings"),
                &format!("{key}_{size}"),
            );
        }
    }

    // RAD-DINO geometry with O(1) values: 37×37 → 18×18 (518 px → 256 px), D = 8. Against
    // PyTorch's float64 run we agree to the final f32 rounding. PyTorch's float32 run, which HF
    // uses, carries its own rounding: its source positions near 36 are f32 (good to ~4e-6 px), so
    // it is off the exact result by up to ~2e-6 · max |v| (measured 6e-6 at max |v| ≈ 3.2).
    let (_, src) = &reference["rad_src_518"];
    let ours = interpolate_pos_table(src, 37, 8, 18, PosInterpolation::Size).unwrap();
    let (shape, want) = &reference["rad_256"];
    assert_eq!(shape, &[1, 325, 8]);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (_, want64) = &exact["rad_256_f64"];
    let err64 = max_abs_diff_f64(&ours, want64);
    assert!(err64 <= 0.5 * f32::EPSILON as f64 * scale as f64, "37→18 vs PyTorch f64: {err64:e}");
    let err = max_abs_diff(&ours, want);
    assert!(err <= 4e-6 * scale, "37→18 vs PyTorch f32: {err:e} (max |v| {scale})");
    report.push(format!("37->18 (max |v| {scale:.2}): {err:.1e} (f64 ref {err64:.1e})"));
    eprintln!("position embeddings, max abs error: {}", report.join("; "));
}

#[test]
fn bicubic_resize_grid_is_public_and_hwc() {
    // Two channels carry independent ramps; the resize must not mix them.
    let src: Vec<f32> = (0..9).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let out = bicubic_resize_grid(&src, 3, 3, 2, 5, 5, None);
    assert_eq!(out.len(), 5 * 5 * 2);
    for px in out.chunks_exact(2) {
        assert!((px[0] + px[1]).abs() < 1e-6);
    }
    let _ = hf::BicubicKernel::Plain;
}

// ---------------------------------------------------------------------------------------------
// Bad inputs: each an Err naming the culprit, never a panic.

fn err_text<T: std::fmt::Debug>(r: Result<T, Error>) -> (String, Error) {
    let e = r.expect_err("expected an error");
    (e.to_string(), e)
}

#[test]
fn missing_shard_is_an_error_naming_it() {
    let s = Scratch::new("missing-shard");
    let dir = s.copy("llama");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(msg.contains("model-00002-of-00003.safetensors"), "{msg}");
}

#[test]
fn index_naming_a_tensor_absent_from_its_shard_is_an_error() {
    let s = Scratch::new("index-shard");
    let dir = s.copy("llama");
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shard = v["weight_map"]["lm_head.weight"].as_str().unwrap().to_string();
    let other = if shard.contains("00001") {
        "model-00002-of-00003.safetensors"
    } else {
        "model-00001-of-00003.safetensors"
    };
    edit_text(
        &index,
        &format!("\"lm_head.weight\": \"{shard}\""),
        &format!("\"lm_head.weight\": \"{other}\""),
    );
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(msg.contains("lm_head.weight") && msg.contains(other), "{msg}");
}

#[test]
fn tensor_missing_from_index_is_an_error_naming_it() {
    let s = Scratch::new("missing-tensor");
    let dir = s.copy("llama");
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["weight_map"].as_object_mut().unwrap().remove("model.layers.1.post_attention_layernorm.weight");
    std::fs::write(&index, v.to_string()).unwrap();
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(msg.contains("model.layers.1.post_attention_layernorm.weight"), "{msg}");
}

#[test]
fn shape_mismatch_with_config_names_tensor_expected_and_found() {
    let s = Scratch::new("shape");
    let dir = s.copy("llama");
    edit_text(&dir.join("config.json"), "\"intermediate_size\": 128", "\"intermediate_size\": 96");
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    assert!(
        msg.contains("model.layers.0.mlp.") && msg.contains("[96, 64]") && msg.contains("[128, 64]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype_names_tensor_and_dtype() {
    let s = Scratch::new("dtype");
    let dir = s.copy("llama");
    // Re-save unsharded with one tensor as F64.
    let mut tensors: Vec<RawTensor> = read_checkpoint(&dir)
        .into_iter()
        .map(|(n, (shape, d))| (n, Dtype::F32, shape, f32_bytes(&d)))
        .collect();
    let norm = tensors.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    norm.1 = Dtype::F64;
    norm.3 = vec![0u8; 64 * 8];
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().contains("safetensors") {
            std::fs::remove_file(p).unwrap();
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(msg.contains("model.norm.weight") && msg.contains("F64"), "{msg}");
}

#[test]
fn corrupt_safetensors_header_is_a_format_error() {
    let s = Scratch::new("corrupt");
    let dir = s.copy("llama");
    let shard = dir.join("model-00003-of-00003.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[9] = b'#'; // inside the JSON header
    std::fs::write(&shard, &bytes).unwrap();
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(msg.contains("model-00003-of-00003.safetensors"), "{msg}");

    // A header length pointing past the end of the file; and a truncated file.
    bytes[9] = std::fs::read(fixture("llama/model-00003-of-00003.safetensors")).unwrap()[9];
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&shard, &bytes).unwrap();
    assert!(matches!(load_llama(&dir, None), Err(Error::Format { .. })));
    std::fs::write(&shard, &bytes[..5]).unwrap();
    assert!(matches!(load_llama(&dir, None), Err(Error::Format { .. })));
}

#[test]
fn malformed_config_json_is_a_format_error() {
    let s = Scratch::new("config");
    let dir = s.copy("llama");
    std::fs::write(dir.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    let (msg, e) = err_text(load_llama(&dir, None));
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(msg.contains("config.json"), "{msg}");

    edit_text(&dir.join("config.json"), "{\"hidden_size\": 64,", "{\"hidden_size\": \"wide\"}");
    let (msg, _) = err_text(load_llama(&dir, None));
    assert!(msg.contains("config.json") && msg.contains("invalid type"), "{msg}");

    let dir = s.copy("dinov2");
    edit_text(&dir.join("config.json"), "\"use_swiglu_ffn\": false", "\"use_swiglu_ffn\": true");
    let (msg, _) = err_text(load_dinov2(&dir, None));
    assert!(msg.contains("use_swiglu_ffn"), "{msg}");
}

#[test]
fn unexpected_checkpoint_tensor_is_refused() {
    let s = Scratch::new("extra");
    let dir = s.copy("dinov2");
    rewrite(&dir.join("model.safetensors"), |t| {
        t.push(("classifier.weight".into(), Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])))
    });
    let (msg, _) = err_text(load_dinov2(&dir, None));
    assert!(msg.contains("classifier.weight"), "{msg}");
}

#[test]
fn dinov2_prefixed_names_are_accepted_and_tiny_targets_refused() {
    let s = Scratch::new("prefix");
    let dir = s.copy("dinov2");
    rewrite(&dir.join("model.safetensors"), |t| t.iter_mut().for_each(|t| t.0 = format!("dinov2.{}", t.0)));
    let (_, tensors) = load_dinov2(&dir, Some(98)).unwrap();
    let (_, plain) = load_dinov2(&fixture("dinov2"), Some(98)).unwrap();
    assert_eq!(tensors, plain);
    let (msg, e) = err_text(load_dinov2(&dir, Some(13)));
    assert!(matches!(e, Error::InvalidArgument { .. }) && msg.contains("target_image_size"), "{msg}");
}

#[test]
fn dora_adapter_is_refused() {
    let s = Scratch::new("dora");
    let base = fixture("llama");
    let lora = s.copy("lora");
    edit_text(&lora.join("adapter_config.json"), "\"use_dora\": false", "\"use_dora\": true");
    let (msg, e) = err_text(load_llama(&base, Some(&lora)));
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    assert!(msg.contains("use_dora"), "{msg}");

    // DoRA's magnitude vector in the file, even with the flag off, is refused by name.
    edit_text(&lora.join("adapter_config.json"), "\"use_dora\": true", "\"use_dora\": false");
    let name = "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector";
    rewrite(&lora.join("adapter_model.safetensors"), |t| {
        t.push((name.into(), Dtype::F32, vec![64], f32_bytes(&[1.0; 64])))
    });
    let (msg, _) = err_text(load_llama(&base, Some(&lora)));
    assert!(msg.contains(name), "{msg}");
}

#[test]
fn lora_rank_mismatch_between_a_and_b_is_a_shape_error() {
    let s = Scratch::new("rank");
    let lora = s.copy("lora");
    let b = "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight";
    rewrite(&lora.join("adapter_model.safetensors"), |t| {
        let t = t.iter_mut().find(|t| t.0 == b).unwrap();
        t.2 = vec![128, 3];
        t.3.truncate(128 * 3 * 4);
    });
    let (msg, e) = err_text(load_llama(&fixture("llama"), Some(&lora)));
    assert!(matches!(e, Error::Shape { .. }), "{e:?}");
    assert!(msg.contains("model.layers.1.mlp.up_proj") && msg.contains("[128, 3]"), "{msg}");
}

#[test]
fn adapter_module_missing_from_base_is_an_error() {
    let s = Scratch::new("module");
    let lora = s.copy("lora");
    rewrite(&lora.join("adapter_model.safetensors"), |t| {
        for t in t.iter_mut().filter(|t| t.0.contains(".layers.0.self_attn.q_proj.")) {
            t.0 = t.0.replace(".layers.0.", ".layers.7.");
        }
    });
    let (msg, e) = err_text(load_llama(&fixture("llama"), Some(&lora)));
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(msg.contains("model.layers.7.self_attn.q_proj"), "{msg}");
}

#[test]
fn adapter_features_we_cannot_merge_are_refused() {
    let s = Scratch::new("features");
    let base = fixture("llama");
    let lora = s.copy("lora");
    let cfg = lora.join("adapter_config.json");
    edit_text(&cfg, "\"rank_pattern\": {}", "\"rank_pattern\": {\"layers\\\\.0\\\\..*q_proj\": 2}");
    let (msg, _) = err_text(load_llama(&base, Some(&lora)));
    assert!(msg.contains("rank_pattern"), "{msg}");

    let lora = s.copy("lora_variant");
    edit_text(
        &lora.join("adapter_config.json"),
        "\"modules_to_save\": [\n    \"lm_head\"\n  ]",
        "\"modules_to_save\": null",
    );
    let (msg, _) = err_text(load_llama(&base, Some(&lora)));
    assert!(msg.contains("base_model.model.lm_head.weight"), "{msg}");

    let lora = s.copy("lora");
    edit_text(&lora.join("adapter_config.json"), "\"bias\": \"none\"", "\"bias\": \"all\"");
    let (msg, _) = err_text(load_llama(&base, Some(&lora)));
    assert!(msg.contains("bias"), "{msg}");
}
