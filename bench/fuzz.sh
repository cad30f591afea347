#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets with clang and run each for SECONDS (default 600).
#   bench/fuzz.sh [SECONDS] [BUILD_DIR]
# Seeds: the stories260K fixtures when ../shared/fixtures exists. Crashing inputs land in
# BUILD_DIR/fuzz-artifacts/<target>/; replay one with BUILD_DIR/<target> FILE and add it
# to test/test-hostile.c. Prints the executions and the outcome of each target.
# SKS_FUZZ_TARGETS="fuzz-dequant" runs only the named targets.
set -u
SECS=${1:-600}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${2:-$SRC/build-fuzz}
FIX=${SKS_FIXTURES:-$SRC/../shared/fixtures}
# The library itself must carry coverage instrumentation, or libFuzzer sees no edges
# inside the parsers: fuzzer-no-link on every file, the fuzzer runtime only on targets.
cmake -S "$SRC" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DSKS_FUZZ=ON -DSKS_MPI=OFF \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" >/dev/null || exit 1
cmake --build "$BUILD" -j2 --target fuzz-safetensors fuzz-gguf fuzz-dequant >"$BUILD/fuzz-build.log" 2>&1 ||
  { tail -20 "$BUILD/fuzz-build.log"; exit 1; }
status=0
for t in ${SKS_FUZZ_TARGETS:-fuzz-safetensors fuzz-gguf fuzz-dequant}; do
  corpus=$BUILD/fuzz-corpus/$t; art=$BUILD/fuzz-artifacts/$t/
  mkdir -p "$corpus" "$art"
  # small complete files, so that mutations reach the span and overlap checks
  python3 - "$t" "$corpus" <<'PYEOF' 2>/dev/null
import struct, sys, json
t, d = sys.argv[1], sys.argv[2]
if t == "fuzz-safetensors":
    h = json.dumps({"__metadata__": {"format": "pt"},
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]},
                    "c": {"dtype": "F16", "shape": [0], "data_offsets": [16, 16]}}).encode()
    h += b" " * (-len(h) % 8)
    open(d + "/seed-small", "wb").write(struct.pack("<Q", len(h)) + h + bytes(16))
else:
    def s(x): return struct.pack("<Q", len(x)) + x.encode()
    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    kv += s("general.alignment") + struct.pack("<II", 4, 32)
    kv += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + s("a") + s("") + s("<0x0A>")
    kv += s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", 0.5, -1)
    kv += s("nested") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 5, 1) + struct.pack("<i", -7)
    ti = s("token_embd.weight") + struct.pack("<IQQIQ", 2, 32, 2, 8, 0)
    ti += s("output_norm.weight") + struct.pack("<IQIQ", 1, 32, 0, 96)
    b = b"GGUF" + struct.pack("<IQQ", 3, 2, 5) + kv + ti
    b += bytes(-len(b) % 32) + bytes(96 + 128)
    open(d + "/seed-small", "wb").write(b)
PYEOF
  if [ -d "$FIX" ]; then
    case $t in
      fuzz-safetensors)
        # the header of the real file (its first 16 KiB hold the JSON) and config.json
        head -c 16384 "$FIX/stories260K/stories260K.safetensors" > "$corpus/seed-stories" 2>/dev/null
        { printf '\x00\x00\x00\x00\x00\x00\x00\x00'; cat "$FIX/trained-llama/model/config.json"; } > "$corpus/seed-config" 2>/dev/null ;;
      fuzz-gguf)
        head -c 65536 "$FIX/stories260K/stories260K.gguf" > "$corpus/seed-stories" 2>/dev/null ;;
    esac
  fi
  log=$BUILD/$t.log
  "$BUILD/$t" -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="$art" -print_final_stats=1 "$corpus" >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  speed=$(grep -m1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
  if [ $rc -eq 0 ]; then res="no crash"; else res="FAILED (rc $rc, see $log and $art)"; status=1; fi
  echo "$t: ${SECS}s, executions ${execs:-?} (${speed:-?}/s), coverage ${cov:-?}: $res"
done
exit $status
