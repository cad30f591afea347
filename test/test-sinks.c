/* test-sinks.c - sink-key geometry on constructed cases and a planted in-memory model.
 *
 * Plain-array functions are checked against geometry built with a known answer (keys in
 * a planted r-dim subspace, queries at planted angles, hand-computed AUCs with ties).
 * The model test plants two sink heads by hand (one per KV head, GQA 4:2) in a one-layer
 * model whose BOS embedding carries a massive channel, and checks the ranking, the
 * labels and alpha_0 against an independent double-precision attention written here.
 * The layer split (what `mpirun sinks` does) is checked on a synth model: runs on the
 * even and the odd layers (and on thirds, through the packed bytes), merged and
 * classified, equal the whole run bit for bit.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "sks_test.h"
#include "analysis/sks_sinks.h"
#include "analysis/sks_synth.h"
#include "linalg/sks_linalg.h"

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s; }
static uint64_t rng_u64(void) { return sks_test_rng_u64(&rng_state); }
static double rng_unif(void) { return sks_test_rng_unif(&rng_state); } /* splitmix64 (sks_test.c) */
static double rng_gauss(void) { return sqrt(-2.0 * log(rng_unif())) * cos(6.283185307179586 * rng_unif()); }

/* Random orthonormal rows (k, n) by Gram-Schmidt on Gaussian vectors. */
static void random_orthonormal(int k, int n, double *B) {
    for (int i = 0; i < k; i++) {
        double *b = B + (size_t)i * n;
        for (;;) {
            for (int j = 0; j < n; j++) b[j] = rng_gauss();
            for (int pass = 0; pass < 2; pass++)
                for (int p = 0; p < i; p++) {
                    double dot = 0.0;
                    for (int j = 0; j < n; j++) dot += b[j] * B[(size_t)p * n + j];
                    for (int j = 0; j < n; j++) b[j] -= dot * B[(size_t)p * n + j];
                }
            double nn = 0.0;
            for (int j = 0; j < n; j++) nn += b[j] * b[j];
            if (nn > 1e-6) {
                for (int j = 0; j < n; j++) b[j] /= sqrt(nn);
                break;
            }
        }
    }
}

/* ---- constructed geometry ------------------------------------------------------------- */

/* Keys built as random combinations of r orthonormal directions (comparable variances):
 * r99 = r, for several r. Singular values from the Gram route equal those of an SVD of
 * the rows (planted: X = C B with B orthonormal => sv(X) = sv(C)). */
static void test_key_rank_planted(void **state) {
    (void)state;
    rng_seed(11);
    const int dh = 16, n = 60;
    double B[16 * 16], X[60 * 16], C[60 * 16], G[16 * 16], sv[16], sc[16], a;
    for (int r = 1; r <= 5; r++) {
        random_orthonormal(r, dh, B);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < r; i++) C[t * r + i] = rng_gauss() * (1.0 + 0.2 * i);
        for (int t = 0; t < n; t++)
            for (int j = 0; j < dh; j++) {
                double s = 0.0;
                for (int i = 0; i < r; i++) s += C[t * r + i] * B[i * dh + j];
                X[t * dh + j] = s;
            }
        int rq = -1, rs = -1;
        /* the subspace against itself: alignment 1, both ranks r */
        assert_int_equal(sks_sinks_alignment(dh, n, X, n, X, 0.99, &a, &rq, &rs), 0);
        assert_int_equal(rq, r);
        assert_int_equal(rs, r);
        assert_true(fabs(a - 1.0) < 1e-10);
        /* Gram spectrum = singular values of the coefficient matrix C (n, r) */
        for (int i = 0; i < dh; i++)
            for (int j = 0; j < dh; j++) {
                double s = 0.0;
                for (int t = 0; t < n; t++) s += X[t * dh + i] * X[t * dh + j];
                G[i * dh + j] = s;
            }
        assert_int_equal(sks_sinks_gram_spectrum(dh, G, sv, NULL), 0);
        assert_int_equal(sks_svd(n, r, C, sc, NULL, NULL), 0);
        for (int i = 0; i < r; i++) assert_true(fabs(sv[i] - sc[i]) <= 1e-8 * sc[0]);
        for (int i = r; i < dh; i++) assert_true(sv[i] <= 1e-6 * sc[0]);
        assert_int_equal(sks_effective_rank(sv, dh, 0.99), r);
    }
}

/* Queries in span{e0, e1}, sink keys along cos(th) e0 + sin(th) e2: principal cosine
 * cos(th) for several angles; keys along e2 only: 0. */
static void test_alignment_known_angles(void **state) {
    (void)state;
    rng_seed(12);
    const int dh = 8, nq = 40, ns = 6;
    double Q[40 * 8], S[6 * 8], a;
    for (int t = 0; t < nq; t++) {
        memset(Q + t * dh, 0, dh * sizeof(double));
        Q[t * dh + 0] = rng_gauss();
        Q[t * dh + 1] = rng_gauss();
    }
    for (int k = 0; k <= 6; k++) {
        double th = k * (M_PI / 12.0);
        for (int t = 0; t < ns; t++) {
            double c = 1.0 + rng_unif(); /* near-constant sink keys of varying length */
            memset(S + t * dh, 0, dh * sizeof(double));
            S[t * dh + 0] = c * cos(th);
            S[t * dh + 2] = c * sin(th);
        }
        int rq, rs;
        assert_int_equal(sks_sinks_alignment(dh, nq, Q, ns, S, 0.99, &a, &rq, &rs), 0);
        assert_int_equal(rq, 2);
        assert_int_equal(rs, 1);
        assert_true(fabs(a - fabs(cos(th))) < 1e-10);
    }
}

/* Energy and signed projection of constructed query sets along a unit key k. */
static void test_energy_signed(void **state) {
    (void)state;
    const int dh = 4;
    const double th = 0.6;
    double k[4] = {0.5, 0.5, 0.5, 0.5}, u[4] = {0.5, -0.5, 0.5, -0.5}; /* orthonormal */
    double G[16], qs[4], e, sp;
    for (int half = 0; half < 2; half++) {
        /* 10 queries 3 (cos th k + sin th u); with half=1 every second one is negated */
        memset(G, 0, sizeof G);
        memset(qs, 0, sizeof qs);
        double ss = 0.0;
        for (int t = 0; t < 10; t++) {
            double sg = (half && t % 2) ? -1.0 : 1.0, q[4];
            for (int i = 0; i < dh; i++) q[i] = sg * 3.0 * (cos(th) * k[i] + sin(th) * u[i]);
            for (int i = 0; i < dh; i++) {
                qs[i] += q[i];
                ss += q[i] * q[i];
                for (int j = 0; j < dh; j++) G[i * dh + j] += q[i] * q[j];
            }
        }
        double k2[4];
        for (int i = 0; i < dh; i++) k2[i] = 7.0 * k[i]; /* direction only: length is ignored */
        sks_sinks_energy(dh, G, qs, ss, 10, k2, &e, &sp);
        assert_true(fabs(e - cos(th) * cos(th)) < 1e-12);
        assert_true(fabs(sp - (half ? 0.0 : cos(th))) < 1e-12);
    }
    sks_sinks_energy(dh, G, qs, 0.0, 0, k, &e, &sp);
    assert_true(isnan(e) && isnan(sp));
}

/* Margin on a hand example (dh = 4, so 1/sqrt(dh) = 1/2). Keys k0 (spike), k1, k2;
 * queries q1, q2. t=1: q1.k0 = 4, q1.k1 = 2 -> (4 - 2)/2 = 1. t=2: q2.k0 = 1, non-spike
 * mean (q2.k1 + q2.k2)/2 = (1 + 6)/2 = 3.5 -> (1 - 3.5)/2 = -1.25. Two queries, 1 + 2 = 3
 * non-sink keys seen. t=0 is a spike token: not a query. */
static void test_margin_hand(void **state) {
    (void)state;
    float q[3 * 4] = {9, 9, 9, 9, /**/ 2, 0, 2, 0, /**/ 1, 1, 0, 0};
    float k[3 * 4] = {1, 0, 1, 0, /**/ 1, 0, 0, 0, /**/ 0, 6, 0, 0};
    unsigned char spike[3] = {1, 0, 0};
    double sum = 0.0, nn = 0.0;
    int64_t cnt = 0;
    sks_sinks_margin(3, 4, q, 4, k, 4, spike, &sum, &cnt, &nn);
    assert_int_equal(cnt, 2);
    assert_true(fabs(sum - (1.0 - 1.25)) < 1e-12);
    assert_true(fabs(nn - 3.0) < 1e-12);
    /* no spike token: nothing counted */
    unsigned char none[3] = {0, 0, 0};
    sum = 0.0;
    cnt = 0;
    sks_sinks_margin(3, 4, q, 4, k, 4, none, &sum, &cnt, &nn);
    assert_int_equal(cnt, 0);
}

static void test_auc_hand(void **state) {
    (void)state;
    /* sklearn.metrics.roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.75 */
    double s1[4] = {0.1, 0.4, 0.35, 0.8}, l1[4] = {0, 0, 1, 1};
    assert_true(fabs(sks_roc_auc(s1, l1, 4) - 0.75) < 1e-15);
    /* ties: positives {0.5, 0.7}, negatives {0.5, 0.2}: (0.5 + 1 + 1 + 1)/4 = 0.875 */
    double s2[4] = {0.5, 0.5, 0.2, 0.7}, l2[4] = {1, 0, 0, 1};
    assert_true(fabs(sks_roc_auc(s2, l2, 4) - 0.875) < 1e-15);
    /* all tied: 0.5 */
    double s3[4] = {1, 1, 1, 1};
    assert_true(fabs(sks_roc_auc(s3, l2, 4) - 0.5) < 1e-15);
    /* perfect and reversed */
    double s4[4] = {0.9, 0.1, 0.2, 0.8};
    assert_true(sks_roc_auc(s4, l2, 4) == 1.0);
    double s5[4] = {0.1, 0.9, 0.8, 0.2};
    assert_true(sks_roc_auc(s5, l2, 4) == 0.0);
    /* NaN scores are left out: the remaining pair (0.7 vs 0.2) is ordered */
    double s6[4] = {NAN, NAN, 0.2, 0.7};
    assert_true(sks_roc_auc(s6, l2, 4) == 1.0);
    /* one class only */
    double l3[4] = {1, 1, 1, 1};
    assert_true(isnan(sks_roc_auc(s1, l3, 4)));

    double p, r;
    /* threshold 0.4: predicted {0.4, 0.8} -> tp 1 (0.8), fp 1 (0.4); positives 2 */
    sks_sinks_prec_recall(s1, l1, 4, 0.4, &p, &r);
    assert_true(fabs(p - 0.5) < 1e-15 && fabs(r - 0.5) < 1e-15);
    sks_sinks_prec_recall(s1, l1, 4, 0.3, &p, &r);
    assert_true(fabs(p - 2.0 / 3.0) < 1e-15 && fabs(r - 1.0) < 1e-15);
    sks_sinks_prec_recall(s1, l1, 4, 2.0, &p, &r);
    assert_true(isnan(p) && r == 0.0);
}

static void test_pairwise_cos(void **state) {
    (void)state;
    /* rows e0, e1, e0+e1 (and a zero row that is skipped): cosines 0, 1/sqrt2, 1/sqrt2 */
    float X[4 * 3] = {1, 0, 0, /**/ 0, 1, 0, /**/ 0, 0, 0, /**/ 2, 2, 0};
    double mean, mn;
    assert_int_equal(sks_sinks_pairwise_cos(4, 2, X, 3, &mean, &mn), 0);
    assert_true(fabs(mean - sqrt(2.0) / 3.0) < 1e-12);
    assert_true(fabs(mn) < 1e-12);
    assert_int_equal(sks_sinks_pairwise_cos(1, 2, X, 3, &mean, &mn), 0);
    assert_true(isnan(mean) && isnan(mn));
}

/* Weight-only score with a planted SVD: Wq_h = diag(s) on the first dh channels (times a
 * column permutation hidden by gamma): energy of e_i is s_i^2 gamma_i^2 / sum(...), and
 * the r99 cosine is 1 inside the dominant subspace and 0 outside. */
static void test_weight_only_planted(void **state) {
    (void)state;
    const int dh = 4, d = 6;
    float W[4 * 6] = {0}, gamma[6] = {2, 1, 1, 1, 1, 1};
    double s[4] = {5, 3, 0.01, 0.01}; /* with gamma[0] = 2: singular values 10, 3, .01, .01 */
    for (int i = 0; i < dh; i++) W[i * d + i] = (float)s[i];
    double tot = 100.0 + 9.0 + 2e-4;
    double k0[4] = {1, 0, 0, 0}, k1[4] = {0, 2, 0, 0}, k2[4] = {0, 0, 1, 0}, e, c;
    assert_int_equal(sks_sinks_weight_only(d, dh, W, gamma, k0, 0.99, &e, &c), 0);
    assert_true(fabs(e - 100.0 / tot) < 1e-6);
    assert_true(fabs(c - 1.0) < 1e-9);
    assert_int_equal(sks_sinks_weight_only(d, dh, W, gamma, k1, 0.99, &e, &c), 0);
    assert_true(fabs(e - 9.0 / tot) < 1e-6);
    assert_true(fabs(c - 1.0) < 1e-9); /* r99 = 2 keeps e1 */
    assert_int_equal(sks_sinks_weight_only(d, dh, W, gamma, k2, 0.99, &e, &c), 0);
    assert_true(fabs(e - 1e-4 / tot) < 1e-9);
    assert_true(fabs(c) < 1e-9);
}

/* ---- planted in-memory model ------------------------------------------------------------ */

enum { PM_D = 32, PM_F = 16, PM_H = 4, PM_HKV = 2, PM_DH = 8, PM_V = 40, PM_T = 32, PM_NP = 3 };

typedef struct {
    float emb[PM_V * PM_D], an[PM_D], fn[PM_D], finaln[PM_D];
    float wq[PM_H * PM_DH * PM_D], wk[PM_HKV * PM_DH * PM_D], wv[PM_HKV * PM_DH * PM_D], wo[PM_D * PM_H * PM_DH];
    float wg[PM_F * PM_D], wu[PM_F * PM_D], wd[PM_D * PM_F];
    float qn[PM_DH], kn[PM_DH]; /* Qwen3 q_norm / k_norm (qk_norm variant only) */
    sks_arch arch;
} planted;

/* Channel 0: the massive channel of BOS (id 1); channel 1: a constant +1 in every other
 * token. Key dims a = dh/2 - 1 and b = dh/2 - 2 (the two slowest RoPE pairs) read channel
 * 0 in KV head 0 and KV head 1 respectively; head 0 (KV 0) and head 3 (KV 1) query along
 * their KV head's sink dim from the constant channel: the sink heads. Head 1 (KV 0) queries
 * along b and head 2 (KV 1) along a: the same weights on the wrong KV head, so a wrong
 * head -> KV head map would swap the labels. */
static sks_model *planted_build_qk(planted *P, int qk_norm) {
    rng_seed(2026);
    memset(P, 0, sizeof *P);
    const int a = PM_DH / 2 - 1, b = PM_DH / 2 - 2;
    for (int v = 0; v < PM_V; v++)
        for (int c = 0; c < PM_D; c++) P->emb[v * PM_D + c] = c >= 2 ? (float)rng_gauss() : 0.0f;
    for (int v = 0; v < PM_V; v++) P->emb[v * PM_D + 1] = 1.0f;
    P->emb[1 * PM_D + 0] = 1000.0f;
    P->emb[1 * PM_D + 1] = 0.0f;
    for (int c = 0; c < PM_D; c++) P->an[c] = P->fn[c] = P->finaln[c] = 1.0f;
    for (int r = 0; r < PM_H * PM_DH; r++)
        for (int c = 2; c < PM_D; c++) P->wq[r * PM_D + c] = 0.3f * (float)rng_gauss();
    for (int r = 0; r < PM_HKV * PM_DH; r++)
        for (int c = 2; c < PM_D; c++) P->wk[r * PM_D + c] = 0.3f * (float)rng_gauss();
    /* sink dims of the keys carry only channel 0 */
    for (int c = 0; c < PM_D; c++) {
        P->wk[(0 * PM_DH + a) * PM_D + c] = 0.0f;
        P->wk[(1 * PM_DH + b) * PM_D + c] = 0.0f;
    }
    P->wk[(0 * PM_DH + a) * PM_D + 0] = 1.0f;
    P->wk[(1 * PM_DH + b) * PM_D + 0] = 1.0f;
    const int qdim[PM_H] = {a, b, a, b};
    for (int h = 0; h < PM_H; h++) {
        for (int c = 0; c < PM_D; c++) P->wq[(h * PM_DH + qdim[h]) * PM_D + c] = 0.0f;
        P->wq[(h * PM_DH + qdim[h]) * PM_D + 1] = 8.0f;
    }
    for (size_t i = 0; i < sizeof P->wv / sizeof P->wv[0]; i++) P->wv[i] = 0.05f * (float)rng_gauss();
    for (size_t i = 0; i < sizeof P->wo / sizeof P->wo[0]; i++) P->wo[i] = 0.05f * (float)rng_gauss();
    for (size_t i = 0; i < sizeof P->wg / sizeof P->wg[0]; i++) P->wg[i] = 0.05f * (float)rng_gauss();
    for (size_t i = 0; i < sizeof P->wu / sizeof P->wu[0]; i++) P->wu[i] = 0.05f * (float)rng_gauss();
    for (size_t i = 0; i < sizeof P->wd / sizeof P->wd[0]; i++) P->wd[i] = 0.05f * (float)rng_gauss();

    sks_arch *A = &P->arch;
    sks_test_llama_arch(A, 1, PM_D, PM_F, PM_H, PM_HKV, PM_DH, PM_V);
    A->max_seq = 64;
    if (qk_norm) {
        /* Qwen3-style per-head norms; q_norm is not uniform so that the weight-only M =
         * diag(q_norm) W_Q[h] diag(gamma) differs from the plain one */
        strcpy(A->family, "qwen3");
        A->has_qk_norm = 1;
        for (int i = 0; i < PM_DH; i++) P->qn[i] = P->kn[i] = 3.0f;
        P->qn[b] = 1.5f;
    }
    sks_model *m = NULL;
    assert_int_equal(sks_model_new_memory(A, &m), 0);
    sks_test_set_f32(m, SKS_ROLE_EMBED, -1, PM_V, PM_D, P->emb);
    sks_test_set_f32(m, SKS_ROLE_FINAL_NORM, -1, PM_D, 0, P->finaln);
    sks_test_set_llama_layer(m, 0, &(sks_test_layer_w){P->an, P->wq, P->wk, P->wv, P->wo, P->fn, P->wg, P->wu, P->wd});
    if (qk_norm) {
        sks_test_set_f32(m, SKS_ROLE_Q_NORM, 0, PM_DH, 0, P->qn);
        sks_test_set_f32(m, SKS_ROLE_K_NORM, 0, PM_DH, 0, P->kn);
    }
    assert_int_equal(sks_model_validate(m), 0);
    return m;
}

static sks_model *planted_build(planted *P) { return planted_build_qk(P, 0); }

/* Independent alpha_0 of layer 0 (its input is the embedding): RMSNorm, projections,
 * rotate-half RoPE and a causal softmax in double precision. */
static void reference_alpha0(const planted *P, const int32_t *ids, int T, double *alpha0 /* (H) */) {
    static double x[PM_T][PM_D], q[PM_T][PM_H * PM_DH], k[PM_T][PM_HKV * PM_DH];
    for (int t = 0; t < T; t++) {
        const float *e = P->emb + (size_t)ids[t] * PM_D;
        double ss = 0.0;
        for (int c = 0; c < PM_D; c++) ss += (double)e[c] * e[c];
        double inv = 1.0 / sqrt(ss / PM_D + P->arch.norm_eps);
        for (int c = 0; c < PM_D; c++) x[t][c] = e[c] * inv * P->an[c];
        for (int r = 0; r < PM_H * PM_DH; r++) {
            double s = 0.0;
            for (int c = 0; c < PM_D; c++) s += P->wq[r * PM_D + c] * x[t][c];
            q[t][r] = s;
        }
        for (int r = 0; r < PM_HKV * PM_DH; r++) {
            double s = 0.0;
            for (int c = 0; c < PM_D; c++) s += P->wk[r * PM_D + c] * x[t][c];
            k[t][r] = s;
        }
        if (P->arch.has_qk_norm) { /* per-head RMSNorm with q_norm / k_norm */
            for (int h = 0; h < PM_H + PM_HKV; h++) {
                double *v = h < PM_H ? q[t] + h * PM_DH : k[t] + (h - PM_H) * PM_DH, ss2 = 0.0;
                const float *w = h < PM_H ? P->qn : P->kn;
                for (int i = 0; i < PM_DH; i++) ss2 += v[i] * v[i];
                double inv2 = 1.0 / sqrt(ss2 / PM_DH + P->arch.norm_eps);
                for (int i = 0; i < PM_DH; i++) v[i] *= inv2 * w[i];
            }
        }
        /* RoPE, pairs (i, i + dh/2), angle t * theta^(-2i/dh) */
        const int half = PM_DH / 2;
        for (int i = 0; i < half; i++) {
            double ang = t * pow(P->arch.rope_theta, -2.0 * i / PM_DH), cs = cos(ang), sn = sin(ang);
            for (int h = 0; h < PM_H; h++) {
                double *v = q[t] + h * PM_DH, x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cs - x1 * sn;
                v[i + half] = x1 * cs + x0 * sn;
            }
            for (int g = 0; g < PM_HKV; g++) {
                double *v = k[t] + g * PM_DH, x0 = v[i], x1 = v[i + half];
                v[i] = x0 * cs - x1 * sn;
                v[i + half] = x1 * cs + x0 * sn;
            }
        }
    }
    for (int h = 0; h < PM_H; h++) {
        int g = h / (PM_H / PM_HKV);
        double acc = 0.0;
        for (int i = 0; i < T; i++) {
            double lg[PM_T], mx = -INFINITY, z = 0.0;
            for (int j = 0; j <= i; j++) {
                double s = 0.0;
                for (int c = 0; c < PM_DH; c++) s += q[i][h * PM_DH + c] * k[j][g * PM_DH + c];
                lg[j] = s / sqrt((double)PM_DH);
                if (lg[j] > mx) mx = lg[j];
            }
            for (int j = 0; j <= i; j++) z += exp(lg[j] - mx);
            acc += exp(lg[0] - mx) / z;
        }
        alpha0[h] = acc / T;
    }
}

static void make_prompts(int32_t ids[PM_NP][PM_T], const int32_t *ptr[PM_NP], int lens[PM_NP]) {
    rng_seed(77);
    for (int p = 0; p < PM_NP; p++) {
        ids[p][0] = 1;
        for (int t = 1; t < PM_T; t++) ids[p][t] = 3 + (int32_t)(rng_u64() % (PM_V - 3));
        ptr[p] = ids[p];
        lens[p] = PM_T;
    }
}

/* sinks with o on the planted prompts; alpha_0 of every head against reference_alpha0
 * averaged over them (1e-4). *ref_ratio: the reference's percentage of (prompt, head)
 * pairs above eps 0.3. */
static sks_sinks_result *run_planted(const planted *P, sks_model *m, const sks_sinks_opts *o, double *ref_ratio) {
    int32_t ids[PM_NP][PM_T];
    const int32_t *ptr[PM_NP];
    int lens[PM_NP];
    make_prompts(ids, ptr, lens);
    sks_sinks_result *r = NULL;
    int rc = sks_sinks_run(m, PM_NP, ptr, lens, o, &r);
    if (rc) fail_msg("sinks_run: %s", sks_last_error());
    double ref[PM_H] = {0}, a0[PM_H];
    *ref_ratio = 0.0;
    for (int p = 0; p < PM_NP; p++) {
        reference_alpha0(P, ids[p], PM_T, a0);
        for (int h = 0; h < PM_H; h++) {
            ref[h] += a0[h] / PM_NP;
            *ref_ratio += (a0[h] > 0.3) * 100.0 / (PM_H * PM_NP);
        }
    }
    for (int h = 0; h < PM_H; h++)
        if (!(fabs(r->alpha0[h] - ref[h]) <= 1e-4)) fail_msg("head %d alpha0 %g ref %g", h, r->alpha0[h], ref[h]);
    return r;
}

static void test_planted_model(void **state) {
    (void)state;
    static planted P;
    sks_model *m = planted_build(&P);
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    o.abs_thresh = 100.0;
    o.ratio = 50.0;
    /* alpha_0 against the independent reference averaged over prompts */
    double ref_ratio;
    sks_sinks_result *r = run_planted(&P, m, &o, &ref_ratio);
    /* planted labels: heads 0 and 3 */
    assert_true(r->alpha0[0] > 0.3 && r->alpha0[3] > 0.3);
    assert_true(r->alpha0[1] < 0.3 && r->alpha0[2] < 0.3);
    assert_int_equal(r->n_sink_heads, 2);
    /* the spike: channel 0 at token 0 of every prompt */
    assert_int_equal(r->n_spike_channels, 1);
    assert_int_equal(r->spike_channels[0], 0);
    assert_true(r->spike_plateau[0] > 900.0);
    assert_int_equal(r->n_prompt0_spike_tokens, 1);
    assert_int_equal(r->prompt0_spike_tokens[0], 0);
    for (int p = 0; p < PM_NP; p++) assert_int_equal(r->n_spike_tokens[p], 1);
    /* the same BOS vector in every prompt: near-constant; other tokens are not */
    assert_true(r->cos_spike_mean[0] > 0.999);
    assert_true(r->cos_nonspike_mean[0] < 0.9);
    /* sink keys of each KV head: one direction; non-sink keys spread */
    for (int g = 0; g < PM_HKV; g++) {
        assert_int_equal(r->sink_r99[g], 1);
        assert_true(r->nonsink_r99[g] >= 4);
    }
    /* ranking by the main predictor (margin with RoPE): the planted heads first */
    int top0 = r->rank[0], top1 = r->rank[1];
    assert_true((top0 == 0 && top1 == 3) || (top0 == 3 && top1 == 0));
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        if (p == SKS_PRED_ALIGNMENT) continue; /* non-spike queries span the whole space */
        if (!(r->auc[p] == 1.0)) fprintf(stderr, "predictor %s auc %g\n", sks_sinks_pred_name(p), r->auc[p]);
        assert_true(r->auc[p] == 1.0);
    }
    assert_true(r->pred[SKS_PRED_MARGIN_ROPE][0] > 5.0 && r->pred[SKS_PRED_MARGIN_ROPE][1] < 2.0);
    assert_true(r->pred[SKS_PRED_WEIGHT_ONLY][0] > 0.5 && r->pred[SKS_PRED_WEIGHT_ONLY][1] < 0.1);
    assert_true(fabs(r->sink_ratio - ref_ratio) < 1e-9);

    /* writers: msgpack parses and names the schema; kv map lists the two heads */
    char *dir = sks_test_tmpdir();
    assert_non_null(dir);
    char path[4200], kvp[4200];
    snprintf(path, sizeof path, "%s/sinks.msgpack", dir);
    snprintf(kvp, sizeof kvp, "%s/kv.json", dir);
    assert_int_equal(sks_sinks_write(r, m, &o, path), 0);
    assert_int_equal(sks_sinks_write_kv_map(r, m, &o, kvp), 0);
    size_t n = 0;
    char *buf = sks_test_read_file(path, &n);
    assert_non_null(buf);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, buf, n, NULL), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    int found_schema = 0, found_heads = 0;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size == 6 && !memcmp(kv->key.via.str.ptr, "schema", 6)) {
            found_schema = kv->val.via.str.size == 17 && !memcmp(kv->val.via.str.ptr, "sinkscope.sinks/1", 17);
        }
        if (kv->key.via.str.size == 5 && !memcmp(kv->key.via.str.ptr, "heads", 5)) {
            /* heads.alpha0 data equals the result */
            for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
                msgpack_object_kv *e = &kv->val.via.map.ptr[j];
                if (e->key.via.str.size == 6 && !memcmp(e->key.via.str.ptr, "alpha0", 6)) {
                    for (uint32_t z = 0; z < e->val.via.map.size; z++) {
                        msgpack_object_kv *f = &e->val.via.map.ptr[z];
                        if (f->key.via.str.size == 4 && !memcmp(f->key.via.str.ptr, "data", 4)) {
                            assert_int_equal(f->val.via.bin.size, PM_H * 8);
                            double v[PM_H];
                            memcpy(v, f->val.via.bin.ptr, sizeof v);
                            for (int h = 0; h < PM_H; h++) assert_true(v[h] == r->alpha0[h]);
                            found_heads = 1;
                        }
                    }
                }
            }
        }
    }
    assert_true(found_schema && found_heads);
    msgpack_unpacked_destroy(&u);
    free(buf);
    char *kj = sks_test_read_file(kvp, &n);
    assert_non_null(kj);
    assert_non_null(strstr(kj, "sinkscope.kvmap/1"));
    free(kj);
    char *js = NULL;
    assert_int_equal(sks_sinks_json_summary(r, m, &o, &js), 0);
    assert_non_null(strstr(js, "\"sink_key_rank\""));
    free(js);
    remove(path);
    remove(kvp);
    remove(dir);
    free(dir);
    sks_sinks_result_free(r);
    sks_model_close(m);
}

/* Qwen3 variant of the planted model: per-head q/k RMSNorm before RoPE. alpha_0 against
 * the reference (which applies the norms), the planted heads ranked first, and the
 * weight-only score of each head against its closed form: k^ is along the key's sink dim
 * (only that row reads channel 0), so weight_only = q_n[r]^2 |W_Q row r|^2 /
 * sum_i q_n[i]^2 |W_Q row i|^2 (gamma = 1) with r the KV head's sink dim. */
static void test_planted_qk_norm(void **state) {
    (void)state;
    static planted P;
    sks_model *m = planted_build_qk(&P, 1);
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    o.ratio = 50.0;
    double ref_ratio;
    sks_sinks_result *r = run_planted(&P, m, &o, &ref_ratio); /* alpha_0 against the reference (with the norms) */
    for (int h = 0; h < PM_H; h++)
        fprintf(stderr, "qk-norm head %d: alpha0 %.4f weight_only %.4f\n", h, r->alpha0[h], r->pred[SKS_PRED_WEIGHT_ONLY][h]);
    assert_true(r->alpha0[0] > 0.3 && r->alpha0[3] > 0.3 && r->alpha0[1] < 0.3 && r->alpha0[2] < 0.3);
    assert_true((r->rank[0] == 0 && r->rank[1] == 3) || (r->rank[0] == 3 && r->rank[1] == 0));
    const int sinkdim[PM_HKV] = {PM_DH / 2 - 1, PM_DH / 2 - 2};
    for (int h = 0; h < PM_H; h++) {
        int rr = sinkdim[h / (PM_H / PM_HKV)];
        double num = 0.0, den = 0.0;
        for (int i = 0; i < PM_DH; i++) {
            double rn = 0.0;
            for (int c = 0; c < PM_D; c++) rn += (double)P.wq[(h * PM_DH + i) * PM_D + c] * P.wq[(h * PM_DH + i) * PM_D + c];
            double w = (double)P.qn[i] * P.qn[i] * rn;
            den += w;
            if (i == rr) num = w;
        }
        assert_true(fabs(r->pred[SKS_PRED_WEIGHT_ONLY][h] - num / den) <= 1e-6);
    }
    sks_sinks_result_free(r);
    sks_model_close(m);
}

/* Hostile arguments: a token outside the vocabulary, a one-token prompt. */
static void test_bad_args(void **state) {
    (void)state;
    static planted P;
    sks_model *m = planted_build(&P);
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    int32_t bad[3] = {1, 2, PM_V};
    const int32_t *ptr[1] = {bad};
    int len = 3;
    sks_sinks_result *r = NULL;
    assert_int_equal(sks_sinks_run(m, 1, ptr, &len, &o, &r), SKS_EARG);
    assert_null(r);
    len = 1;
    assert_int_equal(sks_sinks_run(m, 1, ptr, &len, &o, &r), SKS_EARG);
    sks_model_close(m);
}

/* ---- planted synthetic checkpoints (analysis/sks_synth.h) -------------------------------- */

/* Write a synth preset, open it from disk, run sinks on BOS + pseudo-random prompts.
 * Ground truth is the generator's list of planted sink heads: the measured labels equal
 * it, the planted heads are ranked first by the main predictor, the activation-informed
 * margin separates them perfectly and the weight-only score nearly so. */
static void run_synth_cfg(const sks_synth_config *cfgp, const char *preset, uint64_t seed) {
    sks_synth_config cfg = *cfgp;
    sks_synth *sy = NULL;
    assert_int_equal(sks_synth_new(&cfg, seed, &sy), 0);
    char *dir = sks_test_tmpdir();
    assert_non_null(dir);
    assert_int_equal(sks_synth_write(sy, dir, SKS_DT_F32, 0), 0);
    sks_model *m = NULL;
    int rc = sks_model_open(dir, &m);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    const sks_arch *a = sks_model_arch(m);
    const sks_synth_planted *pl = sks_synth_get_planted(sy);
    enum { NP = 4, T = 48 };
    int32_t ids[NP][T];
    const int32_t *ptr[NP];
    int lens[NP];
    rng_seed(seed + 5);
    for (int p = 0; p < NP; p++) {
        ids[p][0] = pl->bos_id;
        for (int t = 1; t < T; t++) ids[p][t] = 3 + (int32_t)(rng_u64() % (uint64_t)(a->vocab_size - 3));
        ptr[p] = ids[p];
        lens[p] = T;
    }
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    sks_sinks_result *r = NULL;
    rc = sks_sinks_run(m, NP, ptr, lens, &o, &r);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    const int H = a->n_heads, LH = a->n_layers * a->n_heads;
    double *planted_lab = calloc((size_t)LH, sizeof(double));
    for (int i = 0; i < pl->n_sink; i++) planted_lab[pl->sink_heads[2 * i] * H + pl->sink_heads[2 * i + 1]] = 1.0;
    fprintf(stderr, "synth %s: %d planted sink heads, %d measured; spike channels %d; AUC vs planted:", preset,
            pl->n_sink, r->n_sink_heads, r->n_spike_channels);
    for (int p = 0; p < SKS_PRED_COUNT; p++)
        fprintf(stderr, " %s %.3f", sks_sinks_pred_name(p), sks_roc_auc(r->pred[p], planted_lab, LH));
    fprintf(stderr, "\n");
    assert_true(pl->n_sink > 0);
    for (int i = 0; i < LH; i++) assert_true(r->is_sink[i] == planted_lab[i]);
    for (int i = 0; i < pl->n_sink; i++) assert_true(planted_lab[r->rank[i]] == 1.0);
    assert_true(sks_roc_auc(r->pred[o.main_pred], planted_lab, LH) == 1.0);
    assert_true(sks_roc_auc(r->pred[SKS_PRED_WEIGHT_ONLY], planted_lab, LH) >= 0.95);
    /* the planted spike channels are found */
    for (int c = 0; c < pl->n_spike; c++) {
        int found = 0;
        for (int i = 0; i < r->n_spike_channels; i++) found |= r->spike_channels[i] == pl->channels[c];
        assert_true(found);
    }
    free(planted_lab);
    sks_sinks_result_free(r);
    sks_model_close(m);
    sks_synth_free(sy);
    sks_test_rm_tree(dir);
    free(dir);
}

static void run_synth(const char *preset, uint64_t seed) {
    sks_synth_config cfg;
    assert_int_equal(sks_synth_preset(preset, &cfg), 0);
    run_synth_cfg(&cfg, preset, seed);
}

static void test_synth_tiny(void **state) {
    (void)state;
    run_synth("tiny", 1);
    run_synth("tiny", 7);
    run_synth("demo", 3);
    /* qwen2 family: q/k/v biases enter the keys, the queries and the weight-only key */
    sks_synth_config cfg;
    const char *js = "{\"preset\": \"tiny\", \"model_type\": \"qwen2\"}";
    assert_int_equal(sks_synth_config_from_json(js, "qwen2-tiny", &cfg), 0);
    assert_true(cfg.arch.has_qkv_bias);
    run_synth_cfg(&cfg, "qwen2-tiny", 11);
}

/* ---- layer subsets, merge, classify ------------------------------------------------------- */

static void run_layers(const sks_model *m, int np, const int32_t *const *ptr, const int *lens,
                       const unsigned char *mask, sks_sinks_result **r) {
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    o.layers = mask;
    int rc = sks_sinks_run(m, np, ptr, lens, &o, r);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
}

/* Every value of b bitwise equal to a's (the written files hold every key; the fields
 * outside them are compared here). */
static void assert_same_result(const sks_sinks_result *a, const sks_sinks_result *b, const sks_model *m,
                               const char *dir) {
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    char pa[4200], pb[4200];
    snprintf(pa, sizeof pa, "%s/a.msgpack", dir);
    snprintf(pb, sizeof pb, "%s/b.msgpack", dir);
    assert_int_equal(sks_sinks_write(a, m, &o, pa), 0);
    assert_int_equal(sks_sinks_write(b, m, &o, pb), 0);
    size_t na = 0, nb = 0;
    char *fa = sks_test_read_file(pa, &na), *fb = sks_test_read_file(pb, &nb);
    assert_non_null(fa);
    assert_non_null(fb);
    assert_true(na == nb && !memcmp(fa, fb, na));
    free(fa);
    free(fb);
    char *ja = NULL, *jb = NULL;
    assert_int_equal(sks_sinks_json_summary(a, m, &o, &ja), 0);
    assert_int_equal(sks_sinks_json_summary(b, m, &o, &jb), 0);
    assert_string_equal(ja, jb);
    free(ja);
    free(jb);
    const int64_t LH = (int64_t)a->n_layers * a->n_heads;
    assert_memory_equal(a->rank, b->rank, (size_t)LH * sizeof(int));
    assert_memory_equal(a->auc, b->auc, sizeof a->auc);
    assert_memory_equal(a->precision, b->precision, sizeof a->precision);
    assert_memory_equal(a->recall, b->recall, sizeof a->recall);
    assert_memory_equal(a->threshold, b->threshold, sizeof a->threshold);
    assert_memory_equal(&a->n_eff, &b->n_eff, sizeof a->n_eff);
    assert_memory_equal(&a->sink_ratio, &b->sink_ratio, sizeof a->sink_ratio);
    assert_int_equal(a->n_sink_heads, b->n_sink_heads);
    assert_memory_equal(a->layer_sinks, b->layer_sinks, (size_t)a->n_layers * a->n_prompts * sizeof(int));
}

static void test_layer_split(void **state) {
    (void)state;
    sks_synth_config cfg;
    assert_int_equal(sks_synth_preset("tiny", &cfg), 0);
    sks_synth *sy = NULL;
    assert_int_equal(sks_synth_new(&cfg, 5, &sy), 0);
    char *dir = sks_test_tmpdir();
    assert_non_null(dir);
    assert_int_equal(sks_synth_write(sy, dir, SKS_DT_F32, 0), 0);
    sks_model *m = sks_test_open(dir);
    const sks_arch *a = sks_model_arch(m);
    const int L = a->n_layers;
    assert_true(L >= 3);
    enum { NP = 3, T = 40 };
    int32_t ids[NP][T];
    const int32_t *ptr[NP];
    int lens[NP];
    rng_seed(91);
    for (int p = 0; p < NP; p++) {
        ids[p][0] = sks_synth_get_planted(sy)->bos_id;
        for (int t = 1; t < T; t++) ids[p][t] = 3 + (int32_t)(rng_u64() % (uint64_t)(a->vocab_size - 3));
        ptr[p] = ids[p];
        lens[p] = T - p; /* unequal lengths: the per-prompt counts must line up */
    }
    sks_sinks_result *full = NULL, *even = NULL, *odd = NULL;
    run_layers(m, NP, ptr, lens, NULL, &full);
    assert_true(full->n_sink_heads > 0);
    unsigned char *me = calloc((size_t)L, 1), *mo = calloc((size_t)L, 1);
    for (int l = 0; l < L; l++) (l % 2 ? mo : me)[l] = 1;
    run_layers(m, NP, ptr, lens, me, &even);
    run_layers(m, NP, ptr, lens, mo, &odd);
    /* a part is not a result: the writers and the classification refuse it */
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    assert_int_equal(sks_sinks_classify(even, &o), SKS_EARG);
    char path[4200];
    snprintf(path, sizeof path, "%s/part.msgpack", dir);
    assert_int_equal(sks_sinks_write(even, m, &o, path), SKS_EARG);
    /* the odd layers merged into the even part, classified: the whole run, bit for bit */
    assert_int_equal(sks_sinks_merge(even, odd), 0);
    assert_int_equal(sks_sinks_merge(even, odd), SKS_EARG); /* a layer held twice */
    assert_int_equal(sks_sinks_classify(even, &o), 0);
    assert_same_result(full, even, m, dir);

    /* thirds through the packed bytes, as the MPI gather carries them */
    sks_sinks_result *part[3] = {NULL, NULL, NULL};
    uint8_t *buf[3] = {NULL, NULL, NULL};
    size_t nbuf[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        unsigned char *mk = calloc((size_t)L, 1);
        for (int l = k; l < L; l += 3) mk[l] = 1;
        run_layers(m, NP, ptr, lens, mk, &part[k]);
        free(mk);
        assert_int_equal(sks_sinks_pack_layers(part[k], &buf[k], &nbuf[k]), 0);
    }
    /* hostile bytes: truncated, foreign, a layer already held */
    assert_int_equal(sks_sinks_unpack_layers(part[0], buf[1], nbuf[1] - 1), SKS_EFORMAT);
    assert_int_equal(sks_sinks_unpack_layers(part[0], buf[1], 10), SKS_EFORMAT);
    uint8_t *bad = malloc(nbuf[1]);
    memcpy(bad, buf[1], nbuf[1]);
    bad[0] ^= 1;
    assert_int_equal(sks_sinks_unpack_layers(part[0], bad, nbuf[1]), SKS_EFORMAT);
    free(bad);
    assert_int_equal(sks_sinks_unpack_layers(part[0], buf[0], nbuf[0]), SKS_EARG);
    assert_int_equal(sks_sinks_unpack_layers(part[0], buf[2], nbuf[2]), 0);
    assert_int_equal(sks_sinks_unpack_layers(part[0], buf[1], nbuf[1]), 0);
    assert_int_equal(sks_sinks_classify(part[0], &o), 0);
    assert_same_result(full, part[0], m, dir);
    /* parts of other prompts do not merge */
    sks_sinks_result *other = NULL;
    lens[0] = T - 5;
    run_layers(m, NP, ptr, lens, mo, &other);
    assert_int_equal(sks_sinks_unpack_layers(part[1], buf[0], nbuf[0]), 0);
    assert_int_equal(sks_sinks_merge(part[1], other), SKS_EARG);

    for (int k = 0; k < 3; k++) {
        sks_sinks_result_free(part[k]);
        free(buf[k]);
    }
    sks_sinks_result_free(other);
    free(me);
    free(mo);
    sks_sinks_result_free(full);
    sks_sinks_result_free(even);
    sks_sinks_result_free(odd);
    sks_model_close(m);
    sks_synth_free(sy);
    sks_test_rm_tree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_rank_planted),    cmocka_unit_test(test_alignment_known_angles),
        cmocka_unit_test(test_energy_signed),       cmocka_unit_test(test_margin_hand),
        cmocka_unit_test(test_auc_hand),            cmocka_unit_test(test_pairwise_cos),
        cmocka_unit_test(test_weight_only_planted), cmocka_unit_test(test_planted_model),
        cmocka_unit_test(test_planted_qk_norm), cmocka_unit_test(test_bad_args),           cmocka_unit_test(test_synth_tiny),
        cmocka_unit_test(test_layer_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
