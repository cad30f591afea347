#!/usr/bin/env bash
# cli-damaged.sh BINARY SOURCE_DIR FIXTURES_DIR - damaged copies of the fixtures, built
# here in a temporary folder (never committed): 64 bytes of 0xFF (32 bf16 NaN) in shard
# 2 of trained-llama, and 4 KB of seeded random bytes in the middle of trained-packed's
# GGUF. Every command must stop with the damaged tensor's name (exit 1), never report
# numbers; --allow-nonfinite analyses anyway, lists the tensors in every output and
# stops at the first non-finite activation with its block and token.
set -u
BIN=$1
FIX=$3
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-damaged.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -d "$FIX/trained-llama" ] && [ -d "$FIX/trained-packed" ] || exit 77

# ---- trained-llama with a NaN run in shard 2 (symlinks to the intact files)
# copy_with_own DIR SHARD: trained-llama as symlinks, SHARD as a private copy to damage
copy_with_own() {
    mkdir "$1"
    for f in "$FIX"/trained-llama/model/*; do ln -s "$f" "$1/"; done
    rm "$1/$2"
    cp "$FIX/trained-llama/model/$2" "$1/$2"
}
D="$TMP/nanshard"
S=model-00002-of-00003.safetensors
copy_with_own "$D" "$S"
SZ=$(stat -c %s "$D/$S")
head -c 64 /dev/zero | tr '\0' '\377' | dd of="$D/$S" bs=1 seek=$((SZ / 2)) conv=notrunc status=none
BAD=model.layers.3.mlp.gate_proj.weight

"$BIN" trace "$D" --abs 50 --ratio 100 --json --quiet >"$TMP/out" 2>"$TMP/err" && fail "trace on NaN weights exited 0"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "trace error is not one line: $(cat "$TMP/err")"
grep -q "$BAD: 32 of 393216 weights are NaN or Inf" "$TMP/err" || fail "trace error: $(cat "$TMP/err")"
grep -q "sink ratio" "$TMP/out" && fail "trace printed results"
"$BIN" spikes "$D" -o "$TMP/s.msgpack" --quiet 2>"$TMP/err" && fail "spikes on NaN weights exited 0"
grep -q "$BAD" "$TMP/err" || fail "spikes error: $(cat "$TMP/err")"
[ -e "$TMP/s.msgpack" ] && fail "spikes wrote a result"
# --allow-nonfinite: the NaN reaches the residual stream at the FFN of layer 3 (block 8)
"$BIN" trace "$D" --abs 50 --ratio 100 --json --quiet --allow-nonfinite >"$TMP/out" 2>"$TMP/err" &&
    fail "trace --allow-nonfinite went through a NaN activation"
grep -q "non-finite activation (NaN) at block 8 (after the FFN of layer 3), token 0" "$TMP/err" ||
    fail "activation error: $(cat "$TMP/err")"
grep -q "warning: analysed with 32 NaN/Inf of 393216 weights in $BAD" "$TMP/err" || fail "no tensor list: $(cat "$TMP/err")"

# ---- one NaN in row 4000 of trained-llama's embedding: only the delimiter route (every
# row of E) reads it. spikes stops; with --allow-nonfinite it analyses layer 1 and names
# the tensor in the JSON summary, the msgpack `model` map and on stderr.
E="$TMP/nanemb"
S=model-00001-of-00003.safetensors
copy_with_own "$E" "$S"
HDR=$($PY -c "import struct,sys; print(8 + struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" "$E/$S")
OFF=$($PY -c "import json,sys; print(json.loads(open(sys.argv[1],'rb').read()[8:$HDR])['model.embed_tokens.weight']['data_offsets'][0])" "$E/$S")
printf '\377\377' | dd of="$E/$S" bs=1 seek=$((HDR + OFF + 4000 * 384 * 2 + 10)) conv=notrunc status=none
SP=(spikes "$E" --layers 1 --channels 356 --top-frob 0 -o "$TMP/e.msgpack" --json --quiet)
"$BIN" "${SP[@]}" >"$TMP/e.json" 2>"$TMP/err" && fail "spikes on a NaN embedding exited 0"
grep -q "model.embed_tokens.weight: 1 of 1572864 weights are NaN or Inf" "$TMP/err" || fail "spikes error: $(cat "$TMP/err")"
"$BIN" "${SP[@]}" --allow-nonfinite >"$TMP/e.json" 2>"$TMP/err" || fail "spikes --allow-nonfinite: $(cat "$TMP/err")"
grep -q "warning: analysed with 1 NaN/Inf of 1572864 weights in model.embed_tokens.weight" "$TMP/err" ||
    fail "no warning: $(cat "$TMP/err")"
$PY - "$TMP/e.json" "$TMP/e.msgpack" <<'PYEOF' || fail "non-finite tensors not listed in the outputs"
import json, sys, msgpack
want = [{"name": "model.embed_tokens.weight", "nonfinite": 1, "size": 1572864}]
j = json.load(open(sys.argv[1]))
assert j["nonfinite_tensors"] == want, j.get("nonfinite_tensors")
assert j["layers"][0]["channels"][0]["channel"] == 356
m = msgpack.unpackb(open(sys.argv[2], "rb").read(), raw=False)
assert m["model"]["nonfinite_tensors"] == want, m["model"].get("nonfinite_tensors")
PYEOF

# ---- trained-packed GGUF with 4 KB of random bytes mid-file
G="$TMP/rnd.gguf"
cp "$FIX/trained-packed/model.gguf" "$G"
SZ=$(stat -c %s "$G")
$PY - "$G" "$SZ" <<'PYEOF' || fail "damage gguf"
import random, sys
random.seed(7)
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2]) // 2)
    f.write(bytes(random.getrandbits(8) for _ in range(4096)))
PYEOF
"$BIN" run "$G" --prompt "Once upon" --generate 8 >"$TMP/out" 2>"$TMP/err" && fail "run on a damaged GGUF exited 0"
grep -q "blk.2.ffn_gate.weight: 160 of 176128 weights are NaN or Inf" "$TMP/err" || fail "run error: $(cat "$TMP/err")"
grep -q "<unk>" "$TMP/out" && fail "run printed garbage"
"$BIN" vocab-sweep "$G" -o "$TMP/v.msgpack" --json --quiet >"$TMP/out" 2>"$TMP/err" && fail "vocab-sweep exited 0"
grep -q "spike_fraction" "$TMP/out" && fail "vocab-sweep printed a fraction"
grep -q "blk.2.ffn_gate.weight" "$TMP/err" || fail "vocab-sweep error: $(cat "$TMP/err")"

# ---- analyze never leaves a folder that mixes two runs: a good run, then a damaged one
# into the same folder leaves it byte for byte as it was (and no OUT.partial); a second
# good run without figures removes the earlier run's figures.
A="$TMP/aout"
"$BIN" analyze "$FIX/stories260K/stories260K.bin" -o "$A" --no-plots -q 2>"$TMP/err" || fail "analyze: $(cat "$TMP/err")"
echo "earlier run" >"$A/fig_alpha.png"
echo "not ours" >"$A/notes.txt"
(cd "$A" && md5sum * >"$TMP/sums")
"$BIN" analyze "$G" -o "$A" --no-plots -q 2>"$TMP/err" && fail "analyze on a damaged GGUF exited 0"
grep -q "blk.2.ffn_gate.weight" "$TMP/err" || fail "analyze error: $(cat "$TMP/err")"
(cd "$A" && md5sum --quiet -c "$TMP/sums") || fail "a failed analyze changed the output folder"
[ "$(ls "$A" | wc -l)" -eq "$(wc -l <"$TMP/sums")" ] || fail "a failed analyze added files: $(ls "$A")"
[ -e "$A.partial" ] && fail "a failed analyze left $A.partial"
"$BIN" analyze "$FIX/stories260K/stories260K.bin" -o "$A/" --no-plots -q 2>"$TMP/err" || fail "analyze: $(cat "$TMP/err")"
[ -e "$A/fig_alpha.png" ] && fail "the earlier run's figure survived a new run"
[ -e "$A/notes.txt" ] || fail "analyze removed a file that is not its own"
[ -e "$A.partial" ] && fail "analyze left $A.partial"
# ---- f32 weights are multiplied where they lie, unchecked: a NaN in one still stops the
# pass, and the error names the tensor as well as the block it reached (synth's f32 model)
"$BIN" synth --preset tiny --dtype f32 -o "$TMP/f32" -q 2>"$TMP/err" || fail "synth: $(cat "$TMP/err")"
T32="$TMP/f32/model.safetensors"
HDR=$($PY -c "import struct,sys; print(8 + struct.unpack('<Q', open(sys.argv[1],'rb').read(8))[0])" "$T32")
OFF=$($PY -c "import json,sys; h=json.loads(open(sys.argv[1],'rb').read()[8:$HDR]); t=h['model.layers.0.mlp.down_proj.weight']; assert t['dtype']=='F32'; print(t['data_offsets'][0])" "$T32")
printf '\000\000\300\177' | dd of="$T32" bs=1 seek=$((HDR + OFF + 40)) conv=notrunc status=none
"$BIN" spikes "$TMP/f32" -o "$TMP/f.msgpack" --quiet 2>"$TMP/err" && fail "spikes on an f32 NaN weight exited 0"
[ "$(wc -l <"$TMP/err")" -eq 1 ] || fail "f32 NaN: the error is not one line: $(cat "$TMP/err")"
grep -q "after the FFN of layer 0.*model.layers.0.mlp.down_proj.weight: 1 of [0-9]* weights are NaN or Inf" "$TMP/err" ||
    fail "f32 NaN: the tensor is not named: $(cat "$TMP/err")"
[ -e "$TMP/f.msgpack" ] && fail "spikes wrote a result over an f32 NaN weight"

echo "cli-damaged: ok"
