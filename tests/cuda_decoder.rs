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
//! | `generate` with temperature/top-p, with and without a repetition penalty (the device penalty and sampler, the host RNG's uniform numbers) | token ids, same seed | identical |
//! | `generate` with `keep_logits`, `prefill_all_logits` | every kept row against the CPU's; the last row against `prefill` | 1e-4; bit-identical |
//! | prefill after `reset` | logits | bit-identical (deterministic kernels) |
//! | errors (out-of-vocabulary ids, context overflow, empty input, bad options, head width) | `Err` naming the argument, session unchanged | exact |
//! | GEMM prefill (cuBLAS; chunks of 32 rows, `gemm_rows` 16) then 5 decode steps, vs the CPU on the exact weights (dequantized to F32 for the block types) | `max |gpu − cpu| / max |cpu|` | f32 weights 1e-4; f16 weights, and block types as f16: 2e-2; bf16 weights, and block types as bf16: 1e-1 |
//! | `gemm_status` | on with cuBLAS and `chunk ≥ gemm_rows`, off otherwise | exact |
//! | GEMM prefill with `keep_prefill_copies` (f16, then bf16) vs dequantizing per chunk | logits; the copies' bytes | bit-identical; 2 bytes per layer weight |
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

use medregion::backend::cuda::blas::Half;
use medregion::backend::cuda::decoder::{DeviceDecoder, DeviceSession, DeviceSessionOptions, MAX_BATCH};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy, SourceTensor, WeightSource};
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

/// GEMV prefill (`gemm_rows: 0`): every weight product bit-identical to the CPU's, which the
/// tolerances above assume. The GEMM prefill has tests of its own below.
fn gpu_options(chunk: usize) -> DeviceSessionOptions {
    DeviceSessionOptions { context: CONTEXT, max_batch: 1, chunk, gemm_rows: 0, ..Default::default() }
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

    let mut s = DeviceSession::new(&dec, &DeviceSessionOptions { context: 16, ..gpu_options(8) }).unwrap();
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

/// Greedy options with no stop id, `keep` the CPU's logits for the margins.
fn greedy(max_new: usize, keep: bool) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: max_new,
        sampling: SamplingParams::greedy(),
        stop_ids: Some(Vec::new()),
        keep_logits: keep,
        ..Default::default()
    }
}

/// The CPU's banned-id top-two margin of the logits row that chose token `j` of a sequence
/// whose own prompt part had `own` rows (`Generation::logits` layout; an empty suffix's first
/// token came from the prefix's last row, which is the first kept row then).
fn margin_at(logits: &[f32], model: &Model<'_>, own: usize, j: usize) -> f64 {
    let d = &model.config().decoder;
    let v = d.vocab_size;
    let r = own.max(1) - 1 + j;
    let mut row = logits[r * v..(r + 1) * v].to_vec();
    for id in [d.image_token_id, d.mask_token_id, d.pos_token_id] {
        row[id as usize] = f32::NEG_INFINITY;
    }
    top_margin(&row)
}

/// The same ids up to the first close call of the CPU's margins (all when there is none).
fn assert_same_tokens(got: &[u32], want: &[u32], margins: impl Fn(usize) -> f64, tol: f64, what: &str) {
    match (0..want.len()).find(|&j| margins(j) <= 2.0 * tol) {
        None => assert_eq!(got, want, "{what}: tokens"),
        Some(j) => {
            let k = j.min(got.len());
            assert_eq!(got[..k], want[..k], "{what}: tokens before the close call at {j}");
            eprintln!("{what}: tokens compared up to step {j} (a close call there)");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn batched_generation_with_a_shared_prefix_matches_the_cpu() {
    let gpu = gpu();
    for t in [WeightType::F32, WeightType::Q8_0, WeightType::Q4_0] {
        let path = package(config(false), t, "batch");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
        let mut cpu =
            Session::new(&model, &SessionOptions { context: CONTEXT, threads: 1, ..Default::default() })
                .unwrap();
        let d = model.config().decoder.hidden_size;
        // Six suffixes: ids of different lengths (one of 1, one empty, one longer than a chunk),
        // and one given as embeddings (the report's path).
        let prefix = prompt(31, 12);
        let ids: Vec<Vec<u32>> = [5usize, 1, 11, 0, 3, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| prompt(40 + i as u64, n + 1)[1..].to_vec())
            .collect();
        let mut emb = vec![0.0f32; ids[2].len() * d];
        cpu.embed(&ids[2], &mut emb).unwrap();
        let suffixes: Vec<Input<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| if i == 2 { Input::Embeddings(&emb) } else { Input::Tokens(s) })
            .collect();
        let mut none = |_: usize, _: u32, _: &str| ControlFlow::Continue(());
        let want = cpu
            .generate_batch_inputs(Input::Tokens(&prefix), &suffixes, &greedy(16, true), None, &mut none)
            .unwrap();
        for chunk in [8, 64] {
            let mut dev =
                DeviceSession::new(&dec, &DeviceSessionOptions { max_batch: 6, ..gpu_options(chunk) })
                    .unwrap();
            let mut streamed = vec![0usize; 6];
            let mut count = |i: usize, _: u32, _: &str| {
                streamed[i] += 1;
                ControlFlow::Continue(())
            };
            let got = dev
                .generate_batch_inputs(
                    Input::Tokens(&prefix),
                    &suffixes,
                    &greedy(16, false),
                    None,
                    &mut count,
                )
                .unwrap();
            assert_eq!(got.len(), 6);
            assert!(dev.is_empty(), "a batch leaves the session empty");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let what = format!("{t:?} chunk {chunk} sequence {i}");
                assert_eq!(g.prompt_tokens, w.prompt_tokens, "{what}: prompt tokens");
                assert_eq!(streamed[i], g.tokens.len(), "{what}: one callback per token");
                let own = suffixes[i].rows(d);
                assert_same_tokens(
                    &g.tokens,
                    &w.tokens,
                    |j| margin_at(&w.logits, &model, own, j),
                    tol(t),
                    &what,
                );
            }
            // The same batch again gives the same bits (deterministic, nothing left over).
            let again = dev
                .generate_batch_inputs(Input::Tokens(&prefix), &suffixes, &greedy(16, false), None, &mut none)
                .unwrap();
            assert_eq!(
                again.iter().map(|g| &g.tokens).collect::<Vec<_>>(),
                got.iter().map(|g| &g.tokens).collect::<Vec<_>>()
            );
        }
        // Stop ids end sequences at different steps; the others go on (the stopped rows stay in
        // the batch, frozen).
        let eos = Some(vec![want[0].tokens[3], want[4].tokens[1]]);
        let opts = GenerateOptions { stop_ids: eos.clone(), ..greedy(16, false) };
        let cpu_stop = cpu
            .generate_batch_inputs(
                Input::Tokens(&prefix),
                &suffixes,
                &GenerateOptions { keep_logits: true, ..opts.clone() },
                None,
                &mut none,
            )
            .unwrap();
        let mut dev =
            DeviceSession::new(&dec, &DeviceSessionOptions { max_batch: 6, ..gpu_options(8) }).unwrap();
        let got =
            dev.generate_batch_inputs(Input::Tokens(&prefix), &suffixes, &opts, None, &mut none).unwrap();
        for (i, (g, w)) in got.iter().zip(&cpu_stop).enumerate() {
            let what = format!("{t:?} stop ids, sequence {i}");
            let own = suffixes[i].rows(d);
            assert_same_tokens(&g.tokens, &w.tokens, |j| margin_at(&w.logits, &model, own, j), tol(t), &what);
            if g.tokens == w.tokens {
                assert_eq!(g.stop, w.stop, "{what}: stop reason");
            }
        }
        if t == WeightType::F32 {
            // Sampling with a penalty in a batch: seeds seed + i, each sequence's history and
            // RNG on the host, the penalty (its mask on the row the sequence reads: row 0 for a
            // suffix's first pick, its own row after) and the draw on the device.
            let sampling =
                SamplingParams { temperature: 0.7, top_k: 0, top_p: 0.95, repetition_penalty: 1.3, seed: 3 };
            let opts = GenerateOptions { sampling, ..greedy(12, false) };
            let want =
                cpu.generate_batch_inputs(Input::Tokens(&prefix), &suffixes, &opts, None, &mut none).unwrap();
            let got =
                dev.generate_batch_inputs(Input::Tokens(&prefix), &suffixes, &opts, None, &mut none).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.tokens, w.tokens, "sampled batch with a penalty, sequence {i}");
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn generate_from_embeddings_and_with_sampling_matches_the_cpu() {
    let gpu = gpu();
    let path = package(config(false), WeightType::F32, "embeddings");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
    let d = model.config().decoder.hidden_size;
    let ids = prompt(57, PROMPT);
    let mut cpu = cpu_session(&model);
    let mut emb = vec![0.0f32; ids.len() * d];
    cpu.embed(&ids, &mut emb).unwrap();
    let mut none = |_: u32, _: &str| ControlFlow::Continue(());
    // Greedy from embeddings (device argmax).
    let want = cpu.generate(Input::Embeddings(&emb), &greedy(STEPS, true), None, &mut none).unwrap();
    let mut dev = DeviceSession::new(&dec, &gpu_options(8)).unwrap();
    let got = dev.generate(Input::Embeddings(&emb), &greedy(STEPS, false), None, &mut none).unwrap();
    assert_eq!(got.prompt_tokens, PROMPT);
    assert_eq!(dev.len(), PROMPT + got.tokens.len() - 1, "the last token is not fed");
    assert_same_tokens(
        &got.tokens,
        &want.tokens,
        |j| margin_at(&want.logits, &model, PROMPT, j),
        TOL_DENSE,
        "embeddings",
    );
    // Temperature, top-p and a repetition penalty: the device penalty and sampler,
    // with the same seed. The logits differ by ~1e-6 relative, so a draw can only differ when
    // its uniform number falls that close to a cumulative-probability boundary.
    let sampling =
        SamplingParams { temperature: 0.8, top_k: 0, top_p: 0.9, repetition_penalty: 1.1, seed: 5 };
    let opts = GenerateOptions { sampling, ..greedy(STEPS, false) };
    cpu.reset();
    let want = cpu.generate(Input::Tokens(&ids), &opts, None, &mut none).unwrap();
    dev.reset();
    let got = dev.generate(Input::Tokens(&ids), &opts, None, &mut none).unwrap();
    assert_eq!(got.tokens, want.tokens, "sampled tokens (seed 5)");
    // Without a penalty the device sampler draws, with the uniform numbers of the host RNG:
    // the same tokens but where a number falls within ~1e-6 of a boundary.
    let sampling =
        SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, repetition_penalty: 1.0, seed: 9 };
    let opts = GenerateOptions { sampling, ..greedy(STEPS, false) };
    cpu.reset();
    let want = cpu.generate(Input::Tokens(&ids), &opts, None, &mut none).unwrap();
    dev.reset();
    let got = dev.generate(Input::Tokens(&ids), &opts, None, &mut none).unwrap();
    assert_eq!(got.tokens, want.tokens, "device-sampled tokens (seed 9)");
    // Keeping the logits: every prompt position's and every step's, as the CPU keeps them
    // (prefill_all_logits, then the host sampler), within the dense tolerance row by row.
    let keep = GenerateOptions { keep_logits: true, ..greedy(8, false) };
    cpu.reset();
    let want = cpu.generate(Input::Tokens(&ids), &keep, None, &mut none).unwrap();
    dev.reset();
    let got = dev.generate(Input::Tokens(&ids), &keep, None, &mut none).unwrap();
    let v = model.config().decoder.vocab_size;
    assert_eq!(got.logits.len(), want.logits.len(), "kept rows");
    for (r, (g, c)) in got.logits.chunks_exact(v).zip(want.logits.chunks_exact(v)).enumerate() {
        let e = rel_err(g, c);
        assert!(e <= TOL_DENSE, "kept logits row {r}: error {e:e}");
    }
    assert_same_tokens(
        &got.tokens,
        &want.tokens,
        |j| margin_at(&want.logits, &model, PROMPT, j),
        TOL_DENSE,
        "kept",
    );
    // prefill_all_logits alone: its last row is what prefill returns.
    dev.reset();
    let mut all = vec![0.0f32; PROMPT * v];
    dev.prefill_all_logits(Input::Tokens(&ids), &mut all).unwrap();
    assert_eq!(dev.len(), PROMPT);
    dev.reset();
    assert_eq!(dev.prefill(&ids).unwrap(), all[(PROMPT - 1) * v..], "the last kept row is prefill's");
    assert!(dev.prefill_all_logits(Input::Tokens(&ids), &mut all[..v]).is_err(), "a short output buffer");
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn decode_steps_replayed_from_cuda_graphs_equal_direct_launches() {
    let gpu = gpu();
    for t in [WeightType::F32, WeightType::Q4_0] {
        let path = package(config(false), t, "graphs");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
        let ids = prompt(71, 9);
        let prefix = prompt(72, 10);
        let suffixes: Vec<Vec<u32>> = (0..6).map(|i| prompt(80 + i, 3 + i as usize)[1..].to_vec()).collect();
        let inputs: Vec<Input<'_>> = suffixes.iter().map(|s| Input::Tokens(s)).collect();
        let mut none = |_: usize, _: u32, _: &str| ControlFlow::Continue(());
        let mut run = |graphs: bool| {
            let opts = DeviceSessionOptions { max_batch: 6, graphs, ..gpu_options(8) };
            let mut dev = DeviceSession::new(&dec, &opts).unwrap();
            let mut logits = dev.prefill(&ids).unwrap();
            for step in 0..12 {
                logits.extend(dev.decode_step(ids[step % ids.len()]).unwrap());
            }
            let batch = dev
                .generate_batch_inputs(Input::Tokens(&prefix), &inputs, &greedy(12, false), None, &mut none)
                .unwrap();
            let status = dev.graph_status();
            (
                logits,
                batch.into_iter().map(|g| g.tokens).collect::<Vec<_>>(),
                (status.0, status.1, status.2.map(str::to_string)),
            )
        };
        let (l0, b0, s0) = run(false);
        let (l1, b1, s1) = run(true);
        assert_eq!(s0.1, 0, "{t:?}: no graph replays with graphs off");
        assert!(s1.0 && s1.2.is_none(), "{t:?}: the capture failed: {:?}", s1.2);
        // 12 single steps and 11 batched steps (the first token of each sequence comes from its
        // suffix prefill).
        assert!(s1.1 >= 12 + 11, "{t:?}: {} steps replayed from graphs", s1.1);
        assert_eq!(l1, l0, "{t:?}: logits with and without graphs (the same kernels)");
        assert_eq!(b1, b0, "{t:?}: batched tokens with and without graphs");
    }
}

/// GEMM-prefill bounds against the CPU on the exact weights: the 16-bit rounding of the
/// products' inputs (and of the dequantized weights) is the error. An estimate, like
/// [`TOL_QUANT`]: f16 rounds each input by ≤ 2⁻¹¹ (rms ~3e-4), ~10× finer than the int8 block
/// quantization whose whole effect on this model is ~5e-2 (tests/llm_parity.rs), so ~5e-3 is
/// expected and 2e-2 bounds it; bf16 rounds by ≤ 2⁻⁸, as coarse as int8, hence the CPU's
/// int8 bound, 1e-1. f32 weights stay f32 (cuBLAS's summation order only). A structural bug
/// (a transposed or misplaced product) moves the logits by O(1) of their range.
fn gemm_tol(t: WeightType, half: Half) -> f64 {
    match (t, half) {
        (WeightType::F32, _) => TOL_DENSE,
        (WeightType::F16, _) => 2e-2,
        (WeightType::Bf16, _) => 1e-1,
        (_, Half::F16) => 2e-2,
        (_, Half::Bf16) => 1e-1,
    }
}

/// Every `llm.*` tensor of a model as f32 (dequantized), everything else synthetic.
struct DequantizedSource {
    llm: std::collections::HashMap<String, Vec<f32>>,
    rest: SyntheticSource,
}

impl WeightSource for DequantizedSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> medregion::Result<SourceTensor> {
        match self.llm.get(name) {
            Some(v) => Ok(SourceTensor::F32(v.clone())),
            None if name.starts_with("llm.") => Err(Error::NotFound(name.to_string())),
            None => self.rest.tensor(name, shape),
        }
    }
}

/// `model`'s decoder weights dequantized, as an F32 package (`tag` unique per test).
fn dequantized(model: &Model<'_>, tag: &str) -> PathBuf {
    let llm = model
        .weights()
        .filter(|w| w.name().starts_with("llm."))
        .map(|w| (w.name().to_string(), w.to_f32().unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("medregion-cuda-decoder-{}", std::process::id()));
    let path = dir.join(format!("{tag}-dequantized.mrpk"));
    PackageBuilder::new(model.config().clone(), bytes_tokenizer())
        .policy(QuantPolicy::all(WeightType::F32))
        .write(&path, &mut DequantizedSource { llm, rest: SyntheticSource::new(7) })
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Prompt of the GEMM tests: chunks of 32, 32 and 16 rows, all at least `gemm_rows`.
const GEMM_PROMPT: usize = 80;

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn gemm_prefill_matches_the_cpu_on_the_exact_weights() {
    let gpu = gpu();
    for t in WeightType::ALL {
        let path = package(config(false), t, "gemm");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let exact_path =
            if t.quant().is_some() { Some(dequantized(&model, &format!("gemm-{t:?}"))) } else { None };
        let exact = exact_path.as_ref().map(|p| Model::load(p, &LoadOptions::default()).unwrap());
        let reference = exact.as_ref().unwrap_or(&model);
        let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
        let ids = prompt(31, GEMM_PROMPT);
        let mut cpu = cpu_session(reference);
        let c = cpu.prefill(Input::Tokens(&ids)).unwrap().to_vec();
        let halves: &[Half] = if t.quant().is_some() { &[Half::F16, Half::Bf16] } else { &[Half::F16] };
        for &half in halves {
            let tol = gemm_tol(t, half);
            let what = format!("{t:?} GEMM prefill ({half:?})");
            let opts = DeviceSessionOptions { chunk: 32, gemm_rows: 16, gemm_type: half, ..gpu_options(32) };
            let mut dev = DeviceSession::new(&dec, &opts).unwrap();
            assert_eq!(dev.gemm_status(), (Some(16), None), "{what}: GEMM prefill on");
            let g = dev.prefill(&ids).unwrap();
            let mut worst = rel_err(&g, &c);
            assert!(worst <= tol, "{what}: prefill logits error {worst:e} > {tol:e}");
            // Decode steps (GEMV) over the keys and values the GEMM prefill stored.
            let mut cpu_steps = cpu_session(reference);
            cpu_steps.prefill(Input::Tokens(&ids)).unwrap();
            let mut row = c.clone();
            for step in 0..5 {
                let id = argmax(&row);
                row = cpu_steps.step(id).unwrap().to_vec();
                let g = dev.decode_step(id).unwrap();
                let e = rel_err(&g, &row);
                assert!(e <= tol, "{what}: decode step {step} after it, error {e:e} > {tol:e}");
                worst = worst.max(e);
            }
            // The GEMV prefill of the same package, for scale (bit-identical products on the
            // stored weights: the int8 activations of the block types are its error).
            let mut gemv = DeviceSession::new(&dec, &gpu_options(32)).unwrap();
            let e_gemv = rel_err(&gemv.prefill(&ids).unwrap(), &c);
            eprintln!(
                "{what}: worst error vs the exact weights {worst:e} (bound {tol:e}); GEMV prefill {e_gemv:e}"
            );
        }
        drop(exact);
        if let Some(p) = exact_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn gemm_prefill_is_on_only_where_a_chunk_can_use_it() {
    let gpu = gpu();
    let path = package(config(false), WeightType::Q8_0, "gemm-status");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let dec = DeviceDecoder::upload(&gpu, &model).unwrap();
    let status = |o: DeviceSessionOptions| DeviceSession::new(&dec, &o).unwrap().gemm_status().0;
    assert_eq!(status(DeviceSessionOptions::default()), Some(64), "the default");
    assert_eq!(status(DeviceSessionOptions { gemm_rows: 0, ..Default::default() }), None, "off");
    assert_eq!(
        status(DeviceSessionOptions { chunk: 32, gemm_rows: 64, ..Default::default() }),
        None,
        "chunks too short"
    );
    // Chunks shorter than gemm_rows take the GEMV kernels: bit-identical to gemm_rows 0.
    let ids = prompt(9, 40);
    let opts = DeviceSessionOptions { chunk: 32, gemm_rows: 20, ..gpu_options(32) };
    let mut with = DeviceSession::new(&dec, &opts).unwrap();
    let mut without = DeviceSession::new(&dec, &gpu_options(32)).unwrap();
    // 40 rows = a GEMM chunk of 32 + a GEMV tail of 8: the tail's own products are the GEMV's,
    // but it attends to keys the GEMM stored, so only a one-chunk prompt below 20 rows is exact.
    let short = prompt(9, 12);
    assert_eq!(with.prefill(&short).unwrap(), without.prefill(&short).unwrap(), "a 12-row chunk is GEMV");
    with.reset();
    without.reset();
    let e = rel_err(&with.prefill(&ids).unwrap(), &without.prefill(&ids).unwrap());
    assert!(
        e > 0.0 && e <= gemm_tol(WeightType::Q8_0, Half::F16) * 2.0,
        "40 rows: GEMM chunk then GEMV tail, {e:e}"
    );
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn kept_16_bit_copies_give_the_dequantizing_prefills_logits() {
    let gpu = gpu();
    let path = package(config(false), WeightType::Q4_0, "gemm-copies");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let mut dec = DeviceDecoder::upload(&gpu, &model).unwrap();
    let ids = prompt(41, GEMM_PROMPT);
    let run = |dec: &DeviceDecoder, half: Half| {
        let opts = DeviceSessionOptions { chunk: 32, gemm_rows: 16, gemm_type: half, ..gpu_options(32) };
        DeviceSession::new(dec, &opts).unwrap().prefill(&ids).unwrap()
    };
    let (f16_before, bf16_before) = (run(&dec, Half::F16), run(&dec, Half::Bf16));
    let c = &model.config().decoder;
    let (d, f) = (c.hidden_size, c.intermediate_size);
    let per_layer = 2 * d * c.q_dim() + 2 * d * c.kv_dim() + 3 * d * f;
    for (half, want) in [(Half::F16, &f16_before), (Half::Bf16, &bf16_before)] {
        let bytes = dec.keep_prefill_copies(half).unwrap();
        assert_eq!(bytes, 2 * c.n_layers * per_layer, "{half:?}: 2 bytes per layer weight");
        // The copies hold what each chunk dequantized before: the same GEMMs, the same bits
        // (whatever the session's gemm_type: the copy's type wins).
        assert_eq!(&run(&dec, Half::F16), want, "{half:?} copies, an f16 session");
        assert_eq!(&run(&dec, Half::Bf16), want, "{half:?} copies, a bf16 session");
    }
}
