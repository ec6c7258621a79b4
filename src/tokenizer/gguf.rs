//! The GGUF kind: a GPT-2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`) taken from a
//! GGUF file's `tokenizer.ggml.*` metadata, as SmolLM2 ships it.
//!
//! **Package layout.** The `tokenizer` tensor of a `gguf`-kind package holds the UTF-8 JSON of
//! [`GgufTokenizerJson`] (defined here; the converter writes it with
//! `GgufTokenizerJson::from(&gguf.tokenizer()?).to_bytes()`). Its fields are the GGUF keys with
//! the `tokenizer.ggml.` prefix dropped, plus a `format` tag.
//!
//! **Algorithm** (llama.cpp `llm_tokenizer_bpe_session`, `tokenizers`' `BPE`): the text is
//! pre-tokenized, each piece's bytes start as the byte-level tokens (GPT-2's byte → unicode
//! map, [`super::byte_level`]), and pairs are merged by their rank in `merges` (lowest first,
//! leftmost on a tie). There is no "whole piece is a token" shortcut (that is llama.cpp's
//! `ignore_merges`, set only for Llama 3's pre-tokenizer).
//!
//! **Pre-tokenizer.** llama.cpp picks the split from `tokenizer.ggml.pre`. We implement the one
//! SmolLM2 declares, `smollm` (`llama-vocab.cpp`: `LLAMA_VOCAB_PRE_TYPE_SMOLLM`), which is two
//! regexes applied in turn: `\p{N}` (every digit is its own piece) and then GPT-2's
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` inside each
//! remaining run. That is also the Hugging Face `tokenizer.json` of SmolLM2:
//! `Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false, use_regex=true)]`.
//! Any other `pre` is refused with [`Error::Unsupported`]: a wrong split gives plausible but
//! wrong ids, which is worse than an error.
//!
//! Why our own rather than `tokenizers`: a GGUF carries no `tokenizer.json`, and which HF
//! pre-tokenizer matches a `pre` name is llama.cpp knowledge; building the HF object would be a
//! converter of its own. The tests compare this code with `tokenizers` running an equivalent
//! `tokenizer.json` (built at test time) and with the committed reference ids.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::bpe::{self, PairRank, Part};
use super::split::Splitter;
use super::tiktoken::clip;
use super::{byte_level, TokenTable};
use crate::io::gguf::GgufTokenizer;
use crate::{Error, Result};

/// The `format` tag of [`GgufTokenizerJson`].
pub const GGUF_TOKENIZER_FORMAT: &str = "medregion-gguf-tokenizer-v1";

/// The `tokenizer.ggml.pre` values we implement.
pub const SUPPORTED_PRE: &[&str] = &["smollm"];

/// GPT-2's split regex, as in `tokenizers`' ByteLevel pre-tokenizer.
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GGUF token types (`llama_token_type` in llama.cpp).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The bytes of a `gguf`-kind tokenizer tensor: GGUF `tokenizer.ggml.*` metadata as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufTokenizerJson {
    /// Always [`GGUF_TOKENIZER_FORMAT`].
    pub format: String,
    /// `tokenizer.ggml.model` (only `gpt2` is supported).
    pub model: String,
    /// `tokenizer.ggml.pre` (only [`SUPPORTED_PRE`]).
    #[serde(default)]
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id, byte-level spelled.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (see [`token_type`]); empty means all normal.
    #[serde(default)]
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"left right"`, best first.
    #[serde(default)]
    pub merges: Vec<String>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub eot_token_id: Option<u32>,
    #[serde(default)]
    pub unknown_token_id: Option<u32>,
    #[serde(default)]
    pub padding_token_id: Option<u32>,
    #[serde(default)]
    pub add_bos_token: Option<bool>,
    #[serde(default)]
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template` (Jinja), kept to pick the chat format.
    #[serde(default)]
    pub chat_template: Option<String>,
}

impl From<&GgufTokenizer> for GgufTokenizerJson {
    fn from(t: &GgufTokenizer) -> Self {
        GgufTokenizerJson {
            format: GGUF_TOKENIZER_FORMAT.to_string(),
            model: t.model.clone(),
            pre: t.pre.clone(),
            tokens: t.tokens.clone(),
            token_types: t.token_types.clone(),
            merges: t.merges.clone(),
            bos_token_id: t.bos_token_id,
            eos_token_id: t.eos_token_id,
            eot_token_id: t.eot_token_id,
            unknown_token_id: t.unknown_token_id,
            padding_token_id: t.padding_token_id,
            add_bos_token: t.add_bos_token,
            add_eos_token: t.add_eos_token,
            chat_template: t.chat_template.clone(),
        }
    }
}

impl GgufTokenizerJson {
    /// The bytes to store in the package.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing strings, integers and booleans cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the bytes of the package tensor.
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufTokenizerJson> {
        let j: GgufTokenizerJson = serde_json::from_slice(bytes)
            .map_err(|e| Error::format("gguf tokenizer JSON", format!("not a valid tokenizer: {e}")))?;
        if j.format != GGUF_TOKENIZER_FORMAT {
            return Err(Error::format(
                "gguf tokenizer JSON",
                format!("format is `{}`, expected `{GGUF_TOKENIZER_FORMAT}`", clip(&j.format)),
            ));
        }
        Ok(j)
    }

    /// The type of token `id` (normal when the file has no types).
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types.get(id).copied().unwrap_or(token_type::NORMAL)
    }
}

/// A GPT-2-style BPE with the `smollm` pre-tokenizer.
pub(crate) struct GgufModel {
    /// Token of each byte's byte-level character; `u32::MAX` when the vocabulary lacks it.
    byte_id: [u32; 256],
    /// Some byte has no token (SmolLM2 lacks 21: a few C0 controls and bytes that never occur
    /// in UTF-8).
    any_missing: bool,
    /// `(left << 32 | right)` → `(rank, merged id)`.
    merges: FxHashMap<u64, (u32, u32)>,
    split: Splitter,
}

impl PairRank for GgufModel {
    #[inline]
    fn byte_id(&self, b: u8) -> u32 {
        self.byte_id[b as usize]
    }

    #[inline]
    fn pair(&self, _piece: &[u8], left: Part, right: Part) -> Option<(u32, u32)> {
        self.merges.get(&((left.id as u64) << 32 | right.id as u64)).copied()
    }
}

/// One special token of the GGUF vocabulary: `(text, id, is_control)`.
pub(crate) type GgufSpecial = (String, u32, bool);

impl GgufModel {
    /// Builds the model, the id → bytes table and the special tokens the vocabulary marks
    /// (control, unknown and user-defined types).
    pub(crate) fn new(j: &GgufTokenizerJson) -> Result<(GgufModel, TokenTable, Vec<GgufSpecial>)> {
        let what = "gguf tokenizer";
        if j.model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{what}: tokenizer.ggml.model `{}`; medregion reads GPT-2-style byte-level BPE (`gpt2`) only",
                clip(&j.model)
            )));
        }
        match j.pre.as_deref() {
            Some(p) if SUPPORTED_PRE.contains(&p) => {}
            other => {
                return Err(Error::Unsupported(format!(
                    "{what}: pre-tokenizer (tokenizer.ggml.pre) `{}`; implemented: {}",
                    clip(other.unwrap_or("<none>")),
                    SUPPORTED_PRE.join(", ")
                )))
            }
        }
        if j.tokens.is_empty() || j.tokens.len() >= 1 << 31 {
            return Err(Error::format(what, format!("{} tokens", j.tokens.len())));
        }
        if !j.token_types.is_empty() && j.token_types.len() != j.tokens.len() {
            return Err(Error::format(
                what,
                format!("{} token types for {} tokens", j.token_types.len(), j.tokens.len()),
            ));
        }
        let mut by_text: FxHashMap<&str, u32> = FxHashMap::default();
        let mut specials = Vec::new();
        let mut table = TokenTable::with_capacity(j.tokens.len(), j.tokens.iter().map(String::len).sum());
        let mut scratch = Vec::new();
        for (id, text) in j.tokens.iter().enumerate() {
            let ty = j.token_type(id);
            let id = id as u32;
            match ty {
                token_type::CONTROL | token_type::UNKNOWN | token_type::USER_DEFINED => {
                    if !text.is_empty() {
                        specials.push((text.clone(), id, ty != token_type::USER_DEFINED));
                    }
                    table.push(Some(text.as_bytes()));
                }
                token_type::BYTE => {
                    // `<0xAB>` (SentencePiece byte fallback); byte-level vocabularies have none.
                    let b = text
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match b {
                        Some(b) => table.push(Some(&[b])),
                        None => table.push(Some(text.as_bytes())),
                    }
                }
                _ => {
                    by_text.entry(text.as_str()).or_insert(id);
                    scratch.clear();
                    byte_level::decode_into(text, &mut scratch);
                    table.push(Some(&scratch));
                }
            }
        }
        // A byte without a token is dropped before merging, as `tokenizers`' BPE drops a
        // character missing from the vocabulary when there is no `unk_token` (llama.cpp also
        // drops it, but keeps it as a merge barrier; the two differ only when such a byte sits
        // between two mergeable characters inside one pre-token).
        let mut byte_id = [u32::MAX; 256];
        let mut buf = [0u8; 4];
        for b in 0..=255u8 {
            let spelled: &str = byte_level::byte_to_char(b).encode_utf8(&mut buf);
            if let Some(&id) = by_text.get(spelled) {
                byte_id[b as usize] = id;
            }
        }
        let any_missing = byte_id.contains(&u32::MAX);
        if byte_id.iter().filter(|&&id| id == u32::MAX).count() > 128 {
            return Err(Error::format(
                what,
                "fewer than 128 of the 256 byte-level characters are tokens; not a byte-level vocabulary",
            ));
        }
        let mut merges: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        merges.reserve(j.merges.len());
        let mut joined = String::new();
        for (rank, line) in j.merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character.
            let split = line.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
            let Some(split) = split else {
                return Err(Error::format(
                    what,
                    format!("merge {rank} `{}` is not `left right`", clip(line)),
                ));
            };
            let (left, right) = (&line[..split], &line[split + 1..]);
            let lookup = |t: &str| {
                by_text.get(t).copied().ok_or_else(|| {
                    Error::format(
                        what,
                        format!("merge {rank} `{}`: `{}` is not a token", clip(line), clip(t)),
                    )
                })
            };
            let (l, r) = (lookup(left)?, lookup(right)?);
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = lookup(&joined)?;
            merges.entry((l as u64) << 32 | r as u64).or_insert((rank as u32, merged));
        }
        let split = Splitter::new(GPT2_PATTERN, "gpt2 split pattern")?;
        Ok((GgufModel { byte_id, any_missing, merges, split }, table, specials))
    }

    /// Encodes text that holds no special tokens: digits one by one, GPT-2 split in between.
    pub(crate) fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut run_start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                if run_start < i {
                    self.encode_run(&text[run_start..i], out)?;
                }
                let end = i + c.len_utf8();
                self.merge(&text.as_bytes()[i..end], out);
                run_start = end;
            }
        }
        if run_start < text.len() {
            self.encode_run(&text[run_start..], out)?;
        }
        Ok(())
    }

    fn encode_run(&self, run: &str, out: &mut Vec<u32>) -> Result<()> {
        self.split.for_each(run, |piece| self.merge(piece.as_bytes(), out))
    }

    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if self.any_missing && piece.iter().any(|&b| self.byte_id[b as usize] == u32::MAX) {
            let kept: Vec<u8> =
                piece.iter().copied().filter(|&b| self.byte_id[b as usize] != u32::MAX).collect();
            if !kept.is_empty() {
                bpe::merge(self, &kept, out);
            }
        } else {
            bpe::merge(self, piece, out);
        }
    }
}
