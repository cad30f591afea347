#!/usr/bin/env bash
# cli-inspect.sh BINARY SOURCE_DIR FIXTURES_DIR - `sinkscope inspect` on the fixtures.
# Checks the human table and --json (parsed with python3's json module) against the
# architectures stated in fixtures/README.md, and the one-line error on a bad file.
set -u
BIN=$1
FIX=$3
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-inspect.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$BIN" inspect --help | grep -q "usage: sinkscope inspect MODEL" || fail "--help"
"$BIN" inspect >/dev/null 2>&1 && fail "no MODEL must fail"
# errors: non-zero exit, exactly one line on stderr naming the file and the problem
printf 'GGUF\003\0\0\0' > "$TMP/bad.gguf"
"$BIN" inspect "$TMP/bad.gguf" >"$TMP/out" 2>"$TMP/err" && fail "truncated GGUF accepted"
[ "$(wc -l < "$TMP/err")" -eq 1 ] || fail "error is not one line: $(cat "$TMP/err")"
grep -q "$TMP/bad.gguf" "$TMP/err" || fail "error does not name the file"
[ -s "$TMP/out" ] && fail "error path wrote to stdout"

[ -d "$FIX" ] || exit 77

# human output: the stories260K architecture from the .bin
"$BIN" inspect "$FIX/stories260K/stories260K.bin" > "$TMP/h.txt" || fail "inspect .bin"
grep -Eq "^layers +5 " "$TMP/h.txt" || fail "layers"
grep -Eq "^heads +8 x 8, 4 KV heads \(grouped-query\)" "$TMP/h.txt" || fail "heads"
grep -Eq "interleaved pairs" "$TMP/h.txt" || fail "rope order"
grep -Eq "^dtypes +F32: 47 tensors, 100.0% of parameters" "$TMP/h.txt" || fail "dtypes"

check() { # MODEL PYTHON-ASSERTIONS
    "$BIN" inspect "$1" --json > "$TMP/j.json" || fail "inspect --json $1"
    "$PY" - "$TMP/j.json" "$2" <<'PYEOF' || fail "json of $1"
import json, sys
j = json.load(open(sys.argv[1]))
exec(sys.argv[2])
# structure every consumer relies on
for t in j["tensors"]:
    assert set(t) >= {"name", "role", "layer", "dtype", "shape"}, t
assert sum(a * (b[0] if b else 1) for t in j["tensors"] for a, *b in [t["shape"]]) == j["n_params"]
PYEOF
}
stories='assert (j["family"], j["n_layers"], j["d_model"], j["d_ffn"], j["n_heads"], j["n_kv_heads"], j["head_dim"], j["vocab_size"]) == ("llama", 5, 64, 172, 8, 4, 8, 512), j
assert j["tied_embeddings"] is True and abs(j["norm_eps"] - 1e-5) < 1e-12 and j["rope_theta"] == 10000 and len(j["tensors"]) == 47'
check "$FIX/stories260K/stories260K.bin" "$stories"'
assert j["format"] == "llama2c" and j["rope_interleaved"] is True'
check "$FIX/stories260K/stories260K.gguf" "$stories"'
assert j["format"] == "gguf" and j["rope_interleaved"] is True'
check "$FIX/stories260K/stories260K.safetensors" "$stories"'
assert j["format"] == "safetensors" and j["rope_interleaved"] is False'
check "$FIX/trained-llama/model" '
assert (j["n_layers"], j["d_model"], j["d_ffn"], j["n_heads"], j["head_dim"], j["vocab_size"]) == (8, 384, 1024, 6, 64, 4096)
assert j["tied_embeddings"] is False and len(j["shards"]) == 3 and {t["dtype"] for t in j["tensors"]} == {"BF16"}
assert sorted({t["shard"] for t in j["tensors"]}) == [0, 1, 2]'
check "$FIX/trained-packed/model.gguf" '
assert (j["n_layers"], j["d_model"], j["d_ffn"], j["n_heads"], j["head_dim"], j["vocab_size"]) == (6, 256, 688, 4, 64, 4096)
assert j["tied_embeddings"] is True and not any(t["role"] == "lm_head" for t in j["tensors"])
d = {t["role"]: t["dtype"] for t in j["tensors"]}
assert d["wq"] == "Q8_0" and d["w_down"] == "F16" and d["attn_norm"] == "F32", d'
echo "cli-inspect: ok"
