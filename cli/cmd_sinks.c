/* cmd_sinks.c - `sinkscope sinks`: sink-key geometry, query alignment, ranked sink heads. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "../dist/sks_dist.h"
#include "../analysis/sks_sinks.h"
#include "../analysis/sks_trace.h"
#include "../loaders/sks_tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void sks__sinks_help(FILE *f) {
    fprintf(f,
            "usage: sinkscope sinks MODEL [input] [options] -o OUT.msgpack\n\n"
            "Per layer and head: the near-constancy of the normalized spike tokens, the effective\n"
            "rank of sink and non-sink keys, the alignment of the query subspace with the sink\n"
            "keys, the query energy and signed projection along the mean sink key, the logit\n"
            "margin of the sink key (with and without RoPE), a weight-only prediction, the measured\n"
            "alpha_0 (Gu et al.) and, per predictor, the ROC AUC against alpha_0 > eps.\n"
            "See docs/sinks.md and docs/schema-sinks.md.\n\n"
            "input (default: four built-in texts of up to 64 tokens through the model's tokenizer,\n"
            "or 4 sequences of BOS + pseudo-random ids when there is no tokenizer):\n"
            "  --prompt TEXT        one text\n"
            "  --prompts FILE       one text per line\n"
            "  --tokens IDS         token ids \"1,2,3\"; several sequences separated by ';'\n"
            "  --tokens-file FILE   one sequence of ids per line (comma or space separated)\n"
            "  --tokenizer PATH     tokenizer file (default: found beside the model)\n"
            "  --seed N             seed of the pseudo-random default ids (default 1)\n"
            "options:\n"
            "  -o, --output FILE    msgpack result (schema sinkscope.sinks/1), required\n"
            "  --eps X              sink head when alpha_0 > X (default 0.3)\n"
            "  --outlier X, --abs X, --ratio X, --min-blocks N   the spike rule (below)\n"
            "  --sink-token MODE    auto (default): spike tokens, or position 0 when no prompt has\n"
            "                       one; spike: spike tokens only; first: spike tokens and position 0\n"
            "  --rank-by NAME       predictor that ranks the heads: alignment, energy, signed_proj,\n"
            "                       margin_rope (default), margin_norope, weight_only\n"
            "  --threshold NAME=X   threshold of predictor NAME for precision/recall (repeatable)\n"
            "  --kv-map FILE        JSON for serving systems: per layer the heads (and KV heads)\n"
            "                       that need the sink token kept\n"
            "  --json               print a JSON summary on stdout\n"
            "  -q, --quiet          no progress\n"
            "  -h, --help           this text\n\n"
            "%s\n"
            "example:\n"
            "  sinkscope sinks model-dir -o sinks.msgpack --kv-map kv.json\n",
            sks_cli_rule_help);
}

typedef struct {
    int n, cap;
    int32_t **ids;
    int *lens;
} sks__seqs;

static void sks__seqs_free(sks__seqs *s) {
    for (int i = 0; i < s->n; i++) free(s->ids[i]);
    free(s->ids);
    free(s->lens);
    memset(s, 0, sizeof *s);
}

static int sks__seqs_push(sks__seqs *s, int32_t *ids, int n) {
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 8;
        int32_t **ni = realloc(s->ids, (size_t)nc * sizeof *ni);
        if (!ni) {
            free(ids);
            return sks_fail(SKS_ENOMEM, "sinks: prompts");
        }
        s->ids = ni;
        int *nl = realloc(s->lens, (size_t)nc * sizeof *nl);
        if (!nl) {
            free(ids);
            return sks_fail(SKS_ENOMEM, "sinks: prompts");
        }
        s->lens = nl;
        s->cap = nc;
    }
    s->ids[s->n] = ids;
    s->lens[s->n] = n;
    s->n++;
    return 0;
}

/* Parse sequences of ids separated by sep characters (';' or '\n'); blank ones skipped. */
static int sks__parse_seqs(const char *text, const char *sep, sks__seqs *s) {
    char *buf = strdup(text);
    if (!buf) return sks_fail(SKS_ENOMEM, "sinks: tokens");
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, sep, &save); tok; tok = strtok_r(NULL, sep, &save)) {
        char *p = tok;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (!*p) continue;
        for (char *q = p; *q; q++)
            if (*q == '\t' || *q == '\r') *q = ' ';
        size_t len = strlen(p);
        while (len && p[len - 1] == ' ') p[--len] = '\0';
        int32_t *ids;
        int n;
        if ((rc = sks_parse_ids(p, &ids, &n)) || (rc = sks__seqs_push(s, ids, n))) break;
    }
    free(buf);
    return rc;
}

static char *sks__read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        sks_fail(SKS_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t k;
    while (b && (k = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (!b) {
        sks_fail(SKS_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    b[n] = '\0';
    return b;
}

static int sks__encode(const sks_tokenizer *tok, const char *text, int cut, sks__seqs *s) {
    int32_t *ids;
    int n;
    int rc = sks_tokenizer_encode(tok, text, 1, &ids, &n);
    if (rc) return rc;
    if (cut > 0 && n > cut) n = cut;
    if (n < 2) {
        free(ids);
        return sks_fail(SKS_EARG, "a prompt gives fewer than 2 tokens");
    }
    return sks__seqs_push(s, ids, n);
}

int sks_cmd_sinks(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *kvmap = NULL, *prompt = NULL, *prompts_file = NULL;
    const char *tokens = NULL, *tokens_file = NULL, *tok_path = NULL, *sink_mode = "auto";
    int json = 0, quiet = 0, rc = 0, ret = 1;
    long seed = 1;
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    sks_spike_rule rule = {o.outlier, o.abs_thresh, o.ratio, o.min_blocks};
    unsigned rule_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define SKS__NEED() SKS_CLI_TAKE("sinks", a, v, i)
        int usage = 0;
        if (sks_cli_rule_option("sinks", a, v, &rule, &rule_given, &usage)) {
            if (usage) return 2;
            i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks__sinks_help(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--out")) {
            SKS__NEED();
            out = v;
        } else if (!strcmp(a, "--kv-map")) {
            SKS__NEED();
            kvmap = v;
        } else if (!strcmp(a, "--prompt")) {
            SKS__NEED();
            prompt = v;
        } else if (!strcmp(a, "--prompts")) {
            SKS__NEED();
            prompts_file = v;
        } else if (!strcmp(a, "--tokens")) {
            SKS__NEED();
            tokens = v;
        } else if (!strcmp(a, "--tokens-file")) {
            SKS__NEED();
            tokens_file = v;
        } else if (!strcmp(a, "--tokenizer")) {
            SKS__NEED();
            tok_path = v;
        } else if (!strcmp(a, "--seed")) {
            SKS__NEED();
            if ((rc = sks_cli_parse_int(a, v, 0, 2147483647L, &seed))) return sks_cli_fail("sinks", rc) + 1;
        } else if (!strcmp(a, "--eps")) {
            SKS__NEED();
            if ((rc = sks_cli_parse_double(a, v, &o.eps))) return sks_cli_fail("sinks", rc) + 1;
        } else if (!strcmp(a, "--sink-token")) {
            SKS__NEED();
            if (strcmp(v, "auto") && strcmp(v, "spike") && strcmp(v, "first")) {
                fprintf(stderr, "sinkscope sinks: --sink-token: '%s' is not auto, spike or first\n", v);
                return 2;
            }
            sink_mode = v;
        } else if (!strcmp(a, "--rank-by")) {
            SKS__NEED();
            if ((o.main_pred = sks_sinks_pred_parse(v)) < 0) {
                fprintf(stderr, "sinkscope sinks: --rank-by: unknown predictor '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--threshold")) {
            SKS__NEED();
            const char *eq = strchr(v, '=');
            char name[32];
            size_t nl = eq ? (size_t)(eq - v) : 0;
            int p = -1;
            double x;
            if (eq && nl < sizeof name) {
                memcpy(name, v, nl);
                name[nl] = '\0';
                p = sks_sinks_pred_parse(name);
            }
            if (p < 0 || sks_cli_parse_double("--threshold", eq + 1, &x)) {
                fprintf(stderr, "sinkscope sinks: --threshold: expected NAME=X with a predictor name, got '%s'\n", v);
                return 2;
            }
            o.threshold[p] = x;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "sinkscope sinks: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (!model_path) {
            model_path = a;
        } else {
            fprintf(stderr, "sinkscope sinks: unexpected argument '%s'\n", a);
            return 2;
        }
#undef SKS__NEED
    }
    if (!model_path || !out) {
        fprintf(stderr, "sinkscope sinks: %s (see sinkscope sinks --help)\n", !model_path ? "give a MODEL" : "give -o OUT.msgpack");
        return 2;
    }
    if ((prompt != NULL) + (prompts_file != NULL) + (tokens != NULL) + (tokens_file != NULL) > 1) {
        fprintf(stderr, "sinkscope sinks: give at most one of --prompt, --prompts, --tokens, --tokens-file\n");
        return 2;
    }
    if (sks_cli_rule_finish("sinks", &rule, rule_given)) return 2;
    sks_spike_rule_unpack(&rule, &o.outlier, &o.abs_thresh, &o.ratio, &o.min_blocks);
    if (!(o.eps > 0.0 && o.eps < 1.0)) {
        fprintf(stderr, "sinkscope sinks: --eps must be in (0, 1)\n");
        return 2;
    }
    /* Under mpirun every rank reads the model and the prompts and runs the forward passes;
     * the layers' geometry is split across the ranks and gathered on rank 0, which alone
     * writes (docs/scale.md). Until the split every failure goes to `ready`, so that all
     * ranks reach the collective agreement together. */
    sks_cli_progress_install(quiet);

    sks_model *m = NULL;
    sks_tokenizer *tok = NULL;
    sks__seqs S = {0};
    sks_sinks_result *r = NULL;
    char *text = NULL;

    const char *source = NULL;
    if ((rc = sks_model_open(model_path, &m))) goto ready;

    if (tokens || tokens_file) {
        if (tokens_file && !(text = sks__read_text(tokens_file))) {
            rc = SKS_EIO;
            goto ready;
        }
        if ((rc = sks__parse_seqs(tokens ? tokens : text, tokens ? ";" : "\n", &S))) goto ready;
        source = tokens ? "--tokens" : "--tokens-file";
    } else {
        int trc = sks_tokenizer_open_for_model(m, tok_path, &tok);
        if (trc && (prompt || prompts_file || tok_path)) {
            rc = trc;
            goto ready;
        }
        if (prompt) {
            if ((rc = sks__encode(tok, prompt, 0, &S))) goto ready;
            source = "--prompt";
        } else if (prompts_file) {
            if (!(text = sks__read_text(prompts_file))) {
                rc = SKS_EIO;
                goto ready;
            }
            char *save = NULL;
            for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                size_t n = strlen(line);
                if (n && line[n - 1] == '\r') line[--n] = '\0';
                if (!n) continue;
                if ((rc = sks__encode(tok, line, 0, &S))) goto ready;
            }
            source = "--prompts";
        } else { /* the one built-in prompt set (analysis/sks_rule.h) */
            if (!tok && !quiet) fprintf(stderr, "sinks: no tokenizer (%s): using pseudo-random token ids\n", sks_last_error());
            int32_t **pids = NULL;
            int *plens = NULL, np = 0;
            if ((rc = sks_default_prompts(m, tok, (uint64_t)seed, &pids, &plens, &np))) goto ready;
            for (int i = 0; i < np && !rc; i++) {
                rc = sks__seqs_push(&S, pids[i], plens[i]);
                pids[i] = NULL;
            }
            sks_prompts_free(pids, plens, np);
            if (rc) goto ready;
            source = tok ? "built-in texts" : "pseudo-random ids (no tokenizer)";
        }
    }
    if (S.n > 0 && (rc = sks_prompts_check(m, S.n, (const int32_t *const *)S.ids, S.lens, source))) goto ready;
    if (S.n == 0) {
        rc = sks_fail(SKS_EARG, "no input sequences");
        goto ready;
    }
    if (!quiet && sks_dist_rank() == 0) {
        int64_t nt = 0;
        for (int i = 0; i < S.n; i++) nt += S.lens[i];
        fprintf(stderr, "sinks: %d sequence%s, %lld tokens (%s)\n", S.n, S.n == 1 ? "" : "s", (long long)nt, source);
    }
ready:
    if ((rc = sks_dist_agree(rc))) goto fail;
    o.first_as_sink = !strcmp(sink_mode, "first");
    int fell_back = 0;
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    rc = sks_sinks_analyze(m, S.n, (const int32_t *const *)S.ids, S.lens, &o, !strcmp(sink_mode, "auto"), &sp, &fell_back,
                            &r);
    if (rc) goto fail;
    if (sks_dist_rank() != 0) { /* rank 0 gathered the layers and writes */
        ret = 0;
        goto done;
    }
    if (fell_back && !quiet)
        fprintf(stderr, "sinks: no spike token passes the spike rule: position 0 stands in as the sink token\n");
    if ((rc = sks_sinks_write(r, m, &o, out))) goto fail;
    if (kvmap && (rc = sks_sinks_write_kv_map(r, m, &o, kvmap))) goto fail;
    if (!quiet) {
        fprintf(stderr,
                "sinks: %d of %d heads have alpha_0 > %g averaged over the prompts; sink ratio %.1f%% (share of sink "
                "heads per prompt, averaged); spike channels:",
                r->n_sink_heads, r->n_layers * r->n_heads, o.eps, r->sink_ratio);
        for (int i = 0; i < r->n_spike_channels && i < 8; i++) fprintf(stderr, " %d", r->spike_channels[i]);
        fprintf(stderr, "%s\n", r->n_spike_channels ? "" : " none");
        fprintf(stderr, "sinks: ROC AUC vs alpha_0 > %g:", o.eps);
        for (int p = 0; p < SKS_PRED_COUNT; p++) fprintf(stderr, " %s %.3f", sks_sinks_pred_name(p), r->auc[p]);
        fprintf(stderr, "\nsinks: wrote %s%s%s\n", out, kvmap ? " and " : "", kvmap ? kvmap : "");
    }
    if (json) {
        char *js = NULL;
        if ((rc = sks_sinks_json_summary(r, m, &o, &js))) goto fail;
        printf("%s\n", js);
        free(js);
    }
    ret = 0;
    goto done;
fail:
    ret = sks_cli_fail("sinks", rc ? rc : SKS_EIO);
done:
    sks_sinks_result_free(r);
    sks__seqs_free(&S);
    free(text);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return ret;
}
