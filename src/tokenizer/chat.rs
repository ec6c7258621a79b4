//! Chat templates: one system + one user message → prompt ids ending with the assistant
//! header, for the two formats our models use. We do not run Jinja; each format is written out
//! by hand after the model's own template:
//!
//! * [`ChatTemplate::Llama3`]: the Llama-3-Instruct `tokenizer_config.json` template (SPEC
//!   §10.3): `<|begin_of_text|>` then per message
//!   `<|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>`, then
//!   `<|start_header_id|>assistant<|end_header_id|>\n\n`. No system message when none is given
//!   (the 3.1 template's default "Cutting Knowledge Date" system block is not added).
//! * [`ChatTemplate::ChatMl`]: SmolLM2's `tokenizer.chat_template` (ChatML): per message
//!   `<|im_start|>{role}\n{content}<|im_end|>\n`, then `<|im_start|>assistant\n`; no BOS; when no
//!   system message is given, SmolLM2's default one ([`SMOLLM_DEFAULT_SYSTEM`]), as its template
//!   does.
//!
//! Which one applies: a GGUF's `tokenizer.chat_template` names it ([`ChatTemplate::from_jinja`]);
//! otherwise the tokenizer's special tokens decide ([`ChatTemplate::detect`]: Llama 3 header
//! tokens → `Llama3`, `<|im_start|>`/`<|im_end|>` → `ChatMl`). The model config has no
//! chat-template field yet.
//!
//! The template's own tokens are inserted by id; the message contents are encoded separately,
//! so that with `allow_special_in_content = false` a user message cannot smuggle in control
//! tokens. With `true` (needed for MedRegion's `<im_patch>`/`<mask>`/`<pos>` prompts) the ids
//! equal those of encoding the rendered text ([`ChatTemplate::render`]) in one go.

use super::{EncodeOptions, Tokenizer};
use crate::{Error, Result};

/// SmolLM2's default system message (from its chat template).
pub const SMOLLM_DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// A chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChatTemplate {
    /// Llama 3 Instruct headers.
    Llama3,
    /// ChatML (`<|im_start|>`/`<|im_end|>`), as SmolLM2 uses it.
    ChatMl,
}

enum Seg<'a> {
    Special(&'static str),
    Text(&'a str),
}

impl ChatTemplate {
    /// The name (`llama3`, `chatml`).
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::ChatMl => "chatml",
        }
    }

    /// Recognises a Jinja chat template by the tokens it writes.
    pub fn from_jinja(template: &str) -> Option<ChatTemplate> {
        if template.contains("<|start_header_id|>") {
            Some(ChatTemplate::Llama3)
        } else if template.contains("<|im_start|>") {
            Some(ChatTemplate::ChatMl)
        } else {
            None
        }
    }

    /// The format whose control tokens `tokenizer` has.
    pub fn detect(tokenizer: &Tokenizer) -> Option<ChatTemplate> {
        let has = |t: &str| tokenizer.special_id(t).is_some();
        if has("<|start_header_id|>") && has("<|end_header_id|>") && has("<|eot_id|>") {
            Some(ChatTemplate::Llama3)
        } else if has("<|im_start|>") && has("<|im_end|>") {
            Some(ChatTemplate::ChatMl)
        } else {
            None
        }
    }

    fn segments<'a>(self, system: Option<&'a str>, user: &'a str, out: &mut Vec<(Seg<'a>, Option<&'a str>)>) {
        // (segment, optional message content appended right after a template text segment)
        match self {
            ChatTemplate::Llama3 => {
                out.push((Seg::Special("<|begin_of_text|>"), None));
                let mut message = |role: &'static str, content: &'a str| {
                    out.push((Seg::Special("<|start_header_id|>"), None));
                    out.push((Seg::Text(role), None));
                    out.push((Seg::Special("<|end_header_id|>"), None));
                    out.push((Seg::Text("\n\n"), Some(content.trim())));
                    out.push((Seg::Special("<|eot_id|>"), None));
                };
                if let Some(system) = system {
                    message("system", system);
                }
                message("user", user);
                out.push((Seg::Special("<|start_header_id|>"), None));
                out.push((Seg::Text("assistant"), None));
                out.push((Seg::Special("<|end_header_id|>"), None));
                out.push((Seg::Text("\n\n"), None));
            }
            ChatTemplate::ChatMl => {
                let mut message = |head: &'static str, content: &'a str| {
                    out.push((Seg::Special("<|im_start|>"), None));
                    out.push((Seg::Text(head), Some(content)));
                    out.push((Seg::Special("<|im_end|>"), None));
                    out.push((Seg::Text("\n"), None));
                };
                message("system\n", system.unwrap_or(SMOLLM_DEFAULT_SYSTEM));
                message("user\n", user);
                out.push((Seg::Special("<|im_start|>"), None));
                out.push((Seg::Text("assistant\n"), None));
            }
        }
    }

    /// The prompt as text (special tokens spelled out).
    pub fn render(self, system: Option<&str>, user: &str) -> String {
        let mut segs = Vec::new();
        self.segments(system, user, &mut segs);
        let mut s = String::new();
        for (seg, content) in segs {
            match seg {
                Seg::Special(t) | Seg::Text(t) => s.push_str(t),
            }
            s.push_str(content.unwrap_or(""));
        }
        s
    }
}

impl Tokenizer {
    /// Prompt ids for one `system` (optional) and one `user` message in `template`, ending with
    /// the assistant header. `allow_special_in_content`: recognise special tokens inside the
    /// messages (needed for `<im_patch>` placeholders; keep `false` for untrusted text).
    pub fn encode_chat(
        &self,
        template: ChatTemplate,
        system: Option<&str>,
        user: &str,
        allow_special_in_content: bool,
    ) -> Result<Vec<u32>> {
        let mut segs = Vec::new();
        template.segments(system, user, &mut segs);
        let mut out = Vec::with_capacity(64 + (user.len() + system.map_or(0, str::len)) / 3);
        let mut text = String::new();
        let plain = EncodeOptions { add_bos: false, add_eos: false, allow_special: false };
        for (seg, content) in segs {
            match seg {
                Seg::Special(name) => out.push(self.special_id(name).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "the {} chat template needs the special token `{name}`, which this {} tokenizer lacks",
                        template.name(),
                        self.kind().name()
                    ))
                })?),
                Seg::Text(t) => {
                    // Template text and the content after it form one run, as in the
                    // rendered string; encode it in one go when the content may hold
                    // specials, else template text plus content as plain text.
                    text.clear();
                    text.push_str(t);
                    text.push_str(content.unwrap_or(""));
                    if allow_special_in_content {
                        self.encode_into(&text, &EncodeOptions::default(), &mut out)?;
                    } else {
                        self.encode_into(&text, &plain, &mut out)?;
                    }
                }
            }
        }
        Ok(out)
    }
}
