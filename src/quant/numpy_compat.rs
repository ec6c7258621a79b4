//! The few places where gguf-py's numpy arithmetic is not plain IEEE f32 arithmetic, written
//! out so that our quantizers give the same bytes as `gguf.quants.quantize` on x86-64.
//!
//! Reference: numpy 2.x `numpy/_core/src/umath/loops_minmax.dispatch.c.src` (float min/max
//! reductions, AVX2 dispatch) and the C cast loops used by `ndarray.astype`. Everything else in
//! the quantizers is ordinary f32 `+ - * /` in the order gguf-py writes it, which Rust
//! reproduces exactly (Rust never contracts `a * b + c` into an FMA).

use super::QK;

/// numpy's `float32 → uint8/int8` cast (`astype`) on x86-64, returned as the raw byte.
///
/// numpy casts with a C conversion through a 32-bit integer (`cvttss2si`): truncate toward
/// zero and keep the low byte, so 300.0 → 44 and -1.0 → 255. NaN, ±inf and values outside the
/// i32 range give the "integer indefinite" 0x8000_0000, whose low byte is 0. (An f32 of
/// magnitude ≥ 2^31 is a multiple of 256, so a 64-bit conversion would give the same byte.)
/// This only matters for blocks whose scale underflows so far that `1/d` overflows to inf; the
/// C reference (`ggml-quants.c`) has undefined behaviour there.
///
/// `cast_low_byte(x.trunc()) == cast_low_byte(x)` (the cast truncates), so callers skip the
/// `trunc` gguf-py applies first; without SSE4.1 `f32::trunc` is a libm call.
#[inline(always)]
pub fn cast_low_byte(x: f32) -> u8 {
    let (t, in_range) = trunc_i32(x);
    if in_range {
        t as u8
    } else {
        0
    }
}

/// `(trunc(x) as i32, true)` when `x` is in (-2^31, 2^31), else `(0, false)`; NaN is out of
/// range. Branch-free, so the loops around it vectorize (`cvttps2dq`), which Rust's
/// saturating `as` prevents.
#[inline(always)]
fn trunc_i32(x: f32) -> (i32, bool) {
    let in_range = x > -2147483648.0 && x < 2147483648.0;
    let x = if in_range { x } else { 0.0 };
    // SAFETY: x is 0 or a finite value strictly between -2^31 and 2^31, so its truncation is
    // representable as an i32 (the precondition of `to_int_unchecked`).
    (unsafe { x.to_int_unchecked::<i32>() }, in_range)
}

/// `cast_low_byte(np_roundf(x))`: round half away from zero (gguf-py's `np_roundf`, C's
/// `roundf`), then numpy's cast. Written without `f32::round` (a libm call without SSE4.1):
/// for |x| < 2^31, `t = trunc(x)` and `x - t` are exact, and the result steps away from zero
/// when that fraction is at least one half; larger |x| are integers already.
#[inline(always)]
pub fn round_cast_low_byte(x: f32) -> u8 {
    let (t, in_range) = trunc_i32(x);
    let frac = x - t as f32;
    let r = t.wrapping_add((frac >= 0.5) as i32).wrapping_sub((frac <= -0.5) as i32);
    if in_range {
        r as u8
    } else {
        0
    }
}

/// x86 `minps(a, b)`: `a < b ? a : b` (so on a tie, including `-0.0` vs `+0.0`, it is `b`).
#[inline(always)]
fn min_ps(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

/// x86 `maxps(a, b)`: `a > b ? a : b`.
#[inline(always)]
fn max_ps(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// numpy's `block.min()` / `block.max()` over one contiguous 32-element row, in the order
/// numpy's AVX2 reduction visits the elements (8-lane accumulator seeded with `x[0]`, three
/// vector steps over `x[1..25]`, a 8→4→2→1 horizontal reduction, then a scalar tail over
/// `x[25..32]`).
///
/// The *value* of a min or max does not depend on the order; only which of `-0.0` and `+0.0`
/// wins does, and Q4_1 stores the min (and, through `max - min`, the sign of a zero scale)
/// bit for bit. Machines where numpy dispatches AVX-512 reductions (16 lanes) may pick the
/// other zero; the committed fixtures were generated with the AVX2 dispatch, like this CPU.
#[inline(always)]
fn reduce_like_numpy_avx2(x: &[f32; QK], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [x[0]; 8];
    for step in 0..3 {
        for (lane, a) in acc.iter_mut().enumerate() {
            *a = op(*a, x[1 + 8 * step + lane]);
        }
    }
    let v128 = [op(acc[0], acc[4]), op(acc[1], acc[5]), op(acc[2], acc[6]), op(acc[3], acc[7])];
    let v64 = [op(v128[0], v128[2]), op(v128[1], v128[3])];
    let mut r = op(v64[0], v64[1]);
    for &e in &x[25..] {
        r = op(r, e);
    }
    r
}

/// `block.min()` as numpy computes it (see [`reduce_like_numpy_avx2`]).
#[inline]
pub fn block_min(x: &[f32; QK]) -> f32 {
    reduce_like_numpy_avx2(x, min_ps)
}

/// `block.max()` as numpy computes it (see [`reduce_like_numpy_avx2`]).
#[inline]
pub fn block_max(x: &[f32; QK]) -> f32 {
    reduce_like_numpy_avx2(x, max_ps)
}

/// `x[abs(x).argmax()]`: the signed element of largest magnitude, the first one on a tie
/// (numpy's argmax returns the first occurrence), so `[-3, 3]` gives `-3` and `[+0, -0]` gives
/// `+0`.
#[inline]
pub fn first_absmax(x: &[f32; QK]) -> f32 {
    let mut best = x[0].abs();
    let mut value = x[0];
    for &v in &x[1..] {
        if v.abs() > best {
            best = v.abs();
            value = v;
        }
    }
    value
}

/// `abs(x).max()`: the largest magnitude (never a negative zero).
#[inline]
pub fn absmax(x: &[f32; QK]) -> f32 {
    // Eight independent lanes so it vectorizes; a max of non-negative values does not depend
    // on the order (NaN-free input).
    let mut m = [0.0f32; 8];
    for c in x.chunks_exact(8) {
        for (m, &v) in m.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    m.iter().fold(0.0f32, |a, &b| if b > a { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_matches_numpy_x86() {
        // Values observed from numpy 2.4 `np.array([...], np.float32).astype(np.uint8)` here.
        let cases: [(f32, u8); 15] = [
            (f32::INFINITY, 0),
            (f32::NEG_INFINITY, 0),
            (f32::NAN, 0),
            (300.0, 44),
            (-1.0, 255),
            (-300.0, 212),
            (1e10, 0),
            (-1e10, 0),
            (255.9, 255),
            (256.0, 0),
            (-0.5, 0),
            (16.0, 16),
            (-128.0, 128),
            (128.0, 128),
            (-129.0, 127),
        ];
        for (x, want) in cases {
            assert_eq!(cast_low_byte(x), want, "cast of {x}");
        }
    }

    #[test]
    fn round_cast_is_round_then_cast() {
        let mut x = -300.0f32;
        while x < 300.0 {
            assert_eq!(round_cast_low_byte(x), cast_low_byte(x.round()), "{x}");
            x += 0.0625;
        }
        for x in [0.49999997f32, -0.49999997, 0.5, -0.5, 1.5, -2.5, 8388607.5, 1e9, -1e9] {
            assert_eq!(round_cast_low_byte(x), cast_low_byte(x.round()), "{x}");
        }
        for x in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 3e9, -3e9, -2147483648.0] {
            assert_eq!(round_cast_low_byte(x), 0, "{x}");
        }
    }

    #[test]
    fn signed_zero_reductions() {
        // Lane-dependent results checked against numpy (see scripts/quant/make_quant_fixtures.py).
        let mut x = [1.0f32; QK];
        x[0] = -0.0;
        x[5] = 0.0;
        assert!(block_min(&x).is_sign_negative());
        let mut x = [1.0f32; QK];
        x[3] = -0.0;
        x[8] = 0.0;
        assert!(block_min(&x).is_sign_positive());
        let mut x = [-0.0f32; QK];
        x[7] = 0.0;
        assert!(block_min(&x).is_sign_negative());
        assert!(block_max(&x).is_sign_negative());
        x[31] = 0.0;
        assert!(block_max(&x).is_sign_positive());
    }

    #[test]
    fn absmax_picks_first() {
        let mut x = [0.5f32; QK];
        x[4] = -3.0;
        x[9] = 3.0;
        assert_eq!(first_absmax(&x), -3.0);
        let mut z = [0.0f32; QK];
        z[1] = -0.0;
        assert!(first_absmax(&z).is_sign_positive());
        z[0] = -0.0;
        assert!(first_absmax(&z).is_sign_negative());
        assert_eq!(absmax(&x), 3.0);
    }
}
