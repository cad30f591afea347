/* cmd_perplexity.c - `sinkscope perplexity MODEL --text FILE`: windowed perplexity
 * (SPEC section 8; library: analysis/sks_perplexity.h). */
#include "cli.h"
#include "../analysis/sks_perplexity.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sks__ppl_help(FILE *f) {
    fprintf(f,
            "usage: sinkscope perplexity MODEL --text FILE [--window W] [--stride S]\n"
            "                            [--tokenizer PATH] [-o OUT.msgpack] [--json] [-q]\n\n"
            "Perplexity of the model on a text: exp of the mean next-token negative log\n"
            "likelihood. The text (encoded with BOS first) is cut into windows of W tokens\n"
            "starting every S tokens; each window scores the targets that no earlier window\n"
            "scored (with S < W they see more history). Logits are f32, the log-sum-exp and\n"
            "the sums f64 (docs/cost.md).\n\n"
            "  --text FILE        the text (UTF-8), required\n"
            "  --window W         tokens per window (default: the model's context)\n"
            "  --stride S         start of one window to the next (default W; at most W)\n"
            "  --tokenizer PATH   tokenizer file when it is not beside the model\n"
            "  -o, --output FILE  msgpack result, schema sinkscope.perplexity/1\n"
            "                     (docs/schema-cost.md)\n"
            "  --json             a JSON summary on stdout instead of the text line\n"
            "  -q, --quiet        no progress on stderr\n\n"
            "example:\n"
            "  sinkscope perplexity model-dir --text book.txt --stride 128 -o ppl.msgpack\n");
}

static void sks__ppl_json(const sks_ppl_result *r, const sks_model *m) {
    json_t *o = json_object();
    json_object_set_new(o, "schema", json_string("sinkscope.perplexity-summary/1"));
    json_object_set_new(o, "model", json_string(sks_model_path(m)));
    json_object_set_new(o, "n_tokens", json_integer(r->n_tokens));
    json_object_set_new(o, "window", json_integer(r->window));
    json_object_set_new(o, "stride", json_integer(r->stride));
    json_object_set_new(o, "n_windows", json_integer(r->n_windows));
    json_object_set_new(o, "n_scored", json_integer(r->n_scored));
    json_object_set_new(o, "nll_sum", json_real(r->nll_sum));
    json_object_set_new(o, "mean_nll", json_real(r->mean_nll));
    json_object_set_new(o, "perplexity", json_real(r->ppl));
    json_dumpf(o, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    fputc('\n', stdout);
    json_decref(o);
}

int sks_cmd_perplexity(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *tok_path = NULL, *out_path = NULL;
    int want_json = 0, quiet = 0, rc;
    sks_ppl_opts o;
    sks_ppl_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks__ppl_help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            want_json = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--text")) {
            SKS_CLI_TAKE("perplexity", a, val, i);
            text_path = val;
        } else if (!strcmp(a, "--tokenizer")) {
            SKS_CLI_TAKE("perplexity", a, val, i);
            tok_path = val;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            SKS_CLI_TAKE("perplexity", a, val, i);
            out_path = val;
        } else if (!strcmp(a, "--window") || !strcmp(a, "--stride")) {
            SKS_CLI_TAKE("perplexity", a, val, i);
            if ((rc = sks_cli_parse_int(a, val, 2, 1 << 20, &lv))) return sks_cli_fail("perplexity", rc);
            *(a[2] == 'w' ? &o.window : &o.stride) = (int)lv;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sinkscope perplexity: unknown option %s (see sinkscope perplexity --help)\n", a);
            return 2;
        } else if (!model_path) {
            model_path = a;
        } else {
            fprintf(stderr, "sinkscope perplexity: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!model_path || !text_path) {
        fprintf(stderr, "sinkscope perplexity: give MODEL and --text FILE (see sinkscope perplexity --help)\n");
        return 2;
    }
    sks_cli_progress_install(quiet);
    sks_model *m = NULL;
    sks_ppl_ctx *c = NULL;
    sks_ppl_result *r = NULL;
    int32_t *ids = NULL;
    int n = 0, window, stride, ret = 1;
    if (sks_cli_open_model("perplexity", model_path, &m)) return 1;
    if ((rc = sks_ppl_resolve(m, &o, &window, &stride)) || (rc = sks_text_file_ids(m, tok_path, text_path, &ids, &n)) ||
        (rc = sks_ppl_ctx_new(m, window < n ? window : n, &c)) ||
        (rc = sks_ppl_run(c, ids, n, window, stride, NULL, NULL, &r)) ||
        (out_path && (rc = sks_ppl_write(r, m, text_path, out_path)))) {
        sks_cli_fail("perplexity", rc);
        goto done;
    }
    if (want_json) sks__ppl_json(r, m);
    else
        printf("perplexity %.4f (mean NLL %.6f nats) over %lld predicted tokens of %d, %d window(s) of %d, stride %d\n",
               r->ppl, r->mean_nll, (long long)r->n_scored, r->n_tokens, r->n_windows, r->window, r->stride);
    if (out_path && !quiet) fprintf(stderr, "sinkscope perplexity: -> %s\n", out_path);
    ret = 0;
done:
    sks_ppl_result_free(r);
    sks_ppl_ctx_free(c);
    free(ids);
    sks_model_close(m);
    return ret;
}
