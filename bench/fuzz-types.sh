#!/usr/bin/env bash
# fuzz-types.sh - run fuzz-gguf-types once per tensor type, SECONDS each (default 600),
# JOBS at a time (default 2), at the lowest priority.
#   bench/fuzz-types.sh [SECONDS] [JOBS] [TYPE...]
# Default types: every quantized type except Q8_0 and Q4_0 (fuzzed with the loaders).
# SKS_FUZZ_BUILD (default build-fuzz/) holds the clang build; SKS_FUZZ_OUT (default
# BUILD/fuzz-types/) the per-type corpus, crash artifacts and logs, and summary.txt with
# one line per type: executions, rate, coverage, outcome and the load average at the end.
# Replay a crash with SKS_FUZZ_TYPE=T BUILD/fuzz-gguf-types FILE (docs/fuzzing.md).
set -u
SECS=${1:-600}
JOBS=${2:-2}
shift $(($# > 2 ? 2 : $#))
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SKS_FUZZ_BUILD:-$SRC/build-fuzz}
OUT=${SKS_FUZZ_OUT:-$BUILD/fuzz-types}
TYPES=${*:-Q4_1 Q5_0 Q5_1 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ4_NL IQ4_XS IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M TQ1_0 TQ2_0 MXFP4}
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DSKS_FUZZ=ON -DSKS_MPI=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null || exit 1
cmake --build "$BUILD" -j2 --target fuzz-gguf-types >"$BUILD/fuzz-types-build.log" 2>&1 ||
  { tail -20 "$BUILD/fuzz-types-build.log"; exit 1; }
mkdir -p "$OUT"

run_one() { # TYPE
  local t=$1 corpus=$OUT/corpus-$1 art=$OUT/artifacts-$1/ log=$OUT/$1.log
  mkdir -p "$corpus" "$art"
  # seeds: small well-formed inputs of the type (the header bytes of fuzz-gguf-types.c),
  # and up to 4 rows of 256 elements of a real tensor of the type from the files
  # llama-quantize wrote (test/data/llama-quant), once with the quantizer part on
  python3 - "$corpus" "$t" "$SRC/test/data/llama-quant" <<'PYEOF'
import glob, os, random, struct, sys
d, tname, real = sys.argv[1], sys.argv[2], sys.argv[3]
rnd = random.Random(7)
def seed(name, h, payload):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        open(p, "wb").write(bytes([0]) + bytes(h) + payload)
blob = bytes(rnd.randrange(256) for _ in range(4096))
# 2 rows of one block each, alignment 32, all rows converted
seed("seed-2d", [1 | 4, 5, 1, 0, 2, 0, 1, 1, 0, 0, 0, 0x80, 0, 30, 0], blob[:600])
# one row of 4 blocks, default alignment, quantizer on 1 KiB
seed("seed-1d-quant", [0 | 32, 0, 4, 0, 1, 0, 1, 1, 0, 0, 0, 1, 3, 33, 0], blob[:2048])
# 3-D with ne2 = 1, small alignment, offset 8, rows 1..2
seed("seed-3d-al8", [2 | 4, 3, 2, 0, 4, 0, 1, 1, 1, 0x80, 1, 2, 0, 20, 0], blob)
# ggml type id, elements and bytes per block
TY = {"Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34),
      "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
      "Q6_K": (14, 256, 210), "IQ2_XXS": (16, 256, 66), "IQ2_XS": (17, 256, 74), "IQ3_XXS": (18, 256, 98),
      "IQ1_S": (19, 256, 50), "IQ4_NL": (20, 32, 18), "IQ3_S": (21, 256, 110), "IQ2_S": (22, 256, 82),
      "IQ4_XS": (23, 256, 136), "IQ1_M": (29, 256, 56), "TQ1_0": (34, 256, 54), "TQ2_0": (35, 256, 66)}
if tname not in TY:
    sys.exit(0)
tid, blk, bb = TY[tname]
SZ = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def tensors(b):
    """(name, ne, type, absolute offset) of each tensor of a GGUF v3 image."""
    pos = 24
    n_t, n_kv = struct.unpack_from("<QQ", b, 8)
    def rd_str():
        nonlocal pos
        n, = struct.unpack_from("<Q", b, pos); pos += 8 + n
        return b[pos - n:pos].decode()
    def skip(ty):
        nonlocal pos
        if ty == 8: rd_str()
        elif ty == 9:
            et, n = struct.unpack_from("<IQ", b, pos); pos += 12
            for _ in range(n): skip(et)
        else: pos += SZ[ty]
    align = 32
    for _ in range(n_kv):
        k = rd_str(); ty, = struct.unpack_from("<I", b, pos); pos += 4
        if k == "general.alignment": align, = struct.unpack_from("<I", b, pos)
        skip(ty)
    out = []
    for _ in range(n_t):
        name = rd_str(); nd, = struct.unpack_from("<I", b, pos); pos += 4
        ne = struct.unpack_from("<%dQ" % nd, b, pos); pos += 8 * nd
        ty, off = struct.unpack_from("<IQ", b, pos); pos += 12
        out.append((name, ne, ty, off))
    base = (pos + align - 1) // align * align
    return [(n, ne, ty, base + off) for n, ne, ty, off in out]
for f in sorted(glob.glob(os.path.join(real, "model-*.gguf"))):
    b = open(f, "rb").read()
    for name, ne, ty, off in tensors(b):
        if ty != tid or len(ne) != 2 or ne[0] != 256:
            continue
        rowb = 256 // blk * bb
        rows = min(4, ne[1])
        for q in (0, 32):
            h = [1 | 4 | q, 5, 256 // blk, 0, rows, 0, 1, 1, 0, 0, 0, 0x80, 1, 30, 0]
            seed("seed-real-%s-%d" % (os.path.basename(f)[6:-5], q), h, b[off:off + rows * rowb])
        break
PYEOF
  SKS_FUZZ_TYPE=$t nice -n 19 "$BUILD/fuzz-gguf-types" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 \
    -timeout=20 -artifact_prefix="$art" -print_final_stats=1 "$corpus" >"$log" 2>&1
  local rc=$?
  local execs speed cov per load
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  speed=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  per=$(grep -m1 "^fuzz-gguf-types: $t " "$log" | sed "s/^fuzz-gguf-types: $t //")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local res="no crash"
  [ $rc -eq 0 ] || res="FAILED (rc $rc, see $log and $art)"
  echo "$t: ${SECS}s, executions ${execs:-?} (${speed:-?}/s), coverage ${cov:-?}: $res; $per; load $load; ended $(date -u +%H:%M)" >>"$OUT/summary.txt"
}

# JOBS at a time: start the next type as soon as one ends
for t in $TYPES; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  run_one "$t" &
done
wait
cat "$OUT/summary.txt"
