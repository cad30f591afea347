#!/usr/bin/env bash
# cli-synth.sh BINARY SOURCE_DIR FIXTURES_DIR - `sinkscope synth` and `sinkscope demo`.
#
# 1. usage errors: one stderr line naming the problem, non-zero exit; --help;
# 2. synth --preset tiny: the files, inspect sees the preset's shape; --config with a
#    small shard limit gives an index and several shards; a bad config names the file;
#    --format gguf --dtype q4_k_m: inspect shows the type mix (with the fallbacks);
# 3. demo --no-plots: exit 0, verify.json says every planted spike and sink was found,
#    every analysis file is there. Needs no fixtures.
# 4. demo --model-type gemma2: the same on a Gemma 2 shaped model, and spikes finds the
#    planted lambda* and dominance behind the post-FFN norm.
set -u
BIN=$1
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-synth.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

expect_error() {
    local what=$1 pat=$2
    shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err"; then fail "$what: exit 0"; fi
    [ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "$what: stderr is not one line: $(cat "$TMP/err")"
    grep -q -- "$pat" "$TMP/err" || fail "$what: stderr lacks '$pat': $(cat "$TMP/err")"
}

# ---- 1. usage ------------------------------------------------------------------------
"$BIN" synth --help | grep -q -- "--max-shard-bytes" || fail "synth --help"
"$BIN" demo --help | grep -q "verify.json" || fail "demo --help"
expect_error "synth without -o" "exactly one of --preset or --config" "$BIN" synth --preset tiny
expect_error "synth with both" "exactly one of" "$BIN" synth --preset tiny --config x.json -o "$TMP/x"
expect_error "unknown preset" "unknown preset 'gpt-9'" "$BIN" synth --preset gpt-9 -o "$TMP/x"
expect_error "bad dtype" "want f32 or bf16" "$BIN" synth --preset tiny --dtype f16 -o "$TMP/x"
expect_error "bad seed" "--seed" "$BIN" synth --preset tiny --seed -3 -o "$TMP/x"
expect_error "missing config" "nope.json" "$BIN" synth --config "$TMP/nope.json" -o "$TMP/x"
echo '{"hidden_size": 64,' >"$TMP/bad.json"
expect_error "broken config" "bad.json" "$BIN" synth --config "$TMP/bad.json" -o "$TMP/x"
expect_error "demo option" "unknown option" "$BIN" demo --frobnicate

# ---- 2. synth ------------------------------------------------------------------------
"$BIN" synth --preset tiny --seed 4 -o "$TMP/tiny" --quiet 2>"$TMP/err" || fail "synth tiny: $(cat "$TMP/err")"
for f in config.json model.safetensors planted.json; do [ -s "$TMP/tiny/$f" ] || fail "tiny: no $f"; done
"$BIN" inspect "$TMP/tiny" --json >"$TMP/inspect.json" || fail "inspect tiny"
$PY - "$TMP/inspect.json" "$TMP/tiny/planted.json" <<'PYEOF' || fail "tiny shape"
import json, sys
i = json.load(open(sys.argv[1])); p = json.load(open(sys.argv[2]))
assert (i["d_model"], i["d_ffn"], i["n_layers"], i["n_heads"], i["n_kv_heads"], i["vocab_size"]) == (64, 176, 4, 4, 2, 256), i
assert i["n_params"] == 217664 and i["bos_id"] == 1
assert p["schema"] == "sinkscope.planted/1" and p["seed"] == 4 and p["spike"]["token_position"] == 0
assert len(p["spike"]["s_star"]) == 64 and len(p["sink_heads"]) + len(p["non_sink_heads"]) == 16
PYEOF
cat >"$TMP/cfg.json" <<'JSON'
{"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 4,
 "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 200,
 "planted": {"spike_values": [900, -700]}}
JSON
"$BIN" synth --config "$TMP/cfg.json" --dtype bf16 --max-shard-bytes 40000 -o "$TMP/q" --json >"$TMP/q.json" 2>/dev/null ||
    fail "synth --config"
[ -s "$TMP/q/model.safetensors.index.json" ] || fail "no index with a 40 KB shard limit"
[ "$(ls "$TMP"/q/model-*-of-*.safetensors | wc -l)" -gt 2 ] || fail "too few shards"
"$BIN" inspect "$TMP/q" --json >"$TMP/qi.json" || fail "inspect sharded qwen2"
$PY - "$TMP/qi.json" "$TMP/q.json" <<'PYEOF' || fail "sharded qwen2"
import json, sys
i = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
assert i["family"] == "qwen2" and i["has_qkv_bias"] and len(i["shards"]) > 2, i
assert all(t["dtype"] == "BF16" for t in i["tensors"])
assert s["n_params"] == i["n_params"] and s["bytes"] == 2 * i["n_params"], s
PYEOF

# ---- 2b. GGUF in a quantized mix ---------------------------------------------------------
"$BIN" synth --preset demo --format gguf --dtype q4_k_m -o "$TMP/g" --quiet 2>"$TMP/gerr" || fail "synth gguf: $(cat "$TMP/gerr")"
[ -s "$TMP/g/model.gguf" ] && [ -s "$TMP/g/planted.json" ] || fail "synth gguf: files"
"$BIN" inspect "$TMP/g/model.gguf" >"$TMP/gi.txt" || fail "inspect gguf"
grep -Eq "^ +Q4_K +[0-9]+ +[0-9]+ +4\.500$" "$TMP/gi.txt" || fail "inspect: no Q4_K row: $(cat "$TMP/gi.txt")"
grep -Eq "^ +Q6_K +[0-9]+ +[0-9]+ +6\.562$" "$TMP/gi.txt" || fail "inspect: no Q6_K row"
# demo's d_ffn 704 is not a multiple of 256: ffn_down falls back to Q5_0 / Q8_0
grep -Eq "^ +Q5_0 " "$TMP/gi.txt" && grep -Eq "^ +Q8_0 " "$TMP/gi.txt" || fail "inspect: no fallback rows"
grep -Eq "^bpw +5\.[0-9]+ bits per weight overall" "$TMP/gi.txt" || fail "inspect: overall bpw"
"$BIN" inspect --json "$TMP/g/model.gguf" >"$TMP/gi.json" || fail "inspect --json gguf"
$PY - "$TMP/gi.json" <<'PYEOF' || fail "inspect --json dtype_mix"
import json, sys
i = json.load(open(sys.argv[1]))
mix = {m["dtype"]: m for m in i["dtype_mix"]}
assert set(mix) == {"F32", "Q4_K", "Q6_K", "Q5_0", "Q8_0"}, mix
assert sum(m["elements"] for m in mix.values()) == i["n_params"]
bpw = 8.0 * sum(m["bytes"] for m in mix.values()) / i["n_params"]
assert abs(bpw - i["bpw"]) < 1e-9 and 4.5 < bpw < 6.6, (bpw, i["bpw"])
PYEOF
expect_error "synth gguf bad dtype" "'q4_k_x' is neither a type" "$BIN" synth --preset tiny --format gguf --dtype q4_k_x -o "$TMP/g2"
expect_error "synth bad format" "'onnx' is not safetensors or gguf" "$BIN" synth --preset tiny --format onnx -o "$TMP/g3"

# ---- 3. demo -------------------------------------------------------------------------
"$BIN" demo --no-plots --quiet -o "$TMP/demo" >"$TMP/demo.out" 2>"$TMP/demo.err" ||
    fail "demo: $(cat "$TMP/demo.err") $(cat "$TMP/demo.out")"
grep -q "every planted spike and sink recovered" "$TMP/demo.out" || fail "demo verdict: $(cat "$TMP/demo.out")"
for f in model/planted.json trace.msgpack spikes.msgpack vocab.msgpack sinks.msgpack summary.json verify.json; do
    [ -s "$TMP/demo/$f" ] || fail "demo: no $f"
done
$PY -c "import json,sys; v=json.load(open(sys.argv[1])); assert v['pass'] and v['sink_false_positive']==0 and v['plateau_min_ratio']>1000, v" \
    "$TMP/demo/verify.json" || fail "verify.json"
# the findings on the terminal never round a non-zero count to 0.0% (the demo's vocabulary
# has 1 spike token of 4096: 0.024%)
"$BIN" demo --no-plots -o "$TMP/demo2" >"$TMP/demo2.out" 2>/dev/null || fail "demo without --quiet"
grep -Eq "^vocabulary: [0-9]+ of [0-9]+ tokens \([0-9.]+%\)" "$TMP/demo2.out" || fail "no vocabulary line: $(cat "$TMP/demo2.out")"
if grep -Eq "^vocabulary: [1-9][0-9]* of [0-9]+ tokens \(0\.0%\)" "$TMP/demo2.out"; then
    fail "a non-zero count rounded to 0.0%: $(grep '^vocabulary' "$TMP/demo2.out")"
fi
# ---- 4. a Gemma 2 shaped model (--model-type gemma2; docs/synth.md "Gemma 2") ------------
expect_error "unknown model type" "model_type 'gpt2' is not synthesized" "$BIN" synth --preset tiny --model-type gpt2 -o "$TMP/x"
expect_error "gemma2 as gguf" "written as safetensors only" "$BIN" synth --preset tiny --model-type gemma2 --format gguf -o "$TMP/x"
"$BIN" demo --model-type gemma2 --no-plots --quiet -o "$TMP/g2" >"$TMP/g2.out" 2>"$TMP/g2.err" ||
    fail "demo gemma2: $(cat "$TMP/g2.err") $(cat "$TMP/g2.out")"
grep -q "every planted spike and sink recovered" "$TMP/g2.out" || fail "demo gemma2 verdict: $(cat "$TMP/g2.out")"
$PY - "$TMP/g2" <<'PYEOF' || fail "gemma2 demo outputs"
import json, math, sys
d = sys.argv[1]
c = json.load(open(d + "/model/config.json")); p = json.load(open(d + "/model/planted.json"))
s = json.load(open(d + "/summary.json")); v = json.load(open(d + "/verify.json"))
assert c["architectures"] == ["Gemma2ForCausalLM"] and c["query_pre_attn_scalar"] > 0, c
assert s["model"]["family"] == "gemma2" and s["model"]["norms"] == "sandwich", s["model"]
assert v["pass"] and v["spike_token_position0_only"] and v["sink_false_positive"] == 0 and v["plateau_min_ratio"] > 1000, v
# the spikes analysis finds the planted eigenpair of S_c behind the post-FFN norm: lambda*
# to 1e-3 of the planted value, the dominance too, and the post-norm restores the plateau
got = {ch["channel"]: ch for ch in s["spikes"]["channels"] if ch["spike_channel"]}
for c_, lam, val in zip(p["spike"]["channels"], p["spike"]["lambda_star"], p["spike"]["values"]):
    ch = got[c_]
    assert abs(ch["lambda_star"] - lam) <= 1e-3 * abs(lam), (c_, ch["lambda_star"], lam)
    assert abs(ch["dominance"] - p["spike"]["dominance"]) <= 1e-3 * p["spike"]["dominance"], ch
    assert abs(ch["post_out"] - val) <= 0.02 * abs(val), (ch["post_out"], val)
PYEOF
echo "cli-synth: ok"
