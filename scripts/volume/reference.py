#!/usr/bin/env python3
"""Reference implementation of medregion's CT input and preprocessing, and the fixtures
`tests/volume.rs` and `tests/preprocess.rs` compare the Rust code with.

Independent of the Rust code: files are read with pynrrd and nibabel, orientation comes from
nibabel (`io_orientation`, `ornt_transform`, `apply_orientation`, `inv_ornt_aff`), the crop and
the window are numpy, the trilinear resize is scipy `ndimage.map_coordinates(order=1,
mode="nearest")` evaluated at PyTorch's `align_corners=False` sample positions, and masks use
`nearest-exact` indices. The AMOS-MM adaptive window is computed the way the authors' code
does it (clip to foreground percentiles, z-score, min-max over the whole volume).

Usage (from the repository root):
    python3 -m venv .venv-volume && .venv-volume/bin/pip install -r scripts/volume/requirements.txt
    .venv-volume/bin/python scripts/volume/reference.py          # rewrites tests/fixtures/volume/

Writes into tests/fixtures/volume/:
    lung1_ref.json, lung2_ref.json   per CT: geometry, HU statistics, and for each preprocessing
                                     variant the reorientation, crop box, window, output affine,
                                     statistics, per-slice means and sampled output voxels (CT
                                     and mask) of the 32x256x256 output
    lung1_small.nrrd                 lung1 subsampled to 64x64x24 (every 8th column/row, every
                                     2nd slice), written by pynrrd (gzip, LPS)
    lung1_small_lps_sform.nii.gz     the same voxels and storage order, NIfTI by nibabel, sform
    lung1_small_sra_qform.nii.gz     stored with axes (S, R, A), qform only (a rotation)
    lung1_small_rps_qform.nii.gz     stored with axes (R, P, S), qform only (qfac = -1)
    lung1_small_ref.json             reference output of the small volume (defaults, 8x32x32)
The CTs come from the PyPI sdist pyradiomics==3.0.1 (BSD-3), fetched by
scripts/fetch_testdata.py into .cache/testdata/pyradiomics/.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
from nibabel import orientations as ornt_mod
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "volume"
SHAPE = (32, 256, 256)  # D, H, W
N_SAMPLES = 400
N_MASK_SAMPLES = 100
SEED = 20260101

# Preprocessing variants (the fields of medregion's PreprocessConfig that differ from its defaults).
VARIANTS = {
    "default": {},
    "lps": {"orientation": "lps"},
    "amos": {"normalization": "amos_adaptive"},
    "threshold_-500": {"foreground_hu_threshold": -500.0},
}
DEFAULTS = {
    "depth": 32,
    "height": 256,
    "width": 256,
    "orientation": "ras",
    "crop_foreground": True,
    "foreground_hu_threshold": -1000.0,
    "normalization": "hu_window",
    "hu_min": -1000.0,
    "hu_max": 1000.0,
    "amos_lower_percentile": 0.05,
    "amos_upper_percentile": 99.95,
}


def testdata(member: str) -> Path:
    base = ROOT / ".cache" / "testdata" / "pyradiomics"
    path = base / member
    if not path.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_testdata.py"), "pyradiomics"], check=True)
    return path


def read_nrrd_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels indexed [x, y, z] and the voxel -> RAS+ affine."""
    data, hdr = nrrd.read(str(path), index_order="F")
    assert hdr["space"] == "left-posterior-superior", hdr["space"]
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(hdr["space directions"], dtype=np.float64).T  # columns = axes
    lps[:3, 3] = np.asarray(hdr["space origin"], dtype=np.float64)
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def reorient(data: np.ndarray, affine: np.ndarray, target: str):
    """nibabel: the array in the target orientation, its affine, and (source_axis, flipped)."""
    start = ornt_mod.io_orientation(affine)
    goal = ornt_mod.axcodes2ornt(tuple(target.upper()))
    transform = ornt_mod.ornt_transform(start, goal)
    canon = ornt_mod.apply_orientation(data, transform)
    canon_affine = affine @ ornt_mod.inv_ornt_aff(transform, data.shape)
    source_axis = [0, 0, 0]
    flipped = [False, False, False]
    for axis, (new_axis, flip) in enumerate(transform):
        source_axis[int(new_axis)] = axis
        flipped[int(new_axis)] = bool(flip < 0)
    return canon, canon_affine, source_axis, flipped


def bbox(mask: np.ndarray):
    """Half-open bounding box of True voxels, or None."""
    if not mask.any():
        return None
    start, end = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        start.append(int(idx[0]))
        end.append(int(idx[-1]) + 1)
    return start, end


def amos_window(hu: np.ndarray, lo_pct: float, hi_pct: float):
    """AMOS-MM `normalize` (LaMed multi_dataset*.py), returned as the window it amounts to,
    checked against the literal computation."""
    x = hu.astype(np.float64)
    t = x.mean()
    fg = x[x > t]
    lo, hi = np.percentile(fg, lo_pct), np.percentile(fg, hi_pct)
    clipped = np.clip(x, lo, hi)
    z = (clipped - fg.mean()) / max(fg.std(), 1e-8)
    literal = (z - z.min()) / max((z - z.min()).max(), 1e-8)
    as_window = (clipped - lo) / (hi - lo)
    assert np.abs(literal - as_window).max() < 1e-9
    return float(lo), float(hi)


def positions(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch align_corners=False source coordinates, clamped below at 0."""
    return np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)


def nearest_exact(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def trilinear(vol_xyz: np.ndarray, shape_dhw) -> np.ndarray:
    """scipy map_coordinates at the align_corners=False positions; returns [D, H, W]."""
    d, h, w = shape_dhw
    px, py, pz = (positions(vol_xyz.shape[0], w), positions(vol_xyz.shape[1], h), positions(vol_xyz.shape[2], d))
    gz, gy, gx = np.meshgrid(pz, py, px, indexing="ij")
    coords = np.stack([gx.ravel(), gy.ravel(), gz.ravel()])
    out = ndimage.map_coordinates(vol_xyz, coords, order=1, mode="nearest", prefilter=False)
    return out.reshape(d, h, w)


def nearest(vol_xyz: np.ndarray, shape_dhw) -> np.ndarray:
    d, h, w = shape_dhw
    ix = nearest_exact(vol_xyz.shape[0], w)
    iy = nearest_exact(vol_xyz.shape[1], h)
    iz = nearest_exact(vol_xyz.shape[2], d)
    return vol_xyz[np.ix_(ix, iy, iz)].transpose(2, 1, 0)


def preprocess(hu, affine, cfg, label=None):
    canon, canon_affine, source_axis, flipped = reorient(hu, affine, cfg["orientation"])
    dims = hu.shape
    box = bbox(canon > cfg["foreground_hu_threshold"]) if cfg["crop_foreground"] else None
    if box is None:
        box = ([0, 0, 0], list(canon.shape))
    start, end = box
    sl = tuple(slice(s, e) for s, e in zip(start, end))
    if cfg["normalization"] == "hu_window":
        lo, hi = cfg["hu_min"], cfg["hu_max"]
    else:
        lo, hi = amos_window(hu, cfg["amos_lower_percentile"], cfg["amos_upper_percentile"])
    windowed = (np.clip(canon[sl].astype(np.float64), lo, hi) - lo) / (hi - lo)
    shape = (cfg["depth"], cfg["height"], cfg["width"])
    out = trilinear(windowed, shape)
    mask_out = None
    if label is not None:
        mask_out = nearest(reorient(label, affine, cfg["orientation"])[0][sl], shape)
    # The crop box in stored indices: map both corners back through the reorientation.
    stored_start, stored_end = [0, 0, 0], [0, 0, 0]
    for c in range(3):
        a = source_axis[c]
        if flipped[c]:
            stored_start[a], stored_end[a] = dims[a] - end[c], dims[a] - start[c]
        else:
            stored_start[a], stored_end[a] = start[c], end[c]
    # Output (w, h, d) -> RAS: canonical affine after crop + align_corners=False scaling.
    size = [e - s for s, e in zip(start, end)]
    n_out = [shape[2], shape[1], shape[0]]
    t = np.eye(4)
    for i in range(3):
        scale = size[i] / n_out[i]
        t[i, i] = scale
        t[i, 3] = start[i] + 0.5 * scale - 0.5
    return {
        "out": out,
        "mask": mask_out,
        "reorientation": {"source_axis": source_axis, "flipped": flipped,
                          "from": "".join(nib.aff2axcodes(affine)), "to": cfg["orientation"].upper()},
        "crop_canonical": {"start": start, "end": end},
        "crop_stored": {"start": stored_start, "end": stored_end},
        "window": [lo, hi],
        "affine": (canon_affine @ t).tolist(),
    }


def summarize(result, rng: np.random.Generator) -> dict:
    out = result["out"]
    d, h, w = out.shape
    corners = [[a, b, c] for a in (0, d - 1) for b in (0, h - 1) for c in (0, w - 1)]
    picks = np.stack([rng.integers(0, d, N_SAMPLES), rng.integers(0, h, N_SAMPLES), rng.integers(0, w, N_SAMPLES)], 1)
    idx = corners + picks.tolist()
    doc = {k: result[k] for k in ("reorientation", "crop_canonical", "crop_stored", "window", "affine")}
    doc["stats"] = {"mean": float(out.mean()), "std": float(out.std()), "min": float(out.min()),
                    "max": float(out.max())}
    doc["slice_means"] = [float(v) for v in out.mean(axis=(1, 2))]
    doc["samples"] = [[int(a), int(b), int(c), float(out[a, b, c])] for a, b, c in idx]
    mask = result["mask"]
    if mask is not None:
        labels, counts = np.unique(mask, return_counts=True)
        doc["mask_counts"] = {str(int(k)): int(v) for k, v in zip(labels, counts)}
        doc["mask_slice_counts"] = [int(v) for v in (mask > 0).sum(axis=(1, 2))]
        inside = np.argwhere(mask > 0)
        take = inside[rng.choice(len(inside), min(N_MASK_SAMPLES, len(inside)), replace=False)] if len(inside) else []
        border = np.argwhere(ndimage.binary_dilation(mask > 0) & (mask == 0))
        take_b = border[rng.choice(len(border), min(N_MASK_SAMPLES, len(border)), replace=False)] if len(border) else []
        doc["mask_samples"] = [[int(a), int(b), int(c), int(mask[a, b, c])] for a, b, c in list(take) + list(take_b)]
    return doc


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def case(name: str) -> None:
    img_path, lab_path = testdata(f"data/{name}_image.nrrd"), testdata(f"data/{name}_label.nrrd")
    hu, affine = read_nrrd_ras(img_path)
    label, label_affine = read_nrrd_ras(lab_path)
    assert np.allclose(affine, label_affine)
    doc = {
        "source": f"pyradiomics==3.0.1 data/{name}_image.nrrd (+ data/{name}_label.nrrd)",
        "sha256": sha256(img_path),
        "dims": list(hu.shape),
        "spacing": [float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))],
        "affine_ras": affine.tolist(),
        "orientation": "".join(nib.aff2axcodes(affine)),
        "hu": {"min": float(hu.min()), "max": float(hu.max()), "mean": float(hu.astype(np.float64).mean())},
        "voxel_samples": [],
        "variants": {},
    }
    rng = np.random.default_rng(SEED)
    for x, y, z in zip(rng.integers(0, hu.shape[0], 50), rng.integers(0, hu.shape[1], 50), rng.integers(0, hu.shape[2], 50)):
        doc["voxel_samples"].append([int(x), int(y), int(z), float(hu[x, y, z])])
    for vname, overrides in VARIANTS.items():
        cfg = {**DEFAULTS, **overrides}
        result = preprocess(hu, affine, cfg, label=label)
        doc["variants"][vname] = {"config": overrides, **summarize(result, rng)}
    (OUT / f"{name}_ref.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT / f'{name}_ref.json'}")


def small_fixtures() -> None:
    hu, affine = read_nrrd_ras(testdata("data/lung1_image.nrrd"))
    step = np.array([8, 8, 2])
    sub = np.ascontiguousarray(hu[::8, ::8, ::2]).astype(np.int16)
    sub_affine = affine.copy()
    sub_affine[:3, :3] = affine[:3, :3] * step  # scale each axis column
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ sub_affine
    header = {
        "type": "short",
        "dimension": 3,
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,
        "space origin": lps[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "endian": "little",
        "encoding": "gzip",
    }
    path = OUT / "lung1_small.nrrd"
    nrrd.write(str(path), sub, header, index_order="F")
    # Drop pynrrd's "# on <date>" comment and the gzip timestamp: regenerating is byte-identical.
    head, _, body = path.read_bytes().partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n") if not line.startswith(b"# on "))
    path.write_bytes(head + b"\n\n" + gzip.compress(gzip.decompress(body), compresslevel=9, mtime=0))

    def save(img: nib.Nifti1Image, fname: str, form: str) -> None:
        a = img.affine
        if form == "sform":
            img.set_sform(a, code=1)
            img.set_qform(None, code=0)
        else:
            img.set_qform(a, code=1)
            img.set_sform(None, code=0)
        img.header.set_data_dtype(np.int16)
        path = OUT / fname
        img.to_filename(str(path))
        # Rewrite the gzip stream without a timestamp so regenerating is byte-identical.
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))

    base = nib.Nifti1Image(sub, sub_affine)
    save(base, "lung1_small_lps_sform.nii.gz", "sform")
    for codes, fname in ((("S", "R", "A"), "lung1_small_sra_qform.nii.gz"), (("R", "P", "S"), "lung1_small_rps_qform.nii.gz")):
        transform = ornt_mod.ornt_transform(ornt_mod.io_orientation(sub_affine), ornt_mod.axcodes2ornt(codes))
        img = nib.Nifti1Image(sub, sub_affine).as_reoriented(transform)
        img = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
        assert "".join(nib.aff2axcodes(img.affine)) == "".join(codes)
        save(img, fname, "qform")
    # The reference output of the small volume (default preprocessing, 8x32x32).
    cfg = {**DEFAULTS, "depth": 8, "height": 32, "width": 32}
    result = preprocess(sub.astype(np.float64), sub_affine, cfg)
    out = result["out"]
    doc = {k: result[k] for k in ("reorientation", "crop_canonical", "crop_stored", "window", "affine")}
    doc["config"] = {"depth": 8, "height": 32, "width": 32}
    doc["dims"] = list(sub.shape)
    doc["affine_ras"] = sub_affine.tolist()
    doc["output"] = [round(float(v), 7) for v in out.ravel()]
    (OUT / "lung1_small_ref.json").write_text(json.dumps(doc) + "\n")
    print(f"wrote the small fixtures into {OUT}")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("lung1", "lung2"):
        case(name)
    small_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
