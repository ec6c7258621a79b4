//! The decoder against transformers' `LlamaForCausalLM` (fixture from
//! `scripts/llm/make_tiny_reference.py`: a random tiny Llama with GQA, llama3 RoPE scaling that
//! matters at these positions, and an untied head; reference logits computed in float64).
//!
//! The checkpoint goes through the HF importer (`io::hf::load_llama`) into a package (the
//! synthetic tiny preset's vision parts around it), then through [`Session`].
//!
//! Metric everywhere: `max |a − b| / max |ref|` over all positions and the whole vocabulary.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use medregion::io::hf::{load_llama, HfLlamaConfig};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy, SourceTensor, WeightSource};
use medregion::llm::{
    argmax, Activations, GenerateOptions, Input, SamplingParams, Session, SessionOptions, StopReason,
};
use medregion::model::config::{ModelConfig, RopeScaling};
use medregion::model::synthetic::{bytes_tokenizer, Preset, SyntheticSource};
use medregion::tensor::WeightType;
use medregion::tokenizer::Tokenizer;
use medregion::Error;
use safetensors::{Dtype, SafeTensors};

/// F32 package vs transformers in float64 (the bound).
const TOL_F32: f64 = 1e-4;
/// Each stored type vs the same weights dequantized and run as F32: `(type, (max-abs metric,
/// relative L2 over all logits, least share of positions whose top-1 id agrees))`.
/// F16/BF16 convert exactly to f32 in the kernels (measured: identical, 0); the block-quantized
/// types quantize the activations to int8 per block of 32 before every matmul (~0.4 % per
/// matmul, `ops::tolerance`), which compounds over 3 layers of this deliberately high-gain random
/// model (measured, max-abs / rel-L2 / top-1: Q8_0 5.4e-2 / 3.4e-2 / 1.0, Q4_0 4.7e-2 / 3.1e-2 /
/// 0.97, Q4_1 3.8e-2 / 3.1e-2 / 0.94). Bounds: about 2× the measurement.
const TOL_VS_DEQUANT: [(WeightType, (f64, f64, f64)); 5] = [
    (WeightType::F16, (1e-6, 1e-6, 1.0)),
    (WeightType::Bf16, (1e-6, 1e-6, 1.0)),
    (WeightType::Q8_0, (0.1, 0.06, 0.95)),
    (WeightType::Q4_0, (0.1, 0.06, 0.9)),
    (WeightType::Q4_1, (0.1, 0.06, 0.9)),
];

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm").join(p)
}

struct Reference {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    /// `[P + S, V]`.
    logits: Vec<f32>,
}

fn reference() -> Reference {
    reference_of("tiny_llama")
}

fn reference_of(name: &str) -> Reference {
    let bytes = std::fs::read(fixture(&format!("{name}_reference.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = |name: &str| -> Vec<u32> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    };
    let t = st.tensor("logits").unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let logits = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    Reference { prompt: ids("prompt_ids"), tokens: ids("tokens"), logits }
}

/// The tiny preset with its decoder replaced by the HF checkpoint's hyper-parameters.
fn config(hf: &HfLlamaConfig) -> ModelConfig {
    let mut c = Preset::Tiny.config();
    let d = &mut c.decoder;
    assert_eq!(
        (hf.vocab_size, hf.hidden_size),
        (d.vocab_size, d.hidden_size),
        "fixture must keep the tiny shapes"
    );
    d.intermediate_size = hf.intermediate_size;
    d.n_layers = hf.num_hidden_layers;
    d.n_heads = hf.num_attention_heads;
    d.n_kv_heads = hf.num_key_value_heads;
    d.head_dim = hf.head_dim;
    d.rms_norm_eps = hf.rms_norm_eps as f32;
    d.rope_theta = hf.rope_theta;
    d.rope_scaling = hf.rope_scaling.as_ref().map(|s| RopeScaling {
        factor: s.factor,
        low_freq_factor: s.low_freq_factor,
        high_freq_factor: s.high_freq_factor,
        original_max_position_embeddings: s.original_max_position_embeddings,
        ..RopeScaling::default()
    });
    d.max_position_embeddings = hf.max_position_embeddings;
    d.tie_word_embeddings = hf.tie_word_embeddings;
    c.validate().unwrap();
    c
}

/// `llm.*` from a map, everything else synthetic.
struct MapSource {
    llm: HashMap<String, Vec<f32>>,
    rest: SyntheticSource,
}

impl WeightSource for MapSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> medregion::Result<SourceTensor> {
        match self.llm.get(name) {
            Some(v) => Ok(SourceTensor::F32(v.clone())),
            None if name.starts_with("llm.") => Err(Error::NotFound(name.to_string())),
            None => self.rest.tensor(name, shape),
        }
    }
}

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "medregion-llm-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fixture checkpoint as a package stored in `t`.
fn package(dir: &TempDir, t: WeightType) -> Model<'static> {
    package_of("tiny_llama", dir, t)
}

fn package_of(name: &str, dir: &TempDir, t: WeightType) -> Model<'static> {
    let (hf, tensors) = load_llama(&fixture(name), None).unwrap();
    let cfg = config(&hf);
    let llm = tensors.into_iter().map(|n| (n.name, n.data)).collect();
    let path = dir.0.join(format!("{name}-{t:?}.mrpk"));
    PackageBuilder::new(cfg, bytes_tokenizer())
        .policy(QuantPolicy::all(t))
        .write(&path, &mut MapSource { llm, rest: SyntheticSource::new(1) })
        .unwrap();
    Model::load(&path, &LoadOptions::default()).unwrap()
}

/// `model`'s decoder weights dequantized, stored as F32 in a new package.
fn dequantized(dir: &TempDir, model: &Model<'_>) -> Model<'static> {
    let llm = model
        .weights()
        .filter(|w| w.name().starts_with("llm."))
        .map(|w| (w.name().to_string(), w.to_f32().unwrap()))
        .collect();
    let path = dir.0.join(format!("dequant-{}.mrpk", model.checksum().len() + llm_len(&llm)));
    PackageBuilder::new(model.config().clone(), bytes_tokenizer())
        .policy(QuantPolicy::all(WeightType::F32))
        .write(&path, &mut MapSource { llm, rest: SyntheticSource::new(1) })
        .unwrap();
    Model::load(&path, &LoadOptions::default()).unwrap()
}

fn llm_len(m: &HashMap<String, Vec<f32>>) -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    m.len() * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

fn session<'m>(model: &'m Model<'_>, threads: usize) -> Session<'m> {
    Session::new(model, &SessionOptions { context: 64, threads, ..SessionOptions::default() }).unwrap()
}

/// Logits of the prompt (one prefill) and of feeding `tokens[..steps]` one at a time.
fn teacher_forced(s: &mut Session<'_>, prompt: &[u32], tokens: &[u32]) -> Vec<f32> {
    let v = s.vocab_size();
    let mut out = vec![0.0; prompt.len() * v];
    s.reset();
    s.prefill_all_logits(Input::Tokens(prompt), &mut out).unwrap();
    for &id in tokens {
        out.extend_from_slice(s.step(id).unwrap());
    }
    out
}

fn rel_err(a: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(a.len(), reference.len());
    let scale = reference.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let diff = a.iter().zip(reference).fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

/// `‖a − b‖₂ / ‖ref‖₂` over everything, and the share of rows whose argmax agrees.
fn rel_l2_and_top1(a: &[f32], reference: &[f32], v: usize) -> (f64, f64) {
    let num: f64 = a.iter().zip(reference).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let den: f64 = reference.iter().map(|&y| (y as f64).powi(2)).sum();
    let rows = reference.len() / v;
    let agree = (0..rows)
        .filter(|&r| argmax(&a[r * v..(r + 1) * v]) == argmax(&reference[r * v..(r + 1) * v]))
        .count();
    ((num / den).sqrt(), agree as f64 / rows as f64)
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens, stop_ids: Some(Vec::new()), ..GenerateOptions::default() }
}

#[test]
fn f32_logits_and_greedy_tokens_match_transformers() {
    let r = reference();
    let dir = TempDir::new();
    let model = package(&dir, WeightType::F32);
    let steps = r.tokens.len() - 1;
    let mut first: Option<Vec<f32>> = None;
    for threads in [1, 2] {
        let mut s = session(&model, threads);
        let got = teacher_forced(&mut s, &r.prompt, &r.tokens[..steps]);
        // The thread count does not change a single bit.
        assert!(first.as_ref().is_none_or(|f| *f == got));
        first.get_or_insert_with(|| got.clone());
        let err = rel_err(&got, &r.logits);
        eprintln!("f32 vs transformers (threads {threads}): {err:.3e}");
        assert!(err <= TOL_F32, "{err}");

        s.reset();
        let out = s
            .generate(Input::Tokens(&r.prompt), &greedy(r.tokens.len()), None, &mut |_, _| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(out.tokens, r.tokens);
        assert_eq!(out.stop, StopReason::MaxTokens);
    }
}

/// SmolLM2's structure (tied head, RoPE without scaling, one KV head) against transformers.
#[test]
fn tied_head_and_plain_rope_match_transformers() {
    let r = reference_of("tiny_tied");
    let dir = TempDir::new();
    let model = package_of("tiny_tied", &dir, WeightType::F32);
    let d = &model.config().decoder;
    assert!(d.tie_word_embeddings && d.rope_scaling.is_none() && d.n_kv_heads == 1);
    assert!(!model.has_weight("llm.lm_head.weight"));
    let mut s = session(&model, 2);
    let got = teacher_forced(&mut s, &r.prompt, &r.tokens[..r.tokens.len() - 1]);
    let err = rel_err(&got, &r.logits);
    eprintln!("tied f32 vs transformers: {err:.3e}");
    assert!(err <= TOL_F32, "{err}");
    s.reset();
    let out = s
        .generate(Input::Tokens(&r.prompt), &greedy(r.tokens.len()), None, &mut |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(out.tokens, r.tokens);
}

#[test]
fn prefill_at_once_equals_token_by_token() {
    let r = reference();
    let dir = TempDir::new();
    let model = package(&dir, WeightType::Q8_0);
    let mut s = session(&model, 2);
    let v = s.vocab_size();
    let mut at_once = vec![0.0; r.prompt.len() * v];
    s.prefill_all_logits(Input::Tokens(&r.prompt), &mut at_once).unwrap();
    s.reset();
    let mut one_by_one = Vec::new();
    for &id in &r.prompt {
        one_by_one.extend_from_slice(s.step(id).unwrap());
    }
    // Same rows through the same kernels: bit-identical (see crate::ops).
    assert_eq!(at_once, one_by_one);
    // Chunked prefill (3 rows per call) and input embeddings give the same again.
    let mut small =
        Session::new(&model, &SessionOptions { context: 64, threads: 1, chunk: 3, ..Default::default() })
            .unwrap();
    let mut chunked = vec![0.0; r.prompt.len() * v];
    small.prefill_all_logits(Input::Tokens(&r.prompt), &mut chunked).unwrap();
    assert_eq!(at_once, chunked);
    let d = small.config().hidden_size;
    let mut emb = vec![0.0; r.prompt.len() * d];
    small.embed(&r.prompt, &mut emb).unwrap();
    small.reset();
    let last = small.prefill(Input::Embeddings(&emb)).unwrap().to_vec();
    assert_eq!(last, at_once[(r.prompt.len() - 1) * v..]);
}

#[test]
fn stored_types_match_their_dequantized_weights() {
    let r = reference();
    let dir = TempDir::new();
    let steps = r.tokens.len() - 1;
    for (t, tol) in TOL_VS_DEQUANT {
        let model = package(&dir, t);
        let plain = dequantized(&dir, &model);
        let got = teacher_forced(&mut session(&model, 2), &r.prompt, &r.tokens[..steps]);
        let want = teacher_forced(&mut session(&plain, 2), &r.prompt, &r.tokens[..steps]);
        let err = rel_err(&got, &want);
        let vs_ref = rel_err(&got, &r.logits);
        let (l2, top1) = rel_l2_and_top1(&got, &want, model.config().decoder.vocab_size);
        eprintln!("{t:?}: vs dequantized f32 {err:.3e} (rel L2 {l2:.3e}, top-1 agreement {top1:.3}), vs transformers f32 weights {vs_ref:.3e}");
        assert!(err <= tol.0 && l2 <= tol.1 && top1 >= tol.2, "{t:?}: {err}, {l2}, {top1} vs bounds {tol:?}");
        assert!(
            err > 0.0 || matches!(t, WeightType::F16 | WeightType::Bf16),
            "{t:?} identical to f32: not quantized?"
        );
    }
}

/// With `Activations::F32` a quantized model computes what its dequantized f32 copy computes,
/// bit for bit (prompt logits, teacher-forced steps, a batch with a shared prefix), on 1 and
/// 2 threads; the int8 path on the same model does not.
#[test]
fn f32_activations_give_the_dequantized_models_bits() {
    let r = reference();
    let dir = TempDir::new();
    let steps = r.tokens.len() - 1;
    for t in [WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1] {
        let model = package(&dir, t);
        let plain = dequantized(&dir, &model);
        let want = teacher_forced(&mut session(&plain, 2), &r.prompt, &r.tokens[..steps]);
        for threads in [1, 2] {
            let options =
                SessionOptions { context: 64, threads, activations: Activations::F32, ..Default::default() };
            let mut exact = Session::new(&model, &options).unwrap();
            assert_eq!(exact.activations(), Activations::F32);
            let got = teacher_forced(&mut exact, &r.prompt, &r.tokens[..steps]);
            assert!(
                got == want,
                "{t:?}, {threads} threads: f32 activations differ from the dequantized model (max {:.3e})",
                rel_err(&got, &want)
            );
            // A batch with a shared prefix: the same bits as the dequantized model's batch.
            let suffixes: [&[u32]; 3] = [&r.prompt[6..], &[17, 99, 3], &[200]];
            let run = |s: &mut Session<'_>| {
                s.reset();
                let opts = GenerateOptions { keep_logits: true, ..greedy(8) };
                let g = s
                    .generate_batch(Input::Tokens(&r.prompt[..6]), &suffixes, &opts, None, &mut |_, _, _| {
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                g.into_iter().map(|g| (g.tokens, g.logits)).collect::<Vec<_>>()
            };
            assert!(
                run(&mut exact) == run(&mut session(&plain, threads)),
                "{t:?}: batched, {threads} threads"
            );
        }
        // The int8 path on the same model is not the dequantized model's arithmetic.
        let int8 = teacher_forced(&mut session(&model, 2), &r.prompt, &r.tokens[..steps]);
        assert!(int8 != want, "{t:?}: int8 activations gave the f32 bits");
    }
}

#[test]
fn batch_with_shared_prefix_equals_each_alone() {
    let r = reference();
    let dir = TempDir::new();
    let model = package(&dir, WeightType::Q4_0);
    let mut s = session(&model, 2);
    let v = s.vocab_size();
    let prefix = &r.prompt[..6];
    let suffixes: [&[u32]; 4] = [&r.prompt[6..], &[17, 99, 3], &[], &[200]];
    for sampling in [
        SamplingParams::greedy(),
        SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, repetition_penalty: 1.1, seed: 9 },
    ] {
        let opts = GenerateOptions {
            max_new_tokens: 12,
            keep_logits: true,
            sampling: sampling.clone(),
            ..greedy(12)
        };
        let mut streamed = vec![Vec::new(); suffixes.len()];
        let batch = s
            .generate_batch(Input::Tokens(prefix), &suffixes, &opts, None, &mut |i, id, _| {
                streamed[i].push(id);
                ControlFlow::Continue(())
            })
            .unwrap();
        if sampling.is_greedy() {
            // The prefix as caller-made embeddings gives the same sequences.
            let mut emb = vec![0.0; prefix.len() * s.config().hidden_size];
            s.embed(prefix, &mut emb).unwrap();
            let by_emb = s
                .generate_batch(Input::Embeddings(&emb), &suffixes, &opts, None, &mut |_, _, _| {
                    ControlFlow::Continue(())
                })
                .unwrap();
            for (a, b) in by_emb.iter().zip(&batch) {
                assert_eq!((&a.tokens, &a.logits), (&b.tokens, &b.logits));
            }
        }
        for (i, suffix) in suffixes.iter().enumerate() {
            let prompt: Vec<u32> = prefix.iter().chain(suffix.iter()).copied().collect();
            let alone_opts = GenerateOptions {
                sampling: SamplingParams { seed: sampling.seed + i as u64, ..sampling.clone() },
                ..opts.clone()
            };
            s.reset();
            let alone = s
                .generate(Input::Tokens(&prompt), &alone_opts, None, &mut |_, _| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(batch[i].tokens, alone.tokens, "sequence {i} ({sampling:?})");
            assert_eq!(streamed[i], batch[i].tokens);
            assert_eq!(batch[i].prompt_tokens, prompt.len());
            // Compare the logits rows both have: the sampling steps (the last `tokens` rows).
            let steps = batch[i].tokens.len() * v;
            let (b, a) = (&batch[i].logits, &alone.logits);
            assert!(b.len() >= steps && a.len() >= steps);
            // Bit-identical: rows of a batch go through the same kernels as rows alone.
            assert_eq!(b[b.len() - steps..], a[a.len() - steps..], "sequence {i}");
        }
    }
}

#[test]
fn long_shared_prefix_batch_equals_each_alone() {
    // A prefix longer than the attention's prefix chunk (64 keys), so rows that share it walk
    // it together chunk by chunk; with 1 and 2 threads the rows are grouped differently.
    let dir = TempDir::new();
    let model = package(&dir, WeightType::Q8_0);
    let prefix: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % 250).collect();
    let suffixes: [&[u32]; 3] = [&[5, 6], &[], &[42]];
    let opts = GenerateOptions { keep_logits: true, ..greedy(6) };
    for threads in [1, 2] {
        let mut s =
            Session::new(&model, &SessionOptions { context: 192, threads, ..SessionOptions::default() })
                .unwrap();
        let v = s.vocab_size();
        let batch = s
            .generate_batch(Input::Tokens(&prefix), &suffixes, &opts, None, &mut |_, _, _| {
                ControlFlow::Continue(())
            })
            .unwrap();
        for (i, suffix) in suffixes.iter().enumerate() {
            let prompt: Vec<u32> = prefix.iter().chain(suffix.iter()).copied().collect();
            s.reset();
            let alone = s
                .generate(Input::Tokens(&prompt), &opts, None, &mut |_, _| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(batch[i].tokens, alone.tokens, "sequence {i}, {threads} threads");
            let steps = batch[i].tokens.len() * v;
            let (b, a) = (&batch[i].logits, &alone.logits);
            assert_eq!(b[b.len() - steps..], a[a.len() - steps..], "sequence {i}, {threads} threads");
        }
    }
}

#[test]
fn stops_cancel_and_bad_input() {
    let r = reference();
    let dir = TempDir::new();
    let model = package(&dir, WeightType::F32);
    let tok = Tokenizer::from_package(&model).unwrap();
    let mut s = session(&model, 1);
    let nop = &mut |_: u32, _: &str| ControlFlow::Continue(());

    // Stop id: the first occurrence of greedy token 5 ends the sequence before it.
    let stop = r.tokens[5];
    let first = r.tokens.iter().position(|&t| t == stop).unwrap();
    let out = s
        .generate(
            Input::Tokens(&r.prompt),
            &GenerateOptions { stop_ids: Some(vec![stop]), ..greedy(30) },
            None,
            nop,
        )
        .unwrap();
    assert_eq!(out.stop, StopReason::StopToken(stop));
    assert_eq!(out.tokens, r.tokens[..first]);

    // Stop string: the first ASCII letter/digit token's character.
    if let Some(j) = r.tokens.iter().position(|&t| (t as u8 as char).is_ascii_alphanumeric() && t < 128) {
        let ch = (r.tokens[j] as u8 as char).to_string();
        let mut streamed = String::new();
        s.reset();
        let opts = GenerateOptions { stop_strings: vec![ch.clone()], ..greedy(30) };
        let out = s
            .generate(Input::Tokens(&r.prompt), &opts, Some(&tok), &mut |_, t| {
                streamed.push_str(t);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(out.stop, StopReason::StopString(0));
        assert_eq!(out.tokens, r.tokens[..=j]);
        assert!(!out.text.contains(&ch));
        assert_eq!(streamed, out.text);
    }

    // Callback stop and cancel flag.
    s.reset();
    let out =
        s.generate(Input::Tokens(&r.prompt), &greedy(30), None, &mut |_, _| ControlFlow::Break(())).unwrap();
    assert_eq!((out.stop, out.tokens.len()), (StopReason::Callback, 1));
    s.reset();
    s.cancel_flag().store(true, Ordering::SeqCst);
    let out = s.generate(Input::Tokens(&r.prompt), &greedy(30), None, nop).unwrap();
    assert_eq!((out.stop, out.tokens.len()), (StopReason::Cancelled, 1));
    assert!(!s.cancel_flag().load(Ordering::SeqCst), "a cancel is consumed");
    // A long prefill stops between chunks (32 positions), keeping what it fed; one step never
    // looks at the flag (the decode loop does).
    s.reset();
    let long: Vec<u32> = r.prompt.iter().copied().cycle().take(60).collect();
    s.cancel_flag().store(true, Ordering::SeqCst);
    let e = s.prefill(Input::Tokens(&long)).unwrap_err();
    assert!(matches!(e, medregion::Error::Cancelled), "{e}");
    assert_eq!(s.len(), 32, "the first chunk stays");
    assert!(!s.cancel_flag().load(Ordering::SeqCst), "a cancel is consumed");
    s.reset();
    assert!(s.prefill(Input::Tokens(&long)).is_ok());

    // Context full ends generation; a prompt that does not fit is an error.
    let mut small =
        Session::new(&model, &SessionOptions { context: 16, threads: 1, ..Default::default() }).unwrap();
    let out = small.generate(Input::Tokens(&r.prompt), &greedy(30), None, nop).unwrap();
    assert_eq!((out.stop, out.tokens.len()), (StopReason::ContextFull, 16 - r.prompt.len() + 1));
    small.reset();
    let long = vec![1u32; 17];
    let e = small.generate(Input::Tokens(&long), &greedy(3), None, nop).unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
    assert!(small.is_empty(), "a rejected prompt leaves the session unchanged");

    let bad = |opts: GenerateOptions, s: &mut Session<'_>| {
        s.reset();
        let e = s
            .generate(Input::Tokens(&r.prompt), &opts, None, &mut |_, _| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        e.to_string()
    };
    assert!(bad(greedy(0), &mut s).contains("max_new_tokens"));
    let with = |p: SamplingParams| GenerateOptions { sampling: p, ..greedy(4) };
    assert!(bad(with(SamplingParams { temperature: f32::NAN, ..Default::default() }), &mut s)
        .contains("temperature"));
    assert!(
        bad(with(SamplingParams { temperature: -1.0, ..Default::default() }), &mut s).contains("temperature")
    );
    assert!(bad(with(SamplingParams { top_p: 0.0, temperature: 1.0, ..Default::default() }), &mut s)
        .contains("top_p"));
    assert!(bad(with(SamplingParams { top_p: 1.01, ..Default::default() }), &mut s).contains("top_p"));
    assert!(
        bad(GenerateOptions { stop_strings: vec!["x".into()], ..greedy(4) }, &mut s).contains("tokenizer")
    );
    let e = s.prefill(Input::Tokens(&[1, 264])).unwrap_err();
    assert!(e.to_string().contains("264") && e.to_string().contains("vocabulary"), "{e}");
    assert!(s.prefill(Input::Tokens(&[])).is_err());
    assert!(s.prefill(Input::Embeddings(&[0.0; 65])).is_err());
    assert!(s.prefill(Input::Embeddings(&[f32::NAN; 64])).is_err());
    assert!(s.step(1000).is_err());
    assert!(s
        .generate_batch(
            Input::Tokens(&r.prompt),
            &[],
            &greedy(3),
            None,
            &mut |_, _, _| ControlFlow::Continue(())
        )
        .is_err());
    let e = Session::new(&model, &SessionOptions { context: 5000, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("max_position_embeddings"), "{e}");
}

#[test]
fn session_is_send() {
    fn send<T: Send>() {}
    send::<Session<'static>>();
}

/// `Session::product_seconds` (what `bench llm` sets against single-sequence decode) times the
/// products on the session's scratch only: the positions held stay, the next step's logits are
/// those of a session that never ran it, the last logits are forgotten rather than left
/// overwritten, and a row count beyond the scratch or zero calls are errors that name them.
#[test]
fn product_timing_leaves_the_sequence_alone() {
    let r = reference();
    let dir = TempDir::new();
    let model = package(&dir, WeightType::Q4_0);
    let (mut timed, mut plain) = (session(&model, 2), session(&model, 2));
    for s in [&mut timed, &mut plain] {
        s.prefill(Input::Tokens(&r.prompt)).unwrap();
    }
    let held = timed.len();
    for rows in [1, 6] {
        let secs = timed.product_seconds(rows, 2).unwrap();
        assert!(secs > 0.0 && secs.is_finite(), "{rows} rows: {secs}");
    }
    assert_eq!(timed.len(), held);
    assert!(timed.logits().is_none());
    let next = r.tokens[0];
    assert_eq!(timed.step(next).unwrap(), plain.step(next).unwrap());
    for (rows, calls, name) in [(0, 1, "rows"), (1000, 1, "rows"), (1, 0, "calls")] {
        match timed.product_seconds(rows, calls) {
            Err(Error::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{rows} rows, {calls} calls: {other:?}"),
        }
    }
    assert_eq!(timed.len(), held + 1);
}
