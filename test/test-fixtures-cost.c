/* test-fixtures-cost.c - perplexity and kv-eval on the trained-llama fixture
 * against transformers (test/data/ppl-reference-trained-llama.json, made on a GPU by
 * test/data/make-ppl-reference.py from test/data/ppl-text.txt; see docs/cost.md):
 *   - our tokenizer gives the reference ids (SentencePiece, BOS first), 1241 tokens;
 *   - perplexity: the same windows (begin, end, first scored target) for (256, 256),
 *     (256, 128) and (100, 100), and per window a summed NLL within 2e-5 nats per
 *     scored token of transformers' float64 forward of the bf16 weights (measured: at
 *     most 2.3e-6 per token; the NLL error is at most twice the largest logit error,
 *     and an f32 forward's logits carry ~1e-6 of the row's largest |logit|);
 *   - kv-eval recent / streaming (W 64 and 32, S 4) against transformers with the same
 *     masks as custom 4-D attention masks, 2e-5 nats per token, same reasoning.
 * quant-risk's end-to-end check is test-fixtures-quant.c (its own executable: each
 * stays well inside the test timeout under the sanitizers).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "analysis/sks_kveval.h"
#include "fixtures_cost_ref.h"
#include "loaders/sks_tokenizer.h"

static void test_tokenizer_ids(void **state) {
    (void)state;
    size_t len;
    char *text = sks_test_read_file(TEXT, &len);
    assert_non_null(text);
    sks_tokenizer *tok = NULL;
    assert_int_equal(sks_tokenizer_open_for_model(model, NULL, &tok), 0);
    int32_t *got = NULL;
    int n = 0;
    assert_int_equal(sks_tokenizer_encode(tok, text, 1, &got, &n), 0);
    assert_int_equal(n, n_ids);
    for (int i = 0; i < n; i++)
        if (got[i] != ids[i]) fail_msg("token %d: %d, SentencePiece %d", i, (int)got[i], (int)ids[i]);
    free(got);
    sks_tokenizer_free(tok);
    free(text);
}

static void test_perplexity(void **state) {
    (void)state;
    json_t *runs = json_object_get(ref, "runs");
    assert_int_equal(json_array_size(runs), 3);
    sks_ppl_ctx *c = NULL;
    assert_int_equal(sks_ppl_ctx_new(model, 256, &c), 0);
    double worst = 0;
    for (size_t k = 0; k < json_array_size(runs); k++) {
        json_t *run = json_array_get(runs, k), *wins = json_object_get(run, "windows");
        int W = (int)json_integer_value(json_object_get(run, "window"));
        int S = (int)json_integer_value(json_object_get(run, "stride"));
        sks_ppl_result *r = NULL;
        assert_int_equal(sks_ppl_run(c, ids, n_ids, W, S, NULL, NULL, &r), 0);
        assert_int_equal(r->n_windows, (int)json_array_size(wins));
        for (int i = 0; i < r->n_windows; i++) {
            json_t *w = json_array_get(wins, (size_t)i);
            assert_int_equal(r->windows[i].begin, json_integer_value(json_object_get(w, "begin")));
            assert_int_equal(r->windows[i].end, json_integer_value(json_object_get(w, "end")));
            assert_int_equal(r->windows[i].first, json_integer_value(json_object_get(w, "first")));
            double want = json_real_value(json_object_get(w, "nll_f64"));
            int ns = r->windows[i].end - r->windows[i].first;
            double per_tok = fabs(r->windows[i].nll_sum - want) / ns;
            worst = fmax(worst, per_tok);
            if (!(per_tok <= 2e-5))
                fail_msg("window %d of (%d, %d): NLL sum %.9f, transformers %.9f", i, W, S, r->windows[i].nll_sum,
                         want);
        }
        assert_int_equal(r->n_scored, json_integer_value(json_object_get(run, "n_scored")));
        double pw = json_real_value(json_object_get(run, "ppl_f64"));
        assert_true(fabs(r->ppl - pw) <= 2e-5 * pw);
        sks_ppl_result_free(r);
    }
    fprintf(stderr, "perplexity: largest per-token NLL difference to transformers f64: %.3g nats\n", worst);
    sks_ppl_ctx_free(c);
}

static void test_kv_eval(void **state) {
    (void)state;
    json_t *kv = json_object_get(ref, "kv");
    assert_true(json_array_size(kv) >= 5);
    sks_ppl_ctx *c = NULL;
    assert_int_equal(sks_ppl_ctx_new(model, 256, &c), 0);
    for (size_t k = 0; k < json_array_size(kv); k++) {
        json_t *e = json_array_get(kv, k);
        int W = (int)json_integer_value(json_object_get(e, "kv_window"));
        int S = (int)json_integer_value(json_object_get(e, "sinks"));
        if (W >= 256) continue; /* the full context: test_perplexity */
        /* the limit kv-eval's recent (S = 0) and streaming variants put in the hooks */
        sks_fwd_kv_limit lim = {W, S, NULL};
        sks_fwd_hooks hk;
        memset(&hk, 0, sizeof hk);
        hk.kv_limit = &lim;
        sks_ppl_result *p = NULL;
        assert_int_equal(sks_ppl_run(c, ids, n_ids, 256, 256, &hk, NULL, &p), 0);
        assert_int_equal(p->n_scored, json_integer_value(json_object_get(e, "n_scored")));
        double want = json_real_value(json_object_get(e, "nll_sum"));
        if (!(fabs(p->nll_sum - want) <= 2e-5 * (double)p->n_scored))
            fail_msg("kv window %d, %d sinks: NLL sum %.9f, transformers %.9f", W, S, p->nll_sum, want);
        sks_ppl_result_free(p);
    }
    sks_ppl_ctx_free(c);
}

int main(void) {
    SKS_REQUIRE_FIXTURES();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_ids),
        cmocka_unit_test(test_perplexity),
        cmocka_unit_test(test_kv_eval),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
