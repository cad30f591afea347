/* cmd_vocab_sweep.c - `sinkscope vocab-sweep`: every token alone at position 0. */
#include "cli.h"
#include "../analysis/sks_out.h"
#include "../dist/sks_dist.h"
#include "../analysis/sks_trace.h"
#include "../analysis/sks_vocab.h"
#include "../loaders/sks_tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void sks__vocab_help(FILE *f) {
    fprintf(f,
            "usage: sinkscope vocab-sweep MODEL [options] -o OUT.msgpack [--json]\n\n"
            "Run every token v alone at position 0 (batches of independent one-token sequences)\n"
            "and measure ratio(v) = max over blocks b = 2l+2, l <= L-2, of max_c |h_b[v,c]| / m_b,\n"
            "where m_b is the typical median |h| of block b over positions > 0 of reference\n"
            "prompts. v is a spike token when ratio(v) >= --ratio and max |h| >= --abs (the\n"
            "paper's Table 2: > 98%% of tokens spike in Llama 2/3 and Qwen 2.5/3).\n\n"
            "options:\n"
            "  --sample N        a deterministic sample of N token ids (default: all)\n"
            "  --seed S          sample seed (default 1)\n"
            "  --prompts FILE    reference prompts for the medians: one per line, text (with the\n"
            "                    model's tokenizer) or, with --prompts-ids, comma/space separated ids\n"
            "  --prompts-ids     read --prompts lines as token ids\n"
            "                    (default: the built-in prompts of every command through the\n"
            "                    tokenizer, else 4 pseudo-random windows of %d ids after BOS)\n"
            "  --medians M0,M1,.. the 2L+1 typical medians (skips the reference prompts)\n"
            "  --ratio X         spike ratio (default 100)\n"
            "  --abs X           spike |h| (default 0 = off; the paper uses 100 for 7B models)\n"
            "  --batch N         tokens per forward batch (default 256)\n"
            "  --tokenizer PATH  tokenizer file (default: found beside / inside MODEL)\n"
            "  -o, --output FILE msgpack result (schema sinkscope.vocab/1, docs/schema-vocab.md)\n"
            "  --json            JSON summary on stdout: n_tokens, n_spike, spike_fraction,\n"
            "                    top_channel, typical_median, exceptions [{id, piece, ratio}]\n"
            "  -q, --quiet       no progress\n"
            "  --resume          keep the finished batches of an interrupted run (OUT.parts/)\n"
            "  under mpirun -np N the swept tokens are split across the N ranks (docs/scale.md)\n\n"
            "example:\n"
            "  sinkscope vocab-sweep path/to/model.gguf -o vocab.msgpack --json | jq .spike_fraction\n",
            SKS_DEFAULT_PROMPT_T);
}

static const char *sks__vpiece(void *ud, int id) { return ud ? sks_tokenizer_piece(ud, id) : NULL; }

typedef struct {
    int n, cap;
    int32_t **ids;
    int *lens;
} sks__plist;

static void sks__plist_free(sks__plist *p) {
    for (int i = 0; i < p->n; i++) free(p->ids[i]);
    free(p->ids);
    free(p->lens);
    memset(p, 0, sizeof *p);
}

static int sks__plist_push(sks__plist *p, int32_t *ids, int n) {
    if (p->n == p->cap) {
        int nc = p->cap ? 2 * p->cap : 8;
        int32_t **ni = realloc(p->ids, (size_t)nc * sizeof *ni);
        if (!ni) return sks_fail(SKS_ENOMEM, "out of memory");
        p->ids = ni;
        int *nl = realloc(p->lens, (size_t)nc * sizeof *nl);
        if (!nl) return sks_fail(SKS_ENOMEM, "out of memory");
        p->lens = nl;
        p->cap = nc;
    }
    p->ids[p->n] = ids;
    p->lens[p->n] = n;
    p->n++;
    return 0;
}

static int sks__read_prompts(const char *path, const sks_tokenizer *tok, int as_ids, int V, sks__plist *p) {
    FILE *f = fopen(path, "r");
    if (!f) return sks_fail(SKS_EIO, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0, ln = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        ln++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        int32_t *ids = NULL;
        int n = 0;
        if (as_ids)
            rc = sks_parse_ids(line, &ids, &n);
        else if (tok)
            rc = sks_tokenizer_encode(tok, line, 1, &ids, &n);
        else
            rc = sks_fail(SKS_ENOTFOUND, "%s: text prompts need the model's tokenizer (or --prompts-ids)", path);
        if (rc) break;
        for (int i = 0; i < n && !rc; i++)
            if (ids[i] < 0 || ids[i] >= V) rc = sks_fail(SKS_EARG, "%s:%d: token %d outside the vocabulary (%d)", path, ln, ids[i], V);
        if (!rc && n < 2) {
            free(ids);
            continue; /* positions > 0 only: a one-token line adds nothing */
        }
        if (!rc) rc = sks__plist_push(p, ids, n);
        if (rc) free(ids);
    }
    free(line);
    fclose(f);
    if (!rc && p->n == 0) rc = sks_fail(SKS_EARG, "%s: no prompt with at least 2 tokens", path);
    return rc;
}

static int sks__parse_medians(const char *s, int n, double **out) {
    double *v = calloc((size_t)n, sizeof *v);
    if (!v) return sks_fail(SKS_ENOMEM, "out of memory");
    const char *p = s;
    int k = 0;
    while (*p && k < n) {
        char *end;
        errno = 0;
        v[k] = strtod(p, &end);
        if (end == p || errno || !(v[k] > 0)) {
            free(v);
            return sks_fail(SKS_EARG, "--medians: bad value near '%s'", p);
        }
        k++;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (k != n || *p) {
        free(v);
        return sks_fail(SKS_EARG, "--medians: want exactly %d positive values (2L+1)", n);
    }
    *out = v;
    return 0;
}

int sks_cmd_vocab_sweep(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *prompts_path = NULL, *tok_path = NULL, *medians_s = NULL;
    int json = 0, quiet = 0, prompts_ids = 0, resume = 0;
    sks_vocab_opts vo;
    sks_vocab_opts_default(&vo);
    long lv;
    double dv;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *nx = i + 1 < argc ? argv[i + 1] : NULL;
#define SKS__NEED() SKS_CLI_TAKE("vocab-sweep", a, nx, i)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks__vocab_help(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            SKS__NEED();
            out_path = nx;
        } else if (!strcmp(a, "--sample")) {
            SKS__NEED();
            if (sks_cli_parse_int(a, nx, 0, INT32_MAX, &lv)) return sks_cli_fail("vocab-sweep", SKS_EARG) + 1;
            vo.sample = (int)lv;
        } else if (!strcmp(a, "--seed")) {
            SKS__NEED();
            if (sks_cli_parse_int(a, nx, 0, INT32_MAX, &lv)) return sks_cli_fail("vocab-sweep", SKS_EARG) + 1;
            vo.seed = (uint64_t)lv;
        } else if (!strcmp(a, "--batch")) {
            SKS__NEED();
            if (sks_cli_parse_int(a, nx, 1, 1 << 16, &lv)) return sks_cli_fail("vocab-sweep", SKS_EARG) + 1;
            vo.batch = (int)lv;
        } else if (!strcmp(a, "--ratio")) {
            SKS__NEED();
            if (sks_cli_parse_double(a, nx, &dv) || !(dv > 0)) {
                fprintf(stderr, "sinkscope vocab-sweep: --ratio: want a positive number\n");
                return 2;
            }
            vo.ratio = dv;
        } else if (!strcmp(a, "--abs")) {
            SKS__NEED();
            if (sks_cli_parse_double(a, nx, &dv) || !(dv >= 0)) {
                fprintf(stderr, "sinkscope vocab-sweep: --abs: want a number >= 0\n");
                return 2;
            }
            vo.abs_thresh = dv;
        } else if (!strcmp(a, "--prompts")) {
            SKS__NEED();
            prompts_path = nx;
        } else if (!strcmp(a, "--prompts-ids")) {
            prompts_ids = 1;
        } else if (!strcmp(a, "--medians")) {
            SKS__NEED();
            medians_s = nx;
        } else if (!strcmp(a, "--tokenizer")) {
            SKS__NEED();
            tok_path = nx;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sinkscope vocab-sweep: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (!model_path) {
            model_path = a;
        } else {
            fprintf(stderr, "sinkscope vocab-sweep: unexpected argument '%s'\n", a);
            return 2;
        }
#undef SKS__NEED
    }
    if (!model_path || !out_path) {
        fprintf(stderr, "sinkscope vocab-sweep: %s (see sinkscope vocab-sweep --help)\n",
                !model_path ? "give a MODEL" : "give -o OUT.msgpack");
        return 2;
    }
    sks_cli_progress_install(quiet);
    if (quiet) sks_log_set_level(SKS_LOG_WARN);
    sks_model *m = NULL;
    if (sks_cli_open_model("vocab-sweep", model_path, &m)) return 1;
    const sks_arch *ar = sks_model_arch(m);
    int rc = 0, code = 0;
    sks_tokenizer *tok = NULL;
    sks__plist pl;
    memset(&pl, 0, sizeof pl);
    double *med = NULL;
    sks_vocab_result *r = NULL;
    sks_dist_parts parts;
    memset(&parts, 0, sizeof parts);
    const char *ref_source = "built-in texts";
    if (sks_tokenizer_open_for_model(m, tok_path, &tok)) {
        if (tok_path) {
            rc = SKS_ENOTFOUND;
            goto fail;
        }
        tok = NULL;
        sks_clear_error();
    }
    if (medians_s) {
        if ((rc = sks__parse_medians(medians_s, 2 * ar->n_layers + 1, &med))) goto fail;
        vo.medians = med;
        ref_source = "--medians";
    } else if (prompts_path) {
        if ((rc = sks__read_prompts(prompts_path, tok, prompts_ids, ar->vocab_size, &pl))) goto fail;
        ref_source = "--prompts";
    } else { /* the one built-in prompt set (analysis/sks_rule.h), as every command */
        if (!tok) ref_source = "pseudo-random windows";
        int32_t **pids = NULL;
        int *plens = NULL, np = 0;
        if ((rc = sks_default_prompts(m, tok, 1, &pids, &plens, &np))) goto fail;
        for (int i = 0; i < np && !rc; i++)
            if (!(rc = sks__plist_push(&pl, pids[i], plens[i]))) pids[i] = NULL;
        sks_prompts_free(pids, plens, np);
        if (rc) goto fail;
    }
    if (!med && pl.n == 0) {
        rc = sks_fail(SKS_EARG, "no reference prompt with >= 2 tokens for the typical medians");
        goto fail;
    }
    sks_out in;
    sks_out_init(&in);
    sks_vocab_inputs(&in, m, &vo, pl.n, (const int32_t *const *)pl.ids, pl.lens); /* the resume manifest */
    rc = sks_dist_parts_open(&parts, out_path, &in, resume);
    sks_out_free(&in);
    if (rc) goto fail;
    /* per-batch parts; under mpirun the batches are dealt out to the ranks, gathered on rank 0 */
    sks_split sp;
    sks_dist_split_init(&sp, &parts);
    if ((rc = sks_vocab_run(m, &vo, pl.n, (const int32_t *const *)pl.ids, pl.lens, &sp, &r))) goto fail;
    if (sks_dist_rank() != 0) goto done;
    if (resume) sks_log(SKS_LOG_INFO, "vocab-sweep: %d batch(es) resumed from %s", r->n_resumed, parts.dir);
    if ((rc = sks_vocab_write(r, m, &vo, tok ? sks__vpiece : NULL, tok, out_path))) goto fail;
    sks_dist_parts_remove(&parts);
    sks_log(SKS_LOG_INFO, "vocab-sweep: %d of %d tokens spike (%.4f), top channel %d, %.1fs", r->n_spike, r->n_tokens,
            r->spike_fraction, r->top_channel, r->seconds);
    if (!json && !quiet) {
        printf("vocabulary: %d of %d tokens spike alone at position 0 (ratio >= %g x the typical median", r->n_spike,
               r->n_tokens, vo.ratio);
        if (vo.abs_thresh > 0) printf(", |h| >= %g", vo.abs_thresh);
        printf(")");
        if (r->top_channel >= 0) printf(", mostly in channel %d", r->top_channel);
        printf("; %d exceptions\n", r->n_exceptions);
    }
    if (json) {
        json_t *j = json_object(), *tm = json_array(), *ex = json_array();
        json_object_set_new(j, "schema", json_string("sinkscope.vocab/1"));
        json_object_set_new(j, "model", json_string(sks_model_path(m)));
        json_object_set_new(j, "medians_from", json_string(ref_source));
        json_object_set_new(j, "n_tokens", json_integer(r->n_tokens));
        json_object_set_new(j, "n_spike", json_integer(r->n_spike));
        json_object_set_new(j, "spike_fraction", sks_json_num(r->spike_fraction));
        json_object_set_new(j, "ratio", sks_json_num(vo.ratio));
        json_object_set_new(j, "abs", sks_json_num(vo.abs_thresh));
        json_object_set_new(j, "top_channel", json_integer(r->top_channel));
        for (int b = 0; b < r->n_blocks; b++) json_array_append_new(tm, sks_json_num(r->typical_median[b]));
        json_object_set_new(j, "typical_median", tm);
        /* exceptions with their pieces and ratios (ids ascending; r->ids too) */
        int k = 0;
        for (int e = 0; e < r->n_exceptions; e++) {
            int id = r->exceptions[e];
            while (k < r->n_tokens && r->ids[k] < id) k++;
            json_t *je = json_object();
            const char *pc = tok ? sks_tokenizer_piece(tok, id) : NULL;
            json_object_set_new(je, "id", json_integer(id));
            json_object_set_new(je, "piece", pc ? json_string(pc) : json_null());
            if (k < r->n_tokens && r->ids[k] == id)
                json_object_set_new(je, "ratio", sks_json_num(r->ratio[k]));
            json_array_append_new(ex, je);
        }
        json_object_set_new(j, "exceptions", ex);
        json_object_set_new(j, "seconds", sks_json_num(r->seconds));
        sks_json_add_nonfinite(j);
        char *txt = json_dumps(j, JSON_COMPACT);
        if (txt) {
            fputs(txt, stdout);
            fputc('\n', stdout);
            free(txt);
        }
        json_decref(j);
    }
    goto done;
fail:
    code = sks_cli_fail("vocab-sweep", rc);
done:
    sks_vocab_result_free(r);
    sks_dist_parts_free(&parts);
    sks__plist_free(&pl);
    free(med);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return code;
}
