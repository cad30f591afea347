/* trace_read.c - read back the lifecycles and spike channels of a sinkscope.trace/1 file
 * (sks_trace.h): what `spikes --from-trace` selects from. The file is untrusted. */
#include "sks_trace.h"
#include "sks_out.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* lifecycles {token, channel, peak_abs, step_up[{block}]} and spike_channels */
static int sks__trace_fill(const msgpack_object *root, const char *path, sks_trace_result *tr) {
    const msgpack_object *sc = sks_mp_get(root, "schema");
    if (!sc || sc->type != MSGPACK_OBJECT_STR || sc->via.str.size < 16 ||
        memcmp(sc->via.str.ptr, "sinkscope.trace/", 16))
        return sks_fail(SKS_EFORMAT, "%s: schema: not a sinkscope.trace file", path);
    const msgpack_object *lcs = sks_mp_get(root, "lifecycles");
    if (!lcs || lcs->type != MSGPACK_OBJECT_ARRAY) return sks_fail(SKS_EFORMAT, "%s: lifecycles: missing", path);
    uint32_t nl = lcs->via.array.size;
    tr->lifecycles = calloc(nl ? nl : 1, sizeof *tr->lifecycles);
    if (!tr->lifecycles) return sks_fail(SKS_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < nl; i++) {
        const msgpack_object *lc = &lcs->via.array.ptr[i];
        sks_lifecycle *L = &tr->lifecycles[tr->n_lifecycles++];
        const msgpack_object *ups = sks_mp_get(lc, "step_up"), *pk = sks_mp_get(lc, "peak_abs");
        if (sks_mp_int(sks_mp_get(lc, "token"), 0, INT32_MAX, &L->token) ||
            sks_mp_int(sks_mp_get(lc, "channel"), 0, INT32_MAX, &L->channel) || !ups ||
            ups->type != MSGPACK_OBJECT_ARRAY)
            return sks_fail(SKS_EFORMAT, "%s: lifecycles[%u]: token/channel/step_up missing or bad", path, i);
        L->peak_abs = pk && pk->type == MSGPACK_OBJECT_FLOAT64 ? pk->via.f64 : 0;
        L->up_blocks = calloc(ups->via.array.size ? ups->via.array.size : 1, sizeof(int));
        if (!L->up_blocks) return sks_fail(SKS_ENOMEM, "out of memory");
        for (uint32_t j = 0; j < ups->via.array.size; j++)
            if (sks_mp_int(sks_mp_get(&ups->via.array.ptr[j], "block"), 0, INT32_MAX, &L->up_blocks[L->n_up++]))
                return sks_fail(SKS_EFORMAT, "%s: lifecycles[%u].step_up[%u].block: bad", path, i, j);
    }
    const msgpack_object *sch = sks_mp_get(root, "spike_channels");
    if (sch && sch->type == MSGPACK_OBJECT_ARRAY) {
        tr->spike_channels = calloc(sch->via.array.size + 1, sizeof(int));
        if (!tr->spike_channels) return sks_fail(SKS_ENOMEM, "out of memory");
        for (uint32_t i = 0; i < sch->via.array.size; i++) /* a bad entry is skipped */
            if (!sks_mp_int(&sch->via.array.ptr[i], 0, INT32_MAX, &tr->spike_channels[tr->n_spike_channels]))
                tr->n_spike_channels++;
    }
    return 0;
}

int sks_trace_read(const char *path, sks_trace_result **out) {
    *out = NULL;
    uint8_t *buf = NULL;
    size_t n = 0;
    int have = sks_read_file(path, &buf, &n);
    if (have <= 0) return have < 0 ? have : sks_fail(SKS_EIO, "%s: cannot open", path);
    if (n == 0 || n > ((size_t)1 << 30)) {
        free(buf);
        return sks_fail(SKS_EFORMAT, "%s: empty or too large", path);
    }
    sks_trace_result *tr = calloc(1, sizeof *tr);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = tr ? 0 : sks_fail(SKS_ENOMEM, "out of memory");
    if (!rc && sks_mp_unpack(&u, buf, n, NULL)) rc = sks_fail(SKS_EFORMAT, "%s: not a msgpack file", path);
    if (!rc) rc = sks__trace_fill(&u.data, path, tr);
    msgpack_unpacked_destroy(&u);
    free(buf);
    if (rc) {
        sks_trace_result_free(tr);
        return rc;
    }
    *out = tr;
    return 0;
}
