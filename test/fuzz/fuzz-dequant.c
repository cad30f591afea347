/* fuzz-dequant.c - libFuzzer target for the dequantization kernels and quantizers of
 * every type in the dtype table. Input: byte 0 picks the type (modulo the convertible
 * types), byte 1 the mode; the rest is the data, cut to whole blocks (at most 64).
 *   mode even: the bytes are blocks; the kernel and its _ref twin must agree bitwise
 *              (any bytes are a valid block: scales may be NaN or inf; a NaN output must
 *              be NaN in both, its sign and payload may differ).
 *   mode odd:  the bytes are f32 values (non-finite ones replaced by 0): quantize with
 *              the type's quantizer, if it has one, and dequantize again; every output
 *              must be finite for finite input below the type's range.
 * Executions per type are counted and printed at exit (docs/fuzzing.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders/sks_model.h"

static unsigned long long sks__execs[SKS_DT_COUNT];
static int sks__registered;

static void sks__report(void) {
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if (sks__execs[d]) fprintf(stderr, "fuzz-dequant: %s %llu\n", sks_dtype_name((sks_dtype)d), sks__execs[d]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!sks__registered) {
        sks__registered = 1;
        atexit(sks__report);
    }
    if (size < 2) return 0;
    int conv[SKS_DT_COUNT], nc = 0;
    for (int d = 0; d < SKS_DT_COUNT; d++)
        if (sks_dtype_convertible((sks_dtype)d)) conv[nc++] = d;
    sks_dtype dt = (sks_dtype)conv[data[0] % nc];
    const sks_dtype_info *t = sks_dtype_get(dt);
    int mode = data[1] & 1;
    data += 2;
    size -= 2;
    sks__execs[dt]++;
    static float a[64 * 256], b[64 * 256];
    static uint8_t q[64 * 292];
    if (mode == 0) {
        size_t nb = size / t->block_bytes;
        if (nb > 64 * 256 / t->block) nb = 64 * 256 / t->block;
        if (nb == 0) return 0;
        /* copy into an exactly sized heap buffer so ASan sees any read past the blocks */
        uint8_t *in = malloc(nb * t->block_bytes);
        memcpy(in, data, nb * t->block_bytes);
        size_t n = nb * t->block;
        t->to_f32(in, a, n);
        t->to_f32_ref(in, b, n);
        for (size_t i = 0; i < n; i++) /* NaN compared as NaN (sign and payload are the hardware's) */
            if (isnan(a[i]) ? !isnan(b[i]) : memcmp(&a[i], &b[i], 4) != 0) __builtin_trap();
        free(in);
        return 0;
    }
    if (!t->from_f32) return 0;
    size_t n = size / 4 / t->block * t->block;
    if (n > 64 * 256) n = 64 * 256 / t->block * t->block;
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(&a[i], data + 4 * i, 4);
        /* inside every type's range (f16 scales): |x| < 2^14 */
        if (!isfinite(a[i]) || fabsf(a[i]) > 16384.0f) a[i] = 0.0f;
    }
    t->from_f32(a, q, n);
    t->to_f32(q, b, n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(b[i])) __builtin_trap();
    return 0;
}
