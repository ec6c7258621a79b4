#!/usr/bin/env python3
"""numpy's sgemm (OpenBLAS) on the matmul bench's GEMM shapes: the "machine's sgemm peak"
that `ops::bench_report`'s GEMM numbers are compared with (DESIGN.md §8).

    OPENBLAS_NUM_THREADS=1 python3 scripts/ops/sgemm_peak.py
    OPENBLAS_NUM_THREADS=2 python3 scripts/ops/sgemm_peak.py

Prints GFLOP/s for out = x @ W.T with x [n, k] and W [rows, k] (our layout), best of several
runs, plus a large square sgemm as the peak. Needs only numpy.
"""

import os
import time

import numpy as np


def gflops(n, k, rows, min_time=1.0):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, k)).astype(np.float32)
    w = rng.uniform(-1, 1, (rows, k)).astype(np.float32)
    np.dot(x, w.T)
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < min_time:
        t = time.perf_counter()
        np.dot(x, w.T)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n * k * rows / best / 1e9


def main():
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "all")
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={threads}")
    for n, k, rows in [(512, 768, 768), (512, 768, 3072), (2048, 2048, 2048)]:
        print(f"sgemm n={n} k={k} rows={rows}: {gflops(n, k, rows):.1f} GFLOP/s")


if __name__ == "__main__":
    main()
