/* cmd_analyze.c - `sinkscope analyze`: every analysis, the figures and report.html.
 *
 * The sequence of stages, summary.json and the output folder are the library's
 * (sks_analyze_run, analysis/sks_analyze.h); this file parses the options, draws the
 * stages on stderr, runs notebooks-out/make_report.py as the report hook and prints the
 * findings.
 */
#define _POSIX_C_SOURCE 200809L
#include "analyze.h"
#include "cli.h"
#include "../dist/sks_dist.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    const char *outdir; /* OUT, named in messages */
    int quiet;
} sks__cli_run;

/* The library's events as progress lines on stderr. */
static void sks__on_event(void *ud, const sks_analyze_event *e) {
    const sks__cli_run *C = ud;
    if (C->quiet) return;
    switch (e->kind) {
    case SKS_ANALYZE_OPEN:
    case SKS_ANALYZE_NOTE:
        fprintf(stderr, "analyze: %s\n", e->text);
        break;
    case SKS_ANALYZE_STAGE:
        if (e->seconds > 0.5)
            fprintf(stderr, "analyze [%d/%d] %s: %s (about %.0f s)\n", e->stage, e->n_stages, e->name, e->text,
                    e->seconds);
        else
            fprintf(stderr, "analyze [%d/%d] %s: %s\n", e->stage, e->n_stages, e->name, e->text);
        break;
    case SKS_ANALYZE_DONE:
        fprintf(stderr, "analyze       %s done in %.2f s -> %s\n", e->name, e->seconds, e->text);
        break;
    }
}

static int sks__file_exists(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISREG(st.st_mode);
}

/* ---- figures and report.html: the report hook --------------------------------------- */

/* The folder holding make_report.py: $SKS_NOTEBOOKS_DIR, the source tree this binary
 * was built from (SKS_SOURCE_DIR, or this file's own path), or notebooks-out next to
 * or above the executable. */
static int sks__find_notebooks(char *out, size_t cap) {
    const char *env = getenv("SKS_NOTEBOOKS_DIR");
    if (env && *env) {
        char p[4096 + 32];
        if (snprintf(p, sizeof p, "%s/make_report.py", env) >= (int)sizeof p || !sks__file_exists(p))
            return SKS_ENOTFOUND;
        return snprintf(out, cap, "%s", env) < (int)cap ? 0 : SKS_ENOTFOUND;
    }
    enum { N = 4, W = 4096 };
    static char cand[N][W];
    int nc = 0;
#ifdef SKS_SOURCE_DIR
    if (snprintf(cand[nc], W, "%s/notebooks-out", SKS_SOURCE_DIR) < W) nc++;
#endif
    {
        /* CMake compiles with absolute source paths: <src>/cli/cmd_analyze.c */
        const char *f = __FILE__;
        const char *cut = strstr(f, "/cli/cmd_analyze.c");
        if (f[0] == '/' && cut && snprintf(cand[nc], W, "%.*s/notebooks-out", (int)(cut - f), f) < W) nc++;
    }
    char exe[2048];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k > 0) {
        exe[k] = '\0';
        char *sl = strrchr(exe, '/');
        if (sl) {
            *sl = '\0';
            if (snprintf(cand[nc], W, "%s/../notebooks-out", exe) < W) nc++;
            if (snprintf(cand[nc], W, "%s/../share/sinkscope/notebooks-out", exe) < W) nc++;
        }
    }
    for (int i = 0; i < nc; i++) {
        char p[W + 32];
        if (snprintf(p, sizeof p, "%s/make_report.py", cand[i]) >= (int)sizeof p) continue;
        if (sks__file_exists(p) && snprintf(out, cap, "%s", cand[i]) < (int)cap) return 0;
    }
    return SKS_ENOTFOUND;
}

/* Run argv with its stdout sent to our stderr (stdout is for --json), or with -q both to
 * /dev/null (a failure is still reported by its exit status); exit status or -1. */
static int sks__spawn(char *const argv[], int quiet) {
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa)) return -1;
    if (quiet) {
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, 1, 2);
    } else {
        posix_spawn_file_actions_adddup2(&fa, 2, 1);
    }
    pid_t pid;
    fflush(stdout);
    fflush(stderr);
    int e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Figures and report. Missing Python, packages or scripts only skip them (returns 0);
 * a make_report.py that runs and fails is an error (the results stay on disk). */
static int sks__plots(void *ud, const char *dir, char *status, size_t cap) {
    const sks__cli_run *C = ud;
    const char *py = getenv("SKS_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    char nbdir[4096];
    if (access(py, X_OK)) {
        snprintf(status, cap, "skipped: %s not found (run scripts/install-deps.sh)", py);
        fprintf(stderr, "analyze: figures skipped: %s not found; install it with scripts/install-deps.sh "
                        "(the msgpack results in %s are complete)\n", py, C->outdir);
        return 0;
    }
    char *chk[] = {(char *)py, "-c", "import numpy, matplotlib, msgpack", NULL};
    if (sks__spawn(chk, C->quiet) != 0) {
        snprintf(status, cap, "skipped: %s lacks numpy/matplotlib/msgpack", py);
        fprintf(stderr, "analyze: figures skipped: %s cannot import numpy, matplotlib and msgpack; run "
                        "scripts/install-deps.sh (Debian python3-numpy python3-matplotlib python3-msgpack). "
                        "The msgpack results in %s are complete.\n", py, C->outdir);
        return 0;
    }
    if (sks__find_notebooks(nbdir, sizeof nbdir)) {
        snprintf(status, cap, "skipped: notebooks-out/make_report.py not found");
        const char *env = getenv("SKS_NOTEBOOKS_DIR");
        if (env && *env)
            fprintf(stderr, "analyze: figures skipped: SKS_NOTEBOOKS_DIR=%s holds no make_report.py\n", env);
        else
            fprintf(stderr, "analyze: figures skipped: notebooks-out/make_report.py not found; set "
                            "SKS_NOTEBOOKS_DIR to the notebooks-out folder of the sinkscope sources\n");
        return 0;
    }
    char script[4096 + 32];
    if (snprintf(script, sizeof script, "%s/make_report.py", nbdir) >= (int)sizeof script) {
        snprintf(status, cap, "skipped: notebooks folder path too long");
        return 0;
    }
    if (!C->quiet) fprintf(stderr, "analyze       figures and report: %s %s %s\n", py, script, dir);
    char *argv[] = {(char *)py, script, (char *)dir, NULL};
    int st = sks__spawn(argv, C->quiet);
    if (st != 0) {
        snprintf(status, cap, "failed: make_report.py exited with status %d", st);
        return sks_fail(SKS_EINTERNAL, "%s failed (status %d); the msgpack and JSON results in %s are complete",
                        script, st, C->outdir);
    }
    return 0;
}

/* ---- findings on the terminal ---------------------------------------------------------- */

/* What the four stages found: the trace's spike channels and sinks, lambda*, dominance
 * and cos(x, s*) of each analysed spike channel, the vocabulary spike fraction. */
static void sks__print_findings(FILE *f, const sks_analyze_result *R) {
    if (R->tr) sks_cli_print_trace_findings(f, R->tr, &R->to);
    sks_cli_print_spike_channels(f, R->spk.layers, R->spk.n_layers, 1);
    if (R->spk.no_quadform) fprintf(f, "spikes: %s\n", sks_spikes_no_quadform_note);
    char pb[32];
    if (R->vr)
        fprintf(f, "vocabulary: %d of %d tokens (%s) spike alone at position 0 (ratio >= %g x the typical median)%s",
                R->vr->n_spike, R->vr->n_tokens, sks_cli_pct(pb, sizeof pb, R->vr->n_spike, R->vr->n_tokens),
                R->vo.ratio, R->vr->top_channel >= 0 ? ", mostly in channel " : "\n");
    if (R->vr && R->vr->top_channel >= 0) fprintf(f, "%d\n", R->vr->top_channel);
}

/* ---- the pipeline ----------------------------------------------------------------------- */

int sks_cli_analyze_run(const char *model_path, const char *outdir, sks_analyze_opts *o, const sks_cli_analyze_flags *f) {
    sks__cli_run C = {outdir, f->quiet};
    sks_split sp;
    sks_dist_split_init(&sp, NULL);
    o->split = &sp;
    o->on_event = sks__on_event;
    o->report = f->no_plots ? NULL : sks__plots;
    o->ud = &C;
    if (f->quiet) sks_log_set_level(SKS_LOG_WARN);
    sks_analyze_result *r = NULL;
    int rc = sks_analyze_run(model_path, outdir, o, &r);
    if (r && r->summary_json && f->json) fputs(r->summary_json, stdout);
    if (!rc && !f->quiet && !f->json && sks_dist_rank() == 0) sks__print_findings(stdout, r);
    if (!rc && !f->quiet && sks_dist_rank() == 0)
        fprintf(stderr, "analyze: done in %.1f s: %s/summary.json%s\n", r->seconds, outdir, r->n_figures ? ", report.html" : "");
    sks_analyze_result_free(r);
    return rc;
}

/* ---- the command ------------------------------------------------------------------------ */

static const char sks__about[] =
    "Runs every analysis on MODEL with one set of thresholds and prompts and writes\n"
    "into DIR: trace.msgpack, spikes.msgpack, vocab.msgpack, sinks.msgpack, kv_map.json,\n"
    "summary.json, the figures fig_*.png and report.html (figures need /usr/bin/python3\n"
    "with numpy, matplotlib and msgpack: scripts/install-deps.sh).\n";

static const char sks__epilogue[] =
    "Environment: SKS_NOTEBOOKS_DIR (folder of make_report.py), SKS_PYTHON (interpreter,\n"
    "default /usr/bin/python3).\n";

int sks_cmd_analyze(int argc, char **argv) {
    sks_analyze_opts o;
    sks_analyze_opts_default(&o);
    sks_cli_analyze_flags fl = {0, 0, 0};
    sks_cli_rule rule = {o.rule, 0};
    const char *model = NULL, *out = NULL;
    int sample = -1, code;
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("-o, --output DIR", &out,
         "output folder (created if needed; the run writes DIR.partial\n"
         "and moves its files into DIR once complete, so a failed run\n"
         "leaves DIR as it was)"),
        SKS_OPT_STR("--out DIR", &out, NULL),
        SKS_OPT_STR("--prompt TEXT", &o.prompt,
         "input text (needs the model's tokenizer); default: the built-in\n"
         "texts of up to 64 tokens, or pseudo-random ids without a tokenizer"),
        SKS_OPT_STR("--prompts FILE", &o.prompts_file, "one input text per line (empty lines skipped; not cut)"),
        SKS_OPT_STR("--tokens IDS", &o.tokens, "input token ids, e.g. 1,450,3290 (overrides --prompt[s])"),
        SKS_OPT_STR("--tokenizer PATH", &o.tokenizer, "tokenizer file (default: found beside or inside MODEL)"),
        SKS_OPT_INT("--sample N", &sample, 0, 1 << 30,
         "vocabulary-sweep tokens: N sampled tokens; 0 = all of the\n"
         "vocabulary (default: all when V <= 8192, else a sample of 4096)"),
        SKS_OPT_NUM("--eps X", &o.eps, "sink head when alpha_0 > X (default 0.3)"),
        SKS_OPT_U64("--seed S", &o.seed, 0, 0x7fffffff, "pseudo-random prompts and vocabulary sample (default 1)"),
        SKS_OPT_STR("--text FILE", &o.text,
         "also measure what the spikes and sinks cost on this text:\n"
         "quant_risk.msgpack and kv_eval.msgpack (docs/cost.md)"),
        SKS_OPT_INT("--kv-window W", &o.kv_window, 1, 1 << 20, "kv-eval's window (default: a quarter of the context)"),
        SKS_OPT_FLAG("--no-plots", &fl.no_plots, "write the msgpack and JSON results only"),
        SKS_OPT_RULE(&rule),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "analyze", .opts = opts, .model = &model, .json = &fl.json, .quiet = &fl.quiet,
        .usage = "MODEL -o DIR [options]", .about = sks__about, .epilogue = sks__epilogue,
        .json_help = "print summary.json to stdout at the end", .quiet_help = "no progress on stderr"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (!out) return sks_cli_usage("analyze", "-o DIR is required");
    if (sks_cli_rule_done("analyze", &rule)) return 2;
    o.rule = rule.rule;
    if (sample >= 0) o.sample = sample == 0 ? -1 : sample;
    int rc = sks_analyze_opts_check(&o);
    if (rc) return sks_cli_fail("analyze", rc) + 1;
    sks_cli_progress_install(fl.quiet);
    rc = sks_cli_analyze_run(model, out, &o, &fl);
    return rc ? sks_cli_fail("analyze", rc) : 0;
}
