//! Pre-tokenizer splitting: the text → pieces step before BPE.
//!
//! The Llama 3 and GPT-2 split patterns end with `\s+(?!\S)|\s+`, and that look-ahead is why
//! tiktoken and `tokenizers` run them with a backtracking engine (fancy-regex, Oniguruma). On
//! report text that engine is about 80% of the encode time. For these two known patterns we
//! run the `regex` crate's automaton on the pattern without the `\s+(?!\S)` branch and
//! restore its effect afterwards ([`Splitter::Fast`]):
//!
//! * with the branch, a whitespace run that is followed by a non-space character gives up its
//!   last character (which then starts the next piece, e.g. `" hello"`); a run of one
//!   character, or a run at the end of the text, is taken whole by `\s+`;
//! * without it, `\s+` takes the whole run, so a whitespace-only match of more than one
//!   character that is not at the end is cut before its last character and matching resumes
//!   there.
//!
//! A whitespace-only match comes from those final branches except, in Llama 3, from
//! `\s*[\r\n]+`, which is tried first and matches whenever the run holds a line break; such
//! matches are left alone (`newline_branch`). Any other pattern runs on fancy-regex
//! ([`Splitter::Fancy`]). A unit test checks both on random text, and the parity tests check
//! the result against tiktoken and `tokenizers`.

use crate::{Error, Result};

/// The Llama 3 pattern without its look-ahead branch.
const LLAMA3_FAST: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+";
/// The GPT-2 pattern without its look-ahead branch.
const GPT2_FAST: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// fancy-regex's default backtrack limit (1e6) is reachable on pathological inputs; this bound
/// keeps the work linear in practice and turns anything beyond it into an error, not a hang.
const BACKTRACK_LIMIT: usize = 50_000_000;

/// A compiled split pattern.
pub(crate) enum Splitter {
    /// A known pattern on the `regex` crate, look-ahead emulated.
    Fast { anchored: regex::Regex, regex: regex::Regex, newline_branch: bool },
    /// Any pattern on fancy-regex.
    Fancy(fancy_regex::Regex),
}

impl Splitter {
    /// Compiles `pattern`, on the fast path when it is the Llama 3 or GPT-2 pattern.
    pub(crate) fn new(pattern: &str, what: &str) -> Result<Splitter> {
        let fast = if pattern == crate::model::config::LLAMA3_PATTERN {
            Some((LLAMA3_FAST, true))
        } else if pattern == super::gguf::GPT2_PATTERN {
            Some((GPT2_FAST, false))
        } else {
            None
        };
        match fast {
            Some((p, newline_branch)) => {
                let compile =
                    |p: &str| regex::Regex::new(p).map_err(|e| Error::Internal(format!("{what}: {e}")));
                let anchored = compile(&format!("^(?:{p})"))?;
                Ok(Splitter::Fast { anchored, regex: compile(p)?, newline_branch })
            }
            None => Splitter::fancy(pattern, what),
        }
    }

    /// Compiles `pattern` on fancy-regex (the reference path).
    pub(crate) fn fancy(pattern: &str, what: &str) -> Result<Splitter> {
        fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
            .map(Splitter::Fancy)
            .map_err(|e| Error::invalid(what, format!("the split pattern does not compile: {e}")))
    }

    /// Calls `each` on every piece of `text`, in order.
    pub(crate) fn for_each(&self, text: &str, mut each: impl FnMut(&str)) -> Result<()> {
        match self {
            Splitter::Fancy(regex) => {
                for m in regex.find_iter(text) {
                    let m = m.map_err(|e| {
                        Error::invalid("text", format!("the pre-tokenizer regex failed on this input: {e}"))
                    })?;
                    each(m.as_str());
                }
            }
            Splitter::Fast { anchored, regex, newline_branch } => {
                let mut at = 0;
                while at < text.len() {
                    // The pieces of these patterns tile the text, so the next one starts where
                    // the last ended: an anchored search (forward only) on the rest finds it.
                    let m = match anchored.find(&text[at..]) {
                        Some(m) => (at + m.start(), at + m.end()),
                        None => match regex.find_at(text, at) {
                            Some(m) => (m.start(), m.end()),
                            None => break,
                        },
                    };
                    let piece = &text[m.0..m.1];
                    let mut end = m.1;
                    if end < text.len() && piece.len() > 1 && piece.chars().all(char::is_whitespace) {
                        let has_newline = piece.bytes().any(|b| b == b'\r' || b == b'\n');
                        if !(*newline_branch && has_newline) {
                            if let Some(last) = piece.chars().next_back() {
                                if last.len_utf8() < piece.len() {
                                    end -= last.len_utf8();
                                }
                            }
                        }
                    }
                    each(&text[m.0..end]);
                    at = end;
                    if end == m.0 {
                        // An empty match (not possible with these patterns): step over a char.
                        at += text[end..].chars().next().map_or(1, char::len_utf8);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LLAMA3_PATTERN;
    use crate::tokenizer::gguf::GPT2_PATTERN;

    fn pieces(s: &Splitter, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        s.for_each(text, |p| out.push(p.to_string())).unwrap();
        out
    }

    /// The emulated look-ahead splits random text exactly as fancy-regex does.
    #[test]
    fn fast_equals_fancy() {
        let alphabet = [
            " ", " ", "  ", "\t", "\n", "\r\n", "\r", "\u{a0}", "\u{3000}", "a", "B", "é", "z", "'s", "'T",
            "'ll", "'", "1", "22", "٣", "½", ".", "!", "?", "-", "日", "本", "😀", "\u{301}", "x", "\u{b}",
        ];
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for pattern in [LLAMA3_PATTERN, GPT2_PATTERN] {
            let fast = Splitter::new(pattern, "test").unwrap();
            assert!(matches!(fast, Splitter::Fast { .. }));
            let slow = Splitter::fancy(pattern, "test").unwrap();
            for _ in 0..4000 {
                let n = (rnd() % 16) as usize;
                let text: String =
                    (0..n).map(|_| alphabet[(rnd() % alphabet.len() as u64) as usize]).collect();
                assert_eq!(pieces(&fast, &text), pieces(&slow, &text), "{text:?}");
            }
        }
    }
}
