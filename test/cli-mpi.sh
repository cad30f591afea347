#!/usr/bin/env bash
# cli-mpi.sh BINARY SOURCE_DIR FIXTURES_DIR - `mpirun -np N sinkscope ...` gives the
# single-process result.
#
# On synthesized models (`tiny`, `demo`): spikes (layers dealt out to the ranks; with
# fewer layers than ranks, one layer's screen row blocks and channel blocks instead),
# vocab-sweep (vocabulary slices, whole and --sample), sinks (layers dealt out, gathered
# and classified on rank 0; with spike tokens and with the position-0 fallback) and
# analyze --no-plots (spikes, vocab and sinks distributed) with 2 and 3 ranks against
# one process; spikes on a mixture of experts (layers dealt, one MoE layer split). Sinks
# also: its --kv-map and --json outputs, and that the layers really were split (each
# rank logs its layers under SKS_MPI_VERBOSE=1).
# The files are decoded and compared exactly (every number bitwise, arrays byte for
# byte), ignoring only the timing keys. Every run uses one BLAS thread: OpenBLAS sums
# in a thread-count-dependent order, and mpirun binds each rank to one core, so a
# single-process run with more threads differs in the last bits (docs/scale.md).
# Also: only rank 0 prints (one --json line), a bad option fails on every rank, and a
# command that does not split its work (inspect) runs once.
# Exit 77 when mpirun is missing or BINARY was built without MPI.
set -u
BIN=$1
SRC=$2
PY=/usr/bin/python3
command -v mpirun >/dev/null 2>&1 || { echo "mpirun not found: skipped"; exit 77; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-mpi.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export OPENBLAS_NUM_THREADS=1
# containers: no ssh/rsh launcher, shared memory without CMA
export OMPI_MCA_plm=isolated OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1
MPI=(mpirun --allow-run-as-root --oversubscribe -x OPENBLAS_NUM_THREADS)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

"$PY" -c "import msgpack" 2>/dev/null || fail "$PY lacks msgpack: run scripts/install-deps.sh"
CMP="$PY $SRC/test/msgpack-compare.py --ignore seconds --ignore seconds_screen --ignore seconds_eigs"

"$BIN" synth --preset tiny -o "$TMP/tiny" --quiet >/dev/null 2>&1 || fail "synth tiny"
"$BIN" synth --preset demo -o "$TMP/demo" --quiet >/dev/null 2>&1 || fail "synth demo"

# MPI in the binary? The version line says so (counting printed summaries under mpirun
# is not enough: two unsynchronised ranks can interleave their output lines).
if "$BIN" --version | grep -q "MPI disabled"; then
    echo "the binary was built without MPI: skipped"
    exit 77
fi
# With MPI, only rank 0 prints its summary.
lines=$("${MPI[@]}" -np 2 "$BIN" vocab-sweep "$TMP/tiny" -o "$TMP/probe.msgpack" --json -q 2>"$TMP/probe.err" |
    grep -c '"schema"')
[ "$lines" = 1 ] || fail "mpirun -np 2 vocab-sweep --json printed $lines summaries, want 1 ($(cat "$TMP/probe.err"))"

# same NAME ARGS...: one process, then 2 and 3 ranks, results equal
same() {
    local name=$1
    shift
    "$BIN" "$@" -o "$TMP/$name-1.msgpack" -q 2>"$TMP/$name-1.err" || fail "$name, one process: $(cat "$TMP/$name-1.err")"
    for np in 2 3; do
        "${MPI[@]}" -np $np "$BIN" "$@" -o "$TMP/$name-$np.msgpack" -q >"$TMP/$name-$np.out" 2>"$TMP/$name-$np.err" ||
            fail "$name, $np ranks: $(tail -5 "$TMP/$name-$np.err")"
        $CMP "$TMP/$name-1.msgpack" "$TMP/$name-$np.msgpack" || fail "$name: $np ranks differ from one process"
    done
    echo "$name: 1, 2 and 3 ranks equal"
}

same spikes-demo spikes "$TMP/demo" --layers 0-7 --top-frob 3 --rank 4
same spikes-tiny-default spikes "$TMP/tiny" --abs 5 --ratio 20
same spikes-demo-2layers spikes "$TMP/demo" --layers 1,6 --channels 26,29 --top-frob 1
# one layer, fewer layers than ranks: the layer itself is split (screen row blocks and
# eigensolver channel blocks dealt to the ranks), f64 (auto on demo) and f32 operators
same spikes-demo-1layer spikes "$TMP/demo" --layers 1 --top-frob 6 --channel-block 2
same spikes-demo-1layer-f32 spikes "$TMP/demo" --layers 5 --top-frob 5 --channel-block 2 --precision f32

# ... and the ranks really split it: under SKS_MPI_VERBOSE=1 each rank names its row
# blocks and channel blocks; per kind they are disjoint, together all of them, and no
# rank ran them all. The result still equals one process.
for np in 2 3; do
    SKS_MPI_VERBOSE=1 "${MPI[@]}" -x SKS_MPI_VERBOSE -np $np "$BIN" spikes "$TMP/demo" --layers 1 --top-frob 6 \
        --channel-block 2 -o "$TMP/split-$np.msgpack" -q >/dev/null 2>"$TMP/split-$np.err" ||
        fail "spikes one layer, $np ranks, verbose: $(tail -5 "$TMP/split-$np.err")"
    $CMP "$TMP/spikes-demo-1layer-1.msgpack" "$TMP/split-$np.msgpack" ||
        fail "spikes one layer, $np ranks, verbose: differs from one process"
    $PY - "$TMP/split-$np.err" $np <<'EOF' || fail "spikes one layer under $np ranks: not split ($(grep 'spikes: rank' "$TMP/split-$np.err"))"
import re, sys
size = int(sys.argv[2])
got = {}
for line in open(sys.argv[1]):
    m = re.match(r"spikes: rank (\d+) of (\d+): layer (\d+): (row|channel) blocks of (\d+):(.*)$", line.strip())
    if m:
        r, n, layer, nb = int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(5))
        assert n == size and layer == 1, line
        kind = got.setdefault(m.group(4), {})
        assert r not in kind, line
        kind[r] = (nb, [int(x) for x in m.group(6).split()])
assert sorted(got) == ["channel", "row"], sorted(got)
for name, kind in got.items():
    assert sorted(kind) == list(range(size)), (name, sorted(kind))
    nb = kind[0][0]
    assert nb >= 2, (name, nb)  # enough blocks to split
    every = sorted(b for _, bs in kind.values() for b in bs)
    assert every == list(range(nb)), (name, every)  # each block on exactly one rank
    assert all(len(bs) < nb for _, bs in kind.values()), name  # no rank ran them all
EOF
done
echo "spikes one layer under 2 and 3 ranks: row and channel blocks split, equal to one process"
# mixture of experts (synth mixtral, 4 experts top-2, f_e = 512: two screen row blocks):
# layers dealt out (each MoE layer's result with every expert's forms travels whole),
# and one MoE layer split: every expert's form and the active form each split into row
# and channel blocks. Under SKS_MPI_VERBOSE each of the 5 forms shows both kinds split.
echo '{"preset": "mixtral-tiny", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4,
       "num_attention_heads": 6, "num_key_value_heads": 2}' >"$TMP/moe.json"
"$BIN" synth --config "$TMP/moe.json" -o "$TMP/moe" --quiet >/dev/null 2>&1 || fail "synth mixtral"
same spikes-moe spikes "$TMP/moe" --layers 0-3 --top-frob 3 --rank 3
same spikes-moe-1layer spikes "$TMP/moe" --layers 1 --top-frob 4 --rank 3 --channel-block 2
SKS_MPI_VERBOSE=1 "${MPI[@]}" -x SKS_MPI_VERBOSE -np 2 "$BIN" spikes "$TMP/moe" --layers 1 --top-frob 4 --rank 3 \
    --channel-block 2 -o "$TMP/moe-split.msgpack" -q >/dev/null 2>"$TMP/moe-split.err" ||
    fail "spikes one MoE layer, 2 ranks, verbose: $(tail -5 "$TMP/moe-split.err")"
$CMP "$TMP/spikes-moe-1layer-1.msgpack" "$TMP/moe-split.msgpack" || fail "spikes one MoE layer, verbose: differs"
$PY - "$TMP/moe-split.err" "$TMP/moe-split.msgpack" <<'EOF' || fail "one MoE layer under 2 ranks: not split ($(grep 'spikes: rank' "$TMP/moe-split.err"))"
import re, sys, msgpack
calls = {}
for line in open(sys.argv[1]):
    m = re.match(r"spikes: rank (\d+) of 2: layer 1: (row|channel) blocks of (\d+):(.*)$", line.strip())
    if m:
        calls.setdefault((int(m.group(1)), m.group(2)), []).append((int(m.group(3)), m.group(4).split()))
# 4 experts + the active form, each with both kinds of blocks on both ranks, none all
for key in [(r, k) for r in (0, 1) for k in ("row", "channel")]:
    assert len(calls.get(key, [])) == 5, (key, len(calls.get(key, [])))
    for nb, bs in calls[key]:
        assert nb >= 2 and 0 < len(bs) < nb, (key, nb, bs)
sp = msgpack.unpackb(open(sys.argv[2], "rb").read(), raw=False, strict_map_key=False)
assert len(sp["layers"][0]["moe"]["per_expert"]) == 4
EOF
echo "spikes on a mixture of experts: layers dealt, one MoE layer split (5 forms, row and channel blocks)"
same vocab-demo vocab-sweep "$TMP/demo"
same vocab-demo-sample vocab-sweep "$TMP/demo" --sample 1000 --seed 7
same vocab-tiny vocab-sweep "$TMP/tiny"
same sinks-tiny sinks "$TMP/tiny"
same sinks-demo sinks "$TMP/demo" --abs 5 --ratio 20
same sinks-demo-norope sinks "$TMP/demo" --abs 5 --ratio 20 --rank-by margin_norope --eps 0.2

# sinks under 3 ranks: every rank analysed its own layers (disjoint, together all of
# them), and the kv map and the --json summary equal the one-process ones
"$BIN" sinks "$TMP/demo" --abs 5 --ratio 20 -o "$TMP/sv-1.msgpack" --kv-map "$TMP/kv-1.json" --json -q \
    >"$TMP/sv-1.json" 2>"$TMP/sv-1.err" || fail "sinks --kv-map, one process: $(cat "$TMP/sv-1.err")"
SKS_MPI_VERBOSE=1 "${MPI[@]}" -x SKS_MPI_VERBOSE -np 3 "$BIN" sinks "$TMP/demo" --abs 5 --ratio 20 -o "$TMP/sv-3.msgpack" \
    --kv-map "$TMP/kv-3.json" --json -q >"$TMP/sv-3.json" 2>"$TMP/sv-3.err" ||
    fail "sinks --kv-map, 3 ranks: $(tail -5 "$TMP/sv-3.err")"
$CMP "$TMP/sv-1.msgpack" "$TMP/sv-3.msgpack" || fail "sinks --kv-map run: 3 ranks differ from one process"
cmp -s "$TMP/kv-1.json" "$TMP/kv-3.json" || fail "sinks: the kv map under 3 ranks differs from one process"
# with SKS_MPI_VERBOSE every rank prints, but only rank 0 prints the summary
[ "$(grep -c '"schema"' "$TMP/sv-3.json")" = 1 ] || fail "sinks --json under 3 ranks: not one summary"
cmp -s "$TMP/sv-1.json" "$TMP/sv-3.json" || fail "sinks: the --json summary under 3 ranks differs from one process"
$PY - "$TMP/sv-3.err" 3 <<'EOF' || fail "sinks under 3 ranks: the layers were not split ($(grep 'sinks: rank' "$TMP/sv-3.err"))"
import re, sys
size = int(sys.argv[2])
got = {}
for line in open(sys.argv[1]):
    m = re.match(r"sinks: rank (\d+) of (\d+): (\d+) of (\d+) layers:(.*)$", line.strip())
    if m:
        r, n, k, L = map(int, m.group(1, 2, 3, 4))
        layers = [int(x) for x in m.group(5).split()]
        assert n == size and k == len(layers) and r not in got, line
        got[r] = (L, layers)
assert sorted(got) == list(range(size)), sorted(got)
L = got[0][0]
every = sorted(l for _, ls in got.values() for l in ls)
assert every == list(range(L)), every  # each layer on exactly one rank
assert all(len(ls) < L for _, ls in got.values())  # no rank ran them all
EOF
echo "sinks under 3 ranks: layers split, kv map and summary equal"

# the spikes file holds every selected layer, in order, once
$PY - "$TMP/spikes-demo-3.msgpack" <<'EOF' || fail "spikes under 3 ranks: layers not 0..7 in order"
import msgpack, sys
d = msgpack.unpackb(open(sys.argv[1], "rb").read())
assert [L["layer"] for L in d["layers"]] == list(range(8)), [L["layer"] for L in d["layers"]]
EOF

# spikes --resume under 2 ranks from the parts of a one-process run: every layer is read
# back (rank 0 reports its 4), none recomputed, and the file equals the reference. The
# parts are left complete by a run whose final rename fails (the output is a folder).
mkdir -p "$TMP/res.msgpack"
"$BIN" spikes "$TMP/demo" --layers 0-7 --top-frob 3 --rank 4 -o "$TMP/res.msgpack" -q 2>/dev/null &&
    fail "writing over a folder succeeded"
[ "$(ls "$TMP/res.msgpack.parts"/layer-*.msgpack | wc -l)" = 8 ] || fail "the failed run did not leave 8 parts"
rmdir "$TMP/res.msgpack"
"${MPI[@]}" -np 2 "$BIN" spikes "$TMP/demo" --layers 0-7 --top-frob 3 --rank 4 -o "$TMP/res.msgpack" --resume \
    >/dev/null 2>"$TMP/res.err" || fail "resume under 2 ranks: $(tail -3 "$TMP/res.err")"
grep -q "spikes: 4 layer(s) resumed" "$TMP/res.err" || fail "rank 0 did not resume its 4 layers: $(grep resumed "$TMP/res.err")"
grep -q "eigenpairs" "$TMP/res.err" && fail "a layer was recomputed on resume under 2 ranks"
$CMP "$TMP/spikes-demo-1.msgpack" "$TMP/res.msgpack" || fail "resume under 2 ranks differs from one process"
[ -d "$TMP/res.msgpack.parts" ] && fail "parts left after the resumed MPI run"
echo "spikes --resume under 2 ranks: equal, nothing recomputed"

# analyze: the stages under 2 ranks write the single-process files
"$BIN" analyze "$TMP/demo" -o "$TMP/an1" --no-plots -q --abs 5 --ratio 20 2>"$TMP/an1.err" ||
    fail "analyze, one process: $(tail -3 "$TMP/an1.err")"
"${MPI[@]}" -np 2 "$BIN" analyze "$TMP/demo" -o "$TMP/an2" --no-plots -q --abs 5 --ratio 20 >/dev/null 2>"$TMP/an2.err" ||
    fail "analyze, 2 ranks: $(tail -3 "$TMP/an2.err")"
for f in trace spikes vocab sinks; do
    $CMP "$TMP/an1/$f.msgpack" "$TMP/an2/$f.msgpack" || fail "analyze $f.msgpack: 2 ranks differ from one process"
done
echo "analyze: 2 ranks equal"

# only rank 0 prints; a bad option fails on every rank (mpirun exits non-zero)
n=$("${MPI[@]}" -np 3 "$BIN" spikes "$TMP/tiny" --layers 0-3 --top-frob 1 -o "$TMP/j.msgpack" --json -q 2>/dev/null |
    grep -c '"schema"')
[ "$n" = 1 ] || fail "spikes --json under 3 ranks printed $n summaries, want 1"
"${MPI[@]}" -np 2 "$BIN" spikes "$TMP/tiny" --rank 0 -o "$TMP/bad.msgpack" >/dev/null 2>&1 &&
    fail "a bad option under mpirun exited 0"
[ -e "$TMP/bad.msgpack" ] && fail "a failed run wrote its output"
# a command that does not split its work runs once, on rank 0
n=$("${MPI[@]}" -np 3 "$BIN" inspect "$TMP/tiny" 2>/dev/null | grep -c '^model')
[ "$n" = 1 ] || fail "inspect under 3 ranks printed its table $n times, want 1"
echo "cli-mpi: ok"
