//! The region tokens from features pooled on the GPU (`backend::cuda::region::DeviceFeatures`,
//! what `report::generate_report_cuda` uses) against the host's pooling of the same encoder
//! output (`RegionHeads::tokens`).
//!
//! Package: the demo's config (F32), once as it is and once with the image feature
//! `last_layer_raw` and the levels LayerNorm-ed (`final_layernorm`), so both array kinds and
//! the device LayerNorm run. Input: the chest phantom and its label map.
//!
//! | what | compared how |
//! |---|---|
//! | `encode_on_device` vs `encode` (same kernels) | every array bit-identical |
//! | every region's tokens (selection, pooled, image, mask vectors, mask and spatial tokens) | bit-identical (`RegionTokens` equality): the pooling and LayerNorm kernels are the host functions' bit-exact twins, the rest is the same host code |
//! | the same with the connector on cuBLAS (`DeviceConnector`, what the pipeline uses) | image tokens `max |Δ| ≤ 1e-5 · max |host|` (f32 GEMM, another summation order over D = 64 products; ~1e-7 expected), every other field bit-identical |
//! | device features of another shape, a level that was not encoded | `Err` naming it |
//!
//! Every test needs a device (`scripts/gpu-check.sh` runs them with `--include-ignored`).

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::gpu;

use medregion::attributes::LabelScheme;
use medregion::backend::cuda::encoder::{DeviceEncoder, Precision};
use medregion::backend::cuda::region::{DeviceConnector, DeviceFeatures};
use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy};
use medregion::masks::Masks;
use medregion::model::config::{LevelNorm, VisionFeature};
use medregion::model::synthetic::{bytes_tokenizer, demo_config, SyntheticSource};
use medregion::ops::ThreadPool;
use medregion::phantom::chest_phantom;
use medregion::preprocess::preprocess;
use medregion::region::{MaskView, RegionHeads};
use medregion::tensor::WeightType;
use medregion::vision::{slices_from_volume, EncodeOptions};

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn device_pooling_gives_the_hosts_region_tokens() {
    let gpu = gpu();
    let dir = std::env::temp_dir().join(format!("medregion-cuda-region-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = chest_phantom().unwrap();
    let masks = Masks::from_label_map(&p.labels, &LabelScheme::totalseg()).unwrap();
    let pool = ThreadPool::new(1).unwrap();
    for (i, (feature, norm)) in [
        (VisionFeature::LastHiddenState, LevelNorm::Raw),
        (VisionFeature::LastLayerRaw, LevelNorm::FinalLayernorm),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cfg = demo_config();
        cfg.vision.feature = feature;
        cfg.mask_extractor.level_norm = norm;
        let path = dir.join(format!("region-{i}.mrpk"));
        PackageBuilder::new(cfg, bytes_tokenizer())
            .policy(QuantPolicy::all(WeightType::F32))
            .write(&path, &mut SyntheticSource::new(1))
            .unwrap();
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let config = model.config();
        let pre = preprocess(&p.ct, &config.preprocess).unwrap();
        let slot = masks.slot_masks(&pre, config).unwrap();
        let heads = RegionHeads::new(&model).unwrap();
        let options = EncodeOptions { levels: heads.levels(), batch: 0 };
        let encoder = DeviceEncoder::upload(&gpu, &model, Precision::F32).unwrap();
        let slices = slices_from_volume(&pre.data, pre.shape, encoder.config()).unwrap();
        let depth = pre.shape[0];
        let host = encoder.encode(&slices, depth, &options).unwrap();
        let dev = encoder.encode_on_device(&slices, depth, &options).unwrap();
        assert_eq!(
            gpu.download(&dev.last_hidden_state).unwrap(),
            host.last_hidden_state,
            "{feature:?}: last"
        );
        for ((l, d), (lh, h)) in dev.hidden_states.iter().zip(&host.hidden_states) {
            assert_eq!(l, lh);
            assert_eq!(&gpu.download(d).unwrap(), h, "{feature:?}: level {l}");
        }

        let keys: Vec<&str> = config.regions.iter().map(|r| r.key.as_str()).collect();
        let view = MaskView { shape: slot.shape, keys: &slot.keys, masks: &slot.masks };
        let want = heads.tokens(&host, view, &keys, &pool).unwrap();
        let (t, d) = (config.pooling.n_slices, config.vision.hidden_size);
        let mut features = DeviceFeatures::new(&gpu, &dev, heads.arrays(), t, d).unwrap();
        let got = heads.tokens_with(&mut features, view, &keys, &pool).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{feature:?} / {norm:?}: region {}", w.region);
        }
        eprintln!("{feature:?} / {norm:?}: {} regions' tokens identical", got.len());

        // The connector on the device: the image tokens within f32 reordering, the rest exact.
        let connector = DeviceConnector::upload(&gpu, &heads).unwrap();
        let mut features = DeviceFeatures::new(&gpu, &dev, heads.arrays(), t, d)
            .unwrap()
            .with_connector(&connector)
            .unwrap();
        let got = heads.tokens_with(&mut features, view, &keys, &pool).unwrap();
        let mut worst = 0.0f64;
        for (g, w) in got.iter().zip(&want) {
            let scale = w.image.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())).max(f64::MIN_POSITIVE);
            assert_eq!(g.image.len(), w.image.len());
            let e =
                g.image.iter().zip(&w.image).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()))
                    / scale;
            assert!(e <= 1e-5, "{feature:?}: region {} image tokens error {e:e}", w.region);
            worst = worst.max(e);
            let (mut g, mut w) = (g.clone(), w.clone());
            g.image.clear();
            w.image.clear();
            assert_eq!(g, w, "{feature:?}: region {} (all but the image tokens)", w.region);
        }
        eprintln!("{feature:?} / {norm:?}: device connector, image tokens within {worst:e}");

        // Bad input: another shape, a level that was not encoded.
        assert!(DeviceFeatures::new(&gpu, &dev, heads.arrays(), t + 1, d).is_err(), "wrong slice count");
        let fewer = EncodeOptions { levels: vec![], batch: 0 };
        let bare = encoder.encode_on_device(&slices, depth, &fewer).unwrap();
        let e = DeviceFeatures::new(&gpu, &bare, heads.arrays(), t, d).unwrap_err().to_string();
        assert!(e.contains("hidden_states"), "{e}");
    }
}
