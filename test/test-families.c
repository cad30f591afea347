/* test-families.c - every family's forward pass against transformers' own outputs.
 *
 * test/data/families/<family>/ holds a tiny random checkpoint made by
 * scripts/make-family-refs.py with transformers 5.17 (save_pretrained, bf16, new-style
 * config.json, plus the same config in the classic style as config.classic.json), its
 * GGUF made by llama.cpp's convert_hf_to_gguf.py (how.txt says how each file was made),
 * and ref.json: transformers' eager f32 outputs on the bf16 weights for a 24-token
 * prompt: alpha_0 per layer and head, max |h| of the embeddings and of every layer's
 * output, the logits at the first and last positions.
 *
 * Each family is read three ways (HF new config, HF classic config, GGUF; GPT-2 also with
 * the base-model names without "transformer.") and must match:
 * alpha_0 within 1e-4 absolute (a mean of probabilities), the hidden maxima within 1e-4
 * relative, and the logits within 1e-4 of their row's largest |logit| (STYLE 13).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"

#define DATA SKS_SOURCE_DIR "/test/data/families/"

/* dir/model.safetensors: fam's weights under the multimodal prefix pre ("model.language_model."
 * or "language_model.model."), the data section copied as it is (offsets are relative to
 * it), plus a vision tensor that the loader must ignore; dir/config.json: fam's config as
 * the text_config of a Gemma3ForConditionalGeneration config. */
static void write_multimodal(const char *fam, const char *dir, const char *pre) {
    char p[600];
    snprintf(p, sizeof p, DATA "%s/model.safetensors", fam);
    size_t n;
    char *img = sks_test_read_file(p, &n);
    assert_non_null(img);
    uint64_t hl;
    memcpy(&hl, img, 8);
    json_error_t e;
    json_t *h = json_loadb(img + 8, (size_t)hl, 0, &e), *h2 = json_object();
    assert_non_null(h);
    const char *k;
    json_t *v;
    uint64_t end = 0;
    json_object_foreach(h, k, v) {
        char nk[400];
        if (!strcmp(k, "__metadata__")) {
            json_object_set(h2, k, v);
            continue;
        }
        snprintf(nk, sizeof nk, "%s%s", pre, k + strlen("model."));
        json_object_set(h2, nk, v);
        uint64_t e1 = (uint64_t)json_integer_value(json_array_get(json_object_get(v, "data_offsets"), 1));
        if (e1 > end) end = e1;
    }
    /* a vision weight after the text data: 4 bf16 zeros */
    json_object_set_new(h2, "model.vision_tower.patch_embed.weight",
                        json_pack("{s:s, s:[i,i], s:[I,I]}", "dtype", "BF16", "shape", 2, 2, "data_offsets",
                                  (json_int_t)end, (json_int_t)(end + 8)));
    char *txt = json_dumps(h2, JSON_COMPACT);
    uint64_t nl = strlen(txt);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    const char zeros[8] = {0};
    assert_int_equal(fwrite(&nl, 8, 1, f), 1);
    assert_int_equal(fwrite(txt, 1, nl, f), nl);
    assert_int_equal(fwrite(img + 8 + hl, 1, n - 8 - hl, f), n - 8 - hl);
    assert_int_equal(fwrite(zeros, 1, 8, f), 8);
    fclose(f);
    free(txt);
    json_decref(h);
    json_decref(h2);
    free(img);
    snprintf(p, sizeof p, DATA "%s/config.json", fam);
    json_t *tc = json_load_file(p, 0, &e), *root = json_object();
    assert_non_null(tc);
    json_object_del(tc, "architectures");
    json_object_set_new(root, "architectures", json_pack("[s]", "Gemma3ForConditionalGeneration"));
    json_object_set_new(root, "model_type", json_string("gemma3"));
    json_object_set_new(root, "text_config", tc);
    json_object_set_new(root, "vision_config", json_pack("{s:i}", "hidden_size", 8));
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(json_dump_file(root, p, JSON_INDENT(1)), 0);
    json_decref(root);
}

/* the family's weights, linked into a temporary folder */
static const char *const k_weights[][2] = {{"model.safetensors", "model.safetensors"}};

/* Open dir with config (NULL: its own config.json), or the GGUF file. */
static sks_model *open_variant(const char *fam, const char *how, char **tmp_out) {
    char p[512];
    *tmp_out = NULL;
    sks_model *m = NULL;
    int rc;
    if (!strcmp(how, "gguf")) {
        snprintf(p, sizeof p, DATA "%s/model.gguf", fam);
        rc = sks_model_open(p, &m);
    } else if (!strcmp(how, "classic")) {
        /* a folder with config.classic.json as config.json and the same weights */
        char *tmp = sks_test_family_links(fam, 1, k_weights), src[512], dst[512];
        snprintf(src, sizeof src, DATA "%s/config.classic.json", fam);
        size_t n;
        char *txt = sks_test_read_file(src, &n);
        assert_non_null(txt);
        snprintf(dst, sizeof dst, "%s/config.json", tmp);
        FILE *f = fopen(dst, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(txt, 1, n, f), n);
        fclose(f);
        free(txt);
        rc = sks_model_open(tmp, &m);
        *tmp_out = tmp;
    } else if (!strcmp(how, "bare")) {
        /* GPT-2 as base-model checkpoints name it: model.bare.safetensors (no
         * "transformer." prefix) as model.safetensors beside the same config */
        static const char *const files[][2] = {{"model.bare.safetensors", "model.safetensors"}, {"config.json", "config.json"}};
        char *tmp = sks_test_family_links(fam, 2, files);
        rc = sks_model_open(tmp, &m);
        *tmp_out = tmp;
    } else if (!strncmp(how, "mm", 2)) {
        char *tmp = sks_test_tmpdir();
        write_multimodal(fam, tmp, !strcmp(how, "mm5") ? "model.language_model." : "language_model.model.");
        rc = sks_model_open(tmp, &m);
        *tmp_out = tmp;
    } else {
        snprintf(p, sizeof p, DATA "%s", fam);
        rc = sks_model_open(p, &m);
    }
    if (rc) fail_msg("%s (%s): %s", fam, how, sks_last_error());
    return m;
}

static void rm_tmp(char *tmp) {
    sks_test_rm_tree(tmp);
    free(tmp);
}

static void check_family_ways(const char *fam, const char *want_family, const char *const *hows, int n_hows) {
    int T;
    int32_t *tok;
    json_t *ref = sks_test_family_ref(fam, &tok, &T);
    for (int v = 0; v < n_hows; v++) {
        char *tmp;
        sks_model *m = open_variant(fam, hows[v], &tmp);
        const sks_arch *a = sks_model_arch(m);
        assert_string_equal(a->family, want_family);
        sks_test_cap c = sks_test_cap_new(a);
        sks_fwd_hooks hk = sks_test_cap_hooks(&c);
        double w[3];
        sks_test_run_family_ref(ref, m, tok, T, &hk, &c, fam, hows[v], w);
        fprintf(stderr, "%-7s %-8s alpha0 %.1e  hidden max %.1e rel  logits %.1e of the row max\n", fam, hows[v], w[0],
                w[1], w[2]);
        sks_test_cap_free(&c);
        sks_model_close(m);
        rm_tmp(tmp);
    }
    free(tok);
    json_decref(ref);
}

/* The families against their transformers references, each in the ways it can be stored
 * (hf: the HF safetensors, classic and gguf: converted). */
typedef struct {
    const char *test, *fam, *family;
    const char *hows[4];
} family_case;

static const family_case k_families[] = {
    {"test_gemma", "gemma", "gemma", {"hf", "classic", "gguf"}},
    {"test_gemma2", "gemma2", "gemma2", {"hf", "classic", "gguf"}},
    {"test_gemma3", "gemma3", "gemma3", {"hf", "classic", "gguf"}},
    /* multimodal Gemma 3 checkpoints: the text weights under model.language_model.
     * (transformers 5) or language_model.model. (4.x), the fields in text_config */
    {"test_gemma3_multimodal", "gemma3", "gemma3", {"mm5", "mm4"}},
    {"test_olmo2", "olmo2", "olmo2", {"hf", "classic", "gguf"}},
    {"test_phi3", "phi3", "phi3", {"hf", "classic", "gguf"}},
    /* GPT-2: Conv1D weights (transposed views), LayerNorm, learned positions, biases; also
     * the base-model names without "transformer." */
    {"test_gpt2", "gpt2", "gpt2", {"hf", "classic", "bare", "gguf"}},
    /* the same family with random linear biases (transformers starts them at zero, so
     * the folder above checks the bias path only against the f64 reference below) */
    {"test_gpt2_biases", "gpt2-bias", "gpt2", {"hf", "classic", "bare", "gguf"}},
};

static void test_family(void **s) {
    const family_case *k = *s;
    int n = 0;
    while (n < 4 && k->hows[n]) n++;
    check_family_ways(k->fam, k->family, k->hows, n);
}

/* Independent tokens (the vocabulary sweep) sit at position 0 with its learned position
 * row: each one's logits equal a causal pass over that token alone. */
static void test_gpt2_independent(void **s) {
    (void)s;
    char *tmp;
    sks_model *m = open_variant("gpt2", "hf", &tmp);
    const int V = sks_model_arch(m)->vocab_size;
    const int32_t tok[3] = {5, 77, 301};
    float *li = malloc((size_t)3 * V * sizeof(float)), *lc = malloc((size_t)V * sizeof(float));
    sks_forward *f = NULL;
    assert_int_equal(sks_forward_new(m, 3, &f), 0);
    assert_int_equal(sks_forward_run(f, tok, 3, SKS_FWD_INDEPENDENT, NULL, li, 0), 0);
    for (int t = 0; t < 3; t++) {
        assert_int_equal(sks_forward_run(f, &tok[t], 1, SKS_FWD_CAUSAL, NULL, lc, 0), 0);
        double scale = 0, err = 0;
        for (int i = 0; i < V; i++) scale = fmax(scale, fabs(lc[i]));
        for (int i = 0; i < V; i++) err = fmax(err, fabs(li[(size_t)t * V + i] - lc[i]));
        if (!(err <= 1e-5 * scale)) fail_msg("token %d: independent vs causal alone differ by %g (row max %g)", tok[t], err, scale);
    }
    /* positions past the table are refused */
    int32_t *many = calloc(200, sizeof *many);
    sks_forward *f2 = NULL;
    assert_int_equal(sks_forward_new(m, 200, &f2), 0);
    assert_int_equal(sks_forward_run(f2, many, 200, SKS_FWD_CAUSAL, NULL, NULL, 0), SKS_EARG);
    assert_non_null(strstr(sks_last_error(), "learned positions"));
    free(many);
    sks_forward_free(f2);
    sks_forward_free(f);
    free(li);
    free(lc);
    sks_model_close(m);
    rm_tmp(tmp);
}

/* GPT-2 against a float64 reference written here from the GPT-2 definition, on the
 * checkpoint's weights (read through the transposed views) with every bias replaced by
 * random values (the transformers checkpoint starts them at zero), as a memory model:
 *   h = E[t] + P[p]; per layer: a = LN1(h); q|k|v = a W^T + b; h += softmax(q k^T /
 *   sqrt(dh)) v W_O^T + b_O; m = LN2(h); h += gelu_tanh(m W_up^T + b_up) W_down^T + b_down;
 *   logits = LN_f(h) E^T,  LN(x) = (x - mean) / sqrt(var + eps) w + b.
 * Logits within 1e-4 of the row's largest |logit|. */
static void ln64(const double *x, int d, const float *w, const float *b, double eps, double *out) {
    double mu = 0, var = 0;
    for (int c = 0; c < d; c++) mu += x[c];
    mu /= d;
    for (int c = 0; c < d; c++) var += (x[c] - mu) * (x[c] - mu);
    var /= d;
    for (int c = 0; c < d; c++) out[c] = (x[c] - mu) / sqrt(var + eps) * w[c] + b[c];
}
static void mv64(const float *W, const float *b, const double *x, int out, int in, double *y) {
    for (int r = 0; r < out; r++) {
        double acc = b ? b[r] : 0;
        for (int c = 0; c < in; c++) acc += (double)W[(size_t)r * in + c] * x[c];
        y[r] = acc;
    }
}

static void test_gpt2_f64(void **st) {
    (void)st;
    char *tmp;
    sks_model *fm = open_variant("gpt2", "hf", &tmp);
    const sks_arch *a = sks_model_arch(fm);
    const int d = a->d_model, f = a->d_ffn, H = a->n_heads, dh = a->head_dim, L = a->n_layers, V = a->vocab_size, T = 9;
    sks_model *m = NULL;
    assert_int_equal(sks_model_new_memory(a, &m), 0);
    float *bufs[SKS_ROLE_COUNT * 8] = {0};
    int nb = 0;
    uint64_t rng = 12345;
    for (int r = 0; r < SKS_ROLE_COUNT; r++)
        for (int l = -1; l < L; l++) {
            const sks_tensor *t = sks_model_tensor(fm, (sks_role)r, l);
            if (!t || (l < 0) == sks_role_is_per_layer((sks_role)r)) continue;
            int64_t rows = sks_tensor_rows(t), cols = t->ndim == 2 ? t->shape[1] : 1;
            float *v = malloc((size_t)(rows * cols) * sizeof *v);
            assert_int_equal(sks_tensor_rows_f32(t, 0, t->ndim == 2 ? rows : 1, v), 0);
            int bias = r == SKS_ROLE_BQ || r == SKS_ROLE_BK || r == SKS_ROLE_BV || r == SKS_ROLE_BO ||
                       r == SKS_ROLE_B_UP || r == SKS_ROLE_B_DOWN;
            for (int64_t i = 0; bias && i < rows; i++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                v[i] = (float)((double)(rng >> 40) / (double)(1ULL << 24) - 0.5) * 0.4f;
            }
            int64_t sh[2] = {rows, cols};
            assert_int_equal(sks_model_set_tensor(m, (sks_role)r, l, SKS_DT_F32, t->ndim, sh, v, t->name), 0);
            bufs[nb++] = v;
        }
    assert_int_equal(sks_model_validate(m), 0);
#define T_(role, l) ((const float *)sks_model_tensor(m, role, l)->data)
    int32_t tok[9] = {0, 17, 400, 3, 99, 250, 511, 64, 128};
    double *h = calloc((size_t)T * d, sizeof *h), *x = calloc((size_t)T * d, sizeof *x);
    double *q = calloc((size_t)T * d, sizeof *q), *k = calloc((size_t)T * d, sizeof *k), *v = calloc((size_t)T * d, sizeof *v);
    double *o = calloc((size_t)T * d, sizeof *o), *u = calloc((size_t)f, sizeof *u), *y = calloc((size_t)d, sizeof *y);
    double *lg = calloc((size_t)T * V, sizeof *lg);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < d; c++)
            h[t * d + c] = (double)T_(SKS_ROLE_EMBED, -1)[(size_t)tok[t] * d + c] + T_(SKS_ROLE_POS_EMBED, -1)[(size_t)t * d + c];
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < T; t++) {
            ln64(h + t * d, d, T_(SKS_ROLE_ATTN_NORM, l), T_(SKS_ROLE_ATTN_NORM_B, l), a->norm_eps, x + t * d);
            mv64(T_(SKS_ROLE_WQ, l), T_(SKS_ROLE_BQ, l), x + t * d, d, d, q + t * d);
            mv64(T_(SKS_ROLE_WK, l), T_(SKS_ROLE_BK, l), x + t * d, d, d, k + t * d);
            mv64(T_(SKS_ROLE_WV, l), T_(SKS_ROLE_BV, l), x + t * d, d, d, v + t * d);
        }
        for (int t = 0; t < T; t++)
            for (int hh = 0; hh < H; hh++) {
                double sc[9], mx = -1e300, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double s2 = 0;
                    for (int i = 0; i < dh; i++) s2 += q[t * d + hh * dh + i] * k[j * d + hh * dh + i];
                    sc[j] = s2 / sqrt((double)dh);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= t; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int i = 0; i < dh; i++) {
                    double acc = 0;
                    for (int j = 0; j <= t; j++) acc += sc[j] / sum * v[j * d + hh * dh + i];
                    o[t * d + hh * dh + i] = acc;
                }
            }
        for (int t = 0; t < T; t++) {
            mv64(T_(SKS_ROLE_WO, l), T_(SKS_ROLE_BO, l), o + t * d, d, d, y);
            for (int c = 0; c < d; c++) h[t * d + c] += y[c];
            ln64(h + t * d, d, T_(SKS_ROLE_FFN_NORM, l), T_(SKS_ROLE_FFN_NORM_B, l), a->norm_eps, x + t * d);
            mv64(T_(SKS_ROLE_W_UP, l), T_(SKS_ROLE_B_UP, l), x + t * d, f, d, u);
            for (int j = 0; j < f; j++)
                u[j] = 0.5 * u[j] * (1 + tanh(sqrt(2 / M_PI) * (u[j] + 0.044715 * u[j] * u[j] * u[j])));
            mv64(T_(SKS_ROLE_W_DOWN, l), T_(SKS_ROLE_B_DOWN, l), u, d, f, y);
            for (int c = 0; c < d; c++) h[t * d + c] += y[c];
        }
    }
    for (int t = 0; t < T; t++) {
        ln64(h + t * d, d, T_(SKS_ROLE_FINAL_NORM, -1), T_(SKS_ROLE_FINAL_NORM_B, -1), a->norm_eps, x + t * d);
        mv64(T_(SKS_ROLE_EMBED, -1), NULL, x + t * d, V, d, lg + (size_t)t * V);
    }
#undef T_
    float *got = malloc((size_t)T * V * sizeof *got);
    sks_forward *fw = NULL;
    assert_int_equal(sks_forward_new(m, T, &fw), 0);
    assert_int_equal(sks_forward_run(fw, tok, T, SKS_FWD_CAUSAL, NULL, got, 0), 0);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        double scale = 0;
        for (int i = 0; i < V; i++) scale = fmax(scale, fabs(lg[(size_t)t * V + i]));
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs(got[(size_t)t * V + i] - lg[(size_t)t * V + i]) / scale);
    }
    fprintf(stderr, "gpt2    f64 ref  logits %.1e of the row max (random biases)\n", worst);
    if (!(worst <= 1e-4)) fail_msg("gpt2 vs the f64 reference: logits differ by %.3g of the row max", worst);
    sks_forward_free(fw);
    free(got), free(h), free(x), free(q), free(k), free(v), free(o), free(u), free(y), free(lg);
    sks_model_close(m);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    sks_model_close(fm);
    rm_tmp(tmp);
}

/* ---- bad input: one clear line and exit 1 --------------------------------------------- */

/* A folder with fam's weights and its config.json edited by edit(root); returns the path. */
static char *edited_copy(const char *fam, void (*edit)(json_t *root)) {
    char *tmp = sks_test_family_links(fam, 1, k_weights), src[512], dst[600];
    snprintf(src, sizeof src, DATA "%s/config.json", fam);
    json_t *root = sks_test_json(src);
    edit(root);
    snprintf(dst, sizeof dst, "%s/config.json", tmp);
    assert_int_equal(json_dump_file(root, dst, JSON_INDENT(1)), 0);
    json_decref(root);
    return tmp;
}

/* sinkscope inspect DIR: exit status 1 and exactly one line on stderr holding want. */
static void expect_one_line(const char *dir, int want_code, const char *want) {
    sks_model *m = NULL;
    int rc = sks_model_open(dir, &m);
    assert_int_equal(rc, want_code);
    if (!strstr(sks_last_error(), want)) fail_msg("message '%s' lacks '%s'", sks_last_error(), want);
    char cmd[1400], errf[700];
    snprintf(errf, sizeof errf, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s' inspect '%s' > /dev/null 2> '%s'", SKS_BINARY, dir, errf);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    size_t n;
    char *txt = sks_test_read_file(errf, &n);
    assert_non_null(txt);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += txt[i] == '\n';
    if (lines != 1 || !strstr(txt, want)) fail_msg("stderr is not one line naming '%s': %s", want, txt);
    free(txt);
    unlink(errf);
}

static void drop_qpas(json_t *r) { json_object_del(r, "query_pre_attn_scalar"); }
static void rope_unknown(json_t *r) {
    json_object_set_new(json_object_get(r, "rope_parameters"), "rope_type", json_string("wobble"));
}
static void kv_heads_4(json_t *r) { json_object_set_new(r, "num_key_value_heads", json_integer(4)); }
static void as_gemma3(json_t *r) {
    json_array_set_new(json_object_get(r, "architectures"), 0, json_string("Gemma3ForCausalLM"));
}

/* dir: the GPT-2 checkpoint with layer 0's c_fc.weight header saying [128, 64] (the
 * same bytes: a writer that stored W rather than W^T), and its config. */
static void write_gpt2_c_fc_transposed(const char *dir) {
    char p[600];
    size_t n;
    char *img = sks_test_read_file(DATA "gpt2/model.safetensors", &n);
    assert_non_null(img);
    uint64_t hl;
    memcpy(&hl, img, 8);
    json_error_t e;
    json_t *h = json_loadb(img + 8, (size_t)hl, 0, &e);
    assert_non_null(h);
    json_t *t = json_object_get(h, "transformer.h.0.mlp.c_fc.weight");
    assert_non_null(t);
    json_object_set_new(t, "shape", json_pack("[i,i]", 128, 64));
    char *txt = json_dumps(h, JSON_COMPACT);
    uint64_t nl = strlen(txt), pad = (8 - nl % 8) % 8; /* the data stays 8-aligned */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    nl += pad;
    assert_int_equal(fwrite(&nl, 8, 1, f), 1);
    assert_int_equal(fwrite(txt, 1, nl - pad, f), nl - pad);
    assert_int_equal(fwrite("        ", 1, pad, f), pad);
    assert_int_equal(fwrite(img + 8 + hl, 1, n - 8 - hl, f), n - 8 - hl);
    fclose(f);
    free(txt);
    json_decref(h);
    free(img);
    snprintf(p, sizeof p, "%s/config.json", dir);
    assert_int_equal(symlink(SKS_SOURCE_DIR "/test/data/families/gpt2/config.json", p), 0);
}

static void drop_n_embd(json_t *r) { json_object_del(r, "n_embd"); }
static void inverse_layer_idx(json_t *r) { json_object_set_new(r, "scale_attn_by_inverse_layer_idx", json_true()); }
static void unscaled(json_t *r) { json_object_set_new(r, "scale_attn_weights", json_false()); }
static void relu(json_t *r) { json_object_set_new(r, "activation_function", json_string("relu")); }
static void n_inner_96(json_t *r) { json_object_set_new(r, "n_inner", json_integer(96)); }
static void n_positions_64(json_t *r) { json_object_set_new(r, "n_positions", json_integer(64)); }
static void n_head_5(json_t *r) { json_object_set_new(r, "n_head", json_integer(5)); }

static void test_bad_input(void **s) {
    (void)s;
    struct {
        const char *fam;
        void (*edit)(json_t *);
        int code;
        const char *want;
    } cases[] = {
        /* a family's required field absent */
        {"gemma2", drop_qpas, SKS_ENOTFOUND, "missing required key 'query_pre_attn_scalar'"},
        /* a known family with an unsupported option */
        {"gemma", rope_unknown, SKS_EUNSUPPORTED, "rope type 'wobble' is not supported"},
        /* tensors of the wrong shape for the family: OLMo 2's k_norm spans the whole key
         * projection, Hkv dh = 32, and the config now says 4 KV heads (64) */
        {"olmo2", kv_heads_4, SKS_ECONFIG, "self_attn.k_norm.weight has shape [32, 1], the architecture needs [64, 1]"},
        /* a role the family needs is absent (Gemma 3 has per-head q/k norms) */
        {"gemma2", as_gemma3, SKS_ECONFIG, "model.layers.0.self_attn.q_norm.weight (q_norm) is missing for family gemma3"},
        /* GPT-2: a needed field absent, options the forward does not have, shapes that
         * disagree with the config (the Conv1D view is (out, in) = (n_inner, n_embd)) */
        {"gpt2", drop_n_embd, SKS_ENOTFOUND, "missing required key 'n_embd'"},
        {"gpt2", inverse_layer_idx, SKS_EUNSUPPORTED, "scale_attn_by_inverse_layer_idx = true is not supported"},
        {"gpt2", unscaled, SKS_EUNSUPPORTED, "scale_attn_weights = false (unscaled scores) is not supported"},
        {"gpt2", relu, SKS_EUNSUPPORTED, "activation_function 'relu' is not supported"},
        {"gpt2", n_inner_96, SKS_ECONFIG, "c_fc.weight: Conv1D weight stored (in, out) = [64, 128], the architecture needs [64, 96]"},
        {"gpt2", n_positions_64, SKS_ECONFIG, "transformer.wpe.weight has shape [128, 64], the architecture needs [64, 64]"},
        {"gpt2", n_head_5, SKS_ECONFIG, "n_embd 64 is not a multiple of n_head 5"},
    };
    /* a Conv1D weight stored as (out, in), i.e. already transposed: the file's shape is named */
    {
        char *dir = sks_test_tmpdir();
        write_gpt2_c_fc_transposed(dir);
        expect_one_line(dir, SKS_ECONFIG,
                        "h.0.mlp.c_fc.weight: Conv1D weight stored (in, out) = [128, 64], the architecture needs [64, 128]");
        rm_tmp(dir);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dir = edited_copy(cases[i].fam, cases[i].edit);
        expect_one_line(dir, cases[i].code, cases[i].want);
        rm_tmp(dir);
    }
}

int main(void) {
    enum { NF = sizeof k_families / sizeof k_families[0] };
    struct CMUnitTest tests[NF + 3] = {
        [NF] = cmocka_unit_test(test_gpt2_independent),
        cmocka_unit_test(test_gpt2_f64),
        cmocka_unit_test(test_bad_input),
    };
    sks_test_cases(tests, test_family, k_families, NF, sizeof k_families[0]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
