//! Prompt assembly (SPEC-model.md §9.2): the region prompt text from the config's templates, its
//! token ids, and the input embeddings with the image, mask and spatial tokens spliced in at
//! the positions whose id is a placeholder (found, never assumed).

use serde::Serialize;

use super::tokens::RegionTokens;
use crate::model::config::{ModelConfig, RegionConfig};
use crate::tokenizer::{EncodeOptions, Tokenizer};
use crate::{Error, Result};

/// One region's prompt: text, ids and where the placeholders are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prompt {
    /// Region key.
    pub region: String,
    pub text: String,
    pub ids: Vec<u32>,
    /// Positions of the `<im_patch>` ids (`pooling.n_tokens` of them), ascending.
    pub image_positions: Vec<usize>,
    /// Positions of the `<mask>` ids (one per segmentation slot), ascending.
    pub mask_positions: Vec<usize>,
    /// Positions of the `<pos>` ids (one per segmentation slot), ascending.
    pub pos_positions: Vec<usize>,
}

/// Replaces each `{key}` of `pairs` in one left-to-right pass (substituted text is never
/// scanned again, so a value containing `{image}` stays literal).
fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    'scan: while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        for (key, value) in pairs {
            if rest.len() > key.len() + 1
                && rest[1..].starts_with(key)
                && rest.as_bytes()[key.len() + 1] == b'}'
            {
                out.push_str(value);
                rest = &rest[key.len() + 2..];
                continue 'scan;
            }
        }
        out.push('{');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

/// The segmentation list: prefix, one item per slot (`{name} {mask}{pos}`), separator, suffix.
pub fn segmentation_text(config: &ModelConfig) -> String {
    let p = &config.prompt;
    let items: Vec<String> = config
        .segmentation
        .iter()
        .map(|s| {
            fill(&p.segmentation_item, &[("name", &s.name), ("mask", &p.mask_token), ("pos", &p.pos_token)])
        })
        .collect();
    format!("{}{}{}", p.segmentation_prefix, items.join(&p.segmentation_separator), p.segmentation_suffix)
}

/// The prompt text of `region` with `attributes` (the patient-attribute block; see the module
/// doc of `crate::region` for the text used when there is none).
pub fn render(config: &ModelConfig, region: &RegionConfig, attributes: &str) -> String {
    let p = &config.prompt;
    let image = p.image_token.repeat(config.pooling.n_tokens());
    let instruction = fill(&p.instruction, &[("region_name", &region.name)]);
    let segmentation = segmentation_text(config);
    fill(
        &p.template,
        &[
            ("system", &p.system),
            ("image", &image),
            ("segmentation", &segmentation),
            ("attributes", attributes),
            ("instruction", &instruction),
        ],
    )
}

/// Renders and tokenizes the prompt of region `region_key` (no BOS is added: the template
/// carries it) and locates the placeholders. Counts other than `n_tokens` image ids and one
/// `<mask>` and one `<pos>` per slot (e.g. a placeholder's text inside the attribute text) are
/// an error naming the counts.
pub fn assemble(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    region_key: &str,
    attributes: &str,
) -> Result<Prompt> {
    let region = config.regions.iter().find(|r| r.key == region_key).ok_or_else(|| {
        let keys: Vec<&str> = config.regions.iter().map(|r| r.key.as_str()).collect();
        Error::invalid("region", format!("`{region_key}` is not one of {keys:?}"))
    })?;
    let text = render(config, region, attributes);
    let ids = tokenizer.encode_with(&text, &EncodeOptions::default())?;
    let d = &config.decoder;
    let at = |id: u32| -> Vec<usize> {
        ids.iter().enumerate().filter(|(_, &t)| t == id).map(|(i, _)| i).collect()
    };
    let (image_positions, mask_positions, pos_positions) =
        (at(d.image_token_id), at(d.mask_token_id), at(d.pos_token_id));
    let (n_img, n_slots) = (config.pooling.n_tokens(), config.segmentation.len());
    if image_positions.len() != n_img || mask_positions.len() != n_slots || pos_positions.len() != n_slots {
        return Err(Error::invalid(
            "prompt",
            format!(
                "the `{region_key}` prompt has {} image, {} mask and {} pos placeholders; the model needs \
                 {n_img}, {n_slots} and {n_slots} (does the attribute text or a template contain a \
                 placeholder token?)",
                image_positions.len(),
                mask_positions.len(),
                pos_positions.len()
            ),
        ));
    }
    if ids.len() > d.max_position_embeddings {
        return Err(Error::invalid(
            "prompt",
            format!(
                "the `{region_key}` prompt is {} tokens; the decoder's context is {}",
                ids.len(),
                d.max_position_embeddings
            ),
        ));
    }
    Ok(Prompt { region: region_key.to_string(), text, ids, image_positions, mask_positions, pos_positions })
}

/// Overwrites the placeholder rows of `embeddings` (`[prompt.ids.len(), dm]`, the token
/// embeddings of `prompt.ids`) with `tokens`: the i-th image id gets image row i, the i-th
/// `<mask>` the i-th mask token, the i-th `<pos>` the i-th spatial token.
pub fn splice(prompt: &Prompt, tokens: &RegionTokens, dm: usize, embeddings: &mut [f32]) -> Result<()> {
    let rows = |v: &[f32]| v.len() / dm.max(1);
    let ok = dm > 0
        && embeddings.len() == prompt.ids.len() * dm
        && tokens.image.len() == prompt.image_positions.len() * dm
        && tokens.mask_tokens.len() == prompt.mask_positions.len() * dm
        && tokens.spatial_tokens.len() == prompt.pos_positions.len() * dm;
    if !ok {
        return Err(Error::Shape {
            what: format!("`{}` prompt embeddings", prompt.region),
            expected: format!(
                "{} rows, {} image, {} mask, {} spatial rows of width {dm}",
                prompt.ids.len(),
                prompt.image_positions.len(),
                prompt.mask_positions.len(),
                prompt.pos_positions.len()
            ),
            found: format!(
                "{}, {}, {}, {}",
                rows(embeddings),
                rows(&tokens.image),
                rows(&tokens.mask_tokens),
                rows(&tokens.spatial_tokens)
            ),
        });
    }
    for (positions, src) in [
        (&prompt.image_positions, &tokens.image),
        (&prompt.mask_positions, &tokens.mask_tokens),
        (&prompt.pos_positions, &tokens.spatial_tokens),
    ] {
        for (&p, row) in positions.iter().zip(src.chunks_exact(dm)) {
            embeddings[p * dm..(p + 1) * dm].copy_from_slice(row);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_single_pass() {
        let s = fill("a{x}b{y}c{z}{", &[("x", "{y}"), ("y", "Y")]);
        assert_eq!(s, "a{y}bYc{z}{");
    }

    #[test]
    fn default_segmentation_list() {
        let c = ModelConfig::default();
        let s = segmentation_text(&c);
        assert!(s.starts_with("Segmentation: lung <mask><pos>, large airways <mask><pos>"));
        assert!(s.ends_with("kidney cyst <mask><pos>."));
        assert_eq!(s.matches("<mask><pos>").count(), 9);
    }
}
