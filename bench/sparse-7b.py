#!/usr/bin/env python3
"""sparse-7b.py DIR - write a Llama-2-7B-shaped sharded bf16 safetensors directory whose
weights are holes in sparse files (13.5 GB apparent, ~70 KB on disk). Opening it shows
that the loaders read only headers:
    python3 bench/sparse-7b.py /tmp/s7b && /usr/bin/time -v sinkscope inspect /tmp/s7b
"""
import json, os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else "sparse-7b"
os.makedirs(out, exist_ok=True)
d, f, L, V, H = 4096, 11008, 32, 32000, 32
names = [("model.embed_tokens.weight", [V, d]), ("model.norm.weight", [d]), ("lm_head.weight", [V, d])]
for l in range(L):
    p = f"model.layers.{l}."
    names += [(p + "input_layernorm.weight", [d]), (p + "post_attention_layernorm.weight", [d])]
    names += [(p + f"self_attn.{x}_proj.weight", [d, d]) for x in "qkvo"]
    names += [(p + "mlp.gate_proj.weight", [f, d]), (p + "mlp.up_proj.weight", [f, d]),
              (p + "mlp.down_proj.weight", [d, f])]
wm = {}
for i in range(3):
    fn = f"model-{i + 1:05d}-of-00003.safetensors"
    hdr, off = {}, 0
    for n, s in names[i::3]:
        nb = 2
        for x in s:
            nb *= x
        hdr[n] = {"dtype": "BF16", "shape": s, "data_offsets": [off, off + nb]}
        off += nb
        wm[n] = fn
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, fn), "wb") as fp:
        fp.write(struct.pack("<Q", len(h)) + h)
    os.truncate(os.path.join(out, fn), 8 + len(h) + off)
json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(out, "model.safetensors.index.json"), "w"))
json.dump({"architectures": ["LlamaForCausalLM"], "hidden_size": d, "intermediate_size": f, "num_hidden_layers": L,
           "num_attention_heads": H, "vocab_size": V, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"},
          open(os.path.join(out, "config.json"), "w"))
