/* spikes_pack.c - one layer result as msgpack and back (sks_spikes.h): the resume parts
 * and the MPI gather carry layers in this form. f64 arrays travel as raw little-endian
 * bytes, so a decoded layer is bitwise the computed one.
 *
 * A layer is an array of 15; element 12 is nil, or for a mixture-of-experts layer the
 * sks_spikes_moe record, an array of 10:
 *   token, k, n_experts, has_shared, experts (bin, k int), weights (bin, k f64),
 *   shared_gate (bin, 1 f64), n_channels, share (bin, n_channels (k + has_shared) f64),
 *   per_expert (array of n_experts + has_shared layers, each with element 12 nil). */
#include "sks_spikes.h"
#include "sks_out.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define SKS__SPK_MAGIC "sinkscope.spikes-layer/1"

static void sks__moe_pack(sks_out *o, const sks_spikes_moe *M) {
    const int nb = M->k + M->has_shared;
    sks_out_array(o, 10);
    sks_out_int(o, M->token);
    sks_out_int(o, M->k);
    sks_out_int(o, M->n_experts);
    sks_out_int(o, M->has_shared);
    sks_out_bin(o, M->experts, (size_t)M->k * sizeof(int));
    sks_out_bin(o, M->weights, (size_t)M->k * sizeof(double));
    sks_out_bin(o, &M->shared_gate, sizeof(double));
    sks_out_int(o, M->n_channels);
    sks_out_bin(o, M->share, (size_t)M->n_channels * (size_t)nb * sizeof(double));
    sks_out_array(o, (size_t)M->n_per_expert);
    for (int e = 0; e < M->n_per_expert; e++) sks_spikes_layer_pack(o, &M->per_expert[e]);
}

void sks_spikes_layer_pack(sks_out *o, const sks_spikes_layer_result *r) {
    sks_out_array(o, 15);
    sks_out_str(o, SKS__SPK_MAGIC);
    sks_out_int(o, r->layer);
    sks_out_int(o, r->d);
    sks_out_int(o, r->precision);
    sks_out_int(o, r->matvecs);
    sks_out_int(o, r->restarts);
    double tm[4] = {r->seconds_screen, r->seconds_eigs, r->flops_screen, r->flops_eigs};
    sks_out_bin(o, tm, sizeof tm);
    sks_out_bin(o, r->frobenius, (size_t)r->d * sizeof(double));
    sks_out_bin(o, r->trace, (size_t)r->d * sizeof(double));
    sks_out_bin(o, r->top_frob, (size_t)r->n_top * sizeof(int));
    sks_out_int(o, r->n_top);
    sks_out_int(o, r->n_channels);
    if (r->moe) sks__moe_pack(o, r->moe);
    else sks_out_nil(o);
    sks_out_nil(o);
    sks_out_array(o, (size_t)r->n_channels);
    for (int i = 0; i < r->n_channels; i++) {
        const sks_spike_channel *c = &r->channels[i];
        sks_out_array(o, 12);
        sks_out_int(o, c->channel);
        sks_out_int(o, c->source);
        sks_out_int(o, c->rank);
        sks_out_int(o, c->converged);
        sks_out_int(o, c->sign_from_input);
        sks_out_int(o, c->token);
        sks_out_int(o, c->n_wvo);
        double sc[15] = {c->frobenius, c->trace,      c->dominance, c->energy_fraction, c->x_norm,
                         c->cos_x_s,   c->quad_pred,  c->rank1_pred, c->true_out,       c->true_out_fwd,
                         c->silu_regime, c->cos_x0_s, c->post_gain, c->post_out,       0};
        sks_out_bin(o, sc, sizeof sc);
        sks_out_bin(o, c->eigenvalues, (size_t)c->rank * sizeof(double));
        sks_out_bin(o, c->s_star, (size_t)r->d * sizeof(double));
        sks_out_bin(o, c->residuals, (size_t)c->rank * sizeof(double));
        sks_out_bin(o, c->cos_wvo, (size_t)c->n_wvo * sizeof(double));
    }
}




static int sks__layer_obj(const msgpack_object *a, int d, const char *name, int outer, sks_spikes_layer_result *r);

/* The MoE record of layer r (element 12), checked against the layer. */
static int sks__moe_obj(const msgpack_object *a, int d, const char *name, const sks_spikes_layer_result *r,
                        sks_spikes_moe **out) {
    *out = NULL;
    const msgpack_object *e = a->type == MSGPACK_OBJECT_ARRAY && a->via.array.size == 10 ? a->via.array.ptr : NULL;
    sks_spikes_moe *M = calloc(1, sizeof *M);
    int rc = 0, bad, nb = 0;
#define SKS__BAD(field)                                                                                        \
    do {                                                                                                       \
        rc = sks_fail(SKS_EFORMAT, "%s: moe.%s: missing or bad", name, field);                                 \
        goto out;                                                                                              \
    } while (0)
    if (!M) return sks_fail(SKS_ENOMEM, "%s: out of memory", name);
    if (!e) SKS__BAD("record (an array of 10)");
    if (sks_mp_int(&e[0], 0, INT32_MAX, &M->token)) SKS__BAD("token");
    if (sks_mp_int(&e[1], 1, 256, &M->k)) SKS__BAD("k");
    if (sks_mp_int(&e[2], M->k, 1 << 16, &M->n_experts)) SKS__BAD("n_experts");
    if (sks_mp_int(&e[3], 0, 1, &M->has_shared)) SKS__BAD("has_shared");
    if (sks_mp_int(&e[7], 0, r->n_channels, &M->n_channels)) SKS__BAD("n_channels");
    nb = M->k + M->has_shared;
    if ((bad = sks_mp_bin(&e[4], (size_t)M->k * sizeof(int), (void **)&M->experts)) ||
        (bad = sks_mp_bin(&e[5], (size_t)M->k * sizeof(double), (void **)&M->weights)) ||
        (bad = sks_mp_bin(&e[8], (size_t)M->n_channels * (size_t)nb * sizeof(double), (void **)&M->share))) {
        if (bad == -2) goto oom;
        SKS__BAD("experts, weights or share");
    }
    if (sks_mp_bin_into(&e[6], &M->shared_gate, sizeof(double))) SKS__BAD("shared_gate");
    for (int j = 0; j < M->k; j++)
        if (M->experts[j] < 0 || M->experts[j] >= M->n_experts) SKS__BAD("experts (outside the layer's)");
    if (e[9].type != MSGPACK_OBJECT_ARRAY || e[9].via.array.size != (uint32_t)(M->n_experts + M->has_shared))
        SKS__BAD("per_expert (n_experts + has_shared layers)");
    if (!(M->per_expert = calloc((size_t)M->n_experts + (size_t)M->has_shared, sizeof *M->per_expert))) goto oom;
    for (int i = 0; i < M->n_experts + M->has_shared; i++) {
        M->n_per_expert = i + 1;
        if ((rc = sks__layer_obj(&e[9].via.array.ptr[i], d, name, 0, &M->per_expert[i]))) goto out;
        if (M->per_expert[i].layer != r->layer) SKS__BAD("per_expert (another layer)");
    }
#undef SKS__BAD
    *out = M;
    return 0;
oom:
    rc = sks_fail(SKS_ENOMEM, "%s: out of memory", name);
out:
    sks_spikes_moe_free(M);
    return rc;
}

int sks_spikes_layer_unpack(const uint8_t *buf, size_t n, size_t *off, int d, const char *name,
                                 sks_spikes_layer_result *r) {
    memset(r, 0, sizeof *r);
    if (d <= 0 || d > (1 << 24)) return sks_fail(SKS_EARG, "%s: model width %d", name, d);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (sks_mp_unpack(&u, buf, n, off)) {
        msgpack_unpacked_destroy(&u);
        return sks_fail(SKS_EFORMAT, "%s: not a msgpack layer part (truncated or corrupt)", name);
    }
    int rc = sks__layer_obj(&u.data, d, name, 1, r);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* One layer from its array; outer: element 12 may hold an MoE record (a per-expert
 * layer inside one may not). */
static int sks__layer_obj(const msgpack_object *a, int d, const char *name, int outer, sks_spikes_layer_result *r) {
    memset(r, 0, sizeof *r);
    int rc = 0;
    const msgpack_object *e = a->type == MSGPACK_OBJECT_ARRAY ? a->via.array.ptr : NULL;
#define SKS__BAD(field)                                                                                        \
    do {                                                                                                       \
        rc = sks_fail(SKS_EFORMAT, "%s: %s: missing or bad", name, field);                                     \
        goto out;                                                                                              \
    } while (0)
    if (!e || a->via.array.size != 15) SKS__BAD("root (an array of 15)");
    if (e[0].type != MSGPACK_OBJECT_STR || e[0].via.str.size != sizeof SKS__SPK_MAGIC - 1 ||
        memcmp(e[0].via.str.ptr, SKS__SPK_MAGIC, sizeof SKS__SPK_MAGIC - 1))
        SKS__BAD("magic");
    if (sks_mp_int(&e[1], 0, INT32_MAX, &r->layer)) SKS__BAD("layer");
    if (sks_mp_int(&e[2], d, d, &r->d)) SKS__BAD("d (another model?)");
    if (sks_mp_int(&e[3], 0, 16, &r->precision)) SKS__BAD("precision");
    if (sks_mp_int(&e[4], 0, INT32_MAX, &r->matvecs)) SKS__BAD("matvecs");
    if (sks_mp_int(&e[5], 0, INT32_MAX, &r->restarts)) SKS__BAD("restarts");
    double tm[4];
    if (sks_mp_bin_into(&e[6], tm, sizeof tm)) SKS__BAD("timings");
    r->seconds_screen = tm[0], r->seconds_eigs = tm[1], r->flops_screen = tm[2], r->flops_eigs = tm[3];
    if (sks_mp_int(&e[10], 0, d, &r->n_top)) SKS__BAD("n_top");
    int nch; /* r->n_channels counts only the channels allocated, for the cleanup */
    if (sks_mp_int(&e[11], 0, INT32_MAX, &nch)) SKS__BAD("n_channels");
    int bad;
    if ((bad = sks_mp_bin(&e[7], (size_t)d * sizeof(double), (void **)&r->frobenius))) {
        if (bad == -2) goto oom;
        SKS__BAD("frobenius");
    }
    if ((bad = sks_mp_bin(&e[8], (size_t)d * sizeof(double), (void **)&r->trace))) {
        if (bad == -2) goto oom;
        SKS__BAD("trace");
    }
    if ((bad = sks_mp_bin(&e[9], (size_t)r->n_top * sizeof(int), (void **)&r->top_frob))) {
        if (bad == -2) goto oom;
        SKS__BAD("top_frob");
    }
    for (int i = 0; i < r->n_top; i++)
        if (r->top_frob[i] < 0 || r->top_frob[i] >= d) SKS__BAD("top_frob (channel outside the model)");
    if (e[14].type != MSGPACK_OBJECT_ARRAY || e[14].via.array.size != (uint32_t)nch) SKS__BAD("channels");
    r->channels = calloc(nch ? (size_t)nch : 1, sizeof *r->channels);
    if (!r->channels) goto oom;
    for (int i = 0; i < nch; i++) {
        const msgpack_object *ce = &e[14].via.array.ptr[i];
        sks_spike_channel *c = &r->channels[i];
        r->n_channels = i + 1;
        if (ce->type != MSGPACK_OBJECT_ARRAY || ce->via.array.size != 12) SKS__BAD("channels[i]");
        const msgpack_object *f = ce->via.array.ptr;
        if (sks_mp_int(&f[0], 0, d - 1, &c->channel) || sks_mp_int(&f[1], 0, 7, &c->source) ||
            sks_mp_int(&f[2], 1, d, &c->rank) || sks_mp_int(&f[3], 0, 1, &c->converged) ||
            sks_mp_int(&f[4], 0, 1, &c->sign_from_input) || sks_mp_int(&f[5], -1, INT32_MAX, &c->token) ||
            sks_mp_int(&f[6], 0, r->layer + 1, &c->n_wvo))
            SKS__BAD("channels[i] integers");
        double sc[15];
        if (sks_mp_bin_into(&f[7], sc, sizeof sc)) SKS__BAD("channels[i] scalars");
        c->frobenius = sc[0], c->trace = sc[1], c->dominance = sc[2], c->energy_fraction = sc[3];
        c->x_norm = sc[4], c->cos_x_s = sc[5], c->quad_pred = sc[6], c->rank1_pred = sc[7];
        c->true_out = sc[8], c->true_out_fwd = sc[9], c->silu_regime = sc[10], c->cos_x0_s = sc[11];
        c->post_gain = sc[12], c->post_out = sc[13];
        if ((bad = sks_mp_bin(&f[8], (size_t)c->rank * sizeof(double), (void **)&c->eigenvalues)) ||
            (bad = sks_mp_bin(&f[9], (size_t)d * sizeof(double), (void **)&c->s_star)) ||
            (bad = sks_mp_bin(&f[10], (size_t)c->rank * sizeof(double), (void **)&c->residuals)) ||
            (bad = sks_mp_bin(&f[11], (size_t)c->n_wvo * sizeof(double), (void **)&c->cos_wvo))) {
            if (bad == -2) goto oom;
            SKS__BAD("channels[i] arrays");
        }
    }
    if (e[12].type != MSGPACK_OBJECT_NIL) {
        if (!outer) SKS__BAD("moe (inside a per-expert layer)");
        if ((rc = sks__moe_obj(&e[12], d, name, r, &r->moe))) goto out;
    }
#undef SKS__BAD
    goto out;
oom:
    rc = sks_fail(SKS_ENOMEM, "%s: out of memory", name);
out:
    if (rc) sks_spikes_layer_result_free(r);
    return rc;
}

