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

/* ---- writer (gguf_write.c) ----------------------------------------------------------
 * GGUF v3, alignment 32. Usage: new; set_* metadata and add_tensor for every tensor (ne
 * innermost first: ne[0] = columns); begin(path) writes the header; data() streams the
 * tensors' bytes in the order they were added (any chunk size; padding is added); finish()
 * closes and checks that every tensor got its bytes. The first error sticks: every later
 * call returns it, so callers may check only finish(). Free with sks_gguf_writer_free. */
typedef struct sks_gguf_writer sks_gguf_writer;
int sks_gguf_writer_new(sks_gguf_writer **out);
void sks_gguf_writer_free(sks_gguf_writer *w); /* closes an unfinished file; NULL is a no-op */
int sks_gguf_writer_set_str(sks_gguf_writer *w, const char *key, const char *val);
int sks_gguf_writer_set_u32(sks_gguf_writer *w, const char *key, uint32_t val);
int sks_gguf_writer_set_i32(sks_gguf_writer *w, const char *key, int32_t val);
int sks_gguf_writer_set_f32(sks_gguf_writer *w, const char *key, float val);
int sks_gguf_writer_set_bool(sks_gguf_writer *w, const char *key, int val);
int sks_gguf_writer_set_arr_str(sks_gguf_writer *w, const char *key, const char *const *v, size_t n);
int sks_gguf_writer_set_arr_i32(sks_gguf_writer *w, const char *key, const int32_t *v, size_t n);
int sks_gguf_writer_set_arr_f32(sks_gguf_writer *w, const char *key, const float *v, size_t n);
int sks_gguf_writer_add_tensor(sks_gguf_writer *w, const char *name, sks_dtype dt, uint32_t n_dims,
                               const uint64_t ne[]);
int sks_gguf_writer_begin(sks_gguf_writer *w, const char *path);
int sks_gguf_writer_data(sks_gguf_writer *w, const void *data, size_t n);
int sks_gguf_writer_finish(sks_gguf_writer *w);

/* Which type each tensor of a file gets. A scheme is one type (any with a quantizer,
 * "q4_k", "f16": every matrix in it) or a llama.cpp-like mix: q4_k_m / q5_k_m (base type,
 * Q6_K for output.weight and for attn_v / ffn_down in the layers llama.cpp gives more
 * bits), q4_k_s / q5_k_s (base, Q6_K output), q3_k_m (Q3_K; Q4_K attn_v / attn_output /
 * ffn_down, Q5_K attn_v of layers 0-1; Q6_K output). Vectors are always F32. A matrix whose
 * rows do not tile the type's blocks falls back as llama.cpp does (Q4_K -> Q5_0,
 * Q5_K -> Q5_1, Q6_K -> Q8_0, others -> IQ4_NL), then to F16 if rows are not a multiple
 * of 32. The mixes resemble llama.cpp's, they are not byte-identical. */
typedef struct {
    char name[16];
    sks_dtype base;
    int kind; /* 0 one type, 1 _S, 2 _M, 3 q3_k_m */
} sks_gguf_scheme;
int sks_gguf_scheme_parse(const char *name, sks_gguf_scheme *out);
sks_dtype sks_gguf_scheme_type(const sks_gguf_scheme *s, sks_role role, int layer, int n_layers, int ndim,
                               int64_t cols);

/* The GGUF (llama.cpp) name of the tensor of (role, layer): "blk.3.attn_q.weight",
 * "token_embd.weight". Returns buf, or NULL if cap is too small. */
const char *sks_gguf_tensor_name(sks_role role, int layer, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
