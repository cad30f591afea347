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
    int k;        /* vectors in V; v_{k-1} is the one waiting for A */
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
    if (!op || n <= 0 || n_prob <= 0 || !o || o->r <= 0 || o->r > n)
        return sks_fail(SKS_EARG, "%s: bad arguments (n %d, problems %d, r %d)", __func__, n, n_prob,
                        o ? o->r : -1);
    const int r = o->r;
    int kmax = o->kmax > 0 ? o->kmax : (3 * r > 32 ? 3 * r : 32);
    if (kmax < r + 2) kmax = r + 2;
    if (kmax > n) kmax = n;
    const int keep = (kmax / 2 > r + 1 ? kmax / 2 : r + 1) < kmax ? (kmax / 2 > r + 1 ? kmax / 2 : r + 1) : kmax - 1;
    const double tol = o->tol > 0 ? o->tol : 1e-10;
    const int max_restarts = o->max_restarts > 0 ? o->max_restarts : 200;

    int rc = 0, matvecs = 0, total_restarts = 0;
    sks__kprob *P = calloc((size_t)n_prob, sizeof *P);
    int *act = sks_malloc_n((size_t)n_prob, sizeof *act);
    double *X = sks_malloc_n((size_t)n * n_prob, sizeof *X);
    double *Y = sks_malloc_n((size_t)n * n_prob, sizeof *Y);
    double *w = sks_malloc_n((size_t)n, sizeof *w);
    double *h = sks_malloc_n((size_t)kmax, sizeof *h);
    double *tmp = sks_malloc_n((size_t)kmax, sizeof *tmp);
    double *Hc = sks_malloc_n((size_t)kmax * kmax, sizeof *Hc);
    double *theta = sks_malloc_n((size_t)kmax, sizeof *theta);
    double *Vn = sks_malloc_n((size_t)kmax * n, sizeof *Vn);
    double *Zs = sks_malloc_n((size_t)kmax * kmax, sizeof *Zs);
    sks__ord *ord = sks_malloc_n((size_t)kmax, sizeof *ord);
    int *cv = sks_calloc_n((size_t)n_prob, sizeof *cv);
    if (!cv || !act || !X || !Y || !w || !h || !tmp || !Hc || !theta || !Vn || !Zs || !ord) {
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
        sks__randvec(&P[p].rng, P[p].V, n);
        cblas_dscal(n, 1.0 / cblas_dnrm2(n, P[p].V, 1), P[p].V, 1);
        P[p].k = 1;
    }

    for (;;) {
        int m = 0;
        for (int p = 0; p < n_prob; p++)
            if (!P[p].done) act[m++] = p;
        if (m == 0) break;
        /* gather the pending vectors: X (n, m) row-major */
        for (int c = 0; c < m; c++) {
            const double *v = P[act[c]].V + (size_t)(P[act[c]].k - 1) * n;
            for (int i = 0; i < n; i++) X[(size_t)i * m + c] = v[i];
        }
        rc = op(ud, n, m, act, X, Y);
        if (rc) goto done;
        matvecs += m;
        for (int c = 0; c < m; c++) {
            sks__kprob *q = &P[act[c]];
            const int k = q->k;
            for (int i = 0; i < n; i++) w[i] = Y[(size_t)i * m + c];
            sks__orth(q->V, k, n, w, h, tmp);
            for (int j = 0; j < k; j++) q->H[(size_t)j * kmax + (k - 1)] = q->H[(size_t)(k - 1) * kmax + j] = h[j];
            double beta = cblas_dnrm2(n, w, 1);
            double hmax = 0;
            for (int j = 0; j < k; j++) hmax = fmax(hmax, fabs(h[j]));
            if (k < kmax) {
                if (beta <= 1e-13 * (hmax > 0 ? hmax : 1.0)) {
                    /* invariant subspace: continue with a fresh direction */
                    rc = sks__fresh_vector(q, n, q->V + (size_t)k * n, h, tmp);
                    if (rc) goto done;
                } else {
                    for (int i = 0; i < n; i++) q->V[(size_t)k * n + i] = w[i] / beta;
                }
                q->k = k + 1;
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
                double est = beta * fabs(Hc[(size_t)(k - 1) * kmax + ord[i].idx]);
                double scale = fmax(fabs(theta[ord[i].idx]), 1e-14 * (hnorm > 0 ? hnorm : 1.0));
                if (est > tol * scale) ok = 0;
            }
            int nkeep = (ok || q->restarts >= max_restarts) ? r : keep;
            /* Zs (k, nkeep): the kept Ritz vectors in the basis; Vn = Zs^T V */
            for (int j = 0; j < k; j++)
                for (int i = 0; i < nkeep; i++) Zs[(size_t)j * nkeep + i] = Hc[(size_t)j * kmax + ord[i].idx];
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nkeep, n, k, 1.0, Zs, nkeep, q->V, n, 0.0, Vn, n);
            const int pid = act[c];
            if (ok || q->restarts >= max_restarts) {
                for (int i = 0; i < r; i++) {
                    evals[(size_t)pid * r + i] = theta[ord[i].idx];
                    memcpy(evecs + ((size_t)pid * r + i) * n, Vn + (size_t)i * n, (size_t)n * sizeof(double));
                }
                cv[pid] = ok;
                q->done = 1;
                continue;
            }
            /* thick restart: V = [Ritz vectors, r / ||r||], H = diag(theta) */
            memcpy(q->V, Vn, (size_t)nkeep * n * sizeof(double));
            memset(q->H, 0, (size_t)kmax * kmax * sizeof(double));
            for (int i = 0; i < nkeep; i++) q->H[(size_t)i * kmax + i] = theta[ord[i].idx];
            q->k = nkeep;
            if (beta <= 1e-13 * (hnorm > 0 ? hnorm : 1.0)) {
                rc = sks__fresh_vector(q, n, q->V + (size_t)nkeep * n, h, tmp);
                if (rc) goto done;
            } else {
                for (int i = 0; i < n; i++) q->V[(size_t)nkeep * n + i] = w[i] / beta;
            }
            q->k = nkeep + 1;
            q->restarts++;
            total_restarts++;
        }
    }

    /* explicit residuals ||A v - lambda v|| / |lambda|, batched over problems */
    if (resid) {
        const int per = n_prob * r;
        int chunk = n_prob; /* columns per batch: n_prob fits X, Y */
        int *pid = sks_malloc_n((size_t)chunk, sizeof *pid);
        if (!pid) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", __func__);
            goto done;
        }
        for (int c0 = 0; c0 < per; c0 += chunk) {
            int m = per - c0 < chunk ? per - c0 : chunk;
            for (int c = 0; c < m; c++) {
                int col = c0 + c;
                pid[c] = col / r;
                const double *v = evecs + (size_t)col * n;
                for (int i = 0; i < n; i++) X[(size_t)i * m + c] = v[i];
            }
            int rc2 = op(ud, n, m, pid, X, Y);
            if (rc2) {
                free(pid);
                rc = rc2;
                goto done;
            }
            matvecs += m;
            for (int c = 0; c < m; c++) {
                int col = c0 + c;
                double lam = evals[col], s = 0;
                const double *v = evecs + (size_t)col * n;
                for (int i = 0; i < n; i++) {
                    double e = Y[(size_t)i * m + c] - lam * v[i];
                    s += e * e;
                }
                resid[col] = sqrt(s) / (fabs(lam) > 0 ? fabs(lam) : 1.0);
            }
        }
        free(pid);
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
    free(act);
    free(X);
    free(Y);
    free(w);
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
