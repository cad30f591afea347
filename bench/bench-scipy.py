#!/usr/bin/python3
"""bench-scipy.py - the numpy/scipy way next to sinkscope, in the same run, on one layer.

One FFN layer (d 2048, f 5504 by default: random bf16 weights written by
`sinkscope synth --config`, layer 1 of 2, where nothing is planted) and a few channels
(the --channels best of sinkscope's screen). For each channel the top --rank eigenpairs by
|lambda| of S_k = 1/2 (G^T diag(D_k) U + U^T diag(D_k) G), three ways:

  dense   numpy: S_k formed in f64 (two GEMMs d x f x d) + numpy.linalg.eigh
  eigsh   scipy.sparse.linalg.eigsh (ARPACK) on a LinearOperator whose matvec is the
          four products G v, U v, G^T (D_k o U v), U^T (D_k o G v) in f64
  sks     `sinkscope spikes MODEL --layers 1 --channels ... --top-frob 0 --rank r`
          (its own eigen-part time from --json `seconds_eigs`, and the whole process)

Every method gets the same f64 copies of the same bf16 weights (bf16 is exact in f32 and
f64) and the same threads (OpenBLAS under numpy and sinkscope alike; set
OPENBLAS_CORETYPE as docs/benchmarks.md says for this CPU). The eigenvalues of eigsh and
sinkscope are compared with the dense ones; the dgemm rate of numpy (2048^3) in the same
run is the yardstick.

Prerequisites (not part of scripts/install-deps.sh: this benchmark is not run by CI):
/usr/bin/python3 with Debian's python3-numpy and python3-scipy, a built sinkscope, and
~0.3 GB of disk for the model (deleted afterwards unless --keep).

Usage: /usr/bin/python3 bench/bench-scipy.py [--sinkscope build/sinkscope] [--d 2048]
       [--f 5504] [--channels 4] [--rank 4] [--dense-channels 2] [--keep DIR]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
import scipy.sparse.linalg as sla


def read_safetensors(path, names):
    """The named tensors of one safetensors file as f64 arrays (bf16/f32/f16 only)."""
    out = {}
    with open(path, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        head = json.loads(fh.read(n))
        base = 8 + n
        for name in names:
            t = head[name]
            a, b = t["data_offsets"]
            fh.seek(base + a)
            raw = fh.read(b - a)
            if t["dtype"] == "BF16":
                x = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif t["dtype"] == "F32":
                x = np.frombuffer(raw, dtype=np.float32)
            elif t["dtype"] == "F16":
                x = np.frombuffer(raw, dtype=np.float16)
            else:
                raise SystemExit("bench-scipy: %s: dtype %s not handled" % (name, t["dtype"]))
            out[name] = x.astype(np.float64).reshape(t["shape"])
    return out


def dgemm_rate(n=2048, reps=3):
    a = np.random.default_rng(1).standard_normal((n, n))
    b = np.random.default_rng(2).standard_normal((n, n))
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t) * 1e-9)
    return best


def top_by_magnitude(w, r):
    return w[np.argsort(-np.abs(w), kind="stable")[:r]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sinkscope", default="build/sinkscope")
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--f", type=int, default=5504)
    ap.add_argument("--channels", type=int, default=4, help="channels compared (the screen's best)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--dense-channels", type=int, default=2, help="channels for the dense way (slowest)")
    ap.add_argument("--keep", default=None, help="write the model here and keep it")
    a = ap.parse_args()

    tmp = a.keep or tempfile.mkdtemp(prefix="bench-scipy-")
    model = os.path.join(tmp, "model")
    cfg = {"model_type": "llama", "hidden_size": a.d, "intermediate_size": a.f, "num_hidden_layers": 2,
           "num_attention_heads": a.d // 128, "num_key_value_heads": a.d // 128, "head_dim": 128,
           "vocab_size": 256, "tie_word_embeddings": True,
           "planted": {"step_up_layer": 0, "step_down_layer": 2}}
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([a.sinkscope, "synth", "--config", os.path.join(tmp, "config.json"), "--dtype", "bf16",
                        "-o", model, "--quiet"], check=True)

    print("bench-scipy: numpy %s, scipy %s, d %d, f %d, layer 1 (random bf16, nothing planted), top-%d"
          % (np.__version__, scipy.__version__, a.d, a.f, a.rank))
    rate = dgemm_rate()
    print("  numpy dgemm (2048^3)       %8.1f GFLOP/s (same run; the machine's yardstick)" % rate)

    # sinkscope: the screen picks the channels, then the eigenpairs of exactly those
    base = [a.sinkscope, "spikes", model, "--layers", "1", "--rank", str(a.rank), "--tokens", "1,17,42",
            "--no-first-token-map", "--no-delimiter", "--quiet", "--json", "-o", os.path.join(tmp, "s.msgpack")]
    pick = subprocess.run(base + ["--top-frob", str(a.channels)], check=True, capture_output=True, text=True)
    L = json.loads(pick.stdout)["layers"][0]
    chans = [c["channel"] for c in L["channels"]][: a.channels]
    t0 = time.perf_counter()
    run = subprocess.run(base + ["--top-frob", "0", "--channels", ",".join(map(str, chans))], check=True,
                         capture_output=True, text=True)
    t_sks_proc = time.perf_counter() - t0
    L = json.loads(run.stdout)["layers"][0]
    sks_ev = {c["channel"]: np.array(c["eigenvalues"][: a.rank]) for c in L["channels"]}
    t_sks = L["seconds_eigs"]

    # the same weights for numpy
    st = os.path.join(model, "model.safetensors")
    pre = "model.layers.1.mlp."
    W = read_safetensors(st, [pre + "gate_proj.weight", pre + "up_proj.weight", pre + "down_proj.weight"])
    G, U, Dn = W[pre + "gate_proj.weight"], W[pre + "up_proj.weight"], W[pre + "down_proj.weight"]
    d, f = a.d, a.f

    # dense: S_k formed, then eigh (all d eigenpairs: what numpy offers)
    ref = {}
    t_dense = 0.0
    for k in chans[: a.dense_channels]:
        t = time.perf_counter()
        M = G.T @ (Dn[k][:, None] * U)
        S = 0.5 * (M + M.T)
        w = np.linalg.eigh(S)[0]
        t_dense += time.perf_counter() - t
        ref[k] = top_by_magnitude(w, a.rank)
    t_dense /= max(1, min(a.dense_channels, len(chans)))

    # eigsh on the implicit operator (ARPACK, f64, tol 1e-10 relative)
    t_eigsh = 0.0
    eig_ev = {}
    for k in chans:
        Dk = Dn[k]

        def mv(v, Dk=Dk):
            return 0.5 * (G.T @ (Dk * (U @ v)) + U.T @ (Dk * (G @ v)))

        def mm(V, Dk=Dk):
            return 0.5 * (G.T @ (Dk[:, None] * (U @ V)) + U.T @ (Dk[:, None] * (G @ V)))

        op = sla.LinearOperator((d, d), matvec=mv, matmat=mm, dtype=np.float64)
        t = time.perf_counter()
        w, _ = sla.eigsh(op, k=a.rank, which="LM", tol=1e-10)
        t_eigsh += time.perf_counter() - t
        eig_ev[k] = top_by_magnitude(w, a.rank)
    t_eigsh /= len(chans)
    t_sks_ch = t_sks / len(chans)

    def err(ev):
        e = 0.0
        for k, r in ref.items():
            e = max(e, float(np.max(np.abs(ev[k] - r) / np.abs(r))))
        return e

    print("  channels %s" % chans)
    print("  dense S_k + numpy.linalg.eigh  %8.3f s / channel (%d channels)" % (t_dense, len(ref)))
    print("  scipy eigsh, LinearOperator    %8.3f s / channel   max rel. eigenvalue error vs dense %.1e"
          % (t_eigsh, err(eig_ev)))
    print("  sinkscope spikes (eigen part)  %8.3f s / channel   max rel. eigenvalue error vs dense %.1e"
          % (t_sks_ch, err(sks_ev)))
    print("  sinkscope whole process        %8.3f s for %d channels (model open, forward on 3 tokens, screen of all"
          " %d channels, eigenpairs)" % (t_sks_proc, len(chans), d))
    print("  ratio dense / sinkscope        %8.1fx" % (t_dense / t_sks_ch))
    print("  ratio eigsh / sinkscope        %8.1fx" % (t_eigsh / t_sks_ch))
    if not a.keep:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
