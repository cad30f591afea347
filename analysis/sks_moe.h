/* sks_moe.h - the mixture-of-experts FFN of the forward pass (SPEC section 6).
 *
 * For the normalized FFN input x of an MoE layer (sks_arch_layer_moe):
 *   z = W_router x (E logits), p = softmax(z) (f64),
 *   the k experts of largest p (ties: the lower expert index first),
 *   w_e = p_e, divided by their sum when moe_norm_topk (Mixtral; Qwen's norm_topk_prob),
 *   y = sum_e w_e W_down,e (act(W_gate,e x) * W_up,e x)
 *       + sigmoid(w_sg . x) W_down,s (act(W_gate,s x) * W_up,s x)   (shared expert, Qwen2-MoE).
 * Only the routed experts are computed: the tokens routed to expert e are gathered and
 * its three projections are GEMMs over them (sks_matmul_wt, weights converted a block
 * of rows at a time from the mapped file, one expert at a time).
 */
#ifndef SKS_MOE_H
#define SKS_MOE_H

#include "sks_forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The routing rule on one token's router logits z (E): the k experts (descending p,
 * ties to the lower index) and their weights, as the arch says (moe_norm_topk). */
void sks_moe_topk(const float *z, int E, int k, int norm_topk, int *experts, float *weights);

typedef struct sks_moe_ws sks_moe_ws;

/* Workspaces for up to max_T tokens of the model's MoE layers. */
int sks_moe_ws_new(const sks_arch *a, int max_T, sks_moe_ws **out);
uint64_t sks_moe_ws_bytes(const sks_arch *a, int max_T);
void sks_moe_ws_free(sks_moe_ws *w);

/* Routing of T tokens X (T, d) at layer `layer`: experts and weights (T, k), and the
 * router logits (T, E) when logits is not NULL. ws (ws_floats) converts weight rows. */
int sks_moe_route(const sks_model *m, int layer, const float *X, int T, int *experts, float *weights, float *logits,
                  float *ws, size_t ws_floats);

/* The MoE FFN of layer `layer` on X (T, d) into Y (T, d). hk (may be NULL): on_route
 * after the routing, on_linear_in (SKS_FWD_LIN_DOWN, expert e: the n_e routed tokens of
 * each expert, width f_e; then expert E: the shared expert's T tokens, width f_s) before
 * each W_down. */
int sks_moe_ffn(const sks_model *m, int layer, const float *X, int T, float *Y, sks_moe_ws *w,
                const sks_fwd_hooks *hk, float *ws, size_t ws_floats);

#ifdef __cplusplus
}
#endif
#endif
