/* moe.c - the mixture-of-experts FFN (contract in sks_moe.h).
 *
 * Per layer: one GEMM for the router over the T tokens, the top-k rule per token, then
 * per expert with routed tokens: gather their rows, three GEMMs (gate, up, down) over
 * them, and add w_e times the result to their output rows. Experts are visited in index
 * order and each token's contributions are added in that order (as transformers' loop
 * over experts does); the shared expert (Qwen2-MoE) runs over every token last.
 */
#include "sks_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sks_moe_ws {
    int max_T, E, k;
    int64_t d, fmax;
    float *logits;  /* (max_T, E) */
    int *experts;   /* (max_T, k) */
    float *weights; /* (max_T, k) */
    int *tok;       /* (max_T) tokens routed to the current expert */
    float *tw;      /* (max_T) their weights */
    float *X;       /* (max_T, d) gathered inputs */
    float *G, *U;   /* (max_T, fmax) */
    float *Ye;      /* (max_T, d) */
    float *sg;      /* (d) the shared expert's gate vector */
};

void sks_moe_topk(const float *z, int E, int k, int norm_topk, int *experts, float *weights) {
    /* softmax in f64; the j-th pick is the largest logit not yet taken (strictly greater
     * wins, so a tie goes to the lower index) */
    double mx = -INFINITY, sum = 0, sel = 0;
    for (int e = 0; e < E; e++)
        if (z[e] > mx) mx = z[e];
    for (int e = 0; e < E; e++) sum += exp((double)z[e] - mx);
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j && !taken; i++) taken = experts[i] == e;
            if (!taken && (best < 0 || z[e] > z[best])) best = e;
        }
        experts[j] = best;
        double p = exp((double)z[best] - mx) / sum;
        sel += p;
        weights[j] = (float)p;
    }
    if (norm_topk)
        for (int j = 0; j < k; j++) weights[j] = (float)(exp((double)z[experts[j]] - mx) / sum / sel);
}

static int64_t sks__fmax(const sks_arch *a) {
    int64_t f = a->d_ffn_expert;
    if (a->d_ffn_shared > f) f = a->d_ffn_shared;
    return f > 0 ? f : 1;
}

uint64_t sks_moe_ws_bytes(const sks_arch *a, int max_T) {
    if (a->n_experts <= 0) return 0;
    const uint64_t T = (uint64_t)(max_T > 0 ? max_T : 0), E = (uint64_t)a->n_experts, k = (uint64_t)a->n_experts_used;
    const uint64_t d = (uint64_t)a->d_model, f = (uint64_t)sks__fmax(a);
    return T * (E + 2 * k + 2 + 2 * d + 2 * f) * 4 + d * 4;
}

void sks_moe_ws_free(sks_moe_ws *w) {
    if (!w) return;
    SKS_FREE_ALL(w->logits, w->experts, w->weights, w->tok, w->tw, w->X, w->G, w->U, w->Ye, w->sg, w);
}

int sks_moe_ws_new(const sks_arch *a, int max_T, sks_moe_ws **out) {
    *out = NULL;
    if (a->n_experts <= 0 || a->n_experts_used <= 0 || a->n_experts_used > a->n_experts || a->n_experts_used > 256 ||
        a->d_ffn_expert <= 0)
        return sks_fail(SKS_ECONFIG, "moe: %d experts, %d per token, width %d: not a mixture of experts the forward runs",
                        a->n_experts, a->n_experts_used, a->d_ffn_expert);
    sks_moe_ws *w = calloc(1, sizeof *w);
    if (!w) return sks_fail(SKS_ENOMEM, "moe: out of memory");
    const size_t T = (size_t)max_T;
    w->max_T = max_T;
    w->E = a->n_experts;
    w->k = a->n_experts_used;
    w->d = a->d_model;
    w->fmax = sks__fmax(a);
    w->logits = sks_malloc_n(T, (size_t)w->E * sizeof(float));
    w->experts = sks_malloc_n(T, (size_t)w->k * sizeof(int));
    w->weights = sks_malloc_n(T, (size_t)w->k * sizeof(float));
    w->tok = sks_malloc_n(T, sizeof(int));
    w->tw = sks_malloc_n(T, sizeof(float));
    w->X = sks_malloc_n(T, (size_t)w->d * sizeof(float));
    w->G = sks_malloc_n(T, (size_t)w->fmax * sizeof(float));
    w->U = sks_malloc_n(T, (size_t)w->fmax * sizeof(float));
    w->Ye = sks_malloc_n(T, (size_t)w->d * sizeof(float));
    w->sg = sks_malloc_n((size_t)w->d, sizeof(float));
    if (!w->logits || !w->experts || !w->weights || !w->tok || !w->tw || !w->X || !w->G || !w->U || !w->Ye || !w->sg) {
        sks_moe_ws_free(w);
        return sks_fail(SKS_ENOMEM, "moe: out of memory for workspaces of %d tokens", max_T);
    }
    *out = w;
    return 0;
}

static const sks_tensor *sks__need(const sks_model *m, sks_role role, int layer, int e) {
    const sks_tensor *t = e >= 0 ? sks_model_expert(m, role, layer, e) : sks_model_tensor(m, role, layer);
    if (!t) sks_fail(SKS_ENOTFOUND, "moe: missing %s of layer %d%s", sks_role_name(role), layer, e >= 0 ? " (expert)" : "");
    return t;
}

int sks_moe_route(const sks_model *m, int layer, const float *X, int T, int *experts, float *weights, float *logits,
                  float *ws, size_t ws_floats) {
    const sks_arch *a = sks_model_arch(m);
    const sks_tensor *R = sks__need(m, SKS_ROLE_ROUTER, layer, -1);
    if (!R) return SKS_ENOTFOUND;
    const int E = a->n_experts, k = a->n_experts_used;
    float *z = logits ? logits : malloc((size_t)T * (size_t)E * sizeof(float));
    if (!z) return sks_fail(SKS_ENOMEM, "moe: out of memory for router logits");
    int rc = sks_matmul_wt(R, X, T, z, ws, ws_floats);
    for (int t = 0; !rc && t < T; t++)
        sks_moe_topk(z + (size_t)t * E, E, k, a->moe_norm_topk, experts + (size_t)t * k, weights + (size_t)t * k);
    if (z != logits) free(z);
    return rc;
}

/* Y (n, d) = W_down (act(W_gate X) * W_up X) for X (n, d); G, U (n, f) scratch; e: the
 * routed expert, -1 the shared one (hook_e: its number for on_linear_in, E). */
static int sks__swiglu_ffn(const sks_model *m, int layer, int e, int hook_e, const sks_role roles[3], const float *X,
                           int n, float *G, float *U, float *Y, const sks_fwd_hooks *hk, float *ws, size_t ws_floats) {
    const sks_tensor *Wg = sks__need(m, roles[0], layer, e), *Wu = sks__need(m, roles[1], layer, e),
                     *Wd = sks__need(m, roles[2], layer, e);
    if (!Wg || !Wu || !Wd) return SKS_ENOTFOUND;
    const int64_t f = Wg->shape[0];
    int rc;
    if ((rc = sks_matmul_wt(Wg, X, n, G, ws, ws_floats))) return rc;
    if ((rc = sks_matmul_wt(Wu, X, n, U, ws, ws_floats))) return rc;
    sks_fwd_act_mul(sks_model_arch(m)->act, G, U, (int64_t)n * f);
    if (hk && hk->on_linear_in && (rc = hk->on_linear_in(hk->ud, layer, SKS_FWD_LIN_DOWN, hook_e, G, n, (int)f))) return rc;
    return sks_matmul_wt(Wd, G, n, Y, ws, ws_floats);
}

int sks_moe_ffn(const sks_model *m, int layer, const float *X, int T, float *Y, sks_moe_ws *w,
                const sks_fwd_hooks *hk, float *ws, size_t ws_floats) {
    const sks_arch *a = sks_model_arch(m);
    if (!w || T > w->max_T) return sks_fail(SKS_EARG, "moe: %d tokens do not fit the workspace", T);
    const int E = w->E, k = w->k;
    const int64_t d = w->d;
    int rc = sks_moe_route(m, layer, X, T, w->experts, w->weights, w->logits, ws, ws_floats);
    if (rc) return rc;
    if (hk && hk->on_route && (rc = hk->on_route(hk->ud, layer, w->experts, w->weights, w->logits, T, k, E))) return rc;
    memset(Y, 0, (size_t)T * (size_t)d * sizeof(float));
    static const sks_role exp_roles[3] = {SKS_ROLE_EXP_GATE, SKS_ROLE_EXP_UP, SKS_ROLE_EXP_DOWN};
    for (int e = 0; e < E; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (w->experts[(size_t)t * k + j] == e) {
                    w->tok[n] = t;
                    w->tw[n] = w->weights[(size_t)t * k + j];
                    memcpy(w->X + (size_t)n * d, X + (size_t)t * d, (size_t)d * sizeof(float));
                    n++;
                }
        if (!n) continue;
        if ((rc = sks__swiglu_ffn(m, layer, e, e, exp_roles, w->X, n, w->G, w->U, w->Ye, hk, ws, ws_floats))) return rc;
        for (int i = 0; i < n; i++) {
            float *yr = Y + (size_t)w->tok[i] * d;
            const float *er = w->Ye + (size_t)i * d, c = w->tw[i];
            for (int64_t j = 0; j < d; j++) yr[j] += c * er[j];
        }
    }
    if (a->d_ffn_shared > 0) {
        static const sks_role sh_roles[3] = {SKS_ROLE_SHEXP_GATE, SKS_ROLE_SHEXP_UP, SKS_ROLE_SHEXP_DOWN};
        const sks_tensor *sg = sks__need(m, SKS_ROLE_SHEXP_ROUTER, layer, -1);
        if (!sg) return SKS_ENOTFOUND;
        if ((rc = sks_tensor_rows_f32(sg, 0, 1, w->sg))) return rc;
        for (int t = 0; t < T; t++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += (double)w->sg[j] * (double)X[(size_t)t * d + j];
            w->tw[t] = (float)(1.0 / (1.0 + exp(-s)));
        }
        if ((rc = sks__swiglu_ffn(m, layer, -1, E, sh_roles, X, T, w->G, w->U, w->Ye, hk, ws, ws_floats))) return rc;
        for (int t = 0; t < T; t++) {
            float *yr = Y + (size_t)t * d;
            const float *er = w->Ye + (size_t)t * d, c = w->tw[t];
            for (int64_t j = 0; j < d; j++) yr[j] += c * er[j];
        }
    }
    return 0;
}
