/* test-tokenizer-refs.c - our ids against the Hugging Face `tokenizers` library's, exactly.
 *
 * test/data/tokenizers/ holds small BPE tokenizers trained by the library with the
 * normalizer and pre-tokenizer of real families, and the ids the library gives for a
 * few hundred hard strings (expected.json; scripts/make-tokenizer-refs.py made both).
 * Every string must encode to exactly those ids
 *   - through the tokenizer.json (normalizer and pre_tokenizer read from the file), and
 *   - through a GGUF vocabulary built here from the same pieces and merges, with the
 *     family's tokenizer.ggml.pre name (the steps then come from our table).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "loaders/sks_tokenizer.h"
#include "loaders/tokenizer_internal.h" /* sks__gguf_pre_name */
#include "loaders/formats_internal.h"   /* sks__gguf_parse: a metadata-only GGUF image */

#define DATA SKS_SOURCE_DIR "/test/data/tokenizers/"

static json_t *load(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, DATA "%s", rel);
    return sks_test_json(path);
}

static void print_ids(const sks_tokenizer *t, const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "    %s (%d):", label, n);
    for (int i = 0; i < n; i++) {
        const char *p = sks_tokenizer_piece(t, ids[i]);
        fprintf(stderr, " %d'%s'", ids[i], p ? p : "?");
    }
    fprintf(stderr, "\n");
}

/* Encode every string and compare with the family's ids; returns the number of strings
 * that differ (each printed, at most 5 per family). */
static int check_family(const sks_tokenizer *t, const char *family, const char *path_kind, json_t *strings,
                        json_t *ids_all, json_t *added, int check_decode) {
    int bad = 0;
    size_t i;
    json_t *s;
    json_array_foreach(strings, i, s) {
        const char *text = json_string_value(s);
        json_t *want = json_array_get(ids_all, i);
        int32_t *ids = NULL;
        int n = 0;
        int rc = sks_tokenizer_encode(t, text, 0, &ids, &n);
        int nw = (int)json_array_size(want), same = rc == 0 && n == nw;
        int32_t *w = malloc(((size_t)nw + 1) * sizeof *w);
        assert_non_null(w);
        for (int k = 0; k < nw; k++) {
            w[k] = (int32_t)json_integer_value(json_array_get(want, (size_t)k));
            if (same && ids[k] != w[k]) same = 0;
        }
        size_t a;
        json_t *at;
        int has_special = 0; /* special tokens decode to "" */
        json_array_foreach(added, a, at) has_special |= strstr(text, json_string_value(json_object_get(at, "content"))) != NULL;
        if (same && check_decode && !has_special) {
            /* byte-level without a normalizer: the pieces decode back to the text */
            char buf[256], *back = calloc(1, (size_t)n * 256 + 1);
            assert_non_null(back);
            for (int k = 0; k < n; k++) strcat(back, sks_tokenizer_decode(t, k ? ids[k - 1] : -1, ids[k], buf, sizeof buf));
            if (strcmp(back, text) != 0) {
                fprintf(stderr, "%s (%s): string %zu does not decode back\n", family, path_kind, i);
                same = 0;
            }
            free(back);
        }
        if (!same) {
            if (bad < 5) {
                char *q = json_dumps(s, JSON_ENCODE_ANY);
                fprintf(stderr, "%s (%s): string %zu %s differs%s%s\n", family, path_kind, i, q ? q : "?",
                        rc ? ": " : "", rc ? sks_last_error() : "");
                free(q);
                print_ids(t, "ours", ids, rc ? 0 : n);
                print_ids(t, "want", w, nw);
            }
            bad++;
        }
        free(w);
        free(ids);
    }
    return bad;
}

/* ---- a GGUF vocabulary from a tokenizer.json ------------------------------------------ */

typedef sks_test_buf gbuf;

/* tokens by id, merges "a b", token types: normal, and the added tokens user-defined so
 * that they are matched in the text as the library matches them */
static struct sks_gguf *gguf_from_json(json_t *tj, const char *pre, gbuf *g) {
    json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges"), *added = json_object_get(tj, "added_tokens");
    size_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) if ((size_t)json_integer_value(val) + 1 > n) n = (size_t)json_integer_value(val) + 1;
    const char **tok = calloc(n, sizeof *tok);
    int *type = calloc(n, sizeof *type);
    assert_true(tok && type);
    json_object_foreach(vocab, key, val) tok[json_integer_value(val)] = key, type[json_integer_value(val)] = 1;
    size_t i;
    json_array_foreach(added, i, val) {
        size_t id = (size_t)json_integer_value(json_object_get(val, "id"));
        assert_true(id < n);
        type[id] = 4;
    }
    sks_test_gguf_head(g, 3, 0, 5);
    sks_test_gguf_kv_str(g, "tokenizer.ggml.model", "gpt2");
    sks_test_gguf_kv_str(g, "tokenizer.ggml.pre", pre);
    sks_test_gguf_arr(g, "tokenizer.ggml.tokens", SKS_GGUF_STRING, n);
    for (size_t k = 0; k < n; k++) {
        assert_non_null(tok[k]);
        sks_test_gguf_str(g, tok[k]);
    }
    sks_test_gguf_arr(g, "tokenizer.ggml.token_type", SKS_GGUF_INT32, n);
    for (size_t k = 0; k < n; k++) sks_test_u32(g, (uint32_t)type[k]);
    sks_test_gguf_arr(g, "tokenizer.ggml.merges", SKS_GGUF_STRING, json_array_size(merges));
    json_array_foreach(merges, i, val) {
        char m[512];
        snprintf(m, sizeof m, "%s %s", json_string_value(json_array_get(val, 0)), json_string_value(json_array_get(val, 1)));
        sks_test_gguf_str(g, m);
    }
    free(tok);
    free(type);
    struct sks_gguf *gg;
    assert_int_equal(sks__gguf_parse(g->b, g->n, "refs.gguf", &gg), 0);
    return gg;
}

static void test_families(void **state) {
    (void)state;
    json_t *exp = load("expected.json");
    json_t *strings = json_object_get(exp, "strings"), *fams = json_object_get(exp, "families");
    assert_true(json_array_size(strings) >= 300);
    assert_true(json_object_size(fams) >= 16);
    int total_bad = 0, checked = 0;
    const char *name;
    json_t *fam;
    json_object_foreach(fams, name, fam) {
        json_t *ids = json_object_get(fam, "ids");
        assert_int_equal(json_array_size(ids), json_array_size(strings));
        const char *file = json_string_value(json_object_get(fam, "file"));
        char path[1024];
        snprintf(path, sizeof path, DATA "%s", file);
        json_t *tj = load(file);
        int byte_level = strcmp(json_string_value(json_object_get(json_object_get(tj, "decoder"), "type")), "ByteLevel") == 0;
        int decode = byte_level && json_is_null(json_object_get(tj, "normalizer"));
        json_t *added = json_object_get(tj, "added_tokens");
        sks_tokenizer *t;
        int rc = sks_tokenizer_open(path, &t);
        if (rc) fprintf(stderr, "%s: %s\n", name, sks_last_error());
        assert_int_equal(rc, 0);
        int bad = check_family(t, name, "tokenizer.json", strings, ids, added, decode);
        sks_tokenizer_free(t);
        fprintf(stderr, "%-15s tokenizer.json: %zu strings, %d differ\n", name, json_array_size(strings), bad);
        total_bad += bad;
        checked++;
        const char *pre = json_string_value(json_object_get(fam, "gguf_pre"));
        if (pre) {
            gbuf g = {0};
            struct sks_gguf *gg = gguf_from_json(tj, pre, &g);
            rc = sks_tokenizer_open_gguf(gg, "refs.gguf", &t);
            if (rc) fprintf(stderr, "%s: %s\n", name, sks_last_error());
            assert_int_equal(rc, 0);
            assert_string_equal(sks_tokenizer_kind(t), "gguf-gpt2");
            bad = check_family(t, name, pre, strings, ids, added, decode);
            fprintf(stderr, "%-15s GGUF pre \"%s\": %d differ\n", name, pre, bad);
            total_bad += bad;
            checked++;
            sks_tokenizer_free(t);
            sks__gguf_free(gg);
            free(g.b);
        }
        json_decref(tj);
    }
    json_decref(exp);
    assert_true(checked >= 28);
    assert_int_equal(total_bad, 0);
}

/* Every row of the GGUF table builds (its regexes compile) and gives ids for hard text;
 * an unknown name is an error that names it. */
static void test_gguf_table(void **state) {
    (void)state;
    json_t *tj = load("gpt2.json");
    int rows = 0;
    for (int k = 0; sks__gguf_pre_name(k); k++, rows++) {
        gbuf g = {0};
        struct sks_gguf *gg = gguf_from_json(tj, sks__gguf_pre_name(k), &g);
        sks_tokenizer *t;
        int rc = sks_tokenizer_open_gguf(gg, "refs.gguf", &t);
        if (rc) fprintf(stderr, "%s: %s\n", sks__gguf_pre_name(k), sks_last_error());
        assert_int_equal(rc, 0);
        int32_t *ids;
        int n;
        assert_int_equal(sks_tokenizer_encode(t, "It's 4 \xc2\xbd\tVi\xe1\xbb\x87t  \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 x=12345;\n", 0, &ids, &n), 0);
        assert_true(n > 5);
        free(ids);
        sks_tokenizer_free(t);
        sks__gguf_free(gg);
        free(g.b);
    }
    assert_true(rows > 70);
    gbuf g = {0};
    struct sks_gguf *gg = gguf_from_json(tj, "no-such-pre", &g);
    sks_tokenizer *t = NULL;
    assert_int_equal(sks_tokenizer_open_gguf(gg, "refs.gguf", &t), SKS_EUNSUPPORTED);
    assert_null(t);
    assert_non_null(strstr(sks_last_error(), "\"no-such-pre\""));
    sks__gguf_free(gg);
    free(g.b);
    json_decref(tj);
}

/* tokenizer.json components we do not run are errors naming them, never approximations. */
static void test_unknown_components(void **state) {
    (void)state;
    static const char *const cases[][3] = {
        {"pre_tokenizer", "{\"type\": \"UnicodeScripts\"}", "\"UnicodeScripts\""},
        {"pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"},"
                          " \"behavior\": \"Isolated\", \"invert\": false}]}", "regex \"(\""},
        {"pre_tokenizer", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"x\"}, \"behavior\": \"Sideways\"}", "Sideways"},
        {"normalizer", "{\"type\": \"BertNormalizer\"}", "\"BertNormalizer\""},
        /* found by fuzz-tokenizer: an empty replacement made the split loop forever */
        {"pre_tokenizer", "{\"type\": \"Metaspace\", \"replacement\": \"\", \"split\": true}", "replacement"},
    };
    char *dir = sks_test_tmpdir();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        json_t *tj = load("gpt2.json");
        json_error_t err;
        json_t *comp = json_loads(cases[k][1], 0, &err);
        assert_non_null(comp);
        json_object_set_new(tj, cases[k][0], comp);
        char path[1024];
        snprintf(path, sizeof path, "%s/bad%zu.json", dir, k);
        assert_int_equal(json_dump_file(tj, path, 0), 0);
        json_decref(tj);
        sks_tokenizer *t = NULL;
        int rc = sks_tokenizer_open(path, &t);
        assert_true(rc == SKS_EUNSUPPORTED || rc == SKS_EFORMAT);
        assert_null(t);
        if (!strstr(sks_last_error(), cases[k][2])) fprintf(stderr, "message: %s\n", sks_last_error());
        assert_non_null(strstr(sks_last_error(), cases[k][2]));
        assert_non_null(strstr(sks_last_error(), path));
    }
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_families),
        cmocka_unit_test(test_gguf_table),
        cmocka_unit_test(test_unknown_components),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
