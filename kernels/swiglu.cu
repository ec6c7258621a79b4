// SwiGLU of the LLaMA MLP: out = silu(gate) ⊙ up (SPEC-model.md §10.2). CPU twin: the loop in
// `llm::forward::forward` (src/llm/forward.rs):
//   *g = *g / (1.0 + (-*g).exp()) * u
// i.e. e = expf(−g) (f32), t = 1 + e (f32 add), s = g / t (f32 IEEE divide), out = s · u.
//
// The CPU's `f32::exp` is glibc's `expf` (Rust calls the platform libm). glibc ≥ 2.27 computes
// expf with one algorithm (ARM optimized-routines, sysdeps/ieee754/flt-32/e_expf.c): a 32-entry
// table of 2^(i/32) and a cubic polynomial evaluated in f64, then one rounding to f32. It is NOT
// always correctly rounded (max 0.502 ulp), so CUDA's expf (≤ 2 ulp) or a correctly rounded exp
// would differ from the CPU on some inputs. `sw_glibc_expf` below is that algorithm, in f64,
// op for op. Checked on the development machine against glibc 2.36's expf (both its FMA and its
// plain build) on every 7th f32 bit pattern (613 M inputs): identical bits on all of them. With
// it, the kernel is bit-identical to the CPU twin (on a host whose libm is glibc ≥ 2.27).
// The table below is 2^(i/32) correctly rounded to f64 (computed independently with 80-digit
// decimal arithmetic), minus i << 47, as the algorithm expects.
// Cost: ~10 f64 operations per element; full rate on sm_80/sm_90, 1/64 rate on sm_86/sm_89
// (still small next to the MLP matmuls around it).
#include "common.cuh"

__constant__ uint64_t sw_exp2_tab[32] = {
    0x3ff0000000000000ull, 0x3fefd9b0d3158574ull, 0x3fefb5586cf9890full, 0x3fef9301d0125b51ull,
    0x3fef72b83c7d517bull, 0x3fef54873168b9aaull, 0x3fef387a6e756238ull, 0x3fef1e9df51fdee1ull,
    0x3fef06fe0a31b715ull, 0x3feef1a7373aa9cbull, 0x3feedea64c123422ull, 0x3feece086061892dull,
    0x3feebfdad5362a27ull, 0x3feeb42b569d4f82ull, 0x3feeab07dd485429ull, 0x3feea47eb03a5585ull,
    0x3feea09e667f3bcdull, 0x3fee9f75e8ec5f74ull, 0x3feea11473eb0187ull, 0x3feea589994cce13ull,
    0x3feeace5422aa0dbull, 0x3feeb737b0cdc5e5ull, 0x3feec49182a3f090ull, 0x3feed503b23e255dull,
    0x3feee89f995ad3adull, 0x3feeff76f2fb5e47ull, 0x3fef199bdd85529cull, 0x3fef3720dcef9069ull,
    0x3fef5818dcfba487ull, 0x3fef7c97337b9b5full, 0x3fefa4afa2a490daull, 0x3fefd0765b6e4540ull,
};

// glibc's expf, bit for bit (see the file comment). Special cases as glibc: −inf → 0, NaN and
// +inf → x + x, overflow (x > 0x1.62e42ep6) → +inf, underflow (x < −0x1.9fe368p6) → 0.
static __device__ __forceinline__ float sw_glibc_expf(float x) {
    const uint32_t ux = __float_as_uint(x);
    const uint32_t abstop = (ux >> 20) & 0x7ff;
    if (abstop >= 0x42b) {  // |x| ≥ 88 (top 12 bits of 88.0f), or not finite
        if (ux == 0xff800000u) return 0.0f;
        if (abstop >= 0x7f8) return x + x;
        if (x > 0x1.62e42ep6f) return __int_as_float(0x7f800000);
        if (x < -0x1.9fe368p6f) return 0.0f;
    }
    const double n = 32.0;
    const double inv_ln2_n = 0x1.71547652b82fep+0 * n;
    const double shift = 0x1.8p+52;
    const double c0 = 0x1.c6af84b912394p-5 / n / n / n;
    const double c1 = 0x1.ebfce50fac4f3p-3 / n / n;
    const double c2 = 0x1.62e42ff0c52d6p-1 / n;
    const double xd = (double)x;
    const double z = inv_ln2_n * xd;
    // Round z to an integer (ties to even) with the shift trick, as glibc on x86-64 does.
    double kd = __dadd_rn(z, shift);
    const uint64_t ki = (uint64_t)__double_as_longlong(kd);
    kd = __dsub_rn(kd, shift);
    const double r = z - kd;
    uint64_t t = sw_exp2_tab[ki & 31];
    t += ki << 47;
    const double s = __longlong_as_double((long long)t);
    const double zz = fma(c0, r, c1);
    const double r2 = r * r;
    double y = fma(c2, r, 1.0);
    y = fma(zz, r2, y);
    y = y * s;
    return (float)y;
}

static __device__ __forceinline__ float sw_silu_mul(float g, float u) {
    return g / (1.0f + sw_glibc_expf(-g)) * u;
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
