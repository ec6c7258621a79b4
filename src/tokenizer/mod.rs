//! Tokenizers: text ↔ token ids for the decoder, for every tokenizer kind a model package can
//! hold ([`TokenizerKind`]), plus chat templates ([`chat`]) and a streaming detokenizer
//! ([`StreamDecoder`]).
//!
//! | kind | file | reference it matches (tests) | engine |
//! |---|---|---|---|
//! | `tiktoken` | Llama 3 `tokenizer.model` | tiktoken 0.9; `tokenizers` on the converted file | ours (`tiktoken.rs`) |
//! | `gguf` | GGUF `tokenizer.ggml.*` as JSON | `tokenizers` with SmolLM2's layout | ours ([`gguf`]) |
//! | `hf-json` | `tokenizer.json` | itself | the `tokenizers` crate (`hf.rs`) |
//! | `bytes` | magic string | — | id `b` = byte `b` (`bytes.rs`) |
//!
//! We use `tokenizers` where a `tokenizer.json` exists and wrote our own where the file is
//! not one: a tiktoken rank file and GGUF metadata would otherwise need a conversion at every
//! load (about a second and 100+ MB for Llama 3), and the BPE loop itself is small (tiktoken's
//! algorithm, `bpe.rs`). Ours is also 10-15× faster on report text: the split patterns'
//! look-ahead is emulated on the `regex` crate's automaton instead of running a backtracking
//! engine (`split.rs`, checked against fancy-regex).
//!
//! **Special tokens.** Every kind recognises, in the text, the special tokens of the model
//! config (`TokenizerConfig::special_tokens`: Llama 3's 256 and the added `<im_patch>`,
//! `<mask>`, `<pos>`) and those its file marks (GGUF control / user-defined tokens,
//! `tokenizer.json` added tokens), and maps each to its id without merging it with its
//! neighbours. [`EncodeOptions::allow_special`] = `false` encodes them as plain text instead
//! (for untrusted input).
//!
//! **Decoding** concatenates each token's bytes (special tokens as their text) and converts
//! them to UTF-8 with `String::from_utf8_lossy`: an invalid or incomplete sequence (for example
//! output cut in the middle of an emoji) becomes U+FFFD. [`StreamDecoder`] does the same one
//! token at a time.
//!
//! Nothing here panics on input: bad files, unknown ids and regex failures are errors.

mod bpe;
mod byte_level;
mod bytes;
pub mod chat;
pub mod convert;
pub mod gguf;
mod hf;
mod special;
mod split;
mod stream;
mod tiktoken;

use crate::io::gguf::GgufTokenizer;
use crate::model::config::{
    added_tokens, llama3_special_tokens, ModelConfig, SpecialToken, TokenizerKind, LLAMA3_PATTERN,
};
use crate::{Error, Result};

pub use chat::ChatTemplate;
pub use gguf::GgufTokenizerJson;
pub use stream::StreamDecoder;

use gguf::{GgufModel, GgufSpecial};
use hf::HfModel;
use special::{Piece, SpecialTokens};
use tiktoken::TiktokenModel;

/// Id → bytes of every token (model tokens and special tokens), in one buffer.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenTable {
    data: Vec<u8>,
    /// `(start, len)` into `data`; `len == u32::MAX` marks an id that is no token.
    spans: Vec<(u32, u32)>,
}

impl TokenTable {
    pub(crate) fn with_capacity(tokens: usize, bytes: usize) -> TokenTable {
        TokenTable { data: Vec::with_capacity(bytes), spans: Vec::with_capacity(tokens) }
    }

    /// Appends the next id.
    pub(crate) fn push(&mut self, bytes: Option<&[u8]>) {
        let span = match bytes {
            Some(b) => (self.data.len() as u32, b.len() as u32),
            None => (0, u32::MAX),
        };
        if let Some(b) = bytes {
            self.data.extend_from_slice(b);
        }
        self.spans.push(span);
    }

    /// Sets id `id` (growing the table with holes).
    pub(crate) fn set(&mut self, id: u32, bytes: &[u8]) {
        while self.spans.len() <= id as usize {
            self.spans.push((0, u32::MAX));
        }
        self.spans[id as usize] = (self.data.len() as u32, bytes.len() as u32);
        self.data.extend_from_slice(bytes);
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&[u8]> {
        let &(start, len) = self.spans.get(id as usize)?;
        if len == u32::MAX {
            return None;
        }
        self.data.get(start as usize..start as usize + len as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }
}

enum Model {
    Bytes,
    Tiktoken(TiktokenModel),
    Gguf(GgufModel),
    Hf(Box<HfModel>),
}

/// Options of [`Tokenizer::encode_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Prepend the BOS token.
    pub add_bos: bool,
    /// Append the EOS token.
    pub add_eos: bool,
    /// Recognise the special tokens in the text (default `true`); `false` encodes their text
    /// as ordinary text.
    pub allow_special: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { add_bos: false, add_eos: false, allow_special: true }
    }
}

/// Settings that the tokenizer bytes may not carry (from the model config, or given).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenizerOptions {
    /// Pre-tokenizer split regex (required by `tiktoken`).
    pub pattern: Option<String>,
    /// Special and added tokens; override what the file says for the same text.
    pub special_tokens: Vec<SpecialToken>,
    /// BOS id; `None`: the file's (GGUF), else none.
    pub bos: Option<u32>,
    /// Stop ids (the first is the EOS); empty: the file's (GGUF EOS and EOT), else none.
    pub stops: Vec<u32>,
}

/// A tokenizer of any kind. Immutable and `Send + Sync`: share one per model.
pub struct Tokenizer {
    kind: TokenizerKind,
    model: Model,
    table: TokenTable,
    /// Every special token (lookup by text or id, control flags).
    specials: SpecialTokens,
    /// The special tokens this code splits out of the text (for `hf-json`: those the file
    /// does not handle itself).
    split: SpecialTokens,
    bos: Option<u32>,
    stops: Vec<u32>,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.specials.len())
            .field("bos", &self.bos)
            .field("stops", &self.stops)
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer of a model package: `config.tokenizer` (kind, pattern, special tokens)
    /// and `config.decoder` (BOS, stop ids) applied to the package's tokenizer bytes.
    pub fn from_config(config: &ModelConfig, bytes: &[u8]) -> Result<Tokenizer> {
        let options = TokenizerOptions {
            pattern: config.tokenizer.pattern.clone(),
            special_tokens: config.tokenizer.special_tokens.clone(),
            bos: Some(config.decoder.bos_token_id),
            stops: config.decoder.eos_token_ids.clone(),
        };
        Tokenizer::new(config.tokenizer.kind, bytes, &options)
    }

    /// The tokenizer of a loaded package.
    pub fn from_package(model: &crate::io::package::Model<'_>) -> Result<Tokenizer> {
        Tokenizer::from_config(model.config(), model.tokenizer_bytes())
    }

    /// Llama 3 from its `tokenizer.model` bytes: the Llama 3 split pattern, the 256 special
    /// tokens of llama-models 0.3.0, the added `<im_patch>`, `<mask>`, `<pos>` at 128256..,
    /// BOS 128000, stops 128001 (EOS), 128008, 128009.
    pub fn llama3(rank_file: &[u8]) -> Result<Tokenizer> {
        let mut special_tokens = llama3_special_tokens(128_000);
        special_tokens.extend(added_tokens(128_256));
        let options = TokenizerOptions {
            pattern: Some(LLAMA3_PATTERN.to_string()),
            special_tokens,
            bos: Some(128_000),
            stops: vec![128_001, 128_008, 128_009],
        };
        Tokenizer::new(TokenizerKind::Tiktoken, rank_file, &options)
    }

    /// A `gguf`-kind tokenizer straight from a GGUF file's metadata (BOS, EOS and EOT from it).
    pub fn from_gguf(t: &GgufTokenizer) -> Result<Tokenizer> {
        Tokenizer::new(
            TokenizerKind::Gguf,
            &GgufTokenizerJson::from(t).to_bytes(),
            &TokenizerOptions::default(),
        )
    }

    /// A tokenizer of `kind` from its bytes and `options`.
    pub fn new(kind: TokenizerKind, bytes: &[u8], options: &TokenizerOptions) -> Result<Tokenizer> {
        let mut bos = options.bos;
        let mut stops = options.stops.clone();
        let mut chat = None;
        // The model, its table, and the special tokens the file itself declares.
        let (model, mut table, file_specials): (Model, TokenTable, Vec<GgufSpecial>) = match kind {
            TokenizerKind::Bytes => {
                let table = bytes::parse(bytes)?;
                (Model::Bytes, table, Vec::new())
            }
            TokenizerKind::Tiktoken => {
                let pattern = options.pattern.as_deref().filter(|p| !p.is_empty()).ok_or_else(|| {
                    Error::invalid("tokenizer.pattern", "a tiktoken tokenizer needs a split pattern")
                })?;
                let (m, table) = TiktokenModel::parse(bytes, pattern, "tiktoken rank file")?;
                (Model::Tiktoken(m), table, Vec::new())
            }
            TokenizerKind::Gguf => {
                let j = GgufTokenizerJson::from_bytes(bytes)?;
                let (m, table, specials) = GgufModel::new(&j)?;
                if bos.is_none() {
                    bos = j.bos_token_id;
                }
                if stops.is_empty() {
                    stops.extend(j.eos_token_id);
                    stops.extend(j.eot_token_id.filter(|t| Some(*t) != j.eos_token_id));
                }
                chat = j.chat_template.as_deref().and_then(ChatTemplate::from_jinja);
                (Model::Gguf(m), table, specials)
            }
            TokenizerKind::HfJson => {
                let (m, table, specials) = HfModel::new(bytes)?;
                (Model::Hf(Box::new(m)), table, specials)
            }
        };
        let file_texts: rustc_hash::FxHashSet<&str> = file_specials.iter().map(|s| s.0.as_str()).collect();
        for s in &options.special_tokens {
            if s.text.is_empty() {
                return Err(Error::invalid("special tokens", format!("id {} has empty text", s.id)));
            }
            if let Some(existing) = table.get(s.id) {
                let same = existing == s.text.as_bytes();
                let file_special = file_specials.iter().any(|f| f.1 == s.id);
                if !same && !file_special && kind != TokenizerKind::Bytes {
                    return Err(Error::invalid(
                        "special tokens",
                        format!(
                            "`{}` = {} collides with the {} token {} (`{}`)",
                            s.text,
                            s.id,
                            kind.name(),
                            s.id,
                            String::from_utf8_lossy(existing)
                        ),
                    ));
                }
                if kind == TokenizerKind::Bytes && (s.id as usize) < 256 {
                    return Err(Error::invalid(
                        "special tokens",
                        format!("`{}` = {} collides with the byte tokens 0..=255", s.text, s.id),
                    ));
                }
            }
            table.set(s.id, s.text.as_bytes());
        }
        let config_specials = options.special_tokens.iter().map(|s| (s.text.clone(), s.id, true));
        let specials = SpecialTokens::new(file_specials.iter().cloned().chain(config_specials.clone()))?;
        let split = match kind {
            // `tokenizers` handles the file's own added tokens (with their flags).
            TokenizerKind::HfJson => {
                SpecialTokens::new(config_specials.filter(|s| !file_texts.contains(s.0.as_str())))?
            }
            _ => specials.clone(),
        };
        let n = table.len();
        for (field, id) in bos.iter().map(|&b| ("bos", b)).chain(stops.iter().map(|&s| ("stop", s))) {
            if table.get(id).is_none() {
                return Err(Error::invalid(
                    field,
                    format!("token id {id} is not a token of this {} tokenizer ({n} ids)", kind.name()),
                ));
            }
        }
        let mut tok = Tokenizer { kind, model, table, specials, split, bos, stops, chat };
        if tok.chat.is_none() {
            tok.chat = ChatTemplate::detect(&tok);
        }
        Ok(tok)
    }

    /// The kind of tokenizer file this was built from.
    pub fn kind(&self) -> TokenizerKind {
        self.kind
    }

    /// Number of ids, including special tokens (one past the largest id).
    pub fn vocab_size(&self) -> usize {
        self.table.len()
    }

    /// The BOS id, if any.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS id (the first stop id), if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.stops.first().copied()
    }

    /// The ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stops
    }

    /// Whether `id` ends generation.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stops.contains(&id)
    }

    /// The id of a special or added token by its text (`<|eot_id|>`, `<im_patch>`).
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials.id(text)
    }

    /// The text of a special or added token.
    pub fn special_text(&self, id: u32) -> Option<&str> {
        self.specials.text(id)
    }

    /// Whether `id` is a control token (BOS, EOS, headers...), which
    /// [`decode_text`](Self::decode_text) skips. Added tokens such as `<im_patch>` count as
    /// control tokens when they come from the model config.
    pub fn is_control(&self, id: u32) -> bool {
        self.specials.is_control(id)
    }

    /// All special and added tokens, `(text, id)`.
    pub fn special_tokens(&self) -> impl Iterator<Item = (&str, u32)> {
        self.specials.iter()
    }

    /// The chat template for this tokenizer, if one is known (see [`ChatTemplate`]).
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        self.chat
    }

    /// Encodes `text`, recognising the configured special tokens; prepends BOS if `add_bos`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_with(text, &EncodeOptions { add_bos, ..EncodeOptions::default() })
    }

    /// Encodes `text` with `options`.
    pub fn encode_with(&self, text: &str, options: &EncodeOptions) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, options, &mut out)?;
        Ok(out)
    }

    /// Encodes `text` with `options`, appending to `out`.
    pub fn encode_into(&self, text: &str, options: &EncodeOptions, out: &mut Vec<u32>) -> Result<()> {
        if options.add_bos {
            out.push(self.bos.ok_or_else(|| Error::invalid("add_bos", "this tokenizer has no BOS token"))?);
        }
        if options.allow_special {
            self.split.split(text, |piece| match piece {
                Piece::Text(t) => self.encode_ordinary(t, true, out),
                Piece::Special(id) => {
                    out.push(id);
                    Ok(())
                }
            })?;
        } else {
            self.encode_ordinary(text, false, out)?;
        }
        if options.add_eos {
            out.push(
                self.eos_id().ok_or_else(|| Error::invalid("add_eos", "this tokenizer has no EOS token"))?,
            );
        }
        Ok(())
    }

    /// Text without special tokens (for `hf-json`, `allow_special` still controls the file's
    /// own added tokens).
    fn encode_ordinary(&self, text: &str, allow_special: bool, out: &mut Vec<u32>) -> Result<()> {
        match &self.model {
            Model::Bytes => {
                out.extend(text.bytes().map(u32::from));
                Ok(())
            }
            Model::Tiktoken(m) => m.encode_ordinary(text, out),
            Model::Gguf(m) => m.encode_ordinary(text, out),
            Model::Hf(m) => m.encode(text, allow_special, out),
        }
    }

    /// The bytes of token `id` (a special token's text for special tokens).
    pub fn token_to_bytes(&self, id: u32) -> Result<&[u8]> {
        self.table.get(id).ok_or_else(|| self.unknown_id(id))
    }

    fn unknown_id(&self, id: u32) -> Error {
        Error::invalid(
            "token id",
            format!("{id} is not a token of this {} tokenizer ({} ids)", self.kind.name(), self.table.len()),
        )
    }

    /// Decodes ids to text, special tokens included as their text; invalid UTF-8 (e.g. an
    /// emoji cut at the end) becomes U+FFFD. Unknown ids are an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, false)
    }

    /// Like [`decode`](Self::decode) but skips control tokens (HF `skip_special_tokens`).
    pub fn decode_text(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, true)
    }

    fn decode_impl(&self, ids: &[u32], skip_control: bool) -> Result<String> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let b = self.token_to_bytes(id)?;
            if !(skip_control && self.specials.is_control(id)) {
                bytes.extend_from_slice(b);
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A streaming decoder that emits whole characters as tokens arrive.
    pub fn stream_decoder(&self, skip_control: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_control)
    }
}
