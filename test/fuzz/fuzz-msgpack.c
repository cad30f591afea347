/* fuzz-msgpack.c - libFuzzer target for the msgpack the tool reads back:
 *   - the per-layer part files of resumable runs (OUT.parts/layer-NNNN.msgpack,
 *     sks_spikes_layer_unpack in analysis/spikes_pack.c), and
 *   - `sinkscope spikes --from-trace FILE` (sks_trace_read in analysis/trace_read.c).
 * Input: one selector byte, then the file. A decoded part must describe arrays that match its
 * counts; a read trace must hold sane lifecycles. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../analysis/sks_spikes.h"
#include "../../analysis/sks_trace.h"

static char sks__path[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sks_log_set_level(-1);
    if (size < 1) return 0;
    const uint8_t *buf = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        const int d = 64; /* the width of the seed parts (synth --preset tiny) */
        size_t off = 0;
        while (off < n) {
            sks_spikes_layer_result r;
            if (sks_spikes_layer_unpack(buf, n, &off, d, "fuzz/layer.msgpack", &r)) break;
            if (r.d != d || r.n_top < 0 || r.n_top > d) __builtin_trap();
            double acc = 0;
            for (int i = 0; i < d; i++) acc += r.frobenius[i] + r.trace[i];
            for (int c = 0; c < r.n_channels; c++) {
                const sks_spike_channel *h = &r.channels[c];
                if (h->channel < 0 || h->channel >= d || h->rank < 1) __builtin_trap();
                for (int k = 0; k < h->rank; k++) acc += h->eigenvalues[k] + h->residuals[k];
                for (int k = 0; k < d; k++) acc += h->s_star[k];
                for (int k = 0; k < h->n_wvo; k++) acc += h->cos_wvo[k];
            }
            (void)acc;
            sks_spikes_layer_result_free(&r);
        }
        return 0;
    }
    if (!sks__path[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(sks__path, sizeof sks__path, "%s/sks-fuzz-trace-%d.msgpack", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    }
    FILE *f = fopen(sks__path, "wb");
    if (!f) return 0;
    if (n) fwrite(buf, 1, n, f);
    fclose(f);
    sks_trace_result *tr = NULL;
    if (sks_trace_read(sks__path, &tr) == 0) {
        if (!tr) __builtin_trap();
        for (int i = 0; i < tr->n_lifecycles; i++) {
            const sks_lifecycle *L = &tr->lifecycles[i];
            if (L->token < 0 || L->channel < 0 || L->n_up < 0) __builtin_trap();
            for (int j = 0; j < L->n_up; j++)
                if (L->up_blocks[j] < 0) __builtin_trap();
        }
        int *ls = NULL, *cs = NULL, *ts = NULL, ns = 0;
        if (sks_spikes_select_from_trace(tr, &ls, &cs, &ts, &ns) == 0) {
            for (int i = 0; i < ns; i++)
                if (ls[i] < 0 || cs[i] < 0) __builtin_trap();
            free(ls), free(cs), free(ts);
        }
        sks_trace_result_free(tr);
    }
    return 0;
}
