/* sks_trace.h - residual-stream lifecycle and measured attention sinks (SPEC section 2).
 *
 * Per block b (0 = embeddings, 2l+1 after attention of layer l, 2l+2 after its FFN):
 * max |h|, median |h| over all (t, c), the top-k (t, c, value) entries, the spike score
 * max/median. Spike channel: |h_b[t,c]| above the spike rule (sks_rule.h: outlier x the
 * median channel peak, ratio x median_b, abs) for some t in at least min_blocks
 * consecutive blocks; spike token: such a t. Lifecycle per (spike
 * token, spike channel): step-up blocks = blocks whose increase |h_b| - |h_{b-1}| is at
 * least step_frac of the largest increase (main = argmax), step-down blocks likewise
 * for decreases after the main step-up. Attention: alpha_j = sum_{i>=j} A[i,j] / (T-j)
 * (Gu et al.), measured sink head when alpha_0 > eps, sink ratio = percentage of
 * (layer, head) pairs that are sink heads, averaged over prompts.
 */
#ifndef SKS_TRACE_H
#define SKS_TRACE_H

#include "../loaders/sks_model.h"
#include "sks_rule.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double abs_thresh;   /* --abs, default 0 (sks_spike_rule_default) */
    double ratio;        /* --ratio, default 0 */
    int min_blocks;      /* --min-blocks, default 3 */
    double outlier;      /* --outlier, default 20 */
    int topk;            /* top entries kept per block, default 8 */
    double step_frac;    /* default 0.25 */
    double eps;          /* --eps, sink threshold on alpha_0, default 0.3 */
    int n_alpha;         /* alpha_j reported for j < n_alpha, default 4 */
    int keep_residual;   /* (addition) keep h_b of prompt 0 for every block, default 0 */
    uint64_t keep_bytes; /* (addition) the lifecycles are read from prompt 0's residual stream
                          * kept in memory when it needs at most this many bytes (else a
                          * second forward pass recomputes them); default 128 MiB */
} sks_trace_opts;

void sks_trace_opts_default(sks_trace_opts *o);

enum { SKS_BLOCK_EMBED = 0, SKS_BLOCK_ATTN = 1, SKS_BLOCK_FFN = 2 };
static inline int sks_block_kind(int b) { return b == 0 ? SKS_BLOCK_EMBED : (b % 2 ? SKS_BLOCK_ATTN : SKS_BLOCK_FFN); }
static inline int sks_block_layer(int b) { return b == 0 ? -1 : (b - 1) / 2; }
const char *sks_block_kind_name(int kind); /* "embed", "attn", "ffn" */

typedef struct {
    int token, channel;
    float value;         /* signed h_b[token, channel] */
} sks_trace_entry;

typedef struct {
    int block, kind, layer;
    double max_abs, median_abs, spike_score;
    int top_token, top_channel;
    double peak_median;  /* median over channels of max_t |h_b[t, c]| */
    double threshold;    /* the spike rule's threshold in this block */
    int n_top;
    sks_trace_entry *top; /* (n_top), by descending |value| */
} sks_trace_block;

typedef struct {
    int prompt, token, channel;
    int main_up;          /* block index of the largest increase */
    int n_up, n_down;
    int *up_blocks;       /* (n_up) ascending */
    int *down_blocks;     /* (n_down) ascending */
    float *values;        /* (n_blocks) signed h_b[token, channel] */
    double peak_abs;
    /* plateau: blocks [plateau_first, plateau_last] from the last step-up to the block
     * before the first step-down (the last block when none) */
    int plateau_first, plateau_last;
} sks_lifecycle;

typedef struct {
    int n_blocks;                 /* 2L + 1 */
    sks_trace_block *blocks;      /* (n_blocks), on prompt 0 */
    int n_spike_channels;
    int *spike_channels;          /* ascending */
    int n_spike_tokens;
    int *spike_tokens;            /* positions in prompt 0, ascending */
    int n_lifecycles;
    sks_lifecycle *lifecycles;    /* per (prompt 0 spike token, spike channel) */
    int n_layers, n_heads, n_alpha, n_prompts;
    double *alpha;                /* (n_layers, n_heads, n_alpha), averaged over prompts */
    double sink_ratio;            /* percent */
    float *channel_max;           /* (n_blocks, d) max_t |h_b[t, c]| on prompt 0 */
    int d_model;
    /* additions (after the first contract) */
    int n_tokens;                 /* length of prompt 0 */
    int32_t *tokens;              /* (n_tokens) prompt 0 ids */
    int *prompt_lens;             /* (n_prompts) */
    double *sink_ratio_per_prompt;/* (n_prompts) percent */
    int lifecycles_truncated;     /* 1 when more qualified pairs existed than were kept */
    float *residual;              /* (n_blocks, n_tokens, d) h_b of prompt 0, only with keep_residual */
    /* the channel closest to the rule (sks_spike_rule_closest), also when some pass */
    int closest_channel, closest_block;
    double closest_frac;          /* >= 1: passes */
    /* mixture of experts (moe_k > 0): the router's choice on prompt 0 at every layer */
    int moe_k;                    /* experts per token; 0: a dense model */
    int moe_n_experts;            /* E */
    int *moe_experts;             /* (n_layers, n_tokens, moe_k); -1 on dense layers */
    float *moe_weights;           /* (n_layers, n_tokens, moe_k) */
} sks_trace_result;

/* The experts token t of prompt 0 was routed to at layer l (moe_k entries, NULL when the
 * model or the layer is dense) and their weights. */
const int *sks_trace_route(const sks_trace_result *r, int layer, int token, const float **weights);

/* The spike rule of trace options, and back. */
void sks_trace_opts_rule(const sks_trace_opts *o, sks_spike_rule *r);
void sks_trace_opts_set_rule(sks_trace_opts *o, const sks_spike_rule *r);

/* Run the forward pass over n_prompts token sequences and collect the statistics. */
int sks_trace_run(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                  const sks_trace_opts *o, sks_trace_result **out);
void sks_trace_result_free(sks_trace_result *r);

/* Read the lifecycles (token, channel, peak_abs, step-up blocks) and spike channels of a
 * sinkscope.trace/1 file (analysis/trace_read.c), the rest of *out left empty; free
 * with sks_trace_result_free. An untrusted file: every field is checked, a bad one is
 * SKS_EFORMAT naming the file and the field. */
int sks_trace_read(const char *path, sks_trace_result **out);
/* The layer whose FFN raises the block's largest |h| the most: the step-up candidate
 * when the spike rule found no channel. */
int sks_trace_steepest_ffn_layer(const sks_trace_result *tr);

/* Deterministic default input when the model has no tokenizer: BOS (or 1) then
 * T-1 pseudo-random ids from a fixed generator, all < vocab_size. */
void sks_trace_default_tokens(const sks_model *m, int T, uint64_t seed, int32_t *out);
/* A few such prompts with the per-prompt pointers and lengths that the runs take (self
 * checks, tests, benchmarks). */
enum { SKS_TRACE_SET_N = 8, SKS_TRACE_SET_T = 256 };
typedef struct {
    int n;
    int32_t ids[SKS_TRACE_SET_N][SKS_TRACE_SET_T];
    const int32_t *ptr[SKS_TRACE_SET_N];
    int lens[SKS_TRACE_SET_N];
} sks_trace_prompt_set;
/* n prompts of T tokens (seeds seed0, seed0 + 1, ...); SKS_EARG beyond the set's size. */
int sks_trace_default_prompt_set(const sks_model *m, int n, int T, uint64_t seed0, sks_trace_prompt_set *out);

/* Write the result as msgpack (schema "sinkscope.trace/1", see docs/schema-trace.md). */
int sks_trace_write(const sks_trace_result *r, const sks_model *m, const sks_trace_opts *o, const char *path);

#ifdef __cplusplus
}
#endif
#endif
