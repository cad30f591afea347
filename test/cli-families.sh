#!/usr/bin/env bash
# cli-families.sh BINARY SOURCE_DIR FIXTURES_DIR - `sinkscope analyze` end to end on every
# family of test/data/families (HF folder and GGUF) and on the three ablation models:
# summary.json names the family and its norm layout, the four analyses ran, spikes
# report the post-norm gain where a norm follows the FFN, OLMo 2's outputs say that
# the RMSNorm sparsification step has no counterpart, and GPT-2's that its plain MLP has
# no quadratic form.
set -u
BIN=$1
SRC=$2
FIX=$3
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-families.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# check_summary DIR FAMILY NORMS: the summary of one analyze run
check_summary() {
    "$PY" - "$1/summary.json" "$2" "$3" <<'EOF' || fail "summary of $1"
import json, math, sys
s = json.load(open(sys.argv[1]))
fam, norms = sys.argv[2], sys.argv[3]
assert s["model"]["family"] == fam, s["model"]["family"]
assert s["model"]["norms"] == norms, s["model"]["norms"]
for k in ("trace", "spikes", "vocab", "sinks"):
    assert k in s, k
ch = s["spikes"]["channels"]
assert ch, "no spike channel analysed"
has_gain = [("post_gain" in c) for c in ch]
if norms == "pre":
    assert not any(has_gain), "post_gain without a post-norm"
else:
    assert all(has_gain), "post_gain missing"
    assert all(c["post_gain"] > 0 and math.isfinite(c["post_gain"]) for c in ch)
if norms == "post":
    assert "no counterpart" in s["spikes"].get("note", ""), "OLMo 2 note missing"
    assert s["sinks"]["auc"]["weight_only"] is None
EOF
}

for fam in gemma gemma2 gemma3 phi3 olmo2; do
    case $fam in
        gemma|phi3) norms=pre ;;
        olmo2) norms=post ;;
        *) norms=sandwich ;;
    esac
    for how in hf gguf; do
        m="$SRC/test/data/families/$fam"
        [ $how = gguf ] && m="$m/model.gguf"
        out="$TMP/$fam-$how"
        "$BIN" analyze "$m" -o "$out" --no-plots >"$out.log" 2>&1 || fail "analyze $fam ($how): $(tail -3 "$out.log")"
        check_summary "$out" "$fam" "$norms"
    done
    echo "ok: analyze on $fam (HF and GGUF)"
done

# GPT-2: LayerNorm, learned positions, a plain MLP. Every analysis runs; spikes says
# that the non-gated MLP has no quadratic form (no channel, no lambda*), in the summary,
# in spikes.msgpack and on the terminal; the lifecycle, the first-token map and the
# delimiter route are still there.
for how in hf gguf; do
    m="$SRC/test/data/families/gpt2"
    [ $how = gguf ] && m="$m/model.gguf"
    out="$TMP/gpt2-$how"
    "$BIN" analyze "$m" -o "$out" --no-plots >"$out.log" 2>&1 || fail "analyze gpt2 ($how): $(tail -3 "$out.log")"
    grep -q "spikes: no quadratic form: non-gated MLP" "$out.log" || fail "gpt2 ($how): the terminal does not say 'no quadratic form'"
    "$PY" - "$out" <<'EOF' || fail "gpt2 ($how) outputs"
import json, math, msgpack, sys
d = sys.argv[1]
s = json.load(open(d + "/summary.json"))
assert s["model"]["family"] == "gpt2" and s["model"]["norms"] == "pre", s["model"]
for k in ("trace", "spikes", "vocab", "sinks"):
    assert k in s, k
sp = s["spikes"]
assert sp["quadratic_form"] is False and sp["note"].startswith("no quadratic form: non-gated MLP"), sp
assert sp["channels"] == [], "a lambda* was invented"
assert sp["delimiter_top"], "no delimiter route"
m = msgpack.unpackb(open(d + "/spikes.msgpack", "rb").read(), raw=False)
assert m["quadratic_form"] is False and m["note"] == sp["note"]
assert m["layers"] == []
assert m["first_token_map"]["sigma1"]["shape"][0] >= 1
assert len(m["delimiter"]["top"]) > 0
t = msgpack.unpackb(open(d + "/trace.msgpack", "rb").read(), raw=False)
assert "lifecycles" in t, list(t)
assert math.isfinite(s["sinks"]["sink_ratio_percent"])
EOF
    echo "ok: analyze on gpt2 ($how): no quadratic form, lifecycle, first-token map, delimiter route, sinks"
done
"$BIN" spikes "$SRC/test/data/families/gpt2" -o "$TMP/g2.msgpack" >"$TMP/g2.out" 2>&1 || fail "spikes gpt2: $(tail -3 "$TMP/g2.out")"
grep -q "^spikes: no quadratic form: non-gated MLP" "$TMP/g2.out" || fail "spikes gpt2: no 'no quadratic form' line"

# the trained ablation models (spikes reported at training: base 188, sandwich 59, OLMo 2 23)
[ -d "$FIX/ablation" ] || exit 77
for v in base:llama:pre sandwich:gemma2:sandwich olmo2:olmo2:post; do
    IFS=: read -r name fam norms <<<"$v"
    out="$TMP/abl-$name"
    "$BIN" analyze "$FIX/ablation/$name" -o "$out" --no-plots --abs 10 --ratio 10 --sample 512 >"$out.log" 2>&1 ||
        fail "analyze ablation/$name: $(tail -3 "$out.log")"
    check_summary "$out" "$fam" "$norms"
    echo "ok: analyze on ablation/$name"
done
grep -q "no counterpart" "$TMP/abl-olmo2.log" || fail "OLMo 2: the terminal does not say that the sparsification step has no counterpart"
exit 0
