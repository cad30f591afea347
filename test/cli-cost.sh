#!/usr/bin/env bash
# cli-cost.sh BINARY SOURCE_DIR FIXTURES_DIR - the cost commands end to end on the
# trained-llama fixture with a short text: perplexity --json equals its msgpack and the
# exp of nll_sum / n_scored; kv-eval with W >= the window equals the full perplexity;
# quant-risk --no-e2e writes the documented arrays; compare reads a hand-made analyze
# folder (the lifecycle's main step-up picks the analysed (layer, channel), the median
# r99 ignores empty KV heads); plot_cost.py draws each figure; `analyze --text` on
# stories260K writes quant_risk.msgpack and kv_eval.msgpack, their headline numbers in
# summary.json (the perplexity equal to `sinkscope perplexity`'s) and the report section.
set -euo pipefail
BIN=$1
SRC=$2
FIX=$3
M="$FIX/trained-llama/model"
[ -d "$M" ] || { echo "SKIPPED: $M not found"; exit 77; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-cost.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
head -c 700 "$SRC/test/data/ppl-text.txt" >"$TMP/t.txt"

"$BIN" perplexity "$M" --text "$TMP/t.txt" --window 64 --stride 32 --json -q -o "$TMP/p.msgpack" >"$TMP/p.json"
"$BIN" kv-eval "$M" --text "$TMP/t.txt" --context 64 --window 64 --json -q -o "$TMP/k.msgpack" >"$TMP/k.json"
"$BIN" kv-eval "$M" --text "$TMP/t.txt" --context 64 --window 8 --sinks 2 -q -o "$TMP/k8.msgpack" >/dev/null
"$BIN" quant-risk "$M" --text "$TMP/t.txt" --window 64 --no-e2e --ratio 100 --abs 50 -q -o "$TMP/q.msgpack" >/dev/null
if "$BIN" perplexity "$M" 2>/dev/null; then echo "FAIL: perplexity without --text succeeded" >&2; exit 1; fi

mkdir "$TMP/an"
/usr/bin/python3 - "$TMP" "$SRC/notebooks-out" "$M" <<'PY'
import json, math, struct, sys
import msgpack
tmp, nb, model = sys.argv[1:4]
sys.path.insert(0, nb)
import sks_results as R
p, pj = R.load(f"{tmp}/p.msgpack"), json.load(open(f"{tmp}/p.json"))
assert p["schema"] == "sinkscope.perplexity/1"
assert abs(p["perplexity"] - pj["perplexity"]) <= 1e-9 * pj["perplexity"]
assert abs(math.exp(p["nll_sum"] / p["n_scored"]) - p["perplexity"]) <= 1e-12 * p["perplexity"]
w = p["windows"]
assert w.shape[1] == 3 and (w[1:, 0] - w[:-1, 0] == 32).all() and w[-1, 1] == p["n_tokens"]
assert abs(p["window_nll_sum"].sum() - p["nll_sum"]) <= 1e-9 * p["nll_sum"]
k = json.load(open(f"{tmp}/k.json"))
v = {x["name"]: x for x in k["variants"]}
assert v["recent"]["perplexity"] == v["full"]["perplexity"] == v["streaming"]["perplexity"], v
k8 = R.load(f"{tmp}/k8.msgpack")
e = {x["name"]: x["kv_entries"] for x in k8["variants"]}
assert e == {"full": 64 * 48, "recent": 8 * 48, "streaming": 10 * 48}, e
q = R.load(f"{tmp}/q.msgpack")
assert q["rel_err"].shape == (8, 5, 5, 3) and q["end_to_end"] is None and q["spike_channels"] == [356]
assert (q["max_abs"] >= q["median_abs"]).all()
# a hand-made analyze folder for compare
summ = {"schema": "sinkscope.summary/1",
        "model": {"path": model, "family": "llama", "n_layers": 8, "d_model": 384},
        "trace": {"spike_channels": [356], "largest": {"block": 8, "max_abs": 400.0, "spike_score": 210.0},
                  "lifecycles": [{"token": 0, "channel": 356, "main_up": 7}], "sink_ratio_percent": 40.0},
        "spikes": {"channels": [{"layer": 1, "channel": 356, "spike_channel": True, "lambda_star": -6.8, "dominance": 4.5},
                                {"layer": 3, "channel": 356, "spike_channel": True, "lambda_star": 2.0, "dominance": 3.0}]},
        "vocab": {"spike_fraction": 0.25},
        "sinks": {"sink_ratio_percent": 47.9}}
json.dump(summ, open(f"{tmp}/an/summary.json", "w"))
r99 = [0, 3, 5, 0, 2, 9] + [0] * 42  # (8, 6): median of 3, 5, 2, 9 = 4
sinks = {"schema": "sinkscope.sinks/1",
         "layers": {"sink_r99": {"dtype": "i32", "shape": [8, 6], "data": struct.pack("<48i", *r99)}}}
open(f"{tmp}/an/sinks.msgpack", "wb").write(msgpack.packb(sinks, use_bin_type=True))
PY
"$BIN" compare "$TMP/an" --text "$TMP/t.txt" --json -q -o "$TMP/c.msgpack" >"$TMP/c.json"
/usr/bin/python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
c = json.load(open(f"{tmp}/c.json"))["models"][0]
p = json.load(open(f"{tmp}/p.json"))
assert c["step_layer"] == 3 and c["lambda_star"] == 2.0 and c["dominance"] == 3.0, c  # block 7 = FFN of layer 3
assert c["sink_ratio"] == 47.9 and c["sink_r99"] == 4.0 and c["vocab_fraction"] == 0.25, c
assert c["peak_abs"] == 400.0 and c["peak_ratio"] == 210.0 and c["spike_channels"] == [356], c
assert c["perplexity"] > 1 and c["perplexity"] != p["perplexity"]  # context windows of 256, not 64/32
PY
for f in q k8 c; do /usr/bin/python3 "$SRC/notebooks-out/plot_cost.py" "$TMP/$f.msgpack" "$TMP/$f.png" >/dev/null; done
ls "$TMP"/q.png "$TMP"/k8.png "$TMP"/c.png >/dev/null

S="$FIX/stories260K"
"$BIN" analyze "$S/stories260K.bin" --tokenizer "$S/tok512.bin" -o "$TMP/st" --text "$TMP/t.txt" --kv-window 32 \
    --abs 5 --ratio 10 -q >/dev/null 2>&1
"$BIN" perplexity "$S/stories260K.bin" --tokenizer "$S/tok512.bin" --text "$TMP/t.txt" --json -q >"$TMP/sp.json"
/usr/bin/python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
s = json.load(open(f"{tmp}/st/summary.json"))
p = json.load(open(f"{tmp}/sp.json"))
assert abs(s["perplexity"]["perplexity"] - p["perplexity"]) <= 1e-9 * p["perplexity"], (s["perplexity"], p)
kv = {v["name"]: v for v in s["kv_eval"]["variants"]}
assert set(kv) == {"full", "recent", "streaming", "kvmap"} and s["kv_eval"]["kv_window"] == 32, kv
assert kv["full"]["perplexity"] == s["perplexity"]["perplexity"]
assert s["quant_risk"]["perplexity"]["f32"] == s["perplexity"]["perplexity"]
for f in ("quant_risk.msgpack", "kv_eval.msgpack", "fig_quant_risk.png", "fig_kv_eval.png"):
    assert f in s["files"], (f, s["files"])
html = open(f"{tmp}/st/report.html").read()
assert "Activation quantization (quant_risk.msgpack)" in html and "KV-cache eviction (kv_eval.msgpack)" in html
PY
echo "cost commands: ok"
