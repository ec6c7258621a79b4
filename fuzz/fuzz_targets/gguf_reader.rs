//! Fuzzes the GGUF reader: parsing arbitrary bytes, then reading everything a parsed file
//! offers (tensor data, metadata, LLaMA parameters, tokenizer) must never panic, abort or
//! allocate in proportion to a number in the file. Seeds: `fuzz/seeds/gguf_reader/`
//! (scripts/quant/make_fuzz_seeds.py). Run with `scripts/fuzz-smoke.sh`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medregion::io::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse_any_architecture("fuzz input", data) else {
        return;
    };
    for t in g.tensors() {
        let _ = g.tensor_f32(&t.name);
        let _ = g.tensor_quantized(&t.name);
        let _ = medregion::io::gguf::hf_tensor_name(&t.name);
    }
    for (key, _) in g.metadata() {
        let _ = g.get(key);
    }
    let _ = g.llama_params();
    let _ = g.tokenizer();
});
