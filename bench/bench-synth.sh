#!/usr/bin/env bash
# bench-synth.sh - time and peak memory of writing a 7B checkpoint with `sinkscope synth`.
#
# usage: bash bench/bench-synth.sh [BINARY] [OUTDIR] [PRESET] [DTYPE]
#   BINARY  sinkscope executable (default build/sinkscope)
#   OUTDIR  scratch directory for the checkpoint, deleted afterwards
#           (default ${TMPDIR:-/tmp}/sks-bench-synth)
#   PRESET  default llama2-7b; DTYPE default bf16
# Needs /usr/bin/time (GNU time) and free disk space of about 14 GB (bf16) or 27 GB (f32).
set -euo pipefail
BIN=${1:-build/sinkscope}
OUT=${2:-${TMPDIR:-/tmp}/sks-bench-synth}
PRESET=${3:-llama2-7b}
DTYPE=${4:-bf16}
need_gb=14
[ "$DTYPE" = f32 ] && need_gb=27
parent=$(dirname "$OUT")
mkdir -p "$parent"
avail_kb=$(df -Pk "$parent" | awk 'NR==2 {print $4}')
if [ "$avail_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "bench-synth: only $((avail_kb / 1024 / 1024)) GB free under $parent, need ${need_gb} GB" >&2
    exit 77
fi
rm -rf "$OUT"
log=$(mktemp)
trap 'rm -rf "$OUT" "$log"' EXIT
/usr/bin/time -v "$BIN" synth --preset "$PRESET" --dtype "$DTYPE" -o "$OUT" --quiet 2>"$log"
bytes=$(du -sb "$OUT" | awk '{print $1}')
shards=$(ls "$OUT"/*.safetensors | wc -l)
wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
rss_kb=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
user=$(grep "User time" "$log" | awk '{print $NF}')
sys=$(grep "System time" "$log" | awk '{print $NF}')
echo "preset $PRESET dtype $DTYPE: $bytes bytes in $shards shards, wall $wall, user ${user}s, sys ${sys}s, peak RSS $((rss_kb / 1024)) MiB, cores $(nproc)"
"$BIN" inspect "$OUT" | grep -E "parameters|file size|shards" || true
