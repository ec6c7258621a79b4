// SwiGLU of the LLaMA MLP: out = silu(gate) ⊙ up (SPEC-model.md §10.2). CPU twin:
// `llm::forward::silu_mul_portable` (src/llm/forward.rs):
//   *g = *g / (1.0 + exp(-*g)) * u
// i.e. e = exp(−g) (f32), t = 1 + e (f32 add), s = g / t (f32 IEEE divide), out = s · u.
//
// `exp` is the CPU's own (`medregion::ops::cpu::exp::exp`, src/ops/cpu/exp.rs): e^x evaluated
// in f64 and rounded once to f32. `sw_exp` below is that function, operation for operation:
//   x clamped to [−110, 90] (NaN returned as is), n = rint(x · log2 e) (ties to even),
//   r = fma(n, −ln2_hi, x), r = fma(n, −ln2_lo, r), p = Σ_{k ≤ 12} r^k / k! by Horner with
//   fma, y = p · 2^n (2^n from the exponent bits), then one f64 → f32 rounding.
// Every step is a correctly rounded IEEE operation (kernels build with --fmad=false), so the
// kernel is bit-identical to the CPU twin on any host. Cost: ~16 f64 operations per element;
// full rate on sm_80/sm_90, 1/64 rate on sm_86/sm_89 (still small next to the MLP matmuls).
#include "common.cuh"

// 1 / k! for k = 12 down to 2, each the correctly rounded f64 quotient (as the CPU's table).
__constant__ double sw_inv_fact[11] = {
    1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
    1.0 / 5040.0,      1.0 / 720.0,      1.0 / 120.0,     1.0 / 24.0,     1.0 / 6.0,
    0.5,
};

// The CPU's `exp` (see the file comment).
static __device__ __forceinline__ float sw_exp(float x) {
    if (isnan(x)) return x;
    const double log2e = __longlong_as_double(0x3FF71547652B82FEll);
    const double ln2_hi = __longlong_as_double(0x3FE62E42FEE00000ll);
    const double ln2_lo = __longlong_as_double(0x3DEA39EF35793C76ll);
    const double xd = fmin(fmax((double)x, -110.0), 90.0);
    const double n = rint(__dmul_rn(xd, log2e));
    double r = fma(n, -ln2_hi, xd);
    r = fma(n, -ln2_lo, r);
    double p = sw_inv_fact[0];
#pragma unroll
    for (int k = 1; k < 11; ++k) p = fma(p, r, sw_inv_fact[k]);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    // |n| ≤ 159: 2^n is a normal f64.
    const double s = __longlong_as_double(((long long)n + 1023ll) << 52);
    return __double2float_rn(__dmul_rn(p, s));
}

static __device__ __forceinline__ float sw_silu_mul(float g, float u) {
    return g / (1.0f + sw_exp(-g)) * u;
}

// swiglu_f32: out[r, j] = silu(gate[r, j]) · up[r, j] for r < rows, j < f.
//   gate  row r at gate + r·ld_gate, f values
//   up    row r at up + r·ld_up, f values
//   out   row r at out + r·ld_out, f values; must not overlap gate or up, except:
//   gate == nullptr: in place, like the CPU (which overwrites gate): gate is read from `out`
//         (with stride ld_out; ld_gate is then ignored)
//   rows, f, ld_gate, ld_up, ld_out ≥ f
// Launch: grid (ceil(f / (4 · 256)), rows, 1); block (256, 1, 1); no dynamic shared memory. Each
// thread handles 4 consecutive columns: one float4 per operand when f, every ld and every
// pointer allow it (multiples of 4, 16-byte aligned), scalar loads otherwise (same results).
// Numerics: bit-identical to the CPU twin (see the file comment).
extern "C" __global__ void __launch_bounds__(256)
swiglu_f32(const float* gate, const float* __restrict__ up, float* out, int rows, int f,
           int ld_gate, int ld_up, int ld_out) {
    const int j = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    const int r = blockIdx.y;
    if (j >= f || r >= rows) return;
    if (gate == nullptr) {
        gate = out;
        ld_gate = ld_out;
    }
    const float* g = gate + (long long)r * ld_gate;
    const float* u = up + (long long)r * ld_up;
    float* o = out + (long long)r * ld_out;
    const bool vec = ((f | ld_gate | ld_up | ld_out) & 3) == 0 &&
                     ((((unsigned long long)gate) | ((unsigned long long)up) |
                       ((unsigned long long)out)) & 15ull) == 0;
    if (vec) {
        const float4 gv = *reinterpret_cast<const float4*>(g + j);
        const float4 uv = *reinterpret_cast<const float4*>(u + j);
        float4 ov;
        ov.x = sw_silu_mul(gv.x, uv.x);
        ov.y = sw_silu_mul(gv.y, uv.y);
        ov.z = sw_silu_mul(gv.z, uv.z);
        ov.w = sw_silu_mul(gv.w, uv.w);
        *reinterpret_cast<float4*>(o + j) = ov;
    } else {
        const int end = j + 4 < f ? j + 4 : f;
        for (int c = j; c < end; ++c) o[c] = sw_silu_mul(g[c], u[c]);
    }
}
