/* cmd_synth.c - `sinkscope synth`: write a model of any shape with planted spikes and
 * sinks (analysis/sks_synth.h, docs/synth.md). */
#include "cli.h"
#include "../analysis/sks_synth.h"
#include "../analysis/sks_rule.h"
#include "../loaders/sks_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char sks__about[] =
    "Write a Hugging Face style model directory (config.json, safetensors, sharded with\n"
    "model.safetensors.index.json above --max-shard-bytes) whose weights are random at a\n"
    "realistic scale plus a planted mechanism: BOS at position 0 is steered by a layer-0\n"
    "head onto s*, the FFN of the step-up layer amplifies it quadratically into a few\n"
    "spike channels (S_c has the planted eigenpair lambda*, s*), a step-down FFN cancels\n"
    "it, and planted sink heads query the sparse normalised spike token. The ground truth\n"
    "goes to DIR/planted.json. The write streams a few MB at a time: a 7B checkpoint needs\n"
    "well under 1 GB of memory. Same seed, same bytes.\n";

static const char sks__epilogue[] =
    "example:\n"
    "  sinkscope synth --preset tiny -o tiny-model && sinkscope trace tiny-model ...\n"
    "  sinkscope synth --preset llama2-7b --dtype bf16 -o /big/disk/synth-7b\n";

/* The preset names, from the library's table. */
static void sks__presets_help(FILE *f) {
    fprintf(f, "\n--preset NAME is one of:");
    for (const char *const *n = sks_synth_preset_names(); *n; n++) fprintf(f, "%s %s", n == sks_synth_preset_names() ? "" : ",", *n);
    fprintf(f, "\n(tiny: d 64, 4 layers; demo: d 256, 8 layers; small: ~130M)\n");
}

/* sks_cli_fail without the library's own "synth: " prefix */
static int sks__synth_fail(int rc) {
    const char *msg = sks_last_error();
    if (!msg || !*msg) msg = sks_strerror(rc);
    if (!strncmp(msg, "synth: ", 7)) msg += 7;
    fprintf(stderr, "sinkscope synth: %s\n", msg);
    return 1;
}

static const char *const sks__formats[] = {"safetensors", "gguf", NULL};

static const char sks__usage[] =
    "(--preset NAME | --config FILE) -o DIR [--seed S] [--model-type T]\n"
    "                       [--format safetensors|gguf] [--dtype TYPE] [--max-shard-bytes N]\n"
    "                       [--json] [--quiet]";

int sks_cmd_synth(int argc, char **argv) {
    const char *preset = NULL, *config = NULL, *outdir = NULL, *dtype = "f32", *mtype = NULL;
    uint64_t seed = 1, maxshard = 0;
    int json = 0, quiet = 0, gguf = 0, code;
    const sks_cli_opt opts[] = {
        SKS_OPT_STR("--preset NAME", &preset, "a built-in shape (the list below)"),
        SKS_OPT_STR("--config FILE", &config,
                    "JSON with config.json keys (hidden_size, intermediate_size,\n"
                    "num_hidden_layers, num_attention_heads, num_key_value_heads,\n"
                    "head_dim, vocab_size, rms_norm_eps, rope_theta, rope_scaling,\n"
                    "tie_word_embeddings, model_type, bos_token_id, ...), an optional\n"
                    "\"preset\" to start from and an optional \"planted\" object\n"
                    "(docs/synth.md lists its keys)"),
        SKS_OPT_STR("--model-type T", &mtype,
                    "llama, mistral, qwen2, gemma2 or mixtral: the preset's sizes in\n"
                    "that family (gemma2: sandwich norms, GeGLU, (1 + w) norms, scaled\n"
                    "embeddings, softcaps; docs/synth.md)"),
        SKS_OPT_U64("--seed S", &seed, 0, (double)INT64_MAX, "random seed (default 1)"),
        SKS_OPT_CHOICE("--format F", &gguf, sks__formats,
                       "safetensors (default: config.json + safetensors) or gguf\n"
                       "(DIR/model.gguf with llama.cpp's names and metadata keys)"),
        SKS_OPT_STR("--dtype TYPE", &dtype,
                    "safetensors: f32 or bf16 (default f32). gguf: any type\n"
                    "sinkscope writes (f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k\n"
                    "q3_k q4_k q5_k q6_k q8_k iq4_nl iq4_xs tq1_0 tq2_0 mxfp4\n"
                    "iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq1_s iq1_m) or a\n"
                    "llama.cpp-like mix (q3_k_m q4_k_s q4_k_m q5_k_s q5_k_m);\n"
                    "round-to-nearest quantizers, not llama.cpp's (docs/gguf-types.md)"),
        SKS_OPT_U64("--max-shard-bytes N", &maxshard, 1, (double)INT64_MAX, "shard above N bytes (default 5000000000, as transformers)"),
        SKS_OPT_STR("-o, --output DIR", &outdir, "output directory (created if needed)"),
        SKS_OPT_END,
    };
    const sks_cli_cmd cmd = {
        .name = "synth", .more_help = sks__presets_help, .opts = opts, .json = &json, .quiet = &quiet,
        .usage = sks__usage, .about = sks__about, .epilogue = sks__epilogue,
        .json_help = "print a JSON summary on stdout", .quiet_help = "no progress bar"};
    if (!sks_cli_parse(&cmd, argc, argv, &code)) return code;
    if ((!preset) == (!config) || !outdir)
        return sks_cli_usage("synth", "give exactly one of --preset or --config, and -o DIR");
    sks_dtype dt = SKS_DT_F32;
    if (gguf) {
        sks_gguf_scheme sc;
        if (sks_gguf_scheme_parse(dtype, &sc)) return sks__synth_fail(SKS_EARG);
    } else if (!strcmp(dtype, "f32")) {
        dt = SKS_DT_F32;
    } else if (!strcmp(dtype, "bf16")) {
        dt = SKS_DT_BF16;
    } else {
        fprintf(stderr, "sinkscope synth: --dtype %s (want f32 or bf16)\n", dtype);
        return 2;
    }
    sks_synth_config cfg;
    int rc;
    if (preset) {
        rc = sks_synth_preset(preset, &cfg);
    } else {
        char *text;
        if (!(rc = sks_read_text_file(config, &text, NULL))) {
            rc = sks_synth_config_from_json(text, config, &cfg);
            free(text);
        }
    }
    if (!rc && mtype) rc = sks_synth_set_model_type(&cfg, mtype);
    if (rc) return sks__synth_fail(rc);
    sks_synth *s = NULL;
    if ((rc = sks_synth_new(&cfg, (uint64_t)seed, &s))) return sks__synth_fail(rc);
    sks_cli_progress_install(quiet);
    double t0 = sks_now();
    rc = gguf ? sks_synth_write_gguf(s, outdir, dtype) : sks_synth_write(s, outdir, dt, (uint64_t)maxshard);
    if (rc) {
        sks_synth_free(s);
        return sks__synth_fail(rc);
    }
    const sks_arch *a = sks_synth_arch(s);
    const sks_synth_planted *p = sks_synth_get_planted(s);
    uint64_t params = sks_synth_n_params(s);
    uint64_t bytes = params * (dt == SKS_DT_BF16 ? 2 : 4);
    if (gguf) {
        char gp[4096];
        struct stat st;
        snprintf(gp, sizeof gp, "%s/model.gguf", outdir);
        bytes = stat(gp, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    double secs = sks_now() - t0;
    if (json) {
        printf("{\"dir\": \"%s\", \"family\": \"%s\", \"n_params\": %llu, \"bytes\": %llu, \"seconds\": %.2f, "
               "\"spike_channels\": [",
               outdir, a->family, (unsigned long long)params, (unsigned long long)bytes, secs);
        for (int c = 0; c < p->n_spike; c++) printf("%s%d", c ? ", " : "", p->channels[c]);
        printf("], \"step_up_layer\": %d, \"n_sink_heads\": %d}\n", p->step_up_layer, p->n_sink);
    } else {
        fprintf(stderr, "sinkscope synth: wrote %s (%s, %llu params, %.2f GB %s) in %.1f s\n", outdir, a->family,
                (unsigned long long)params, bytes / 1e9, dtype, secs);
        fprintf(stderr, "  planted: spike channels");
        for (int c = 0; c < p->n_spike; c++) fprintf(stderr, " %d", p->channels[c]);
        fprintf(stderr, " at token 0, step-up FFN of layer %d, ", p->step_up_layer);
        if (p->step_down_layer < a->n_layers) fprintf(stderr, "step-down FFN of layer %d, ", p->step_down_layer);
        fprintf(stderr, "%d sink heads (see %s/planted.json)\n", p->n_sink, outdir);
    }
    sks_synth_free(s);
    return 0;
}
