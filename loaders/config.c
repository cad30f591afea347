/* config.c - Hugging Face config.json -> sks_arch, and the JSON depth guard.
 *
 * Two styles exist in the wild and both are read:
 *   classic: "torch_dtype", "rope_theta", "rope_scaling": {"rope_type"|"type", "factor", ...}
 *   newer:   "dtype", "rope_parameters": {"rope_theta", "rope_type", "factor", ...}
 * head_dim may be absent or null (then d / H). The family comes from "architectures"
 * (first entry) or, failing that, "model_type":
 *   LlamaForCausalLM / llama     -> llama
 *   MistralForCausalLM / mistral -> mistral
 *   Qwen2ForCausalLM / qwen2     -> qwen2 (q/k/v biases)
 *   Qwen3ForCausalLM / qwen3     -> qwen3 (per-head q/k RMSNorm)
 * Codes: invalid JSON SKS_EFORMAT; a required key missing SKS_ENOTFOUND; a value of the
 * wrong type or out of range SKS_ECONFIG; a valid but unhandled choice (architecture,
 * activation, rope type, o_proj bias) SKS_EUNSUPPORTED.
 */
#include "formats_internal.h"
#include "model_internal.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sks__has_control(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 1;
    return 0;
}

const char *sks__printable(const char *s, char *buf, size_t cap) {
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++) buf[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    buf[i] = 0;
    return buf;
}

int sks__json_depth(const char *buf, size_t len, int max_depth) {
    int depth = 0, maxd = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\') i++; /* skip the escaped character */
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') {
            if (++depth > max_depth) return -1;
            if (depth > maxd) maxd = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return maxd;
}

/* Integer key in [lo, hi]; absent/null -> *out = dflt when !required. */
static int sks__cfg_int(const json_t *o, const char *key, int required, long long lo, long long hi, int dflt,
                        const char *path, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return sks_fail(SKS_ENOTFOUND, "%s: missing required key '%s'", path, key);
        *out = dflt;
        return 0;
    }
    long long x;
    if (json_is_integer(v)) x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 1e15)
        x = (long long)json_real_value(v);
    else return sks_fail(SKS_ECONFIG, "%s: '%s' is not an integer", path, key);
    if (x < lo || x > hi) return sks_fail(SKS_ECONFIG, "%s: '%s' = %lld is outside [%lld, %lld]", path, key, x, lo, hi);
    *out = (int)x;
    return 0;
}

static int sks__cfg_num(const json_t *o, const char *key, int required, double dflt, const char *path,
                        double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required) return sks_fail(SKS_ENOTFOUND, "%s: missing required key '%s'", path, key);
        *out = dflt;
        return 0;
    }
    if (!json_is_number(v)) return sks_fail(SKS_ECONFIG, "%s: '%s' is not a number", path, key);
    *out = json_number_value(v);
    if (!isfinite(*out)) return sks_fail(SKS_ECONFIG, "%s: '%s' is not finite", path, key);
    return 0;
}

static int sks__cfg_bool(const json_t *o, const char *key, int dflt, const char *path, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) return sks_fail(SKS_ECONFIG, "%s: '%s' is not true/false", path, key);
    *out = json_is_true(v);
    return 0;
}

/* bos/eos: an integer, or a list whose first entry is used (Llama 3 lists several eos). */
static int sks__cfg_token(const json_t *o, const char *key, const char *path, int *out) {
    json_t *v = json_object_get(o, key);
    *out = -1;
    if (!v || json_is_null(v)) return 0;
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) return 0;
        v = json_array_get(v, 0);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT_MAX)
        return sks_fail(SKS_ECONFIG, "%s: '%s' is not a token id", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int sks__cfg_family(const json_t *root, const char *path, sks_arch *a) {
    json_t *archs = json_object_get(root, "architectures");
    json_t *mt = json_object_get(root, "model_type");
    const char *arch = NULL, *mts = json_is_string(mt) ? json_string_value(mt) : NULL;
    if (archs && !json_is_null(archs)) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 || !json_is_string(json_array_get(archs, 0)))
            return sks_fail(SKS_ECONFIG, "%s: 'architectures' is not a list of names", path);
        arch = json_string_value(json_array_get(archs, 0));
    }
    if (!arch && !mts)
        return sks_fail(SKS_ENOTFOUND,
                        "%s: neither 'architectures' nor 'model_type' is given: cannot tell the model family", path);
    const sks__family *fam = sks__family_hf(arch, mts);
    if (fam) {
        sks__family_apply(fam, SKS_FMT_SAFETENSORS, a);
        return 0;
    }
    char pb[96];
    return sks_fail(SKS_EUNSUPPORTED, "%s: architecture '%s' is not supported (sinkscope reads %s)", path,
                    sks__printable(arch ? arch : mts, pb, sizeof pb), sks__family_hf_list());
}

/* RoPE scaling from either {"rope_type"|"type": ..., "factor": ...} object. */
/* A list of n positive factors (longrope). */
static int sks__cfg_factors(const json_t *rs, const char *key, int n, const char *path, double *out) {
    json_t *v = json_object_get(rs, key);
    if (!json_is_array(v)) return sks_fail(SKS_ENOTFOUND, "%s: longrope needs the list '%s'", path, key);
    if ((int)json_array_size(v) != n)
        return sks_fail(SKS_ECONFIG, "%s: '%s' has %zu factors, the rotated dimensions need %d", path, key,
                        json_array_size(v), n);
    for (int i = 0; i < n; i++) {
        json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_number(x) || !(json_number_value(x) > 0))
            return sks_fail(SKS_ECONFIG, "%s: '%s'[%d] is not a positive number", path, key, i);
        out[i] = json_number_value(x);
    }
    return 0;
}

/* Phi-3 longrope: short / long factors per rotated frequency; the attention factor is
 * given, or sqrt(1 + ln(s) / ln(orig)) with s = max_position_embeddings / orig (1 when
 * s <= 1), as transformers computes it. */
static int sks__cfg_longrope(const json_t *rs, const json_t *root, const char *path, sks_arch *a) {
    int rc;
    a->rope_scaling = SKS_ROPE_SCALING_LONGROPE;
    a->rope_n_factors = (a->rope_dims ? a->rope_dims : a->head_dim) / 2;
    if (a->rope_n_factors > SKS_ROPE_MAX_FACTORS)
        return sks_fail(SKS_EUNSUPPORTED, "%s: longrope with %d factors (at most %d)", path, a->rope_n_factors,
                        SKS_ROPE_MAX_FACTORS);
    if ((rc = sks__cfg_factors(rs, "short_factor", a->rope_n_factors, path, a->rope_short))) return rc;
    if ((rc = sks__cfg_factors(rs, "long_factor", a->rope_n_factors, path, a->rope_long))) return rc;
    const json_t *src = json_object_get(rs, "original_max_position_embeddings") ? rs : root;
    if ((rc = sks__cfg_int(src, "original_max_position_embeddings", 1, 1, INT_MAX, 0, path, &a->rope_original_max_pos)))
        return rc;
    if ((rc = sks__cfg_num(rs, "attention_factor", 0, 0, path, &a->rope_attn_factor))) return rc;
    if (!(a->rope_attn_factor > 0)) {
        double sc = a->max_seq > 0 ? (double)a->max_seq / a->rope_original_max_pos : 1.0;
        a->rope_attn_factor = sc > 1.0 ? sqrt(1.0 + log(sc) / log((double)a->rope_original_max_pos)) : 1.0;
    }
    return 0;
}

static int sks__cfg_rope_scaling(const json_t *rs, const json_t *root, const char *path, sks_arch *a) {
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return sks_fail(SKS_ECONFIG, "%s: rope scaling is not an object", path);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    int rc;
    if (!strcmp(type, "default")) return 0;
    if (!strcmp(type, "longrope") || !strcmp(type, "su")) return sks__cfg_longrope(rs, root, path, a);
    if (!strcmp(type, "linear")) {
        a->rope_scaling = SKS_ROPE_SCALING_LINEAR;
        if ((rc = sks__cfg_num(rs, "factor", 1, 1, path, &a->rope_factor))) return rc;
        if (!(a->rope_factor > 0)) return sks_fail(SKS_ECONFIG, "%s: rope factor %g must be positive", path, a->rope_factor);
        return 0;
    }
    if (!strcmp(type, "llama3")) {
        a->rope_scaling = SKS_ROPE_SCALING_LLAMA3;
        if ((rc = sks__cfg_num(rs, "factor", 1, 1, path, &a->rope_factor))) return rc;
        if ((rc = sks__cfg_num(rs, "low_freq_factor", 1, 1, path, &a->rope_low_freq_factor))) return rc;
        if ((rc = sks__cfg_num(rs, "high_freq_factor", 1, 4, path, &a->rope_high_freq_factor))) return rc;
        if ((rc = sks__cfg_int(rs, "original_max_position_embeddings", 1, 1, INT_MAX, 0, path,
                               &a->rope_original_max_pos)))
            return rc;
        if (!(a->rope_factor > 0) || !(a->rope_high_freq_factor > a->rope_low_freq_factor))
            return sks_fail(SKS_ECONFIG, "%s: llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor",
                            path);
        return 0;
    }
    char pb[64];
    return sks_fail(SKS_EUNSUPPORTED, "%s: rope type '%s' is not supported (default, linear, llama3, longrope)", path,
                    sks__printable(type, pb, sizeof pb));
}

/* partial_rotary_factor (Phi-3, in rope_parameters or at the top level): RoPE rotates
 * the first round(f dh) dimensions of each head. */
static int sks__cfg_rotary(const json_t *rp, const json_t *root, const char *path, sks_arch *a) {
    double f = 1;
    int rc;
    const json_t *src = json_object_get(rp, "partial_rotary_factor") ? rp : root;
    if ((rc = sks__cfg_num(src, "partial_rotary_factor", 0, 1, path, &f))) return rc;
    if (!(f > 0 && f <= 1)) return sks_fail(SKS_ECONFIG, "%s: 'partial_rotary_factor' = %g is outside (0, 1]", path, f);
    int rd = (int)(f * a->head_dim);
    if (rd % 2) return sks_fail(SKS_ECONFIG, "%s: partial_rotary_factor %g rotates an odd %d dimensions", path, f, rd);
    a->rope_dims = rd == a->head_dim ? 0 : rd;
    return 0;
}

/* The FFN activation: Gemma names it hidden_activation (hidden_act is then the legacy
 * "gelu", which transformers runs as the tanh approximation), the others hidden_act. */
static int sks__cfg_act(const json_t *root, const char *path, sks_arch *a) {
    json_t *act = json_object_get(root, "hidden_activation");
    if (!act || json_is_null(act)) act = json_object_get(root, "hidden_act");
    if (!act || json_is_null(act)) return 0; /* the family's default */
    char pb[64];
    const char *s = json_is_string(act) ? json_string_value(act) : "";
    if (!strcmp(s, "silu") || !strcmp(s, "swish")) a->act = SKS_ACT_SILU;
    else if (!strcmp(s, "gelu_pytorch_tanh") || !strcmp(s, "gelu_tanh") || !strcmp(s, "gelu_new") ||
             (!strcmp(s, "gelu") && !strncmp(a->family, "gemma", 5)))
        a->act = SKS_ACT_GELU_TANH;
    else
        return sks_fail(SKS_EUNSUPPORTED, "%s: activation '%s' is not supported (silu, gelu_pytorch_tanh)", path,
                        sks__printable(s, pb, sizeof pb));
    return 0;
}

/* A positive number or null/absent (0: off); softcaps and scalars. */
static int sks__cfg_opt_pos(const json_t *o, const char *key, const char *path, double *out) {
    int rc = sks__cfg_num(o, key, 0, 0, path, out);
    if (rc) return rc;
    if (*out < 0) return sks_fail(SKS_ECONFIG, "%s: '%s' = %g must be positive", path, key, *out);
    return 0;
}

/* layer_types: "sliding_attention" / "full_attention" per layer. The forward knows the
 * patterns "every layer slides" and "every n-th layer is full"; others are refused. */
static int sks__cfg_layer_types(const json_t *root, const char *path, sks_arch *a) {
    json_t *lt = json_object_get(root, "layer_types");
    if (!lt || json_is_null(lt)) return 0;
    if (!json_is_array(lt) || (int)json_array_size(lt) != a->n_layers)
        return sks_fail(SKS_ECONFIG, "%s: 'layer_types' is not a list of %d layer kinds", path, a->n_layers);
    int first_full = 0;
    for (int l = 0; l < a->n_layers; l++) {
        const char *k = json_string_value(json_array_get(lt, (size_t)l));
        if (!k || (strcmp(k, "full_attention") && strcmp(k, "sliding_attention")))
            return sks_fail(SKS_EUNSUPPORTED, "%s: layer_types[%d] is not 'full_attention' or 'sliding_attention'", path,
                            l);
        if (!strcmp(k, "full_attention") && !first_full) first_full = l + 1;
    }
    for (int l = 0; l < a->n_layers; l++) {
        int sliding = !strcmp(json_string_value(json_array_get(lt, (size_t)l)), "sliding_attention");
        int want = first_full ? (l + 1) % first_full != 0 : 1;
        if (sliding != want)
            return sks_fail(SKS_EUNSUPPORTED,
                            "%s: layer_types: layer %d breaks the pattern 'every %d-th layer has full attention' (the "
                            "only layer pattern read)",
                            path, l, first_full);
    }
    a->swa_full_every = first_full; /* 0: every layer slides */
    return 0;
}

/* Fields that only some families have (SPEC section 6). */
static int sks__cfg_traits(const json_t *root, const char *path, sks_arch *a) {
    int rc;
    int is_gemma2 = !strcmp(a->family, "gemma2") || !strcmp(a->family, "gemma3");
    a->sliding_window = 0;
    if ((rc = sks__cfg_int(root, "sliding_window", 0, 0, INT_MAX, 0, path, &a->sliding_window))) return rc;
    int use_sw = 1;
    if ((rc = sks__cfg_bool(root, "use_sliding_window", 1, path, &use_sw))) return rc;
    if (!use_sw) a->sliding_window = 0; /* Qwen2/3 configs carry a window they do not use */
    if (is_gemma2) {
        /* Gemma 2 needs its score scale: configs without it are not Gemma 2 configs. */
        if ((rc = sks__cfg_num(root, "query_pre_attn_scalar", 1, 0, path, &a->query_pre_attn_scalar))) return rc;
        if (!(a->query_pre_attn_scalar > 0))
            return sks_fail(SKS_ECONFIG, "%s: 'query_pre_attn_scalar' = %g must be positive", path,
                            a->query_pre_attn_scalar);
        if ((rc = sks__cfg_opt_pos(root, "attn_logit_softcapping", path, &a->attn_softcap))) return rc;
        if ((rc = sks__cfg_opt_pos(root, "final_logit_softcapping", path, &a->final_softcap))) return rc;
        if (!json_object_get(root, "sliding_window"))
            return sks_fail(SKS_ENOTFOUND, "%s: missing required key 'sliding_window' (family %s)", path, a->family);
        /* Gemma 3, classic style: the RoPE base of the sliding layers */
        if ((rc = sks__cfg_opt_pos(root, "rope_local_base_freq", path, &a->rope_theta_local))) return rc;
    }
    if ((rc = sks__cfg_layer_types(root, path, a))) return rc;
    return 0;
}

/* sks_arch_validate's verdict as a config error naming the file. */
static int sks__cfg_validate(const char *path, const sks_arch *a) {
    if (!sks_arch_validate(a)) return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", sks_last_error());
    return sks_fail(SKS_ECONFIG, "%s: %s", path, msg);
}

/* GPT-2 (model_type gpt2): its own key names. n_inner null means 4 n_embd; the
 * activation is gelu_new (the tanh approximation); scores are scaled by 1 / sqrt(dh)
 * unless scale_attn_weights is false, and by 1 / (layer + 1) with
 * scale_attn_by_inverse_layer_idx: those two variants are refused.
 * reorder_and_upcast_attn only changes the precision of the scores (to f32), which the
 * f32 forward already has. The RoPE fields are unused (positions are learned). */
static int sks__cfg_fill_gpt2(const json_t *root, const char *path, sks_arch *a) {
    int rc, b = 0;
    if ((rc = sks__cfg_int(root, "n_layer", 1, 1, 100000, 0, path, &a->n_layers))) return rc;
    if ((rc = sks__cfg_int(root, "n_embd", 1, 1, 1 << 20, 0, path, &a->d_model))) return rc;
    if ((rc = sks__cfg_int(root, "n_head", 1, 1, 4096, 0, path, &a->n_heads))) return rc;
    if ((rc = sks__cfg_int(root, "vocab_size", 1, 1, 1 << 26, 0, path, &a->vocab_size))) return rc;
    if ((rc = sks__cfg_int(root, "n_positions", 1, 1, 1 << 24, 0, path, &a->max_seq))) return rc;
    if ((rc = sks__cfg_int(root, "n_inner", 0, 1, 1 << 22, 0, path, &a->d_ffn))) return rc;
    if (a->d_ffn == 0) {
        if (a->d_model > (1 << 20) / 4) return sks_fail(SKS_ECONFIG, "%s: 4 n_embd is too large", path);
        a->d_ffn = 4 * a->d_model;
    }
    if (a->d_model % a->n_heads)
        return sks_fail(SKS_ECONFIG, "%s: n_embd %d is not a multiple of n_head %d", path, a->d_model, a->n_heads);
    a->n_kv_heads = a->n_heads;
    a->head_dim = a->d_model / a->n_heads;
    if ((rc = sks__cfg_num(root, "layer_norm_epsilon", 0, 1e-5, path, &a->norm_eps))) return rc;
    json_t *act = json_object_get(root, "activation_function");
    const char *as = act && !json_is_null(act) ? json_string_value(act) : "gelu_new";
    char pb[64];
    if (!as || (strcmp(as, "gelu_new") && strcmp(as, "gelu_pytorch_tanh")))
        return sks_fail(SKS_EUNSUPPORTED, "%s: activation_function '%s' is not supported (gelu_new)", path,
                        sks__printable(as ? as : "(not a string)", pb, sizeof pb));
    a->act = SKS_ACT_GELU_TANH;
    if ((rc = sks__cfg_bool(root, "scale_attn_weights", 1, path, &b))) return rc;
    if (!b) return sks_fail(SKS_EUNSUPPORTED, "%s: scale_attn_weights = false (unscaled scores) is not supported", path);
    if ((rc = sks__cfg_bool(root, "scale_attn_by_inverse_layer_idx", 0, path, &b))) return rc;
    if (b)
        return sks_fail(SKS_EUNSUPPORTED, "%s: scale_attn_by_inverse_layer_idx = true is not supported", path);
    if ((rc = sks__cfg_bool(root, "reorder_and_upcast_attn", 0, path, &b))) return rc;
    if ((rc = sks__cfg_bool(root, "tie_word_embeddings", 1, path, &a->tied_embeddings))) return rc;
    if ((rc = sks__cfg_token(root, "bos_token_id", path, &a->bos_id))) return rc;
    if ((rc = sks__cfg_token(root, "eos_token_id", path, &a->eos_id))) return rc;
    a->rope_theta = 10000.0;
    a->rope_scaling = SKS_ROPE_SCALING_NONE;
    a->rope_factor = 1;
    return sks__cfg_validate(path, a);
}

/* Mixture of experts (SPEC section 6). Mixtral: num_local_experts experts of width
 * intermediate_size, weights always renormalized. Qwen2/3-MoE: num_experts (transformers 5
 * writes Qwen3-MoE's as num_local_experts) of width
 * moe_intermediate_size, norm_topk_prob, a shared expert of width
 * shared_expert_intermediate_size (Qwen2-MoE), layer l sparse when l is not in
 * mlp_only_layers and (l + 1) % decoder_sparse_step == 0 (dense layers have width
 * intermediate_size). */
static int sks__cfg_moe(const json_t *root, const char *path, sks_arch *a) {
    const sks__family *fam = sks__family_named(a->family);
    if (!fam || !(fam->flags & SKS__FAM_MOE)) return 0;
    int rc, mixtral = !strcmp(a->family, "mixtral");
    /* Qwen: num_experts, or num_local_experts as transformers 5 writes Qwen3-MoE's */
    const char *ne = mixtral || !json_object_get(root, "num_experts") ? "num_local_experts" : "num_experts";
    if (!mixtral && !json_object_get(root, ne)) ne = "num_experts"; /* neither: name the usual key */
    if ((rc = sks__cfg_int(root, ne, 1, 1, 1 << 16, 0, path, &a->n_experts))) return rc;
    if ((rc = sks__cfg_int(root, "num_experts_per_tok", 1, 1, a->n_experts, 0, path, &a->n_experts_used))) return rc;
    if (mixtral) {
        a->d_ffn_expert = a->d_ffn;
        a->moe_norm_topk = 1;
        return 0;
    }
    if ((rc = sks__cfg_bool(root, "qkv_bias", a->has_qkv_bias, path, &a->has_qkv_bias))) return rc;
    if ((rc = sks__cfg_int(root, "moe_intermediate_size", 1, 1, 1 << 22, 0, path, &a->d_ffn_expert))) return rc;
    if ((rc = sks__cfg_int(root, "shared_expert_intermediate_size", 0, 0, 1 << 22, 0, path, &a->d_ffn_shared)))
        return rc;
    if ((rc = sks__cfg_bool(root, "norm_topk_prob", 0, path, &a->moe_norm_topk))) return rc;
    if ((rc = sks__cfg_int(root, "decoder_sparse_step", 0, 1, 100000, 1, path, &a->moe_sparse_step))) return rc;
    json_t *mo = json_object_get(root, "mlp_only_layers");
    if (mo && !json_is_null(mo)) {
        if (!json_is_array(mo)) return sks_fail(SKS_ECONFIG, "%s: 'mlp_only_layers' is not a list", path);
        size_t i;
        json_t *v;
        json_array_foreach(mo, i, v) {
            json_int_t l = json_is_integer(v) ? json_integer_value(v) : -1;
            if (l < 0 || l >= a->n_layers)
                return sks_fail(SKS_ECONFIG, "%s: mlp_only_layers[%zu] is not a layer of the %d", path, i, a->n_layers);
            if (l >= SKS_MOE_MAX_LAYERS)
                return sks_fail(SKS_EUNSUPPORTED, "%s: mlp_only_layers[%zu] = %lld: at most %d layers are read", path, i,
                                (long long)l, SKS_MOE_MAX_LAYERS);
            a->moe_dense[l / 8] |= (unsigned char)(1u << (l % 8));
        }
    }
    return 0;
}

static int sks__cfg_fill(const json_t *root, const char *path, sks_arch *a) {
    int rc;
    if ((rc = sks__cfg_family(root, path, a))) return rc;
    if (a->pos_learned) return sks__cfg_fill_gpt2(root, path, a);
    if ((rc = sks__cfg_int(root, "num_hidden_layers", 1, 1, 100000, 0, path, &a->n_layers))) return rc;
    if ((rc = sks__cfg_int(root, "hidden_size", 1, 1, 1 << 20, 0, path, &a->d_model))) return rc;
    if ((rc = sks__cfg_int(root, "intermediate_size", 1, 1, 1 << 22, 0, path, &a->d_ffn))) return rc;
    if ((rc = sks__cfg_int(root, "num_attention_heads", 1, 1, 4096, 0, path, &a->n_heads))) return rc;
    if ((rc = sks__cfg_int(root, "num_key_value_heads", 0, 1, 4096, a->n_heads, path, &a->n_kv_heads))) return rc;
    if ((rc = sks__cfg_int(root, "vocab_size", 1, 1, 1 << 26, 0, path, &a->vocab_size))) return rc;
    if ((rc = sks__cfg_int(root, "head_dim", 0, 1, 8192, 0, path, &a->head_dim))) return rc;
    if (a->head_dim == 0) {
        if (a->d_model % a->n_heads)
            return sks_fail(SKS_ECONFIG, "%s: no 'head_dim' and hidden_size %d is not a multiple of num_attention_heads %d",
                            path, a->d_model, a->n_heads);
        a->head_dim = a->d_model / a->n_heads;
    }
    if ((rc = sks__cfg_int(root, "max_position_embeddings", 0, 0, INT_MAX, 0, path, &a->max_seq))) return rc;
    if ((rc = sks__cfg_num(root, "rms_norm_eps", 0, 1e-6, path, &a->norm_eps))) return rc;
    if ((rc = sks__cfg_bool(root, "tie_word_embeddings", 0, path, &a->tied_embeddings))) return rc;
    if ((rc = sks__cfg_token(root, "bos_token_id", path, &a->bos_id))) return rc;
    if ((rc = sks__cfg_token(root, "eos_token_id", path, &a->eos_id))) return rc;

    if ((rc = sks__cfg_act(root, path, a))) return rc;
    if ((rc = sks__cfg_traits(root, path, a))) return rc;
    if ((rc = sks__cfg_moe(root, path, a))) return rc;
    int attn_bias = 0, mlp_bias = 0;
    if ((rc = sks__cfg_bool(root, "attention_bias", 0, path, &attn_bias))) return rc;
    if ((rc = sks__cfg_bool(root, "mlp_bias", 0, path, &mlp_bias))) return rc;
    /* Llama's attention_bias adds a bias to o_proj too, which the model view has no role for. */
    if ((attn_bias && !a->has_qkv_bias) || mlp_bias)
        return sks_fail(SKS_EUNSUPPORTED, "%s: %s is true: biases on o_proj / MLP are not supported", path,
                        mlp_bias ? "mlp_bias" : "attention_bias");

    /* RoPE: newer style first (rope_parameters), then classic (rope_theta, rope_scaling). */
    json_t *rp = json_object_get(root, "rope_parameters");
    a->rope_theta = 10000.0;
    a->rope_scaling = SKS_ROPE_SCALING_NONE;
    a->rope_factor = 1;
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp)) return sks_fail(SKS_ECONFIG, "%s: 'rope_parameters' is not an object", path);
        json_t *full = json_object_get(rp, "full_attention"), *loc = json_object_get(rp, "sliding_attention");
        if (json_is_object(loc)) {
            /* per layer type (Gemma 3): sliding layers have their own base, no scaling */
            if ((rc = sks__cfg_opt_pos(loc, "rope_theta", path, &a->rope_theta_local))) return rc;
            json_t *lt = json_object_get(loc, "rope_type");
            if (lt && !(json_is_string(lt) && !strcmp(json_string_value(lt), "default")))
                return sks_fail(SKS_EUNSUPPORTED, "%s: rope_parameters.sliding_attention: only the default rope type is read",
                                path);
        }
        if (json_is_object(full)) rp = full;
        else if (json_is_object(loc)) return sks_fail(SKS_ENOTFOUND, "%s: rope_parameters has no 'full_attention'", path);
        if ((rc = sks__cfg_num(rp, "rope_theta", 0, 10000.0, path, &a->rope_theta))) return rc;
        if ((rc = sks__cfg_rotary(rp, root, path, a))) return rc;
        if ((rc = sks__cfg_rope_scaling(rp, root, path, a))) return rc;
    } else {
        if ((rc = sks__cfg_num(root, "rope_theta", 0, 10000.0, path, &a->rope_theta))) return rc;
        if ((rc = sks__cfg_rotary(root, root, path, a))) return rc;
        if ((rc = sks__cfg_rope_scaling(json_object_get(root, "rope_scaling"), root, path, a))) return rc;
    }
    /* HF Llama/Qwen checkpoints use the rotate-half (NeoX) pair order. */
    a->rope_interleaved = 0;
    return sks__cfg_validate(path, a);
}

/* Multimodal checkpoints (Gemma 3: Gemma3ForConditionalGeneration) keep the text model's
 * fields in "text_config": read those, with the top level's architectures and, where the
 * text part does not say, its tie_word_embeddings and token ids. */
static int sks__cfg_fill_text(json_t *root, const char *path, sks_arch *a) {
    json_t *tc = json_object_get(root, "text_config");
    if (!json_is_object(tc)) return sks__cfg_fill(root, path, a);
    json_t *t = json_deep_copy(tc);
    if (!t) return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    const char *keys[] = {"architectures", "tie_word_embeddings", "bos_token_id", "eos_token_id"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(root, keys[i]);
        if (v && (i == 0 || !json_object_get(t, keys[i]))) json_object_set(t, keys[i], v);
    }
    int rc = sks__cfg_fill(t, path, a);
    json_decref(t);
    return rc;
}

int sks__config_parse(const char *json, size_t len, const char *path, sks_arch *a) {
    if (sks__json_depth(json, len, SKS__JSON_MAX_DEPTH) < 0)
        return sks_fail(SKS_EFORMAT, "%s: JSON nested deeper than %d levels", path, SKS__JSON_MAX_DEPTH);
    json_error_t err;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: invalid JSON at line %d: %s", path, err.line, err.text);
    int rc;
    if (!json_is_object(root)) rc = sks_fail(SKS_EFORMAT, "%s: top level is not a JSON object", path);
    else rc = sks__cfg_fill_text(root, path, a);
    json_decref(root);
    return rc;
}

int sks__config_load(const char *path, sks_arch *a) {
    FILE *f = fopen(path, "rb");
    if (!f) return sks_fail(SKS_ENOTFOUND, "%s: config.json not found (needed for the architecture)", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= ((size_t)16 << 20)) {
                free(buf);
                fclose(f);
                return sks_fail(SKS_EFORMAT, "%s: larger than 16 MiB, not a config file", path);
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return sks_fail(SKS_EIO, "%s: read error", path);
    }
    int rc = sks__config_parse(buf ? buf : "", n, path, a);
    free(buf);
    return rc;
}
