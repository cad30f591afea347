/* bench-cuda.c - the cuda row of the quadform backend on one GPU (needs -DSKS_CUDA=ON).
 *
 * Parts (--part, default all; or a comma-separated list, run in the order 7b, acc, 70b, sinks):
 *   gemm  the GPU's cuBLAS rates at n = 8192: SGEMM FP32, SGEMM with TF32 tensor cores,
 *         DGEMM (TFLOP/s, best of 5): the yardstick for every fraction below.
 *   7b    a Llama-2-7B-shaped model (sinkscope's synth preset llama2-7b: planted spike
 *         channels and sink heads) built in host memory with bf16 weights, all 32
 *         layers through the library with --device cuda: spikes (screen of all 4096
 *         channels + top-4 eigenpairs of the 64 best, f32 operator, tol 1e-6, the cuda
 *         row's own eigensolver; weights streamed per layer as bf16 and converted on the
 *         GPU) and trace over a 64-token prompt (forward-pass weight GEMMs on the GPU).
 *   sinks the sinks analysis of that model over the same prompt.
 *   acc   accuracy of the GPU screen (FP32, TF32) and eigenpairs (FP32, TF32) against
 *         the f64 CPU path (OpenBLAS dgemm) on the planted spike layer of that model.
 *   70b   a 70B-shaped layer stack (d 8192, f 28672, --layers70 layers, default 80)
 *         whose weights are generated on the GPU (the 140 GB of f32/bf16 weights fit no
 *         device disk), per layer: traces, the Gram screen of all 8192 channels, top-4
 *         eigenpairs of the 64 best (the spikes part, at linalg level: no model view).
 * --tf32: TF32 tensor cores for the f32 GEMMs of the 7b / 70b parts (default FP32).
 * --kdim N, --kblock N: the eigensolver's basis size and Krylov block (default: linalg's
 * basis rule and block 4).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/sks_sinks.h"
#include "analysis/sks_spikes.h"
#include "analysis/sks_synth.h"
#include "analysis/sks_trace.h"
#include "linalg/sks_linalg.h"
#include "loaders/sks_model.h"

#ifndef SKS_HAVE_CUDA
int main(void) {
    fprintf(stderr, "bench-cuda: this build has no CUDA backend (configure with -DSKS_CUDA=ON)\n");
    return 77;
}
#else

static double g_fp32, g_tf32, g_fp64;
static int g_use_tf32; /* --tf32 */
static int g_kdim, g_kblock; /* --kdim, --kblock: the solver's basis and Krylov block (0 = the defaults) */

#define DIE(...)                                                                       \
    do {                                                                               \
        fprintf(stderr, "bench-cuda: " __VA_ARGS__);                                   \
        fprintf(stderr, ": %s\n", sks_last_error());                                   \
        exit(1);                                                                       \
    } while (0)

/* ---- the 7B model in host memory (bf16), tensors filled on all cores -------------- */

typedef struct {
    const sks_synth *s;
    size_t i;
    int64_t rows, cols;
    uint16_t *out;
    int t, nt;
    int rc;
} fill_job;

static void *fill_worker(void *ud) {
    fill_job *j = ud;
    float *buf = malloc((size_t)j->cols * 64 * sizeof(float));
    if (!buf) {
        j->rc = SKS_ENOMEM;
        return NULL;
    }
    for (int64_t r0 = (int64_t)j->t * 64; r0 < j->rows && !j->rc; r0 += (int64_t)j->nt * 64) {
        int64_t nr = j->rows - r0 < 64 ? j->rows - r0 : 64;
        j->rc = sks_synth_rows(j->s, j->i, r0, nr, buf);
        for (int64_t k = 0; k < nr * j->cols; k++) j->out[(size_t)r0 * j->cols + k] = sks_f32_to_bf16(buf[k]);
    }
    free(buf);
    return NULL;
}

static sks_model *build_7b(sks_synth **syn_out, double *seconds) {
    double t0 = sks_now();
    sks_synth_config cfg;
    if (sks_synth_preset("llama2-7b", &cfg)) DIE("preset");
    sks_synth *syn = NULL;
    if (sks_synth_new(&cfg, 1, &syn)) DIE("synth");
    sks_model *m = NULL;
    if (sks_model_new_memory(sks_synth_arch(syn), &m)) DIE("model");
    enum { NT = 16 };
    for (size_t i = 0; i < sks_synth_n_tensors(syn); i++) {
        const char *name;
        sks_role role;
        int layer, ndim;
        int64_t sh[2];
        if (sks_synth_tensor_info(syn, i, &name, &role, &layer, &ndim, sh)) DIE("tensor info");
        int64_t rows = ndim == 1 ? 1 : sh[0], cols = ndim == 1 ? sh[0] : sh[1];
        uint16_t *w = malloc((size_t)rows * cols * sizeof *w); /* kept until exit */
        if (!w) DIE("out of memory");
        fill_job jobs[NT];
        pthread_t th[NT];
        for (int t = 0; t < NT; t++) {
            jobs[t] = (fill_job){syn, i, rows, cols, w, t, NT, 0};
            pthread_create(&th[t], NULL, fill_worker, &jobs[t]);
        }
        for (int t = 0; t < NT; t++) {
            pthread_join(th[t], NULL);
            if (jobs[t].rc) DIE("synth rows");
        }
        if (sks_model_set_tensor(m, role, layer, SKS_DT_BF16, ndim, sh, w, name)) DIE("set tensor");
    }
    if (sks_model_validate(m)) DIE("validate");
    sks_model_freeze(m); /* its weights stay as built: a GPU may keep them (the weight cache) */
    *syn_out = syn;
    *seconds = sks_now() - t0;
    return m;
}

/* ---- part 7b ------------------------------------------------------------------------ */

/* the spikes analysis of the 7b part on the cuda row: screen of every channel, top-4
 * eigenpairs of the 64 best, f32 operator; kdim, kblock 0 = the solver's defaults */
static sks_spikes *spikes_7b(sks_model *m, int kdim, int kblock) {
    sks_qf_backend_set_default(sks_qf_backend_find("cuda"));
    sks_spikes_opts o;
    sks_spikes_opts_default(&o);
    o.rank = 4;
    o.top_frob = 64;
    o.precision = SKS_SPK_PREC_F32;
    o.first_token_map = 0;
    o.krylov_dim = kdim;
    o.block = kblock;
    sks_spikes *s = NULL;
    if (sks_spikes_new(m, &o, &s)) DIE("spikes");
    return s;
}

/* sums over the layers of a spikes run */
typedef struct {
    double scr, eig, fl_s, fl_e, worst;
    long mv;
    int nconv, nch;
} tally;

static void tally_add(tally *t, const sks_spikes_layer_result *r) {
    t->scr += r->seconds_screen;
    t->eig += r->seconds_eigs;
    t->fl_s += r->flops_screen;
    t->fl_e += r->flops_eigs;
    t->mv += r->matvecs;
    for (int i = 0; i < r->n_channels; i++) {
        t->nconv += r->channels[i].converged;
        t->nch++;
        for (int e = 0; e < r->channels[i].rank; e++) t->worst = fmax(t->worst, r->channels[i].residuals[e]);
    }
}

/* the solver profile of the layers just run (SKS_CUDA_EIGS_PROFILE=1), one line */
static void print_eigs_profile(void) {
    static const char *const names[] = {"operator", "projection", "rayleigh-ritz", "ritz+resid",
                                        "host",     "restart",    "expand+orth",   "compaction"};
    double sec[9] = {0};
    int n = sks_qf_cuda_eigs_profile(sec, 9);
    if (n <= 0) return;
    printf("  solver phases (synchronized):");
    for (int i = 0; i < n && i < 8; i++) printf(" %s %.3f s,", names[i], sec[i]);
    printf(" %.0f rounds\n", sec[8]);
}

static void part_7b(sks_model *m, const sks_synth *syn) {
    const sks_arch *a = sks_model_arch(m);
    sks_spikes *s = spikes_7b(m, g_kdim, g_kblock);
    double t0 = sks_now();
    tally t = {0};
    int found_planted = 0;
    const sks_synth_planted *pl = sks_synth_get_planted(syn);
    for (int l = 0; l < a->n_layers; l++) {
        sks_spikes_layer_result r;
        if (sks_spikes_layer(s, l, NULL, NULL, NULL, 0, &r)) DIE("layer %d", l);
        tally_add(&t, &r);
        if (l == pl->step_up_layer)
            for (int c = 0; c < pl->n_spike; c++)
                for (int i = 0; i < 4 && i < r.n_top; i++) found_planted += r.top_frob[i] == pl->channels[c];
        if (l == pl->step_up_layer)
            printf("  layer %d (planted): top channels %d %d, lambda* %.4f (planted %.4f), dominance %.2f\n", l,
                   r.top_frob[0], r.top_frob[1], r.channels[0].eigenvalues[0], pl->lambda_star[0],
                   r.channels[0].dominance);
        printf("  layer %2d: screen %.4f s, eigenpairs %.4f s (%d vectors), load %.4f s\n", l, r.seconds_screen,
               r.seconds_eigs, r.matvecs, sks_now() - t0 - t.scr - t.eig);
        sks_spikes_layer_result_free(&r);
    }
    double t_spk = sks_now() - t0;
    sks_spikes_free(s);
    print_eigs_profile();
    printf("7b spikes, 32 layers, cuda (%s): %.2f s in all: screen %.2f s (%.1f TFLOP/s, %.0f%% of %s), "
           "eigenpairs %.2f s (%ld vectors, %.1f TFLOP/s, %.0f%% of FP32), weights upload + conversion + ranking %.2f s\n",
           g_use_tf32 ? "TF32" : "FP32", t_spk, t.scr, t.fl_s / t.scr * 1e-12,
           100 * t.fl_s / t.scr * 1e-12 / (g_use_tf32 ? g_tf32 : g_fp32),
           g_use_tf32 ? "TF32" : "FP32", t.eig, t.mv, t.fl_e / t.eig * 1e-12, 100 * t.fl_e / t.eig * 1e-12 / g_fp32,
           t_spk - t.scr - t.eig);
    printf("  per layer: screen %.4f s (PyTorch FP32 0.080 s: %.2fx), eigenpairs %.4f s = %.5f s per channel "
           "(PyTorch subspace iteration 0.030 s: %.1fx)\n",
           t.scr / a->n_layers, 0.080 / (t.scr / a->n_layers), t.eig / a->n_layers, t.eig / t.nch,
           0.030 / (t.eig / t.nch));
    printf("  converged %d/%d channels, worst explicit residual %.2e, planted channels in the top 4: %d/%d\n", t.nconv,
           t.nch, t.worst, found_planted, pl->n_spike);

    sks_trace_prompt_set ps;
    if (sks_trace_default_prompt_set(m, 1, 64, 1, &ps)) DIE("prompts");
    sks_trace_opts to;
    sks_trace_opts_default(&to);
    sks_trace_result *tr = NULL;
    t0 = sks_now();
    if (sks_trace_run(m, ps.n, ps.ptr, ps.lens, &to, &tr)) DIE("trace");
    double t_tr = sks_now() - t0;
    printf("7b trace, %d tokens, cuda: %.2f s, spike channels:", ps.lens[0], t_tr);
    for (int i = 0; i < tr->n_spike_channels; i++) printf(" %d", tr->spike_channels[i]);
    printf(" (planted:");
    for (int c = 0; c < pl->n_spike; c++) printf(" %d", pl->channels[c]);
    printf(")\n");
    sks_trace_result_free(tr);
    printf("7b spikes + trace compute: %.2f s\n", t_spk + t_tr);
}

static void part_sinks(sks_model *m, const sks_synth *syn) {
    const sks_synth_planted *pl = sks_synth_get_planted(syn);
    sks_qf_backend_set_default(sks_qf_backend_find("cuda"));
    sks_trace_prompt_set ps;
    if (sks_trace_default_prompt_set(m, 1, 64, 1, &ps)) DIE("prompts");
    sks_sinks_opts so;
    sks_sinks_opts_default(&so);
    sks_sinks_result *sr = NULL;
    double t0 = sks_now();
    if (sks_sinks_run(m, ps.n, ps.ptr, ps.lens, &so, &sr)) DIE("sinks");
    if (sks_sinks_classify(sr, &so)) DIE("classify");
    double t_sk = sks_now() - t0;
    printf("7b sinks, %d tokens, cuda: %.2f s, sink heads %d (planted %d), AUC of the main predictor %.3f\n",
           ps.lens[0], t_sk, sr->n_sink_heads, pl->n_sink, sr->auc[so.main_pred]);
    sks_sinks_result_free(sr);
}

/* ---- part sweep ---------------------------------------------------------------------- */

/* The spikes part over the first --sweep-layers layers once per solver setting of
 * --sweep "BLOCK:KDIM[:RR[:PROFILE[:SPLIT]]],...": the eigenpairs' time, operator vectors,
 * convergence (RR: rounds per Rayleigh-Ritz; PROFILE 1: the solver's phases, with a
 * synchronization after each, so that setting's time is not comparable; SPLIT: split-K
 * factor of the operator's second GEMM). */
static void part_sweep(sks_model *m, const char *list, int nl) {
    const sks_arch *a = sks_model_arch(m);
    if (nl <= 0 || nl > a->n_layers) nl = a->n_layers;
    for (const char *p = list; p && *p;) {
        int kb = 0, kd = 0, rr = 1, prof = 0, split = 1;
        if (sscanf(p, "%d:%d:%d:%d:%d", &kb, &kd, &rr, &prof, &split) < 2) DIE("--sweep item '%s'", p);
        char rrs[16], sps[16];
        snprintf(rrs, sizeof rrs, "%d", rr);
        snprintf(sps, sizeof sps, "%d", split);
        setenv("SKS_CUDA_EIGS_RR", rrs, 1);
        setenv("SKS_CUDA_OP_SPLIT", sps, 1);
        setenv("SKS_CUDA_EIGS_PROFILE", prof ? "1" : "0", 1);
        sks_spikes *s = spikes_7b(m, kd, kb);
        tally t = {0};
        for (int l = 0; l < nl; l++) {
            sks_spikes_layer_result r;
            if (sks_spikes_layer(s, l, NULL, NULL, NULL, 0, &r)) DIE("layer %d", l);
            tally_add(&t, &r);
            sks_spikes_layer_result_free(&r);
        }
        sks_spikes_free(s);
        printf("sweep block %d kdim %d rr %d split %d, %d layers: eigenpairs %.3f s (%.4f s per layer), %ld vectors "
               "(%.1f per channel), %.1f TFLOP/s (%.0f%% of FP32), converged %d/%d, worst residual %.2e%s\n",
               kb, kd, rr, split, nl, t.eig, t.eig / nl, t.mv, (double)t.mv / t.nch, t.fl_e / t.eig * 1e-12,
               100 * t.fl_e / t.eig * 1e-12 / g_fp32, t.nconv, t.nch, t.worst, prof ? " (profiled)" : "");
        print_eigs_profile();
        p = strchr(p, ',');
        if (p) p++;
    }
    unsetenv("SKS_CUDA_EIGS_RR");
    unsetenv("SKS_CUDA_EIGS_PROFILE");
    unsetenv("SKS_CUDA_OP_SPLIT");
}

/* ---- part acc ---------------------------------------------------------------------- */

static double max_rel(const double *x, const double *ref, const int *idx, int n) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        int k = idx ? idx[i] : i;
        e = fmax(e, fabs(x[k] - ref[k]) / fabs(ref[k]));
    }
    return e;
}

static void rank_desc(const double *x, int n, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort, n = 4096 once */
        for (int j = i; j > 0 && x[idx[j]] > x[idx[j - 1]]; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
}

static void eig_run(const sks_qf_op *op, const int *ch, int m, double tol, int block, double norm_tol, double *ev,
                    double *secs) {
    sks_eigs_opts eo = {.r = 4, .block = block, .tol = tol, .seed = 1, .max_iter = 1 << 28};
    sks_eigs_extra x = {.max_restarts = 200, .norm_tol = norm_tol};
    double *V = malloc((size_t)m * op->d * 4 * sizeof *V);
    double t0 = sks_now();
    int rc = sks_qf_top_eigs(op, ch, m, &eo, &x, ev, V, NULL);
    *secs = sks_now() - t0;
    if (rc && rc != SKS_ENOCONV) DIE("eigs");
    if (rc) printf("    (some pairs above tol %.0e)\n", tol);
    free(V);
}

static void part_acc(sks_model *m, const sks_synth *syn) {
    const sks_synth_planted *pl = sks_synth_get_planted(syn);
    const int l = pl->step_up_layer, d = sks_model_arch(m)->d_model, f = sks_model_arch(m)->d_ffn;
    const sks_tensor *tg = sks_model_tensor(m, SKS_ROLE_W_GATE, l), *tu = sks_model_tensor(m, SKS_ROLE_W_UP, l);
    const sks_tensor *td = sks_model_tensor(m, SKS_ROLE_W_DOWN, l);
    size_t fd = (size_t)f * d;
    float *G = malloc(fd * 4), *U = malloc(fd * 4), *Dn = malloc(fd * 4);
    if (!G || !U || !Dn || sks_tensor_rows_f32(tg, 0, f, G) || sks_tensor_rows_f32(tu, 0, f, U) ||
        sks_tensor_rows_f32(td, 0, d, Dn))
        DIE("weights");
    sks_quadform q = {.d = d, .f = f, .G = G, .U = U, .Down = Dn};
    sks_quadform64 q64;
    if (sks_quadform_f64_alloc(&q, &q64)) DIE("f64 copies");
    double *ref = malloc(d * sizeof *ref), *x = malloc(d * sizeof *x);
    int *idx = malloc(d * sizeof *idx), *idx2 = malloc(d * sizeof *idx2);
    double t0 = sks_now();
    if (sks_quadform64_frobenius(&q64, 0, ref)) DIE("f64 screen");
    printf("acc: layer %d of the 7b model (planted channels %d, %d); f64 CPU screen %.1f s (reference)\n", l,
           pl->channels[0], pl->channels[1], sks_now() - t0);
    rank_desc(ref, d, idx);
    sks_qf_op op;
    sks_qf_raw raw = {.d = d, .f = f, .elem = SKS_QF_ELEM_BF16, .G = tg->data, .U = tu->data, .Down = td->data};
    if (sks_qf_bind(sks_qf_backend_find("cuda"), NULL, NULL, &raw, SKS_QF_F32, &op)) DIE("bind");
    const int nblk = sks_quadform_frobenius_nblocks(f, 0);
    double *part = malloc((size_t)nblk * d * sizeof *part);
    for (int tf = 0; tf < 2; tf++) {
        sks_qf_cuda_set_tf32(tf);
        t0 = sks_now();
        if (sks_qf_frobenius_partials(&op, 0, 0, nblk, part)) DIE("screen");
        double ts = sks_now() - t0;
        sks_quadform_frobenius_finish(d, nblk, part, x);
        rank_desc(x, d, idx2);
        int same = 0, set = 0;
        for (int i = 0; i < 64; i++) {
            same += idx2[i] == idx[i];
            for (int j = 0; j < 64; j++) set += idx2[i] == idx[j];
        }
        printf("  screen %s: %.4f s, max rel. error of ||S_k||_F: all channels %.2e, top-64 %.2e; top-64 same "
               "order %d/64, same set %d/64\n",
               tf ? "TF32" : "FP32", ts, max_rel(x, ref, NULL, d), max_rel(x, ref, idx, 64), same, set);
    }
    /* eigenpairs of the 8 best channels: f64 CPU operator (tol 1e-10, block 1, the
     * f64 floor of spikes) against the GPU f32 operator in FP32 and TF32 (tol 1e-6, block 4) */
    enum { NE = 8 };
    double ev64[NE * 4], ev[NE * 4], secs;
    sks_qf_op op64;
    if (sks_qf_bind(sks_qf_backend_find("cpu"), NULL, &q64, NULL, SKS_QF_F64, &op64)) DIE("bind cpu");
    eig_run(&op64, idx, NE, 1e-10, 1, 1e-12, ev64, &secs);
    printf("  eigenpairs f64 CPU, %d channels x top-4: %.1f s (reference); lambda* of channel %d = %.6f\n", NE, secs,
           idx[0], ev64[0]);
    for (int tf = 0; tf < 2; tf++) {
        sks_qf_cuda_set_tf32(tf);
        eig_run(&op, idx, NE, 1e-6, 4, 0, ev, &secs);
        double e1 = 0, e4 = 0;
        for (int c = 0; c < NE; c++)
            for (int e = 0; e < 4; e++) {
                double r = fabs(ev[c * 4 + e] - ev64[c * 4 + e]) / fabs(ev64[c * 4]);
                if (e == 0) e1 = fmax(e1, fabs(ev[c * 4] - ev64[c * 4]) / fabs(ev64[c * 4]));
                e4 = fmax(e4, r);
            }
        printf("  eigenpairs GPU %s: %.3f s; max rel. error of lambda* %.2e, of lambda_1..4 (relative to lambda*) %.2e\n",
               tf ? "TF32" : "FP32", secs, e1, e4);
    }
    sks_qf_cuda_set_tf32(0);
    sks_qf_unbind(&op64);
    sks_qf_unbind(&op);
    sks_quadform64_free(&q64);
    free(G), free(U), free(Dn), free(ref), free(x), free(idx), free(idx2), free(part);
}

/* ---- part 70b ---------------------------------------------------------------------- */

static void part_70b(int L, int tf32) {
    const int d = 8192, f = 28672, NE = 64;
    sks_qf_cuda_set_tf32(tf32);
    double t_gen = 0, t_tr = 0, t_scr = 0, t_eig = 0, fl_s = 0, fl_e = 0, t_all = sks_now();
    long mv = 0, rounds = 0;
    int planted_top = 0;
    const int nblk = sks_quadform_frobenius_nblocks(f, 0);
    double *part = malloc((size_t)nblk * d * sizeof *part), *fro = malloc(d * sizeof *fro), *tr = malloc(d * sizeof *tr);
    int *idx = malloc(d * sizeof *idx);
    double *ev = malloc((size_t)NE * 4 * sizeof *ev), *V = malloc((size_t)NE * d * 4 * sizeof *V);
    sks_eigs_info *info = calloc(NE, sizeof *info);
    int nconv = 0;
    for (int l = 0; l < L; l++) {
        sks_qf_op op;
        double t0 = sks_now();
        if (sks_qf_cuda_bind_synthetic(d, f, (uint64_t)l + 1, 4, SKS_QF_F32, &op)) DIE("synthetic layer %d", l);
        double t1 = sks_now();
        if (sks_qf_traces(&op, tr)) DIE("traces");
        double t2 = sks_now();
        if (sks_qf_frobenius_partials(&op, 0, 0, nblk, part)) DIE("screen");
        sks_quadform_frobenius_finish(d, nblk, part, fro);
        double t3 = sks_now();
        /* top 64 by a partial selection */
        for (int i = 0; i < d; i++) idx[i] = i;
        for (int i = 0; i < NE; i++) {
            int b = i;
            for (int j = i + 1; j < d; j++)
                if (fro[idx[j]] > fro[idx[b]]) b = j;
            int t = idx[i];
            idx[i] = idx[b];
            idx[b] = t;
        }
        for (int p = 0; p < 4; p++)
            for (int i = 0; i < 4; i++) planted_top += idx[i] == (97 * (p + 1)) % d;
        sks_qf_cuda_set_tf32(0); /* the eigenpairs stay FP32 */
        sks_eigs_opts eo = {.r = 4, .block = g_kblock > 0 ? g_kblock : 4, .tol = 1e-6, .seed = 1, .max_iter = 1 << 28};
        sks_eigs_extra x = {.max_restarts = 200, .krylov_dim = g_kdim};
        int rc = sks_qf_top_eigs(&op, idx, NE, &eo, &x, ev, V, info);
        rounds += x.rounds;
        if (rc && rc != SKS_ENOCONV) DIE("eigs");
        sks_qf_cuda_set_tf32(tf32);
        double t4 = sks_now();
        for (int i = 0; i < NE; i++) {
            mv += info[i].matvecs;
            nconv += info[i].n_conv == 4;
        }
        t_gen += t1 - t0;
        t_tr += t2 - t1;
        t_scr += t3 - t2;
        t_eig += t4 - t3;
        fl_s += sks_quadform_frobenius_flops(d, f, 0);
        if (1)
            printf("  70b layer %d: generate %.3f s, traces %.4f s, screen %.3f s, eigenpairs %.3f s; top channels %d "
                   "%d, lambda* %.4f\n",
                   l, t1 - t0, t2 - t1, t3 - t2, t4 - t3, idx[0], idx[1], ev[0]);
        sks_qf_unbind(&op);
    }
    fl_e = 8.0 * f * (double)d * mv;
    double all = sks_now() - t_all;
    const double peak = tf32 ? g_tf32 : g_fp32;
    printf("70b spikes part, %d layers (d %d, f %d, weights generated on the GPU), screen in %s: %.1f s in all "
           "(weight generation %.1f s not counted: %.1f s of compute)\n",
           L, d, f, tf32 ? "TF32" : "FP32", all, t_gen, all - t_gen);
    printf("  screen %.1f s (%.3f s per layer, %.1f TFLOP/s, %.0f%% of %s; PyTorch %s 1 layer %.2f s: %.2fx), "
           "traces %.2f s\n",
           t_scr, t_scr / L, fl_s / t_scr * 1e-12, 100 * fl_s / t_scr * 1e-12 / peak, tf32 ? "TF32" : "FP32",
           tf32 ? "TF32" : "FP32", tf32 ? 0.16 : 1.03, (tf32 ? 0.16 : 1.03) / (t_scr / L), t_tr);
    printf("  eigenpairs %.1f s (%.3f s per layer, %ld vectors in %ld rounds, operator %.1f TFLOP/s = %.0f%% of FP32 "
           "over the solver's wall time), converged %d/%d channels, planted channels in the top 4: %d/%d\n",
           t_eig, t_eig / L, mv, rounds, fl_e / t_eig * 1e-12, 100 * fl_e / t_eig * 1e-12 / g_fp32, nconv, NE * L,
           planted_top, 4 * L);
    sks_qf_cuda_set_tf32(0);
    free(part), free(fro), free(tr), free(idx), free(ev), free(V), free(info);
}

/* part is one name or a comma-separated list of names */
static int has_part(const char *part, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = part; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if ((len == n && !strncmp(p, name, n)) || (len == 3 && !strncmp(p, "all", 3))) return 1;
        p += len + (e != NULL);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *part = "all";
    int L70 = 80, tf32 = 0, sweep_layers = 8;
    const char *sweep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--part") && i + 1 < argc) part = argv[++i];
        else if (!strcmp(argv[i], "--layers70") && i + 1 < argc) L70 = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tf32")) tf32 = 1;
        else if (!strcmp(argv[i], "--kdim") && i + 1 < argc) g_kdim = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kblock") && i + 1 < argc) g_kblock = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sweep") && i + 1 < argc) sweep = argv[++i];
        else if (!strcmp(argv[i], "--sweep-layers") && i + 1 < argc) sweep_layers = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-cuda [--part all|gemm|7b|sinks|acc|70b] [--layers70 N] [--tf32] [--kdim N] "
                            "[--kblock N] [--sweep BLOCK:KDIM[:RR[:PROFILE[:SPLIT]]],... [--sweep-layers N]]\n");
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* partial results survive a time limit */
    sks_log_set_level(SKS_LOG_WARN);
    const sks_qf_backend *cu = NULL;
    if (sks_qf_backend_resolve("cuda", &cu)) {
        fprintf(stderr, "bench-cuda: %s\n", sks_last_error());
        return 77;
    }
    if (sks_qf_cuda_gemm_rates(8192, 5, &g_fp32, &g_tf32, &g_fp64)) DIE("gemm rates");
    printf("gemm (cuBLAS, n 8192): FP32 %.1f TFLOP/s, TF32 %.1f TFLOP/s, FP64 %.1f TFLOP/s\n", g_fp32, g_tf32, g_fp64);
    /* order: 7b, acc, 70b, then sinks (the longest, CPU-bound) last */
    sks_synth *syn = NULL;
    sks_model *m = NULL;
    if (has_part(part, "7b") || has_part(part, "acc") || has_part(part, "sinks") || sweep) {
        double ts;
        m = build_7b(&syn, &ts);
        printf("7b model built in host memory (bf16, synth preset llama2-7b): %.1f s (not counted)\n", ts);
    }
    g_use_tf32 = tf32;
    if (tf32) sks_qf_cuda_set_tf32(1);
    if (sweep) part_sweep(m, sweep, sweep_layers);
    if (has_part(part, "7b")) part_7b(m, syn);
    sks_qf_cuda_set_tf32(0);
    if (has_part(part, "acc")) part_acc(m, syn);
    if (has_part(part, "70b")) part_70b(L70, tf32);
    if (has_part(part, "sinks")) part_sinks(m, syn);
    if (m) sks_model_close(m);
    sks_synth_free(syn);
    return 0;
}
#endif
