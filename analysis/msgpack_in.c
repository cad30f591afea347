/* msgpack_in.c - reading back what sinkscope wrote: whole files, a pre-check of untrusted
 * msgpack, and typed field readers (sks_out.h). */
#include "sks_out.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int sks_read_file(const char *path, uint8_t **buf, size_t *n) {
    *buf = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0 || (uint64_t)st.st_size > ((uint64_t)1 << 31)) {
        fclose(f);
        return sks_fail(SKS_EFORMAT, "%s: unreadable or larger than 2 GiB", path);
    }
    size_t len = (size_t)st.st_size;
    int rc = sks_fread_all(f, len, path, buf);
    if (rc) return rc;
    *n = len;
    return 1;
}

/* ---- msgpack pre-check ------------------------------------------------------------------ */

/* msgpack-c allocates the objects of an array or map from its declared count before
 * the elements are read, so five hostile bytes can ask for 64 GiB. Walk the encoding
 * first: every element takes at least one byte, so a count above the bytes left is a
 * lie; strings, bins and exts must fit. Iterative (a pending-element counter), O(n). */
int sks_msgpack_check(const uint8_t *buf, size_t n, size_t off, size_t *end) {
    uint64_t pending = 1;
    size_t p = off;
#define SKS__NEED(k)                                                                                           \
    do {                                                                                                       \
        if ((uint64_t)(k) > (uint64_t)(n - p)) return -1;                                                      \
    } while (0)
    while (pending) {
        SKS__NEED(1);
        const uint8_t c = buf[p++];
        pending--;
        uint64_t len = 0, items = 0;
        int lbytes = 0, kind = 0; /* kind: 0 scalar, 1 raw (len bytes), 2 array, 3 map, 4 ext (len + 1) */
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
            kind = 0;
        } else if (c >= 0x80 && c <= 0x8f) {
            kind = 3, items = c & 0x0f;
        } else if (c >= 0x90 && c <= 0x9f) {
            kind = 2, items = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            kind = 1, len = c & 0x1f;
        } else {
            switch (c) {
            case 0xc4: case 0xd9: kind = 1, lbytes = 1; break;
            case 0xc5: case 0xda: kind = 1, lbytes = 2; break;
            case 0xc6: case 0xdb: kind = 1, lbytes = 4; break;
            case 0xc7: kind = 4, lbytes = 1; break;
            case 0xc8: kind = 4, lbytes = 2; break;
            case 0xc9: kind = 4, lbytes = 4; break;
            case 0xca: case 0xce: case 0xd2: SKS__NEED(4); p += 4; break;
            case 0xcb: case 0xcf: case 0xd3: SKS__NEED(8); p += 8; break;
            case 0xcc: case 0xd0: SKS__NEED(1); p += 1; break;
            case 0xcd: case 0xd1: SKS__NEED(2); p += 2; break;
            case 0xd4: SKS__NEED(2); p += 2; break;
            case 0xd5: SKS__NEED(3); p += 3; break;
            case 0xd6: SKS__NEED(5); p += 5; break;
            case 0xd7: SKS__NEED(9); p += 9; break;
            case 0xd8: SKS__NEED(17); p += 17; break;
            case 0xdc: kind = 2, lbytes = 2; break;
            case 0xdd: kind = 2, lbytes = 4; break;
            case 0xde: kind = 3, lbytes = 2; break;
            case 0xdf: kind = 3, lbytes = 4; break;
            default: return -1; /* 0xc1 is never used */
            }
        }
        if (lbytes) {
            SKS__NEED(lbytes);
            uint64_t v = 0;
            for (int i = 0; i < lbytes; i++) v = (v << 8) | buf[p + (size_t)i];
            p += (size_t)lbytes;
            if (kind == 2 || kind == 3) items = v;
            else len = v;
        }
        if (kind == 1) {
            SKS__NEED(len);
            p += (size_t)len;
        } else if (kind == 4) {
            SKS__NEED(len + 1);
            p += (size_t)len + 1;
        } else if (kind == 2 || kind == 3) {
            uint64_t k = kind == 3 ? 2 * items : items;
            SKS__NEED(k);
            pending += k;
            if (pending > (uint64_t)(n - p)) return -1;
        }
    }
#undef SKS__NEED
    if (end) *end = p;
    return 0;
}

int sks_mp_unpack(msgpack_unpacked *u, const uint8_t *buf, size_t n, size_t *off) {
    const size_t at = off ? *off : 0;
    if (at >= n || sks_msgpack_check(buf, n, at, NULL)) return -1;
    return msgpack_unpack_next(u, (const char *)buf, n, off) == MSGPACK_UNPACK_SUCCESS ? 0 : -1;
}

/* ---- typed readers ------------------------------------------------------------------- */

const msgpack_object *sks_mp_get(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && !memcmp(k->via.str.ptr, key, kl))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int sks_mp_int(const msgpack_object *o, int64_t lo, int64_t hi, int *v) {
    int64_t x;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX) return -1;
        x = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        x = o->via.i64;
    } else {
        return -1;
    }
    if (x < lo || x > hi) return -1;
    *v = (int)x;
    return 0;
}

/* A bin of exactly n bytes copied into a fresh allocation (NULL allowed when n = 0). */
int sks_mp_bin(const msgpack_object *o, size_t n, void **out) {
    *out = NULL;
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != n) return -1;
    if (!n) return 0;
    *out = malloc(n);
    if (!*out) return -2;
    memcpy(*out, o->via.bin.ptr, n);
    return 0;
}

int sks_mp_bin_into(const msgpack_object *o, void *dst, size_t n) {
    if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != n) return -1;
    if (n) memcpy(dst, o->via.bin.ptr, n);
    return 0;
}
