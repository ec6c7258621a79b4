//! The `hf-json` kind: a Hugging Face `tokenizer.json`, run by the `tokenizers` crate
//! (`default-features = false, features = ["fancy-regex"]`: pure Rust, no Oniguruma; DESIGN §9).
//!
//! We use the crate as is for encoding (normalizer, pre-tokenizer, model, its own added tokens
//! with their `lstrip`/`rstrip`/`single_word` flags). Decoding goes through our id → bytes
//! table instead of `Tokenizer::decode`, so that the streaming decoder can emit whole UTF-8
//! characters from byte-level tokens (HF's decoders work on strings). The table is exact for
//! byte-level BPE (`ByteLevel` decoder: GPT-2, Llama 3) and for SentencePiece-style BPE
//! (`▁` → space, `<0xAB>` byte fallback); for other decoders (WordPiece, CTC) a token decodes
//! to its vocabulary text, and the leading-space `Strip` of SentencePiece decoders is not
//! applied.

use std::sync::OnceLock;

use tokenizers::DecoderWrapper;

use super::{byte_level, GgufSpecial, TokenTable};
use crate::{Error, Result};

/// How vocabulary strings spell bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spelling {
    /// GPT-2 byte → unicode map.
    ByteLevel,
    /// `▁` for space, `<0xAB>` byte-fallback tokens.
    SentencePiece,
    /// The vocabulary string is the text.
    Plain,
}

/// A loaded `tokenizer.json`.
pub(crate) struct HfModel {
    tokenizer: tokenizers::Tokenizer,
    /// A copy that does not match its special added tokens in text (`allow_special = false`),
    /// built on first use.
    no_special: OnceLock<std::result::Result<tokenizers::Tokenizer, String>>,
}

fn spelling_of(d: &DecoderWrapper) -> Option<Spelling> {
    match d {
        DecoderWrapper::ByteLevel(_) => Some(Spelling::ByteLevel),
        DecoderWrapper::Metaspace(_) | DecoderWrapper::ByteFallback(_) => Some(Spelling::SentencePiece),
        DecoderWrapper::Replace(_) => Some(Spelling::SentencePiece),
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().find_map(spelling_of),
        _ => None,
    }
}

fn hf_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::format("tokenizer.json", format!("{what}: {e}"))
}

impl HfModel {
    /// Loads `tokenizer.json` bytes; returns the model, the id → bytes table and the added
    /// tokens (`special` ones are control tokens).
    pub(crate) fn new(bytes: &[u8]) -> Result<(HfModel, TokenTable, Vec<GgufSpecial>)> {
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| hf_err("cannot be loaded", e))?;
        let spelling = tokenizer.get_decoder().and_then(spelling_of).unwrap_or(Spelling::Plain);
        let added = tokenizer.get_added_tokens_decoder();
        let n = tokenizer.get_vocab_size(true);
        let n = n.max(added.keys().map(|&id| id as usize + 1).max().unwrap_or(0));
        if n >= 1 << 31 {
            return Err(hf_err("vocabulary", format!("{n} ids")));
        }
        let mut table = TokenTable::with_capacity(n, n * 6);
        let mut scratch = Vec::new();
        let mut specials = Vec::new();
        for id in 0..n as u32 {
            if let Some(t) = added.get(&id) {
                table.push(Some(t.content.as_bytes()));
                if !t.content.is_empty() {
                    specials.push((t.content.clone(), id, t.special));
                }
                continue;
            }
            let Some(text) = tokenizer.id_to_token(id) else {
                table.push(None);
                continue;
            };
            scratch.clear();
            match spelling {
                Spelling::ByteLevel => byte_level::decode_into(&text, &mut scratch),
                Spelling::SentencePiece => {
                    let byte = text
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .filter(|h| h.len() == 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match byte {
                        Some(b) => scratch.push(b),
                        None => scratch.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
                    }
                }
                Spelling::Plain => scratch.extend_from_slice(text.as_bytes()),
            }
            table.push(Some(&scratch));
        }
        Ok((HfModel { tokenizer, no_special: OnceLock::new() }, table, specials))
    }

    /// Encodes text without adding BOS/EOS. With `allow_special = false` the special added
    /// tokens of the file are encoded as text (`encode_special_tokens`).
    pub(crate) fn encode(&self, text: &str, allow_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let tokenizer = if allow_special {
            &self.tokenizer
        } else {
            let copy = self.no_special.get_or_init(|| {
                let mut t = self.tokenizer.clone();
                t.set_encode_special_tokens(true);
                Ok(t)
            });
            copy.as_ref().map_err(|e| Error::Internal(e.clone()))?
        };
        let enc = tokenizer.encode_fast(text, false).map_err(|e| {
            Error::invalid("text", format!("the tokenizer.json tokenizer failed on this input: {e}"))
        })?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}
