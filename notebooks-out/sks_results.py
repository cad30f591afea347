"""sks_results.py - read sinkscope result files into Python objects with numpy arrays.

Every sinkscope analysis writes one msgpack file whose root is a map with `schema`
("sinkscope.<analysis>/<version>"), `model`, `params` and the results (docs/schema.md).
Large arrays are maps {dtype: "f32"|"f64"|"i32", shape: [...], data: <bin>} holding
little-endian bytes; `load` turns every such map, at any depth, into a numpy array of
that shape, and leaves everything else as plain dicts, lists, numbers and strings.

    import sks_results as R
    res = R.load_dir("demo-out")          # {"trace": {...}, "spikes": {...}, ...}
    alpha = res["trace"]["alpha"]         # numpy (L, H, n_alpha)

Only numpy and msgpack are needed.
"""

import json
import os
import sys

import msgpack
import numpy as np

_DTYPES = {"f32": "<f4", "f64": "<f8", "i32": "<i4", "i64": "<i8", "u8": "u1"}

# File names written by `sinkscope analyze` (one per analysis).
RESULT_FILES = {
    "trace": "trace.msgpack",
    "spikes": "spikes.msgpack",
    "vocab": "vocab.msgpack",
    "sinks": "sinks.msgpack",
}


def is_typed_array(x):
    """True for a {dtype, shape, data} map as written by the sinkscope writer."""
    return (isinstance(x, dict) and "dtype" in x and "shape" in x and "data" in x
            and isinstance(x["data"], (bytes, bytearray)) and x["dtype"] in _DTYPES)


def to_array(x):
    """Typed-array map -> numpy array (a copy, so it is writable)."""
    dt = np.dtype(_DTYPES[x["dtype"]])
    shape = tuple(int(s) for s in x["shape"])
    n = int(np.prod(shape)) if shape else 1
    if len(x["data"]) != n * dt.itemsize:
        raise ValueError("typed array: %d bytes for shape %s of %s" % (len(x["data"]), shape, x["dtype"]))
    return np.frombuffer(x["data"], dtype=dt, count=n).reshape(shape).astype(dt.newbyteorder("="))


def convert(x):
    """Recursively replace typed-array maps with numpy arrays."""
    if is_typed_array(x):
        return to_array(x)
    if isinstance(x, dict):
        return {k: convert(v) for k, v in x.items()}
    if isinstance(x, list):
        return [convert(v) for v in x]
    return x


def load(path):
    """Read one sinkscope msgpack file; typed arrays become numpy arrays."""
    with open(path, "rb") as f:
        raw = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    if not isinstance(raw, dict):
        raise ValueError("%s: root is not a map" % path)
    return convert(raw)


def load_dir(d, warn=True):
    """Every result file of an `analyze` folder: {"trace", "spikes", "vocab", "sinks",
    "summary", "kv_map"}; a missing or unreadable file gives None (and a warning)."""
    out = {"dir": d}
    for key, name in RESULT_FILES.items():
        p = os.path.join(d, name)
        out[key] = None
        if not os.path.exists(p):
            if warn:
                warning("%s not found" % p)
            continue
        try:
            out[key] = load(p)
        except Exception as e:  # a broken file must not stop the other figures
            warning("%s: %s" % (p, e))
    for key, name in (("summary", "summary.json"), ("kv_map", "kv_map.json")):
        p = os.path.join(d, name)
        out[key] = None
        if os.path.exists(p):
            try:
                with open(p) as f:
                    out[key] = json.load(f)
            except Exception as e:
                warning("%s: %s" % (p, e))
    return out


def warning(msg):
    print("sinkscope plots: warning: %s" % msg, file=sys.stderr)


def get(d, *names, default=None):
    """First present key among names (d may be None)."""
    if not isinstance(d, dict):
        return default
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def arr(x, dtype=float):
    """numpy array of a typed array, a list or a scalar (None stays None)."""
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return x
    if is_typed_array(x):
        return to_array(x)
    return np.asarray(x, dtype=dtype)


def block_label(b):
    """Block index -> 'emb', 'L3 attn', 'L3 ffn' (b = 0 embeddings, 2l+1 attn, 2l+2 ffn)."""
    b = int(b)
    if b == 0:
        return "emb"
    return "L%d %s" % ((b - 1) // 2, "attn" if b % 2 else "ffn")


def schema_name(res):
    """'sinkscope.trace/1' -> ('trace', 1); (None, None) when absent."""
    s = get(res, "schema")
    if not isinstance(s, str) or not s.startswith("sinkscope."):
        return None, None
    name, _, ver = s[len("sinkscope."):].partition("/")
    try:
        return name, int(ver)
    except ValueError:
        return name, None


def lifecycle_blocks(lc, which):
    """Step-up ("up") or step-down ("down") block indices of a trace lifecycle
    (`step_up` / `step_down`: lists of {block, kind, layer}, docs/schema-trace.md)."""
    v = get(lc, "step_" + which, which + "_blocks", default=[]) or []
    if isinstance(v, np.ndarray):
        return [int(b) for b in v.ravel()]
    out = []
    for e in v:
        out.append(int(e.get("block")) if isinstance(e, dict) else int(e))
    return out


def lifecycle_main_up(lc):
    """Block of the largest increase of a lifecycle (or -1)."""
    return int(get(lc, "main_step_up", "main_up", default=-1))


def vocab_view(vocab):
    """Flat view of a vocab-sweep result (docs/schema-vocab.md): ids, ratio, max_abs,
    channel (numpy arrays over the swept tokens), spike_fraction, n_spike, exceptions
    (ids), exception_pieces (list or None), ratio_thresh, abs_thresh. None if absent."""
    if not isinstance(vocab, dict):
        return None
    tok = get(vocab, "tokens")
    if not isinstance(tok, dict):
        tok = vocab
    ratio = arr(get(tok, "ratio"))
    if ratio is None:
        return None
    summ = get(vocab, "summary") or {}
    exc = get(vocab, "exceptions")
    if isinstance(exc, dict):
        exc_ids, exc_pieces = arr(get(exc, "ids", default=[]), int), get(exc, "pieces")
    else:
        exc_ids, exc_pieces = (arr(exc, int) if exc is not None else None), None
    ratio = ratio.astype(float).ravel()
    params = get(vocab, "params") or {}
    thr = get(params, "ratio")
    frac = get(summ, "spike_fraction", default=get(vocab, "spike_fraction"))
    return {
        "ids": arr(get(tok, "ids"), int),
        "ratio": ratio,
        "max_abs": arr(get(tok, "max_abs")),
        "channel": arr(get(tok, "argmax_channel", "channel"), int),
        "block": arr(get(tok, "argmax_block"), int),
        "spike_fraction": None if frac is None else float(frac),
        "n_spike": get(summ, "n_spike"),
        "exceptions": None if exc_ids is None else np.atleast_1d(exc_ids).astype(int),
        "exception_pieces": exc_pieces if isinstance(exc_pieces, list) else None,
        "ratio_thresh": None if thr is None else float(thr),
        "abs_thresh": get(params, "abs"),
        "top_channel": get(summ, "top_channel"),
    }
