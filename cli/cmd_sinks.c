/* cmd_sinks.c - `sinkscope sinks`: sink-key geometry, query alignment, ranked sink heads. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "../dist/sks_dist.h"
#include "../analysis/sks_sinks.h"
#include "../analysis/sks_trace.h"
#include "../loaders/sks_tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sks__about[] =
    "Per layer and head: the near-constancy of the normalized spike tokens, the effective\n"
    "rank of sink and non-sink keys, the alignment of the query subspace with the sink\n"
    "keys, the query energy and signed projection along the mean sink key, the logit\n"
    "margin of the sink key (with and without RoPE), a weight-only prediction, the measured\n"
    "alpha_0 (Gu et al.) and, per predictor, the ROC AUC against alpha_0 > eps.\n"
    "See docs/sinks.md and docs/schema-sinks.md.\n";

static int sks__rank_by(void *dst, const char *v) {
    if ((*(int *)dst = sks_sinks_pred_parse(v)) < 0) return sks_fail(SKS_EARG, "--rank-by: unknown predictor '%s'", v);
    return 0;
}

/* --threshold NAME=X */
static int sks__threshold(void *dst, const char *v) {
    sks_sinks_opts *o = dst;
    const char *eq = strchr(v, '=');
    char name[32];
    size_t nl = eq ? (size_t)(eq - v) : 0;
    int p = -1;
    if (eq && nl < sizeof name) {
        memcpy(name, v, nl);
        name[nl] = '\0';
        p = sks_sinks_pred_parse(name);
    }
    if (p < 0 || sks_cli_parse_double("--threshold", eq + 1, &o->threshold[p]))
        return sks_fail(SKS_EARG, "--threshold: expected NAME=X with a predictor name, got '%s'", v);
    return 0;
}

static const char *const sks__sink_modes[] = {"auto", "spike", "first", NULL};

static const char sks__epilogue[] =
    "example:\n  sinkscope sinks model-dir -o sinks.msgpack --kv-map kv.json\n";

int sks_cmd_sinks(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *kvmap = NULL, *tok_path = NULL;
    sks_prompt_source src = {NULL, NULL, NULL, NULL};
    int json = 0, quiet = 0, rc = 0, ret = 1, mode = 0, code;
    uint64_t seed = 1;
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    sks_cli_rule rule = {{o.outlier, o.abs_thresh, o.ratio, o.min_blocks}, 0};
    const sks_cli_opt opts[] = {
        SKS_OPT_SECTION("input (default: four built-in texts of up to 64 tokens through the model's tokenizer,\n"
                        "or 4 sequences of BOS + pseudo-random ids when there is no tokenizer):"),
        SKS_OPT_STR("--prompt TEXT", &src.prompt, "one text"),
        SKS_OPT_STR("--prompts FILE", &src.prompts_file, "one text per line"),
        SKS_OPT_STR("--tokens IDS", &src.tokens, "token ids \"1,2,3\"; several sequences separated by ';'"),
        SKS_OPT_STR("--tokens-file FILE", &src.tokens_file, "one sequence of ids per line (comma or space separated)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file (default: found beside the model)"),
        SKS_OPT_U64("--seed N", &seed, 0, 2147483647L, "seed of the pseudo-random default ids (default 1)"),
        SKS_OPT_SECTION("options:"),
        SKS_OPT_STR("-o, --output FILE", &out, "msgpack result (schema sinkscope.sinks/1), required"),
        SKS_OPT_STR("--out FILE", &out, NULL),
        SKS_OPT_NUM("--eps X", &o.eps, "sink head when alpha_0 > X (default 0.3)"),
        SKS_OPT_CHOICE("--sink-token MODE", &mode, sks__sink_modes,
                       "auto (default): spike tokens, or position 0 when no prompt has\n"
                       "one; spike: spike tokens only; first: spike tokens and position 0"),
        SKS_OPT_CALL("--rank-by NAME", &o.main_pred, sks__rank_by,
                     "predictor that ranks the heads: alignment, energy, signed_proj,\n"
                     "margin_rope (default), margin_norope, weight_only"),
        SKS_OPT_CALL("--threshold NAME=X", &o, sks__threshold, "threshold of predictor NAME for precision/recall (repeatable)"),
        SKS_OPT_STR("--kv-map FILE", &kvmap,
                    "JSON for serving systems: per layer the heads (and KV heads)\n"
                    "that need the sink token kept"),
        SKS_OPT_RULE(&rule),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "sinks", .opts = opts, .model = &model_path, .json = &json, .quiet = &quiet,
        .usage = "MODEL [input] [options] -o OUT.msgpack", .about = sks__about, .epilogue = sks__epilogue,
        .json_help = "print a JSON summary on stdout", .quiet_help = "no progress"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!out) return sks_cli_usage("sinks", "give -o OUT.msgpack");
    if (!!src.prompt + !!src.prompts_file + !!src.tokens + !!src.tokens_file > 1)
        return sks_cli_usage("sinks", "give at most one of --prompt, --prompts, --tokens, --tokens-file");
    if (sks_cli_rule_done("sinks", &rule)) return 2;
    sks_spike_rule_unpack(&rule.rule, &o.outlier, &o.abs_thresh, &o.ratio, &o.min_blocks);
    if (!(o.eps > 0.0 && o.eps < 1.0)) return sks_cli_usage("sinks", "--eps must be in (0, 1)");
    /* Under mpirun every rank reads the model and the prompts and runs the forward passes;
     * the layers' geometry is split across the ranks and gathered on rank 0, which alone
     * writes (docs/scale.md). Until the split every failure goes to `ready`, so that all
     * ranks reach the collective agreement together. */
    sks_cli_progress_install(quiet);

    sks_model *m = NULL;
    sks_tokenizer *tok = NULL;
    sks_prompt_set S = {0};
    sks_sinks_result *r = NULL;
    if ((rc = sks_model_open(model_path, &m))) goto ready;
    if (!src.tokens && !src.tokens_file) {
        int trc = sks_tokenizer_open_for_model(m, tok_path, &tok);
        if (trc && (src.prompt || src.prompts_file || tok_path)) {
            rc = trc;
            goto ready;
        }
        if (trc && !quiet) fprintf(stderr, "sinks: no tokenizer (%s): using pseudo-random token ids\n", sks_last_error());
    }
    if ((rc = sks_prompt_set_make(m, tok, &src, seed, &S))) goto ready;
    if (!quiet && sks_dist_rank() == 0) {
        int64_t nt = 0;
        for (int i = 0; i < S.n; i++) nt += S.lens[i];
        fprintf(stderr, "sinks: %d sequence%s, %lld tokens (%s)\n", S.n, S.n == 1 ? "" : "s", (long long)nt, S.source);
    }
ready:
    if ((rc = sks_dist_agree(rc))) goto fail;
    o.first_as_sink = mode == 2;
    int fell_back = 0;
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    rc = sks_sinks_analyze(m, S.n, (const int32_t *const *)S.ids, S.lens, &o, mode == 0, &sp, &fell_back, &r);
    if (rc) goto fail;
    if (sks_dist_rank() != 0) { /* rank 0 gathered the layers and writes */
        ret = 0;
        goto done;
    }
    if (fell_back && !quiet)
        fprintf(stderr, "sinks: no spike token passes the spike rule: position 0 stands in as the sink token\n");
    if ((rc = sks_sinks_write(r, m, &o, out))) goto fail;
    if (kvmap && (rc = sks_sinks_write_kv_map(r, m, &o, kvmap))) goto fail;
    if (!quiet) { /* the findings on stdout (stderr under --json, which owns stdout), as trace */
        FILE *fo = json ? stderr : stdout;
        fprintf(fo,
                "sinks: %d of %d heads have alpha_0 > %g averaged over the prompts; sink ratio %.1f%% (share of sink "
                "heads per prompt, averaged); spike channels:",
                r->n_sink_heads, r->n_layers * r->n_heads, o.eps, r->sink_ratio);
        for (int i = 0; i < r->n_spike_channels && i < 8; i++) fprintf(fo, " %d", r->spike_channels[i]);
        fprintf(fo, "%s\n", r->n_spike_channels ? "" : " none");
        fprintf(fo, "sinks: ROC AUC vs alpha_0 > %g:", o.eps);
        for (int p = 0; p < SKS_PRED_COUNT; p++) fprintf(fo, " %s %.3f", sks_sinks_pred_name(p), r->auc[p]);
        fprintf(fo, "\n");
        fflush(fo);
        fprintf(stderr, "sinks: wrote %s%s%s\n", out, kvmap ? " and " : "", kvmap ? kvmap : "");
    }
    if (json) {
        char *js = NULL;
        if ((rc = sks_sinks_json_summary(r, m, &o, &js))) goto fail;
        printf("%s\n", js);
        free(js);
    }
    ret = 0;
    goto done;
fail:
    ret = sks_cli_fail("sinks", rc ? rc : SKS_EIO);
done:
    sks_sinks_result_free(r);
    sks_prompt_set_free(&S);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return ret;
}
