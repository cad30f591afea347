/* subspace.c - thin SVD, effective rank, participation ratio, principal cosines.
 *
 * All f64, row-major, LAPACKE. Used by the sink analysis (SPEC section 4): stacks of
 * keys/queries (tokens x d_h) are small, so dense LAPACK is the right tool.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "sks_linalg.h"

int sks_lapack_input_check(const char *what, const double *a, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return sks_fail(SKS_ENONFINITE, "%s: NaN or Inf in the input (entry %zu of %zu)", what, i, n);
    return 0;
}

/* Thin SVD X = U diag(s) Vt with LAPACKE_dgesdd (divide and conquer), jobz 'S' when any
 * vectors are wanted, 'N' otherwise. X is copied: dgesdd destroys its input. */
int sks_svd(int m, int n, const double *X, double *s, double *U, double *Vt) {
    if (m < 0 || n < 0 || (m * (int64_t)n > 0 && (!X || !s)))
        return sks_fail(SKS_EARG, "sks_svd: bad arguments (m %d, n %d)", m, n);
    if (m == 0 || n == 0) return 0;
    int k = m < n ? m : n;
    size_t mn;
    if (sks_mul_size((size_t)m, (size_t)n, &mn)) return sks_fail(SKS_EOVERFLOW, "sks_svd: %d x %d", m, n);
    int want = U || Vt;
    double *A = sks_malloc_n(mn, sizeof *A);
    double *Ut = NULL, *Vtt = NULL;
    int rc = 0;
    if (!A) { rc = sks_fail(SKS_ENOMEM, "sks_svd: %d x %d copy", m, n); goto out; }
    memcpy(A, X, mn * sizeof *A);
    if ((rc = sks_lapack_input_check("sks_svd", A, mn))) goto out;
    if (want) {
        Ut = U ? U : sks_malloc_n((size_t)m * (size_t)k, sizeof *Ut);
        Vtt = Vt ? Vt : sks_malloc_n((size_t)k * (size_t)n, sizeof *Vtt);
        if (!Ut || !Vtt) { rc = sks_fail(SKS_ENOMEM, "sks_svd: singular vectors"); goto out; }
    }
    /* With jobz 'N', U and Vt are not referenced but LAPACKE still checks ldu and ldvt. */
    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, want ? 'S' : 'N', m, n, A, n, s,
                                     want ? Ut : NULL, k, want ? Vtt : NULL, n);
    if (info < 0) rc = sks_fail(SKS_EINTERNAL, "sks_svd: internal error (dgesdd rejected argument %d)", (int)-info);
    else if (info > 0) rc = sks_fail(SKS_ELAPACK, "sks_svd: dgesdd did not converge (info %d)", (int)info);
out:
    if (Ut && Ut != U) free(Ut);
    if (Vtt && Vtt != Vt) free(Vtt);
    free(A);
    return rc;
}

int sks_effective_rank(const double *s, int n, double frac) {
    if (!s || n <= 0) return 0;
    double tot = 0.0;
    for (int i = 0; i < n; i++) tot += s[i] * s[i];
    if (!(tot > 0.0)) return 0;
    /* Compare partial sums against frac * tot with a relative slack of n*eps so that an
     * exactly equal split (e.g. 0.99 with 100 equal values) is not lost to rounding. */
    double target = frac * tot * (1.0 - 4.0 * n * DBL_EPSILON), acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s[i] * s[i];
        if (acc >= target) return i + 1;
    }
    return n;
}

double sks_participation_ratio(const double *s, int n) {
    if (!s || n <= 0) return 0.0;
    double s2 = 0.0, s4 = 0.0;
    for (int i = 0; i < n; i++) {
        double q = s[i] * s[i];
        s2 += q;
        s4 += q * q;
    }
    return s4 > 0.0 ? s2 * s2 / s4 : 0.0;
}

/* Orthonormal basis of the row space of A (k, n): the leading right singular vectors
 * whose singular values exceed max(k, n) * eps * s_max (numerical rank, as in
 * numpy.linalg.matrix_rank). Q gets rank rows of length n; returns rank or < 0. */
static int sks__row_basis(int n, int k, const double *A, double *Q, double *s) {
    int kk = k < n ? k : n;
    int rc = sks_svd(k, n, A, s, NULL, Q);
    if (rc) return rc;
    if (kk == 0 || !(s[0] > 0.0)) return 0;
    double cut = (double)(k > n ? k : n) * DBL_EPSILON * s[0];
    int r = 0;
    while (r < kk && s[r] > cut) r++;
    return r;
}

int sks_principal_cosines(int n, int ka, const double *A, int kb, const double *B, double *cos) {
    if (n <= 0 || ka < 0 || kb < 0 || (ka && !A) || (kb && !B) || !cos)
        return sks_fail(SKS_EARG, "sks_principal_cosines: bad arguments (n %d, ka %d, kb %d)", n, ka, kb);
    int kmin = ka < kb ? ka : kb;
    for (int i = 0; i < kmin; i++) cos[i] = 0.0;
    if (kmin == 0) return 0;
    int ma = ka < n ? ka : n, mb = kb < n ? kb : n;
    double *Qa = sks_malloc_n((size_t)ma * (size_t)n, sizeof *Qa);
    double *Qb = sks_malloc_n((size_t)mb * (size_t)n, sizeof *Qb);
    double *sa = sks_malloc_n((size_t)(ma > mb ? ma : mb), sizeof *sa);
    double *M = sks_malloc_n((size_t)ma * (size_t)mb, sizeof *M);
    int rc = 0;
    if (!Qa || !Qb || !sa || !M) { rc = sks_fail(SKS_ENOMEM, "sks_principal_cosines"); goto out; }
    int ra = sks__row_basis(n, ka, A, Qa, sa);
    if (ra < 0) { rc = ra; goto out; }
    int rb = sks__row_basis(n, kb, B, Qb, sa);
    if (rb < 0) { rc = rb; goto out; }
    if (ra == 0 || rb == 0) goto out;
    /* cosines = singular values of Qa Qb^T (ra, rb) */
    for (int i = 0; i < ra; i++)
        for (int j = 0; j < rb; j++) {
            double acc = 0.0;
            const double *x = Qa + (size_t)i * n, *y = Qb + (size_t)j * n;
            for (int t = 0; t < n; t++) acc += x[t] * y[t];
            M[(size_t)i * rb + j] = acc;
        }
    int rmin = ra < rb ? ra : rb;
    rc = sks_svd(ra, rb, M, sa, NULL, NULL);
    if (rc) goto out;
    for (int i = 0; i < rmin && i < kmin; i++) cos[i] = sa[i] > 1.0 ? 1.0 : sa[i];
out:
    free(Qa);
    free(Qb);
    free(sa);
    free(M);
    return rc;
}
