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
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(void) { return ((rng_u64() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svd_planted),
        cmocka_unit_test(test_effective_rank),
        cmocka_unit_test(test_principal_cosines_planes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
