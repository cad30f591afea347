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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *outdir;
    char model_dir[4096];
    const char *preset;
    const char *model_type; /* NULL: the preset's family */
    uint64_t seed;
    int quiet, no_plots;
    sks_synth *synth;
    sks_synth_verdict v;
} sks__demo;

/* 1. synthesize the model into DIR/model */
static int sks__demo_synth(sks__demo *D) {
    sks_synth_config c;
    int rc = sks_synth_preset(D->preset, &c);
    if (!rc && D->model_type) rc = sks_synth_set_model_type(&c, D->model_type);
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
 * ratio 1000, eps 0.3) and compare with planted.json (sks_synth_verify). Writes
 * DIR/verify.json. */
static int sks__demo_verify(sks__demo *D) {
    char path[4200];
    snprintf(path, sizeof path, "%s/verify.json", D->outdir);
    int rc = sks_synth_verify(D->synth, D->model_dir, &D->v);
    return rc ? rc : sks_synth_verdict_write(&D->v, path);
}

/* The verdict, one line per check. */
static void sks__demo_print_verdict(const sks__demo *D) {
    const sks_synth_planted *p = sks_synth_get_planted(D->synth);
    const sks_synth_verdict *v = &D->v;
    printf("planted versus found (trace, abs 100, ratio 1000, eps 0.3; %s/verify.json):\n", D->outdir);
    printf("  spike channels   planted %d, found %d, all planted found: %s\n", p->n_spike, v->n_found,
           v->channels_found ? "yes" : "NO");
    printf("  spike token      %s\n", v->token0_only ? "position 0 only" : "NOT position 0 only");
    printf("  lifecycle        step-up at block %d (FFN of layer %d)%s: %s; plateau >= %.0fx the block median\n",
           v->up_block, p->step_up_layer, v->down_block > 0 ? ", step-down at the planted FFN" : "",
           v->lifecycle_ok ? "as planted" : "NOT as planted", v->plateau_min_ratio);
    printf("  sink heads       planted %d; measured (alpha_0 > %.1f): %d found, %d extra, %d missed\n", p->n_sink,
           v->trace.eps, v->tp, v->fp, v->fn);
    printf("                   alpha_0: planted >= %.3f, others <= %.3f\n", v->alpha0_min_planted, v->alpha0_max_other);
    if (v->moe)
        printf("  experts          spike token routed to expert %d (planted %d) with weight %.3f; its lambda* "
               "within %.1f%%, |cos(s*, planted)| %.4f; active form within %.1f%%: %s\n",
               v->moe_check.routed ? p->moe_up_expert : -1, p->moe_up_expert, v->moe_check.weight,
               100 * v->moe_check.lambda_rel_err, v->moe_check.cos_s, 100 * v->moe_check.active_rel_err,
               v->moe_check.pass ? "as planted" : "NOT as planted");
    printf("verdict: %s\n", v->pass ? "every planted spike and sink recovered" : "MISMATCH (see verify.json)");
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
        SKS_OPT_STR("--model-type T", &D.model_type,
                    "the preset's sizes in another family: llama, mistral, qwen2,\n"
                    "gemma2 (sandwich norms, GeGLU; docs/synth.md) or mixtral"),
        SKS_OPT_U64("--seed S", &D.seed, 0, (double)INT64_MAX, "seed of the model and the prompts (default 1)"),
        SKS_OPT_FLAG("--no-plots", &D.no_plots, "skip the figures and report.html"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "demo", .opts = opts, .quiet = &D.quiet,
        .usage = "[-o DIR] [--preset NAME] [--model-type T] [--seed S] [--no-plots] [--quiet]", .about = sks__about,
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
    sks__demo_print_verdict(&D);
    sks_synth_free(D.synth);
    return D.v.pass ? 0 : 1;
}
