#!/usr/bin/env python3
"""Generate tests/fixtures/hf/: tiny HF checkpoints and PyTorch/PEFT references for tests/hf_import.rs.

    python3 -m venv /work/venv-hf && /work/venv-hf/bin/pip install -r scripts/hf/requirements.txt
    /work/venv-hf/bin/python scripts/hf/make_fixtures.py            # writes tests/fixtures/hf/

Everything runs on the CPU, deterministic (fixed seeds). Outputs (all float32):
  llama/            LlamaForCausalLM (D=64, 2 layers, 4 heads / 2 KV, F=128, V=256, llama3 RoPE
                    scaling, untied head), saved sharded (index + 3 shards)
  lora/             PEFT LoRA on it: r=4, alpha=8, q,k,v,o,gate,up,down, random non-zero lora_B
  merged_reference.safetensors
                    PeftModel.from_pretrained(llama, lora).merge_and_unload().state_dict()
  lora_variant/     LoRA with rank_pattern, alpha_pattern, use_rslora and modules_to_save=[lm_head]
  merged_variant_reference.safetensors
                    the tensors merge_and_unload() changes for lora_variant (others equal the base)
  dinov2/           Dinov2Model (D=32, 2 layers, 2 heads, patch 14, image 56 -> 4x4 grid)
  dinov2_pos_ref.safetensors
                    position tables from HF Dinov2Embeddings.interpolate_pos_encoding (this
                    transformers version: explicit size, no antialias) for 98, 42, 75, 56 px, plus
                    the legacy scale_factor=(g+0.1)/n variant and the antialias variant computed with
                    torch.nn.functional.interpolate, plus a RAD-DINO-sized 37x37 -> 18x18 case;
                    `*_f64` keys: the same resampling run by torch in float64
  dtypes.safetensors
                    the same values as F32, F16 and BF16 and torch's .float() of each
"""
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F
import transformers
import peft
from safetensors.torch import save_file
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.normpath(os.path.join(ROOT, "tests", "fixtures", "hf"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def clean(d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


def f32_state(model):
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}


def make_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=[2, 3],
    )
    model = LlamaForCausalLM(cfg).to(torch.float32).eval()
    # The default init leaves norms at 1; make them random so a mix-up would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    d = os.path.join(OUT, "llama")
    clean(d)
    model.save_pretrained(d, max_shard_size="200KB")
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json")), "expected a sharded save"
    return d


def make_lora(base_dir, out_name, lora_cfg, seed):
    torch.manual_seed(seed)
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    pm = get_peft_model(base, lora_cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.1 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.copy_(p + 0.05 * torch.randn_like(p))
    d = os.path.join(OUT, out_name)
    clean(d)
    pm.save_pretrained(d)
    # Keep the folder to what the importer reads, with no machine-specific path in it.
    for f in os.listdir(d):
        if f not in ("adapter_config.json", "adapter_model.safetensors"):
            os.remove(os.path.join(d, f))
    cfg_path = os.path.join(d, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "tests/fixtures/hf/llama"
    if isinstance(cfg.get("target_modules"), list):  # PEFT saves a set: order varies per run
        cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    return d


def merged_state(base_dir, lora_dir):
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, lora_dir).merge_and_unload()
    return f32_state(merged)


def make_dinov2():
    torch.manual_seed(1)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=4,
        image_size=56,
        patch_size=14,
        layerscale_value=1.0,
        qkv_bias=True,
    )
    model = Dinov2Model(cfg).to(torch.float32).eval()
    with torch.no_grad():
        # Non-trivial table at the scale of trained ViT tables (HF's init is std 0.02). O(1) values
        # are covered by the RAD-DINO-sized case below.
        model.embeddings.position_embeddings.copy_(0.1 * torch.randn_like(model.embeddings.position_embeddings))
        for name, p in model.named_parameters():
            if "lambda1" in name or "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    d = os.path.join(OUT, "dinov2")
    clean(d)
    model.save_pretrained(d)
    return model


def hf_interp(emb, size):
    """HF Dinov2Embeddings.interpolate_pos_encoding for a size x size input."""
    g = size // emb.config.patch_size
    dummy = torch.zeros(1, 1 + g * g, emb.config.hidden_size)
    with torch.no_grad():
        return emb.interpolate_pos_encoding(dummy, size, size).detach().clone().contiguous()


def legacy_interp(pos, patch, size, antialias=False, legacy=True):
    """Older transformers: scale_factor=((H//p + 0.1)/n, ...) (legacy=True); or explicit size with
    antialias (legacy=False). Computed in pos's dtype (float64 gives the exact-arithmetic reference)."""
    n = int(math.sqrt(pos.shape[1] - 1))
    dim = pos.shape[-1]
    g = size // patch
    cls, grid = pos[:, :1], pos[:, 1:]
    grid = grid.reshape(1, n, n, dim).permute(0, 3, 1, 2)
    with torch.no_grad():
        if legacy:
            h0 = w0 = g + 0.1
            grid = F.interpolate(
                grid,
                scale_factor=(float(h0 / math.sqrt(n * n)), float(w0 / math.sqrt(n * n))),
                mode="bicubic",
                align_corners=False,
            )
        else:
            grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False, antialias=antialias)
    assert grid.shape[-1] == g
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls, grid), dim=1).contiguous()


def main():
    os.makedirs(OUT, exist_ok=True)
    llama_dir = make_llama()

    lora_cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"
    )
    lora_dir = make_lora(llama_dir, "lora", lora_cfg, seed=2)
    save_file(merged_state(llama_dir, lora_dir), os.path.join(OUT, "merged_reference.safetensors"))

    variant_cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        rank_pattern={"v_proj": 2},
        alpha_pattern={"layers.1.self_attn.q_proj": 3},
        use_rslora=True,
        modules_to_save=["lm_head"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    variant_dir = make_lora(llama_dir, "lora_variant", variant_cfg, seed=3)
    base_state = f32_state(LlamaForCausalLM.from_pretrained(llama_dir, dtype=torch.float32))
    variant = merged_state(llama_dir, variant_dir)
    changed = {k: v for k, v in variant.items() if not torch.equal(v, base_state[k])}
    assert "lm_head.weight" in changed and len(changed) == 1 + 2 * 2, sorted(changed)
    save_file(changed, os.path.join(OUT, "merged_variant_reference.safetensors"))

    model = make_dinov2()
    emb = model.embeddings
    pos = emb.position_embeddings.detach().clone()
    refs = {f"size_{s}": hf_interp(emb, s) for s in (98, 42, 75, 56)}
    assert torch.equal(refs["size_56"], pos)
    pos64 = pos.double()
    for s in (98, 42, 75):
        # The same resampling in float64: what exact arithmetic gives (HF itself runs in float32).
        refs[f"size_{s}_f64"] = legacy_interp(pos64, 14, s, legacy=False)
    for s in (98, 42):
        refs[f"legacy_scale_{s}"] = legacy_interp(pos, 14, s, legacy=True)
        refs[f"antialias_{s}"] = legacy_interp(pos, 14, s, antialias=True, legacy=False)
        refs[f"legacy_scale_{s}_f64"] = legacy_interp(pos64, 14, s, legacy=True)
        refs[f"antialias_{s}_f64"] = legacy_interp(pos64, 14, s, antialias=True, legacy=False)
    # RAD-DINO geometry: 518 px (37x37) table resampled for 256 px (18x18), D = 8.
    rad_cfg = Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, image_size=518, patch_size=14)
    rad_emb = Dinov2Model(rad_cfg).embeddings
    with torch.no_grad():
        rad_emb.position_embeddings.copy_(torch.randn_like(rad_emb.position_embeddings))
    refs["rad_src_518"] = rad_emb.position_embeddings.detach().clone().contiguous()
    refs["rad_256"] = hf_interp(rad_emb, 256)
    refs["rad_256_f64"] = legacy_interp(refs["rad_src_518"].double(), 14, 256, legacy=False)
    save_file(refs, os.path.join(OUT, "dinov2_pos_ref.safetensors"))

    torch.manual_seed(4)
    x = torch.randn(5, 7) * 3.0
    dt = {"f32": x, "f16": x.to(torch.float16), "bf16": x.to(torch.bfloat16)}
    dt["f16_as_f32"] = dt["f16"].float()
    dt["bf16_as_f32"] = dt["bf16"].float()
    save_file(dt, os.path.join(OUT, "dtypes.safetensors"))

    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump(
            {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            f,
            indent=1,
        )
        f.write("\n")
    for r, _, ns in os.walk(OUT):
        for n in ns:
            os.chmod(os.path.join(r, n), 0o644)
    total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
