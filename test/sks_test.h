/* sks_test.h - shared test helpers (cmocka). */
#ifndef SKS_TEST_H
#define SKS_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

#include "loaders/sks_model.h"
#include "analysis/sks_forward.h"

/* One cmocka test per case of a table (n cases, size bytes each) into out[0..n): fn runs
 * with *state pointing at its case; every case struct starts with its test's name
 * (const char *). */
void sks_test_cases(struct CMUnitTest *out, CMUnitTestFunction fn, const void *cases, size_t n, size_t size);

/* Path under the fixtures folder (../shared/fixtures), in a static buffer ring. */
const char *sks_test_fixture(const char *rel);
/* 1 if the fixtures folder exists. Executables that need it call
 * SKS_REQUIRE_FIXTURES() first in main: exit 77 (ctest: skipped) when absent. */
int sks_test_have_fixtures(void);
#define SKS_REQUIRE_FIXTURES()                                                          \
    do {                                                                                \
        if (!sks_test_have_fixtures()) {                                                \
            fprintf(stderr, "SKIPPED: fixtures folder %s not found\n", SKS_FIXTURES);   \
            return 77;                                                                  \
        }                                                                               \
    } while (0)
/* A JSON file, parsed (sks_test_fixture_json: under the fixtures folder); a failure
 * fails the test naming the file, the line and the problem. Caller json_decref()s. */
json_t *sks_test_json(const char *path);
json_t *sks_test_fixture_json(const char *rel);
/* A model opened (sks_test_open_fixture: under the fixtures folder); a failure fails the
 * test with the library's message. Caller closes. */
sks_model *sks_test_open(const char *path);
sks_model *sks_test_open_fixture(const char *rel);
/* Token ids from a JSON array of integers: *n of them, with one spare slot. Caller frees. */
int32_t *sks_test_json_ids(const json_t *arr, int *n);
/* Sequences from a JSON array of id arrays, at most n_max of them: returns how many,
 * (*ids)[i] of (*lens)[i] tokens; sks_test_free_seqs releases them. */
int sks_test_json_seqs(const json_t *arr, int n_max, int32_t ***ids, int **lens);
void sks_test_free_seqs(int32_t **ids, int *lens, int n);
/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); caller frees string. */
char *sks_test_tmpdir(void);
/* Remove dir and everything below it (links themselves, not what they point to); NULL or
 * a missing dir: nothing to do. A failure fails the test. */
void sks_test_rm_tree(const char *dir);
/* Read a whole file (tests only). Caller frees. NULL on failure. */
char *sks_test_read_file(const char *path, size_t *len);
/* A growing byte buffer for building files in memory (little-endian hosts). */
typedef struct {
    unsigned char *b;
    size_t n, cap;
} sks_test_buf;
void sks_test_put(sks_test_buf *g, const void *p, size_t l);
void sks_test_u32(sks_test_buf *g, uint32_t v);
void sks_test_u64(sks_test_buf *g, uint64_t v);
void sks_test_gguf_str(sks_test_buf *g, const char *s); /* GGUF string: u64 length, bytes */
/* GGUF pieces: the header (magic "GGUF", version, tensor and metadata counts); metadata
 * pairs of one string, u32 or f32 value; the start of an array pair (key, ARRAY, element
 * type, count), the elements following. */
void sks_test_gguf_head(sks_test_buf *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv);
void sks_test_gguf_kv_str(sks_test_buf *g, const char *key, const char *val);
void sks_test_gguf_kv_u32(sks_test_buf *g, const char *key, uint32_t val);
void sks_test_gguf_kv_f32(sks_test_buf *g, const char *key, float val);
void sks_test_gguf_arr(sks_test_buf *g, const char *key, uint32_t elem_type, uint64_t n);
/* Relative difference |a-b| / max(|b|, floor). */
double sks_test_reldiff(double a, double b, double floor_);
/* Seeded test generator (splitmix64): a uniform 64-bit word, a standard normal. */
uint64_t sks_test_rng_u64(uint64_t *state);
double sks_test_rng_gauss(uint64_t *state);
/* A llama-shaped arch for in-memory models (sks_model_new_memory): L layers, width d,
 * FFN f, H heads (Hkv key/value heads of dh), vocabulary V; eps 1e-5, theta 10000, tied
 * embeddings, BOS 1, EOS 2. */
void sks_test_llama_arch(sks_arch *a, int L, int d, int f, int H, int Hkv, int dh, int V);
/* Set an f32 tensor of an in-memory model (c == 0: 1-D of r); a failure fails the test. */
void sks_test_set_f32(sks_model *m, sks_role role, int layer, int64_t r, int64_t c, const float *data);
/* The f32 weights of one llama-shaped layer, shapes from the model's arch: the two norms
 * (d), W_Q (H dh, d), W_K and W_V (Hkv dh, d), W_O (d, H dh), gate and up (f, d), down
 * (d, f). sks_test_set_llama_layer sets all nine on layer l. */
typedef struct {
    const float *attn_norm, *wq, *wk, *wv, *wo, *ffn_norm, *gate, *up, *down;
} sks_test_layer_w;
void sks_test_set_llama_layer(sks_model *m, int l, const sks_test_layer_w *w);
/* uniform in (0, 1): the top 53 bits of sks_test_rng_u64, centred in their interval */
double sks_test_rng_unif(uint64_t *state);

/* What the forward-pass hooks below record (hk.ud = the struct, want_attn_probs = 1):
 * alpha_0 per layer and head (sks_test_on_probs), and per residual block its max |h| and
 * a copy of it (sks_test_on_res; each where its array is not NULL). A test that records
 * more puts this struct first in its own. */
typedef struct {
    int L, H;
    double *a0;   /* (L, H) */
    double *hmax; /* (2L + 1) or NULL */
    float *res;   /* (2L + 1, T, d) or NULL */
} sks_test_cap;
/* A sks_test_cap for a model of arch a, recording alpha_0 and the block maxima (a0 and
 * hmax zeroed, res NULL); sks_test_cap_free releases them. */
sks_test_cap sks_test_cap_new(const sks_arch *a);
void sks_test_cap_free(sks_test_cap *c);
/* The family test data (test/data/families/<fam>/, made by scripts/make-family-refs.py and
 * make-moe-refs.py). sks_test_family_ref: its ref.json and the prompt's tokens (*T of
 * them, caller frees). sks_test_family_links: a fresh temporary folder holding links to
 * n of the family's files, names[i][0] linked as names[i][1]; caller removes it. */
json_t *sks_test_family_ref(const char *fam, int32_t **tok, int *T);
char *sks_test_family_links(const char *fam, int n, const char *const names[][2]);
/* A causal forward of m over tok (T tokens) with hooks hk, which record into c (c->a0,
 * c->hmax), checked against a transformers reference (test/data/families/<fam>/ref.json
 * and the MoE ones): alpha0 (L, H) within 1e-4, hidden_max at the L + 1 layer boundaries
 * (blocks 0, 2, ..., 2L) within 1e-4 relative, the logits at logit_positions within 1e-4
 * of their row's largest |logit|. A failure names "fam (how)"; worst gets the largest
 * error of each. */
void sks_test_run_family_ref(const json_t *ref, sks_model *m, const int32_t *tok, int T, const sks_fwd_hooks *hk,
                             const sks_test_cap *c, const char *fam, const char *how, double worst[3]);
/* Hooks that record into c (a sks_test_cap, or a struct that starts with one): on_residual
 * = sks_test_on_res, on_attn_probs = sks_test_on_probs, want_attn_probs = 1. */
sks_fwd_hooks sks_test_cap_hooks(void *c);
int sks_test_on_res(void *ud, int block, const float *h, int T, int d);
int sks_test_on_probs(void *ud, int layer, int head, const float *A, int T);

#endif
