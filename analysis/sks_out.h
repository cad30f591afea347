/* sks_out.h - msgpack result writer (SPEC section 5).
 *
 * Sticky errors in the mpack habit: calls after a failure do nothing, and the single
 * check is sks_out_write_file / sks_out_error at the end. Every result file is a root
 * map with `schema` ("sinkscope.<analysis>/<version>"), `model` (architecture summary),
 * `params` and the results. Large arrays are maps {dtype, shape, data} with data the
 * little-endian bytes, readable with numpy.frombuffer.
 */
#ifndef SKS_OUT_H
#define SKS_OUT_H

#include "../loaders/sks_model.h"

#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    int err;
} sks_out;

void sks_out_init(sks_out *o);
void sks_out_free(sks_out *o);
int sks_out_error(const sks_out *o);

void sks_out_map(sks_out *o, size_t n);
void sks_out_array(sks_out *o, size_t n);
void sks_out_str(sks_out *o, const char *s);
void sks_out_int(sks_out *o, int64_t v);
void sks_out_f64(sks_out *o, double v);
void sks_out_bool(sks_out *o, int v);
void sks_out_nil(sks_out *o);
/* s, or nil when s is NULL */
void sks_out_str_or_nil(sks_out *o, const char *s);
/* Raw bytes as a msgpack bin (f64 arrays bitwise, for parts and gathers). */
void sks_out_bin(sks_out *o, const void *p, size_t n);
/* key + value shorthands (inside a map) */
void sks_out_kstr(sks_out *o, const char *k, const char *v);
void sks_out_kint(sks_out *o, const char *k, int64_t v);
void sks_out_kf64(sks_out *o, const char *k, double v);
void sks_out_kbool(sks_out *o, const char *k, int v);
/* a key, then the header of an array or map of n entries that the caller writes */
void sks_out_karray(sks_out *o, const char *k, size_t n);
void sks_out_kmap(sks_out *o, const char *k, size_t n);
/* a key, then the array of the n ints v[0..n) */
void sks_out_kints(sks_out *o, const char *k, const int *v, int n);
/* Typed array {dtype: "f32"|"f64"|"i32", shape: [...], data: bin}. */
void sks_out_f32_array(sks_out *o, const float *data, int ndim, const int64_t *shape);
void sks_out_f64_array(sks_out *o, const double *data, int ndim, const int64_t *shape);
void sks_out_i32_array(sks_out *o, const int32_t *data, int ndim, const int64_t *shape);
/* A key, then its array. */
void sks_out_kf32_array(sks_out *o, const char *k, const float *data, int ndim, const int64_t *shape);
void sks_out_kf64_array(sks_out *o, const char *k, const double *data, int ndim, const int64_t *shape);
void sks_out_ki32_array(sks_out *o, const char *k, const int32_t *data, int ndim, const int64_t *shape);
/* The architecture summary map written under `model`. */
void sks_out_model(sks_out *o, const sks_model *m);
/* A root map of n entries, its first two written: `schema` and `model`. */
void sks_out_head(sks_out *o, size_t n, const char *schema, const sks_model *m);
/* sks_out_init, then sks_out_head: the first call of every result writer (sks_out_finish
 * is its last). */
void sks_out_begin(sks_out *o, size_t n, const char *schema, const sks_model *m);
/* The spike rule's four parameters (sks_rule.h) as the keys outlier, abs, ratio and
 * min_blocks of the map being written, in that order (trace, sinks, quant-risk params). */
void sks_out_spike_rule(sks_out *o, double outlier, double abs_thresh, double ratio, int min_blocks);
/* Resume manifests of a mixture-of-experts model: the key "moe" and what the model map
 * leaves out (experts, experts per token, widths, normalization, the MoE layers);
 * nothing for a dense model. sks_out_moe_inputs_n: the keys it adds (0 or 1). */
int sks_out_moe_inputs_n(const sks_arch *a);
void sks_out_moe_inputs(sks_out *o, const sks_arch *a);

/* JSON summaries (jansson): a number, or null when it is NaN or Inf (json_real refuses
 * those, and a refused value would silently shorten an array or drop a key); and the
 * model's non-finite tensors (--allow-nonfinite) added to root as
 * "nonfinite_tensors": [{name, nonfinite, size}], nothing when there are none. */
struct json_t *sks_json_num(double v);
/* An array of n ints. */
struct json_t *sks_json_ints(const int *v, int n);
void sks_json_add_nonfinite(struct json_t *root);

/* Write the buffer to path atomically (path.tmp.<pid> + fsync + rename). */
int sks_out_write_file(sks_out *o, const char *path);
/* sks_out_write_file, then sks_out_free: the last call of every result writer. */
int sks_out_finish(sks_out *o, const char *path);

/* "dir/name", malloc'd (NULL when out of memory); for the files of a result folder. */
char *sks__path_join(const char *dir, const char *name);

/* Write any bytes atomically (same protocol). */
int sks_write_file_atomic(const char *path, const void *data, size_t n);

/* ---- reading back (analysis/msgpack_in.c) ------------------------------------------ */

/* Read a whole file (at most 2 GiB): 1 with *buf malloc'd, 0 when it does not exist,
 * < 0 (message naming the file) when it cannot be read. */
int sks_read_file(const char *path, uint8_t **buf, size_t *n);

/* 0 when buf[off..n) starts with one well-formed msgpack object whose every declared
 * array/map count and string/bin/ext length fits in the bytes left (*end, may be NULL,
 * receives its end); -1 otherwise. Call it before msgpack_unpack_next on untrusted
 * bytes: msgpack-c allocates from declared counts before reading the elements. */
int sks_msgpack_check(const uint8_t *buf, size_t n, size_t off, size_t *end);

/* Decode the object at buf[*off..n) (off NULL: at 0) into u (initialized by the caller,
 * who destroys it) after sks_msgpack_check; *off moves past it. 0, or -1 when no
 * well-formed object starts there (nothing left, truncated, corrupt). */
int sks_mp_unpack(msgpack_unpacked *u, const uint8_t *buf, size_t n, size_t *off);

/* Typed readers of decoded objects; each returns 0, or -1 when the object has another
 * type or size (-2: out of memory). */
const msgpack_object *sks_mp_get(const msgpack_object *map, const char *key); /* NULL: absent */
int sks_mp_int(const msgpack_object *o, int64_t lo, int64_t hi, int *v);      /* integer in [lo, hi] */
int sks_mp_bin(const msgpack_object *o, size_t n, void **out);   /* bin of n bytes, copied (malloc'd) */
int sks_mp_bin_into(const msgpack_object *o, void *dst, size_t n); /* bin of n bytes into dst */

#ifdef __cplusplus
}
#endif
#endif
