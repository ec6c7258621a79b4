//! Building one package from several checkpoints: the library side of `medregion convert`.
//!
//! [`import`] turns [`ImportOptions`] (any combination of a GGUF decoder, a Hugging Face LLaMA
//! with an optional LoRA adapter, a Hugging Face Dinov2 / RAD-DINO encoder, a safetensors file
//! of MedRegion heads) into a validated [`ModelConfig`], the tokenizer bytes and a
//! [`WeightSource`] for [`crate::io::package::PackageBuilder`].
//!
//! Choices (the issue is silent on them):
//!
//! * **Components nobody supplied are synthetic.** A package always holds every component
//!   (the loader checks it against the config), so a component not given on the command line is
//!   filled with the seeded random weights of the `fill` preset's shapes
//!   ([`crate::model::synthetic`]), adapted to the supplied ones (connector and mask-extractor
//!   widths follow the decoder and encoder). [`Imported::synthetic`] lists them; the converter
//!   says so, and records them in the config's `name`. A decoder-only conversion of SmolLM2 is
//!   therefore a runnable package whose image path is noise, which is what the decoder tests need.
//! * **The added tokens.** MedRegion feeds `<im_patch>`, `<mask>`, `<pos>` to the decoder. When
//!   the decoder's vocabulary lacks them (a base LLM), they are appended at ids `V, V+1, V+2`
//!   and `embed_tokens` (and an untied `lm_head`) grow by three rows, each the mean of the
//!   existing rows (the `mean_resizing` of transformers' `resize_token_embeddings`, without its
//!   random jitter). The original rows are stored untouched, so a GGUF import stays bit-exact.
//!   These tokens are inputs only; the decoder never samples them.
//! * **GGUF storage types** are kept (`llm` = "as the source"), unless `--quant` names a type
//!   for `llm`: F32/F16/BF16/Q8_0/Q4_0/Q4_1 are copied losslessly (quantized rows only
//!   re-ordered: Q/K rows are un-permuted back to Hugging Face order, see
//!   [`crate::io::gguf::llama`]); K-quants and other types are dequantized and re-quantized
//!   to `kquant_fallback` (Q8_0 by default), with the error measured and reported per tensor
//!   ([`Imported::notes`]).
//! * **GGUF RoPE.** Plain RoPE only; a `rope_freqs` tensor (Llama 3.1's `llama3` scaling, which
//!   llama.cpp stores as per-dimension factors) or any `llama.rope.scaling.type` other than
//!   `none` is [`Error::Unsupported`]: convert the Hugging Face checkpoint instead, whose config
//!   states the scaling parameters.
//! * **Stop tokens of a GGUF**: its `eos` and `eot` ids plus every control token spelled like a
//!   well-known end of text or turn (`<|endoftext|>`, `<|im_end|>`, `<|eot_id|>`, ...), as
//!   llama.cpp does; SmolLM2 thus stops at `<|im_end|>` (2) and `<|endoftext|>` (0).
//! * **Tokenizer** precedence: `tokenizer` file (`.json` → Hugging Face, `.gguf` → its metadata,
//!   anything else → a tiktoken rank file such as Llama 3's `tokenizer.model`), else the GGUF's
//!   own, else `tokenizer.json` / `tokenizer.model` / `original/tokenizer.model` in the LLaMA
//!   folder, else the fill preset's byte tokenizer when the decoder is synthetic; a real decoder
//!   without a tokenizer is an error unless `byte_tokenizer` is set.
//! * **Memory.** Hugging Face checkpoints are read whole into f32 by the importers (an 8B model
//!   needs 32 GB); GGUF and heads files are memory-mapped and read one tensor at a time.
//!
//! Heads file names: the package's canonical names, `mask.*` (SPEC §11: `mask.res{k}.*`,
//! `mask.feat_linear.*`, `mask.mask_linear.*`, `mask.mlp.{i}.*`) and `proj.*` (SPEC §5), in F32,
//! F16 or BF16 (see `crate::model::names::expected_tensors` for the full list with shapes). A
//! heads file must hold both components completely and nothing else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::io::gguf::llama::{hf_tensor_name, unpermute_qk};
use crate::io::gguf::{GgufFile, GgufTensorInfo};
use crate::io::hf::{load_dinov2, load_llama, HfDinov2Config, HfLlamaConfig, NamedTensor, SafetensorsSet};
use crate::io::package::{SourceTensor, WeightSource};
use crate::model::config::{
    added_tokens, llama3_special_tokens, DecoderConfig, LoraInfo, ModelConfig, RopeScaling, RopeType,
    SpecialToken, TokenizerKind, BYTES_TOKENIZER_MAGIC,
};
use crate::model::names::{expected_tensors, Component, TensorRole};
use crate::model::synthetic::{Preset, SyntheticSource};
use crate::quant::{self, QuantType, Quantized, QK};
use crate::tensor::WeightType;
use crate::tokenizer::GgufTokenizerJson;
use crate::{Error, Result};

/// What to build a package from. Every `None` component is synthetic (see the module doc).
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// A GGUF file of the llama architecture: the decoder and its tokenizer.
    pub gguf: Option<PathBuf>,
    /// A Hugging Face `LlamaForCausalLM` folder (config.json + safetensors, sharded or not).
    pub llm_hf: Option<PathBuf>,
    /// A PEFT LoRA adapter folder merged into `llm_hf`.
    pub lora: Option<PathBuf>,
    /// A Hugging Face `Dinov2Model` folder (RAD-DINO).
    pub vit_hf: Option<PathBuf>,
    /// The encoder input size the package runs at (default: the fill preset's).
    pub vit_image_size: Option<usize>,
    /// A safetensors file with the `mask.*` and `proj.*` weights.
    pub heads: Option<PathBuf>,
    /// A tokenizer file overriding the one that comes with the decoder.
    pub tokenizer: Option<PathBuf>,
    /// Use the byte-level tokenizer (ids 0..=255 are bytes) for a real decoder.
    pub byte_tokenizer: bool,
    /// Preset whose shapes (and seeded random weights) fill what is not supplied.
    pub fill: Preset,
    /// Seed of the synthetic weights.
    pub seed: u64,
    /// Storage type for GGUF tensors we cannot copy losslessly (K-quants).
    pub kquant_fallback: WeightType,
    /// Threads for synthetic weights.
    pub threads: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            gguf: None,
            llm_hf: None,
            lora: None,
            vit_hf: None,
            vit_image_size: None,
            heads: None,
            tokenizer: None,
            byte_tokenizer: false,
            fill: Preset::Tiny,
            seed: 0,
            kquant_fallback: WeightType::Q8_0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The result of [`import`]: hand `config` and `tokenizer` to `PackageBuilder::new` and
/// `source` to `write`; `source_types` are per-tensor storage overrides that keep the GGUF's
/// types (apply them unless the user chose a type for `llm`).
pub struct Imported {
    pub config: ModelConfig,
    pub tokenizer: Vec<u8>,
    pub source: ImportSource,
    /// `(canonical name, storage type)` of every GGUF tensor (lossless where possible).
    pub source_types: Vec<(String, WeightType)>,
    /// Components filled with synthetic weights.
    pub synthetic: Vec<Component>,
    /// Human-readable remarks (added tokens, K-quant conversion errors, ...).
    pub notes: Vec<String>,
}

/// Builds the config, tokenizer and weight source of a package from `opts`.
pub fn import(opts: &ImportOptions) -> Result<Imported> {
    if opts.gguf.is_some() && opts.llm_hf.is_some() {
        return Err(Error::invalid("source", "give either --gguf or --llm-hf for the decoder, not both"));
    }
    if opts.lora.is_some() && opts.llm_hf.is_none() {
        return Err(Error::invalid("--lora", "a LoRA adapter needs the base model (--llm-hf DIR)"));
    }
    if opts.vit_image_size.is_some() && opts.vit_hf.is_none() {
        return Err(Error::invalid("--vit-image-size", "only applies with --vit-hf DIR"));
    }
    let mut config = opts.fill.config();
    let mut notes = Vec::new();
    let mut synthetic = Vec::new();
    let mut src = ImportSource {
        synthetic: SyntheticSource { seed: opts.seed, threads: opts.threads.max(1) },
        gguf: None,
        hf: HashMap::new(),
        hf_components: Vec::new(),
        heads: None,
        source_vocab: None,
    };

    // --- decoder (and its tokenizer) ---------------------------------------------------------
    let mut tokenizer: Option<(TokenizerKind, Vec<u8>, Vec<SpecialToken>)> = None;
    let mut source_types = Vec::new();
    let decoder_given = opts.gguf.is_some() || opts.llm_hf.is_some();
    if let Some(path) = &opts.gguf {
        let g = GgufFile::open(path)?;
        config.decoder = decoder_from_gguf(&g, path)?;
        let t = g.tokenizer()?;
        let json = GgufTokenizerJson::from(&t);
        let specials = gguf_specials(&json);
        tokenizer = Some((TokenizerKind::Gguf, json.to_bytes(), specials));
        source_types = gguf_storage_types(&g, opts.kquant_fallback, &mut notes)?;
        src.gguf = Some(GgufSource::new(g, &config.decoder, opts.kquant_fallback)?);
    } else if let Some(dir) = &opts.llm_hf {
        let (hf, tensors) = load_llama(dir, opts.lora.as_deref())?;
        config.decoder = decoder_from_hf(&hf, &config.decoder)?;
        if let Some(lora_dir) = &opts.lora {
            // `load_llama` has opened and merged the adapter; only its config is needed here.
            let lora: crate::io::hf::LoraConfig =
                crate::io::hf::safetensors_in::read_json(&lora_dir.join("adapter_config.json"))?;
            config.decoder.lora =
                Some(LoraInfo { r: lora.r, alpha: lora.lora_alpha, target_modules: Vec::new() });
        }
        src.hf.extend(tensors.into_iter().map(|t| (t.name.clone(), t)));
        src.hf_components.push(Component::Llm);
        tokenizer = find_tokenizer_in_dir(dir)?;
    } else {
        synthetic.push(Component::Llm);
    }
    if let Some(path) = &opts.tokenizer {
        tokenizer = Some(read_tokenizer_file(path)?);
    }
    if decoder_given {
        let (kind, bytes, mut specials) = match tokenizer {
            Some(t) => t,
            None if opts.byte_tokenizer => (TokenizerKind::Bytes, BYTES_TOKENIZER_MAGIC.to_vec(), Vec::new()),
            None => {
                return Err(Error::invalid(
                    "tokenizer",
                    "the decoder came without a tokenizer: give --tokenizer FILE (tokenizer.json, \
                     tokenizer.model or a .gguf) or --byte-tokenizer",
                ))
            }
        };
        let base_vocab = config.decoder.vocab_size;
        add_medregion_tokens(&mut config, kind, &mut specials, &mut notes);
        if config.decoder.vocab_size != base_vocab {
            src.source_vocab = Some(base_vocab);
        }
        config.tokenizer.kind = kind;
        config.tokenizer.pattern =
            (kind == TokenizerKind::Tiktoken).then(|| crate::model::config::LLAMA3_PATTERN.to_string());
        config.tokenizer.special_tokens = specials;
        tokenizer = Some((kind, bytes, Vec::new()));
    }

    // --- vision encoder ----------------------------------------------------------------------
    if let Some(dir) = &opts.vit_hf {
        let target = opts.vit_image_size.unwrap_or(config.vision.image_size);
        let (hf, tensors) = load_dinov2(dir, Some(target))?;
        vision_from_hf(&mut config, &hf);
        src.hf.extend(tensors.into_iter().map(|t| (t.name.clone(), t)));
        src.hf_components.push(Component::Vit);
    } else {
        synthetic.push(Component::Vit);
    }

    // --- heads and the widths that tie the components together -------------------------------
    config.connector.in_dim = config.vision.hidden_size;
    config.connector.out_dim = config.decoder.hidden_size;
    config.mask_extractor.out_dim = config.decoder.hidden_size;
    config.mask_extractor.levels.retain(|&l| l <= config.vision.n_layers);
    if config.mask_extractor.levels.is_empty() {
        config.mask_extractor.levels = vec![config.vision.n_layers];
    }
    let g = &mut config.generation;
    g.max_seq_len = g.max_seq_len.min(config.decoder.max_position_embeddings);
    g.max_new_tokens = g.max_new_tokens.min(g.max_seq_len / 2);
    if let Some(path) = &opts.heads {
        src.heads = Some(SafetensorsSet::open_file(path)?);
    } else {
        synthetic.extend([Component::Mask, Component::Proj]);
    }
    synthetic.sort();

    if !synthetic.is_empty() {
        let names: Vec<&str> = synthetic.iter().map(|c| c.name()).collect();
        config.name = format!(
            "{} (synthetic {}: {} seed {})",
            config.name,
            names.join(","),
            opts.fill.name(),
            opts.seed
        );
        if config.name.len() > 256 {
            config.name.truncate(256);
        }
    }
    if decoder_given {
        config.name = match (&opts.gguf, &opts.llm_hf) {
            (Some(p), _) | (None, Some(p)) => format!("{} from {}", base_name(p), config.name),
            _ => config.name,
        };
        config.name.truncate(256);
    }
    config.validate()?;
    if let Some(heads) = &src.heads {
        check_heads(heads, &config)?;
    }
    let tokenizer_bytes = match tokenizer {
        Some((_, bytes, _)) => bytes,
        None => crate::model::synthetic::bytes_tokenizer(),
    };
    Ok(Imported { config, tokenizer: tokenizer_bytes, source: src, source_types, synthetic, notes })
}

fn base_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------------------------------------
// Decoder configs

fn decoder_from_gguf(g: &GgufFile, path: &Path) -> Result<DecoderConfig> {
    let p = g.llama_params()?;
    let what = path.display();
    if p.has_rope_freqs {
        return Err(Error::Unsupported(format!(
            "{what}: a `rope_freqs` tensor (Llama 3.1 `llama3` RoPE scaling stored as factors) is not \
             imported; convert the Hugging Face checkpoint (its config states the scaling) instead"
        )));
    }
    if !(p.rope_scaling.kind == "none" || p.rope_scaling.kind.is_empty()) || p.rope_scaling.factor != 1.0 {
        return Err(Error::Unsupported(format!(
            "{what}: RoPE scaling `{}` (factor {}) is not supported for GGUF import",
            p.rope_scaling.kind, p.rope_scaling.factor
        )));
    }
    if p.n_rot != p.head_dim {
        return Err(Error::Unsupported(format!(
            "{what}: partial rotary embeddings (rope.dimension_count {} < head dim {})",
            p.n_rot, p.head_dim
        )));
    }
    let t = g.tokenizer()?;
    let bos = t
        .bos_token_id
        .ok_or_else(|| Error::format(what.to_string(), "tokenizer.ggml.bos_token_id is missing"))?;
    let mut eos: Vec<u32> = t.eos_token_id.into_iter().chain(t.eot_token_id).collect();
    // Chat models end a turn with a control token the GGUF may not declare as EOS; like
    // llama.cpp, stop at the well-known end-of-text / end-of-turn control tokens too.
    for (i, text) in t.tokens.iter().enumerate() {
        let control =
            t.token_types.get(i).is_none_or(|&ty| ty == crate::tokenizer::gguf::token_type::CONTROL);
        if control && EOG_TEXTS.contains(&text.as_str()) && !eos.contains(&(i as u32)) {
            eos.push(i as u32);
        }
    }
    if eos.is_empty() {
        return Err(Error::format(what.to_string(), "tokenizer.ggml.eos_token_id is missing"));
    }
    Ok(DecoderConfig {
        vocab_size: p.n_vocab,
        hidden_size: p.n_embd,
        intermediate_size: p.n_ff,
        n_layers: p.n_layer,
        n_heads: p.n_head,
        n_kv_heads: p.n_head_kv,
        head_dim: p.head_dim,
        rms_norm_eps: p.rms_norm_eps,
        rope_theta: f64::from(p.rope_freq_base),
        rope_scaling: None,
        max_position_embeddings: p.n_ctx_train,
        tie_word_embeddings: p.tied_embeddings,
        bos_token_id: bos,
        eos_token_ids: eos,
        // Set by `add_medregion_tokens`.
        image_token_id: 0,
        mask_token_id: 0,
        pos_token_id: 0,
        lora: None,
        ..DecoderConfig::default()
    })
}

/// Control tokens that end generation wherever they appear in a GGUF vocabulary.
const EOG_TEXTS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
];

fn decoder_from_hf(hf: &HfLlamaConfig, fill: &DecoderConfig) -> Result<DecoderConfig> {
    let rope_scaling = hf.rope_scaling.as_ref().map(|s| RopeScaling {
        rope_type: RopeType::Llama3,
        factor: s.factor,
        low_freq_factor: s.low_freq_factor,
        high_freq_factor: s.high_freq_factor,
        original_max_position_embeddings: s.original_max_position_embeddings,
    });
    let bos = hf.bos_token_id.first().copied().unwrap_or(fill.bos_token_id.min(hf.vocab_size as u32 - 1));
    Ok(DecoderConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        n_layers: hf.num_hidden_layers,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.num_key_value_heads,
        head_dim: hf.head_dim,
        rms_norm_eps: hf.rms_norm_eps as f32,
        rope_theta: hf.rope_theta,
        rope_scaling,
        max_position_embeddings: hf.max_position_embeddings,
        tie_word_embeddings: hf.tie_word_embeddings,
        bos_token_id: bos,
        eos_token_ids: if hf.eos_token_id.is_empty() { vec![bos] } else { hf.eos_token_id.clone() },
        image_token_id: 0,
        mask_token_id: 0,
        pos_token_id: 0,
        lora: None,
        ..fill.clone()
    })
}

fn vision_from_hf(config: &mut ModelConfig, hf: &HfDinov2Config) {
    let v = &mut config.vision;
    v.hidden_size = hf.hidden_size;
    v.n_layers = hf.num_hidden_layers;
    v.n_heads = hf.num_attention_heads;
    v.intermediate_size = hf.intermediate_size;
    v.patch_size = hf.patch_size;
    v.num_channels = hf.num_channels;
    v.image_size = hf.encoder_image_size;
    v.pretrained_image_size = hf.image_size;
    v.layer_norm_eps = hf.layer_norm_eps as f32;
    v.qkv_bias = hf.qkv_bias;
    v.layerscale = true;
}

/// Appends `<im_patch>`, `<mask>`, `<pos>` after the vocabulary unless the tokenizer already
/// has them, and points the decoder's ids at them.
fn add_medregion_tokens(
    config: &mut ModelConfig,
    kind: TokenizerKind,
    specials: &mut Vec<SpecialToken>,
    notes: &mut Vec<String>,
) {
    let d = &mut config.decoder;
    let find = |s: &[SpecialToken], text: &str| s.iter().find(|t| t.text == text).map(|t| t.id);
    if kind == TokenizerKind::Tiktoken && specials.is_empty() {
        // A bare Llama 3 rank file: its 256 special tokens follow the ranks.
        specials.extend(llama3_special_tokens(128_000));
    }
    let texts = [&config.prompt.image_token, &config.prompt.mask_token, &config.prompt.pos_token];
    if texts.iter().all(|t| find(specials, t).is_some()) {
        d.image_token_id = find(specials, texts[0]).unwrap_or_default();
        d.mask_token_id = find(specials, texts[1]).unwrap_or_default();
        d.pos_token_id = find(specials, texts[2]).unwrap_or_default();
        return;
    }
    let first = (d.vocab_size as u32).max(specials.iter().map(|t| t.id + 1).max().unwrap_or(0));
    let mut added = added_tokens(first);
    for (t, text) in added.iter_mut().zip(texts) {
        t.text = text.clone();
    }
    d.image_token_id = first;
    d.mask_token_id = first + 1;
    d.pos_token_id = first + 2;
    notes.push(format!(
        "added {}, {}, {} as tokens {}..{} (embedding rows: the mean of the existing rows)",
        texts[0],
        texts[1],
        texts[2],
        first,
        first + 2
    ));
    d.vocab_size = first as usize + 3;
    specials.extend(added);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

/// The GGUF's control and user-defined tokens as special tokens of the config.
fn gguf_specials(json: &GgufTokenizerJson) -> Vec<SpecialToken> {
    use crate::tokenizer::gguf::token_type as tt;
    json.tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(json.token_type(*i), tt::CONTROL | tt::USER_DEFINED))
        .map(|(i, t)| SpecialToken { id: i as u32, text: t.clone() })
        .collect()
}

fn read_tokenizer_file(path: &Path) -> Result<(TokenizerKind, Vec<u8>, Vec<SpecialToken>)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext == "gguf" {
        let g = GgufFile::open_any_architecture(path)?;
        let json = GgufTokenizerJson::from(&g.tokenizer()?);
        let specials = gguf_specials(&json);
        return Ok((TokenizerKind::Gguf, json.to_bytes(), specials));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    if ext == "json" {
        let specials = hf_json_specials(&bytes, path)?;
        Ok((TokenizerKind::HfJson, bytes, specials))
    } else {
        Ok((TokenizerKind::Tiktoken, bytes, Vec::new()))
    }
}

/// The `added_tokens` of a `tokenizer.json` that are marked special.
fn hf_json_specials(bytes: &[u8], path: &Path) -> Result<Vec<SpecialToken>> {
    #[derive(serde::Deserialize)]
    struct Added {
        id: u32,
        content: String,
        #[serde(default)]
        special: bool,
    }
    #[derive(serde::Deserialize)]
    struct Json {
        #[serde(default)]
        added_tokens: Vec<Added>,
    }
    let j: Json = serde_json::from_slice(bytes)
        .map_err(|e| Error::format(path.display().to_string(), format!("not a tokenizer.json: {e}")))?;
    Ok(j.added_tokens
        .into_iter()
        .filter(|a| a.special)
        .map(|a| SpecialToken { id: a.id, text: a.content })
        .collect())
}

fn find_tokenizer_in_dir(dir: &Path) -> Result<Option<(TokenizerKind, Vec<u8>, Vec<SpecialToken>)>> {
    for name in ["tokenizer.json", "tokenizer.model", "original/tokenizer.model"] {
        let p = dir.join(name);
        if p.is_file() {
            return read_tokenizer_file(&p).map(Some);
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// GGUF tensors

fn gguf_storage_types(
    g: &GgufFile,
    fallback: WeightType,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, WeightType)>> {
    let mut out = Vec::new();
    let mut converted = 0usize;
    for t in g.tensors() {
        let Some(hf) = hf_tensor_name(&t.name) else { continue };
        let ty = match t.ggml_type.name() {
            "F32" => WeightType::F32,
            "F16" => WeightType::F16,
            "BF16" => WeightType::Bf16,
            _ => match t.ggml_type.quant_type() {
                Some(QuantType::Q8_0) => WeightType::Q8_0,
                Some(QuantType::Q4_0) => WeightType::Q4_0,
                Some(QuantType::Q4_1) => WeightType::Q4_1,
                None => {
                    converted += 1;
                    if t.dims.len() == 2 && t.dims[0] % QK as u64 == 0 {
                        fallback
                    } else {
                        WeightType::F32
                    }
                }
            },
        };
        out.push((format!("llm.{hf}"), ty));
    }
    if converted > 0 {
        notes.push(format!("{converted} GGUF tensors in types without a lossless copy are dequantized and re-stored as {fallback}; the error of each is reported after writing"));
    }
    Ok(out)
}

/// GGUF tensors by canonical name, un-permuting Q/K rows.
pub struct GgufSource {
    file: GgufFile,
    by_name: HashMap<String, String>,
    n_heads: usize,
    n_kv_heads: usize,
    /// Storage type of tensors that cannot be copied losslessly.
    fallback: WeightType,
    /// `(canonical name, GGUF type, stored as, error)` of every such tensor.
    converted: Vec<ConversionError>,
}

/// How far a GGUF tensor without a lossless copy (a K-quant, Q5_x, ...) moved when re-stored:
/// the error of `fallback(dequantized)` against the dequantized GGUF values.
#[derive(Clone, Debug, PartialEq)]
pub struct ConversionError {
    pub name: String,
    pub gguf_type: String,
    pub stored_as: WeightType,
    /// ‖stored − source‖₂ / ‖source‖₂.
    pub rel_rms: f64,
    /// max |stored − source|.
    pub max_abs: f64,
}

/// The error of storing `values` (a `[rows, cols]` weight) as `ty`; f32 is exact.
pub fn storage_error(values: &[f32], ty: WeightType) -> Result<(f64, f64)> {
    let stored: Vec<f32> = match ty {
        WeightType::F32 => return Ok((0.0, 0.0)),
        WeightType::F16 => values.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        WeightType::Bf16 => values.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
        WeightType::Q8_0 | WeightType::Q4_0 | WeightType::Q4_1 => {
            let q = ty.quant().ok_or_else(|| Error::Internal(format!("{ty} is not a quantized type")))?;
            quant::quantize(q, values)?.dequantize()?
        }
    };
    let (mut num, mut den, mut max) = (0f64, 0f64, 0f64);
    for (&a, &b) in stored.iter().zip(values) {
        let d = f64::from(a) - f64::from(b);
        num += d * d;
        den += f64::from(b) * f64::from(b);
        max = max.max(d.abs());
    }
    Ok((if den > 0.0 { (num / den).sqrt() } else { num.sqrt() }, max))
}

impl GgufSource {
    fn new(file: GgufFile, d: &DecoderConfig, fallback: WeightType) -> Result<GgufSource> {
        let mut by_name = HashMap::new();
        for t in file.tensors() {
            if let Some(hf) = hf_tensor_name(&t.name) {
                by_name.insert(format!("llm.{hf}"), t.name.clone());
            }
        }
        Ok(GgufSource {
            file,
            by_name,
            n_heads: d.n_heads,
            n_kv_heads: d.n_kv_heads,
            fallback,
            converted: Vec::new(),
        })
    }

    fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).and_then(|g| self.file.tensor(g))
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor> {
        let t = self
            .info(name)
            .ok_or_else(|| Error::NotFound(format!("tensor `{name}` in {}", self.file.what())))?;
        let found = t.shape();
        if found.len() != shape.len() || found.iter().zip(shape).any(|(&a, &b)| a != b as u64) {
            return Err(Error::Shape {
                what: format!("GGUF tensor `{}` (for `{name}`)", t.name),
                expected: format!("{shape:?}"),
                found: format!("{found:?}"),
            });
        }
        let heads = if name.ends_with("self_attn.q_proj.weight") {
            Some(self.n_heads)
        } else if name.ends_with("self_attn.k_proj.weight") {
            Some(self.n_kv_heads)
        } else {
            None
        };
        let rows = shape.first().copied().unwrap_or(1);
        let permute = |v: Vec<f32>| -> Result<Vec<f32>> {
            match heads {
                Some(h) => unpermute_qk(&v, rows, h),
                None => Ok(v),
            }
        };
        let data = self.file.tensor_data(&t.name)?;
        match t.ggml_type.name() {
            "F16" => {
                let v: Vec<f16> = data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect();
                return Ok(SourceTensor::F16(match heads {
                    Some(h) => unpermute_qk(&v, rows, h)?,
                    None => v,
                }));
            }
            "BF16" => {
                let v: Vec<bf16> = data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]])).collect();
                return Ok(SourceTensor::BF16(match heads {
                    Some(h) => unpermute_qk(&v, rows, h)?,
                    None => v,
                }));
            }
            _ => {}
        }
        if let Some(q) = self.file.tensor_quantized(&t.name)? {
            let q = match heads {
                Some(h) => Quantized {
                    qtype: q.qtype,
                    values: unpermute_qk(&q.values, rows, h)?,
                    scales: unpermute_qk(&q.scales, rows, h)?,
                    mins: if q.mins.is_empty() { q.mins } else { unpermute_qk(&q.mins, rows, h)? },
                },
                None => q,
            };
            return Ok(SourceTensor::Quant(q));
        }
        // No lossless copy: dequantize; the writer stores it as `fallback` (2-D, cols % 32 == 0)
        // or f32. Measure what that costs.
        let gguf_type = t.ggml_type.name().to_string();
        let values = permute(self.file.tensor_f32(&t.name)?)?;
        let stored_as =
            if shape.len() == 2 && shape[1].is_multiple_of(QK) { self.fallback } else { WeightType::F32 };
        let (rel_rms, max_abs) = storage_error(&values, stored_as)?;
        self.converted.push(ConversionError {
            name: name.to_string(),
            gguf_type,
            stored_as,
            rel_rms,
            max_abs,
        });
        Ok(SourceTensor::F32(values))
    }
}

// ---------------------------------------------------------------------------------------------
// The combined source

/// The [`WeightSource`] of an import: GGUF, Hugging Face tensors, heads file, synthetic fill.
pub struct ImportSource {
    synthetic: SyntheticSource,
    gguf: Option<GgufSource>,
    hf: HashMap<String, NamedTensor>,
    /// Components the Hugging Face tensors supply (every tensor of these must come from `hf`).
    hf_components: Vec<Component>,
    heads: Option<SafetensorsSet>,
    /// The decoder's own vocabulary when the added tokens extend it.
    source_vocab: Option<usize>,
}

impl ImportSource {
    /// The GGUF tensors that were not copied losslessly, with the error of their new storage
    /// type (filled while the package is written).
    pub fn conversion_errors(&self) -> &[ConversionError] {
        self.gguf.as_ref().map_or(&[], |g| &g.converted)
    }

    fn component_source(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor> {
        let component = Component::of(name);
        if component == Some(Component::Llm) {
            if let Some(g) = self.gguf.as_mut() {
                return g.tensor(name, shape);
            }
        }
        if component.is_some_and(|c| self.hf_components.contains(&c)) {
            let t = self
                .hf
                .remove(name)
                .ok_or_else(|| Error::NotFound(format!("tensor `{name}` in the Hugging Face checkpoint")))?;
            if t.shape != shape {
                return Err(Error::Shape {
                    what: format!("imported tensor `{name}`"),
                    expected: format!("{shape:?}"),
                    found: format!("{:?}", t.shape),
                });
            }
            return Ok(SourceTensor::F32(t.data));
        }
        if matches!(component, Some(Component::Mask | Component::Proj)) {
            if let Some(heads) = &self.heads {
                return Ok(SourceTensor::F32(heads.read_named(name, name, shape)?.data));
            }
        }
        self.synthetic.tensor(name, shape)
    }
}

impl WeightSource for ImportSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor> {
        let grows = matches!(name, "llm.embed_tokens.weight" | "llm.lm_head.weight");
        match (self.source_vocab, grows, shape) {
            (Some(v), true, &[rows, cols]) if rows > v => {
                let base = self.component_source(name, &[v, cols])?;
                extend_rows(base, v, rows, cols)
            }
            _ => self.component_source(name, shape),
        }
    }
}

/// Appends `rows - v` rows, each the mean of the `v` existing ones; existing rows are untouched
/// (quantized blocks copied as they are, the new rows quantized in the same type).
fn extend_rows(base: SourceTensor, v: usize, rows: usize, cols: usize) -> Result<SourceTensor> {
    let extra = rows - v;
    let mean_of = |values: &[f32]| -> Vec<f32> {
        let mut acc = vec![0f64; cols];
        for row in values.chunks_exact(cols) {
            acc.iter_mut().zip(row).for_each(|(a, &x)| *a += f64::from(x));
        }
        acc.iter().map(|&a| (a / v as f64) as f32).collect()
    };
    Ok(match base {
        SourceTensor::F32(mut values) => {
            let mean = mean_of(&values);
            (0..extra).for_each(|_| values.extend_from_slice(&mean));
            SourceTensor::F32(values)
        }
        SourceTensor::F16(mut values) => {
            let f: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
            let mean = mean_of(&f);
            (0..extra).for_each(|_| values.extend(mean.iter().map(|&x| f16::from_f32(x))));
            SourceTensor::F16(values)
        }
        SourceTensor::BF16(mut values) => {
            let f: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
            let mean = mean_of(&f);
            (0..extra).for_each(|_| values.extend(mean.iter().map(|&x| bf16::from_f32(x))));
            SourceTensor::BF16(values)
        }
        SourceTensor::Quant(mut q) => {
            let mean = mean_of(&q.dequantize()?);
            let row = quant::quantize(q.qtype, &mean)?;
            for _ in 0..extra {
                q.values.extend_from_slice(&row.values);
                q.scales.extend_from_slice(&row.scales);
                q.mins.extend_from_slice(&row.mins);
            }
            SourceTensor::Quant(q)
        }
    })
}

/// A heads file must hold exactly the `mask.*` and `proj.*` weights, with the config's shapes.
fn check_heads(set: &SafetensorsSet, config: &ModelConfig) -> Result<()> {
    let expected: Vec<_> = expected_tensors(config)
        .into_iter()
        .filter(|t| t.role == TensorRole::Weight)
        .filter(|t| matches!(Component::of(&t.name), Some(Component::Mask | Component::Proj)))
        .collect();
    for t in &expected {
        match set.shape(&t.name) {
            None => {
                return Err(Error::NotFound(format!(
                    "tensor `{}` in the heads file {}",
                    t.name,
                    set.origin()
                )))
            }
            Some(shape) => crate::io::hf::safetensors_in::check_shape(&t.name, &t.shape, shape)?,
        }
    }
    if let Some(extra) = set.names().find(|n| !expected.iter().any(|t| t.name == *n)) {
        return Err(Error::format(
            set.origin(),
            format!("unexpected tensor `{extra}` in the heads file (only the config's mask.* and proj.* weights belong there)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_error_is_measured_per_type() {
        let values: Vec<f32> = (0..64 * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        assert_eq!(storage_error(&values, WeightType::F32).unwrap(), (0.0, 0.0));
        let (q8, q8_max) = storage_error(&values, WeightType::Q8_0).unwrap();
        let (q4, q4_max) = storage_error(&values, WeightType::Q4_0).unwrap();
        let (h, _) = storage_error(&values, WeightType::F16).unwrap();
        // Q8_0 rounds to 1/127 of each block's max, Q4_0 to 1/8: ordered and bounded.
        assert!(h < q8 && q8 < q4, "f16 {h}, q8_0 {q8}, q4_0 {q4}");
        assert!(q8 > 0.0 && q8 < 0.01 && q8_max <= 1.0 / 127.0 * 0.51 + 1e-6, "q8_0 {q8} {q8_max}");
        assert!(q4 < 0.2 && q4_max <= 1.0 / 8.0 * 0.51 + 1e-6 + 1.0 / 16.0, "q4_0 {q4} {q4_max}");
    }
}
