#!/usr/bin/env bash
# Builds, on a machine with a Rust toolchain and NVRTC (no GPU needed), everything
# scripts/gpu-check.sh runs on the GPU machine (which has no Rust): every tests/cuda_*.rs test
# binary, the CUDA benchmark and the CLI, for CUDA 13 by default (CUDARC_CUDA_VERSION=12090 for
# a CUDA 12 driver/cuBLAS), stripped, into .device/ (git-ignored). Then carry `.device` and run
# `bash scripts/gpu-check.sh "$OUT"` there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target-device}"
dest=.device
rm -rf "$dest" && mkdir -p "$dest/tests" "$dest/bin"

json=$(mktemp)
cargo test --release --features cuda --test 'cuda_*' --bench cuda --no-run --message-format=json > "$json"
cargo build --release --features cuda --bin medregion
python3 - "$dest" "$json" <<'PY'
import json, shutil, sys, os
dest = sys.argv[1]
for line in open(sys.argv[2]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    name, kinds = m["target"]["name"], m["target"]["kind"]
    if "test" in kinds:
        out = os.path.join(dest, "tests", name)
    elif "bench" in kinds:
        out = os.path.join(dest, "bin", name)
    else:
        continue
    shutil.copy2(m["executable"], out)
PY
rm -f "$json"
cp "$CARGO_TARGET_DIR/release/medregion" "$dest/bin/medregion"
strip "$dest"/tests/* "$dest"/bin/*
ls -la "$dest/tests" "$dest/bin"
# Every binary embeds the same ~28 MB of kernels: one xz stream with a 64 MiB dictionary stores
# them about once, so the bundle fits the device tool's 64 MiB carry.
tar -C "$dest" -cf - tests bin | xz -9 -T1 > "$dest/bundle.tar.xz"
rm -rf "$dest/tests" "$dest/bin"
du -sh "$dest/bundle.tar.xz"
