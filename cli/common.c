/* common.c - option parsing, error printing and progress drawing shared by commands. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sks_cli_fail(const char *cmd, int rc) {
    const char *msg = sks_last_error();
    fprintf(stderr, "sinkscope %s: %s\n", cmd, (msg && *msg) ? msg : sks_strerror(rc));
    return 1;
}

int sks_cli_open_model(const char *cmd, const char *path, sks_model **m) {
    int rc = sks_model_open(path, m);
    if (rc) sks_cli_fail(cmd, rc);
    return rc;
}

int sks_cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno) return sks_fail(SKS_EARG, "%s: '%s' is not an integer", opt, s ? s : "");
    if (v < lo || v > hi) return sks_fail(SKS_EARG, "%s: %ld is outside [%ld, %ld]", opt, v, lo, hi);
    *out = v;
    return 0;
}

int sks_cli_parse_bytes(const char *opt, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0) || !isfinite(v)) return sks_fail(SKS_EARG, "%s: '%s' is not a size", opt, s);
    double mul = 1;
    if (*end) {
        char u = *end;
        if (u == 'k' || u == 'K') mul = 1024.0;
        else if (u == 'm' || u == 'M') mul = 1024.0 * 1024;
        else if (u == 'g' || u == 'G') mul = 1024.0 * 1024 * 1024;
        else if (u == 't' || u == 'T') mul = 1024.0 * 1024 * 1024 * 1024;
        else return sks_fail(SKS_EARG, "%s: '%s': unit must be K, M, G or T", opt, s);
        end++;
        if (*end == 'i') end++;
        if (*end == 'B' || *end == 'b') end++;
        if (*end) return sks_fail(SKS_EARG, "%s: '%s': trailing characters", opt, s);
    }
    double b = v * mul;
    if (b > 1.8e19) return sks_fail(SKS_EARG, "%s: '%s' is too large", opt, s);
    *out = (uint64_t)b;
    return 0;
}

int sks_cli_parse_double(const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s ? s : "", &end);
    if (!s || !*s || *end || errno) return sks_fail(SKS_EARG, "%s: '%s' is not a number", opt, s ? s : "");
    *out = v;
    return 0;
}

int sks_cli_parse_ranges(const char *opt, const char *what, const char *s, int max, int **out, int *n) {
    *out = NULL;
    *n = 0;
    if (max <= 0) return sks_fail(SKS_EARG, "%s: the model has no %s", opt, what);
    if (!s || !*s) return sks_fail(SKS_EARG, "%s: empty list (want e.g. 0-3,5)", opt);
    char *mark = calloc((size_t)max, 1);
    if (!mark) return sks_fail(SKS_ENOMEM, "out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b;
        if (end == p) goto bad;
        p = end;
        if (*p == '-') {
            p++;
            b = strtol(p, &end, 10);
            if (end == p) goto bad;
            p = end;
        } else {
            b = a;
        }
        if (b < a) {
            free(mark);
            return sks_fail(SKS_EARG, "%s: %ld-%ld runs backwards (want low-high)", opt, a, b);
        }
        if (a < 0 || b >= max) {
            free(mark);
            char r[48];
            if (a == b) snprintf(r, sizeof r, "%ld", a);
            else snprintf(r, sizeof r, "%ld-%ld", a, b);
            return sks_fail(SKS_EARG, "%s: %s is outside the model's %d %s (0-%d)", opt, r, max, what, max - 1);
        }
        for (long i = a; i <= b; i++) mark[i] = 1;
        if (*p == ',') p++;
        else if (*p) goto bad;
    }
    int cnt = 0;
    for (int i = 0; i < max; i++) cnt += mark[i];
    int *v = malloc((size_t)(cnt ? cnt : 1) * sizeof *v);
    if (!v) {
        free(mark);
        return sks_fail(SKS_ENOMEM, "out of memory");
    }
    cnt = 0;
    for (int i = 0; i < max; i++)
        if (mark[i]) v[cnt++] = i;
    free(mark);
    *out = v;
    *n = cnt;
    return 0;
bad:
    free(mark);
    return sks_fail(SKS_EARG, "%s: bad list '%s' (want e.g. 0-3,5)", opt, s);
}

typedef struct {
    int tty;
    double t0, last;
    char stage[64];
} sks__progress_state;

static sks__progress_state sks__ps;

static void sks__draw(const char *stage, int64_t done, int64_t total, void *ud) {
    (void)ud;
    double now = sks_now();
    if (strncmp(sks__ps.stage, stage, sizeof sks__ps.stage - 1) != 0) {
        snprintf(sks__ps.stage, sizeof sks__ps.stage, "%s", stage);
        sks__ps.t0 = now;
        sks__ps.last = 0;
    }
    int finished = total > 0 && done >= total;
    if (!finished && now - sks__ps.last < (sks__ps.tty ? 0.1 : 5.0)) return;
    sks__ps.last = now;
    double el = now - sks__ps.t0;
    double eta = (done > 0 && total > done) ? el * (double)(total - done) / (double)done : 0;
    if (sks__ps.tty) {
        int w = 24, fill = total > 0 ? (int)((double)w * (double)done / (double)total) : 0;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : ' ';
        bar[w] = 0;
        fprintf(stderr, "\r%-18s [%s] %lld/%lld  %.1fs eta %.0fs ", stage, bar, (long long)done, (long long)total,
                el, eta);
        if (finished) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %lld/%lld (%.1fs elapsed%s", stage, (long long)done, (long long)total, el,
                finished ? ")\n" : "");
        if (!finished) fprintf(stderr, ", eta %.0fs)\n", eta);
    }
}

void sks_cli_progress_install(int quiet) {
    if (quiet) {
        sks_progress_set(NULL, NULL);
        return;
    }
    sks__ps.tty = isatty(2);
    sks_progress_set(sks__draw, NULL);
}

enum { SKS__RULE_OUTLIER = 1, SKS__RULE_FIXED = 2 };

int sks_cli_rule_option(const char *cmd, const char *a, const char *v, sks_spike_rule *r, unsigned *given,
                        int *usage) {
    double *dst = !strcmp(a, "--outlier") ? &r->outlier
                  : !strcmp(a, "--abs")   ? &r->abs_thresh
                  : !strcmp(a, "--ratio") ? &r->ratio
                                          : NULL;
    if (!dst && strcmp(a, "--min-blocks")) return 0;
    int rc;
    if (!v) rc = sks_fail(SKS_EARG, "%s needs a value", a);
    else if (dst) rc = sks_cli_parse_double(a, v, dst);
    else {
        long lv = 0;
        rc = sks_cli_parse_int(a, v, 1, 100000, &lv);
        r->min_blocks = (int)lv;
    }
    if (rc) {
        sks_cli_fail(cmd, rc);
        *usage = 1;
        return 1;
    }
    if (dst == &r->outlier) *given |= SKS__RULE_OUTLIER;
    else if (dst) *given |= SKS__RULE_FIXED;
    return 1;
}

int sks_cli_rule_finish(const char *cmd, sks_spike_rule *r, unsigned given) {
    if ((given & SKS__RULE_FIXED) && !(given & SKS__RULE_OUTLIER)) r->outlier = 0;
    int rc = sks_spike_rule_check(r);
    if (rc) {
        sks_cli_fail(cmd, rc);
        return 2;
    }
    return 0;
}

const char sks_cli_rule_help[] =
    "spike rule (one rule for every command; docs/spikes.md):\n"
    "  --outlier X        a spike needs |h| >= X times the block's median channel peak\n"
    "                     (max over tokens of |h[t, c]|, median over channels; default 20)\n"
    "  --abs X            ... and |h| >= X (default 0 = off)\n"
    "  --ratio X          ... and |h| >= X times the block median |h| (default 0 = off)\n"
    "                     --abs or --ratio alone switches --outlier off: the paper's\n"
    "                     definition for billion-parameter models is --abs 100 --ratio 1000\n"
    "  --min-blocks N     consecutive blocks a spike must last (default 3)\n";

const char *sks_cli_pct(char *buf, size_t n, long k, long total) {
    if (total <= 0) {
        snprintf(buf, n, "-");
        return buf;
    }
    double p = 100.0 * (double)k / (double)total;
    if (p > 0 && p < 0.1)
        snprintf(buf, n, "%.2g%%", p);
    else if (p > 99.9 && p < 100)
        snprintf(buf, n, "%.3f%%", p);
    else
        snprintf(buf, n, "%.1f%%", p);
    return buf;
}
