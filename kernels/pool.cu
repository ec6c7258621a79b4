// R² token pooling and mask pooling on the GPU (issue #9; SPEC-model.md §4, §6.3): the per-slice
// mean of the patch tokens (global tokens), adaptive average pooling of a slice's patch grid
// (region-representative tokens), the bilinear resize of 0/1 masks to the patch grid, the mask
// areas that rank slices, and the Osprey masked mean (binarize, normalize, weighted sum).
//
// CPU twins: src/region/pool.rs (`mean_rows`, `adaptive_pool_rows`, `bilinear_mask`,
// `linear_table` from src/preprocess/resample.rs) and src/region/tokens.rs (the mask weights
// `w = (m > thr) / (Σ(m > thr) + eps)` and `x_slot = Σ_i w_i · V[i]`, zero weights skipped).
// Every f32 result is bit-identical to the CPU: each output value is computed by one thread with
// the CPU's additions in the CPU's order (no parallel reductions over floats); the mask count is an
// integer reduction, exact in any order, as the CPU's f32 sum of 0/1 values is exact below 2^24.
// The bilinear tables are recomputed per thread in f64 with the CPU's `linear_table` arithmetic
// (IEEE f64 on the device, no contraction), so they are the same tables.
//
// Layouts follow tokens.rs: a feature array is [T, n1, d] (n1 = 1 + gp² tokens per slice, CLS
// first); a slice's patch grid is gp×gp row-major starting at row `first` (1: skip CLS); mask
// vectors are [n_slots, n_tokens] with n_tokens = T + K·g²; masks are [T, H, W] bytes, W fastest.
// All sizes are int (every buffer < 2^31 elements, checked by the launchers).
#include "common.cuh"

// Slice indices of the selected slices, by value (at most 16, the launcher's limit).
struct PoolSlices {
    int v[16];
};

// `linear_table(n_in, n_out)` entry `o` (align_corners = False), in f64 as on the CPU.
static __device__ __forceinline__ void pool_linear(int n_in, int n_out, int o, int& i0, int& i1,
                                                   float& l1) {
    const double scale = (double)n_in / (double)n_out;
    const double s = fmax(((double)o + 0.5) * scale - 0.5, 0.0);
    i0 = min((int)floor(s), n_in - 1);
    i1 = min(i0 + 1, n_in - 1);
    l1 = (float)(s - (double)i0);
}

// pool_mean_rows_f32: out[t, c] = (Σ_{r<n} x[t·slice_stride + (first + r)·d + c]) · (1/n), the
// sum in increasing r (`mean_rows`: the global tokens, and with d = 1 the global mask weights).
//   x: f32, n_slices groups of slice_stride values.  out: f32 [n_slices, d].
//   first + n rows of d values fit in slice_stride.
// Launch: 1-D grid-stride over n_slices·d (one thread per output), any block; no shared memory.
// Coalesced: consecutive threads read consecutive channels of a row.
// Numerics: bit-identical to `region::pool::mean_rows`.
extern "C" __global__ void __launch_bounds__(256)
    pool_mean_rows_f32(const float* __restrict__ x, float* __restrict__ out, int n_slices,
                       int slice_stride, int first, int n, int d) {
    const unsigned total = (unsigned)n_slices * (unsigned)d;
    const unsigned stride = gridDim.x * blockDim.x;
    const float inv = 1.0f / (float)n;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int t = (int)(i / (unsigned)d), c = (int)(i % (unsigned)d);
        const float* __restrict__ p = x + (size_t)t * slice_stride + (size_t)first * d + c;
        float acc = 0.0f;
        for (int r = 0; r < n; ++r) acc = acc + p[(size_t)r * d];
        out[i] = acc * inv;
    }
}

// pool_adaptive_f32: F.adaptive_avg_pool2d of the gp×gp grid of each selected slice to g×g:
//   out[k, oh, ow, c] = (Σ_{h ∈ [h0,h1)} Σ_{w ∈ [w0,w1)} grid_k[h, w, c]) · (1 / ((h1−h0)(w1−w0)))
//   h0 = oh·gp / g, h1 = ceil((oh+1)·gp / g) (same for w), h outer, w inner, as the CPU;
//   grid_k[h, w, c] = x[sel.v[k]·slice_stride + (first + h·gp + w)·d + c].
//   x: f32 slices of slice_stride values.  sel: n_sel (≤ 16) slice indices.  out: f32
//   [n_sel, g, g, d] (K grids, row-major cells, d channels).  1 ≤ g ≤ gp.
// Launch: 1-D grid-stride over n_sel·g²·d (one thread per output), any block, no shared memory.
// Numerics: bit-identical to `region::pool::adaptive_pool_rows`.
extern "C" __global__ void __launch_bounds__(256)
    pool_adaptive_f32(const float* __restrict__ x, float* __restrict__ out, PoolSlices sel, int n_sel,
                      int slice_stride, int first, int gp, int g, int d) {
    const unsigned cells = (unsigned)g * (unsigned)g;
    const unsigned total = (unsigned)n_sel * cells * (unsigned)d;
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int c = (int)(i % (unsigned)d);
        const unsigned cell = (i / (unsigned)d) % cells;
        const int k = (int)(i / ((unsigned)d * cells));
        const int oh = (int)(cell / (unsigned)g), ow = (int)(cell % (unsigned)g);
        const int h0 = oh * gp / g, h1 = ((oh + 1) * gp + g - 1) / g;
        const int w0 = ow * gp / g, w1 = ((ow + 1) * gp + g - 1) / g;
        const float* __restrict__ grid =
            x + (size_t)sel.v[k] * slice_stride + (size_t)first * d + c;
        float acc = 0.0f;
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) acc = acc + grid[(size_t)(h * gp + w) * d];
        out[i] = acc * (1.0f / (float)((h1 - h0) * (w1 - w0)));
    }
}

// pool_bilinear_mask_u8: F.interpolate(mode="bilinear", align_corners=False) of each [h, w] byte
// mask (values used as they are: 0/1 masks give [0, 1]) to [oh, ow] f32:
//   top = (1−lx)·m[y0, x0] + lx·m[y0, x1];  bottom = (1−lx)·m[y1, x0] + lx·m[y1, x1]
//   out = (1−ly)·top + ly·bottom       (tables of `linear_table`, recomputed in f64)
//   masks: u8 [n, h, w].  out: f32 [n, oh, ow].
// Launch: 1-D grid-stride over n·oh·ow, any block, no shared memory.
// Numerics: bit-identical to `region::pool::bilinear_mask` of each slice.
extern "C" __global__ void __launch_bounds__(256)
    pool_bilinear_mask_u8(const uint8_t* __restrict__ masks, float* __restrict__ out, int n, int h,
                          int w, int oh, int ow) {
    const unsigned plane = (unsigned)oh * (unsigned)ow;
    const unsigned total = (unsigned)n * plane;
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int s = (int)(i / plane);
        const int y = (int)((i % plane) / (unsigned)ow), x = (int)(i % (unsigned)ow);
        int y0, y1, x0, x1;
        float ly, lx;
        pool_linear(h, oh, y, y0, y1, ly);
        pool_linear(w, ow, x, x0, x1, lx);
        const uint8_t* __restrict__ m = masks + (size_t)s * h * w;
        const uint8_t* __restrict__ r0 = m + (size_t)y0 * w;
        const uint8_t* __restrict__ r1 = m + (size_t)y1 * w;
        const float top = (1.0f - lx) * (float)r0[x0] + lx * (float)r0[x1];
        const float bottom = (1.0f - lx) * (float)r1[x0] + lx * (float)r1[x1];
        out[i] = (1.0f - ly) * top + ly * bottom;
    }
}

// pool_mask_area_u8: out[s] = number of nonzero bytes of plane s (the voxel counts that rank the
// slices in `select_slices`).
//   masks: u8 [n, plane].  out: u32 [n].
// Launch: grid n (one block per plane), block 256 (a multiple of 32, ≤ 1024), shared memory 32
// ints (static). Integer sums: exact and deterministic.
extern "C" __global__ void __launch_bounds__(256)
    pool_mask_area_u8(const uint8_t* __restrict__ masks, uint32_t* __restrict__ out, int plane) {
    __shared__ int scratch[32];
    const uint8_t* __restrict__ m = masks + (size_t)blockIdx.x * plane;
    int count = 0;
    for (int i = threadIdx.x; i < plane; i += blockDim.x) count += m[i] != 0;
    count = mr_warp_sum_i32(count);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = count;
    __syncthreads();
    if (warp == 0) {
        int t = lane < (int)(blockDim.x >> 5) ? scratch[lane] : 0;
        t = mr_warp_sum_i32(t);
        if (lane == 0) out[blockIdx.x] = (uint32_t)t;
    }
}

// pool_masked_mean_f32: the Osprey masked mean of tokens.rs for every slot:
//   on_i = m[slot, i] > threshold;  inv = 1 / (count(on) + eps);  w_i = on_i · inv
//   out[slot, c] = Σ_{i : w_i ≠ 0} w_i · v[i, c]      (product then sum, in increasing i)
//   m: f32 [n_slots, n_tokens] mask vectors.  v: f32 [n_tokens, d] the R²-pooled level features.
//   out: f32 [n_slots, d].  n_tokens < 2^24 (so the count is exact in f32).
// Launch: grid (ceil(d / blockDim.x), n_slots), block 256 (multiple of 32, ≤ 1024), shared memory
// 32 ints (static).
// Numerics: bit-identical to tokens.rs (an empty mask gives a zero row when eps > 0).
extern "C" __global__ void __launch_bounds__(256)
    pool_masked_mean_f32(const float* __restrict__ m, const float* __restrict__ v,
                         float* __restrict__ out, int n_tokens, int d, float threshold, float eps) {
    __shared__ int scratch[32];
    const int slot = blockIdx.y;
    const float* __restrict__ ms = m + (size_t)slot * n_tokens;
    int count = 0;
    for (int i = threadIdx.x; i < n_tokens; i += blockDim.x) count += ms[i] > threshold;
    count = mr_warp_sum_i32(count);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = count;
    __syncthreads();
    int total = lane < (int)(blockDim.x >> 5) ? scratch[lane] : 0;
    total = mr_warp_sum_i32(total);
    const float inv = 1.0f / ((float)total + eps);

    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float acc = 0.0f;
    for (int i = 0; i < n_tokens; ++i) {
        // As the CPU: w = on · inv, skipped when zero (so even eps = 0 with an empty mask, where
        // 0 · inf is NaN, gives the CPU's bits).
        const float wi = (ms[i] > threshold ? 1.0f : 0.0f) * inv;
        if (wi != 0.0f) acc = acc + wi * v[(size_t)i * d + c];
    }
    out[(size_t)slot * d + c] = acc;
}
