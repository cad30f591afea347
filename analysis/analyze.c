/* analyze.c - sks_analyze_run: the four drivers with one rule and one prompt set, the
 * cost stage with a text, summary.json and the publication of OUT.partial
 * (sks_analyze.h). */
#define _POSIX_C_SOURCE 200809L
#include "sks_analyze.h"
#include "sks_cost.h"
#include "sks_out.h"
#include "../loaders/sks_tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

void sks_analyze_opts_default(sks_analyze_opts *o) {
    memset(o, 0, sizeof *o);
    o->eps = 0.3;
    sks_spike_rule_default(&o->rule);
    o->seed = 1;
}

int sks_analyze_opts_check(const sks_analyze_opts *o) {
    if (!(o->eps > 0.0 && o->eps < 1.0)) return sks_fail(SKS_EARG, "--eps: %g is outside (0, 1)", o->eps);
    return sks_spike_rule_check(&o->rule);
}

/* ---- the output folder ---------------------------------------------------------------- */

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

static int sks__file_exists_in(const char *dir, const char *name) {
    char *p = sks__join(dir, name);
    struct stat st;
    int e = p && !stat(p, &st) && S_ISREG(st.st_mode);
    free(p);
    return e;
}

/* Every file analyze writes: the results, then the report's. */
static const char *const sks__outputs[] = {"trace.msgpack", "spikes.msgpack", "vocab.msgpack", "sinks.msgpack",
                                           "kv_map.json", "summary.json", "report.html", "fig_lifecycle.png",
                                           "fig_spectrum.png", "fig_alpha.png", "fig_alignment.png",
                                           "fig_vocab.png", "fig_delimiters.png", "quant_risk.msgpack",
                                           "kv_eval.msgpack", "fig_quant_risk.png", "fig_kv_eval.png"};
enum { SKS__N_OUTPUTS = sizeof sks__outputs / sizeof sks__outputs[0], SKS__FIG0 = 7, SKS__N_FIGS = 6 };

/* Remove a folder that holds only our files (the partial output folder). */
static void sks__rm_files_dir(const char *dir) {
    for (int i = 0; i < SKS__N_OUTPUTS; i++) {
        char *p = sks__join(dir, sks__outputs[i]);
        if (p) unlink(p);
        free(p);
    }
    rmdir(dir);
}

/* Move each output of partial into outdir, removing those of an earlier run that this
 * one did not write (sks_analyze.h). */
static int sks__publish(const char *partial, const char *outdir) {
    int rc = sks__mkdir_p(outdir);
    for (int i = 0; !rc && i < SKS__N_OUTPUTS; i++) {
        char *src = sks__join(partial, sks__outputs[i]), *dst = sks__join(outdir, sks__outputs[i]);
        if (!src || !dst) rc = sks_fail(SKS_ENOMEM, "analyze: out of memory");
        else if (sks__file_exists_in(partial, sks__outputs[i])) {
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

/* ---- the state of one run ------------------------------------------------------------- */

typedef struct {
    const sks_model *m;
    const sks_analyze_opts *o;
    const char *outdir; /* where the stages write: OUT.partial */
    int part;           /* this part of the split (0: writes the files) */
    int n_stages;
    sks_tokenizer *tok;
    sks_prompt_set pr;
    double rate;        /* measured forward throughput, flop/s (for estimates) */
    double gemm_rate;   /* the screen's measured GEMM rate in the spikes stage, flop/s (0: none) */
    sks_analyze_result *r;
    char *cost_json;    /* the cost stage's summary object (with a text) */
    double t_trace, t_spikes, t_vocab, t_sinks, t_cost, t_plots;
    char plots[256];    /* "ok: ..." or why the figures are missing */
} sks__run;

static void sks__event(const sks__run *R, sks_analyze_event_kind kind, int stage, const char *name, const char *text,
                       double seconds) {
    if (!R->o->on_event) return;
    sks_analyze_event e = {kind, stage, R->n_stages, name, text, seconds};
    R->o->on_event(R->o->ud, &e);
}

static const char *sks__piece(void *ud, int id) {
    return ud ? sks_tokenizer_piece((const sks_tokenizer *)ud, id) : NULL;
}

static int64_t sks__n_tokens(const sks_prompt_set *p) {
    int64_t n = 0;
    for (int i = 0; i < p->n; i++) n += p->lens[i];
    return n;
}


/* Write one result file into OUT.partial (part 0 only) and report the stage done. */
static int sks__emit(sks__run *R, const char *name, const char *file, double t0, double *took,
                     int (*write)(const sks__run *R, const char *path)) {
    char *path = sks__join(R->outdir, file);
    int rc = !path ? sks_fail(SKS_ENOMEM, "analyze") : R->part == 0 ? write(R, path) : 0;
    *took = sks_now() - t0;
    if (!rc) sks__event(R, SKS_ANALYZE_DONE, 0, name, path, *took);
    free(path);
    return rc;
}

/* ---- stage 1: trace ------------------------------------------------------------------- */

static int sks__write_trace(const sks__run *R, const char *path) {
    return sks_trace_write(R->r->tr, R->m, &R->r->to, path);
}

static int sks__stage_trace(sks__run *R) {
    sks_trace_opts *to = &R->r->to;
    sks_trace_opts_default(to);
    sks_trace_opts_set_rule(to, &R->o->rule);
    to->eps = R->o->eps;
    char detail[128];
    int64_t ntok = sks__n_tokens(&R->pr);
    snprintf(detail, sizeof detail, "%d prompt%s, %lld tokens (%s)", R->pr.n, R->pr.n == 1 ? "" : "s",
             (long long)ntok, R->pr.source);
    sks__event(R, SKS_ANALYZE_STAGE, 1, "trace", detail, 0);
    double t0 = sks_now();
    int rc = sks_trace_run(R->m, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens, to, &R->r->tr);
    if (!rc) rc = sks__emit(R, "trace", "trace.msgpack", t0, &R->t_trace, sks__write_trace);
    /* 2 flops per parameter and token: enough to predict the later stages' time */
    double flops = 2.0 * (double)sks_model_n_params(R->m) * (double)ntok;
    R->rate = R->t_trace > 1e-3 ? flops / R->t_trace : 1e10;
    return rc;
}

/* ---- stage 2: spikes ------------------------------------------------------------------ */

static int sks__write_spikes(const sks__run *R, const char *path) {
    const sks_analyze_result *r = R->r;
    sks_spikes_report rep;
    memset(&rep, 0, sizeof rep);
    rep.n_layers = r->spk.n_layers;
    rep.layers = r->spk.layers;
    rep.T = R->pr.lens[0];
    rep.tokens = R->pr.ids[0];
    rep.trace = r->tr;
    rep.delim = &r->spk.delim;
    rep.trace_abs = r->to.abs_thresh;
    rep.trace_ratio = r->to.ratio;
    rep.trace_outlier = r->to.outlier;
    rep.selection = r->spike_selection;
    rep.n_wvo = r->spk.n_wvo;
    rep.wvo_sigma1 = r->spk.wvo_sigma1;
    rep.no_quadform = r->spk.no_quadform;
    return sks_spikes_write(&rep, R->m, &r->so, R->tok ? sks__piece : NULL, R->tok, path);
}

static int sks__stage_spikes(sks__run *R) {
    const sks_arch *a = sks_model_arch(R->m);
    sks_analyze_result *r = R->r;
    sks_spikes_opts_default(&r->so);
    int *lay = NULL, *ch = NULL, *tk = NULL, n = 0;
    int rc = sks_spikes_select_from_trace(r->tr, &lay, &ch, &tk, &n);
    if (rc) return rc;
    /* the trace's spike channels at their layers, or the steepest FFN layer alone */
    int n_layers_an = 0, one_l = -1, one_c = -1, one_t = -1;
    if (n > 0) {
        r->spike_selection = "from-trace";
        for (int i = 0; i < n; i++) {
            int seen = 0;
            for (int k = 0; k < i; k++) seen |= lay[k] == lay[i];
            n_layers_an += !seen && lay[i] >= 0 && lay[i] < a->n_layers;
        }
    } else {
        r->spike_selection = "top-frob";
        one_l = sks_trace_steepest_ffn_layer(r->tr);
        n_layers_an = 1;
    }
    /* screen per layer: three f x f Gram matrices of depth d (6 f^2 d flops) and the
     * weighted reductions for all d channels (4 f^2 d), at half speed in f64 (the
     * automatic precision for f d <= 16M); plus one forward pass over prompt 0 */
    double fd = (double)a->d_ffn * a->d_ffn * a->d_model;
    double f64 = sks_spikes_precision(r->so.precision, a->d_model, a->d_ffn) == SKS_SPK_PREC_F64 ? 2.0 : 1.0;
    double flops = n_layers_an * 10.0 * fd * f64 + 2.0 * (double)sks_model_n_params(R->m) * R->pr.lens[0];
    char detail[160];
    snprintf(detail, sizeof detail, "%d layer%s (%s), %d channel%s from the trace + %d by ||S_k||_F per layer",
             n_layers_an, n_layers_an == 1 ? "" : "s", r->spike_selection, n, n == 1 ? "" : "s", r->so.top_frob);
    sks__event(R, SKS_ANALYZE_STAGE, 2, "spikes", detail, flops / (R->rate > 0 ? R->rate : 1e10));
    double t0 = sks_now();
    sks_spikes_job job = {.tokens = R->pr.ids[0], .T = R->pr.lens[0], .sel_l = n ? lay : &one_l,
                          .sel_c = n ? ch : &one_c, .sel_t = n ? tk : &one_t, .nsel = n ? n : 1,
                          .src = SKS_SPK_SRC_SPIKE, .keep_noconv = 1, .delimiter = 1};
    const sks_split *sp = R->o->split && R->o->split->nparts > 1 ? R->o->split : NULL;
    if (!(rc = sks_spikes_run(R->m, &r->so, &job, sp, &r->spk)) && R->part == 0) /* gathered on part 0 */
        rc = sks__emit(R, "spikes", "spikes.msgpack", t0, &R->t_spikes, sks__write_spikes);
    /* the screen's GEMM rate: the yardstick of the later stages' estimates (the trace's
     * rate also carries the first reading of the weights from disk) */
    double fl = 0.0, sec = 0.0;
    for (int i = 0; !rc && i < r->spk.n_layers; i++) fl += r->spk.layers[i].flops_screen, sec += r->spk.layers[i].seconds_screen;
    R->gemm_rate = sec > 0.05 ? fl / sec : 0.0;
    free(lay);
    free(ch);
    free(tk);
    return rc;
}

/* ---- stage 3: vocabulary sweep ---------------------------------------------------------- */

static int sks__write_vocab(const sks__run *R, const char *path) {
    return sks_vocab_write(R->r->vr, R->m, &R->r->vo, R->tok ? sks__piece : NULL, R->tok, path);
}

static int sks__stage_vocab(sks__run *R) {
    const sks_arch *a = sks_model_arch(R->m);
    sks_vocab_opts *vo = &R->r->vo;
    sks_vocab_opts_default(vo);
    if (!(R->o->rule.outlier > 0)) { /* the fixed-threshold rule; else the sweep's own (docs/spikes.md) */
        vo->ratio = R->o->rule.ratio;
        vo->abs_thresh = R->o->rule.abs_thresh;
    }
    vo->sample = sks_vocab_sample_size(R->o->sample, a->vocab_size);
    vo->seed = R->o->seed;
    int n = vo->sample ? vo->sample : a->vocab_size;
    int64_t ntok = sks__n_tokens(&R->pr);
    char detail[160];
    snprintf(detail, sizeof detail, "%d of %d tokens alone at position 0%s", n, a->vocab_size,
             vo->sample ? " (sample; --sample 0 for all)" : "");
    /* one-token sequences batch into wide products: 2 flops per parameter and token at
     * about the screen's GEMM rate; without it, what prompt tokens cost in the trace */
    const double np = (double)sks_model_n_params(R->m);
    sks__event(R, SKS_ANALYZE_STAGE, 3, "vocab-sweep", detail,
               R->gemm_rate > 0 ? 2.0 * np * n / R->gemm_rate : ntok > 0 ? R->t_trace * (double)n / (double)ntok : 0);
    double t0 = sks_now();
    const sks_split *sp = R->o->split && R->o->split->nparts > 1 ? R->o->split : NULL;
    int rc = sks_vocab_run(R->m, vo, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens, sp, &R->r->vr);
    if (rc || R->part != 0) return rc; /* slices gathered on part 0 */
    return sks__emit(R, "vocab-sweep", "vocab.msgpack", t0, &R->t_vocab, sks__write_vocab);
}

/* ---- stage 4: sinks --------------------------------------------------------------------- */

static int sks__write_sinks(const sks__run *R, const char *path) {
    char *kv = sks__join(R->outdir, "kv_map.json");
    int rc = kv ? sks_sinks_write(R->r->sr, R->m, &R->r->sio, path) : sks_fail(SKS_ENOMEM, "analyze");
    if (!rc) rc = sks_sinks_write_kv_map(R->r->sr, R->m, &R->r->sio, kv);
    free(kv);
    return rc;
}

static int sks__stage_sinks(sks__run *R) {
    sks_sinks_opts *sio = &R->r->sio;
    sks_sinks_opts_default(sio);
    sio->eps = R->o->eps;
    sks_spike_rule_unpack(&R->o->rule, &sio->outlier, &sio->abs_thresh, &sio->ratio, &sio->min_blocks);
    /* A model without massive activations still has a first token: let it stand in as
     * the sink token so that the geometry is defined (recorded in params.first_as_sink). */
    sio->first_as_sink = R->r->tr->n_spike_tokens == 0;
    char detail[160];
    snprintf(detail, sizeof detail, "%d prompt%s, eps %g%s", R->pr.n, R->pr.n == 1 ? "" : "s", sio->eps,
             sio->first_as_sink ? ", no spike token found: position 0 stands in as the sink" : "");
    /* one pass over the prompts, whose T-column products run at about half the GEMM rate
     * (each block of weights is converted for T columns only), plus the geometry */
    const double np = (double)sks_model_n_params(R->m), ntok = (double)sks__n_tokens(&R->pr);
    sks__event(R, SKS_ANALYZE_STAGE, 4, "sinks", detail,
               R->gemm_rate > 0 ? 4.0 * np * ntok / R->gemm_rate : 1.5 * R->t_trace);
    double t0 = sks_now();
    /* layers split across the parts, gathered and classified on part 0 */
    int fell_back = 0;
    int rc = sks_sinks_analyze(R->m, R->pr.n, (const int32_t *const *)R->pr.ids, R->pr.lens, sio, 0, R->o->split,
                               &fell_back, &R->r->sr);
    if (rc || R->part != 0) return rc;
    return sks__emit(R, "sinks", "sinks.msgpack", t0, &R->t_sinks, sks__write_sinks);
}

/* ---- stage 5 (with a text): quant-risk and kv-eval -------------------------------------- */

static int sks__stage_cost(sks__run *R) {
    sks_cost_opts co;
    sks_cost_opts_default(&co);
    co.quant.trace = R->r->to; /* the run's spike rule */
    co.kv.kv_window = R->o->kv_window;
    char *kv = sks__join(R->outdir, "kv_map.json");
    int32_t *ids = NULL;
    int n = 0;
    if (!kv) return sks_fail(SKS_ENOMEM, "analyze");
    co.kv_map_path = kv;
    sks__event(R, SKS_ANALYZE_STAGE, R->n_stages, "quant-risk, kv-eval", R->o->text, 0);
    double t0 = sks_now();
    int rc = sks_text_file_ids(R->m, R->o->tokenizer, R->o->text, &ids, &n);
    if (!rc) rc = sks_cost_run(R->m, ids, n, &co, R->o->text, R->outdir, &R->cost_json);
    R->t_cost = sks_now() - t0;
    if (!rc) sks__event(R, SKS_ANALYZE_DONE, 0, "quant-risk, kv-eval", R->outdir, R->t_cost);
    free(ids);
    free(kv);
    return rc;
}

/* ---- summary.json ----------------------------------------------------------------------- */

static json_t *sks__summary_model(const sks_model *m) {
    const sks_arch *a = sks_model_arch(m);
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:s, s:s}", "path", sks_model_path(m),
                     "format", sks_format_name(sks_model_format(m)), "family", a->family, "n_layers", a->n_layers,
                     "d_model", a->d_model, "d_ffn", a->d_ffn, "n_heads", a->n_heads, "n_kv_heads", a->n_kv_heads,
                     "head_dim", a->head_dim, "vocab_size", a->vocab_size, "n_params",
                     (json_int_t)sks_model_n_params(m), "norms", sks_arch_norm_layout(a), "activation",
                     sks_act_name(a->act));
}

static json_t *sks__summary_trace(const sks__run *R) {
    const sks_trace_result *t = R->r->tr;
    int bmax = 0;
    for (int b = 1; b < t->n_blocks; b++)
        if (t->blocks[b].max_abs > t->blocks[bmax].max_abs) bmax = b;
    const sks_trace_block *B = &t->blocks[bmax];
    json_t *lcs = json_array();
    for (int i = 0; i < t->n_lifecycles && i < 16; i++) {
        const sks_lifecycle *lc = &t->lifecycles[i];
        json_array_append_new(lcs, json_pack("{s:i, s:i, s:i, s:o, s:o, s:o}", "token", lc->token, "channel",
                                             lc->channel, "main_up", lc->main_up, "step_up_blocks",
                                             sks_json_ints(lc->up_blocks, lc->n_up), "step_down_blocks",
                                             sks_json_ints(lc->down_blocks, lc->n_down), "peak_abs",
                                             sks_json_num(lc->peak_abs)));
    }
    return json_pack("{s:o, s:o, s:{s:i, s:s, s:i, s:o, s:o, s:o, s:i, s:i}, s:o, s:o}", "spike_channels",
                     sks_json_ints(t->spike_channels, t->n_spike_channels), "spike_tokens",
                     sks_json_ints(t->spike_tokens, t->n_spike_tokens), "largest", "block", B->block, "kind",
                     sks_block_kind_name(B->kind), "layer", B->layer, "max_abs", sks_json_num(B->max_abs),
                     "median_abs", sks_json_num(B->median_abs), "spike_score", sks_json_num(B->spike_score), "token",
                     B->top_token, "channel", B->top_channel, "lifecycles", lcs, "sink_ratio_percent",
                     sks_json_num(t->sink_ratio));
}

static json_t *sks__summary_spikes(const sks__run *R) {
    json_t *j = json_object(), *chs = json_array();
    json_object_set_new(j, "selection", json_string(R->r->spike_selection ? R->r->spike_selection : "?"));
    for (int i = 0; i < R->r->spk.n_layers; i++) {
        const sks_spikes_layer_result *L = &R->r->spk.layers[i];
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
    if (R->r->spk.have_delim) {
        json_t *top = json_array();
        for (int i = 0; i < R->r->spk.delim.n_top && i < 10; i++) {
            json_t *e = json_object();
            const char *pc = R->tok ? sks_tokenizer_piece(R->tok, R->r->spk.delim.top_ids[i]) : NULL;
            json_object_set_new(e, "id", json_integer(R->r->spk.delim.top_ids[i]));
            json_object_set_new(e, "ratio", sks_json_num(R->r->spk.delim.top_ratio[i]));
            if (pc) json_object_set_new(e, "piece", json_string(pc));
            json_array_append_new(top, e);
        }
        json_object_set_new(j, "delimiter_top", top);
        if (R->r->spk.delim.no_input_norm) json_object_set_new(j, "note", json_string(sks_spikes_no_input_norm_note));
    }
    if (R->r->spk.no_quadform) {
        json_object_set_new(j, "quadratic_form", json_false());
        json_object_set_new(j, "note", json_string(sks_spikes_no_quadform_note));
    }
    return j;
}

static json_t *sks__summary_sinks(const sks__run *R) {
    const sks_sinks_result *s = R->r->sr;
    json_t *j = json_object(), *auc = json_object(), *top = json_array();
    const int H = s->n_heads;
    json_object_set_new(j, "eps", sks_json_num(R->r->sio.eps));
    json_object_set_new(j, "sink_ratio_percent", sks_json_num(s->sink_ratio));
    json_object_set_new(j, "n_sink_heads", json_integer(s->n_sink_heads));
    json_object_set_new(j, "n_heads_total", json_integer((json_int_t)s->n_layers * H));
    json_object_set_new(j, "first_as_sink", json_boolean(R->r->sio.first_as_sink));
    json_object_set_new(j, "main_predictor", json_string(sks_sinks_pred_name(R->r->sio.main_pred)));
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
    const sks_vocab_result *v = R->r->vr;
    json_t *j = json_object(), *ex = json_array();
    json_object_set_new(j, "spike_fraction", sks_json_num(v->spike_fraction));
    json_object_set_new(j, "n_tokens", json_integer(v->n_tokens));
    json_object_set_new(j, "n_spike", json_integer(v->n_spike));
    json_object_set_new(j, "sampled", json_boolean(R->r->vo.sample > 0));
    json_object_set_new(j, "n_exceptions", json_integer(v->n_exceptions));
    json_object_set_new(j, "threshold_ratio", sks_json_num(R->r->vo.ratio));
    json_object_set_new(j, "threshold_abs", sks_json_num(R->r->vo.abs_thresh));
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

/* summary.json into OUT.partial; its text is kept in the result (the last one written). */
static int sks__write_summary(sks__run *R) {
    json_t *root = json_object(), *set = json_object(), *tim = json_object(), *files = json_array();
    json_object_set_new(root, "schema", json_string("sinkscope.summary/1"));
    json_object_set_new(root, "model", sks__summary_model(R->m));
    json_object_set_new(set, "outlier", sks_json_num(R->o->rule.outlier));
    json_object_set_new(set, "abs", sks_json_num(R->o->rule.abs_thresh));
    json_object_set_new(set, "ratio", sks_json_num(R->o->rule.ratio));
    json_object_set_new(set, "min_blocks", json_integer(R->o->rule.min_blocks));
    json_object_set_new(set, "eps", sks_json_num(R->o->eps));
    json_object_set_new(set, "sample", json_integer(R->o->sample));
    json_object_set_new(set, "seed", json_integer((json_int_t)R->o->seed));
    json_object_set_new(set, "prompts", json_string(R->pr.source));
    json_object_set_new(set, "prompt_lengths", sks_json_ints(R->pr.lens, R->pr.n));
    json_object_set_new(set, "tokenizer", R->tok ? json_string(sks_tokenizer_kind(R->tok)) : json_null());
    json_object_set_new(root, "settings", set);
    if (R->r->tr) json_object_set_new(root, "trace", sks__summary_trace(R));
    if (R->r->spike_selection) json_object_set_new(root, "spikes", sks__summary_spikes(R));
    if (R->r->vr) json_object_set_new(root, "vocab", sks__summary_vocab(R));
    if (R->r->sr) json_object_set_new(root, "sinks", sks__summary_sinks(R));
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
    for (int i = 0; i < SKS__N_OUTPUTS; i++) {
        char *p = sks__join(R->outdir, sks__outputs[i]);
        struct stat st;
        if (p && (!strcmp(sks__outputs[i], "summary.json") || !stat(p, &st)))
            json_array_append_new(files, json_string(sks__outputs[i]));
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
    free(R->r->summary_json);
    R->r->summary_json = rc ? NULL : buf;
    if (rc) free(buf);
    free(path);
    return rc;
}


/* ---- the report and the run ------------------------------------------------------------- */

/* The caller's report hook on OUT.partial, timed; the figures it drew are counted. */
static int sks__report(sks__run *R) {
    double t0 = sks_now();
    int rc = R->o->report(R->o->ud, R->outdir, R->plots, sizeof R->plots);
    R->t_plots = sks_now() - t0;
    if (rc || R->plots[0]) return rc;
    for (int i = SKS__FIG0; i < SKS__FIG0 + SKS__N_FIGS; i++) R->r->n_figures += sks__file_exists_in(R->outdir, sks__outputs[i]);
    snprintf(R->plots, sizeof R->plots, "ok: %d of %d figures, report.html", R->r->n_figures, SKS__N_FIGS);
    return 0;
}

/* The tokenizer encodes the prompts and names the tokens in spikes/vocab output; without
 * one, token ids or pseudo-random ids still work. */
static int sks__open_tokenizer(sks__run *R) {
    const sks_analyze_opts *o = R->o;
    int rc = sks_tokenizer_open_for_model(R->m, o->tokenizer, &R->tok);
    if (!rc) return 0;
    R->tok = NULL;
    if (o->tokenizer || ((o->prompt || o->prompts_file) && !o->tokens)) return rc;
    if (!o->tokens) {
        char note[512];
        snprintf(note, sizeof note, "no tokenizer (%s): using pseudo-random token ids", sks_last_error());
        sks__event(R, SKS_ANALYZE_NOTE, 0, NULL, note, 0);
    }
    sks_clear_error();
    return 0;
}

/* Every stage, summary.json and the report, in OUT.partial. */
static int sks__stages(sks__run *R) {
    const sks_analyze_opts *o = R->o;
    const sks_prompt_source src = {o->tokens, o->prompt, o->prompts_file, NULL};
    int rc;
    if ((rc = sks__open_tokenizer(R)) || (rc = sks_prompt_set_make(R->m, R->tok, &src, o->seed, &R->pr))) return rc;
    if ((rc = sks__stage_trace(R)) || (rc = sks__stage_spikes(R)) || (rc = sks__stage_vocab(R)) ||
        (rc = sks__stage_sinks(R)))
        return rc;
    if (R->part != 0) return 0; /* the cost stage, summary and report: part 0 */
    if (o->text && (rc = sks__stage_cost(R))) return rc;
    if (!o->report) {
        snprintf(R->plots, sizeof R->plots, "skipped: --no-plots");
        return sks__write_summary(R);
    }
    if ((rc = sks__write_summary(R))) return rc; /* the report reads it */
    int prc = sks__report(R);
    rc = sks__write_summary(R);
    return prc && !rc ? prc : rc; /* a failed report's message is still the last error */
}

int sks_analyze_run(const char *model_path, const char *outdir, const sks_analyze_opts *o, sks_analyze_result **out) {
    *out = NULL;
    if (!model_path || !outdir || !o) return sks_fail(SKS_EARG, "analyze: model and output folder are required");
    int rc = sks_analyze_opts_check(o);
    if (rc) return rc;
    sks__run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    R.part = o->split ? o->split->part : 0;
    R.n_stages = o->text ? 5 : 4;
    sks_model *m = NULL;
    if ((rc = sks_model_open(model_path, &m))) return rc;
    R.m = m;
    size_t nd = strlen(outdir), cap = nd + 16;
    char *partial = malloc(cap);
    if (!partial || !(R.r = calloc(1, sizeof *R.r))) {
        free(partial);
        sks_model_close(m);
        return sks_fail(SKS_ENOMEM, "analyze: out of memory");
    }
    *out = R.r;
    while (nd > 1 && outdir[nd - 1] == '/') nd--; /* "out/" -> "out.partial" */
    snprintf(partial, cap, "%.*s.partial", (int)nd, outdir);
    R.outdir = partial;
    if (R.part == 0) sks__rm_files_dir(partial); /* left by a run that was killed */
    if (R.part == 0 && (rc = sks__mkdir_p(partial))) goto out;
    const sks_arch *a = sks_model_arch(m);
    char head[4200];
    snprintf(head, sizeof head, "%s: %s, %d layers, d %d, %d heads (%d kv), vocab %d -> %s", model_path, a->family,
             a->n_layers, a->d_model, a->n_heads, a->n_kv_heads, a->vocab_size, outdir);
    sks__event(&R, SKS_ANALYZE_OPEN, 0, NULL, head, 0);
    rc = sks__stages(&R);
    /* summary.json written: the run is complete (a failed report is reported, but the
     * results are published) */
    if (R.part == 0 && sks__file_exists_in(partial, "summary.json")) {
        int prc = sks__publish(partial, outdir);
        if (prc) rc = prc;
    }
    R.r->seconds = R.t_trace + R.t_spikes + R.t_vocab + R.t_sinks + R.t_cost + R.t_plots;
out:
    if (R.part == 0 && rc) sks__rm_files_dir(partial);
    sks_tokenizer_free(R.tok);
    sks_prompt_set_free(&R.pr);
    free(R.cost_json);
    sks_model_close(m);
    free(partial);
    return rc;
}

void sks_analyze_result_free(sks_analyze_result *r) {
    if (!r) return;
    sks_trace_result_free(r->tr);
    sks_spikes_run_result_free(&r->spk);
    sks_vocab_result_free(r->vr);
    sks_sinks_result_free(r->sr);
    free(r->summary_json);
    free(r);
}
