//! Region tokens (R² pooling, connector, mask extractor, prompt assembly) against the PyTorch
//! reference `scripts/region/reference.py` (float64, written from SPEC-model.md), fixture
//! `tests/fixtures/region/region_ref.safetensors`.
//!
//! Tolerance: for every output tensor, max |ours − reference| ≤ 1e-5 · max |reference| (f32
//! arithmetic against f64; the observed error is printed). Slice indices and selection rules
//! must be identical.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use medregion::io::package::QuantPolicy;
use medregion::io::package::{LoadOptions, Model};
use medregion::model::config::{
    LevelNorm, ModelConfig, PoolingMode, SliceSelect, SpatialInput, VisionFeature,
};
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::ops::ThreadPool;
use medregion::region::{assemble, splice, MaskView, RegionHeads, RegionTokens};
use medregion::tensor::{Dense, Weight, WeightType};
use medregion::tokenizer::Tokenizer;
use medregion::vision::VisionOutput;
use safetensors::{Dtype, SafeTensors};

const TOL: f64 = 1e-5;
const REGIONS: [&str; 6] =
    ["lung", "large_airways", "mediastinum", "heart_great_vessels", "osseous", "upper_abdomen"];

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/region/region_ref.safetensors")
}

struct Fixture {
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    f64s: HashMap<String, Vec<f64>>,
    i64s: HashMap<String, Vec<i64>>,
    masks: Vec<Vec<u8>>,
    mask_shape: [usize; 4],
    cases: serde_json::Value,
}

fn load_fixture() -> Fixture {
    let bytes = std::fs::read(fixture_path()).expect("fixture (scripts/region/reference.py)");
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["cases"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut fx = Fixture {
        f32s: HashMap::new(),
        f64s: HashMap::new(),
        i64s: HashMap::new(),
        masks: Vec::new(),
        mask_shape: [0; 4],
        cases,
    };
    for (name, view) in st.tensors() {
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                fx.f32s.insert(name, (view.shape().to_vec(), v));
            }
            Dtype::F64 => {
                let v = data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
                fx.f64s.insert(name, v);
            }
            Dtype::I64 => {
                let v = data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
                fx.i64s.insert(name, v);
            }
            Dtype::U8 => {
                let s = view.shape();
                fx.mask_shape = [s[0], s[1], s[2], s[3]];
                let per = s[1] * s[2] * s[3];
                fx.masks = data.chunks_exact(per).map(<[u8]>::to_vec).collect();
            }
            other => panic!("unexpected dtype {other:?} for {name}"),
        }
    }
    fx
}

fn vision_output(fx: &Fixture) -> VisionOutput {
    let (shape, last) = &fx.f32s["input.last_hidden_state"];
    let hidden_states =
        (0..=2).map(|l| (l, fx.f32s[&format!("input.hidden_states.{l}")].1.clone())).collect();
    VisionOutput {
        n_slices: shape[0],
        n_tokens: shape[1],
        hidden_size: shape[2],
        last_hidden_state: last.clone(),
        hidden_states,
    }
}

/// The fixture's dimensions (see the script's docstring) with the case's settings.
fn case_config(case: &serde_json::Value) -> ModelConfig {
    let mut c = ModelConfig::default();
    c.vision.hidden_size = 16;
    c.vision.n_layers = 2;
    c.vision.layer_norm_eps = 1e-6;
    c.vision.feature = match case["feature"].as_str().unwrap() {
        "last_hidden_state" => VisionFeature::LastHiddenState,
        _ => VisionFeature::LastLayerRaw,
    };
    c.pooling.mode = if case["mode"] == "uniform" { PoolingMode::Uniform } else { PoolingMode::R2 };
    c.pooling.select = if case["select"] == "fixed_regions" {
        SliceSelect::FixedRegions
    } else {
        SliceSelect::PerRegionTopk
    };
    c.pooling.n_slices = 8;
    c.pooling.k_slices = 3;
    c.pooling.grid = 3;
    if let Some(f) = case.get("fixed_regions") {
        c.pooling.fixed_regions = serde_json::from_value(f.clone()).unwrap();
    }
    let m = &mut c.mask_extractor;
    m.levels = vec![1, 2];
    m.level_norm = if case["level_norm"] == "raw" { LevelNorm::Raw } else { LevelNorm::FinalLayernorm };
    m.embed_dim = 12;
    m.out_dim = 20;
    m.spatial_input =
        if case["spatial_input"] == "r2_flat" { SpatialInput::R2Flat } else { SpatialInput::Slice2d };
    m.mask_shape = case["mask_shape"].as_u64().unwrap() as usize;
    m.mlp_hidden_dim = 10;
    m.mlp_layers = 3;
    m.eps = 1e-8;
    m.binarize_threshold = case["binarize_threshold"].as_f64().unwrap() as f32;
    c.connector.in_dim = 16;
    c.connector.out_dim = 20;
    c.connector.bias = case["connector_bias"].as_bool().unwrap();
    c
}

fn heads<'a>(fx: &'a Fixture, case: &str, config: &ModelConfig) -> medregion::Result<RegionHeads<'a>> {
    RegionHeads::from_lookup(config, |name| {
        let key = format!("{case}/{name}");
        let (shape, data) =
            fx.f32s.get(&key).ok_or_else(|| medregion::Error::invalid("weight", key.clone()))?;
        Ok(Weight::F32(Dense { name: "fixture", shape, data }))
    })
}

fn keys() -> Vec<String> {
    ModelConfig::default().segmentation.iter().map(|s| s.key.clone()).collect()
}

/// max |a − b| / max |b|.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
}

fn run_case(fx: &Fixture, case: &str, pool: &ThreadPool) -> Vec<RegionTokens> {
    let config = case_config(&fx.cases[case]);
    let h = heads(fx, case, &config).unwrap();
    let keys = keys();
    let view = MaskView {
        shape: [fx.mask_shape[1], fx.mask_shape[2], fx.mask_shape[3]],
        keys: &keys,
        masks: &fx.masks,
    };
    h.tokens(&vision_output(fx), view, &REGIONS, pool).unwrap()
}

#[test]
fn tokens_match_the_pytorch_reference_in_every_mode() {
    let fx = load_fixture();
    let pool = ThreadPool::new(2).unwrap();
    let mut worst = 0.0f64;
    for case in ["uniform", "topk", "fixed", "topk_raw"] {
        let got = run_case(&fx, case, &pool);
        for (tokens, region) in got.iter().zip(REGIONS) {
            assert_eq!(tokens.region, region);
            let pre = format!("{case}.{region}");
            let slices: Vec<usize> = fx.i64s[&format!("{pre}.slices")].iter().map(|&v| v as usize).collect();
            assert_eq!(tokens.selection.slices, slices, "{pre}: selected slices");
            assert_eq!(
                tokens.selection.rule,
                fx.cases[case]["rules"][region].as_str().unwrap(),
                "{pre}: rule"
            );
            for (field, ours) in [
                ("pooled", &tokens.pooled),
                ("image", &tokens.image),
                ("mask_vectors", &tokens.mask_vectors),
                ("mask_tokens", &tokens.mask_tokens),
                ("spatial_tokens", &tokens.spatial_tokens),
            ] {
                let e = rel_err(ours, &fx.f64s[&format!("{pre}.{field}")]);
                assert!(e <= TOL, "{pre}.{field}: relative error {e:.3e} > {TOL:e}");
                worst = worst.max(e);
            }
        }
    }
    println!("region tokens: worst relative error {worst:.3e} (tolerance {TOL:e})");
}

#[test]
fn empty_masks_give_the_constant_absent_tokens() {
    // An empty slot's mask token is feat_linear(Σ_l res_l.bias) + bias (Osprey), computed
    // here directly from the weights.
    let fx = load_fixture();
    let pool = ThreadPool::single();
    let got = run_case(&fx, "topk", &pool);
    let w = |n: &str| &fx.f32s[&format!("topk/{n}")].1;
    let (e, dm) = (12, 20);
    let mut sum = vec![0.0f64; e];
    for k in 1..=2 {
        sum.iter_mut().zip(w(&format!("mask.res{k}.bias"))).for_each(|(s, &b)| *s += b as f64);
    }
    let feat = w("mask.feat_linear.weight");
    let want: Vec<f64> = (0..dm)
        .map(|r| {
            w("mask.feat_linear.bias")[r] as f64
                + (0..e).map(|c| feat[r * e + c] as f64 * sum[c]).sum::<f64>()
        })
        .collect();
    let keys = keys();
    for slot in ["large_airways", "pleural_effusion"] {
        assert!(fx.masks[keys.iter().position(|k| k == slot).unwrap()].iter().all(|&v| v == 0));
        let s = keys.iter().position(|k| k == slot).unwrap();
        for tokens in &got {
            let e = rel_err(&tokens.mask_tokens[s * dm..(s + 1) * dm], &want);
            assert!(e < 1e-5, "{slot}: {e}");
        }
    }
}

#[test]
fn results_do_not_depend_on_threads_or_on_region_order() {
    let fx = load_fixture();
    let one = run_case(&fx, "fixed", &ThreadPool::single());
    let two = run_case(&fx, "fixed", &ThreadPool::new(2).unwrap());
    assert_eq!(one, two);
    // Computing a region alone gives the same tokens as within the batch of six.
    let config = case_config(&fx.cases["topk"]);
    let h = heads(&fx, "topk", &config).unwrap();
    let keys = keys();
    let view = MaskView { shape: [8, 20, 20], keys: &keys, masks: &fx.masks };
    let all = h.tokens(&vision_output(&fx), view, &REGIONS, &ThreadPool::single()).unwrap();
    let alone = h.tokens(&vision_output(&fx), view, &["osseous"], &ThreadPool::single()).unwrap();
    assert_eq!(alone[0], all[4]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let fx = load_fixture();
    let pool = ThreadPool::single();
    let config = case_config(&fx.cases["topk"]);
    let h = heads(&fx, "topk", &config).unwrap();
    let keys = keys();
    let vision = vision_output(&fx);
    let err = |r: medregion::Result<Vec<RegionTokens>>| r.unwrap_err().to_string();

    // Masks with another number of slices than the pooling's T.
    let short: Vec<Vec<u8>> = fx.masks.iter().map(|m| m[..7 * 400].to_vec()).collect();
    let e =
        err(h.tokens(&vision, MaskView { shape: [7, 20, 20], keys: &keys, masks: &short }, &["lung"], &pool));
    assert!(e.contains("slot masks") && e.contains("7 × 20 × 20"), "{e}");
    // A mask whose length does not fit the shape.
    let mut bad = fx.masks.clone();
    bad[3].pop();
    let e =
        err(h.tokens(&vision, MaskView { shape: [8, 20, 20], keys: &keys, masks: &bad }, &["lung"], &pool));
    assert!(e.contains("heart_great_vessels"), "{e}");
    // Slots in another order.
    let mut swapped = keys.clone();
    swapped.swap(0, 1);
    let e = err(h.tokens(
        &vision,
        MaskView { shape: [8, 20, 20], keys: &swapped, masks: &fx.masks },
        &["lung"],
        &pool,
    ));
    assert!(e.contains("segmentation slots"), "{e}");
    // An unknown region.
    let view = MaskView { shape: [8, 20, 20], keys: &keys, masks: &fx.masks };
    let e = err(h.tokens(&vision, view, &["spleen"], &pool));
    assert!(e.contains("`spleen`"), "{e}");
    // The encoder did not return a needed level.
    let mut partial = vision.clone();
    partial.hidden_states.retain(|(l, _)| *l != 2);
    let e = err(h.tokens(&partial, view, &["lung"], &pool));
    assert!(e.contains("hidden_states[2]"), "{e}");
    // Vision output of another slice count.
    let mut fewer = vision.clone();
    fewer.n_slices = 4;
    let e = err(h.tokens(&fewer, view, &["lung"], &pool));
    assert!(e.contains("vision output"), "{e}");
    // Weights of the wrong shape.
    let mut wrong = config.clone();
    wrong.mask_extractor.embed_dim = 13;
    let e = heads(&fx, "topk", &wrong).unwrap_err().to_string();
    assert!(e.contains("mask.res1.weight") && e.contains("[13, 16]"), "{e}");
    // K larger than the number of slices: refused by the config.
    let mut k = ModelConfig::default();
    k.pooling.k_slices = 40;
    let e = k.validate().unwrap_err().to_string();
    assert!(e.contains("pooling.k_slices (40)"), "{e}");
}

fn tiny() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("region-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.safetensors");
    write_synthetic(&path, Preset::Tiny, 7, QuantPolicy::all(WeightType::F32)).unwrap();
    path
}

#[test]
fn prompts_place_every_token_by_id() {
    let path = tiny();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let config = model.config().clone();
    let tokenizer = Tokenizer::from_package(&model).unwrap();
    let (n_img, n_slots, dm) =
        (config.pooling.n_tokens(), config.segmentation.len(), config.decoder.hidden_size);
    for region in &config.regions {
        let p = assemble(&config, &tokenizer, &region.key, "Lungs: 4000 mL.").unwrap();
        assert!(p.text.contains(&format!("Generate the findings for the {} region.", region.name)));
        assert!(p.text.contains("Lungs: 4000 mL."));
        assert_eq!(p.image_positions.len(), n_img);
        assert_eq!((p.mask_positions.len(), p.pos_positions.len()), (n_slots, n_slots));
        // The image run is contiguous; each <pos> directly follows its <mask>.
        assert_eq!(p.image_positions.last().unwrap() - p.image_positions[0] + 1, n_img);
        for (m, q) in p.mask_positions.iter().zip(&p.pos_positions) {
            assert_eq!(m + 1, *q);
        }
        // Splicing writes exactly the placeholder rows.
        let tokens = RegionTokens {
            region: region.key.clone(),
            selection: medregion::region::Selection { slices: vec![], rule: "uniform" },
            pooled: vec![],
            image: (0..n_img * dm).map(|i| 1000.0 + i as f32).collect(),
            mask_vectors: vec![],
            mask_tokens: (0..n_slots * dm).map(|i| -1.0 - i as f32).collect(),
            spatial_tokens: (0..n_slots * dm).map(|i| 0.5 + i as f32).collect(),
        };
        let mut emb = vec![7.0f32; p.ids.len() * dm];
        splice(&p, &tokens, dm, &mut emb).unwrap();
        for (row, chunk) in emb.chunks_exact(dm).enumerate() {
            let want = if let Some(i) = p.image_positions.iter().position(|&q| q == row) {
                1000.0 + (i * dm) as f32
            } else if let Some(i) = p.mask_positions.iter().position(|&q| q == row) {
                -1.0 - (i * dm) as f32
            } else if let Some(i) = p.pos_positions.iter().position(|&q| q == row) {
                0.5 + (i * dm) as f32
            } else {
                7.0
            };
            assert_eq!(chunk[0], want, "row {row}");
        }
        let mut short = vec![0.0f32; (p.ids.len() - 1) * dm];
        assert!(splice(&p, &tokens, dm, &mut short).is_err());
    }
    // A placeholder's text in the attribute block changes the counts: refused.
    let e = assemble(&config, &tokenizer, "lung", "see <mask>").unwrap_err().to_string();
    assert!(e.contains("10 mask"), "{e}");
    let e = assemble(&config, &tokenizer, "spleen", "").unwrap_err().to_string();
    assert!(e.contains("`spleen`"), "{e}");
}
