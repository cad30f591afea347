/* kveval.c - perplexity under KV-cache eviction (contract in sks_kveval.h). */
#include "sks_kveval.h"
#include "sks_out.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const sks__kv_names[SKS_KV_N] = {"full", "recent", "streaming", "kvmap"};

const char *sks_kv_variant_name(int v) { return v >= 0 && v < SKS_KV_N ? sks__kv_names[v] : "?"; }

void sks_kveval_opts_default(sks_kveval_opts *o) {
    o->kv_window = 0;
    o->n_sink = 4;
    sks_ppl_opts_default(&o->ppl);
}

int sks_kvmap_read(const char *path, const sks_model *m, unsigned char **keep_kv) {
    *keep_kv = NULL;
    const sks_arch *a = sks_model_arch(m);
    const int L = a->n_layers, G = a->n_kv_heads;
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!root) return sks_fail(SKS_EFORMAT, "%s: %s (line %d)", path, e.text, e.line);
    int rc = 0;
    const char *schema = json_string_value(json_object_get(root, "schema"));
    json_t *layers = json_object_get(root, "layers");
    if (!schema || strcmp(schema, "sinkscope.kvmap/1"))
        rc = sks_fail(SKS_EFORMAT, "%s: schema: sinkscope.kvmap/1 expected", path);
    else if (json_integer_value(json_object_get(root, "n_layers")) != L ||
             json_integer_value(json_object_get(root, "n_kv_heads")) != G)
        rc = sks_fail(SKS_ESHAPE, "%s: n_layers / n_kv_heads: the map is for another shape than %d x %d", path, L, G);
    else if (!json_is_array(layers))
        rc = sks_fail(SKS_EFORMAT, "%s: layers: array expected", path);
    unsigned char *k = rc ? NULL : calloc((size_t)L * (size_t)G, 1);
    if (!rc && !k) rc = sks_fail(SKS_ENOMEM, "kv map: out of memory");
    for (size_t i = 0; !rc && i < json_array_size(layers); i++) {
        json_t *lay = json_array_get(layers, i), *kvs = json_object_get(lay, "kv_heads");
        json_t *jl = json_object_get(lay, "layer");
        if (!json_is_integer(jl) || json_integer_value(jl) < 0 || json_integer_value(jl) >= L || !json_is_array(kvs)) {
            rc = sks_fail(SKS_EFORMAT, "%s: layers[%zu]: layer in [0, %d) and kv_heads expected", path, i, L);
            break;
        }
        for (size_t j = 0; j < json_array_size(kvs); j++) {
            json_t *g = json_array_get(kvs, j);
            if (!json_is_integer(g) || json_integer_value(g) < 0 || json_integer_value(g) >= G) {
                rc = sks_fail(SKS_EFORMAT, "%s: layers[%zu].kv_heads[%zu]: KV head in [0, %d) expected", path, i, j, G);
                break;
            }
            k[json_integer_value(jl) * G + json_integer_value(g)] = 1;
        }
    }
    json_decref(root);
    if (rc) {
        free(k);
        return rc;
    }
    *keep_kv = k;
    return 0;
}

void sks_kveval_result_free(sks_kveval_result *r) {
    if (!r) return;
    for (int v = 0; v < SKS_KV_N; v++) sks_ppl_result_free(r->v[v].ppl);
    free(r->map_kv);
    free(r);
}

int sks_kveval_run(const sks_model *m, const int32_t *ids, int n, const sks_kveval_opts *o,
                   const unsigned char *map_kv, sks_kveval_result **out) {
    *out = NULL;
    const sks_arch *a = sks_model_arch(m);
    const int L = a->n_layers, H = a->n_heads, G = a->n_kv_heads, grp = H / G;
    if (o->kv_window < 1 || o->n_sink < 0)
        return sks_fail(SKS_EARG, "kv-eval: the KV window must be >= 1 and the sink count >= 0");
    int window, stride, rc;
    if ((rc = sks_ppl_resolve(m, &o->ppl, &window, &stride))) return rc;
    sks_kveval_result *r = calloc(1, sizeof *r);
    unsigned char *keep_h = map_kv ? calloc((size_t)L * (size_t)H, 1) : NULL;
    if (!r || (map_kv && !keep_h)) {
        free(r);
        free(keep_h);
        return sks_fail(SKS_ENOMEM, "kv-eval: out of memory");
    }
    r->kv_window = o->kv_window;
    r->n_sink = o->n_sink;
    r->T = window < n ? window : n;
    r->n_layers = L;
    r->n_heads = H;
    r->n_kv_heads = G;
    r->head_dim = a->head_dim;
    if (map_kv) {
        if (!(r->map_kv = malloc((size_t)L * (size_t)G))) rc = sks_fail(SKS_ENOMEM, "kv-eval: out of memory");
        else memcpy(r->map_kv, map_kv, (size_t)L * (size_t)G);
        for (int l = 0; l < L; l++)
            for (int g = 0; g < G; g++) r->n_map_kv_heads += map_kv[l * G + g] != 0;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) keep_h[l * H + h] = map_kv[l * G + h / grp] != 0;
    }
    /* the keys kept per (layer, KV head) at the end of a full window */
    const int64_t T = r->T, W = o->kv_window < T ? o->kv_window : T, LG = (int64_t)L * G;
    const int64_t SW = o->n_sink + o->kv_window < T ? o->n_sink + o->kv_window : T;
    int64_t map_extra = W < T ? r->n_map_kv_heads : 0;
    const int64_t entries[SKS_KV_N] = {T * LG, W * LG, SW * LG, W * LG + map_extra};
    const sks_fwd_kv_limit lim[SKS_KV_N] = {
        {0, 0, NULL}, {o->kv_window, 0, NULL}, {o->kv_window, o->n_sink, NULL}, {o->kv_window, 1, keep_h}};
    static const char *const stages[SKS_KV_N] = {"kv-eval full", "kv-eval recent", "kv-eval streaming",
                                                 "kv-eval kvmap"};
    sks_ppl_ctx *c = NULL;
    if (!rc) rc = sks_ppl_ctx_new(m, r->T, &c);
    for (int v = 0; v < SKS_KV_N && !rc; v++) {
        if (v == SKS_KV_MAP && !map_kv) continue;
        sks_fwd_hooks hk;
        memset(&hk, 0, sizeof hk);
        hk.kv_limit = v == SKS_KV_FULL ? NULL : &lim[v];
        rc = sks_ppl_run(c, ids, n, window, stride, &hk, stages[v], &r->v[v].ppl);
        r->v[v].present = !rc;
        r->v[v].kv_entries = entries[v];
        r->v[v].kv_bytes = (double)entries[v] * 2.0 * a->head_dim * 2.0;
        r->v[v].kv_fraction = (double)entries[v] / (double)entries[SKS_KV_FULL];
    }
    sks_ppl_ctx_free(c);
    free(keep_h);
    if (rc) {
        sks_kveval_result_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int sks_kveval_write(const sks_kveval_result *r, const sks_model *m, const char *text_path, const char *path) {
    if (!r || !m || !path) return sks_fail(SKS_EARG, "kv-eval: nothing to write");
    const sks_ppl_result *p0 = r->v[SKS_KV_FULL].ppl;
    sks_out w;
    sks_out_begin(&w, 6, "sinkscope.kv-eval/1", m);
    sks_out_kmap(&w, "params", 6);
    sks_out_kint(&w, "kv_window", r->kv_window);
    sks_out_kint(&w, "n_sink", r->n_sink);
    sks_out_kint(&w, "window", p0->window);
    sks_out_kint(&w, "stride", p0->stride);
    sks_out_kint(&w, "n_tokens", p0->n_tokens);
    sks_out_str(&w, "text");
    sks_out_str_or_nil(&w, text_path);
    sks_out_str(&w, "variants");
    int nv = 0;
    for (int v = 0; v < SKS_KV_N; v++) nv += r->v[v].present;
    sks_out_array(&w, (size_t)nv);
    for (int v = 0; v < SKS_KV_N; v++) {
        const sks_kveval_variant *x = &r->v[v];
        if (!x->present) continue;
        sks_out_map(&w, 8);
        sks_out_kstr(&w, "name", sks_kv_variant_name(v));
        sks_out_kf64(&w, "perplexity", x->ppl->ppl);
        sks_out_kf64(&w, "mean_nll", x->ppl->mean_nll);
        sks_out_kint(&w, "n_scored", x->ppl->n_scored);
        sks_out_kf64(&w, "delta_nll", x->ppl->mean_nll - p0->mean_nll);
        sks_out_kint(&w, "kv_entries", x->kv_entries);
        sks_out_kf64(&w, "kv_bytes", x->kv_bytes);
        sks_out_kf64(&w, "kv_fraction", x->kv_fraction);
    }
    sks_out_kint(&w, "n_map_kv_heads", r->map_kv ? r->n_map_kv_heads : -1);
    sks_out_str(&w, "map_kv_heads");
    if (r->map_kv) {
        int64_t shp[2] = {r->n_layers, r->n_kv_heads};
        int32_t *k = malloc((size_t)r->n_layers * (size_t)r->n_kv_heads * sizeof *k);
        if (k)
            for (int64_t i = 0; i < shp[0] * shp[1]; i++) k[i] = r->map_kv[i];
        if (k) sks_out_i32_array(&w, k, 2, shp);
        else sks_out_nil(&w);
        free(k);
    } else
        sks_out_nil(&w);
    return sks_out_finish(&w, path);
}
