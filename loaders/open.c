/* open.c - sks_model_open: pick the format from the path and the file's magic. */
#define _POSIX_C_SOURCE 200809L
#include "model_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int sks__ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int sks__open_any(const char *path, sks_model **out);

/* A single-file format: the file mapped, then its opener (which owns the mapping). */
static int sks__open_mapped(const char *path, int (*open_fn)(const char *, void *, size_t, sks_model **),
                            sks_model **out) {
    void *addr;
    size_t size;
    int rc = sks__map_weights(path, &addr, &size);
    return rc ? rc : open_fn(path, addr, size, out);
}

int sks_model_open(const char *path, sks_model **out) {
    int rc = sks__open_any(path, out);
    if (!rc) sks_model_freeze(*out);
    return rc;
}

static int sks__open_any(const char *path, sks_model **out) {
    *out = NULL;
    sks_clear_error();
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return sks_fail(SKS_EIO, "%s: cannot open: %s", path ? path : "(null)", strerror(errno));
    if (S_ISDIR(st.st_mode)) return sks__open_safetensors(path, out);
    FILE *f = fopen(path, "rb");
    if (!f) return sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if ((got == 4 && memcmp(magic, "GGUF", 4) == 0) || sks__ends_with(path, ".gguf"))
        return sks__open_mapped(path, sks__open_gguf, out);
    if (sks__ends_with(path, ".safetensors")) return sks__open_safetensors(path, out);
    if (sks__ends_with(path, ".bin")) return sks__open_mapped(path, sks__open_llama2c, out);
    return sks_fail(SKS_EFORMAT,
                    "%s: unknown model format (want a directory, .safetensors, .gguf or llama2.c .bin)", path);
}
