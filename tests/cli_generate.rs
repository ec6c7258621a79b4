//! `medregion generate` on a synthetic tiny package: deterministic output for a seed, the logits
//! dump's shape and rows against the library, and clear errors for bad flags.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use medregion::io::package::{LoadOptions, Model, QuantPolicy};
use medregion::llm::{Activations, GenerateOptions, Input, SamplingParams, Session, SessionOptions};
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::tensor::WeightType;
use medregion::tokenizer::Tokenizer;

fn medregion(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion");
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("medregion-cli-gen-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads a float32 C-order 2-D .npy (format 1.0), checking the header.
fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "header padded to 64 bytes");
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let dims: Vec<usize> =
        shape.split(',').map(|s| s.trim()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let data: Vec<f32> =
        b[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

#[test]
fn generate_is_deterministic_and_dumps_the_librarys_logits() {
    let dir = Dir::new("main");
    let pkg = dir.0.join("tiny.mrpk");
    write_synthetic(&pkg, Preset::Tiny, 11, QuantPolicy::all(WeightType::Q8_0)).unwrap();
    let pkg_s = pkg.to_str().unwrap();
    let dump = dir.0.join("logits.npy");
    let sampled = [
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--repetition-penalty",
        "1.1",
        "--seed",
        "7",
    ];
    let mut args = vec![
        "generate",
        "--model",
        pkg_s,
        "--prompt",
        "The lungs are",
        "--max-new-tokens",
        "24",
        "--threads",
        "2",
    ];
    args.extend_from_slice(&sampled);
    let (ok, first, err) = medregion(&args);
    assert!(ok, "{err}");
    assert!(err.contains("tokens/s"), "{err}");
    let (ok, second, _) = medregion(&args);
    assert!(ok);
    assert_eq!(first, second, "same seed, same output");
    let (ok, one_thread, _) =
        medregion(&[&args[..args.len() - sampled.len() - 2], &["--threads", "1"], &sampled[..]].concat());
    assert!(ok);
    assert_eq!(first, one_thread, "the thread count does not change the output");
    let (ok, in_memory, err) = medregion(&[&args[..], &["--in-memory"]].concat());
    assert!(ok, "{err}");
    assert_eq!(first, in_memory, "reading the model into memory does not change the output");

    let dump_s = dump.to_str().unwrap();
    let (ok, _, err) = medregion(&[&args[..], &["--dump-logits", dump_s]].concat());
    assert!(ok, "{err}");
    let (rows, cols, data) = read_npy(&dump);

    // The library, same options.
    let model = Model::load(&pkg, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::from_package(&model).unwrap();
    let ids = tok.encode("The lungs are", true).unwrap();
    let mut s =
        Session::new(&model, &SessionOptions { context: 64, threads: 1, ..Default::default() }).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 24,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed: 7,
        },
        keep_logits: true,
        ..Default::default()
    };
    let out =
        s.generate(Input::Tokens(&ids), &opts, Some(&tok), &mut |_, _| ControlFlow::Continue(())).unwrap();
    assert_eq!(cols, model.config().decoder.vocab_size);
    assert_eq!(
        rows,
        ids.len() + out.tokens.len() - 1
            + usize::from(!matches!(out.stop, medregion::llm::StopReason::MaxTokens))
    );
    assert_eq!(data, out.logits);
    assert_eq!(String::from_utf8_lossy(&first).trim_end_matches('\n'), out.text);
    // The prompt rows also equal an independent prefill.
    let mut prompt_rows = vec![0.0; ids.len() * cols];
    s.reset();
    s.prefill_all_logits(Input::Tokens(&ids), &mut prompt_rows).unwrap();
    assert_eq!(data[..ids.len() * cols], prompt_rows[..]);
}

/// `--activations f32`: the dump is the library's logits with `Activations::F32` (greedy), and
/// differs from the default int8 run on quantized weights.
#[test]
fn f32_activations_flag_matches_the_library() {
    let dir = Dir::new("act");
    let pkg = dir.0.join("tiny-q41.mrpk");
    write_synthetic(&pkg, Preset::Tiny, 5, QuantPolicy::all(WeightType::Q4_1)).unwrap();
    let (dump_f32, dump_int8) = (dir.0.join("f32.npy"), dir.0.join("int8.npy"));
    for (mode, dump) in [("f32", &dump_f32), ("int8", &dump_int8)] {
        let args = ["generate", "--model", pkg.to_str().unwrap(), "--prompt", "The lungs are"];
        let extra = ["--max-new-tokens", "6", "--threads", "2", "--activations", mode, "--dump-logits"];
        let (ok, _, err) = medregion(&[&args[..], &extra[..], &[dump.to_str().unwrap()]].concat());
        assert!(ok, "{mode}: {err}");
    }
    let (_, cols, f32_rows) = read_npy(&dump_f32);
    let (_, _, int8_rows) = read_npy(&dump_int8);
    assert_ne!(f32_rows, int8_rows);
    let model = Model::load(&pkg, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::from_package(&model).unwrap();
    let ids = tok.encode("The lungs are", true).unwrap();
    let options =
        SessionOptions { context: 64, threads: 1, activations: Activations::F32, ..Default::default() };
    let mut s = Session::new(&model, &options).unwrap();
    let opts = GenerateOptions { max_new_tokens: 6, keep_logits: true, ..Default::default() };
    let out = s.generate(Input::Tokens(&ids), &opts, None, &mut |_, _| ControlFlow::Continue(())).unwrap();
    assert_eq!(cols, s.vocab_size());
    assert_eq!(f32_rows, out.logits);
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = Dir::new("bad");
    let pkg = dir.0.join("tiny.mrpk");
    write_synthetic(&pkg, Preset::Tiny, 1, QuantPolicy::all(WeightType::F32)).unwrap();
    let p = pkg.to_str().unwrap();
    let long = "x".repeat(5000);
    for (extra, needle) in [
        (vec!["--temperature", "-1"], "temperature"),
        (vec!["--temperature", "nan"], "temperature"),
        (vec!["--top-p", "0"], "top_p"),
        (vec!["--top-p", "1.5"], "top_p"),
        (vec!["--repetition-penalty", "0"], "repetition_penalty"),
        (vec!["--max-new-tokens", "0"], "max-new-tokens"),
        (vec!["--max-new-tokens", "-3"], "'-3'"),
        (vec!["--prompt", long.as_str()], "context"),
        (vec!["--top-k", "many"], "top-k"),
        (vec!["--activations", "fp16"], "activations"),
    ] {
        let mut args = vec!["generate", "--model", p];
        if extra[0] != "--prompt" {
            args.extend(["--prompt", "hi"]);
        }
        args.extend(extra.iter().copied());
        let (ok, _, err) = medregion(&args);
        assert!(!ok, "{} succeeded", extra[0]);
        assert!(err.contains(needle), "{}: {err}", extra[0]);
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, _, err) = medregion(&["generate", "--model", "/nonexistent/m.mrpk", "--prompt", "hi"]);
    assert!(!ok && err.contains("/nonexistent/m.mrpk"), "{err}");
}

#[test]
fn bench_llm_reports_every_figure() {
    let dir = Dir::new("bench");
    let pkg = dir.0.join("tiny.mrpk");
    write_synthetic(&pkg, Preset::Tiny, 2, QuantPolicy::all(WeightType::Q4_0)).unwrap();
    let (ok, out, err) = medregion(&[
        "bench",
        "llm",
        "--model",
        pkg.to_str().unwrap(),
        "--threads",
        "1",
        "--batch",
        "3",
        "--prompt-len",
        "8",
        "--steps",
        "4",
        "--rounds",
        "2",
        "--json",
    ]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    // Each figure is the fastest of its two rounds, and the batch ratio is taken between those.
    assert_eq!(doc["rounds"], 2);
    for (key, rounds) in [
        ("prefill_tokens_per_s", "prefill_tokens_per_s_rounds"),
        ("decode_tokens_per_s", "decode_tokens_per_s_rounds"),
        ("batch_decode_tokens_per_s", "batch_decode_tokens_per_s_rounds"),
    ] {
        let r: Vec<f64> = doc[rounds].as_array().expect(rounds).iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(r.len(), 2, "{rounds}: {doc}");
        assert_eq!(doc[key].as_f64().unwrap(), r[0].max(r[1]), "{key}: {doc}");
    }
    let ratio =
        doc["batch_decode_tokens_per_s"].as_f64().unwrap() / doc["decode_tokens_per_s"].as_f64().unwrap();
    assert!((doc["batch_vs_sequential"].as_f64().unwrap() - ratio).abs() < 1e-9, "{doc}");
    for key in [
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "decode_gb_per_s",
        "batch_decode_tokens_per_s",
        "batch_vs_sequential",
        "machine_read_gb_per_s",
        "decode_fraction_of_read_bandwidth",
    ] {
        assert!(doc[key].as_f64().is_some_and(|v| v > 0.0 && v.is_finite()), "{key}: {doc}");
    }
    let ratio = doc["decode_gb_per_s"].as_f64().unwrap() / doc["machine_read_gb_per_s"].as_f64().unwrap();
    assert!((doc["decode_fraction_of_read_bandwidth"].as_f64().unwrap() - ratio).abs() < 1e-9, "{doc}");
    assert_eq!(doc["batch"], 3);
    // The products alone (1 row, 3 rows) and the ceiling they put on batched decode.
    let one = doc["products_seconds_one_row"].as_f64().expect("products_seconds_one_row");
    let many = doc["products_seconds_batch"].as_f64().expect("products_seconds_batch");
    assert!(one > 0.0 && many > 0.0 && one.is_finite() && many.is_finite(), "{doc}");
    let gain = doc["batch_products_gain"].as_f64().unwrap();
    assert!((gain - 3.0 * one / many).abs() <= 1e-9 * gain, "{doc}");
    let ceiling = doc["batch_vs_sequential_ceiling"].as_f64().unwrap();
    let want = 3.0 / (doc["decode_tokens_per_s"].as_f64().unwrap() * many);
    assert!((ceiling - want).abs() <= 1e-9 * want, "{doc}");
    let model = Model::load(&pkg, &LoadOptions::default()).unwrap();
    let s = Session::new(&model, &SessionOptions { context: 16, threads: 1, ..Default::default() }).unwrap();
    assert_eq!(doc["weight_bytes_per_step"].as_f64().unwrap() as usize, s.weight_bytes_per_step());
    // The batched products against the int8 peak: all of this model's products are Q4_0, so
    // they run on the int8 kernels wherever there is a vector path (the scalar ISA has none).
    assert!(s.int8_products());
    let cfg = &model.config().decoder;
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let per_layer = d * cfg.q_dim() + 2 * d * cfg.kv_dim() + cfg.q_dim() * d + 3 * d * f;
    assert_eq!(s.matmul_macs_per_token(), cfg.n_layers * per_layer + v * d);
    if medregion::ops::machine_int8_peak(1).unwrap().is_some() {
        let macs = doc["matmul_macs_per_token"].as_f64().expect("matmul_macs_per_token");
        assert_eq!(macs as usize, s.matmul_macs_per_token(), "{doc}");
        let gmacs = doc["batch_matmul_gmacs"].as_f64().unwrap();
        let want = macs * doc["batch_decode_tokens_per_s"].as_f64().unwrap() / 1e9;
        assert!((gmacs - want).abs() <= 1e-9 * want, "{doc}");
        let peak = doc["machine_int8_peak_gmacs"].as_f64().unwrap();
        assert!(peak > 0.0 && peak.is_finite(), "{doc}");
        assert!(doc["machine_int8_peak_kernel"].as_str().is_some_and(|k| k.starts_with("vp")), "{doc}");
        let fraction = doc["batch_fraction_of_int8_peak"].as_f64().unwrap();
        assert!((fraction - gmacs / peak).abs() <= 1e-9 * fraction && fraction < 1.0, "{doc}");
    } else {
        assert!(doc.get("batch_fraction_of_int8_peak").is_none(), "{doc}");
    }
    let (ok, _, err) = medregion(&["bench", "llm", "--model", pkg.to_str().unwrap(), "--steps", "0"]);
    assert!(!ok && err.contains("--steps"), "{err}");
    let (ok, _, err) = medregion(&["bench", "llm", "--model", pkg.to_str().unwrap(), "--rounds", "0"]);
    assert!(!ok && err.contains("--rounds"), "{err}");
}
