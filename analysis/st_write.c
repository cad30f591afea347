/* st_write.c - streaming writer of a synthetic model as a Hugging Face directory.
 *
 * safetensors layout (huggingface/safetensors, "Format"): 8-byte little-endian header
 * length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end)}} with
 * offsets relative to the end of the header, padded with spaces to a multiple of 8,
 * then the tensor bytes. Shapes are known in advance, so every header is written
 * first and the data streams after it: rows are generated a chunk (a few MB) at a
 * time by worker threads, converted to the file dtype and appended. Nothing larger
 * than a chunk is ever held. Shards follow the transformers names
 * model-0000k-of-0000n.safetensors with model.safetensors.index.json; each file is
 * written as .name.tmp and renamed when complete.
 */
#define _POSIX_C_SOURCE 200809L
#include "sks_synth.h"
#include "sks_out.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SKS__CHUNK_F32_BYTES ((size_t)8 << 20)
#define SKS__MAX_THREADS 16

typedef struct {
    const sks_synth *s;
    size_t ti;
    int64_t row0, nrows, cols;
    float *f32;          /* (nrows, cols) */
    void *dst;           /* converted rows */
    sks_dtype dt;
    int rc;
} sks__job;

static void *sks__worker(void *arg) {
    sks__job *j = arg;
    j->rc = sks_synth_rows(j->s, j->ti, j->row0, j->nrows, j->f32);
    if (j->rc == 0 && j->dt == SKS_DT_BF16) {
        uint16_t *o = j->dst;
        size_t n = (size_t)j->nrows * (size_t)j->cols;
        for (size_t i = 0; i < n; i++) o[i] = sks_f32_to_bf16(j->f32[i]);
    }
    return NULL;
}

static int sks__write_all(int fd, const void *p, size_t n, const char *path) {
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return sks_fail(SKS_EIO, "%s: write failed: %s", path, strerror(errno));
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int sks__synth_mkdirs(const char *dir) {
    char *p = strdup(dir);
    if (!p) return sks_fail(SKS_ENOMEM, "synth: out of memory");
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return sks_fail(SKS_EIO, "%s: cannot create directory: %s", dir, strerror(e));
        }
        *c = '/';
    }
    int rc = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) rc = sks_fail(SKS_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat st;
    if (!rc && (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))) rc = sks_fail(SKS_EIO, "%s: not a directory", dir);
    free(p);
    return rc;
}

static int sks__nthreads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > SKS__MAX_THREADS) n = SKS__MAX_THREADS;
    return (int)n;
}

/* Stream tensor ti into fd. */
static int sks__stream_tensor(const sks_synth *s, size_t ti, sks_dtype dt, int fd, const char *path, float *f32,
                              uint16_t *b16, uint64_t *done, uint64_t total) {
    int ndim;
    int64_t shape[2];
    sks_synth_tensor_info(s, ti, NULL, NULL, NULL, &ndim, shape);
    int64_t rows = ndim == 2 ? shape[0] : 1, cols = ndim == 2 ? shape[1] : shape[0];
    size_t esz = dt == SKS_DT_BF16 ? 2 : 4;
    int64_t chunk = (int64_t)(SKS__CHUNK_F32_BYTES / ((size_t)cols * 4));
    if (chunk < 1) chunk = 1;
    int nt = sks__nthreads();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        int nj = nr < nt ? (int)nr : nt;
        sks__job jobs[SKS__MAX_THREADS];
        pthread_t th[SKS__MAX_THREADS];
        int started[SKS__MAX_THREADS] = {0};
        int64_t per = (nr + nj - 1) / nj, at = 0;
        for (int k = 0; k < nj; k++) {
            int64_t n = nr - at < per ? nr - at : per;
            jobs[k] = (sks__job){s, ti, r0 + at, n, cols, f32 + at * cols,
                                 dt == SKS_DT_BF16 ? (void *)(b16 + at * cols) : NULL, dt, 0};
            at += n;
            if (n <= 0) continue;
            if (k > 0 && pthread_create(&th[k], NULL, sks__worker, &jobs[k]) == 0) started[k] = 1;
        }
        if (jobs[0].nrows > 0) sks__worker(&jobs[0]);
        for (int k = 1; k < nj; k++) {
            if (started[k]) pthread_join(th[k], NULL);
            else if (jobs[k].nrows > 0) sks__worker(&jobs[k]); /* thread refused: do it here */
        }
        for (int k = 0; k < nj; k++)
            if (jobs[k].rc) return jobs[k].rc;
        const void *src = dt == SKS_DT_BF16 ? (const void *)b16 : (const void *)f32;
        int rc = sks__write_all(fd, src, (size_t)nr * (size_t)cols * esz, path);
        if (rc) return rc;
        *done += (uint64_t)nr * (uint64_t)cols * esz;
        sks_progress("synth", (int64_t)*done, (int64_t)total);
    }
    return 0;
}

/* Append to a growing string buffer; returns 0 or SKS_ENOMEM. */
typedef struct {
    char *p;
    size_t n, cap;
} sks__sb;
static int sks__sb_printf(sks__sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sks__sb_printf(sks__sb *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return SKS_EINTERNAL;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return 0;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *np = realloc(b->p, nc);
        if (!np) return SKS_ENOMEM;
        b->p = np;
        b->cap = nc;
    }
}

int sks_synth_write(const sks_synth *s, const char *dir, sks_dtype dt, uint64_t max_shard_bytes) {
    if (dt != SKS_DT_F32 && dt != SKS_DT_BF16) return sks_fail(SKS_EARG, "synth: dtype %s (f32 or bf16)", sks_dtype_name(dt));
    if (max_shard_bytes == 0) max_shard_bytes = 5000000000ULL;
    int rc = sks__synth_mkdirs(dir);
    if (rc) return rc;
    size_t nt = sks_synth_n_tensors(s), esz = dt == SKS_DT_BF16 ? 2 : 4;
    uint64_t *nbytes = calloc(nt, sizeof *nbytes);
    int *shard = calloc(nt, sizeof *shard);
    size_t maxcols = 0;
    uint64_t total = 0, cur = 0;
    int nshard = 1;
    char *path = NULL, *tmp = NULL, *text = NULL;
    float *f32 = NULL;
    uint16_t *b16 = NULL;
    sks__sb hb = {0};
    int fd = -1;
    size_t plen = strlen(dir) + 64;
    path = malloc(plen);
    tmp = malloc(plen);
    if (!nbytes || !shard || !path || !tmp) {
        rc = sks_fail(SKS_ENOMEM, "synth: out of memory");
        goto out;
    }
    /* shard plan: greedy in file order, a new shard when the next tensor would pass the
     * limit (a tensor larger than the limit gets a shard of its own) */
    for (size_t i = 0; i < nt; i++) {
        int ndim;
        int64_t sh[2];
        sks_synth_tensor_info(s, i, NULL, NULL, NULL, &ndim, sh);
        uint64_t n = (uint64_t)sh[0] * (uint64_t)(ndim == 2 ? sh[1] : 1);
        size_t cols = (size_t)(ndim == 2 ? sh[1] : sh[0]);
        if (cols > maxcols) maxcols = cols;
        nbytes[i] = n * esz;
        if (cur > 0 && cur + nbytes[i] > max_shard_bytes) {
            nshard++;
            cur = 0;
        }
        shard[i] = nshard - 1;
        cur += nbytes[i];
        total += nbytes[i];
    }
    size_t chunk_elems = SKS__CHUNK_F32_BYTES / 4 > maxcols ? SKS__CHUNK_F32_BYTES / 4 : maxcols;
    f32 = sks_malloc_n(chunk_elems, 4);
    b16 = sks_malloc_n(chunk_elems, 2);
    if (!f32 || !b16) {
        rc = sks_fail(SKS_ENOMEM, "synth: out of memory");
        goto out;
    }
    uint64_t done = 0;
    sks_progress("synth", 0, (int64_t)total);
    for (int k = 0; k < nshard; k++) {
        char fname[64];
        if (nshard == 1) snprintf(fname, sizeof fname, "model.safetensors");
        else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", k + 1, nshard);
        /* header */
        hb.n = 0;
        if (sks__sb_printf(&hb, "{\"__metadata__\":{\"format\":\"pt\"}")) goto nomem;
        uint64_t off = 0;
        for (size_t i = 0; i < nt; i++) {
            if (shard[i] != k) continue;
            const char *name;
            int ndim;
            int64_t sh[2];
            sks_synth_tensor_info(s, i, &name, NULL, NULL, &ndim, sh);
            if (ndim == 2) {
                if (sks__sb_printf(&hb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}", name,
                                   dt == SKS_DT_BF16 ? "BF16" : "F32", (long long)sh[0], (long long)sh[1],
                                   (unsigned long long)off, (unsigned long long)(off + nbytes[i])))
                    goto nomem;
            } else if (sks__sb_printf(&hb, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}", name,
                                      dt == SKS_DT_BF16 ? "BF16" : "F32", (long long)sh[0], (unsigned long long)off,
                                      (unsigned long long)(off + nbytes[i]))) {
                goto nomem;
            }
            off += nbytes[i];
        }
        if (sks__sb_printf(&hb, "}")) goto nomem;
        while (hb.n % 8) /* pad so the data starts 8-aligned */
            if (sks__sb_printf(&hb, " ")) goto nomem;
        snprintf(path, plen, "%s/%s", dir, fname);
        snprintf(tmp, plen, "%s/.%s.tmp", dir, fname);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = sks_fail(SKS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
            goto out;
        }
        unsigned char len8[8];
        for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)hb.n >> (8 * b));
        if ((rc = sks__write_all(fd, len8, 8, tmp)) || (rc = sks__write_all(fd, hb.p, hb.n, tmp))) goto out;
        for (size_t i = 0; i < nt; i++) {
            if (shard[i] != k) continue;
            if ((rc = sks__stream_tensor(s, i, dt, fd, tmp, f32, b16, &done, total))) goto out;
        }
        if (fsync(fd) != 0 && errno != EINVAL) {
            rc = sks_fail(SKS_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
            goto out;
        }
        if (close(fd) != 0) {
            fd = -1;
            rc = sks_fail(SKS_EIO, "%s: close failed: %s", tmp, strerror(errno));
            goto out;
        }
        fd = -1;
        if (rename(tmp, path) != 0) {
            rc = sks_fail(SKS_EIO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
            goto out;
        }
    }
    if (nshard > 1) {
        json_t *root = json_object(), *wm = json_object();
        json_object_set_new(root, "metadata", json_pack("{s:I}", "total_size", (json_int_t)total));
        for (size_t i = 0; i < nt; i++) {
            const char *name;
            char fname[64];
            sks_synth_tensor_info(s, i, &name, NULL, NULL, NULL, NULL);
            snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", shard[i] + 1, nshard);
            json_object_set_new(wm, name, json_string(fname));
        }
        json_object_set_new(root, "weight_map", wm);
        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        if (!text) goto nomem;
        snprintf(path, plen, "%s/model.safetensors.index.json", dir);
        if ((rc = sks_write_file_atomic(path, text, strlen(text)))) goto out;
        free(text);
        text = NULL;
        snprintf(path, plen, "%s/model.safetensors", dir); /* stale single file of an earlier run */
        unlink(path);
    } else {
        /* a stale index from an earlier sharded run would shadow model.safetensors */
        snprintf(path, plen, "%s/model.safetensors.index.json", dir);
        unlink(path);
    }
    if ((rc = sks_synth_config_json(s, dt, &text))) goto out;
    snprintf(path, plen, "%s/config.json", dir);
    if ((rc = sks_write_file_atomic(path, text, strlen(text)))) goto out;
    free(text);
    text = NULL;
    if ((rc = sks_synth_planted_json(s, dt, &text))) goto out;
    snprintf(path, plen, "%s/planted.json", dir);
    if ((rc = sks_write_file_atomic(path, text, strlen(text)))) goto out;
    goto out;
nomem:
    rc = sks_fail(SKS_ENOMEM, "synth: out of memory");
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(hb.p);
    free(text);
    free(f32);
    free(b16);
    free(nbytes);
    free(shard);
    free(path);
    free(tmp);
    return rc;
}
