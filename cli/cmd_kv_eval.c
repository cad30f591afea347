/* cmd_kv_eval.c - `sinkscope kv-eval MODEL --text FILE --window W`: perplexity with the
 * attention limited as an evicting KV cache would (library: analysis/sks_kveval.h). */
#include "cli.h"
#include "../analysis/sks_kveval.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static void sks__kv_json(const sks_kveval_result *r, const sks_model *m) {
    json_t *o = json_object(), *vs = json_array();
    json_object_set_new(o, "schema", json_string("sinkscope.kv-eval-summary/1"));
    json_object_set_new(o, "model", json_string(sks_model_path(m)));
    json_object_set_new(o, "kv_window", json_integer(r->kv_window));
    json_object_set_new(o, "n_sink", json_integer(r->n_sink));
    json_object_set_new(o, "window", json_integer(r->T));
    json_object_set_new(o, "n_map_kv_heads", r->map_kv ? json_integer(r->n_map_kv_heads) : json_null());
    for (int v = 0; v < SKS_KV_N; v++) {
        const sks_kveval_variant *x = &r->v[v];
        if (!x->present) continue;
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(sks_kv_variant_name(v)));
        json_object_set_new(e, "perplexity", json_real(x->ppl->ppl));
        json_object_set_new(e, "mean_nll", json_real(x->ppl->mean_nll));
        json_object_set_new(e, "n_scored", json_integer(x->ppl->n_scored));
        json_object_set_new(e, "kv_entries", json_integer(x->kv_entries));
        json_object_set_new(e, "kv_bytes", json_real(x->kv_bytes));
        json_object_set_new(e, "kv_fraction", json_real(x->kv_fraction));
        json_array_append_new(vs, e);
    }
    json_object_set_new(o, "variants", vs);
    json_dumpf(o, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    fputc('\n', stdout);
    json_decref(o);
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

int sks_cmd_kv_eval(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *tok_path = NULL, *out_path = NULL, *map_path = NULL;
    int want_json = 0, quiet = 0, rc, code;
    sks_kveval_opts o;
    sks_kveval_opts_default(&o);
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("--text FILE", &text_path, "the text (UTF-8), required"),
        SKS_OPT_INT("--window W", &o.kv_window, 1, 1 << 20, "keys kept besides the sinks, required"),
        SKS_OPT_INT("--sinks S", &o.n_sink, 0, 1 << 20, "first keys kept by streaming (default 4)"),
        SKS_OPT_STR("--kv-map FILE", &map_path, "sinkscope.kvmap/1 JSON for the kvmap variant"),
        SKS_OPT_INT("--context T", &o.ppl.window, 1, 1 << 20, "tokens per perplexity window (default: the model's context)"),
        SKS_OPT_INT("--stride N", &o.ppl.stride, 1, 1 << 20, "perplexity window stride (default T)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file when it is not beside the model"),
        SKS_OPT_STR("-o, --output FILE", &out_path, "msgpack, schema sinkscope.kv-eval/1 (docs/schema-cost.md)"),
        SKS_OPT_FLAG("--json", &want_json, "a JSON summary on stdout instead of the table"),
        SKS_OPT_FLAG("-q, --quiet", &quiet, "no progress on stderr"),
        SKS_OPT_HELP,
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        "kv-eval",
        "MODEL --text FILE --window W [--sinks S] [--kv-map FILE]\n"
        "                         [--context T] [--stride N] [--tokenizer PATH]\n"
        "                         [-o OUT.msgpack] [--json] [-q]",
        "What evicting the KV cache costs: the perplexity of the text (windows of the\n"
        "context, as `sinkscope perplexity`) when every query sees only\n"
        "  full       all earlier keys\n"
        "  recent     the last W keys\n"
        "  streaming  the first S keys and the last W (StreamingLLM)\n"
        "  kvmap      the last W, and the first key for the heads the KV map marks\n"
        "             (`sinkscope sinks --kv-map FILE`; only with --kv-map)\n"
        "and the KV memory each keeps for a full window (f16 K and V). Positions stay the\n"
        "real ones (docs/cost.md).\n",
        "example:\n"
        "  sinkscope sinks model-dir --kv-map kv.json -o sinks.msgpack\n"
        "  sinkscope kv-eval model-dir --text book.txt --window 64 --kv-map kv.json\n",
        NULL, opts, "MODEL", 1, 1, &model_path, NULL};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!text_path || o.kv_window < 1) return sks_cli_usage("kv-eval", "give MODEL, --text FILE and --window W");
    sks_cli_progress_install(quiet);
    sks_model *m = NULL;
    sks_kveval_result *r = NULL;
    unsigned char *map_kv = NULL;
    int32_t *ids = NULL;
    int n = 0, ret = 1;
    if (sks_cli_open_model("kv-eval", model_path, &m)) return 1;
    if ((map_path && (rc = sks_kvmap_read(map_path, m, &map_kv))) ||
        (rc = sks_text_file_ids(m, tok_path, text_path, &ids, &n)) ||
        (rc = sks_kveval_run(m, ids, n, &o, map_kv, &r)) ||
        (out_path && (rc = sks_kveval_write(r, m, text_path, out_path)))) {
        sks_cli_fail("kv-eval", rc);
        goto done;
    }
    if (want_json) sks__kv_json(r, m);
    else sks__kv_table(r);
    if (out_path && !quiet) fprintf(stderr, "sinkscope kv-eval: -> %s\n", out_path);
    ret = 0;
done:
    sks_kveval_result_free(r);
    free(map_kv);
    free(ids);
    sks_model_close(m);
    return ret;
}
