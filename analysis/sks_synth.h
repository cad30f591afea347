/* sks_synth.h - synthetic checkpoints with planted massive activations and sinks.
 *
 * A generator for Hugging Face style model directories (config.json, safetensors,
 * sharded with model.safetensors.index.json above a size limit) whose weights are
 * random at a realistic scale plus a planted mechanism with known ground truth
 * (written to planted.json). The derivation is in docs/synth.md; in short:
 *
 *   - layer 0 attention, head h0: a "steering" head. Its value/output map sends the
 *     BOS direction b to the spike direction s* (W_O[:, h0] W_V[g0] = kappa s* b^T),
 *     and its keys give BOS a large negative logit, so later positions never read
 *     it: only position 0 (which can attend to nothing but itself) is steered to s*.
 *   - FFN of layer ls (step-up): a few hidden units with g_j = u_j = a s*, so that
 *     S_c = 1/2 (W_gate^T diag(W_down[c,:]) W_up + transpose) has the planted
 *     eigenpair (lambda*_c, s*) for every spike channel c; a second planted pair
 *     (lambda*_c / dominance, s2) sets the dominance. out_c ~ lambda*_c (s*.x)^2.
 *   - FFN of layer ld (step-down): units reading the normalised spike vector v
 *     (sparse over the spike channels), gated off for ordinary tokens by the
 *     common mean direction mu, writing -(spike) to the spike channels.
 *   - sink heads (l, h), ls < l <= ld: W_K[g(h)] row r maps v to a large key,
 *     W_Q[h] row r maps mu (shared by every ordinary token) to a large query, r the
 *     lowest-frequency RoPE dimension, so every query prefers the spike token.
 *
 * Every tensor row is generated from its own counter-based stream (seed, tensor,
 * row), so any row can be regenerated independently (tests) and the writer streams
 * a few MB at a time: a 7B checkpoint never lives in memory. Same seed, same bytes.
 */
#ifndef SKS_SYNTH_H
#define SKS_SYNTH_H

#include "../loaders/sks_model.h"
#include "sks_trace.h"
#include "sks_spikes.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SKS_SYNTH_MAX_SPIKE = 8, SKS_SYNTH_MAX_UNITS = 16 };

/* Everything that defines a synthetic model. Fill with sks_synth_preset (or
 * sks_synth_config_default after setting the architecture) and adjust. */
typedef struct {
    sks_arch arch;           /* family llama, mistral, qwen2 or gemma2; rope_interleaved 0 */
    char preset[32];         /* name recorded in planted.json ("" for --config) */

    /* random part */
    double weight_std;       /* v, gate, up, lm_head; default 0.02 */
    double resid_std;        /* o_proj, down_proj; 0: weight_std / sqrt(2 L) */
    double qk_std;           /* q_proj, k_proj; 0: weight_std * min(1, sqrt(1024 / d)) */
    double embed_std;        /* per-entry noise of token embeddings, default 1 */
    double embed_mean_cos;   /* cos(embedding, mu) of an ordinary token, default 0.5 */
    double norm_std;         /* gammas are 1 + norm_std N(0,1), default 0.05 */
    double bias_std;         /* qwen2 q/k/v biases, default 0.02 */

    /* planted spike */
    int step_up_layer;       /* ls, -1: automatic */
    int step_down_layer;     /* ld > ls, -1: automatic; L: none (spike persists) */
    int n_spike;             /* spike channels (1..SKS_SYNTH_MAX_SPIKE), default 2 */
    int spike_channels[SKS_SYNTH_MAX_SPIKE]; /* -1: chosen from the seed */
    double spike_values[SKS_SYNTH_MAX_SPIKE]; /* target plateau values at token 0 */
    double dominance;        /* |lambda_1 / lambda_2| of the planted S_c, default 8 */
    int n_up_units;          /* hidden units carrying s* (default 4) */
    double gate_z;           /* gate pre-activation of planted units at token 0 (10) */
    double steer_ratio;      /* |steer output| / |e_BOS| at position 0, default 4 */

    /* planted sinks */
    double sink_fraction;    /* fraction of heads per eligible layer, default 0.3 */
    double sink_margin;      /* logit of the sink key over ordinary keys, default 9 */
    double avoid_margin;     /* layer-0 steering head: logit penalty of BOS, default 12 */

    /* mixture of experts (family "mixtral", arch.n_experts > 0): the step-up units live
     * in expert moe_up_expert of layer ls, the step-down units in moe_down_expert of
     * ld; the router row of each is planted along s* (resp. the spike direction v) so
     * that the spike token's router logit for it is moe_router_z (ordinary tokens ~0) */
    int moe_up_expert;       /* default 1 % E */
    int moe_down_expert;     /* default (E - 1) */
    double moe_router_z;     /* default 12 */
} sks_synth_config;

/* Switch cfg to another model family, keeping the sizes: llama, mistral, qwen2, or
 * gemma2 (sandwich norms, GeGLU, (1 + w) norms, embeddings times sqrt(d), softcaps 50 /
 * 30, window 4096 on every other layer; the planted gate gets gate_z 30 when it was
 * the default 10; see docs/synth.md "Gemma 2"). SKS_EUNSUPPORTED for other names. */
int sks_synth_set_model_type(sks_synth_config *cfg, const char *model_type);

/* Defaults for the planted part given cfg->arch (call after filling arch). */
void sks_synth_config_default(sks_synth_config *cfg);
/* Presets: tiny, demo, small, llama2-7b, llama3-8b, qwen2.5-7b, mixtral-tiny (4 experts,
 * top-2), mixtral-8x7b. SKS_EARG if unknown. */
int sks_synth_preset(const char *name, sks_synth_config *cfg);
/* The preset names, NULL-terminated. */
const char *const *sks_synth_preset_names(void);
/* Parse a JSON text with the classic config.json keys (hidden_size, ... see
 * docs/synth.md) and optional planted keys; keys absent fall back to the preset named
 * by "preset" (default "tiny") then to defaults. src names the text in errors. */
int sks_synth_config_from_json(const char *json, const char *src, sks_synth_config *cfg);

/* The planted ground truth (valid while the sks_synth lives). */
typedef struct {
    int bos_id;
    int step_up_layer, step_down_layer;  /* step_down_layer = L when there is none */
    int n_spike;
    int channels[SKS_SYNTH_MAX_SPIKE];
    double values[SKS_SYNTH_MAX_SPIKE];  /* target plateau value per channel */
    double lambda_star[SKS_SYNTH_MAX_SPIKE]; /* planted eigenvalue of S_c with s* */
    double lambda_2[SKS_SYNTH_MAX_SPIKE];    /* planted second eigenvalue (s2) */
    double dominance;
    const float *s_star;                 /* (d) unit, shared by all spike channels */
    const float *s_2;                    /* (d) unit, second planted eigenvector */
    const float *bos_dir;                /* (d) unit b */
    const float *mean_dir;               /* (d) unit mu */
    const float *spike_dir;              /* (d) unit v over the spike channels */
    int n_up_units, n_up2_units, n_down_units;
    const int *up_units, *up2_units, *down_units;
    int steer_head, steer_kv_head, steer_value_dim;
    int key_dim;                         /* r: lowest-frequency RoPE dimension */
    double cos_x0_sstar_pred;            /* predicted cos(FFN input at ls, s*) at token 0 */
    int n_sink;
    const int *sink_heads;               /* (n_sink, 2) layer, head */
    /* mixture of experts (n_experts > 0): the experts that carry the planted units */
    int n_experts, moe_up_expert, moe_down_expert;
    double moe_router_z;
} sks_synth_planted;

typedef struct sks_synth sks_synth;

int sks_synth_new(const sks_synth_config *cfg, uint64_t seed, sks_synth **out);
void sks_synth_free(sks_synth *s);
const sks_arch *sks_synth_arch(const sks_synth *s);
const sks_synth_planted *sks_synth_get_planted(const sks_synth *s);
/* 1 if (layer, head) is a planted sink head. */
int sks_synth_is_sink(const sks_synth *s, int layer, int head);
/* Parameters of the model it writes (every tensor's elements). */
uint64_t sks_synth_n_params(const sks_synth *s);

/* The tensors in file order, with their Hugging Face names. */
size_t sks_synth_n_tensors(const sks_synth *s);
int sks_synth_tensor_info(const sks_synth *s, size_t i, const char **name, sks_role *role, int *layer,
                          int *ndim, int64_t shape[2]);
/* The expert of tensor i (per-expert roles), else -1. MoE tensors come grouped by part:
 * every expert's w1, then w3, then w2 of a layer. */
int sks_synth_tensor_expert(const sks_synth *s, size_t i);
/* Rows [row0, row0+nrows) of tensor i as f32, (nrows, cols) row-major (1-D: row0 0,
 * nrows 1). Deterministic in (seed, tensor, row) only. */
int sks_synth_rows(const sks_synth *s, size_t i, int64_t row0, int64_t nrows, float *out);

/* Write DIR/config.json, the safetensors (one file, or model-0000k-of-0000n shards
 * plus model.safetensors.index.json when the total exceeds max_shard_bytes; 0 means
 * the Hugging Face default of 5e9), planted.json. dt: SKS_DT_F32 or SKS_DT_BF16.
 * Creates DIR if needed. Reports progress as stage "synth". */
int sks_synth_write(const sks_synth *s, const char *dir, sks_dtype dt, uint64_t max_shard_bytes);

/* Write DIR/model.gguf (GGUF v3, llama.cpp's tensor names and `<arch>.*` metadata keys,
 * Q/K rows of `llama` permuted to the interleaved RoPE order as convert_hf_to_gguf does;
 * Mixtral as `llama` with expert_count and stacked 3-D ffn_*_exps tensors)
 * with the tensor types of scheme (sks_gguf.h: "q4_k", "q4_k_m", "f16", ...) and
 * DIR/planted.json. Quantization is round-to-nearest (loaders/quantize.c), not llama.cpp's
 * optimized quantizer. Llama 3 RoPE scaling is refused (GGUF stores it as a tensor that
 * the loader does not apply). Reports progress as stage "synth". */
int sks_synth_write_gguf(const sks_synth *s, const char *dir, const char *scheme);

/* Create DIR and its parents (shared by the writers). */
int sks__synth_mkdirs(const char *dir);

/* The JSON texts written by sks_synth_write (malloc'd, caller frees). */
int sks_synth_config_json(const sks_synth *s, sks_dtype dt, char **out);
int sks_synth_planted_json(const sks_synth *s, sks_dtype dt, char **out);

/* Planted versus found (analysis/synth_verify.c): an independent trace of the model
 * written from s (model_dir) on four pseudo-random prompts of 64 tokens with the
 * default trace options (the paper's abs 100, ratio 1000, eps 0.3), compared with the
 * planted spike channels, spike token, lifecycle and sink heads. */
typedef struct {
    int pass;           /* every check below */
    int channels_found; /* every planted spike channel found, and no other */
    int n_found;        /* spike channels found */
    int token0_only;    /* the only spike token is position 0 */
    int lifecycle_ok;   /* main step-up and step-down at the planted FFNs */
    int up_block, down_block; /* the planted blocks (down -1: none) */
    double plateau_min_ratio; /* min over the plateau of |h| / block median */
    int tp, fp, fn;     /* sink heads: planted and measured, measured only, planted only */
    double alpha0_min_planted, alpha0_max_other;
    sks_trace_opts trace; /* the thresholds used */
    int moe;              /* an MoE model: moe_check below is part of pass */
    sks_moe_plant_check moe_check; /* routing and the planted expert's form (sks_spikes.h) */
} sks_synth_verdict;

int sks_synth_verify(const sks_synth *s, const char *model_dir, sks_synth_verdict *v);
/* The verdict as JSON (schema sinkscope.demo-verify/1), written atomically to path. */
int sks_synth_verdict_write(const sks_synth_verdict *v, const char *path);

#ifdef __cplusplus
}
#endif
#endif
