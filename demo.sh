#!/usr/bin/env bash
# df11's main job on a fresh machine, nothing to download: build, synthesize a small
# Llama-shaped model, compress it (the default fixed code, which the fused matmul kernel
# multiplies from, and the smaller Huffman code), check it, generate from it compressed and from the original
# BF16 weights, and show that the tokens are identical and what memory was saved.
# Runs on the GPU when there is one, else on the CPU.
set -euo pipefail
cd "$(dirname "$0")"

# A bare Debian/Ubuntu machine: install what the build needs, as .ci/run does (as root, or
# through sudo without a password); otherwise say the one command that does. Nothing is
# installed when everything is already there.
pkgs=(cmake make gcc pkg-config liburing-dev libxxhash-dev libcjson-dev libpcre2-dev check
  libsubunit-dev)
have_deps() { # what the build looks for, wherever it came from (packages or a prefix)
  for c in cmake make gcc pkg-config; do command -v "$c" >/dev/null || return 1; done
  pkg-config --exists liburing libxxhash libcjson libpcre2-8 check
}
missing=()
if ! have_deps && command -v dpkg-query >/dev/null; then
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  install=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
  if [ "$(id -u)" = 0 ]; then
    echo "== 0. installing the build dependencies: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    echo "== 0. installing the build dependencies (sudo): ${missing[*]}"
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      sudo -n env DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null
  else
    echo "demo.sh: missing build dependencies; install them with:" >&2
    echo "  sudo ${install[*]}" >&2
    exit 1
  fi
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=build/tools
work=build/demo
mkdir -p "$work"

echo "== 1. synthesize a Llama-shaped BF16 model (4 layers, GQA)"
"$bin/df11-synth" -o "$work/tiny/" --shape tiny --layers 4 --seed 1
echo "== 2. compress it (the default code, fixed; and --codec huffman)"
"$bin/df11-compress" "$work/tiny" -o "$work/tiny.df11"
"$bin/df11-compress" "$work/tiny" -o "$work/tiny-huffman.df11" --codec huffman -q
echo "== 3. verify every group (checksums + full CPU decode)"
"$bin/df11-inspect" "$work/tiny.df11" --verify | tail -n 1
echo "== 4. generate 32 tokens, greedy, from the compressed models and from the BF16 original"
"$bin/df11-run" "$work/tiny.df11" --tokens 1 -n 32 --json -q > "$work/df11.json"
"$bin/df11-run" "$work/tiny-huffman.df11" --tokens 1 -n 32 --json -q > "$work/huffman.json"
"$bin/df11-run" --bf16 "$work/tiny" --tokens 1 -n 32 --json -q > "$work/bf16.json"
python3 - "$work/df11.json" "$work/bf16.json" "$work/huffman.json" <<'PY' 2>/dev/null || {
import json, sys
a, b, h = (json.load(open(p)) for p in sys.argv[1:4])
print("df11 tokens:", *a["generated_tokens"])
print("bf16 tokens:", *b["generated_tokens"])
# On the GPU the fixed code's fused kernel sums in another order than cuBLAS: its logits
# may differ from BF16's in the last bits (on the CPU they are identical).
print("fixed code (default): identical tokens:", a["generated_tokens"] == b["generated_tokens"],
      "| identical logits:", a["logits_fnv1a"] == b["logits_fnv1a"])
print("huffman code: identical tokens:", h["generated_tokens"] == b["generated_tokens"],
      "| identical logits:", h["logits_fnv1a"] == b["logits_fnv1a"])
m, n = a["memory"], b["memory"]
print(f"on {a['device']}: df11 weights {m['weights_compressed_bytes']/2**20:.2f} MiB compressed "
      f"+ {m['resident_bytes']/2**20:.2f} MiB resident + arena {m['arena_bytes']/2**20:.2f} MiB; "
      f"BF16 weights {m['weights_bf16_bytes']/2**20:.2f} MiB")
PY
  # no python3: compare the JSON lines' token lists with grep
  grep -o '"generated_tokens":\[[^]]*\]' "$work/df11.json"
  grep -o '"generated_tokens":\[[^]]*\]' "$work/bf16.json"
}
"$bin/df11-run" "$work/tiny.df11" --tokens 1 -n 32 | tail -n 3
