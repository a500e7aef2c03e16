#!/bin/sh
# Makes the fuzz seed corpus: OUT/<target>/ for each fuzz target, from fuzz_seedgen (inputs
# no tool makes) and from the df11 tools themselves (df11-synth models, df11-compress
# containers), plus the real stories260K model when ../shared/models/stories260K exists
# beside the source tree (skipped with a message otherwise). Everything stays small (the
# largest seed is about 0.5 MB) so that fuzzers keep a high rate of executions.
#
# Usage: make_seeds.sh TOOLS_DIR SEEDGEN OUT SOURCE_DIR
#   TOOLS_DIR  the build's tools/ (df11-synth, df11-compress); skipped if it lacks them
#   SEEDGEN    the fuzz_seedgen program
set -eu
tools=$1 seedgen=$2 out=$3 src=$4

rm -rf "$out"
mkdir -p "$out"
"$seedgen" "$out"
w=$out/work
mkdir -p "$w" "$out/safetensors" "$out/config" "$out/container" "$out/decode"
# dfloat11: the committed corpus (modules the `dfloat11` package made) is its only seed.
mkdir -p "$out/dfloat11"

# A container seed is one mode byte (1: recompute the checksums, 0: open as it is) and
# the image (fuzz_container.c).
# fuzz_decode gets the small images only: it decodes every weight, and a corpus of
# stories260K variants (260K weights each) runs it at a few dozen inputs a second.
container_seed() { # FILE.df11 NAME [decode]
  { printf '\001'; cat "$1"; } >"$out/container/$2"
  if [ "${3:-}" = decode ]; then cp "$1" "$out/decode/$2"; fi
}

if [ -x "$tools/df11-synth" ] && [ -x "$tools/df11-compress" ]; then
  # One block and 16 tokens keep the models small: the stories shape is 94 KB of
  # safetensors and 73 KB of .df11; of the tiny shape (372 KB) only config.json is kept.
  "$tools/df11-synth" -o "$w/tiny/" --shape tiny --layers 1 --vocab 16 -t 1 >/dev/null
  "$tools/df11-synth" -o "$w/stories/" --shape stories --layers 1 --vocab 16 -t 1 >/dev/null
  "$tools/df11-compress" -q -j 1 "$w/stories" -o "$w/stories.df11"
  "$tools/df11-compress" -q -j 1 "$w/small.safetensors" -o "$w/small.df11" --lane-symbols 8 --max-code-len 6
  "$tools/df11-compress" -q -j 1 "$w/small.safetensors" -o "$w/small-l15.df11" --lane-symbols 16 --max-code-len 15
  cp "$w/stories/model.safetensors" "$out/safetensors/synth-stories.safetensors"
  cp "$w/tiny/config.json" "$out/config/synth-tiny.json"
  cp "$w/stories/config.json" "$out/config/synth-stories.json"
  container_seed "$w/stories.df11" synth-stories.df11 decode
  container_seed "$w/small.df11" small.df11 decode
  container_seed "$w/small-l15.df11" small-l15.df11 decode
  # the fixed exponent code (format 2.1): groups mixing fixed, Huffman and raw tensors
  "$tools/df11-compress" -q -j 1 "$w/stories" -o "$w/stories-fixed.df11" --codec fixed
  "$tools/df11-compress" -q -j 1 "$w/small.safetensors" -o "$w/small-fixed.df11" --codec fixed --lane-symbols 8
  container_seed "$w/stories-fixed.df11" synth-stories-fixed.df11 decode
  container_seed "$w/small-fixed.df11" small-fixed.df11 decode
  # codec 3 (format 2.2): the 8-exponent window and its per-tile records
  "$tools/df11-compress" -q -j 1 "$w/stories" -o "$w/stories-fixed8.df11" --codec fixed8
  "$tools/df11-compress" -q -j 1 "$w/small.safetensors" -o "$w/small-fixed8.df11" --codec fixed8 --lane-symbols 8
  container_seed "$w/stories-fixed8.df11" synth-stories-fixed8.df11 decode
  container_seed "$w/small-fixed8.df11" small-fixed8.df11 decode
  { printf '\000'; cat "$w/small.df11"; } >"$out/container/small-raw.df11"
else
  echo "make_seeds: no df11-synth/df11-compress in $tools: tool-made seeds skipped" >&2
fi

model=$src/../shared/models/stories260K
if [ -d "$model" ] && [ -x "$tools/df11-compress" ]; then
  cp "$model/model.safetensors" "$out/safetensors/stories260K.safetensors"
  cp "$model/config.json" "$out/config/stories260K.json"
  "$tools/df11-compress" -q -j 1 "$model" -o "$w/stories260K.df11"
  container_seed "$w/stories260K.df11" stories260K.df11
  "$tools/df11-compress" -q -j 1 "$model" -o "$w/stories260K-fixed.df11" --codec fixed
  container_seed "$w/stories260K-fixed.df11" stories260K-fixed.df11
  "$tools/df11-compress" -q -j 1 "$model" -o "$w/stories260K-fixed8.df11" --codec fixed8
  container_seed "$w/stories260K-fixed8.df11" stories260K-fixed8.df11
else
  echo "make_seeds: skipping stories260K: not found at $model" >&2
fi
# df11_hparams_parse reads the same config.json files as dfl_config_parse.
mkdir -p "$out/hparams"
cp "$out/config/"* "$out/hparams/" 2>/dev/null || true
rm -rf "$w"
