/* spikes.c - S_k screen, eigenpairs and forward-pass checks per FFN layer
 * (SPEC section 3; contract in sks_spikes.h). */
#include "sks_spikes.h"

#include "../linalg/sks_linalg.h"
#include "sks_forward.h"
#include "sks_out.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sks_spikes {
    const sks_model *m;
    sks_spikes_opts o;
    int L, d, f, V;
    /* one layer's FFN weights, converted on demand */
    int w_layer;          /* layer held in G32.. (-1 none) */
    float *G32, *U32, *D32; /* (f, d), (f, d), (d, f) */
    double *G64, *U64, *D64; /* f64 copies when the f64 operator is used */
    int prec;             /* precision of the held copies */
    int host;             /* 1: G32.. (and G64.. for f64) hold the weights on the host */
    const sks_qf_backend *be; /* where the operator's products run (the process default) */
    sks_qf_op op;         /* the held layer bound on be */
    /* forward pass */
    int T;
    int32_t *tokens;      /* (T) */
    float *ffn_in;        /* (L, T, d) */
    float *ffn_out;       /* (L, T, d) */
    /* first-token map cache */
    double *wvo_u;        /* (L, d) */
    double *wvo_s;        /* (L) */
    int *wvo_have;        /* (L) */
    /* an FFN given instead of the layer's W_gate / W_up / W_down (one expert of an MoE
     * layer, or the routed experts' combined form): sks_spikes_set_ffn */
    int ov_layer;         /* -1: none */
    const sks_tensor *ov[3];
    const sks_tensor *w_ov; /* the override the held copies came from */
    int borrowed;         /* 1: G32 / U32 / D32 point into the override's f32 data */
};

static void sks__drop_weights(sks_spikes *s);

int sks_spikes_set_ffn(sks_spikes *s, int layer, const sks_tensor *G, const sks_tensor *U, const sks_tensor *Down) {
    if (!s) return sks_fail(SKS_EARG, "%s: no context", __func__);
    sks__drop_weights(s); /* the held copies may point into the previous override */
    if (!G) {
        s->ov_layer = -1;
        s->ov[0] = s->ov[1] = s->ov[2] = NULL;
        s->f = sks_model_arch(s->m)->d_ffn;
        return 0;
    }
    if (!U || !Down || layer < 0 || layer >= s->L || G->ndim != 2 || sks_tensor_cols(G) != s->d ||
        sks_tensor_rows(U) != sks_tensor_rows(G) || sks_tensor_cols(U) != s->d || sks_tensor_rows(Down) != s->d ||
        sks_tensor_cols(Down) != sks_tensor_rows(G))
        return sks_fail(SKS_ESHAPE, "%s: the FFN's three matrices do not fit d = %d", __func__, s->d);
    s->ov_layer = layer;
    s->ov[0] = G;
    s->ov[1] = U;
    s->ov[2] = Down;
    s->f = (int)sks_tensor_rows(G);
    return 0;
}

void sks_spikes_opts_default(sks_spikes_opts *o) {
    memset(o, 0, sizeof *o);
    o->rank = 5;
    o->top_frob = 4;
    o->precision = SKS_SPK_PREC_AUTO;
    o->max_restarts = 200;
    o->seed = 1;
    o->n_delim_top = 50;
    o->first_token_map = 1;
}

int sks_spikes_new(const sks_model *m, const sks_spikes_opts *o, sks_spikes **out) {
    *out = NULL;
    if (!m) return sks_fail(SKS_EARG, "%s: no model", __func__);
    sks_spikes *s = calloc(1, sizeof *s);
    if (!s) return sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
    s->m = m;
    if (o)
        s->o = *o;
    else
        sks_spikes_opts_default(&s->o);
    const sks_arch *a = sks_model_arch(m);
    s->L = a->n_layers;
    s->d = a->d_model;
    s->f = a->d_ffn;
    s->V = a->vocab_size;
    s->w_layer = -1;
    s->ov_layer = -1;
    s->be = sks_qf_backend_default();
    if (s->o.rank < 1) s->o.rank = 1;
    if (s->o.rank > s->d) {
        sks_log(SKS_LOG_WARN, "spikes: rank %d clamped to the model's d_model %d (S_k has d eigenvalues)", s->o.rank, s->d);
        s->o.rank = s->d;
    }
    s->wvo_u = sks_calloc_n((size_t)s->L * s->d, sizeof(double));
    s->wvo_s = sks_calloc_n((size_t)s->L, sizeof(double));
    s->wvo_have = sks_calloc_n((size_t)s->L, sizeof(int));
    if (!s->wvo_u || !s->wvo_s || !s->wvo_have) {
        sks_spikes_free(s);
        return sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
    }
    *out = s;
    return 0;
}

static void sks__drop_weights(sks_spikes *s) {
    sks_qf_unbind(&s->op);
    if (!s->borrowed) {
        free(s->G32);
        free(s->U32);
        free(s->D32);
    }
    s->borrowed = 0;
    s->w_ov = NULL;
    free(s->G64);
    free(s->U64);
    free(s->D64);
    s->G32 = s->U32 = s->D32 = NULL;
    s->G64 = s->U64 = s->D64 = NULL;
    s->w_layer = -1;
}

void sks_spikes_free(sks_spikes *s) {
    if (!s) return;
    sks__drop_weights(s);
    SKS_FREE_ALL(s->tokens, s->ffn_in, s->ffn_out, s->wvo_u, s->wvo_s, s->wvo_have, s);
}

/* Krylov block per channel: the option, else 1 with either operator. Block b needs ~1.5x
 * (b 2) and ~3x (b 4) the operator vectors of b 1 on channels without a large gap
 * (docs/linalg.md), and the row-blocked threaded matvec keeps the m-column GEMMs of 64
 * channels near the GEMM rate, so wider blocks cost more time than they save; at most d. */
static int sks__krylov_block(const sks_spikes_opts *o, int f64, int d) {
    (void)f64;
    int kb = o->block > 0 ? o->block : 1;
    return kb > d ? d : kb;
}

int sks_spikes_precision(int precision, int d, int f) {
    if (precision == SKS_SPK_PREC_F32 || precision == SKS_SPK_PREC_F64) return precision;
    return (int64_t)f * d <= SKS_SPK_AUTO_F64_MAX ? SKS_SPK_PREC_F64 : SKS_SPK_PREC_F32;
}

static int sks__choose_prec(const sks_spikes *s) { return sks_spikes_precision(s->o.precision, s->d, s->f); }

/* Screen row blocks: 256 rows with the f32 operator (linalg's default), 128 with f64
 * (smaller blocks keep the f64 workspace near the f32 one). */
static int sks__screen_rows(int f64) { return f64 ? 128 : 0; }

static const sks_tensor *sks__need(const sks_model *m, sks_role role, int layer, int64_t rows, int64_t cols) {
    const sks_tensor *t = sks_model_tensor(m, role, layer);
    if (!t) {
        sks_fail(SKS_ENOTFOUND, "%s: layer %d has no %s tensor", sks_model_path(m), layer, sks_role_name(role));
        return NULL;
    }
    if (sks_tensor_rows(t) != rows || sks_tensor_cols(t) != cols) {
        sks_fail(SKS_ESHAPE, "%s: %s of layer %d is %lld x %lld, expected %lld x %lld", sks_model_path(m),
                 sks_role_name(role), layer, (long long)sks_tensor_rows(t), (long long)sks_tensor_cols(t),
                 (long long)rows, (long long)cols);
        return NULL;
    }
    return t;
}

/* Convert a (rows, cols) tensor to f32 (or f64) in blocks of rows, never through a
 * whole-matrix temporary of another dtype. */
static int sks__tensor_whole(const sks_tensor *t, int f64, void *out) {
    int64_t rows = sks_tensor_rows(t), cols = sks_tensor_cols(t);
    const int64_t blk = 256;
    for (int64_t r0 = 0; r0 < rows; r0 += blk) {
        int64_t nr = rows - r0 < blk ? rows - r0 : blk;
        size_t at = (size_t)r0 * (size_t)cols;
        int rc = f64 ? sks_tensor_rows_f64(t, r0, nr, (double *)out + at) : sks_tensor_rows_f32(t, r0, nr, (float *)out + at);
        if (rc) return rc;
    }
    return 0;
}

static int sks__tensor_f32(const sks_tensor *t, float *out) { return sks__tensor_whole(t, 0, out); }
static int sks__tensor_f64(const sks_tensor *t, double *out) { return sks__tensor_whole(t, 1, out); }

/* The raw encoding of a tensor the backend can convert itself, or -1. */
static int sks__raw_elem(const sks_tensor *t) {
    return t->dtype == SKS_DT_F32 ? SKS_QF_ELEM_F32 : t->dtype == SKS_DT_F16 ? SKS_QF_ELEM_F16
         : t->dtype == SKS_DT_BF16 ? SKS_QF_ELEM_BF16 : -1;
}

/* Converts the layer's FFN to f32 (and f64) host copies and binds them on the backend;
 * a backend that converts weights itself (cuda) gets the stored arrays directly when
 * nothing here needs host copies (no forward pass, no --dense) and all three share one
 * encoding it knows. */
static int sks__load_layer(sks_spikes *s, int layer) {
    int prec = sks__choose_prec(s);
    const int need_host = s->T > 0 || s->o.dense;
    const int ov = s->ov_layer == layer;
    if (s->w_layer == layer && s->prec == prec && (s->host || !need_host) && s->w_ov == (ov ? s->ov[0] : NULL))
        return 0;
    sks__drop_weights(s);
    if (!ov && sks_arch_layer_moe(sks_model_arch(s->m), layer))
        return sks_fail(SKS_EUNSUPPORTED, "%s: layer %d is a mixture of experts: its forms are per expert (sks_moe_spikes)",
                        sks_model_path(s->m), layer);
    const sks_tensor *tg = ov ? s->ov[0] : sks__need(s->m, SKS_ROLE_W_GATE, layer, s->f, s->d);
    const sks_tensor *tu = ov ? s->ov[1] : sks__need(s->m, SKS_ROLE_W_UP, layer, s->f, s->d);
    const sks_tensor *td = ov ? s->ov[2] : sks__need(s->m, SKS_ROLE_W_DOWN, layer, s->d, s->f);
    if (!tg || !tu || !td) return SKS_ENOTFOUND;
    s->w_ov = ov ? tg : NULL;
    const int qprec = prec == SKS_SPK_PREC_F64 ? SKS_QF_F64 : SKS_QF_F32;
    const int elem = sks__raw_elem(tg);
    if (!need_host && s->be->takes_raw && elem >= 0 && sks__raw_elem(tu) == elem && sks__raw_elem(td) == elem) {
        const int keep = !ov && tg->frozen && tu->frozen && td->frozen ? SKS_QF_ELEM_KEEP : 0;
        sks_qf_raw raw = {.d = s->d, .f = s->f, .elem = elem | keep, .G = tg->data, .U = tu->data, .Down = td->data};
        int rc = sks_qf_bind(s->be, NULL, NULL, &raw, qprec, &s->op);
        if (!rc) {
            s->w_layer = layer;
            s->prec = prec;
            s->host = 0;
            return 0;
        }
        /* NaN or Inf among the stored weights: converted here instead, where the check
         * names the tensor and --allow-nonfinite applies */
        if (rc != SKS_ENONFINITE) return rc;
    }
    size_t fd = (size_t)s->f * (size_t)s->d;
    int rc = 0;
    if (ov && tg->dtype == SKS_DT_F32 && tu->dtype == SKS_DT_F32 && td->dtype == SKS_DT_F32) {
        /* an f32 override (the combined form) is used in place */
        s->G32 = (float *)tg->data, s->U32 = (float *)tu->data, s->D32 = (float *)td->data;
        s->borrowed = 1;
    } else {
        s->G32 = sks_malloc_n(fd, sizeof(float));
        s->U32 = sks_malloc_n(fd, sizeof(float));
        s->D32 = sks_malloc_n(fd, sizeof(float));
        if (!s->G32 || !s->U32 || !s->D32) {
            sks__drop_weights(s);
            return sks_fail(SKS_ENOMEM, "%s: out of memory for the FFN of layer %d (3 x %d x %d f32)", __func__, layer,
                            s->f, s->d);
        }
        rc = sks__tensor_f32(tg, s->G32);
        if (!rc) rc = sks__tensor_f32(tu, s->U32);
        if (!rc) rc = sks__tensor_f32(td, s->D32);
    }
    if (!rc && prec == SKS_SPK_PREC_F64) {
        s->G64 = sks_malloc_n(fd, sizeof(double));
        s->U64 = sks_malloc_n(fd, sizeof(double));
        s->D64 = sks_malloc_n(fd, sizeof(double));
        if (!s->G64 || !s->U64 || !s->D64)
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory for f64 FFN weights of layer %d", __func__, layer);
        if (!rc) rc = sks__tensor_f64(tg, s->G64);
        if (!rc) rc = sks__tensor_f64(tu, s->U64);
        if (!rc) rc = sks__tensor_f64(td, s->D64);
    }
    if (!rc) {
        sks_quadform q = {.d = s->d, .f = s->f, .G = s->G32, .U = s->U32, .Down = s->D32};
        sks_quadform64 q64 = {.d = s->d, .f = s->f, .G = s->G64, .U = s->U64, .Down = s->D64};
        rc = sks_qf_bind(s->be, qprec == SKS_QF_F32 ? &q : NULL, qprec == SKS_QF_F64 ? &q64 : NULL, NULL, qprec,
                         &s->op);
    }
    if (rc) {
        sks__drop_weights(s);
        return rc;
    }
    s->w_layer = layer;
    s->prec = prec;
    s->host = 1;
    return 0;
}

/* ---- forward pass capture ------------------------------------------------------- */

static int sks__hook_ffn_in(void *ud, int layer, const float *x, int T, int d) {
    sks_spikes *s = ud;
    if (layer < 0 || layer >= s->L || T != s->T || d != s->d) return sks_fail(SKS_EINTERNAL, "ffn_in hook: shape");
    memcpy(s->ffn_in + (size_t)layer * T * d, x, (size_t)T * d * sizeof(float));
    return 0;
}

static int sks__hook_ffn_out(void *ud, int layer, const float *y, int T, int d) {
    sks_spikes *s = ud;
    if (layer < 0 || layer >= s->L || T != s->T || d != s->d) return sks_fail(SKS_EINTERNAL, "ffn_out hook: shape");
    memcpy(s->ffn_out + (size_t)layer * T * d, y, (size_t)T * d * sizeof(float));
    return 0;
}

const float *sks_spikes_ffn_io(const sks_spikes *s, int layer, const float **ffn_out, int *T) {
    if (ffn_out) *ffn_out = NULL;
    if (T) *T = s ? s->T : 0;
    if (!s || !s->T || layer < 0 || layer >= s->L) return NULL;
    if (ffn_out) *ffn_out = s->ffn_out + (size_t)layer * s->T * s->d;
    return s->ffn_in + (size_t)layer * s->T * s->d;
}

const sks_model *sks_spikes_model(const sks_spikes *s) { return s->m; }

int sks_spikes_forward(sks_spikes *s, const int32_t *tokens, int T) {
    if (!s || !tokens || T < 1) return sks_fail(SKS_EARG, "%s: no tokens", __func__);
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= s->V)
            return sks_fail(SKS_EARG, "token %d at position %d is outside the vocabulary (%d)", tokens[t], t, s->V);
    free(s->tokens);
    free(s->ffn_in);
    free(s->ffn_out);
    s->T = T;
    size_t n = (size_t)s->L * (size_t)T * (size_t)s->d;
    s->tokens = sks_malloc_n((size_t)T, sizeof(int32_t));
    s->ffn_in = sks_malloc_n(n, sizeof(float));
    s->ffn_out = sks_malloc_n(n, sizeof(float));
    if (!s->tokens || !s->ffn_in || !s->ffn_out) {
        s->T = 0;
        return sks_fail(SKS_ENOMEM, "%s: out of memory for %d tokens", __func__, T);
    }
    memcpy(s->tokens, tokens, (size_t)T * sizeof(int32_t));
    sks_forward *fw = NULL;
    int rc = sks_forward_new(s->m, T, &fw);
    if (rc) {
        s->T = 0;
        return rc;
    }
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = s;
    hk.on_ffn_in = sks__hook_ffn_in;
    hk.on_ffn_out = sks__hook_ffn_out;
    rc = sks_forward_run(fw, tokens, T, SKS_FWD_CAUSAL, &hk, NULL, 0);
    sks_forward_free(fw);
    if (rc) s->T = 0;
    return rc;
}

/* ---- the screen ------------------------------------------------------------------ */

/* ---- per-layer step ---------------------------------------------------------------- */

typedef struct {
    double key;
    int idx;
} sks__kv;

static int sks__cmp_kv_desc(const void *a, const void *b) {
    double x = ((const sks__kv *)a)->key, y = ((const sks__kv *)b)->key;
    if (x != y) return (x < y) - (x > y);
    return ((const sks__kv *)a)->idx - ((const sks__kv *)b)->idx;
}

/* The FFN activation of the family: SiLU, or the tanh approximation of GELU. */
static double sks__act(sks_act_kind k, double z) {
    if (k == SKS_ACT_GELU_TANH) return 0.5 * z * (1.0 + tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)));
    return z / (1.0 + exp(-z));
}

void sks_spikes_layer_result_free(sks_spikes_layer_result *r) {
    if (r && r->moe) {
        sks_spikes_moe_free(r->moe);
        r->moe = NULL;
    }
    if (!r) return;
    free(r->frobenius);
    free(r->trace);
    free(r->top_frob);
    for (int i = 0; i < r->n_channels; i++) {
        free(r->channels[i].eigenvalues);
        free(r->channels[i].s_star);
        free(r->channels[i].residuals);
        free(r->channels[i].cos_wvo);
    }
    free(r->channels);
    memset(r, 0, sizeof *r);
}

/* Explicit relative residuals ||S_k v - l v|| / |l| of all r pairs of nb channels, in
 * one batched application of the operator the solver used (op, f32 or f64).
 * chs (nb r): channel of every column; evals (nb, r); evecs (nb, d, r); V, Y (d, nb r)
 * f64 and, for the f32 operator, X32, Y32 (d, nb r). */
static int sks__explicit_residuals(const sks_qf_op *op, const int *chs, int nb, int r, const double *evals,
                                   const double *evecs, double *V, double *Y, float *X32, float *Y32,
                                   sks_spike_channel *out) {
    const int d = op->d, m = nb * r;
    for (int i = 0; i < nb; i++)
        for (int k = 0; k < d; k++)
            memcpy(V + (size_t)k * m + (size_t)i * r, evecs + ((size_t)i * d + k) * r, (size_t)r * sizeof(double));
    int rc;
    if (op->prec == SKS_QF_F64) {
        rc = sks_qf_matvec_batch(op, chs, m, V, m, Y, m);
    } else {
        const size_t n = (size_t)d * m;
        for (size_t i = 0; i < n; i++) X32[i] = (float)V[i];
        rc = sks_qf_matvec_batch(op, chs, m, X32, m, Y32, m);
        for (size_t i = 0; i < n && !rc; i++) Y[i] = Y32[i];
    }
    if (rc) return rc;
    for (int c = 0; c < m; c++) {
        const double lam = evals[c];
        double s2 = 0;
        for (int k = 0; k < d; k++) {
            double e = Y[(size_t)k * m + c] - lam * V[(size_t)k * m + c];
            s2 += e * e;
        }
        out[c / r].residuals[c % r] = sqrt(s2) / (fabs(lam) > 0 ? fabs(lam) : 1.0);
    }
    return 0;
}

/* The channel blocks of the other parts: row i = channel i's eigenvalues (r),
 * residuals (r), s* (d), converged, cmv[i], crs[i] (counts are exact in f64). Called
 * by every part, also one whose own blocks failed (rc), so that the collective share
 * is never left waiting; the share returns the first failure of any part. */
static int sks__share_channels(const sks_spikes_split *sp, int blk, int *cmv, int *crs, int rc,
                               sks_spikes_layer_result *out) {
    const int nch = out->n_channels, d = out->d, r = nch ? out->channels[0].rank : 0;
    const int nblk = (nch + blk - 1) / blk;
    const size_t w = 2 * (size_t)r + (size_t)d + 3;
    double *rows = sks_calloc_n((size_t)nch * w, sizeof *rows);
    int *row0 = sks_malloc_n((size_t)nblk + 1, sizeof *row0);
    if (!rows || !row0) {
        free(rows);
        free(row0);
        /* without the buffer there is nothing to take part with: every part has the
         * same sizes, so all fail here together */
        return sks_fail(SKS_ENOMEM, "%s: %d channels", __func__, nch);
    }
    for (int b = 0; b <= nblk; b++) row0[b] = b * blk < nch ? b * blk : nch;
    for (int i = 0; i < nch; i++) {
        const sks_spike_channel *c = &out->channels[i];
        double *x = rows + (size_t)i * w;
        memcpy(x, c->eigenvalues, (size_t)r * sizeof *x);
        memcpy(x + r, c->residuals, (size_t)r * sizeof *x);
        memcpy(x + 2 * r, c->s_star, (size_t)d * sizeof *x);
        x[2 * r + d] = c->converged;
        x[2 * r + d + 1] = cmv[i];
        x[2 * r + d + 2] = crs[i];
    }
    rc = sp->share(sp->ud, SKS_SPK_SHARE_CHANNELS, nblk, row0, w, rows, rc);
    for (int i = 0; i < nch && !rc; i++) {
        sks_spike_channel *c = &out->channels[i];
        const double *x = rows + (size_t)i * w;
        memcpy(c->eigenvalues, x, (size_t)r * sizeof *x);
        memcpy(c->residuals, x + r, (size_t)r * sizeof *x);
        memcpy(c->s_star, x + 2 * r, (size_t)d * sizeof *x);
        c->converged = x[2 * r + d] != 0;
        cmv[i] = (int)x[2 * r + d + 1];
        crs[i] = (int)x[2 * r + d + 2];
    }
    free(rows);
    free(row0);
    return rc;
}

/* Eigenpairs of the selected channels (dense reference, or linalg's block Lanczos). */
static int sks__layer_eigs(sks_spikes *s, const sks_spikes_split *sp, sks_spikes_layer_result *out) {
    const int d = s->d, r = s->o.rank, nch = out->n_channels;
    int rc = 0;
    if (nch == 0) return 0;
    if (s->o.dense) {
        sks_quadform q = {.d = d, .f = s->f, .G = s->G32, .U = s->U32, .Down = s->D32};
        sks_quadform64 q64 = {.d = d, .f = s->f, .G = s->G64, .U = s->U64, .Down = s->D64};
        double *S = sks_malloc_n((size_t)d * d, sizeof *S);
        double *ev = sks_malloc_n((size_t)d, sizeof *ev);
        double *Z = sks_malloc_n((size_t)d * d, sizeof *Z);
        if (!S || !ev || !Z) rc = sks_fail(SKS_ENOMEM, "%s: --dense needs 2 x %d x %d f64", __func__, d, d);
        for (int i = 0; i < nch && !rc; i++) {
            sks_spike_channel *c = &out->channels[i];
            if (s->prec == SKS_SPK_PREC_F64) {
                rc = sks_quadform64_dense(&q64, c->channel, S);
            } else {
                rc = sks_quadform_dense(&q, c->channel, S);
                if (rc) break;
            }
            double fro = 0, tr = 0;
            for (size_t k = 0; k < (size_t)d * d; k++) fro += S[k] * S[k];
            for (int k = 0; k < d; k++) tr += S[(size_t)k * d + k];
            c->frobenius = sqrt(fro);
            c->trace = tr;
            rc = sks_eig_dense(d, S, ev, Z);
            if (rc) break;
            for (int e = 0; e < r; e++) {
                c->eigenvalues[e] = ev[e];
                c->residuals[e] = 0;
            }
            for (int k = 0; k < d; k++) c->s_star[k] = Z[(size_t)k * d + 0];
            /* explicit residuals of the dense pairs */
            for (int e = 0; e < r; e++) {
                double res = 0;
                for (int a = 0; a < d; a++) {
                    double y = 0;
                    for (int b = 0; b < d; b++) y += S[(size_t)a * d + b] * Z[(size_t)b * d + e];
                    y -= ev[e] * Z[(size_t)a * d + e];
                    res += y * y;
                }
                c->residuals[e] = sqrt(res) / (fabs(ev[e]) > 0 ? fabs(ev[e]) : 1.0);
            }
            c->converged = 1;
            out->flops_eigs += 2.0 * s->f * (double)d * d;
        }
        free(S);
        free(ev);
        free(Z);
        return rc;
    }
    /* The lockstep block Lanczos of linalg/ over the S_k operator bound on the backend
     * (sks_qf_top_eigs): f64 weights through dgemm, or the f32 ones through sgemm. */
    const int f = s->f, f64 = s->prec == SKS_SPK_PREC_F64;
    int blk = s->o.channel_block > 0 ? s->o.channel_block : SKS_SPK_CHANNEL_BLOCK;
    if (blk > nch) blk = nch;
    sks_eigs_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.r = r;
    eo.block = sks__krylov_block(&s->o, f64, d);
    int kdim = s->o.krylov_dim;
    if (s->op.be->eig_defaults) { /* the row's own measured choice where the user made none */
        int rb = 0, rk = 0;
        s->op.be->eig_defaults(s->op.prec, d, r, &rb, &rk);
        if (s->o.block <= 0 && rb > 0) eo.block = rb;
        if (kdim <= 0) kdim = rk;
    }
    eo.tol = s->o.tol > 0 ? s->o.tol : (f64 ? 1e-11 : 1e-6);
    eo.seed = s->o.seed;
    /* the restart cap is the bound; max_iter only has to stay out of its way */
    eo.max_iter = INT_MAX / 2;
    const int cols = blk * r; /* explicit residuals: every pair of a channel block at once */
    int *chs = sks_malloc_n((size_t)cols, sizeof *chs);
    double *evals = sks_malloc_n((size_t)blk * r, sizeof(double));
    double *evecs = sks_malloc_n((size_t)blk * r * d, sizeof(double));
    double *Vg = sks_malloc_n((size_t)d * cols, sizeof(double));
    double *Y = sks_malloc_n((size_t)d * cols, sizeof(double));
    sks_eigs_info *info = sks_calloc_n((size_t)blk, sizeof *info);
    float *X32 = f64 ? NULL : sks_malloc_n((size_t)d * cols, sizeof(float));
    float *Y32 = f64 ? NULL : sks_malloc_n((size_t)d * cols, sizeof(float));
    /* per channel: operator vectors, and the restarts of its block on its first channel,
     * so that counts dealt out with the blocks add up to the one-process ones */
    int *cmv = sks_calloc_n((size_t)nch, sizeof *cmv), *crs = sks_calloc_n((size_t)nch, sizeof *crs);
    if (!chs || !evals || !evecs || !Vg || !Y || !info || (!f64 && (!X32 || !Y32)) || !cmv || !crs) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory for %d channels", __func__, blk);
        goto done;
    }
    const int split = sp && sp->nparts > 1;
    for (int b0 = 0; b0 < nch && !rc; b0 += blk) {
        int nb = nch - b0 < blk ? nch - b0 : blk;
        if (split && (b0 / blk) % sp->nparts != sp->part) continue; /* another part's block */
        for (int i = 0; i < nb; i++) chs[i] = out->channels[b0 + i].channel;
        sks_eigs_extra x;
        memset(&x, 0, sizeof x);
        x.krylov_dim = kdim;
        x.max_restarts = s->o.max_restarts > 0 ? s->o.max_restarts : 200;
        /* Floor for pairs far below lambda*: with the f64 operator the residuals stall
         * near 1e-13 |lambda*|, so bulk eigenvalues at 1e-4 of lambda* cannot reach tol
         * 1e-11 relative. The f32 default tol 1e-6 is met without a floor at 7B shape,
         * and a 1e-7 floor there only cost accuracy (docs/benchmarks.md). */
        x.norm_tol = f64 ? 1e-12 : 0.0;
        rc = sks_qf_top_eigs(&s->op, chs, nb, &eo, &x, evals, evecs, info);
        if (rc == SKS_ENOCONV) rc = 0; /* per channel below */
        if (rc) break;
        crs[b0] = x.restarts;
        for (int i = 0; i < nb; i++) cmv[b0 + i] = info[i].matvecs + r; /* + the residual check */
        /* Reported residuals are explicit: ||S v - l v|| / |l| with one more application
         * of the operator to all r pairs of the block, not the solver's running W = S V.
         * evecs is (nb, d, r); V (d, nb r) gathers column (i r + e) = pair e of channel i. */
        for (int i = 0; i < nb; i++)
            for (int e = 0; e < r; e++) chs[i * r + e] = out->channels[b0 + i].channel;
        for (int i = 0; i < nb; i++) {
            sks_spike_channel *c = &out->channels[b0 + i];
            const double *Ei = evecs + (size_t)i * d * r;
            memcpy(c->eigenvalues, evals + (size_t)i * r, (size_t)r * sizeof(double));
            for (int k = 0; k < d; k++) c->s_star[k] = Ei[(size_t)k * r];
            /* a basis of all of R^d makes Rayleigh-Ritz exact: what is left of the
             * residual is the operator's rounding (f32: ~1e-7 ||S_k||, large relative
             * to the small eigenvalues of a dominated channel), not lack of iteration */
            c->converged = info[i].n_conv == r || info[i].spanned;
        }
        rc = sks__explicit_residuals(&s->op, chs, nb, r, evals, evecs, Vg, Y, X32, Y32, out->channels + b0);
    }
    if (split) rc = sks__share_channels(sp, blk, cmv, crs, rc, out);
    int nfail = 0;
    for (int i = 0; i < nch; i++) {
        out->matvecs += cmv[i];
        out->restarts += crs[i];
        nfail += !out->channels[i].converged;
    }
    if (!rc && nfail)
        sks_log(SKS_LOG_WARN, "spikes: layer %d: some eigenpairs did not reach tol %.1e (reported with residuals)",
                out->layer, eo.tol);
    /* GEMM flops: 8 f d per operator vector (four GEMMs of f x d per column) */
    out->flops_eigs += 8.0 * f * (double)d * out->matvecs;
done:
    free(chs);
    free(evals);
    free(evecs);
    free(Vg);
    free(Y);
    free(info);
    free(X32);
    free(Y32);
    free(cmv);
    free(crs);
    return rc;
}

/* z_g = G x, z_u = U x in f64 (x from the forward pass, f32 weights exact in f64). */
static void sks__gate_up(const sks_spikes *s, const float *x32, double *x, double *zg, double *zu) {
    const int d = s->d, f = s->f;
    for (int i = 0; i < d; i++) x[i] = x32[i];
    for (int j = 0; j < f; j++) {
        const float *g = s->G32 + (size_t)j * d, *u = s->U32 + (size_t)j * d;
        double ag = 0, au = 0;
        for (int i = 0; i < d; i++) {
            ag += (double)g[i] * x[i];
            au += (double)u[i] * x[i];
        }
        zg[j] = ag;
        zu[j] = au;
    }
}

static int sks__layer_forward_metrics(sks_spikes *s, sks_spikes_layer_result *out) {
    const int d = s->d, f = s->f, T = s->T, layer = out->layer;
    double *x = sks_malloc_n((size_t)d, sizeof *x), *x0 = sks_malloc_n((size_t)d, sizeof *x0);
    double *zg = sks_malloc_n((size_t)f, sizeof *zg), *zu = sks_malloc_n((size_t)f, sizeof *zu);
    double *zg0 = sks_malloc_n((size_t)f, sizeof *zg0), *zu0 = sks_malloc_n((size_t)f, sizeof *zu0);
    float *post = NULL; /* the post-FFN norm's gain (Gemma 2/3, OLMo 2) */
    int rc = 0;
    if (!x || !x0 || !zg || !zu || !zg0 || !zu0) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto done;
    }
    const float *in = s->ffn_in + (size_t)layer * T * d;
    const float *outp = s->ffn_out + (size_t)layer * T * d;
    if (sks_model_arch(s->m)->has_post_norms) {
        if (!(post = sks_malloc_n((size_t)d, sizeof *post))) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
            goto done;
        }
        if ((rc = sks_model_norm_gain(s->m, SKS_ROLE_POST_FFN_NORM, layer, post, d))) goto done;
    }
    sks__gate_up(s, in, x0, zg0, zu0); /* position 0 */
    int have_tok = -1;
    for (int i = 0; i < out->n_channels; i++) {
        sks_spike_channel *c = &out->channels[i];
        const int k = c->channel;
        if (c->token < 0 || c->token >= T) {
            int best = 0;
            for (int t = 1; t < T; t++)
                if (fabsf(outp[(size_t)t * d + k]) > fabsf(outp[(size_t)best * d + k])) best = t;
            c->token = best;
        }
        const double *xx = x0, *g = zg0, *u = zu0;
        if (c->token != 0) {
            if (have_tok != c->token) {
                sks__gate_up(s, in + (size_t)c->token * d, x, zg, zu);
                have_tok = c->token;
            }
            xx = x;
            g = zg;
            u = zu;
        }
        /* sign of s*: s*.x >= 0 */
        double sx = cblas_ddot(d, c->s_star, 1, xx, 1);
        if (sx < 0) {
            cblas_dscal(d, -1.0, c->s_star, 1);
            sx = -sx;
        }
        c->sign_from_input = 1;
        double xn = cblas_dnrm2(d, xx, 1);
        c->x_norm = xn;
        c->cos_x_s = xn > 0 ? sx / xn : NAN;
        double xn0 = cblas_dnrm2(d, x0, 1);
        c->cos_x0_s = xn0 > 0 ? cblas_ddot(d, c->s_star, 1, x0, 1) / xn0 : NAN;
        c->rank1_pred = c->eigenvalues[0] * sx * sx;
        const float *Dk = s->D32 + (size_t)k * f;
        const sks_act_kind act = sks_model_arch(s->m)->act;
        double quad = 0, tru = 0, in_mass = 0, all_mass = 0;
        for (int j = 0; j < f; j++) {
            double az = fabs(g[j]), ag = sks__act(act, g[j]);
            quad += (double)Dk[j] * g[j] * u[j];
            tru += (double)Dk[j] * ag * u[j];
            all_mass += az;
            if (fabs(ag - g[j]) <= 0.05 * az) in_mass += az;
        }
        c->quad_pred = quad;
        c->true_out = tru;
        c->true_out_fwd = outp[(size_t)c->token * d + k];
        c->silu_regime = all_mass > 0 ? in_mass / all_mass : NAN;
        c->post_gain = c->post_out = NAN;
        if (post) {
            const float *y = outp + (size_t)c->token * d;
            double ss = 0;
            for (int j = 0; j < d; j++) ss += (double)y[j] * y[j];
            c->post_gain = (double)post[k] / sqrt(ss / d + sks_model_arch(s->m)->norm_eps);
            c->post_out = c->post_gain * c->true_out_fwd;
        }
    }
done:
    free(post);
    free(x);
    free(x0);
    free(zg);
    free(zu);
    free(zg0);
    free(zu0);
    return rc;
}

int sks_spikes_layer(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                     sks_spikes_layer_result *out) {
    return sks_spikes_layer_split(s, layer, ch, src, tok, n, NULL, out);
}

/* The screen: traces on every part; the Gram partials of this part's row blocks (all
 * of them without a split), shared, then added in block order by
 * sks_quadform_frobenius_finish, the same sums on every part and in one process. */
static int sks__screen(sks_spikes *s, const sks_spikes_split *sp, sks_spikes_layer_result *out) {
    const int d = s->d, f = s->f, f64 = s->prec == SKS_SPK_PREC_F64;
    const int fblk = sks__screen_rows(f64);
    const int nblk = sks_quadform_frobenius_nblocks(f, fblk), split = sp && sp->nparts > 1;
    double *part = sks_calloc_n((size_t)nblk * d, sizeof *part);
    int *row0 = sks_malloc_n((size_t)nblk + 1, sizeof *row0);
    int rc = 0;
    if (!part || !row0) {
        rc = sks_fail(SKS_ENOMEM, "%s: %d x %d partials", __func__, nblk, d);
        goto done;
    }
    rc = sks_qf_traces(&s->op, out->trace);
    for (int b = 0; b < nblk && !rc; b++) {
        if (split && b % sp->nparts != sp->part) continue;
        rc = sks_qf_frobenius_partials(&s->op, fblk, b, b + 1, part + (size_t)b * d);
    }
    if (split) {
        /* taken part in even after a failure, so that the others are not left waiting */
        for (int b = 0; b <= nblk; b++) row0[b] = b;
        rc = sp->share(sp->ud, SKS_SPK_SHARE_SCREEN, nblk, row0, (size_t)d, part, rc);
    }
    if (!rc) sks_quadform_frobenius_finish(d, nblk, part, out->frobenius);
    out->flops_screen = sks_quadform_frobenius_flops(d, f, fblk);
done:
    free(part);
    free(row0);
    return rc;
}

int sks_spikes_layer_split(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                           const sks_spikes_split *split, sks_spikes_layer_result *out) {
    memset(out, 0, sizeof *out);
    if (!s || layer < 0 || layer >= s->L || n < 0 || (n > 0 && !ch))
        return sks_fail(SKS_EARG, "%s: layer %d outside [0, %d)", __func__, layer, s ? s->L : 0);
    for (int i = 0; i < n; i++)
        if (ch[i] < 0 || ch[i] >= s->d) return sks_fail(SKS_EARG, "channel %d outside [0, %d)", ch[i], s->d);
    if (!sks_spikes_has_quadform(sks_model_arch(s->m)))
        return sks_fail(SKS_EUNSUPPORTED, "spikes: layer %d of %s: %s", layer, sks_model_path(s->m),
                        sks_spikes_no_quadform_note);
    if (s->ov_layer != layer && sks_arch_layer_moe(sks_model_arch(s->m), layer))
        return sks_spikes_moe_layer(s, layer, ch, src, tok, n, split, out);
    int rc = sks__load_layer(s, layer);
    if (rc) return rc;
    const int d = s->d, r = s->o.rank;
    out->layer = layer;
    out->d = d;
    out->precision = s->prec;
    out->frobenius = sks_malloc_n((size_t)d, sizeof(double));
    out->trace = sks_malloc_n((size_t)d, sizeof(double));
    if (!out->frobenius || !out->trace) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto fail;
    }
    /* the screen: every channel */
    double t0 = sks_now();
    sks_progress("spikes: screen", 0, 1);
    rc = sks__screen(s, split, out);
    if (rc) goto fail;
    out->seconds_screen = sks_now() - t0;
    sks_progress("spikes: screen", 1, 1);

    /* ranking by ||S_k||_F */
    sks__kv *kv = sks_malloc_n((size_t)d, sizeof *kv);
    if (!kv) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto fail;
    }
    for (int k = 0; k < d; k++) {
        kv[k].key = out->frobenius[k];
        kv[k].idx = k;
    }
    qsort(kv, (size_t)d, sizeof *kv, sks__cmp_kv_desc);
    int ntop = s->o.top_frob < 0 ? 0 : (s->o.top_frob > d ? d : s->o.top_frob);
    int nrank = ntop > 50 ? ntop : (d < 50 ? d : 50);
    out->n_top = nrank;
    out->top_frob = sks_malloc_n((size_t)nrank, sizeof(int));
    out->channels = sks_calloc_n((size_t)n + ntop, sizeof(sks_spike_channel));
    if (!out->top_frob || !out->channels) {
        free(kv);
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto fail;
    }
    for (int i = 0; i < nrank; i++) out->top_frob[i] = kv[i].idx;
    /* the channel list: requested ones in order, then screen ones not already there */
    int nc = 0;
    for (int i = 0; i < n + ntop; i++) {
        int k = i < n ? ch[i] : kv[i - n].idx;
        int bits = i < n ? (src ? src[i] : SKS_SPK_SRC_USER) : SKS_SPK_SRC_FROB;
        int t = (i < n && tok) ? tok[i] : -1;
        int dup = -1;
        for (int j = 0; j < nc; j++)
            if (out->channels[j].channel == k) dup = j;
        if (dup >= 0) {
            out->channels[dup].source |= bits;
            continue;
        }
        sks_spike_channel *c = &out->channels[nc++];
        c->channel = k;
        c->source = bits;
        c->token = t;
    }
    free(kv);
    out->n_channels = nc;
    for (int i = 0; i < nc; i++) {
        sks_spike_channel *c = &out->channels[i];
        c->rank = r;
        c->eigenvalues = sks_calloc_n((size_t)r, sizeof(double));
        c->residuals = sks_calloc_n((size_t)r, sizeof(double));
        c->s_star = sks_calloc_n((size_t)d, sizeof(double));
        if (!c->eigenvalues || !c->residuals || !c->s_star) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
            goto fail;
        }
        c->frobenius = out->frobenius[c->channel];
        c->trace = out->trace[c->channel];
        c->x_norm = c->cos_x_s = c->quad_pred = c->rank1_pred = c->true_out = c->true_out_fwd = NAN;
        c->post_gain = c->post_out = NAN;
        c->silu_regime = c->cos_x0_s = NAN;
        if (!s->T) c->token = -1;
    }
    t0 = sks_now();
    rc = sks__layer_eigs(s, split, out);
    if (rc) goto fail;
    out->seconds_eigs = sks_now() - t0;
    for (int i = 0; i < nc; i++) {
        sks_spike_channel *c = &out->channels[i];
        double l1 = fabs(c->eigenvalues[0]);
        c->dominance = r >= 2 ? (fabs(c->eigenvalues[1]) > 0 ? l1 / fabs(c->eigenvalues[1]) : INFINITY) : NAN;
        c->energy_fraction = c->frobenius > 0 ? l1 * l1 / (c->frobenius * c->frobenius) : NAN;
        if (!s->T) {
            /* no input: largest-|.| component positive */
            int am = 0;
            for (int k = 1; k < d; k++)
                if (fabs(c->s_star[k]) > fabs(c->s_star[am])) am = k;
            if (c->s_star[am] < 0) cblas_dscal(d, -1.0, c->s_star, 1);
            c->sign_from_input = 0;
        }
    }
    if (s->T) {
        rc = sks__layer_forward_metrics(s, out);
        if (rc) goto fail;
    }
    if (s->o.first_token_map) {
        for (int l = 0; l <= layer; l++) {
            rc = sks_spikes_wvo_top(s, l, NULL, NULL);
            if (rc) goto fail;
        }
        for (int i = 0; i < nc; i++) {
            sks_spike_channel *c = &out->channels[i];
            c->n_wvo = layer + 1;
            c->cos_wvo = sks_malloc_n((size_t)layer + 1, sizeof(double));
            if (!c->cos_wvo) {
                rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
                goto fail;
            }
            for (int l = 0; l <= layer; l++)
                c->cos_wvo[l] = fabs(cblas_ddot(d, c->s_star, 1, s->wvo_u + (size_t)l * d, 1));
        }
    }
    return 0;
fail:
    sks_spikes_layer_result_free(out);
    return rc;
}

/* ---- first-token map --------------------------------------------------------------- */

typedef struct {
    int d, H, Hkv, dh;
    double *WO;  /* (d, H dh) */
    double *WV;  /* (Hkv dh, d) */
    double *a, *b, *c, *e;
} sks__wvoctx;

/* y = W_VO W_VO^T x with W_VO = W_O W_V', W_V' = W_V rows repeated per query head:
 * a = W_O^T x (H dh); b[g] = sum_{h in g} a_h (Hkv dh); c = W_V^T b (d); e = W_V c;
 * y = W_O e' with e'_h = e_{g(h)}. */
static int sks__op_wvo(void *ud, int n, int nb, const double *X, double *Y) {
    sks__wvoctx *w = ud;
    const int d = w->d, Hd = w->H * w->dh, Kd = w->Hkv * w->dh, grp = w->H / w->Hkv;
    for (int col = 0; col < nb; col++) {
        for (int i = 0; i < d; i++) w->c[i] = X[(size_t)i * nb + col];
        cblas_dgemv(CblasRowMajor, CblasTrans, d, Hd, 1.0, w->WO, Hd, w->c, 1, 0.0, w->a, 1);
        memset(w->b, 0, (size_t)Kd * sizeof(double));
        for (int h = 0; h < w->H; h++)
            for (int i = 0; i < w->dh; i++) w->b[(size_t)(h / grp) * w->dh + i] += w->a[(size_t)h * w->dh + i];
        cblas_dgemv(CblasRowMajor, CblasTrans, Kd, d, 1.0, w->WV, d, w->b, 1, 0.0, w->c, 1);
        cblas_dgemv(CblasRowMajor, CblasNoTrans, Kd, d, 1.0, w->WV, d, w->c, 1, 0.0, w->e, 1);
        for (int h = 0; h < w->H; h++)
            memcpy(w->a + (size_t)h * w->dh, w->e + (size_t)(h / grp) * w->dh, (size_t)w->dh * sizeof(double));
        cblas_dgemv(CblasRowMajor, CblasNoTrans, d, Hd, 1.0, w->WO, Hd, w->a, 1, 0.0, w->c, 1);
        for (int i = 0; i < d; i++) Y[(size_t)i * nb + col] = w->c[i];
    }
    (void)n;
    return 0;
}

int sks_spikes_wvo_top(sks_spikes *s, int layer, double *u1, double *sigma1) {
    if (!s || layer < 0 || layer >= s->L) return sks_fail(SKS_EARG, "%s: bad layer %d", __func__, layer);
    const int d = s->d;
    if (!s->wvo_have[layer]) {
        const sks_arch *a = sks_model_arch(s->m);
        sks__wvoctx w;
        memset(&w, 0, sizeof w);
        w.d = d;
        w.H = a->n_heads;
        w.Hkv = a->n_kv_heads;
        w.dh = a->head_dim;
        const sks_tensor *to = sks__need(s->m, SKS_ROLE_WO, layer, d, (int64_t)w.H * w.dh);
        const sks_tensor *tv = sks__need(s->m, SKS_ROLE_WV, layer, (int64_t)w.Hkv * w.dh, d);
        if (!to || !tv) return SKS_ENOTFOUND;
        if (w.Hkv <= 0 || w.H % w.Hkv) return sks_fail(SKS_ECONFIG, "%s: H %d not a multiple of Hkv %d", __func__, w.H, w.Hkv);
        size_t Hd = (size_t)w.H * w.dh, Kd = (size_t)w.Hkv * w.dh;
        int rc = 0;
        w.WO = sks_malloc_n((size_t)d * Hd, sizeof(double));
        w.WV = sks_malloc_n(Kd * (size_t)d, sizeof(double));
        w.a = sks_malloc_n(Hd, sizeof(double));
        w.b = sks_malloc_n(Kd, sizeof(double));
        w.c = sks_malloc_n((size_t)d, sizeof(double));
        w.e = sks_malloc_n(Kd, sizeof(double));
        if (!w.WO || !w.WV || !w.a || !w.b || !w.c || !w.e) rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        if (!rc) rc = sks__tensor_f64(to, w.WO);
        if (!rc) rc = sks__tensor_f64(tv, w.WV);
        double ev[2], *evec = NULL, res[2] = {INFINITY, INFINITY};
        if (!rc) {
            evec = sks_malloc_n((size_t)2 * d, sizeof(double));
            if (!evec) rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        }
        if (!rc) {
            /* top pair of W_VO W_VO^T (PSD, so largest |lambda| = sigma_1^2); the second
             * pair gives Rayleigh-Ritz a gap to converge against */
            const int r = d >= 2 ? 2 : 1;
            sks_eigs_opts eo = {.r = r, .block = 1, .max_iter = INT_MAX / 2, .tol = 1e-10, .seed = 7};
            sks_eigs_extra x = {.max_restarts = 300};
            sks_eigs_info info = {.residuals = res};
            rc = sks_eigs_topk_ex(sks__op_wvo, &w, d, &eo, &x, ev, evec, &info);
            if (rc == SKS_ENOCONV) {
                sks_log(SKS_LOG_WARN, "spikes: W_VO of layer %d: top singular pair not converged (residual %.1e)",
                        layer, res[0]);
                rc = 0;
            }
            /* evec is (d, r): u_1 is column 0 */
            for (int i = 0; i < d && !rc; i++) evec[i] = evec[(size_t)i * r];
        }
        if (!rc) {
            memcpy(s->wvo_u + (size_t)layer * d, evec, (size_t)d * sizeof(double));
            s->wvo_s[layer] = sqrt(fmax(ev[0], 0.0));
            s->wvo_have[layer] = 1;
        }
        free(evec);
        free(w.WO);
        free(w.WV);
        free(w.a);
        free(w.b);
        free(w.c);
        free(w.e);
        if (rc) return rc;
    }
    if (u1) memcpy(u1, s->wvo_u + (size_t)layer * d, (size_t)d * sizeof(double));
    if (sigma1) *sigma1 = s->wvo_s[layer];
    return 0;
}

/* ---- default selection ---------------------------------------------------------------- */

int sks_spikes_select_from_trace(const sks_trace_result *tr, int **layers, int **channels, int **tokens, int *n) {
    *layers = *channels = *tokens = NULL;
    *n = 0;
    if (!tr) return sks_fail(SKS_EARG, "%s: no trace", __func__);
    size_t cap = 0;
    for (int i = 0; i < tr->n_lifecycles; i++) cap += (size_t)tr->lifecycles[i].n_up;
    if (cap == 0) return 0;
    int *L = sks_malloc_n(cap, sizeof *L), *C = sks_malloc_n(cap, sizeof *C), *Tk = sks_malloc_n(cap, sizeof *Tk);
    double *pk = sks_malloc_n(cap, sizeof *pk);
    if (!L || !C || !Tk || !pk) {
        free(L);
        free(C);
        free(Tk);
        free(pk);
        return sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
    }
    int m = 0;
    for (int i = 0; i < tr->n_lifecycles; i++) {
        const sks_lifecycle *lc = &tr->lifecycles[i];
        for (int u = 0; u < lc->n_up; u++) {
            int b = lc->up_blocks[u];
            if (sks_block_kind(b) != SKS_BLOCK_FFN) continue;
            int l = sks_block_layer(b), dup = -1;
            for (int j = 0; j < m; j++)
                if (L[j] == l && C[j] == lc->channel) dup = j;
            if (dup >= 0) {
                /* keep the token with the larger peak */
                if (lc->peak_abs > pk[dup]) {
                    Tk[dup] = lc->token;
                    pk[dup] = lc->peak_abs;
                }
                continue;
            }
            L[m] = l;
            C[m] = lc->channel;
            Tk[m] = lc->token;
            pk[m] = lc->peak_abs;
            m++;
        }
    }
    /* sort by (layer, channel): insertion sort, m is small */
    for (int i = 1; i < m; i++)
        for (int j = i; j > 0 && (L[j - 1] > L[j] || (L[j - 1] == L[j] && C[j - 1] > C[j])); j--) {
            int t;
            t = L[j], L[j] = L[j - 1], L[j - 1] = t;
            t = C[j], C[j] = C[j - 1], C[j - 1] = t;
            t = Tk[j], Tk[j] = Tk[j - 1], Tk[j - 1] = t;
        }
    free(pk);
    *layers = L;
    *channels = C;
    *tokens = Tk;
    *n = m;
    return 0;
}

void sks_spikes_trace_opts_default(sks_trace_opts *o) { sks_trace_opts_default(o); /* the one spike rule */ }

int sks_spikes_default_selection(const sks_model *m, const int32_t *tokens, int T, const sks_trace_opts *to,
                                 sks_trace_result **tr_out, int **layers, int **channels, int **toks, int *n) {
    *layers = *channels = *toks = NULL;
    *n = 0;
    if (tr_out) *tr_out = NULL;
    sks_trace_opts o;
    if (to)
        o = *to;
    else
        sks_spikes_trace_opts_default(&o);
    sks_trace_result *tr = NULL;
    const int32_t *p[1] = {tokens};
    int lens[1] = {T};
    int rc = sks_trace_run(m, 1, p, lens, &o, &tr);
    if (rc) return rc;
    rc = sks_spikes_select_from_trace(tr, layers, channels, toks, n);
    if (rc || !tr_out)
        sks_trace_result_free(tr);
    else
        *tr_out = tr;
    return rc;
}

/* ---- delimiter route ------------------------------------------------------------------ */

static int sks__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void sks_delim_result_free(sks_delim_result *r) {
    if (!r) return;
    free(r->ratio);
    free(r->top_ids);
    free(r->top_ratio);
    memset(r, 0, sizeof *r);
}

/* n_v = gamma_attn[0] * e_v / rms(e_v), rms(e) = sqrt(mean(e^2) + eps): the attention
 * input of layer 0 for token v at any position. */
int sks_spikes_has_quadform(const sks_arch *a) { return a && !a->ffn_plain; }

const char sks_spikes_no_quadform_note[] =
    "no quadratic form: non-gated MLP (W_down act(W_up x + b_up) + b_down has no gate product, so there is no S_k, "
    "lambda* or s*); the lifecycle, the first-token map and the delimiter route still run";

const char sks_spikes_no_input_norm_note[] =
    "no input norm: attention and FFN read the raw residual, so the RMSNorm sparsification step (delimiter route, "
    "post-norm spike vector) has no counterpart in this family";

int sks_spikes_delimiter(sks_spikes *s, int n_top, sks_delim_result *out) {
    memset(out, 0, sizeof *out);
    const sks_arch *a = sks_model_arch(s->m);
    const int d = s->d, V = s->V;
    if (a->no_input_norms) {
        out->no_input_norm = 1;
        sks_log(SKS_LOG_INFO, "spikes: %s (%s): %s", sks_model_path(s->m), a->family, sks_spikes_no_input_norm_note);
        return 0;
    }
    const sks_tensor *te = sks__need(s->m, SKS_ROLE_EMBED, -1, V, d);
    const sks_tensor *tg = sks_model_tensor(s->m, SKS_ROLE_ATTN_NORM, 0);
    const float es = sks_model_embed_scale(s->m);
    if (!te) return SKS_ENOTFOUND;
    if (!tg || sks_tensor_cols(tg) != d) return sks_fail(SKS_ENOTFOUND, "%s: no attn_norm of layer 0", sks_model_path(s->m));
    const int blk = 256;
    float *gam = sks_malloc_n((size_t)d * 2, sizeof *gam), *E = sks_malloc_n((size_t)blk * d, sizeof *E);
    float *beta = gam ? gam + d : NULL; /* (d) LayerNorm bias (GPT-2) */
    double *nrm = sks_malloc_n((size_t)V, sizeof *nrm), *srt = sks_malloc_n((size_t)V, sizeof *srt);
    out->ratio = sks_malloc_n((size_t)V, sizeof(float));
    int rc = 0;
    if (!gam || !E || !nrm || !srt || !out->ratio) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto done;
    }
    rc = sks_model_norm_gain(s->m, SKS_ROLE_ATTN_NORM, 0, gam, d);
    if (!rc && a->norm_layer) { /* GPT-2: the LayerNorm bias of layer 0 */
        const sks_tensor *tb = sks_model_tensor(s->m, SKS_ROLE_ATTN_NORM_B, 0);
        rc = tb ? sks_tensor_rows_f32(tb, 0, 1, beta) : sks_fail(SKS_ENOTFOUND, "%s: no attn_norm bias of layer 0",
                                                                  sks_model_path(s->m));
    }
    for (int v0 = 0; v0 < V && !rc; v0 += blk) {
        int nb = V - v0 < blk ? V - v0 : blk;
        rc = sks_tensor_rows_f32(te, v0, nb, E);
        for (int i = 0; i < nb && !rc; i++) {
            const float *e = E + (size_t)i * d;
            double ss = 0, gs = 0, mu = 0;
            if (a->norm_layer) {
                /* LayerNorm: n_v = gamma (e_v - mean) / std + beta (the token's own row;
                 * the position row is the same for every token and is left out) */
                for (int c = 0; c < d; c++) mu += (double)e[c];
                mu /= d;
                for (int c = 0; c < d; c++) ss += ((double)e[c] - mu) * ((double)e[c] - mu);
                const double inv = 1.0 / sqrt(ss / d + a->norm_eps);
                for (int c = 0; c < d; c++) {
                    double g = (double)gam[c] * ((double)e[c] - mu) * inv + (double)beta[c];
                    gs += g * g;
                }
                nrm[v0 + i] = sqrt(gs);
                continue;
            }
            for (int c = 0; c < d; c++) {
                double ec = (double)(e[c] * es);
                ss += ec * ec;
                double g = (double)gam[c] * ec;
                gs += g * g;
            }
            double rms = sqrt(ss / d + a->norm_eps);
            nrm[v0 + i] = sqrt(gs) / rms;
        }
    }
    if (rc) goto done;
    memcpy(srt, nrm, (size_t)V * sizeof *srt);
    qsort(srt, (size_t)V, sizeof *srt, sks__cmp_double);
    double med = (V % 2) ? srt[V / 2] : 0.5 * (srt[V / 2 - 1] + srt[V / 2]);
    out->median_norm = med;
    out->n_vocab = V;
    for (int v = 0; v < V; v++) out->ratio[v] = (float)(med > 0 ? nrm[v] / med : 0);
    if (n_top < 0) n_top = 0;
    if (n_top > V) n_top = V;
    out->n_top = n_top;
    out->top_ids = sks_malloc_n((size_t)n_top + 1, sizeof(int));
    out->top_ratio = sks_malloc_n((size_t)n_top + 1, sizeof(double));
    sks__kv *kv = sks_malloc_n((size_t)V, sizeof *kv);
    if (!out->top_ids || !out->top_ratio || !kv) {
        free(kv);
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
        goto done;
    }
    for (int v = 0; v < V; v++) {
        kv[v].key = med > 0 ? nrm[v] / med : 0;
        kv[v].idx = v;
    }
    qsort(kv, (size_t)V, sizeof *kv, sks__cmp_kv_desc);
    for (int i = 0; i < n_top; i++) {
        out->top_ids[i] = kv[i].idx;
        out->top_ratio[i] = kv[i].key;
    }
    free(kv);
done:
    free(gam);
    free(E);
    free(nrm);
    free(srt);
    if (rc) sks_delim_result_free(out);
    return rc;
}

/* ---- writer (schema "sinkscope.spikes/1", docs/schema-spikes.md) ------------------------ */

static const char *sks__prec_name(int p) { return p == SKS_SPK_PREC_F64 ? "f64" : p == SKS_SPK_PREC_F32 ? "f32" : "auto"; }

static void sks__out_sources(sks_out *o, int bits) {
    int n = !!(bits & SKS_SPK_SRC_USER) + !!(bits & SKS_SPK_SRC_SPIKE) + !!(bits & SKS_SPK_SRC_FROB);
    sks_out_array(o, (size_t)n);
    if (bits & SKS_SPK_SRC_USER) sks_out_str(o, "user");
    if (bits & SKS_SPK_SRC_SPIKE) sks_out_str(o, "spike");
    if (bits & SKS_SPK_SRC_FROB) sks_out_str(o, "frobenius");
}

static void sks__out_channel(sks_out *o, const sks_spike_channel *c, int d) {
    sks_out_map(o, 25);
    sks_out_kint(o, "channel", c->channel);
    sks_out_str(o, "source");
    sks__out_sources(o, c->source);
    int64_t sr = c->rank, sd = d, sw = c->n_wvo;
    sks_out_kf64_array(o, "eigenvalues", c->eigenvalues, 1, &sr);
    sks_out_kf64_array(o, "residuals", c->residuals, 1, &sr);
    sks_out_kbool(o, "converged", c->converged);
    sks_out_kf64_array(o, "s_star", c->s_star, 1, &sd);
    sks_out_kstr(o, "s_star_sign", c->sign_from_input ? "input" : "largest_component");
    sks_out_kf64(o, "lambda_star", c->eigenvalues[0]);
    sks_out_kf64(o, "frobenius", c->frobenius);
    sks_out_kf64(o, "trace", c->trace);
    sks_out_kf64(o, "dominance", c->dominance);
    sks_out_kf64(o, "energy_fraction", c->energy_fraction);
    sks_out_kint(o, "token", c->token);
    sks_out_kf64(o, "x_norm", c->x_norm);
    sks_out_kf64(o, "cos_x_s", c->cos_x_s);
    sks_out_kf64(o, "quad_pred", c->quad_pred);
    sks_out_kf64(o, "rank1_pred", c->rank1_pred);
    sks_out_kf64(o, "true_out", c->true_out);
    sks_out_kf64(o, "true_out_fwd", c->true_out_fwd);
    sks_out_kf64(o, "silu_regime", c->silu_regime);
    sks_out_kf64(o, "post_gain", c->post_gain);
    sks_out_kf64(o, "post_out", c->post_out);
    sks_out_kf64(o, "cos_x0_s", c->cos_x0_s);
    sks_out_str(o, "cos_wvo");
    if (c->n_wvo > 0)
        sks_out_f64_array(o, c->cos_wvo, 1, &sw);
    else
        sks_out_nil(o);
    sks_out_kint(o, "n_wvo", c->n_wvo);
}

/* "moe" of an MoE layer (docs/schema-spikes.md): the routing at the token, each block's
 * share of the FFN output per channel of the active form, every expert's forms. */
static void sks__out_moe(sks_out *o, const sks_spikes_moe *M, int d) {
    const int nb = M->k + M->has_shared;
    int64_t sk = M->k, sd = d, ssh[2] = {M->n_channels, nb};
    sks_out_kmap(o, "moe", 9);
    sks_out_kint(o, "token", M->token);
    sks_out_kint(o, "k", M->k);
    sks_out_kint(o, "n_experts", M->n_experts);
    sks_out_kints(o, "experts", M->experts, M->k);
    sks_out_str(o, "weights");
    sks_out_f64_array(o, M->weights, 1, &sk);
    sks_out_kf64(o, "shared_gate", M->shared_gate);
    sks_out_kbool(o, "has_shared", M->has_shared);
    sks_out_str(o, "share");
    sks_out_f64_array(o, M->share, 2, ssh);
    sks_out_karray(o, "per_expert", (size_t)M->n_per_expert);
    for (int e = 0; e < M->n_per_expert; e++) {
        const sks_spikes_layer_result *R = &M->per_expert[e];
        int64_t st = R->n_top;
        sks_out_map(o, 6);
        sks_out_kint(o, "expert", e < M->n_experts ? e : -1);
        sks_out_str(o, "frobenius");
        sks_out_f64_array(o, R->frobenius, 1, &sd);
        sks_out_str(o, "trace");
        sks_out_f64_array(o, R->trace, 1, &sd);
        sks_out_str(o, "top_frob");
        sks_out_i32_array(o, R->top_frob, 1, &st);
        sks_out_kint(o, "n_channels", R->n_channels);
        sks_out_karray(o, "channels", (size_t)R->n_channels);
        for (int c = 0; c < R->n_channels; c++) sks__out_channel(o, &R->channels[c], d);
    }
}

int sks_spikes_write(const sks_spikes_report *rep, const sks_model *m, const sks_spikes_opts *opt,
                     const char *(*piece)(void *ud, int id), void *piece_ud, const char *path) {
    if (!rep || !m || !opt || !path) return sks_fail(SKS_EARG, "%s: bad arguments", __func__);
    sks_out o;
    sks_out_begin(&o, rep->no_quadform ? 10 : 8, "sinkscope.spikes/1", m);
    if (rep->no_quadform) { /* non-gated FFN (GPT-2): no S_k; docs/schema-spikes.md */
        sks_out_kbool(&o, "quadratic_form", 0);
        sks_out_kstr(&o, "note", sks_spikes_no_quadform_note);
    }
    sks_out_kmap(&o, "params", 14);
    sks_out_kstr(&o, "selection", rep->selection ? rep->selection : "channels");
    sks_out_kint(&o, "rank", opt->rank);
    sks_out_kint(&o, "top_frob", opt->top_frob);
    sks_out_kbool(&o, "dense", opt->dense);
    sks_out_kstr(&o, "precision", sks__prec_name(opt->precision));
    sks_out_kf64(&o, "tol", opt->tol);
    sks_out_kint(&o, "krylov_dim", opt->krylov_dim);
    sks_out_kint(&o, "max_restarts", opt->max_restarts);
    sks_out_kint(&o, "seed", (int64_t)opt->seed);
    sks_out_kbool(&o, "first_token_map", opt->first_token_map);
    sks_out_kint(&o, "n_delim_top", opt->n_delim_top);
    sks_out_kf64(&o, "trace_abs", rep->trace_abs);
    sks_out_kf64(&o, "trace_ratio", rep->trace_ratio);
    sks_out_kf64(&o, "trace_outlier", rep->trace_outlier);

    sks_out_str(&o, "input");
    if (rep->tokens && rep->T > 0) {
        int64_t t = rep->T;
        sks_out_i32_array(&o, rep->tokens, 1, &t);
    } else {
        sks_out_nil(&o);
    }
    sks_out_str(&o, "spike_channels");
    if (rep->trace) {
        int64_t n = rep->trace->n_spike_channels;
        sks_out_i32_array(&o, rep->trace->spike_channels, 1, &n);
    } else {
        sks_out_nil(&o);
    }
    sks_out_karray(&o, "layers", (size_t)rep->n_layers);
    for (int i = 0; i < rep->n_layers; i++) {
        const sks_spikes_layer_result *L = &rep->layers[i];
        int64_t sd = L->d, st = L->n_top;
        sks_out_map(&o, 13 + (L->moe != NULL));
        sks_out_kint(&o, "layer", L->layer);
        sks_out_kstr(&o, "precision", sks__prec_name(L->precision));
        sks_out_kf64_array(&o, "frobenius", L->frobenius, 1, &sd);
        sks_out_kf64_array(&o, "trace", L->trace, 1, &sd);
        sks_out_ki32_array(&o, "top_frob", L->top_frob, 1, &st);
        sks_out_kf64(&o, "seconds_screen", L->seconds_screen);
        sks_out_kf64(&o, "seconds_eigs", L->seconds_eigs);
        sks_out_kint(&o, "matvecs", L->matvecs);
        sks_out_kint(&o, "restarts", L->restarts);
        sks_out_kf64(&o, "flops_screen", L->flops_screen);
        sks_out_kf64(&o, "flops_eigs", L->flops_eigs);
        sks_out_kint(&o, "n_channels", L->n_channels);
        sks_out_karray(&o, "channels", (size_t)L->n_channels);
        for (int c = 0; c < L->n_channels; c++) sks__out_channel(&o, &L->channels[c], L->d);
        if (L->moe) sks__out_moe(&o, L->moe, L->d);
    }
    sks_out_str(&o, "first_token_map");
    if (rep->n_wvo > 0) {
        int64_t n = rep->n_wvo;
        sks_out_map(&o, 1);
        sks_out_kf64_array(&o, "sigma1", rep->wvo_sigma1, 1, &n);
    } else {
        sks_out_nil(&o);
    }
    sks_out_str(&o, "delimiter");
    if (rep->delim) {
        const sks_delim_result *D = rep->delim;
        int64_t V = D->n_vocab;
        sks_out_map(&o, D->no_input_norm ? 4 : 3);
        if (D->no_input_norm) sks_out_kstr(&o, "note", sks_spikes_no_input_norm_note);
        sks_out_kf64(&o, "median_norm", D->median_norm);
        sks_out_kf32_array(&o, "ratio", D->ratio, 1, &V);
        sks_out_karray(&o, "top", (size_t)D->n_top);
        for (int i = 0; i < D->n_top; i++) {
            const char *pc = piece ? piece(piece_ud, D->top_ids[i]) : NULL;
            sks_out_map(&o, 3);
            sks_out_kint(&o, "id", D->top_ids[i]);
            sks_out_kf64(&o, "ratio", D->top_ratio[i]);
            sks_out_str(&o, "piece");
            sks_out_str_or_nil(&o, pc);
        }
    } else {
        sks_out_nil(&o);
    }
    return sks_out_finish(&o, path);
}

/* ---- the memory model of --max-memory (docs/scale.md) ------------------------------- */

/* Heap bytes of one spikes run: the allocations of this file (one layer's factors, the
 * screen, the eigen stage of sks__channels, the FFN inputs and outputs kept, the
 * first-token map, the delimiter route) plus what linalg's solver and the forward pass
 * report for themselves. blk channels per solver block, prec64 the f64 operator. */
static uint64_t sks__run_bytes(const sks_arch *a, const sks_spikes_opts *o, int prec64, int blk, int T) {
    /* the widest FFN analysed: a dense layer, or an MoE layer's active form (its k routed
     * experts and the shared one stacked, one f32 copy used in place) */
    const int fa = a->n_experts > 0 ? a->n_experts_used * a->d_ffn_expert + a->d_ffn_shared : 0;
    const int di = a->d_model, fi = fa > a->d_ffn ? fa : a->d_ffn, r = o->rank > 1 ? o->rank : 1;
    const uint64_t d = (uint64_t)di, f = (uint64_t)fi, L = (uint64_t)a->n_layers, V = (uint64_t)a->vocab_size;
    const uint64_t Hd = (uint64_t)a->n_heads * (uint64_t)a->head_dim, Kd = (uint64_t)a->n_kv_heads * a->head_dim;
    const uint64_t el = prec64 ? 8 : 4, cols = (uint64_t)blk * (uint64_t)r;
    uint64_t need = 3 * f * d * 4 + (prec64 ? 3 * f * d * 8 : 0);           /* G, U, D (f32, f64) */
    int bs = sks__screen_rows(prec64);
    bs = bs > 0 ? bs : 256;
    if (bs > fi) bs = fi;
    need += (uint64_t)sks_quadform_frobenius_nblocks(fi, sks__screen_rows(prec64)) * d * 8 /* partials */
            + (4 * (uint64_t)bs * f + (uint64_t)bs * d) * el;                 /* their workspace */
    need += cols * (4 + 8 + d * 8 + 2 * d * 8) + 2 * f * cols * el           /* sks__channels */
            + (prec64 ? 0 : 2 * d * cols * 4);
    need += sks_quadform_top_eigs_bytes(di, fi, blk, r, sks__krylov_block(o, prec64, di), o->krylov_dim, prec64);
    need += 2 * L * (uint64_t)T * d * 4;                                      /* FFN inputs, outputs */
    need += sks_forward_bytes(a, T);
    need += (d * Hd + Kd * d) * 8 + L * d * 8;                                /* first-token map */
    need += V * 16 + 256 * d * 4;                                             /* delimiter route */
    return need;
}

int sks_spikes_fit_memory(const sks_arch *a, sks_spikes_opts *o, int T, int n_channels, uint64_t bound,
                          uint64_t *need) {
    int prec64 = sks_spikes_precision(o->precision, a->d_model, a->d_ffn) == SKS_SPK_PREC_F64;
    const int blk0 = o->channel_block > 0 ? o->channel_block : SKS_SPK_CHANNEL_BLOCK;
    int blk = n_channels > 0 && blk0 > n_channels ? n_channels : blk0;
    if (blk < 1) blk = 1;
    *need = sks__run_bytes(a, o, prec64, blk, T);
    if (!bound) return 0;
    while (*need > bound) {
        if (blk > 1) {
            blk = blk / 2;
        } else if (prec64 && o->precision == SKS_SPK_PREC_AUTO) {
            prec64 = 0;
            blk = n_channels > 0 && blk0 > n_channels ? n_channels : blk0;
            o->precision = SKS_SPK_PREC_F32;
        } else {
            char b1[32], b2[32];
            return sks_fail(SKS_ENOMEM,
                            "--max-memory %s is too small: the spikes workspaces need at least %s for this model "
                            "(one FFN layer of %d x %d in f32 and its solver blocks; weights stay mapped)",
                            sks_fmt_bytes(bound, b1, sizeof b1), sks_fmt_bytes(*need, b2, sizeof b2), a->d_ffn,
                            a->d_model);
        }
        *need = sks__run_bytes(a, o, prec64, blk, T);
    }
    o->channel_block = blk;
    return 0;
}
