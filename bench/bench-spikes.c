/* bench-spikes.c - end-to-end `spikes` analysis of one FFN layer at Llama-2-7B shape,
 * through the analysis API (sks_spikes_layer), with the achieved fraction of this
 * machine's measured sgemm throughput in the same run.
 *
 * Model: an in-memory one-layer model, d 4096, f 11008, 32 heads, bf16 weights drawn
 * ~N(0, 0.02^2) (--plant K: K channels get a planted dominant direction as in trained
 * models: a unit s mixed into 32 rows of W_gate and W_up, W_down[k, rows] raised), or
 * layer --layer of a model file given as MODEL (e.g. one written by `sinkscope synth`).
 *
 * Work: the screen (tr(S_k) and ||S_k||_F of all d channels) plus the top --r
 * eigenpairs of --eig channels (the best of the screen, opts.top_frob), f32 operator.
 * Fraction of sgemm = (GEMM flops of screen + eigen iterations) / wall time /
 * sks_sgemm_gflops(4096).
 *
 * Usage: bench-spikes [MODEL] [--layer L] [--d N] [--f N] [--eig N] [--r N] [--tol X]
 *                     [--plant K] [--block N] [--kb N] [--kdim N] [--seed S] [--precision auto|f32|f64]
 *   --block: channels iterated together (default 64); --kb: Krylov block per channel
 *   (default 0 = the library's automatic choice); --kdim: largest basis before a thick
 *   restart (0 = automatic); --precision: the operator (default f32;
 *   auto = what `sinkscope spikes` picks for the shape).
 * The hard case (no planted channel, spectra without a large gap):
 *   bench-spikes --d 2048 --f 5504 --plant 0 --precision auto
 * The eigen part's fraction is against the GEMM rate of the operator's precision
 * (sgemm for f32, dgemm for f64, both measured at 4096^3 in the same run).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "analysis/sks_spikes.h"
#include "linalg/sks_linalg.h"
#include "loaders/sks_model.h"

static uint64_t rng_state = 1;
static const char *argv_kb(int kb) {
    static char buf[16];
    snprintf(buf, sizeof buf, "%d", kb);
    return buf;
}
static uint16_t *bf16_random(size_t n, double scale) {
    uint16_t *w = malloc(n * sizeof *w);
    if (w)
        for (size_t i = 0; i < n; i++) w[i] = sks_f32_to_bf16((float)(scale * bench_normalish(&rng_state)));
    return w;
}

int main(int argc, char **argv) {
    const char *model_path = NULL;
    int layer = 0, d = 4096, f = 11008, n_eig = 64, r = 4, plant = 8, block = 0, kb = 0, kdim = 0;
    double tol = 0;
    int prec = SKS_SPK_PREC_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *nx = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--layer") && nx) layer = atoi(argv[++i]);
        else if (!strcmp(a, "--d") && nx) d = atoi(argv[++i]);
        else if (!strcmp(a, "--f") && nx) f = atoi(argv[++i]);
        else if (!strcmp(a, "--eig") && nx) n_eig = atoi(argv[++i]);
        else if (!strcmp(a, "--r") && nx) r = atoi(argv[++i]);
        else if (!strcmp(a, "--tol") && nx) tol = atof(argv[++i]);
        else if (!strcmp(a, "--plant") && nx) plant = atoi(argv[++i]);
        else if (!strcmp(a, "--block") && nx) block = atoi(argv[++i]);
        else if (!strcmp(a, "--kb") && nx) kb = atoi(argv[++i]);
        else if (!strcmp(a, "--kdim") && nx) kdim = atoi(argv[++i]);
        else if (!strcmp(a, "--seed") && nx) rng_state = (uint64_t)atoll(argv[++i]);
        else if (!strcmp(a, "--precision") && nx) {
            const char *v = argv[++i];
            prec = !strcmp(v, "auto") ? SKS_SPK_PREC_AUTO : !strcmp(v, "f64") ? SKS_SPK_PREC_F64 : SKS_SPK_PREC_F32;
        }
        else if (a[0] != '-' && !model_path) model_path = a;
        else {
            fprintf(stderr, "usage: bench-spikes [MODEL] [--layer L] [--d N] [--f N] [--eig N] [--r N] [--tol X] "
                            "[--plant K] [--block N] [--kb N] [--kdim N] [--seed S] [--precision auto|f32|f64]\n");
            return 2;
        }
    }
    sks_log_set_level(SKS_LOG_WARN);
    double t_setup = sks_now();
    sks_model *m = NULL;
    uint16_t *bufs[16] = {0};
    int nb = 0;
    if (model_path) {
        if (sks_model_open(model_path, &m)) {
            fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
            return 1;
        }
        d = sks_model_arch(m)->d_model;
        f = sks_model_arch(m)->d_ffn;
    } else {
        sks_arch a;
        memset(&a, 0, sizeof a);
        strcpy(a.family, "llama");
        a.n_layers = 1; a.d_model = d; a.d_ffn = f; a.n_heads = d / 128; a.n_kv_heads = d / 128; a.head_dim = 128;
        a.vocab_size = 64; a.norm_eps = 1e-5; a.rope_theta = 10000; a.tied_embeddings = 1; a.bos_id = 1; a.eos_id = 2;
        if (sks_model_new_memory(&a, &m)) {
            fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
            return 1;
        }
        const size_t fd = (size_t)f * d, dd = (size_t)d * d;
        struct { sks_role role; int64_t r, c; size_t n; double sc; } T[] = {
            {SKS_ROLE_EMBED, 64, d, (size_t)64 * d, 1.0},   {SKS_ROLE_FINAL_NORM, d, 0, (size_t)d, 0},
            {SKS_ROLE_ATTN_NORM, d, 0, (size_t)d, 0},        {SKS_ROLE_FFN_NORM, d, 0, (size_t)d, 0},
            {SKS_ROLE_WQ, d, d, dd, 0.02},                   {SKS_ROLE_WK, d, d, dd, 0.02},
            {SKS_ROLE_WV, d, d, dd, 0.02},                   {SKS_ROLE_WO, d, d, dd, 0.02},
            {SKS_ROLE_W_GATE, f, d, fd, 0.02},               {SKS_ROLE_W_UP, f, d, fd, 0.02},
            {SKS_ROLE_W_DOWN, d, f, fd, 0.02},
        };
        uint16_t *G = NULL, *U = NULL, *Dn = NULL;
        for (size_t i = 0; i < sizeof T / sizeof T[0]; i++) {
            uint16_t *w = bf16_random(T[i].n, T[i].sc);
            if (!w) {
                fprintf(stderr, "bench-spikes: out of memory\n");
                return 1;
            }
            if (T[i].sc == 0)
                for (size_t k = 0; k < T[i].n; k++) w[k] = sks_f32_to_bf16(1.0f);
            bufs[nb++] = w;
            if (T[i].role == SKS_ROLE_W_GATE) G = w;
            if (T[i].role == SKS_ROLE_W_UP) U = w;
            if (T[i].role == SKS_ROLE_W_DOWN) Dn = w;
            int64_t sh[2] = {T[i].r, T[i].c};
            if (sks_model_set_tensor(m, T[i].role, sks_role_is_per_layer(T[i].role) ? 0 : -1, SKS_DT_BF16,
                                     T[i].c ? 2 : 1, sh, w, NULL)) {
                fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
                return 1;
            }
        }
        /* planted spike channels: k = 97 * (p + 1) mod d */
        for (int p = 0; p < plant; p++) {
            int k = (97 * (p + 1)) % d;
            float *s = malloc((size_t)d * sizeof *s);
            double nn = 0;
            for (int i = 0; i < d; i++) {
                s[i] = bench_normalish(&rng_state);
                nn += (double)s[i] * s[i];
            }
            for (int j = 0; j < 32; j++) {
                int row = (int)(bench_splitmix(&rng_state) % (uint64_t)f);
                for (int i = 0; i < d; i++) {
                    float add = (float)(0.05 * s[i] / sqrt(nn) * sqrt((double)d));
                    G[(size_t)row * d + i] = sks_f32_to_bf16(0.02f * bench_normalish(&rng_state) + add);
                    U[(size_t)row * d + i] = sks_f32_to_bf16(0.02f * bench_normalish(&rng_state) + add);
                }
                Dn[(size_t)k * f + row] = sks_f32_to_bf16(0.5f);
            }
            free(s);
        }
        if (sks_model_validate(m)) {
            fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
            return 1;
        }
    }
    t_setup = sks_now() - t_setup;

    double sg = sks_sgemm_gflops(4096, 3), dg = sks_dgemm_gflops(4096, 2);
    sks_spikes_opts o;
    sks_spikes_opts_default(&o);
    o.rank = r;
    o.top_frob = n_eig;
    o.precision = prec;
    o.first_token_map = 0;
    o.tol = tol;
    o.channel_block = block;
    o.block = kb;
    o.krylov_dim = kdim;
    sks_spikes *s = NULL;
    sks_spikes_layer_result res;
    if (sks_spikes_new(m, &o, &s)) {
        fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
        return 1;
    }
    double t0 = sks_now();
    int rc = sks_spikes_layer(s, layer, NULL, NULL, NULL, 0, &res);
    double wall = sks_now() - t0;
    if (rc) {
        fprintf(stderr, "bench-spikes: %s\n", sks_last_error());
        return 1;
    }
    double t_conv = wall - res.seconds_screen - res.seconds_eigs; /* weight conversion + ranking */
    double flops = res.flops_screen + res.flops_eigs;
    int nconv = 0;
    double worst = 0;
    for (int i = 0; i < res.n_channels; i++) {
        nconv += res.channels[i].converged;
        for (int e = 0; e < r; e++) worst = fmax(worst, res.channels[i].residuals[e]);
    }
    const int p64 = res.precision == SKS_SPK_PREC_F64;
    const double yard = p64 ? dg : sg; /* the GEMM rate of the operator's precision */
    const char *yn = p64 ? "dgemm" : "sgemm";
    printf("bench-spikes: d %d f %d, %s, %d channels x top-%d eigenpairs, operator %s, Krylov block %s\n", d, f,
           model_path ? model_path : "in-memory bf16 layer", res.n_channels, r, p64 ? "f64" : "f32",
           kb > 0 ? argv_kb(kb) : "auto");
    printf("  sgemm (4096^3)        %8.1f GFLOP/s\n", sg);
    printf("  dgemm (4096^3)        %8.1f GFLOP/s\n", dg);
    printf("  setup (weights)       %8.2f s (not counted)\n", t_setup);
    printf("  bf16->f32 conversion  %8.2f s\n", t_conv);
    printf("  screen (tr + ||S||_F) %8.2f s  %7.1f GFLOP/s  %5.1f%% of %s\n", res.seconds_screen,
           res.flops_screen / res.seconds_screen * 1e-9, 100 * res.flops_screen / res.seconds_screen * 1e-9 / yard, yn);
    printf("  eigenpairs            %8.2f s  %7.1f GFLOP/s  %5.1f%% of %s  (%d matvecs, %d restarts)\n",
           res.seconds_eigs, res.flops_eigs / res.seconds_eigs * 1e-9,
           100 * res.flops_eigs / res.seconds_eigs * 1e-9 / yard, yn, res.matvecs, res.restarts);
    printf("  converged %d/%d, worst relative residual %.2e\n", nconv, res.n_channels, worst);
    printf("  total                 %8.2f s  %7.1f GFLOP/s  %5.1f%% of %s (end to end, conversion included)\n",
           wall, flops / wall * 1e-9, 100 * flops / wall * 1e-9 / yard, yn);
    printf("  peak RSS              %8.2f GiB\n", (double)sks_peak_rss() / (1 << 30));
    for (int i = 0; i < 4 && i < res.n_channels; i++)
        printf("  channel %4d  ||S||_F %.4f  lambda* %+.4f  dominance %.2f\n", res.channels[i].channel,
               res.channels[i].frobenius, res.channels[i].eigenvalues[0], res.channels[i].dominance);
    sks_spikes_layer_result_free(&res);
    sks_spikes_free(s);
    sks_model_close(m);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return 0;
}
