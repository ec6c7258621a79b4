#!/usr/bin/env bash
# Run every cargo-fuzz target under fuzz/fuzz_targets for SECONDS each (default 60).
#
#   scripts/fuzz-smoke.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz needs a nightly compiler (for
# -Zsanitizer and the coverage flags): it uses `cargo +nightly` when a nightly toolchain is
# installed, otherwise the stable toolchain with RUSTC_BOOTSTRAP=1 (which unlocks nightly flags
# on stable; fine for a test harness, never for release builds). FUZZ_SANITIZER=none|address
# (default address) picks the sanitizer; debug assertions, and with them integer-overflow
# checks, are on. Corpora grow in fuzz/corpus/TARGET (gitignored); committed seeds come from
# fuzz/seeds/TARGET; crashes land in fuzz/artifacts/TARGET.
# FUZZ_TOOLCHAIN=stable forces the stable compiler (what CI has) even where nightly is installed.
# Exit status: non-zero if any target found a crash (or failed to build).
set -euo pipefail

secs="${1:-60}"
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
toolchain=()
if [ "${FUZZ_TOOLCHAIN:-}" = stable ]; then
    export RUSTC_BOOTSTRAP=1
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
sanitizer="${FUZZ_SANITIZER:-address}"

status=0
for src in fuzz_targets/*.rs; do
    target="$(basename "$src" .rs)"
    mkdir -p "corpus/$target"
    dirs=("corpus/$target")
    [ -d "seeds/$target" ] && dirs+=("seeds/$target")
    echo "== $target: ${secs}s (sanitizer $sanitizer, ${toolchain[*]:-stable+RUSTC_BOOTSTRAP})"
    if cargo "${toolchain[@]}" fuzz run --debug-assertions --sanitizer "$sanitizer" "$target" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "== $target: no crash"
    else
        echo "== $target: FAILED (see fuzz/artifacts/$target)" >&2
        status=1
    fi
done
exit "$status"
