/* sks_compare.h - the paper's ablation table over several models (SPEC section 8).
 *
 * One row per model, from the folder `sinkscope analyze MODEL -o DIR` wrote (its
 * summary.json and sinks.msgpack), so that the heavy analyses run once per model:
 *   peak_abs, peak_ratio    the largest |h| over all blocks and its max / median (trace)
 *   spike_channels          the trace rule's spike channels
 *   lambda_star, dominance  of S_c at the main step-up of the first lifecycle (layer of the
 *                           block of the largest increase, its channel); when that pair
 *                           was not analysed, the first analysed spike channel, else NaN
 *   sink_ratio              percent of (layer, head) pairs with alpha_0 > eps (sinks)
 *   sink_r99                median over the (layer, KV head) pairs that have spike-token
 *                           rows of the effective rank r99 of their pre-RoPE sink keys
 *   vocab_fraction          fraction of the swept vocabulary that spikes alone at position 0
 *   perplexity              on a text (sks_compare_perplexity), NaN when not measured
 */
#ifndef SKS_COMPARE_H
#define SKS_COMPARE_H

#include "../loaders/sks_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char *dir;                  /* the analyze folder */
    char *model_path, *family;  /* from summary.json */
    int n_layers, d_model;
    double peak_abs, peak_ratio;
    int peak_block;
    int n_spike_channels;
    int *spike_channels;
    int step_layer, step_channel; /* where lambda_star was taken, -1 if none */
    double lambda_star, dominance;
    double sink_ratio;
    double sink_r99;
    double vocab_fraction;
    double perplexity;
    int n_scored;               /* tokens behind the perplexity, 0 if none */
} sks_compare_row;

/* Fill row from an analyze folder (fields absent from it are NaN / -1). */
int sks_compare_load(const char *dir, sks_compare_row *row);
void sks_compare_row_clear(sks_compare_row *row);

/* The perplexity of ids (n) on the row's model (windows of its context). */
int sks_compare_perplexity(sks_compare_row *row, const int32_t *ids, int n);

/* msgpack, schema "sinkscope.compare/1" (docs/schema-cost.md). */
int sks_compare_write(const sks_compare_row *rows, int n, const char *text_path, const char *path);

#ifdef __cplusplus
}
#endif
#endif
