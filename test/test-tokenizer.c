/* test-tokenizer.c - tokenizers against independent references: the fixtures'
 * reference ids (produced by SentencePiece / llama2.c tooling, not by this code),
 * hand-derived BPE segmentations, and hostile files. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sks_test.h"
#include "loaders/sks_tokenizer.h"
#include "loaders/formats_internal.h" /* sks__gguf_parse: a metadata-only GGUF image */

/* ---- helpers ----------------------------------------------------------------------- */

/* ids from a JSON array (or from a string holding one). Caller frees. */
static int32_t *json_ids(json_t *v, int *n) {
    json_t *arr = v, *parsed = NULL;
    if (json_is_string(v)) {
        json_error_t err;
        parsed = json_loads(json_string_value(v), 0, &err);
        arr = parsed;
    }
    int32_t *ids = sks_test_json_ids(arr, n);
    json_decref(parsed);
    return ids;
}

/* Concatenated decode of ids[0..n) (prev threaded through). Caller frees. */
static char *decode_all(const sks_tokenizer *t, const int32_t *ids, int n) {
    size_t cap = 64 + (size_t)n * 64, o = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[0] = '\0';
    char buf[256];
    for (int i = 0; i < n; i++) {
        const char *p = sks_tokenizer_decode(t, i ? ids[i - 1] : -1, ids[i], buf, sizeof buf);
        size_t l = strlen(p);
        assert_true(o + l < cap);
        memcpy(s + o, p, l + 1);
        o += l;
    }
    return s;
}

static void assert_ids_equal(const int32_t *got, int ngot, const int32_t *want, int nwant) {
    if (ngot != nwant || memcmp(got, want, (size_t)ngot * sizeof *got) != 0) {
        fprintf(stderr, "got  (%d):", ngot);
        for (int i = 0; i < ngot; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\nwant (%d):", nwant);
        for (int i = 0; i < nwant; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
        fail();
    }
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* ---- llama2.c tokenizer.bin ----------------------------------------------------------- */

static void test_llama2c_roundtrip(void **state) {
    (void)state;
    sks_tokenizer *t;
    assert_int_equal(sks_tokenizer_open(sks_test_fixture("stories260K/tok512.bin"), &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "llama2c");
    assert_int_equal(sks_tokenizer_vocab_size(t), 512);
    assert_int_equal(sks_tokenizer_bos(t), 1);
    assert_int_equal(sks_tokenizer_eos(t), 2);
    const char *texts[] = {"Once upon a time", "Lily and Ben went to the park.\nThey played!",
                           "caf\xc3\xa9 \xe2\x82\xac 42", ""};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int32_t *ids;
        int n;
        assert_int_equal(sks_tokenizer_encode(t, texts[k], 1, &ids, &n), 0);
        assert_true(n >= 1);
        assert_int_equal(ids[0], 1);
        for (int i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < 512);
        char *s = decode_all(t, ids, n);
        assert_string_equal(s, texts[k]);
        free(s);
        free(ids);
    }
    assert_null(sks_tokenizer_piece(t, 512));
    assert_null(sks_tokenizer_piece(t, -1));
    assert_string_equal(sks_tokenizer_piece(t, 403), " Once");
    sks_tokenizer_free(t);
}

/* reference.json: the greedy ids of the llama2.c model and their text as the reference
 * tool wrote it (raw pieces concatenated: leading space of the first piece kept, byte
 * pieces such as <0x0A> left as written). */
static void test_llama2c_greedy_reference(void **state) {
    (void)state;
    json_t *ref = sks_test_fixture_json("stories260K/reference.json");
    int n;
    int32_t *ids = json_ids(json_object_get(ref, "greedy_ids"), &n);
    const char *text = json_string_value(json_object_get(ref, "text"));
    assert_non_null(text);
    sks_tokenizer *t;
    assert_int_equal(sks_tokenizer_open(sks_test_fixture("stories260K/tok512.bin"), &t), 0);
    /* raw pieces reproduce the reference text exactly */
    size_t o = 0, tl = strlen(text);
    for (int i = 1; i < n; i++) {
        const char *p = sks_tokenizer_piece(t, ids[i]);
        assert_non_null(p);
        size_t l = strlen(p);
        assert_true(o + l <= tl);
        assert_memory_equal(text + o, p, l);
        o += l;
    }
    assert_int_equal(o, tl);
    /* decoded: leading space after BOS dropped, <0x0A> -> newline */
    char *want = malloc(tl + 1), *got = decode_all(t, ids, n);
    size_t w = 0;
    for (size_t i = (text[0] == ' '); i < tl;) {
        if (strncmp(text + i, "<0x0A>", 6) == 0) {
            want[w++] = '\n';
            i += 6;
        } else {
            want[w++] = text[i++];
        }
    }
    want[w] = '\0';
    assert_string_equal(got, want);
    assert_true(strncmp(got, "Once upon a time, there was a little girl named Lily.", 53) == 0);
    /* and the greedy text re-encodes to the ids the model produced (the model learned
     * the canonical segmentation of its training tokenizer) */
    int32_t *ids2;
    int n2;
    assert_int_equal(sks_tokenizer_encode(t, want, 1, &ids2, &n2), 0);
    assert_ids_equal(ids2, n2, ids, n);
    free(ids2);
    free(want);
    free(got);
    free(ids);
    sks_tokenizer_free(t);
    json_decref(ref);
}

/* ---- SentencePiece tokenizer.model ----------------------------------------------------- */

static void check_trained_llama_reference(const sks_tokenizer *t) {
    json_t *ref = sks_test_fixture_json("trained-llama/reference.json");
    const char *text = json_string_value(json_object_get(ref, "text"));
    int nw;
    int32_t *want = json_ids(json_object_get(ref, "input_ids"), &nw);
    int32_t *ids;
    int n;
    assert_int_equal(sks_tokenizer_encode(t, text, 1, &ids, &n), 0);
    assert_ids_equal(ids, n, want, nw);
    char *back = decode_all(t, ids, n);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    free(want);
    json_decref(ref);
}

static void test_spm_reference(void **state) {
    (void)state;
    sks_tokenizer *t;
    assert_int_equal(sks_tokenizer_open(sks_test_fixture("trained-llama/model/tokenizer.model"), &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "sentencepiece");
    assert_int_equal(sks_tokenizer_vocab_size(t), 4096);
    assert_int_equal(sks_tokenizer_bos(t), 1);
    assert_int_equal(sks_tokenizer_eos(t), 2);
    check_trained_llama_reference(t);
    /* byte fallback: a character outside the vocabulary becomes its UTF-8 bytes,
     * <0xAB> at id 6 + byte (ids 6..261 per the file's piece list) */
    int32_t *ids;
    int n;
    assert_int_equal(sks_tokenizer_encode(t, "\xe4\xb8\xad", 0, &ids, &n), 0); /* U+4E2D */
    assert_true(n >= 3);
    assert_int_equal(ids[n - 3], 6 + 0xe4);
    assert_int_equal(ids[n - 2], 6 + 0xb8);
    assert_int_equal(ids[n - 1], 6 + 0xad);
    assert_string_equal(sks_tokenizer_piece(t, 6 + 0xe4), "<0xE4>");
    free(ids);
    /* user-defined "\n" (id 4) is one symbol */
    assert_int_equal(sks_tokenizer_encode(t, "a\nb", 0, &ids, &n), 0);
    int seen = 0;
    for (int i = 0; i < n; i++) seen += ids[i] == 4;
    assert_int_equal(seen, 1);
    char *back = decode_all(t, ids, n);
    assert_string_equal(back, " a\nb"); /* no BOS before: the dummy prefix shows */
    free(back);
    free(ids);
    sks_tokenizer_free(t);
}

/* Property: with byte fallback every non-NUL byte string has a representation, so
 * decode(encode(s)) == s for arbitrary bytes (invalid UTF-8, control characters, runs
 * of spaces), and every id is in range. Seeded, so failures reproduce. */
static void test_random_roundtrip(void **state) {
    (void)state;
    const char *files[] = {"stories260K/tok512.bin", "trained-llama/model/tokenizer.model"};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int f = 0; f < 2; f++) {
        sks_tokenizer *t;
        assert_int_equal(sks_tokenizer_open(sks_test_fixture(files[f]), &t), 0);
        int V = sks_tokenizer_vocab_size(t);
        for (int trial = 0; trial < 200; trial++) {
            char text[96];
            int len = trial % 90;
            for (int i = 0; i < len; i++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                unsigned r = (unsigned)(seed >> 33);
                /* mostly ASCII letters and spaces, sometimes any byte */
                text[i] = (char)(r % 4 == 0 ? 1 + (r >> 8) % 255 : r % 4 == 1 ? ' ' : 'a' + (r >> 8) % 26);
            }
            text[len] = '\0';
            int32_t *ids;
            int n;
            assert_int_equal(sks_tokenizer_encode(t, text, 1, &ids, &n), 0);
            for (int i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < V);
            char *back = decode_all(t, ids, n);
            assert_string_equal(back, text);
            free(back);
            free(ids);
        }
        sks_tokenizer_free(t);
    }
}

/* ---- GGUF embedded vocabularies ------------------------------------------------------- */

static void test_gguf_stories_equals_bin(void **state) {
    (void)state;
    sks_model *m = sks_test_open_fixture("stories260K/stories260K.gguf");
    sks_tokenizer *tg, *tb;
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &tg), 0);
    assert_string_equal(sks_tokenizer_kind(tg), "gguf-llama");
    assert_int_equal(sks_tokenizer_open(sks_test_fixture("stories260K/tok512.bin"), &tb), 0);
    assert_int_equal(sks_tokenizer_vocab_size(tg), 512);
    assert_int_equal(sks_tokenizer_bos(tg), 1);
    assert_int_equal(sks_tokenizer_eos(tg), 2);
    const char *texts[] = {"Once upon a time", "The cat sat on the mat. It was happy!",
                           "  two  spaces\nand a newline", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80 emoji", "x"};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int32_t *a, *b;
        int na, nb;
        assert_int_equal(sks_tokenizer_encode(tg, texts[k], 1, &a, &na), 0);
        assert_int_equal(sks_tokenizer_encode(tb, texts[k], 1, &b, &nb), 0);
        assert_ids_equal(a, na, b, nb);
        char *s = decode_all(tg, a, na);
        assert_string_equal(s, texts[k]);
        free(s);
        free(a);
        free(b);
    }
    sks_tokenizer_free(tg);
    sks_tokenizer_free(tb);
    sks_model_close(m);
}

/* trained-packed's GGUF carries the very vocabulary of trained-llama's tokenizer.model
 * (checked piece by piece below), so trained-llama's reference ids apply to it. */
static void test_gguf_packed(void **state) {
    (void)state;
    sks_model *m = sks_test_open_fixture("trained-packed/model.gguf");
    sks_tokenizer *tg, *ts;
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &tg), 0);
    assert_int_equal(sks_tokenizer_open(sks_test_fixture("trained-llama/model/tokenizer.model"), &ts), 0);
    assert_int_equal(sks_tokenizer_vocab_size(tg), 4096);
    for (int i = 0; i < 4096; i++) assert_string_equal(sks_tokenizer_piece(tg, i), sks_tokenizer_piece(ts, i));
    check_trained_llama_reference(tg);
    const char *texts[] = {"Hello, world! 1234 + 5678 = 6912.", "The kernel allocates memory.\n\tIndented.",
                           "a  b   c", "ends with space "};
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int32_t *ids;
        int n;
        assert_int_equal(sks_tokenizer_encode(tg, texts[k], 1, &ids, &n), 0);
        for (int i = 0; i < n; i++) assert_true(ids[i] >= 0 && ids[i] < 4096);
        char *s = decode_all(tg, ids, n);
        assert_string_equal(s, texts[k]);
        free(s);
        free(ids);
    }
    sks_tokenizer_free(tg);
    sks_tokenizer_free(ts);
    sks_model_close(m);
}

/* ---- GGUF "gpt2" vocabulary, built in memory ------------------------------------------- */

typedef sks_test_buf gbuf;

typedef struct {
    const char *piece;
    float score;
    int type;
} unigram_piece_t;

static void gkv_strs(gbuf *g, const char *k, const char *const *v, size_t n) {
    sks_test_gguf_arr(g, k, SKS_GGUF_STRING, n);
    for (size_t i = 0; i < n; i++) sks_test_gguf_str(g, v[i]);
}

/* Vocabulary of the byte-level JSON test plus digits. Merges (rank = position):
 *   0-5 as there, 6 "1 2", 7 "12 3", 8 "123 4", 9 "4 5"
 * "hello hello<|end|>12345", <|end|> user-defined (verbatim):
 *   "hello hello" -> [8, 4, 8] exactly as derived for BYTELEVEL_JSON, <|end|> -> 11;
 *   Llama 3 split (digits in runs of <= 3): "123" "45": 1 2 3 -> 12 3 -> 123 = 18;
 *     4 5 -> 45 = 19                                       => [8, 4, 8, 11, 18, 19]
 *   GPT-2 split (one digit run): 1 2 3 4 5 -> 12 3 4 5 -> 123 4 5, then (123,4) rank 8
 *     beats (4,5) rank 9 -> 1234 5 = 20, 16                => [8, 4, 8, 11, 20, 16] */
static void test_gguf_gpt2_vocab(void **state) {
    (void)state;
    static const char *const tokens[] = {"h", "e", "l", "o", "\xc4\xa0", "he", "ll", "llo", "hello", "\xc4\xa0h",
                                         "\xc4\xa0he", "<|end|>", "1", "2", "3", "4", "5", "12", "123", "45", "1234"};
    static const char *const merges[] = {"h e", "l l", "ll o", "he llo", "\xc4\xa0 h", "\xc4\xa0h e",
                                         "1 2", "12 3", "123 4", "4 5"};
    const int32_t want_llama3[] = {8, 4, 8, 11, 18, 19}, want_gpt2[] = {8, 4, 8, 11, 20, 16};
    const char *pres[] = {"llama-bpe", "gpt-2"};
    for (int k = 0; k < 2; k++) {
        gbuf g = {0};
        sks_test_gguf_head(&g, 3, 0, 5);
        sks_test_gguf_kv_str(&g, "tokenizer.ggml.model", "gpt2");
        sks_test_gguf_kv_str(&g, "tokenizer.ggml.pre", pres[k]);
        gkv_strs(&g, "tokenizer.ggml.tokens", tokens, 21);
        gkv_strs(&g, "tokenizer.ggml.merges", merges, 10);
        sks_test_gguf_arr(&g, "tokenizer.ggml.token_type", SKS_GGUF_INT32, 21);
        for (int i = 0; i < 21; i++) sks_test_u32(&g, i == 11 ? 4 : 1);
        struct sks_gguf *gg;
        assert_int_equal(sks__gguf_parse(g.b, g.n, "mem.gguf", &gg), 0);
        sks_tokenizer *t;
        assert_int_equal(sks_tokenizer_open_gguf(gg, "mem.gguf", &t), 0);
        assert_string_equal(sks_tokenizer_kind(t), "gguf-gpt2");
        int32_t *ids;
        int n;
        assert_int_equal(sks_tokenizer_encode(t, "hello hello<|end|>12345", 1, &ids, &n), 0); /* no BOS key */
        assert_ids_equal(ids, n, k == 0 ? want_llama3 : want_gpt2, 6);
        char *s = decode_all(t, ids, n);
        assert_string_equal(s, "hello hello<|end|>12345");
        free(s);
        free(ids);
        sks_tokenizer_free(t);
        sks__gguf_free(gg);
        free(g.b);
    }
}

/* ---- finding the tokenizer of a model ------------------------------------------------- */

static void test_open_for_model(void **state) {
    (void)state;
    sks_model *m;
    sks_tokenizer *t;
    /* llama2.c .bin: tok512.bin beside it (vocabulary 512 = the model's) */
    m = sks_test_open_fixture("stories260K/stories260K.bin");
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "llama2c");
    assert_int_equal(sks_tokenizer_vocab_size(t), 512);
    sks_tokenizer_free(t);
    /* explicit path wins */
    assert_int_equal(sks_tokenizer_open_for_model(m, sks_test_fixture("trained-llama/model/tokenizer.model"), &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "sentencepiece");
    sks_tokenizer_free(t);
    sks_model_close(m);
    /* HF directory: tokenizer.model inside */
    m = sks_test_open_fixture("trained-llama/model");
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "sentencepiece");
    sks_tokenizer_free(t);
    sks_model_close(m);
    /* a .safetensors file with no tokenizer.json / tokenizer.model beside it */
    m = sks_test_open_fixture("stories260K/stories260K.safetensors");
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), SKS_ENOTFOUND);
    assert_null(t);
    assert_non_null(strstr(sks_last_error(), "tokenizer.json"));
    sks_model_close(m);
}

/* The search rules on a scratch directory of links to the fixtures:
 *  - llama2.c: a tokenizer.bin whose vocabulary (3) differs from the model's (512)
 *    loses to tok512.bin, whose vocabulary matches;
 *  - safetensors: an unusable tokenizer.json (WordPiece) falls through to
 *    tokenizer.model; without tokenizer.model its error is reported. */
static void test_search_rules(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir();
    char p[512];
    const char *links[][2] = {{"stories260K/stories260K.bin", "m.bin"},
                              {"stories260K/tok512.bin", "tok512.bin"},
                              {"stories260K/stories260K.safetensors", "m.safetensors"},
                              {"stories260K/config.json", "config.json"},
                              {"trained-llama/model/tokenizer.model", "tokenizer.model"}};
    for (int k = 0; k < 5; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, links[k][1]);
        assert_int_equal(symlink(sks_test_fixture(links[k][0]), p), 0);
    }
    /* max_token_length 3; three records: "a", "b", "c" */
    const unsigned char small[] = {3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'a', 0, 0, 0, 0, 1, 0, 0, 0, 'b',
                                   0, 0, 0, 0, 1, 0, 0, 0, 'c'};
    snprintf(p, sizeof p, "%s/tokenizer.bin", dir);
    write_file(p, small, sizeof small);
    sks_tokenizer *t;
    assert_int_equal(sks_tokenizer_open(p, &t), 0);
    assert_int_equal(sks_tokenizer_vocab_size(t), 3);
    sks_tokenizer_free(t);
    sks_model *m;
    snprintf(p, sizeof p, "%s/m.bin", dir);
    m = sks_test_open(p);
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), 0);
    assert_int_equal(sks_tokenizer_vocab_size(t), 512);
    sks_tokenizer_free(t);
    sks_model_close(m);

    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    write_file(p, wp, strlen(wp));
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    m = sks_test_open(p);
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "sentencepiece");
    sks_tokenizer_free(t);
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(sks_tokenizer_open_for_model(m, NULL, &t), SKS_EUNSUPPORTED);
    assert_non_null(strstr(sks_last_error(), "WordPiece"));
    sks_model_close(m);
    free(dir);
}

/* ---- HF tokenizer.json, hand-checked ---------------------------------------------------- */

/* Byte-level BPE (GPT-2 alphabet: ' ' is "Ġ" = U+0120). Merges by rank:
 *   0 "h e", 1 "l l", 2 "ll o", 3 "he llo", 4 "Ġ h", 5 "Ġh e"
 * "hello hello<|end|>": the GPT-2 split gives "hello", " hello", then the added token.
 *   "hello":  h e l l o -> (h,e) rank 0 -> he l l o -> (l,l) 1 -> he ll o -> (ll,o) 2
 *             -> he llo -> (he,llo) 3 -> hello = 8
 *   " hello": Ġ h e l l o: (h,e) rank 0 beats (Ġ,h) rank 4 -> Ġ he ..., and "Ġ he" is
 *             no merge, so Ġ stays alone: Ġ = 4, hello = 8
 *   "<|end|>" = 11 (special, verbatim)
 * => [8, 4, 8, 11]; a left-to-right or longest-match tokenizer would give Ġh... instead. */
static const char *BYTELEVEL_JSON =
    "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":11,\"content\":\"<|end|>\",\"special\":true}],"
    "\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"h\":0,\"e\":1,\"l\":2,\"o\":3,\"\\u0120\":4,\"he\":5,\"ll\":6,"
    "\"llo\":7,\"hello\":8,\"\\u0120h\":9,\"\\u0120he\":10},"
    "\"merges\":[\"h e\",\"l l\",\"ll o\",\"he llo\",\"\\u0120 h\",[\"\\u0120h\",\"e\"]]}}";

/* SentencePiece-style BPE (normalizer: Prepend "▁", Replace " " -> "▁"; byte fallback).
 * Merges: 0 "a b", 1 "▁ a", 2 "▁a b".  "ab ab!" -> "▁ab▁ab!":
 *   ▁ a b ▁ a b !: (a,b) rank 0 twice (leftmost first) -> ▁ ab ▁ ab !; "▁ ab" is no merge.
 *   "!" has no piece -> byte fallback <0x21> = 3.  With BOS (TemplateProcessing: <s> = 1):
 * => [1, 4, 8, 4, 8, 3]; merging by the order of the text would have made ▁a (7) first. */
static const char *SPM_JSON =
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
    "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
    "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
    "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
    "\"pre_tokenizer\":null,"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
    "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\"},{\"type\":\"ByteFallback\"}]},"
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,"
    "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x21>\":3,\"\\u2581\":4,\"a\":5,\"b\":6,\"\\u2581a\":7,"
    "\"ab\":8,\"\\u2581ab\":9},\"merges\":[\"a b\",\"\\u2581 a\",\"\\u2581a b\"]}}";

static sks_tokenizer *open_text(const char *dir, const char *name, const char *content, int *rc) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, content, strlen(content));
    sks_tokenizer *t = NULL;
    *rc = sks_tokenizer_open(path, &t);
    return t;
}

static void test_hf_json(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir();
    int rc;
    sks_tokenizer *t = open_text(dir, "bl.json", BYTELEVEL_JSON, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(sks_tokenizer_kind(t), "hf-bytelevel");
    assert_int_equal(sks_tokenizer_vocab_size(t), 12);
    int32_t *ids;
    int n;
    assert_int_equal(sks_tokenizer_encode(t, "hello hello<|end|>", 0, &ids, &n), 0);
    const int32_t want1[] = {8, 4, 8, 11};
    assert_ids_equal(ids, n, want1, 4);
    char *s = decode_all(t, ids, n);
    assert_string_equal(s, "hello hello");
    free(s);
    free(ids);
    sks_tokenizer_free(t);

    t = open_text(dir, "sp.json", SPM_JSON, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(sks_tokenizer_kind(t), "hf-bpe");
    assert_int_equal(sks_tokenizer_bos(t), 1);
    assert_int_equal(sks_tokenizer_eos(t), 2);
    assert_int_equal(sks_tokenizer_encode(t, "ab ab!", 1, &ids, &n), 0);
    const int32_t want2[] = {1, 4, 8, 4, 8, 3};
    assert_ids_equal(ids, n, want2, 6);
    s = decode_all(t, ids, n);
    assert_string_equal(s, "ab ab!");
    free(s);
    free(ids);
    sks_tokenizer_free(t);
    free(dir);
}

/* GPT-2's byte -> code point rule, restated from its definition for the test:
 * printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) keep their value, the others take
 * U+0100, U+0101, ... in byte order. Appends the UTF-8 of byte b's code point. */
static size_t bytelevel_char(unsigned char b, char *o) {
    unsigned cp = b, next = 256;
    if (!((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
        for (unsigned c = 0; c < b; c++)
            if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) next++;
        cp = next;
    }
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 63));
    return 2;
}

/* The pre-tokenizer splits against the real regexes. The word lists below were produced
 * by the Python `regex` module with GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * and Llama 3's
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * The tokenizer.json has the 256 byte characters (ids 0..255), each word as one piece,
 * no merges and ignore_merges: a word comes out as one id exactly when the split found
 * it. */
static void test_bytelevel_splits(void **state) {
    (void)state;
    const char *text = "I'm  don't WE'LL 12345 x=6.78;\n\n  indented\ttab...(word) end  ";
    static const char *const gpt2[] = {"I", "'m", " ", " don", "'t", " WE", "'", "LL", " 12345", " x", "=", "6",
                                       ".", "78", ";", "\n\n ", " indented", "\t", "tab", "...(", "word", ")",
                                       " end", "  ", NULL};
    static const char *const llama3[] = {"I", "'m", " ", " don", "'t", " WE", "'LL", " ", "123", "45", " x", "=",
                                         "6", ".", "78", ";\n\n", " ", " indented", "\ttab", "...(", "word", ")",
                                         " end", "  ", NULL};
    const char *const *lists[] = {gpt2, llama3};
    char *dir = sks_test_tmpdir();
    for (int k = 0; k < 2; k++) {
        json_t *vocab = json_object();
        char key[64];
        for (int b = 0; b < 256; b++) {
            key[bytelevel_char((unsigned char)b, key)] = '\0';
            json_object_set_new(vocab, key, json_integer(b));
        }
        int nw = 0, next_id = 256;
        int32_t want[32];
        for (const char *const *w = lists[k]; *w; w++) {
            size_t o = 0;
            for (const char *c = *w; *c; c++) o += bytelevel_char((unsigned char)*c, key + o);
            key[o] = '\0';
            json_t *id = json_object_get(vocab, key); /* one-byte words are byte pieces already */
            if (!id) {
                id = json_integer(next_id++);
                json_object_set_new(vocab, key, id);
            }
            want[nw++] = (int32_t)json_integer_value(id);
        }
        json_t *model = json_pack("{s:s, s:o, s:[], s:b}", "type", "BPE", "vocab", vocab, "merges", "ignore_merges", 1);
        json_t *pre = k == 0 ? json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1)
                             : json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s, s:b, s:b}]}", "type", "Sequence",
                                         "pretokenizers", "type", "Split", "pattern", "Regex",
                                         "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                         "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                                         "behavior", "Isolated", "type", "ByteLevel", "add_prefix_space", 0,
                                         "use_regex", 0);
        json_t *root = json_pack("{s:[], s:o, s:{s:s}, s:o}", "added_tokens", "pre_tokenizer", pre, "decoder", "type",
                                 "ByteLevel", "model", model);
        assert_non_null(root);
        char path[512];
        snprintf(path, sizeof path, "%s/split%d.json", dir, k);
        assert_int_equal(json_dump_file(root, path, 0), 0);
        json_decref(root);
        sks_tokenizer *t;
        assert_int_equal(sks_tokenizer_open(path, &t), 0);
        int32_t *ids;
        int n;
        assert_int_equal(sks_tokenizer_encode(t, text, 0, &ids, &n), 0);
        assert_ids_equal(ids, n, want, nw);
        char *back = decode_all(t, ids, n);
        assert_string_equal(back, text);
        free(back);
        free(ids);
        sks_tokenizer_free(t);
    }
    free(dir);
}

/* ---- unigram, hand-checked ---------------------------------------------------------- */

/* Pieces (score = log probability): 0 <unk>, 1 "▁" -1, 2 "a" -2, 3 "b" -2, 4 "ab" -1,
 * 5 "▁ab" -2.5, 6 "▁a" -1.5, 7 "c" -3.
 * "ab abc" -> "▁ab▁abc". Best path (Viterbi, sum of scores):
 *   "▁ab":  ▁ + ab = -2.0 beats ▁ab = -2.5, ▁a + b = -3.5, ▁ + a + b = -5
 *   "▁abc": ▁ + ab + c = -5.0 beats ▁ab + c = -5.5, ▁a + b + c = -6.5
 *   => [1, 4, 1, 4, 7]   (a greedy longest match would take ▁ab = 5)
 * "abd": ▁ + ab, then "d" is no piece: unk (0)  => [1, 4, 0] */
static const unigram_piece_t UNIGRAM_PIECES[] = {{"<unk>", 0, 2}, {"\xe2\x96\x81", -1, 1}, {"a", -2, 1},
                                                 {"b", -2, 1}, {"ab", -1, 1}, {"\xe2\x96\x81" "ab", -2.5f, 1},
                                                 {"\xe2\x96\x81" "a", -1.5f, 1}, {"c", -3, 1}};

static void pb_varint(gbuf *g, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        sks_test_put(g, &c, 1);
    } while (v);
}
static void pb_msg(gbuf *g, int field, const gbuf *m) {
    pb_varint(g, (uint64_t)field << 3 | 2);
    pb_varint(g, m->n);
    sks_test_put(g, m->b, m->n);
}
static void pb_int(gbuf *g, int field, int64_t v) {
    pb_varint(g, (uint64_t)field << 3);
    pb_varint(g, (uint64_t)v); /* proto int32: negatives as 10-byte varints */
}

static void check_unigram(const sks_tokenizer *t, const char *spaced) {
    const int32_t want1[] = {1, 4, 1, 4, 7}, want2[] = {1, 4, 0};
    int32_t *ids;
    int n;
    assert_int_equal(sks_tokenizer_encode(t, spaced, 1, &ids, &n), 0);
    assert_ids_equal(ids, n, want1, 5);
    free(ids);
    assert_int_equal(sks_tokenizer_encode(t, "abd", 0, &ids, &n), 0);
    assert_ids_equal(ids, n, want2, 3);
    free(ids);
}

static void test_unigram(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir(), path[512];
    /* tokenizer.json, Unigram model, Metaspace pre-tokenizer */
    json_t *vocab = json_array();
    for (int i = 0; i < 8; i++)
        json_array_append_new(vocab, json_pack("[s, f]", UNIGRAM_PIECES[i].piece, (double)UNIGRAM_PIECES[i].score));
    json_t *root = json_pack("{s:[], s:{s:s, s:s, s:s}, s:{s:s, s:o, s:i}}", "added_tokens", "pre_tokenizer",
                             "type", "Metaspace", "replacement", "\xe2\x96\x81", "prepend_scheme", "always", "model",
                             "type", "Unigram", "vocab", vocab, "unk_id", 0);
    assert_non_null(root);
    snprintf(path, sizeof path, "%s/unigram.json", dir);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
    sks_tokenizer *t;
    assert_int_equal(sks_tokenizer_open(path, &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "hf-unigram");
    check_unigram(t, "ab abc");
    sks_tokenizer_free(t);

    /* the same as a SentencePiece ModelProto: model_type 1 (unigram), no BOS/EOS (-1),
     * default normalizer (dummy prefix, extra whitespace removed) */
    gbuf g = {0}, m = {0}, ts = {0};
    for (int i = 0; i < 8; i++) {
        m.n = 0;
        pb_varint(&m, 1 << 3 | 2);
        pb_varint(&m, strlen(UNIGRAM_PIECES[i].piece));
        sks_test_put(&m, UNIGRAM_PIECES[i].piece, strlen(UNIGRAM_PIECES[i].piece));
        pb_varint(&m, 2 << 3 | 5);
        sks_test_put(&m, &UNIGRAM_PIECES[i].score, 4);
        pb_int(&m, 3, UNIGRAM_PIECES[i].type);
        pb_msg(&g, 1, &m);
    }
    pb_int(&ts, 3, 1);
    pb_int(&ts, 40, 0);
    pb_int(&ts, 41, -1);
    pb_int(&ts, 42, -1);
    pb_msg(&g, 2, &ts);
    snprintf(path, sizeof path, "%s/unigram.model", dir);
    write_file(path, g.b, g.n);
    assert_int_equal(sks_tokenizer_open(path, &t), 0);
    assert_string_equal(sks_tokenizer_kind(t), "sentencepiece-unigram");
    assert_int_equal(sks_tokenizer_bos(t), -1);
    assert_int_equal(sks_tokenizer_eos(t), -1);
    check_unigram(t, "  ab   abc "); /* remove_extra_whitespaces: the same text */
    sks_tokenizer_free(t);
    free(g.b);
    free(m.b);
    free(ts.b);
    free(dir);
}

/* ---- hostile files -------------------------------------------------------------------- */

static void test_hostile(void **state) {
    (void)state;
    char *dir = sks_test_tmpdir();
    char path[512];
    sks_tokenizer *t = NULL;
    size_t len;
    /* truncated tokenizer.bin: every cut inside the last records fails cleanly */
    char *bin = sks_test_read_file(sks_test_fixture("stories260K/tok512.bin"), &len);
    assert_non_null(bin);
    snprintf(path, sizeof path, "%s/tok.bin", dir);
    size_t cuts[] = {len - 1, len - 3, len / 2 + 1, 9, 5};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        write_file(path, bin, cuts[k]);
        int rc = sks_tokenizer_open(path, &t);
        assert_true(rc < 0);
        assert_null(t);
        assert_non_null(strstr(sks_last_error(), "tok.bin"));
    }
    /* a record length past the end */
    char bad[16] = {7, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 'a', 'b'};
    write_file(path, bad, 14);
    assert_int_equal(sks_tokenizer_open(path, &t), SKS_EBOUNDS);
    free(bin);

    /* protobuf: top-level length past the end; nested string past its message */
    snprintf(path, sizeof path, "%s/bad.model", dir);
    const unsigned char pb1[] = {0x0a, 0x7f, 0x0a, 0x01, 'a', 0x15, 0, 0, 0, 0};
    write_file(path, pb1, sizeof pb1);
    assert_int_equal(sks_tokenizer_open(path, &t), SKS_EFORMAT);
    assert_non_null(strstr(sks_last_error(), "past the end"));
    const unsigned char pb2[] = {0x0a, 0x03, 0x0a, 0x05, 'a', 0x12, 0x02, 0x18, 0x02};
    write_file(path, pb2, sizeof pb2);
    assert_int_equal(sks_tokenizer_open(path, &t), SKS_EFORMAT);
    assert_non_null(strstr(sks_last_error(), "pieces[0]"));
    const unsigned char pb3[] = {0x0a, 0x03, 0x0a, 0x01, 'a', 0x12, 0x02, 0x18, 0xff}; /* truncated varint */
    write_file(path, pb3, sizeof pb3);
    assert_int_equal(sks_tokenizer_open(path, &t), SKS_EFORMAT);
    /* every prefix of the real tokenizer.model is rejected or parsed, never a crash */
    char *model = sks_test_read_file(sks_test_fixture("trained-llama/model/tokenizer.model"), &len);
    assert_non_null(model);
    for (size_t cut = 4; cut < len; cut += cut < 200 ? 1 : 997) {
        write_file(path, model, cut);
        int rc = sks_tokenizer_open(path, &t);
        if (rc == 0) sks_tokenizer_free(t);
        else assert_null(t);
    }
    free(model);

    /* invalid tokenizer.json, and valid JSON that is no BPE tokenizer */
    int rc;
    t = open_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ", &rc);
    assert_int_equal(rc, SKS_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(sks_last_error(), "tokenizer.json"));
    t = open_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", &rc);
    assert_int_equal(rc, SKS_EUNSUPPORTED);
    t = open_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}", &rc);
    assert_int_equal(rc, SKS_EFORMAT);
    t = open_text(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}}", &rc);
    assert_int_equal(rc, SKS_EFORMAT);
    snprintf(path, sizeof path, "%s/missing.bin", dir);
    assert_int_equal(sks_tokenizer_open(path, &t), SKS_ENOTFOUND);
    free(dir);
}

int main(void) {
    SKS_REQUIRE_FIXTURES();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2c_roundtrip),
        cmocka_unit_test(test_llama2c_greedy_reference),
        cmocka_unit_test(test_spm_reference),
        cmocka_unit_test(test_random_roundtrip),
        cmocka_unit_test(test_gguf_stories_equals_bin),
        cmocka_unit_test(test_gguf_packed),
        cmocka_unit_test(test_gguf_gpt2_vocab),
        cmocka_unit_test(test_open_for_model),
        cmocka_unit_test(test_search_rules),
        cmocka_unit_test(test_hf_json),
        cmocka_unit_test(test_bytelevel_splits),
        cmocka_unit_test(test_unigram),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
