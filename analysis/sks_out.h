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
/* key + value shorthands (inside a map) */
void sks_out_kstr(sks_out *o, const char *k, const char *v);
void sks_out_kint(sks_out *o, const char *k, int64_t v);
void sks_out_kf64(sks_out *o, const char *k, double v);
void sks_out_kbool(sks_out *o, const char *k, int v);
/* Typed array {dtype: "f32"|"f64"|"i32", shape: [...], data: bin}. */
void sks_out_f32_array(sks_out *o, const float *data, int ndim, const int64_t *shape);
void sks_out_f64_array(sks_out *o, const double *data, int ndim, const int64_t *shape);
void sks_out_i32_array(sks_out *o, const int32_t *data, int ndim, const int64_t *shape);
/* The architecture summary map written under `model`. */
void sks_out_model(sks_out *o, const sks_model *m);

/* Write the buffer to path atomically (path.tmp.<pid> + fsync + rename). */
int sks_out_write_file(sks_out *o, const char *path);

/* Write any bytes atomically (same protocol). */
int sks_write_file_atomic(const char *path, const void *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif
