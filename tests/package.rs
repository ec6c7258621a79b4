//! Model package: round trips for every weight type, alignment, every bad input, config
//! errors, the `convert` / `inspect` CLI, determinism, and compatibility with the official
//! Python `safetensors` package.

use std::path::{Path, PathBuf};
use std::process::Command;

use half::{bf16, f16};
use medregion::io::package::{
    LoadOptions, Model, PackageBuilder, QuantPolicy, SourceTensor, WeightSource, ALIGNMENT,
};
use medregion::model::config::ModelConfig;
use medregion::model::names::{expected_tensors, Component, TensorRole, PAD_PREFIX};
use medregion::model::synthetic::{
    bytes_tokenizer, synthetic_values, write_synthetic, Preset, SyntheticSource,
};
use medregion::quant::{self, QuantType};
use medregion::tensor::{as_bytes, Weight, WeightType};
use medregion::Error;
use serde_json::{Map, Value};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("medregion-package-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_bytes(policy: QuantPolicy) -> Vec<u8> {
    let dir = TempDir::new(&format!("bytes-{:?}", std::thread::current().id()));
    let path = dir.path("tiny.safetensors");
    write_synthetic(&path, Preset::Tiny, 1, policy).unwrap();
    std::fs::read(&path).unwrap()
}

/// `bytes` copied into 4-byte aligned memory (the alignment `load_from_memory` requires).
fn aligned(bytes: &[u8]) -> Vec<f32> {
    let mut words = vec![0f32; bytes.len().div_ceil(4)];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = f32::from_le_bytes(b);
    }
    words
}

fn load_err(bytes: &[u8]) -> Error {
    let words = aligned(bytes);
    let view = &as_bytes(&words)[..bytes.len()];
    match Model::load_from_memory(view, &LoadOptions { verify_checksum: true, ..LoadOptions::default() }) {
        Ok(_) => panic!("a bad package loaded"),
        Err(e) => e,
    }
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Re-serializes the header after `edit`, keeping the data section (still 64-aligned).
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let n = header_len(bytes);
    let mut root: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut root);
    let mut header = serde_json::to_vec(&root).unwrap();
    header.resize((8 + header.len()).next_multiple_of(64) - 8, b' ');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

fn with_config(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    with_header(bytes, |root| {
        let meta = root.get_mut("__metadata__").unwrap().as_object_mut().unwrap();
        let mut config: Value = serde_json::from_str(meta["medregion.config"].as_str().unwrap()).unwrap();
        edit(&mut config);
        meta.insert("medregion.config".into(), Value::String(config.to_string()));
    })
}

fn entry<'a>(root: &'a mut Map<String, Value>, name: &str) -> &'a mut Map<String, Value> {
    root.get_mut(name).unwrap_or_else(|| panic!("no {name}")).as_object_mut().unwrap()
}

fn offsets(root: &Map<String, Value>, name: &str) -> (u64, u64) {
    let o = root[name]["data_offsets"].as_array().unwrap();
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

/// The reference values a stored weight must dequantize to.
fn reference(ty: WeightType, src: &[f32]) -> Vec<f32> {
    match ty {
        WeightType::F32 => src.to_vec(),
        WeightType::F16 => src.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        WeightType::Bf16 => src.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        q => quant::quantize(q.quant().unwrap(), src).unwrap().dequantize().unwrap(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn round_trip_every_weight_type() {
    let dir = TempDir::new("roundtrip");
    let seed = 3;
    for t in WeightType::ALL {
        let path = dir.path(&format!("tiny-{t}.safetensors"));
        let policy = QuantPolicy::all(t);
        let report = write_synthetic(&path, Preset::Tiny, seed, policy.clone()).unwrap();
        let model =
            Model::load(&path, &LoadOptions { verify_checksum: true, ..LoadOptions::default() }).unwrap();
        assert_eq!(model.checksum(), report.checksum);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), report.file_len);
        let mut n_of_type = 0;
        for e in expected_tensors(model.config()).into_iter().filter(|e| e.role == TensorRole::Weight) {
            let w = model.weight(&e.name).unwrap();
            let ty = policy.resolve(&e.name, &e.shape).unwrap();
            assert_eq!(w.weight_type(), ty, "{}", e.name);
            assert_eq!(w.shape(), e.shape.as_slice());
            let src = synthetic_values(seed, &e.name, w.numel(), 1);
            let got = w.to_f32().unwrap();
            assert_eq!(bits(&got), bits(&reference(ty, &src)), "{} as {ty}", e.name);
            if ty == t {
                n_of_type += 1;
            }
            // Row access agrees with the whole-tensor conversion.
            if w.rows() >= 3 {
                let cols = w.cols();
                let mut rows = vec![0f32; 2 * cols];
                w.rows_to_f32(1, 2, &mut rows).unwrap();
                assert_eq!(bits(&rows), bits(&got[cols..3 * cols]), "{} rows", e.name);
            }
        }
        assert!(n_of_type >= 4, "{t}: only {n_of_type} weights stored as {t}");
        if let Some(q) = t.quant() {
            let w = model.weight("llm.layers.0.mlp.up_proj.weight").unwrap();
            let Weight::Quant(qw) = w else { panic!("not quantized") };
            assert_eq!(qw.qtype, q);
            assert_eq!(qw.scales.len(), 128 * 64 / 32);
            assert_eq!(qw.mins.len(), if q.has_mins() { 128 * 64 / 32 } else { 0 });
        }
        assert!(model.weight("llm.nonexistent").is_err());
    }
}

/// A source that hands over f16, bf16 and already-quantized data.
struct MixedSource;

impl WeightSource for MixedSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> medregion::Result<SourceTensor> {
        let n: usize = shape.iter().product();
        let v = synthetic_values(9, name, n, 1);
        Ok(match Component::of(name) {
            Some(Component::Vit) => SourceTensor::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            Some(Component::Mask) => SourceTensor::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Some(Component::Llm) if shape.len() == 2 && shape[1].is_multiple_of(32) => {
                SourceTensor::Quant(quant::quantize(QuantType::Q4_0, &v).unwrap())
            }
            _ => SourceTensor::F32(v),
        })
    }
}

#[test]
fn sources_in_every_form_convert_or_pass_through() {
    let dir = TempDir::new("mixed");
    let path = dir.path("mixed.safetensors");
    // llm: q4_0 source → q4_0 (lossless pass-through); vit: bf16 → bf16; mask: f16 → f32.
    let policy = QuantPolicy::parse("llm=q4_0,vit=bf16,mask=f32,proj=f32", WeightType::F32).unwrap();
    PackageBuilder::new(Preset::Tiny.config(), bytes_tokenizer())
        .policy(policy)
        .write(&path, &mut MixedSource)
        .unwrap();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let up = "llm.layers.1.mlp.up_proj.weight";
    let Weight::Quant(q) = model.weight(up).unwrap() else { panic!() };
    let want = quant::quantize(QuantType::Q4_0, &synthetic_values(9, up, 128 * 64, 1)).unwrap();
    assert_eq!(q.values, want.values.as_slice());
    assert_eq!(q.scales, want.scales.as_slice());
    let fc1 = "vit.encoder.layer.0.mlp.fc1.weight";
    let Weight::BF16(d) = model.weight(fc1).unwrap() else { panic!() };
    let want: Vec<bf16> = synthetic_values(9, fc1, 64 * 32, 1).iter().map(|&x| bf16::from_f32(x)).collect();
    assert_eq!(d.data, want.as_slice());
    let res = "mask.res1.weight";
    let Weight::F32(d) = model.weight(res).unwrap() else { panic!() };
    let want: Vec<f32> =
        synthetic_values(9, res, 32 * 32, 1).iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(d.data, want.as_slice());

    // A q4_0 source requantized to q8_0 goes through its dequantized values.
    let path = dir.path("requant.safetensors");
    let policy = QuantPolicy::parse("llm=q8_0", WeightType::F32).unwrap();
    PackageBuilder::new(Preset::Tiny.config(), bytes_tokenizer())
        .policy(policy)
        .write(&path, &mut MixedSource)
        .unwrap();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let src = quant::quantize(QuantType::Q4_0, &synthetic_values(9, up, 128 * 64, 1))
        .unwrap()
        .dequantize()
        .unwrap();
    let want = quant::quantize(QuantType::Q8_0, &src).unwrap().dequantize().unwrap();
    assert_eq!(bits(&model.weight(up).unwrap().to_f32().unwrap()), bits(&want));
}

#[test]
fn source_with_wrong_length_is_refused() {
    struct Short;
    impl WeightSource for Short {
        fn tensor(&mut self, _: &str, _: &[usize]) -> medregion::Result<SourceTensor> {
            Ok(SourceTensor::F32(vec![0.0; 3]))
        }
    }
    let dir = TempDir::new("short");
    let path = dir.path("x.safetensors");
    let e =
        PackageBuilder::new(Preset::Tiny.config(), bytes_tokenizer()).write(&path, &mut Short).unwrap_err();
    assert!(matches!(&e, Error::Shape { what, .. } if what.contains("vit.embeddings.cls_token")), "{e}");
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0, "temporary file left behind");
}

#[test]
fn every_tensor_is_64_byte_aligned() {
    let bytes =
        tiny_bytes(QuantPolicy::parse("llm=q4_1,vit=q8_0,mask=bf16,proj=f16", WeightType::F16).unwrap());
    let n = header_len(&bytes);
    assert_eq!((8 + n) % ALIGNMENT, 0);
    let root: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut n_checked = 0;
    for (name, info) in &root {
        if name == "__metadata__" || name.starts_with(PAD_PREFIX) {
            continue;
        }
        let begin = info["data_offsets"][0].as_u64().unwrap() as usize;
        assert_eq!((8 + n + begin) % ALIGNMENT, 0, "{name}");
        n_checked += 1;
    }
    assert!(n_checked > 100);
    // In memory too: views point at 64-aligned addresses of the (aligned) buffer.
    let words = aligned(&bytes);
    let view = &as_bytes(&words)[..bytes.len()];
    let model = Model::load_from_memory(view, &LoadOptions::default()).unwrap();
    let base = view.as_ptr() as usize;
    for t in model.tensors().filter(|t| !t.name().starts_with(PAD_PREFIX)) {
        assert_eq!((t.data().as_ptr() as usize - base) % ALIGNMENT, 0, "{}", t.name());
    }
    // The official Rust reader accepts it.
    safetensors::SafeTensors::deserialize(&bytes).unwrap();
}

#[test]
fn load_from_memory_is_zero_copy() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let words = aligned(&bytes);
    let view = &as_bytes(&words)[..bytes.len()];
    let model =
        Model::load_from_memory(view, &LoadOptions { verify_checksum: true, ..LoadOptions::default() })
            .unwrap();
    let range = view.as_ptr_range();
    let Weight::F32(d) = model.weight("llm.norm.weight").unwrap() else { panic!() };
    assert!(range.contains(&(d.data.as_ptr() as *const u8)));
    assert!(range.contains(&model.tokenizer_bytes().as_ptr()));
    assert_eq!(model.tokenizer_bytes(), bytes_tokenizer().as_slice());
    assert_eq!(model.config(), &Preset::Tiny.config());
    assert_eq!(model.config_json(), Preset::Tiny.config().to_json());
    // Misaligned caller bytes are refused with a clear error.
    let misaligned = &as_bytes(&words)[1..];
    assert!(matches!(
        Model::load_from_memory(misaligned, &LoadOptions::default()),
        Err(Error::InvalidArgument { .. })
    ));

    fn send_sync<T: Send + Sync>() {}
    send_sync::<Model<'static>>();
}

#[test]
fn in_memory_load_equals_the_mapped_one() {
    let dir = TempDir::new("in_memory");
    let path = dir.path("tiny-q4_0.safetensors");
    write_synthetic(&path, Preset::Tiny, 5, QuantPolicy::all(WeightType::Q4_0)).unwrap();
    let mapped = Model::load(&path, &LoadOptions::default()).unwrap();
    let resident = Model::load(&path, &LoadOptions { in_memory: true, verify_checksum: true }).unwrap();
    assert_eq!(resident.as_bytes(), mapped.as_bytes());
    assert_ne!(resident.as_bytes().as_ptr(), mapped.as_bytes().as_ptr(), "a private copy");
    assert_eq!(resident.as_bytes().as_ptr() as usize % 4096, 0, "page-aligned copy");
    assert_eq!(resident.checksum(), mapped.checksum());
    assert_eq!(resident.path(), mapped.path());
    // The copy no longer depends on the file: truncating it leaves the model readable.
    let before = resident.weight("llm.layers.0.mlp.down_proj.weight").unwrap().to_f32().unwrap();
    let truncated = dir.path("truncated.safetensors");
    std::fs::copy(&path, &truncated).unwrap();
    let copy = Model::load(&truncated, &LoadOptions { in_memory: true, ..LoadOptions::default() }).unwrap();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(100).unwrap();
    let after = copy.weight("llm.layers.0.mlp.down_proj.weight").unwrap().to_f32().unwrap();
    assert_eq!(bits(&before), bits(&after));
    // A file that is already truncated is the same clear error either way.
    let e = Model::load(&truncated, &LoadOptions { in_memory: true, ..LoadOptions::default() }).unwrap_err();
    let m = Model::load(&truncated, &LoadOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), m.to_string());
    let missing = Model::load(
        dir.path("missing.safetensors"),
        &LoadOptions { in_memory: true, ..LoadOptions::default() },
    );
    assert!(matches!(missing, Err(Error::Io { .. })), "{missing:?}");
}

#[test]
fn deterministic_from_the_seed() {
    let dir = TempDir::new("determinism");
    let (a, b, c) = (dir.path("a"), dir.path("b"), dir.path("c"));
    let p = QuantPolicy::parse("llm=q4_0", WeightType::F16).unwrap();
    let ra = write_synthetic(&a, Preset::Tiny, 42, p.clone()).unwrap();
    let rb = PackageBuilder::new(Preset::Tiny.config(), bytes_tokenizer())
        .policy(p.clone())
        .threads(1)
        .write(&b, &mut SyntheticSource { seed: 42, threads: 1 })
        .unwrap();
    let rc = write_synthetic(&c, Preset::Tiny, 43, p).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(ra.checksum, rb.checksum);
    assert_ne!(ra.checksum, rc.checksum);
}

// ---------------------------------------------------------------------------------------------
// Bad input: in `package/bad_input.rs`.

#[path = "package/bad_input.rs"]
mod bad_input;

// ---------------------------------------------------------------------------------------------
// CLI.

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn convert_and_inspect(preset: &str, quant: &str, dir: &Path) -> Value {
    let path = dir.join(format!("{preset}.safetensors"));
    let p = path.to_str().unwrap();
    ok(&medregion(&["convert", "--synthetic", preset, "--seed", "5", "--quant", quant, "-o", p]));
    let text = ok(&medregion(&["inspect", p]));
    assert!(text.contains("(verified)"), "{text}");
    assert!(text.contains("size by component"), "{text}");
    let json: Value = serde_json::from_str(&ok(&medregion(&["inspect", p, "--json"]))).unwrap();
    assert_eq!(json["checksum_status"], "verified");
    let components: Vec<&str> =
        json["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(components, ["vit", "mask", "proj", "llm", "tokenizer"]);
    let config: ModelConfig = serde_json::from_value(json["config"].clone()).unwrap();
    assert_eq!(config, Preset::parse(preset).unwrap().config());
    let n_weights = expected_tensors(&config).len() - 1;
    assert_eq!(json["weights"].as_array().unwrap().len(), n_weights);
    json
}

#[test]
fn cli_convert_and_inspect_tiny() {
    let dir = TempDir::new("cli");
    let json = convert_and_inspect("tiny", "llm=q4_0,vit=f16,mask=f32,proj=f32", &dir.0);
    let types: Vec<&str> =
        json["weight_types"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(types, ["f32", "f16", "q4_0"]);
    let p = dir.path("tiny.safetensors");
    let p = p.to_str().unwrap();
    let stored = ok(&medregion(&["inspect", p, "--stored", "--no-verify"]));
    assert!(
        stored.contains("llm.layers.0.mlp.up_proj.weight.q4_0.scales") && stored.contains("(not verified)"),
        "{stored}"
    );
    let config = ok(&medregion(&["inspect", p, "--config"]));
    assert_eq!(ModelConfig::from_json(&config).unwrap(), Preset::Tiny.config());
    // --keep-f32 and --dry-run.
    let plan = ok(&medregion(&[
        "convert",
        "--synthetic",
        "tiny",
        "-o",
        "unused",
        "--quant",
        "q8_0",
        "--keep-f32",
        "llm.embed_tokens.*",
        "--dry-run",
    ]));
    assert!(plan.lines().any(|l| l.starts_with("f32") && l.ends_with("llm.embed_tokens.weight")), "{plan}");
    assert!(plan.lines().any(|l| l.starts_with("q8_0") && l.ends_with("llm.lm_head.weight")), "{plan}");
    assert!(!Path::new("unused").exists());
    // A corrupted file: inspect reports the mismatch and fails.
    let mut bytes = std::fs::read(p).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(p, &bytes).unwrap();
    let out = medregion(&["inspect", p]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH"));
    // Bad arguments are errors, not panics.
    let out = medregion(&["convert", "--synthetic", "huge", "-o", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("huge"));
    let out = medregion(&["convert", "--synthetic", "tiny", "--quant", "llm=q5_k", "-o", "x"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("q5_k"));
    let out = medregion(&["inspect", dir.path("nothing").to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nothing"));
}

/// `small` is about 1 GB in q4_0 (a minute to generate): run with `--ignored`.
#[test]
#[ignore]
fn cli_convert_and_inspect_small() {
    let dir = TempDir::new("cli-small");
    let json = convert_and_inspect("small", "llm=q4_0,vit=f16,mask=f16,proj=f16", &dir.0);
    assert!(json["params"].as_u64().unwrap() > 1_300_000_000);
}

/// `full` is about 5 GB in q4_0 (several minutes): run with `--ignored`.
#[test]
#[ignore]
fn cli_convert_and_inspect_full() {
    let dir = TempDir::new("cli-full");
    let json = convert_and_inspect("full", "llm=q4_0,vit=f16,mask=f16,proj=f16", &dir.0);
    assert!(json["params"].as_u64().unwrap() > 8_000_000_000);
}

// ---------------------------------------------------------------------------------------------
// Python: the official `safetensors` package loads what we write.

fn python() -> String {
    std::env::var("MEDREGION_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[test]
fn python_safetensors_loads_packages() {
    let dir = TempDir::new("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_safetensors_load.py");
    for (name, quant) in [("f32", "f32"), ("mixed", "vit=bf16,mask=f16,proj=f32,llm=q4_1")] {
        let path = dir.path(&format!("{name}.safetensors"));
        let policy = QuantPolicy::parse(quant, WeightType::F32).unwrap();
        let report = write_synthetic(&path, Preset::Tiny, 11, policy).unwrap();
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let mut tensors = Map::new();
        for t in model.tensors().filter(|t| !t.name().starts_with(PAD_PREFIX)) {
            let values: Vec<f64> = match t.dtype() {
                medregion::tensor::DType::U8 => t.data().iter().map(|&b| b as f64).collect(),
                _ => t.to_f32().unwrap().iter().map(|&x| x as f64).collect(),
            };
            let sum: f64 = values.iter().sum();
            tensors.insert(
                t.name().to_string(),
                serde_json::json!({
                    "dtype": t.dtype().name(),
                    "shape": t.shape(),
                    "first": &values[..values.len().min(8)],
                    "sum": sum,
                }),
            );
        }
        let sidecar = dir.path(&format!("{name}.json"));
        let doc = serde_json::json!({ "checksum": report.checksum, "tensors": tensors });
        std::fs::write(&sidecar, doc.to_string()).unwrap();
        let out = Command::new(python())
            .arg(&script)
            .arg(&path)
            .arg("--expect")
            .arg(&sidecar)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (set MEDREGION_PYTHON)", python()));
        assert!(
            out.status.success(),
            "{name}: python check failed (install scripts/requirements-ci.txt)\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds.

/// The smallest valid model: every component present, a few kB.
fn micro_config() -> ModelConfig {
    use medregion::model::config::{ClassGroup, LabelConfig, LabelEntry, RegionConfig, SlotConfig};
    let mut c = Preset::Tiny.config();
    c.name = "micro".into();
    c.preprocess.depth = 2;
    c.preprocess.height = 2;
    c.preprocess.width = 2;
    c.vision.n_layers = 1;
    c.vision.n_heads = 1;
    c.vision.intermediate_size = 32;
    c.vision.patch_size = 2;
    c.vision.image_size = 2;
    c.vision.pretrained_image_size = 2;
    c.pooling.n_slices = 2;
    c.pooling.k_slices = 1;
    c.pooling.grid = 1;
    c.pooling.fixed_regions = vec!["lung".into()];
    c.mask_extractor.levels = vec![1];
    c.mask_extractor.out_dim = 32;
    c.mask_extractor.mlp_layers = 1;
    c.connector.out_dim = 32;
    c.decoder.hidden_size = 32;
    c.decoder.intermediate_size = 32;
    c.decoder.n_layers = 1;
    c.decoder.n_heads = 2;
    c.decoder.n_kv_heads = 1;
    c.decoder.tie_word_embeddings = true;
    c.decoder.max_position_embeddings = 64;
    c.generation.max_new_tokens = 8;
    c.generation.max_seq_len = 64;
    c.prompt.system = "S".into();
    c.regions = vec![RegionConfig { key: "lung".into(), name: "lung".into(), header: "Lung".into() }];
    c.segmentation = vec![SlotConfig { key: "lung".into(), name: "lung".into(), lesion: false }];
    c.labels = LabelConfig {
        table: vec![LabelEntry { id: 1, name: "lung".into() }],
        slots: vec![ClassGroup { key: "lung".into(), classes: vec!["lung".into()], exclude: vec![] }],
        organs: vec![],
        lobes: vec![],
    };
    c.validate().unwrap();
    c
}

#[test]
fn micro_packages_load() {
    let dir = TempDir::new("micro");
    for (name, quant) in [("f32", "f32"), ("mixed", "llm=q4_1,vit=bf16,mask=f16,proj=q8_0")] {
        let path = dir.path(name);
        let policy = QuantPolicy::parse(quant, WeightType::F32).unwrap();
        PackageBuilder::new(micro_config(), bytes_tokenizer())
            .policy(policy)
            .write(&path, &mut SyntheticSource::new(1))
            .unwrap();
        let model =
            Model::load(&path, &LoadOptions { verify_checksum: true, ..LoadOptions::default() }).unwrap();
        assert_eq!(model.config(), &micro_config());
        assert!(std::fs::metadata(&path).unwrap().len() < 128 * 1024);
    }
}

/// Writes the fuzz seeds: `cargo test --release --test package -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/package_reader");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, quant) in [
        ("micro-f32", "f32"),
        ("micro-mixed", "llm=q4_1,vit=bf16,mask=f16,proj=q8_0"),
        ("micro-q4_0", "q4_0"),
    ] {
        let policy = QuantPolicy::parse(quant, WeightType::F32).unwrap();
        let path = dir.join(format!("{name}.safetensors"));
        PackageBuilder::new(micro_config(), bytes_tokenizer())
            .policy(policy)
            .write(&path, &mut SyntheticSource::new(1))
            .unwrap();
    }
}
