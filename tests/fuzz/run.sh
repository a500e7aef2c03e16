#!/usr/bin/env bash
# Runs the libFuzzer targets of a DF11_FUZZ build for a bounded time each, FUZZ_JOBS at a
# time (default: the number of cores), each over a fresh copy of the seed corpus: the seeds
# make_seeds.sh makes plus the committed corpus/<name>/ (its crash-* files excepted: those
# are regressions, which the fuzz_<name> CTest replays). Prints exec/s and coverage per
# target; on a crash, leak or timeout prints the log tail and where the reproducer is, and
# exits 1.
#
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS] [NAME...]
#   BUILD_DIR  a build configured with clang and DF11_FUZZ (README.md here)
#   SECONDS    -max_total_time of each target (default 60)
#   NAME       targets to run, e.g. decode (default: every fuzz_* binary built)
# Work files go to BUILD_DIR/tests/fuzz/run/<name>/ (corpus/, artifacts/, log).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [SECONDS] [NAME...]}" && pwd)
secs=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
fuzz=$build/tests/fuzz
jobs=${FUZZ_JOBS:-$(nproc)}

names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for bin in "$fuzz"/fuzz_*; do
    n=${bin##*/fuzz_}
    case $n in *_replay|seedgen) continue ;; esac
    [ -x "$bin" ] && [ -f "$bin" ] && names+=("$n")
  done
fi
if [ ${#names[@]} -eq 0 ]; then
  echo "run.sh: no libFuzzer binaries in $fuzz (configure with CC=clang and DF11_FUZZ=ON)" >&2
  exit 1
fi

sh "$here/make_seeds.sh" "$build/tools" "$fuzz/fuzz_seedgen" "$fuzz/seeds" "$here/../.."

run_one() {
  local n=$1 w=$fuzz/run/$1
  rm -rf "$w"
  mkdir -p "$w/corpus" "$w/artifacts"
  for d in "$fuzz/seeds/$n" "$here/corpus/$n"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      [ -f "$f" ] || continue
      case ${f##*/} in crash-*|leak-*|timeout-*|oom-*) continue ;; esac
      cp "$f" "$w/corpus/$(basename "$d")-${f##*/}"
    done
  done
  local rc=0
  timeout $((secs * 2 + 120)) "$fuzz/fuzz_$n" -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$w/artifacts/" "$w/corpus" \
    >"$w/log" 2>&1 || rc=$?
  echo "$rc" >"$w/rc"
}

running=0
for n in "${names[@]}"; do
  if [ ! -x "$fuzz/fuzz_$n" ]; then echo "run.sh: no $fuzz/fuzz_$n" >&2; exit 1; fi
  run_one "$n" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

failed=0
printf '%-12s %10s %10s %8s %8s %s\n' target runs exec/s cov ft result
for n in "${names[@]}"; do
  w=$fuzz/run/$n
  rc=$(cat "$w/rc" 2>/dev/null || echo 1)
  last=$(grep -E '^#[0-9]+' "$w/log" | tail -n 1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$w/log" | tail -n 1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$w/log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  artifacts=$(find "$w/artifacts" -type f 2>/dev/null | sort)
  result=ok
  if [ "$rc" != 0 ] || [ -n "$artifacts" ]; then result="FAILED (exit $rc)"; failed=1; fi
  printf '%-12s %10s %10s %8s %8s %s\n' "$n" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
for n in "${names[@]}"; do
  w=$fuzz/run/$n
  rc=$(cat "$w/rc" 2>/dev/null || echo 1)
  artifacts=$(find "$w/artifacts" -type f 2>/dev/null | sort)
  [ "$rc" = 0 ] && [ -z "$artifacts" ] && continue
  echo
  echo "==== fuzz_$n failed (exit $rc); log: $w/log"
  grep -v -E '^#[0-9]+|^INFO:|^\s*"|^###### ' "$w/log" | tail -n 60
  for a in $artifacts; do
    echo "reproducer: $a"
    echo "  replay:  $fuzz/fuzz_$n $a"
    echo "  keep it: cp $a $here/corpus/$n/crash-<what-it-breaks>   (the fuzz_$n CTest then replays it)"
  done
done
exit $failed
