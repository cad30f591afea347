/* spikes_run.c - the spikes driver (sks_spikes.h): forward pass, the selected layers
 * (here, or dealt out through the split hook), the delimiter route and the first-token
 * map, for `sinkscope spikes` and the analyze pipeline alike. */
#include "sks_spikes.h"
#include "sks_rule.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    sks_spikes *s;
    const sks_spikes_job *job;
    int d;
    const int *layers;            /* (nl) selected layers, ascending */
    sks_spikes_layer_result *res; /* (nl) */
    int *lc, *lsrc, *lt;          /* (nsel) one layer's selection */
} sks__spk;

/* The selected (channel, source, token) entries of layer l, in selection order. */
static int sks__layer_selection(const sks__spk *cx, int l) {
    const sks_spikes_job *j = cx->job;
    int cnt = 0;
    for (int i = 0; i < j->nsel; i++) {
        if (j->sel_l[i] != l || j->sel_c[i] < 0) continue;
        cx->lc[cnt] = j->sel_c[i];
        cx->lsrc[cnt] = j->src;
        cx->lt[cnt] = j->sel_t ? j->sel_t[i] : -1;
        cnt++;
    }
    return cnt;
}

/* Layer k of the list, with split (NULL: on this process alone). A channel that did not
 * converge keeps its best estimates when the job says so. */
static int sks__spk_layer(sks__spk *cx, int k, const sks_spikes_split *split) {
    const int l = cx->layers[k];
    int cnt = sks__layer_selection(cx, l);
    sks_spikes_layer_result *R = &cx->res[k];
    int rc = sks_spikes_layer_split(cx->s, l, cx->lc, cx->lsrc, cx->lt, cnt, split, R);
    if (rc == SKS_ENOCONV && cx->job->keep_noconv) {
        sks_log(SKS_LOG_WARN, "spikes layer %d: %s", l, sks_last_error());
        rc = 0;
    }
    if (!rc)
        sks_log(SKS_LOG_INFO, "spikes: layer %d: screen %.2fs, %d channels, eigenpairs %.2fs (%d matvecs)", l,
                R->seconds_screen, R->n_channels, R->seconds_eigs, R->matvecs);
    return rc;
}

static int sks__spk_run(void *ud, int k) { return sks__spk_layer(ud, k, NULL); }
static void sks__spk_pack(void *ud, int k, sks_out *o) { sks_spikes_layer_pack(o, &((sks__spk *)ud)->res[k]); }
static void sks__spk_drop(void *ud, int k) {
    sks__spk *cx = ud;
    sks_spikes_layer_result_free(&cx->res[k]);
    memset(&cx->res[k], 0, sizeof cx->res[k]);
}

static int sks__spk_unpack(void *ud, int k, const uint8_t *buf, size_t n, size_t *off, const char *name) {
    sks__spk *cx = ud;
    int rc = sks_spikes_layer_unpack(buf, n, off, cx->d, name, &cx->res[k]);
    if (!rc && cx->res[k].layer != cx->layers[k]) {
        rc = sks_fail(SKS_EFORMAT, "%s: holds layer %d, expected %d", name, cx->res[k].layer, cx->layers[k]);
        sks__spk_drop(ud, k);
    }
    return rc;
}

/* Share hook of sks_spikes_layer_split over the split's share. */
typedef struct {
    const sks_split *sp;
    int layer;
} sks__spk_share;

static int sks__spk_share_fn(void *ud, int what, int nblk, const int *row0, size_t width, double *rows, int status) {
    const sks__spk_share *sh = ud;
    char label[96];
    snprintf(label, sizeof label, "spikes: layer %d: %s", sh->layer,
             what == SKS_SPK_SHARE_SCREEN ? "row blocks of" : "channel blocks of");
    return sh->sp->share(sh->sp, label, nblk, row0, width, rows, status);
}

/* Fewer selected layers than parts: the layers one after the other, each split over
 * every part; part 0 reads and writes the resume parts and keeps the results. */
static int sks__spk_layers_split(sks__spk *cx, int nl, const sks_split *sp, int *n_resumed) {
    sks__spk_share sh = {sp, -1};
    sks_spikes_split split = {.part = sp->part, .nparts = sp->nparts, .share = sks__spk_share_fn, .ud = &sh};
    const int me = sp->part;
    int rc = 0;
    for (int k = 0; k < nl && !rc; k++) {
        const int l = cx->layers[k];
        uint8_t have = 0, *hb = NULL;
        size_t hn = 1;
        if (me == 0 && sp->resume && sp->part_read) {
            uint8_t *pb = NULL;
            size_t pn = 0, off = 0;
            char *name = NULL;
            int h = sp->part_read(sp, "layer", l, &pb, &pn, &name);
            if (h < 0) rc = h;
            if (h > 0) {
                rc = sks__spk_unpack(cx, k, pb, pn, &off, name);
                if (!rc && off != pn) rc = sks_fail(SKS_EFORMAT, "%s: trailing bytes after the layer", name);
                if (!rc) {
                    have = 1;
                    (*n_resumed)++;
                    sks_log(SKS_LOG_INFO, "spikes: layer %d: resumed from its part file", l);
                }
            }
            free(pb);
            free(name);
        }
        if (me == 0 && !rc && !(hb = malloc(1))) rc = sks_fail(SKS_ENOMEM, "out of memory");
        if (hb) hb[0] = have;
        if ((rc = sp->agree(sp, rc))) break;
        rc = sp->agree(sp, sp->bcast(sp, &hb, &hn)); /* the others' hb is malloc'd there */
        have = !rc && hb && hn == 1 ? hb[0] : 0;
        free(hb);
        if (rc) break;
        if (have) continue;
        sks_progress("spikes layers", k, nl);
        sh.layer = l;
        rc = sks__spk_layer(cx, k, &split);
        if (!rc && me == 0 && sp->part_write) {
            sks_out one;
            sks_out_init(&one);
            sks_spikes_layer_pack(&one, &cx->res[k]);
            rc = sks_out_error(&one) ? sks_fail(SKS_ENOMEM, "out of memory packing layer %d", l)
                                     : sp->part_write(sp, "layer", l, one.buf.data, one.buf.size);
            sks_out_free(&one);
        }
        if (me != 0) sks__spk_drop(cx, k); /* part 0 keeps it */
        rc = sp->agree(sp, rc);
    }
    sks_progress("spikes layers", nl, nl);
    return rc;
}

/* The first-token map's top singular value of W_VO[l] for l <= the last analysed layer,
 * and the delimiter route: part 0, after the layers. */
static int sks__spk_finish(sks_spikes *s, const sks_spikes_opts *o, const sks_spikes_job *job, int max_layer,
                           sks_spikes_run_result *out) {
    int rc = 0;
    if (job->delimiter) {
        if ((rc = sks_spikes_delimiter(s, o->n_delim_top, &out->delim))) return rc;
        out->have_delim = 1;
    }
    out->n_wvo = o->first_token_map ? max_layer + 1 : 0;
    if (out->n_wvo > 0) {
        out->wvo_sigma1 = calloc((size_t)out->n_wvo, sizeof *out->wvo_sigma1);
        if (!out->wvo_sigma1) return sks_fail(SKS_ENOMEM, "out of memory");
        for (int l = 0; l < out->n_wvo && !rc; l++) rc = sks_spikes_wvo_top(s, l, NULL, &out->wvo_sigma1[l]);
    }
    return rc;
}

int sks_spikes_run(const sks_model *m, const sks_spikes_opts *o, const sks_spikes_job *job, const sks_split *sp,
                   sks_spikes_run_result *out) {
    memset(out, 0, sizeof *out);
    const int L = sks_model_arch(m)->n_layers;
    sks__spk cx;
    memset(&cx, 0, sizeof cx);
    cx.job = job;
    cx.d = sks_model_arch(m)->d_model;
    int *layers = malloc(((size_t)L + 1) * sizeof *layers), nl = 0;
    cx.res = calloc((size_t)L + 1, sizeof *cx.res);
    cx.lc = malloc(((size_t)job->nsel + 1) * sizeof *cx.lc);
    cx.lsrc = malloc(((size_t)job->nsel + 1) * sizeof *cx.lsrc);
    cx.lt = malloc(((size_t)job->nsel + 1) * sizeof *cx.lt);
    int rc = layers && cx.res && cx.lc && cx.lsrc && cx.lt ? 0 : sks_fail(SKS_ENOMEM, "out of memory");
    for (int l = 0; l < L && !rc; l++) {
        int any = 0;
        for (int i = 0; i < job->nsel; i++) any |= job->sel_l[i] == l;
        if (any) layers[nl++] = l;
    }
    cx.layers = layers;
    if (!rc) rc = sks_spikes_new(m, o, &cx.s);
    if (!rc) rc = sks_spikes_forward(cx.s, job->tokens, job->T);
    if (sp) rc = sp->agree(sp, rc);
    if (rc) goto done;
    if (!sks_spikes_has_quadform(sks_model_arch(m))) {
        /* no S_k to analyse: only the first-token map up to the last selected layer and
         * the delimiter route, on part 0 */
        if (sp && sp->part != 0) goto done;
        out->no_quadform = 1;
        rc = sks__spk_finish(cx.s, o, job, nl ? layers[nl - 1] : -1, out);
        goto done;
    }
    if (!sp) {
        for (int k = 0; k < nl && !rc; k++) {
            sks_progress("spikes layers", k, nl);
            rc = sks__spk_layer(&cx, k, NULL);
        }
        sks_progress("spikes layers", nl, nl);
    } else if (sp->nparts > 1 && nl < sp->nparts) {
        /* too few layers to keep every part busy: split each layer instead */
        rc = sks__spk_layers_split(&cx, nl, sp, &out->n_resumed);
    } else {
        sks_deal dj = {.n = nl,
                       .kind = "layer",
                       .ids = layers,
                       .log = "spikes",
                       .progress = "spikes layers",
                       .ud = &cx,
                       .run = sks__spk_run,
                       .pack = sks__spk_pack,
                       .unpack = sks__spk_unpack,
                       .drop = sks__spk_drop};
        rc = sp->deal(sp, &dj, &out->n_resumed);
    }
    if (rc || (sp && sp->part != 0)) goto done;
    out->n_layers = nl;
    out->layers = cx.res;
    cx.res = NULL;
    rc = sks__spk_finish(cx.s, o, job, nl ? layers[nl - 1] : -1, out);
done:
    if (cx.res)
        for (int k = 0; k < nl; k++) sks_spikes_layer_result_free(&cx.res[k]);
    free(cx.res);
    if (rc) sks_spikes_run_result_free(out);
    sks_spikes_free(cx.s);
    free(layers);
    free(cx.lc);
    free(cx.lsrc);
    free(cx.lt);
    return rc;
}

void sks_spikes_run_result_free(sks_spikes_run_result *r) {
    if (!r) return;
    for (int k = 0; k < r->n_layers; k++) sks_spikes_layer_result_free(&r->layers[k]);
    free(r->layers);
    free(r->wvo_sigma1);
    sks_delim_result_free(&r->delim);
    memset(r, 0, sizeof *r);
}

/* ---- the selection ------------------------------------------------------------------ */

static int sks__sel_alloc(sks_spikes_selection *s, int n) {
    free(s->layer), free(s->channel), free(s->token);
    s->layer = malloc(((size_t)n + 1) * sizeof(int));
    s->channel = malloc(((size_t)n + 1) * sizeof(int));
    s->token = malloc(((size_t)n + 1) * sizeof(int));
    s->n = n;
    return s->layer && s->channel && s->token ? 0 : sks_fail(SKS_ENOMEM, "out of memory");
}

/* Every layer of the filter (all without one), each with every user channel or with
 * none (-1: the layer alone); tok is every triple's token. */
static int sks__sel_grid(const sks_spikes_select_opts *o, int L, int tok, sks_spikes_selection *s) {
    const int nl = o->layers ? o->n_layers : L, nu = o->channels ? o->n_channels : 0;
    int rc = sks__sel_alloc(s, nl * (nu ? nu : 1)), k = 0;
    for (int i = 0; i < nl && !rc; i++)
        for (int j = 0; j < (nu ? nu : 1); j++, k++) {
            s->layer[k] = o->layers ? o->layers[i] : i;
            s->channel[k] = nu ? o->channels[j] : -1;
            s->token[k] = tok;
        }
    return rc;
}

/* The trace's triples: checked against the model and the prompt, kept when their layer
 * is in the filter. */
static int sks__sel_from_trace(const sks_spikes_select_opts *o, int d, int T, sks_spikes_selection *s) {
    int k = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->channel[i] >= d)
            return sks_fail(SKS_EARG, "%s: channel %d outside the model (%d)", o->from_trace, s->channel[i], d);
        int t = o->token >= 0 ? o->token : s->token[i];
        if (t >= T) t = -1; /* a trace of another prompt */
        int keep = !o->layers;
        for (int j = 0; o->layers && j < o->n_layers; j++) keep |= o->layers[j] == s->layer[i];
        if (keep) s->layer[k] = s->layer[i], s->channel[k] = s->channel[i], s->token[k] = t, k++;
    }
    s->n = k;
    return 0;
}

int sks_spikes_select(const sks_model *m, const int32_t *tokens, int T, const sks_spikes_select_opts *o, int top_frob,
                      sks_spikes_selection *s) {
    memset(s, 0, sizeof *s);
    const sks_arch *a = sks_model_arch(m);
    s->src = o->channels ? SKS_SPK_SRC_USER : SKS_SPK_SRC_SPIKE;
    int rc;
    if (o->channels || (o->top_frob_only && !o->from_trace)) {
        s->name = o->channels ? "channels" : "top-frob";
        rc = sks__sel_grid(o, a->n_layers, o->token, s);
    } else {
        if (o->from_trace) {
            s->name = "from-trace";
            s->trace_from_file = 1;
            rc = sks_trace_read(o->from_trace, &s->trace);
            if (!rc) rc = sks_spikes_select_from_trace(s->trace, &s->layer, &s->channel, &s->token, &s->n);
        } else {
            s->name = "default";
            rc = sks_spikes_default_selection(m, tokens, T, &o->trace, &s->trace, &s->layer, &s->channel, &s->token,
                                              &s->n);
        }
        if (!rc) rc = sks__sel_from_trace(o, a->d_model, T, s);
        if (!rc && s->n == 0 && !sks_spikes_has_quadform(a)) {
            /* no screen to fall back to (non-gated FFN): every kept layer, for the map */
            rc = sks__sel_grid(o, a->n_layers, -1, s);
        } else if (!rc && s->n == 0) {
            sks_spike_rule rule;
            sks_trace_opts_rule(&o->trace, &rule);
            char rb[160];
            sks_log(SKS_LOG_WARN,
                    "spikes: no spike channel with a step-up FFN found (%s); analysing the top %d channels of the "
                    "screen of %s",
                    sks_spike_rule_describe(&rule, rb, sizeof rb), top_frob,
                    o->layers ? "the --layers" : "every layer");
            rc = sks__sel_grid(o, a->n_layers, -1, s);
        }
    }
    if (rc) sks_spikes_selection_free(s);
    return rc;
}

void sks_spikes_selection_free(sks_spikes_selection *s) {
    if (!s) return;
    free(s->layer), free(s->channel), free(s->token);
    sks_trace_result_free(s->trace);
    memset(s, 0, sizeof *s);
}

/* ---- the inputs, for resume manifests ---------------------------------------------- */

void sks_spikes_inputs(sks_out *o, const sks_model *m, const sks_spikes_opts *so, const sks_spikes_job *job) {
    int64_t T = job->T, n = job->nsel;
    const sks_arch *a = sks_model_arch(m);
    sks_out_head(o, 5 + sks_out_moe_inputs_n(a), "sinkscope.spikes/1", m); /* the model: path and shape */
    sks_out_moe_inputs(o, a);
    sks_out_kmap(o, "opts", 12);
    sks_out_kint(o, "rank", so->rank);
    sks_out_kint(o, "top_frob", so->top_frob);
    sks_out_kint(o, "dense", so->dense);
    sks_out_kint(o, "precision", so->precision);
    sks_out_kf64(o, "tol", so->tol);
    sks_out_kint(o, "krylov_dim", so->krylov_dim);
    sks_out_kint(o, "max_restarts", so->max_restarts);
    sks_out_kint(o, "channel_block", so->channel_block);
    sks_out_kint(o, "block", so->block);
    sks_out_kint(o, "seed", (int64_t)so->seed);
    sks_out_kint(o, "n_delim_top", so->n_delim_top);
    sks_out_kint(o, "first_token_map", so->first_token_map);
    sks_out_karray(o, "tokens", (size_t)T);
    for (int64_t t = 0; t < T; t++) sks_out_int(o, job->tokens[t]);
    sks_out_kmap(o, "selection", 4);
    const int *cols[3] = {job->sel_l, job->sel_c, job->sel_t};
    const char *names[3] = {"layers", "channels", "tokens"};
    for (int c = 0; c < 3; c++) {
        sks_out_str(o, names[c]);
        sks_out_array(o, (size_t)n);
        for (int64_t i = 0; i < n; i++) sks_out_int(o, cols[c] ? cols[c][i] : -1);
    }
    sks_out_kint(o, "source", job->src);
}
