// Shared helpers for every kernel family. Header-free: NVRTC from PyPI has no cuda_fp16.h, so
// half and bfloat16 values travel as their 16-bit patterns (`uint16_t`) and are converted here.
//
// Conventions (DESIGN.md §6, build.rs):
// - every kernel is `extern "C" __global__`, named `<family>_<variant>`, like its CPU twin;
// - sizes are `int` (all tensors here are < 2^31 elements), pointers are `__restrict__`;
// - kernels are compiled with `--fmad=false`: a product and a sum are only fused where the code
//   says `fmaf`, so the order of operations is the one written (as on the CPU).
#pragma once

typedef unsigned char uint8_t;
typedef signed char int8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;

#define MR_WARP 32
#define MR_FULL_MASK 0xffffffffu

// f16 bit pattern -> f32 (exact).
__device__ __forceinline__ float mr_f16_to_f32(uint16_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 -> f16 bit pattern, round to nearest even.
__device__ __forceinline__ uint16_t mr_f32_to_f16(float f) {
    uint16_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// bf16 bit pattern -> f32 (exact: the top half of an f32).
__device__ __forceinline__ float mr_bf16_to_f32(uint16_t b) {
    return __uint_as_float(((uint32_t)b) << 16);
}

// Sum over a warp; every lane gets the result. Butterfly order (fixed, so reproducible).
__device__ __forceinline__ float mr_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MR_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float mr_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(MR_FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ int mr_warp_sum_i32(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(MR_FULL_MASK, v, o);
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every thread gets
// the result. `scratch` is 32 floats of shared memory; the call synchronizes the block twice.
__device__ __forceinline__ float mr_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = mr_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : 0.0f;
    return mr_warp_sum(t);
}

__device__ __forceinline__ float mr_block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = mr_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < warps ? scratch[lane] : -__int_as_float(0x7f800000);
    return mr_warp_max(t);
}
