/* test-vocab.c - the vocabulary sweep on a small in-memory model against references
 * computed here: typical medians from the residual stream captured with hooks (sorted,
 * numpy's median), and per-token ratios from one causal forward per token (T = 1, a
 * different code path from the batched SKS_FWD_INDEPENDENT sweep). */
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/sks_vocab.h"

enum { NL = 3, D = 16, F = 24, H = 2, HKV = 1, DH = 8, V = 70, NB = 2 * NL + 1 };

typedef struct {
    sks_model *m;
    float *bufs[32];
    int nb;
} tmodel;

static uint64_t rs;
static double urand(void) {
    rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rs >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}
static const float *arr(tmodel *t, size_t n, double scale, double offset) {
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++) a[i] = (float)(offset + scale * urand());
    t->bufs[t->nb++] = a;
    return a;
}
static void set_t(sks_model *m, sks_role role, int layer, int64_t r, int64_t c, const float *data) {
    int64_t s[2] = {r, c};
    if (sks_model_set_tensor(m, role, layer, SKS_DT_F32, c ? 2 : 1, s, data, NULL)) fail_msg("%s", sks_last_error());
}

/* Random weights; layer 0's FFN writes a large value into channel 3 for about half of
 * the inputs (its gate/up rows point along the embedding of the odd tokens), so some
 * tokens spike and some do not. */
static void make(tmodel *t, uint64_t seed) {
    memset(t, 0, sizeof *t);
    rs = seed;
    sks_arch a;
    sks_test_llama_arch(&a, NL, D, F, H, HKV, DH, V);
    assert_int_equal(sks_model_new_memory(&a, &t->m), 0);
    float *E = (float *)arr(t, (size_t)V * D, 1.0, 0);
    for (int v = 1; v < V; v += 2) E[v * D + 0] += 4.0f; /* odd tokens lean on channel 0 */
    set_t(t->m, SKS_ROLE_EMBED, -1, V, D, E);
    set_t(t->m, SKS_ROLE_FINAL_NORM, -1, D, 0, arr(t, D, 0.1, 1.0));
    for (int l = 0; l < NL; l++) {
        set_t(t->m, SKS_ROLE_ATTN_NORM, l, D, 0, arr(t, D, 0.1, 1.0));
        set_t(t->m, SKS_ROLE_FFN_NORM, l, D, 0, arr(t, D, 0.1, 1.0));
        set_t(t->m, SKS_ROLE_WQ, l, H * DH, D, arr(t, (size_t)H * DH * D, 0.3, 0));
        set_t(t->m, SKS_ROLE_WK, l, HKV * DH, D, arr(t, (size_t)HKV * DH * D, 0.3, 0));
        set_t(t->m, SKS_ROLE_WV, l, HKV * DH, D, arr(t, (size_t)HKV * DH * D, 0.3, 0));
        set_t(t->m, SKS_ROLE_WO, l, D, H * DH, arr(t, (size_t)D * H * DH, 0.3, 0));
        float *G = (float *)arr(t, (size_t)F * D, 0.2, 0), *U = (float *)arr(t, (size_t)F * D, 0.2, 0);
        float *Dn = (float *)arr(t, (size_t)D * F, 0.2, 0);
        if (l == 0)
            for (int j = 0; j < F; j++) {
                G[j * D + 0] += 1.5f;
                U[j * D + 0] += 1.5f;
                Dn[3 * F + j] = 3.0f;
            }
        set_t(t->m, SKS_ROLE_W_GATE, l, F, D, G);
        set_t(t->m, SKS_ROLE_W_UP, l, F, D, U);
        set_t(t->m, SKS_ROLE_W_DOWN, l, D, F, Dn);
    }
    assert_int_equal(sks_model_validate(t->m), 0);
}
static void unmake(tmodel *t) {
    sks_model_close(t->m);
    for (int i = 0; i < t->nb; i++) free(t->bufs[i]);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

typedef struct {
    float *res; /* (NB, T, D) */
    int T;
} cap;
static int cap_res(void *ud, int b, const float *h, int T, int d) {
    cap *c = ud;
    memcpy(c->res + (size_t)b * T * d, h, (size_t)T * d * sizeof(float));
    return 0;
}
static int cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* reference medians: pooled |h| over positions > 0 of all prompts, sorted */
static void ref_medians(const sks_model *m, int np, int32_t **pr, const int *lens, double *med) {
    size_t tot = 0;
    for (int i = 0; i < np; i++) tot += (size_t)(lens[i] - 1) * D;
    float *vals = malloc(sizeof(float) * tot * NB);
    size_t cnt[NB] = {0};
    for (int i = 0; i < np; i++) {
        cap c = {calloc((size_t)NB * lens[i] * D, sizeof(float)), lens[i]};
        sks_fwd_hooks hk;
        memset(&hk, 0, sizeof hk);
        hk.ud = &c;
        hk.on_residual = cap_res;
        sks_forward *fw;
        assert_int_equal(sks_forward_new(m, lens[i], &fw), 0);
        assert_int_equal(sks_forward_run(fw, pr[i], lens[i], SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
        sks_forward_free(fw);
        for (int b = 0; b < NB; b++)
            for (int t = 1; t < lens[i]; t++)
                for (int k = 0; k < D; k++) vals[(size_t)b * tot + cnt[b]++] = fabsf(c.res[((size_t)b * lens[i] + t) * D + k]);
        free(c.res);
    }
    for (int b = 0; b < NB; b++) {
        float *v = vals + (size_t)b * tot;
        qsort(v, tot, sizeof *v, cmp_f);
        med[b] = tot % 2 ? v[tot / 2] : 0.5 * ((double)v[tot / 2 - 1] + v[tot / 2]);
    }
    free(vals);
}

/* reference per-token numbers: token alone, causal T = 1 */
static void ref_token(const sks_model *m, int v, const double *med, double *ratio, double *maxabs, int *ch) {
    cap c = {calloc((size_t)NB * D, sizeof(float)), 1};
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = &c;
    hk.on_residual = cap_res;
    sks_forward *fw;
    assert_int_equal(sks_forward_new(m, 1, &fw), 0);
    int32_t tok = v;
    assert_int_equal(sks_forward_run(fw, &tok, 1, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
    sks_forward_free(fw);
    *ratio = -1;
    *maxabs = 0;
    for (int l = 0; l <= NL - 2; l++) {
        int b = 2 * l + 2;
        for (int k = 0; k < D; k++) {
            double a = fabs(c.res[(size_t)b * D + k]);
            if (a > *maxabs) *maxabs = a;
            if (a / med[b] > *ratio) *ratio = a / med[b], *ch = k;
        }
    }
    free(c.res);
}

static void test_medians_and_sweep(void **state) {
    (void)state;
    tmodel t;
    make(&t, 2024);
    int32_t p0[9] = {1, 5, 8, 13, 22, 40, 41, 3, 9}, p1[6] = {1, 60, 61, 62, 2, 7};
    int32_t *pr[2] = {p0, p1};
    int lens[2] = {9, 6};
    double med[NB], mref[NB];
    int64_t cnt;
    assert_int_equal(sks_vocab_typical_medians(t.m, 2, (const int32_t *const *)pr, lens, med, &cnt), 0);
    ref_medians(t.m, 2, pr, lens, mref);
    assert_int_equal(cnt, (8 + 5) * D);
    for (int b = 0; b < NB; b++) assert_true(rel(med[b], mref[b]) < 1e-12);

    sks_vocab_opts o;
    sks_vocab_opts_default(&o);
    o.batch = 16; /* several batches, the last one partial */
    sks_vocab_result *r;
    assert_int_equal(sks_vocab_run(t.m, &o, 2, (const int32_t *const *)pr, lens, NULL, &r), 0);
    assert_int_equal(r->n_tokens, V);
    assert_false(r->medians_given);
    for (int b = 0; b < NB; b++) assert_true(rel(r->typical_median[b], mref[b]) < 1e-12);
    /* per token, and the threshold bookkeeping from the reference ratios */
    double thr = 0;
    double rr[V];
    for (int v = 0; v < V; v++) {
        double ratio, ma;
        int ch = -1;
        ref_token(t.m, v, mref, &ratio, &ma, &ch);
        rr[v] = ratio;
        assert_int_equal(r->ids[v], v);
        assert_true(rel(r->ratio[v], ratio) < 1e-4);
        assert_true(rel(r->max_abs[v], ma) < 1e-4);
        assert_int_equal(r->argmax_channel[v], ch);
        assert_true(r->argmax_block[v] >= 2 && r->argmax_block[v] <= 2 * (NL - 1) && r->argmax_block[v] % 2 == 0);
        thr += ratio / V;
    }
    sks_vocab_result_free(r);
    /* a threshold at the mean ratio splits the vocabulary: the count follows the definition */
    o.ratio = thr;
    assert_int_equal(sks_vocab_run(t.m, &o, 2, (const int32_t *const *)pr, lens, NULL, &r), 0);
    int n_sp = 0;
    for (int v = 0; v < V; v++) n_sp += rr[v] >= thr * (1 + 1e-6) ? 1 : 0;
    int n_sp_hi = 0;
    for (int v = 0; v < V; v++) n_sp_hi += rr[v] >= thr * (1 - 1e-6) ? 1 : 0;
    assert_true(r->n_spike >= n_sp && r->n_spike <= n_sp_hi);
    assert_true(r->n_spike > 0 && r->n_spike < V);
    assert_int_equal(r->n_spike + r->n_exceptions, V);
    assert_true(fabs(r->spike_fraction - (double)r->n_spike / V) < 1e-15);
    for (int i = 1; i < r->n_exceptions; i++) assert_true(r->exceptions[i - 1] < r->exceptions[i]);
    for (int i = 0; i < r->n_exceptions; i++) assert_true(rr[r->exceptions[i]] < thr * (1 + 1e-6));
    int total = 0;
    for (int k = 0; k < D; k++) total += r->channel_count[k];
    assert_int_equal(total, r->n_spike);
    assert_true(r->top_channel >= 0 && r->channel_count[r->top_channel] > 0);
    sks_vocab_result_free(r);
    /* --abs above every token: nothing spikes */
    o.ratio = 1e-9;
    o.abs_thresh = 1e9;
    assert_int_equal(sks_vocab_run(t.m, &o, 2, (const int32_t *const *)pr, lens, NULL, &r), 0);
    assert_int_equal(r->n_spike, 0);
    assert_int_equal(r->n_exceptions, V);
    assert_int_equal(r->top_channel, -1);
    sks_vocab_result_free(r);
    unmake(&t);
}

static void test_given_medians_and_sample(void **state) {
    (void)state;
    tmodel t;
    make(&t, 7);
    double med[NB];
    for (int b = 0; b < NB; b++) med[b] = 0.5 + 0.1 * b;
    sks_vocab_opts o;
    sks_vocab_opts_default(&o);
    o.medians = med;
    o.sample = 20;
    o.seed = 5;
    sks_vocab_result *r, *r2;
    assert_int_equal(sks_vocab_run(t.m, &o, 0, NULL, NULL, NULL, &r), 0);
    assert_true(r->medians_given);
    assert_int_equal(r->n_tokens, 20);
    for (int b = 0; b < NB; b++) assert_true(r->typical_median[b] == med[b]);
    for (int i = 0; i < 20; i++) {
        assert_true(r->ids[i] >= 0 && r->ids[i] < V);
        if (i) assert_true(r->ids[i - 1] < r->ids[i]); /* distinct, ascending */
        double ratio, ma;
        int ch;
        ref_token(t.m, r->ids[i], med, &ratio, &ma, &ch);
        assert_true(rel(r->ratio[i], ratio) < 1e-4);
    }
    /* deterministic: the same seed gives the same sample, another seed another one */
    assert_int_equal(sks_vocab_run(t.m, &o, 0, NULL, NULL, NULL, &r2), 0);
    assert_memory_equal(r->ids, r2->ids, 20 * sizeof(int32_t));
    sks_vocab_result_free(r2);
    o.seed = 6;
    assert_int_equal(sks_vocab_run(t.m, &o, 0, NULL, NULL, NULL, &r2), 0);
    assert_true(memcmp(r->ids, r2->ids, 20 * sizeof(int32_t)) != 0);
    sks_vocab_result_free(r2);

    /* the writer */
    char *dir = sks_test_tmpdir(), path[4200];
    snprintf(path, sizeof path, "%s/vocab.msgpack", dir);
    assert_int_equal(sks_vocab_write(r, t.m, &o, NULL, NULL, path), 0);
    size_t len;
    char *buf = sks_test_read_file(path, &len);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, buf, len, NULL), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *root = &u.data;
    assert_int_equal(root->type, MSGPACK_OBJECT_MAP);
    int seen = 0;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (kv->key.via.str.size == 6 && !memcmp(kv->key.via.str.ptr, "schema", 6)) {
            assert_memory_equal(kv->val.via.str.ptr, "sinkscope.vocab/1", 17);
            seen |= 1;
        }
        if (kv->key.via.str.size == 6 && !memcmp(kv->key.via.str.ptr, "tokens", 6)) {
            const msgpack_object *tk = &kv->val;
            for (uint32_t j = 0; j < tk->via.map.size; j++)
                if (tk->via.map.ptr[j].key.via.str.size == 5 && !memcmp(tk->via.map.ptr[j].key.via.str.ptr, "ratio", 5)) {
                    const msgpack_object *ar = &tk->via.map.ptr[j].val;
                    for (uint32_t q = 0; q < ar->via.map.size; q++)
                        if (ar->via.map.ptr[q].key.via.str.size == 4 && !memcmp(ar->via.map.ptr[q].key.via.str.ptr, "data", 4)) {
                            assert_int_equal(ar->via.map.ptr[q].val.via.bin.size, 20 * 4);
                            assert_memory_equal(ar->via.map.ptr[q].val.via.bin.ptr, r->ratio, 20 * 4);
                            seen |= 2;
                        }
                }
        }
    }
    assert_int_equal(seen, 3);
    msgpack_unpacked_destroy(&u);
    free(buf);
    sks_test_rm_tree(dir);
    free(dir);
    sks_vocab_result_free(r);
    unmake(&t);
}

static void test_bad_inputs(void **state) {
    (void)state;
    tmodel t;
    make(&t, 3);
    sks_vocab_result *r;
    int32_t one[1] = {1}, bad[3] = {1, V, 2};
    const int32_t *p1[1] = {one}, *p2[1] = {bad};
    int l1 = 1, l3 = 3;
    assert_int_equal(sks_vocab_run(t.m, NULL, 1, p1, &l1, NULL, &r), SKS_EARG); /* needs >= 2 tokens */
    assert_int_equal(sks_vocab_run(t.m, NULL, 1, p2, &l3, NULL, &r), SKS_EARG); /* id out of range */
    assert_int_equal(sks_vocab_run(t.m, NULL, 0, NULL, NULL, NULL, &r), SKS_EARG); /* no prompts, no medians */
    assert_null(r);
    unmake(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_medians_and_sweep),
        cmocka_unit_test(test_given_medians_and_sample),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
