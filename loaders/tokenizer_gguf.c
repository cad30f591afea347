/* tokenizer_gguf.c - the vocabulary embedded in a GGUF file (ggml docs/gguf.md,
 * "Tokenizer"):
 *   tokenizer.ggml.model       "llama" (SentencePiece BPE by score) or "gpt2" (byte-level
 *                              BPE by merge rank)
 *   tokenizer.ggml.tokens      [string] pieces
 *   tokenizer.ggml.scores      [f32] (llama)
 *   tokenizer.ggml.token_type  [i32] SentencePiece types (1 normal .. 6 byte)
 *   tokenizer.ggml.merges      [string] "a b" (gpt2), best first
 *   tokenizer.ggml.pre         pre-tokenizer name (gpt2), e.g. "llama-bpe", "qwen2": the
 *                              normalizer and pre-tokenizer steps of tokenizer_pre_table.c
 *   tokenizer.ggml.{bos,eos,unknown}_token_id, add_space_prefix, remove_extra_whitespaces
 * The GGUF reader has bounds-checked every string and array at open.
 */
#include "tokenizer_internal.h"
#include "sks_gguf.h"

#include <stdlib.h>
#include <string.h>

static int get_int_key(const struct sks_gguf *g, const char *key, int64_t *out) {
    int64_t k = sks_gguf_find_key(g, key);
    if (k < 0) return 0;
    return sks_gguf_get_i64(g, k, out) == 0;
}

static int str_eq(const char *s, size_t l, const char *lit) { return l == strlen(lit) && memcmp(s, lit, l) == 0; }

int sks_tokenizer_open_gguf(const struct sks_gguf *g, const char *name, sks_tokenizer **out) {
    if (!g || !out) return sks_fail(SKS_EARG, "sks_tokenizer_open_gguf: NULL argument");
    *out = NULL;
    if (!name) name = "(gguf)";
    int64_t km = sks_gguf_find_key(g, "tokenizer.ggml.model");
    int64_t kt = sks_gguf_find_key(g, "tokenizer.ggml.tokens");
    if (km < 0 || kt < 0)
        return sks_fail(SKS_ENOTFOUND, "%s: no embedded vocabulary (tokenizer.ggml.model/tokens; use --tokenizer)", name);
    const char *model;
    size_t ml;
    if (sks_gguf_get_str(g, km, &model, &ml))
        return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.model: not a string", name);
    int gpt2 = str_eq(model, ml, "gpt2");
    if (!gpt2 && !str_eq(model, ml, "llama"))
        return sks_fail(SKS_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\": only \"llama\" and \"gpt2\" are supported",
                        name, (int)(ml > 64 ? 64 : ml), model);
    sks_gguf_type et;
    uint64_t n;
    if (sks_gguf_arr_info(g, kt, &et, &n) || et != SKS_GGUF_STRING)
        return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.tokens: not an array of strings", name);
    if (n == 0 || n > INT32_MAX / 2) return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.tokens: %llu entries", name,
                                                     (unsigned long long)n);
    int64_t ks = sks_gguf_find_key(g, "tokenizer.ggml.scores");
    int64_t ky = sks_gguf_find_key(g, "tokenizer.ggml.token_type");
    uint64_t ns = 0, ny = 0;
    if (ks >= 0 && (sks_gguf_arr_info(g, ks, &et, &ns) || ns != n))
        return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.scores: length differs from tokens (%llu)", name,
                        (unsigned long long)n);
    if (ky >= 0 && (sks_gguf_arr_info(g, ky, &et, &ny) || ny != n))
        return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.token_type: length differs from tokens (%llu)", name,
                        (unsigned long long)n);
    if (!gpt2 && ks < 0) return sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.scores: missing for a llama vocabulary", name);

    sks_tokenizer *t;
    int rc = sks__tok_new(gpt2 ? "gguf-gpt2" : "gguf-llama", (int)n, &t);
    if (rc) return rc;
    for (uint64_t i = 0; i < n && !rc; i++) {
        const char *s;
        size_t l;
        double score = 0;
        int64_t type = SKS__PT_NORMAL;
        rc = sks_gguf_arr_str(g, kt, i, &s, &l);
        if (!rc && ks >= 0) rc = sks_gguf_arr_f64(g, ks, i, &score);
        if (!rc && ky >= 0) rc = sks_gguf_arr_i64(g, ky, i, &type);
        if (rc) {
            rc = sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.*[%llu]: %s", name, (unsigned long long)i, sks_last_error());
            break;
        }
        if (type < SKS__PT_NORMAL || type > SKS__PT_BYTE) type = SKS__PT_NORMAL;
        rc = sks__tok_set_piece(t, (int)i, s, l, (float)score, (int)type);
        if (rc) rc = sks_fail(rc, "%s: tokenizer.ggml.tokens[%llu]: %s", name, (unsigned long long)i, sks_last_error());
    }
    int64_t v;
    if (!rc) {
        if (get_int_key(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 && v < (int64_t)n) t->bos = (int)v;
        if (get_int_key(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 && v < (int64_t)n) t->eos = (int)v;
        if (get_int_key(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 && v < (int64_t)n) t->unk = (int)v;
        if (gpt2) {
            t->byte_level = 1;
            t->use_merges = 1;
            t->byte_fallback = 0;
            t->add_dummy_prefix = 0;
            /* the pre-tokenizer of the family (tokenizer_pre_table.c); without the key,
             * llama.cpp's "default" steps, with a warning */
            int64_t kp = sks_gguf_find_key(g, "tokenizer.ggml.pre");
            const char *pre = "default";
            size_t pl = 7;
            if (kp < 0) {
                sks_log(SKS_LOG_WARN, "%s: %s: no tokenizer.ggml.pre; using the \"default\" pre-tokenizer", __func__,
                        name);
            } else if (sks_gguf_get_str(g, kp, &pre, &pl)) {
                rc = sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.pre: not a string", name);
            }
            if (!rc) rc = sks__textproc_from_gguf_pre(pre, pl, name, &t->proc, &t->ignore_merges);
        } else {
            t->add_dummy_prefix = 1;
            t->remove_extra_ws = 0;
            if (get_int_key(g, "tokenizer.ggml.add_space_prefix", &v)) t->add_dummy_prefix = v != 0;
            if (get_int_key(g, "tokenizer.ggml.remove_extra_whitespaces", &v)) t->remove_extra_ws = v != 0;
        }
        if (!rc) rc = sks__tok_finish(t, name);
    }
    if (!rc && gpt2) {
        /* user-defined tokens are matched verbatim, as llama.cpp does without parse_special */
        for (int i = 0; i < t->n && !rc; i++) {
            if (t->type[i] != SKS__PT_USER || t->plen[i] == 0) continue;
            int *l = realloc(t->verbatim, ((size_t)t->n_verbatim + 1) * sizeof *l);
            if (!l) rc = sks_fail(SKS_ENOMEM, "%s: out of memory", name);
            else {
                t->verbatim = l;
                t->verbatim[t->n_verbatim++] = i;
            }
        }
        int64_t kg = sks_gguf_find_key(g, "tokenizer.ggml.merges");
        uint64_t nm = 0;
        if (!rc && (kg < 0 || sks_gguf_arr_info(g, kg, &et, &nm) || et != SKS_GGUF_STRING))
            rc = sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.merges: missing or not strings (gpt2 vocabulary)", name);
        if (!rc && nm > INT32_MAX / 4) rc = sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.merges: too many", name);
        if (!rc) rc = sks__tok_merges_reserve(t, (size_t)nm);
        for (uint64_t i = 0; i < nm && !rc; i++) {
            const char *s;
            size_t l;
            rc = sks_gguf_arr_str(g, kg, i, &s, &l);
            if (rc) {
                rc = sks_fail(SKS_EFORMAT, "%s: tokenizer.ggml.merges[%llu]: %s", name, (unsigned long long)i,
                              sks_last_error());
                break;
            }
            /* "a b": the separator is the first space after the first character (pieces
             * never hold ' ' in the byte-level alphabet) */
            const char *sp = l > 1 ? memchr(s + 1, ' ', l - 1) : NULL;
            if (!sp) continue;
            rc = sks__tok_add_merge(t, s, (size_t)(sp - s), sp + 1, l - (size_t)(sp - s) - 1, (int)i);
            if (rc > 0) rc = 0;
        }
    }
    if (rc) {
        sks_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
