//! Streaming detokenization: one token in, whole UTF-8 characters out.
//!
//! Byte-level tokens split multi-byte characters (an emoji is often two or three tokens), so a
//! token's bytes cannot be printed on their own. [`StreamDecoder`] keeps the incomplete tail
//! (at most 3 bytes) of the last token and completes it with the next one. Invalid sequences
//! become U+FFFD exactly as `String::from_utf8_lossy` would replace them in the whole output
//! (one U+FFFD per maximal invalid subpart), so the concatenated stream equals
//! [`Tokenizer::decode`]; [`StreamDecoder::finish`] flushes an incomplete tail as U+FFFD.
//!
//! No allocation per token: the state is a 4-byte buffer, and text is appended to the
//! caller's `String` (which allocates only if its capacity is exceeded; reserve it up front).

use super::Tokenizer;
use crate::Result;

/// Incremental detokenizer over one [`Tokenizer`]; see the module doc.
#[derive(Clone, Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_control: bool,
    pending: [u8; 4],
    n_pending: usize,
}

const REPLACEMENT: char = '\u{FFFD}';

impl<'a> StreamDecoder<'a> {
    /// A decoder over `tokenizer`; `skip_control` drops control tokens (BOS, EOS, headers).
    pub fn new(tokenizer: &'a Tokenizer, skip_control: bool) -> StreamDecoder<'a> {
        StreamDecoder { tokenizer, skip_control, pending: [0; 4], n_pending: 0 }
    }

    /// Appends the characters completed by token `id` to `out`. Unknown ids are an error (and
    /// leave the state unchanged).
    pub fn push(&mut self, id: u32, out: &mut String) -> Result<()> {
        let bytes = self.tokenizer.token_to_bytes(id)?;
        if self.skip_control && self.tokenizer.is_control(id) {
            return Ok(());
        }
        self.push_bytes(bytes, out);
        Ok(())
    }

    /// [`push`](Self::push), except that an id the tokenizer has no entry for appends U+FFFD
    /// (after flushing a pending partial character as U+FFFD) instead of failing. Generation
    /// uses it: a model's vocabulary may be padded beyond its tokenizer, and a sampled padding
    /// id must not abort a report.
    pub fn push_lossy(&mut self, id: u32, out: &mut String) {
        if self.push(id, out).is_err() {
            let mut buf = [0u8; 4];
            self.push_bytes(REPLACEMENT.encode_utf8(&mut buf).as_bytes(), out);
        }
    }

    /// Appends the characters completed by `bytes`.
    pub fn push_bytes(&mut self, mut bytes: &[u8], out: &mut String) {
        // First complete (or reject) the pending partial character.
        while self.n_pending > 0 && !bytes.is_empty() {
            let n = self.n_pending;
            let take = bytes.len().min(4 - n);
            let mut tmp = [0u8; 8];
            tmp[..n].copy_from_slice(&self.pending[..n]);
            tmp[n..n + take].copy_from_slice(&bytes[..take]);
            match std::str::from_utf8(&tmp[..n + take]) {
                Ok(_) => {
                    // The pending character completed and everything taken after it is valid.
                    push_str_bytes(&tmp[..n + take], out);
                    bytes = &bytes[take..];
                    self.n_pending = 0;
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // The pending prefix plus some new bytes form one whole character.
                    let len = e.valid_up_to();
                    push_str_bytes(&tmp[..len], out);
                    bytes = &bytes[len - n..];
                    self.n_pending = 0;
                }
                Err(e) => match e.error_len() {
                    Some(bad) => {
                        // The pending bytes (and maybe some new ones) are an invalid sequence.
                        out.push(REPLACEMENT);
                        bytes = &bytes[bad.saturating_sub(n)..];
                        self.n_pending = 0;
                    }
                    None => {
                        // Still incomplete: keep everything.
                        self.pending[..n + take].copy_from_slice(&tmp[..n + take]);
                        self.n_pending = n + take;
                        bytes = &bytes[take..];
                    }
                },
            }
        }
        // Then the rest, chunk by chunk.
        while !bytes.is_empty() {
            match std::str::from_utf8(bytes) {
                Ok(s) => {
                    out.push_str(s);
                    return;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    push_str_bytes(&bytes[..good], out);
                    match e.error_len() {
                        Some(bad) => {
                            out.push(REPLACEMENT);
                            bytes = &bytes[good + bad..];
                        }
                        None => {
                            let tail = &bytes[good..];
                            self.pending[..tail.len()].copy_from_slice(tail);
                            self.n_pending = tail.len();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if self.n_pending > 0 {
            out.push(REPLACEMENT);
            self.n_pending = 0;
        }
    }

    /// Bytes of an incomplete character waiting for the next token (0..=3).
    pub fn pending_len(&self) -> usize {
        self.n_pending
    }

    /// Forgets any pending bytes (start of a new sequence).
    pub fn reset(&mut self) {
        self.n_pending = 0;
    }
}

/// Appends bytes already known to be valid UTF-8.
fn push_str_bytes(valid: &[u8], out: &mut String) {
    if let Ok(s) = std::str::from_utf8(valid) {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{SpecialToken, TokenizerKind, BYTES_TOKENIZER_MAGIC};
    use crate::tokenizer::TokenizerOptions;

    fn bytes_tokenizer() -> Tokenizer {
        let options = TokenizerOptions {
            special_tokens: vec![SpecialToken { id: 256, text: "<s>".into() }],
            bos: Some(256),
            ..TokenizerOptions::default()
        };
        Tokenizer::new(TokenizerKind::Bytes, BYTES_TOKENIZER_MAGIC, &options).unwrap()
    }

    /// Every way of cutting random byte strings into tokens streams to the lossy decoding.
    #[test]
    fn stream_equals_lossy() {
        let tok = bytes_tokenizer();
        let alphabet: &[u8] =
            &[b'a', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0x80, 0xED, 0xA0];
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (rnd() % 12) as usize;
            let bytes: Vec<u8> =
                (0..len).map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize]).collect();
            let expected = String::from_utf8_lossy(&bytes).into_owned();
            // Random chunking into "tokens".
            let mut dec = StreamDecoder::new(&tok, false);
            let mut out = String::new();
            let mut i = 0;
            while i < bytes.len() {
                let step = 1 + (rnd() % 4) as usize;
                let end = (i + step).min(bytes.len());
                dec.push_bytes(&bytes[i..end], &mut out);
                i = end;
            }
            dec.finish(&mut out);
            assert_eq!(out, expected, "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn emoji_split_over_tokens() {
        let tok = bytes_tokenizer();
        let mut dec = tok.stream_decoder(true);
        let mut out = String::with_capacity(64);
        dec.push(256, &mut out).unwrap();
        for (i, &b) in "é😀".as_bytes().iter().enumerate() {
            dec.push(b as u32, &mut out).unwrap();
            // Nothing partial is ever emitted.
            assert!(!out.contains('\u{FFFD}'), "after byte {i}: {out:?}");
        }
        assert_eq!(out, "é😀");
        dec.push(0xF0, &mut out).unwrap();
        assert_eq!(dec.pending_len(), 1);
        dec.finish(&mut out);
        assert_eq!(out, "é😀\u{FFFD}");
        assert!(dec.push(9999, &mut out).is_err());
        // The lossy push renders an unknown id as U+FFFD, flushing a pending partial first.
        let mut out = String::new();
        dec.push(0xC3, &mut out).unwrap();
        dec.push_lossy(9999, &mut out);
        dec.push_lossy(b'a' as u32, &mut out);
        assert_eq!(out, "\u{FFFD}\u{FFFD}a");
    }
}
