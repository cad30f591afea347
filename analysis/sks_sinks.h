/* sks_sinks.h - the sparse, near-constant sink key and the query geometry (SPEC section 4).
 *
 * Per layer l and head h (head h reads KV head g(h) = h / (H / Hkv)), from one
 * instrumented forward pass per prompt:
 *
 *   spike tokens   per prompt, by the trace rule: t is a spike token when for some channel
 *                  c, |h_b[t,c]| >= ratio * median_b|h| and >= abs in at least min_blocks
 *                  consecutive blocks b (median over all (t, c) of that prompt's block).
 *   x~_t           attention input of layer l after RMSNorm and gamma_attn.
 *   near-constancy mean and min pairwise cosine of x~_t over spike tokens (all prompts
 *                  pooled) against the same over non-spike tokens.
 *   keys           k_t = W_K[g] x~_t (+ bias), pre-RoPE. Sink keys: t a spike token.
 *                  r99 = smallest r with sum_{i<=r} s_i^2 >= 0.99 sum s_i^2 and the
 *                  participation ratio (sum s^2)^2 / sum s^4, for sink and non-sink keys.
 *   alignment      a_h = largest principal cosine between B_Q (top-r99 right singular
 *                  vectors of the pre-RoPE queries of non-spike tokens) and B_S (the same
 *                  for the sink keys of KV head g(h)).
 *   energy         E[(q . k^_s)^2] / E[|q|^2], k^_s the unit mean sink key.
 *   signed_proj    E[q . k^_s] / sqrt(E[|q|^2]).
 *   margin         mean over non-spike queries t that see both kinds of key of
 *                  (mean_{u<=t, u spike} q_t.k_u - mean_{u<=t, u non-spike} q_t.k_u) / sqrt(dh),
 *                  with post-RoPE q, k (margin_rope) and pre-RoPE (margin_norope).
 *   weight_only    from weights and the spike-channel profile only: n^ = sqrt(d) w / |w|
 *                  with w_c the mean signed plateau value of spike channel c (0 elsewhere),
 *                  k^ = W_K[g] (gamma_attn * n^) (+ bias), M = W_Q[h] diag(gamma_attn)
 *                  (dh, d). Score = k^T M M^T k^ / (||M||_F^2 |k^|^2): the fraction of the
 *                  query energy along k^ for isotropic inputs (in [0, 1]).
 *                  weight_only_cos = |U_r^T k^| / |k^| with U_r the top-r99 left singular
 *                  vectors of M.
 *   alpha_0        Gu et al.: alpha_0 = sum_i A[i,0] / T per prompt, averaged over prompts;
 *                  sink head when alpha_0 > eps.
 *   classification for each predictor: ROC AUC against the sink labels (ties count 1/2,
 *                  NaN scores left out), precision and recall at the predictor's threshold.
 *
 * The per-head computations are exposed on plain arrays (sks_sinks_*) so that they can be
 * tested on constructed geometry without a model.
 */
#ifndef SKS_SINKS_H
#define SKS_SINKS_H

#include "../loaders/sks_model.h"
#include "sks_rule.h"
#include "sks_split.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Predictors, in the order of the result arrays. */
typedef enum {
    SKS_PRED_ALIGNMENT = 0, /* largest principal cosine B_Q vs B_S */
    SKS_PRED_ENERGY,        /* E[(q.k^_s)^2] / E[|q|^2] */
    SKS_PRED_SIGNED_PROJ,   /* E[q.k^_s] / sqrt(E[|q|^2]) */
    SKS_PRED_MARGIN_ROPE,   /* logit margin, post-RoPE */
    SKS_PRED_MARGIN_NOROPE, /* logit margin, pre-RoPE */
    SKS_PRED_WEIGHT_ONLY,   /* weight-only energy score */
    SKS_PRED_COUNT
} sks_sinks_pred;

const char *sks_sinks_pred_name(int p); /* "alignment", "energy", ... */
/* Parse a predictor name; returns its index or -1. */
int sks_sinks_pred_parse(const char *name);

typedef struct {
    double eps;          /* sink head when alpha_0 > eps (default 0.3) */
    double abs_thresh;   /* spike rule (sks_rule.h): |h| >= abs (default 0) */
    double ratio;        /* spike rule: |h| >= ratio * median (default 0) */
    int min_blocks;      /* spike rule: consecutive blocks (default 3) */
    double outlier;      /* spike rule: |h| >= outlier * median channel peak (default 20) */
    double rank_frac;    /* effective-rank energy fraction (default 0.99) */
    int first_as_sink;   /* 1: position 0 always counts as a spike token (models without
                            spikes); default 0 */
    int main_pred;       /* predictor that ranks the heads (default SKS_PRED_MARGIN_ROPE) */
    int max_nonspike_rows; /* cap on non-spike x~ rows kept per layer for the minimum
                              pairwise cosine (default 512; the mean uses all tokens) */
    /* Thresholds for precision/recall, per predictor. NaN = automatic: margins use
     * m* = ln(n_eff * eps / (1 - eps)) (the margin at which a softmax over one sink key and
     * n_eff equal non-sink keys gives alpha_0 = eps, n_eff the mean number of non-sink keys
     * a query sees); energy and weight_only 2/d_h (twice the isotropic share); alignment
     * 0.9; signed_proj 0.2. */
    double threshold[SKS_PRED_COUNT];
    /* Layer subset (n_layers), borrowed for the call: layers[l] != 0 records and analyses
     * layer l; NULL = every layer. The forward pass still runs every layer (the spike
     * tokens come from the whole residual stream), so a subset saves the per-layer
     * accumulation and geometry, not the forward. A result of a strict subset is partial:
     * merge the parts (sks_sinks_merge) and classify (sks_sinks_classify) before writing. */
    const unsigned char *layers;
} sks_sinks_opts;

void sks_sinks_opts_default(sks_sinks_opts *o);

typedef struct {
    int n_layers, n_heads, n_kv_heads, head_dim, d_model, n_prompts;
    int64_t n_tokens;             /* all prompts */
    /* spike structure */
    int n_spike_channels;
    int *spike_channels;          /* (n_spike_channels) ascending, union over prompts */
    double *spike_plateau;        /* (n_spike_channels) mean signed h over spike (token,
                                     block) hits: the profile w of the weight-only n^ */
    int *n_spike_tokens;          /* (n_prompts) spike tokens per prompt */
    int n_prompt0_spike_tokens;
    int *prompt0_spike_tokens;    /* positions in prompt 0 */
    int64_t n_sink_rows;          /* spike tokens over all prompts (rows of the sink keys) */
    /* per layer (L) */
    double *cos_spike_mean, *cos_spike_min;       /* pairwise cos of x~ over spike tokens */
    double *cos_nonspike_mean, *cos_nonspike_min; /* over non-spike tokens */
    /* per (L, Hkv) */
    int *sink_r99, *nonsink_r99;
    double *sink_pr, *nonsink_pr;
    double *sink_sv;              /* (L, Hkv, dh) singular values of the stacked sink keys,
                                     descending, zero-padded */
    double *nonsink_sv;           /* (L, Hkv, dh) of the non-sink keys */
    /* per (L, H) */
    double *alpha0;               /* mean over prompts */
    double *is_sink;              /* 1.0 when alpha0 > eps, else 0.0 */
    double *query_r99;            /* r99 of the non-spike pre-RoPE queries */
    double *pred[SKS_PRED_COUNT]; /* each (L, H); NaN where undefined (no sink keys) */
    double *weight_only_cos;      /* (L, H) */
    int *rank;                    /* (L*H) head indices l*H+h by descending main predictor
                                     (NaN last) */
    /* classification */
    double auc[SKS_PRED_COUNT];
    double precision[SKS_PRED_COUNT], recall[SKS_PRED_COUNT], threshold[SKS_PRED_COUNT];
    int n_sink_heads;
    double n_eff;                 /* mean number of non-sink keys seen per margin query */
    double sink_ratio;            /* percent of (l, h) with per-prompt alpha_0 > eps,
                                     averaged over prompts */
    /* what the classification needs beyond the (L, H) arrays, so that it can run on
     * merged parts */
    unsigned char *layer_done;    /* (L) 1 where this result holds layer l */
    int *layer_sinks;             /* (L, n_prompts) heads of layer l with alpha_0 > eps in
                                     that prompt (for sink_ratio) */
    int64_t n_margin_queries;     /* margin queries of one head (they depend on the spike
                                     tokens only): n_eff = n_margin_nonsink / this */
    double n_margin_nonsink;      /* non-sink keys those queries see, summed */
} sks_sinks_result;

/* Run the analysis over n_prompts token sequences (each of length >= 2). */
int sks_sinks_run(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                  const sks_sinks_opts *o, sks_sinks_result **out);
void sks_sinks_result_free(sks_sinks_result *r);

/* The driver: sks_sinks_run over every layer. sp (sks_split.h) may be NULL (one
 * process); otherwise layer l is analysed on part l % nparts (every part runs the
 * forward passes over all prompts), part 0 merges the packed layers and classifies the
 * whole, which gives the one-process result bit for bit; *out is set on part 0 only.
 * auto_first: when no prompt has a spike token, run again with position 0 as the sink
 * token (o->first_as_sink = 1, *fell_back = 1; part 0 decides for all). o->layers must
 * be NULL. Collective with a split. */
int sks_sinks_analyze(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                      sks_sinks_opts *o, int auto_first, const sks_split *sp, int *fell_back,
                      sks_sinks_result **out);

/* Classification of a result that holds every layer: n_sink_heads, sink_ratio, n_eff,
 * per predictor the AUC, threshold, precision and recall, and the head ranking, all
 * from the (L, H) arrays. sks_sinks_run calls it when it ran every layer; after a merge
 * of layer subsets, call it on the merged result (the same code, so the same bits).
 * SKS_EARG when a layer is missing. */
int sks_sinks_classify(sks_sinks_result *r, const sks_sinks_opts *o);

/* Copy into dst every layer that src holds (runs of the same model, prompts and options
 * on disjoint layer subsets). SKS_EARG when the shapes differ, a layer is held by both,
 * or the prompt-wide fields (spike channels and plateau, spike tokens, margin counts)
 * are not bitwise equal: the parts did not see the same forward passes. */
int sks_sinks_merge(sks_sinks_result *dst, const sks_sinks_result *src);

/* The layers r holds as bytes (malloc'd *buf, *n bytes): a header with the shapes and a
 * digest of the prompt-wide fields, then per held layer its index and every per-layer
 * and per-head value, raw (host byte order: for processes of one binary on one kind of
 * host, e.g. MPI ranks). */
int sks_sinks_pack_layers(const sks_sinks_result *r, uint8_t **buf, size_t *n);
/* Merge packed layers into dst as sks_sinks_merge would; every length is checked
 * against the buffer: a short or foreign buffer is SKS_EFORMAT, never a crash. */
int sks_sinks_unpack_layers(sks_sinks_result *dst, const uint8_t *buf, size_t n);

/* msgpack, schema "sinkscope.sinks/1" (docs/schema-sinks.md). The writers refuse (SKS_EARG)
 * a result that does not hold every layer. */
int sks_sinks_write(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o, const char *path);
/* KV-cache map for serving systems (JSON, docs/sinks.md). */
int sks_sinks_write_kv_map(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o,
                           const char *path);
/* Small JSON summary (malloc'd string, caller frees). */
int sks_sinks_json_summary(const sks_sinks_result *r, const sks_model *m, const sks_sinks_opts *o,
                           char **out);

/* ---- per-head computations on plain arrays ---------------------------------------- */

/* Mean and minimum pairwise cosine over the rows of X (n, d), leading dimension ldx,
 * pairs i < j. Zero rows are skipped. n < 2 gives NaN. */
int sks_sinks_pairwise_cos(int n, int d, const float *X, int64_t ldx, double *mean, double *min);

/* Spectrum of the rows of a matrix given by its Gram G = X^T X (n, n) f64: sv (n)
 * singular values of X descending, V (n, n) right singular vectors as rows (may be NULL). */
int sks_sinks_gram_spectrum(int n, const double *G, double *sv, double *V);

/* Alignment a = largest principal cosine between the top-r99 right singular vectors of
 * the rows of Q (nq, dh) and of S (ns, dh) (f64, row-major). rq, rs (may be NULL)
 * receive the ranks used. */
int sks_sinks_alignment(int dh, int nq, const double *Q, int ns, const double *S, double frac,
                        double *a, int *rq, int *rs);

/* Query energy and signed projection along the unit vector k (dh) from the query
 * moments: G = sum q q^T (dh, dh), qsum = sum q, sumsq = sum |q|^2. */
void sks_sinks_energy(int dh, const double *G, const double *qsum, double sumsq, int64_t n,
                      const double *k, double *energy, double *signed_proj);

/* Logit margin of one prompt and one head: for each query t with !spike[t] that sees at
 * least one spike key and one non-spike key u <= t, adds
 * (mean_{u spike} q_t.k_u - mean_{u non-spike} q_t.k_u) / sqrt(dh) to *sum, 1 to *count
 * and the number of non-spike keys to *n_nonsink. q rows at stride ldq, k at ldk. */
void sks_sinks_margin(int T, int dh, const float *q, int64_t ldq, const float *k, int64_t ldk,
                      const unsigned char *spike, double *sum, int64_t *count, double *n_nonsink);

/* Weight-only score of one head: M = Wq_h diag(gamma) (Wq_h (dh, d) f32, gamma (d)),
 * khat (dh): energy = khat^T M M^T khat / (||M||_F^2 |khat|^2) and cos = |U_r^T khat| /
 * |khat| with U_r the top-r (r = effective rank at frac) left singular vectors of M. */
int sks_sinks_weight_only(int d, int dh, const float *Wq_h, const float *gamma, const double *khat,
                          double frac, double *energy, double *cos);

/* ROC AUC of scores against 0/1 labels (Mann-Whitney; ties count 1/2; entries with a NaN
 * score are left out). NaN when there are no positives or no negatives. */
double sks_roc_auc(const double *score, const double *label, int n);
/* Precision and recall of the rule score >= thr against labels (NaN scores predict 0).
 * precision NaN when nothing is predicted, recall NaN when there are no positives. */
void sks_sinks_prec_recall(const double *score, const double *label, int n, double thr, double *precision,
                           double *recall);

#ifdef __cplusplus
}
#endif
#endif
