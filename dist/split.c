/* split.c - the split hook of the analyses (analysis/sks_split.h) over MPI ranks and
 * resume parts: the generic deal-and-gather and the row share (sks_dist.h). */
#include "sks_dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sks__agree(const sks_split *sp, int rc) { return (void)sp, sks_dist_agree(rc); }
static int sks__bcast(const sks_split *sp, uint8_t **buf, size_t *n) { return (void)sp, sks_dist_bcast(buf, n); }
static int sks__gather(const sks_split *sp, const void *mine, size_t n, uint8_t **all, size_t **lens) {
    return (void)sp, sks_dist_gather(mine, n, all, lens);
}

static int sks__part_read(const sks_split *sp, const char *kind, int i, uint8_t **buf, size_t *n, char **name) {
    const sks_dist_parts *p = sp->ud;
    *name = NULL;
    int have = sks_dist_part_read(p, kind, i, buf, n);
    if (have > 0 && !(*name = sks_dist_part_path(p, kind, i))) {
        free(*buf);
        *buf = NULL;
        return sks_fail(SKS_ENOMEM, "out of memory");
    }
    return have;
}

static int sks__part_write(const sks_split *sp, const char *kind, int i, const void *buf, size_t n) {
    return sks_dist_part_write(sp->ud, kind, i, buf, n);
}

/* One line per part naming its blocks, written in one call so that the parts' lines do
 * not interleave (test/cli-mpi.sh reads them). */
static void sks__log_blocks(const char *label, int nblk) {
    const int me = sks_dist_rank(), size = sks_dist_size();
    size_t cap = 96 + strlen(label) + 12 * (size_t)nblk, k = 0;
    char *line = malloc(cap);
    if (!line) return;
    /* label "spikes: layer 3: row blocks of" -> "spikes: rank R of N: layer 3: row blocks of NBLK:" */
    const char *colon = strchr(label, ':');
    const int w = colon ? (int)(colon - label) : (int)strlen(label);
    k += (size_t)snprintf(line, cap, "%.*s: rank %d of %d:%s %d:", w, label, me, size, colon ? colon + 1 : "", nblk);
    for (int b = me; b < nblk && k < cap; b += size) k += (size_t)snprintf(line + k, cap - k, " %d", b);
    fprintf(stderr, "%s\n", line);
    free(line);
}

/* Every rank's rows to rank 0, which keeps block b's rows from rank b % size, and the
 * whole array broadcast back: every rank then holds the same numbers (copied bytes,
 * never re-added). */
static int sks__share(const sks_split *sp, const char *label, int nblk, const int *row0, size_t width,
                      double *rows, int status) {
    const int me = sks_dist_rank(), size = sks_dist_size();
    const size_t nbytes = (size_t)row0[nblk] * width * sizeof *rows;
    if (sp->verbose) sks__log_blocks(label, nblk);
    uint8_t *all = NULL, *buf = NULL;
    size_t *lens = NULL, n = 0;
    int rc = sks_dist_agree(status); /* a rank whose blocks failed fails the work everywhere */
    if (rc) return rc;
    rc = sks_dist_agree(sks_dist_gather(rows, nbytes, &all, &lens));
    if (rc) goto done;
    if (me == 0) {
        for (int r = 0; r < size && !rc; r++)
            if (lens[r] != nbytes)
                rc = sks_fail(SKS_EINTERNAL, "share: rank %d sent %zu bytes, not %zu", r, lens[r], nbytes);
        for (int b = 0; b < nblk && !rc; b++) {
            const size_t off = (size_t)row0[b] * width * sizeof *rows;
            const size_t len = (size_t)(row0[b + 1] - row0[b]) * width * sizeof *rows;
            if (len) memcpy((uint8_t *)rows + off, all + (size_t)(b % size) * nbytes + off, len);
        }
        buf = (uint8_t *)rows;
        n = nbytes;
    }
    if ((rc = sks_dist_agree(rc))) goto done;
    if ((rc = sks_dist_agree(sks_dist_bcast(&buf, &n)))) goto done;
    if (me != 0) {
        rc = n == nbytes ? 0 : sks_fail(SKS_EINTERNAL, "share: %zu bytes broadcast, not %zu", n, nbytes);
        if (!rc) memcpy(rows, buf, nbytes);
    }
    rc = sks_dist_agree(rc);
done:
    if (me != 0) free(buf);
    free(all);
    free(lens);
    return rc;
}

/* Item i from its resume part into its slot: 1 read, 0 absent, < 0 a bad part. */
static int sks__deal_resume(const sks_split *sp, const sks_deal *job, int i) {
    const int id = job->ids ? job->ids[i] : i;
    uint8_t *buf = NULL;
    size_t n = 0, off = 0;
    char *name = NULL;
    int have = sp->part_read(sp, job->kind, id, &buf, &n, &name);
    if (have <= 0) return have;
    int rc = job->unpack(job->ud, i, buf, n, &off, name);
    if (!rc && off != n) rc = sks_fail(SKS_EFORMAT, "%s: trailing bytes after the %s", name, job->kind);
    if (!rc && job->log) sks_log(SKS_LOG_INFO, "%s: %s %d: resumed from its part file", job->log, job->kind, id);
    free(buf);
    free(name);
    return rc ? rc : 1;
}

static int sks__deal_write(const sks_split *sp, const sks_deal *job, int i) {
    sks_out one;
    sks_out_init(&one);
    job->pack(job->ud, i, &one);
    int rc = sks_out_error(&one)
                 ? sks_fail(SKS_ENOMEM, "out of memory packing %s %d", job->kind, job->ids ? job->ids[i] : i)
                 : sp->part_write(sp, job->kind, job->ids ? job->ids[i] : i, one.buf.data,
                                  one.buf.size);
    sks_out_free(&one);
    return rc;
}

/* Rank 0: the items of the other ranks, in their packed order (rank r sent items
 * r, r + size, ...). */
static int sks__deal_collect(const sks_deal *job, const uint8_t *all, const size_t *lens) {
    const int size = sks_dist_size();
    size_t base = lens[0];
    int rc = 0;
    for (int r = 1; r < size && !rc; r++) {
        size_t off = base, end = base + lens[r];
        for (int i = r; i < job->n && !rc; i += size) rc = job->unpack(job->ud, i, all, end, &off, "gathered item");
        if (!rc && off != end) rc = sks_fail(SKS_EINTERNAL, "gather: rank %d sent more than its %s items", r, job->kind);
        base = end;
    }
    return rc;
}

static int sks__deal(const sks_split *sp, const sks_deal *job, int *n_resumed) {
    const int me = sks_dist_rank(), size = sks_dist_size();
    *n_resumed = 0;
    int rc = 0, mine = 0, done = 0;
    for (int i = me; i < job->n; i += size) mine++;
    sks_out pk;
    sks_out_init(&pk);
    for (int i = me; i < job->n && !rc; i += size) {
        int have = sp->resume && sp->part_read ? sks__deal_resume(sp, job, i) : 0;
        if (have < 0) rc = have;
        *n_resumed += have > 0;
        if (!have) {
            if (job->progress) sks_progress(job->progress, done, mine);
            rc = job->run(job->ud, i);
            if (!rc && sp->part_write) rc = sks__deal_write(sp, job, i);
        }
        done++;
        if (!rc && me != 0) {
            job->pack(job->ud, i, &pk);
            if (job->drop) job->drop(job->ud, i);
        }
    }
    if (job->progress) sks_progress(job->progress, done, mine);
    if (!rc && sks_out_error(&pk)) rc = sks_fail(SKS_ENOMEM, "out of memory packing the %s results", job->kind);
    rc = sks_dist_agree(rc);
    if (!rc && size > 1) {
        uint8_t *all = NULL;
        size_t *lens = NULL;
        rc = sks_dist_agree(sks_dist_gather(pk.buf.data, pk.buf.size, &all, &lens));
        if (!rc && me == 0) rc = sks__deal_collect(job, all, lens);
        rc = sks_dist_agree(rc);
        free(all);
        free(lens);
    }
    sks_out_free(&pk);
    return rc;
}

void sks_dist_split_init(sks_split *sp, sks_dist_parts *parts) {
    memset(sp, 0, sizeof *sp);
    const char *v = getenv("SKS_MPI_VERBOSE");
    sp->part = sks_dist_rank();
    sp->nparts = sks_dist_size();
    sp->resume = parts && parts->dir && parts->resume;
    sp->verbose = v && !strcmp(v, "1");
    sp->deal = sks__deal;
    sp->agree = sks__agree;
    sp->bcast = sks__bcast;
    sp->gather = sks__gather;
    sp->share = sks__share;
    if (parts && parts->dir) {
        sp->ud = parts;
        sp->part_read = sks__part_read;
        sp->part_write = sks__part_write;
    }
}
