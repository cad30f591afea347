#!/usr/bin/python3
"""plot_cost.py - figures of the cost analyses (matplotlib, Agg), from their msgpack files.

    /usr/bin/python3 plot_cost.py FILE.msgpack [OUT.png]

The figure depends on the file's schema (docs/schema-cost.md):
  sinkscope.quant-risk/1   fig_quant_risk.png: relative error by layer for each input
                           (int8-tensor, int4-token, fp8-e4m3; dashed: outliers kept),
                           and the perplexity by scheme (none kept / outliers kept)
  sinkscope.kv-eval/1      fig_kv_eval.png: perplexity and KV memory of each variant
  sinkscope.compare/1      fig_compare.png: peak |h| ratio, sink ratio, vocabulary spike
                           fraction and perplexity per model
OUT defaults to fig_<analysis>.png beside FILE. Reads only documented keys.
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sks_results as R  # noqa: E402

DPI = 110
SCHEME_COLORS = {"int8-tensor": "#d62728", "int8-token": "#ff7f0e", "int4-tensor": "#9467bd",
                 "int4-token": "#1f77b4", "fp8-e4m3": "#2ca02c"}


def _name(path):
    parts = [q for q in str(path).rstrip("/").split("/") if q]
    if not parts:
        return "model"
    name = parts[-1]
    if len(parts) > 1 and name.lower() in ("model", "models", "hf", "weights"):
        name = parts[-2] + "/" + name
    return name


def _finish(fig, title, path):
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def fig_quant_risk(res, path):
    sites, schemes, keeps = res["sites"], res["schemes"], res["keep_modes"]
    err = np.asarray(res["rel_err"])  # (L, sites, schemes, keep)
    L = err.shape[0]
    shown = [s for s in ("int8-tensor", "int4-token", "fp8-e4m3") if s in schemes]
    k_none, k_out = keeps.index("none"), keeps.index("outliers")
    fig, axes = plt.subplots(1, len(sites) + 1, figsize=(3.2 * (len(sites) + 1), 3.4))
    for si, site in enumerate(sites):
        ax = axes[si]
        for s in shown:
            q = schemes.index(s)
            ax.plot(range(L), 100 * err[:, si, q, k_none], "-o", ms=3, color=SCHEME_COLORS.get(s), label=s)
            ax.plot(range(L), 100 * err[:, si, q, k_out], "--", color=SCHEME_COLORS.get(s), alpha=0.7)
        ax.set_yscale("log")
        ax.set_title(site)
        ax.set_xlabel("layer")
        if si == 0:
            ax.set_ylabel("relative error % (dashed: outliers kept)")
            ax.legend(loc="best", fontsize=7)
    ax = axes[-1]
    e2e = res.get("end_to_end")
    if e2e:
        base = [e for e in e2e if e["scheme"] == "f32"][0]["perplexity"]
        names = [s for s in schemes]
        x = np.arange(len(names))
        for j, keep in enumerate(("none", "outliers")):
            v = [next((e["perplexity"] for e in e2e if e["scheme"] == s and e["keep"] == keep), np.nan)
                 for s in names]
            ax.bar(x + (j - 0.5) * 0.38, v, 0.38, label="%s kept" % keep, color=["#888888", "#4c72b0"][j])
        ax.axhline(base, color="k", lw=1, ls=":", label="f32 %.1f" % base)
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_title("perplexity by scheme")
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    return _finish(fig, "quant-risk: %s, spike channels %s" % (_name(res["model"].get("path", "")),
                                                                res.get("spike_channels")), path)


def fig_kv_eval(res, path):
    vs = res["variants"]
    names = [v["name"] for v in vs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    a1.bar(names, [v["perplexity"] for v in vs], color="#4c72b0")
    a1.set_ylabel("perplexity")
    a2.bar(names, [100 * v["kv_fraction"] for v in vs], color="#dd8452")
    a2.set_ylabel("KV memory, % of full")
    p = res["params"]
    return _finish(fig, "kv-eval: %s, W=%d, S=%d, windows of %d" % (
        _name(res["model"].get("path", "")), p["kv_window"], p["n_sink"], p["window"]), path)


def fig_compare(res, path):
    ms = res["models"]
    names = [_name(m["dir"]) for m in ms]
    panels = [("peak_ratio", "peak |h| / median"), ("peak_abs", "peak |h|"), ("sink_ratio", "sink heads %"),
              ("vocab_fraction", "vocab spike fraction"), ("perplexity", "perplexity")]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.2))
    for ax, (k, label) in zip(axes, panels):
        v = [m.get(k) if m.get(k) is not None else np.nan for m in ms]
        ax.bar(range(len(ms)), v, color="#4c72b0")
        ax.set_xticks(range(len(ms)))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        ax.set_title(label)
    return _finish(fig, "compare: %d models" % len(ms), path)


FIGS = {"sinkscope.quant-risk/1": ("fig_quant_risk.png", fig_quant_risk),
        "sinkscope.kv-eval/1": ("fig_kv_eval.png", fig_kv_eval),
        "sinkscope.compare/1": ("fig_compare.png", fig_compare)}


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    res = R.load(argv[1])
    schema = res.get("schema")
    if schema not in FIGS:
        print("plot_cost.py: %s: schema %r has no figure here" % (argv[1], schema), file=sys.stderr)
        return 1
    name, fn = FIGS[schema]
    out = argv[2] if len(argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(argv[1])), name)
    print(fn(res, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
