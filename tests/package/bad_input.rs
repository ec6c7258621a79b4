//! Bad input: each gets its own clear error, never a panic (part of the `package` test crate).

use super::*;

#[test]
fn truncated_files() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let n = header_len(&bytes);
    let e = load_err(&bytes[..5]);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("truncated")), "{e}");
    let e = load_err(&bytes[..8 + n / 2]);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("past the end of the file")), "{e}");
    let e = load_err(&bytes[..bytes.len() - 100]);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("outside the data section")), "{e}");
    // Through the file API as well (including an empty file).
    let dir = TempDir::new("truncated");
    for (name, len) in [("empty", 0), ("short", 7), ("cut", bytes.len() / 2)] {
        let p = dir.path(name);
        std::fs::write(&p, &bytes[..len]).unwrap();
        let e = Model::load(&p, &LoadOptions::default()).unwrap_err();
        assert!(matches!(&e, Error::Format { what, .. } if what.contains(name)), "{name}: {e}");
    }
    let e = Model::load(dir.path("missing"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn gigantic_or_garbled_header() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    // A declared header of 5 GB: refused from the length field alone.
    let mut big = bytes.clone();
    big[..8].copy_from_slice(&5_000_000_000u64.to_le_bytes());
    let e = load_err(&big);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("exceeds the limit")), "{e}");
    big[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(load_err(&big), Error::Format { .. }));
    // Non-UTF-8 header.
    let mut bad = bytes.clone();
    bad[8 + 20] = 0xFF;
    let e = load_err(&bad);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("UTF-8")), "{e}");
    // Not JSON.
    let mut bad = bytes.clone();
    bad[8] = b'[';
    let e = load_err(&bad);
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("JSON")), "{e}");
}

#[test]
fn malformed_metadata() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let meta = |edit: &dyn Fn(&mut Map<String, Value>)| {
        with_header(&bytes, |root| edit(root.get_mut("__metadata__").unwrap().as_object_mut().unwrap()))
    };
    let e = load_err(&with_header(&bytes, |root| {
        root.remove("__metadata__");
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("no `__metadata__`")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.tokenizer".into(), Value::from(3));
    }));
    assert!(
        matches!(&e, Error::Format { reason, .. } if reason.contains("`__metadata__` must map strings to strings")),
        "{e}"
    );
    let e = load_err(&meta(&|m| {
        m.remove("medregion.config");
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("no `medregion.config`")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.config".into(), Value::from("{not json"));
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("not a valid config")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.format_version".into(), Value::from("2"));
    }));
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("format version `2`")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.tokenizer".into(), Value::from("sentencepiece"));
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("unknown tokenizer kind")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.tokenizer".into(), Value::from("tiktoken"));
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("config.tokenizer.kind")), "{e}");
    let e = load_err(&meta(&|m| {
        m.insert("medregion.checksum".into(), Value::from("md5:1234"));
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("medregion.checksum")), "{e}");
    // Config: an unknown field and an invalid value name the field.
    let e = load_err(&with_config(&bytes, |c| {
        c["decoder"]["n_layer"] = Value::from(2);
    }));
    assert!(e.to_string().contains("n_layer"), "{e}");
    let e = load_err(&with_config(&bytes, |c| {
        c["decoder"]["n_kv_heads"] = Value::from(3);
    }));
    assert!(e.to_string().contains("decoder.n_kv_heads (3) must divide decoder.n_heads (4)"), "{e}");
    // A plain safetensors file is "not a medregion package".
    let plain = safetensors::serialize(
        [("x", safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![1], &[7u8]).unwrap())],
        None,
    )
    .unwrap();
    let e = load_err(&plain);
    assert!(e.to_string().contains("not a medregion model package"), "{e}");
}

#[test]
fn bad_offsets_and_dtypes() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let a = "llm.norm.weight"; // F32 [64], 256 bytes
    let b = "llm.lm_head.weight";
    // Overlap: b starts inside a.
    let e = load_err(&with_header(&bytes, |root| {
        let (begin, _) = offsets(root, a);
        entry(root, b)["data_offsets"] = serde_json::json!([begin + 64, begin + 64 + 264 * 64 * 4]);
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("overlap")), "{e}");
    // Out of range.
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, a)["data_offsets"] = serde_json::json!([10_000_000, 10_000_256]);
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("outside the data section")), "{e}");
    // Length disagreeing with dtype × shape.
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, a)["shape"] = serde_json::json!([65]);
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("needs 260 bytes")), "{e}");
    // Unknown and unsupported dtypes.
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, a)["dtype"] = Value::from("F17");
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("unknown dtype `F17`")), "{e}");
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, a)["dtype"] = Value::from("F64");
        entry(root, a)["shape"] = serde_json::json!([32]);
    }));
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("F64")), "{e}");
    // Wrong (but consistent) dtype: U8 [256].
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, a)["dtype"] = Value::from("U8");
        entry(root, a)["shape"] = serde_json::json!([256]);
    }));
    assert!(
        matches!(&e, Error::Shape { what, expected, found } if what.contains(a) && expected.contains("F32") && found == "U8"),
        "{e}"
    );
    // Shape disagreeing with the config (same byte size).
    let w = "llm.layers.0.mlp.up_proj.weight"; // [128, 64]
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, w)["shape"] = serde_json::json!([64, 128]);
    }));
    assert!(
        matches!(&e, Error::Shape { what, expected, found } if what.contains(w) && expected == "[128, 64]" && found == "[64, 128]"),
        "{e}"
    );
    // The config changed under the tensors: every shape now disagrees; the first is named.
    let e = load_err(&with_config(&bytes, |c| {
        c["decoder"]["intermediate_size"] = Value::from(96);
    }));
    assert!(matches!(&e, Error::Shape { what, .. } if what.contains("mlp.gate_proj")), "{e}");
    // A gap between tensors (safetensors forbids it).
    let e = load_err(&with_header(&bytes, |root| {
        root.remove(a);
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("unused bytes before")), "{e}");
    // Misaligned tensor: shift the data by one filler byte would break everything else, so
    // instead rename a filler-free neighbour pair into one U8 run and split it off by 4 bytes.
    let e = load_err(&with_header(&bytes, |root| {
        let (begin, end) = offsets(root, a);
        entry(root, a)["dtype"] = Value::from("U8");
        entry(root, a)["shape"] = serde_json::json!([4]);
        entry(root, a)["data_offsets"] = serde_json::json!([begin, begin + 4]);
        root.insert(
            "llm.misaligned".into(),
            serde_json::json!({"dtype": "U8", "shape": [end - begin - 4], "data_offsets": [begin + 4, end]}),
        );
    }));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("not a multiple of 64")), "{e}");
}

#[test]
fn missing_extra_and_duplicate_tensors() {
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let rename = |from: &str, to: &str, dtype_u8: bool| {
        with_header(&bytes, |root| {
            let mut v = root.remove(from).unwrap();
            if dtype_u8 {
                let (b, e) = (v["data_offsets"][0].as_u64().unwrap(), v["data_offsets"][1].as_u64().unwrap());
                v["dtype"] = Value::from("U8");
                v["shape"] = serde_json::json!([e - b]);
            }
            root.insert(to.to_string(), v);
        })
    };
    // Missing: the bytes become a filler.
    let e = load_err(&rename("llm.norm.weight", "__pad.999", true));
    assert!(matches!(&e, Error::NotFound(m) if m.contains("`llm.norm.weight`") && m.contains("[64]")), "{e}");
    let e = load_err(&rename("tokenizer", "__pad.999", false));
    assert!(matches!(&e, Error::NotFound(m) if m.contains("`tokenizer`")), "{e}");
    // Extra: a tensor the config does not describe (tied embeddings have no lm_head).
    let e = load_err(&with_config(&bytes, |c| {
        c["decoder"]["tie_word_embeddings"] = Value::from(true);
    }));
    assert!(
        matches!(&e, Error::Format { reason, .. } if reason.contains("unexpected tensor `llm.lm_head.weight` (F32 [264, 64])")),
        "{e}"
    );
    // Stored twice: dense and quantized.
    let e = load_err(&with_header(&bytes, |root| {
        let v = root.remove("llm.layers.0.mlp.up_proj.weight").unwrap();
        root.insert("llm.layers.0.mlp.up_proj.weight.q8_0.values".into(), v);
    }));
    assert!(e.to_string().contains("llm.layers.0.mlp.up_proj.weight"), "{e}");
    // A filler that is not U8 [n].
    let e = load_err(&rename("llm.norm.weight", "__pad.7", false));
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("filler tensor `__pad.7`")), "{e}");
}

#[test]
fn quantized_parts_checked() {
    let bytes = tiny_bytes(QuantPolicy::parse("llm=q4_1", WeightType::F32).unwrap());
    let w = "llm.layers.0.mlp.down_proj.weight"; // [64, 128]
                                                 // Drop the mins: the weight is incomplete.
    let e = load_err(&with_header(&bytes, |root| {
        let v = root.remove(&format!("{w}.q4_1.mins")).unwrap();
        root.insert("__pad.mins".into(), v.clone());
        entry(root, "__pad.mins")["dtype"] = Value::from("U8");
        entry(root, "__pad.mins")["shape"] = serde_json::json!([64 * 4 * 2]);
    }));
    assert!(matches!(&e, Error::NotFound(m) if m.contains(&format!("{w}.q4_1.mins"))), "{e}");
    // Scales with the wrong shape.
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, &format!("{w}.q4_1.scales"))["shape"] = serde_json::json!([4, 64]);
    }));
    assert!(
        matches!(&e, Error::Shape { what, expected, .. } if what.contains(&format!("{w}.q4_1.scales")) && expected == "[64, 4]"),
        "{e}"
    );
    // Values with the wrong dtype.
    let e = load_err(&with_header(&bytes, |root| {
        entry(root, &format!("{w}.q4_1.values"))["dtype"] = Value::from("F16");
        entry(root, &format!("{w}.q4_1.values"))["shape"] = serde_json::json!([64, 32]);
    }));
    assert!(matches!(&e, Error::Shape { what, .. } if what.contains("dtype")), "{e}");
}

#[test]
fn checksum_mismatch_detected_only_when_asked() {
    let mut bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let last = bytes.len() - 40;
    bytes[last] ^= 0x55;
    let words = aligned(&bytes);
    let view = &as_bytes(&words)[..bytes.len()];
    let model = Model::load_from_memory(view, &LoadOptions::default()).unwrap();
    let e = model.verify_checksum().unwrap_err();
    assert!(matches!(&e, Error::Format { reason, .. } if reason.contains("checksum mismatch")), "{e}");
    let e = load_err(&bytes);
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    // The config is covered too (a changed prompt with a valid config).
    let bytes = tiny_bytes(QuantPolicy::all(WeightType::F32));
    let e = load_err(&with_config(&bytes, |c| {
        c["generation"]["max_new_tokens"] = Value::from(10);
    }));
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn config_validation_errors_name_the_field() {
    let mut c = ModelConfig::default();
    c.decoder.n_heads = 8;
    c.decoder.n_kv_heads = 3;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("decoder.n_kv_heads (3) must divide decoder.n_heads (8)"));
    let e = ModelConfig::from_json(r#"{"vision":{"hidden":768}}"#).unwrap_err();
    assert!(e.to_string().contains("unknown field `hidden`"), "{e}");
    let e = ModelConfig::from_json(r#"{"pooling":{"k_slices":0}}"#).unwrap_err();
    assert!(e.to_string().contains("pooling.k_slices (0)"), "{e}");
    let e = ModelConfig::from_json(r#"{"decoder":{"vocab_size":"many"}}"#).unwrap_err();
    assert!(e.to_string().contains("vocab_size") || e.to_string().contains("invalid type"), "{e}");
    // The writer refuses an invalid config too.
    let dir = TempDir::new("badconfig");
    let mut c = Preset::Tiny.config();
    c.decoder.head_dim = 15;
    let e = PackageBuilder::new(c, bytes_tokenizer())
        .write(&dir.path("x"), &mut SyntheticSource::new(0))
        .unwrap_err();
    assert!(e.to_string().contains("decoder.head_dim (15) must be even"), "{e}");
}
