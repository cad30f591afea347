/* fuzz-gguf.c - libFuzzer target for the GGUF header parser and its metadata
 * accessors. Input: the bytes of a GGUF image (seed with real .gguf headers). Every
 * accessor is called on every key of an accepted image, and every tensor span is
 * checked to lie inside the image. */
#include <stddef.h>
#include <stdint.h>

#include "loaders/formats_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sks_log_set_level(-1);
    struct sks_gguf *g = NULL;
    if (sks__gguf_parse(data, size, "fuzz.gguf", &g) != 0) return 0;
    volatile double sink = 0;
    for (int64_t i = 0; i < sks_gguf_n_kv(g); i++) {
        size_t kl;
        const char *k = sks_gguf_key(g, i, &kl);
        if (!k || sks_gguf_find_key(g, "general.architecture") < -1) __builtin_trap();
        int64_t v;
        double x;
        const char *s;
        size_t n;
        if (sks_gguf_get_i64(g, i, &v) == 0) sink += (double)v;
        if (sks_gguf_get_f64(g, i, &x) == 0) sink += x;
        if (sks_gguf_get_str(g, i, &s, &n) == 0) {
            if (s < (const char *)data || s + n > (const char *)data + size) __builtin_trap();
            if (n) sink += (unsigned char)s[n - 1];
        }
        sks_gguf_type et;
        uint64_t cnt;
        if (sks_gguf_arr_info(g, i, &et, &cnt) == 0) {
            for (uint64_t j = 0; j < cnt && j < 64; j++) {
                if (sks_gguf_arr_str(g, i, j, &s, &n) == 0) {
                    if (s < (const char *)data || s + n > (const char *)data + size) __builtin_trap();
                    if (n) sink += (unsigned char)s[0];
                }
                if (sks_gguf_arr_i64(g, i, j, &v) == 0) sink += (double)v;
                if (sks_gguf_arr_f64(g, i, j, &x) == 0) sink += x;
            }
            if (cnt && sks_gguf_arr_i64(g, i, cnt, &v) == 0) __builtin_trap(); /* past the end */
        }
    }
    uint64_t off = sks__gguf_data_offset(g);
    for (uint64_t i = 0; i < sks__gguf_n_tensors(g); i++) {
        const sks__gguf_tensor *t = sks__gguf_tensor_info(g, i);
        if (off > size || t->offset > size - off || t->nbytes > size - off - t->offset) __builtin_trap();
        if (t->nbytes) sink += data[off + t->offset + t->nbytes - 1];
    }
    (void)sink;
    sks__gguf_free(g);
    return 0;
}
