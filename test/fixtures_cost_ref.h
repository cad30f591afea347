/* fixtures_cost_ref.h - the transformers reference of test-fixtures-cost.c and
 * test-fixtures-quant.c: test/data/ppl-reference-trained-llama.json (made on a GPU by
 * test/data/make-ppl-reference.py from test/data/ppl-text.txt, docs/cost.md), the
 * trained-llama fixture and the reference ids, loaded once per test group. */
#ifndef FIXTURES_COST_REF_H
#define FIXTURES_COST_REF_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "sks_test.h"
#include "loaders/sks_model.h"

#define REF SKS_SOURCE_DIR "/test/data/ppl-reference-trained-llama.json"
#define TEXT SKS_SOURCE_DIR "/test/data/ppl-text.txt"

static json_t *ref;
static sks_model *model;
static int32_t *ids;
static int n_ids;

static int setup(void **state) {
    (void)state;
    json_error_t e;
    if (!(ref = json_load_file(REF, 0, &e))) {
        fprintf(stderr, "%s: %s\n", REF, e.text);
        return -1;
    }
    if (sks_model_open(sks_test_fixture("trained-llama/model"), &model)) return -1;
    json_t *a = json_object_get(ref, "ids");
    n_ids = (int)json_array_size(a);
    ids = malloc((size_t)n_ids * sizeof *ids);
    for (int i = 0; i < n_ids; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    json_decref(ref);
    sks_model_close(model);
    free(ids);
    return 0;
}

#endif
