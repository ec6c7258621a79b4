// Next-token selection on the device, for up to a batch of sequences (one logits row each), so a
// captured decode graph needs no host round trip. CPU twin: `llm::sampling` (src/llm/sampling.rs):
// `argmax`, and `Sampler::sample` = repetition penalty → ban → greedy, or temperature → top-k →
// softmax → top-p → inverse-CDF draw with one uniform number `u` per token.
//
// Kernels (run in this order for one step, each optional except the selection):
//   sampling_penalty_f32   repetition penalty from a per-sequence "seen" mask   (bit-identical)
//   sampling_ban_f32       logits of banned ids ← −inf                          (bit-identical)
//   sampling_argmax_f32    greedy: the largest logit, lowest id on a tie        (identical ids)
//   sampling_top_p_f32     temperature / top-k / top-p draw given u ∈ [0, 1) from device memory
//   sampling_observe       seen[s, token[s]] ← 1 (the CPU's `observe` of the chosen token)
//
// Errors cannot be returned from a graph, so the selection kernels write token −1 when the CPU
// would have failed or the inputs are unusable: a NaN or +inf logit (the CPU sampler rejects
// non-finite logits), no finite logit at all, or (top-p) a scaled logit overflowing to +inf
// (temperature so small that logit/temperature > f32 max; the CPU would produce NaN weights),
// or u outside [0, 1). −inf logits are allowed (banned ids) and never chosen.
#include "common.cuh"

#define SP_INF_BITS 0x7f800000

static __device__ __forceinline__ float sp_ninf() { return -__int_as_float(SP_INF_BITS); }

// Whether x is NaN or +inf (the values that make a selection kernel write −1).
static __device__ __forceinline__ bool sp_broken(float x) {
    return x != x || x == __int_as_float(SP_INF_BITS);
}

// ------------------------------------------------------------------------------------------------
// Repetition penalty, ban, observe.

// sampling_penalty_f32: for every sequence s and id j with seen[s·seen_ld + j] != 0:
//   l ← l / penalty if l > 0, else l · penalty       (CPU: `Sampler::sample`, same f32 ops)
//   logits [n_seqs rows, stride ld] f32, in place; seen [n_seqs rows, stride seen_ld] uint8
//   vocab: ids per row; penalty: finite, > 0
// Launch: grid (ceil(vocab / 256), n_seqs, 1); block (256, 1, 1); no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256)
sampling_penalty_f32(float* __restrict__ logits, const uint8_t* __restrict__ seen, int vocab,
                     int ld, int seen_ld, float penalty) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= vocab) return;
    const long long s = blockIdx.y;
    if (seen[s * seen_ld + j] == 0) return;
    float* l = logits + s * ld + j;
    const float v = *l;
    *l = v > 0.0f ? v / penalty : v * penalty;
}

// sampling_ban_f32: logits[s, ids[i]] ← −inf for every sequence s and every i < n_ids with
// 0 ≤ ids[i] < vocab (other ids are ignored, as `Sampler::ban` ignores ids outside the vocabulary).
//   logits [n_seqs rows, stride ld] f32, in place; ids [n_ids] int32 (device)
// Launch: grid (ceil(n_ids / 256), n_seqs, 1); block (256, 1, 1); no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256)
sampling_ban_f32(float* __restrict__ logits, int ld, int vocab, const int* __restrict__ ids,
                 int n_ids) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ids) return;
    const int id = ids[i];
    if (id < 0 || id >= vocab) return;
    logits[(long long)blockIdx.y * ld + id] = sp_ninf();
}

// sampling_observe: seen[s·seen_ld + tokens[s]] ← 1 for s < n_seqs when 0 ≤ tokens[s] < vocab
// (a −1 token from a failed selection is skipped).
//   seen [n_seqs rows, stride seen_ld] uint8; tokens [n_seqs] int32 (device)
// Launch: grid (ceil(n_seqs / 32), 1, 1); block (32, 1, 1); no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(32)
sampling_observe(uint8_t* __restrict__ seen, int seen_ld, const int* __restrict__ tokens,
                 int n_seqs, int vocab) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n_seqs) return;
    const int t = tokens[s];
    if (t >= 0 && t < vocab) seen[(long long)s * seen_ld + t] = 1;
}

// ------------------------------------------------------------------------------------------------
// Visiting a logits row.

// Calls f(x · scale, j) for every j < vocab of `row`, thread-strided: up to 3 scalar loads until
// the row is 16-byte aligned (rows of an odd vocabulary such as 128259 are not), float4 loads for
// the body, then a scalar tail. Every thread visits its ids in increasing order.
template <typename F>
static __device__ __forceinline__ void sp_for_each(const float* __restrict__ row, int vocab,
                                                   float scale, F f) {
    const unsigned long long addr = (unsigned long long)row;
    if ((addr & 3ull) != 0) {  // not even float-aligned: all scalar
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) f(row[j] * scale, j);
        return;
    }
    int pre = (int)(((16ull - (addr & 15ull)) & 15ull) >> 2);  // 0..3 floats up to alignment
    if (pre > vocab) pre = vocab;
    if ((int)threadIdx.x < pre) f(row[threadIdx.x] * scale, (int)threadIdx.x);
    const int n4 = (vocab - pre) >> 2;
    const float4* r4 = reinterpret_cast<const float4*>(row + pre);
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 v = r4[i];
        const int j = pre + (i << 2);
        f(v.x * scale, j);
        f(v.y * scale, j + 1);
        f(v.z * scale, j + 2);
        f(v.w * scale, j + 3);
    }
    for (int j = pre + (n4 << 2) + threadIdx.x; j < vocab; j += blockDim.x) f(row[j] * scale, j);
}

// ------------------------------------------------------------------------------------------------
// Greedy.

// Whether (v1, i1) beats (v2, i2): larger value, then lower id (the CPU `argmax` rule).
static __device__ __forceinline__ bool sp_better(float v1, int i1, float v2, int i2) {
    return v1 > v2 || (v1 == v2 && i1 < i2);
}

// sampling_argmax_f32: tokens[s] = the id of the largest logit of row s, the lowest id on a tie
// (CPU: `sampling::argmax`); −1 when the row has a NaN or +inf logit or no finite logit (see
// the file comment; −inf logits are skipped). Deterministic: (value, id) is a total order, so the
// fixed-shape reduction gives the same id whatever the visiting order. −0.0 and +0.0 tie (as on
// the CPU, where neither is `>` the other), so the lower id wins.
//   logits [n_seqs rows, stride ld ≥ vocab] f32; tokens [n_seqs] int32 (device)
// Launch: grid (n_seqs, 1, 1); block (1024, 1, 1) (any multiple of 32 ≤ 1024 works); no dynamic
// shared memory. One block per sequence; float4 loads (after up to 3 scalar ones to align).
extern "C" __global__ void __launch_bounds__(1024)
sampling_argmax_f32(const float* __restrict__ logits, int vocab, int ld, int* __restrict__ tokens) {
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const float* row = logits + (long long)blockIdx.x * ld;
    float bv = sp_ninf();
    int bi = 0x7fffffff;  // "none yet"
    int bad = 0;
    sp_for_each(row, vocab, 1.0f, [&](float x, int j) {
        if (sp_broken(x)) {
            bad = 1;
        } else if (x != sp_ninf() && sp_better(x, j, bv, bi)) {
            bv = x;
            bi = j;
        }
    });
    // x · 1.0f is x for every finite x, ±inf and NaN (IEEE), so the values compared are the logits.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(MR_FULL_MASK, bv, o);
        const int oi = __shfl_xor_sync(MR_FULL_MASK, bi, o);
        if (sp_better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) {
        s_v[warp] = bv;
        s_i[warp] = bi;
    }
    bad = __syncthreads_or(bad);
    if (warp == 0) {
        bv = lane < warps ? s_v[lane] : sp_ninf();
        bi = lane < warps ? s_i[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(MR_FULL_MASK, bv, o);
            const int oi = __shfl_xor_sync(MR_FULL_MASK, bi, o);
            if (sp_better(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) tokens[blockIdx.x] = (bad || bi == 0x7fffffff) ? -1 : bi;
    }
}

// ------------------------------------------------------------------------------------------------
// Temperature / top-k / top-p.
//
// The CPU rule (`Sampler::draw`), with x_j = logit_j · (1 / temperature) (f32) and the ids
// sorted by (x descending, id ascending) (`total_cmp`, so −0.0 sorts below +0.0):
//   m = max x; p_j = exp((x_j − m) as f64);
//   keep the first k (top-k, 0 = off); T = Σ kept p;
//   top-p < 1: nucleus = the shortest sorted prefix whose running sum reaches top_p · T; N = its sum
//   pick the first id of the nucleus whose running sum exceeds u · N.
// Both steps are "find the first id, in sorted order, whose running sum (of p, or of 1 for top-k)
// reaches a threshold". This kernel answers them without sorting the vocabulary:
//   * weights in fixed point: q_j = round(p_j · 2^44) as u64 (p from CUDA's f64 exp, ≤ 1 ulp from
//     glibc's; q_j = 0 once x_j − m < −32, where p · 2^44 < 0.23). Integer sums are exact and
//     associative, so shared-memory atomics give deterministic totals;
//   * ids are keyed by a 52-bit integer that sorts like the CPU: (~ordered_bits(x) << 20) | id,
//     ordered_bits mapping f32 bits to an unsigned integer with the float order;
//   * a radix select on that key: a histogram (count and mass per bin) of the key's next digit
//     (digits of 11, 11, 10 bits of the value part, then 10, 10 bits of the id) over the ids that
//     share the prefix found so far; a block scan finds the bin where the running sum reaches the
//     threshold; when that bin holds ≤ 1024 ids they are gathered into shared memory, sorted by
//     key (bitonic) and scanned exactly; otherwise the next digit refines it (at most 5 levels; a
//     last-level bin holds one id, so the search always ends);
//   * integer thresholds: nucleus: first running sum ≥ ceil(top_p · T); draw: first running sum
//     ≥ floor(u · N) + 1 (i.e. > u · N), both computed in f64 from the u64 sums.
// Relation to the CPU: the same rule on the same sorted order, with each p_j rounded to a multiple
// of 2^−44 (relative to the largest, p = 1) instead of summed in f64. The chosen id is the CPU's
// unless top_p · T or u · N falls within the accumulated rounding (|Δ| ≤ (#ids with q > 0) · 2^−45,
// typically far less, relative to T ≥ 1) of a running-sum boundary: for u uniform, a mismatch
// probability below ~1e−8 per draw. Ids with q = 0 (x < m − 32) are never drawn (their CPU
// probability is < 1.3e−14 each). One difference in kind: when u · N rounds up to N, the CPU falls
// back to the nucleus's last id and this kernel to the last id with q > 0 in it (the same id unless
// the nucleus ends in q = 0 ids, which needs top-k to cut inside them).
// Cost: one block per sequence, ≥ 3 passes over the row (max; histogram with one f64 exp per id
// with x ≥ m − 32; one gather pass per search landing in a new bin), all from L2 after the first.

#define SP_THREADS 1024
#define SP_BINS 2048  // = 2 · SP_THREADS (each thread scans two bins)
#define SP_CAP 1024   // = SP_THREADS (the bitonic sort uses one thread per entry)
#define SP_ID_BITS 20
#define SP_LEVELS 5
#define SP_NONE 0xffffffffffffffffull

__constant__ int sp_shift[SP_LEVELS] = {41, 30, 20, 10, 0};
__constant__ int sp_bits[SP_LEVELS] = {11, 11, 10, 10, 10};

struct SpShared {
    unsigned long long h_mass[SP_BINS];  // histogram: Σ q per bin
    unsigned int h_cnt[SP_BINS];         // histogram: ids per bin
    unsigned long long c_key[SP_CAP];    // gathered candidates (sorted by key)
    unsigned long long c_mass[SP_CAP];
    unsigned long long warp_a[32], warp_b[32];  // block-scan scratch
    unsigned long long tot;
    // Result of the last bin / list search.
    unsigned long long f_before_mass, f_before_cnt, f_key, f_mass, f_cnt;
    int f_bin;
    int c_n;
    // What the histogram and the candidate list currently hold (to reuse them across searches).
    int hist_level;
    unsigned long long hist_prefix;
    int list_shift;
    unsigned long long list_prefix;
    float red[32];
};

// The sort key of (x, id): ascending key = descending x (f32 total order), then ascending id.
static __device__ __forceinline__ unsigned long long sp_key(float x, int j) {
    const uint32_t b = __float_as_uint(x);
    const uint32_t asc = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)(~asc) << SP_ID_BITS) | (unsigned int)j;
}

// The fixed-point weight of x given the maximum m (finite): round(exp((x − m) as f64) · 2^44).
static __device__ __forceinline__ unsigned long long sp_q(float x, float m) {
    const float d = x - m;  // f32, as the CPU's `(work[id] - max) as f64`; −inf for −inf
    if (!(d >= -32.0f)) return 0;
    return __double2ull_rn(exp((double)d) * 17592186044416.0);  // · 2^44
}

// Exclusive prefix sum of one u64 per thread over the block (warp shuffles, then the warp
// totals); `scratch` is 32 u64 of shared memory; *total gets the block total. Synchronizes.
static __device__ __forceinline__ unsigned long long sp_excl_scan(unsigned long long v,
                                                                  unsigned long long* scratch,
                                                                  unsigned long long* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    unsigned long long incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long t = __shfl_up_sync(MR_FULL_MASK, incl, o);
        if (lane >= o) incl += t;
    }
    __syncthreads();
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        const unsigned long long w = lane < warps ? scratch[lane] : 0ull;
        unsigned long long wi = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const unsigned long long t = __shfl_up_sync(MR_FULL_MASK, wi, o);
            if (lane >= o) wi += t;
        }
        scratch[lane] = wi - w;
        if (lane == 31 && total != nullptr) *total = wi;
    }
    __syncthreads();
    return scratch[warp] + incl - v;
}

// Histogram (count, mass) of digit `level` over the ids whose key agrees with `prefix` above it.
static __device__ __forceinline__ void sp_build_hist(SpShared& sh, const float* __restrict__ row, int vocab,
                                     float inv_t, float m, int level, unsigned long long prefix) {
    __syncthreads();  // earlier readers of the histogram are done
    for (int b = threadIdx.x; b < SP_BINS; b += blockDim.x) {
        sh.h_mass[b] = 0;
        sh.h_cnt[b] = 0;
    }
    if (threadIdx.x == 0) {
        sh.hist_level = level;
        sh.hist_prefix = prefix;
    }
    __syncthreads();
    const int shift = sp_shift[level], bits = sp_bits[level];
    const unsigned int mask = (1u << bits) - 1u;
    sp_for_each(row, vocab, inv_t, [&](float x, int j) {
        const unsigned long long key = sp_key(x, j);
        if ((key >> (shift + bits)) != prefix) return;
        const int bin = (int)((key >> shift) & mask);
        atomicAdd(&sh.h_cnt[bin], 1u);
        const unsigned long long q = sp_q(x, m);
        if (q != 0) atomicAdd(&sh.h_mass[bin], q);
    });
    __syncthreads();
}

// The bin where the running sum (over bins in key order) of the metric first reaches t
// (1 ≤ t ≤ the histogram's total): sh.f_bin (−1 if none), and both metrics' sums over the bins
// before it (sh.f_before_mass, sh.f_before_cnt). Needs blockDim.x == SP_BINS / 2.
static __device__ __forceinline__ void sp_find_bin(SpShared& sh, bool by_mass, unsigned long long t) {
    __syncthreads();
    if (threadIdx.x == 0) sh.f_bin = -1;
    const int b0 = threadIdx.x * 2;
    const unsigned long long m0 = sh.h_mass[b0], m1 = sh.h_mass[b0 + 1];
    const unsigned long long c0 = sh.h_cnt[b0], c1 = sh.h_cnt[b0 + 1];
    const unsigned long long em = sp_excl_scan(m0 + m1, sh.warp_a, nullptr);
    const unsigned long long ec = sp_excl_scan(c0 + c1, sh.warp_b, nullptr);
    const unsigned long long e = by_mass ? em : ec;
    const unsigned long long v0 = by_mass ? m0 : c0, v1 = by_mass ? m1 : c1;
    if (e < t && e + v0 >= t) {
        sh.f_bin = b0;
        sh.f_before_mass = em;
        sh.f_before_cnt = ec;
    } else if (e + v0 < t && e + v0 + v1 >= t) {
        sh.f_bin = b0 + 1;
        sh.f_before_mass = em + m0;
        sh.f_before_cnt = ec + c0;
    }
    __syncthreads();
}

// Gathers the ids whose key >> shift == full (at most SP_CAP of them: the caller checked the
// bin's count) into sh.c_key / sh.c_mass and sorts them by key (bitonic; deterministic since
// keys are unique, whatever order the atomic slots gave).
static __device__ __forceinline__ void sp_gather(SpShared& sh, const float* __restrict__ row, int vocab,
                                 float inv_t, float m, int shift, unsigned long long full) {
    __syncthreads();
    if (threadIdx.x == 0) {
        sh.c_n = 0;
        sh.list_shift = shift;
        sh.list_prefix = full;
    }
    __syncthreads();
    sp_for_each(row, vocab, inv_t, [&](float x, int j) {
        const unsigned long long key = sp_key(x, j);
        if ((key >> shift) != full) return;
        const int slot = atomicAdd(&sh.c_n, 1);
        if (slot < SP_CAP) {
            sh.c_key[slot] = key;
            sh.c_mass[slot] = sp_q(x, m);
        }
    });
    __syncthreads();
    const int n = sh.c_n < SP_CAP ? sh.c_n : SP_CAP;
    int np = 1;
    while (np < n) np <<= 1;
    for (int i = n + threadIdx.x; i < np; i += blockDim.x) {
        sh.c_key[i] = SP_NONE;
        sh.c_mass[i] = 0;
    }
    __syncthreads();
    for (int k = 2; k <= np; k <<= 1) {
        for (int jj = k >> 1; jj > 0; jj >>= 1) {
            for (int i = threadIdx.x; i < np; i += blockDim.x) {
                const int ixj = i ^ jj;
                if (ixj > i) {
                    const unsigned long long a = sh.c_key[i], b = sh.c_key[ixj];
                    const bool ascending = (i & k) == 0;
                    if ((a > b) == ascending) {
                        sh.c_key[i] = b;
                        sh.c_key[ixj] = a;
                        const unsigned long long ma = sh.c_mass[i];
                        sh.c_mass[i] = sh.c_mass[ixj];
                        sh.c_mass[ixj] = ma;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// In the sorted candidate list: the first entry where the running sum of the metric reaches t
// (relative to the list start): sh.f_key (SP_NONE if none), and its running sums of mass and
// count (inclusive, relative): sh.f_mass, sh.f_cnt. Needs blockDim.x == SP_CAP.
static __device__ __forceinline__ void sp_find_in_list(SpShared& sh, bool by_mass, unsigned long long t) {
    __syncthreads();
    if (threadIdx.x == 0) sh.f_key = SP_NONE;
    const int n = sh.c_n < SP_CAP ? sh.c_n : SP_CAP;
    const int i = threadIdx.x;
    const unsigned long long mi = i < n ? sh.c_mass[i] : 0ull;
    const unsigned long long em = sp_excl_scan(mi, sh.warp_a, nullptr);
    const unsigned long long v = by_mass ? mi : (i < n ? 1ull : 0ull);
    const unsigned long long e = by_mass ? em : (unsigned long long)i;
    if (i < n && e < t && e + v >= t) {
        sh.f_key = sh.c_key[i];
        sh.f_mass = em + mi;
        sh.f_cnt = (unsigned long long)i + 1;
    }
    __syncthreads();
}

// The first id in sorted order whose running sum of the metric (q, or 1 per id) reaches t
// (1 ≤ t ≤ the row's total): sh.f_key (SP_NONE if none) and its absolute inclusive running sums
// sh.f_mass, sh.f_cnt.
static __device__ __forceinline__ void sp_search(SpShared& sh, const float* __restrict__ row, int vocab,
                                 float inv_t, float m, bool by_mass, unsigned long long t) {
    unsigned long long before_m = 0, before_c = 0, prefix = 0;
    for (int level = 0; level < SP_LEVELS; ++level) {
        if (!(sh.hist_level == level && sh.hist_prefix == prefix))
            sp_build_hist(sh, row, vocab, inv_t, m, level, prefix);
        sp_find_bin(sh, by_mass, t - (by_mass ? before_m : before_c));
        const int b = sh.f_bin;
        if (b < 0) break;
        before_m += sh.f_before_mass;
        before_c += sh.f_before_cnt;
        const unsigned long long full = (prefix << sp_bits[level]) | (unsigned long long)b;
        const unsigned int cnt = sh.h_cnt[b];
        if (cnt <= SP_CAP) {
            const int shift = sp_shift[level];
            if (!(sh.list_shift == shift && sh.list_prefix == full))
                sp_gather(sh, row, vocab, inv_t, m, shift, full);
            sp_find_in_list(sh, by_mass, t - (by_mass ? before_m : before_c));
            if (threadIdx.x == 0 && sh.f_key != SP_NONE) {
                sh.f_mass += before_m;
                sh.f_cnt += before_c;
            }
            __syncthreads();
            return;
        }
        prefix = full;
    }
    __syncthreads();
    if (threadIdx.x == 0) sh.f_key = SP_NONE;
    __syncthreads();
}

// sampling_top_p_f32: tokens[s] = the id drawn from row s by the CPU rule above, given u[s].
//   logits [n_seqs rows, stride ld ≥ vocab] f32 (after penalty and ban; not modified)
//   vocab: 1 ≤ vocab < 2^20; temperature: finite, > 0 (greedy is sampling_argmax_f32)
//   top_k: keep the k most likely (0 or ≥ vocab = off); top_p ∈ (0, 1] (1 = off)
//   u [n_seqs] f64 (device): one uniform number in [0, 1) per sequence (the CPU's
//     `SplitMix64::next_f64`); tokens [n_seqs] int32 (device), −1 on the errors listed at the top
// Launch: grid (n_seqs, 1, 1); block (1024, 1, 1) exactly; ~42 KB static shared memory, no
// dynamic shared memory.
extern "C" __global__ void __launch_bounds__(SP_THREADS, 1)
sampling_top_p_f32(const float* __restrict__ logits, int vocab, int ld, float temperature,
                   int top_k, float top_p, const double* __restrict__ u, int* __restrict__ tokens) {
    __shared__ SpShared sh;
    const int s = blockIdx.x;
    if (blockDim.x != SP_THREADS) {
        if (threadIdx.x == 0) tokens[s] = -1;
        return;
    }
    const float* row = logits + (long long)s * ld;
    const float inv_t = 1.0f / temperature;  // the CPU's `1.0 / p.temperature`

    // Pass 1: the maximum scaled logit, and whether any is NaN / +inf.
    float mx = sp_ninf();
    int bad = 0;
    sp_for_each(row, vocab, inv_t, [&](float x, int) {
        if (sp_broken(x))
            bad = 1;
        else
            mx = fmaxf(mx, x);
    });
    bad = __syncthreads_or(bad);
    mx = mr_block_max(mx, sh.red);
    const double uu = u[s];
    if (bad || !(mx > sp_ninf()) || !(uu >= 0.0 && uu < 1.0)) {
        if (threadIdx.x == 0) tokens[s] = -1;
        return;
    }
    if (threadIdx.x == 0) {
        sh.hist_level = -1;
        sh.list_shift = -1;
    }
    // Pass 2: the level-0 histogram over every id, and the total mass.
    sp_build_hist(sh, row, vocab, inv_t, mx, 0, 0ull);
    sp_excl_scan(sh.h_mass[2 * threadIdx.x] + sh.h_mass[2 * threadIdx.x + 1], sh.warp_a, &sh.tot);
    __syncthreads();
    unsigned long long total = sh.tot;  // ≥ 2^44 (the maximum's own weight)

    if (top_k > 0 && top_k < vocab) {
        sp_search(sh, row, vocab, inv_t, mx, false, (unsigned long long)top_k);
        if (sh.f_key == SP_NONE) {
            if (threadIdx.x == 0) tokens[s] = -1;
            return;
        }
        total = sh.f_mass;
    }
    unsigned long long nucleus = total;
    if (top_p < 1.0f) {
        const double want = ceil((double)top_p * (double)total);
        unsigned long long t1 = want >= (double)total ? total : (unsigned long long)want;
        if (t1 < 1) t1 = 1;
        if (t1 > total) t1 = total;
        sp_search(sh, row, vocab, inv_t, mx, true, t1);
        if (sh.f_key == SP_NONE) {
            if (threadIdx.x == 0) tokens[s] = -1;
            return;
        }
        nucleus = sh.f_mass;
    }
    const double y = floor(uu * (double)nucleus);
    unsigned long long t2 = y >= (double)nucleus ? nucleus : (unsigned long long)y + 1;
    if (t2 > nucleus) t2 = nucleus;
    sp_search(sh, row, vocab, inv_t, mx, true, t2);
    if (threadIdx.x == 0)
        tokens[s] = sh.f_key == SP_NONE ? -1 : (int)(sh.f_key & ((1ull << SP_ID_BITS) - 1));
}
