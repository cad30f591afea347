/* cmd_quant_risk.c - `sinkscope quant-risk MODEL --text FILE`: dynamic range and
 * simulated activation-quantization error per layer, and the perplexity under fake
 * quantization (library: analysis/sks_quantrisk.h). */
#include "cli.h"
#include "../analysis/sks_quantrisk.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one table row: range, then the error per scheme without and with the outliers kept */
static void sks__qr_row(int l, const char *name, double range, const double *err) {
    printf("%3d %-9s %9.1f |", l, name, range);
    for (int k = 0; k < 2; k++) {
        for (int q = 0; q < SKS_Q_N; q++) printf(" %11.3f", 100.0 * err[q * SKS_QKEEP_N + (k ? SKS_QKEEP_OUTLIERS : 0)]);
        printf(" |");
    }
    printf("\n");
}

static void sks__qr_tables(const sks_qrisk_result *r) {
    printf("spike channels (trace rule):");
    for (int i = 0; i < r->n_spike_channels; i++) printf(" %d", r->spike_channels[i]);
    printf("%s\nrelative error %% per layer and input, on %d tokens; columns: scheme with no channel kept | "
           "with the outliers kept\n",
           r->n_spike_channels ? "" : " none", r->T);
    printf("%3s %-9s %9s |", "L", "input", "range");
    for (int k = 0; k < 2; k++) {
        for (int q = 0; q < SKS_Q_N; q++) printf(" %11s", sks_qscheme_name(q));
        printf(" |");
    }
    printf("\n");
    for (int l = 0; l < r->n_layers; l++)
        for (int s = 0; s < SKS_QSITE_N; s++) {
            const int moe = s == SKS_QSITE_DOWN && r->expert_rows && r->worst_expert[l] >= 0;
            sks__qr_row(l, moe ? "down_in*" : sks_qsite_name(s), r->dyn_range[l * SKS_QSITE_N + s],
                        sks_qrisk_err(r, l, s));
            for (int e = 0; moe && e < r->expert_rows; e++) {
                const size_t le = (size_t)l * (size_t)r->expert_rows + (size_t)e;
                char name[24];
                if (!r->expert_tokens[le]) continue;
                snprintf(name, sizeof name, " %s%d:%d", e < r->n_experts ? "e" : "sh", e, r->expert_tokens[le]);
                sks__qr_row(l, name, r->expert_max_abs[le] / r->expert_median_abs[le],
                            r->expert_rel_err + le * SKS_Q_N * SKS_QKEEP_N);
            }
        }
    if (r->expert_rows)
        printf("down_in*: the MoE layer's worst expert; below it each expert as eE:tokens routed to it\n");
    if (!r->ppl_base) return;
    printf("\nperplexity with every linear input fake-quantized (f32: %.4f)\n", r->ppl_base->ppl);
    printf("  %-12s %14s %14s\n", "scheme", "none kept", "outliers kept");
    for (int q = 0; q < SKS_Q_N; q++)
        printf("  %-12s %14.4f %14.4f\n", sks_qscheme_name(q), r->ppl[q][0]->ppl, r->ppl[q][1]->ppl);
}

typedef struct {
    sks_cli_text_cmd c; /* first: the command's sequence */
    sks_qrisk_opts o;
    sks_qrisk_result *r;
} sks__qr;

static int sks__qr_run(sks_cli_text_cmd *c, const sks_model *m, const int32_t *ids, int n) {
    sks__qr *Q = (sks__qr *)c;
    return sks_qrisk_run(m, ids, n, &Q->o, &Q->r);
}

static int sks__qr_write(sks_cli_text_cmd *c, const sks_model *m, const char *path) {
    sks__qr *Q = (sks__qr *)c;
    return sks_qrisk_write(Q->r, m, &Q->o, c->text, path);
}

static void sks__qr_print(sks_cli_text_cmd *c, const sks_model *m) {
    if (c->json)
        sks_cli_print_json(sks_qrisk_json_summary(((sks__qr *)c)->r, m),
                           JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    else sks__qr_tables(((sks__qr *)c)->r);
}

static const char sks__usage[] =
    "MODEL --text FILE [--keep-top K] [spike rule] [--window W] [--stride S]\n"
    "                            [--no-e2e] [--tokenizer PATH] [-o OUT.msgpack] [--json] [-q]";

static const char sks__about[] =
    "What the massive activations cost a low-bit activation quantizer. Per layer, for\n"
    "the residual stream entering it and for each linear input (attention input, W_O\n"
    "input, FFN input, W_down input), on the first window of the text: the dynamic\n"
    "range max|x| / median|x| and the relative error ||Q(x) - x|| / ||x|| of symmetric\n"
    "INT8 and INT4 (one scale per tensor or per token) and FP8 E4M3 (per-tensor scale),\n"
    "each with no channel kept, with the spike channels kept in f32, and with the spike\n"
    "channels plus the top-K outlier channels kept (LLM.int8 style). End to end: the\n"
    "perplexity of the text with every linear input fake-quantized, without and with\n"
    "the outlier channels kept (docs/cost.md).\n";

static const char sks__epilogue[] =
    "example:\n  sinkscope quant-risk model-dir --text book.txt --ratio 100 --abs 50 -o qr.msgpack\n";

int sks_cmd_quant_risk(int argc, char **argv) {
    sks__qr Q = {.c = {.name = "quant-risk", .usage = sks__usage, .about = sks__about, .epilogue = sks__epilogue,
                  .json_help = "a JSON summary on stdout instead of the tables",
                  .run = sks__qr_run, .write = sks__qr_write, .print = sks__qr_print}};
    sks_qrisk_opts_default(&Q.o);
    int no_e2e = 0, code;
    sks_cli_rule rule = {{0}, 0};
    sks_trace_opts_rule(&Q.o.trace, &rule.rule);
    const sks_cli_opt opts[] = {
        SKS_OPT_TEXT_INPUT(&Q.c),
        SKS_OPT_INT("--keep-top K", &Q.o.keep_top, 0, 1 << 20, "outlier channels kept per tensor (default 8)"),
        SKS_OPT_INT("--window W", &Q.o.ppl.window, 1, 1 << 20, "perplexity window (default: the model's context)"),
        SKS_OPT_INT("--stride S", &Q.o.ppl.stride, 1, 1 << 20, "perplexity stride (default W)"),
        SKS_OPT_FLAG("--no-e2e", &no_e2e, "per-layer statistics only (no perplexity runs)"),
        SKS_OPT_STR("-o, --output FILE", &Q.c.output, "msgpack, schema sinkscope.quant-risk/1 (docs/schema-cost.md)"),
        SKS_OPT_RULE(&rule),
        SKS_OPT_TEXT("                     (here the given values are used as they are: --abs or\n"
                     "                     --ratio does not switch --outlier off)\n"),
        SKS_OPT_END,
    };
    if (!sks_cli_text_parse(&Q.c, opts, argc, argv, &code)) return code;
    sks_trace_opts_set_rule(&Q.o.trace, &rule.rule);
    if (no_e2e) Q.o.end_to_end = 0;
    code = sks_cli_text_run(&Q.c);
    sks_qrisk_result_free(Q.r);
    return code;
}
