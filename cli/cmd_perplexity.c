/* cmd_perplexity.c - `sinkscope perplexity MODEL --text FILE`: windowed perplexity
 * (SPEC section 8; library: analysis/sks_perplexity.h). */
#include "cli.h"
#include "../analysis/sks_perplexity.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
    sks_cli_text_cmd c; /* first: the command's sequence */
    sks_ppl_opts o;
    sks_ppl_result *r;
} sks__ppl;

static int sks__ppl_run(sks_cli_text_cmd *c, const sks_model *m, const int32_t *ids, int n) {
    sks__ppl *P = (sks__ppl *)c;
    sks_ppl_ctx *ctx = NULL;
    int window, stride;
    int rc = sks_ppl_resolve(m, &P->o, &window, &stride);
    if (!rc) rc = sks_ppl_ctx_new(m, window < n ? window : n, &ctx);
    if (!rc) rc = sks_ppl_run(ctx, ids, n, window, stride, NULL, NULL, &P->r);
    sks_ppl_ctx_free(ctx);
    return rc;
}

static int sks__ppl_write(sks_cli_text_cmd *c, const sks_model *m, const char *path) {
    return sks_ppl_write(((sks__ppl *)c)->r, m, c->text, path);
}

static void sks__ppl_print(sks_cli_text_cmd *c, const sks_model *m) {
    const sks_ppl_result *r = ((sks__ppl *)c)->r;
    if (!c->json) {
        printf("perplexity %.4f (mean NLL %.6f nats) over %lld predicted tokens of %d, %d window(s) of %d, stride %d\n",
               r->ppl, r->mean_nll, (long long)r->n_scored, r->n_tokens, r->n_windows, r->window, r->stride);
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:I, s:f, s:f, s:f}", "schema",
                          "sinkscope.perplexity-summary/1", "model", sks_model_path(m), "n_tokens", r->n_tokens,
                          "window", r->window, "stride", r->stride, "n_windows", r->n_windows, "n_scored",
                          (json_int_t)r->n_scored, "nll_sum", r->nll_sum, "mean_nll", r->mean_nll, "perplexity", r->ppl);
    sks_cli_print_json(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
}

static const char sks__usage[] =
    "MODEL --text FILE [--window W] [--stride S]\n"
    "                            [--tokenizer PATH] [-o OUT.msgpack] [--json] [-q]";

static const char sks__about[] =
    "Perplexity of the model on a text: exp of the mean next-token negative log\n"
    "likelihood. The text (encoded with BOS first) is cut into windows of W tokens\n"
    "starting every S tokens; each window scores the targets that no earlier window\n"
    "scored (with S < W they see more history). Logits are f32, the log-sum-exp and\n"
    "the sums f64 (docs/cost.md).\n";

static const char sks__epilogue[] =
    "example:\n  sinkscope perplexity model-dir --text book.txt --stride 128 -o ppl.msgpack\n";

int sks_cmd_perplexity(int argc, char **argv) {
    sks__ppl P = {.c = {.name = "perplexity", .usage = sks__usage, .about = sks__about, .epilogue = sks__epilogue,
                  .json_help = "a JSON summary on stdout instead of the text line",
                  .run = sks__ppl_run, .write = sks__ppl_write, .print = sks__ppl_print}};
    sks_ppl_opts_default(&P.o);
    int code;
    const sks_cli_opt opts[] = {
        SKS_OPT_TEXT_INPUT(&P.c),
        SKS_OPT_INT("--window W", &P.o.window, 2, 1 << 20, "tokens per window (default: the model's context)"),
        SKS_OPT_INT("--stride S", &P.o.stride, 2, 1 << 20, "start of one window to the next (default W; at most W)"),
        SKS_OPT_STR("-o, --output FILE", &P.c.output, "msgpack result, schema sinkscope.perplexity/1\n(docs/schema-cost.md)"),
        SKS_OPT_END,
    };
    if (!sks_cli_text_parse(&P.c, opts, argc, argv, &code)) return code;
    code = sks_cli_text_run(&P.c);
    sks_ppl_result_free(P.r);
    return code;
}
