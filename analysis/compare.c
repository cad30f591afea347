/* compare.c - the ablation table over analyze folders (contract in sks_compare.h). */
#include "sks_compare.h"
#include "sks_out.h"
#include "sks_perplexity.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double sks__jd(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static char *sks__jstrdup(const json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return strdup(s ? s : "");
}

void sks_compare_row_clear(sks_compare_row *r) {
    if (!r) return;
    SKS_FREE_ALL(r->dir, r->model_path, r->family, r->spike_channels);
    memset(r, 0, sizeof *r);
}

static int sks__cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* median of layers.sink_r99 (L, G) of sinks.msgpack over the pairs with spike-token rows (r99 > 0) */
static int sks__sink_r99(const char *dir, double *out) {
    *out = NAN;
    char *path = sks__path_join(dir, "sinks.msgpack");
    if (!path) return sks_fail(SKS_ENOMEM, "compare: out of memory");
    uint8_t *buf = NULL;
    size_t n = 0;
    int have = sks_read_file(path, &buf, &n), rc = 0;
    if (have <= 0) {
        free(path);
        return have; /* absent: NaN */
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (sks_mp_unpack(&u, buf, n, NULL)) rc = sks_fail(SKS_EFORMAT, "%s: not a msgpack file", path);
    const msgpack_object *lay = rc ? NULL : sks_mp_get(&u.data, "layers");
    const msgpack_object *a = lay ? sks_mp_get(lay, "sink_r99") : NULL;
    const msgpack_object *shape = a ? sks_mp_get(a, "shape") : NULL, *data = a ? sks_mp_get(a, "data") : NULL;
    int L = 0, G = 0;
    if (!rc && a && (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size != 2 ||
                     sks_mp_int(&shape->via.array.ptr[0], 1, 1 << 20, &L) ||
                     sks_mp_int(&shape->via.array.ptr[1], 1, 1 << 20, &G) || !data))
        rc = sks_fail(SKS_EFORMAT, "%s: sink_r99: an i32 (L, G) array expected", path);
    int32_t *v = NULL;
    if (!rc && a && sks_mp_bin(data, (size_t)L * (size_t)G * sizeof(int32_t), (void **)&v))
        rc = sks_fail(SKS_EFORMAT, "%s: sink_r99: data is not %d x %d i32", path, L, G);
    if (!rc && v) {
        int *pos = malloc((size_t)L * (size_t)G * sizeof *pos), k = 0;
        if (!pos) rc = sks_fail(SKS_ENOMEM, "compare: out of memory");
        for (int i = 0; pos && i < L * G; i++)
            if (v[i] > 0) pos[k++] = v[i];
        if (pos && k) {
            qsort(pos, (size_t)k, sizeof *pos, sks__cmp_int);
            *out = k % 2 ? pos[k / 2] : 0.5 * (pos[k / 2 - 1] + pos[k / 2]);
        }
        free(pos);
    }
    free(v);
    msgpack_unpacked_destroy(&u);
    free(buf);
    free(path);
    return rc;
}

int sks_compare_load(const char *dir, sks_compare_row *r) {
    memset(r, 0, sizeof *r);
    r->peak_abs = r->peak_ratio = r->lambda_star = r->dominance = NAN;
    r->sink_ratio = r->sink_r99 = r->vocab_fraction = r->perplexity = NAN;
    r->peak_block = r->step_layer = r->step_channel = -1;
    char *path = sks__path_join(dir, "summary.json");
    if (!path || !(r->dir = strdup(dir))) {
        free(path);
        return sks_fail(SKS_ENOMEM, "compare: out of memory");
    }
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    int rc = 0;
    if (!root) rc = sks_fail(SKS_EFORMAT, "%s: %s (an analyze folder expected: sinkscope analyze MODEL -o DIR)", path,
                             e.text);
    else if (!json_string_value(json_object_get(root, "schema")) ||
             strcmp(json_string_value(json_object_get(root, "schema")), "sinkscope.summary/1"))
        rc = sks_fail(SKS_EFORMAT, "%s: schema: sinkscope.summary/1 expected", path);
    free(path);
    if (rc) {
        json_decref(root);
        return rc;
    }
    const json_t *mo = json_object_get(root, "model"), *tr = json_object_get(root, "trace");
    const json_t *sp = json_object_get(root, "spikes"), *vo = json_object_get(root, "vocab");
    const json_t *si = json_object_get(root, "sinks"), *pp = json_object_get(root, "perplexity");
    r->model_path = sks__jstrdup(mo, "path");
    r->family = sks__jstrdup(mo, "family");
    r->n_layers = (int)json_integer_value(json_object_get(mo, "n_layers"));
    r->d_model = (int)json_integer_value(json_object_get(mo, "d_model"));
    const json_t *lg = json_object_get(tr, "largest"), *sc = json_object_get(tr, "spike_channels");
    r->peak_abs = sks__jd(lg, "max_abs");
    r->peak_ratio = sks__jd(lg, "spike_score");
    if (json_is_integer(json_object_get(lg, "block"))) r->peak_block = (int)json_integer_value(json_object_get(lg, "block"));
    r->n_spike_channels = (int)json_array_size(sc);
    r->spike_channels = malloc(((size_t)r->n_spike_channels + 1) * sizeof(int));
    if (!r->model_path || !r->family || !r->spike_channels) rc = sks_fail(SKS_ENOMEM, "compare: out of memory");
    for (int i = 0; !rc && i < r->n_spike_channels; i++)
        r->spike_channels[i] = (int)json_integer_value(json_array_get(sc, (size_t)i));
    /* lambda*, dominance at the main step-up of the first lifecycle */
    const json_t *lc = json_array_get(json_object_get(tr, "lifecycles"), 0), *chs = json_object_get(sp, "channels");
    int want_l = -1, want_c = -1;
    if (lc && json_is_integer(json_object_get(lc, "main_up"))) {
        int b = (int)json_integer_value(json_object_get(lc, "main_up"));
        want_l = b > 0 ? (b - 1) / 2 : -1;
        want_c = (int)json_integer_value(json_object_get(lc, "channel"));
    }
    const json_t *pick = NULL;
    for (size_t i = 0; i < json_array_size(chs) && !pick; i++) {
        const json_t *c = json_array_get(chs, i);
        if (json_integer_value(json_object_get(c, "layer")) == want_l &&
            json_integer_value(json_object_get(c, "channel")) == want_c)
            pick = c;
    }
    for (size_t i = 0; i < json_array_size(chs) && !pick; i++)
        if (json_is_true(json_object_get(json_array_get(chs, i), "spike_channel"))) pick = json_array_get(chs, i);
    if (pick) {
        r->step_layer = (int)json_integer_value(json_object_get(pick, "layer"));
        r->step_channel = (int)json_integer_value(json_object_get(pick, "channel"));
        r->lambda_star = sks__jd(pick, "lambda_star");
        r->dominance = sks__jd(pick, "dominance");
    }
    r->sink_ratio = sks__jd(si, "sink_ratio_percent");
    if (isnan(r->sink_ratio)) r->sink_ratio = sks__jd(tr, "sink_ratio_percent");
    r->vocab_fraction = sks__jd(vo, "spike_fraction");
    if (json_is_object(pp)) {
        r->perplexity = sks__jd(pp, "perplexity");
        r->n_scored = (int)json_integer_value(json_object_get(pp, "n_scored"));
    }
    json_decref(root);
    if (!rc) rc = sks__sink_r99(dir, &r->sink_r99);
    if (rc) sks_compare_row_clear(r);
    return rc;
}

int sks_compare_perplexity(sks_compare_row *row, const int32_t *ids, int n) {
    sks_model *m = NULL;
    int rc = sks_model_open(row->model_path, &m);
    if (rc) return rc;
    sks_ppl_opts o;
    sks_ppl_opts_default(&o);
    int window, stride;
    sks_ppl_ctx *c = NULL;
    sks_ppl_result *r = NULL;
    if (!(rc = sks_ppl_resolve(m, &o, &window, &stride)) && !(rc = sks_ppl_ctx_new(m, window < n ? window : n, &c)) &&
        !(rc = sks_ppl_run(c, ids, n, window, stride, NULL, NULL, &r))) {
        row->perplexity = r->ppl;
        row->n_scored = (int)r->n_scored;
    }
    sks_ppl_result_free(r);
    sks_ppl_ctx_free(c);
    sks_model_close(m);
    return rc;
}

int sks_compare_write(const sks_compare_row *rows, int n, const char *text_path, const char *path) {
    sks_out w;
    sks_out_init(&w);
    sks_out_map(&w, 3);
    sks_out_kstr(&w, "schema", "sinkscope.compare/1");
    sks_out_kmap(&w, "params", 1);
    sks_out_str(&w, "text");
    sks_out_str_or_nil(&w, text_path);
    sks_out_karray(&w, "models", (size_t)n);
    for (int i = 0; i < n; i++) {
        const sks_compare_row *r = &rows[i];
        sks_out_map(&w, 17);
        sks_out_kstr(&w, "dir", r->dir);
        sks_out_kstr(&w, "model", r->model_path);
        sks_out_kstr(&w, "family", r->family);
        sks_out_kint(&w, "n_layers", r->n_layers);
        sks_out_kf64(&w, "peak_abs", r->peak_abs);
        sks_out_kf64(&w, "peak_ratio", r->peak_ratio);
        sks_out_kint(&w, "peak_block", r->peak_block);
        sks_out_kints(&w, "spike_channels", r->spike_channels, r->n_spike_channels);
        sks_out_kint(&w, "step_layer", r->step_layer);
        sks_out_kint(&w, "step_channel", r->step_channel);
        sks_out_kf64(&w, "lambda_star", r->lambda_star);
        sks_out_kf64(&w, "dominance", r->dominance);
        sks_out_kf64(&w, "sink_ratio", r->sink_ratio);
        sks_out_kf64(&w, "sink_r99", r->sink_r99);
        sks_out_kf64(&w, "vocab_fraction", r->vocab_fraction);
        sks_out_kf64(&w, "perplexity", r->perplexity);
        sks_out_kint(&w, "n_scored", r->n_scored);
    }
    return sks_out_finish(&w, path);
}
