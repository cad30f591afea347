/* sks_cost.h - the cost stage of `analyze --text` (SPEC section 8): perplexity,
 * quant-risk and kv-eval of one text in one call, written into a result folder as
 * quant_risk.msgpack and kv_eval.msgpack (docs/schema-cost.md), with the headline numbers
 * as a JSON object for summary.json. */
#ifndef SKS_COST_H
#define SKS_COST_H

#include "sks_kveval.h"
#include "sks_quantrisk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    sks_qrisk_opts quant;        /* its ppl windows are used for kv-eval too */
    sks_kveval_opts kv;          /* kv_window 0: a quarter of the perplexity window */
    const char *kv_map_path;     /* sinkscope.kvmap/1 for the kvmap variant, or NULL */
} sks_cost_opts;

void sks_cost_opts_default(sks_cost_opts *o);

/* Run both on ids (n tokens of text_path) and write outdir/quant_risk.msgpack and
 * outdir/kv_eval.msgpack. *summary (may be NULL) receives a malloc'd JSON object text:
 * {"perplexity": {perplexity, mean_nll, n_scored, window, stride}, "quant_risk": {...},
 *  "kv_eval": {...}} (docs/schema.md, summary.json). */
int sks_cost_run(const sks_model *m, const int32_t *ids, int n, const sks_cost_opts *o, const char *text_path,
                 const char *outdir, char **summary);

#ifdef __cplusplus
}
#endif
#endif
