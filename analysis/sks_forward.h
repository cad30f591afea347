/* sks_forward.h - instrumented f32 forward pass over the model view.
 *
 * Residual rule (pre-norm): h_{b+1} = h_b + F_b(RMSNorm(h_b) * gamma_b),
 * RMSNorm(x) = x / sqrt(mean(x^2) + eps), block b: 0 = embeddings, 2l+1 = after the
 * attention of layer l, 2l+2 = after its FFN. Attention: A[i,j] = softmax_j(q_i.k_j /
 * sqrt(dh)), causal, RoPE at the real positions in the model's pair order, head h reads
 * KV head h / (H / Hkv). FFN: W_down (SiLU(W_gate x) * (W_up x)).
 *
 * Prompt processing is batched over tokens: every projection is one GEMM (OpenBLAS)
 * over the T tokens, with weights converted to f32 a block of rows at a time (never a
 * whole bf16/quantized matrix at once; f32 weights are used in place). Reductions
 * (RMS, softmax sums) accumulate in f64.
 *
 * Hooks see intermediate tensors as they are produced; the library stores nothing
 * beyond its workspaces. Every pointer handed to a hook is valid only during the call.
 * A hook returns 0 to continue or a negative code to abort the pass (returned as is).
 *
 * Threads: without the probabilities hook, attention heads and SwiGLU run on worker
 * threads (as many as OpenBLAS threads, at most H) while OpenBLAS is set to one thread;
 * the count is restored after. Do not run passes from several threads of one process
 * at the same time (one sks_forward per thread is fine when they take turns).
 */
#ifndef SKS_FORWARD_H
#define SKS_FORWARD_H

#include "../loaders/sks_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sks_fwd_hooks {
    void *ud;
    /* After block b (0 .. 2L): the residual stream h, (T, d) row-major. */
    int (*on_residual)(void *ud, int block, const float *h, int T, int d);
    /* Layer l attention input after RMSNorm and gamma_attn, (T, d). */
    int (*on_attn_in)(void *ud, int layer, const float *x, int T, int d);
    /* Layer l queries and keys, (T, H*dh) and (T, Hkv*dh): pre-RoPE (after bias and
     * Qwen3 q/k norm) and post-RoPE. */
    int (*on_qk)(void *ud, int layer, const float *q_pre, const float *k_pre,
                 const float *q_post, const float *k_post, int T, int H, int Hkv, int dh);
    /* Layer l head h attention probabilities, (T, T) row-major, A[i, j] = 0 for j > i.
     * Called only when the hooks ask for it (want_attn_probs), since it costs T^2 H. */
    int (*on_attn_probs)(void *ud, int layer, int head, const float *A, int T);
    /* Layer l FFN input after RMSNorm and gamma_ffn, (T, d). */
    int (*on_ffn_in)(void *ud, int layer, const float *x, int T, int d);
    /* Layer l FFN output (before the residual add), (T, d). */
    int (*on_ffn_out)(void *ud, int layer, const float *y, int T, int d);
    int want_attn_probs;
    /* (addition) Linear inputs, writable: called just before the projections that read
     * x, which the hook may change in place (fake quantization). site says which input
     * (sks_fwd_site); x is (T, n) with n = d (attention, FFN), H*dh (W_O) or f (W_down).
     * expert: -1, except for the W_down inputs of an MoE layer (sks_moe.h): e in [0, E)
     * for routed expert e (then T is the number of tokens routed to it), E for the
     * shared expert (all T tokens). */
    int (*on_linear_in)(void *ud, int layer, int site, int expert, float *x, int T, int n);
    /* (addition) Attention limited to some keys (KV-cache eviction); NULL: full causal. */
    const struct sks_fwd_kv_limit *kv_limit;
    /* (addition) MoE layers (sks_moe.h): after the router, the k experts of each token
     * and their weights (T, k), and the router logits (T, E). */
    int (*on_route)(void *ud, int layer, const int *experts, const float *weights, const float *logits, int T, int k,
                    int E);
} sks_fwd_hooks;

/* Linear inputs seen by on_linear_in. */
typedef enum {
    SKS_FWD_LIN_ATTN = 0, /* RMSNorm(h) * gamma_attn, read by W_Q, W_K, W_V */
    SKS_FWD_LIN_WO = 1,   /* concatenated head outputs, read by W_O */
    SKS_FWD_LIN_FFN = 2,  /* RMSNorm(h) * gamma_ffn, read by W_gate, W_up */
    SKS_FWD_LIN_DOWN = 3, /* SiLU(W_gate x) * (W_up x), read by W_down */
    SKS_FWD_N_LIN = 4
} sks_fwd_site;

/* Keys a query may attend to, in causal mode: query at position i sees key j <= i when
 * i - j < window, or when j < n_sink and head (layer, h) keeps the sink keys:
 * keep_sink == NULL means every head, else keep_sink[layer * H + h] != 0. Positions
 * stay the real ones (RoPE at i and j): the cache evicts keys, it does not renumber.
 * window <= 0 means no limit. */
typedef struct sks_fwd_kv_limit {
    int window;
    int n_sink;
    const unsigned char *keep_sink; /* (L, H) or NULL */
} sks_fwd_kv_limit;

typedef enum {
    SKS_FWD_CAUSAL = 0,      /* one sequence of T tokens at positions 0..T-1 */
    SKS_FWD_INDEPENDENT = 1  /* T independent one-token sequences, each at position 0
                                (vocabulary sweep): attention output is W_O W_V x */
} sks_fwd_mode;

typedef struct sks_forward sks_forward;

/* Workspaces for up to max_T tokens. */
int sks_forward_new(const sks_model *m, int max_T, sks_forward **out);
/* Heap bytes sks_forward_new allocates for max_T tokens (for the memory model). */
uint64_t sks_forward_bytes(const sks_arch *a, int max_T);
void sks_forward_free(sks_forward *f);

/* Run T tokens. hooks may be NULL. logits, if not NULL, receives (T, V) (or (1, V)
 * for the last position only when last_only is set). */
int sks_forward_run(sks_forward *f, const int32_t *tokens, int T, sks_fwd_mode mode,
                    const sks_fwd_hooks *hooks, float *logits, int last_only);

/* Greedy generation with a KV cache: feeds prompt (n_prompt >= 1 tokens), then
 * appends up to n_gen argmax tokens to out_ids (stops early at eos if stop_at_eos).
 * Returns the number generated in *n_out. */
int sks_forward_generate(sks_forward *f, const int32_t *prompt, int n_prompt, int n_gen,
                         int stop_at_eos, int32_t *out_ids, int *n_out);

/* The same, calling on_token(ud, id, i) after the i-th generated token is chosen (for
 * streaming output); a negative return stops generation and is returned. on_token may
 * be NULL. (Addition to the first contract.) */
typedef int (*sks_fwd_token_fn)(void *ud, int32_t id, int i);
int sks_forward_generate_cb(sks_forward *f, const int32_t *prompt, int n_prompt, int n_gen, int stop_at_eos,
                            sks_fwd_token_fn on_token, void *ud, int32_t *out_ids, int *n_out);

/* gate[i] <- act(gate[i]) * up[i] for n entries: SiLU, or gelu_tanh (GeGLU); up NULL: act alone
 * (the non-gated MLP of GPT-2). */
void sks_fwd_act_mul(sks_act_kind act, float *gate, const float *up, int64_t n);

/* Helper: convert rows of W (out, in) block by block and compute Y = X W^T for
 * X (T, in), Y (T, out); ws must hold ws_floats floats (see sks_forward). */
int sks_matmul_wt(const sks_tensor *W, const float *X, int T, float *Y, float *ws, size_t ws_floats);

#ifdef __cplusplus
}
#endif
#endif
