#!/usr/bin/env bash
# cli-moe.sh BINARY SOURCE_DIR FIXTURES_DIR - mixture-of-experts models end to end:
#   1. `sinkscope demo --preset mixtral-tiny`: the planted MoE mechanism (the spike token
#      routed to the planted expert, whose S_c carries the planted lambda*, s*) is recovered;
#      trace records the routing of the spike token, spikes the per-expert forms;
#   2. `sinkscope analyze` on each MoE family of test/data/families (HF and GGUF): the four
#      analyses run, the trace holds the routing, the spikes layers of MoE layers hold the
#      active form with every expert's screen;
#   3. `sinkscope quant-risk` on mixtral-tiny: per-expert W_down statistics in the msgpack;
#   4. `sinkscope spikes --resume` on a mixture of experts, and its manifest's MoE fields.
set -u
BIN=$1
SRC=$2
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-moe.XXXXXX")
PID=
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
. "$SRC/test/interrupt.sh"

"$BIN" demo -o "$TMP/demo" --preset mixtral-tiny --no-plots --quiet >"$TMP/demo.log" 2>&1 ||
    fail "demo mixtral-tiny: $(tail -3 "$TMP/demo.log")"
grep -q "verdict: every planted spike and sink recovered" "$TMP/demo.log" || fail "demo verdict: $(tail -8 "$TMP/demo.log")"
grep -q "experts .*routed to expert 1 (planted 1)" "$TMP/demo.log" || fail "demo: the experts line is missing"
"$PY" - "$TMP/demo" <<'EOF' || fail "demo outputs"
import json, msgpack, sys
d = sys.argv[1]
v = json.load(open(d + "/verify.json"))
assert v["moe"]["pass"] and v["moe"]["routed_to_planted_expert"], v["moe"]
p = json.load(open(d + "/model/planted.json"))
ls, e = p["spike"]["step_up_layer"], p["moe"]["step_up_expert"]
tr = msgpack.unpackb(open(d + "/trace.msgpack", "rb").read(), raw=False, strict_map_key=False)
routes = {r["token"]: r for r in tr["moe"]["spike_token_routes"]}
assert 0 in routes, routes.keys()
lay = {x["layer"]: x for x in routes[0]["layers"]}
assert lay[ls]["experts"][0] == e and lay[ls]["weights"][0] > 0.99, lay[ls]
sp = msgpack.unpackb(open(d + "/spikes.msgpack", "rb").read(), raw=False, strict_map_key=False)
L = [l for l in sp["layers"] if l["layer"] == ls]
assert L and "moe" in L[0], "the step-up layer has no moe record"
m = L[0]["moe"]
assert m["experts"][0] == e and len(m["per_expert"]) == p["moe"]["n_experts"]
ch = p["spike"]["channels"][0]
pe = [c for c in m["per_expert"][e]["channels"] if c["channel"] == ch][0]
lam = p["spike"]["lambda_star"][0]
assert abs(pe["lambda_star"] - lam) < 0.05 * abs(lam), (pe["lambda_star"], lam)
act = [c for c in L[0]["channels"] if c["channel"] == ch][0]
assert abs(act["quad_pred"] - act["true_out_fwd"]) < 0.05 * abs(act["true_out_fwd"]), act
EOF
echo "ok: demo --preset mixtral-tiny recovers the planted expert"

# the same planted model as GGUF (llama with stacked 3-D ffn_*_exps, Q8_0): analyze runs,
# the spike token goes to the planted expert
"$BIN" synth --preset mixtral-tiny --format gguf --dtype q8_0 -o "$TMP/gguf" --quiet >"$TMP/synth.log" 2>&1 ||
    fail "synth gguf: $(tail -3 "$TMP/synth.log")"
"$BIN" analyze "$TMP/gguf/model.gguf" -o "$TMP/gguf-out" --no-plots >"$TMP/gguf.log" 2>&1 ||
    fail "analyze mixtral-tiny gguf: $(tail -3 "$TMP/gguf.log")"
"$PY" - "$TMP/gguf-out" "$TMP/gguf/planted.json" <<'EOF' || fail "outputs of the GGUF mixtral-tiny"
import json, msgpack, sys
d, p = sys.argv[1], json.load(open(sys.argv[2]))
s = json.load(open(d + "/summary.json"))
assert s["model"]["family"] == "mixtral", s["model"]["family"]
for k in ("trace", "spikes", "vocab", "sinks"):
    assert k in s, k
tr = msgpack.unpackb(open(d + "/trace.msgpack", "rb").read(), raw=False, strict_map_key=False)
r0 = [r for r in tr["moe"]["spike_token_routes"] if r["token"] == 0][0]
ls = p["spike"]["step_up_layer"]
lay = [l for l in r0["layers"] if l["layer"] == ls][0]
assert lay["experts"][0] == p["moe"]["step_up_expert"], lay
EOF
echo "ok: analyze on the GGUF mixtral-tiny (Q8_0)"

# quant-risk on the planted mixtral-tiny (vocabulary 512 for the fixtures' tok512.bin): the
# W_down input of every expert, the planted expert the step-up layer's worst
FIX=${3:-}
if [ -n "$FIX" ] && [ -f "$FIX/stories260K/tok512.bin" ]; then
    echo '{"preset": "mixtral-tiny", "vocab_size": 512}' >"$TMP/qr.json"
    "$BIN" synth --config "$TMP/qr.json" -o "$TMP/qr" --quiet >"$TMP/qr.log" 2>&1 || fail "synth: $(tail -3 "$TMP/qr.log")"
    for i in $(seq 40); do printf 'the cat sat on the mat and the dog ran far away home. '; done >"$TMP/qr.txt"
    "$BIN" quant-risk "$TMP/qr" --text "$TMP/qr.txt" --tokenizer "$FIX/stories260K/tok512.bin" --no-e2e \
        -o "$TMP/qr.msgpack" --json -q >"$TMP/qr.out" 2>"$TMP/qr.err" || fail "quant-risk: $(tail -3 "$TMP/qr.err")"
    "$PY" - "$TMP/qr.msgpack" "$TMP/qr/planted.json" "$TMP/qr.out" <<'EOF' || fail "quant-risk experts"
import json, msgpack, sys
import numpy as np
r = msgpack.unpackb(open(sys.argv[1], "rb").read(), raw=False, strict_map_key=False)
p, js = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
def arr(a):
    dt = {"f64": "<f8", "i32": "<i4"}[a["dtype"]]
    return np.frombuffer(a["data"], dtype=dt).reshape(a["shape"])
L, E = r["model"]["n_layers"], p["moe"]["n_experts"]
x = r["experts"]
assert x["n_experts"] == E and x["has_shared"] is False, (x["n_experts"], x["has_shared"])
tok, mx, med = arr(x["tokens"]), arr(x["max_abs"]), arr(x["median_abs"])
err, top, worst = arr(x["rel_err"]), arr(x["top_channels"]), arr(x["worst"])
K = r["params"]["keep_top"]
assert tok.shape == (L, E) and mx.shape == (L, E) and med.shape == (L, E), tok.shape
assert err.shape == (L, E, 5, 3) and top.shape == (L, E, K) and worst.shape == (L,), (err.shape, top.shape)
T = r["params"]["stats_tokens"]
assert (tok.sum(axis=1) == 2 * T).all(), tok   # top-2: every token counted twice per layer
ls, up = p["spike"]["step_up_layer"], p["moe"]["step_up_expert"]
assert worst[ls] == up, (worst, up)
rng = np.where(tok > 0, mx / np.where(med > 0, med, 1), 0)
assert rng[ls, up] > 100 * np.delete(rng[ls], up).max(), rng[ls]
# the layer's down_in row is the worst expert's, its error the largest of the experts'
site = r["sites"].index("down_in")
lmx, lerr = arr(r["max_abs"]), arr(r["rel_err"])
for l in range(L):
    w = worst[l]
    assert lmx[l, site] == mx[l, w], (l, lmx[l, site], mx[l, w])
    assert (lerr[l, site] == err[l][tok[l] > 0].max(axis=0)).all(), l
lay = js["layers"][ls]["down_in"]
assert lay["worst_expert"] == up and len(lay["experts"]) == E and lay["experts"][up]["tokens"] == tok[ls, up]
EOF
    echo "ok: quant-risk on mixtral-tiny: every expert's W_down input, the planted expert the worst"
else
    echo "skipped: quant-risk on mixtral-tiny (no fixtures for tok512.bin)"
fi

# --resume on a mixture of experts: a run killed after its first layer part, resumed,
# equals the uninterrupted run (each MoE layer's part holds its routing and every
# expert's forms); the manifest holds the MoE fields, so a config with another number of
# experts per token (same weights, same parameter count) is refused, naming the field.
echo '{"preset": "mixtral-tiny", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 6,
       "num_attention_heads": 6, "num_key_value_heads": 2}' >"$TMP/res.json"
"$BIN" synth --config "$TMP/res.json" -o "$TMP/res" --quiet >/dev/null 2>&1 || fail "synth for resume"
export OPENBLAS_NUM_THREADS=1 # the bitwise comparison needs the same summation order in every run
RARGS=(spikes "$TMP/res" --layers 0-5 --top-frob 4 --rank 3)
CMP="$PY $SRC/test/msgpack-compare.py --ignore seconds_screen --ignore seconds_eigs"
"$BIN" "${RARGS[@]}" -o "$TMP/res-ref.msgpack" -q 2>"$TMP/res-ref.log" || fail "resume reference: $(tail -3 "$TMP/res-ref.log")"
OUT=$TMP/res-run.msgpack
on_finished() { :; } # a run that won the race: try again
sks_interrupt "$OUT" "layer-*.msgpack" 5 "$BIN" "${RARGS[@]}" -o "$OUT" -q
[ $? = 0 ] || fail "could not interrupt the MoE spikes run in 5 attempts"
grep -q "^moe.n_experts_used=2$" "$OUT.parts/manifest.txt" || fail "the manifest lacks the MoE fields"
grep -q "^moe.moe_layers=0,1,2,3,4,5$" "$OUT.parts/manifest.txt" || fail "the manifest lacks the MoE layers"
n=$(ls "$OUT.parts"/layer-*.msgpack | wc -l)
cp -r "$OUT.parts" "$TMP/res-saved.parts"
sed 's/"num_experts_per_tok": *2/"num_experts_per_tok": 1/' "$TMP/res/config.json" >"$TMP/res/config.k1" &&
    cp "$TMP/res/config.json" "$TMP/res/config.k2" && cp "$TMP/res/config.k1" "$TMP/res/config.json"
cmp -s "$TMP/res/config.json" "$TMP/res/config.k2" && fail "could not change num_experts_per_tok in config.json"
"$BIN" "${RARGS[@]}" -o "$OUT" --resume -q 2>"$TMP/res-bad.log"
rc=$?
cp "$TMP/res/config.k2" "$TMP/res/config.json"
[ $rc = 1 ] && grep -q "n_experts_used" "$TMP/res-bad.log" ||
    fail "--resume with another num_experts_per_tok: exit $rc, $(cat "$TMP/res-bad.log")"
diff -r "$TMP/res-saved.parts" "$OUT.parts" >/dev/null || fail "a refused resume changed the parts"
"$BIN" "${RARGS[@]}" -o "$OUT" --resume 2>"$TMP/res.log" || fail "resume: $(tail -3 "$TMP/res.log")"
grep -q "spikes: $n layer(s) resumed" "$TMP/res.log" || fail "resume count ($n parts): $(grep resumed "$TMP/res.log")"
$CMP "$TMP/res-ref.msgpack" "$OUT" || fail "the resumed MoE result differs from the uninterrupted run"
"$PY" - "$OUT" <<'EOF' || fail "the resumed MoE layers lack their moe records"
import msgpack, sys
sp = msgpack.unpackb(open(sys.argv[1], "rb").read(), raw=False, strict_map_key=False)
assert len(sp["layers"]) == 6 and all(len(l["moe"]["per_expert"]) == 4 for l in sp["layers"])
EOF
echo "ok: spikes --resume on a mixture of experts ($n of 6 layers resumed, equal to the uninterrupted run)"
unset OPENBLAS_NUM_THREADS

for fam in mixtral qwen2moe qwen3moe qwen3moe-mixed; do
    if [ ! -f "$SRC/test/data/families/$fam/ref.json" ]; then
        echo "skipped: test/data/families/$fam not made yet (scripts/make-moe-refs.py)"
        continue
    fi
    for how in hf gguf; do
        # the Qwen3-MoE with dense layers has no GGUF (llama.cpp's converter has no mlp_only_layers)
        [ $how = gguf ] && [ ! -f "$SRC/test/data/families/$fam/model.gguf" ] && continue
        m="$SRC/test/data/families/$fam"
        [ $how = gguf ] && m="$m/model.gguf"
        out="$TMP/$fam-$how"
        "$BIN" analyze "$m" -o "$out" --no-plots >"$out.log" 2>&1 || fail "analyze $fam ($how): $(tail -3 "$out.log")"
        "$PY" - "$out" "${fam%-mixed}" <<'EOF' || fail "outputs of $fam ($how)"
import json, msgpack, sys
d, fam = sys.argv[1], sys.argv[2]
s = json.load(open(d + "/summary.json"))
assert s["model"]["family"] == fam, s["model"]["family"]
for k in ("trace", "spikes", "vocab", "sinks"):
    assert k in s, k
tr = msgpack.unpackb(open(d + "/trace.msgpack", "rb").read(), raw=False, strict_map_key=False)
mo = tr["moe"]
assert mo["k"] >= 2 and mo["moe_layers"], mo.keys()
for r in mo["spike_token_routes"]:
    for l in r["layers"]:
        assert len(set(l["experts"])) == mo["k"] and all(0 <= e < mo["n_experts"] for e in l["experts"])
sp = msgpack.unpackb(open(d + "/spikes.msgpack", "rb").read(), raw=False, strict_map_key=False)
assert sp["layers"], "no spikes layer"
for l in sp["layers"]:
    if l["layer"] in mo["moe_layers"]:
        m = l["moe"]
        assert len(m["per_expert"]) == m["n_experts"] + (1 if m["has_shared"] else 0)
        for pe in m["per_expert"]:
            assert len(pe["frobenius"]) == len(l["frobenius"])
EOF
    done
    echo "ok: analyze on $fam (HF$([ -f "$SRC/test/data/families/$fam/model.gguf" ] && echo " and GGUF"))"
done
exit 0
