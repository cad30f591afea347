/* bench-quadform.c - one FFN layer of the quadratic-amplifier analysis at 7B shape.
 *
 * Default shape: Llama-2-7B (d 4096, f 11008). Weights are drawn N(0, 0.02^2), rounded to
 * bf16 (as a checkpoint stores them) and converted back to f32 with the loader's
 * converter. --plant K adds K spike channels: a unit direction s is mixed into 32 rows
 * of W_gate and W_up, and W_down[k, those rows] is raised, so S_k gets a dominant
 * eigenpair as in trained models.
 *
 * Parts timed (wall clock, this machine's OpenBLAS threads):
 *   sgemm      sks_sgemm_gflops(4096): the yardstick for "fraction of sgemm"
 *   traces     tr(S_k) for all d channels
 *   frobenius  ||S_k||_F for all d channels (Gram identity, f32 sgemm)
 *   eigs       top-r eigenpairs of the --eig channels with the largest ||S_k||_F
 *              (block 2 and krylov_dim 40 by default: fastest measured, docs/linalg.md)
 *              (batched thick-restart block Lanczos, f32 operator)
 *   naive      dense S_k (dgemm) + dsyevr for --naive channels, also the accuracy
 *              reference for the channels it shares with eigs
 *
 * Usage: bench-quadform [--d N] [--f N] [--eig N] [--r N] [--block N] [--tol X]
 *                       [--kdim N] [--naive N] [--plant K] [--seed S] [--f64]
 */
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_util.h"
#include "linalg/sks_linalg.h"
#include "loaders/sks_model.h"

static uint64_t rng_state = 1;

static int fill_bf16(float *w, size_t n, double scale) {
    uint16_t *tmp = malloc(n * sizeof *tmp);
    if (!tmp) return -1;
    for (size_t i = 0; i < n; i++) tmp[i] = sks_f32_to_bf16((float)(scale * bench_normalish(&rng_state)));
    sks_bf16_to_f32(tmp, w, n);
    free(tmp);
    return 0;
}

/* CPU seconds of this process (all threads): with other jobs on the machine, wall time
 * measures the share we got, CPU time the work we did. */

static double loadavg(void) {
    double l = -1.0;
    FILE *fp = fopen("/proc/loadavg", "r");
    if (fp) {
        if (fscanf(fp, "%lf", &l) != 1) l = -1.0;
        fclose(fp);
    }
    return l;
}

int main(int argc, char **argv) {
    int d = 4096, f = 11008, neig = 64, r = 4, block = 2, nnaive = 2, plant = 4, use64 = 0, kdim = 40;
    double tol = 1e-6;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--f64")) { use64 = 1; continue; }
        if (!v) { fprintf(stderr, "bench-quadform: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--d")) d = atoi(v);
        else if (!strcmp(a, "--f")) f = atoi(v);
        else if (!strcmp(a, "--eig")) neig = atoi(v);
        else if (!strcmp(a, "--r")) r = atoi(v);
        else if (!strcmp(a, "--block")) block = atoi(v);
        else if (!strcmp(a, "--kdim")) kdim = atoi(v);
        else if (!strcmp(a, "--tol")) tol = atof(v);
        else if (!strcmp(a, "--naive")) nnaive = atoi(v);
        else if (!strcmp(a, "--plant")) plant = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else { fprintf(stderr, "bench-quadform: unknown option %s\n", a); return 2; }
        i++;
    }
    if (d <= 0 || f <= 0 || neig < 0 || neig > d || r <= 0 || r > d || nnaive < 0 || nnaive > neig || plant < 0 ||
        plant > d) {
        fprintf(stderr, "bench-quadform: bad sizes\n");
        return 2;
    }
    rng_state = seed;
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress visible when redirected */
    printf("bench-quadform: d %d f %d, eigs: %d channels x top-%d (tol %g, %s operator), naive %d, plant %d\n", d, f,
           neig, r, tol, use64 ? "f64" : "f32", nnaive, plant);
    printf("load average before: %.2f\n", loadavg());

    double t0 = sks_now(), c0 = bench_cpu_now();
    double sg = sks_sgemm_gflops(4096, 3);
    printf("%-10s %8.2f s   %8.1f GFLOP/s (4096^3, best of 3; cpu %.2f s)\n", "sgemm", sks_now() - t0, sg,
           bench_cpu_now() - c0);
    /* the eigen part's yardstick is the GEMM of its operator's precision */
    double yard = sg;
    const char *yn = "sgemm";
    if (use64) {
        yard = sks_dgemm_gflops(4096, 2);
        yn = "dgemm";
        printf("%-10s            %8.1f GFLOP/s (4096^3, best of 2)\n", "dgemm", yard);
    }
    /* The same yardstick per CPU second (flops / CPU time of this process, one
     * 4096^3 GEMM of the operator's precision): on a machine shared with other work,
     * wall rates measure the share of the cores this process got, which changes from one
     * minute to the next; CPU-time rates do not (time spent waiting for a descheduled
     * thread still counts against the eigen part, as it should). */
    double yard_cpu;
    {
        c0 = bench_cpu_now();
        (void)(use64 ? sks_dgemm_gflops(4096, 1) : sks_sgemm_gflops(4096, 1));
        /* sks_*gemm_gflops runs one warm-up and one timed product */
        yard_cpu = 2.0 * 2.0 * 4096.0 * 4096.0 * 4096.0 / (bench_cpu_now() - c0) * 1e-9;
        printf("%-10s            %8.1f GFLOP/s per CPU second (%s 4096^3)\n", "cpu-yard", yard_cpu, yn);
    }

    size_t fd = (size_t)f * d;
    float *G = malloc(fd * sizeof *G), *U = malloc(fd * sizeof *U), *Dn = malloc(fd * sizeof *Dn);
    if (!G || !U || !Dn || fill_bf16(G, fd, 0.02) || fill_bf16(U, fd, 0.02) || fill_bf16(Dn, fd, 0.02)) {
        fprintf(stderr, "bench-quadform: out of memory\n");
        return 1;
    }
    /* planted spikes: s a random unit vector; rows j in [0, 32) get G, U += 0.5 s,
     * W_down[k, j] = +-0.5 for the planted channels k = 7, 7 + 131, ... */
    if (plant > 0) {
        double *s = malloc((size_t)d * sizeof *s), nrm = 0.0;
        for (int i = 0; i < d; i++) s[i] = bench_normalish(&rng_state), nrm += s[i] * s[i];
        for (int i = 0; i < d; i++) s[i] /= sqrt(nrm);
        int nrow = f < 32 ? f : 32;
        for (int j = 0; j < nrow; j++)
            for (int i = 0; i < d; i++) {
                G[(size_t)j * d + i] += (float)(0.5 * s[i]);
                U[(size_t)j * d + i] += (float)(0.5 * s[i] * (j % 2 ? 1.0 : 0.8));
            }
        for (int p = 0; p < plant; p++) {
            int k = (7 + 131 * p) % d;
            for (int j = 0; j < nrow; j++) Dn[(size_t)k * f + j] = (float)((p % 2 ? -0.5 : 0.5) * (0.5 + 0.5 * (j % 3)));
        }
        free(s);
    }
    sks_quadform q = {d, f, G, U, Dn};
    sks_quadform64 q64 = {0};
    if (use64 && sks_quadform_f64_alloc(&q, &q64)) {
        fprintf(stderr, "bench-quadform: %s\n", sks_last_error());
        return 1;
    }
    double *tr = malloc((size_t)d * sizeof *tr), *fr = malloc((size_t)d * sizeof *fr);

    t0 = sks_now();
    c0 = bench_cpu_now();
    int rc = sks_quadform_traces(&q, tr);
    double t_tr = sks_now() - t0;
    printf("%-10s %8.2f s   (cpu %.2f s)\n", "traces", t_tr, bench_cpu_now() - c0);

    t0 = sks_now();
    c0 = bench_cpu_now();
    rc = rc ? rc : sks_quadform_frobenius(&q, fr);
    double t_fr = sks_now() - t0, fl_fr = sks_quadform_frobenius_flops(d, f, 0);
    printf("%-10s %8.2f s   %8.1f GFLOP/s = %.0f%% of sgemm (%.3g flop; cpu %.2f s)\n", "frobenius", t_fr,
           fl_fr / t_fr * 1e-9, 100.0 * fl_fr / t_fr * 1e-9 / sg, fl_fr, bench_cpu_now() - c0);
    if (rc) {
        fprintf(stderr, "bench-quadform: %s\n", sks_last_error());
        return 1;
    }

    /* eigen channels: the neig largest ||S_k||_F (selection by repeated max) */
    int *ch = malloc((size_t)(neig > 0 ? neig : 1) * sizeof *ch);
    char *used = calloc((size_t)d, 1);
    for (int i = 0; i < neig; i++) {
        int best = -1;
        for (int k = 0; k < d; k++)
            if (!used[k] && (best < 0 || fr[k] > fr[best])) best = k;
        used[best] = 1;
        ch[i] = best;
    }
    double *ev = malloc((size_t)neig * r * sizeof *ev), *V = malloc((size_t)neig * d * r * sizeof *V);
    double *res = malloc((size_t)neig * r * sizeof *res);
    sks_eigs_info *info = calloc((size_t)neig, sizeof *info);
    for (int i = 0; i < neig; i++) info[i].residuals = res + (size_t)i * r;
    sks_eigs_opts o = {.r = r, .block = block, .tol = tol, .seed = seed};
    sks_eigs_extra x = {.krylov_dim = kdim};
    double t_eig = 0.0, fl_eig = 0.0;
    long mv = 0;
    int nconv = 0;
    if (neig > 0) {
        t0 = sks_now();
        c0 = bench_cpu_now();
        rc = sks_quadform_top_eigs(use64 ? NULL : &q, use64 ? &q64 : NULL, ch, neig, &o, &x, ev, V, info);
        t_eig = sks_now() - t0;
        double c_eig = bench_cpu_now() - c0;
        if (rc && rc != SKS_ENOCONV) {
            fprintf(stderr, "bench-quadform: %s\n", sks_last_error());
            return 1;
        }
        for (int i = 0; i < neig; i++) mv += info[i].matvecs, nconv += info[i].n_conv == r;
        fl_eig = (double)mv * 8.0 * f * d; /* four GEMM products of 2 f d per vector */
        printf("%-10s %8.2f s   %8.1f GFLOP/s = %.0f%% of %s; %ld matvecs (%.0f per channel), %d restarts, "
               "%d/%d channels converged; cpu %.2f s\n",
               "eigs", t_eig, fl_eig / t_eig * 1e-9, 100.0 * fl_eig / t_eig * 1e-9 / yard, yn, mv, (double)mv / neig,
               x.restarts, nconv, neig, c_eig);
        printf("           %d rounds (mean width %.1f columns), %.2f s in the operator (%.1f GFLOP/s there = %.0f%% of "
               "%s), %.2f s in the solver\n",
               x.rounds, (double)mv / (x.rounds > 0 ? x.rounds : 1), x.op_seconds, fl_eig / x.op_seconds * 1e-9,
               100.0 * fl_eig / x.op_seconds * 1e-9 / yard, yn, t_eig - x.op_seconds);
        printf("           per CPU second: %.1f GFLOP/s = %.0f%% of %s per CPU second\n", fl_eig / c_eig * 1e-9,
               100.0 * fl_eig / c_eig * 1e-9 / yard_cpu, yn);
        double worst = 0.0;
        for (int i = 0; i < neig * r; i++) worst = fmax(worst, res[i]);
        printf("           worst relative residual %.2e; channel %d: lambda %.6g %.6g, dominance %.2f, energy %.3f\n",
               worst, ch[0], ev[0], r > 1 ? ev[1] : NAN, r > 1 ? fabs(ev[0] / ev[1]) : NAN,
               ev[0] * ev[0] / (fr[ch[0]] * fr[ch[0]]));
    }
    double t_layer = t_tr + t_fr + t_eig;
    printf("%-10s %8.2f s   (traces + frobenius + eigs; %.1f GFLOP/s overall = %.0f%% of sgemm)\n", "layer", t_layer,
           (fl_fr + fl_eig) / t_layer * 1e-9, 100.0 * (fl_fr + fl_eig) / t_layer * 1e-9 / sg);

    /* naive: dense S_k + dsyevr, and the accuracy of the fast path against it */
    if (nnaive > 0) {
        size_t dd = (size_t)d * d;
        double *S = malloc(dd * sizeof *S), *w = malloc((size_t)d * sizeof *w), *Z = malloc(dd * sizeof *Z);
        double t_dense = 0.0, t_syev = 0.0;
        for (int i = 0; i < nnaive; i++) {
            int k = ch[i];
            t0 = sks_now();
            if (sks_quadform_dense(&q, k, S)) return 1;
            double t1 = sks_now();
            if (sks_eig_dense(d, S, w, Z)) return 1;
            t_dense += t1 - t0;
            t_syev += sks_now() - t1;
            double trr = 0.0, frr = 0.0, e_ev = 0.0, cmin = 1.0;
            for (int a = 0; a < d; a++) trr += S[(size_t)a * d + a];
            for (size_t t = 0; t < dd; t++) frr += S[t] * S[t];
            frr = sqrt(frr);
            for (int c = 0; c < r; c++) {
                e_ev = fmax(e_ev, fabs(ev[(size_t)i * r + c] - w[c]) / fabs(w[c]));
                double dot = 0.0;
                for (int a = 0; a < d; a++) dot += V[(size_t)i * d * r + (size_t)a * r + c] * Z[(size_t)a * d + c];
                cmin = fmin(cmin, fabs(dot));
            }
            printf("naive ch %d: |dtrace|/||S|| %.1e, frob rel err %.1e, eig rel err %.1e, min |cos| 1-%.1e\n", k,
                   fabs(tr[k] - trr) / frr, fabs(fr[k] - frr) / frr, e_ev, 1.0 - cmin);
        }
        double per = (t_dense + t_syev) / nnaive;
        printf("%-10s %8.2f s per channel (dense S_k %.2f s + dsyevr %.2f s)\n", "naive", per, t_dense / nnaive,
               t_syev / nnaive);
        if (neig > 0)
            printf("ratio      naive / fast per eigen channel: %.0fx; naive whole layer (%d channels) ~ %.0f s vs "
                   "%.1f s: %.0fx\n",
                   per / (t_eig / neig), d, per * d, t_layer, per * d / t_layer);
        free(S);
        free(w);
        free(Z);
    }
    printf("load average after: %.2f\n", loadavg());
    sks_quadform64_free(&q64);
    free(G); free(U); free(Dn); free(tr); free(fr); free(ch); free(used); free(ev); free(V); free(res); free(info);
    return 0;
}
