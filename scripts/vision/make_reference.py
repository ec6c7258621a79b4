#!/usr/bin/env python3
"""Reference outputs of transformers' Dinov2Model for tests/vision.rs (encoder parity).

    /work/venv-hf/bin/python scripts/vision/make_reference.py   # writes tests/fixtures/vision/

Why only outputs are committed: a 2-layer Dinov2 at ViT-B/14 width has ~14M parameters (56 MB
in f32), far above the 1 MB limit for committed files. So the WEIGHTS and the INPUT are defined
by a seeded generator that this script and the Rust test both implement (SplitMix64, see
`fixture_values` below and `fixture_values` in tests/vision.rs): the test rebuilds the same HF
checkpoint (config.json + model.safetensors) in a temp folder, converts it with the package
converter (which bakes the position table for 518 or 256 px), runs our encoder and compares
with the outputs stored here. The test needs no torch.

Weights: value i of HF tensor `name` is `offset + scale * z_i` in f32, where
`z_i = irwin_hall4(splitmix64_mix(stream + (i + 1) * GAMMA))`,
`stream = splitmix64_mix(SEED ^ fnv1a64(name))` (the generator of medregion's synthetic
packages, src/model/synthetic.rs) and (offset, scale) per tensor kind:
norm weights (1, 0.1); biases (0, 0.1); LayerScale (0.5, 0.1); CLS (0, 1); position table
(0, 0.5); mask_token (0, 0.02); patch conv and linear weights (0, 1/sqrt(fan_in)).
The larger-than-HF-init scales make attention far from uniform and GELU non-linear, so that
the comparison discriminates.

Input: slice s (of 2), pixel (i, j) of a size x size image in [0, 1]:
`((i*i + 3*j*j + 5*i*j + 97*s) % 1021) / 1020` (f32), repeated to 3 channels, then
`(x - 0.5307) / 0.2583` (RAD-DINO processor statistics, BitImageProcessor's order).

The reference runs in float64 (eager attention) from the f32 weights; for each image size
(518: native, 1370 tokens; 256: 18x18 grid, position table interpolated by transformers) and
for hidden_states[0..=2] and last_hidden_state, it stores (F32) in
dinov2_vitb_2layer_ref.safetensors (and the same for the 12-layer model at 256 px, levels 0, 3,
6, 9, 12, in dinov2_vitb_12layer_ref.safetensors):
  `{size}.{key}.rows`          [2 * R, 768] the token rows listed in `{size}.rows` (I64)
  `{size}.{key}.token_norms`   [2, T] the L2 norm of every token
  `{size}.{key}.channel_mean`  [2, 768] the mean over tokens of every channel
with key in hs{level}, last. `check.{name}` holds the first 16 generated values of a few
weights and `check.pixels` the first 64 input values, so the Rust test can assert that both
generators agree bit for bit. Metadata records versions and how far transformers' own float32
forward is from the float64 one (for the README).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import Dinov2Config, Dinov2Model

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "vision")

SEED = 20261129
GAMMA = np.uint64(0x9E3779B97F4A7C15)
M64 = (1 << 64) - 1
D, HEADS, MLP, PATCH, NATIVE = 768, 12, 3072, 14, 518
MEAN, STD = np.float32(0.5307), np.float32(0.2583)
SIZES = [518, 256]
N_SLICES = 2


def mix(z):
    """SplitMix64 output function on a uint64 array."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def normals(name, n):
    stream = int(mix(np.array([SEED ^ fnv1a64(name.encode())], dtype=np.uint64))[0])
    with np.errstate(over="ignore"):
        idx = np.arange(1, n + 1, dtype=np.uint64)
        bits = mix(np.uint64(stream) + idx * GAMMA)
    s = np.zeros(n, dtype=np.float32)
    for k in range(4):
        lane = ((bits >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.float32)
        s = s + (lane + np.float32(0.5)) * np.float32(1.0 / 65536.0)
    return (s - np.float32(2.0)) * np.float32(1.7320508)


def init_of(name, shape):
    """(offset, scale) of an HF tensor (see the module doc)."""
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name and leaf == "weight":
        return np.float32(1.0), np.float32(0.1)
    if leaf == "bias":
        return np.float32(0.0), np.float32(0.1)
    if leaf == "lambda1":
        return np.float32(0.5), np.float32(0.1)
    if name == "embeddings.cls_token":
        return np.float32(0.0), np.float32(1.0)
    if name == "embeddings.position_embeddings":
        return np.float32(0.0), np.float32(0.5)
    if name == "embeddings.mask_token":
        return np.float32(0.0), np.float32(0.02)
    fan_in = int(np.prod(shape[1:]))
    return np.float32(0.0), np.float32(1.0) / np.sqrt(np.float32(fan_in))


# transformers 5 names the attention projections q/k/v/o_proj in memory; checkpoints on disk (and
# medregion's canonical names) use the pre-5.x names, which seed the generator.
DISK_NAMES = [(".attention.q_proj.", ".attention.attention.query."), (".attention.k_proj.", ".attention.attention.key."),
              (".attention.v_proj.", ".attention.attention.value."), (".attention.o_proj.", ".attention.output.dense.")]


def disk_name(name):
    for new, old in DISK_NAMES:
        name = name.replace(new, old)
    return name


def fixture_values(name, shape):
    name = disk_name(name)
    offset, scale = init_of(name, shape)
    n = int(np.prod(shape))
    return (offset + scale * normals(name, n)).reshape(shape)


def pixels(size):
    i = np.arange(size, dtype=np.int64)[:, None]
    j = np.arange(size, dtype=np.int64)[None, :]
    out = []
    for s in range(N_SLICES):
        x = ((i * i + 3 * j * j + 5 * i * j + 97 * s) % 1021).astype(np.float32) / np.float32(1020.0)
        out.append(np.repeat(((x - MEAN) / STD)[None], 3, axis=0))
    return np.stack(out)  # [B, 3, S, S] f32


def config(layers):
    return Dinov2Config(
        hidden_size=D, num_hidden_layers=layers, num_attention_heads=HEADS, mlp_ratio=MLP // D,
        image_size=NATIVE, patch_size=PATCH, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-6,
        layerscale_value=1.0, qkv_bias=True, drop_path_rate=0.0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, use_swiglu_ffn=False,
    )


def row_indices(t, g):
    rows = sorted({0, 1, 2, g, g + 1, t // 2, t - g, t - 2, t - 1})
    return np.array(rows, dtype=np.int64)


def make(layers, sizes, levels, filename):
    model = Dinov2Model(config(layers)).eval()
    model.set_attn_implementation("eager")
    state = {k: torch.from_numpy(fixture_values(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    m64 = Dinov2Model(config(layers)).eval()
    m64.set_attn_implementation("eager")
    m64.load_state_dict(state)
    m64 = m64.double()

    tensors = {}
    meta = {
        "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
        "seed": str(SEED), "layers": str(layers), "levels": ",".join(map(str, levels)),
    }
    for name in ["embeddings.cls_token", "embeddings.position_embeddings", "encoder.layer.0.mlp.fc1.weight",
                 "encoder.layer.1.layer_scale2.lambda1", "encoder.layer.0.norm1.weight",
                 "embeddings.patch_embeddings.projection.weight", "encoder.layer.1.attention.q_proj.weight",
                 "encoder.layer.0.attention.o_proj.bias", "encoder.layer.1.attention.v_proj.weight"]:
        tensors[f"check.{disk_name(name)}"] = state[name].numpy().reshape(-1)[:16].copy()
    for size in sizes:
        px = pixels(size)
        if size == sizes[0]:
            tensors["check.pixels"] = px.reshape(-1)[:64].copy()
        g = size // PATCH
        t = 1 + g * g
        with torch.no_grad():
            o64 = m64(pixel_values=torch.from_numpy(px).double(), output_hidden_states=True)
            o32 = model(pixel_values=torch.from_numpy(px), output_hidden_states=True)
        rows = row_indices(t, g)
        tensors[f"{size}.rows"] = rows
        outs = {f"hs{l}": (o64.hidden_states[l], o32.hidden_states[l]) for l in levels}
        outs["last"] = (o64.last_hidden_state, o32.last_hidden_state)
        for key, (r64, r32) in outs.items():
            a = r64.numpy()  # [B, T, D] f64
            assert a.shape == (N_SLICES, t, D), a.shape
            tensors[f"{size}.{key}.rows"] = a[:, rows, :].reshape(-1, D).astype(np.float32)
            tensors[f"{size}.{key}.token_norms"] = np.sqrt((a * a).sum(-1)).astype(np.float32)
            tensors[f"{size}.{key}.channel_mean"] = a.mean(1).astype(np.float32)
            err = np.abs(r32.numpy().astype(np.float64) - a).max() / np.abs(a).max()
            meta[f"torch_f32_rel.{size}.{key}"] = f"{err:.3e}"
            print(f"{layers} layers {size} px {key}: torch f32 vs f64 max rel {err:.3e}", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, filename)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    return meta


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    meta = make(2, SIZES, [0, 1, 2], "dinov2_vitb_2layer_ref.safetensors")
    # The full depth (slower test, `cargo test --release --test vision -- --ignored`): 256 px only.
    make(12, [256], [0, 3, 6, 9, 12], "dinov2_vitb_12layer_ref.safetensors")
    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump({k: meta[k] for k in ("torch", "transformers", "numpy")}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
