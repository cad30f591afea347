/* quadform.c - the implicit operator S_k of one FFN output channel (SPEC section 3).
 *
 *   S_k = 1/2 (G^T diag(D_k) U + U^T diag(D_k) G),  G, U (f, d), D_k = Down[k, :] (f).
 *
 * Nothing here forms S_k except sks_quadform_dense (test reference). Heavy products are
 * GEMMs (sgemm for f32, dgemm on the optional f64 copies); reductions are f64.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "sks_linalg.h"

static int sks__qf_check(const sks_quadform *q, const char *fn) {
    if (!q || q->d <= 0 || q->f <= 0 || !q->G || !q->U || !q->Down)
        return sks_fail(SKS_EARG, "%s: empty or NULL operator", fn);
    return 0;
}
static int sks__qf64_check(const sks_quadform64 *q, const char *fn) {
    if (!q || q->d <= 0 || q->f <= 0 || !q->G || !q->U || !q->Down)
        return sks_fail(SKS_EARG, "%s: empty or NULL f64 operator", fn);
    return 0;
}

int sks_quadform_f64_alloc(const sks_quadform *q, sks_quadform64 *q64) {
    int rc = sks__qf_check(q, __func__);
    if (rc) return rc;
    if (!q64) return sks_fail(SKS_EARG, "%s: NULL output", __func__);
    size_t fd = (size_t)q->f * (size_t)q->d;
    double *G = sks_malloc_n(fd, sizeof *G), *U = sks_malloc_n(fd, sizeof *U);
    double *D = sks_malloc_n(fd, sizeof *D);
    if (!G || !U || !D) {
        free(G); free(U); free(D);
        return sks_fail(SKS_ENOMEM, "%s: f64 copies of %d x %d", __func__, q->f, q->d);
    }
    for (size_t i = 0; i < fd; i++) {
        G[i] = q->G[i];
        U[i] = q->U[i];
        D[i] = q->Down[i];
    }
    q64->d = q->d;
    q64->f = q->f;
    q64->G = G;
    q64->U = U;
    q64->Down = D;
    return 0;
}

void sks_quadform64_free(sks_quadform64 *q) {
    if (!q) return;
    free((void *)q->G);
    free((void *)q->U);
    free((void *)q->Down);
    q->G = q->U = q->Down = NULL;
}

/* ---- batched matvec --------------------------------------------------------------- */

size_t sks_quadform_ws_size(const sks_quadform *q, int m) {
    return 2 * (size_t)q->f * (size_t)(m > 0 ? m : 0);
}
size_t sks_quadform64_ws_size(const sks_quadform64 *q, int m) {
    return 2 * (size_t)q->f * (size_t)(m > 0 ? m : 0);
}

static int sks__check_ch(int d, const int *ch, int m, const char *fn) {
    for (int i = 0; i < m; i++)
        if (ch[i] < 0 || ch[i] >= d) return sks_fail(SKS_EARG, "%s: channel %d out of [0, %d)", fn, ch[i], d);
    return 0;
}

/* The arguments of a batch matvec: 0 to compute, 1 when m is 0 (nothing to do), or the
 * failure. */
static int sks__mv_args(int d, const int *ch, int m, const void *V, int ldv, const void *Y, int ldy, const void *ws,
                        const char *fn) {
    if (m <= 0) return m == 0 ? 1 : sks_fail(SKS_EARG, "%s: m %d", fn, m);
    if (!ch || !V || !Y || !ws || ldv < m || ldy < m) return sks_fail(SKS_EARG, "%s: bad arguments", fn);
    return sks__check_ch(d, ch, m, fn);
}

/* P = G V, Q = U V (f, m); P[j, i] *= D_{ch[i]}[j], Q likewise;
 * Y = 1/2 G^T Q + 1/2 U^T P  (d, m).
 * Narrow batches (m < 192) are memory-bound: each GEMM streams all of G or U for only
 * 2 m flops per element. There the rows of f are taken in blocks (128 rows for f32, 64
 * for f64: 1 MB of G and of U at d 4096 / d 2048, cache-resident), and each block
 * serves both its forward and its backward product, so G and U are read from memory
 * once per batch instead of twice (f32: 1.3-1.7x at d 4096, f 11008, m 16-64 on the
 * 2-core development machine; f64: docs/linalg.md). Wide batches use four whole GEMMs,
 * which OpenBLAS runs closer to its peak.
 *
 * The row blocks are dealt to threads (as many as OpenBLAS has), each a contiguous run
 * of blocks with OpenBLAS on one thread, its own P, Q and its own Y accumulator; the
 * partial Y are added in thread order at the end. OpenBLAS would otherwise split every
 * one of the 4 f / block small GEMMs over its threads and join them after each: at these
 * widths the joins, and on a loaded machine the waits for a descheduled thread, cost
 * 1.2-2x (docs/linalg.md, "Where the time goes"). One thread: the blocks in order, as
 * before. The sum order depends on the thread count (as OpenBLAS's own does). */
#define SKS__QF_ROWBLOCK 128
#define SKS__QF_WIDE 192

typedef struct {
    const void *G, *U, *Down;    /* T arrays of the operator */
    int d, f, rb;
    const int *ch;
    int m, ldv, ldy;
    const void *V;
    void *Y;                     /* this job's accumulator */
    void *P;                     /* 2 rb m T */
    int blk_lo, blk_hi;
} sks__qf_rows;

/* rows [j0, j1) of P, Q (stored from row 0) times D_{ch[i]}[j] */
#define SKS__QF_SCALE(T, P, Q, Down, f, ch, m, j0, j1)                                                \
    do {                                                                                           \
        for (int i_ = 0; i_ < (m); i_++) {                                                         \
            const T *Dk_ = (Down) + (size_t)(ch)[i_] * (f);                                        \
            for (int j_ = (j0); j_ < (j1); j_++) {                                                 \
                (P)[(size_t)(j_ - (j0)) * (m) + i_] *= Dk_[j_];                                    \
                (Q)[(size_t)(j_ - (j0)) * (m) + i_] *= Dk_[j_];                                    \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* The blocks [blk_lo, blk_hi) of one job; the first one overwrites Y. */
#define SKS__QF_ROWS_BODY(T, GEMM)                                                                 \
    do {                                                                                           \
        const int d = j->d, f = j->f, m = j->m, rb = j->rb;                                        \
        const T *G = j->G, *U = j->U, *Down = j->Down, *V = j->V;                                  \
        T *Y = j->Y, *P = j->P, *Q = (T *)j->P + (size_t)rb * m;                                   \
        for (int blk = j->blk_lo; blk < j->blk_hi; blk++) {                                        \
            int j0 = blk * rb, b = j0 + rb < f ? rb : f - j0;                                      \
            const T *GI = G + (size_t)j0 * d, *UI = U + (size_t)j0 * d;                            \
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, m, d, 1, GI, d, V, j->ldv, 0, P, m); \
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, m, d, 1, UI, d, V, j->ldv, 0, Q, m); \
            SKS__QF_SCALE(T, P, Q, Down, f, j->ch, m, j0, j0 + b);                                 \
            T beta = blk == j->blk_lo ? 0 : 1;                                                     \
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, d, m, b, (T)0.5, GI, d, Q, m, beta, Y, j->ldy); \
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, d, m, b, (T)0.5, UI, d, P, m, 1, Y, j->ldy); \
        }                                                                                          \
    } while (0)
static void *sks__qf_rows32(void *arg) {
    sks__qf_rows *j = arg;
    SKS__QF_ROWS_BODY(float, cblas_sgemm);
    return NULL;
}
static void *sks__qf_rows64(void *arg) {
    sks__qf_rows *j = arg;
    SKS__QF_ROWS_BODY(double, cblas_dgemm);
    return NULL;
}

/* The narrow path: row blocks of rb rows on up to OpenBLAS's thread count (at least two
 * blocks per thread), or in order on this thread with ws (2 rb m elements) when there
 * is one thread or the per-thread buffers cannot be had. el: element size. */
static void sks__qf_rows_run(void *(*fn)(void *), size_t el, sks__qf_rows base, void *ws) {
    enum { MAXT = 64 };
    const int nblk = (base.f + base.rb - 1) / base.rb, m = base.m, d = base.d;
    int nt = openblas_get_num_threads();
    if (nt > MAXT) nt = MAXT;
    if (nt > nblk / 2) nt = nblk / 2;
    const size_t pq = (size_t)2 * base.rb * m, ym = (size_t)d * m;
    unsigned char *buf = nt > 1 ? malloc(((size_t)nt * pq + (size_t)(nt - 1) * ym) * el) : NULL;
    if (!buf) {
        base.P = ws;
        base.blk_lo = 0;
        base.blk_hi = nblk;
        fn(&base);
        return;
    }
    sks__qf_rows jobs[MAXT];
    pthread_t th[MAXT];
    int started[MAXT] = {0};
    const int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int t = 0; t < nt; t++) {
        jobs[t] = base;
        jobs[t].P = buf + (size_t)t * pq * el;
        jobs[t].blk_lo = (int)((int64_t)nblk * t / nt);
        jobs[t].blk_hi = (int)((int64_t)nblk * (t + 1) / nt);
        if (t > 0) {
            jobs[t].Y = buf + ((size_t)nt * pq + (size_t)(t - 1) * ym) * el;
            jobs[t].ldy = m;
            started[t] = pthread_create(&th[t], NULL, fn, &jobs[t]) == 0;
        }
    }
    for (int t = 0; t < nt; t++)
        if (t == 0 || !started[t]) fn(&jobs[t]);
    for (int t = 1; t < nt; t++)
        if (started[t]) pthread_join(th[t], NULL);
    openblas_set_num_threads(saved);
    /* Y += the other threads' partial sums, in thread order */
    for (int t = 1; t < nt; t++) {
        if (el == sizeof(float)) {
            float *Y = base.Y;
            const float *Yt = jobs[t].Y;
            for (int i = 0; i < d; i++)
                for (int c = 0; c < m; c++) Y[(size_t)i * base.ldy + c] += Yt[(size_t)i * m + c];
        } else {
            double *Y = base.Y;
            const double *Yt = jobs[t].Y;
            for (int i = 0; i < d; i++)
                for (int c = 0; c < m; c++) Y[(size_t)i * base.ldy + c] += Yt[(size_t)i * m + c];
        }
    }
    free(buf);
}

#define SKS__QF_MATVEC_BODY(T, GEMM, RB, ROWS)                                                      \
    do {                                                                                           \
        const int d = q->d, f = q->f;                                                              \
        if (m < SKS__QF_WIDE && f > (RB)) {                                                        \
            sks__qf_rows base = {q->G, q->U, q->Down, d, f, (RB), ch, m, ldv, ldy, V, Y, NULL, 0, 0}; \
            sks__qf_rows_run(ROWS, sizeof(T), base, ws);                                           \
            return 0;                                                                              \
        }                                                                                          \
        T *P = ws, *Q = ws + (size_t)f * m;                                                        \
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, f, m, d, 1, q->G, d, V, ldv, 0, P, m);     \
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, f, m, d, 1, q->U, d, V, ldv, 0, Q, m);     \
        for (int j0 = 0; j0 < f; j0 += 256) {                                                      \
            int j1 = j0 + 256 < f ? j0 + 256 : f;                                                  \
            SKS__QF_SCALE(T, P + (size_t)j0 * m, Q + (size_t)j0 * m, q->Down, f, ch, m, j0, j1);      \
        }                                                                                          \
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, d, m, f, (T)0.5, q->G, d, Q, m, 0, Y, ldy);  \
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, d, m, f, (T)0.5, q->U, d, P, m, 1, Y, ldy);  \
        return 0;                                                                                  \
    } while (0)

int sks_quadform_matvec_batch(const sks_quadform *q, const int *ch, int m, const float *V, int ldv,
                              float *Y, int ldy, float *ws) {
    int rc = sks__qf_check(q, __func__);
    if (!rc) rc = sks__mv_args(q->d, ch, m, V, ldv, Y, ldy, ws, __func__);
    if (rc) return rc < 0 ? rc : 0;
    SKS__QF_MATVEC_BODY(float, cblas_sgemm, SKS__QF_ROWBLOCK, sks__qf_rows32);
}

int sks_quadform64_matvec_batch(const sks_quadform64 *q, const int *ch, int m, const double *V, int ldv,
                                double *Y, int ldy, double *ws) {
    int rc = sks__qf64_check(q, __func__);
    if (!rc) rc = sks__mv_args(q->d, ch, m, V, ldv, Y, ldy, ws, __func__);
    if (rc) return rc < 0 ? rc : 0;
    SKS__QF_MATVEC_BODY(double, cblas_dgemm, SKS__QF_ROWBLOCK / 2, sks__qf_rows64);
}

/* ---- traces ------------------------------------------------------------------------ */

/* tr(S_k) = tr(G^T diag(D_k) U) = sum_j D_k[j] (g_j . u_j) = (Down w)_k, w_j = g_j . u_j.
 * f32 operator: w_j in f64 (products of two f32 are exact in f64), then Down w with f64
 * accumulation. f64 operator: w_j by ddot, Down w by dgemv. */
static void sks__traces32(const sks_quadform *q, double *w, double *out) {
    const int d = q->d, f = q->f;
    for (int j = 0; j < f; j++) {
        const float *g = q->G + (size_t)j * d, *u = q->U + (size_t)j * d;
        double acc = 0.0;
        for (int i = 0; i < d; i++) acc += (double)g[i] * (double)u[i];
        w[j] = acc;
    }
    for (int k = 0; k < d; k++) {
        const float *Dk = q->Down + (size_t)k * f;
        double acc = 0.0;
        for (int j = 0; j < f; j++) acc += (double)Dk[j] * w[j];
        out[k] = acc;
    }
}
static void sks__traces64(const sks_quadform64 *q, double *w, double *out) {
    const int f = q->f, d = q->d;
    for (int j = 0; j < f; j++) w[j] = cblas_ddot(d, q->G + (size_t)j * d, 1, q->U + (size_t)j * d, 1);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, d, f, 1.0, q->Down, f, w, 1, 0.0, out, 1);
}
/* The traces of a checked operator: q or q64 (the other NULL) of width f. */
static int sks__traces(const sks_quadform *q, const sks_quadform64 *q64, int f, double *out, const char *fn) {
    if (!out) return sks_fail(SKS_EARG, "%s: NULL out", fn);
    double *w = sks_malloc_n((size_t)f, sizeof *w);
    if (!w) return sks_fail(SKS_ENOMEM, "%s: %d doubles", fn, f);
    if (q) sks__traces32(q, w, out);
    else sks__traces64(q64, w, out);
    free(w);
    return 0;
}

int sks_quadform_traces(const sks_quadform *q, double *out) {
    int rc = sks__qf_check(q, __func__);
    return rc ? rc : sks__traces(q, NULL, q->f, out, __func__);
}

int sks_quadform64_traces(const sks_quadform64 *q, double *out) {
    int rc = sks__qf64_check(q, __func__);
    return rc ? rc : sks__traces(NULL, q, q->f, out, __func__);
}

/* ---- Frobenius norms by the Gram identity -------------------------------------------
 *
 * M_k = G^T diag(D_k) U = sum_j D_k[j] g_j u_j^T, S_k = (M_k + M_k^T) / 2:
 *   ||M_k||_F^2 = sum_ij D_i D_j (g_i.g_j)(u_i.u_j) = D^T (A o B) D,
 *   tr(M_k^2)   = sum_ij D_i D_j (u_i.g_j)(u_j.g_i) = D^T (C o C^T) D,
 *   ||S_k||_F^2 = (||M_k||_F^2 + tr(M_k^2)) / 2,
 * with A = G G^T, B = U U^T, C = U G^T. H = A o B + C o C^T is symmetric, so for a row
 * block I = [i0, i1) only the columns J = [i0, f) are formed:
 *   H_IJ = (G_I G_J^T) o (U_I U_J^T) + (U_I G_J^T) o (G_I U_J^T),
 * the part right of the diagonal block doubled (it stands for H_JI as well), then
 * P = H_IJ Down_J^T (b, d) and acc_k += sum_{i in I} Down[k, i] P[i, k] in f64.
 * Flops per block: 4 GEMMs of 2 b d nJ plus 2 b nJ d, nJ = f - i0. */
double sks_quadform_frobenius_flops(int d, int f, int block) {
    if (block <= 0) block = 256;
    double fl = 0.0;
    for (int i0 = 0; i0 < f; i0 += block) {
        int b = i0 + block < f ? block : f - i0;
        fl += 10.0 * b * (double)d * (double)(f - i0);
    }
    return fl;
}

/* Rows [blk_lo, blk_hi) of the per-block partials: part[(b - blk_lo) d + k] =
 *   sum_{i in block b} Down[k, i] (H_IJ Down_J^T)[i, k].
 * Each block's partial is a whole vector of its own, so the norms are the same sums
 * however the blocks are dealt out (docs/linalg.md, "Split screen"). */
#define SKS__FROB_BODY(T, GEMM, Gp, Up, Dp, ONE, ZERO)                                              \
    do {                                                                                           \
        T *A = wsb, *B = A + (size_t)bs * f, *C = B + (size_t)bs * f, *Ct = C + (size_t)bs * f;     \
        T *P = Ct + (size_t)bs * f;                                                                \
        for (int blk = blk_lo; blk < blk_hi; blk++) {                                              \
            int i0 = blk * bs;                                                                     \
            int b = i0 + bs < f ? bs : f - i0, nJ = f - i0;                                        \
            const T *GI = Gp + (size_t)i0 * d, *UI = Up + (size_t)i0 * d;                          \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, b, nJ, d, ONE, GI, d, GI, d, ZERO, A, nJ); \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, b, nJ, d, ONE, UI, d, UI, d, ZERO, B, nJ); \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, b, nJ, d, ONE, UI, d, GI, d, ZERO, C, nJ); \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, b, nJ, d, ONE, GI, d, UI, d, ZERO, Ct, nJ); \
            for (int i = 0; i < b; i++) {                                                          \
                T *a = A + (size_t)i * nJ, *bb = B + (size_t)i * nJ;                               \
                const T *c = C + (size_t)i * nJ, *ct = Ct + (size_t)i * nJ;                        \
                for (int j = 0; j < nJ; j++) a[j] = a[j] * bb[j] + c[j] * ct[j];                   \
                for (int j = b; j < nJ; j++) a[j] *= 2;                                            \
            }                                                                                      \
            GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, b, d, nJ, ONE, A, nJ, Dp + i0, f, ZERO, P, d); \
            double *pk = part + (size_t)(blk - blk_lo) * d;                                        \
            for (int k = 0; k < d; k++) {                                                          \
                const T *Dk = Dp + (size_t)k * f + i0;                                             \
                double s = 0.0;                                                                    \
                for (int i = 0; i < b; i++) s += (double)Dk[i] * (double)P[(size_t)i * d + k];     \
                pk[k] = s;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

int sks_quadform_frobenius_nblocks(int f, int block) {
    if (f <= 0) return 0;
    int bs = block > 0 ? block : 256;
    if (bs > f) bs = f;
    return (int)(((int64_t)f + bs - 1) / bs);
}

/* Shared driver of the partials: checks, workspace (4 b f + b d values, allocated once)
 * and the blocked body in the element type T. */
#define SKS__FROB_PARTIALS(T, GEMM, qq, check, ONE, ZERO)                                             \
    do {                                                                                           \
        int rc = check(qq, __func__);                                                              \
        if (rc) return rc;                                                                         \
        const int d = qq->d, f = qq->f;                                                            \
        int bs = block > 0 ? block : 256;                                                          \
        if (bs > f) bs = f;                                                                        \
        const int nblk = sks_quadform_frobenius_nblocks(f, block);                                 \
        if (blk_lo < 0 || blk_hi > nblk || blk_lo > blk_hi || (!part && blk_hi > blk_lo))           \
            return sks_fail(SKS_EARG, "%s: blocks [%d, %d) of %d", __func__, blk_lo, blk_hi, nblk);  \
        if (blk_lo == blk_hi) return 0;                                                            \
        size_t n4, nws;                                                                            \
        if (sks_mul_size((size_t)4 * bs, (size_t)f, &n4) || sks_add_size(n4, (size_t)bs * d, &nws)) \
            return sks_fail(SKS_EOVERFLOW, "%s: workspace", __func__);                             \
        T *wsb = sks_malloc_n(nws, sizeof(T));                                                     \
        if (!wsb) return sks_fail(SKS_ENOMEM, "%s: workspace of %zu values", __func__, nws);       \
        SKS__FROB_BODY(T, GEMM, qq->G, qq->U, qq->Down, ONE, ZERO);                                \
        free(wsb);                                                                                 \
        return 0;                                                                                  \
    } while (0)

int sks_quadform_frobenius_partials(const sks_quadform *q, int block, int blk_lo, int blk_hi, double *part) {
    SKS__FROB_PARTIALS(float, cblas_sgemm, q, sks__qf_check, 1.0f, 0.0f);
}

int sks_quadform64_frobenius_partials(const sks_quadform64 *q, int block, int blk_lo, int blk_hi, double *part) {
    SKS__FROB_PARTIALS(double, cblas_dgemm, q, sks__qf64_check, 1.0, 0.0);
}

/* acc_k = ((0 + p_0k) + p_1k) + ... in block order; ||S_k||_F^2 = acc_k / 2, and tiny
 * negative values can only come from rounding. */
void sks_quadform_frobenius_finish(int d, int nblk, const double *part, double *out) {
    for (int k = 0; k < d; k++) {
        double acc = 0.0;
        for (int b = 0; b < nblk; b++) acc += part[(size_t)b * d + k];
        out[k] = sqrt(acc > 0.0 ? 0.5 * acc : 0.0);
    }
}

/* All blocks, then the finish: the one-process path is the split one with every block
 * here, so a caller that adds partials gathered from elsewhere gets the same bits. */
#define SKS__FROB_DRIVER(qq, check, partials_fn)                                                     \
    do {                                                                                           \
        int rc = check(qq, __func__);                                                              \
        if (rc) return rc;                                                                         \
        if (!out) return sks_fail(SKS_EARG, "%s: NULL out", __func__);                             \
        const int nblk = sks_quadform_frobenius_nblocks(qq->f, block);                             \
        double *part = sks_malloc_n((size_t)nblk * (size_t)qq->d, sizeof *part);                   \
        if (!part) return sks_fail(SKS_ENOMEM, "%s: %d x %d partials", __func__, nblk, qq->d);     \
        rc = partials_fn(qq, block, 0, nblk, part);                                                \
        if (!rc) sks_quadform_frobenius_finish(qq->d, nblk, part, out);                            \
        free(part);                                                                                \
        return rc;                                                                                 \
    } while (0)

int sks_quadform_frobenius_blocked(const sks_quadform *q, int block, double *out) {
    SKS__FROB_DRIVER(q, sks__qf_check, sks_quadform_frobenius_partials);
}

int sks_quadform64_frobenius(const sks_quadform64 *q, int block, double *out) {
    SKS__FROB_DRIVER(q, sks__qf64_check, sks_quadform64_frobenius_partials);
}

int sks_quadform_frobenius(const sks_quadform *q, double *out) {
    return sks_quadform_frobenius_blocked(q, 0, out);
}

/* ---- dense reference ----------------------------------------------------------------- */

/* T = (diag(D_k) G)^T U (d, d) by dgemm in f64, S = (T + T^T) / 2. */
int sks_quadform_dense(const sks_quadform *q, int k, double *S) {
    int rc = sks__qf_check(q, __func__);
    if (rc) return rc;
    if (!S || k < 0 || k >= q->d) return sks_fail(SKS_EARG, "%s: channel %d", __func__, k);
    const int d = q->d, f = q->f;
    size_t fd = (size_t)f * d;
    double *Gs = sks_malloc_n(fd, sizeof *Gs), *U = sks_malloc_n(fd, sizeof *U);
    if (!Gs || !U) {
        free(Gs);
        free(U);
        return sks_fail(SKS_ENOMEM, "%s: %d x %d f64", __func__, f, d);
    }
    const float *Dk = q->Down + (size_t)k * f;
    for (int j = 0; j < f; j++)
        for (int i = 0; i < d; i++) {
            Gs[(size_t)j * d + i] = (double)Dk[j] * (double)q->G[(size_t)j * d + i];
            U[(size_t)j * d + i] = q->U[(size_t)j * d + i];
        }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, f, 1.0, Gs, d, U, d, 0.0, S, d);
    for (int a = 0; a < d; a++)
        for (int b = a + 1; b < d; b++) {
            double s = 0.5 * (S[(size_t)a * d + b] + S[(size_t)b * d + a]);
            S[(size_t)a * d + b] = S[(size_t)b * d + a] = s;
        }
    free(Gs);
    free(U);
    return 0;
}

/* S = sum_j 1/2 D_k[j] g_j u_j^T (dger), then S + S^T. */
int sks_quadform64_dense(const sks_quadform64 *q, int k, double *S) {
    int rc = sks__qf64_check(q, __func__);
    if (rc) return rc;
    if (!S || k < 0 || k >= q->d) return sks_fail(SKS_EARG, "%s: channel %d", __func__, k);
    const int d = q->d, f = q->f;
    memset(S, 0, (size_t)d * d * sizeof *S);
    const double *Dk = q->Down + (size_t)k * f;
    for (int j = 0; j < f; j++)
        cblas_dger(CblasRowMajor, d, d, 0.5 * Dk[j], q->G + (size_t)j * d, 1, q->U + (size_t)j * d, 1, S, d);
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) {
            double v = S[(size_t)a * d + b] + S[(size_t)b * d + a];
            S[(size_t)a * d + b] = S[(size_t)b * d + a] = v;
        }
    return 0;
}

/* ---- eigenpairs of many channels at once --------------------------------------------- */

typedef struct {
    const sks_qf_op *op;
    const int *ch;      /* (m) channels of the problems */
    int *chx;           /* (m * nb) channel of every column */
    float *X32, *Y32;   /* (d, m * nb), f32 operator only */
} sks__qf_ctx;

static int sks__qf_apply(void *ud, int n, int nact, const int *prob, int nb, const double *X, double *Y) {
    sks__qf_ctx *s = ud;
    int cols = nact * nb;
    for (int p = 0; p < nact; p++)
        for (int j = 0; j < nb; j++) s->chx[p * nb + j] = s->ch[prob[p]];
    if (s->op->prec == SKS_QF_F64) return sks_qf_matvec_batch(s->op, s->chx, cols, X, cols, Y, cols);
    size_t nc = (size_t)n * cols;
    for (size_t i = 0; i < nc; i++) s->X32[i] = (float)X[i];
    int rc = sks_qf_matvec_batch(s->op, s->chx, cols, s->X32, cols, s->Y32, cols);
    if (rc) return rc;
    for (size_t i = 0; i < nc; i++) Y[i] = s->Y32[i];
    return 0;
}

int sks_qf_top_eigs(const sks_qf_op *op, const int *ch, int m, const sks_eigs_opts *o, sks_eigs_extra *x,
                    double *evals, double *evecs, sks_eigs_info *info) {
    if (!op || !op->be) return sks_fail(SKS_EARG, "%s: operator not bound", __func__);
    const int d = op->d, f64 = op->prec == SKS_QF_F64;
    if (m <= 0 || !ch || !o || o->r <= 0) return sks_fail(SKS_EARG, "%s: bad arguments", __func__);
    int rc = sks__check_ch(d, ch, m, __func__);
    if (rc) return rc;
    int nb = o->block > 0 ? o->block : o->r + 2;
    if (nb > d) nb = d;
    if (op->be->top_eigs) { /* the row's own solver (cuda: basis and Rayleigh-Ritz on the GPU) */
        sks_eigs_opts ob = *o;
        ob.block = nb;
        rc = op->be->top_eigs(op->h, ch, m, &ob, x, evals, evecs, info);
        if (rc != 1) return rc;
    }
    size_t cols = (size_t)m * nb;
    sks__qf_ctx s = {op, ch, NULL, NULL, NULL};
    s.chx = sks_malloc_n(cols, sizeof *s.chx);
    if (!f64) {
        s.X32 = sks_malloc_n(cols * (size_t)d, sizeof(float));
        s.Y32 = sks_malloc_n(cols * (size_t)d, sizeof(float));
    }
    if (!s.chx || (!f64 && (!s.X32 || !s.Y32))) {
        rc = sks_fail(SKS_ENOMEM, "%s: buffers for %zu columns", __func__, cols);
    } else {
        sks_eigs_opts oo = *o;
        oo.block = nb;
        /* The per-problem work of a round (Rayleigh-Ritz, residuals, orthogonalization:
         * many small BLAS/LAPACK calls) on all threads, OpenBLAS on one thread each,
         * instead of small calls that OpenBLAS splits over its threads: on any row (a
         * device row leaves the CPU to the solver; on the cpu row the operator's GEMMs
         * still get every thread between the halves of a round). */
        sks_eigs_extra xl;
        memset(&xl, 0, sizeof xl);
        sks_eigs_extra *xx = x ? x : &xl;
        const int saved = xx->threads;
        if (saved == 0) xx->threads = openblas_get_num_threads();
        rc = sks_eigs_topk_multi(sks__qf_apply, &s, d, m, &oo, xx, evals, evecs, info);
        xx->threads = saved;
    }
    free(s.chx);
    free(s.X32);
    free(s.Y32);
    return rc;
}

int sks_quadform_top_eigs(const sks_quadform *q, const sks_quadform64 *q64, const int *ch, int m,
                          const sks_eigs_opts *o, sks_eigs_extra *x, double *evals, double *evecs,
                          sks_eigs_info *info) {
    if ((q == NULL) == (q64 == NULL)) return sks_fail(SKS_EARG, "%s: give exactly one of q, q64", __func__);
    int rc = q ? sks__qf_check(q, __func__) : sks__qf64_check(q64, __func__);
    if (rc) return rc;
    sks_qf_op op;
    rc = sks_qf_bind(sks_qf_backend_find("cpu"), q, q64, NULL, q ? SKS_QF_F32 : SKS_QF_F64, &op);
    if (rc) return rc;
    rc = sks_qf_top_eigs(&op, ch, m, o, x, evals, evecs, info);
    sks_qf_unbind(&op);
    return rc;
}

uint64_t sks_quadform_top_eigs_bytes(int d, int f, int m, int r, int block, int krylov_dim, int f64) {
    int nb = block > 0 ? block : r + 2;
    if (nb > d) nb = d;
    const uint64_t cols = (uint64_t)m * (uint64_t)nb;
    const uint64_t el = f64 ? 8 : 4;
    uint64_t b = cols * sizeof(int) + 2 * (uint64_t)f * cols * el; /* chx, ws */
    if (!f64) b += 2 * cols * (uint64_t)d * 4;                      /* X32, Y32 */
    /* the threaded narrow matvec: P, Q per thread and a partial Y per extra thread */
    const uint64_t nt = (uint64_t)openblas_get_num_threads();
    if (nt > 1) b += (nt * 2 * SKS__QF_ROWBLOCK + (nt - 1) * (uint64_t)d) * cols * el;
    return b + sks_eigs_topk_multi_bytes(d, m, r, nb, krylov_dim);
}

/* ---- throughput ---------------------------------------------------------------------- */

/* Best-of-reps GEMM rate at (n x n x n) in type T; one untimed warm-up first (thread
 * pool start, page faults). */
#define SKS__GEMM_RATE(T, GEMM)                                                                   \
    do {                                                                                           \
        if (n <= 0) return 0.0;                                                                    \
        if (reps <= 0) reps = 1;                                                                   \
        size_t nn = (size_t)n * n;                                                                 \
        T *A = sks_malloc_n(nn, sizeof *A), *B = sks_malloc_n(nn, sizeof *B), *C = sks_malloc_n(nn, sizeof *C); \
        double best = 0.0;                                                                         \
        if (A && B && C) {                                                                         \
            for (size_t i = 0; i < nn; i++) {                                                      \
                A[i] = (T)((i * 2654435761u) % 1000) * (T)1e-3 - (T)0.5;                           \
                B[i] = (T)((i * 40503u) % 997) * (T)1e-3 - (T)0.5;                                 \
            }                                                                                      \
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);      \
            for (int r = 0; r < reps; r++) {                                                       \
                double t0 = sks_now();                                                             \
                GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n);  \
                double dt = sks_now() - t0;                                                        \
                double g = 2.0 * (double)n * n * n / dt * 1e-9;                                    \
                if (g > best) best = g;                                                            \
            }                                                                                      \
        }                                                                                          \
        free(A);                                                                                   \
        free(B);                                                                                   \
        free(C);                                                                                   \
        return best;                                                                               \
    } while (0)

double sks_sgemm_gflops(int n, int reps) {
    SKS__GEMM_RATE(float, cblas_sgemm);
}

double sks_dgemm_gflops(int n, int reps) {
    SKS__GEMM_RATE(double, cblas_dgemm);
}
