#!/usr/bin/env python3
"""GGUF files for the decoder speed comparison with llama.cpp (`scripts/llm/llamacpp_bench.py`).

    # SmolLM2-135M-Instruct Q4_1 requantized to Q8_0 / Q4_0 (llama.cpp's own quantizer):
    python scripts/llm/make_gguf_variants.py requantize SRC.gguf q8_0 OUT.gguf
    # A random Llama-3.2-1B-shaped model (16 layers, width 2048, 32/8 heads, FFN 8192, tied
    # embeddings) in F16, with the tokenizer (and so the vocabulary size) of TOK.gguf:
    python scripts/llm/make_gguf_variants.py synthetic-1b TOK.gguf OUT-f16.gguf
    # ... then requantize that to q8_0 / q4_0 as above.

Needs llama-cpp-python (PYTHONPATH / LLAMA_CPP_LIB_PATH as for llamacpp_bench.py) for
`requantize`, and llama.cpp's `gguf-py` (on PYTHONPATH, or `pip install gguf`) for
`synthetic-1b`. The files are only for speed: requantizing a Q4_1 file to Q8_0 does not bring
back precision, and the synthetic weights are random (scaled so activations stay finite). Each
file is then converted with `medregion convert --gguf FILE -o FILE.safetensors`, so both engines
read the same weights.
"""
import ctypes
import sys

FTYPES = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "f16": 1}


def requantize(src, qtype, dst):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")


def synthetic_1b(tok_src, dst):
    import numpy as np
    import gguf

    reader = gguf.GGUFReader(tok_src)
    writer = gguf.GGUFWriter(dst, "llama")
    layers, d, ff, heads, kv_heads = 16, 2048, 8192, 32, 8
    hd = d // heads
    vocab = None
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(name, value)
            if name == "tokenizer.ggml.tokens":
                vocab = len(value)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode())
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], vtype)
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hd)
    writer.add_file_type(1)
    rng = np.random.default_rng(7)

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (0.5 / np.sqrt(cols))).astype(np.float16)

    writer.add_tensor("token_embd.weight", mat(vocab, d))
    writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", mat(d, d))
        writer.add_tensor(p + "attn_k.weight", mat(kv_heads * hd, d))
        writer.add_tensor(p + "attn_v.weight", mat(kv_heads * hd, d))
        writer.add_tensor(p + "attn_output.weight", mat(d, d))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", mat(ff, d))
        writer.add_tensor(p + "ffn_up.weight", mat(ff, d))
        writer.add_tensor(p + "ffn_down.weight", mat(d, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "requantize":
        requantize(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "synthetic-1b":
        synthetic_1b(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
