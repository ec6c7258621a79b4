//! HF `Dinov2Model` / RAD-DINO import: `config.json` → [`HfDinov2Config`], weights → `vit.*`, with
//! the position-embedding table baked for the encoder input size (SPEC-model.md §3).
//!
//! Reference: transformers `models/dinov2/modeling_dinov2.py`, `Dinov2Embeddings.
//! interpolate_pos_encoding`. Matched version: transformers 5.24.0 (which wrote the fixtures):
//! ```text
//! if num_patches == num_positions and height == width: return position_embeddings   # identity
//! patch_pos = interpolate(patch_pos.reshape(1, n, n, D).permute(0, 3, 1, 2).float(),
//!                         size=(H // p, W // p), mode="bicubic", align_corners=False)
//! ```
//! That is [`PosInterpolation::Size`]. Older transformers (4.x before the `size=` rewrite of the
//! ViT-family `interpolate_pos_encoding`) passed `scale_factor=((H//p + 0.1)/n, (W//p + 0.1)/n)`,
//! which moves the sampling positions: [`PosInterpolation::ScaleFactorPlusTenth`]. Some ViT
//! variants add `antialias=True`: [`PosInterpolation::SizeAntialias`]. HF casts the result back to
//! the checkpoint dtype at run time; we return f32 and let the package writer choose the dtype.
//!
//! Names (D = hidden_size, I = intermediate, C = num_channels, p = patch_size, n = native grid,
//! g = baked grid): `vit.` + the HF (pre-5.x, as saved on disk) name.
//! ```text
//! embeddings.cls_token                                   [1, 1, D]
//! embeddings.position_embeddings                         [1, 1 + n², D] → baked [1, 1 + g², D]
//! embeddings.patch_embeddings.projection.{weight,bias}   [D, C, p, p], [D]
//! encoder.layer.{i}.norm1.{weight,bias}                  [D]
//! encoder.layer.{i}.attention.attention.{query,key,value}.{weight,bias}  [D, D], [D]
//! encoder.layer.{i}.attention.output.dense.{weight,bias} [D, D], [D]
//! encoder.layer.{i}.layer_scale1.lambda1                 [D]
//! encoder.layer.{i}.norm2.{weight,bias}                  [D]
//! encoder.layer.{i}.mlp.fc1.{weight,bias}                [I, D], [I]
//! encoder.layer.{i}.mlp.fc2.{weight,bias}                [D, I], [D]
//! encoder.layer.{i}.layer_scale2.lambda1                 [D]
//! layernorm.{weight,bias}                                [D]
//! ```
//! Accepted on input as well: a leading `dinov2.` / `model.` prefix, and transformers-5 in-memory
//! names (`attention.{q,k,v,o}_proj`). `embeddings.mask_token` (pre-training only) is dropped.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::interp::{resize_grid_with, BicubicKernel};
use super::safetensors_in::{read_json, SafetensorsSet};
use super::NamedTensor;
use crate::{Error, Result};

/// How the native position table is resampled to another grid (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PosInterpolation {
    /// transformers 5.24.0 (and 4.x after the `size=` rewrite): `size=(g, g)`, no antialias.
    #[default]
    Size,
    /// Older transformers: `scale_factor=(g + 0.1)/n`, no antialias.
    ScaleFactorPlusTenth,
    /// `size=(g, g)` with `antialias=True`.
    SizeAntialias,
}

/// The hyper-parameters of an HF `Dinov2Model`, plus the grid the baked position table is for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HfDinov2Config {
    /// D.
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// I = int(D · mlp_ratio) unless the config states it.
    pub intermediate_size: usize,
    /// Native (pre-training) input size; the checkpoint's table has (image_size / patch_size)² + 1 rows.
    pub image_size: usize,
    /// p.
    pub patch_size: usize,
    pub num_channels: usize,
    pub layer_norm_eps: f64,
    pub layerscale_value: f64,
    pub qkv_bias: bool,
    /// Input size the baked position table is for (`target_image_size`, or `image_size`).
    pub encoder_image_size: usize,
    /// g = encoder_image_size / patch_size: the baked table has g² + 1 rows.
    pub encoder_grid: usize,
}

/// An int or an `[h, w]` pair (HF allows both for image_size and patch_size).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Side {
    One(usize),
    Pair([usize; 2]),
}

fn square(side: Side, field: &str, what: &str) -> Result<usize> {
    match side {
        Side::One(v) => Ok(v),
        Side::Pair([h, w]) if h == w => Ok(h),
        Side::Pair([h, w]) => Err(Error::Unsupported(format!("{what}: non-square `{field}` [{h}, {w}]"))),
    }
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_channels() -> usize {
    3
}
fn default_ln_eps() -> f64 {
    1e-6
}
fn default_layerscale() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}

/// `config.json` as written; unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct RawDinov2Config {
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    mlp_ratio: f64,
    intermediate_size: Option<usize>,
    image_size: Side,
    patch_size: Side,
    #[serde(default = "default_channels")]
    num_channels: usize,
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_layerscale")]
    layerscale_value: f64,
    #[serde(default = "default_true")]
    qkv_bias: bool,
    #[serde(default)]
    use_swiglu_ffn: bool,
    num_register_tokens: Option<usize>,
    hidden_act: Option<String>,
}

impl HfDinov2Config {
    /// Parse and validate `config.json` text; `what` names the file in errors. The encoder grid is
    /// the native one.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let raw: RawDinov2Config =
            serde_json::from_str(text).map_err(|e| Error::format(what, e.to_string()))?;
        Self::from_raw(raw, what)
    }

    /// Read and validate `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let raw: RawDinov2Config = read_json(&path)?;
        Self::from_raw(raw, &path.display().to_string())
    }

    fn from_raw(raw: RawDinov2Config, what: &str) -> Result<Self> {
        let field = |name: &str, reason: String| Error::format(what, format!("field `{name}`: {reason}"));
        match raw.model_type.as_deref() {
            None | Some("dinov2") => {}
            Some(t) => {
                return Err(Error::Unsupported(format!("{what}: model_type `{t}` (only `dinov2` is read)")))
            }
        }
        if raw.use_swiglu_ffn {
            return Err(Error::Unsupported(format!(
                "{what}: `use_swiglu_ffn` = true (RAD-DINO uses the GELU MLP)"
            )));
        }
        if let Some(n) = raw.num_register_tokens.filter(|&n| n != 0) {
            return Err(Error::Unsupported(format!("{what}: `num_register_tokens` = {n} (register tokens)")));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|&a| a != "gelu") {
            return Err(Error::Unsupported(format!("{what}: hidden_act `{act}` (only exact `gelu`)")));
        }
        let image_size = square(raw.image_size, "image_size", what)?;
        let patch_size = square(raw.patch_size, "patch_size", what)?;
        for (name, v) in [
            ("hidden_size", raw.hidden_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", raw.num_attention_heads),
            ("patch_size", patch_size),
            ("num_channels", raw.num_channels),
        ] {
            if v == 0 {
                return Err(field(name, "must be positive".into()));
            }
        }
        if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
            return Err(field(
                "num_attention_heads",
                format!("{} does not divide hidden_size {}", raw.num_attention_heads, raw.hidden_size),
            ));
        }
        if image_size < patch_size {
            return Err(field("image_size", format!("{image_size} is smaller than patch_size {patch_size}")));
        }
        let intermediate_size = match raw.intermediate_size {
            Some(i) => i,
            // Python int() truncation, as Dinov2MLP does.
            None if raw.mlp_ratio > 0.0 => (raw.hidden_size as f64 * raw.mlp_ratio) as usize,
            None => return Err(field("mlp_ratio", format!("{} must be positive", raw.mlp_ratio))),
        };
        let grid = image_size / patch_size;
        Ok(Self {
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size,
            image_size,
            patch_size,
            num_channels: raw.num_channels,
            layer_norm_eps: raw.layer_norm_eps,
            layerscale_value: raw.layerscale_value,
            qkv_bias: raw.qkv_bias,
            encoder_image_size: image_size,
            encoder_grid: grid,
        })
    }

    /// The native grid n (tokens per side of the checkpoint's table).
    pub fn native_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Every tensor the checkpoint must hold: (HF name, canonical name, shape); the position table
    /// with its native shape.
    pub fn expected_tensors(&self) -> Vec<(String, String, Vec<usize>)> {
        let (d, i, p, c) = (self.hidden_size, self.intermediate_size, self.patch_size, self.num_channels);
        let n = self.native_grid();
        let mut out: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.cls_token".into(), vec![1, 1, d]),
            ("embeddings.position_embeddings".into(), vec![1, 1 + n * n, d]),
            ("embeddings.patch_embeddings.projection.weight".into(), vec![d, c, p, p]),
            ("embeddings.patch_embeddings.projection.bias".into(), vec![d]),
        ];
        for l in 0..self.num_hidden_layers {
            let pre = format!("encoder.layer.{l}");
            out.push((format!("{pre}.norm1.weight"), vec![d]));
            out.push((format!("{pre}.norm1.bias"), vec![d]));
            for qkv in ["query", "key", "value"] {
                out.push((format!("{pre}.attention.attention.{qkv}.weight"), vec![d, d]));
                if self.qkv_bias {
                    out.push((format!("{pre}.attention.attention.{qkv}.bias"), vec![d]));
                }
            }
            out.push((format!("{pre}.attention.output.dense.weight"), vec![d, d]));
            out.push((format!("{pre}.attention.output.dense.bias"), vec![d]));
            out.push((format!("{pre}.layer_scale1.lambda1"), vec![d]));
            out.push((format!("{pre}.norm2.weight"), vec![d]));
            out.push((format!("{pre}.norm2.bias"), vec![d]));
            out.push((format!("{pre}.mlp.fc1.weight"), vec![i, d]));
            out.push((format!("{pre}.mlp.fc1.bias"), vec![i]));
            out.push((format!("{pre}.mlp.fc2.weight"), vec![d, i]));
            out.push((format!("{pre}.mlp.fc2.bias"), vec![d]));
            out.push((format!("{pre}.layer_scale2.lambda1"), vec![d]));
        }
        out.push(("layernorm.weight".into(), vec![d]));
        out.push(("layernorm.bias".into(), vec![d]));
        out.into_iter().map(|(hf, s)| (hf.clone(), format!("vit.{hf}"), s)).collect()
    }
}

/// A checkpoint name → the on-disk HF name used by [`HfDinov2Config::expected_tensors`]: strip a
/// `dinov2.` / `model.` prefix and map transformers-5 attention names to the saved ones.
fn normalize_name(name: &str) -> String {
    let name = name.strip_prefix("dinov2.").or_else(|| name.strip_prefix("model.")).unwrap_or(name);
    for (new, old) in [
        (".attention.q_proj.", ".attention.attention.query."),
        (".attention.k_proj.", ".attention.attention.key."),
        (".attention.v_proj.", ".attention.attention.value."),
        (".attention.o_proj.", ".attention.output.dense."),
    ] {
        if name.contains(new) {
            return name.replacen(new, old, 1);
        }
    }
    name.to_string()
}

/// Resample the position table `pos` [1, 1 + n², D] to [1, 1 + g², D] as HF Dinov2's
/// `interpolate_pos_encoding` does for an input of g·p pixels per side (identity when g == n).
pub fn interpolate_pos_table(
    pos: &[f32],
    n: usize,
    d: usize,
    g: usize,
    variant: PosInterpolation,
) -> Result<Vec<f32>> {
    if pos.len() != (1 + n * n) * d {
        return Err(Error::Shape {
            what: "position embedding table".into(),
            expected: format!("[1, {}, {d}]", 1 + n * n),
            found: format!("{} values", pos.len()),
        });
    }
    if g == n {
        return Ok(pos.to_vec());
    }
    if g == 0 || n == 0 {
        return Err(Error::invalid("target grid", format!("cannot resample a {n}×{n} grid to {g}×{g}")));
    }
    let (cls, grid) = pos.split_at(d);
    // grid: [n, n, D] (HWC) → [g, g, D]
    let resized = match variant {
        PosInterpolation::Size => resize_grid_with(grid, n, n, d, g, g, None, BicubicKernel::Plain),
        PosInterpolation::SizeAntialias => {
            resize_grid_with(grid, n, n, d, g, g, None, BicubicKernel::Antialias)
        }
        PosInterpolation::ScaleFactorPlusTenth => {
            // Python: h0 = g + 0.1; scale_factor = float(h0 / sqrt(num_positions)); torch then
            // takes out = floor(n · scale_factor) and samples with 1/scale_factor.
            let sf = (g as f64 + 0.1) / n as f64;
            let out = (n as f64 * sf).floor() as usize;
            if out != g {
                return Err(Error::Internal(format!("scale_factor {sf} gives a {out}-grid, not {g}")));
            }
            resize_grid_with(grid, n, n, d, g, g, Some((sf, sf)), BicubicKernel::Plain)
        }
    };
    let mut table = Vec::with_capacity((1 + g * g) * d);
    table.extend_from_slice(cls);
    table.extend_from_slice(&resized);
    Ok(table)
}

/// Import an HF `Dinov2Model` folder, baking the position table for `target_image_size` pixels per
/// side (grid `target_image_size / patch_size`, the remainder dropped as the stride-p conv does),
/// interpolating as transformers 5.24.0 does ([`PosInterpolation::Size`]).
pub fn load_dinov2(
    dir: &Path,
    target_image_size: Option<usize>,
) -> Result<(HfDinov2Config, Vec<NamedTensor>)> {
    load_dinov2_with(dir, target_image_size, PosInterpolation::default())
}

/// [`load_dinov2`] with the interpolation variant chosen explicitly.
pub fn load_dinov2_with(
    dir: &Path,
    target_image_size: Option<usize>,
    variant: PosInterpolation,
) -> Result<(HfDinov2Config, Vec<NamedTensor>)> {
    let mut cfg = HfDinov2Config::from_dir(dir)?;
    let set = SafetensorsSet::open_dir(dir)?;
    let expected = cfg.expected_tensors();

    // checkpoint name → normalised name, refusing anything we would silently drop.
    let mut present: Vec<(String, &str)> = Vec::new();
    for name in set.names() {
        let norm = normalize_name(name);
        if norm == "embeddings.mask_token" {
            continue;
        }
        if !expected.iter().any(|(hf, _, _)| *hf == norm) {
            return Err(Error::format(
                set.origin(),
                format!("unexpected tensor `{name}` (not part of Dinov2Model with this config.json)"),
            ));
        }
        if present.iter().any(|(n, _)| *n == norm) {
            return Err(Error::format(set.origin(), format!("tensor `{norm}` appears twice (as `{name}`)")));
        }
        present.push((norm, name));
    }

    let n = cfg.native_grid();
    if let Some(size) = target_image_size {
        if size < cfg.patch_size {
            return Err(Error::invalid(
                "target_image_size",
                format!("{size} px is smaller than one {}-px patch", cfg.patch_size),
            ));
        }
        cfg.encoder_image_size = size;
        cfg.encoder_grid = size / cfg.patch_size;
    }
    let g = cfg.encoder_grid;

    let mut tensors = Vec::with_capacity(expected.len());
    for (hf, canonical, shape) in &expected {
        let file_name = present.iter().find(|(n, _)| n == hf).map(|(_, f)| *f).ok_or_else(|| {
            Error::NotFound(format!(
                "tensor `{hf}` (required by config.json) is missing from {}",
                set.origin()
            ))
        })?;
        let mut t = set.read_named(file_name, canonical, shape)?;
        if hf == "embeddings.position_embeddings" {
            t.data = interpolate_pos_table(&t.data, n, cfg.hidden_size, g, variant)?;
            t.shape = vec![1, 1 + g * g, cfg.hidden_size];
        }
        tensors.push(t);
    }
    Ok((cfg, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// microsoft/rad-dino config.json (fields that matter).
    const RAD_DINO: &str = r#"{"architectures": ["Dinov2Model"], "model_type": "dinov2",
        "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
        "image_size": 518, "patch_size": 14, "num_channels": 3, "hidden_act": "gelu",
        "layer_norm_eps": 1e-06, "layerscale_value": 1.0, "qkv_bias": true, "use_swiglu_ffn": false,
        "drop_path_rate": 0.0, "out_features": ["stage12"], "out_indices": [12]}"#;

    #[test]
    fn parses_rad_dino_config() {
        let c = HfDinov2Config::from_json(RAD_DINO, "config.json").unwrap();
        assert_eq!((c.hidden_size, c.intermediate_size, c.native_grid()), (768, 3072, 37));
        let t = c.expected_tensors();
        assert_eq!(t.len(), 4 + 12 * 18 + 2);
        assert_eq!(t[1].2, vec![1, 1370, 768]);
        assert_eq!(t[1].1, "vit.embeddings.position_embeddings");
    }

    #[test]
    fn refuses_unsupported_variants() {
        let e = HfDinov2Config::from_json(
            &RAD_DINO.replace(r#""use_swiglu_ffn": false"#, r#""use_swiglu_ffn": true"#),
            "c",
        );
        assert!(e.unwrap_err().to_string().contains("use_swiglu_ffn"));
        let e = HfDinov2Config::from_json(
            &RAD_DINO.replace(r#""qkv_bias": true"#, r#""num_register_tokens": 4"#),
            "c",
        );
        assert!(e.unwrap_err().to_string().contains("num_register_tokens"));
        let e = HfDinov2Config::from_json(
            &RAD_DINO.replace(r#""image_size": 518"#, r#""image_size": [518, 400]"#),
            "c",
        );
        assert!(e.unwrap_err().to_string().contains("image_size"));
        let c = HfDinov2Config::from_json(
            &RAD_DINO.replace(r#""image_size": 518"#, r#""image_size": [518, 518]"#),
            "c",
        );
        assert_eq!(c.unwrap().image_size, 518);
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalize_name("dinov2.layernorm.weight"), "layernorm.weight");
        assert_eq!(
            normalize_name("encoder.layer.3.attention.o_proj.bias"),
            "encoder.layer.3.attention.output.dense.bias"
        );
        assert_eq!(
            normalize_name("model.encoder.layer.0.attention.q_proj.weight"),
            "encoder.layer.0.attention.attention.query.weight"
        );
    }

    #[test]
    fn position_table_identity_and_cls_kept() {
        let (n, d) = (4, 3);
        let pos: Vec<f32> = (0..(1 + n * n) * d).map(|i| i as f32 * 0.01).collect();
        assert_eq!(interpolate_pos_table(&pos, n, d, n, PosInterpolation::Size).unwrap(), pos);
        let t = interpolate_pos_table(&pos, n, d, 7, PosInterpolation::ScaleFactorPlusTenth).unwrap();
        assert_eq!(t.len(), (1 + 49) * d);
        assert_eq!(&t[..d], &pos[..d]);
        assert!(interpolate_pos_table(&pos[1..], n, d, 7, PosInterpolation::Size).is_err());
    }
}
