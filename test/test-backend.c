/* test-backend.c - the rows of the S_k operator backend table (linalg/backend.c).
 *
 *   test-backend          the table itself, and the cpu row: bitwise the direct
 *                         quadform.c calls, and the generic checks below;
 *   test-backend ROW      only the generic checks, on row ROW (ctest runs it with
 *                         "cuda"): exit 77 (skipped) when this build has no such row
 *                         or the row cannot run here (no GPU), never a pass.
 *
 * Generic checks, against independent f64 references built here with plain loops
 * (random G, U, Down, d 48, f 200, screen blocks of 64 so that partials span 4 blocks):
 * matvec (f32 bound: 1e-5 of ||S_k|| ||v||; f64 bound: 1e-12), traces (1e-9 of
 * sum_j |D_j g_j.u_j|, inputs exact), screen partials + finish (f32: 1e-5 relative,
 * f64: 1e-9), raw bf16 weights converted by the row (same tolerances against the f64
 * reference of the bf16 values), top eigenpairs (1e-6 relative to lambda_1 with the
 * f32 operator at tol 1e-6) and the forward GEMM Y = X W^T for f32 / f16 / bf16 weights
 * with a row stride (1e-5 of sum |x w|). On the fixtures (when present), the row against
 * the cpu row through the analyses: spikes of one layer (f64 operator: norms and
 * traces 1e-9, eigenvalues 1e-8 of lambda*; f32 operator: 1e-5 and 1e-4), the same
 * screen ranking and s* (|cos| >= 1 - 1e-6), and the forward pass's logits (1e-4 of the
 * row's largest |logit|) for f32 safetensors and Q8_0 / F16 GGUF weights.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/sks_spikes.h"
#include "linalg/sks_linalg.h"
#include "loaders/sks_model.h"

enum { D = 48, F = 200, BLK = 64 };

static const sks_qf_backend *g_row;

static uint64_t rng_state = 7;
static double rng_gauss(void) { return sks_test_rng_gauss(&rng_state); }

/* Weights rounded to bf16 (so the raw bf16 binding has the same exact values). */
typedef struct {
    uint16_t Gb[F * D], Ub[F * D], Db[D * F];
    float G[F * D], U[F * D], Down[D * F];
    double G64[F * D], U64[F * D], D64[D * F];
    sks_quadform q;
    sks_quadform64 q64;
} model;

static model *model_new(void) {
    model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    for (int i = 0; i < F * D; i++) m->Gb[i] = sks_f32_to_bf16((float)(rng_gauss() / sqrt(D)));
    for (int i = 0; i < F * D; i++) m->Ub[i] = sks_f32_to_bf16((float)(rng_gauss() / sqrt(D)));
    for (int i = 0; i < D * F; i++) m->Db[i] = sks_f32_to_bf16((float)(rng_gauss() / sqrt(F)));
    /* one planted dominant channel (k = 3): a shared direction in 8 rows */
    for (int j = 0; j < 8; j++) {
        int row = 11 * j + 5;
        for (int i = 0; i < D; i++) {
            float s = (float)(0.5 * sin(0.37 * i + 1.0));
            m->Gb[row * D + i] = sks_f32_to_bf16(s + 0.01f * (float)rng_gauss());
            m->Ub[row * D + i] = sks_f32_to_bf16(s + 0.01f * (float)rng_gauss());
        }
        m->Db[3 * F + row] = sks_f32_to_bf16(1.0f);
    }
    sks_bf16_to_f32_ref(m->Gb, m->G, F * D);
    sks_bf16_to_f32_ref(m->Ub, m->U, F * D);
    sks_bf16_to_f32_ref(m->Db, m->Down, D * F);
    for (int i = 0; i < F * D; i++) m->G64[i] = m->G[i], m->U64[i] = m->U[i], m->D64[i] = m->Down[i];
    m->q = (sks_quadform){.d = D, .f = F, .G = m->G, .U = m->U, .Down = m->Down};
    m->q64 = (sks_quadform64){.d = D, .f = F, .G = m->G64, .U = m->U64, .Down = m->D64};
    return m;
}

/* S_k by the definition, f64 loops. */
static void dense_ref(const model *m, int k, double *S) {
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double acc = 0.0;
            for (int j = 0; j < F; j++)
                acc += m->D64[k * F + j] * (m->G64[j * D + a] * m->U64[j * D + b] + m->U64[j * D + a] * m->G64[j * D + b]);
            S[a * D + b] = 0.5 * acc;
        }
}
static double norm2(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

/* ---- the generic checks, on g_row ------------------------------------------------- */

static void bind_or_fail(const model *m, int prec, int raw, sks_qf_op *op) {
    sks_qf_raw r = {.d = D, .f = F, .elem = SKS_QF_ELEM_BF16, .G = m->Gb, .U = m->Ub, .Down = m->Db};
    int rc = raw ? sks_qf_bind(g_row, NULL, NULL, &r, prec, op)
                 : sks_qf_bind(g_row, prec == SKS_QF_F32 ? &m->q : NULL, prec == SKS_QF_F64 ? &m->q64 : NULL, NULL,
                               prec, op);
    if (rc) fprintf(stderr, "bind: %s\n", sks_last_error());
    assert_int_equal(rc, 0);
}

/* matvec, traces and screen of one binding against the f64 references */
static void check_binding(const model *m, sks_qf_op *op, double tol_mv, double tol_fro) {
    enum { M = 7, LD = 9 };
    const int ch[M] = {0, 3, 3, 47, 20, 9, 3};
    static double V[D * LD], Y[D * LD], S[D * D];
    static float V32[D * LD], Y32[D * LD];
    for (int i = 0; i < D * LD; i++) V32[i] = (float)rng_gauss(), V[i] = V32[i];
    memset(Y, 0, sizeof Y);
    memset(Y32, 0, sizeof Y32);
    const int f64 = op->prec == SKS_QF_F64;
    assert_int_equal(sks_qf_matvec_batch(op, ch, M, f64 ? (const void *)V : V32, LD, f64 ? (void *)Y : Y32, LD), 0);
    for (int i = 0; i < M; i++) {
        dense_ref(m, ch[i], S);
        double e = 0, vn = 0;
        for (int a = 0; a < D; a++) {
            double y = 0;
            for (int b = 0; b < D; b++) y += S[a * D + b] * V[b * LD + i];
            double got = f64 ? Y[a * LD + i] : Y32[a * LD + i];
            e += (got - y) * (got - y);
            vn += V[a * LD + i] * V[a * LD + i];
        }
        /* ||S_k||_2 <= ||S_k||_F */
        assert_true(sqrt(e) <= tol_mv * norm2(S, D * D) * sqrt(vn));
    }
    /* columns beyond m stay untouched */
    if (!f64)
        for (int a = 0; a < D; a++) assert_true(Y32[a * LD + M] == 0.0f);

    double tr[D], fro[D];
    assert_int_equal(sks_qf_traces(op, tr), 0);
    const int nblk = sks_quadform_frobenius_nblocks(F, BLK);
    assert_int_equal(nblk, 4);
    double *part = calloc((size_t)nblk * D, sizeof *part);
    assert_non_null(part);
    /* the blocks in two uneven calls, the second first */
    assert_int_equal(sks_qf_frobenius_partials(op, BLK, 1, nblk, part + D), 0);
    assert_int_equal(sks_qf_frobenius_partials(op, BLK, 0, 1, part), 0);
    assert_int_equal(sks_qf_frobenius_partials(op, BLK, 0, nblk + 1, part), SKS_EARG);
    sks_quadform_frobenius_finish(D, nblk, part, fro);
    free(part);
    for (int k = 0; k < D; k++) {
        dense_ref(m, k, S);
        double t = 0, scale = 0;
        for (int a = 0; a < D; a++) t += S[a * D + a];
        for (int j = 0; j < F; j++) {
            double gu = 0;
            for (int i = 0; i < D; i++) gu += m->G64[j * D + i] * m->U64[j * D + i];
            scale += fabs(m->D64[k * F + j] * gu);
        }
        assert_true(fabs(tr[k] - t) <= 1e-9 * scale);
        double fr = norm2(S, D * D);
        assert_true(fabs(fro[k] - fr) <= tol_fro * fr);
    }
}

/* one binding of m on the row (prec, from the raw bf16 weights or not) checked with that
 * precision's tolerances: f32 1e-5 for the products and Frobenius norms, f64 1e-12 and 1e-9 */
static void check_row(const model *m, int prec, int raw) {
    sks_qf_op op;
    bind_or_fail(m, prec, raw, &op);
    if (prec == SKS_QF_F32) check_binding(m, &op, 1e-5, 1e-5);
    else check_binding(m, &op, 1e-12, 1e-9);
    sks_qf_unbind(&op);
}

static void test_row_f32(void **state) {
    (void)state;
    model *m = model_new();
    check_row(m, SKS_QF_F32, 0);
    free(m);
}

static void test_row_f64(void **state) {
    (void)state;
    model *m = model_new();
    check_row(m, SKS_QF_F64, 0);
    free(m);
}

static void test_row_raw_bf16(void **state) {
    (void)state;
    if (!g_row->takes_raw) skip();
    model *m = model_new();
    check_row(m, SKS_QF_F32, 1);
    check_row(m, SKS_QF_F64, 1);
    free(m);
}

/* top-3 of channel 3 (planted) and channel 20 against dsyevr of the reference */
static void test_row_top_eigs(void **state) {
    (void)state;
    model *m = model_new();
    for (int prec = SKS_QF_F32; prec <= SKS_QF_F64; prec++) {
        sks_qf_op op;
        bind_or_fail(m, prec, 0, &op);
        const int ch[2] = {3, 20};
        double ev[2 * 3], V[2 * D * 3];
        sks_eigs_opts o = {.r = 3, .block = 2, .tol = prec == SKS_QF_F32 ? 1e-6 : 1e-10, .seed = 5};
        sks_eigs_extra x = {.max_restarts = 200};
        int rc = sks_qf_top_eigs(&op, ch, 2, &o, &x, ev, V, NULL);
        assert_true(rc == 0 || (prec == SKS_QF_F32 && rc == SKS_ENOCONV));
        for (int c = 0; c < 2; c++) {
            static double S[D * D], Z[D * D];
            double w[D];
            lapack_int isuppz[2 * D], mf;
            dense_ref(m, ch[c], S);
            assert_int_equal(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'N', 'A', 'U', D, S, D, 0, 0, 0, 0, 0, &mf, w, Z, D, isuppz), 0);
            double top = 0;
            for (int i = 0; i < D; i++) top = fmax(top, fabs(w[i]));
            for (int e = 0; e < 3; e++) {
                /* nearest reference eigenvalue */
                double best = INFINITY;
                for (int i = 0; i < D; i++) best = fmin(best, fabs(ev[c * 3 + e] - w[i]));
                assert_true(best <= (prec == SKS_QF_F32 ? 1e-5 : 1e-9) * top);
            }
            assert_true(fabs(fabs(ev[c * 3]) - top) <= (prec == SKS_QF_F32 ? 1e-5 : 1e-9) * top);
        }
        sks_qf_unbind(&op);
    }
    free(m);
}

/* A planted shape big enough for a device row's own solver (d 256 >= its basis of 40 +
 * the block; the row takes it, test_row_top_eigs's d 48 runs at its limit): 12 channels
 * (two planted dominant ones, ten random ones with clustered top eigenvalues, so that
 * problems finish in different rounds and the slow ones restart), top-4 with block 4,
 * against dsyevr of S_k formed in f64 here. Bounds: f32 operator (tol 1e-6) eigenvalues
 * within 1e-5 |lambda_1| of the reference and residuals ||S v - l v|| <= 1e-5 |lambda_1|
 * (its rounding, ~1e-7 ||S_k||, is the floor); f64 operator (tol 1e-10, floor 1e-12 as
 * spikes) 1e-9 for both. Vectors unit (1e-12), largest |.| component positive. */
static void test_row_top_eigs_planted(void **state) {
    (void)state;
    enum { DP = 256, FP = 700, NP = 12, R = 4 };
    float *G = malloc(sizeof(float) * FP * DP), *U = malloc(sizeof(float) * FP * DP), *Dn = malloc(sizeof(float) * DP * FP);
    double *G64 = malloc(sizeof(double) * FP * DP), *U64 = malloc(sizeof(double) * FP * DP), *D64 = malloc(sizeof(double) * DP * FP);
    double *S = malloc(sizeof(double) * DP * DP), *w = malloc(sizeof(double) * DP);
    assert_true(G && U && Dn && G64 && U64 && D64 && S && w);
    for (int i = 0; i < FP * DP; i++) G[i] = (float)(rng_gauss() / sqrt(DP)), U[i] = (float)(rng_gauss() / sqrt(DP));
    for (int i = 0; i < DP * FP; i++) Dn[i] = (float)(rng_gauss() / sqrt(FP));
    const int planted[2] = {17, 200};
    for (int p = 0; p < 2; p++)
        for (int j = 0; j < 6; j++) {
            int row = 97 * j + 31 * p + 3;
            for (int i = 0; i < DP; i++) {
                float sv = (float)(0.3 * cos(0.11 * i * (p + 1) + j));
                G[row * DP + i] = sv + 0.01f * (float)rng_gauss();
                U[row * DP + i] = sv + 0.01f * (float)rng_gauss();
            }
            Dn[planted[p] * FP + row] = 1.5f;
        }
    for (int i = 0; i < FP * DP; i++) G64[i] = G[i], U64[i] = U[i], D64[i] = Dn[i];
    const int ch[NP] = {17, 3, 200, 9, 77, 128, 255, 0, 41, 17, 150, 99};
    sks_quadform q = {.d = DP, .f = FP, .G = G, .U = U, .Down = Dn};
    sks_quadform64 q64 = {.d = DP, .f = FP, .G = G64, .U = U64, .Down = D64};
    static double ev[NP * R], V[NP * DP * R], res[NP][R];
    for (int prec = SKS_QF_F32; prec <= SKS_QF_F64; prec++) {
        sks_qf_op op;
        int rc = sks_qf_bind(g_row, prec == SKS_QF_F32 ? &q : NULL, prec == SKS_QF_F64 ? &q64 : NULL, NULL, prec, &op);
        assert_int_equal(rc, 0);
        sks_eigs_opts o = {.r = R, .block = 4, .tol = prec == SKS_QF_F32 ? 1e-6 : 1e-10, .seed = 3, .max_iter = 1 << 20};
        sks_eigs_extra x = {.max_restarts = 200, .norm_tol = prec == SKS_QF_F64 ? 1e-12 : 0.0};
        sks_eigs_info info[NP];
        memset(info, 0, sizeof info);
        for (int i = 0; i < NP; i++) info[i].residuals = res[i];
        rc = sks_qf_top_eigs(&op, ch, NP, &o, &x, ev, V, info);
        assert_true(rc == 0 || (prec == SKS_QF_F32 && rc == SKS_ENOCONV));
        assert_true(x.rounds > 0);
        /* the shape does what it is for: problems leave the batch in different rounds, and
         * some bases restart */
        int it_min = info[0].iterations, it_max = info[0].iterations;
        for (int c = 1; c < NP; c++) it_min = info[c].iterations < it_min ? info[c].iterations : it_min,
                                     it_max = info[c].iterations > it_max ? info[c].iterations : it_max;
        fprintf(stderr, "planted d %d, %s operator: rounds %d, iterations %d..%d, restarts %d\n", DP,
                prec == SKS_QF_F32 ? "f32" : "f64", x.rounds, it_min, it_max, x.restarts);
        assert_true(it_min < it_max);
        assert_true(x.restarts > 0);
        const double tl = prec == SKS_QF_F32 ? 1e-5 : 1e-9;
        for (int c = 0; c < NP; c++) {
            const int k = ch[c];
            memset(S, 0, sizeof(double) * DP * DP);
            for (int j = 0; j < FP; j++)
                for (int a = 0; a < DP; a++) {
                    const double ga = 0.5 * D64[k * FP + j] * G64[j * DP + a], ua = 0.5 * D64[k * FP + j] * U64[j * DP + a];
                    for (int b = 0; b < DP; b++) S[a * DP + b] += ga * U64[j * DP + b] + ua * G64[j * DP + b];
                }
            static double A[DP * DP];
            memcpy(A, S, sizeof A);
            lapack_int isuppz[2 * DP], mf;
            assert_int_equal(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'N', 'A', 'U', DP, A, DP, 0, 0, 0, 0, 0, &mf, w, NULL, DP, isuppz), 0);
            /* the four largest |lambda| of the reference */
            double top[R];
            for (int e = 0; e < R; e++) {
                int bi = -1;
                for (int i = 0; i < DP; i++) {
                    int used = 0;
                    for (int t = 0; t < e; t++) used |= top[t] == w[i];
                    if (!used && (bi < 0 || fabs(w[i]) > fabs(w[bi]))) bi = i;
                }
                top[e] = w[bi];
            }
            const double l1 = fabs(top[0]);
            assert_true(info[c].matvecs > 0 && info[c].iterations > 0);
            for (int e = 0; e < R; e++) {
                const double l = ev[c * R + e];
                /* the e-th largest in magnitude, up to a swap of two within the bound */
                double best = INFINITY;
                for (int t = 0; t < R; t++) best = fmin(best, fabs(l - top[t]));
                assert_true(best <= tl * l1);
                assert_true(fabs(fabs(l) - fabs(top[e])) <= tl * l1);
                const double *v = V + (size_t)c * DP * R + e;
                double nv = 0, rr = 0, vmax = 0;
                for (int a = 0; a < DP; a++) {
                    double y = 0;
                    for (int b = 0; b < DP; b++) y += S[a * DP + b] * v[(size_t)b * R];
                    y -= l * v[(size_t)a * R];
                    rr += y * y;
                    nv += v[(size_t)a * R] * v[(size_t)a * R];
                    if (fabs(v[(size_t)a * R]) > fabs(vmax)) vmax = v[(size_t)a * R];
                }
                assert_true(fabs(sqrt(nv) - 1.0) <= 1e-12);
                assert_true(vmax > 0);
                assert_true(sqrt(rr) <= tl * l1);
                assert_true(res[c][e] >= 0);
            }
        }
        /* the planted channels' lambda* stands out */
        assert_true(fabs(ev[0]) > 3 * fabs(ev[1 * R]));
        sks_qf_unbind(&op);
    }
    free(G), free(U), free(Dn), free(G64), free(U64), free(D64), free(S), free(w);
}

static void test_row_gemm_wt(void **state) {
    (void)state;
    if (!g_row->gemm_wt) skip();
    enum { T = 5, OUT = 70, IN = 33, LDY = 75 };
    static float X[T * IN], W[OUT * IN], Y[T * LDY];
    static uint16_t Wb[OUT * IN], Wh[OUT * IN];
    for (int i = 0; i < T * IN; i++) X[i] = (float)rng_gauss();
    for (int i = 0; i < OUT * IN; i++) {
        Wb[i] = sks_f32_to_bf16((float)rng_gauss());
        Wh[i] = sks_f32_to_f16((float)rng_gauss());
    }
    for (int elem = SKS_QF_ELEM_F32; elem <= SKS_QF_ELEM_BF16; elem++) {
        const void *src = Wb;
        if (elem == SKS_QF_ELEM_F16) src = Wh, sks_f16_to_f32_ref(Wh, W, OUT * IN);
        else sks_bf16_to_f32_ref(Wb, W, OUT * IN);
        if (elem == SKS_QF_ELEM_F32) src = W;
        for (int i = 0; i < T * LDY; i++) Y[i] = -7.0f;
        assert_int_equal(g_row->gemm_wt(elem, src, OUT, IN, X, T, Y, LDY), 0);
        for (int t = 0; t < T; t++) {
            for (int o = 0; o < OUT; o++) {
                double y = 0, sc = 0;
                for (int i = 0; i < IN; i++) {
                    y += (double)X[t * IN + i] * W[o * IN + i];
                    sc += fabs((double)X[t * IN + i] * W[o * IN + i]);
                }
                assert_true(fabs(Y[t * LDY + o] - y) <= 1e-5 * sc);
            }
            for (int o = OUT; o < LDY; o++) assert_true(Y[t * LDY + o] == -7.0f);
        }
    }
}

/* random X (n) and bf16 weights Wb (nw) */
static void fill_bf16(float *X, int n, uint16_t *Wb, int nw) {
    for (int i = 0; i < n; i++) X[i] = (float)rng_gauss();
    for (int i = 0; i < nw; i++) Wb[i] = sks_f32_to_bf16((float)rng_gauss());
}

/* Y (T, out) against the f64 sums of X W^T, 1e-5 of sum |x w|; row nan_row (or -1) must be NaN */
static void check_xwt(const float *X, const float *W, const float *Y, int T, int out, int in, int nan_row) {
    for (int tt = 0; tt < T; tt++)
        for (int o = 0; o < out; o++) {
            double y = 0, sc = 0;
            for (int i = 0; i < in; i++) y += (double)X[tt * in + i] * W[o * in + i], sc += fabs((double)X[tt * in + i] * W[o * in + i]);
            if (o == nan_row) assert_true(isnan(Y[tt * out + o]));
            else assert_true(fabs(Y[tt * out + o] - y) <= 1e-5 * sc);
        }
}

/* NaN among stored bf16 weights: the forward product through the row answers
 * SKS_ENONFINITE naming the tensor (the host's check decides, as on the cpu row), and
 * with sks_nonfinite_allow(1) the product of the weights as they are; a raw binding
 * with a NaN answers SKS_ENONFINITE, so that spikes converts on the host instead. */
static void test_row_nonfinite(void **state) {
    (void)state;
    enum { T = 3, OUT = 90, IN = 40 };
    static float X[T * IN], W[OUT * IN], Y[T * OUT], ws[OUT * IN];
    static uint16_t Wb[OUT * IN];
    fill_bf16(X, T * IN, Wb, OUT * IN);
    Wb[(OUT - 2) * IN + 5] = 0x7fc0; /* a bf16 NaN in row OUT - 2 */
    sks_bf16_to_f32_ref(Wb, W, OUT * IN);
    sks_tensor t = {"blk.3.ffn_up.weight", SKS_DT_BF16, 2, {OUT, IN}, Wb, (uint64_t)OUT * IN * 2, 0, 0, 0};
    const sks_qf_backend *saved = sks_qf_backend_default();
    sks_qf_backend_set_default(g_row);
    sks_nonfinite_reset();
    sks_nonfinite_allow(0);
    assert_int_equal(sks_matmul_wt(&t, X, T, Y, ws, OUT * IN), SKS_ENONFINITE);
    assert_non_null(strstr(sks_last_error(), "blk.3.ffn_up.weight"));
    sks_nonfinite_allow(1);
    for (int i = 0; i < T * OUT; i++) Y[i] = -7.0f;
    assert_int_equal(sks_matmul_wt(&t, X, T, Y, ws, OUT * IN), 0);
    check_xwt(X, W, Y, T, OUT, IN, OUT - 2);
    assert_int_equal(sks_nonfinite_n_tensors(), 1);
    sks_nonfinite_allow(0);
    sks_nonfinite_reset();
    sks_qf_backend_set_default(saved);
    if (g_row->takes_raw) {
        model *m = model_new();
        m->Ub[7 * D + 3] = 0x7f80; /* +Inf */
        sks_qf_raw r = {.d = D, .f = F, .elem = SKS_QF_ELEM_BF16, .G = m->Gb, .U = m->Ub, .Down = m->Db};
        sks_qf_op op;
        assert_int_equal(sks_qf_bind(g_row, NULL, NULL, &r, SKS_QF_F32, &op), SKS_ENONFINITE);
        m->Ub[7 * D + 3] = 0;
        bind_or_fail(m, SKS_QF_F32, 1, &op); /* the count starts afresh */
        sks_qf_unbind(&op);
        free(m);
    }
}

/* Frozen weights (sks_tensor.frozen) may be kept by the row, keyed by address: after
 * sks_weights_epoch_bump (what closing a model does) new contents at the same address
 * are used, not a kept copy of the old ones. */
static void test_row_kept_weights(void **state) {
    (void)state;
    enum { T = 4, OUT = 64, IN = 48 };
    static float X[T * IN], W[OUT * IN], Y[T * OUT], ws[OUT * IN];
    static uint16_t Wb[OUT * IN];
    sks_tensor t = {"frozen", SKS_DT_BF16, 2, {OUT, IN}, Wb, (uint64_t)OUT * IN * 2, 0, 0, 1};
    const sks_qf_backend *saved = sks_qf_backend_default();
    sks_qf_backend_set_default(g_row);
    for (int round = 0; round < 3; round++) {
        fill_bf16(X, T * IN, Wb, OUT * IN);
        sks_bf16_to_f32_ref(Wb, W, OUT * IN);
        if (round) sks_weights_epoch_bump();
        for (int rep = 0; rep < 2; rep++) { /* the second product reads a kept copy */
            assert_int_equal(sks_matmul_wt(&t, X, T, Y, ws, OUT * IN), 0);
            check_xwt(X, W, Y, T, OUT, IN, -1);
        }
    }
    sks_qf_backend_set_default(saved);
}

/* one layer of spikes on the cpu row and on g_row */
static void spikes_both(const sks_model *m, int layer, int prec, sks_spikes_layer_result *rc_, sks_spikes_layer_result *rg) {
    sks_spikes_opts o;
    sks_spikes_opts_default(&o);
    o.precision = prec;
    o.top_frob = 6;
    o.rank = 3;
    o.first_token_map = 0;
    sks_spikes_layer_result *out[2] = {rc_, rg};
    for (int w = 0; w < 2; w++) {
        sks_qf_backend_set_default(w ? g_row : NULL);
        sks_spikes *s = NULL;
        assert_int_equal(sks_spikes_new(m, &o, &s), 0);
        int rc = sks_spikes_layer(s, layer, NULL, NULL, NULL, 0, out[w]);
        if (rc) fprintf(stderr, "spikes: %s\n", sks_last_error());
        assert_int_equal(rc, 0);
        sks_spikes_free(s);
    }
    sks_qf_backend_set_default(NULL);
}

static void compare_spikes(const sks_spikes_layer_result *a, const sks_spikes_layer_result *b, double tol_fro,
                           double tol_ev) {
    const int d = a->d;
    double fmax_ = 0, tmax = 0;
    for (int k = 0; k < d; k++) fmax_ = fmax(fmax_, a->frobenius[k]), tmax = fmax(tmax, fabs(a->trace[k]));
    for (int k = 0; k < d; k++) {
        assert_true(fabs(a->frobenius[k] - b->frobenius[k]) <= tol_fro * fmax_);
        assert_true(fabs(a->trace[k] - b->trace[k]) <= 1e-9 * tmax);
    }
    /* the ranking: the same channels first (a tie within tolerance could swap them) */
    for (int i = 0; i < 3; i++)
        assert_true(a->top_frob[i] == b->top_frob[i] ||
                    fabs(a->frobenius[a->top_frob[i]] - a->frobenius[b->top_frob[i]]) <= tol_fro * fmax_);
    assert_int_equal(a->n_channels, b->n_channels);
    for (int i = 0; i < a->n_channels; i++) {
        const sks_spike_channel *x = &a->channels[i], *y = &b->channels[i];
        assert_int_equal(x->channel, y->channel);
        const double l1 = fabs(x->eigenvalues[0]);
        for (int e = 0; e < x->rank; e++) assert_true(fabs(x->eigenvalues[e] - y->eigenvalues[e]) <= tol_ev * l1);
        double c = 0;
        for (int k = 0; k < d; k++) c += x->s_star[k] * y->s_star[k];
        if (x->dominance > 1.01) assert_true(fabs(c) >= 1 - 1e-6);
    }
}

static void test_row_spikes_fixtures(void **state) {
    (void)state;
    if (!sks_test_have_fixtures()) skip();
    const char *models[] = {"stories260K/stories260K.safetensors", "trained-packed/model.gguf"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        sks_model *m = NULL;
        if (sks_model_open(sks_test_fixture(models[i]), &m)) {
            fprintf(stderr, "skipping %s: %s\n", models[i], sks_last_error());
            continue;
        }
        for (int prec = SKS_SPK_PREC_F32; prec <= SKS_SPK_PREC_F64; prec++) {
            sks_spikes_layer_result a, b;
            spikes_both(m, 1, prec, &a, &b);
            assert_int_equal(a.precision, b.precision);
            compare_spikes(&a, &b, prec == SKS_SPK_PREC_F64 ? 1e-9 : 1e-5, prec == SKS_SPK_PREC_F64 ? 1e-8 : 1e-4);
            sks_spikes_layer_result_free(&a);
            sks_spikes_layer_result_free(&b);
        }
        /* the forward pass: logits of every position */
        const sks_arch *ar = sks_model_arch(m);
        enum { T = 24 };
        int32_t tok[T];
        for (int t = 0; t < T; t++) tok[t] = (int32_t)((t * 7919 + 1) % ar->vocab_size);
        float *lg[2];
        for (int w = 0; w < 2; w++) {
            lg[w] = malloc((size_t)T * ar->vocab_size * sizeof(float));
            assert_non_null(lg[w]);
            sks_qf_backend_set_default(w ? g_row : NULL);
            sks_forward *fw = NULL;
            assert_int_equal(sks_forward_new(m, T, &fw), 0);
            assert_int_equal(sks_forward_run(fw, tok, T, SKS_FWD_CAUSAL, NULL, lg[w], 0), 0);
            sks_forward_free(fw);
        }
        sks_qf_backend_set_default(NULL);
        for (int t = 0; t < T; t++) {
            double mx = 0, e = 0;
            for (int v = 0; v < ar->vocab_size; v++) {
                size_t k = (size_t)t * ar->vocab_size + v;
                mx = fmax(mx, fabs(lg[0][k]));
                e = fmax(e, fabs(lg[0][k] - lg[1][k]));
            }
            assert_true(e <= 1e-4 * mx);
        }
        free(lg[0]);
        free(lg[1]);
        sks_model_close(m);
    }
}

/* ---- the cpu row and the table ---------------------------------------------------- */

static void test_cpu_row_bitwise(void **state) {
    (void)state;
    model *m = model_new();
    enum { M = 6 };
    const int ch[M] = {1, 3, 3, 40, 0, 17};
    static float V[D * M], Y1[D * M], Y2[D * M], ws[2 * F * M];
    static double V64[D * M], Z1[D * M], Z2[D * M], ws64[2 * F * M];
    for (int i = 0; i < D * M; i++) V[i] = (float)rng_gauss(), V64[i] = V[i];
    sks_qf_op op;
    const sks_qf_backend *cpu = sks_qf_backend_find("cpu");
    assert_non_null(cpu);
    assert_int_equal(sks_qf_bind(cpu, &m->q, NULL, NULL, SKS_QF_F32, &op), 0);
    assert_int_equal(sks_qf_matvec_batch(&op, ch, M, V, M, Y1, M), 0);
    assert_int_equal(sks_quadform_matvec_batch(&m->q, ch, M, V, M, Y2, M, ws), 0);
    assert_memory_equal(Y1, Y2, sizeof Y1);
    double t1[D], t2[D], p1[4 * D], p2[4 * D];
    assert_int_equal(sks_qf_traces(&op, t1), 0);
    assert_int_equal(sks_quadform_traces(&m->q, t2), 0);
    assert_memory_equal(t1, t2, sizeof t1);
    assert_int_equal(sks_qf_frobenius_partials(&op, BLK, 0, 4, p1), 0);
    assert_int_equal(sks_quadform_frobenius_partials(&m->q, BLK, 0, 4, p2), 0);
    assert_memory_equal(p1, p2, sizeof p1);
    sks_qf_unbind(&op);
    assert_null(op.be);
    assert_int_equal(sks_qf_bind(cpu, NULL, &m->q64, NULL, SKS_QF_F64, &op), 0);
    assert_int_equal(sks_qf_matvec_batch(&op, ch, M, V64, M, Z1, M), 0);
    assert_int_equal(sks_quadform64_matvec_batch(&m->q64, ch, M, V64, M, Z2, M, ws64), 0);
    assert_memory_equal(Z1, Z2, sizeof Z1);
    assert_int_equal(sks_qf_frobenius_partials(&op, BLK, 0, 4, p1), 0);
    assert_int_equal(sks_quadform64_frobenius_partials(&m->q64, BLK, 0, 4, p2), 0);
    assert_memory_equal(p1, p2, sizeof p1);
    sks_qf_unbind(&op);
    /* the cpu row takes no raw weights; bad channel; mixed bindings */
    sks_qf_raw raw = {.d = D, .f = F, .elem = SKS_QF_ELEM_BF16, .G = m->Gb, .U = m->Ub, .Down = m->Db};
    assert_int_equal(sks_qf_bind(cpu, NULL, NULL, &raw, SKS_QF_F32, &op), SKS_EUNSUPPORTED);
    assert_int_equal(sks_qf_bind(cpu, &m->q, &m->q64, NULL, SKS_QF_F32, &op), SKS_EARG);
    assert_int_equal(sks_qf_bind(cpu, &m->q, NULL, NULL, SKS_QF_F64, &op), SKS_EARG);
    assert_int_equal(sks_qf_bind(cpu, &m->q, NULL, NULL, SKS_QF_F32, &op), 0);
    const int bad[1] = {D};
    assert_int_equal(sks_qf_matvec_batch(&op, bad, 1, V, 1, Y1, 1), SKS_EARG);
    sks_qf_unbind(&op);
    assert_int_equal(sks_qf_traces(&op, t1), SKS_EARG);
    free(m);
}

/* the solver's per-problem work on threads (as for a device row) gives the results of
 * the sequential rounds: the same operations per problem, only on other threads */
static void test_solver_threads(void **state) {
    (void)state;
    model *m = model_new();
    sks_qf_op op;
    assert_int_equal(sks_qf_bind(sks_qf_backend_find("cpu"), NULL, &m->q64, NULL, SKS_QF_F64, &op), 0);
    enum { NP = 7, R = 3 };
    const int ch[NP] = {3, 0, 20, 47, 11, 3, 30};
    static double ev[2][NP * R], V[2][NP * D * R];
    for (int t = 0; t < 2; t++) {
        sks_eigs_opts o = {.r = R, .block = 2, .tol = 1e-10, .seed = 9};
        sks_eigs_extra x = {.max_restarts = 100, .threads = t ? 3 : 0};
        assert_int_equal(sks_qf_top_eigs(&op, ch, NP, &o, &x, ev[t], V[t], NULL), 0);
    }
    for (int i = 0; i < NP * R; i++) assert_true(fabs(ev[0][i] - ev[1][i]) <= 1e-12 * fabs(ev[0][i / R * R]));
    for (int i = 0; i < NP * D * R; i++) assert_true(fabs(V[0][i] - V[1][i]) <= 1e-9);
    sks_qf_unbind(&op);
    free(m);
}

static void test_table(void **state) {
    (void)state;
    const sks_qf_backend *be = NULL;
    assert_non_null(sks_qf_backend_find("cpu"));
    assert_null(sks_qf_backend_find("tpu"));
    assert_null(sks_qf_backend_find(NULL));
    assert_int_equal(sks_qf_backend_resolve("cpu", &be), 0);
    assert_ptr_equal(be, sks_qf_backend_find("cpu"));
    /* auto always resolves, to a row that can run here */
    assert_int_equal(sks_qf_backend_resolve("auto", &be), 0);
    assert_non_null(be);
    assert_int_equal(be->probe(), 0);
    assert_int_equal(sks_qf_backend_resolve("tpu", &be), SKS_EARG);
    assert_null(be);
    /* cuda: either this build has it (then resolve = its probe) or a clear refusal */
    const sks_qf_backend *cu = sks_qf_backend_find("cuda");
    int rc = sks_qf_backend_resolve("cuda", &be);
    if (cu) assert_int_equal(rc, cu->probe());
    else assert_int_equal(rc, SKS_EUNSUPPORTED);
    /* the default */
    assert_ptr_equal(sks_qf_backend_default(), sks_qf_backend_find("cpu"));
    sks_qf_backend_set_default(NULL);
    assert_ptr_equal(sks_qf_backend_default(), sks_qf_backend_find("cpu"));
}

int main(int argc, char **argv) {
    const struct CMUnitTest generic[] = {
        cmocka_unit_test(test_row_f32),     cmocka_unit_test(test_row_f64),      cmocka_unit_test(test_row_raw_bf16),
        cmocka_unit_test(test_row_top_eigs), cmocka_unit_test(test_row_top_eigs_planted),
        cmocka_unit_test(test_row_gemm_wt),  cmocka_unit_test(test_row_nonfinite),
        cmocka_unit_test(test_row_kept_weights),
        cmocka_unit_test(test_row_spikes_fixtures),
    };
    if (argc > 1) {
        g_row = sks_qf_backend_find(argv[1]);
        if (!g_row) {
            fprintf(stderr, "SKIPPED: this build has no '%s' backend row\n", argv[1]);
            return 77;
        }
        if (g_row->probe()) {
            fprintf(stderr, "SKIPPED: the '%s' row cannot run here: %s\n", argv[1], sks_last_error());
            return 77;
        }
        /* the cuda row's own eigensolver is its default (SKS_CUDA_EIGS=generic tests the
         * CPU-side solver over the row's operator instead) */
        return cmocka_run_group_tests(generic, NULL, NULL);
    }
    g_row = sks_qf_backend_find("cpu");
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_cpu_row_bitwise),
        cmocka_unit_test(test_solver_threads),
    };
    int rc = cmocka_run_group_tests(own, NULL, NULL);
    return rc ? rc : cmocka_run_group_tests(generic, NULL, NULL);
}
