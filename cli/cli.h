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

/* Every subcommand: X(name, function, one-line summary), in the order `sinkscope --help`
 * lists them; each function int sks_cmd_<x>(int argc, char **argv) is in cli/cmd_<x>.c. */
#define SKS_CLI_COMMANDS(X)                                                                             \
    X("inspect", sks_cmd_inspect, "architecture, tensors, dtypes and shards of a model file")          \
    X("run", sks_cmd_run, "greedy generation from a prompt")                                            \
    X("trace", sks_cmd_trace, "residual-stream lifecycle, spike channels and measured sinks")          \
    X("spikes", sks_cmd_spikes, "quadratic forms S_k of the FFNs: lambda*, s*, dominance")             \
    X("vocab-sweep", sks_cmd_vocab_sweep, "every token alone at position 0: which spike")              \
    X("sinks", sks_cmd_sinks, "sink-key geometry, query alignment, ranked sink heads")                 \
    X("analyze", sks_cmd_analyze, "all analyses, figures and report.html into one folder")             \
    X("perplexity", sks_cmd_perplexity, "perplexity of a text over windows of the context")            \
    X("quant-risk", sks_cmd_quant_risk, "activation quantization error per layer, perplexity by scheme") \
    X("kv-eval", sks_cmd_kv_eval, "perplexity when the KV cache keeps only recent keys (+ sinks)")     \
    X("compare", sks_cmd_compare, "the ablation table over analyze folders (spikes, sinks, perplexity)") \
    X("synth", sks_cmd_synth, "write a model of any shape with planted spikes and sinks")              \
    X("demo", sks_cmd_demo, "synthesize the default model and analyse it (no files needed)")

#define SKS_CLI_DECLARE(name, fn, summary) int fn(int argc, char **argv);
SKS_CLI_COMMANDS(SKS_CLI_DECLARE)
#undef SKS_CLI_DECLARE

/* ---- options: one table per command ------------------------------------------------
 * A command describes its options as a table of sks_cli_opt rows; sks_cli_parse reads
 * argv against it (values, numbers and their ranges, the spike rule, positional
 * arguments) and prints --help from the same rows, so that the help and the options
 * cannot drift apart. Usage errors print "sinkscope <cmd>: <why>" and give exit code 2. */
typedef enum {
    SKS_CLI_FLAG,    /* int *dst = 1 */
    SKS_CLI_STR,     /* const char **dst = the value */
    SKS_CLI_INT,     /* int *dst: a whole number in [lo, hi] */
    SKS_CLI_U64,     /* uint64_t *dst: a whole number in [lo, hi] */
    SKS_CLI_NUM,     /* double *dst: a number (in [lo, hi] when lo < hi) */
    SKS_CLI_BYTES,   /* uint64_t *dst: "512M", "4G", "1.5GiB" (powers of 1024) */
    SKS_CLI_CHOICE,  /* int *dst: the index of the value in choices */
    SKS_CLI_CALL,    /* call(dst, value): 0, or SKS_EARG with the message set */
    SKS_CLI_RULE,    /* sks_cli_rule *dst: --outlier, --abs, --ratio, --min-blocks */
    SKS_CLI_SECTION, /* help only: spec is a heading */
    SKS_CLI_TEXT,    /* help only: help is printed as it is */
} sks_cli_kind;

typedef struct {
    const char *spec; /* "-o, --output DIR": its names, then the value's name (none for a flag) */
    sks_cli_kind kind;
    void *dst;
    double lo, hi;
    const char *help; /* lines after the first are indented under it; NULL: an alias, not shown */
    const char *const *choices;             /* CHOICE: NULL-terminated */
    int (*call)(void *dst, const char *v);  /* CALL */
} sks_cli_opt;

/* Rows of a table, one macro per kind (help NULL: an alias, not shown). */
#define SKS_OPT_FLAG(spec, dst, help) {spec, SKS_CLI_FLAG, dst, 0, 0, help, NULL, NULL}
#define SKS_OPT_STR(spec, dst, help) {spec, SKS_CLI_STR, dst, 0, 0, help, NULL, NULL}
#define SKS_OPT_INT(spec, dst, lo, hi, help) {spec, SKS_CLI_INT, dst, lo, hi, help, NULL, NULL}
#define SKS_OPT_U64(spec, dst, lo, hi, help) {spec, SKS_CLI_U64, dst, lo, hi, help, NULL, NULL}
#define SKS_OPT_NUM(spec, dst, help) {spec, SKS_CLI_NUM, dst, 0, 0, help, NULL, NULL}
#define SKS_OPT_NUM_IN(spec, dst, lo, hi, help) {spec, SKS_CLI_NUM, dst, lo, hi, help, NULL, NULL}
#define SKS_OPT_BYTES(spec, dst, help) {spec, SKS_CLI_BYTES, dst, 0, 0, help, NULL, NULL}
#define SKS_OPT_CHOICE(spec, dst, choices, help) {spec, SKS_CLI_CHOICE, dst, 0, 0, help, choices, NULL}
#define SKS_OPT_CALL(spec, dst, fn, help) {spec, SKS_CLI_CALL, dst, 0, 0, help, NULL, fn}
#define SKS_OPT_RULE(dst) {"", SKS_CLI_RULE, dst, 0, 0, NULL, NULL, NULL}
#define SKS_OPT_SECTION(title) {title, SKS_CLI_SECTION, NULL, 0, 0, NULL, NULL, NULL}
#define SKS_OPT_TEXT(text) {"", SKS_CLI_TEXT, NULL, 0, 0, text, NULL, NULL}
/* A number in help text: "cut at " SKS_CLI_XSTR(SKS_DEFAULT_PROMPT_T) " tokens" */
#define SKS_CLI_STR_(x) #x
#define SKS_CLI_XSTR(x) SKS_CLI_STR_(x)
#define SKS_OPT_END {NULL, SKS_CLI_FLAG, NULL, 0, 0, NULL, NULL, NULL}

/* The spike-rule options (analysis/sks_rule.h); --abs or --ratio without --outlier is the
 * fixed-threshold rule of the paper (outlier off). */
typedef struct {
    sks_spike_rule rule;
    unsigned given;
} sks_cli_rule;

typedef struct {
    const char *name;           /* "analyze" */
    const char *usage;          /* what follows "usage: sinkscope <name> " */
    const char *about;          /* before the options (may be NULL) */
    const char *epilogue;       /* after them: examples, environment (may be NULL) */
    void (*more_help)(FILE *f); /* printed before the epilogue, for text made at run time */
    const sks_cli_opt *opts;    /* ends with SKS_OPT_END */
    const char **model;         /* the one positional argument MODEL (required), or NULL */
    const char **pos;           /* otherwise: positional arguments, at least min_pos */
    int min_pos, max_pos;
    int *n_pos;
    const char *pos_name;       /* named in "no <pos_name> given" */
    /* the options every command spells the same, shown after the table's (before its
     * spike rule) with -h, --help: --json and -q, --quiet when dst is set */
    int *json;
    const char *json_help;
    int *quiet;
    const char *quiet_help;
} sks_cli_cmd;

/* Parse argv[1..argc) against c. Returns 1 when the command should go on, else 0 with
 * *exit_code set: 0 after --help, 2 after a usage error (printed). */
int sks_cli_parse(const sks_cli_cmd *c, int argc, char **argv, int *exit_code);
/* Print the help of c to f. */
void sks_cli_help(const sks_cli_cmd *c, FILE *f);
/* "sinkscope <cmd>: <message> (see sinkscope <cmd> --help)" on stderr; returns 2. */
int sks_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The rule after parsing (sks_spike_rule_check); 0, or 2 with the message printed. */
int sks_cli_rule_done(const char *cmd, sks_cli_rule *r);

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
/* The spike rule's --help lines (one text for every command). */
extern const char sks_cli_rule_help[];

/* The findings of a trace on the terminal (cli/findings.c): the rule, each spike channel
 * with its peak, ratio to the block median and step-up/step-down blocks (or the channel
 * that came closest), and the sink heads. */
void sks_cli_print_trace_findings(FILE *f, const sks_trace_result *r, const sks_trace_opts *o);
/* One line per analysed channel of n layer results: lambda*, dominance, energy fraction
 * and, with a forward pass, cos(x, s*) and the quadratic prediction against the true FFN
 * output; spike_only: only the trace's spike channels. */
void sks_cli_print_spike_channels(FILE *f, const void *layer_results, int n, int spike_only);

/* The commands that measure on a text (cli/text.c): MODEL, --text, --tokenizer, -o,
 * --json, -q, then one sequence: open the model, encode the text (sks_text_file_ids),
 * run, write the result to -o, print (the JSON summary with --json, else a table). The
 * command keeps its options and result beside this struct (container of c). */
typedef struct sks_cli_text_cmd sks_cli_text_cmd;
struct sks_cli_text_cmd {
    const char *name, *usage, *about, *epilogue, *json_help; /* as in sks_cli_cmd */
    const char *model, *text, *tokenizer, *output;
    int json, quiet;
    int (*run)(sks_cli_text_cmd *c, const sks_model *m, const int32_t *ids, int n);
    int (*write)(sks_cli_text_cmd *c, const sks_model *m, const char *path);
    void (*print)(sks_cli_text_cmd *c, const sks_model *m);
};
#define SKS_OPT_TEXT_INPUT(c)                                                                     \
    SKS_OPT_STR("--text FILE", &(c)->text, "the text (UTF-8), required"),                         \
        SKS_OPT_STR("--tokenizer PATH", &(c)->tokenizer, "tokenizer file when it is not beside the model")
/* Parse argv against opts (plus --json and -q); 1 to go on, else 0 with *exit_code
 * (sks_cli_parse), also when --text is missing. */
int sks_cli_text_parse(sks_cli_text_cmd *c, const sks_cli_opt *opts, int argc, char **argv, int *exit_code);
/* The sequence, after the options are parsed; the exit code. */
int sks_cli_text_run(sks_cli_text_cmd *c);

/* Print j to stdout with jansson's flags and a new line, and release it; 0, or 1 when
 * it could not be written. */
struct json_t;
int sks_cli_print_json(struct json_t *j, size_t flags);

/* Install a progress hook that draws "stage [####    ] 12/40 eta 3s" on stderr when
 * stderr is a terminal, and plain lines every few seconds otherwise. quiet disables. */
void sks_cli_progress_install(int quiet);
/* k of total as a percentage that never rounds a non-zero count to 0.0% (1 of 4096 is
 * "0.024%") nor a shortfall to 100.0%; the report's pct_of follows the same rule. */
const char *sks_cli_pct(char *buf, size_t n, long k, long total);

#endif
