//! The LLaMA-3 decoder on the CPU (SPEC-model.md §10, DESIGN.md §2 and §8): one forward
//! definition for every weight type, a [`Session`] that owns all mutable state, sampling, and
//! batched generation of several sequences that share a prefix.
//!
//! ```no_run
//! use medregion::io::package::{LoadOptions, Model};
//! use medregion::llm::{GenerateOptions, Input, Session, SessionOptions};
//! use medregion::tokenizer::Tokenizer;
//! # fn main() -> medregion::Result<()> {
//! let model = Model::load("model.mrpk", &LoadOptions::default())?;
//! let tok = Tokenizer::from_package(&model)?;
//! let mut session = Session::new(&model, &SessionOptions { context: 2048, ..Default::default() })?;
//! let prompt = tok.encode("The lungs are", true)?;
//! let out = session.generate(Input::Tokens(&prompt), &GenerateOptions::default(), Some(&tok), &mut |_, text| {
//!     print!("{text}");
//!     std::ops::ControlFlow::Continue(())
//! })?;
//! # let _ = out; Ok(()) }
//! ```
//!
//! Choices where the issue is silent (see also [`generate`], [`sampling`]):
//! * Activations, norms, RoPE, attention and the residual stream are f32; every matmul
//!   accumulates in f32 ([`crate::ops`]); RMSNorm sums squares in f64; RoPE angles are computed
//!   in f64 and rounded once ([`rope`]).
//! * Attention is a single pass with an online softmax (running max and sum) in position order,
//!   threaded over (row, head); no score buffer, so its memory does not grow with the context.
//! * The KV cache is f32 `[layers, context, n_kv_heads·head_dim]` for keys and for values,
//!   allocated by [`Session::new`] for the context the caller picks (default
//!   `min(max_position_embeddings, 4096)`). [`Session::generate_batch`] allocates its
//!   per-sequence caches (context − prefix positions each) on first use and keeps them.
//! * Prefill runs in chunks of `SessionOptions::chunk` rows (default 32): each weight is read
//!   once per chunk; only the last position's logits are computed unless all are asked for.
//! * Results do not depend on the thread count, nor on whether a row runs alone or in a batch
//!   (the matmuls guarantee this and attention is per row), so batched and single generation
//!   give bit-identical logits; the tests check it.
//! * [`Session::step`] (one decode step) allocates nothing; `tests/llm_alloc.rs` proves it.
//! * Bad input (ids outside the vocabulary, prompts longer than the context, NaN/negative
//!   temperature, `top_p` outside (0, 1], zero `max_new_tokens`, empty batches) is an
//!   [`crate::Error`] naming the argument, and leaves the session unchanged.

pub mod forward;
pub mod generate;
pub mod rope;
pub mod sampling;
pub mod session;
pub(crate) mod weights;

pub use crate::ops::Activations;
pub use generate::{GenerateOptions, Generation, OnBatchToken, OnToken, StopReason};
pub use sampling::{argmax, Sampler, SamplingParams};
pub use session::{Input, Session, SessionOptions, MAX_ROWS};
