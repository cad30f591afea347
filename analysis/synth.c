/* synth.c - synthetic checkpoints with planted spikes and sinks (see sks_synth.h and
 * docs/synth.md for the derivation of every gain below).
 *
 * Notation: d model width, f FFN width, L layers, H heads, Hkv KV heads, dh head dim.
 * Ordinary token embedding e_t = alpha mu + sigma_e P(n_t), n_t ~ N(0, I), P the
 * projector off {b, s*, s2, mu}; BOS embedding e_BOS = sigma_e sqrt(d) b + small noise.
 * x~ = RMSNorm(h) * gamma is the input of a block.
 */
#define _POSIX_C_SOURCE 200809L
#include "sks_synth.h"
#include "sks_out.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- counter-based random streams ------------------------------------------------ */

static inline uint64_t sks__mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t s;
} sks__rng;

/* splitmix64: state advances by the golden gamma, output is the mixed state. */
static inline uint64_t sks__next(sks__rng *r) { return sks__mix64(r->s += 0x9e3779b97f4a7c15ULL); }

/* One stream per (seed, key, row): any row can be regenerated on its own. */
static void sks__rng_seed(sks__rng *r, uint64_t seed, uint64_t key, uint64_t row) {
    r->s = sks__mix64(seed ^ sks__mix64(0x632be59bd9b4e019ULL * (key + 1))) ^ sks__mix64(row * 0x5851f42d4c957f2dULL + 0x14057b7ef767814fULL);
}

/* Box-Muller on one 64-bit draw per pair: u1, u2 from 24-bit halves. std * N(0, 1). */
static void sks__normals(sks__rng *r, float *out, int64_t n, float std) {
    const float two_pi = 6.28318530717958647692f, inv24 = 1.0f / 16777216.0f;
    int64_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t x = sks__next(r);
        float u1 = ((float)(uint32_t)(x >> 40) + 0.5f) * inv24;
        float u2 = (float)(uint32_t)((x >> 8) & 0xffffff) * inv24;
        float rad = std * sqrtf(-2.0f * logf(u1)), th = two_pi * u2;
        out[i] = rad * cosf(th);
        out[i + 1] = rad * sinf(th);
    }
    if (i < n) {
        uint64_t x = sks__next(r);
        float u1 = ((float)(uint32_t)(x >> 40) + 0.5f) * inv24;
        float u2 = (float)(uint32_t)((x >> 8) & 0xffffff) * inv24;
        out[i] = std * sqrtf(-2.0f * logf(u1)) * cosf(two_pi * u2);
    }
}

static uint64_t sks__uniform_int(sks__rng *r, uint64_t n) { return sks__next(r) % n; }

/* ---- presets -------------------------------------------------------------------- */

static const char *const sks__preset_names[] = {"tiny",       "demo",         "small",        "llama2-7b",
                                                "llama3-8b",  "qwen2.5-7b",   "mixtral-tiny", "mixtral-8x7b", NULL};
const char *const *sks_synth_preset_names(void) { return sks__preset_names; }

static void sks__arch_llama(sks_arch *a, int d, int f, int L, int H, int Hkv, int V, int max_pos) {
    sks_arch_llama(a, L, d, f, H, Hkv, d / H, V);
    a->max_seq = max_pos;
}

void sks_synth_config_default(sks_synth_config *c) {
    c->weight_std = 0.02;
    c->resid_std = 0; /* automatic: weight_std / sqrt(2 L) */
    c->qk_std = 0;    /* automatic: weight_std * min(1, sqrt(1024 / d)) */
    c->embed_std = 1.0;
    c->embed_mean_cos = 0.5;
    c->norm_std = 0.05;
    c->bias_std = 0.02;
    c->step_up_layer = -1;
    c->step_down_layer = -1;
    c->n_spike = 2;
    static const double vals[SKS_SYNTH_MAX_SPIKE] = {2400, -1600, 1100, -800, 600, -500, 400, -300};
    for (int i = 0; i < SKS_SYNTH_MAX_SPIKE; i++) {
        c->spike_channels[i] = -1;
        c->spike_values[i] = vals[i];
    }
    c->dominance = 8.0;
    c->n_up_units = 4;
    c->gate_z = 10.0;
    c->steer_ratio = 4.0;
    c->sink_fraction = 0.3;
    c->sink_margin = 9.0;
    c->avoid_margin = 12.0;
    c->moe_up_expert = c->arch.n_experts > 0 ? 1 % c->arch.n_experts : 0;
    c->moe_down_expert = c->arch.n_experts > 0 ? c->arch.n_experts - 1 : 0;
    c->moe_router_z = 12.0;
}

/* Mixtral: every FFN a mixture of E experts of width f, top-k, weights renormalized. */
static void sks__arch_mixtral(sks_arch *a, int E, int k) {
    snprintf(a->family, sizeof a->family, "mixtral");
    a->n_experts = E;
    a->n_experts_used = k;
    a->d_ffn_expert = a->d_ffn;
    a->moe_norm_topk = 1;
}

/* Llama 3's RoPE scaling as released: factor 8, low / high frequency factors 1 / 4, over
 * 8192 original positions (the preset, and the defaults of a --config "llama3" entry). */
static void sks__rope_llama3(sks_arch *a) {
    a->rope_scaling = SKS_ROPE_SCALING_LLAMA3;
    a->rope_factor = 8.0;
    a->rope_low_freq_factor = 1.0;
    a->rope_high_freq_factor = 4.0;
    a->rope_original_max_pos = 8192;
}

int sks_synth_preset(const char *name, sks_synth_config *c) {
    memset(c, 0, sizeof *c);
    sks_arch *a = &c->arch;
    if (!name) return sks_fail(SKS_EARG, "synth: no preset name");
    if (!strcmp(name, "tiny")) {
        sks__arch_llama(a, 64, 176, 4, 4, 2, 256, 256);
    } else if (!strcmp(name, "demo")) {
        sks__arch_llama(a, 256, 704, 8, 8, 4, 4096, 1024);
    } else if (!strcmp(name, "small")) {
        sks__arch_llama(a, 768, 2048, 12, 12, 12, 32000, 2048);
    } else if (!strcmp(name, "llama2-7b")) {
        sks__arch_llama(a, 4096, 11008, 32, 32, 32, 32000, 4096);
    } else if (!strcmp(name, "llama3-8b")) {
        sks__arch_llama(a, 4096, 14336, 32, 32, 8, 128256, 8192);
        a->rope_theta = 500000.0;
        sks__rope_llama3(a);
        a->bos_id = 128000;
        a->eos_id = 128001;
    } else if (!strcmp(name, "qwen2.5-7b")) {
        sks__arch_llama(a, 3584, 18944, 28, 28, 4, 152064, 32768);
        snprintf(a->family, sizeof a->family, "qwen2");
        a->rope_theta = 1000000.0;
        a->norm_eps = 1e-6;
        a->has_qkv_bias = 1;
        a->bos_id = 151643;
        a->eos_id = 151645;
    } else if (!strcmp(name, "mixtral-tiny")) {
        sks__arch_llama(a, 64, 128, 4, 4, 2, 256, 256);
        sks__arch_mixtral(a, 4, 2);
    } else if (!strcmp(name, "mixtral-8x7b")) {
        sks__arch_llama(a, 4096, 14336, 32, 32, 8, 32000, 32768);
        sks__arch_mixtral(a, 8, 2);
        a->rope_theta = 1000000.0;
    } else {
        char list[160] = "";
        for (const char *const *n = sks__preset_names; *n; n++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", n == sks__preset_names ? "" : ", ", *n);
        return sks_fail(SKS_EARG, "synth: unknown preset '%s' (%s)", name, list);
    }
    snprintf(c->preset, sizeof c->preset, "%s", name);
    sks_synth_config_default(c);
    if (!strcmp(name, "qwen2.5-7b")) c->step_up_layer = 3;
    return 0;
}

int sks_synth_set_model_type(sks_synth_config *c, const char *model_type) {
    static const char *const ok[] = {"llama", "mistral", "qwen2", "gemma2", "mixtral"};
    size_t i = 0;
    while (i < sizeof ok / sizeof ok[0] && (!model_type || strcmp(model_type, ok[i]))) i++;
    if (i == sizeof ok / sizeof ok[0])
        return sks_fail(SKS_EUNSUPPORTED, "synth: model_type '%.40s' is not synthesized (llama, mistral, qwen2, gemma2, mixtral)",
                        model_type ? model_type : "");
    sks_arch *a = &c->arch;
    int rc = sks_arch_set_family(a, model_type);
    if (rc) return rc;
    /* experts only in the MoE family (a mixtral preset turned into a dense family) */
    if (strcmp(model_type, "mixtral")) a->n_experts = a->n_experts_used = a->d_ffn_expert = 0;
    if (strcmp(model_type, "gemma2")) return 0;
    /* Gemma 2's traits at published values (gemma-2-2b: softcaps 50 / 30, window 4096 on
     * every other layer, eps 1e-6), the score scale of the head size; a sharper planted
     * gate (docs/synth.md, "Gemma 2") */
    a->query_pre_attn_scalar = a->head_dim;
    a->attn_softcap = 50.0;
    a->final_softcap = 30.0;
    a->sliding_window = 4096;
    a->norm_eps = 1e-6;
    if (c->gate_z == 10.0) c->gate_z = 30.0;
    return 0;
}

/* ---- the generator -------------------------------------------------------------- */

typedef struct {
    char name[96];
    sks_role role;
    int layer;
    int expert;              /* per-expert roles; -1 otherwise */
    int ndim;
    int64_t shape[2];
} sks__tinfo;

struct sks_synth {
    sks_synth_config cfg;
    sks_arch a;
    uint64_t seed;
    int d, f, L, H, Hkv, dh, V, grp;
    double resid_std, qk_std, alpha_mu;
    size_t n_t;
    sks__tinfo *t;

    /* planted directions, (d) each, unit */
    float *mu, *bdir, *sstar, *s2, *vdir;
    int *chan_of;            /* (d): spike index of a channel or -1 */
    int *units;              /* up (n_up), up2 (n_up2), down (n_down) */
    int n_up, n_up2, n_down;
    unsigned char *unit_kind; /* (f): 0 none, 1 up, 2 up2, 3 down */

    int ls, ld;              /* ld == L: no step-down */
    double a_up, a_up2, a_down, tau;
    double D_up[SKS_SYNTH_MAX_SPIKE], D_up2[SKS_SYNTH_MAX_SPIKE], D_down[SKS_SYNTH_MAX_SPIKE];
    double lambda1[SKS_SYNTH_MAX_SPIKE], lambda2[SKS_SYNTH_MAX_SPIKE];

    int h0, g0, rv, r;       /* steering head, its KV head, value dim; key dim r */
    double kappa_v, kappa_o, Gq0, Gk0;
    double *Gq, *Gk;         /* (L) sink query / key gains */
    unsigned char *sink;     /* (L, H) */
    unsigned char *kvp;      /* (L, Hkv): KV head carries a planted key row r */
    int n_sink;
    int *sink_list;          /* (n_sink, 2) */
    double cos_pred, bulk_est, k_steer;
    /* Gemma 2 shape (sandwich norms, docs/synth.md "Gemma 2"): the step-up gate's mu
     * term, the post-FFN gain on the spike channels at ls and ld, and the top
     * eigenvector of the planted block of S_c (s* tilted towards -mu by the gate) */
    int sandwich;
    double mu_gate, post_spike;
    float *seig;             /* (d) */
    float *gatt0;            /* (d) the layer-0 attention norm's gain */
    double beta_up, beta_down; /* planted router rows (MoE): beta s*, beta v */
    sks_synth_planted pl;
};

/* Tensor keys for the streams: independent of the order of tensors in the file. */
static uint64_t sks__tkey(sks_role role, int layer) { return (uint64_t)role * 1000003ULL + (uint64_t)(layer + 1); }
#define SKS__KEY_PLANT 0xfeedULL

static void sks__unit(float *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)v[i] * v[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < n; i++) v[i] *= inv;
}

/* v -= (v.u) u for each unit u in us */
static void sks__project_off(float *v, int n, float *const *us, int nu) {
    for (int k = 0; k < nu; k++) {
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)v[i] * us[k][i];
        float fd = (float)dot;
        for (int i = 0; i < n; i++) v[i] -= fd * us[k][i];
    }
}

static double sks__silu(double z) { return z / (1.0 + exp(-z)); }
/* Gemma 2 shape: the post-norm gains of every block but the layer-0 attention. */
#define SKS__POST_GAIN 0.25
/* The family's FFN activation: SiLU, or GELU's tanh approximation (Gemma). */
static double sks__act(const sks_synth *s, double z) {
    if (s->a.act == SKS_ACT_GELU_TANH) return 0.5 * z * (1.0 + tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)));
    return sks__silu(z);
}

static int sks__ti(const sks_synth *s, sks_role role, int layer) {
    for (size_t i = 0; i < s->n_t; i++)
        if (s->t[i].role == role && s->t[i].layer == (sks_role_is_per_layer(role) ? layer : -1)) return (int)i;
    return -1;
}

static void sks__gen_row(const sks_synth *s, const sks__tinfo *t, int64_t row, float *out) {
    const int d = s->d, l = t->layer;
    int64_t n = t->ndim == 2 ? t->shape[1] : t->shape[0];
    sks__rng rng;
    sks__rng_seed(&rng, s->seed, sks__tkey(t->role, l) ^ ((uint64_t)(t->expert + 1) << 40), (uint64_t)row);
    sks_role role = t->role;
    if (sks_role_is_per_expert(role)) {
        /* an expert: random, except the planted ones, which are the dense FFN's rows */
        int planted = (l == s->ls && t->expert == s->cfg.moe_up_expert) ||
                      (l == s->ld && t->expert == s->cfg.moe_down_expert);
        role = role == SKS_ROLE_EXP_GATE ? SKS_ROLE_W_GATE : role == SKS_ROLE_EXP_UP ? SKS_ROLE_W_UP : SKS_ROLE_W_DOWN;
        if (!planted) {
            sks__normals(&rng, out, n, (float)(role == SKS_ROLE_W_DOWN ? s->resid_std : s->cfg.weight_std));
            return;
        }
    }
    switch (role) {
    case SKS_ROLE_ROUTER:
        /* the planted experts' rows: the spike token's logit is moe_router_z */
        sks__normals(&rng, out, n, (float)s->cfg.weight_std);
        if (l == s->ls && row == s->cfg.moe_up_expert)
            for (int i = 0; i < d; i++) out[i] = (float)(s->beta_up * s->sstar[i]);
        else if (l == s->ld && row == s->cfg.moe_down_expert)
            for (int i = 0; i < d; i++) out[i] = (float)(s->beta_down * s->vdir[i]);
        return;
    case SKS_ROLE_EMBED: {
        /* ordinary tokens: noise off {b, s*, s2, mu}, so that every one has exactly
         * alpha along mu (a common component the planted queries and gates key on) */
        float *dirs[4] = {s->bdir, s->sstar, s->s2, s->mu};
        if (row == s->a.bos_id) {
            sks__normals(&rng, out, d, (float)(0.1 * s->cfg.embed_std));
            sks__project_off(out, d, dirs, 4);
            float g = (float)(s->cfg.embed_std * sqrt((double)d));
            for (int i = 0; i < d; i++) out[i] += g * s->bdir[i];
        } else {
            sks__normals(&rng, out, d, (float)s->cfg.embed_std);
            sks__project_off(out, d, dirs, 4);
            float g = (float)s->alpha_mu;
            for (int i = 0; i < d; i++) out[i] += g * s->mu[i];
        }
        if (s->a.embed_scale) /* Gemma multiplies by sqrt(d): store e / sqrt(d), so h_0 = e */
            for (int i = 0; i < d; i++) out[i] /= sqrtf((float)d);
        return;
    }
    case SKS_ROLE_ATTN_NORM:
    case SKS_ROLE_FFN_NORM:
    case SKS_ROLE_FINAL_NORM:
    case SKS_ROLE_POST_ATTN_NORM:
    case SKS_ROLE_POST_FFN_NORM:
        sks__normals(&rng, out, n, (float)s->cfg.norm_std);
        for (int64_t i = 0; i < n; i++) out[i] += 1.0f;
        /* Gemma 2: every block's output has the size of its post-norm gain, so gains of
         * SKS__POST_GAIN keep the common mean direction mu of ordinary tokens dominant (the
         * planted gates key on it); the layer-0 attention (the steering) keeps gain 1 */
        if ((t->role == SKS_ROLE_POST_ATTN_NORM && l > 0) || t->role == SKS_ROLE_POST_FFN_NORM)
            for (int64_t i = 0; i < n; i++) out[i] *= (float)SKS__POST_GAIN;
        /* Gemma 2: the post-FFN norm of ls and ld scales the spike channels back up to
         * the planted values (it would otherwise cap them at about sqrt(d)) */
        if (t->role == SKS_ROLE_POST_FFN_NORM && (l == s->ls || l == s->ld))
            for (int64_t i = 0; i < n; i++)
                if (s->chan_of[i] >= 0) out[i] = (float)s->post_spike;
        if (s->a.norm_unit_offset) /* (1 + w) norms store w */
            for (int64_t i = 0; i < n; i++) out[i] -= 1.0f;
        return;
    case SKS_ROLE_WQ: {
        sks__normals(&rng, out, n, (float)s->qk_std);
        int h = (int)(row / s->dh), rr = (int)(row % s->dh), g = h / s->grp;
        if (rr != s->r || !s->kvp[(size_t)l * s->Hkv + g]) return;
        double gain = 0;
        if (l == 0 && h == s->h0) gain = s->Gq0;
        else if (s->sink[(size_t)l * s->H + h]) gain = s->Gq[l];
        for (int i = 0; i < d; i++) out[i] = (float)(gain * s->mu[i]);
        return;
    }
    case SKS_ROLE_WK: {
        sks__normals(&rng, out, n, (float)s->qk_std);
        int g = (int)(row / s->dh), rr = (int)(row % s->dh);
        if (rr != s->r || !s->kvp[(size_t)l * s->Hkv + g]) return;
        if (l == 0) {
            for (int i = 0; i < d; i++) out[i] = (float)(-s->Gk0 * s->bdir[i]);
        } else {
            for (int i = 0; i < d; i++) out[i] = (float)(s->Gk[l] * s->vdir[i]);
        }
        return;
    }
    case SKS_ROLE_WV:
        sks__normals(&rng, out, n, (float)s->cfg.weight_std);
        if (l == 0 && row == (int64_t)s->g0 * s->dh + s->rv) {
            for (int i = 0; i < d; i++) out[i] = (float)(s->kappa_v * s->bdir[i]);
            if (s->sandwich) /* b / gamma: the value reads b.h exactly, 0 for every ordinary
                              * token (their embeddings have no b), where b.(h * gamma) would
                              * leak about norm_std of it, and the post-norm would blow that
                              * leak up to full size */
                for (int i = 0; i < d; i++) out[i] /= s->gatt0[i];
        }
        return;
    case SKS_ROLE_WO:
        sks__normals(&rng, out, n, (float)s->resid_std);
        if (l == 0) out[(int64_t)s->h0 * s->dh + s->rv] = (float)(s->kappa_o * s->sstar[row]);
        return;
    case SKS_ROLE_BQ:
    case SKS_ROLE_BK:
    case SKS_ROLE_BV: {
        sks__normals(&rng, out, n, (float)s->cfg.bias_std);
        if (t->role == SKS_ROLE_BV) {
            if (l == 0) out[(int64_t)s->g0 * s->dh + s->rv] = 0;
            return;
        }
        int nh = t->role == SKS_ROLE_BQ ? s->H : s->Hkv;
        for (int h = 0; h < nh; h++) {
            int g = t->role == SKS_ROLE_BQ ? h / s->grp : h;
            if (s->kvp[(size_t)l * s->Hkv + g]) out[(int64_t)h * s->dh + s->r] = 0;
        }
        return;
    }
    case SKS_ROLE_W_GATE:
    case SKS_ROLE_W_UP: {
        sks__normals(&rng, out, n, (float)s->cfg.weight_std);
        int kind = s->unit_kind[row];
        if (kind == 0) return;
        int gate = t->role == SKS_ROLE_W_GATE;
        if (l == s->ls && kind == 1) {
            /* sandwich: the gate also reads -mu_gate mu, shut for ordinary tokens */
            for (int i = 0; i < d; i++) out[i] = (float)(s->a_up * s->sstar[i] - (gate ? s->mu_gate * s->mu[i] : 0.0));
        } else if (l == s->ls && kind == 2) {
            for (int i = 0; i < d; i++) out[i] = (float)(s->a_up2 * s->s2[i]);
        } else if (l == s->ld && kind == 3) {
            /* gate: a_d (v - tau mu): open on the spike token, shut on ordinary tokens */
            for (int i = 0; i < d; i++)
                out[i] = (float)(s->a_down * (s->vdir[i] - (gate ? s->tau * s->mu[i] : 0.0)));
        }
        return;
    }
    case SKS_ROLE_W_DOWN: {
        sks__normals(&rng, out, n, (float)s->resid_std);
        int c = s->chan_of[row];
        if (s->sandwich && c >= 0 && (l == s->ls || l == s->ld))
            memset(out, 0, (size_t)n * sizeof *out); /* the post-norm would blow up any random part */
        if (l == s->ls) {
            for (int k = 0; k < s->n_up + s->n_up2; k++) {
                int j = s->units[k];
                out[j] = c >= 0 ? (float)(k < s->n_up ? s->D_up[c] : s->D_up2[c]) : 0.1f * out[j];
            }
        } else if (l == s->ld) {
            for (int k = 0; k < s->n_down; k++) {
                int j = s->units[s->n_up + s->n_up2 + k];
                out[j] = c >= 0 ? (float)s->D_down[c] : 0.1f * out[j];
            }
        }
        return;
    }
    case SKS_ROLE_LM_HEAD:
        sks__normals(&rng, out, n, (float)s->cfg.weight_std);
        return;
    default:
        memset(out, 0, (size_t)n * sizeof *out);
        return;
    }
}

int sks_synth_rows(const sks_synth *s, size_t i, int64_t row0, int64_t nrows, float *out) {
    if (i >= s->n_t) return sks_fail(SKS_EARG, "synth: tensor %zu out of range", i);
    const sks__tinfo *t = &s->t[i];
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
    if (row0 < 0 || nrows < 0 || row0 + nrows > rows)
        return sks_fail(SKS_EARG, "synth: rows [%lld, %lld) outside %s", (long long)row0, (long long)(row0 + nrows), t->name);
    for (int64_t k = 0; k < nrows; k++) sks__gen_row(s, t, row0 + k, out + k * cols);
    return 0;
}

static void sks__add_t(sks_synth *s, const char *name, sks_role role, int layer, int ndim, int64_t r, int64_t c) {
    sks__tinfo *t = &s->t[s->n_t++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->role = role;
    t->expert = -1;
    t->layer = sks_role_is_per_layer(role) ? layer : -1;
    t->ndim = ndim;
    t->shape[0] = r;
    t->shape[1] = ndim == 2 ? c : 1;
}

static int sks__build_tensors(sks_synth *s) {
    size_t cap = 3 + (size_t)s->L * (14 + 3 * (size_t)(s->a.n_experts > 0 ? s->a.n_experts : 0));
    s->t = calloc(cap, sizeof *s->t);
    if (!s->t) return sks_fail(SKS_ENOMEM, "synth: out of memory");
    int64_t d = s->d, f = s->f, qd = (int64_t)s->H * s->dh, kd = (int64_t)s->Hkv * s->dh;
    char nm[96];
    sks__add_t(s, "model.embed_tokens.weight", SKS_ROLE_EMBED, -1, 2, s->V, d);
    for (int l = 0; l < s->L; l++) {
#define SKS__T(suffix, role, nd, r, c)                                    \
    do {                                                                  \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);         \
        sks__add_t(s, nm, role, l, nd, r, c);                             \
    } while (0)
        SKS__T("input_layernorm.weight", SKS_ROLE_ATTN_NORM, 1, d, 1);
        SKS__T("self_attn.q_proj.weight", SKS_ROLE_WQ, 2, qd, d);
        if (s->a.has_qkv_bias) SKS__T("self_attn.q_proj.bias", SKS_ROLE_BQ, 1, qd, 1);
        SKS__T("self_attn.k_proj.weight", SKS_ROLE_WK, 2, kd, d);
        if (s->a.has_qkv_bias) SKS__T("self_attn.k_proj.bias", SKS_ROLE_BK, 1, kd, 1);
        SKS__T("self_attn.v_proj.weight", SKS_ROLE_WV, 2, kd, d);
        if (s->a.has_qkv_bias) SKS__T("self_attn.v_proj.bias", SKS_ROLE_BV, 1, kd, 1);
        SKS__T("self_attn.o_proj.weight", SKS_ROLE_WO, 2, d, qd);
        if (s->a.has_post_norms) { /* Gemma 2 */
            SKS__T("post_attention_layernorm.weight", SKS_ROLE_POST_ATTN_NORM, 1, d, 1);
            SKS__T("pre_feedforward_layernorm.weight", SKS_ROLE_FFN_NORM, 1, d, 1);
            SKS__T("post_feedforward_layernorm.weight", SKS_ROLE_POST_FFN_NORM, 1, d, 1);
        } else {
            SKS__T("post_attention_layernorm.weight", SKS_ROLE_FFN_NORM, 1, d, 1);
        }
        if (s->a.n_experts > 0) {
            /* Mixtral's names: the router, then w1 (gate), w3 (up), w2 (down) per expert */
            SKS__T("block_sparse_moe.gate.weight", SKS_ROLE_ROUTER, 2, s->a.n_experts, d);
            static const char *const part[3] = {"w1", "w3", "w2"};
            static const sks_role prole[3] = {SKS_ROLE_EXP_GATE, SKS_ROLE_EXP_UP, SKS_ROLE_EXP_DOWN};
            /* grouped by part (every expert's w1, then w3, then w2): the GGUF writer
             * streams each group as one stacked 3-D tensor */
            for (int k = 0; k < 3; k++)
                for (int e = 0; e < s->a.n_experts; e++) {
                    char sub[64];
                    snprintf(sub, sizeof sub, "block_sparse_moe.experts.%d.%s.weight", e, part[k]);
                    SKS__T(sub, prole[k], 2, k == 2 ? d : f, k == 2 ? f : d);
                    s->t[s->n_t - 1].expert = e;
                }
        } else {
            SKS__T("mlp.gate_proj.weight", SKS_ROLE_W_GATE, 2, f, d);
            SKS__T("mlp.up_proj.weight", SKS_ROLE_W_UP, 2, f, d);
            SKS__T("mlp.down_proj.weight", SKS_ROLE_W_DOWN, 2, d, f);
        }
#undef SKS__T
    }
    sks__add_t(s, "model.norm.weight", SKS_ROLE_FINAL_NORM, -1, 1, d, 1);
    if (!s->a.tied_embeddings) sks__add_t(s, "lm_head.weight", SKS_ROLE_LM_HEAD, -1, 2, s->V, d);
    return 0;
}

/* gamma of (role, layer) as double (d) */
static int sks__gamma(const sks_synth *s, sks_role role, int layer, float *tmp, double *g) {
    int i = sks__ti(s, role, layer);
    if (i < 0) return sks_fail(SKS_EINTERNAL, "synth: missing norm");
    int rc = sks_synth_rows(s, (size_t)i, 0, 1, tmp);
    for (int k = 0; k < s->d; k++) g[k] = tmp[k] + (s->a.norm_unit_offset ? 1.0 : 0.0);
    return rc;
}

/* E[SiLU(g)^2] for g ~ N(0, s2) by quadrature. */
static double sks__silu2_mean(double s2) {
    double sd = sqrt(s2), acc = 0, w = 0;
    for (int k = -4000; k <= 4000; k++) {
        double z = k * 0.002 * sd, p = exp(-0.5 * (k * 0.002) * (k * 0.002));
        double y = sks__silu(z);
        acc += p * y * y;
        w += p;
    }
    return acc / w;
}

/* RMSNorm(h) * gamma, with an extra per-coordinate variance extra_var in the rms. */
static void sks__norm_pred(const double *h, const double *gamma, int d, double extra_var, double eps, double *x) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += h[i] * h[i];
    double inv = 1.0 / sqrt(ss / d + extra_var + eps);
    for (int i = 0; i < d; i++) x[i] = h[i] * inv * gamma[i];
}

/* sum_i mu_i^2 gamma_i: mu.(x * gamma) per unit of mu.x when x is mostly along mu */
static double sks__musq_gamma(const sks_synth *s, const double *gamma) {
    double m = 0;
    for (int i = 0; i < s->d; i++) m += (double)s->mu[i] * s->mu[i] * gamma[i];
    return m;
}

static double sks__dotdf(const double *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static int sks__check_cfg(const sks_synth_config *c) {
    const sks_arch *a = &c->arch;
    int rc = sks_arch_validate(a);
    if (rc) return rc;
    if (strcmp(a->family, "llama") && strcmp(a->family, "mistral") && strcmp(a->family, "qwen2") &&
        strcmp(a->family, "gemma2") && strcmp(a->family, "mixtral"))
        return sks_fail(SKS_EUNSUPPORTED, "synth: family '%s' (llama, mistral, qwen2, gemma2 or mixtral)", a->family);
    if ((a->n_experts > 0) != !strcmp(a->family, "mixtral"))
        return sks_fail(SKS_EARG, "synth: experts (num_local_experts) go with the mixtral family");
    if (a->n_experts > 0) {
        if (a->n_experts_used < 1 || a->n_experts_used > a->n_experts || a->d_ffn_expert != a->d_ffn)
            return sks_fail(SKS_EARG, "synth: %d experts per token of %d (expert width %d, intermediate_size %d)",
                            a->n_experts_used, a->n_experts, a->d_ffn_expert, a->d_ffn);
        if (c->moe_up_expert < 0 || c->moe_up_expert >= a->n_experts || c->moe_down_expert < 0 ||
            c->moe_down_expert >= a->n_experts)
            return sks_fail(SKS_EARG, "synth: planted experts %d, %d outside [0, %d)", c->moe_up_expert,
                            c->moe_down_expert, a->n_experts);
        if (!(c->moe_router_z > 0 && c->moe_router_z < 60))
            return sks_fail(SKS_EARG, "synth: moe_router_z %g outside (0, 60)", c->moe_router_z);
    }
    if (a->has_qk_norm) return sks_fail(SKS_EUNSUPPORTED, "synth: q/k norm (qwen3) is not synthesized");
    if (a->rope_interleaved) return sks_fail(SKS_EUNSUPPORTED, "synth: writes Hugging Face rotate-half order only");
    if (a->n_layers < 2) return sks_fail(SKS_EARG, "synth: needs at least 2 layers");
    if (a->d_model < 16) return sks_fail(SKS_EARG, "synth: d_model %d < 16", a->d_model);
    if (a->bos_id < 0 || a->bos_id >= a->vocab_size) return sks_fail(SKS_EARG, "synth: bos_token_id %d outside the vocabulary", a->bos_id);
    if (c->n_spike < 1 || c->n_spike > SKS_SYNTH_MAX_SPIKE || c->n_spike > a->d_model / 4)
        return sks_fail(SKS_EARG, "synth: n_spike %d out of range", c->n_spike);
    if (c->n_up_units < 1 || c->n_up_units > SKS_SYNTH_MAX_UNITS) return sks_fail(SKS_EARG, "synth: n_up_units %d out of range", c->n_up_units);
    if (c->n_up_units + SKS_SYNTH_MAX_UNITS / 2 + 2 > a->d_ffn) return sks_fail(SKS_EARG, "synth: d_ffn %d too small", a->d_ffn);
    if (!(c->dominance > 1)) return sks_fail(SKS_EARG, "synth: dominance %g must exceed 1", c->dominance);
    if (!(c->weight_std > 0) || !(c->embed_std > 0) || c->resid_std < 0 || c->qk_std < 0 || c->norm_std < 0 ||
        c->bias_std < 0)
        return sks_fail(SKS_EARG, "synth: standard deviations must be positive");
    if (!(c->embed_mean_cos > 0 && c->embed_mean_cos < 0.95)) return sks_fail(SKS_EARG, "synth: embed_mean_cos %g outside (0, 0.95)", c->embed_mean_cos);
    if (!(c->gate_z > 2 && c->gate_z < 60)) return sks_fail(SKS_EARG, "synth: gate_z %g outside (2, 60)", c->gate_z);
    if (!(c->steer_ratio > 0) || !(c->sink_margin > 0) || !(c->avoid_margin > 0))
        return sks_fail(SKS_EARG, "synth: steer_ratio, sink_margin, avoid_margin must be positive");
    if (!(c->sink_fraction >= 0 && c->sink_fraction <= 1)) return sks_fail(SKS_EARG, "synth: sink_fraction %g outside [0, 1]", c->sink_fraction);
    for (int i = 0; i < c->n_spike; i++) {
        if (!(fabs(c->spike_values[i]) > 0) || !isfinite(c->spike_values[i]))
            return sks_fail(SKS_EARG, "synth: spike value %d is zero or not finite", i);
        if (c->spike_channels[i] >= a->d_model) return sks_fail(SKS_EARG, "synth: spike channel %d >= d_model", c->spike_channels[i]);
        for (int j = 0; j < i; j++)
            if (c->spike_channels[i] >= 0 && c->spike_channels[i] == c->spike_channels[j])
                return sks_fail(SKS_EARG, "synth: spike channel %d repeated", c->spike_channels[i]);
    }
    return 0;
}

void sks_synth_free(sks_synth *s) {
    if (!s) return;
    SKS_FREE_ALL(s->t, s->mu, s->chan_of, s->units, s->unit_kind, s->Gq, s->Gk, s->sink, s->kvp, s->sink_list,
                 s->seig, s->gatt0, s);
}

int sks_synth_new(const sks_synth_config *cfg, uint64_t seed, sks_synth **out) {
    *out = NULL;
    int rc = sks__check_cfg(cfg);
    if (rc) return rc;
    sks_synth *s = calloc(1, sizeof *s);
    if (!s) return sks_fail(SKS_ENOMEM, "synth: out of memory");
    s->cfg = *cfg;
    s->a = cfg->arch;
    s->seed = seed;
    s->d = s->a.d_model;
    s->f = s->a.d_ffn;
    s->L = s->a.n_layers;
    s->H = s->a.n_heads;
    s->Hkv = s->a.n_kv_heads;
    s->dh = s->a.head_dim;
    s->V = s->a.vocab_size;
    s->grp = s->H / s->Hkv;
    s->sandwich = s->a.has_post_norms;
    const int d = s->d, f = s->f, L = s->L, H = s->H;
    s->resid_std = cfg->resid_std > 0 ? cfg->resid_std : cfg->weight_std / sqrt(2.0 * L);
    /* random q.k logits have std qk_std^2 d: above d = 1024 the default keeps them at
     * the level of d = 1024 so that no unplanted head sinks by chance */
    s->qk_std = cfg->qk_std > 0 ? cfg->qk_std : cfg->weight_std * (d > 1024 ? sqrt(1024.0 / d) : 1.0);

    /* layers: step-up ls, step-down ld (L = none) */
    s->ls = cfg->step_up_layer >= 0 ? cfg->step_up_layer : (L >= 4 ? 1 : 0);
    s->ld = cfg->step_down_layer >= 0 ? cfg->step_down_layer : (L >= 8 ? L - 2 : L - 1);
    if (s->ls >= L - 1 || s->ld > L || s->ld < s->ls + 2) {
        int ls = s->ls, ld = s->ld;
        sks_synth_free(s);
        return sks_fail(SKS_EARG, "synth: need 0 <= step_up_layer (%d) < step_down_layer - 1 (%d), step_up < L - 1 (%d)",
                        ls, ld - 1, L - 1);
    }

    rc = SKS_ENOMEM;
    s->mu = calloc((size_t)5 * d, sizeof *s->mu);
    s->chan_of = malloc((size_t)d * sizeof *s->chan_of);
    s->unit_kind = calloc((size_t)f, 1);
    s->Gq = calloc((size_t)L, sizeof *s->Gq);
    s->Gk = calloc((size_t)L, sizeof *s->Gk);
    s->sink = calloc((size_t)L * H, 1);
    s->kvp = calloc((size_t)L * s->Hkv, 1);
    s->sink_list = calloc((size_t)L * H * 2, sizeof *s->sink_list);
    double *buf = calloc((size_t)8 * d, sizeof *buf);
    float *tmp = calloc((size_t)d, sizeof *tmp);
    s->seig = calloc((size_t)d, sizeof *s->seig);
    s->gatt0 = calloc((size_t)d, sizeof *s->gatt0);
    if (!s->seig || !s->gatt0 || !s->mu || !s->chan_of || !s->unit_kind || !s->Gq || !s->Gk || !s->sink || !s->kvp || !s->sink_list || !buf || !tmp)
        goto fail;
    s->bdir = s->mu + d;
    s->sstar = s->mu + 2 * d;
    s->s2 = s->mu + 3 * d;
    s->vdir = s->mu + 4 * d;
    if ((rc = sks__build_tensors(s))) goto fail;

    sks__rng pr;
    sks__rng_seed(&pr, seed, SKS__KEY_PLANT, 0);

    /* spike channels: given, or drawn without repetition */
    for (int i = 0; i < d; i++) s->chan_of[i] = -1;
    for (int c = 0; c < cfg->n_spike; c++) {
        int ch = cfg->spike_channels[c];
        while (ch < 0 || s->chan_of[ch] >= 0) ch = (int)sks__uniform_int(&pr, (uint64_t)d);
        s->chan_of[ch] = c;
        s->pl.channels[c] = ch;
        s->pl.values[c] = cfg->spike_values[c];
    }
    s->pl.n_spike = cfg->n_spike;

    /* directions mu, b, s*, s2: Gaussian, zero on the spike channels, Gram-Schmidt */
    {
        float *dirs[4] = {s->mu, s->bdir, s->sstar, s->s2};
        for (int k = 0; k < 4; k++) {
            sks__rng dr;
            sks__rng_seed(&dr, seed, SKS__KEY_PLANT, (uint64_t)(k + 1));
            sks__normals(&dr, dirs[k], d, 1.0f);
            for (int c = 0; c < cfg->n_spike; c++) dirs[k][s->pl.channels[c]] = 0;
            sks__project_off(dirs[k], d, dirs, k);
            sks__project_off(dirs[k], d, dirs, k); /* twice is enough (Kahan) */
            sks__unit(dirs[k], d);
        }
        double pn = 0;
        for (int c = 0; c < cfg->n_spike; c++) pn += cfg->spike_values[c] * cfg->spike_values[c];
        for (int c = 0; c < cfg->n_spike; c++) s->vdir[s->pl.channels[c]] = (float)(cfg->spike_values[c] / sqrt(pn));
        /* Gemma 2: the post-FFN norm maps token 0's FFN output y (|y| ~ ||P||, on the spike
         * channels) to g * y / rms(y) ~ g sqrt(d) P / ||P||: a gain ||P|| / sqrt(d) on the
         * spike channels restores P */
        s->post_spike = sqrt(pn / d);
    }

    /* hidden units: n_up carry s*, n_up2 carry s2 (both at ls), 2 step-down units (ld) */
    s->n_up = cfg->n_up_units;
    s->n_up2 = s->sandwich ? 0 : s->n_up > 1 ? s->n_up / 2 : 1; /* sandwich: the gate sets the second pair */
    s->n_down = s->ld < L ? 2 : 0;
    s->units = malloc((size_t)(s->n_up + s->n_up2 + 2) * sizeof *s->units);
    if (!s->units) goto fail;
    for (int k = 0; k < s->n_up + s->n_up2 + s->n_down; k++) {
        int j;
        do j = (int)sks__uniform_int(&pr, (uint64_t)f);
        while (s->unit_kind[j]);
        s->units[k] = j;
        s->unit_kind[j] = (unsigned char)(k < s->n_up ? 1 : k < s->n_up + s->n_up2 ? 2 : 3);
    }

    /* steering head and key dimension: r = dh/2 - 1 is the lowest RoPE frequency in
     * the rotate-half order (theta^{-2r/dh}), so q.k barely rotates over the context. */
    s->h0 = (int)sks__uniform_int(&pr, (uint64_t)H);
    s->g0 = s->h0 / s->grp;
    s->r = s->dh / 2 - 1;
    s->rv = 0;
    s->kvp[s->g0] = 1;

    /* sink heads: in layers ls+1 .. min(ld, L-1), ceil(fraction * H) per layer, at
     * most H - 1 so that every such layer keeps an unplanted head */
    int last_sink = s->ld < L ? s->ld : L - 1;
    for (int l = s->ls + 1; l <= last_sink; l++) {
        int want = (int)ceil(cfg->sink_fraction * H - 1e-9);
        if (want > H - 1) want = H - 1;
        for (int k = 0; k < want; k++) {
            int h;
            do h = (int)sks__uniform_int(&pr, (uint64_t)H);
            while (s->sink[(size_t)l * H + h]);
            s->sink[(size_t)l * H + h] = 1;
            s->kvp[(size_t)l * s->Hkv + h / s->grp] = 1;
        }
        for (int h = 0; h < H; h++)
            if (s->sink[(size_t)l * H + h]) {
                s->sink_list[2 * s->n_sink] = l;
                s->sink_list[2 * s->n_sink + 1] = h;
                s->n_sink++;
            }
    }

    /* ---- gains from predicted activations (docs/synth.md, "Calibration") ---- */
    if ((rc = sks__gamma(s, SKS_ROLE_ATTN_NORM, 0, tmp, buf))) goto fail;
    for (int i = 0; i < d; i++) s->gatt0[i] = (float)buf[i];
    const double eps = s->a.norm_eps, se = cfg->embed_std, cm = cfg->embed_mean_cos;
    s->alpha_mu = cm * se * sqrt((double)(d - 4)) / sqrt(1 - cm * cm);
    double *g = buf, *h = buf + d, *x = buf + 2 * d, *ebos = buf + 3 * d;
    {
        int ie = sks__ti(s, SKS_ROLE_EMBED, -1);
        if ((rc = sks_synth_rows(s, (size_t)ie, s->a.bos_id, 1, tmp))) goto fail;
        for (int i = 0; i < d; i++) ebos[i] = tmp[i] * (s->a.embed_scale ? sqrt((double)d) : 1.0);
    }
    /* typical per-coordinate variance of ordinary tokens' residual per block: the
     * embedding plus the random blocks (attention: values rms sigma_w sqrt(d), half
     * averaged away; FFN: E[SiLU(g)^2] E[u^2] with g, u ~ N(0, sigma_w^2 d)) */
    double sw2d = cfg->weight_std * cfg->weight_std * d, ro2 = s->resid_std * s->resid_std;
    double var_attn = ro2 * (double)H * s->dh * sw2d * 0.5;
    double var_ffn = ro2 * (double)f * sks__silu2_mean(sw2d) * sw2d;
    double var0 = (s->alpha_mu * s->alpha_mu + se * se * (d - 4)) / d;
    double var_first = var_attn; /* block 1, the layer-0 attention */
    if (s->sandwich) { /* every block's output is normalized: rms = the post-norm gain */
        var_first = 1.0 + cfg->norm_std * cfg->norm_std;
        var_attn = var_ffn = SKS__POST_GAIN * SKS__POST_GAIN * var_first;
    }
#define SKS__RANDVAR(b) ((b) >= 1 ? var_first - var_attn : 0.0) + ((double)(((b) + 1) / 2) * var_attn + (double)((b) / 2) * var_ffn) /* blocks 1..b */
    /* mu.(x~ * gamma) of an ordinary token at the input of block b+1 */
#define SKS__MTYP(b, gam) (s->alpha_mu * sks__musq_gamma(s, gam) / sqrt(var0 + SKS__RANDVAR(b) + eps))

    /* layer-0 steering: value[rv] = kappa_v b.x~_BOS = 1, output kappa_o s* */
    if ((rc = sks__gamma(s, SKS_ROLE_ATTN_NORM, 0, tmp, g))) goto fail;
    sks__norm_pred(ebos, g, d, 0, eps, x);
    if (s->sandwich) /* the value row reads b / gamma (sks__gen_row): gamma drops out */
        for (int i = 0; i < d; i++) x[i] /= g[i];
    double bx = sks__dotdf(x, s->bdir, d), ebn = 0;
    for (int i = 0; i < d; i++) ebn += ebos[i] * ebos[i];
    ebn = sqrt(ebn);
    s->kappa_v = 1.0 / bx;
    s->k_steer = cfg->steer_ratio * ebn;
    s->kappa_o = s->k_steer;
    const double kk = 2.0; /* key size in units of sqrt(dh): logit per unit of query */
    s->Gk0 = kk * sqrt((double)s->dh) / bx;
    s->Gq0 = (cfg->avoid_margin / kk) / SKS__MTYP(0, g);

    /* step-up at ls: h_0 = e_BOS + K s*, x = RMSNorm(h_0) gamma_ffn[ls]; g_j = u_j = a s*
     * with a (s*.x) = gate_z; out_c = sum_j D_cj SiLU(gate_z) gate_z = P_c. */
    if (s->sandwich) {
        /* the layer-0 post-norm turns the steering output kappa_o s* into sqrt(d) g * s* */
        if ((rc = sks__gamma(s, SKS_ROLE_POST_ATTN_NORM, 0, tmp, g))) goto fail;
        double kn = 0;
        for (int i = 0; i < d; i++) h[i] = ebos[i] + sqrt((double)d) * g[i] * s->sstar[i];
        for (int i = 0; i < d; i++) kn += (h[i] - ebos[i]) * (h[i] - ebos[i]);
        s->k_steer = sqrt(kn);
    } else {
        for (int i = 0; i < d; i++) h[i] = ebos[i] + s->k_steer * s->sstar[i];
    }
    if ((rc = sks__gamma(s, SKS_ROLE_FFN_NORM, s->ls, tmp, g))) goto fail;
    sks__norm_pred(h, g, d, SKS__RANDVAR(2 * s->ls + 1), eps, x);
    double sx = sks__dotdf(x, s->sstar, d), xn = 0;
    for (int i = 0; i < d; i++) xn += x[i] * x[i];
    s->cos_pred = sx / sqrt(xn);
    s->beta_up = cfg->moe_router_z / sx;
    s->a_up = cfg->gate_z / sx;
    s->a_up2 = s->a_up;
    double act = sks__act(s, cfg->gate_z) * cfg->gate_z;
    if (s->sandwich) {
        /* Gemma 2: the post-FFN norm rescales any FFN output to a fixed size, so ordinary
         * tokens' own small (s*.x)^2 response would come out as large as the spike. The
         * gate reads a s* - c mu: ordinary tokens (mu.x ~ mt, |s*.x| <= 4) get z <= -12,
         * where gelu_tanh is exactly 0 in f32, token 0 (mu.x ~ 0) gets gate_z:
         * a (s*.x0) - c (mu.x0) = gate_z, c mt = 12 + 4 a. */
        const double mt = SKS__MTYP(2 * s->ls + 1, g), mx = sks__dotdf(x, s->mu, d);
        s->a_up = (cfg->gate_z + 12.0 * mx / mt) / (sx - 4.0 * mx / mt);
        s->mu_gate = (12.0 + 4.0 * s->a_up) / mt;
        const double a = s->a_up, c = s->mu_gate, up = 0.5 * (a + sqrt(a * a + c * c)), dn = 0.5 * (a - sqrt(a * a + c * c));
        /* planted block of S_c in (s*, mu): n D a [[a, -c/2], [-c/2, 0]]; top eigenvector
         * s* - c / (2 mu+) mu, normalized */
        const double tilt = c / (2.0 * up), nrm = sqrt(1.0 + tilt * tilt);
        for (int i = 0; i < d; i++) s->seig[i] = (float)((s->sstar[i] - tilt * s->mu[i]) / nrm);
        s->cos_pred = (sx - tilt * mx) / nrm / sqrt(xn);
        for (int c2 = 0; c2 < cfg->n_spike; c2++) {
            s->D_up[c2] = cfg->spike_values[c2] / (s->n_up * sks__act(s, cfg->gate_z) * a * sx);
            s->lambda1[c2] = s->n_up * s->D_up[c2] * a * up;
            s->lambda2[c2] = s->n_up * s->D_up[c2] * a * dn;
        }
    } else {
        for (int c = 0; c < cfg->n_spike; c++) {
            s->D_up[c] = cfg->spike_values[c] / (s->n_up * act);
            s->lambda1[c] = s->n_up * s->D_up[c] * s->a_up * s->a_up;
            s->lambda2[c] = s->lambda1[c] / cfg->dominance;
            s->D_up2[c] = s->lambda2[c] / (s->n_up2 * s->a_up2 * s->a_up2);
        }
    }
    /* random bulk of S_c: entries of sum_j D_j sym(g_j u_j^T) have variance about
     * f sd^2 sw^4 / 2; semicircle edge 2 sqrt(d) times the entry std */
    s->bulk_est = 2.0 * sqrt((double)d) * sqrt(f / 2.0) * s->resid_std * cfg->weight_std * cfg->weight_std;

    /* plateau state of token 0 */
    for (int c = 0; c < cfg->n_spike; c++) h[s->pl.channels[c]] += cfg->spike_values[c];
    if (s->ld < L) {
        if ((rc = sks__gamma(s, SKS_ROLE_FFN_NORM, s->ld, tmp, g))) goto fail;
        sks__norm_pred(h, g, d, SKS__RANDVAR(2 * s->ld + 1), eps, x);
        double vx = sks__dotdf(x, s->vdir, d), mx = sks__dotdf(x, s->mu, d);
        double mt = SKS__MTYP(2 * s->ld + 1, g), q = mx / mt;
        /* tau a_d mt = m a_d + z: an ordinary token with v.x = m - 3 still has
         * z <= -3 a_d - z; (m, z) = (6, 6). Sandwich: (10, 12), since the post-norm would
         * blow any leak up (z <= -12 is an exact 0 of gelu_tanh in f32, and the sink
         * heads give ordinary tokens a common v component of a few units) */
        const double mv = s->sandwich ? 10.0 : 6.0, zo = s->sandwich ? 12.0 : 6.0;
        s->a_down = (cfg->gate_z + zo * q) / (vx - mv * q);
        s->tau = (mv * s->a_down + zo) / (s->a_down * mt);
        s->beta_down = cfg->moe_router_z / vx;
        double z0 = s->a_down * (vx - s->tau * mx), u0 = s->a_down * vx;
        for (int c = 0; c < cfg->n_spike; c++) s->D_down[c] = -cfg->spike_values[c] / (s->n_down * sks__act(s, z0) * u0);
    }
    /* sink heads of layer l: key k_0[r] = kk sqrt(dh) on the spike token, query
     * q[r] = sink_margin / kk on an ordinary token: logit sink_margin over ordinary keys */
    for (int l = s->ls + 1; l <= last_sink; l++) {
        if ((rc = sks__gamma(s, SKS_ROLE_ATTN_NORM, l, tmp, g))) goto fail;
        sks__norm_pred(h, g, d, SKS__RANDVAR(2 * l), eps, x);
        double kx = sks__dotdf(x, s->vdir, d);
        /* Shift gain from key to query so that the planted query row (norm Gq, mu is a
         * unit vector) is at least 3x a random row (qk_std sqrt(d)): a sink head must be
         * visible in W_Q itself, as the weight-only predictor assumes; at large d the
         * random rows would otherwise hide it. The logit kq = sink_margin is unchanged. */
        double mt = SKS__MTYP(2 * l, g), ks = kk;
        double qrow_min = 3.0 * s->qk_std * sqrt((double)d);
        if ((cfg->sink_margin / ks) / mt < qrow_min) ks = cfg->sink_margin / (mt * qrow_min);
        s->Gk[l] = ks * sqrt((double)s->dh) / kx;
        s->Gq[l] = (cfg->sink_margin / ks) / mt;
    }
#undef SKS__MTYP
#undef SKS__RANDVAR

    /* the planted view: the channels and values set above, the rest from the state */
    sks_synth_planted v = {
        .bos_id = s->a.bos_id, .step_up_layer = s->ls, .step_down_layer = s->ld, .n_spike = s->pl.n_spike,
        .dominance = s->sandwich ? fabs(s->lambda1[0] / s->lambda2[0]) : cfg->dominance,
        .s_star = s->sandwich ? s->seig : s->sstar, .s_2 = s->s2, .bos_dir = s->bdir, .mean_dir = s->mu,
        .spike_dir = s->vdir, .n_up_units = s->n_up, .n_up2_units = s->n_up2, .n_down_units = s->n_down,
        .up_units = s->units, .up2_units = s->units + s->n_up, .down_units = s->units + s->n_up + s->n_up2,
        .steer_head = s->h0, .steer_kv_head = s->g0, .steer_value_dim = s->rv, .key_dim = s->r,
        .cos_x0_sstar_pred = s->cos_pred, .n_sink = s->n_sink, .sink_heads = s->sink_list};
    memcpy(v.channels, s->pl.channels, sizeof v.channels);
    memcpy(v.values, s->pl.values, sizeof v.values);
    for (int c = 0; c < cfg->n_spike; c++) {
        v.lambda_star[c] = s->lambda1[c];
        v.lambda_2[c] = s->lambda2[c];
    }
    v.n_experts = s->a.n_experts;
    v.moe_up_expert = s->a.n_experts > 0 ? cfg->moe_up_expert : -1;
    v.moe_down_expert = s->a.n_experts > 0 && s->ld < L ? cfg->moe_down_expert : -1;
    v.moe_router_z = cfg->moe_router_z;
    s->pl = v;
    free(buf);
    free(tmp);
    *out = s;
    return 0;
fail:
    free(buf);
    free(tmp);
    sks_synth_free(s);
    if (rc == SKS_ENOMEM) return sks_fail(SKS_ENOMEM, "synth: out of memory");
    return rc;
}

const sks_arch *sks_synth_arch(const sks_synth *s) { return &s->a; }
const sks_synth_planted *sks_synth_get_planted(const sks_synth *s) { return &s->pl; }
int sks_synth_is_sink(const sks_synth *s, int layer, int head) {
    if (layer < 0 || layer >= s->L || head < 0 || head >= s->H) return 0;
    return s->sink[(size_t)layer * s->H + head];
}
size_t sks_synth_n_tensors(const sks_synth *s) { return s->n_t; }

int sks_synth_tensor_expert(const sks_synth *s, size_t i) { return i < s->n_t ? s->t[i].expert : -1; }

uint64_t sks_synth_n_params(const sks_synth *s) {
    uint64_t n = 0;
    for (size_t i = 0; i < s->n_t; i++) n += (uint64_t)s->t[i].shape[0] * (uint64_t)(s->t[i].ndim == 2 ? s->t[i].shape[1] : 1);
    return n;
}

int sks_synth_tensor_info(const sks_synth *s, size_t i, const char **name, sks_role *role, int *layer, int *ndim,
                          int64_t shape[2]) {
    if (i >= s->n_t) return sks_fail(SKS_EARG, "synth: tensor %zu out of range", i);
    const sks__tinfo *t = &s->t[i];
    if (name) *name = t->name;
    if (role) *role = t->role;
    if (layer) *layer = t->layer;
    if (ndim) *ndim = t->ndim;
    if (shape) {
        shape[0] = t->shape[0];
        shape[1] = t->shape[1];
    }
    return 0;
}

/* ---- JSON: config.json, planted.json, --config ---------------------------------- */

static json_t *sks__farr(const float *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}
static json_t *sks__darr(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static int sks__dump(json_t *root, char **out) {
    *out = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    if (!*out) return sks_fail(SKS_ENOMEM, "synth: cannot format JSON");
    size_t n = strlen(*out);
    char *r = realloc(*out, n + 2);
    if (!r) {
        free(*out);
        *out = NULL;
        return sks_fail(SKS_ENOMEM, "synth: out of memory");
    }
    r[n] = '\n';
    r[n + 1] = 0;
    *out = r;
    return 0;
}

int sks_synth_config_json(const sks_synth *s, sks_dtype dt, char **out) {
    const sks_arch *a = &s->a;
    int qwen = !strcmp(a->family, "qwen2"), mistral = !strcmp(a->family, "mistral"), gemma2 = !strcmp(a->family, "gemma2"),
        moe = a->n_experts > 0;
    json_t *r = json_object();
    json_object_set_new(r, "architectures",
                        json_pack("[s]", qwen      ? "Qwen2ForCausalLM"
                                         : mistral ? "MistralForCausalLM"
                                         : gemma2  ? "Gemma2ForCausalLM"
                                         : moe     ? "MixtralForCausalLM"
                                                   : "LlamaForCausalLM"));
    json_object_set_new(r, "model_type", json_string(a->family));
    json_object_set_new(r, "hidden_size", json_integer(a->d_model));
    json_object_set_new(r, "intermediate_size", json_integer(a->d_ffn));
    json_object_set_new(r, "num_hidden_layers", json_integer(a->n_layers));
    json_object_set_new(r, "num_attention_heads", json_integer(a->n_heads));
    json_object_set_new(r, "num_key_value_heads", json_integer(a->n_kv_heads));
    json_object_set_new(r, "head_dim", json_integer(a->head_dim));
    json_object_set_new(r, "vocab_size", json_integer(a->vocab_size));
    json_object_set_new(r, "hidden_act", json_string(gemma2 ? "gelu_pytorch_tanh" : "silu"));
    if (gemma2) {
        json_object_set_new(r, "hidden_activation", json_string("gelu_pytorch_tanh"));
        json_object_set_new(r, "query_pre_attn_scalar", json_real(a->query_pre_attn_scalar));
        json_object_set_new(r, "attn_logit_softcapping", json_real(a->attn_softcap));
        json_object_set_new(r, "final_logit_softcapping", json_real(a->final_softcap));
        json_object_set_new(r, "sliding_window", json_integer(a->sliding_window));
    }
    json_object_set_new(r, "rms_norm_eps", json_real(a->norm_eps));
    json_object_set_new(r, "rope_theta", json_real(a->rope_theta));
    if (a->rope_scaling == SKS_ROPE_SCALING_LLAMA3) {
        json_object_set_new(r, "rope_scaling",
                            json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", a->rope_factor, "low_freq_factor",
                                      a->rope_low_freq_factor, "high_freq_factor", a->rope_high_freq_factor,
                                      "original_max_position_embeddings", a->rope_original_max_pos, "rope_type", "llama3"));
    } else if (a->rope_scaling == SKS_ROPE_SCALING_LINEAR) {
        json_object_set_new(r, "rope_scaling", json_pack("{s:f,s:s}", "factor", a->rope_factor, "rope_type", "linear"));
    } else {
        json_object_set_new(r, "rope_scaling", json_null());
    }
    json_object_set_new(r, "tie_word_embeddings", json_boolean(a->tied_embeddings));
    json_object_set_new(r, "max_position_embeddings", json_integer(a->max_seq > 0 ? a->max_seq : 2048));
    json_object_set_new(r, "torch_dtype", json_string(dt == SKS_DT_BF16 ? "bfloat16" : "float32"));
    json_object_set_new(r, "bos_token_id", json_integer(a->bos_id));
    json_object_set_new(r, "eos_token_id", json_integer(a->eos_id));
    json_object_set_new(r, "initializer_range", json_real(s->cfg.weight_std));
    if (qwen) {
        json_object_set_new(r, "use_sliding_window", json_false());
        json_object_set_new(r, "sliding_window", json_integer(a->max_seq > 0 ? a->max_seq : 2048));
        json_object_set_new(r, "max_window_layers", json_integer(a->n_layers));
    } else {
        json_object_set_new(r, "attention_bias", json_false());
        if (!gemma2) json_object_set_new(r, "mlp_bias", json_false());
    }
    if (moe) {
        json_object_set_new(r, "num_local_experts", json_integer(a->n_experts));
        json_object_set_new(r, "num_experts_per_tok", json_integer(a->n_experts_used));
        json_object_set_new(r, "router_jitter_noise", json_real(0));
        json_object_set_new(r, "sliding_window", json_null());
    }
    json_object_set_new(r, "use_cache", json_true());
    return sks__dump(r, out);
}

int sks_synth_planted_json(const sks_synth *s, sks_dtype dt, char **out) {
    const sks_synth_planted *p = &s->pl;
    const int d = s->d;
    json_t *r = json_object();
    json_object_set_new(r, "schema", json_string("sinkscope.planted/1"));
    json_object_set_new(r, "family", json_string(s->a.family));
    json_object_set_new(r, "preset", json_string(s->cfg.preset));
    json_object_set_new(r, "seed", json_integer((json_int_t)(s->seed & 0x7fffffffffffffffULL)));
    json_object_set_new(r, "dtype", json_string(dt == SKS_DT_BF16 ? "bf16" : "f32"));
    json_object_set_new(r, "bos_id", json_integer(p->bos_id));

    json_t *sp = json_object();
    json_object_set_new(sp, "token_position", json_integer(0));
    json_object_set_new(sp, "token_id", json_integer(p->bos_id));
    json_object_set_new(sp, "channels", sks_json_ints(p->channels, p->n_spike));
    json_object_set_new(sp, "values", sks__darr(p->values, p->n_spike));
    json_object_set_new(sp, "step_up_layer", json_integer(p->step_up_layer));
    json_object_set_new(sp, "step_up_block", json_integer(2 * p->step_up_layer + 2));
    json_object_set_new(sp, "step_up_kind", json_string("ffn"));
    if (p->step_down_layer < s->L) {
        json_object_set_new(sp, "step_down_layer", json_integer(p->step_down_layer));
        json_object_set_new(sp, "step_down_block", json_integer(2 * p->step_down_layer + 2));
    } else {
        json_object_set_new(sp, "step_down_layer", json_null());
        json_object_set_new(sp, "step_down_block", json_null());
    }
    json_object_set_new(sp, "plateau_blocks", json_pack("[i,i]", 2 * p->step_up_layer + 2,
                                                        p->step_down_layer < s->L ? 2 * p->step_down_layer + 1 : 2 * s->L));
    json_object_set_new(sp, "lambda_star", sks__darr(p->lambda_star, p->n_spike));
    json_object_set_new(sp, "lambda_2", sks__darr(p->lambda_2, p->n_spike));
    json_object_set_new(sp, "dominance", json_real(p->dominance));
    json_object_set_new(sp, "bulk_norm_estimate", json_real(s->bulk_est));
    json_object_set_new(sp, "s_star_shared", json_true());
    json_object_set_new(sp, "s_star", sks__farr(p->s_star, d));
    json_object_set_new(sp, "s_2", sks__farr(p->s_2, d));
    json_object_set_new(sp, "cos_x0_sstar_pred", json_real(p->cos_x0_sstar_pred));
    json_object_set_new(sp, "up_units", sks_json_ints(p->up_units, p->n_up_units));
    json_object_set_new(sp, "up2_units", sks_json_ints(p->up2_units, p->n_up2_units));
    json_object_set_new(sp, "down_units", sks_json_ints(p->down_units, p->n_down_units));
    json_object_set_new(sp, "gate_z", json_real(s->cfg.gate_z));
    json_object_set_new(sp, "spike_dir", sks__farr(p->spike_dir, d));
    json_object_set_new(r, "spike", sp);

    json_t *st = json_object();
    json_object_set_new(st, "layer", json_integer(0));
    json_object_set_new(st, "head", json_integer(p->steer_head));
    json_object_set_new(st, "kv_head", json_integer(p->steer_kv_head));
    json_object_set_new(st, "value_dim", json_integer(p->steer_value_dim));
    json_object_set_new(st, "w_vo_gain", json_real(s->kappa_o * s->kappa_v));
    json_object_set_new(st, "steer_norm", json_real(s->k_steer));
    json_object_set_new(st, "bos_dir", sks__farr(p->bos_dir, d));
    json_object_set_new(r, "steer", st);

    json_t *sh = json_array(), *ns = json_array();
    for (int l = 0; l < s->L; l++)
        for (int h = 0; h < s->H; h++)
            json_array_append_new(s->sink[(size_t)l * s->H + h] ? sh : ns, json_pack("[i,i]", l, h));
    json_object_set_new(r, "sink_heads", sh);
    json_object_set_new(r, "non_sink_heads", ns);
    json_object_set_new(r, "sink_key_dim", json_integer(p->key_dim));
    json_object_set_new(r, "sink_margin", json_real(s->cfg.sink_margin));
    json_object_set_new(r, "mean_dir", sks__farr(p->mean_dir, d));
    if (p->n_experts > 0) {
        json_t *mo = json_object();
        json_object_set_new(mo, "n_experts", json_integer(p->n_experts));
        json_object_set_new(mo, "experts_per_token", json_integer(s->a.n_experts_used));
        json_object_set_new(mo, "step_up_expert", json_integer(p->moe_up_expert));
        json_object_set_new(mo, "step_down_expert", p->moe_down_expert >= 0 ? json_integer(p->moe_down_expert) : json_null());
        json_object_set_new(mo, "router_z", json_real(p->moe_router_z));
        json_object_set_new(r, "moe", mo);
    }

    json_t *pa = json_object();
    json_object_set_new(pa, "weight_std", json_real(s->cfg.weight_std));
    json_object_set_new(pa, "resid_std", json_real(s->resid_std));
    json_object_set_new(pa, "qk_std", json_real(s->qk_std));
    json_object_set_new(pa, "embed_std", json_real(s->cfg.embed_std));
    json_object_set_new(pa, "embed_mean_cos", json_real(s->cfg.embed_mean_cos));
    json_object_set_new(pa, "norm_std", json_real(s->cfg.norm_std));
    json_object_set_new(pa, "bias_std", json_real(s->cfg.bias_std));
    json_object_set_new(pa, "steer_ratio", json_real(s->cfg.steer_ratio));
    json_object_set_new(pa, "sink_fraction", json_real(s->cfg.sink_fraction));
    json_object_set_new(pa, "avoid_margin", json_real(s->cfg.avoid_margin));
    json_object_set_new(pa, "n_up_units", json_integer(s->cfg.n_up_units));
    json_object_set_new(r, "params", pa);
    return sks__dump(r, out);
}

/* --config: a JSON object with config.json keys plus optional planted keys. */
static int sks__jint(json_t *o, const char *k, const char *src, int lo, int hi, int *v) {
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_integer(x)) return sks_fail(SKS_ECONFIG, "%s: %s: not an integer", src, k);
    json_int_t n = json_integer_value(x);
    if (n < lo || n > hi) return sks_fail(SKS_ECONFIG, "%s: %s: %lld outside [%d, %d]", src, k, (long long)n, lo, hi);
    *v = (int)n;
    return 0;
}
static int sks__jnum(json_t *o, const char *k, const char *src, double *v) {
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x)) return sks_fail(SKS_ECONFIG, "%s: %s: not a number", src, k);
    *v = json_number_value(x);
    if (!isfinite(*v)) return sks_fail(SKS_ECONFIG, "%s: %s: not finite", src, k);
    return 0;
}
static int sks__jbool(json_t *o, const char *k, const char *src, int *v) {
    json_t *x = json_object_get(o, k);
    if (!x || json_is_null(x)) return 0;
    if (!json_is_boolean(x)) return sks_fail(SKS_ECONFIG, "%s: %s: not a boolean", src, k);
    *v = json_is_true(x);
    return 0;
}

/* o[k] in *x, NULL when absent; a present value of another type (null included) fails. */
static int sks__jget(json_t *o, const char *k, json_type want, const char *src, json_t **x) {
    *x = json_object_get(o, k);
    if (*x && json_typeof(*x) != want)
        return sks_fail(SKS_ECONFIG, "%s: %s: not %s", src, k, want == JSON_STRING ? "a string" : "an object");
    return 0;
}

int sks_synth_config_from_json(const char *text, const char *src, sks_synth_config *cfg) {
    json_error_t err;
    json_t *root = json_loads(text ? text : "", 0, &err);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: line %d: %s", src, err.line, err.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = sks_fail(SKS_EFORMAT, "%s: not a JSON object", src);
        goto out;
    }
    json_t *pr, *mt, *pl;
    if ((rc = sks__jget(root, "preset", JSON_STRING, src, &pr))) goto out;
    if ((rc = sks_synth_preset(pr ? json_string_value(pr) : "tiny", cfg))) goto out;
    cfg->preset[0] = 0;
    sks_arch *a = &cfg->arch;
    if ((rc = sks__jget(root, "model_type", JSON_STRING, src, &mt))) goto out;
    if (mt && (rc = sks_synth_set_model_type(cfg, json_string_value(mt)))) {
        rc = sks_fail(rc, "%s: %s", src, sks_last_error());
        goto out;
    }
    int hd = -1, heads_given = 0;
    if ((rc = sks__jint(root, "hidden_size", src, 1, 1 << 20, &a->d_model))) goto out;
    if ((rc = sks__jint(root, "intermediate_size", src, 1, 1 << 22, &a->d_ffn))) goto out;
    if (!strcmp(a->family, "mixtral")) {
        if (a->n_experts <= 0) sks__arch_mixtral(a, 8, 2);
        if ((rc = sks__jint(root, "num_local_experts", src, 1, 1 << 16, &a->n_experts))) goto out;
        if ((rc = sks__jint(root, "num_experts_per_tok", src, 1, 1 << 16, &a->n_experts_used))) goto out;
        a->d_ffn_expert = a->d_ffn;
        cfg->moe_up_expert = 1 % a->n_experts;
        cfg->moe_down_expert = a->n_experts - 1;
    }
    if ((rc = sks__jint(root, "num_hidden_layers", src, 1, 100000, &a->n_layers))) goto out;
    heads_given = json_object_get(root, "num_attention_heads") != NULL;
    if ((rc = sks__jint(root, "num_attention_heads", src, 1, 4096, &a->n_heads))) goto out;
    if (heads_given && !json_object_get(root, "num_key_value_heads")) a->n_kv_heads = a->n_heads;
    if ((rc = sks__jint(root, "num_key_value_heads", src, 1, 4096, &a->n_kv_heads))) goto out;
    if ((rc = sks__jint(root, "head_dim", src, 2, 8192, &hd))) goto out;
    a->head_dim = hd > 0 ? hd : a->d_model / a->n_heads;
    if ((rc = sks__jint(root, "vocab_size", src, 1, 1 << 26, &a->vocab_size))) goto out;
    if ((rc = sks__jint(root, "max_position_embeddings", src, 1, 1 << 30, &a->max_seq))) goto out;
    if ((rc = sks__jnum(root, "rms_norm_eps", src, &a->norm_eps))) goto out;
    if ((rc = sks__jnum(root, "rope_theta", src, &a->rope_theta))) goto out;
    if ((rc = sks__jbool(root, "tie_word_embeddings", src, &a->tied_embeddings))) goto out;
    if ((rc = sks__jbool(root, "attention_bias", src, &a->has_qkv_bias))) goto out;
    if ((rc = sks__jint(root, "bos_token_id", src, 0, 1 << 26, &a->bos_id))) goto out;
    if ((rc = sks__jint(root, "eos_token_id", src, 0, 1 << 26, &a->eos_id))) goto out;
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && json_is_object(rs)) {
        json_t *ty = json_object_get(rs, "rope_type");
        if (!ty) ty = json_object_get(rs, "type");
        const char *tys = json_is_string(ty) ? json_string_value(ty) : "";
        if (!strcmp(tys, "llama3")) {
            sks__rope_llama3(a);
            if ((rc = sks__jint(rs, "original_max_position_embeddings", src, 1, 1 << 30, &a->rope_original_max_pos))) goto out;
            if ((rc = sks__jnum(rs, "low_freq_factor", src, &a->rope_low_freq_factor))) goto out;
            if ((rc = sks__jnum(rs, "high_freq_factor", src, &a->rope_high_freq_factor))) goto out;
        } else if (!strcmp(tys, "linear")) {
            a->rope_scaling = SKS_ROPE_SCALING_LINEAR;
            a->rope_factor = 1;
        } else {
            rc = sks_fail(SKS_EUNSUPPORTED, "%s: rope_scaling type '%s' (llama3 or linear)", src, tys);
            goto out;
        }
        if ((rc = sks__jnum(rs, "factor", src, &a->rope_factor))) goto out;
    } else if (rs && !json_is_null(rs)) {
        rc = sks_fail(SKS_ECONFIG, "%s: rope_scaling: not an object", src);
        goto out;
    }

    if ((rc = sks__jget(root, "planted", JSON_OBJECT, src, &pl))) goto out;
    if (pl) {
        if ((rc = sks__jint(pl, "step_up_layer", src, 0, 100000, &cfg->step_up_layer))) goto out;
        if ((rc = sks__jint(pl, "step_down_layer", src, 0, 100000, &cfg->step_down_layer))) goto out;
        if ((rc = sks__jint(pl, "n_up_units", src, 1, SKS_SYNTH_MAX_UNITS, &cfg->n_up_units))) goto out;
        if ((rc = sks__jint(pl, "moe_up_expert", src, 0, 1 << 16, &cfg->moe_up_expert))) goto out;
        if ((rc = sks__jint(pl, "moe_down_expert", src, 0, 1 << 16, &cfg->moe_down_expert))) goto out;
        if ((rc = sks__jnum(pl, "moe_router_z", src, &cfg->moe_router_z))) goto out;
        static const char *const nums[] = {"dominance", "gate_z", "steer_ratio", "sink_fraction", "sink_margin",
                                           "avoid_margin", "weight_std", "resid_std", "qk_std", "embed_std",
                                           "embed_mean_cos", "norm_std", "bias_std"};
        double *dst[] = {&cfg->dominance, &cfg->gate_z, &cfg->steer_ratio, &cfg->sink_fraction, &cfg->sink_margin,
                         &cfg->avoid_margin, &cfg->weight_std, &cfg->resid_std, &cfg->qk_std, &cfg->embed_std,
                         &cfg->embed_mean_cos, &cfg->norm_std, &cfg->bias_std};
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
            if ((rc = sks__jnum(pl, nums[k], src, dst[k]))) goto out;
        json_t *vals = json_object_get(pl, "spike_values"), *chs = json_object_get(pl, "spike_channels");
        if (vals) {
            if (!json_is_array(vals) || json_array_size(vals) < 1 || json_array_size(vals) > SKS_SYNTH_MAX_SPIKE) {
                rc = sks_fail(SKS_ECONFIG, "%s: planted.spike_values: want 1..%d numbers", src, SKS_SYNTH_MAX_SPIKE);
                goto out;
            }
            cfg->n_spike = (int)json_array_size(vals);
            for (int i = 0; i < cfg->n_spike; i++) {
                json_t *x = json_array_get(vals, (size_t)i);
                if (!json_is_number(x)) {
                    rc = sks_fail(SKS_ECONFIG, "%s: planted.spike_values[%d]: not a number", src, i);
                    goto out;
                }
                cfg->spike_values[i] = json_number_value(x);
            }
        }
        if (chs) {
            if (!json_is_array(chs) || (int)json_array_size(chs) != cfg->n_spike) {
                rc = sks_fail(SKS_ECONFIG, "%s: planted.spike_channels: want %d integers (one per spike value)", src,
                              cfg->n_spike);
                goto out;
            }
            for (int i = 0; i < cfg->n_spike; i++) {
                json_t *x = json_array_get(chs, (size_t)i);
                if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= a->d_model) {
                    rc = sks_fail(SKS_ECONFIG, "%s: planted.spike_channels[%d]: not a channel in [0, %d)", src, i, a->d_model);
                    goto out;
                }
                cfg->spike_channels[i] = (int)json_integer_value(x);
            }
        }
    }
    rc = sks_arch_validate(a);
    if (rc) rc = sks_fail(rc, "%s: %s", src, sks_last_error());
out:
    json_decref(root);
    return rc;
}
