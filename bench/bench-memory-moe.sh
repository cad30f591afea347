#!/usr/bin/env bash
# bench-memory-moe.sh - memory of `trace` and `spikes` on a Mixtral-8x7B-shaped checkpoint.
#
# usage: bash bench/bench-memory-moe.sh [BINARY] [MODEL_DIR] [LAYERS] [EXPERTS]
#   BINARY     sinkscope executable (default build/sinkscope)
#   MODEL_DIR  where the checkpoint is synthesized (and deleted at the end) when it does
#              not exist: `sinkscope synth --config` with the mixtral-8x7b preset (d 4096,
#              8 experts of width 14336, top-2, 32 heads / 8 KV heads, V 32000) cut to LAYERS
#              layers (default 3: 3 x 2.9 GB of bf16 experts; the whole 32-layer model is
#              94 GB), the planted step-up in expert 1 of layer 0, step-down in the last
#              layer (none with 2 layers). Default ${TMPDIR:-/tmp}/sks-bench-memory-moe.
#   EXPERTS    experts per layer (default 8). The peak memory of spikes does not depend on
#              it (experts are converted one at a time; the active form holds the top-2),
#              only its time: fewer experts measure the same peak sooner.
# Runs, each with the sampler of memlib.sh (peak RssAnon = what the run allocated;
# RssFile = pages of the mapped checkpoint it touched, page cache):
#   trace on 16 tokens (every layer, the router and the routed experts per token);
#   spikes on the step-up layer with the two planted channels: every expert's screen
#   and eigenpairs (8 experts converted one at a time) and the active form of the two
#   routed experts (one f32 copy of 2 x 3 x 14336 x 4096).
# Prints the machine's sgemm rate (bench-quadform's yardstick) first.
set -u
BIN=${1:-build/sinkscope}
DIR=${2:-${TMPDIR:-/tmp}/sks-bench-memory-moe}
LAYERS=${3:-3}
EXPERTS=${4:-8}
made=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-bench-mem.XXXXXX")
cleanup() {
    rm -rf "$TMP"
    [ $made = 1 ] && rm -rf "$DIR"
}
trap cleanup EXIT
if [ ! -f "$DIR/config.json" ]; then
    need_kb=$((LAYERS * EXPERTS * 360 * 1024 + 1024 * 1024))
    avail_kb=$(df -Pk "$(dirname "$DIR")" | awk 'NR==2 {print $4}')
    if [ "$avail_kb" -lt "$need_kb" ]; then
        echo "bench-memory-moe: need $((need_kb / 1024 / 1024)) GB free under $(dirname "$DIR")" >&2
        exit 77
    fi
    down=$((LAYERS >= 3 ? LAYERS - 1 : LAYERS))
    printf '{"preset": "mixtral-8x7b", "model_type": "mixtral", "num_local_experts": %d, "num_experts_per_tok": 2, "num_hidden_layers": %d, "planted": {"step_up_layer": 0, "step_down_layer": %d}}\n' \
        "$EXPERTS" "$LAYERS" "$down" >"$TMP/config.json"
    echo "synthesizing a $LAYERS-layer Mixtral-8x7B-shaped bf16 checkpoint ($EXPERTS experts) into $DIR ..."
    s0=$(date +%s)
    "$BIN" synth --config "$TMP/config.json" --dtype bf16 -o "$DIR" --quiet >/dev/null || exit 1
    echo "synth: $(($(date +%s) - s0)) s"
    made=1
fi
. "$(dirname "$0")/memlib.sh"

QF=$(dirname "$BIN")/bench-quadform
[ -x "$QF" ] && "$QF" --d 256 --f 256 --eig 1 --naive 0 2>/dev/null | grep -i -m1 "sgemm" | sed 's/^/machine /'
CH=$(/usr/bin/python3 -c "import json,sys; print(','.join(str(c) for c in json.load(open(sys.argv[1]))['spike']['channels']))" \
    "$DIR/planted.json")
TOKS=1,450,4996,17354,1701,432,17204,975,278,17366,11203,29889,512,278,7250,278
free -g | awk 'NR==2 {print "machine: " $2 " GiB RAM, " $7 " GiB available"}'
du -sh "$DIR" | awk '{print "model: " $1}'
run trace-16tok trace "$DIR" --tokens "$TOKS" -o "$TMP/trace.msgpack" --quiet
run spikes-moe-layer0-2ch spikes "$DIR" --tokens "$TOKS" --layers 0 --channels "$CH" --top-frob 0 \
    --no-delimiter -o "$TMP/spikes.msgpack" -q
/usr/bin/python3 - "$TMP/spikes.msgpack" "$DIR/planted.json" <<'EOF'
import json, msgpack, sys
import numpy as np
sp = msgpack.unpackb(open(sys.argv[1], "rb").read(), raw=False, strict_map_key=False)
p = json.load(open(sys.argv[2]))
l = sp["layers"][0]
m = l["moe"]
w = np.frombuffer(m["weights"]["data"], "<f8")  # a typed array (docs/schema.md)
print("spikes: token %d routed to experts %s with weights %s (planted expert %d)" % (
    m["token"], m["experts"], ["%.4f" % x for x in w], p["moe"]["step_up_expert"]))
for c in l["channels"]:
    print("  active form S_%d: lambda* %.4g (planted %s), x^T S x %.1f vs true %.1f" % (
        c["channel"], c["lambda_star"], p["spike"]["lambda_star"], c["quad_pred"], c["true_out_fwd"]))
EOF
