//! Next-token selection: greedy, or seeded sampling with temperature, top-k and top-p, after an
//! optional repetition penalty.
//!
//! Order (the order of transformers' logits processors for `generate`):
//! 1. repetition penalty `r` on every id seen so far (prompt and generated, each id once):
//!    `l ← l / r` if `l > 0`, else `l ← l · r` (CTRL / transformers semantics);
//! 2. `temperature == 0` → greedy: the largest logit, the lowest id on a tie. Otherwise:
//! 3. `l ← l / temperature`;
//! 4. top-k (`0` = off): keep the `k` largest;
//! 5. softmax over the kept ids, sorted by descending probability (ties: lower id first);
//! 6. top-p (`1.0` = off): keep the shortest such prefix whose probability sums to ≥ `top_p`
//!    (at least one id);
//! 7. draw `u` uniform in [0, 1) and pick the first id whose running sum exceeds `u · kept_sum`.
//!
//! Determinism: the RNG is SplitMix64 seeded with `seed` (`crate::model::synthetic::SplitMix64`),
//! one `next_f64` per sampled token and none for greedy steps, so the same model, prompt,
//! parameters and seed give the same tokens on every machine and thread count (the logits are
//! bit-identical across thread counts, see `crate::ops`). [`Sampler::sample`] allocates nothing.

use crate::model::synthetic::SplitMix64;
use crate::{Error, Result};

/// Sampling parameters. The default is greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// `0` = greedy; otherwise a finite positive divisor of the logits.
    pub temperature: f32,
    /// Keep only the `top_k` most likely ids; `0` = all.
    pub top_k: usize,
    /// Nucleus mass in `(0, 1]`; `1.0` = off.
    pub top_p: f32,
    /// `1.0` = off; must be finite and positive.
    pub repetition_penalty: f32,
    /// RNG seed (ignored by greedy decoding).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding (the default).
    pub fn greedy() -> SamplingParams {
        SamplingParams::default()
    }

    /// Whether this picks the argmax (no RNG).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("{} is not a finite number ≥ 0 (0 means greedy)", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(
                "top_p",
                format!("{} is outside (0, 1] (1 turns it off)", self.top_p),
            ));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::invalid(
                "repetition_penalty",
                format!("{} is not a finite number > 0 (1 turns it off)", self.repetition_penalty),
            ));
        }
        Ok(())
    }
}

/// Picks tokens from logits; owns its RNG, the penalty history and the working buffers
/// (allocated once in [`Sampler::new`]).
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    /// Ids seen, each once (for the repetition penalty); capacity = vocab, so pushes never grow.
    seen: Vec<u32>,
    seen_mask: Vec<bool>,
    work: Vec<f32>,
    order: Vec<u32>,
    /// Ids never sampled (input-only tokens such as `<im_patch>`, `<mask>`, `<pos>`).
    banned: Vec<u32>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` ids. Invalid parameters are errors.
    pub fn new(params: &SamplingParams, vocab: usize) -> Result<Sampler> {
        params.validate()?;
        if vocab == 0 {
            return Err(Error::invalid("vocab", "the vocabulary is empty"));
        }
        Ok(Sampler {
            params: params.clone(),
            rng: SplitMix64::new(params.seed),
            seen: Vec::with_capacity(vocab),
            seen_mask: vec![false; vocab],
            work: vec![0.0; vocab],
            order: (0..vocab as u32).collect(),
            banned: Vec::new(),
        })
    }

    /// Never samples `ids` (their logits count as −∞); ids outside the vocabulary are ignored.
    /// The decoder bans its input-only tokens (`<im_patch>`, `<mask>`, `<pos>`): they stand for
    /// image and mask embeddings and are never text.
    pub fn ban(&mut self, ids: &[u32]) {
        let vocab = self.work.len();
        for &id in ids {
            if (id as usize) < vocab && !self.banned.contains(&id) {
                self.banned.push(id);
            }
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Forgets the history and restarts the RNG from the seed.
    pub fn reset(&mut self) {
        for &id in &self.seen {
            self.seen_mask[id as usize] = false;
        }
        self.seen.clear();
        self.rng = SplitMix64::new(self.params.seed);
    }

    /// Records ids for the repetition penalty (the prompt, then each chosen token).
    /// Ids outside the vocabulary are errors.
    pub fn observe(&mut self, ids: &[u32]) -> Result<()> {
        let vocab = self.seen_mask.len();
        for &id in ids {
            let Some(seen) = self.seen_mask.get_mut(id as usize) else {
                return Err(Error::invalid(
                    "token id",
                    format!("{id} is outside the vocabulary (0..{vocab})"),
                ));
            };
            if !*seen {
                *seen = true;
                self.seen.push(id);
            }
        }
        Ok(())
    }

    /// The next token for `logits` (`[vocab]`); records it in the history. Non-finite logits
    /// (NaN, ±inf from a broken model) are an error.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        let vocab = self.work.len();
        if logits.len() != vocab {
            return Err(Error::Shape {
                what: "logits".into(),
                expected: vocab.to_string(),
                found: logits.len().to_string(),
            });
        }
        let p = &self.params;
        if p.is_greedy() && p.repetition_penalty == 1.0 {
            // One vectorized pass instead of a check, a copy and a scalar argmax (six rows of a
            // 49152-token vocabulary each step of a batch); the same id whenever it applies,
            // and a non-finite logit or a banned maximum takes the path below.
            let (finite, best) = scan(logits);
            if finite && !self.banned.contains(&best) {
                self.observe(&[best])?;
                return Ok(best);
            }
        }
        if let Some(i) = logits.iter().position(|l| !l.is_finite()) {
            return Err(Error::Internal(format!("logit of id {i} is {} (not finite)", logits[i])));
        }
        self.work.copy_from_slice(logits);
        if p.repetition_penalty != 1.0 {
            for &id in &self.seen {
                let l = &mut self.work[id as usize];
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
        for &id in &self.banned {
            self.work[id as usize] = f32::NEG_INFINITY;
        }
        let id = if p.is_greedy() { argmax(&self.work) } else { self.draw() };
        self.observe(&[id])?;
        Ok(id)
    }

    /// The ids the repetition penalty applies to (every id observed since creation or reset).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn seen(&self) -> &[u32] {
        &self.seen
    }

    /// The uniform number in [0, 1) the next temperature draw would use (advances the RNG as
    /// that draw does): a device sampler given it picks the token this sampler would
    /// (`backend::cuda::ops::llm::sample`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn next_uniform(&mut self) -> f64 {
        self.rng.next_f64()
    }

    fn draw(&mut self) -> u32 {
        let p = &self.params;
        let vocab = self.work.len();
        let inv_t = 1.0 / p.temperature;
        self.work.iter_mut().for_each(|l| *l *= inv_t);
        let work = &self.work;
        let by_logit = |a: &u32, b: &u32| work[*b as usize].total_cmp(&work[*a as usize]).then(a.cmp(b));
        for (i, o) in self.order.iter_mut().enumerate() {
            *o = i as u32;
        }
        let k = if p.top_k == 0 || p.top_k >= vocab { vocab } else { p.top_k };
        if k < vocab {
            self.order.select_nth_unstable_by(k - 1, by_logit);
        }
        let kept = &mut self.order[..k];
        kept.sort_unstable_by(by_logit);
        let max = work[kept[0] as usize];
        // Unnormalised probabilities exp(l − max), recomputed per pass rather than stored.
        let mut total = 0.0f64;
        let mut probs_end = k;
        for &id in kept.iter() {
            total += ((work[id as usize] - max) as f64).exp();
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0f64;
            for (j, &id) in kept.iter().enumerate() {
                acc += ((work[id as usize] - max) as f64).exp();
                if acc >= p.top_p as f64 * total {
                    probs_end = j + 1;
                    break;
                }
            }
            total = kept[..probs_end].iter().map(|&id| ((work[id as usize] - max) as f64).exp()).sum();
        }
        let u = self.rng.next_f64() * total;
        let mut acc = 0.0f64;
        for &id in &kept[..probs_end] {
            acc += ((work[id as usize] - max) as f64).exp();
            if acc > u {
                return id;
            }
        }
        kept[probs_end - 1]
    }
}

/// Whether every value is finite, and the first index of the largest value (what [`argmax`]
/// returns when all are finite): 8 independent lanes of max and finiteness, which the compiler
/// vectorizes, then the first position equal to the maximum.
fn scan(v: &[f32]) -> (bool, u32) {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut fin = [true; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            fin[l] &= c[l].is_finite();
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        fin[l] &= x.is_finite();
        m[l] = if x > m[l] { x } else { m[l] };
    }
    let max = m.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let first = v.iter().position(|&x| x == max).unwrap_or(0);
    (fin.iter().all(|&f| f), first as u32)
}

/// Index of the largest value; the lowest index on a tie.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32, k: usize, p: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature: t, top_k: k, top_p: p, repetition_penalty: 1.0, seed }
    }

    /// The one-pass greedy path picks exactly what the copy-and-argmax path picks: the first
    /// of equal maxima, any length (not only multiples of 8), negative values, a banned maximum
    /// (falls back), and it still rejects a non-finite logit.
    #[test]
    fn greedy_scan_matches_argmax() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) % 7) as f32 - 9.0 // few distinct values: many ties, all negative
        };
        for len in [1, 2, 7, 8, 9, 17, 64, 100, 1001] {
            for _ in 0..20 {
                let v: Vec<f32> = (0..len).map(|_| next()).collect();
                assert_eq!(scan(&v), (true, argmax(&v)), "{v:?}");
                let mut g = Sampler::new(&SamplingParams::greedy(), len).unwrap();
                assert_eq!(g.sample(&v).unwrap(), argmax(&v));
                // Ban the maximum: the next best, as the slow path gives.
                let best = argmax(&v);
                let mut g = Sampler::new(&SamplingParams::greedy(), len).unwrap();
                g.ban(&[best]);
                let mut w = v.clone();
                w[best as usize] = f32::NEG_INFINITY;
                let want = if len == 1 { 0 } else { argmax(&w) };
                assert_eq!(g.sample(&v).unwrap(), want);
            }
        }
        let mut v = vec![0.0f32; 33];
        v[20] = f32::NAN;
        assert!(!scan(&v).0);
        assert!(Sampler::new(&SamplingParams::greedy(), 33).unwrap().sample(&v).is_err());
        v[20] = f32::INFINITY;
        assert!(Sampler::new(&SamplingParams::greedy(), 33).unwrap().sample(&v).is_err());
    }

    #[test]
    fn banned_ids_are_never_sampled() {
        // Id 2 has by far the largest logit but is banned (an input-only token).
        let logits = [0.0, 1.0, 50.0, 0.5];
        let mut g = Sampler::new(&SamplingParams::greedy(), 4).unwrap();
        g.ban(&[2, 99]);
        assert_eq!(g.sample(&logits).unwrap(), 1);
        for seed in 0..200 {
            let mut s = Sampler::new(&params(5.0, 0, 1.0, seed), 4).unwrap();
            s.ban(&[2]);
            assert_ne!(s.sample(&logits).unwrap(), 2, "seed {seed}");
        }
        let mut free = Sampler::new(&SamplingParams::greedy(), 4).unwrap();
        assert_eq!(free.sample(&logits).unwrap(), 2);
    }

    #[test]
    fn greedy_is_argmax_with_low_id_ties() {
        let mut s = Sampler::new(&SamplingParams::greedy(), 4).unwrap();
        assert_eq!(s.sample(&[0.0, 2.0, 2.0, -1.0]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_follows_sign() {
        let mut p = SamplingParams::greedy();
        p.repetition_penalty = 4.0;
        let mut s = Sampler::new(&p, 3).unwrap();
        s.observe(&[0, 2]).unwrap();
        // id 0: 3.0 / 4 = 0.75 < id 1's 1.0; id 2: -0.1·4 stays lowest.
        assert_eq!(s.sample(&[3.0, 1.0, -0.1]).unwrap(), 1);
        // now 1 is seen too: 1.0/4 = 0.25 < 0.75.
        assert_eq!(s.sample(&[3.0, 1.0, -0.1]).unwrap(), 0);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.1, 0.5, 0.3, 0.45];
        for seed in 0..20 {
            assert_eq!(Sampler::new(&params(1.0, 1, 1.0, seed), 4).unwrap().sample(&logits).unwrap(), 1);
            assert_eq!(Sampler::new(&params(1.0, 0, 1e-6, seed), 4).unwrap().sample(&logits).unwrap(), 1);
        }
    }

    #[test]
    fn top_k_restricts_and_frequencies_follow_softmax() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let mut s = Sampler::new(&params(1.0, 2, 1.0, 7), 4).unwrap();
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0, "{counts:?}");
        // P(2) = e²/(e² + e) = 0.731
        let f = counts[2] as f64 / 20000.0;
        assert!((f - 0.7311).abs() < 0.02, "{f}");
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probs ≈ [0.665, 0.245, 0.090]: top_p 0.8 keeps ids 0 and 1 only.
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(&params(1.0, 0, 0.8, 3), 3).unwrap();
        let mut counts = [0usize; 3];
        for _ in 0..5000 {
            counts[s.sample(&logits).unwrap() as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!(counts[1] > 1000, "{counts:?}");
    }

    #[test]
    fn seeded_is_deterministic() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(&params(0.9, 10, 0.9, seed), 50).unwrap();
            (0..30).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn bad_parameters_are_errors() {
        for (t, p, r) in [
            (f32::NAN, 1.0, 1.0),
            (-0.5, 1.0, 1.0),
            (1.0, 0.0, 1.0),
            (1.0, 1.5, 1.0),
            (1.0, 1.0, 0.0),
            (1.0, f32::NAN, 1.0),
            (f32::INFINITY, 1.0, 1.0),
        ] {
            let sp = SamplingParams { temperature: t, top_k: 0, top_p: p, repetition_penalty: r, seed: 0 };
            assert!(matches!(Sampler::new(&sp, 4), Err(Error::InvalidArgument { .. })), "{sp:?}");
        }
        let mut s = Sampler::new(&SamplingParams::greedy(), 4).unwrap();
        assert!(s.observe(&[4]).is_err());
        assert!(s.sample(&[0.0, f32::NAN, 0.0, 0.0]).is_err());
        assert!(s.sample(&[0.0; 3]).is_err());
    }
}
