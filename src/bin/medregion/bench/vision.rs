//! `medregion bench vision --model M | --synthetic PRESET [--size 256|518] [--slices N]
//! [--threads N] [--batch N] [--json]`: the vision encoder on one synthetic study.
//!
//! * The model: a package (`--model`, its `image_size`), or a synthetic package written once to
//!   the temp folder (`--synthetic tiny|small|full`: that preset's encoder, F32 weights, at
//!   `--size` px with the position table for that size; the rest of the package is the tiny
//!   preset's, which the encoder does not read).
//! * One warm-up slice, then `--slices` slices (default 32) of pseudo-random pixels timed in one
//!   `encode` call: slices/s and GFLOP/s overall, with the time split between the GEMMs,
//!   attention and everything else (`VisionEncoder::encode_profiled`).
//! * Each big GEMM shape of the encoder alone (`n = batch · T` rows, the model's own weights of
//!   layer 0), attention alone (one layer of one batch), and our square `--peak-size`³ F32
//!   GEMM, the "sgemm peak" measured in the same run; best of `--reps` each.
//!
//! FLOPs: [`EncoderFlops`] (a multiply-add counts 2). Compare with PyTorch and numpy with
//! `scripts/vision/bench_compare.sh`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use medregion::io::package::{LoadOptions, Model, PackageBuilder, QuantPolicy};
use medregion::model::config::VisionConfig;
use medregion::model::names::{vit_layer, Component};
use medregion::model::synthetic::{bytes_tokenizer, Preset, SyntheticSource};
use medregion::ops::{self, ThreadPool};
use medregion::tensor::{Dense, Weight, WeightType};
use medregion::vision::{
    attention, AttentionShape, EncodeOptions, EncodeProfile, EncoderFlops, VisionEncoder,
};
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct VisionArgs {
    /// The model package.
    #[arg(long, conflicts_with = "synthetic", required_unless_present = "synthetic")]
    model: Option<PathBuf>,
    /// A synthetic encoder instead: tiny, small or full (small and full: RAD-DINO ViT-B/14).
    #[arg(long)]
    synthetic: Option<String>,
    /// Slice side in px (synthetic: default the preset's; --model: must equal the package's).
    #[arg(long)]
    size: Option<usize>,
    /// Slices of the study.
    #[arg(long, default_value_t = 32)]
    slices: usize,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,
    /// Slices per encoder batch (0 = the encoder's default).
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Side of the square GEMM that measures the sgemm peak.
    #[arg(long, default_value_t = 2048)]
    peak_size: usize,
    /// Timed repetitions of each GEMM / attention measured alone (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A synthetic package with `preset`'s encoder at `size` px (F32), cached in the temp folder.
fn synthetic_package(preset: Preset, size: usize) -> Result<PathBuf> {
    let vision = VisionConfig { image_size: size, ..preset.config().vision };
    let mut config = Preset::Tiny.config();
    config.connector.in_dim = vision.hidden_size;
    config.mask_extractor.levels = vec![vision.n_layers];
    config.vision = vision;
    let path = std::env::temp_dir().join(format!(
        "medregion-bench-vision-{}-{size}-v{}.mrm",
        preset.name(),
        env!("CARGO_PKG_VERSION")
    ));
    if let Ok(model) = Model::load(&path, &LoadOptions::default()) {
        if model.config().vision == config.vision {
            return Ok(path);
        }
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let policy = QuantPolicy::all(WeightType::F32).component(Component::Vit, WeightType::F32);
    PackageBuilder::new(config, bytes_tokenizer())
        .policy(policy)
        .write(&tmp, &mut SyntheticSource::new(5))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::invalid("bench package", format!("{}: {e}", path.display())))?;
    Ok(path)
}

fn pixels(n: usize, cfg: &VisionConfig) -> Vec<f32> {
    let len = n * cfg.num_channels * cfg.image_size * cfg.image_size;
    (0..len).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect()
}

fn values(n: usize, mul: usize, modulo: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * mul) % modulo) as f32 / modulo as f32 - 0.5).collect()
}

/// Best seconds of `reps` calls of `f` after one warm-up call.
fn best_of(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// One GEMM shape measured alone.
struct Gemm {
    name: &'static str,
    /// Rows of the activations, inner dimension, output columns.
    m: usize,
    k: usize,
    n: usize,
    secs: f64,
}

impl Gemm {
    fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64
    }
    fn gflops(&self) -> f64 {
        self.flops() / self.secs / 1e9
    }
}

fn gemm(name: &'static str, m: usize, w: &Weight<'_>, reps: usize, pool: &ThreadPool) -> Result<Gemm> {
    let [n, k] = [w.shape()[0], w.shape()[1]];
    let x = values(m * k, 17, 89);
    let mut y = vec![0.0f32; m * n];
    let secs = best_of(reps, || ops::gemm(&x, m, w, &mut y, pool))?;
    Ok(Gemm { name, m, k, n, secs })
}

fn model_path(a: &VisionArgs) -> Result<(PathBuf, String)> {
    match (&a.model, &a.synthetic) {
        (Some(path), None) => Ok((path.clone(), path.display().to_string())),
        (None, Some(preset)) => {
            let preset = Preset::parse(preset)?;
            let size = a.size.unwrap_or(preset.config().vision.image_size);
            if size == 0 {
                return Err(Error::invalid("--size", "must be positive"));
            }
            Ok((synthetic_package(preset, size)?, format!("synthetic {} at {size} px", preset.name())))
        }
        _ => Err(Error::invalid("--model/--synthetic", "give exactly one")),
    }
}

pub fn run(a: VisionArgs) -> Result<()> {
    let device = a.device.resolve()?;
    if a.slices == 0 || a.peak_size == 0 {
        return Err(Error::invalid("--slices/--peak-size", "must be at least 1"));
    }
    let (path, name) = model_path(&a)?;
    let model = Model::load(Path::new(&path), &LoadOptions::default())?;
    match device {
        crate::device::Device::Cpu => {}
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(ordinal) => return run_cuda(&a, &model, &name, ordinal),
        #[cfg(not(feature = "cuda"))]
        crate::device::Device::Cuda(ordinal) => return Err(crate::device::not_compiled(ordinal)),
    }
    let enc = VisionEncoder::new(&model)?;
    let cfg = enc.config().clone();
    if let Some(size) = a.size {
        if size != cfg.image_size {
            return Err(Error::invalid(
                "--size",
                format!("{size} px, but the package's encoder is baked for {} px", cfg.image_size),
            ));
        }
    }
    let pool = ThreadPool::new(a.threads)?;
    let batch = if a.batch == 0 { medregion::vision::DEFAULT_BATCH } else { a.batch }.min(a.slices);
    let (t, d) = (cfg.n_positions(), cfg.hidden_size);
    let opts = EncodeOptions { levels: Vec::new(), batch };

    // The study: one warm-up slice, then every slice in one timed call.
    let px = pixels(a.slices, &cfg);
    let per = cfg.num_channels * cfg.image_size * cfg.image_size;
    enc.encode(&px[..per], 1, &opts, &pool)?;
    let mut prof = EncodeProfile::default();
    let start = Instant::now();
    let out = enc.encode_profiled(&px, a.slices, &opts, &pool, &mut prof)?;
    let secs = start.elapsed().as_secs_f64();
    if !out.last_hidden_state.iter().all(|v| v.is_finite()) {
        return Err(Error::invalid("encoder output", "not finite"));
    }
    let fl = EncoderFlops::per_slice(&cfg);
    let n = a.slices as f64;

    // The big GEMMs alone, on the encoder's own weights (layer 0) and shapes.
    let rows = batch * t;
    let g2 = cfg.grid() * cfg.grid();
    let patch_data = model.weight("vit.embeddings.patch_embeddings.projection.weight")?.to_f32()?;
    let patch_shape = [d, cfg.num_channels * cfg.patch_size * cfg.patch_size];
    let patch_w = Weight::F32(Dense { name: "patch", shape: &patch_shape, data: &patch_data });
    let gemms = vec![
        gemm("patch_embed", batch * g2, &patch_w, a.reps, &pool)?,
        gemm(
            "qkv_out",
            rows,
            &model.weight(&vit_layer(0, "attention.attention.query.weight"))?,
            a.reps,
            &pool,
        )?,
        gemm("fc1", rows, &model.weight(&vit_layer(0, "mlp.fc1.weight"))?, a.reps, &pool)?,
        gemm("fc2", rows, &model.weight(&vit_layer(0, "mlp.fc2.weight"))?, a.reps, &pool)?,
    ];
    // Attention alone: one layer of one batch.
    let shape = AttentionShape { n_seq: batch, n_tokens: t, n_heads: cfg.n_heads, head_dim: cfg.head_dim() };
    let len = batch * t * d;
    let (q, k, v) = (values(len, 13, 101), values(len, 29, 103), values(len, 7, 97));
    let mut o = vec![0.0f32; len];
    let attn_secs = best_of(a.reps, || attention(&q, &k, &v, &mut o, shape, &pool))?;
    let attn_flops = 4.0 * (batch * t * t * d) as f64;
    // The sgemm peak: our square F32 GEMM.
    let ps = a.peak_size;
    let peak_data = values(ps * ps, 31, 97);
    let peak_shape = [ps, ps];
    let peak_w = Weight::F32(Dense { name: "peak", shape: &peak_shape, data: &peak_data });
    let peak = gemm("peak", ps, &peak_w, a.reps, &pool)?;
    let peak_gflops = peak.gflops();
    // The encoder GEMMs that carry the FLOPs (patch embedding is < 1 %).
    let big = &gemms[1..];
    let big_flops: f64 = big.iter().map(Gemm::flops).sum();
    let big_gflops = big_flops / big.iter().map(|g| g.secs).sum::<f64>() / 1e9;

    let gflop = |x: f64| x / 1e9;
    if a.json {
        let doc = serde_json::json!({
            "model": name,
            "image_size": cfg.image_size,
            "tokens": t,
            "hidden_size": d,
            "layers": cfg.n_layers,
            "heads": cfg.n_heads,
            "intermediate_size": cfg.intermediate_size,
            "slices": a.slices,
            "batch": batch,
            "threads": pool.threads(),
            "seconds": secs,
            "slices_per_s": n / secs,
            "gflop_per_slice": {
                "patch_embed": gflop(fl.patch_embed), "qkv": gflop(fl.qkv), "out": gflop(fl.out),
                "fc1": gflop(fl.fc1), "fc2": gflop(fl.fc2), "attention": gflop(fl.attention),
                "gemm": gflop(fl.gemm()), "total": gflop(fl.total()),
            },
            "gflop_per_s": gflop(n * fl.total()) / secs,
            "breakdown": {
                "gemm_s": prof.gemm_secs, "attention_s": prof.attention_secs, "other_s": prof.other_secs,
                "gemm_gflop_per_s": gflop(n * fl.gemm()) / prof.gemm_secs,
                "attention_gflop_per_s": gflop(n * fl.attention) / prof.attention_secs,
            },
            "gemms": gemms.iter().map(|g| serde_json::json!({
                "name": g.name, "m": g.m, "k": g.k, "n": g.n, "seconds": g.secs, "gflop_per_s": g.gflops(),
                "vs_peak": g.gflops() / peak_gflops,
            })).collect::<Vec<_>>(),
            "encoder_gemms_gflop_per_s": big_gflops,
            "encoder_gemms_vs_peak": big_gflops / peak_gflops,
            "attention_alone": {
                "seconds": attn_secs, "gflop": gflop(attn_flops), "gflop_per_s": gflop(attn_flops) / attn_secs,
            },
            "sgemm_peak": { "size": ps, "seconds": peak.secs, "gflop_per_s": peak_gflops },
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!(
            "vision encoder ({name}): {} layers, {t} tokens/slice, {} threads, batch {batch}",
            cfg.n_layers,
            pool.threads()
        );
        println!(
            "study  {} slices: {secs:.2} s = {:.3} slices/s, {:.1} GFLOP/s ({:.2} GFLOP/slice, {:.0}% in GEMMs)",
            a.slices,
            n / secs,
            gflop(n * fl.total()) / secs,
            gflop(fl.total()),
            100.0 * fl.gemm() / fl.total()
        );
        let total = prof.total_secs();
        println!(
            "  gemm       {:>7.2} s ({:>4.1}%)  {:>6.1} GFLOP/s",
            prof.gemm_secs,
            100.0 * prof.gemm_secs / total,
            gflop(n * fl.gemm()) / prof.gemm_secs
        );
        println!(
            "  attention  {:>7.2} s ({:>4.1}%)  {:>6.1} GFLOP/s",
            prof.attention_secs,
            100.0 * prof.attention_secs / total,
            gflop(n * fl.attention) / prof.attention_secs
        );
        println!("  other      {:>7.2} s ({:>4.1}%)", prof.other_secs, 100.0 * prof.other_secs / total);
        for g in &gemms {
            println!(
                "gemm {:<12} [{}x{}]·[{}x{}]ᵀ {:>6.1} GFLOP/s ({:.0}% of peak)",
                g.name,
                g.m,
                g.k,
                g.n,
                g.k,
                g.gflops(),
                100.0 * g.gflops() / peak_gflops
            );
        }
        println!(
            "encoder GEMMs (qkv/out, fc1, fc2): {big_gflops:.1} GFLOP/s = {:.0}% of peak",
            100.0 * big_gflops / peak_gflops
        );
        println!(
            "attention alone ({batch} x {t} tokens, 1 layer): {:.1} GFLOP/s",
            gflop(attn_flops) / attn_secs
        );
        println!("sgemm peak (ours, {ps}^3): {peak_gflops:.1} GFLOP/s");
    }
    Ok(())
}

/// `bench vision --device cuda:N`: the study on the device encoder in both precisions
/// (slices/s and TFLOP/s; the GEMM-against-cuBLAS-peak figures are `benches/cuda.rs`'s).
#[cfg(feature = "cuda")]
fn run_cuda(a: &VisionArgs, model: &Model<'_>, name: &str, ordinal: usize) -> Result<()> {
    use medregion::backend::cuda::encoder::{DeviceEncoder, Precision};
    use medregion::backend::cuda::Gpu;

    let gpu = Gpu::open(ordinal)?;
    let cfg = VisionEncoder::new(model)?.config().clone();
    if a.size.is_some_and(|s| s != cfg.image_size) {
        return Err(Error::invalid(
            "--size",
            format!("the package's encoder is baked for {} px", cfg.image_size),
        ));
    }
    let px = pixels(a.slices, &cfg);
    let per = cfg.num_channels * cfg.image_size * cfg.image_size;
    let fl = EncoderFlops::per_slice(&cfg);
    let n = a.slices as f64;
    let mut rows = Vec::new();
    for precision in [Precision::Bf16, Precision::F32] {
        let enc = DeviceEncoder::upload(&gpu, model, precision)?;
        let opts = EncodeOptions { levels: Vec::new(), batch: a.batch };
        enc.encode(&px[..per], 1, &opts)?;
        let secs = best_of(a.reps, || enc.encode(&px, a.slices, &opts).map(|_| ()))?;
        rows.push((precision, secs));
    }
    if a.json {
        let doc = serde_json::json!({
            "model": name, "device": format!("cuda:{ordinal}"), "gpu": gpu.name(), "slices": a.slices,
            "gflop_per_slice": fl.total() / 1e9,
            "runs": rows.iter().map(|(p, s)| serde_json::json!({
                "precision": format!("{p:?}"), "seconds": s, "slices_per_s": n / s,
                "tflop_per_s": n * fl.total() / s / 1e12,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!(
            "{name}: {} slices of {} px on cuda:{ordinal} ({}), best of {}",
            a.slices,
            cfg.image_size,
            gpu.name(),
            a.reps
        );
        for (p, s) in &rows {
            println!(
                "{:<5} {s:>8.4} s  {:>8.1} slices/s  {:>7.2} TFLOP/s",
                format!("{p:?}"),
                n / s,
                n * fl.total() / s / 1e12
            );
        }
    }
    Ok(())
}
