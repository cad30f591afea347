/* fuzz-config.c - libFuzzer target for the JSON side files of a Hugging Face model
 * directory: config.json (both config styles, through sks__config_parse from memory)
 * and model.safetensors.index.json (through sks_model_open on a directory, the only
 * entry point of the index reader).
 * Input: config bytes, optionally followed by a NUL and index bytes. With an index,
 * the fuzzer writes config.json, model.safetensors.index.json and one small valid
 * shard (shard.safetensors, tensor model.embed_tokens.weight) into a private temporary
 * directory and opens it: every outcome must be a clean error or a valid model. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loaders/formats_internal.h"

static char sks__dir[256];

static int sks__put(const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", sks__dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    fclose(f);
    return w == n ? 0 : -1;
}

static int sks__setup(void) {
    if (sks__dir[0]) return 0;
    const char *tmp = getenv("TMPDIR");
    snprintf(sks__dir, sizeof sks__dir, "%s/sks-fuzz-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(sks__dir)) return -1;
    static const char hdr[] = "{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],"
                              "\"data_offsets\":[0,32]}}";
    uint8_t img[8 + sizeof hdr - 1 + 32];
    uint64_t n = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)(n >> (8 * i));
    memcpy(img + 8, hdr, sizeof hdr - 1);
    memset(img + 8 + sizeof hdr - 1, 0, 32);
    return sks__put("shard.safetensors", img, sizeof img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sks_log_set_level(-1);
    const uint8_t *nul = memchr(data, 0, size);
    size_t clen = nul ? (size_t)(nul - data) : size;
    sks_arch a;
    memset(&a, 0, sizeof a);
    if (sks__config_parse((const char *)data, clen, "fuzz/config.json", &a) == 0 && sks_arch_validate(&a) != 0)
        __builtin_trap(); /* an accepted config is a valid architecture */
    if (!nul || sks__setup()) return 0;
    if (sks__put("config.json", data, clen) || sks__put("model.safetensors.index.json", nul + 1, size - clen - 1))
        return 0;
    sks_model *m = NULL;
    int rc = sks_model_open(sks__dir, &m);
    if (rc == 0) {
        if (!m || sks_model_arch(m)->n_layers < 1) __builtin_trap();
        sks_model_close(m);
    } else if (m) {
        __builtin_trap();
    }
    return 0;
}
