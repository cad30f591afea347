#!/usr/bin/python3
"""msgpack-compare.py A B [--ignore KEY ...]: decode two sinkscope result files and
compare them exactly (every number bitwise, bins byte for byte), ignoring the map keys
named with --ignore at any depth (timings). Exit 0 when equal, 1 with the first
difference printed. Used by test/cli-mpi.sh and test/cli-resume.sh."""
import math, struct, sys
import msgpack

def diff(a, b, ign, path="$"):
    if type(a) != type(b):
        return f"{path}: type {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        ka = {k for k in a if k not in ign}
        kb = {k for k in b if k not in ign}
        if ka != kb:
            return f"{path}: keys differ: {sorted(map(str, ka ^ kb))}"
        for k in a:
            if k in ign:
                continue
            d = diff(a[k], b[k], ign, f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, ign, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float):
        if struct.pack("<d", a) != struct.pack("<d", b) and not (math.isnan(a) and math.isnan(b)):
            return f"{path}: {a!r} vs {b!r}"
        return None
    if a != b:
        return f"{path}: {str(a)[:80]} vs {str(b)[:80]}"
    return None

def main():
    args = sys.argv[1:]
    ign = set()
    files = []
    i = 0
    while i < len(args):
        if args[i] == "--ignore":
            ign.add(args[i + 1])
            i += 2
        else:
            files.append(args[i])
            i += 1
    if len(files) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    objs = []
    for f in files:
        with open(f, "rb") as fh:
            objs.append(msgpack.unpackb(fh.read(), raw=False, strict_map_key=False))
    d = diff(objs[0], objs[1], ign)
    if d:
        print(f"{files[0]} vs {files[1]}: {d}")
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
