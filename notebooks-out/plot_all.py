#!/usr/bin/python3
"""plot_all.py - the six figures of a sinkscope result folder (matplotlib, Agg).

    /usr/bin/python3 plot_all.py DIR          # writes DIR/fig_*.png

Each figure function takes the dict of `sks_results.load_dir(DIR)` and an output path,
returns the path it wrote, or None (with a warning on stderr) when the results it
needs are absent. The figures and how to read them are described in docs/guide.md.

  fig_lifecycle.png    trace: max |h| per block (log), spike channels, median |h|,
                       step-up / step-down blocks          (rise - plateau - fall)
  fig_spectrum.png     spikes: |lambda_i| of S_k for the top spike channels
  fig_alpha.png        sinks/trace: layer x head heat map of alpha_0, sink heads marked
  fig_alignment.png    sinks: each geometric predictor against measured alpha_0 (AUC)
  fig_vocab.png        vocab: histogram of per-token spike ratios at position 0
  fig_delimiters.png   spikes: tokens ranked by ||n_v|| / median ||n_v||
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sks_results as R  # noqa: E402

DPI = 110
SPIKE_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

plt.rcParams.update({
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "figure.titlesize": 12,
})


def _model_tag(res):
    """'llama, 8 layers x 6 heads, d=384' for titles."""
    for k in ("trace", "sinks", "spikes", "vocab"):
        m = R.get(res.get(k), "model")
        if isinstance(m, dict):
            parts = [q for q in str(m.get("path", "")).rstrip("/").split("/") if q]
            name = parts[-1] if parts else m.get("family", "model")
            if len(parts) > 1 and (len(name) < 6 or name.lower() in ("model", "models", "hf", "weights")):
                name = parts[-2] + "/" + name  # "trained-llama/model" says more than "model"
            return "%s (%s, %s layers, %s heads, d=%s)" % (name, m.get("family", "?"), m.get("n_layers", "?"),
                                                         m.get("n_heads", "?"), m.get("d_model", "?"))
    return ""


def _save(fig, path):
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _log_xticks(ax, lo, hi):
    """Readable tick labels on a log x axis that spans few decades (1-2-5 steps)."""
    if not (lo > 0 and hi > lo) or np.log10(hi / lo) > 3:
        return
    ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
             for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    if len(ticks) >= 2:
        ax.set_xticks(ticks)
        ax.set_xticklabels(["%g" % t for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _param(res_part, *names, default=None):
    return R.get(R.get(res_part, "params"), *names, default=default)


# --------------------------------------------------------------------------------------
# (1) lifecycle
# --------------------------------------------------------------------------------------

def lifecycle_data(trace):
    """Per-block arrays and per spike channel curves from a trace result."""
    blocks = R.get(trace, "blocks")
    if not blocks:
        return None
    blocks = sorted(blocks, key=lambda b: int(b.get("block", 0)))
    idx = np.array([int(b.get("block", i)) for i, b in enumerate(blocks)])
    max_abs = np.array([float(b.get("max_abs", np.nan)) for b in blocks])
    med = np.array([float(b.get("median_abs", np.nan)) for b in blocks])
    chans = [int(c) for c in np.atleast_1d(R.arr(R.get(trace, "spike_channels", default=[]), int))]
    cm = R.arr(R.get(trace, "channel_max"))
    lcs = R.get(trace, "lifecycles", default=[]) or []
    curves = []  # (label, |values| per block, lifecycle or None)
    seen = set()
    for lc in lcs:
        v = R.arr(R.get(lc, "values"))
        if v is None or len(v) != len(idx):
            continue
        key = (int(R.get(lc, "token", default=-1)), int(R.get(lc, "channel", default=-1)))
        if key in seen:
            continue
        seen.add(key)
        curves.append(("channel %d, token %d" % (key[1], key[0]), np.abs(v.astype(float)), lc))
    covered = {c for (_, c) in seen}
    if cm is not None and cm.ndim == 2 and cm.shape[0] == len(idx):
        for c in chans:
            if c not in covered and 0 <= c < cm.shape[1]:
                curves.append(("channel %d (max over tokens)" % c, np.abs(cm[:, c].astype(float)), None))
    curves.sort(key=lambda t: -np.nanmax(t[1]) if len(t[1]) else 0)
    fallback = False
    if not curves and cm is not None and cm.ndim == 2 and cm.shape[0] == len(idx):
        # no spike channel passed the thresholds: show the channels that come closest
        fallback = True
        for c in np.argsort(-np.max(np.abs(cm), axis=0))[:3]:
            curves.append(("channel %d (largest, below threshold)" % c, np.abs(cm[:, c].astype(float)), None))
    return {"idx": idx, "max_abs": max_abs, "median": med, "curves": curves, "fallback": fallback}


def fig_lifecycle(res, path):
    trace = res.get("trace")
    data = lifecycle_data(trace) if trace else None
    if data is None:
        R.warning("lifecycle figure skipped: trace.msgpack (blocks) absent")
        return None
    idx, curves = data["idx"], data["curves"]
    fig, ax = plt.subplots(figsize=(10, 5.2))
    # wide translucent band so the spike channel curves drawn on top stay visible
    ax.plot(idx, data["max_abs"], color="black", lw=5, alpha=0.25, solid_capstyle="round",
            label="max |h| over all tokens and channels", zorder=2)
    ax.plot(idx, data["median"], color="0.55", lw=1.6, ls="--", label="median |h| of the block")
    ratio = _param(trace, "ratio")
    if ratio:
        ax.plot(idx, data["median"] * float(ratio), color="0.7", lw=1, ls=":",
                label="spike threshold: %g x median" % float(ratio))
    shown = curves[:6]
    for i, (lab, v, lc) in enumerate(shown):
        col = SPIKE_COLORS[i % len(SPIKE_COLORS)]
        ax.plot(idx, np.maximum(v, 1e-30), color=col, lw=1.8, marker="o", ms=3, zorder=4,
                ls="--" if data["fallback"] else "-", label=("" if data["fallback"] else "spike ") + lab)
        if lc is not None:
            ups = R.lifecycle_blocks(lc, "up")
            downs = R.lifecycle_blocks(lc, "down")
            for b in ups:
                j = np.searchsorted(idx, b)
                if j < len(idx):
                    ax.scatter([b], [max(v[j], 1e-30)], marker="^", s=90, color=col, edgecolor="black", zorder=5)
            for b in downs:
                j = np.searchsorted(idx, b)
                if j < len(idx):
                    ax.scatter([b], [max(v[j], 1e-30)], marker="v", s=90, color=col, edgecolor="black", zorder=5)
    # step-up / step-down shading from the main (largest) spike
    main = next((lc for (_, _, lc) in shown if lc is not None), None)
    if main is not None:
        for b in R.lifecycle_blocks(main, "up"):
            ax.axvspan(int(b) - 0.5, int(b) + 0.5, color="#d62728", alpha=0.08, lw=0)
        for b in R.lifecycle_blocks(main, "down"):
            ax.axvspan(int(b) - 0.5, int(b) + 0.5, color="#1f77b4", alpha=0.10, lw=0)
    ax.scatter([], [], marker="^", s=60, color="white", edgecolor="black", label="step-up block (shaded red)")
    ax.scatter([], [], marker="v", s=60, color="white", edgecolor="black", label="step-down block (shaded blue)")
    ax.set_yscale("log")
    ax.set_xlabel("block (0 = embeddings, 2l+1 = after attention of layer l, 2l+2 = after its FFN)")
    ax.set_ylabel("|h| (log scale)")
    step = max(1, int(np.ceil(len(idx) / 24)))
    ticks = idx[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([R.block_label(b) for b in ticks], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(idx[0] - 0.5, idx[-1] + 0.5)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    n_sc = len(np.atleast_1d(R.arr(R.get(trace, "spike_channels", default=[]), int)))
    if n_sc:
        what = "%d spike channel%s" % (n_sc, "" if n_sc == 1 else "s")
    else:
        what = "no spike channel at --abs %g --ratio %g" % (float(_param(trace, "abs", default=float("nan"))),
                                                            float(_param(trace, "ratio", default=float("nan"))))
    ax.set_title("Residual-stream lifecycle: rise - plateau - fall (%s)\n%s" % (what, _model_tag(res)))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# (2) eigenvalue spectrum
# --------------------------------------------------------------------------------------

def spike_channel_entries(spikes, trace=None):
    """Flat list of analysed channels {layer, channel, eigenvalues, dominance, ...},
    spike channels of the trace first, then by |lambda*|."""
    out = []
    chans = R.get(spikes, "channels")
    layers = R.get(spikes, "layers")
    if isinstance(chans, list):
        out = [c for c in chans if isinstance(c, dict)]
    elif isinstance(layers, list):
        for L in layers:
            for c in (R.get(L, "channels", default=[]) or []):
                if isinstance(c, dict):
                    c = dict(c)
                    c.setdefault("layer", R.get(L, "layer"))
                    out.append(c)
    good = []
    for c in out:
        ev = R.arr(R.get(c, "eigenvalues", "evals", "lambda"))
        if ev is None or ev.size == 0:
            continue
        c = dict(c)
        c["eigenvalues"] = np.atleast_1d(ev.astype(float))
        good.append(c)
    spike_set = set()
    if trace is not None:
        spike_set = {int(x) for x in np.atleast_1d(R.arr(R.get(trace, "spike_channels", default=[]), int))}
    for c in good:
        src = R.get(c, "source")
        if isinstance(src, list):
            c["is_spike"] = "spike" in src
        else:
            c["is_spike"] = int(R.get(c, "channel", default=-1)) in spike_set
    good.sort(key=lambda c: (not bool(c.get("is_spike")), -abs(float(c["eigenvalues"][0]))))
    return good


def _dominance(c):
    d = R.get(c, "dominance")
    if d is not None:
        return float(d)
    ev = c["eigenvalues"]
    return abs(ev[0] / ev[1]) if len(ev) > 1 and ev[1] != 0 else float("inf")


def fig_spectrum(res, path, n_max=4):
    spikes = res.get("spikes")
    entries = spike_channel_entries(spikes, res.get("trace")) if spikes else []
    if not entries:
        if spikes and spikes.get("quadratic_form") is False:  # non-gated MLP (GPT-2)
            R.warning("spectrum figure skipped: " + str(spikes.get("note", "no quadratic form")))
        else:
            R.warning("spectrum figure skipped: spikes.msgpack (channel eigenvalues) absent")
        return None
    entries = entries[:n_max]
    n = len(entries)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 1.2, 4.2), squeeze=False)
    for ax, c in zip(axes[0], entries):
        ev = np.nan_to_num(c["eigenvalues"], nan=0.0)  # an unconverged pair may be NaN
        r = len(ev)
        mags = np.abs(ev)
        cols = ["#d62728" if i == 0 else ("#1f77b4" if ev[i] >= 0 else "#7f7f7f") for i in range(r)]
        ax.bar(np.arange(1, r + 1), mags, color=cols, edgecolor="black", lw=0.5)
        for i in range(r):
            ax.text(i + 1, mags[i], "+" if ev[i] >= 0 else "-", ha="center", va="bottom", fontsize=9)
        dom = _dominance(c)
        ef = R.get(c, "energy_fraction")
        lab = "lambda* = %.3g\ndominance |l1/l2| = %.2f" % (ev[0], dom)
        if ef is not None:
            lab += "\nenergy l1^2/||S||_F^2 = %.2f" % float(ef)
        # one legend entry per bar colour, the numbers in a box of their own
        from matplotlib.patches import Patch
        handles = [Patch(facecolor="#d62728", edgecolor="black", lw=0.5, label="lambda* (l1)")]
        if any(ev[i] >= 0 for i in range(1, r)):
            handles.append(Patch(facecolor="#1f77b4", edgecolor="black", lw=0.5, label="other, lambda > 0"))
        if any(ev[i] < 0 for i in range(1, r)):
            handles.append(Patch(facecolor="#7f7f7f", edgecolor="black", lw=0.5, label="other, lambda < 0"))
        ax.legend(handles=handles, loc="upper right", frameon=False, handlelength=1, fontsize=8)
        ax.text(0.03, 0.97, lab, transform=ax.transAxes, ha="left", va="top", fontsize=8)
        ax.set_xticks(np.arange(1, r + 1))
        ax.set_xticklabels(["l%d" % (i + 1) for i in range(r)], fontsize=8)
        ax.set_xlabel("eigenvalue index (by |lambda|; sign above bar)")
        ax.set_ylim(0, mags.max() * 1.35 if mags.max() > 0 else 1)
        tag = " (spike channel)" if c.get("is_spike") else ""
        ax.set_title("layer %s, channel %s%s" % (R.get(c, "layer", default="?"), R.get(c, "channel", default="?"), tag),
                     fontsize=10)
    axes[0][0].set_ylabel("|lambda_i| of S_k")
    fig.suptitle("Eigenvalue spectrum of the FFN quadratic forms S_k: one dominant lambda* "
                 "= directional amplifier\n%s" % _model_tag(res))
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# (3) alpha_0 heat map and (4) predictors against alpha_0
# --------------------------------------------------------------------------------------

PREDICTORS = [
    # key, label (the sinks schema's per-head (L, H) arrays)
    ("alignment", "principal cosine B_Q vs B_S"),
    ("energy", "query energy along sink key"),
    ("signed_proj", "signed projection on sink key"),
    ("margin_norope", "logit margin (no RoPE)"),
    ("margin_rope", "logit margin (RoPE)"),
    ("weight_only", "weight-only prediction"),
]


def sink_heads(sinks):
    """The map of per-head (L, H) arrays of a sinks result (`heads`, docs/schema-sinks.md)."""
    h = R.get(sinks, "heads")
    return h if isinstance(h, dict) else sinks


def alpha0_matrix(res):
    """(L, H) measured alpha_0 and its source, or (None, None)."""
    a = R.arr(R.get(sink_heads(res.get("sinks")), "alpha0", "alpha_0"))
    if a is not None and a.ndim == 2:
        return a.astype(float), "sinks"
    t = R.arr(R.get(res.get("trace"), "alpha"))
    if t is not None and t.ndim == 3:
        return t[:, :, 0].astype(float), "trace"
    if t is not None and t.ndim == 2:
        return t.astype(float), "trace"
    return None, None


def eps_of(res):
    for k in ("sinks", "trace"):
        e = _param(res.get(k), "eps")
        if e is not None:
            return float(e)
    return 0.3


def auc_map(sinks):
    """{predictor: ROC AUC} without the undefined (NaN) ones."""
    a = R.get(sinks, "auc")
    if not isinstance(a, dict):
        a = {k: R.get(v, "auc") for k, v in (R.get(R.get(sinks, "classification"), "predictors") or {}).items()
             if isinstance(v, dict)}
    out = {}
    for k, v in (a or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            out[k] = f
    return out


def predicted_sinks(res, a0):
    """Boolean (L, H) of predicted sink heads and the rule, or (None, ''). The rule is the
    one of kv_map.json: main predictor >= its threshold (classification.predictors)."""
    sinks = res.get("sinks")
    if sinks is None:
        return None, ""
    heads = sink_heads(sinks)
    cls = R.get(sinks, "classification") or {}
    main = R.get(cls, "main_predictor") or _param(sinks, "main_predictor")
    thr = R.get(R.get(R.get(cls, "predictors"), main), "threshold")
    v = R.arr(R.get(heads, main)) if main else None
    if v is None or v.shape != a0.shape or thr is None or not np.isfinite(float(thr)):
        return None, ""
    v = v.astype(float)
    with np.errstate(invalid="ignore"):
        pred = np.where(np.isfinite(v), v >= float(thr), False)
    return pred, "%s >= %.3g" % (main, float(thr))


def fig_alpha(res, path):
    a0, src = alpha0_matrix(res)
    if a0 is None:
        R.warning("alpha_0 heat map skipped: no alpha0 in sinks.msgpack nor alpha in trace.msgpack")
        return None
    L, H = a0.shape
    eps = eps_of(res)
    fig, ax = plt.subplots(figsize=(min(16.0, max(5.0, 0.45 * H + 3.2)), min(14.0, max(3.6, 0.38 * L + 1.8))))
    im = ax.imshow(a0, cmap="viridis", vmin=0, vmax=max(1e-9, min(1.0, float(np.nanmax(a0)) * 1.05)), aspect="auto",
                   origin="upper", interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label("alpha_0 = mean attention paid to position 0")
    meas = a0 > eps
    ys, xs = np.nonzero(meas)
    dense = L * H > 1024  # many heads: thinner outlines and smaller crosses
    for y, x in zip(ys, xs):
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec="white", lw=0.8 if dense else 2.0))
    pred, rule = predicted_sinks(res, a0)
    if pred is not None and pred.any():
        py, px = np.nonzero(pred)
        ax.scatter(px, py, marker="x", s=12 if dense else 60, color="#ff4040", lw=1 if dense else 2,
                   label="predicted sink head (%s)" % rule)
    ax.plot([], [], ls="none", marker="s", mfc="none", mec="0.3", ms=10,
            label="measured sink head (alpha_0 > %g): %d of %d" % (eps, int(meas.sum()), a0.size))
    if H <= 40:
        ax.set_xticks(range(H))
    if L <= 48:
        ax.set_yticks(range(L))
    ax.tick_params(labelsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ratio = R.get(res.get("trace"), "sink_ratio")
    extra = (", sink ratio %.1f%%" % float(ratio)) if ratio is not None else ""
    ax.set_title("Attention on the first token per head (alpha_0, from %s%s)\n%s" % (src, extra, _model_tag(res)))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False, ncol=1)
    return _save(fig, path)


def fig_alignment(res, path):
    sinks = res.get("sinks")
    a0, _ = alpha0_matrix(res)
    if sinks is None or a0 is None:
        R.warning("alignment figure skipped: sinks.msgpack absent")
        return None
    preds = []
    heads = sink_heads(sinks)
    for k, lab in PREDICTORS:
        v = R.arr(R.get(heads, k))
        if v is not None and v.shape == a0.shape:
            preds.append((k, lab, v.astype(float)))
    if not preds:
        R.warning("alignment figure skipped: no per-head predictor arrays in sinks.msgpack")
        return None
    eps = eps_of(res)
    aucs = auc_map(sinks)
    n = len(preds)
    ncol = min(3, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    lab_sink = a0 > eps
    for i, (k, lab, v) in enumerate(preds):
        ax = axes[i // ncol][i % ncol]
        x, y = v.ravel(), a0.ravel()
        m = lab_sink.ravel()
        if not np.isfinite(x).any():
            ax.text(0.5, 0.5, "undefined for this model\n(no spike channel / sink key)", ha="center", va="center",
                    transform=ax.transAxes, color="0.35")
            ax.set_title(lab, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ok = np.isfinite(x)
        x, y, m = x[ok], y[ok], m[ok]
        ax.scatter(x[~m], y[~m], s=18, color="#1f77b4", alpha=0.75, label="not a sink head")
        ax.scatter(x[m], y[m], s=22, color="#d62728", alpha=0.85, label="sink head (alpha_0 > %g)" % eps)
        ax.axhline(eps, color="0.4", ls="--", lw=1)
        auc = aucs.get(k)
        ax.set_title("%s\nROC AUC = %s" % (lab, ("%.2f" % auc) if auc is not None else "n/a"), fontsize=10)
        ax.set_xlabel(k)
        ax.set_ylabel("measured alpha_0")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="best", fontsize=7.5)
    for j in range(n, nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    best = max(aucs.items(), key=lambda kv: kv[1]) if aucs else None
    n_sink = int(lab_sink.sum())
    if n_sink == 0 or n_sink == lab_sink.size:
        note = " - AUC undefined: %s head has alpha_0 > %g" % ("no" if n_sink == 0 else "every", eps)
    else:
        note = (" - best AUC %.2f (%s)" % (best[1], best[0])) if best else ""
    fig.suptitle("Does query / sink-key geometry predict sink heads? one point per (layer, head)%s\n%s"
                 % (note, _model_tag(res)))
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# (5) vocabulary sweep and (6) delimiter ranking
# --------------------------------------------------------------------------------------

def fig_vocab(res, path):
    vocab = res.get("vocab")
    v = R.vocab_view(vocab)
    if v is None or v["ratio"].size == 0:
        R.warning("vocab figure skipped: vocab.msgpack (tokens.ratio) absent")
        return None
    ratio = v["ratio"]
    pos = ratio[np.isfinite(ratio) & (ratio > 0)]
    if pos.size == 0:
        R.warning("vocab figure skipped: no positive ratio")
        return None
    thr = v["ratio_thresh"]
    frac = v["spike_fraction"]
    if frac is None and thr is not None:
        frac = float((ratio >= thr).mean())
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    lo, hi = pos.min(), max(pos.max(), pos.min() * 10)
    if thr is not None:
        lo, hi = min(lo, thr / 2), max(hi, thr * 2)
    bins = np.logspace(np.log10(lo) - 0.02, np.log10(hi) + 0.02, 60)
    if thr is not None:
        below, above = pos[pos < thr], pos[pos >= thr]
        ax.hist([below, above], bins=bins, stacked=True, color=["#7f7f7f", "#d62728"],
                label=["below threshold (%d tokens)" % below.size, "spike tokens (%d)" % above.size])
        if 0 < above.size <= 20:  # a handful of spike tokens is invisible as bars: mark each
            ax.plot(above, np.zeros(above.size), ls="none", marker="^", ms=11, color="#d62728", mec="black",
                    clip_on=False, zorder=5)
            for x in above[:3]:
                ax.annotate("spike token", (x, 0), xytext=(0, 22), textcoords="offset points", ha="center",
                            fontsize=8, arrowprops=dict(arrowstyle="-", color="0.4"))
        abs_t = v["abs_thresh"]
        ax.axvline(thr, color="black", ls="--", lw=1.5,
                   label="threshold --ratio %g%s" % (thr, (" (and |h| >= %g)" % float(abs_t)) if abs_t else ""))
    else:
        ax.hist(pos, bins=bins, color="#d62728")
    ax.set_xscale("log")
    _log_xticks(ax, bins[0], bins[-1])
    ax.set_xlabel("token's largest ratio max_c |h_b[v,c]| / typical median |h_b| (intermediate blocks)")
    ax.set_ylabel("number of tokens")
    n = ratio.size
    V = R.get(R.get(vocab, "model"), "vocab_size")
    samp = ("a sample of %d of %s tokens" % (n, V)) if V and int(V) > n else "all %d tokens" % n
    ftxt = ("%.3g%% of %s spike" % (100 * float(frac), samp)) if frac is not None else samp
    ch = v["top_channel"]
    chtxt = (" (most in channel %d)" % int(ch)) if ch is not None and int(ch) >= 0 and frac else ""
    ax.set_title("Vocabulary sweep, each token alone at position 0: %s%s\n%s" % (ftxt, chtxt, _model_tag(res)))
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3, which="both", axis="x")
    return _save(fig, path)


def delimiter_data(spikes):
    """(ranked token ids, their ratios, their pieces, full-vocabulary ratios or None) by
    ||n_v|| / median (spikes `delimiter`, docs/schema-spikes.md), or None."""
    d = R.get(spikes, "delimiter", "delimiters")
    if not isinstance(d, dict):
        return None
    full = R.arr(R.get(d, "ratio"))
    if full is not None:
        full = full.astype(float).ravel()
    top = R.get(d, "top")
    if isinstance(top, list) and top:
        ids = np.array([int(R.get(e, "id", default=-1)) for e in top])
        vals = np.array([float(R.get(e, "ratio", default=np.nan)) for e in top])
        pieces = [R.get(e, "piece") for e in top]
        return ids, vals, pieces, full
    if full is None or full.size == 0:
        return None
    ids = np.argsort(-full)[:50]
    return ids, full[ids], None, full


def fig_delimiters(res, path, n_top=25):
    spikes = res.get("spikes")
    data = delimiter_data(spikes) if spikes else None
    if data is None:
        R.warning("delimiter figure skipped: spikes.msgpack (delimiter ranking) absent")
        return None
    rank, vals, pieces, full = data
    k = min(n_top, rank.size)
    labels = []
    for i in range(k):
        p = pieces[i] if isinstance(pieces, list) and i < len(pieces) else None
        t = int(rank[i])
        labels.append("%r  (id %d)" % (p, t) if p is not None else "id %d" % t)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, max(4.2, 0.26 * k + 1.6)), gridspec_kw={"width_ratios": [1.4, 1]})
    y = np.arange(k)[::-1]
    ax.barh(y, vals[:k], color="#ff7f0e", edgecolor="black", lw=0.4)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8, family="monospace")
    ax.axvline(1.0, color="0.4", ls="--", lw=1, label="median token (= 1)")
    vmax = float(np.nanmax(vals[:k])) if k else 1.0
    left = max(0.0, 1.0 - 1.5 * (vmax - 1.0))  # zoom when every ratio is close to 1
    ax.set_xlim(left, vmax + 0.08 * (vmax - left))
    ax.set_xlabel("||n_v|| / median_v ||n_v||,  n_v = gamma_attn[0] * e_v / rms(e_v)%s"
                  % ("\n(axis starts at %.3g)" % left if left > 0 else ""))
    ax.set_title("Top %d tokens by post-norm embedding size" % k)
    ax.legend(loc="lower right", frameon=False)
    if full is not None and full.size > k:
        fv = full[np.isfinite(full) & (full > 0)]
        ax2.hist(fv, bins=60, color="#7f7f7f")
        ax2.axvline(float(vals[min(k, len(vals)) - 1]), color="#ff7f0e", ls="--", lw=1.2, label="top %d cut" % k)
        ax2.set_yscale("log")
        ax2.set_xlabel("||n_v|| / median")
        ax2.set_ylabel("tokens (log)")
        ax2.set_title("whole vocabulary (%d tokens)" % full.size)
        ax2.legend(frameon=False)
    else:
        ax2.axis("off")
    fig.suptitle("Delimiter route: tokens whose embedding RMSNorm inflates most (layer 0)\n%s" % _model_tag(res))
    fig.tight_layout()
    return _save(fig, path)


FIGURES = [
    ("lifecycle", "fig_lifecycle.png", fig_lifecycle),
    ("spectrum", "fig_spectrum.png", fig_spectrum),
    ("alpha", "fig_alpha.png", fig_alpha),
    ("alignment", "fig_alignment.png", fig_alignment),
    ("vocab", "fig_vocab.png", fig_vocab),
    ("delimiters", "fig_delimiters.png", fig_delimiters),
]


def plot_all(res, outdir):
    """Write every figure it can; returns {name: path or None}."""
    os.makedirs(outdir, exist_ok=True)
    done = {}
    for name, fname, fn in FIGURES:
        path = os.path.join(outdir, fname)
        try:
            done[name] = fn(res, path)
        except Exception as e:  # one broken figure must not cost the others
            R.warning("%s figure failed: %s: %s" % (name, type(e).__name__, e))
            plt.close("all")
            done[name] = None
        if done[name] is None and os.path.exists(path):
            os.remove(path)  # a figure of an earlier run must not pass for this one
    return done


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: plot_all.py RESULT_DIR   (writes RESULT_DIR/fig_*.png)", file=sys.stderr)
        return 2
    res = R.load_dir(argv[1])
    done = plot_all(res, argv[1])
    for k, v in done.items():
        print("%-11s %s" % (k, v if v else "(skipped)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
