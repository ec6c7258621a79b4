// Dense weight matmuls (F32, F16, BF16) for decode: GEMV of up to 8 f32 activation rows against
// a row-major weight [rows, k], f32 accumulation, each weight element read from memory once for
// all rows.
//
// CPU twin: src/ops/cpu/matmul_f32.rs (`dot_scalar`; the AVX2 micro-kernel computes the same
// thing) with the exact f16/bf16 -> f32 loads of matmul_f16.rs. The GPU result is BIT-IDENTICAL
// to medregion::ops::matmul for finite inputs, because it performs the same operations in the
// same order:
//
//   acc_l = fmaf(x[8c + l], w[8c + l], acc_l)   for c = 0, 1, ..., ceil(k / 8) − 1, lane l < 8;
//                                               the last chunk zero-padded: fmaf(0, 0, acc_l)
//   out   = ((acc0 + acc4) + (acc2 + acc6)) + ((acc1 + acc5) + (acc3 + acc7))
//
// (--fmad=false: only `fmaf` fuses.)
//
// Design: one thread per (weight row, lane l), 8 consecutive threads per row, 8 rows per 64-thread
// block; thread (r, l) runs the CPU's lane-l chain for all N activation rows, and the lanes meet
// in a shuffle butterfly (xor 4, 2, 1) in hsum8's order. Lane l needs every 8th element, so the
// block stages tiles of 512 bytes per weight row (KT elements) in shared memory with cp.async
// 16-byte copies — coalesced and many in flight without registers, MD_STAGES tiles deep — and the
// matching activation tile transposed by lane (xs[i][l][c] = x[i][k0 + 8c + l], 4-byte cp.async),
// so a thread reads 4 chunks of one activation row with one 16-byte shared load. When a weight
// row is not 16-byte aligned (k·sizeof(W) % 16 != 0) the weight tile is staged with plain loads
// instead (correct for any k, slower).
#include "common.cuh"

#define MD_THREADS 64
#define MD_ROWS_PER_BLOCK 8
#define MD_STAGES 3
// Bytes of one weight row per tile, and its shared-memory pitch (+16: the 4 rows a warp reads
// land in different banks).
#define MD_ROW_BYTES 512
#define MD_ROW_PITCH (MD_ROW_BYTES + 16)

// Weight element types: SIZE bytes, exact conversion to f32.
struct MdF32 {
    typedef float T;
    static constexpr int SIZE = 4;
    static __device__ __forceinline__ float load(const unsigned char* p) { return *reinterpret_cast<const float*>(p); }
};
struct MdF16 {
    typedef uint16_t T;
    static constexpr int SIZE = 2;
    static __device__ __forceinline__ float load(const unsigned char* p) {
        return mr_f16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    }
};
struct MdBF16 {
    typedef uint16_t T;
    static constexpr int SIZE = 2;
    static __device__ __forceinline__ float load(const unsigned char* p) {
        return mr_bf16_to_f32(*reinterpret_cast<const uint16_t*>(p));
    }
};

// Shared-memory layout of one pipeline stage for weight type W and N activation rows.
template <class W, int N>
struct MdTile {
    static constexpr int KT = MD_ROW_BYTES / W::SIZE;  // elements per row per tile
    static constexpr int CT = KT / 8;                  // chunks of 8 per tile
    static constexpr int XL = CT + 4;                  // floats per (row, lane) of xs: + 4 = no bank conflicts
    static constexpr int W_BYTES = MD_ROWS_PER_BLOCK * MD_ROW_PITCH;
    static constexpr int X_BYTES = N * 8 * XL * 4;
    static constexpr int BYTES = W_BYTES + X_BYTES;  // a multiple of 16
};

static __device__ __forceinline__ uint32_t md_smem_addr(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16-byte asynchronous copy global -> shared; `src_bytes` < 16 zero-fills the rest (0: no read).
static __device__ __forceinline__ void md_cp_async16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(md_smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

// 4-byte asynchronous copy global -> shared; `src_bytes` 0 writes zero without reading.
static __device__ __forceinline__ void md_cp_async4(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(md_smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

static __device__ __forceinline__ void md_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most MD_STAGES - 2 of this thread's committed copy groups are pending.
static __device__ __forceinline__ void md_cp_async_wait_stage() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(MD_STAGES - 2) : "memory");
}

static __device__ __forceinline__ void md_cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Issues the copies of tile t (elements k0 = t·KT .. k0 + KT of the block's 8 weight rows and of
// the N activation rows) into stage buffer `st`. Out-of-range elements are zero.
template <class W, int N>
static __device__ __forceinline__ void md_stage(unsigned char* st, const unsigned char* __restrict__ w,
                                                const float* __restrict__ x, int rows, int k, int t,
                                                bool aligned) {
    typedef MdTile<W, N> L;
    const int k0 = t * L::KT;
    const int r0 = blockIdx.x * MD_ROWS_PER_BLOCK;
    if (aligned) {
        // 32 pieces of 16 bytes per row; k is a multiple of 16 / SIZE, so a piece is whole or absent.
        constexpr int PIECES = MD_ROW_BYTES / 16;
#pragma unroll
        for (int j = 0; j < MD_ROWS_PER_BLOCK * PIECES / MD_THREADS; ++j) {
            const int p = threadIdx.x + j * MD_THREADS;
            const int rr = p / PIECES, q = p % PIECES;
            const int e = k0 + q * (16 / W::SIZE);
            const bool ok = r0 + rr < rows && e < k;
            const unsigned char* src = ok ? w + ((size_t)(r0 + rr) * (size_t)k + (size_t)e) * W::SIZE : w;
            md_cp_async16(st + rr * MD_ROW_PITCH + q * 16, src, ok ? 16 : 0);
        }
    } else {
#pragma unroll 4
        for (int j = 0; j < MD_ROWS_PER_BLOCK * L::KT / MD_THREADS; ++j) {
            const int p = threadIdx.x + j * MD_THREADS;
            const int rr = p / L::KT, c = p % L::KT;
            const int e = k0 + c;
            typename W::T v = 0;
            if (r0 + rr < rows && e < k)
                v = __ldg(reinterpret_cast<const typename W::T*>(w) + (size_t)(r0 + rr) * (size_t)k + (size_t)e);
            *reinterpret_cast<typename W::T*>(st + rr * MD_ROW_PITCH + c * W::SIZE) = v;
        }
    }
    // Activations, transposed by lane: xs[i][l][cc] = x[i][k0 + 8·cc + l].
    float* xs = reinterpret_cast<float*>(st + L::W_BYTES);
#pragma unroll 4
    for (int j = 0; j < N * L::KT / MD_THREADS; ++j) {
        const int p = threadIdx.x + j * MD_THREADS;
        const int i = p / L::KT, e = p % L::KT;
        const int l = e & 7, cc = e >> 3;
        const bool ok = k0 + e < k;
        const float* src = ok ? x + (size_t)i * (size_t)k + (size_t)(k0 + e) : x;
        md_cp_async4(xs + (i * 8 + l) * L::XL + cc, src, ok ? 4 : 0);
    }
}

template <class W, int N>
static __device__ __forceinline__ void md_gemv(const unsigned char* __restrict__ w, const float* __restrict__ x,
                                               float* __restrict__ out, int rows, int k) {
    typedef MdTile<W, N> L;
    __shared__ __align__(16) unsigned char smem[MD_STAGES * L::BYTES];

    const int lane = threadIdx.x & 7;
    const int rr = threadIdx.x >> 3;
    const int r = blockIdx.x * MD_ROWS_PER_BLOCK + rr;
    const int tiles = (k + L::KT - 1) / L::KT;
    const int chunks = (k + 7) >> 3;
    const bool aligned = ((size_t)k * W::SIZE) % 16 == 0 && ((size_t)w & 15) == 0;

    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;

    // cp.async pipeline (one commit group per tile, empty groups past the end).
#pragma unroll
    for (int s = 0; s < MD_STAGES - 1; ++s) {
        if (s < tiles) md_stage<W, N>(smem + s * L::BYTES, w, x, rows, k, s, aligned);
        md_cp_async_commit();
    }
    for (int t = 0; t < tiles; ++t) {
        md_cp_async_wait_stage();  // tile t has landed (this thread's copies)
        __syncthreads();           // ... everyone's, and everyone is done with tile t - 1's buffer
        const int tn = t + MD_STAGES - 1;
        if (tn < tiles) md_stage<W, N>(smem + (tn % MD_STAGES) * L::BYTES, w, x, rows, k, tn, aligned);
        md_cp_async_commit();

        const unsigned char* st = smem + (t % MD_STAGES) * L::BYTES;
        const unsigned char* wrow = st + rr * MD_ROW_PITCH;
        const float* xs = reinterpret_cast<const float*>(st + L::W_BYTES);
        const int cmax = min(L::CT, chunks - t * L::CT);  // chunks of this tile inside k (uniform)
#pragma unroll 2
        for (int c4 = 0; c4 < L::CT; c4 += 4) {
            if (c4 < cmax) {
                float4 xv[N];
#pragma unroll
                for (int i = 0; i < N; ++i) xv[i] = *reinterpret_cast<const float4*>(xs + (i * 8 + lane) * L::XL + c4);
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    if (c4 + j < cmax) {
                        const float wv = W::load(wrow + ((c4 + j) * 8 + lane) * W::SIZE);
#pragma unroll
                        for (int i = 0; i < N; ++i) {
                            const float xj = j == 0 ? xv[i].x : j == 1 ? xv[i].y : j == 2 ? xv[i].z : xv[i].w;
                            acc[i] = fmaf(xj, wv, acc[i]);
                        }
                    }
                }
            }
        }
    }
    md_cp_async_wait_all();

    float mine = 0.0f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        float v = acc[i];
        // hsum8 order: see matmul_quant.cu (mq_hsum8_lanes).
        v = v + __shfl_xor_sync(MR_FULL_MASK, v, 4);
        v = v + __shfl_xor_sync(MR_FULL_MASK, v, 2);
        v = v + __shfl_xor_sync(MR_FULL_MASK, v, 1);
        if (i == lane) mine = v;
    }
    if (r < rows && lane < N) out[(size_t)lane * (size_t)rows + (size_t)r] = mine;
}

// ---------------------------------------------------------------------------------------------
// matmul_dense_<f32|f16|bf16>_n<N>, N = 1..8 activation rows:
//
//   out[i][r] = Σ_k x[i][k] · W[r][k]   for i < N, r < rows
//
// Arguments (device pointers):
//   w    W   [rows, k]   row-major; f16/bf16 as 16-bit patterns (any alignment of the element
//                        type; 16-byte aligned base and k·sizeof(W) % 16 == 0 take the fast path)
//   x    f32 [N, k]      row-major
//   out  f32 [N, rows]   row-major, row stride `rows`
//   rows, k              >= 1
// Launch: grid (ceil(rows / 8)), block (64), no dynamic shared memory (static: 3 stages of
// 8·528 + N·8·(KT/8 + 4)·4 bytes, KT = 512 / sizeof(W): at most 40,320 bytes).
// Numerics: bit-identical to medregion::ops::matmul on the CPU (see the top of the file).

#define MD_GEMV_KERNEL(name, W, N)                                                                      \
    extern "C" __global__ void __launch_bounds__(MD_THREADS)                                             \
        matmul_dense_##name##_n##N(const W::T* __restrict__ w, const float* __restrict__ x,              \
                                   float* __restrict__ out, int rows, int k) {                          \
        md_gemv<W, N>(reinterpret_cast<const unsigned char*>(w), x, out, rows, k);                      \
    }

#define MD_GEMV_ALL_N(name, W) \
    MD_GEMV_KERNEL(name, W, 1) \
    MD_GEMV_KERNEL(name, W, 2) \
    MD_GEMV_KERNEL(name, W, 3) \
    MD_GEMV_KERNEL(name, W, 4) \
    MD_GEMV_KERNEL(name, W, 5) \
    MD_GEMV_KERNEL(name, W, 6) \
    MD_GEMV_KERNEL(name, W, 7) \
    MD_GEMV_KERNEL(name, W, 8)

MD_GEMV_ALL_N(f32, MdF32)
MD_GEMV_ALL_N(f16, MdF16)
MD_GEMV_ALL_N(bf16, MdBF16)
