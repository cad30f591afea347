/* sks_core.h - error codes, error messages, logging and checked arithmetic.
 *
 * Every sinkscope function that can fail returns int: 0 (SKS_OK) on success or a
 * negative SKS_E* code. The code says what kind of failure; the detailed one-line
 * message ("file: field: problem") is kept per thread and read with sks_last_error().
 * The library never prints to stdout; logs go through a hook (default: stderr).
 */
#ifndef SKS_CORE_H
#define SKS_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SKS_OK = 0,
    SKS_EIO = -1,          /* open/read/mmap/write failed */
    SKS_ENOMEM = -2,       /* allocation failed or over the memory budget */
    SKS_EFORMAT = -3,      /* malformed file: bad magic, bad header, bad JSON */
    SKS_EOVERFLOW = -4,    /* a size, count or product overflows */
    SKS_EBOUNDS = -5,      /* an offset or span points outside the file */
    SKS_EDTYPE = -6,       /* unknown or unsupported tensor dtype */
    SKS_EUNSUPPORTED = -7, /* valid input this version does not handle */
    SKS_EARG = -8,         /* bad argument from the caller or command line */
    SKS_ESHAPE = -9,       /* tensor shape disagrees with the architecture */
    SKS_ENOTFOUND = -10,   /* a required tensor, key or file is missing */
    SKS_ELAPACK = -11,     /* LAPACK reported failure */
    SKS_ENOCONV = -12,     /* an iterative method did not converge */
    SKS_EINTERNAL = -13,   /* a bug: an invariant did not hold */
    SKS_ECONFIG = -14,     /* config.json contradicts the tensors or itself */
    SKS_ENONFINITE = -15   /* NaN or Inf in the weights or the activations */
};

/* Short human description of an error code ("malformed file"). */
const char *sks_strerror(int err);
/* Symbolic name of an error code ("SKS_EFORMAT"). */
const char *sks_err_name(int err);

/* Record the detailed message of the failure being returned; returns err so that
 * callers can write `return sks_fail(SKS_EFORMAT, "%s: bad magic", path);`. */
int sks_fail(int err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The last message recorded by sks_fail on this thread ("" if none). */
const char *sks_last_error(void);
void sks_clear_error(void);

/* Logging. Levels: 0 error, 1 warning, 2 info, 3 debug. */
enum { SKS_LOG_ERROR = 0, SKS_LOG_WARN = 1, SKS_LOG_INFO = 2, SKS_LOG_DEBUG = 3 };
typedef void (*sks_log_fn)(int level, const char *msg, void *ud);
/* Replace the log hook (NULL restores the default stderr hook). */
void sks_log_set(sks_log_fn fn, void *ud);
/* Messages above this level are dropped (default SKS_LOG_INFO). */
void sks_log_set_level(int level);
void sks_log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Progress hook for long work: the library reports (stage, done, total); the CLI
 * draws it. Default: no-op. */
typedef void (*sks_progress_fn)(const char *stage, int64_t done, int64_t total, void *ud);
void sks_progress_set(sks_progress_fn fn, void *ud);
void sks_progress(const char *stage, int64_t done, int64_t total);

/* Checked arithmetic: return 0 on success, SKS_EOVERFLOW if the result does not fit. */
static inline int sks_mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? SKS_EOVERFLOW : 0;
}
static inline int sks_add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? SKS_EOVERFLOW : 0;
}
static inline int sks_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_mul_overflow(a, b, out) ? SKS_EOVERFLOW : 0;
}
static inline int sks_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return __builtin_add_overflow(a, b, out) ? SKS_EOVERFLOW : 0;
}

/* malloc of n*size bytes with overflow check; NULL on overflow or failure.
 * sks_calloc_n zero-fills. Free with free(). */
void *sks_malloc_n(size_t n, size_t size);
void *sks_calloc_n(size_t n, size_t size);
/* free() each of p[0..n): the one body of every `_free` that releases a list of buffers.
 * SKS_FREE_ALL(a, b, c) passes its arguments as such a list; they are all read before
 * the first is freed, so the struct that holds the others may come last. */
void sks_free_all(void *const *p, size_t n);
/* Room for element n of a growing array p of *cap elements of size bytes: when n ==
 * *cap, p is realloc'd to twice the capacity (first when it is 0) and *cap updated.
 * Returns the array, perhaps moved; NULL when out of memory or on overflow (p is then
 * still valid and *cap unchanged). */
void *sks_grow(void *p, size_t n, size_t *cap, size_t size, size_t first);
/* The n bytes of the open file f (its size, checked by the caller) into *buf, malloc'd
 * with one more byte set to 0 so that text can be parsed in place; f is closed either
 * way. path names the file in the message. */
int sks_fread_all(FILE *f, size_t n, const char *path, uint8_t **buf);
#define SKS_FREE_ALL(...) \
    sks_free_all((void *const[]){__VA_ARGS__}, sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))

/* k-th smallest of a[0..n) by Hoare selection with median-of-three pivots (expected
 * O(n)); a is permuted so that a[k] holds it, a[0..k) <= a[k] <= a[k+1..n). n >= 1. */
float sks_select_f32(float *a, size_t n, size_t k);
/* Median of a[0..n) as numpy computes it (mean of the two middle values for even n);
 * a is permuted. NaN for n == 0. */
double sks_median_f32(float *a, size_t n);

/* Wall-clock seconds (monotonic). */
double sks_now(void);

/* The lifetime of model weights: a counter that every closed model moves on. A device
 * that keeps copies of frozen weights (sks_tensor.frozen) keyed by their host address
 * drops them all when it changes, before a freed address can hold other weights. */
uint64_t sks_weights_epoch(void);
void sks_weights_epoch_bump(void);

/* Peak resident set size of this process in bytes (0 if unknown). */
size_t sks_peak_rss(void);

/* Human-readable bytes ("3.20 GiB", "12.5 MiB", "512 bytes") into buf; returns buf. */
const char *sks_fmt_bytes(uint64_t b, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
