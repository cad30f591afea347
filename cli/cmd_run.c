/* cmd_run.c - `sinkscope run MODEL`: greedy generation, the forward pass end to end. */
#include "cli.h"
#include "../analysis/sks_forward.h"
#include "../loaders/sks_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const sks_tokenizer *tok;
    int prev;
} sks__stream;

/* print each generated token as soon as it is chosen */
static int sks__print_token(void *ud, int32_t id, int i) {
    (void)i;
    sks__stream *s = ud;
    char buf[256];
    fputs(sks_tokenizer_decode(s->tok, s->prev, id, buf, sizeof buf), stdout);
    fflush(stdout);
    s->prev = id;
    return 0;
}

static const char sks__usage[] =
    "MODEL [--prompt TEXT | --tokens IDS] [--generate N] [--ids]\n"
    "                           [--tokenizer PATH] [--no-stop]";

static const char sks__about[] =
    "Greedy generation (argmax at every step, KV cache) with the same f32 forward pass\n"
    "that every analysis uses. It is the quickest check that a model loads and computes\n"
    "correctly: a trained model should continue the prompt sensibly.\n";

static const char sks__epilogue[] =
    "The text goes to stdout; timing (tokens/s) goes to stderr.\n\n"
    "examples:\n"
    "  sinkscope run stories260K.bin --generate 64\n"
    "  sinkscope run model-dir --prompt \"The capital of France is\" --generate 16\n"
    "  sinkscope run model.gguf --tokens 1,450,7483 --generate 8 --ids\n";

int sks_cmd_run(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *tokens_arg = NULL, *tok_path = NULL;
    int n_gen = 64, print_ids = 0, no_stop = 0, rc = 0, ret = 1, code;
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("--prompt TEXT", &prompt, "text to continue; encoded with the model's tokenizer, BOS first"),
        SKS_OPT_STR("--tokens IDS", &tokens_arg,
                    "token ids instead of text, e.g. 1,403,407 (no BOS is added)\n"
                    "without --prompt and --tokens generation starts from BOS alone"),
        SKS_OPT_INT("--generate N", &n_gen, 0, 1 << 20, "number of new tokens (default 64)"),
        SKS_OPT_FLAG("--ids", &print_ids, "print the token ids (prompt, then generated) instead of text"),
        SKS_OPT_STR("--tokenizer PATH", &tok_path,
                    "tokenizer file (llama2.c .bin, SentencePiece .model, HF\n"
                    "tokenizer.json); default: the one beside the model or inside\n"
                    "the GGUF"),
        SKS_OPT_FLAG("--no-stop", &no_stop, "keep generating after the end-of-sequence token"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "run", .opts = opts, .model = &model_path, .usage = sks__usage, .about = sks__about, .epilogue = sks__epilogue};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if (prompt && tokens_arg) return sks_cli_usage("run", "give either --prompt or --tokens, not both");
    const int stop = !no_stop;
    sks_model *m = NULL;
    sks_tokenizer *tok = NULL;
    sks_forward *f = NULL;
    int32_t *ids = NULL, *out = NULL;
    int n_ids = 0;
    if (sks_cli_open_model("run", model_path, &m)) return 1;
    const sks_arch *ar = sks_model_arch(m);
    if (prompt || !print_ids) {
        rc = sks_tokenizer_open_for_model(m, tok_path, &tok);
        if (rc && prompt) {
            sks_cli_fail("run", rc);
            goto done;
        }
        if (rc) {
            fprintf(stderr, "sinkscope run: no tokenizer (%s); printing token ids\n", sks_last_error());
            print_ids = 1;
        }
    }
    if (prompt) {
        if ((rc = sks_tokenizer_encode(tok, prompt, 1, &ids, &n_ids))) {
            sks_cli_fail("run", rc);
            goto done;
        }
    } else if (tokens_arg) {
        if ((rc = sks_parse_ids(tokens_arg, &ids, &n_ids))) {
            sks_cli_fail("run", rc);
            goto done;
        }
    } else {
        ids = malloc(sizeof *ids);
        if (!ids) goto done;
        int bos = tok ? sks_tokenizer_bos(tok) : -1;
        ids[0] = bos >= 0 ? bos : (ar->bos_id >= 0 ? ar->bos_id : 1);
        n_ids = 1;
    }
    if (n_ids < 1) {
        fprintf(stderr, "sinkscope run: the prompt encodes to no tokens\n");
        goto done;
    }
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= ar->vocab_size) {
            fprintf(stderr, "sinkscope run: token id %d is outside the vocabulary [0, %d)\n", (int)ids[i],
                    ar->vocab_size);
            goto done;
        }
    if (ar->max_seq > 0 && n_ids + n_gen > ar->max_seq)
        fprintf(stderr, "sinkscope run: warning: %ld tokens exceed the model's context of %d\n", (long)(n_ids + n_gen),
                ar->max_seq);
    out = malloc((size_t)(n_gen + 1) * sizeof *out);
    if (!out || (rc = sks_forward_new(m, (int)(n_ids + n_gen), &f))) {
        sks_cli_fail("run", rc ? rc : SKS_ENOMEM);
        goto done;
    }
    int n_out = 0;
    sks__stream st = {tok, -1};
    char buf[256];
    if (!print_ids) {
        for (int i = 0; i < n_ids; i++) {
            fputs(sks_tokenizer_decode(tok, st.prev, ids[i], buf, sizeof buf), stdout);
            st.prev = ids[i];
        }
        fflush(stdout);
    }
    double t0 = sks_now();
    rc = sks_forward_generate_cb(f, ids, n_ids, (int)n_gen, stop, print_ids ? NULL : sks__print_token, &st, out,
                                 &n_out);
    double dt = sks_now() - t0;
    if (!print_ids) fputc('\n', stdout);
    if (rc) {
        sks_cli_fail("run", rc);
        goto done;
    }
    if (print_ids) {
        for (int i = 0; i < n_ids; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
        printf(" |");
        for (int i = 0; i < n_out; i++) printf(" %d", (int)out[i]);
        printf("\n");
    }
    fprintf(stderr, "sinkscope run: %d prompt + %d generated tokens in %.3f s (%.1f tokens/s)\n", n_ids, n_out, dt,
            dt > 0 ? (n_ids + n_out) / dt : 0.0);
    ret = 0;
done:
    sks_forward_free(f);
    free(out);
    free(ids);
    sks_tokenizer_free(tok);
    sks_model_close(m);
    return ret;
}
