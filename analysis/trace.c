/* trace.c - residual-stream statistics, spike channels, lifecycles and measured
 * attention sinks (SPEC section 2, contract in sks_trace.h).
 *
 * Prompt 0 runs twice. Pass 1 (with attention probabilities) computes, per block b:
 * max |h_b|, the exact median of |h_b| over all (t, c) (selection on a copy), the top-k
 * entries, max_t |h_b[t, c]| per channel, and per (t, c) the length of the current run
 * of consecutive blocks with |h_b[t, c]| >= max(ratio * median_b, abs); a pair whose run
 * reaches min_blocks is "qualified". Its channel is a spike channel, its token a spike
 * token. The lifecycles follow from h_b[t, c] of the qualified pairs at every block:
 * read from a copy of the residual stream that pass 1 keeps when it needs at most
 * o->keep_bytes (or --residual keeps it anyway); otherwise pass 2 (no attention
 * probabilities) recomputes them, and memory stays O(T d) plus O(pairs * blocks) at the
 * price of one extra forward pass over prompt 0.
 *
 * Lifecycle of one pair, with v_b = h_b[t, c] and v_{-1} = 0:
 *   inc_b = |v_b| - |v_{b-1}|, main step-up = argmax_b inc_b, step-up blocks: inc_b >=
 *   step_frac * inc_main. Step-down blocks (only after the main step-up): with D the
 *   largest decrease |v_{b-1}| - |v_b| after it, blocks whose decrease is >= step_frac *
 *   D, provided D itself is >= step_frac * inc_main (a plateau that drifts down by a
 *   few percent has no step-down).
 *
 * Attention, every prompt: alpha_j = sum_{i>=j} A[i, j] / (T - j) (Gu et al.) per layer
 * and head, j < n_alpha, averaged over prompts; sink ratio = percentage of (layer, head)
 * pairs with alpha_0 > eps, averaged over prompts.
 */
#include "sks_trace.h"
#include "sks_forward.h"
#include "sks_out.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* At most this many (token, channel) lifecycles are kept (lowest token, then channel
 * first); a trace with silly thresholds would otherwise qualify every pair. */
#define SKS__MAX_LIFECYCLES 4096
/* Pass 1 keeps the whole residual stream of prompt 0 ((2L+1) T d floats) by default
 * when it needs at most this many bytes, which saves pass 2. */
#define SKS__TRACE_KEEP_BYTES ((uint64_t)128 << 20)

void sks_trace_opts_rule(const sks_trace_opts *o, sks_spike_rule *r) {
    r->outlier = o->outlier;
    r->abs_thresh = o->abs_thresh;
    r->ratio = o->ratio;
    r->min_blocks = o->min_blocks;
}

void sks_trace_opts_set_rule(sks_trace_opts *o, const sks_spike_rule *r) {
    sks_spike_rule_unpack(r, &o->outlier, &o->abs_thresh, &o->ratio, &o->min_blocks);
}

void sks_trace_opts_default(sks_trace_opts *o) {
    sks_spike_rule r;
    sks_spike_rule_default(&r);
    sks_trace_opts_set_rule(o, &r);
    o->topk = 8;
    o->step_frac = 0.25;
    o->eps = 0.3;
    o->n_alpha = 4;
    o->keep_residual = 0;
    o->keep_bytes = SKS__TRACE_KEEP_BYTES;
}

const char *sks_block_kind_name(int kind) {
    switch (kind) {
    case SKS_BLOCK_EMBED: return "embed";
    case SKS_BLOCK_ATTN: return "attn";
    case SKS_BLOCK_FFN: return "ffn";
    default: return "?";
    }
}

/* ---- exact median by selection --------------------------------------------------- */


/* ---- state ------------------------------------------------------------------------- */

typedef struct {
    const sks_trace_opts *o;
    int d, n_blocks, L, H, T;
    int pass;                 /* 1 or 2 on prompt 0; 0 on other prompts */
    sks_trace_result *r;
    float *absbuf;            /* (T d) |h| copy for the median */
    float *peakbuf;           /* (d) channel peaks for their median */
    uint16_t *run;            /* (T d) current run length */
    uint8_t *qual;            /* (T d) qualified pairs */
    int n_pairs;
    int *pair_t, *pair_c;     /* (n_pairs) */
    float *pair_vals;         /* (n_pairs, n_blocks) */
    float *resid;             /* (n_blocks, T, d) prompt 0's residual stream, or NULL */
    int own_resid;            /* resid is trace's own copy (else the result's --residual) */
    double *alpha_sum;        /* (L, H, n_alpha) sum over prompts */
    int *alpha_cnt;           /* (n_alpha) prompts with T > j */
    int sinks_this_prompt;
} sks__tstate;

static int sks__on_residual(void *ud, int b, const float *h, int T, int d) {
    sks__tstate *s = ud;
    const sks_trace_opts *o = s->o;
    const size_t n = (size_t)T * (size_t)d;
    if (s->pass == 2) {
        for (int p = 0; p < s->n_pairs; p++)
            s->pair_vals[(size_t)p * s->n_blocks + b] = h[(size_t)s->pair_t[p] * d + s->pair_c[p]];
        return 0;
    }
    if (s->resid) memcpy(s->resid + (size_t)b * n, h, n * sizeof(float));
    sks_trace_block *blk = &s->r->blocks[b];
    blk->block = b;
    blk->kind = sks_block_kind(b);
    blk->layer = sks_block_layer(b);
    float *cm = s->r->channel_max + (size_t)b * d;
    for (int c = 0; c < d; c++) cm[c] = 0;
    /* top-k by |value|, first occurrence (row-major) wins ties */
    int k = 0;
    sks_trace_entry *top = blk->top;
    double mx = -1;
    for (int t = 0; t < T; t++) {
        const float *row = h + (size_t)t * d;
        for (int c = 0; c < d; c++) {
            float a = fabsf(row[c]);
            s->absbuf[(size_t)t * d + c] = a;
            if (a > cm[c]) cm[c] = a;
            if (a > mx) mx = a;
            if (k < o->topk || a > fabsf(top[k - 1].value)) {
                int pos = k < o->topk ? k++ : k - 1;
                while (pos > 0 && fabsf(top[pos - 1].value) < a) {
                    top[pos] = top[pos - 1];
                    pos--;
                }
                top[pos].token = t;
                top[pos].channel = c;
                top[pos].value = row[c];
            }
        }
    }
    blk->n_top = k;
    blk->max_abs = mx;
    blk->top_token = top[0].token;
    blk->top_channel = top[0].channel;
    blk->median_abs = sks_median_f32(s->absbuf, n);
    blk->spike_score = blk->median_abs > 0 ? blk->max_abs / blk->median_abs : INFINITY;
    memcpy(s->peakbuf, cm, (size_t)d * sizeof *cm);
    blk->peak_median = sks_median_f32(s->peakbuf, (size_t)d);
    /* runs of consecutive blocks above the spike rule */
    sks_spike_rule rule;
    sks_trace_opts_rule(o, &rule);
    double thr = blk->threshold = sks_spike_rule_threshold(&rule, blk->median_abs, blk->peak_median);
    for (size_t i = 0; i < n; i++) {
        if ((double)fabsf(h[i]) >= thr) {
            if (s->run[i] < UINT16_MAX) s->run[i]++;
            if (s->run[i] >= o->min_blocks) s->qual[i] = 1;
        } else {
            s->run[i] = 0;
        }
    }
    return 0;
}

static int sks__on_probs(void *ud, int l, int head, const float *A, int T) {
    sks__tstate *s = ud;
    int na = s->o->n_alpha;
    for (int j = 0; j < na && j < T; j++) {
        double alpha = sks_alpha_j(A, T, j);
        s->alpha_sum[((size_t)l * s->H + head) * na + j] += alpha;
        if (j == 0 && alpha > s->o->eps) s->sinks_this_prompt++;
    }
    return 0;
}

/* ---- lifecycles ------------------------------------------------------------------ */

static int sks__lifecycle(sks_lifecycle *lc, const float *v, int nb, double step_frac) {
    double *inc = malloc((size_t)nb * sizeof *inc);
    lc->up_blocks = malloc((size_t)nb * sizeof(int));
    lc->down_blocks = malloc((size_t)nb * sizeof(int));
    lc->values = malloc((size_t)nb * sizeof(float));
    if (!inc || !lc->up_blocks || !lc->down_blocks || !lc->values) {
        free(inc);
        return sks_fail(SKS_ENOMEM, "trace: out of memory for lifecycles");
    }
    memcpy(lc->values, v, (size_t)nb * sizeof(float));
    int main_up = 0;
    lc->peak_abs = 0;
    for (int b = 0; b < nb; b++) {
        double prev = b ? fabs((double)v[b - 1]) : 0.0, cur = fabs((double)v[b]);
        inc[b] = cur - prev;
        if (inc[b] > inc[main_up]) main_up = b;
        if (cur > lc->peak_abs) lc->peak_abs = cur;
    }
    lc->main_up = main_up;
    lc->n_up = lc->n_down = 0;
    double up_thr = step_frac * inc[main_up];
    for (int b = 0; b < nb; b++)
        if (inc[b] > 0 && inc[b] >= up_thr) lc->up_blocks[lc->n_up++] = b;
    double D = 0;
    for (int b = main_up + 1; b < nb; b++)
        if (-inc[b] > D) D = -inc[b];
    if (D > 0 && D >= up_thr)
        for (int b = main_up + 1; b < nb; b++)
            if (-inc[b] >= step_frac * D) lc->down_blocks[lc->n_down++] = b;
    int last_up = lc->up_blocks[lc->n_up - 1];
    int first_down = nb;
    for (int i = 0; i < lc->n_down; i++)
        if (lc->down_blocks[i] > last_up) {
            first_down = lc->down_blocks[i];
            break;
        }
    lc->plateau_first = last_up;
    lc->plateau_last = first_down - 1;
    free(inc);
    return 0;
}

/* ---- driver ------------------------------------------------------------------------ */

void sks_trace_result_free(sks_trace_result *r) {
    if (!r) return;
    if (r->blocks)
        for (int b = 0; b < r->n_blocks; b++) free(r->blocks[b].top);
    if (r->lifecycles)
        for (int i = 0; i < r->n_lifecycles; i++) {
            free(r->lifecycles[i].up_blocks);
            free(r->lifecycles[i].down_blocks);
            free(r->lifecycles[i].values);
        }
    SKS_FREE_ALL(r->blocks, r->spike_channels, r->spike_tokens, r->lifecycles, r->alpha, r->channel_max,
                 r->tokens, r->prompt_lens, r->sink_ratio_per_prompt, r->residual, r->moe_experts,
                 r->moe_weights, r);
}

const int *sks_trace_route(const sks_trace_result *r, int layer, int token, const float **weights) {
    if (weights) *weights = NULL;
    if (!r || r->moe_k <= 0 || !r->moe_experts || layer < 0 || layer >= r->n_layers || token < 0 || token >= r->n_tokens)
        return NULL;
    size_t o = ((size_t)layer * (size_t)r->n_tokens + (size_t)token) * (size_t)r->moe_k;
    if (r->moe_experts[o] < 0) return NULL;
    if (weights) *weights = r->moe_weights + o;
    return r->moe_experts + o;
}

/* prompt 0's routing (pass 1) */
static int sks__on_route(void *ud, int layer, const int *ex, const float *w, const float *logits, int T, int k, int E) {
    sks__tstate *s = ud;
    (void)logits;
    (void)E;
    sks_trace_result *r = s->r;
    if (s->pass != 1 || !r->moe_experts || k != r->moe_k || T != r->n_tokens) return 0;
    memcpy(r->moe_experts + (size_t)layer * T * k, ex, (size_t)T * k * sizeof(int));
    memcpy(r->moe_weights + (size_t)layer * T * k, w, (size_t)T * k * sizeof(float));
    return 0;
}

static void sks__tstate_free(sks__tstate *s) {
    if (s->own_resid) free(s->resid);
    SKS_FREE_ALL(s->absbuf, s->peakbuf, s->run, s->qual, s->pair_t, s->pair_c, s->pair_vals, s->alpha_sum,
                 s->alpha_cnt);
}

/* The spike channels and tokens of the qualified (token, channel) pairs of prompt 0,
 * and the pairs whose lifecycles pass 2 records (SKS__MAX_LIFECYCLES at most). */
static int sks__spike_pairs(sks__tstate *s, sks_trace_result *r, int T0, int d, int nb) {
    uint8_t *chan = calloc((size_t)d, 1), *tokm = calloc((size_t)T0, 1);
    size_t npairs = 0;
    for (int t = 0; chan && tokm && t < T0; t++)
        for (int c = 0; c < d; c++)
            if (s->qual[(size_t)t * d + c]) {
                chan[c] = tokm[t] = 1;
                npairs++;
            }
    for (int c = 0; chan && c < d; c++) r->n_spike_channels += chan[c];
    for (int t = 0; tokm && t < T0; t++) r->n_spike_tokens += tokm[t];
    if (npairs > SKS__MAX_LIFECYCLES) {
        sks_log(SKS_LOG_WARN, "trace: %zu (token, channel) pairs qualify; keeping the first %d lifecycles", npairs,
                SKS__MAX_LIFECYCLES);
        npairs = SKS__MAX_LIFECYCLES;
        r->lifecycles_truncated = 1;
    }
    r->spike_channels = malloc((size_t)(r->n_spike_channels + 1) * sizeof(int));
    r->spike_tokens = malloc((size_t)(r->n_spike_tokens + 1) * sizeof(int));
    s->pair_t = malloc((npairs + 1) * sizeof(int));
    s->pair_c = malloc((npairs + 1) * sizeof(int));
    s->pair_vals = sks_malloc_n(npairs + 1, (size_t)nb * sizeof(float));
    int rc = 0;
    if (!chan || !tokm || !r->spike_channels || !r->spike_tokens || !s->pair_t || !s->pair_c || !s->pair_vals) {
        rc = sks_fail(SKS_ENOMEM, "trace: out of memory");
    } else {
        int k = 0;
        for (int c = 0; c < d; c++)
            if (chan[c]) r->spike_channels[k++] = c;
        k = 0;
        for (int t = 0; t < T0; t++)
            if (tokm[t]) r->spike_tokens[k++] = t;
        for (int t = 0; t < T0 && (size_t)s->n_pairs < npairs; t++)
            for (int c = 0; c < d && (size_t)s->n_pairs < npairs; c++)
                if (s->qual[(size_t)t * d + c]) {
                    s->pair_t[s->n_pairs] = t;
                    s->pair_c[s->n_pairs] = c;
                    s->n_pairs++;
                }
    }
    free(chan);
    free(tokm);
    return rc;
}

int sks_trace_run(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                  const sks_trace_opts *o, sks_trace_result **out) {
    *out = NULL;
    if (!m || n_prompts < 1 || !prompts || !lens || !o)
        return sks_fail(SKS_EARG, "trace: need a model and at least one prompt");
    sks_spike_rule rule;
    sks_trace_opts_rule(o, &rule);
    int rrc = sks_spike_rule_check(&rule);
    if (rrc) return rrc;
    if (o->topk < 1 || o->n_alpha < 1 || !(o->step_frac > 0 && o->step_frac <= 1) || !(o->eps >= 0))
        return sks_fail(SKS_EARG, "trace: bad options (need topk >= 1, n_alpha >= 1, 0 < step_frac <= 1, eps >= 0)");
    const sks_arch *a = sks_model_arch(m);
    int max_T = 0;
    for (int p = 0; p < n_prompts; p++) {
        if (lens[p] < 1 || !prompts[p]) return sks_fail(SKS_EARG, "trace: prompt %d is empty", p);
        if (lens[p] > max_T) max_T = lens[p];
    }
    const int d = a->d_model, L = a->n_layers, H = a->n_heads, nb = 2 * L + 1, na = o->n_alpha, T0 = lens[0];
    int rc = 0;
    sks_forward *f = NULL;
    sks__tstate s = {0};
    sks_trace_result *r = calloc(1, sizeof *r);
    if (!r) return sks_fail(SKS_ENOMEM, "trace: out of memory");
    r->n_blocks = nb;
    r->n_layers = L;
    r->n_heads = H;
    r->n_alpha = na;
    r->n_prompts = n_prompts;
    r->d_model = d;
    r->n_tokens = T0;
    r->blocks = calloc((size_t)nb, sizeof *r->blocks);
    r->channel_max = sks_malloc_n((size_t)nb * (size_t)d, sizeof(float));
    r->alpha = sks_calloc_n((size_t)L * (size_t)H * (size_t)na, sizeof(double));
    r->tokens = sks_malloc_n((size_t)T0, sizeof(int32_t));
    r->prompt_lens = sks_malloc_n((size_t)n_prompts, sizeof(int));
    r->sink_ratio_per_prompt = sks_calloc_n((size_t)n_prompts, sizeof(double));
    s.o = o;
    s.d = d;
    s.n_blocks = nb;
    s.L = L;
    s.H = H;
    s.T = T0;
    s.r = r;
    s.absbuf = sks_malloc_n((size_t)T0 * (size_t)d, sizeof(float));
    s.peakbuf = sks_malloc_n((size_t)d, sizeof(float));
    s.run = sks_calloc_n((size_t)T0 * (size_t)d, sizeof(uint16_t));
    s.qual = sks_calloc_n((size_t)T0 * (size_t)d, 1);
    s.alpha_sum = sks_calloc_n((size_t)L * (size_t)H * (size_t)na, sizeof(double));
    s.alpha_cnt = sks_calloc_n((size_t)na, sizeof(int));
    if (!r->blocks || !r->channel_max || !r->alpha || !r->tokens || !r->prompt_lens || !r->sink_ratio_per_prompt ||
        !s.absbuf || !s.peakbuf || !s.run || !s.qual || !s.alpha_sum || !s.alpha_cnt) {
        rc = sks_fail(SKS_ENOMEM, "trace: out of memory for %d tokens x %d channels", T0, d);
        goto done;
    }
    for (int b = 0; b < nb; b++) {
        r->blocks[b].top = calloc((size_t)o->topk, sizeof(sks_trace_entry));
        if (!r->blocks[b].top) {
            rc = sks_fail(SKS_ENOMEM, "trace: out of memory");
            goto done;
        }
    }
    if (o->keep_residual) {
        size_t n;
        if (sks_mul_size((size_t)nb * (size_t)T0, (size_t)d, &n) || !(r->residual = sks_malloc_n(n, sizeof(float)))) {
            rc = sks_fail(SKS_ENOMEM, "trace: out of memory keeping %d x %d x %d residual values", nb, T0, d);
            goto done;
        }
    }
    if (a->n_experts > 0) {
        size_t n = (size_t)L * (size_t)T0 * (size_t)a->n_experts_used;
        r->moe_k = a->n_experts_used;
        r->moe_n_experts = a->n_experts;
        r->moe_experts = sks_malloc_n(n, sizeof(int));
        r->moe_weights = sks_calloc_n(n, sizeof(float));
        if (!r->moe_experts || !r->moe_weights) {
            rc = sks_fail(SKS_ENOMEM, "trace: out of memory for the routing of %d tokens", T0);
            goto done;
        }
        for (size_t i = 0; i < n; i++) r->moe_experts[i] = -1;
    }
    s.resid = r->residual;
    if (!s.resid && (uint64_t)nb * (uint64_t)T0 * (uint64_t)d * sizeof(float) <= o->keep_bytes)
        s.own_resid = (s.resid = sks_malloc_n((size_t)nb * (size_t)T0, (size_t)d * sizeof(float))) != NULL;
    memcpy(r->tokens, prompts[0], (size_t)T0 * sizeof(int32_t));
    memcpy(r->prompt_lens, lens, (size_t)n_prompts * sizeof(int));
    if ((rc = sks_forward_new(m, max_T, &f))) goto done;

    /* every prompt: attention; prompt 0 also the residual statistics (pass 1) */
    for (int p = 0; p < n_prompts; p++) {
        sks_fwd_hooks hk = {0};
        hk.ud = &s;
        hk.on_attn_probs = sks__on_probs;
        hk.want_attn_probs = 1;
        if (p == 0) hk.on_residual = sks__on_residual, hk.on_route = sks__on_route;
        s.pass = p == 0 ? 1 : 0;
        s.sinks_this_prompt = 0;
        if ((rc = sks_forward_run(f, prompts[p], lens[p], SKS_FWD_CAUSAL, &hk, NULL, 0))) goto done;
        for (int j = 0; j < na && j < lens[p]; j++) s.alpha_cnt[j]++;
        r->sink_ratio_per_prompt[p] = 100.0 * s.sinks_this_prompt / ((double)L * H);
        r->sink_ratio += r->sink_ratio_per_prompt[p] / n_prompts;
        sks_progress("trace", p + 1, n_prompts + 1);
    }
    for (size_t i = 0; i < (size_t)L * H; i++)
        for (int j = 0; j < na; j++)
            r->alpha[i * na + j] = s.alpha_cnt[j] ? s.alpha_sum[i * na + j] / s.alpha_cnt[j] : NAN;

    /* the channel closest to the rule, for "nothing passed: channel c reached x of it" */
    {
        double *thr = sks_malloc_n((size_t)nb, sizeof *thr);
        if (!thr) {
            rc = sks_fail(SKS_ENOMEM, "trace: out of memory");
            goto done;
        }
        for (int b = 0; b < nb; b++) thr[b] = r->blocks[b].threshold;
        sks_spike_rule_closest(&rule, nb, d, r->channel_max, thr, &r->closest_channel, &r->closest_frac,
                               &r->closest_block);
        free(thr);
    }

    /* spike channels, tokens, qualified pairs */
    if ((rc = sks__spike_pairs(&s, r, T0, d, nb))) goto done;

    /* h_b[t, c] of the qualified pairs at every block: from the kept residual stream,
     * else recomputed (pass 2) */
    if (s.n_pairs > 0) {
        if (s.resid) {
            for (int p = 0; p < s.n_pairs; p++)
                for (int b = 0; b < nb; b++)
                    s.pair_vals[(size_t)p * nb + b] = s.resid[((size_t)b * T0 + (size_t)s.pair_t[p]) * d + s.pair_c[p]];
        } else {
            sks_fwd_hooks hk = {0};
            hk.ud = &s;
            hk.on_residual = sks__on_residual;
            s.pass = 2;
            if ((rc = sks_forward_run(f, prompts[0], T0, SKS_FWD_CAUSAL, &hk, NULL, 0))) goto done;
        }
        r->lifecycles = calloc((size_t)s.n_pairs, sizeof *r->lifecycles);
        if (!r->lifecycles) {
            rc = sks_fail(SKS_ENOMEM, "trace: out of memory");
            goto done;
        }
        for (int p = 0; p < s.n_pairs; p++) {
            sks_lifecycle *lc = &r->lifecycles[p];
            lc->prompt = 0;
            lc->token = s.pair_t[p];
            lc->channel = s.pair_c[p];
            r->n_lifecycles = p + 1;
            if ((rc = sks__lifecycle(lc, s.pair_vals + (size_t)p * nb, nb, o->step_frac))) goto done;
        }
    }
    sks_progress("trace", n_prompts + 1, n_prompts + 1);

done:
    sks_forward_free(f);
    sks__tstate_free(&s);
    if (rc) {
        sks_trace_result_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- default input ------------------------------------------------------------------- */

void sks_trace_default_tokens(const sks_model *m, int T, uint64_t seed, int32_t *out) {
    const sks_arch *a = sks_model_arch(m);
    const int V = a->vocab_size;
    if (T <= 0) return;
    out[0] = a->bos_id >= 0 && a->bos_id < V ? a->bos_id : (V > 1 ? 1 : 0);
    uint64_t x = seed;
    for (int t = 1; t < T; t++) {
        int32_t id;
        do { /* splitmix64; BOS and EOS are skipped when the vocabulary allows */
            x += 0x9e3779b97f4a7c15ull;
            uint64_t z = x;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            id = (int32_t)(z % (uint64_t)V);
        } while (V > 3 && (id == a->bos_id || id == a->eos_id || id == out[0]));
        out[t] = id;
    }
}

int sks_trace_default_prompt_set(const sks_model *m, int n, int T, uint64_t seed0, sks_trace_prompt_set *out) {
    if (n < 1 || n > SKS_TRACE_SET_N || T < 1 || T > SKS_TRACE_SET_T)
        return sks_fail(SKS_EARG, "trace: a default prompt set holds 1 to %d prompts of 1 to %d tokens, not %d of %d",
                        SKS_TRACE_SET_N, SKS_TRACE_SET_T, n, T);
    out->n = n;
    for (int k = 0; k < n; k++) {
        sks_trace_default_tokens(m, T, seed0 + (uint64_t)k, out->ids[k]);
        out->ptr[k] = out->ids[k];
        out->lens[k] = T;
    }
    return 0;
}

/* ---- msgpack ----------------------------------------------------------------------- */

static void sks__out_blocks_list(sks_out *w, const int *blocks, int n) {
    sks_out_array(w, (size_t)n);
    for (int i = 0; i < n; i++) {
        sks_out_map(w, 3);
        sks_out_kint(w, "block", blocks[i]);
        sks_out_kstr(w, "kind", sks_block_kind_name(sks_block_kind(blocks[i])));
        sks_out_kint(w, "layer", sks_block_layer(blocks[i]));
    }
}

/* "moe": the routing of prompt 0 (docs/schema-trace.md): every token at every layer, and
 * per spike token (position 0 when there is none) the experts and weights per MoE layer. */
static void sks__out_moe(sks_out *w, const sks_trace_result *r) {
    const int k = r->moe_k, T = r->n_tokens, L = r->n_layers;
    int n_moe = 0;
    for (int l = 0; l < L; l++) n_moe += sks_trace_route(r, l, 0, NULL) != NULL;
    sks_out_kmap(w, "moe", 6);
    sks_out_kint(w, "n_experts", r->moe_n_experts);
    sks_out_kint(w, "k", k);
    sks_out_karray(w, "moe_layers", (size_t)n_moe);
    for (int l = 0; l < L; l++)
        if (sks_trace_route(r, l, 0, NULL)) sks_out_int(w, l);
    int64_t shp[3] = {L, T, k};
    sks_out_str(w, "experts");
    sks_out_i32_array(w, r->moe_experts, 3, shp);
    sks_out_str(w, "weights");
    sks_out_f32_array(w, r->moe_weights, 3, shp);
    int nt = r->n_spike_tokens > 0 ? r->n_spike_tokens : 1;
    sks_out_karray(w, "spike_token_routes", (size_t)nt);
    for (int i = 0; i < nt; i++) {
        int t = r->n_spike_tokens > 0 ? r->spike_tokens[i] : 0;
        sks_out_map(w, 2);
        sks_out_kint(w, "token", t);
        sks_out_karray(w, "layers", (size_t)n_moe);
        for (int l = 0; l < L; l++) {
            const float *wt;
            const int *ex = sks_trace_route(r, l, t, &wt);
            if (!ex) continue;
            sks_out_map(w, 3);
            sks_out_kint(w, "layer", l);
            sks_out_kints(w, "experts", ex, k);
            sks_out_karray(w, "weights", (size_t)k);
            for (int j = 0; j < k; j++) sks_out_f64(w, wt[j]);
        }
    }
}

int sks_trace_write(const sks_trace_result *r, const sks_model *m, const sks_trace_opts *o, const char *path) {
    if (!r || !m || !o || !path) return sks_fail(SKS_EARG, "trace: nothing to write");
    sks_out w;
    sks_out_begin(&w, 15 + (r->residual != NULL) + (r->moe_k > 0), "sinkscope.trace/1", m);

    sks_out_kmap(&w, "params", 11);
    sks_out_spike_rule(&w, o->outlier, o->abs_thresh, o->ratio, o->min_blocks);
    sks_out_kint(&w, "topk", o->topk);
    sks_out_kf64(&w, "step_frac", o->step_frac);
    sks_out_kf64(&w, "eps", o->eps);
    sks_out_kint(&w, "n_alpha", o->n_alpha);
    sks_out_kint(&w, "n_prompts", r->n_prompts);
    sks_out_kbool(&w, "keep_residual", r->residual != NULL);
    sks_out_kints(&w, "prompt_lengths", r->prompt_lens, r->n_prompts);

    int64_t shp[3];
    sks_out_str(&w, "tokens");
    shp[0] = r->n_tokens;
    sks_out_i32_array(&w, r->tokens, 1, shp);

    sks_out_karray(&w, "blocks", (size_t)r->n_blocks);
    for (int b = 0; b < r->n_blocks; b++) {
        const sks_trace_block *k = &r->blocks[b];
        sks_out_map(&w, 11);
        sks_out_kint(&w, "block", k->block);
        sks_out_kstr(&w, "kind", sks_block_kind_name(k->kind));
        sks_out_kint(&w, "layer", k->layer);
        sks_out_kf64(&w, "max_abs", k->max_abs);
        sks_out_kf64(&w, "median_abs", k->median_abs);
        sks_out_kf64(&w, "spike_score", k->spike_score);
        sks_out_kf64(&w, "peak_median", k->peak_median);
        sks_out_kf64(&w, "threshold", k->threshold);
        sks_out_kint(&w, "top_token", k->top_token);
        sks_out_kint(&w, "top_channel", k->top_channel);
        sks_out_karray(&w, "top", (size_t)k->n_top);
        for (int i = 0; i < k->n_top; i++) {
            sks_out_map(&w, 3);
            sks_out_kint(&w, "token", k->top[i].token);
            sks_out_kint(&w, "channel", k->top[i].channel);
            sks_out_kf64(&w, "value", k->top[i].value);
        }
    }

    sks_out_kints(&w, "spike_channels", r->spike_channels, r->n_spike_channels);
    sks_out_kints(&w, "spike_tokens", r->spike_tokens, r->n_spike_tokens);

    sks_out_karray(&w, "lifecycles", (size_t)r->n_lifecycles);
    for (int i = 0; i < r->n_lifecycles; i++) {
        const sks_lifecycle *lc = &r->lifecycles[i];
        sks_out_map(&w, 10);
        sks_out_kint(&w, "prompt", lc->prompt);
        sks_out_kint(&w, "token", lc->token);
        sks_out_kint(&w, "channel", lc->channel);
        sks_out_kint(&w, "main_step_up", lc->main_up);
        sks_out_str(&w, "step_up");
        sks__out_blocks_list(&w, lc->up_blocks, lc->n_up);
        sks_out_str(&w, "step_down");
        sks__out_blocks_list(&w, lc->down_blocks, lc->n_down);
        sks_out_kint(&w, "plateau_first", lc->plateau_first);
        sks_out_kint(&w, "plateau_last", lc->plateau_last);
        sks_out_kf64(&w, "peak_abs", lc->peak_abs);
        sks_out_str(&w, "values");
        shp[0] = r->n_blocks;
        sks_out_f32_array(&w, lc->values, 1, shp);
    }
    sks_out_kbool(&w, "lifecycles_truncated", r->lifecycles_truncated);
    sks_out_kmap(&w, "closest", 3);
    sks_out_kint(&w, "channel", r->closest_channel);
    sks_out_kint(&w, "first_block", r->closest_block);
    sks_out_kf64(&w, "fraction_of_threshold", r->closest_frac);

    sks_out_str(&w, "alpha");
    shp[0] = r->n_layers;
    shp[1] = r->n_heads;
    shp[2] = r->n_alpha;
    sks_out_f64_array(&w, r->alpha, 3, shp);

    int nsink = 0;
    for (int i = 0; i < r->n_layers * r->n_heads; i++) nsink += r->alpha[(size_t)i * r->n_alpha] > o->eps;
    sks_out_karray(&w, "sink_heads", (size_t)nsink);
    for (int l = 0; l < r->n_layers; l++)
        for (int h = 0; h < r->n_heads; h++)
            if (r->alpha[((size_t)l * r->n_heads + h) * r->n_alpha] > o->eps) {
                sks_out_array(&w, 2);
                sks_out_int(&w, l);
                sks_out_int(&w, h);
            }
    sks_out_kf64(&w, "sink_ratio", r->sink_ratio);
    sks_out_str(&w, "sink_ratio_per_prompt");
    shp[0] = r->n_prompts;
    sks_out_f64_array(&w, r->sink_ratio_per_prompt, 1, shp);

    sks_out_str(&w, "channel_max");
    shp[0] = r->n_blocks;
    shp[1] = r->d_model;
    sks_out_f32_array(&w, r->channel_max, 2, shp);

    if (r->residual) {
        sks_out_str(&w, "residual");
        shp[0] = r->n_blocks;
        shp[1] = r->n_tokens;
        shp[2] = r->d_model;
        sks_out_f32_array(&w, r->residual, 3, shp);
    }

    if (r->moe_k > 0) sks__out_moe(&w, r);

    return sks_out_finish(&w, path);
}

/* The layer whose FFN raises the largest |h| the most: the step-up candidate when the
 * thresholds found no spike channel. */
int sks_trace_steepest_ffn_layer(const sks_trace_result *tr) {
    int best = 0;
    double bestd = -INFINITY;
    for (int b = 2; b < tr->n_blocks; b += 2) {
        double dlt = tr->blocks[b].max_abs - tr->blocks[b - 1].max_abs;
        if (dlt > bestd) {
            bestd = dlt;
            best = (b - 2) / 2;
        }
    }
    return best;
}
