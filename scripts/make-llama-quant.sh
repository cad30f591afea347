#!/usr/bin/env bash
# make-llama-quant.sh - GGUF files written by llama.cpp's own llama-quantize, and their
# expected values from llama.cpp's numpy dequantizer, for test-gguf-types.
#   scripts/make-llama-quant.sh SINKSCOPE LLAMA_CPP OUTDIR
# SINKSCOPE: the sinkscope binary; LLAMA_CPP: a llama.cpp checkout with llama-quantize
# built in build/bin and gguf-py; OUTDIR: where model-TYPE.gguf and expected.json go
# (test/data/llama-quant in the repository).
#
# 1. sinkscope synth writes a small llama in F16 (d 256 so that the K-quants and
#    i-quants apply to rows of 256; attn_output and ffn_down rows of 32 take llama.cpp's
#    fallback types; 3 layers, the fewest synth plants its mechanism in; 166k weights).
# 2. The i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M need an importance matrix (and
#    IQ3_XXS / IQ3_S, whose mix puts IQ2_S on some tensors of a model this small);
#    llama-imatrix needs a tokenizer the synthetic model does not have, so a uniform one
#    (every column weight 1, legacy .dat layout) is written here: the files are still
#    llama.cpp's quantizer's output, with equal weight on every column.
# 3. llama-quantize makes each type; gguf-py's reader and dequantizer write expected.json
#    (scripts/llama-quant-reference.py).
set -eu
SKS=$1
LL=$2
OUT=$3
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/cfg.json" <<'EOF'
{"hidden_size": 256, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
 "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 64, "tie_word_embeddings": true}
EOF
"$SKS" synth --config "$TMP/cfg.json" --seed 11 --format gguf --dtype f16 -q -o "$TMP/f16" >/dev/null
SRC=$TMP/f16/model.gguf

PYTHONPATH=$LL/gguf-py /usr/bin/python3 - "$SRC" "$TMP/uniform.imatrix" <<'PYEOF'
import struct, sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
ents = [(t.name, int(t.shape[0])) for t in r.tensors if len(t.shape) == 2]
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<i", len(ents)))
    for name, cols in ents:
        b = name.encode()
        f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", 1, cols) + struct.pack("<%df" % cols, *([1.0] * cols)))
    ds = b"uniform"
    f.write(struct.pack("<ii", 1, len(ds)) + ds)
PYEOF

TYPES=${SKS_LLAMA_QUANT_TYPES:-Q4_K_M Q5_K_M Q6_K Q3_K_M Q2_K Q4_K_S IQ4_XS IQ4_NL Q4_1 Q5_0 Q5_1 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S IQ1_M TQ1_0 TQ2_0}
files=()
for t in $TYPES; do
  im=()
  case $t in IQ1_* | IQ2_* | IQ3_*) im=(--imatrix "$TMP/uniform.imatrix") ;; esac
  f=$OUT/model-$t.gguf
  "$LL/build/bin/llama-quantize" "${im[@]}" "$SRC" "$f" "$t" 1 >"$TMP/q-$t.log" 2>&1 ||
    { tail -5 "$TMP/q-$t.log"; exit 1; }
  files+=("$f")
done
PYTHONPATH=$LL/gguf-py /usr/bin/python3 "$(dirname "$0")/llama-quant-reference.py" -o "$OUT/expected.json" "${files[@]}"
du -ch "${files[@]}" "$OUT/expected.json" | tail -1
