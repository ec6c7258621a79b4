#!/usr/bin/env bash
# Runs on the GPU machine (no Rust toolchain) from the binaries scripts/gpu-build.sh put in
# .device/: every CUDA parity test (including the ignored GPU tests), then the CUDA benchmark.
# Logs go to OUTDIR; a short table is printed last.
#
#   bash scripts/gpu-check.sh OUTDIR        (from the repository root, .device/ present)
set -uo pipefail
out="${1:?usage: gpu-check.sh OUTDIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
dev=.device
if [ -f "$dev/bundle.tar.xz" ] && [ ! -d "$dev/tests" ]; then
    tar -C "$dev" -xJf "$dev/bundle.tar.xz"
fi
[ -d "$dev/tests" ] || { echo "no $dev/tests: run scripts/gpu-build.sh where Rust is" >&2; exit 2; }

# The driver, NVRTC-free (kernels are embedded), cuBLAS from the system or the nvidia-* wheels.
libdirs=$( (ldconfig -p 2>/dev/null | grep -E 'libcublas|libcuda\.so' | awk '{print $NF}' | xargs -r -n1 dirname;
            python3 - <<'PY' 2>/dev/null
import importlib.util as u, glob, os
s = u.find_spec("nvidia")
for loc in (s.submodule_search_locations if s else []):
    for d in glob.glob(os.path.join(loc, "*", "lib")):
        print(d)
PY
          ) | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

"$dev/bin/medregion" info > "$out/info.txt" 2>&1
summary="$out/summary.txt"
: > "$summary"
status=0
for t in "$dev"/tests/*; do
    name=$(basename "$t")
    timeout 300 "$t" --include-ignored --test-threads=1 > "$out/test-$name.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || status=1
    line=$(grep -E '^test result:' "$out/test-$name.log" | tail -1)
    printf '%-22s rc=%-3s %s\n' "$name" "$rc" "${line:-no result line (crashed or timed out)}" >> "$summary"
    grep -E '^test .* FAILED$' "$out/test-$name.log" | head -10 | sed 's/^/    /' >> "$summary"
done

if [ -x "$dev/bin/cuda" ]; then
    timeout 400 "$dev/bin/cuda" --bench > "$out/bench-cuda.log" 2>&1 || status=1
    printf '\n' >> "$summary"
    grep -E '^\|' "$out/bench-cuda.log" >> "$summary" || tail -3 "$out/bench-cuda.log" >> "$summary"
fi
echo
echo "=== summary ($(head -2 "$out/gpu.txt" | tail -1)) ==="
cat "$summary"
exit $status
