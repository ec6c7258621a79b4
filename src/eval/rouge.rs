//! ROUGE-L as the `rouge-score` package computes it (`rouge_score/rouge_scorer.py`, `_score_lcs`):
//! on rouge-score's tokens ([`tokenize_rouge`]: lowercase, `[a-z0-9]+` runs, Porter stems of
//! tokens longer than 3 characters when stemming), with L the length of the longest common
//! subsequence of the token sequences,
//! `P = L / |prediction|`, `R = L / |reference|`, `F = 2PR / (P + R)` (0 when P + R = 0), and
//! P = R = F = 0 when either side has no token. This is `RougeScorer(["rougeL"],
//! use_stemmer=...).score(target=reference, prediction=...)` — sentence-level "rougeL", not the
//! summary-level "rougeLsum". A corpus score is the mean over pairs of P, R and F.
//!
//! The LCS length comes from the bit-parallel algorithm of Allison–Dix / Hyyrö (64 reference
//! positions per machine word), checked against the quadratic table of rouge-score
//! ([`lcs_len_dp`]).

use std::hash::Hash;

use super::hash::FxHashMap;
use super::porter::StemCache;
use super::tokenize::tokenize_rouge;

/// ROUGE-L precision, recall and F-measure of one pair, each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// ROUGE-L of one pair of raw texts.
pub fn rouge_l(reference: &str, prediction: &str, use_stemmer: bool) -> RougeScore {
    let mut cache = StemCache::default();
    let stem = if use_stemmer { Some(&mut cache) } else { None };
    let r = tokenize_rouge(reference, stem);
    let stem = if use_stemmer { Some(&mut cache) } else { None };
    let p = tokenize_rouge(prediction, stem);
    rouge_l_tokens(&r, &p)
}

/// Stems rouge-score tokens as its stemming tokenizer does (tokens longer than 3 characters):
/// `stem_tokens(&t, &c)` equals `tokenize_rouge(text, Some(&mut c))` for `t = tokenize_rouge(text,
/// None)`, once `c.fill(&t)` has seen the tokens (a token it has not seen is kept as is).
pub fn stem_tokens<'a>(tokens: &'a [String], stems: &'a StemCache) -> Vec<&'a str> {
    tokens.iter().map(|t| if t.len() > 3 { stems.get(t).unwrap_or(t) } else { t.as_str() }).collect()
}

/// ROUGE-L of one pair of token sequences (already tokenized as rouge-score does).
pub fn rouge_l_tokens<T: Eq + Hash>(reference: &[T], prediction: &[T]) -> RougeScore {
    if reference.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_len(reference, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / reference.len() as f64;
    // rouge_score.scoring.fmeasure, same operation order.
    let fmeasure =
        if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    RougeScore { precision, recall, fmeasure }
}

/// Length of the longest common subsequence (bit-parallel, O(|a|·|b|/64)).
pub fn lcs_len<T: Eq + Hash>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let words = a.len().div_ceil(64);
    // Match masks: for each distinct token of `a`, the set of its positions in `a`.
    let mut slot: FxHashMap<&T, usize> = FxHashMap::default();
    let mut masks: Vec<u64> = Vec::new();
    for (i, t) in a.iter().enumerate() {
        let next = slot.len();
        let s = *slot.entry(t).or_insert(next);
        if s == next {
            masks.resize(masks.len() + words, 0);
        }
        masks[s * words + i / 64] |= 1u64 << (i % 64);
    }
    // V starts all ones; a zero bit marks a position of `a` used by the LCS so far.
    let mut v = vec![u64::MAX; words];
    for t in b {
        let Some(&s) = slot.get(t) else { continue };
        let m = &masks[s * words..(s + 1) * words];
        let mut carry = 0u64;
        for (vk, &mk) in v.iter_mut().zip(m) {
            let u = *vk & mk;
            let (s1, c1) = vk.overflowing_add(u);
            let (s2, c2) = s1.overflowing_add(carry);
            carry = (c1 || c2) as u64;
            *vk = s2 | (*vk & !u);
        }
    }
    let tail = a.len() % 64;
    let mut zeros = 0usize;
    for (k, &vk) in v.iter().enumerate() {
        let valid = if k + 1 == words && tail != 0 { (1u64 << tail) - 1 } else { u64::MAX };
        zeros += (!vk & valid).count_ones() as usize;
    }
    zeros
}

/// The LCS length from rouge-score's dynamic-programming table (`_lcs_table`): the slow twin of
/// [`lcs_len`], used by the tests.
pub fn lcs_len_dp<T: Eq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { prev[j + 1].max(cur[j]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_parallel_matches_table() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let la = (next() % 200) as usize;
            let lb = (next() % 200) as usize;
            let k = 1 + next() % 6;
            let a: Vec<u64> = (0..la).map(|_| next() % k).collect();
            let b: Vec<u64> = (0..lb).map(|_| next() % k).collect();
            assert_eq!(lcs_len(&a, &b), lcs_len_dp(&a, &b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn scores() {
        let s = rouge_l("the cat sat on the mat", "the cat on the mat", false);
        assert!((s.precision - 1.0).abs() < 1e-12);
        assert!((s.recall - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(rouge_l("", "a", false), RougeScore::default());
    }
}
