//! The GPU decoder (`medregion::backend::cuda::decoder`) against the CPU decoder
//! (`medregion::llm::Session`) on the same synthetic model package.
//!
//! Model: the `tiny` synthetic preset (GQA 4 query / 2 kv heads, llama3 RoPE scaling, untied
//! head, 2 layers, vocabulary 264, hidden 64, SwiGLU 128) with `head_dim` raised from 16 to 64
//! (the KV attention kernels take heads of 64 or 128), written with random weights in each
//! stored type; plus a tied-head variant.
//!
//! | what | compared how | tolerance |
//! |---|---|---|
//! | logits of the prompt's last position (prefill) | `max |gpu − cpu| / max |cpu|` | f32, f16, bf16 weights: ≤ 1e-4; q8_0, q4_0, q4_1: ≤ 2e-2 |
//! | logits of 20 decode steps fed the same ids | as above, per step | as above |
//! | argmax of each of those logits rows | equal where the CPU's top-two margin exceeds 2 × the tolerance (otherwise counted and printed, not asserted) | exact |
//! | `generate_greedy` vs `Session::generate` (greedy, same stop ids, 20 tokens) | token ids | identical up to the first step whose CPU top-two margin is within 2 × the tolerance (all of them when there is none) |
//! | prefill after `reset` | logits | bit-identical (deterministic kernels) |
//! | errors (out-of-vocabulary ids, context overflow, empty input, bad options, head width) | `Err` naming the argument, session unchanged | exact |
//!
//! Why a tolerance and not bits: every matmul, the embedding, RoPE, SwiGLU and the residual
//! adds are bit-identical to the CPU (their own tests), but attention over the KV cache is not
//! (a tiled / split-K online softmax with the device `exp`; ~1e-6 relative per output), and the
//! layers after it propagate the difference: ~1e-6 of the logit range is expected for the dense
//! types, 1e-4 leaves a wide margin. The block-quantized types quantize every matmul input to
//! int8 per block of 32; an input moved by an ulp by the attention difference now and then
//! rounds to the neighbouring int8 value (a full quantization step, ~1/127 of the block's
//! max), which moves the logits by an estimated ~1e-3 of their range (the whole quantization
//! error of these types on this model is ~5e-2, tests/llm_parity.rs). Hence 2e-2 for them — an
//! estimate, not a measurement: the tests print the worst error seen; tighten after the first
//! GPU run. A structural bug (layer order, a norm, RoPE, GQA mapping, the head) moves the logits
//! by O(1) of their range and fails both bounds.
//!
//! Checked on the CPU alone (a scratch run, not part of this file): the head_dim-64 packages
//! build and load for every type; the CPU's top-two margins over the 20 greedy steps are at
//! least 1.6e-2 of max |logit| (untied f32; tied ≥ 0.25), so the dense comparisons assert every
//! argmax and every generated token; for the quantized types the margins (down to 8e-4 for
//! untied q4_1) cut the token comparison short. The tied variant greedily repeats one token.
//!
//! Every test needs a device (`scripts/gpu-check.sh` runs them with `--include-ignored`).

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::{gpu, XorShiftStar as Rng};
use std::ops::ControlFlow;
use std::path::PathBuf;

use medregion::backend::cuda::decoder::{DeviceDecoder, DeviceSession, DeviceSessionOptions, MAX_BATCH};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy};
use medregion::llm::{argmax, GenerateOptions, Input, SamplingParams, Session, SessionOptions};
use medregion::model::config::ModelConfig;
use medregion::model::synthetic::{bytes_tokenizer, Preset, SyntheticSource};
use medregion::tensor::WeightType;
use medregion::Error;

/// `max |gpu − cpu| ≤ tol · max |cpu|` per logits row, dense weight types.
const TOL_DENSE: f64 = 1e-4;
/// The same for the block-quantized types (module doc).
const TOL_QUANT: f64 = 2e-2;

fn tol(t: WeightType) -> f64 {
    match t {
        WeightType::F32 | WeightType::F16 | WeightType::Bf16 => TOL_DENSE,
        _ => TOL_QUANT,
    }
}
/// Prompt length (with chunks of 8: two full chunks and a tail of 5).
const PROMPT: usize = 21;
/// Decode steps compared.
const STEPS: usize = 20;
/// The CPU and GPU context.
const CONTEXT: usize = 128;

/// The tiny preset with heads of 64 (the attention kernels' smallest width).
fn config(tied: bool) -> ModelConfig {
    let mut c = Preset::Tiny.config();
    c.decoder.head_dim = 64;
    c.decoder.tie_word_embeddings = tied;
    c
}

/// Writes a synthetic package of `cfg` stored as `t` (`tag` unique per test: the tests run in
/// parallel and must not rewrite a package another one has loaded).
fn package(cfg: ModelConfig, t: WeightType, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medregion-cuda-decoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{tag}-{t:?}.mrpk"));
    PackageBuilder::new(cfg, bytes_tokenizer())
        .policy(QuantPolicy::all(t))
        .write(&path, &mut SyntheticSource::new(7))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// `<|begin_of_text|>` then random byte tokens.
fn prompt(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    std::iter::once(256).chain((1..n).map(|_| (rng.u64() % 256) as u32)).collect()
}

/// `max |a − b| / max |b|` (b the CPU's row).
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len(), "logits lengths");
    assert!(gpu.iter().all(|x| x.is_finite()), "GPU logits not finite");
    let scale = cpu.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())).max(f64::MIN_POSITIVE);
    gpu.iter().zip(cpu).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// The CPU's top-two margin relative to `max |logit|`.
fn top_margin(cpu: &[f32]) -> f64 {
    let best = argmax(cpu) as usize;
    let second =
        cpu.iter().enumerate().filter(|&(i, _)| i != best).fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    let scale = cpu
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, &x| m.max((x as f64).abs()))
        .max(f64::MIN_POSITIVE);
    (cpu[best] as f64 - second as f64) / scale
}

fn cpu_session<'m>(model: &'m Model<'_>) -> Session<'m> {
    Session::new(model, &SessionOptions { context: CONTEXT, threads: 1, ..Default::default() }).unwrap()
}

fn gpu_options(chunk: usize) -> DeviceSessionOptions {
    DeviceSessionOptions { context: CONTEXT, max_batch: 1, chunk }
}

/// Prefill + `STEPS` decode steps fed the CPU's greedy ids: logits within `tol`, argmax equal
/// where the margin allows. Returns the worst error seen.
fn compare_steps(model: &Model<'_>, dec: &DeviceDecoder, chunk: usize, tol: f64, what: &str) -> f64 {
    let mut cpu = cpu_session(model);
    let mut dev = DeviceSession::new(dec, &gpu_options(chunk)).unwrap();
    let ids = prompt(11, PROMPT);
    let mut c = cpu.prefill(Input::Tokens(&ids)).unwrap().to_vec();
    let mut g = dev.prefill(&ids).unwrap();
    let mut worst = rel_err(&g, &c);
    assert!(worst <= tol, "{what}: prefill logits error {worst:e} > {tol:e}");
    assert_eq!(dev.len(), PROMPT);
    let mut close_calls = 0;
    for step in 0..STEPS {
        let id = argmax(&c);
        if top_margin(&c) > 2.0 * tol {
            assert_eq!(argmax(&g), id, "{what}: argmax differs before step {step}");
        } else {
            close_calls += 1;
        }
        c = cpu.step(id).unwrap().to_vec();
        g = dev.decode_step(id).unwrap();
        let e = rel_err(&g, &c);
        assert!(e <= tol, "{what}: step {step} logits error {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    assert_eq!(dev.len(), PROMPT + STEPS);
    eprintln!(
        "{what}: worst logits error {worst:e} (bound {tol:e}; {close_calls} of {STEPS} steps with a top-two \
         margin too close to assert the argmax)"
    );
    worst
}

/// Greedy generation on both sides: the same ids up to the first close call (a CPU top-two
/// margin within `2 · tol`), all of them when there is none.
fn compare_generate(
    model: &Model<'_>,
    dec: &DeviceDecoder,
    chunk: usize,
    stop: &[u32],
    tol: f64,
    what: &str,
) {
    let mut cpu = cpu_session(model);
    let mut dev = DeviceSession::new(dec, &gpu_options(chunk)).unwrap();
    let ids = prompt(23, PROMPT);
    let opts = GenerateOptions {
        max_new_tokens: STEPS,
        sampling: SamplingParams::greedy(),
        stop_ids: Some(stop.to_vec()),
        keep_logits: true,
        ..Default::default()
    };
    let want = cpu.generate(Input::Tokens(&ids), &opts, None, &mut |_, _| ControlFlow::Continue(())).unwrap();
    let got = dev.generate_greedy(&ids, STEPS, stop).unwrap();
    // Row PROMPT − 1 + j of the kept logits chose token j, with the input-only ids banned.
    let d = &model.config().decoder;
    let v = d.vocab_size;
    let banned = [d.image_token_id, d.mask_token_id, d.pos_token_id];
    let margin = |j: usize| {
        let mut row = want.logits[(PROMPT - 1 + j) * v..(PROMPT + j) * v].to_vec();
        for &id in &banned {
            row[id as usize] = f32::NEG_INFINITY;
        }
        top_margin(&row)
    };
    let rows = want.logits.len() / v;
    let close = (0..rows.saturating_sub(PROMPT - 1)).find(|&j| margin(j) <= 2.0 * tol);
    match close {
        None => {
            assert_eq!(got, want.tokens, "{what}: greedy tokens (stop {stop:?})");
            assert_eq!(dev.len(), cpu.len(), "{what}: positions held after generation");
        }
        Some(j) => {
            let k = j.min(got.len()).min(want.tokens.len());
            assert_eq!(got[..k], want.tokens[..k], "{what}: greedy tokens before the close call at {j}");
            eprintln!("{what}: greedy tokens compared up to step {j} (a close call there)");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn logits_and_greedy_tokens_match_the_cpu_for_every_weight_type() {
    let gpu = gpu();
    for t in WeightType::ALL {
        let path = package(config(false), t, "untied");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
        // Chunks of 8 (full chunks, then a tail of 5) and one chunk for the whole prompt.
        for chunk in [8, 64] {
            compare_steps(&model, &dec, chunk, tol(t), &format!("{t:?} untied, chunk {chunk}"));
        }
        let eos = model.config().decoder.eos_token_ids.clone();
        compare_generate(&model, &dec, 8, &[], tol(t), &format!("{t:?} untied"));
        compare_generate(&model, &dec, 8, &eos, tol(t), &format!("{t:?} untied, eos stops"));
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn tied_head_matches_the_cpu() {
    let gpu = gpu();
    for t in [WeightType::F32, WeightType::Q8_0] {
        let path = package(config(true), t, "tied");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
        compare_steps(&model, &dec, 8, tol(t), &format!("{t:?} tied"));
        compare_generate(&model, &dec, 8, &[], tol(t), &format!("{t:?} tied"));
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn one_token_chunks_and_a_cold_decode_step_match_the_cpu() {
    let gpu = gpu();
    let path = package(config(false), WeightType::F32, "untied-chunk1");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
    // chunk 1: the prompt goes through the decode attention kernel row by row.
    compare_steps(&model, &dec, 1, TOL_DENSE, "F32 untied, chunk 1");
    // A decode step on an empty session is position 0, as on the CPU.
    let mut cpu = cpu_session(&model);
    let mut dev = DeviceSession::new(&dec, &gpu_options(8)).unwrap();
    let c = cpu.step(256).unwrap().to_vec();
    let g = dev.decode_step(256).unwrap();
    let e = rel_err(&g, &c);
    assert!(e <= TOL_DENSE, "cold decode step error {e:e}");
    // reset forgets everything: the same prompt gives the same logits again.
    let ids = prompt(5, 9);
    let first = dev.prefill(&ids).unwrap();
    dev.reset();
    assert!(dev.is_empty());
    let again = dev.prefill(&ids).unwrap();
    assert_eq!(first, again, "prefill after reset is deterministic");
}

fn assert_invalid<T: std::fmt::Debug>(r: medregion::Result<T>, name: &str) {
    match r {
        Err(Error::InvalidArgument { name: n, .. }) if n == name => {}
        other => panic!("expected InvalidArgument `{name}`, got {other:?}"),
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn bad_input_is_an_error_and_leaves_the_session_unchanged() {
    let gpu = gpu();
    let path = package(config(false), WeightType::F32, "untied-errors");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
    let v = model.config().decoder.vocab_size as u32;

    // Options.
    let bad = [
        DeviceSessionOptions { context: dec.max_context() + 1, ..gpu_options(8) },
        DeviceSessionOptions { max_batch: 0, ..gpu_options(8) },
        DeviceSessionOptions { max_batch: MAX_BATCH + 1, ..gpu_options(8) },
        DeviceSessionOptions { chunk: 0, ..gpu_options(8) },
    ];
    for (o, name) in bad.iter().zip(["context", "max_batch", "max_batch", "chunk"]) {
        assert_invalid(DeviceSession::new(&dec, o), name);
    }

    let mut s =
        DeviceSession::new(&dec, &DeviceSessionOptions { context: 16, max_batch: 1, chunk: 8 }).unwrap();
    // Out-of-vocabulary ids.
    assert_invalid(s.prefill(&[256, 1, v]), "token id");
    assert_invalid(s.decode_step(v), "token id");
    assert_invalid(s.decode_step(u32::MAX), "token id");
    assert_invalid(s.generate_greedy(&[256, v + 7], 4, &[]), "token id");
    assert_invalid(s.generate_greedy(&[256], 4, &[v]), "stop");
    assert_invalid(s.generate_greedy(&[256], 0, &[]), "max_new");
    assert_invalid(s.prefill(&[]), "input");
    assert!(s.is_empty(), "a rejected input changes nothing");

    // Context overflow: 17 tokens do not fit 16 positions; 16 do, then no step does.
    assert_invalid(s.prefill(&prompt(3, 17)), "input");
    assert!(s.is_empty());
    let logits = s.prefill(&prompt(3, 16)).unwrap();
    assert_eq!(logits.len(), v as usize);
    assert_eq!(s.len(), 16);
    assert_invalid(s.decode_step(1), "input");
    assert_invalid(s.prefill(&[1]), "input");
    assert_eq!(s.len(), 16, "a rejected step changes nothing");

    // Generation stops at a full context without an error, like the CPU's ContextFull.
    s.reset();
    let out = s.generate_greedy(&prompt(4, 12), 100, &[]).unwrap();
    assert_eq!(out.len(), 16 - 12 + 1, "generation until the context is full");
    assert_eq!(s.len(), 16);
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn unsupported_head_width_is_an_error() {
    let gpu = gpu();
    // The tiny preset as is: heads of 16.
    let path = package(Preset::Tiny.config(), WeightType::F32, "hd16");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    match DeviceDecoder::upload(&gpu, &model) {
        Err(Error::Unsupported(_)) => {}
        other => panic!("expected Unsupported, got {:?}", other.map(|_| ())),
    }
}
