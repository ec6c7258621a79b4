// Rotary position embedding of the LLaMA decoder, HF `rotate_half` layout (SPEC-model.md §10.2),
// applied in place to the query and key heads of a batch of rows. CPU twin: `llm::rope::rotate`
// with the angles of `llm::rope::Rope::angles` (src/llm/rope.rs), which include the llama3
// frequency scaling.
//
// The angles are NOT computed here: the host computes the CPU's table (cos and sin of
// pos · inv_freq[i] in f64, rounded once to f32: `Rope::angles`) for positions 0..n_pos and
// uploads it once; the kernel reads each row's position from device memory (so a captured decode
// graph can be replayed with new positions) and looks the angles up. The rotation is the CPU's,
// op for op (two f32 multiplies and one f32 add/subtract per output, no FMA):
//   lo' = a·cos − b·sin,  hi' = b·cos + a·sin,  (a, b) = (x[i], x[i + half])
// so the results are bit-identical to the CPU's.
#include "common.cuh"

// rope_f32: rotates, for every row r, its n_q query heads and n_k key heads by the angles of
// position pos[r].
//   q      row r, query head h at q + r·ld_q + h·(2·half): 2·half f32 values, rotated in place
//   k      row r, key head h at k + r·ld_k + h·(2·half), likewise (may be in the same allocation
//          as q, e.g. a fused qkv row, but no element may belong to both)
//   pos    [rows] int32, device memory: the absolute position of each row
//   cos_t, sin_t  [n_pos, half] f32: the angle table (row p = Rope::angles(p))
//   rows, n_q, n_k, half, n_pos, ld_q, ld_k: sizes as above (ld_* ≥ heads·2·half)
// A position outside 0..n_pos (a caller bug the host cannot see before launch) writes NaN to
// that row's heads instead of reading outside the table, so the error surfaces downstream.
// Launch: grid (ceil((n_q + n_k) · half / 256), rows, 1); block (256, 1, 1); no dynamic shared
// memory. One thread per (row, head, pair): loads and stores are coalesced within a head.
extern "C" __global__ void __launch_bounds__(256)
rope_f32(float* __restrict__ q, float* __restrict__ k, const int* __restrict__ pos,
         const float* __restrict__ cos_t, const float* __restrict__ sin_t, int rows, int n_q,
         int n_k, int half, int n_pos, int ld_q, int ld_k) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y;
    if (g >= (n_q + n_k) * half || r >= rows) return;
    const int head = g / half, i = g - head * half;
    float* x = head < n_q ? q + (long long)r * ld_q + (long long)head * 2 * half
                          : k + (long long)r * ld_k + (long long)(head - n_q) * 2 * half;
    const int p = pos[r];
    if (p < 0 || p >= n_pos) {
        const float nan = __int_as_float(0x7fc00000);
        x[i] = nan;
        x[i + half] = nan;
        return;
    }
    const float c = cos_t[(long long)p * half + i], s = sin_t[(long long)p * half + i];
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
}
