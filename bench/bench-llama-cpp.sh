#!/usr/bin/env bash
# bench-llama-cpp.sh - prompt processing against llama.cpp on the same GGUF files, same
# thread count, measured alternately in one run (the machine may be shared: compare
# within a round). Not part of CI.
#
#   LLAMA_CPP_DIR=/path/outside/the/repo bash bench/bench-llama-cpp.sh [BUILD_DIR]
#
# llama.cpp: $LLAMA_CPP_DIR/build/bin/llama-bench is used when it exists. Otherwise the
# sources are taken from $LLAMA_CPP_DIR when it holds a llama.cpp checkout, or else from
# the npm package node-llama-cpp (npm pack, then package/llama/gitRelease.bundle is
# cloned into $LLAMA_CPP_DIR), and llama-bench is built there (Release, native CPU).
#
# Models: `sinkscope synth --config` of a Llama shape (d 2048, f 5632, 8 layers, 32
# heads / 4 KV heads of 64, vocabulary 4096, untied: 369.1M parameters) written by the
# project's GGUF writer in each type of $TYPES. llama.cpp refuses a file without
# tokenizer.ggml.model; the script adds "no_vocab" to the copy that both programs read
# (llama.cpp then makes <arch>.vocab_size placeholder tokens; sinkscope ignores it).
#
# Per round and type, in this order: sinkscope's forward pass (bench-forward: 512
# tokens, logits at the last position as llama-bench computes them, one pass after a
# warm-up; it measures the sgemm rate at 2048^3 in the same process), llama-bench
# (pp512: one prompt decode after a warm-up, -t $THREADS), and the whole `sinkscope
# trace` process on the same 512 token ids (model open, forward pass with the
# residual statistics and the attention-probability hook, a second pass for the
# lifecycles of the spikes it finds, the analysis). OpenBLAS runs $THREADS threads.
#
# Environment: LLAMA_CPP_DIR (required), THREADS (2), ROUNDS (3), TYPES ("f16 q8_0
# q4_k_m"), T (512), WORK (models and logs; default a temporary folder, removed).
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a folder outside the repository (llama.cpp is built or reused there)}"
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
TYPES=${TYPES:-f16 q8_0 q4_k_m}
T=${T:-512}
PY=${PYTHON:-python3}
case "$(cd "$(dirname "$LLAMA_CPP_DIR")" 2>/dev/null && pwd)/" in
"$SRC"/*) echo "bench-llama-cpp: LLAMA_CPP_DIR must be outside the repository" >&2; exit 2 ;;
esac

LB=$LLAMA_CPP_DIR/build/bin/llama-bench
if [ ! -x "$LB" ]; then
  if [ ! -f "$LLAMA_CPP_DIR/CMakeLists.txt" ]; then
    PK=$(mktemp -d)
    (cd "$PK" && npm pack node-llama-cpp --silent >/dev/null)
    tar -xzf "$PK"/node-llama-cpp-*.tgz -C "$PK" package/llama/gitRelease.bundle
    git -c advice.detachedHead=false clone --quiet "$PK/package/llama/gitRelease.bundle" "$LLAMA_CPP_DIR"
    rm -rf "$PK"
  fi
  cmake -S "$LLAMA_CPP_DIR" -B "$LLAMA_CPP_DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$LLAMA_CPP_DIR/build" --target llama-bench -j "$(nproc)" >/dev/null
fi
cmake --build "$BUILD" --target sinkscope bench-forward >/dev/null

if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
cat >"$WORK/config.json" <<EOF
{"preset": "tiny", "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
 "num_hidden_layers": 8, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 64,
 "vocab_size": 4096, "tie_word_embeddings": false, "max_position_embeddings": 2048}
EOF
# A copy of a GGUF file with tokenizer.ggml.model = "no_vocab" appended to the metadata;
# tensor infos and data are copied as they are (data offsets are relative to the
# aligned data section, which is padded anew).
cat >"$WORK/no-vocab.py" <<'EOF'
import struct, sys
src, dst = sys.argv[1], sys.argv[2]
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
f = open(src, "rb")
buf = bytearray()
pos = 0
def take(n):
    global pos
    while pos + n > len(buf):
        more = f.read(1 << 20)
        if not more:
            sys.exit("no-vocab: %s: truncated metadata" % src)
        buf.extend(more)
    pos += n
    return bytes(buf[pos - n:pos])
def num(fmt):
    return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]
def skip_value(t):
    if t == 8:
        take(num("Q"))
    elif t == 9:
        at, n = num("I"), num("Q")
        for _ in range(n):
            skip_value(at)
    else:
        return take(SIZES[t])
magic, version, n_tensors, n_kv = struct.unpack("<4sIQQ", take(24))
if magic != b"GGUF" or version < 2:
    sys.exit("no-vocab: %s: not a GGUF v2/v3 file" % src)
align = 32
for _ in range(n_kv):
    key = take(num("Q"))
    t = num("I")
    v = skip_value(t)
    if key == b"general.alignment":
        align = struct.unpack("<I", v)[0]
    if key == b"tokenizer.ggml.model":
        sys.exit("no-vocab: %s already names a tokenizer" % src)
kv_end = pos
for _ in range(n_tensors):
    take(num("Q"))
    take(8 * num("I"))
    take(12)
info_end = pos
key, val = b"tokenizer.ggml.model", b"no_vocab"
kv = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(val)) + val
pad = -(info_end + len(kv)) % align
with open(dst, "wb") as g:
    g.write(struct.pack("<4sIQQ", magic, version, n_tensors, n_kv + 1))
    g.write(buf[24:kv_end] + kv + buf[kv_end:info_end] + b"\0" * pad)
    f.seek(-(-info_end // align) * align)
    while True:
        chunk = f.read(1 << 24)
        if not chunk:
            break
        g.write(chunk)
EOF
for t in $TYPES; do
  if [ ! -f "$WORK/$t.gguf" ]; then
    "$BUILD/sinkscope" synth --config "$WORK/config.json" --format gguf --dtype "$t" -o "$WORK/m-$t" --quiet >/dev/null
    "$PY" "$WORK/no-vocab.py" "$WORK/m-$t/model.gguf" "$WORK/$t.gguf"
    rm -rf "$WORK/m-$t"
  fi
done
IDS=$("$PY" -c "import sys; n=int(sys.argv[1]); print(','.join(['1'] + [str(i * 2654435761 % 4096) for i in range(1, n)]))" "$T")

export OPENBLAS_NUM_THREADS=$THREADS
: >"$WORK/runs.txt"
for r in $(seq "$ROUNDS"); do
  for t in $TYPES; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    fw=$("$BUILD/bench-forward" --model "$WORK/$t.gguf" --T "$T" --reps 1 --logits last 2>/dev/null | tail -1)
    ll=$("$LB" -m "$WORK/$t.gguf" -p "$T" -n 0 -t "$THREADS" -r 1 -o csv 2>/dev/null | tail -1)
    t0=$(date +%s.%N)
    "$BUILD/sinkscope" trace "$WORK/$t.gguf" --tokens "$IDS" -q >/dev/null 2>&1
    t1=$(date +%s.%N)
    "$PY" - "$r" "$t" "$load" "$fw" "$ll" "$t0" "$t1" >>"$WORK/runs.txt" <<'EOF'
import csv, json, sys
r, t, load, fw, ll, t0, t1 = sys.argv[1:]
j = json.loads(fw)
row = next(csv.reader([ll]))
avg_ns = float(row[-4])  # llama-bench csv: ..., avg_ns, stddev_ns, avg_ts, stddev_ts
print(r, t, load, j["seconds"], j["cpu_seconds"], j["sgemm_gflops"], avg_ns / 1e9, float(t1) - float(t0))
EOF
    tail -1 "$WORK/runs.txt" | awk -v th="$THREADS" '{printf "round %s %-7s load %5s  sinkscope forward %7.3f s  llama.cpp pp %7.3f s  ratio %.2f  trace process %7.3f s  sgemm %6.1f GFLOP/s (%s threads)\n", $1, $2, $3, $4, $7, $7 / $4, $8, $6, th}'
  done
done
"$PY" - "$WORK/runs.txt" "$T" <<'EOF'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
T = int(sys.argv[2])
print("\nmedians over %d rounds (T = %d; ratio = llama.cpp time / sinkscope time, >= 1: sinkscope as fast or faster)"
      % (len({r[0] for r in rows}), T))
print("%-8s %10s %10s %7s %12s %12s %9s %13s %11s" % ("type", "forward s", "llama s", "ratio", "ratio range",
      "trace proc s", "trace/fw", "sgemm GFLOP/s", "load"))
for t in dict.fromkeys(r[1] for r in rows):
    v = [r for r in rows if r[1] == t]
    fw = [float(r[3]) for r in v]; ll = [float(r[6]) for r in v]; tr = [float(r[7]) for r in v]
    ratios = [b / a for a, b in zip(fw, ll)]
    print("%-8s %10.3f %10.3f %7.2f %12s %12.3f %9.2f %13.1f %11s" % (t, st.median(fw), st.median(ll), st.median(ratios),
          "%.2f-%.2f" % (min(ratios), max(ratios)), st.median(tr), st.median(tr) / st.median(fw),
          st.median(float(r[5]) for r in v), "%.1f-%.1f" % (min(float(r[2]) for r in v), max(float(r[2]) for r in v))))
EOF
