/* test-forward.c - the forward pass on in-memory models: closed-form cases (uniform
 * attention, RoPE score patterns, Llama 3 frequency scaling) and a random model with
 * GQA, q/k/v biases, Qwen3 q/k norm and bf16/Q8_0 weights against an independent f64
 * reference written here; independent-token mode, KV-cache generation, errors.
 *
 * Tolerances: the library computes in f32 (sgemm) with f64 reductions; on these small
 * models (|values| ~ 1, inner sizes <= 16) f32 rounding gives relative errors ~1e-6,
 * so 1e-4 leaves a wide margin while any formula error (wrong RoPE pair, wrong KV head,
 * missing bias) shows up at order 1e-1.
 */
#include <cblas.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "analysis/sks_forward.h"
#include "analysis/matmul_kernel.h"

/* ---- a small deterministic generator ------------------------------------------------ */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

#define TOL 1e-4
static void assert_close(double got, double want, double tol, const char *what) {
    double err = fabs(got - want) / fmax(fabs(want), 1.0);
    if (!(err <= tol)) fail_msg("%s: got %.9g want %.9g (rel err %.3g > %.3g)", what, got, want, err, tol);
}

/* ---- hand-built closed-form model ----------------------------------------------------- */

/* What the forward hooks record: every block's residual (k.res, by sks_test_on_res), the
 * attention matrices (probs (L, H, T, T), by cap_probs), how often the other hooks ran
 * (attn_in and ffn_in summing l + 1) and the FFN outputs (L, T, d). */
typedef struct {
    sks_test_cap k;
    float *probs;
    int n_attn_in, n_ffn_in, n_ffn_out, n_qk;
    float *ffn_out;
} capture;

static int cap_probs(void *ud, int l, int h, const float *A, int T) {
    capture *c = ud;
    memcpy(c->probs + ((size_t)l * c->k.H + h) * T * T, A, (size_t)T * T * sizeof(float));
    return 0;
}


/* W_Q = 0: every score is 0, so causal attention is uniform, A[i, j] = 1/(i+1), and with
 * W_V picking channels 0,1, W_O = I, gamma = 1, W_down = 0 the residual after the layer
 * is h[i] = e_i + (1/(i+1)) sum_{j<=i} n_j (n_j = e_j / sqrt(1 + eps) since rms(e) = 1)
 * copied into channels 0,1 (head 0) and 2,3 (head 1, same KV head). */
static void test_closed_form_uniform(void **state) {
    (void)state;
    sks_arch a;
    sks_test_llama_arch(&a, 1, 4, 3, 2, 1, 2, 5);
    a.eos_id = -1;
    static const float E[5 * 4] = {1, -1, 1, 1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, 1, -1, 1, 1, 1, 1};
    static const float ones[4] = {1, 1, 1, 1}, zeros[64] = {0};
    static const float WV[2 * 4] = {1, 0, 0, 0, 0, 1, 0, 0};
    static const float WO[4 * 4] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    static float WK[2 * 4] = {0.3f, -0.2f, 0.5f, 0.1f, 0.7f, 0.2f, -0.4f, 0.9f};
    sks_model *m;
    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    sks_test_set_f32(m, SKS_ROLE_EMBED, -1, 5, 4, E);
    sks_test_set_f32(m, SKS_ROLE_FINAL_NORM, -1, 4, 0, ones);
    sks_test_set_llama_layer(m, 0, &(sks_test_layer_w){ones, zeros, WK, WV, WO, ones, zeros, zeros, zeros});
    assert_int_equal(sks_model_validate(m), 0);

    const int T = 5;
    int32_t tok[5] = {0, 3, 1, 4, 2};
    capture c = {.k = {.L = 1, .H = 2, .res = calloc(3 * T * 4, sizeof(float))}, .probs = calloc(2 * T * T, sizeof(float))};
    sks_fwd_hooks hk = sks_test_cap_hooks(&c);
    hk.on_attn_probs = cap_probs;
    sks_forward *f;
    assert_int_equal(sks_forward_new(m, 8, &f), 0);
    float logits[5 * 5];
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, &hk, logits, 0), 0);

    double s = 1.0 / sqrt(1.0 + 1e-5);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
                assert_close(c.probs[(h * T + i) * T + j], j <= i ? 1.0 / (i + 1) : 0.0, 1e-6, "uniform A");
    for (int i = 0; i < T; i++) {
        double h1[4];
        for (int ch = 0; ch < 4; ch++) {
            double mean = 0;
            for (int j = 0; j <= i; j++) mean += E[tok[j] * 4 + (ch % 2)] * s;
            mean /= (i + 1);
            h1[ch] = E[tok[i] * 4 + ch] + mean;
            assert_close(c.k.res[(0 * T + i) * 4 + ch], E[tok[i] * 4 + ch], 0, "block 0 = embedding");
            assert_close(c.k.res[(1 * T + i) * 4 + ch], h1[ch], 1e-6, "block 1 closed form");
            assert_close(c.k.res[(2 * T + i) * 4 + ch], h1[ch], 1e-6, "block 2 = block 1 (W_down = 0)");
        }
        double ss = 0;
        for (int ch = 0; ch < 4; ch++) ss += h1[ch] * h1[ch];
        double inv = 1.0 / sqrt(ss / 4 + 1e-5);
        for (int v = 0; v < 5; v++) {
            double lg = 0;
            for (int ch = 0; ch < 4; ch++) lg += E[v * 4 + ch] * h1[ch] * inv;
            assert_close(logits[i * 5 + v], lg, 1e-5, "tied logits");
        }
    }
    /* last_only gives the last row */
    float last[5];
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, last, 1), 0);
    for (int v = 0; v < 5; v++) assert_close(last[v], logits[4 * 5 + v], 1e-6, "last_only");
    sks_forward_free(f);
    sks_model_close(m);
    free(c.k.res);
    free(c.probs);
}

/* RoPE closed form: W_Q = W_K = I, every token the same embedding e (rms 1), so
 * q_i = k_j = n = e / sqrt(1 + eps) before RoPE, and after it
 *   q_i . k_j = sum_p |n_p|^2 cos((i - j) w_p)
 * over the rotation pairs p (interleaved: (0,1), (2,3); rotate-half: (0,2), (1,3)) with
 * w_p = theta^(-2p/dh), scaled per Llama 3 when asked. e = (sqrt2, sqrt2, 0, 0) puts all
 * energy in pair 0 for interleaved order and splits it 2/2 for rotate-half. */
static double llama3_w(double w, double factor, double lo, double hi, double orig) {
    double wl = 2 * M_PI / w;
    if (wl < orig / hi) return w;
    if (wl > orig / lo) return w / factor;
    double sm = (orig / wl - lo) / (hi - lo);
    return (1 - sm) * w / factor + sm * w;
}

/* scaling: 0 none, 1 Llama 3, 2 linear (factor 4: every frequency / 4) */
static void rope_case(int interleaved, int llama3) {
    sks_arch a;
    sks_test_llama_arch(&a, 1, 4, 2, 1, 1, 4, 2);
    a.rope_theta = 100;
    a.rope_interleaved = interleaved;
    if (llama3 == 1) {
        a.rope_scaling = SKS_ROPE_SCALING_LLAMA3;
        a.rope_factor = 8; a.rope_low_freq_factor = 1; a.rope_high_freq_factor = 4; a.rope_original_max_pos = 8;
    } else if (llama3 == 2) {
        a.rope_scaling = SKS_ROPE_SCALING_LINEAR;
        a.rope_factor = 4;
    }
    float r2 = (float)sqrt(2.0);
    float E[2 * 4] = {r2, r2, 0, 0, r2, r2, 0, 0};
    static const float ones[4] = {1, 1, 1, 1}, zeros[16] = {0};
    static const float I4[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    sks_model *m;
    assert_int_equal(sks_model_new_memory(&a, &m), 0);
    sks_test_set_f32(m, SKS_ROLE_EMBED, -1, 2, 4, E);
    sks_test_set_f32(m, SKS_ROLE_FINAL_NORM, -1, 4, 0, ones);
    sks_test_set_llama_layer(m, 0, &(sks_test_layer_w){ones, I4, I4, I4, zeros, ones, zeros, zeros, zeros});
    const int T = 9;
    int32_t tok[9] = {0, 1, 0, 0, 1, 1, 0, 1, 0};
    capture c = {.k = {.L = 1, .H = 1, .res = calloc(3 * T * 4, sizeof(float))}, .probs = calloc(T * T, sizeof(float))};
    sks_fwd_hooks hk = sks_test_cap_hooks(&c);
    hk.on_attn_probs = cap_probs;
    sks_forward *f;
    assert_int_equal(sks_forward_new(m, T, &f), 0);
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, &hk, NULL, 0), 0);
    double w[2] = {1.0, pow(100.0, -0.5)};
    for (int p = 0; p < 2; p++) w[p] = llama3 == 1 ? llama3_w(w[p], 8, 1, 4, 8) : llama3 == 2 ? w[p] / 4 : w[p];
    double energy[2] = {interleaved ? 4.0 : 2.0, interleaved ? 0.0 : 2.0};
    double n2 = 1.0 / (1.0 + 1e-5);
    for (int i = 0; i < T; i++) {
        double sc[9], mx = -1e300, sum = 0;
        for (int j = 0; j <= i; j++) {
            sc[j] = 0;
            for (int p = 0; p < 2; p++) sc[j] += energy[p] * n2 * cos((i - j) * w[p]);
            sc[j] /= 2.0; /* sqrt(dh) */
            if (sc[j] > mx) mx = sc[j];
        }
        for (int j = 0; j <= i; j++) sum += exp(sc[j] - mx);
        for (int j = 0; j <= i; j++) assert_close(c.probs[i * T + j], exp(sc[j] - mx) / sum, 1e-5, "RoPE softmax");
    }
    sks_forward_free(f);
    sks_model_close(m);
    free(c.k.res);
    free(c.probs);
}

static void test_rope_closed_form(void **state) {
    (void)state;
    rope_case(1, 0);
    rope_case(0, 0);
    rope_case(1, 1);
    rope_case(0, 1);
    rope_case(1, 2);
    rope_case(0, 2);
}

/* ---- random model against an independent f64 reference -------------------------------- */

typedef struct {
    sks_arch a;
    /* f64 values of every tensor (what the stored dtype decodes to) */
    double *E, *fn, *cls;
    double *an[4], *wq[4], *wk[4], *wv[4], *wo[4], *bq[4], *bk[4], *bv[4], *qn[4], *kn[4], *ffn[4], *wg[4],
        *wu[4], *wd[4];
    void *store[256];
    int n_store;
    sks_model *m;
} rmodel;

/* Make a tensor of r x c (c = 0: vector) with values scale * U(-1,1) (+ offset), stored
 * as dtype dt; returns its decoded f64 values (the reference uses exactly those). */
static double *rtensor(rmodel *rm, sks_role role, int layer, int64_t r, int64_t c, double scale, double offset,
                       sks_dtype dt) {
    int64_t n = r * (c ? c : 1);
    double *vals = malloc((size_t)n * sizeof(double));
    float *f32 = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) f32[i] = (float)(offset + scale * urand());
    void *data = f32;
    if (dt == SKS_DT_BF16) {
        uint16_t *b = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) b[i] = sks_f32_to_bf16(f32[i]);
        sks_bf16_to_f32_ref(b, f32, (size_t)n);
        data = b;
        rm->store[rm->n_store++] = f32;
    } else if (dt == SKS_DT_Q8_0) {
        /* blocks of 32: f16 scale then 32 int8; value = scale * q */
        int64_t nb = n / 32;
        uint8_t *q = malloc((size_t)nb * 34);
        for (int64_t b = 0; b < nb; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(f32[b * 32 + j]));
            uint16_t sh = sks_f32_to_f16(amax / 127.0f);
            float sc;
            sks_f16_to_f32_ref(&sh, &sc, 1);
            memcpy(q + b * 34, &sh, 2);
            for (int j = 0; j < 32; j++) {
                int qi = sc > 0 ? (int)lrintf(f32[b * 32 + j] / sc) : 0;
                if (qi > 127) qi = 127;
                if (qi < -127) qi = -127;
                q[b * 34 + 2 + j] = (uint8_t)(int8_t)qi;
                f32[b * 32 + j] = sc * (float)qi;
            }
        }
        data = q;
        rm->store[rm->n_store++] = f32;
    }
    for (int64_t i = 0; i < n; i++) vals[i] = f32[i];
    rm->store[rm->n_store++] = data;
    rm->store[rm->n_store++] = vals;
    int64_t s[2] = {r, c};
    int rc = sks_model_set_tensor(rm->m, role, layer, dt, c ? 2 : 1, s, data, NULL);
    if (rc) fail_msg("set_tensor %s: %s", sks_role_name(role), sks_last_error());
    return vals;
}

static int g_eos = 2; /* eos id of the next rmodel_build */

static void rmodel_build(rmodel *rm, int interleaved, int qwen3, int qwen2, int llama3, int tied) {
    memset(rm, 0, sizeof *rm);
    rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)(interleaved + 2 * qwen3 + 4 * qwen2 + 8 * llama3 + 16 * tied);
    sks_arch *a = &rm->a;
    strcpy(a->family, qwen3 ? "qwen3" : qwen2 ? "qwen2" : "llama");
    a->n_layers = 2; a->d_model = 64; a->d_ffn = 96; a->n_heads = 4; a->n_kv_heads = 2; a->head_dim = 8;
    a->vocab_size = 37; a->norm_eps = 1e-6; a->rope_theta = 500; a->rope_interleaved = interleaved;
    a->tied_embeddings = tied; a->has_qkv_bias = qwen2; a->has_qk_norm = qwen3; a->eos_id = g_eos; a->bos_id = 1;
    if (llama3) {
        a->rope_scaling = SKS_ROPE_SCALING_LLAMA3;
        a->rope_factor = 4; a->rope_low_freq_factor = 1; a->rope_high_freq_factor = 2; a->rope_original_max_pos = 16;
    }
    assert_int_equal(sks_model_new_memory(a, &rm->m), 0);
    int64_t d = a->d_model, f = a->d_ffn, qd = 32, kd = 16, V = a->vocab_size;
    rm->E = rtensor(rm, SKS_ROLE_EMBED, -1, V, d, 1.0, 0, SKS_DT_BF16);
    rm->fn = rtensor(rm, SKS_ROLE_FINAL_NORM, -1, d, 0, 0.3, 1.0, SKS_DT_F32);
    rm->cls = tied ? rm->E : rtensor(rm, SKS_ROLE_LM_HEAD, -1, V, d, 0.3, 0, SKS_DT_Q8_0);
    for (int l = 0; l < 2; l++) {
        rm->an[l] = rtensor(rm, SKS_ROLE_ATTN_NORM, l, d, 0, 0.3, 1.0, SKS_DT_F32);
        rm->wq[l] = rtensor(rm, SKS_ROLE_WQ, l, qd, d, 0.4, 0, l ? SKS_DT_BF16 : SKS_DT_F32);
        rm->wk[l] = rtensor(rm, SKS_ROLE_WK, l, kd, d, 0.4, 0, SKS_DT_Q8_0);
        rm->wv[l] = rtensor(rm, SKS_ROLE_WV, l, kd, d, 0.3, 0, SKS_DT_F32);
        rm->wo[l] = rtensor(rm, SKS_ROLE_WO, l, d, qd, 0.3, 0, SKS_DT_BF16);
        if (qwen2) {
            rm->bq[l] = rtensor(rm, SKS_ROLE_BQ, l, qd, 0, 0.5, 0, SKS_DT_F32);
            rm->bk[l] = rtensor(rm, SKS_ROLE_BK, l, kd, 0, 0.5, 0, SKS_DT_BF16);
            rm->bv[l] = rtensor(rm, SKS_ROLE_BV, l, kd, 0, 0.5, 0, SKS_DT_F32);
        }
        if (qwen3) {
            rm->qn[l] = rtensor(rm, SKS_ROLE_Q_NORM, l, 8, 0, 0.5, 1.0, SKS_DT_F32);
            rm->kn[l] = rtensor(rm, SKS_ROLE_K_NORM, l, 8, 0, 0.5, 1.0, SKS_DT_BF16);
        }
        rm->ffn[l] = rtensor(rm, SKS_ROLE_FFN_NORM, l, d, 0, 0.3, 1.0, SKS_DT_F32);
        rm->wg[l] = rtensor(rm, SKS_ROLE_W_GATE, l, f, d, 0.5, 0, SKS_DT_BF16);
        rm->wu[l] = rtensor(rm, SKS_ROLE_W_UP, l, f, d, 0.5, 0, SKS_DT_F32);
        rm->wd[l] = rtensor(rm, SKS_ROLE_W_DOWN, l, d, f, 0.3, 0, SKS_DT_Q8_0);
    }
    assert_int_equal(sks_model_validate(rm->m), 0);
}

static void rmodel_free(rmodel *rm) {
    sks_model_close(rm->m);
    for (int i = 0; i < rm->n_store; i++) free(rm->store[i]);
}

static void ref_rms(const double *x, double *out, const double *g, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * g[i];
}

/* y = W x, W (r, c) */
static void ref_mv(const double *W, const double *x, double *y, int r, int c) {
    for (int i = 0; i < r; i++) {
        double s = 0;
        for (int j = 0; j < c; j++) s += W[(size_t)i * c + j] * x[j];
        y[i] = s;
    }
}

static void ref_rope(const sks_arch *a, double *v, int pos) {
    int dh = a->head_dim;
    for (int i = 0; i < dh / 2; i++) {
        double w = pow(a->rope_theta, -2.0 * i / dh);
        if (a->rope_scaling == SKS_ROPE_SCALING_LLAMA3)
            w = llama3_w(w, a->rope_factor, a->rope_low_freq_factor, a->rope_high_freq_factor,
                         a->rope_original_max_pos);
        int i0 = a->rope_interleaved ? 2 * i : i, i1 = a->rope_interleaved ? 2 * i + 1 : i + dh / 2;
        double c = cos(pos * w), s = sin(pos * w), x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * s;
        v[i1] = x0 * s + x1 * c;
    }
}

/* Straight-line f64 forward of one causal sequence: res (2L+1, T, d), probs (L, H, T, T),
 * logits (T, V). Token by token, no BLAS, no shared code with the library. */
static void ref_forward(const rmodel *rm, const int32_t *tok, int T, double *res, double *probs, double *logits) {
    const sks_arch *a = &rm->a;
    int d = a->d_model, f = a->d_ffn, H = a->n_heads, Hkv = a->n_kv_heads, dh = a->head_dim, V = a->vocab_size;
    int L = a->n_layers;
    double *h = malloc((size_t)T * d * sizeof(double)), *x = malloc((size_t)d * sizeof(double));
    double *Q = malloc((size_t)T * H * dh * sizeof(double)), *K = malloc((size_t)T * Hkv * dh * sizeof(double));
    double *Vv = malloc((size_t)T * Hkv * dh * sizeof(double)), *att = malloc((size_t)H * dh * sizeof(double));
    double *o = malloc((size_t)d * sizeof(double)), *g = malloc((size_t)f * sizeof(double)),
           *u = malloc((size_t)f * sizeof(double));
    double *newh = malloc((size_t)T * d * sizeof(double)), *sc = malloc((size_t)T * sizeof(double));
    for (int t = 0; t < T; t++)
        for (int c = 0; c < d; c++) h[t * d + c] = rm->E[(size_t)tok[t] * d + c];
    memcpy(res, h, (size_t)T * d * sizeof(double));
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < T; t++) {
            ref_rms(h + t * d, x, rm->an[l], d, a->norm_eps);
            ref_mv(rm->wq[l], x, Q + t * H * dh, H * dh, d);
            ref_mv(rm->wk[l], x, K + t * Hkv * dh, Hkv * dh, d);
            ref_mv(rm->wv[l], x, Vv + t * Hkv * dh, Hkv * dh, d);
            if (a->has_qkv_bias) {
                for (int i = 0; i < H * dh; i++) Q[t * H * dh + i] += rm->bq[l][i];
                for (int i = 0; i < Hkv * dh; i++) K[t * Hkv * dh + i] += rm->bk[l][i];
                for (int i = 0; i < Hkv * dh; i++) Vv[t * Hkv * dh + i] += rm->bv[l][i];
            }
            for (int hh = 0; hh < H; hh++) {
                double *qh = Q + t * H * dh + hh * dh;
                if (a->has_qk_norm) ref_rms(qh, qh, rm->qn[l], dh, a->norm_eps);
                ref_rope(a, qh, t);
            }
            for (int g2 = 0; g2 < Hkv; g2++) {
                double *kh = K + t * Hkv * dh + g2 * dh;
                if (a->has_qk_norm) ref_rms(kh, kh, rm->kn[l], dh, a->norm_eps);
                ref_rope(a, kh, t);
            }
        }
        for (int i = 0; i < T; i++) {
            for (int hh = 0; hh < H; hh++) {
                int gg = hh / (H / Hkv);
                double mx = -1e300, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int e = 0; e < dh; e++) s += Q[i * H * dh + hh * dh + e] * K[j * Hkv * dh + gg * dh + e];
                    sc[j] = s / sqrt((double)dh);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j <= i; j++) sum += exp(sc[j] - mx);
                for (int e = 0; e < dh; e++) att[hh * dh + e] = 0;
                for (int j = 0; j < T; j++) {
                    double p = j <= i ? exp(sc[j] - mx) / sum : 0;
                    probs[(((size_t)l * H + hh) * T + i) * T + j] = p;
                    if (j <= i)
                        for (int e = 0; e < dh; e++) att[hh * dh + e] += p * Vv[j * Hkv * dh + gg * dh + e];
                }
            }
            ref_mv(rm->wo[l], att, o, d, H * dh);
            for (int c = 0; c < d; c++) newh[i * d + c] = h[i * d + c] + o[c];
        }
        memcpy(h, newh, (size_t)T * d * sizeof(double));
        memcpy(res + (size_t)(2 * l + 1) * T * d, h, (size_t)T * d * sizeof(double));
        for (int t = 0; t < T; t++) {
            ref_rms(h + t * d, x, rm->ffn[l], d, a->norm_eps);
            ref_mv(rm->wg[l], x, g, f, d);
            ref_mv(rm->wu[l], x, u, f, d);
            for (int i = 0; i < f; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_mv(rm->wd[l], g, o, d, f);
            for (int c = 0; c < d; c++) h[t * d + c] += o[c];
        }
        memcpy(res + (size_t)(2 * l + 2) * T * d, h, (size_t)T * d * sizeof(double));
    }
    for (int t = 0; t < T; t++) {
        ref_rms(h + t * d, x, rm->fn, d, a->norm_eps);
        ref_mv(rm->cls, x, logits + (size_t)t * V, V, d);
    }
    free(h); free(x); free(Q); free(K); free(Vv); free(att); free(o); free(g); free(u); free(newh); free(sc);
}

static int rc_ain(void *ud, int l, const float *x, int T, int d) { (void)x; (void)T; (void)d; ((capture *)ud)->n_attn_in += l + 1; return 0; }
static int rc_fin(void *ud, int l, const float *x, int T, int d) { (void)x; (void)T; (void)d; ((capture *)ud)->n_ffn_in += l + 1; return 0; }
static int rc_fout(void *ud, int l, const float *y, int T, int d) {
    capture *c = ud;
    c->n_ffn_out++;
    memcpy(c->ffn_out + (size_t)l * T * d, y, (size_t)T * d * sizeof(float));
    return 0;
}
static int rc_qk(void *ud, int l, const float *qp, const float *kp, const float *q, const float *k, int T, int H,
                 int Hkv, int dh) {
    (void)l; (void)kp; (void)k;
    capture *c = ud;
    c->n_qk++;
    /* position 0 is not rotated: pre and post agree there */
    for (int i = 0; i < H * dh; i++) assert_true(qp[i] == q[i]);
    (void)T; (void)Hkv;
    return 0;
}

static void random_case(int interleaved, int qwen3, int qwen2, int llama3, int tied, int T) {
    rmodel rm;
    rmodel_build(&rm, interleaved, qwen3, qwen2, llama3, tied);
    const int d = rm.a.d_model, H = rm.a.n_heads, L = 2, V = rm.a.vocab_size;
    int32_t *tok = malloc((size_t)T * sizeof *tok);
    for (int t = 0; t < T; t++) tok[t] = (int32_t)((t * 7 + 3) % V);
    double *res = malloc((size_t)(2 * L + 1) * T * d * sizeof(double));
    double *probs = malloc((size_t)L * H * T * T * sizeof(double));
    double *logits = malloc((size_t)T * V * sizeof(double));
    ref_forward(&rm, tok, T, res, probs, logits);

    capture c = {.k = {.L = L, .H = H, .res = calloc((size_t)(2 * L + 1) * T * d, 4)},
                 .probs = calloc((size_t)L * H * T * T, 4), .ffn_out = calloc((size_t)L * T * d, 4)};
    sks_fwd_hooks hk = sks_test_cap_hooks(&c);
    hk.on_attn_probs = cap_probs;
    hk.on_attn_in = rc_ain;
    hk.on_ffn_in = rc_fin;
    hk.on_ffn_out = rc_fout;
    hk.on_qk = rc_qk;
    sks_forward *f;
    assert_int_equal(sks_forward_new(rm.m, T + 17, &f), 0);
    float *lg = malloc((size_t)T * V * sizeof(float));
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, &hk, lg, 0), 0);
    assert_int_equal(c.n_attn_in, 3);
    assert_int_equal(c.n_ffn_in, 3);
    assert_int_equal(c.n_ffn_out, 2);
    assert_int_equal(c.n_qk, 2);
    for (size_t i = 0; i < (size_t)(2 * L + 1) * T * d; i++) assert_close(c.k.res[i], res[i], TOL, "residual");
    for (size_t i = 0; i < (size_t)L * H * T * T; i++) assert_close(c.probs[i], probs[i], TOL, "attention prob");
    for (size_t i = 0; i < (size_t)T * V; i++) assert_close(lg[i], logits[i], TOL, "logit");
    /* without the probabilities hook attention takes the threaded per-block path */
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, lg, 0), 0);
    for (size_t i = 0; i < (size_t)T * V; i++) assert_close(lg[i], logits[i], TOL, "logit (no hooks)");
    /* the last position's logits only: without hooks the last layer's FFN runs on that
     * token alone (sks__pass_run); with hooks on every token, whose residuals stay whole */
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, NULL, lg, 1), 0);
    for (int v = 0; v < V; v++) assert_close(lg[v], logits[(size_t)(T - 1) * V + v], TOL, "last logits (no hooks)");
    memset(c.k.res, 0, (size_t)(2 * L + 1) * T * d * sizeof(float));
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_CAUSAL, &hk, lg, 1), 0);
    for (int v = 0; v < V; v++) assert_close(lg[v], logits[(size_t)(T - 1) * V + v], TOL, "last logits (hooks)");
    for (size_t i = 0; i < (size_t)(2 * L + 1) * T * d; i++) assert_close(c.k.res[i], res[i], TOL, "residual (last)");
    /* on_ffn_out is the difference of the residuals around the FFN */
    for (int l = 0; l < L; l++)
        for (size_t i = 0; i < (size_t)T * d; i++)
            assert_close(c.ffn_out[(size_t)l * T * d + i],
                         res[(size_t)(2 * l + 2) * T * d + i] - res[(size_t)(2 * l + 1) * T * d + i], TOL, "ffn out");
    sks_forward_free(f);
    free(lg);
    free(res); free(probs); free(logits);
    free(c.k.res); free(c.probs); free(c.ffn_out);
    free(tok);
    rmodel_free(&rm);
}

static void test_random_llama_interleaved(void **state) { (void)state; random_case(1, 0, 0, 0, 0, 23); }
static void test_random_llama_rotate_half_llama3(void **state) { (void)state; random_case(0, 0, 0, 1, 1, 23); }
static void test_random_qwen2_bias(void **state) { (void)state; random_case(0, 0, 1, 0, 1, 23); }
static void test_random_qwen3_qknorm(void **state) { (void)state; random_case(0, 1, 0, 0, 0, 23); }
/* longer than one attention block of query rows (128), not a multiple of it */
static void test_random_long_sequence(void **state) { (void)state; random_case(1, 1, 1, 0, 0, 300); }

/* Independent mode: token t alone at position 0 (the vocabulary sweep) equals a causal
 * run of that single token; and its attention output is W_O W_V x exactly. */
static void test_independent_mode(void **state) {
    (void)state;
    rmodel rm;
    rmodel_build(&rm, 0, 0, 1, 0, 1);
    const int T = 9, d = rm.a.d_model, V = rm.a.vocab_size, L = 2;
    int32_t tok[9] = {5, 0, 36, 2, 2, 17, 9, 30, 1};
    capture c = {.k = {.L = L, .H = 4, .res = calloc((size_t)(2 * L + 1) * T * d, 4)}, .ffn_out = calloc((size_t)L * T * d, 4)};
    sks_fwd_hooks hk = {0};
    hk.ud = &c;
    hk.on_residual = sks_test_on_res;
    sks_forward *f;
    assert_int_equal(sks_forward_new(rm.m, T, &f), 0);
    float *lg = malloc((size_t)T * V * 4), one[64];
    assert_int_equal(sks_forward_run(f, tok, T, SKS_FWD_INDEPENDENT, &hk, lg, 0), 0);
    double *res = malloc((size_t)(2 * L + 1) * d * sizeof(double)), *probs = malloc((size_t)L * 4 * sizeof(double)),
           *ref_lg = malloc((size_t)V * sizeof(double));
    for (int t = 0; t < T; t++) {
        ref_forward(&rm, &tok[t], 1, res, probs, ref_lg);
        for (int b = 0; b <= 2 * L; b++)
            for (int ch = 0; ch < d; ch++)
                assert_close(c.k.res[((size_t)b * T + t) * d + ch], res[(size_t)b * d + ch], TOL, "independent residual");
        for (int v = 0; v < V; v++) assert_close(lg[t * V + v], ref_lg[v], TOL, "independent logits");
        assert_int_equal(sks_forward_run(f, &tok[t], 1, SKS_FWD_CAUSAL, NULL, one, 0), 0);
        for (int v = 0; v < V; v++) assert_close(lg[t * V + v], one[v], TOL, "independent = causal T=1");
    }
    free(res); free(probs); free(ref_lg); free(lg); free(c.k.res); free(c.ffn_out);
    sks_forward_free(f);
    rmodel_free(&rm);
}

typedef struct {
    int32_t ids[64];
    int n, stop_at;
} tokcap;
static int on_tok(void *ud, int32_t id, int i) {
    tokcap *c = ud;
    assert_int_equal(i, c->n);
    c->ids[c->n++] = id;
    return i == c->stop_at ? SKS_EARG : 0;
}

/* Generation with the KV cache: every greedy token equals the argmax of a full
 * recomputation over the prefix (reference forward), and stop_at_eos stops. */
static void test_generate_kv_cache(void **state) {
    (void)state;
    rmodel rm;
    rmodel_build(&rm, 1, 1, 0, 1, 0);
    const int V = rm.a.vocab_size, N = 12;
    int32_t seq[32] = {1, 7, 19};
    int np = 3, n_out = -1;
    int32_t gen[32];
    sks_forward *f;
    assert_int_equal(sks_forward_new(rm.m, np + N - 1, &f), 0);
    assert_int_equal(sks_forward_generate(f, seq, np, N, 0, gen, &n_out), 0);
    assert_int_equal(n_out, N);
    int d = rm.a.d_model, H = rm.a.n_heads;
    for (int i = 0; i < N; i++) {
        int T = np + i;
        double *res = malloc((size_t)5 * T * d * 8), *pr = malloc((size_t)2 * H * T * T * 8),
               *lg = malloc((size_t)T * V * 8);
        ref_forward(&rm, seq, T, res, pr, lg);
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[(size_t)(T - 1) * V + v] > lg[(size_t)(T - 1) * V + best]) best = v;
        assert_int_equal(gen[i], best);
        seq[T] = gen[i];
        free(res); free(pr); free(lg);
    }
    /* a second generate reuses the cache buffers from position 0 */
    int32_t gen2[32];
    assert_int_equal(sks_forward_generate(f, seq, np, N, 0, gen2, &n_out), 0);
    assert_memory_equal(gen, gen2, (size_t)N * sizeof(int32_t));
    /* streaming callback: sees every token in order; a negative return stops */
    tokcap tc = {{0}, 0, -1};
    assert_int_equal(sks_forward_generate_cb(f, seq, np, N, 0, on_tok, &tc, gen2, &n_out), 0);
    assert_int_equal(tc.n, N);
    assert_memory_equal(tc.ids, gen, (size_t)N * sizeof(int32_t));
    tc.n = 0;
    tc.stop_at = 2;
    assert_int_equal(sks_forward_generate_cb(f, seq, np, N, 0, on_tok, &tc, gen2, &n_out), SKS_EARG);
    assert_int_equal(n_out, 3);
    /* too long for the workspace */
    assert_int_equal(sks_forward_generate(f, seq, np, N + 1, 0, gen2, &n_out), SKS_EARG);
    sks_forward_free(f);
    rmodel_free(&rm);
    /* stop at eos: the same model with eos = the third greedy token stops after it */
    g_eos = gen[2];
    rmodel_build(&rm, 1, 1, 0, 1, 0);
    g_eos = 2;
    assert_int_equal(sks_forward_new(rm.m, np + N, &f), 0);
    assert_int_equal(sks_forward_generate(f, seq, np, N, 1, gen2, &n_out), 0);
    int first = 0;
    while (gen[first] != gen[2]) first++; /* eos may already appear earlier */
    assert_int_equal(n_out, first + 1);
    assert_memory_equal(gen, gen2, (size_t)n_out * sizeof(int32_t));
    sks_forward_free(f);
    rmodel_free(&rm);
}

/* sks_matmul_wt with a workspace of a few rows (many chunks) equals the dense product
 * of the decoded weights, for every dtype. */
static void test_matmul_chunks(void **state) {
    (void)state;
    rmodel rm;
    rmodel_build(&rm, 0, 0, 0, 0, 0);
    const sks_tensor *W[3] = {sks_model_tensor(rm.m, SKS_ROLE_W_GATE, 0), sks_model_tensor(rm.m, SKS_ROLE_W_DOWN, 0),
                              sks_model_tensor(rm.m, SKS_ROLE_WV, 0)};
    const double *vals[3] = {rm.wg[0], rm.wd[0], rm.wv[0]};
    for (int w = 0; w < 3; w++) {
        int64_t r = W[w]->shape[0], c = W[w]->shape[1];
        const int T = 5;
        float *X = malloc((size_t)T * c * 4), *Y = malloc((size_t)T * r * 4), ws[3 * 96];
        for (int64_t i = 0; i < T * c; i++) X[i] = (float)urand();
        assert_int_equal(sks_matmul_wt(W[w], X, T, Y, ws, (size_t)(3 * c + 1)), 0);
        for (int t = 0; t < T; t++)
            for (int64_t i = 0; i < r; i++) {
                double s = 0;
                for (int64_t j = 0; j < c; j++) s += vals[w][i * c + j] * X[t * c + j];
                assert_close(Y[t * r + i], s, 1e-5, "matmul_wt");
            }
        if (W[w]->dtype != SKS_DT_F32) assert_int_equal(sks_matmul_wt(W[w], X, T, Y, ws, (size_t)(c - 1)), SKS_EARG);
        free(X);
        free(Y);
    }
    rmodel_free(&rm);
    /* one large bf16 block (700 x 512) converted in a single chunk */
    const int64_t r = 700, c = 512;
    uint16_t *wb = malloc((size_t)(r * c) * 2);
    float *wf = malloc((size_t)(r * c) * 4), *X = malloc(3 * (size_t)c * 4), *Y = malloc(3 * (size_t)r * 4);
    float *ws = malloc((size_t)(r * c) * 4);
    for (int64_t i = 0; i < r * c; i++) wb[i] = sks_f32_to_bf16((float)urand());
    sks_bf16_to_f32_ref(wb, wf, (size_t)(r * c));
    for (int64_t i = 0; i < 3 * c; i++) X[i] = (float)urand();
    sks_tensor t = {"big", SKS_DT_BF16, 2, {r, c}, wb, (uint64_t)(r * c * 2), 0, 0, 0};
    /* the rows split over 1, 2, 3 and 5 threads (uneven shares of whole chunks and one
     * of a few rows), and an error in the last thread's rows comes back with its message */
    const int saved = openblas_get_num_threads();
    static const int nths[] = {1, 2, 3, 5};
    for (int k = 0; k < 4; k++) {
        openblas_set_num_threads(nths[k]);
        for (int64_t i = 0; i < 3 * r; i++) Y[i] = NAN;
        const size_t wsf[2] = {(size_t)(r * c), (size_t)(5 * nths[k] * c)};
        for (int v = 0; v < 2; v++) {
            assert_int_equal(sks_matmul_wt(&t, X, 3, Y, ws, wsf[v]), 0);
            for (int tt = 0; tt < 3; tt++)
                for (int64_t i = 0; i < r; i++) {
                    double sum = 0;
                    for (int64_t j = 0; j < c; j++) sum += (double)wf[i * c + j] * X[tt * c + j];
                    assert_close(Y[tt * r + i], sum, 1e-5, "matmul_wt (rows over threads)");
                }
        }
        wb[(r - 1) * c + 7] = 0x7fc0; /* a bf16 NaN in the last row */
        assert_int_equal(sks_matmul_wt(&t, X, 3, Y, ws, (size_t)(r * c)), SKS_ENONFINITE);
        assert_non_null(strstr(sks_last_error(), "big"));
        wb[(r - 1) * c + 7] = sks_f32_to_bf16(wf[(r - 1) * c + 7]);
    }
    openblas_set_num_threads(saved);
    /* Transposed views (GPT-2's Conv1D): W^T stored (c, r + 3) in bf16 and in f32, the
     * view (r, c) starting at stored column 2; rows gathered in blocks of 1, 7 and all
     * rows (workspace sizes), against the same sums. */
    const int64_t ld = r + 3;
    uint16_t *tb = malloc((size_t)(c * ld) * 2);
    float *tf = malloc((size_t)(c * ld) * 4);
    for (int64_t j = 0; j < c; j++)
        for (int64_t k = 0; k < ld; k++) {
            int64_t i = k - 2;
            tb[j * ld + k] = i >= 0 && i < r ? wb[i * c + j] : sks_f32_to_bf16(9.0f);
            tf[j * ld + k] = i >= 0 && i < r ? wf[i * c + j] : 9.0f;
        }
    sks_tensor tt_b = {"conv1d_bf16", SKS_DT_BF16, 2, {r, c}, tb + 2, (uint64_t)(r * c * 2), 0, ld, 0};
    sks_tensor tt_f = {"conv1d_f32", SKS_DT_F32, 2, {r, c}, tf + 2, (uint64_t)(r * c * 4), 0, ld, 0};
    const size_t wsz[3] = {(size_t)c, (size_t)(7 * c), (size_t)(r * c)};
    for (int v = 0; v < 6; v++) {
        memset(Y, 0, 3 * (size_t)r * 4);
        assert_int_equal(sks_matmul_wt(v < 3 ? &tt_b : &tt_f, X, 3, Y, ws, wsz[v % 3]), 0);
        for (int tt = 0; tt < 3; tt++)
            for (int64_t i = 0; i < r; i++) {
                double sum = 0;
                for (int64_t j = 0; j < c; j++) sum += (double)wf[i * c + j] * X[tt * c + j];
                assert_close(Y[tt * r + i], sum, 1e-5, "matmul_wt (transposed view)");
            }
    }
    /* one row and one column read back exactly */
    float row[512];
    assert_int_equal(sks_tensor_rows_f32(&tt_b, 123, 1, row), 0);
    for (int64_t j = 0; j < c; j++) assert_true(row[j] == wf[123 * c + j]);
    free(tb); free(tf);
    free(wb); free(wf); free(X); free(Y); free(ws);
}

/* The packed kernel (matmul_kernel.h) and the convert-then-sgemm path against a float64
 * product of the decoded weights (the _ref converters): f16, bf16, Q8_0 and Q4_K, shapes
 * with ragged edges (T not a multiple of the kernel's 6 rows; out not a multiple of 16 or
 * of a panel's rows; in not a multiple of a panel's columns, of 8, or shorter than one
 * panel), 1 to 3 threads, workspaces for whole panels, for one sliver of 16 rows, and
 * one too small for a sliver (which falls back). Bound: |y - ref| <= 2 in u sum_k
 * |x_k w_k|, u = 2^-24, which any order of f32 summation keeps (Higham's gamma_n); a
 * wrong index or packing error is of order sum |x w|. On a CPU with AVX2 and FMA the
 * kernel must take the products (dispatch by the CPU's features); elsewhere it must not. */
static void test_matmul_kernel(void **state) {
    (void)state;
    static const struct {
        sks_dtype dt;
        int T, out, in;
    } cs[] = {{SKS_DT_F16, 13, 130, 544}, {SKS_DT_F16, 1, 17, 40},   {SKS_DT_F16, 6, 16, 1030},
              {SKS_DT_BF16, 7, 300, 96},  {SKS_DT_Q8_0, 11, 45, 1056}, {SKS_DT_Q4_K, 5, 33, 768}};
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d; /* F16C: CPUID leaf 1, ECX bit 29 */
    const int cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
    const int cpu = 0;
#endif
    const int saved = openblas_get_num_threads();
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        const int T = cs[c].T, out = cs[c].out, in = cs[c].in;
        const sks_dtype_info *info = sks_dtype_get(cs[c].dt);
        const size_t n = (size_t)out * (size_t)in, nbytes = n / info->block * info->block_bytes;
        float *w0 = malloc(n * 4), *wf = malloc(n * 4), *X = malloc((size_t)T * in * 4);
        float *Y = malloc((size_t)T * out * 4), *ws = malloc(((size_t)1 << 18) * 4);
        double *ref = malloc((size_t)T * out * 8), *bound = malloc((size_t)T * out * 8);
        void *wq = malloc(nbytes);
        for (size_t i = 0; i < n; i++) w0[i] = (float)urand();
        for (int64_t i = 0; i < (int64_t)T * in; i++) X[i] = (float)urand();
        info->from_f32(w0, wq, n);
        info->to_f32_ref(wq, wf, n);
        for (int t = 0; t < T; t++)
            for (int o = 0; o < out; o++) {
                double sum = 0, mag = 0;
                for (int k = 0; k < in; k++) {
                    double p = (double)X[(size_t)t * in + k] * (double)wf[(size_t)o * in + k];
                    sum += p;
                    mag += fabs(p);
                }
                ref[(size_t)t * out + o] = sum;
                bound[(size_t)t * out + o] = 2.0 * in * 0x1p-24 * mag;
            }
        sks_tensor W = {"w", cs[c].dt, 2, {out, in}, wq, (uint64_t)nbytes, 0, 0, 0};
        const int64_t kc = in < SKS__MMK_KC ? in : SKS__MMK_KC;
        for (int nth = 1; nth <= 3; nth++) {
            openblas_set_num_threads(nth);
            /* per thread: whole panels, one sliver (16 (kc + T) + 8 kc), less than a sliver
             * (one row) */
            const size_t per[3] = {(size_t)1 << 16, (size_t)(24 * kc + 16 * T), (size_t)in};
            for (int v = 0; v < 3; v++)
                for (int on = 0; on <= 1; on++) {
                    sks__mmk_set_enabled(on);
                    assert_int_equal(sks__mmk_takes(&W, T, per[v]), on && cpu && v < 2);
                    for (int64_t i = 0; i < (int64_t)T * out; i++) Y[i] = NAN;
                    assert_int_equal(sks_matmul_wt(&W, X, T, Y, ws, per[v] * (size_t)nth), 0);
                    for (int64_t i = 0; i < (int64_t)T * out; i++)
                        if (!(fabs(Y[i] - ref[i]) <= bound[i]))
                            fail_msg("%s (%d, %d, %d), %d threads, workspace %d, kernel %d: Y[%lld] = %.9g, "
                                     "want %.9g +- %.3g", info->name, T, out, in, nth, v, on, (long long)i, Y[i],
                                     ref[i], bound[i]);
                }
        }
        sks__mmk_set_enabled(1);
        free(w0); free(wf); free(X); free(Y); free(ws); free(ref); free(bound); free(wq);
    }
    /* a NaN or Inf weight (f16: in the 8-column blocks or in the tail of a row of 36)
     * stops the kernel's product as it stops the other path's; allowed, it reaches Y */
    uint16_t *wh = malloc(64 * 36 * 2);
    float X[2 * 36], Y[2 * 64], *ws = malloc(((size_t)1 << 16) * 4);
    for (int i = 0; i < 64 * 36; i++) wh[i] = sks_f32_to_f16((float)urand());
    for (int i = 0; i < 2 * 36; i++) X[i] = (float)urand();
    sks_tensor W = {"nan_f16", SKS_DT_F16, 2, {64, 36}, wh, 64 * 36 * 2, 0, 0, 0};
    static const int at[2] = {50 * 36 + 3, 10 * 36 + 34};
    static const uint16_t bits[2] = {0x7e00, 0xfc00};
    for (int b = 0; b < 2; b++) {
        const uint16_t keep = wh[at[b]];
        wh[at[b]] = bits[b];
        for (int on = 0; on <= 1; on++) {
            sks__mmk_set_enabled(on);
            assert_int_equal(sks_matmul_wt(&W, X, 2, Y, ws, (size_t)1 << 16), SKS_ENONFINITE);
            assert_non_null(strstr(sks_last_error(), "nan_f16"));
            sks_nonfinite_allow(1);
            assert_int_equal(sks_matmul_wt(&W, X, 2, Y, ws, (size_t)1 << 16), 0);
            sks_nonfinite_allow(0);
            for (int t = 0; t < 2; t++)
                for (int o = 0; o < 64; o++) assert_true(!isfinite(Y[t * 64 + o]) == (o == at[b] / 36));
        }
        wh[at[b]] = keep;
    }
    sks__mmk_set_enabled(1);
    openblas_set_num_threads(saved);
    free(wh);
    free(ws);
}

static int abort_hook(void *ud, int b, const float *h, int T, int d) {
    (void)ud; (void)h; (void)T; (void)d;
    return b == 2 ? SKS_ENOCONV : 0;
}

static void test_errors(void **state) {
    (void)state;
    rmodel rm;
    rmodel_build(&rm, 0, 0, 0, 0, 1);
    sks_forward *f;
    assert_int_equal(sks_forward_new(rm.m, 0, &f), SKS_EARG);
    assert_int_equal(sks_forward_new(rm.m, 4, &f), 0);
    int32_t tok[5] = {1, 2, 3, 4, 5};
    assert_int_equal(sks_forward_run(f, tok, 5, SKS_FWD_CAUSAL, NULL, NULL, 0), SKS_EARG);
    tok[1] = 37;
    assert_int_equal(sks_forward_run(f, tok, 3, SKS_FWD_CAUSAL, NULL, NULL, 0), SKS_EARG);
    assert_non_null(strstr(sks_last_error(), "37"));
    tok[1] = -1;
    assert_int_equal(sks_forward_run(f, tok, 3, SKS_FWD_CAUSAL, NULL, NULL, 0), SKS_EARG);
    tok[1] = 2;
    sks_fwd_hooks hk = {0};
    hk.on_residual = abort_hook;
    assert_int_equal(sks_forward_run(f, tok, 3, SKS_FWD_CAUSAL, &hk, NULL, 0), SKS_ENOCONV);
    assert_int_equal(sks_forward_run(f, tok, 3, SKS_FWD_CAUSAL, NULL, NULL, 0), 0);
    sks_forward_free(f);
    sks_forward_free(NULL);
    rmodel_free(&rm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_form_uniform),
        cmocka_unit_test(test_rope_closed_form),
        cmocka_unit_test(test_random_llama_interleaved),
        cmocka_unit_test(test_random_llama_rotate_half_llama3),
        cmocka_unit_test(test_random_qwen2_bias),
        cmocka_unit_test(test_random_qwen3_qknorm),
        cmocka_unit_test(test_random_long_sequence),
        cmocka_unit_test(test_independent_mode),
        cmocka_unit_test(test_generate_kv_cache),
        cmocka_unit_test(test_matmul_chunks),
        cmocka_unit_test(test_matmul_kernel),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
