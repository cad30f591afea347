/* dtype.c - the dtype table (one row per element type) and row conversion to f32/f64.
 *
 * Adding a tensor type is one row here, its kernel and _ref twin in quant.c, a
 * quantizer in quantize.c if it should be written, and its tests (test-quant.c).
 * bf16: the top 16 bits of an IEEE f32 (widening is exact); f16: IEEE half (exact).
 * The quantized layouts are described in quant.c.
 */
#include "formats_internal.h"
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A type sinkscope reads and writes, one it only reads, one it only knows the size of. */
#define SKS__ROWQ(dt, nm, id, blk, bytes, k)                                                                 \
    [dt] = {nm, id, blk, bytes, 8.0 * (bytes) / (blk), sks__##k##_to_f32, sks__##k##_to_f32_ref, \
            sks__##k##_from_f32}
#define SKS__ROW(dt, nm, id, blk, bytes, k) \
    [dt] = {nm, id, blk, bytes, 8.0 * (bytes) / (blk), sks__##k##_to_f32, sks__##k##_to_f32_ref, NULL}
#define SKS__ROW_NOCONV(dt, nm, id, blk, bytes) [dt] = {nm, id, blk, bytes, 8.0 * (bytes) / (blk), NULL, NULL, NULL}

/* The GGUF type ids are ggml's (ggml.h enum ggml_type). */
static const sks_dtype_info sks__dtypes[SKS_DT_COUNT] = {
    SKS__ROWQ(SKS_DT_F32, "F32", 0, 1, 4, f32),
    SKS__ROWQ(SKS_DT_F16, "F16", 1, 1, 2, f16),
    SKS__ROWQ(SKS_DT_BF16, "BF16", 30, 1, 2, bf16),
    SKS__ROWQ(SKS_DT_Q4_0, "Q4_0", 2, 32, 18, q4_0),
    SKS__ROWQ(SKS_DT_Q4_1, "Q4_1", 3, 32, 20, q4_1),
    SKS__ROWQ(SKS_DT_Q5_0, "Q5_0", 6, 32, 22, q5_0),
    SKS__ROWQ(SKS_DT_Q5_1, "Q5_1", 7, 32, 24, q5_1),
    SKS__ROWQ(SKS_DT_Q8_0, "Q8_0", 8, 32, 34, q8_0),
    SKS__ROWQ(SKS_DT_Q8_1, "Q8_1", 9, 32, 36, q8_1),
    SKS__ROWQ(SKS_DT_Q2_K, "Q2_K", 10, 256, 84, q2_k),
    SKS__ROWQ(SKS_DT_Q3_K, "Q3_K", 11, 256, 110, q3_k),
    SKS__ROWQ(SKS_DT_Q4_K, "Q4_K", 12, 256, 144, q4_k),
    SKS__ROWQ(SKS_DT_Q5_K, "Q5_K", 13, 256, 176, q5_k),
    SKS__ROWQ(SKS_DT_Q6_K, "Q6_K", 14, 256, 210, q6_k),
    SKS__ROWQ(SKS_DT_Q8_K, "Q8_K", 15, 256, 292, q8_k),
    SKS__ROWQ(SKS_DT_IQ2_XXS, "IQ2_XXS", 16, 256, 66, iq2_xxs),
    SKS__ROWQ(SKS_DT_IQ2_XS, "IQ2_XS", 17, 256, 74, iq2_xs),
    SKS__ROWQ(SKS_DT_IQ3_XXS, "IQ3_XXS", 18, 256, 98, iq3_xxs),
    SKS__ROWQ(SKS_DT_IQ1_S, "IQ1_S", 19, 256, 50, iq1_s),
    SKS__ROWQ(SKS_DT_IQ4_NL, "IQ4_NL", 20, 32, 18, iq4_nl),
    SKS__ROWQ(SKS_DT_IQ3_S, "IQ3_S", 21, 256, 110, iq3_s),
    SKS__ROWQ(SKS_DT_IQ2_S, "IQ2_S", 22, 256, 82, iq2_s),
    SKS__ROWQ(SKS_DT_IQ4_XS, "IQ4_XS", 23, 256, 136, iq4_xs),
    SKS__ROW_NOCONV(SKS_DT_I8, "I8", 24, 1, 1),
    SKS__ROW_NOCONV(SKS_DT_I16, "I16", 25, 1, 2),
    SKS__ROW_NOCONV(SKS_DT_I32, "I32", 26, 1, 4),
    SKS__ROW_NOCONV(SKS_DT_I64, "I64", 27, 1, 8),
    SKS__ROW_NOCONV(SKS_DT_F64, "F64", 28, 1, 8),
    SKS__ROWQ(SKS_DT_IQ1_M, "IQ1_M", 29, 256, 56, iq1_m),
    SKS__ROWQ(SKS_DT_TQ1_0, "TQ1_0", 34, 256, 54, tq1_0),
    SKS__ROWQ(SKS_DT_TQ2_0, "TQ2_0", 35, 256, 66, tq2_0),
    SKS__ROWQ(SKS_DT_MXFP4, "MXFP4", 39, 32, 17, mxfp4),
};

const sks_dtype_info *sks_dtype_get(sks_dtype dt) {
    return (int)dt >= 0 && dt < SKS_DT_COUNT ? &sks__dtypes[dt] : NULL;
}

int sks_dtype_from_ggml(uint32_t ggml_type) {
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if ((uint32_t)sks__dtypes[d].ggml_type == ggml_type) return d;
    return -1;
}

int sks_dtype_from_name(const char *name) {
    for (int d = 0; name && d < SKS_DT_COUNT; d++)
        if (!strcasecmp(sks__dtypes[d].name, name)) return d;
    return -1;
}

int sks_dtype_convertible(sks_dtype dt) {
    const sks_dtype_info *r = sks_dtype_get(dt);
    return r && r->to_f32;
}

const char *sks_dtype_name(sks_dtype dt) {
    const sks_dtype_info *r = sks_dtype_get(dt);
    return r ? r->name : "?";
}

int sks_dtype_nbytes(sks_dtype dt, uint64_t n, uint64_t *out) {
    const sks_dtype_info *r = sks_dtype_get(dt);
    if (!r) return SKS_EDTYPE;
    if (n % r->block) return SKS_ESHAPE;
    return sks_mul_u64(n / r->block, r->block_bytes, out);
}

void sks_bf16_to_f32_ref(const uint16_t *in, float *out, size_t n) { sks__bf16_to_f32_ref(in, out, n); }
void sks_bf16_to_f32(const uint16_t *in, float *out, size_t n) { sks__bf16_to_f32(in, out, n); }
void sks_f16_to_f32_ref(const uint16_t *in, float *out, size_t n) { sks__f16_to_f32_ref(in, out, n); }
void sks_f16_to_f32(const uint16_t *in, float *out, size_t n) { sks__f16_to_f32(in, out, n); }
void sks_q8_0_to_f32(const void *in, float *out, size_t n) { sks__q8_0_to_f32(in, out, n); }
void sks_q4_0_to_f32(const void *in, float *out, size_t n) { sks__q4_0_to_f32(in, out, n); }

uint16_t sks_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t sks_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t s = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00u); /* overflow -> inf (>= 65520) */
    if (a < 0x38800000u) {                                 /* subnormal or zero in f16 */
        float f;
        memcpy(&f, &a, 4);
        /* round to nearest even multiple of 2^-24 */
        float q = f * 16777216.0f;
        float r = nearbyintf(q);
        return (uint16_t)(s | (uint32_t)r);
    }
    uint32_t mant = a & 0x7fffffu, e = (a >> 23) - 112;
    uint32_t h = (e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(s | h);
}

/* Checks rows [row0, row0 + nrows) against t; *cols and *row_bytes (may be NULL) get the
 * row's length and size. */
static int sks__row_span(const sks_tensor *t, int64_t row0, int64_t nrows, int64_t *cols, size_t *row_bytes) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1;
    int64_t c = t->ndim == 2 ? t->shape[1] : t->shape[0];
    if (row0 < 0 || nrows < 0 || row0 > rows || nrows > rows - row0)
        return sks_fail(SKS_EBOUNDS, "%s: rows [%lld, %lld) outside [0, %lld)", t->name, (long long)row0,
                        (long long)(row0 + nrows), (long long)rows);
    uint64_t rb;
    int rc = sks_dtype_nbytes(t->dtype, (uint64_t)c, &rb);
    if (rc) return sks_fail(rc, "%s: bad row size", t->name);
    *cols = c;
    if (row_bytes) *row_bytes = (size_t)rb;
    return 0;
}

int sks_tensor_rows_f32(const sks_tensor *t, int64_t row0, int64_t nrows, float *out) {
    int rc = sks__tensor_rows_f32_unchecked(t, row0, nrows, out);
    if (rc) return rc;
    return sks__nonfinite_check(t, out, (size_t)nrows * (size_t)sks_tensor_cols(t));
}

int sks_tensor_tile_f32(const sks_tensor *t, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float *out) {
    int64_t c = 0; /* set by sks__row_span on success */
    size_t rb = 0;
    int rc = sks__row_span(t, row0, nrows, &c, &rb);
    if (rc) return rc;
    const sks_dtype_info *info = sks_dtype_get(t->dtype);
    if (!info || !info->to_f32 || (t->tstride > 0 && t->ndim == 2))
        return sks_fail(SKS_EDTYPE, "%s: tensor type %s is not converted by tiles", t->name, sks_dtype_name(t->dtype));
    if (col0 < 0 || ncols < 0 || col0 > c || ncols > c - col0 || col0 % info->block || ncols % info->block)
        return sks_fail(SKS_EBOUNDS, "%s: columns [%lld, %lld) are not whole blocks of [0, %lld)", t->name,
                        (long long)col0, (long long)(col0 + ncols), (long long)c);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * rb + (size_t)(col0 / info->block) * info->block_bytes;
    for (int64_t r = 0; r < nrows; r++) info->to_f32(src + (size_t)r * rb, out + (size_t)r * (size_t)ncols, (size_t)ncols);
    return sks__nonfinite_check(t, out, (size_t)nrows * (size_t)ncols);
}

/* Rows of a transposed view (tstride > 0): view row r is stored column r. For each
 * stored row c, the run of view rows [r, r + 64) is contiguous there: converted at once
 * (the dtype's own kernel) and written to column c of those output rows. */
static int sks__rows_f32_transposed(const sks_tensor *t, int64_t row0, int64_t nrows, int64_t cols, float *out) {
    enum { TILE = 64 };
    const sks_dtype_info *info = sks_dtype_get(t->dtype);
    if (!info || !info->to_f32 || info->block != 1)
        return sks_fail(SKS_EDTYPE, "%s: a transposed view of type %s is not converted", t->name,
                        sks_dtype_name(t->dtype));
    const size_t esz = info->block_bytes;
    float tile[TILE];
    for (int64_t r = 0; r < nrows; r += TILE) {
        const int64_t nr = nrows - r < TILE ? nrows - r : TILE;
        for (int64_t c = 0; c < cols; c++) {
            info->to_f32((const uint8_t *)t->data + ((size_t)c * (size_t)t->tstride + (size_t)(row0 + r)) * esz, tile,
                         (size_t)nr);
            for (int64_t k = 0; k < nr; k++) out[(size_t)(r + k) * (size_t)cols + (size_t)c] = tile[k];
        }
    }
    return 0;
}

int sks__tensor_rows_f32_unchecked(const sks_tensor *t, int64_t row0, int64_t nrows, float *out) {
    int64_t c = 0; /* set by sks__row_span on success; -O3 cannot see that sks_fail is non-zero */
    size_t rb = 0;
    int rc = sks__row_span(t, row0, nrows, &c, &rb);
    if (rc) return rc;
    if (t->tstride > 0 && t->ndim == 2) return sks__rows_f32_transposed(t, row0, nrows, c, out);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * rb;
    const sks_dtype_info *info = sks_dtype_get(t->dtype);
    if (!info || !info->to_f32)
        return sks_fail(SKS_EDTYPE, "%s: tensor type %s is not converted", t->name, sks_dtype_name(t->dtype));
    info->to_f32(src, out, (size_t)nrows * (size_t)c);
    return 0;
}

int sks_tensor_rows_f64(const sks_tensor *t, int64_t row0, int64_t nrows, double *out) {
    int64_t c = 0; /* set by sks__row_span on success; -O3 cannot see that sks_fail is non-zero */
    int rc = sks__row_span(t, row0, nrows, &c, NULL);
    if (rc) return rc;
    float *tmp = sks_malloc_n((size_t)c, sizeof *tmp);
    if (!tmp) return sks_fail(SKS_ENOMEM, "%s: out of memory", t->name);
    for (int64_t r = 0; r < nrows; r++) {
        rc = sks_tensor_rows_f32(t, row0 + r, 1, tmp);
        if (rc) break;
        for (int64_t j = 0; j < c; j++) out[(size_t)r * (size_t)c + (size_t)j] = (double)tmp[j];
    }
    free(tmp);
    return rc;
}
