/* spikes_moe.c - the amplifier of a mixture-of-experts layer (sks_spikes_moe in
 * sks_spikes.h, SPEC section 6).
 *
 * Each expert e is a SwiGLU FFN of its own, S_k^(e) = 1/2 (G_e^T diag(D_e,k) U_e +
 * U_e^T diag(D_e,k) G_e); the spikes machinery runs on it unchanged through
 * sks_spikes_set_ffn (the expert's mapped tensors, converted one expert at a time). At
 * the token, the layer's output channel k is sum_e w_e out_k^(e)(x) (+ the gated shared
 * expert), whose quadratic part is the form of the stacked routed experts
 *   G = [G_e1; G_e2; ...], U = [U_e1; ...], Down = [w_1 D_e1, w_2 D_e2, ...]:
 * one f32 copy of the k routed experts (used in place by the spikes context) gives the
 * active form's lambda*, s* and x^T S x against the true output.
 */
#include "sks_moe.h"
#include "sks_spikes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sks_spikes_moe_free(sks_spikes_moe *m) {
    if (!m) return;
    free(m->experts);
    free(m->weights);
    if (m->per_expert)
        for (int i = 0; i < m->n_per_expert; i++) sks_spikes_layer_result_free(&m->per_expert[i]);
    free(m->per_expert);
    free(m->share);
    free(m);
}

/* The three matrices of expert e (-1: the shared expert) of layer l. */
static int sks__expert_ffn(const sks_model *m, int l, int e, const sks_tensor *t[3]) {
    if (e >= 0) {
        t[0] = sks_model_expert(m, SKS_ROLE_EXP_GATE, l, e);
        t[1] = sks_model_expert(m, SKS_ROLE_EXP_UP, l, e);
        t[2] = sks_model_expert(m, SKS_ROLE_EXP_DOWN, l, e);
    } else {
        t[0] = sks_model_tensor(m, SKS_ROLE_SHEXP_GATE, l);
        t[1] = sks_model_tensor(m, SKS_ROLE_SHEXP_UP, l);
        t[2] = sks_model_tensor(m, SKS_ROLE_SHEXP_DOWN, l);
    }
    if (!t[0] || !t[1] || !t[2])
        return sks_fail(SKS_ENOTFOUND, "%s: layer %d lacks %s %d's matrices", sks_model_path(m), l,
                        e >= 0 ? "expert" : "the shared expert", e);
    return 0;
}

/* dst[r * ld + c0 + j] = scale * t[r, j] for every row r of t (converted in blocks). */
static int sks__put_rows(const sks_tensor *t, float *dst, int64_t ld, int64_t c0, float scale, float *tmp,
                         int64_t tmp_rows) {
    const int64_t rows = sks_tensor_rows(t), cols = sks_tensor_cols(t);
    for (int64_t r0 = 0; r0 < rows; r0 += tmp_rows) {
        int64_t nr = rows - r0 < tmp_rows ? rows - r0 : tmp_rows;
        int rc = sks_tensor_rows_f32(t, r0, nr, tmp);
        if (rc) return rc;
        for (int64_t r = 0; r < nr; r++)
            for (int64_t j = 0; j < cols; j++) dst[(r0 + r) * ld + c0 + j] = scale * tmp[r * cols + j];
    }
    return 0;
}

static double sks__act(sks_act_kind k, double z) {
    if (k == SKS_ACT_GELU_TANH) return 0.5 * z * (1.0 + tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)));
    return z / (1.0 + exp(-z));
}

int sks_spikes_moe_layer(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                         const sks_spikes_split *split, sks_spikes_layer_result *out) {
    memset(out, 0, sizeof *out);
    const sks_model *m = sks_spikes_model(s);
    const sks_arch *a = sks_model_arch(m);
    const float *fo;
    int T;
    const float *fin = sks_spikes_ffn_io(s, layer, &fo, &T);
    if (!fin)
        return sks_fail(SKS_EARG, "spikes: layer %d is a mixture of experts: its active form needs the forward pass",
                        layer);
    const int d = a->d_model, E = a->n_experts, k = a->n_experts_used, sh = a->d_ffn_shared > 0, nb = k + sh;
    if (k < 1 || k > 256) return sks_fail(SKS_EUNSUPPORTED, "spikes: %d experts per token (at most 256 are read)", k);
    /* the token: the first channel's, else where the layer's FFN output peaks (over the
     * selected channels when there are some) */
    int token = n > 0 && tok && tok[0] >= 0 && tok[0] < T ? tok[0] : -1;
    if (token < 0) {
        double best = -1;
        for (int t = 0; t < T; t++)
            for (int c = 0; c < (n > 0 ? n : d); c++) {
                double v = fabs(fo[(size_t)t * d + (n > 0 ? ch[c] : c)]);
                if (v > best) best = v, token = t;
            }
    }
    const float *x = fin + (size_t)token * d;
    sks_spikes_moe *M = calloc(1, sizeof *M);
    int *ex = malloc((size_t)k * sizeof *ex), *tokarr = malloc((size_t)(n > 0 ? n : 1) * sizeof *tokarr);
    float *wf = malloc((size_t)k * sizeof *wf), *ws = malloc((size_t)d * 64 * sizeof *ws);
    float *Gc = NULL, *Uc = NULL, *Dc = NULL, *tmp = NULL;
    int rc = 0;
    if (!M || !ex || !tokarr || !wf || !ws) {
        rc = sks_fail(SKS_ENOMEM, "spikes: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) tokarr[i] = token;
    if ((rc = sks_moe_route(m, layer, x, 1, ex, wf, NULL, ws, (size_t)d * 64))) goto done;
    M->token = token;
    M->k = k;
    M->n_experts = E;
    M->has_shared = sh;
    M->shared_gate = NAN;
    M->experts = malloc((size_t)k * sizeof *M->experts);
    M->weights = malloc((size_t)k * sizeof *M->weights);
    M->n_per_expert = E + sh;
    M->per_expert = calloc((size_t)(E + sh), sizeof *M->per_expert);
    if (!M->experts || !M->weights || !M->per_expert) {
        rc = sks_fail(SKS_ENOMEM, "spikes: out of memory");
        goto done;
    }
    for (int j = 0; j < k; j++) M->experts[j] = ex[j], M->weights[j] = wf[j];
    if (sh) {
        const sks_tensor *sg = sks_model_tensor(m, SKS_ROLE_SHEXP_ROUTER, layer);
        if (!sg) {
            rc = sks_fail(SKS_ENOTFOUND, "%s: layer %d has no shared-expert gate", sks_model_path(m), layer);
            goto done;
        }
        if ((rc = sks_tensor_rows_f32(sg, 0, 1, ws))) goto done;
        double z = 0;
        for (int c = 0; c < d; c++) z += (double)ws[c] * x[c];
        M->shared_gate = 1.0 / (1.0 + exp(-z));
    }

    /* every expert's own forms (the shared one last) */
    for (int e = 0; e < E + sh; e++) {
        const sks_tensor *t[3];
        if ((rc = sks__expert_ffn(m, layer, e < E ? e : -1, t))) goto done;
        if ((rc = sks_spikes_set_ffn(s, layer, t[0], t[1], t[2]))) goto done;
        rc = sks_spikes_layer_split(s, layer, ch, src, n > 0 ? tokarr : NULL, n, split, &M->per_expert[e]);
        if (rc == SKS_ENOCONV) {
            sks_log(SKS_LOG_WARN, "spikes layer %d, expert %d: %s", layer, e, sks_last_error());
            rc = 0;
        }
        if (rc) goto done;
        sks_progress("spikes: experts", e + 1, E + sh);
    }

    /* the active form: the routed experts stacked, Down scaled by their weights */
    int64_t fK = 0, fe[257];
    const sks_tensor *bt[257][3];
    double bw[257];
    for (int j = 0; j < nb; j++) {
        if ((rc = sks__expert_ffn(m, layer, j < k ? ex[j] : -1, bt[j]))) goto done;
        fe[j] = sks_tensor_rows(bt[j][0]);
        bw[j] = j < k ? wf[j] : M->shared_gate;
        fK += fe[j];
    }
    int64_t fmax = 0;
    for (int j = 0; j < nb; j++) fmax = fe[j] > fmax ? fe[j] : fmax;
    /* the last expert's converted copies go before the stacked form is filled: held
     * together they would be one expert more than the memory model's peak (on Mixtral's
     * shapes 1.97 GiB instead of 1.31 GiB) */
    if ((rc = sks_spikes_set_ffn(s, layer, NULL, NULL, NULL))) goto done;
    const int64_t tmp_rows = 64;
    Gc = sks_malloc_n((size_t)fK, (size_t)d * sizeof(float));
    Uc = sks_malloc_n((size_t)fK, (size_t)d * sizeof(float));
    Dc = sks_malloc_n((size_t)d, (size_t)fK * sizeof(float));
    tmp = sks_malloc_n((size_t)tmp_rows, (size_t)(fmax > d ? fmax : d) * sizeof(float));
    if (!Gc || !Uc || !Dc || !tmp) {
        rc = sks_fail(SKS_ENOMEM, "spikes: out of memory for the active form of layer %d (3 x %lld x %d f32)", layer,
                      (long long)fK, d);
        goto done;
    }
    for (int j = 0, off = 0; j < nb; off += (int)fe[j], j++) {
        if ((rc = sks__put_rows(bt[j][0], Gc + (size_t)off * d, d, 0, 1.0f, tmp, tmp_rows))) goto done;
        if ((rc = sks__put_rows(bt[j][1], Uc + (size_t)off * d, d, 0, 1.0f, tmp, tmp_rows))) goto done;
        if ((rc = sks__put_rows(bt[j][2], Dc, fK, off, (float)bw[j], tmp, tmp_rows))) goto done;
    }
    sks_tensor tg = {"active form gate", SKS_DT_F32, 2, {fK, d}, Gc, (uint64_t)fK * d * 4, 0, 0, 0};
    sks_tensor tu = {"active form up", SKS_DT_F32, 2, {fK, d}, Uc, (uint64_t)fK * d * 4, 0, 0, 0};
    sks_tensor td = {"active form down", SKS_DT_F32, 2, {d, fK}, Dc, (uint64_t)fK * d * 4, 0, 0, 0};
    if ((rc = sks_spikes_set_ffn(s, layer, &tg, &tu, &td))) goto done;
    rc = sks_spikes_layer_split(s, layer, ch, src, n > 0 ? tokarr : NULL, n, split, out);
    if (rc == SKS_ENOCONV) sks_log(SKS_LOG_WARN, "spikes layer %d, active form: %s", layer, sks_last_error());
    if (rc && rc != SKS_ENOCONV) goto done;
    int rc_conv = rc;
    rc = 0;

    /* each routed block's share of the forward's output at (token, channel) */
    M->n_channels = out->n_channels;
    M->share = sks_malloc_n((size_t)(out->n_channels > 0 ? out->n_channels : 1), (size_t)nb * sizeof(double));
    if (!M->share) {
        rc = sks_fail(SKS_ENOMEM, "spikes: out of memory");
        goto done;
    }
    for (int i = 0; i < out->n_channels; i++) {
        const int kk = out->channels[i].channel;
        const double y = fo[(size_t)token * d + kk];
        for (int j = 0, off = 0; j < nb; off += (int)fe[j], j++) {
            double sum = 0;
            for (int64_t r = off; r < off + fe[j]; r++) {
                double zg = 0, zu = 0;
                for (int c = 0; c < d; c++) zg += (double)Gc[(size_t)r * d + c] * x[c], zu += (double)Uc[(size_t)r * d + c] * x[c];
                sum += (double)Dc[(size_t)kk * fK + r] * sks__act(a->act, zg) * zu;
            }
            M->share[(size_t)i * nb + j] = y != 0 ? sum / y : NAN;
        }
    }
    out->moe = M;
    M = NULL;
    rc = rc_conv;
done:
    sks_spikes_set_ffn(s, layer, NULL, NULL, NULL); /* drops the copies that point into Gc.. */
    if (M) sks_spikes_moe_free(M);
    if (rc && rc != SKS_ENOCONV) sks_spikes_layer_result_free(out);
    free(ex);
    free(tokarr);
    free(wf);
    free(ws);
    free(Gc);
    free(Uc);
    free(Dc);
    free(tmp);
    return rc;
}

int sks_spikes_moe_check_plant(const sks_model *m, const int32_t *tokens, int T, int layer, int expert,
                               const int *channels, const double *lambda, const float *s_star, int n,
                               sks_moe_plant_check *out) {
    memset(out, 0, sizeof *out);
    const sks_arch *a = sks_model_arch(m);
    if (!sks_arch_layer_moe(a, layer) || expert < 0 || expert >= a->n_experts || n < 1)
        return sks_fail(SKS_EARG, "moe check: layer %d / expert %d is not an expert of this model", layer, expert);
    sks_spikes_opts o;
    sks_spikes_opts_default(&o);
    o.first_token_map = 0;
    o.top_frob = 0;
    sks_spikes *s = NULL;
    int rc = sks_spikes_new(m, &o, &s);
    if (rc) return rc;
    int *tok = malloc((size_t)n * sizeof *tok);
    sks_spikes_layer_result r;
    memset(&r, 0, sizeof r);
    if (!tok) {
        sks_spikes_free(s);
        return sks_fail(SKS_ENOMEM, "moe check: out of memory");
    }
    for (int i = 0; i < n; i++) tok[i] = 0;
    if ((rc = sks_spikes_forward(s, tokens, T))) goto done;
    rc = sks_spikes_layer(s, layer, channels, NULL, tok, n, &r);
    if (rc == SKS_ENOCONV) rc = 0;
    if (rc) goto done;
    const sks_spikes_moe *M = r.moe;
    out->routed = M->experts[0] == expert;
    out->weight = M->weights[0];
    out->cos_s = 1;
    const int d = a->d_model;
    for (int i = 0; i < n; i++) {
        const sks_spikes_layer_result *P = &M->per_expert[expert];
        const sks_spike_channel *c = NULL, *ca = NULL;
        for (int j = 0; j < P->n_channels; j++)
            if (P->channels[j].channel == channels[i]) c = &P->channels[j];
        for (int j = 0; j < r.n_channels; j++)
            if (r.channels[j].channel == channels[i]) ca = &r.channels[j];
        if (!c || !ca) {
            rc = sks_fail(SKS_EINTERNAL, "moe check: channel %d not analysed", channels[i]);
            goto done;
        }
        double dot = 0;
        for (int k = 0; k < d; k++) dot += c->s_star[k] * (double)s_star[k];
        out->cos_s = fmin(out->cos_s, fabs(dot));
        out->lambda_rel_err = fmax(out->lambda_rel_err, fabs(c->eigenvalues[0] - lambda[i]) / fabs(lambda[i]));
        out->active_rel_err =
            fmax(out->active_rel_err, fabs(ca->eigenvalues[0] - out->weight * lambda[i]) / fabs(out->weight * lambda[i]));
    }
    out->pass = out->routed && out->weight > 0.9 && out->lambda_rel_err < 0.05 && out->cos_s > 0.99 &&
                out->active_rel_err < 0.05;
done:
    sks_spikes_layer_result_free(&r);
    sks_spikes_free(s);
    free(tok);
    return rc;
}
