/* core.c - error strings, per-thread error message, log and progress hooks. */
#define _POSIX_C_SOURCE 200809L
#include "sks_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <math.h>

static _Thread_local char sks__errmsg[1024];

const char *sks_strerror(int err) {
    switch (err) {
    case SKS_OK: return "success";
    case SKS_EIO: return "input/output error";
    case SKS_ENOMEM: return "out of memory";
    case SKS_EFORMAT: return "malformed file";
    case SKS_EOVERFLOW: return "size overflow";
    case SKS_EBOUNDS: return "out of bounds";
    case SKS_EDTYPE: return "unsupported tensor type";
    case SKS_EUNSUPPORTED: return "unsupported";
    case SKS_EARG: return "invalid argument";
    case SKS_ESHAPE: return "shape mismatch";
    case SKS_ENOTFOUND: return "not found";
    case SKS_ELAPACK: return "LAPACK failure";
    case SKS_ENOCONV: return "no convergence";
    case SKS_EINTERNAL: return "internal error";
    case SKS_ECONFIG: return "inconsistent configuration";
    case SKS_ENONFINITE: return "non-finite value (NaN or Inf)";
    default: return "unknown error";
    }
}

const char *sks_err_name(int err) {
    switch (err) {
    case SKS_OK: return "SKS_OK";
    case SKS_EIO: return "SKS_EIO";
    case SKS_ENOMEM: return "SKS_ENOMEM";
    case SKS_EFORMAT: return "SKS_EFORMAT";
    case SKS_EOVERFLOW: return "SKS_EOVERFLOW";
    case SKS_EBOUNDS: return "SKS_EBOUNDS";
    case SKS_EDTYPE: return "SKS_EDTYPE";
    case SKS_EUNSUPPORTED: return "SKS_EUNSUPPORTED";
    case SKS_EARG: return "SKS_EARG";
    case SKS_ESHAPE: return "SKS_ESHAPE";
    case SKS_ENOTFOUND: return "SKS_ENOTFOUND";
    case SKS_ELAPACK: return "SKS_ELAPACK";
    case SKS_ENOCONV: return "SKS_ENOCONV";
    case SKS_EINTERNAL: return "SKS_EINTERNAL";
    case SKS_ECONFIG: return "SKS_ECONFIG";
    case SKS_ENONFINITE: return "SKS_ENONFINITE";
    default: return "SKS_E?";
    }
}

int sks_fail(int err, const char *fmt, ...) {
    /* formatted aside first: callers may pass sks_last_error() itself as an argument
     * (prefixing a file name to a lower layer's message) */
    char buf[sizeof sks__errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(sks__errmsg, buf, sizeof buf);
    return err;
}

const char *sks_last_error(void) { return sks__errmsg; }
void sks_clear_error(void) { sks__errmsg[0] = '\0'; }

static void sks__log_stderr(int level, const char *msg, void *ud) {
    (void)ud;
    static const char *tag[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "sinkscope: %s: %s\n", tag[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}

static sks_log_fn sks__log_fn = sks__log_stderr;
static void *sks__log_ud;
static int sks__log_level = SKS_LOG_INFO;

void sks_log_set(sks_log_fn fn, void *ud) {
    sks__log_fn = fn ? fn : sks__log_stderr;
    sks__log_ud = ud;
}
void sks_log_set_level(int level) { sks__log_level = level; }

void sks_log(int level, const char *fmt, ...) {
    if (level > sks__log_level) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sks__log_fn(level, buf, sks__log_ud);
}

static sks_progress_fn sks__progress_fn;
static void *sks__progress_ud;
void sks_progress_set(sks_progress_fn fn, void *ud) {
    sks__progress_fn = fn;
    sks__progress_ud = ud;
}
void sks_progress(const char *stage, int64_t done, int64_t total) {
    if (sks__progress_fn) sks__progress_fn(stage, done, total, sks__progress_ud);
}

void *sks_malloc_n(size_t n, size_t size) {
    size_t b;
    if (sks_mul_size(n, size, &b)) return NULL;
    return malloc(b ? b : 1);
}
void *sks_calloc_n(size_t n, size_t size) {
    size_t b;
    if (sks_mul_size(n, size, &b)) return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}
void sks_free_all(void *const *p, size_t n) {
    for (size_t i = 0; i < n; i++) free(p[i]);
}
int sks_fread_all(FILE *f, size_t n, const char *path, uint8_t **buf) {
    *buf = NULL;
    uint8_t *b = n < SIZE_MAX ? malloc(n + 1) : NULL;
    if (!b) {
        fclose(f);
        return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    }
    if (n && fread(b, 1, n, f) != n) {
        free(b);
        fclose(f);
        return sks_fail(SKS_EIO, "%s: short read", path);
    }
    fclose(f);
    b[n] = 0;
    *buf = b;
    return 0;
}
void *sks_grow(void *p, size_t n, size_t *cap, size_t size, size_t first) {
    if (n < *cap) return p;
    size_t c = *cap ? *cap * 2 : first, b;
    if (c <= *cap || sks_mul_size(c, size, &b)) return NULL;
    void *q = realloc(p, b);
    if (q) *cap = c;
    return q;
}

double sks_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t sks_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024u;
}

float sks_select_f32(float *a, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        /* median of three into a[mid] */
        if (a[mid] < a[lo]) { float t = a[mid]; a[mid] = a[lo]; a[lo] = t; }
        if (a[hi] < a[lo]) { float t = a[hi]; a[hi] = a[lo]; a[lo] = t; }
        if (a[hi] < a[mid]) { float t = a[hi]; a[hi] = a[mid]; a[mid] = t; }
        float p = a[mid];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) {
                float t = a[i]; a[i] = a[j]; a[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

double sks_median_f32(float *a, size_t n) {
    if (n == 0) return NAN;
    size_t k = n / 2;
    double hi = sks_select_f32(a, n, k);
    if (n % 2) return hi;
    /* the largest of the lower half, which selection left in a[0 .. k-1] */
    float lo = a[0];
    for (size_t i = 1; i < k; i++)
        if (a[i] > lo) lo = a[i];
    return 0.5 * ((double)lo + hi);
}

const char *sks_fmt_bytes(uint64_t b, char *buf, size_t cap) {
    if (b >= ((uint64_t)1 << 30)) snprintf(buf, cap, "%.2f GiB", (double)b / (1024.0 * 1024 * 1024));
    else if (b >= ((uint64_t)1 << 20)) snprintf(buf, cap, "%.1f MiB", (double)b / (1024.0 * 1024));
    else snprintf(buf, cap, "%llu bytes", (unsigned long long)b);
    return buf;
}

static uint64_t sks__weights_epoch;

uint64_t sks_weights_epoch(void) { return __atomic_load_n(&sks__weights_epoch, __ATOMIC_ACQUIRE); }

void sks_weights_epoch_bump(void) { __atomic_add_fetch(&sks__weights_epoch, 1, __ATOMIC_ACQ_REL); }
