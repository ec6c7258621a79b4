// The vision encoder's input side around the patch-embedding GEMM (issue #9; SPEC-model.md §3.2):
//
//   volume [D, H, W] in [0, 1] ─ resize each slice to S×S, 3 channels, (x − mean_c) / std_c ─►
//   pixels [B, 3, S, S] ─ unfold p×p patches (im2col) ─► rows [B·g², 3·p·p] ─ cuBLAS GEMM with
//   the conv weight [D, 3·p·p] ─► pe [B·g², D] ─ h = cat(cls, pe + bias) + positions ─► [B·T, D]
//
// CPU twins: src/vision/mod.rs `slices_from_volume` (resize + normalize), src/vision/encoder.rs
// `unfold_patches` (the column order of the flattened conv weight [D, C, p, p]:
// col = (c·p + ky)·p + kx; row = b·g² + gy·g + gx) and the embedding loop of `forward_batch`
// (`cls + pos` for token 0, `(x + bias) + pos` for patch tokens). g = S / p (floor): the last
// S mod p pixels of each side are dropped, as by the stride-p convolution.
//
// Numerics: f32 outputs are bit-identical to the CPU (the copy is exact; the resize uses the CPU's
// `linear_table` recomputed per thread in f64 with the same IEEE operations and the CPU's
// `a + (b − a)·l` lerps; the normalization is an IEEE division). f16/bf16 rows are the
// round-to-nearest-even conversion of those f32 values (the GEMM input for cuBLAS in half
// precision).
//
// Launch (every kernel here): 1-D grid-stride over the outputs, any grid and block (the launchers
// use 256 threads, grid = min(ceil(n / 256), 4096)), no shared memory. One thread per output
// element; consecutive threads write consecutive columns (coalesced stores; reads are p-long runs
// of a pixel row).
#include "common.cuh"

static __device__ __forceinline__ uint16_t pe_to_bf16(float f) {
    uint16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

struct PeF32 {
    typedef float T;
    static __device__ __forceinline__ float cvt(float v) { return v; }
};
struct PeF16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return mr_f32_to_f16(v); }
};
struct PeBf16 {
    typedef uint16_t T;
    static __device__ __forceinline__ uint16_t cvt(float v) { return pe_to_bf16(v); }
};

// Per-channel normalization constants, by value.
struct PeNorm {
    float mean[3];
    float std[3];
};

// `linear_table(n_in, n_out)` entry `o` (align_corners = False), in f64 as on the CPU.
static __device__ __forceinline__ void pe_linear(int n_in, int n_out, int o, int& i0, int& i1,
                                                 float& l1) {
    const double scale = (double)n_in / (double)n_out;
    const double s = fmax(((double)o + 0.5) * scale - 0.5, 0.0);
    i0 = min((int)floor(s), n_in - 1);
    i1 = min(i0 + 1, n_in - 1);
    l1 = (float)(s - (double)i0);
}

// Decomposes a patch-row element index: row = b·g² + gy·g + gx, col = (c·p + ky)·p + kx.
struct PeIndex {
    int b, c, y, x;  // slice, channel, pixel row gy·p + ky and column gx·p + kx in the S×S image
};

static __device__ __forceinline__ PeIndex pe_index(unsigned i, int channels, int g, int p) {
    const unsigned pp = (unsigned)p * (unsigned)p;
    const unsigned cols = (unsigned)channels * pp;
    const unsigned row = i / cols, col = i % cols;
    const unsigned g2 = (unsigned)g * (unsigned)g;
    const unsigned cell = row % g2;
    PeIndex r;
    r.b = (int)(row / g2);
    r.c = (int)(col / pp);
    r.y = (int)(cell / (unsigned)g) * p + (int)((col % pp) / (unsigned)p);
    r.x = (int)(cell % (unsigned)g) * p + (int)(col % (unsigned)p);
    return r;
}

template <class O>
static __device__ __forceinline__ void pe_unfold(const float* __restrict__ pixels,
                                                 typename O::T* __restrict__ rows, int batch,
                                                 int channels, int s, int p) {
    const int g = s / p;
    const unsigned total = (unsigned)batch * (unsigned)(g * g) * (unsigned)(channels * p * p);
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const PeIndex e = pe_index(i, channels, g, p);
        rows[i] = O::cvt(pixels[(((size_t)e.b * channels + e.c) * s + e.y) * s + e.x]);
    }
}

// patch_embed_unfold_f32 / _f16 / _bf16: im2col of normalized pixels for the patch GEMM:
//   rows[b·g² + gy·g + gx, (c·p + ky)·p + kx] = pixels[b, c, gy·p + ky, gx·p + kx],  g = s / p
//   pixels: f32 [batch, channels, s, s].  rows: [batch·g², channels·p·p] f32 or f16/bf16 patterns.
// Launch: 1-D grid-stride over the rows' elements, any grid/block, no shared memory.
// Numerics: f32 exact copy (= encoder.rs `unfold_patches`); f16/bf16 RNE.
#define PE_UNFOLD(NAME, O)                                                                      \
    extern "C" __global__ void __launch_bounds__(256)                                           \
        NAME(const float* __restrict__ pixels, O::T* __restrict__ rows, int batch, int channels, \
             int s, int p) {                                                                     \
        pe_unfold<O>(pixels, rows, batch, channels, s, p);                                       \
    }
PE_UNFOLD(patch_embed_unfold_f32, PeF32)
PE_UNFOLD(patch_embed_unfold_f16, PeF16)
PE_UNFOLD(patch_embed_unfold_bf16, PeBf16)

template <class O>
static __device__ __forceinline__ void pe_volume(const float* __restrict__ volume,
                                                 typename O::T* __restrict__ rows, int depth,
                                                 int h, int w, int s, int p, PeNorm norm) {
    const int g = s / p;
    const unsigned total = (unsigned)depth * (unsigned)(g * g) * (unsigned)(3 * p * p);
    const unsigned stride = gridDim.x * blockDim.x;
    const bool same = h == s && w == s;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const PeIndex e = pe_index(i, 3, g, p);
        const float* __restrict__ src = volume + (size_t)e.b * h * w;
        float v;
        if (same) {
            v = src[(size_t)e.y * w + e.x];
        } else {
            int y0, y1, x0, x1;
            float ly, lx;
            pe_linear(h, s, e.y, y0, y1, ly);
            pe_linear(w, s, e.x, x0, x1, lx);
            const float* __restrict__ r0 = src + (size_t)y0 * w;
            const float* __restrict__ r1 = src + (size_t)y1 * w;
            const float top = r0[x0] + (r0[x1] - r0[x0]) * lx;
            const float bottom = r1[x0] + (r1[x1] - r1[x0]) * lx;
            v = top + (bottom - top) * ly;
        }
        // Select, not index: a dynamic index into the by-value struct would put it on the stack.
        const float mean = e.c == 0 ? norm.mean[0] : (e.c == 1 ? norm.mean[1] : norm.mean[2]);
        const float sd = e.c == 0 ? norm.std[0] : (e.c == 1 ? norm.std[1] : norm.std[2]);
        rows[i] = O::cvt((v - mean) / sd);
    }
}

// patch_embed_volume_f32 / _f16 / _bf16: `slices_from_volume` and the im2col in one pass, from the
// preprocessed volume straight to the patch GEMM's rows:
//   pixel(b, c, y, x) = (resize(volume[b])[y, x] − mean_c) / std_c       (3 channels)
//   resize = identity when h = w = s, else bilinear align_corners=False (the CPU's lerps)
//   rows[b·g² + gy·g + gx, (c·p + ky)·p + kx] = pixel(b, c, gy·p + ky, gx·p + kx)
//   volume: f32 [depth, h, w] (W fastest).  rows: [depth·g², 3·p·p] f32 or f16/bf16 patterns.
//   norm: image_mean[3], image_std[3] by value.
// Launch: 1-D grid-stride over the rows' elements, any grid/block, no shared memory.
// Numerics: f32 bit-identical to `slices_from_volume` followed by `unfold_patches`.
#define PE_VOLUME(NAME, O)                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                            \
        NAME(const float* __restrict__ volume, O::T* __restrict__ rows, int depth, int h, int w,  \
             int s, int p, PeNorm norm) {                                                         \
        pe_volume<O>(volume, rows, depth, h, w, s, p, norm);                                      \
    }
PE_VOLUME(patch_embed_volume_f32, PeF32)
PE_VOLUME(patch_embed_volume_f16, PeF16)
PE_VOLUME(patch_embed_volume_bf16, PeBf16)

// patch_embed_assemble_f32: the embeddings after the patch GEMM (hidden_states[0]):
//   h[b, 0, c] = cls[c] + pos[0, c]
//   h[b, j, c] = (pe[b·g² + j − 1, c] + bias[c]) + pos[j, c]       for 1 ≤ j ≤ g²
//   pe: f32 [batch·g², d] (GEMM output without bias).  bias, cls: f32 [d].  pos: f32 [1 + g², d]
//   (the table baked for this image size).  h: f32 [batch·(1 + g²), d].
// Launch: 1-D grid-stride over batch·(1 + g²)·d, any grid/block, no shared memory.
// Numerics: bit-identical to the embedding loop of encoder.rs `forward_batch`.
extern "C" __global__ void __launch_bounds__(256)
    patch_embed_assemble_f32(const float* __restrict__ pe, const float* __restrict__ bias,
                             const float* __restrict__ cls, const float* __restrict__ pos,
                             float* __restrict__ h, int batch, int g2, int d) {
    const unsigned t = (unsigned)g2 + 1u;
    const unsigned total = (unsigned)batch * t * (unsigned)d;
    const unsigned stride = gridDim.x * blockDim.x;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const unsigned c = i % (unsigned)d, tok = i / (unsigned)d;
        const unsigned b = tok / t, j = tok % t;
        const float p = pos[(size_t)j * d + c];
        h[i] = j == 0 ? cls[c] + p : (pe[((size_t)b * g2 + j - 1) * d + c] + bias[c]) + p;
    }
}
