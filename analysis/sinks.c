/* sinks.c - sink-key geometry, query alignment and ranked sink heads (SPEC section 4).
 *
 * One instrumented forward pass per prompt keeps that prompt's x~, pre/post-RoPE q and k
 * for every layer (L * T * (d + 2 H dh + 2 Hkv dh) floats), finds the prompt's spike
 * tokens from the residual stream with the trace rule, then folds the prompt into
 * accumulators that do not grow with the number of prompts (Gram matrices of non-spike
 * queries and keys, margin sums, alpha_0 sums). Only the sink rows (spike tokens, a few
 * per prompt) and a capped sample of non-spike x~ rows are kept. Everything after the
 * passes is per (layer, head) dense f64 linear algebra of size d_h.
 */
#include "sks_sinks.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <jansson.h>
#include <lapacke.h>

#include "../linalg/sks_linalg.h"
#include "sks_forward.h"
#include "sks_out.h"

static const char *const sks__pred_names[SKS_PRED_COUNT] = {
    "alignment", "energy", "signed_proj", "margin_rope", "margin_norope", "weight_only"};

const char *sks_sinks_pred_name(int p) { return (p >= 0 && p < SKS_PRED_COUNT) ? sks__pred_names[p] : "?"; }

int sks_sinks_pred_parse(const char *name) {
    for (int p = 0; p < SKS_PRED_COUNT; p++)
        if (name && !strcmp(name, sks__pred_names[p])) return p;
    return -1;
}

void sks_sinks_opts_default(sks_sinks_opts *o) {
    memset(o, 0, sizeof *o);
    o->eps = 0.3;
    sks_spike_rule r;
    sks_spike_rule_default(&r);
    sks_spike_rule_unpack(&r, &o->outlier, &o->abs_thresh, &o->ratio, &o->min_blocks);
    o->rank_frac = 0.99;
    o->first_as_sink = 0;
    o->main_pred = SKS_PRED_MARGIN_ROPE;
    o->max_nonspike_rows = 512;
    for (int p = 0; p < SKS_PRED_COUNT; p++) o->threshold[p] = NAN;
}

/* Default thresholds (heuristics, see docs/sinks.md). An isotropic query puts the share
 * 1/d_h of its energy along any direction, so the energy-type scores (energy, weight_only)
 * use twice that; a principal cosine of 0.9 (about 26 degrees) for alignment; 0.2 for the
 * signed projection (0 for zero-mean queries). */
static double sks__default_threshold(int p, double eps, double n_eff, int dh) {
    switch (p) {
    case SKS_PRED_ALIGNMENT: return 0.9;
    case SKS_PRED_ENERGY: return 2.0 / dh;
    case SKS_PRED_SIGNED_PROJ: return 0.2;
    case SKS_PRED_WEIGHT_ONLY: return 2.0 / dh;
    default: /* margins: softmax over one sink key and n_eff equal others gives alpha_0 =
                e^m / (e^m + n_eff) = eps at m* = ln(n_eff eps / (1 - eps)) */
        return (n_eff > 0.0 && eps > 0.0 && eps < 1.0) ? log(n_eff * eps / (1.0 - eps)) : 0.0;
    }
}

/* ---- plain-array computations -------------------------------------------------------- */

int sks_sinks_pairwise_cos(int n, int d, const float *X, int64_t ldx, double *mean, double *min) {
    *mean = NAN;
    *min = NAN;
    if (n < 0 || d <= 0 || (n > 0 && !X)) return sks_fail(SKS_EARG, "sks_sinks_pairwise_cos: n %d, d %d", n, d);
    if (n < 2) return 0;
    /* the rows in f64 and their Gram matrix by one dsyrk (BLAS 3 on all threads): up to
     * 512 rows of d 4096 per layer, a naive pair loop was seconds over a 7B model */
    double *Xd = sks_malloc_n((size_t)n * (size_t)d, sizeof *Xd), *G = sks_malloc_n((size_t)n * (size_t)n, sizeof *G);
    if (!Xd || !G) {
        free(Xd);
        free(G);
        return sks_fail(SKS_ENOMEM, "sks_sinks_pairwise_cos: %d rows of %d", n, d);
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++) Xd[(size_t)i * d + c] = X[(int64_t)i * ldx + c];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, n, d, 1.0, Xd, d, 0.0, G, n);
    double sum = 0.0, mn = INFINITY;
    int64_t cnt = 0;
    for (int i = 0; i < n; i++) {
        const double ni = sqrt(G[(size_t)i * n + i]);
        if (!(ni > 0.0)) continue;
        for (int j = i + 1; j < n; j++) {
            const double nj = sqrt(G[(size_t)j * n + j]);
            if (!(nj > 0.0)) continue;
            double cs = G[(size_t)i * n + j] / (ni * nj);
            sum += cs;
            if (cs < mn) mn = cs;
            cnt++;
        }
    }
    free(Xd);
    free(G);
    if (cnt) {
        *mean = sum / (double)cnt;
        *min = mn;
    }
    return 0;
}

int sks_sinks_gram_spectrum(int n, const double *G, double *sv, double *V) {
    if (n <= 0 || !G || !sv) return sks_fail(SKS_EARG, "sks_sinks_gram_spectrum: n %d", n);
    double *A = sks_malloc_n((size_t)n * (size_t)n, sizeof *A);
    double *w = sks_malloc_n((size_t)n, sizeof *w);
    int rc = 0;
    if (!A || !w) {
        rc = sks_fail(SKS_ENOMEM, "sks_sinks_gram_spectrum");
        goto out;
    }
    memcpy(A, G, (size_t)n * (size_t)n * sizeof *A);
    if ((rc = sks_lapack_input_check("sks_sinks_gram_spectrum", A, (size_t)n * (size_t)n))) goto out;
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, V ? 'V' : 'N', 'U', n, A, n, w);
    if (info) {
        rc = sks_fail(info < 0 ? SKS_EINTERNAL : SKS_ELAPACK, "sks_sinks_gram_spectrum: %s (dsyevd info %d)",
                      info < 0 ? "internal error" : "no convergence", (int)info);
        goto out;
    }
    /* ascending eigenvalues -> descending singular values; eigenvectors are the columns */
    for (int i = 0; i < n; i++) {
        double lam = w[n - 1 - i];
        sv[i] = lam > 0.0 ? sqrt(lam) : 0.0;
        if (V)
            for (int j = 0; j < n; j++) V[(size_t)i * n + j] = A[(size_t)j * n + (n - 1 - i)];
    }
out:
    free(A);
    free(w);
    return rc;
}

/* Largest principal cosine between the first rq rows of Vq and the first rs rows of Vs
 * (both (.., dh), orthonormal rows). */
static int sks__top_cos(int dh, int rq, const double *Vq, int rs, const double *Vs, double *a) {
    *a = NAN;
    if (rq <= 0 || rs <= 0) return 0;
    int k = rq < rs ? rq : rs;
    double *c = sks_malloc_n((size_t)k, sizeof *c);
    if (!c) return sks_fail(SKS_ENOMEM, "sinks: principal cosines");
    int rc = sks_principal_cosines(dh, rq, Vq, rs, Vs, c);
    if (!rc) *a = c[0];
    free(c);
    return rc;
}

/* Right singular vectors (rows of Vt (k, n)) and singular values of rows X (m, n). */
static int sks__row_svd(int m, int n, const double *X, double *s, double *Vt) {
    int k = m < n ? m : n;
    for (int i = 0; i < n; i++) s[i] = 0.0;
    if (k == 0) return 0;
    return sks_svd(m, n, X, s, NULL, Vt);
}

int sks_sinks_alignment(int dh, int nq, const double *Q, int ns, const double *S, double frac, double *a,
                        int *rq_out, int *rs_out) {
    *a = NAN;
    if (dh <= 0 || nq < 0 || ns < 0) return sks_fail(SKS_EARG, "sks_sinks_alignment: dh %d", dh);
    double *sq = sks_malloc_n((size_t)dh, sizeof *sq), *ss = sks_malloc_n((size_t)dh, sizeof *ss);
    double *Vq = sks_malloc_n((size_t)dh * (size_t)dh, sizeof *Vq);
    double *Vs = sks_malloc_n((size_t)dh * (size_t)dh, sizeof *Vs);
    int rc = 0, rq = 0, rs = 0;
    if (!sq || !ss || !Vq || !Vs) {
        rc = sks_fail(SKS_ENOMEM, "sks_sinks_alignment");
        goto out;
    }
    if ((rc = sks__row_svd(nq, dh, Q, sq, Vq)) || (rc = sks__row_svd(ns, dh, S, ss, Vs))) goto out;
    rq = sks_effective_rank(sq, nq < dh ? nq : dh, frac);
    rs = sks_effective_rank(ss, ns < dh ? ns : dh, frac);
    rc = sks__top_cos(dh, rq, Vq, rs, Vs, a);
out:
    if (rq_out) *rq_out = rq;
    if (rs_out) *rs_out = rs;
    free(sq);
    free(ss);
    free(Vq);
    free(Vs);
    return rc;
}

void sks_sinks_energy(int dh, const double *G, const double *qsum, double sumsq, int64_t n, const double *k,
                      double *energy, double *signed_proj) {
    *energy = NAN;
    *signed_proj = NAN;
    if (n <= 0 || !(sumsq > 0.0)) return;
    double kk = 0.0, quad = 0.0, lin = 0.0;
    for (int i = 0; i < dh; i++) kk += k[i] * k[i];
    if (!(kk > 0.0)) return;
    for (int i = 0; i < dh; i++) {
        double gi = 0.0;
        for (int j = 0; j < dh; j++) gi += G[(size_t)i * dh + j] * k[j];
        quad += k[i] * gi;
        lin += qsum[i] * k[i];
    }
    /* k is taken as given direction: normalise by |k|^2 so callers may pass any length */
    *energy = quad / kk / sumsq;
    *signed_proj = (lin / sqrt(kk) / (double)n) / sqrt(sumsq / (double)n);
}

void sks_sinks_margin(int T, int dh, const float *q, int64_t ldq, const float *k, int64_t ldk,
                      const unsigned char *spike, double *sum, int64_t *count, double *n_nonsink) {
    const double scale = 1.0 / sqrt((double)dh);
    for (int t = 0; t < T; t++) {
        if (spike[t]) continue;
        const float *qt = q + (int64_t)t * ldq;
        double s_sink = 0.0, s_non = 0.0;
        int n_s = 0, n_n = 0;
        for (int u = 0; u <= t; u++) {
            const float *ku = k + (int64_t)u * ldk;
            double dot = 0.0;
            for (int i = 0; i < dh; i++) dot += (double)qt[i] * ku[i];
            if (spike[u]) {
                s_sink += dot;
                n_s++;
            } else {
                s_non += dot;
                n_n++;
            }
        }
        if (!n_s || !n_n) continue;
        *sum += (s_sink / n_s - s_non / n_n) * scale;
        *count += 1;
        *n_nonsink += n_n;
    }
}

int sks_sinks_weight_only(int d, int dh, const float *Wq_h, const float *gamma, const double *khat, double frac,
                          double *energy, double *cos) {
    *energy = NAN;
    *cos = NAN;
    if (d <= 0 || dh <= 0 || !Wq_h || !khat) return sks_fail(SKS_EARG, "sks_sinks_weight_only: d %d, dh %d", d, dh);
    double kk = 0.0;
    for (int i = 0; i < dh; i++) kk += khat[i] * khat[i];
    if (!(kk > 0.0)) return 0;
    double *M = sks_malloc_n((size_t)dh * (size_t)d, sizeof *M);
    double *s = sks_malloc_n((size_t)dh, sizeof *s);
    double *G = sks_malloc_n((size_t)dh * (size_t)dh, sizeof *G);
    double *U = sks_malloc_n((size_t)dh * (size_t)dh, sizeof *U);
    int rc = 0;
    if (!M || !s || !G || !U) {
        rc = sks_fail(SKS_ENOMEM, "sks_sinks_weight_only");
        goto out;
    }
    /* M = Wq_h diag(gamma); energy = |M^T k|^2 / (||M||_F^2 |k|^2) */
    double fro = 0.0, mtk2 = 0.0;
    for (int i = 0; i < dh; i++)
        for (int c = 0; c < d; c++) {
            double v = (double)Wq_h[(size_t)i * d + c] * (gamma ? gamma[c] : 1.0f);
            M[(size_t)i * d + c] = v;
            fro += v * v;
        }
    /* M^T k by rows of M (contiguous; each column's sum in the same order of i) */
    double *mtk = sks_calloc_n((size_t)d, sizeof *mtk);
    if (!mtk) {
        rc = sks_fail(SKS_ENOMEM, "sks_sinks_weight_only");
        goto out;
    }
    for (int i = 0; i < dh; i++)
        for (int c = 0; c < d; c++) mtk[c] += M[(size_t)i * d + c] * khat[i];
    for (int c = 0; c < d; c++) mtk2 += mtk[c] * mtk[c];
    free(mtk);
    if (!(fro > 0.0)) goto out;
    *energy = mtk2 / (fro * kk);
    /* the left singular vectors and values of M (dh x d, d >> dh) from the eigenpairs of
     * the dh x dh Gram matrix M M^T: one dsyrk (BLAS 3) instead of a bidiagonalization
     * of M (BLAS 2 over the whole matrix), ~20x faster at d 4096, dh 128; only the
     * leading subspace (99% of the energy) is used, where squaring the singular values
     * costs no accuracy */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, dh, d, 1.0, M, d, 0.0, G, dh);
    if ((rc = sks_sinks_gram_spectrum(dh, G, s, U))) goto out;
    int kmin = dh < d ? dh : d;
    int r = sks_effective_rank(s, kmin, frac);
    double proj = 0.0;
    for (int j = 0; j < r; j++) {
        double acc = 0.0;
        for (int i = 0; i < dh; i++) acc += U[(size_t)j * dh + i] * khat[i];
        proj += acc * acc;
    }
    *cos = sqrt(proj / kk);
out:
    free(M);
    free(s);
    free(G);
    free(U);
    return rc;
}

double sks_roc_auc(const double *score, const double *label, int n) {
    double num = 0.0;
    int64_t P = 0, N = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(score[i])) continue;
        if (label[i] > 0.5) P++;
        else N++;
    }
    if (!P || !N) return NAN;
    for (int i = 0; i < n; i++) {
        if (isnan(score[i]) || !(label[i] > 0.5)) continue;
        for (int j = 0; j < n; j++) {
            if (isnan(score[j]) || label[j] > 0.5) continue;
            if (score[i] > score[j]) num += 1.0;
            else if (score[i] == score[j]) num += 0.5;
        }
    }
    return num / ((double)P * (double)N);
}

void sks_sinks_prec_recall(const double *score, const double *label, int n, double thr, double *precision,
                           double *recall) {
    int64_t tp = 0, fp = 0, fn = 0;
    for (int i = 0; i < n; i++) {
        int pred = !isnan(score[i]) && score[i] >= thr;
        int pos = label[i] > 0.5;
        if (pred && pos) tp++;
        else if (pred) fp++;
        else if (pos) fn++;
    }
    *precision = (tp + fp) ? (double)tp / (double)(tp + fp) : NAN;
    *recall = (tp + fn) ? (double)tp / (double)(tp + fn) : NAN;
}

/* ---- median by selection --------------------------------------------------------------- */

/* Median of |x| over n values (n >= 1); even n averages the two middle values. */
static double sks__median_abs(const float *x, size_t n, float *buf) {
    for (size_t i = 0; i < n; i++) buf[i] = fabsf(x[i]);
    return sks_median_f32(buf, n);
}

/* ---- the pass over prompts ------------------------------------------------------------ */

typedef struct {
    const sks_sinks_opts *o;
    const unsigned char *sel;     /* (L) layers recorded, NULL = all */
    int L, d, H, Hkv, dh, T, maxT;
    int64_t qw, kw;               /* H*dh, Hkv*dh */
    /* this prompt */
    float *x;                     /* (L, maxT, d) x~ */
    float *qpre, *qpost;          /* (L, maxT, qw) */
    float *kpre, *kpost;          /* (L, maxT, kw) */
    double *alpha0_p;             /* (L, H) */
    float *absbuf;                /* (maxT * d) */
    float *peakbuf;               /* (d) channel peaks */
    int *run, *best;              /* (maxT * d) consecutive-hit runs of (t, c) */
    double *hitsum;               /* (maxT * d) signed h over hit blocks */
    int *hitcnt;                  /* (maxT * d) */
} sks__pass;

static int sks__on_residual(void *ud, int block, const float *h, int T, int d) {
    sks__pass *p = ud;
    size_t n = (size_t)T * (size_t)d;
    double med = sks__median_abs(h, n, p->absbuf);
    const sks_spike_rule rule = {p->o->outlier, p->o->abs_thresh, p->o->ratio, p->o->min_blocks};
    double thr = sks_spike_rule_threshold(&rule, med, p->o->outlier > 0 ? sks_channel_peak_median(h, T, d, p->peakbuf) : 0);
    (void)block;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(h[i]) >= thr) {
            p->run[i]++;
            if (p->run[i] > p->best[i]) p->best[i] = p->run[i];
            p->hitsum[i] += h[i];
            p->hitcnt[i]++;
        } else {
            p->run[i] = 0;
        }
    }
    return 0;
}

static int sks__on_attn_in(void *ud, int layer, const float *x, int T, int d) {
    sks__pass *p = ud;
    if (p->sel && !p->sel[layer]) return 0;
    memcpy(p->x + (size_t)layer * p->maxT * d, x, (size_t)T * d * sizeof *x);
    return 0;
}

static int sks__on_qk(void *ud, int layer, const float *q_pre, const float *k_pre, const float *q_post,
                      const float *k_post, int T, int H, int Hkv, int dh) {
    sks__pass *p = ud;
    if (H != p->H || Hkv != p->Hkv || dh != p->dh) return sks_fail(SKS_EINTERNAL, "sinks: on_qk shape");
    if (p->sel && !p->sel[layer]) return 0;
    size_t qo = (size_t)layer * p->maxT * p->qw, ko = (size_t)layer * p->maxT * p->kw;
    memcpy(p->qpre + qo, q_pre, (size_t)T * p->qw * sizeof(float));
    memcpy(p->qpost + qo, q_post, (size_t)T * p->qw * sizeof(float));
    memcpy(p->kpre + ko, k_pre, (size_t)T * p->kw * sizeof(float));
    memcpy(p->kpost + ko, k_post, (size_t)T * p->kw * sizeof(float));
    return 0;
}

static int sks__on_attn_probs(void *ud, int layer, int head, const float *A, int T) {
    sks__pass *p = ud;
    p->alpha0_p[(size_t)layer * p->H + head] = sks_alpha_j(A, T, 0);
    return 0;
}

/* Growable f32 row store. */
typedef struct {
    float *v;
    int64_t rows, cap, width;
} sks__rows;

static int sks__rows_push(sks__rows *r, const float *row) {
    if (r->rows == r->cap) {
        int64_t nc = r->cap ? 2 * r->cap : 16;
        float *nv = realloc(r->v, (size_t)nc * (size_t)r->width * sizeof *nv);
        if (!nv) return sks_fail(SKS_ENOMEM, "sinks: row store");
        r->v = nv;
        r->cap = nc;
    }
    memcpy(r->v + r->rows * r->width, row, (size_t)r->width * sizeof *row);
    r->rows++;
    return 0;
}

void sks_sinks_result_free(sks_sinks_result *r) {
    if (!r) return;
    for (int p = 0; p < SKS_PRED_COUNT; p++) free(r->pred[p]);
    SKS_FREE_ALL(r->spike_channels, r->spike_plateau, r->n_spike_tokens, r->prompt0_spike_tokens,
                 r->cos_spike_mean, r->cos_spike_min, r->cos_nonspike_mean, r->cos_nonspike_min, r->sink_r99,
                 r->nonsink_r99, r->sink_pr, r->nonsink_pr, r->sink_sv, r->nonsink_sv, r->alpha0, r->is_sink,
                 r->query_r99, r->weight_only_cos, r->rank, r->layer_done, r->layer_sinks, r);
}

/* ---- per-layer slices: merge and pack -------------------------------------------------- */

/* Every per-layer array of a result, as (array, element kind, elements per layer): layer
 * l of a field is elements [l * per, (l + 1) * per). One table, in one order, serves the
 * merge, the packing and the NaN fill of the layers a subset run skipped. */
typedef struct {
    char *base;
    int is_int;
    int per;
} sks__lfield;

enum { SKS__LF_MAX = 17 + SKS_PRED_COUNT };

static int sks__lfields(const sks_sinks_result *r, sks__lfield *f) {
    const int G = r->n_kv_heads, H = r->n_heads, Gd = r->n_kv_heads * r->head_dim;
    int n = 0;
#define SKS__LF(field, isint, per_) f[n++] = (sks__lfield){(char *)r->field, isint, per_}
    SKS__LF(cos_spike_mean, 0, 1);
    SKS__LF(cos_spike_min, 0, 1);
    SKS__LF(cos_nonspike_mean, 0, 1);
    SKS__LF(cos_nonspike_min, 0, 1);
    SKS__LF(sink_r99, 1, G);
    SKS__LF(nonsink_r99, 1, G);
    SKS__LF(sink_pr, 0, G);
    SKS__LF(nonsink_pr, 0, G);
    SKS__LF(sink_sv, 0, Gd);
    SKS__LF(nonsink_sv, 0, Gd);
    SKS__LF(alpha0, 0, H);
    SKS__LF(is_sink, 0, H);
    SKS__LF(query_r99, 0, H);
    SKS__LF(weight_only_cos, 0, H);
    SKS__LF(layer_sinks, 1, r->n_prompts);
#undef SKS__LF
    for (int p = 0; p < SKS_PRED_COUNT; p++)
        f[n++] = (sks__lfield){(char *)r->pred[p], 0, H};
    return n;
}

/* Start of layer l of field f, and its length in bytes. */
static void *sks__lslice(const sks__lfield *f, int l, size_t *bytes) {
    *bytes = (size_t)f->per * (f->is_int ? sizeof(int) : sizeof(double));
    return f->base + (size_t)l * *bytes;
}

static int sks__complete(const sks_sinks_result *r, const char *who) {
    if (!r->layer_done) return sks_fail(SKS_EARG, "%s: result without layers", who);
    for (int l = 0; l < r->n_layers; l++)
        if (!r->layer_done[l])
            return sks_fail(SKS_EARG, "%s: layer %d missing (a layer-subset result must be merged first)", who, l);
    return 0;
}

/* The prompt-wide fields every part computes from the same forward passes. */
static int sks__same_prompts(const sks_sinks_result *a, const sks_sinks_result *b) {
    if (a->n_layers != b->n_layers || a->n_heads != b->n_heads || a->n_kv_heads != b->n_kv_heads ||
        a->head_dim != b->head_dim || a->d_model != b->d_model || a->n_prompts != b->n_prompts ||
        a->n_tokens != b->n_tokens || a->n_sink_rows != b->n_sink_rows || a->n_spike_channels != b->n_spike_channels ||
        a->n_prompt0_spike_tokens != b->n_prompt0_spike_tokens || a->n_margin_queries != b->n_margin_queries ||
        memcmp(&a->n_margin_nonsink, &b->n_margin_nonsink, sizeof(double)))
        return 0;
    size_t nc = (size_t)a->n_spike_channels;
    return !memcmp(a->spike_channels, b->spike_channels, nc * sizeof(int)) &&
           !memcmp(a->spike_plateau, b->spike_plateau, nc * sizeof(double)) &&
           !memcmp(a->n_spike_tokens, b->n_spike_tokens, (size_t)a->n_prompts * sizeof(int)) &&
           !memcmp(a->prompt0_spike_tokens, b->prompt0_spike_tokens, (size_t)a->n_prompt0_spike_tokens * sizeof(int));
}

int sks_sinks_merge(sks_sinks_result *dst, const sks_sinks_result *src) {
    if (!dst || !src || !dst->layer_done || !src->layer_done) return sks_fail(SKS_EARG, "sks_sinks_merge: bad arguments");
    if (!sks__same_prompts(dst, src))
        return sks_fail(SKS_EARG, "sks_sinks_merge: the parts differ in shape or in their spike tokens");
    for (int l = 0; l < src->n_layers; l++)
        if (src->layer_done[l] && dst->layer_done[l]) return sks_fail(SKS_EARG, "sks_sinks_merge: layer %d in both parts", l);
    sks__lfield fd[SKS__LF_MAX], fs[SKS__LF_MAX];
    int nf = sks__lfields(dst, fd);
    sks__lfields(src, fs);
    for (int l = 0; l < src->n_layers; l++) {
        if (!src->layer_done[l]) continue;
        for (int i = 0; i < nf; i++) {
            size_t nb;
            void *d = sks__lslice(&fd[i], l, &nb);
            memcpy(d, sks__lslice(&fs[i], l, &nb), nb);
        }
        dst->layer_done[l] = 1;
    }
    return 0;
}

/* Packed layers: header of SKS__PK_HDR int64 (magic, L, H, Hkv, dh, d, n_prompts,
 * n_tokens, n_sink_rows, n_spike_channels, n_margin_queries, n_layers held) and the
 * f64 n_margin_nonsink and the FNV-1a digest of the spike channels, plateau and spike
 * tokens; then per held layer an int64 index and the table's slices in order. */
#define SKS__PK_MAGIC 0x534b53534e4b5331LL /* "SKSSNKS1" */
enum { SKS__PK_HDR = 12 };

static uint64_t sks__fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t sks__prompt_digest(const sks_sinks_result *r) {
    uint64_t h = 14695981039346656037ULL;
    h = sks__fnv(h, r->spike_channels, (size_t)r->n_spike_channels * sizeof(int));
    h = sks__fnv(h, r->spike_plateau, (size_t)r->n_spike_channels * sizeof(double));
    h = sks__fnv(h, r->n_spike_tokens, (size_t)r->n_prompts * sizeof(int));
    return sks__fnv(h, r->prompt0_spike_tokens, (size_t)r->n_prompt0_spike_tokens * sizeof(int));
}

static void sks__pk_header(const sks_sinks_result *r, int64_t held, int64_t *hd) {
    const int64_t v[SKS__PK_HDR] = {SKS__PK_MAGIC,     r->n_layers,         r->n_heads,          r->n_kv_heads,
                                    r->head_dim,       r->d_model,          r->n_prompts,        r->n_tokens,
                                    r->n_sink_rows,    r->n_spike_channels, r->n_margin_queries, held};
    memcpy(hd, v, sizeof v);
}

static size_t sks__layer_bytes(const sks__lfield *f, int nf) {
    size_t b = sizeof(int64_t);
    for (int i = 0; i < nf; i++) b += (size_t)f[i].per * (f[i].is_int ? sizeof(int) : sizeof(double));
    return b;
}

int sks_sinks_pack_layers(const sks_sinks_result *r, uint8_t **buf, size_t *n) {
    *buf = NULL;
    *n = 0;
    if (!r || !r->layer_done) return sks_fail(SKS_EARG, "sks_sinks_pack_layers: bad arguments");
    sks__lfield f[SKS__LF_MAX];
    int nf = sks__lfields(r, f);
    int64_t held = 0;
    for (int l = 0; l < r->n_layers; l++) held += r->layer_done[l] != 0;
    const size_t hdr = SKS__PK_HDR * sizeof(int64_t) + sizeof(double) + sizeof(uint64_t), lb = sks__layer_bytes(f, nf);
    size_t tot = hdr + (size_t)held * lb;
    uint8_t *b = malloc(tot), *p = b;
    if (!b) return sks_fail(SKS_ENOMEM, "sks_sinks_pack_layers: %zu bytes", tot);
    int64_t hd[SKS__PK_HDR];
    sks__pk_header(r, held, hd);
    uint64_t dg = sks__prompt_digest(r);
    memcpy(p, hd, sizeof hd), p += sizeof hd;
    memcpy(p, &r->n_margin_nonsink, sizeof(double)), p += sizeof(double);
    memcpy(p, &dg, sizeof dg), p += sizeof dg;
    for (int l = 0; l < r->n_layers; l++) {
        if (!r->layer_done[l]) continue;
        int64_t li = l;
        memcpy(p, &li, sizeof li), p += sizeof li;
        for (int i = 0; i < nf; i++) {
            size_t nb;
            const void *src = sks__lslice(&f[i], l, &nb);
            memcpy(p, src, nb), p += nb;
        }
    }
    *buf = b;
    *n = tot;
    return 0;
}

int sks_sinks_unpack_layers(sks_sinks_result *dst, const uint8_t *buf, size_t n) {
    if (!dst || !dst->layer_done || (!buf && n)) return sks_fail(SKS_EARG, "sks_sinks_unpack_layers: bad arguments");
    sks__lfield f[SKS__LF_MAX];
    int nf = sks__lfields(dst, f);
    const size_t hdr = SKS__PK_HDR * sizeof(int64_t) + sizeof(double) + sizeof(uint64_t), lb = sks__layer_bytes(f, nf);
    if (n < hdr) return sks_fail(SKS_EFORMAT, "sinks layers: %zu bytes, shorter than the header", n);
    int64_t hd[SKS__PK_HDR], want[SKS__PK_HDR];
    double nns;
    uint64_t dg;
    memcpy(hd, buf, sizeof hd);
    memcpy(&nns, buf + sizeof hd, sizeof nns);
    memcpy(&dg, buf + sizeof hd + sizeof nns, sizeof dg);
    int64_t held = hd[SKS__PK_HDR - 1];
    sks__pk_header(dst, held, want);
    if (hd[0] != SKS__PK_MAGIC) return sks_fail(SKS_EFORMAT, "sinks layers: not a packed sinks part");
    if (memcmp(hd, want, sizeof hd) || memcmp(&nns, &dst->n_margin_nonsink, sizeof nns) ||
        dg != sks__prompt_digest(dst))
        return sks_fail(SKS_EARG, "sinks layers: the part differs in shape or in its spike tokens");
    if (held < 0 || held > dst->n_layers || n != hdr + (size_t)held * lb)
        return sks_fail(SKS_EFORMAT, "sinks layers: %lld layers do not fill %zu bytes", (long long)held, n);
    const uint8_t *p = buf + hdr;
    for (int64_t k = 0; k < held; k++, p += lb) {
        int64_t li;
        memcpy(&li, p, sizeof li);
        if (li < 0 || li >= dst->n_layers) return sks_fail(SKS_EFORMAT, "sinks layers: layer %lld out of range", (long long)li);
        if (dst->layer_done[li]) return sks_fail(SKS_EARG, "sinks layers: layer %lld held twice", (long long)li);
    }
    p = buf + hdr;
    for (int64_t k = 0; k < held; k++) {
        int64_t li;
        memcpy(&li, p, sizeof li), p += sizeof li;
        if (dst->layer_done[li]) return sks_fail(SKS_EFORMAT, "sinks layers: layer %lld listed twice", (long long)li);
        for (int i = 0; i < nf; i++) {
            size_t nb;
            void *d = sks__lslice(&f[i], (int)li, &nb);
            memcpy(d, p, nb), p += nb;
        }
        dst->layer_done[li] = 1;
    }
    return 0;
}

static const double *sks__rank_key;
static int sks__rank_cmp(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    double x = sks__rank_key[i], y = sks__rank_key[j];
    int nx = isnan(x), ny = isnan(y);
    if (nx != ny) return nx - ny;
    if (!nx && x != y) return x > y ? -1 : 1;
    return (i > j) - (i < j);
}

/* Rank the heads by descending key (NaN last, ties by index). */
static void sks__rank(const double *key, int n, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    sks__rank_key = key;
    qsort(idx, (size_t)n, sizeof *idx, sks__rank_cmp);
    sks__rank_key = NULL;
}

/* Convert rows [r0, r0+n) of an optional tensor to f32 (zeros when absent). */
static int sks__tensor_rows(const sks_model *m, sks_role role, int layer, int64_t r0, int64_t n, int64_t cols,
                            float *out) {
    const sks_tensor *t = sks_model_tensor(m, role, layer);
    if (!t) {
        memset(out, 0, (size_t)n * (size_t)cols * sizeof *out);
        return 0;
    }
    if (t->ndim == 1) {
        /* a vector: take elements [r0, r0 + n*cols) */
        int64_t len = sks_tensor_rows(t);
        float *tmp = sks_malloc_n((size_t)len, sizeof *tmp);
        if (!tmp) return sks_fail(SKS_ENOMEM, "sinks: %s", sks_role_name(role));
        int rc = sks_tensor_rows_f32(t, 0, 1, tmp);
        if (!rc) memcpy(out, tmp + r0 * cols, (size_t)(n * cols) * sizeof *out);
        free(tmp);
        return rc;
    }
    return sks_tensor_rows_f32(t, r0, n, out);
}

int sks_sinks_classify(sks_sinks_result *r, const sks_sinks_opts *o) {
    if (!r || !o || o->main_pred < 0 || o->main_pred >= SKS_PRED_COUNT)
        return sks_fail(SKS_EARG, "sks_sinks_classify: bad arguments");
    int rc = sks__complete(r, "sks_sinks_classify");
    if (rc) return rc;
    const int L = r->n_layers, np = r->n_prompts;
    const int64_t LH = (int64_t)L * r->n_heads;
    /* per prompt, the share of all (l, h) with alpha_0 > eps; the count is an integer, so
     * the sum over layers is exact in any order */
    double sink_heads_sum = 0.0;
    for (int pi = 0; pi < np; pi++) {
        int64_t nsink_p = 0;
        for (int l = 0; l < L; l++) nsink_p += r->layer_sinks[(size_t)l * np + pi];
        sink_heads_sum += (double)nsink_p / (double)LH;
    }
    r->n_eff = r->n_margin_queries ? r->n_margin_nonsink / (double)r->n_margin_queries : 0.0;
    r->sink_ratio = 100.0 * sink_heads_sum / np;
    r->n_sink_heads = 0;
    for (int64_t i = 0; i < LH; i++) r->n_sink_heads += r->is_sink[i] > 0.5;
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        r->auc[p] = sks_roc_auc(r->pred[p], r->is_sink, (int)LH);
        r->threshold[p] =
            isnan(o->threshold[p]) ? sks__default_threshold(p, o->eps, r->n_eff, r->head_dim) : o->threshold[p];
        sks_sinks_prec_recall(r->pred[p], r->is_sink, (int)LH, r->threshold[p], &r->precision[p], &r->recall[p]);
    }
    sks__rank(r->pred[o->main_pred], (int)LH, r->rank);
    return 0;
}

/* ---- the per-layer geometry of the KV heads and heads (items of sks_parallel_for) ---- */

typedef struct {
    const sks_model *m;
    const sks_sinks_opts *o;
    sks_sinks_result *r;
    int l, d, dh, H, Hkv, group, n_prompts, wo, qkn;
    int64_t kw, nsr;
    const sks__rows *sink_k; /* this layer's sink keys */
    double *Gk, *Gq, *Vs, *qsum, *qsumsq, *kbar, *khat, *msum_r, *msum_n, *alpha_sum;
    const int64_t *kn, *qn, *mcnt_r, *mcnt_n;
    int *rs;
    const float *gamma, *qnorm;
    double *S, *sv, *Vq; /* per worker: nsr (at least 1) x dh, dh, dh x dh */
    float *wq;           /* per worker: dh x d */
} sks__geom;

/* KV head g: spectrum and effective rank of the sink keys (their right singular
 * vectors into Vs for the alignment) and of the non-sink keys' Gram matrix */
static int sks__geom_kv_head(void *ud, int g, int w) {
    sks__geom *c = ud;
    sks_sinks_result *r = c->r;
    const int dh = c->dh;
    const int64_t nsr = c->nsr;
    const size_t lg = (size_t)c->l * c->Hkv + g;
    double *S = c->S + (size_t)w * (size_t)(nsr > 0 ? nsr : 1) * dh, *sv = c->sv + (size_t)w * dh;
    for (int64_t t = 0; t < nsr; t++)
        for (int i = 0; i < dh; i++) S[(size_t)t * dh + i] = c->sink_k->v[t * c->kw + (int64_t)g * dh + i];
    int kmin = nsr < dh ? (int)nsr : dh, rc;
    if (kmin > 0) {
        if ((rc = sks__row_svd((int)nsr, dh, S, sv, c->Vs + lg * dh * dh))) return rc;
        memcpy(r->sink_sv + lg * dh, sv, (size_t)dh * sizeof(double));
        c->rs[lg] = r->sink_r99[lg] = sks_effective_rank(sv, kmin, c->o->rank_frac);
        r->sink_pr[lg] = sks_participation_ratio(sv, kmin);
    } else {
        r->sink_pr[lg] = NAN;
    }
    double *G = c->Gk + lg * dh * dh;
    for (int i = 0; i < dh; i++)
        for (int j = 0; j < i; j++) G[(size_t)i * dh + j] = G[(size_t)j * dh + i];
    if (c->kn[lg] > 0) {
        if ((rc = sks_sinks_gram_spectrum(dh, G, r->nonsink_sv + lg * dh, NULL))) return rc;
        r->nonsink_r99[lg] = sks_effective_rank(r->nonsink_sv + lg * dh, dh, c->o->rank_frac);
        r->nonsink_pr[lg] = sks_participation_ratio(r->nonsink_sv + lg * dh, dh);
    } else {
        r->nonsink_pr[lg] = NAN;
    }
    return 0;
}

/* head h: alpha_0, the query subspace and its alignment with the sink keys, energy,
 * margins, the weight-only predictor */
static int sks__geom_head(void *ud, int h, int w) {
    sks__geom *c = ud;
    sks_sinks_result *r = c->r;
    const sks_sinks_opts *o = c->o;
    const int dh = c->dh, d = c->d, g = h / c->group;
    const size_t lh = (size_t)c->l * c->H + h, lg = (size_t)c->l * c->Hkv + g;
    double *sv = c->sv + (size_t)w * dh, *Vq = c->Vq + (size_t)w * dh * dh;
    float *wq = c->wq + (size_t)w * dh * d;
    int rc;
    double *G = c->Gq + lh * dh * dh;
    for (int i = 0; i < dh; i++)
        for (int j = 0; j < i; j++) G[(size_t)i * dh + j] = G[(size_t)j * dh + i];
    r->alpha0[lh] = c->alpha_sum[lh] / c->n_prompts;
    r->is_sink[lh] = r->alpha0[lh] > o->eps ? 1.0 : 0.0;
    r->pred[SKS_PRED_ALIGNMENT][lh] = NAN;
    r->query_r99[lh] = 0.0;
    if (c->qn[lh] > 0) {
        if ((rc = sks_sinks_gram_spectrum(dh, G, sv, Vq))) return rc;
        int rq = sks_effective_rank(sv, dh, o->rank_frac);
        r->query_r99[lh] = rq;
        if ((rc = sks__top_cos(dh, rq, Vq, c->rs[lg], c->Vs + lg * dh * dh, &r->pred[SKS_PRED_ALIGNMENT][lh])))
            return rc;
    }
    sks_sinks_energy(dh, G, c->qsum + lh * dh, c->qsumsq[lh], c->qn[lh], c->kbar + (size_t)g * dh,
                     &r->pred[SKS_PRED_ENERGY][lh], &r->pred[SKS_PRED_SIGNED_PROJ][lh]);
    r->pred[SKS_PRED_MARGIN_ROPE][lh] = c->mcnt_r[lh] ? c->msum_r[lh] / (double)c->mcnt_r[lh] : NAN;
    r->pred[SKS_PRED_MARGIN_NOROPE][lh] = c->mcnt_n[lh] ? c->msum_n[lh] / (double)c->mcnt_n[lh] : NAN;
    r->pred[SKS_PRED_WEIGHT_ONLY][lh] = NAN;
    r->weight_only_cos[lh] = NAN;
    if (r->n_spike_channels > 0 && c->wo) {
        if ((rc = sks__tensor_rows(c->m, SKS_ROLE_WQ, c->l, (int64_t)h * dh, dh, d, wq))) return rc;
        if (c->qkn)
            for (int i = 0; i < dh; i++)
                for (int k = 0; k < d; k++) wq[(size_t)i * d + k] *= c->qnorm[i];
        return sks_sinks_weight_only(d, dh, wq, c->gamma, c->khat + (size_t)c->l * c->kw + (size_t)g * dh,
                                     o->rank_frac, &r->pred[SKS_PRED_WEIGHT_ONLY][lh], &r->weight_only_cos[lh]);
    }
    return 0;
}

/* ---- one prompt's per-head accumulation of a layer (items of sks_parallel_for) ---- */

typedef struct {
    int l, H, group, dh, T, nn;
    int64_t qw, kw;
    const double *dbuf; /* the nn non-spike pre-RoPE queries of the layer, (nn, qw) */
    const float *qp, *qr, *kp, *kr;
    const unsigned char *spike;
    double *Gq, *qsum, *qsumsq, *msum_r, *msum_n;
    int64_t *qn, *mcnt_r, *mcnt_n;
} sks__acc;

/* head h: the Gram matrix and sums of its non-spike queries, its margins with and
 * without RoPE (each head's arithmetic as in a sequential loop over heads) */
static int sks__acc_head(void *ud, int h, int w) {
    (void)w;
    const sks__acc *c = ud;
    const int dh = c->dh, g = h / c->group;
    const size_t lh = (size_t)c->l * c->H + h;
    if (c->nn > 0) {
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dh, c->nn, 1.0, c->dbuf + (size_t)h * dh, (int)c->qw, 1.0,
                    c->Gq + lh * dh * dh, dh);
        for (int t = 0; t < c->nn; t++) {
            const double *qv = c->dbuf + (size_t)t * c->qw + (size_t)h * dh;
            for (int i = 0; i < dh; i++) {
                c->qsum[lh * dh + i] += qv[i];
                c->qsumsq[lh] += qv[i] * qv[i];
            }
        }
        c->qn[lh] += c->nn;
    }
    double dummy = 0.0;
    sks_sinks_margin(c->T, dh, c->qr + (size_t)h * dh, c->qw, c->kr + (size_t)g * dh, c->kw, c->spike, &c->msum_r[lh],
                     &c->mcnt_r[lh], &dummy);
    sks_sinks_margin(c->T, dh, c->qp + (size_t)h * dh, c->qw, c->kp + (size_t)g * dh, c->kw, c->spike, &c->msum_n[lh],
                     &c->mcnt_n[lh], &dummy);
    return 0;
}

/* the weight-only key of KV head g: rows g dh .. (g + 1) dh of W_K (gamma n^ + beta) + b */
typedef struct {
    int d, dh, wo;
    const float *wk, *bk, *gamma, *beta, *nhat;
    double *out;
} sks__khat;

static int sks__khat_rows(void *ud, int g, int w) {
    (void)w;
    const sks__khat *c = ud;
    for (int64_t j = (int64_t)g * c->dh; j < (int64_t)(g + 1) * c->dh; j++) {
        double acc = c->bk[j];
        for (int k = 0; k < c->d && c->wo; k++)
            acc += (double)c->wk[(size_t)j * c->d + k] * ((double)c->gamma[k] * c->nhat[k] + c->beta[k]);
        c->out[j] = acc;
    }
    return 0;
}

int sks_sinks_run(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                  const sks_sinks_opts *o, sks_sinks_result **out) {
    *out = NULL;
    if (!m || n_prompts <= 0 || !prompts || !lens || !o) return sks_fail(SKS_EARG, "sinks: no prompts");
    const sks_arch *a = sks_model_arch(m);
    const int L = a->n_layers, d = a->d_model, H = a->n_heads, Hkv = a->n_kv_heads, dh = a->head_dim;
    if (L <= 0 || d <= 0 || H <= 0 || Hkv <= 0 || dh <= 0 || H % Hkv)
        return sks_fail(SKS_EARG, "sinks: bad architecture");
    const sks_spike_rule rule = {o->outlier, o->abs_thresh, o->ratio, o->min_blocks};
    int rrc = sks_spike_rule_check(&rule);
    if (rrc) return rrc;
    if (o->min_blocks < 1 || !(o->rank_frac > 0.0 && o->rank_frac <= 1.0) || o->main_pred < 0 ||
        o->main_pred >= SKS_PRED_COUNT)
        return sks_fail(SKS_EARG, "sinks: bad options");
    if (a->no_input_norms)
        sks_log(SKS_LOG_INFO,
                "sinks: %s (%s): keys and queries are read from the raw residual (after the family's q/k norm); "
                "the weight-only predictor needs the post-RMSNorm spike vector, which has no counterpart here",
                sks_model_path(m), a->family);
    int maxT = 0;
    int64_t total_tokens = 0;
    for (int i = 0; i < n_prompts; i++) {
        if (!prompts[i] || lens[i] < 2) return sks_fail(SKS_EARG, "sinks: prompt %d has fewer than 2 tokens", i);
        for (int t = 0; t < lens[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= a->vocab_size)
                return sks_fail(SKS_EARG, "sinks: prompt %d: token id %d outside the vocabulary (%d)", i,
                                prompts[i][t], a->vocab_size);
        if (lens[i] > maxT) maxT = lens[i];
        total_tokens += lens[i];
    }
    const int64_t qw = (int64_t)H * dh, kw = (int64_t)Hkv * dh, LH = (int64_t)L * H, LG = (int64_t)L * Hkv;
    const int group = H / Hkv;
    const unsigned char *sel = o->layers;
    int rc = 0;

    sks__pass P = {.o = o, .sel = sel, .L = L, .d = d, .H = H, .Hkv = Hkv, .dh = dh, .maxT = maxT, .qw = qw, .kw = kw};
    sks_forward *fw = NULL;
    sks_sinks_result *r = calloc(1, sizeof *r);
    /* accumulators */
    double *Gq = NULL, *qsum = NULL, *qsumsq = NULL, *Gk = NULL, *msum_r = NULL, *msum_n = NULL;
    double *alpha_sum = NULL, *chsum = NULL, *nonspike_usum = NULL, *dbuf = NULL;
    int64_t *qn = NULL, *kn = NULL, *mcnt_r = NULL, *mcnt_n = NULL, *chcnt = NULL, *nonspike_n = NULL;
    double nonsink_total = 0.0;
    int64_t margin_queries = 0;
    unsigned char *spike = NULL;
    sks__rows *sink_k = NULL, *sink_x = NULL, *ns_x = NULL;
    double *S = NULL, *Vs = NULL, *Vq = NULL, *sv = NULL, *khat = NULL, *kbar = NULL;
    float *wq = NULL, *wk = NULL, *bk = NULL, *gamma = NULL, *nhat = NULL, *qnorm = NULL;
    if (!r) return sks_fail(SKS_ENOMEM, "sinks: result");
    r->n_layers = L;
    r->n_heads = H;
    r->n_kv_heads = Hkv;
    r->head_dim = dh;
    r->d_model = d;
    r->n_prompts = n_prompts;
    r->n_tokens = total_tokens;

    size_t Ltd = (size_t)L * maxT * d, Ltq = (size_t)L * maxT * qw, Ltk = (size_t)L * maxT * kw, Td = (size_t)maxT * d;
    P.x = sks_malloc_n(Ltd, sizeof(float));
    P.qpre = sks_malloc_n(Ltq, sizeof(float));
    P.qpost = sks_malloc_n(Ltq, sizeof(float));
    P.kpre = sks_malloc_n(Ltk, sizeof(float));
    P.kpost = sks_malloc_n(Ltk, sizeof(float));
    P.alpha0_p = sks_calloc_n((size_t)LH, sizeof(double));
    P.absbuf = sks_malloc_n(Td, sizeof(float));
    P.peakbuf = sks_malloc_n((size_t)d, sizeof(float));
    P.run = sks_malloc_n(Td, sizeof(int));
    P.best = sks_malloc_n(Td, sizeof(int));
    P.hitsum = sks_malloc_n(Td, sizeof(double));
    P.hitcnt = sks_malloc_n(Td, sizeof(int));
    Gq = sks_calloc_n((size_t)LH * dh * dh, sizeof(double));
    qsum = sks_calloc_n((size_t)LH * dh, sizeof(double));
    qsumsq = sks_calloc_n((size_t)LH, sizeof(double));
    qn = sks_calloc_n((size_t)LH, sizeof(int64_t));
    Gk = sks_calloc_n((size_t)LG * dh * dh, sizeof(double));
    kn = sks_calloc_n((size_t)LG, sizeof(int64_t));
    msum_r = sks_calloc_n((size_t)LH, sizeof(double));
    msum_n = sks_calloc_n((size_t)LH, sizeof(double));
    mcnt_r = sks_calloc_n((size_t)LH, sizeof(int64_t));
    mcnt_n = sks_calloc_n((size_t)LH, sizeof(int64_t));
    alpha_sum = sks_calloc_n((size_t)LH, sizeof(double));
    chsum = sks_calloc_n((size_t)d, sizeof(double));
    chcnt = sks_calloc_n((size_t)d, sizeof(int64_t));
    nonspike_usum = sks_calloc_n((size_t)L * d, sizeof(double));
    nonspike_n = sks_calloc_n((size_t)L, sizeof(int64_t));
    dbuf = sks_malloc_n((size_t)maxT * (size_t)(qw > kw ? qw : kw), sizeof(double));
    spike = sks_malloc_n((size_t)maxT, 1);
    sink_k = sks_calloc_n((size_t)L, sizeof *sink_k);
    sink_x = sks_calloc_n((size_t)L, sizeof *sink_x);
    ns_x = sks_calloc_n((size_t)L, sizeof *ns_x);
    r->n_spike_tokens = sks_calloc_n((size_t)n_prompts, sizeof(int));
    r->prompt0_spike_tokens = sks_malloc_n((size_t)maxT, sizeof(int));
    r->layer_done = sks_calloc_n((size_t)L, 1);
    r->layer_sinks = sks_calloc_n((size_t)L * (size_t)n_prompts, sizeof(int));
    if (!P.x || !P.qpre || !P.qpost || !P.kpre || !P.kpost || !P.alpha0_p || !P.absbuf || !P.peakbuf || !P.run || !P.best ||
        !P.hitsum || !P.hitcnt || !Gq || !qsum || !qsumsq || !qn || !Gk || !kn || !msum_r || !msum_n || !mcnt_r ||
        !mcnt_n || !alpha_sum || !chsum || !chcnt || !nonspike_usum || !nonspike_n || !dbuf || !spike || !sink_k ||
        !sink_x || !ns_x || !r->n_spike_tokens || !r->prompt0_spike_tokens || !r->layer_done || !r->layer_sinks) {
        rc = sks_fail(SKS_ENOMEM, "sinks: workspaces for %d layers x %d tokens", L, maxT);
        goto fail;
    }
    int ns_cap = o->max_nonspike_rows > 1 ? o->max_nonspike_rows : 2;
    int64_t ns_stride = (total_tokens + ns_cap - 1) / ns_cap;
    if (ns_stride < 1) ns_stride = 1;
    for (int l = 0; l < L; l++) {
        sink_k[l].width = kw;
        sink_x[l].width = d;
        ns_x[l].width = d;
    }
    if ((rc = sks_forward_new(m, maxT, &fw))) goto fail;
    sks_fwd_hooks hk = {.ud = &P,
                        .on_residual = sks__on_residual,
                        .on_attn_in = sks__on_attn_in,
                        .on_qk = sks__on_qk,
                        .on_attn_probs = sks__on_attn_probs,
                        .want_attn_probs = 1};
    int64_t ns_seen = 0;
    /* per-head work (each prompt's accumulation, the geometry) on this many threads */
    int nw = openblas_get_num_threads();
    if (nw < 1) nw = 1;
    if (nw > 64) nw = 64;
    for (int pi = 0; pi < n_prompts; pi++) {
        const int T = lens[pi];
        P.T = T;
        size_t TD = (size_t)T * d;
        memset(P.run, 0, TD * sizeof(int));
        memset(P.best, 0, TD * sizeof(int));
        memset(P.hitsum, 0, TD * sizeof(double));
        memset(P.hitcnt, 0, TD * sizeof(int));
        sks_progress("sinks", pi, n_prompts);
        if ((rc = sks_forward_run(fw, prompts[pi], T, SKS_FWD_CAUSAL, &hk, NULL, 0))) goto fail;
        /* spike tokens and the channel profile of this prompt */
        int nspk = 0;
        for (int t = 0; t < T; t++) {
            spike[t] = (o->first_as_sink && t == 0);
            for (int c = 0; c < d; c++) {
                size_t i = (size_t)t * d + c;
                if (P.best[i] >= o->min_blocks) {
                    spike[t] = 1;
                    chsum[c] += P.hitsum[i];
                    chcnt[c] += P.hitcnt[i];
                }
            }
            if (spike[t]) {
                if (pi == 0) r->prompt0_spike_tokens[r->n_prompt0_spike_tokens++] = t;
                nspk++;
            }
        }
        r->n_spike_tokens[pi] = nspk;
        r->n_sink_rows += nspk;
        /* the queries that enter a margin and the non-sink keys they see depend on the
         * spike tokens only: counted here once for every head (n_eff), in the order
         * sks_sinks_margin would add them */
        for (int t = 0, n_s = 0, n_n = 0; t < T; t++) {
            if (spike[t]) {
                n_s++;
                continue;
            }
            n_n++;
            if (n_s) {
                margin_queries++;
                nonsink_total += n_n;
            }
        }
        /* alpha_0 and, per layer, the heads over eps in this prompt (the sink ratio) */
        for (int l = 0; l < L; l++) {
            if (sel && !sel[l]) continue;
            int nsink_l = 0;
            for (int h = 0; h < H; h++) {
                size_t i = (size_t)l * H + h;
                alpha_sum[i] += P.alpha0_p[i];
                nsink_l += P.alpha0_p[i] > o->eps;
            }
            r->layer_sinks[(size_t)l * n_prompts + pi] = nsink_l;
        }
        for (int l = 0; l < L; l++) {
            if (sel && !sel[l]) continue;
            const float *xl = P.x + (size_t)l * maxT * d;
            const float *qp = P.qpre + (size_t)l * maxT * qw, *qr = P.qpost + (size_t)l * maxT * qw;
            const float *kp = P.kpre + (size_t)l * maxT * kw, *kr = P.kpost + (size_t)l * maxT * kw;
            /* sink rows: x~ and pre-RoPE keys of spike tokens */
            for (int t = 0; t < T; t++)
                if (spike[t]) {
                    if ((rc = sks__rows_push(&sink_x[l], xl + (size_t)t * d)) ||
                        (rc = sks__rows_push(&sink_k[l], kp + (size_t)t * kw)))
                        goto fail;
                }
            /* non-spike x~: exact mean cosine through the sum of unit vectors, sampled rows
             * for the minimum */
            int64_t seen = ns_seen;
            for (int t = 0; t < T; t++) {
                if (spike[t]) continue;
                const float *x = xl + (size_t)t * d;
                double nn = 0.0;
                for (int c = 0; c < d; c++) nn += (double)x[c] * x[c];
                if (nn > 0.0) {
                    double inv = 1.0 / sqrt(nn);
                    double *us = nonspike_usum + (size_t)l * d;
                    for (int c = 0; c < d; c++) us[c] += x[c] * inv;
                    nonspike_n[l]++;
                }
                if (seen % ns_stride == 0 && ns_x[l].rows < ns_cap && (rc = sks__rows_push(&ns_x[l], x))) goto fail;
                seen++;
            }
            /* Gram matrices of non-spike queries (per head) and keys (per KV head), margins
             * with and without RoPE (per head, on worker threads) */
            int nn = 0;
            for (int t = 0; t < T; t++)
                if (!spike[t]) {
                    for (int64_t j = 0; j < qw; j++) dbuf[(size_t)nn * qw + j] = qp[(size_t)t * qw + j];
                    nn++;
                }
            sks__acc ac = {.l = l, .H = H, .group = group, .dh = dh, .T = T, .nn = nn, .qw = qw, .kw = kw,
                           .dbuf = dbuf, .qp = qp, .qr = qr, .kp = kp, .kr = kr, .spike = spike, .Gq = Gq,
                           .qsum = qsum, .qsumsq = qsumsq, .msum_r = msum_r, .msum_n = msum_n, .qn = qn,
                           .mcnt_r = mcnt_r, .mcnt_n = mcnt_n};
            if ((rc = sks_parallel_for(H, nw, sks__acc_head, &ac))) goto fail;
            if (nn > 0) {
                nn = 0;
                for (int t = 0; t < T; t++)
                    if (!spike[t]) {
                        for (int64_t j = 0; j < kw; j++) dbuf[(size_t)nn * kw + j] = kp[(size_t)t * kw + j];
                        nn++;
                    }
                for (int g = 0; g < Hkv; g++) {
                    size_t lg = (size_t)l * Hkv + g;
                    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dh, nn, 1.0, dbuf + (size_t)g * dh, (int)kw, 1.0,
                                Gk + lg * dh * dh, dh);
                    kn[lg] += nn;
                }
            }
        }
        for (int t = 0; t < T; t++) ns_seen += !spike[t];
    }
    r->n_margin_queries = margin_queries;
    r->n_margin_nonsink = nonsink_total;
    sks_progress("sinks", n_prompts, n_prompts);
    sks_forward_free(fw);
    fw = NULL;

    /* ---- spike channel profile ---- */
    for (int c = 0; c < d; c++) r->n_spike_channels += chcnt[c] > 0;
    r->spike_channels = sks_malloc_n((size_t)(r->n_spike_channels + 1), sizeof(int));
    r->spike_plateau = sks_malloc_n((size_t)(r->n_spike_channels + 1), sizeof(double));
    if (!r->spike_channels || !r->spike_plateau) {
        rc = sks_fail(SKS_ENOMEM, "sinks: spike channels");
        goto fail;
    }
    for (int c = 0, k = 0; c < d; c++)
        if (chcnt[c] > 0) {
            r->spike_channels[k] = c;
            r->spike_plateau[k] = chsum[c] / (double)chcnt[c];
            k++;
        }

    /* ---- per-layer and per-head results ---- */
    r->cos_spike_mean = sks_malloc_n((size_t)L, sizeof(double));
    r->cos_spike_min = sks_malloc_n((size_t)L, sizeof(double));
    r->cos_nonspike_mean = sks_malloc_n((size_t)L, sizeof(double));
    r->cos_nonspike_min = sks_malloc_n((size_t)L, sizeof(double));
    r->sink_r99 = sks_calloc_n((size_t)LG, sizeof(int));
    r->nonsink_r99 = sks_calloc_n((size_t)LG, sizeof(int));
    r->sink_pr = sks_calloc_n((size_t)LG, sizeof(double));
    r->nonsink_pr = sks_calloc_n((size_t)LG, sizeof(double));
    r->sink_sv = sks_calloc_n((size_t)LG * dh, sizeof(double));
    r->nonsink_sv = sks_calloc_n((size_t)LG * dh, sizeof(double));
    r->alpha0 = sks_malloc_n((size_t)LH, sizeof(double));
    r->is_sink = sks_malloc_n((size_t)LH, sizeof(double));
    r->query_r99 = sks_malloc_n((size_t)LH, sizeof(double));
    r->weight_only_cos = sks_malloc_n((size_t)LH, sizeof(double));
    r->rank = sks_malloc_n((size_t)LH, sizeof(int));
    int alloc_ok = r->cos_spike_mean && r->cos_spike_min && r->cos_nonspike_mean && r->cos_nonspike_min &&
                   r->sink_r99 && r->nonsink_r99 && r->sink_pr && r->nonsink_pr && r->sink_sv && r->nonsink_sv &&
                   r->alpha0 && r->is_sink && r->query_r99 && r->weight_only_cos && r->rank;
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        r->pred[p] = sks_malloc_n((size_t)LH, sizeof(double));
        alloc_ok = alloc_ok && r->pred[p];
    }
    int64_t nsr = r->n_sink_rows;
    /* the per-head geometry runs on worker threads, each with its own S, sv, Vq, wq */
    S = sks_malloc_n((size_t)nw * (size_t)(nsr > 0 ? nsr : 1) * dh, sizeof(double));
    Vs = sks_malloc_n((size_t)LG * dh * dh, sizeof(double));
    Vq = sks_malloc_n((size_t)nw * dh * dh, sizeof(double));
    sv = sks_malloc_n((size_t)nw * dh, sizeof(double));
    khat = sks_malloc_n((size_t)LG * dh, sizeof(double));
    kbar = sks_malloc_n((size_t)Hkv * dh, sizeof(double));
    wq = sks_malloc_n((size_t)nw * dh * d, sizeof(float));
    wk = sks_malloc_n((size_t)kw * d, sizeof(float));
    bk = sks_malloc_n((size_t)(kw > dh ? kw : dh), sizeof(float));
    qnorm = sks_malloc_n((size_t)dh, sizeof(float));
    gamma = sks_malloc_n((size_t)d * 2, sizeof(float)); /* gain, then the LayerNorm bias (GPT-2; else 0) */
    nhat = sks_calloc_n((size_t)d, sizeof(float));
    if (!alloc_ok || !S || !Vs || !Vq || !sv || !khat || !kbar || !wq || !wk || !bk || !gamma || !nhat || !qnorm) {
        rc = sks_fail(SKS_ENOMEM, "sinks: results");
        goto fail;
    }
    int *rs = sks_calloc_n((size_t)LG, sizeof(int));
    if (!rs) {
        rc = sks_fail(SKS_ENOMEM, "sinks: ranks");
        goto fail;
    }
    /* n^ = sqrt(d) w / |w| over the spike channels */
    {
        double w2 = 0.0;
        for (int k = 0; k < r->n_spike_channels; k++) w2 += r->spike_plateau[k] * r->spike_plateau[k];
        if (w2 > 0.0)
            for (int k = 0; k < r->n_spike_channels; k++)
                nhat[r->spike_channels[k]] = (float)(sqrt((double)d) * r->spike_plateau[k] / sqrt(w2));
    }
    sks__lfield lf[SKS__LF_MAX];
    int nlf = sks__lfields(r, lf);
    for (int l = 0; l < L && !rc; l++) {
        sks_progress("sinks geometry", l, L);
        if (sel && !sel[l]) {
            /* not this part's layer: NaN (zero counts) until a merge fills it */
            for (int i = 0; i < nlf; i++) {
                size_t nb;
                void *v = sks__lslice(&lf[i], l, &nb);
                if (lf[i].is_int) memset(v, 0, nb);
                else
                    for (int k = 0; k < lf[i].per; k++) ((double *)v)[k] = NAN;
            }
            continue;
        }
        r->layer_done[l] = 1;
        /* near-constancy */
        if ((rc = sks_sinks_pairwise_cos((int)sink_x[l].rows, d, sink_x[l].v, d, &r->cos_spike_mean[l],
                                         &r->cos_spike_min[l])))
            break;
        double dmy;
        if ((rc = sks_sinks_pairwise_cos((int)ns_x[l].rows, d, ns_x[l].v, d, &dmy, &r->cos_nonspike_min[l]))) break;
        {
            int64_t n = nonspike_n[l];
            double s2 = 0.0;
            for (int c = 0; c < d; c++) s2 += nonspike_usum[(size_t)l * d + c] * nonspike_usum[(size_t)l * d + c];
            /* sum_{i != j} u_i.u_j = |sum u|^2 - n; mean over unordered pairs */
            r->cos_nonspike_mean[l] = n >= 2 ? (s2 - (double)n) / ((double)n * (double)(n - 1)) : NAN;
        }
        /* weight-only key per KV head: k^ = W_K (gamma * n^ + beta) + b, gamma the family's
         * own gain (1 + w for Gemma), beta the LayerNorm bias (GPT-2; 0 for RMSNorm). Without input norms (OLMo 2) there is no post-norm spike
         * vector n^: the weight-only predictor has no counterpart and stays NaN. */
        const int wo = !a->no_input_norms;
        float *beta = gamma + d;
        if ((wo && (rc = sks_model_norm_gain(m, SKS_ROLE_ATTN_NORM, l, gamma, d))) ||
            (rc = sks__tensor_rows(m, SKS_ROLE_ATTN_NORM_B, l, 0, 1, d, beta)) ||
            (rc = sks__tensor_rows(m, SKS_ROLE_WK, l, 0, kw, d, wk)) ||
            (rc = sks__tensor_rows(m, SKS_ROLE_BK, l, 0, 1, kw, bk)))
            break;
        double *kw_hat = kbar; /* (Hkv, dh) reuse */
        sks__khat kh = {.d = d, .dh = dh, .wo = wo, .wk = wk, .bk = bk, .gamma = gamma, .beta = beta, .nhat = nhat,
                        .out = kw_hat};
        if ((rc = sks_parallel_for(Hkv, nw, sks__khat_rows, &kh))) break;
        /* Qwen3, Gemma 3: keys and queries pass a per-head RMSNorm with gains k_norm /
         * q_norm before RoPE; k^ goes through it exactly, and since the query norm only
         * rescales each token's q, M becomes diag(q_norm) W_Q[h] diag(gamma). (OLMo 2's
         * norm over the whole projection only matters for the skipped predictor.) */
        const int qkn = a->has_qk_norm && !a->qk_norm_full && wo;
        if (qkn && (rc = sks_model_norm_gain(m, SKS_ROLE_K_NORM, l, bk, dh))) break;
        if (qkn)
            for (int g = 0; g < Hkv; g++) {
                double *v = kw_hat + (size_t)g * dh, ss = 0.0;
                for (int i = 0; i < dh; i++) ss += v[i] * v[i];
                double inv = 1.0 / sqrt(ss / dh + a->norm_eps);
                for (int i = 0; i < dh; i++) v[i] *= inv * bk[i];
            }
        if (qkn && (rc = sks_model_norm_gain(m, SKS_ROLE_Q_NORM, l, qnorm, dh))) break;
        memcpy(khat + (size_t)l * kw, kw_hat, (size_t)kw * sizeof(double));
        /* keys per KV head, then (below) the heads, on worker threads */
        sks__geom gm = {.m = m, .o = o, .r = r, .l = l, .d = d, .dh = dh, .H = H, .Hkv = Hkv, .group = group,
                        .n_prompts = n_prompts, .wo = wo, .qkn = qkn, .kw = kw, .nsr = nsr, .sink_k = &sink_k[l],
                        .Gk = Gk, .Gq = Gq, .Vs = Vs, .qsum = qsum, .qsumsq = qsumsq, .kbar = kbar, .khat = khat,
                        .msum_r = msum_r, .msum_n = msum_n, .alpha_sum = alpha_sum, .kn = kn, .qn = qn,
                        .mcnt_r = mcnt_r, .mcnt_n = mcnt_n, .rs = rs, .gamma = gamma, .qnorm = qnorm, .S = S,
                        .sv = sv, .Vq = Vq, .wq = wq};
        if ((rc = sks_parallel_for(Hkv, nw, sks__geom_kv_head, &gm))) break;
        /* unit mean sink key per KV head (pre-RoPE) */
        for (int64_t j = 0; j < kw; j++) {
            double acc = 0.0;
            for (int64_t t = 0; t < nsr; t++) acc += sink_k[l].v[t * kw + j];
            kbar[j] = nsr ? acc / (double)nsr : 0.0;
        }
        rc = sks_parallel_for(H, nw, sks__geom_head, &gm);
    }
    free(rs);
    if (rc) goto fail;
    sks_progress("sinks geometry", L, L);

    /* ---- classification: here for a whole run, after the merge for layer subsets ---- */
    int whole = 1;
    for (int l = 0; l < L; l++) whole &= r->layer_done[l];
    if (whole) {
        if ((rc = sks_sinks_classify(r, o))) goto fail;
    } else {
        for (int p = 0; p < SKS_PRED_COUNT; p++)
            r->auc[p] = r->threshold[p] = r->precision[p] = r->recall[p] = NAN;
        r->n_eff = r->sink_ratio = NAN;
        for (int64_t i = 0; i < LH; i++) r->rank[i] = (int)i;
    }
    goto done;

fail:
    sks_sinks_result_free(r);
    r = NULL;
done:
    sks_forward_free(fw);
    free(P.x);
    free(P.qpre);
    free(P.qpost);
    free(P.kpre);
    free(P.kpost);
    free(P.alpha0_p);
    free(P.absbuf);
    free(P.peakbuf);
    free(P.run);
    free(P.best);
    free(P.hitsum);
    free(P.hitcnt);
    free(Gq);
    free(qsum);
    free(qsumsq);
    free(qn);
    free(Gk);
    free(kn);
    free(msum_r);
    free(msum_n);
    free(mcnt_r);
    free(mcnt_n);
    free(alpha_sum);
    free(chsum);
    free(chcnt);
    free(nonspike_usum);
    free(nonspike_n);
    free(dbuf);
    free(spike);
    for (int l = 0; l < L; l++) {
        if (sink_k) free(sink_k[l].v);
        if (sink_x) free(sink_x[l].v);
        if (ns_x) free(ns_x[l].v);
    }
    free(sink_k);
    free(sink_x);
    free(ns_x);
    free(S);
    free(Vs);
    free(Vq);
    free(sv);
    free(khat);
    free(kbar);
    free(wq);
    free(wk);
    free(bk);
    free(gamma);
    free(nhat);
    free(qnorm);
    *out = r;
    return rc;
}

/* ---- output ------------------------------------------------------------------------------ */

static void sks__write_params(sks_out *w, const sks_sinks_opts *o) {
    sks_out_map(w, 10);
    sks_out_kf64(w, "eps", o->eps);
    sks_out_spike_rule(w, o->outlier, o->abs_thresh, o->ratio, o->min_blocks);
    sks_out_kf64(w, "rank_frac", o->rank_frac);
    sks_out_kbool(w, "first_as_sink", o->first_as_sink);
    sks_out_kstr(w, "main_predictor", sks_sinks_pred_name(o->main_pred));
    sks_out_kint(w, "max_nonspike_rows", o->max_nonspike_rows);
    sks_out_kmap(w, "thresholds", SKS_PRED_COUNT);
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        sks_out_str(w, sks_sinks_pred_name(p));
        if (isnan(o->threshold[p])) sks_out_str(w, "auto");
        else sks_out_f64(w, o->threshold[p]);
    }
}

int sks_sinks_write(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o, const char *path) {
    if (!r || !m || !o || !path) return sks_fail(SKS_EARG, "sks_sinks_write: bad arguments");
    if (sks__complete(r, "sks_sinks_write")) return SKS_EARG;
    const int L = r->n_layers, H = r->n_heads, G = r->n_kv_heads, dh = r->head_dim;
    const int64_t LH = (int64_t)L * H;
    /* one int32 staging buffer for every integer array below: the longest of them */
    int64_t n32 = LH > (int64_t)L * G ? LH : (int64_t)L * G;
    if (r->n_prompts > n32) n32 = r->n_prompts;
    if (r->n_spike_channels > n32) n32 = r->n_spike_channels;
    if (r->n_prompt0_spike_tokens > n32) n32 = r->n_prompt0_spike_tokens;
    int32_t *i32 = sks_malloc_n((size_t)n32 + 1, sizeof *i32);
    if (!i32) return sks_fail(SKS_ENOMEM, "sks_sinks_write");
    sks_out w;
    sks_out_begin(&w, 12, "sinkscope.sinks/1", m);
    sks_out_str(&w, "params");
    sks__write_params(&w, o);
    sks_out_kint(&w, "n_prompts", r->n_prompts);
    sks_out_kint(&w, "n_tokens", r->n_tokens);
    sks_out_kf64(&w, "sink_ratio", r->sink_ratio);
    sks_out_kint(&w, "n_sink_heads", r->n_sink_heads);

    int64_t s1[1], s2[2], s3[3];
    sks_out_kmap(&w, "spike", 5);
    s1[0] = r->n_spike_channels;
    for (int i = 0; i < r->n_spike_channels; i++) i32[i] = r->spike_channels[i];
    sks_out_ki32_array(&w, "channels", i32, 1, s1);
    sks_out_kf64_array(&w, "plateau", r->spike_plateau, 1, s1);
    s1[0] = r->n_prompts;
    for (int i = 0; i < r->n_prompts; i++) i32[i] = r->n_spike_tokens[i];
    sks_out_ki32_array(&w, "n_spike_tokens", i32, 1, s1);
    s1[0] = r->n_prompt0_spike_tokens;
    for (int i = 0; i < r->n_prompt0_spike_tokens; i++) i32[i] = r->prompt0_spike_tokens[i];
    sks_out_ki32_array(&w, "prompt0_tokens", i32, 1, s1);
    sks_out_kint(&w, "n_sink_rows", r->n_sink_rows);

    sks_out_kmap(&w, "layers", 10);
    s1[0] = L;
    sks_out_kf64_array(&w, "cos_spike_mean", r->cos_spike_mean, 1, s1);
    sks_out_kf64_array(&w, "cos_spike_min", r->cos_spike_min, 1, s1);
    sks_out_kf64_array(&w, "cos_nonspike_mean", r->cos_nonspike_mean, 1, s1);
    sks_out_kf64_array(&w, "cos_nonspike_min", r->cos_nonspike_min, 1, s1);
    s2[0] = L;
    s2[1] = G;
    for (int64_t i = 0; i < (int64_t)L * G; i++) i32[i] = r->sink_r99[i];
    sks_out_ki32_array(&w, "sink_r99", i32, 2, s2);
    for (int64_t i = 0; i < (int64_t)L * G; i++) i32[i] = r->nonsink_r99[i];
    sks_out_ki32_array(&w, "nonsink_r99", i32, 2, s2);
    sks_out_kf64_array(&w, "sink_pr", r->sink_pr, 2, s2);
    sks_out_kf64_array(&w, "nonsink_pr", r->nonsink_pr, 2, s2);
    s3[0] = L;
    s3[1] = G;
    s3[2] = dh;
    sks_out_kf64_array(&w, "sink_sv", r->sink_sv, 3, s3);
    sks_out_kf64_array(&w, "nonsink_sv", r->nonsink_sv, 3, s3);

    sks_out_kmap(&w, "heads", 6 + SKS_PRED_COUNT);
    s2[0] = L;
    s2[1] = H;
    sks_out_kf64_array(&w, "alpha0", r->alpha0, 2, s2);
    sks_out_kf64_array(&w, "is_sink", r->is_sink, 2, s2);
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        sks_out_str(&w, sks_sinks_pred_name(p));
        sks_out_f64_array(&w, r->pred[p], 2, s2);
    }
    sks_out_kf64_array(&w, "weight_only_cos", r->weight_only_cos, 2, s2);
    sks_out_kf64_array(&w, "query_r99", r->query_r99, 2, s2);
    for (int64_t i = 0; i < LH; i++) i32[i] = (int32_t)((i % H) / (H / G));
    sks_out_ki32_array(&w, "kv_head", i32, 2, s2);
    for (int64_t i = 0; i < LH; i++) i32[i] = r->rank[i];
    s1[0] = LH;
    sks_out_ki32_array(&w, "rank", i32, 1, s1);

    sks_out_kmap(&w, "classification", 4);
    sks_out_kstr(&w, "label", "alpha0 > eps");
    sks_out_kstr(&w, "main_predictor", sks_sinks_pred_name(o->main_pred));
    sks_out_kf64(&w, "n_eff", r->n_eff);
    sks_out_kmap(&w, "predictors", SKS_PRED_COUNT);
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        sks_out_str(&w, sks_sinks_pred_name(p));
        sks_out_map(&w, 4);
        sks_out_kf64(&w, "auc", r->auc[p]);
        sks_out_kf64(&w, "threshold", r->threshold[p]);
        sks_out_kf64(&w, "precision", r->precision[p]);
        sks_out_kf64(&w, "recall", r->recall[p]);
    }
    sks_out_kmap(&w, "auc", SKS_PRED_COUNT);
    for (int p = 0; p < SKS_PRED_COUNT; p++) sks_out_kf64(&w, sks_sinks_pred_name(p), r->auc[p]);
    free(i32);
    return sks_out_finish(&w, path);
}

/* JSON numbers cannot be NaN: write null. */

int sks_sinks_write_kv_map(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o,
                           const char *path) {
    if (!r || !m || !o || !path) return sks_fail(SKS_EARG, "sks_sinks_write_kv_map: bad arguments");
    if (sks__complete(r, "sks_sinks_write_kv_map")) return SKS_EARG;
    const int L = r->n_layers, H = r->n_heads, G = r->n_kv_heads, group = H / G;
    const int mp = o->main_pred;
    const double thr = r->threshold[mp];
    json_t *root = json_object(), *layers = json_array();
    json_object_set_new(root, "schema", json_string("sinkscope.kvmap/1"));
    json_object_set_new(root, "model", json_string(sks_model_path(m)));
    json_object_set_new(root, "n_layers", json_integer(L));
    json_object_set_new(root, "n_heads", json_integer(H));
    json_object_set_new(root, "n_kv_heads", json_integer(G));
    json_object_set_new(root, "sink_positions", json_pack("[i]", 0));
    json_object_set_new(root, "eps", json_real(o->eps));
    json_object_set_new(root, "predictor", json_string(sks_sinks_pred_name(mp)));
    json_object_set_new(root, "threshold", sks_json_num(thr));
    int64_t total = 0;
    for (int l = 0; l < L; l++) {
        json_t *lay = json_object(), *heads = json_array(), *kvs = json_array();
        unsigned char *kvkeep = calloc((size_t)G, 1);
        if (!kvkeep) {
            json_decref(lay);
            json_decref(heads);
            json_decref(kvs);
            json_decref(layers);
            json_decref(root);
            return sks_fail(SKS_ENOMEM, "kv map");
        }
        for (int h = 0; h < H; h++) {
            size_t lh = (size_t)l * H + h;
            double s = r->pred[mp][lh];
            int measured = r->is_sink[lh] > 0.5, predicted = !isnan(s) && s >= thr;
            if (!measured && !predicted) continue;
            json_t *e = json_object();
            json_object_set_new(e, "head", json_integer(h));
            json_object_set_new(e, "kv_head", json_integer(h / group));
            json_object_set_new(e, "alpha0", sks_json_num(r->alpha0[lh]));
            json_object_set_new(e, "score", sks_json_num(s));
            json_object_set_new(e, "measured", json_boolean(measured));
            json_object_set_new(e, "predicted", json_boolean(predicted));
            json_array_append_new(heads, e);
            kvkeep[h / group] = 1;
            total++;
        }
        for (int g = 0; g < G; g++)
            if (kvkeep[g]) json_array_append_new(kvs, json_integer(g));
        free(kvkeep);
        json_object_set_new(lay, "layer", json_integer(l));
        json_object_set_new(lay, "heads", heads);
        json_object_set_new(lay, "kv_heads", kvs);
        json_array_append_new(layers, lay);
    }
    json_object_set_new(root, "n_keep_heads", json_integer(total));
    json_object_set_new(root, "layers", layers);
    sks_json_add_nonfinite(root);
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s) return sks_fail(SKS_ENOMEM, "%s: JSON encoding failed", path);
    size_t n = strlen(s);
    s[n] = '\0';
    char *s2 = realloc(s, n + 2);
    if (!s2) {
        free(s);
        return sks_fail(SKS_ENOMEM, "kv map");
    }
    s2[n] = '\n';
    int rc = sks_write_file_atomic(path, s2, n + 1);
    free(s2);
    return rc;
}

int sks_sinks_json_summary(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o, char **out) {
    *out = NULL;
    if (!r || !m || !o) return sks_fail(SKS_EARG, "sks_sinks_json_summary: bad arguments");
    if (sks__complete(r, "sks_sinks_json_summary")) return SKS_EARG;
    const int L = r->n_layers, H = r->n_heads, G = r->n_kv_heads, group = H / G;
    json_t *root = json_object(), *heads = json_array(), *sr = json_array(), *nr = json_array();
    json_t *auc = json_object(), *cls = json_object();
    json_object_set_new(root, "schema", json_string("sinkscope.sinks-summary/1"));
    json_object_set_new(root, "model", json_string(sks_model_path(m)));
    json_object_set_new(root, "n_prompts", json_integer(r->n_prompts));
    json_object_set_new(root, "eps", json_real(o->eps));
    json_object_set_new(root, "sink_ratio", sks_json_num(r->sink_ratio));
    json_object_set_new(root, "n_sink_heads", json_integer(r->n_sink_heads));
    json_object_set_new(root, "main_predictor", json_string(sks_sinks_pred_name(o->main_pred)));
    json_object_set_new(root, "spike_channels", sks_json_ints(r->spike_channels, r->n_spike_channels));
    for (int64_t k = 0; k < (int64_t)L * H; k++) {
        int i = r->rank[k], l = i / H, h = i % H;
        json_t *e = json_object();
        json_object_set_new(e, "layer", json_integer(l));
        json_object_set_new(e, "head", json_integer(h));
        json_object_set_new(e, "kv_head", json_integer(h / group));
        json_object_set_new(e, "alpha0", sks_json_num(r->alpha0[i]));
        json_object_set_new(e, "is_sink", json_boolean(r->is_sink[i] > 0.5));
        json_object_set_new(e, "alignment", sks_json_num(r->pred[SKS_PRED_ALIGNMENT][i]));
        json_object_set_new(e, "energy", sks_json_num(r->pred[SKS_PRED_ENERGY][i]));
        json_object_set_new(e, "signed_proj", sks_json_num(r->pred[SKS_PRED_SIGNED_PROJ][i]));
        json_object_set_new(e, "margin", sks_json_num(r->pred[o->main_pred == SKS_PRED_MARGIN_NOROPE
                                                                ? SKS_PRED_MARGIN_NOROPE
                                                                : SKS_PRED_MARGIN_ROPE][i]));
        json_object_set_new(e, "margin_rope", sks_json_num(r->pred[SKS_PRED_MARGIN_ROPE][i]));
        json_object_set_new(e, "margin_norope", sks_json_num(r->pred[SKS_PRED_MARGIN_NOROPE][i]));
        json_object_set_new(e, "weight_only_score", sks_json_num(r->pred[SKS_PRED_WEIGHT_ONLY][i]));
        json_array_append_new(heads, e);
    }
    json_object_set_new(root, "heads", heads);
    for (int l = 0; l < L; l++) {
        json_t *a = json_array(), *b = json_array();
        for (int g = 0; g < G; g++) {
            json_array_append_new(a, json_integer(r->sink_r99[(size_t)l * G + g]));
            json_array_append_new(b, json_integer(r->nonsink_r99[(size_t)l * G + g]));
        }
        json_array_append_new(sr, a);
        json_array_append_new(nr, b);
    }
    json_t *cs = json_array(), *cn = json_array();
    for (int l = 0; l < L; l++) {
        json_array_append_new(cs, sks_json_num(r->cos_spike_mean[l]));
        json_array_append_new(cn, sks_json_num(r->cos_nonspike_mean[l]));
    }
    json_object_set_new(root, "cos_spike_mean", cs);
    json_object_set_new(root, "cos_nonspike_mean", cn);
    json_object_set_new(root, "sink_key_rank", sr);
    json_object_set_new(root, "nonsink_key_rank", nr);
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        json_object_set_new(auc, sks_sinks_pred_name(p), sks_json_num(r->auc[p]));
        json_t *c = json_object();
        json_object_set_new(c, "threshold", sks_json_num(r->threshold[p]));
        json_object_set_new(c, "precision", sks_json_num(r->precision[p]));
        json_object_set_new(c, "recall", sks_json_num(r->recall[p]));
        json_object_set_new(cls, sks_sinks_pred_name(p), c);
    }
    json_object_set_new(root, "auc", auc);
    json_object_set_new(root, "at_threshold", cls);
    sks_json_add_nonfinite(root);
    char *s = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
    json_decref(root);
    if (!s) return sks_fail(SKS_ENOMEM, "sinks: JSON summary");
    *out = s;
    return 0;
}
