/* test-cost.c - perplexity windows and NLL, the activation quantizers, the KV limit of
 * the forward pass, and the exact identities of quant-risk and kv-eval on a synthetic
 * model (no fixtures needed):
 *   - every target t >= 1 is scored by exactly one window, whatever window and stride;
 *   - the NLL's log-sum-exp is stable for logits near 1e4 (against long double);
 *   - E4M3: every finite E4M3 value (decoded from its bit pattern here) rounds to itself,
 *     midpoints round to the even mantissa, |x| >= 448 saturates;
 *   - INT8 of values on the grid is exact, keeping every channel leaves x as it is;
 *   - the quantizers and the error formula against numpy (float32 arithmetic, round half
 *     to even, E4M3 by nearest value of the decoded table) on a tensor with an outlier
 *     channel: equal to 1e-12 relative (both compute the same f32 values; only the f64
 *     sums differ in order);
 *   - kv-eval: a window W >= T gives exactly the full-context NLL, streaming with S = 0
 *     is exactly recent, the kvmap variant with every KV head kept is exactly streaming
 *     with S = 1, and the attention probabilities are exactly 0 on the evicted keys;
 *   - quant-risk with every channel kept: zero error everywhere and the f32 perplexity.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sks_test.h"
#include "analysis/sks_kveval.h"
#include "analysis/sks_quantrisk.h"
#include "analysis/sks_synth.h"

static uint64_t rng_state;
static uint64_t rng_u64(void) { return sks_test_rng_u64(&rng_state); }
static double rng_gauss(void) { return sks_test_rng_gauss(&rng_state); }

static void test_ppl_plan(void **state) {
    (void)state;
    const int cases[][3] = {{2, 2, 1}, {10, 4, 4}, {10, 4, 2}, {10, 4, 1}, {3, 8, 8}, {1241, 256, 256},
                            {1241, 256, 128}, {1241, 100, 37}, {257, 256, 256}, {256, 256, 256}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int n = cases[c][0], W = cases[c][1], S = cases[c][2];
        sks_ppl_window *w = NULL;
        int nw = 0;
        assert_int_equal(sks_ppl_plan(n, W, S, &w, &nw), 0);
        int *seen = calloc((size_t)n, sizeof *seen);
        for (int i = 0; i < nw; i++) {
            assert_int_equal(w[i].begin, i * S);
            assert_true(w[i].end - w[i].begin <= W && w[i].end <= n);
            assert_true(w[i].first > w[i].begin && w[i].first <= w[i].end);
            for (int t = w[i].first; t < w[i].end; t++) seen[t]++;
        }
        assert_int_equal(w[nw - 1].end, n);
        if (nw > 1) assert_true(w[nw - 2].end < n); /* no window after the end is reached */
        assert_int_equal(seen[0], 0);
        for (int t = 1; t < n; t++)
            if (S == W) assert_int_equal(seen[t], t % W != 0); /* each window's first token has no prediction */
            else assert_int_equal(seen[t], 1);
        free(seen);
        free(w);
    }
    sks_ppl_window *w = NULL;
    int nw;
    assert_int_not_equal(sks_ppl_plan(1, 4, 4, &w, &nw), 0);
    assert_int_not_equal(sks_ppl_plan(10, 4, 5, &w, &nw), 0);
}

static void test_ppl_nll(void **state) {
    (void)state;
    enum { V = 300 };
    float z[V];
    rng_state = 7;
    for (int shift = 0; shift <= 1; shift++) {
        for (int v = 0; v < V; v++) z[v] = (float)(shift * 1e4 + 3.0 * rng_gauss());
        long double mx = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int v = 0; v < V; v++) s += expl((long double)z[v] - mx);
        for (int id = 0; id < V; id += 37) {
            double want = (double)(mx + logl(s) - (long double)z[id]);
            assert_true(fabs(sks_ppl_nll(z, V, id) - want) <= 1e-12 * fmax(1.0, fabs(want)));
        }
    }
}

/* E4M3 bit pattern (S EEEE MMM) to its value, from the format's definition */
static double e4m3_decode(int b) {
    int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
    double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -v : v;
}

static void test_e4m3(void **state) {
    (void)state;
    double vals[128];
    int nv = 0;
    for (int b = 0; b < 127; b++) { /* 0x7f is NaN */
        double v = e4m3_decode(b);
        vals[nv++] = v;
        assert_true((double)sks_e4m3_round((float)v) == v);
        assert_true((double)sks_e4m3_round((float)-v) == -v);
    }
    assert_true(vals[126] == 448.0 && vals[1] == ldexp(1.0, -9));
    for (int i = 0; i + 1 < nv; i++) {
        double mid = 0.5 * (vals[i] + vals[i + 1]);
        double even = (i % 2 == 0) ? vals[i] : vals[i + 1]; /* even mantissa: even bit pattern */
        assert_true((double)sks_e4m3_round((float)mid) == even);
        double below = nextafter(mid, 0), above = nextafter(mid, 1e9);
        assert_true((double)sks_e4m3_round((float)below) == vals[i] || (float)below == (float)mid);
        assert_true((double)sks_e4m3_round((float)above) == vals[i + 1] || (float)above == (float)mid);
    }
    assert_true(sks_e4m3_round(449.0f) == 448.0f && sks_e4m3_round(1e30f) == 448.0f);
    assert_true(sks_e4m3_round(-1e30f) == -448.0f && sks_e4m3_round(INFINITY) == 448.0f);
    assert_true(isnan(sks_e4m3_round(NAN)));
}

static void test_fakequant_identities(void **state) {
    (void)state;
    enum { T = 5, N = 12 };
    float x[T * N], y[T * N];
    unsigned char all[N];
    memset(all, 1, sizeof all);
    rng_state = 11;
    for (int i = 0; i < T * N; i++) x[i] = (float)(rng_gauss() * (i % N == 3 ? 80 : 1));
    for (int s = 0; s < SKS_Q_N; s++) {
        memcpy(y, x, sizeof x);
        sks_fakequant(s, y, T, N, all);
        assert_memory_equal(x, y, sizeof x); /* every channel kept: nothing changes */
        float z[T * N] = {0};
        sks_fakequant(s, z, T, N, NULL);
        for (int i = 0; i < T * N; i++) assert_true(z[i] == 0.0f);
    }
    /* INT8 on the grid k s (s a power of two, max |k| = 127 in the tensor and in every
     * row): exact per tensor and per token */
    for (int t = 0; t < T; t++)
        for (int c = 0; c < N; c++) {
            int k = (int)(rng_u64() % 255) - 127;
            if (c == t) k = (t % 2) ? 127 : -127;
            x[t * N + c] = (float)k * 0x1p-5f;
        }
    for (int s = SKS_Q_INT8_TENSOR; s <= SKS_Q_INT8_TOKEN; s++) {
        memcpy(y, x, sizeof x);
        sks_fakequant(s, y, T, N, NULL);
        assert_memory_equal(x, y, sizeof x);
    }
    /* INT4 per token: error at most half a step of the row */
    for (int i = 0; i < T * N; i++) x[i] = (float)rng_gauss();
    memcpy(y, x, sizeof x);
    sks_fakequant(SKS_Q_INT4_TOKEN, y, T, N, NULL);
    for (int t = 0; t < T; t++) {
        float amax = 0;
        for (int c = 0; c < N; c++) amax = fmaxf(amax, fabsf(x[t * N + c]));
        for (int c = 0; c < N; c++) assert_true(fabsf(y[t * N + c] - x[t * N + c]) <= 0.5f * amax / 7.0f * 1.0001f);
    }
}

/* The numpy reference: reads T, N, the keep column and x (float32) from a file, prints
 * rel_err for each scheme without and with the column kept. */
static const char sks__numpy_ref[] =
    "import sys, numpy as np\n"
    "T, N, kc = [int(v) for v in sys.argv[2:5]]\n"
    "x = np.fromfile(sys.argv[1], dtype=np.float32).reshape(T, N)\n"
    "vals = []\n"
    "for b in range(127):\n"
    "    e, m = (b >> 3) & 15, b & 7\n"
    "    vals.append(m / 8.0 * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7))\n"
    "tab = np.array(vals)\n"
    "def e4m3(v):\n"
    "    a = np.minimum(np.abs(v.astype(np.float64)), 448.0)\n"
    "    i = np.clip(np.searchsorted(tab, a), 1, 126)\n"
    "    lo, hi = tab[i - 1], tab[i]\n"
    "    up = (a - lo > hi - a) | ((a - lo == hi - a) & (i % 2 == 0))\n"
    "    return (np.sign(v) * np.where(up, hi, lo)).astype(np.float32)\n"
    "def quant(x, s, keep):\n"
    "    y = x.copy(); cols = [c for c in range(N) if c not in keep]; z = x[:, cols]\n"
    "    if s == 'fp8':\n"
    "        sc = np.float32(np.abs(z).max()) / np.float32(448)\n"
    "        q = e4m3(z / sc) * sc\n"
    "    else:\n"
    "        qm = np.float32(127 if s.startswith('int8') else 7)\n"
    "        am = np.abs(z).max(axis=1, keepdims=True) if s.endswith('token') else np.abs(z).max()\n"
    "        sc = (np.float32(am) / qm).astype(np.float32)\n"
    "        q = (np.clip(np.rint(z / sc), -qm, qm) * sc).astype(np.float32)\n"
    "    y[:, cols] = q\n"
    "    return y\n"
    "for s in ['int8-tensor', 'int8-token', 'int4-tensor', 'int4-token', 'fp8']:\n"
    "    for keep in ([], [kc]):\n"
    "        y = quant(x, s, keep)\n"
    "        d = y.astype(np.float64) - x.astype(np.float64)\n"
    "        print(repr(float(np.sqrt((d * d).sum() / (x.astype(np.float64) ** 2).sum()))))\n";

static void test_fakequant_numpy(void **state) {
    (void)state;
    if (access("/usr/bin/python3", X_OK) || system("/usr/bin/python3 -c 'import numpy' 2>/dev/null")) {
        skip(); /* numpy is the reference: without it this check cannot run */
    }
    enum { T = 9, N = 40, KC = 17 };
    float x[T * N];
    rng_state = 23;
    for (int i = 0; i < T * N; i++) x[i] = (float)(rng_gauss() * (i % N == KC ? 150.0 : 1.0));
    char *dir = sks_test_tmpdir();
    char xp[512], pp[512], cmd[1600];
    snprintf(xp, sizeof xp, "%s/x.f32", dir);
    snprintf(pp, sizeof pp, "%s/ref.py", dir);
    FILE *f = fopen(xp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(x, sizeof x, 1, f), 1);
    fclose(f);
    f = fopen(pp, "w");
    assert_non_null(f);
    fputs(sks__numpy_ref, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %d %d %d", pp, xp, T, N, KC);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    unsigned char keep[N] = {0};
    keep[KC] = 1;
    double ss = 0;
    for (int i = 0; i < T * N; i++) ss += (double)x[i] * x[i];
    for (int s = 0; s < SKS_Q_N; s++)
        for (int k = 0; k < 2; k++) {
            double want;
            assert_int_equal(fscanf(p, "%lf", &want), 1);
            float y[T * N];
            memcpy(y, x, sizeof x);
            sks_fakequant(s, y, T, N, k ? keep : NULL);
            double e = 0;
            for (int i = 0; i < T * N; i++) e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            double got = sqrt(e / ss);
            if (!(fabs(got - want) <= 1e-12 * want))
                fail_msg("%s keep=%d: rel err %.17g, numpy %.17g", sks_qscheme_name(s), k, got, want);
        }
    assert_int_equal(pclose(p), 0);
    sks_test_rm_tree(dir);
    free(dir);
}

static void random_ids(const sks_model *m, int32_t *ids, int n) {
    const sks_arch *a = sks_model_arch(m);
    ids[0] = a->bos_id >= 0 ? a->bos_id : 1;
    for (int i = 1; i < n; i++) ids[i] = (int32_t)(rng_u64() % (uint64_t)a->vocab_size);
}

/* the tiny synthetic model (planted spike and sinks), written to a temporary folder, and n
 * random ids for it from the generator seeded with seed; tiny_free removes both */
static sks_model *tiny_model(char **dir, int32_t *ids, int n, uint64_t seed) {
    sks_synth_config cfg;
    assert_int_equal(sks_synth_preset("tiny", &cfg), 0);
    sks_synth *sy = NULL;
    assert_int_equal(sks_synth_new(&cfg, 3, &sy), 0);
    *dir = sks_test_tmpdir();
    assert_int_equal(sks_synth_write(sy, *dir, SKS_DT_F32, 0), 0);
    sks_synth_free(sy);
    sks_model *m = sks_test_open(*dir);
    rng_state = seed;
    random_ids(m, ids, n);
    return m;
}

static void tiny_free(sks_model *m, char *dir) {
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
}

typedef struct {
    int window, n_sink, bad;
} probs_check;

static int check_probs(void *ud, int layer, int head, const float *A, int T) {
    (void)layer;
    (void)head;
    probs_check *c = ud;
    for (int i = 0; i < T; i++) {
        double s = 0;
        for (int j = 0; j <= i; j++) {
            int evicted = i - j >= c->window && j >= c->n_sink;
            if (evicted && A[(size_t)i * T + j] != 0.0f) c->bad++;
            s += A[(size_t)i * T + j];
        }
        if (fabs(s - 1.0) > 1e-5) c->bad++;
    }
    return 0;
}

static void test_kv_identities(void **state) {
    (void)state;
    enum { N = 90 };
    int32_t ids[N];
    char *dir;
    sks_model *m = tiny_model(&dir, ids, N, 5);
    const sks_arch *a = sks_model_arch(m);
    sks_kveval_opts o;
    sks_kveval_opts_default(&o);
    o.ppl.window = 40;
    unsigned char *all = malloc((size_t)a->n_layers * (size_t)a->n_kv_heads);
    memset(all, 1, (size_t)a->n_layers * (size_t)a->n_kv_heads);
    sks_kveval_result *r = NULL;
    /* W >= T: every variant is the full context, exactly */
    for (int W = 40; W <= 1000; W += 960) {
        o.kv_window = W;
        assert_int_equal(sks_kveval_run(m, ids, N, &o, all, &r), 0);
        for (int v = 1; v < SKS_KV_N; v++) {
            assert_true(r->v[v].ppl->nll_sum == r->v[SKS_KV_FULL].ppl->nll_sum);
            assert_int_equal(r->v[v].kv_entries, r->v[SKS_KV_FULL].kv_entries);
        }
        sks_kveval_result_free(r);
    }
    /* S = 0: streaming is recent; every KV head kept with S = 1: kvmap is streaming */
    o.kv_window = 7;
    o.n_sink = 0;
    assert_int_equal(sks_kveval_run(m, ids, N, &o, all, &r), 0);
    assert_true(r->v[SKS_KV_STREAMING].ppl->nll_sum == r->v[SKS_KV_RECENT].ppl->nll_sum);
    assert_true(r->v[SKS_KV_RECENT].ppl->nll_sum != r->v[SKS_KV_FULL].ppl->nll_sum);
    assert_int_equal(r->v[SKS_KV_RECENT].kv_entries, 7 * a->n_layers * a->n_kv_heads);
    sks_kveval_result_free(r);
    o.n_sink = 1;
    assert_int_equal(sks_kveval_run(m, ids, N, &o, all, &r), 0);
    assert_true(r->v[SKS_KV_MAP].ppl->nll_sum == r->v[SKS_KV_STREAMING].ppl->nll_sum);
    assert_int_equal(r->v[SKS_KV_MAP].kv_entries, r->v[SKS_KV_STREAMING].kv_entries);
    sks_kveval_result_free(r);
    /* the probabilities: exactly 0 on evicted keys, rows sum to 1 */
    sks_forward *f = NULL;
    assert_int_equal(sks_forward_new(m, 40, &f), 0);
    sks_fwd_kv_limit lim = {6, 2, NULL};
    probs_check pc = {6, 2, 0};
    sks_fwd_hooks hk;
    memset(&hk, 0, sizeof hk);
    hk.ud = &pc;
    hk.on_attn_probs = check_probs;
    hk.want_attn_probs = 1;
    hk.kv_limit = &lim;
    assert_int_equal(sks_forward_run(f, ids, 40, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
    assert_int_equal(pc.bad, 0);
    sks_forward_free(f);
    free(all);
    tiny_free(m, dir);
}

static void test_qrisk_keep_all(void **state) {
    (void)state;
    enum { N = 70 };
    int32_t ids[N];
    char *dir;
    sks_model *m = tiny_model(&dir, ids, N, 9);
    const sks_arch *a = sks_model_arch(m);
    sks_qrisk_opts o;
    sks_qrisk_opts_default(&o);
    o.ppl.window = 32;
    o.keep_top = a->d_ffn > a->d_model ? a->d_ffn : a->d_model; /* every channel of every input */
    if (a->n_heads * a->head_dim > o.keep_top) o.keep_top = a->n_heads * a->head_dim;
    sks_qrisk_result *r = NULL;
    assert_int_equal(sks_qrisk_run(m, ids, N, &o, &r), 0);
    for (int l = 0; l < a->n_layers; l++)
        for (int s = 0; s < SKS_QSITE_N; s++) {
            size_t ls = (size_t)l * SKS_QSITE_N + s;
            assert_true(r->dyn_range[ls] >= 1.0);
            for (int q = 0; q < SKS_Q_N; q++) {
                assert_true(r->rel_err[(ls * SKS_Q_N + q) * SKS_QKEEP_N + SKS_QKEEP_OUTLIERS] == 0.0);
                assert_true(r->rel_err[(ls * SKS_Q_N + q) * SKS_QKEEP_N + SKS_QKEEP_NONE] > 0.0);
            }
        }
    for (int q = 0; q < SKS_Q_N; q++) {
        assert_true(r->ppl[q][1]->nll_sum == r->ppl_base->nll_sum);
        assert_true(r->ppl[q][0]->nll_sum != r->ppl_base->nll_sum);
    }
    sks_qrisk_result_free(r);
    tiny_free(m, dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ppl_plan),         cmocka_unit_test(test_ppl_nll),
        cmocka_unit_test(test_e4m3),             cmocka_unit_test(test_fakequant_identities),
        cmocka_unit_test(test_fakequant_numpy),  cmocka_unit_test(test_kv_identities),
        cmocka_unit_test(test_qrisk_keep_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
