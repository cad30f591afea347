#!/usr/bin/env bash
# cli-findings.sh BINARY SOURCE_DIR FIXTURES_DIR - the one spike rule, the one prompt set
# and the findings on the terminal. The default rule (20x the median channel peak in 3
# consecutive blocks) finds channel 356 of trained-llama and 154 of trained-packed, and no
# channel of a random synth model whose planted spike is 0.001 (no mechanism); nothing
# passing names the closest channel. trace and sinks count the same sink heads on the
# same built-in prompts; prompts follow one rule (>= 2 tokens, cut to the context).
set -u
BIN=$1
FIX=$3
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-findings.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# usage errors exit 2 and name the option, everywhere
for cmd in trace sinks spikes analyze; do
    "$BIN" $cmd model --abs abc -o "$TMP/x" >/dev/null 2>"$TMP/err"
    [ $? -eq 2 ] || fail "$cmd --abs abc: exit is not 2"
    grep -q -- "--abs: 'abc' is not a number" "$TMP/err" || fail "$cmd --abs abc: $(cat "$TMP/err")"
done
"$BIN" spikes model >/dev/null 2>"$TMP/err"; [ $? -eq 2 ] || fail "spikes without -o: exit"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "spikes without -o: not one line: $(cat "$TMP/err")"

for cmd in sinks vocab-sweep analyze; do
    "$BIN" $cmd model >/dev/null 2>"$TMP/err"; [ $? -eq 2 ] || fail "$cmd without -o: exit"
    [ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "$cmd without -o: not one line: $(cat "$TMP/err")"
done
# the report's headline never rounds a count to 0.0% or 100.0%
$PY -c "import sys; sys.path.insert(0, sys.argv[1]); import make_report as M
assert (M.pct_of(1, 4096), M.pct_of(4095, 4096), M.pct_of(2048, 4096), M.pct_of(0, 9)) == ('0.024%', '99.976%', '50.0%', '0.0%')" \
    "$2/notebooks-out" || fail "pct_of"

# a random model without a mechanism: nothing passes, the closest channel is named
printf '{"preset": "demo", "planted": {"spike_values": [0.001], "sink_fraction": 0}}\n' >"$TMP/rnd.json"
"$BIN" synth --config "$TMP/rnd.json" -o "$TMP/rnd" --quiet >/dev/null 2>&1 || fail "synth"
"$BIN" trace "$TMP/rnd" >"$TMP/out" 2>/dev/null || fail "trace rnd"
grep -q "^spike channels: none on prompt 0 (64 tokens); closest: channel [0-9]*, 0\.[0-9]*x the threshold" "$TMP/out" ||
    fail "random model: $(cat "$TMP/out")"
"$BIN" trace "$TMP/rnd" -q >"$TMP/out" 2>&1 || fail "trace -q"
[ -s "$TMP/out" ] && fail "trace -q printed: $(cat "$TMP/out")"

# option errors name the option; --rank beyond d is reported, not silently clamped
for bad in 9 3-1 ""; do
    "$BIN" spikes "$TMP/rnd" --layers "$bad" -o "$TMP/x.msgpack" -q >/dev/null 2>"$TMP/err"
    [ $? -eq 2 ] || fail "--layers '$bad': exit"
    grep -q "^sinkscope spikes: --layers: " "$TMP/err" || fail "--layers '$bad': $(cat "$TMP/err")"
done
grep -q "empty list" "$TMP/err" || fail "--layers '': $(cat "$TMP/err")"
"$BIN" spikes "$TMP/rnd" --layers 1 --channels 3 --top-frob 0 --rank 1000 -o "$TMP/x.msgpack" -q 2>"$TMP/err" ||
    fail "spikes --rank 1000: $(cat "$TMP/err")"
grep -q "rank 1000 clamped to the model's d_model 256" "$TMP/err" || fail "no clamp warning: $(cat "$TMP/err")"
# analyze -q: nothing on the terminal; --output is accepted as -o
"$BIN" analyze "$TMP/rnd" --output "$TMP/a" --no-plots -q >"$TMP/out" 2>&1 || fail "analyze -q: $(cat "$TMP/out")"
[ -s "$TMP/out" ] && fail "analyze -q printed: $(cat "$TMP/out")"
[ -s "$TMP/a/summary.json" ] || fail "analyze --output"

[ -d "$FIX/trained-llama" ] && [ -d "$FIX/trained-packed" ] || exit 77
# inspect: the tokenizer and the 2L+1 blocks of trace
"$BIN" inspect "$FIX/trained-llama/model" >"$TMP/out" || fail "inspect"
grep -q "^layers       8  (17 residual blocks" "$TMP/out" || fail "inspect blocks: $(cat "$TMP/out")"
grep -q "^tokenizer    sentencepiece, 4096 pieces" "$TMP/out" || fail "inspect tokenizer: $(cat "$TMP/out")"
"$BIN" inspect "$TMP/rnd" | grep -q "^tokenizer    none found" || fail "inspect without tokenizer"
# spikes and vocab-sweep print what they found
"$BIN" spikes "$FIX/trained-packed/model.gguf" -o "$TMP/sp.msgpack" >"$TMP/out" 2>/dev/null || fail "spikes packed"
grep -q "^  S_154 at layer 2 (spike channel): lambda\* 4.79, dominance 4.05, energy 0.75, cos(x, s\*) 0.57 at token 0" \
    "$TMP/out" || fail "spikes findings: $(cat "$TMP/out")"
"$BIN" vocab-sweep "$FIX/trained-packed/model.gguf" --sample 512 -o "$TMP/v.msgpack" >"$TMP/out" 2>/dev/null || fail "vocab packed"
grep -q "^vocabulary: [0-9]* of 512 tokens spike alone at position 0 (ratio >= 100 x the typical median), mostly in channel 154" \
    "$TMP/out" || fail "vocab findings: $(cat "$TMP/out")"
L="$FIX/trained-llama/model"
"$BIN" trace "$L" >"$TMP/out" 2>/dev/null || fail "trace trained-llama"
grep -q "^spike rule: |h| >= 20 x the median channel peak in >= 3 consecutive blocks" "$TMP/out" || fail "rule line"
grep -q "^  channel 356, token 0: peak |h| 4[0-9][0-9]\.[0-9] at block 16 (FFN of layer 7)" "$TMP/out" ||
    fail "channel 356: $(cat "$TMP/out")"
grep -q "step-up: block 4 (FFN of layer 1), block 8 (FFN of layer 3); step-down: none" "$TMP/out" ||
    fail "lifecycle: $(cat "$TMP/out")"
NS=$(sed -n 's/^sink heads: \([0-9]*\) of 48 have alpha_0 > 0.3 averaged over the 4 prompt(s).*/\1/p' "$TMP/out")
[ -n "$NS" ] || fail "sink line: $(cat "$TMP/out")"
"$BIN" sinks "$L" -o "$TMP/s.msgpack" --json -q >"$TMP/s.json" || fail "sinks"
$PY -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['n_sink_heads'] == int(sys.argv[2]), (j['n_sink_heads'], sys.argv[2])" \
    "$TMP/s.json" "$NS" || fail "trace and sinks disagree on the default prompts"
# the paper's definition is still there: nothing passes 100 / 1000 here, 356 comes closest
"$BIN" trace "$L" --abs 100 --ratio 1000 >"$TMP/out" 2>/dev/null || fail "trace --abs 100 --ratio 1000"
grep -q "^spike rule: |h| >= 1000 x the block median and 100 in" "$TMP/out" || fail "paper rule line"
grep -q "^spike channels: none on prompt 0 (64 tokens); closest: channel 356, 0\.[0-9]*x the threshold" "$TMP/out" ||
    fail "paper rule closest: $(cat "$TMP/out")"
"$BIN" trace "$FIX/trained-packed/model.gguf" >"$TMP/out" 2>/dev/null || fail "trace trained-packed"
grep -q "^spike channels: 1, " "$TMP/out" && grep -q "^  channel 154, token 0" "$TMP/out" ||
    fail "trained-packed: $(cat "$TMP/out")"
# --json replaces the findings
"$BIN" trace "$L" --json 2>/dev/null >"$TMP/j" || fail "trace --json"
$PY -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['spike_channels'] == [356] and j['closest']['channel'] == 356" "$TMP/j" ||
    fail "trace --json"

# one prompt rule: an empty prompt is refused (exit 2), a long one is cut with a warning
"$BIN" trace "$L" --prompt "" >"$TMP/out" 2>"$TMP/err"; [ $? -eq 2 ] || fail "empty prompt: exit"
grep -q "prompt 1 has 1 token (need BOS and at least one more)" "$TMP/err" || fail "empty prompt: $(cat "$TMP/err")"
IDS=1$(for i in $(seq 1 299); do printf ',%d' $((100 + i)); done)
"$BIN" trace "$L" --tokens "$IDS" --json >"$TMP/j" 2>"$TMP/err" || fail "long prompt: $(cat "$TMP/err")"
grep -q "prompt 1 has 300 tokens; cut to the model's context of 256" "$TMP/err" || fail "no cut warning: $(cat "$TMP/err")"
$PY -c "import json,sys; assert json.load(open(sys.argv[1]))['n_tokens'] == 256" "$TMP/j" || fail "not cut to 256"
"$BIN" sinks "$L" --tokens "$IDS" -o "$TMP/s2.msgpack" -q 2>"$TMP/err" || fail "sinks long prompt: $(cat "$TMP/err")"
grep -q "cut to the model's context of 256" "$TMP/err" || fail "sinks: no cut warning: $(cat "$TMP/err")"
echo "cli-findings: ok"
