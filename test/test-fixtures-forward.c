/* test-fixtures-forward.c - the forward pass and trace on the real model fixtures,
 * against their float64 reference numbers (../shared/fixtures/README.md):
 *   - stories260K (.bin, .gguf, .safetensors): greedy ids from BOS, logits at position
 *     32 of the first 33 ids, alpha_0 per layer and head;
 *   - trained-llama (bf16, 3 shards): logits at all 43 positions, per-block max |h|,
 *     its (token, channel), median |h|, alpha_0; the trace lifecycle of channel 356;
 *   - trained-packed (GGUF Q8_0/F16): per-block statistics and alpha_0 on window 0, the
 *     lifecycle of channel 154 (up at the FFN of layer 2, down at the FFN of layer 5),
 *     and the EOS of `eos_example` as a spike token.
 *
 * Tolerances: logits 1e-4 of their row's largest |logit| (STYLE 13: a logit near zero is
 * not compared relatively), 1e-4 relative for |h| statistics (the bound; f32
 * accumulation over d <= 1024 terms gives ~1e-6), 1e-4 absolute for alpha_0 (a mean
 * of probabilities in [0, 1]).
 *
 * Trace thresholds for these small models: their spikes are ~200-490 in absolute value
 * and ~150-250x the block median, not the 1000x of billion-parameter models, so the
 * tests use --ratio 100 --abs 50, the middle of the window that gives the documented
 * answer on all three inputs (ratio 50..150 with abs 20..50 all do; at ratio 30 / abs 10
 * secondary entries of tokens 1-2 qualify, at ratio 200 / abs 100 the EOS spike of
 * eos_example no longer does). See docs/forward.md.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/sks_trace.h"

static void check_rel(double got, double want, double tol, const char *what, int i, int j) {
    double err = fabs(got - want) / fmax(fabs(want), 1e-6);
    if (!(err <= tol)) fail_msg("%s [%d, %d]: got %.9g want %.9g (rel %.3g)", what, i, j, got, want, err);
}
/* Logits are compared against the scale of their row (STYLE 13): the error of an f32
 * forward is relative to the largest |logit| of the row, so a logit near zero is not held
 * to a relative bound that no BLAS kernel meets. */
static double row_absmax(const float *row, int V) {
    double m = 0;
    for (int i = 0; i < V; i++) m = fmax(m, fabs((double)row[i]));
    return m;
}
static void check_logit(double got, double want, double scale, double tol, const char *what, int i, int j) {
    double err = fabs(got - want) / fmax(scale, 1e-6);
    if (!(err <= tol))
        fail_msg("%s [%d, %d]: got %.9g want %.9g (error %.3g of the row's max |logit| %.4g)", what, i, j, got, want,
                 err, scale);
}
static void check_abs(double got, double want, double tol, const char *what, int i, int j) {
    if (!(fabs(got - want) <= tol)) fail_msg("%s [%d, %d]: got %.9g want %.9g", what, i, j, got, want);
}

/* ---- stories260K --------------------------------------------------------------------- */

static void stories_case(const char *rel) {
    json_t *ref = sks_test_fixture_json("stories260K/reference.json");
    sks_model *m = sks_test_open_fixture(rel);
    const sks_arch *a = sks_model_arch(m);
    int n_ref;
    int32_t *greedy = sks_test_json_ids(json_object_get(ref, "greedy_ids"), &n_ref);
    assert_int_equal(greedy[0], 1);
    sks_forward *f;
    assert_int_equal(sks_forward_new(m, n_ref, &f), 0);
    /* greedy from BOS reproduces the reference continuation exactly */
    int32_t *gen = malloc((size_t)n_ref * sizeof *gen);
    int n_gen = 0;
    assert_int_equal(sks_forward_generate(f, greedy, 1, n_ref - 1, 0, gen, &n_gen), 0);
    assert_int_equal(n_gen, n_ref - 1);
    for (int i = 0; i < n_gen; i++)
        if (gen[i] != greedy[i + 1]) fail_msg("%s: greedy id %d: got %d want %d", rel, i + 1, gen[i], greedy[i + 1]);
    /* logits at position 32 of the first 33 ids, and alpha_0 on them */
    const int T = 33, V = a->vocab_size;
    float *lg = malloc((size_t)T * V * sizeof *lg);
    /* alpha_0 per (layer, head) of the run */
    sks_test_cap c = {.L = a->n_layers, .H = a->n_heads, .a0 = calloc((size_t)a->n_layers * a->n_heads, sizeof(double))};
    sks_fwd_hooks hk = sks_test_cap_hooks(&c);
    assert_int_equal(sks_forward_run(f, greedy, T, SKS_FWD_CAUSAL, &hk, lg, 0), 0);
    json_t *l8 = json_object_get(ref, "logits_pos32_first8");
    for (int i = 0; i < 8; i++)
        check_logit(lg[32 * V + i], json_real_value(json_array_get(l8, (size_t)i)), row_absmax(lg + 32 * V, V), 1e-4,
                    "stories logits", 32, i);
    json_t *al = json_object_get(ref, "alpha0");
    assert_int_equal(json_array_size(al), a->n_layers);
    for (int l = 0; l < a->n_layers; l++)
        for (int h = 0; h < a->n_heads; h++)
            check_abs(c.a0[l * a->n_heads + h], json_real_value(json_array_get(json_array_get(al, (size_t)l), (size_t)h)),
                      1e-4, "stories alpha0", l, h);
    /* last_only agrees with the full logits */
    float *last = malloc((size_t)V * sizeof *last);
    assert_int_equal(sks_forward_run(f, greedy, T, SKS_FWD_CAUSAL, NULL, last, 1), 0);
    for (int i = 0; i < V; i++) check_abs(last[i], lg[32 * V + i], 1e-4, "last_only", 32, i);
    free(last);
    free(c.a0);
    free(lg);
    free(gen);
    free(greedy);
    sks_forward_free(f);
    sks_model_close(m);
    json_decref(ref);
}

static void test_stories_bin(void **state) { (void)state; stories_case("stories260K/stories260K.bin"); }
static void test_stories_gguf(void **state) { (void)state; stories_case("stories260K/stories260K.gguf"); }
static void test_stories_safetensors(void **state) { (void)state; stories_case("stories260K/stories260K.safetensors"); }

/* ---- per-block statistics against mechanism.json ----------------------------------------- */

static void check_blocks(const sks_trace_result *r, const json_t *blocks, const char *what) {
    assert_int_equal((int)json_array_size(blocks), r->n_blocks);
    for (int b = 0; b < r->n_blocks; b++) {
        const json_t *jb = json_array_get(blocks, (size_t)b);
        assert_int_equal(json_integer_value(json_object_get(jb, "block")), b);
        check_rel(r->blocks[b].max_abs, json_real_value(json_object_get(jb, "max_abs")), 1e-4, what, b, 0);
        check_rel(r->blocks[b].median_abs, json_real_value(json_object_get(jb, "median_abs")), 1e-4, what, b, 1);
        if (r->blocks[b].top_token != json_integer_value(json_object_get(jb, "top_token")) ||
            r->blocks[b].top_channel != json_integer_value(json_object_get(jb, "top_channel")))
            fail_msg("%s block %d: top at (%d, %d), reference (%lld, %lld)", what, b, r->blocks[b].top_token,
                     r->blocks[b].top_channel, json_integer_value(json_object_get(jb, "top_token")),
                     json_integer_value(json_object_get(jb, "top_channel")));
    }
}

static void check_alpha0(const sks_trace_result *r, const json_t *al, const char *what) {
    assert_int_equal((int)json_array_size(al), r->n_layers);
    for (int l = 0; l < r->n_layers; l++)
        for (int h = 0; h < r->n_heads; h++)
            check_abs(r->alpha[((size_t)l * r->n_heads + h) * r->n_alpha],
                      json_real_value(json_array_get(json_array_get(al, (size_t)l), (size_t)h)), 1e-4, what, l, h);
}

/* trace of one prompt with the small models' thresholds (ratio 100, abs 50) */
static sks_trace_result *trace_one(sks_model *m, const int32_t *ids, int T) {
    sks_trace_opts o;
    sks_trace_opts_default(&o);
    o.ratio = 100;
    o.abs_thresh = 50;
    const int32_t *prompts[1] = {ids};
    sks_trace_result *r;
    assert_int_equal(sks_trace_run(m, 1, prompts, &T, &o, &r), 0);
    return r;
}

static const sks_lifecycle *find_lifecycle(const sks_trace_result *r, int token, int channel) {
    for (int i = 0; i < r->n_lifecycles; i++)
        if (r->lifecycles[i].token == token && r->lifecycles[i].channel == channel) return &r->lifecycles[i];
    return NULL;
}

static int contains(const int *v, int n, int x) {
    for (int i = 0; i < n; i++)
        if (v[i] == x) return 1;
    return 0;
}

/* ---- trained-llama ---------------------------------------------------------------------- */

static void test_trained_llama(void **state) {
    (void)state;
    json_t *ref = sks_test_fixture_json("trained-llama/reference.json");
    json_t *mech = sks_test_fixture_json("trained-llama/mechanism.json");
    sks_model *m = sks_test_open_fixture("trained-llama/model");
    const sks_arch *a = sks_model_arch(m);
    int T;
    int32_t *ids = sks_test_json_ids(json_object_get(ref, "input_ids"), &T);
    assert_int_equal(T, 43);
    const int V = a->vocab_size;
    sks_forward *f;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    float *lg = malloc((size_t)T * V * sizeof *lg);
    assert_int_equal(sks_forward_run(f, ids, T, SKS_FWD_CAUSAL, NULL, lg, 0), 0);
    json_t *all = json_object_get(ref, "logits_first8_all_pos");
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 8; i++)
            check_logit(lg[(size_t)t * V + i],
                        json_real_value(json_array_get(json_array_get(all, (size_t)t), (size_t)i)),
                        row_absmax(lg + (size_t)t * V, V), 1e-4, "trained-llama logits", t, i);
    sks_forward_free(f);
    free(lg);

    sks_trace_result *r = trace_one(m, ids, T);
    check_blocks(r, json_object_get(mech, "blocks"), "trained-llama blocks");
    check_alpha0(r, json_object_get(mech, "alpha0"), "trained-llama alpha0");
    int nsink = 0;
    for (int i = 0; i < r->n_layers * r->n_heads; i++) nsink += r->alpha[(size_t)i * r->n_alpha] > 0.3;
    assert_int_equal(nsink, json_integer_value(json_object_get(mech, "sink_heads_eps0.3")));
    check_abs(r->sink_ratio, 100.0 * nsink / 48.0, 1e-9, "sink ratio", 0, 0);
    /* channel 356 of token 0: two step-ups (FFN of layers 1 and 3), no step-down */
    assert_true(contains(r->spike_channels, r->n_spike_channels, 356));
    assert_true(contains(r->spike_tokens, r->n_spike_tokens, 0));
    const sks_lifecycle *lc = find_lifecycle(r, 0, 356);
    assert_non_null(lc);
    assert_int_equal(lc->n_up, 2);
    assert_int_equal(lc->up_blocks[0], 4);
    assert_int_equal(lc->up_blocks[1], 8);
    assert_int_equal(lc->main_up, 4);
    assert_int_equal(lc->n_down, 0);
    assert_int_equal(lc->plateau_last, r->n_blocks - 1);
    check_rel(lc->peak_abs, json_real_value(json_object_get(json_array_get(json_object_get(mech, "blocks"), 16), "max_abs")),
              1e-4, "peak of 356", 0, 356);
    sks_trace_result_free(r);
    free(ids);
    sks_model_close(m);
    json_decref(ref);
    json_decref(mech);
}

/* ---- trained-packed ---------------------------------------------------------------------- */

static void test_trained_packed(void **state) {
    (void)state;
    json_t *mech = sks_test_fixture_json("trained-packed/mechanism.json");
    sks_model *m = sks_test_open_fixture("trained-packed/model.gguf");
    int T;
    int32_t *ids = sks_test_json_ids(json_object_get(mech, "ids"), &T);
    const int V = sks_model_arch(m)->vocab_size;
    sks_forward *f;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    float *lg = malloc((size_t)V * sizeof *lg);
    assert_int_equal(sks_forward_run(f, ids, T, SKS_FWD_CAUSAL, NULL, lg, 1), 0);
    json_t *l8 = json_object_get(mech, "logits_last_first8");
    for (int i = 0; i < 8; i++)
        check_logit(lg[i], json_real_value(json_array_get(l8, (size_t)i)), row_absmax(lg, V), 1e-4, "packed logits",
                    T - 1, i);
    free(lg);
    sks_forward_free(f);

    sks_trace_result *r = trace_one(m, ids, T);
    check_blocks(r, json_object_get(mech, "blocks"), "packed blocks");
    check_alpha0(r, json_object_get(mech, "alpha0"), "packed alpha0");
    const sks_lifecycle *lc = find_lifecycle(r, 0, 154);
    assert_non_null(lc);
    assert_int_equal(lc->main_up, 6);   /* FFN of layer 2 */
    assert_int_equal(lc->n_down, 1);
    assert_int_equal(lc->down_blocks[0], 12); /* FFN of layer 5 */
    assert_true(contains(lc->up_blocks, lc->n_up, 6));
    assert_int_equal(lc->plateau_first, lc->up_blocks[lc->n_up - 1]);
    assert_int_equal(lc->plateau_last, 11);
    sks_trace_result_free(r);
    free(ids);

    /* EOS in the middle (position 30) spikes like a delimiter */
    json_t *eos = json_object_get(mech, "eos_example");
    ids = sks_test_json_ids(json_object_get(eos, "ids"), &T);
    assert_int_equal(ids[30], 2);
    r = trace_one(m, ids, T);
    assert_true(contains(r->spike_tokens, r->n_spike_tokens, 30));
    assert_true(contains(r->spike_tokens, r->n_spike_tokens, 0));
    assert_non_null(find_lifecycle(r, 30, 154));
    check_alpha0(r, json_object_get(eos, "alpha0"), "eos alpha0");
    sks_trace_result_free(r);
    free(ids);
    sks_model_close(m);
    json_decref(mech);
}

int main(void) {
    SKS_REQUIRE_FIXTURES();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_bin),
        cmocka_unit_test(test_stories_gguf),
        cmocka_unit_test(test_stories_safetensors),
        cmocka_unit_test(test_trained_llama),
        cmocka_unit_test(test_trained_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
