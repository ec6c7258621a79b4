//! [`QuantPolicy`]: which [`WeightType`] each weight is stored in.
//!
//! Resolution for a weight `name` of logical shape `shape`, first rule that applies:
//!
//! 1. an explicit per-tensor override (`with_override`, glob, first match) — used by importers
//!    to keep a GGUF tensor in its own type; a quantized override on a weight that cannot be
//!    block-quantized is an error;
//! 2. 1-D (and 0-D) tensors stay `f32` (norm weights, biases, LayerScale: tiny, and kernels
//!    read them as f32);
//! 3. a name matching a keep-f32 glob stays `f32`; the default list [`DEFAULT_KEEP_F32`]
//!    keeps norms, biases, LayerScale and the ViT's CLS token and position table in f32;
//! 4. otherwise the component's type (`vit`, `mask`, `proj`, `llm`); when that is a quantized
//!    type and the weight is not 2-D with `cols % 32 == 0` (e.g. the ViT patch convolution, or
//!    the spatial MLP's 356-wide input), it falls back to `f16`.

use crate::model::names::{is_quantizable, Component};
use crate::tensor::WeightType;
use crate::{Error, Result};

/// Globs kept in f32 by default (matched against canonical names; `*` is any run of
/// characters, `?` any one character).
pub const DEFAULT_KEEP_F32: &[&str] =
    &["*norm*", "*.bias", "*.lambda1", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings"];

/// How to store each weight of a package.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantPolicy {
    /// Type per component, indexed like [`Component::WEIGHTS`].
    components: [WeightType; 4],
    keep_f32: Vec<String>,
    overrides: Vec<(String, WeightType)>,
}

impl Default for QuantPolicy {
    /// Everything f16, with the default keep-f32 list.
    fn default() -> Self {
        QuantPolicy::all(WeightType::F16)
    }
}

impl QuantPolicy {
    /// `t` for every component, with the default keep-f32 list.
    pub fn all(t: WeightType) -> QuantPolicy {
        QuantPolicy {
            components: [t; 4],
            keep_f32: DEFAULT_KEEP_F32.iter().map(|s| s.to_string()).collect(),
            overrides: Vec::new(),
        }
    }

    /// Parses a `--quant` value: one type for all (`q4_0`), or per component
    /// (`llm=q4_0,vit=f16,mask=f32,proj=f32`; unnamed components take `default`).
    pub fn parse(spec: &str, default: WeightType) -> Result<QuantPolicy> {
        let spec = spec.trim();
        if !spec.contains('=') {
            return Ok(QuantPolicy::all(WeightType::parse(spec)?));
        }
        let mut policy = QuantPolicy::all(default);
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (comp, ty) = item.split_once('=').ok_or_else(|| {
                Error::invalid("--quant", format!("`{item}` is not COMPONENT=TYPE (e.g. llm=q4_0)"))
            })?;
            let comp = Component::parse(comp.trim()).ok_or_else(|| {
                Error::invalid(
                    "--quant",
                    format!("unknown component `{}`: use vit, mask, proj or llm", comp.trim()),
                )
            })?;
            policy = policy.component(comp, WeightType::parse(ty)?);
        }
        Ok(policy)
    }

    /// Sets the type of one component.
    pub fn component(mut self, component: Component, t: WeightType) -> QuantPolicy {
        if let Some(i) = Component::WEIGHTS.iter().position(|c| *c == component) {
            self.components[i] = t;
        }
        self
    }

    /// The type of one component.
    pub fn component_type(&self, component: Component) -> Option<WeightType> {
        Component::WEIGHTS.iter().position(|c| *c == component).map(|i| self.components[i])
    }

    /// Adds a keep-f32 glob.
    pub fn keep_f32(mut self, pattern: &str) -> QuantPolicy {
        self.keep_f32.push(pattern.to_string());
        self
    }

    /// Drops the default keep-f32 list (1-D tensors still stay f32).
    pub fn without_default_keep(mut self) -> QuantPolicy {
        self.keep_f32.retain(|p| !DEFAULT_KEEP_F32.contains(&p.as_str()));
        self
    }

    /// Stores weights matching `pattern` as `t` (first matching override wins).
    pub fn with_override(mut self, pattern: &str, t: WeightType) -> QuantPolicy {
        self.overrides.push((pattern.to_string(), t));
        self
    }

    /// The keep-f32 globs in effect.
    pub fn keep_f32_patterns(&self) -> &[String] {
        &self.keep_f32
    }

    /// The storage type of weight `name` with logical `shape` (rules in the module doc).
    pub fn resolve(&self, name: &str, shape: &[usize]) -> Result<WeightType> {
        if let Some((pattern, t)) = self.overrides.iter().find(|(p, _)| glob_match(p, name)) {
            if t.quant().is_some() && !is_quantizable(shape) {
                return Err(Error::invalid(
                    "quantization override",
                    format!(
                        "`{pattern}` asks for {t} but `{name}` {:?} cannot be block-quantized \
                         (needs 2 dimensions and a last one divisible by 32)",
                        shape
                    ),
                ));
            }
            return Ok(*t);
        }
        if shape.len() <= 1 || self.keep_f32.iter().any(|p| glob_match(p, name)) {
            return Ok(WeightType::F32);
        }
        let t = Component::of(name).and_then(|c| self.component_type(c)).unwrap_or(WeightType::F32);
        if t.quant().is_some() && !is_quantizable(shape) {
            return Ok(WeightType::F16);
        }
        Ok(t)
    }
}

/// Glob match: `*` matches any run of characters (including `.`), `?` any one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*norm*", "llm.layers.0.input_layernorm.weight"));
        assert!(glob_match("*.bias", "vit.encoder.layer.3.mlp.fc1.bias"));
        assert!(!glob_match("*.bias", "vit.encoder.layer.3.mlp.fc1.weight"));
        assert!(glob_match("llm.layers.?.mlp.*", "llm.layers.7.mlp.up_proj.weight"));
        assert!(!glob_match("llm.layers.?.mlp.*", "llm.layers.17.mlp.up_proj.weight"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn resolution_rules() {
        let p = QuantPolicy::parse("llm=q4_0,vit=f16", WeightType::F32).unwrap();
        assert_eq!(p.resolve("llm.layers.0.mlp.up_proj.weight", &[128, 64]).unwrap(), WeightType::Q4_0);
        assert_eq!(p.resolve("llm.norm.weight", &[64]).unwrap(), WeightType::F32);
        assert_eq!(p.resolve("vit.encoder.layer.0.mlp.fc1.weight", &[64, 32]).unwrap(), WeightType::F16);
        assert_eq!(p.resolve("vit.embeddings.position_embeddings", &[1, 17, 32]).unwrap(), WeightType::F32);
        assert_eq!(p.resolve("mask.res1.weight", &[32, 32]).unwrap(), WeightType::F32);
        // Not quantizable: falls back to f16.
        let p = QuantPolicy::all(WeightType::Q8_0);
        assert_eq!(
            p.resolve("vit.embeddings.patch_embeddings.projection.weight", &[32, 3, 14, 14]).unwrap(),
            WeightType::F16
        );
        assert_eq!(p.resolve("mask.mask_linear.layers.0.weight", &[32, 16]).unwrap(), WeightType::F16);
        // Extra keep pattern, and dropping the defaults.
        let p = QuantPolicy::all(WeightType::Q8_0).keep_f32("llm.embed_tokens.*");
        assert_eq!(p.resolve("llm.embed_tokens.weight", &[256, 64]).unwrap(), WeightType::F32);
        let p = QuantPolicy::all(WeightType::F16).without_default_keep();
        assert_eq!(p.resolve("vit.embeddings.cls_token", &[1, 1, 32]).unwrap(), WeightType::F16);
        assert_eq!(p.resolve("vit.layernorm.weight", &[32]).unwrap(), WeightType::F32);
        // Overrides win; impossible quantized overrides are errors.
        let p = QuantPolicy::all(WeightType::F16).with_override("llm.norm.weight", WeightType::Bf16);
        assert_eq!(p.resolve("llm.norm.weight", &[64]).unwrap(), WeightType::Bf16);
        let p = QuantPolicy::all(WeightType::F16).with_override("*", WeightType::Q4_1);
        assert!(p.resolve("llm.norm.weight", &[64]).is_err());
        // Parse errors.
        assert!(QuantPolicy::parse("llm=q5_k", WeightType::F32).is_err());
        assert!(QuantPolicy::parse("decoder=q4_0", WeightType::F32).is_err());
        assert_eq!(QuantPolicy::parse("bf16", WeightType::F32).unwrap(), QuantPolicy::all(WeightType::Bf16));
    }
}
