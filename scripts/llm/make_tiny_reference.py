#!/usr/bin/env python3
"""Generate the decoder parity fixture for tests/llm_parity.rs.

    /work/venv-hf/bin/python scripts/llm/make_tiny_reference.py      # writes tests/fixtures/llm/

A random tiny LlamaForCausalLM shaped like the `tiny` synthetic preset's decoder (D=64, F=128,
3 layers, 4 query heads / 2 KV heads of width 16, V=264, untied head) with llama3 RoPE scaling whose
original_max_position_embeddings (16) is small enough that the scaling changes every frequency
band (high / smoothed / low) at the prompt's positions.

A second model, tiny_tied, has SmolLM2's structure (tied head, plain RoPE without scaling,
GQA with a single KV head) so that path is checked against transformers too.

Outputs (for NAME in tiny_llama, tiny_tied):
  NAME/config.json, NAME/model.safetensors   the HF checkpoint (float32)
  NAME_reference.safetensors
    prompt_ids  I64 [P]          the prompt (BOS + random ids)
    tokens      I64 [S+1]        greedy tokens: the first from the prompt, then one per step
    logits      F32 [P+S, V]     logits of every prompt position and of the S = 20 decode steps
                                 (teacher-forced on prompt + tokens[:S]); computed in float64
                                 (model.double()) and rounded once to float32
    margin      F64 [P+S]        top-1 minus top-2 logit per row (greedy ties would be ambiguous)
Deterministic (torch.manual_seed). Weights are drawn wider than the HF default init so that the
logits spread (top-1 margins well above float32 noise) and greedy decoding is well defined.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "llm")
PROMPT_LEN = 12
STEPS = 20


def main():
    tiny_llama()
    tiny_tied()


def tiny_llama():
    torch.manual_seed(20261129)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        vocab_size=264,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=False,
        bos_token_id=256,
        eos_token_id=[257, 260],
        attention_bias=False,
        mlp_bias=False,
    )
    build("tiny_llama", cfg)


def tiny_tied():
    """SmolLM2-style: tied head, plain RoPE (no scaling), MHA-free GQA 4/1, 2 layers."""
    torch.manual_seed(49152)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        vocab_size=264,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        rope_scaling=None,
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        attention_bias=False,
        mlp_bias=False,
    )
    build("tiny_tied", cfg)


def build(tag, cfg):
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.5 / p.shape[1] ** 0.5))

    ckpt = os.path.join(OUT, tag)
    os.makedirs(ckpt, exist_ok=True)
    model.save_pretrained(ckpt, safe_serialization=True)
    for f in os.listdir(ckpt):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(ckpt, f))

    ref = LlamaForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32).double().eval()
    prompt = [256] + torch.randint(0, 256, (PROMPT_LEN - 1,)).tolist()
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(STEPS + 1):
            logits = ref(torch.tensor([ids])).logits[0]
            ids.append(int(logits[-1].argmax()))
        # Teacher-forced over prompt + the first STEPS generated tokens: P + STEPS rows.
        full = ref(torch.tensor([ids[: PROMPT_LEN + STEPS]])).logits[0]
    tokens = ids[PROMPT_LEN:]
    assert [int(r.argmax()) for r in full[PROMPT_LEN - 1 :]] == tokens
    top2 = full.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).contiguous()
    print(f"prompt {prompt}\ntokens {tokens}\nmax|logit| {full.abs().max():.3f} "
          f"min greedy margin {margin[PROMPT_LEN - 1:].min():.4f}", file=sys.stderr)
    save_file(
        {
            "prompt_ids": torch.tensor(prompt, dtype=torch.int64),
            "tokens": torch.tensor(tokens, dtype=torch.int64),
            "logits": full.to(torch.float32).contiguous(),
            "margin": margin,
        },
        os.path.join(OUT, f"{tag}_reference.safetensors"),
        metadata={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
