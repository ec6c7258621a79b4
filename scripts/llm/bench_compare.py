#!/usr/bin/env python3
"""`medregion bench llm` against llama.cpp on the same GGUF, same threads, interleaved.

    PYTHONPATH=$LCPP LLAMA_CPP_LIB_PATH=$LCPP/vendor/llama.cpp/build/bin \\
        python scripts/llm/bench_compare.py --pair M.safetensors=M.gguf [--pair ...] \\
        [--threads 1 2] [--prompt-len 64] [--steps 32] [--rounds 2]

Each pair is our package converted from the GGUF (`medregion convert --gguf M.gguf -o
M.safetensors`) and the GGUF itself (`scripts/llm/make_gguf_variants.py` makes the Q8_0 / Q4_0
and Llama-3.2-1B-shaped files). For every pair, thread count and round it runs ours (prefill,
decode, batch-6 decode, read bandwidth in the same process) and then
`scripts/llm/llamacpp_bench.py` (prefill and decode, median of 2 runs), and prints one
Markdown row with the decode ratio ours/llama.cpp, the batch-6 ratio and decode as a fraction
of the read bandwidth, and the ceiling the products alone put on the batch-6 ratio
(`batch_vs_sequential_ceiling`). Only ratios within a row mean something on a shared machine.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", action="append", required=True, help="OURS.safetensors=THEIRS.gguf")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--medregion", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "medregion"))
    args = ap.parse_args()
    print("| model | thr | round | load | prefill tok/s ours / llama.cpp | decode tok/s ours / llama.cpp | decode ratio | decode % of read bw | batch-6 tok/s (vs sequential) | batch-6 ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pair in args.pair:
        ours_path, gguf = pair.split("=", 1)
        name = os.path.basename(gguf).removesuffix(".gguf")
        for th in args.threads:
            for r in range(args.rounds):
                with open("/proc/loadavg") as f:
                    load = f.read().split()[0]
                ours = json.loads(subprocess.run(
                    [args.medregion, "bench", "llm", "--model", ours_path, "--threads", str(th),
                     "--prompt-len", str(args.prompt_len), "--steps", str(args.steps),
                     # One round per call: this script does the rounds, interleaved with llama.cpp.
                     "--rounds", "1", "--json"],
                    check=True, capture_output=True, text=True).stdout)
                theirs = json.loads(subprocess.run(
                    [sys.executable, os.path.join(ROOT, "scripts/llm/llamacpp_bench.py"), "--model", gguf,
                     "--threads", str(th), "--prompt-len", str(args.prompt_len), "--gen", str(args.steps),
                     "--runs", "2"], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                d, td = ours["decode_tokens_per_s"], theirs["decode_tok_s"]
                print(f"| {name} | {th} | {r + 1} | {load} | {ours['prefill_tokens_per_s']:.1f} / {theirs['prefill_tok_s']:.1f} "
                      f"| {d:.1f} / {td:.1f} | **{d / td:.2f}** | {100 * ours['decode_fraction_of_read_bandwidth']:.0f} % "
                      f"| {ours['batch_decode_tokens_per_s']:.1f} ({ours['batch_vs_sequential']:.2f}×) "
                      f"| {ours['batch_vs_sequential_ceiling']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
