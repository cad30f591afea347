/* prompts.c - where the commands' prompts and texts come from: token id lists, prompt
 * files, text files, and the one prompt set (sks_rule.h) when none is given. */
#define _POSIX_C_SOURCE 200809L
#include "sks_rule.h"
#include "../loaders/sks_tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sks_parse_ids(const char *s, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return sks_fail(SKS_ENOMEM, "out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return sks_fail(SKS_EARG, "--tokens: bad token id near '%s'", p);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return sks_fail(SKS_ENOMEM, "out of memory");
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (k == 0) {
        free(v);
        return sks_fail(SKS_EARG, "--tokens: empty list");
    }
    *ids = v;
    *n = (int)k;
    return 0;
}

void sks_lines_free(char **lines, int n) {
    for (int i = 0; lines && i < n; i++) free(lines[i]);
    free(lines);
}

int sks_read_lines(const char *path, char ***lines, int *n) {
    *lines = NULL;
    *n = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) return sks_fail(SKS_EIO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL, **v = NULL;
    size_t cap = 0;
    int k = 0, kcap = 0, rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        if (k == kcap) {
            kcap = kcap ? 2 * kcap : 8;
            char **nv = realloc(v, (size_t)kcap * sizeof *v);
            if (!nv) {
                rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
                break;
            }
            v = nv;
        }
        if (!(v[k] = strdup(line))) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", path);
            break;
        }
        k++;
    }
    free(line);
    fclose(fp);
    if (!rc && k == 0) rc = sks_fail(SKS_EARG, "%s: no prompt (every line is empty)", path);
    if (rc) {
        sks_lines_free(v, k);
        return rc;
    }
    *lines = v;
    *n = k;
    return 0;
}

int sks_read_text_file(const char *path, char **text, size_t *len_out) {
    *text = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sks_fail(SKS_EIO, "%s: cannot open text file", path);
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
    if (!buf) return sks_fail(SKS_ENOMEM, "%s: text file too large (1 GiB at most) or out of memory", path);
    if (err) {
        free(buf);
        return sks_fail(SKS_EIO, "%s: read error", path);
    }
    buf[len] = 0;
    *text = buf;
    if (len_out) *len_out = len;
    return 0;
}

int sks_text_file_ids(const sks_model *m, const char *tok_path, const char *text_path, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    char *buf;
    int rc = sks_read_text_file(text_path, &buf, NULL);
    if (rc) return rc;
    sks_tokenizer *tok = NULL;
    rc = sks_tokenizer_open_for_model(m, tok_path, &tok);
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

void sks_prompt_set_free(sks_prompt_set *p) {
    sks_prompts_free(p->ids, p->lens, p->n);
    memset(p, 0, sizeof *p);
}

/* Prompts of token ids: sequences separated by ';' or new lines (blank ones skipped),
 * each of at least 2 ids inside the vocabulary. */
static int sks__prompt_ids(const sks_model *m, const char *text, sks_prompt_set *p) {
    const int V = sks_model_arch(m)->vocab_size;
    char *buf = strdup(text), *save = NULL;
    int rc = buf ? 0 : sks_fail(SKS_ENOMEM, "prompts: out of memory"), cap = 0;
    for (char *seq = buf ? strtok_r(buf, ";\n", &save) : NULL; seq && !rc; seq = strtok_r(NULL, ";\n", &save)) {
        for (char *q = seq; *q; q++)
            if (*q == '\t' || *q == '\r') *q = ' ';
        if (!seq[strspn(seq, " ")]) continue;
        if (p->n == cap) {
            cap = cap ? 2 * cap : 4;
            int32_t **ni = realloc(p->ids, (size_t)cap * sizeof *ni);
            if (ni) p->ids = ni;
            int *nl = realloc(p->lens, (size_t)cap * sizeof *nl);
            if (nl) p->lens = nl;
            if (!ni || !nl) {
                rc = sks_fail(SKS_ENOMEM, "prompts: out of memory");
                break;
            }
        }
        int32_t *ids;
        int n;
        if ((rc = sks_parse_ids(seq, &ids, &n))) break;
        p->ids[p->n] = ids;
        p->lens[p->n++] = n;
        for (int i = 0; i < n && !rc; i++)
            if (ids[i] >= V) rc = sks_fail(SKS_EARG, "--tokens: id %d outside the vocabulary (%d)", ids[i], V);
        if (!rc && n < 2) rc = sks_fail(SKS_EARG, "--tokens: need at least 2 tokens");
    }
    if (!rc && p->n == 0) rc = sks_fail(SKS_EARG, "--tokens: empty list");
    free(buf);
    return rc;
}

/* The user's texts (one, or the lines of a file), not cut. */
static int sks__prompt_texts(const sks_tokenizer *tok, const char *what, char *const *texts, int n,
                             sks_prompt_set *p) {
    if (!tok) return sks_fail(SKS_ENOTFOUND, "%s: the model has no tokenizer (use --tokens or --tokenizer)", what);
    p->ids = calloc((size_t)n, sizeof *p->ids);
    p->lens = calloc((size_t)n, sizeof *p->lens);
    if (!p->ids || !p->lens) return sks_fail(SKS_ENOMEM, "prompts: out of memory");
    p->n = n;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = sks_tokenizer_encode(tok, texts[i], 1, &p->ids[i], &p->lens[i]);
    return rc;
}

int sks_prompt_set_make(const sks_model *m, const sks_tokenizer *tok, const sks_prompt_source *src, uint64_t seed,
                        sks_prompt_set *p) {
    memset(p, 0, sizeof *p);
    int rc;
    const char *what;
    if (src->tokens) {
        rc = sks__prompt_ids(m, src->tokens, p);
        what = "--tokens";
    } else if (src->tokens_file) {
        char *text;
        what = "--tokens-file";
        if (!(rc = sks_read_text_file(src->tokens_file, &text, NULL))) {
            rc = sks__prompt_ids(m, text, p);
            free(text);
        }
    } else if (src->prompt) {
        char *one = (char *)src->prompt;
        rc = sks__prompt_texts(tok, "--prompt", &one, 1, p);
        what = "--prompt";
    } else if (src->prompts_file) {
        char **lines;
        int n;
        what = src->prompts_file;
        if (!(rc = sks_read_lines(src->prompts_file, &lines, &n))) {
            rc = sks__prompt_texts(tok, what, lines, n, p);
            sks_lines_free(lines, n);
        }
    } else {
        rc = sks_default_prompts(m, tok, seed, &p->ids, &p->lens, &p->n);
        what = tok ? "built-in texts" : "pseudo-random ids (no tokenizer)";
    }
    if (!rc) rc = sks_prompts_check(m, p->n, (const int32_t *const *)p->ids, p->lens, what);
    if (rc) {
        sks_prompt_set_free(p);
        return rc;
    }
    snprintf(p->source, sizeof p->source, "%s", what == src->prompts_file ? "--prompts" : what);
    return 0;
}
