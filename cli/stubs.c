/* stubs.c - weak placeholders for subcommands not built yet; a real cmd_<name>.c
 * overrides them. They fail loudly: nothing here pretends to work. */
#include "cli.h"

#include <stdio.h>

#define SKS__STUB(fn, name)                                                                     \
    __attribute__((weak)) int fn(int argc, char **argv) {                                       \
        (void)argc;                                                                              \
        (void)argv;                                                                              \
        fprintf(stderr, "sinkscope %s: not available in this build\n", name);                   \
        return 3;                                                                                \
    }

SKS__STUB(sks_cmd_inspect, "inspect")
SKS__STUB(sks_cmd_run, "run")
SKS__STUB(sks_cmd_trace, "trace")
SKS__STUB(sks_cmd_synth, "synth")
SKS__STUB(sks_cmd_demo, "demo")
SKS__STUB(sks_cmd_spikes, "spikes")
SKS__STUB(sks_cmd_vocab_sweep, "vocab-sweep")
SKS__STUB(sks_cmd_sinks, "sinks")
SKS__STUB(sks_cmd_analyze, "analyze")
