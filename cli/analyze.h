/* analyze.h - the whole pipeline of `sinkscope analyze`, callable from other commands
 * (`sinkscope demo` runs it on the model it synthesizes).
 *
 * One call runs, through the library (never subprocesses), with consistent thresholds:
 *   trace       -> OUTDIR/trace.msgpack   (lifecycle, spike channels, measured alpha)
 *   spikes      -> OUTDIR/spikes.msgpack  (S_k eigenpairs of the step-up layers'
 *                                          spike channels, delimiter ranking)
 *   vocab-sweep -> OUTDIR/vocab.msgpack   (every token, or a sample, at position 0)
 *   sinks       -> OUTDIR/sinks.msgpack + OUTDIR/kv_map.json
 *   with a text: quant-risk and kv-eval (with the kv map just written)
 *               -> OUTDIR/quant_risk.msgpack + OUTDIR/kv_eval.msgpack (docs/cost.md)
 * then OUTDIR/summary.json (headline numbers, timings, file list) and, unless no_plots,
 * the figures and OUTDIR/report.html by running notebooks-out/make_report.py with
 * /usr/bin/python3 (the one process it starts). Progress goes to stderr.
 */
#ifndef SKS_CLI_ANALYZE_H
#define SKS_CLI_ANALYZE_H

#include <stdint.h>

typedef struct {
    const char *prompt;     /* text (needs the model's tokenizer); NULL: built-in prompts */
    const char *prompts_file; /* one text per line; used when prompt is NULL */
    const char *tokens;     /* "1,2,3" token ids; overrides prompt and prompts_file */
    const char *tokenizer;  /* tokenizer file; NULL: found beside or inside the model */
    int sample;             /* vocab-sweep tokens: 0 = auto (all when V <= 8192, else
                               4096), -1 = all, N = a sample of N */
    double eps;             /* sink head when alpha_0 > eps (default 0.3) */
    double abs_thresh;      /* spike rule (analysis/sks_rule.h): |h| >= abs (default 0) */
    double ratio;           /* and >= ratio x block median (default 0) */
    int min_blocks;         /* consecutive blocks for a spike channel (default 3) */
    double outlier;         /* and >= outlier x median channel peak (default 20) */
    int no_plots;           /* 1: msgpack + JSON only */
    int quiet;              /* 1: no progress lines */
    int json;               /* 1: print summary.json to stdout at the end */
    uint64_t seed;          /* default prompts without a tokenizer, vocab sample */
    const char *text;       /* (addition) a text: also quant-risk and kv-eval on it */
    int kv_window;          /* kv-eval W; 0: a quarter of the perplexity window */
} sks_cli_analyze_opts;

void sks_cli_analyze_opts_default(sks_cli_analyze_opts *o);

/* Run everything on the model at model_path into outdir (created if needed).
 * Returns 0 on success (also when the figures were skipped because Python, its
 * packages or the scripts are missing: that is reported on stderr and in
 * summary.json), else a negative SKS_E* code with sks_last_error() set; a plotting
 * script that runs and fails is an error too, after every result file is written.
 * Prints nothing on stdout unless o->json. */
int sks_cli_analyze_run(const char *model_path, const char *outdir, const sks_cli_analyze_opts *o);

#endif
