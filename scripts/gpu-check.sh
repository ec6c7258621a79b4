#!/usr/bin/env bash
# Runs on the GPU machine (no Rust toolchain) from the binaries scripts/gpu-build.sh put in
# .device/: every CUDA parity test (including the ignored GPU tests), then the CUDA benchmark.
# Logs go to OUTDIR; a short table is printed last.
#
#   bash scripts/gpu-check.sh OUTDIR        (from the repository root, .device/ present)
#   QUICK=1 bash scripts/gpu-check.sh OUTDIR   tests and the demo diff only (no benchmarks)
#   FULL=1 bash scripts/gpu-check.sh OUTDIR    also the full-size study (minutes: 8B package)
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

# The CLI end to end: the demo report on the CPU and on the GPU (same package), and the text
# diff (expected empty; a difference must come from a greedy tie, which tests/cuda_report.rs
# checks against the CPU's logit margins).
"$dev/bin/medregion" report --demo --quiet --device cpu > "$out/demo-cpu.txt" 2> "$out/demo-cpu.err"
rc_cpu=$?
timeout 300 "$dev/bin/medregion" report --demo --quiet --device cuda:0 > "$out/demo-cuda.txt" 2> "$out/demo-cuda.err"
rc_gpu=$?
if [ $rc_cpu -ne 0 ] || [ $rc_gpu -ne 0 ]; then
    status=1
    printf 'demo report            rc cpu=%s cuda=%s (see demo-*.err)\n' "$rc_cpu" "$rc_gpu" >> "$summary"
elif diff "$out/demo-cpu.txt" "$out/demo-cuda.txt" > "$out/demo-diff.txt"; then
    printf 'demo report            cpu and cuda:0 texts identical\n' >> "$summary"
else
    printf 'demo report            cpu and cuda:0 texts DIFFER (%s diff lines, demo-diff.txt)\n' \
        "$(wc -l < "$out/demo-diff.txt")" >> "$summary"
fi
if [ "${QUICK:-0}" = 1 ]; then
    echo; echo "=== summary ($(head -2 "$out/gpu.txt" | tail -1); QUICK: no benchmarks) ==="
    cat "$summary"
    exit $status
fi
# The pipeline benchmark on the GPU: the small synthetic package (RAD-DINO ViT-B + a
# Llama-3.2-1B-shaped decoder; the tiny preset's 16-wide heads are not run on CUDA).
for preset in small; do
    timeout 300 "$dev/bin/medregion" bench report --preset "$preset" --device cuda:0 --modes both \
        > "$out/bench-report-$preset.log" 2>&1 || status=1
    printf '\n' >> "$summary"
    tail -4 "$out/bench-report-$preset.log" >> "$summary"
done
# FULL=1: the issue's target study (RAD-DINO + LLaMA-3-8B Q4_0 shapes, 6 regions x 150 tokens,
# the production bf16 encoder). Writing the 8B synthetic package takes minutes: opt-in.
if [ "${FULL:-0}" = 1 ]; then
    timeout 900 "$dev/bin/medregion" bench report --preset full --device cuda:0 --gpu-encoder bf16 \
        --modes batched --max-new-tokens 150 > "$out/bench-report-full.log" 2>&1 || status=1
    printf '\n' >> "$summary"
    tail -4 "$out/bench-report-full.log" >> "$summary"
fi

# The decoder benchmark on the GPU: the small package's Llama-3.2-1B-shaped Q4_0 decoder,
# batch 1 and 6 (GB/s against the copy bandwidth, CUDA graphs used or why not).
small="$out/small.safetensors"
if timeout 300 "$dev/bin/medregion" convert --synthetic small --seed 1 -o "$small" --quant llm=q4_0,vit=f16 \
        > "$out/convert-small.log" 2>&1; then
    timeout 300 "$dev/bin/medregion" bench llm --model "$small" --device cuda:0 --batch 6 --prompt-len 512 \
        --steps 64 > "$out/bench-llm-small.log" 2>&1 || status=1
    timeout 300 "$dev/bin/medregion" bench vision --model "$small" --device cuda:0 --slices 32 \
        > "$out/bench-vision-small.log" 2>&1 || status=1
    printf '\n' >> "$summary"
    cat "$out/bench-llm-small.log" "$out/bench-vision-small.log" | grep -vE '^\s*$' | tail -12 >> "$summary"
    rm -f "$small"
else
    status=1
    printf 'convert --synthetic small failed (convert-small.log)\n' >> "$summary"
fi

if [ -x "$dev/bin/cuda" ]; then
    timeout 400 "$dev/bin/cuda" --bench > "$out/bench-cuda.log" 2>&1 || status=1
    printf '\n' >> "$summary"
    grep -E '^\|' "$out/bench-cuda.log" >> "$summary" || tail -3 "$out/bench-cuda.log" >> "$summary"
fi
echo
echo "=== summary ($(head -2 "$out/gpu.txt" | tail -1)) ==="
cat "$summary"
exit $status
