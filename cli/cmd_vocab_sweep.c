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

static const char *sks__vpiece(void *ud, int id) { return ud ? sks_tokenizer_piece(ud, id) : NULL; }

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

static const char sks__about[] =
    "Run every token v alone at position 0 (batches of independent one-token sequences)\n"
    "and measure ratio(v) = max over blocks b = 2l+2, l <= L-2, of max_c |h_b[v,c]| / m_b,\n"
    "where m_b is the typical median |h| of block b over positions > 0 of reference\n"
    "prompts. v is a spike token when ratio(v) >= --ratio and max |h| >= --abs (the\n"
    "paper's Table 2: > 98% of tokens spike in Llama 2/3 and Qwen 2.5/3).\n";

static const char sks__examples[] =
    "under mpirun -np N the swept tokens are split across the N ranks (docs/scale.md)\n\n"
    "example:\n"
    "  sinkscope vocab-sweep path/to/model.gguf -o vocab.msgpack --json | jq .spike_fraction\n";

int sks_cmd_vocab_sweep(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *prompts_path = NULL, *tok_path = NULL, *medians_s = NULL;
    int json = 0, quiet = 0, prompts_ids = 0, resume = 0, code;
    sks_vocab_opts vo;
    sks_vocab_opts_default(&vo);
    const sks_cli_opt opts[] = {
        SKS_OPT_INT("--sample N", &vo.sample, 0, INT32_MAX, "a deterministic sample of N token ids (default: all)"),
        SKS_OPT_U64("--seed S", &vo.seed, 0, INT32_MAX, "sample seed (default 1)"),
        SKS_OPT_STR("--prompts FILE", &prompts_path,
                    "reference prompts for the medians: one per line, text (with the\n"
                    "model's tokenizer) or, with --prompts-ids, comma/space separated ids"),
        SKS_OPT_FLAG("--prompts-ids", &prompts_ids,
                     "read --prompts lines as token ids\n"
                     "(default: the built-in prompts of every command through the\n"
                     "tokenizer, else 4 pseudo-random windows of " SKS_CLI_XSTR(SKS_DEFAULT_PROMPT_T) " ids after BOS)"),
        SKS_OPT_STR("--medians M0,M1,..", &medians_s, "the 2L+1 typical medians (skips the reference prompts)"),
        SKS_OPT_NUM("--ratio X", &vo.ratio, "spike ratio (default 100)"),
        SKS_OPT_NUM_IN("--abs X", &vo.abs_thresh, 0, HUGE_VAL, "spike |h| (default 0 = off; the paper uses 100 for 7B models)"),
        SKS_OPT_INT("--batch N", &vo.batch, 1, 1 << 16, "tokens per forward batch (default 256)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file (default: found beside / inside MODEL)"),
        SKS_OPT_STR("-o, --output FILE", &out_path, "msgpack result (schema sinkscope.vocab/1, docs/schema-vocab.md)"),
        SKS_OPT_FLAG("--resume", &resume, "keep the finished batches of an interrupted run (OUT.parts/)"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "vocab-sweep", .opts = opts, .model = &model_path, .json = &json, .quiet = &quiet,
        .usage = "MODEL [options] -o OUT.msgpack [--json]", .about = sks__about, .epilogue = sks__examples,
        .json_help = "JSON summary on stdout: n_tokens, n_spike, spike_fraction,\n"
                     "top_channel, typical_median, exceptions [{id, piece, ratio}]", .quiet_help = "no progress"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!out_path) return sks_cli_usage("vocab-sweep", "give -o OUT.msgpack");
    if (!(vo.ratio > 0)) return sks_cli_usage("vocab-sweep", "--ratio: want a positive number");
    sks_cli_progress_install(quiet);
    if (quiet) sks_log_set_level(SKS_LOG_WARN);
    sks_model *m = NULL;
    if (sks_cli_open_model("vocab-sweep", model_path, &m)) return 1;
    const sks_arch *ar = sks_model_arch(m);
    int rc = 0;
    code = 0;
    sks_tokenizer *tok = NULL;
    sks_prompt_set pl = {0};
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
    } else { /* the reference prompts, or the one built-in prompt set (analysis/sks_rule.h) */
        const sks_prompt_source src = {NULL, NULL, prompts_ids ? NULL : prompts_path, prompts_ids ? prompts_path : NULL};
        if ((rc = sks_prompt_set_make(m, tok, &src, 1, &pl))) goto fail;
        if (prompts_path) ref_source = "--prompts";
        else if (!tok) ref_source = "pseudo-random windows";
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
        sks_cli_print_json(j, JSON_COMPACT);
    }
    goto done;
fail:
    code = sks_cli_fail("vocab-sweep", rc);
done:
    sks_vocab_result_free(r);
    sks_dist_parts_free(&parts);
    sks_prompt_set_free(&pl);
    free(med);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return code;
}
