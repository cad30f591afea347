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

# sample PID: peak RssAnon and RssFile (kB) of the process while it runs
sample() {
    local pid=$1 out=$2 anon=0 file=0 hwm=0 a f h
    while [ -r "/proc/$pid/status" ]; do
        a=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        f=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        h=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
        [ -n "$a" ] && [ "$a" -gt $anon ] && anon=$a
        [ -n "$f" ] && [ "$f" -gt $file ] && file=$f
        [ -n "$h" ] && [ "$h" -gt $hwm ] && hwm=$h
        sleep 0.1
    done
    echo "$anon $file $hwm" >"$out"
}

# run NAME ARGS...: one measured run
run() {
    local name=$1
    shift
    /usr/bin/time -v "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local tpid=$!
    local pid=
    for _ in $(seq 1 100); do
        pid=$(pgrep -P "$tpid" | head -1)
        [ -n "$pid" ] && break
        sleep 0.02
    done
    [ -n "$pid" ] && sample "$pid" "$TMP/$name.mem" &
    local spid=$!
    wait "$tpid"
    local rc=$?
    wait "$spid" 2>/dev/null
    anon=0 file=0 hwm=0
    [ -s "$TMP/$name.mem" ] && read -r anon file hwm <"$TMP/$name.mem"
    local maxrss wall est
    maxrss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/$name.err")
    wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$TMP/$name.err")
    est=$(grep -o 'workspaces about [0-9.]* [A-Za-z]*' "$TMP/$name.err" | head -1 | sed 's/workspaces about //')
    printf '%-22s rc %d  wall %s  maxrss %.2f GiB  peak RssAnon %.2f GiB  peak RssFile %.2f GiB%s\n' "$name" "$rc" \
        "$wall" "$(echo "${maxrss:-0} / 1048576" | bc -l)" "$(echo "$anon / 1048576" | bc -l)" \
        "$(echo "$file / 1048576" | bc -l)" "${est:+  (estimate $est)}"
    [ $rc = 0 ] || grep -m2 "sinkscope" "$TMP/$name.err" | sed 's/^/    /'
}

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
