/* tokenizer_json.c - Hugging Face tokenizer.json (the `tokenizers` library format),
 * model.type "BPE" only:
 *   model.vocab          {piece: id}
 *   model.merges         ["a b", ...] or [["a", "b"], ...], best (rank 0) first
 *   model.byte_fallback, model.unk_token, model.ignore_merges
 *   added_tokens         [{id, content, special}], matched verbatim before the model
 *   normalizer, pre_tokenizer  run exactly for BPE (tokenizer_pre.c); for Unigram only
 *                        the SentencePiece-style Prepend "▁" / Replace " " -> "▁" / Metaspace
 *   model.fuse_unk, continuing_subword_prefix / end_of_word_suffix (refused when set)
 *   post_processor       TemplateProcessing: a special token before $A is BOS
 * Byte-level when a ByteLevel pre-tokenizer or decoder is present, else
 * SentencePiece-style over the normalized text (both use merge ranks as priority).
 */
#include "tokenizer_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

const char *sks__json_type(json_t *o) {
    json_t *ty = json_is_object(o) ? json_object_get(o, "type") : NULL;
    return json_is_string(ty) ? json_string_value(ty) : "";
}

/* The component itself, or its members when it is a Sequence. */
static void components(json_t *c, const char *list_key, json_t **items, size_t *n, size_t cap) {
    *n = 0;
    if (!json_is_object(c)) return;
    if (strcmp(sks__json_type(c), "Sequence") == 0) {
        json_t *arr = json_object_get(c, list_key);
        size_t i;
        json_t *x;
        json_array_foreach(arr, i, x) {
            if (*n < cap) items[(*n)++] = x;
        }
    } else {
        items[(*n)++] = c;
    }
}

int sks__json_flag(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

const char *sks__json_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int find_first(const sks_tokenizer *t, const char *const *names) {
    for (int k = 0; names[k]; k++) {
        int id = sks__tok_lookup(t, names[k], strlen(names[k]));
        if (id >= 0) return id;
    }
    return -1;
}

static int setup_algorithm(sks_tokenizer *t, json_t *root, json_t *model, const char *name) {
    json_t *items[32];
    size_t n;
    int byte_level = 0;
    /* decode details (the space symbol) and, for Unigram models, the SentencePiece-style
     * normalization: from the components' types */
    components(json_object_get(root, "pre_tokenizer"), "pretokenizers", items, &n, 32);
    int metaspace = 0, prefix = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ty = sks__json_type(items[i]);
        if (strcmp(ty, "ByteLevel") == 0) {
            byte_level = 1;
        } else if (strcmp(ty, "Metaspace") == 0) {
            metaspace = 1;
            const char *scheme = sks__json_str(items[i], "prepend_scheme");
            prefix = scheme ? (strcmp(scheme, "never") == 0 ? 0 : strcmp(scheme, "first") == 0 ? 2 : 1)
                            : sks__json_flag(items[i], "add_prefix_space", 1);
        }
    }
    json_t *dec = json_object_get(root, "decoder");
    components(dec, "decoders", items, &n, 32);
    for (size_t i = 0; i < n; i++)
        if (strcmp(sks__json_type(items[i]), "ByteLevel") == 0) byte_level = 1;
    int replace = 0;
    components(json_object_get(root, "normalizer"), "normalizers", items, &n, 32);
    for (size_t i = 0; i < n; i++) {
        const char *ty = sks__json_type(items[i]);
        if (strcmp(ty, "Prepend") == 0) {
            const char *p = sks__json_str(items[i], "prepend");
            if (p && strcmp(p, "\xe2\x96\x81") == 0) prefix = 1;
        } else if (strcmp(ty, "Replace") == 0) {
            json_t *pat = json_object_get(items[i], "pattern");
            const char *from = json_is_object(pat) ? sks__json_str(pat, "String") : NULL;
            const char *to = sks__json_str(items[i], "content");
            if (from && to && strcmp(from, " ") == 0 && strcmp(to, "\xe2\x96\x81") == 0) replace = 1;
        }
    }
    int unigram = strcmp(sks__json_type(model), "Unigram") == 0;
    t->unigram = unigram;
    t->use_merges = !unigram;
    t->ignore_merges = sks__json_flag(model, "ignore_merges", 0);
    t->fuse_unk = sks__json_flag(model, "fuse_unk", 0);
    if (!unigram) {
        /* BPE: the normalizer and pre-tokenizer run exactly (tokenizer_pre.c) */
        static const char *const word_affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
        for (int k = 0; k < 2; k++) {
            const char *a = sks__json_str(model, word_affixes[k]);
            if (a && a[0])
                return sks_fail(SKS_EUNSUPPORTED, "%s: model.%s \"%s\" is not supported", name, word_affixes[k], a);
        }
        int rc = sks__textproc_from_json(json_object_get(root, "normalizer"), json_object_get(root, "pre_tokenizer"),
                                         name, &t->proc);
        if (rc) return rc;
    }
    if (byte_level && !unigram) {
        t->kind = "hf-bytelevel";
        t->byte_level = 1;
        t->byte_fallback = 0;
        t->add_dummy_prefix = 0;
    } else {
        t->kind = unigram ? "hf-unigram" : "hf-bpe";
        t->byte_fallback = sks__json_flag(model, "byte_fallback", 0);
        t->add_dummy_prefix = prefix;
        if (!metaspace && !replace) memcpy(t->space, " ", 2);
    }
    t->remove_extra_ws = 0;
    return 0;
}

int sks__tok_read_hf_json(const char *buf, size_t len, const char *name, sks_tokenizer **out) {
    *out = NULL;
    json_error_t err;
    json_t *root = json_loadb(buf, len, 0, &err);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: invalid JSON at line %d: %s", name, err.line, err.text);
    int rc = 0;
    sks_tokenizer *t = NULL;
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    const char *mtype = sks__json_str(model, "type");
    if (!json_is_object(model)) {
        rc = sks_fail(SKS_EFORMAT, "%s: model: missing (not a tokenizer.json?)", name);
        goto done;
    }
    int unigram = mtype && strcmp(mtype, "Unigram") == 0;
    if (!unigram && (mtype ? strcmp(mtype, "BPE") != 0 : !json_is_array(merges))) {
        rc = sks_fail(SKS_EUNSUPPORTED, "%s: model.type \"%s\": only BPE and Unigram are supported", name,
                      mtype ? mtype : "?");
        goto done;
    }
    if (unigram ? !json_is_array(vocab) : !json_is_object(vocab) || !json_is_array(merges)) {
        rc = sks_fail(SKS_EFORMAT, "%s: model.vocab must be %s", name,
                      unigram ? "an array of [piece, score] (Unigram)" : "an object and model.merges an array (BPE)");
        goto done;
    }
    /* the vocabulary size is the largest id + 1 over vocab and added tokens */
    json_int_t maxid = unigram ? (json_int_t)json_array_size(vocab) - 1 : -1;
    const char *key;
    json_t *val;
    size_t i;
    json_array_foreach(unigram ? vocab : NULL, i, val) {
        if (!json_is_array(val) || json_array_size(val) != 2 || !json_is_string(json_array_get(val, 0)) ||
            !json_is_number(json_array_get(val, 1)) || i >= (1 << 26)) {
            rc = sks_fail(SKS_EFORMAT, "%s: model.vocab[%zu]: want [piece, score]", name, i);
            goto done;
        }
    }
    json_object_foreach(unigram ? NULL : vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 26)) {
            rc = sks_fail(SKS_EFORMAT, "%s: model.vocab[\"%.40s\"]: id must be an integer in [0, 2^26)", name, key);
            goto done;
        }
        if (json_integer_value(val) > maxid) maxid = json_integer_value(val);
    }
    json_array_foreach(added, i, val) {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 26) ||
            !json_is_string(json_object_get(val, "content"))) {
            rc = sks_fail(SKS_EFORMAT, "%s: added_tokens[%zu]: needs an integer id in [0, 2^26) and a content string",
                          name, i);
            goto done;
        }
        if (json_integer_value(id) > maxid) maxid = json_integer_value(id);
    }
    if (maxid < 0) {
        rc = sks_fail(SKS_EFORMAT, "%s: model.vocab: empty", name);
        goto done;
    }
    rc = sks__tok_new("hf-bpe", (int)maxid + 1, &t);
    if (rc) goto done;
    int byte_fallback = sks__json_flag(model, "byte_fallback", 0);
    json_array_foreach(unigram ? vocab : NULL, i, val) {
        const char *pc = json_string_value(json_array_get(val, 0));
        size_t kl = strlen(pc);
        int type = SKS__PT_NORMAL;
        if (byte_fallback && kl == 6 && memcmp(pc, "<0x", 3) == 0 && pc[5] == '>') type = SKS__PT_BYTE;
        rc = sks__tok_set_piece(t, (int)i, pc, kl, (float)json_number_value(json_array_get(val, 1)), type);
        if (rc) {
            rc = sks_fail(rc, "%s: model.vocab[%zu]: %s", name, i, sks_last_error());
            goto done;
        }
    }
    json_object_foreach(unigram ? NULL : vocab, key, val) {
        size_t kl = strlen(key);
        int type = SKS__PT_NORMAL;
        if (byte_fallback && kl == 6 && memcmp(key, "<0x", 3) == 0 && key[5] == '>') type = SKS__PT_BYTE;
        rc = sks__tok_set_piece(t, (int)json_integer_value(val), key, kl, 0.0f, type);
        if (rc) {
            rc = sks_fail(rc, "%s: model.vocab[\"%.40s\"]: %s", name, key, sks_last_error());
            goto done;
        }
    }
    json_array_foreach(added, i, val) {
        const char *c = json_string_value(json_object_get(val, "content"));
        int id = (int)json_integer_value(json_object_get(val, "id"));
        int type = sks__json_flag(val, "special", 0) ? SKS__PT_CONTROL : SKS__PT_USER;
        rc = sks__tok_set_piece(t, id, c, strlen(c), 0.0f, type);
        if (rc) {
            rc = sks_fail(rc, "%s: added_tokens[%zu]: %s", name, i, sks_last_error());
            goto done;
        }
    }
    rc = setup_algorithm(t, root, model, name);
    if (!rc) rc = sks__tok_finish(t, name);
    if (rc) goto done;
    /* added tokens split the text before the model sees it */
    json_array_foreach(added, i, val) {
        int id = (int)json_integer_value(json_object_get(val, "id"));
        if (t->plen[id] == 0) continue;
        int *l = realloc(t->verbatim, ((size_t)t->n_verbatim + 1) * sizeof *l);
        if (!l) {
            rc = sks_fail(SKS_ENOMEM, "%s: out of memory", name);
            goto done;
        }
        t->verbatim = l;
        t->verbatim[t->n_verbatim++] = id;
    }
    const char *unk = sks__json_str(model, "unk_token");
    json_t *unk_id = json_object_get(model, "unk_id");
    if (unk) t->unk = sks__tok_lookup(t, unk, strlen(unk));
    else if (json_is_integer(unk_id) && json_integer_value(unk_id) >= 0 && json_integer_value(unk_id) < t->n)
        t->unk = (int)json_integer_value(unk_id);
    if (t->unk >= 0) t->type[t->unk] = SKS__PT_UNKNOWN; /* decodes as its piece, never merged into */
    /* BOS: the special token that TemplateProcessing puts before $A; else by name */
    json_t *pp = json_object_get(root, "post_processor");
    json_t *pitems[8];
    size_t np;
    components(pp, "processors", pitems, &np, 8);
    for (size_t k = 0; k < np && t->bos < 0; k++) {
        json_t *single = json_object_get(pitems[k], "single");
        json_t *first = json_array_get(single, 0);
        json_t *st = json_object_get(first, "SpecialToken");
        const char *sid = sks__json_str(st, "id");
        if (sid) t->bos = sks__tok_lookup(t, sid, strlen(sid));
    }
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>", NULL};
    if (t->bos < 0) t->bos = find_first(t, bos_names);
    t->eos = find_first(t, eos_names);
    if (unigram) goto done;
    /* merges, rank = position */
    rc = sks__tok_merges_reserve(t, json_array_size(merges));
    if (rc) goto done;
    json_array_foreach(merges, i, val) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (json_is_string(val)) {
            const char *s = json_string_value(val);
            size_t l = strlen(s);
            const char *sp = l > 1 ? strchr(s + 1, ' ') : NULL;
            if (sp) {
                a = s;
                al = (size_t)(sp - s);
                b = sp + 1;
                bl = l - al - 1;
            }
        } else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) {
            a = json_string_value(json_array_get(val, 0));
            b = json_string_value(json_array_get(val, 1));
            al = strlen(a);
            bl = strlen(b);
        }
        if (!a) {
            rc = sks_fail(SKS_EFORMAT, "%s: model.merges[%zu]: neither \"a b\" nor [\"a\", \"b\"]", name, i);
            goto done;
        }
        if (i > INT32_MAX) break;
        rc = sks__tok_add_merge(t, a, al, b, bl, (int)i);
        if (rc < 0) goto done;
        rc = 0;
    }
done:
    json_decref(root);
    if (rc) {
        sks_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
