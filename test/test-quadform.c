/* test-quadform.c - the implicit S_k operator against its dense definition.
 *
 * Seeded random G, U (f, d) and Down (d, f) with d = 48, f = 96. The dense reference
 * S_k = 1/2 (G^T diag(D_k) U + U^T diag(D_k) G) is built here with plain f64 loops,
 * independently of quadform.c; eigenpairs are compared with LAPACKE_dsyevr called
 * directly. Tolerances: the f64 paths are held to 1e-12 (matvec) and 1e-9 (traces and
 * norms, the SPEC target; they reach ~1e-15), the f32 paths to what f32 can give
 * (~sqrt(f) * 6e-8 per dot product, checked at 1e-5).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "sks_test.h"
#include "linalg/sks_linalg.h"

enum { D = 48, F = 96 };

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s; }
static uint64_t rng_u64(void) { return sks_test_rng_u64(&rng_state); }
static double rng_unif(void) { return sks_test_rng_unif(&rng_state); } /* splitmix64 (sks_test.c) */
static double rng_gauss(void) { return sqrt(-2.0 * log(rng_unif())) * cos(6.283185307179586 * rng_unif()); }

typedef struct {
    float G[F * D], U[F * D], Down[D * F];
    sks_quadform q;
    sks_quadform64 q64;
} model;

static void model_random(model *m, uint64_t seed) {
    rng_seed(seed);
    for (int i = 0; i < F * D; i++) m->G[i] = (float)(rng_gauss() / sqrt(D));
    for (int i = 0; i < F * D; i++) m->U[i] = (float)(rng_gauss() / sqrt(D));
    for (int i = 0; i < D * F; i++) m->Down[i] = (float)(rng_gauss() / sqrt(F));
    m->q = (sks_quadform){.d = D, .f = F, .G = m->G, .U = m->U, .Down = m->Down};
    assert_int_equal(sks_quadform_f64_alloc(&m->q, &m->q64), 0);
}

/* Reference S_k by the definition, f64 loops. */
static void dense_ref(const model *m, int k, double *S) {
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double acc = 0.0;
            for (int j = 0; j < F; j++) {
                double dj = m->Down[k * F + j];
                acc += dj * ((double)m->G[j * D + a] * m->U[j * D + b] + (double)m->U[j * D + a] * m->G[j * D + b]);
            }
            S[a * D + b] = 0.5 * acc;
        }
}

static double frob(const double *S, int n) {
    double s = 0.0;
    for (int i = 0; i < n * n; i++) s += S[i] * S[i];
    return sqrt(s);
}

/* Reference eigen-decomposition by dsyevr directly, sorted by |lambda| (selection sort). */
static void eig_ref(const double *S, double *w, double *Z) {
    double A[D * D], zz[D * D], ww[D];
    lapack_int isuppz[2 * D], mfound;
    memcpy(A, S, sizeof A);
    assert_int_equal(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'A', 'U', D, A, D, 0, 0, 0, 0, 0, &mfound, ww, zz, D, isuppz), 0);
    int used[D] = {0};
    for (int c = 0; c < D; c++) {
        int best = -1;
        for (int i = 0; i < D; i++)
            if (!used[i] && (best < 0 || fabs(ww[i]) > fabs(ww[best]))) best = i;
        used[best] = 1;
        w[c] = ww[best];
        for (int i = 0; i < D; i++) Z[i * D + c] = zz[i * D + best];
    }
}

static void test_dense_matches_definition(void **state) {
    (void)state;
    static model m;
    model_random(&m, 1);
    static double S[D * D], R[D * D];
    for (int k = 0; k < D; k += 7) {
        assert_int_equal(sks_quadform_dense(&m.q, k, S), 0);
        dense_ref(&m, k, R);
        double e = 0.0;
        for (int i = 0; i < D * D; i++) e = fmax(e, fabs(S[i] - R[i]));
        assert_true(e <= 10.0 * F * DBL_EPSILON * frob(R, D));
    }
    assert_int_equal(sks_quadform_dense(&m.q, D, S), SKS_EARG);
    sks_quadform64_free(&m.q64);
}

/* Y[:, i] = S_{ch[i]} V[:, i] for a batch with repeated channels and ldv > m. */
static void test_matvec_batch(void **state) {
    (void)state;
    static model m;
    model_random(&m, 2);
    enum { M = 9, LD = 11 };
    int ch[M] = {0, 5, 5, 47, 13, 2, 31, 0, 20};
    static double V[D * LD], Y[D * LD], S[D * D];
    static float V32[D * LD], Y32[D * LD];
    for (int i = 0; i < D * LD; i++) V32[i] = (float)rng_gauss(), V[i] = V32[i];
    double *ws = malloc(sks_quadform64_ws_size(&m.q64, M) * sizeof(double));
    float *ws32 = malloc(sks_quadform_ws_size(&m.q, M) * sizeof(float));
    assert_int_equal(sks_quadform64_matvec_batch(&m.q64, ch, M, V, LD, Y, LD, ws), 0);
    assert_int_equal(sks_quadform_matvec_batch(&m.q, ch, M, V32, LD, Y32, LD, ws32), 0);
    double worst64 = 0, worst32 = 0;
    for (int i = 0; i < M; i++) {
        dense_ref(&m, ch[i], S);
        double nr = 0, e64 = 0, e32 = 0;
        for (int a = 0; a < D; a++) {
            double y = 0;
            for (int b = 0; b < D; b++) y += S[a * D + b] * V[b * LD + i];
            nr += y * y;
            e64 += (Y[a * LD + i] - y) * (Y[a * LD + i] - y);
            e32 += (Y32[a * LD + i] - y) * (Y32[a * LD + i] - y);
        }
        worst64 = fmax(worst64, sqrt(e64 / nr));
        worst32 = fmax(worst32, sqrt(e32 / nr));
    }
    assert_true(worst64 < 1e-12);
    assert_true(worst32 < 1e-5);
    assert_true(worst32 > 0.0); /* f32 really is f32: not bitwise the f64 answer */
    int bad[1] = {D};
    assert_int_equal(sks_quadform_matvec_batch(&m.q, bad, 1, V32, LD, Y32, LD, ws32), SKS_EARG);
    assert_int_equal(sks_quadform_matvec_batch(&m.q, ch, M, V32, M - 1, Y32, LD, ws32), SKS_EARG);
    free(ws);
    free(ws32);
    sks_quadform64_free(&m.q64);
}

/* Both matvec layouts (row-blocked for narrow batches, whole GEMMs for wide ones) on a
 * shape with several row blocks and a ragged last one: f 700, d 32, m 5 and m 200,
 * leading dimensions m + 3, f32 and f64, with 1, 2 and 3 OpenBLAS threads (the
 * row-blocked path deals its blocks to that many threads, each with its own partial Y).
 * The reference is S_k v = 1/2 sum_j D_k[j] (g_j (u_j . v) + u_j (g_j . v)) in f64 loops. */
static void test_matvec_layouts(void **state) {
    (void)state;
    rng_seed(6);
    enum { d = 32, f = 700 };
    float *G = malloc(sizeof(float) * f * d), *U = malloc(sizeof(float) * f * d), *Dn = malloc(sizeof(float) * d * f);
    for (int i = 0; i < f * d; i++) G[i] = (float)rng_gauss(), U[i] = (float)rng_gauss(), Dn[i] = (float)rng_gauss();
    sks_quadform q = {.d = d, .f = f, .G = G, .U = U, .Down = Dn};
    sks_quadform64 q64;
    assert_int_equal(sks_quadform_f64_alloc(&q, &q64), 0);
    const int saved = openblas_get_num_threads();
    int ms[2] = {5, 200};
    for (int nt = 1; nt <= 3; nt++) {
        openblas_set_num_threads(nt);
        for (int t = 0; t < 2; t++) {
            int m = ms[t], ld = m + 3;
            int *ch = malloc(sizeof(int) * m);
            float *V = malloc(sizeof(float) * d * ld), *Y = malloc(sizeof(float) * d * ld);
            double *V64 = malloc(sizeof(double) * d * ld), *Y64 = malloc(sizeof(double) * d * ld);
            float *ws = malloc(sizeof(float) * sks_quadform_ws_size(&q, m));
            double *ws64 = malloc(sizeof(double) * sks_quadform64_ws_size(&q64, m));
            for (int i = 0; i < m; i++) ch[i] = (int)(rng_u64() % d);
            for (int i = 0; i < d * ld; i++) V[i] = (float)rng_gauss(), V64[i] = V[i];
            assert_int_equal(sks_quadform_matvec_batch(&q, ch, m, V, ld, Y, ld, ws), 0);
            assert_int_equal(sks_quadform64_matvec_batch(&q64, ch, m, V64, ld, Y64, ld, ws64), 0);
            for (int i = 0; i < m; i++) {
                double y[d] = {0}, nr = 0.0, e = 0.0, e64 = 0.0;
                for (int j = 0; j < f; j++) {
                    double gv = 0.0, uv = 0.0, dj = Dn[(size_t)ch[i] * f + j];
                    for (int a = 0; a < d; a++) gv += (double)G[j * d + a] * V[a * ld + i], uv += (double)U[j * d + a] * V[a * ld + i];
                    for (int a = 0; a < d; a++) y[a] += 0.5 * dj * (G[j * d + a] * uv + U[j * d + a] * gv);
                }
                for (int a = 0; a < d; a++) {
                    nr += y[a] * y[a];
                    e += (Y[a * ld + i] - y[a]) * (Y[a * ld + i] - y[a]);
                    e64 += (Y64[a * ld + i] - y[a]) * (Y64[a * ld + i] - y[a]);
                }
                assert_true(sqrt(e / nr) < 1e-5);
                assert_true(sqrt(e64 / nr) < 1e-12);
            }
            free(ch); free(V); free(Y); free(V64); free(Y64); free(ws); free(ws64);
        }
    }
    openblas_set_num_threads(saved);
    sks_quadform64_free(&q64);
    free(G); free(U); free(Dn);
}

/* Traces and Frobenius norms of every channel, several block sizes (one dividing f,
 * ragged ones, one larger than f). */
static void test_traces_frobenius(void **state) {
    (void)state;
    static model m;
    model_random(&m, 3);
    static double S[D * D];
    double tr[D], fr64[D], fr32[D], trref[D], frref[D], trscale[D];
    assert_int_equal(sks_quadform_traces(&m.q, tr), 0);
    for (int k = 0; k < D; k++) {
        dense_ref(&m, k, S);
        double t = 0;
        for (int a = 0; a < D; a++) t += S[a * D + a];
        trref[k] = t;
        frref[k] = frob(S, D);
        /* the trace is a sum with cancellation: scale its error by sum |terms| */
        double sc = 0;
        for (int j = 0; j < F; j++) {
            double gu = 0;
            for (int a = 0; a < D; a++) gu += (double)m.G[j * D + a] * m.U[j * D + a];
            sc += fabs(m.Down[k * F + j] * gu);
        }
        trscale[k] = sc;
        assert_true(fabs(tr[k] - trref[k]) <= 1e-9 * trscale[k]);
    }
    int blocks[5] = {0, 7, 32, 96, 1000};
    for (int bi = 0; bi < 5; bi++) {
        assert_int_equal(sks_quadform64_frobenius(&m.q64, blocks[bi], fr64), 0);
        assert_int_equal(sks_quadform_frobenius_blocked(&m.q, blocks[bi], fr32), 0);
        for (int k = 0; k < D; k++) {
            assert_true(fabs(fr64[k] - frref[k]) <= 1e-9 * frref[k]);
            assert_true(fabs(fr32[k] - frref[k]) <= 1e-5 * frref[k]);
        }
    }
    assert_int_equal(sks_quadform_frobenius(&m.q, fr32), 0);
    for (int k = 0; k < D; k++) assert_true(fabs(fr32[k] - frref[k]) <= 1e-5 * frref[k]);
    /* the flop count formula: 10 d sum_b b (f - i0); for one block b = f: 10 d f^2 */
    assert_true(sks_quadform_frobenius_flops(D, F, F) == 10.0 * D * F * F);
    sks_quadform64_free(&m.q64);
}

/* The split screen: partials over block ranges (single blocks, in reverse order, and
 * uneven ranges, as a rank would compute its share), then finished in block order, equal
 * the whole-screen functions bit for bit, f32 and f64, for block sizes that divide f,
 * leave a short last block, and exceed f. Bad ranges are SKS_EARG. */
static void test_frobenius_partials(void **state) {
    (void)state;
    static model m;
    model_random(&m, 11);
    int blocks[4] = {0, 7, 32, 1000};
    for (int bi = 0; bi < 4; bi++) {
        const int bs = blocks[bi], nblk = sks_quadform_frobenius_nblocks(F, bs);
        const int want = bs <= 0 ? 1 : (bs >= F ? 1 : (F + bs - 1) / bs);
        assert_int_equal(nblk, want);
        double *p32 = calloc((size_t)nblk * D, sizeof *p32), *p64 = calloc((size_t)nblk * D, sizeof *p64);
        assert_non_null(p32);
        assert_non_null(p64);
        double full32[D], full64[D], got[D];
        assert_int_equal(sks_quadform_frobenius_blocked(&m.q, bs, full32), 0);
        assert_int_equal(sks_quadform64_frobenius(&m.q64, bs, full64), 0);
        /* one block at a time, last first */
        for (int b = nblk - 1; b >= 0; b--) {
            assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, b, b + 1, p32 + (size_t)b * D), 0);
            assert_int_equal(sks_quadform64_frobenius_partials(&m.q64, bs, b, b + 1, p64 + (size_t)b * D), 0);
        }
        sks_quadform_frobenius_finish(D, nblk, p32, got);
        assert_memory_equal(got, full32, sizeof got);
        sks_quadform_frobenius_finish(D, nblk, p64, got);
        assert_memory_equal(got, full64, sizeof got);
        /* two uneven ranges [0, h) and [h, nblk) into one array */
        const int h = nblk / 3;
        memset(p32, 0, (size_t)nblk * D * sizeof *p32);
        assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, h, nblk, p32 + (size_t)h * D), 0);
        assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, 0, h, p32), 0);
        sks_quadform_frobenius_finish(D, nblk, p32, got);
        assert_memory_equal(got, full32, sizeof got);
        /* empty range: nothing written, no failure */
        assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, 1, 1, NULL), 0);
        assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, 0, nblk + 1, p32), SKS_EARG);
        assert_int_equal(sks_quadform64_frobenius_partials(&m.q64, bs, -1, 1, p64), SKS_EARG);
        assert_int_equal(sks_quadform_frobenius_partials(&m.q, bs, 0, 1, NULL), SKS_EARG);
        free(p32);
        free(p64);
    }
    assert_int_equal(sks_quadform_frobenius_nblocks(F, 0), 1); /* 256 capped at f = 96 */
    assert_int_equal(sks_quadform_frobenius_nblocks(F, 32), 3);
    assert_int_equal(sks_quadform_frobenius_nblocks(F, 7), 14);
    sks_quadform64_free(&m.q64);
}

/* Top-r eigenpairs of several channels at once against dsyevr on the dense reference:
 * eigenvalues to 1e-6 relative, |cos| >= 1 - 1e-8, explicit residuals within tol, and
 * the multi-problem run equals single-channel runs. */
static void test_top_eigs_vs_dsyevr(void **state) {
    (void)state;
    static model m;
    model_random(&m, 4);
    enum { M = 5, R = 4 };
    int ch[M] = {3, 17, 17, 40, 8};
    sks_eigs_opts o = {.r = R, .block = 6, .tol = 1e-9, .seed = 7};
    static double ev[M * R], V[M * D * R], res[M][R];
    sks_eigs_info info[M];
    for (int i = 0; i < M; i++) info[i] = (sks_eigs_info){.residuals = res[i]};
    sks_eigs_extra x = {0};
    assert_int_equal(sks_quadform_top_eigs(NULL, &m.q64, ch, M, &o, &x, ev, V, info), 0);
    static double S[D * D], w[D], Z[D * D];
    for (int i = 0; i < M; i++) {
        dense_ref(&m, ch[i], S);
        eig_ref(S, w, Z);
        assert_int_equal(info[i].n_conv, R);
        assert_true(info[i].matvecs > 0);
        for (int c = 0; c < R; c++) {
            const double *v = V + (size_t)i * D * R;
            assert_true(fabs(ev[i * R + c] - w[c]) <= 1e-6 * fabs(w[c]));
            double dot = 0, nrm = 0, r2 = 0;
            for (int a = 0; a < D; a++) dot += v[a * R + c] * Z[a * D + c], nrm += v[a * R + c] * v[a * R + c];
            assert_true(fabs(nrm - 1.0) < 1e-12);
            assert_true(fabs(dot) >= 1.0 - 1e-8);
            for (int a = 0; a < D; a++) {
                double y = 0;
                for (int b = 0; b < D; b++) y += S[a * D + b] * v[b * R + c];
                y -= ev[i * R + c] * v[a * R + c];
                r2 += y * y;
            }
            assert_true(sqrt(r2) <= 1.01 * o.tol * fabs(ev[i * R + c]));
            assert_true(res[i][c] <= o.tol);
        }
    }
    /* duplicate channel: identical problems give identical answers up to the start */
    for (int c = 0; c < R; c++) assert_true(fabs(ev[1 * R + c] - ev[2 * R + c]) <= 1e-9 * fabs(ev[R + c]));
    /* single-channel runs agree with the batched run */
    for (int i = 0; i < M; i += 2) {
        double ev1[R], V1[D * R];
        assert_int_equal(sks_quadform_top_eigs(NULL, &m.q64, &ch[i], 1, &o, NULL, ev1, V1, NULL), 0);
        for (int c = 0; c < R; c++) {
            assert_true(fabs(ev1[c] - ev[i * R + c]) <= 1e-8 * fabs(ev1[c]));
            double dot = 0;
            for (int a = 0; a < D; a++) dot += V1[a * R + c] * V[(size_t)i * D * R + a * R + c];
            assert_true(fabs(dot) >= 1.0 - 1e-8);
        }
    }
    /* the f32 operator reaches tol 1e-5 on the same problems */
    o.tol = 1e-5;
    assert_int_equal(sks_quadform_top_eigs(&m.q, NULL, ch, M, &o, NULL, ev, V, info), 0);
    for (int i = 0; i < M; i++) {
        dense_ref(&m, ch[i], S);
        eig_ref(S, w, Z);
        for (int c = 0; c < R; c++) assert_true(fabs(ev[i * R + c] - w[c]) <= 1e-5 * fabs(w[c]));
    }
    assert_int_equal(sks_quadform_top_eigs(&m.q, &m.q64, ch, M, &o, NULL, ev, V, info), SKS_EARG);
    sks_quadform64_free(&m.q64);
}

/* Planted spike: rows 0..7 of G and U are multiples of a unit s (g_j = a_j s,
 * u_j = b_j s), the other rows are orthogonal to s. Then
 *   S_k = (sum_{j<8} D_k[j] a_j b_j) s s^T + N_k,  N_k s = 0,
 * so s is an exact eigenvector with lambda* = sum_{j<8} D_k[j] a_j b_j, made dominant by
 * large a_j b_j; both signs of lambda* are planted (channels 0 and 1). */
static void test_planted_spike(void **state) {
    (void)state;
    static model m;
    model_random(&m, 5);
    sks_quadform64_free(&m.q64);
    double s[D], nrm = 0;
    for (int a = 0; a < D; a++) s[a] = rng_gauss(), nrm += s[a] * s[a];
    for (int a = 0; a < D; a++) s[a] /= sqrt(nrm);
    for (int j = 0; j < F; j++) {
        float *g = m.G + j * D, *u = m.U + j * D;
        if (j < 8) {
            double aj = 3.0 + j * 0.25, bj = 2.0 - j * 0.1;
            for (int a = 0; a < D; a++) g[a] = (float)(aj * s[a]), u[a] = (float)(bj * s[a]);
        } else { /* project out s in f64; keep the f32 copies as the truth below */
            double pg = 0, pu = 0;
            for (int a = 0; a < D; a++) pg += g[a] * s[a], pu += u[a] * s[a];
            for (int a = 0; a < D; a++) g[a] = (float)(g[a] - pg * s[a]), u[a] = (float)(u[a] - pu * s[a]);
        }
    }
    for (int j = 0; j < 8; j++) m.Down[0 * F + j] = 1.0f, m.Down[1 * F + j] = -1.0f;
    assert_int_equal(sks_quadform_f64_alloc(&m.q, &m.q64), 0);
    /* f32 rounding of the stored rows breaks exactness at the 1e-7 level: the planted
     * truth is recomputed from the stored f32 rows (lambda from the spike rows), and the
     * comparison allows for that perturbation. */
    double lam[2] = {0, 0};
    for (int j = 0; j < 8; j++) {
        double gs = 0, us = 0;
        for (int a = 0; a < D; a++) gs += m.G[j * D + a] * s[a], us += m.U[j * D + a] * s[a];
        lam[0] += m.Down[j] * gs * us;
        lam[1] += m.Down[F + j] * gs * us;
    }
    int ch[2] = {0, 1};
    sks_eigs_opts o = {.r = 2, .tol = 1e-10, .seed = 3};
    double ev[4], V[2 * D * 2];
    assert_int_equal(sks_quadform_top_eigs(NULL, &m.q64, ch, 2, &o, NULL, ev, V, NULL), 0);
    static double S[D * D];
    for (int i = 0; i < 2; i++) {
        assert_true(i == 0 ? ev[0] > 0 : ev[2] < 0);
        assert_true(fabs(ev[i * 2] - lam[i]) <= 1e-5 * fabs(lam[i]));
        double dot = 0;
        for (int a = 0; a < D; a++) dot += V[i * D * 2 + a * 2] * s[a];
        assert_true(fabs(dot) >= 1.0 - 1e-8);
        /* dominance: the planted spike is far above the noise part */
        assert_true(fabs(ev[i * 2]) > 10.0 * fabs(ev[i * 2 + 1]));
        /* and dsyevr on the dense matrix agrees to the solver tolerance */
        double w[D], Z[D * D];
        dense_ref(&m, ch[i], S);
        eig_ref(S, w, Z);
        assert_true(fabs(ev[i * 2] - w[0]) <= 1e-9 * fabs(w[0]));
    }
    sks_quadform64_free(&m.q64);
}

static void test_sgemm_gflops(void **state) {
    (void)state;
    double g = sks_sgemm_gflops(64, 2);
    assert_true(g > 0.0 && isfinite(g));
    assert_true(sks_sgemm_gflops(0, 1) == 0.0);
    double g64 = sks_dgemm_gflops(64, 2);
    assert_true(g64 > 0.0 && isfinite(g64));
    assert_true(sks_dgemm_gflops(0, 1) == 0.0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_matches_definition),
        cmocka_unit_test(test_matvec_batch),
        cmocka_unit_test(test_matvec_layouts),
        cmocka_unit_test(test_traces_frobenius),
        cmocka_unit_test(test_frobenius_partials),
        cmocka_unit_test(test_top_eigs_vs_dsyevr),
        cmocka_unit_test(test_planted_spike),
        cmocka_unit_test(test_sgemm_gflops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
