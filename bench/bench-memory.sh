#!/usr/bin/env bash
# bench-memory.sh - peak memory of `spikes` and `trace` on a 7B checkpoint.
#
# usage: bash bench/bench-memory.sh [BINARY] [MODEL_DIR]
#   BINARY     sinkscope executable (default build/sinkscope)
#   MODEL_DIR  a llama2-7b checkpoint; when it does not exist it is synthesized there
#              (sinkscope synth --preset llama2-7b --dtype bf16, 13.5 GB) and deleted at
#              the end. Default ${TMPDIR:-/tmp}/sks-bench-memory-7b.
#
# Peak RSS counts the pages of the mapped weights that the run touched (RssFile): they
# are page cache, shared and reclaimable, not memory the run allocated. The run's own
# memory is RssAnon. A sampler reads /proc/PID/status every 0.1 s (VmHWM, RssAnon,
# RssFile) next to GNU time's "Maximum resident set size" (= VmHWM, anon + file).
# Prints one line per run: wall time, VmHWM, peak RssAnon, peak RssFile, and the
# --max-memory estimate where one was given.
set -u
BIN=${1:-build/sinkscope}
DIR=${2:-${TMPDIR:-/tmp}/sks-bench-memory-7b}
made=0
if [ ! -f "$DIR/config.json" ]; then
    avail_kb=$(df -Pk "$(dirname "$DIR")" | awk 'NR==2 {print $4}')
    if [ "$avail_kb" -lt $((15 * 1024 * 1024)) ]; then
        echo "bench-memory: need 15 GB free under $(dirname "$DIR") for the 7B checkpoint" >&2
        exit 77
    fi
    echo "synthesizing llama2-7b bf16 into $DIR ..."
    "$BIN" synth --preset llama2-7b --dtype bf16 -o "$DIR" --quiet >/dev/null || exit 1
    made=1
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-bench-mem.XXXXXX")
cleanup() {
    rm -rf "$TMP"
    [ $made = 1 ] && rm -rf "$DIR"
}
trap cleanup EXIT

. "$(dirname "$0")/memlib.sh"

TOKS=1,450,4996,17354,1701,432,17204,975,278,17366,11203,29889,512,278,7250,278
free -g | awk 'NR==2 {print "machine: " $2 " GiB RAM, " $7 " GiB available"}'
du -sh "$DIR" | awk '{print "model: " $1}'
run trace-16tok trace "$DIR" --tokens "$TOKS" -o "$TMP/trace.msgpack" --quiet
run spikes-1layer-2ch spikes "$DIR" --tokens "$TOKS" --layers 1 --channels 26,29 --top-frob 0 \
    --no-delimiter -o "$TMP/spikes.msgpack" -q
run spikes-max-memory-2G spikes "$DIR" --tokens "$TOKS" --layers 1 --channels 26,29 --top-frob 0 \
    --no-delimiter --max-memory 2G -o "$TMP/spikes2.msgpack"
run spikes-max-memory-1G spikes "$DIR" --tokens "$TOKS" --layers 1 --channels 26,29 --top-frob 0 \
    --no-delimiter --max-memory 1G -o "$TMP/spikes3.msgpack" -q
