/* spikes_pack.c - one layer result as msgpack and back (sks_spikes.h): the resume parts
 * and the MPI gather carry layers in this form. f64 arrays travel as raw little-endian
 * bytes, so a decoded layer is bitwise the computed one. */
#include "sks_spikes.h"
#include "sks_out.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define SKS__SPK_MAGIC "sinkscope.spikes-layer/1"


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
    sks_out_nil(o);
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




int sks_spikes_layer_unpack(const uint8_t *buf, size_t n, size_t *off, int d, const char *name,
                                 sks_spikes_layer_result *r) {
    memset(r, 0, sizeof *r);
    if (d <= 0 || d > (1 << 24)) return sks_fail(SKS_EARG, "%s: model width %d", name, d);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = 0;
    if (*off >= n || sks_msgpack_check(buf, n, *off, NULL) ||
        msgpack_unpack_next(&u, (const char *)buf, n, off) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacked_destroy(&u);
        return sks_fail(SKS_EFORMAT, "%s: not a msgpack layer part (truncated or corrupt)", name);
    }
    const msgpack_object *a = &u.data;
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
#undef SKS__BAD
    goto out;
oom:
    rc = sks_fail(SKS_ENOMEM, "%s: out of memory", name);
out:
    msgpack_unpacked_destroy(&u);
    if (rc) sks_spikes_layer_result_free(r);
    return rc;
}

