#!/usr/bin/env bash
# Planted sink heads stay recoverable from the weights alone at a realistic width:
# on the `small` synth preset (d 768, ~100M parameters) the weight-only predictor and
# the activation-informed margin must both rank the planted heads first (AUC >= 0.95
# against the measured labels, which must equal the planted heads).
set -euo pipefail
BIN=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$BIN" synth --preset small -o "$TMP/m" 2>/dev/null
"$BIN" sinks "$TMP/m" -o "$TMP/s.msgpack" --json >"$TMP/s.json" 2>/dev/null
/usr/bin/python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
s = json.load(open(f"{tmp}/s.json"))
planted = {tuple(x) for x in json.load(open(f"{tmp}/m/planted.json"))["sink_heads"]}
measured = {(h["layer"], h["head"]) for h in s["heads"] if h["is_sink"]}
assert measured == planted, f"measured sink heads {sorted(measured - planted)} extra, {sorted(planted - measured)} missed"
auc = s["auc"]
for k in ("weight_only", "margin_rope"):
    assert auc[k] >= 0.95, f"AUC {k} = {auc[k]}"
print("planted", len(planted), "sink heads; AUC weight_only", auc["weight_only"], "margin_rope", auc["margin_rope"])
PY
