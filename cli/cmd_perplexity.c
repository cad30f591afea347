/* cmd_perplexity.c - `sinkscope perplexity MODEL --text FILE`: windowed perplexity
 * (SPEC section 8; library: analysis/sks_perplexity.h). */
#include "cli.h"
#include "../analysis/sks_perplexity.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


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
    int want_json = 0, quiet = 0, rc, code;
    sks_ppl_opts o;
    sks_ppl_opts_default(&o);
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("--text FILE", &text_path, "the text (UTF-8), required"),
        SKS_OPT_INT("--window W", &o.window, 2, 1 << 20, "tokens per window (default: the model's context)"),
        SKS_OPT_INT("--stride S", &o.stride, 2, 1 << 20, "start of one window to the next (default W; at most W)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file when it is not beside the model"),
        SKS_OPT_STR("-o, --output FILE", &out_path, "msgpack result, schema sinkscope.perplexity/1\n(docs/schema-cost.md)"),
        SKS_OPT_FLAG("--json", &want_json, "a JSON summary on stdout instead of the text line"),
        SKS_OPT_FLAG("-q, --quiet", &quiet, "no progress on stderr"),
        SKS_OPT_HELP,
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {"perplexity", "MODEL --text FILE [--window W] [--stride S]\n"
                             "                            [--tokenizer PATH] [-o OUT.msgpack] [--json] [-q]",
                             "Perplexity of the model on a text: exp of the mean next-token negative log\n"
                             "likelihood. The text (encoded with BOS first) is cut into windows of W tokens\n"
                             "starting every S tokens; each window scores the targets that no earlier window\n"
                             "scored (with S < W they see more history). Logits are f32, the log-sum-exp and\n"
                             "the sums f64 (docs/cost.md).\n",
                             "example:\n  sinkscope perplexity model-dir --text book.txt --stride 128 -o ppl.msgpack\n",
                             NULL, opts, "MODEL", 1, 1, &model_path, NULL};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!text_path) return sks_cli_usage("perplexity", "give MODEL and --text FILE");
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
