//! `medregion bench llm`: decoder speed on a package — prefill and decode tokens/s, the
//! effective weight bandwidth (weight bytes read per forward call × calls/s), and batch-B decode
//! against decoding B sequences one after another, and the machine's read bandwidth measured in
//! the same run (the limit the effective bandwidth is compared with). Synthetic prompt ids;
//! greedy; no stop token.
//!
//! With a batch, it also times the step's matrix products alone (`Session::product_seconds`,
//! 1 row and B rows, same weights and threads) and prints the ceiling they put on batched
//! against sequential decode: `B / (decode tokens/s × products of B rows)`, what batch-B decode
//! would reach if its step cost nothing but its products. Where single-sequence decode waits on
//! memory (weights streamed from DRAM) the B rows' products hide under the weight reads and
//! the ceiling is high; where the weights come from cache, both steps are bound by
//! instructions, and the products of B rows cost the weights' work once plus B times each
//! row's (`vpdpbusd` and the per-block f32 steps), so the ceiling is about the products'
//! own gain, `B · t(1 row) / t(B rows)` (README, "the ninth session").
//!
//! `medregion bench vision`: the vision encoder on one synthetic study (see `vision.rs`).
//!
//! `medregion bench report`: the whole pipeline on the synthetic phantom, regions decoded
//! batched and one by one (see `report.rs`).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use medregion::io::package::{LoadOptions, Model};
use medregion::llm::{GenerateOptions, Input, Session, SessionOptions};
use medregion::{Error, Result};

mod report;
mod vision;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The decoder: prefill, decode and batched decode speed.
    Llm(LlmArgs),
    /// The vision encoder: slices/s, GFLOP/s by op, the big GEMMs alone, the sgemm peak.
    Vision(vision::VisionArgs),
    /// The whole pipeline on the phantom: per-stage times, batched vs sequential decoding.
    Report(report::ReportArgs),
}

#[derive(clap::Args)]
struct LlmArgs {
    /// The model package.
    #[arg(long)]
    model: PathBuf,
    /// Read the model into memory (huge pages) instead of mapping it: slower to load, faster
    /// to decode (see `LoadOptions::in_memory`).
    #[arg(long)]
    in_memory: bool,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,
    /// Sequences decoded together in the batched run (1 skips it).
    #[arg(long, default_value_t = 6)]
    batch: usize,
    /// How activations meet quantized weights: int8 (default) or f32 (CPU only).
    #[arg(long, default_value = "int8", value_parser = crate::device::parse_activations)]
    activations: medregion::ops::Activations,
    /// Prompt tokens.
    #[arg(long, default_value_t = 64)]
    prompt_len: usize,
    /// Decode steps per run.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Rounds of prefill, decode and batched decode, one after another; each figure is the
    /// fastest of its rounds (a neighbour on a shared machine only ever slows a run down).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Llm(a) => llm(a),
        What::Vision(a) => vision::run(a),
        What::Report(a) => report::run(a),
    }
}

fn llm(a: LlmArgs) -> Result<()> {
    let device = a.device.resolve()?;
    if a.prompt_len == 0 || a.steps == 0 || a.batch == 0 || a.rounds == 0 {
        return Err(Error::invalid("--prompt-len/--steps/--batch/--rounds", "must be at least 1"));
    }
    crate::device::check_activations(&device, a.activations)?;
    let model = Model::load(&a.model, &LoadOptions { in_memory: a.in_memory, ..LoadOptions::default() })?;
    match device {
        crate::device::Device::Cpu => {}
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(ordinal) => return llm_cuda(&a, &model, ordinal),
        #[cfg(not(feature = "cuda"))]
        crate::device::Device::Cuda(ordinal) => return Err(crate::device::not_compiled(ordinal)),
    }
    let vocab = model.config().decoder.vocab_size;
    let context = a.prompt_len + a.steps + 2;
    let mut s = Session::new(
        &model,
        &SessionOptions {
            context,
            threads: a.threads,
            max_batch: a.batch,
            activations: a.activations,
            ..Default::default()
        },
    )?;
    // Deterministic pseudo-random prompt ids.
    let prompt: Vec<u32> =
        (0..a.prompt_len).map(|i| ((i as u64 * 2_654_435_761 + 17) % vocab as u64) as u32).collect();
    let bytes = s.weight_bytes_per_step() as f64;

    // Warm the page cache and the threads once.
    s.prefill(Input::Tokens(&prompt[..1]))?;
    s.reset();

    // Rounds of prefill, decode and batched decode in turn (the machine's limit measured once,
    // after the first decode, on the same threads: a 256 MiB streaming sum).
    let (mut prefill, mut decode, mut batched) = (Vec::new(), Vec::new(), Vec::new());
    let mut machine_gbs = 0.0;
    // Batched decode of a quantized model is bound by the int8 dot products rather than by
    // memory: its multiply-accumulates per second against this machine's int8 peak.
    let mut int8_peak = None;
    let suffixes: Vec<Vec<u32>> = (0..a.batch).map(|i| vec![((i * 7919 + 3) % vocab) as u32]).collect();
    let refs: Vec<&[u32]> = suffixes.iter().map(Vec::as_slice).collect();
    let opts = GenerateOptions { max_new_tokens: a.steps, stop_ids: Some(Vec::new()), ..Default::default() };
    for round in 0..a.rounds {
        s.reset();
        let t = Instant::now();
        let mut id = medregion::llm::argmax(s.prefill(Input::Tokens(&prompt))?);
        prefill.push(a.prompt_len as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..a.steps {
            id = medregion::llm::argmax(s.step(id)?);
        }
        decode.push(a.steps as f64 / t.elapsed().as_secs_f64());
        if round == 0 {
            machine_gbs = medregion::ops::machine_read_bandwidth(256 << 20, s.threads())?;
            if a.batch > 1 && s.int8_products() {
                int8_peak = medregion::ops::machine_int8_peak(s.threads())?;
            }
        }
        if a.batch > 1 {
            let out = s.generate_batch(Input::Tokens(&prompt), &refs, &opts, None, &mut |_, _, _| {
                ControlFlow::Continue(())
            })?;
            // Each sequence samples `steps` tokens; the first comes from its suffix prefill, so
            // the lock-step loop runs `steps − 1` forward calls over the whole batch.
            let calls = a.steps.saturating_sub(1).max(1) as f64;
            batched.push(calls * a.batch as f64 / out[0].decode_secs);
        }
    }
    // The products alone, 1 row and `batch` rows, on the same weights and threads: how much
    // more work per second batching buys them, and the most batched decode could gain on this
    // machine with these kernels (a step of `batch` rows cannot take less than its products).
    let ceiling = if a.batch > 1 {
        let one = s.product_seconds(1, a.steps)?;
        let many = s.product_seconds(a.batch, a.steps)?;
        Some((one, many))
    } else {
        None
    };
    let (prefill_tps, decode_tps) = (fastest(&prefill), fastest(&decode));
    let decode_gbs = bytes * decode_tps / 1e9;
    let batch = batch_figures(&batched, a.batch, decode_tps, bytes);
    // (products' seconds for 1 row and for the batch, their gain, the ceiling).
    let ceiling = ceiling.map(|(one, many)| {
        let (gain, bound) = ceiling_figures(one, many, a.batch, decode_tps);
        (one, many, gain, bound)
    });
    let macs = s.matmul_macs_per_token() as f64;
    // (GMAC/s of the batched products, their fraction of the peak, the peak).
    let batch_macs = batch.zip(int8_peak).map(|((tps, _, _), p)| {
        let gmacs = macs * tps / 1e9;
        (gmacs, gmacs / p.gmacs, p)
    });

    let name = a.model.display().to_string();
    if a.json {
        let mut doc = serde_json::json!({
            "model": name, "threads": s.threads(), "activations": a.activations.name(),
            "prompt_len": a.prompt_len, "steps": a.steps,
            "weight_bytes_per_step": bytes, "prefill_tokens_per_s": prefill_tps,
            "decode_tokens_per_s": decode_tps, "decode_gb_per_s": decode_gbs,
            "machine_read_gb_per_s": machine_gbs, "decode_fraction_of_read_bandwidth": decode_gbs / machine_gbs,
            "rounds": a.rounds, "prefill_tokens_per_s_rounds": prefill, "decode_tokens_per_s_rounds": decode,
        });
        if let Some((tps, ratio, gbs)) = batch {
            doc["batch"] = a.batch.into();
            doc["batch_decode_tokens_per_s"] = tps.into();
            doc["batch_vs_sequential"] = ratio.into();
            doc["batch_gb_per_s"] = gbs.into();
            doc["batch_fraction_of_read_bandwidth"] = (gbs / machine_gbs).into();
            doc["batch_decode_tokens_per_s_rounds"] = batched.clone().into();
        }
        if let Some((one, many, gain, bound)) = ceiling {
            doc["products_seconds_one_row"] = one.into();
            doc["products_seconds_batch"] = many.into();
            doc["batch_products_gain"] = gain.into();
            doc["batch_vs_sequential_ceiling"] = bound.into();
        }
        if let Some((gmacs, fraction, peak)) = batch_macs {
            doc["matmul_macs_per_token"] = macs.into();
            doc["batch_matmul_gmacs"] = gmacs.into();
            doc["machine_int8_peak_gmacs"] = peak.gmacs.into();
            doc["machine_int8_peak_kernel"] = peak.kernel.into();
            doc["batch_fraction_of_int8_peak"] = fraction.into();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!(
            "model {name}: {:.1} MB of weights per step, {} threads, {} activations; fastest of {} round{}",
            bytes / 1e6,
            s.threads(),
            a.activations.name(),
            a.rounds,
            if a.rounds == 1 { "" } else { "s" }
        );
        println!("prefill  {:>5} tokens: {prefill_tps:>10.1} tokens/s", a.prompt_len);
        println!(
            "decode   {:>5} steps:  {decode_tps:>10.1} tokens/s  {decode_gbs:>7.2} GB/s effective  ({:.0} % of read bandwidth)",
            a.steps,
            100.0 * decode_gbs / machine_gbs
        );
        println!("machine read bandwidth (streaming sum, 256 MiB, same threads): {machine_gbs:.2} GB/s");
        if let Some((tps, ratio, gbs)) = batch {
            println!(
                "batch {:>2} decode:       {tps:>10.1} tokens/s  {gbs:>7.2} GB/s effective  ({ratio:.2}x decoding them one after another)",
                a.batch
            );
        }
        if let Some((one, many, gain, bound)) = ceiling {
            println!(
                "batch {:>2} ceiling:      products alone {:.3} ms for 1 row, {:.3} ms for {} ({gain:.2}x the rows per second); a step of nothing but its products would be {bound:.2}x decoding one after another",
                a.batch,
                one * 1e3,
                many * 1e3,
                a.batch
            );
        }
        if let Some((gmacs, fraction, peak)) = batch_macs {
            println!(
                "batch {:>2} products:     {gmacs:>10.1} GMAC/s          ({:.0} % of the int8 peak: {}, same threads, {:.1} GMAC/s)",
                a.batch,
                100.0 * fraction,
                peak.kernel,
                peak.gmacs
            );
        }
    }
    Ok(())
}

/// The fastest of a measurement's rounds (tokens/s).
fn fastest(rounds: &[f64]) -> f64 {
    rounds.iter().copied().fold(0.0, f64::max)
}

/// Batched decode's figures from its rounds (none when `batch` is 1): the fastest tokens/s,
/// its ratio to the fastest single-sequence decode, and the weight GB/s (one read of `bytes`
/// per forward call of the whole batch).
fn batch_figures(batched: &[f64], batch: usize, decode_tps: f64, bytes: f64) -> Option<(f64, f64, f64)> {
    (batch > 1).then(|| {
        let tps = fastest(batched);
        (tps, tps / decode_tps, bytes * tps / batch as f64 / 1e9)
    })
}

/// From the products' seconds for one row and for `batch` rows: how many more rows per second
/// the batched products run (`batch · one / many`), and the ceiling of batched against
/// sequential decode, `batch / (decode_tps · many)`: batch-`batch` tokens/s if a batched step
/// cost only its products, over the measured single-sequence tokens/s.
fn ceiling_figures(one: f64, many: f64, batch: usize, decode_tps: f64) -> (f64, f64) {
    (batch as f64 * one / many, batch as f64 / (decode_tps * many))
}

/// `bench llm --device cuda:N`: the same measurements on a device session (greedy, the device
/// argmax; stop ids off), against the device-to-device copy bandwidth measured in the same run.
#[cfg(feature = "cuda")]
fn llm_cuda(a: &LlmArgs, model: &Model<'_>, ordinal: usize) -> Result<()> {
    use medregion::backend::cuda::decoder::{DeviceDecoder, DeviceSession, DeviceSessionOptions, MAX_BATCH};
    use medregion::backend::cuda::Gpu;
    use medregion::llm::SamplingParams;

    if a.batch > MAX_BATCH {
        return Err(Error::invalid("--batch", format!("{} exceeds the CUDA session's {MAX_BATCH}", a.batch)));
    }
    let vocab = model.config().decoder.vocab_size;
    let context = a.prompt_len + a.steps + 2;
    let gpu = Gpu::open(ordinal)?;
    let mut dec = DeviceDecoder::upload_with_positions(&gpu, model, context)?;
    let mut s = DeviceSession::new(
        &dec,
        &DeviceSessionOptions { context, max_batch: a.batch, ..DeviceSessionOptions::default() },
    )?;
    let prompt: Vec<u32> =
        (0..a.prompt_len).map(|i| ((i as u64 * 2_654_435_761 + 17) % vocab as u64) as u32).collect();
    let bytes = dec.weight_bytes() as f64;
    let opts = GenerateOptions {
        max_new_tokens: a.steps,
        sampling: SamplingParams::greedy(),
        stop_ids: Some(Vec::new()),
        ..Default::default()
    };
    let mut none = |_: u32, _: &str| ControlFlow::Continue(());
    // Warm-up (module loading, graph capture), then the measured run.
    s.generate(
        Input::Tokens(&prompt),
        &GenerateOptions { max_new_tokens: 2, ..opts.clone() },
        None,
        &mut none,
    )?;
    // `steps` tokens sampled: the first from the prefill, then `steps − 1` decode steps.
    let calls = a.steps.saturating_sub(1).max(1) as f64;
    let suffixes: Vec<Vec<u32>> = (0..a.batch).map(|i| vec![((i * 7919 + 3) % vocab) as u32]).collect();
    let inputs: Vec<Input<'_>> = suffixes.iter().map(|x| Input::Tokens(x)).collect();
    // Rounds of generation and batched generation in turn; the fastest of each is reported.
    let (mut prefill, mut decode, mut batched) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        s.reset();
        let g = s.generate(Input::Tokens(&prompt), &opts, None, &mut none)?;
        prefill.push(a.prompt_len as f64 / g.prefill_secs);
        decode.push(calls / g.decode_secs);
        if a.batch > 1 {
            let mut none = |_: usize, _: u32, _: &str| ControlFlow::Continue(());
            let out = s.generate_batch_inputs(Input::Tokens(&prompt), &inputs, &opts, None, &mut none)?;
            batched.push(calls * a.batch as f64 / out[0].decode_secs);
        }
    }
    let (prefill_tps, decode_tps) = (fastest(&prefill), fastest(&decode));
    let decode_gbs = bytes * decode_tps / 1e9;
    // Read + write of a copy at least as large as the weights (capped at 4 GiB).
    let peak = gpu.copy_bandwidth_gbs(dec.weight_bytes().clamp(256 << 20, 4 << 30))?;
    let batch = batch_figures(&batched, a.batch, decode_tps, bytes);
    let (graphs, replays, why) = s.graph_status();
    let why = why.map(str::to_string);
    let (gemm_rows, gemm_why) = s.gemm_status();
    let gemm_why = gemm_why.map(str::to_string);
    // Prefill tokens/s of a fresh session with `gemm_rows` (the second of two runs).
    let timed_prefill = |dec: &DeviceDecoder, gemm_rows: usize| -> Result<f64> {
        let o = DeviceSessionOptions { context, gemm_rows, ..DeviceSessionOptions::default() };
        let mut s = DeviceSession::new(dec, &o)?;
        s.prefill(&prompt)?;
        s.reset();
        let t = std::time::Instant::now();
        s.prefill(&prompt)?;
        Ok(a.prompt_len as f64 / t.elapsed().as_secs_f64())
    };
    // The same prefill on the GEMV kernels alone (`gemm_rows: 0`), for the ratio.
    let gemv_prefill_tps = timed_prefill(&dec, 0)?;
    let prefill_path = match gemm_rows {
        Some(r) if a.prompt_len >= r => format!("cuBLAS GEMM (chunks of >= {r} rows)"),
        Some(r) => format!("GEMV (the prompt is below gemm_rows {r})"),
        None => format!("GEMV ({})", gemm_why.as_deref().unwrap_or("GEMM prefill off")),
    };
    let gemm_used = gemm_rows.is_some_and(|r| a.prompt_len >= r);
    drop(s);
    // The weight products' arithmetic per prompt token (attention not counted), for TFLOP/s.
    let c = &model.config().decoder;
    let (d, f) = (c.hidden_size, c.intermediate_size);
    let per_layer = 2 * d * c.q_dim() + 2 * d * c.kv_dim() + 3 * d * f;
    let flops_per_token = 2.0 * (c.n_layers * per_layer) as f64;
    // The GEMM prefill again with f16 copies of the quantized weights kept (no dequantization
    // per chunk), when it ran at all and there is something to copy.
    let copies = if gemm_used {
        match dec.keep_prefill_copies(medregion::backend::cuda::blas::Half::F16) {
            Ok(0) => Err("no quantized weights".to_string()),
            Ok(b) => Ok((timed_prefill(&dec, DeviceSessionOptions::default().gemm_rows)?, b)),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Err("the prompt took the GEMV kernels".to_string())
    };
    let name = a.model.display().to_string();
    if a.json {
        let mut doc = serde_json::json!({
            "model": name, "device": format!("cuda:{ordinal}"), "gpu": gpu.name(), "prompt_len": a.prompt_len,
            "steps": a.steps, "weight_bytes_per_step": bytes, "prefill_tokens_per_s": prefill_tps,
            "decode_tokens_per_s": decode_tps, "decode_gb_per_s": decode_gbs,
            "device_copy_gb_per_s": peak, "decode_fraction_of_copy_bandwidth": decode_gbs / peak,
            "cuda_graphs": graphs, "graph_replays": replays, "graph_error": why,
            "prefill_path": prefill_path, "gemv_prefill_tokens_per_s": gemv_prefill_tps,
            "prefill_vs_gemv": prefill_tps / gemv_prefill_tps,
            "prefill_weight_tflop_per_s": prefill_tps * flops_per_token / 1e12,
            "rounds": a.rounds, "prefill_tokens_per_s_rounds": prefill, "decode_tokens_per_s_rounds": decode,
        });
        match &copies {
            Ok((tps, b)) => {
                doc["prefill_with_f16_copies_tokens_per_s"] = (*tps).into();
                doc["f16_copies_bytes"] = (*b).into();
            }
            Err(why) => doc["prefill_with_f16_copies"] = format!("not measured: {why}").into(),
        }
        if let Some((tps, ratio, gbs)) = batch {
            doc["batch"] = a.batch.into();
            doc["batch_decode_tokens_per_s"] = tps.into();
            doc["batch_vs_sequential"] = ratio.into();
            doc["batch_gb_per_s"] = gbs.into();
            doc["batch_decode_tokens_per_s_rounds"] = batched.clone().into();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!(
            "model {name}: {:.1} MB of weights per step, cuda:{ordinal} ({}); fastest of {} round{}",
            bytes / 1e6,
            gpu.name(),
            a.rounds,
            if a.rounds == 1 { "" } else { "s" }
        );
        println!(
            "prefill  {:>5} tokens: {prefill_tps:>10.1} tokens/s  via {prefill_path} ({:.1} TFLOP/s in the weight products); GEMV alone {gemv_prefill_tps:.1} tokens/s ({:.2}x)",
            a.prompt_len,
            prefill_tps * flops_per_token / 1e12,
            prefill_tps / gemv_prefill_tps
        );
        match &copies {
            Ok((tps, b)) => println!(
                "prefill with f16 weight copies kept ({:.2} GB more): {tps:.1} tokens/s ({:.2}x the dequantizing GEMM prefill)",
                *b as f64 / 1e9,
                tps / prefill_tps
            ),
            Err(why) => println!("prefill with f16 weight copies: not measured ({why})"),
        }
        println!(
            "decode   {:>5} steps:  {decode_tps:>10.1} tokens/s  {decode_gbs:>7.1} GB/s effective  ({:.0} % of the copy bandwidth)",
            a.steps,
            100.0 * decode_gbs / peak
        );
        println!("device copy bandwidth (read + write, same run): {peak:.1} GB/s; CUDA graphs: {graphs} ({replays} replays{})",
            why.map(|w| format!("; capture failed: {w}")).unwrap_or_default());
        if let Some((tps, ratio, gbs)) = batch {
            println!(
                "batch {:>2} decode:       {tps:>10.1} tokens/s  {gbs:>7.1} GB/s effective  ({ratio:.2}x decoding them one after another)",
                a.batch
            );
        }
    }
    Ok(())
}
