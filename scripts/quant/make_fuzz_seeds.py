#!/usr/bin/env python3
"""Write the seed corpus of the `gguf_reader` fuzz target: small, valid GGUF files written by
gguf-py that touch every metadata value type and every tensor type the reader dequantizes.

    /tmp/venv-quant/bin/python scripts/quant/make_fuzz_seeds.py   # -> fuzz/seeds/gguf_reader/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "fuzz" / "seeds" / "gguf_reader"


def tiny_llama(path: Path) -> None:
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(2.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(["a", "b", "ab", "<s>", "</s>"])
    w.add_token_types([1, 1, 1, 3, 3])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(3)
    w.add_eos_token_id(4)
    w.add_add_bos_token(True)
    w.add_array("test.nested", [[1, 2], [3]])
    w.add_array("test.floats", [0.5, -1.0])
    w.add_int8("test.i8", -3)
    w.add_uint16("test.u16", 7)
    w.add_int16("test.i16", -7)
    w.add_int64("test.i64", -1)
    w.add_uint64("test.u64", 1 << 40)
    w.add_float64("test.f64", 0.25)
    x = rng.normal(size=(5, 32)).astype(np.float32)
    w.add_tensor("token_embd.weight", quants.quantize(x, T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("blk.0.attn_q.weight", quants.quantize(x[:4], T.Q4_0), raw_dtype=T.Q4_0)
    w.add_tensor("blk.0.attn_k.weight", quants.quantize(x[:2], T.Q4_1), raw_dtype=T.Q4_1)
    w.add_tensor("blk.0.attn_norm.weight", x[0])
    w.add_tensor("blk.0.ffn_norm.weight", x[1].astype(np.float16))
    w.add_tensor("output_norm.weight", x[2].astype(np.float16).view(np.uint8), raw_dtype=T.BF16)
    for name, qt in (("k.q4_k", T.Q4_K), ("k.q6_k", T.Q6_K), ("k.q5_0", T.Q5_0)):
        _, size = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, (1, size), dtype=np.uint8)
        w.add_tensor(name, raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def minimal(path: Path) -> None:
    w = gguf.GGUFWriter(path, "llama")
    w.add_bool("test.flag", False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    tiny_llama(OUT / "tiny_llama.gguf")
    minimal(OUT / "minimal.gguf")
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
