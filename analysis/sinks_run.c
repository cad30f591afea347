/* sinks_run.c - the sinks driver (sks_sinks.h): every layer analysed once, here or on
 * the parts of a split, merged and classified on part 0; the fallback to position 0 as
 * the sink token when no prompt has a spike token. */
#include "sks_sinks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sks__agree(const sks_split *sp, int rc) { return sp ? sp->agree(sp, rc) : rc; }

/* One part's run on its layers (o->layers; all of them without a split), then the
 * fallback when asked for. The fallback decision is part 0's, broadcast, so that the
 * parts cannot split between the two settings. */
static int sks__sinks_part(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                           sks_sinks_opts *o, int auto_first, const sks_split *sp, int *fell_back,
                           sks_sinks_result **r) {
    int rc = sks__agree(sp, sks_sinks_run(m, n_prompts, prompts, lens, o, r));
    if (rc || !auto_first) return rc;
    uint8_t flag = *r && (*r)->n_sink_rows == 0, *fb = &flag;
    size_t one = 1;
    if (sp && sp->nparts > 1) {
        if (sp->part != 0) fb = NULL; /* bcast allocates it */
        if ((rc = sp->agree(sp, sp->bcast(sp, &fb, &one)))) return rc;
        flag = *fb;
        if (fb != &flag) free(fb);
    }
    if (!flag) return 0;
    sks_sinks_result_free(*r);
    *r = NULL;
    o->first_as_sink = 1;
    *fell_back = 1;
    return sks__agree(sp, sks_sinks_run(m, n_prompts, prompts, lens, o, r));
}

/* Under SKS_MPI_VERBOSE: one line per part naming its layers, written in one call so
 * that the parts' lines do not interleave (test/cli-mpi.sh reads them). */
static void sks__sinks_log_layers(const sks_split *sp, const unsigned char *mine, int L) {
    int nmine = 0;
    for (int l = 0; l < L; l++) nmine += mine[l];
    size_t cap = 64 + 12 * (size_t)nmine, k = 0;
    char *line = malloc(cap);
    if (!line) return;
    k += (size_t)snprintf(line, cap, "sinks: rank %d of %d: %d of %d layers:", sp->part, sp->nparts, nmine, L);
    for (int l = 0; l < L && k < cap; l++)
        if (mine[l]) k += (size_t)snprintf(line + k, cap - k, " %d", l);
    fprintf(stderr, "%s\n", line);
    free(line);
}

int sks_sinks_analyze(const sks_model *m, int n_prompts, const int32_t *const *prompts, const int *lens,
                      sks_sinks_opts *o, int auto_first, const sks_split *sp, int *fell_back,
                      sks_sinks_result **out) {
    *out = NULL;
    *fell_back = 0;
    if (o->layers) return sks_fail(SKS_EARG, "sks_sinks_analyze: the layer split is this function's");
    if (!sp || sp->nparts == 1) return sks__sinks_part(m, n_prompts, prompts, lens, o, auto_first, sp, fell_back, out);
    const int L = sks_model_arch(m)->n_layers, me = sp->part;
    unsigned char *mine = calloc(L > 0 ? (size_t)L : 1, 1);
    sks_sinks_result *r = NULL;
    uint8_t *pk = NULL, *all = NULL;
    size_t npk = 0, *plen = NULL;
    int rc = mine ? 0 : sks_fail(SKS_ENOMEM, "sinks: layer mask");
    if ((rc = sp->agree(sp, rc))) goto done;
    for (int l = 0; l < L; l++) mine[l] = l % sp->nparts == me; /* layer l on part l % nparts */
    if (sp->verbose) sks__sinks_log_layers(sp, mine, L);
    o->layers = mine;
    rc = sks__sinks_part(m, n_prompts, prompts, lens, o, auto_first, sp, fell_back, &r);
    o->layers = NULL;
    if (rc) goto done;
    if ((rc = sp->agree(sp, sks_sinks_pack_layers(r, &pk, &npk)))) goto done;
    if ((rc = sp->agree(sp, sp->gather(sp, pk, npk, &all, &plen)))) goto done;
    if (me == 0) {
        /* part 0's own layers are in r; the others' follow in part order */
        size_t off = plen[0];
        for (int q = 1; q < sp->nparts && !rc; q++) {
            if ((rc = sks_sinks_unpack_layers(r, all + off, plen[q]))) {
                char msg[512];
                snprintf(msg, sizeof msg, "%s", sks_last_error());
                sks_fail(rc, "sinks gather: rank %d: %s", q, msg);
            }
            off += plen[q];
        }
        if (!rc) rc = sks_sinks_classify(r, o);
        if (!rc) {
            *out = r;
            r = NULL;
        }
    }
done:
    o->layers = NULL;
    sks_sinks_result_free(r);
    free(mine);
    free(pk);
    free(all);
    free(plen);
    return rc;
}
