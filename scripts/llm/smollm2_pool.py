#!/usr/bin/env python3
"""Write tests/fixtures/llm/smollm2_pool.json: llama.cpp's greedy continuations of a fixed pool
of 16 more prompts on SmolLM2-135M-Instruct Q4_1, for the token-identity test.

Why a second set. Token-for-token identity over 64 greedy steps is only defined where no step is
a near-tie: where llama.cpp's own top-2 margin is a rounding error, any other arithmetic (and
llama.cpp's own other builds and attention settings, see smollm2_reference.py) may pick the
other token, and the texts then go their own ways. The eight prompts of smollm2_reference.json
are open-ended (free text, chat answers), and most of their continuations pass through such a
step. This pool adds prompts of the kinds a decoder should continue the same way whatever its
rounding, next to open-ended ones, all fixed before any output was seen (the list below is the
whole pool; none was dropped or added after running it):
  * sequences and patterns (counting, weekdays, months, the alphabet, a times table, a repeated
    line), code and markup openings, a well-known pangram;
  * open text ("Once upon a time", a chest CT sentence) and four short chat requests.

Per prompt it records what smollm2_reference.py records for its default run (`prompt_ids`,
`llama_cpp.tokens`, `top1_logit`, `top2_margin`, `stopped_at_eog`, `text`; same settings:
n_threads 1, F16 KV cache, flash_attn auto, argmax of the raw logits, at most 64 new tokens or up
to an end-of-generation token), `min_margin` (the smallest top-2 margin over the continuation),
and llama.cpp's own run with flash attention off and an F32 KV cache (`llama_cpp_no_fa_f32kv`:
`same_as_default`, `first_difference`), which shows which continuations llama.cpp itself only
reproduces with its exact default arithmetic.

Usage (llama-cpp-python as in smollm2_reference.py; no torch needed):
    PYTHONPATH=$LCPP:$LCPP/vendor/llama.cpp/gguf-py LLAMA_CPP_LIB_PATH=$LCPP/vendor/llama.cpp/build/bin \\
        python scripts/llm/smollm2_pool.py [PATH.gguf]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp  # noqa: E402
from llamacpp_bench import LlamaCpp, llama_cpp_commit  # noqa: E402
from smollm2_reference import (MAX_NEW, MEMBER, N_CTX, ROOT, dumps, fetch_default, gguf_meta,  # noqa: E402
                               greedy, make_cases)

OUT = ROOT / "tests" / "fixtures" / "llm" / "smollm2_pool.json"

POOL: list[tuple[str, str | list[dict]]] = [
    ("seq_count", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"),
    ("seq_weekdays", "Monday, Tuesday, Wednesday,"),
    ("seq_months", "January, February, March, April,"),
    ("seq_alphabet", "A B C D E F G H"),
    ("seq_times_table", "2 x 1 = 2\n2 x 2 = 4\n2 x 3 = 6\n"),
    ("seq_repeat", "Lung: normal. Heart: normal. Lung: normal. Heart: normal. Lung:"),
    ("code_loop", "for i in range(10):\n    print(i)\n\nfor j in range("),
    ("code_imports", "import numpy as np\nimport"),
    ("markup_html", "<html>\n<head>\n<title>"),
    ("text_pangram", "The quick brown fox jumps over the lazy dog. The quick brown fox"),
    ("text_story", "Once upon a time"),
    ("text_ct", "The chest CT shows"),
    ("chat_count", [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]),
    ("chat_weekdays", [{"role": "user", "content": "List the days of the week."}]),
    ("chat_capital", [{"role": "user", "content": "What is the capital of Italy? Answer in one word."}]),
    ("chat_hello", [{"role": "user", "content": "Say hello."}]),
]


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else fetch_default()
    cases = make_cases(POOL, gguf_meta(path)["chat_template"])
    lc = LlamaCpp(path, threads=1, n_ctx=N_CTX, n_batch=N_CTX, flash_attn="auto", kv_type="f16")
    eog = [t for t in range(lc.n_vocab) if lc.is_eog(t)]
    for c in cases:
        c["prompt_ids"] = lc.tokenize(c["text"], add_special=True, parse_special=True)
        g = greedy(lc, c["prompt_ids"])
        g["text"] = b"".join(lc.piece(t) for t in g["tokens"]).decode("utf-8", errors="replace")
        g["min_margin"] = min(g["top2_margin"])
        c["llama_cpp"] = g
    lc.close()
    lc = LlamaCpp(path, threads=1, n_ctx=N_CTX, n_batch=N_CTX, flash_attn="off", kv_type="f32")
    for c in cases:
        want = c["llama_cpp"]["tokens"]
        got = greedy(lc, c["prompt_ids"])["tokens"]
        v = {"tokens": got, "same_as_default": got == want}
        if got != want:
            v["first_difference"] = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                                         min(len(got), len(want)))
        c["llama_cpp_no_fa_f32kv"] = v
        g = c["llama_cpp"]
        print(f"{c['name']:16} P={len(c['prompt_ids']):3} new={len(g['tokens']):2} eog={g['stopped_at_eog']!s:5} "
              f"min margin={g['min_margin']:7.4f} no-fa same={v['same_as_default']!s:5} {g['text'][:50]!r}")
    lc.close()
    doc = {
        "about": "Greedy continuations of SmolLM2-135M-Instruct Q4_1 by llama.cpp for a fixed pool of prompts "
                 "(token identity up to near-ties is the acceptance test); generated by "
                 "scripts/llm/smollm2_pool.py, whose docstring defines every field",
        "file": MEMBER,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "max_new_tokens": MAX_NEW,
        "eog_token_ids": eog,
        "versions": {
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": llama_cpp_commit(),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        },
        "llama_cpp_settings": {"default": "n_threads 1, F16 KV cache, flash_attn auto, prompt in one batch",
                               "no_fa_f32kv": "n_threads 1, F32 KV cache, flash_attn off, prompt in one batch"},
        "cases": cases,
    }
    OUT.write_text(dumps(doc) + "\n")
    json.loads(OUT.read_text())
    robust = sum(1 for c in cases if c["llama_cpp"]["min_margin"] >= 0.5)
    same = sum(1 for c in cases if c["llama_cpp_no_fa_f32kv"]["same_as_default"])
    print(f"wrote {OUT.relative_to(ROOT)}: {len(cases)} prompts, {robust} with every top-2 margin >= 0.5, "
          f"{same} identical with llama.cpp's flash attention off")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
