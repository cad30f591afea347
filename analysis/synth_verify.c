/* synth_verify.c - planted versus found: an independent trace of a synthesized model
 * compared with what sks_synth planted (sks_synth_verify, sks_synth.h). */
#include "sks_synth.h"
#include "sks_out.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The planted channel c: found, and its lifecycle at token 0 as planted. */
static void sks__verify_channel(const sks_trace_result *r, int c, sks_synth_verdict *v) {
    int found = 0;
    for (int k = 0; k < r->n_spike_channels; k++) found |= r->spike_channels[k] == c;
    v->channels_found &= found;
    const sks_lifecycle *lc = NULL;
    for (int k = 0; k < r->n_lifecycles; k++)
        if (r->lifecycles[k].token == 0 && r->lifecycles[k].channel == c) lc = &r->lifecycles[k];
    if (!lc) {
        v->lifecycle_ok = 0;
        return;
    }
    int has_down = v->down_block < 0;
    for (int k = 0; k < lc->n_down; k++) has_down |= lc->down_blocks[k] == v->down_block;
    v->lifecycle_ok &= lc->main_up == v->up_block && has_down;
    for (int b = v->up_block; b < (v->down_block > 0 ? v->down_block : r->n_blocks); b++) {
        double q = fabs(lc->values[b]) / r->blocks[b].median_abs;
        if (q < v->plateau_min_ratio) v->plateau_min_ratio = q;
    }
}

int sks_synth_verify(const sks_synth *s, const char *model_dir, sks_synth_verdict *v) {
    memset(v, 0, sizeof *v);
    sks_model *m = NULL;
    int rc = sks_model_open(model_dir, &m);
    if (rc) return rc;
    const sks_synth_planted *p = sks_synth_get_planted(s);
    const sks_arch *a = sks_model_arch(m);
    sks_trace_prompt_set ps;
    (void)sks_trace_default_prompt_set(m, 4, 64, 100, &ps); /* within the set's size */
    sks_trace_opts_default(&v->trace);
    sks_trace_result *r = NULL;
    if ((rc = sks_trace_run(m, ps.n, ps.ptr, ps.lens, &v->trace, &r))) {
        sks_model_close(m);
        return rc;
    }
    v->up_block = 2 * p->step_up_layer + 2;
    v->down_block = p->step_down_layer < a->n_layers ? 2 * p->step_down_layer + 2 : -1;
    v->n_found = r->n_spike_channels;
    v->channels_found = r->n_spike_channels == p->n_spike;
    v->token0_only = r->n_spike_tokens == 1 && r->spike_tokens[0] == 0;
    v->lifecycle_ok = 1;
    v->plateau_min_ratio = INFINITY;
    for (int c = 0; c < p->n_spike; c++) sks__verify_channel(r, p->channels[c], v);
    v->alpha0_min_planted = INFINITY;
    for (int l = 0; l < a->n_layers; l++)
        for (int h = 0; h < a->n_heads; h++) {
            double a0 = r->alpha[((size_t)l * a->n_heads + h) * r->n_alpha];
            int planted = sks_synth_is_sink(s, l, h), measured = a0 > v->trace.eps;
            v->tp += planted && measured;
            v->fp += !planted && measured;
            v->fn += planted && !measured;
            if (planted && a0 < v->alpha0_min_planted) v->alpha0_min_planted = a0;
            if (!planted && a0 > v->alpha0_max_other) v->alpha0_max_other = a0;
        }
    v->pass = v->channels_found && v->token0_only && v->lifecycle_ok && v->fp == 0 && v->fn == 0;
    if (p->n_experts > 0) {
        v->moe = 1;
        rc = sks_spikes_moe_check_plant(m, ps.ptr[0], ps.lens[0], p->step_up_layer, p->moe_up_expert, p->channels,
                                        p->lambda_star, p->s_star, p->n_spike, &v->moe_check);
        v->pass &= v->moe_check.pass;
    }
    sks_trace_result_free(r);
    sks_model_close(m);
    return rc;
}

int sks_synth_verdict_write(const sks_synth_verdict *v, const char *path) {
    const sks_trace_opts *o = &v->trace;
    json_t *j = json_pack("{s:s, s:b, s:b, s:b, s:b, s:o, s:i, s:i, s:i, s:o, s:o, s:{s:o, s:o, s:i, s:o}}", "schema",
                          "sinkscope.demo-verify/1", "pass", v->pass, "spike_channels_found", v->channels_found,
                          "spike_token_position0_only", v->token0_only, "lifecycle_as_planted", v->lifecycle_ok,
                          "plateau_min_ratio", sks_json_num(v->plateau_min_ratio), "sink_true_positive", v->tp,
                          "sink_false_positive", v->fp, "sink_false_negative", v->fn, "alpha0_min_planted",
                          sks_json_num(v->alpha0_min_planted), "alpha0_max_other", sks_json_num(v->alpha0_max_other),
                          "thresholds", "abs", sks_json_num(o->abs_thresh), "ratio", sks_json_num(o->ratio),
                          "min_blocks", o->min_blocks, "eps", sks_json_num(o->eps));
    if (!j) return sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    const sks_moe_plant_check *mc = &v->moe_check;
    if (v->moe)
        json_object_set_new(j, "moe", json_pack("{s:b,s:o,s:o,s:o,s:o,s:b}", "routed_to_planted_expert", mc->routed,
                                                "weight", sks_json_num(mc->weight), "lambda_rel_err",
                                                sks_json_num(mc->lambda_rel_err), "cos_s_star", sks_json_num(mc->cos_s),
                                                "active_rel_err", sks_json_num(mc->active_rel_err), "pass", mc->pass));
    sks_json_add_nonfinite(j);
    char *text = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(j);
    int rc = text ? sks_write_file_atomic(path, text, strlen(text)) : sks_fail(SKS_ENOMEM, "%s: out of memory", path);
    free(text);
    return rc;
}
