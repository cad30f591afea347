/* sks_kveval.h - what KV-cache eviction costs, measured by perplexity (SPEC section 8,
 * StreamingLLM, Xiao et al. 2023).
 *
 * The text is scored in windows of the model's context (sks_perplexity.h); inside a
 * window the attention of every query is limited to the keys a cache would still hold:
 *   full       every earlier key                               (the reference)
 *   recent     the last W keys (j > i - W)
 *   streaming  the first S keys plus the last W                (StreamingLLM)
 *   kvmap      the last W, plus key 0 for the heads whose KV head the KV map lists
 *              (`sinks --kv-map`, layers[].kv_heads): heads sharing a kept KV row may
 *              all read it, as they would in a real cache
 * Positions stay the real ones (RoPE at i and j; see sks_fwd_kv_limit).
 *
 * KV memory: the cache entries a variant keeps at the end of a full window of T tokens,
 * summed over layers and KV heads: full T L Hkv, recent W L Hkv, streaming (S + W) L Hkv,
 * kvmap W L Hkv + (kept KV heads); bytes = entries * 2 (K and V) * dh * 2 (f16).
 */
#ifndef SKS_KVEVAL_H
#define SKS_KVEVAL_H

#include "sks_perplexity.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int kv_window;      /* W, required (> 0) */
    int n_sink;         /* S, default 4 */
    sks_ppl_opts ppl;   /* the perplexity windows (default: the context, stride = it) */
} sks_kveval_opts;

void sks_kveval_opts_default(sks_kveval_opts *o);

enum { SKS_KV_FULL = 0, SKS_KV_RECENT = 1, SKS_KV_STREAMING = 2, SKS_KV_MAP = 3, SKS_KV_N = 4 };
const char *sks_kv_variant_name(int v); /* "full", "recent", "streaming", "kvmap" */

typedef struct {
    int present;        /* kvmap: only with a KV map */
    sks_ppl_result *ppl;
    int64_t kv_entries; /* kept (position, layer, KV head) entries for a full window */
    double kv_bytes;    /* kv_entries * 2 * dh * 2 */
    double kv_fraction; /* of the full variant */
} sks_kveval_variant;

typedef struct {
    int kv_window, n_sink, T;       /* T: tokens per perplexity window */
    int n_layers, n_heads, n_kv_heads, head_dim;
    int n_map_kv_heads;             /* (layer, KV head) pairs the map keeps key 0 for */
    unsigned char *map_kv;          /* (n_layers, n_kv_heads) or NULL */
    sks_kveval_variant v[SKS_KV_N];
} sks_kveval_result;

/* Read a `sinkscope.kvmap/1` JSON (docs/schema-sinks.md) into keep (n_layers, n_kv_heads)
 * of 0/1, checked against the model's shape. */
int sks_kvmap_read(const char *path, const sks_model *m, unsigned char **keep_kv);

/* Run the variants on ids; map_kv (n_layers, n_kv_heads) may be NULL (no kvmap variant). */
int sks_kveval_run(const sks_model *m, const int32_t *ids, int n, const sks_kveval_opts *o,
                   const unsigned char *map_kv, sks_kveval_result **out);
void sks_kveval_result_free(sks_kveval_result *r);

/* msgpack, schema "sinkscope.kv-eval/1" (docs/schema-cost.md). */
int sks_kveval_write(const sks_kveval_result *r, const sks_model *m, const char *text_path, const char *path);

#ifdef __cplusplus
}
#endif
#endif
