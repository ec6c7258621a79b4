//! Special and added tokens: finding them in text, and looking them up by text or id.
//!
//! Matching is leftmost, then longest (as `tokenizers`' `AddedVocabulary`, an Aho-Corasick
//! leftmost-longest automaton; tiktoken's special regex is leftmost-first, which gives the same
//! result for the Llama 3 set, where no special token is a prefix of another). The text between
//! two matches is handed to the model's ordinary encoder, so a special token never merges with
//! its neighbours (tiktoken's `encode` with `allowed_special`, llama.cpp's
//! `tokenizer_st_partition`).

use rustc_hash::{FxHashMap, FxHashSet};

use crate::{Error, Result};

/// A set of special tokens.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpecialTokens {
    by_text: FxHashMap<Box<str>, u32>,
    by_id: FxHashMap<u32, Box<str>>,
    /// For each first byte, the indices into `texts` that start with it, longest first.
    by_first: Vec<Vec<u32>>,
    texts: Vec<(Box<str>, u32)>,
    /// Ids that are "special" (skipped by `decode_text`): control tokens, not user-defined ones.
    control: FxHashSet<u32>,
}

impl SpecialTokens {
    /// Builds the set from `(text, id, is_control)`; a later entry with the same text wins
    /// (so the model config overrides what the tokenizer file says).
    pub(crate) fn new(tokens: impl IntoIterator<Item = (String, u32, bool)>) -> Result<SpecialTokens> {
        let mut by_text: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut control = FxHashSet::default();
        for (text, id, is_control) in tokens {
            if text.is_empty() {
                return Err(Error::invalid("special tokens", format!("token id {id} has empty text")));
            }
            if let Some(old) = by_text.insert(text.into(), id) {
                control.remove(&old);
            }
            if is_control {
                control.insert(id);
            }
        }
        let mut by_id: FxHashMap<u32, Box<str>> = FxHashMap::default();
        for (text, &id) in &by_text {
            // Two texts for one id: keep the first in text order, for a stable decode.
            match by_id.get(&id) {
                Some(existing) if existing.as_ref() <= text.as_ref() => {}
                _ => {
                    by_id.insert(id, text.clone());
                }
            }
        }
        let mut texts: Vec<(Box<str>, u32)> = by_text.iter().map(|(t, &id)| (t.clone(), id)).collect();
        texts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut by_first = vec![Vec::new(); 256];
        for (i, (t, _)) in texts.iter().enumerate() {
            by_first[t.as_bytes()[0] as usize].push(i as u32);
        }
        Ok(SpecialTokens { by_text, by_id, by_first, texts, control })
    }

    /// The id of the special token spelled `text`.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    /// The text of special token `id`.
    pub(crate) fn text(&self, id: u32) -> Option<&str> {
        self.by_id.get(&id).map(|t| t.as_ref())
    }

    /// Whether `id` is a control token (skipped when decoding text for display).
    pub(crate) fn is_control(&self, id: u32) -> bool {
        self.control.contains(&id)
    }

    /// All `(text, id)`, longest text first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.texts.iter().map(|(t, id)| (t.as_ref(), *id))
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The first special token in `text[from..]`: `(start, end, id)` in bytes.
    pub(crate) fn find(&self, text: &str, from: usize) -> Option<(usize, usize, u32)> {
        if self.texts.is_empty() {
            return None;
        }
        let bytes = text.as_bytes();
        for (pos, &b) in bytes.iter().enumerate().skip(from) {
            let candidates = &self.by_first[b as usize];
            for &i in candidates {
                let (t, id) = &self.texts[i as usize];
                if bytes[pos..].starts_with(t.as_bytes()) {
                    return Some((pos, pos + t.len(), *id));
                }
            }
        }
        None
    }

    /// Splits `text` into ordinary runs and special tokens, calling `each` in order. Ordinary
    /// runs are never empty.
    pub(crate) fn split<E>(
        &self,
        text: &str,
        mut each: impl FnMut(Piece<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut at = 0;
        while let Some((start, end, id)) = self.find(text, at) {
            if start > at {
                each(Piece::Text(&text[at..start]))?;
            }
            each(Piece::Special(id))?;
            at = end;
        }
        if at < text.len() {
            each(Piece::Text(&text[at..]))?;
        }
        Ok(())
    }
}

/// A part of a text split at special tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Special(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftmost_longest() {
        let s = SpecialTokens::new([
            ("<a>".to_string(), 10, true),
            ("<a>b".to_string(), 11, true),
            ("<mask>".to_string(), 12, false),
        ])
        .unwrap();
        let mut got = Vec::new();
        s.split::<()>("x<a>b<a><mask>y", |p| {
            got.push(match p {
                Piece::Text(t) => t.to_string(),
                Piece::Special(id) => id.to_string(),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(got, ["x", "11", "10", "12", "y"]);
        assert!(s.is_control(10) && !s.is_control(12));
        assert_eq!(s.text(11), Some("<a>b"));
        assert_eq!(s.id("<mask>"), Some(12));
    }
}
