//! The C ABI's token-level session calls on a model loaded with `MR_DEVICE_CUDA`, against the
//! same calls on the same package loaded for the CPU (called from Rust through
//! `medregion::ffi`, the exported functions themselves).
//!
//! Package: the demo's (`model::synthetic::write_demo`: F32, heads of 64, byte tokenizer).
//!
//! | what | compared how | tolerance |
//! |---|---|---|
//! | `mr_session_prefill` then `mr_session_logits` | `max |gpu − cpu| / max |cpu|` | 1e-4 (F32: the GEMV products are the CPU's bits, attention within ~1e-6; the prompt is below `gemm_rows`) |
//! | 12 × `mr_session_next_token` (greedy) then `mr_session_logits` each | same ids up to the first CPU top-two margin within 2e-4; logits as above | 1e-4 |
//! | `mr_session_length` | positions and capacity | exact |
//! | `mr_session_reset`, then `mr_session_generate` (greedy, 16 tokens) | token ids streamed to the callback | identical up to the first close call (as above) |
//! | `mr_session_logits` before any feed or after a reset; a context beyond the GPU copy's 4096 positions (a demo with 8192, which the CPU session takes) | `MR_ERR_INVALID_ARGUMENT` | exact |
//!
//! Every test needs a device (`scripts/gpu-check.sh` runs them with `--include-ignored`).

#![cfg(feature = "cuda")]

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::ptr;

use medregion::ffi::*;
use medregion::io::package::{PackageBuilder, QuantPolicy};
use medregion::llm::argmax;
use medregion::model::synthetic::{bytes_tokenizer, demo_config, write_demo, SyntheticSource};
use medregion::tensor::WeightType;

const TOL: f64 = 1e-4;

/// This process's scratch folder (tests run in parallel: each writes its own files).
fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medregion-cuda-ffi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn demo() -> PathBuf {
    let path = dir().join("demo.mrpk");
    write_demo(&path).unwrap();
    path
}

fn ok(status: mr_status, what: &str) {
    assert_eq!(status, MR_OK, "{what}: status {status}");
}

/// Loads `path` on `kind` and creates a session with `context` positions (0: the default).
fn open(path: &PathBuf, kind: mr_device_kind, context: u32) -> (*mut mr_model, mr_status, *mut mr_session) {
    open_with(path, kind, context, MR_ACTIVATIONS_INT8)
}

/// [`open`] with the session's `activations`.
fn open_with(
    path: &PathBuf,
    kind: mr_device_kind,
    context: u32,
    activations: mr_activations,
) -> (*mut mr_model, mr_status, *mut mr_session) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    let mut mp = std::mem::MaybeUninit::<mr_model_params>::uninit();
    // SAFETY: writable out-parameters; `c` is NUL-terminated.
    unsafe {
        ok(mr_model_params_default(mp.as_mut_ptr()), "model params");
        let mut mp = mp.assume_init();
        mp.device_kind = kind;
        let mut model = ptr::null_mut();
        ok(mr_model_load(c.as_ptr(), &mp, &mut model), "mr_model_load");
        let mut sp = std::mem::MaybeUninit::<mr_session_params>::uninit();
        ok(mr_session_params_default(sp.as_mut_ptr()), "session params");
        let mut sp = sp.assume_init();
        sp.context = context;
        sp.threads = 1;
        sp.activations = activations;
        let mut session = ptr::null_mut();
        let status = mr_session_create(model, &sp, &mut session);
        (model, status, session)
    }
}

fn logits(s: *mut mr_session) -> (mr_status, Vec<f32>) {
    let mut v = 0usize;
    // SAFETY: asking the size: NULL buffer, capacity 0.
    let st = unsafe { mr_session_logits(s, ptr::null_mut(), 0, &mut v) };
    if st != MR_OK {
        return (st, Vec::new());
    }
    let mut out = vec![0.0f32; v];
    // SAFETY: `out` holds `v` floats.
    ok(unsafe { mr_session_logits(s, out.as_mut_ptr(), v, &mut v) }, "mr_session_logits");
    (MR_OK, out)
}

fn rel_err(gpu: &[f32], cpu: &[f32]) -> f64 {
    assert_eq!(gpu.len(), cpu.len());
    let scale = cpu.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())).max(f64::MIN_POSITIVE);
    gpu.iter().zip(cpu).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// The top-two margin over max |logit| with the input-only ids (256 + 4.., the demo's image,
/// mask and pos tokens are banned by the sampler) left in: a lower bound is all that is needed.
fn margin(cpu: &[f32]) -> f64 {
    let best = argmax(cpu) as usize;
    let second =
        cpu.iter().enumerate().filter(|&(i, _)| i != best).fold(f32::NEG_INFINITY, |m, (_, &x)| m.max(x));
    let scale = cpu.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())).max(f64::MIN_POSITIVE);
    (cpu[best] as f64 - second as f64) / scale
}

fn length(s: *mut mr_session) -> (u32, u32) {
    let (mut len, mut cap) = (0u32, 0u32);
    // SAFETY: writable out-parameters.
    ok(unsafe { mr_session_length(s, &mut len, &mut cap) }, "mr_session_length");
    (len, cap)
}

unsafe extern "C" fn collect(user: *mut c_void, token: u32, _piece: *const c_char, _len: usize) -> i32 {
    // SAFETY: `user` is the `Vec<u32>` the test passes.
    unsafe { (*(user as *mut Vec<u32>)).push(token) };
    0
}

fn generate(s: *mut mr_session, prompt: &str) -> Vec<u32> {
    let p = CString::new(prompt).unwrap();
    let mut gp = std::mem::MaybeUninit::<mr_generate_params>::uninit();
    let mut ids: Vec<u32> = Vec::new();
    // SAFETY: writable out-parameters, the callback's user data outlives the call.
    unsafe {
        ok(mr_generate_params_default(gp.as_mut_ptr()), "generate params");
        let mut gp = gp.assume_init();
        gp.max_new_tokens = 16;
        ok(
            mr_session_generate(
                s,
                p.as_ptr(),
                &gp,
                Some(collect),
                (&mut ids as *mut Vec<u32>).cast(),
                ptr::null_mut(),
            ),
            "mr_session_generate",
        );
    }
    ids
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn token_level_calls_on_a_gpu_model_match_the_cpu() {
    let path = demo();
    let (cm, st, cpu) = open(&path, MR_DEVICE_CPU, 256);
    ok(st, "CPU session");
    let (gm, st, gpu) = open(&path, MR_DEVICE_CUDA, 256);
    ok(st, "GPU session");

    // No logits before a feed, on either.
    assert_eq!(logits(gpu).0, MR_ERR_INVALID_ARGUMENT, "GPU logits before any feed");
    assert_eq!(logits(cpu).0, MR_ERR_INVALID_ARGUMENT, "CPU logits before any feed");

    let prompt: Vec<u32> = std::iter::once(256).chain((0..19).map(|i| (i * 37 + 11) % 256)).collect();
    // SAFETY: `prompt` holds that many ids.
    unsafe {
        ok(mr_session_prefill(cpu, prompt.as_ptr(), prompt.len()), "CPU prefill");
        ok(mr_session_prefill(gpu, prompt.as_ptr(), prompt.len()), "GPU prefill");
    }
    let (c, g) = (logits(cpu).1, logits(gpu).1);
    let e = rel_err(&g, &c);
    assert!(e <= TOL, "prefill logits error {e:e}");
    assert_eq!(length(gpu), length(cpu), "positions after the prefill");

    let mut worst = e;
    let mut c = c;
    for step in 0..12 {
        let close = margin(&c) <= 2.0 * TOL;
        let (mut tc, mut tg) = (0u32, 0u32);
        // SAFETY: NULL params (greedy), writable token.
        unsafe {
            ok(mr_session_next_token(cpu, ptr::null(), &mut tc), "CPU next token");
            ok(mr_session_next_token(gpu, ptr::null(), &mut tg), "GPU next token");
        }
        if close {
            eprintln!("step {step}: a close call; comparison stops");
            break;
        }
        assert_eq!(tg, tc, "greedy token of step {step}");
        c = logits(cpu).1;
        let e = rel_err(&logits(gpu).1, &c);
        assert!(e <= TOL, "step {step} logits error {e:e}");
        worst = worst.max(e);
    }
    assert_eq!(length(gpu), length(cpu), "positions after the steps");
    eprintln!("token-level calls: worst logits error {worst:e} (bound {TOL:e})");

    // Reset, then the high-level call.
    // SAFETY: live sessions.
    unsafe {
        ok(mr_session_reset(cpu), "CPU reset");
        ok(mr_session_reset(gpu), "GPU reset");
    }
    assert_eq!(length(gpu).0, 0, "reset empties the GPU conversation");
    assert_eq!(logits(gpu).0, MR_ERR_INVALID_ARGUMENT, "no logits after a reset");
    let want = generate(cpu, "The lungs");
    let got = generate(gpu, "The lungs");
    assert!(!want.is_empty());
    let same = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
    eprintln!("mr_session_generate: {same} of {} greedy ids identical", want.len());
    if same < want.len() {
        // Only a close call may differ: re-run the CPU teacher-forced to find its margin there.
        // SAFETY: live session; ids from the generation.
        unsafe {
            ok(mr_session_reset(cpu), "CPU reset");
        }
        let p = CString::new("The lungs").unwrap();
        let mut n = 0usize;
        let mut ids = vec![0u32; 64];
        // SAFETY: `ids` holds 64 values.
        unsafe {
            ok(mr_tokenize(cm, p.as_ptr(), 1, 0, ids.as_mut_ptr(), ids.len(), &mut n), "mr_tokenize");
            ids.truncate(n);
            ids.extend_from_slice(&want[..same]);
            ok(mr_session_prefill(cpu, ids.as_ptr(), ids.len()), "CPU teacher-forced prefill");
        }
        let m = margin(&logits(cpu).1);
        assert!(m <= 2.0 * TOL, "generation differs at {same} where the CPU's margin is {m:e}");
    }
    assert_eq!(length(gpu).0, length(cpu).0, "positions after mr_session_generate");
    // The logits of the conversation's last position are available after a generation.
    assert_eq!(logits(gpu).0, MR_OK, "GPU logits after mr_session_generate");

    // SAFETY: created above, freed once.
    unsafe {
        mr_session_free(cpu);
        mr_session_free(gpu);
        mr_model_free(cm);
        mr_model_free(gm);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn a_context_beyond_the_gpu_copy_is_refused_at_creation() {
    // The demo with 8192 positions: the CPU session takes 6000, the GPU copy holds 4096.
    let mut cfg = demo_config();
    cfg.decoder.max_position_embeddings = 8192;
    let path = dir().join("demo-8k.mrpk");
    PackageBuilder::new(cfg, bytes_tokenizer())
        .policy(QuantPolicy::all(WeightType::F32))
        .write(&path, &mut SyntheticSource::new(1))
        .unwrap();
    let (m, st, s) = open(&path, MR_DEVICE_CPU, 6000);
    ok(st, "6000 positions on the CPU");
    // SAFETY: created above.
    unsafe {
        mr_session_free(s);
        mr_model_free(m);
    }
    let (m, st, s) = open(&path, MR_DEVICE_CUDA, 6000);
    assert_eq!(st, MR_ERR_INVALID_ARGUMENT, "6000 positions on the GPU copy");
    assert!(s.is_null());
    let (m2, st, s2) = open(&path, MR_DEVICE_CUDA, 4096);
    ok(st, "4096 positions on the GPU copy");
    // SAFETY: created above.
    unsafe {
        mr_session_free(s2);
        mr_model_free(m2);
        mr_model_free(m);
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn f32_activations_are_refused_on_a_gpu_model() {
    let path = demo();
    let (m, st, s) = open_with(&path, MR_DEVICE_CUDA, 256, MR_ACTIVATIONS_F32);
    assert_eq!(st, MR_ERR_UNSUPPORTED, "f32 activations on a model loaded for CUDA");
    assert!(s.is_null());
    let (m2, st, s2) = open_with(&path, MR_DEVICE_CPU, 256, MR_ACTIVATIONS_F32);
    ok(st, "f32 activations on the CPU");
    // SAFETY: created above.
    unsafe {
        mr_session_free(s2);
        mr_model_free(m2);
        mr_model_free(m);
    }
}
