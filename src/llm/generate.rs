//! Generation loops over a [`Session`]: one sequence ([`Session::generate`]) and N sequences
//! sharing a prefix, decoded in lock step ([`Session::generate_batch`]).
//!
//! Choices where the issue is silent:
//! * A stop token ends the sequence and is not part of `tokens` or `text`.
//! * A stop string ends it too; `text` is cut just before the stop string, `tokens` keeps the
//!   token that completed it. Streamed text holds back any tail that could still become a stop
//!   string, so the callback never sees text past a stop string.
//! * The repetition penalty counts the prompt (transformers does the same) when it is given as
//!   ids; rows given as [`Input::Embeddings`] have no id and are not counted.
//! * `generate` continues from whatever the session holds (multi-turn); call
//!   [`Session::reset`] first for a fresh prompt. `generate_batch` always resets.
//! * A full context ends generation ([`StopReason::ContextFull`]); a prompt that does not fit
//!   is an error.
//! * Batched sequence `i` samples with seed `seed + i` (wrapping), so it reproduces
//!   `generate` of prefix + suffix `i` alone with that seed.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::forward::{forward, KvCache, Logits, Row};
use super::sampling::{Sampler, SamplingParams};
use super::session::{Input, Session, MAX_ROWS};
use crate::model::config::DecoderConfig;
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

/// What to generate and when to stop.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// At least 1.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end a sequence; `None` = the model's `decoder.eos_token_ids`.
    pub stop_ids: Option<Vec<u32>>,
    /// Strings that end a sequence (needs a tokenizer); each non-empty.
    pub stop_strings: Vec<String>,
    /// Keep the logits of every prompt position and sampling step in [`Generation::logits`].
    pub keep_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop_ids: None,
            stop_strings: Vec::new(),
            keep_logits: false,
        }
    }
}

/// Why a sequence ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// This stop id was sampled.
    StopToken(u32),
    /// `stop_strings[i]` appeared in the text.
    StopString(usize),
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The KV cache is full.
    ContextFull,
    /// The callback returned `ControlFlow::Break`.
    Callback,
    /// The session's cancel flag was set.
    Cancelled,
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Generated ids (without a stop token).
    pub tokens: Vec<u32>,
    /// Their text (empty without a tokenizer), cut before a stop string.
    pub text: String,
    pub stop: StopReason,
    /// Tokens fed before generation (prompt; for a batch, prefix + suffix).
    pub prompt_tokens: usize,
    /// With `keep_logits`: `[rows, vocab]`, the prompt's positions (the suffix's, in a batch)
    /// and then one row per sampling step after the first (row `prompt − 1 + j` gave token `j`).
    pub logits: Vec<f32>,
    /// Seconds spent feeding the prompt and decoding.
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// A streamed token: its id and the text it completes (may be empty).
pub type OnToken<'c> = dyn FnMut(u32, &str) -> ControlFlow<()> + 'c;
/// A streamed token of batched sequence `seq`.
pub type OnBatchToken<'c> = dyn FnMut(usize, u32, &str) -> ControlFlow<()> + 'c;

impl GenerateOptions {
    /// The ids that end a sequence: `stop_ids`, or the model's `eos_token_ids`.
    pub(crate) fn stop_ids_for<'o>(&'o self, cfg: &'o DecoderConfig) -> &'o [u32] {
        self.stop_ids.as_deref().unwrap_or(&cfg.eos_token_ids)
    }

    pub(crate) fn validate(&self, tokenizer: Option<&Tokenizer>, vocab: usize) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(Error::invalid("max_new_tokens", "must be at least 1"));
        }
        self.sampling.validate()?;
        if let Some(ids) = &self.stop_ids {
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::invalid(
                    "stop_ids",
                    format!("{id} is outside the vocabulary (0..{vocab})"),
                ));
            }
        }
        if !self.stop_strings.is_empty() && tokenizer.is_none() {
            return Err(Error::invalid("stop_strings", "stop strings need a tokenizer"));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return Err(Error::invalid("stop_strings", "a stop string is empty"));
        }
        Ok(())
    }
}

/// Per-sequence decoding state: sampling, stop conditions and streamed text, shared by the CPU
/// loops here and the CUDA session's (`backend::cuda::decoder`).
pub(crate) struct SeqState<'t> {
    pub(crate) sampler: Sampler,
    decoder: Option<StreamDecoder<'t>>,
    pub(crate) tokens: Vec<u32>,
    text: String,
    /// Bytes of `text` already streamed.
    emitted: usize,
    pub(crate) stop: Option<StopReason>,
    /// With `keep_logits`: the rows kept so far (`Generation::logits`).
    pub(crate) logits: Vec<f32>,
    pub(crate) prompt_tokens: usize,
}

impl<'t> SeqState<'t> {
    pub(crate) fn new(
        opts: &GenerateOptions,
        seed: u64,
        tokenizer: Option<&'t Tokenizer>,
        vocab: usize,
        banned: &[u32],
    ) -> Result<Self> {
        let params = SamplingParams { seed, ..opts.sampling.clone() };
        let mut sampler = Sampler::new(&params, vocab)?;
        sampler.ban(banned);
        Ok(SeqState {
            sampler,
            decoder: tokenizer.map(|t| t.stream_decoder(true)),
            tokens: Vec::with_capacity(opts.max_new_tokens),
            text: String::new(),
            emitted: 0,
            stop: None,
            logits: Vec::new(),
            prompt_tokens: 0,
        })
    }

    /// Samples from `logits`, appends, streams; sets `stop` when the sequence ends.
    pub(crate) fn accept(
        &mut self,
        logits: &[f32],
        stop_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> ControlFlow<()>,
    ) -> Result<()> {
        if opts.keep_logits {
            self.logits.extend_from_slice(logits);
        }
        let id = self.sampler.sample(logits)?;
        self.accept_id(id, stop_ids, opts, on_token)
    }

    /// [`SeqState::accept`] of an id chosen elsewhere (the device argmax of the logits after
    /// the same bans): records it in the sampler's history (already there when `accept`
    /// sampled it), appends, streams; sets `stop` when the sequence ends.
    pub(crate) fn accept_id(
        &mut self,
        id: u32,
        stop_ids: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32, &str) -> ControlFlow<()>,
    ) -> Result<()> {
        self.sampler.observe(&[id])?;
        if stop_ids.contains(&id) {
            self.stop = Some(StopReason::StopToken(id));
            return self.flush(on_token);
        }
        self.tokens.push(id);
        let mut safe = self.text.len();
        if let Some(dec) = &mut self.decoder {
            let before = self.text.len();
            // An id beyond the tokenizer (a padded vocabulary) reads as U+FFFD (see push_lossy).
            dec.push_lossy(id, &mut self.text);
            let scan = before.saturating_sub(opts.stop_strings.iter().map(String::len).max().unwrap_or(0));
            let hit = opts
                .stop_strings
                .iter()
                .enumerate()
                .filter_map(|(i, s)| find_from(&self.text, scan, s).map(|at| (at, i)))
                .min();
            if let Some((at, i)) = hit {
                self.text.truncate(at);
                self.stop = Some(StopReason::StopString(i));
                return self.flush(on_token);
            }
            safe = self.text.len() - held_back(&self.text, &opts.stop_strings);
        }
        let piece = &self.text[self.emitted..safe];
        self.emitted = safe;
        if on_token(id, piece).is_break() {
            self.stop = Some(StopReason::Callback);
        } else if self.tokens.len() >= opts.max_new_tokens {
            self.stop = Some(StopReason::MaxTokens);
        }
        if self.stop.is_some() {
            self.flush(on_token)?;
        }
        Ok(())
    }

    /// At the end: completes pending UTF-8 and streams what was held back (as an empty-id
    /// callback only if there is text left; its return value no longer matters).
    pub(crate) fn flush(&mut self, on_token: &mut dyn FnMut(u32, &str) -> ControlFlow<()>) -> Result<()> {
        if let (Some(dec), false) = (&mut self.decoder, matches!(self.stop, Some(StopReason::StopString(_))))
        {
            dec.finish(&mut self.text);
        }
        if self.emitted < self.text.len() {
            let id = self.tokens.last().copied().unwrap_or(0);
            let _ = on_token(id, &self.text[self.emitted..]);
            self.emitted = self.text.len();
        }
        Ok(())
    }

    pub(crate) fn finish(self, prefill_secs: f64, decode_secs: f64) -> Generation {
        Generation {
            tokens: self.tokens,
            text: self.text,
            stop: self.stop.unwrap_or(StopReason::MaxTokens),
            prompt_tokens: self.prompt_tokens,
            logits: self.logits,
            prefill_secs,
            decode_secs,
        }
    }
}

/// First occurrence of `needle` in `text` starting at byte `from` (rounded down to a char).
fn find_from(text: &str, mut from: usize, needle: &str) -> Option<usize> {
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    text[from..].find(needle).map(|i| from + i)
}

/// Length of the longest tail of `text` that is a proper prefix of some stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    let bytes = text.as_bytes();
    stops
        .iter()
        .map(|s| {
            let s = s.as_bytes();
            (1..s.len().min(bytes.len() + 1)).rev().find(|&k| bytes.ends_with(&s[..k])).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Checks a batch before any state changes (the CPU and CUDA sessions share it): 1..=
/// `max_batch` suffixes, ids inside the vocabulary, embeddings in whole rows of `d`, and every
/// prefix + suffix non-empty and within `context`. Returns the prefix length.
pub(crate) fn check_batch(
    prefix: Input<'_>,
    suffixes: &[Input<'_>],
    vocab: usize,
    d: usize,
    context: usize,
    max_batch: usize,
) -> Result<usize> {
    let n = suffixes.len();
    if n == 0 || n > max_batch {
        return Err(Error::invalid(
            "suffixes",
            format!("{n} sequences; this session batches 1..={max_batch}"),
        ));
    }
    let plen = match prefix {
        Input::Tokens(ids) => {
            check_ids(ids, vocab)?;
            ids.len()
        }
        Input::Embeddings(e) if e.len() % d != 0 => {
            return Err(Error::invalid(
                "prefix",
                format!("{} embedding values are not whole rows of {d}", e.len()),
            ))
        }
        Input::Embeddings(e) => e.len() / d,
    };
    for (i, s) in suffixes.iter().enumerate() {
        match s {
            Input::Tokens(ids) => {
                check_ids(ids, vocab).map_err(|e| Error::invalid(format!("suffixes[{i}]"), e.to_string()))?
            }
            Input::Embeddings(e) if e.len() % d != 0 => {
                return Err(Error::invalid(
                    format!("suffixes[{i}]"),
                    format!("{} embedding values are not whole rows of {d}", e.len()),
                ))
            }
            Input::Embeddings(_) => {}
        }
        let s = s.rows(d);
        if plen + s == 0 {
            return Err(Error::invalid(format!("suffixes[{i}]"), "prefix and suffix are both empty"));
        }
        if plen + s > context {
            return Err(Error::invalid(
                format!("suffixes[{i}]"),
                format!("prefix {plen} + suffix {s} tokens exceed the context of {context} positions"),
            ));
        }
    }
    Ok(plen)
}

/// Token ids inside `0..vocab`.
pub(crate) fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(i) => Err(Error::invalid(
            "token id",
            format!("{} at index {i} is outside the vocabulary (0..{vocab})", ids[i]),
        )),
        None => Ok(()),
    }
}

impl Session<'_> {
    /// The decoder's input-only tokens (`<im_patch>`, `<mask>`, `<pos>`), which are never sampled.
    pub fn input_only_ids(&self) -> [u32; 3] {
        self.cfg.input_only_ids()
    }

    fn stop_ids<'o>(&'o self, opts: &'o GenerateOptions) -> &'o [u32] {
        opts.stop_ids_for(&self.cfg)
    }

    fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::AcqRel)
    }

    /// Feeds `prompt` and generates until a stop condition; streams each token to `on_token`.
    /// Continues from the session's current contents (see the module doc).
    pub fn generate(
        &mut self,
        prompt: Input<'_>,
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnToken<'_>,
    ) -> Result<Generation> {
        let v = self.cfg.vocab_size;
        opts.validate(tokenizer, v)?;
        let mut seq = SeqState::new(opts, opts.sampling.seed, tokenizer, v, &self.input_only_ids())?;
        if let Input::Tokens(ids) = prompt {
            seq.sampler.observe(ids)?;
        }
        let t0 = Instant::now();
        if opts.keep_logits {
            let n = match prompt {
                Input::Tokens(ids) => ids.len(),
                Input::Embeddings(e) => e.len() / self.cfg.hidden_size,
            };
            seq.logits = vec![0.0; n * v];
            self.prefill_all_logits(prompt, &mut seq.logits)?;
            seq.logits.truncate((n - 1) * v); // the last row is added by `accept`
            seq.prompt_tokens = n;
        } else {
            let before = self.len();
            self.prefill(prompt)?;
            seq.prompt_tokens = self.len() - before;
        }
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let stop_ids = self.stop_ids(opts).to_vec();
        loop {
            let logits = &self.scratch.logits[..v];
            seq.accept(logits, &stop_ids, opts, on_token)?;
            if seq.stop.is_some() {
                break;
            }
            if self.take_cancel() {
                seq.stop = Some(StopReason::Cancelled);
                seq.flush(on_token)?;
                break;
            }
            if self.len() >= self.context() {
                seq.stop = Some(StopReason::ContextFull);
                seq.flush(on_token)?;
                break;
            }
            let id = *seq.tokens.last().unwrap_or(&0);
            self.step(id)?;
        }
        Ok(seq.finish(prefill_secs, t1.elapsed().as_secs_f64()))
    }

    /// Generates one continuation per suffix, all after the same `prefix`: the prefix is fed
    /// once and its keys/values are shared read-only; each sequence feeds its own suffix into its
    /// own cache; then all live sequences decode in lock step, one forward call (each weight
    /// read once) per step; a stopped sequence drops out. Resets the session first. Results are
    /// in suffix order; `on_token` gets the sequence index.
    pub fn generate_batch(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[&[u32]],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>> {
        let inputs: Vec<Input<'_>> = suffixes.iter().map(|s| Input::Tokens(s)).collect();
        self.generate_batch_inputs(prefix, &inputs, opts, tokenizer, on_token)
    }

    /// [`Session::generate_batch`] with each suffix given as ids or as input embeddings
    /// `[n, hidden_size]` (e.g. a region prompt with its image and mask rows spliced in).
    /// Embedding rows have no id, so the repetition penalty does not count them.
    pub fn generate_batch_inputs(
        &mut self,
        prefix: Input<'_>,
        suffixes: &[Input<'_>],
        opts: &GenerateOptions,
        tokenizer: Option<&Tokenizer>,
        on_token: &mut OnBatchToken<'_>,
    ) -> Result<Vec<Generation>> {
        let (v, d) = (self.cfg.vocab_size, self.cfg.hidden_size);
        let n = suffixes.len();
        let plen = check_batch(prefix, suffixes, v, d, self.context(), self.max_batch)?;
        opts.validate(tokenizer, v)?;
        let mut seqs = (0..n)
            .map(|i| {
                SeqState::new(
                    opts,
                    opts.sampling.seed.wrapping_add(i as u64),
                    tokenizer,
                    v,
                    &self.input_only_ids(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let t0 = Instant::now();
        self.reset();
        let mut prefix_logits = Vec::new();
        if plen > 0 {
            prefix_logits.extend_from_slice(self.prefill(prefix)?);
            if let Input::Tokens(ids) = prefix {
                seqs.iter_mut().try_for_each(|s| s.sampler.observe(ids))?;
            }
        }
        // Per-sequence caches for what follows the prefix (kept for the next call).
        let cap = self.context() - plen;
        if self.batch_caches.len() < n || self.batch_caches.iter().take(n).any(|c| c.capacity() < cap) {
            self.batch_caches.clear();
            for _ in 0..n {
                self.batch_caches.push(KvCache::new(&self.cfg, cap)?);
            }
        }
        let stop_ids = self.stop_ids(opts).to_vec();
        let mut rows = [Row { seq: 0, pos: 0 }; MAX_ROWS];
        let mut prefill_secs = vec![0.0; n];
        for (i, input) in suffixes.iter().enumerate() {
            let ts = Instant::now();
            self.batch_caches[i].len = 0;
            if let Input::Tokens(ids) = input {
                seqs[i].sampler.observe(ids)?;
            }
            let slen = input.rows(d);
            seqs[i].prompt_tokens = plen + slen;
            if slen == 0 {
                self.scratch.logits[..v].copy_from_slice(&prefix_logits);
            }
            let mut done = 0;
            while done < slen {
                // Cancelling during the suffix prefills stops between chunks (see `feed`).
                if (i > 0 || done > 0) && self.take_cancel() {
                    return Err(Error::Cancelled);
                }
                let m = self.chunk.min(slen - done);
                for j in 0..m {
                    let x = &mut self.scratch.x[j * d..(j + 1) * d];
                    match input {
                        Input::Tokens(ids) => self.weights.embed.rows_to_f32(ids[done + j] as usize, 1, x)?,
                        Input::Embeddings(e) => x.copy_from_slice(&e[(done + j) * d..(done + j + 1) * d]),
                    }
                    rows[j] = Row { seq: i, pos: plen + done + j };
                }
                let want = if opts.keep_logits {
                    Logits::All
                } else if done + m == slen {
                    Logits::Last
                } else {
                    Logits::None
                };
                forward(
                    &self.cfg,
                    &self.weights,
                    &self.rope,
                    &mut self.scratch,
                    &self.pool,
                    &rows[..m],
                    Some(&self.cache),
                    &mut self.batch_caches,
                    want,
                )?;
                if opts.keep_logits {
                    seqs[i].logits.extend_from_slice(&self.scratch.logits[..m * v]);
                    if done + m == slen {
                        self.scratch.logits.copy_within((m - 1) * v..m * v, 0);
                        let keep = seqs[i].logits.len() - v;
                        seqs[i].logits.truncate(keep);
                    }
                }
                done += m;
            }
            let logits = &self.scratch.logits[..v];
            let mut cb = |id: u32, text: &str| on_token(i, id, text);
            seqs[i].accept(logits, &stop_ids, opts, &mut cb)?;
            prefill_secs[i] = ts.elapsed().as_secs_f64();
        }
        let prefix_secs = t0.elapsed().as_secs_f64() - prefill_secs.iter().sum::<f64>();
        let t1 = Instant::now();
        let mut live = [0usize; MAX_ROWS];
        loop {
            let mut m = 0;
            for (i, s) in seqs.iter_mut().enumerate() {
                if s.stop.is_none() && plen + self.batch_caches[i].len >= self.context() {
                    s.stop = Some(StopReason::ContextFull);
                    s.flush(&mut |id: u32, text: &str| on_token(i, id, text))?;
                }
                if s.stop.is_none() {
                    live[m] = i;
                    m += 1;
                }
            }
            if m == 0 {
                break;
            }
            if self.take_cancel() {
                for &i in &live[..m] {
                    seqs[i].stop = Some(StopReason::Cancelled);
                    let mut cb = |id: u32, text: &str| on_token(i, id, text);
                    seqs[i].flush(&mut cb)?;
                }
                break;
            }
            for (j, &i) in live[..m].iter().enumerate() {
                let id = *seqs[i].tokens.last().unwrap_or(&0) as usize;
                self.weights.embed.rows_to_f32(id, 1, &mut self.scratch.x[j * d..(j + 1) * d])?;
                rows[j] = Row { seq: i, pos: plen + self.batch_caches[i].len };
            }
            forward(
                &self.cfg,
                &self.weights,
                &self.rope,
                &mut self.scratch,
                &self.pool,
                &rows[..m],
                Some(&self.cache),
                &mut self.batch_caches,
                Logits::All,
            )?;
            for (j, &i) in live[..m].iter().enumerate() {
                let logits = &self.scratch.logits[j * v..(j + 1) * v];
                let mut cb = |id: u32, text: &str| on_token(i, id, text);
                seqs[i].accept(logits, &stop_ids, opts, &mut cb)?;
            }
        }
        let decode_secs = t1.elapsed().as_secs_f64();
        Ok(seqs
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.finish(prefix_secs + prefill_secs[i], decode_secs))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_hold_back() {
        let stops = vec!["</s>".to_string(), "END".to_string()];
        assert_eq!(held_back("abc</", &stops), 2);
        assert_eq!(held_back("abcE", &stops), 1);
        assert_eq!(held_back("abc", &stops), 0);
        assert_eq!(find_from("xx</s>yy", 1, "</s>"), Some(2));
        assert_eq!(find_from("héllo", 2, "llo"), Some(3));
    }
}
