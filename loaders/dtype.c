/* dtype.c - element types and row conversion to f32/f64.
 *
 * bf16: the top 16 bits of an IEEE f32, so widening is a shift (exact).
 * f16: IEEE half; subnormals, inf and NaN widened exactly.
 * Q8_0: blocks of 32 values: f16 scale d, then 32 int8 q; x = d * q.
 * Q4_0: blocks of 32 values: f16 scale d, then 16 bytes; byte j holds element j in its
 *       low nibble and element j+16 in its high nibble; x = d * (nibble - 8).
 */
#include "formats_internal.h"
#include "sks_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *sks_dtype_name(sks_dtype dt) {
    switch (dt) {
    case SKS_DT_F32: return "F32";
    case SKS_DT_F16: return "F16";
    case SKS_DT_BF16: return "BF16";
    case SKS_DT_Q8_0: return "Q8_0";
    case SKS_DT_Q4_0: return "Q4_0";
    default: return "?";
    }
}

int sks_dtype_nbytes(sks_dtype dt, uint64_t n, uint64_t *out) {
    switch (dt) {
    case SKS_DT_F32: return sks_mul_u64(n, 4, out);
    case SKS_DT_F16:
    case SKS_DT_BF16: return sks_mul_u64(n, 2, out);
    case SKS_DT_Q8_0:
        if (n % 32) return SKS_ESHAPE;
        return sks_mul_u64(n / 32, 34, out);
    case SKS_DT_Q4_0:
        if (n % 32) return SKS_ESHAPE;
        return sks_mul_u64(n / 32, 18, out);
    default: return SKS_EDTYPE;
    }
}

static inline float sks__bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void sks_bf16_to_f32_ref(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sks__bits_f32((uint32_t)in[i] << 16);
}

void sks_bf16_to_f32(const uint16_t *in, float *out, size_t n) {
    uint32_t *o = (uint32_t *)(void *)out;
    for (size_t i = 0; i < n; i++) o[i] = (uint32_t)in[i] << 16; /* vectorizes */
}

static inline float sks__f16_scalar(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24 */
        float v = (float)m * 5.9604644775390625e-8f;
        return s ? -v : v;
    }
    if (e == 31) return sks__bits_f32(s | 0x7f800000u | (m << 13));
    return sks__bits_f32(s | ((e + 112) << 23) | (m << 13));
}

void sks_f16_to_f32_ref(const uint16_t *in, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sks__f16_scalar(in[i]);
}

void sks_f16_to_f32(const uint16_t *in, float *out, size_t n) {
    /* Branch-light path for normal numbers; rare specials take the scalar route. */
    for (size_t i = 0; i < n; i++) {
        uint16_t h = in[i];
        uint32_t e = (h >> 10) & 0x1f;
        if (e != 0 && e != 31) {
            uint32_t u = ((uint32_t)(h & 0x8000) << 16) | ((uint32_t)(h & 0x7fff) << 13);
            out[i] = sks__bits_f32(u + (112u << 23));
        } else {
            out[i] = sks__f16_scalar(h);
        }
    }
}

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

void sks_q8_0_to_f32(const void *in, float *out, size_t n) {
    const uint8_t *p = in;
    for (size_t b = 0; b < n / 32; b++, p += 34) {
        uint16_t hs;
        memcpy(&hs, p, 2);
        float d = sks__f16_scalar(hs);
        const int8_t *q = (const int8_t *)(p + 2);
        for (int j = 0; j < 32; j++) out[b * 32 + j] = d * (float)q[j];
    }
}

void sks_q4_0_to_f32(const void *in, float *out, size_t n) {
    const uint8_t *p = in;
    for (size_t b = 0; b < n / 32; b++, p += 18) {
        uint16_t hs;
        memcpy(&hs, p, 2);
        float d = sks__f16_scalar(hs);
        const uint8_t *q = p + 2;
        for (int j = 0; j < 16; j++) {
            out[b * 32 + j] = d * (float)((int)(q[j] & 0x0f) - 8);
            out[b * 32 + j + 16] = d * (float)((int)(q[j] >> 4) - 8);
        }
    }
}

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
    *row_bytes = (size_t)rb;
    return 0;
}

int sks_tensor_rows_f32(const sks_tensor *t, int64_t row0, int64_t nrows, float *out) {
    int rc = sks__tensor_rows_f32_unchecked(t, row0, nrows, out);
    if (rc) return rc;
    return sks__nonfinite_check(t, out, (size_t)nrows * (size_t)sks_tensor_cols(t));
}

int sks__tensor_rows_f32_unchecked(const sks_tensor *t, int64_t row0, int64_t nrows, float *out) {
    int64_t c;
    size_t rb;
    int rc = sks__row_span(t, row0, nrows, &c, &rb);
    if (rc) return rc;
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * rb;
    size_t n = (size_t)nrows * (size_t)c;
    switch (t->dtype) {
    case SKS_DT_F32: memcpy(out, src, n * 4); break;
    case SKS_DT_F16: sks_f16_to_f32((const uint16_t *)(const void *)src, out, n); break;
    case SKS_DT_BF16: sks_bf16_to_f32((const uint16_t *)(const void *)src, out, n); break;
    case SKS_DT_Q8_0: sks_q8_0_to_f32(src, out, n); break;
    case SKS_DT_Q4_0: sks_q4_0_to_f32(src, out, n); break;
    default: return sks_fail(SKS_EDTYPE, "%s: unsupported tensor type", t->name);
    }
    return 0;
}

int sks_tensor_rows_f64(const sks_tensor *t, int64_t row0, int64_t nrows, double *out) {
    int64_t c;
    size_t rb;
    int rc = sks__row_span(t, row0, nrows, &c, &rb);
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
