/* cmd_kv_eval.c - `sinkscope kv-eval MODEL --text FILE --window W`: perplexity with the
 * attention limited as an evicting KV cache would (library: analysis/sks_kveval.h). */
#include "cli.h"
#include "../analysis/sks_kveval.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sks__kv_json(const sks_kveval_result *r, const sks_model *m) {
    json_t *vs = json_array();
    for (int v = 0; v < SKS_KV_N; v++) {
        const sks_kveval_variant *x = &r->v[v];
        if (x->present)
            json_array_append_new(vs, json_pack("{s:s, s:f, s:f, s:I, s:I, s:f, s:f}", "name", sks_kv_variant_name(v),
                                                "perplexity", x->ppl->ppl, "mean_nll", x->ppl->mean_nll, "n_scored",
                                                (json_int_t)x->ppl->n_scored, "kv_entries", (json_int_t)x->kv_entries,
                                                "kv_bytes", x->kv_bytes, "kv_fraction", x->kv_fraction));
    }
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:i, s:o, s:o}", "schema", "sinkscope.kv-eval-summary/1", "model",
                          sks_model_path(m), "kv_window", r->kv_window, "n_sink", r->n_sink, "window", r->T,
                          "n_map_kv_heads", r->map_kv ? json_integer(r->n_map_kv_heads) : json_null(), "variants", vs);
    sks_cli_print_json(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
}

static void sks__kv_table(const sks_kveval_result *r) {
    const double nll0 = r->v[SKS_KV_FULL].ppl->mean_nll;
    printf("KV window %d, %d sink key(s), perplexity windows of %d tokens\n", r->kv_window, r->n_sink, r->T);
    printf("  %-10s %12s %10s %12s %12s %8s\n", "variant", "perplexity", "dNLL", "KV entries", "KV KiB", "of full");
    for (int v = 0; v < SKS_KV_N; v++) {
        const sks_kveval_variant *x = &r->v[v];
        if (!x->present) continue;
        printf("  %-10s %12.4f %+10.5f %12lld %12.1f %7.1f%%\n", sks_kv_variant_name(v), x->ppl->ppl,
               x->ppl->mean_nll - nll0, (long long)x->kv_entries, x->kv_bytes / 1024.0, 100.0 * x->kv_fraction);
    }
    if (r->map_kv) printf("  kvmap keeps key 0 for %d (layer, KV head) pair(s)\n", r->n_map_kv_heads);
    else printf("  (kvmap: give --kv-map FILE from `sinkscope sinks --kv-map`)\n");
}

typedef struct {
    sks_cli_text_cmd c; /* first: the command's sequence */
    sks_kveval_opts o;
    const char *map_path;
    unsigned char *map_kv;
    sks_kveval_result *r;
} sks__kv;

static int sks__kv_run(sks_cli_text_cmd *c, const sks_model *m, const int32_t *ids, int n) {
    sks__kv *K = (sks__kv *)c;
    int rc = K->map_path ? sks_kvmap_read(K->map_path, m, &K->map_kv) : 0;
    return rc ? rc : sks_kveval_run(m, ids, n, &K->o, K->map_kv, &K->r);
}

static int sks__kv_write(sks_cli_text_cmd *c, const sks_model *m, const char *path) {
    return sks_kveval_write(((sks__kv *)c)->r, m, c->text, path);
}

static void sks__kv_print(sks_cli_text_cmd *c, const sks_model *m) {
    if (c->json) sks__kv_json(((sks__kv *)c)->r, m);
    else sks__kv_table(((sks__kv *)c)->r);
}

static const char sks__usage[] =
    "MODEL --text FILE --window W [--sinks S] [--kv-map FILE]\n"
    "                         [--context T] [--stride N] [--tokenizer PATH]\n"
    "                         [-o OUT.msgpack] [--json] [-q]";

static const char sks__about[] =
    "What evicting the KV cache costs: the perplexity of the text (windows of the\n"
    "context, as `sinkscope perplexity`) when every query sees only\n"
    "  full       all earlier keys\n"
    "  recent     the last W keys\n"
    "  streaming  the first S keys and the last W (StreamingLLM)\n"
    "  kvmap      the last W, and the first key for the heads the KV map marks\n"
    "             (`sinkscope sinks --kv-map FILE`; only with --kv-map)\n"
    "and the KV memory each keeps for a full window (f16 K and V). Positions stay the\n"
    "real ones (docs/cost.md).\n";

static const char sks__epilogue[] =
    "example:\n"
    "  sinkscope sinks model-dir --kv-map kv.json -o sinks.msgpack\n"
    "  sinkscope kv-eval model-dir --text book.txt --window 64 --kv-map kv.json\n";

int sks_cmd_kv_eval(int argc, char **argv) {
    sks__kv K = {.c = {.name = "kv-eval", .usage = sks__usage, .about = sks__about, .epilogue = sks__epilogue,
                  .json_help = "a JSON summary on stdout instead of the table",
                  .run = sks__kv_run, .write = sks__kv_write, .print = sks__kv_print}};
    sks_kveval_opts_default(&K.o);
    int code;
    const sks_cli_opt opts[] = {
        SKS_OPT_TEXT_INPUT(&K.c),
        SKS_OPT_INT("--window W", &K.o.kv_window, 1, 1 << 20, "keys kept besides the sinks, required"),
        SKS_OPT_INT("--sinks S", &K.o.n_sink, 0, 1 << 20, "first keys kept by streaming (default 4)"),
        SKS_OPT_STR("--kv-map FILE", &K.map_path, "sinkscope.kvmap/1 JSON for the kvmap variant"),
        SKS_OPT_INT("--context T", &K.o.ppl.window, 1, 1 << 20, "tokens per perplexity window (default: the model's context)"),
        SKS_OPT_INT("--stride N", &K.o.ppl.stride, 1, 1 << 20, "perplexity window stride (default T)"),
        SKS_OPT_STR("-o, --output FILE", &K.c.output, "msgpack, schema sinkscope.kv-eval/1 (docs/schema-cost.md)"),
        SKS_OPT_END,
    };
    if (!sks_cli_text_parse(&K.c, opts, argc, argv, &code)) return code;
    if (K.o.kv_window < 1) return sks_cli_usage("kv-eval", "give --window W");
    code = sks_cli_text_run(&K.c);
    sks_kveval_result_free(K.r);
    free(K.map_kv);
    return code;
}
