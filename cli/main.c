/* main.c - `sinkscope` entry point: dispatch to subcommands. */
#include "cli.h"
#include "../dist/sks_dist.h"

#include "../linalg/sks_linalg.h"

#include <stdio.h>
#include <string.h>

#ifndef SKS_VERSION
#define SKS_VERSION "dev"
#endif

typedef struct {
    const char *name;
    sks_cmd_fn fn;
    const char *summary;
} sks__cmd;

#define SKS__ROW(name, fn, summary) {name, fn, summary},
static const sks__cmd sks__cmds[] = {SKS_CLI_COMMANDS(SKS__ROW)};
#undef SKS__ROW

static void sks__usage(FILE *f) {
    fprintf(f,
            "sinkscope %s - massive activations and attention sinks in transformer weights\n\n"
            "usage: sinkscope <command> [options]   (sinkscope <command> --help for details)\n\n"
            "commands:\n",
            SKS_VERSION);
    for (size_t i = 0; i < sizeof sks__cmds / sizeof sks__cmds[0]; i++)
        fprintf(f, "  %-12s %s\n", sks__cmds[i].name, sks__cmds[i].summary);
    fprintf(f,
            "\nMODEL is a Hugging Face directory (config.json + safetensors, sharded or not),\n"
            "a .safetensors file, a .gguf file or a llama2.c .bin checkpoint.\n"
            "Weights with NaN or Inf stop every command with the tensor's name; add\n"
            "--allow-nonfinite to analyse anyway (the affected tensors are listed in every output).\n"
            "Start with:  sinkscope demo -o demo-out\n\n"
            "Every command also takes --device cpu|cuda|auto (default cpu): where the S_k\n"
            "operator and the forward pass's weight GEMMs run (auto: cuda when the build has\n"
            "CUDA and a GPU is present; docs/linalg.md).\n");
}

/* Removes `--device X` / `--device=X` from argv (every command takes it) and selects
 * the backend row. Returns 0, or 2 after printing the error. */
static int sks__take_device(int *argc, char **argv) {
    const char *dev = NULL;
    int w = 1;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--device")) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "sinkscope: --device needs a value (cpu, cuda or auto)\n");
                return 2;
            }
            dev = argv[++i];
        } else if (!strncmp(argv[i], "--device=", 9)) {
            dev = argv[i] + 9;
        } else {
            argv[w++] = argv[i];
        }
    }
    *argc = w;
    argv[w] = NULL;
    if (!dev) return 0;
    const sks_qf_backend *be = NULL;
    if (sks_qf_backend_resolve(dev, &be)) {
        fprintf(stderr, "sinkscope: %s\n", sks_last_error());
        return 2;
    }
    sks_qf_backend_set_default(be);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        sks__usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        sks__usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("sinkscope %s (MPI %s)\n", SKS_VERSION, SKS_HAVE_MPI ? "enabled" : "disabled");
        return 0;
    }
    if (sks__take_device(&argc, argv)) return 2;
    if (argc < 2) {
        sks__usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof sks__cmds / sizeof sks__cmds[0]; i++)
        if (!strcmp(argv[1], sks__cmds[i].name)) {
            /* under mpirun: MPI_Init here, MPI_Finalize after the command (dist/dist.c) */
            sks_dist_init(&argc, &argv);
            /* commands that do not split their work run on rank 0 only */
            static const char *const split[] = {"spikes", "vocab-sweep", "sinks", "analyze"};
            int aware = 0;
            for (size_t k = 0; k < sizeof split / sizeof split[0]; k++) aware |= !strcmp(argv[1], split[k]);
            /* --allow-nonfinite is understood by every command (loaders/nonfinite.c) */
            int n = 1;
            for (int k = 1; k < argc; k++) {
                if (k > 1 && !strcmp(argv[k], "--allow-nonfinite")) sks_nonfinite_allow(1);
                else argv[n++] = argv[k];
            }
            argc = n;
            argv[argc] = NULL;
            int rc = aware || sks_dist_rank() == 0 ? sks__cmds[i].fn(argc - 1, argv + 1) : 0;
            for (int k = 0; k < sks_nonfinite_n_tensors() && sks_dist_rank() == 0; k++) {
                uint64_t cnt, tot;
                const char *name = sks_nonfinite_tensor(k, &cnt, &tot);
                fprintf(stderr, "sinkscope %s: warning: analysed with %llu NaN/Inf of %llu weights in %s\n", argv[1],
                        (unsigned long long)cnt, (unsigned long long)tot, name);
            }
            sks_dist_finalize();
            return rc;
        }
    fprintf(stderr, "sinkscope: unknown command '%s'\n\n", argv[1]);
    sks__usage(stderr);
    return 2;
}
