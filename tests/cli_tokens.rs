//! `medregion tokens`: the dump holds what the library computes for each region (slices, pooled
//! and connector tokens, mask and spatial tokens, prompt ids), the prompt carries the measured
//! attributes, and bad input fails cleanly without leaving a dump.

use std::path::{Path, PathBuf};
use std::process::Command;

use medregion::attributes::LabelScheme;
use medregion::io::package::QuantPolicy;
use medregion::masks::Masks;
use medregion::model::synthetic::{write_synthetic, Preset};
use medregion::model::{LoadOptions, Model};
use medregion::ops::ThreadPool;
use medregion::preprocess::preprocess;
use medregion::region::{MaskView, RegionHeads};
use medregion::tensor::WeightType;
use medregion::vision::{slices_from_volume, EncodeOptions, VisionEncoder};
use medregion::volume::Volume;
use safetensors::SafeTensors;

fn ct_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume/lung1_small.nrrd")
}

fn work_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-tokens-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A raw uint8 NRRD label map with the CT's header geometry (optionally another size along x),
/// TotalSegmentator ids from HU thresholds: 10 (a lung lobe) for -950 < HU < -400, 51 (heart)
/// for 20 < HU < 80, 116 (sternum) above 300; no trachea, so large airways are missing.
fn write_labels(dir: &Path, crop_x: bool) -> PathBuf {
    let ct = Volume::load(ct_path()).unwrap();
    let ct_bytes = std::fs::read(ct_path()).unwrap();
    let header_end = ct_bytes.windows(2).position(|w| w == b"\n\n").unwrap();
    let header = std::str::from_utf8(&ct_bytes[..header_end]).unwrap();
    let [nx, ny, nz] = ct.dims();
    let mut out = String::new();
    for line in header.lines() {
        if line.starts_with("type:") {
            out.push_str("type: uint8\n");
        } else if line.starts_with("encoding:") {
            out.push_str("encoding: raw\n");
        } else if line.starts_with("sizes:") && crop_x {
            out.push_str(&format!("sizes: {} {ny} {nz}\n", nx - 1));
        } else if !line.starts_with("endian:") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    for (i, &v) in ct.data().iter().enumerate() {
        if crop_x && i % nx == nx - 1 {
            continue;
        }
        bytes.push(match v {
            v if v > -950.0 && v < -400.0 => 10,
            v if v > 20.0 && v < 80.0 => 51,
            v if v > 300.0 => 116,
            _ => 0,
        });
    }
    let path = dir.join(if crop_x { "labels_narrow.nrrd" } else { "labels.nrrd" });
    std::fs::write(&path, bytes).unwrap();
    path
}

fn medregion(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medregion")).args(args).output().expect("run medregion")
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("dump lacks `{name}`"));
    t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("dump lacks `{name}`"));
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn tokens_dump_matches_the_library() {
    let dir = work_dir("ok");
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let labels = write_labels(&dir, false);
    let dump = dir.join("tokens.safetensors");
    let out = medregion(&[
        "tokens",
        "--model",
        model_path.to_str().unwrap(),
        "--ct",
        ct_path().to_str().unwrap(),
        "--masks",
        labels.to_str().unwrap(),
        "--regions",
        "lung,large_airways,heart_great_vessels",
        "--dump",
        dump.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tokens failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("large_airways"), "{stdout}");
    assert!(stdout.contains("missing structures") && stdout.contains("large_airways"), "{stdout}");

    // The same through the library.
    let model = Model::load(&model_path, &LoadOptions::default()).unwrap();
    let config = model.config();
    let ct = Volume::load(ct_path()).unwrap();
    let pre = preprocess(&ct, &config.preprocess).unwrap();
    let masks = Masks::load(&labels, &LabelScheme::totalseg()).unwrap();
    let slot = masks.slot_masks(&pre, config).unwrap();
    let heads = RegionHeads::new(&model).unwrap();
    let encoder = VisionEncoder::new(&model).unwrap();
    let slices = slices_from_volume(&pre.data, pre.shape, encoder.config()).unwrap();
    let pool = ThreadPool::new(2).unwrap();
    let vision = encoder
        .encode(&slices, pre.shape[0], &EncodeOptions { levels: heads.levels(), batch: 0 }, &pool)
        .unwrap();
    let view = MaskView { shape: slot.shape, keys: &slot.keys, masks: &slot.masks };
    let want = heads.tokens(&vision, view, &["lung", "large_airways", "heart_great_vessels"], &pool).unwrap();

    let bytes = std::fs::read(&dump).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let prompts: serde_json::Value = serde_json::from_str(&meta["prompts"]).unwrap();
    let rules: serde_json::Value = serde_json::from_str(&meta["rules"]).unwrap();
    let n_img = config.pooling.n_tokens() as i64;
    for t in &want {
        let r = &t.region;
        let slices: Vec<usize> = i64s(&st, &format!("{r}.slices")).iter().map(|&v| v as usize).collect();
        assert_eq!(slices, t.selection.slices, "{r}");
        assert_eq!(rules[r], t.selection.rule, "{r}");
        assert_eq!(f32s(&st, &format!("{r}.image_tokens")), t.image, "{r}");
        assert_eq!(f32s(&st, &format!("{r}.pooled")), t.pooled, "{r}");
        assert_eq!(f32s(&st, &format!("{r}.mask_tokens")), t.mask_tokens, "{r}");
        assert_eq!(f32s(&st, &format!("{r}.spatial_tokens")), t.spatial_tokens, "{r}");
        let ids = i64s(&st, &format!("{r}.prompt_ids"));
        let image_id = config.decoder.image_token_id as i64;
        assert_eq!(ids.iter().filter(|&&i| i == image_id).count() as i64, n_img, "{r}");
        let text = prompts[r].as_str().unwrap();
        let name = &config.regions.iter().find(|c| &c.key == r).unwrap().name;
        assert!(text.contains(&format!("Generate the findings for the {name} region.")), "{text}");
        assert!(!meta["attributes"].is_empty() && text.contains(meta["attributes"].as_str()), "{text}");
    }
    // Large airways have no mask here: uniform fallback; the lung uses its own largest slices.
    assert_eq!(rules["large_airways"], "uniform_fallback");
    assert_eq!(rules["lung"], "per_region_topk");
    // The dumped slot masks are the library's.
    let dumped = st.tensor("slot_masks").unwrap();
    assert_eq!(dumped.data(), slot.masks.concat().as_slice());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokens_bad_input_is_a_clean_error() {
    let dir = work_dir("bad");
    let model_path = dir.join("tiny.mrm");
    write_synthetic(&model_path, Preset::Tiny, 3, QuantPolicy::all(WeightType::F32)).unwrap();
    let labels = write_labels(&dir, false);
    let narrow = write_labels(&dir, true);
    let dump = dir.join("never.safetensors");
    let (model, ct) = (model_path.to_str().unwrap(), ct_path());
    let ct = ct.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--masks", narrow.to_str().unwrap()], "mask"),
        (vec!["--masks", labels.to_str().unwrap(), "--regions", "spleen"], "`spleen`"),
        (vec!["--masks", labels.to_str().unwrap(), "--labels", "/nonexistent/table.json"], "table.json"),
        (vec!["--masks", "/nonexistent/seg.nii.gz"], "seg.nii.gz"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["tokens", "--model", model, "--ct", ct, "--dump", dump.to_str().unwrap()];
        args.extend(extra.iter().copied());
        let out = medregion(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.starts_with("medregion: error:") && err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dump.exists(), "a failed run must not write the dump");
    }
    std::fs::remove_dir_all(&dir).ok();
}
