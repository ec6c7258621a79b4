// Encoder self-attention (bidirectional), flash style, f32 — the CUDA twin of
// src/vision/attention.rs (`medregion::vision::attention`).
//
//   out[b, i, h] = Σ_j softmax_j(q[b,i,h] · k[b,j,h] / √hd) · v[b,j,h]
//
// Layout (the CPU's): q, k, v, out are [B·T, D] row-major, D = n_heads·hd, head h in columns
// h·hd..(h+1)·hd (what the q/k/v projections produce; no transposes).
//
// This file also holds the tile engine (`att_flash_block`) that kernels/kv_attention.cu reuses for
// causal prefill: that file defines MR_ATTENTION_ENGINE_ONLY and includes this one, so the
// encoder kernels below are compiled into this family only.
//
// Engine (one block = 64 query rows of one head, 256 threads as 16 × 16):
//   - the block's queries, multiplied by `scale`, are stored transposed in shared memory
//     (qt[d][r]); keys are walked in tiles of ATT_BK = 64 (the CPU's KEY_BLOCK), each tile stored
//     transposed (kt[d][j]) and then, in the same buffer, its values (vs[j][d]);
//   - thread (ty, tx) computes the 4 × 4 scores of rows 4ty..4ty+3 and keys 4tx..4tx+3, the
//     online-softmax step of those rows (max over the tile through 16-lane shuffles), writes the
//     weights to shared memory (pt[j][r]) and updates its 4 × hd/16 outputs (rows 4ty.., columns
//     4tx + 64c..);
//   - the row sums are taken from pt by 4 threads per row, in the CPU's `sum8` order.
//
// Numerics: the same operations in the same order as the CPU kernel (every product that the CPU
// fuses is an `fmaf` here, every other one a separate rounding: the build uses --fmad=false), so
// the encoder kernels give the CPU's bits exactly:
//   q' = q·scale;  s_j = fma chain over d = 0..hd-1 of q'_d·k_jd, starting from 0;
//   per tile of 64 keys: m' = max(m, max_j s_j); c = exp(m − m'); p_j = exp(s_j − m') (0 for
//   keys past the end); l = fma(l, c, sum8(p)); o = o·c, then o = fma(p_j, v_j, o) for j in order;
//   finally out = o · (1/l);
// with `exp` the CPU's own polynomial (vision::math::exp, ported below bit for bit) and `sum8`
// the CPU's 8-lane sum ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)), lane l summing p_l, p_{l+8}, ….
#include "common.cuh"

#define ATT_BQ 64                 // query rows per block
#define ATT_BK 64                 // keys per tile (= vision::attention::KEY_BLOCK)
#define ATT_THREADS 256           // 16 (ty: rows) × 16 (tx: keys / columns)
#define ATT_QS (ATT_BQ + 4)       // row stride of qt and pt (16-byte aligned rows)
#define ATT_KS (ATT_BK + 4)       // row stride of kt
#ifndef ATT_UNROLL_S
#define ATT_UNROLL_S 2            // unrolling of the score loop (over d)
#endif
#ifndef ATT_UNROLL_PV
#define ATT_UNROLL_PV 2           // unrolling of the value loop (over the tile's keys)
#endif
#define ATT_NEG_INF (-__int_as_float(0x7f800000))

// Shared-memory plan of the engine for head width HD, in floats (dynamic shared memory).
template <int HD>
struct AttSmem {
    static constexpr int QT = HD * ATT_QS;                                    // qt[HD][QS]
    static constexpr int KV = (HD * ATT_KS > ATT_BK * HD) ? HD * ATT_KS : ATT_BK * HD;  // kt or vs
    static constexpr int PT = ATT_BK * ATT_QS;                                // pt[BK][QS]
    // + corr_s, lsum_s (floats), lim_s (ints), out_s (pointers: 2 floats each, 8-byte aligned)
    static constexpr int FLOATS = QT + KV + PT + 3 * ATT_BQ + 2 * ATT_BQ;
    static constexpr int BYTES = FLOATS * 4;
};

// e^x exactly as vision::math::exp computes it in f32 (Cody–Waite reduction, degree-6 Taylor
// polynomial in Horner form with fused multiply-adds, 2^n built in the exponent bits; inputs
// clamped to [-87.3, 88.7]). Constants are the CPU's f32 values, given by their bits.
static __device__ __forceinline__ float att_exp(float x) {
    const float exp_min = __int_as_float(0xc2ae999a);  // -87.3f
    const float exp_max = __int_as_float(0x42b16666);  // 88.7f
    const float log2e = __int_as_float(0x3fb8aa3b);    // f32 LOG2_E
    const float magic = __int_as_float(0x4b400000);    // 1.5·2^23
    const float ln2_hi = __int_as_float(0x3f318000);   // 0.693_359_4f
    const float ln2_lo = __int_as_float(0xb95e8083);   // -2.121_944_4e-4f
    // f32::clamp: `if x < min { x = min } if x > max { x = max }`.
    if (x < exp_min) x = exp_min;
    if (x > exp_max) x = exp_max;
    const float n = (x * log2e + magic) - magic;  // two roundings (no fma), as on the CPU
    const float r = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, x));
    float p = __int_as_float(0x3ab60b61);          // 1/720 (f32 division, rounded)
    p = fmaf(p, r, __int_as_float(0x3c088889));    // 1/120
    p = fmaf(p, r, __int_as_float(0x3d2aaaab));    // 1/24
    p = fmaf(p, r, __int_as_float(0x3e2aaaab));    // 1/6
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const int ni = (n == n) ? (int)n : 0;  // an integer in [-126, 128]; NaN -> 0 like the CPU
    const int half = ni >> 1;
    const float s1 = __int_as_float((half + 127) << 23);
    const float s2 = __int_as_float((ni - half + 127) << 23);
    return p * s1 * s2;
}

static __device__ __forceinline__ float4 att_ld4(const float* p) {
    return *reinterpret_cast<const float4*>(p);
}

static __device__ __forceinline__ void att_st4(float* p, float4 v) {
    *reinterpret_cast<float4*>(p) = v;
}

// The flash-attention tile engine: 64 query rows (as the policy `pol` maps them) against the
// key segments of `pol`, written to the rows' outputs. All 256 threads of the block call it.
//
// Policy interface (a small struct of pointers and sizes, see EncoderRows and PrefillRows):
//   const float* q_row(int r)     query row r (< 64) of the block, hd floats, or nullptr (padding)
//   float* out_row(int r)         its output row, or nullptr
//   static constexpr int SEGMENTS key segments, walked in order (each one in tiles of 64 keys)
//   const float* seg_k(int s)     key 0 of segment s (key j at seg_k(s) + j·seg_stride(s))
//   const float* seg_v(int s)     value 0 of segment s (same stride)
//   long long seg_stride(int s)   floats between consecutive keys
//   int seg_len(int s)            keys of segment s that any row of the block may read
//   int row_lim(int s, int r)     row r attends to keys j < row_lim of segment s (≤ seg_len)
//
// Dynamic shared memory: AttSmem<HD>::BYTES. Deterministic: no atomics, fixed orders.
template <int HD, class Pol>
static __device__ __forceinline__ void att_flash_block(const Pol& pol, float scale, float* smem) {
    static_assert(HD % 64 == 0 && HD <= 128, "head width must be 64 or 128");
    constexpr int NC = HD / 64;  // float4 column groups per thread (columns 4tx + 64c)
    float* qt = smem;
    float* kv = qt + AttSmem<HD>::QT;
    float* pt = kv + AttSmem<HD>::KV;
    float* corr_s = pt + AttSmem<HD>::PT;
    float* lsum_s = corr_s + ATT_BQ;
    int* lim_s = reinterpret_cast<int*>(lsum_s + ATT_BQ);
    float** out_s = reinterpret_cast<float**>(lsum_s + 2 * ATT_BQ);

    const int tid = threadIdx.x;
    const int ty = tid >> 4, tx = tid & 15;
    const int sum_row = tid >> 2, sum_part = tid & 3;

    // Row bookkeeping goes to shared memory (fewer live registers in the tile loop).
    if (tid < ATT_BQ) out_s[tid] = pol.out_row(tid);
    // Queries, scaled (q·scale, one rounding, as the CPU), transposed: qt[d][r].
    for (int idx = tid; idx < ATT_BQ * (HD / 4); idx += ATT_THREADS) {
        const int r = idx % ATT_BQ, d4 = idx / ATT_BQ;
        const float* src = pol.q_row(r);
        const float4 x = src ? att_ld4(src + 4 * d4) : make_float4(0.f, 0.f, 0.f, 0.f);
        qt[(4 * d4 + 0) * ATT_QS + r] = x.x * scale;
        qt[(4 * d4 + 1) * ATT_QS + r] = x.y * scale;
        qt[(4 * d4 + 2) * ATT_QS + r] = x.z * scale;
        qt[(4 * d4 + 3) * ATT_QS + r] = x.w * scale;
    }

    float o[4][4 * NC];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int x = 0; x < 4 * NC; ++x) o[i][x] = 0.f;
    }
    float m[4] = {ATT_NEG_INF, ATT_NEG_INF, ATT_NEG_INF, ATT_NEG_INF};
    float lsum = 0.f;  // running denominator of row sum_row (same value in its 4 threads)

#pragma unroll 1
    for (int seg = 0; seg < Pol::SEGMENTS; ++seg) {
        const float* kb = pol.seg_k(seg);
        const float* vb = pol.seg_v(seg);
        const long long ks = pol.seg_stride(seg);
        const int n = pol.seg_len(seg);
        // Row limits of the segment (the previous tile loop ended with a barrier; the first
        // tile's barrier orders these stores before their use).
        if (tid < ATT_BQ) lim_s[tid] = pol.row_lim(seg, tid);

#pragma unroll 1
        for (int j0 = 0; j0 < n; j0 += ATT_BK) {
            const int cols = min(ATT_BK, n - j0);
            // Keys of the tile, transposed: kt[d][j] (zero past the segment's end).
            for (int idx = tid; idx < ATT_BK * (HD / 4); idx += ATT_THREADS) {
                const int j = idx % ATT_BK, d4 = idx / ATT_BK;
                const float4 x =
                    j < cols ? att_ld4(kb + (long long)(j0 + j) * ks + 4 * d4) : make_float4(0.f, 0.f, 0.f, 0.f);
                kv[(4 * d4 + 0) * ATT_KS + j] = x.x;
                kv[(4 * d4 + 1) * ATT_KS + j] = x.y;
                kv[(4 * d4 + 2) * ATT_KS + j] = x.z;
                kv[(4 * d4 + 3) * ATT_KS + j] = x.w;
            }
            __syncthreads();

            // s[i][c] = Σ_d q'[4ty+i][d] · k[4tx+c][d], an fma chain in order of d.
            float s[4][4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int c = 0; c < 4; ++c) s[i][c] = 0.f;
            }
#pragma unroll ATT_UNROLL_S
            for (int d = 0; d < HD; ++d) {
                const float4 qv = att_ld4(qt + d * ATT_QS + 4 * ty);
                const float4 kv4 = att_ld4(kv + d * ATT_KS + 4 * tx);
                const float qa[4] = {qv.x, qv.y, qv.z, qv.w};
                const float ka[4] = {kv4.x, kv4.y, kv4.z, kv4.w};
#pragma unroll
                for (int i = 0; i < 4; ++i) {
#pragma unroll
                    for (int c = 0; c < 4; ++c) s[i][c] = fmaf(qa[i], ka[c], s[i][c]);
                }
            }

            // Online-softmax step of the block's rows for this tile.
            const int4 lv = *reinterpret_cast<const int4*>(lim_s + 4 * ty);
            const int lim[4] = {lv.x, lv.y, lv.z, lv.w};
            float corr[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float mx = ATT_NEG_INF;
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    if (j0 + 4 * tx + c >= lim[i]) s[i][c] = ATT_NEG_INF;
                    mx = fmaxf(mx, s[i][c]);
                }
                // Max over the 16 threads of the row (lanes 0-15 or 16-31 of the warp).
#pragma unroll
                for (int off = 8; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(MR_FULL_MASK, mx, off));
                const float mn = fmaxf(m[i], mx);
                // A row with no key yet (padding rows only) keeps finite arithmetic.
                const float mu = (mn == ATT_NEG_INF) ? 0.f : mn;
                corr[i] = att_exp(m[i] - mu);
#pragma unroll
                for (int c = 0; c < 4; ++c) s[i][c] = (j0 + 4 * tx + c < lim[i]) ? att_exp(s[i][c] - mu) : 0.f;
                m[i] = mn;
                // o = o·corr now (the same operation as the CPU's, before the tile's values).
#pragma unroll
                for (int x = 0; x < 4 * NC; ++x) o[i][x] = o[i][x] * corr[i];
            }
#pragma unroll
            for (int c = 0; c < 4; ++c)
                att_st4(pt + (4 * tx + c) * ATT_QS + 4 * ty, make_float4(s[0][c], s[1][c], s[2][c], s[3][c]));
            if (tx == 0) {
#pragma unroll
                for (int i = 0; i < 4; ++i) corr_s[4 * ty + i] = corr[i];
            }
            __syncthreads();  // pt and corr_s written; every thread is done with kt

            // Row sums in sum8's order: this thread sums lanes sum_part and sum_part + 4 of row
            // sum_row (lane l: p_l + p_{l+8} + … + p_{l+56}, from 0), then the 4 threads of the
            // row combine (a_t + a_{t+4}) with xor-shuffles: ((t0 + t2) + (t1 + t3)).
            {
                float a0 = 0.f, a1 = 0.f;
#pragma unroll
                for (int k = 0; k < ATT_BK / 8; ++k) {
                    a0 += pt[(sum_part + 8 * k) * ATT_QS + sum_row];
                    a1 += pt[(sum_part + 4 + 8 * k) * ATT_QS + sum_row];
                }
                const float pair = a0 + a1;
                const float u = pair + __shfl_xor_sync(MR_FULL_MASK, pair, 2);
                const float tot = u + __shfl_xor_sync(MR_FULL_MASK, u, 1);
                lsum = fmaf(lsum, corr_s[sum_row], tot);
            }
            // Values of the tile: vs[j][d] (row-major, in the buffer that held kt).
            for (int idx = tid; idx < ATT_BK * (HD / 4); idx += ATT_THREADS) {
                const int j = idx / (HD / 4), d4 = idx % (HD / 4);
                const float4 x =
                    j < cols ? att_ld4(vb + (long long)(j0 + j) * ks + 4 * d4) : make_float4(0.f, 0.f, 0.f, 0.f);
                att_st4(kv + j * HD + 4 * d4, x);
            }
            __syncthreads();

            // o = fma(p_j, v_j, o) for the tile's keys in order (o was rescaled above).
#pragma unroll ATT_UNROLL_PV
            for (int j = 0; j < cols; ++j) {
                const float4 pv = att_ld4(pt + j * ATT_QS + 4 * ty);
                const float pa[4] = {pv.x, pv.y, pv.z, pv.w};
#pragma unroll
                for (int c = 0; c < NC; ++c) {
                    const float4 vv = att_ld4(kv + j * HD + 64 * c + 4 * tx);
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        o[i][4 * c + 0] = fmaf(pa[i], vv.x, o[i][4 * c + 0]);
                        o[i][4 * c + 1] = fmaf(pa[i], vv.y, o[i][4 * c + 1]);
                        o[i][4 * c + 2] = fmaf(pa[i], vv.z, o[i][4 * c + 2]);
                        o[i][4 * c + 3] = fmaf(pa[i], vv.w, o[i][4 * c + 3]);
                    }
                }
            }
            __syncthreads();  // before the next tile overwrites kv, pt, corr_s
        }
    }

    if (sum_part == 0) lsum_s[sum_row] = lsum;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float* dst = out_s[4 * ty + i];
        if (dst) {
            const float inv = 1.0f / lsum_s[4 * ty + i];
#pragma unroll
            for (int c = 0; c < NC; ++c)
                att_st4(dst + 64 * c + 4 * tx, make_float4(o[i][4 * c] * inv, o[i][4 * c + 1] * inv,
                                                            o[i][4 * c + 2] * inv, o[i][4 * c + 3] * inv));
        }
    }
}

#ifndef MR_ATTENTION_ENGINE_ONLY

// Rows of one (sequence b, head h) block of the encoder: queries q0..q0+63 of the sequence, one
// key segment (the sequence's T keys, every row sees all of them).
template <int HD>
struct EncoderRows {
    const float* q;
    const float* k;
    const float* v;
    float* out;
    int n_tokens, width, q0;
    long long base;  // (b·T)·D + h·hd: element of token 0, column 0 of the head
    static constexpr int SEGMENTS = 1;
    __device__ const float* q_row(int r) const {
        return q0 + r < n_tokens ? q + base + (long long)(q0 + r) * width : nullptr;
    }
    __device__ float* out_row(int r) const {
        return q0 + r < n_tokens ? out + base + (long long)(q0 + r) * width : nullptr;
    }
    __device__ const float* seg_k(int) const { return k + base; }
    __device__ const float* seg_v(int) const { return v + base; }
    __device__ long long seg_stride(int) const { return width; }
    __device__ int seg_len(int) const { return n_tokens; }
    __device__ int row_lim(int, int r) const { return q0 + r < n_tokens ? n_tokens : 0; }
};

template <int HD>
static __device__ __forceinline__ void attention_encoder(const float* __restrict__ q, const float* __restrict__ k,
                                                         const float* __restrict__ v, float* __restrict__ out,
                                                         float scale, int n_tokens, int n_heads) {
    extern __shared__ __align__(16) float att_smem[];
    EncoderRows<HD> rows;
    rows.q = q;
    rows.k = k;
    rows.v = v;
    rows.out = out;
    rows.n_tokens = n_tokens;
    rows.width = n_heads * HD;
    rows.q0 = blockIdx.x * ATT_BQ;
    rows.base = (long long)blockIdx.z * n_tokens * rows.width + (long long)blockIdx.y * HD;
    att_flash_block<HD>(rows, scale, att_smem);
}

// attention_encoder_hd64 / attention_encoder_hd128: encoder self-attention for heads of 64 /
// 128 values (twin of vision::attention; bit-identical to it, see the top of the file).
//
//   q, k, v   [n_seq · n_tokens, n_heads · HD] f32, row-major (head h in columns h·HD..)
//   out       [n_seq · n_tokens, n_heads · HD] f32 (every element written)
//   scale     1 / √HD computed in f32 as the CPU does (`1.0 / (hd as f32).sqrt()`)
//   n_tokens  T ≥ 1; n_heads ≥ 1 (n_seq is the grid's z)
//
// Launch: grid (ceil(T / 64), n_heads, n_seq), block 256, dynamic shared memory
// AttSmem<HD>::BYTES (53 504 B for HD 64, 88 320 B for HD 128: above the 48 KiB default, so the
// launcher raises CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES). Every pointer 16-byte aligned.
// Occupancy: 3 blocks (24 warps) per SM for HD 64, 2 (16 warps) for HD 128.
extern "C" __global__ void __launch_bounds__(ATT_THREADS, 3)
    attention_encoder_hd64(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                           float* __restrict__ out, float scale, int n_tokens, int n_heads) {
    attention_encoder<64>(q, k, v, out, scale, n_tokens, n_heads);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    attention_encoder_hd128(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                            float* __restrict__ out, float scale, int n_tokens, int n_heads) {
    attention_encoder<128>(q, k, v, out, scale, n_tokens, n_heads);
}

#endif  // MR_ATTENTION_ENGINE_ONLY
