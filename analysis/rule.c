/* rule.c - the spike rule, alpha_j and the built-in prompts (contract in sks_rule.h). */
#include "sks_rule.h"
#include "sks_trace.h"
#include "../loaders/sks_tokenizer.h"

#include <stdlib.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

void sks_spike_rule_default(sks_spike_rule *r) {
    r->outlier = SKS_SPIKE_OUTLIER_DEFAULT;
    r->abs_thresh = 0;
    r->ratio = 0;
    r->min_blocks = SKS_SPIKE_MIN_BLOCKS_DEFAULT;
}

void sks_spike_rule_unpack(const sks_spike_rule *r, double *outlier, double *abs_thresh, double *ratio,
                           int *min_blocks) {
    *outlier = r->outlier;
    *abs_thresh = r->abs_thresh;
    *ratio = r->ratio;
    *min_blocks = r->min_blocks;
}

void sks_spike_rule_paper(sks_spike_rule *r) {
    r->outlier = 0;
    r->abs_thresh = 100;
    r->ratio = 1000;
    r->min_blocks = SKS_SPIKE_MIN_BLOCKS_DEFAULT;
}

int sks_spike_rule_check(const sks_spike_rule *r) {
    if (!(r->outlier >= 0) || isinf(r->outlier)) return sks_fail(SKS_EARG, "--outlier: must be >= 0 and finite");
    if (!(r->abs_thresh >= 0) || isinf(r->abs_thresh)) return sks_fail(SKS_EARG, "--abs: must be >= 0 and finite");
    if (!(r->ratio >= 0) || isinf(r->ratio)) return sks_fail(SKS_EARG, "--ratio: must be >= 0 and finite");
    if (r->min_blocks < 1) return sks_fail(SKS_EARG, "--min-blocks: must be >= 1");
    if (!(r->outlier > 0) && !(r->abs_thresh > 0) && !(r->ratio > 0))
        return sks_fail(SKS_EARG, "spike rule: --outlier, --abs and --ratio are all 0 (every value would spike)");
    return 0;
}

double sks_spike_rule_threshold(const sks_spike_rule *r, double median_b, double peak_b) {
    double t = r->abs_thresh;
    if (r->ratio * median_b > t) t = r->ratio * median_b;
    if (r->outlier * peak_b > t) t = r->outlier * peak_b;
    return t;
}

double sks_channel_peak_median(const float *h, int T, int d, float *work) {
    for (int c = 0; c < d; c++) work[c] = 0;
    for (int t = 0; t < T; t++)
        for (int c = 0; c < d; c++) {
            float a = fabsf(h[(size_t)t * d + c]);
            if (a > work[c]) work[c] = a;
        }
    return sks_median_f32(work, (size_t)d);
}

const char *sks_spike_rule_describe(const sks_spike_rule *r, char *buf, size_t n) {
    char parts[3][64];
    int k = 0;
    if (r->outlier > 0) snprintf(parts[k++], sizeof parts[0], "%g x the median channel peak", r->outlier);
    if (r->ratio > 0) snprintf(parts[k++], sizeof parts[0], "%g x the block median", r->ratio);
    if (r->abs_thresh > 0) snprintf(parts[k++], sizeof parts[0], "%g", r->abs_thresh);
    snprintf(buf, n, "|h| >= %s%s%s%s%s in >= %d consecutive blocks", k > 0 ? parts[0] : "0", k > 1 ? " and " : "",
             k > 1 ? parts[1] : "", k > 2 ? " and " : "", k > 2 ? parts[2] : "", r->min_blocks);
    return buf;
}

void sks_spike_rule_closest(const sks_spike_rule *r, int n_blocks, int d, const float *channel_max,
                            const double *thr, int *channel, double *frac, int *block) {
    *channel = -1;
    *frac = 0;
    *block = -1;
    int w = r->min_blocks < n_blocks ? r->min_blocks : n_blocks;
    for (int c = 0; c < d; c++)
        for (int b0 = 0; b0 + w <= n_blocks; b0++) {
            double lo = INFINITY;
            for (int b = b0; b < b0 + w; b++) {
                double s = thr[b] > 0 ? channel_max[(size_t)b * d + c] / thr[b] : INFINITY;
                if (s < lo) lo = s;
            }
            if (lo > *frac) *frac = lo, *channel = c, *block = b0;
        }
}

double sks_alpha_j(const float *A, int T, int j) {
    double sum = 0;
    for (int i = j; i < T; i++) sum += A[(size_t)i * T + j];
    return sum / (double)(T - j);
}

/* ---- built-in prompts ----------------------------------------------------------------- */

static const char *const sks__prompt_texts[] = {
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big red ball in the park. She ran to it and kicked it as far as she could. "
    "Her friend Tom laughed and ran after the ball.",
    "The compiler reads the source file, splits it into tokens, and builds a syntax tree. Each function "
    "is then lowered to an intermediate form, optimized, and finally translated into machine code. "
    "Errors are reported with the file name and the line number.",
    "In the morning the market opens early. Farmers bring apples, bread and cheese; the baker sells warm "
    "rolls. By noon the square is full of people talking, buying and selling, and the church bell rings "
    "twelve times.\nIn the evening everything is quiet again.",
    "Attention lets every position of a sequence look at the positions before it. A head computes "
    "queries and keys, compares them with a dot product, and turns the scores into weights with a "
    "softmax. The weights then average the values.",
};

const char *const *sks_default_prompt_texts(int *n) {
    *n = (int)(sizeof sks__prompt_texts / sizeof sks__prompt_texts[0]);
    return sks__prompt_texts;
}

int sks_prompts_check(const sks_model *m, int n, const int32_t *const *ids, int *lens, const char *what) {
    const sks_arch *a = sks_model_arch(m);
    if (n < 1) return sks_fail(SKS_EARG, "%s: no prompt", what);
    for (int i = 0; i < n; i++) {
        if (lens[i] < 2 || !ids[i])
            return sks_fail(SKS_EARG, "%s: prompt %d has %d token%s (need BOS and at least one more)", what, i + 1,
                            lens[i], lens[i] == 1 ? "" : "s");
        for (int t = 0; t < lens[i]; t++)
            if (ids[i][t] < 0 || ids[i][t] >= a->vocab_size)
                return sks_fail(SKS_EARG, "%s: prompt %d: token %d outside the model's vocabulary (%d)", what, i + 1,
                                ids[i][t], a->vocab_size);
        if (a->max_seq > 0 && lens[i] > a->max_seq) {
            sks_log(SKS_LOG_WARN, "%s: prompt %d has %d tokens; cut to the model's context of %d", what, i + 1, lens[i],
                    a->max_seq);
            lens[i] = a->max_seq;
        }
    }
    return 0;
}

void sks_prompts_free(int32_t **ids, int *lens, int n) {
    if (ids)
        for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
}

int sks_default_prompts(const sks_model *m, const struct sks_tokenizer *tok, uint64_t seed, int32_t ***ids,
                        int **lens, int *n) {
    const sks_arch *a = sks_model_arch(m);
    int k, rc = 0;
    const char *const *texts = sks_default_prompt_texts(&k);
    int T = a->max_seq > 0 && a->max_seq < SKS_DEFAULT_PROMPT_T ? a->max_seq : SKS_DEFAULT_PROMPT_T;
    int32_t **v = calloc((size_t)k, sizeof *v);
    int *l = calloc((size_t)k, sizeof *l);
    if (!v || !l) rc = sks_fail(SKS_ENOMEM, "prompts: out of memory");
    for (int i = 0; i < k && !rc; i++) {
        if (tok) {
            if ((rc = sks_tokenizer_encode(tok, texts[i], 1, &v[i], &l[i]))) break;
            if (l[i] > T) l[i] = T;
        } else if (!(v[i] = malloc((size_t)T * sizeof(int32_t)))) {
            rc = sks_fail(SKS_ENOMEM, "prompts: out of memory");
        } else {
            sks_trace_default_tokens(m, T, seed + (uint64_t)i, v[i]);
            l[i] = T;
        }
    }
    if (!rc) rc = sks_prompts_check(m, k, (const int32_t *const *)v, l, "built-in prompts");
    if (rc) {
        sks_prompts_free(v, l, k);
        return rc;
    }
    *ids = v;
    *lens = l;
    *n = k;
    return 0;
}
