/* sks_rule.h - the one spike rule, the one alpha_j and the one prompt set that every
 * analysis and command uses (docs/spikes.md, "The spike rule").
 *
 * Spike rule. In block b, (token t, channel c) is above the rule when
 *     |h_b[t,c]| >= thr_b = max(abs, ratio * median_b, outlier * peak_b)
 * with median_b the median |h_b| over all (t, c) and peak_b the median over channels of
 * the channel peaks max_t |h_b[t,c]|. A pair above the rule in at least min_blocks
 * consecutive blocks is a spike; its channel a spike channel, its token a spike token.
 *
 * Default (sks_spike_rule_default): outlier 20, abs 0, ratio 0, min_blocks 3: a channel
 * spikes when its peak stands 20x above the typical channel's peak. The paper's
 * definition for billion-parameter models (Sun et al. 2024) is abs 100, ratio 1000,
 * outlier 0 (sks_spike_rule_paper). Why 20: docs/spikes.md measures peak ratios of
 * 1.6-3.5 in random models and in stories260K (no mechanism), 25-55 on the plateaus of the
 * trained fixtures' spike channels, and about 700 for a planted spike.
 */
#ifndef SKS_RULE_H
#define SKS_RULE_H

#include "../loaders/sks_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double outlier;    /* multiple of peak_b (0 = off) */
    double abs_thresh; /* |h| floor (0 = off) */
    double ratio;      /* multiple of median_b (0 = off) */
    int min_blocks;    /* consecutive blocks */
} sks_spike_rule;

#define SKS_SPIKE_OUTLIER_DEFAULT 20.0
#define SKS_SPIKE_MIN_BLOCKS_DEFAULT 3

void sks_spike_rule_default(sks_spike_rule *r);
/* Copy the rule into an options struct's four fields (sinks, analyze). */
void sks_spike_rule_unpack(const sks_spike_rule *r, double *outlier, double *abs_thresh, double *ratio,
                           int *min_blocks);
void sks_spike_rule_paper(sks_spike_rule *r);
/* 0, or SKS_EARG naming the option (--outlier, --abs, --ratio, --min-blocks) */
int sks_spike_rule_check(const sks_spike_rule *r);
/* thr_b for one block */
double sks_spike_rule_threshold(const sks_spike_rule *r, double median_b, double peak_b);
/* peak_b: median over channels of max_t |h[t,c]|; work holds d floats */
double sks_channel_peak_median(const float *h, int T, int d, float *work);
/* "|h| >= 20 x the median channel peak, in >= 3 consecutive blocks" */
const char *sks_spike_rule_describe(const sks_spike_rule *r, char *buf, size_t n);

/* When nothing passes: the channel that came closest. score_b(c) = channel_max[b, c] /
 * thr[b]; for each channel the best run of min_blocks consecutive blocks by its smallest
 * score; the channel with the largest such value. *frac = that value (>= 1 passes),
 * *block = first block of its run. channel_max (n_blocks, d). */
void sks_spike_rule_closest(const sks_spike_rule *r, int n_blocks, int d, const float *channel_max,
                            const double *thr, int *channel, double *frac, int *block);

/* alpha_j = sum_{i>=j} A[i, j] / (T - j) (Gu et al.), A (T, T) row-major causal. */
double sks_alpha_j(const float *A, int T, int j);

/* ---- built-in prompts ----------------------------------------------------------------- */

/* The one built-in prompt set: n texts of English prose and technical text with
 * delimiters, each encoded with BOS and cut at SKS_DEFAULT_PROMPT_T tokens (the length of
 * Gu et al.). Without a tokenizer: BOS then pseudo-random ids (sks_trace_default_tokens,
 * seed + i for prompt i). */
#define SKS_DEFAULT_PROMPT_T 64
const char *const *sks_default_prompt_texts(int *n);
/* The built-in prompts of a model: the texts above through tok (cut at
 * SKS_DEFAULT_PROMPT_T and at the model's context), or without a tokenizer (tok NULL)
 * the same number of pseudo-random prompts of SKS_DEFAULT_PROMPT_T ids. *ids (n arrays)
 * and *lens are malloc'd; free with sks_prompts_free. */
struct sks_tokenizer;
int sks_default_prompts(const sks_model *m, const struct sks_tokenizer *tok, uint64_t seed, int32_t ***ids,
                        int **lens, int *n);
void sks_prompts_free(int32_t **ids, int *lens, int n);

/* The one prompt rule, for every command: a prompt needs >= 2 tokens (BOS and one more),
 * every id inside the vocabulary; a prompt longer than the model's context (max_seq, when
 * known) is cut to it with a warning naming the prompt. what names the source in the
 * messages ("--prompt", a file name). lens may be shortened. */
int sks_prompts_check(const sks_model *m, int n, const int32_t *const *ids, int *lens, const char *what);

/* Where a command's prompts come from (analysis/prompts.c): tokens ("1,450,3290", used
 * as given; several prompts separated by ';'), else tokens_file (one prompt of ids per
 * line), else prompt (one text), else prompts_file (one text per line, empty lines
 * skipped, not cut), else the built-in prompts (sks_default_prompts). Texts need a tokenizer. */
typedef struct {
    const char *tokens;
    const char *prompt;
    const char *prompts_file;
    const char *tokens_file;
} sks_prompt_source;

typedef struct {
    int n;
    int32_t **ids; /* (n) malloc'd */
    int *lens;     /* (n) */
    char source[48]; /* "--tokens", "--prompt", "--prompts", "--tokens-file", "built-in texts", "pseudo-random ids (no tokenizer)" */
} sks_prompt_set;

/* The prompts of src, checked by the prompt rule (sks_prompts_check); seed picks the
 * pseudo-random ids of the built-in set without a tokenizer. */
int sks_prompt_set_make(const sks_model *m, const struct sks_tokenizer *tok, const sks_prompt_source *src,
                        uint64_t seed, sks_prompt_set *p);
void sks_prompt_set_free(sks_prompt_set *p);
/* "1,2,3" (commas or spaces) into a malloc'd array; the messages name --tokens. */
int sks_parse_ids(const char *s, int32_t **ids, int *n);
/* The non-empty lines of a text file (malloc'd strings; at least one). */
int sks_read_lines(const char *path, char ***lines, int *n);
void sks_lines_free(char **lines, int n);
/* A whole file as a NUL-terminated string (1 GiB at most); *len its length (may be NULL). */
int sks_read_text_file(const char *path, char **text, size_t *len);
/* text_path whole, encoded with the model's tokenizer (or tok_path), BOS first: *ids
 * malloc'd, *n >= 2 (the commands that measure perplexity). */
int sks_text_file_ids(const sks_model *m, const char *tok_path, const char *text_path, int32_t **ids, int *n);

#ifdef __cplusplus
}
#endif
#endif
