/* sks_gguf.h - read access to GGUF metadata (for tokenizers and inspect).
 *
 * GGUF v2/v3 (ggml docs/gguf.md): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * then n_kv (string key, u32 type, value) and n_tensors tensor infos (name, u32 n_dims,
 * u64 ne[n_dims] innermost first, u32 type, u64 offset), padding to general.alignment
 * (default 32), tensor data. Every string and array is bounds-checked at open; the
 * accessors below only hand out views that were validated then. Strings are NOT
 * NUL-terminated: use the length.
 */
#ifndef SKS_GGUF_H
#define SKS_GGUF_H

#include "sks_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SKS_GGUF_UINT8 = 0, SKS_GGUF_INT8 = 1, SKS_GGUF_UINT16 = 2, SKS_GGUF_INT16 = 3,
    SKS_GGUF_UINT32 = 4, SKS_GGUF_INT32 = 5, SKS_GGUF_FLOAT32 = 6, SKS_GGUF_BOOL = 7,
    SKS_GGUF_STRING = 8, SKS_GGUF_ARRAY = 9, SKS_GGUF_UINT64 = 10, SKS_GGUF_INT64 = 11,
    SKS_GGUF_FLOAT64 = 12
} sks_gguf_type;

struct sks_gguf;

uint32_t sks_gguf_version(const struct sks_gguf *g);
int64_t sks_gguf_n_kv(const struct sks_gguf *g);
/* Index of key, or -1. */
int64_t sks_gguf_find_key(const struct sks_gguf *g, const char *key);
const char *sks_gguf_key(const struct sks_gguf *g, int64_t idx, size_t *len);
sks_gguf_type sks_gguf_value_type(const struct sks_gguf *g, int64_t idx);
/* Scalar values; any numeric/bool type converts. SKS_EFORMAT if the type differs. */
int sks_gguf_get_i64(const struct sks_gguf *g, int64_t idx, int64_t *out);
int sks_gguf_get_f64(const struct sks_gguf *g, int64_t idx, double *out);
int sks_gguf_get_str(const struct sks_gguf *g, int64_t idx, const char **s, size_t *len);
/* Arrays. */
int sks_gguf_arr_info(const struct sks_gguf *g, int64_t idx, sks_gguf_type *elem, uint64_t *n);
int sks_gguf_arr_str(const struct sks_gguf *g, int64_t idx, uint64_t i, const char **s, size_t *len);
int sks_gguf_arr_i64(const struct sks_gguf *g, int64_t idx, uint64_t i, int64_t *out);
int sks_gguf_arr_f64(const struct sks_gguf *g, int64_t idx, uint64_t i, double *out);

#ifdef __cplusplus
}
#endif
#endif
