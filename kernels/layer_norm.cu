// LayerNorm over the last dimension for the vision encoder (issue #9; HF `nn.LayerNorm(d, eps)`),
// alone or fused with the residual update that precedes every LayerNorm of the encoder:
//
//   mean = Σx / d;  var = Σ(x − mean)² / d  (two passes, biased);  y = ((x − mean)·rstd)·w + b
//   rstd = 1 / √(var + eps)
//
// CPU twin: src/vision/layer_norm.rs (`row_body`) and, for the fused residual, encoder.rs
// `residual_body` (`h = λ·(y + bias) + h` as one fused multiply-add).
//
// Bit-identical to the CPU in f32. The CPU sums a row with `sum8`: 8 partial sums, element i
// going to partial i mod 8 in increasing i (the remainder of a row that is not a multiple of 8
// included), then the fixed tree ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)); the variance uses the same
// lanes with `fmaf(t, t, acc)`. Here a group of 8 consecutive threads owns one row: thread l runs
// partial sum l sequentially (the same additions in the same order), and three xor-shuffles within
// the group (offsets 4, 2, 1) form exactly that tree (IEEE addition is commutative, so every thread
// of the group gets the same bits). Division and square root are IEEE (NVRTC's -prec-div and
// -prec-sqrt defaults), the output is `fmaf((x − mean)·rstd, w, b)` as the CPU's `mul_add`.
// f16/bf16 outputs are the round-to-nearest-even conversion of that f32 (the input of the next
// cuBLAS GEMM).
//
// Launch (every kernel here): block = 256 threads (32 rows per block; any multiple of 8 works),
// grid = ceil(rows / (blockDim / 8)), no shared memory. Each thread touches the elements
// l, l+8, l+16, … of its row, so a group of 8 threads reads one contiguous 32-byte sector per step
// (coalesced). The sums are sequential chains of d/8 additions (96 for ViT-B): the price of the
// CPU's bits; the kernel stays memory-bound at 32 rows per block and thousands of rows.
#include "common.cuh"

static __device__ __forceinline__ uint16_t ln_to_bf16(float f) {
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

struct LnF32 {
    typedef float T;
    static __device__ __forceinline__ float cvt(float v) { return v; }
};
struct LnF16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return mr_f32_to_f16(v); }
};
struct LnBf16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return ln_to_bf16(v); }
};

// The `sum8` tree over the 8 threads of a group (partials a_l in thread l); every thread gets
// ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)).
static __device__ __forceinline__ float ln_tree8(float a, unsigned mask) {
    a = a + __shfl_xor_sync(mask, a, 4, 8);
    a = a + __shfl_xor_sync(mask, a, 2, 8);
    a = a + __shfl_xor_sync(mask, a, 1, 8);
    return a;
}

// One row. `residual`: first h[i] = fmaf(lambda[i], y[i] + ybias[i], h[i]) (stored back to h),
// then the LayerNorm of the updated row. Thread l of the group owns elements i ≡ l (mod 8), for
// the update as for the sums, so the update needs no synchronization.
template <class O, bool residual>
static __device__ __forceinline__ void ln_rows(float* __restrict__ h, const float* __restrict__ y,
                                               const float* __restrict__ ybias,
                                               const float* __restrict__ lambda,
                                               const float* __restrict__ w, const float* __restrict__ b,
                                               typename O::T* __restrict__ out, int rows, int d,
                                               float eps) {
    const int row = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 3);
    const int l = threadIdx.x & 7;
    if (row >= rows) return;  // whole groups leave together (a group never straddles the test)
    const unsigned mask = 0xffu << (threadIdx.x & 24);  // the 8 lanes of this group in its warp
    const size_t base = (size_t)row * (size_t)d;
    float* __restrict__ x = h + base;

    float acc = 0.0f;
    if (residual) {
        const float* __restrict__ yr = y + base;
        for (int i = l; i < d; i += 8) {
            const float v = fmaf(lambda[i], yr[i] + ybias[i], x[i]);
            x[i] = v;
            acc = acc + v;
        }
    } else {
        for (int i = l; i < d; i += 8) acc = acc + x[i];
    }
    const float fd = (float)d;
    const float mean = ln_tree8(acc, mask) / fd;

    acc = 0.0f;
    for (int i = l; i < d; i += 8) {
        const float t = x[i] - mean;
        acc = fmaf(t, t, acc);
    }
    const float var = ln_tree8(acc, mask) / fd;
    const float rstd = 1.0f / sqrtf(var + eps);

    typename O::T* __restrict__ o = out + base;
    for (int i = l; i < d; i += 8) o[i] = O::cvt(fmaf((x[i] - mean) * rstd, w[i], b[i]));
}

// layer_norm_f32 / layer_norm_f16 / layer_norm_bf16: out[r] = LayerNorm(x[r]) · w + b.
//   x: f32 [rows, d] row-major (read only).  w, b: f32 [d].  out: [rows, d] f32, or f16 / bf16
//   16-bit patterns.  eps: f32 (vision.layer_norm_eps).  rows·d < 2^31.  out must not alias x.
// Launch: block 256 (multiple of 8), grid ceil(rows / (block / 8)), no shared memory.
// Numerics: f32 bit-identical to `medregion::vision::layer_norm` (sum8 order, see the file doc).
#define LN_PLAIN(NAME, O)                                                                          \
    extern "C" __global__ void __launch_bounds__(256)                                              \
        NAME(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, \
             O::T* __restrict__ out, int rows, int d, float eps) {                                  \
        ln_rows<O, false>(const_cast<float*>(x), nullptr, nullptr, nullptr, w, b, out, rows, d,    \
                          eps);                                                                     \
    }
LN_PLAIN(layer_norm_f32, LnF32)
LN_PLAIN(layer_norm_f16, LnF16)
LN_PLAIN(layer_norm_bf16, LnBf16)

// layer_norm_residual_f32 / _f16 / _bf16: the encoder's residual update followed by the next
// LayerNorm, in one pass over h:
//   h[r, i] = fmaf(lambda[i], y[r, i] + ybias[i], h[r, i])     (h updated in place)
//   out[r]  = LayerNorm(h[r]) · w + b
//   h: f32 [rows, d] residual stream (in/out).  y: f32 [rows, d] the GEMM output (attention
//   projection or fc2) without its bias.  ybias, lambda (LayerScale), w, b: f32 [d].  out: [rows,
//   d] f32 or f16 / bf16 patterns.  rows·d < 2^31.  out must alias neither h nor y.
// Launch: as layer_norm_*.
// Numerics: h bit-identical to encoder.rs `residual`, out to `layer_norm` of the updated h.
#define LN_RESIDUAL(NAME, O)                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        NAME(float* __restrict__ h, const float* __restrict__ y, const float* __restrict__ ybias, \
             const float* __restrict__ lambda, const float* __restrict__ w,                      \
             const float* __restrict__ b, O::T* __restrict__ out, int rows, int d, float eps) {   \
        ln_rows<O, true>(h, y, ybias, lambda, w, b, out, rows, d, eps);                           \
    }
LN_RESIDUAL(layer_norm_residual_f32, LnF32)
LN_RESIDUAL(layer_norm_residual_f16, LnF16)
LN_RESIDUAL(layer_norm_residual_bf16, LnBf16)
