//! [`RegionHeads`]: the connector and the mask extractor, and the computation of a region's
//! image, mask and spatial tokens from the encoder outputs and the slot masks (see the module
//! doc of `crate::region`).

use std::collections::HashMap;

use super::pool::{adaptive_pool_rows, bilinear_mask, mean_rows, select_slices, Selection};
use crate::model::config::{
    LevelNorm, MaskExtractorConfig, ModelConfig, PoolingConfig, SpatialInput, VisionFeature,
};
use crate::model::Model;
use crate::ops::{self, ThreadPool};
use crate::tensor::{shape_string, Weight};
use crate::vision::{layer_norm, VisionOutput};
use crate::{Error, Result};

/// A linear layer: weight `[out, in]` and bias (zeros when the layer has none).
struct Linear<'m> {
    w: Weight<'m>,
    b: Vec<f32>,
}

impl Linear<'_> {
    fn out_dim(&self) -> usize {
        self.b.len()
    }

    /// `y = x Wᵀ + b` for `n` rows of `x`.
    fn apply(&self, x: &[f32], n: usize, pool: &ThreadPool) -> Result<Vec<f32>> {
        let mut y = vec![0.0f32; n * self.out_dim()];
        if n > 0 {
            ops::matmul(x, n, &self.w, &mut y, pool)?;
        }
        self.add_bias(&mut y);
        Ok(y)
    }

    /// `y += b` per row.
    fn add_bias(&self, y: &mut [f32]) {
        for row in y.chunks_exact_mut(self.b.len()) {
            row.iter_mut().zip(&self.b).for_each(|(v, &b)| *v += b);
        }
    }
}

/// The slot masks on the preprocessed grid, borrowed: `masks[s]` is slot `keys[s]`,
/// `shape = [D, H, W]` 0/1 bytes, W fastest (what `crate::masks::SlotMasks` holds).
#[derive(Clone, Copy, Debug)]
pub struct MaskView<'a> {
    pub shape: [usize; 3],
    pub keys: &'a [String],
    pub masks: &'a [Vec<u8>],
}

/// The tokens of one region pass.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionTokens {
    /// Region key.
    pub region: String,
    /// The `K` representative slices and the rule that chose them.
    pub selection: Selection,
    /// R²-pooled image features before the connector, `[n_tokens, vision.hidden_size]`
    /// (global tokens first, then `K` grids of `g²` row-major).
    pub pooled: Vec<f32>,
    /// Image tokens after the connector, `[n_tokens, decoder.hidden_size]`.
    pub image: Vec<f32>,
    /// The R²-pooled mask of every slot, `[n_slots, n_tokens]` (before binarizing).
    pub mask_vectors: Vec<f32>,
    /// Mask tokens, `[n_slots, decoder.hidden_size]`, in `segmentation` order.
    pub mask_tokens: Vec<f32>,
    /// Spatial tokens, `[n_slots, decoder.hidden_size]`.
    pub spatial_tokens: Vec<f32>,
}

/// The encoder feature arrays R² pooling reads, each `[T, 1 + gp², D]` (CLS first): array 0
/// is the image feature, arrays `1..` the mask extractor's levels in order (after the final
/// LayerNorm when `level_norm` is `final_layernorm`); see [`RegionHeads::arrays`].
/// [`RegionHeads::tokens`] reads them from a host [`VisionOutput`] ([`HostFeatures`]); the
/// CUDA backend pools arrays that never left the device (`backend::cuda::region`). Both give
/// the same values (the device kernels are the host functions' twins, bit for bit).
pub trait PooledFeatures {
    /// Slices `T`, patch grid side `gp`, feature width `D`.
    fn dims(&self) -> (usize, usize, usize);
    /// `[T, D]`: the mean of each slice's `gp²` patch tokens of array `a`
    /// ([`super::pool::mean_rows`]).
    fn globals(&mut self, a: usize) -> Result<Vec<f32>>;
    /// `[slices.len(), g², D]`: the patch grid of each of `slices` of array `a` pooled to
    /// `g × g` ([`super::pool::adaptive_pool_rows`]).
    fn grids(&mut self, a: usize, slices: &[usize], g: usize) -> Result<Vec<f32>>;
    /// `x · Wᵀ` of the connector (`proj.weight`, `[out, D]`) for `n` rows of pooled image
    /// features `x`, when this source computes it (the device's, on cuBLAS); `None` (the
    /// default): the caller multiplies on the host. The bias is added by the caller.
    fn connector_product(&mut self, _x: &[f32], _n: usize) -> Result<Option<Vec<f32>>> {
        Ok(None)
    }
}

/// Which encoder outputs the feature arrays are, and the LayerNorm applied to the levels.
#[derive(Clone, Copy, Debug)]
pub struct FeatureArrays<'h> {
    /// Array 0: `None` = `last_hidden_state`, `Some(l)` = `hidden_states[l]` raw.
    pub image_level: Option<usize>,
    /// Arrays `1..`: `hidden_states` of these levels.
    pub levels: &'h [usize],
    /// `(weight, bias, eps)` applied to each level first, if any.
    pub level_norm: Option<(&'h [f32], &'h [f32], f32)>,
}

/// [`PooledFeatures`] of a host [`VisionOutput`] (levels LayerNorm-ed on the CPU when asked).
pub struct HostFeatures<'v> {
    arrays: Vec<std::borrow::Cow<'v, [f32]>>,
    t: usize,
    n1: usize,
    gp: usize,
    d: usize,
}

impl<'v> HostFeatures<'v> {
    /// The arrays `which` names, from `vision` (checked against `T` slices of `D` values).
    pub fn new(
        vision: &'v VisionOutput,
        which: FeatureArrays<'_>,
        t: usize,
        d: usize,
        pool: &ThreadPool,
    ) -> Result<Self> {
        let gp = check_vision(vision, t, d)?;
        let image: &[f32] = match which.image_level {
            None => &vision.last_hidden_state,
            Some(l) => level(vision, l)?,
        };
        let mut arrays = vec![std::borrow::Cow::Borrowed(image)];
        for &l in which.levels {
            let x = level(vision, l)?;
            arrays.push(match which.level_norm {
                Some((w, b, eps)) => {
                    let mut y = vec![0.0f32; x.len()];
                    layer_norm(x, &mut y, w, b, eps, pool)?;
                    std::borrow::Cow::Owned(y)
                }
                None => std::borrow::Cow::Borrowed(x),
            });
        }
        Ok(HostFeatures { arrays, t, n1: vision.n_tokens, gp, d })
    }

    fn array(&self, a: usize) -> Result<&[f32]> {
        self.arrays.get(a).map(|x| &**x).ok_or_else(|| Error::Internal(format!("no feature array {a}")))
    }
}

impl PooledFeatures for HostFeatures<'_> {
    fn dims(&self) -> (usize, usize, usize) {
        (self.t, self.gp, self.d)
    }

    fn globals(&mut self, a: usize) -> Result<Vec<f32>> {
        let (x, gp, d) = (self.array(a)?, self.gp, self.d);
        let mut out = Vec::with_capacity(self.t * d);
        for s in 0..self.t {
            mean_rows(slice_patches(x, self.n1, d, s), gp * gp, d, &mut out);
        }
        Ok(out)
    }

    fn grids(&mut self, a: usize, slices: &[usize], g: usize) -> Result<Vec<f32>> {
        let (x, gp, d) = (self.array(a)?, self.gp, self.d);
        let mut out = Vec::with_capacity(slices.len() * g * g * d);
        for &s in slices {
            if s >= self.t {
                return Err(Error::Internal(format!("slice {s} of {} pooled", self.t)));
            }
            adaptive_pool_rows(slice_patches(x, self.n1, d, s), gp, d, g, &mut out);
        }
        Ok(out)
    }
}

/// Connector and mask-extractor weights (borrowed from a package), with the settings they need.
pub struct RegionHeads<'m> {
    pooling: PoolingConfig,
    mask: MaskExtractorConfig,
    feature: VisionFeature,
    vision_layers: usize,
    hidden: usize,
    out_dim: usize,
    slot_keys: Vec<String>,
    final_norm: Option<(Vec<f32>, Vec<f32>, f32)>,
    proj: Linear<'m>,
    res: Vec<Linear<'m>>,
    feat: Linear<'m>,
    mlp: Vec<Linear<'m>>,
}

impl std::fmt::Debug for RegionHeads<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionHeads").field("pooling", &self.pooling).field("mask", &self.mask).finish()
    }
}

impl<'m> RegionHeads<'m> {
    /// Reads `proj.*` and `mask.*` (and `vit.layernorm.*` when the levels are LayerNorm-ed).
    pub fn new(model: &'m Model<'_>) -> Result<RegionHeads<'m>> {
        RegionHeads::from_lookup(model.config(), |name| model.weight(name))
    }

    /// As [`RegionHeads::new`], with the weights from `lookup` (canonical names, any weight
    /// type); shapes are checked against `config`.
    pub fn from_lookup(
        config: &ModelConfig,
        lookup: impl Fn(&str) -> Result<Weight<'m>>,
    ) -> Result<RegionHeads<'m>> {
        let (h, m) = (config.vision.hidden_size, &config.mask_extractor);
        let n_tokens = config.pooling.n_tokens();
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let w = lookup(name)?;
            if w.numel() != len {
                return Err(Error::Shape {
                    what: format!("weight `{name}`"),
                    expected: format!("{len} values"),
                    found: shape_string(w.shape()),
                });
            }
            w.to_f32()
        };
        let linear = |prefix: &str, out: usize, input: usize, bias: bool| -> Result<Linear<'m>> {
            let name = format!("{prefix}.weight");
            let w = lookup(&name)?;
            if w.shape() != [out, input] {
                return Err(Error::Shape {
                    what: format!("weight `{name}`"),
                    expected: format!("[{out}, {input}]"),
                    found: shape_string(w.shape()),
                });
            }
            let b = if bias { vector(&format!("{prefix}.bias"), out)? } else { vec![0.0; out] };
            Ok(Linear { w, b })
        };
        let c = &config.connector;
        let proj = linear("proj", c.out_dim, c.in_dim, c.bias)?;
        let res = (0..m.levels.len())
            .map(|k| linear(&format!("mask.res{}", k + 1), m.embed_dim, h, true))
            .collect::<Result<Vec<_>>>()?;
        let feat = linear("mask.feat_linear", m.out_dim, m.embed_dim, true)?;
        let mlp = m
            .mlp_dims(n_tokens)
            .into_iter()
            .enumerate()
            .map(|(i, (out, input))| linear(&format!("mask.mask_linear.layers.{i}"), out, input, true))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = match m.level_norm {
            LevelNorm::Raw => None,
            LevelNorm::FinalLayernorm => Some((
                vector("vit.layernorm.weight", h)?,
                vector("vit.layernorm.bias", h)?,
                config.vision.layer_norm_eps,
            )),
        };
        Ok(RegionHeads {
            pooling: config.pooling.clone(),
            mask: m.clone(),
            feature: config.vision.feature,
            vision_layers: config.vision.n_layers,
            hidden: h,
            out_dim: c.out_dim,
            slot_keys: config.segmentation.iter().map(|s| s.key.clone()).collect(),
            final_norm,
            proj,
            res,
            feat,
            mlp,
        })
    }

    /// The `hidden_states` levels the encoder must return for [`RegionHeads::tokens`]
    /// (`EncodeOptions::levels`): the mask-extractor levels, plus the last layer when the image
    /// feature is `last_layer_raw`.
    pub fn levels(&self) -> Vec<usize> {
        let mut l = self.mask.levels.clone();
        if self.feature == VisionFeature::LastLayerRaw {
            l.push(self.vision_layers);
        }
        l.sort_unstable();
        l.dedup();
        l
    }

    /// The connector's weight `[out, D]` and bias `[out]` (zeros when it has none).
    pub fn connector(&self) -> (&Weight<'m>, &[f32]) {
        (&self.proj.w, &self.proj.b)
    }

    /// The feature arrays [`RegionHeads::tokens`] pools: array 0 the image feature, then the
    /// extractor levels, with the LayerNorm they get first.
    pub fn arrays(&self) -> FeatureArrays<'_> {
        FeatureArrays {
            image_level: match self.feature {
                VisionFeature::LastHiddenState => None,
                VisionFeature::LastLayerRaw => Some(self.vision_layers),
            },
            levels: &self.mask.levels,
            level_norm: self.final_norm.as_ref().map(|(w, b, eps)| (w.as_slice(), b.as_slice(), *eps)),
        }
    }

    /// Tokens for each of `regions` (region keys, in the given order). Regions whose slice
    /// selection equals an earlier one's share its computation (a clone of its tokens).
    pub fn tokens(
        &self,
        vision: &VisionOutput,
        masks: MaskView<'_>,
        regions: &[&str],
        pool: &ThreadPool,
    ) -> Result<Vec<RegionTokens>> {
        let mut features =
            HostFeatures::new(vision, self.arrays(), self.pooling.n_slices, self.hidden, pool)?;
        self.tokens_with(&mut features, masks, regions, pool)
    }

    /// [`RegionHeads::tokens`] with the pooled features from `features` (the host's, or the
    /// device's: `backend::cuda::region`), whose arrays are [`RegionHeads::arrays`].
    pub fn tokens_with(
        &self,
        features: &mut dyn PooledFeatures,
        masks: MaskView<'_>,
        regions: &[&str],
        pool: &ThreadPool,
    ) -> Result<Vec<RegionTokens>> {
        let t = self.pooling.n_slices;
        let (g, d) = (self.pooling.grid, self.hidden);
        let n_tokens = self.pooling.n_tokens();
        let (ft, gp, fd) = features.dims();
        if ft != t || fd != d || gp == 0 {
            return Err(Error::Shape {
                what: "pooled features".into(),
                expected: format!("{t} slices × {d}"),
                found: format!("{ft} slices of a {gp}×{gp} grid × {fd}"),
            });
        }
        check_masks(&masks, &self.slot_keys, t)?;
        let [_, mh, mw] = masks.shape;
        let n_arrays = 1 + self.mask.levels.len();
        let globals: Vec<Vec<f32>> = (0..n_arrays).map(|a| features.globals(a)).collect::<Result<_>>()?;
        if globals.iter().any(|x| x.len() != t * d) {
            return Err(Error::Internal(format!("global tokens of another size than [{t}, {d}]")));
        }
        // The connector: on the host, or the product where the features are.
        let project = |features: &mut dyn PooledFeatures, x: &[f32], n: usize| -> Result<Vec<f32>> {
            match features.connector_product(x, n)? {
                Some(mut y) => {
                    if y.len() != n * self.out_dim {
                        return Err(Error::Internal(format!(
                            "{} connector outputs for {n} rows of {}",
                            y.len(),
                            self.out_dim
                        )));
                    }
                    self.proj.add_bias(&mut y);
                    Ok(y)
                }
                None => self.proj.apply(x, n, pool),
            }
        };
        let global_image = project(features, &globals[0], t)?; // [T, dm]

        // Masks at patch resolution [T, gp²] per slot, their slice means and voxel counts.
        let plane = mh * mw;
        let mut patch_masks: Vec<Vec<f32>> = Vec::with_capacity(masks.masks.len());
        let mut areas: Vec<Vec<u64>> = Vec::with_capacity(masks.masks.len());
        for m in masks.masks {
            let mut pm = Vec::with_capacity(t * gp * gp);
            let mut a = Vec::with_capacity(t);
            for s in 0..t {
                let slice = &m[s * plane..(s + 1) * plane];
                a.push(slice.iter().map(|&v| u64::from(v != 0)).sum());
                pm.extend(bilinear_mask(slice, mh, mw, gp, gp));
            }
            patch_masks.push(pm);
            areas.push(a);
        }

        // Per-slice pooled grids [g², D] of every array, and their projections, on demand.
        let mut grids: HashMap<(usize, usize), Vec<f32>> = HashMap::new();
        let mut projected: HashMap<usize, Vec<f32>> = HashMap::new();
        let mut done: Vec<RegionTokens> = Vec::with_capacity(regions.len());
        for &region in regions {
            let selection = select_slices(&self.pooling, region, &self.slot_keys, &areas)?;
            if let Some(prev) = done.iter().find(|r| r.selection == selection) {
                let mut copy = prev.clone();
                copy.region = region.to_string();
                done.push(copy);
                continue;
            }
            let mut new: Vec<usize> =
                selection.slices.iter().copied().filter(|s| !grids.contains_key(&(0, *s))).collect();
            new.sort_unstable();
            new.dedup();
            if !new.is_empty() {
                for ai in 0..n_arrays {
                    let pooled = features.grids(ai, &new, g)?;
                    if pooled.len() != new.len() * g * g * d {
                        return Err(Error::Internal(format!(
                            "{} pooled values for {} grids of {g}×{g}×{d}",
                            pooled.len(),
                            new.len()
                        )));
                    }
                    for (&s, grid) in new.iter().zip(pooled.chunks_exact(g * g * d)) {
                        grids.insert((ai, s), grid.to_vec());
                    }
                }
            }
            for &s in &selection.slices {
                if !projected.contains_key(&s) {
                    let p = project(features, &grids[&(0, s)], g * g)?;
                    projected.insert(s, p);
                }
            }
            // V_a = [global_a; grid_a(s) for s in selection].
            let pooled_of = |ai: usize| -> Vec<f32> {
                let mut v = Vec::with_capacity(n_tokens * d);
                v.extend_from_slice(&globals[ai]);
                for s in &selection.slices {
                    v.extend_from_slice(&grids[&(ai, *s)]);
                }
                v
            };
            let pooled = pooled_of(0);
            let mut image = Vec::with_capacity(n_tokens * self.out_dim);
            image.extend_from_slice(&global_image);
            for s in &selection.slices {
                image.extend_from_slice(&projected[s]);
            }

            // Mask vectors m [n_slots, n_tokens] and Osprey weights.
            let n_slots = masks.masks.len();
            let mut mask_vectors = Vec::with_capacity(n_slots * n_tokens);
            for pm in &patch_masks {
                let start = mask_vectors.len();
                for s in 0..t {
                    mean_rows(&pm[s * gp * gp..(s + 1) * gp * gp], gp * gp, 1, &mut mask_vectors);
                }
                for &s in &selection.slices {
                    adaptive_pool_rows(&pm[s * gp * gp..(s + 1) * gp * gp], gp, 1, g, &mut mask_vectors);
                }
                debug_assert_eq!(mask_vectors.len() - start, n_tokens);
            }
            let weights: Vec<f32> = mask_vectors
                .chunks_exact(n_tokens)
                .flat_map(|m| {
                    let on: Vec<f32> =
                        m.iter().map(|&v| if v > self.mask.binarize_threshold { 1.0 } else { 0.0 }).collect();
                    let inv = 1.0 / (on.iter().sum::<f32>() + self.mask.eps);
                    on.into_iter().map(move |v| v * inv)
                })
                .collect();

            // Σ_l res_l(wᵀ V_l) → feat_linear.
            let e = self.mask.embed_dim;
            let mut summed = vec![0.0f32; n_slots * e];
            for (li, res) in self.res.iter().enumerate() {
                let v = pooled_of(li + 1);
                let mut x = vec![0.0f32; n_slots * d];
                for (row, w) in x.chunks_exact_mut(d).zip(weights.chunks_exact(n_tokens)) {
                    for (i, &wi) in w.iter().enumerate() {
                        if wi != 0.0 {
                            row.iter_mut().zip(&v[i * d..(i + 1) * d]).for_each(|(r, &f)| *r += wi * f);
                        }
                    }
                }
                let y = res.apply(&x, n_slots, pool)?;
                summed.iter_mut().zip(&y).for_each(|(s, &v)| *s += v);
            }
            let mask_tokens = self.feat.apply(&summed, n_slots, pool)?;

            // Spatial tokens: MLP of the mask vector (r2_flat) or of a 2-D mask (slice2d).
            let mut x = match self.mask.spatial_input {
                SpatialInput::R2Flat => mask_vectors.clone(),
                SpatialInput::Slice2d => {
                    let ms = self.mask.mask_shape;
                    let mut x = Vec::with_capacity(n_slots * ms * ms);
                    for (m, a) in masks.masks.iter().zip(&areas) {
                        let best = (0..t).max_by(|&p, &q| a[p].cmp(&a[q]).then(q.cmp(&p))).unwrap_or(0);
                        x.extend(bilinear_mask(&m[best * plane..(best + 1) * plane], mh, mw, ms, ms));
                    }
                    x
                }
            };
            for (i, layer) in self.mlp.iter().enumerate() {
                x = layer.apply(&x, n_slots, pool)?;
                if i + 1 < self.mlp.len() {
                    x.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
            done.push(RegionTokens {
                region: region.to_string(),
                selection,
                pooled,
                image,
                mask_vectors,
                mask_tokens,
                spatial_tokens: x,
            });
        }
        Ok(done)
    }
}

/// The patch tokens of slice `s` of a `[T, n1, d]` array (CLS dropped).
fn slice_patches(a: &[f32], n1: usize, d: usize, s: usize) -> &[f32] {
    &a[(s * n1 + 1) * d..(s + 1) * n1 * d]
}

fn level<'a>(vision: &'a VisionOutput, l: usize) -> Result<&'a [f32]> {
    vision.hidden_state(l).ok_or_else(|| missing_level(l))
}

/// The error for a hidden state the encoder was not asked for.
pub(crate) fn missing_level(l: usize) -> Error {
    Error::invalid(
        "vision output",
        format!("hidden_states[{l}] was not returned by the encoder (request it in EncodeOptions::levels)"),
    )
}

/// Checks an encoder output's `[n_slices, n_tokens, hidden]` (named `what`) against `t`
/// slices of `1 + gp²` tokens × `d`; returns the patch grid side `gp`.
pub(crate) fn patch_grid(
    what: &str,
    [n_slices, n_tokens, hidden]: [usize; 3],
    t: usize,
    d: usize,
) -> Result<usize> {
    let patches = n_tokens.saturating_sub(1);
    let gp = (patches as f64).sqrt().round() as usize;
    if n_slices != t || hidden != d || gp * gp != patches || gp == 0 {
        return Err(Error::Shape {
            what: what.into(),
            expected: format!("{t} slices of 1 + g² tokens × {d}"),
            found: format!("{n_slices} slices of {n_tokens} tokens × {hidden}"),
        });
    }
    Ok(gp)
}

/// Checks the encoder output against the config; returns the patch grid side.
fn check_vision(vision: &VisionOutput, t: usize, d: usize) -> Result<usize> {
    let dims = [vision.n_slices, vision.n_tokens, vision.hidden_size];
    let gp = patch_grid("vision output for R² pooling", dims, t, d)?;
    let len = t * vision.n_tokens * d;
    if vision.last_hidden_state.len() != len || vision.hidden_states.iter().any(|(_, v)| v.len() != len) {
        return Err(Error::Shape {
            what: "vision output arrays".into(),
            expected: format!("{len} values each"),
            found: "another length".into(),
        });
    }
    Ok(gp)
}

fn check_masks(masks: &MaskView<'_>, keys: &[String], t: usize) -> Result<()> {
    if masks.keys != keys || masks.masks.len() != keys.len() {
        return Err(Error::invalid(
            "slot masks",
            format!("slots {:?} do not match the model's segmentation slots {keys:?}", masks.keys),
        ));
    }
    let [d, h, w] = masks.shape;
    if d != t || h == 0 || w == 0 {
        return Err(Error::Shape {
            what: "slot masks".into(),
            expected: format!("{t} slices (pooling.n_slices) of H × W > 0"),
            found: format!("{d} × {h} × {w}"),
        });
    }
    if let Some((i, m)) = masks.masks.iter().enumerate().find(|(_, m)| m.len() != d * h * w) {
        return Err(Error::Shape {
            what: format!("slot mask `{}`", keys[i]),
            expected: format!("{} values", d * h * w),
            found: m.len().to_string(),
        });
    }
    Ok(())
}
