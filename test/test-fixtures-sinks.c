/* test-fixtures-sinks.c - sinks on the trained fixture model against its float64 references.
 *
 * fixtures/trained-llama: report.json holds alpha_0 per head averaged over 16 held-out
 * sequences (and the fraction of heads above eps 0.3), mechanism.json alpha_0 on 43 ids;
 * both come from an independent float64 forward. The sink-key rank is checked against
 * the paper's claim (sink keys 1-2 dimensional, non-sink keys much wider), and the command
 * line is run once to check the JSON summary, the kv map and the msgpack file.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sks_test.h"
#include "analysis/sks_sinks.h"

static sks_sinks_opts llama_opts(void) {
    sks_sinks_opts o;
    sks_sinks_opts_default(&o);
    /* a small model: channel 356 peaks at ~200x the block median (fixtures/README.md) */
    o.abs_thresh = 50.0;
    o.ratio = 100.0;
    return o;
}

/* sinks over the first n sequences of the JSON array seqs (it must hold that many) */
static sks_sinks_result *run_sinks(sks_model *m, const json_t *seqs, int n) {
    int32_t **ids;
    int *lens;
    assert_int_equal(sks_test_json_seqs(seqs, n, &ids, &lens), n);
    sks_sinks_opts o = llama_opts();
    sks_sinks_result *r = NULL;
    int rc = sks_sinks_run(m, n, (const int32_t *const *)ids, lens, &o, &r);
    if (rc) fail_msg("sinks: %s", sks_last_error());
    sks_test_free_seqs(ids, lens, n);
    return r;
}

/* alpha_0 against the float64 reference ref (a JSON array of L arrays of H numbers):
 * max |diff| <= 1e-4 */
static void check_alpha0(const sks_sinks_result *r, const json_t *ref, const char *what) {
    assert_int_equal((int)json_array_size(ref), r->n_layers);
    double maxdiff = 0.0;
    for (int l = 0; l < r->n_layers; l++)
        for (int h = 0; h < r->n_heads; h++) {
            double want = json_real_value(json_array_get(json_array_get(ref, (size_t)l), (size_t)h));
            double d = fabs(r->alpha0[l * r->n_heads + h] - want);
            if (d > maxdiff) maxdiff = d;
        }
    fprintf(stderr, "alpha_0 vs %s: max |diff| %.3g\n", what, maxdiff);
    assert_true(maxdiff <= 1e-4);
}

/* The model under the fixtures folder measured on the first n sequences of ref[ids_key],
 * its alpha_0 checked against ref[a0_key]. */
static sks_sinks_result *measure(const json_t *ref, const char *model_rel, const char *ids_key, int n, const char *a0_key,
                                 const char *what, sks_model **m) {
    *m = sks_test_open_fixture(model_rel);
    sks_sinks_result *r = run_sinks(*m, json_object_get(ref, ids_key), n);
    check_alpha0(r, json_object_get(ref, a0_key), what);
    return r;
}

static int has_spike_channel(const sks_sinks_result *r, int ch) {
    for (int i = 0; i < r->n_spike_channels; i++)
        if (r->spike_channels[i] == ch) return 1;
    return 0;
}

static void test_report_alpha0(void **state) {
    (void)state;
    json_t *rep = sks_test_fixture_json("trained-llama/report.json");
    sks_model *m;
    sks_sinks_result *r = measure(rep, "trained-llama/model", "measurement_input_ids", 16, "alpha0_per_layer_head",
                                  "report.json (16 sequences)", &m);
    double frac = json_real_value(json_object_get(rep, "frac_heads_alpha0_gt_0.3"));
    assert_int_equal(r->n_sink_heads, (int)lround(frac * r->n_layers * r->n_heads));
    /* the spike: channel 356 at BOS (position 0) */
    assert_true(has_spike_channel(r, 356));
    assert_true(r->n_prompt0_spike_tokens >= 1 && r->prompt0_spike_tokens[0] == 0);
    /* sink keys 1-2 dimensional, non-sink keys much wider, in every layer and KV head */
    for (int i = 0; i < r->n_layers * r->n_kv_heads; i++) {
        assert_true(r->sink_r99[i] >= 1 && r->sink_r99[i] <= 2);
        assert_true(r->nonsink_r99[i] >= 10 * r->sink_r99[i]);
    }
    for (int p = 0; p < SKS_PRED_COUNT; p++) {
        fprintf(stderr, "  AUC %-14s %.4f\n", sks_sinks_pred_name(p), r->auc[p]);
        assert_true(r->auc[p] >= 0.0 && r->auc[p] <= 1.0);
    }
    sks_sinks_result_free(r);
    sks_model_close(m);
    json_decref(rep);
}

static void test_mechanism_alpha0(void **state) {
    (void)state;
    json_t *mech = sks_test_fixture_json("trained-llama/mechanism.json");
    assert_int_equal((int)json_array_size(json_object_get(mech, "ids")), 43);
    /* its one sequence as a list of one */
    json_t *wrap = json_pack("{s:[O], s:O}", "seqs", json_object_get(mech, "ids"), "alpha0", json_object_get(mech, "alpha0"));
    assert_non_null(wrap);
    sks_model *m;
    sks_sinks_result *r = measure(wrap, "trained-llama/model", "seqs", 1, "alpha0", "mechanism.json (43 ids)", &m);
    assert_int_equal(r->n_sink_heads, (int)json_integer_value(json_object_get(mech, "sink_heads_eps0.3")));
    sks_sinks_result_free(r);
    json_decref(wrap);
    sks_model_close(m);
    json_decref(mech);
}

/* fixtures/trained-packed (GGUF, Q8_0): position 0 holds an arbitrary token, so the
 * spike tokens differ between windows. alpha_0 against the float64 reference over its 16
 * held-out windows; the paper's collapse: before the step-up (FFN of layer 2) the
 * normalized spike tokens vary and their keys spread, after it they are near-constant
 * and the sink keys one-to-two dimensional. */
static void test_packed_collapse(void **state) {
    (void)state;
    json_t *mech = sks_test_fixture_json("trained-packed/mechanism.json");
    sks_model *m;
    sks_sinks_result *r = measure(mech, "trained-packed/model.gguf", "heldout_window_ids", 16,
                                  "heldout_alpha0_per_layer_head", "trained-packed mechanism.json (16 windows)", &m);
    assert_true(has_spike_channel(r, 154));
    for (int l = 0; l < r->n_layers; l++)
        fprintf(stderr, "  layer %d: cos spike x~ %.3f (non-spike %.3f), sink r99 %d, non-sink r99 %d\n", l,
                r->cos_spike_mean[l], r->cos_nonspike_mean[l], r->sink_r99[l * r->n_kv_heads],
                r->nonsink_r99[l * r->n_kv_heads]);
    assert_true(r->cos_spike_mean[0] < 0.5);
    for (int l = 3; l < r->n_layers; l++) {
        assert_true(r->cos_spike_mean[l] > 0.95);
        for (int g = 0; g < r->n_kv_heads; g++) {
            assert_true(r->sink_r99[l * r->n_kv_heads + g] <= 2);
            assert_true(r->nonsink_r99[l * r->n_kv_heads + g] >= 10 * r->sink_r99[l * r->n_kv_heads + g]);
        }
    }
    for (int g = 0; g < r->n_kv_heads; g++) assert_true(r->sink_r99[g] > 2);
    sks_sinks_result_free(r);
    sks_model_close(m);
    json_decref(mech);
}

/* The command line on 8 held-out sequences: the JSON summary has the documented keys, is
 * ranked by the main predictor, and its alpha_0 equal a library run on the same 8
 * sequences; the kv map lists every measured sink head. */
static void test_cli(void **state) {
    (void)state;
    json_t *rep = sks_test_fixture_json("trained-llama/report.json");
    char *dir = sks_test_tmpdir();
    assert_non_null(dir);
    char ids_path[4200], out[4200], kv[4200], js[4200], cmd[20000];
    snprintf(ids_path, sizeof ids_path, "%s/ids.txt", dir);
    snprintf(out, sizeof out, "%s/sinks.msgpack", dir);
    snprintf(kv, sizeof kv, "%s/kv.json", dir);
    snprintf(js, sizeof js, "%s/summary.json", dir);
    FILE *f = fopen(ids_path, "w");
    assert_non_null(f);
    json_t *seqs = json_object_get(rep, "measurement_input_ids");
    for (size_t i = 0; i < 8; i++) {
        json_t *s = json_array_get(seqs, i);
        for (size_t t = 0; t < json_array_size(s); t++)
            fprintf(f, "%s%lld", t ? "," : "", (long long)json_integer_value(json_array_get(s, t)));
        fprintf(f, "\n");
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' sinks '%s' --abs 50 --ratio 100 --tokens-file '%s' -o '%s' --kv-map '%s' --json -q > '%s'",
             SKS_BINARY, sks_test_fixture("trained-llama/model"), ids_path, out, kv, js);
    assert_int_equal(system(cmd), 0);
    json_error_t e;
    json_t *s = json_load_file(js, 0, &e);
    assert_non_null(s);
    json_t *heads = json_object_get(s, "heads");
    assert_int_equal((int)json_array_size(heads), 48);
    const char *keys[] = {"layer", "head", "kv_head", "alpha0", "is_sink", "alignment", "margin", "weight_only_score"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) assert_non_null(json_object_get(json_array_get(heads, 0), keys[k]));
    assert_non_null(json_object_get(s, "sink_key_rank"));
    assert_non_null(json_object_get(s, "nonsink_key_rank"));
    assert_non_null(json_object_get(json_object_get(s, "auc"), "margin_norope"));
    assert_non_null(json_object_get(s, "sink_ratio"));
    /* ranking: heads sorted by descending margin */
    double prev = INFINITY;
    for (size_t i = 0; i < json_array_size(heads); i++) {
        double v = json_real_value(json_object_get(json_array_get(heads, i), "margin"));
        assert_true(v <= prev);
        prev = v;
    }
    /* same 8 sequences through the library: identical alpha_0 */
    sks_model *m = sks_test_open_fixture("trained-llama/model");
    sks_sinks_result *r = run_sinks(m, seqs, 8);
    int n_measured = 0;
    for (size_t i = 0; i < json_array_size(heads); i++) {
        json_t *hd = json_array_get(heads, i);
        int l = (int)json_integer_value(json_object_get(hd, "layer")), h = (int)json_integer_value(json_object_get(hd, "head"));
        assert_true(fabs(json_real_value(json_object_get(hd, "alpha0")) - r->alpha0[l * 6 + h]) < 1e-12);
        n_measured += json_is_true(json_object_get(hd, "is_sink"));
    }
    /* kv map: every measured sink head is listed */
    json_t *k = json_load_file(kv, 0, &e);
    assert_non_null(k);
    int listed_measured = 0;
    json_t *layers = json_object_get(k, "layers");
    for (size_t l = 0; l < json_array_size(layers); l++) {
        json_t *hs = json_object_get(json_array_get(layers, l), "heads");
        for (size_t i = 0; i < json_array_size(hs); i++) listed_measured += json_is_true(json_object_get(json_array_get(hs, i), "measured"));
    }
    assert_int_equal(listed_measured, n_measured);
    assert_int_equal(n_measured, r->n_sink_heads);
    size_t len = 0;
    char *mp = sks_test_read_file(out, &len);
    assert_non_null(mp);
    int has_schema = 0;
    for (size_t i = 0; i + 17 <= len && !has_schema; i++) has_schema = !memcmp(mp + i, "sinkscope.sinks/1", 17);
    assert_true(len > 1000 && has_schema);
    free(mp);
    json_decref(k);
    json_decref(s);
    sks_sinks_result_free(r);
    sks_model_close(m);
    sks_test_rm_tree(dir);
    free(dir);
    json_decref(rep);
}

int main(void) {
    SKS_REQUIRE_FIXTURES();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_alpha0),
        cmocka_unit_test(test_mechanism_alpha0),
        cmocka_unit_test(test_packed_collapse),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
