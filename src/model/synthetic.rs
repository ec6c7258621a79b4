//! Synthetic model packages: the real architecture with random weights, deterministic from a
//! seed, and the byte-level tokenizer, so the demo and the tests run with no download.
//!
//! Presets:
//! * `tiny`: a few hundred kB; every dimension small but every feature on (GQA, llama3 RoPE
//!   scaling, untied output, LayerScale, 2 mask levels); 8 slices of 56×56 → 16 image tokens.
//! * `small`: RAD-DINO ViT-B/14 + a Llama-3.2-1B-shaped decoder (tied embeddings).
//! * `full`: RAD-DINO ViT-B/14 + Llama-3.1-8B shapes, all SPEC defaults.
//!
//! Random values (version-stable; changing them changes every synthetic package): each weight
//! has its own stream, seeded with `splitmix64(seed ^ fnv1a64(name))`; element `i` of the stream
//! is `splitmix64_mix(stream_seed + (i + 1) · 0x9E3779B97F4A7C15)` (SplitMix64 evaluated at
//! counter `i`, so any range can be generated in parallel and out of order). A 64-bit draw
//! becomes an approximately standard normal value `z` by summing its four 16-bit lanes as
//! uniforms on (0, 1) (Irwin–Hall, n = 4) and rescaling to unit variance (|z| ≤ √12). Weights
//! are `0.02·z`; norm weights and LayerScale `1 + 0.02·z` (close to 1, so that a kernel that
//! ignores them is caught); biases `0.02·z`.

use std::path::Path;

use super::config::{
    added_tokens, llama3_special_tokens, ModelConfig, RopeScaling, SpecialToken, TokenizerKind,
    BYTES_TOKENIZER_MAGIC,
};
use crate::io::package::{BuildReport, PackageBuilder, QuantPolicy, SourceTensor, WeightSource};
use crate::tensor::{numel, WeightType};
use crate::{Error, Result};

/// The synthetic presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    Tiny,
    Small,
    Full,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Tiny, Preset::Small, Preset::Full];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Full => "full",
        }
    }

    pub fn parse(text: &str) -> Result<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| Error::invalid("--synthetic", format!("`{text}` is not one of tiny, small, full")))
    }

    /// The config of this preset.
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::Tiny => tiny_config(),
            Preset::Small => small_config(),
            Preset::Full => full_config(),
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), counter-based: a small, version-stable PRNG.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function.
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        splitmix64_mix(self.state)
    }

    /// Draw `i` (0-based) of the stream that starts at `seed`, without stepping through it.
    pub fn at(seed: u64, i: u64) -> u64 {
        splitmix64_mix(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal (see the module doc).
    pub fn next_normal(&mut self) -> f32 {
        bits_to_normal(self.next_u64())
    }
}

/// Four 16-bit uniforms → Irwin–Hall(4) → zero mean, unit variance.
pub fn bits_to_normal(bits: u64) -> f32 {
    let mut s = 0.0f32;
    for k in 0..4 {
        s += (((bits >> (16 * k)) & 0xFFFF) as f32 + 0.5) * (1.0 / 65536.0);
    }
    (s - 2.0) * 1.732_050_8
}

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// How a weight is initialised: `offset + scale·z`.
fn init_of(name: &str) -> (f32, f32) {
    let is_norm = name.contains("norm") && name.ends_with(".weight");
    if is_norm || name.ends_with(".lambda1") {
        (1.0, 0.02)
    } else {
        (0.0, 0.02)
    }
}

/// The random values of weight `name` (numel `n`) for `seed`, generated on `threads` threads.
pub fn synthetic_values(seed: u64, name: &str, n: usize, threads: usize) -> Vec<f32> {
    let stream = splitmix64_mix(seed ^ fnv1a64(name.as_bytes()));
    let (offset, scale) = init_of(name);
    let mut out = vec![0.0f32; n];
    let per = n.div_ceil(threads.max(1)).max(1 << 16);
    std::thread::scope(|scope| {
        for (c, chunk) in out.chunks_mut(per).enumerate() {
            scope.spawn(move || {
                let base = (c * per) as u64;
                for (j, v) in chunk.iter_mut().enumerate() {
                    *v = offset + scale * bits_to_normal(SplitMix64::at(stream, base + j as u64));
                }
            });
        }
    });
    out
}

/// A [`WeightSource`] of synthetic weights.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    pub seed: u64,
    pub threads: usize,
}

impl SyntheticSource {
    pub fn new(seed: u64) -> SyntheticSource {
        SyntheticSource { seed, threads: std::thread::available_parallelism().map_or(1, |n| n.get()) }
    }
}

impl WeightSource for SyntheticSource {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<SourceTensor> {
        let n = numel(shape).ok_or_else(|| Error::invalid("shape", format!("`{name}`: size overflows")))?;
        Ok(SourceTensor::F32(synthetic_values(self.seed, name, n, self.threads)))
    }
}

/// The bytes of the synthetic byte-level tokenizer.
pub fn bytes_tokenizer() -> Vec<u8> {
    BYTES_TOKENIZER_MAGIC.to_vec()
}

/// A builder for a synthetic package of `preset` with `policy`.
pub fn synthetic_builder(preset: Preset, policy: QuantPolicy) -> PackageBuilder {
    PackageBuilder::new(preset.config(), bytes_tokenizer()).policy(policy)
}

/// Writes a synthetic package.
pub fn write_synthetic(path: &Path, preset: Preset, seed: u64, policy: QuantPolicy) -> Result<BuildReport> {
    synthetic_builder(preset, policy).write(path, &mut SyntheticSource::new(seed))
}

/// The package of `medregion report --demo`: the tiny preset with attention heads 64 wide in
/// the encoder (hidden 64, one head) and the decoder (`head_dim` 64), the narrowest the CUDA
/// attention kernels take, so the same demo runs on the CPU and on a GPU (and their reports
/// can be compared).
pub fn demo_config() -> ModelConfig {
    let mut c = tiny_config();
    c.name = "medregion-synthetic-demo".to_string();
    c.vision.hidden_size = 64;
    c.vision.n_heads = 1;
    c.vision.intermediate_size = 128;
    c.connector.in_dim = 64;
    c.decoder.head_dim = 64;
    c
}

/// Writes the demo package ([`demo_config`], F32, seed 1).
pub fn write_demo(path: &Path) -> Result<BuildReport> {
    PackageBuilder::new(demo_config(), bytes_tokenizer())
        .policy(QuantPolicy::all(WeightType::F32))
        .write(path, &mut SyntheticSource::new(1))
}

/// The tiny preset's special tokens: byte tokens 0..=255, then these.
fn tiny_specials() -> Vec<SpecialToken> {
    [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<im_patch>",
        "<mask>",
        "<pos>",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| SpecialToken { id: 256 + i as u32, text: t.to_string() })
    .collect()
}

fn tiny_config() -> ModelConfig {
    let mut c = ModelConfig { name: "medregion-synthetic-tiny".to_string(), ..ModelConfig::default() };
    c.preprocess.depth = 8;
    c.preprocess.height = 56;
    c.preprocess.width = 56;

    let v = &mut c.vision;
    v.hidden_size = 32;
    v.n_layers = 2;
    v.n_heads = 2;
    v.intermediate_size = 64;
    v.image_size = 56; // 4×4 patches
    v.pretrained_image_size = 56;

    c.pooling.n_slices = 8;
    c.pooling.k_slices = 2;
    c.pooling.grid = 2; // 8 + 2·4 = 16 image tokens
    c.pooling.fixed_regions.truncate(2);

    let m = &mut c.mask_extractor;
    m.levels = vec![1, 2];
    m.embed_dim = 32;
    m.out_dim = 64;
    m.mask_shape = 16;
    m.mlp_hidden_dim = 32;

    c.connector.in_dim = 32;
    c.connector.out_dim = 64;

    let d = &mut c.decoder;
    d.vocab_size = 264;
    d.hidden_size = 64;
    d.intermediate_size = 128;
    d.n_layers = 2;
    d.n_heads = 4;
    d.n_kv_heads = 2;
    d.head_dim = 16;
    d.max_position_embeddings = 4096;
    d.tie_word_embeddings = false;
    d.bos_token_id = 256;
    d.eos_token_ids = vec![257, 260];
    d.image_token_id = 261;
    d.mask_token_id = 262;
    d.pos_token_id = 263;

    c.tokenizer.kind = TokenizerKind::Bytes;
    c.tokenizer.pattern = None;
    c.tokenizer.special_tokens = tiny_specials();
    c
}

/// Byte tokenizer with the Llama 3 special-token ids, for the real-shaped presets.
fn real_bytes_tokenizer(c: &mut ModelConfig) {
    c.tokenizer.kind = TokenizerKind::Bytes;
    c.tokenizer.pattern = None;
    c.tokenizer.special_tokens = llama3_special_tokens(128_000);
    c.tokenizer.special_tokens.extend(added_tokens(128_256));
}

fn small_config() -> ModelConfig {
    let mut c = ModelConfig { name: "medregion-synthetic-small".to_string(), ..ModelConfig::default() };
    // Llama-3.2-1B(-Instruct) shapes [CONFIRMED: HF config.json].
    let d = &mut c.decoder;
    d.hidden_size = 2048;
    d.intermediate_size = 8192;
    d.n_layers = 16;
    d.n_heads = 32;
    d.n_kv_heads = 8;
    d.head_dim = 64;
    d.tie_word_embeddings = true;
    d.rope_scaling = Some(RopeScaling { factor: 32.0, ..RopeScaling::default() });
    c.mask_extractor.out_dim = 2048;
    c.connector.out_dim = 2048;
    real_bytes_tokenizer(&mut c);
    c
}

fn full_config() -> ModelConfig {
    let mut c = ModelConfig { name: "medregion-synthetic-full".to_string(), ..ModelConfig::default() };
    real_bytes_tokenizer(&mut c);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in Preset::ALL {
            p.config().validate().unwrap_or_else(|e| panic!("{}: {e}", p.name()));
        }
        assert_eq!(Preset::Tiny.config().n_image_tokens(), 16);
        assert_eq!(Preset::Full.config().n_image_tokens(), 356);
    }

    #[test]
    fn prng_is_stable() {
        // SplitMix64 reference outputs for seed 0 (from the published algorithm).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(SplitMix64::at(0, 1), 0x6E78_9E6A_A1B9_65F4);
        let a = synthetic_values(7, "llm.norm.weight", 1000, 1);
        let b = synthetic_values(7, "llm.norm.weight", 1000, 3);
        assert_eq!(a, b);
        assert_ne!(a, synthetic_values(8, "llm.norm.weight", 1000, 1));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
        let w = synthetic_values(7, "proj.weight", 100_000, 2);
        let var = w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32;
        assert!((var.sqrt() - 0.02).abs() < 0.001, "{}", var.sqrt());
    }
}
