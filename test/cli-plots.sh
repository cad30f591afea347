#!/usr/bin/env bash
# cli-plots.sh BINARY SOURCE_DIR FIXTURES_DIR - the Python side on its own: the typed-array
# reader (notebooks-out/sks_results.py) against hand-packed msgpack, and make_report.py's
# exit status on folders without results. Needs no model and no fixture.
set -u
SRC=$2
PY=/usr/bin/python3
"$PY" -c "import numpy, matplotlib, msgpack" 2>/dev/null || {
    echo "FAIL: $PY lacks numpy/matplotlib/msgpack: run scripts/install-deps.sh" >&2
    exit 1
}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/sks-plots.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

"$PY" - "$SRC/notebooks-out" "$TMP" <<'EOF' || exit 1
import os, struct, sys
import msgpack
import numpy as np
sys.path.insert(0, sys.argv[1])
import sks_results as R
tmp = sys.argv[2]

# typed arrays written byte by byte (little-endian, row-major), as the C writer does
f32 = {"dtype": "f32", "shape": [2, 3], "data": struct.pack("<6f", 1, -2, 3.5, 4, 5, 1e30)}
f64 = {"dtype": "f64", "shape": [3], "data": struct.pack("<3d", 0.1, float("nan"), -7.25)}
i32 = {"dtype": "i32", "shape": [2, 2], "data": struct.pack("<4i", -1, 2, 2**31 - 1, -2**31)}
empty = {"dtype": "f64", "shape": [0], "data": b""}
root = {"schema": "sinkscope.test/3", "model": {"n_layers": 2}, "params": {"eps": 0.3},
        "a": f32, "nested": {"list": [f64, {"deep": i32}], "empty": empty}, "plain": [1, 2]}
p = os.path.join(tmp, "x.msgpack")
open(p, "wb").write(msgpack.packb(root, use_bin_type=True))
r = R.load(p)
a = r["a"]
assert a.shape == (2, 3) and a.dtype == np.float32, (a.shape, a.dtype)
assert a[0, 1] == -2 and a[1, 2] == np.float32(1e30) and a[0, 2] == 3.5
d = r["nested"]["list"][0]
assert d.dtype == np.float64 and d[0] == 0.1 and np.isnan(d[1]) and d[2] == -7.25
i = r["nested"]["list"][1]["deep"]
assert i.dtype == np.int32 and i.tolist() == [[-1, 2], [2**31 - 1, -2**31]]
assert r["nested"]["empty"].shape == (0,)
assert r["plain"] == [1, 2]
a[0, 0] = 9  # arrays are writable copies, not views of the file buffer
assert R.schema_name(r) == ("test", 3)

# a size that disagrees with the shape is an error, not a silent reshape
bad = dict(root, a={"dtype": "f32", "shape": [2, 3], "data": b"\0" * 20})
open(p, "wb").write(msgpack.packb(bad, use_bin_type=True))
try:
    R.load(p)
    raise SystemExit("FAIL: 20 bytes accepted for (2, 3) f32")
except ValueError as e:
    assert "shape" in str(e)

# block labels and lifecycle blocks in both documented spellings
assert [R.block_label(b) for b in (0, 1, 2, 7)] == ["emb", "L0 attn", "L0 ffn", "L3 attn"]
lc = {"step_up": [{"block": 4, "kind": "ffn", "layer": 1}], "step_down": [], "main_step_up": 4}
assert R.lifecycle_blocks(lc, "up") == [4] and R.lifecycle_blocks(lc, "down") == [] and R.lifecycle_main_up(lc) == 4

# load_dir: missing files are None, a broken one is None with a warning, never an exception
d = os.path.join(tmp, "dir")
os.makedirs(d)
open(os.path.join(d, "trace.msgpack"), "wb").write(b"\x85\xa6schema")  # truncated map
res = R.load_dir(d, warn=False)
assert res["trace"] is None and res["sinks"] is None and res["summary"] is None
print("sks_results ok")
EOF

# make_report.py: usage error 2, a folder without results 1 (and no report), no traceback
"$PY" "$SRC/notebooks-out/make_report.py" >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL: make_report.py without arguments must exit 2" >&2; exit 1; }
mkdir -p "$TMP/none"
"$PY" "$SRC/notebooks-out/make_report.py" "$TMP/none" 2>"$TMP/none.log"
[ $? -eq 1 ] || { echo "FAIL: make_report.py on an empty folder must exit 1" >&2; exit 1; }
[ ! -e "$TMP/none/report.html" ] || { echo "FAIL: report.html written without results" >&2; exit 1; }
grep -q Traceback "$TMP/none.log" && { echo "FAIL: traceback: $(cat "$TMP/none.log")" >&2; exit 1; }
echo "cli-plots: all checks passed"
