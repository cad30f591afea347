/* cmd_trace.c - `sinkscope trace MODEL`: residual-stream lifecycle, spike channels and
 * measured attention sinks (SPEC section 2); msgpack result plus a JSON summary. */
#include "cli.h"
#include "../analysis/sks_out.h"
#include "../analysis/sks_trace.h"
#include "../loaders/sks_tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static json_t *sks__blocks_json(const int *b, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:i, s:s, s:i}", "block", b[i], "kind",
                                           sks_block_kind_name(sks_block_kind(b[i])), "layer", sks_block_layer(b[i])));
    return a;
}

static void sks__print_json(const sks_trace_result *r, const sks_trace_opts *o) {
    json_t *blocks = json_array(), *lcs = json_array();
    for (int b = 0; b < r->n_blocks; b++) {
        const sks_trace_block *k = &r->blocks[b];
        json_array_append_new(blocks, json_pack("{s:i, s:s, s:i, s:o, s:o, s:o, s:i, s:i}", "block", k->block, "kind",
                                                sks_block_kind_name(k->kind), "layer", k->layer, "max_abs",
                                                sks_json_num(k->max_abs), "median_abs", sks_json_num(k->median_abs),
                                                "spike_score", sks_json_num(k->spike_score), "top_token", k->top_token,
                                                "top_channel", k->top_channel));
    }
    for (int i = 0; i < r->n_lifecycles; i++) {
        const sks_lifecycle *lc = &r->lifecycles[i];
        json_array_append_new(lcs, json_pack("{s:i, s:i, s:o, s:o, s:i, s:[ii], s:o}", "token", lc->token, "channel",
                                             lc->channel, "step_up", sks__blocks_json(lc->up_blocks, lc->n_up),
                                             "step_down", sks__blocks_json(lc->down_blocks, lc->n_down), "main_step_up",
                                             lc->main_up, "plateau", lc->plateau_first, lc->plateau_last, "peak_abs",
                                             sks_json_num(lc->peak_abs)));
    }
    json_t *root = json_pack("{s:o, s:o, s:o, s:o}", "blocks", blocks, "spike_channels",
                             sks_json_ints(r->spike_channels, r->n_spike_channels), "spike_tokens",
                             sks_json_ints(r->spike_tokens, r->n_spike_tokens), "lifecycle", lcs);
    json_object_set_new(root, "closest", json_pack("{s:i,s:i,s:o}", "channel", r->closest_channel, "first_block",
                                                   r->closest_block, "fraction_of_threshold",
                                                   sks_json_num(r->closest_frac)));
    json_t *a0 = json_array(), *sinks = json_array();
    for (int l = 0; l < r->n_layers; l++) {
        json_t *row = json_array();
        for (int h = 0; h < r->n_heads; h++) {
            double v = r->alpha[((size_t)l * r->n_heads + h) * r->n_alpha];
            json_array_append_new(row, sks_json_num(v));
            if (v > o->eps) json_array_append_new(sinks, json_pack("[ii]", l, h));
        }
        json_array_append_new(a0, row);
    }
    json_object_set_new(root, "alpha0", a0);
    json_object_set_new(root, "sink_heads", sinks);
    json_object_set_new(root, "sink_ratio", sks_json_num(r->sink_ratio));
    json_object_set_new(root, "n_prompts", json_integer(r->n_prompts));
    json_object_set_new(root, "n_tokens", json_integer(r->n_tokens));
    sks_json_add_nonfinite(root);
    sks_cli_print_json(root, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
}

static const char sks__about[] =
    "Follow the residual stream h_b through the blocks (b = 0 embeddings, 2l+1 after the\n"
    "attention of layer l, 2l+2 after its FFN) and find massive activations: per block\n"
    "the largest |h|, where it sits (token, channel), the median |h| over all tokens and\n"
    "channels, and the spike score max/median. A (token, channel) pair is a spike when\n"
    "|h_b| is above the spike rule (below) in at least --min-blocks consecutive blocks;\n"
    "its channel is a spike channel and its token a spike token. For every spike the\n"
    "lifecycle says where it is born (step-up blocks: increases of |h| of at least\n"
    "--step-frac of the largest one), where it plateaus and where it is removed\n"
    "(step-down blocks), with the block kind (attn/ffn). Attention sinks: for every layer\n"
    "and head alpha_j = sum_{i>=j} A[i,j] / (T-j), the mean attention that later tokens\n"
    "pay to position j (Gu et al. 2024); a head with alpha_0 > --eps is a sink head, and\n"
    "the sink ratio is the percentage of sink heads, averaged over prompts.\n";

static const char sks__examples[] =
    "examples:\n"
    "  sinkscope trace model-dir -o trace.msgpack --json\n"
    "  sinkscope trace model-dir --prompts prompts.txt --abs 100 --ratio 1000 -o t.msgpack\n"
    "  sinkscope trace model.gguf --tokens 1,374,742,1029 --json | jq .lifecycle\n";

static const char sks__usage[] =
    "MODEL [--prompt TEXT | --prompts FILE | --tokens IDS] [-o OUT.msgpack] [--json]\n"
    "                             [spike rule] [options]";

int sks_cmd_trace(int argc, char **argv) {
    const char *model_path = NULL, *tok_path = NULL, *out_path = NULL;
    sks_prompt_source src = {NULL, NULL, NULL, NULL};
    int want_json = 0, quiet = 0, rc = 0, ret = 1, code;
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    sks_cli_rule rule = {{0}, 0};
    sks_trace_opts_rule(&o, &rule.rule);
    const sks_cli_opt opts[] = {
        SKS_OPT_SECTION("input (one of; the spike analysis uses the first prompt, alpha all of them):"),
        SKS_OPT_STR("--prompt TEXT", &src.prompt, "one prompt, encoded with the model's tokenizer (BOS first)"),
        SKS_OPT_STR("--prompts FILE", &src.prompts_file, "one prompt per line (empty lines skipped)"),
        SKS_OPT_STR("--tokens IDS", &src.tokens, "token ids, e.g. 1,374,742 (used as given)"),
        SKS_OPT_TEXT("  (none)             the built-in prompts (analysis/sks_rule.h, as every command),\n"
                     "                     each cut at " SKS_CLI_XSTR(SKS_DEFAULT_PROMPT_T) " tokens; without a tokenizer as many deterministic\n"
                     "                     pseudo-random prompts\n"
                     "  (prompts longer than the model's context are cut to it with a warning)\n"),
        SKS_OPT_SECTION("output:"),
        SKS_OPT_STR("-o, --output OUT", &out_path,
                    "the full result (.msgpack), schema sinkscope.trace/1\n(docs/schema-trace.md)"),
        SKS_OPT_FLAG("--residual", &o.keep_residual,
                     "also store the whole residual stream of the first prompt,\n"
                     "h_b for every block (f32, (2L+1) x T x d: large) in OUT"),
        SKS_OPT_TEXT("  (without either, the findings are printed and nothing is written)\n"),
        SKS_OPT_RULE(&rule),
        SKS_OPT_SECTION("options:"),
        SKS_OPT_NUM("--step-frac X", &o.step_frac,
                    "step-up/down threshold as a fraction of the largest increase\n(default 0.25)"),
        SKS_OPT_NUM("--eps X", &o.eps, "sink head threshold on alpha_0 (default 0.3)"),
        SKS_OPT_INT("--topk N", &o.topk, 1, 100000, "largest entries kept per block (default 8)"),
        SKS_OPT_INT("--n-alpha N", &o.n_alpha, 1, 100000, "alpha_j reported for j < N (default 4)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file when it is not beside the model"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "trace", .opts = opts, .model = &model_path, .json = &want_json, .quiet = &quiet,
        .usage = sks__usage, .about = sks__about, .epilogue = sks__examples,
        .json_help = "a summary on stdout instead of the findings: blocks,\n"
                     "spike_channels, spike_tokens, lifecycle, closest, alpha0\n"
                     "(layers x heads), sink_heads, sink_ratio", .quiet_help = "no progress and no findings"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!!src.prompt + !!src.prompts_file + !!src.tokens > 1)
        return sks_cli_usage("trace", "give only one of --prompt, --prompts, --tokens");
    if (o.keep_residual && !out_path) return sks_cli_usage("trace", "--residual needs -o OUT.msgpack");
    if (sks_cli_rule_done("trace", &rule)) return 2;
    sks_trace_opts_set_rule(&o, &rule.rule);
    if (!(o.eps > 0 && o.eps < 1) || !(o.step_frac > 0 && o.step_frac <= 1))
        return sks_cli_usage("trace", "--eps must be in (0, 1) and --step-frac in (0, 1]");
    sks_cli_progress_install(quiet);

    sks_model *m = NULL;
    sks_tokenizer *tok = NULL;
    sks_trace_result *r = NULL;
    sks_prompt_set pr = {0};
    if (sks_cli_open_model("trace", model_path, &m)) return 1;
    if (!src.tokens && (rc = sks_tokenizer_open_for_model(m, tok_path, &tok))) {
        tok = NULL;
        if (src.prompt || src.prompts_file || tok_path) goto done;
        sks_clear_error();
    }
    if ((rc = sks_prompt_set_make(m, tok, &src, 1, &pr))) {
        if (rc == SKS_EARG) ret = 2; /* the prompt rule: a usage error */
        goto done;
    }
    if (!tok && !src.tokens && !quiet)
        fprintf(stderr, "sinkscope trace: no tokenizer found; using %d prompts of BOS + %d pseudo-random ids\n", pr.n,
                pr.lens[0] - 1);
    if ((rc = sks_trace_run(m, pr.n, (const int32_t *const *)pr.ids, pr.lens, &o, &r))) goto done;
    if (out_path && (rc = sks_trace_write(r, m, &o, out_path))) goto done;
    if (want_json) sks__print_json(r, &o);
    else if (!quiet) sks_cli_print_trace_findings(stdout, r, &o);
    if (!quiet && out_path) fprintf(stderr, "sinkscope trace: wrote %s\n", out_path);
    ret = 0;
done:
    if (ret) sks_cli_fail("trace", rc);
    sks_trace_result_free(r);
    sks_prompt_set_free(&pr);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return ret;
}
