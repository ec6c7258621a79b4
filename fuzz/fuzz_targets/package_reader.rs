//! Fuzzes the model package reader: loading arbitrary bytes must never panic, abort or
//! allocate in proportion to a number read from the file; a package it accepts must also be
//! accepted by the official `safetensors` reader, and every accessor of an accepted package
//! must work. Seeds: `fuzz/seeds/package_reader/` (written by
//! `cargo test --release --test package -- --ignored write_fuzz_seeds`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use medregion::io::package::{LoadOptions, Model};

fuzz_target!(|data: &[u8]| {
    // `load_from_memory` needs 4-byte aligned bytes: copy into f32 words.
    let words: Vec<f32> = data
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            f32::from_le_bytes(b)
        })
        .collect();
    let bytes = &medregion::tensor::as_bytes(&words)[..data.len()];
    let Ok(model) = Model::load_from_memory(bytes, &LoadOptions::default()) else {
        return;
    };
    assert!(
        safetensors::SafeTensors::deserialize(bytes).is_ok(),
        "accepted a package the safetensors reader rejects"
    );
    for w in model.weights() {
        let _ = w.to_f32();
    }
    for t in model.tensors() {
        let _ = t.to_f32();
    }
    let _ = model.info();
    let _ = model.tokenizer_bytes();
    let _ = model.verify_checksum();
});
