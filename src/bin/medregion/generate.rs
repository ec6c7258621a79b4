//! `medregion generate`: run the decoder on a text prompt, streaming the text to stdout and the
//! speed to stderr; optionally dump every logits row as a float32 `.npy` `[positions, vocab]`
//! (the prompt's positions, then one row per sampling step after the first; row `P − 1 + j`
//! is the distribution token `j` was drawn from).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use medregion::io::package::{LoadOptions, Model};
use medregion::llm::{Activations, GenerateOptions, Input, SamplingParams, Session, SessionOptions};
use medregion::tokenizer::Tokenizer;
use medregion::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The model package.
    #[arg(long)]
    model: PathBuf,
    /// Read the model into memory (huge pages) instead of mapping it: slower to load, faster
    /// to decode (see `LoadOptions::in_memory`).
    #[arg(long)]
    in_memory: bool,

    /// The prompt text (BOS is added; with --chat, the user message).
    #[arg(long)]
    prompt: String,

    /// Wrap the prompt in the tokenizer's chat template (user turn + assistant header).
    #[arg(long)]
    chat: bool,

    /// The most tokens to generate (≥ 1).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,

    /// 0 = greedy; otherwise sample at this temperature.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,

    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,

    /// Nucleus sampling mass in (0, 1] (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,

    /// Repetition penalty (> 0; 1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repetition_penalty: f32,

    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,

    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    device: crate::device::DeviceArg,

    /// How activations meet quantized weights: `int8` (llama.cpp's scheme, fast) or `f32` (the
    /// weights dequantized in registers: the dequantized model's logits to f32 rounding; CPU
    /// only, 2-3x slower).
    #[arg(long, default_value = "int8", value_parser = crate::device::parse_activations)]
    activations: Activations,

    /// Write the logits of every position to this float32 .npy file.
    #[arg(long)]
    dump_logits: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let device = args.device.resolve()?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    let opts = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_ids: None,
        stop_strings: args.stop.clone(),
        keep_logits: args.dump_logits.is_some(),
    };
    // Check the flags before loading anything.
    opts.sampling.validate()?;
    if opts.max_new_tokens == 0 {
        return Err(Error::invalid("--max-new-tokens", "must be at least 1"));
    }
    crate::device::check_activations(&device, args.activations)?;
    let model =
        Model::load(&args.model, &LoadOptions { in_memory: args.in_memory, ..LoadOptions::default() })?;
    let tok = Tokenizer::from_package(&model)?;
    let ids = if args.chat {
        let template = tok.chat_template().ok_or_else(|| {
            Error::Unsupported(format!("--chat: the {} tokenizer has no chat template", tok.kind().name()))
        })?;
        tok.encode_chat(template, None, &args.prompt, false)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    let max_pos = model.config().decoder.max_position_embeddings;
    if ids.len() > max_pos {
        return Err(Error::invalid(
            "--prompt",
            format!("{} tokens exceed the model's context of {max_pos} positions", ids.len()),
        ));
    }
    let context = (ids.len() + args.max_new_tokens).min(max_pos);

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut write_err = None;
    let mut on_token = |_, text: &str| {
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            write_err = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let (result, runs_on) = match device {
        crate::device::Device::Cpu => {
            let mut session = Session::new(
                &model,
                &SessionOptions {
                    context,
                    threads: args.threads,
                    activations: args.activations,
                    ..Default::default()
                },
            )?;
            let r = session.generate(Input::Tokens(&ids), &opts, Some(&tok), &mut on_token)?;
            if let Some(path) = &args.dump_logits {
                let v = session.vocab_size();
                write_npy_f32(path, &r.logits, r.logits.len() / v, v)?;
            }
            (r, format!("{} threads", session.threads()))
        }
        #[cfg(feature = "cuda")]
        crate::device::Device::Cuda(ordinal) => {
            use medregion::backend::cuda::decoder::{DeviceDecoder, DeviceSession, DeviceSessionOptions};
            let gpu = medregion::backend::cuda::Gpu::open(ordinal)?;
            let dec = DeviceDecoder::upload_with_positions(&gpu, &model, context)?;
            let mut session =
                DeviceSession::new(&dec, &DeviceSessionOptions { context, ..Default::default() })?;
            let r = session.generate(Input::Tokens(&ids), &opts, Some(&tok), &mut on_token)?;
            if let Some(path) = &args.dump_logits {
                let v = session.vocab_size();
                write_npy_f32(path, &r.logits, r.logits.len() / v, v)?;
            }
            (r, format!("cuda:{ordinal} ({})", gpu.name()))
        }
        #[cfg(not(feature = "cuda"))]
        crate::device::Device::Cuda(ordinal) => return Err(crate::device::not_compiled(ordinal)),
    };
    if let Some(e) = write_err {
        return Err(Error::Io { path: "<stdout>".into(), source: e });
    }
    let _ = writeln!(out);
    let n_prompt = result.prompt_tokens;
    let fed = result.tokens.len().saturating_sub(1);
    eprintln!(
        "prompt: {n_prompt} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} tokens/s); \
         stop: {:?}; {}",
        result.prefill_secs,
        n_prompt as f64 / result.prefill_secs.max(1e-9),
        result.tokens.len(),
        result.decode_secs,
        fed as f64 / result.decode_secs.max(1e-9),
        result.stop,
        runs_on,
    );
    Ok(())
}

/// Writes `[rows, cols]` little-endian float32 as NumPy `.npy` format 1.0.
fn write_npy_f32(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic (6) + version (2) + header length (2) + header + '\n', padded to 64 bytes.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut bytes = Vec::with_capacity(total + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| Error::Io { path: path.display().to_string(), source: e })
}
