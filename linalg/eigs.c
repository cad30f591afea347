/* eigs.c - top eigenpairs by magnitude of symmetric operators: thick-restart block
 * Lanczos in Rayleigh-Ritz form, for one or many independent problems at once.
 *
 * Per problem: an orthonormal basis V (k vectors, stored as rows of Vt (k, n)), W = A V
 * (rows of Wt) and H = V^T A V (k, k). One step:
 *   1. Rayleigh-Ritz: H = Z diag(theta) Z^T (LAPACKE_dsyevr), pairs sorted by |theta|;
 *      Ritz vectors y_c = V z_c, A y_c = W z_c (no extra operator application).
 *   2. Converged when ||A y_c - theta_c y_c|| <= tol |theta_c| for the first r pairs
 *      (or <= norm_tol |theta_1|: an optional floor for an inexact operator).
 *   3. Expansion block: the residuals A y_c - theta_c y_c of the first nb unconverged
 *      pairs (c in order of |theta|). For a Krylov basis these residuals span the next
 *      block of the block Krylov space, so this is block Lanczos; the residual choice
 *      spends the block on the pairs that still need it. New vectors are orthogonalized
 *      against V twice (classical Gram-Schmidt, "twice is enough") and among
 *      themselves; a vector that loses more than 1 - 1e-8 of its norm is replaced by a
 *      random one (invariant subspace found, or rounding).
 *   4. Thick restart when the basis would exceed kmax: keep the best `keep` Ritz
 *      vectors (V <- V Z_keep, W <- W Z_keep, H <- diag(theta_keep)); W stays A V by
 *      linearity, so a restart costs no operator application.
 * All problems still active are expanded together: one callback gets every block, so a
 * batched operator (quadform.c: GEMMs over many channels) does one big product.
 * Basis, projections and LAPACK are f64; the operator's own precision bounds the
 * attainable tol (docs/linalg.md). With sks_eigs_extra.threads > 1 the per-problem work
 * of a round (Rayleigh-Ritz, residuals, expansion) is dealt to threads, problem a to
 * thread a % threads, each with its own workspace and OpenBLAS on one thread: for an
 * operator that does not use OpenBLAS itself (a device backend), where this work would
 * otherwise dominate.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "sks_linalg.h"

typedef struct {
    int k;              /* basis vectors with A applied (rows of Vt, Wt) */
    int nbp;            /* pending vectors at rows [k, k + nbp) of Vt, not yet applied */
    int active;
    int converged;
    double *Vt, *Wt;    /* (kmax, n) */
    double *H;          /* (kmax, kmax) V^T A V */
    double *Z;          /* (kmax, kmax) Ritz coefficients, column c = pair c (sorted) */
    double *theta;      /* (kmax) Ritz values by descending |.| */
    double *rel;        /* (kmax) relative residuals, pairs 0 .. nres-1 */
    int nres;
    uint64_t rng;
    int iterations, matvecs, restarts;
} sks__prob;

typedef struct {
    int n, r, nb, kmax, keep, max_iter, max_restarts;
    double tol, norm_tol;
    double *tmp;        /* (kmax, n) restart product */
    double *Hc;         /* (kmax, kmax) dsyevr input / H block products */
    double *w;          /* (kmax) */
    lapack_int *isuppz; /* (2 kmax) */
    int *order;         /* (kmax) */
    double *y, *ay, *c; /* (n), (n), (kmax) */
    double *Yb, *R;     /* (r + nb, n): leading Ritz vectors and their residuals */
} sks__ctx;

static uint64_t sks__rng_u64(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double sks__rng_gauss(uint64_t *s) {
    double u1 = ((sks__rng_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = ((sks__rng_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Orthogonalize x (n) against rows 0..k-1 of Vt twice, then normalize. Returns 1 when
 * x kept at least 1e-8 of its norm (then x is unit), 0 otherwise. */
static int sks__orth(const sks__ctx *cx, const double *Vt, int k, double *x) {
    const int n = cx->n;
    double nrm0 = cblas_dnrm2(n, x, 1);
    if (!(nrm0 > 0.0) || !isfinite(nrm0)) return 0;
    cblas_dscal(n, 1.0 / nrm0, x, 1);
    for (int pass = 0; pass < 2 && k > 0; pass++) {
        cblas_dgemv(CblasRowMajor, CblasNoTrans, k, n, 1.0, Vt, n, x, 1, 0.0, cx->c, 1);
        cblas_dgemv(CblasRowMajor, CblasTrans, k, n, -1.0, Vt, n, cx->c, 1, 1.0, x, 1);
    }
    double nrm = cblas_dnrm2(n, x, 1);
    if (!(nrm > 1e-8)) return 0;
    cblas_dscal(n, 1.0 / nrm, x, 1);
    /* one more pass when much was removed: the first two leave O(eps / nrm) behind */
    if (nrm < 1e-3 && k > 0) {
        cblas_dgemv(CblasRowMajor, CblasNoTrans, k, n, 1.0, Vt, n, x, 1, 0.0, cx->c, 1);
        cblas_dgemv(CblasRowMajor, CblasTrans, k, n, -1.0, Vt, n, cx->c, 1, 1.0, x, 1);
        cblas_dscal(n, 1.0 / cblas_dnrm2(n, x, 1), x, 1);
    }
    return 1;
}

/* Append vector x as row `row` of Vt, orthonormalized against rows < row; falls back
 * to random vectors. Returns 1 if appended, 0 if the space is exhausted. */
static int sks__append(const sks__ctx *cx, sks__prob *p, int row, const double *x) {
    const int n = cx->n;
    if (row >= n) return 0;
    double *v = p->Vt + (size_t)row * n;
    if (x) {
        memcpy(v, x, (size_t)n * sizeof *v);
        if (sks__orth(cx, p->Vt, row, v)) return 1;
    }
    for (int tries = 0; tries < 5; tries++) {
        for (int i = 0; i < n; i++) v[i] = sks__rng_gauss(&p->rng);
        if (sks__orth(cx, p->Vt, row, v)) return 1;
    }
    return 0;
}

static int sks__cmp_abs_desc(const void *a, const void *b, const double *w) {
    double x = fabs(w[*(const int *)a]), y = fabs(w[*(const int *)b]);
    return x > y ? -1 : x < y ? 1 : (*(const int *)a - *(const int *)b);
}
/* insertion sort of indices by |w| descending (k is at most a few hundred) */
static void sks__sort_abs(int k, const double *w, int *order) {
    for (int i = 0; i < k; i++) order[i] = i;
    for (int i = 1; i < k; i++) {
        int t = order[i], j = i - 1;
        while (j >= 0 && sks__cmp_abs_desc(&order[j], &t, w) > 0) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = t;
    }
}

/* H += new columns from the rows just applied, then Rayleigh-Ritz. */
static int sks__rayleigh_ritz(sks__ctx *cx, sks__prob *p, int knew) {
    const int n = cx->n, k0 = p->k, k = k0 + knew, km = cx->kmax;
    /* Hc (k, knew) = Vt[0:k] Wt[k0:k]^T */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, knew, n, 1.0, p->Vt, n, p->Wt + (size_t)k0 * n, n,
                0.0, cx->Hc, knew);
    for (int i = 0; i < k; i++)
        for (int j = 0; j < knew; j++) {
            double h = cx->Hc[(size_t)i * knew + j];
            int jj = k0 + j;
            if (i < k0) {
                p->H[(size_t)i * km + jj] = p->H[(size_t)jj * km + i] = h;
            } else if (i <= jj) {
                /* inside the new block: symmetrize the two computed halves */
                double h2 = cx->Hc[(size_t)jj * knew + (i - k0)];
                p->H[(size_t)i * km + jj] = p->H[(size_t)jj * km + i] = 0.5 * (h + h2);
            }
        }
    p->k = k;
    for (int i = 0; i < k; i++) memcpy(cx->Hc + (size_t)i * k, p->H + (size_t)i * km, (size_t)k * sizeof(double));
    lapack_int mfound = 0;
    /* eigenvectors into the tmp buffer (k, k) first, then sorted columns into Z */
    double *Zu = cx->tmp;
    int rc = sks_lapack_input_check("eigs: Rayleigh-Ritz projection", cx->Hc, (size_t)k * (size_t)k);
    if (rc) return rc;
    lapack_int info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'A', 'U', k, cx->Hc, k, 0.0, 0.0, 0, 0, 0.0, &mfound,
                                     cx->w, Zu, k, cx->isuppz);
    if (info < 0) return sks_fail(SKS_EINTERNAL, "eigs: internal error (dsyevr rejected argument %d)", (int)-info);
    if (info > 0) return sks_fail(SKS_ELAPACK, "eigs: dsyevr failed on the %d x %d projection (info %d)", k, k, (int)info);
    sks__sort_abs(k, cx->w, cx->order);
    for (int c = 0; c < k; c++) {
        int o = cx->order[c];
        p->theta[c] = cx->w[o];
        for (int i = 0; i < k; i++) p->Z[(size_t)i * km + c] = Zu[(size_t)i * k + o];
    }
    return 0;
}

/* Ritz vector c: y = V z_c, ay = W z_c. */
static void sks__ritz(const sks__ctx *cx, const sks__prob *p, int c, double *y, double *ay) {
    const int n = cx->n, km = cx->kmax;
    for (int i = 0; i < p->k; i++) cx->c[i] = p->Z[(size_t)i * km + c];
    cblas_dgemv(CblasRowMajor, CblasTrans, p->k, n, 1.0, p->Vt, n, cx->c, 1, 0.0, y, 1);
    if (ay) cblas_dgemv(CblasRowMajor, CblasTrans, p->k, n, 1.0, p->Wt, n, cx->c, 1, 0.0, ay, 1);
}

/* V <- V Z[:, :keep], W <- W Z[:, :keep], H <- diag(theta[:keep]). */
static void sks__restart(sks__ctx *cx, sks__prob *p, int keep) {
    const int n = cx->n, k = p->k, km = cx->kmax;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keep, n, k, 1.0, p->Z, km, p->Vt, n, 0.0, cx->tmp, n);
    memcpy(p->Vt, cx->tmp, (size_t)keep * n * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, keep, n, k, 1.0, p->Z, km, p->Wt, n, 0.0, cx->tmp, n);
    memcpy(p->Wt, cx->tmp, (size_t)keep * n * sizeof(double));
    for (int i = 0; i < keep; i++)
        for (int j = 0; j < keep; j++) p->H[(size_t)i * km + j] = i == j ? p->theta[i] : 0.0;
    for (int i = 0; i < keep; i++)
        for (int j = 0; j < keep; j++) p->Z[(size_t)i * km + j] = i == j;
    p->k = keep;
    p->restarts++;
}

/* Pair c (rel[c] computed) meets tol |theta_c|, or the floor norm_tol |theta_0|. */
static int sks__pair_ok(const sks__ctx *cx, const sks__prob *p, int c) {
    return p->rel[c] <= cx->tol || p->rel[c] * fabs(p->theta[c]) <= cx->norm_tol * fabs(p->theta[0]);
}

/* After a Rayleigh-Ritz: convergence test, restart, and the next block (pending rows).
 * Sets p->active = 0 when done. */
static void sks__step(sks__ctx *cx, sks__prob *p) {
    const int n = cx->n, r = cx->r, nb = cx->nb;
    int nres = p->k < r + nb ? p->k : r + nb;
    int nconv = 0;
    /* the leading nres Ritz vectors and residuals in two GEMMs (nres, k) x (k, n):
     * Yb = Z^T V^T, R = Z^T W^T - diag(theta) Yb; a restart leaves them valid */
    const int km = cx->kmax;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nres, n, p->k, 1.0, p->Z, km, p->Vt, n, 0.0, cx->Yb, n);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nres, n, p->k, 1.0, p->Z, km, p->Wt, n, 0.0, cx->R, n);
    for (int c = 0; c < nres; c++) {
        double *rc = cx->R + (size_t)c * n;
        cblas_daxpy(n, -p->theta[c], cx->Yb + (size_t)c * n, 1, rc, 1);
        double rn = cblas_dnrm2(n, rc, 1);
        p->rel[c] = p->theta[c] != 0.0 ? rn / fabs(p->theta[c]) : (rn == 0.0 ? 0.0 : INFINITY);
        if (c < r && sks__pair_ok(cx, p, c)) nconv++;
    }
    p->nres = nres;
    p->iterations++;
    if ((p->k >= r && nconv == r) || p->iterations > cx->max_iter || p->k >= n) {
        p->converged = p->k >= r && nconv == r;
        p->active = 0;
        p->nbp = 0;
        return;
    }
    if (p->k + nb > cx->kmax && p->k > cx->keep) {
        if (cx->max_restarts > 0 && p->restarts >= cx->max_restarts) {
            p->converged = 0;
            p->active = 0;
            p->nbp = 0;
            return;
        }
        sks__restart(cx, p, cx->keep);
    }
    /* expansion: residuals of the first nb unconverged pairs in |theta| order */
    int room = cx->kmax - p->k, want = nb < room ? nb : room, added = 0;
    if (want < 1) want = 1;
    for (int c = 0; c < p->k && added < want; c++) {
        if (c < nres && c < r && sks__pair_ok(cx, p, c)) continue;
        const double *res = cx->R + (size_t)c * n;
        if (c >= nres) {
            sks__ritz(cx, p, c, cx->y, cx->ay);
            cblas_daxpy(n, -p->theta[c], cx->y, 1, cx->ay, 1);
            res = cx->ay;
        }
        if (sks__append(cx, p, p->k + added, res)) added++;
        else break;
    }
    /* fewer candidates than the block (tiny k): fill with random directions */
    while (added < want && sks__append(cx, p, p->k + added, NULL)) added++;
    p->nbp = added;
    if (added == 0) {
        p->converged = 0;
        p->active = 0;
    }
}

int sks_eigs_basis_dim(int n, int r, int nb, int krylov_dim) {
    int kmax = krylov_dim > 0 ? krylov_dim : (r + 4 * nb > 40 ? r + 4 * nb : 40);
    if (kmax < r + 2 * nb) kmax = r + 2 * nb;
    if (kmax > n) kmax = n;
    return kmax;
}

/* The allocations of sks_eigs_topk_multi below, term by term. */
uint64_t sks_eigs_topk_multi_bytes(int n, int nprob, int r, int nb, int krylov_dim) {
    if (nb > n) nb = n;
    const uint64_t k = (uint64_t)sks_eigs_basis_dim(n, r, nb, krylov_dim), N = (uint64_t)n, P = (uint64_t)nprob;
    const uint64_t kn = k * N, kk = k * k;
    uint64_t b = P * (2 * kn + 2 * kk + 2 * k) * 8;           /* per problem: V, W, H, Z, theta, rel */
    b += 2 * N * (uint64_t)nb * P * 8;                       /* X, Y: one block per problem */
    b += ((kn > kk ? kn : kk) + kk + 2 * N + 2 * k) * 8;     /* tmp, Hc, y, ay, w, c */
    b += 2 * (uint64_t)(r + nb) * N * 8;                     /* Yb, R */
    return b;
}

/* The workspace of one context (sizes from cx->n, r, nb, kmax); 0 or -1. */
static int sks__ctx_alloc(sks__ctx *cx) {
    const int n = cx->n, kmax = cx->kmax;
    size_t kn = (size_t)kmax * n, kk = (size_t)kmax * kmax;
    cx->tmp = sks_malloc_n(kn > kk ? kn : kk, sizeof(double));
    cx->Hc = sks_malloc_n(kk, sizeof(double));
    cx->w = sks_malloc_n((size_t)kmax, sizeof(double));
    cx->isuppz = sks_malloc_n((size_t)2 * kmax, sizeof(lapack_int));
    cx->order = sks_malloc_n((size_t)kmax, sizeof(int));
    cx->y = sks_malloc_n((size_t)n, sizeof(double));
    cx->ay = sks_malloc_n((size_t)n, sizeof(double));
    cx->c = sks_malloc_n((size_t)kmax, sizeof(double));
    cx->Yb = sks_malloc_n((size_t)(cx->r + cx->nb) * n, sizeof(double));
    cx->R = sks_malloc_n((size_t)(cx->r + cx->nb) * n, sizeof(double));
    return cx->Yb && cx->R && cx->tmp && cx->Hc && cx->w && cx->isuppz && cx->order && cx->y && cx->ay && cx->c ? 0 : -1;
}

static void sks__ctx_free(sks__ctx *cx) {
    free(cx->tmp);
    free(cx->Hc);
    free(cx->w);
    free(cx->isuppz);
    free(cx->order);
    free(cx->y);
    free(cx->ay);
    free(cx->c);
    free(cx->Yb);
    free(cx->R);
}

/* Problem prob[a] after the operator: its new W rows from Y, Rayleigh-Ritz, the step. */
static int sks__take_block(sks__ctx *cx, sks__prob *q, int a, const double *Y, int ld) {
    const int n = cx->n, nb = cx->nb;
    for (int j = 0; j < q->nbp; j++)
        for (int i = 0; i < n; i++) q->Wt[(size_t)(q->k + j) * n + i] = Y[(size_t)i * ld + a * nb + j];
    q->matvecs += q->nbp;
    int knew = q->nbp;
    q->nbp = 0;
    int rc = sks__rayleigh_ritz(cx, q, knew);
    if (!rc) sks__step(cx, q);
    return rc;
}

/* Problem prob[a]'s pending rows into columns [a nb, (a + 1) nb) of X (zero-padded). */
static void sks__give_block(const sks__ctx *cx, const sks__prob *q, int a, double *X, int ld) {
    const int n = cx->n, nb = cx->nb;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nb; j++) X[(size_t)i * ld + a * nb + j] = j < q->nbp ? q->Vt[(size_t)(q->k + j) * n + i] : 0.0;
}

typedef struct {
    sks__ctx *cxs; /* one context per worker */
    sks__prob *P;
    const int *prob;
    int ld, give;
    double *X;
    const double *Y;
} sks__round_job;

/* active problem a of a round, on worker w's context */
static int sks__round_item(void *ud, int a, int w) {
    sks__round_job *j = ud;
    if (j->give) {
        sks__give_block(&j->cxs[w], &j->P[j->prob[a]], a, j->X, j->ld);
        return 0;
    }
    return sks__take_block(&j->cxs[w], &j->P[j->prob[a]], a, j->Y, j->ld);
}

/* One half of a round (give: fill X; else: take Y) over the active problems, on nt
 * threads with contexts cxs[0..nt-1] (sks_parallel_for: nt <= 1 in order on this
 * thread, OpenBLAS as it is). Returns the first failure. */
static int sks__round(sks__ctx *cxs, int nt, sks__prob *P, const int *prob, int nact, int ld, int give, double *X,
                      const double *Y) {
    sks__round_job j = {cxs, P, prob, ld, give, X, Y};
    int rc = sks_parallel_for(nact, nt, sks__round_item, &j);
    if (rc && nt > 1 && nact > 1)
        rc = sks_fail(rc, "sks_eigs_topk_multi: Rayleigh-Ritz failed in a worker thread: %s", sks_last_error());
    return rc;
}

int sks_eigs_topk_multi(sks_symop_multi_fn op, void *ud, int n, int nprob, const sks_eigs_opts *o,
                        sks_eigs_extra *x, double *evals, double *evecs, sks_eigs_info *info) {
    if (!op || !o || n <= 0 || nprob <= 0 || o->r <= 0 || o->r > n || !evals || !evecs)
        return sks_fail(SKS_EARG, "sks_eigs_topk_multi: bad arguments (n %d, nprob %d, r %d)", n, nprob,
                        o ? o->r : -1);
    sks__ctx cx = {0};
    cx.n = n;
    cx.r = o->r;
    cx.nb = o->block > 0 ? o->block : o->r + 2;
    if (cx.nb > n) cx.nb = n;
    cx.tol = o->tol > 0.0 ? o->tol : 1e-6;
    cx.max_iter = o->max_iter > 0 ? o->max_iter : 1000;
    int kdim = x ? x->krylov_dim : 0;
    const double *start = x ? x->start : NULL;
    cx.max_restarts = x && x->max_restarts > 0 ? x->max_restarts : 0;
    cx.norm_tol = x && x->norm_tol > 0.0 ? x->norm_tol : 0.0;
    int kmax = sks_eigs_basis_dim(n, cx.r, cx.nb, kdim);
    cx.kmax = kmax;
    int keep = cx.r + cx.nb > kmax / 2 ? cx.r + cx.nb : kmax / 2;
    if (keep > kmax - cx.nb) keep = kmax - cx.nb;
    if (keep < cx.r) keep = cx.r;
    cx.keep = keep;
    const int nb = cx.nb, r = cx.r;

    int rc = 0;
    size_t kn = (size_t)kmax * n, kk = (size_t)kmax * kmax;
    sks__prob *P = calloc((size_t)nprob, sizeof *P);
    int *prob = sks_malloc_n((size_t)nprob, sizeof *prob);
    double *X = sks_malloc_n((size_t)n * nb, (size_t)nprob * sizeof(double));
    double *Y = sks_malloc_n((size_t)n * nb, (size_t)nprob * sizeof(double));
    /* threads for the per-problem work: contexts 1.. are copies with their own buffers */
    int nt = x && x->threads > 1 ? x->threads : 1;
    if (nt > nprob) nt = nprob;
    sks__ctx *cxs = calloc((size_t)nt, sizeof *cxs);
    int ctx_fail = sks__ctx_alloc(&cx) || !cxs;
    for (int t = 1; t < nt && !ctx_fail; t++) {
        cxs[t] = cx;
        ctx_fail = sks__ctx_alloc(&cxs[t]);
    }
    if (cxs) cxs[0] = cx;
    if (ctx_fail || !P || !prob || !X || !Y) {
        rc = sks_fail(SKS_ENOMEM, "sks_eigs_topk_multi: %d problems of %d x %d", nprob, n, kmax);
        goto out;
    }
    for (int p = 0; p < nprob; p++) {
        sks__prob *q = &P[p];
        q->Vt = sks_malloc_n(kn, sizeof(double));
        q->Wt = sks_malloc_n(kn, sizeof(double));
        q->H = sks_calloc_n(kk, sizeof(double));
        q->Z = sks_calloc_n(kk, sizeof(double));
        q->theta = sks_malloc_n((size_t)kmax, sizeof(double));
        q->rel = sks_malloc_n((size_t)kmax, sizeof(double));
        if (!q->Vt || !q->Wt || !q->H || !q->Z || !q->theta || !q->rel) {
            rc = sks_fail(SKS_ENOMEM, "sks_eigs_topk_multi: basis of problem %d", p);
            goto out;
        }
        q->rng = o->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(p + 1));
        q->active = 1;
        /* start block */
        for (int j = 0; j < nb; j++) {
            const double *s0 = NULL;
            if (start) {
                for (int i = 0; i < n; i++) cx.y[i] = start[(size_t)p * n * nb + (size_t)i * nb + j];
                s0 = cx.y;
            }
            if (sks__append(&cx, q, q->nbp, s0)) q->nbp++;
        }
    }

    double op_seconds = 0.0;
    int rounds = 0;
    for (;;) {
        int nact = 0;
        for (int p = 0; p < nprob; p++)
            if (P[p].active && P[p].nbp > 0) prob[nact++] = p;
        if (nact == 0) break;
        const int ld = nact * nb;
        sks__round(cxs, nt, P, prob, nact, ld, 1, X, Y);
        double t_op = sks_now();
        rc = op(ud, n, nact, prob, nb, X, Y);
        op_seconds += sks_now() - t_op;
        rounds++;
        if (rc) goto out;
        if ((rc = sks__round(cxs, nt, P, prob, nact, ld, 0, X, Y))) goto out;
    }

    int nfail = 0;
    for (int p = 0; p < nprob; p++) {
        sks__prob *q = &P[p];
        double *ev = evals + (size_t)p * r, *V = evecs + (size_t)p * n * r;
        for (int c = 0; c < r; c++) {
            if (c >= q->k) {
                ev[c] = NAN;
                for (int i = 0; i < n; i++) V[(size_t)i * r + c] = NAN;
                continue;
            }
            sks__ritz(&cx, q, c, cx.y, NULL);
            /* sign: the largest-|.| component positive */
            int imax = (int)cblas_idamax(n, cx.y, 1);
            double sg = cx.y[imax] < 0.0 ? -1.0 : 1.0, nrm = cblas_dnrm2(n, cx.y, 1);
            for (int i = 0; i < n; i++) V[(size_t)i * r + c] = sg * cx.y[i] / nrm;
            ev[c] = q->theta[c];
        }
        if (!q->converged) nfail++;
        if (info) {
            sks_eigs_info *in = &info[p];
            int nc = 0;
            for (int c = 0; c < r && c < q->nres; c++) {
                if (sks__pair_ok(&cx, q, c)) nc++;
                if (in->residuals) in->residuals[c] = q->rel[c];
            }
            if (in->residuals)
                for (int c = q->nres; c < r; c++) in->residuals[c] = INFINITY;
            in->n_conv = nc;
            in->iterations = q->iterations;
            in->matvecs = q->matvecs;
            in->spanned = q->k >= n;
        }
    }
    if (x) {
        x->op_seconds = op_seconds;
        x->rounds = rounds;
        x->restarts = 0;
        for (int p = 0; p < nprob; p++) x->restarts += P[p].restarts;
    }
    if (nfail) rc = sks_fail(SKS_ENOCONV, "sks_eigs: %d of %d problems did not reach tol %g", nfail, nprob, cx.tol);
out:
    if (P)
        for (int p = 0; p < nprob; p++) {
            free(P[p].Vt);
            free(P[p].Wt);
            free(P[p].H);
            free(P[p].Z);
            free(P[p].theta);
            free(P[p].rel);
        }
    free(P);
    free(prob);
    free(X);
    free(Y);
    sks__ctx_free(&cx);
    for (int t = 1; t < nt && cxs; t++) sks__ctx_free(&cxs[t]);
    free(cxs);
    return rc;
}

/* Single problem: the multi solver with nprob = 1 and an adaptor callback. */
typedef struct {
    sks_symop_fn op;
    void *ud;
} sks__single;
static int sks__single_op(void *ud, int n, int nact, const int *prob, int nb, const double *X, double *Y) {
    (void)prob;
    const sks__single *s = ud;
    return s->op(s->ud, n, nact * nb, X, Y);
}

int sks_eigs_topk_ex(sks_symop_fn op, void *ud, int n, const sks_eigs_opts *o, sks_eigs_extra *x,
                     double *evals, double *evecs, sks_eigs_info *info) {
    if (!op) return sks_fail(SKS_EARG, "sks_eigs_topk: NULL operator");
    sks__single s = {op, ud};
    return sks_eigs_topk_multi(sks__single_op, &s, n, 1, o, x, evals, evecs, info);
}

int sks_eigs_topk(sks_symop_fn op, void *ud, int n, const sks_eigs_opts *o, double *evals, double *evecs,
                  sks_eigs_info *info) {
    return sks_eigs_topk_ex(op, ud, n, o, NULL, evals, evecs, info);
}

/* All eigenpairs with dsyevr (relatively robust representations), then sorted by
 * descending |lambda|; Z columns follow the same order. */
int sks_eig_dense(int n, const double *A, double *evals, double *Z) {
    if (n <= 0 || !A || !evals) return sks_fail(SKS_EARG, "sks_eig_dense: bad arguments (n %d)", n);
    size_t nn = (size_t)n * n;
    double *a = sks_malloc_n(nn, sizeof *a), *w = sks_malloc_n((size_t)n, sizeof *w);
    double *z = Z ? sks_malloc_n(nn, sizeof *z) : NULL;
    lapack_int *isuppz = sks_malloc_n((size_t)2 * n, sizeof *isuppz);
    int *order = sks_malloc_n((size_t)n, sizeof *order);
    int rc = 0;
    if (!a || !w || (Z && !z) || !isuppz || !order) {
        rc = sks_fail(SKS_ENOMEM, "sks_eig_dense: n %d", n);
        goto out;
    }
    memcpy(a, A, nn * sizeof *a);
    if ((rc = sks_lapack_input_check("sks_eig_dense", a, nn))) goto out;
    lapack_int m = 0;
    lapack_int info = LAPACKE_dsyevr(LAPACK_ROW_MAJOR, Z ? 'V' : 'N', 'A', 'U', n, a, n, 0.0, 0.0, 0, 0, 0.0, &m, w,
                                     Z ? z : a, n, isuppz);
    if (info < 0) { rc = sks_fail(SKS_EINTERNAL, "sks_eig_dense: internal error (dsyevr rejected argument %d)", (int)-info); goto out; }
    if (info > 0) { rc = sks_fail(SKS_ELAPACK, "sks_eig_dense: dsyevr failed (info %d)", (int)info); goto out; }
    sks__sort_abs(n, w, order);
    for (int c = 0; c < n; c++) {
        evals[c] = w[order[c]];
        if (Z)
            for (int i = 0; i < n; i++) Z[(size_t)i * n + c] = z[(size_t)i * n + order[c]];
    }
out:
    free(a);
    free(w);
    free(z);
    free(isuppz);
    free(order);
    return rc;
}
