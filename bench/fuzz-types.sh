#!/usr/bin/env bash
# fuzz-types.sh - run fuzz-gguf-types once per tensor type, SECONDS each (default 600),
# JOBS at a time (default 2), at the lowest priority.
#   bench/fuzz-types.sh [SECONDS] [JOBS] [TYPE...]
# Default types: every quantized type except Q8_0 and Q4_0 (fuzzed with the loaders).
# SKS_FUZZ_BUILD (default build-fuzz/) holds the clang build; SKS_FUZZ_OUT (default
# BUILD/fuzz-types/) the per-type corpus, crash artifacts and logs, and summary.txt with
# one line per type: executions, rate, coverage, outcome and the load average at the end.
# Replay a crash with SKS_FUZZ_TYPE=T BUILD/fuzz-gguf-types FILE (docs/fuzzing.md).
set -u
SECS=${1:-600}
JOBS=${2:-2}
shift $(($# > 2 ? 2 : $#))
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SKS_FUZZ_BUILD:-$SRC/build-fuzz}
OUT=${SKS_FUZZ_OUT:-$BUILD/fuzz-types}
TYPES=${*:-Q4_1 Q5_0 Q5_1 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ4_NL IQ4_XS IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4}
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DSKS_FUZZ=ON -DSKS_MPI=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null || exit 1
cmake --build "$BUILD" -j2 --target fuzz-gguf-types >"$BUILD/fuzz-types-build.log" 2>&1 ||
  { tail -20 "$BUILD/fuzz-types-build.log"; exit 1; }
mkdir -p "$OUT"

run_one() { # TYPE
  local t=$1 corpus=$OUT/corpus-$1 art=$OUT/artifacts-$1/ log=$OUT/$1.log
  mkdir -p "$corpus" "$art"
  # seeds: small well-formed files of the type (the header bytes of fuzz-gguf-types.c)
  python3 - "$corpus" <<'PYEOF'
import os, random, struct, sys
d = sys.argv[1]
rnd = random.Random(7)
def seed(name, h, payload):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        open(p, "wb").write(bytes([0]) + bytes(h) + payload)
blob = bytes(rnd.randrange(256) for _ in range(4096))
# 2 rows of one block each, alignment 32, all rows converted
seed("seed-2d", [1 | 4, 5, 1, 0, 2, 0, 1, 1, 0, 0, 0, 0x80, 0, 30, 0], blob[:600])
# one row of 4 blocks, default alignment, quantizer on 1 KiB
seed("seed-1d-quant", [0 | 32, 0, 4, 0, 1, 0, 1, 1, 0, 0, 0, 1, 3, 33, 0], blob[:2048])
# 3-D with ne2 = 1, small alignment, offset 8, rows 1..2
seed("seed-3d-al8", [2 | 4, 3, 2, 0, 4, 0, 1, 1, 1, 0x80, 1, 2, 0, 20, 0], blob)
PYEOF
  SKS_FUZZ_TYPE=$t nice -n 19 "$BUILD/fuzz-gguf-types" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 \
    -timeout=20 -artifact_prefix="$art" -print_final_stats=1 "$corpus" >"$log" 2>&1
  local rc=$?
  local execs speed cov per load
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  speed=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  per=$(grep -m1 "^fuzz-gguf-types: $t " "$log" | sed "s/^fuzz-gguf-types: $t //")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local res="no crash"
  [ $rc -eq 0 ] || res="FAILED (rc $rc, see $log and $art)"
  echo "$t: ${SECS}s, executions ${execs:-?} (${speed:-?}/s), coverage ${cov:-?}: $res; $per; load $load; ended $(date -u +%H:%M)" >>"$OUT/summary.txt"
}

# JOBS at a time: start the next type as soon as one ends
for t in $TYPES; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  run_one "$t" &
done
wait
cat "$OUT/summary.txt"
