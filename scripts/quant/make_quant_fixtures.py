#!/usr/bin/env python3
"""Write tests/fixtures/quant/random.gguf: gguf-py's quantization and dequantization results
that `tests/quant_gguf.rs` compares our Rust kernels against, bit for bit.

    python3 -m venv /tmp/venv-quant && /tmp/venv-quant/bin/pip install -r scripts/quant/requirements.txt
    /tmp/venv-quant/bin/python scripts/quant/make_quant_fixtures.py

The fixture is itself a GGUF file (architecture "medregion-quant-fixture"), so the test also
reads a file written by gguf-py's writer. Tensors:

  input                 F32  (n_blocks rows of 32)   random and edge-case blocks
  q8_0 / q4_0 / q4_1    that ggml type               gguf.quants.quantize(input, T), raw blocks
  q8_0.deq / ...        F32                          gguf.quants.dequantize of those blocks
  q2_k ... q6_k, q5_0, q5_1, f16, bf16   that type   random blocks (finite f16 scales)
  q2_k.deq ...          F32                          gguf.quants.dequantize of those blocks

Generate on x86-64 with numpy's AVX2 dispatch (not AVX-512): Q4_1 stores whichever zero
numpy's SIMD min/max reduction returns when a block holds both +0.0 and -0.0, and that choice
is lane-dependent (see src/quant/numpy_compat.rs). The script prints the dispatch it ran with.
Deterministic: fixed seed, so rerunning gives the same bytes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "quant" / "random.gguf"
N_BLOCKS = 512
QK = 32

f32 = np.float32


def edge_blocks(rng: np.random.Generator) -> list[np.ndarray]:
    """Blocks that exercise every special case we know of in the three quantizers."""
    b: list[np.ndarray] = []
    z = np.zeros(QK, f32)
    b.append(z.copy())                                  # all +0
    b.append(np.full(QK, -0.0, f32))                    # all -0
    for _ in range(10):                                 # +0/-0 mixed: signed-zero min/max
        b.append(np.where(rng.random(QK) < 0.5, f32(-0.0), f32(0.0)).astype(f32))
    for p in (0, 3, 7, 8, 15, 24, 25, 31):              # one -0 / one +0 at each lane class
        x = np.zeros(QK, f32); x[p] = -0.0; b.append(x)
        x = np.full(QK, -0.0, f32); x[p] = 0.0; b.append(x)
    for _ in range(10):                                 # zeros (both signs) + positives: min is 0
        x = np.abs(rng.normal(size=QK)).astype(f32)
        m = rng.random(QK) < 0.4
        x[m] = np.where(rng.random(m.sum()) < 0.5, f32(-0.0), f32(0.0))
        b.append(x)
    for _ in range(6):                                  # zeros (both signs) + negatives: max is 0
        x = -np.abs(rng.normal(size=QK)).astype(f32)
        m = rng.random(QK) < 0.4
        x[m] = np.where(rng.random(m.sum()) < 0.5, f32(-0.0), f32(0.0))
        b.append(x)
    for v in (1.5, -1.5, 65504.0, -65504.0, 1e-3, 7.0, -8.0, 1e-30):   # constant blocks
        b.append(np.full(QK, v, f32))
    for p, v in ((0, 1.0), (5, -1.0), (31, 2.0), (16, -3.0)):          # one nonzero
        x = np.zeros(QK, f32); x[p] = v; b.append(x)
    x = rng.uniform(-1, 1, QK).astype(f32); x[2] = 3.0; x[10] = -3.0; b.append(x)   # |max| ties
    x = rng.uniform(-1, 1, QK).astype(f32); x[2] = -3.0; x[10] = 3.0; b.append(x)
    x = np.zeros(QK, f32); x[0] = -0.0; x[1] = 0.0; b.append(x)
    # Q8_0 rounding ties: amax 127 -> d = 1, id = 1: x.5 rounds away from zero.
    x = (np.arange(QK, dtype=f32) - 16) + f32(0.5); x[0] = 127.0; x[1] = -126.5; b.append(x)
    # Q4_0 ties: max = -8 -> d = 1, x + 8.5 lands on integers.
    x = (np.arange(QK, dtype=f32) * f32(0.5) - 8).astype(f32); b.append(x)
    # Q4_1 ties: min 0, max 15 -> d = 1, (x - 0) + 0.5 lands on integers.
    x = (np.arange(QK, dtype=f32) % 16 + f32(0.5)).astype(f32); x[0] = 0.0; x[1] = 15.0; b.append(x)
    # Tiny blocks: scales go subnormal, 1/d overflows to inf (numpy's casts decide).
    for amax in (1e-36, 2.5e-38, 1e-38, 5e-39, 3e-39, 2.9e-39, 1e-39, 1e-40, 1e-42, 1e-44,
                 5.6e-45, 2.8e-45, 1.4e-45, 1e-7, 3e-8, 1e-6, 3e-6, 6e-5):
        x = rng.uniform(-1, 1, QK).astype(f32)
        x = (x / np.abs(x).max() * f32(amax)).astype(f32)
        x[3] = 0.0; x[9] = -0.0
        b.append(x)
        b.append(np.abs(x))
    # Huge blocks: f16 scale/min overflow to inf, f32 max - min overflows to inf.
    for amax in (65504.0, 65520.0, 127 * 65504.0, 127 * 65520.0, 8 * 65504.0, 8 * 65520.0,
                 15 * 65504.0, 1e7, 1e10, 1e30, 3e38):
        x = rng.uniform(-1, 1, QK).astype(f32)
        x = (x / np.abs(x).max() * f32(amax)).astype(f32)
        b.append(x)
        y = x.copy(); y[4] = f32(amax); y[5] = f32(-amax); b.append(y)
    x = np.full(QK, 3e38, f32); x[::2] = -3e38; b.append(x)
    x = rng.uniform(0, 1, QK).astype(f32); x[7] = -65520.0; b.append(x)
    return b


def random_blocks(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    kinds = [
        lambda: rng.normal(0, 1, QK),
        lambda: rng.normal(0, 1e-3, QK),
        lambda: rng.normal(0, 1e-2, QK),
        lambda: rng.normal(0, 100, QK),
        lambda: rng.normal(3, 0.5, QK),
        lambda: rng.uniform(-1, 1, QK),
        lambda: rng.uniform(0, 1, QK),
        lambda: -rng.uniform(0, 1, QK),
        lambda: rng.standard_cauchy(QK).clip(-1e4, 1e4),
        lambda: rng.integers(-8, 8, QK).astype(np.float64),
        lambda: np.where(rng.random(QK) < 0.9, 0.0, rng.normal(0, 1, QK)),
        lambda: rng.normal(0, 1, QK) * 10.0 ** rng.integers(-20, 20),
    ]
    return [kinds[i % len(kinds)]().astype(f32) for i in range(n)]


def random_ggml_blocks(rng: np.random.Generator, qtype: T, n_blocks: int) -> np.ndarray:
    """Random block bytes with finite f16 scale fields (offsets from ggml-common.h)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    f16_fields = {
        T.Q5_0: [0], T.Q5_1: [0, 2], T.Q2_K: [80, 82], T.Q3_K: [108],
        T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    }[qtype]
    for off in f16_fields:
        vals = (rng.normal(0, 1, n_blocks) * 10.0 ** rng.integers(-6, 2, n_blocks)).astype(np.float16)
        vals[0] = 0.0
        vals[1] = -0.0 if n_blocks > 1 else vals[1]
        vals[-1] = np.float16(6e-8)  # smallest subnormal
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return raw


def main() -> int:
    from numpy._core._multiarray_umath import __cpu_features__ as cpu  # type: ignore

    dispatch = "AVX512F" if cpu.get("AVX512F") else ("AVX2" if cpu.get("AVX2") else "baseline")
    from importlib.metadata import version

    print(f"numpy {np.__version__}, gguf {version('gguf')}, "
          f"reductions dispatch {dispatch}")
    if dispatch != "AVX2":
        print("warning: not the AVX2 dispatch; Q4_1 signed-zero blocks may differ", file=sys.stderr)

    rng = np.random.default_rng(20261129)
    blocks = edge_blocks(rng)
    assert len(blocks) <= N_BLOCKS, len(blocks)
    blocks += random_blocks(rng, N_BLOCKS - len(blocks))
    x = np.stack(blocks).astype(f32)
    assert x.shape == (N_BLOCKS, QK)
    assert not np.isnan(x).any() and np.isfinite(x).all()

    w = gguf.GGUFWriter(OUT, "medregion-quant-fixture")
    w.add_string("medregion.fixture.generator", "scripts/quant/make_quant_fixtures.py")
    w.add_string("medregion.fixture.numpy", np.__version__)
    w.add_string("medregion.fixture.gguf", version("gguf"))
    w.add_uint32("medregion.fixture.n_edge_blocks", len(edge_blocks(np.random.default_rng(0))))
    w.add_tensor("input", x)
    with np.errstate(all="ignore"):
        for name, qt in (("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)):
            q = quants.quantize(x, qt)
            deq = quants.dequantize(q, qt)
            assert deq.dtype == f32 and deq.shape == x.shape
            w.add_tensor(name, q, raw_dtype=qt)
            w.add_tensor(f"{name}.deq", deq)
        for name, qt, n in (("q5_0", T.Q5_0, 32), ("q5_1", T.Q5_1, 32), ("q2_k", T.Q2_K, 8),
                            ("q3_k", T.Q3_K, 8), ("q4_k", T.Q4_K, 8), ("q5_k", T.Q5_K, 8),
                            ("q6_k", T.Q6_K, 8)):
            raw = random_ggml_blocks(rng, qt, n)
            deq = quants.dequantize(raw, qt)
            w.add_tensor(name, raw, raw_dtype=qt)
            w.add_tensor(f"{name}.deq", deq)
        # Plain 16-bit types: every bit pattern class, NaN payloads included.
        bits = rng.integers(0, 1 << 16, 512, dtype=np.uint16)
        bits[:8] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7C01, 0xFE00, 0x0001, 0x03FF]
        w.add_tensor("f16", bits.view(np.float16))
        w.add_tensor("f16.deq", quants.dequantize(bits.view(np.uint8), T.F16))
        bbits = rng.integers(0, 1 << 16, 512, dtype=np.uint16)
        bbits[:6] = [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7F81, 0x0001]
        w.add_tensor("bf16", bbits.view(np.uint8), raw_dtype=T.BF16)
        w.add_tensor("bf16.deq", quants.dequantize(bbits.view(np.uint8), T.BF16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {N_BLOCKS} blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
