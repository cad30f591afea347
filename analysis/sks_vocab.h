/* sks_vocab.h - the vocabulary sweep (SPEC section 3, the paper's Table 2).
 *
 * Every token v (or a deterministic sample) runs alone at position 0. The tokens go
 * through the forward pass in batches of independent one-token sequences
 * (SKS_FWD_INDEPENDENT: attention at position 0 is W_O W_V x, so a batch is a chain of
 * GEMMs). For each intermediate block b = 2l+2, l = 0..L-2 (after the FFN of every layer
 * but the last):
 *
 *   ratio_b(v) = max_c |h_b[v, c]| / m_b,
 *
 * m_b = the typical median |h| of block b: the median of |h_b[t, c]| over all channels
 * and all positions t > 0 of a reference prompt set, pooled (position-0 vectors are
 * inflated as a whole, so a token's own median is the wrong yardstick). Per token:
 * ratio(v) = max_b ratio_b(v), its channel and block, and max_abs(v) = max_b max_c
 * |h_b[v, c]| over the same blocks. v is a spike token when ratio(v) >= opts.ratio and
 * max_abs(v) >= opts.abs_thresh. Reported: the fraction, the per-token numbers, the
 * exceptions (non-spike ids) and the histogram of spike channels.
 */
#ifndef SKS_VOCAB_H
#define SKS_VOCAB_H

#include "../loaders/sks_model.h"
#include "sks_split.h"
#include "sks_out.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double ratio;           /* --ratio, default 100 */
    double abs_thresh;      /* --abs, default 0 (off: the paper's 100 is for 7B-scale) */
    int sample;             /* 0 = every token; N > 0 = a deterministic sample of N ids */
    uint64_t seed;          /* sample seed (default 1) */
    int batch;              /* tokens per forward batch (default 256) */
    const double *medians;  /* (2L+1) typical medians given by the caller (e.g. a reference
                               run), or NULL to compute them from the prompts */
} sks_vocab_opts;

void sks_vocab_opts_default(sks_vocab_opts *o);

typedef struct {
    int n_layers, n_blocks;     /* L, 2L+1 */
    double *typical_median;     /* (n_blocks) m_b (all blocks, also those not used) */
    int medians_given;          /* 1: from opts.medians */
    int64_t median_count;       /* |h| values per block behind the medians (0 if given) */
    int n_tokens;               /* tokens swept */
    int32_t *ids;               /* (n_tokens) ascending */
    float *ratio;               /* (n_tokens) max over blocks 2l+2, l <= L-2 */
    float *max_abs;             /* (n_tokens) */
    int32_t *argmax_channel;    /* (n_tokens) channel of the largest ratio */
    int32_t *argmax_block;      /* (n_tokens) block of the largest ratio */
    int n_spike;
    double spike_fraction;      /* n_spike / n_tokens */
    int n_exceptions;
    int32_t *exceptions;        /* (n_exceptions) non-spike ids, ascending */
    int32_t *channel_count;     /* (d) spike tokens whose argmax channel is c */
    int top_channel;            /* argmax of channel_count (-1 when no spike) */
    double seconds;
    int n_resumed;              /* batches read back from resume parts (this part's) */
} sks_vocab_result;

/* Typical medians m_b (n_blocks = 2L+1 values) over positions > 0 of the prompts
 * (each needs >= 2 tokens). *count receives the number of values per block. */
int sks_vocab_typical_medians(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                              double *medians, int64_t *count);

/* The sweep (the driver). prompts are used for the medians unless opts->medians is set.
 * sp (sks_split.h) may be NULL (one process); otherwise part 0 computes the medians and
 * broadcasts them, the forward batches are dealt out to the parts (and kept in resume
 * parts), and *out is set on part 0 only (NULL elsewhere), bitwise the one-process
 * result. Collective then. */
int sks_vocab_run(const sks_model *m, const sks_vocab_opts *o, int n_prompts, const int32_t *const *prompts,
                  const int *lens, const sks_split *sp, sks_vocab_result **out);
void sks_vocab_result_free(sks_vocab_result *r); /* NULL is a no-op */

/* Every input of a sweep that changes a batch's per-token arrays (the model, its shape,
 * sample, seed, batch, and the given medians or the reference prompts) as one msgpack
 * map: the fingerprint of resume manifests (sks_dist_fingerprint). */
void sks_vocab_inputs(sks_out *o, const sks_model *m, const sks_vocab_opts *vo, int n_prompts,
                      const int32_t *const *prompts, const int *lens);

/* The steps of sks_vocab_run, for callers that split the sweep (MPI slices, resumable
 * batches) and must reproduce it exactly. */
struct sks_forward;
/* The ids the sweep visits: all V, or the deterministic sample of o->sample ids (partial
 * Fisher-Yates with o->seed), ascending. *ids is malloc'd (*n entries). */
int sks_vocab_sweep_ids(int V, const sks_vocab_opts *o, int32_t **ids, int *n);
/* One batch: ids[0..n) each alone at position 0 through fw (made for >= n tokens, any
 * model with n_layers layers); each token's largest ratio max_c |h_b[v,c]| / medians[b]
 * over the blocks b = 2l+2, l <= L-2, is folded into ratio, max_abs, argmax_channel,
 * argmax_block (n each, initialised by the caller to 0, 0, -1, -1). */
/* The summary of swept per-token arrays (r->ratio, max_abs, argmax_channel, ids, n_tokens
 * filled): spike count and fraction (ratio >= o->ratio and max_abs >= o->abs_thresh),
 * exceptions, the channel histogram (r->channel_count, (d) zeroed by the caller) and the
 * top channel. */
int sks_vocab_summarize(sks_vocab_result *r, const sks_vocab_opts *o, int d);
/* The sample size for --sample OPT over a vocabulary of V: 0 (auto) sweeps up to 8192
 * tokens whole and samples 4096 of larger ones; -1 everything; N a sample of N
 * (everything when N >= V). Returns sks_vocab_opts.sample (0 = the whole vocabulary). */
int sks_vocab_sample_size(int opt, int V);
int sks_vocab_sweep_batch(struct sks_forward *fw, int n_layers, const double *medians, const int32_t *ids, int n,
                          float *ratio, float *max_abs, int32_t *argmax_channel, int32_t *argmax_block);

/* msgpack, schema "sinkscope.vocab/1" (docs/schema-vocab.md). piece(ud, id) names the
 * exceptions (may be NULL). */
int sks_vocab_write(const sks_vocab_result *r, const sks_model *m, const sks_vocab_opts *o,
                    const char *(*piece)(void *ud, int id), void *piece_ud, const char *path);

#ifdef __cplusplus
}
#endif
#endif
