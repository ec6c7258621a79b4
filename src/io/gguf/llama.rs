//! LLaMA specifics of GGUF files: hyper-parameters, tokenizer, tensor names, and the Q/K row
//! permutation.
//!
//! Keys and defaults follow llama.cpp (`llama-model.cpp` for `LLM_ARCH_LLAMA`, gguf-py
//! `constants.py` `Keys`). Tensor names map to Hugging Face `LlamaForCausalLM` names as
//! [`hf_tensor_name`] documents.
//!
//! **Q/K rows are permuted in GGUF.** llama.cpp's converter (`convert_hf_to_gguf.py`,
//! `LlamaModel.permute`) reorders the rows of `q_proj` and `k_proj` inside each head so that
//! ggml's "normal" RoPE, which rotates adjacent pairs `(x[2i], x[2i+1])`, equals HF's
//! `rotate_half`, which rotates `(x[i], x[i + d/2])`. A decoder written like HF's (ours) must
//! undo that on import with [`unpermute_qk`] (Q with `n_head`, K with `n_head_kv`). Without
//! it the model still runs but produces garbage.

use super::{Gguf, GgufValue};
use crate::{Error, Result};

/// The hyper-parameters of a LLaMA-architecture GGUF.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufLlamaParams {
    /// `llama.block_count`: decoder layers.
    pub n_layer: usize,
    /// `llama.embedding_length`: model width d.
    pub n_embd: usize,
    /// `llama.attention.head_count`.
    pub n_head: usize,
    /// `llama.attention.head_count_kv` (default `n_head`).
    pub n_head_kv: usize,
    /// `llama.attention.key_length` (default `n_embd / n_head`).
    pub head_dim: usize,
    /// `llama.feed_forward_length`: MLP hidden width.
    pub n_ff: usize,
    /// `llama.context_length`: training context.
    pub n_ctx_train: usize,
    /// `llama.vocab_size`, else the length of `tokenizer.ggml.tokens`.
    pub n_vocab: usize,
    /// `llama.rope.dimension_count` (default `head_dim`): rotated dims per head.
    pub n_rot: usize,
    /// `llama.rope.freq_base` (default 10000).
    pub rope_freq_base: f32,
    /// `llama.attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f32,
    /// `llama.rope.scaling.*` (or the legacy `llama.rope.scale_linear`).
    pub rope_scaling: GgufRopeScaling,
    /// A `rope_freqs.weight` tensor is present: Llama-3.1-style per-dimension RoPE factors,
    /// which llama.cpp's converter stores as a tensor rather than as metadata.
    pub has_rope_freqs: bool,
    /// No `output.weight`: the LM head reuses `token_embd.weight` (tied embeddings).
    pub tied_embeddings: bool,
}

/// RoPE scaling metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufRopeScaling {
    /// `llama.rope.scaling.type`: "none", "linear", "yarn", "longrope", ...
    pub kind: String,
    /// `llama.rope.scaling.factor` (1 when absent or 0).
    pub factor: f32,
    /// `llama.rope.scaling.original_context_length`.
    pub original_context_length: Option<usize>,
    /// `llama.rope.scaling.finetuned`.
    pub finetuned: Option<bool>,
}

/// The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model`: "gpt2" for byte-level BPE (LLaMA-3, SmolLM2), "llama" for
    /// SentencePiece.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer (split regex) name, e.g. "llama-bpe", "smollm".
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by token id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte);
    /// empty when absent.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, "left right" per line, by rank; empty when absent.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece); empty when absent.
    pub scores: Vec<f32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub eot_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

impl<B: AsRef<[u8]>> Gguf<B> {
    fn key_err(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::format(&self.what, format!("{key}: {reason}"))
    }

    /// An integer key as usize: `Ok(None)` when absent; an error when of the wrong type.
    /// llama.cpp also accepts per-layer arrays for some keys; we accept one whose values
    /// are all equal.
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n = match v {
            GgufValue::Array(a) => match a.to_i64s().as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => u64::try_from(*first).ok(),
                Some([_, ..]) => {
                    return Err(Error::Unsupported(format!(
                        "{}: {key} differs between layers; medregion needs one value",
                        self.what
                    )))
                }
                _ => None,
            },
            v => v.as_u64(),
        };
        let n =
            n.ok_or_else(|| self.key_err(key, format!("expected a non-negative integer, found {v:?}")))?;
        usize::try_from(n).map(Some).map_err(|_| self.key_err(key, format!("{n} is too large")))
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.key_err(key, "missing"))
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f32()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a float, found {}", v.type_name()))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.key_err(key, format!("expected a string, found {}", v.type_name()))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.key_err(key, format!("expected a bool, found {}", v.type_name()))),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.opt_usize(key)? {
            None => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| self.key_err(key, format!("{n} is too large"))),
        }
    }

    /// Reads and checks the LLaMA hyper-parameters (`llama.*` keys).
    pub fn llama_params(&self) -> Result<GgufLlamaParams> {
        match self.architecture() {
            Some(super::LLAMA_ARCHITECTURE) => {}
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: architecture {other:?} is not '{}'",
                    self.what,
                    super::LLAMA_ARCHITECTURE
                )))
            }
        }
        let n_embd = self.req_usize("llama.embedding_length")?;
        let n_head = self.req_usize("llama.attention.head_count")?;
        let n_head_kv = self.opt_usize("llama.attention.head_count_kv")?.unwrap_or(n_head);
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(self.key_err(key, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        positive("llama.embedding_length", n_embd)?;
        positive("llama.attention.head_count", n_head)?;
        positive("llama.attention.head_count_kv", n_head_kv)?;
        if n_head % n_head_kv != 0 {
            return Err(self.key_err(
                "llama.attention.head_count_kv",
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim = match self.opt_usize("llama.attention.key_length")? {
            Some(k) => k,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(self.key_err(
                    "llama.embedding_length",
                    format!("{n_embd} is not a multiple of head_count {n_head}"),
                ))
            }
        };
        let n_vocab = match self.opt_usize("llama.vocab_size")? {
            Some(v) => v,
            None => match self.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array) {
                Some(a) => a.len(),
                None => return Err(self.key_err("llama.vocab_size", "missing, and no tokenizer.ggml.tokens")),
            },
        };
        let scale_linear = self.opt_f32("llama.rope.scale_linear")?;
        let mut kind = self.opt_str("llama.rope.scaling.type")?;
        let mut factor = self.opt_f32("llama.rope.scaling.factor")?.unwrap_or(0.0);
        if let (None, Some(s)) = (&kind, scale_linear) {
            kind = Some("linear".into());
            factor = s;
        }
        let rope_scaling = GgufRopeScaling {
            kind: kind.unwrap_or_else(|| "none".into()),
            factor: if factor == 0.0 { 1.0 } else { factor },
            original_context_length: self.opt_usize("llama.rope.scaling.original_context_length")?,
            finetuned: self.opt_bool("llama.rope.scaling.finetuned")?,
        };
        Ok(GgufLlamaParams {
            n_layer: positive("llama.block_count", self.req_usize("llama.block_count")?)?,
            n_embd,
            n_head,
            n_head_kv,
            head_dim: positive("llama.attention.key_length", head_dim)?,
            n_ff: positive("llama.feed_forward_length", self.req_usize("llama.feed_forward_length")?)?,
            n_ctx_train: self.req_usize("llama.context_length")?,
            n_vocab: positive("llama.vocab_size", n_vocab)?,
            n_rot: self.opt_usize("llama.rope.dimension_count")?.unwrap_or(head_dim),
            rope_freq_base: self.opt_f32("llama.rope.freq_base")?.unwrap_or(10000.0),
            rms_norm_eps: self
                .opt_f32("llama.attention.layer_norm_rms_epsilon")?
                .ok_or_else(|| self.key_err("llama.attention.layer_norm_rms_epsilon", "missing"))?,
            rope_scaling,
            has_rope_freqs: self.tensor("rope_freqs.weight").is_some(),
            tied_embeddings: self.tensor("output.weight").is_none(),
        })
    }

    /// Reads the tokenizer (`tokenizer.ggml.*`). Token ids are checked against the vocabulary.
    pub fn tokenizer(&self) -> Result<GgufTokenizer> {
        let strings = |key: &str| -> Result<Vec<String>> {
            match self.get(key) {
                None => Ok(Vec::new()),
                Some(v) => {
                    v.as_array().and_then(|a| a.as_strings()).map(<[String]>::to_vec).ok_or_else(|| {
                        self.key_err(key, format!("expected an array of strings, found {v:?}"))
                    })
                }
            }
        };
        let model = self
            .opt_str("tokenizer.ggml.model")?
            .ok_or_else(|| self.key_err("tokenizer.ggml.model", "missing"))?;
        let tokens = strings("tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(self.key_err("tokenizer.ggml.tokens", "missing or empty"));
        }
        let key = "tokenizer.ggml.token_type";
        let token_types = match self.get(key) {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.to_i64s())
                .and_then(|v| v.into_iter().map(|x| i32::try_from(x).ok()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| self.key_err(key, "expected an array of int32"))?,
        };
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            return Err(self.key_err(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", token_types.len(), tokens.len()),
            ));
        }
        let key = "tokenizer.ggml.scores";
        let scores = match self.get(key) {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.to_f32s())
                .ok_or_else(|| self.key_err(key, "expected an array of float32"))?,
        };
        let id = |key: &str| -> Result<Option<u32>> {
            let v = self.opt_u32(key)?;
            match v {
                Some(i) if i as usize >= tokens.len() => Err(self
                    .key_err(key, format!("token id {i} is outside the {}-token vocabulary", tokens.len()))),
                _ => Ok(v),
            }
        };
        Ok(GgufTokenizer {
            pre: self.opt_str("tokenizer.ggml.pre")?,
            merges: strings("tokenizer.ggml.merges")?,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            eot_token_id: id("tokenizer.ggml.eot_token_id")?,
            unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
            padding_token_id: id("tokenizer.ggml.padding_token_id")?,
            add_bos_token: self.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_eos_token: self.opt_bool("tokenizer.ggml.add_eos_token")?,
            chat_template: self.opt_str("tokenizer.chat_template")?,
            model,
            tokens,
            token_types,
            scores,
        })
    }
}

/// Maps a GGUF LLaMA tensor name to the Hugging Face `LlamaForCausalLM` name, without the
/// `model.` prefix HF puts on everything but `lm_head` (so `model.` + the result, or
/// `lm_head.weight`, is the checkpoint key):
///
/// | GGUF                     | HF                                   |
/// |--------------------------|--------------------------------------|
/// | `token_embd.weight`      | `embed_tokens.weight`                |
/// | `output_norm.weight`     | `norm.weight`                        |
/// | `output.weight`          | `lm_head.weight` (absent when tied)  |
/// | `blk.N.attn_norm.weight` | `layers.N.input_layernorm.weight`    |
/// | `blk.N.attn_q.weight`    | `layers.N.self_attn.q_proj.weight` (rows permuted, see [`unpermute_qk`]) |
/// | `blk.N.attn_k.weight`    | `layers.N.self_attn.k_proj.weight` (rows permuted) |
/// | `blk.N.attn_v.weight`    | `layers.N.self_attn.v_proj.weight`   |
/// | `blk.N.attn_output.weight` | `layers.N.self_attn.o_proj.weight` |
/// | `blk.N.ffn_norm.weight`  | `layers.N.post_attention_layernorm.weight` |
/// | `blk.N.ffn_gate.weight`  | `layers.N.mlp.gate_proj.weight`      |
/// | `blk.N.ffn_up.weight`    | `layers.N.mlp.up_proj.weight`        |
/// | `blk.N.ffn_down.weight`  | `layers.N.mlp.down_proj.weight`      |
///
/// `.bias` suffixes map like `.weight`. `rope_freqs.weight` (Llama-3.1 RoPE factors) has no HF
/// tensor (HF computes it from `rope_scaling`) and maps to `None`, as does anything unknown.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let top = match stem {
        "token_embd" => Some("embed_tokens"),
        "output_norm" => Some("norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("{t}.{suffix}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("layers.{layer}.{hf}.{suffix}"))
}

/// For each HF row `r` of a Q or K projection with `n_rows` rows and `n_head` heads, the GGUF
/// row that holds it. Per head of `hd = n_rows / n_head` rows, llama.cpp's converter maps HF
/// row `j·hd/2 + i` (half `j` ∈ {0, 1}, pair `i`) to GGUF row `2i + j`.
pub fn unpermute_qk_rows(n_rows: usize, n_head: usize) -> Result<Vec<usize>> {
    if n_head == 0 || !n_rows.is_multiple_of(n_head) || !(n_rows / n_head).is_multiple_of(2) {
        return Err(Error::Shape {
            what: "Q/K projection rows for RoPE un-permutation".into(),
            expected: format!("a multiple of 2·n_head (n_head = {n_head})"),
            found: format!("{n_rows} rows"),
        });
    }
    let hd = n_rows / n_head;
    let half = hd / 2;
    Ok((0..n_rows)
        .map(|r| {
            let (h, k) = (r / hd, r % hd);
            let (j, i) = (k / half, k % half);
            h * hd + 2 * i + j
        })
        .collect())
}

/// Undoes llama.cpp's Q/K row permutation (see the module doc): `data` is a row-major matrix
/// of `n_rows` rows (any element type, so also the bytes or scales of a quantized tensor,
/// whose blocks never straddle rows); returns it with rows in HF order. Use `n_head` for Q
/// and `n_head_kv` for K.
pub fn unpermute_qk<T: Copy>(data: &[T], n_rows: usize, n_head: usize) -> Result<Vec<T>> {
    reorder_rows(data, n_rows, &unpermute_qk_rows(n_rows, n_head)?, |dst, src| (dst, src))
}

/// The inverse of [`unpermute_qk`]: HF row order → GGUF row order (what llama.cpp's converter
/// does), for writing GGUF-compatible files and for tests.
pub fn permute_qk<T: Copy>(data: &[T], n_rows: usize, n_head: usize) -> Result<Vec<T>> {
    reorder_rows(data, n_rows, &unpermute_qk_rows(n_rows, n_head)?, |hf, gguf| (gguf, hf))
}

/// Copies rows: for each `(hf, gguf)` pair of the map, `pick` says which is (dst, src).
fn reorder_rows<T: Copy>(
    data: &[T],
    n_rows: usize,
    hf_to_gguf: &[usize],
    pick: impl Fn(usize, usize) -> (usize, usize),
) -> Result<Vec<T>> {
    if n_rows == 0 || !data.len().is_multiple_of(n_rows) {
        return Err(Error::Shape {
            what: "Q/K projection data".into(),
            expected: format!("a whole number of {n_rows} rows"),
            found: format!("{} elements", data.len()),
        });
    }
    let row = data.len() / n_rows;
    let mut out = data.to_vec();
    for (hf, &gguf) in hf_to_gguf.iter().enumerate() {
        let (dst, src) = pick(hf, gguf);
        out[dst * row..(dst + 1) * row].copy_from_slice(&data[src * row..(src + 1) * row]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(hf_tensor_name("token_embd.weight").as_deref(), Some("embed_tokens.weight"));
        assert_eq!(hf_tensor_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_tensor_name("output_norm.weight").as_deref(), Some("norm.weight"));
        assert_eq!(
            hf_tensor_name("blk.12.attn_q.weight").as_deref(),
            Some("layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_tensor_name("blk.0.ffn_norm.weight").as_deref(),
            Some("layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(hf_tensor_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_tensor_name("rope_freqs.weight"), None);
        assert_eq!(hf_tensor_name("blk.0.attn_q"), None);
    }
}
