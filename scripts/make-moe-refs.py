#!/usr/bin/env python3
"""Tiny random mixture-of-experts checkpoints with transformers' own outputs.

The MoE sibling of make-family-refs.py (whose helpers it reuses), run the same way where
transformers, torch and tokenizers are installed:

    PYTHONPATH=<llama.cpp>/gguf-py python3 scripts/make-moe-refs.py \
        --out OUT --tokenizer-model <a SentencePiece tokenizer.model with 4096 pieces> \
        --converter <llama.cpp>/convert_hf_to_gguf.py

For every family (FAMILIES below: Mixtral, Qwen2-MoE, Qwen3-MoE, and a Qwen3-MoE with
dense layers chosen by decoder_sparse_step and mlp_only_layers) it
  1. builds a tiny random model (d 64, 2-4 layers, 4-8 experts, top-2 or top-3) with
     transformers, with every router, expert and norm weight drawn at random (a router
     left at zero would tie every expert), and saves it with save_pretrained in bf16;
  2. writes the experts under the per-expert names that published checkpoints use
     (Mixtral block_sparse_moe.experts.E.w1/w2/w3 and block_sparse_moe.gate; Qwen
     mlp.experts.E.gate_proj/up_proj/down_proj and mlp.gate) when save_pretrained wrote
     them stacked (transformers 5: mlp.experts.gate_up_proj (E, 2f, d), mlp.experts.
     down_proj (E, d, f)); the folder itself then holds the per-expert file and fused/
     the stacked one as save_pretrained wrote it. Both are reloaded with transformers
     and must give the same logits (names.json lists each file's tensors);
  3. reloads the bf16 weights in f32 with eager attention and records, for a fixed
     prompt of T tokens (ref.json): alpha_0 per layer and head, max |h| of the
     embeddings and of each layer's output, the logits at the first and last positions,
     and per MoE layer the experts each token was routed to with their weights (read
     from the router module's own output where it returns them, else recomputed from
     its logits by the family's rule);
  4. converts the per-expert folder with llama.cpp's convert_hf_to_gguf.py (bf16), as
     make-family-refs.py does (how.txt says how).
ties.json (top level): torch.topk's choice on router logits with exact ties (all
equal, pairs equal across the top-k boundary), softmax and weights as the routers
compute them, so that the C side's tie rule is checked against torch's.
"""
import importlib.util
import json
import os
import shutil
import sys
import traceback

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("mfr", os.path.join(HERE, "make-family-refs.py"))
mfr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mfr)

D, H, DH = 64, 4, 16
T = 24


def families():
    C = transformers
    common = dict(hidden_size=D, num_attention_heads=H, head_dim=DH, num_key_value_heads=2,
                  max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.2,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    qcommon = dict(common, vocab_size=512, tie_word_embeddings=False, intermediate_size=96,
                   moe_intermediate_size=32, num_experts=8, use_sliding_window=False)
    return {
        "mixtral": (C.MixtralConfig, C.MixtralForCausalLM,
                    dict(common, vocab_size=4096, num_hidden_layers=2, intermediate_size=64,
                         num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=True,
                         rope_theta=1e6, sliding_window=None), "spm"),
        "qwen2moe": (C.Qwen2MoeConfig, C.Qwen2MoeForCausalLM,
                     dict(qcommon, num_hidden_layers=2, num_experts_per_tok=2, norm_topk_prob=False,
                          shared_expert_intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[],
                          qkv_bias=True), "bpe"),
        "qwen3moe": (C.Qwen3MoeConfig, C.Qwen3MoeForCausalLM,
                     dict(qcommon, num_hidden_layers=2, num_experts_per_tok=3, norm_topk_prob=True,
                          decoder_sparse_step=1, mlp_only_layers=[]), "bpe"),
        # dense layers: (l + 1) % decoder_sparse_step != 0 or l in mlp_only_layers -> layers 0, 2, 3
        # dense, layer 1 sparse. llama.cpp's qwen3moe has no dense FFN tensors: HF only.
        "qwen3moe-mixed": (C.Qwen3MoeConfig, C.Qwen3MoeForCausalLM,
                           dict(qcommon, num_hidden_layers=4, num_experts_per_tok=2, norm_topk_prob=True,
                                decoder_sparse_step=2, mlp_only_layers=[3]), "bpe-nogguf"),
    }


def randomize(model, gen):
    """Norms as make-family-refs.py draws them; any other weight that is constant (a
    router initialised to zero) drawn from N(0, 0.2^2)."""
    mfr.randomize_norms(model, gen, False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                continue
            if p.numel() > 1 and float(p.max() - p.min()) == 0.0:
                p.copy_((torch.randn(p.shape, generator=gen) * 0.2).to(p.dtype))


def read_names(path):
    from safetensors import safe_open
    out = {}
    with safe_open(path, "pt") as f:
        for k in f.keys():
            out[k] = list(f.get_slice(k).get_shape())
    return out


def per_expert_state(sd, fam, cfg):
    """The per-expert names of published checkpoints from whatever save_pretrained wrote;
    None when it wrote them already."""
    stacked = [k for k in sd if k.endswith("experts.gate_up_proj") or k.endswith("experts.down_proj")
               or k.endswith("experts.gate_up_proj.weight") or k.endswith("experts.down_proj.weight")]
    if not stacked:
        return None
    out = {}
    for k, v in sd.items():
        base = k[:-len(".weight")] if k.endswith(".weight") else k
        if base.endswith("experts.gate_up_proj"):
            pre = base[:-len("experts.gate_up_proj")]  # model.layers.L.mlp.
            E, two_f, _ = v.shape
            f = two_f // 2
            for e in range(E):
                g, u = v[e, :f, :].contiguous(), v[e, f:, :].contiguous()
                if fam == "mixtral":
                    p = pre.replace(".mlp.", ".block_sparse_moe.") + "experts.%d." % e
                    out[p + "w1.weight"], out[p + "w3.weight"] = g, u
                else:
                    p = pre + "experts.%d." % e
                    out[p + "gate_proj.weight"], out[p + "up_proj.weight"] = g, u
        elif base.endswith("experts.down_proj"):
            pre = base[:-len("experts.down_proj")]
            for e in range(v.shape[0]):
                if fam == "mixtral":
                    out[pre.replace(".mlp.", ".block_sparse_moe.") + "experts.%d.w2.weight" % e] = v[e].contiguous()
                else:
                    out[pre + "experts.%d.down_proj.weight" % e] = v[e].contiguous()
        elif fam == "mixtral" and ".mlp.gate." in k:
            out[k.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = v
        else:
            out[k] = v
    return out


def fused_state(sd, fam):
    """The stacked layout of transformers 5 (mlp.experts.gate_up_proj (E, 2f, d) with the
    gate rows first, mlp.experts.down_proj (E, d, f), router mlp.gate) from per-expert
    names, for when save_pretrained wrote per-expert names."""
    import re
    pat = re.compile(r"^(model\.layers\.\d+\.)(block_sparse_moe|mlp)\.experts\.(\d+)\.(\w+)\.weight$")
    parts, out = {}, {}
    for k, v in sd.items():
        mm = pat.match(k)
        if not mm:
            out[k.replace(".block_sparse_moe.gate.", ".mlp.gate.")] = v
            continue
        which = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}.get(mm.group(4), mm.group(4))
        parts.setdefault(mm.group(1), {}).setdefault(which, {})[int(mm.group(3))] = v
    for pre, d in parts.items():
        E = len(d["gate_proj"])
        out[pre + "mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([d["gate_proj"][e], d["up_proj"][e]], 0) for e in range(E)]).contiguous()
        out[pre + "mlp.experts.down_proj"] = torch.stack([d["down_proj"][e] for e in range(E)]).contiguous()
    return out


def route_from_logits(logits, k, renorm):
    p = torch.softmax(logits.float(), dim=-1)
    w, idx = torch.topk(p, k, dim=-1)
    if renorm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w, idx


def references(model_dir, prompt, cfg):
    m, info = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                                attn_implementation="eager", output_loading_info=True)
    bad = {k: sorted(v)[:8] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        raise RuntimeError("%s does not load cleanly: %s" % (model_dir, bad))
    m.eval()
    layers = m.model.layers
    outs, routes = [], {}
    hooks = [l.register_forward_hook(lambda mod, i, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
             for l in layers]
    k = cfg.get("num_experts_per_tok")
    renorm = cfg.get("norm_topk_prob", True) if "num_local_experts" not in cfg else True
    how_route = {}

    def mk(li):
        def hook(mod, inp, o):
            if isinstance(o, tuple) and len(o) >= 3:
                w, idx = o[1], o[2]
                if w.shape[-1] != idx.shape[-1]:
                    w = w.gather(-1, idx)  # scores scattered over all experts
                how_route[li] = "the router module's own (scores, indices)"
            else:
                lg = o[0] if isinstance(o, tuple) else o
                w, idx = route_from_logits(lg, k, renorm)
                how_route[li] = "recomputed from the router's logits (softmax, topk, renormalise=%s)" % renorm
            routes[li] = {"experts": idx.reshape(-1, idx.shape[-1]).tolist(),
                          "weights": w.reshape(-1, w.shape[-1]).float().tolist()}
        return hook

    for li, l in enumerate(layers):
        blk = getattr(l, "block_sparse_moe", None) or getattr(l, "mlp", None)
        g = getattr(blk, "gate", None)
        if g is not None and hasattr(blk, "experts"):
            hooks.append(g.register_forward_hook(mk(li)))
    core, logits = mfr.run_prompt(m, prompt, outs, hooks)
    return {
        **core,
        "moe_layers": sorted(routes),
        "routes": {str(li): routes[li] for li in sorted(routes)},
        "routes_how": {str(li): how_route[li] for li in sorted(how_route)},
        **mfr.provenance(),
    }, logits


def ties():
    """torch.topk on logits with exact ties, as the routers call it (softmax in f32 first)."""
    cases = {
        "all_equal_e8_k2": [[0.5] * 8],
        "pair_across_boundary_e4_k2": [[1.0, 0.25, 0.25, -1.0], [0.1, 0.3, 0.3, 0.2], [2.0, -1.0, 2.0, 2.0]],
        "pair_across_boundary_e8_k3": [[0.0, 1.0, 0.5, 0.5, 0.5, -2.0, 1.0, 0.25]],
        "zeros_e4_k1": [[0.0, 0.0, 0.0, 0.0]],
    }
    out = {}
    for name, rows in cases.items():
        E = len(rows[0])
        k = int(name.rsplit("_k", 1)[1])
        lg = torch.tensor(rows, dtype=torch.float32)
        p = torch.softmax(lg, dim=-1, dtype=torch.float)
        w, idx = torch.topk(p, k, dim=-1)
        out[name] = {"logits": rows, "k": k, "n_experts": E, "experts": idx.tolist(),
                     "weights_raw": w.tolist(), "weights_renorm": (w / w.sum(-1, keepdim=True)).tolist()}
    out["torch"] = torch.__version__
    return out


def main():
    args = mfr.parse_args(True)
    with open(os.path.join(args.out, "ties.json"), "w") as f:
        json.dump(ties(), f)
    texts = mfr.training_texts()
    summary = {}
    from safetensors.torch import save_file
    for name, (Cfg, Model, kw, tk) in families().items():
        if args.only and name not in args.only.split(","):
            continue
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        how = []
        try:
            torch.manual_seed(1234)
            gen = torch.Generator().manual_seed(99)
            if tk.startswith("bpe"):
                nv = mfr.train_bpe(os.path.join(d, "tokenizer.json"), kw["vocab_size"], texts)
                kw = dict(kw, vocab_size=nv)
                how.append("tokenizer.json: byte-level BPE trained here with tokenizers, %d tokens" % nv)
            else:
                shutil.copy(args.tokenizer_model, os.path.join(d, "tokenizer.model"))
                how.append("tokenizer.model: the shared trained-llama SentencePiece model (4096 pieces)")
            cfg = mfr.make_config(Cfg, kw)
            model = Model(cfg).to(torch.float32)
            randomize(model, gen)
            model = model.to(torch.bfloat16)
            fused = os.path.join(d, "fused")
            os.makedirs(fused, exist_ok=True)
            model.save_pretrained(fused)
            with open(os.path.join(fused, "config.json")) as f:
                cj = json.load(f)
            names = {"save_pretrained": read_names(os.path.join(fused, "model.safetensors"))}
            how.append("save_pretrained (transformers %s, bf16) wrote: %s" % (
                transformers.__version__, ", ".join(sorted(k for k in names["save_pretrained"] if ".0." in k
                                                           or "layers.0." in k)[:12])))
            from safetensors.torch import load_file
            sd = load_file(os.path.join(fused, "model.safetensors"))
            pe = per_expert_state(sd, name, cj)
            for fn in ("config.json", "generation_config.json"):
                if os.path.exists(os.path.join(fused, fn)):
                    shutil.copy(os.path.join(fused, fn), os.path.join(d, fn))
            if pe is None:
                shutil.move(os.path.join(fused, "model.safetensors"), os.path.join(d, "model.safetensors"))
                save_file(fused_state(sd, name), os.path.join(fused, "model.safetensors"), metadata={"format": "pt"})
                names["stacked_by_script"] = read_names(os.path.join(fused, "model.safetensors"))
                how.append("model.safetensors: save_pretrained's file (per-expert names already); fused/: the "
                           "stacked layout written by this script")
            else:
                save_file(pe, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
                names["per_expert"] = read_names(os.path.join(d, "model.safetensors"))
                how.append("model.safetensors: the same weights under the per-expert names of published "
                           "checkpoints (written by this script); fused/: save_pretrained's stacked file")
            with open(os.path.join(d, "config.classic.json"), "w") as f:
                json.dump(mfr.classic_config(cj), f, indent=2)
            with open(os.path.join(d, "names.json"), "w") as f:
                json.dump(names, f, indent=1)
            V = cj.get("vocab_size")
            g = torch.Generator().manual_seed(7)
            bos = cj.get("bos_token_id") if isinstance(cj.get("bos_token_id"), int) else 1
            prompt = [bos] + [int(x) for x in torch.randint(3, V, (T - 1,), generator=g)]
            first, second = (fused, d) if pe is not None else (d, fused)
            # how.txt names the folders relative to the family's folder, not by machine path
            rel = {fused: "fused/", d: "this folder"}
            ref, lg = references(first, prompt, cj)
            if True:
                try:
                    _, lg2 = references(second, prompt, cj)
                    diff = float((lg - lg2).abs().max())
                    ref["fused_vs_per_expert_max_logit_diff"] = diff
                    how.append("reload check: transformers loads %s too; max |logit difference| against %s = %g"
                               % (rel[second], rel[first], diff))
                except Exception as ex:
                    ref["per_expert_reload_error"] = str(ex)[:2000]
                    how.append("reload check FAILED for %s: %s" % (rel[second], str(ex)[:2000]))
            with open(os.path.join(d, "ref.json"), "w") as f:
                json.dump(ref, f)
            how.append("ref.json: transformers eager f32 on save_pretrained's bf16 weights, prompt of %d "
                       "tokens; routes: %s" % (T, json.dumps(ref["routes_how"])))
            if tk.endswith("nogguf"):
                conv = None
                how.append("model.gguf: not made (llama.cpp's qwen3moe has no dense FFN layers)")
            else:
                conv = mfr.convert(name, d, os.path.join(d, "model.gguf"), args.converter,
                                   os.path.join(d, "convert.log"))
                how.append("model.gguf: " + (conv or "NOT MADE: the converter refused (see convert.log)"))
            summary[name] = {"ok": True, "gguf": bool(conv), "config": cj}
        except Exception:
            tb = traceback.format_exc()
            how.append("FAILED:\n" + tb)
            summary[name] = {"ok": False, "error": tb[-3000:]}
        with open(os.path.join(d, "how.txt"), "w") as f:
            f.write("\n".join(how) + "\n")
        print(name, "ok" if summary[name]["ok"] else "FAILED", flush=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)


if __name__ == "__main__":
    main()
