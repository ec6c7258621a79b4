//! Tokenizer, prompt template and generation settings (SPEC-model.md §9, §10.3).

use serde::{Deserialize, Serialize};

use super::check;
use crate::Result;

/// How the `tokenizer` tensor of the package is to be read (also stored as the
/// `medregion.tokenizer` metadata value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenizerKind {
    /// The synthetic byte-level tokenizer: token id `b` is byte `b` (0..=255), the special tokens
    /// are those of [`TokenizerConfig::special_tokens`]; the tensor holds the ASCII magic
    /// [`BYTES_TOKENIZER_MAGIC`]. Needs no download.
    Bytes,
    /// A Hugging Face `tokenizer.json` (UTF-8 JSON, byte for byte).
    HfJson,
    /// A tiktoken BPE rank file (`tokenizer.model` of Llama 3: base64 token, space, rank per
    /// line); the split pattern and special tokens come from [`TokenizerConfig`].
    Tiktoken,
    /// The `tokenizer.ggml.*` metadata of a GGUF file, re-serialized as JSON by the importer.
    Gguf,
}

/// Content of the `tokenizer` tensor for [`TokenizerKind::Bytes`].
pub const BYTES_TOKENIZER_MAGIC: &[u8] = b"medregion-bytes-tokenizer-v1";

impl TokenizerKind {
    /// The metadata spelling (`bytes`, `hf-json`, `tiktoken`, `gguf`).
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Bytes => "bytes",
            TokenizerKind::HfJson => "hf-json",
            TokenizerKind::Tiktoken => "tiktoken",
            TokenizerKind::Gguf => "gguf",
        }
    }

    /// Parses the metadata spelling.
    pub fn parse(text: &str) -> Option<TokenizerKind> {
        [TokenizerKind::Bytes, TokenizerKind::HfJson, TokenizerKind::Tiktoken, TokenizerKind::Gguf]
            .into_iter()
            .find(|k| k.name() == text)
    }
}

/// One special (added or control) token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialToken {
    pub id: u32,
    pub text: String,
}

/// Tokenizer settings that the tokenizer bytes themselves may not carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Format of the `tokenizer` tensor [default: tiktoken, the Llama 3 `tokenizer.model`].
    #[serde(default = "default_kind")]
    pub kind: TokenizerKind,
    /// Pre-tokenizer split regex for `tiktoken` [CONFIRMED: Llama 3 `pat_str`].
    #[serde(default = "default_pattern")]
    pub pattern: Option<String>,
    /// Special tokens and their ids [CONFIRMED: llama-models 0.3.0 `llama3/tokenizer.py`
    /// (128000-128255), plus the added `<im_patch>`, `<mask>`, `<pos>` INFERRED at 128256+].
    #[serde(default = "default_special_tokens")]
    pub special_tokens: Vec<SpecialToken>,
}

fn default_kind() -> TokenizerKind {
    TokenizerKind::Tiktoken
}

fn default_pattern() -> Option<String> {
    Some(LLAMA3_PATTERN.to_string())
}

fn default_special_tokens() -> Vec<SpecialToken> {
    let mut special_tokens = llama3_special_tokens(128_000);
    special_tokens.extend(added_tokens(128_256));
    special_tokens
}

/// The Llama 3 split pattern.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The 256 Llama 3 special tokens (ids `base..base+256`) as llama-models 0.3.0 names them.
pub fn llama3_special_tokens(base: u32) -> Vec<SpecialToken> {
    let named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ];
    let mut out: Vec<SpecialToken> = named
        .iter()
        .enumerate()
        .map(|(i, t)| SpecialToken { id: base + i as u32, text: t.to_string() })
        .collect();
    for i in named.len()..256 {
        let text = format!("<|reserved_special_token_{}|>", 2 + i - named.len());
        out.push(SpecialToken { id: base + i as u32, text });
    }
    out
}

/// The added multimodal tokens `<im_patch>`, `<mask>`, `<pos>` at `first..first+3`.
pub fn added_tokens(first: u32) -> Vec<SpecialToken> {
    ["<im_patch>", "<mask>", "<pos>"]
        .iter()
        .enumerate()
        .map(|(i, t)| SpecialToken { id: first + i as u32, text: t.to_string() })
        .collect()
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            kind: default_kind(),
            pattern: default_pattern(),
            special_tokens: default_special_tokens(),
        }
    }
}

impl TokenizerConfig {
    /// The id of a special token by its text.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.special_tokens.iter().find(|t| t.text == text).map(|t| t.id)
    }

    pub(super) fn validate(&self, vocab_size: usize) -> Result<()> {
        let mut ids: Vec<u32> = Vec::with_capacity(self.special_tokens.len());
        for (i, t) in self.special_tokens.iter().enumerate() {
            check((t.id as usize) < vocab_size, || {
                format!(
                    "tokenizer.special_tokens[{i}] (`{}` = {}) must be below decoder.vocab_size ({vocab_size})",
                    t.text, t.id
                )
            })?;
            check(!t.text.is_empty(), || format!("tokenizer.special_tokens[{i}].text is empty"))?;
            if self.kind == TokenizerKind::Bytes {
                check(t.id >= 256, || {
                    format!(
                        "tokenizer.special_tokens[{i}] (`{}` = {}) collides with the byte tokens 0..=255",
                        t.text, t.id
                    )
                })?;
            }
            ids.push(t.id);
        }
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        check(ids.len() == n, || "tokenizer.special_tokens has duplicate ids".to_string())?;
        if self.kind == TokenizerKind::Tiktoken {
            check(self.pattern.as_deref().is_some_and(|p| !p.is_empty()), || {
                "tokenizer.pattern is required when tokenizer.kind = tiktoken".to_string()
            })?;
        }
        Ok(())
    }
}

/// Prompt assembly (SPEC §9.2). Placeholders in `template`: `{system}`, `{image}` (the
/// `<im_patch>` run), `{segmentation}`, `{attributes}`, `{instruction}`; in `instruction`:
/// `{region_name}`; in `segmentation_item`: `{name}`, `{mask}`, `{pos}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptConfig {
    /// System prompt [CONFIRMED: the authors' AMOS-MM system prompt, first paraphrase].
    pub system: String,
    /// Full chat-formatted prompt; starts with `<|begin_of_text|>`, so the tokenizer must not
    /// add another BOS [INFERRED layout, Llama 3 chat template].
    pub template: String,
    /// Per-region instruction [INFERRED].
    pub instruction: String,
    /// Text of the image placeholder token, repeated `pooling.n_tokens` times [CONFIRMED: LaMed].
    pub image_token: String,
    /// Text of the mask-token placeholder [CONFIRMED: Osprey].
    pub mask_token: String,
    /// Text of the spatial-token placeholder [CONFIRMED: Osprey].
    pub pos_token: String,
    /// Text before the segmentation list [INFERRED].
    pub segmentation_prefix: String,
    /// One slot of the segmentation list [INFERRED: Osprey's `"region1 <mask><pos>"` style].
    pub segmentation_item: String,
    /// Between slots [INFERRED].
    pub segmentation_separator: String,
    /// After the last slot [INFERRED].
    pub segmentation_suffix: String,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            system: "You are an AI assistant specialized in analyzing chest, abdomen, and pelvis CT scans. \
                     You are provided with a CT scan and specific instructions. Your goal is to provide \
                     clinically relevant details based on the given CT scan. Respond only with the answer \
                     as specified below."
                .to_string(),
            template: "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>\
                       <|start_header_id|>user<|end_header_id|>\n\n{image}\n{segmentation}\n{attributes}\n\
                       Instruction: {instruction}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                .to_string(),
            instruction: "Generate the findings for the {region_name} region.".to_string(),
            image_token: "<im_patch>".to_string(),
            mask_token: "<mask>".to_string(),
            pos_token: "<pos>".to_string(),
            segmentation_prefix: "Segmentation: ".to_string(),
            segmentation_item: "{name} {mask}{pos}".to_string(),
            segmentation_separator: ", ".to_string(),
            segmentation_suffix: ".".to_string(),
        }
    }
}

impl PromptConfig {
    pub(super) fn validate(&self, tokenizer: &TokenizerConfig, decoder_ids: [(&str, u32); 3]) -> Result<()> {
        for placeholder in ["{system}", "{image}", "{segmentation}", "{attributes}", "{instruction}"] {
            let count = self.template.matches(placeholder).count();
            check(count == 1, || {
                format!("prompt.template must contain {placeholder} exactly once (found {count})")
            })?;
        }
        check(self.instruction.contains("{region_name}"), || {
            "prompt.instruction must contain {region_name}".to_string()
        })?;
        for placeholder in ["{name}", "{mask}", "{pos}"] {
            check(self.segmentation_item.matches(placeholder).count() == 1, || {
                format!("prompt.segmentation_item must contain {placeholder} exactly once")
            })?;
        }
        check(self.segmentation_item.find("{mask}") < self.segmentation_item.find("{pos}"), || {
            "prompt.segmentation_item must put {mask} before {pos} (the spatial token follows the mask token)"
                .to_string()
        })?;
        let texts = [
            ("prompt.image_token", &self.image_token),
            ("prompt.mask_token", &self.mask_token),
            ("prompt.pos_token", &self.pos_token),
        ];
        for ((field, text), (id_field, id)) in texts.into_iter().zip(decoder_ids) {
            let found = tokenizer.special_id(text);
            check(found == Some(id), || match found {
                Some(other) => format!("{field} (`{text}`) is special token {other} but {id_field} is {id}"),
                None => format!("{field} (`{text}`) is not in tokenizer.special_tokens (expected id {id})"),
            })?;
        }
        Ok(())
    }
}

/// Decoding and report merging (SPEC §9.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// New tokens per region [INFERRED from the AMOS eval default: 256].
    pub max_new_tokens: usize,
    /// Prompt + answer limit [PAPER: 2048].
    pub max_seq_len: usize,
    /// Decode the regions as one batch sharing the prefix [DESIGN §2].
    pub batch_regions: bool,
    /// Prefix each region's text with its header ("Lung: ...") when merging [INFERRED: false].
    pub merge_headers: bool,
    /// Drop region outputs equal to `no_findings_text` from the merged report [INFERRED: false].
    pub drop_no_findings: bool,
    /// The "normal region" answer [CONFIRMED text of the region-split prompts].
    pub no_findings_text: String,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            max_seq_len: 2048,
            batch_regions: true,
            merge_headers: false,
            drop_no_findings: false,
            no_findings_text: "No relevant findings.".to_string(),
        }
    }
}

impl GenerationConfig {
    pub(super) fn validate(&self, max_positions: usize) -> Result<()> {
        check(self.max_new_tokens >= 1, || "generation.max_new_tokens must be at least 1".to_string())?;
        check(self.max_seq_len > self.max_new_tokens, || {
            format!(
                "generation.max_seq_len ({}) must exceed generation.max_new_tokens ({})",
                self.max_seq_len, self.max_new_tokens
            )
        })?;
        check(self.max_seq_len <= max_positions, || {
            format!(
                "generation.max_seq_len ({}) must not exceed decoder.max_position_embeddings ({max_positions})",
                self.max_seq_len
            )
        })
    }
}
