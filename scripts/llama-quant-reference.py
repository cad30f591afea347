#!/usr/bin/env python3
"""llama-quant-reference.py - expected dequantized values of GGUF files, from llama.cpp's
own numpy dequantizer (gguf-py: gguf.GGUFReader and gguf.quants.dequantize), the
independent reference of test-gguf-types' real-file test.

  PYTHONPATH=LLAMA_CPP/gguf-py python3 scripts/llama-quant-reference.py -o EXPECTED.json FILE.gguf ...

For each file: the tensor-type mix (per ggml type name: tensors, elements, bytes; the
overall bits per weight), and for each tensor its type, shape (rows, columns), the
FNV-1a 64-bit hash of the little-endian bytes of all its float32 values in row-major
order, their sum in float64 (for messages), and the first 16 values of its first and
last rows as float32 bit patterns (8 hex digits each, concatenated), so that a mismatch can be located.
Files are named by their base name; the test finds them beside EXPECTED.json.
"""
import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
    from gguf import quants
except ImportError:
    sys.exit("llama-quant-reference.py: gguf-py not found (set PYTHONPATH to llama.cpp's gguf-py)")

FNV_OFFSET, FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3


def fnv1a64(b: bytes) -> int:
    h = FNV_OFFSET
    for x in b:
        h = ((h ^ x) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def hexrow(v: np.ndarray) -> str:
    return "".join("%08x" % int(u) for u in v.astype(np.float32).view(np.uint32))


def one_file(path: str) -> dict:
    r = gguf.GGUFReader(path)
    mix = {}
    tensors = []
    tot_el = tot_by = 0
    for t in r.tensors:
        tname = t.tensor_type.name
        m = mix.setdefault(tname, [0, 0, 0])
        m[0] += 1
        m[1] += int(t.n_elements)
        m[2] += int(t.n_bytes)
        tot_el += int(t.n_elements)
        tot_by += int(t.n_bytes)
        x = quants.dequantize(t.data, t.tensor_type)
        x = np.ascontiguousarray(x, dtype=np.float32)
        ne = [int(v) for v in t.shape]  # innermost first
        cols = ne[0]
        rows = int(t.n_elements) // cols
        x = x.reshape(rows, cols)
        tensors.append({
            "name": t.name,
            "type": tname,
            "shape": [rows, cols],
            "fnv1a64": "%016x" % fnv1a64(x.astype("<f4").tobytes()),
            "sum": float(np.sum(x, dtype=np.float64)),
            "row0": hexrow(x[0, :16]),
            "row_last": hexrow(x[rows - 1, :16]),
        })
    return {
        "file": os.path.basename(path),
        "mix": mix,
        "bpw": 8.0 * tot_by / tot_el,
        "tensors": tensors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    out = {
        "reference": "gguf-py (llama.cpp) GGUFReader + gguf.quants.dequantize, numpy %s" % np.__version__,
        "files": [one_file(f) for f in a.files],
    }
    with open(a.output, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
