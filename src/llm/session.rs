//! [`Session`]: the mutable state of one decoder run over an immutable [`Model`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::forward::{forward, KvCache, Logits, Row, Scratch};
use super::rope::Rope;
use super::weights::DecoderWeights;
use crate::io::package::Model;
use crate::model::config::DecoderConfig;
use crate::ops::{Activations, ThreadPool};
use crate::tensor::Weight;
use crate::{Error, Result};

/// The most rows one forward call takes (the bound of `chunk` and `max_batch`).
pub const MAX_ROWS: usize = 64;

/// How a [`Session`] is sized. Everything is allocated by [`Session::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Positions the KV cache holds (prompt + generated). `0` = `min(max_position_embeddings,
    /// 4096)`. More than `max_position_embeddings` is an error.
    pub context: usize,
    /// Threads for the matmuls and attention, the caller included; `0` = one per core.
    pub threads: usize,
    /// Rows per forward call: prefill runs in chunks of this many tokens (default 32, at most
    /// [`MAX_ROWS`]).
    pub chunk: usize,
    /// The most sequences [`Session::generate_batch`] decodes together (default 8, at most
    /// [`MAX_ROWS`]).
    pub max_batch: usize,
    /// How activations meet quantized weights: [`Activations::Int8`] (default; llama.cpp's
    /// scheme, the fast one) or [`Activations::F32`] (the weights dequantized in registers:
    /// the logits of the dequantized f32 model to f32 rounding; 2–3× slower). Float
    /// weights compute in f32 either way.
    pub activations: Activations,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { context: 0, threads: 0, chunk: 32, max_batch: 8, activations: Activations::Int8 }
    }
}

/// The input of a prefill: token ids, or caller-made input embeddings `[n, hidden_size]`
/// (e.g. token embeddings from [`Session::embed`] with image rows spliced in).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Tokens(&'a [u32]),
    Embeddings(&'a [f32]),
}

impl Input<'_> {
    /// Positions this input fills: its ids, or its whole embedding rows of `hidden_size`.
    pub fn rows(&self, hidden_size: usize) -> usize {
        match self {
            Input::Tokens(ids) => ids.len(),
            Input::Embeddings(e) => e.len() / hidden_size,
        }
    }
}

/// One decoder conversation: KV cache, activation buffers, matmul scratch, thread pool and a
/// cancel flag, over weights borrowed from a [`Model`].
///
/// Use from one thread at a time (every method that changes state takes `&mut self`); it is
/// `Send`, so it can move between threads. Create one per concurrent user of a model.
pub struct Session<'m> {
    pub(crate) cfg: DecoderConfig,
    pub(crate) weights: DecoderWeights<'m>,
    pub(crate) rope: Rope,
    pub(crate) pool: ThreadPool,
    pub(crate) scratch: Scratch,
    /// The session's own sequence (and the shared prefix of a batch).
    pub(crate) cache: KvCache,
    /// Per-sequence caches of [`Session::generate_batch`], allocated by its first call.
    pub(crate) batch_caches: Vec<KvCache>,
    pub(crate) chunk: usize,
    pub(crate) max_batch: usize,
    pub(crate) cancel: Arc<AtomicBool>,
    /// Whether `scratch.logits[..V]` holds the logits of the last position.
    has_logits: bool,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("context", &self.cache.capacity())
            .field("len", &self.cache.len)
            .finish()
    }
}

impl<'m> Session<'m> {
    /// A session over `model`'s decoder with everything allocated now: the KV cache for
    /// `options.context` positions, the buffers for `max(chunk, max_batch)` rows, the threads.
    pub fn new(model: &'m Model<'_>, options: &SessionOptions) -> Result<Session<'m>> {
        let cfg = model.config().decoder.clone();
        let max_pos = cfg.max_position_embeddings;
        let context = if options.context == 0 { max_pos.min(4096) } else { options.context };
        if context > max_pos {
            return Err(Error::invalid(
                "context",
                format!("{context} exceeds the model's max_position_embeddings ({max_pos})"),
            ));
        }
        for (name, v) in [("chunk", options.chunk), ("max_batch", options.max_batch)] {
            if !(1..=MAX_ROWS).contains(&v) {
                return Err(Error::invalid(name, format!("{v} is outside 1..={MAX_ROWS}")));
            }
        }
        let weights = DecoderWeights::load(model, &cfg)?;
        let rows = options.chunk.max(options.max_batch);
        Ok(Session {
            rope: Rope::new(&cfg),
            pool: ThreadPool::new(options.threads)?,
            scratch: Scratch::new(&cfg, rows, options.activations)?,
            cache: KvCache::new(&cfg, context)?,
            batch_caches: Vec::new(),
            chunk: options.chunk,
            max_batch: options.max_batch,
            cancel: Arc::new(AtomicBool::new(false)),
            has_logits: false,
            weights,
            cfg,
        })
    }

    /// The decoder config.
    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// How this session's products treat activations against quantized weights.
    pub fn activations(&self) -> Activations {
        self.scratch.activations()
    }

    /// Vocabulary size (length of a logits row).
    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    /// Positions the KV cache holds.
    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.cache.len
    }

    /// Whether nothing has been fed since creation or [`Session::reset`].
    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Threads in this session's pool.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Bytes of weights read per forward call (each matrix once, however many rows).
    pub fn weight_bytes_per_step(&self) -> usize {
        self.weights.bytes_per_token()
    }

    /// Multiply-accumulates of the matrix products per token (layers and head; attention
    /// excluded): with [`Session::int8_products`], what batched decode asks of the int8 dot
    /// products (`ops::machine_int8_peak`).
    pub fn matmul_macs_per_token(&self) -> usize {
        self.weights.macs_per_token()
    }

    /// Seconds one forward call's matrix products take for `rows` activation rows (the
    /// fastest of `calls` calls after one warm-up call): every projection of every layer and
    /// the head, with this session's weights, kernels and threads, on a fixed pattern of
    /// activations. What a batched decode step of `rows` sequences cannot go below with these
    /// kernels, whatever its attention and bookkeeping cost; `bench llm` sets it against
    /// single-sequence decode (the most batch-`rows` decode could gain). Forgets the last
    /// logits (the scratch is reused); the cache is untouched. `rows` is 1 to
    /// [`SessionOptions::max_batch`] (or the prefill chunk, whichever is larger).
    pub fn product_seconds(&mut self, rows: usize, calls: usize) -> Result<f64> {
        if rows == 0 || rows > self.scratch.rows {
            return Err(Error::invalid(
                "rows",
                format!("{rows} is outside 1..={} (the session's scratch rows)", self.scratch.rows),
            ));
        }
        if calls == 0 {
            return Err(Error::invalid("calls", "must be at least 1"));
        }
        self.has_logits = false;
        self.scratch.fill_pattern();
        let mut best = f64::INFINITY;
        for call in 0..=calls {
            let t = std::time::Instant::now();
            super::forward::products(&self.weights, &mut self.scratch, &self.pool, rows)?;
            if call > 0 {
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        Ok(best)
    }

    /// Whether every matrix product runs on the int8 kernels: all weights quantized and
    /// [`Activations::Int8`].
    pub fn int8_products(&self) -> bool {
        self.activations() == Activations::Int8 && self.weights.all_quantized()
    }

    /// Forgets every position (keeps the allocations).
    pub fn reset(&mut self) {
        self.cache.len = 0;
        self.has_logits = false;
    }

    /// Drops positions `len..` (e.g. to reuse a common prompt prefix). `len` beyond the
    /// current length is an error.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.cache.len {
            return Err(Error::invalid(
                "len",
                format!("{len} is beyond the {} positions held", self.cache.len),
            ));
        }
        self.cache.len = len;
        self.has_logits = false;
        Ok(())
    }

    /// A flag that, once set (from any thread), makes the running or next `generate` /
    /// `generate_batch` stop between steps with [`super::StopReason::Cancelled`]; the stop clears it.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// The logits of the last position fed (`[vocab]`), if any.
    pub fn logits(&self) -> Option<&[f32]> {
        self.has_logits.then(|| &self.scratch.logits[..self.cfg.vocab_size])
    }

    /// Token embeddings of `ids` into `out` (`[ids.len(), hidden_size]`), to splice other
    /// rows in before [`Input::Embeddings`].
    pub fn embed(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        embed_ids(&self.weights.embed, &self.cfg, ids, out)
    }

    /// Checks an input (ids in range, embedding shape, non-empty, room left) before any state
    /// changes.
    fn check_input(&self, input: &Input<'_>) -> Result<usize> {
        check_input(input, &self.cfg, self.cache.len, self.cache.capacity())
    }

    /// Feeds `input` (any length, run in chunks) and returns the logits of its last position.
    pub fn prefill(&mut self, input: Input<'_>) -> Result<&[f32]> {
        self.feed(input, None)?;
        Ok(&self.scratch.logits[..self.cfg.vocab_size])
    }

    /// Feeds `input` and writes the logits of every one of its positions to `out`
    /// (`[n, vocab]`). The last row is also [`Session::logits`].
    pub fn prefill_all_logits(&mut self, input: Input<'_>, out: &mut [f32]) -> Result<()> {
        let n = input.rows(self.cfg.hidden_size);
        if out.len() != n * self.cfg.vocab_size {
            return Err(Error::Shape {
                what: "logits output".into(),
                expected: format!("{n} × {} values", self.cfg.vocab_size),
                found: out.len().to_string(),
            });
        }
        self.feed(input, Some(out))
    }

    /// Feeds one token and returns its logits (the distribution of the next). Allocates nothing.
    pub fn step(&mut self, id: u32) -> Result<&[f32]> {
        self.feed(Input::Tokens(std::slice::from_ref(&id)), None)?;
        Ok(&self.scratch.logits[..self.cfg.vocab_size])
    }

    fn feed(&mut self, input: Input<'_>, mut all: Option<&mut [f32]>) -> Result<()> {
        let n = self.check_input(&input)?;
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        self.has_logits = false;
        let mut rows_buf = [Row { seq: 0, pos: 0 }; MAX_ROWS];
        let chunk = self.chunk;
        let mut done = 0;
        while done < n {
            // A long prefill honours the cancel flag between chunks (never within one step):
            // the chunks already fed stay in the cache.
            if done > 0 && self.cancel.swap(false, Ordering::AcqRel) {
                return Err(Error::Cancelled);
            }
            let m = chunk.min(n - done);
            let start = self.cache.len;
            match input {
                Input::Tokens(ids) => {
                    for (j, &id) in ids[done..done + m].iter().enumerate() {
                        self.weights.embed.rows_to_f32(
                            id as usize,
                            1,
                            &mut self.scratch.x[j * d..(j + 1) * d],
                        )?;
                    }
                }
                Input::Embeddings(e) => self.scratch.x[..m * d].copy_from_slice(&e[done * d..(done + m) * d]),
            }
            for (j, r) in rows_buf[..m].iter_mut().enumerate() {
                *r = Row { seq: 0, pos: start + j };
            }
            let last = done + m == n;
            let want = match (&all, last) {
                (Some(_), _) => Logits::All,
                (None, true) => Logits::Last,
                (None, false) => Logits::None,
            };
            let result = forward(
                &self.cfg,
                &self.weights,
                &self.rope,
                &mut self.scratch,
                &self.pool,
                &rows_buf[..m],
                None,
                std::slice::from_mut(&mut self.cache),
                want,
            );
            if let Err(e) = result {
                // A failed chunk leaves the cache at the last complete chunk.
                self.cache.len = start;
                return Err(e);
            }
            if let Some(out) = all.as_deref_mut() {
                out[done * v..(done + m) * v].copy_from_slice(&self.scratch.logits[..m * v]);
                if last {
                    self.scratch.logits.copy_within((m - 1) * v..m * v, 0);
                }
            }
            done += m;
        }
        self.has_logits = true;
        Ok(())
    }
}

/// Token embeddings of `ids` from the table `embed` into `out` (`[ids.len(), hidden_size]`):
/// [`Session::embed`], and the CUDA pipeline's host-side embedding of the region prompts.
pub(crate) fn embed_ids(embed: &Weight<'_>, cfg: &DecoderConfig, ids: &[u32], out: &mut [f32]) -> Result<()> {
    let d = cfg.hidden_size;
    if out.len() != ids.len() * d {
        return Err(Error::Shape {
            what: "embedding output".into(),
            expected: format!("{} × {d} values", ids.len()),
            found: out.len().to_string(),
        });
    }
    super::generate::check_ids(ids, cfg.vocab_size)?;
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(d)) {
        embed.rows_to_f32(id as usize, 1, row)?;
    }
    Ok(())
}

/// Caller embeddings are finite (`what` names the argument in the error).
pub(crate) fn check_finite(input: &Input<'_>, what: &str) -> Result<()> {
    if let Input::Embeddings(e) = input {
        if let Some(i) = e.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(what, format!("value {i} is {} (not finite)", e[i])));
        }
    }
    Ok(())
}

/// Checks an input before any state changes (the CPU and CUDA sessions share it): ids inside
/// the vocabulary, whole and finite embedding rows, non-empty, and room for it after `held` of
/// `capacity` positions. Returns its rows.
pub(crate) fn check_input(
    input: &Input<'_>,
    cfg: &DecoderConfig,
    held: usize,
    capacity: usize,
) -> Result<usize> {
    let d = cfg.hidden_size;
    match input {
        Input::Tokens(ids) => super::generate::check_ids(ids, cfg.vocab_size)?,
        Input::Embeddings(e) if e.len() % d != 0 => {
            return Err(Error::Shape {
                what: "input embeddings".into(),
                expected: format!("a multiple of hidden_size ({d}) values"),
                found: e.len().to_string(),
            })
        }
        Input::Embeddings(_) => check_finite(input, "input embeddings")?,
    }
    let n = input.rows(d);
    if n == 0 {
        return Err(Error::invalid("input", "no tokens to feed"));
    }
    if held + n > capacity {
        return Err(Error::invalid(
            "input",
            format!("{n} tokens after the {held} already held exceed the context of {capacity} positions"),
        ));
    }
    Ok(n)
}
