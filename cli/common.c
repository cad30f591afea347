/* common.c - option parsing, error printing and progress drawing shared by commands. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
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

/* ---- the option tables ------------------------------------------------------------------ */

int sks_cli_usage(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sinkscope %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see sinkscope %s --help)\n", cmd);
    va_end(ap);
    return 2;
}

/* Does the option a name row o? spec's names are the words before the value's name,
 * separated by ", ". */
static int sks__opt_named(const sks_cli_opt *o, const char *a) {
    if (o->kind == SKS_CLI_RULE)
        return !strcmp(a, "--outlier") || !strcmp(a, "--abs") || !strcmp(a, "--ratio") || !strcmp(a, "--min-blocks");
    if (!o->spec || o->kind == SKS_CLI_SECTION || o->kind == SKS_CLI_TEXT) return 0;
    size_t n = strlen(a);
    for (const char *p = o->spec; *p == '-';) {
        size_t k = strcspn(p, ", ");
        if (k == n && !strncmp(p, a, n)) return 1;
        p += k;
        if (strncmp(p, ", ", 2)) break;
        p += 2;
    }
    return 0;
}

static int sks__opt_rule(sks_cli_rule *r, const char *a, const char *v) {
    double *dst = !strcmp(a, "--outlier") ? &r->rule.outlier
                  : !strcmp(a, "--abs")   ? &r->rule.abs_thresh
                  : !strcmp(a, "--ratio") ? &r->rule.ratio
                                          : NULL;
    if (!dst) {
        long lv = 0;
        int rc = sks_cli_parse_int(a, v, 1, 100000, &lv);
        r->rule.min_blocks = (int)lv;
        return rc;
    }
    r->given |= dst == &r->rule.outlier ? 1u : 2u;
    return sks_cli_parse_double(a, v, dst);
}

/* Store the value v of option a (row o); 0 or SKS_EARG with the message set. */
static int sks__opt_set(const sks_cli_opt *o, const char *a, const char *v) {
    long lv, lo = (long)o->lo, hi = o->hi >= (double)LONG_MAX ? LONG_MAX : (long)o->hi;
    int rc = 0;
    switch (o->kind) {
    case SKS_CLI_STR:
        *(const char **)o->dst = v;
        return 0;
    case SKS_CLI_INT:
        if (!(rc = sks_cli_parse_int(a, v, lo, hi, &lv))) *(int *)o->dst = (int)lv;
        return rc;
    case SKS_CLI_U64:
        if (!(rc = sks_cli_parse_int(a, v, lo, hi, &lv))) *(uint64_t *)o->dst = (uint64_t)lv;
        return rc;
    case SKS_CLI_NUM:
        if ((rc = sks_cli_parse_double(a, v, o->dst))) return rc;
        if (o->lo < o->hi && !(*(double *)o->dst >= o->lo && *(double *)o->dst <= o->hi))
            return sks_fail(SKS_EARG, "%s: %s is outside [%g, %g]", a, v, o->lo, o->hi);
        return 0;
    case SKS_CLI_BYTES:
        return sks_cli_parse_bytes(a, v, o->dst);
    case SKS_CLI_CHOICE:
        for (int k = 0; o->choices[k]; k++)
            if (!strcmp(v, o->choices[k])) {
                *(int *)o->dst = k;
                return 0;
            }
        {
            char list[256] = "";
            for (int k = 0; o->choices[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? (o->choices[k + 1] ? ", " : " or ") : "",
                         o->choices[k]);
            return sks_fail(SKS_EARG, "%s: '%s' is not %s", a, v, list);
        }
    case SKS_CLI_CALL:
        return o->call(o->dst, v);
    case SKS_CLI_RULE:
        return sks__opt_rule(o->dst, a, v);
    default:
        return 0;
    }
}

/* The row of option a: the table's, or --json / --quiet of the command (in *tmp). */
static const sks_cli_opt *sks__find_opt(const sks_cli_cmd *c, const char *a, sks_cli_opt *tmp) {
    for (const sks_cli_opt *o = c->opts; o->spec || o->help; o++)
        if (sks__opt_named(o, a)) return o;
    const sks_cli_opt std[2] = {SKS_OPT_FLAG("--json", c->json, ""), SKS_OPT_FLAG("-q, --quiet", c->quiet, "")};
    for (int k = 0; k < 2; k++)
        if (std[k].dst && sks__opt_named(&std[k], a)) return (*tmp = std[k], tmp);
    return NULL;
}

int sks_cli_parse(const sks_cli_cmd *c, int argc, char **argv, int *exit_code) {
    const char **pos = c->model ? c->model : c->pos;
    const int max_pos = c->model ? 1 : c->max_pos, min_pos = c->model ? 1 : c->min_pos;
    int n_pos = 0;
    *exit_code = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        sks_cli_opt tmp;
        const sks_cli_opt *o = sks__find_opt(c, a, &tmp);
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks_cli_help(c, stdout);
            *exit_code = 0;
            return 0;
        } else if (o && o->kind == SKS_CLI_FLAG) {
            *(int *)o->dst = 1;
        } else if (o && i + 1 >= argc) {
            fprintf(stderr, "sinkscope %s: %s needs a value\n", c->name, a);
            return 0;
        } else if (o) {
            int rc = sks__opt_set(o, a, argv[++i]);
            if (rc) {
                sks_cli_fail(c->name, rc);
                return 0;
            }
        } else if (a[0] == '-' && a[1]) {
            sks_cli_usage(c->name, "unknown option '%s'", a);
            return 0;
        } else if (n_pos < max_pos) {
            pos[n_pos++] = a;
        } else {
            sks_cli_usage(c->name, "unexpected argument '%s'", a);
            return 0;
        }
    }
    if (c->n_pos) *c->n_pos = n_pos;
    if (n_pos < min_pos) {
        sks_cli_usage(c->name, "no %s given", c->model ? "MODEL" : c->pos_name);
        return 0;
    }
    return 1;
}

/* One option's help: the spec in a column of 19, the help's lines under each other. */
static void sks__opt_help(FILE *f, const char *spec, const char *help) {
    int w = fprintf(f, "  %s", spec);
    if (w > 19) {
        fputc('\n', f);
        w = 0;
    }
    fprintf(f, "%*s", 21 - w, "");
    for (const char *p = help; *p;) {
        size_t k = strcspn(p, "\n");
        fprintf(f, "%.*s\n", (int)k, p);
        p += k;
        if (*p == '\n' && *++p) fprintf(f, "%21s", "");
    }
}

/* --json, -q and -h, the same for every command. */
static void sks__std_help(const sks_cli_cmd *c, FILE *f) {
    if (c->json) sks__opt_help(f, "--json", c->json_help);
    if (c->quiet) sks__opt_help(f, "-q, --quiet", c->quiet_help);
    sks__opt_help(f, "-h, --help", "this text");
}

void sks_cli_help(const sks_cli_cmd *c, FILE *f) {
    fprintf(f, "usage: sinkscope %s %s\n\n", c->name, c->usage);
    if (c->about) fprintf(f, "%s\n", c->about);
    if (c->opts[0].kind != SKS_CLI_SECTION) fprintf(f, "options:\n");
    int std = 0;
    const sks_cli_opt *o = c->opts;
    for (; o->spec || o->help; o++) {
        if (o->kind == SKS_CLI_RULE && !std++) sks__std_help(c, f);
        if (o->kind == SKS_CLI_SECTION) fprintf(f, "%s%s\n", o == c->opts ? "" : "\n", o->spec);
        else if (o->kind == SKS_CLI_TEXT) fputs(o->help, f);
        else if (o->kind == SKS_CLI_RULE) fprintf(f, "%s%s", o == c->opts ? "" : "\n", sks_cli_rule_help);
        else if (o->help) sks__opt_help(f, o->spec, o->help); /* no help: an alias */
    }
    if (!std) sks__std_help(c, f);
    if (c->more_help) c->more_help(f);
    if (c->epilogue) fprintf(f, "\n%s", c->epilogue);
}

int sks_cli_rule_done(const char *cmd, sks_cli_rule *r) {
    if ((r->given & 2u) && !(r->given & 1u)) r->rule.outlier = 0;
    int rc = sks_spike_rule_check(&r->rule);
    if (rc) {
        sks_cli_fail(cmd, rc);
        return 2;
    }
    return 0;
}

int sks_cli_print_json(json_t *j, size_t flags) {
    int rc = json_dumpf(j, stdout, flags);
    fputc('\n', stdout);
    json_decref(j);
    return rc == 0 ? 0 : 1;
}
