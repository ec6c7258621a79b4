#!/usr/bin/env python3
"""Ours against numpy (OpenBLAS) and PyTorch CPU on the same Dinov2 shapes, interleaved.

    python3 scripts/vision/bench_compare.py --size 256 --slices 32 --threads 2 [--rounds 2] \\
        [--medregion target/release/medregion] [--python /work/venv-hf/bin/python]

Each round runs `medregion bench vision --synthetic full --json` and then
`scripts/vision/bench_torch.py --json --impl sdpa` (numpy sgemm on the encoder GEMM shapes, the
numpy 2048^3 "sgemm peak", PyTorch `Dinov2Model` on the same slices), so each pair of numbers
was measured within a minute of each other. Prints one row per round: ours/PyTorch slices/s,
each of our encoder GEMMs against numpy's same shape and against numpy's sgemm peak, and our
own square GEMM against numpy's. Only the ratios mean something on a shared machine.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--medregion", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "medregion"))
    ap.add_argument("--python", default="/work/venv-hf/bin/python")
    ap.add_argument("--impl", default="sdpa", choices=["sdpa", "eager"])
    args = ap.parse_args()
    batch = min(8, args.slices)
    ours_cmd = [args.medregion, "bench", "vision", "--synthetic", "full", "--size", str(args.size),
                "--slices", str(args.slices), "--threads", str(args.threads), "--batch", str(batch), "--json"]
    torch_cmd = [args.python, os.path.join(ROOT, "scripts/vision/bench_torch.py"), "--json",
                 "--threads", str(args.threads), "--size", str(args.size), "--slices", str(args.slices),
                 "--batch", str(batch), "--impl", args.impl, "--repeat", "1"]
    print("# " + " ".join(ours_cmd))
    print("# " + " ".join(torch_cmd))
    rows = []
    for r in range(args.rounds):
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        ours = json.loads(subprocess.run(ours_cmd, check=True, capture_output=True, text=True).stdout)
        torch = json.loads(subprocess.run(torch_cmd, check=True, capture_output=True, text=True).stdout)
        rows.append((r + 1, load, ours, torch))
        gem = {g["name"]: g for g in ours["gemms"]}
        peak = torch["sgemm"]["peak"]
        print(f"\nround {r + 1} (load average {load} at the start), {args.slices} slices at {args.size} px, "
              f"{args.threads} threads, batch {batch}:")
        ts = torch["dinov2"][args.impl]["slices_per_s"]
        print(f"  whole encoder   ours {ours['slices_per_s']:.3f} slices/s ({ours['gflop_per_s']:.1f} GFLOP/s)"
              f"  PyTorch {args.impl} {ts:.3f} slices/s   ours/PyTorch {ours['slices_per_s'] / ts:.2f}")
        b = ours["breakdown"]
        print(f"  our time split  GEMM {b['gemm_s']:.2f} s ({b['gemm_gflop_per_s']:.1f} GFLOP/s), attention "
              f"{b['attention_s']:.2f} s ({b['attention_gflop_per_s']:.1f} GFLOP/s), other {b['other_s']:.2f} s")
        for name in ["qkv_out", "fc1", "fc2"]:
            g = gem[name]
            nump = torch["sgemm"][name]
            print(f"  GEMM {name:<8} [{g['m']}x{g['k']}]·[{g['n']}x{g['k']}]ᵀ ours {g['gflop_per_s']:.1f}  numpy {nump:.1f}"
                  f"  ours/numpy {g['gflop_per_s'] / nump:.2f}  ours/numpy-peak {g['gflop_per_s'] / peak:.2f}")
        eg = ours["encoder_gemms_gflop_per_s"]
        print(f"  encoder GEMMs together ours {eg:.1f} GFLOP/s = {eg / peak:.2f} of numpy's sgemm peak "
              f"({peak:.1f}); {ours['encoder_gemms_vs_peak']:.2f} of our own square GEMM "
              f"({ours['sgemm_peak']['gflop_per_s']:.1f})")
        print(f"  attention alone ours {ours['attention_alone']['gflop_per_s']:.1f} GFLOP/s")
    print("\nsummary: round, load, ours/PyTorch slices/s, encoder GEMMs / numpy sgemm peak")
    for r, load, ours, torch in rows:
        print(f"  {r}  {load:>5}  {ours['slices_per_s'] / torch['dinov2'][args.impl]['slices_per_s']:.2f}"
              f"  {ours['encoder_gemms_gflop_per_s'] / torch['sgemm']['peak']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
