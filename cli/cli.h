/* cli.h - the sinkscope command: subcommands and shared option helpers.
 * The CLI only parses options, draws progress and writes files; every analysis is a
 * library function. Each subcommand lives in cli/cmd_<name>.c and defines
 * int sks_cmd_<name>(int argc, char **argv) (argv[0] is the subcommand name).
 */
#ifndef SKS_CLI_H
#define SKS_CLI_H

#include "../analysis/sks_rule.h"
#include "../analysis/sks_trace.h"
#include "../loaders/sks_model.h"

#include <stdio.h>

typedef int (*sks_cmd_fn)(int argc, char **argv);

int sks_cmd_inspect(int argc, char **argv);
int sks_cmd_run(int argc, char **argv);
int sks_cmd_trace(int argc, char **argv);
int sks_cmd_synth(int argc, char **argv);
int sks_cmd_demo(int argc, char **argv);
int sks_cmd_spikes(int argc, char **argv);
int sks_cmd_vocab_sweep(int argc, char **argv);
int sks_cmd_sinks(int argc, char **argv);
int sks_cmd_analyze(int argc, char **argv);
int sks_cmd_perplexity(int argc, char **argv);
int sks_cmd_quant_risk(int argc, char **argv);
int sks_cmd_kv_eval(int argc, char **argv);
int sks_cmd_compare(int argc, char **argv);

/* In an option loop over argv with index i: step over the value of option a, or print
 * "sinkscope <cmd>: <a> needs a value" and return 2 (usage error) from the command. */
#define SKS_CLI_TAKE(cmd, a, val, i)                                                    \
    do {                                                                                \
        if (!(val)) {                                                                   \
            fprintf(stderr, "sinkscope %s: %s needs a value\n", cmd, a);                \
            return 2;                                                                   \
        }                                                                               \
        (i)++;                                                                          \
    } while (0)

/* Print "sinkscope <cmd>: <last error>" to stderr and return exit code 1 (for rc < 0). */
int sks_cli_fail(const char *cmd, int rc);
/* Open a model, printing a one-line error on failure. */
int sks_cli_open_model(const char *cmd, const char *path, sks_model **m);
/* Parse "0-3,5,7-8" given to option opt into a malloc'd sorted unique int list, each in
 * [0, max) (what: "layers", "channels", named in the messages). An empty list is an error. */
int sks_cli_parse_ranges(const char *opt, const char *what, const char *s, int max, int **out, int *n);
/* Parse a number with checking; returns 0 or SKS_EARG with a message naming opt. */
int sks_cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out);
int sks_cli_parse_double(const char *opt, const char *s, double *out);
/* Parse "123", "512M", "4G", "1.5GiB" (powers of 1024) into bytes. */
int sks_cli_parse_bytes(const char *opt, const char *s, uint64_t *out);
/* The spike-rule options of trace, spikes, sinks and analyze (analysis/sks_rule.h):
 * --outlier X, --abs X, --ratio X, --min-blocks N. Returns 1 when a is one of them: the
 * value v is parsed into r (on a bad value the message is printed and *usage set), and
 * the option is noted in *given; 0 when a is another option. */
int sks_cli_rule_option(const char *cmd, const char *a, const char *v, sks_spike_rule *r, unsigned *given,
                        int *usage);
/* Their --help lines (one text for every command). */
extern const char sks_cli_rule_help[];
/* After the option loop: --abs or --ratio without --outlier is the fixed-threshold rule
 * of the paper (outlier off); returns 2 (and prints why) when the rule is invalid. */
int sks_cli_rule_finish(const char *cmd, sks_spike_rule *r, unsigned given);

/* The findings of a trace on the terminal (cli/findings.c): the rule, each spike channel
 * with its peak, ratio to the block median and step-up/step-down blocks (or the channel
 * that came closest), and the sink heads. */
void sks_cli_print_trace_findings(FILE *f, const sks_trace_result *r, const sks_trace_opts *o);
/* One line per analysed channel of n layer results: lambda*, dominance, energy fraction
 * and, with a forward pass, cos(x, s*) and the quadratic prediction against the true FFN
 * output; spike_only: only the trace's spike channels. */
void sks_cli_print_spike_channels(FILE *f, const void *layer_results, int n, int spike_only);

/* Install a progress hook that draws "stage [####    ] 12/40 eta 3s" on stderr when
 * stderr is a terminal, and plain lines every few seconds otherwise. quiet disables. */
void sks_cli_progress_install(int quiet);
/* k of total as a percentage that never rounds a non-zero count to 0.0% (1 of 4096 is
 * "0.024%") nor a shortfall to 100.0%; the report's pct_of follows the same rule. */
const char *sks_cli_pct(char *buf, size_t n, long k, long total);

#endif
