/* backend.c - the table of S_k operator backends and the cpu row (OpenBLAS).
 *
 * The cpu row is a thin binding of the quadform.c functions: it borrows the caller's
 * host arrays and owns only the matvec workspace (2 f m values, grown on demand), so a
 * product through the table gives the same bits as the direct call. The cuda row lives
 * in quadform_cuda.cu and is listed only in -DSKS_CUDA=ON builds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_linalg.h"

typedef struct {
    sks_quadform q;
    sks_quadform64 q64;
    int prec;
    void *ws;
    size_t ws_n; /* values (float or double) in ws */
} sks__cpu;

static int sks__cpu_probe(void) { return 0; }

static int sks__cpu_bind(const sks_quadform *q, const sks_quadform64 *q64, const sks_qf_raw *raw, int prec, void **h) {
    if (raw) return sks_fail(SKS_EUNSUPPORTED, "cpu backend: raw weights must be converted by the caller");
    if ((prec == SKS_QF_F32 && !q) || (prec == SKS_QF_F64 && !q64))
        return sks_fail(SKS_EARG, "cpu backend: no operator of the requested precision");
    sks__cpu *c = calloc(1, sizeof *c);
    if (!c) return sks_fail(SKS_ENOMEM, "cpu backend: out of memory");
    if (q) c->q = *q;
    if (q64) c->q64 = *q64;
    c->prec = prec;
    *h = c;
    return 0;
}

static void sks__cpu_unbind(void *h) {
    sks__cpu *c = h;
    if (!c) return;
    free(c->ws);
    free(c);
}

static int sks__cpu_matvec(void *h, const int *ch, int m, const void *V, int ldv, void *Y, int ldy) {
    sks__cpu *c = h;
    const int f64 = c->prec == SKS_QF_F64;
    size_t need = 2 * (size_t)(f64 ? c->q64.f : c->q.f) * (size_t)(m > 0 ? m : 0);
    if (need > c->ws_n) {
        void *w = realloc(c->ws, need * (f64 ? sizeof(double) : sizeof(float)));
        if (!w) return sks_fail(SKS_ENOMEM, "cpu backend: matvec workspace of %zu values", need);
        c->ws = w;
        c->ws_n = need;
    }
    if (f64) return sks_quadform64_matvec_batch(&c->q64, ch, m, V, ldv, Y, ldy, c->ws);
    return sks_quadform_matvec_batch(&c->q, ch, m, V, ldv, Y, ldy, c->ws);
}

static int sks__cpu_partials(void *h, int block, int blk_lo, int blk_hi, double *part) {
    const sks__cpu *c = h;
    if (c->prec == SKS_QF_F64) return sks_quadform64_frobenius_partials(&c->q64, block, blk_lo, blk_hi, part);
    return sks_quadform_frobenius_partials(&c->q, block, blk_lo, blk_hi, part);
}

static int sks__cpu_traces(void *h, double *out) {
    const sks__cpu *c = h;
    if (c->prec == SKS_QF_F64) return sks_quadform64_traces(&c->q64, out);
    return sks_quadform_traces(&c->q, out);
}

static const sks_qf_backend sks__cpu_row = {
    .name = "cpu",
    .takes_raw = 0,
    .probe = sks__cpu_probe,
    .bind = sks__cpu_bind,
    .unbind = sks__cpu_unbind,
    .matvec_batch = sks__cpu_matvec,
    .frobenius_partials = sks__cpu_partials,
    .traces = sks__cpu_traces,
    .gemm_wt = NULL,
    .top_eigs = NULL,
    .eig_defaults = NULL,
};

#ifdef SKS_HAVE_CUDA
extern const sks_qf_backend sks_qf_backend_cuda;
#endif

static const sks_qf_backend *const sks__rows[] = {
    &sks__cpu_row,
#ifdef SKS_HAVE_CUDA
    &sks_qf_backend_cuda,
#endif
};

const sks_qf_backend *sks_qf_backend_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof sks__rows / sizeof sks__rows[0]; i++)
        if (!strcmp(sks__rows[i]->name, name)) return sks__rows[i];
    return NULL;
}

int sks_qf_backend_resolve(const char *device, const sks_qf_backend **out) {
    *out = NULL;
    if (!device || !strcmp(device, "auto")) {
        const sks_qf_backend *be = &sks__cpu_row;
        for (size_t i = 1; i < sizeof sks__rows / sizeof sks__rows[0]; i++) {
            char saved[512];
            snprintf(saved, sizeof saved, "%s", sks_last_error());
            if (sks__rows[i]->probe() == 0) {
                be = sks__rows[i];
                break;
            }
            /* a missing GPU is not an error for auto: keep the previous message */
            sks_fail(0, "%s", saved);
        }
        *out = be;
        return 0;
    }
    const sks_qf_backend *be = sks_qf_backend_find(device);
    if (!be) {
        if (!strcmp(device, "cuda"))
            return sks_fail(SKS_EUNSUPPORTED, "--device cuda: this build has no CUDA backend (configure with -DSKS_CUDA=ON)");
        return sks_fail(SKS_EARG, "--device '%s': expected cpu, cuda or auto", device);
    }
    int rc = be->probe();
    if (rc) return rc;
    *out = be;
    return 0;
}

static const sks_qf_backend *sks__default = &sks__cpu_row;

void sks_qf_backend_set_default(const sks_qf_backend *be) { sks__default = be ? be : &sks__cpu_row; }
const sks_qf_backend *sks_qf_backend_default(void) { return sks__default; }

int sks_qf_bind(const sks_qf_backend *be, const sks_quadform *q, const sks_quadform64 *q64, const sks_qf_raw *raw,
                int prec, sks_qf_op *op) {
    memset(op, 0, sizeof *op);
    if (!be) be = sks__default;
    if (!!q + !!q64 + !!raw != 1) return sks_fail(SKS_EARG, "%s: give exactly one of q, q64, raw", __func__);
    if (prec != SKS_QF_F32 && prec != SKS_QF_F64) return sks_fail(SKS_EARG, "%s: precision %d", __func__, prec);
    if ((q && prec != SKS_QF_F32) || (q64 && prec != SKS_QF_F64))
        return sks_fail(SKS_EARG, "%s: host arrays are bound in their own precision", __func__);
    int d = q ? q->d : q64 ? q64->d : raw->d, f = q ? q->f : q64 ? q64->f : raw->f;
    const void *G = q ? (const void *)q->G : q64 ? (const void *)q64->G : raw->G;
    const void *U = q ? (const void *)q->U : q64 ? (const void *)q64->U : raw->U;
    const void *D = q ? (const void *)q->Down : q64 ? (const void *)q64->Down : raw->Down;
    if (d <= 0 || f <= 0 || !G || !U || !D) return sks_fail(SKS_EARG, "%s: empty or NULL operator", __func__);
    if (raw && !be->takes_raw) return sks_fail(SKS_EUNSUPPORTED, "%s backend: raw weights not accepted", be->name);
    void *h = NULL;
    int rc = be->bind(q, q64, raw, prec, &h);
    if (rc) return rc;
    op->be = be;
    op->h = h;
    op->prec = prec;
    op->d = d;
    op->f = f;
    return 0;
}

void sks_qf_unbind(sks_qf_op *op) {
    if (!op || !op->be) return;
    op->be->unbind(op->h);
    memset(op, 0, sizeof *op);
}

static int sks__op_check(const sks_qf_op *op, const char *fn) {
    if (!op || !op->be || !op->h) return sks_fail(SKS_EARG, "%s: operator not bound", fn);
    return 0;
}

int sks_qf_matvec_batch(const sks_qf_op *op, const int *ch, int m, const void *V, int ldv, void *Y, int ldy) {
    int rc = sks__op_check(op, __func__);
    if (rc) return rc;
    if (m <= 0) return m == 0 ? 0 : sks_fail(SKS_EARG, "%s: m %d", __func__, m);
    if (!ch || !V || !Y || ldv < m || ldy < m) return sks_fail(SKS_EARG, "%s: bad arguments", __func__);
    for (int i = 0; i < m; i++)
        if (ch[i] < 0 || ch[i] >= op->d) return sks_fail(SKS_EARG, "%s: channel %d out of [0, %d)", __func__, ch[i], op->d);
    return op->be->matvec_batch(op->h, ch, m, V, ldv, Y, ldy);
}

int sks_qf_frobenius_partials(const sks_qf_op *op, int block, int blk_lo, int blk_hi, double *part) {
    int rc = sks__op_check(op, __func__);
    if (rc) return rc;
    const int nblk = sks_quadform_frobenius_nblocks(op->f, block);
    if (blk_lo < 0 || blk_hi > nblk || blk_lo > blk_hi || (!part && blk_hi > blk_lo))
        return sks_fail(SKS_EARG, "%s: blocks [%d, %d) of %d", __func__, blk_lo, blk_hi, nblk);
    if (blk_lo == blk_hi) return 0;
    return op->be->frobenius_partials(op->h, block, blk_lo, blk_hi, part);
}

int sks_qf_traces(const sks_qf_op *op, double *out) {
    int rc = sks__op_check(op, __func__);
    if (rc) return rc;
    if (!out) return sks_fail(SKS_EARG, "%s: NULL out", __func__);
    return op->be->traces(op->h, out);
}
