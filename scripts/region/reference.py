#!/usr/bin/env python3
"""PyTorch reference of the region tokens (R² pooling, connector, mask extractor) for
tests/region.rs, written from SPEC-model.md §4.3, §5 and §6.3 (not from the Rust code).

    /work/venv-hf/bin/python scripts/region/reference.py   # writes tests/fixtures/region/

One small, seeded study: T = 8 slices, a 6x6 patch grid (37 tokens with CLS), width D = 16,
hidden_states levels 0..2 of a 2-layer encoder, nine 0/1 slot masks of 8x20x20 in the default
segmentation order, designed to cover the edge cases: an empty region (large airways), a mask on
a single slice (mediastinum), a mask with equal area on every slice (heart: a full tie), ties
between two slices (lung), a one-voxel lesion (nodule), an empty lesion (effusion).

Four cases, each with its own random heads (connector Linear(16 -> 20), res{1,2} Linear(16 -> 12),
feat_linear Linear(12 -> 20), a 3-layer MLP with hidden width 10) and settings; every case runs
all six regions:
  uniform      pooling.mode = uniform, raw levels, r2_flat spatial input
  topk         r2 + per_region_topk, raw levels, r2_flat
  fixed        r2 + fixed_regions [large_airways, mediastinum, heart_great_vessels], final-LN
               levels, slice2d spatial input (mask_shape 8), binarize threshold 0.05
  topk_raw     r2 + per_region_topk, image feature = last layer raw, connector without bias

All arithmetic is float64; outputs are stored as F64 (slices as I64). Case settings go to the
file's metadata (`cases`, JSON).
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

T, GP, D, H, W = 8, 6, 16, 20, 20
N1 = 1 + GP * GP
K, G = 3, 3
LEVELS = [1, 2]
N_LAYERS = 2
E, DM, MLP_HIDDEN = 12, 20, 10
N_TOKENS = T + K * G * G
EPS, LN_EPS = 1e-8, 1e-6
SLOTS = ["lung", "large_airways", "mediastinum", "heart_great_vessels", "osseous", "upper_abdomen",
         "lung_nodule", "pleural_effusion", "kidney_cyst"]
REGIONS = SLOTS[:6]

CASES = {
    "uniform": dict(mode="uniform", select="per_region_topk", level_norm="raw", spatial_input="r2_flat",
                    feature="last_hidden_state", binarize_threshold=0.0, connector_bias=True, mask_shape=8),
    "topk": dict(mode="r2", select="per_region_topk", level_norm="raw", spatial_input="r2_flat",
                 feature="last_hidden_state", binarize_threshold=0.0, connector_bias=True, mask_shape=8),
    "fixed": dict(mode="r2", select="fixed_regions", level_norm="final_layernorm", spatial_input="slice2d",
                  feature="last_hidden_state", binarize_threshold=0.05, connector_bias=True, mask_shape=8,
                  fixed_regions=["large_airways", "mediastinum", "heart_great_vessels"]),
    "topk_raw": dict(mode="r2", select="per_region_topk", level_norm="raw", spatial_input="r2_flat",
                     feature="last_layer_raw", binarize_threshold=0.0, connector_bias=False, mask_shape=8),
}


def make_masks(rng):
    m = np.zeros((len(SLOTS), T, H, W), dtype=np.uint8)
    # lung: areas per slice 0, 40, 90, 90, 60, 30, 10, 0 -> ties between slices 2 and 3.
    lung_areas = [0, 40, 90, 90, 60, 30, 10, 0]
    for t, a in enumerate(lung_areas):
        flat = np.zeros(H * W, dtype=np.uint8)
        flat[rng.permutation(H * W)[:a]] = 1
        m[0, t] = flat.reshape(H, W)
    # large airways: empty. mediastinum: one block on slice 5.
    m[2, 5, 6:12, 8:13] = 1
    # heart: the same 7x7 block on every slice (all areas tie).
    m[3, :, 10:17, 3:10] = 1
    # osseous, upper abdomen, kidney cyst: random with different densities.
    m[4] = (rng.random((T, H, W)) < 0.15).astype(np.uint8)
    m[5, 4:] = (rng.random((T - 4, H, W)) < 0.3).astype(np.uint8)
    m[6, 6, 13, 4] = 1  # a one-voxel nodule
    # pleural effusion: empty.
    m[8, 1:3, 2:6, 14:19] = 1
    return m


def uniform(t, k):
    return [int(v) for v in np.round(np.linspace(0, t - 1, k)).astype(int)]


def ranked(areas):
    return sorted(range(len(areas)), key=lambda t: (-areas[t], t))


def select(case, region, areas):
    if case["mode"] == "uniform":
        return uniform(T, K), "uniform"
    if case["select"] == "per_region_topk":
        a = areas[SLOTS.index(region)]
        if a.sum() == 0:
            return uniform(T, K), "uniform_fallback"
        return sorted(ranked(a)[:K]), "per_region_topk"
    # fixed_regions: round-robin over the regions' non-empty slices, then uniform, then lowest.
    lists = []
    for key in case["fixed_regions"]:
        a = areas[SLOTS.index(key)]
        lists.append([t for t in ranked(a) if a[t] > 0])
    if all(len(l) == 0 for l in lists):
        return uniform(T, K), "uniform_fallback"
    chosen, rank = [], 0
    while len(chosen) < K and any(rank < len(l) for l in lists):
        for l in lists:
            if len(chosen) < K and rank < len(l) and l[rank] not in chosen:
                chosen.append(l[rank])
        rank += 1
    for t in uniform(T, K) + list(range(T)):
        if len(chosen) == K:
            break
        if t not in chosen:
            chosen.append(t)
    return sorted(chosen), "fixed_regions"


def r2(feat, idx):
    """feat [T, 1+N, D] -> [T + K*G*G, D] (SPEC §4.3 tensor recipe)."""
    p = feat[:, 1:, :]
    glob = p.mean(dim=1)
    grid = p[idx].reshape(len(idx), GP, GP, D).permute(0, 3, 1, 2)
    reg = F.adaptive_avg_pool2d(grid, (G, G)).permute(0, 2, 3, 1).reshape(len(idx) * G * G, D)
    return torch.cat([glob, reg])


def linear(x, w, b):
    return x @ w.T + (b if b is not None else 0)


def main():
    out_dir = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "region")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261129)
    torch.manual_seed(20261129)
    tensors = {}
    last = torch.randn(T, N1, D, dtype=torch.float64)
    hidden = {l: torch.randn(T, N1, D, dtype=torch.float64) * (1 + l) for l in range(N_LAYERS + 1)}
    masks = make_masks(rng)
    tensors["input.last_hidden_state"] = last.float()
    for l, v in hidden.items():
        tensors[f"input.hidden_states.{l}"] = v.float()
    tensors["input.masks"] = torch.from_numpy(masks)
    # The model sees the f32 inputs: compute from their f64 copies.
    last = tensors["input.last_hidden_state"].double()
    hidden = {l: tensors[f"input.hidden_states.{l}"].double() for l in hidden}
    m64 = torch.from_numpy(masks).double()
    areas = masks.reshape(len(SLOTS), T, -1).astype(np.int64).sum(-1)
    mp = F.interpolate(m64.reshape(-1, 1, H, W), size=(GP, GP), mode="bilinear", align_corners=False)
    mp = mp.reshape(len(SLOTS), T, GP, GP)

    for name, case in CASES.items():
        def rand(shape, fan_in):
            return (torch.randn(*shape, dtype=torch.float64) / fan_in ** 0.5).float()
        wts = {
            "proj.weight": rand((DM, D), D),
            "mask.feat_linear.weight": rand((DM, E), E),
            "mask.feat_linear.bias": rand((DM,), 1) * 0.1,
            "vit.layernorm.weight": 1 + 0.1 * rand((D,), 1),
            "vit.layernorm.bias": 0.1 * rand((D,), 1),
        }
        if case["connector_bias"]:
            wts["proj.bias"] = rand((DM,), 1) * 0.1
        for k in range(len(LEVELS)):
            wts[f"mask.res{k + 1}.weight"] = rand((E, D), D)
            wts[f"mask.res{k + 1}.bias"] = rand((E,), 1) * 0.1
        s_in = N_TOKENS if case["spatial_input"] == "r2_flat" else case["mask_shape"] ** 2
        dims = [(MLP_HIDDEN, s_in), (MLP_HIDDEN, MLP_HIDDEN), (DM, MLP_HIDDEN)]
        for i, (o, n) in enumerate(dims):
            wts[f"mask.mask_linear.layers.{i}.weight"] = rand((o, n), n)
            wts[f"mask.mask_linear.layers.{i}.bias"] = rand((o,), 1) * 0.1
        for k, v in wts.items():
            tensors[f"{name}/{k}"] = v
        w = {k: v.double() for k, v in wts.items()}

        image_feat = last if case["feature"] == "last_hidden_state" else hidden[N_LAYERS]
        levels = []
        for l in LEVELS:
            f = hidden[l]
            if case["level_norm"] == "final_layernorm":
                f = F.layer_norm(f, (D,), w["vit.layernorm.weight"], w["vit.layernorm.bias"], LN_EPS)
            levels.append(f)
        for region in REGIONS:
            idx, rule = select(case, region, areas)
            v = r2(image_feat, idx)
            image = linear(v, w["proj.weight"], w.get("proj.bias"))
            m_g = mp.mean(dim=(2, 3))
            m_r = F.adaptive_avg_pool2d(mp[:, idx], (G, G)).reshape(len(SLOTS), K * G * G)
            mvec = torch.cat([m_g, m_r], dim=1)
            on = (mvec > case["binarize_threshold"]).double()
            wgt = on / (on.sum(-1, keepdim=True) + EPS)
            acc = 0
            for k, f in enumerate(levels):
                pooled = wgt @ r2(f, idx)
                acc = acc + linear(pooled, w[f"mask.res{k + 1}.weight"], w[f"mask.res{k + 1}.bias"])
            mask_tok = linear(acc, w["mask.feat_linear.weight"], w["mask.feat_linear.bias"])
            if case["spatial_input"] == "r2_flat":
                x = mvec
            else:
                rows = []
                for s in range(len(SLOTS)):
                    best = int(np.argmax(areas[s]))  # first maximum: ties to the lower index
                    r = F.interpolate(m64[s, best][None, None], size=(case["mask_shape"],) * 2,
                                      mode="bilinear", align_corners=False)
                    rows.append(r.reshape(-1))
                x = torch.stack(rows)
            for i in range(3):
                x = linear(x, w[f"mask.mask_linear.layers.{i}.weight"], w[f"mask.mask_linear.layers.{i}.bias"])
                if i < 2:
                    x = torch.relu(x)
            pre = f"{name}.{region}"
            tensors[f"{pre}.slices"] = torch.tensor(idx, dtype=torch.int64)
            tensors[f"{pre}.pooled"] = v
            tensors[f"{pre}.image"] = image
            tensors[f"{pre}.mask_vectors"] = mvec
            tensors[f"{pre}.mask_tokens"] = mask_tok
            tensors[f"{pre}.spatial_tokens"] = x
            case.setdefault("rules", {})[region] = rule

    meta = {"cases": json.dumps(CASES), "torch": torch.__version__,
            "dims": json.dumps(dict(T=T, GP=GP, D=D, H=H, W=W, K=K, G=G, LEVELS=LEVELS, N_LAYERS=N_LAYERS,
                                    E=E, DM=DM, MLP_HIDDEN=MLP_HIDDEN))}
    path = os.path.join(out_dir, "region_ref.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    for name, case in CASES.items():
        print(name, case["rules"])


if __name__ == "__main__":
    main()
