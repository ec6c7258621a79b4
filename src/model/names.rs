//! Canonical tensor names of the model package, and the list of tensors a config implies.
//!
//! Names mirror the Hugging Face checkpoints with a component prefix (mapped once, by the
//! converter):
//!
//! * `vit.` + HF `Dinov2Model` names (no `mask_token`), SPEC-model.md §3.2;
//! * `mask.` + the mask extractor names of SPEC §11 (`res{k}`, `feat_linear`, `mask_linear`);
//! * `proj.` the connector, SPEC §5;
//! * `llm.` + HF `LlamaForCausalLM` names without the `model.` prefix, SPEC §10.2;
//! * `tokenizer`, the tokenizer bytes (U8);
//! * `__pad.N`, U8 filler tensors that align the next tensor (ignored).
//!
//! A weight `W` stored block-quantized becomes `W.<qtype>.values`, `W.<qtype>.scales` and, for
//! q4_1, `W.<qtype>.mins` (see `crate::io::package`).

use crate::model::config::ModelConfig;
use crate::quant::{QuantType, QK};

/// Name of the tokenizer tensor.
pub const TOKENIZER: &str = "tokenizer";

/// Prefix of the filler tensors that align the next tensor's data to 64 bytes.
pub const PAD_PREFIX: &str = "__pad.";

/// The parts of the model, by name prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `vit.*`: the vision encoder.
    Vit,
    /// `mask.*`: the mask extractor.
    Mask,
    /// `proj.*`: the connector.
    Proj,
    /// `llm.*`: the decoder.
    Llm,
    /// `tokenizer`.
    Tokenizer,
    /// `__pad.*` filler.
    Pad,
}

impl Component {
    /// The weight components, in package order.
    pub const WEIGHTS: [Component; 4] = [Component::Vit, Component::Mask, Component::Proj, Component::Llm];

    /// The short name used on the command line and in `inspect` (`vit`, `mask`, `proj`, `llm`,
    /// `tokenizer`, `pad`).
    pub fn name(self) -> &'static str {
        match self {
            Component::Vit => "vit",
            Component::Mask => "mask",
            Component::Proj => "proj",
            Component::Llm => "llm",
            Component::Tokenizer => "tokenizer",
            Component::Pad => "pad",
        }
    }

    /// The component of a (logical or stored) tensor name, if it has a known prefix.
    pub fn of(name: &str) -> Option<Component> {
        if name == TOKENIZER {
            Some(Component::Tokenizer)
        } else if name.starts_with(PAD_PREFIX) {
            Some(Component::Pad)
        } else if name.starts_with("vit.") {
            Some(Component::Vit)
        } else if name.starts_with("mask.") {
            Some(Component::Mask)
        } else if name.starts_with("proj.") {
            Some(Component::Proj)
        } else if name.starts_with("llm.") {
            Some(Component::Llm)
        } else {
            None
        }
    }

    /// Parses a short name.
    pub fn parse(text: &str) -> Option<Component> {
        Component::WEIGHTS.into_iter().find(|c| c.name() == text)
    }
}

/// What a tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    /// Model weights: stored as F32/F16/BF16, or block-quantized when 2-D with `cols % 32 == 0`.
    Weight,
    /// Opaque bytes of any length ≥ 1 (the tokenizer), stored as U8 `[n]`.
    Bytes,
}

/// One logical tensor that a config requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedTensor {
    pub name: String,
    /// Logical shape (empty for `Bytes`: any length).
    pub shape: Vec<usize>,
    pub role: TensorRole,
}

/// The three stored parts of a quantized weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantPart {
    Values,
    Scales,
    Mins,
}

impl QuantPart {
    pub fn name(self) -> &'static str {
        match self {
            QuantPart::Values => "values",
            QuantPart::Scales => "scales",
            QuantPart::Mins => "mins",
        }
    }
}

/// Stored name of one part of quantized weight `name`: `name.<qtype>.<part>`.
pub fn quant_part(name: &str, qtype: QuantType, part: QuantPart) -> String {
    format!("{name}.{}.{}", qtype.name(), part.name())
}

/// Splits a stored name `W.<qtype>.<part>` into `(W, qtype, part)`.
pub fn parse_quant_part(stored: &str) -> Option<(&str, QuantType, QuantPart)> {
    let (rest, part) = stored.rsplit_once('.')?;
    let part = match part {
        "values" => QuantPart::Values,
        "scales" => QuantPart::Scales,
        "mins" => QuantPart::Mins,
        _ => return None,
    };
    let (logical, qname) = rest.rsplit_once('.')?;
    let qtype = QuantType::ALL.into_iter().find(|q| q.name() == qname)?;
    Some((logical, qtype, part))
}

/// Whether a weight of this logical shape may be block-quantized: 2-D with `cols % 32 == 0`.
pub fn is_quantizable(shape: &[usize]) -> bool {
    shape.len() == 2 && shape[0] > 0 && shape[1] > 0 && shape[1].is_multiple_of(QK)
}

/// `vit.encoder.layer.{i}.{leaf}`.
pub fn vit_layer(i: usize, leaf: &str) -> String {
    format!("vit.encoder.layer.{i}.{leaf}")
}

/// `llm.layers.{i}.{leaf}`.
pub fn llm_layer(i: usize, leaf: &str) -> String {
    format!("llm.layers.{i}.{leaf}")
}

/// `mask.res{k}` for level index `level` (0-based; the tensor numbering starts at 1).
pub fn mask_res(level: usize, leaf: &str) -> String {
    format!("mask.res{}.{leaf}", level + 1)
}

/// `mask.mask_linear.layers.{i}.{leaf}`.
pub fn mask_mlp(i: usize, leaf: &str) -> String {
    format!("mask.mask_linear.layers.{i}.{leaf}")
}

struct List(Vec<ExpectedTensor>);

impl List {
    fn weight(&mut self, name: String, shape: &[usize]) {
        self.0.push(ExpectedTensor { name, shape: shape.to_vec(), role: TensorRole::Weight });
    }

    /// `{prefix}.weight` [out, in] and, when `bias`, `{prefix}.bias` [out].
    fn linear(&mut self, prefix: &str, out: usize, input: usize, bias: bool) {
        self.weight(format!("{prefix}.weight"), &[out, input]);
        if bias {
            self.weight(format!("{prefix}.bias"), &[out]);
        }
    }

    /// LayerNorm `{prefix}.weight` [d], `{prefix}.bias` [d].
    fn layer_norm(&mut self, prefix: &str, d: usize) {
        self.weight(format!("{prefix}.weight"), &[d]);
        self.weight(format!("{prefix}.bias"), &[d]);
    }
}

/// Every logical tensor the config implies, in package order (vit, mask, proj, llm, tokenizer),
/// with its logical shape. The loader checks a package against exactly this list.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<ExpectedTensor> {
    let mut l = List(Vec::new());

    // Vision encoder (HF Dinov2Model), SPEC §3.2.
    let v = &cfg.vision;
    let (h, inter) = (v.hidden_size, v.intermediate_size);
    l.weight("vit.embeddings.cls_token".into(), &[1, 1, h]); // [1, 1, H]
    l.weight("vit.embeddings.position_embeddings".into(), &[1, v.n_positions(), h]); // [1, 1+g², H]
    l.weight(
        "vit.embeddings.patch_embeddings.projection.weight".into(),
        &[h, v.num_channels, v.patch_size, v.patch_size], // [H, C, p, p]
    );
    l.weight("vit.embeddings.patch_embeddings.projection.bias".into(), &[h]); // [H]
    for i in 0..v.n_layers {
        l.layer_norm(&vit_layer(i, "norm1"), h); // [H]
        for qkv in ["query", "key", "value"] {
            l.linear(&vit_layer(i, &format!("attention.attention.{qkv}")), h, h, v.qkv_bias);
            // [H, H]
        }
        l.linear(&vit_layer(i, "attention.output.dense"), h, h, true); // [H, H]
        if v.layerscale {
            l.weight(vit_layer(i, "layer_scale1.lambda1"), &[h]); // [H]
        }
        l.layer_norm(&vit_layer(i, "norm2"), h); // [H]
        l.linear(&vit_layer(i, "mlp.fc1"), inter, h, true); // [4H, H]
        l.linear(&vit_layer(i, "mlp.fc2"), h, inter, true); // [H, 4H]
        if v.layerscale {
            l.weight(vit_layer(i, "layer_scale2.lambda1"), &[h]); // [H]
        }
    }
    l.layer_norm("vit.layernorm", h); // [H]

    // Mask extractor, SPEC §6.3 / §11.
    let m = &cfg.mask_extractor;
    for k in 0..m.levels.len() {
        l.linear(&format!("mask.res{}", k + 1), m.embed_dim, h, true); // [E, H]
    }
    l.linear("mask.feat_linear", m.out_dim, m.embed_dim, true); // [D, E]
    for (i, (out, input)) in m.mlp_dims(cfg.pooling.n_tokens()).into_iter().enumerate() {
        l.linear(&format!("mask.mask_linear.layers.{i}"), out, input, true); // [M, S] .. [D, M]
    }

    // Connector, SPEC §5.
    let c = &cfg.connector;
    l.linear("proj", c.out_dim, c.in_dim, c.bias); // [D, H]

    // Decoder (HF Llama without `model.`), SPEC §10.2.
    let d = &cfg.decoder;
    let dm = d.hidden_size;
    l.weight("llm.embed_tokens.weight".into(), &[d.vocab_size, dm]); // [V, D]
    for i in 0..d.n_layers {
        l.weight(llm_layer(i, "input_layernorm.weight"), &[dm]); // [D]
        l.weight(llm_layer(i, "self_attn.q_proj.weight"), &[d.q_dim(), dm]); // [nh·hd, D]
        l.weight(llm_layer(i, "self_attn.k_proj.weight"), &[d.kv_dim(), dm]); // [nkv·hd, D]
        l.weight(llm_layer(i, "self_attn.v_proj.weight"), &[d.kv_dim(), dm]); // [nkv·hd, D]
        l.weight(llm_layer(i, "self_attn.o_proj.weight"), &[dm, d.q_dim()]); // [D, nh·hd]
        l.weight(llm_layer(i, "post_attention_layernorm.weight"), &[dm]); // [D]
        l.weight(llm_layer(i, "mlp.gate_proj.weight"), &[d.intermediate_size, dm]); // [I, D]
        l.weight(llm_layer(i, "mlp.up_proj.weight"), &[d.intermediate_size, dm]); // [I, D]
        l.weight(llm_layer(i, "mlp.down_proj.weight"), &[dm, d.intermediate_size]);
        // [D, I]
    }
    l.weight("llm.norm.weight".into(), &[dm]); // [D]
    if !d.tie_word_embeddings {
        l.weight("llm.lm_head.weight".into(), &[d.vocab_size, dm]); // [V, D]
    }

    l.0.push(ExpectedTensor { name: TOKENIZER.to_string(), shape: Vec::new(), role: TensorRole::Bytes });
    l.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_model_names_and_shapes() {
        let cfg = ModelConfig::default();
        let list = expected_tensors(&cfg);
        let find = |n: &str| list.iter().find(|t| t.name == n).map(|t| t.shape.clone());
        assert_eq!(find("vit.embeddings.position_embeddings"), Some(vec![1, 325, 768]));
        assert_eq!(find("vit.encoder.layer.11.mlp.fc1.weight"), Some(vec![3072, 768]));
        assert_eq!(find("mask.res4.weight"), Some(vec![1024, 768]));
        assert_eq!(find("mask.mask_linear.layers.0.weight"), Some(vec![1024, 356]));
        assert_eq!(find("mask.mask_linear.layers.2.weight"), Some(vec![4096, 1024]));
        assert_eq!(find("proj.weight"), Some(vec![4096, 768]));
        assert_eq!(find("llm.layers.31.self_attn.k_proj.weight"), Some(vec![1024, 4096]));
        assert_eq!(find("llm.lm_head.weight"), Some(vec![128_259, 4096]));
        assert_eq!(list.last().unwrap().name, TOKENIZER);
        // vit: 4 embedding + 18 per layer + 2 final; mask: 4·2 res + 2 feat + 3·2 MLP;
        // proj: 2; llm: 1 + 9 per layer + 2; tokenizer.
        assert_eq!(list.len(), 4 + 18 * 12 + 2 + 8 + 2 + 6 + 2 + 1 + 9 * 32 + 2 + 1);
        let mut names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), list.len());
    }

    #[test]
    fn quant_part_names_round_trip() {
        let n = quant_part("llm.layers.0.mlp.up_proj.weight", QuantType::Q4_1, QuantPart::Mins);
        assert_eq!(n, "llm.layers.0.mlp.up_proj.weight.q4_1.mins");
        assert_eq!(
            parse_quant_part(&n),
            Some(("llm.layers.0.mlp.up_proj.weight", QuantType::Q4_1, QuantPart::Mins))
        );
        assert_eq!(parse_quant_part("llm.norm.weight"), None);
        assert!(is_quantizable(&[64, 128]));
        assert!(!is_quantizable(&[64, 100]));
        assert!(!is_quantizable(&[1, 64, 128]));
        assert_eq!(Component::of("llm.norm.weight"), Some(Component::Llm));
        assert_eq!(Component::of("__pad.3"), Some(Component::Pad));
    }
}
