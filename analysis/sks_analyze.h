/* sks_analyze.h - the whole analysis of one model into one folder, the sequence behind
 * `sinkscope analyze` and `sinkscope demo`.
 *
 * One call runs the four drivers in turn with one spike rule, one eps and one prompt set,
 * so that their numbers can be compared:
 *   1 trace        sks_trace_run over the prompts           -> trace.msgpack
 *   2 spikes       sks_spikes_run at the trace's step-up layers -> spikes.msgpack
 *   3 vocab-sweep  sks_vocab_run, tokens alone at position 0 -> vocab.msgpack
 *   4 sinks        sks_sinks_analyze, ranked heads           -> sinks.msgpack, kv_map.json
 *   5 (with text)  sks_cost_run with the kv map just written -> quant_risk.msgpack,
 *                                                               kv_eval.msgpack
 * then summary.json (headline numbers, settings, timings, file list; the report's input)
 * and the caller's report hook (figures, report.html), which reads that folder.
 *
 * Every file is written into OUT.partial beside OUT; once summary.json exists each output
 * is renamed into OUT (atomic within a file system) and outputs of an earlier run that
 * this one did not write are removed there, so OUT never mixes two runs and a failed run
 * leaves OUT as it was. Other files in OUT are left alone.
 *
 * Prints nothing: what a command shows comes through the event hook and the result.
 */
#ifndef SKS_ANALYZE_H
#define SKS_ANALYZE_H

#include "sks_sinks.h"
#include "sks_spikes.h"
#include "sks_split.h"
#include "sks_trace.h"
#include "sks_vocab.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SKS_ANALYZE_OPEN,  /* text: the model and the output folder */
    SKS_ANALYZE_NOTE,  /* text: a remark (e.g. no tokenizer: pseudo-random ids) */
    SKS_ANALYZE_STAGE, /* stage of n_stages starts: name, text (what it does), seconds (estimate, 0: none) */
    SKS_ANALYZE_DONE,  /* name finished: seconds taken, text (the file or folder written) */
} sks_analyze_event_kind;

typedef struct {
    sks_analyze_event_kind kind;
    int stage, n_stages;
    const char *name;
    const char *text;
    double seconds;
} sks_analyze_event;

typedef struct {
    /* prompts (sks_prompt_source, sks_rule.h): tokens, else prompt, else prompts_file,
     * else the built-in texts (pseudo-random ids without a tokenizer) */
    const char *prompt;
    const char *prompts_file;
    const char *tokens;     /* "1,450,3290" */
    const char *tokenizer;  /* tokenizer file; NULL: found beside or inside the model */
    int sample;             /* vocab-sweep tokens: 0 = sks_vocab_sample_size's default, -1 = all, N */
    double eps;             /* sink head when alpha_0 > eps (default 0.3) */
    sks_spike_rule rule;    /* one rule for every stage (default sks_spike_rule_default) */
    uint64_t seed;          /* pseudo-random prompts and the vocabulary sample (default 1) */
    const char *text;       /* a text file: also the cost stage (quant-risk, kv-eval) */
    int kv_window;          /* kv-eval's W; 0: a quarter of the perplexity window */
    const sks_split *split; /* the split hook for spikes, vocab and sinks; NULL: one process */
    /* events (may be NULL); on every part */
    void (*on_event)(void *ud, const sks_analyze_event *e);
    /* figures and report.html from the folder dir, which holds every result and
     * summary.json (part 0, after the results). 0 with status empty: done (the figures
     * are counted); 0 with status set: skipped, and why; < 0: failed (status says how;
     * the results are still published). NULL: no report ("skipped: --no-plots"). */
    int (*report)(void *ud, const char *dir, char *status, size_t cap);
    void *ud;
} sks_analyze_opts;

void sks_analyze_opts_default(sks_analyze_opts *o);
/* eps in (0, 1) and the spike rule (sks_spike_rule_check). */
int sks_analyze_opts_check(const sks_analyze_opts *o);

/* What the stages found (part 0 holds every result; other parts hold what they ran). */
typedef struct {
    sks_trace_opts to;
    sks_trace_result *tr;
    sks_spikes_opts so;
    sks_spikes_run_result spk;
    const char *spike_selection; /* "from-trace" or "top-frob" */
    sks_vocab_opts vo;
    sks_vocab_result *vr;
    sks_sinks_opts sio;
    sks_sinks_result *sr;
    double seconds;     /* every stage and the report */
    int n_figures;      /* figures the report hook drew */
    char *summary_json; /* summary.json's text (part 0), also when the report failed */
} sks_analyze_result;

/* Run everything on the model at model_path into outdir (created if needed). *out
 * (allocated; free with sks_analyze_result_free) is set whenever the model opened, also
 * on failure. 0, or a negative SKS_E* with sks_last_error set. */
int sks_analyze_run(const char *model_path, const char *outdir, const sks_analyze_opts *o, sks_analyze_result **out);
void sks_analyze_result_free(sks_analyze_result *r);

#ifdef __cplusplus
}
#endif
#endif
