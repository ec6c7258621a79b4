//! The synthetic RAD-DINO package shared by the benches: the encoder at `image_size` (ViT-B/14,
//! 12 layers, mask-extractor levels 3, 6, 9, 12), the rest the tiny preset. Written once to the
//! temp folder (~350 MB in F32) and reused.

use std::path::PathBuf;

use medregion::io::package::{PackageBuilder, QuantPolicy};
use medregion::model::config::VisionConfig;
use medregion::model::synthetic::{bytes_tokenizer, Preset, SyntheticSource};
use medregion::tensor::WeightType;

pub fn vision_package(image_size: usize, ty: WeightType) -> PathBuf {
    let path = std::env::temp_dir().join(format!("medregion-bench-vision-{image_size}-{}.mrm", ty.name()));
    if path.exists() {
        return path;
    }
    let mut config = Preset::Tiny.config();
    config.vision = VisionConfig { image_size, ..VisionConfig::default() };
    config.connector.in_dim = config.vision.hidden_size;
    config.mask_extractor.levels = vec![3, 6, 9, 12];
    let policy = QuantPolicy::all(WeightType::F32).component(medregion::model::names::Component::Vit, ty);
    let tmp = path.with_extension("tmp");
    PackageBuilder::new(config, bytes_tokenizer())
        .policy(policy)
        .write(&tmp, &mut SyntheticSource::new(5))
        .expect("write the bench package");
    std::fs::rename(&tmp, &path).expect("rename the bench package");
    path
}
