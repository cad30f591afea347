/* gguf_write.c - a GGUF v3 writer (layout in gguf.c and sks_gguf.h).
 *
 * Metadata and tensor infos are collected in memory (a few KB); the header is written
 * by sks_gguf_writer_begin, then the tensor data is streamed in the order the tensors
 * were added, any number of bytes at a time: each tensor starts at the next multiple of
 * the alignment (32), padding is written by the writer. The first error is sticky
 * (later calls return it) and names the file or key.
 */
#include "sks_gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKS__GGUF_WRITE_ALIGN 32

typedef struct {
    char *name;
    sks_dtype dt;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t nbytes, offset;
} sks__wtensor;

struct sks_gguf_writer {
    uint8_t *kv;        /* serialized key/value pairs */
    size_t kv_n, kv_cap;
    uint64_t n_kv;
    sks__wtensor *t;
    size_t n_t, cap_t;
    uint64_t data_bytes; /* data section size so far (aligned tensor starts) */
    FILE *f;
    char *path;
    size_t cur;          /* tensor being streamed */
    uint64_t cur_done;   /* its bytes written */
    int err;
};

static int sks__w_fail(sks_gguf_writer *w, int rc, const char *fmt, const char *a, const char *b) {
    if (!w->err) w->err = sks_fail(rc, fmt, a, b);
    return w->err;
}

static int sks__w_kv_put(sks_gguf_writer *w, const void *p, size_t n) {
    if (w->err) return w->err;
    if (w->kv_n + n > w->kv_cap) {
        size_t nc = (w->kv_cap ? 2 * w->kv_cap : 1024) + n;
        uint8_t *np = realloc(w->kv, nc);
        if (!np) return sks__w_fail(w, SKS_ENOMEM, "gguf writer: out of memory%s%s", "", "");
        w->kv = np;
        w->kv_cap = nc;
    }
    memcpy(w->kv + w->kv_n, p, n);
    w->kv_n += n;
    return 0;
}
static int sks__w_u32(sks_gguf_writer *w, uint32_t v) { return sks__w_kv_put(w, &v, 4); }
static int sks__w_u64(sks_gguf_writer *w, uint64_t v) { return sks__w_kv_put(w, &v, 8); }
static int sks__w_str(sks_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    sks__w_u64(w, (uint64_t)n);
    return sks__w_kv_put(w, s, n);
}
static int sks__w_key(sks_gguf_writer *w, const char *key, sks_gguf_type t) {
    if (w->f) return sks__w_fail(w, SKS_EARG, "gguf writer: key %s added after the header was written%s", key, "");
    if (!key || !*key) return sks__w_fail(w, SKS_EARG, "gguf writer: empty key%s%s", "", "");
    sks__w_str(w, key);
    w->n_kv++;
    return sks__w_u32(w, (uint32_t)t);
}

int sks_gguf_writer_new(sks_gguf_writer **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : sks_fail(SKS_ENOMEM, "gguf writer: out of memory");
}

void sks_gguf_writer_free(sks_gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w->kv);
    free(w->path);
    free(w);
}

int sks_gguf_writer_set_str(sks_gguf_writer *w, const char *key, const char *val) {
    sks__w_key(w, key, SKS_GGUF_STRING);
    return sks__w_str(w, val);
}
int sks_gguf_writer_set_u32(sks_gguf_writer *w, const char *key, uint32_t val) {
    sks__w_key(w, key, SKS_GGUF_UINT32);
    return sks__w_u32(w, val);
}
int sks_gguf_writer_set_i32(sks_gguf_writer *w, const char *key, int32_t val) {
    sks__w_key(w, key, SKS_GGUF_INT32);
    return sks__w_kv_put(w, &val, 4);
}
int sks_gguf_writer_set_f32(sks_gguf_writer *w, const char *key, float val) {
    sks__w_key(w, key, SKS_GGUF_FLOAT32);
    return sks__w_kv_put(w, &val, 4);
}
int sks_gguf_writer_set_bool(sks_gguf_writer *w, const char *key, int val) {
    uint8_t b = val ? 1 : 0;
    sks__w_key(w, key, SKS_GGUF_BOOL);
    return sks__w_kv_put(w, &b, 1);
}
int sks_gguf_writer_set_arr_str(sks_gguf_writer *w, const char *key, const char *const *v, size_t n) {
    sks__w_key(w, key, SKS_GGUF_ARRAY);
    sks__w_u32(w, SKS_GGUF_STRING);
    sks__w_u64(w, (uint64_t)n);
    for (size_t i = 0; i < n; i++) sks__w_str(w, v[i]);
    return w->err;
}
int sks_gguf_writer_set_arr_i32(sks_gguf_writer *w, const char *key, const int32_t *v, size_t n) {
    sks__w_key(w, key, SKS_GGUF_ARRAY);
    sks__w_u32(w, SKS_GGUF_INT32);
    sks__w_u64(w, (uint64_t)n);
    return sks__w_kv_put(w, v, n * 4);
}
int sks_gguf_writer_set_arr_f32(sks_gguf_writer *w, const char *key, const float *v, size_t n) {
    sks__w_key(w, key, SKS_GGUF_ARRAY);
    sks__w_u32(w, SKS_GGUF_FLOAT32);
    sks__w_u64(w, (uint64_t)n);
    return sks__w_kv_put(w, v, n * 4);
}

int sks_gguf_writer_add_tensor(sks_gguf_writer *w, const char *name, sks_dtype dt, uint32_t n_dims,
                               const uint64_t ne[]) {
    if (w->err) return w->err;
    if (w->f) return sks__w_fail(w, SKS_EARG, "gguf writer: tensor %s added after the header was written%s", name, "");
    const sks_dtype_info *info = sks_dtype_get(dt);
    if (!info || n_dims < 1 || n_dims > 4 || !name || !*name || strlen(name) > 256)
        return sks__w_fail(w, SKS_EARG, "gguf writer: tensor %s: bad name, type or dimensions%s", name ? name : "?", "");
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] == 0 || sks_mul_u64(nel, ne[d], &nel))
            return sks__w_fail(w, SKS_ESHAPE, "gguf writer: tensor %s: bad dimension%s", name, "");
    if (ne[0] % info->block)
        return sks__w_fail(w, SKS_ESHAPE, "gguf writer: tensor %s: rows are not whole %s blocks", name, info->name);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? 2 * w->cap_t : 64;
        sks__wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return sks__w_fail(w, SKS_ENOMEM, "gguf writer: out of memory%s%s", "", "");
        w->t = nt;
        w->cap_t = nc;
    }
    sks__wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return sks__w_fail(w, SKS_ENOMEM, "gguf writer: out of memory%s%s", "", "");
    t->dt = dt;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    if (sks_dtype_nbytes(dt, nel, &t->nbytes))
        return sks__w_fail(w, SKS_EOVERFLOW, "gguf writer: tensor %s: size overflows%s", name, "");
    t->offset = (w->data_bytes + SKS__GGUF_WRITE_ALIGN - 1) / SKS__GGUF_WRITE_ALIGN * SKS__GGUF_WRITE_ALIGN;
    w->data_bytes = t->offset + t->nbytes;
    w->n_t++;
    return 0;
}

static int sks__w_file(sks_gguf_writer *w, const void *p, size_t n) {
    if (w->err) return w->err;
    if (n && fwrite(p, 1, n, w->f) != n)
        return sks__w_fail(w, SKS_EIO, "%s: write failed: %s", w->path, strerror(errno));
    return 0;
}

static int sks__w_pad(sks_gguf_writer *w, uint64_t pos) {
    static const uint8_t zero[SKS__GGUF_WRITE_ALIGN];
    return sks__w_file(w, zero, (size_t)((SKS__GGUF_WRITE_ALIGN - pos % SKS__GGUF_WRITE_ALIGN) % SKS__GGUF_WRITE_ALIGN));
}

int sks_gguf_writer_begin(sks_gguf_writer *w, const char *path) {
    if (w->err) return w->err;
    if (w->f) return sks__w_fail(w, SKS_EARG, "gguf writer: %s: header already written%s", path, "");
    w->path = strdup(path);
    if (!w->path) return sks__w_fail(w, SKS_ENOMEM, "gguf writer: out of memory%s%s", "", "");
    w->f = fopen(path, "wb");
    if (!w->f) return sks__w_fail(w, SKS_EIO, "%s: cannot create: %s", path, strerror(errno));
    uint32_t version = 3;
    uint64_t n_t = w->n_t;
    sks__w_file(w, "GGUF", 4);
    sks__w_file(w, &version, 4);
    sks__w_file(w, &n_t, 8);
    sks__w_file(w, &w->n_kv, 8);
    sks__w_file(w, w->kv, w->kv_n);
    uint64_t pos = 24 + w->kv_n;
    for (size_t i = 0; i < w->n_t; i++) {
        const sks__wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t type = (uint32_t)sks_dtype_get(t->dt)->ggml_type;
        sks__w_file(w, &len, 8);
        sks__w_file(w, t->name, (size_t)len);
        sks__w_file(w, &t->n_dims, 4);
        sks__w_file(w, t->ne, 8 * (size_t)t->n_dims);
        sks__w_file(w, &type, 4);
        sks__w_file(w, &t->offset, 8);
        pos += 8 + len + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    return sks__w_pad(w, pos);
}

int sks_gguf_writer_data(sks_gguf_writer *w, const void *data, size_t n) {
    if (w->err) return w->err;
    if (!w->f) return sks__w_fail(w, SKS_EARG, "gguf writer: data before the header%s%s", "", "");
    const uint8_t *p = data;
    while (n > 0) {
        if (w->cur >= w->n_t) return sks__w_fail(w, SKS_EARG, "%s: more tensor data than the tensors hold%s", w->path, "");
        sks__wtensor *t = &w->t[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = n < left ? n : (size_t)left;
        if (sks__w_file(w, p, k)) return w->err;
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->nbytes) {
            if (sks__w_pad(w, t->offset + t->nbytes)) return w->err;
            w->cur++;
            w->cur_done = 0;
        }
    }
    return 0;
}

int sks_gguf_writer_finish(sks_gguf_writer *w) {
    if (!w->err && w->f && w->cur != w->n_t)
        sks__w_fail(w, SKS_EARG, "%s: tensor %s is missing data", w->path, w->t[w->cur].name);
    if (w->f) {
        if (fclose(w->f) != 0) sks__w_fail(w, SKS_EIO, "%s: close failed: %s", w->path, strerror(errno));
        w->f = NULL;
    }
    return w->err;
}
