#!/usr/bin/env python3
"""Check that a medregion model package opens in the official Python `safetensors` package.

Usage: check_safetensors_load.py PACKAGE [--expect SIDECAR.json]

Checks, with `safetensors.safe_open(framework="numpy")` (and `safetensors.numpy.load_file` when
the file holds no BF16 tensor, which numpy cannot represent):
  * the file opens; the `medregion.*` metadata keys are present; the format version is "1";
    `medregion.config` is JSON; the checksum has the form sha256:<64 hex>;
  * every tensor's data starts at a file offset that is a multiple of 64 (fillers `__pad.N`
    excepted), read from the header independently;
  * with --expect: the checksum, and for each listed tensor its dtype, shape, and values
    (`first`: leading values, `sum`: sum of all values) as the Rust test computed them.
    BF16 tensors are read from the raw bytes (numpy has no bfloat16).
Prints "ok: ..." and exits 0, or prints the failures and exits 1.
"""

import json
import math
import struct
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

REQUIRED_KEYS = ["medregion.format_version", "medregion.config", "medregion.tokenizer", "medregion.checksum"]
NP_DTYPES = {"F32": np.float32, "F16": np.float16, "U8": np.uint8}


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return n, header


def raw_bf16(path, data_start, info):
    begin, end = info["data_offsets"]
    with open(path, "rb") as f:
        f.seek(data_start + begin)
        raw = np.frombuffer(f.read(end - begin), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--expect"):
        print(__doc__)
        return 2
    path = argv[1]
    expect = None
    if len(argv) == 4:
        with open(argv[3]) as f:
            expect = json.load(f)
    errors = []

    n, header = read_header(path)
    data_start = 8 + n
    if data_start % 64:
        errors.append(f"data section starts at {data_start}, not a multiple of 64")
    for name, info in header.items():
        if name == "__metadata__" or name.startswith("__pad."):
            continue
        offset = data_start + info["data_offsets"][0]
        if offset % 64:
            errors.append(f"{name}: data at file offset {offset}, not 64-byte aligned")

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        for k in REQUIRED_KEYS:
            if k not in meta:
                errors.append(f"metadata key {k} missing")
        if meta.get("medregion.format_version") != "1":
            errors.append(f"format version {meta.get('medregion.format_version')!r}")
        config = json.loads(meta.get("medregion.config", "null"))
        if not isinstance(config, dict) or "decoder" not in config:
            errors.append("medregion.config is not a config object")
        checksum = meta.get("medregion.checksum", "")
        if not (checksum.startswith("sha256:") and len(checksum) == 71):
            errors.append(f"malformed checksum {checksum!r}")
        if "tokenizer" not in keys:
            errors.append("no tokenizer tensor")

        if expect is not None:
            if expect.get("checksum") and expect["checksum"] != checksum:
                errors.append(f"checksum {checksum} != expected {expect['checksum']}")
            for name, want in expect.get("tensors", {}).items():
                info = header.get(name)
                if info is None:
                    errors.append(f"{name}: missing")
                    continue
                if info["dtype"] != want["dtype"]:
                    errors.append(f"{name}: dtype {info['dtype']} != {want['dtype']}")
                    continue
                if info["dtype"] == "BF16":
                    t = raw_bf16(path, data_start, info)
                else:
                    t = f.get_tensor(name)
                    if t.dtype != NP_DTYPES[info["dtype"]]:
                        errors.append(f"{name}: numpy dtype {t.dtype}")
                if list(t.shape) != want["shape"]:
                    errors.append(f"{name}: shape {list(t.shape)} != {want['shape']}")
                    continue
                flat = t.reshape(-1).astype(np.float64)
                first = want.get("first", [])
                if [float(x) for x in flat[: len(first)]] != [float(x) for x in first]:
                    errors.append(f"{name}: first values {flat[:len(first)].tolist()} != {first}")
                if "sum" in want:
                    s = float(flat.sum())
                    if not math.isclose(s, want["sum"], rel_tol=1e-6, abs_tol=1e-6):
                        errors.append(f"{name}: sum {s} != {want['sum']}")

    has_bf16 = any(v.get("dtype") == "BF16" for k, v in header.items() if k != "__metadata__")
    if not has_bf16:
        tensors = load_file(path)
        if len(tensors) != len(keys):
            errors.append(f"load_file returned {len(tensors)} tensors, safe_open lists {len(keys)}")

    if errors:
        for e in errors:
            print("FAIL:", e)
        return 1
    print(f"ok: {path}: {len(keys)} tensors, checksum {checksum}, load_file {'skipped (BF16)' if has_bf16 else 'ok'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
