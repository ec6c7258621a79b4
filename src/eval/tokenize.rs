//! The tokenizations the metrics are defined on, each a character-exact port of its reference.
//!
//! * [`tokenize_13a`]: sacrebleu's default BLEU tokenizer `13a` (`sacrebleu/tokenizers/
//!   tokenizer_13a.py` + `tokenizer_re.py`, the mteval-v13a rules), including the `rstrip()` that
//!   `sacrebleu.BLEU` applies to every segment first. BLEU and METEOR use these tokens.
//! * [`tokenize_rouge`]: rouge-score's `tokenize.tokenize` (`rouge_score/tokenize.py`): lowercase,
//!   every run of characters other than `[a-z0-9]` becomes a separator, optional Porter stemming
//!   of tokens longer than 3 characters.
//!
//! Python semantics are kept where they differ from Rust's defaults: "whitespace" is Python's
//! `str.isspace` set ([`is_py_space`], which adds U+001C..U+001F to Rust's `char::is_whitespace`),
//! lowercasing is Python's `str.lower` (full Unicode mapping with the final-sigma rule, which is
//! what `str::to_lowercase` does), and lengths count code points.

use super::porter::StemCache;

/// Python's `str.isspace()` (and so the separators of `str.split()` / `str.rstrip()`).
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\u{0B}'
            | '\u{0C}'
            | '\r'
            | '\u{1C}'..='\u{1F}'
            | ' '
            | '\u{85}'
            | '\u{A0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202F}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// A character type the 13a rules run on: bytes for ASCII text (the common case, 4x less
/// memory traffic), `char` otherwise. The rules only test ASCII classes, so both give the same
/// result.
trait Unit: Copy {
    const SPACE: Self;
    fn ascii(self) -> Option<u8>;
    fn push_to(self, out: &mut String);
    fn is_space(self) -> bool;
}

impl Unit for u8 {
    const SPACE: u8 = b' ';
    fn ascii(self) -> Option<u8> {
        Some(self)
    }
    fn push_to(self, out: &mut String) {
        out.push(self as char);
    }
    fn is_space(self) -> bool {
        is_py_space(self as char)
    }
}

impl Unit for char {
    const SPACE: char = ' ';
    fn ascii(self) -> Option<u8> {
        self.is_ascii().then_some(self as u8)
    }
    fn push_to(self, out: &mut String) {
        out.push(self);
    }
    fn is_space(self) -> bool {
        is_py_space(self)
    }
}

/// The characters `13a` pads with spaces: `[\{-\~\[-\` -\&\(-\+\:-\@\/]`, i.e. all ASCII
/// punctuation and the space except `'`, `,`, `-` and `.`.
fn is_13a_symbol<U: Unit>(c: U) -> bool {
    matches!(c.ascii(), Some(b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/'))
}

fn is_digit<U: Unit>(c: U) -> bool {
    matches!(c.ascii(), Some(b'0'..=b'9'))
}

fn is_dot_comma<U: Unit>(c: U) -> bool {
    matches!(c.ascii(), Some(b'.' | b','))
}

fn is_dash<U: Unit>(c: U) -> bool {
    matches!(c.ascii(), Some(b'-'))
}

/// One `re.sub` pass of a two-character pattern `(A)(B)` over `src` into `out`: scans left to
/// right and replaces non-overlapping matches, exactly like Python's `re.sub`. A match needs
/// `trigger` to hold for B (`on_second`) or for A; the spans in between, where no match can
/// start, are copied whole. `leading_space` picks the replacement: `' A B'` (rule 3) or
/// `'A B '` (rules 2 and 4).
fn sub_pairs<U: Unit>(
    src: &[U],
    out: &mut Vec<U>,
    trigger: impl Fn(U) -> bool,
    on_second: bool,
    matches: impl Fn(U, U) -> bool,
    leading_space: bool,
) {
    out.clear();
    let mut i = 0;
    while i + 1 < src.len() {
        // The first position p >= i where a match could start.
        let from = if on_second { i + 1 } else { i };
        let Some(k) = src[from..].iter().position(|&c| trigger(c)) else { break };
        let p = if on_second { from + k - 1 } else { from + k };
        if p + 1 >= src.len() {
            break;
        }
        out.extend_from_slice(&src[i..p]);
        if matches(src[p], src[p + 1]) {
            if leading_space {
                out.extend([U::SPACE, src[p], U::SPACE, src[p + 1]]);
            } else {
                out.extend([src[p], U::SPACE, src[p + 1], U::SPACE]);
            }
            i = p + 2;
        } else {
            out.push(src[p]);
            i = p + 1;
        }
    }
    out.extend_from_slice(&src[i.min(src.len())..]);
}

/// The regex part of 13a (`TokenizerRegexp`) on `f' {line} '`, then `' '.join(line.split())`.
fn regex_rules<U: Unit>(line: impl Iterator<Item = U>, capacity: usize) -> String {
    // rule 1: ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
    let mut a: Vec<U> = Vec::with_capacity(capacity * 2 + 8);
    for c in std::iter::once(U::SPACE).chain(line).chain(std::iter::once(U::SPACE)) {
        if is_13a_symbol(c) {
            a.extend([U::SPACE, c, U::SPACE]);
        } else {
            a.push(c);
        }
    }
    let mut b: Vec<U> = Vec::with_capacity(a.len() + a.len() / 4);
    // rule 2: ([^0-9])([\.,]) -> '\1 \2 '
    sub_pairs(&a, &mut b, is_dot_comma, true, |x, y| !is_digit(x) && is_dot_comma(y), false);
    // rule 3: ([\.,])([^0-9]) -> ' \1 \2'
    sub_pairs(&b, &mut a, is_dot_comma, false, |x, y| is_dot_comma(x) && !is_digit(y), true);
    // rule 4: ([0-9])(-) -> '\1 \2 '
    sub_pairs(&a, &mut b, is_dash, true, |x, y| is_digit(x) && is_dash(y), false);
    let mut out = String::with_capacity(b.len());
    let mut pending_space = false;
    for &c in &b {
        if c.is_space() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            c.push_to(&mut out);
        }
    }
    out
}

/// sacrebleu's `13a` tokenization of one segment, as the space-joined string sacrebleu computes
/// (`BLEU._preprocess_segment` with the defaults: no lowercasing, `rstrip()`, then `Tokenizer13a`).
pub fn tokenize_13a(text: &str) -> String {
    let mut line = std::borrow::Cow::Borrowed(text.trim_end_matches(is_py_space));
    for (from, to) in [("<skipped>", ""), ("-\n", ""), ("\n", " ")] {
        if line.contains(from) {
            line = line.replace(from, to).into();
        }
    }
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .into();
    }
    if line.is_ascii() {
        regex_rules(line.bytes(), line.len())
    } else {
        regex_rules(line.chars(), line.len())
    }
}

/// The tokens of a [`tokenize_13a`] string (it is joined by single spaces).
pub fn words(tokenized: &str) -> Vec<&str> {
    tokenized.split(' ').filter(|t| !t.is_empty()).collect()
}

/// rouge-score's tokenizer (`rouge_score.tokenize.tokenize`); `stemmer` is `Some` for
/// `use_stemmer=True` (nltk's Porter stemmer, applied to tokens longer than 3 characters).
pub fn tokenize_rouge(text: &str, stemmer: Option<&mut StemCache>) -> Vec<String> {
    // `text.lower()` first: some non-ASCII characters lowercase to ASCII letters (KELVIN SIGN
    // -> k, LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + combining dot).
    let lower = if text.is_ascii() { std::borrow::Cow::Borrowed(text) } else { text.to_lowercase().into() };
    let mut tokens: Vec<String> = Vec::new();
    for run in lower.split(|c: char| !(c.is_ascii_alphanumeric())) {
        if !run.is_empty() {
            tokens.push(run.to_ascii_lowercase());
        }
    }
    if let Some(stemmer) = stemmer {
        for t in tokens.iter_mut() {
            // `len(x) > 3`; tokens are ASCII here, so bytes are code points.
            if t.len() > 3 {
                let s = stemmer.stem(t);
                if s != t.as_str() {
                    *t = s.to_string();
                }
            }
        }
        // rouge-score finally drops tokens that are not `^[a-z0-9]+$`; a stem of an ASCII
        // alphanumeric token is one, except the empty stem, which cannot occur for len > 3.
        tokens.retain(|t| !t.is_empty());
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_13a() {
        assert_eq!(tokenize_13a("The heart is enlarged."), "The heart is enlarged .");
        assert_eq!(tokenize_13a("3.5 cm, 1,000 mL; 5-mm"), "3.5 cm , 1,000 mL ; 5 - mm");
        assert_eq!(tokenize_13a("hyphen-\nated"), "hyphenated");
        assert_eq!(tokenize_13a("a &amp; b"), "a & b");
        assert_eq!(tokenize_13a("  \u{a0}"), "");
    }

    #[test]
    fn rouge_tokens() {
        assert_eq!(tokenize_rouge("The Heart-size, 3.5cm!", None), ["the", "heart", "size", "3", "5cm"]);
        let mut c = StemCache::default();
        assert_eq!(tokenize_rouge("effusions are stable", Some(&mut c)), ["effus", "are", "stabl"]);
    }
}
