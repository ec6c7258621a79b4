//! CT volume input: the real pyradiomics CTs against pynrrd (fixtures written by
//! `scripts/volume/reference.py`), NIfTI written by nibabel against the same voxels in NRRD,
//! synthetic NIfTI-1 / NRRD files for every datatype, scaling rule and affine method, caller
//! buffers, and every kind of bad input (each a clear error, never a panic).

#[path = "common/testdata.rs"]
mod testdata;

use std::io::Write;
use std::path::{Path, PathBuf};

use medregion::preprocess::{preprocess, PreprocessConfig};
use medregion::volume::{Affine, Coordinates, DType, Volume, VoxelBuffer};
use medregion::Error;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/volume").join(name)
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn affine_of(v: &Value) -> Affine {
    let mut a = [[0.0; 4]; 4];
    for (r, row) in v.as_array().unwrap().iter().enumerate() {
        for (c, x) in row.as_array().unwrap().iter().enumerate() {
            a[r][c] = f(x);
        }
    }
    a
}

fn assert_affine_close(a: &Affine, b: &Affine, tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!((a[r][c] - b[r][c]).abs() <= tol, "{what}: affine differs at [{r}][{c}]: {a:?} vs {b:?}");
        }
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("volume-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------------
// A minimal NIfTI-1 writer (our own, field by field from nifti1.h), for synthetic files.

#[derive(Clone)]
struct Nii {
    dim: [i16; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl: (f32, f32),
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
    big_endian: bool,
    sizeof_hdr: i32,
}

impl Nii {
    fn new(dims: [usize; 3], datatype: i16, bitpix: i16) -> Nii {
        Nii {
            dim: [3, dims[0] as i16, dims[1] as i16, dims[2] as i16, 1, 1, 1, 1],
            datatype,
            bitpix,
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352.0,
            scl: (0.0, 0.0),
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 6],
            srow: [[0.0; 4]; 3],
            magic: *b"n+1\0",
            big_endian: false,
            sizeof_hdr: 348,
        }
    }

    fn with_sform(mut self, a: &Affine) -> Nii {
        self.sform_code = 1;
        for (row, src) in self.srow.iter_mut().zip(a) {
            *row = src.map(|v| v as f32);
        }
        self
    }

    /// The file bytes: header, 4 zero extension bytes, padding to vox_offset, then `data`
    /// (already in the file's byte order).
    fn bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut h: Vec<u8> = Vec::with_capacity(352);
        let be = self.big_endian;
        let i32b = |v: i32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let i16b = |v: i16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let f32b = |v: f32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        h.extend(i32b(self.sizeof_hdr));
        h.extend([0u8; 10 + 18]);
        h.extend(i32b(0));
        h.extend(i16b(0));
        h.extend([b'r', 0]); // regular, dim_info
        self.dim.iter().for_each(|&d| h.extend(i16b(d)));
        h.extend([0u8; 12]); // intent_p1..3
        h.extend(i16b(0)); // intent_code
        h.extend(i16b(self.datatype));
        h.extend(i16b(self.bitpix));
        h.extend(i16b(0)); // slice_start
        self.pixdim.iter().for_each(|&p| h.extend(f32b(p)));
        h.extend(f32b(self.vox_offset));
        h.extend(f32b(self.scl.0));
        h.extend(f32b(self.scl.1));
        h.extend(i16b(0)); // slice_end
        h.extend([0u8, 2]); // slice_code, xyzt_units (mm)
        h.extend([0u8; 16 + 8]); // cal_max, cal_min, slice_duration, toffset, glmax, glmin
        h.extend([0u8; 80 + 24]); // descrip, aux_file
        h.extend(i16b(self.qform_code));
        h.extend(i16b(self.sform_code));
        self.quatern.iter().for_each(|&q| h.extend(f32b(q)));
        self.srow.iter().flatten().for_each(|&v| h.extend(f32b(v)));
        h.extend([0u8; 16]); // intent_name
        h.extend(self.magic);
        assert_eq!(h.len(), 348);
        h.extend([0u8; 4]);
        h.resize((self.vox_offset as usize).max(352), 0);
        h.extend_from_slice(data);
        h
    }
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn diag(s: [f64; 3], o: [f64; 3]) -> Affine {
    [[s[0], 0.0, 0.0, o[0]], [0.0, s[1], 0.0, o[1]], [0.0, 0.0, s[2], o[2]], [0.0, 0.0, 0.0, 1.0]]
}

/// Values 0..n as `dtype` in `big_endian` order (signed types get negatives too).
fn typed(dtype: DType, n: usize, big_endian: bool) -> (Vec<u8>, Vec<f64>) {
    let mut bytes = Vec::new();
    let mut vals = Vec::new();
    for i in 0..n {
        let v = i as f64
            - if matches!(dtype, DType::U8 | DType::U16 | DType::U32 | DType::U64) { 0.0 } else { 7.0 };
        macro_rules! put {
            ($t:ty) => {{
                let x = v as $t;
                bytes.extend(if big_endian { x.to_be_bytes() } else { x.to_le_bytes() });
            }};
        }
        match dtype {
            DType::I8 => put!(i8),
            DType::U8 => put!(u8),
            DType::I16 => put!(i16),
            DType::U16 => put!(u16),
            DType::I32 => put!(i32),
            DType::U32 => put!(u32),
            DType::I64 => put!(i64),
            DType::U64 => put!(u64),
            DType::F32 => put!(f32),
            DType::F64 => put!(f64),
        }
        vals.push(v);
    }
    (bytes, vals)
}

const ALL: [(DType, i16, &str); 10] = [
    (DType::I8, 256, "int8"),
    (DType::U8, 2, "uchar"),
    (DType::I16, 4, "short"),
    (DType::U16, 512, "unsigned short"),
    (DType::I32, 8, "int"),
    (DType::U32, 768, "uint32"),
    (DType::I64, 1024, "int64"),
    (DType::U64, 1280, "unsigned long long int"),
    (DType::F32, 16, "float"),
    (DType::F64, 64, "double"),
];

// ---------------------------------------------------------------------------------------------
// Real CTs.

#[test]
fn pyradiomics_ct_matches_pynrrd() {
    for name in ["lung1", "lung2"] {
        let r = reference(&format!("{name}_ref.json"));
        let path = testdata::testdata("pyradiomics", &format!("data/{name}_image.nrrd"));
        let v = Volume::load(&path).unwrap();
        let dims: Vec<usize> =
            r["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(v.dims().to_vec(), dims);
        assert_affine_close(v.affine(), &affine_of(&r["affine_ras"]), 1e-9, name);
        for (a, b) in v.spacing().iter().zip(r["spacing"].as_array().unwrap()) {
            assert!((a - f(b)).abs() < 1e-9);
        }
        assert_eq!(v.orientation_code(), r["orientation"].as_str().unwrap());
        assert_eq!(v.stored_dtype(), DType::I16);
        let s = v.summary();
        assert_eq!(s.hu_range, [f(&r["hu"]["min"]) as f32, f(&r["hu"]["max"]) as f32]);
        assert!(
            (s.hu_mean - f(&r["hu"]["mean"])).abs() < 1e-6,
            "{name}: mean {} vs {}",
            s.hu_mean,
            r["hu"]["mean"]
        );
        for smp in r["voxel_samples"].as_array().unwrap() {
            let p: Vec<f64> = smp.as_array().unwrap().iter().map(f).collect();
            assert_eq!(v.get(p[0] as usize, p[1] as usize, p[2] as usize), Some(p[3] as f32));
        }
        assert!(v.source().contains("NRRD0004") && v.source().contains("gzip"), "{}", v.source());
    }
}

#[test]
fn pyradiomics_label_is_a_label_map() {
    let v = Volume::load(testdata::testdata("pyradiomics", "data/lung1_label.nrrd")).unwrap();
    let labels = medregion::preprocess::labels_from_volume(&v).unwrap();
    assert_eq!(labels.iter().filter(|&&l| l == 1).count(), 837);
    assert!(labels.iter().all(|&l| l <= 1));
}

/// The same 64×64×24 voxels of lung1, written by pynrrd and by nibabel in three storage orders
/// (sform; qform with a rotation; qform with qfac = −1), give the same patient-space volume and
/// bit-identical preprocessed output, which matches the numpy/scipy reference.
#[test]
fn nibabel_nifti_and_pynrrd_nrrd_agree() {
    let r = reference("lung1_small_ref.json");
    let nrrd = Volume::load(fixture("lung1_small.nrrd")).unwrap();
    assert_affine_close(nrrd.affine(), &affine_of(&r["affine_ras"]), 1e-9, "nrrd");
    let sform = Volume::load(fixture("lung1_small_lps_sform.nii.gz")).unwrap();
    assert_eq!(sform.data(), nrrd.data());
    assert_affine_close(sform.affine(), nrrd.affine(), 1e-4, "sform");
    let mut config = PreprocessConfig::default();
    (config.depth, config.height, config.width) = (8, 32, 32);
    let base = preprocess(&nrrd, &config).unwrap();
    let expected: Vec<f64> = r["output"].as_array().unwrap().iter().map(f).collect();
    let max_err = base.data.iter().zip(&expected).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    eprintln!("small lung1 8x32x32 vs numpy/scipy: max abs error {max_err:.2e}");
    assert!(max_err < 1e-5);
    for (file, code) in [
        ("lung1_small_lps_sform.nii.gz", "LPS"),
        ("lung1_small_sra_qform.nii.gz", "SRA"),
        ("lung1_small_rps_qform.nii.gz", "RPS"),
    ] {
        let v = Volume::load(fixture(file)).unwrap();
        assert_eq!(v.orientation_code(), code, "{file}");
        let p = preprocess(&v, &config).unwrap();
        assert_eq!(p.data, base.data, "{file}: preprocessed output differs from the NRRD's");
        assert_affine_close(&p.affine, &base.affine, 1e-4, file);
        assert_eq!(p.crop_canonical, base.crop_canonical, "{file}");
    }
}

/// lung1 in full: NRRD vs the same voxels written as NIfTI-1 (ours, int16, sform, gzip).
#[test]
fn full_ct_nifti_and_nrrd_preprocess_identically() {
    let nrrd = Volume::load(testdata::testdata("pyradiomics", "data/lung1_image.nrrd")).unwrap();
    let [nx, ny, nz] = nrrd.dims();
    let data: Vec<u8> = nrrd.data().iter().flat_map(|&v| (v as i16).to_le_bytes()).collect();
    let mut hdr = Nii::new([nx, ny, nz], 4, 16).with_sform(nrrd.affine());
    hdr.pixdim[1..4].copy_from_slice(&nrrd.spacing().map(|s| s as f32));
    let path = write("lung1.nii.gz", &gzip(&hdr.bytes(&data)));
    let nii = Volume::load(&path).unwrap();
    assert_eq!(nii.data(), nrrd.data());
    let config = PreprocessConfig::default();
    let (a, b) = (preprocess(&nrrd, &config).unwrap(), preprocess(&nii, &config).unwrap());
    assert_eq!(a.data, b.data);
    assert_eq!((a.crop_stored, a.reorientation.clone()), (b.crop_stored, b.reorientation.clone()));
}

// ---------------------------------------------------------------------------------------------
// Synthetic NIfTI-1.

#[test]
fn nifti_every_datatype_with_slope_and_intercept_both_byte_orders_and_gzip() {
    let dims = [3, 4, 5];
    for (dtype, code, _) in ALL {
        for big_endian in [false, true] {
            for (scl, gz) in [((0.0, 0.0), false), ((2.0, -1024.0), true), ((0.5, 3.0), false)] {
                let (bytes, vals) = typed(dtype, 60, big_endian);
                let mut n = Nii::new(dims, code, (dtype.size() * 8) as i16);
                n.big_endian = big_endian;
                n.scl = scl;
                let file = n.bytes(&bytes);
                let file = if gz { gzip(&file) } else { file };
                let p = write(&format!("t-{}-{big_endian}-{gz}.nii", dtype.name()), &file);
                let v = Volume::load(&p).unwrap_or_else(|e| panic!("{dtype:?} {big_endian}: {e}"));
                let (slope, inter) =
                    if scl.0 == 0.0 { (1.0, 0.0) } else { (f64::from(scl.0), f64::from(scl.1)) };
                let want: Vec<f32> = vals.iter().map(|&x| (slope * x + inter) as f32).collect();
                assert_eq!(v.data(), &want[..], "{dtype:?} be={big_endian} scl={scl:?}");
                assert_eq!(v.stored_dtype(), dtype);
                assert_eq!(v.dims(), dims);
            }
        }
    }
}

#[test]
fn nifti_scaling_rules() {
    let (bytes, _) = typed(DType::I16, 8, false);
    for (scl, first) in
        [((f32::NAN, 5.0), -7.0), ((0.0, 100.0), -7.0), ((f32::INFINITY, 0.0), -7.0), ((1.0, 1.5), -5.5)]
    {
        let mut n = Nii::new([2, 2, 2], 4, 16);
        n.scl = scl;
        let v = Volume::load(write("scl.nii", &n.bytes(&bytes))).unwrap();
        assert_eq!(v.data()[0], first, "{scl:?}");
    }
    let mut n = Nii::new([2, 2, 2], 4, 16);
    n.scl = (2.0, f32::NAN);
    let err = Volume::load(write("scl-bad.nii", &n.bytes(&bytes))).unwrap_err();
    assert!(matches!(err, Error::Format { .. }) && err.to_string().contains("scl_inter"), "{err}");
}

/// sform (method 3) wins when sform_code > 0, else the qform quaternion (method 2), else
/// pixdim only (method 1); qfac = pixdim[0] = −1 flips k.
#[test]
fn nifti_affine_methods() {
    let (bytes, _) = typed(DType::U8, 24, false);
    let mut n = Nii::new([2, 3, 4], 2, 8);
    n.pixdim = [1.0, 0.5, 0.75, 2.0, 0.0, 0.0, 0.0, 0.0];
    // 90° about z: (b, c, d) = (0, 0, sin 45°).
    let h = std::f32::consts::FRAC_1_SQRT_2;
    n.quatern = [0.0, 0.0, h, 10.0, 20.0, 30.0];
    n.qform_code = 1;
    let sform = diag([3.0, 3.0, 3.0], [-1.0, -2.0, -3.0]);
    let both = n.clone().with_sform(&sform);
    let v = Volume::load(write("both.nii", &both.bytes(&bytes))).unwrap();
    assert_affine_close(v.affine(), &sform, 1e-6, "sform wins");
    assert!(v.source().contains("sform code 1"));
    let q = Volume::load(write("q.nii", &n.bytes(&bytes))).unwrap();
    let rot: Affine =
        [[0.0, -0.75, 0.0, 10.0], [0.5, 0.0, 0.0, 20.0], [0.0, 0.0, 2.0, 30.0], [0.0, 0.0, 0.0, 1.0]];
    assert_affine_close(q.affine(), &rot, 1e-6, "qform");
    assert_eq!(q.orientation_code(), "ALS");
    n.pixdim[0] = -1.0;
    let qf = Volume::load(write("qfac.nii", &n.bytes(&bytes))).unwrap();
    assert_eq!(qf.affine()[2][2], -2.0);
    n.qform_code = 0;
    let m1 = Volume::load(write("m1.nii", &n.bytes(&bytes))).unwrap();
    assert_affine_close(m1.affine(), &diag([0.5, 0.75, 2.0], [0.0; 3]), 0.0, "method 1");
    assert!(m1.source().contains("method 1"));
}

#[test]
fn nifti_4d_with_one_volume_is_3d_and_other_ranks_are_refused() {
    let (bytes, _) = typed(DType::I16, 24, false);
    let mut n = Nii::new([2, 3, 4], 4, 16);
    n.dim = [4, 2, 3, 4, 1, 1, 1, 1];
    assert_eq!(Volume::load(write("4d1.nii", &n.bytes(&bytes))).unwrap().dims(), [2, 3, 4]);
    n.dim = [4, 2, 3, 2, 2, 1, 1, 1];
    let e = Volume::load(write("4d2.nii", &n.bytes(&bytes))).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("4D"), "{e}");
    n.dim = [2, 4, 6, 1, 1, 1, 1, 1];
    let e = Volume::load(write("2d.nii", &n.bytes(&bytes))).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("2D"), "{e}");
}

#[test]
fn nifti_bad_headers() {
    let (bytes, _) = typed(DType::I16, 24, false);
    let good = Nii::new([2, 3, 4], 4, 16);
    let cases: Vec<(&str, Nii, &str)> = vec![
        ("sizeof", Nii { sizeof_hdr: 350, ..good.clone() }, "sizeof_hdr"),
        ("magic", Nii { magic: *b"abc\0", ..good.clone() }, "magic"),
        ("bitpix", Nii { bitpix: 8, ..good.clone() }, "bitpix"),
        ("offset", Nii { vox_offset: 100.0, ..good.clone() }, "vox_offset"),
        ("zero-dim", Nii { dim: [3, 2, 0, 4, 1, 1, 1, 1], ..good.clone() }, "dim"),
        ("neg-dim", Nii { dim: [3, 2, -3, 4, 1, 1, 1, 1], ..good.clone() }, "dim"),
        ("zero-spacing", Nii { pixdim: [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0], ..good.clone() }, "spacing"),
        ("neg-spacing", Nii { pixdim: [1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], ..good.clone() }, "spacing"),
        ("datatype", Nii { datatype: 32, bitpix: 64, ..good.clone() }, "Complex64"),
        ("unknown-type", Nii { datatype: 3, ..good.clone() }, "datatype code 3"),
    ];
    for (name, n, needle) in cases {
        let e = Volume::load(write(&format!("bad-{name}.nii"), &n.bytes(&bytes))).unwrap_err();
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
    let singular = diag([1.0, 1.0, 1.0], [0.0; 3]);
    let mut s = singular;
    s[1] = s[0]; // y row = x row: coplanar axes
    let e = Volume::load(write("bad-sform.nii", &good.clone().with_sform(&s).bytes(&bytes))).unwrap_err();
    assert!(e.to_string().contains("cannot be inverted"), "{e}");
    let e =
        Volume::load(write("ni2.nii", &Nii { sizeof_hdr: 540, ..good.clone() }.bytes(&bytes))).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)) && e.to_string().contains("NIfTI-2"), "{e}");
    let e =
        Volume::load(write("ni1.nii", &Nii { magic: *b"ni1\0", ..good.clone() }.bytes(&bytes))).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

#[test]
fn nifti_huge_dims_are_refused_before_allocating() {
    let n = Nii { dim: [3, 32767, 32767, 32767, 1, 1, 1, 1], ..Nii::new([1, 1, 1], 4, 16) };
    let e = Volume::load(write("huge.nii", &n.bytes(&[0; 64]))).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Within the caps but far more than the file holds: a truncation error, from a small file.
    let n = Nii { dim: [3, 1024, 1024, 512, 1, 1, 1, 1], ..Nii::new([1, 1, 1], 4, 16) };
    let e = Volume::load(write("claims.nii.gz", &gzip(&n.bytes(&[0; 64])))).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn nifti_nan_voxels_are_counted_and_located() {
    let mut vals = [0.0f32; 24];
    vals[11] = f32::NAN; // (1, 2, 1) = 1 + 2 * (2 + 3 * 1)
    vals[23] = f32::INFINITY;
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let e = Volume::load(write("nan.nii", &Nii::new([2, 3, 4], 16, 32).bytes(&bytes))).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("2 voxels") && msg.contains("(1, 2, 1)"), "{msg}");
}

#[test]
fn truncated_files_are_format_errors() {
    let (bytes, _) = typed(DType::I16, 4000, false);
    let file = Nii::new([10, 20, 20], 4, 16).bytes(&bytes);
    let gz = gzip(&file);
    for (name, cut) in [
        ("t.nii", file[..file.len() - 10].to_vec()),
        ("t.nii.gz", gz[..gz.len() / 2].to_vec()),
        ("t2.nii.gz", gz[..gz.len() - 4].to_vec()),
        ("t3.nii", file[..200].to_vec()),
    ] {
        let e = Volume::load(write(name, &cut)).unwrap_err();
        assert!(matches!(e, Error::Format { .. }), "{name}: {e}");
    }
    let real = std::fs::read(fixture("lung1_small.nrrd")).unwrap();
    let e = Volume::load(write("t.nrrd", &real[..real.len() * 2 / 3])).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    let e = Volume::load(Path::new("/nonexistent/ct.nii.gz")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Synthetic NRRD.

fn nrrd_file(fields: &str, data: &[u8]) -> Vec<u8> {
    let mut v = format!("NRRD0005\n# test\n{fields}key:=value: ignored\n\n").into_bytes();
    v.extend_from_slice(data);
    v
}

#[test]
fn nrrd_every_type_raw_and_gzip_both_endians() {
    for (dtype, _, tname) in ALL {
        for big_endian in [false, true] {
            let (bytes, vals) = typed(dtype, 24, big_endian);
            let endian = if big_endian { "big" } else { "little" };
            for (enc, payload) in [("raw", bytes.clone()), ("gzip", gzip(&bytes))] {
                let fields = format!(
                    "type: {tname}\ndimension: 3\nsizes: 2 3 4\nendian: {endian}\nencoding: {enc}\n\
                     space: left-posterior-superior\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,2)\n\
                     space origin: (10,20,30)\n"
                );
                let v = Volume::load(write("t.nrrd", &nrrd_file(&fields, &payload))).unwrap();
                let want: Vec<f32> = vals.iter().map(|&x| x as f32).collect();
                assert_eq!(v.data(), &want[..], "{tname} {endian} {enc}");
                assert_affine_close(v.affine(), &diag([-0.5, -0.5, 2.0], [-10.0, -20.0, 30.0]), 0.0, tname);
            }
        }
    }
}

#[test]
fn nrrd_spaces_byte_skip_and_spacings() {
    let (bytes, _) = typed(DType::I16, 24, false);
    let base = "type: short\ndimension: 3\nsizes: 2 3 4\nendian: little\n";
    let dirs = "space directions: (1,0,0) (0,1,0) (0,0,1)\n";
    for (space, code) in [("RAS", "RAS"), ("left-anterior-superior", "LAS"), ("LPS", "LPS")] {
        let f = format!("{base}encoding: raw\nspace: {space}\n{dirs}");
        assert_eq!(Volume::load(write("s.nrrd", &nrrd_file(&f, &bytes))).unwrap().orientation_code(), code);
    }
    let mut skipped = vec![9u8; 5];
    skipped.extend(&bytes);
    let f = format!("{base}encoding: raw\nbyte skip: 5\nspace: RAS\n{dirs}");
    assert_eq!(Volume::load(write("b.nrrd", &nrrd_file(&f, &skipped))).unwrap().data()[0], -7.0);
    let f = format!("{base}encoding: raw\nbyte skip: -1\nspace: RAS\n{dirs}");
    assert_eq!(Volume::load(write("b1.nrrd", &nrrd_file(&f, &skipped))).unwrap().data()[0], -7.0);
    let f = format!("{base}encoding: gzip\nbyte skip: 5\nspace: RAS\n{dirs}");
    assert_eq!(Volume::load(write("bg.nrrd", &nrrd_file(&f, &gzip(&skipped)))).unwrap().data()[0], -7.0);
    let f = format!("{base}encoding: raw\nspacings: 0.5 0.5 3\n");
    let v = Volume::load(write("sp.nrrd", &nrrd_file(&f, &bytes))).unwrap();
    assert_eq!((v.spacing(), v.orientation_code()), ([0.5, 0.5, 3.0], "LPS".to_string()));
}

#[test]
fn nrrd_bad_input() {
    let (bytes, _) = typed(DType::I16, 24, false);
    let ok = "type: short\nendian: little\nencoding: raw\nspace: LPS\n";
    let g3 = "dimension: 3\nsizes: 2 3 4\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("{ok}dimension: 2\nsizes: 2 3\nspace directions: (1,0,0) (0,1,0)\n"), "dimension"),
        (format!("{ok}dimension: 4\nsizes: 2 3 4 1\n"), "dimension"),
        (
            format!("{ok}dimension: 3\nsizes: 2 0 4\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"),
            "dimensions",
        ),
        (
            format!("{ok}dimension: 3\nsizes: 5000 3 4\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"),
            "dimensions",
        ),
        (
            format!("{ok}dimension: 3\nsizes: 2 3 4\nspace directions: (1,0,0) (0,0,0) (0,0,1)\n"),
            "zero spacing",
        ),
        (
            format!("{ok}dimension: 3\nsizes: 2 3 4\nspace directions: (1,0,0) (2,0,0) (0,0,1)\n"),
            "cannot be inverted",
        ),
        (format!("{ok}{g3}data file: ct.raw\n"), "detached"),
        (format!("type: short\nendian: little\nencoding: bzip2\nspace: LPS\n{g3}"), "encoding"),
        (format!("type: short\nencoding: raw\nspace: LPS\n{g3}"), "endian"),
        (format!("type: block\nencoding: raw\nspace: LPS\n{g3}"), "block"),
        (format!("type: quaternion\nencoding: raw\nspace: LPS\n{g3}"), "unknown NRRD type"),
        (format!("type: short\nendian: little\nencoding: raw\nspace: scanner-xyz\n{g3}"), "space"),
        (format!("{ok}{g3}kinds: domain domain RGB-color\n"), "kind"),
        (format!("{ok}{g3}type: short\n"), "twice"),
        (format!("{ok}dimension: 3\nsizes: 2 3 4\n"), "space directions"),
    ];
    for (fields, needle) in cases {
        let e = Volume::load(write("bad.nrrd", &nrrd_file(&fields, &bytes))).unwrap_err();
        assert!(e.to_string().contains(needle), "{fields}\n→ {e}");
    }
    let e = Volume::load(write("v9.nrrd", b"NRRD0009\n\n")).unwrap_err();
    assert!(e.to_string().contains("NRRD0001..NRRD0005"), "{e}");
    let e = Volume::load(write("hdr.nhdr", b"NRRD0004\ntype: short\n")).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let nan: Vec<u8> =
        [0.0f32, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let f = "type: float\ndimension: 3\nsizes: 2 2 2\nendian: little\nencoding: raw\nspacings: 1 1 1\n";
    let e = Volume::load(write("nan.nrrd", &nrrd_file(f, &nan))).unwrap_err();
    assert!(e.to_string().contains("1 voxels") && e.to_string().contains("(1, 0, 0)"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Caller buffers.

#[test]
fn buffer_matches_the_file_for_dense_and_strided_layouts() {
    let file = Volume::load(fixture("lung1_small.nrrd")).unwrap();
    let [nx, ny, nz] = file.dims();
    let lps = medregion::volume::geometry::lps_to_ras(file.affine()); // RAS → LPS (own inverse)
    let dense: Vec<u8> = file.data().iter().flat_map(|&v| (v as i16).to_ne_bytes()).collect();
    let before = dense.clone();
    let mut buf = VoxelBuffer::dense(&dense, DType::I16, [nx, ny, nz], Coordinates::Lps);
    buf.affine = Some(lps);
    let v = Volume::from_buffer(&buf).unwrap();
    assert_eq!(v.data(), file.data());
    assert_affine_close(v.affine(), file.affine(), 1e-12, "buffer");
    assert_eq!(dense, before, "the caller's buffer is untouched");
    // z fastest, then x, then y, as i32 with rescale 2x - 1024 ("stored" = (hu + 1024) / 2).
    let mut zfirst = vec![0u8; nx * ny * nz * 4];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let stored = ((file.get(x, y, z).unwrap() + 1024.0) / 2.0) as i32;
                let at = 4 * (z + nz * (x + nx * y));
                zfirst[at..at + 4].copy_from_slice(&stored.to_ne_bytes());
            }
        }
    }
    let mut b = VoxelBuffer::dense(&zfirst, DType::I32, [nx, ny, nz], Coordinates::Lps);
    b.strides = Some([(4 * nz) as i64, (4 * nz * nx) as i64, 4]);
    b.affine = Some(lps);
    b.spacing = Some(file.spacing());
    (b.rescale_slope, b.rescale_intercept) = (2.0, -1024.0);
    let v2 = Volume::from_buffer(&b).unwrap();
    for (a, c) in v2.data().iter().zip(file.data()) {
        assert!((a - c).abs() <= 1.0, "{a} vs {c}"); // odd HU lose their last bit in (hu + 1024) / 2
    }
}

#[test]
fn buffer_bad_input() {
    let data = vec![0u8; 2 * 24];
    let mk = || {
        let mut b = VoxelBuffer::dense(&data, DType::I16, [2, 3, 4], Coordinates::Ras);
        b.spacing = Some([1.0, 1.0, 1.0]);
        b
    };
    assert!(Volume::from_buffer(&mk()).is_ok());
    let short = &data[..47];
    let mut cases: Vec<(VoxelBuffer<'_>, &str)> = vec![
        (VoxelBuffer { data: short, ..mk() }, "buffer length"),
        (VoxelBuffer { dims: [2, 3, 0], ..mk() }, "dimensions"),
        (VoxelBuffer { dims: [2048, 2048, 2048], ..mk() }, "volume size"),
        (VoxelBuffer { strides: Some([2, -4, 12]), ..mk() }, "positive"),
        (VoxelBuffer { strides: Some([2, 2, 12]), ..mk() }, "overlap"),
        (VoxelBuffer { strides: Some([2, 4, 13]), ..mk() }, "buffer length"),
        (VoxelBuffer { spacing: Some([1.0, 0.0, 1.0]), ..mk() }, "spacing"),
        (VoxelBuffer { spacing: Some([1.0, -1.0, 1.0]), ..mk() }, "spacing"),
        (VoxelBuffer { spacing: None, ..mk() }, "spacing"),
        (
            VoxelBuffer { spacing: Some([2.0, 1.0, 1.0]), affine: Some(diag([1.0; 3], [0.0; 3])), ..mk() },
            "spacing vs",
        ),
        (
            VoxelBuffer {
                affine: Some([
                    [1.0, 1.0, 0.0, 0.0],
                    [1.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0],
                ]),
                spacing: None,
                ..mk()
            },
            "cannot be inverted",
        ),
        (
            VoxelBuffer {
                affine: Some([
                    [1.0, 0.0, 0.0, 0.0],
                    [0.0, 1.0, 0.0, 0.0],
                    [0.0, 0.0, 1.0, 0.0],
                    [0.0, 0.0, 1.0, 1.0],
                ]),
                spacing: None,
                ..mk()
            },
            "last row",
        ),
        (VoxelBuffer { rescale_slope: 0.0, ..mk() }, "slope"),
        (VoxelBuffer { rescale_intercept: f64::NAN, ..mk() }, "intercept"),
    ];
    let nan: Vec<u8> = (0..24).flat_map(|i| if i == 5 { f32::NAN } else { 0.0 }.to_ne_bytes()).collect();
    cases.push((VoxelBuffer { data: &nan, dtype: DType::F32, ..mk() }, "(1, 2, 0)"));
    for (b, needle) in cases {
        let e = Volume::from_buffer(&b).unwrap_err();
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}
