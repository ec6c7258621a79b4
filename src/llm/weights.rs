//! The decoder's weights, resolved once from a package by canonical name (`llm.*`,
//! `crate::model::names`). Matrices stay zero-copy views of any storage type; the small norm
//! vectors are converted to f32 once.

use crate::io::package::Model;
use crate::model::config::DecoderConfig;
use crate::model::names::llm_layer;
use crate::tensor::Weight;
use crate::{Error, Result};

/// One decoder layer (HF `LlamaDecoderLayer`).
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights<'m> {
    /// `input_layernorm` `[D]`.
    pub attn_norm: Vec<f32>,
    /// `[nh·hd, D]`, `[nkv·hd, D]`, `[nkv·hd, D]`, `[D, nh·hd]`.
    pub q: Weight<'m>,
    pub k: Weight<'m>,
    pub v: Weight<'m>,
    pub o: Weight<'m>,
    /// `post_attention_layernorm` `[D]`.
    pub mlp_norm: Vec<f32>,
    /// `[F, D]`, `[F, D]`, `[D, F]`.
    pub gate: Weight<'m>,
    pub up: Weight<'m>,
    pub down: Weight<'m>,
}

/// Every decoder weight.
#[derive(Clone, Debug)]
pub(crate) struct DecoderWeights<'m> {
    /// `embed_tokens` `[V, D]`.
    pub embed: Weight<'m>,
    pub layers: Vec<LayerWeights<'m>>,
    /// Final `norm` `[D]`.
    pub norm: Vec<f32>,
    /// `lm_head` `[V, D]`, or `embed_tokens` when tied.
    pub head: Weight<'m>,
}

impl<'m> DecoderWeights<'m> {
    pub fn load(model: &'m Model<'_>, cfg: &DecoderConfig) -> Result<DecoderWeights<'m>> {
        let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let matrix = |name: String, rows: usize, cols: usize| -> Result<Weight<'m>> {
            let w = model.weight(&name)?;
            if w.shape() != [rows, cols] {
                return Err(Error::Shape {
                    what: format!("decoder weight `{name}`"),
                    expected: format!("[{rows}, {cols}]"),
                    found: format!("{:?}", w.shape()),
                });
            }
            Ok(w)
        };
        let vector = |name: String| -> Result<Vec<f32>> {
            let w = model.weight(&name)?;
            if w.shape() != [d] {
                return Err(Error::Shape {
                    what: format!("decoder weight `{name}`"),
                    expected: format!("[{d}]"),
                    found: format!("{:?}", w.shape()),
                });
            }
            w.to_f32()
        };
        let layers = (0..cfg.n_layers)
            .map(|i| {
                Ok(LayerWeights {
                    attn_norm: vector(llm_layer(i, "input_layernorm.weight"))?,
                    q: matrix(llm_layer(i, "self_attn.q_proj.weight"), cfg.q_dim(), d)?,
                    k: matrix(llm_layer(i, "self_attn.k_proj.weight"), cfg.kv_dim(), d)?,
                    v: matrix(llm_layer(i, "self_attn.v_proj.weight"), cfg.kv_dim(), d)?,
                    o: matrix(llm_layer(i, "self_attn.o_proj.weight"), d, cfg.q_dim())?,
                    mlp_norm: vector(llm_layer(i, "post_attention_layernorm.weight"))?,
                    gate: matrix(llm_layer(i, "mlp.gate_proj.weight"), f, d)?,
                    up: matrix(llm_layer(i, "mlp.up_proj.weight"), f, d)?,
                    down: matrix(llm_layer(i, "mlp.down_proj.weight"), d, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = matrix("llm.embed_tokens.weight".into(), v, d)?;
        let head = if cfg.tie_word_embeddings { embed } else { matrix("llm.lm_head.weight".into(), v, d)? };
        Ok(DecoderWeights { embed, layers, norm: vector("llm.norm.weight".into())?, head })
    }

    /// Bytes of weights one forward row reads (all matrices; the embedding row is negligible).
    pub fn bytes_per_token(&self) -> usize {
        self.products().map(Weight::storage_bytes).sum()
    }

    /// The products' weights of one token: every layer's projections, then the head.
    fn products(&self) -> impl Iterator<Item = &Weight<'m>> {
        self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]).chain([&self.head])
    }

    /// Multiply-accumulates of the products per token (each weight's rows × columns).
    pub fn macs_per_token(&self) -> usize {
        self.products().map(|w| w.shape().iter().product::<usize>()).sum()
    }

    /// Whether every product's weight is quantized (the int8 kernels run them all).
    pub fn all_quantized(&self) -> bool {
        self.products().all(|w| matches!(w, Weight::Quant(_)))
    }
}
