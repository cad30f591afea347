#!/usr/bin/env python3
"""Tiny random checkpoints of each model family with transformers' own outputs.

Run where transformers, torch, tokenizers and sentencepiece are installed (the
references in test/data/families/ were made with transformers 5.17, torch 2.11):

    PYTHONPATH=<llama.cpp>/gguf-py python3 scripts/make-family-refs.py \
        --out OUT --tokenizer-model <a SentencePiece tokenizer.model with 4096 pieces> \
        --converter <llama.cpp>/convert_hf_to_gguf.py [--only gpt2,olmo2]

For every family (FAMILIES below) it
  1. builds a tiny random model (d 64, 2-6 layers) with transformers, norm weights
     drawn at random too (so that w and 1 + w differ), saves it with save_pretrained
     in bf16 (new config style: dtype, rope_parameters), and writes the same config
     in the classic style (torch_dtype, rope_theta, rope_scaling) as config.classic.json;
     Linear biases (GPT-2) are drawn at random too (transformers starts them at zero);
     GPT-2 also gets model.bare.safetensors, its tensors without the "transformer."
     prefix, as the base-model checkpoints name them;
  2. reloads the saved bf16 weights in f32 with eager attention and records, for a
     fixed prompt of T tokens: alpha_0 per layer and head (mean over queries of the
     attention on key 0), max |h| of the embeddings and of each decoder layer's output
     (before the final norm), and the logits at the first and last positions (ref.json);
  3. converts the folder with llama.cpp's convert_hf_to_gguf.py (--outtype bf16). The
     SentencePiece families get the given tokenizer.model; the byte-level ones (GPT-2,
     OLMo 2) a BPE tokenizer.json trained here with the `tokenizers` library. The
     converter refuses a tokenizer.json whose pre-tokenizer hash it does not know: for
     those it is run in-process with its pre-tokenizer lookup answering "gpt-2" (the
     tensors and keys are still the converter's own). how.txt in each folder says which.
"""
import argparse
import json
import math
import os
import runpy
import shutil
import subprocess
import sys
import traceback

import torch
import transformers

D, FF, H, DH = 64, 128, 4, 16
T = 24  # prompt length of the references


def families():
    """name -> (config class, model class, kwargs, tokenizer kind)"""
    C = transformers
    common = dict(hidden_size=D, intermediate_size=FF, num_attention_heads=H, head_dim=DH,
                  max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.2,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gemma": (C.GemmaConfig, C.GemmaForCausalLM,
                  dict(common, vocab_size=4096, num_hidden_layers=2, num_key_value_heads=1,
                       hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh"), "spm"),
        "gemma2": (C.Gemma2Config, C.Gemma2ForCausalLM,
                   dict(common, vocab_size=4096, num_hidden_layers=2, num_key_value_heads=2,
                        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16,
                        attn_logit_softcapping=3.0, final_logit_softcapping=5.0, sliding_window=8), "spm"),
        "gemma3": (C.Gemma3TextConfig, C.Gemma3ForCausalLM,
                   dict(common, vocab_size=4096, num_hidden_layers=6, num_key_value_heads=2,
                        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, sliding_window=8,
                        rope_theta=1e6, rope_local_base_freq=1e4), "spm"),
        "olmo2": (C.Olmo2Config, C.Olmo2ForCausalLM,
                  dict(common, vocab_size=512, num_hidden_layers=2, num_key_value_heads=2,
                       tie_word_embeddings=False), "bpe"),
        "phi3": (C.Phi3Config, C.Phi3ForCausalLM,
                 dict(common, vocab_size=4096, num_hidden_layers=2, num_key_value_heads=4,
                      partial_rotary_factor=0.5, tie_word_embeddings=False, original_max_position_embeddings=64,
                      rope_scaling={"type": "longrope",
                                    "short_factor": [1.0 + 0.25 * i for i in range(DH // 4)],
                                    "long_factor": [2.0 + 0.5 * i for i in range(DH // 4)]}), "spm"),
        "gpt2": (C.GPT2Config, C.GPT2LMHeadModel,
                 dict(vocab_size=512, n_embd=D, n_layer=2, n_head=H, n_positions=128, n_ctx=128,
                      n_inner=FF, activation_function="gelu_new", layer_norm_epsilon=1e-5,
                      initializer_range=0.2, bos_token_id=0, eos_token_id=0), "bpe"),
    }


def train_bpe(path_json, vocab, text_files):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(text_files, tr)
    tok.save(path_json)
    # tokenizer_config.json and special_tokens_map.json beside it, as published folders have
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=path_json, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(os.path.dirname(path_json))
    return tok.get_vocab_size()


def make_config(Cfg, kw):
    """The config from the classic keyword arguments, or, where this transformers wants
    them, the same values as rope_parameters."""
    try:
        return Cfg(**kw)
    except Exception:
        kw2 = dict(kw)
        rs, th = kw2.pop("rope_scaling", None), kw2.pop("rope_theta", None)
        loc = kw2.pop("rope_local_base_freq", None)
        if loc is not None:
            kw2["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": th},
                                      "sliding_attention": {"rope_type": "default", "rope_theta": loc}}
        elif rs is not None:
            rp = dict(rs)
            rp["rope_type"] = rp.pop("type")
            rp["rope_theta"] = th or 10000.0
            for k in ("partial_rotary_factor", "original_max_position_embeddings"):
                if k in kw2:
                    rp[k] = kw2[k]
            kw2["rope_parameters"] = rp
        return Cfg(**kw2)


def randomize_norms(model, gen, unit_offset):
    """Norm weights at random: for (1 + w) families w in multiples of 2^-7 (so that w and
    1 + w are both exact in bf16 and the GGUF converter's +1 loses nothing), else
    positive weights around 1; biases (LayerNorm) small."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if "norm" in low or ".ln_" in low or low.startswith("ln_") or ".ln_f" in low:
                if name.endswith("bias"):
                    p.copy_((torch.randint(-16, 17, p.shape, generator=gen) / 128.0).to(p.dtype))
                elif unit_offset:
                    p.copy_((torch.randint(-40, 41, p.shape, generator=gen) / 128.0).to(p.dtype))
                else:
                    p.copy_((torch.randint(64, 192, p.shape, generator=gen) / 128.0).to(p.dtype))


def randomize_biases(model, gen):
    """Biases of the linear layers (GPT-2's c_attn, c_proj, c_fc) at random, multiples of
    2^-7 in [-0.19, 0.19] (exact in bf16): transformers initializes them to zero, and a
    reference with zero biases cannot tell whether a reader adds them, or adds them to
    the right q / k / v columns."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            low = name.lower()
            if name.endswith("bias") and not ("norm" in low or ".ln_" in low or low.startswith("ln_")):
                p.copy_((torch.randint(-24, 25, p.shape, generator=gen) / 128.0).to(p.dtype))


def save_bare(model_dir):
    """GPT-2 as some published checkpoints store it (the base model's names, without the
    "transformer." prefix): model.bare.safetensors beside config.json, same tensors."""
    from safetensors.torch import load_file, save_file
    t = load_file(os.path.join(model_dir, "model.safetensors"))
    bare = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in t.items()}
    save_file(bare, os.path.join(model_dir, "model.bare.safetensors"), metadata={"format": "pt"})


def classic_config(cfg):
    """The same config in the classic style: torch_dtype, rope_theta / rope_scaling."""
    c = dict(cfg)
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    rp = c.pop("rope_parameters", None)
    if isinstance(rp, dict):
        if "full_attention" in rp or "sliding_attention" in rp:
            full, loc = rp.get("full_attention", {}), rp.get("sliding_attention", {})
            if "rope_theta" in full:
                c["rope_theta"] = full["rope_theta"]
            if "rope_theta" in loc:
                c["rope_local_base_freq"] = loc["rope_theta"]
            rp = full
        elif "rope_theta" in rp:
            c["rope_theta"] = rp["rope_theta"]
        rest = {k: v for k, v in rp.items() if k not in ("rope_theta",)}
        if rest.get("rope_type", "default") != "default":
            rest["type"] = rest.pop("rope_type")
            c["rope_scaling"] = rest
        elif "partial_rotary_factor" in rest:
            c["partial_rotary_factor"] = rest["partial_rotary_factor"]
    return c


def references(model_dir, prompt):
    m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                          attn_implementation="eager")
    m.eval()
    layers = None
    for attr in ("model.layers", "transformer.h"):
        obj = m
        try:
            for a in attr.split("."):
                obj = getattr(obj, a)
            layers = obj
            break
        except AttributeError:
            continue
    outs = []
    hooks = [l.register_forward_hook(lambda mod, i, o: outs.append((o[0] if isinstance(o, tuple) else o).detach()))
             for l in layers]
    core, _ = run_prompt(m, prompt, outs, hooks)
    return {**core, **provenance()}


def run_prompt(m, prompt, outs, hooks):
    """The eager forward pass of prompt with the hooks attached (removed after): the fields
    every reference file has (tokens, alpha_0, the block max |h| from the layer outputs the
    hooks put in outs, the first and last logits), and the logits."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        r = m(ids, output_attentions=True, output_hidden_states=True)
    for h in hooks:
        h.remove()
    emb = r.hidden_states[0][0]
    alpha0 = [[float(a[0, hh, :, 0].mean()) for hh in range(a.shape[1])] for a in r.attentions]
    hmax = [float(emb.abs().max())] + [float(o[0].abs().max()) for o in outs]
    logits = r.logits[0]
    return {
        "tokens": prompt,
        "alpha0": alpha0,
        "hidden_max": hmax,
        "logit_positions": [0, len(prompt) - 1],
        "logits": [[float(x) for x in logits[0]], [float(x) for x in logits[-1]]],
    }, logits


def provenance():
    """What made a reference file: the versions and the precision (last keys of the file)."""
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "compute": "f32 eager, weights from the bf16 checkpoint",
    }


def convert(name, model_dir, out_gguf, converter, log):
    cmd = [sys.executable, converter, model_dir, "--outfile", out_gguf, "--outtype", "bf16"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    with open(log, "w") as f:
        f.write(p.stdout[-20000:] + "\n" + p.stderr[-20000:])
    if p.returncode == 0 and os.path.exists(out_gguf):
        return "convert_hf_to_gguf.py --outtype bf16"
    # the converter refuses tokenizer.json files whose pre-tokenizer hash it does not
    # know (a tokenizer trained here): run it in-process with that lookup answering gpt-2
    code = (
        "import sys, runpy; sys.path.insert(0, %r); sys.argv = %r\n"
        "import conversion.base as B\n"
        "B.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'gpt-2'\n"
        "runpy.run_path(%r, run_name='__main__')\n"
    ) % (os.path.dirname(os.path.abspath(converter)), [converter] + cmd[2:], converter)
    p2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    with open(log, "a") as f:
        f.write("\n==== retry with the pre-tokenizer lookup answering gpt-2 ====\n")
        f.write(p2.stdout[-20000:] + "\n" + p2.stderr[-20000:])
    if p2.returncode == 0 and os.path.exists(out_gguf):
        return ("convert_hf_to_gguf.py --outtype bf16, run in-process with get_vocab_base_pre -> 'gpt-2' "
                "(it refused the trained tokenizer.json: unknown pre-tokenizer hash)")
    return None


def parse_args(tokenizer_required):
    """The command line both reference scripts take; OUT is created."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-model", required=tokenizer_required, default="",
                    help="a SentencePiece tokenizer.model (the SentencePiece families)")
    ap.add_argument("--converter", required=True)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    return args


def training_texts():
    """Text to train the byte-level tokenizers on: transformers' own sources."""
    src = os.path.dirname(transformers.__file__)
    texts = []
    for root, _, files in os.walk(src):
        for fn in sorted(files):
            if fn.endswith(".py"):
                texts.append(os.path.join(root, fn))
        if len(texts) > 400:
            break
    return texts


def main():
    args = parse_args(False)
    texts = training_texts()
    summary = {}
    for name, (Cfg, Model, kw, tk) in families().items():
        if args.only and name not in args.only.split(","):
            continue
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        how = []
        try:
            torch.manual_seed(1234)
            gen = torch.Generator().manual_seed(99)
            if tk == "bpe":
                nv = train_bpe(os.path.join(d, "tokenizer.json"), kw["vocab_size"], texts)
                kw = dict(kw, vocab_size=nv)
                how.append("tokenizer.json: byte-level BPE trained here with tokenizers, %d tokens" % nv)
            else:
                if not args.tokenizer_model:
                    raise SystemExit("%s needs --tokenizer-model" % name)
                shutil.copy(args.tokenizer_model, os.path.join(d, "tokenizer.model"))
                how.append("tokenizer.model: the shared trained-llama SentencePiece model (4096 pieces)")
            cfg = make_config(Cfg, kw)
            model = Model(cfg).to(torch.float32)
            randomize_norms(model, gen, name.startswith("gemma"))
            randomize_biases(model, gen)
            model = model.to(torch.bfloat16)
            model.save_pretrained(d)
            with open(os.path.join(d, "config.json")) as f:
                cj = json.load(f)
            with open(os.path.join(d, "config.classic.json"), "w") as f:
                json.dump(classic_config(cj), f, indent=2)
            how.append("model.safetensors, config.json: transformers %s save_pretrained (bf16, new config style)"
                       % transformers.__version__)
            how.append("config.classic.json: the same config in the classic style (written by this script)")
            V = cj.get("vocab_size")
            g = torch.Generator().manual_seed(7)
            bos = cj.get("bos_token_id") if isinstance(cj.get("bos_token_id"), int) else 1
            prompt = [bos] + [int(x) for x in torch.randint(3, V, (T - 1,), generator=g)]
            ref = references(d, prompt)
            with open(os.path.join(d, "ref.json"), "w") as f:
                json.dump(ref, f)
            how.append("ref.json: transformers eager f32 on the saved bf16 weights, prompt of %d tokens" % T)
            conv = convert(name, d, os.path.join(d, "model.gguf"), args.converter, os.path.join(d, "convert.log"))
            how.append("model.gguf: " + (conv or "NOT MADE: the converter refused (see convert.log)"))
            if name == "gpt2":
                # after the conversion: the converter reads every *.safetensors in the
                # folder and would meet each tensor twice
                save_bare(d)
                how.append("model.bare.safetensors: the same tensors without the 'transformer.' prefix")
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
