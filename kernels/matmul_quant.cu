// Quantized weight matmuls (Q8_0, Q4_0, Q4_1) for decode: GEMV of up to 8 activation rows
// against a block-32 quantized weight [rows, k] stored structure-of-arrays (values, f16 scales,
// f16 mins in separate arrays; src/quant/), plus the activation quantizer and the dequantizers
// that feed cuBLAS at prefill.
//
// CPU twins: src/ops/cpu/quantize_act.rs (`quantize_block_scalar`), src/ops/cpu/matmul_quant.rs
// (`row_dot_scalar`, the documented formula), matmul_q8_0.rs / matmul_q4.rs (block dot products),
// src/quant/q8_0.rs, q4_0.rs, q4_1.rs (`dequantize_block`). Every kernel here is BIT-IDENTICAL to
// its twin for finite inputs:
//
//   S_b  = exact integer block dot Σ_j q_w[j]·q_x[j]          (Q4_0: Σ_j (q_w[j] − 8)·q_x[j])
//   lane l = blocks 8g + l, g = 0, 1, ... in order (the last group padded with fma(0, 0, acc)):
//       acc_l = fmaf(f32(d_w) * d_x, f32(S_b), acc_l)
//       acc_l = fmaf(f32(m_w) * d_x, f32(Σ_j q_x[j]), acc_l)    (Q4_1 only)
//   out  = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
//
// Integer sums are exact in any order, so S_b is computed with `__dp4a` in whatever order is
// fastest; the float operations above are written one by one (the file is compiled with
// --fmad=false, so `a * b` is one rounded multiply and only `fmaf` fuses).
//
// GEMV design (decode is memory-bound; the weight is read once for all n <= 8 rows): one thread
// per (weight row, lane l), 8 consecutive threads per weight row, 8 rows per 64-thread block.
// Thread (r, l) walks blocks l, l + 8, l + 16, ... of row r — exactly the lane-l chain of the
// CPU — so every float operation of an output stays in one thread and in the CPU's order; the 8
// lane sums meet in a 3-step shuffle butterfly (xor 4, 2, 1) that reproduces hsum8's order. The
// 8 threads of a row read 8 consecutive blocks (128 contiguous bytes for Q4, 256 for Q8_0) with
// 16-byte loads, and keep the next DEPTH groups of weight blocks in flight in registers (a
// software pipeline: 128 bytes per thread), since small matrices give few threads per SM. The
// int8 activations (n·k bytes, a few KB) are read through L1, shared by the 8 rows of a block.
#include "common.cuh"

// Threads per GEMV block: 8 weight rows x 8 lanes.
#define MQ_THREADS 64
#define MQ_ROWS_PER_BLOCK 8
// Threads per block of the activation quantizer and the dequantizers.
#define MQ_QUANT_THREADS 256
#define MQ_DEQUANT_THREADS 256

// ---------------------------------------------------------------------------------------------
// Formats. VB: value bytes per block; OFFSET8: stored nibble is q + 8 (Q4_0); HAS_MIN: value =
// q·d + m (Q4_1); DEPTH: groups of 8 blocks whose weights a thread loads ahead of the group it
// computes (128 bytes of values in flight per thread; more spills Q8_0 at n = 7, 8).

struct MqQ8_0 {
    static constexpr int VB = 32;
    static constexpr bool OFFSET8 = false;
    static constexpr bool HAS_MIN = false;
    static constexpr int DEPTH = 4;
};
struct MqQ4_0 {
    static constexpr int VB = 16;
    static constexpr bool OFFSET8 = true;
    static constexpr bool HAS_MIN = false;
    static constexpr int DEPTH = 8;
};
struct MqQ4_1 {
    static constexpr int VB = 16;
    static constexpr bool OFFSET8 = false;
    static constexpr bool HAS_MIN = true;
    static constexpr int DEPTH = 8;
};

// The packed values of one weight block, as loaded (two or one 16-byte loads).
template <int VB> struct MqBlock;
template <> struct MqBlock<32> { uint4 a, b; };
template <> struct MqBlock<16> { uint4 a; };

static __device__ __forceinline__ void mq_load_block(MqBlock<32>& w, const uint8_t* p) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
    w.a = __ldg(q);
    w.b = __ldg(q + 1);
}

static __device__ __forceinline__ void mq_load_block(MqBlock<16>& w, const uint8_t* p) {
    w.a = __ldg(reinterpret_cast<const uint4*>(p));
}

// Exact Σ_j w_j · x_j over one Q8_0 block: 32 signed bytes against 32 signed bytes.
// `xa` holds activation elements 0..15, `xb` elements 16..31.
static __device__ __forceinline__ int mq_block_dot(const MqBlock<32>& w, const int4& xa, const int4& xb) {
    int s = 0;
    s = __dp4a((int)w.a.x, xa.x, s);
    s = __dp4a((int)w.a.y, xa.y, s);
    s = __dp4a((int)w.a.z, xa.z, s);
    s = __dp4a((int)w.a.w, xa.w, s);
    s = __dp4a((int)w.b.x, xb.x, s);
    s = __dp4a((int)w.b.y, xb.y, s);
    s = __dp4a((int)w.b.z, xb.z, s);
    s = __dp4a((int)w.b.w, xb.w, s);
    return s;
}

// Exact Σ_j nibble_j · x_j over one Q4 block (nibbles unsigned 0..15, no offset): byte j holds
// element j in its low nibble and element j + 16 in its high nibble (ggml order), so word m of
// the block pairs its low nibbles with activation word m (elements 4m..4m+3) and its high
// nibbles with activation word 4 + m (elements 16+4m..16+4m+3).
static __device__ __forceinline__ int mq_block_dot(const MqBlock<16>& w, const int4& xa, const int4& xb) {
    const uint32_t m = 0x0F0F0F0Fu;
    int s = 0;
    s = __dp4a((int)(w.a.x & m), xa.x, s);
    s = __dp4a((int)((w.a.x >> 4) & m), xb.x, s);
    s = __dp4a((int)(w.a.y & m), xa.y, s);
    s = __dp4a((int)((w.a.y >> 4) & m), xb.y, s);
    s = __dp4a((int)(w.a.z & m), xa.z, s);
    s = __dp4a((int)((w.a.z >> 4) & m), xb.z, s);
    s = __dp4a((int)(w.a.w & m), xa.w, s);
    s = __dp4a((int)((w.a.w >> 4) & m), xb.w, s);
    return s;
}

// Loads weight block `b` of the thread's row (values, and the f16 scale | min << 16) when it
// exists; otherwise leaves the registers as they are (the block is a padded lane, never used).
template <class F>
static __device__ __forceinline__ void mq_fetch(MqBlock<F::VB>& w, uint32_t& sm, const uint8_t* __restrict__ values,
                                                const uint16_t* __restrict__ scales,
                                                const uint16_t* __restrict__ mins, size_t row_block, bool valid,
                                                int b, int nb) {
    if (valid && b < nb) {
        const size_t blk = row_block + (size_t)b;
        mq_load_block(w, values + blk * F::VB);
        uint32_t v = __ldg(scales + blk);
        if (F::HAS_MIN) v |= (uint32_t)__ldg(mins + blk) << 16;
        sm = v;
    }
}

// One group step of the lane chains of all N activation rows: block b = 8g + lane of the row.
template <class F, int N>
static __device__ __forceinline__ void mq_step(float (&acc)[N], const MqBlock<F::VB>& w, uint32_t sm,
                                               const int8_t* __restrict__ qx, const float* __restrict__ dx,
                                               const int* __restrict__ sx, bool valid, int b, int nb) {
    if (valid && b < nb) {
        const float dw = mr_f16_to_f32((uint16_t)(sm & 0xFFFFu));
        const float mw = F::HAS_MIN ? mr_f16_to_f32((uint16_t)(sm >> 16)) : 0.0f;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const size_t xblk = (size_t)i * (size_t)nb + (size_t)b;
            const int4* xp = reinterpret_cast<const int4*>(qx + xblk * 32);
            const int4 xa = __ldg(xp);
            const int4 xb = __ldg(xp + 1);
            int s = mq_block_dot(w, xa, xb);
            const float d = __ldg(dx + xblk);
            int xsum = 0;
            if (F::OFFSET8 || F::HAS_MIN) xsum = __ldg(sx + xblk);
            // Σ (q − 8)·x = Σ q·x − 8·Σ x, exact in i32 (|S| < 2^20).
            if (F::OFFSET8) s -= 8 * xsum;
            const float p = dw * d;
            acc[i] = fmaf(p, (float)s, acc[i]);
            if (F::HAS_MIN) {
                const float pm = mw * d;
                acc[i] = fmaf(pm, (float)xsum, acc[i]);
            }
        }
    } else {
        // A padded lane of the last group (or a row past the end, never stored): the CPU's
        // fma(0, 0, acc), once per fma of a real block.
#pragma unroll
        for (int i = 0; i < N; ++i) {
            acc[i] = fmaf(0.0f, 0.0f, acc[i]);
            if (F::HAS_MIN) acc[i] = fmaf(0.0f, 0.0f, acc[i]);
        }
    }
}

// hsum8 of the 8 lane accumulators held by 8 consecutive threads: after xor 4 lane l holds
// a_l + a_{l^4}, after xor 2 ((a_l + a_{l^4}) + (a_{l^2} + a_{l^6})), after xor 1 the sum in
// hsum8's order ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) on every lane (IEEE addition
// is commutative, so the partner's view of each add has the same bits). Every thread of the warp
// must call it.
static __device__ __forceinline__ float mq_hsum8_lanes(float v) {
    v = v + __shfl_xor_sync(MR_FULL_MASK, v, 4);
    v = v + __shfl_xor_sync(MR_FULL_MASK, v, 2);
    v = v + __shfl_xor_sync(MR_FULL_MASK, v, 1);
    return v;
}

// The GEMV body; see the kernels below for the contract.
template <class F, int N>
static __device__ __forceinline__ void mq_gemv(const uint8_t* __restrict__ values,
                                               const uint16_t* __restrict__ scales,
                                               const uint16_t* __restrict__ mins, const int8_t* __restrict__ qx,
                                               const float* __restrict__ dx, const int* __restrict__ sx,
                                               float* __restrict__ out, int rows, int nb) {
    const int lane = threadIdx.x & 7;
    const int r = blockIdx.x * MQ_ROWS_PER_BLOCK + (threadIdx.x >> 3);
    const bool valid = r < rows;
    const size_t row_block = valid ? (size_t)r * (size_t)nb : 0;
    const int groups = (nb + 7) >> 3;

    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;

    // Software pipeline: slot s holds group g0 + s; consuming it refills it with g0 + s + DEPTH.
    MqBlock<F::VB> buf[F::DEPTH];
    uint32_t sm[F::DEPTH];
#pragma unroll
    for (int s = 0; s < F::DEPTH; ++s) {
        sm[s] = 0;
        mq_fetch<F>(buf[s], sm[s], values, scales, mins, row_block, valid, s * 8 + lane, nb);
    }
    for (int g0 = 0; g0 < groups; g0 += F::DEPTH) {
#pragma unroll
        for (int s = 0; s < F::DEPTH; ++s) {
            const int g = g0 + s;
            if (g < groups) {
                const MqBlock<F::VB> w = buf[s];
                const uint32_t wsm = sm[s];
                mq_fetch<F>(buf[s], sm[s], values, scales, mins, row_block, valid, (g + F::DEPTH) * 8 + lane,
                            nb);
                mq_step<F, N>(acc, w, wsm, qx, dx, sx, valid, g * 8 + lane, nb);
            }
        }
    }

    float mine = 0.0f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const float v = mq_hsum8_lanes(acc[i]);
        if (i == lane) mine = v;
    }
    // Lane i stores activation row i (n <= 8 = lanes).
    if (valid && lane < N) out[(size_t)lane * (size_t)rows + (size_t)r] = mine;
}

// ---------------------------------------------------------------------------------------------
// GEMV kernels: matmul_quant_<fmt>_n<N>, N = 1..8 activation rows.
//
//   out[i][r] = Σ_k x[i][k] · W[r][k]  for i < N, r < rows   (W dequantized, x quantized)
//
// Arguments (all device pointers; `nb = k / 32` blocks per row):
//   values  u8  [rows, nb, VB]   packed values (VB = 32 for Q8_0, 16 for Q4_0/Q4_1), 16-byte aligned
//   scales  f16 [rows, nb]       bit patterns
//   mins    f16 [rows, nb]       Q4_1 only (other formats ignore it: pass any valid pointer)
//   qx      i8  [N, nb, 32]      quantized activations (matmul_quant_quantize_act), 16-byte aligned
//   dx      f32 [N, nb]          activation block scales
//   sx      i32 [N, nb]          activation block sums (read by Q4_0 and Q4_1)
//   out     f32 [N, rows]        row-major, row stride `rows`
//   rows, nb                     rows >= 1, nb >= 1
// Launch: grid (ceil(rows / 8)), block (64), no dynamic shared memory.
// Numerics: bit-identical to medregion::ops::matmul (CPU, any ISA) for the same weights and
// activations quantized by matmul_quant_quantize_act (see the top of the file).

#define MQ_GEMV_KERNEL(fmt, F, N)                                                                       \
    extern "C" __global__ void __launch_bounds__(MQ_THREADS)                                             \
        matmul_quant_##fmt##_n##N(const uint8_t* __restrict__ values, const uint16_t* __restrict__ scales, \
                                  const uint16_t* __restrict__ mins, const int8_t* __restrict__ qx,      \
                                  const float* __restrict__ dx, const int* __restrict__ sx,              \
                                  float* __restrict__ out, int rows, int nb) {                           \
        mq_gemv<F, N>(values, scales, mins, qx, dx, sx, out, rows, nb);                                  \
    }

#define MQ_GEMV_ALL_N(fmt, F) \
    MQ_GEMV_KERNEL(fmt, F, 1) \
    MQ_GEMV_KERNEL(fmt, F, 2) \
    MQ_GEMV_KERNEL(fmt, F, 3) \
    MQ_GEMV_KERNEL(fmt, F, 4) \
    MQ_GEMV_KERNEL(fmt, F, 5) \
    MQ_GEMV_KERNEL(fmt, F, 6) \
    MQ_GEMV_KERNEL(fmt, F, 7) \
    MQ_GEMV_KERNEL(fmt, F, 8)

MQ_GEMV_ALL_N(q8_0, MqQ8_0)
MQ_GEMV_ALL_N(q4_0, MqQ4_0)
MQ_GEMV_ALL_N(q4_1, MqQ4_1)

// ---------------------------------------------------------------------------------------------
// matmul_quant_quantize_act: activations f32 [n, k] (k % 32 == 0) -> per block of 32: int8
// values, f32 scale d and i32 sum Σq, with `blocks = n · k / 32`:
//
//   amax = max |x_j|;  d = amax / 127;  id = amax != 0 ? 127 / amax : 0
//   q_j  = clamp(round_half_even(x_j · id), -128, 127);  sum = Σ q_j
//
// Arguments: x f32 [blocks·32], qx i8 [blocks·32], dx f32 [blocks], sx i32 [blocks], blocks.
// Launch: grid (ceil(blocks / 8)), block (256): one warp per block of 32, no dynamic shared memory.
// Numerics: bit-identical to the CPU's `quantize_block_scalar` (and its AVX2 twin) for finite x:
// the max is exact in any order, `/` is IEEE division (no --use_fast_math), x·id is one rounded
// multiply, `__float2int_rn` rounds half to even and saturates like Rust's `as i32`.
extern "C" __global__ void __launch_bounds__(MQ_QUANT_THREADS)
    matmul_quant_quantize_act(const float* __restrict__ x, int8_t* __restrict__ qx, float* __restrict__ dx,
                              int* __restrict__ sx, int blocks) {
    const int warp = blockIdx.x * (MQ_QUANT_THREADS / MR_WARP) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (warp >= blocks) return;  // whole warps leave together
    const size_t e = (size_t)warp * 32 + (size_t)lane;
    const float v = x[e];
    const float amax = mr_warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int q = __float2int_rn(v * id);
    q = q < -128 ? -128 : (q > 127 ? 127 : q);
    qx[e] = (int8_t)q;
    const int s = mr_warp_sum_i32(q);
    if (lane == 0) {
        dx[warp] = d;
        sx[warp] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Dequantizers: matmul_quant_dequantize_<fmt>_<f16|bf16>: a quantized weight (any shape, `blocks`
// blocks of 32, SoA) -> its values as f16 or bf16 bit patterns, element order (out[b·32 + j]),
// for the cuBLAS GEMMs of prefill.
//
//   Q8_0: v = f32(q) · f32(d)        Q4_0: v = f32(d) · f32(q − 8)      Q4_1: v = f32(d) · f32(q) + f32(m)
//   out  = round_to_nearest_even(v) as f16 / bf16
//
// Arguments: values u8 [blocks, VB] (16-byte aligned), scales f16 [blocks], mins f16 [blocks]
// (Q4_1; any valid pointer otherwise), out u16 [blocks·32] (16-byte aligned), blocks.
// Launch: grid (ceil(units / 256)), block (256), no dynamic shared memory, where a thread does
// one 16-byte unit of values: units = 2·blocks for Q8_0 (half a block), blocks for Q4_0/Q4_1.
// Numerics: the f32 value is bit-identical to the crate's `quant::dequantize` (each product and
// sum one rounded op, as in `dequantize_block`), then rounded once to f16 (cvt.rn.f16.f32, as
// half::f16::from_f32) or bf16 (cvt.rn.bf16.f32, as half::bf16::from_f32 for non-NaN values).

static __device__ __forceinline__ uint16_t mq_f32_to_bf16(float f) {
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

template <bool BF16>
static __device__ __forceinline__ uint32_t mq_pack2(float lo, float hi) {
    const uint16_t a = BF16 ? mq_f32_to_bf16(lo) : mr_f32_to_f16(lo);
    const uint16_t b = BF16 ? mq_f32_to_bf16(hi) : mr_f32_to_f16(hi);
    return (uint32_t)a | ((uint32_t)b << 16);
}

// Signed byte `j` (0..3) of a word, as f32.
static __device__ __forceinline__ float mq_sbyte(uint32_t w, int j) {
    return (float)(int)(int8_t)(uint8_t)(w >> (8 * j));
}

template <bool BF16>
static __device__ __forceinline__ void mq_dequant_q8_0(const uint8_t* __restrict__ values,
                                                       const uint16_t* __restrict__ scales,
                                                       uint16_t* __restrict__ out, int blocks) {
    const size_t unit = (size_t)blockIdx.x * MQ_DEQUANT_THREADS + threadIdx.x;
    if (unit >= (size_t)blocks * 2) return;
    const size_t b = unit >> 1;
    const float d = mr_f16_to_f32(__ldg(scales + b));
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(values) + unit);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    uint32_t o[8];
#pragma unroll
    for (int m = 0; m < 4; ++m) {
        o[2 * m] = mq_pack2<BF16>(mq_sbyte(words[m], 0) * d, mq_sbyte(words[m], 1) * d);
        o[2 * m + 1] = mq_pack2<BF16>(mq_sbyte(words[m], 2) * d, mq_sbyte(words[m], 3) * d);
    }
    // Elements unit·16 .. unit·16 + 16: 32 bytes.
    uint4* dst = reinterpret_cast<uint4*>(out + unit * 16);
    dst[0] = make_uint4(o[0], o[1], o[2], o[3]);
    dst[1] = make_uint4(o[4], o[5], o[6], o[7]);
}

template <bool BF16, bool HAS_MIN>
static __device__ __forceinline__ void mq_dequant_q4(const uint8_t* __restrict__ values,
                                                     const uint16_t* __restrict__ scales,
                                                     const uint16_t* __restrict__ mins, uint16_t* __restrict__ out,
                                                     int blocks) {
    const size_t b = (size_t)blockIdx.x * MQ_DEQUANT_THREADS + threadIdx.x;
    if (b >= (size_t)blocks) return;
    const float d = mr_f16_to_f32(__ldg(scales + b));
    const float m = HAS_MIN ? mr_f16_to_f32(__ldg(mins + b)) : 0.0f;
    const uint4 q = __ldg(reinterpret_cast<const uint4*>(values) + b);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    float lo[16], hi[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
        const uint32_t byte = (words[j >> 2] >> (8 * (j & 3))) & 0xFFu;
        const int ql = (int)(byte & 0x0Fu), qh = (int)(byte >> 4);
        if (HAS_MIN) {
            lo[j] = d * (float)ql + m;
            hi[j] = d * (float)qh + m;
        } else {
            lo[j] = d * (float)(ql - 8);
            hi[j] = d * (float)(qh - 8);
        }
    }
    uint4* dst = reinterpret_cast<uint4*>(out + b * 32);
    // Elements 0..15 (low nibbles), then 16..31 (high nibbles): 64 bytes.
    dst[0] = make_uint4(mq_pack2<BF16>(lo[0], lo[1]), mq_pack2<BF16>(lo[2], lo[3]), mq_pack2<BF16>(lo[4], lo[5]),
                        mq_pack2<BF16>(lo[6], lo[7]));
    dst[1] = make_uint4(mq_pack2<BF16>(lo[8], lo[9]), mq_pack2<BF16>(lo[10], lo[11]),
                        mq_pack2<BF16>(lo[12], lo[13]), mq_pack2<BF16>(lo[14], lo[15]));
    dst[2] = make_uint4(mq_pack2<BF16>(hi[0], hi[1]), mq_pack2<BF16>(hi[2], hi[3]), mq_pack2<BF16>(hi[4], hi[5]),
                        mq_pack2<BF16>(hi[6], hi[7]));
    dst[3] = make_uint4(mq_pack2<BF16>(hi[8], hi[9]), mq_pack2<BF16>(hi[10], hi[11]),
                        mq_pack2<BF16>(hi[12], hi[13]), mq_pack2<BF16>(hi[14], hi[15]));
}

#define MQ_DEQUANT_ARGS                                                                               \
    const uint8_t *__restrict__ values, const uint16_t *__restrict__ scales, const uint16_t *__restrict__ mins, \
        uint16_t *__restrict__ out, int blocks

extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q8_0_f16(MQ_DEQUANT_ARGS) {
    mq_dequant_q8_0<false>(values, scales, out, blocks);
}
extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q8_0_bf16(MQ_DEQUANT_ARGS) {
    mq_dequant_q8_0<true>(values, scales, out, blocks);
}
extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q4_0_f16(MQ_DEQUANT_ARGS) {
    mq_dequant_q4<false, false>(values, scales, mins, out, blocks);
}
extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q4_0_bf16(MQ_DEQUANT_ARGS) {
    mq_dequant_q4<true, false>(values, scales, mins, out, blocks);
}
extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q4_1_f16(MQ_DEQUANT_ARGS) {
    mq_dequant_q4<false, true>(values, scales, mins, out, blocks);
}
extern "C" __global__ void __launch_bounds__(MQ_DEQUANT_THREADS) matmul_quant_dequantize_q4_1_bf16(MQ_DEQUANT_ARGS) {
    mq_dequant_q4<true, true>(values, scales, mins, out, blocks);
}
