#!/usr/bin/python3
"""make_report.py - figures and a self-contained report.html for a sinkscope result folder.

    /usr/bin/python3 make_report.py DIR [--no-figures]

Reads DIR/{trace,spikes,vocab,sinks}.msgpack and DIR/summary.json (whichever exist),
writes the six figures DIR/fig_*.png (plot_all.py) and DIR/report.html, which embeds
every figure as a base64 data URI (the HTML file alone can be mailed or archived) and
holds the tables: spike channels with lambda* and dominance, lifecycles, ranked sink
heads, predictor AUCs, vocabulary exceptions and every setting used.
Exit status: 0 when the report was written (even with figures skipped), 2 on bad usage,
1 when nothing could be read.
"""

import base64
import datetime
import html
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plot_all as P  # noqa: E402
import plot_cost as PC  # noqa: E402
import sks_results as R  # noqa: E402

CAPTIONS = {
    "lifecycle": (
        "Rise - plateau - fall. The largest |h| of each block (grey band, log scale) with the "
        "spike channels on the spike tokens (coloured). A step-up block (triangle up, shaded red) "
        "injects the spike, usually an FFN acting as a directional quadratic amplifier; the plateau "
        "is carried by the residual stream; a step-down block (triangle down, shaded blue) cancels "
        "it. Small models often show two step-ups and no step-down. The dashed line is the median "
        "|h| of the block, the dotted one the spike threshold."),
    "spectrum": (
        "Spectrum of the quadratic form S_k of an FFN output channel k (out_k(x) ~ x^T S_k x when "
        "SiLU is near identity). A spike channel has one eigenvalue lambda* (red) far above the "
        "others: the FFN amplifies inputs along s* by lambda*. Dominance = |lambda_1| / |lambda_2|; "
        "energy = lambda_1^2 / ||S_k||_F^2."),
    "alpha": (
        "Measured alpha_0 (mean attention on the first token, Gu et al.) per layer and head. "
        "Outlined cells are measured sink heads (alpha_0 > eps); crosses are the heads the "
        "geometry predicts."),
    "alignment": (
        "Each geometric predictor of a sink head against measured alpha_0, one point per head; "
        "red points are sink heads. The ROC AUC says how well ranking heads by the predictor "
        "separates sink heads from the rest (0.5 = chance, 1 = perfect)."),
    "vocab": (
        "Vocabulary sweep (the paper's Table 2): every token run alone at position 0; its ratio is "
        "the largest max_c |h| over the intermediate blocks divided by the typical median |h| of "
        "that block. Tokens right of the threshold are spike tokens."),
    "delimiters": (
        "Delimiter route: tokens whose embedding, after the first RMSNorm and gamma_attn, is "
        "largest relative to the median token. Such tokens (periods, newlines) attend to "
        "themselves and fall into the first-token regime."),
}

TITLES = {
    "lifecycle": "1. Lifecycle of the massive activations",
    "spectrum": "2. Eigenvalue spectrum of S_k",
    "alpha": "3. Sink heads: alpha_0 per layer and head",
    "alignment": "4. Predictors of sink heads against alpha_0",
    "vocab": "5. Vocabulary sweep at position 0",
    "delimiters": "6. Delimiter ranking",
}

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1180px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: right; }
th { background: #f0f0f0; }
td.l, th.l { text-align: left; }
figure { margin: 1em 0 2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.92em; color: #444; margin-top: .4em; }
.headline { background: #f7f7f2; border: 1px solid #ddd; padding: .6em 1em; }
.warn { color: #a33; }
code, pre { background: #f4f4f4; padding: 0 .25em; }
pre { padding: .5em; overflow-x: auto; font-size: 0.85em; }
"""


def esc(x):
    return html.escape(str(x))


def fmt(x, spec="%.4g"):
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        f = float(x)
    except (TypeError, ValueError):
        return esc(x)
    if not np.isfinite(f):
        return str(f)
    return spec % f


def table(headers, rows, left=()):
    out = ["<table><tr>"]
    for i, h in enumerate(headers):
        out.append('<th%s>%s</th>' % (' class="l"' if i in left else "", esc(h)))
    out.append("</tr>")
    for r in rows:
        out.append("<tr>")
        for i, c in enumerate(r):
            out.append('<td%s>%s</td>' % (' class="l"' if i in left else "", c))
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def img_data_uri(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def plain(x):
    """JSON-able copy of params / model maps (arrays summarized)."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 16 else "array %s %s" % (x.dtype, list(x.shape))
    if isinstance(x, (bytes, bytearray)):
        return "<%d bytes>" % len(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


# --------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------

def section_model(res):
    m = None
    for k in ("trace", "sinks", "spikes", "vocab"):
        m = R.get(res.get(k), "model")
        if isinstance(m, dict):
            break
    if not isinstance(m, dict):
        return "<p class='warn'>No model summary found.</p>"
    rows = [("<b>%s</b>" % esc(k), esc(plain(v))) for k, v in m.items()]
    return table(["field", "value"], rows, left=(0, 1))


def pct_of(n, total):
    """n of total as a percentage that never rounds a non-zero count to 0.0% (1 of 4096 is
    0.024%, not 0.0%) nor a shortfall to 100.0%."""
    if not total:
        return "-"
    p = 100.0 * n / total
    if 0 < p < 0.1 or 99.9 < p < 100:
        return "%.2g%%" % p if p < 50 else "%.3f%%" % p
    return "%.1f%%" % p


def section_headline(res):
    s = res.get("summary") or {}
    items = []
    trace = res.get("trace")
    if trace is not None:
        sc = np.atleast_1d(R.arr(R.get(trace, "spike_channels", default=[]), int))
        st = np.atleast_1d(R.arr(R.get(trace, "spike_tokens", default=[]), int))
        items.append("Spike channels: <b>%s</b> on token position(s) %s" % (
            esc(", ".join(str(int(c)) for c in sc)) or "none", esc(", ".join(str(int(t)) for t in st)) or "-"))
        blocks = R.get(trace, "blocks") or []
        if blocks:
            mx = max(blocks, key=lambda b: float(b.get("max_abs", 0)))
            items.append("Largest activation: |h| = %s at %s (token %s, channel %s), spike score %s" % (
                fmt(mx.get("max_abs")), esc(R.block_label(mx.get("block", 0))), esc(mx.get("top_token")),
                esc(mx.get("top_channel")), fmt(mx.get("spike_score"))))
        lcs = R.get(trace, "lifecycles") or []
        if lcs:
            lc = max(lcs, key=lambda l: float(R.get(l, "peak_abs", default=0)))
            ups = [R.block_label(b) for b in R.lifecycle_blocks(lc, "up")]
            downs = [R.block_label(b) for b in R.lifecycle_blocks(lc, "down")]
            items.append("Lifecycle of channel %s on token %s: step-up at <b>%s</b>, step-down at <b>%s</b>, peak |h| %s"
                         % (esc(R.get(lc, "channel")), esc(R.get(lc, "token")), esc(", ".join(ups)) or "-",
                            esc(", ".join(downs)) or "none (persists to the last layer)", fmt(R.get(lc, "peak_abs"))))
        sr = R.get(trace, "sink_ratio")
        if sr is not None:
            nh = len(R.get(trace, "sink_heads") or [])
            a = R.get(trace, "alpha")
            tot = int(np.prod(R.arr(a).shape[:2])) if a is not None else 0
            items.append("Sink heads: <b>%d of %d</b> with alpha_0 > %s averaged over the prompts; sink ratio "
                         "<b>%s%%</b> (the share of sink heads in each prompt, averaged)" % (
                             nh, tot, fmt(P.eps_of(res)), fmt(sr, "%.1f")))
    ents = P.spike_channel_entries(res.get("spikes"), trace) if res.get("spikes") else []
    if ents:
        c = ents[0]
        items.append("Top S_k: layer %s channel %s, lambda* = %s, dominance %s" % (
            esc(R.get(c, "layer")), esc(R.get(c, "channel")), fmt(c["eigenvalues"][0]), fmt(P._dominance(c), "%.2f")))
    vv = R.vocab_view(res.get("vocab"))
    if vv is not None and vv["spike_fraction"] is not None:
        ntok = int(vv["ratio"].size)
        nsp = int(round(vv["spike_fraction"] * ntok))
        items.append("Vocabulary sweep: <b>%d of %d tokens (%s)</b> spike at position 0" % (
            nsp, ntok, pct_of(nsp, ntok)))
    aucs = P.auc_map(res.get("sinks"))
    if aucs:
        items.append("Sink-head predictors, ROC AUC: " + ", ".join(
            "%s %s" % (esc(k), fmt(v, "%.2f")) for k, v in sorted(aucs.items(), key=lambda kv: -kv[1])))
    t = s.get("timings") if isinstance(s, dict) else None
    if isinstance(t, dict) and t:
        items.append("Timings: " + ", ".join("%s %ss" % (esc(k), fmt(v, "%.2f")) for k, v in t.items()))
    if not items:
        return "<p class='warn'>No results found in this folder.</p>"
    return "<div class='headline'><ul>%s</ul></div>" % "".join("<li>%s</li>" % i for i in items)


def section_spike_channels(res):
    ents = P.spike_channel_entries(res.get("spikes"), res.get("trace")) if res.get("spikes") else []
    if not ents:
        return "<p class='warn'>spikes.msgpack absent: no S_k table.</p>"
    rows = []
    for c in ents[:40]:
        ev = c["eigenvalues"]
        rows.append([
            fmt(R.get(c, "layer")), fmt(R.get(c, "channel")), "yes" if c.get("is_spike") else "",
            fmt(ev[0]), fmt(ev[1]) if len(ev) > 1 else "", fmt(P._dominance(c), "%.2f"),
            fmt(R.get(c, "energy_fraction"), "%.3f"), fmt(R.get(c, "frobenius")), fmt(R.get(c, "trace")),
            fmt(R.get(c, "cos_x_s", "cos_spike", "cos")), fmt(R.get(c, "quad_pred", "quadratic_prediction")),
            fmt(R.get(c, "rank1_pred", "rank_one_prediction")), fmt(R.get(c, "true_out", "ffn_out")),
            fmt(R.get(c, "silu_regime"), "%.2f"), fmt(R.get(c, "cos_x0_s"), "%.3f"),
        ])
    note = "" if len(ents) <= 40 else "<p>First 40 of %d analysed channels.</p>" % len(ents)
    return table(["layer", "channel", "spike ch.", "lambda*", "lambda_2", "dominance", "energy frac.", "||S_k||_F",
                  "tr S_k", "cos(x, s*)", "x^T S x", "lambda*(s*.x)^2", "true out_k", "SiLU ~ id",
                  "cos(x_0, s*)"], rows) + note + (
        "<p>x is the FFN input of the layer at the spike token; x^T S x is the quadratic prediction of the "
        "channel's FFN output, lambda*(s*.x)^2 its rank-one part, true out_k the SwiGLU output; SiLU ~ id is "
        "the share of |W_gate x| mass where SiLU is within 5% of the identity; x_0 is the FFN input at "
        "position 0.</p>")


def section_lifecycles(res):
    lcs = R.get(res.get("trace"), "lifecycles") or []
    if not lcs:
        return "<p>No lifecycle (no spike channel passed the thresholds).</p>"
    rows = []
    for lc in lcs[:30]:
        ups = R.lifecycle_blocks(lc, "up")
        downs = R.lifecycle_blocks(lc, "down")
        v = R.arr(R.get(lc, "values"))
        peak = R.get(lc, "peak_abs", default=(float(np.max(np.abs(v))) if v is not None and v.size else None))
        rows.append([fmt(R.get(lc, "token")), fmt(R.get(lc, "channel")),
                     esc(R.block_label(max(R.lifecycle_main_up(lc), 0))),
                     esc(", ".join(R.block_label(b) for b in ups)) or "-",
                     esc(", ".join(R.block_label(b) for b in downs)) or "none (persists)", fmt(peak)])
    return table(["token", "channel", "main step-up", "step-up blocks", "step-down blocks", "peak |h|"], rows,
                 left=(2, 3, 4))


def section_sink_heads(res):
    a0, src = P.alpha0_matrix(res)
    if a0 is None:
        return "<p class='warn'>No alpha_0 measured.</p>"
    sinks = res.get("sinks") or {}
    eps = P.eps_of(res)
    preds = [(k, lab, R.arr(R.get(P.sink_heads(sinks), k))) for k, lab in P.PREDICTORS]
    preds = [(k, lab, v.astype(float)) for k, lab, v in preds if v is not None and v.shape == a0.shape]
    order = np.argsort(-a0.ravel())
    H = a0.shape[1]
    rows = []
    n_show = max(10, int((a0 > eps).sum()))
    for rank, i in enumerate(order[:min(n_show, 40)]):
        l, h = divmod(int(i), H)
        r = [str(rank + 1), str(l), str(h), fmt(a0[l, h], "%.3f"), "yes" if a0[l, h] > eps else ""]
        r += [fmt(v[l, h], "%.3g") for _, _, v in preds]
        rows.append(r)
    out = table(["rank", "layer", "head", "alpha_0", "sink head"] + [k for k, _, _ in preds], rows)
    cls = R.get(sinks, "classification") or {}
    preds_cls = R.get(cls, "predictors") or {}
    aucs = P.auc_map(sinks)
    if preds_cls or aucs:
        rows = []
        names = list(preds_cls.keys()) or list(aucs.keys())
        names.sort(key=lambda k: -aucs.get(k, -1.0))
        main = R.get(cls, "main_predictor")
        for k in names:
            c = preds_cls.get(k, {}) if isinstance(preds_cls.get(k), dict) else {}
            rows.append([esc(k) + (" (main)" if k == main else ""), fmt(aucs.get(k), "%.3f") or "undefined",
                         fmt(R.get(c, "threshold"), "%.3g"), fmt(R.get(c, "precision"), "%.2f"),
                         fmt(R.get(c, "recall"), "%.2f")])
        out += ("<p>Each predictor scored against the labels alpha_0 &gt; %s: ROC AUC of the ranking, and "
                "precision / recall of the rule predictor &gt;= threshold (%s sink heads of %d):</p>"
                % (fmt(eps), int((a0 > eps).sum()), a0.size))
        out += table(["predictor", "ROC AUC", "threshold", "precision", "recall"], rows, left=(0,))
    lay = R.get(sinks, "layers")
    if isinstance(lay, dict) and R.get(lay, "cos_spike_mean") is not None:
        def col(name):
            v = R.arr(R.get(lay, name))
            return None if v is None else np.asarray(v)
        cs, cn = col("cos_spike_mean"), col("cos_nonspike_mean")
        sr, nr, sp = col("sink_r99"), col("nonsink_r99"), col("sink_pr")
        rows = []
        for l in range(len(cs)):
            def lst(a):
                return "" if a is None or l >= len(a) else esc(" ".join(fmt(x, "%.3g") for x in np.atleast_1d(a[l])))
            rows.append([str(l), fmt(cs[l], "%.3f"), fmt(cn[l], "%.3f") if cn is not None else "", lst(sr), lst(nr),
                         lst(sp)])
        out += ("<p>Per layer: near-constancy of the attention input (mean pairwise cosine over spike "
                "tokens against non-spike tokens) and the effective rank r99 of the keys per KV head "
                "(sink keys are expected to be low-rank):</p>")
        out += table(["layer", "cos spike x~", "cos non-spike x~", "sink-key r99", "non-sink-key r99",
                      "sink-key PR"], rows, left=(3, 4, 5))
    return out + "<p>alpha_0 from %s.</p>" % esc(src)


def section_vocab(res):
    vocab = res.get("vocab")
    v = R.vocab_view(vocab)
    if v is None:
        return "<p class='warn'>vocab.msgpack absent.</p>"
    out = []
    frac = v["spike_fraction"]
    n = v["ratio"].size
    out.append("<p>%s of %d swept tokens are spike tokens at position 0 (ratio &gt;= %s%s).</p>" % (
        (fmt(100 * frac, "%.2f") + "%") if frac is not None else "?", n, fmt(v["ratio_thresh"]),
        (" and |h| &gt;= %s" % fmt(v["abs_thresh"])) if v["abs_thresh"] else ""))
    ex = v["exceptions"]
    if ex is not None and ex.size:
        pieces = v["exception_pieces"]
        pos = {int(t): i for i, t in enumerate(v["ids"])} if v["ids"] is not None else {}
        rows = []
        for j, t in enumerate(ex[:30]):
            i = pos.get(int(t))
            p = pieces[j] if pieces and j < len(pieces) and pieces[j] is not None else ""
            rows.append([str(int(t)), esc(repr(p)) if p else "",
                         fmt(v["ratio"][i]) if i is not None else "",
                         fmt(v["max_abs"][i]) if i is not None and v["max_abs"] is not None else ""])
        out.append("<p>Exceptions (tokens that do not spike), first %d of %d:</p>" % (len(rows), ex.size))
        out.append(table(["token", "piece", "ratio", "max |h|"], rows, left=(1,)))
    return "".join(out)


def section_kv_map(res):
    kv = res.get("kv_map")
    if not isinstance(kv, dict):
        return "<p>kv_map.json absent.</p>"
    rows = []
    for lay in kv.get("layers", []) or []:
        heads = lay.get("heads") or []
        if not heads:
            continue
        rows.append([str(lay.get("layer")), esc(", ".join(str(h.get("head")) for h in heads)),
                     esc(", ".join(str(g) for g in lay.get("kv_heads", []))),
                     esc(", ".join("%s%s" % (h.get("head"), "" if h.get("measured") else " (predicted only)")
                                   for h in heads if not (h.get("measured") and h.get("predicted"))) or "-")])
    out = ("<p>For KV-cache eviction and streaming: keep position(s) %s in these layers' caches for the "
           "listed KV heads (%s heads: measured alpha_0 &gt; %s or predicted by %s &gt;= %s).</p>"
           % (esc(kv.get("sink_positions")), esc(kv.get("n_keep_heads")), fmt(kv.get("eps")),
              esc(kv.get("predictor")), fmt(kv.get("threshold"), "%.3g")))
    if rows:
        out += table(["layer", "heads", "KV heads to keep", "flagged by one rule only"], rows, left=(1, 2, 3))
    return out


COST_FILES = (("quant_risk", "quant_risk.msgpack", "fig_quant_risk.png"),
              ("kv_eval", "kv_eval.msgpack", "fig_kv_eval.png"),
              ("compare", "compare.msgpack", "fig_compare.png"))


def load_cost(d):
    """The cost results of the folder (analyze --text, sinkscope compare -o DIR/compare.msgpack)."""
    out = {}
    for key, name, _ in COST_FILES:
        p = os.path.join(d, name)
        if os.path.exists(p):
            try:
                out[key] = R.load(p)
            except Exception as e:  # a broken file must not stop the report
                R.warning("%s: %s" % (p, e))
    return out


def cost_figures(d, cost, draw):
    """Draw (when draw) and return {key: path} of the cost figures that exist."""
    figs = {}
    for key, _, fname in COST_FILES:
        if key not in cost:
            continue
        path = os.path.join(d, fname)
        if draw:
            try:
                PC.FIGS[cost[key]["schema"]][1](cost[key], path)
            except Exception as e:
                R.warning("%s: %s" % (fname, e))
        if os.path.exists(path):
            figs[key] = path
    return figs


def _figure(path, caption):
    name = os.path.basename(path)
    return ("<figure><img src='%s' alt='%s' data-file='%s'><figcaption>%s <i>(file: %s)</i></figcaption></figure>"
            % (img_data_uri(path), esc(name), esc(name), esc(caption), esc(name)))


def section_cost(cost, figs):
    out = []
    q = cost.get("quant_risk")
    if q is not None:
        e2e = q.get("end_to_end") or []
        base = next((e["perplexity"] for e in e2e if e["scheme"] == "f32"), None)
        out.append("<h3>Activation quantization (quant_risk.msgpack)</h3>"
                   "<p>Spike channels kept in the <i>spike</i> mode: %s. Per layer and input: dynamic range "
                   "max|x| / median|x| and the relative error of each scheme; end to end: the perplexity with "
                   "every linear input fake-quantized (f32: %s).</p>" % (esc(q.get("spike_channels")), fmt(base)))
        rows = [[esc(s), fmt(next((e["perplexity"] for e in e2e if e["scheme"] == s and e["keep"] == "none"), None)),
                 fmt(next((e["perplexity"] for e in e2e if e["scheme"] == s and e["keep"] == "outliers"), None))]
                for s in q.get("schemes", [])]
        if e2e:
            out.append(table(["scheme", "perplexity, none kept", "outliers kept"], rows, left=(0,)))
        err, sites = np.asarray(q["rel_err"]), q["sites"]
        qi, ko = q["schemes"].index("int8-tensor"), q["keep_modes"].index("outliers")
        rng = np.asarray(q["max_abs"]) / np.maximum(np.asarray(q["median_abs"]), 1e-30)
        rows = [[str(l)] + ["%s / %.2f%% / %.2f%%" % (fmt(rng[l, si], "%.3g"), 100 * err[l, si, qi, 0],
                                                      100 * err[l, si, qi, ko]) for si in range(len(sites))]
                for l in range(err.shape[0])]
        out.append("<p>Per layer: dynamic range / INT8 per-tensor error / the same with the outliers kept.</p>")
        out.append(table(["layer"] + [esc(s) for s in sites], rows))
        if "quant_risk" in figs:
            out.append(_figure(figs["quant_risk"], "Relative error by layer for each input (dashed: outliers kept "
                                                   "in f32) and the perplexity by scheme."))
    k = cost.get("kv_eval")
    if k is not None:
        p = k.get("params", {})
        out.append("<h3>KV-cache eviction (kv_eval.msgpack)</h3><p>Windows of %s tokens; W = %s, S = %s.</p>"
                   % (esc(p.get("window")), esc(p.get("kv_window")), esc(p.get("n_sink"))))
        rows = [[esc(v["name"]), fmt(v["perplexity"]), fmt(v["delta_nll"], "%+.4f"), fmt(v["kv_entries"]),
                 "%.1f%%" % (100 * v["kv_fraction"])] for v in k.get("variants", [])]
        out.append(table(["variant", "perplexity", "dNLL", "KV entries", "of full"], rows, left=(0,)))
        if "kv_eval" in figs:
            out.append(_figure(figs["kv_eval"], "Perplexity and KV memory kept by each variant."))
    c = cost.get("compare")
    if c is not None:
        out.append("<h3 id='compare'>Model comparison (compare.msgpack)</h3>")
        rows = [[esc(PC._name(m["dir"])), esc(m.get("family")), fmt(m.get("peak_abs")), fmt(m.get("peak_ratio")),
                 esc(m.get("spike_channels")), "%s/%s" % (m.get("step_layer"), m.get("step_channel")),
                 fmt(m.get("lambda_star")), fmt(m.get("dominance")), fmt(m.get("sink_ratio")),
                 fmt(m.get("sink_r99")), fmt(m.get("vocab_fraction")), fmt(m.get("perplexity"))]
                for m in c.get("models", [])]
        out.append(table(["model", "family", "peak |h|", "ratio", "spike ch.", "step L/c", "lambda*", "dominance",
                          "sink %", "r99", "vocab frac.", "perplexity"], rows, left=(0, 1, 4)))
        if "compare" in figs:
            out.append(_figure(figs["compare"], "The ablation table as bars, one per model."))
    return "".join(out)


def section_settings(res):
    out = []
    for k in ("trace", "spikes", "vocab", "sinks"):
        r = res.get(k)
        if r is None:
            out.append("<p><b>%s</b>: not run (file absent).</p>" % k)
            continue
        out.append("<p><b>%s</b> (schema <code>%s</code>):</p>" % (k, esc(R.get(r, "schema", default="?"))))
        p = R.get(r, "params") or {}
        out.append("<pre>%s</pre>" % esc(json.dumps(plain(p), indent=1, sort_keys=True)))
    s = res.get("summary")
    if isinstance(s, dict):
        for key in ("settings", "params", "options"):
            if key in s:
                out.append("<p><b>analyze</b> settings (summary.json):</p><pre>%s</pre>"
                           % esc(json.dumps(plain(s[key]), indent=1, sort_keys=True)))
                break
    return "".join(out)


def section_files(res, d):
    rows = []
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(p) and not name.startswith("."):
            rows.append([esc(name), fmt(os.path.getsize(p))])
    return table(["file", "bytes"], rows, left=(0,))


def build_report(d, figs):
    res = R.load_dir(d, warn=False)
    cost = load_cost(d)
    if not any(res.get(k) is not None for k in ("trace", "spikes", "vocab", "sinks")) and not cost:
        return None, res
    cfigs = cost_figures(d, cost, draw=figs is not None)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>sinkscope report</title>",
             "<style>%s</style></head><body>" % CSS,
             "<h1>sinkscope report</h1>",
             "<p>%s - generated %s UTC. Massive activations and attention sinks after Sun, Canziani, LeCun "
             "and Zhu (2026); how each number maps to the paper is in <code>docs/paper-map.md</code>.</p>"
             % (esc(P._model_tag(res)), datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")),
             "<p><a href='#headline'>Headline</a> | <a href='#figures'>Figures</a> | "
             "<a href='#spikes'>Spike channels</a> | <a href='#lifecycles'>Lifecycles</a> | "
             "<a href='#sinks'>Sink heads</a> | <a href='#kv'>KV-cache map</a> | <a href='#vocab'>Vocabulary</a> | "
             "<a href='#cost'>Cost</a> | <a href='#settings'>Settings</a> | <a href='#files'>Files</a></p>",
             "<h2 id='headline'>Headline</h2>", section_headline(res),
             "<h2>Model</h2>", section_model(res)]
    parts.append("<h2 id='figures'>Figures</h2>")
    for name, fname, _ in P.FIGURES:
        if figs is None:  # --no-figures: embed whatever the folder holds
            path = os.path.join(d, fname) if os.path.exists(os.path.join(d, fname)) else None
        else:
            path = figs.get(name)
        parts.append("<h3>%s</h3>" % esc(TITLES[name]))
        if path and os.path.exists(path):
            parts.append("<figure><img src='%s' alt='%s' data-file='%s'><figcaption>%s <i>(file: %s)</i>"
                         "</figcaption></figure>" % (img_data_uri(path), esc(fname), esc(fname),
                                                     esc(CAPTIONS[name]), esc(fname)))
        else:
            parts.append("<p class='warn'>Figure %s not produced (its results are absent).</p>" % esc(fname))
    parts += ["<h2 id='spikes'>Spike channels: quadratic forms S_k</h2>", section_spike_channels(res),
              "<h2 id='lifecycles'>Lifecycles</h2>", section_lifecycles(res),
              "<h2 id='sinks'>Sink heads, ranked by measured alpha_0</h2>", section_sink_heads(res),
              "<h2 id='kv'>KV-cache map</h2>", section_kv_map(res),
              "<h2 id='vocab'>Vocabulary sweep</h2>", section_vocab(res),
              "<h2 id='cost'>What the spikes and sinks cost</h2>",
              section_cost(cost, cfigs) or "<p>Not measured: run <code>sinkscope analyze MODEL -o DIR --text FILE</code> "
              "(quant-risk, kv-eval), and <code>sinkscope compare DIR ... -o DIR/compare.msgpack</code>.</p>",
              "<h2 id='settings'>Settings used</h2>", section_settings(res),
              "<h2 id='files'>Files in this folder</h2>", section_files(res, d),
              "</body></html>"]
    return "\n".join(parts), res


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) != 1 or "--help" in argv or "-h" in argv:
        print("usage: make_report.py RESULT_DIR [--no-figures]", file=sys.stderr)
        return 2
    d = args[0]
    if not os.path.isdir(d):
        print("make_report: %s is not a folder" % d, file=sys.stderr)
        return 2
    figs = None
    if "--no-figures" not in argv:
        res = R.load_dir(d)
        figs = P.plot_all(res, d)
    doc, _ = build_report(d, figs)
    if doc is None:
        print("make_report: no sinkscope results (*.msgpack) in %s" % d, file=sys.stderr)
        return 1
    out = os.path.join(d, "report.html")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(doc)
    os.replace(tmp, out)
    n = doc.count("<figure>")
    print("make_report: %d figures in %s (%d of the %d analysis figures)"
          % (n, out, sum(1 for _, f, _ in P.FIGURES if ("data-file='%s'" % f) in doc), len(P.FIGURES)),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
