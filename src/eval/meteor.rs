//! METEOR exactly as `nltk.translate.meteor_score.meteor_score` computes it (nltk 3.10.4,
//! `nltk/translate/meteor_score.py`) for one reference, with nltk's defaults: `preprocess=str.lower`,
//! `stemmer=PorterStemmer()`, `alpha=0.9`, `beta=3.0`, `gamma=0.5`.
//!
//! Input is pre-tokenized, as nltk requires; `medregion eval` passes sacrebleu's `13a` tokens
//! (punctuation split off, as in `evaluate`'s use of `word_tokenize`). The alignment is nltk's
//! greedy one, in its order:
//! 1. exact: lowercased words; hypothesis words from last to first each take the last unmatched
//!    reference position holding the same word (`_match_enums`);
//! 2. stem: the words left on both sides are replaced by their Porter stems
//!    ([`super::porter`]) and matched the same way;
//! 3. synonyms (only with a [`WordNet`]): for each hypothesis word left — which is now a *stem*,
//!    a quirk of nltk kept on purpose — the candidates are the lemma names without `_` of
//!    `wordnet.synsets(stem)` plus the stem itself, and it takes the largest unmatched reference
//!    position whose (stemmed) word is a candidate (`_enum_wordnetsyn_match`).
//!
//! Then, with m matches, t hypothesis and r reference words: `P = m/t`, `R = m/r`,
//! `Fmean = PR / (αP + (1−α)R)`, chunks counted on the matches sorted by hypothesis position
//! (a new chunk whenever the next match is not adjacent in both sentences, `_count_chunks`),
//! `penalty = γ (chunks/m)^β`, `METEOR = (1 − penalty) Fmean`, and 0 when m, t or r is 0.
//!
//! Without WordNet, stage 3 can never match (a stem left after stage 2 has no equal stem left in
//! the reference), so the score is nltk's with `wordnet=` an object whose `synsets()` returns
//! `[]`. A corpus score is the mean over pairs.

use super::hash::FxHashMap;
use super::porter;
use super::wordnet::WordNet;

/// METEOR's parameters (nltk's defaults).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MeteorParams {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
}

impl Default for MeteorParams {
    fn default() -> Self {
        MeteorParams { alpha: 0.9, beta: 3.0, gamma: 0.5 }
    }
}

/// One alignment link: (hypothesis position, reference position).
pub type Link = (usize, usize);

const NONE: u32 = u32::MAX;

/// (position in the sentence, word id) of the words not matched yet, in sentence order.
type Enum = Vec<(usize, u32)>;

/// A METEOR scorer: parameters, optional WordNet, and what it learned from earlier pairs (every
/// distinct string gets an id, with its lowercase form, stem and synonyms computed once), so a
/// corpus costs little more than its distinct words.
#[derive(Debug)]
pub struct Meteor<'w> {
    params: MeteorParams,
    wordnet: Option<&'w WordNet>,
    ids: FxHashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
    /// id -> id of `str.lower()` of the string.
    lower: Vec<u32>,
    /// id -> id of the Porter stem of the string.
    stem: Vec<u32>,
    /// stem id -> ids of its WordNet synonyms.
    synonyms: FxHashMap<u32, Box<[u32]>>,
    /// Scratch: per id, 1 + the reference position on top of its stack (0: empty).
    head: Vec<u32>,
    /// Scratch: per reference position, the stack entry below it.
    below: Vec<u32>,
}

impl<'w> Meteor<'w> {
    /// A scorer with nltk's default parameters; `wordnet` enables the synonym stage.
    pub fn new(wordnet: Option<&'w WordNet>) -> Self {
        Self::with_params(MeteorParams::default(), wordnet)
    }

    /// A scorer with other α, β, γ.
    pub fn with_params(params: MeteorParams, wordnet: Option<&'w WordNet>) -> Self {
        Meteor {
            params,
            wordnet,
            ids: FxHashMap::default(),
            strings: Vec::new(),
            lower: Vec::new(),
            stem: Vec::new(),
            synonyms: FxHashMap::default(),
            head: Vec::new(),
            below: Vec::new(),
        }
    }

    /// Whether the synonym stage is on.
    pub fn has_wordnet(&self) -> bool {
        self.wordnet.is_some()
    }

    /// nltk's `single_meteor_score(reference, hypothesis)`.
    pub fn score<S: AsRef<str>>(&mut self, hypothesis: &[S], reference: &[S]) -> f64 {
        let t = hypothesis.len();
        let r = reference.len();
        let links = self.align(hypothesis, reference);
        let m = links.len();
        if m == 0 || t == 0 || r == 0 {
            return 0.0;
        }
        let MeteorParams { alpha, beta, gamma } = self.params;
        let precision = m as f64 / t as f64;
        let recall = m as f64 / r as f64;
        let fmean = (precision * recall) / (alpha * precision + (1.0 - alpha) * recall);
        let chunks = count_chunks(&links) as f64;
        let frag_frac = chunks / m as f64;
        let penalty = gamma * frag_frac.powf(beta);
        (1.0 - penalty) * fmean
    }

    /// nltk's `align_words`: the links of the three stages, sorted by hypothesis position.
    pub fn align<S: AsRef<str>>(&mut self, hypothesis: &[S], reference: &[S]) -> Vec<Link> {
        // `preprocess=str.lower` on both sides.
        let hyp: Vec<(usize, u32)> =
            hypothesis.iter().enumerate().map(|(i, w)| (i, self.lower_id(w.as_ref()))).collect();
        let refs: Vec<(usize, u32)> =
            reference.iter().enumerate().map(|(j, w)| (j, self.lower_id(w.as_ref()))).collect();

        // 1. exact
        let mut links = Vec::new();
        let (hyp, refs) = self.match_enums(&hyp, &refs, &mut links);
        // 2. Porter stems of what is left (the lists keep the stems from here on)
        let hyp: Vec<(usize, u32)> = hyp.into_iter().map(|(i, w)| (i, self.stem_id(w))).collect();
        let refs: Vec<(usize, u32)> = refs.into_iter().map(|(j, w)| (j, self.stem_id(w))).collect();
        let (hyp, refs) = self.match_enums(&hyp, &refs, &mut links);
        // 3. WordNet synonyms of the remaining hypothesis stems
        if let Some(wn) = self.wordnet {
            self.synonym_match(wn, &hyp, &refs, &mut links);
        }
        links.sort_by_key(|l| l.0);
        links
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.into());
        self.ids.insert(s.into(), id);
        self.lower.push(NONE);
        self.stem.push(NONE);
        self.head.push(0);
        id
    }

    fn lower_id(&mut self, word: &str) -> u32 {
        let id = self.intern(word);
        if self.lower[id as usize] == NONE {
            let l = if word.chars().any(|c| c.is_uppercase() || !c.is_ascii()) {
                let lower = word.to_lowercase();
                self.intern(&lower)
            } else {
                id
            };
            self.lower[id as usize] = l;
        }
        self.lower[id as usize]
    }

    fn stem_id(&mut self, id: u32) -> u32 {
        if self.stem[id as usize] == NONE {
            let s = porter::stem(&self.strings[id as usize]);
            let sid = self.intern(&s);
            self.stem[id as usize] = sid;
        }
        self.stem[id as usize]
    }

    /// Pushes the reference positions on per-word stacks (last position on top).
    fn push_refs(&mut self, refs: &[(usize, u32)]) {
        self.below.clear();
        for (j, &(_, w)) in refs.iter().enumerate() {
            self.below.push(self.head[w as usize]);
            self.head[w as usize] = j as u32 + 1;
        }
    }

    fn pop(&mut self, w: u32) -> Option<usize> {
        let top = self.head[w as usize];
        if top == 0 {
            return None;
        }
        let j = (top - 1) as usize;
        self.head[w as usize] = self.below[j];
        Some(j)
    }

    fn clear_refs(&mut self, refs: &[(usize, u32)]) {
        for &(_, w) in refs {
            self.head[w as usize] = 0;
        }
    }

    /// nltk's `_match_enums`: hypothesis words from last to first each take the last unmatched
    /// reference position holding the same word; returns what is left of both lists.
    fn match_enums(
        &mut self,
        hyp: &[(usize, u32)],
        refs: &[(usize, u32)],
        links: &mut Vec<Link>,
    ) -> (Enum, Enum) {
        self.push_refs(refs);
        let mut hyp_used = vec![false; hyp.len()];
        let mut ref_used = vec![false; refs.len()];
        for i in (0..hyp.len()).rev() {
            if let Some(j) = self.pop(hyp[i].1) {
                hyp_used[i] = true;
                ref_used[j] = true;
                links.push((hyp[i].0, refs[j].0));
            }
        }
        self.clear_refs(refs);
        let hyp_rest = hyp.iter().zip(&hyp_used).filter(|(_, &u)| !u).map(|(e, _)| *e).collect();
        let ref_rest = refs.iter().zip(&ref_used).filter(|(_, &u)| !u).map(|(e, _)| *e).collect();
        (hyp_rest, ref_rest)
    }

    /// nltk's `_enum_wordnetsyn_match` (the last stage, so nothing is returned but links).
    fn synonym_match(
        &mut self,
        wn: &WordNet,
        hyp: &[(usize, u32)],
        refs: &[(usize, u32)],
        links: &mut Vec<Link>,
    ) {
        self.push_refs(refs);
        for &(orig_i, w) in hyp.iter().rev() {
            if !self.synonyms.contains_key(&w) {
                let names = wn.synonyms(&self.strings[w as usize]);
                let ids: Box<[u32]> = names.iter().map(|n| self.intern(n)).collect();
                self.synonyms.insert(w, ids);
            }
            // Candidates: the synonyms and the word itself; each takes its stack top, the
            // largest position wins (distinct candidates never share a position).
            let syns = self.synonyms.get(&w).map(|b| &b[..]).unwrap_or(&[]);
            let best = syns
                .iter()
                .chain(std::iter::once(&w))
                .filter_map(|&c| {
                    let top = self.head[c as usize];
                    (top != 0).then_some((top - 1, c))
                })
                .max_by_key(|&(j, _)| j);
            if let Some((j, c)) = best {
                let popped = self.pop(c);
                debug_assert_eq!(popped, Some(j as usize));
                links.push((orig_i, refs[j as usize].0));
            }
        }
        self.clear_refs(refs);
    }
}

/// nltk's `meteor_score([reference], hypothesis)` on token sequences (a one-off scorer; use
/// [`Meteor`] to score many pairs with shared caches).
pub fn meteor_score<S: AsRef<str>>(hypothesis: &[S], reference: &[S], wordnet: Option<&WordNet>) -> f64 {
    Meteor::new(wordnet).score(hypothesis, reference)
}

/// nltk's `_count_chunks` on links sorted by hypothesis position.
fn count_chunks(links: &[Link]) -> usize {
    let mut chunks = 1;
    for w in links.windows(2) {
        if !(w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1) {
            chunks += 1;
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_doc_examples() {
        let h1 =
            "It is a guide to action which ensures that the military always obeys the commands of the party";
        let r1 = "It is a guide to action that ensures that the military will forever heed Party commands";
        let h: Vec<&str> = h1.split(' ').collect();
        let r: Vec<&str> = r1.split(' ').collect();
        // nltk's doctest gives 0.6944 with WordNet; without it the synonym stage adds nothing here.
        let s = meteor_score(&h, &r, None);
        assert!((s - 0.6944).abs() < 1e-4, "{s}");
        assert_eq!(meteor_score(&["non", "matching", "hypothesis"], &["this", "is", "a", "cat"], None), 0.0);
        assert_eq!(meteor_score::<&str>(&[], &["a"], None), 0.0);
    }
}
