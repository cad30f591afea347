#!/usr/bin/env bash
# bench-7b-budget.sh - whole-model budget on a Llama-2-7B-shaped bf16 checkpoint:
#   sinkscope spikes MODEL --top-frob 64 --rank 4   (all 32 layers: the screen of every
#                                                     channel + top-4 eigenpairs of the
#                                                     64 best channels per layer)
#   sinkscope analyze MODEL                          (defaults)
# each with its wall time, CPU time and peak RssAnon (the run's own memory; the mapped
# weights are page cache, RssFile). The sgemm rate (4096^3) and the load average are
# printed before and after each run: the yardstick of the same run.
#
# usage: bash bench/bench-7b-budget.sh [BUILD_DIR] MODEL_DIR OUT_DIR [LAYERS] [PARTS]
#   MODEL_DIR  e.g. made by: sinkscope synth --preset llama2-7b --dtype bf16 -o MODEL_DIR
#              (13.5 GB; delete it afterwards)
#   LAYERS     spikes --layers (default: all); a few layers give the per-layer cost on a
#              machine too loaded for the whole run ("" for all)
#   PARTS      which runs, in that order (default "spikes analyze")
set -u
BUILD=${1:-build}
DIR=$2
OUT=$3
LAYERS=${4:-}
PARTS=${5:-spikes analyze}
BIN=$BUILD/sinkscope
mkdir -p "$OUT"

yard() { # the sgemm rate now, and the load average
    "$BUILD/bench-quadform" --d 64 --f 64 --eig 0 --naive 0 2>/dev/null | awk '/^sgemm/ {printf "sgemm %s GFLOP/s", $4}'
    echo "  load $(cut -d' ' -f1-3 /proc/loadavg)"
}
# memlib.sh's run (GNU time + the /proc sampler: wall, peak RssAnon and RssFile), with
# the CPU seconds and the yardstick before and after
TMP=$OUT
. "$(dirname "$0")/memlib.sh"
budget_run() { # NAME ARGS...
    local name=$1
    echo "$name: before: $(yard)"
    run "$@"
    echo "$name: user $(awk -F': ' '/User time/ {print $2}' "$OUT/$name.err") s  sys $(awk -F': ' '/System time/ {print $2}' "$OUT/$name.err") s"
    echo "$name: after: $(yard)"
}

for part in $PARTS; do
    case $part in
    spikes)
        budget_run "spikes${LAYERS:+-layers-$LAYERS}" spikes "$DIR" ${LAYERS:+--layers "$LAYERS"} --top-frob 64 --rank 4 \
            -o "$OUT/spikes.msgpack" --json ;;
    analyze) budget_run analyze analyze "$DIR" -o "$OUT/analyze" ;;
    *) echo "bench-7b-budget: unknown part '$part' (spikes, analyze)" >&2; exit 2 ;;
    esac
done
