#!/bin/sh
# CTest: install the build into a temporary prefix and build + run a consumer against it.
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig:$(find "$tmp/prefix" -type d -name pkgconfig | tr '\n' ':')${PKG_CONFIG_PATH:-}" \
  cmake -S "$src" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_RPATH="$(dirname "$(find "$tmp/prefix" -name 'libdf11.so' | head -n1)")" >/dev/null
cmake --build "$tmp/b" >/dev/null
"$tmp/b/consumer_cmake"
if [ -z "${PKG_CONFIG_SYSROOT_DIR:-}" ]; then "$tmp/b/consumer_pc"; fi
