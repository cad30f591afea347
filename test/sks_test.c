#define _XOPEN_SOURCE 700
#include "loaders/sks_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <errno.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sks_test.h"
#include "loaders/sks_gguf.h"

#ifndef SKS_FIXTURES
#define SKS_FIXTURES "../shared/fixtures"
#endif

static const char *sks__fixtures_root(void) {
    const char *e = getenv("SKS_FIXTURES");
    return (e && *e) ? e : SKS_FIXTURES;
}

void sks_test_cases(struct CMUnitTest *out, CMUnitTestFunction fn, const void *cases, size_t n, size_t size) {
    for (size_t i = 0; i < n; i++) {
        const char *c = (const char *)cases + i * size;
        const char *name;
        memcpy(&name, c, sizeof name);
        out[i] = (struct CMUnitTest){name, fn, NULL, NULL, (void *)(uintptr_t)c};
    }
}

const char *sks_test_fixture(const char *rel) {
    static char ring[8][4096];
    static int k;
    char *b = ring[k++ & 7];
    snprintf(b, 4096, "%s/%s", sks__fixtures_root(), rel);
    return b;
}

int sks_test_have_fixtures(void) {
    struct stat st;
    return stat(sks__fixtures_root(), &st) == 0 && S_ISDIR(st.st_mode);
}

json_t *sks_test_json(const char *path) {
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j) fail_msg("%s: line %d: %s", path, e.line, e.text);
    return j;
}

json_t *sks_test_fixture_json(const char *rel) { return sks_test_json(sks_test_fixture(rel)); }

sks_model *sks_test_open(const char *path) {
    sks_model *m = NULL;
    int rc = sks_model_open(path, &m);
    if (rc || !m) fail_msg("open %s: %s", path, sks_last_error());
    return m;
}

sks_model *sks_test_open_fixture(const char *rel) { return sks_test_open(sks_test_fixture(rel)); }

int32_t *sks_test_json_ids(const json_t *arr, int *n) {
    if (!json_is_array(arr)) fail_msg("token ids: not a JSON array");
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc(((size_t)*n + 1) * sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

int sks_test_json_seqs(const json_t *arr, int n_max, int32_t ***ids, int **lens) {
    int n = (int)json_array_size(arr);
    if (n > n_max) n = n_max;
    *ids = calloc((size_t)n + 1, sizeof **ids);
    *lens = calloc((size_t)n + 1, sizeof **lens);
    assert_true(*ids && *lens);
    for (int i = 0; i < n; i++) (*ids)[i] = sks_test_json_ids(json_array_get(arr, (size_t)i), &(*lens)[i]);
    return n;
}

void sks_test_free_seqs(int32_t **ids, int *lens, int n) {
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
}

char *sks_test_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/sks-test-XXXXXX", (t && *t) ? t : "/tmp");
    if (!mkdtemp(buf)) return NULL;
    return strdup(buf);
}

static int sks__rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void sks_test_rm_tree(const char *dir) {
    struct stat st;
    if (!dir || lstat(dir, &st) != 0) return;
    if (nftw(dir, sks__rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) fail_msg("removing %s: %s", dir, strerror(errno));
}

char *sks_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        if (len) *len = (size_t)n;
    }
    return b;
}

void sks_test_put(sks_test_buf *g, const void *p, size_t l) {
    if (g->n + l > g->cap) {
        g->cap = (g->n + l) * 2;
        g->b = realloc(g->b, g->cap);
        assert_non_null(g->b);
    }
    if (l) memcpy(g->b + g->n, p, l);
    g->n += l;
}
void sks_test_u32(sks_test_buf *g, uint32_t v) { sks_test_put(g, &v, 4); }
void sks_test_u64(sks_test_buf *g, uint64_t v) { sks_test_put(g, &v, 8); }
void sks_test_gguf_str(sks_test_buf *g, const char *s) {
    sks_test_u64(g, strlen(s));
    sks_test_put(g, s, strlen(s));
}

void sks_test_gguf_head(sks_test_buf *g, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    sks_test_put(g, "GGUF", 4);
    sks_test_u32(g, version);
    sks_test_u64(g, n_tensors);
    sks_test_u64(g, n_kv);
}
void sks_test_gguf_kv_str(sks_test_buf *g, const char *key, const char *val) {
    sks_test_gguf_str(g, key);
    sks_test_u32(g, SKS_GGUF_STRING);
    sks_test_gguf_str(g, val);
}
void sks_test_gguf_kv_u32(sks_test_buf *g, const char *key, uint32_t val) {
    sks_test_gguf_str(g, key);
    sks_test_u32(g, SKS_GGUF_UINT32);
    sks_test_u32(g, val);
}
void sks_test_gguf_kv_f32(sks_test_buf *g, const char *key, float val) {
    sks_test_gguf_str(g, key);
    sks_test_u32(g, SKS_GGUF_FLOAT32);
    sks_test_put(g, &val, 4);
}
void sks_test_gguf_arr(sks_test_buf *g, const char *key, uint32_t elem_type, uint64_t n) {
    sks_test_gguf_str(g, key);
    sks_test_u32(g, SKS_GGUF_ARRAY);
    sks_test_u32(g, elem_type);
    sks_test_u64(g, n);
}

double sks_test_reldiff(double a, double b, double floor_) {
    double den = fabs(b) > floor_ ? fabs(b) : floor_;
    return fabs(a - b) / den;
}

uint64_t sks_test_rng_u64(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double sks_test_rng_unif(uint64_t *s) { return ((sks_test_rng_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

double sks_test_rng_gauss(uint64_t *s) { /* Box-Muller on two uniforms in (0, 1) */
    double u1 = sks_test_rng_unif(s);
    double u2 = sks_test_rng_unif(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void sks_test_llama_arch(sks_arch *a, int L, int d, int f, int H, int Hkv, int dh, int V) {
    sks_arch_llama(a, L, d, f, H, Hkv, dh, V);
    a->tied_embeddings = 1;
}

void sks_test_set_f32(sks_model *m, sks_role role, int layer, int64_t r, int64_t c, const float *data) {
    int64_t s[2] = {r, c};
    int rc = sks_model_set_tensor(m, role, layer, SKS_DT_F32, c ? 2 : 1, s, data, NULL);
    if (rc) fail_msg("set_tensor %s (layer %d): %s", sks_role_name(role), layer, sks_last_error());
}

void sks_test_set_llama_layer(sks_model *m, int l, const sks_test_layer_w *w) {
    const sks_arch *a = sks_model_arch(m);
    int64_t d = a->d_model, f = a->d_ffn, q = (int64_t)a->n_heads * a->head_dim, kv = (int64_t)a->n_kv_heads * a->head_dim;
    sks_test_set_f32(m, SKS_ROLE_ATTN_NORM, l, d, 0, w->attn_norm);
    sks_test_set_f32(m, SKS_ROLE_WQ, l, q, d, w->wq);
    sks_test_set_f32(m, SKS_ROLE_WK, l, kv, d, w->wk);
    sks_test_set_f32(m, SKS_ROLE_WV, l, kv, d, w->wv);
    sks_test_set_f32(m, SKS_ROLE_WO, l, d, q, w->wo);
    sks_test_set_f32(m, SKS_ROLE_FFN_NORM, l, d, 0, w->ffn_norm);
    sks_test_set_f32(m, SKS_ROLE_W_GATE, l, f, d, w->gate);
    sks_test_set_f32(m, SKS_ROLE_W_UP, l, f, d, w->up);
    sks_test_set_f32(m, SKS_ROLE_W_DOWN, l, d, f, w->down);
}

#define SKS__FAMILIES SKS_SOURCE_DIR "/test/data/families/"

json_t *sks_test_family_ref(const char *fam, int32_t **tok, int *T) {
    char p[512];
    snprintf(p, sizeof p, SKS__FAMILIES "%s/ref.json", fam);
    json_t *ref = sks_test_json(p);
    *tok = sks_test_json_ids(json_object_get(ref, "tokens"), T);
    return ref;
}

char *sks_test_family_links(const char *fam, int n, const char *const names[][2]) {
    char *tmp = sks_test_tmpdir(), src[512], dst[4200];
    assert_non_null(tmp);
    for (int i = 0; i < n; i++) {
        snprintf(src, sizeof src, SKS__FAMILIES "%s/%s", fam, names[i][0]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, names[i][1]);
        if (symlink(src, dst) != 0) fail_msg("link %s as %s: %s", src, dst, strerror(errno));
    }
    return tmp;
}

static double sks__num(const json_t *a, size_t i) { return json_number_value(json_array_get(a, i)); }

static void sks__check_family_ref(const json_t *ref, const sks_test_cap *c, const float *logits, int V, const char *what,
                                  double worst[3]) {
    const int L = c->L, H = c->H;
    const json_t *ja = json_object_get(ref, "alpha0"), *jh = json_object_get(ref, "hidden_max");
    assert_int_equal((int)json_array_size(ja), L);
    assert_int_equal((int)json_array_size(jh), L + 1);
    worst[0] = worst[1] = worst[2] = 0;
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) {
            double want = sks__num(json_array_get(ja, (size_t)l), (size_t)h), err = fabs(c->a0[l * H + h] - want);
            worst[0] = fmax(worst[0], err);
            if (!(err <= 1e-4)) fail_msg("%s alpha0[%d][%d]: got %.7f want %.7f", what, l, h, c->a0[l * H + h], want);
        }
    for (int i = 0; i <= L; i++) {
        double want = sks__num(jh, (size_t)i), got = c->hmax[2 * i];
        double err = fabs(got - want) / fmax(fabs(want), 1e-30);
        worst[1] = fmax(worst[1], err);
        if (!(err <= 1e-4)) fail_msg("%s hidden_max[%d]: got %.7g want %.7g (rel %.2g)", what, i, got, want, err);
    }
    const json_t *jp = json_object_get(ref, "logit_positions"), *jl = json_object_get(ref, "logits");
    for (size_t r = 0; r < json_array_size(jp); r++) {
        int pos = (int)json_integer_value(json_array_get(jp, r));
        const json_t *row = json_array_get(jl, r);
        assert_int_equal((int)json_array_size(row), V);
        double scale = 0;
        for (int i = 0; i < V; i++) scale = fmax(scale, fabs(sks__num(row, (size_t)i)));
        for (int i = 0; i < V; i++) {
            double want = sks__num(row, (size_t)i), got = logits[(size_t)pos * V + i];
            double err = fabs(got - want) / fmax(scale, 1e-6);
            worst[2] = fmax(worst[2], err);
            if (!(err <= 1e-4))
                fail_msg("%s logit[%d][%d]: got %.7g want %.7g (%.2g of the row's max)", what, pos, i, got, want, err);
        }
    }
}

void sks_test_run_family_ref(const json_t *ref, sks_model *m, const int32_t *tok, int T, const sks_fwd_hooks *hk,
                             const sks_test_cap *c, const char *fam, const char *how, double worst[3]) {
    const int V = sks_model_arch(m)->vocab_size;
    float *logits = malloc((size_t)T * V * sizeof(float));
    sks_forward *f = NULL;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    if (sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, hk, logits, 0)) fail_msg("%s: %s", fam, sks_last_error());
    char what[128];
    snprintf(what, sizeof what, "%s (%s)", fam, how);
    sks__check_family_ref(ref, c, logits, V, what, worst);
    sks_forward_free(f);
    free(logits);
}

sks_test_cap sks_test_cap_new(const sks_arch *a) {
    const int L = a->n_layers, H = a->n_heads;
    sks_test_cap c = {L, H, calloc((size_t)L * H, sizeof(double)), calloc((size_t)(2 * L + 1), sizeof(double)), NULL};
    assert_true(c.a0 && c.hmax);
    return c;
}

void sks_test_cap_free(sks_test_cap *c) {
    free(c->a0);
    free(c->hmax);
    free(c->res);
}

sks_fwd_hooks sks_test_cap_hooks(void *c) {
    sks_fwd_hooks hk = {0};
    hk.ud = c;
    hk.on_residual = sks_test_on_res;
    hk.on_attn_probs = sks_test_on_probs;
    hk.want_attn_probs = 1;
    return hk;
}

int sks_test_on_res(void *ud, int block, const float *h, int T, int d) {
    sks_test_cap *c = ud;
    if (c->hmax)
        for (int i = 0; i < T * d; i++) c->hmax[block] = fmax(c->hmax[block], fabs((double)h[i]));
    if (c->res) memcpy(c->res + (size_t)block * T * d, h, (size_t)T * d * sizeof(float));
    return 0;
}

/* alpha_0 = mean over the T queries of the probability on key 0 (A is (T, T)) */
int sks_test_on_probs(void *ud, int layer, int head, const float *A, int T) {
    sks_test_cap *c = ud;
    double s = 0;
    for (int i = 0; i < T; i++) s += A[(size_t)i * T];
    c->a0[layer * c->H + head] = s / T;
    return 0;
}
