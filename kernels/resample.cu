// Volume resize of preprocessing step 4 on the GPU (issue #9; SPEC-model.md §2): the canonical
// crop box of the stored CT, read through the reorientation (no copy), intensity-windowed tap by
// tap, resized to [D, H, W] with PyTorch's align_corners=False geometry.
//
// CPU twin: src/preprocess/resample.rs (`trilinear`, `nearest`, `linear_table`, `nearest_table`)
// and the window map of src/preprocess/window.rs (`(min(max(x, lo), hi) − lo) · scale`), as called
// by `preprocess::preprocess`.
//
// Source addressing (the CPU's `View` plus the crop): canonical voxel (cx, cy, cz) is stored at
//   src[base + cx·sx + cy·sy + cz·sz]         (strides may be negative: flipped axes)
// and output (d, h, w) reads the canonical box starting at (x0, y0, z0) of size (nx, ny, nz):
// x from `linear_table(nx, W)`, y from `linear_table(ny, H)`, z from `linear_table(nz, D)`.
//
// Numerics: bit-identical to the CPU. The tables are recomputed per thread in f64 with the CPU's
// IEEE operations (no contraction under --fmad=false), so they are the CPU's tables. Trilinear:
// the CPU blends the four (z, y) source rows at every source x of the box,
//   r(x) = t0·(h0·map(a) + h1·map(b)) + t1·(h0·map(c) + h1·map(e))     t0 = 1 − lz, h0 = 1 − ly
// then samples the row, out = (1 − lx)·r(x0) + lx·r(x1); here each output evaluates exactly those
// two row values with the same expression (eight taps). Nearest: map(src[tap]).
//
// Launch (both kernels): 1-D grid-stride over D·H·W outputs (W fastest, consecutive threads write
// consecutive voxels), any grid and block (the launchers use 256 threads, grid = min(ceil(n / 256),
// 4096)), no shared memory. Reads are gathers (8 taps per output, neighbours share cache lines);
// the op runs once per study.
#include "common.cuh"

struct ResampleView {
    long long base;       // stored index of canonical voxel (0, 0, 0)
    long long stride[3];  // stored-index step of canonical x, y, z (may be negative)
    int start[3];         // crop box start (canonical x, y, z)
    int size[3];          // crop box size (canonical x, y, z), each ≥ 1
};

struct ResampleWindow {
    int on;       // 0: identity (no window)
    float lo, hi; // window bounds as the CPU's WindowMap (hi = lo for an empty window)
    float scale;  // 1 / (hi − lo) computed in f32 on the host (0 for an empty window)
};

static __device__ __forceinline__ float rs_map(float x, const ResampleWindow& w) {
    // Rust f32::max / f32::min (a NaN operand yields the other one) = fmaxf / fminf.
    return w.on ? (fminf(fmaxf(x, w.lo), w.hi) - w.lo) * w.scale : x;
}

// `linear_table(n_in, n_out)` entry `o` (align_corners = False), in f64 as on the CPU.
static __device__ __forceinline__ void rs_linear(int n_in, int n_out, int o, int& i0, int& i1,
                                                 float& l1) {
    const double scale = (double)n_in / (double)n_out;
    const double s = fmax(((double)o + 0.5) * scale - 0.5, 0.0);
    i0 = min((int)floor(s), n_in - 1);
    i1 = min(i0 + 1, n_in - 1);
    l1 = (float)(s - (double)i0);
}

// `nearest_table(n_in, n_out)` entry `o` (nearest-exact).
static __device__ __forceinline__ int rs_nearest(int n_in, int n_out, int o) {
    const double scale = (double)n_in / (double)n_out;
    return min((int)floor(((double)o + 0.5) * scale), n_in - 1);
}

// resample_trilinear_f32: out[d, h, w] = trilinear resize of the windowed crop box (file doc).
//   src: f32 stored volume (x fastest; every tap index base + Σ c·stride lies inside it, checked
//   by the launcher).  out: f32 [od, oh, ow].  view, window: by value.
// Launch: 1-D grid-stride over od·oh·ow, any grid/block, no shared memory.
// Numerics: bit-identical to `preprocess::resample::trilinear` (with the window map).
extern "C" __global__ void __launch_bounds__(256)
    resample_trilinear_f32(const float* __restrict__ src, float* __restrict__ out, ResampleView v,
                           ResampleWindow win, int od, int oh, int ow) {
    const unsigned plane = (unsigned)oh * (unsigned)ow;
    const unsigned total = (unsigned)od * plane;
    const unsigned step = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int d = (int)(i / plane);
        const int h = (int)((i % plane) / (unsigned)ow);
        const int w = (int)(i % (unsigned)ow);
        int z0, z1, y0, y1, x0, x1;
        float lz, ly, lx;
        rs_linear(v.size[2], od, d, z0, z1, lz);
        rs_linear(v.size[1], oh, h, y0, y1, ly);
        rs_linear(v.size[0], ow, w, x0, x1, lx);
        const float t1 = lz, t0 = 1.0f - lz;
        const float h1 = ly, h0 = 1.0f - ly;
        const long long oz0 = (long long)(v.start[2] + z0) * v.stride[2];
        const long long oz1 = (long long)(v.start[2] + z1) * v.stride[2];
        const long long oy0 = (long long)(v.start[1] + y0) * v.stride[1];
        const long long oy1 = (long long)(v.start[1] + y1) * v.stride[1];
        const long long a = v.base + oz0 + oy0, b = v.base + oz0 + oy1;
        const long long c = v.base + oz1 + oy0, e = v.base + oz1 + oy1;
        float r[2];
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const long long ox = (long long)(v.start[0] + (k ? x1 : x0)) * v.stride[0];
            r[k] = t0 * (h0 * rs_map(src[a + ox], win) + h1 * rs_map(src[b + ox], win)) +
                   t1 * (h0 * rs_map(src[c + ox], win) + h1 * rs_map(src[e + ox], win));
        }
        out[i] = (1.0f - lx) * r[0] + lx * r[1];
    }
}

// resample_nearest_f32: out[d, h, w] = map(src[tap]) with the nearest-exact tables
// (i = min(floor((o + 0.5)·n_in / n_out), n_in − 1) per axis).
//   Arguments and launch as resample_trilinear_f32.
// Numerics: bit-identical to `preprocess::resample::nearest` followed by the window map.
extern "C" __global__ void __launch_bounds__(256)
    resample_nearest_f32(const float* __restrict__ src, float* __restrict__ out, ResampleView v,
                         ResampleWindow win, int od, int oh, int ow) {
    const unsigned plane = (unsigned)oh * (unsigned)ow;
    const unsigned total = (unsigned)od * plane;
    const unsigned step = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int d = (int)(i / plane);
        const int h = (int)((i % plane) / (unsigned)ow);
        const int w = (int)(i % (unsigned)ow);
        const long long at = v.base +
                             (long long)(v.start[2] + rs_nearest(v.size[2], od, d)) * v.stride[2] +
                             (long long)(v.start[1] + rs_nearest(v.size[1], oh, h)) * v.stride[1] +
                             (long long)(v.start[0] + rs_nearest(v.size[0], ow, w)) * v.stride[0];
        out[i] = rs_map(src[at], win);
    }
}
