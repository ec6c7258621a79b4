// Element-wise epilogues of the vision encoder's GEMMs (issue #9): exact (erf) GELU, the bias add
// that follows a linear layer, and the two fused (`x = act(x + bias)`), optionally converted to
// f16/bf16 for the next cuBLAS GEMM.
//
// CPU twin: src/vision/math.rs (`exp`, `erf`, `gelu`) and src/vision/encoder.rs (`add_bias`,
// `bias_gelu`). The functions below are the CPU's own f32 approximations, op for op: the same
// constants (written as hexadecimal literals of the CPU's f32 bits), the same roundings (`a * b + c`
// is two rounded operations because NVRTC runs with --fmad=false; `fmaf` where the CPU has
// `mul_add`), IEEE division (NVRTC's default -prec-div=true). So every f32 result is bit-identical
// to the CPU's (the AVX2 and portable CPU builds agree too); f16/bf16 outputs are the round-to-
// nearest-even conversion of that f32.
//
// Layout: `x` is `[rows, cols]` row-major (cols fastest); `bias` has `cols` values. Launch: 1-D
// grid-stride, any grid and block (the launchers use 256 threads, grid = min(ceil(n / 256), 4096)),
// no shared memory. Loads and stores are coalesced 4-byte accesses (the kernels are bound by the
// erf arithmetic, not memory, for GELU; the plain bias add is a streaming op).
#include "common.cuh"

// Rust's f32 constants (src/vision/math.rs), bit for bit.
#define MR_LOG2E 0x1.715476p+0f          // std::f32::consts::LOG2_E
#define MR_ROUND_MAGIC 0x1.8p+23f        // 12_582_912.0
#define MR_LN2_HI 0x1.63p-1f             // 0.693_359_4
#define MR_LN2_LO (-0x1.bd0106p-13f)     // -2.121_944_4e-4
#define MR_EXP_MIN (-0x1.5d3334p+6f)     // -87.3
#define MR_EXP_MAX 0x1.62ccccp+6f        // 88.7
#define MR_INV720 0x1.6c16c2p-10f        // 1.0 / 720.0 (f32 division)
#define MR_INV120 0x1.111112p-7f         // 1.0 / 120.0
#define MR_INV24 0x1.555556p-5f          // 1.0 / 24.0
#define MR_INV6 0x1.555556p-3f           // 1.0 / 6.0
#define MR_ERF_P 0x1.4f740ap-2f          // 0.327_591_1
#define MR_ERF_A0 0x1.04f20cp-2f         // 0.254_829_6
#define MR_ERF_A1 (-0x1.23531ep-2f)      // -0.284_496_74
#define MR_ERF_A2 0x1.6be1c4p+0f         // 1.421_413_7
#define MR_ERF_A3 (-0x1.7401c6p+0f)      // -1.453_152_1
#define MR_ERF_A4 0x1.0fb844p+0f         // 1.061_405_4
#define MR_FRAC_1_SQRT_2 0x1.6a09e6p-1f  // std::f32::consts::FRAC_1_SQRT_2

// `math::exp`: Cody-Waite reduction, degree-6 Taylor polynomial, 2^n from the exponent bits.
static __device__ __forceinline__ float gelu_exp(float x) {
    // f32::clamp(min, max): NaN stays NaN.
    x = x < MR_EXP_MIN ? MR_EXP_MIN : (x > MR_EXP_MAX ? MR_EXP_MAX : x);
    const float n = (x * MR_LOG2E + MR_ROUND_MAGIC) - MR_ROUND_MAGIC;  // two roundings, like the CPU
    const float r = fmaf(-n, MR_LN2_LO, fmaf(-n, MR_LN2_HI, x));
    float p = MR_INV720;
    p = fmaf(p, r, MR_INV120);
    p = fmaf(p, r, MR_INV24);
    p = fmaf(p, r, MR_INV6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    // A finite n is an integer in [-126, 128]; NaN maps to 0 (as the CPU's `is_finite` guard).
    const int ni = isfinite(n) ? (int)n : 0;
    const int half = ni >> 1;
    const float s1 = __int_as_float((half + 127) << 23);
    const float s2 = __int_as_float((ni - half + 127) << 23);
    return p * s1 * s2;
}

// `math::erf`: Abramowitz & Stegun 7.1.26, odd symmetry by copysign.
static __device__ __forceinline__ float gelu_erf(float x) {
    const float a = fabsf(x);
    const float t = 1.0f / fmaf(MR_ERF_P, a, 1.0f);
    float poly = MR_ERF_A4;
    poly = fmaf(poly, t, MR_ERF_A3);
    poly = fmaf(poly, t, MR_ERF_A2);
    poly = fmaf(poly, t, MR_ERF_A1);
    poly = fmaf(poly, t, MR_ERF_A0);
    poly = poly * t;
    const float y = fmaf(-poly, gelu_exp(-a * a), 1.0f);
    return copysignf(y, x);
}

// `math::gelu`: 0.5·x·(1 + erf(x/√2)), evaluated left to right as in Rust.
static __device__ __forceinline__ float gelu_value(float x) {
    return 0.5f * x * (1.0f + gelu_erf(x * MR_FRAC_1_SQRT_2));
}

static __device__ __forceinline__ uint16_t gelu_to_bf16(float f) {
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// gelu_f32 (GELU in place): x[i] = gelu(x[i]) for i < n.
//   x: f32 [n] (any shape, flattened), in place.  n: element count.
// Launch: 1-D grid-stride, any grid/block, no shared memory.
// Numerics: bit-identical to `medregion::vision::math::gelu` of each element.
extern "C" __global__ void __launch_bounds__(256) gelu_f32(float* __restrict__ x, int n) {
    // Unsigned: i + stride cannot overflow for n < 2^31.
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < (unsigned)n; i += stride) x[i] = gelu_value(x[i]);
}

// gelu_bias_f32: x[r, c] = act(x[r, c] + bias[c]) in place, act = GELU when `gelu` != 0, else the
// identity (the bias add after the q/k/v projections).
//   x: f32 [rows, cols] row-major, in place.  bias: f32 [cols].  rows·cols < 2^31.
// Launch: 1-D grid-stride over rows·cols, any grid/block, no shared memory.
// Numerics: bit-identical to encoder.rs `bias_gelu` (`gelu(v + b)`) and `add_bias` (`v += b`).
extern "C" __global__ void __launch_bounds__(256)
    gelu_bias_f32(float* __restrict__ x, const float* __restrict__ bias, int rows, int cols, int gelu) {
    const unsigned n = (unsigned)rows * (unsigned)cols, c = (unsigned)cols;
    // Unsigned: i + stride cannot overflow for n < 2^31.
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i] + bias[i % c];
        x[i] = gelu ? gelu_value(v) : v;
    }
}

struct GeluF32 {
    typedef float T;
    static __device__ __forceinline__ float cvt(float v) { return v; }
};
struct GeluF16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return mr_f32_to_f16(v); }
};
struct GeluBf16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return gelu_to_bf16(v); }
};

// gelu_bias_to_f32 / gelu_bias_to_f16 / gelu_bias_to_bf16: y[r, c] = out(act(x[r, c] + bias[c])):
// as gelu_bias_f32, out of place, the f32 result stored as f32 or rounded to nearest even into
// f16 / bf16 (16-bit patterns): the input of the next GEMM (fc2) in the precision cuBLAS takes.
//   x: f32 [rows, cols].  bias: f32 [cols].  y: [rows, cols] f32 or u16, not aliasing x.
//   rows·cols < 2^31.
// Launch: 1-D grid-stride, any grid/block, no shared memory.
// Numerics: y = the f32 bits of gelu_bias_f32 (f32), or their RNE conversion.
#define GELU_TO(NAME, O)                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                             \
        NAME(const float* __restrict__ x, const float* __restrict__ bias, O::T* __restrict__ y,    \
             int rows, int cols, int gelu) {                                                       \
        const unsigned n = (unsigned)rows * (unsigned)cols, c = (unsigned)cols;                    \
        const unsigned stride = gridDim.x * blockDim.x;                                            \
        for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {             \
            const float v = x[i] + bias[i % c];                                                    \
            y[i] = O::cvt(gelu ? gelu_value(v) : v);                                               \
        }                                                                                          \
    }
GELU_TO(gelu_bias_to_f32, GeluF32)
GELU_TO(gelu_bias_to_f16, GeluF16)
GELU_TO(gelu_bias_to_bf16, GeluBf16)
