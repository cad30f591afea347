/* quantrisk.c - activation quantization risk (contract in sks_quantrisk.h). */
#include "sks_quantrisk.h"
#include "sks_out.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const sks__qnames[SKS_Q_N] = {"int8-tensor", "int8-token", "int4-tensor", "int4-token",
                                                  "fp8-e4m3"};
static const char *const sks__keepnames[SKS_QKEEP_N] = {"none", "spike", "outliers"};
static const char *const sks__sitenames[SKS_QSITE_N] = {"residual", "attn_in", "wo_in", "ffn_in", "down_in"};

const char *sks_qscheme_name(int s) { return s >= 0 && s < SKS_Q_N ? sks__qnames[s] : "?"; }
const char *sks_qkeep_name(int k) { return k >= 0 && k < SKS_QKEEP_N ? sks__keepnames[k] : "?"; }
const char *sks_qsite_name(int s) { return s >= 0 && s < SKS_QSITE_N ? sks__sitenames[s] : "?"; }

/* E4M3 (OCP 8-bit floating point spec v1.0, "E4M3"): 1 sign, 4 exponent bits (bias 7),
 * 3 mantissa bits, no infinities; normal values 2^(e-7) (1 + m/8) for e = 1..15 up to
 * 448 (S.1111.111 is NaN), subnormals m/8 2^-6 (steps of 2^-9). Rounding: to the nearest
 * multiple of the step of the binade of |x|, ties to even (rint in the default rounding
 * mode), which also carries into the next binade exactly. */
float sks_e4m3_round(float x) {
    if (isnan(x)) return x;
    double a = fabs((double)x), q;
    if (a >= SKS_E4M3_MAX) q = SKS_E4M3_MAX;
    else if (a < 0x1p-6) q = rint(a * 0x1p9) * 0x1p-9;
    else {
        int ex;
        frexp(a, &ex);                        /* a = f 2^ex, f in [0.5, 1): binade 2^(ex-1) */
        double step = ldexp(1.0, ex - 1 - 3); /* 3 mantissa bits */
        q = rint(a / step) * step;
    }
    return (float)(x < 0 ? -q : q);
}

void sks_fakequant(int s, float *x, int64_t T, int64_t n, const unsigned char *keep) {
    if (s == SKS_Q_FP8_E4M3 || s == SKS_Q_INT8_TENSOR || s == SKS_Q_INT4_TENSOR) {
        float amax = 0;
        for (int64_t i = 0; i < T * n; i++)
            if ((!keep || !keep[i % n]) && fabsf(x[i]) > amax) amax = fabsf(x[i]);
        if (!(amax > 0)) return;
        if (s == SKS_Q_FP8_E4M3) {
            const float sc = amax / SKS_E4M3_MAX;
            for (int64_t i = 0; i < T * n; i++)
                if (!keep || !keep[i % n]) x[i] = sks_e4m3_round(x[i] / sc) * sc;
            return;
        }
        const float qmax = s == SKS_Q_INT8_TENSOR ? 127.0f : 7.0f, sc = amax / qmax;
        for (int64_t i = 0; i < T * n; i++)
            if (!keep || !keep[i % n]) x[i] = fminf(fmaxf(rintf(x[i] / sc), -qmax), qmax) * sc;
        return;
    }
    const float qmax = s == SKS_Q_INT8_TOKEN ? 127.0f : 7.0f;
    for (int64_t t = 0; t < T; t++) {
        float *r = x + t * n, amax = 0;
        for (int64_t c = 0; c < n; c++)
            if ((!keep || !keep[c]) && fabsf(r[c]) > amax) amax = fabsf(r[c]);
        if (!(amax > 0)) continue;
        const float sc = amax / qmax;
        for (int64_t c = 0; c < n; c++)
            if (!keep || !keep[c]) r[c] = fminf(fmaxf(rintf(r[c] / sc), -qmax), qmax) * sc;
    }
}

void sks_qrisk_opts_default(sks_qrisk_opts *o) {
    o->keep_top = 8;
    sks_trace_opts_default(&o->trace);
    sks_ppl_opts_default(&o->ppl);
    o->end_to_end = 1;
}

/* ---- shared state of the hooks ----------------------------------------------------------- */

typedef struct {
    float v;
    int32_t c;
} sks__chan;

typedef struct {
    sks_qrisk_result *r;
    int64_t d, L, maxn;
    int keep_top;
    unsigned char *spike_mask; /* (d) */
    float *scratch;            /* (T, maxn) */
    float *absbuf;             /* (T, maxn) */
    sks__chan *chan;           /* (maxn) channel maxima, sorted */
    unsigned char *keep;       /* (maxn) */
    int32_t *top;              /* (keep_top) */
    int scheme;                /* end to end: the scheme, -1: off */
    int keep_outliers;         /* end to end */
} sks__qstate;

/* descending value, then ascending channel */
static int sks__chan_cmp(const void *pa, const void *pb) {
    const sks__chan *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->c > b->c) - (a->c < b->c);
}

/* top-k columns of x (T, n) by max_t |x[t, c]|, descending (ties: lower c first) */
static void sks__top_channels(sks__qstate *s, const float *x, int64_t T, int64_t n, int k, int32_t *top) {
    for (int64_t c = 0; c < n; c++) {
        s->chan[c].v = 0;
        s->chan[c].c = (int32_t)c;
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < n; c++)
            if (fabsf(x[t * n + c]) > s->chan[c].v) s->chan[c].v = fabsf(x[t * n + c]);
    qsort(s->chan, (size_t)n, sizeof *s->chan, sks__chan_cmp);
    for (int i = 0; i < k; i++) top[i] = s->chan[i].c;
}

/* keep mask (n) for a keep mode on x of a site: spike channels apply to d-wide
 * residual-coordinate sites (residual, attention and FFN inputs) */
static void sks__keep_mask(sks__qstate *s, int site, int mode, const float *x, int64_t T, int64_t n) {
    memset(s->keep, 0, (size_t)n);
    if (mode == SKS_QKEEP_NONE) return;
    int resid = site == SKS_QSITE_RESID || site == SKS_QSITE_ATTN || site == SKS_QSITE_FFN;
    if (resid && n == s->d)
        for (int64_t c = 0; c < n; c++) s->keep[c] = s->spike_mask[c];
    if (mode == SKS_QKEEP_OUTLIERS) {
        int k = s->keep_top < n ? s->keep_top : (int)n;
        sks__top_channels(s, x, T, n, k, s->top);
        for (int i = 0; i < k; i++) s->keep[s->top[i]] = 1;
    }
}

static int sks__site_of(int fwd_site) {
    return fwd_site == SKS_FWD_LIN_ATTN  ? SKS_QSITE_ATTN
           : fwd_site == SKS_FWD_LIN_WO  ? SKS_QSITE_WO
           : fwd_site == SKS_FWD_LIN_FFN ? SKS_QSITE_FFN
                                         : SKS_QSITE_DOWN;
}

/* where the statistics of one tensor go: a (layer, site) row, or an expert's row */
typedef struct {
    double *max_abs, *median_abs, *dyn_range; /* one value each (dyn_range may be NULL) */
    double *rel_err;                          /* (Q_N, QKEEP_N) */
    int32_t *top;                             /* (keep_top) */
} sks__qdst;

/* statistics of x (T, n) read at site: max, median, top channels, error per scheme */
static void sks__tensor_stats(sks__qstate *s, int site, const float *x, int64_t T, int64_t n, const sks__qdst *o) {
    const size_t N = (size_t)(T * n);
    double mx = 0, ss = 0;
    for (size_t i = 0; i < N; i++) {
        s->absbuf[i] = fabsf(x[i]);
        if (s->absbuf[i] > mx) mx = s->absbuf[i];
        ss += (double)x[i] * (double)x[i];
    }
    double med = sks_median_f32(s->absbuf, N);
    *o->max_abs = mx;
    *o->median_abs = med;
    if (o->dyn_range) *o->dyn_range = med > 0 ? mx / med : INFINITY;
    int k = s->keep_top < n ? s->keep_top : (int)n;
    for (int i = 0; i < s->keep_top; i++) o->top[i] = -1;
    sks__top_channels(s, x, T, n, k, o->top);
    for (int q = 0; q < SKS_Q_N; q++)
        for (int mode = 0; mode < SKS_QKEEP_N; mode++) {
            memcpy(s->scratch, x, N * sizeof(float));
            sks__keep_mask(s, site, mode, x, T, n);
            sks_fakequant(q, s->scratch, T, n, s->keep);
            double e = 0;
            for (size_t i = 0; i < N; i++) {
                double dv = (double)s->scratch[i] - (double)x[i];
                e += dv * dv;
            }
            o->rel_err[q * SKS_QKEEP_N + mode] = ss > 0 ? sqrt(e / ss) : 0.0;
        }
}

/* statistics of one site of one layer (the per-layer step); expert >= 0: the W_down
 * input of that expert of an MoE layer, into its own row */
static void sks__site_stats(sks__qstate *s, int l, int site, int expert, const float *x, int64_t T, int64_t n) {
    sks_qrisk_result *r = s->r;
    sks__qdst o;
    if (expert >= 0 && r->expert_rows > 0 && expert < r->expert_rows) {
        const size_t le = (size_t)l * (size_t)r->expert_rows + (size_t)expert;
        r->expert_tokens[le] = (int32_t)T;
        if (!r->site_dim[site]) r->site_dim[site] = (int)n;
        o = (sks__qdst){r->expert_max_abs + le, r->expert_median_abs + le, NULL,
                        r->expert_rel_err + le * SKS_Q_N * SKS_QKEEP_N, r->expert_top_channels + le * (size_t)s->keep_top};
    } else {
        const size_t ls = (size_t)l * SKS_QSITE_N + (size_t)site;
        r->site_dim[site] = (int)n;
        o = (sks__qdst){r->max_abs + ls, r->median_abs + ls, r->dyn_range + ls,
                        r->rel_err + ls * SKS_Q_N * SKS_QKEEP_N, r->top_channels + ls * (size_t)s->keep_top};
    }
    sks__tensor_stats(s, site, x, T, n, &o);
}

/* The W_down row of each MoE layer: the worst expert, the one of largest dynamic range
 * (its maximum, median and top channels), and per scheme and keep mode the largest
 * error of any expert. Experts no token reached are left out. */
static void sks__fold_experts(sks_qrisk_result *r, const sks_arch *a) {
    const int NE = r->expert_rows;
    for (int l = 0; l < r->n_layers; l++) {
        r->worst_expert[l] = -1;
        if (!sks_arch_layer_moe(a, l)) continue;
        const size_t ls = (size_t)l * SKS_QSITE_N + SKS_QSITE_DOWN, l0 = (size_t)l * (size_t)NE;
        double best = -1;
        for (int e = 0; e < NE; e++) {
            const size_t le = l0 + (size_t)e;
            if (!r->expert_tokens[le]) continue;
            double m = r->expert_max_abs[le], md = r->expert_median_abs[le], dr = md > 0 ? m / md : INFINITY;
            if (dr > best) best = dr, r->worst_expert[l] = e;
        }
        const int w = r->worst_expert[l];
        if (w < 0) continue;
        r->max_abs[ls] = r->expert_max_abs[l0 + (size_t)w];
        r->median_abs[ls] = r->expert_median_abs[l0 + (size_t)w];
        r->dyn_range[ls] = best;
        memcpy(r->top_channels + ls * (size_t)r->keep_top, r->expert_top_channels + (l0 + (size_t)w) * (size_t)r->keep_top,
               (size_t)r->keep_top * sizeof(int32_t));
        for (int j = 0; j < SKS_Q_N * SKS_QKEEP_N; j++) {
            double *dst = r->rel_err + ls * SKS_Q_N * SKS_QKEEP_N + (size_t)j;
            *dst = 0;
            for (int e = 0; e < NE; e++)
                if (r->expert_tokens[l0 + (size_t)e])
                    *dst = fmax(*dst, r->expert_rel_err[(l0 + (size_t)e) * SKS_Q_N * SKS_QKEEP_N + (size_t)j]);
        }
    }
}

static int sks__on_resid(void *ud, int block, const float *h, int T, int d) {
    sks__qstate *s = ud;
    if (block % 2 == 0 && block / 2 < s->L) sks__site_stats(s, block / 2, SKS_QSITE_RESID, -1, h, T, d);
    return 0;
}

static int sks__on_lin_stats(void *ud, int layer, int site, int expert, float *x, int T, int n) {
    sks__site_stats(ud, layer, sks__site_of(site), expert, x, T, n);
    return 0;
}

static int sks__on_lin_quant(void *ud, int layer, int site, int expert, float *x, int T, int n) {
    (void)layer;
    (void)expert;
    sks__qstate *s = ud;
    sks__keep_mask(s, sks__site_of(site), s->keep_outliers ? SKS_QKEEP_OUTLIERS : SKS_QKEEP_NONE, x, T, n);
    sks_fakequant(s->scheme, x, T, n, s->keep);
    return 0;
}

void sks_qrisk_result_free(sks_qrisk_result *r) {
    if (!r) return;
    sks_ppl_result_free(r->ppl_base);
    for (int q = 0; q < SKS_Q_N; q++)
        for (int k = 0; k < 2; k++) sks_ppl_result_free(r->ppl[q][k]);
    SKS_FREE_ALL(r->spike_channels, r->max_abs, r->median_abs, r->dyn_range, r->rel_err, r->top_channels,
                 r->expert_tokens, r->expert_max_abs, r->expert_median_abs, r->expert_rel_err,
                 r->expert_top_channels, r->worst_expert, r);
}

int sks_qrisk_run(const sks_model *m, const int32_t *ids, int n, const sks_qrisk_opts *o, sks_qrisk_result **out) {
    *out = NULL;
    const sks_arch *a = sks_model_arch(m);
    int window, stride, rc;
    if (o->keep_top < 0) return sks_fail(SKS_EARG, "quant-risk: --keep-top must be >= 0");
    if ((rc = sks_ppl_resolve(m, &o->ppl, &window, &stride))) return rc;
    const int T = window < n ? window : n, L = a->n_layers;
    const int64_t d = a->d_model, qd = (int64_t)a->n_heads * a->head_dim;
    int64_t maxn = d > a->d_ffn ? d : a->d_ffn;
    if (qd > maxn) maxn = qd;
    /* MoE layers hand each expert's W_down input to the hook (sks_moe.h) */
    if (a->d_ffn_expert > maxn) maxn = a->d_ffn_expert;
    if (a->d_ffn_shared > maxn) maxn = a->d_ffn_shared;
    sks_qrisk_result *r = calloc(1, sizeof *r);
    sks__qstate s;
    memset(&s, 0, sizeof s);
    sks_trace_result *tr = NULL;
    sks_forward *f = NULL;
    sks_ppl_ctx *c = NULL;
    if (!r) return sks_fail(SKS_ENOMEM, "quant-risk: out of memory");
    r->n_layers = L;
    r->T = T;
    r->keep_top = o->keep_top;
    const size_t LS = (size_t)L * SKS_QSITE_N;
    r->max_abs = calloc(LS, sizeof(double));
    r->median_abs = calloc(LS, sizeof(double));
    r->dyn_range = calloc(LS, sizeof(double));
    r->rel_err = calloc(LS * SKS_Q_N * SKS_QKEEP_N, sizeof(double));
    r->top_channels = calloc(LS * (size_t)(o->keep_top > 0 ? o->keep_top : 1), sizeof(int32_t));
    if (a->n_experts > 0) {
        /* every expert's W_down input, the shared expert last (sks_fwd_hooks.on_linear_in) */
        const int NE = r->expert_rows = a->n_experts + (a->d_ffn_shared > 0);
        const size_t LE = (size_t)L * (size_t)NE;
        r->n_experts = a->n_experts;
        r->expert_tokens = calloc(LE, sizeof(int32_t));
        r->expert_max_abs = calloc(LE, sizeof(double));
        r->expert_median_abs = calloc(LE, sizeof(double));
        r->expert_rel_err = calloc(LE * SKS_Q_N * SKS_QKEEP_N, sizeof(double));
        r->expert_top_channels = calloc(LE * (size_t)(o->keep_top > 0 ? o->keep_top : 1), sizeof(int32_t));
        r->worst_expert = calloc((size_t)L, sizeof(int32_t));
        if (!r->expert_tokens || !r->expert_max_abs || !r->expert_median_abs || !r->expert_rel_err ||
            !r->expert_top_channels || !r->worst_expert) {
            rc = sks_fail(SKS_ENOMEM, "quant-risk: out of memory for %d experts", NE);
            goto done;
        }
    }
    s.r = r;
    s.d = d;
    s.L = L;
    s.maxn = maxn;
    s.keep_top = o->keep_top;
    s.spike_mask = calloc((size_t)d, 1);
    s.scratch = sks_malloc_n((size_t)T, (size_t)maxn * sizeof(float));
    s.absbuf = sks_malloc_n((size_t)T, (size_t)maxn * sizeof(float));
    s.chan = malloc((size_t)maxn * sizeof *s.chan);
    s.keep = malloc((size_t)maxn);
    s.top = malloc((size_t)(o->keep_top > 0 ? o->keep_top : 1) * sizeof(int32_t));
    if (!r->max_abs || !r->median_abs || !r->dyn_range || !r->rel_err || !r->top_channels || !s.spike_mask ||
        !s.scratch || !s.absbuf || !s.chan || !s.keep || !s.top) {
        rc = sks_fail(SKS_ENOMEM, "quant-risk: out of memory for %d tokens x %lld", T, (long long)maxn);
        goto done;
    }
    /* spike channels by the trace rule on the same window */
    sks_progress("quant-risk layers", 0, 2);
    if ((rc = sks_trace_run(m, 1, &ids, &T, &o->trace, &tr))) goto done;
    r->n_spike_channels = tr->n_spike_channels;
    if (!(r->spike_channels = malloc((size_t)(tr->n_spike_channels + 1) * sizeof(int)))) {
        rc = sks_fail(SKS_ENOMEM, "quant-risk: out of memory");
        goto done;
    }
    for (int i = 0; i < tr->n_spike_channels; i++) {
        r->spike_channels[i] = tr->spike_channels[i];
        s.spike_mask[tr->spike_channels[i]] = 1;
    }
    /* per-layer statistics */
    sks_progress("quant-risk layers", 1, 2);
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = &s;
    hk.on_residual = sks__on_resid;
    hk.on_linear_in = sks__on_lin_stats;
    if ((rc = sks_forward_new(m, T, &f)) || (rc = sks_forward_run(f, ids, T, SKS_FWD_CAUSAL, &hk, NULL, 0))) goto done;
    if (r->expert_rows) sks__fold_experts(r, a);
    sks_progress("quant-risk layers", 2, 2);
    if (!o->end_to_end) goto done;
    /* end to end */
    if ((rc = sks_ppl_ctx_new(m, T, &c)) || (rc = sks_ppl_run(c, ids, n, window, stride, NULL, "quant-risk base",
                                                              &r->ppl_base)))
        goto done;
    memset(&hk, 0, sizeof hk);
    hk.ud = &s;
    hk.on_linear_in = sks__on_lin_quant;
    for (int q = 0; q < SKS_Q_N && !rc; q++)
        for (int k = 0; k < 2 && !rc; k++) {
            char stage[64];
            snprintf(stage, sizeof stage, "quant-risk %s%s", sks_qscheme_name(q), k ? " +outliers" : "");
            s.scheme = q;
            s.keep_outliers = k;
            rc = sks_ppl_run(c, ids, n, window, stride, &hk, stage, &r->ppl[q][k]);
        }
done:
    sks_trace_result_free(tr);
    sks_forward_free(f);
    sks_ppl_ctx_free(c);
    free(s.spike_mask);
    free(s.scratch);
    free(s.absbuf);
    free(s.chan);
    free(s.keep);
    free(s.top);
    if (rc) {
        sks_qrisk_result_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static void sks__ppl_entry(sks_out *w, const char *scheme, const char *keep, const sks_ppl_result *p,
                           const sks_ppl_result *base) {
    sks_out_map(w, 6);
    sks_out_kstr(w, "scheme", scheme);
    sks_out_kstr(w, "keep", keep);
    sks_out_kf64(w, "perplexity", p->ppl);
    sks_out_kf64(w, "mean_nll", p->mean_nll);
    sks_out_kf64(w, "delta_nll", p->mean_nll - base->mean_nll);
    sks_out_kint(w, "n_scored", p->n_scored);
}

int sks_qrisk_write(const sks_qrisk_result *r, const sks_model *m, const sks_qrisk_opts *o, const char *text_path,
                    const char *path) {
    if (!r || !m || !o || !path) return sks_fail(SKS_EARG, "quant-risk: nothing to write");
    sks_out w;
    sks_out_begin(&w, 13, "sinkscope.quant-risk/1", m);
    sks_out_kmap(&w, "params", 9);
    sks_out_kint(&w, "keep_top", o->keep_top);
    sks_out_spike_rule(&w, o->trace.outlier, o->trace.abs_thresh, o->trace.ratio, o->trace.min_blocks);
    sks_out_kint(&w, "window", r->ppl_base ? r->ppl_base->window : r->T);
    sks_out_kint(&w, "stride", r->ppl_base ? r->ppl_base->stride : r->T);
    sks_out_str(&w, "text");
    sks_out_str_or_nil(&w, text_path);
    sks_out_kint(&w, "stats_tokens", r->T);
    const char *const *lists[3] = {sks__sitenames, sks__qnames, sks__keepnames};
    const char *keys[3] = {"sites", "schemes", "keep_modes"};
    const int lens[3] = {SKS_QSITE_N, SKS_Q_N, SKS_QKEEP_N};
    for (int i = 0; i < 3; i++) {
        sks_out_str(&w, keys[i]);
        sks_out_array(&w, (size_t)lens[i]);
        for (int j = 0; j < lens[i]; j++) sks_out_str(&w, lists[i][j]);
    }
    sks_out_kints(&w, "spike_channels", r->spike_channels, r->n_spike_channels);
    int64_t shp[4] = {r->n_layers, SKS_QSITE_N, SKS_Q_N, SKS_QKEEP_N};
    sks_out_kf64_array(&w, "max_abs", r->max_abs, 2, shp);
    sks_out_kf64_array(&w, "median_abs", r->median_abs, 2, shp);
    sks_out_kf64_array(&w, "rel_err", r->rel_err, 4, shp);
    int64_t tshp[3] = {r->n_layers, SKS_QSITE_N, r->keep_top};
    sks_out_ki32_array(&w, "top_channels", r->top_channels, 3, tshp);
    /* dyn_range = max_abs / median_abs, kept out of the file (derivable) */
    sks_out_str(&w, "experts");
    if (r->expert_rows > 0) {
        const int64_t NE = r->expert_rows;
        int64_t eshp[4] = {r->n_layers, NE, SKS_Q_N, SKS_QKEEP_N}, etshp[3] = {r->n_layers, NE, r->keep_top};
        sks_out_map(&w, 8);
        sks_out_kint(&w, "n_experts", r->n_experts);
        sks_out_kbool(&w, "has_shared", NE > r->n_experts);
        sks_out_ki32_array(&w, "tokens", r->expert_tokens, 2, eshp);
        sks_out_kf64_array(&w, "max_abs", r->expert_max_abs, 2, eshp);
        sks_out_kf64_array(&w, "median_abs", r->expert_median_abs, 2, eshp);
        sks_out_kf64_array(&w, "rel_err", r->expert_rel_err, 4, eshp);
        sks_out_ki32_array(&w, "top_channels", r->expert_top_channels, 3, etshp);
        sks_out_ki32_array(&w, "worst", r->worst_expert, 1, eshp);
    } else
        sks_out_nil(&w);
    sks_out_str(&w, "end_to_end");
    if (r->ppl_base) {
        sks_out_array(&w, 1 + 2 * SKS_Q_N);
        sks__ppl_entry(&w, "f32", "none", r->ppl_base, r->ppl_base);
        for (int q = 0; q < SKS_Q_N; q++)
            for (int k = 0; k < 2; k++) sks__ppl_entry(&w, sks__qnames[q], k ? "outliers" : "none", r->ppl[q][k],
                                                       r->ppl_base);
    } else
        sks_out_nil(&w);
    return sks_out_finish(&w, path);
}

json_t *sks_qrisk_ppl_json(const sks_qrisk_result *r) {
    if (!r || !r->ppl_base) return NULL;
    json_t *pp = json_object();
    json_object_set_new(pp, "f32", sks_json_num(r->ppl_base->ppl));
    for (int s = 0; s < SKS_Q_N; s++) {
        json_t *e = json_object();
        json_object_set_new(e, "none", sks_json_num(r->ppl[s][0]->ppl));
        json_object_set_new(e, "outliers", sks_json_num(r->ppl[s][1]->ppl));
        json_object_set_new(pp, sks_qscheme_name(s), e);
    }
    return pp;
}

const double *sks_qrisk_err(const sks_qrisk_result *r, int l, int site) {
    return r->rel_err + ((size_t)l * SKS_QSITE_N + (size_t)site) * SKS_Q_N * SKS_QKEEP_N;
}

/* rel_err[scheme][keep] of one (Q_N, QKEEP_N) block */
static json_t *sks__qr_err_json(const double *e) {
    json_t *err = json_object();
    for (int q = 0; q < SKS_Q_N; q++) {
        json_t *ks = json_object();
        for (int k = 0; k < SKS_QKEEP_N; k++) json_object_set_new(ks, sks_qkeep_name(k), json_real(e[q * SKS_QKEEP_N + k]));
        json_object_set_new(err, sks_qscheme_name(q), ks);
    }
    return err;
}

/* the experts of MoE layer l (down_in.experts), NULL for a dense layer */
static json_t *sks__qr_experts_json(const sks_qrisk_result *r, int l) {
    if (!r->expert_rows || r->worst_expert[l] < 0) return NULL;
    json_t *a = json_array();
    for (int e = 0; e < r->expert_rows; e++) {
        const size_t le = (size_t)l * (size_t)r->expert_rows + (size_t)e;
        json_t *x = json_object();
        double mx = r->expert_max_abs[le], md = r->expert_median_abs[le];
        json_object_set_new(x, "expert", json_integer(e));
        json_object_set_new(x, "tokens", json_integer(r->expert_tokens[le]));
        json_object_set_new(x, "dynamic_range", md > 0 ? json_real(mx / md) : json_null());
        json_object_set_new(x, "max_abs", json_real(mx));
        json_object_set_new(x, "rel_err", sks__qr_err_json(r->expert_rel_err + le * SKS_Q_N * SKS_QKEEP_N));
        json_array_append_new(a, x);
    }
    return a;
}

json_t *sks_qrisk_json_summary(const sks_qrisk_result *r, const sks_model *m) {
    json_t *o = json_object(), *layers = json_array(), *sc = json_array();
    json_object_set_new(o, "schema", json_string("sinkscope.quant-risk-summary/1"));
    json_object_set_new(o, "model", json_string(sks_model_path(m)));
    json_object_set_new(o, "stats_tokens", json_integer(r->T));
    for (int i = 0; i < r->n_spike_channels; i++) json_array_append_new(sc, json_integer(r->spike_channels[i]));
    json_object_set_new(o, "spike_channels", sc);
    for (int l = 0; l < r->n_layers; l++) {
        json_t *lay = json_object();
        json_object_set_new(lay, "layer", json_integer(l));
        for (int s = 0; s < SKS_QSITE_N; s++) {
            json_t *e = json_object(), *ex = s == SKS_QSITE_DOWN ? sks__qr_experts_json(r, l) : NULL;
            json_object_set_new(e, "dynamic_range", json_real(r->dyn_range[l * SKS_QSITE_N + s]));
            json_object_set_new(e, "max_abs", json_real(r->max_abs[l * SKS_QSITE_N + s]));
            json_object_set_new(e, "rel_err", sks__qr_err_json(sks_qrisk_err(r, l, s)));
            if (ex) {
                json_object_set_new(e, "worst_expert", json_integer(r->worst_expert[l]));
                json_object_set_new(e, "experts", ex);
            }
            json_object_set_new(lay, sks_qsite_name(s), e);
        }
        json_array_append_new(layers, lay);
    }
    json_object_set_new(o, "layers", layers);
    json_t *e2e = sks_qrisk_ppl_json(r);
    if (e2e) json_object_set_new(o, "perplexity", e2e);
    return o;
}
