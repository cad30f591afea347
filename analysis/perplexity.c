/* perplexity.c - windowed perplexity (SPEC section 8, contract in sks_perplexity.h). */
#include "sks_perplexity.h"
#include "sks_out.h"

#include <math.h>
#include <stdlib.h>

struct sks_ppl_ctx {
    const sks_model *m;
    sks_forward *f;
    int max_T;
    int64_t V;
    float *logits; /* (max_T, V) */
};

void sks_ppl_opts_default(sks_ppl_opts *o) {
    o->window = 0;
    o->stride = 0;
}

int sks_ppl_resolve(const sks_model *m, const sks_ppl_opts *o, int *window, int *stride) {
    const sks_arch *a = sks_model_arch(m);
    int ctx = a->max_seq > 0 ? a->max_seq : SKS_PPL_DEFAULT_CONTEXT;
    int w = o->window > 0 ? o->window : ctx;
    int s = o->stride > 0 ? o->stride : w;
    if (o->window < 0 || o->stride < 0) return sks_fail(SKS_EARG, "perplexity: window and stride must be positive");
    if (w < 2) return sks_fail(SKS_EARG, "perplexity: window %d: at least 2 tokens are needed", w);
    if (s > w) return sks_fail(SKS_EARG, "perplexity: stride %d exceeds the window %d (tokens would go unscored)", s, w);
    *window = w;
    *stride = s;
    return 0;
}

int sks_ppl_plan(int n_tokens, int window, int stride, sks_ppl_window **out, int *n_windows) {
    *out = NULL;
    *n_windows = 0;
    if (n_tokens < 2) return sks_fail(SKS_EARG, "perplexity: %d token(s): at least 2 are needed", n_tokens);
    if (window < 2 || stride < 1 || stride > window)
        return sks_fail(SKS_EARG, "perplexity: bad window %d / stride %d", window, stride);
    /* windows begin at 0, stride, ... while the previous one ended before n_tokens */
    int n = 1;
    if (n_tokens > window) n += (n_tokens - window + stride - 1) / stride;
    sks_ppl_window *w = calloc((size_t)n, sizeof *w);
    if (!w) return sks_fail(SKS_ENOMEM, "perplexity: out of memory for %d windows", n);
    int prev_end = 0;
    for (int i = 0; i < n; i++) {
        int b = i * stride, e = b + window < n_tokens ? b + window : n_tokens;
        w[i].begin = b;
        w[i].end = e;
        w[i].first = prev_end > b + 1 ? prev_end : b + 1;
        prev_end = e;
    }
    *out = w;
    *n_windows = n;
    return 0;
}

double sks_ppl_nll(const float *z, int64_t V, int32_t id) {
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
        if (z[v] > mx) mx = z[v];
    double s = 0;
    for (int64_t v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return mx + log(s) - (double)z[id];
}

void sks_ppl_ctx_free(sks_ppl_ctx *c) {
    if (!c) return;
    sks_forward_free(c->f);
    free(c->logits);
    free(c);
}

int sks_ppl_ctx_new(const sks_model *m, int max_T, sks_ppl_ctx **out) {
    *out = NULL;
    sks_ppl_ctx *c = calloc(1, sizeof *c);
    if (!c) return sks_fail(SKS_ENOMEM, "perplexity: out of memory");
    c->m = m;
    c->max_T = max_T;
    c->V = sks_model_arch(m)->vocab_size;
    int rc = sks_forward_new(m, max_T, &c->f);
    if (!rc && !(c->logits = sks_malloc_n((size_t)max_T, (size_t)c->V * sizeof(float))))
        rc = sks_fail(SKS_ENOMEM, "perplexity: out of memory for %d x %lld logits", max_T, (long long)c->V);
    if (rc) {
        sks_ppl_ctx_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int sks_ppl_window_nll(sks_ppl_ctx *c, const int32_t *ids, sks_ppl_window *w, const sks_fwd_hooks *hooks) {
    const int T = w->end - w->begin;
    if (T < 2 || T > c->max_T || w->first <= w->begin || w->first > w->end)
        return sks_fail(SKS_EARG, "perplexity: window [%d, %d) scoring from %d does not fit %d tokens", w->begin,
                        w->end, w->first, c->max_T);
    int rc = sks_forward_run(c->f, ids + w->begin, T, SKS_FWD_CAUSAL, hooks, c->logits, 0);
    if (rc) return rc;
    double s = 0;
    for (int t = w->first; t < w->end; t++) {
        const float *z = c->logits + (int64_t)(t - 1 - w->begin) * c->V;
        double nll = sks_ppl_nll(z, c->V, ids[t]);
        if (!isfinite(nll))
            return sks_fail(SKS_EUNSUPPORTED, "perplexity: non-finite NLL at token %d (logits of position %d)", t, t - 1);
        s += nll;
    }
    w->nll_sum = s;
    return 0;
}

void sks_ppl_result_free(sks_ppl_result *r) {
    if (!r) return;
    free(r->windows);
    free(r);
}

int sks_ppl_run(sks_ppl_ctx *c, const int32_t *ids, int n, int window, int stride, const sks_fwd_hooks *hooks,
                const char *stage, sks_ppl_result **out) {
    *out = NULL;
    if (!c || !ids) return sks_fail(SKS_EARG, "sks_ppl_run: bad arguments");
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= c->V)
            return sks_fail(SKS_EARG, "perplexity: token id %d at position %d outside the vocabulary [0, %lld)",
                            (int)ids[t], t, (long long)c->V);
    sks_ppl_result *r = calloc(1, sizeof *r);
    if (!r) return sks_fail(SKS_ENOMEM, "perplexity: out of memory");
    int rc = sks_ppl_plan(n, window, stride, &r->windows, &r->n_windows);
    if (rc) {
        free(r);
        return rc;
    }
    r->n_tokens = n;
    r->window = window;
    r->stride = stride;
    if (!stage) stage = "perplexity";
    for (int i = 0; i < r->n_windows && !rc; i++) {
        sks_progress(stage, i, r->n_windows);
        sks_ppl_window *w = &r->windows[i];
        if (!(rc = sks_ppl_window_nll(c, ids, w, hooks))) {
            r->nll_sum += w->nll_sum;
            r->n_scored += w->end - w->first;
        }
    }
    if (rc) {
        sks_ppl_result_free(r);
        return rc;
    }
    sks_progress(stage, r->n_windows, r->n_windows);
    r->mean_nll = r->nll_sum / (double)r->n_scored;
    r->ppl = exp(r->mean_nll);
    *out = r;
    return 0;
}

int sks_ppl_write(const sks_ppl_result *r, const sks_model *m, const char *text_path, const char *path) {
    if (!r || !m || !path) return sks_fail(SKS_EARG, "perplexity: nothing to write");
    sks_out w;
    sks_out_begin(&w, 10, "sinkscope.perplexity/1", m);
    sks_out_kmap(&w, "params", 3);
    sks_out_kint(&w, "window", r->window);
    sks_out_kint(&w, "stride", r->stride);
    sks_out_str(&w, "text");
    sks_out_str_or_nil(&w, text_path);
    sks_out_kint(&w, "n_tokens", r->n_tokens);
    sks_out_kint(&w, "n_scored", r->n_scored);
    sks_out_kf64(&w, "nll_sum", r->nll_sum);
    sks_out_kf64(&w, "mean_nll", r->mean_nll);
    sks_out_kf64(&w, "perplexity", r->ppl);
    int32_t *iv = malloc((size_t)r->n_windows * 3 * sizeof *iv);
    double *nl = malloc((size_t)r->n_windows * sizeof *nl);
    if (!iv || !nl) {
        free(iv);
        free(nl);
        sks_out_free(&w);
        return sks_fail(SKS_ENOMEM, "perplexity: out of memory");
    }
    for (int i = 0; i < r->n_windows; i++) {
        iv[3 * i] = r->windows[i].begin;
        iv[3 * i + 1] = r->windows[i].end;
        iv[3 * i + 2] = r->windows[i].first;
        nl[i] = r->windows[i].nll_sum;
    }
    int64_t shp[2] = {r->n_windows, 3};
    sks_out_ki32_array(&w, "windows", iv, 2, shp);
    sks_out_kf64_array(&w, "window_nll_sum", nl, 1, shp);
    free(iv);
    free(nl);
    return sks_out_finish(&w, path);
}
