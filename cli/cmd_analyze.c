/* cmd_analyze.c - `sinkscope analyze`: every analysis, the figures and report.html.
 *
 * Stages (each one library call sequence, timed, progress on stderr):
 *   1 trace        sks_trace_run over the prompts          -> trace.msgpack
 *   2 spikes       S_k eigenpairs at the step-up layers     -> spikes.msgpack
 *   3 vocab-sweep  tokens alone at position 0               -> vocab.msgpack
 *   4 sinks        sink-key geometry, ranked heads          -> sinks.msgpack, kv_map.json
 * then summary.json and, unless --no-plots, notebooks-out/make_report.py (figures and
 * report.html). All stages share one set of thresholds (--abs, --ratio, --min-blocks,
 * --eps) and one set of prompts, so that their numbers can be compared.
 */
#define _POSIX_C_SOURCE 200809L
#include "analyze.h"
#include "cli.h"
#include "../dist/sks_dist.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "../analysis/sks_cost.h"
#include "../analysis/sks_out.h"
#include "../analysis/sks_sinks.h"
#include "../analysis/sks_spikes.h"
#include "../analysis/sks_trace.h"
#include "../analysis/sks_vocab.h"
#include "../loaders/sks_tokenizer.h"

extern char **environ;


void sks_cli_analyze_opts_default(sks_cli_analyze_opts *o) {
    memset(o, 0, sizeof *o);
    o->eps = 0.3;
    sks_spike_rule r;
    sks_spike_rule_default(&r);
    sks_spike_rule_unpack(&r, &o->outlier, &o->abs_thresh, &o->ratio, &o->min_blocks);
    o->seed = 1;
}

/* ---- small helpers -------------------------------------------------------------------- */

typedef struct {
    int n;
    int32_t **ids;  /* (n) owned */
    int *lens;      /* (n) */
    char source[48];
} sks__prompts;

static void sks__prompts_free(sks__prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->ids[i]);
    free(p->ids);
    free(p->lens);
    memset(p, 0, sizeof *p);
}

static int sks__prompts_alloc(sks__prompts *p, int n) {
    p->ids = calloc((size_t)n, sizeof *p->ids);
    p->lens = calloc((size_t)n, sizeof *p->lens);
    if (!p->ids || !p->lens) return sks_fail(SKS_ENOMEM, "analyze: prompts");
    p->n = n;
    return 0;
}

static char *sks__join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static int sks__mkdir_p(const char *dir) {
    char *tmp = strdup(dir);
    if (!tmp) return sks_fail(SKS_ENOMEM, "analyze: out of memory");
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST) {
            int e = errno;
            free(tmp);
            return sks_fail(SKS_EIO, "%s: cannot create folder: %s", dir, strerror(e));
        }
        *p = '/';
    }
    int rc = 0;
    if (mkdir(tmp, 0755) && errno != EEXIST) rc = sks_fail(SKS_EIO, "%s: cannot create folder: %s", dir, strerror(errno));
    free(tmp);
    struct stat st;
    if (!rc && (stat(dir, &st) || !S_ISDIR(st.st_mode))) rc = sks_fail(SKS_EIO, "%s: not a folder", dir);
    return rc;
}

static int sks__file_exists(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

static int sks__file_exists_in(const char *dir, const char *name) {
    char *p = sks__join(dir, name);
    int e = p && sks__file_exists(p);
    free(p);
    return e;
}

/* Every file analyze writes. */
static const char *const sks__outputs[] = {"trace.msgpack", "spikes.msgpack", "vocab.msgpack", "sinks.msgpack",
                                           "kv_map.json", "summary.json", "report.html", "fig_lifecycle.png",
                                           "fig_spectrum.png", "fig_alpha.png", "fig_alignment.png",
                                           "fig_vocab.png", "fig_delimiters.png", "quant_risk.msgpack",
                                           "kv_eval.msgpack", "fig_quant_risk.png", "fig_kv_eval.png"};

/* Remove a folder that holds only files (the partial output folder). */
static void sks__rm_files_dir(const char *dir) {
    for (size_t i = 0; i < sizeof sks__outputs / sizeof sks__outputs[0]; i++) {
        char *p = sks__join(dir, sks__outputs[i]);
        if (p) unlink(p);
        free(p);
    }
    rmdir(dir);
}

/* The run writes into OUT.partial beside OUT; once summary.json is written, each output
 * is renamed into OUT (rename is atomic within a file system) and outputs of an earlier
 * run that this one did not produce are removed, so OUT never mixes two runs' files and
 * a failed run leaves OUT as it was. Other files in OUT are left alone. */
static int sks__publish(const char *partial, const char *outdir) {
    int rc = sks__mkdir_p(outdir);
    for (size_t i = 0; !rc && i < sizeof sks__outputs / sizeof sks__outputs[0]; i++) {
        char *src = sks__join(partial, sks__outputs[i]), *dst = sks__join(outdir, sks__outputs[i]);
        if (!src || !dst) rc = sks_fail(SKS_ENOMEM, "analyze: out of memory");
        else if (sks__file_exists(src)) {
            if (rename(src, dst)) rc = sks_fail(SKS_EIO, "%s: cannot move into place: %s", dst, strerror(errno));
        } else if (unlink(dst) && errno != ENOENT) {
            rc = sks_fail(SKS_EIO, "%s: cannot remove the earlier run's file: %s", dst, strerror(errno));
        }
        free(src);
        free(dst);
    }
    if (!rc) rmdir(partial);
    return rc;
}

static int sks__quiet;

static void sks__stage(int i, int n, const char *name, const char *detail, double eta) {
    if (sks__quiet) return;
    if (eta > 0.5)
        fprintf(stderr, "analyze [%d/%d] %s: %s (about %.0f s)\n", i, n, name, detail, eta);
    else
        fprintf(stderr, "analyze [%d/%d] %s: %s\n", i, n, name, detail);
}

static void sks__done(const char *name, double sec, const char *file) {
    if (sks__quiet) return;
    fprintf(stderr, "analyze       %s done in %.2f s -> %s\n", name, sec, file);
}

/* JSON numbers cannot be NaN or infinite: write null. */

/* ---- prompts -------------------------------------------------------------------------- */

/* Lines of a prompts file, empty lines skipped (malloc'd strings). */
static int sks__read_lines(const char *path, char ***lines, int *n) {
    *lines = NULL;
    *n = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) return sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL, **v = NULL;
    size_t cap = 0;
    int k = 0, kcap = 0, rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (k == kcap) {
            kcap = kcap ? 2 * kcap : 8;
            char **nv = realloc(v, (size_t)kcap * sizeof *v);
            if (!nv) {
                rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
                break;
            }
            v = nv;
        }
        if (!(v[k] = strdup(line))) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
            break;
        }
        k++;
    }
    free(line);
    fclose(fp);
    if (!rc && k == 0) rc = sks_fail(SKS_EARG, "%s: no prompt (every line is empty)", path);
    if (rc) {
        for (int i = 0; i < k; i++) free(v[i]);
        free(v);
        return rc;
    }
    *lines = v;
    *n = k;
    return 0;
}

static int sks__make_prompts(const sks_model *m, const sks_tokenizer *tok, const sks_cli_analyze_opts *o,
                             sks__prompts *p) {
    const sks_arch *a = sks_model_arch(m);
    int n_builtin;
    const char *const *builtin = sks_default_prompt_texts(&n_builtin);
    int maxT = a->max_seq > 0 && a->max_seq < SKS_DEFAULT_PROMPT_T ? a->max_seq : SKS_DEFAULT_PROMPT_T;
    int rc;
    if (o->tokens) {
        int32_t *ids;
        int n;
        if ((rc = sks_cli_parse_ids(o->tokens, &ids, &n))) return rc;
        for (int i = 0; i < n; i++)
            if (ids[i] >= a->vocab_size) {
                int bad = ids[i];
                free(ids);
                return sks_fail(SKS_EARG, "--tokens: id %d outside the vocabulary (%d)", bad, a->vocab_size);
            }
        if (n < 2) {
            free(ids);
            return sks_fail(SKS_EARG, "--tokens: need at least 2 tokens");
        }
        if ((rc = sks__prompts_alloc(p, 1))) {
            free(ids);
            return rc;
        }
        p->ids[0] = ids;
        p->lens[0] = n;
        snprintf(p->source, sizeof p->source, "--tokens");
        return 0;
    }
    if (o->prompt || o->prompts_file || tok) {
        char **lines = NULL;
        int n_text = o->prompt ? 1 : n_builtin;
        if (!o->prompt && o->prompts_file && (rc = sks__read_lines(o->prompts_file, &lines, &n_text))) return rc;
        const char *what = o->prompt ? "--prompt" : o->prompts_file ? o->prompts_file : "built-in texts";
        if (!(rc = sks__prompts_alloc(p, n_text))) {
            for (int i = 0; i < n_text && !rc; i++) {
                const char *text = o->prompt ? o->prompt : lines ? lines[i] : builtin[i];
                if (!tok) {
                    rc = sks_fail(SKS_ENOTFOUND, "%s: the model has no tokenizer (use --tokens or --tokenizer)", what);
                    break;
                }
                if ((rc = sks_tokenizer_encode(tok, text, 1, &p->ids[i], &p->lens[i]))) break;
                /* the built-in texts are cut at the length of Gu et al.; the user's are not */
                if (!o->prompt && !lines && p->lens[i] > maxT) p->lens[i] = maxT;
                if (p->lens[i] < 2)
                    rc = sks_fail(SKS_EARG, "%s: prompt %d gives fewer than 2 tokens", what, i + 1);
                for (int t = 0; t < p->lens[i] && !rc; t++)
                    if (p->ids[i][t] < 0 || p->ids[i][t] >= a->vocab_size)
                        rc = sks_fail(SKS_EARG, "%s: prompt %d: token %d outside the model's vocabulary (%d)", what,
                                      i + 1, p->ids[i][t], a->vocab_size);
            }
        }
        if (!rc) snprintf(p->source, sizeof p->source, "%s", o->prompt ? "--prompt" : lines ? "--prompts" : "built-in texts");
        if (lines)
            for (int i = 0; i < n_text; i++) free(lines[i]);
        free(lines);
        return rc;
    }
    /* No tokenizer: BOS then pseudo-random ids, a different stream per prompt. */
    if ((rc = sks__prompts_alloc(p, n_builtin))) return rc;
    for (int i = 0; i < p->n; i++) {
        p->ids[i] = sks_malloc_n((size_t)maxT, sizeof(int32_t));
        if (!p->ids[i]) return sks_fail(SKS_ENOMEM, "analyze: prompts");
        sks_trace_default_tokens(m, maxT, o->seed + (uint64_t)i, p->ids[i]);
        p->lens[i] = maxT;
    }
    snprintf(p->source, sizeof p->source, "pseudo-random ids (no tokenizer)");
    return 0;
}

/* ---- the state of one run ------------------------------------------------------------- */

typedef struct {
    const sks_model *m;
    const sks_cli_analyze_opts *o;
    const char *outdir;   /* where the stages write: OUT.partial */
    const char *final_dir; /* OUT */
    sks_tokenizer *tok;
    sks__prompts pr;
    double rate;               /* measured forward throughput, flop/s (for estimates) */
    /* results */
    sks_trace_opts to;
    sks_trace_result *tr;
    sks_spikes_opts so;
    sks_spikes_run_result spk;
    const char *spike_selection;
    sks_vocab_opts vo;
    sks_vocab_result *vr;
    sks_sinks_opts sio;
    sks_sinks_result *sr;
    char *cost_json;           /* the cost stage's summary object (with --text) */
    double t_trace, t_spikes, t_vocab, t_sinks, t_cost, t_plots;
    char plots[256];           /* "ok" or why the figures are missing */
    int n_figures;
} sks__run;

static const char *sks__piece(void *ud, int id) {
    return ud ? sks_tokenizer_piece((const sks_tokenizer *)ud, id) : NULL;
}

/* ---- stage 1: trace ------------------------------------------------------------------- */

static int sks__stage_trace(sks__run *R, int n_stages) {
    sks_trace_opts_default(&R->to);
    R->to.abs_thresh = R->o->abs_thresh;
    R->to.ratio = R->o->ratio;
    R->to.min_blocks = R->o->min_blocks;
    R->to.outlier = R->o->outlier;
    R->to.eps = R->o->eps;
    char detail[128];
    int64_t ntok = 0;
    for (int i = 0; i < R->pr.n; i++) ntok += R->pr.lens[i];
    snprintf(detail, sizeof detail, "%d prompt%s, %lld tokens (%s)", R->pr.n, R->pr.n == 1 ? "" : "s",
             (long long)ntok, R->pr.source);
    sks__stage(1, n_stages, "trace", detail, 0);
    double t0 = sks_now();
    int rc = sks_trace_run(R->m, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens, &R->to, &R->tr);
    if (rc) return rc;
    char *path = sks__join(R->outdir, "trace.msgpack");
    if (!path) return sks_fail(SKS_ENOMEM, "analyze");
    rc = sks_dist_rank() == 0 ? sks_trace_write(R->tr, R->m, &R->to, path) : 0; /* rank 0 writes */
    R->t_trace = sks_now() - t0;
    /* 2 flops per parameter and token: enough to predict the later stages' time */
    double flops = 2.0 * (double)sks_model_n_params(R->m) * (double)ntok;
    R->rate = R->t_trace > 1e-3 ? flops / R->t_trace : 1e10;
    if (!rc) sks__done("trace", R->t_trace, path);
    free(path);
    return rc;
}

/* ---- stage 2: spikes ------------------------------------------------------------------ */

static int sks__stage_spikes(sks__run *R, int n_stages) {
    const sks_arch *a = sks_model_arch(R->m);
    const int L = a->n_layers;
    sks_spikes_opts_default(&R->so);
    int *lay = NULL, *ch = NULL, *tk = NULL, n = 0;
    int rc = sks_spikes_select_from_trace(R->tr, &lay, &ch, &tk, &n);
    if (rc) return rc;
    unsigned char *want = calloc((size_t)L, 1);
    char *path = NULL;
    if (!want) {
        rc = sks_fail(SKS_ENOMEM, "analyze: spikes");
        goto done;
    }
    int n_layers_an = 0;
    if (n > 0) {
        R->spike_selection = "from-trace";
        for (int i = 0; i < n; i++)
            if (lay[i] >= 0 && lay[i] < L && !want[lay[i]]) {
                want[lay[i]] = 1;
                n_layers_an++;
            }
    } else {
        R->spike_selection = "top-frob";
        want[sks_trace_steepest_ffn_layer(R->tr)] = 1;
        n_layers_an = 1;
    }
    /* screen per layer: three f x f Gram matrices of depth d (6 f^2 d flops) and the
     * weighted reductions for all d channels (4 f^2 d), at half speed in f64 (the
     * automatic precision for f d <= 16M); plus one forward pass over prompt 0 */
    double fd = (double)a->d_ffn * a->d_ffn * a->d_model;
    double f64 = sks_spikes_precision(R->so.precision, a->d_model, a->d_ffn) == SKS_SPK_PREC_F64 ? 2.0 : 1.0;
    double flops = n_layers_an * 10.0 * fd * f64 + 2.0 * (double)sks_model_n_params(R->m) * R->pr.lens[0];
    double eta = flops / (R->rate > 0 ? R->rate : 1e10);
    char detail[160];
    snprintf(detail, sizeof detail, "%d layer%s (%s), %d channel%s from the trace + %d by ||S_k||_F per layer",
             n_layers_an, n_layers_an == 1 ? "" : "s", R->spike_selection, n, n == 1 ? "" : "s", R->so.top_frob);
    sks__stage(2, n_stages, "spikes", detail, eta);
    double t0 = sks_now();
    /* the analysed layers: the trace's selection, or the steepest one alone */
    int one_l = -1, one_c = -1, one_t = -1;
    for (int l = 0; l < L && n == 0; l++)
        if (want[l]) one_l = l;
    sks_spikes_job job = {.tokens = R->pr.ids[0], .T = R->pr.lens[0], .sel_l = n ? lay : &one_l,
                          .sel_c = n ? ch : &one_c, .sel_t = n ? tk : &one_t, .nsel = n ? n : 1,
                          .src = SKS_SPK_SRC_SPIKE, .keep_noconv = 1, .delimiter = 1};
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    if ((rc = sks_spikes_run(R->m, &R->so, &job, sp.nparts > 1 ? &sp : NULL, &R->spk))) goto done;
    if (sks_dist_rank() != 0) goto done; /* gathered on rank 0 */
    sks_spikes_report rep;
    memset(&rep, 0, sizeof rep);
    rep.n_layers = R->spk.n_layers;
    rep.layers = R->spk.layers;
    rep.T = R->pr.lens[0];
    rep.tokens = R->pr.ids[0];
    rep.trace = R->tr;
    rep.delim = &R->spk.delim;
    rep.trace_abs = R->to.abs_thresh;
    rep.trace_ratio = R->to.ratio;
    rep.trace_outlier = R->to.outlier;
    rep.selection = R->spike_selection;
    rep.n_wvo = R->spk.n_wvo;
    rep.wvo_sigma1 = R->spk.wvo_sigma1;
    rep.no_quadform = R->spk.no_quadform;
    path = sks__join(R->outdir, "spikes.msgpack");
    if (!path) rc = sks_fail(SKS_ENOMEM, "analyze");
    else rc = sks_spikes_write(&rep, R->m, &R->so, R->tok ? sks__piece : NULL, R->tok, path);
    R->t_spikes = sks_now() - t0;
    if (!rc) sks__done("spikes", R->t_spikes, path);
done:
    free(path);
    free(want);
    free(lay);
    free(ch);
    free(tk);
    return rc;
}

/* ---- stage 3: vocabulary sweep ---------------------------------------------------------- */

static int sks__stage_vocab(sks__run *R, int n_stages) {
    const sks_arch *a = sks_model_arch(R->m);
    sks_vocab_opts_default(&R->vo);
    if (!(R->o->outlier > 0)) { /* the fixed-threshold rule; else the sweep's own (docs/spikes.md) */
        R->vo.ratio = R->o->ratio;
        R->vo.abs_thresh = R->o->abs_thresh;
    }
    R->vo.sample = sks_vocab_sample_size(R->o->sample, a->vocab_size);
    R->vo.seed = R->o->seed;
    int n = R->vo.sample ? R->vo.sample : a->vocab_size;
    int64_t ntok = 0;
    for (int i = 0; i < R->pr.n; i++) ntok += R->pr.lens[i];
    /* one-token sequences cost what prompt tokens cost, minus the attention over T */
    double eta = ntok > 0 ? R->t_trace * (double)n / (double)ntok : 0;
    char detail[160];
    snprintf(detail, sizeof detail, "%d of %d tokens alone at position 0%s", n, a->vocab_size,
             R->vo.sample ? " (sample; --sample 0 for all)" : "");
    sks__stage(3, n_stages, "vocab-sweep", detail, eta);
    double t0 = sks_now();
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    int rc = sks_vocab_run(R->m, &R->vo, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens,
                           sp.nparts > 1 ? &sp : NULL, &R->vr);
    if (rc || sks_dist_rank() != 0) return rc; /* slices gathered on rank 0 */
    char *path = sks__join(R->outdir, "vocab.msgpack");
    if (!path) return sks_fail(SKS_ENOMEM, "analyze");
    rc = sks_vocab_write(R->vr, R->m, &R->vo, R->tok ? sks__piece : NULL, R->tok, path);
    R->t_vocab = sks_now() - t0;
    if (!rc) sks__done("vocab-sweep", R->t_vocab, path);
    free(path);
    return rc;
}

/* ---- stage 4: sinks --------------------------------------------------------------------- */

static int sks__stage_sinks(sks__run *R, int n_stages) {
    sks_sinks_opts_default(&R->sio);
    R->sio.eps = R->o->eps;
    R->sio.abs_thresh = R->o->abs_thresh;
    R->sio.ratio = R->o->ratio;
    R->sio.min_blocks = R->o->min_blocks;
    R->sio.outlier = R->o->outlier;
    /* A model without massive activations still has a first token: let it stand in as
     * the sink token so that the geometry is defined (recorded in params.first_as_sink). */
    R->sio.first_as_sink = R->tr->n_spike_tokens == 0;
    char detail[160];
    snprintf(detail, sizeof detail, "%d prompt%s, eps %g%s", R->pr.n, R->pr.n == 1 ? "" : "s", R->sio.eps,
             R->sio.first_as_sink ? ", no spike token found: position 0 stands in as the sink" : "");
    sks__stage(4, n_stages, "sinks", detail, 1.5 * R->t_trace);
    double t0 = sks_now();
    /* layers split across the ranks, gathered and classified on rank 0 */
    int fell_back = 0;
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    int rc = sks_sinks_analyze(R->m, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens, &R->sio, 0, &sp, &fell_back,
                                &R->sr);
    if (rc || sks_dist_rank() != 0) return rc;
    char *path = sks__join(R->outdir, "sinks.msgpack"), *kv = sks__join(R->outdir, "kv_map.json");
    if (!path || !kv) rc = sks_fail(SKS_ENOMEM, "analyze");
    if (!rc) rc = sks_sinks_write(R->sr, R->m, &R->sio, path);
    if (!rc) rc = sks_sinks_write_kv_map(R->sr, R->m, &R->sio, kv);
    R->t_sinks = sks_now() - t0;
    if (!rc) sks__done("sinks", R->t_sinks, path);
    free(path);
    free(kv);
    return rc;
}

/* ---- stage 5 (with --text): quant-risk and kv-eval -------------------------------------- */

static int sks__stage_cost(sks__run *R, int n_stages) {
    sks_cost_opts co;
    sks_cost_opts_default(&co);
    co.quant.trace = R->to; /* the run's spike rule */
    co.kv.kv_window = R->o->kv_window;
    char *kv = sks__join(R->outdir, "kv_map.json");
    int32_t *ids = NULL;
    int n = 0;
    if (!kv) return sks_fail(SKS_ENOMEM, "analyze");
    co.kv_map_path = kv;
    sks__stage(n_stages, n_stages, "quant-risk, kv-eval", R->o->text, 0);
    double t0 = sks_now();
    int rc = sks_cli_text_ids(R->m, R->o->tokenizer, R->o->text, &ids, &n);
    if (!rc) rc = sks_cost_run(R->m, ids, n, &co, R->o->text, R->outdir, &R->cost_json);
    R->t_cost = sks_now() - t0;
    if (!rc) sks__done("quant-risk, kv-eval", R->t_cost, R->outdir);
    free(ids);
    free(kv);
    return rc;
}

/* ---- summary.json ----------------------------------------------------------------------- */

static json_t *sks__int_array(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *sks__summary_model(const sks_model *m) {
    const sks_arch *a = sks_model_arch(m);
    json_t *j = json_object();
    json_object_set_new(j, "path", json_string(sks_model_path(m)));
    json_object_set_new(j, "format", json_string(sks_format_name(sks_model_format(m))));
    json_object_set_new(j, "family", json_string(a->family));
    json_object_set_new(j, "n_layers", json_integer(a->n_layers));
    json_object_set_new(j, "d_model", json_integer(a->d_model));
    json_object_set_new(j, "d_ffn", json_integer(a->d_ffn));
    json_object_set_new(j, "n_heads", json_integer(a->n_heads));
    json_object_set_new(j, "n_kv_heads", json_integer(a->n_kv_heads));
    json_object_set_new(j, "head_dim", json_integer(a->head_dim));
    json_object_set_new(j, "vocab_size", json_integer(a->vocab_size));
    json_object_set_new(j, "n_params", json_integer((json_int_t)sks_model_n_params(m)));
    json_object_set_new(j, "norms", json_string(sks_arch_norm_layout(a)));
    json_object_set_new(j, "activation", json_string(sks_act_name(a->act)));
    return j;
}

static json_t *sks__summary_trace(const sks__run *R) {
    const sks_trace_result *t = R->tr;
    json_t *j = json_object();
    json_object_set_new(j, "spike_channels", sks__int_array(t->spike_channels, t->n_spike_channels));
    json_object_set_new(j, "spike_tokens", sks__int_array(t->spike_tokens, t->n_spike_tokens));
    int bmax = 0;
    for (int b = 1; b < t->n_blocks; b++)
        if (t->blocks[b].max_abs > t->blocks[bmax].max_abs) bmax = b;
    const sks_trace_block *B = &t->blocks[bmax];
    json_t *mx = json_object();
    json_object_set_new(mx, "block", json_integer(B->block));
    json_object_set_new(mx, "kind", json_string(sks_block_kind_name(B->kind)));
    json_object_set_new(mx, "layer", json_integer(B->layer));
    json_object_set_new(mx, "max_abs", sks_json_num(B->max_abs));
    json_object_set_new(mx, "median_abs", sks_json_num(B->median_abs));
    json_object_set_new(mx, "spike_score", sks_json_num(B->spike_score));
    json_object_set_new(mx, "token", json_integer(B->top_token));
    json_object_set_new(mx, "channel", json_integer(B->top_channel));
    json_object_set_new(j, "largest", mx);
    json_t *lcs = json_array();
    for (int i = 0; i < t->n_lifecycles && i < 16; i++) {
        const sks_lifecycle *lc = &t->lifecycles[i];
        json_t *e = json_object();
        json_object_set_new(e, "token", json_integer(lc->token));
        json_object_set_new(e, "channel", json_integer(lc->channel));
        json_object_set_new(e, "main_up", json_integer(lc->main_up));
        json_object_set_new(e, "step_up_blocks", sks__int_array(lc->up_blocks, lc->n_up));
        json_object_set_new(e, "step_down_blocks", sks__int_array(lc->down_blocks, lc->n_down));
        json_object_set_new(e, "peak_abs", sks_json_num(lc->peak_abs));
        json_array_append_new(lcs, e);
    }
    json_object_set_new(j, "lifecycles", lcs);
    json_object_set_new(j, "sink_ratio_percent", sks_json_num(t->sink_ratio));
    return j;
}

static json_t *sks__summary_spikes(const sks__run *R) {
    json_t *j = json_object(), *chs = json_array();
    json_object_set_new(j, "selection", json_string(R->spike_selection ? R->spike_selection : "?"));
    for (int i = 0; i < R->spk.n_layers; i++) {
        const sks_spikes_layer_result *L = &R->spk.layers[i];
        for (int c = 0; c < L->n_channels; c++) {
            const sks_spike_channel *C = &L->channels[c];
            json_t *e = json_object();
            json_object_set_new(e, "layer", json_integer(L->layer));
            json_object_set_new(e, "channel", json_integer(C->channel));
            json_object_set_new(e, "spike_channel", json_boolean(C->source & SKS_SPK_SRC_SPIKE));
            json_object_set_new(e, "lambda_star", sks_json_num(C->rank > 0 ? C->eigenvalues[0] : NAN));
            json_object_set_new(e, "dominance", sks_json_num(C->dominance));
            json_object_set_new(e, "energy_fraction", sks_json_num(C->energy_fraction));
            json_object_set_new(e, "frobenius", sks_json_num(C->frobenius));
            json_object_set_new(e, "cos_x_s", sks_json_num(C->cos_x_s));
            json_object_set_new(e, "quad_pred", sks_json_num(C->quad_pred));
            json_object_set_new(e, "true_out", sks_json_num(C->true_out));
            json_object_set_new(e, "converged", json_boolean(C->converged));
            if (!isnan(C->post_gain)) { /* a norm follows the FFN (Gemma 2/3, OLMo 2) */
                json_object_set_new(e, "post_gain", sks_json_num(C->post_gain));
                json_object_set_new(e, "post_out", sks_json_num(C->post_out));
            }
            json_array_append_new(chs, e);
        }
    }
    json_object_set_new(j, "channels", chs);
    if (R->spk.have_delim) {
        json_t *top = json_array();
        for (int i = 0; i < R->spk.delim.n_top && i < 10; i++) {
            json_t *e = json_object();
            const char *pc = R->tok ? sks_tokenizer_piece(R->tok, R->spk.delim.top_ids[i]) : NULL;
            json_object_set_new(e, "id", json_integer(R->spk.delim.top_ids[i]));
            json_object_set_new(e, "ratio", sks_json_num(R->spk.delim.top_ratio[i]));
            if (pc) json_object_set_new(e, "piece", json_string(pc));
            json_array_append_new(top, e);
        }
        json_object_set_new(j, "delimiter_top", top);
        if (R->spk.delim.no_input_norm) json_object_set_new(j, "note", json_string(sks_spikes_no_input_norm_note));
    }
    if (R->spk.no_quadform) {
        json_object_set_new(j, "quadratic_form", json_false());
        json_object_set_new(j, "note", json_string(sks_spikes_no_quadform_note));
    }
    return j;
}

static json_t *sks__summary_sinks(const sks__run *R) {
    const sks_sinks_result *s = R->sr;
    json_t *j = json_object(), *auc = json_object(), *top = json_array();
    const int H = s->n_heads;
    json_object_set_new(j, "eps", sks_json_num(R->sio.eps));
    json_object_set_new(j, "sink_ratio_percent", sks_json_num(s->sink_ratio));
    json_object_set_new(j, "n_sink_heads", json_integer(s->n_sink_heads));
    json_object_set_new(j, "n_heads_total", json_integer((json_int_t)s->n_layers * H));
    json_object_set_new(j, "first_as_sink", json_boolean(R->sio.first_as_sink));
    json_object_set_new(j, "main_predictor", json_string(sks_sinks_pred_name(R->sio.main_pred)));
    for (int p = 0; p < SKS_PRED_COUNT; p++) json_object_set_new(auc, sks_sinks_pred_name(p), sks_json_num(s->auc[p]));
    json_object_set_new(j, "auc", auc);
    /* heads by measured alpha_0 */
    int64_t LH = (int64_t)s->n_layers * H;
    int *idx = sks_malloc_n((size_t)(LH ? LH : 1), sizeof *idx);
    if (idx) {
        for (int64_t i = 0; i < LH; i++) idx[i] = (int)i;
        for (int64_t i = 1; i < LH; i++) { /* insertion sort: L*H is small */
            int v = idx[i];
            int64_t k = i - 1;
            while (k >= 0 && s->alpha0[idx[k]] < s->alpha0[v]) {
                idx[k + 1] = idx[k];
                k--;
            }
            idx[k + 1] = v;
        }
        for (int64_t i = 0; i < LH && i < 10; i++) {
            int h = idx[i];
            json_t *e = json_object();
            json_object_set_new(e, "layer", json_integer(h / H));
            json_object_set_new(e, "head", json_integer(h % H));
            json_object_set_new(e, "alpha0", sks_json_num(s->alpha0[h]));
            json_object_set_new(e, "sink", json_boolean(s->is_sink[h] > 0.5));
            for (int p = 0; p < SKS_PRED_COUNT; p++)
                json_object_set_new(e, sks_sinks_pred_name(p), sks_json_num(s->pred[p][h]));
            json_array_append_new(top, e);
        }
        free(idx);
    }
    json_object_set_new(j, "top_heads", top);
    return j;
}

static json_t *sks__summary_vocab(const sks__run *R) {
    const sks_vocab_result *v = R->vr;
    json_t *j = json_object(), *ex = json_array();
    json_object_set_new(j, "spike_fraction", sks_json_num(v->spike_fraction));
    json_object_set_new(j, "n_tokens", json_integer(v->n_tokens));
    json_object_set_new(j, "n_spike", json_integer(v->n_spike));
    json_object_set_new(j, "sampled", json_boolean(R->vo.sample > 0));
    json_object_set_new(j, "n_exceptions", json_integer(v->n_exceptions));
    json_object_set_new(j, "threshold_ratio", sks_json_num(R->vo.ratio));
    json_object_set_new(j, "threshold_abs", sks_json_num(R->vo.abs_thresh));
    json_object_set_new(j, "top_channel", json_integer(v->top_channel));
    for (int i = 0; i < v->n_exceptions && i < 20; i++) {
        json_t *e = json_object();
        const char *pc = R->tok ? sks_tokenizer_piece(R->tok, v->exceptions[i]) : NULL;
        json_object_set_new(e, "id", json_integer(v->exceptions[i]));
        if (pc) json_object_set_new(e, "piece", json_string(pc));
        json_array_append_new(ex, e);
    }
    json_object_set_new(j, "exceptions_first", ex);
    return j;
}

static int sks__write_summary(sks__run *R, int print) {
    json_t *root = json_object(), *set = json_object(), *tim = json_object(), *files = json_array();
    json_object_set_new(root, "schema", json_string("sinkscope.summary/1"));
    json_object_set_new(root, "model", sks__summary_model(R->m));
    json_object_set_new(set, "outlier", sks_json_num(R->o->outlier));
    json_object_set_new(set, "abs", sks_json_num(R->o->abs_thresh));
    json_object_set_new(set, "ratio", sks_json_num(R->o->ratio));
    json_object_set_new(set, "min_blocks", json_integer(R->o->min_blocks));
    json_object_set_new(set, "eps", sks_json_num(R->o->eps));
    json_object_set_new(set, "sample", json_integer(R->o->sample));
    json_object_set_new(set, "seed", json_integer((json_int_t)R->o->seed));
    json_object_set_new(set, "prompts", json_string(R->pr.source));
    json_object_set_new(set, "prompt_lengths", sks__int_array(R->pr.lens, R->pr.n));
    json_object_set_new(set, "tokenizer", R->tok ? json_string(sks_tokenizer_kind(R->tok)) : json_null());
    json_object_set_new(root, "settings", set);
    if (R->tr) json_object_set_new(root, "trace", sks__summary_trace(R));
    if (R->spike_selection) json_object_set_new(root, "spikes", sks__summary_spikes(R));
    if (R->vr) json_object_set_new(root, "vocab", sks__summary_vocab(R));
    if (R->sr) json_object_set_new(root, "sinks", sks__summary_sinks(R));
    if (R->cost_json) { /* perplexity, quant_risk, kv_eval */
        json_t *c = json_loads(R->cost_json, 0, NULL);
        if (c) json_object_update(root, c);
        json_decref(c);
    }
    json_object_set_new(tim, "trace", sks_json_num(R->t_trace));
    json_object_set_new(tim, "spikes", sks_json_num(R->t_spikes));
    json_object_set_new(tim, "vocab", sks_json_num(R->t_vocab));
    json_object_set_new(tim, "sinks", sks_json_num(R->t_sinks));
    if (R->cost_json) json_object_set_new(tim, "cost", sks_json_num(R->t_cost));
    if (R->t_plots > 0) json_object_set_new(tim, "plots", sks_json_num(R->t_plots));
    json_object_set_new(root, "timings_s", tim);
    for (size_t i = 0; i < sizeof sks__outputs / sizeof sks__outputs[0]; i++) {
        const char *const *names = sks__outputs;
        char *p = sks__join(R->outdir, names[i]);
        struct stat st;
        if (p && (!strcmp(names[i], "summary.json") || !stat(p, &st))) json_array_append_new(files, json_string(names[i]));
        free(p);
    }
    json_object_set_new(root, "files", files);
    json_object_set_new(root, "plots", json_string(R->plots[0] ? R->plots : "not run"));
    sks_json_add_nonfinite(root);
    char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (!s) return sks_fail(SKS_ENOMEM, "summary.json: encoding failed");
    char *path = sks__join(R->outdir, "summary.json");
    size_t n = strlen(s);
    char *buf = realloc(s, n + 2);
    int rc;
    if (!path || !buf) {
        free(buf ? buf : s);
        free(path);
        return sks_fail(SKS_ENOMEM, "summary.json");
    }
    buf[n] = '\n';
    buf[n + 1] = '\0';
    rc = sks_write_file_atomic(path, buf, n + 1);
    if (!rc && print) fputs(buf, stdout);
    free(buf);
    free(path);
    return rc;
}

/* ---- figures and report.html ------------------------------------------------------------ */


/* The folder holding make_report.py: $SKS_NOTEBOOKS_DIR, the source tree this binary
 * was built from (SKS_SOURCE_DIR, or this file's own path), or notebooks-out next to
 * or above the executable. */
static int sks__find_notebooks(char *out, size_t cap) {
    const char *env = getenv("SKS_NOTEBOOKS_DIR");
    if (env && *env) {
        char p[4096 + 32];
        if (snprintf(p, sizeof p, "%s/make_report.py", env) >= (int)sizeof p || !sks__file_exists(p))
            return SKS_ENOTFOUND;
        return snprintf(out, cap, "%s", env) < (int)cap ? 0 : SKS_ENOTFOUND;
    }
    enum { N = 4, W = 4096 };
    static char cand[N][W];
    int nc = 0;
#ifdef SKS_SOURCE_DIR
    if (snprintf(cand[nc], W, "%s/notebooks-out", SKS_SOURCE_DIR) < W) nc++;
#endif
    {
        /* CMake compiles with absolute source paths: <src>/cli/cmd_analyze.c */
        const char *f = __FILE__;
        const char *cut = strstr(f, "/cli/cmd_analyze.c");
        if (f[0] == '/' && cut && snprintf(cand[nc], W, "%.*s/notebooks-out", (int)(cut - f), f) < W) nc++;
    }
    char exe[2048];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = '\0';
        char *sl = strrchr(exe, '/');
        if (sl) {
            *sl = '\0';
            if (snprintf(cand[nc], W, "%s/../notebooks-out", exe) < W) nc++;
            if (snprintf(cand[nc], W, "%s/../share/sinkscope/notebooks-out", exe) < W) nc++;
        }
    }
    for (int i = 0; i < nc; i++) {
        char p[W + 32];
        if (snprintf(p, sizeof p, "%s/make_report.py", cand[i]) >= (int)sizeof p) continue;
        if (sks__file_exists(p) && snprintf(out, cap, "%s", cand[i]) < (int)cap) return 0;
    }
    return SKS_ENOTFOUND;
}

/* Run argv with its stdout sent to our stderr (stdout is for --json), or with -q both to
 * /dev/null (a failure is still reported by its exit status); exit status or -1. */
static int sks__spawn(char *const argv[]) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa)) return -1;
    if (sks__quiet) {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
    } else {
        posix_spawn_file_actions_adddup2(&fa, 2, 1);
    }
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    int e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Figures and report. Missing Python, packages or scripts only skip them (returns 0);
 * a make_report.py that runs and fails is an error (the results stay on disk). */
static int sks__plots(sks__run *R) {
    double t0 = sks_now();
    const char *py = getenv("SKS_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    char nbdir[4096];
    if (access(py, X_OK)) {
        snprintf(R->plots, sizeof R->plots, "skipped: %s not found (run scripts/install-deps.sh)", py);
        fprintf(stderr, "analyze: figures skipped: %s not found; install it with scripts/install-deps.sh "
                        "(the msgpack results in %s are complete)\n", py, R->final_dir);
        return 0;
    }
    char *chk[] = {(char *)py, "-c", "import numpy, matplotlib, msgpack", NULL};
    if (sks__spawn(chk) != 0) {
        snprintf(R->plots, sizeof R->plots, "skipped: %s lacks numpy/matplotlib/msgpack", py);
        fprintf(stderr, "analyze: figures skipped: %s cannot import numpy, matplotlib and msgpack; run "
                        "scripts/install-deps.sh (Debian python3-numpy python3-matplotlib python3-msgpack). "
                        "The msgpack results in %s are complete.\n", py, R->final_dir);
        return 0;
    }
    if (sks__find_notebooks(nbdir, sizeof nbdir)) {
        snprintf(R->plots, sizeof R->plots, "skipped: notebooks-out/make_report.py not found");
        const char *env = getenv("SKS_NOTEBOOKS_DIR");
        if (env && *env)
            fprintf(stderr, "analyze: figures skipped: SKS_NOTEBOOKS_DIR=%s holds no make_report.py\n", env);
        else
            fprintf(stderr, "analyze: figures skipped: notebooks-out/make_report.py not found; set "
                            "SKS_NOTEBOOKS_DIR to the notebooks-out folder of the sinkscope sources\n");
        return 0;
    }
    char script[4096 + 32];
    if (snprintf(script, sizeof script, "%s/make_report.py", nbdir) >= (int)sizeof script) {
        snprintf(R->plots, sizeof R->plots, "skipped: notebooks folder path too long");
        return 0;
    }
    if (!sks__quiet) fprintf(stderr, "analyze       figures and report: %s %s %s\n", py, script, R->outdir);
    char *argv[] = {(char *)py, script, (char *)R->outdir, NULL};
    int st = sks__spawn(argv);
    R->t_plots = sks_now() - t0;
    if (st != 0) {
        snprintf(R->plots, sizeof R->plots, "failed: make_report.py exited with status %d", st);
        return sks_fail(SKS_EINTERNAL, "%s failed (status %d); the msgpack and JSON results in %s are complete",
                        script, st, R->final_dir);
    }
    static const char *const figs[] = {"fig_lifecycle.png", "fig_spectrum.png", "fig_alpha.png",
                                       "fig_alignment.png", "fig_vocab.png", "fig_delimiters.png"};
    for (size_t i = 0; i < sizeof figs / sizeof figs[0]; i++) {
        char *p = sks__join(R->outdir, figs[i]);
        R->n_figures += p && sks__file_exists(p);
        free(p);
    }
    snprintf(R->plots, sizeof R->plots, "ok: %d of 6 figures, report.html", R->n_figures);
    return 0;
}

/* ---- findings on the terminal ---------------------------------------------------------- */

/* What the four stages found: the trace's spike channels and sinks, lambda*, dominance
 * and cos(x, s*) of each analysed spike channel, the vocabulary spike fraction. */
static void sks__print_findings(FILE *f, const sks__run *R) {
    if (R->tr) sks_cli_print_trace_findings(f, R->tr, &R->to);
    sks_cli_print_spike_channels(f, R->spk.layers, R->spk.n_layers, 1);
    if (R->spk.no_quadform) fprintf(f, "spikes: %s\n", sks_spikes_no_quadform_note);
    char pb[32];
    if (R->vr)
        fprintf(f, "vocabulary: %d of %d tokens (%s) spike alone at position 0 (ratio >= %g x the typical median)%s",
                R->vr->n_spike, R->vr->n_tokens, sks_cli_pct(pb, sizeof pb, R->vr->n_spike, R->vr->n_tokens),
                R->vo.ratio, R->vr->top_channel >= 0 ? ", mostly in channel " : "\n");
    if (R->vr && R->vr->top_channel >= 0) fprintf(f, "%d\n", R->vr->top_channel);
}

/* ---- the pipeline ----------------------------------------------------------------------- */

static void sks__run_free(sks__run *R) {
    sks_trace_result_free(R->tr);
    sks_spikes_run_result_free(&R->spk);
    sks_vocab_result_free(R->vr);
    sks_sinks_result_free(R->sr);
    sks_tokenizer_free(R->tok);
    sks__prompts_free(&R->pr);
    free(R->cost_json);
}

static int sks__validate(const sks_cli_analyze_opts *o) {
    if (!(o->eps > 0.0 && o->eps < 1.0)) return sks_fail(SKS_EARG, "--eps: %g is outside (0, 1)", o->eps);
    const sks_spike_rule rule = {o->outlier, o->abs_thresh, o->ratio, o->min_blocks};
    return sks_spike_rule_check(&rule);
}

int sks_cli_analyze_run(const char *model_path, const char *outdir, const sks_cli_analyze_opts *o) {
    if (!model_path || !outdir || !o) return sks_fail(SKS_EARG, "analyze: model and output folder are required");
    int vrc = sks__validate(o);
    if (vrc) return vrc;
    sks__quiet = o->quiet;
    if (o->quiet) sks_log_set_level(SKS_LOG_WARN);
    sks_model *m = NULL;
    int rc = sks_model_open(model_path, &m);
    if (rc) return rc;
    char *partial = malloc(strlen(outdir) + 16);
    if (!partial) {
        sks_model_close(m);
        return sks_fail(SKS_ENOMEM, "analyze: out of memory");
    }
    size_t nd = strlen(outdir);
    while (nd > 1 && outdir[nd - 1] == '/') nd--; /* "out/" -> "out.partial" */
    snprintf(partial, strlen(outdir) + 16, "%.*s.partial", (int)nd, outdir);
    if (sks_dist_rank() == 0) sks__rm_files_dir(partial); /* left by a run that was killed */
    if (sks_dist_rank() == 0 && (rc = sks__mkdir_p(partial))) {
        free(partial);
        sks_model_close(m);
        return rc;
    }
    sks__run R;
    memset(&R, 0, sizeof R);
    R.m = m;
    R.o = o;
    R.outdir = partial;
    R.final_dir = outdir;
    const sks_arch *a = sks_model_arch(m);
    if (!o->quiet)
        fprintf(stderr, "analyze: %s: %s, %d layers, d %d, %d heads (%d kv), vocab %d -> %s\n", model_path, a->family,
                a->n_layers, a->d_model, a->n_heads, a->n_kv_heads, a->vocab_size, outdir);
    /* The tokenizer encodes the prompts and names the tokens in spikes/vocab output;
     * without one, --tokens or pseudo-random ids still work. */
    {
        int trc = sks_tokenizer_open_for_model(m, o->tokenizer, &R.tok);
        if (trc) {
            R.tok = NULL;
            if (o->tokenizer || ((o->prompt || o->prompts_file) && !o->tokens)) {
                rc = trc;
                goto out;
            }
            if (!o->quiet && !o->tokens)
                fprintf(stderr, "analyze: no tokenizer (%s): using pseudo-random token ids\n", sks_last_error());
            sks_clear_error();
        }
    }
    if ((rc = sks__make_prompts(m, R.tok, o, &R.pr))) goto out;
    if ((rc = sks_prompts_check(m, R.pr.n, (const int32_t *const *)R.pr.ids, R.pr.lens, R.pr.source))) goto out;
    const int n_stages = o->text ? 5 : 4;
    if ((rc = sks__stage_trace(&R, n_stages))) goto out;
    if ((rc = sks__stage_spikes(&R, n_stages))) goto out;
    if ((rc = sks__stage_vocab(&R, n_stages))) goto out;
    if ((rc = sks__stage_sinks(&R, n_stages))) goto out;
    if (sks_dist_rank() != 0) goto out; /* cost stage, summary and figures: rank 0 */
    if (o->text && (rc = sks__stage_cost(&R, n_stages))) goto out;
    if (o->no_plots) {
        snprintf(R.plots, sizeof R.plots, "skipped: --no-plots");
        rc = sks__write_summary(&R, o->json);
    } else if (!(rc = sks__write_summary(&R, 0))) { /* make_report.py reads it */
        int prc = sks__plots(&R);
        rc = sks__write_summary(&R, o->json);
        if (prc && !rc) rc = prc; /* its message is still the last error */
    }
    /* summary.json written: the run is complete (a failed report step is reported, but
     * the results are published) */
    if (sks__file_exists_in(partial, "summary.json")) {
        int prc = sks__publish(partial, outdir);
        if (prc) rc = prc;
    }
    if (!rc && !o->quiet && !o->json) sks__print_findings(stdout, &R);
    if (!rc && !o->quiet)
        fprintf(stderr, "analyze: done in %.1f s: %s/summary.json%s\n",
                R.t_trace + R.t_spikes + R.t_vocab + R.t_sinks + R.t_cost + R.t_plots, outdir,
                R.n_figures ? ", report.html" : "");
out:
    if (sks_dist_rank() == 0 && rc) sks__rm_files_dir(partial);
    sks__run_free(&R);
    sks_model_close(m);
    free(partial);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------ */

static void sks__usage(FILE *f) {
    fprintf(f,
            "usage: sinkscope analyze MODEL -o DIR [options]\n"
            "\n"
            "Runs every analysis on MODEL with one set of thresholds and prompts and writes\n"
            "into DIR: trace.msgpack, spikes.msgpack, vocab.msgpack, sinks.msgpack, kv_map.json,\n"
            "summary.json, the figures fig_*.png and report.html (figures need /usr/bin/python3\n"
            "with numpy, matplotlib and msgpack: scripts/install-deps.sh).\n"
            "\n"
            "options:\n"
            "  -o, --output DIR   output folder (created if needed; the run writes DIR.partial\n"
            "                     and moves its files into DIR once complete, so a failed run\n"
            "                     leaves DIR as it was)\n"
            "  --prompt TEXT      input text (needs the model's tokenizer); default: four built-in\n"
            "                     texts of up to 64 tokens, or pseudo-random ids without a tokenizer\n"
            "  --prompts FILE     one input text per line (empty lines skipped; not cut)\n"
            "  --tokens IDS       input token ids, e.g. 1,450,3290 (overrides --prompt[s])\n"
            "  --tokenizer PATH   tokenizer file (default: found beside or inside MODEL)\n"
            "  --sample N         vocabulary-sweep tokens: N sampled tokens; 0 = all of the\n"
            "                     vocabulary (default: all when V <= 8192, else a sample of 4096)\n"
            "  --eps X            sink head when alpha_0 > X (default 0.3)\n"
            "  --abs X            massive activation needs |h| >= X (default 100)\n"
            "  --ratio X          ... and |h| >= X times the block median (default 1000;\n"
            "                     small models need lower values, e.g. 50)\n"
            "  --min-blocks N     spike channel: consecutive blocks above both (default 3)\n"
            "  --seed S           pseudo-random prompts and vocabulary sample (default 1)\n"
            "  --text FILE        also measure what the spikes and sinks cost on this text:\n"
            "                     quant_risk.msgpack and kv_eval.msgpack (docs/cost.md)\n"
            "  --kv-window W      kv-eval's window (default: a quarter of the context)\n"
            "  --no-plots         write the msgpack and JSON results only\n"
            "  --json             print summary.json to stdout at the end\n"
            "  -q, --quiet        no progress on stderr\n"
            "  -h, --help         this text\n"
            "\n"
            "Environment: SKS_NOTEBOOKS_DIR (folder of make_report.py), SKS_PYTHON (interpreter,\n"
            "default /usr/bin/python3).\n");
}

int sks_cmd_analyze(int argc, char **argv) {
    sks_cli_analyze_opts o;
    sks_cli_analyze_opts_default(&o);
    const char *model = NULL, *out = NULL;
    int rc = 0;
    sks_spike_rule rule = {o.outlier, o.abs_thresh, o.ratio, o.min_blocks};
    unsigned rule_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define SKS__NEED() SKS_CLI_TAKE("analyze", a, v, i)
        int usage = 0;
        if (sks_cli_rule_option("analyze", a, v, &rule, &rule_given, &usage)) {
            if (usage) return 2;
            i++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            sks__usage(stdout);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--out")) {
            SKS__NEED();
            out = v;
        } else if (!strcmp(a, "--prompt")) {
            SKS__NEED();
            o.prompt = v;
        } else if (!strcmp(a, "--prompts")) {
            SKS__NEED();
            o.prompts_file = v;
        } else if (!strcmp(a, "--tokenizer")) {
            SKS__NEED();
            o.tokenizer = v;
        } else if (!strcmp(a, "--tokens")) {
            SKS__NEED();
            o.tokens = v;
        } else if (!strcmp(a, "--sample")) {
            long n;
            SKS__NEED();
            if ((rc = sks_cli_parse_int("--sample", v, 0, 1L << 30, &n))) return sks_cli_fail("analyze", rc) + 1;
            o.sample = n == 0 ? -1 : (int)n;
        } else if (!strcmp(a, "--eps")) {
            SKS__NEED();
            if ((rc = sks_cli_parse_double("--eps", v, &o.eps))) return sks_cli_fail("analyze", rc) + 1;
        } else if (!strcmp(a, "--seed")) {
            long n;
            SKS__NEED();
            if ((rc = sks_cli_parse_int("--seed", v, 0, 0x7fffffffL, &n))) return sks_cli_fail("analyze", rc) + 1;
            o.seed = (uint64_t)n;
        } else if (!strcmp(a, "--text")) {
            SKS__NEED();
            o.text = v;
        } else if (!strcmp(a, "--kv-window")) {
            long n;
            SKS__NEED();
            if ((rc = sks_cli_parse_int("--kv-window", v, 1, 1L << 20, &n))) return sks_cli_fail("analyze", rc) + 1;
            o.kv_window = (int)n;
        } else if (!strcmp(a, "--no-plots")) {
            o.no_plots = 1;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "sinkscope analyze: unknown option '%s' (see sinkscope analyze --help)\n", a);
            return 2;
        } else if (!model) {
            model = a;
        } else {
            fprintf(stderr, "sinkscope analyze: unexpected argument '%s'\n", a);
            return 2;
        }
#undef SKS__NEED
    }
    if (!model || !out) {
        fprintf(stderr, "sinkscope analyze: %s (see sinkscope analyze --help)\n",
                !model ? "MODEL is required" : "-o DIR is required");
        return 2;
    }
    if (sks_cli_rule_finish("analyze", &rule, rule_given)) return 2;
    sks_spike_rule_unpack(&rule, &o.outlier, &o.abs_thresh, &o.ratio, &o.min_blocks);
    if ((rc = sks__validate(&o))) return sks_cli_fail("analyze", rc) + 1;
    sks_cli_progress_install(o.quiet);
    rc = sks_cli_analyze_run(model, out, &o);
    return rc ? sks_cli_fail("analyze", rc) : 0;
}
