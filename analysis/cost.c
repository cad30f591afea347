/* cost.c - the cost stage of analyze (contract in sks_cost.h). */
#include "sks_cost.h"
#include "sks_out.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sks_cost_opts_default(sks_cost_opts *o) {
    sks_qrisk_opts_default(&o->quant);
    sks_kveval_opts_default(&o->kv);
    o->kv_map_path = NULL;
}

/* headline numbers: per scheme the perplexity with none / outliers kept; the largest
 * dynamic range and per-tensor INT8 error of the residual stream over the layers */
static json_t *sks__quant_json(const sks_qrisk_result *q) {
    json_t *o = json_object(), *pp = sks_qrisk_ppl_json(q);
    json_object_set_new(o, "spike_channels", sks_json_ints(q->spike_channels, q->n_spike_channels));
    double range = 0, err = 0, err_kept = 0;
    int at = -1;
    for (int l = 0; l < q->n_layers; l++) {
        size_t ls = (size_t)l * SKS_QSITE_N + SKS_QSITE_RESID;
        if (q->dyn_range[ls] > range) {
            range = q->dyn_range[ls];
            at = l;
        }
        size_t e = (ls * SKS_Q_N + SKS_Q_INT8_TENSOR) * SKS_QKEEP_N;
        if (q->rel_err[e + SKS_QKEEP_NONE] > err) err = q->rel_err[e + SKS_QKEEP_NONE];
        if (q->rel_err[e + SKS_QKEEP_OUTLIERS] > err_kept) err_kept = q->rel_err[e + SKS_QKEEP_OUTLIERS];
    }
    json_object_set_new(o, "residual_max_dynamic_range", sks_json_num(range));
    json_object_set_new(o, "residual_max_dynamic_range_layer", json_integer(at));
    json_object_set_new(o, "residual_int8_tensor_max_rel_err", sks_json_num(err));
    json_object_set_new(o, "residual_int8_tensor_max_rel_err_outliers_kept", sks_json_num(err_kept));
    if (pp) json_object_set_new(o, "perplexity", pp);
    return o;
}

static json_t *sks__kv_json(const sks_kveval_result *k) {
    json_t *o = json_object(), *vs = json_array();
    json_object_set_new(o, "kv_window", json_integer(k->kv_window));
    json_object_set_new(o, "n_sink", json_integer(k->n_sink));
    json_object_set_new(o, "window", json_integer(k->T));
    json_object_set_new(o, "n_map_kv_heads", k->map_kv ? json_integer(k->n_map_kv_heads) : json_null());
    for (int v = 0; v < SKS_KV_N; v++) {
        if (!k->v[v].present) continue;
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(sks_kv_variant_name(v)));
        json_object_set_new(e, "perplexity", sks_json_num(k->v[v].ppl->ppl));
        json_object_set_new(e, "kv_fraction", sks_json_num(k->v[v].kv_fraction));
        json_array_append_new(vs, e);
    }
    json_object_set_new(o, "variants", vs);
    return o;
}

int sks_cost_run(const sks_model *m, const int32_t *ids, int n, const sks_cost_opts *o, const char *text_path,
                 const char *outdir, char **summary) {
    if (summary) *summary = NULL;
    sks_qrisk_result *q = NULL;
    sks_kveval_result *k = NULL;
    unsigned char *map = NULL;
    char *qp = sks__path_join(outdir, "quant_risk.msgpack"), *kp = sks__path_join(outdir, "kv_eval.msgpack");
    sks_kveval_opts kv = o->kv;
    kv.ppl = o->quant.ppl;
    int window, stride, rc = qp && kp ? 0 : sks_fail(SKS_ENOMEM, "cost: out of memory");
    if (!rc) rc = sks_ppl_resolve(m, &kv.ppl, &window, &stride);
    if (!rc && kv.kv_window <= 0) kv.kv_window = (window < n ? window : n) / 4 > 0 ? (window < n ? window : n) / 4 : 1;
    if (!rc && o->kv_map_path) rc = sks_kvmap_read(o->kv_map_path, m, &map);
    if (!rc) rc = sks_qrisk_run(m, ids, n, &o->quant, &q);
    if (!rc) rc = sks_qrisk_write(q, m, &o->quant, text_path, qp);
    if (!rc) rc = sks_kveval_run(m, ids, n, &kv, map, &k);
    if (!rc) rc = sks_kveval_write(k, m, text_path, kp);
    if (!rc && summary) {
        json_t *root = json_object(), *p = json_object();
        const sks_ppl_result *b = k->v[SKS_KV_FULL].ppl;
        json_object_set_new(p, "perplexity", sks_json_num(b->ppl));
        json_object_set_new(p, "mean_nll", sks_json_num(b->mean_nll));
        json_object_set_new(p, "n_scored", json_integer(b->n_scored));
        json_object_set_new(p, "window", json_integer(b->window));
        json_object_set_new(p, "stride", json_integer(b->stride));
        json_object_set_new(p, "text", text_path ? json_string(text_path) : json_null());
        json_object_set_new(root, "perplexity", p);
        json_object_set_new(root, "quant_risk", sks__quant_json(q));
        json_object_set_new(root, "kv_eval", sks__kv_json(k));
        *summary = json_dumps(root, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        json_decref(root);
        if (!*summary) rc = sks_fail(SKS_ENOMEM, "cost: JSON encoding failed");
    }
    sks_qrisk_result_free(q);
    sks_kveval_result_free(k);
    free(map);
    free(qp);
    free(kp);
    return rc;
}
