/* nonfinite.c - NaN/Inf in converted weights (contract in sks_model.h).
 *
 * A damaged file (a run of 0xFF bytes is a bf16 NaN; random bytes give f16 scales of
 * Inf/NaN in a quantized block) otherwise turns into silently wrong results. The check
 * runs on the converted f32 rows, so it covers every dtype alike: a value is non-finite
 * when its exponent bits are all ones. Counting a whole tensor is done only once the
 * first bad value has been seen, so the common path is one linear pass over memory the
 * caller has just written.
 */
#include "formats_internal.h"
#include "quant_internal.h"
#include "sks_model.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SKS__NONFINITE_MAX 256 /* tensors recorded; later ones are counted but not named */

typedef struct {
    char *name;
    uint64_t count, total;
} sks__nf_entry;

static pthread_mutex_t sks__nf_lock = PTHREAD_MUTEX_INITIALIZER;
static int sks__nf_allow;
static int sks__nf_n;
static sks__nf_entry sks__nf[SKS__NONFINITE_MAX];

void sks_nonfinite_allow(int allow) {
    pthread_mutex_lock(&sks__nf_lock);
    sks__nf_allow = allow != 0;
    pthread_mutex_unlock(&sks__nf_lock);
}

int sks_nonfinite_allowed(void) {
    pthread_mutex_lock(&sks__nf_lock);
    int a = sks__nf_allow;
    pthread_mutex_unlock(&sks__nf_lock);
    return a;
}

int sks_nonfinite_n_tensors(void) {
    pthread_mutex_lock(&sks__nf_lock);
    int n = sks__nf_n;
    pthread_mutex_unlock(&sks__nf_lock);
    return n;
}

const char *sks_nonfinite_tensor(int i, uint64_t *count, uint64_t *total) {
    const char *name = NULL;
    pthread_mutex_lock(&sks__nf_lock);
    if (i >= 0 && i < sks__nf_n) {
        name = sks__nf[i].name;
        if (count) *count = sks__nf[i].count;
        if (total) *total = sks__nf[i].total;
    }
    pthread_mutex_unlock(&sks__nf_lock);
    return name;
}

void sks_nonfinite_reset(void) {
    pthread_mutex_lock(&sks__nf_lock);
    for (int i = 0; i < sks__nf_n; i++) free(sks__nf[i].name);
    sks__nf_n = 0;
    pthread_mutex_unlock(&sks__nf_lock);
}

/* Written for the vectorizer (this runs over every weight the forward pass converts):
 * 32-bit counts per stretch of 2^16 values, widened once per stretch. */
SKS__VEC size_t sks__count_nonfinite(const float *x, size_t n) {
    size_t bad = 0;
    for (size_t i0 = 0; i0 < n; i0 += 65536) {
        const size_t i1 = n - i0 < 65536 ? n : i0 + 65536;
        uint32_t b = 0;
        for (size_t i = i0; i < i1; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            b += (u & 0x7f800000u) == 0x7f800000u;
        }
        bad += b;
    }
    return bad;
}

/* Non-finite values of the whole tensor, converted a few rows at a time. */
static int sks__count_tensor(const sks_tensor *t, uint64_t *count, uint64_t *total) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = sks_tensor_cols(t);
    int64_t step = cols > 0 && cols < 65536 ? 65536 / cols : 1;
    float *buf = sks_malloc_n((size_t)step * (size_t)cols, sizeof *buf);
    if (!buf) return sks_fail(SKS_ENOMEM, "%s: out of memory counting non-finite weights", t->name);
    *count = 0;
    *total = (uint64_t)rows * (uint64_t)cols;
    int rc = 0;
    for (int64_t r = 0; r < rows && !rc; r += step) {
        int64_t nr = rows - r < step ? rows - r : step;
        if (!(rc = sks__tensor_rows_f32_unchecked(t, r, nr, buf)))
            *count += sks__count_nonfinite(buf, (size_t)nr * (size_t)cols);
    }
    free(buf);
    return rc;
}

int sks__nonfinite_check(const sks_tensor *t, const float *out, size_t n) {
    if (!sks__count_nonfinite(out, n)) return 0;
    const char *name = t->name ? t->name : "(unnamed tensor)";
    pthread_mutex_lock(&sks__nf_lock);
    int allow = sks__nf_allow, seen = 0;
    for (int i = 0; i < sks__nf_n && !seen; i++) seen = strcmp(sks__nf[i].name, name) == 0;
    pthread_mutex_unlock(&sks__nf_lock);
    if (allow && seen) return 0;
    uint64_t count = 0, total = 0;
    int rc = sks__count_tensor(t, &count, &total);
    if (rc) return rc;
    if (!allow)
        return sks_fail(SKS_ENONFINITE,
                        "%s: %llu of %llu weights are NaN or Inf (a damaged file?); --allow-nonfinite analyses "
                        "anyway",
                        name, (unsigned long long)count, (unsigned long long)total);
    pthread_mutex_lock(&sks__nf_lock);
    seen = 0;
    for (int i = 0; i < sks__nf_n && !seen; i++) seen = strcmp(sks__nf[i].name, name) == 0;
    int added = 0;
    if (!seen && sks__nf_n < SKS__NONFINITE_MAX && (sks__nf[sks__nf_n].name = strdup(name))) {
        sks__nf[sks__nf_n].count = count;
        sks__nf[sks__nf_n].total = total;
        sks__nf_n++;
        added = 1;
    }
    pthread_mutex_unlock(&sks__nf_lock);
    if (added)
        sks_log(SKS_LOG_WARN, "%s: %llu of %llu weights are NaN or Inf; analysing anyway (--allow-nonfinite)", name,
                (unsigned long long)count, (unsigned long long)total);
    return 0;
}
