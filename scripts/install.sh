#!/usr/bin/env bash
# Installs medregion as a C/C++ package:
#
#   scripts/install.sh [--prefix DIR] [--no-build]
#
#   DIR/lib/libmedregion.so, DIR/lib/libmedregion.a     the C ABI (shared and static)
#   DIR/include/medregion.h, DIR/include/medregion.hpp  C header, header-only C++17 wrapper
#   DIR/bin/medregion                                   the CLI
#   DIR/lib/cmake/medregion/medregionConfig.cmake       find_package(medregion CONFIG): targets
#   DIR/lib/cmake/medregion/medregionConfigVersion.cmake  medregion::medregion, ::medregion_static
#   DIR/lib/pkgconfig/medregion.pc                      pkg-config medregion [--static]
#
# Builds `cargo build --release` first unless --no-build; the outputs are taken from
# $CARGO_TARGET_DIR/release (default: target/release in the repository). The default prefix is
# /usr/local. The version comes from Cargo.toml.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix=/usr/local
build=1

usage() {
    echo "usage: scripts/install.sh [--prefix DIR] [--no-build]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix)
            [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; usage; }
            prefix="$2"
            shift 2
            ;;
        --prefix=*)
            prefix="${1#--prefix=}"
            shift
            ;;
        --no-build)
            build=0
            shift
            ;;
        -h | --help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument '$1'" >&2
            usage
            ;;
    esac
done
[ -n "$prefix" ] || { echo "install.sh: --prefix is empty" >&2; exit 2; }
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

version="$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)"
if ! [[ "$version" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+) ]]; then
    echo "install.sh: cannot read the package version from $root/Cargo.toml (got '$version')" >&2
    exit 1
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"

if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release)
fi

case "${CARGO_TARGET_DIR:-}" in
    "") out="$root/target/release" ;;
    /*) out="$CARGO_TARGET_DIR/release" ;;
    *) out="$root/$CARGO_TARGET_DIR/release" ;;
esac
missing=()
for f in libmedregion.so libmedregion.a medregion; do
    [ -f "$out/$f" ] || missing+=("$out/$f")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: build outputs missing: ${missing[*]}" >&2
    echo "install.sh: run 'cargo build --release' (with the same CARGO_TARGET_DIR) or drop --no-build" >&2
    exit 1
fi

# The pointer size the library was built for (the CMake version file refuses other ones).
case "$(od -An -tx1 -j4 -N1 "$out/libmedregion.so" | tr -d ' ')" in
    01) sizeof_void_p=4 ;;
    *) sizeof_void_p=8 ;;
esac

subst() {
    sed -e "s|@MEDREGION_VERSION@|$version|g" \
        -e "s|@MEDREGION_VERSION_MAJOR@|$major|g" \
        -e "s|@MEDREGION_VERSION_MINOR@|$minor|g" \
        -e "s|@MEDREGION_SIZEOF_VOID_P@|$sizeof_void_p|g" \
        -e "s|@PREFIX@|$prefix|g" "$1" >"$2"
}

install -d "$prefix/lib" "$prefix/include" "$prefix/bin" "$prefix/lib/cmake/medregion" "$prefix/lib/pkgconfig"
install -m 755 "$out/libmedregion.so" "$prefix/lib/libmedregion.so"
install -m 644 "$out/libmedregion.a" "$prefix/lib/libmedregion.a"
install -m 755 "$out/medregion" "$prefix/bin/medregion"
install -m 644 "$root/include/medregion.h" "$prefix/include/medregion.h"
install -m 644 "$root/bindings/cpp/medregion.hpp" "$prefix/include/medregion.hpp"
subst "$root/cmake/medregionConfig.cmake.in" "$prefix/lib/cmake/medregion/medregionConfig.cmake"
subst "$root/cmake/medregionConfigVersion.cmake.in" "$prefix/lib/cmake/medregion/medregionConfigVersion.cmake"
subst "$root/cmake/medregion.pc.in" "$prefix/lib/pkgconfig/medregion.pc"
echo "installed medregion $version into $prefix"
