//! `medregion encode`: the dump holds exactly what the library computes (preprocessed volume,
//! encoder input, encoder outputs, mapped mask) and bad input fails cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;

use medregion::io::package::QuantPolicy;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::preprocess::{labels_from_volume, preprocess};
use medregion::tensor::WeightType;
use medregion::vision::{slices_from_volume, EncodeOptions, VisionEncoder};
use medregion::volume::Volume;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

fn ct_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume/lung1_small.nrrd")
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-encode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A raw uint8 NRRD on the CT's grid (same header geometry): 1 where HU > -300 (body), else 0.
fn write_mask(dir: &Path) -> PathBuf {
    let ct_bytes = std::fs::read(ct_path()).unwrap();
    let header_end = ct_bytes.windows(2).position(|w| w == b"\n\n").unwrap();
    let header = std::str::from_utf8(&ct_bytes[..header_end]).unwrap();
    let mut out = String::new();
    for line in header.lines() {
        if line.starts_with("type:") {
            out.push_str("type: uint8\n");
        } else if line.starts_with("encoding:") {
            out.push_str("encoding: raw\n");
        } else if !line.starts_with("endian:") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    let ct = Volume::load(ct_path()).unwrap();
    let mut bytes = out.into_bytes();
    bytes.extend(ct.data().iter().map(|&v| u8::from(v > -300.0)));
    let path = dir.join("body_mask.nrrd");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("dump lacks `{name}`"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    (
        t.shape().to_vec(),
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
    )
}

#[test]
fn encode_dump_matches_the_library() {
    let dir = work_dir();
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let mask_path = write_mask(&dir);
    let dump = dir.join("dump.safetensors");
    let out = medregion(&[
        "encode",
        "--model",
        model_path.to_str().unwrap(),
        "--ct",
        ct_path().to_str().unwrap(),
        "--masks",
        mask_path.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "encode failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("slices/s"));

    // The same computation through the library.
    let model = Model::load(&model_path, &LoadOptions::default()).unwrap();
    let cfg = model.config();
    let ct = Volume::load(ct_path()).unwrap();
    let pre = preprocess(&ct, &cfg.preprocess).unwrap();
    let encoder = VisionEncoder::new(&model).unwrap();
    let slices = slices_from_volume(&pre.data, pre.shape, encoder.config()).unwrap();
    let levels = cfg.mask_extractor.levels.clone();
    let want = encoder
        .encode(
            &slices,
            pre.shape[0],
            &EncodeOptions { levels: levels.clone(), batch: 0 },
            &ThreadPool::single(),
        )
        .unwrap();
    let mask_vol = Volume::load(&mask_path).unwrap();
    let want_mask = pre.map_mask(&labels_from_volume(&mask_vol).unwrap(), mask_vol.geometry()).unwrap();
    assert!(
        want_mask.iter().any(|&v| v == 1) && want_mask.iter().any(|&v| v == 0),
        "the body mask should be mixed"
    );

    let bytes = std::fs::read(&dump).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let [d, h, w] = pre.shape;
    let s = encoder.config().image_size;
    assert_eq!(f32s(&st, "volume"), (vec![d, h, w], pre.data.clone()));
    assert_eq!(f32s(&st, "slices"), (vec![d, 3, s, s], slices));
    let states = vec![d, want.n_tokens, want.hidden_size];
    assert_eq!(f32s(&st, "last_hidden_state"), (states.clone(), want.last_hidden_state.clone()));
    for (level, data) in &want.hidden_states {
        assert_eq!(f32s(&st, &format!("hidden_states.{level}")), (states.clone(), data.clone()));
    }
    let m = st.tensor("mask").unwrap();
    assert_eq!((m.dtype(), m.shape()), (Dtype::U16, &[d, h, w][..]));
    let got_mask: Vec<u16> = m.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    assert_eq!(got_mask, want_mask);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let want_levels: Vec<String> = want.hidden_states.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(meta["levels"], want_levels.join(","));
    assert_eq!(meta["threads"], "2");

    // --levels overrides the config.
    let dump2 = dir.join("dump2.safetensors");
    let out = medregion(&[
        "encode",
        "--model",
        model_path.to_str().unwrap(),
        "--ct",
        ct_path().to_str().unwrap(),
        "--dump",
        dump2.to_str().unwrap(),
        "--levels",
        "0,1",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes2 = std::fs::read(&dump2).unwrap();
    let st2 = SafeTensors::deserialize(&bytes2).unwrap();
    let mut names: Vec<String> = st2.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(names, ["hidden_states.0", "hidden_states.1", "last_hidden_state", "slices", "volume"]);
    assert_eq!(f32s(&st2, "last_hidden_state").1, want.last_hidden_state, "thread count changed the result");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn encode_bad_input_is_a_clean_error() {
    let dir = work_dir().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let dump = dir.join("never.safetensors");
    let model = model_path.to_str().unwrap();
    let ct = ct_path();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--ct", "/nonexistent/ct.nrrd"], "ct.nrrd"),
        (vec!["--ct", ct.to_str().unwrap(), "--levels", "99"], "hidden state 99"),
        (vec!["--ct", ct.to_str().unwrap(), "--masks", model], "mrm"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["encode", "--model", model, "--dump", dump.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = medregion(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.starts_with("medregion: error:") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dump.exists(), "a failed encode must not write the dump");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `medregion bench vision --json` on the tiny preset: every field present, FLOP counts equal to
/// the formula for the shapes, rates consistent with the times (no timing thresholds).
#[test]
fn bench_vision_json_is_self_consistent() {
    let out = medregion(&[
        "bench",
        "vision",
        "--synthetic",
        "tiny",
        "--slices",
        "3",
        "--batch",
        "2",
        "--threads",
        "1",
        "--peak-size",
        "32",
        "--reps",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-30);
    // The tiny preset's encoder: 56 px, patch 14 → 4×4 grid, T = 17, D = 32, 2 layers, MLP 64.
    let cfg = medregion::model::synthetic::Preset::Tiny.config().vision;
    let (g2, t, d, i, l) = (16.0, 17.0, 32.0, 64.0, 2.0);
    assert_eq!(doc["image_size"], cfg.image_size);
    assert_eq!(doc["tokens"], 17);
    assert_eq!(doc["hidden_size"], cfg.hidden_size);
    assert_eq!(doc["layers"], cfg.n_layers);
    assert_eq!(doc["intermediate_size"], cfg.intermediate_size);
    assert_eq!(
        (doc["slices"].as_u64(), doc["batch"].as_u64(), doc["threads"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    let fl = &doc["gflop_per_slice"];
    let want = [
        ("patch_embed", 2.0 * g2 * (3.0 * 14.0 * 14.0) * d),
        ("qkv", l * 3.0 * 2.0 * t * d * d),
        ("out", l * 2.0 * t * d * d),
        ("fc1", l * 2.0 * t * d * i),
        ("fc2", l * 2.0 * t * i * d),
        ("attention", l * 2.0 * 2.0 * t * t * d),
    ];
    for (name, flops) in want {
        assert!(close(num(&fl[name]) * 1e9, flops), "{name}: {} vs {flops}", fl[name]);
    }
    let total: f64 = want.iter().map(|w| w.1).sum();
    assert!(close(num(&fl["total"]) * 1e9, total));
    assert!(close(num(&fl["gemm"]) * 1e9, total - want[5].1));
    let secs = num(&doc["seconds"]);
    assert!(secs > 0.0 && secs.is_finite());
    assert!(close(num(&doc["slices_per_s"]), 3.0 / secs));
    assert!(close(num(&doc["gflop_per_s"]), 3.0 * total / 1e9 / secs));
    let b = &doc["breakdown"];
    let parts = [num(&b["gemm_s"]), num(&b["attention_s"]), num(&b["other_s"])];
    assert!(parts.iter().all(|&p| p >= 0.0 && p.is_finite()), "{b}");
    assert!(parts.iter().sum::<f64>() <= secs * 1.001 + 1e-4, "{b} vs {secs} s");
    assert!(close(num(&b["attention_gflop_per_s"]), 3.0 * want[5].1 / 1e9 / parts[1]));
    let peak = &doc["sgemm_peak"];
    assert_eq!(peak["size"], 32);
    let peak_rate = num(&peak["gflop_per_s"]);
    assert!(close(peak_rate, 2.0 * 32f64.powi(3) / num(&peak["seconds"]) / 1e9));
    let gemms = doc["gemms"].as_array().unwrap();
    let names: Vec<&str> = gemms.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["patch_embed", "qkv_out", "fc1", "fc2"]);
    let shapes = [(2 * 16, 588, 32), (2 * 17, 32, 32), (2 * 17, 32, 64), (2 * 17, 64, 32)];
    let mut big = (0.0, 0.0);
    for (g, (m, k, n)) in gemms.iter().zip(shapes) {
        assert_eq!((g["m"].as_u64(), g["k"].as_u64(), g["n"].as_u64()), (Some(m), Some(k), Some(n)), "{g}");
        let flops = 2.0 * (m * k * n) as f64;
        assert!(close(num(&g["gflop_per_s"]), flops / num(&g["seconds"]) / 1e9), "{g}");
        assert!(close(num(&g["vs_peak"]), num(&g["gflop_per_s"]) / peak_rate), "{g}");
        if g["name"] != "patch_embed" {
            big = (big.0 + flops, big.1 + num(&g["seconds"]));
        }
    }
    assert!(close(num(&doc["encoder_gemms_gflop_per_s"]), big.0 / big.1 / 1e9));
    assert!(close(num(&doc["encoder_gemms_vs_peak"]), num(&doc["encoder_gemms_gflop_per_s"]) / peak_rate));
    let a = &doc["attention_alone"];
    assert!(close(num(&a["gflop"]) * 1e9, 4.0 * 2.0 * t * t * d));

    // Bad arguments: one-line errors.
    let out = medregion(&["bench", "vision", "--synthetic", "tiny", "--slices", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--slices"));
    let out = medregion(&["bench", "vision", "--synthetic", "huge"]);
    assert!(!out.status.success());
}
