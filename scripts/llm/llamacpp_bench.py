#!/usr/bin/env python3
"""llama.cpp prefill and decode speed on a GGUF, for comparison with `medregion bench llm`.

    PYTHONPATH=$LCPP LLAMA_CPP_LIB_PATH=$LCPP/vendor/llama.cpp/build/bin \
        python scripts/llm/llamacpp_bench.py --model M.gguf --threads 1 --prompt-len 128 --gen 64

Uses llama-cpp-python's low-level ctypes API (llama-cpp-python 0.3.36, see
scripts/llm/requirements-reference.txt; the build of libllama alone is described in
scripts/tokenizer/make_reference.py): no sampler, no Python-side work inside the timed region.
One run = clear the KV cache, time one `llama_decode` of a P-token batch (logits of the last
token only; n_batch = n_ubatch >= P, so the whole prompt is one graph), then time N
`llama_decode` calls of one token each, at positions P, P+1, ... The prompt and the decoded
tokens are fixed pseudo-random ids (seeded), so every run does the same work. One untimed
warm-up run, then --runs timed runs; the JSON line holds the medians and every run.

`decode_gbps` is llama_model_size() (all weight bytes, including the token embedding table that
decode only gathers one row of) times decode tokens/s: an upper bound on weight bytes read per
second, comparable to medregion's "effective GB/s" only if it counts the same bytes.

For speed, build libllama with `-DGGML_NATIVE=ON` (the make_reference.py recipe has `OFF`,
which is enough for tokenizer references but leaves out AVX-512 and VNNI; `OFF` still has AVX2
and FMA). The JSON's `system_info` says which instruction sets the library was built with.

ggml's worker threads spin and meet at a barrier after every op, so with --threads 2 on a machine
whose cores are busy with other work decode can collapse (seen: 0.6 tokens/s at load 10 on 2
cores); the JSON records the load average before and after. Compare engines only in the same
conditions, ideally on idle cores.

The module also exports `LlamaCpp`, a thin wrapper used by scripts/llm/smollm2_reference.py.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import llama_cpp
from llama_cpp._logger import set_verbose

FLASH = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
         "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}
KV_TYPE = {"f16": 1, "f32": 0}  # ggml_type: GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1


def llama_cpp_commit() -> str | None:
    """The llama.cpp commit libllama was built from, when the build tree says so."""
    lib = os.environ.get("LLAMA_CPP_LIB_PATH")
    if not lib:
        return None
    cfg = Path(lib).parent / "llama-config.cmake"
    if cfg.is_file():
        for line in cfg.read_text().splitlines():
            if line.startswith("set(LLAMA_BUILD_COMMIT"):
                return line.split()[1].rstrip(")")
    return None


class LlamaCpp:
    """One model + one context, driven with llama_decode and raw logits."""

    _backend_ready = False

    def __init__(self, model: str | Path, *, threads: int, n_ctx: int, n_batch: int,
                 flash_attn: str = "auto", kv_type: str = "f16", verbose: bool = False):
        set_verbose(verbose)
        if not LlamaCpp._backend_ready:
            llama_cpp.llama_backend_init()
            LlamaCpp._backend_ready = True
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(str(model).encode(), mp)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {model}")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = 1
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.flash_attn_type = FLASH[flash_attn]
        cp.type_k = KV_TYPE[kv_type]
        cp.type_v = KV_TYPE[kv_type]
        cp.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.settings = {"threads": threads, "n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": n_batch,
                         "flash_attn": flash_attn, "kv_cache_type": kv_type}

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    # --- vocabulary
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise RuntimeError("tokenize buffer too small")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # --- evaluation
    def clear(self) -> None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)

    def decode(self, tokens: list[int], pos0: int, *, all_logits: bool = False) -> None:
        n = len(tokens)
        if n > self.n_batch:
            raise ValueError(f"{n} tokens > n_batch {self.n_batch}")
        b = self.batch
        for i, t in enumerate(tokens):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if (all_logits or i == n - 1) else 0
        b.n_tokens = n
        rc = llama_cpp.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of batch position i of the last decode (-1: the last one), float32 copy."""
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def sync(self) -> None:
        llama_cpp.llama_synchronize(self.ctx)

    def model_size(self) -> int:
        return int(llama_cpp.llama_model_size(self.model))


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def bench(args: argparse.Namespace) -> dict:
    load_before = list(os.getloadavg())
    n_ctx = args.prompt_len + args.gen + 16
    lc = LlamaCpp(args.model, threads=args.threads, n_ctx=n_ctx, n_batch=max(args.prompt_len, 32),
                  flash_attn=args.flash_attn, kv_type=args.kv_type)
    rng = np.random.default_rng(args.seed)
    # Ordinary vocabulary ids (SmolLM2 and Llama 3 keep their special tokens low / high;
    # staying in [256, n_vocab * 3/4) avoids both).
    ids = rng.integers(256, lc.n_vocab * 3 // 4, size=args.prompt_len + args.gen).tolist()
    prompt, gen = ids[: args.prompt_len], ids[args.prompt_len:]
    runs = []
    for r in range(args.runs + 1):
        lc.clear()
        t0 = time.perf_counter()
        lc.decode(prompt, 0)
        lc.sync()
        t1 = time.perf_counter()
        for k, t in enumerate(gen):
            lc.decode([t], args.prompt_len + k)
        lc.sync()
        t2 = time.perf_counter()
        if r > 0:  # run 0 is the warm-up
            runs.append({"prefill_s": t1 - t0, "decode_s": t2 - t1})
    size = lc.model_size()
    settings = lc.settings
    lc.close()
    prefill = statistics.median(args.prompt_len / r["prefill_s"] for r in runs)
    decode = statistics.median(args.gen / r["decode_s"] for r in runs)
    return {
        "engine": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_commit": llama_cpp_commit(),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "model": str(args.model),
        "model_bytes": size,
        "threads": args.threads,
        "prompt_len": args.prompt_len,
        "gen": args.gen,
        "runs": args.runs,
        "settings": settings,
        "prefill_tok_s": round(prefill, 2),
        "decode_tok_s": round(decode, 2),
        "decode_gbps": round(size * decode / 1e9, 3),
        "runs_prefill_tok_s": [round(args.prompt_len / r["prefill_s"], 2) for r in runs],
        "runs_decode_tok_s": [round(args.gen / r["decode_s"], 2) for r in runs],
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (median reported)")
    ap.add_argument("--flash-attn", choices=sorted(FLASH), default="auto",
                    help="llama.cpp's flash_attn_type (default auto, as llama.cpp ships)")
    ap.add_argument("--kv-type", choices=sorted(KV_TYPE), default="f16",
                    help="KV cache element type (llama.cpp's default is f16)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.prompt_len < 1 or args.gen < 1 or args.runs < 1 or args.threads < 1:
        ap.error("--prompt-len, --gen, --runs and --threads must be >= 1")
    print(json.dumps(bench(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
