#!/usr/bin/env bash
# bench-gguf-types.sh - the cost of reading quantized weights: the forward pass and the
# spikes operator on a Q4_K_M GGUF against the same synthetic model in F16, measured
# alternately in the same run (the machine may be shared: compare the ratios), plus the
# dequantization speed of every type (bench-dequant).
#   bench/bench-gguf-types.sh [BUILD_DIR] [PRESET] [ROUNDS]     (default build, small, 3)
# PRESET: a `sinkscope synth` preset (small: d 768, f 2048, 12 layers, 134M parameters;
# its rows tile 256, so the Q4_K_M file is Q4_K + Q6_K, no fallbacks).
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
PRESET=${2:-small}
ROUNDS=${3:-3}
cmake --build "$BUILD" --target sinkscope bench-forward bench-spikes bench-dequant >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for t in f16 q4_k_m; do
  "$BUILD/sinkscope" synth --preset "$PRESET" --format gguf --dtype "$t" -o "$TMP/$t" --quiet 2>/dev/null
done
"$BUILD/sinkscope" inspect "$TMP/q4_k_m/model.gguf" | sed -n '/^type mix/,/^bpw/p'
for r in $(seq "$ROUNDS"); do
  for t in f16 q4_k_m; do
    fw=$("$BUILD/bench-forward" --model "$TMP/$t/model.gguf" --T 128 --reps 3 2>/dev/null | tail -1)
    sp=$("$BUILD/bench-spikes" "$TMP/$t/model.gguf" --layer 1 --eig 8 2>&1 |
         awk '/^  bf16->f32 conversion/{c=$(NF-1)} /^  screen/{s=$5} /^  eigenpairs/{e=$2} /^  total/{tt=$2} END{printf "%s %s %s %s", c, s, e, tt}')
    echo "round $r $t forward_s $(echo "$fw" | sed -E 's/.*"seconds": ([0-9.]+).*/\1/') spikes_conv_screen_eigs_total $sp"
  done
done | tee "$TMP/runs.txt"
/usr/bin/python3 - "$TMP/runs.txt" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
v = {}
for r in rows:
    t = r[2]
    v.setdefault(t, []).append([float(r[4])] + [float(x) for x in r[6:10]])
names = ["forward pass (T 128)", "spikes: weight conversion", "spikes: screen", "spikes: 8 eigenpairs", "spikes: total"]
print("%-28s %10s %10s %8s" % ("median seconds", "F16", "Q4_K_M", "ratio"))
for k, n in enumerate(names):
    a = st.median(x[k] for x in v["f16"]); b = st.median(x[k] for x in v["q4_k_m"])
    print("%-28s %10.3f %10.3f %8.2f" % (n, a, b, b / a if a else float("nan")))
PY
"$BUILD/bench-dequant" --reps 7
