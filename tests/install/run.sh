#!/bin/sh
# CTest: install the build into a temporary prefix and build + run consumers against it
# (CMakeLists.txt here says which; in a CUDA build each reaches the CUDA backend, and the
# installed libdf11.so names no CUDA library): the shared and static CMake targets and
# pkg-config from a C-only project; the shared target again as a machine without the CUDA toolkit or
# pkg-config sees it; a static link through pkg-config alone (`pkg-config --static`); and
# examples/minimal/engine.c, run on a synthetic model (df11 and BF16), whose tokens must
# agree with each other and with df11-run's.
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(dirname "$(find "$tmp/prefix" -name 'libdf11.so' | head -n1)")
pcdir=$(find "$tmp/prefix" -type d -name pkgconfig | head -n1)
engine_src=$(cd "$src/../../examples/minimal" && pwd)/engine.c
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# A CUDA build installs its CUDA backend library beside libdf11.so, which names no CUDA
# library itself (libdf11 loads the plugin when a GPU is asked for); nothing links the
# plugin, so it has no development link.
cuda=
if [ -e "$libdir/libdf11-cuda.so.0" ]; then
  cuda=cuda
  if readelf -d "$libdir/libdf11.so" | grep NEEDED | grep -Eq 'cuda|cublas'; then
    echo "install: libdf11.so needs a CUDA library" >&2
    exit 1
  fi
  if [ -e "$libdir/libdf11-cuda.so" ]; then
    echo "install: libdf11-cuda.so (a development link) is installed" >&2
    exit 1
  fi
fi

cmake -S "$src" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_RPATH="$libdir" \
  -DDF11_STATIC=ON -DDF11_ENGINE_SOURCE="$engine_src" >/dev/null
cmake --build "$tmp/b" >/dev/null
"$tmp/b/consumer_cmake" ${cuda:+"$cuda"}
"$tmp/b/consumer_static" ${cuda:+"$cuda"}
if [ -z "${PKG_CONFIG_SYSROOT_DIR:-}" ]; then "$tmp/b/consumer_pc" ${cuda:+"$cuda"}; fi

# The shared library wants nothing of the consumer's machine: no CUDA toolkit, no
# pkg-config; the static one then is not found, and says so when required.
nodeps="-DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON"
# shellcheck disable=SC2086 # nodeps is two words
cmake -S "$src" -B "$tmp/shared" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_RPATH="$libdir" \
  -DDF11_SHARED_ONLY=ON $nodeps >/dev/null
cmake --build "$tmp/shared" >/dev/null
"$tmp/shared/consumer_cmake" ${cuda:+"$cuda"}
# shellcheck disable=SC2086
if cmake -S "$src" -B "$tmp/nostatic" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DDF11_STATIC=ON \
  $nodeps >"$tmp/nostatic.log" 2>&1; then
  echo "install: find_package(df11 COMPONENTS static) succeeded without its dependencies" >&2
  exit 1
fi
grep -q "df11_static needs" "$tmp/nostatic.log"

# pkg-config --static, from a prefix without the shared library, so -ldf11 is the archive.
if [ -z "${PKG_CONFIG_SYSROOT_DIR:-}" ]; then
  cp -a "$tmp/prefix" "$tmp/sprefix"
  rm -f "$tmp/sprefix/${libdir#"$tmp/prefix/"}"/libdf11.so*
  spc=$tmp/sprefix/${pcdir#"$tmp/prefix/"}
  flags=$(PKG_CONFIG_PATH="$spc" pkg-config --static --cflags --libs df11)
  # shellcheck disable=SC2086 # flags are words
  "${CC:-cc}" -std=c11 -o "$tmp/consumer_pc_static" "$src/consumer.c" $flags
  ldpath=$(printf '%s\n' $flags | sed -n 's/^-L//p' | tr '\n' ':')
  LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:-}" "$tmp/consumer_pc_static" ${cuda:+"$cuda"}
  if readelf -d "$tmp/consumer_pc_static" | grep -q 'libdf11\.so'; then
    echo "install: the pkg-config static consumer links libdf11.so" >&2
    exit 1
  fi
fi

# The minimal engine on a synthetic model: df11 and BF16 give the same tokens (the matmul
# op is bit-identical across them on one backend), and so does df11-run.
tools=$build/tools
if [ -x "$tools/df11-synth" ] && [ -x "$tools/df11-compress" ]; then
  "$tools/df11-synth" -o "$tmp/m/" --shape tiny --layers 2 --vocab 128 --seed 2 -t 1 >/dev/null
  "$tools/df11-compress" -q -j 1 "$tmp/m" -o "$tmp/m.df11"
  a=$("$tmp/b/engine" "$tmp/m.df11" 12 1 5 9)
  b=$("$tmp/b/engine" "$tmp/m" -bf16 12 1 5 9)
  echo "minimal engine: $a"
  [ "$a" = "$b" ] || { echo "install: engine df11 '$a' != BF16 '$b'" >&2; exit 1; }
  # What it is given is checked: bad arguments are usage errors (2) with nothing printed; a
  # config.json whose hidden_size disagrees with the weights, and a generation past its
  # context, fail (1) with a message.
  for args in "x 1" "12 abc" "12 -1" "12 128" "12 4294967296" "-3 1"; do
    # shellcheck disable=SC2086 # args are words
    rc=0; out=$("$tmp/b/engine" "$tmp/m.df11" $args 2>"$tmp/err") || rc=$?
    [ "$rc" = 2 ] && [ -z "$out" ] && [ -s "$tmp/err" ] ||
      { echo "install: engine $args: status $rc, '$out'" >&2; exit 1; }
  done
  cp -a "$tmp/m" "$tmp/m2"
  sed 's/"hidden_size":[[:space:]]*128/"hidden_size": 256/' "$tmp/m/config.json" >"$tmp/m2/config.json"
  rc=0; "$tmp/b/engine" "$tmp/m2" -bf16 4 1 >/dev/null 2>"$tmp/err" || rc=$?
  [ "$rc" = 1 ] && grep -q "config.json" "$tmp/err" ||
    { echo "install: engine, hidden_size 256: status $rc, $(cat "$tmp/err")" >&2; exit 1; }
  rc=0; "$tmp/b/engine" "$tmp/m.df11" 300 1 >/dev/null 2>"$tmp/err" || rc=$?
  [ "$rc" = 1 ] && grep -q "context (256 tokens) is full" "$tmp/err" ||
    { echo "install: engine past its context: status $rc, $(cat "$tmp/err")" >&2; exit 1; }
  if [ -x "$tools/df11-run" ]; then
    r=$("$tools/df11-run" "$tmp/m.df11" --device cpu --tokens 1,5,9 -n 12 --json -q |
      sed -n 's/.*"generated_tokens":\[\([0-9,]*\)\].*/\1/p' | tr ',' ' ')
    [ "$a" = "$r" ] || { echo "install: engine '$a' != df11-run '$r'" >&2; exit 1; }
  fi
else
  echo "install: no df11-synth/df11-compress in $tools: the minimal engine built, not run"
fi
echo "install: every consumer works"
