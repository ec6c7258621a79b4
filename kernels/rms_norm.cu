// RMSNorm of the LLaMA decoder (SPEC-model.md §10.2), the residual add, and the fused
// "residual add, then RMSNorm" of consecutive decoder blocks. CPU twin: `llm::forward::rms_norm`
// and `llm::forward::add` (src/llm/forward.rs).
//
// Numerics (the CPU's, op for op):
//   ss  = Σ x²            in f64 (each x² is exact in f64)
//   inv = (float)(1.0 / sqrt(ss / d + (double)eps))   f64 divide and sqrt (IEEE, correctly rounded)
//   out = w · (x · inv)    two f32 multiplies, in this order
// The only difference from the CPU is the order of the f64 sum (the CPU adds left to right, here
// per-thread partial sums are combined by a fixed tree). The two f64 sums differ by a few f64
// ulps at most, so `inv` (rounded to f32) is the same unless the f64 value lies within ~1e-13
// (relative) of an f32 rounding boundary (about one row in 10^6..10^7): outputs are bit-identical
// to the CPU's except in such a row, where they differ by an ulp or two.
// Deterministic: fixed reduction order, no atomics.
#include "common.cuh"

#define RN_MAX_THREADS 1024

// Sum over a warp in butterfly order (every lane gets the result).
static __device__ __forceinline__ double rn_warp_sum_f64(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MR_FULL_MASK, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 doubles of shared memory.
static __device__ __forceinline__ double rn_block_sum_f64(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = rn_warp_sum_f64(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double t = lane < warps ? scratch[lane] : 0.0;
    return rn_warp_sum_f64(t);
}

// Whether every pointer is 16-byte aligned (float4 loads/stores are legal).
static __device__ __forceinline__ bool rn_aligned16(const void* a, const void* b, const void* c) {
    return ((((unsigned long long)a) | ((unsigned long long)b) | ((unsigned long long)c)) & 15ull) == 0;
}

// Normalizes one row `xr` of `d` values into `orow` (the body shared by both kernels). The row
// has been written (if at all) by this same block before the call, followed by __syncthreads.
static __device__ __forceinline__ void rn_row(const float* xr, const float* __restrict__ w,
                                              float* __restrict__ orow, int d, float eps,
                                              double* scratch) {
    const bool vec = (d & 3) == 0 && rn_aligned16(xr, w, orow);
    double ss = 0.0;
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        for (int i = threadIdx.x; i < (d >> 2); i += blockDim.x) {
            const float4 v = x4[i];
            ss += (double)v.x * (double)v.x;
            ss += (double)v.y * (double)v.y;
            ss += (double)v.z * (double)v.z;
            ss += (double)v.w * (double)v.w;
        }
    } else {
        for (int i = threadIdx.x; i < d; i += blockDim.x) {
            const double v = (double)xr[i];
            ss += v * v;
        }
    }
    ss = rn_block_sum_f64(ss, scratch);
    const float inv = (float)(1.0 / sqrt(ss / (double)d + (double)eps));
    if (vec) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        const float4* w4 = reinterpret_cast<const float4*>(w);
        float4* o4 = reinterpret_cast<float4*>(orow);
        for (int i = threadIdx.x; i < (d >> 2); i += blockDim.x) {
            const float4 v = x4[i], g = w4[i];
            float4 o;
            o.x = g.x * (v.x * inv);
            o.y = g.y * (v.y * inv);
            o.z = g.z * (v.z * inv);
            o.w = g.w * (v.w * inv);
            o4[i] = o;
        }
    } else {
        for (int i = threadIdx.x; i < d; i += blockDim.x) orow[i] = w[i] * (xr[i] * inv);
    }
}

// rms_norm_f32: out[r, :] = w ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps), per row.
//   x    [rows, d] f32, row-major (rows consecutive, stride d)
//   w    [d] f32
//   out  [rows, d] f32 (must not overlap x)
//   d    row length (> 0); eps: the RMSNorm epsilon (f32, as in the config)
// Launch: grid (rows, 1, 1); block (T, 1, 1) with T a multiple of 32, 32 ≤ T ≤ 1024 (the
// launcher uses T = min(1024, round_up(ceil(d / 4), 32)): one float4 per thread for d ≤ 4096);
// no dynamic shared memory. float4 loads when d % 4 == 0 and the pointers are 16-byte aligned,
// scalar loads otherwise (same results).
// Numerics: see the file comment (bit-identical to the CPU up to the f64 sum order).
extern "C" __global__ void __launch_bounds__(RN_MAX_THREADS)
rms_norm_f32(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
             int d, float eps) {
    __shared__ double scratch[32];
    const long long row = blockIdx.x;
    rn_row(x + row * d, w, out + row * d, d, eps, scratch);
}

// rms_norm_add_f32: the residual add followed by the next RMSNorm, fused:
//   x[r, :] ← x[r, :] + res[r, :]   (f32 add, written back: the residual stream)
//   out[r, :] = w ⊙ x[r, :] / sqrt(mean(x[r, :]²) + eps)
// CPU twin: `add(x, out)` then `rms_norm(x, ...)` in forward.rs (the same f32 add, then the same
// norm), so x is bit-identical to the CPU's and out as for rms_norm_f32.
//   x    [rows, d] f32, updated in place
//   res  [rows, d] f32 (the block output to add; must not overlap x or out)
//   w    [d] f32; out [rows, d] f32 (must not overlap x)
// Launch: as rms_norm_f32 (grid (rows), block T multiple of 32 ≤ 1024, no dynamic shared memory).
extern "C" __global__ void __launch_bounds__(RN_MAX_THREADS)
rms_norm_add_f32(float* __restrict__ x, const float* __restrict__ res, const float* __restrict__ w,
                 float* __restrict__ out, int d, float eps) {
    __shared__ double scratch[32];
    const long long row = blockIdx.x;
    float* xr = x + row * d;
    const float* rr = res + row * d;
    if ((d & 3) == 0 && rn_aligned16(xr, rr, xr)) {
        float4* x4 = reinterpret_cast<float4*>(xr);
        const float4* r4 = reinterpret_cast<const float4*>(rr);
        for (int i = threadIdx.x; i < (d >> 2); i += blockDim.x) {
            float4 v = x4[i];
            const float4 a = r4[i];
            v.x = v.x + a.x;
            v.y = v.y + a.y;
            v.z = v.z + a.z;
            v.w = v.w + a.w;
            x4[i] = v;
        }
    } else {
        for (int i = threadIdx.x; i < d; i += blockDim.x) xr[i] = xr[i] + rr[i];
    }
    // Each thread re-reads, in rn_row, elements other threads wrote: make them visible.
    __syncthreads();
    rn_row(xr, w, out + row * d, d, eps, scratch);
}

// rms_norm_residual_add_f32: x[i] ← x[i] + y[i] for i < n (f32 adds: bit-identical to the CPU's
// `add`). x and y must not overlap.
//   x [n] f32 (in place); y [n] f32; n ≥ 0 elements (as i64, so any buffer size)
// Launch: a grid-stride loop, so any 1-D grid is correct; the launcher uses
// min(ceil(n / 1024), 4096) blocks of 256 threads (one float4 per thread per step); no dynamic
// shared memory. float4 when both pointers are 16-byte aligned, a scalar tail.
extern "C" __global__ void __launch_bounds__(256)
rms_norm_residual_add_f32(float* __restrict__ x, const float* __restrict__ y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (rn_aligned16(x, y, x)) {
        const long long n4 = n >> 2;
        float4* x4 = reinterpret_cast<float4*>(x);
        const float4* y4 = reinterpret_cast<const float4*>(y);
        for (long long i = tid; i < n4; i += stride) {
            float4 v = x4[i];
            const float4 a = y4[i];
            v.x = v.x + a.x;
            v.y = v.y + a.y;
            v.z = v.z + a.z;
            v.w = v.w + a.w;
            x4[i] = v;
        }
        for (long long i = (n4 << 2) + tid; i < n; i += stride) x[i] = x[i] + y[i];
    } else {
        for (long long i = tid; i < n; i += stride) x[i] = x[i] + y[i];
    }
}
