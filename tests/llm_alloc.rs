//! The decode step allocates nothing: a counting global allocator around `Session::step` and
//! `Sampler::sample` (greedy and with every sampling option on), after the session is created
//! and the prompt fed. Own test binary so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use medregion::io::package::{LoadOptions, Model, QuantPolicy};
use medregion::llm::{Activations, Input, Sampler, SamplingParams, Session, SessionOptions};
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::tensor::WeightType;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static MAIN_ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IS_TEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        if IS_TEST_THREAD.with(|c| c.get()) {
            MAIN_ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_step_and_sampling_allocate_nothing() {
    IS_TEST_THREAD.with(|c| c.set(true));
    let dir = std::env::temp_dir().join(format!("medregion-llm-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (WeightType::F32, Activations::Int8),
        (WeightType::Q4_0, Activations::Int8),
        (WeightType::Q8_0, Activations::Int8),
        (WeightType::Bf16, Activations::Int8),
        (WeightType::Q4_1, Activations::F32),
    ];
    for (t, activations) in cases {
        let path = dir.join(format!("tiny-{t:?}.mrpk"));
        write_synthetic(&path, Preset::Tiny, 3, QuantPolicy::all(t)).unwrap();
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        for threads in [1, 2] {
            let options = SessionOptions { context: 128, threads, activations, ..Default::default() };
            let mut s = Session::new(&model, &options).unwrap();
            let greedy = SamplingParams::greedy();
            let full =
                SamplingParams { temperature: 0.7, top_k: 20, top_p: 0.9, repetition_penalty: 1.2, seed: 4 };
            for params in [greedy, full] {
                let mut sampler = Sampler::new(&params, s.vocab_size()).unwrap();
                s.reset();
                let prompt = [256u32, 72, 101, 108, 108, 111];
                sampler.observe(&prompt).unwrap();
                // No warm-up step: the first decode step after creation must not allocate either.
                let mut id = sampler.sample(s.prefill(Input::Tokens(&prompt)).unwrap()).unwrap();
                let before = ALLOCS.load(Ordering::SeqCst);
                let mb = MAIN_ALLOCS.load(Ordering::SeqCst);
                for _ in 0..40 {
                    let logits = s.step(id).unwrap();
                    id = sampler.sample(logits).unwrap();
                }
                let during = ALLOCS.load(Ordering::SeqCst) - before;
                eprintln!("main {}", MAIN_ALLOCS.load(Ordering::SeqCst) - mb);
                assert_eq!(
                    during, 0,
                    "{t:?}, {activations:?}, {threads} threads, {params:?}: {during} allocations in 40 steps"
                );
                assert_eq!(s.len(), prompt.len() + 40);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
