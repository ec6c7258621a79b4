//! `medregion encode`: the dump holds exactly what the library computes (preprocessed volume,
//! encoder input, encoder outputs, mapped mask) and bad input fails cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;

use medregion::io::package::QuantPolicy;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::preprocess::{labels_from_volume, preprocess};
use medregion::tensor::WeightType;
use medregion::vision::{slices_from_volume, EncodeOptions, VisionEncoder};
use medregion::volume::Volume;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

fn ct_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume/lung1_small.nrrd")
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-encode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A raw uint8 NRRD on the CT's grid (same header geometry): 1 where HU > -300 (body), else 0.
fn write_mask(dir: &Path) -> PathBuf {
    let ct_bytes = std::fs::read(ct_path()).unwrap();
    let header_end = ct_bytes.windows(2).position(|w| w == b"\n\n").unwrap();
    let header = std::str::from_utf8(&ct_bytes[..header_end]).unwrap();
    let mut out = String::new();
    for line in header.lines() {
        if line.starts_with("type:") {
            out.push_str("type: uint8\n");
        } else if line.starts_with("encoding:") {
            out.push_str("encoding: raw\n");
        } else if !line.starts_with("endian:") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    let ct = Volume::load(ct_path()).unwrap();
    let mut bytes = out.into_bytes();
    bytes.extend(ct.data().iter().map(|&v| u8::from(v > -300.0)));
    let path = dir.join("body_mask.nrrd");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("dump lacks `{name}`"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    (
        t.shape().to_vec(),
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
    )
}

#[test]
fn encode_dump_matches_the_library() {
    let dir = work_dir();
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let mask_path = write_mask(&dir);
    let dump = dir.join("dump.safetensors");
    let out = medregion(&[
        "encode",
        "--model",
        model_path.to_str().unwrap(),
        "--ct",
        ct_path().to_str().unwrap(),
        "--masks",
        mask_path.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "encode failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("slices/s"));

    // The same computation through the library.
    let model = Model::load(&model_path, &LoadOptions::default()).unwrap();
    let cfg = model.config();
    let ct = Volume::load(ct_path()).unwrap();
    let pre = preprocess(&ct, &cfg.preprocess).unwrap();
    let encoder = VisionEncoder::new(&model).unwrap();
    let slices = slices_from_volume(&pre.data, pre.shape, encoder.config()).unwrap();
    let levels = cfg.mask_extractor.levels.clone();
    let want = encoder
        .encode(
            &slices,
            pre.shape[0],
            &EncodeOptions { levels: levels.clone(), batch: 0 },
            &ThreadPool::single(),
        )
        .unwrap();
    let mask_vol = Volume::load(&mask_path).unwrap();
    let want_mask = pre.map_mask(&labels_from_volume(&mask_vol).unwrap(), mask_vol.geometry()).unwrap();
    assert!(
        want_mask.iter().any(|&v| v == 1) && want_mask.iter().any(|&v| v == 0),
        "the body mask should be mixed"
    );

    let bytes = std::fs::read(&dump).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let [d, h, w] = pre.shape;
    let s = encoder.config().image_size;
    assert_eq!(f32s(&st, "volume"), (vec![d, h, w], pre.data.clone()));
    assert_eq!(f32s(&st, "slices"), (vec![d, 3, s, s], slices));
    let states = vec![d, want.n_tokens, want.hidden_size];
    assert_eq!(f32s(&st, "last_hidden_state"), (states.clone(), want.last_hidden_state.clone()));
    for (level, data) in &want.hidden_states {
        assert_eq!(f32s(&st, &format!("hidden_states.{level}")), (states.clone(), data.clone()));
    }
    let m = st.tensor("mask").unwrap();
    assert_eq!((m.dtype(), m.shape()), (Dtype::U16, &[d, h, w][..]));
    let got_mask: Vec<u16> = m.data().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    assert_eq!(got_mask, want_mask);
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let want_levels: Vec<String> = want.hidden_states.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(meta["levels"], want_levels.join(","));
    assert_eq!(meta["threads"], "2");

    // --levels overrides the config.
    let dump2 = dir.join("dump2.safetensors");
    let out = medregion(&[
        "encode",
        "--model",
        model_path.to_str().unwrap(),
        "--ct",
        ct_path().to_str().unwrap(),
        "--dump",
        dump2.to_str().unwrap(),
        "--levels",
        "0,1",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes2 = std::fs::read(&dump2).unwrap();
    let st2 = SafeTensors::deserialize(&bytes2).unwrap();
    let mut names: Vec<String> = st2.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(names, ["hidden_states.0", "hidden_states.1", "last_hidden_state", "slices", "volume"]);
    assert_eq!(f32s(&st2, "last_hidden_state").1, want.last_hidden_state, "thread count changed the result");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn encode_bad_input_is_a_clean_error() {
    let dir = work_dir().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let dump = dir.join("never.safetensors");
    let model = model_path.to_str().unwrap();
    let ct = ct_path();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--ct", "/nonexistent/ct.nrrd"], "ct.nrrd"),
        (vec!["--ct", ct.to_str().unwrap(), "--levels", "99"], "hidden state 99"),
        (vec!["--ct", ct.to_str().unwrap(), "--masks", model], "mrm"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["encode", "--model", model, "--dump", dump.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = medregion(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.starts_with("medregion: error:") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dump.exists(), "a failed encode must not write the dump");
    }
    std::fs::remove_dir_all(&dir).ok();
}
