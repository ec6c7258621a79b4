// Decoder attention over the KV cache — the CUDA twin of the attention step of
// src/llm/forward.rs (`forward`), with its layouts:
//
//   q, out     [rows, n_heads · hd] f32            (one row per new token)
//   k_new/v_new[rows, n_kv_heads · hd] f32         (after RoPE, as the CPU stores them)
//   own cache  k, v: [n_seqs, n_layers, capacity, n_kv_heads · hd] f32: sequence s's cache is the
//              CPU's KvCache `[n_layers, capacity, kv_dim]`, the sequences stacked
//   prefix     k, v: [n_layers, prefix_capacity, n_kv_heads · hd] f32: the shared read-only
//              prefix (the session's own cache in Session::generate_batch); absent = capacity 0
//
// Positions live in device memory, so a decode step can be captured once as a CUDA graph and
// replayed: `pos[seq]` is the absolute position of sequence seq's first new token and
// `prefix_len[0]` the prefix length P (0 without a prefix). As on the CPU, a token at absolute
// position p of sequence seq goes to slot p − P of its own cache and attends to prefix positions
// 0..P and to its own slots 0..=p − P (so a chunk of new tokens is causal within itself, once
// kv_attention_store has written it). GQA: query head h reads kv head h / (n_heads / n_kv_heads).
//
// Device-resident values cannot be checked by the host; the kernels clamp them so that no access
// leaves the buffers: P to [0, prefix_capacity], slots and lengths to [0, capacity] (a store to a
// slot outside the cache is skipped). With consistent positions nothing is clamped.
//
// Numerics (f32 throughout; not bit-identical to the CPU, which uses its own f64-evaluated
// exp and a one-key-at-a-time online softmax): prefill uses the encoder's tile engine (attention.cu: fma
// dot products of q·scale, online softmax over tiles of 64 keys with the CPU encoder's exp);
// decode computes a plain softmax per chunk of 64 keys and combines the chunks (flash-decoding)
// in a fixed order. Both are deterministic: no atomics, fixed partitions and reduction orders,
// so the same inputs give the same bits on every run, whatever the launch grid.
#define MR_ATTENTION_ENGINE_ONLY
#include "attention.cu"

// ------------------------------------------------------------------------------------------------
// Store.

// kv_attention_store: writes new key/value rows into the own cache of layer `layer`.
//
//   k_new, v_new  [n_rows, kv_dim] f32; row r belongs to sequence seq = seq0 + r / rows_per_seq
//                 and goes to slot pos[seq] − P + r % rows_per_seq
//   k_cache, v_cache [n_seqs, n_layers, capacity, kv_dim] f32
//   pos           int[≥ seq0 + n_rows / rows_per_seq]; prefix_len int[1]
//   P = clamp(prefix_len[0], 0, prefix_capacity); rows whose slot is outside [0, capacity) are
//   skipped (never written out of bounds).
//
// Launch: grid (n_rows), block 128; kv_dim a multiple of 4, pointers 16-byte aligned.
// A copy: bit-exact.
extern "C" __global__ void __launch_bounds__(128)
    kv_attention_store(const float* __restrict__ k_new, const float* __restrict__ v_new, float* __restrict__ k_cache,
                       float* __restrict__ v_cache, const int* __restrict__ pos, const int* __restrict__ prefix_len,
                       int rows_per_seq, int seq0, int kv_dim, int n_layers, int layer, int capacity,
                       int prefix_capacity) {
    const int r = blockIdx.x;
    const int seq = seq0 + r / rows_per_seq;
    const int plen = min(max(prefix_len[0], 0), prefix_capacity);
    const long long slot = (long long)pos[seq] - plen + r % rows_per_seq;
    if (slot < 0 || slot >= capacity) return;
    const long long dst = (((long long)seq * n_layers + layer) * capacity + slot) * kv_dim;
    const long long src = (long long)r * kv_dim;
    for (int i = threadIdx.x; i < kv_dim / 4; i += blockDim.x) {
        att_st4(k_cache + dst + 4 * i, att_ld4(k_new + src + 4 * i));
        att_st4(v_cache + dst + 4 * i, att_ld4(v_new + src + 4 * i));
    }
}

// ------------------------------------------------------------------------------------------------
// Causal prefill.

// Rows of one prefill block: (token t, query head h0 + g) pairs of one (sequence, kv head), row
// index t·group + g (so the group's heads share every key tile), 64 per block. Segment 0 is the
// prefix (every row sees its P keys), segment 1 the sequence's own cache (row t sees slots
// 0..=own_base + t, own_base = pos − P).
template <int HD>
struct PrefillRows {
    const float* q;
    float* out;
    const float* own_k;
    const float* own_v;
    const float* pre_k;
    const float* pre_v;
    long long q_base;  // element of the sequence's token 0, column 0
    int q_width, kv_dim, n_rows, group, row0, h0, plen, own_base, own_len;
    static constexpr int SEGMENTS = 2;
    __device__ long long q_off(int r) const {
        const int g = row0 + r;
        const int t = g / group;
        return q_base + (long long)t * q_width + (long long)(h0 + g - t * group) * HD;
    }
    __device__ const float* q_row(int r) const { return row0 + r < n_rows ? q + q_off(r) : nullptr; }
    __device__ float* out_row(int r) const { return row0 + r < n_rows ? out + q_off(r) : nullptr; }
    __device__ const float* seg_k(int s) const { return s ? own_k : pre_k; }
    __device__ const float* seg_v(int s) const { return s ? own_v : pre_v; }
    __device__ long long seg_stride(int) const { return kv_dim; }
    __device__ int seg_len(int s) const { return s ? own_len : plen; }
    __device__ int row_lim(int s, int r) const {
        const int g = row0 + r;
        if (g >= n_rows) return 0;
        if (s == 0) return plen;
        return min(max(own_base + g / group + 1, 0), own_len);
    }
};

template <int HD>
static __device__ __forceinline__ void kv_prefill(const float* __restrict__ q, float* __restrict__ out,
                                                  const float* __restrict__ k_cache, const float* __restrict__ v_cache,
                                                  const float* __restrict__ pk, const float* __restrict__ pv,
                                                  const int* __restrict__ pos, const int* __restrict__ prefix_len,
                                                  float scale, int n_tokens, int seq0, int n_heads, int n_kv_heads,
                                                  int n_layers, int layer, int capacity, int prefix_capacity) {
    extern __shared__ __align__(16) float att_smem[];
    const int kvh = blockIdx.y, s = blockIdx.z, seq = seq0 + s;
    const int group = n_heads / n_kv_heads;
    PrefillRows<HD> rows;
    rows.q = q;
    rows.out = out;
    rows.q_width = n_heads * HD;
    rows.kv_dim = n_kv_heads * HD;
    rows.n_rows = n_tokens * group;
    rows.group = group;
    rows.row0 = blockIdx.x * ATT_BQ;
    rows.h0 = kvh * group;
    rows.q_base = (long long)s * n_tokens * rows.q_width;
    rows.plen = min(max(prefix_len[0], 0), prefix_capacity);
    rows.own_base = pos[seq] - rows.plen;
    const int t_last = min(n_tokens - 1, (rows.row0 + ATT_BQ - 1) / group);
    rows.own_len = min(max(rows.own_base + t_last + 1, 0), capacity);
    rows.own_k = k_cache + ((long long)seq * n_layers + layer) * capacity * rows.kv_dim + kvh * HD;
    rows.own_v = v_cache + ((long long)seq * n_layers + layer) * capacity * rows.kv_dim + kvh * HD;
    rows.pre_k = pk + (long long)layer * prefix_capacity * rows.kv_dim + kvh * HD;
    rows.pre_v = pv + (long long)layer * prefix_capacity * rows.kv_dim + kvh * HD;
    att_flash_block<HD>(rows, scale, att_smem);
}

// kv_attention_prefill_hd64 / _hd128: causal attention of n_tokens new tokens per sequence
// (sequences seq0 .. seq0 + n_seq − 1, n_seq = the grid's z) over the prefix and their own cache,
// after kv_attention_store wrote the new keys/values.
//
//   q, out        [n_seq · n_tokens, n_heads · HD] f32 (sequence-major rows)
//   k_cache, v_cache [n_seqs, n_layers, capacity, n_kv_heads · HD]
//   pk, pv        [n_layers, prefix_capacity, n_kv_heads · HD] (prefix_capacity 0: not read;
//                 any valid pointer)
//   pos, prefix_len  device ints (see the top of the file); scale = 1/√HD as the CPU computes it
//   n_heads a multiple of n_kv_heads
//
// Launch: grid (ceil(n_tokens · group / 64), n_kv_heads, n_seq), block 256, dynamic shared
// memory AttSmem<HD>::BYTES (53 504 / 88 320 B: the launcher raises the limit).
extern "C" __global__ void __launch_bounds__(ATT_THREADS, 3)
    kv_attention_prefill_hd64(const float* __restrict__ q, float* __restrict__ out, const float* __restrict__ k_cache,
                              const float* __restrict__ v_cache, const float* __restrict__ pk,
                              const float* __restrict__ pv, const int* __restrict__ pos,
                              const int* __restrict__ prefix_len, float scale, int n_tokens, int seq0, int n_heads,
                              int n_kv_heads, int n_layers, int layer, int capacity, int prefix_capacity) {
    kv_prefill<64>(q, out, k_cache, v_cache, pk, pv, pos, prefix_len, scale, n_tokens, seq0, n_heads, n_kv_heads,
                   n_layers, layer, capacity, prefix_capacity);
}

extern "C" __global__ void __launch_bounds__(ATT_THREADS, 2)
    kv_attention_prefill_hd128(const float* __restrict__ q, float* __restrict__ out, const float* __restrict__ k_cache,
                               const float* __restrict__ v_cache, const float* __restrict__ pk,
                               const float* __restrict__ pv, const int* __restrict__ pos,
                               const int* __restrict__ prefix_len, float scale, int n_tokens, int seq0, int n_heads,
                               int n_kv_heads, int n_layers, int layer, int capacity, int prefix_capacity) {
    kv_prefill<128>(q, out, k_cache, v_cache, pk, pv, pos, prefix_len, scale, n_tokens, seq0, n_heads, n_kv_heads,
                    n_layers, layer, capacity, prefix_capacity);
}

// ------------------------------------------------------------------------------------------------
// Decode (flash-decoding: split over fixed chunks of keys, then a fixed-order combine).

#define DEC_CH 64       // keys per chunk (the fixed partition of every key segment)
#define DEC_ROWS 8      // query rows per block
#define DEC_THREADS 128
#define DEC_REC(hd) ((hd) + 4)  // floats per partial record: m, l, 2 pad, o[hd] (16-byte aligned)

// One block: up to 8 query rows that share one kv head and one key segment, walking chunks
// blockIdx.x, blockIdx.x + gridDim.x, … of that segment. Items (blockIdx.y):
//   y < npg: prefix item: rows ρ = 8y .. 8y+7 of the n_seq · group (sequence, head) pairs, keys
//            = the P prefix positions (shared by every sequence: read once per 8 rows);
//   else:    own item (s, hg-block): heads 8·hgb .. of sequence s's group, keys = its own slots
//            0..=pos[s] − P.
// For each chunk c and row: m = max_j s_j, l = Σ_j e^{s_j − m}, o = Σ_j e^{s_j − m}·v_j (keys of
// the chunk, s_j = (q·k_j)·scale), stored as a record at ws[(row · (npc + noc) + slot)·(HD+4)],
// slot = c for the prefix, npc + c for the own keys. Records of empty chunks are not written
// (the combine reads only the chunks that hold keys).
template <int HD>
static __device__ __forceinline__ void kv_decode(const float* __restrict__ q, const float* __restrict__ k_cache,
                                                 const float* __restrict__ v_cache, const float* __restrict__ pk,
                                                 const float* __restrict__ pv, const int* __restrict__ pos,
                                                 const int* __restrict__ prefix_len, float* __restrict__ ws,
                                                 float scale, int n_seq, int n_heads, int n_kv_heads, int n_layers,
                                                 int layer, int capacity, int prefix_capacity, int npc, int noc) {
    constexpr int KS = HD + 4;            // row stride of ks
    constexpr int D4 = HD / 4;            // float4s per row
    constexpr int NJP = DEC_THREADS / D4; // key parts of the value pass (8 / 4)
    constexpr int KP = DEC_CH / NJP;      // keys per part (8 / 16)
    static_assert(NJP * D4 == DEC_THREADS && NJP * DEC_ROWS * HD <= DEC_CH * KS, "decode tiling");
    __shared__ __align__(16) float ks[DEC_CH * KS];  // keys of the chunk; then the value partials
    __shared__ __align__(16) float qs[DEC_ROWS * HD];
    __shared__ float ss[DEC_ROWS * DEC_CH];          // scores, then weights

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int kvh = blockIdx.z;
    const int group = n_heads / n_kv_heads, kv_dim = n_kv_heads * HD;
    const int plen = min(max(prefix_len[0], 0), prefix_capacity);
    const int npg = (n_seq * group + DEC_ROWS - 1) / DEC_ROWS;
    const int nhg = (group + DEC_ROWS - 1) / DEC_ROWS;

    // The item: its rows (first pair index, count, stride pattern), keys, and record slot base.
    const int y = blockIdx.y;
    const bool prefix = y < npg;
    int rho0, nrows, own_s = 0, n, slot0;
    const float* kb;
    const float* vb;
    if (prefix) {
        rho0 = y * DEC_ROWS;
        nrows = min(DEC_ROWS, n_seq * group - rho0);
        n = plen;
        slot0 = 0;
        kb = pk + (long long)layer * prefix_capacity * kv_dim + kvh * HD;
        vb = pv + (long long)layer * prefix_capacity * kv_dim + kvh * HD;
    } else {
        own_s = (y - npg) / nhg;
        const int hgb = (y - npg) % nhg;
        rho0 = own_s * group + hgb * DEC_ROWS;
        nrows = min(DEC_ROWS, group - hgb * DEC_ROWS);
        n = min(max(pos[own_s] - plen + 1, 0), capacity);
        slot0 = npc;
        const long long base = ((long long)own_s * n_layers + layer) * capacity * kv_dim + kvh * HD;
        kb = k_cache + base;
        vb = v_cache + base;
    }
    const int nchunks = (n + DEC_CH - 1) / DEC_CH;
    if ((int)blockIdx.x >= nchunks) return;  // uniform for the block, before any barrier

    // Pair ρ = s·group + g → output row s·n_heads + kvh·group + g.
    // (Own items: ρ0 + r stays inside sequence own_s's group by construction of nrows.)
    // Queries of the rows (zeros for r ≥ nrows).
    for (int idx = tid; idx < DEC_ROWS * D4; idx += DEC_THREADS) {
        const int r = idx / D4, d4 = idx % D4;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < nrows) {
            const int rho = rho0 + r, s = rho / group, g = rho - s * group;
            x = att_ld4(q + ((long long)s * n_heads + kvh * group + g) * HD + 4 * d4);
        }
        att_st4(qs + r * HD + 4 * d4, x);
    }

#pragma unroll 1
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const int j0 = c * DEC_CH;
        const int cols = min(DEC_CH, n - j0);
        // Keys of the chunk: ks[j][d] (coalesced rows; zero past the end).
        for (int idx = tid; idx < DEC_CH * D4; idx += DEC_THREADS) {
            const int j = idx / D4, d4 = idx % D4;
            const float4 x =
                j < cols ? att_ld4(kb + (long long)(j0 + j) * kv_dim + 4 * d4) : make_float4(0.f, 0.f, 0.f, 0.f);
            att_st4(ks + j * KS + 4 * d4, x);
        }
        __syncthreads();  // also orders the query stores before the first use

        // Scores: thread (key j = tid & 63, rows tid >> 6 + 2i).
        {
            const int j = tid & (DEC_CH - 1), rh = tid >> 6;
            float acc[DEC_ROWS / 2] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
            for (int d4 = 0; d4 < D4; ++d4) {
                const float4 kx = att_ld4(ks + j * KS + 4 * d4);
#pragma unroll
                for (int i = 0; i < DEC_ROWS / 2; ++i) {
                    const float4 qx = att_ld4(qs + (rh + 2 * i) * HD + 4 * d4);
                    acc[i] = fmaf(qx.x, kx.x, acc[i]);
                    acc[i] = fmaf(qx.y, kx.y, acc[i]);
                    acc[i] = fmaf(qx.z, kx.z, acc[i]);
                    acc[i] = fmaf(qx.w, kx.w, acc[i]);
                }
            }
#pragma unroll
            for (int i = 0; i < DEC_ROWS / 2; ++i) {
                const int r = rh + 2 * i;
                ss[r * DEC_CH + j] = r >= nrows ? 0.f : (j < cols ? acc[i] * scale : ATT_NEG_INF);
            }
        }
        __syncthreads();

        // Softmax of each row over the chunk: warp w takes rows w and w + 4.
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
            const int r = warp + 4 * rr;
            if (r < nrows) {
                const float s0 = ss[r * DEC_CH + lane], s1 = ss[r * DEC_CH + lane + 32];
                const float mx = mr_warp_max(fmaxf(s0, s1));
                const float mu = (mx == ATT_NEG_INF) ? 0.f : mx;
                const float p0 = expf(s0 - mu), p1 = expf(s1 - mu);
                ss[r * DEC_CH + lane] = p0;
                ss[r * DEC_CH + lane + 32] = p1;
                const float l = mr_warp_sum(p0 + p1);
                if (lane == 0) {
                    const int rho = rho0 + r, s = rho / group, g = rho - s * group;
                    const long long row = (long long)s * n_heads + kvh * group + g;
                    float* rec = ws + (row * (npc + noc) + slot0 + c) * DEC_REC(HD);
                    rec[0] = mx;
                    rec[1] = l;
                }
            }
        }
        __syncthreads();

        // Values: thread (column group d4, key part jp) accumulates the 8 rows over its keys...
        {
            const int d4 = tid % D4, jp = tid / D4;
            float4 acc[DEC_ROWS];
#pragma unroll
            for (int r = 0; r < DEC_ROWS; ++r) acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
            for (int i = 0; i < KP; ++i) {
                const int j = jp * KP + i;
                if (j < cols) {
                    const float4 vx = att_ld4(vb + (long long)(j0 + j) * kv_dim + 4 * d4);
#pragma unroll
                    for (int r = 0; r < DEC_ROWS; ++r) {
                        const float p = ss[r * DEC_CH + j];
                        acc[r].x = fmaf(p, vx.x, acc[r].x);
                        acc[r].y = fmaf(p, vx.y, acc[r].y);
                        acc[r].z = fmaf(p, vx.z, acc[r].z);
                        acc[r].w = fmaf(p, vx.w, acc[r].w);
                    }
                }
            }
            // ...into ks (free since the scores barrier): red[jp][r][d].
#pragma unroll
            for (int r = 0; r < DEC_ROWS; ++r) att_st4(ks + (jp * DEC_ROWS + r) * HD + 4 * d4, acc[r]);
        }
        __syncthreads();
        // ...and the parts are added in order jp = 0, 1, … into the records.
        for (int idx = tid; idx < nrows * D4; idx += DEC_THREADS) {
            const int r = idx / D4, d4 = idx % D4;
            float4 sum = att_ld4(ks + r * HD + 4 * d4);
#pragma unroll
            for (int jp = 1; jp < NJP; ++jp) {
                const float4 x = att_ld4(ks + (jp * DEC_ROWS + r) * HD + 4 * d4);
                sum.x += x.x;
                sum.y += x.y;
                sum.z += x.z;
                sum.w += x.w;
            }
            const int rho = rho0 + r, s = rho / group, g = rho - s * group;
            float* rec = ws + (((long long)s * n_heads + kvh * group + g) * (npc + noc) + slot0 + c) * DEC_REC(HD);
            att_st4(rec + 4 + 4 * d4, sum);
        }
        __syncthreads();  // before the next chunk overwrites ks and ss
    }
}

// kv_attention_decode_hd64 / _hd128: the partial pass of decode attention, one new token per
// sequence for sequences 0..n_seq − 1 (row s of q is sequence s, at position pos[s]).
//
//   q             [n_seq, n_heads · HD] f32
//   k_cache, v_cache [n_seqs ≥ n_seq, n_layers, capacity, n_kv_heads · HD]
//   pk, pv        [n_layers, prefix_capacity, n_kv_heads · HD] (capacity 0: not read)
//   pos           int[≥ n_seq]; prefix_len int[1]
//   ws            workspace, [n_seq · n_heads, npc + noc, HD + 4] f32, npc = ceil(prefix_capacity
//                 / 64), noc = ceil(capacity / 64) (partial records; see kv_decode)
//   scale         1/√HD as the CPU computes it; n_heads a multiple of n_kv_heads
//
// Launch: grid (workers ≥ 1, ceil(n_seq·group / 8) + n_seq·ceil(group / 8), n_kv_heads),
// block 128, no dynamic shared memory (static: 21 KiB for HD 64, 39 KiB for HD 128). Any number
// of workers gives the same bits (each chunk's record depends only on the chunk). Then
// kv_attention_decode_combine.
extern "C" __global__ void __launch_bounds__(DEC_THREADS, 4)
    kv_attention_decode_hd64(const float* __restrict__ q, const float* __restrict__ k_cache,
                             const float* __restrict__ v_cache, const float* __restrict__ pk,
                             const float* __restrict__ pv, const int* __restrict__ pos,
                             const int* __restrict__ prefix_len, float* __restrict__ ws, float scale, int n_seq,
                             int n_heads, int n_kv_heads, int n_layers, int layer, int capacity, int prefix_capacity,
                             int npc, int noc) {
    kv_decode<64>(q, k_cache, v_cache, pk, pv, pos, prefix_len, ws, scale, n_seq, n_heads, n_kv_heads, n_layers, layer,
                  capacity, prefix_capacity, npc, noc);
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS, 4)
    kv_attention_decode_hd128(const float* __restrict__ q, const float* __restrict__ k_cache,
                              const float* __restrict__ v_cache, const float* __restrict__ pk,
                              const float* __restrict__ pv, const int* __restrict__ pos,
                              const int* __restrict__ prefix_len, float* __restrict__ ws, float scale, int n_seq,
                              int n_heads, int n_kv_heads, int n_layers, int layer, int capacity, int prefix_capacity,
                              int npc, int noc) {
    kv_decode<128>(q, k_cache, v_cache, pk, pv, pos, prefix_len, ws, scale, n_seq, n_heads, n_kv_heads, n_layers,
                   layer, capacity, prefix_capacity, npc, noc);
}

// kv_attention_decode_combine: out[row] = Σ_c e^{m_c − M}·o_c / Σ_c e^{m_c − M}·l_c over the
// row's chunk records, prefix chunks 0..ceil(P/64) then own chunks 0..ceil(len/64), in that fixed
// order (M = max_c m_c); out = o · (1/L) as the CPU normalizes. A row with no key gets zeros.
//
//   ws            as written by kv_attention_decode_hd*
//   out           [n_seq, n_heads · head_dim] f32
//   pos, prefix_len, capacity, prefix_capacity, npc, noc: as for the partial pass
//   head_dim      a multiple of 32, at most 128
//
// Launch: grid (n_heads, n_seq), block 32 (lane l owns columns l, l + 32, …).
extern "C" __global__ void __launch_bounds__(32)
    kv_attention_decode_combine(const float* __restrict__ ws, float* __restrict__ out, const int* __restrict__ pos,
                                const int* __restrict__ prefix_len, int n_heads, int head_dim, int capacity,
                                int prefix_capacity, int npc, int noc) {
    const int h = blockIdx.x, s = blockIdx.y, lane = threadIdx.x;
    const int plen = min(max(prefix_len[0], 0), prefix_capacity);
    const int own = min(max(pos[s] - plen + 1, 0), capacity);
    const int ncp = (plen + DEC_CH - 1) / DEC_CH, nco = (own + DEC_CH - 1) / DEC_CH;
    const int rec_len = head_dim + 4;
    const long long row = (long long)s * n_heads + h;
    const float* recs = ws + row * (npc + noc) * rec_len;
    float mx = ATT_NEG_INF;
    for (int c = 0; c < ncp; ++c) mx = fmaxf(mx, recs[c * rec_len]);
    for (int c = 0; c < nco; ++c) mx = fmaxf(mx, recs[(npc + c) * rec_len]);
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float l = 0.f;
    const int nv = head_dim / 32;
    if (mx != ATT_NEG_INF) {
        for (int i = 0; i < ncp + nco; ++i) {
            const float* rec = recs + (i < ncp ? i : npc + i - ncp) * rec_len;
            const float w = expf(rec[0] - mx);
            l = fmaf(rec[1], w, l);
#pragma unroll
            for (int k = 0; k < 4; ++k)
                if (k < nv) acc[k] = fmaf(rec[4 + lane + 32 * k], w, acc[k]);
        }
    }
    const float inv = l > 0.f ? 1.0f / l : 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k)
        if (k < nv) out[row * head_dim + lane + 32 * k] = acc[k] * inv;
}
