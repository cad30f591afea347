#!/usr/bin/env python3
"""Reference numbers for `sinkscope perplexity`, `kv-eval` and `quant-risk`, made with
PyTorch + transformers on a Hugging Face Llama directory (run on a GPU machine; it needs
torch, transformers and sentencepiece, none of which the C build uses).

usage: make-ppl-reference.py MODEL_DIR TEXT_FILE OUT.json [--spike-channels 356]

What it writes (JSON), every number from transformers' own LlamaForCausalLM (eager
attention, TF32 off):
  ids              [BOS] + SentencePiece ids of the text (tokenizer.model of MODEL_DIR)
  hf_ids_equal     whether transformers' tokenizer gives the same ids (null: not loaded)
  runs[]           one per (window, stride): windows [{begin, end, first, n_scored,
                   nll_f64, nll_f32}] with nll the SUM of -log p(id[t] | id[begin..t-1])
                   over the scored targets t in [first, end); totals and perplexity
  kv[]             perplexity with a custom 4-D additive attention mask: query i sees key
                   j <= i when i - j < W, or j < S (S = 0: last W keys only)
  quant[]          perplexity with every decoder linear input (q/k/v, o, gate/up, down;
                   not lm_head) fake-quantized per window: int8/int4 symmetric per tensor
                   or per token (round half to even, scale max|x| / qmax), fp8 e4m3 (scale
                   max|x| / 448, torch.float8_e4m3fn rounding), without and with outlier
                   channels kept in f32 (the top-k channels of max_t |x| plus, for the
                   attention and FFN inputs, the spike channels given)
Windows follow the rule of sinkscope perplexity (docs/cost.md): windows start at
0, stride, 2 stride, ... until one reaches the end; window [b, e) scores targets
t >= max(b + 1, end of the previous window).
"""
import argparse
import json
import math
import sys
import traceback

import torch


def windows(n, w, s):
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + w, n)
        out.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            return out
        begin += s


def window_nll(model, ids, b, e, first, dev, mask=None):
    x = torch.tensor([ids[b:e]], device=dev)
    with torch.no_grad():
        kw = {} if mask is None else {"attention_mask": mask}
        logits = model(input_ids=x, **kw).logits[0].double()
    lse = torch.logsumexp(logits, dim=-1)
    tot = 0.0
    for t in range(first, e):
        tot += float(lse[t - 1 - b] - logits[t - 1 - b, ids[t]])
    return tot


def additive_mask(n, w, s, dtype, dev):
    i = torch.arange(n, device=dev).view(n, 1)
    j = torch.arange(n, device=dev).view(1, n)
    ok = (j <= i) & ((i - j < w) | (j < s))
    m = torch.zeros(n, n, dtype=dtype, device=dev)
    m[~ok] = torch.finfo(dtype).min
    return m.view(1, 1, n, n)


def fake_quant(x, scheme, keep_idx):
    """x (..., n) float32; returns the fake-quantized tensor (kept channels exact)."""
    shp = x.shape
    x2 = x.reshape(-1, shp[-1]).float()
    keep = torch.zeros(shp[-1], dtype=torch.bool, device=x.device)
    if keep_idx is not None and len(keep_idx):
        keep[keep_idx] = True
    q = x2.clone()
    xm = x2[:, ~keep]
    if xm.numel():
        if scheme == "fp8-e4m3":
            amax = xm.abs().max()
            s = amax / 448.0 if amax > 0 else torch.tensor(1.0, device=x.device)
            y = (xm / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
        else:
            bits, gran = scheme.split("-")
            qmax = 127.0 if bits == "int8" else 7.0
            if gran == "tensor":
                amax = xm.abs().max().expand(xm.shape[0]).reshape(-1, 1)
            else:
                amax = xm.abs().max(dim=1, keepdim=True).values
            s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
            y = torch.clamp(torch.round(xm / s), -qmax, qmax) * s
        q[:, ~keep] = y
    return q.reshape(shp).to(x.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("out")
    ap.add_argument("--spike-channels", default="")
    ap.add_argument("--keep-top", type=int, default=8)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"device": dev, "torch": torch.__version__}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    import sentencepiece as spm
    import transformers
    from transformers import AutoModelForCausalLM

    res["transformers"] = transformers.__version__
    text = open(a.text, encoding="utf-8").read()
    sp = spm.SentencePieceProcessor(model_file=a.model + "/tokenizer.model")
    ids = [sp.bos_id()] + sp.encode(text)
    res["ids"] = ids
    res["n_tokens"] = len(ids)
    try:
        from transformers import LlamaTokenizer
        tk = LlamaTokenizer(vocab_file=a.model + "/tokenizer.model")
        hid = tk(text)["input_ids"]
        res["hf_ids_equal"] = hid == ids
        res["hf_ids_first_diff"] = next((i for i, (p, q) in enumerate(zip(hid, ids)) if p != q), None)
    except Exception as e:  # the check is informative only
        res["hf_ids_equal"] = None
        res["hf_tokenizer_error"] = repr(e)
    save()

    models = {}
    for name, dt in (("f64", torch.float64), ("f32", torch.float32)):
        models[name] = AutoModelForCausalLM.from_pretrained(a.model, dtype=dt, attn_implementation="eager").to(dev).eval()
    ctx = models["f32"].config.max_position_embeddings
    res["context"] = ctx

    res["runs"] = []
    for w, s in ((ctx, ctx), (ctx, ctx // 2), (100, 100)):
        run = {"window": w, "stride": s, "windows": []}
        tot = {"f64": 0.0, "f32": 0.0}
        ns = 0
        for b, e, first in windows(len(ids), w, s):
            row = {"begin": b, "end": e, "first": first, "n_scored": e - first}
            for name, m in models.items():
                row["nll_" + name] = window_nll(m, ids, b, e, first, dev)
                tot[name] += row["nll_" + name]
            ns += e - first
            run["windows"].append(row)
        run["n_scored"] = ns
        for name in tot:
            run["nll_sum_" + name] = tot[name]
            run["ppl_" + name] = math.exp(tot[name] / ns)
        res["runs"].append(run)
        save()

    # kv masks: (a) full via an explicit causal mask (checks the mask path), (b) last W,
    # (c) first S + last W; f64 model, windows of the context with stride = context
    try:
        kv = []
        m = models["f64"]
        for w, s in ((ctx, 0), (64, 0), (64, 4), (32, 0), (32, 4)):
            tot, ns = 0.0, 0
            for b, e, first in windows(len(ids), ctx, ctx):
                mask = additive_mask(e - b, w, s, torch.float64, dev)
                tot += window_nll(m, ids, b, e, first, dev, mask)
                ns += e - first
            kv.append({"kv_window": w, "sinks": s, "nll_sum": tot, "n_scored": ns, "ppl": math.exp(tot / ns)})
        res["kv"] = kv
    except Exception:
        res["kv_error"] = traceback.format_exc()
    save()

    # end-to-end fake quantization of every decoder linear input, f32 model
    try:
        spike = [int(c) for c in a.spike_channels.split(",") if c]
        m = models["f32"]
        state = {"scheme": None, "keep": False}
        handles = []

        def make_hook(kind):
            def hook(mod, args):
                if state["scheme"] is None:
                    return None
                x = args[0]
                keep = None
                if state["keep"]:
                    cm = x.reshape(-1, x.shape[-1]).abs().max(dim=0).values
                    top = torch.topk(cm, min(a.keep_top, cm.numel())).indices.tolist()
                    sset = set(top)
                    if kind == "resid":
                        sset |= set(c for c in spike if c < x.shape[-1])
                    keep = sorted(sset)
                return (fake_quant(x, state["scheme"], keep),) + tuple(args[1:])
            return hook

        for layer in m.model.layers:
            at, mlp = layer.self_attn, layer.mlp
            for mod, kind in ((at.q_proj, "resid"), (at.k_proj, "resid"), (at.v_proj, "resid"), (at.o_proj, "wo"),
                              (mlp.gate_proj, "resid"), (mlp.up_proj, "resid"), (mlp.down_proj, "down")):
                handles.append(mod.register_forward_pre_hook(make_hook(kind)))
        quant = []
        for scheme in ("int8-tensor", "int8-token", "int4-tensor", "int4-token", "fp8-e4m3"):
            for keep in (False, True):
                state["scheme"], state["keep"] = scheme, keep
                tot, ns = 0.0, 0
                for b, e, first in windows(len(ids), ctx, ctx):
                    tot += window_nll(m, ids, b, e, first, dev)
                    ns += e - first
                quant.append({"scheme": scheme, "keep_outliers": keep, "keep_top": a.keep_top,
                              "spike_channels": spike, "nll_sum": tot, "n_scored": ns, "ppl": math.exp(tot / ns)})
        state["scheme"] = None
        for h in handles:
            h.remove()
        res["quant"] = quant
    except Exception:
        res["quant_error"] = traceback.format_exc()
    save()
    print(json.dumps({k: v for k, v in res.items() if k != "ids"}, indent=1)[:6000])


if __name__ == "__main__":
    sys.exit(main())
