/* cmd_spikes.c - `sinkscope spikes`: quadratic forms S_k of the FFNs (SPEC section 3).
 * Parses options, picks the (layer, channel) pairs, drives the per-layer steps of
 * analysis/spikes.c with progress, writes the msgpack and the optional JSON summary. */
#include "cli.h"
#include "../analysis/sks_out.h"
#include "../dist/sks_dist.h"
#include "../analysis/sks_spikes.h"
#include "../analysis/sks_trace.h"
#include "../loaders/sks_tokenizer.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *sks__piece_cb(void *ud, int id) { return ud ? sks_tokenizer_piece(ud, id) : NULL; }

static json_t *sks__json_summary(const sks_spikes_report *rep, const sks_model *m) {
    json_t *root = json_object(), *layers = json_array();
    json_object_set_new(root, "schema", json_string("sinkscope.spikes/1"));
    json_object_set_new(root, "model", json_string(sks_model_path(m)));
    json_object_set_new(root, "selection", json_string(rep->selection));
    if (rep->no_quadform) {
        json_object_set_new(root, "quadratic_form", json_false());
        json_object_set_new(root, "note", json_string(sks_spikes_no_quadform_note));
    }
    if (rep->trace) {
        json_t *sc = json_array();
        for (int i = 0; i < rep->trace->n_spike_channels; i++)
            json_array_append_new(sc, json_integer(rep->trace->spike_channels[i]));
        json_object_set_new(root, "spike_channels", sc);
    }
    for (int i = 0; i < rep->n_layers; i++) {
        const sks_spikes_layer_result *L = &rep->layers[i];
        json_t *jl = json_object(), *chs = json_array();
        json_object_set_new(jl, "layer", json_integer(L->layer));
        for (int c = 0; c < L->n_channels; c++) {
            const sks_spike_channel *h = &L->channels[c];
            json_t *jc = json_object(), *ev = json_array(), *ss = json_array(), *src = json_array();
            for (int e = 0; e < h->rank; e++) json_array_append_new(ev, sks_json_num(h->eigenvalues[e]));
            for (int k = 0; k < L->d; k++) json_array_append_new(ss, sks_json_num(h->s_star[k]));
            if (h->source & SKS_SPK_SRC_USER) json_array_append_new(src, json_string("user"));
            if (h->source & SKS_SPK_SRC_SPIKE) json_array_append_new(src, json_string("spike"));
            if (h->source & SKS_SPK_SRC_FROB) json_array_append_new(src, json_string("frobenius"));
            json_object_set_new(jc, "channel", json_integer(h->channel));
            json_object_set_new(jc, "source", src);
            json_object_set_new(jc, "eigenvalues", ev);
            json_object_set_new(jc, "s_star", ss);
            json_object_set_new(jc, "frobenius", sks_json_num(h->frobenius));
            json_object_set_new(jc, "trace", sks_json_num(h->trace));
            json_object_set_new(jc, "dominance", sks_json_num(h->dominance));
            json_object_set_new(jc, "energy_fraction", sks_json_num(h->energy_fraction));
            json_object_set_new(jc, "token", json_integer(h->token));
            json_object_set_new(jc, "cos_x_s", sks_json_num(h->cos_x_s));
            json_object_set_new(jc, "quad_pred", sks_json_num(h->quad_pred));
            json_object_set_new(jc, "rank1_pred", sks_json_num(h->rank1_pred));
            json_object_set_new(jc, "true_out", sks_json_num(h->true_out));
            json_object_set_new(jc, "silu_regime", sks_json_num(h->silu_regime));
            json_object_set_new(jc, "cos_x0_s", sks_json_num(h->cos_x0_s));
            json_object_set_new(jc, "converged", json_boolean(h->converged));
            json_array_append_new(chs, jc);
        }
        json_object_set_new(jl, "channels", chs);
        json_object_set_new(jl, "seconds_screen", sks_json_num(L->seconds_screen));
        json_object_set_new(jl, "seconds_eigs", sks_json_num(L->seconds_eigs));
        json_array_append_new(layers, jl);
    }
    json_object_set_new(root, "layers", layers);
    return root;
}

static const char sks__about[] =
    "The directional quadratic amplifier of the FFN: for channel k of layer l,\n"
    "out_k(x) ~= x^T S_k x with S_k = 1/2 (W_gate^T diag(W_down[k,:]) W_up + transpose).\n"
    "Per analysed layer: ||S_k||_F and tr(S_k) of every channel (the screen), then for the\n"
    "selected channels the top r eigenvalues, s*, dominance |l1|/|l2|, energy fraction\n"
    "l1^2/||S_k||_F^2, and on a prompt cos(x, s*), x^T S_k x, l1 (s*.x)^2, the true FFN\n"
    "output and the SiLU regime at the spike token; the first-token map (W_VO singular\n"
    "vectors) and the delimiter route (||n_v|| / median over the vocabulary).\n";

static const char sks__examples[] =
    "under mpirun -np N the layers are split across the N ranks (docs/scale.md)\n\n"
    "example:\n"
    "  sinkscope spikes path/to/model -o spikes.msgpack --json | jq '.layers[0].channels[0]'\n"
    "  sinkscope spikes path/to/model --layers 1 --channels 356 --top-frob 0 -o s.msgpack\n";

static const char *const sks__precisions[] = {"auto", "f32", "f64", NULL}; /* SKS_SPK_PREC_* */

static int sks__tol(void *dst, const char *v) {
    if (sks_cli_parse_double("--tol", v, dst) || !(*(double *)dst > 0 && *(double *)dst < 1))
        return sks_fail(SKS_EARG, "--tol: want a number in (0, 1)");
    return 0;
}

int sks_cmd_spikes(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *layers_s = NULL, *channels_s = NULL, *from_trace = NULL;
    const char *tok_path = NULL;
    sks_prompt_source src = {NULL, NULL, NULL, NULL};
    int json = 0, quiet = 0, top_frob = -1, no_delim = 0, no_ftm = 0, token_pos = -1, resume = 0, code;
    uint64_t max_mem = 0;
    sks_spikes_opts so;
    sks_spikes_opts_default(&so);
    sks_trace_opts to;
    sks_spikes_trace_opts_default(&to);
    sks_cli_rule rule = {{0}, 0};
    sks_trace_opts_rule(&to, &rule.rule);
    const sks_cli_opt opts[] = {
        SKS_OPT_SECTION("selection (default: trace the prompt, take the spike channels at the layers whose FFN\n"
                        "steps them up, plus the --top-frob best channels of each such layer's screen):"),
        SKS_OPT_STR("--layers R", &layers_s,
                    "layers to analyse, e.g. 0-3 or 1,5 (default: step-up layers;\n"
                    "all layers with --channels / --top-frob alone)"),
        SKS_OPT_STR("--channels K,..", &channels_s, "analyse these channels"),
        SKS_OPT_INT("--top-frob N", &top_frob, 0, 1 << 20, "channels of the screen added per layer (default 4; 0 = none)"),
        SKS_OPT_STR("--from-trace FILE", &from_trace, "spike channels and step-up layers from a `sinkscope trace` file"),
        SKS_OPT_SECTION("options:"),
        SKS_OPT_INT("--rank r", &so.rank, 1, 1000, "eigenpairs per channel (default 5)"),
        SKS_OPT_FLAG("--dense", &so.dense, "dense reference path (forms S_k, LAPACK dsyevr; small d only)"),
        SKS_OPT_CHOICE("--precision P", &so.precision, sks__precisions,
                       "operator precision: auto (default: f64 when f*d <= 16M), f32, f64"),
        SKS_OPT_CALL("--tol X", &so.tol, sks__tol, "eigen residual tolerance (default 1e-11 f64, 1e-6 f32)"),
        SKS_OPT_INT("--krylov-block N", &so.block, 1, 64,
                    "vectors per channel and Krylov step (default 1)"),
        SKS_OPT_INT("--channel-block N", &so.channel_block, 1, 4096,
                    "channels iterated together by the eigensolver (default 64;\n"
                    "under mpirun one layer's blocks are dealt to the ranks)"),
        SKS_OPT_STR("--prompt TEXT", &src.prompt, "prompt for the forward pass (needs the model's tokenizer)"),
        SKS_OPT_STR("--tokens IDS", &src.tokens, "prompt as token ids, e.g. 1,450,3290"),
        SKS_OPT_INT("--token POS", &token_pos, 0, INT32_MAX,
                    "spike token position for every channel (default: from the\n"
                    "trace, else argmax_t |out_k|)"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path, "tokenizer file (default: found beside / inside MODEL)"),
        SKS_OPT_FLAG("--no-first-token-map", &no_ftm, "skip the first-token map"),
        SKS_OPT_FLAG("--no-delimiter", &no_delim, "skip the delimiter route"),
        SKS_OPT_STR("-o, --output FILE", &out_path, "msgpack result (schema sinkscope.spikes/1, docs/schema-spikes.md)"),
        SKS_OPT_FLAG("--resume", &resume, "keep the finished layers of an interrupted run (OUT.parts/)"),
        SKS_OPT_BYTES("--max-memory SIZE", &max_mem,
                      "bound the workspaces, e.g. 4G (weights stay mapped; smaller\n"
                      "solver blocks, f32 operator; an error when it cannot fit)"),
        SKS_OPT_RULE(&rule),
        SKS_OPT_TEXT("                     (the rule of the trace that selects the channels)\n"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "spikes", .opts = opts, .model = &model_path, .json = &json, .quiet = &quiet,
        .usage = "MODEL [selection] [options] -o OUT.msgpack [--json]", .about = sks__about, .epilogue = sks__examples,
        .json_help = "JSON summary on stdout: per layer `channels` entries {channel,\n"
                     "eigenvalues, s_star, frobenius, trace, dominance, energy_fraction,\n"
                     "cos_x_s, quad_pred, rank1_pred, true_out}", .quiet_help = "no progress"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!out_path) return sks_cli_usage("spikes", "give -o OUT.msgpack");
    if (sks_cli_rule_done("spikes", &rule)) return 2;
    sks_trace_opts_set_rule(&to, &rule.rule);
    if (channels_s && from_trace) return sks_cli_usage("spikes", "--channels and --from-trace exclude each other");
    if (top_frob >= 0) so.top_frob = top_frob;
    if (no_ftm) so.first_token_map = 0;
    sks_cli_progress_install(quiet);
    if (quiet) sks_log_set_level(SKS_LOG_WARN);

    sks_model *m = NULL;
    if (sks_cli_open_model("spikes", model_path, &m)) return 1;
    const sks_arch *ar = sks_model_arch(m);
    const int L = ar->n_layers, d = ar->d_model;
    int rc = 0, exit_code = 0;
    sks_tokenizer *tok = NULL;
    sks_prompt_set pr = {0};
    sks_spikes_selection sel;
    memset(&sel, 0, sizeof sel);
    int *lay_filter = NULL, nlay_filter = 0, *user_ch = NULL, nuser = 0;
    sks_spikes_run_result run;
    memset(&run, 0, sizeof run);
    sks_dist_parts parts;
    memset(&parts, 0, sizeof parts);
    int have_parts = 0;

    /* the tokenizer is optional unless --prompt needs it */
    if (sks_tokenizer_open_for_model(m, tok_path, &tok)) {
        if (src.prompt || tok_path) {
            rc = SKS_ENOTFOUND;
            goto fail;
        }
        tok = NULL;
        sks_clear_error();
    }
    /* the prompt: --tokens, --prompt, or the first of the built-in prompts */
    if ((rc = sks_prompt_set_make(m, tok, &src, 1, &pr))) goto fail;
    const int32_t *ids = pr.ids[0];
    const int T = pr.lens[0];
    if (token_pos >= T) {
        rc = sks_fail(SKS_EARG, "--token: %d is past the prompt (%d tokens)", token_pos, T);
        goto fail;
    }
    if ((layers_s && (rc = sks_cli_parse_ranges("--layers", "layers", layers_s, L, &lay_filter, &nlay_filter))) ||
        (channels_s && (rc = sks_cli_parse_ranges("--channels", "channels", channels_s, d, &user_ch, &nuser)))) {
        exit_code = sks_cli_fail("spikes", rc) + 1; /* a usage error: 2 */
        goto done;
    }

    sks_spikes_select_opts selo = {.layers = lay_filter, .n_layers = nlay_filter, .channels = user_ch,
                                   .n_channels = nuser, .top_frob_only = top_frob >= 0, .from_trace = from_trace,
                                   .token = token_pos, .trace = to};
    if ((rc = sks_spikes_select(m, ids, T, &selo, so.top_frob, &sel))) goto fail;
    {
        uint64_t need = 0;
        char nb[32];
        if ((rc = sks_spikes_fit_memory(ar, &so, T, sel.n, max_mem, &need))) goto fail;
        if (max_mem)
            sks_log(SKS_LOG_INFO, "spikes: workspaces about %s (channel block %d)",
                    sks_fmt_bytes(need, nb, sizeof nb), so.channel_block);
    }
    sks_spikes_job job = {.tokens = ids, .T = T, .sel_l = sel.layer, .sel_c = sel.channel, .sel_t = sel.token,
                          .nsel = sel.n, .src = sel.src, .delimiter = !no_delim};
    sks_out in;
    sks_out_init(&in);
    sks_spikes_inputs(&in, m, &so, &job); /* the resume manifest */
    rc = sks_dist_parts_open(&parts, out_path, &in, resume);
    sks_out_free(&in);
    if (rc) goto fail;
    have_parts = 1;
    sks_split sp;
    sks_dist_split_init(&sp, &parts);
    if ((rc = sks_spikes_run(m, &so, &job, &sp, &run))) goto fail;
    if (resume) sks_log(SKS_LOG_INFO, "spikes: %d layer(s) resumed from %s", run.n_resumed, parts.dir);
    if (sks_dist_rank() != 0) goto done; /* rank 0 writes */
    sks_spikes_report rep;
    memset(&rep, 0, sizeof rep);
    rep.n_layers = run.n_layers;
    rep.layers = run.layers;
    rep.T = T;
    rep.tokens = ids;
    rep.trace = sel.trace;
    rep.n_wvo = run.n_wvo;
    rep.wvo_sigma1 = run.wvo_sigma1;
    rep.delim = run.have_delim ? &run.delim : NULL;
    rep.trace_abs = sel.trace && !sel.trace_from_file ? to.abs_thresh : NAN;
    rep.trace_ratio = sel.trace && !sel.trace_from_file ? to.ratio : NAN;
    rep.trace_outlier = sel.trace && !sel.trace_from_file ? to.outlier : NAN;
    rep.selection = sel.name;
    rep.no_quadform = run.no_quadform;
    if ((rc = sks_spikes_write(&rep, m, &so, tok ? sks__piece_cb : NULL, tok, out_path))) goto fail;
    sks_dist_parts_remove(&parts);
    if (json) {
        json_t *j = sks__json_summary(&rep, m);
        sks_json_add_nonfinite(j);
        sks_cli_print_json(j, JSON_COMPACT);
    } else if (!quiet) {
        if (run.no_quadform) printf("spikes: %s\n", sks_spikes_no_quadform_note);
        else printf("spikes: %d layer(s) analysed (%s selection)\n", run.n_layers, sel.name);
        sks_cli_print_spike_channels(stdout, run.layers, run.n_layers, 0);
    }
    goto done;
fail:
    exit_code = sks_cli_fail("spikes", rc);
done:
    sks_spikes_run_result_free(&run);
    if (have_parts) sks_dist_parts_free(&parts);
    sks_spikes_selection_free(&sel);
    free(lay_filter);
    free(user_ch);
    sks_prompt_set_free(&pr);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return exit_code;
}
