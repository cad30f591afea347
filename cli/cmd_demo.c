/* cmd_demo.c - `sinkscope demo [-o DIR]`: synthesize a model with planted spikes and
 * sinks, run every analysis on it through the library, and check the findings against
 * the planted ground truth. Needs no file from outside the repository.
 *
 * The demo is a list of stages, each one call: adding an analysis means adding a row
 * to sks__demo_stages (the analyses themselves are composed in analysis/sks_analyze.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "analyze.h"
#include "../analysis/sks_synth.h"
#include "../analysis/sks_trace.h"
#include "../analysis/sks_out.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *outdir;
    char model_dir[4096];
    const char *preset;
    uint64_t seed;
    int quiet, no_plots;
    sks_synth *synth;
    int verified; /* 1 pass, 0 fail */
    char verdict[1024];
} sks__demo;

/* 1. synthesize the model into DIR/model */
static int sks__demo_synth(sks__demo *D) {
    sks_synth_config c;
    int rc = sks_synth_preset(D->preset, &c);
    if (rc) return rc;
    if ((rc = sks_synth_new(&c, D->seed, &D->synth))) return rc;
    if (!D->quiet) fprintf(stderr, "demo: synthesizing preset '%s' (seed %llu) into %s\n", D->preset,
                           (unsigned long long)D->seed, D->model_dir);
    return sks_synth_write(D->synth, D->model_dir, SKS_DT_F32, 0);
}

/* 2. every analysis (trace, spikes, vocab-sweep, sinks, summary, report) */
static int sks__demo_analyze(sks__demo *D) {
    sks_analyze_opts o;
    sks_analyze_opts_default(&o);
    o.seed = D->seed;
    const sks_cli_analyze_flags f = {D->no_plots, D->quiet, 0};
    return sks_cli_analyze_run(D->model_dir, D->outdir, &o, &f);
}

/* 3. independent check: trace four prompts with the paper's thresholds (abs 100,
 * ratio 1000, eps 0.3) and compare with planted.json. Writes DIR/verify.json. */
static int sks__demo_verify(sks__demo *D) {
    sks_model *m = NULL;
    int rc = sks_model_open(D->model_dir, &m);
    if (rc) return rc;
    const sks_synth_planted *p = sks_synth_get_planted(D->synth);
    const sks_arch *a = sks_model_arch(m);
    enum { NP = 4, T = 64 };
    int32_t ids[NP][T];
    const int32_t *pr[NP];
    int lens[NP];
    for (int k = 0; k < NP; k++) {
        sks_trace_default_tokens(m, T, 100 + (uint64_t)k, ids[k]);
        pr[k] = ids[k];
        lens[k] = T;
    }
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    sks_trace_result *r = NULL;
    if ((rc = sks_trace_run(m, NP, pr, lens, &o, &r))) {
        sks_model_close(m);
        return rc;
    }
    int up = 2 * p->step_up_layer + 2, down = p->step_down_layer < a->n_layers ? 2 * p->step_down_layer + 2 : -1;
    int chan_ok = r->n_spike_channels == p->n_spike, tok_ok = r->n_spike_tokens == 1 && r->spike_tokens[0] == 0;
    int life_ok = 1;
    double min_ratio = INFINITY;
    for (int c = 0; c < p->n_spike; c++) {
        int found = 0;
        for (int k = 0; k < r->n_spike_channels; k++) found |= r->spike_channels[k] == p->channels[c];
        chan_ok &= found;
        const sks_lifecycle *lc = NULL;
        for (int k = 0; k < r->n_lifecycles; k++)
            if (r->lifecycles[k].token == 0 && r->lifecycles[k].channel == p->channels[c]) lc = &r->lifecycles[k];
        if (!lc) {
            life_ok = 0;
            continue;
        }
        int has_down = down < 0;
        for (int k = 0; k < lc->n_down; k++) has_down |= lc->down_blocks[k] == down;
        life_ok &= lc->main_up == up && has_down;
        for (int b = up; b < (down > 0 ? down : r->n_blocks); b++) {
            double q = fabs(lc->values[b]) / r->blocks[b].median_abs;
            if (q < min_ratio) min_ratio = q;
        }
    }
    int tp = 0, fp = 0, fn = 0;
    double min_sink = INFINITY, max_other = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int h = 0; h < a->n_heads; h++) {
            double a0 = r->alpha[((size_t)l * a->n_heads + h) * r->n_alpha];
            int planted = sks_synth_is_sink(D->synth, l, h), measured = a0 > o.eps;
            tp += planted && measured;
            fp += !planted && measured;
            fn += planted && !measured;
            if (planted && a0 < min_sink) min_sink = a0;
            if (!planted && a0 > max_other) max_other = a0;
        }
    D->verified = chan_ok && tok_ok && life_ok && fp == 0 && fn == 0;
    snprintf(D->verdict, sizeof D->verdict,
             "  spike channels   planted %d, found %d, all planted found: %s\n"
             "  spike token      %s\n"
             "  lifecycle        step-up at block %d (FFN of layer %d)%s: %s; plateau >= %.0fx the block median\n"
             "  sink heads       planted %d; measured (alpha_0 > %.1f): %d found, %d extra, %d missed\n"
             "                   alpha_0: planted >= %.3f, others <= %.3f\n",
             p->n_spike, r->n_spike_channels, chan_ok ? "yes" : "NO", tok_ok ? "position 0 only" : "NOT position 0 only",
             up, p->step_up_layer, down > 0 ? ", step-down at the planted FFN" : "", life_ok ? "as planted" : "NOT as planted",
             min_ratio, p->n_sink, o.eps, tp, fp, fn, min_sink, max_other);
    json_t *v = json_object();
    json_object_set_new(v, "schema", json_string("sinkscope.demo-verify/1"));
    json_object_set_new(v, "pass", json_boolean(D->verified));
    json_object_set_new(v, "spike_channels_found", json_boolean(chan_ok));
    json_object_set_new(v, "spike_token_position0_only", json_boolean(tok_ok));
    json_object_set_new(v, "lifecycle_as_planted", json_boolean(life_ok));
    json_object_set_new(v, "plateau_min_ratio", sks_json_num(min_ratio));
    json_object_set_new(v, "sink_true_positive", json_integer(tp));
    json_object_set_new(v, "sink_false_positive", json_integer(fp));
    json_object_set_new(v, "sink_false_negative", json_integer(fn));
    json_object_set_new(v, "alpha0_min_planted", sks_json_num(min_sink));
    json_object_set_new(v, "alpha0_max_other", sks_json_num(max_other));
    json_object_set_new(v, "thresholds", json_pack("{s:o,s:o,s:i,s:o}", "abs", sks_json_num(o.abs_thresh), "ratio", sks_json_num(o.ratio),
                                                   "min_blocks", o.min_blocks, "eps", sks_json_num(o.eps)));
    sks_json_add_nonfinite(v);
    char *text = json_dumps(v, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(v);
    char path[4200];
    snprintf(path, sizeof path, "%s/verify.json", D->outdir);
    rc = text ? sks_write_file_atomic(path, text, strlen(text)) : sks_fail(SKS_ENOMEM, "demo: out of memory");
    free(text);
    sks_trace_result_free(r);
    sks_model_close(m);
    return rc;
}

typedef struct {
    const char *name;
    int (*run)(sks__demo *);
} sks__demo_stage;

static const sks__demo_stage sks__demo_stages[] = {
    {"synth", sks__demo_synth},
    {"analyze", sks__demo_analyze},
    {"verify", sks__demo_verify},
};


static const char sks__about[] =
    "Synthesize a model with planted massive activations and attention sinks (nothing is\n"
    "downloaded), run every analysis on it and check the findings against the planted\n"
    "ground truth. Takes well under a minute on two cores.\n\n"
    "writes into DIR (default demo-out):\n"
    "  model/          the synthesized checkpoint (config.json, model.safetensors,\n"
    "                  planted.json: the ground truth)\n"
    "  trace.msgpack spikes.msgpack vocab.msgpack sinks.msgpack kv_map.json summary.json\n"
    "                  the analyses (docs/), as `sinkscope analyze` writes them\n"
    "  report.html fig_*.png   figures (need /usr/bin/python3 with numpy, matplotlib, msgpack)\n"
    "  verify.json     planted versus found\n";

int sks_cmd_demo(int argc, char **argv) {
    sks__demo D;
    memset(&D, 0, sizeof D);
    D.outdir = "demo-out";
    D.preset = "demo";
    D.seed = 1;
    int code;
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("-o, --output DIR", &D.outdir, "output directory (default demo-out)"),
        SKS_OPT_STR("--out DIR", &D.outdir, NULL),
        SKS_OPT_STR("--preset NAME", &D.preset, "model to synthesize (default demo: d 256, 8 layers, 8 heads)"),
        SKS_OPT_U64("--seed S", &D.seed, 0, (double)INT64_MAX, "seed of the model and the prompts (default 1)"),
        SKS_OPT_FLAG("--no-plots", &D.no_plots, "skip the figures and report.html"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "demo", .opts = opts, .quiet = &D.quiet,
        .usage = "[-o DIR] [--preset NAME] [--seed S] [--no-plots] [--quiet]",
        .about = sks__about,
        .quiet_help = "no progress on stderr"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    snprintf(D.model_dir, sizeof D.model_dir, "%s/model", D.outdir);
    sks_cli_progress_install(D.quiet);
    double t0 = sks_now();
    int rc = 0;
    for (size_t k = 0; k < sizeof sks__demo_stages / sizeof sks__demo_stages[0]; k++) {
        if ((rc = sks__demo_stages[k].run(&D))) {
            const char *msg = sks_last_error();
            fprintf(stderr, "sinkscope demo: stage %s: %s\n", sks__demo_stages[k].name, (msg && *msg) ? msg : sks_strerror(rc));
            sks_synth_free(D.synth);
            return 1;
        }
    }
    printf("sinkscope demo: done in %.1f s; results in %s/\n", sks_now() - t0, D.outdir);
    printf("  model            %s/model (planted ground truth: %s/model/planted.json)\n", D.outdir, D.outdir);
    printf("  analyses         %s/trace.msgpack spikes.msgpack vocab.msgpack sinks.msgpack kv_map.json\n", D.outdir);
    printf("  summary          %s/summary.json\n", D.outdir);
    if (!D.no_plots) printf("  report           %s/report.html (if the figures could be drawn: see summary.json)\n", D.outdir);
    printf("planted versus found (trace, abs 100, ratio 1000, eps 0.3; %s/verify.json):\n%s", D.outdir, D.verdict);
    printf("verdict: %s\n", D.verified ? "every planted spike and sink recovered" : "MISMATCH (see verify.json)");
    sks_synth_free(D.synth);
    return D.verified ? 0 : 1;
}
