//! The tiktoken kind: Llama 3's `tokenizer.model`, read directly.
//!
//! File format (tiktoken `load_tiktoken_bpe`, llama-models `load_bpe_file`): one
//! `BASE64_TOKEN RANK` pair per line; the rank is also the token id. Encoding is tiktoken's
//! `CoreBPE::encode_ordinary` (openai/tiktoken `src/lib.rs`): split the text with the
//! pre-tokenizer regex, emit a piece's rank directly when the whole piece is a token, otherwise
//! byte-pair merge it by rank ([`super::bpe`]). The split runs on [`super::split`].
//!
//! Why our own rather than `tokenizers`: the rank file is not a `tokenizer.json`; converting it
//! (as transformers' `TikTokenConverter` does) costs about a second and 100+ MB at every load,
//! while parsing ranks takes milliseconds. The tests compare this code with tiktoken itself and
//! with `tokenizers` running the converted file.

use base64::Engine as _;
use rustc_hash::FxHashMap;

use super::bpe::{self, PairRank, Part};
use super::split::Splitter;
use super::TokenTable;
use crate::{Error, Result};

/// A parsed tiktoken BPE.
pub(crate) struct TiktokenModel {
    ranks: FxHashMap<Box<[u8]>, u32>,
    byte_rank: [u32; 256],
    split: Splitter,
}

impl PairRank for TiktokenModel {
    #[inline]
    fn byte_id(&self, b: u8) -> u32 {
        self.byte_rank[b as usize]
    }

    #[inline]
    fn pair(&self, piece: &[u8], left: Part, right: Part) -> Option<(u32, u32)> {
        let r = *self.ranks.get(&piece[left.start as usize..right.end as usize])?;
        Some((r, r))
    }
}

impl TiktokenModel {
    /// Parses a rank file. `what` names it in errors. Returns the model and the id → bytes table.
    pub(crate) fn parse(bytes: &[u8], pattern: &str, what: &str) -> Result<(TiktokenModel, TokenTable)> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::format(what, format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
        let engine = base64::engine::general_purpose::STANDARD;
        let mut ranks: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        let mut by_rank: Vec<Option<Box<[u8]>>> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if line.trim().is_empty() {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let (Some(tok), Some(rank), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(Error::format(
                    what,
                    format!("line {line_no}: expected `BASE64_TOKEN RANK`, found `{}`", clip(line)),
                ));
            };
            let token = engine.decode(tok).map_err(|e| {
                Error::format(what, format!("line {line_no}: token `{}` is not base64: {e}", clip(tok)))
            })?;
            if token.is_empty() {
                return Err(Error::format(what, format!("line {line_no}: empty token")));
            }
            let rank: u32 = rank.parse().ok().filter(|&r| r < 1 << 24).ok_or_else(|| {
                Error::format(
                    what,
                    format!("line {line_no}: rank `{}` is not an integer below 2^24", clip(rank)),
                )
            })?;
            let token: Box<[u8]> = token.into();
            if let Some(old) = ranks.insert(token.clone(), rank) {
                return Err(Error::format(
                    what,
                    format!("line {line_no}: token `{tok}` appears twice (ranks {old} and {rank})"),
                ));
            }
            let r = rank as usize;
            if by_rank.len() <= r {
                by_rank.resize(r + 1, None);
            }
            if by_rank[r].is_some() {
                return Err(Error::format(
                    what,
                    format!("line {line_no}: rank {rank} is given to two tokens"),
                ));
            }
            by_rank[r] = Some(token);
        }
        if ranks.is_empty() {
            return Err(Error::format(what, "no tokens (an empty rank file)"));
        }
        if let Some(missing) = by_rank.iter().position(Option::is_none) {
            return Err(Error::format(
                what,
                format!(
                    "ranks are not dense: rank {missing} is missing below the largest rank {}",
                    by_rank.len() - 1
                ),
            ));
        }
        let mut byte_rank = [0u32; 256];
        for b in 0..=255u8 {
            byte_rank[b as usize] = *ranks.get(&[b][..]).ok_or_else(|| {
                Error::format(what, format!("byte 0x{b:02x} has no rank; every single byte must be a token"))
            })?;
        }
        let mut table = TokenTable::with_capacity(by_rank.len(), ranks.keys().map(|k| k.len()).sum());
        for token in by_rank.iter().flatten() {
            table.push(Some(token));
        }
        let split = Splitter::new(pattern, "tokenizer.pattern")?;
        Ok((TiktokenModel { ranks, byte_rank, split }, table))
    }

    /// Encodes text that holds no special tokens.
    pub(crate) fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.split.for_each(text, |piece| {
            let piece = piece.as_bytes();
            match self.ranks.get(piece) {
                Some(&r) => out.push(r),
                None => bpe::merge(self, piece, out),
            }
        })
    }
}

/// At most 40 characters of `s`, for error messages.
pub(crate) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
