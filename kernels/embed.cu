// Token embedding lookup of the LLaMA decoder (`embed_tokens`), for every storage type an
// embedding weight can have in a package (`tensor::Weight`: F32, F16, BF16, and the block-32
// quantized Q8_0, Q4_0, Q4_1 in their structure-of-arrays layout), output f32. CPU twin:
// `Weight::rows_to_f32` (src/tensor/weight.rs) as called by `Session::embed` and the prefill /
// decode paths in src/llm/session.rs and generate.rs, including caller-made input embeddings
// (`Input::Embeddings`, e.g. image features spliced in at `<im_patch>` positions).
//
// Row selection, from a device int32 id per output row (so a captured graph can be replayed):
//   0 ≤ id < vocab          → the table's row `id`, converted to f32;
//   −n_extra ≤ id ≤ −1      → row (−id − 1) of `extra` [n_extra, d] f32 (caller embeddings), copied;
//   anything else           → the output row is filled with NaN (the host cannot check ids that
//                             live in device memory; NaN surfaces the bug downstream — the
//                             device samplers then return −1 — instead of reading out of bounds).
//
// Numerics, bit-identical to the CPU's dequantization (`quant::{q8_0,q4_0,q4_1}`):
//   F32: copy.  F16, BF16: exact widening.
//   Q8_0: (float)(int8)q · d             (d = the block's f16 scale as f32)
//   Q4_0: d · (float)(nibble − 8)
//   Q4_1: d · (float)nibble + m          (two roundings, no FMA: the CPU's `d * q as f32 + m`)
// Quantized layout (logical [vocab, d], d % 32 == 0, blocks of 32 along a row, row-major):
//   values: Q8_0 32 bytes per block; Q4_0/Q4_1 16 bytes per block, byte j holds element j in its
//   low nibble and element j + 16 in its high nibble (ggml order); scales (and mins, Q4_1) one f16
//   per block, as uint16 bit patterns.
//
// Launch (every variant): grid (ceil(d / 256), rows, 1); block (256, 1, 1); no dynamic shared
// memory; one thread per output element (coalesced stores; table reads coalesced within a row).
#include "common.cuh"

// Which source an output row reads: 0 = the table row `*src`, 1 = the extra row `*src`, 2 = NaN.
static __device__ __forceinline__ int em_select(int id, int vocab, int n_extra, long long* src) {
    if (id >= 0 && id < vocab) {
        *src = id;
        return 0;
    }
    if (id < 0 && id >= -n_extra) {
        *src = (long long)(-(id + 1));
        return 1;
    }
    return 2;
}

// The common prologue: returns false when the thread has nothing to do or the row is handled
// (extra row copied or NaN written); otherwise sets *row (the table row) and the column `c`.
static __device__ __forceinline__ bool em_begin(const int* __restrict__ ids,
                                                const float* __restrict__ extra, int n_extra,
                                                float* __restrict__ out, int rows, int d,
                                                int vocab, long long* row, int* c) {
    *c = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y;
    if (*c >= d || r >= rows) return false;
    long long src = 0;
    const int kind = em_select(ids[r], vocab, n_extra, &src);
    float* o = out + (long long)r * d + *c;
    if (kind == 1) {
        *o = extra[src * d + *c];
        return false;
    }
    if (kind == 2) {
        *o = __int_as_float(0x7fc00000);
        return false;
    }
    *row = src;
    return true;
}

// embed_f32: out[r, :] = table[ids[r], :] (or the extra row / NaN, see the file comment).
//   table [vocab, d] f32; ids [rows] int32 (device); extra [n_extra, d] f32 (may be any valid
//   pointer when n_extra == 0); out [rows, d] f32.
// Launch and numerics: see the file comment (a copy: bit-identical).
extern "C" __global__ void __launch_bounds__(256)
embed_f32(const float* __restrict__ table, const int* __restrict__ ids,
          const float* __restrict__ extra, int n_extra, float* __restrict__ out, int rows, int d,
          int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    out[(long long)blockIdx.y * d + c] = table[row * d + c];
}

// embed_f16: as embed_f32 with table [vocab, d] f16 (uint16 bit patterns); exact widening.
extern "C" __global__ void __launch_bounds__(256)
embed_f16(const uint16_t* __restrict__ table, const int* __restrict__ ids,
          const float* __restrict__ extra, int n_extra, float* __restrict__ out, int rows, int d,
          int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    out[(long long)blockIdx.y * d + c] = mr_f16_to_f32(table[row * d + c]);
}

// embed_bf16: as embed_f32 with table [vocab, d] bf16 (uint16 bit patterns); exact widening.
extern "C" __global__ void __launch_bounds__(256)
embed_bf16(const uint16_t* __restrict__ table, const int* __restrict__ ids,
           const float* __restrict__ extra, int n_extra, float* __restrict__ out, int rows, int d,
           int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    out[(long long)blockIdx.y * d + c] = mr_bf16_to_f32(table[row * d + c]);
}

// embed_q8_0: table Q8_0 [vocab, d] (d % 32 == 0): values [vocab·d] int8 bytes, scales
// [vocab·d/32] f16. Value = (float)(int8)q · scale.
extern "C" __global__ void __launch_bounds__(256)
embed_q8_0(const uint8_t* __restrict__ values, const uint16_t* __restrict__ scales,
           const int* __restrict__ ids, const float* __restrict__ extra, int n_extra,
           float* __restrict__ out, int rows, int d, int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    const long long e = row * d + c;  // element index in the flattened table
    const float s = mr_f16_to_f32(scales[e >> 5]);
    out[(long long)blockIdx.y * d + c] = (float)(int8_t)values[e] * s;
}

// embed_q4_0: table Q4_0 [vocab, d] (d % 32 == 0): values [vocab·d/2] bytes (16 per block,
// ggml nibble order), scales [vocab·d/32] f16. Value = scale · (float)(nibble − 8).
extern "C" __global__ void __launch_bounds__(256)
embed_q4_0(const uint8_t* __restrict__ values, const uint16_t* __restrict__ scales,
           const int* __restrict__ ids, const float* __restrict__ extra, int n_extra,
           float* __restrict__ out, int rows, int d, int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    const long long e = row * d + c;
    const long long blk = e >> 5;
    const int j = (int)(e & 31);
    const uint8_t b = values[blk * 16 + (j & 15)];
    const int q = j < 16 ? (b & 0x0F) : (b >> 4);
    const float s = mr_f16_to_f32(scales[blk]);
    out[(long long)blockIdx.y * d + c] = s * (float)(q - 8);
}

// embed_q4_1: table Q4_1 [vocab, d] (d % 32 == 0): values as Q4_0, scales and mins
// [vocab·d/32] f16. Value = scale · (float)nibble + min (two roundings).
extern "C" __global__ void __launch_bounds__(256)
embed_q4_1(const uint8_t* __restrict__ values, const uint16_t* __restrict__ scales,
           const uint16_t* __restrict__ mins, const int* __restrict__ ids,
           const float* __restrict__ extra, int n_extra, float* __restrict__ out, int rows, int d,
           int vocab) {
    long long row;
    int c;
    if (!em_begin(ids, extra, n_extra, out, rows, d, vocab, &row, &c)) return;
    const long long e = row * d + c;
    const long long blk = e >> 5;
    const int j = (int)(e & 31);
    const uint8_t b = values[blk * 16 + (j & 15)];
    const int q = j < 16 ? (b & 0x0F) : (b >> 4);
    const float s = mr_f16_to_f32(scales[blk]), m = mr_f16_to_f32(mins[blk]);
    out[(long long)blockIdx.y * d + c] = s * (float)q + m;
}
