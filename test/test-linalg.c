/* test-linalg.c - SVD, effective rank, principal cosines, dense and Krylov eigensolvers.
 *
 * References are constructed (planted singular values, planes at known angles, planted
 * spectra Q diag(lambda) Q^T) or independent dense LAPACK (dsyevr through LAPACKE
 * directly). Tolerances are multiples of n * DBL_EPSILON unless an iterative tolerance
 * is the point of the test.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "sks_test.h"
#include "linalg/sks_linalg.h"

/* ---- seeded helpers ------------------------------------------------------------------ */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s; }
static double rng_unif(void) { return sks_test_rng_unif(&rng_state); } /* splitmix64 (sks_test.c) */
static double rng_gauss(void) { return sqrt(-2.0 * log(rng_unif())) * cos(6.283185307179586 * rng_unif()); }

/* Random orthogonal (n, n): Q factor of a Gaussian matrix (dgeqrf + dorgqr). */
static void random_orthogonal(int n, double *Q) {
    double *tau = malloc((size_t)n * sizeof *tau);
    for (int i = 0; i < n * n; i++) Q[i] = rng_gauss();
    assert_int_equal(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, n, n, Q, n, tau), 0);
    assert_int_equal(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, n, n, n, Q, n, tau), 0);
    free(tau);
}

/* C (m, n) = A (m, k) B (k, n), plain loops (reference, independent of BLAS). */
static void matmul(int m, int k, int n, const double *A, const double *B, double *C) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int t = 0; t < k; t++) acc += A[(size_t)i * k + t] * B[(size_t)t * n + j];
            C[(size_t)i * n + j] = acc;
        }
}

/* ---- SVD and subspaces ----------------------------------------------------------------- */

/* X = Qm[:, :r] diag(s) Qn[:r, :] with planted s: sks_svd returns s, reconstructs X and
 * has orthonormal factors, all to a few hundred eps. */
static void test_svd_planted(void **state) {
    (void)state;
    rng_seed(11);
    const int m = 30, n = 20, r = 7;
    double *Qm = malloc(m * m * sizeof(double)), *Qn = malloc(n * n * sizeof(double));
    random_orthogonal(m, Qm);
    random_orthogonal(n, Qn);
    double sp[7] = {9.0, 5.0, 4.0, 2.5, 1.0, 0.5, 0.125};
    double *X = calloc((size_t)m * n, sizeof(double));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int t = 0; t < r; t++) X[i * n + j] += Qm[i * m + t] * sp[t] * Qn[t * n + j];
    int k = n;
    double *s = malloc(k * sizeof(double)), *U = malloc((size_t)m * k * sizeof(double));
    double *Vt = malloc((size_t)k * n * sizeof(double));
    assert_int_equal(sks_svd(m, n, X, s, U, Vt), 0);
    double tol = 100.0 * m * DBL_EPSILON * sp[0];
    for (int t = 0; t < k; t++) assert_true(fabs(s[t] - (t < r ? sp[t] : 0.0)) < tol);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int t = 0; t < k; t++) acc += U[i * k + t] * s[t] * Vt[t * n + j];
            assert_true(fabs(acc - X[i * n + j]) < tol);
        }
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) {
            double uu = 0.0, vv = 0.0;
            for (int i = 0; i < m; i++) uu += U[i * k + a] * U[i * k + b];
            for (int j = 0; j < n; j++) vv += Vt[a * n + j] * Vt[b * n + j];
            assert_true(fabs(uu - (a == b)) < 100.0 * m * DBL_EPSILON);
            assert_true(fabs(vv - (a == b)) < 100.0 * m * DBL_EPSILON);
        }
    /* values only, and one side only, agree with the full call */
    double *s2 = malloc(k * sizeof(double));
    assert_int_equal(sks_svd(m, n, X, s2, NULL, NULL), 0);
    for (int t = 0; t < k; t++) assert_true(fabs(s2[t] - s[t]) < tol);
    assert_int_equal(sks_svd(m, n, X, s2, NULL, Vt), 0);
    for (int t = 0; t < k; t++) assert_true(fabs(s2[t] - s[t]) < tol);
    assert_int_equal(sks_svd(-1, n, X, s2, NULL, NULL), SKS_EARG);
    free(Qm); free(Qn); free(X); free(s); free(U); free(Vt); free(s2);
}

/* Rows spanning a known r-dimensional subspace with equal weights: r99 = r exactly;
 * planted unequal weights: r_frac equals the count from the planted values. */
static void test_effective_rank(void **state) {
    (void)state;
    rng_seed(12);
    const int m = 40, n = 16;
    double *Qn = malloc(n * n * sizeof(double)), *X = malloc((size_t)m * n * sizeof(double));
    double *s = malloc(n * sizeof(double));
    random_orthogonal(n, Qn);
    for (int r = 1; r <= 6; r++) {
        /* X = C B with C (m, r) Gaussian whitened to orthonormal columns: singular values
         * are exactly the weights, here all 3.0. */
        double *C = malloc((size_t)m * m * sizeof(double));
        random_orthogonal(m, C);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double acc = 0.0;
                for (int t = 0; t < r; t++) acc += C[i * m + t] * 3.0 * Qn[t * n + j];
                X[i * n + j] = acc;
            }
        assert_int_equal(sks_svd(m, n, X, s, NULL, NULL), 0);
        assert_int_equal(sks_effective_rank(s, n, 0.99), r);
        assert_true(fabs(sks_participation_ratio(s, n) - r) < 1e-12 * r);
        free(C);
    }
    /* planted decaying weights: the expected count computed from the planted values */
    double w[8] = {10, 6, 3, 2, 1, 0.5, 0.2, 0.1};
    double tot = 0;
    for (int i = 0; i < 8; i++) tot += w[i] * w[i];
    double fracs[3] = {0.5, 0.9, 0.99};
    for (int q = 0; q < 3; q++) {
        int expect = 0;
        double acc = 0;
        while (acc < fracs[q] * tot) acc += w[expect] * w[expect], expect++;
        assert_int_equal(sks_effective_rank(w, 8, fracs[q]), expect);
    }
    double s2 = 0, s4 = 0;
    for (int i = 0; i < 8; i++) s2 += w[i] * w[i], s4 += pow(w[i], 4);
    assert_true(fabs(sks_participation_ratio(w, 8) - s2 * s2 / s4) < 1e-13 * s2 * s2 / s4);
    double z[3] = {0, 0, 0};
    assert_int_equal(sks_effective_rank(z, 3, 0.99), 0);
    assert_true(sks_participation_ratio(z, 3) == 0.0);
    free(Qn); free(X); free(s);
}

/* Planes at known angles: A = span{e1, e2}, B = span{cos t1 e1 + sin t1 e3,
 * cos t2 e2 + sin t2 e4}, both rotated by one random orthogonal Q and with rows mixed by
 * random invertible 2x2 matrices: principal cosines are cos t1 >= cos t2 to 1e-12. */
static void test_principal_cosines_planes(void **state) {
    (void)state;
    rng_seed(13);
    const int n = 12;
    double *Q = malloc(n * n * sizeof(double));
    double thetas[4][2] = {{0.1, 0.7}, {0.0, 1.2}, {0.3, 1.5707963267948966}, {0.4, 0.4}};
    for (int trial = 0; trial < 4; trial++) {
        random_orthogonal(n, Q);
        double t1 = thetas[trial][0], t2 = thetas[trial][1];
        double a0[2][12] = {{0}}, b0[2][12] = {{0}};
        a0[0][0] = 1; a0[1][1] = 1;
        b0[0][0] = cos(t1); b0[0][2] = sin(t1);
        b0[1][1] = cos(t2); b0[1][3] = sin(t2);
        double A[3 * 12], B[2 * 12], Ar[2 * 12], Br[2 * 12];
        matmul(2, n, n, &a0[0][0], Q, Ar); /* rows rotated: x^T Q */
        matmul(2, n, n, &b0[0][0], Q, Br);
        double Ma[4] = {2.0, 0.3, -0.7, 1.1}, Mb[4] = {0.5, 1.5, 1.0, -2.0};
        matmul(2, 2, n, Ma, Ar, A);
        matmul(2, 2, n, Mb, Br, B);
        /* A gets a third, dependent row: the rank stays 2 */
        for (int j = 0; j < n; j++) A[2 * n + j] = A[j] - 3.0 * A[n + j];
        double c[2];
        assert_int_equal(sks_principal_cosines(n, 3, A, 2, B, c), 0);
        double hi = fmax(cos(t1), cos(t2)), lo = fmin(cos(t1), cos(t2));
        assert_true(fabs(c[0] - hi) < 1e-12);
        assert_true(fabs(c[1] - lo) < 1e-12);
        /* symmetric in its arguments */
        double c2[2];
        assert_int_equal(sks_principal_cosines(n, 2, B, 3, A, c2), 0);
        assert_true(fabs(c2[0] - hi) < 1e-12 && fabs(c2[1] - lo) < 1e-12);
    }
    /* a subspace against itself: all ones; against its orthogonal complement: zeros */
    double A[3 * 12], B[3 * 12];
    random_orthogonal(n, Q);
    memcpy(A, Q, sizeof A);
    memcpy(B, Q + 3 * n, sizeof B);
    double c[3];
    assert_int_equal(sks_principal_cosines(n, 3, A, 3, A, c), 0);
    for (int i = 0; i < 3; i++) assert_true(fabs(c[i] - 1.0) < 1e-13);
    assert_int_equal(sks_principal_cosines(n, 3, A, 3, B, c), 0);
    for (int i = 0; i < 3; i++) assert_true(fabs(c[i]) < 1e-13);
    assert_int_equal(sks_principal_cosines(0, 3, A, 3, B, c), SKS_EARG);
    free(Q);
}


/* ---- eigensolvers --------------------------------------------------------------------- */

/* A = Q diag(lam) Q^T with a planted spectrum; the operator callback is a dense dgemm-free
 * loop over A (counts its calls). */
typedef struct {
    int n;
    const double *A;
    int calls;
} dense_op;
static int dense_apply(void *ud, int n, int nb, const double *X, double *Y) {
    dense_op *o = ud;
    o->calls++;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nb; j++) {
            double acc = 0.0;
            for (int t = 0; t < n; t++) acc += o->A[(size_t)i * n + t] * X[(size_t)t * nb + j];
            Y[(size_t)i * nb + j] = acc;
        }
    return 0;
}
static void planted(int n, const double *lam, double *Q, double *A) {
    random_orthogonal(n, Q);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int t = 0; t < n; t++) acc += Q[(size_t)i * n + t] * lam[t] * Q[(size_t)j * n + t];
            A[(size_t)i * n + j] = acc;
        }
}

/* sks_eig_dense on a planted spectrum: values sorted by |.| and A z = lambda z. */
static void test_eig_dense_planted(void **state) {
    (void)state;
    rng_seed(21);
    const int n = 30;
    double lam[30], *Q = malloc(n * n * sizeof(double)), *A = malloc(n * n * sizeof(double));
    double *Z = malloc(n * n * sizeof(double)), w[30];
    for (int i = 0; i < n; i++) lam[i] = (i % 2 ? -1.0 : 1.0) * (1.0 + 0.37 * i);
    planted(n, lam, Q, A);
    assert_int_equal(sks_eig_dense(n, A, w, Z), 0);
    for (int c = 0; c < n; c++) {
        int i = n - 1 - c; /* |lam| increases with i */
        assert_true(fabs(w[c] - lam[i]) < 100.0 * n * DBL_EPSILON * fabs(lam[n - 1]));
        double r2 = 0.0;
        for (int a = 0; a < n; a++) {
            double y = -w[c] * Z[a * n + c];
            for (int b = 0; b < n; b++) y += A[a * n + b] * Z[b * n + c];
            r2 += y * y;
        }
        assert_true(sqrt(r2) < 100.0 * n * DBL_EPSILON * fabs(lam[n - 1]));
    }
    double w2[30];
    assert_int_equal(sks_eig_dense(n, A, w2, NULL), 0);
    for (int c = 0; c < n; c++) assert_true(fabs(w2[c] - w[c]) < 100.0 * n * DBL_EPSILON * fabs(lam[n - 1]));
    free(Q); free(A); free(Z);
}

/* Negative-dominant and clustered spectrum, n = 300: lambda = -10, 9.99, 9.98, -9.97
 * (a cluster of four within 0.3%), then a bulk in [-8, 8]. The solver returns them in
 * |.| order with eigenvectors matching the planted columns of Q. A second run plants an
 * exactly double eigenvalue -10, -10: the returned pair must span the planted plane. */
static void test_eigs_clustered_negative(void **state) {
    (void)state;
    rng_seed(22);
    const int n = 300, r = 4;
    double *lam = malloc(n * sizeof(double)), *Q = malloc((size_t)n * n * sizeof(double));
    double *A = malloc((size_t)n * n * sizeof(double)), *V = malloc((size_t)n * r * sizeof(double));
    for (int trial = 0; trial < 2; trial++) {
        double top[4] = {-10.0, 9.99, 9.98, -9.97};
        if (trial == 1) top[1] = -10.0;
        for (int i = 0; i < n; i++) lam[i] = i < 4 ? top[i] : -8.0 + 16.0 * rng_unif();
        planted(n, lam, Q, A);
        dense_op op = {n, A, 0};
        sks_eigs_opts o = {.r = r, .block = 4, .tol = 1e-10, .seed = 5};
        double ev[4], res[4];
        sks_eigs_info info = {.residuals = res};
        sks_eigs_extra x = {0};
        assert_int_equal(sks_eigs_topk_ex(dense_apply, &op, n, &o, &x, ev, V, &info), 0);
        assert_int_equal(info.n_conv, r);
        assert_true(info.matvecs >= op.calls && op.calls > 0);
        for (int c = 0; c < r; c++) {
            assert_true(res[c] <= o.tol);
            assert_true(fabs(ev[c] - top[c]) <= 1e-9 * 10.0);
            /* explicit residual with the dense matrix */
            double r2 = 0.0;
            for (int a = 0; a < n; a++) {
                double y = -ev[c] * V[a * r + c];
                for (int b = 0; b < n; b++) y += A[(size_t)a * n + b] * V[b * r + c];
                r2 += y * y;
            }
            assert_true(sqrt(r2) <= 1.01 * o.tol * fabs(ev[c]));
        }
        if (trial == 0) {
            for (int c = 0; c < r; c++) {
                double dot = 0.0;
                for (int a = 0; a < n; a++) dot += V[a * r + c] * Q[(size_t)a * n + c];
                assert_true(fabs(dot) >= 1.0 - 1e-8);
            }
        } else {
            /* both returned vectors of -10 lie in span(Q[:, 0], Q[:, 1]) */
            for (int c = 0; c < 2; c++) {
                double p0 = 0.0, p1 = 0.0;
                for (int a = 0; a < n; a++) p0 += V[a * r + c] * Q[(size_t)a * n], p1 += V[a * r + c] * Q[(size_t)a * n + 1];
                assert_true(p0 * p0 + p1 * p1 >= 1.0 - 1e-8);
            }
        }
    }
    free(lam); free(Q); free(A); free(V);
}

/* Multi-problem solver: three different operators solved together equal the single runs;
 * the callback sees only active problems. A tiny iteration cap reports SKS_ENOCONV with
 * estimates filled. */
typedef struct {
    int n;
    const double *A[3];
    int max_nact;
} multi_op;
static int multi_apply(void *ud, int n, int nact, const int *prob, int nb, const double *X, double *Y) {
    multi_op *o = ud;
    if (nact > o->max_nact) o->max_nact = nact;
    int ld = nact * nb;
    for (int p = 0; p < nact; p++) {
        const double *A = o->A[prob[p]];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < nb; j++) {
                double acc = 0.0;
                for (int t = 0; t < n; t++) acc += A[(size_t)i * n + t] * X[(size_t)t * ld + p * nb + j];
                Y[(size_t)i * ld + p * nb + j] = acc;
            }
    }
    return 0;
}
static void test_eigs_multi_equals_single(void **state) {
    (void)state;
    rng_seed(23);
    const int n = 120, r = 3;
    double *lam = malloc(n * sizeof(double)), *Q = malloc((size_t)n * n * sizeof(double));
    double *A[3];
    for (int p = 0; p < 3; p++) {
        A[p] = malloc((size_t)n * n * sizeof(double));
        /* problem 0 easy (dominant spike), 1 Wigner-like bulk, 2 clustered negative */
        for (int i = 0; i < n; i++) lam[i] = -1.0 + 2.0 * rng_unif();
        if (p == 0) lam[0] = 50.0;
        if (p == 2) lam[0] = -3.0, lam[1] = -2.999, lam[2] = 2.99;
        planted(n, lam, Q, A[p]);
    }
    multi_op mo = {n, {A[0], A[1], A[2]}, 0};
    sks_eigs_opts o = {.r = r, .tol = 1e-10, .seed = 9};
    double ev[9], *V = malloc((size_t)3 * n * r * sizeof(double));
    sks_eigs_info info[3] = {{0}};
    assert_int_equal(sks_eigs_topk_multi(multi_apply, &mo, n, 3, &o, NULL, ev, V, info), 0);
    assert_int_equal(mo.max_nact, 3);
    /* the easy problem stops first: fewer operator applications */
    assert_true(info[0].matvecs < info[1].matvecs);
    for (int p = 0; p < 3; p++) {
        dense_op op = {n, A[p], 0};
        double ev1[3], *V1 = malloc((size_t)n * r * sizeof(double));
        assert_int_equal(sks_eigs_topk(dense_apply, &op, n, &o, ev1, V1, NULL), 0);
        for (int c = 0; c < r; c++) {
            assert_true(fabs(ev1[c] - ev[p * r + c]) <= 1e-9 * fabs(ev1[c]));
            double dot = 0.0;
            for (int a = 0; a < n; a++) dot += V1[a * r + c] * V[(size_t)p * n * r + a * r + c];
            assert_true(fabs(dot) >= 1.0 - 1e-8);
        }
        free(V1);
    }
    /* a cap of 2 expansions cannot reach 1e-10 on the bulk problem */
    o.max_iter = 2;
    assert_int_equal(sks_eigs_topk_multi(multi_apply, &mo, n, 3, &o, NULL, ev, V, info), SKS_ENOCONV);
    assert_true(info[1].n_conv < r);
    for (int c = 0; c < 9; c++) assert_true(isfinite(ev[c]));
    /* whole space smaller than the basis: n = 5, r = 5 is solved exactly */
    double lam5[5] = {3, -2, 1, 0.5, -0.25}, Q5[25], A5[25], ev5[5], V5[25];
    planted(5, lam5, Q5, A5);
    dense_op op5 = {5, A5, 0};
    sks_eigs_opts o5 = {.r = 5, .tol = 1e-12};
    sks_eigs_info info5 = {0};
    assert_int_equal(sks_eigs_topk(dense_apply, &op5, 5, &o5, ev5, V5, &info5), 0);
    assert_int_equal(info5.spanned, 1);
    for (int c = 0; c < 5; c++) assert_true(fabs(ev5[c] - lam5[c]) < 1e-13);
    o5.r = 6;
    assert_int_equal(sks_eigs_topk(dense_apply, &op5, 5, &o5, ev5, V5, NULL), SKS_EARG);
    for (int p = 0; p < 3; p++) free(A[p]);
    free(lam); free(Q); free(V);
}

/* Lockstep problems through thick restarts (basis 20 < n 60) against dense LAPACK, with
 * block 1 and 3: an isolated negative eigenvalue, a spread diagonal, plain bulk. The
 * per-problem restart cap (sks_eigs_extra.max_restarts) stops a problem early and is
 * reported as SKS_ENOCONV with the estimates filled. Tolerances: tol 1e-11 gives
 * eigenvalues to ~tol^2 / gap and vectors to ~tol / gap; we ask 1e-9 and 1 - 1e-9
 * (vectors only where the gap exceeds 1e-3). */
typedef struct {
    int n;
    const double *A; /* (nprob, n, n) */
} stack_op;
static int stack_apply(void *ud, int n, int nact, const int *prob, int nb, const double *X, double *Y) {
    const stack_op *o = ud;
    const int ld = nact * nb;
    for (int p = 0; p < nact; p++)
        for (int j = 0; j < nb; j++)
            for (int i = 0; i < n; i++) {
                const double *Ar = o->A + ((size_t)prob[p] * n + i) * n;
                double acc = 0.0;
                for (int t = 0; t < n; t++) acc += Ar[t] * X[(size_t)t * ld + p * nb + j];
                Y[(size_t)i * ld + p * nb + j] = acc;
            }
    return 0;
}
static void test_eigs_multi_restarts_vs_lapack(void **state) {
    (void)state;
    enum { N = 60, NP = 4, R = 4 };
    rng_seed(99);
    double *A = malloc(sizeof(double) * NP * N * N);
    for (int p = 0; p < NP; p++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j <= i; j++) {
                double v = 2.0 * rng_unif() - 1.0;
                if (p == 1 && i == j && i == 7) v -= 12.0; /* one isolated negative eigenvalue */
                if (p == 2 && i == j) v += 0.2 * i;         /* spread diagonal */
                A[((size_t)p * N + i) * N + j] = A[((size_t)p * N + j) * N + i] = v;
            }
    stack_op so = {N, A};
    double *ev = malloc(sizeof(double) * NP * R), *V = malloc(sizeof(double) * NP * N * R);
    double res[NP][R];
    for (int blk = 1; blk <= 3; blk += 2) {
        sks_eigs_opts o = {.r = R, .block = blk, .tol = 1e-11, .seed = 3};
        sks_eigs_extra x = {.krylov_dim = 20};
        sks_eigs_info info[NP];
        for (int p = 0; p < NP; p++) info[p] = (sks_eigs_info){.residuals = res[p]};
        assert_int_equal(sks_eigs_topk_multi(stack_apply, &so, N, NP, &o, &x, ev, V, info), 0);
        assert_true(x.restarts > 0);
        for (int p = 0; p < NP; p++) assert_int_equal(info[p].spanned, 0);
        for (int p = 0; p < NP; p++) {
            double w[N], Z[N * N], Ac[N * N];
            lapack_int m, isuppz[2 * N];
            memcpy(Ac, A + (size_t)p * N * N, sizeof Ac);
            assert_int_equal(LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'A', 'U', N, Ac, N, 0, 0, 0, 0, 0.0, &m, w, Z, N,
                                            isuppz), 0);
            int idx[N];
            for (int i = 0; i < N; i++) idx[i] = i;
            for (int i = 1; i < N; i++)
                for (int j = i; j > 0 && fabs(w[idx[j - 1]]) < fabs(w[idx[j]]); j--) {
                    int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
                }
            assert_int_equal(info[p].n_conv, R);
            for (int e = 0; e < R; e++) {
                assert_true(fabs(ev[p * R + e] - w[idx[e]]) < 1e-9 * fabs(w[idx[e]]));
                assert_true(res[p][e] <= o.tol);
                double gap = 1e9, dot = 0.0;
                for (int i = 0; i < N; i++)
                    if (i != idx[e]) gap = fmin(gap, fabs(w[i] - w[idx[e]]));
                for (int i = 0; i < N; i++) dot += Z[i * N + idx[e]] * V[((size_t)p * N + i) * R + e];
                if (gap > 1e-3) assert_true(fabs(dot) > 1 - 1e-9);
            }
        }
        /* one restart allowed: not enough for 1e-11 on the bulk problems */
        x = (sks_eigs_extra){.krylov_dim = 20, .max_restarts = 1};
        assert_int_equal(sks_eigs_topk_multi(stack_apply, &so, N, NP, &o, &x, ev, V, info), SKS_ENOCONV);
        assert_true(x.restarts > 0 && x.restarts <= NP);
        for (int c = 0; c < NP * R; c++) assert_true(isfinite(ev[c]));
    }
    free(A);
    free(ev);
    free(V);
}

/* An inexact operator: A plus a fixed nonsymmetric E with ||E|| = 1e-9 ||A|| (as an f32
 * operator perturbs S_k). The bulk pairs, 1e-4 of ||A||, cannot reach tol 1e-10 relative
 * (their residuals stay near ||E||), so without a floor the restart cap stops them
 * (SKS_ENOCONV); with norm_tol 1e-8 (10 ||E|| / ||A||) they converge, and every
 * eigenvalue agrees with the planted one to ||E|| + norm_tol ||A|| (Bauer-Fike). */
typedef struct {
    int n;
    const double *A, *E; /* (n, n) each */
} noisy_op;
static int noisy_apply(void *ud, int n, int nb, const double *X, double *Y) {
    const noisy_op *o = ud;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nb; j++) {
            double acc = 0.0;
            for (int t = 0; t < n; t++) acc += (o->A[(size_t)i * n + t] + o->E[(size_t)i * n + t]) * X[(size_t)t * nb + j];
            Y[(size_t)i * nb + j] = acc;
        }
    return 0;
}
static void test_eigs_norm_tol_floor(void **state) {
    (void)state;
    rng_seed(31);
    const int n = 80, r = 3;
    double *lam = malloc(n * sizeof(double)), *Q = malloc((size_t)n * n * sizeof(double));
    double *A = malloc((size_t)n * n * sizeof(double)), *E = malloc((size_t)n * n * sizeof(double));
    double *V = malloc((size_t)n * r * sizeof(double)), ev[3];
    lam[0] = 10.0;
    for (int i = 1; i < n; i++) lam[i] = 1e-3 * (2.0 * rng_unif() - 1.0);
    planted(n, lam, Q, A);
    double e2 = 0.0;
    for (int i = 0; i < n * n; i++) E[i] = rng_gauss(), e2 += E[i] * E[i];
    for (int i = 0; i < n * n; i++) E[i] *= 1e-8 / sqrt(e2); /* ||E||_2 <= ||E||_F = 1e-9 ||A|| */
    noisy_op op = {n, A, E};
    sks_eigs_opts o = {.r = r, .block = 1, .tol = 1e-10, .seed = 4};
    sks_eigs_extra x = {.krylov_dim = 30, .max_restarts = 20};
    sks_eigs_info info = {0};
    assert_int_equal(sks_eigs_topk_ex(noisy_apply, &op, n, &o, &x, ev, V, &info), SKS_ENOCONV);
    assert_true(info.n_conv < r);
    x = (sks_eigs_extra){.krylov_dim = 30, .max_restarts = 20, .norm_tol = 1e-8};
    assert_int_equal(sks_eigs_topk_ex(noisy_apply, &op, n, &o, &x, ev, V, &info), 0);
    assert_int_equal(info.n_conv, r);
    /* planted values by magnitude */
    int idx[80];
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && fabs(lam[idx[j - 1]]) < fabs(lam[idx[j]]); j--) {
            int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t;
        }
    for (int c = 0; c < r; c++) assert_true(fabs(ev[c] - lam[idx[c]]) <= 1e-8 + 1e-8 * 10.0);
    free(lam); free(Q); free(A); free(E); free(V);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svd_planted),
        cmocka_unit_test(test_effective_rank),
        cmocka_unit_test(test_principal_cosines_planes),
        cmocka_unit_test(test_eig_dense_planted),
        cmocka_unit_test(test_eigs_clustered_negative),
        cmocka_unit_test(test_eigs_multi_equals_single),
        cmocka_unit_test(test_eigs_multi_restarts_vs_lapack),
        cmocka_unit_test(test_eigs_norm_tol_floor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
