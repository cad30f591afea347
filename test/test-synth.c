/* test-synth.c - synthetic checkpoints: loader round trip, sharding, determinism,
 * real-model shapes of the presets, the planted S_c eigenpair against a dense LAPACK
 * reference, and the planted spikes and sinks recovered by the forward trace. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lapacke.h>

#include "sks_test.h"
#include "analysis/sks_synth.h"
#include "analysis/sks_trace.h"
#include "loaders/sks_model.h"


static int file_exists(const char *dir, const char *name) {
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* sks_model_open that must succeed (the message on stderr otherwise). */
static sks_model *open_ok(const char *dir) {
    sks_model *m = NULL;
    int rc = sks_model_open(dir, &m);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    return m;
}

static sks_synth *make(const char *preset, uint64_t seed) {
    sks_synth_config c;
    assert_int_equal(sks_synth_preset(preset, &c), 0);
    sks_synth *s = NULL;
    int rc = sks_synth_new(&c, seed, &s);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    return s;
}

/* Every tensor of the opened model equals the generator's rows (bit for bit in f32,
 * through sks_f32_to_bf16 in bf16). */
static void check_tensors_equal(const sks_synth *s, const sks_model *m, sks_dtype dt) {
    assert_int_equal(sks_model_n_tensors(m), sks_synth_n_tensors(s));
    for (size_t i = 0; i < sks_synth_n_tensors(s); i++) {
        const char *name;
        sks_role role;
        int layer, ndim;
        int64_t sh[2];
        assert_int_equal(sks_synth_tensor_info(s, i, &name, &role, &layer, &ndim, sh), 0);
        const sks_tensor *t = sks_model_tensor(m, role, layer);
        assert_non_null(t);
        assert_string_equal(t->name, name);
        assert_int_equal(t->dtype, dt);
        int64_t rows = ndim == 2 ? sh[0] : 1, cols = ndim == 2 ? sh[1] : sh[0];
        assert_true(sks_tensor_rows(t) == sh[0]);
        assert_true(sks_tensor_cols(t) == cols);
        float *ref = malloc((size_t)rows * (size_t)cols * sizeof *ref);
        assert_non_null(ref);
        assert_int_equal(sks_synth_rows(s, i, 0, rows, ref), 0);
        size_t n = (size_t)rows * (size_t)cols;
        if (dt == SKS_DT_F32) {
            assert_memory_equal(t->data, ref, n * 4);
        } else {
            const uint16_t *b = t->data;
            for (size_t k = 0; k < n; k++)
                if (b[k] != sks_f32_to_bf16(ref[k])) fail_msg("%s element %zu differs", name, k);
        }
        free(ref);
    }
}

static void test_tiny_roundtrip(void **state) {
    (void)state;
    sks_synth_config c;
    assert_int_equal(sks_synth_preset("tiny", &c), 0);
    sks_synth *s = make("tiny", 7);
    for (int pass = 0; pass < 2; pass++) {
        sks_dtype dt = pass ? SKS_DT_BF16 : SKS_DT_F32;
        char *dir = sks_test_tmpdir();
        assert_int_equal(sks_synth_write(s, dir, dt, 0), 0);
        assert_true(file_exists(dir, "model.safetensors"));
        assert_false(file_exists(dir, "model.safetensors.index.json"));
        assert_true(file_exists(dir, "planted.json"));
        sks_model *m = open_ok(dir);
        const sks_arch *a = sks_model_arch(m), *e = &c.arch;
        assert_string_equal(a->family, "llama");
        assert_int_equal(a->d_model, e->d_model);
        assert_int_equal(a->d_ffn, e->d_ffn);
        assert_int_equal(a->n_layers, e->n_layers);
        assert_int_equal(a->n_heads, e->n_heads);
        assert_int_equal(a->n_kv_heads, e->n_kv_heads);
        assert_int_equal(a->head_dim, e->head_dim);
        assert_int_equal(a->vocab_size, e->vocab_size);
        assert_int_equal(a->bos_id, e->bos_id);
        assert_int_equal(a->eos_id, e->eos_id);
        assert_int_equal(a->tied_embeddings, 0);
        assert_int_equal(a->rope_interleaved, 0);
        assert_true(fabs(a->norm_eps - e->norm_eps) < 1e-12 && fabs(a->rope_theta - e->rope_theta) < 1e-6);
        check_tensors_equal(s, m, dt);
        sks_model_close(m);
        sks_test_rm_tree(dir);
        free(dir);
    }
    sks_synth_free(s);
}

/* qwen2 family through --config JSON: biases, GQA 4:1, theta 1e6, tied embeddings. */
static const char *qwen_json =
    "{\"model_type\": \"qwen2\", \"hidden_size\": 96, \"intermediate_size\": 256, \"num_hidden_layers\": 5,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"vocab_size\": 300, \"rope_theta\": 1000000.0,"
    " \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": true, \"bos_token_id\": 5, \"eos_token_id\": 6,"
    " \"planted\": {\"spike_values\": [1500, -900, 700], \"step_up_layer\": 1, \"step_down_layer\": 4,"
    " \"dominance\": 5}}";

static void test_sharded_qwen_config(void **state) {
    (void)state;
    sks_synth_config c;
    assert_int_equal(sks_synth_config_from_json(qwen_json, "test.json", &c), 0);
    assert_string_equal(c.arch.family, "qwen2");
    assert_int_equal(c.arch.has_qkv_bias, 1);
    assert_int_equal(c.arch.head_dim, 24);
    assert_int_equal(c.n_spike, 3);
    sks_synth *s = NULL;
    assert_int_equal(sks_synth_new(&c, 3, &s), 0);
    char *dir = sks_test_tmpdir();
    /* a limit of 64 KB: the embedding (115 KB) gets a shard of its own */
    assert_int_equal(sks_synth_write(s, dir, SKS_DT_F32, 65536), 0);
    assert_true(file_exists(dir, "model.safetensors.index.json"));
    assert_false(file_exists(dir, "model.safetensors"));
    sks_model *m = NULL;
    int rc = sks_model_open(dir, &m);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    assert_true(sks_model_n_shards(m) > 3);
    const sks_arch *a = sks_model_arch(m);
    assert_string_equal(a->family, "qwen2");
    assert_int_equal(a->has_qkv_bias, 1);
    assert_int_equal(a->tied_embeddings, 1);
    assert_int_equal(a->n_kv_heads, 1);
    assert_int_equal(a->bos_id, 5);
    assert_null(sks_model_tensor(m, SKS_ROLE_LM_HEAD, -1));
    check_tensors_equal(s, m, SKS_DT_F32);
    /* every shard file is within the limit unless it holds a single tensor */
    int shards_with_one = 0;
    for (int k = 0; k < sks_model_n_shards(m); k++) {
        struct stat st;
        assert_int_equal(stat(sks_model_shard_path(m, k), &st), 0);
        int cnt = 0;
        for (size_t i = 0; i < sks_model_n_tensors(m); i++)
            if (sks_model_tensor_at(m, i, NULL, NULL)->shard == k) cnt++;
        if (cnt == 1) shards_with_one++;
        else assert_true(st.st_size <= 65536 + 4096);
    }
    assert_true(shards_with_one >= 1);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
    sks_synth_free(s);
}

static void test_config_json_errors(void **state) {
    (void)state;
    sks_synth_config c;
    assert_int_equal(sks_synth_config_from_json("{", "bad.json", &c), SKS_EFORMAT);
    assert_int_equal(sks_synth_config_from_json("[1]", "bad.json", &c), SKS_EFORMAT);
    assert_int_equal(sks_synth_config_from_json("{\"hidden_size\": \"64\"}", "bad.json", &c), SKS_ECONFIG);
    assert_non_null(strstr(sks_last_error(), "hidden_size"));
    assert_int_equal(sks_synth_config_from_json("{\"num_attention_heads\": 3}", "bad.json", &c), SKS_ECONFIG);
    assert_int_equal(sks_synth_config_from_json("{\"preset\": \"nope\"}", "bad.json", &c), SKS_EARG);
    assert_int_equal(sks_synth_preset("gpt-5", &c), SKS_EARG);
    /* step-down must leave a plateau of at least 3 blocks */
    assert_int_equal(sks_synth_config_from_json("{\"planted\": {\"step_up_layer\": 1, \"step_down_layer\": 2}}", "x", &c), 0);
    sks_synth *s = NULL;
    assert_int_equal(sks_synth_new(&c, 1, &s), SKS_EARG);
    assert_null(s);
}

/* Same seed: identical bytes in every file; different seed: different weights. */
static void test_deterministic(void **state) {
    (void)state;
    const char *files[] = {"config.json", "planted.json", "model-00001-of-00003.safetensors",
                           "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                           "model.safetensors.index.json"};
    char *dirs[3];
    for (int k = 0; k < 3; k++) {
        sks_synth *s = make("tiny", k < 2 ? 11 : 12);
        dirs[k] = sks_test_tmpdir();
        assert_int_equal(sks_synth_write(s, dirs[k], SKS_DT_BF16, 150000), 0);
        sks_synth_free(s);
    }
    int differ = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char p[3][4096];
        size_t n[3];
        char *b[3];
        for (int k = 0; k < 3; k++) {
            snprintf(p[k], sizeof p[k], "%s/%s", dirs[k], files[f]);
            b[k] = sks_test_read_file(p[k], &n[k]);
            assert_non_null(b[k]);
        }
        assert_true(n[0] == n[1]);
        assert_memory_equal(b[0], b[1], n[0]);
        if (strstr(files[f], "safetensors.") == NULL || strstr(files[f], "index")) {
            /* config and index are the same for both seeds; planted.json names the seed */
        }
        if (strstr(files[f], "-of-") && (n[0] != n[2] || memcmp(b[0], b[2], n[0]) != 0)) differ++;
        for (int k = 0; k < 3; k++) free(b[k]);
    }
    assert_int_equal(differ, 3);
    for (int k = 0; k < 3; k++) {
        sks_test_rm_tree(dirs[k]);
        free(dirs[k]);
    }
}

/* The presets have the shapes of the real models: parameter counts of Llama-2-7B,
 * Llama-3-8B and Qwen2.5-7B as published. */
static void test_preset_shapes(void **state) {
    (void)state;
    struct {
        const char *name;
        uint64_t params;
    } want[] = {{"llama2-7b", 6738415616ULL}, {"llama3-8b", 8030261248ULL}, {"qwen2.5-7b", 7615616512ULL}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        sks_synth *s = make(want[k].name, 1);
        uint64_t n = sks_synth_n_params(s);
        if (n != want[k].params) fail_msg("%s: %llu params, want %llu", want[k].name, (unsigned long long)n,
                                          (unsigned long long)want[k].params);
        sks_synth_free(s);
    }
}

/* Dense reference: S_c = 1/2 (G^T diag(D_c) U + U^T diag(D_c) G) from the generated
 * rows; its top eigenpair is (lambda*_c, +-s*) and |lambda_1/lambda_2| the planted
 * dominance. The random bulk is ~1e-3 of lambda* at this size, so 1% tolerances. */
static void check_eigenpair(sks_synth *s) {
    const sks_arch *a = sks_synth_arch(s);
    const sks_synth_planted *p = sks_synth_get_planted(s);
    const int d = a->d_model, f = a->d_ffn, ls = p->step_up_layer;
    float *G = malloc((size_t)f * d * 4), *U = malloc((size_t)f * d * 4), *Dn = malloc((size_t)d * f * 4);
    double *S = malloc((size_t)d * d * 8), *w = malloc((size_t)d * 8);
    assert_true(G && U && Dn && S && w);
    for (size_t i = 0; i < sks_synth_n_tensors(s); i++) {
        sks_role role;
        int layer;
        sks_synth_tensor_info(s, i, NULL, &role, &layer, NULL, NULL);
        if (layer != ls) continue;
        if (role == SKS_ROLE_W_GATE) sks_synth_rows(s, i, 0, f, G);
        if (role == SKS_ROLE_W_UP) sks_synth_rows(s, i, 0, f, U);
        if (role == SKS_ROLE_W_DOWN) sks_synth_rows(s, i, 0, d, Dn);
    }
    for (int c = 0; c < p->n_spike; c++) {
        const float *Dc = Dn + (size_t)p->channels[c] * f;
        for (int x = 0; x < d; x++)
            for (int y = 0; y < d; y++) {
                double acc = 0;
                for (int j = 0; j < f; j++) acc += Dc[j] * ((double)G[(size_t)j * d + x] * U[(size_t)j * d + y] +
                                                             (double)U[(size_t)j * d + x] * G[(size_t)j * d + y]);
                S[(size_t)x * d + y] = 0.5 * acc;
            }
        assert_int_equal(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', d, S, d, w), 0);
        /* eigenvalues ascending; the one of largest magnitude and the runner-up */
        int i1 = fabs(w[0]) > fabs(w[d - 1]) ? 0 : d - 1;
        double l1 = w[i1], l2 = 0;
        for (int k = 0; k < d; k++)
            if (k != i1 && fabs(w[k]) > fabs(l2)) l2 = w[k];
        assert_true(sks_test_reldiff(l1, p->lambda_star[c], 1e-9) < 0.01);
        assert_true(sks_test_reldiff(fabs(l1 / l2), p->dominance, 1e-9) < 0.02);
        double dot = 0;
        for (int k = 0; k < d; k++) dot += S[(size_t)k * d + i1] * p->s_star[k];
        assert_true(fabs(dot) > 0.999);
        /* the planted direction is a unit vector off the spike channels */
        for (int k = 0; k < p->n_spike; k++) assert_true(p->s_star[p->channels[k]] == 0.0f);
    }
    free(G);
    free(U);
    free(Dn);
    free(S);
    free(w);
}

static void test_planted_eigenpair(void **state) {
    (void)state;
    sks_synth *s = make("tiny", 5);
    check_eigenpair(s);
    sks_synth_free(s);
}

/* Forward trace on BOS + pseudo-random ids: the planted channels are spike channels of
 * token 0, born at the FFN of the step-up layer, > 100x the block median through the
 * plateau and removed at the step-down FFN; planted sink heads alpha_0 >= 0.5, every
 * other head < 0.2. Checked on the tiny preset for three seeds and on the qwen2 config. */
static void check_trace(sks_synth *s, sks_dtype dt) {
    char *dir = sks_test_tmpdir();
    assert_int_equal(sks_synth_write(s, dir, dt, 0), 0);
    sks_model *m = sks_test_open(dir);
    const sks_synth_planted *p = sks_synth_get_planted(s);
    const sks_arch *a = sks_model_arch(m);
    sks_trace_prompt_set ps;
    assert_int_equal(sks_trace_default_prompt_set(m, 3, 64, 1000, &ps), 0);
    for (int k = 0; k < ps.n; k++) assert_int_equal(ps.ids[k][0], p->bos_id);
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    o.ratio = 100;
    sks_trace_result *r = NULL;
    int rc = sks_trace_run(m, ps.n, ps.ptr, ps.lens, &o, &r);
    if (rc) fprintf(stderr, "%s\n", sks_last_error());
    assert_int_equal(rc, 0);
    int up = 2 * p->step_up_layer + 2, down = p->step_down_layer < a->n_layers ? 2 * p->step_down_layer + 2 : -1;
    int plateau_end = down > 0 ? down - 1 : 2 * a->n_layers;
    if (r->n_spike_tokens != 1 || r->n_spike_channels != p->n_spike) {
        for (int k = 0; k < r->n_lifecycles; k++)
            fprintf(stderr, "spike: token %d channel %d peak %.1f\n", r->lifecycles[k].token, r->lifecycles[k].channel,
                    r->lifecycles[k].peak_abs);
        for (int b = 0; b < r->n_blocks; b++) fprintf(stderr, "block %d median %.3f\n", b, r->blocks[b].median_abs);
    }
    assert_int_equal(r->n_spike_tokens, 1);
    assert_int_equal(r->spike_tokens[0], 0);
    assert_int_equal(r->n_spike_channels, p->n_spike);
    for (int c = 0; c < p->n_spike; c++) {
        int found = 0;
        for (int k = 0; k < r->n_spike_channels; k++) found += r->spike_channels[k] == p->channels[c];
        assert_int_equal(found, 1);
        const sks_lifecycle *lc = NULL;
        for (int k = 0; k < r->n_lifecycles; k++)
            if (r->lifecycles[k].token == 0 && r->lifecycles[k].channel == p->channels[c]) lc = &r->lifecycles[k];
        assert_non_null(lc);
        assert_int_equal(lc->main_up, up);
        if (down > 0) {
            int has = 0;
            for (int k = 0; k < lc->n_down; k++) has += lc->down_blocks[k] == down;
            assert_int_equal(has, 1);
        }
        for (int b = up; b <= plateau_end; b++) {
            double ratio = fabs(lc->values[b]) / r->blocks[b].median_abs;
            if (!(ratio > 100)) fail_msg("channel %d block %d: ratio %.1f", p->channels[c], b, ratio);
            /* sign and size as planted (within 10%) */
            assert_true(sks_test_reldiff(lc->values[b], p->values[c], 1) < 0.1);
        }
        for (int b = 0; b < up; b++) assert_true(fabs(lc->values[b]) < 0.01 * fabs(p->values[c]));
    }
    for (int l = 0; l < a->n_layers; l++)
        for (int h = 0; h < a->n_heads; h++) {
            double a0 = r->alpha[((size_t)l * a->n_heads + h) * r->n_alpha];
            if (sks_synth_is_sink(s, l, h)) {
                if (!(a0 >= 0.5)) fail_msg("planted sink head (%d, %d): alpha_0 %.3f", l, h, a0);
            } else if (!(a0 < 0.2)) {
                fail_msg("unplanted head (%d, %d): alpha_0 %.3f", l, h, a0);
            }
        }
    assert_true(p->n_sink >= 2);
    sks_trace_result_free(r);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
}

static void test_trace_tiny(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 3; seed++) {
        sks_synth *s = make("tiny", seed);
        check_trace(s, seed == 2 ? SKS_DT_BF16 : SKS_DT_F32);
        sks_synth_free(s);
    }
}

/* A Gemma 2 shaped model (--model-type gemma2): read back as gemma2 with its sandwich
 * norms, tensor for tensor; the dense S_c of the step-up layer has the planted (tilted)
 * eigenpair and dominance; the trace finds the planted lifecycle (values within 10%
 * through the post-FFN norm) and sink heads, for two seeds and bf16. */
static void test_gemma2(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 2; seed++) {
        sks_synth_config c;
        assert_int_equal(sks_synth_preset("tiny", &c), 0);
        assert_int_equal(sks_synth_set_model_type(&c, "gemma2"), 0);
        sks_synth *s = NULL;
        assert_int_equal(sks_synth_new(&c, seed, &s), 0);
        char *dir = sks_test_tmpdir();
        assert_int_equal(sks_synth_write(s, dir, SKS_DT_F32, 0), 0);
        sks_model *m = open_ok(dir);
        const sks_arch *a = sks_model_arch(m);
        assert_string_equal(a->family, "gemma2");
        assert_true(a->has_post_norms && a->norm_unit_offset && a->embed_scale && a->act == SKS_ACT_GELU_TANH);
        assert_true(a->attn_softcap == 50 && a->final_softcap == 30 && a->query_pre_attn_scalar == a->head_dim);
        check_tensors_equal(s, m, SKS_DT_F32);
        sks_model_close(m);
        sks_test_rm_tree(dir);
        free(dir);
        check_eigenpair(s);
        check_trace(s, seed == 2 ? SKS_DT_BF16 : SKS_DT_F32);
        sks_synth_free(s);
    }
    sks_synth_config c;
    assert_int_equal(sks_synth_preset("tiny", &c), 0);
    assert_int_equal(sks_synth_set_model_type(&c, "olmo2"), SKS_EUNSUPPORTED);
}

static void test_trace_qwen(void **state) {
    (void)state;
    sks_synth_config c;
    assert_int_equal(sks_synth_config_from_json(qwen_json, "test.json", &c), 0);
    sks_synth *s = NULL;
    assert_int_equal(sks_synth_new(&c, 9, &s), 0);
    check_trace(s, SKS_DT_BF16);
    sks_synth_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_roundtrip),      cmocka_unit_test(test_sharded_qwen_config),
        cmocka_unit_test(test_config_json_errors),  cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_preset_shapes),       cmocka_unit_test(test_planted_eigenpair),
        cmocka_unit_test(test_trace_tiny),          cmocka_unit_test(test_trace_qwen),
        cmocka_unit_test(test_gemma2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
