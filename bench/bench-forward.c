/* bench-forward.c - prompt-processing throughput of the forward pass, as tokens/s and
 * as a fraction of this machine's sgemm throughput measured in the same run.
 *
 *   bench-forward [--model PATH] [--T N] [--reps N] [--dtype f32|bf16] [--logits all|last|none]
 *
 * Without --model it builds an in-memory random Llama-shaped model of 134M parameters
 * (d 768, f 2048, 12 layers, 12 heads x 64, V 32000, untied classifier), the size of
 * GPT-2 small. Useful work of one pass over T tokens, in flops:
 *   2 T (weights of all projections and the classifier)      (the GEMMs)
 * + 4 dh H L T (T + 1) / 2                                   (Q K^T and A V, causal half)
 * The fraction reported is (useful flops / time) / (sgemm flops/s at 2048^3).
 * --logits: the classifier at every position (default), at the last one only (what
 * llama.cpp's llama-bench computes for a prompt; the classifier's flops and those of the
 * last layer's FFN, which the pass then runs on the last token alone, count for one
 * row) or not at all.
 * Output: one human line per measurement on stdout, then one JSON line.
 */
#include "analysis/sks_forward.h"
#include "bench/bench_util.h"

#include <cblas.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x243f6a8885a308d3ull;
static float frand(void) { return (float)((double)(bench_xorshift(&rng) >> 11) / 9007199254740992.0 - 0.5); }

static double sgemm_gflops(int n, int reps) {
    float *A = malloc((size_t)n * n * 4), *B = malloc((size_t)n * n * 4), *C = malloc((size_t)n * n * 4);
    for (size_t i = 0; i < (size_t)n * n; i++) A[i] = frand(), B[i] = frand();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, A, n, B, n, 0, C, n); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = sks_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, A, n, B, n, 0, C, n);
        double dt = sks_now() - t0;
        if (dt < best) best = dt;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * n * (double)n * n / best / 1e9;
}

typedef struct {
    void *bufs[256];
    int n;
} store;

static int add(sks_model *m, store *s, sks_role role, int layer, int64_t r, int64_t c, int bf16, float scale,
               float offset) {
    size_t n = (size_t)r * (size_t)(c ? c : 1);
    void *data;
    if (bf16 && c) {
        uint16_t *b = malloc(n * 2);
        if (!b) return SKS_ENOMEM;
        for (size_t i = 0; i < n; i++) b[i] = sks_f32_to_bf16(offset + scale * frand());
        data = b;
    } else {
        float *f = malloc(n * 4);
        if (!f) return SKS_ENOMEM;
        for (size_t i = 0; i < n; i++) f[i] = offset + scale * frand();
        data = f;
    }
    s->bufs[s->n++] = data;
    int64_t sh[2] = {r, c};
    return sks_model_set_tensor(m, role, layer, bf16 && c ? SKS_DT_BF16 : SKS_DT_F32, c ? 2 : 1, sh, data, NULL);
}

static int build_random(int bf16, store *s, sks_model **out) {
    sks_arch a = {0};
    strcpy(a.family, "llama");
    a.n_layers = 12; a.d_model = 768; a.d_ffn = 2048; a.n_heads = 12; a.n_kv_heads = 12; a.head_dim = 64;
    a.vocab_size = 32000; a.max_seq = 4096; a.norm_eps = 1e-5; a.rope_theta = 10000; a.bos_id = 1; a.eos_id = 2;
    sks_model *m;
    int rc = sks_model_new_memory(&a, &m);
    if (rc) return rc;
    int64_t d = 768, f = 2048, V = 32000;
    float ws = 0.07f; /* ~1/sqrt(d) * sqrt(12) / 2: keeps activations O(1) */
    rc |= add(m, s, SKS_ROLE_EMBED, -1, V, d, bf16, 1.0f, 0);
    rc |= add(m, s, SKS_ROLE_FINAL_NORM, -1, d, 0, 0, 0.1f, 1.0f);
    rc |= add(m, s, SKS_ROLE_LM_HEAD, -1, V, d, bf16, ws, 0);
    for (int l = 0; l < 12 && !rc; l++) {
        rc |= add(m, s, SKS_ROLE_ATTN_NORM, l, d, 0, 0, 0.1f, 1.0f);
        rc |= add(m, s, SKS_ROLE_WQ, l, d, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_WK, l, d, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_WV, l, d, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_WO, l, d, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_FFN_NORM, l, d, 0, 0, 0.1f, 1.0f);
        rc |= add(m, s, SKS_ROLE_W_GATE, l, f, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_W_UP, l, f, d, bf16, ws, 0);
        rc |= add(m, s, SKS_ROLE_W_DOWN, l, d, f, bf16, ws, 0);
    }
    if (rc || (rc = sks_model_validate(m))) {
        sks_model_close(m);
        return rc ? rc : SKS_EINTERNAL;
    }
    *out = m;
    return 0;
}

int main(int argc, char **argv) {
    const char *path = NULL, *dtype = "f32", *lg = "all";
    int T = 512, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--T") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) dtype = argv[++i];
        else if (!strcmp(argv[i], "--logits") && i + 1 < argc) lg = argv[++i];
        else {
            fprintf(stderr, "usage: bench-forward [--model PATH] [--T N] [--reps N] [--dtype f32|bf16] "
                            "[--logits all|last|none]\n");
            return 2;
        }
    }
    const int lg_rows = !strcmp(lg, "all") ? T : !strcmp(lg, "last") ? 1 : !strcmp(lg, "none") ? 0 : -1;
    if (T < 1 || reps < 1 || lg_rows < 0) {
        fprintf(stderr, "bench-forward: --T and --reps must be positive, --logits all, last or none\n");
        return 2;
    }
    double peak = sgemm_gflops(2048, 5);
    printf("sgemm 2048^3: %.1f GFLOP/s (best of 5)\n", peak);

    store s = {{0}, 0};
    sks_model *m = NULL;
    int rc = path ? sks_model_open(path, &m) : build_random(!strcmp(dtype, "bf16"), &s, &m);
    if (rc) {
        fprintf(stderr, "bench-forward: %s\n", sks_last_error());
        return 1;
    }
    const sks_arch *a = sks_model_arch(m);
    /* useful flops: 2 T x (matmul weights), plus the two attention GEMMs over the causal
     * half of T x T (the pass computes slightly more: whole 128-row blocks) */
    double wparams = 0;
    for (int l = 0; l < a->n_layers; l++)
        wparams += (double)a->d_model * (2.0 * a->n_heads * a->head_dim + 2.0 * a->n_kv_heads * a->head_dim) +
                   3.0 * a->d_model * a->d_ffn;
    double flops = 2.0 * T * wparams + 2.0 * lg_rows * (double)a->vocab_size * a->d_model +
                   2.0 * (double)T * (T + 1) * a->head_dim * a->n_heads * a->n_layers;
    /* --logits last: the last layer's FFN runs on the last token only (sks_forward_run) */
    if (lg_rows == 1) flops -= 2.0 * (T - 1) * 3.0 * a->d_model * a->d_ffn;

    int32_t *tok = malloc((size_t)T * sizeof *tok);
    for (int t = 0; t < T; t++) tok[t] = t ? (int32_t)((uint64_t)(t * 2654435761u) % (uint64_t)a->vocab_size) : 1;
    sks_forward *f;
    if ((rc = sks_forward_new(m, T, &f))) {
        fprintf(stderr, "bench-forward: %s\n", sks_last_error());
        return 1;
    }
    float *logits = malloc((size_t)T * a->vocab_size * sizeof *logits);
    if (!logits) return 1;
    float *lo = lg_rows ? logits : NULL;
    const int last = lg_rows == 1;
    rc = sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, lo, last); /* warm-up: page in the weights */
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < reps && !rc; r++) {
        double t0 = sks_now(), c0 = bench_cpu_now();
        rc = sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, lo, last);
        double dt = sks_now() - t0, dc = bench_cpu_now() - c0;
        if (dt < best) best = dt;
        if (dc < best_cpu) best_cpu = dc;
    }
    if (rc) {
        fprintf(stderr, "bench-forward: %s\n", sks_last_error());
        return 1;
    }
    double gfl = flops / best / 1e9;
    printf("model: %s, %.1fM parameters, %s weights\n", path ? path : "random llama-shaped (in memory)",
           (double)sks_model_n_params(m) / 1e6, path ? "file" : dtype);
    printf("prompt processing T=%d: %.3f s, %.0f tokens/s, %.1f GFLOP/s = %.0f%% of sgemm (CPU time %.3f s)\n", T, best,
           T / best, gfl, 100.0 * gfl / peak, best_cpu);
    printf("peak RSS: %.0f MiB\n", (double)sks_peak_rss() / 1048576.0);
    printf("{\"T\": %d, \"seconds\": %.6f, \"tokens_per_s\": %.2f, \"gflops\": %.2f, \"sgemm_gflops\": %.2f, "
           "\"fraction\": %.4f, \"cpu_seconds\": %.6f, \"n_params\": %llu}\n",
           T, best, T / best, gfl, peak, gfl / peak, best_cpu, (unsigned long long)sks_model_n_params(m));
    free(logits);
    free(tok);
    sks_forward_free(f);
    sks_model_close(m);
    for (int i = 0; i < s.n; i++) free(s.bufs[i]);
    return 0;
}
