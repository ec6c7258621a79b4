//! `medregion inspect` on every synthetic preset (tiny is covered in `tests/package.rs`):
//!
//! * `small` (Llama-3.2-1B-shaped decoder + ViT-B/14) is generated for real by the CLI
//!   (`convert --synthetic small --quant llm=q4_0,vit=f16`, ~850 MiB, about 30 s here);
//! * `full` (Llama-3.1-8B shapes, 8.1 B parameters) would take minutes to fill with random
//!   numbers, and inspect reads only the header (plus the bytes, for the checksum), so the test
//!   writes it with the same `PackageBuilder` from an all-zero source in the storage types the
//!   CLI would use (q4_0 blocks handed over as they are: no quantization work), ~4.4 GiB.
//!
//! Both are checked through `inspect` and `inspect --json`: parameter and tensor counts equal
//! what the preset's config implies (`expected_tensors`), per-component sizes add up to the
//! file, and the checksum verifies. The files live in `CARGO_TARGET_TMPDIR` and are removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use half::f16;
use medregion::io::package::{PackageBuilder, QuantPolicy, SourceTensor, WeightSource};
use medregion::model::names::{expected_tensors, TensorRole};
use medregion::model::synthetic::{bytes_tokenizer, Preset};
use medregion::quant::{Quantized, QK};
use medregion::tensor::WeightType;
use medregion::Result;

struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn inspect(path: &Path, json: bool) -> String {
    let mut args = vec!["inspect".to_string(), path.display().to_string()];
    if json {
        args.push("--json".into());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_medregion")).args(&args).output().unwrap();
    assert!(out.status.success(), "inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Checks `inspect` of a package written from `preset`'s config.
fn check(path: &Path, preset: Preset) {
    let config = preset.config();
    let weights: Vec<_> =
        expected_tensors(&config).into_iter().filter(|t| t.role == TensorRole::Weight).collect();
    let params: u64 = weights.iter().map(|t| t.shape.iter().product::<usize>() as u64).sum();

    let j: serde_json::Value = serde_json::from_str(&inspect(path, true)).unwrap();
    assert_eq!(j["params"].as_u64(), Some(params), "{}: params", preset.name());
    assert_eq!(j["weights"].as_array().unwrap().len(), weights.len(), "{}: weights", preset.name());
    assert_eq!(j["checksum_status"], "verified");
    assert_eq!(j["model_name"], config.name.as_str());
    let file_bytes = std::fs::metadata(path).unwrap().len();
    assert_eq!(j["file_bytes"].as_u64(), Some(file_bytes));
    let comp_bytes: u64 =
        j["components"].as_array().unwrap().iter().map(|c| c["bytes"].as_u64().unwrap()).sum();
    let data = j["data_offset"].as_u64().unwrap() + j["padding_bytes"].as_u64().unwrap();
    assert!(
        comp_bytes + data <= file_bytes && file_bytes - comp_bytes - data < 64 * 1024,
        "{}: sizes add up",
        preset.name()
    );
    let names: Vec<&str> =
        j["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for c in ["vit", "mask", "proj", "llm", "tokenizer"] {
        assert!(names.contains(&c), "{}: component {c} listed", preset.name());
    }

    let text = inspect(path, false);
    let d = &config.decoder;
    assert!(text.contains(&format!("{} parameters", params)), "{text}");
    assert!(text.contains(&format!("LLaMA hidden {}, {} layers", d.hidden_size, d.n_layers)), "{text}");
    assert!(text.contains("(verified)"), "{text}");
}

#[test]
fn inspect_small_preset_from_the_cli() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect-small.safetensors");
    let _guard = Removed(path.clone());
    let out = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["convert", "--synthetic", "small", "--quant", "llm=q4_0,vit=f16", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check(&path, Preset::Small);
}

/// Zeros in whatever type the policy stores: quantized blocks directly, else f32.
struct Zeros(QuantPolicy);

impl WeightSource for Zeros {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor> {
        let n: usize = shape.iter().product();
        Ok(match self.0.resolve(name, shape)?.quant() {
            Some(q) => {
                let blocks = n / QK;
                SourceTensor::Quant(Quantized {
                    qtype: q,
                    values: vec![0; blocks * q.value_bytes_per_block()],
                    scales: vec![f16::ZERO; blocks],
                    mins: if q.has_mins() { vec![f16::ZERO; blocks] } else { Vec::new() },
                })
            }
            None => SourceTensor::F32(vec![0.0; n]),
        })
    }
}

#[test]
fn inspect_full_preset() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect-full.safetensors");
    let _guard = Removed(path.clone());
    let policy = QuantPolicy::parse("llm=q4_0,vit=f16", WeightType::F16).unwrap();
    let builder = PackageBuilder::new(Preset::Full.config(), bytes_tokenizer()).policy(policy.clone());
    let report = builder.write(&path, &mut Zeros(policy)).unwrap();
    assert!(report.file_len > 4 << 30, "full preset is ~4.4 GiB in q4_0 (got {})", report.file_len);
    check(&path, Preset::Full);
}
