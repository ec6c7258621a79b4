//! Corpus BLEU-1..4 on sacrebleu's `13a` tokens, in two variants that differ only in how they
//! treat n-gram orders without a match.
//!
//! * **sacreBLEU** ([`BleuStats::sacrebleu`]): `sacrebleu.metrics.BLEU(max_ngram_order=n)
//!   .corpus_score(hyps, [refs]).score / 100` with every other argument at its default (sacrebleu
//!   2.x: tokenizer `13a`, case-sensitive, `smooth_method="exp"`, `effective_order=False`), i.e.
//!   `BP · exp(mean_k log p_k)` over k = 1..n with the corpus sums of clipped matches and of
//!   hypothesis n-grams; an order with no match gets the mteval "exp" precision
//!   `1 / (2^j · total_k)` (j counts such orders); an order with no hypothesis n-gram at all ends
//!   the loop and its precision stays 0, which makes the score 0. This is what `medregion eval`
//!   prints as BLEU-n.
//! * **nltk** ([`BleuStats::nltk`]): `nltk.translate.bleu_score.corpus_bleu(refs, hyps,
//!   weights=(1/n,)*n)` without smoothing on the same tokens. Two differences: a sentence
//!   contributes `max(1, n-grams)` to the denominator (nltk's `modified_precision` avoids 0), and
//!   an order with no match contributes `log(sys.float_info.min)`, so the score is ~1e-77 when
//!   any order up to n has no match at all (nltk warns); it is 0 when there is no unigram match.
//!
//! Both use one reference per hypothesis, `BP = exp(1 − r/c)` for `c < r` with c and r the corpus
//! lengths in tokens (`BP = 0` for `c = 0`), and the same clipped counts. A corpus is scored by
//! summing per-pair [`BleuStats`] ([`BleuStats::add`]), which is how both references work.

use super::hash::FxHashMap;
use super::tokenize::{tokenize_13a, words};

/// Highest n-gram order.
pub const MAX_ORDER: usize = 4;

/// BLEU's sufficient statistics of one pair or of a corpus (the sum over its pairs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis length in tokens (c).
    pub hyp_len: u64,
    /// Reference length in tokens (r).
    pub ref_len: u64,
    /// Clipped n-gram matches, index k for order k + 1.
    pub correct: [u64; MAX_ORDER],
    /// Hypothesis n-grams (sacrebleu's denominators).
    pub total: [u64; MAX_ORDER],
    /// nltk's denominators: the per-sentence `max(1, n-grams)`, summed.
    pub total_nltk: [u64; MAX_ORDER],
}

/// BLEU-1..4 of a corpus in both variants, each in [0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct BleuScores {
    /// sacreBLEU (13a, exp smoothing); index k is BLEU-(k+1).
    pub sacrebleu: [f64; MAX_ORDER],
    /// nltk `corpus_bleu` without smoothing on 13a tokens.
    pub nltk: [f64; MAX_ORDER],
}

impl BleuStats {
    /// Statistics of one pair of raw texts (13a-tokenized here).
    pub fn from_text(hypothesis: &str, reference: &str) -> Self {
        let h = tokenize_13a(hypothesis);
        let r = tokenize_13a(reference);
        Self::from_tokens(&words(&h), &words(&r))
    }

    /// Statistics of one pair of token sequences.
    pub fn from_tokens<S: AsRef<str>>(hypothesis: &[S], reference: &[S]) -> Self {
        // Token ids local to this pair; an n-gram becomes one integer.
        let mut ids = FxHashMap::default();
        ids.reserve(hypothesis.len() + reference.len());
        let h = intern(&mut ids, hypothesis);
        let r = intern(&mut ids, reference);

        let mut st = BleuStats { hyp_len: h.len() as u64, ref_len: r.len() as u64, ..Default::default() };
        // An n-gram becomes one integer: 16 bits per token id when the pair has fewer than 2^16
        // distinct tokens (always, for reports), else 32 bits in a u128.
        if ids.len() < (1 << 16) {
            count_orders(&h, &r, &mut st, |k: u64, id: u32| (k << 16) | id as u64);
        } else {
            count_orders(&h, &r, &mut st, |k: u128, id: u32| (k << 32) | id as u128);
        }
        st
    }

    /// Adds another pair's (or corpus') statistics.
    pub fn add(&mut self, other: &BleuStats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for k in 0..MAX_ORDER {
            self.correct[k] += other.correct[k];
            self.total[k] += other.total[k];
            self.total_nltk[k] += other.total_nltk[k];
        }
    }

    /// sacreBLEU's corpus BLEU-n in [0, 1] (`BLEU.compute_bleu` with `smooth_method="exp"`).
    /// `n` is clamped to 1..=4.
    pub fn sacrebleu(&self, n: usize) -> f64 {
        let n = n.clamp(1, MAX_ORDER);
        let (sys_len, ref_len) = (self.hyp_len as f64, self.ref_len as f64);
        let bp = if self.hyp_len < self.ref_len {
            if self.hyp_len > 0 {
                (1.0 - ref_len / sys_len).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        if self.correct[..n].iter().all(|&c| c == 0) {
            return 0.0;
        }
        let mut precisions = [0.0f64; MAX_ORDER];
        let mut smooth_mteval = 1.0f64;
        for ((p, &correct), &total) in precisions.iter_mut().zip(&self.correct).zip(&self.total).take(n) {
            if total == 0 {
                break;
            }
            *p = if correct == 0 {
                smooth_mteval *= 2.0;
                100.0 / (smooth_mteval * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        // sacrebleu.utils.my_log: log(0) is floored to -9999999999.
        let my_log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let sum: f64 = precisions[..n].iter().fold(0.0, |acc, &p| acc + my_log(p));
        bp * (sum / n as f64).exp() / 100.0
    }

    /// nltk's `corpus_bleu` with weights `(1/n,)*n` and no smoothing (`SmoothingFunction().method0`).
    /// `n` is clamped to 1..=4.
    pub fn nltk(&self, n: usize) -> f64 {
        let n = n.clamp(1, MAX_ORDER);
        if self.correct[0] == 0 {
            return 0.0;
        }
        let (c, r) = (self.hyp_len, self.ref_len);
        let bp = if c > r {
            1.0
        } else if c == 0 {
            0.0
        } else {
            (1.0 - r as f64 / c as f64).exp()
        };
        let w = 1.0 / n as f64;
        // method0 replaces a zero precision by sys.float_info.min (= f64::MIN_POSITIVE).
        let terms = (0..n).map(|k| {
            let p = if self.correct[k] == 0 {
                f64::MIN_POSITIVE
            } else {
                self.correct[k] as f64 / self.total_nltk[k] as f64
            };
            w * p.ln()
        });
        bp * fsum(terms).exp()
    }

    /// BLEU-1..4 in both variants.
    pub fn scores(&self) -> BleuScores {
        let mut s = BleuScores::default();
        for k in 0..MAX_ORDER {
            s.sacrebleu[k] = self.sacrebleu(k + 1);
            s.nltk[k] = self.nltk(k + 1);
        }
        s
    }
}

/// Corpus BLEU-1..4 of raw hypothesis/reference texts (one reference each).
pub fn corpus_bleu<S: AsRef<str>>(hypotheses: &[S], references: &[S]) -> BleuScores {
    let mut st = BleuStats::default();
    for (h, r) in hypotheses.iter().zip(references) {
        st.add(&BleuStats::from_text(h.as_ref(), r.as_ref()));
    }
    st.scores()
}

fn intern<'a, S: AsRef<str>>(ids: &mut FxHashMap<&'a str, u32>, toks: &'a [S]) -> Vec<u32> {
    toks.iter()
        .map(|t| {
            let next = ids.len() as u32 + 1;
            *ids.entry(t.as_ref()).or_insert(next)
        })
        .collect()
}

/// Fills `total`, `total_nltk` and `correct` for every order from token ids; `push` appends a
/// token id to an n-gram key.
fn count_orders<K: Ord + Copy + Default>(
    h: &[u32],
    r: &[u32],
    st: &mut BleuStats,
    push: impl Fn(K, u32) -> K,
) {
    let mut hk: Vec<K> = Vec::with_capacity(h.len());
    let mut rk: Vec<K> = Vec::with_capacity(r.len());
    for k in 0..MAX_ORDER {
        let n = k + 1;
        ngram_keys(h, n, &mut hk, &push);
        ngram_keys(r, n, &mut rk, &push);
        st.total[k] = hk.len() as u64;
        st.total_nltk[k] = (hk.len() as u64).max(1);
        st.correct[k] = clipped_matches(&mut hk, &mut rk);
    }
}

fn ngram_keys<K: Default + Copy>(ids: &[u32], n: usize, out: &mut Vec<K>, push: impl Fn(K, u32) -> K) {
    out.clear();
    if ids.len() < n {
        return;
    }
    out.extend(ids.windows(n).map(|win| win.iter().fold(K::default(), |key, &id| push(key, id))));
}

/// Σ over distinct n-grams of min(count in hypothesis, count in reference).
fn clipped_matches<K: Ord>(hyp: &mut [K], reference: &mut [K]) -> u64 {
    hyp.sort_unstable();
    reference.sort_unstable();
    let (mut i, mut j, mut matched) = (0, 0, 0u64);
    while i < hyp.len() && j < reference.len() {
        match hyp[i].cmp(&reference[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                // Both sorted: each shared occurrence pairs once, which is the clipped count.
                matched += 1;
                i += 1;
                j += 1;
            }
        }
    }
    matched
}

/// Python's `math.fsum` for a few terms: Neumaier-compensated sum (exact enough for ≤ 4 terms
/// of similar magnitude; the parity tolerance is 1e-4).
fn fsum(terms: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for t in terms {
        let s = sum + t;
        comp += if sum.abs() >= t.abs() { (sum - s) + t } else { (t - s) + sum };
        sum = s;
    }
    sum + comp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_one() {
        let s = corpus_bleu(&["the heart is normal ."], &["the heart is normal ."]);
        for k in 0..4 {
            assert!((s.sacrebleu[k] - 1.0).abs() < 1e-12);
            assert!((s.nltk[k] - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn clipping() {
        let st = BleuStats::from_tokens(&["the", "the", "the"], &["the", "cat"]);
        assert_eq!(st.correct[0], 1);
        assert_eq!(st.total[0], 3);
        assert_eq!(st.total[2], 1);
        assert_eq!(st.total[3], 0);
        assert_eq!(st.total_nltk[3], 1);
    }

    #[test]
    fn empty() {
        let s = corpus_bleu(&[""], &["a b"]);
        assert_eq!(s.sacrebleu, [0.0; 4]);
        assert_eq!(s.nltk, [0.0; 4]);
    }
}
