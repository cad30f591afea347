/* cmd_compare.c - `sinkscope compare DIR DIR ... [--text FILE]`: the ablation table over
 * analyze folders (library: analysis/sks_compare.h). */
#include "cli.h"
#include "../analysis/sks_out.h"
#include "../analysis/sks_compare.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sks__cmp_json(const sks_compare_row *rows, int n) {
    json_t *ms = json_array();
    for (int i = 0; i < n; i++) {
        const sks_compare_row *r = &rows[i];
        json_array_append_new(
            ms, json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "dir", r->dir, "model",
                          r->model_path, "family", r->family, "peak_abs", sks_json_num(r->peak_abs), "peak_ratio",
                          sks_json_num(r->peak_ratio), "spike_channels", sks_json_ints(r->spike_channels, r->n_spike_channels),
                          "step_layer", r->step_layer, "step_channel", r->step_channel, "lambda_star",
                          sks_json_num(r->lambda_star), "dominance", sks_json_num(r->dominance), "sink_ratio",
                          sks_json_num(r->sink_ratio), "sink_r99", sks_json_num(r->sink_r99), "vocab_fraction",
                          sks_json_num(r->vocab_fraction), "perplexity", sks_json_num(r->perplexity)));
    }
    sks_cli_print_json(json_pack("{s:s, s:o}", "schema", "sinkscope.compare-summary/1", "models", ms),
                       JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
}

static void sks__cmp_table(const sks_compare_row *rows, int n) {
    printf("%-22s %-7s %9s %7s %-12s %8s %9s %9s %7s %5s %7s %10s\n", "model", "family", "peak|h|", "ratio",
           "spike ch", "step L/c", "lambda*", "dominance", "sink%", "r99", "vocab%", "perplexity");
    for (int i = 0; i < n; i++) {
        const sks_compare_row *r = &rows[i];
        const char *name = strrchr(r->dir, '/');
        name = name && name[1] ? name + 1 : r->dir;
        char ch[64] = "-", step[32] = "-";
        int off = 0;
        for (int k = 0; k < r->n_spike_channels && off < (int)sizeof ch - 12; k++)
            off += snprintf(ch + off, sizeof ch - (size_t)off, "%s%d", k ? "," : "", r->spike_channels[k]);
        if (r->step_layer >= 0) snprintf(step, sizeof step, "%d/%d", r->step_layer, r->step_channel);
        printf("%-22.22s %-7.7s %9.1f %7.1f %-12.12s %8s %9.3f %9.2f %7.1f %5.1f %7.2f %10.3f\n", name, r->family,
               r->peak_abs, r->peak_ratio, ch, step, r->lambda_star, r->dominance, r->sink_ratio, r->sink_r99,
               100.0 * r->vocab_fraction, r->perplexity);
    }
}

static const char sks__about[] =
    "The paper's ablation table over several models. Each DIR is a folder written by\n"
    "`sinkscope analyze MODEL -o DIR` (summary.json, sinks.msgpack): per model the peak\n"
    "|h| and its ratio to the block median, the spike channels, lambda* and dominance\n"
    "of S_c at the main step-up, the sink ratio, the median r99 of the sink keys, the\n"
    "fraction of the vocabulary that spikes alone at position 0, and the perplexity on\n"
    "--text (or the one analyze measured with --text). docs/cost.md.\n";

static const char sks__epilogue[] =
    "example:\n"
    "  for m in base sandwich olmo2; do sinkscope analyze ablation/$m -o an-$m --abs 50 --ratio 100; done\n"
    "  sinkscope compare an-base an-sandwich an-olmo2 --text book.txt -o compare.msgpack\n";

int sks_cmd_compare(int argc, char **argv) {
    const char *text_path = NULL, *tok_path = NULL, *out_path = NULL;
    int want_json = 0, quiet = 0, n = 0, ret = 1, rc, code;
    /* the folders are compacted to the front of argv (slot 1 + n <= i is already read) */
    const char **dirs = (const char **)argv + 1;
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("--text FILE", &text_path, "measure the perplexity of each model on this text"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file for every model (default: beside each model)"),
        SKS_OPT_STR("-o, --output FILE", &out_path,
                    "msgpack, schema sinkscope.compare/1 (docs/schema-cost.md);\n"
                    "figure: python3 notebooks-out/plot_cost.py FILE"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "compare", .opts = opts, .pos = dirs, .min_pos = 1, .max_pos = argc, .pos_name = "analyze folder (DIR)", .n_pos = &n, .json = &want_json, .quiet = &quiet,
        .usage = "DIR DIR ... [--text FILE] [-o OUT.msgpack] [--json] [-q]", .about = sks__about, .epilogue = sks__epilogue,
        .json_help = "the table as JSON on stdout instead of text", .quiet_help = "no progress on stderr"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    sks_cli_progress_install(quiet);
    sks_compare_row *rows = calloc((size_t)n, sizeof *rows);
    if (!rows) goto done;
    for (int i = 0; i < n; i++) {
        sks_progress("compare", i, n);
        if ((rc = sks_compare_load(dirs[i], &rows[i]))) {
            sks_cli_fail("compare", rc);
            goto done;
        }
        if (!text_path) continue;
        sks_model *m = NULL;
        int32_t *ids = NULL;
        int nt = 0;
        if (!(rc = sks_cli_open_model("compare", rows[i].model_path, &m))) {
            rc = sks_text_file_ids(m, tok_path, text_path, &ids, &nt);
            sks_model_close(m);
            if (!rc) rc = sks_compare_perplexity(&rows[i], ids, nt);
            free(ids);
            if (rc) sks_cli_fail("compare", rc);
        }
        if (rc) goto done;
    }
    sks_progress("compare", n, n);
    if (out_path && (rc = sks_compare_write(rows, n, text_path, out_path))) {
        sks_cli_fail("compare", rc);
        goto done;
    }
    if (want_json) sks__cmp_json(rows, n);
    else sks__cmp_table(rows, n);
    if (out_path && !quiet) fprintf(stderr, "sinkscope compare: -> %s\n", out_path);
    ret = 0;
done:
    for (int i = 0; rows && i < n; i++) sks_compare_row_clear(&rows[i]);
    free(rows);
    return ret;
}
