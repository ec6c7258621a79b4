#!/usr/bin/env python3
"""Independent reference for `medregion attributes` on the pyradiomics tumour masks.

Computes, with numpy / scipy / scikit-image and none of medregion's code:
  * voxel volume = |det(space directions)|, component volumes = voxel count x voxel volume;
  * 3D connected components of the non-zero labels, `scipy.ndimage.label` with a 3x3x3
    structure (26-connectivity), and how many reach the 10 mm^3 minimum;
  * per component, the longest axial diameter: for every slice perpendicular to the voxel axis
    closest to S-I, `skimage.measure.find_contours(slice, 0.5)` on the zero-padded slice (all
    contours), points mapped to mm with the in-plane space directions, `scipy.spatial.ConvexHull`
    of the points, and the largest `scipy.spatial.distance.pdist` of the hull vertices; the
    perpendicular diameter is the hull's extent perpendicular to that long axis on the same slice.

Writes tests/fixtures/attributes/pyradiomics_reference.json (committed), read by
tests/attributes.rs. Usage:
    python scripts/attributes/reference.py [DATA_DIR]
DATA_DIR defaults to .cache/testdata/pyradiomics/data (python3 scripts/fetch_testdata.py pyradiomics).
"""
import json
import sys
from pathlib import Path

import nrrd
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist, squareform
from skimage.measure import find_contours

ROOT = Path(__file__).resolve().parents[2]
MIN_VOLUME_MM3 = 10.0


def slice_measure(mask2d, col_a, col_r):
    """Longest and perpendicular diameter (mm) of one 2D mask (axes a, r) or None."""
    padded = np.pad(mask2d.astype(np.float64), 1)
    contours = find_contours(padded, 0.5)
    if not contours:
        return None
    pts = np.concatenate(contours) - 1.0  # (a, r) voxel coordinates
    mm = pts[:, :1] * col_a + pts[:, 1:] * col_r  # 3D mm positions in the slice plane
    # 2D coordinates in the plane for the hull (orthonormal in-plane basis).
    e1 = col_a / np.linalg.norm(col_a)
    n = np.cross(col_a, col_r)
    e2 = np.cross(n, e1)
    e2 /= np.linalg.norm(e2)
    xy = np.stack([mm @ e1, mm @ e2], axis=1)
    xy = np.unique(np.round(xy, 9), axis=0)
    try:
        verts = xy[ConvexHull(xy).vertices]
    except Exception:  # collinear points (one row or column): the hull is the points
        verts = xy
    d = squareform(pdist(verts))
    i, j = np.unravel_index(np.argmax(d), d.shape)
    longest = float(d[i, j])
    axis = (verts[j] - verts[i]) / longest
    perp = np.array([-axis[1], axis[0]])
    proj = verts @ perp
    return longest, float(proj.max() - proj.min())


def measure(label_path):
    data, header = nrrd.read(str(label_path))  # pynrrd: data[x, y, z]
    dirs = np.asarray(header["space directions"], dtype=np.float64)  # rows: axis vectors (LPS)
    voxel_mm3 = abs(float(np.linalg.det(dirs)))
    values = sorted(int(v) for v in np.unique(data))
    mask = data != 0
    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    # Axial axis: the voxel axis whose direction is closest to S-I (third patient coordinate).
    axial = int(np.argmax(np.abs(dirs[:, 2]) / np.linalg.norm(dirs, axis=1)))
    plane = [a for a in range(3) if a != axial]
    objects = ndimage.find_objects(comps)
    out = []
    for idx, sl in enumerate(objects, start=1):
        sub = comps[sl] == idx
        voxels = int(sub.sum())
        best = None
        for k in range(sub.shape[axial]):
            m2 = np.take(sub, k, axis=axial)  # axes in order plane[0], plane[1]
            if not m2.any():
                continue
            r = slice_measure(m2, dirs[plane[0]], dirs[plane[1]])
            if r is not None and (best is None or r[0] > best[0]):
                best = (r[0], r[1], k + sl[axial].start)
        coords = np.argwhere(sub) + np.array([s.start for s in sl])
        out.append({
            "voxels": voxels,
            "volume_mm3": voxels * voxel_mm3,
            "longest_diameter_mm": best[0],
            "perpendicular_diameter_mm": best[1],
            "axial_slice": best[2],
            "centroid_voxel": coords.mean(axis=0).tolist(),
        })
    out.sort(key=lambda c: (-c["voxels"], -c["longest_diameter_mm"]))
    return {
        "dims": list(data.shape),
        "label_values": values,
        "voxel_volume_mm3": voxel_mm3,
        "axial_axis": axial,
        "components": n,
        "kept_min_10mm3": sum(1 for c in out if c["volume_mm3"] >= MIN_VOLUME_MM3),
        "lesions": out,
    }


def main():
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".cache/testdata/pyradiomics/data"
    doc = {
        "generator": "scripts/attributes/reference.py (scipy.ndimage.label 26-conn, skimage find_contours, "
        "scipy ConvexHull + pdist)",
        "cases": {name: measure(data_dir / f"{name}_label.nrrd") for name in ["lung1", "lung2"]},
    }
    out = ROOT / "tests/fixtures/attributes/pyradiomics_reference.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for name, case in doc["cases"].items():
        print(name, case["label_values"], case["components"], [
            (c["voxels"], round(c["longest_diameter_mm"], 3)) for c in case["lesions"]])


if __name__ == "__main__":
    main()
