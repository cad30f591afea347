/* text.c - a text file as token ids, for the commands that measure perplexity. */
#include "cli.h"
#include "../loaders/sks_tokenizer.h"

#include <stdlib.h>

int sks_cli_text_ids(const sks_model *m, const char *tok_path, const char *text_path, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    FILE *fp = fopen(text_path, "rb");
    if (!fp) return sks_fail(SKS_EIO, "%s: cannot open text file", text_path);
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + len, 1, cap - len, fp)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = cap > ((size_t)1 << 30) ? NULL : realloc(buf, 2 * cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    int err = ferror(fp);
    fclose(fp);
    if (!buf) return sks_fail(SKS_ENOMEM, "%s: text file too large (1 GiB at most) or out of memory", text_path);
    if (err) {
        free(buf);
        return sks_fail(SKS_EIO, "%s: read error", text_path);
    }
    buf[len] = 0;
    sks_tokenizer *tok = NULL;
    int rc = sks_tokenizer_open_for_model(m, tok_path, &tok);
    if (!rc) rc = sks_tokenizer_encode(tok, buf, 1, ids, n);
    sks_tokenizer_free(tok);
    free(buf);
    if (!rc && *n < 2) {
        free(*ids);
        *ids = NULL;
        rc = sks_fail(SKS_EARG, "%s: the text encodes to %d token(s); at least 2 are needed", text_path, *n);
    }
    return rc;
}
