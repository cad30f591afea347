/* sks_quantrisk.h - what the spikes cost a low-bit activation quantizer (SPEC section 8;
 * the paper's first motivation; LLM.int8, Dettmers et al. 2022).
 *
 * Schemes (symmetric, dynamic: the scale comes from the tensor being quantized):
 *   int8-tensor / int4-tensor  one scale s = max|x| / qmax over the whole (T, n) tensor
 *   int8-token  / int4-token   one scale per token (row)          qmax = 127 / 7
 *                              Q(x) = clamp(round_half_even(x / s), -qmax, qmax) * s
 *   fp8-e4m3                   s = max|x| / 448 over the tensor, Q(x) = e4m3(x / s) * s
 *                              with e4m3 the nearest E4M3 value (round half to even,
 *                              subnormals down to 2^-9, saturating at +-448)
 * Kept channels (LLM.int8 style): columns listed in keep pass through in f32, and the
 * scales come from the other columns only.
 *
 * Per layer l and site (the residual stream entering layer l = block 2l; the attention
 * input RMSNorm(h) gamma_attn; the W_O input; the FFN input; the W_down input), on the
 * first perplexity window of the text:
 *   dynamic range = max|x| / median|x| (over all T n entries)
 *   rel. error    = ||Q(x) - x||_F / ||x||_F          (f64 sums)
 * for each scheme and each keep mode: none; the spike channels (the trace rule on the
 * same window; d-wide sites only); outliers = the spike channels plus the top-k
 * channels of max_t |x[t, c]| of the tensor itself.
 * Mixture-of-experts layers: the W_down input is one tensor per expert (the tokens
 * routed to it), each quantized with its own scales; the statistics are kept per expert
 * and the layer's down_in row is the worst of them (sks_qrisk_result).
 * End to end: the perplexity with every linear input of every layer (W_Q/W_K/W_V, W_O,
 * W_gate/W_up, W_down; not the classifier) fake-quantized, per scheme, without kept
 * channels and with the outliers kept.
 */
#ifndef SKS_QUANTRISK_H
#define SKS_QUANTRISK_H

#include "sks_perplexity.h"
#include "sks_trace.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SKS_Q_INT8_TENSOR = 0,
    SKS_Q_INT8_TOKEN = 1,
    SKS_Q_INT4_TENSOR = 2,
    SKS_Q_INT4_TOKEN = 3,
    SKS_Q_FP8_E4M3 = 4,
    SKS_Q_N = 5
} sks_qscheme;
const char *sks_qscheme_name(int s); /* "int8-tensor", ... "fp8-e4m3" */

enum { SKS_QKEEP_NONE = 0, SKS_QKEEP_SPIKE = 1, SKS_QKEEP_OUTLIERS = 2, SKS_QKEEP_N = 3 };
const char *sks_qkeep_name(int k); /* "none", "spike", "outliers" */

/* Sites per layer. */
enum { SKS_QSITE_RESID = 0, SKS_QSITE_ATTN = 1, SKS_QSITE_WO = 2, SKS_QSITE_FFN = 3, SKS_QSITE_DOWN = 4, SKS_QSITE_N = 5 };
const char *sks_qsite_name(int s); /* "residual", "attn_in", "wo_in", "ffn_in", "down_in" */

/* Largest finite E4M3 (OCP FP8 spec, "E4M3": S.1111.110 = 1.75 * 2^8). */
#define SKS_E4M3_MAX 448.0f

/* The E4M3 value nearest to x (ties to even mantissa), saturated at +-448; NaN stays NaN. */
float sks_e4m3_round(float x);

/* Fake-quantize x (T, n) in place with scheme s; keep (n) marks columns left exact (NULL:
 * none). A tensor of zeros (or all kept) is left as it is. */
void sks_fakequant(int s, float *x, int64_t T, int64_t n, const unsigned char *keep);

typedef struct {
    int keep_top;             /* top outlier channels kept, default 8 */
    sks_trace_opts trace;     /* spike rule for the spike channels (trace defaults) */
    sks_ppl_opts ppl;         /* perplexity windows */
    int end_to_end;           /* default 1: the perplexity of every scheme */
} sks_qrisk_opts;

void sks_qrisk_opts_default(sks_qrisk_opts *o);

typedef struct {
    int n_layers, T;          /* T: tokens of the window the per-layer statistics use */
    int site_dim[SKS_QSITE_N];
    int keep_top;
    int n_spike_channels;
    int *spike_channels;      /* (n_spike_channels) */
    double *max_abs;          /* (L, SITE_N) */
    double *median_abs;       /* (L, SITE_N) */
    double *dyn_range;        /* (L, SITE_N) max / median */
    double *rel_err;          /* (L, SITE_N, Q_N, QKEEP_N) */
    int32_t *top_channels;    /* (L, SITE_N, keep_top) by descending max_t |x| */
    /* mixture of experts (n_experts > 0; else the arrays are NULL): the W_down input of
     * every expert of every MoE layer, over the tokens routed to it; row e < E is routed
     * expert e, row E the shared expert (Qwen2-MoE). The down_in row of an MoE layer
     * above is the layer's worst: the expert of largest dynamic range (its max, median,
     * range and top channels) and, per scheme and keep mode, the largest error of any
     * expert. Rows of experts no token reached (and of dense layers) are zeros. */
    int n_experts, expert_rows;   /* E, E + (1 with a shared expert) */
    int32_t *expert_tokens;       /* (L, expert_rows) tokens routed to the expert */
    double *expert_max_abs;       /* (L, expert_rows) */
    double *expert_median_abs;    /* (L, expert_rows) */
    double *expert_rel_err;       /* (L, expert_rows, Q_N, QKEEP_N) */
    int32_t *expert_top_channels; /* (L, expert_rows, keep_top) */
    int32_t *worst_expert;        /* (L) the worst expert's row, -1: dense layer or none routed */
    /* end to end (when end_to_end) */
    sks_ppl_result *ppl_base;                       /* no quantization */
    sks_ppl_result *ppl[SKS_Q_N][2];                /* [scheme][0: none, 1: outliers kept] */
} sks_qrisk_result;

int sks_qrisk_run(const sks_model *m, const int32_t *ids, int n, const sks_qrisk_opts *o, sks_qrisk_result **out);
void sks_qrisk_result_free(sks_qrisk_result *r);

/* msgpack, schema "sinkscope.quant-risk/1" (docs/schema-cost.md). */
int sks_qrisk_write(const sks_qrisk_result *r, const sks_model *m, const sks_qrisk_opts *o, const char *text_path,
                    const char *path);
/* The end-to-end perplexities as JSON, {"f32": p, "<scheme>": {"none": p, "outliers": p},
 * ...} (null for a non-finite one), for the CLI's --json and analyze's summary; NULL
 * when the run measured none. */
struct json_t *sks_qrisk_ppl_json(const sks_qrisk_result *r);
/* The (SKS_Q_N, SKS_QKEEP_N) block of relative errors of layer l at site `site`. */
const double *sks_qrisk_err(const sks_qrisk_result *r, int l, int site);
/* The whole result as JSON (schema "sinkscope.quant-risk-summary/1": spike channels,
 * per layer and site the range, max and errors, the MoE experts of down_in, the
 * perplexities), for quant-risk --json. */
struct json_t *sks_qrisk_json_summary(const sks_qrisk_result *r, const sks_model *m);

#ifdef __cplusplus
}
#endif
#endif
