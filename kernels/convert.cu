// Element type conversions around cuBLAS: the encoder and prefill GEMMs run in bf16/f16 with f32
// accumulation (DESIGN.md §6), so f32 activations are rounded to 16 bits on the way in.
// CPU twin: `half::bf16::from_f32` / `half::f16::from_f32` (round to nearest, ties to even).
#include "common.cuh"

// f32 -> bf16 bit pattern, round to nearest even; NaN stays NaN (quiet).
static __device__ __forceinline__ uint16_t f32_to_bf16_rne(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// y[i] = bf16(x[i]) for i < n. Launch: grid ceil(n / 256) (any grid works: grid-stride), block 256.
extern "C" __global__ void convert_f32_to_bf16(uint16_t* __restrict__ y, const float* __restrict__ x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = f32_to_bf16_rne(x[i]);
}

// y[i] = f16(x[i]) (round to nearest even; overflow to inf). Launch as convert_f32_to_bf16.
extern "C" __global__ void convert_f32_to_f16(uint16_t* __restrict__ y, const float* __restrict__ x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = mr_f32_to_f16(x[i]);
}

// y[i] = f32(x[i]) for bf16 x (exact). Launch as convert_f32_to_bf16.
extern "C" __global__ void convert_bf16_to_f32(float* __restrict__ y, const uint16_t* __restrict__ x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = mr_bf16_to_f32(x[i]);
}

// y[i] = f32(x[i]) for f16 x (exact). Launch as convert_f32_to_bf16.
extern "C" __global__ void convert_f16_to_f32(float* __restrict__ y, const uint16_t* __restrict__ x, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = mr_f16_to_f32(x[i]);
}
