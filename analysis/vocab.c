/* vocab.c - every token alone at position 0 (SPEC section 3; contract in sks_vocab.h). */
#include "sks_vocab.h"

#include "sks_forward.h"
#include "sks_out.h"

#include <math.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

void sks_vocab_opts_default(sks_vocab_opts *o) {
    /* the rest zero: --abs off, every token, medians measured */
    *o = (sks_vocab_opts){.ratio = 100, .seed = 1, .batch = 256};
}

/* ---- typical medians ------------------------------------------------------------------- */

typedef struct {
    int n_blocks, d;
    float *vals;      /* (n_blocks, cap) */
    size_t cap, *cnt; /* per block */
} sks__medctx;

static int sks__med_hook(void *ud, int b, const float *h, int T, int d) {
    sks__medctx *c = ud;
    if (b < 0 || b >= c->n_blocks || d != c->d) return sks_fail(SKS_EINTERNAL, "medians hook: block %d", b);
    float *dst = c->vals + (size_t)b * c->cap + c->cnt[b];
    size_t n = (size_t)(T - 1) * d;
    if (c->cnt[b] + n > c->cap) return sks_fail(SKS_EINTERNAL, "medians hook: overflow");
    for (size_t i = 0; i < n; i++) dst[i] = fabsf(h[(size_t)d + i]); /* positions t > 0 */
    c->cnt[b] += n;
    return 0;
}

int sks_vocab_typical_medians(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                              double *medians, int64_t *count) {
    const sks_arch *a = sks_model_arch(m);
    const int nb = 2 * a->n_layers + 1, d = a->d_model;
    if (n_prompts < 1 || !prompts || !lens) return sks_fail(SKS_EARG, "vocab: no reference prompts for the medians");
    size_t tot = 0;
    int maxT = 0;
    for (int i = 0; i < n_prompts; i++) {
        if (lens[i] < 2) return sks_fail(SKS_EARG, "vocab: reference prompt %d has %d tokens (need >= 2)", i, lens[i]);
        for (int t = 0; t < lens[i]; t++)
            if (prompts[i][t] < 0 || prompts[i][t] >= a->vocab_size)
                return sks_fail(SKS_EARG, "vocab: reference prompt %d: token %d outside the vocabulary (%d)", i,
                                prompts[i][t], a->vocab_size);
        tot += (size_t)(lens[i] - 1) * d;
        if (lens[i] > maxT) maxT = lens[i];
    }
    sks__medctx c = {nb, d, NULL, tot, NULL};
    size_t all;
    if (sks_mul_size(tot, (size_t)nb, &all)) return sks_fail(SKS_EOVERFLOW, "vocab: medians buffer");
    c.vals = sks_malloc_n(all, sizeof(float));
    c.cnt = sks_calloc_n((size_t)nb, sizeof(size_t));
    sks_forward *fw = NULL;
    int rc = 0;
    if (!c.vals || !c.cnt) rc = sks_fail(SKS_ENOMEM, "vocab: out of memory for %zu medians values", all);
    if (!rc) rc = sks_forward_new(m, maxT, &fw);
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = &c;
    hk.on_residual = sks__med_hook;
    for (int i = 0; i < n_prompts && !rc; i++) {
        rc = sks_forward_run(fw, prompts[i], lens[i], SKS_FWD_CAUSAL, &hk, NULL, 0);
        sks_progress("vocab: medians", i + 1, n_prompts);
    }
    for (int b = 0; b < nb && !rc; b++) medians[b] = sks_median_f32(c.vals + (size_t)b * c.cap, c.cnt[b]);
    if (!rc && count) *count = (int64_t)tot;
    sks_forward_free(fw);
    free(c.vals);
    free(c.cnt);
    return rc;
}

/* ---- the sweep ------------------------------------------------------------------------ */

typedef struct {
    const double *med;     /* (2L+1) */
    int L;
    float *ratio, *max_abs;
    int32_t *ach, *ablk;
} sks__sweepctx;

/* Blocks 2l+2, l <= L-2: per row max_c |h|, ratio to m_b, keep the largest. */
static int sks__sweep_hook(void *ud, int b, const float *h, int T, int d) {
    sks__sweepctx *c = ud;
    if (b < 2 || b % 2 || b > 2 * (c->L - 1)) return 0;
    const double mb = c->med[b];
    for (int t = 0; t < T; t++) {
        const float *row = h + (size_t)t * d;
        float mx = -1;
        int am = 0;
        for (int k = 0; k < d; k++) {
            float v = fabsf(row[k]);
            if (v > mx) mx = v, am = k;
        }
        double ratio = mb > 0 ? mx / mb : INFINITY;
        if (mx > c->max_abs[t]) c->max_abs[t] = mx;
        if (ratio > c->ratio[t] || c->ablk[t] < 0) {
            c->ratio[t] = (float)ratio;
            c->ach[t] = am;
            c->ablk[t] = b;
        }
    }
    return 0;
}

int sks_vocab_sweep_batch(sks_forward *fw, int n_layers, const double *medians, const int32_t *ids, int n,
                          float *ratio, float *max_abs, int32_t *argmax_channel, int32_t *argmax_block) {
    sks__sweepctx c = {medians, n_layers, ratio, max_abs, argmax_channel, argmax_block};
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = &c;
    hk.on_residual = sks__sweep_hook;
    return sks_forward_run(fw, ids, n, SKS_FWD_INDEPENDENT, &hk, NULL, 0);
}

void sks_vocab_result_free(sks_vocab_result *r) {
    if (!r) return;
    SKS_FREE_ALL(r->typical_median, r->ids, r->ratio, r->max_abs, r->argmax_channel, r->argmax_block,
                 r->exceptions, r->channel_count, r);
}

static uint64_t sks__mix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int sks__cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int sks_vocab_summarize(sks_vocab_result *r, const sks_vocab_opts *o, int d) {
    const int n = r->n_tokens;
    int nexc = 0;
    r->n_spike = 0;
    for (int i = 0; i < n; i++) {
        if (r->ratio[i] >= o->ratio && r->max_abs[i] >= o->abs_thresh) {
            r->n_spike++;
            if (r->argmax_channel[i] >= 0) r->channel_count[r->argmax_channel[i]]++;
        } else {
            nexc++;
        }
    }
    free(r->exceptions);
    r->n_exceptions = 0;
    r->exceptions = sks_malloc_n((size_t)(nexc ? nexc : 1), sizeof(int32_t));
    if (!r->exceptions) return sks_fail(SKS_ENOMEM, "vocab: out of memory");
    for (int i = 0; i < n; i++)
        if (!(r->ratio[i] >= o->ratio && r->max_abs[i] >= o->abs_thresh)) r->exceptions[r->n_exceptions++] = r->ids[i];
    r->spike_fraction = n ? (double)r->n_spike / n : 0;
    r->top_channel = -1;
    int best = 0;
    for (int k = 0; k < d; k++)
        if (r->channel_count[k] > best) best = r->channel_count[k], r->top_channel = k;
    return 0;
}

int sks_vocab_sweep_ids(int V, const sks_vocab_opts *o, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (V <= 0) return sks_fail(SKS_EARG, "vocab: vocabulary size %d", V);
    if (o->sample < 0) return sks_fail(SKS_EARG, "vocab: --sample must be >= 0");
    int cnt = (o->sample > 0 && o->sample < V) ? o->sample : V;
    int32_t *perm = sks_malloc_n((size_t)V, sizeof(int32_t));
    if (!perm) return sks_fail(SKS_ENOMEM, "vocab: out of memory for %d ids", V);
    for (int v = 0; v < V; v++) perm[v] = v;
    if (cnt != V) {
        /* partial Fisher-Yates: the first cnt entries are a uniform sample */
        uint64_t st = o->seed ? o->seed : 1;
        for (int i = 0; i < cnt; i++) {
            int j = i + (int)(sks__mix(&st) % (uint64_t)(V - i));
            int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        qsort(perm, (size_t)cnt, sizeof(int32_t), sks__cmp_i32);
    }
    *ids = perm;
    *n = cnt;
    return 0;
}

/* ---- the driver ------------------------------------------------------------------------ */

/* The sweep's batches as split items: batch k is ids[k bs .. k bs + nb), its slot the
 * same range of the result's per-token arrays. */
typedef struct {
    const sks_model *m;
    sks_vocab_result *r;
    int bs, d;
    sks_forward *fw; /* made on the first batch this process runs */
} sks__vsweep;

#define SKS__VMAGIC "sinkscope.vocab-batch/1"

static int sks__vbatch(const sks__vsweep *c, int k, int *nb) {
    const int i0 = k * c->bs;
    *nb = c->r->n_tokens - i0 < c->bs ? c->r->n_tokens - i0 : c->bs;
    return i0;
}

static int sks__vrun(void *ud, int k) {
    sks__vsweep *c = ud;
    sks_vocab_result *r = c->r;
    int nb, i0 = sks__vbatch(c, k, &nb), rc = 0;
    if (!c->fw && (rc = sks_forward_new(c->m, c->bs, &c->fw))) return rc;
    return sks_vocab_sweep_batch(c->fw, r->n_layers, r->typical_median, r->ids + i0, nb, r->ratio + i0,
                                 r->max_abs + i0, r->argmax_channel + i0, r->argmax_block + i0);
}

/* One batch: [magic, first index, count, ratio, max_abs, channel, block]. */
static void sks__vpack(void *ud, int k, sks_out *o) {
    const sks__vsweep *c = ud;
    const sks_vocab_result *r = c->r;
    int nb, i0 = sks__vbatch(c, k, &nb);
    sks_out_array(o, 7);
    sks_out_str(o, SKS__VMAGIC);
    sks_out_int(o, i0);
    sks_out_int(o, nb);
    sks_out_bin(o, r->ratio + i0, (size_t)nb * 4);
    sks_out_bin(o, r->max_abs + i0, (size_t)nb * 4);
    sks_out_bin(o, r->argmax_channel + i0, (size_t)nb * 4);
    sks_out_bin(o, r->argmax_block + i0, (size_t)nb * 4);
}

static int sks__vunpack(void *ud, int k, const uint8_t *buf, size_t n, size_t *off, const char *name) {
    const sks__vsweep *c = ud;
    sks_vocab_result *r = c->r;
    int nb, i0 = sks__vbatch(c, k, &nb), v, rc = 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (sks_mp_unpack(&u, buf, n, off)) {
        msgpack_unpacked_destroy(&u);
        return sks_fail(SKS_EFORMAT, "%s: not a msgpack batch part (truncated or corrupt)", name);
    }
    const msgpack_object *e =
        u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 7 ? u.data.via.array.ptr : NULL;
    if (!e || e[0].type != MSGPACK_OBJECT_STR || e[0].via.str.size != sizeof SKS__VMAGIC - 1 ||
        memcmp(e[0].via.str.ptr, SKS__VMAGIC, sizeof SKS__VMAGIC - 1))
        rc = sks_fail(SKS_EFORMAT, "%s: magic: not a vocab batch part", name);
    else if (sks_mp_int(&e[1], i0, i0, &v) || sks_mp_int(&e[2], nb, nb, &v))
        rc = sks_fail(SKS_EFORMAT, "%s: holds other tokens than batch %d", name, k);
    else if (sks_mp_bin_into(&e[3], r->ratio + i0, (size_t)nb * 4) ||
             sks_mp_bin_into(&e[4], r->max_abs + i0, (size_t)nb * 4) ||
             sks_mp_bin_into(&e[5], r->argmax_channel + i0, (size_t)nb * 4) ||
             sks_mp_bin_into(&e[6], r->argmax_block + i0, (size_t)nb * 4))
        rc = sks_fail(SKS_EFORMAT, "%s: arrays: wrong length", name);
    for (int i = i0; i < i0 + nb && !rc; i++)
        if (r->argmax_channel[i] < -1 || r->argmax_channel[i] >= c->d || r->argmax_block[i] < -1 ||
            r->argmax_block[i] >= r->n_blocks)
            rc = sks_fail(SKS_EFORMAT, "%s: channel or block outside the model", name);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* The typical medians: given, or computed on part 0 and broadcast with their count. */
static int sks__vmedians(const sks_model *m, const sks_vocab_opts *o, int n_prompts, const int32_t *const *prompts,
                         const int *lens, const sks_split *sp, sks_vocab_result *r) {
    const int nb = r->n_blocks;
    int rc = 0;
    if (o->medians) {
        memcpy(r->typical_median, o->medians, (size_t)nb * sizeof(double));
        r->medians_given = 1;
        return 0;
    }
    if (!sp || sp->part == 0) rc = sks_vocab_typical_medians(m, n_prompts, prompts, lens, r->typical_median, &r->median_count);
    if (!sp || sp->nparts == 1 || (rc = sp->agree(sp, rc))) return rc;
    double *med = malloc(((size_t)nb + 1) * sizeof *med); /* + 1: the value count */
    if (!med) rc = sks_fail(SKS_ENOMEM, "out of memory");
    if ((rc = sp->agree(sp, rc))) return free(med), rc;
    memcpy(med, r->typical_median, (size_t)nb * sizeof *med);
    med[nb] = (double)r->median_count;
    uint8_t *mb = sp->part == 0 ? (uint8_t *)med : NULL; /* other parts: bcast allocates */
    size_t mn = ((size_t)nb + 1) * sizeof *med;
    rc = sp->agree(sp, sp->bcast(sp, &mb, &mn));
    if (!rc && sp->part != 0) {
        memcpy(r->typical_median, mb, (size_t)nb * sizeof *med);
        r->median_count = (int64_t)((double *)mb)[nb];
    }
    if (sp->part != 0) free(mb);
    free(med);
    return rc;
}

static sks_vocab_result *sks__vresult_new(const sks_vocab_opts *o, int L, int d, int V, int *rc) {
    sks_vocab_result *r = calloc(1, sizeof *r);
    if (!r) return *rc = sks_fail(SKS_ENOMEM, "vocab: out of memory"), NULL;
    r->n_layers = L;
    r->n_blocks = 2 * L + 1;
    r->typical_median = sks_calloc_n((size_t)r->n_blocks, sizeof(double));
    if ((*rc = sks_vocab_sweep_ids(V, o, &r->ids, &r->n_tokens))) return r;
    const int n = r->n_tokens;
    r->ratio = sks_malloc_n((size_t)n, sizeof(float));
    r->max_abs = sks_malloc_n((size_t)n, sizeof(float));
    r->argmax_channel = sks_malloc_n((size_t)n, sizeof(int32_t));
    r->argmax_block = sks_malloc_n((size_t)n, sizeof(int32_t));
    r->channel_count = sks_calloc_n((size_t)d, sizeof(int32_t));
    if (!r->typical_median || !r->ids || !r->ratio || !r->max_abs || !r->argmax_channel || !r->argmax_block ||
        !r->channel_count)
        return *rc = sks_fail(SKS_ENOMEM, "vocab: out of memory for %d tokens", n), r;
    for (int i = 0; i < n; i++) r->ratio[i] = 0, r->max_abs[i] = 0, r->argmax_channel[i] = -1, r->argmax_block[i] = -1;
    return r;
}

int sks_vocab_run(const sks_model *m, const sks_vocab_opts *o, int n_prompts, const int32_t *const *prompts,
                  const int *lens, const sks_split *sp, sks_vocab_result **out) {
    *out = NULL;
    sks_vocab_opts oo;
    if (o)
        oo = *o;
    else
        sks_vocab_opts_default(&oo);
    const sks_arch *a = sks_model_arch(m);
    const int L = a->n_layers, d = a->d_model;
    if (L < 2) return sks_fail(SKS_EUNSUPPORTED, "vocab: the sweep needs >= 2 layers (blocks 2l+2, l <= L-2)");
    if (oo.sample < 0) return sks_fail(SKS_EARG, "vocab: --sample must be >= 0");
    if (oo.batch <= 0) oo.batch = 256;
    double t0 = sks_now();
    int rc = 0;
    sks_vocab_result *r = sks__vresult_new(&oo, L, d, a->vocab_size, &rc);
    if (sp) rc = sp->agree(sp, rc);
    if (!rc) rc = sks__vmedians(m, &oo, n_prompts, prompts, lens, sp, r);
    if (!rc && (!sp || sp->part == 0))
        for (int b = 2; b <= 2 * (L - 1); b += 2)
            if (!(r->typical_median[b] > 0))
                sks_log(SKS_LOG_WARN, "vocab: typical median of block %d is %g", b, r->typical_median[b]);
    const int n = r ? r->n_tokens : 0, bs = oo.batch < n ? oo.batch : n;
    sks__vsweep c = {m, r, bs > 0 ? bs : 1, d, NULL};
    if (!rc && !sp) {
        for (int k = 0; k * c.bs < n && !rc; k++) {
            rc = sks__vrun(&c, k);
            sks_progress("vocab-sweep", (k + 1) * c.bs < n ? (k + 1) * c.bs : n, n);
        }
    } else if (!rc) {
        sks_deal dj = {.n = (n + c.bs - 1) / c.bs, .kind = "batch", .progress = "vocab-sweep batches", .ud = &c,
                       .run = sks__vrun, .pack = sks__vpack, .unpack = sks__vunpack};
        rc = sp->deal(sp, &dj, &r->n_resumed);
    }
    sks_forward_free(c.fw);
    if (!rc && (!sp || sp->part == 0)) rc = sks_vocab_summarize(r, &oo, d);
    if (rc || (sp && sp->part != 0)) {
        sks_vocab_result_free(r);
        return rc;
    }
    r->seconds = sks_now() - t0;
    *out = r;
    return 0;
}

void sks_vocab_inputs(sks_out *o, const sks_model *m, const sks_vocab_opts *vo, int n_prompts,
                      const int32_t *const *prompts, const int *lens) {
    const sks_arch *a = sks_model_arch(m);
    sks_out_head(o, 4 + sks_out_moe_inputs_n(a), "sinkscope.vocab/1", m); /* the model: path and shape */
    sks_out_moe_inputs(o, a);
    sks_out_kmap(o, "opts", 3);
    sks_out_kint(o, "sample", vo->sample);
    sks_out_kint(o, "seed", (int64_t)vo->seed);
    sks_out_kint(o, "batch", vo->batch);
    if (vo->medians) {
        const int nb = 2 * a->n_layers + 1;
        sks_out_karray(o, "medians", (size_t)nb);
        for (int b = 0; b < nb; b++) sks_out_f64(o, vo->medians[b]);
        return;
    }
    sks_out_karray(o, "prompts", (size_t)(n_prompts > 0 ? n_prompts : 0));
    for (int i = 0; i < n_prompts; i++) {
        sks_out_array(o, (size_t)lens[i]);
        for (int t = 0; t < lens[i]; t++) sks_out_int(o, prompts[i][t]);
    }
}

/* ---- writer (schema "sinkscope.vocab/1", docs/schema-vocab.md) --------------------------- */

int sks_vocab_write(const sks_vocab_result *r, const sks_model *m, const sks_vocab_opts *o,
                    const char *(*piece)(void *ud, int id), void *piece_ud, const char *path) {
    if (!r || !m || !o || !path) return sks_fail(SKS_EARG, "vocab: nothing to write");
    sks_out w;
    sks_out_begin(&w, 7, "sinkscope.vocab/1", m);
    sks_out_kmap(&w, "params", 7);
    sks_out_kf64(&w, "ratio", o->ratio);
    sks_out_kf64(&w, "abs", o->abs_thresh);
    sks_out_kint(&w, "sample", o->sample);
    sks_out_kint(&w, "seed", (int64_t)o->seed);
    sks_out_kint(&w, "batch", o->batch);
    sks_out_kbool(&w, "medians_given", r->medians_given);
    sks_out_karray(&w, "blocks", (size_t)(r->n_layers - 1));
    for (int l = 0; l + 1 < r->n_layers; l++) sks_out_int(&w, 2 * l + 2);

    int64_t nb = r->n_blocks, nt = r->n_tokens, ne = r->n_exceptions, d = sks_model_arch(m)->d_model;
    sks_out_kmap(&w, "typical_median", 2);
    sks_out_kf64_array(&w, "values", r->typical_median, 1, &nb);
    sks_out_kint(&w, "count_per_block", r->median_count);

    sks_out_kmap(&w, "summary", 6);
    sks_out_kint(&w, "n_tokens", r->n_tokens);
    sks_out_kint(&w, "n_spike", r->n_spike);
    sks_out_kf64(&w, "spike_fraction", r->spike_fraction);
    sks_out_kint(&w, "top_channel", r->top_channel);
    sks_out_kint(&w, "top_channel_count", r->top_channel >= 0 ? r->channel_count[r->top_channel] : 0);
    sks_out_kf64(&w, "seconds", r->seconds);

    sks_out_kmap(&w, "tokens", 6);
    sks_out_ki32_array(&w, "ids", r->ids, 1, &nt);
    sks_out_kf32_array(&w, "ratio", r->ratio, 1, &nt);
    sks_out_kf32_array(&w, "max_abs", r->max_abs, 1, &nt);
    sks_out_ki32_array(&w, "argmax_channel", r->argmax_channel, 1, &nt);
    sks_out_ki32_array(&w, "argmax_block", r->argmax_block, 1, &nt);
    sks_out_ki32_array(&w, "channel_count", r->channel_count, 1, &d);
    sks_out_kmap(&w, "exceptions", 2);
    sks_out_ki32_array(&w, "ids", r->exceptions, 1, &ne);
    sks_out_str(&w, "pieces");
    if (piece) {
        sks_out_array(&w, (size_t)r->n_exceptions);
        for (int i = 0; i < r->n_exceptions; i++) {
            const char *p = piece(piece_ud, r->exceptions[i]);
            sks_out_str_or_nil(&w, p);
        }
    } else {
        sks_out_nil(&w);
    }
    return sks_out_finish(&w, path);
}

/* Tokens swept: --sample 0 (auto) sweeps vocabularies up to 8192 whole and samples 4096
 * ids of larger ones; -1 is everything; N a sample of N (everything when N >= V). */
int sks_vocab_sample_size(int opt, int V) {
    if (opt < 0) return 0;
    if (opt == 0) return V <= 8192 ? 0 : 4096;
    return opt >= V ? 0 : opt;
}
