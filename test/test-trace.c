/* test-trace.c - trace on in-memory models: a planted spike with a known lifecycle
 * (step-ups at the FFNs of layers 0 and 1, step-down at the FFN of layer 2), uniform
 * attention whose alpha_j has a closed form, block statistics against an independent
 * recomputation (sorting for the median), default tokens, and the msgpack file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/sks_trace.h"

enum { D = 8, F = 2, L = 3, H = 2, DH = 4, V = 6 };

typedef struct {
    float E[V * D], ones[D], zeros[64], wg[L][F * D], wu[L][F * D], wd[L][D * F], wq[H * DH * D];
    sks_model *m;
} planted;

/* Token 0 has channel 0 = +2, the others -2; channel 5 is 0, the others +-1.
 * FFN 0: gate row 0 = 5 e_0, up row 0 = e_0, W_down[5, 0] = 14: SiLU(5 x_0) x_0 is
 *   ~8.5 * 1.7 for token 0 and ~0 for the others, so channel 5 of token 0 jumps to ~200.
 * FFN 1: gate = up = e_5, W_down[5, 0] = 34: x_5 ~ sqrt(d) once channel 5 dominates the
 *   RMS, so token 0 gains ~+255 (the main step-up) and the others (x_5 ~ 0) nothing.
 * FFN 2: the same with W_down[5, 0] = a2 (-40): token 0 loses ~300.
 * W_O = 0 (unless wo): attention blocks change nothing (h_{2l+1} = h_{2l}).
 * W_Q = wq (0 unless wq_scale != 0). */
static void planted_build_ex(planted *p, float wq_scale, float a2, int wo) {
    memset(p, 0, sizeof *p);
    for (int v = 0; v < V; v++)
        for (int c = 0; c < D; c++) p->E[v * D + c] = c == 0 ? (v == 0 ? 2.0f : -2.0f) : c == 5 ? 0.0f : (((v * 3 + c * 5) % 7) < 3 ? 1.0f : -1.0f);
    for (int c = 0; c < D; c++) p->ones[c] = 1;
    const float a[L] = {14, 34, a2};
    for (int l = 0; l < L; l++) {
        int rd = l == 0 ? 0 : 5;
        p->wg[l][rd] = l == 0 ? 5.0f : 1.0f;
        p->wu[l][rd] = 1.0f;
        p->wd[l][5 * F + 0] = a[l];
    }
    for (int i = 0; i < H * DH * D; i++) p->wq[i] = wq_scale * (float)(((i * 7) % 11) - 5) / 5.0f;
    sks_arch ar;
    sks_test_llama_arch(&ar, L, D, F, H, 1, DH, V);
    ar.bos_id = 0;
    ar.eos_id = 5;
    assert_int_equal(sks_model_new_memory(&ar, &p->m), 0);
    sks_test_set_f32(p->m, SKS_ROLE_EMBED, -1, V, D, p->E);
    sks_test_set_f32(p->m, SKS_ROLE_FINAL_NORM, -1, D, 0, p->ones);
    for (int l = 0; l < L; l++)
        sks_test_set_llama_layer(p->m, l, &(sks_test_layer_w){p->ones, p->wq, p->wq, p->wq, wo ? p->wq : p->zeros, p->ones,
                                                               p->wg[l], p->wu[l], p->wd[l]});
    assert_int_equal(sks_model_validate(p->m), 0);
}

/* a planted model on the heap (see planted_build_ex), and its release */
static planted *planted_new(float wq_scale, float a2, int wo) {
    planted *p = malloc(sizeof *p);
    assert_non_null(p);
    planted_build_ex(p, wq_scale, a2, wo);
    return p;
}
static void planted_free(planted *p) {
    sks_model_close(p->m);
    free(p);
}

static const int32_t P0[6] = {0, 3, 1, 4, 2, 3};
static const int32_t P1[12] = {0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 1, 1};
static const int32_t *const PROMPTS[2] = {P0, P1};
static const int LENS[2] = {6, 12};

/* trace of p's model on the first n of P0, P1 with o */
static sks_trace_result *trace_planted(const planted *p, int n, const sks_trace_opts *o) {
    sks_trace_result *r;
    int rc = sks_trace_run(p->m, n, PROMPTS, LENS, o, &r);
    if (rc) fail_msg("trace: %s", sks_last_error());
    return r;
}

static double harmonic_alpha(int T, int j) { /* uniform causal attention */
    double s = 0;
    for (int i = j; i < T; i++) s += 1.0 / (i + 1);
    return s / (T - j);
}

static void test_planted_lifecycle_and_uniform_alpha(void **state) {
    (void)state;
    planted *p = planted_new(0.0f, -40.0f, 0);
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    /* the one spike rule's defaults (sks_rule.h) */
    assert_true(o.outlier == 20 && o.abs_thresh == 0 && o.ratio == 0 && o.min_blocks == 3 && o.topk == 8 &&
                o.step_frac == 0.25 && o.eps == 0.3 && o.n_alpha == 4);
    o.outlier = 0; /* the fixed-threshold rule */
    o.abs_thresh = 50;
    o.ratio = 50;
    sks_trace_result *r = trace_planted(p, 2, &o);
    assert_int_equal(r->n_blocks, 2 * L + 1);
    assert_int_equal(r->n_spike_channels, 1);
    assert_int_equal(r->spike_channels[0], 5);
    assert_int_equal(r->n_spike_tokens, 1);
    assert_int_equal(r->spike_tokens[0], 0);
    assert_int_equal(r->n_lifecycles, 1);
    const sks_lifecycle *lc = &r->lifecycles[0];
    assert_int_equal(lc->token, 0);
    assert_int_equal(lc->channel, 5);
    assert_int_equal(lc->main_up, 4);
    assert_int_equal(lc->n_up, 2);
    assert_int_equal(lc->up_blocks[0], 2);
    assert_int_equal(lc->up_blocks[1], 4);
    assert_int_equal(lc->n_down, 1);
    assert_int_equal(lc->down_blocks[0], 6);
    assert_int_equal(lc->plateau_first, 4);
    assert_int_equal(lc->plateau_last, 5);
    /* attention blocks add nothing (W_O = 0) */
    for (int l = 0; l < L; l++) assert_true(lc->values[2 * l + 1] == lc->values[2 * l]);
    assert_true(lc->values[4] > 300 && lc->values[6] < lc->values[4] / 2);
    assert_true(fabs(lc->peak_abs - fabs(lc->values[4])) < 1e-3);
    /* the same lifecycle recomputed by a second pass (no residual kept in memory) */
    {
        sks_trace_opts o2 = o;
        o2.keep_bytes = 0;
        sks_trace_result *r2 = trace_planted(p, 2, &o2);
        assert_int_equal(r2->n_lifecycles, 1);
        assert_memory_equal(r2->lifecycles[0].values, lc->values, (size_t)r->n_blocks * sizeof *lc->values);
        assert_int_equal(r2->lifecycles[0].main_up, lc->main_up);
        sks_trace_result_free(r2);
    }
    /* the top entry of the spike blocks is (0, 5) */
    for (int b = 2; b <= 6; b++) {
        assert_int_equal(r->blocks[b].top_token, 0);
        assert_int_equal(r->blocks[b].top_channel, 5);
        assert_true(r->blocks[b].kind == (b % 2 ? SKS_BLOCK_ATTN : SKS_BLOCK_FFN));
        assert_int_equal(r->blocks[b].layer, (b - 1) / 2);
    }
    /* W_Q = 0: A[i, j] = 1/(i+1) causal, alpha_j closed form, averaged over the prompts */
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < 4; j++) {
                double want = 0.5 * (harmonic_alpha(6, j) + harmonic_alpha(12, j));
                assert_true(fabs(r->alpha[((size_t)l * H + h) * 4 + j] - want) < 1e-6);
            }
    /* alpha_0: 0.408 (T = 6) > 0.3 and 0.259 (T = 12) < 0.3: sink ratio 100% and 0% */
    assert_true(fabs(r->sink_ratio_per_prompt[0] - 100) < 1e-9);
    assert_true(fabs(r->sink_ratio_per_prompt[1]) < 1e-9);
    assert_true(fabs(r->sink_ratio - 50) < 1e-9);
    sks_trace_result_free(r);

    /* min_blocks 6: the spike lasts 5 blocks, nothing qualifies */
    o.min_blocks = 6;
    r = trace_planted(p, 1, &o);
    assert_int_equal(r->n_spike_channels, 0);
    assert_int_equal(r->n_lifecycles, 0);
    sks_trace_result_free(r);
    /* abs above the peak: nothing */
    o.min_blocks = 3;
    o.abs_thresh = 1e4;
    r = trace_planted(p, 1, &o);
    assert_int_equal(r->n_spike_tokens, 0);
    sks_trace_result_free(r);
    /* a plateau that sags a little (FFN 2 removes ~8 of ~480) has no step-down: the
     * largest decrease is below step_frac of the main increase */
    sks_model_close(p->m);
    planted_build_ex(p, 0.0f, -1.0f, 0);
    o.abs_thresh = 50;
    r = trace_planted(p, 1, &o);
    assert_int_equal(r->n_lifecycles, 1);
    assert_true(r->lifecycles[0].values[6] < r->lifecycles[0].values[5]);
    assert_int_equal(r->lifecycles[0].n_down, 0);
    assert_int_equal(r->lifecycles[0].plateau_last, 2 * L);
    sks_trace_result_free(r);
    /* bad options */
    o.abs_thresh = 50;
    o.step_frac = 0;
    assert_int_equal(sks_trace_run(p->m, 1, PROMPTS, LENS, &o, &r), SKS_EARG);
    planted_free(p);
}

/* ---- block statistics against an independent recomputation -------------------------- */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void test_block_stats_independent(void **state) {
    (void)state;
    planted *p = planted_new(0.8f, -40.0f, 1); /* W_Q != 0: attention not uniform; W_O != 0: |h| values distinct */
    const int T = 12, nb = 2 * L + 1;
    sks_test_cap c = {.L = L, .H = H, .a0 = calloc(L * H, sizeof(double)), .res = malloc((size_t)nb * T * D * sizeof(float))};
    sks_fwd_hooks hk = sks_test_cap_hooks(&c);
    sks_forward *f;
    assert_int_equal(sks_forward_new(p->m, T, &f), 0);
    assert_int_equal(sks_forward_run(f, P1, T, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
    sks_forward_free(f);

    sks_trace_opts o;
    sks_trace_opts_default(&o);
    o.topk = 5;
    o.keep_residual = 1;
    const int32_t *prompts[1] = {P1};
    int lens[1] = {T};
    sks_trace_result *r;
    assert_int_equal(sks_trace_run(p->m, 1, prompts, lens, &o, &r), 0);
    float *tmp = malloc((size_t)T * D * sizeof(float));
    for (int b = 0; b < nb; b++) {
        const float *hb = c.res + (size_t)b * T * D;
        for (int i = 0; i < T * D; i++) tmp[i] = fabsf(hb[i]);
        qsort(tmp, (size_t)T * D, sizeof(float), cmp_float);
        double med = 0.5 * ((double)tmp[T * D / 2 - 1] + tmp[T * D / 2]); /* T*D even */
        assert_true(r->blocks[b].median_abs == med);
        assert_true(r->blocks[b].max_abs == tmp[T * D - 1]);
        /* top entries: descending |value|, each a real entry of h_b */
        assert_int_equal(r->blocks[b].n_top, 5);
        for (int k = 0; k < 5; k++) {
            const sks_trace_entry *e = &r->blocks[b].top[k];
            assert_true(e->value == hb[e->token * D + e->channel]);
            assert_true(fabsf(e->value) == tmp[T * D - 1 - k]);
        }
        for (int ch = 0; ch < D; ch++) {
            float mx = 0;
            for (int t = 0; t < T; t++) mx = fmaxf(mx, fabsf(hb[t * D + ch]));
            assert_true(r->channel_max[(size_t)b * D + ch] == mx);
        }
    }
    for (int i = 0; i < L * H; i++) assert_true(fabs(r->alpha[(size_t)i * o.n_alpha] - c.a0[i]) < 1e-6);
    /* keep_residual: h_b of every block, exactly what the forward pass produced */
    assert_non_null(r->residual);
    assert_memory_equal(r->residual, c.res, (size_t)nb * T * D * sizeof(float));
    assert_int_equal(r->n_tokens, T);
    assert_memory_equal(r->tokens, P1, sizeof P1);
    sks_trace_result_free(r);
    free(tmp);
    free(c.res);
    free(c.a0);
    planted_free(p);
}

static void test_default_tokens(void **state) {
    (void)state;
    planted *p = planted_new(0.0f, -40.0f, 0);
    int32_t a[64], b[64], c[64];
    sks_trace_default_tokens(p->m, 64, 7, a);
    sks_trace_default_tokens(p->m, 64, 7, b);
    sks_trace_default_tokens(p->m, 64, 8, c);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(a[0], 0); /* BOS of this model */
    int differ = 0, seen[V] = {0};
    for (int t = 0; t < 64; t++) {
        assert_true(a[t] >= 0 && a[t] < V);
        if (t) assert_true(a[t] != 0 && a[t] != 5); /* BOS and EOS skipped */
        differ += a[t] != c[t];
        seen[a[t]]++;
    }
    assert_true(differ > 10);
    for (int v = 1; v < 5; v++) assert_true(seen[v] > 0);
    planted_free(p);
}

/* ---- msgpack file --------------------------------------------------------------------- */

static const msgpack_object *mp_get(const msgpack_object *map, const char *key) {
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            !memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size))
            return &kv->val;
    }
    fail_msg("key %s missing", key);
    return NULL;
}

static void test_write_msgpack(void **state) {
    (void)state;
    planted *p = planted_new(0.0f, -40.0f, 0);
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    o.abs_thresh = 50;
    o.ratio = 50;
    sks_trace_result *r = trace_planted(p, 2, &o);
    char *dir = sks_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/trace.msgpack", dir);
    assert_int_equal(sks_trace_write(r, p->m, &o, path), 0);
    size_t n;
    char *buf = sks_test_read_file(path, &n);
    assert_non_null(buf);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_true(off == n); /* one object, every declared map/array size consistent */
    const msgpack_object *root = &u.data;
    const msgpack_object *sc = mp_get(root, "schema");
    assert_true(sc->via.str.size == 17 && !memcmp(sc->via.str.ptr, "sinkscope.trace/1", 17));
    assert_int_equal(mp_get(mp_get(root, "model"), "n_layers")->via.u64, L);
    assert_true(mp_get(mp_get(root, "params"), "ratio")->via.f64 == 50);
    assert_int_equal(mp_get(mp_get(root, "params"), "n_prompts")->via.u64, 2);
    const msgpack_object *blocks = mp_get(root, "blocks");
    assert_int_equal(blocks->via.array.size, 2 * L + 1);
    assert_int_equal(mp_get(&blocks->via.array.ptr[4], "top_channel")->via.u64, 5);
    const msgpack_object *kind = mp_get(&blocks->via.array.ptr[4], "kind");
    assert_true(kind->via.str.size == 3 && !memcmp(kind->via.str.ptr, "ffn", 3));
    assert_int_equal(mp_get(root, "spike_channels")->via.array.ptr[0].via.u64, 5);
    const msgpack_object *lcs = mp_get(root, "lifecycles");
    assert_int_equal(lcs->via.array.size, 1);
    const msgpack_object *up = mp_get(&lcs->via.array.ptr[0], "step_up");
    assert_int_equal(up->via.array.size, 2);
    assert_int_equal(mp_get(&up->via.array.ptr[1], "block")->via.u64, 4);
    const msgpack_object *vals = mp_get(&lcs->via.array.ptr[0], "values");
    assert_int_equal(mp_get(vals, "data")->via.bin.size, (2 * L + 1) * 4);
    const msgpack_object *alpha = mp_get(root, "alpha");
    const msgpack_object *shape = mp_get(alpha, "shape");
    assert_int_equal(shape->via.array.size, 3);
    assert_int_equal(shape->via.array.ptr[2].via.u64, 4);
    assert_int_equal(mp_get(alpha, "data")->via.bin.size, L * H * 4 * 8);
    double a0;
    memcpy(&a0, mp_get(alpha, "data")->via.bin.ptr, 8);
    assert_true(a0 == r->alpha[0]);
    /* alpha_0 averaged: (0.408 + 0.259) / 2 = 0.33 > 0.3: every head is listed */
    assert_int_equal(mp_get(root, "sink_heads")->via.array.size, L * H);
    assert_true(mp_get(root, "sink_ratio")->via.f64 == 50);
    const msgpack_object *cm = mp_get(root, "channel_max");
    assert_int_equal(mp_get(cm, "data")->via.bin.size, (2 * L + 1) * D * 4);
    const msgpack_object *tk = mp_get(root, "tokens");
    assert_int_equal(mp_get(tk, "data")->via.bin.size, 6 * 4);
    assert_int_equal(root->via.map.size, 15); /* no `residual` unless asked */
    msgpack_unpacked_destroy(&u);
    free(buf);
    sks_trace_result_free(r);
    /* with keep_residual: `residual` (2L+1, T, d) */
    o.keep_residual = 1;
    r = trace_planted(p, 2, &o);
    assert_int_equal(sks_trace_write(r, p->m, &o, path), 0);
    buf = sks_test_read_file(path, &n);
    assert_non_null(buf);
    msgpack_unpacked_init(&u);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&u, buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_true(off == n);
    const msgpack_object *res = mp_get(&u.data, "residual");
    assert_int_equal(mp_get(res, "shape")->via.array.ptr[1].via.u64, 6);
    assert_int_equal(mp_get(res, "data")->via.bin.size, (2 * L + 1) * 6 * D * 4);
    assert_memory_equal(mp_get(res, "data")->via.bin.ptr, r->residual, (size_t)(2 * L + 1) * 6 * D * 4);
    assert_true(mp_get(mp_get(&u.data, "params"), "keep_residual")->via.boolean);
    msgpack_unpacked_destroy(&u);
    free(buf);
    sks_test_rm_tree(dir);
    free(dir);
    sks_trace_result_free(r);
    planted_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_planted_lifecycle_and_uniform_alpha),
        cmocka_unit_test(test_block_stats_independent),
        cmocka_unit_test(test_default_tokens),
        cmocka_unit_test(test_write_msgpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

