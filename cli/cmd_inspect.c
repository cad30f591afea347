/* cmd_inspect.c - `sinkscope inspect MODEL [--json]`: what the loaders see in a model. */
#include "cli.h"
#include "../analysis/sks_out.h"
#include "../loaders/sks_gguf.h"
#include "../loaders/sks_tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const char *sks__scaling_name(sks_rope_scaling_type t) {
    switch (t) {
    case SKS_ROPE_SCALING_LLAMA3: return "llama3";
    case SKS_ROPE_SCALING_LINEAR: return "linear";
    default: return "none";
    }
}

/* The tokenizer the analyses would use: its kind and size, or NULL with why in *why. */
static const char *sks__tokenizer_line(const sks_model *m, char *buf, size_t n) {
    sks_tokenizer *t = NULL;
    if (sks_tokenizer_open_for_model(m, NULL, &t)) {
        snprintf(buf, n, "none found (%s): prompts become pseudo-random ids", sks_last_error());
        sks_clear_error();
        return NULL;
    }
    snprintf(buf, n, "%s, %d pieces", sks_tokenizer_kind(t), sks_tokenizer_vocab_size(t));
    sks_tokenizer_free(t);
    return buf;
}

static int sks__inspect_json(const sks_model *m) {
    const sks_arch *a = sks_model_arch(m);
    char tb[512];
    const char *tk = sks__tokenizer_line(m, tb, sizeof tb);
    json_t *sh = json_array(), *ts = json_array(), *mx = json_array();
    for (int i = 0; i < sks_model_n_shards(m); i++) json_array_append_new(sh, json_string(sks_model_shard_path(m, i)));
    for (size_t i = 0; i < sks_model_n_tensors(m); i++) {
        sks_role role;
        int layer;
        const sks_tensor *t = sks_model_tensor_at(m, i, &role, &layer);
        json_t *shape = t->ndim == 2 ? json_pack("[II]", (json_int_t)t->shape[0], (json_int_t)t->shape[1])
                                     : json_pack("[I]", (json_int_t)t->shape[0]);
        json_t *e = json_pack("{s:s, s:s, s:i, s:s, s:o, s:i}", "name", t->name, "role", sks_role_name(role), "layer",
                              layer, "dtype", sks_dtype_name(t->dtype), "shape", shape, "shard", t->shard);
        if (e && sks_model_tensor_expert_at(m, i) >= 0)
            json_object_set_new(e, "expert", json_integer(sks_model_tensor_expert_at(m, i)));
        json_array_append_new(ts, e);
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:o, s:s, s:o*, s:o, "
                          "s:b, s:b, s:b, s:b, s:i, s:i, s:I, s:o, s:o}",
                          "path", sks_model_path(m), "format", sks_format_name(sks_model_format(m)), "family", a->family,
                          "n_layers", a->n_layers, "n_blocks", 2 * a->n_layers + 1, "tokenizer",
                          tk ? json_string(tk) : json_null(), "d_model", a->d_model, "d_ffn", a->d_ffn, "n_heads",
                          a->n_heads, "n_kv_heads", a->n_kv_heads, "head_dim", a->head_dim, "vocab_size", a->vocab_size,
                          "max_seq", a->max_seq, "n_params", (json_int_t)sks_model_n_params(m), "rope_theta",
                          sks_json_num(a->rope_theta), "rope_scaling", sks__scaling_name(a->rope_scaling),
                          "rope_factor", a->rope_scaling != SKS_ROPE_SCALING_NONE ? sks_json_num(a->rope_factor) : NULL,
                          "norm_eps", sks_json_num(a->norm_eps), "tied_embeddings", a->tied_embeddings,
                          "rope_interleaved", a->rope_interleaved, "has_qkv_bias", a->has_qkv_bias, "has_qk_norm",
                          a->has_qk_norm, "bos_id", a->bos_id, "eos_id", a->eos_id, "file_bytes",
                          (json_int_t)sks_model_file_bytes(m), "shards", sh, "tensors", ts);
    if (a->n_experts > 0)
        json_object_set_new(o, "moe", json_pack("{s:i,s:i,s:i,s:i,s:b}", "n_experts", a->n_experts, "experts_per_token",
                                                a->n_experts_used, "d_ffn_expert", a->d_ffn_expert, "d_ffn_shared",
                                                a->d_ffn_shared, "norm_topk", a->moe_norm_topk));
    sks_json_add_nonfinite(o);
    sks_dtype_mix mix;
    sks_model_dtype_mix(m, &mix);
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if (mix.tensors[d])
            json_array_append_new(mx, json_pack("{s:s, s:I, s:I, s:I, s:f}", "dtype", sks_dtype_name((sks_dtype)d),
                                                "tensors", (json_int_t)mix.tensors[d], "elements",
                                                (json_int_t)mix.elements[d], "bytes", (json_int_t)mix.bytes[d], "bpw",
                                                sks_dtype_get((sks_dtype)d)->bpw));
    json_object_set_new(o, "dtype_mix", mx);
    json_object_set_new(o, "bpw", json_real(mix.bpw));
    return sks_cli_print_json(o, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
}

static void sks__inspect_human(const sks_model *m) {
    const sks_arch *a = sks_model_arch(m);
    char fb[32];
    sks_fmt_bytes(sks_model_file_bytes(m), fb, sizeof fb);
    uint64_t np = sks_model_n_params(m);
    printf("model        %s\n", sks_model_path(m));
    printf("format       %s", sks_format_name(sks_model_format(m)));
    if (sks_model_gguf(m)) printf(" v%u", sks_gguf_version(sks_model_gguf(m)));
    printf("\nfamily       %s\n", a->family);
    printf("layers       %d  (%d residual blocks: b = 0 embeddings, 2l+1 after the attention and\n"
           "             2l+2 after the FFN of layer l, as in trace)\n", a->n_layers, 2 * a->n_layers + 1);
    printf("d_model      %d\n", a->d_model);
    printf("d_ffn        %d  (%s)\n", a->d_ffn,
           a->ffn_plain ? "plain MLP, gelu_tanh" : a->act == SKS_ACT_GELU_TANH ? "GeGLU" : "SwiGLU");
    if (a->n_experts > 0) {
        int n_moe = 0;
        for (int l = 0; l < a->n_layers; l++) n_moe += sks_arch_layer_moe(a, l);
        printf("experts      %d of width %d, top-%d%s, on %d of %d layers", a->n_experts, a->d_ffn_expert,
               a->n_experts_used, a->moe_norm_topk ? " (weights renormalized)" : "", n_moe, a->n_layers);
        if (a->d_ffn_shared > 0) printf("; a gated shared expert of width %d", a->d_ffn_shared);
        printf("\n");
    }
    printf("heads        %d x %d, %d KV heads%s\n", a->n_heads, a->head_dim, a->n_kv_heads,
           a->n_kv_heads < a->n_heads ? " (grouped-query)" : "");
    printf("vocab        %d\n", a->vocab_size);
    if (a->max_seq) printf("context      %d\n", a->max_seq);
    if (a->pos_learned) printf("positions    learned (%d rows), no RoPE", a->max_seq);
    else printf("rope         theta %g, %s pairs", a->rope_theta, a->rope_interleaved ? "interleaved" : "rotate-half");
    if (a->rope_scaling == SKS_ROPE_SCALING_LLAMA3)
        printf(", llama3 scaling x%g (low %g, high %g, orig %d)", a->rope_factor, a->rope_low_freq_factor,
               a->rope_high_freq_factor, a->rope_original_max_pos);
    else if (a->rope_scaling == SKS_ROPE_SCALING_LINEAR)
        printf(", linear scaling x%g", a->rope_factor);
    printf("\n%-12s %g\n", a->norm_layer ? "layernorm eps" : "rmsnorm eps", a->norm_eps);
    printf("classifier   %s\n", a->tied_embeddings ? "tied to the embedding" : "separate lm_head");
    if (a->has_qkv_bias) printf("biases       q/k/v%s\n", a->has_linear_bias ? ", o, FFN up/down" : "");
    if (a->has_qk_norm) printf("q/k norm     per head\n");
    printf("bos / eos    %d / %d\n", a->bos_id, a->eos_id);
    char tb[512];
    sks__tokenizer_line(m, tb, sizeof tb);
    printf("tokenizer    %s\n", tb);
    printf("parameters   %llu (%.2fM)\n", (unsigned long long)np, (double)np / 1e6);
    printf("file size    %s (%llu bytes)\n", fb, (unsigned long long)sks_model_file_bytes(m));
    /* tensor-type mix: tensors, elements and bits per weight per type */
    sks_dtype_mix mix;
    sks_model_dtype_mix(m, &mix);
    printf("dtypes      ");
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if (mix.tensors[d])
            printf(" %s: %llu tensors, %.1f%% of parameters;", sks_dtype_name((sks_dtype)d),
                   (unsigned long long)mix.tensors[d],
                   mix.total_elements ? 100.0 * (double)mix.elements[d] / (double)mix.total_elements : 0.0);
    printf("\ntype mix     type      tensors      elements    bpw\n");
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if (mix.tensors[d])
            printf("             %-8s %8llu %13llu %6.3f\n", sks_dtype_name((sks_dtype)d), (unsigned long long)mix.tensors[d],
                   (unsigned long long)mix.elements[d], sks_dtype_get((sks_dtype)d)->bpw);
    printf("bpw          %.3f bits per weight overall\n", mix.bpw);
    printf("tensors      %zu\n", sks_model_n_tensors(m));
    int ns = sks_model_n_shards(m);
    printf("shards       %d\n", ns);
    if (ns > 1)
        for (int i = 0; i < ns; i++) printf("  [%d] %s\n", i, sks_model_shard_path(m, i));
}

static const char sks__about[] =
    "Open MODEL and print what sinkscope sees: the architecture (layers, widths, heads,\n"
    "grouped-query attention, RoPE theta and pair order, norm eps), the parameter count,\n"
    "the tensor-type mix (tensors, elements and bits per weight of each type, and the\n"
    "overall bits per weight), the file size and the shards. Only headers are read,\n"
    "so this is instant even for large sharded checkpoints.\n\n"
    "MODEL is one of\n"
    "  DIR                 Hugging Face directory: config.json plus model.safetensors or\n"
    "                      model.safetensors.index.json with its shards\n"
    "  FILE.safetensors    one safetensors file; config.json must sit beside it\n"
    "  FILE.gguf           GGUF v2/v3 (llama, qwen2, qwen3; F32, F16, BF16 and the\n"
    "                      quantized types of docs/gguf-types.md)\n"
    "  FILE.bin            llama2.c v0 checkpoint\n";

static const char sks__epilogue[] =
    "rope order: 'interleaved' means Q/K pairs (2i, 2i+1) (GGUF llama, llama2.c);\n"
    "'rotate-half' means pairs (i, i + d_h/2) (Hugging Face). Both are the same model.\n\n"
    "example:\n"
    "  sinkscope inspect path/to/model.gguf\n"
    "  sinkscope inspect path/to/hf-model-dir --json | jq .n_params\n";

int sks_cmd_inspect(int argc, char **argv) {
    const char *path = NULL;
    int json = 0, code;
    const sks_cli_opt opts[] = {
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "inspect", .opts = opts, .model = &path, .json = &json,
        .usage = "MODEL [--json]", .about = sks__about, .epilogue = sks__epilogue,
        .json_help = "one JSON object on stdout: family, n_layers, d_model, d_ffn, n_heads,\n"
                     "n_kv_heads, head_dim, vocab_size, n_params, rope_theta, norm_eps,\n"
                     "tied_embeddings, rope_interleaved, format, file_bytes, shards and\n"
                     "tensors [{name, role, layer, dtype, shape, shard}], dtype_mix\n"
                     "[{dtype, tensors, elements, bytes, bpw}] and bpw (overall)"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    sks_model *m;
    if (sks_cli_open_model("inspect", path, &m)) return 1;
    int rc = 0;
    if (json) rc = sks__inspect_json(m);
    else sks__inspect_human(m);
    sks_model_close(m);
    return rc;
}
