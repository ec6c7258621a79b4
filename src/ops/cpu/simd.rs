//! Helpers shared by the kernels: the fixed 8-lane reductions, AVX2 versions and their scalar
//! twins.
//!
//! Every kernel accumulates in 8 f32 lanes and ends with [`hsum8`]'s fixed order, which the
//! scalar path reproduces operation for operation ([`hsum8_scalar`]); that is what makes the
//! AVX2 and the portable results bit-identical.

/// Lanes of one accumulator (one AVX2 `__m256`).
pub(crate) const LANES: usize = 8;

/// The horizontal sum of 8 lanes in the order the AVX2 [`avx2::hsum8`] uses:
/// `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
#[inline(always)]
pub(crate) fn hsum8_scalar(a: &[f32; LANES]) -> f32 {
    let t = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of 8 f32 lanes, in [`super::hsum8_scalar`]'s order.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hsum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)); // [t0, t1, t2, t3]
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s)); // [t0 + t2, t1 + t3, ..]
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// [`hsum8`] of 8 vectors at once: lane `i` of the result is `hsum8(v[i])` bit for bit (the
    /// same adds: `t = lo + hi` per vector, then `(t0 + t2) + (t1 + t3)`), by one
    /// transpose-and-add tree (8 exchanges of 128-bit halves, 6 in-lane shuffles, a permute and
    /// 7 adds, where 8 `hsum8` take 48 instructions).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hsum8x8(v: &[__m256; 8]) -> __m256 {
        // t = lo + hi per vector, two vectors per result: [t0..t3 of v[j] | of v[j + 1]].
        let t = |a: __m256, b: __m256| {
            _mm256_add_ps(_mm256_permute2f128_ps::<0x20>(a, b), _mm256_permute2f128_ps::<0x31>(a, b))
        };
        let (t01, t23, t45, t67) = (t(v[0], v[1]), t(v[2], v[3]), t(v[4], v[5]), t(v[6], v[7]));
        // u = [t0 + t2, t1 + t3] per vector: v[0], v[2] (low half) and v[1], v[3] (high half).
        let u = |a: __m256, b: __m256| {
            _mm256_add_ps(_mm256_shuffle_ps::<0b01_00_01_00>(a, b), _mm256_shuffle_ps::<0b11_10_11_10>(a, b))
        };
        let (u0, u1) = (u(t01, t23), u(t45, t67));
        // Lanes hold vectors 0, 2, 4, 6, 1, 3, 5, 7; the permute puts them in order.
        let sum = _mm256_add_ps(
            _mm256_shuffle_ps::<0b10_00_10_00>(u0, u1),
            _mm256_shuffle_ps::<0b11_01_11_01>(u0, u1),
        );
        _mm256_permutevar8x32_ps(sum, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// Horizontal max of 8 f32 lanes (exact in any order).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hmax8(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }

    /// Reduces 8 vectors of 8 f32 to one vector whose lane `i` is the largest lane of `v[i]`:
    /// [`reduce8_i32`]'s transpose tree with `max` (exact in any order; for NaN-free input).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn reduce8_max(v: &[__m256; 8]) -> __m256 {
        let pair = |a: __m256, b: __m256| _mm256_max_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (t0, t1, t2, t3) = (pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
        let quad = |a: __m256, b: __m256| {
            let (a, b) = (_mm256_castps_pd(a), _mm256_castps_pd(b));
            _mm256_max_ps(
                _mm256_castpd_ps(_mm256_unpacklo_pd(a, b)),
                _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)),
            )
        };
        let (u0, u1) = (quad(t0, t1), quad(t2, t3));
        _mm256_max_ps(_mm256_permute2f128_ps::<0x20>(u0, u1), _mm256_permute2f128_ps::<0x31>(u0, u1))
    }

    /// Horizontal sum of 8 i32 lanes (exact in any order while it does not overflow).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn hsum8_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
    }

    /// Reduces 8 vectors of 8 i32 partial sums to one vector whose lane `i` is the total of
    /// `v[i]`: a transpose-and-add tree of unpacks (integer, so exact). `hadd` would be shorter
    /// to write but costs twice as much on Zen 3.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn reduce8_i32(v: &[__m256i; 8]) -> __m256i {
        // Per 128-bit half: [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
        let pair = |a: __m256i, b: __m256i| {
            _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
        };
        let (t0, t1, t2, t3) = (pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
        // Per half: [Σ v0, Σ v1, Σ v2, Σ v3] over that half's 4 lanes (and v4..v7 in u1).
        let u0 = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
        let u1 = _mm256_add_epi32(_mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3));
        _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(u0, u1), _mm256_permute2x128_si256::<0x31>(u0, u1))
    }

    /// Like [`reduce8_i32`] for 8 vectors of 16 i16 partial sums (`maddubs` output) whose
    /// 8-lane half sums fit in i16 (|lane| ≤ 4095, true for 4-bit × int8 blocks): saves the
    /// `madd` per block that widening first would cost.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn reduce8_i16(v: &[__m256i; 8]) -> __m256i {
        // Each level halves the lanes per block; after three, a half holds one i16 per block.
        let pair16 = |a: __m256i, b: __m256i| {
            _mm256_add_epi16(_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b))
        };
        let (t0, t1, t2, t3) =
            (pair16(v[0], v[1]), pair16(v[2], v[3]), pair16(v[4], v[5]), pair16(v[6], v[7]));
        let pair32 = |a: __m256i, b: __m256i| {
            _mm256_add_epi16(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
        };
        let (u0, u1) = (pair32(t0, t1), pair32(t2, t3));
        let r = _mm256_add_epi16(_mm256_unpacklo_epi64(u0, u1), _mm256_unpackhi_epi64(u0, u1));
        let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(r));
        _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(r)))
    }

    /// The two unpack stages of an 8 × 8 transpose of 32-bit lanes, the same for 256- and
    /// 512-bit vectors because unpacks work within 128-bit lanes: first pairs of inputs
    /// interleaved, then `s[q]` holding, per 128-bit lane `h`, lane `4h + q` of inputs 0..4
    /// (`q < 4`; `s[q + 4]`: of inputs 4..8). Arguments: the inputs, then the 32-bit low and
    /// high unpacks and the 64-bit ones of the width.
    macro_rules! unpack_stages {
        ($v:expr, $lo32:path, $hi32:path, $lo64:path, $hi64:path) => {{
            let v = $v;
            let t = [
                $lo32(v[0], v[1]),
                $hi32(v[0], v[1]),
                $lo32(v[2], v[3]),
                $hi32(v[2], v[3]),
                $lo32(v[4], v[5]),
                $hi32(v[4], v[5]),
                $lo32(v[6], v[7]),
                $hi32(v[6], v[7]),
            ];
            [
                $lo64(t[0], t[2]),
                $hi64(t[0], t[2]),
                $lo64(t[1], t[3]),
                $hi64(t[1], t[3]),
                $lo64(t[4], t[6]),
                $hi64(t[4], t[6]),
                $lo64(t[5], t[7]),
                $hi64(t[5], t[7]),
            ]
        }};
    }

    /// Transposes 8 vectors of 8 32-bit lanes: lane `l` of output `c` is lane `c` of input `l`
    /// (unpacks within 128-bit halves, then the halves exchanged).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn transpose8x32(v: &[__m256i; 8]) -> [__m256i; 8] {
        let s = unpack_stages!(
            v,
            _mm256_unpacklo_epi32,
            _mm256_unpackhi_epi32,
            _mm256_unpacklo_epi64,
            _mm256_unpackhi_epi64
        );
        [
            _mm256_permute2x128_si256::<0x20>(s[0], s[4]),
            _mm256_permute2x128_si256::<0x20>(s[1], s[5]),
            _mm256_permute2x128_si256::<0x20>(s[2], s[6]),
            _mm256_permute2x128_si256::<0x20>(s[3], s[7]),
            _mm256_permute2x128_si256::<0x31>(s[0], s[4]),
            _mm256_permute2x128_si256::<0x31>(s[1], s[5]),
            _mm256_permute2x128_si256::<0x31>(s[2], s[6]),
            _mm256_permute2x128_si256::<0x31>(s[3], s[7]),
        ]
    }

    /// [`transpose8x32`] in each 256-bit half of 8 512-bit vectors at once: lane `l` of half `h`
    /// of output `c` is lane `c` of half `h` of input `l`. The same unpacks (they work within
    /// 128-bit lanes); the exchange of 128-bit halves becomes a two-source qword permute.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    pub(crate) fn transpose8x32_halves(v: &[__m512i; 8]) -> [__m512i; 8] {
        let s = unpack_stages!(
            v,
            _mm512_unpacklo_epi32,
            _mm512_unpackhi_epi32,
            _mm512_unpacklo_epi64,
            _mm512_unpackhi_epi64
        );
        // Per 256-bit half: the low 128 bits of a then of b (`0x20`), or the high ones (`0x31`).
        let i20 = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
        let i31 = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
        let p = |a, i, b| _mm512_permutex2var_epi64(a, i, b);
        [
            p(s[0], i20, s[4]),
            p(s[1], i20, s[5]),
            p(s[2], i20, s[6]),
            p(s[3], i20, s[7]),
            p(s[0], i31, s[4]),
            p(s[1], i31, s[5]),
            p(s[2], i31, s[6]),
            p(s[3], i31, s[7]),
        ]
    }

    /// The `T` (1, 2 or 4) blocks of 32 bytes at `p`, each XORed with `flip`, in the compact
    /// tail layout (`quantize_act::compact_tail_rows`): lane `k` of output `v` is word
    /// `v · 8/T + k / T` (4 bytes) of block `k % T`.
    ///
    /// # Safety
    /// `p` is valid for `32 · T` reads.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn word_tail<const T: usize>(p: *const u8, flip: __m256i) -> [__m256i; T] {
        // SAFETY: block b < T is 32 readable bytes at p + 32b (the caller's contract).
        let ld = |b: usize| unsafe { _mm256_xor_si256(_mm256_loadu_si256(p.add(32 * b).cast()), flip) };
        let mut out = [_mm256_setzero_si256(); 4];
        match T {
            1 => out[0] = ld(0),
            2 => {
                let (a, b) = (ld(0), ld(1));
                // [a0 b0 a1 b1 | a4 b4 a5 b5] and [a2 b2 a3 b3 | a6 b6 a7 b7].
                let (lo, hi) = (_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
                out[0] = _mm256_permute2x128_si256::<0x20>(lo, hi);
                out[1] = _mm256_permute2x128_si256::<0x31>(lo, hi);
            }
            _ => {
                let (a, b, c, d) = (ld(0), ld(1), ld(2), ld(3));
                let (t0, t1) = (_mm256_unpacklo_epi32(a, b), _mm256_unpacklo_epi32(c, d));
                let (t2, t3) = (_mm256_unpackhi_epi32(a, b), _mm256_unpackhi_epi32(c, d));
                // Words [0 | 4], [1 | 5], [2 | 6], [3 | 7] of blocks a, b, c, d.
                let (u0, u1) = (_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
                let (u2, u3) = (_mm256_unpacklo_epi64(t2, t3), _mm256_unpackhi_epi64(t2, t3));
                out[0] = _mm256_permute2x128_si256::<0x20>(u0, u1);
                out[1] = _mm256_permute2x128_si256::<0x20>(u2, u3);
                out[2] = _mm256_permute2x128_si256::<0x31>(u0, u1);
                out[3] = _mm256_permute2x128_si256::<0x31>(u2, u3);
            }
        }
        std::array::from_fn(|v| out[v])
    }

    /// The `T` (1, 2 or 4) packed 4-bit blocks at `p` (16 bytes each: byte `i` holds element
    /// `i` in its low nibble and `i + 16` in its high one) as unsigned bytes in the compact tail
    /// layout of [`word_tail`]: low nibbles give words 0–3 of a block, high nibbles words 4–7.
    ///
    /// # Safety
    /// `p` is valid for `16 · T` reads.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) unsafe fn nibble_tail<const T: usize>(p: *const u8) -> [__m256i; T] {
        let m = _mm256_set1_epi8(0x0F);
        let lo = |v: __m256i| _mm256_and_si256(v, m);
        let hi = |v: __m256i| _mm256_and_si256(_mm256_srli_epi32::<4>(v), m);
        let mut out = [_mm256_setzero_si256(); 4];
        // Dword order [0 4 1 5 2 6 3 7]: nibble word w of blocks a, b → lanes 2w, 2w + 1.
        let pairs = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        // SAFETY (loads): 16 · T readable bytes at p (the caller's contract).
        match T {
            1 => {
                let w = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
                // The low half keeps the low nibbles (words 0–3), the high half shifts.
                out[0] = lo(_mm256_srlv_epi32(w, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)));
            }
            2 => {
                let w = _mm256_permutevar8x32_epi32(unsafe { _mm256_loadu_si256(p.cast()) }, pairs);
                out[0] = lo(w);
                out[1] = hi(w);
            }
            _ => {
                let x = _mm256_permutevar8x32_epi32(unsafe { _mm256_loadu_si256(p.cast()) }, pairs);
                let y = _mm256_permutevar8x32_epi32(unsafe { _mm256_loadu_si256(p.add(32).cast()) }, pairs);
                // [a0 b0 c0 d0 | a2 b2 c2 d2] and [a1 b1 c1 d1 | a3 b3 c3 d3] (nibble words).
                let (l, h) = (_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
                let w01 = _mm256_permute2x128_si256::<0x20>(l, h);
                let w23 = _mm256_permute2x128_si256::<0x31>(l, h);
                out = [lo(w01), lo(w23), hi(w01), hi(w23)];
            }
        }
        std::array::from_fn(|v| out[v])
    }

    /// Adds the lanes of `s` that belong to the same block of a compact tail of `T` blocks
    /// (lane `k` to block `k % T`): lane `b < T` of the result is block `b`'s sum.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn tail_sums_256<const T: usize>(mut s: __m256i) -> __m256i {
        if T == 1 {
            s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0xB1>(s));
        }
        if T <= 2 {
            s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0x4E>(s));
        }
        _mm256_add_epi32(s, _mm256_permute4x64_epi64::<0x4E>(s))
    }

    /// [`tail_sums_256`] in each 256-bit half of `s`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    #[inline]
    pub(crate) fn tail_sums_halves<const T: usize>(mut s: __m512i) -> __m512i {
        if T == 1 {
            s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0xB1>(s));
        }
        if T <= 2 {
            s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0x4E>(s));
        }
        // 128-bit lanes (1, 0, 3, 2): the halves of each 256-bit half exchanged.
        _mm512_add_epi32(s, _mm512_shuffle_i64x2::<0xB1>(s, s))
    }

    /// `_mm256_madd_epi16(v, 1)`: adds adjacent i16 pairs into i32 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(crate) fn pairs_to_i32(v: __m256i) -> __m256i {
        _mm256_madd_epi16(v, _mm256_set1_epi16(1))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reductions_match_scalar() {
            if !crate::ops::cpu::Isa::Avx2.available() {
                return;
            }
            let a: [f32; 8] = [1e8, 1.0, -1e8, 3.5, 0.25, -7.0, 1e-3, 2.0];
            let iv: [[i32; 8]; 8] =
                std::array::from_fn(|i| std::array::from_fn(|l| (i * 100 + l * 37) as i32 - 300));
            let hv: [[i16; 16]; 8] = std::array::from_fn(|i| {
                std::array::from_fn(|l| ((i * 7919 + l * 104_729) % 8191) as i16 - 4095)
            });
            // SAFETY: AVX2/FMA/F16C are available (checked above); every load reads exactly one
            // 32-byte array and the store writes one.
            unsafe {
                let v = _mm256_loadu_ps(a.as_ptr());
                assert_eq!(hsum8(v).to_bits(), super::super::hsum8_scalar(&a).to_bits());
                assert_eq!(hmax8(v), 1e8);
                let vs: [__m256i; 8] = std::array::from_fn(|i| _mm256_loadu_si256(iv[i].as_ptr().cast()));
                let hs: [__m256i; 8] = std::array::from_fn(|i| _mm256_loadu_si256(hv[i].as_ptr().cast()));
                let (mut o32, mut o16) = ([0i32; 8], [0i32; 8]);
                _mm256_storeu_si256(o32.as_mut_ptr().cast(), reduce8_i32(&vs));
                _mm256_storeu_si256(o16.as_mut_ptr().cast(), reduce8_i16(&hs));
                let tr = transpose8x32(&vs);
                for (c, t) in tr.iter().enumerate() {
                    let mut lanes = [0i32; 8];
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), *t);
                    assert_eq!(lanes, std::array::from_fn(|l| iv[l][c]), "transpose lane {c}");
                }
                for i in 0..8 {
                    assert_eq!(o32[i], iv[i].iter().sum::<i32>());
                    assert_eq!(hsum8_i32(vs[i]), iv[i].iter().sum::<i32>());
                    assert_eq!(o16[i], hv[i].iter().map(|&h| h as i32).sum::<i32>());
                }
            }
        }
    }
}
