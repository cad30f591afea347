/* spikes_eigs.c - top-r eigenpairs by |lambda| of many symmetric operators at once.
 *
 * Krylov-Schur (thick-restart Lanczos) with full reorthogonalization, one problem per
 * analysed channel, all problems advanced in lockstep: each step gathers the pending
 * vector of every active problem into one (n, m) block, so the operator is applied as
 * one batched product (for S_k: four GEMMs of f x d x m) instead of m memory-bound
 * matrix-vector products.
 *
 * Per problem: orthonormal basis V = [v_0 .. v_{k-1}] (f64), H = V^T A V computed
 * column by column by projection (so the arrowhead left by a restart needs no special
 * case), and the Krylov relation A V = V H + r e_k^T. When the basis holds kmax vectors:
 * Rayleigh-Ritz (LAPACKE dsyev on H), residual estimates ||A y - theta y|| =
 * ||r|| |z_k|, and either stop (the r wanted pairs are within tol) or keep the kmax/2
 * Ritz vectors of largest |theta| and continue from r / ||r||. Reorthogonalization is
 * classical Gram-Schmidt applied twice (DGKS), which keeps V orthonormal to rounding.
 */
#include "sks_spikes.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double *V;    /* (kmax, n): vector j at V + j n */
    double *H;    /* (kmax, kmax) row-major, symmetric */
    int k;        /* vectors in V; the last pb are waiting for A */
    int pb;       /* pending block size (<= block) */
    int done;
    int restarts;
    uint64_t rng;
} sks__kprob;

static uint64_t sks__splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void sks__randvec(uint64_t *s, double *v, int n) {
    for (int i = 0; i < n; i++) v[i] = (double)(sks__splitmix(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

/* w -= V^T (V w) twice (V is (k, n)); h (k) receives the total projection. */
static void sks__orth(const double *V, int k, int n, double *w, double *h, double *tmp) {
    if (k == 0) return;
    cblas_dgemv(CblasRowMajor, CblasNoTrans, k, n, 1.0, V, n, w, 1, 0.0, h, 1);
    cblas_dgemv(CblasRowMajor, CblasTrans, k, n, -1.0, V, n, h, 1, 1.0, w, 1);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, k, n, 1.0, V, n, w, 1, 0.0, tmp, 1);
    cblas_dgemv(CblasRowMajor, CblasTrans, k, n, -1.0, V, n, tmp, 1, 1.0, w, 1);
    for (int j = 0; j < k; j++) h[j] += tmp[j];
}

/* A unit vector orthogonal to V[0..k-1]; 0 or SKS_ENOCONV when k >= n. */
static int sks__fresh_vector(sks__kprob *p, int n, double *out, double *h, double *tmp) {
    for (int attempt = 0; attempt < 8; attempt++) {
        sks__randvec(&p->rng, out, n);
        sks__orth(p->V, p->k, n, out, h, tmp);
        double nn = cblas_dnrm2(n, out, 1);
        if (nn > 1e-8) {
            cblas_dscal(n, 1.0 / nn, out, 1);
            return 0;
        }
    }
    return SKS_ENOCONV;
}

typedef struct {
    double key;
    int idx;
} sks__ord;

static int sks__cmp_ord_desc(const void *a, const void *b) {
    double x = ((const sks__ord *)a)->key, y = ((const sks__ord *)b)->key;
    return (x < y) - (x > y);
}

int sks_multieig_topk(sks_multiop_fn op, void *ud, int n, int n_prob, const sks_multieig_opts *o,
                      double *evals, double *evecs, double *resid, int *conv, int *matvecs_out,
                      int *restarts_out) {
    if (!op || n <= 0 || n_prob <= 0 || !o || o->r <= 0 || o->r > n || o->block < 0)
        return sks_fail(SKS_EARG, "%s: bad arguments (n %d, problems %d, r %d)", __func__, n, n_prob,
                        o ? o->r : -1);
    const int r = o->r;
    int b = o->block > 0 ? o->block : 1;
    if (b > n) b = n;
    int kmax = o->kmax > 0 ? o->kmax : (3 * r > 32 ? 3 * r : 32) + 2 * (b - 1);
    if (kmax < r + 2 * b) kmax = r + 2 * b;
    if (kmax > n) {
        kmax = n;
        b = 1; /* small n: the basis becomes the whole space one vector at a time */
    }
    /* Blocks must fill the basis exactly: a residual column left out would break the
     * relation A V = V H + R E^T (the estimates and the restart rely on it). So kmax and
     * the kept count are multiples of b (kmax = n is exact whatever it is). */
    if (b > 1) kmax -= kmax % b;
    /* Ritz vectors kept at a restart: about half the basis, room left for one block */
    int keep = (kmax - b) / 2 > r + 1 ? (kmax - b) / 2 : r + 1;
    if (b > 1) keep = (keep + b - 1) / b * b;
    if (keep > kmax - b) keep = kmax - b;
    if (keep < r) keep = r; /* only when kmax = n: the basis is then the whole space */
    const double tol = o->tol > 0 ? o->tol : 1e-10;
    const int max_restarts = o->max_restarts > 0 ? o->max_restarts : 200;
    const size_t cols = (size_t)n_prob * b;

    int rc = 0, matvecs = 0, total_restarts = 0;
    sks__kprob *P = calloc((size_t)n_prob, sizeof *P);
    int *colp = sks_malloc_n(cols, sizeof *colp);
    double *X = sks_malloc_n((size_t)n * cols, sizeof *X);
    double *Y = sks_malloc_n((size_t)n * cols, sizeof *Y);
    double *R = sks_malloc_n((size_t)b * n, sizeof *R); /* (b, n) residual block */
    double *GR = sks_malloc_n((size_t)b * b, sizeof *GR);
    double *h = sks_malloc_n((size_t)kmax, sizeof *h);
    double *tmp = sks_malloc_n((size_t)kmax, sizeof *tmp);
    double *Hc = sks_malloc_n((size_t)kmax * kmax, sizeof *Hc);
    double *theta = sks_malloc_n((size_t)kmax, sizeof *theta);
    double *Vn = sks_malloc_n((size_t)kmax * n, sizeof *Vn);
    double *Zs = sks_malloc_n((size_t)kmax * kmax, sizeof *Zs);
    sks__ord *ord = sks_malloc_n((size_t)kmax, sizeof *ord);
    int *cv = sks_calloc_n((size_t)n_prob, sizeof *cv);
    if (!P || !colp || !X || !Y || !R || !GR || !h || !tmp || !Hc || !theta || !Vn || !Zs || !ord || !cv) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory (n %d, kmax %d, problems %d)", __func__, n, kmax, n_prob);
        goto done;
    }
    for (int p = 0; p < n_prob; p++) {
        P[p].V = sks_malloc_n((size_t)kmax * n, sizeof(double));
        P[p].H = sks_calloc_n((size_t)kmax * kmax, sizeof(double));
        if (!P[p].V || !P[p].H) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory for %d Krylov bases of %d x %d", __func__, n_prob, kmax, n);
            goto done;
        }
        P[p].rng = (o->seed ? o->seed : 1) * 0x2545f4914f6cdd1dULL + (uint64_t)p * 0x9e3779b97f4a7c15ULL;
        /* start block: b orthonormal random vectors, all pending */
        for (int j = 0; j < b; j++) {
            P[p].k = j;
            if ((rc = sks__fresh_vector(&P[p], n, P[p].V + (size_t)j * n, h, tmp))) goto done;
        }
        P[p].k = b;
        P[p].pb = b;
    }

    for (;;) {
        /* gather the pending vectors of the active problems: X (n, m) row-major */
        int m = 0;
        for (int p = 0; p < n_prob; p++)
            if (!P[p].done)
                for (int j = 0; j < P[p].pb; j++) colp[m++] = p;
        if (m == 0) break;
        for (int c = 0, p = -1, j = 0; c < m; c++) {
            if (colp[c] != p) p = colp[c], j = 0;
            const double *v = P[p].V + (size_t)(P[p].k - P[p].pb + j++) * n;
            for (int i = 0; i < n; i++) X[(size_t)i * m + c] = v[i];
        }
        rc = op(ud, n, m, colp, X, Y);
        if (rc) goto done;
        matvecs += m;
        for (int c0 = 0; c0 < m;) {
            const int pid = colp[c0];
            sks__kprob *q = &P[pid];
            const int k = q->k, pb = q->pb;
            /* project each new column on the basis (H column), then orthogonalize */
            for (int j = 0; j < pb; j++) {
                double *w = R + (size_t)j * n;
                for (int i = 0; i < n; i++) w[i] = Y[(size_t)i * m + c0 + j];
                sks__orth(q->V, k, n, w, h, tmp);
                const int col = k - pb + j;
                for (int i = 0; i < k; i++) q->H[(size_t)i * kmax + col] = q->H[(size_t)col * kmax + i] = h[i];
            }
            c0 += pb;
            /* ||R z||^2 = z^T (R^T R) z for the residual estimates */
            for (int i = 0; i < pb; i++)
                for (int j = 0; j <= i; j++)
                    GR[(size_t)i * b + j] = GR[(size_t)j * b + i] =
                        cblas_ddot(n, R + (size_t)i * n, 1, R + (size_t)j * n, 1);
            double hmax = 0;
            for (int i = 0; i < k; i++) hmax = fmax(hmax, fabs(q->H[(size_t)i * kmax + i]));
            const double tiny = 1e-13 * (hmax > 0 ? hmax : 1.0);
            if (k < kmax) {
                /* room left: append the residual block, orthonormalized (fresh random
                 * directions replace dependent columns: an invariant subspace) */
                int nb_new = kmax - k < b ? kmax - k : b;
                for (int j = 0; j < nb_new; j++) {
                    double *dst = q->V + (size_t)(q->k) * n;
                    memcpy(dst, R + (size_t)j * n, (size_t)n * sizeof(double));
                    sks__orth(q->V, q->k, n, dst, h, tmp);
                    double nn = cblas_dnrm2(n, dst, 1);
                    if (nn <= tiny) {
                        if ((rc = sks__fresh_vector(q, n, dst, h, tmp))) goto done;
                    } else {
                        cblas_dscal(n, 1.0 / nn, dst, 1);
                    }
                    q->k++;
                }
                q->pb = nb_new;
                continue;
            }
            /* basis full: Rayleigh-Ritz on H (k x k) */
            memcpy(Hc, q->H, (size_t)kmax * kmax * sizeof *Hc);
            lapack_int info = LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', k, Hc, kmax, theta);
            if (info != 0) {
                rc = sks_fail(SKS_ELAPACK, "%s: dsyev on the %d x %d projection: info %d", __func__, k, k, (int)info);
                goto done;
            }
            double hnorm = 0;
            for (int j = 0; j < k; j++) {
                ord[j].key = fabs(theta[j]);
                ord[j].idx = j;
                hnorm = fmax(hnorm, fabs(theta[j]));
            }
            qsort(ord, (size_t)k, sizeof *ord, sks__cmp_ord_desc);
            int ok = 1;
            for (int i = 0; i < r; i++) {
                /* A V z - theta V z = R z_last, z_last = rows k-pb .. k-1 of z */
                double zl[64], est2 = 0;
                const int pbb = pb < 64 ? pb : 64;
                for (int j = 0; j < pbb; j++) zl[j] = Hc[(size_t)(k - pb + j) * kmax + ord[i].idx];
                for (int a = 0; a < pbb; a++)
                    for (int c = 0; c < pbb; c++) est2 += zl[a] * GR[(size_t)a * b + c] * zl[c];
                double scale = fmax(fabs(theta[ord[i].idx]), 1e-14 * (hnorm > 0 ? hnorm : 1.0));
                if (sqrt(fmax(est2, 0.0)) > tol * scale) ok = 0;
            }
            const int finish = ok || q->restarts >= max_restarts || k >= n;
            int nkeep = finish ? r : keep;
            /* Zs (k, nkeep): the kept Ritz vectors in the basis; Vn = Zs^T V */
            for (int j = 0; j < k; j++)
                for (int i = 0; i < nkeep; i++) Zs[(size_t)j * nkeep + i] = Hc[(size_t)j * kmax + ord[i].idx];
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nkeep, n, k, 1.0, Zs, nkeep, q->V, n, 0.0, Vn, n);
            if (finish) {
                for (int i = 0; i < r; i++) {
                    evals[(size_t)pid * r + i] = theta[ord[i].idx];
                    memcpy(evecs + ((size_t)pid * r + i) * n, Vn + (size_t)i * n, (size_t)n * sizeof(double));
                }
                cv[pid] = ok || k >= n;
                q->done = 1;
                continue;
            }
            /* thick restart: V = [Ritz vectors, orthonormalized R], H = diag(theta) */
            memcpy(q->V, Vn, (size_t)nkeep * n * sizeof(double));
            memset(q->H, 0, (size_t)kmax * kmax * sizeof(double));
            for (int i = 0; i < nkeep; i++) q->H[(size_t)i * kmax + i] = theta[ord[i].idx];
            q->k = nkeep;
            int nb_new = kmax - nkeep < b ? kmax - nkeep : b;
            for (int j = 0; j < nb_new; j++) {
                double *dst = q->V + (size_t)q->k * n;
                memcpy(dst, R + (size_t)j * n, (size_t)n * sizeof(double));
                sks__orth(q->V, q->k, n, dst, h, tmp);
                double nn = cblas_dnrm2(n, dst, 1);
                if (nn <= tiny) {
                    if ((rc = sks__fresh_vector(q, n, dst, h, tmp))) goto done;
                } else {
                    cblas_dscal(n, 1.0 / nn, dst, 1);
                }
                q->k++;
            }
            q->pb = nb_new;
            q->restarts++;
            total_restarts++;
        }
    }

    /* explicit residuals ||A v - lambda v|| / |lambda|, batched over problems */
    if (resid) {
        const int per = n_prob * r;
        const int chunk = (int)(cols < (size_t)per ? cols : (size_t)per);
        for (int c0 = 0; c0 < per; c0 += chunk) {
            int m = per - c0 < chunk ? per - c0 : chunk;
            for (int c = 0; c < m; c++) {
                int col = c0 + c;
                colp[c] = col / r;
                const double *v = evecs + (size_t)col * n;
                for (int i = 0; i < n; i++) X[(size_t)i * m + c] = v[i];
            }
            rc = op(ud, n, m, colp, X, Y);
            if (rc) goto done;
            matvecs += m;
            for (int c = 0; c < m; c++) {
                int col = c0 + c;
                double lam = evals[col], s2 = 0;
                const double *v = evecs + (size_t)col * n;
                for (int i = 0; i < n; i++) {
                    double e = Y[(size_t)i * m + c] - lam * v[i];
                    s2 += e * e;
                }
                resid[col] = sqrt(s2) / (fabs(lam) > 0 ? fabs(lam) : 1.0);
            }
        }
    }
    for (int p = 0; p < n_prob; p++)
        if (conv) conv[p] = cv[p];
    for (int p = 0; p < n_prob && !rc; p++)
        if (!cv[p]) rc = sks_fail(SKS_ENOCONV, "%s: problem %d did not converge in %d restarts", __func__, p,
                                  max_restarts);

done:
    if (matvecs_out) *matvecs_out = matvecs;
    if (restarts_out) *restarts_out = total_restarts;
    if (P)
        for (int p = 0; p < n_prob; p++) {
            free(P[p].V);
            free(P[p].H);
        }
    free(P);
    free(colp);
    free(X);
    free(Y);
    free(R);
    free(GR);
    free(h);
    free(tmp);
    free(Hc);
    free(theta);
    free(Vn);
    free(Zs);
    free(ord);
    free(cv);
    return rc;
}
