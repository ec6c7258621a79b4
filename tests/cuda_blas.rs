//! cuBLAS GEMM and the f32 <-> 16-bit conversions (`kernels/convert.cu`) on a GPU.
//!
//! | op | reference | tolerance |
//! |---|---|---|
//! | `f32_to_half` (bf16, f16) | `half::bf16::from_f32`, `half::f16::from_f32` | bit-identical, incl. ties, ±0, inf, NaN (stays NaN) |
//! | `half_to_f32` | `half::*::to_f32` | bit-identical |
//! | `Blas::gemm_xwt` (bf16, f16 in; f32 accumulate and out) | f64 GEMM of the same 16-bit-rounded inputs | `|got - ref| <= 3e-5 · Σ_j |x_j w_j| + 1e-30` |
//!
//! Needs a CUDA device and cuBLAS: ignored elsewhere; `scripts/gpu-check.sh` runs them.

#![cfg(feature = "cuda")]

#[path = "common/cuda.rs"]
mod cuda_common;

use cuda_common::gpu;
use half::{bf16, f16};
use medregion::backend::cuda::blas::{f32_to_half, half_to_f32, Blas, Half};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn bits(ty: Half, v: &[f32]) -> Vec<u16> {
    match ty {
        Half::Bf16 => v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect(),
        Half::F16 => v.iter().map(|&x| f16::from_f32(x).to_bits()).collect(),
    }
}

fn value(ty: Half, b: u16) -> f32 {
    match ty {
        Half::Bf16 => bf16::from_bits(b).to_f32(),
        Half::F16 => f16::from_bits(b).to_f32(),
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn conversions_match_the_half_crate_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut x = rng.vec(100_003, 3.0);
    // Exact ties of both formats, signed zeros, the f16 overflow edge, inf, NaN, subnormals.
    x.extend([
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        1.0 + 1.0 / 2048.0,
        -0.0,
        0.0,
        65504.0,
        65520.0,
        1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        -3e-8,
    ]);
    let n = x.len();
    let dx = gpu.upload(&x).unwrap();
    for ty in [Half::Bf16, Half::F16] {
        let mut dy = gpu.alloc::<u16>(n).unwrap();
        f32_to_half(&gpu, ty, &dx.as_view(), &mut dy.as_view_mut(), n).unwrap();
        let got = gpu.download(&dy).unwrap();
        let want = bits(ty, &x);
        for i in 0..n {
            if x[i].is_nan() {
                assert!(value(ty, got[i]).is_nan(), "{ty:?} NaN stays NaN");
            } else {
                assert_eq!(got[i], want[i], "{ty:?} x[{i}] = {:e}", x[i]);
            }
        }
        let mut back = gpu.alloc::<f32>(n).unwrap();
        half_to_f32(&gpu, ty, &dy.as_view(), &mut back.as_view_mut(), n).unwrap();
        let back = gpu.download(&back).unwrap();
        for i in 0..n {
            let w = value(ty, got[i]);
            assert!(back[i].to_bits() == w.to_bits() || (w.is_nan() && back[i].is_nan()), "{ty:?} back[{i}]");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn gemm_matches_an_f64_reference_of_the_rounded_inputs() {
    let gpu = gpu();
    let blas = Blas::new(&gpu).expect("cuBLAS");
    let mut rng = Rng(0x0dd_ba11);
    // Odd shapes around tile edges, the encoder's k = 768 and a long k.
    for &(m, n, k) in &[(1, 1, 1), (7, 13, 33), (130, 257, 768), (65, 96, 3072), (1370, 768, 768)] {
        let x = rng.vec(m * k, 1.0);
        let w = rng.vec(n * k, 0.05);
        for ty in [Half::Bf16, Half::F16] {
            let (xb, wb) = (bits(ty, &x), bits(ty, &w));
            let xr: Vec<f32> = xb.iter().map(|&b| value(ty, b)).collect();
            let wr: Vec<f32> = wb.iter().map(|&b| value(ty, b)).collect();
            let (dx, dw) = (gpu.upload(&xb).unwrap(), gpu.upload(&wb).unwrap());
            let mut out = gpu.alloc::<f32>(m * n).unwrap();
            blas.gemm_xwt(ty, &dx, &dw, &mut out, m, n, k).unwrap();
            let got = gpu.download(&out).unwrap();
            let reference = medregion::ops::reference::matmul_f64(&xr, m, &wr, n, k);
            let bound = medregion::ops::reference::abs_products(&xr, m, &wr, n, k);
            let mut worst = 0.0f64;
            for i in 0..m * n {
                let err = (got[i] as f64 - reference[i]).abs();
                worst = worst.max(err / (bound[i] + 1e-30));
                assert!(
                    err <= 3e-5 * bound[i] + 1e-30,
                    "{ty:?} {m}x{n}x{k} [{i}]: {} vs {}",
                    got[i],
                    reference[i]
                );
            }
            eprintln!("gemm {ty:?} {m}x{n}x{k}: worst error / sum|xw| = {worst:.2e}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it"]
fn bad_shapes_are_errors_before_any_launch() {
    let gpu = gpu();
    let blas = Blas::new(&gpu).expect("cuBLAS");
    let x = gpu.alloc::<u16>(10).unwrap();
    let w = gpu.alloc::<u16>(12).unwrap();
    let mut out = gpu.alloc::<f32>(4).unwrap();
    let e = blas.gemm_xwt(Half::Bf16, &x, &w, &mut out, 2, 2, 6).unwrap_err().to_string();
    assert!(e.contains("activations"), "{e}");
    let e = blas.gemm_xwt(Half::Bf16, &x, &w, &mut out, 2, 3, 4).unwrap_err().to_string();
    assert!(e.contains("output"), "{e}");
    assert!(blas.gemm_xwt(Half::F16, &x, &w, &mut out, 0, 2, 4).is_err());
    let mut y = gpu.alloc::<u16>(3).unwrap();
    let xf = gpu.alloc::<f32>(5).unwrap();
    let e = f32_to_half(&gpu, Half::Bf16, &xf.as_view(), &mut y.as_view_mut(), 5).unwrap_err().to_string();
    assert!(e.contains("output"), "{e}");
    gpu.sync().unwrap();
}
