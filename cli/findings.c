/* findings.c - what an analysis found, short and readable, on the terminal. */
#include "cli.h"
#include "../analysis/sks_spikes.h"

#include <math.h>
#include <stdlib.h>

static void sks__block_name(char *buf, size_t n, int b) {
    if (b <= 0) snprintf(buf, n, "block 0 (embeddings)");
    else snprintf(buf, n, "block %d (%s of layer %d)", b, sks_block_kind(b) == SKS_BLOCK_ATTN ? "attention" : "FFN",
                  sks_block_layer(b));
}

static void sks__block_list(FILE *f, const int *b, int n) {
    if (n == 0) fprintf(f, "none");
    for (int i = 0; i < n; i++) {
        char nm[64];
        sks__block_name(nm, sizeof nm, b[i]);
        fprintf(f, "%s%s", i ? ", " : "", nm);
    }
}

void sks_cli_print_trace_findings(FILE *f, const sks_trace_result *r, const sks_trace_opts *o) {
    sks_spike_rule rule;
    char buf[160], nm[64];
    sks_trace_opts_rule(o, &rule);
    fprintf(f, "spike rule: %s\n", sks_spike_rule_describe(&rule, buf, sizeof buf));
    if (r->n_spike_channels == 0) {
        fprintf(f, "spike channels: none on prompt 0 (%d tokens)", r->n_tokens);
        if (r->closest_channel >= 0) {
            sks__block_name(nm, sizeof nm, r->closest_block);
            fprintf(f, "; closest: channel %d, %.2fx the threshold over %d blocks from %s", r->closest_channel,
                    r->closest_frac, rule.min_blocks, nm);
        }
        fprintf(f, "\n");
    } else {
        fprintf(f, "spike channels: %d, spike tokens: %d of %d on prompt 0\n", r->n_spike_channels, r->n_spike_tokens,
                r->n_tokens);
    }
    /* one line pair per spike channel: its first lifecycle (lowest token) */
    for (int i = 0; i < r->n_spike_channels; i++) {
        int c = r->spike_channels[i], first = -1, ntok = 0;
        for (int k = 0; k < r->n_lifecycles; k++)
            if (r->lifecycles[k].channel == c) {
                if (first < 0) first = k;
                ntok++;
            }
        if (first < 0) continue;
        const sks_lifecycle *lc = &r->lifecycles[first];
        int pb = 0;
        for (int b = 0; b < r->n_blocks; b++)
            if (fabsf(lc->values[b]) > fabsf(lc->values[pb])) pb = b;
        const sks_trace_block *k = &r->blocks[pb];
        sks__block_name(nm, sizeof nm, pb);
        fprintf(f, "  channel %d, token %d%s: peak |h| %.1f at %s = %.0fx the block median, %.1fx the threshold\n", c,
                lc->token, ntok > 1 ? " (and more tokens)" : "", lc->peak_abs, nm,
                k->median_abs > 0 ? lc->peak_abs / k->median_abs : INFINITY,
                k->threshold > 0 ? lc->peak_abs / k->threshold : INFINITY);
        fprintf(f, "    step-up: ");
        sks__block_list(f, lc->up_blocks, lc->n_up);
        fprintf(f, "; step-down: ");
        sks__block_list(f, lc->down_blocks, lc->n_down);
        fprintf(f, "\n");
    }
    /* sinks: heads over the mean alpha_0, and the per-prompt average share */
    const int LH = r->n_layers * r->n_heads;
    int nsink = 0;
    for (int i = 0; i < LH; i++) nsink += r->alpha[(size_t)i * r->n_alpha] > o->eps;
    fprintf(f, "sink heads: %d of %d have alpha_0 > %g averaged over the %d prompt(s); sink ratio %.1f%% "
               "(share of sink heads per prompt, averaged)\n",
            nsink, LH, o->eps, r->n_prompts, r->sink_ratio);
    int *ord = malloc((size_t)LH * sizeof *ord);
    if (!ord) return;
    for (int i = 0; i < LH; i++) ord[i] = i;
    int ntop = LH < 5 ? LH : 5;
    for (int a = 0; a < ntop; a++) /* partial selection: the 5 largest alpha_0 */
        for (int b = a + 1; b < LH; b++)
            if (r->alpha[(size_t)ord[b] * r->n_alpha] > r->alpha[(size_t)ord[a] * r->n_alpha]) {
                int t = ord[a];
                ord[a] = ord[b];
                ord[b] = t;
            }
    fprintf(f, "  top heads by alpha_0:");
    for (int a = 0; a < ntop; a++)
        fprintf(f, "%s layer %d head %d %.2f", a ? "," : "", ord[a] / r->n_heads, ord[a] % r->n_heads,
                r->alpha[(size_t)ord[a] * r->n_alpha]);
    fprintf(f, "\n");
    free(ord);
}

void sks_cli_print_spike_channels(FILE *f, const void *layer_results, int n, int spike_only) {
    const sks_spikes_layer_result *res = layer_results;
    for (int i = 0; i < n; i++) {
        const sks_spikes_layer_result *L = &res[i];
        if (L->moe) {
            /* an MoE layer: the channels below are the active form of the routed experts */
            fprintf(f, "  layer %d (mixture of experts): token %d routed to", L->layer, L->moe->token);
            for (int j = 0; j < L->moe->k; j++)
                fprintf(f, "%s expert %d (w %.3f)", j ? "," : "", L->moe->experts[j], L->moe->weights[j]);
            if (L->moe->has_shared) fprintf(f, ", shared expert (gain %.3f)", L->moe->shared_gate);
            fprintf(f, "; %d experts screened; S_k below = the active form sum_e w_e S_k^(e)\n", L->moe->n_per_expert);
        }
        for (int k = 0; k < L->n_channels; k++) {
            const sks_spike_channel *c = &L->channels[k];
            int spike = (c->source & SKS_SPK_SRC_SPIKE) != 0;
            if (spike_only && !spike) continue;
            fprintf(f, "  S_%d at layer %d%s: lambda* %.3g, dominance %.2f, energy %.2f", c->channel, L->layer,
                    spike ? " (spike channel)" : "", c->eigenvalues[0], c->dominance, c->energy_fraction);
            if (isfinite(c->cos_x_s))
                fprintf(f, ", cos(x, s*) %.2f at token %d, x^T S x %.1f vs true %.1f", c->cos_x_s, c->token,
                        c->quad_pred, c->true_out);
            fprintf(f, "\n");
        }
    }
}
