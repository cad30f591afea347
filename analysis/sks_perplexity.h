/* sks_perplexity.h - perplexity of a token sequence (SPEC section 8), the base of the
 * quantization-risk and KV-eviction measurements.
 *
 * Windows: of `window` tokens (default the model's context), starting at 0, stride,
 * 2 stride, ... (stride default = window) until a window reaches the end of the text.
 * Window [b, e) scores the targets t in [max(b + 1, e_prev), e) (e_prev: the end of the
 * previous window, 0 for the first), each predicted from the logits of position t - 1
 * inside the window, so every target t >= 1 is scored once and overlapping windows
 * (stride < window) give later targets more history. This is the rule of the Hugging
 * Face perplexity guide; with stride = window the first token of each window has no
 * prediction.
 *
 *   NLL_t = log sum_v exp(z_v) - z_{id[t]}      z = f32 logits of position t - 1
 *   perplexity = exp(sum_t NLL_t / n_scored)    (log-sum-exp and the sums in f64)
 *
 * The forward pass may carry hooks (fake quantization, a KV limit): the same windows
 * then measure what the hooks cost.
 */
#ifndef SKS_PERPLEXITY_H
#define SKS_PERPLEXITY_H

#include "sks_forward.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int window; /* tokens per window; 0: the model's context (max_seq, else 512) */
    int stride; /* 0: = window */
} sks_ppl_opts;

void sks_ppl_opts_default(sks_ppl_opts *o);

/* The context used when the model does not say (max_seq == 0). */
#define SKS_PPL_DEFAULT_CONTEXT 512

typedef struct {
    int begin, end; /* the window's tokens [begin, end) */
    int first;      /* first scored target; targets [first, end) */
    double nll_sum; /* sum of NLL_t over them (nats) */
} sks_ppl_window;

typedef struct {
    int n_tokens, window, stride;
    int n_windows;
    sks_ppl_window *windows; /* (n_windows) */
    int64_t n_scored;
    double nll_sum, mean_nll, ppl;
} sks_ppl_result;

/* The windows for n_tokens tokens (n_tokens >= 2), nll_sum zero: malloc'd array. */
int sks_ppl_plan(int n_tokens, int window, int stride, sks_ppl_window **out, int *n_windows);

/* Resolve window/stride for a model (0 = defaults) and check them. */
int sks_ppl_resolve(const sks_model *m, const sks_ppl_opts *o, int *window, int *stride);

/* A forward pass and a logits buffer for windows of up to max_T tokens, reused by
 * every window and every variant (quantization schemes, KV limits). */
typedef struct sks_ppl_ctx sks_ppl_ctx;
int sks_ppl_ctx_new(const sks_model *m, int max_T, sks_ppl_ctx **out);
void sks_ppl_ctx_free(sks_ppl_ctx *c);

/* One window (the per-window step): *nll = sum over its targets. hooks may be NULL. */
int sks_ppl_window_nll(sks_ppl_ctx *c, const int32_t *ids, sks_ppl_window *w, const sks_fwd_hooks *hooks);

/* Every window of ids (n tokens) with the given hooks; progress under `stage`
 * (NULL: "perplexity"). */
int sks_ppl_run(sks_ppl_ctx *c, const int32_t *ids, int n, int window, int stride, const sks_fwd_hooks *hooks,
                const char *stage, sks_ppl_result **out);
void sks_ppl_result_free(sks_ppl_result *r);

/* NLL of target id given f32 logits z (V): log-sum-exp in f64 minus z[id]. */
double sks_ppl_nll(const float *z, int64_t V, int32_t id);

/* msgpack, schema "sinkscope.perplexity/1" (docs/schema-cost.md). */
int sks_ppl_write(const sks_ppl_result *r, const sks_model *m, const char *text_path, const char *path);

#ifdef __cplusplus
}
#endif
#endif
