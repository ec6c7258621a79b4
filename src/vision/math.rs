//! Element-wise math of the encoder in f32: `exp`, `erf`, exact GELU, written so that LLVM
//! vectorizes them (branch-free, no library calls) and so that the AVX2 and portable builds
//! of the same loop give the same bits (every multiply-add is an explicit `mul_add`).
//!
//! * `exp`: Cody–Waite range reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, then the degree-6
//!   Taylor polynomial of `e^r` (truncation error `r⁷/7! ≤ 1.2·10⁻⁷` relative), then `2ⁿ`
//!   built in the exponent bits. Inputs are clamped to `[-87.3, 88.7]` (below: a tiny normal
//!   number instead of 0 or a denormal; softmax and GELU never need more). Max relative error
//!   about 2 ulp (checked against f64 in the tests).
//! * `erf`: Abramowitz & Stegun 7.1.26 (`1 − (a₁t + … + a₅t⁵)·e^{−x²}`, `t = 1/(1 + p|x|)`), max
//!   absolute error 1.5·10⁻⁷ by the formula plus f32 cancellation in `1 − poly·e^{−x²}` near 0
//!   (6.2·10⁻⁷ measured; GELU's error stays below 2·10⁻⁷·max(|x|, 1)); odd symmetry by
//!   `copysign`.
//!   Chosen over a rational minimax fit because its coefficients are published and it needs only
//!   the `exp` above.
//! * `gelu`: `0.5·x·(1 + erf(x/√2))`, the exact (erf) GELU of HF `hidden_act: "gelu"`.

/// `1.5 · 2²³`: adding and subtracting it rounds an f32 of magnitude < 2²² to an integer
/// (ties to even), branch-free and vectorizable.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for |n| ≤ 2⁹.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_MIN: f32 = -87.3;
const EXP_MAX: f32 = 88.7;

/// `e^x` in f32 (see the module doc). NaN propagates (the clamp keeps NaN in `max`/`min`
/// order below, so the result is NaN or a finite value; callers never pass NaN).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    // Horner form of Σ r^i / i!, i = 0..=6.
    let mut p = 1.0 / 720.0f32;
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // n ∈ [-126, 128]: 2ⁿ from the exponent bits (n = 128 only for x near 88.7: split in two).
    // SAFETY: a finite `n` is an integer in [-126, 128] (x was clamped above), so the unchecked
    // conversion is exact; NaN maps to 0 as `as i32` does. Same values as `n as i32`, whose
    // saturating conversion LLVM does not vectorize.
    let n: i32 = if n.is_finite() { unsafe { n.to_int_unchecked() } } else { 0 };
    let half = n >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n - half + 127) as u32) << 23);
    p * s1 * s2
}

/// A&S 7.1.26 constants.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];

/// `erf(x)` in f32 (see the module doc).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / ERF_P.mul_add(a, 1.0);
    let mut poly = ERF_A[4];
    poly = poly.mul_add(t, ERF_A[3]);
    poly = poly.mul_add(t, ERF_A[2]);
    poly = poly.mul_add(t, ERF_A[1]);
    poly = poly.mul_add(t, ERF_A[0]);
    poly *= t;
    let y = (-poly).mul_add(exp(-a * a), 1.0);
    y.copysign(x)
}

/// Exact GELU: `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `gelu` over a slice, in place.
#[inline(always)]
pub fn gelu_slice(values: &mut [f32]) {
    for v in values {
        *v = gelu(*v);
    }
}
