#!/usr/bin/env python3
"""PyTorch CPU and numpy sgemm on the encoder's shapes, to compare with
`medregion bench vision` (run both on the same machine, same thread count, one after the
other; `scripts/vision/bench_compare.py` does that).

    /work/venv-hf/bin/python scripts/vision/bench_torch.py --threads 2 [--size 256] [--slices 32] \
        [--impl sdpa] [--no-sgemm] [--batch 8] [--json]

Prints: numpy (OpenBLAS) sgemm GFLOP/s on the encoder GEMM shapes (n = 8 slices x T tokens,
out = x @ W.T, n = --batch slices x T tokens) and on a large square product (the "sgemm peak"), then transformers'
Dinov2Model (ViT-B/14, 12 layers, random weights, float32, eager and sdpa attention) on
`--slices` slices of `--size` px: seconds and slices/s, best of `--repeat` runs.
"""
import argparse
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--impl", action="append", choices=["eager", "sdpa"], help="attention (default: both)")
    ap.add_argument("--no-sgemm", action="store_true", help="skip the numpy sgemm part")
    ap.add_argument("--batch", type=int, default=8, help="slices per GEMM (rows = batch x tokens)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import torch
    from transformers import Dinov2Config, Dinov2Model

    torch.set_num_threads(args.threads)
    t = 1 + (args.size // 14) ** 2
    rng = np.random.default_rng(0)

    def sgemm(n, k, rows, reps=3):
        x = rng.uniform(-1, 1, (n, k)).astype(np.float32)
        w = rng.uniform(-1, 1, (rows, k)).astype(np.float32)
        x @ w.T
        best = float("inf")
        for _ in range(reps):
            s = time.perf_counter()
            x @ w.T
            best = min(best, time.perf_counter() - s)
        return 2.0 * n * k * rows / best / 1e9

    doc = {"threads": args.threads, "numpy": np.__version__, "torch": torch.__version__,
           "size": args.size, "slices": args.slices, "tokens": t, "sgemm": {}, "dinov2": {}}
    say = (lambda *a: None) if args.json else print
    say(f"# threads {args.threads}, numpy {np.__version__}, torch {torch.__version__}")
    n = args.batch * t
    for name, k, rows in [] if args.no_sgemm else [("qkv_out", 768, 768), ("fc1", 768, 3072), ("fc2", 3072, 768)]:
        doc["sgemm"][name] = g = sgemm(n, k, rows)
        say(f"numpy sgemm {name} [{n}x{k}]·[{rows}x{k}]ᵀ: {g:.1f} GFLOP/s")
    if not args.no_sgemm:
        doc["sgemm"]["peak"] = g = sgemm(2048, 2048, 2048)
        say(f"numpy sgemm peak 2048^3: {g:.1f} GFLOP/s")

    cfg = Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                       image_size=518, patch_size=14, layer_norm_eps=1e-6, qkv_bias=True)
    x = torch.randn(args.slices, 3, args.size, args.size)
    for impl in args.impl or ["eager", "sdpa"]:
        model = Dinov2Model(cfg).eval()
        model.set_attn_implementation(impl)
        best = float("inf")
        with torch.inference_mode():
            model(pixel_values=x[:1])
            for _ in range(args.repeat):
                s = time.perf_counter()
                model(pixel_values=x, output_hidden_states=True)
                best = min(best, time.perf_counter() - s)
        doc["dinov2"][impl] = {"seconds": best, "slices_per_s": args.slices / best}
        say(f"torch Dinov2Model ({impl}) {args.slices} slices at {args.size}px: {best:.2f} s = {args.slices / best:.2f} slices/s")
    if args.json:
        import json
        print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
