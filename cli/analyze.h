/* analyze.h - `sinkscope analyze` as a call for the commands that run it (analyze,
 * demo): sks_analyze_run (analysis/sks_analyze.h) with the CLI's hooks: the stages drawn
 * on stderr, notebooks-out/make_report.py (with /usr/bin/python3, the one process it
 * starts) as the report, the findings on stdout.
 */
#ifndef SKS_CLI_ANALYZE_H
#define SKS_CLI_ANALYZE_H

#include "../analysis/sks_analyze.h"

typedef struct {
    int no_plots; /* 1: no report hook (msgpack + JSON only) */
    int quiet;    /* 1: no progress lines, no findings */
    int json;     /* 1: summary.json on stdout instead of the findings */
} sks_cli_analyze_flags;

/* Runs the analysis with o's hooks and split set by the CLI. Returns 0 (also when the
 * figures were skipped because Python, its packages or the scripts are missing: said on
 * stderr and in summary.json), else a negative SKS_E* code with sks_last_error() set; a
 * plotting script that runs and fails is an error too, after every result is published. */
int sks_cli_analyze_run(const char *model_path, const char *outdir, sks_analyze_opts *o, const sks_cli_analyze_flags *f);

#endif
