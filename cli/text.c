/* text.c - the sequence of the commands that measure on a text (perplexity, quant-risk,
 * kv-eval): open the model, encode the text, run, write the result, print it. */
#include "cli.h"

#include <stdlib.h>

int sks_cli_text_parse(sks_cli_text_cmd *c, const sks_cli_opt *opts, int argc, char **argv, int *exit_code) {
    const sks_cli_cmd cmd = {.name = c->name, .usage = c->usage, .about = c->about, .epilogue = c->epilogue,
                             .opts = opts, .model = &c->model, .json = &c->json, .json_help = c->json_help,
                             .quiet = &c->quiet, .quiet_help = "no progress on stderr"};
    if (!sks_cli_parse(&cmd, argc, argv, exit_code)) return 0;
    if (c->text) return 1;
    *exit_code = sks_cli_usage(c->name, "give MODEL and --text FILE");
    return 0;
}

int sks_cli_text_run(sks_cli_text_cmd *c) {
    sks_cli_progress_install(c->quiet);
    sks_model *m = NULL;
    int32_t *ids = NULL;
    int n = 0, rc;
    if (sks_cli_open_model(c->name, c->model, &m)) return 1;
    if ((rc = sks_text_file_ids(m, c->tokenizer, c->text, &ids, &n)) || (rc = c->run(c, m, ids, n)) ||
        (c->output && (rc = c->write(c, m, c->output)))) {
        sks_cli_fail(c->name, rc);
    } else {
        c->print(c, m);
        if (c->output && !c->quiet) fprintf(stderr, "sinkscope %s: -> %s\n", c->name, c->output);
    }
    free(ids);
    sks_model_close(m);
    return rc ? 1 : 0;
}
