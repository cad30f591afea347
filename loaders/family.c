/* family.c - the family table: one row per model family (SPEC section 6).
 *
 * A row names the family for each format (HF `architectures` / `model_type`, GGUF
 * `general.architecture`), its flags (biases, q/k norm, where the norms sit, (1 + w)
 * norms, embedding scale, the sliding-window pattern, the GGUF Q/K permutation) and
 * its HF tensor-name map. GGUF names are the same for every family (llama.cpp's
 * src/llama-arch.cpp), so one map serves all rows. The required roles and their shapes
 * follow from the flags the row sets (sks__role_need), for every format alike.
 *
 * Adding a family: a row here (and a name map when its HF names differ), the config
 * fields it needs in config.c / gguf.c, the forward traits in sks_arch, and its tests.
 */
#include "model_internal.h"

#include <stdio.h>
#include <string.h>

#define SKS__N(x) (sizeof(x) / sizeof((x)[0]))

/* ---- HF tensor names ------------------------------------------------------------------ */

static const sks__name_role sks__hf_globals_model[] = {
    {"model.embed_tokens.weight", SKS_ROLE_EMBED},
    {"model.norm.weight", SKS_ROLE_FINAL_NORM},
    {"lm_head.weight", SKS_ROLE_LM_HEAD},
};

/* Projections, biases, q/k norms and the gated FFN: the same names in every HF family
 * below; the norms around the sublayers differ (the next three maps). */
static const sks__name_role sks__hf_proj[] = {
    {"self_attn.q_proj.weight", SKS_ROLE_WQ}, {"self_attn.k_proj.weight", SKS_ROLE_WK},
    {"self_attn.v_proj.weight", SKS_ROLE_WV}, {"self_attn.o_proj.weight", SKS_ROLE_WO},
    {"self_attn.q_proj.bias", SKS_ROLE_BQ},   {"self_attn.k_proj.bias", SKS_ROLE_BK},
    {"self_attn.v_proj.bias", SKS_ROLE_BV},   {"self_attn.q_norm.weight", SKS_ROLE_Q_NORM},
    {"self_attn.k_norm.weight", SKS_ROLE_K_NORM}, {"mlp.gate_proj.weight", SKS_ROLE_W_GATE},
    {"mlp.up_proj.weight", SKS_ROLE_W_UP},    {"mlp.down_proj.weight", SKS_ROLE_W_DOWN},
};

/* Llama, Mistral, Qwen2, Qwen3, Gemma: one pre-norm per sublayer. */
static const sks__name_role sks__hf_norms_llama[] = {
    {"input_layernorm.weight", SKS_ROLE_ATTN_NORM},
    {"post_attention_layernorm.weight", SKS_ROLE_FFN_NORM},
};

/* Gemma 2 / 3 sandwich norm: post_attention_layernorm is on the attention OUTPUT. */
static const sks__name_role sks__hf_norms_gemma2[] = {
    {"input_layernorm.weight", SKS_ROLE_ATTN_NORM},
    {"post_attention_layernorm.weight", SKS_ROLE_POST_ATTN_NORM},
    {"pre_feedforward_layernorm.weight", SKS_ROLE_FFN_NORM},
    {"post_feedforward_layernorm.weight", SKS_ROLE_POST_FFN_NORM},
};

/* OLMo 2: no input norms, a norm after each sublayer. */
static const sks__name_role sks__hf_norms_olmo2[] = {
    {"post_attention_layernorm.weight", SKS_ROLE_POST_ATTN_NORM},
    {"post_feedforward_layernorm.weight", SKS_ROLE_POST_FFN_NORM},
};

static const sks__fused_name sks__hf_fused_phi3[] = {
    {"self_attn.qkv_proj.weight", SKS__FUSE_QKV, 0},
    {"mlp.gate_up_proj.weight", SKS__FUSE_GATE_UP, 0},
};

/* GPT-2: Conv1D projections stored (in, out) (SKS__FAM_HF_CONV1D), c_attn fused q|k|v
 * columns, LayerNorms with biases, learned positions. */
static const sks__name_role sks__hf_globals_gpt2[] = {
    {"transformer.wte.weight", SKS_ROLE_EMBED},        {"transformer.wpe.weight", SKS_ROLE_POS_EMBED},
    {"transformer.ln_f.weight", SKS_ROLE_FINAL_NORM}, {"transformer.ln_f.bias", SKS_ROLE_FINAL_NORM_B},
    {"lm_head.weight", SKS_ROLE_LM_HEAD},
};
static const sks__name_role sks__hf_proj_gpt2[] = {
    {"attn.c_proj.weight", SKS_ROLE_WO},  {"attn.c_proj.bias", SKS_ROLE_BO},
    {"mlp.c_fc.weight", SKS_ROLE_W_UP},   {"mlp.c_fc.bias", SKS_ROLE_B_UP},
    {"mlp.c_proj.weight", SKS_ROLE_W_DOWN}, {"mlp.c_proj.bias", SKS_ROLE_B_DOWN},
};
static const sks__name_role sks__hf_norms_gpt2[] = {
    {"ln_1.weight", SKS_ROLE_ATTN_NORM}, {"ln_1.bias", SKS_ROLE_ATTN_NORM_B},
    {"ln_2.weight", SKS_ROLE_FFN_NORM},  {"ln_2.bias", SKS_ROLE_FFN_NORM_B},
};
static const sks__fused_name sks__hf_fused_gpt2[] = {
    {"attn.c_attn.weight", SKS__FUSE_QKV, 0},
    {"attn.c_attn.bias", SKS__FUSE_QKV, 1},
};

/* ---- GGUF tensor names (llama.cpp src/llama-arch.cpp, LLM_TENSOR_NAMES) --------------- */

static const sks__name_role sks__gguf_layer[] = {
    {"attn_norm.weight", SKS_ROLE_ATTN_NORM},   {"attn_q.weight", SKS_ROLE_WQ},
    {"attn_k.weight", SKS_ROLE_WK},             {"attn_v.weight", SKS_ROLE_WV},
    {"attn_output.weight", SKS_ROLE_WO},        {"attn_q.bias", SKS_ROLE_BQ},
    {"attn_k.bias", SKS_ROLE_BK},               {"attn_v.bias", SKS_ROLE_BV},
    {"attn_q_norm.weight", SKS_ROLE_Q_NORM},    {"attn_k_norm.weight", SKS_ROLE_K_NORM},
    {"ffn_norm.weight", SKS_ROLE_FFN_NORM},     {"ffn_gate.weight", SKS_ROLE_W_GATE},
    {"ffn_up.weight", SKS_ROLE_W_UP},           {"ffn_down.weight", SKS_ROLE_W_DOWN},
    {"post_attention_norm.weight", SKS_ROLE_POST_ATTN_NORM},
    {"post_ffw_norm.weight", SKS_ROLE_POST_FFN_NORM},
    {"attn_norm.bias", SKS_ROLE_ATTN_NORM_B},   {"ffn_norm.bias", SKS_ROLE_FFN_NORM_B},
    {"attn_output.bias", SKS_ROLE_BO},          {"ffn_up.bias", SKS_ROLE_B_UP},
    {"ffn_down.bias", SKS_ROLE_B_DOWN},
    /* MoE (read by loaders/moe.c; named here for the writers and messages): the experts'
     * names are those of the stacked 3-D tensors */
    {"ffn_gate_inp.weight", SKS_ROLE_ROUTER},   {"ffn_gate_exps.weight", SKS_ROLE_EXP_GATE},
    {"ffn_up_exps.weight", SKS_ROLE_EXP_UP},    {"ffn_down_exps.weight", SKS_ROLE_EXP_DOWN},
    {"ffn_gate_shexp.weight", SKS_ROLE_SHEXP_GATE}, {"ffn_up_shexp.weight", SKS_ROLE_SHEXP_UP},
    {"ffn_down_shexp.weight", SKS_ROLE_SHEXP_DOWN}, {"ffn_gate_inp_shexp.weight", SKS_ROLE_SHEXP_ROUTER},
};

static const sks__name_role sks__gguf_globals[] = {
    {"token_embd.weight", SKS_ROLE_EMBED},
    {"output_norm.weight", SKS_ROLE_FINAL_NORM},
    {"output.weight", SKS_ROLE_LM_HEAD},
    {"position_embd.weight", SKS_ROLE_POS_EMBED},
    {"output_norm.bias", SKS_ROLE_FINAL_NORM_B},
};

/* ---- the table ------------------------------------------------------------------------- */

#define SKS__HF_MODEL(norms)                                                                                  \
    "model.layers.", sks__hf_globals_model, SKS__N(sks__hf_globals_model), sks__hf_proj, SKS__N(sks__hf_proj), norms, \
        SKS__N(norms), NULL, 0
#define SKS__HF_MODEL_FUSED(norms, fused)                                                                     \
    "model.layers.", sks__hf_globals_model, SKS__N(sks__hf_globals_model), sks__hf_proj, SKS__N(sks__hf_proj), norms, \
        SKS__N(norms), fused, SKS__N(fused)

static const sks__family sks__families[] = {
    {"llama", "LlamaForCausalLM", NULL, "llama", "llama", SKS__FAM_GGUF_INTERLEAVED, SKS_ACT_SILU, 0,
     SKS__HF_MODEL(sks__hf_norms_llama)},
    /* convert_hf_to_gguf writes Mistral as `llama`: the row above reads it */
    {"mistral", "MistralForCausalLM", NULL, "mistral", NULL, 0, SKS_ACT_SILU, 0, SKS__HF_MODEL(sks__hf_norms_llama)},
    {"qwen2", "Qwen2ForCausalLM", NULL, "qwen2", "qwen2", SKS__FAM_QKV_BIAS, SKS_ACT_SILU, 0,
     SKS__HF_MODEL(sks__hf_norms_llama)},
    {"qwen3", "Qwen3ForCausalLM", NULL, "qwen3", "qwen3", SKS__FAM_QK_NORM, SKS_ACT_SILU, 0,
     SKS__HF_MODEL(sks__hf_norms_llama)},
    {"gemma", "GemmaForCausalLM", NULL, "gemma", "gemma", SKS__FAM_UNIT_OFFSET | SKS__FAM_EMBED_SCALE,
     SKS_ACT_GELU_TANH, 0, SKS__HF_MODEL(sks__hf_norms_llama)},
    {"gemma2", "Gemma2ForCausalLM", NULL, "gemma2", "gemma2",
     SKS__FAM_POST_NORMS | SKS__FAM_UNIT_OFFSET | SKS__FAM_EMBED_SCALE, SKS_ACT_GELU_TANH, 2,
     SKS__HF_MODEL(sks__hf_norms_gemma2)},
    /* Gemma 3 text; multimodal checkpoints keep it under a language_model prefix */
    {"gemma3", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "gemma3_text", "gemma3",
     SKS__FAM_QK_NORM | SKS__FAM_POST_NORMS | SKS__FAM_UNIT_OFFSET | SKS__FAM_EMBED_SCALE, SKS_ACT_GELU_TANH, 6,
     SKS__HF_MODEL(sks__hf_norms_gemma2)},
    /* fused qkv_proj / gate_up_proj; partial rotary and longrope come from the config */
    {"phi3", "Phi3ForCausalLM", NULL, "phi3", "phi3", SKS__FAM_GGUF_GATE_UP, SKS_ACT_SILU, 0,
     SKS__HF_MODEL_FUSED(sks__hf_norms_llama, sks__hf_fused_phi3)},
    {"olmo2", "Olmo2ForCausalLM", NULL, "olmo2", "olmo2",
     SKS__FAM_QK_NORM | SKS__FAM_QK_NORM_FULL | SKS__FAM_NO_INPUT_NORMS | SKS__FAM_POST_NORMS, SKS_ACT_SILU, 0,
     SKS__HF_MODEL(sks__hf_norms_olmo2)},
    {"gpt2", "GPT2LMHeadModel", NULL, "gpt2", "gpt2", SKS__FAM_GPT2 | SKS__FAM_QKV_BIAS | SKS__FAM_HF_CONV1D,
     SKS_ACT_GELU_TANH, 0, "transformer.h.", sks__hf_globals_gpt2, SKS__N(sks__hf_globals_gpt2), sks__hf_proj_gpt2,
     SKS__N(sks__hf_proj_gpt2), sks__hf_norms_gpt2, SKS__N(sks__hf_norms_gpt2), sks__hf_fused_gpt2,
     SKS__N(sks__hf_fused_gpt2)},
    /* Mixture of experts: the router and expert names are read by loaders/moe.c. The
     * GGUF converter writes Mixtral as `llama` with expert tensors: gguf.c switches a
     * llama file with llama.expert_count to this row. */
    {"mixtral", "MixtralForCausalLM", NULL, "mixtral", NULL, SKS__FAM_GGUF_INTERLEAVED | SKS__FAM_MOE, SKS_ACT_SILU, 0,
     SKS__HF_MODEL(sks__hf_norms_llama)},
    {"qwen2moe", "Qwen2MoeForCausalLM", NULL, "qwen2_moe", "qwen2moe", SKS__FAM_QKV_BIAS | SKS__FAM_MOE, SKS_ACT_SILU,
     0, SKS__HF_MODEL(sks__hf_norms_llama)},
    {"qwen3moe", "Qwen3MoeForCausalLM", NULL, "qwen3_moe", "qwen3moe", SKS__FAM_QK_NORM | SKS__FAM_MOE, SKS_ACT_SILU,
     0, SKS__HF_MODEL(sks__hf_norms_llama)},
};

static char sks__hf_list_buf[512], sks__gguf_list_buf[256];

static const char *sks__list(char *buf, size_t cap, int gguf) {
    if (buf[0]) return buf;
    size_t n = 0;
    for (size_t i = 0; i < SKS__N(sks__families); i++) {
        const char *s = gguf ? sks__families[i].gguf_arch : sks__families[i].hf_arch;
        if (!s) continue;
        int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", s);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
    return buf;
}

const char *sks__family_hf_list(void) { return sks__list(sks__hf_list_buf, sizeof sks__hf_list_buf, 0); }
const char *sks__family_gguf_list(void) { return sks__list(sks__gguf_list_buf, sizeof sks__gguf_list_buf, 1); }

const sks__family *sks__family_hf(const char *arch, const char *model_type) {
    for (size_t i = 0; i < SKS__N(sks__families); i++) {
        const sks__family *f = &sks__families[i];
        if (arch ? (!strcmp(arch, f->hf_arch) || (f->hf_arch_alt && !strcmp(arch, f->hf_arch_alt)))
                 : (model_type && !strcmp(model_type, f->hf_model_type)))
            return f;
    }
    return NULL;
}

const sks__family *sks__family_gguf(const char *gguf_arch) {
    for (size_t i = 0; i < SKS__N(sks__families); i++)
        if (sks__families[i].gguf_arch && !strcmp(gguf_arch, sks__families[i].gguf_arch)) return &sks__families[i];
    return NULL;
}

const sks__family *sks__family_named(const char *family) {
    for (size_t i = 0; i < SKS__N(sks__families); i++)
        if (!strcmp(family, sks__families[i].family)) return &sks__families[i];
    return NULL;
}

void sks__family_apply(const sks__family *fam, sks_format fmt, sks_arch *a) {
    unsigned fl = fam->flags;
    snprintf(a->family, sizeof a->family, "%s", fam->family);
    a->has_qkv_bias = !!(fl & SKS__FAM_QKV_BIAS);
    a->has_qk_norm = !!(fl & SKS__FAM_QK_NORM);
    a->qk_norm_full = !!(fl & SKS__FAM_QK_NORM_FULL);
    a->no_input_norms = !!(fl & SKS__FAM_NO_INPUT_NORMS);
    a->has_post_norms = !!(fl & SKS__FAM_POST_NORMS);
    a->norm_unit_offset = (fl & SKS__FAM_UNIT_OFFSET) && fmt != SKS_FMT_GGUF;
    a->embed_scale = !!(fl & SKS__FAM_EMBED_SCALE);
    a->rope_interleaved = (fl & SKS__FAM_GGUF_INTERLEAVED) && fmt == SKS_FMT_GGUF;
    a->act = fam->act;
    a->swa_full_every = fam->swa_full_every;
    a->norm_layer = a->ffn_plain = a->pos_learned = a->has_linear_bias = !!(fl & SKS__FAM_GPT2);
}

int sks_arch_set_family(sks_arch *a, const char *family) {
    const sks__family *fam = family ? sks__family_named(family) : NULL;
    if (!fam) {
        char pb[32];
        size_t n = 0;
        for (; family && family[n] && n + 1 < sizeof pb; n++)
            pb[n] = ((unsigned char)family[n] < 0x20 || family[n] == 0x7f) ? '?' : family[n];
        pb[n] = 0;
        return sks_fail(SKS_EUNSUPPORTED, "family '%s' is not known (%s)", pb, sks__family_gguf_list());
    }
    sks__family_apply(fam, SKS_FMT_MEMORY, a);
    return 0;
}

/* The text weights of a multimodal checkpoint: "model.language_model.X" (transformers 5)
 * and "language_model.model.X" (4.x) read as "model.X", "language_model.lm_head.X" as
 * "lm_head.X"; the vision tower's names match nothing and are ignored. */
static const char *sks__text_name(const sks__family *fam, const char *name, char *buf, size_t cap) {
    static const char *const pre[][2] = {
        {"model.language_model.", "model."}, {"language_model.model.", "model."}, {"language_model.lm_head.", "lm_head."}};
    if (fam->flags & SKS__FAM_HF_CONV1D) {
        /* GPT-2 base-model checkpoints name "h.0.ln_1.weight", "wte.weight": read them as
         * "transformer.h.0.ln_1.weight", ... */
        if (strncmp(name, "transformer.", 12) && strncmp(name, "lm_head.", 8)) {
            snprintf(buf, cap, "transformer.%s", name);
            return buf;
        }
        return name;
    }
    if (!fam->hf_arch_alt) return name;
    for (size_t i = 0; i < SKS__N(pre); i++) {
        size_t n = strlen(pre[i][0]);
        if (!strncmp(name, pre[i][0], n)) {
            snprintf(buf, cap, "%s%s", pre[i][1], name + n);
            return buf;
        }
    }
    return name;
}

int sks__family_hf_role(const sks__family *fam, const char *name, sks_role *role, long *layer) {
    char buf[512];
    name = sks__text_name(fam, name, buf, sizeof buf);
    return sks__match_tensor_name(name, fam->hf_globals, fam->n_hf_globals, fam->hf_prefix, fam->hf_layer,
                                  fam->n_hf_layer, role, layer) ||
           sks__match_tensor_name(name, NULL, 0, fam->hf_prefix, fam->hf_norms, fam->n_hf_norms, role, layer);
}

int sks__family_gguf_role(const char *name, sks_role *role, long *layer) {
    return sks__match_tensor_name(name, sks__gguf_globals, SKS__N(sks__gguf_globals), "blk.", sks__gguf_layer,
                                  SKS__N(sks__gguf_layer), role, layer);
}

static const sks__fused_name sks__gguf_fused[] = {
    {"attn_qkv.weight", SKS__FUSE_QKV, 0},
    {"attn_qkv.bias", SKS__FUSE_QKV, 1},
    {"ffn_up.weight", SKS__FUSE_GATE_UP, 0}, /* only where the row sets SKS__FAM_GGUF_GATE_UP */
};

int sks__family_fused(const sks__family *fam, sks_format fmt, const char *name, const sks__fused_name **fu, long *layer) {
    char buf[512];
    if (fmt != SKS_FMT_GGUF) name = sks__text_name(fam, name, buf, sizeof buf);
    const char *prefix = fmt == SKS_FMT_GGUF ? "blk." : fam->hf_prefix;
    const sks__fused_name *tab = fmt == SKS_FMT_GGUF ? sks__gguf_fused : fam->hf_fused;
    size_t n = fmt == SKS_FMT_GGUF ? SKS__N(sks__gguf_fused) : fam->n_hf_fused;
    size_t pl = strlen(prefix);
    if (!tab || strncmp(name, prefix, pl)) return 0;
    const char *p = name + pl;
    long l = 0;
    if (*p < '0' || *p > '9') return 0;
    while (*p >= '0' && *p <= '9' && l <= 10000000) l = l * 10 + (*p++ - '0');
    if (*p++ != '.') return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(p, tab[i].name)) continue;
        if (fmt == SKS_FMT_GGUF && tab[i].kind == SKS__FUSE_GATE_UP && !(fam->flags & SKS__FAM_GGUF_GATE_UP)) return 0;
        *fu = &tab[i];
        *layer = l;
        return 1;
    }
    return 0;
}

/* prefix + layer + "." + the map's name of role, the global name, or the role name */
static void sks__name_of(const sks__name_role *globals, size_t ng, const char *prefix, const sks__name_role *lmap,
                         size_t nl, sks_role role, int layer, char *out, size_t n) {
    for (size_t i = 0; i < ng; i++)
        if (globals[i].role == role) {
            snprintf(out, n, "%s", globals[i].name);
            return;
        }
    for (size_t i = 0; i < nl; i++)
        if (lmap[i].role == role) {
            snprintf(out, n, "%s%d.%s", prefix, layer, lmap[i].name);
            return;
        }
    snprintf(out, n, "%s", sks_role_name(role));
}

void sks__family_hf_name(const sks__family *fam, sks_role role, int layer, char *out, size_t n) {
    int norm = 0;
    for (size_t i = 0; i < fam->n_hf_norms; i++) norm |= fam->hf_norms[i].role == role;
    if (norm) sks__name_of(NULL, 0, fam->hf_prefix, fam->hf_norms, fam->n_hf_norms, role, layer, out, n);
    else sks__name_of(fam->hf_globals, fam->n_hf_globals, fam->hf_prefix, fam->hf_layer, fam->n_hf_layer, role, layer, out, n);
}

void sks__family_gguf_name(sks_role role, int layer, char *out, size_t n) {
    sks__name_of(sks__gguf_globals, SKS__N(sks__gguf_globals), "blk.", sks__gguf_layer, SKS__N(sks__gguf_layer), role,
                 layer, out, n);
}

/* ---- required roles ------------------------------------------------------------------------ */

int sks__role_need(const sks_arch *a, sks_role role, int64_t shape[2]) {
    const int64_t d = a->d_model, f = a->d_ffn, dh = a->head_dim, qd = (int64_t)a->n_heads * dh,
                  kd = (int64_t)a->n_kv_heads * dh, V = a->vocab_size;
    int64_t r = d, c = 1;
    int need = 1;
    switch (role) {
    case SKS_ROLE_EMBED: r = V, c = d; break;
    case SKS_ROLE_POS_EMBED: r = a->max_seq, c = d, need = a->pos_learned; break;
    case SKS_ROLE_ATTN_NORM_B:
    case SKS_ROLE_FFN_NORM_B: need = a->norm_layer && !a->no_input_norms; break;
    case SKS_ROLE_FINAL_NORM_B: need = a->norm_layer; break;
    case SKS_ROLE_BO:
    case SKS_ROLE_B_DOWN: need = a->has_linear_bias; break;
    case SKS_ROLE_B_UP: r = f, need = a->has_linear_bias; break;
    case SKS_ROLE_LM_HEAD: r = V, c = d, need = !a->tied_embeddings; break;
    case SKS_ROLE_FINAL_NORM: break;
    case SKS_ROLE_ATTN_NORM:
    case SKS_ROLE_FFN_NORM: need = !a->no_input_norms; break;
    case SKS_ROLE_POST_ATTN_NORM:
    case SKS_ROLE_POST_FFN_NORM: need = a->has_post_norms; break;
    case SKS_ROLE_WQ: r = qd, c = d; break;
    case SKS_ROLE_WK:
    case SKS_ROLE_WV: r = kd, c = d; break;
    case SKS_ROLE_WO: r = d, c = qd; break;
    case SKS_ROLE_BQ: r = qd, need = a->has_qkv_bias; break;
    case SKS_ROLE_BK:
    case SKS_ROLE_BV: r = kd, need = a->has_qkv_bias; break;
    case SKS_ROLE_Q_NORM: r = a->qk_norm_full ? qd : dh, need = a->has_qk_norm; break;
    case SKS_ROLE_K_NORM: r = a->qk_norm_full ? kd : dh, need = a->has_qk_norm; break;
    case SKS_ROLE_W_GATE: r = f, c = d, need = !a->ffn_plain; break;
    case SKS_ROLE_W_UP: r = f, c = d; break;
    case SKS_ROLE_W_DOWN: r = d, c = f; break;
    case SKS_ROLE_ROUTER: r = a->n_experts, c = d, need = a->n_experts > 0; break;
    case SKS_ROLE_EXP_GATE:
    case SKS_ROLE_EXP_UP: r = a->d_ffn_expert, c = d, need = a->n_experts > 0; break;
    case SKS_ROLE_EXP_DOWN: r = d, c = a->d_ffn_expert, need = a->n_experts > 0; break;
    case SKS_ROLE_SHEXP_GATE:
    case SKS_ROLE_SHEXP_UP: r = a->d_ffn_shared, c = d, need = a->n_experts > 0 && a->d_ffn_shared > 0; break;
    case SKS_ROLE_SHEXP_DOWN: r = d, c = a->d_ffn_shared, need = a->n_experts > 0 && a->d_ffn_shared > 0; break;
    case SKS_ROLE_SHEXP_ROUTER: need = a->n_experts > 0 && a->d_ffn_shared > 0; break;
    case SKS_ROLE_COUNT: need = 0; break;
    }
    shape[0] = r;
    shape[1] = c;
    return need;
}

/* A needed role is needed at layer l unless it belongs to the other kind of FFN: the
 * dense W_gate / W_up / W_down on MoE layers, the router and experts on dense ones. */
static int sks__role_at_layer(const sks_arch *a, sks_role r, int l) {
    int moe = sks_arch_layer_moe(a, l);
    if (r == SKS_ROLE_W_GATE || r == SKS_ROLE_W_UP || r == SKS_ROLE_W_DOWN) return !moe;
    if (r >= SKS_ROLE_ROUTER && r <= SKS_ROLE_SHEXP_ROUTER) return moe;
    return 1;
}

int sks__first_missing(const sks_model *m, sks_role *role, int *layer) {
    const sks_arch *a = sks_model_arch(m);
    for (int r = 0; r < SKS_ROLE_COUNT; r++) {
        int64_t shape[2];
        if (!sks__role_need(a, (sks_role)r, shape)) continue;
        int per = sks_role_is_per_layer((sks_role)r), l0 = per ? 0 : -1, l1 = per ? a->n_layers : 0;
        for (int l = l0; l < l1; l++) {
            if (per && !sks__role_at_layer(a, (sks_role)r, l)) continue;
            if (sks_role_is_per_expert((sks_role)r)) {
                for (int e = 0; e < a->n_experts; e++)
                    if (!sks_model_expert(m, (sks_role)r, l, e)) return *role = (sks_role)r, *layer = l, 1;
            } else if (!sks_model_tensor(m, (sks_role)r, l)) {
                return *role = (sks_role)r, *layer = l, 1;
            }
        }
    }
    return 0;
}
