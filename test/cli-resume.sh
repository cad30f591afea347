#!/usr/bin/env bash
# cli-resume.sh BINARY SOURCE_DIR FIXTURES_DIR - resumable `sinkscope spikes` runs.
#
# 1. an uninterrupted run on the synthesized `demo` model (8 layers) is the reference,
#    and leaves no OUT.parts folder behind;
# 2. a second run is killed with SIGKILL as soon as its first layer part appears: the
#    output is then absent (or, if the run had already finished, a valid file), and
#    every part file left is complete msgpack;
# 3. --resume skips exactly the layers whose parts were there (its log names each), and
#    its result equals the reference (every number bitwise; timings ignored);
# 4. --resume with other parameters is refused with a clear error (exit 1) naming the
#    differing parameter; a corrupt part file is a clear error naming the file.
set -u
BIN=$1
SRC=$2
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-resume.XXXXXX")
PID=
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$TMP"' EXIT
# same BLAS thread count in every run: the bitwise comparison depends on it
export OPENBLAS_NUM_THREADS=1

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
. "$SRC/test/interrupt.sh"

"$PY" -c "import msgpack" 2>/dev/null || fail "$PY lacks msgpack: run scripts/install-deps.sh"
CMP="$PY $SRC/test/msgpack-compare.py --ignore seconds_screen --ignore seconds_eigs"

"$BIN" synth --preset demo -o "$TMP/demo" --quiet >/dev/null 2>&1 || fail "synth --preset demo"
ARGS=(spikes "$TMP/demo" --layers 0-7 --top-frob 6 --rank 4)

# 1. reference
"$BIN" "${ARGS[@]}" -o "$TMP/ref.msgpack" -q 2>"$TMP/ref.log" || fail "reference run: $(cat "$TMP/ref.log")"
[ -d "$TMP/ref.msgpack.parts" ] && fail "the parts folder is left behind after a finished run"
$PY -c "import msgpack,sys; d=msgpack.unpackb(open(sys.argv[1],'rb').read()); assert len(d['layers'])==8" \
    "$TMP/ref.msgpack" || fail "reference result does not hold 8 layers"

# 2. kill after the first part file
OUT=$TMP/run.msgpack
# a run that won the race: its output must be complete
on_finished() { $CMP "$TMP/ref.msgpack" "$1" || fail "a run that finished before the kill wrote a different result"; }
sks_interrupt "$OUT" "layer-*.msgpack" 3 "$BIN" "${ARGS[@]}" -o "$OUT"
case $? in
1) fail "could not interrupt a run in 3 attempts (each finished before SIGKILL)" ;;
2) fail "the run died without output" ;;
esac
[ -e "$OUT" ] && fail "the killed run left $OUT"
ls "$OUT".tmp.* >/dev/null 2>&1 && echo "note: a temporary file of the killed write is left: $(ls "$OUT".tmp.*)"
parts=$(cd "$OUT.parts" && ls layer-*.msgpack 2>/dev/null | sed -E 's/layer-0*([0-9]+)\.msgpack/\1/' | sort -n | tr '\n' ' ')
[ -n "$parts" ] || fail "no part file after the kill"
[ -s "$OUT.parts/manifest.txt" ] || fail "no manifest in $OUT.parts"
for p in $OUT.parts/layer-*.msgpack; do
    $PY -c "import msgpack,sys; msgpack.unpackb(open(sys.argv[1],'rb').read())" "$p" ||
        fail "part $p is not complete msgpack"
done
echo "killed with layers [ $parts] finished"

# 4a. other parameters: refused, parts untouched
cp -r "$OUT.parts" "$TMP/saved.parts"
"$BIN" spikes "$TMP/demo" --layers 0-7 --top-frob 6 --rank 3 -o "$OUT" --resume -q 2>"$TMP/bad.log"
rc=$?
[ $rc = 1 ] || fail "--resume with another --rank: exit $rc, want 1"
grep -q "other parameters" "$TMP/bad.log" || fail "--resume mismatch message: $(cat "$TMP/bad.log")"
grep -q "rank=3" "$TMP/bad.log" || fail "--resume mismatch does not name the parameter: $(cat "$TMP/bad.log")"
[ -e "$OUT" ] && fail "a refused resume wrote $OUT"
diff -r "$TMP/saved.parts" "$OUT.parts" >/dev/null || fail "a refused resume changed the parts"

# 3. resume (with the leftover of a write that a kill interrupted, which must go too)
touch "$OUT.parts/layer-0005.msgpack.tmp.12345"
"$BIN" "${ARGS[@]}" -o "$OUT" --resume 2>"$TMP/resume.log" || fail "resume: $(tail -3 "$TMP/resume.log")"
for l in $parts; do
    grep -q "layer $l: resumed from its part file" "$TMP/resume.log" || fail "layer $l was recomputed on --resume"
done
n=$(echo $parts | wc -w)
grep -q "spikes: $n layer(s) resumed" "$TMP/resume.log" || fail "resume count: $(grep resumed "$TMP/resume.log")"
computed=$(grep -c "eigenpairs" "$TMP/resume.log")
[ "$computed" = $((8 - n)) ] || fail "resume computed $computed layers, want $((8 - n))"
$CMP "$TMP/ref.msgpack" "$OUT" || fail "the resumed result differs from the uninterrupted run"
[ -d "$OUT.parts" ] && fail "the parts folder is left after the resumed run"

# 4b. a corrupt part: a clear error naming the file, no output
rm -f "$OUT"
cp -r "$TMP/saved.parts" "$OUT.parts"
first=$(ls "$OUT.parts"/layer-*.msgpack | head -1)
head -c 100 "$TMP/saved.parts/$(basename "$first")" >"$first"
"$BIN" "${ARGS[@]}" -o "$OUT" --resume -q 2>"$TMP/corrupt.log"
rc=$?
[ $rc = 1 ] || fail "corrupt part: exit $rc, want 1 ($(cat "$TMP/corrupt.log"))"
grep -q "$(basename "$first")" "$TMP/corrupt.log" || fail "corrupt part: message does not name it: $(cat "$TMP/corrupt.log")"
[ -e "$OUT" ] && fail "a failed resume wrote $OUT"

# without --resume the old parts are discarded and the run is complete
"$BIN" "${ARGS[@]}" -o "$OUT" -q 2>"$TMP/fresh.log" || fail "fresh run over old parts: $(cat "$TMP/fresh.log")"
$CMP "$TMP/ref.msgpack" "$OUT" || fail "a fresh run over old parts differs"
# 5. --max-memory: a bound below the smallest setting stops before any work with the
#    estimate; a tight bound (0.2 MiB above the smallest setting that the refusal names:
#    f32 operator, one channel per block; it grows with the solver's threads) still gives
#    the reference within the f32 eigen tolerance (1e-6 relative residual: eigenvalues to
#    1e-5 of lambda*), the same channels and the same screen to 1e-5.
"$BIN" "${ARGS[@]}" -o "$TMP/mm.msgpack" --max-memory 1M -q 2>"$TMP/mm.log"
rc=$?
[ $rc = 1 ] || fail "--max-memory 1M: exit $rc, want 1"
grep -q "too small.*need at least" "$TMP/mm.log" || fail "--max-memory 1M message: $(cat "$TMP/mm.log")"
[ -e "$TMP/mm.msgpack" ] && fail "--max-memory too small wrote a result"
MIN=$(sed -n 's/.*need at least \([0-9.]*\) MiB.*/\1/p' "$TMP/mm.log")
[ -n "$MIN" ] || fail "--max-memory 1M names no smallest size in MiB: $(cat "$TMP/mm.log")"
TIGHT=$(awk -v m="$MIN" 'BEGIN { printf "%.1fM", m + 0.2 }')
"$BIN" "${ARGS[@]}" -o "$TMP/mm.msgpack" --max-memory "$TIGHT" 2>"$TMP/mm.log" || fail "--max-memory $TIGHT: $(cat "$TMP/mm.log")"
grep -q "workspaces about" "$TMP/mm.log" || fail "--max-memory $TIGHT does not report its estimate"
$PY - "$TMP/ref.msgpack" "$TMP/mm.msgpack" <<'EOF' || fail "--max-memory $TIGHT result is not the reference within f32 tolerance"
import msgpack, sys, numpy as np
a, b = (msgpack.unpackb(open(f, "rb").read()) for f in sys.argv[1:3])
assert len(a["layers"]) == len(b["layers"]) == 8
for La, Lb in zip(a["layers"], b["layers"]):
    assert [c["channel"] for c in La["channels"]] == [c["channel"] for c in Lb["channels"]]
    fa, fb = (np.frombuffer(L["frobenius"]["data"], "<f8") for L in (La, Lb))
    assert np.max(np.abs(fa - fb) / np.abs(fa)) < 1e-5
    for ca, cb in zip(La["channels"], Lb["channels"]):
        ea, eb = (np.frombuffer(c["eigenvalues"]["data"], "<f8") for c in (ca, cb))
        assert np.max(np.abs(ea - eb)) < 1e-5 * abs(ea[0]), (ea, eb)
EOF

# 6. vocab-sweep: per-batch parts, killed after the first, resumed, equal to the reference
VARGS=(vocab-sweep "$TMP/demo" --batch 64)
"$BIN" "${VARGS[@]}" -o "$TMP/vref.msgpack" -q 2>"$TMP/vref.log" || fail "vocab reference: $(cat "$TMP/vref.log")"
[ -d "$TMP/vref.msgpack.parts" ] && fail "vocab: the parts folder is left behind after a finished run"
VOUT=$TMP/vrun.msgpack
on_finished() { $CMP --ignore seconds "$TMP/vref.msgpack" "$1" || fail "vocab: a run that won the race differs"; }
sks_interrupt "$VOUT" "batch-*.msgpack" 5 "$BIN" "${VARGS[@]}" -o "$VOUT" -q
case $? in
1) fail "vocab: could not interrupt a run in 5 attempts" ;;
2) fail "vocab: the run died without output" ;;
esac
nb=$(ls "$VOUT.parts"/batch-*.msgpack | wc -l)
"$BIN" vocab-sweep "$TMP/demo" --batch 32 -o "$VOUT" --resume -q 2>"$TMP/vbad.log"
[ $? = 1 ] && grep -q "other parameters" "$TMP/vbad.log" || fail "vocab --resume with another --batch: $(cat "$TMP/vbad.log")"
"$BIN" "${VARGS[@]}" -o "$VOUT" --resume 2>"$TMP/vres.log" || fail "vocab resume: $(tail -3 "$TMP/vres.log")"
grep -q "vocab-sweep: $nb batch(es) resumed" "$TMP/vres.log" ||
    fail "vocab resume: want $nb batches resumed, log says: $(grep resumed "$TMP/vres.log")"
$CMP --ignore seconds "$TMP/vref.msgpack" "$VOUT" || fail "vocab: the resumed result differs from the uninterrupted run"
[ -d "$VOUT.parts" ] && fail "vocab: parts left after the resumed run"
echo "vocab-sweep: killed after $nb of 64 batches, resumed, equal"

echo "cli-resume: ok (killed after layers [ $parts], resumed, equal to the uninterrupted run)"
