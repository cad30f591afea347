#!/usr/bin/env bash
# cli-forward.sh BINARY SOURCE_DIR FIXTURES_DIR - `sinkscope run` and `sinkscope trace`.
#
# 1. usage errors: one line naming the problem, non-zero exit; --help teaches;
# 2. run: greedy text from BOS on stories260K (.bin with its tok512.bin, .gguf with the
#    embedded vocabulary) equals reference.json `text`; --ids equals `greedy_ids`;
# 3. trace on trained-llama: --json summary keys, channel 356 / token 0 with step-ups at
#    blocks 4 and 8; the msgpack file parses, its keys are the documented ones and agree
#    with the JSON; alpha0 matches mechanism.json; --residual: the residual stream's L2
#    norms per block and token match reference.json; the built-in prompt runs;
# 4. trace on trained-packed (no --tokens): built-in prompt through the GGUF vocabulary.
# Exit 77 (skipped) when the fixtures folder is missing, after part 1 passed.
set -u
BIN=$1
SRC=$2
FIX=$3
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-forward.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect_error WHAT PATTERN CMD...: non-zero exit, one stderr line matching PATTERN.
expect_error() {
    local what=$1 pat=$2
    shift 2
    if "$@" >"$TMP/out" 2>"$TMP/err"; then fail "$what: exit 0"; fi
    [ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "$what: stderr is not one line: $(cat "$TMP/err")"
    grep -q -- "$pat" "$TMP/err" || fail "$what: stderr lacks '$pat': $(cat "$TMP/err")"
}

# ---- 1. usage --------------------------------------------------------------------------
"$BIN" run --help | grep -q -- "--generate" || fail "run --help"
"$BIN" trace --help | grep -q -- "--min-blocks" || fail "trace --help"
"$BIN" trace --help | grep -q "default 20" || fail "trace --help lacks the outlier default"
expect_error "run without model" "no MODEL" "$BIN" run
expect_error "trace bad ratio" "not a number" "$BIN" trace m --ratio abc --json
expect_error "trace bad option" "unknown option" "$BIN" trace m --frobnicate 3 --json
expect_error "trace missing model" "no-such-model" "$BIN" trace "$TMP/no-such-model" --json
expect_error "trace two inputs" "only one" "$BIN" trace m --prompt a --tokens 1 --json

[ -d "$FIX" ] || {
    echo "SKIPPED: fixtures folder $FIX not found"
    exit 77
}
"$PY" -c "import msgpack, numpy" 2>/dev/null || fail "$PY lacks msgpack/numpy: run scripts/install-deps.sh"
S=$FIX/stories260K

# ---- 2. run ----------------------------------------------------------------------------
want_text=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['text'].replace('<0x0A>', '\n'))" "$S/reference.json")
for model in "$S/stories260K.bin" "$S/stories260K.gguf"; do
    got=$("$BIN" run "$model" --generate 64 2>"$TMP/err") || fail "run $model: $(cat "$TMP/err")"
    # the reference text starts with a space (the first piece after BOS); decode drops it
    [ "$got" = "${want_text# }" ] || fail "run $model: text differs: $got"
    grep -q "tokens/s" "$TMP/err" || fail "run $model: no timing on stderr"
done
ids=$("$BIN" run "$S/stories260K.safetensors" --generate 64 --ids 2>/dev/null) || fail "run --ids"
want_ids=$("$PY" -c "import json,sys; g=json.load(open(sys.argv[1]))['greedy_ids']; print(str(g[0]) + ' | ' + ' '.join(map(str, g[1:])))" "$S/reference.json")
[ "$ids" = "$want_ids" ] || fail "run --ids: $ids"
expect_error "run id out of range" "outside the vocabulary" "$BIN" run "$S/stories260K.bin" --tokens 1,999 --ids

# ---- 3. trace on trained-llama -----------------------------------------------------------
M=$FIX/trained-llama/model
tok=$("$PY" -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['ids'])))" "$FIX/trained-llama/mechanism.json")
"$BIN" trace "$M" --tokens "$tok" --ratio 100 --abs 50 -o "$TMP/t.msgpack" --json --quiet >"$TMP/t.json" ||
    fail "trace trained-llama"
"$PY" - "$TMP/t.json" "$TMP/t.msgpack" "$FIX/trained-llama/mechanism.json" <<'EOF' || fail "trace trained-llama results"
import json, sys
import msgpack, numpy as np
j = json.load(open(sys.argv[1]))
r = msgpack.unpackb(open(sys.argv[2], "rb").read(), raw=False)
mech = json.load(open(sys.argv[3]))
for k in ("blocks", "spike_channels", "spike_tokens", "lifecycle", "alpha0", "sink_ratio", "sink_heads"):
    assert k in j, k
assert 356 in j["spike_channels"] and 0 in j["spike_tokens"], (j["spike_channels"], j["spike_tokens"])
lc = [l for l in j["lifecycle"] if l["token"] == 0 and l["channel"] == 356][0]
assert [b["block"] for b in lc["step_up"]] == [4, 8], lc
assert all(b["kind"] == "ffn" for b in lc["step_up"]) and [b["layer"] for b in lc["step_up"]] == [1, 3]
assert lc["step_down"] == [] and lc["main_step_up"] == 4
for b, ref in zip(j["blocks"], mech["blocks"]):
    assert abs(b["max_abs"] - ref["max_abs"]) <= 1e-4 * ref["max_abs"], (b, ref)
    assert (b["top_token"], b["top_channel"]) == (ref["top_token"], ref["top_channel"])
a0 = np.array(j["alpha0"])
assert np.abs(a0 - np.array(mech["alpha0"])).max() <= 1e-4
# msgpack: the documented keys, consistent with the JSON
keys = {"schema", "model", "params", "tokens", "blocks", "spike_channels", "spike_tokens", "lifecycles",
        "lifecycles_truncated", "closest", "alpha", "sink_heads", "sink_ratio", "sink_ratio_per_prompt", "channel_max"}
assert set(r) == keys, set(r) ^ keys
assert r["schema"] == "sinkscope.trace/1"
assert r["params"]["ratio"] == 100 and r["params"]["abs"] == 50 and r["params"]["min_blocks"] == 3
alpha = np.frombuffer(r["alpha"]["data"], dtype="<f8").reshape(r["alpha"]["shape"])
assert alpha.shape == (8, 6, 4) and np.allclose(alpha[:, :, 0], a0)
cm = np.frombuffer(r["channel_max"]["data"], dtype="<f4").reshape(r["channel_max"]["shape"])
assert cm.shape == (17, 384)
for b in range(17):
    assert abs(cm[b].max() - r["blocks"][b]["max_abs"]) <= 1e-6 * r["blocks"][b]["max_abs"]
    assert cm[b].argmax() == r["blocks"][b]["top_channel"]
toks = np.frombuffer(r["tokens"]["data"], dtype="<i4")
assert list(toks) == mech["ids"]
l0 = [l for l in r["lifecycles"] if l["token"] == 0 and l["channel"] == 356][0]
vals = np.frombuffer(l0["values"]["data"], dtype="<f4")
assert vals.shape == (17,) and abs(abs(vals[8]) - mech["blocks"][8]["max_abs"]) < 1e-3 * mech["blocks"][8]["max_abs"]
assert l0["plateau_first"] == 8 and l0["plateau_last"] == 16
assert sorted(map(tuple, r["sink_heads"])) == sorted(map(tuple, j["sink_heads"]))
assert len(r["sink_heads"]) == mech["sink_heads_eps0.3"]
EOF
# --residual: the whole residual stream; its L2 norms per block and token against the
# float64 reference (reference.json), its maxima against the block statistics
"$BIN" trace "$M" --tokens "$tok" --ratio 100 --abs 50 --residual -o "$TMP/r.msgpack" --quiet || fail "trace --residual"
"$PY" - "$TMP/r.msgpack" "$FIX/trained-llama/reference.json" <<'EOF2' || fail "trace --residual results"
import json, sys
import msgpack, numpy as np
r = msgpack.unpackb(open(sys.argv[1], "rb").read(), raw=False)
ref = json.load(open(sys.argv[2]))
h = np.frombuffer(r["residual"]["data"], dtype="<f4").reshape(r["residual"]["shape"])
assert h.shape == (17, 43, 384), h.shape
assert r["params"]["keep_residual"] is True
norms = np.linalg.norm(h.astype(np.float64), axis=2)
want = np.array(ref["residual_l2_norm_per_block_per_token"])
assert want.shape == norms.shape, want.shape
rel = np.abs(norms - want) / want
assert rel.max() <= 1e-4, rel.max()
for b in range(17):
    a = np.abs(h[b])
    t, c = np.unravel_index(np.argmax(a), a.shape)
    assert (t, c) == (r["blocks"][b]["top_token"], r["blocks"][b]["top_channel"])
    assert a.max() == np.float32(r["blocks"][b]["max_abs"])
    assert np.median(a.astype(np.float64)) == r["blocks"][b]["median_abs"]
EOF2
expect_error "--residual without -o" "needs -o" "$BIN" trace "$M" --residual --json
# built-in English prompt through the SentencePiece tokenizer beside the model
"$BIN" trace "$M" --ratio 100 --abs 50 --json --quiet >"$TMP/d.json" || fail "trace with the built-in prompt"
"$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['n_tokens'] > 40 and 356 in j['spike_channels'], j['spike_channels']" "$TMP/d.json" ||
    fail "built-in prompt: channel 356 not found"
# several prompts: alpha averaged, spikes from the first
printf 'The cat sat on the mat.\n\nA second line of text for the model.\n' >"$TMP/prompts.txt"
"$BIN" trace "$M" --prompts "$TMP/prompts.txt" --ratio 100 --abs 50 --json --quiet >"$TMP/p.json" || fail "--prompts"
"$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['n_prompts'] == 2, j['n_prompts']" "$TMP/p.json" ||
    fail "--prompts: want 2 prompts"

# ---- 4. trained-packed, vocabulary from the GGUF -----------------------------------------
"$BIN" trace "$FIX/trained-packed/model.gguf" --ratio 100 --abs 50 --json --quiet >"$TMP/k.json" || fail "trace packed"
"$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); assert 154 in j['spike_channels'], j['spike_channels']" "$TMP/k.json" ||
    fail "packed: channel 154 not found"
echo "cli-forward: all checks passed"
