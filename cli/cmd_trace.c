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


static void sks__trace_help(FILE *f) {
    fprintf(f,
            "usage: sinkscope trace MODEL [--prompt TEXT | --prompts FILE | --tokens IDS]\n"
            "                             [-o OUT.msgpack] [--json] [--outlier X] [--abs X]\n"
            "                             [--ratio X] [--min-blocks N] [--eps X] [--topk N]\n"
            "                             [--step-frac X] [--n-alpha N] [--residual]\n"
            "                             [--tokenizer PATH] [-q]\n\n"
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
            "the sink ratio is the percentage of sink heads, averaged over prompts.\n\n"
            "input (one of; the spike analysis uses the first prompt, alpha all of them):\n"
            "  --prompt TEXT      one prompt, encoded with the model's tokenizer (BOS first)\n"
            "  --prompts FILE     one prompt per line (empty lines skipped)\n"
            "  --tokens IDS       token ids, e.g. 1,374,742 (used as given)\n"
            "  (none)             the built-in prompts (analysis/sks_rule.h, as every command),\n"
            "                     each cut at %d tokens; without a tokenizer as many deterministic\n"
            "                     pseudo-random prompts\n"
            "  (prompts longer than the model's context are cut to it with a warning)\n\n"
            "output:\n"
            "  -o OUT.msgpack     the full result, schema sinkscope.trace/1 (docs/schema-trace.md)\n"
            "  --json             a summary on stdout instead of the findings: blocks,\n"
            "                     spike_channels, spike_tokens, lifecycle, closest, alpha0\n"
            "                     (layers x heads), sink_heads, sink_ratio\n"
            "  --residual         also store the whole residual stream of the first prompt,\n"
            "                     h_b for every block (f32, (2L+1) x T x d: large) in OUT\n"
            "  (without either, the findings are printed and nothing is written)\n\n"
            "%s"
            "  --step-frac X      step-up/down threshold as a fraction of the largest increase\n"
            "                     (default 0.25)\n"
            "  --eps X            sink head threshold on alpha_0 (default 0.3)\n"
            "  --topk N           largest entries kept per block (default 8)\n"
            "  --n-alpha N        alpha_j reported for j < N (default 4)\n"
            "  --tokenizer PATH   tokenizer file when it is not beside the model\n"
            "  -q, --quiet        no progress and no findings\n\n"
            "examples:\n"
            "  sinkscope trace model-dir -o trace.msgpack --json\n"
            "  sinkscope trace model-dir --prompts prompts.txt --abs 100 --ratio 1000 -o t.msgpack\n"
            "  sinkscope trace model.gguf --tokens 1,374,742,1029 --json | jq .lifecycle\n",
            SKS_DEFAULT_PROMPT_T, sks_cli_rule_help);
}

/* Read FILE as one prompt per line; returns the number of prompts or < 0. */
static int sks__read_lines(const char *path, char ***out) {
    FILE *fp = fopen(path, "r");
    if (!fp) return sks_fail(SKS_EIO, "%s: cannot open prompts file", path);
    char **v = NULL;
    int n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, fp)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[n] = strdup(line);
        if (!v[n]) break;
        n++;
    }
    free(line);
    fclose(fp);
    *out = v;
    if (n == 0) return sks_fail(SKS_EARG, "%s: no prompts (one per line expected)", path);
    return n;
}

static json_t *sks__blocks_json(const int *b, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "block", json_integer(b[i]));
        json_object_set_new(o, "kind", json_string(sks_block_kind_name(sks_block_kind(b[i]))));
        json_object_set_new(o, "layer", json_integer(sks_block_layer(b[i])));
        json_array_append_new(a, o);
    }
    return a;
}

static void sks__print_json(const sks_trace_result *r, const sks_trace_opts *o) {
    json_t *root = json_object();
    json_t *blocks = json_array();
    for (int b = 0; b < r->n_blocks; b++) {
        const sks_trace_block *k = &r->blocks[b];
        json_t *e = json_object();
        json_object_set_new(e, "block", json_integer(k->block));
        json_object_set_new(e, "kind", json_string(sks_block_kind_name(k->kind)));
        json_object_set_new(e, "layer", json_integer(k->layer));
        json_object_set_new(e, "max_abs", sks_json_num(k->max_abs));
        json_object_set_new(e, "median_abs", sks_json_num(k->median_abs));
        json_object_set_new(e, "spike_score", sks_json_num(k->spike_score));
        json_object_set_new(e, "top_token", json_integer(k->top_token));
        json_object_set_new(e, "top_channel", json_integer(k->top_channel));
        json_array_append_new(blocks, e);
    }
    json_object_set_new(root, "blocks", blocks);
    json_t *sc = json_array(), *st = json_array();
    for (int i = 0; i < r->n_spike_channels; i++) json_array_append_new(sc, json_integer(r->spike_channels[i]));
    for (int i = 0; i < r->n_spike_tokens; i++) json_array_append_new(st, json_integer(r->spike_tokens[i]));
    json_object_set_new(root, "spike_channels", sc);
    json_object_set_new(root, "spike_tokens", st);
    json_t *lcs = json_array();
    for (int i = 0; i < r->n_lifecycles; i++) {
        const sks_lifecycle *lc = &r->lifecycles[i];
        json_t *e = json_object();
        json_object_set_new(e, "token", json_integer(lc->token));
        json_object_set_new(e, "channel", json_integer(lc->channel));
        json_object_set_new(e, "step_up", sks__blocks_json(lc->up_blocks, lc->n_up));
        json_object_set_new(e, "step_down", sks__blocks_json(lc->down_blocks, lc->n_down));
        json_object_set_new(e, "main_step_up", json_integer(lc->main_up));
        json_object_set_new(e, "plateau", json_pack("[ii]", lc->plateau_first, lc->plateau_last));
        json_object_set_new(e, "peak_abs", sks_json_num(lc->peak_abs));
        json_array_append_new(lcs, e);
    }
    json_object_set_new(root, "lifecycle", lcs);
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
    json_dumpf(root, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(10));
    fputc('\n', stdout);
    json_decref(root);
}

int sks_cmd_trace(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompts_file = NULL, *tokens_arg = NULL, *tok_path = NULL,
               *out_path = NULL;
    int want_json = 0, quiet = 0, rc = 0, ret = 1;
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    sks_spike_rule rule;
    sks_trace_opts_rule(&o, &rule);
    unsigned rule_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        long lv;
        int usage = 0;
        if (sks_cli_rule_option("trace", a, val, &rule, &rule_given, &usage)) {
            if (usage) return 2;
            i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks__trace_help(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            want_json = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else if (!strcmp(a, "--residual")) {
            o.keep_residual = 1;
        } else if (a[0] == '-' && a[1] && !val) {
            fprintf(stderr, "sinkscope trace: unknown option or missing value: %s (see sinkscope trace --help)\n", a);
            return 2;
        } else if (!strcmp(a, "--prompt")) {
            prompt = argv[++i];
        } else if (!strcmp(a, "--prompts")) {
            prompts_file = argv[++i];
        } else if (!strcmp(a, "--tokens")) {
            tokens_arg = argv[++i];
        } else if (!strcmp(a, "--tokenizer")) {
            tok_path = argv[++i];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out_path = argv[++i];
        } else if (!strcmp(a, "--eps")) {
            if ((rc = sks_cli_parse_double("--eps", argv[++i], &o.eps))) return sks_cli_fail("trace", rc) + 1;
        } else if (!strcmp(a, "--step-frac")) {
            if ((rc = sks_cli_parse_double("--step-frac", argv[++i], &o.step_frac))) return sks_cli_fail("trace", rc) + 1;
        } else if (!strcmp(a, "--topk")) {
            if ((rc = sks_cli_parse_int("--topk", argv[++i], 1, 100000, &lv))) return sks_cli_fail("trace", rc) + 1;
            o.topk = (int)lv;
        } else if (!strcmp(a, "--n-alpha")) {
            if ((rc = sks_cli_parse_int("--n-alpha", argv[++i], 1, 100000, &lv))) return sks_cli_fail("trace", rc) + 1;
            o.n_alpha = (int)lv;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sinkscope trace: unknown option %s (see sinkscope trace --help)\n", a);
            return 2;
        } else if (!model_path) {
            model_path = a;
        } else {
            fprintf(stderr, "sinkscope trace: unexpected argument '%s' (see sinkscope trace --help)\n", a);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "sinkscope trace: no MODEL given (see sinkscope trace --help)\n");
        return 2;
    }
    if (!!prompt + !!prompts_file + !!tokens_arg > 1) {
        fprintf(stderr, "sinkscope trace: give only one of --prompt, --prompts, --tokens\n");
        return 2;
    }
    if (o.keep_residual && !out_path) {
        fprintf(stderr, "sinkscope trace: --residual needs -o OUT.msgpack\n");
        return 2;
    }
    if (sks_cli_rule_finish("trace", &rule, rule_given)) return 2;
    sks_trace_opts_set_rule(&o, &rule);
    if (!(o.eps > 0 && o.eps < 1) || !(o.step_frac > 0 && o.step_frac <= 1)) {
        fprintf(stderr, "sinkscope trace: --eps must be in (0, 1) and --step-frac in (0, 1]\n");
        return 2;
    }
    sks_cli_progress_install(quiet);

    sks_model *m = NULL;
    sks_tokenizer *tok = NULL;
    sks_trace_result *r = NULL;
    char **lines = NULL;
    int n_lines = 0, n_prompts = 0;
    int32_t **ids = NULL;
    int *lens = NULL;
    if (sks_cli_open_model("trace", model_path, &m)) return 1;
    if (!tokens_arg) {
        rc = sks_tokenizer_open_for_model(m, tok_path, &tok);
        if (rc && (prompt || prompts_file || tok_path)) {
            sks_cli_fail("trace", rc);
            goto done;
        }
        if (rc) tok = NULL;
    }
    if (prompts_file) {
        if ((n_lines = sks__read_lines(prompts_file, &lines)) < 0) {
            sks_cli_fail("trace", n_lines);
            n_lines = 0;
            goto done;
        }
    }
    if (!prompts_file && !prompt && !tokens_arg) { /* the one built-in prompt set */
        if ((rc = sks_default_prompts(m, tok, 1, &ids, &lens, &n_prompts))) {
            sks_cli_fail("trace", rc);
            goto done;
        }
        if (!tok && !quiet) fprintf(stderr, "sinkscope trace: no tokenizer found; using %d prompts of BOS + %d pseudo-random ids\n",
                          n_prompts, lens[0] - 1);
    } else {
        n_prompts = prompts_file ? n_lines : 1;
        ids = calloc((size_t)n_prompts, sizeof *ids);
        lens = calloc((size_t)n_prompts, sizeof *lens);
        if (!ids || !lens) {
            sks_cli_fail("trace", sks_fail(SKS_ENOMEM, "out of memory"));
            goto done;
        }
        if (tokens_arg) {
            if ((rc = sks_parse_ids(tokens_arg, &ids[0], &lens[0]))) {
                sks_cli_fail("trace", rc);
                goto done;
            }
        } else {
            if (!tok) {
                sks_cli_fail("trace", sks_fail(SKS_ENOTFOUND, "the model has no tokenizer (use --tokens or --tokenizer)"));
                goto done;
            }
            for (int p = 0; p < n_prompts; p++)
                if ((rc = sks_tokenizer_encode(tok, prompts_file ? lines[p] : prompt, 1, &ids[p], &lens[p]))) {
                    sks_cli_fail("trace", rc);
                    goto done;
                }
        }
        const char *what = tokens_arg ? "--tokens" : prompts_file ? prompts_file : "--prompt";
        if ((rc = sks_prompts_check(m, n_prompts, (const int32_t *const *)ids, lens, what))) {
            sks_cli_fail("trace", rc);
            ret = 2;
            goto done;
        }
    }
    if ((rc = sks_trace_run(m, n_prompts, (const int32_t *const *)ids, lens, &o, &r))) {
        sks_cli_fail("trace", rc);
        goto done;
    }
    if (out_path && (rc = sks_trace_write(r, m, &o, out_path))) {
        sks_cli_fail("trace", rc);
        goto done;
    }
    if (want_json) sks__print_json(r, &o);
    else if (!quiet) sks_cli_print_trace_findings(stdout, r, &o);
    if (!quiet && out_path) fprintf(stderr, "sinkscope trace: wrote %s\n", out_path);
    ret = 0;
done:
    sks_trace_result_free(r);
    if (ids)
        for (int p = 0; p < n_prompts; p++) free(ids[p]);
    free(ids);
    free(lens);
    for (int i = 0; i < n_lines; i++) free(lines[i]);
    free(lines);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return ret;
}
