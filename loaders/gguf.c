/* gguf.c - GGUF v2/v3 (ggml docs/gguf.md): metadata, tensor infos, the model view.
 *
 * Layout (little-endian):
 *   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x  (string key, u32 value type, value)
 *   n_tensors x (string name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type,
 *                u64 offset relative to the data section)
 *   padding to general.alignment (u32, power of two, default 32) | tensor data
 * string = u64 length + bytes (no NUL); array = u32 element type, u64 count, elements.
 *
 * Every length and count is checked against the bytes left before anything is read or
 * allocated: a count is plausible only if count x (smallest encoding of one element)
 * fits in what remains, so counts near 2^63 fail before any allocation. Tensor spans
 * must be aligned, inside the file and pairwise disjoint.
 */
#include "formats_internal.h"
#include "model_internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SKS__GGUF_MAX_ARRAY_DEPTH 4
#define SKS__GGUF_DEFAULT_ALIGNMENT 32

typedef struct {
    const char *key;
    size_t key_len;
    uint32_t type;
    const uint8_t *val;    /* scalar value, string (u64 len + bytes) or array body */
    uint32_t arr_type;     /* arrays: element type */
    uint64_t arr_n;        /* arrays: element count */
    const uint8_t *arr_data; /* arrays: first element */
    uint64_t *str_off;     /* string arrays: offset of element i from arr_data */
} sks__gguf_kv;

struct sks_gguf {
    uint32_t version;
    uint64_t n_kv;
    sks__gguf_kv *kv;
    uint64_t n_tensors;
    sks__gguf_tensor *t;
    uint32_t alignment;
    uint64_t data_off;
    const uint8_t *base;
    size_t size;
};

/* ---- ggml types: the dtype table (dtype.c) ------------------------------------------------ */

const char *sks__ggml_type_name(uint32_t type) {
    int d = sks_dtype_from_ggml(type);
    return d < 0 ? NULL : sks_dtype_name((sks_dtype)d);
}

/* ---- bounded reader --------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    const char *path;
} sks__rd;

static inline size_t sks__left(const sks__rd *r) { return r->len - r->pos; }

static int sks__rd_bytes(sks__rd *r, void *dst, size_t n, const char *what) {
    if (n > sks__left(r))
        return sks_fail(SKS_EBOUNDS, "%s: %s at byte %zu runs past the end of the file", r->path, what, r->pos);
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}
static int sks__rd_u32(sks__rd *r, uint32_t *v, const char *what) { return sks__rd_bytes(r, v, 4, what); }
static int sks__rd_u64(sks__rd *r, uint64_t *v, const char *what) { return sks__rd_bytes(r, v, 8, what); }

static int sks__rd_str(sks__rd *r, const char **s, size_t *n, const char *what) {
    uint64_t len = 0;
    int rc = sks__rd_u64(r, &len, what);
    if (rc) return rc;
    if (len > sks__left(r))
        return sks_fail(SKS_EBOUNDS, "%s: %s: string of %llu bytes at byte %zu runs past the end of the file", r->path,
                        what, (unsigned long long)len, r->pos);
    *s = (const char *)r->p + r->pos;
    *n = (size_t)len;
    r->pos += (size_t)len;
    return 0;
}

/* Fixed size of a scalar metadata type, 0 for string/array, -1 for an unknown type. */
static int sks__gguf_scalar_size(uint32_t t) {
    switch (t) {
    case SKS_GGUF_UINT8: case SKS_GGUF_INT8: case SKS_GGUF_BOOL: return 1;
    case SKS_GGUF_UINT16: case SKS_GGUF_INT16: return 2;
    case SKS_GGUF_UINT32: case SKS_GGUF_INT32: case SKS_GGUF_FLOAT32: return 4;
    case SKS_GGUF_UINT64: case SKS_GGUF_INT64: case SKS_GGUF_FLOAT64: return 8;
    case SKS_GGUF_STRING: case SKS_GGUF_ARRAY: return 0;
    default: return -1;
    }
}

/* Skip one value of type t (validating it); depth bounds nested arrays. If kv is given
 * and t is an array, record the array's element type, count and (for strings) offsets. */
static int sks__gguf_skip_value(sks__rd *r, uint32_t t, int depth, sks__gguf_kv *kv, const char *key, size_t klen) {
    int sz = sks__gguf_scalar_size(t);
    if (sz < 0) return sks_fail(SKS_EFORMAT, "%s: key %.*s: unknown value type %u", r->path, (int)klen, key, t);
    if (sz > 0) {
        if ((size_t)sz > sks__left(r))
            return sks_fail(SKS_EBOUNDS, "%s: key %.*s: value runs past the end of the file", r->path, (int)klen, key);
        r->pos += (size_t)sz;
        return 0;
    }
    int rc;
    if (t == SKS_GGUF_STRING) {
        const char *s;
        size_t n;
        return sks__rd_str(r, &s, &n, "metadata string");
    }
    if (depth >= SKS__GGUF_MAX_ARRAY_DEPTH)
        return sks_fail(SKS_EFORMAT, "%s: key %.*s: arrays nested deeper than %d", r->path, (int)klen, key,
                        SKS__GGUF_MAX_ARRAY_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    if ((rc = sks__rd_u32(r, &et, "array type")) || (rc = sks__rd_u64(r, &n, "array count"))) return rc;
    int esz = sks__gguf_scalar_size(et);
    if (esz < 0) return sks_fail(SKS_EFORMAT, "%s: key %.*s: unknown array element type %u", r->path, (int)klen, key, et);
    /* smallest encoding of one element: its size, 8 (string length), 12 (array header) */
    uint64_t min = esz > 0 ? (uint64_t)esz : (et == SKS_GGUF_STRING ? 8u : 12u);
    if (n > sks__left(r) / min)
        return sks_fail(SKS_EBOUNDS, "%s: key %.*s: array of %llu elements cannot fit in the %zu bytes left", r->path,
                        (int)klen, key, (unsigned long long)n, sks__left(r));
    if (kv) {
        kv->arr_type = et;
        kv->arr_n = n;
        kv->arr_data = r->p + r->pos;
    }
    if (esz > 0) {
        r->pos += (size_t)(n * (uint64_t)esz);
        return 0;
    }
    if (kv && et == SKS_GGUF_STRING) {
        kv->str_off = sks_malloc_n(n ? (size_t)n : 1, sizeof *kv->str_off);
        if (!kv->str_off) return sks_fail(SKS_ENOMEM, "%s: out of memory", r->path);
    }
    size_t start = r->pos;
    for (uint64_t i = 0; i < n; i++) {
        if (kv && kv->str_off) kv->str_off[i] = (uint64_t)(r->pos - start);
        if ((rc = sks__gguf_skip_value(r, et, depth + 1, NULL, key, klen))) return rc;
    }
    return 0;
}

void sks__gguf_free(struct sks_gguf *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].str_off);
    free(g->kv);
    free(g->t);
    free(g);
}

static int sks__gguf_tensor_cmp(const void *a, const void *b) {
    const sks__gguf_tensor *x = *(const sks__gguf_tensor *const *)a, *y = *(const sks__gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int sks__gguf_parse(const void *buf, size_t len, const char *path, struct sks_gguf **out) {
    *out = NULL;
    sks__rd r = {buf, len, 0, path};
    char magic[4];
    int rc;
    if (len < 24) return sks_fail(SKS_EFORMAT, "%s: %zu bytes: too short for a GGUF header", path, len);
    if ((rc = sks__rd_bytes(&r, magic, 4, "magic"))) return rc;
    if (memcmp(magic, "GGUF", 4)) return sks_fail(SKS_EFORMAT, "%s: bad magic (not a GGUF file)", path);
    struct sks_gguf *g = calloc(1, sizeof *g);
    if (!g) return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    g->base = buf;
    g->size = len;
    g->alignment = SKS__GGUF_DEFAULT_ALIGNMENT;
    uint64_t n_kv = 0, n_t = 0;
    sks__gguf_tensor **sorted = NULL;
    if ((rc = sks__rd_u32(&r, &g->version, "version"))) goto fail;
    if (g->version == 1) {
        rc = sks_fail(SKS_EUNSUPPORTED, "%s: GGUF version 1 is not supported (v2, v3)", path);
        goto fail;
    }
    if (g->version != 2 && g->version != 3) {
        rc = sks_fail(g->version >= 0x01000000u ? SKS_EUNSUPPORTED : SKS_EFORMAT,
                      "%s: GGUF version %u %s", path, g->version,
                      g->version >= 0x01000000u ? "looks big-endian, which is not supported" : "is unknown (want 2 or 3)");
        goto fail;
    }
    if ((rc = sks__rd_u64(&r, &n_t, "tensor count")) || (rc = sks__rd_u64(&r, &n_kv, "metadata count"))) goto fail;
    /* smallest kv: 8 (key length) + 1 (key) + 4 (type) + 1 (u8); smallest tensor info:
     * 8 + 1 + 4 + 8 + 4 + 8 */
    if (n_kv > sks__left(&r) / 14) {
        rc = sks_fail(SKS_EBOUNDS, "%s: metadata count %llu cannot fit in a %zu-byte file", path,
                      (unsigned long long)n_kv, len);
        goto fail;
    }
    if (n_t > sks__left(&r) / 33) {
        rc = sks_fail(SKS_EBOUNDS, "%s: tensor count %llu cannot fit in a %zu-byte file", path, (unsigned long long)n_t,
                      len);
        goto fail;
    }
    g->kv = sks_calloc_n(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->t = sks_calloc_n(n_t ? (size_t)n_t : 1, sizeof *g->t);
    if (!g->kv || !g->t) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        sks__gguf_kv *kv = &g->kv[i];
        g->n_kv = i + 1; /* so that sks__gguf_free sees what was allocated */
        if ((rc = sks__rd_str(&r, &kv->key, &kv->key_len, "metadata key"))) goto fail;
        if (kv->key_len == 0 || kv->key_len > 65535 || sks__has_control(kv->key, kv->key_len)) {
            rc = sks_fail(SKS_EFORMAT, "%s: metadata key %llu is empty, too long or holds control characters", path,
                          (unsigned long long)i);
            goto fail;
        }
        if ((rc = sks__rd_u32(&r, &kv->type, "metadata type"))) goto fail;
        kv->val = r.p + r.pos;
        if ((rc = sks__gguf_skip_value(&r, kv->type, 0, kv, kv->key, kv->key_len))) goto fail;
    }
    g->n_kv = n_kv;
    int64_t ai = sks_gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        int64_t al;
        if (sks_gguf_value_type(g, ai) == SKS_GGUF_STRING || sks_gguf_value_type(g, ai) == SKS_GGUF_ARRAY ||
            sks_gguf_get_i64(g, ai, &al) != 0 || al <= 0 || al > (1 << 20) || (al & (al - 1)) != 0) {
            rc = sks_fail(SKS_EFORMAT, "%s: general.alignment is not a power of two in [1, 2^20]", path);
            goto fail;
        }
        g->alignment = (uint32_t)al;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        sks__gguf_tensor *t = &g->t[i];
        if ((rc = sks__rd_str(&r, &t->name, &t->name_len, "tensor name"))) goto fail;
        if (t->name_len == 0 || t->name_len > 256 || sks__has_control(t->name, t->name_len)) {
            rc = sks_fail(SKS_EFORMAT, "%s: tensor %llu: name of %zu bytes is empty, too long or holds control characters",
                          path, (unsigned long long)i, t->name_len);
            goto fail;
        }
        if ((rc = sks__rd_u32(&r, &t->n_dims, "tensor n_dims"))) goto fail;
        if (t->n_dims < 1 || t->n_dims > 4) {
            rc = sks_fail(SKS_ESHAPE, "%s: tensor %.*s: %u dimensions (GGUF allows 1..4)", path, (int)t->name_len,
                          t->name, t->n_dims);
            goto fail;
        }
        uint64_t nel = 1;
        for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if ((rc = sks__rd_u64(&r, &t->ne[d], "tensor dimension"))) goto fail;
            if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX) {
                rc = sks_fail(SKS_ESHAPE, "%s: tensor %.*s: dimension %u is %llu", path, (int)t->name_len, t->name, d,
                              (unsigned long long)t->ne[d]);
                goto fail;
            }
            if (sks_mul_u64(nel, t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
                rc = sks_fail(SKS_EOVERFLOW, "%s: tensor %.*s: element count overflows", path, (int)t->name_len, t->name);
                goto fail;
            }
        }
        if ((rc = sks__rd_u32(&r, &t->type, "tensor type")) || (rc = sks__rd_u64(&r, &t->offset, "tensor offset")))
            goto fail;
        int dt = sks_dtype_from_ggml(t->type);
        if (dt < 0) {
            rc = sks_fail(SKS_EDTYPE, "%s: tensor %.*s: unknown ggml tensor type id %u", path, (int)t->name_len,
                          t->name, t->type);
            goto fail;
        }
        const sks_dtype_info *ti = sks_dtype_get((sks_dtype)dt);
        if (t->ne[0] % ti->block) {
            rc = sks_fail(SKS_ESHAPE, "%s: tensor %.*s: type %s: row of %llu elements is not a whole number of %u-element blocks",
                          path, (int)t->name_len, t->name, ti->name, (unsigned long long)t->ne[0], ti->block);
            goto fail;
        }
        if (sks_mul_u64(nel / ti->block, ti->block_bytes, &t->nbytes)) {
            rc = sks_fail(SKS_EOVERFLOW, "%s: tensor %.*s: byte size overflows", path, (int)t->name_len, t->name);
            goto fail;
        }
        g->n_tensors = i + 1;
    }
    g->n_tensors = n_t;
    /* data section: the next multiple of the alignment */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_off = (uint64_t)r.pos + pad;
    if (n_t > 0 && g->data_off > len) {
        rc = sks_fail(SKS_EBOUNDS, "%s: data section at byte %llu starts past the end of the %zu-byte file", path,
                      (unsigned long long)g->data_off, len);
        goto fail;
    }
    uint64_t data_size = g->data_off <= len ? (uint64_t)len - g->data_off : 0;
    sorted = sks_malloc_n(n_t ? (size_t)n_t : 1, sizeof *sorted);
    if (!sorted) {
        rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        sks__gguf_tensor *t = &g->t[i];
        sorted[i] = t;
        if (t->offset % g->alignment) {
            rc = sks_fail(SKS_EFORMAT, "%s: tensor %.*s: offset %llu is not a multiple of the alignment %u", path,
                          (int)t->name_len, t->name, (unsigned long long)t->offset, g->alignment);
            goto fail;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            rc = sks_fail(SKS_EBOUNDS,
                          "%s: tensor %.*s: type %s: bytes [%llu, +%llu) lie outside the %llu-byte data section "
                          "(truncated file?)",
                          path, (int)t->name_len, t->name, sks__ggml_type_name(t->type), (unsigned long long)t->offset,
                          (unsigned long long)t->nbytes, (unsigned long long)data_size);
            goto fail;
        }
    }
    qsort(sorted, (size_t)n_t, sizeof *sorted, sks__gguf_tensor_cmp);
    for (uint64_t i = 1; i < n_t; i++) {
        if (sorted[i]->offset < sorted[i - 1]->offset + sorted[i - 1]->nbytes) {
            rc = sks_fail(SKS_EFORMAT, "%s: tensors %.*s and %.*s overlap", path, (int)sorted[i - 1]->name_len,
                          sorted[i - 1]->name, (int)sorted[i]->name_len, sorted[i]->name);
            goto fail;
        }
    }
    free(sorted);
    *out = g;
    return 0;
fail:
    free(sorted);
    sks__gguf_free(g);
    return rc;
}

uint64_t sks__gguf_n_tensors(const struct sks_gguf *g) { return g->n_tensors; }
const sks__gguf_tensor *sks__gguf_tensor_info(const struct sks_gguf *g, uint64_t i) {
    return i < g->n_tensors ? &g->t[i] : NULL;
}
uint64_t sks__gguf_data_offset(const struct sks_gguf *g) { return g->data_off; }

/* ---- public metadata accessors (sks_gguf.h) ------------------------------------------ */

uint32_t sks_gguf_version(const struct sks_gguf *g) { return g->version; }
int64_t sks_gguf_n_kv(const struct sks_gguf *g) { return (int64_t)g->n_kv; }

int64_t sks_gguf_find_key(const struct sks_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && !memcmp(g->kv[i].key, key, n)) return (int64_t)i;
    return -1;
}

const char *sks_gguf_key(const struct sks_gguf *g, int64_t idx, size_t *len) {
    if (idx < 0 || (uint64_t)idx >= g->n_kv) return NULL;
    if (len) *len = g->kv[idx].key_len;
    return g->kv[idx].key;
}

sks_gguf_type sks_gguf_value_type(const struct sks_gguf *g, int64_t idx) {
    if (idx < 0 || (uint64_t)idx >= g->n_kv) return (sks_gguf_type)-1;
    return (sks_gguf_type)g->kv[idx].type;
}

/* One numeric element of type t at p as i64 / f64. */
static int sks__num_i64(uint32_t t, const uint8_t *p, int64_t *out) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; uint64_t u64; int64_t i64;
    float f; double d;
    switch (t) {
    case SKS_GGUF_UINT8: case SKS_GGUF_BOOL: memcpy(&u8, p, 1); *out = u8; return 0;
    case SKS_GGUF_INT8: memcpy(&i8, p, 1); *out = i8; return 0;
    case SKS_GGUF_UINT16: memcpy(&u16, p, 2); *out = u16; return 0;
    case SKS_GGUF_INT16: memcpy(&i16, p, 2); *out = i16; return 0;
    case SKS_GGUF_UINT32: memcpy(&u32, p, 4); *out = u32; return 0;
    case SKS_GGUF_INT32: memcpy(&i32, p, 4); *out = i32; return 0;
    case SKS_GGUF_UINT64:
        memcpy(&u64, p, 8);
        if (u64 > (uint64_t)INT64_MAX) return SKS_EOVERFLOW;
        *out = (int64_t)u64;
        return 0;
    case SKS_GGUF_INT64: memcpy(&i64, p, 8); *out = i64; return 0;
    case SKS_GGUF_FLOAT32:
        memcpy(&f, p, 4);
        if (!(f >= -9.2e18f && f <= 9.2e18f) || f != (float)(int64_t)f) return SKS_EFORMAT;
        *out = (int64_t)f;
        return 0;
    case SKS_GGUF_FLOAT64:
        memcpy(&d, p, 8);
        if (!(d >= -9.2e18 && d <= 9.2e18) || d != (double)(int64_t)d) return SKS_EFORMAT;
        *out = (int64_t)d;
        return 0;
    default: return SKS_EFORMAT;
    }
}

static int sks__num_f64(uint32_t t, const uint8_t *p, double *out) {
    float f;
    double d;
    int64_t i;
    if (t == SKS_GGUF_FLOAT32) {
        memcpy(&f, p, 4);
        *out = f;
        return 0;
    }
    if (t == SKS_GGUF_FLOAT64) {
        memcpy(&d, p, 8);
        *out = d;
        return 0;
    }
    if (t == SKS_GGUF_UINT64) {
        uint64_t u;
        memcpy(&u, p, 8);
        *out = (double)u;
        return 0;
    }
    int rc = sks__num_i64(t, p, &i);
    if (rc) return rc;
    *out = (double)i;
    return 0;
}

static int sks__kv_check(const struct sks_gguf *g, int64_t idx) {
    if (!g || idx < 0 || (uint64_t)idx >= g->n_kv) return sks_fail(SKS_EARG, "gguf: key index %lld out of range", (long long)idx);
    return 0;
}

/* A scalar value as an integer (iv) or as a number (fv; one of the two is NULL). */
static int sks__get_num(const struct sks_gguf *g, int64_t idx, int64_t *iv, double *fv) {
    int rc = sks__kv_check(g, idx);
    if (rc) return rc;
    const sks__gguf_kv *kv = &g->kv[idx];
    rc = iv ? sks__num_i64(kv->type, kv->val, iv) : sks__num_f64(kv->type, kv->val, fv);
    if (rc) return sks_fail(rc, "gguf: key %.*s is not %s", (int)kv->key_len, kv->key, iv ? "an integer" : "a number");
    return 0;
}

int sks_gguf_get_i64(const struct sks_gguf *g, int64_t idx, int64_t *out) { return sks__get_num(g, idx, out, NULL); }
int sks_gguf_get_f64(const struct sks_gguf *g, int64_t idx, double *out) { return sks__get_num(g, idx, NULL, out); }

int sks_gguf_get_str(const struct sks_gguf *g, int64_t idx, const char **s, size_t *len) {
    int rc = sks__kv_check(g, idx);
    if (rc) return rc;
    const sks__gguf_kv *kv = &g->kv[idx];
    if (kv->type != SKS_GGUF_STRING) return sks_fail(SKS_EFORMAT, "gguf: key %.*s is not a string", (int)kv->key_len, kv->key);
    uint64_t n;
    memcpy(&n, kv->val, 8);
    *s = (const char *)kv->val + 8;
    if (len) *len = (size_t)n;
    return 0;
}

int sks_gguf_arr_info(const struct sks_gguf *g, int64_t idx, sks_gguf_type *elem, uint64_t *n) {
    int rc = sks__kv_check(g, idx);
    if (rc) return rc;
    const sks__gguf_kv *kv = &g->kv[idx];
    if (kv->type != SKS_GGUF_ARRAY) return sks_fail(SKS_EFORMAT, "gguf: key %.*s is not an array", (int)kv->key_len, kv->key);
    if (elem) *elem = (sks_gguf_type)kv->arr_type;
    if (n) *n = kv->arr_n;
    return 0;
}

static int sks__arr_elem(const struct sks_gguf *g, int64_t idx, uint64_t i, const sks__gguf_kv **kvp) {
    int rc = sks__kv_check(g, idx);
    if (rc) return rc;
    const sks__gguf_kv *kv = &g->kv[idx];
    if (kv->type != SKS_GGUF_ARRAY) return sks_fail(SKS_EFORMAT, "gguf: key %.*s is not an array", (int)kv->key_len, kv->key);
    if (i >= kv->arr_n)
        return sks_fail(SKS_EBOUNDS, "gguf: key %.*s: index %llu outside [0, %llu)", (int)kv->key_len, kv->key,
                        (unsigned long long)i, (unsigned long long)kv->arr_n);
    *kvp = kv;
    return 0;
}

int sks_gguf_arr_str(const struct sks_gguf *g, int64_t idx, uint64_t i, const char **s, size_t *len) {
    const sks__gguf_kv *kv;
    int rc = sks__arr_elem(g, idx, i, &kv);
    if (rc) return rc;
    if (kv->arr_type != SKS_GGUF_STRING || !kv->str_off)
        return sks_fail(SKS_EFORMAT, "gguf: key %.*s is not an array of strings", (int)kv->key_len, kv->key);
    const uint8_t *p = kv->arr_data + kv->str_off[i];
    uint64_t n;
    memcpy(&n, p, 8);
    *s = (const char *)p + 8;
    if (len) *len = (size_t)n;
    return 0;
}

/* Element i of a numeric array as an integer (iv) or as a number (fv; one of the two is
 * NULL); an array of strings or of arrays, or a value the type does not hold, is refused. */
static int sks__arr_num(const struct sks_gguf *g, int64_t idx, uint64_t i, int64_t *iv, double *fv) {
    const sks__gguf_kv *kv;
    int rc = sks__arr_elem(g, idx, i, &kv);
    if (rc) return rc;
    int sz = sks__gguf_scalar_size(kv->arr_type);
    const uint8_t *p = sz > 0 ? kv->arr_data + i * (uint64_t)sz : NULL;
    if (!p || (rc = iv ? sks__num_i64(kv->arr_type, p, iv) : sks__num_f64(kv->arr_type, p, fv)))
        return sks_fail(rc ? rc : SKS_EFORMAT, "gguf: key %.*s: element %llu is not %s", (int)kv->key_len, kv->key,
                        (unsigned long long)i, iv ? "an integer" : "a number");
    return 0;
}

int sks_gguf_arr_i64(const struct sks_gguf *g, int64_t idx, uint64_t i, int64_t *out) {
    return sks__arr_num(g, idx, i, out, NULL);
}

int sks_gguf_arr_f64(const struct sks_gguf *g, int64_t idx, uint64_t i, double *out) {
    return sks__arr_num(g, idx, i, NULL, out);
}

/* ---- the model view ---------------------------------------------------------------------- */

const char *sks_gguf_tensor_name(sks_role role, int layer, char *buf, size_t cap) {
    if (role < 0 || role >= SKS_ROLE_COUNT || cap == 0) return NULL;
    sks__family_gguf_name(role, layer, buf, cap); /* the family table's GGUF names */
    return buf;
}
/* GGUF names are not NUL-terminated in the file: copy before matching. */
static int sks__gguf_role(const char *name, size_t n, sks_role *role, long *layer) {
    char buf[300];
    *layer = -1;
    if (n >= sizeof buf) return 0;
    memcpy(buf, name, n);
    buf[n] = 0;
    return sks__family_gguf_role(buf, role, layer);
}

/* <arch>.<suffix> as an int in [lo, hi]; absent -> dflt unless required. */
static int sks__gguf_int(const struct sks_gguf *g, const char *arch, const char *suffix, int required, long lo,
                         long hi, int dflt, const char *path, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t i = sks_gguf_find_key(g, key), v;
    if (i < 0) {
        if (required) return sks_fail(SKS_ENOTFOUND, "%s: missing metadata key %s", path, key);
        *out = dflt;
        return 0;
    }
    if (sks_gguf_value_type(g, i) == SKS_GGUF_ARRAY)
        return sks_fail(SKS_EUNSUPPORTED, "%s: %s is a per-layer array: layers of different shapes are not supported",
                        path, key);
    if (sks_gguf_get_i64(g, i, &v)) return sks_fail(SKS_EFORMAT, "%s: %s is not an integer", path, key);
    if (v < lo || v > hi) return sks_fail(SKS_ECONFIG, "%s: %s = %lld is outside [%ld, %ld]", path, key, (long long)v, lo, hi);
    *out = (int)v;
    return 0;
}

static int sks__gguf_num(const struct sks_gguf *g, const char *arch, const char *suffix, int required, double dflt,
                         const char *path, double *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t i = sks_gguf_find_key(g, key);
    if (i < 0) {
        if (required) return sks_fail(SKS_ENOTFOUND, "%s: missing metadata key %s", path, key);
        *out = dflt;
        return 0;
    }
    if (sks_gguf_get_f64(g, i, out)) return sks_fail(SKS_EFORMAT, "%s: %s is not a number", path, key);
    /* Converters store eps and theta as f32 (1e-5 becomes 9.99999975e-06): take the
     * shortest decimal that rounds to the same f32, i.e. the value the writer meant. */
    if (sks_gguf_value_type(g, i) == SKS_GGUF_FLOAT32 && isfinite(*out)) {
        float f = (float)*out;
        for (int prec = 1; prec <= 9; prec++) {
            char b[64];
            snprintf(b, sizeof b, "%.*g", prec, (double)f);
            double x = strtod(b, NULL);
            if ((float)x == f) {
                *out = x;
                break;
            }
        }
    }
    return 0;
}

/* Sliding window, softcaps and the second RoPE base: keys only some families carry
 * (llama.cpp src/llama-arch.cpp LLM_KV_NAMES; Gemma 2 defaults to a window of 4096). */
static int sks__gguf_traits(const struct sks_gguf *g, const char *arch, const char *path, sks_arch *a) {
    int rc;
    int dflt_window = !strcmp(a->family, "gemma2") ? 4096 : 0;
    if ((rc = sks__gguf_int(g, arch, "attention.sliding_window", 0, 0, INT_MAX, dflt_window, path, &a->sliding_window)))
        return rc;
    if ((rc = sks__gguf_num(g, arch, "attn_logit_softcapping", 0, 0, path, &a->attn_softcap))) return rc;
    if ((rc = sks__gguf_num(g, arch, "final_logit_softcapping", 0, 0, path, &a->final_softcap))) return rc;
    if ((rc = sks__gguf_num(g, arch, "rope.freq_base_swa", 0, 0, path, &a->rope_theta_local))) return rc;
    /* partial rotary (Phi-3) and longrope's attention factor; the factor lists are the
     * tensors rope_factors_short / rope_factors_long */
    if ((rc = sks__gguf_int(g, arch, "rope.dimension_count", 0, 0, 8192, 0, path, &a->rope_dims))) return rc;
    if (a->rope_dims == a->head_dim) a->rope_dims = 0;
    if (a->rope_dims % 2 || a->rope_dims > a->head_dim)
        return sks_fail(SKS_ECONFIG, "%s: %s.rope.dimension_count %d does not fit head_dim %d", path, arch, a->rope_dims,
                        a->head_dim);
    a->rope_n_factors = (a->rope_dims ? a->rope_dims : a->head_dim) / 2;
    if ((rc = sks__gguf_num(g, arch, "rope.scaling.attn_factor", 0, 0, path, &a->rope_attn_factor))) return rc;
    if (a->attn_softcap < 0 || a->final_softcap < 0 || a->rope_theta_local < 0)
        return sks_fail(SKS_ECONFIG, "%s: negative softcap or rope.freq_base_swa", path);
    char key[128];
    snprintf(key, sizeof key, "%s.attention.sliding_window_pattern", arch);
    int64_t i = sks_gguf_find_key(g, key);
    if (i >= 0 && sks_gguf_value_type(g, i) != SKS_GGUF_ARRAY) {
        int64_t v;
        if (sks_gguf_get_i64(g, i, &v) || v < 0 || v > 100000)
            return sks_fail(SKS_ECONFIG, "%s: %s is not a layer count", path, key);
        a->swa_full_every = (int)v;
    } else if (i >= 0) {
        /* one bool per layer: true = sliding; read when it is "every n-th layer full" */
        uint64_t n = 0;
        int first_full = 0;
        if (sks_gguf_arr_info(g, i, NULL, &n) || n != (uint64_t)a->n_layers)
            return sks_fail(SKS_ECONFIG, "%s: %s does not list %d layers", path, key, a->n_layers);
        for (int pass = 0; pass < 2; pass++)
            for (int l = 0; l < a->n_layers; l++) {
                int64_t v;
                if (sks_gguf_arr_i64(g, i, (uint64_t)l, &v)) return sks_fail(SKS_EFORMAT, "%s: %s[%d]", path, key, l);
                if (!pass && !v && !first_full) first_full = l + 1;
                if (pass && (first_full ? (l + 1) % first_full != 0 : 1) != (v != 0))
                    return sks_fail(SKS_EUNSUPPORTED, "%s: %s: layer %d breaks the pattern 'every %d-th layer full'",
                                    path, key, l, first_full);
            }
        a->swa_full_every = first_full;
    }
    return 0;
}

/* Mixture of experts (llama.cpp's expert_* keys). The expert width is
 * expert_feed_forward_length, else feed_forward_length (Mixtral); the weights are
 * renormalized when expert_weights_norm says so, else as llama.cpp's graph for the
 * architecture does (llama / Mixtral and qwen3moe yes, qwen2moe no). A `llama` file
 * with experts reads as the mixtral row. Which layers are MoE follows from the
 * tensors (sks__open_gguf). */
static int sks__gguf_moe(const struct sks_gguf *g, const char *arch, const char *path, sks_arch *a) {
    int rc, E = 0;
    if ((rc = sks__gguf_int(g, arch, "expert_count", 0, 0, 1 << 16, 0, path, &E))) return rc;
    if (E <= 0) return 0;
    const sks__family *fam = sks__family_named(a->family);
    if (fam && !(fam->flags & SKS__FAM_MOE) && !strcmp(a->family, "llama")) {
        fam = sks__family_named("mixtral");
        sks__family_apply(fam, SKS_FMT_GGUF, a);
    }
    if (!fam || !(fam->flags & SKS__FAM_MOE))
        return sks_fail(SKS_EUNSUPPORTED, "%s: %s.expert_count = %d: experts are not supported for %s", path, arch, E,
                        a->family);
    a->n_experts = E;
    if ((rc = sks__gguf_int(g, arch, "expert_used_count", 1, 1, E, 0, path, &a->n_experts_used))) return rc;
    if ((rc = sks__gguf_int(g, arch, "expert_feed_forward_length", 0, 1, 1 << 22, a->d_ffn, path, &a->d_ffn_expert)))
        return rc;
    if ((rc = sks__gguf_int(g, arch, "expert_shared_feed_forward_length", 0, 0, 1 << 22, 0, path, &a->d_ffn_shared)))
        return rc;
    int norm = strcmp(a->family, "qwen2moe") != 0;
    char key[128];
    snprintf(key, sizeof key, "%s.expert_weights_norm", arch);
    int64_t i = sks_gguf_find_key(g, key), v;
    if (i >= 0) {
        if (sks_gguf_get_i64(g, i, &v)) return sks_fail(SKS_EFORMAT, "%s: %s is not a boolean", path, key);
        norm = v != 0;
    }
    a->moe_norm_topk = norm;
    double scale = 1;
    if ((rc = sks__gguf_num(g, arch, "expert_weights_scale", 0, 1, path, &scale))) return rc;
    if (scale != 1 && scale != 0)
        return sks_fail(SKS_EUNSUPPORTED, "%s: %s.expert_weights_scale = %g is not supported", path, arch, scale);
    return 0;
}

static int sks__gguf_arch(const struct sks_gguf *g, const char *path, sks_arch *a) {
    int64_t ai = sks_gguf_find_key(g, "general.architecture");
    const char *s;
    size_t n;
    if (ai < 0) return sks_fail(SKS_ENOTFOUND, "%s: missing metadata key general.architecture", path);
    if (sks_gguf_get_str(g, ai, &s, &n)) return sks_fail(SKS_EFORMAT, "%s: general.architecture is not a string", path);
    char arch[32];
    if (n >= sizeof arch) n = sizeof arch - 1;
    memcpy(arch, s, n);
    arch[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)arch[i] < 32 || (unsigned char)arch[i] > 126) arch[i] = '?';
    const sks__family *fam = sks__family_gguf(arch);
    if (!fam)
        return sks_fail(SKS_EUNSUPPORTED, "%s: GGUF architecture '%s' is not supported (%s)", path, arch,
                        sks__family_gguf_list());
    /* convert_hf_to_gguf permutes Q/K rows of `llama` to Meta's interleaved pair order;
     * the others stay in the NeoX rotate-half order (the row's flag says which). */
    sks__family_apply(fam, SKS_FMT_GGUF, a);
    int rc;
    if ((rc = sks__gguf_int(g, arch, "block_count", 1, 1, 100000, 0, path, &a->n_layers))) return rc;
    if ((rc = sks__gguf_int(g, arch, "embedding_length", 1, 1, 1 << 20, 0, path, &a->d_model))) return rc;
    if ((rc = sks__gguf_int(g, arch, "feed_forward_length", 1, 1, 1 << 22, 0, path, &a->d_ffn))) return rc;
    if ((rc = sks__gguf_int(g, arch, "attention.head_count", 1, 1, 4096, 0, path, &a->n_heads))) return rc;
    if ((rc = sks__gguf_int(g, arch, "attention.head_count_kv", 0, 1, 4096, a->n_heads, path, &a->n_kv_heads))) return rc;
    if ((rc = sks__gguf_int(g, arch, "attention.key_length", 0, 1, 8192, 0, path, &a->head_dim))) return rc;
    if (a->head_dim == 0) {
        if (a->d_model % a->n_heads)
            return sks_fail(SKS_ECONFIG, "%s: embedding_length %d is not a multiple of head_count %d", path, a->d_model,
                            a->n_heads);
        a->head_dim = a->d_model / a->n_heads;
    }
    if ((rc = sks__gguf_int(g, arch, "context_length", 0, 0, INT_MAX, 0, path, &a->max_seq))) return rc;
    /* LayerNorm families (GPT-2) store their eps under another key */
    if ((rc = sks__gguf_num(g, arch, a->norm_layer ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon", 1,
                            0, path, &a->norm_eps)))
        return rc;
    if ((rc = sks__gguf_num(g, arch, "rope.freq_base", 0, 10000.0, path, &a->rope_theta))) return rc;
    a->rope_scaling = SKS_ROPE_SCALING_NONE;
    a->rope_factor = 1;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    int64_t si = sks_gguf_find_key(g, key);
    if (si >= 0) {
        const char *st;
        size_t sn;
        if (sks_gguf_get_str(g, si, &st, &sn)) return sks_fail(SKS_EFORMAT, "%s: %s is not a string", path, key);
        if (sn == 6 && !memcmp(st, "linear", 6)) {
            a->rope_scaling = SKS_ROPE_SCALING_LINEAR;
            if ((rc = sks__gguf_num(g, arch, "rope.scaling.factor", 1, 1, path, &a->rope_factor))) return rc;
            if (!(a->rope_factor > 0)) return sks_fail(SKS_ECONFIG, "%s: rope.scaling.factor must be positive", path);
        } else if (!(sn == 4 && !memcmp(st, "none", 4))) {
            char raw[33], pb[33];
            snprintf(raw, sizeof raw, "%.*s", (int)(sn > 32 ? 32 : sn), st);
            return sks_fail(SKS_EUNSUPPORTED, "%s: %s = '%s' is not supported (none, linear)", path, key,
                            sks__printable(raw, pb, sizeof pb));
        }
    }
    (void)sks__gguf_int(g, arch, "rope.scaling.original_context_length", 0, 0, INT_MAX, 0, path,
                        &a->rope_original_max_pos);
    if ((rc = sks__gguf_traits(g, arch, path, a))) return rc;
    if ((rc = sks__gguf_moe(g, arch, path, a))) return rc;
    a->bos_id = a->eos_id = -1;
    int64_t v, ti;
    if ((ti = sks_gguf_find_key(g, "tokenizer.ggml.bos_token_id")) >= 0 && !sks_gguf_get_i64(g, ti, &v) && v >= 0 &&
        v <= INT_MAX)
        a->bos_id = (int)v;
    if ((ti = sks_gguf_find_key(g, "tokenizer.ggml.eos_token_id")) >= 0 && !sks_gguf_get_i64(g, ti, &v) && v >= 0 &&
        v <= INT_MAX)
        a->eos_id = (int)v;
    uint64_t nv = 0;
    if ((ti = sks_gguf_find_key(g, "tokenizer.ggml.tokens")) >= 0 && sks_gguf_arr_info(g, ti, NULL, &nv) == 0) {
        if (nv > (1u << 26)) return sks_fail(SKS_ECONFIG, "%s: %llu tokens is too many", path, (unsigned long long)nv);
        a->vocab_size = (int)nv;
    }
    return 0;
}

/* f32/f16/bf16 rows are read through typed pointers: with a small general.alignment an
 * offset can be legal for GGUF and still misaligned for the element type. */
static int sks__gguf_check_aligned(const struct sks_gguf *g, const sks__gguf_tensor *t, sks_dtype d, const char *path,
                                   const char *name) {
    const sks_dtype_info *info = sks_dtype_get(d);
    unsigned esz = info->block == 1 ? info->block_bytes : 1u;
    if ((g->data_off + t->offset) % esz)
        return sks_fail(SKS_EFORMAT, "%s: tensor %s: data at file offset %llu is not aligned to its %u-byte elements", path,
                        name, (unsigned long long)(g->data_off + t->offset), esz);
    return 0;
}

int sks__gguf_tensor_shape(const struct sks_gguf *g, uint64_t i, const char *path, const char *name, sks_dtype *dt,
                           int *ndim, int64_t shape[2]) {
    const sks__gguf_tensor *t = &g->t[i];
    int d = sks_dtype_from_ggml(t->type);
    if (!sks_dtype_convertible((sks_dtype)d))
        return sks_fail(SKS_EDTYPE, "%s: tensor %s: type %s is not a weight type sinkscope converts (docs/gguf-types.md)",
                        path, name, sks__ggml_type_name(t->type));
    for (uint32_t k = 2; k < t->n_dims; k++)
        if (t->ne[k] != 1)
            return sks_fail(SKS_ESHAPE, "%s: tensor %s has %u non-trivial dimensions (want 1 or 2)", path, name, t->n_dims);
    int rc = sks__gguf_check_aligned(g, t, (sks_dtype)d, path, name);
    if (rc) return rc;
    *dt = (sks_dtype)d;
    *ndim = t->n_dims == 1 ? 1 : 2;
    /* ne[0] is the innermost (column) count: shape = (ne[1], ne[0]) */
    shape[0] = *ndim == 1 ? (int64_t)t->ne[0] : (int64_t)t->ne[1];
    shape[1] = *ndim == 1 ? 1 : (int64_t)t->ne[0];
    return 0;
}

int sks__open_gguf(const char *path, void *addr, size_t size, sks_model **out) {
    struct sks_gguf *g = NULL;
    sks_model *m = NULL;
    int rc;
    if ((rc = sks__gguf_parse(addr, size, path, &g))) {
        munmap(addr, size);
        return rc;
    }
    sks_arch a;
    memset(&a, 0, sizeof a);
    if ((rc = sks__gguf_arch(g, path, &a))) goto fail;
    int have_output = 0;
    unsigned char router_seen[SKS_MOE_MAX_LAYERS / 8] = {0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const sks__gguf_tensor *t = &g->t[i];
        sks_role role;
        long layer;
        if (a.n_experts > 0 && t->name_len > 4 && t->name_len < 64 && !memcmp(t->name, "blk.", 4)) {
            /* layers with a router are MoE, the others dense */
            char nb[64];
            snprintf(nb, sizeof nb, "%.*s", (int)t->name_len, t->name);
            long l = strtol(nb + 4, NULL, 10);
            const char *dot = strchr(nb + 4, '.');
            if (dot && !strcmp(dot, ".ffn_gate_inp.weight") && l >= 0 && l < SKS_MOE_MAX_LAYERS)
                router_seen[l / 8] |= (unsigned char)(1u << (l % 8));
        }
        if (!sks__gguf_role(t->name, t->name_len, &role, &layer)) continue;
        if (role == SKS_ROLE_LM_HEAD) have_output = 1;
        /* The embedding's rows (ne[1]) are the vocabulary the weights use; converters may
         * pad it past the token list, so it wins over tokenizer.ggml.tokens. */
        if (role == SKS_ROLE_EMBED && t->n_dims == 2 && t->ne[1] <= (1u << 26)) {
            if (a.vocab_size > 0 && (uint64_t)a.vocab_size != t->ne[1])
                sks_log(SKS_LOG_WARN, "%s: %d tokens in tokenizer.ggml.tokens but token_embd.weight has %llu rows", path,
                        a.vocab_size, (unsigned long long)t->ne[1]);
            a.vocab_size = (int)t->ne[1];
        }
        /* GPT-2: convert_hf_to_gguf writes feed_forward_length = 4 n_embd whatever n_inner
         * is, and context_length = n_ctx, which may differ from the learned positions:
         * the tensors' own sizes win (a warning says so). */
        if (a.ffn_plain && role == SKS_ROLE_W_UP && t->n_dims == 2 && t->ne[1] <= (1u << 22) &&
            t->ne[1] != (uint64_t)a.d_ffn) {
            sks_log(SKS_LOG_INFO, "%s: feed_forward_length %d but ffn_up.weight has %llu rows: using the tensor's", path,
                    a.d_ffn, (unsigned long long)t->ne[1]);
            a.d_ffn = (int)t->ne[1];
        }
        if (a.pos_learned && role == SKS_ROLE_POS_EMBED && t->n_dims == 2 && t->ne[1] <= (1u << 24) &&
            t->ne[1] != (uint64_t)a.max_seq) {
            if (a.max_seq > 0)
                sks_log(SKS_LOG_WARN, "%s: context_length %d but position_embd.weight has %llu rows: using the tensor's",
                        path, a.max_seq, (unsigned long long)t->ne[1]);
            a.max_seq = (int)t->ne[1];
        }
    }
    a.tied_embeddings = !have_output;
    if (a.n_experts > 0) {
        for (int l = 0; l < a.n_layers && l < SKS_MOE_MAX_LAYERS; l++)
            if (!(router_seen[l / 8] >> (l % 8) & 1)) a.moe_dense[l / 8] |= (unsigned char)(1u << (l % 8));
        if (a.d_ffn_shared == 0) {
            /* older files without expert_shared_feed_forward_length: the tensor's rows */
            for (uint64_t i = 0; i < g->n_tensors; i++)
                if (g->t[i].n_dims == 2 && g->t[i].name_len == strlen("blk.0.ffn_gate_shexp.weight") &&
                    !memcmp(g->t[i].name, "blk.0.ffn_gate_shexp.weight", g->t[i].name_len))
                    a.d_ffn_shared = (int)g->t[i].ne[1];
        }
    }
    if (a.vocab_size == 0)
        a.vocab_size = -1; /* neither tokens nor token_embd: validation names the missing tensor */
    if (a.vocab_size < 0) {
        rc = sks_fail(SKS_ENOTFOUND, "%s: no tokenizer.ggml.tokens and no usable token_embd.weight: vocabulary size unknown",
                      path);
        goto fail;
    }
    if ((rc = sks__model_alloc(&a, SKS_FMT_GGUF, path, &m))) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", sks_last_error());
        rc = sks_fail(rc, "%s: %s", path, msg);
        goto fail;
    }
    if ((rc = sks__model_add_map(m, addr, size, path)) < 0) {
        sks_model_close(m);
        goto fail;
    }
    addr = NULL; /* owned by m now */
    m->gguf = g;
    sks__gguf_free_hook = sks__gguf_free;
    const uint8_t *data = (const uint8_t *)m->maps[0].addr + g->data_off;
    const sks__family *fam = sks__family_named(a.family);
    for (uint64_t i = 0; fam && i < g->n_tensors; i++) {
        const sks__gguf_tensor *t = &g->t[i];
        sks_role role = SKS_ROLE_COUNT;
        long layer;
        char name[300];
        snprintf(name, sizeof name, "%.*s", (int)t->name_len, t->name);
        const sks__fused_name *fu = NULL;
        sks__moe_name mn;
        if (sks__moe_match(fam, SKS_FMT_GGUF, name, &mn)) {
            int dtm = sks_dtype_from_ggml(t->type);
            if (!sks_dtype_convertible((sks_dtype)dtm)) {
                rc = sks_fail(SKS_EDTYPE, "%s: tensor %s: type %s is not a weight type sinkscope converts", path, name,
                              sks__ggml_type_name(t->type));
                goto fail_m;
            }
            if ((rc = sks__gguf_check_aligned(g, t, (sks_dtype)dtm, path, name))) goto fail_m;
            int64_t sh[4];
            int nd = (int)t->n_dims;
            for (int k = 0; k < nd; k++) sh[k] = (int64_t)t->ne[nd - 1 - k]; /* outermost first */
            if ((rc = sks__moe_attach(m, &mn, (sks_dtype)dtm, nd, sh, data + t->offset, name, 0))) {
                if (rc != SKS_ENOMEM) rc = sks_fail(rc, "%s: %s", path, sks_last_error());
                goto fail_m;
            }
            continue;
        }
        if (!sks__family_fused(fam, SKS_FMT_GGUF, name, &fu, &layer) &&
            !sks__gguf_role(t->name, t->name_len, &role, &layer)) {
            if (!strcmp(name, "rope_factors_long.weight") || !strcmp(name, "rope_factors_short.weight")) {
                /* Phi-3 longrope: the per-frequency factors, f32 */
                int lng = name[13] == 'l';
                uint64_t n = t->ne[0];
                if (t->type != 0 || t->n_dims != 1 || (int64_t)n != m->arch.rope_n_factors) {
                    rc = sks_fail(SKS_ESHAPE, "%s: %s must be %d f32 values (rope.dimension_count / 2)", path, name,
                                  m->arch.rope_n_factors);
                    goto fail_m;
                }
                const float *fv = (const float *)(data + t->offset);
                for (uint64_t k = 0; k < n; k++) (lng ? m->arch.rope_long : m->arch.rope_short)[k] = fv[k];
                m->arch.rope_scaling = SKS_ROPE_SCALING_LONGROPE;
                continue;
            }
            if (!strcmp(name, "rope_freqs.weight"))
                /* llama.cpp bakes Llama 3 RoPE scaling into per-frequency divisors; the
                 * view keeps plain theta (exact for the high frequencies that dominate
                 * short prompts). */
                sks_log(SKS_LOG_WARN, "%s: rope_freqs.weight (Llama 3 frequency scaling) is ignored", path);
            else
                sks_log(SKS_LOG_DEBUG, "%s: ignoring tensor %s", path, name);
            continue;
        }
        sks_dtype dt;
        int ndim;
        int64_t shape[2];
        if ((rc = sks__gguf_tensor_shape(g, i, path, name, &dt, &ndim, shape))) goto fail_m;
        if (layer >= a.n_layers) {
            rc = sks_fail(SKS_ECONFIG, "%s: tensor %s is for layer %ld but block_count is %d", path, name, layer, a.n_layers);
            goto fail_m;
        }
        if (fu) {
            /* fused q/k/v (attn_qkv) or Phi-3's gate and up rows in one ffn_up */
            if ((rc = sks__model_set_fused(m, fu, (int)layer, dt, ndim, shape, data + t->offset, name))) {
                if (rc == SKS_ESHAPE) rc = sks_fail(SKS_ESHAPE, "%s: %s", path, sks_last_error());
                goto fail_m;
            }
            continue;
        }
        if ((rc = sks_model_set_tensor(m, role, (int)layer, dt, ndim, shape, data + t->offset, name)))
            goto fail_m;
    }
    /* Name a missing tensor as the file would (blk.3.attn_q.bias). */
    sks_role mr;
    int ml;
    if (sks__first_missing(m, &mr, &ml)) {
        char nm[96];
        sks__family_gguf_name(mr, ml, nm, sizeof nm);
        rc = sks_fail(SKS_ENOTFOUND, "%s: tensor %s (%s) is missing for %s with %d layers", path, nm, sks_role_name(mr),
                      a.family, a.n_layers);
        goto fail_m;
    }
    if ((rc = sks_model_validate(m))) goto fail_m;
    *out = m;
    return 0;
fail:
    sks__gguf_free(g);
    if (addr) munmap(addr, size);
    return rc;
fail_m:
    sks_model_close(m); /* frees g and the mapping */
    return rc;
}
