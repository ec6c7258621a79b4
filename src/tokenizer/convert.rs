//! Builds Hugging Face `tokenizer.json` documents equivalent to our own tiktoken and GGUF
//! tokenizers, so that the `tokenizers` crate can serve as an independent reference (the
//! tests encode the same strings both ways), and so that a package can be built with the
//! `hf-json` kind from a rank file or a GGUF when that is preferred.
//!
//! * [`tiktoken_to_hf_json`] follows transformers' `TikTokenConverter`
//!   (`convert_slow_tokenizer.py`): the vocabulary is the ranks spelled with GPT-2's byte map;
//!   the merges are every split of a token into two tokens, ordered by the merged token's rank
//!   (then by the ranks of the halves); the BPE model has `ignore_merges` (a pre-token that is
//!   itself a token is emitted whole, as tiktoken does); the pre-tokenizer is
//!   `Split(pattern, Isolated)` + `ByteLevel(use_regex = false)`.
//! * [`gguf_to_hf_json`] writes SmolLM2's own layout (the `smollm` pre-tokenizer):
//!   `Digits(individual_digits)` + `ByteLevel(use_regex = true)`, the GGUF merges, and the
//!   control tokens as special added tokens.
//!
//! Both return the JSON text; loading a 128k-token result takes about a second.

use base64::Engine as _;
use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use super::gguf::{token_type, GgufTokenizerJson};
use super::tiktoken::clip;
use super::{byte_level, SpecialToken};
use crate::{Error, Result};

fn added_token(id: u32, content: &str, special: bool) -> Value {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special
    })
}

fn spell(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    byte_level::encode_into(bytes, &mut s);
    s
}

/// A `tokenizer.json` for a tiktoken rank file with split `pattern` and `specials`.
pub fn tiktoken_to_hf_json(rank_file: &[u8], pattern: &str, specials: &[SpecialToken]) -> Result<String> {
    let what = "tiktoken rank file";
    let text = std::str::from_utf8(rank_file).map_err(|_| Error::format(what, "not UTF-8 text"))?;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut ranks: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
    let mut by_rank: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_ascii_whitespace();
        let (Some(tok), Some(rank)) = (f.next(), f.next()) else {
            return Err(Error::format(what, format!("bad line `{}`", clip(line))));
        };
        let tok = engine.decode(tok).map_err(|e| Error::format(what, format!("bad base64: {e}")))?;
        let rank: u32 =
            rank.parse().map_err(|_| Error::format(what, format!("bad rank `{}`", clip(rank))))?;
        if by_rank.len() <= rank as usize {
            by_rank.resize(rank as usize + 1, Vec::new());
        }
        by_rank[rank as usize] = tok.clone();
        ranks.insert(tok, rank);
    }
    let mut vocab = serde_json::Map::with_capacity(ranks.len());
    for (rank, tok) in by_rank.iter().enumerate() {
        vocab.insert(spell(tok), json!(rank));
    }
    // (merged rank, left rank, right rank)
    let mut merges: Vec<(u32, u32, u32)> = Vec::new();
    for (rank, tok) in by_rank.iter().enumerate() {
        for i in 1..tok.len() {
            if let (Some(&l), Some(&r)) = (ranks.get(&tok[..i]), ranks.get(&tok[i..])) {
                merges.push((rank as u32, l, r));
            }
        }
    }
    merges.sort_unstable();
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(_, l, r)| json!([spell(&by_rank[l as usize]), spell(&by_rank[r as usize])]))
        .collect();
    let added: Vec<Value> = specials.iter().map(|s| added_token(s.id, &s.text, true)).collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": true, "vocab": Value::Object(vocab), "merges": merges
        }
    });
    Ok(doc.to_string())
}

/// A `tokenizer.json` equivalent to a GGUF `gpt2` tokenizer with the `smollm` pre-tokenizer.
pub fn gguf_to_hf_json(j: &GgufTokenizerJson) -> Result<String> {
    if j.model != "gpt2" || j.pre.as_deref() != Some("smollm") {
        return Err(Error::Unsupported(format!(
            "gguf_to_hf_json: model `{}`, pre `{}`; only gpt2 + smollm",
            clip(&j.model),
            clip(j.pre.as_deref().unwrap_or("<none>"))
        )));
    }
    let mut vocab = serde_json::Map::with_capacity(j.tokens.len());
    let mut added = Vec::new();
    for (id, t) in j.tokens.iter().enumerate() {
        let ty = j.token_type(id);
        if !vocab.contains_key(t) {
            vocab.insert(t.clone(), json!(id));
        }
        if matches!(ty, token_type::CONTROL | token_type::UNKNOWN | token_type::USER_DEFINED) {
            added.push(added_token(id as u32, t, ty != token_type::USER_DEFINED));
        }
    }
    let merges: Vec<Value> = j
        .merges
        .iter()
        .map(|m| {
            let split = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i).unwrap_or(m.len());
            json!([&m[..split], m.get(split + 1..).unwrap_or("")])
        })
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": Value::Object(vocab), "merges": merges
        }
    });
    Ok(doc.to_string())
}
