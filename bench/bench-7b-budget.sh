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

sample() { # PID OUT: peak RssAnon and RssFile (kB) while PID runs
    local pid=$1 out=$2 anon=0 file=0 a f
    while [ -r "/proc/$pid/status" ]; do
        a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        f=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        [ -n "$a" ] && [ "$a" -gt $anon ] && anon=$a
        [ -n "$f" ] && [ "$f" -gt $file ] && file=$f
        sleep 0.5
    done
    echo "$anon $file" >"$out"
}
yard() { # the sgemm rate now, and the load average
    "$BUILD/bench-quadform" --d 64 --f 64 --eig 0 --naive 0 2>/dev/null | awk '/^sgemm/ {printf "sgemm %s GFLOP/s", $4}'
    echo "  load $(cut -d' ' -f1-3 /proc/loadavg)"
}
run() { # NAME ARGS...
    local name=$1
    shift
    echo "$name: before: $(yard)"
    /usr/bin/time -v "$BIN" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local tpid=$! pid=
    for _ in $(seq 1 100); do
        pid=$(pgrep -P "$tpid" | head -1)
        [ -n "$pid" ] && break
        sleep 0.02
    done
    [ -n "$pid" ] && sample "$pid" "$OUT/$name.mem" &
    local spid=$!
    wait "$tpid"
    local rc=$?
    wait "$spid" 2>/dev/null
    local anon=0 file=0
    [ -s "$OUT/$name.mem" ] && read -r anon file <"$OUT/$name.mem"
    printf '%s: rc %d  wall %s  user %s s  sys %s s  peak RssAnon %.2f GiB  peak RssFile %.2f GiB\n' "$name" "$rc" \
        "$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$OUT/$name.err")" \
        "$(awk -F': ' '/User time/ {print $2}' "$OUT/$name.err")" \
        "$(awk -F': ' '/System time/ {print $2}' "$OUT/$name.err")" \
        "$(echo "$anon / 1048576" | bc -l)" "$(echo "$file / 1048576" | bc -l)"
    echo "$name: after: $(yard)"
}

for part in $PARTS; do
    case $part in
    spikes)
        run "spikes${LAYERS:+-layers-$LAYERS}" spikes "$DIR" ${LAYERS:+--layers "$LAYERS"} --top-frob 64 --rank 4 \
            -o "$OUT/spikes.msgpack" --json ;;
    analyze) run analyze analyze "$DIR" -o "$OUT/analyze" ;;
    *) echo "bench-7b-budget: unknown part '$part' (spikes, analyze)" >&2; exit 2 ;;
    esac
done
