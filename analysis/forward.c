/* forward.c - instrumented f32 forward pass (SPEC section 2, contract in sks_forward.h).
 *
 * One layer, for T tokens at positions p0 .. p0+T-1 (p0 > 0 only while generating with
 * the KV cache):
 *   xn   = RMSNorm(h) * gamma_attn                      RMSNorm(x) = x / sqrt(mean(x^2) + eps)
 *   q    = xn W_Q^T (+ b_Q),  k = xn W_K^T (+ b_K),  v = xn W_V^T (+ b_V)
 *   q, k = RMSNorm per head * q_norm / k_norm            (Qwen3 only)
 *   q, k = RoPE(q, k) at the real positions               (pair order of the file)
 *   A_h  = softmax_j (q_h k_g^T / sqrt(dh)), causal       g = h / (H / Hkv)
 *   h   += (A_h v_g)_h W_O^T
 *   xn   = RMSNorm(h) * gamma_ffn
 *   h   += (SiLU(xn W_gate^T) * (xn W_up^T)) W_down^T
 * GPT-2 (sks_arch.norm_layer, pos_learned, ffn_plain, has_linear_bias): h starts as
 * E[tok] + P[pos]; both norms and the final norm are LayerNorms,
 * (x - mean) / sqrt(var + eps) * w + b; no RoPE; W_O, W_up and W_down add their biases;
 * the FFN is W_down gelu_tanh(W_up x + b_up) + b_down.
 * Every projection is one product over the T tokens (sks_matmul_wt: sgemm for f32
 * weights, else weights converted block by block on worker threads, multiplied by the
 * packed kernel of matmul_kernel.h or by sgemm); attention is two sgemms per head and
 * block of 128 query rows (Q K^T, then A V) with the softmax between them. RMS and
 * softmax sums accumulate in f64; RoPE angles are computed in f64. Attention heads,
 * SwiGLU and (for long sequences) the row-wise add / RMSNorm / RoPE run on worker
 * threads; f32 projections use OpenBLAS's own threads.
 */
#include "sks_forward.h"
#include "sks_moe.h"

#include "../linalg/sks_linalg.h"
#include "matmul_kernel.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Weight conversion workspace: 4 MiB of f32 rows per product thread (or one row when
 * rows are longer). Each block of converted rows is one sgemm that packs all T rows of X
 * again, so blocks of fewer rows than T cost more in packing than in conversion. */
#define SKS__WS_FLOATS ((size_t)1 << 20)
/* Weight rows per worker, at least, before sks_matmul_wt splits a matrix over threads. */
#define SKS__MM_MIN_ROWS 64
/* Query rows per attention block. */
#define SKS__QBLOCK 128
/* Worker threads for attention heads and SwiGLU (at most; also capped by OpenBLAS's
 * thread count and H), and the sequence length from which they are used. */
#define SKS__MAX_WORKERS 64
#define SKS__PAR_MIN_T 32
/* Row-wise elementwise work (add, RMSNorm, RoPE) is threaded only from this T on:
 * below it, starting the threads costs more than the work (measured at 16 cores). */
#define SKS__PAR_MIN_T_ROWS 256
/* With the probabilities hook, heads run in parallel only while n_workers (T, T)
 * matrices fit in this many floats (256 MiB). */
#define SKS__PROBS_PAR_FLOATS ((size_t)1 << 26)

struct sks_forward {
    const sks_model *m;
    sks_arch a;
    int max_T;
    int64_t d, f, H, Hkv, dh, qd, kd, V;
    float *x;        /* (max_T, d) residual stream h */
    float *xn;       /* (max_T, d) normalized block input */
    float *q;        /* (max_T, qd) queries */
    float *k;        /* (max_T, kd) keys (run mode) */
    float *v;        /* (max_T, kd) values (run mode) */
    float *att;      /* (max_T, qd) concatenated head outputs */
    float *y;        /* (max_T, d) block output before the residual add */
    float *gate;     /* (max_T, f) */
    float *up;       /* (max_T, f) */
    float *scores;   /* (max_T, max_T) one head's probabilities, only for on_attn_probs */
    float *q_pre;    /* (max_T, qd) lazily, for on_qk */
    float *k_pre;    /* (max_T, kd) lazily, for on_qk */
    float *vec;      /* (max(d, qd, kd), f with FFN biases) a norm weight or a bias */
    float *vec2;     /* (max(dh, kd)) second norm weight (k_norm) */
    float *nbias;    /* (d) the LayerNorm bias of the norm in f->vec (GPT-2), else unused */
    int window;      /* the current layer's sliding window (0: full causal) */
    float score_scale; /* 1 / sqrt(query_pre_attn_scalar or dh) */
    float *ws;       /* (ws_floats) weight rows converted to f32 */
    size_t ws_floats;
    float *rope_cos; /* (max_T, dh/2) cos(p * inv_freq_i) */
    float *rope_sin; /* (max_T, dh/2) */
    float *rope_cos_l, *rope_sin_l; /* the same for sliding layers with their own base (Gemma 3) */
    float *rope_cos_x, *rope_sin_x; /* longrope's long factors (sequences past the original length) */
    const float *glob_cos, *glob_sin; /* the current pass's tables of full-attention layers */
    const float *cur_cos, *cur_sin; /* the current layer's tables */
    int64_t rhalf;   /* rotated pairs per head: rope_dims / 2 */
    float *kc, *vc;  /* (L, max_T, kd) KV cache, allocated by the first generate */
    float *logit1;   /* (V) last-position logits while generating */
    int n_workers;   /* threads for attention heads and SwiGLU */
    int mm_workers;  /* threads for products over converted weights (sks__pass) */
    float *wscores;  /* (n_workers, SKS__QBLOCK, max_T) per-worker score blocks, lazily */
    float *pscores;  /* (n_workers, max_T, max_T) lazily, parallel heads with probabilities */
    sks_moe_ws *moe;             /* MoE layers' workspaces (NULL: a dense model) */
    const sks_fwd_kv_limit *kvl; /* the pass's key limit (NULL: full causal) */
    int kvl_layer;               /* layer being computed, for kvl->keep_sink */
    int ffn_from;                /* the layer's FFN runs on tokens [ffn_from, T) (sks__pass_run) */
};

/* ---- helpers ------------------------------------------------------------------------ */

/* x[i] <- expf(x[i] - sub), n entries. On CPUs with AVX2 and FMA, 8 at a time through
 * glibc's vector expf (libmvec, _ZGVdN8v_expf, within 1 ulp of exp like the scalar
 * expf, whose results it may differ from by that rounding); the tail and other CPUs
 * call expf. exp(-inf) = 0 either way. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(SKS_HAVE_MVEC)
#include <immintrin.h>
#define SKS__VEXP 1
__attribute__((target("avx2"))) __m256 _ZGVdN8v_expf(__m256 x);
static __attribute__((target("avx2,fma"))) int64_t sks__expf_shift_avx2(float *x, int64_t n, float sub) {
    const __m256 s = _mm256_set1_ps(sub);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _ZGVdN8v_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
    return i;
}
/* SiLU(z) up = z / (1 + exp(-z)) up over whole blocks of 8 (up NULL: 1); returns the count */
static __attribute__((target("avx2,fma"))) int64_t sks__silu_mul_avx2(float *g, const float *up, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 z = _mm256_loadu_ps(g + i);
        __m256 v = _mm256_div_ps(z, _mm256_add_ps(one, _ZGVdN8v_expf(_mm256_sub_ps(zero, z))));
        if (up) v = _mm256_mul_ps(v, _mm256_loadu_ps(up + i));
        _mm256_storeu_ps(g + i, v);
    }
    return i;
}
static int sks__cpu_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
#define SKS__VEXP 0
#endif

static void sks__expf_shift(float *x, int64_t n, float sub) {
    int64_t i = 0;
#if SKS__VEXP
    if (sks__cpu_avx2()) i = sks__expf_shift_avx2(x, n, sub);
#endif
    for (; i < n; i++) x[i] = expf(x[i] - sub);
}

/* Rows [r0, r1) of Y (T, out) = X W^T with a workspace ws of share floats: the packed
 * kernel where it takes W (matmul_kernel.h), else rows converted as many at a time as
 * ws holds, one sgemm per block. */
static int sks__matmul_rows(const sks_tensor *W, const float *X, int T, float *Y, int64_t r0, int64_t r1, float *ws,
                            size_t share) {
    const int64_t out = W->shape[0], in = W->shape[1], rows = (int64_t)(share / (size_t)in);
    const sks_qf_backend *be = sks_qf_backend_default();
    if (!be->gemm_wt && sks__mmk_takes(W, T, share)) return sks__mmk_rows(W, X, T, Y, r0, r1, ws, share);
    if (!be->gemm_wt && W->dtype == SKS_DT_F32 && !W->tstride) {
        if (r1 > r0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)(r1 - r0), (int)in, 1.0f, X, (int)in,
                        (const float *)W->data + r0 * in, (int)in, 0.0f, Y + r0, (int)out);
        return 0;
    }
    for (int64_t r = r0; r < r1; r += rows) {
        int64_t nr = r1 - r < rows ? r1 - r : rows;
        int rc = sks_tensor_rows_f32(W, r, nr, ws);
        if (rc) return rc;
        if (be->gemm_wt) {
            if ((rc = be->gemm_wt(SKS_QF_ELEM_F32, ws, (int)nr, (int)in, X, T, Y + r, (int)out))) return rc;
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, (int)nr, (int)in, 1.0f, X, (int)in, ws, (int)in,
                        0.0f, Y + r, (int)out);
        }
    }
    return 0;
}

static int sks__matmul_parallel(const sks_tensor *W, const float *X, int T, float *Y, float *ws, size_t ws_floats,
                                int nw);

/* The host conversion's non-finite check over all rows of W, a workspace at a time. */
static int sks__check_rows(const sks_tensor *W, float *ws, size_t ws_floats) {
    const int64_t out = W->shape[0], in = W->shape[1];
    int64_t rows = ws ? (int64_t)(ws_floats / (size_t)in) : 0;
    float *own = NULL;
    if (rows <= 0) {
        rows = 1;
        if (!(ws = own = sks_malloc_n((size_t)in, sizeof(float))))
            return sks_fail(SKS_ENOMEM, "%s: a row for the non-finite check", W->name);
    }
    int rc = 0;
    for (int64_t r = 0; r < out && !rc; r += rows) rc = sks_tensor_rows_f32(W, r, out - r < rows ? out - r : rows, ws);
    free(own);
    return rc;
}

/* Worker threads of sks_matmul_wt called from this thread: 0 = OpenBLAS's thread count.
 * A pass over converted weights sets it and runs OpenBLAS on one thread meanwhile
 * (sks__pass), so that every product is split here, f32 ones included. */
static _Thread_local int sks__mm_nw;

int sks_matmul_wt(const sks_tensor *W, const float *X, int T, float *Y, float *ws, size_t ws_floats) {
    /* Y (T, out) = X (T, in) W^T, W (out, in). Weights stored in another type are
     * converted block by block; on the CPU the rows are split over worker threads (as
     * many as OpenBLAS has), each converting its own rows into its share of ws and
     * multiplying them there (the packed AVX2 kernel of matmul_kernel.h where the CPU
     * has it, else a one-thread sgemm): conversion and products both run in parallel
     * and no OpenBLAS thread waits while the weights are converted. */
    if (!W || !X || !Y || T <= 0) return sks_fail(SKS_EARG, "sks_matmul_wt: bad arguments");
    if (W->ndim != 2) return sks_fail(SKS_ESHAPE, "%s: matrix expected, got a vector", W->name);
    const int64_t out = W->shape[0], in = W->shape[1];
    /* a device row (cuda) takes f32 / f16 / bf16 weights as stored and converts them
     * there; other encodings reach it through the CPU dequantizer, block by block */
    const sks_qf_backend *be = sks_qf_backend_default();
    const int elem = W->dtype == SKS_DT_F32 ? SKS_QF_ELEM_F32 : W->dtype == SKS_DT_F16 ? SKS_QF_ELEM_F16
                   : W->dtype == SKS_DT_BF16 ? SKS_QF_ELEM_BF16 : -1;
    /* a transposed view (GPT-2's Conv1D) is not rows in memory: its rows are gathered */
    if (be->gemm_wt && elem >= 0 && !W->tstride) {
        int rc = be->gemm_wt(elem | (W->frozen ? SKS_QF_ELEM_KEEP : 0), W->data, (int)out, (int)in, X, T, Y, (int)out);
        /* the device met NaN or Inf in the stored weights: the host's check decides, as
         * for a product made here (an error naming the tensor, or --allow-nonfinite, in
         * which case the device's Y is the product of the weights as they are) */
        return rc == SKS_ENONFINITE ? sks__check_rows(W, ws, ws_floats) : rc;
    }
    const int f32 = !be->gemm_wt && W->dtype == SKS_DT_F32 && !W->tstride;
    if (f32 && sks__mm_nw <= 1) return sks__matmul_rows(W, X, T, Y, 0, out, NULL, 0);
    int64_t rows = f32 ? out : ws ? (int64_t)(ws_floats / (size_t)in) : 0;
    if (rows <= 0) return sks_fail(SKS_EARG, "%s: workspace of %zu floats holds no row of %lld", W->name, ws_floats,
                                   (long long)in);
    /* workers: OpenBLAS's thread count, each with at least one row of ws and
     * SKS__MM_MIN_ROWS rows of W */
    int64_t nw = be->gemm_wt ? 1 : sks__mm_nw ? sks__mm_nw : openblas_get_num_threads();
    if (nw > SKS__MAX_WORKERS) nw = SKS__MAX_WORKERS;
    if (!f32 && nw > rows) nw = rows;
    if (nw > out / SKS__MM_MIN_ROWS) nw = out / SKS__MM_MIN_ROWS;
    if (nw > 1) return sks__matmul_parallel(W, X, T, Y, ws, ws_floats, (int)nw);
    return sks__matmul_rows(W, X, T, Y, 0, out, ws, ws_floats);
}

/* out[t, :] = x[t, :] / sqrt(mean_c x[t,c]^2 + eps) * g, for T rows of n; x, out (T, n)
 * with row strides ldx, ldo (may alias). Sum of squares in f64. */
static void sks__rmsnorm(const float *x, int64_t ldx, float *out, int64_t ldo, const float *g, int64_t T, int64_t n,
                         double eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldx;
        float *orow = out + t * ldo;
        double ss = 0;
        for (int64_t c = 0; c < n; c++) ss += (double)xr[c] * (double)xr[c];
        double inv = 1.0 / sqrt(ss / (double)n + eps);
        for (int64_t c = 0; c < n; c++) orow[c] = (float)((double)xr[c] * inv) * g[c];
    }
}


/* LayerNorm (GPT-2): out[t, :] = (x[t, :] - mu) / sqrt(var + eps) * g + b, mu and var
 * the mean and (biased) variance of the row, in f64. Same layout rules as above. */
static void sks__layernorm(const float *x, int64_t ldx, float *out, int64_t ldo, const float *g, const float *b, int64_t T,
                           int64_t n, double eps) {
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * ldx;
        float *orow = out + t * ldo;
        double s = 0, ss = 0;
        for (int64_t c = 0; c < n; c++) s += (double)xr[c];
        const double mu = s / (double)n;
        for (int64_t c = 0; c < n; c++) ss += ((double)xr[c] - mu) * ((double)xr[c] - mu);
        const double inv = 1.0 / sqrt(ss / (double)n + eps);
        for (int64_t c = 0; c < n; c++) orow[c] = (float)(((double)xr[c] - mu) * inv) * g[c] + b[c];
    }
}

/* The family's norm of the sublayer inputs and the final norm: LayerNorm with the bias
 * in f->nbias (GPT-2), else RMSNorm. */
static void sks__norm_in(const sks_forward *f, const float *x, int64_t ldx, float *out, int64_t ldo, const float *g,
                         int64_t T) {
    if (f->a.norm_layer) sks__layernorm(x, ldx, out, ldo, g, f->nbias, T, f->d, f->a.norm_eps);
    else sks__rmsnorm(x, ldx, out, ldo, g, T, f->d, f->a.norm_eps);
}

/* A norm's gain: its weight, or 1 + w (f32) for Gemma's (1 + w) norms. */
static int sks__gain(const sks_forward *f, sks_role role, int layer, float *out) {
    const sks_tensor *t = sks_model_tensor(f->m, role, layer);
    if (!t) return sks_fail(SKS_ENOTFOUND, "forward: missing %s of layer %d", sks_role_name(role), layer);
    return sks_model_norm_gain(f->m, role, layer, out, sks_tensor_rows(t));
}

/* The gain of an input or final norm into f->vec and, for a LayerNorm, its bias into
 * f->nbias. */
static int sks__norm_load(sks_forward *f, sks_role role, int layer) {
    int rc = sks__gain(f, role, layer, f->vec);
    if (rc || !f->a.norm_layer) return rc;
    sks_role br = role == SKS_ROLE_ATTN_NORM ? SKS_ROLE_ATTN_NORM_B
                : role == SKS_ROLE_FFN_NORM ? SKS_ROLE_FFN_NORM_B : SKS_ROLE_FINAL_NORM_B;
    const sks_tensor *b = sks_model_tensor(f->m, br, layer);
    if (!b) return sks_fail(SKS_ENOTFOUND, "forward: missing %s of layer %d", sks_role_name(br), layer);
    return sks_tensor_rows_f32(b, 0, 1, f->nbias);
}

static const sks_tensor *sks__mat(const sks_model *m, sks_role role, int layer) {
    const sks_tensor *t = sks_model_tensor(m, role, layer);
    if (!t) sks_fail(SKS_ENOTFOUND, "forward: missing %s of layer %d", sks_role_name(role), layer);
    return t;
}

/* Add an optional bias (n) to every row of Y (T, ld). */
static int sks__add_bias(sks_forward *f, sks_role role, int layer, float *Y, int64_t T, int64_t ld, int64_t n) {
    const sks_tensor *b = sks_model_tensor(f->m, role, layer);
    if (!b) return 0;
    int rc = sks_tensor_rows_f32(b, 0, 1, f->vec);
    if (rc) return rc;
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < n; c++) Y[t * ld + c] += f->vec[c];
    return 0;
}

/* inv_freq_i = theta^(-2i/dh), with the Llama 3 or linear scaling of the arch:
 * Llama 3: wavelen = 2 pi / inv_freq; wavelen < orig/high_ff: kept; wavelen > orig/low_ff:
 * inv_freq / factor; between: (1 - s) inv_freq / factor + s inv_freq with
 * s = (orig / wavelen - low_ff) / (high_ff - low_ff). Linear: inv_freq / factor. */
static double sks__inv_freq(const sks_arch *a, double theta, int scaled, int i) {
    int rd = a->rope_dims > 0 ? a->rope_dims : a->head_dim;
    double inv = pow(theta, -2.0 * (double)i / (double)rd);
    if (!scaled) return inv;
    /* longrope: scaled = 1 short factors, 2 long factors */
    if (a->rope_scaling == SKS_ROPE_SCALING_LONGROPE && i < a->rope_n_factors)
        return inv / (scaled == 2 ? a->rope_long[i] : a->rope_short[i]);
    if (a->rope_scaling == SKS_ROPE_SCALING_LINEAR && a->rope_factor > 0) return inv / a->rope_factor;
    if (a->rope_scaling == SKS_ROPE_SCALING_LLAMA3 && a->rope_factor > 0) {
        double orig = (double)a->rope_original_max_pos;
        double lo = a->rope_low_freq_factor, hi = a->rope_high_freq_factor;
        double wavelen = 2.0 * M_PI / inv;
        double low_wl = orig / lo, high_wl = orig / hi;
        if (wavelen < high_wl) return inv;
        if (wavelen > low_wl) return inv / a->rope_factor;
        double s = (orig / wavelen - lo) / (hi - lo);
        return (1.0 - s) * inv / a->rope_factor + s * inv;
    }
    return inv;
}

/* Rotate every head of X (T, n_heads * dh) at positions p0 + t. Interleaved order:
 * pairs (2i, 2i+1); rotate-half order: pairs (i, i + r/2), over the first r = rope_dims
 * dimensions of each head (the rest pass unrotated).
 * (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos), angle = p inv_freq_i. */
static void sks__rope(const sks_forward *f, float *X, int64_t T, int64_t n_heads, int p0) {
    const int64_t dh = f->dh, half = f->rhalf, ld = n_heads * dh;
    const int inter = f->a.rope_interleaved;
    for (int64_t t = 0; t < T; t++) {
        const float *cs = f->cur_cos + (int64_t)(p0 + t) * half, *sn = f->cur_sin + (int64_t)(p0 + t) * half;
        for (int64_t h = 0; h < n_heads; h++) {
            float *xh = X + t * ld + h * dh;
            for (int64_t i = 0; i < half; i++) {
                int64_t i0 = inter ? 2 * i : i, i1 = inter ? 2 * i + 1 : i + half;
                float x0 = xh[i0], x1 = xh[i1];
                xh[i0] = x0 * cs[i] - x1 * sn[i];
                xh[i1] = x0 * sn[i] + x1 * cs[i];
            }
        }
    }
}

/* rotated pairs per head: rope_dims / 2 (the whole head without rope_dims) */
static size_t sks__rope_half(const sks_arch *a) {
    return (size_t)((a->rope_dims > 0 ? a->rope_dims : a->head_dim) / 2);
}

/* cos / sin (T, dh/2) of p inv_freq_i for base theta (scaled: with the arch's scaling). */
static void sks__rope_table(const sks_arch *a, double theta, int scaled, size_t T, float *cs, float *sn) {
    size_t half = sks__rope_half(a);
    const double af = scaled && a->rope_scaling == SKS_ROPE_SCALING_LONGROPE && a->rope_attn_factor > 0
                          ? a->rope_attn_factor : 1.0;
    for (size_t i = 0; i < half; i++) {
        double inv = sks__inv_freq(a, theta, scaled, (int)i);
        for (size_t p = 0; p < T; p++) {
            double ang = (double)p * inv;
            cs[p * half + i] = (float)(af == 1.0 ? cos(ang) : af * cos(ang));
            sn[p * half + i] = (float)(af == 1.0 ? sin(ang) : af * sin(ang));
        }
    }
}

/* ---- construction ------------------------------------------------------------------- */

/* Floats of the conversion workspace: SKS__WS_FLOATS per thread of the products
 * (OpenBLAS's thread count, at most SKS__MAX_WORKERS), 8 SKS__WS_FLOATS (32 MiB) at
 * most, and at least one row of maxin per thread; never more than the largest matrix
 * (rows up to max(V, f, H dh, d, experts) of maxin), which small models need. */
static size_t sks__ws_floats(const sks_arch *a, int64_t maxin) {
    size_t nw = (size_t)openblas_get_num_threads();
    if (nw > SKS__MAX_WORKERS) nw = SKS__MAX_WORKERS;
    if (nw < 1) nw = 1;
    size_t n = SKS__WS_FLOATS * (nw < 8 ? nw : 8);
    if (n < (size_t)maxin * nw) n = (size_t)maxin * nw;
    int64_t rows = a->vocab_size;
    const int64_t other[6] = {a->d_ffn, (int64_t)a->n_heads * a->head_dim, a->d_model, a->d_ffn_expert, a->d_ffn_shared,
                              a->n_experts};
    for (int i = 0; i < 6; i++)
        if (other[i] > rows) rows = other[i];
    const size_t whole = (size_t)rows * (size_t)maxin;
    return n < whole ? n : whole > (size_t)maxin ? whole : (size_t)maxin;
}

/* A pair of tables as sks__rope_table fills them, allocated here (the caller frees them,
 * also after a failure). */
static int sks__rope_alloc(const sks_arch *a, double theta, int scaled, size_t T, float **cs, float **sn) {
    size_t half = sks__rope_half(a);
    *cs = sks_malloc_n(T, half * sizeof(float));
    *sn = sks_malloc_n(T, half * sizeof(float));
    if (!*cs || !*sn) return sks_fail(SKS_ENOMEM, "forward: out of memory for RoPE tables");
    sks__rope_table(a, theta, scaled, T, *cs, *sn);
    return 0;
}

void sks_forward_free(sks_forward *f) {
    if (!f) return;
    sks_moe_ws_free(f->moe);
    SKS_FREE_ALL(f->x, f->xn, f->q, f->k, f->v, f->att, f->y, f->gate, f->up, f->scores, f->q_pre, f->k_pre,
                 f->vec, f->vec2, f->nbias, f->ws, f->rope_cos, f->rope_sin, f->rope_cos_l, f->rope_sin_l,
                 f->rope_cos_x, f->rope_sin_x, f->kc, f->vc, f->logit1, f->wscores, f->pscores, f);
}

/* 1 if some layer of a has a dense FFN (the (T, f) gate / up buffers are needed). */
static int sks__any_dense(const sks_arch *a) {
    for (int l = 0; l < a->n_layers; l++)
        if (!sks_arch_layer_moe(a, l)) return 1;
    return 0;
}

int sks_forward_new(const sks_model *m, int max_T, sks_forward **out) {
    *out = NULL;
    if (!m || max_T <= 0) return sks_fail(SKS_EARG, "sks_forward_new: max_T must be positive (got %d)", max_T);
    const sks_arch *a = sks_model_arch(m);
    int rc = sks_arch_validate(a);
    if (rc) return rc;
    if (a->head_dim % 2 && !a->pos_learned) return sks_fail(SKS_EUNSUPPORTED, "forward: odd head_dim %d (RoPE needs pairs)", a->head_dim);
    sks_forward *f = calloc(1, sizeof *f);
    if (!f) return sks_fail(SKS_ENOMEM, "forward: out of memory");
    f->m = m;
    f->a = *a;
    f->max_T = max_T;
    f->d = a->d_model;
    f->f = a->d_ffn;
    f->H = a->n_heads;
    f->Hkv = a->n_kv_heads;
    f->dh = a->head_dim;
    f->qd = f->H * f->dh;
    f->kd = f->Hkv * f->dh;
    f->V = a->vocab_size;
    size_t T = (size_t)max_T;
    int64_t vmax = f->d > f->qd ? f->d : f->qd;
    if (a->has_linear_bias && f->f > vmax) vmax = f->f; /* b_up (GPT-2) */
    f->x = sks_malloc_n(T, (size_t)f->d * sizeof(float));
    f->xn = sks_malloc_n(T, (size_t)f->d * sizeof(float));
    f->q = sks_malloc_n(T, (size_t)f->qd * sizeof(float));
    f->k = sks_malloc_n(T, (size_t)f->kd * sizeof(float));
    f->v = sks_malloc_n(T, (size_t)f->kd * sizeof(float));
    f->att = sks_malloc_n(T, (size_t)f->qd * sizeof(float));
    f->y = sks_malloc_n(T, (size_t)f->d * sizeof(float));
    const int dense = sks__any_dense(a);
    f->gate = dense ? sks_malloc_n(T, (size_t)f->f * sizeof(float)) : NULL;
    f->up = dense ? sks_malloc_n(T, (size_t)f->f * sizeof(float)) : NULL;
    f->vec = sks_malloc_n((size_t)vmax, sizeof(float));
    f->vec2 = sks_malloc_n((size_t)(f->kd > f->dh ? f->kd : f->dh), sizeof(float));
    f->nbias = sks_malloc_n((size_t)f->d, sizeof(float));
    f->score_scale = (float)(1.0 / sqrt(a->query_pre_attn_scalar > 0 ? a->query_pre_attn_scalar : (double)f->dh));
    int64_t maxin = f->d > f->f ? f->d : f->f;
    if (f->qd > maxin) maxin = f->qd;
    if (a->d_ffn_expert > maxin) maxin = a->d_ffn_expert;
    if (a->d_ffn_shared > maxin) maxin = a->d_ffn_shared;
    f->ws_floats = sks__ws_floats(a, maxin);
    f->ws = sks_malloc_n(f->ws_floats, sizeof(float));
    if (a->rope_dims < 0 || a->rope_dims > a->head_dim || a->rope_dims % 2) {
        sks_forward_free(f);
        return sks_fail(SKS_EUNSUPPORTED, "forward: rope_dims %d does not fit head_dim %d", a->rope_dims, a->head_dim);
    }
    size_t half = sks__rope_half(a);
    f->rhalf = (int64_t)half;
    f->rope_cos = sks_malloc_n(T, half * sizeof(float));
    f->rope_sin = sks_malloc_n(T, half * sizeof(float));
    f->logit1 = sks_malloc_n((size_t)f->V, sizeof(float));
    f->n_workers = openblas_get_num_threads();
    if (f->n_workers > SKS__MAX_WORKERS) f->n_workers = SKS__MAX_WORKERS;
    f->mm_workers = f->n_workers;
    if (f->n_workers > f->H) f->n_workers = (int)f->H;
    if (f->n_workers < 1) f->n_workers = 1;
    if (a->n_experts > 0 && (rc = sks_moe_ws_new(a, max_T, &f->moe))) {
        sks_forward_free(f);
        return rc;
    }
    if (!f->x || !f->xn || !f->q || !f->k || !f->v || !f->att || !f->y || (dense && (!f->gate || !f->up)) ||
        !f->vec || !f->vec2 || !f->nbias || !f->ws || !f->rope_cos || !f->rope_sin || !f->logit1) {
        sks_forward_free(f);
        return sks_fail(SKS_ENOMEM, "forward: out of memory for workspaces of %d tokens", max_T);
    }
    sks__rope_table(a, a->rope_theta, 1, T, f->rope_cos, f->rope_sin);
    f->cur_cos = f->glob_cos = f->rope_cos;
    f->cur_sin = f->glob_sin = f->rope_sin;
    /* LongRoPE's long-context table; the local-attention layers' own theta */
    if ((a->rope_scaling == SKS_ROPE_SCALING_LONGROPE && a->rope_original_max_pos > 0 &&
         max_T > a->rope_original_max_pos &&
         (rc = sks__rope_alloc(a, a->rope_theta, 2, T, &f->rope_cos_x, &f->rope_sin_x))) ||
        (a->rope_theta_local > 0 && a->rope_theta_local != a->rope_theta &&
         (rc = sks__rope_alloc(a, a->rope_theta_local, 0, T, &f->rope_cos_l, &f->rope_sin_l)))) {
        sks_forward_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* The allocations of sks_forward_new above (the memory model reads this). */
uint64_t sks_forward_bytes(const sks_arch *a, int max_T) {
    const uint64_t T = (uint64_t)(max_T > 0 ? max_T : 0), d = (uint64_t)a->d_model, f = (uint64_t)a->d_ffn;
    const uint64_t qd = (uint64_t)a->n_heads * (uint64_t)a->head_dim, kd = (uint64_t)a->n_kv_heads * a->head_dim;
    uint64_t maxin = d > f ? d : f;
    if (qd > maxin) maxin = qd;
    if ((uint64_t)a->d_ffn_expert > maxin) maxin = (uint64_t)a->d_ffn_expert;
    if ((uint64_t)a->d_ffn_shared > maxin) maxin = (uint64_t)a->d_ffn_shared;
    uint64_t b = T * (3 * d + 2 * qd + 2 * kd + (sks__any_dense(a) ? 2 * f : 0)) * 4; /* x, xn, y, q, att, k, v, gate, up */
    b += sks_moe_ws_bytes(a, max_T);                            /* MoE routing and one expert's buffers */
    uint64_t vmax = d > qd ? d : qd;
    if (a->has_linear_bias && f > vmax) vmax = f;
    b += (vmax + (kd > (uint64_t)a->head_dim ? kd : (uint64_t)a->head_dim) + d) * 4; /* vec, vec2, nbias */
    b += (uint64_t)sks__ws_floats(a, (int64_t)maxin) * 4; /* weight rows in f32 */
    /* RoPE tables: one pair, one more for sliding layers with their own base (Gemma 3)
     * and one for longrope's long factors */
    uint64_t nt = 1 + (a->rope_theta_local > 0 && a->rope_theta_local != a->rope_theta) +
                  (a->rope_scaling == SKS_ROPE_SCALING_LONGROPE && a->rope_original_max_pos > 0 &&
                   max_T > a->rope_original_max_pos);
    b += nt * T * (uint64_t)((a->rope_dims > 0 ? a->rope_dims : a->head_dim) / 2) * 2 * 4;
    b += (uint64_t)a->vocab_size * 4;                         /* logits of one row */
    return b;
}

/* ---- one pass ----------------------------------------------------------------------- */

/* Softmax over rows i0..i1-1 (S points at row i0, row stride ld), row i restricted to
 * j0 <= j <= p0 + i, j0 = p0 + i - fam_window + 1 with the family's sliding window (else
 * 0); entries outside, up to Tk, are set to 0. With a key window (window > 0) the keys
 * [n_sink, p0 + i + 1 - window) are masked too (set to 0, left out of the max and the
 * sum). With a softcap c the scores first become c tanh(s / c). Max-subtracted; exp in
 * f32 (sks__expf_shift), the sum in f64. */
static void sks__softmax_causal(float *S, int64_t ld, int64_t i0, int64_t i1, int64_t Tk, int p0, int window,
                                int n_sink, int fam_window, float softcap) {
    for (int64_t i = i0; i < i1; i++) {
        float *r = S + (i - i0) * ld;
        int64_t n = p0 + i + 1, j0 = fam_window > 0 && n > fam_window ? n - fam_window : 0;
        if (softcap > 0)
            for (int64_t j = j0; j < n; j++) r[j] = softcap * tanhf(r[j] / softcap);
        int64_t lo = n, hi = n; /* masked keys [lo, hi) */
        if (window > 0 && n - window > n_sink) {
            lo = n_sink;
            hi = n - window;
            for (int64_t j = lo; j < hi; j++) r[j] = -INFINITY;
        }
        float mx = -INFINITY;
        for (int64_t j = j0; j < n; j++)
            if (r[j] > mx) mx = r[j];
        /* masked keys hold -inf: exp gives 0 (mx is finite: key n - 1 is never masked) */
        sks__expf_shift(r + j0, n - j0, mx);
        double sum = 0;
        for (int64_t j = j0; j < n; j++) sum += r[j];
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < j0; j++) r[j] = 0.0f;
        for (int64_t j = j0; j < n; j++) r[j] *= inv;
        for (int64_t j = n; j < Tk; j++) r[j] = 0.0f;
    }
}

/* Head h of causal attention over T queries at positions p0.. and keys/values kc, vc
 * (p0+T, kd). Query rows in blocks of SKS__QBLOCK: block [i0, i1) needs keys
 * [0, p0 + i1) only, which skips most of the masked upper triangle.
 *   S = Q_h K_g^T / sqrt(dh),  A = softmax(S) (causal),  out_h = A V_g
 * (the scale is query_pre_attn_scalar^-1/2 where the family has one; softcap and
 * sliding window as the layer says).
 * full: S is (T, p0+T) and keeps every block (for the probabilities hook); otherwise
 * S is a (SKS__QBLOCK, p0+T) scratch reused by every block. */
static void sks__attn_head(const sks_forward *f, int64_t h, int T, int p0, const float *kc, const float *vc, float *S,
                           int full) {
    const int64_t qd = f->qd, kd = f->kd, dh = f->dh, g = h / (f->H / f->Hkv), Tk = (int64_t)p0 + T;
    const float scale = f->score_scale;
    const sks_fwd_kv_limit *kl = f->kvl;
    const int window = kl ? kl->window : 0;
    const int n_sink = kl && (!kl->keep_sink || kl->keep_sink[(int64_t)f->kvl_layer * f->H + h]) ? kl->n_sink : 0;
    for (int64_t i0 = 0; i0 < T; i0 += SKS__QBLOCK) {
        int64_t i1 = i0 + SKS__QBLOCK < T ? i0 + SKS__QBLOCK : T, nk = p0 + i1;
        float *Sb = full ? S + i0 * Tk : S;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(i1 - i0), (int)nk, (int)dh, scale,
                    f->q + i0 * qd + h * dh, (int)qd, kc + g * dh, (int)kd, 0.0f, Sb, (int)Tk);
        sks__softmax_causal(Sb, Tk, i0, i1, Tk, p0, window, n_sink, f->window, (float)f->a.attn_softcap);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(i1 - i0), (int)dh, (int)nk, 1.0f, Sb, (int)Tk,
                    vc + g * dh, (int)kd, 0.0f, f->att + i0 * qd + h * dh, (int)qd);
    }
}

/* ---- a small parallel-for over worker threads ---------------------------------------- */

typedef struct sks__job {
    void (*fn)(struct sks__job *job, int w, int nw);
    int w, nw;
    sks_forward *f;
    int T, p0;
    const float *kc, *vc;
    int64_t h0;     /* first head of a batch (probabilities path) */
    float *X;       /* row jobs: residual (add/norm) or keys (RoPE) */
    const float *Y; /* row jobs: block output added to X, or NULL */
    const float *g; /* row jobs: norm weight (then xn = RMSNorm(X) * g), or NULL */
    struct sks__mm *mm; /* sks_matmul_wt's split, or NULL */
} sks__job;

static void *sks__job_main(void *arg) {
    sks__job *j = arg;
    j->fn(j, j->w, j->nw);
    return NULL;
}

/* Run fn(w, nw) for w = 0..nw-1, worker 0 in the calling thread. OpenBLAS is set to one
 * thread meanwhile (the workers' sgemm calls run in their own threads), then restored.
 * A worker whose thread cannot be created runs in the calling thread afterwards. */
static void sks__parallel(const sks__job *tmpl, int nw) {
    if (nw <= 1) {
        sks__job j = *tmpl;
        j.w = 0;
        j.nw = 1;
        j.fn(&j, 0, 1);
        return;
    }
    sks__job jobs[SKS__MAX_WORKERS];
    pthread_t th[SKS__MAX_WORKERS];
    int started[SKS__MAX_WORKERS] = {0};
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    for (int w = 0; w < nw; w++) {
        jobs[w] = *tmpl;
        jobs[w].w = w;
        jobs[w].nw = nw;
    }
    for (int w = 1; w < nw; w++) started[w] = pthread_create(&th[w], NULL, sks__job_main, &jobs[w]) == 0;
    jobs[0].fn(&jobs[0], 0, nw);
    for (int w = 1; w < nw; w++) {
        if (started[w]) pthread_join(th[w], NULL);
        else jobs[w].fn(&jobs[w], w, nw);
    }
    openblas_set_num_threads(saved);
}

/* sks_matmul_wt over worker threads: blocks of `block` rows handed out in order from an
 * atomic counter (a thread that the machine's load holds back takes fewer), each
 * converted into the worker's ws_floats / nw floats of the workspace; errors come back
 * with their message. The blocks are the same whichever thread takes them, so the
 * result does not depend on the schedule. */
typedef struct sks__mm {
    const sks_tensor *W;
    const float *X;
    float *Y, *ws;
    int T;
    size_t per;
    int64_t block;
    atomic_llong next;
    int rc[SKS__MAX_WORKERS];
    char err[SKS__MAX_WORKERS][256];
} sks__mm;

static void sks__matmul_worker(sks__job *j, int w, int nw) {
    (void)nw;
    sks__mm *mm = j->mm;
    const int64_t out = mm->W->shape[0];
    float *ws = mm->ws ? mm->ws + (size_t)w * mm->per : NULL;
    for (;;) {
        const int64_t r = (int64_t)atomic_fetch_add(&mm->next, (long long)mm->block);
        if (r >= out) break;
        const int64_t r1 = out - r < mm->block ? out : r + mm->block;
        if ((mm->rc[w] = sks__matmul_rows(mm->W, mm->X, mm->T, mm->Y, r, r1, ws, mm->per))) {
            snprintf(mm->err[w], sizeof mm->err[w], "%s", sks_last_error());
            break;
        }
    }
}

static int sks__matmul_parallel(const sks_tensor *W, const float *X, int T, float *Y, float *ws, size_t ws_floats,
                                int nw) {
    /* about 4 blocks per thread, at least SKS__MM_MIN_ROWS rows, in multiples of 16 rows
     * (the kernels' unrolling); for sgemm at most what a worker's share of ws holds (each
     * sgemm packs X again), for the packed kernel at most one panel (SKS__MMK_NB rows:
     * smaller blocks cost it nothing and balance the threads better at the end) */
    const int64_t out = W->shape[0];
    const int kern = sks__mmk_takes(W, T, ws_floats / (size_t)nw);
    const int64_t wrows = kern ? SKS__MMK_NB
                        : ws && W->dtype != SKS_DT_F32 ? (int64_t)(ws_floats / (size_t)nw) / W->shape[1] : out;
    int64_t block = (out + 4 * nw - 1) / (4 * nw);
    if (block < SKS__MM_MIN_ROWS) block = SKS__MM_MIN_ROWS;
    block = (block + 15) / 16 * 16;
    if (block > wrows) block = wrows;
    sks__mm mm = {W, X, Y, ws, T, ws_floats / (size_t)nw, block, 0, {0}, {{0}}};
    sks__job j = {sks__matmul_worker, 0, 1, NULL, T, 0, NULL, NULL, 0, NULL, NULL, NULL, &mm};
    sks__parallel(&j, nw);
    for (int w = 0; w < nw; w++)
        if (mm.rc[w]) return sks_fail(mm.rc[w], "%s", mm.err[w]);
    return 0;
}

static void sks__attn_worker(sks__job *j, int w, int nw) {
    sks_forward *f = j->f;
    float *S = f->wscores + (size_t)w * SKS__QBLOCK * (size_t)f->max_T;
    for (int64_t h = w; h < f->H; h += nw) sks__attn_head(f, h, j->T, j->p0, j->kc, j->vc, S, 0);
}

/* head h0 + w into its own (T, T) matrix, kept for the probabilities hook */
static void sks__attn_probs_worker(sks__job *j, int w, int nw) {
    (void)nw;
    sks_forward *f = j->f;
    int64_t h = j->h0 + w;
    if (h < f->H) sks__attn_head(f, h, j->T, j->p0, j->kc, j->vc, f->pscores + (size_t)w * f->max_T * f->max_T, 1);
}

/* rows [T w / nw, T (w+1) / nw): X += Y (if Y), then xn = RMSNorm(X) * g (if g) */
static void sks__addnorm_worker(sks__job *j, int w, int nw) {
    sks_forward *f = j->f;
    const int64_t d = f->d, a = (int64_t)j->T * w / nw, b = (int64_t)j->T * (w + 1) / nw;
    if (j->Y)
        for (int64_t i = a * d; i < b * d; i++) j->X[i] += j->Y[i];
    if (j->g) sks__norm_in(f, j->X + a * d, d, f->xn + a * d, d, j->g, b - a);
}

/* RoPE of rows [T w / nw, T (w+1) / nw) of the queries and of the keys j->X */
static void sks__rope_worker(sks__job *j, int w, int nw) {
    sks_forward *f = j->f;
    const int64_t a = (int64_t)j->T * w / nw, b = (int64_t)j->T * (w + 1) / nw;
    sks__rope(f, f->q + a * f->qd, b - a, f->H, j->p0 + (int)a);
    sks__rope(f, j->X + a * f->kd, b - a, f->Hkv, j->p0 + (int)a);
}

/* Non-finite activations stop the pass where they first appear: block b of the residual
 * stream (0 embeddings, 2l+1 after attention of layer l, 2l+2 after its FFN), first
 * token in order. A NaN spreads to every later token through attention, so the first
 * (block, token) is the one that says where to look. */
static int sks__check_finite(const float *X, int T, int64_t d, int b, int p0) {
    for (int t = 0; t < T; t++)
        for (int64_t c = 0; c < d; c++) {
            float v = X[(int64_t)t * d + c];
            if (!isfinite(v)) {
                char where[48];
                if (b == 0) snprintf(where, sizeof where, "the embeddings");
                else snprintf(where, sizeof where, "the %s of layer %d", b % 2 ? "attention" : "FFN", (b - 1) / 2);
                return sks_fail(SKS_ENONFINITE,
                                "forward: non-finite activation (%s) at block %d (after %s), token %d, channel %lld",
                                isnan(v) ? "NaN" : "Inf", b, where, p0 + t, (long long)c);
            }
        }
    return 0;
}

/* After a non-finite activation at block b: the stored weights that feed that block
 * (the embeddings for block 0, else every tensor of the layer, experts included),
 * converted row by row through the checked path. f32 weights are multiplied where they
 * lie, unchecked; a damaged one is then named here, with the block, instead of leaving
 * only the activation. Returns rc unchanged when no tensor is at fault (or
 * --allow-nonfinite accepts them). Only on the failure path. */
static int sks__explain_nonfinite(const sks_forward *f, int b, int rc) {
    if (rc != SKS_ENONFINITE) return rc;
    char act[512];
    snprintf(act, sizeof act, "%s", sks_last_error());
    const sks_arch *a = sks_model_arch(f->m);
    const int layer = b == 0 ? -1 : (b - 1) / 2;
    for (int role = 0; role < SKS_ROLE_COUNT; role++) {
        const int global = role == SKS_ROLE_EMBED || role == SKS_ROLE_POS_EMBED || role == SKS_ROLE_FINAL_NORM ||
                           role == SKS_ROLE_FINAL_NORM_B || role == SKS_ROLE_LM_HEAD;
        if (global != (layer < 0) || (layer < 0 && role != SKS_ROLE_EMBED && role != SKS_ROLE_POS_EMBED)) continue;
        const int per_expert = sks_role_is_per_expert((sks_role)role), ne = per_expert ? a->n_experts : 1;
        for (int e = 0; e < ne; e++) {
            const sks_tensor *t = per_expert ? sks_model_expert(f->m, (sks_role)role, layer, e)
                                             : sks_model_tensor(f->m, (sks_role)role, layer < 0 ? 0 : layer);
            if (!t) continue;
            const int64_t rows = t->ndim == 2 ? sks_tensor_rows(t) : 1, cols = sks_tensor_cols(t);
            float *row = cols > 0 ? sks_malloc_n((size_t)cols, sizeof *row) : NULL;
            if (!row) continue;
            int trc = 0;
            for (int64_t r = 0; r < rows && !trc; r++) trc = sks_tensor_rows_f32(t, r, 1, row);
            free(row);
            if (trc == SKS_ENONFINITE) {
                char w[512];
                snprintf(w, sizeof w, "%s", sks_last_error());
                return sks_fail(SKS_ENONFINITE, "%s; %s", act, w);
            }
        }
    }
    sks_fail(SKS_ENONFINITE, "%s", act);
    return rc;
}

/* X += Y, then xn = RMSNorm(X) * g, over worker threads when T is large enough */
static void sks__addnorm(sks_forward *f, int T, float *X, const float *Y, const float *g) {
    sks__job j = {sks__addnorm_worker, 0, 1, f, T, 0, NULL, NULL, 0, X, Y, g, NULL};
    sks__parallel(&j, T >= SKS__PAR_MIN_T_ROWS ? f->n_workers : 1);
}

void sks_fwd_act_mul(sks_act_kind act, float *gate, const float *up, int64_t n) {
    if (act == SKS_ACT_GELU_TANH) {
        const float k0 = 0.7978845608028654f, k1 = 0.044715f;
        for (int64_t i = 0; i < n; i++) {
            float z = gate[i];
            gate[i] = 0.5f * z * (1.0f + tanhf(k0 * (z + k1 * z * z * z))) * (up ? up[i] : 1.0f);
        }
        return;
    }
    int64_t i = 0;
#if SKS__VEXP
    if (sks__cpu_avx2()) i = sks__silu_mul_avx2(gate, up, n);
#endif
    for (; i < n; i++) {
        float z = gate[i];
        gate[i] = z / (1.0f + expf(-z)) * (up ? up[i] : 1.0f);
    }
}

/* gate <- act(gate) * up over T f entries, split in nw contiguous ranges; act is SiLU
 * (SwiGLU) or gelu_tanh(z) = z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) (GeGLU). */
static void sks__swiglu_worker(sks__job *j, int w, int nw) {
    sks_forward *f = j->f;
    int64_t n = (int64_t)j->T * f->f, a = n * w / nw, b = n * (w + 1) / nw;
    sks_fwd_act_mul(f->a.act, f->gate + a, f->a.ffn_plain ? NULL : f->up + a, b - a);
}

/* The sublayer input: xn = norm(h) * gamma (role), or h itself where the family has no
 * input norms (OLMo 2). Y, if not NULL, is first added to h. */
static int sks__pre_norm(sks_forward *f, sks_role role, int l, int T, const float *Y) {
    if (f->a.no_input_norms) {
        sks__addnorm(f, T, f->x, Y, NULL);
        memcpy(f->xn, f->x, (size_t)T * (size_t)f->d * sizeof(float));
        return 0;
    }
    int rc = sks__norm_load(f, role, l);
    if (rc) return rc;
    sks__addnorm(f, T, f->x, Y, f->vec);
    return 0;
}

/* The sublayer output y (T, d) rescaled in place by the family's post-norm (Gemma 2/3,
 * OLMo 2); nothing for the others. */
static int sks__post_norm(sks_forward *f, sks_role role, int l, int T, float *y) {
    if (!f->a.has_post_norms) return 0;
    int rc = sks__gain(f, role, l, f->vec);
    if (rc) return rc;
    sks__rmsnorm(y, f->d, y, f->d, f->vec, T, f->d, f->a.norm_eps);
    return 0;
}

/* Layer l for T tokens at positions p0..p0+T-1; kc, vc (p0+T, kd) hold the keys and
 * values of earlier positions, the new ones are written at row p0. */
static int sks__layer(sks_forward *f, int l, int T, int p0, float *kc, float *vc, sks_fwd_mode mode,
                      const sks_fwd_hooks *hk) {
    const sks_model *m = f->m;
    const int64_t d = f->d, qd = f->qd, kd = f->kd, dh = f->dh, H = f->H, Hkv = f->Hkv;
    const double eps = f->a.norm_eps;
    int rc;
    const sks_tensor *W;

    /* attention */
    const int sliding = sks_arch_layer_sliding(&f->a, l);
    f->window = sliding ? f->a.sliding_window : 0;
    f->cur_cos = sliding && f->rope_cos_l ? f->rope_cos_l : f->glob_cos;
    f->cur_sin = sliding && f->rope_sin_l ? f->rope_sin_l : f->glob_sin;
    if ((rc = sks__pre_norm(f, SKS_ROLE_ATTN_NORM, l, T, NULL))) return rc;
    if (hk && hk->on_attn_in && (rc = hk->on_attn_in(hk->ud, l, f->xn, T, (int)d))) return rc;
    if (hk && hk->on_linear_in && (rc = hk->on_linear_in(hk->ud, l, SKS_FWD_LIN_ATTN, -1, f->xn, T, (int)d))) return rc;
    f->kvl = hk && mode == SKS_FWD_CAUSAL ? hk->kv_limit : NULL;
    f->kvl_layer = l;

    float *kn = kc + (int64_t)p0 * kd, *vn = vc + (int64_t)p0 * kd;
    int need_qk = mode == SKS_FWD_CAUSAL || (hk && hk->on_qk);
    if (need_qk) {
        if (!(W = sks__mat(m, SKS_ROLE_WQ, l))) return SKS_ENOTFOUND;
        if ((rc = sks_matmul_wt(W, f->xn, T, f->q, f->ws, f->ws_floats))) return rc;
        if ((rc = sks__add_bias(f, SKS_ROLE_BQ, l, f->q, T, qd, qd))) return rc;
        if (!(W = sks__mat(m, SKS_ROLE_WK, l))) return SKS_ENOTFOUND;
        if ((rc = sks_matmul_wt(W, f->xn, T, kn, f->ws, f->ws_floats))) return rc;
        if ((rc = sks__add_bias(f, SKS_ROLE_BK, l, kn, T, kd, kd))) return rc;
        if (f->a.has_qk_norm && f->a.qk_norm_full) {
            /* OLMo 2: RMSNorm over the whole projection (H dh, Hkv dh), before the split */
            if ((rc = sks__gain(f, SKS_ROLE_Q_NORM, l, f->vec))) return rc;
            if ((rc = sks__gain(f, SKS_ROLE_K_NORM, l, f->vec2))) return rc;
            sks__rmsnorm(f->q, qd, f->q, qd, f->vec, T, qd, eps);
            sks__rmsnorm(kn, kd, kn, kd, f->vec2, T, kd, eps);
        } else if (f->a.has_qk_norm) {
            /* Qwen3, Gemma 3: RMSNorm over each head (dh) with q_norm / k_norm, before RoPE */
            if ((rc = sks__gain(f, SKS_ROLE_Q_NORM, l, f->vec))) return rc;
            if ((rc = sks__gain(f, SKS_ROLE_K_NORM, l, f->vec2))) return rc;
            sks__rmsnorm(f->q, dh, f->q, dh, f->vec, (int64_t)T * H, dh, eps);
            sks__rmsnorm(kn, dh, kn, dh, f->vec2, (int64_t)T * Hkv, dh, eps);
        }
        int want_qk = hk && hk->on_qk;
        if (want_qk) {
            if (!f->q_pre) f->q_pre = sks_malloc_n((size_t)f->max_T, (size_t)qd * sizeof(float));
            if (!f->k_pre) f->k_pre = sks_malloc_n((size_t)f->max_T, (size_t)kd * sizeof(float));
            if (!f->q_pre || !f->k_pre) return sks_fail(SKS_ENOMEM, "forward: out of memory for q/k copies");
            memcpy(f->q_pre, f->q, (size_t)T * (size_t)qd * sizeof(float));
            memcpy(f->k_pre, kn, (size_t)T * (size_t)kd * sizeof(float));
        }
        if (mode == SKS_FWD_CAUSAL && !f->a.pos_learned) {
            sks__job j = {sks__rope_worker, 0, 1, f, T, p0, NULL, NULL, 0, kn, NULL, NULL, NULL};
            sks__parallel(&j, T >= SKS__PAR_MIN_T_ROWS ? f->n_workers : 1);
        } /* independent tokens sit at position 0: RoPE is the identity */
        if (want_qk && (rc = hk->on_qk(hk->ud, l, f->q_pre, f->k_pre, f->q, kn, T, (int)H, (int)Hkv, (int)dh)))
            return rc;
    }
    if (!(W = sks__mat(m, SKS_ROLE_WV, l))) return SKS_ENOTFOUND;
    if ((rc = sks_matmul_wt(W, f->xn, T, vn, f->ws, f->ws_floats))) return rc;
    if ((rc = sks__add_bias(f, SKS_ROLE_BV, l, vn, T, kd, kd))) return rc;

    const int64_t grp = H / Hkv;
    if (mode == SKS_FWD_INDEPENDENT) {
        /* one token alone: softmax over one key is 1, head h outputs v_{g(h)} */
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++)
                memcpy(f->att + t * qd + h * dh, vn + t * kd + (h / grp) * dh, (size_t)dh * sizeof(float));
    } else {
        int want_probs = hk && hk->want_attn_probs && hk->on_attn_probs && p0 == 0;
        size_t pfl = (size_t)f->n_workers * (size_t)f->max_T * (size_t)f->max_T;
        if (want_probs && f->n_workers > 1 && T >= SKS__PAR_MIN_T && pfl <= SKS__PROBS_PAR_FLOATS) {
            /* n_workers heads at a time, each into its own (T, T) matrix; hooks in head order */
            if (!f->pscores && !(f->pscores = sks_malloc_n(pfl, sizeof(float))))
                return sks_fail(SKS_ENOMEM, "forward: out of memory for attention probabilities");
            for (int64_t h0 = 0; h0 < H; h0 += f->n_workers) {
                sks__job j = {sks__attn_probs_worker, 0, 1, f, T, p0, kc, vc, h0, NULL, NULL, NULL, NULL};
                sks__parallel(&j, f->n_workers);
                for (int64_t h = h0; h < h0 + f->n_workers && h < H; h++)
                    if ((rc = hk->on_attn_probs(hk->ud, l, (int)h,
                                                f->pscores + (size_t)(h - h0) * f->max_T * f->max_T, T)))
                        return rc;
            }
        } else if (want_probs) {
            /* the hook sees whole (T, T) matrices: allocated on first use only */
            if (!f->scores && !(f->scores = sks_malloc_n((size_t)f->max_T, (size_t)f->max_T * sizeof(float))))
                return sks_fail(SKS_ENOMEM, "forward: out of memory for %d x %d attention probabilities", f->max_T,
                                f->max_T);
            for (int64_t h = 0; h < H; h++) {
                sks__attn_head(f, h, T, p0, kc, vc, f->scores, 1);
                if ((rc = hk->on_attn_probs(hk->ud, l, (int)h, f->scores, T))) return rc;
            }
        } else if (!f->wscores && !(f->wscores = sks_malloc_n((size_t)f->n_workers * SKS__QBLOCK,
                                                                (size_t)f->max_T * sizeof(float)))) {
            /* allocated on the first causal pass: independent-token sweeps never need it */
            return sks_fail(SKS_ENOMEM, "forward: out of memory for attention score blocks");
        } else if (f->n_workers <= 1 || T < SKS__PAR_MIN_T) {
            for (int64_t h = 0; h < H; h++) sks__attn_head(f, h, T, p0, kc, vc, f->wscores, 0);
        } else {
            sks__job j = {sks__attn_worker, 0, 1, f, T, p0, kc, vc, 0, NULL, NULL, NULL, NULL};
            sks__parallel(&j, f->n_workers);
        }
    }
    if (hk && hk->on_linear_in && (rc = hk->on_linear_in(hk->ud, l, SKS_FWD_LIN_WO, -1, f->att, T, (int)qd))) return rc;
    if (!(W = sks__mat(m, SKS_ROLE_WO, l))) return SKS_ENOTFOUND;
    if ((rc = sks_matmul_wt(W, f->att, T, f->y, f->ws, f->ws_floats))) return rc;
    if ((rc = sks__add_bias(f, SKS_ROLE_BO, l, f->y, T, d, d))) return rc;
    /* h += post(attention output); xn = RMSNorm(h) * gamma_ffn (the norm leaves h as it is) */
    if ((rc = sks__post_norm(f, SKS_ROLE_POST_ATTN_NORM, l, T, f->y))) return rc;
    if ((rc = sks__pre_norm(f, SKS_ROLE_FFN_NORM, l, T, f->y))) return rc;
    if ((rc = sks__check_finite(f->x, T, d, 2 * l + 1, p0))) return sks__explain_nonfinite(f, 2 * l + 1, rc);
    if (hk && hk->on_residual && (rc = hk->on_residual(hk->ud, 2 * l + 1, f->x, T, (int)d))) return rc;

    /* FFN: W_down (SiLU(W_gate x) * (W_up x)), over tokens [t0, T) only (sks__pass_run:
     * the last layer when nothing reads the other tokens' outputs) */
    const int t0 = f->ffn_from, Tf = T - t0;
    float *xn = f->xn + (int64_t)t0 * d, *y = f->y + (int64_t)t0 * d, *x = f->x + (int64_t)t0 * d;
    if (hk && hk->on_ffn_in && (rc = hk->on_ffn_in(hk->ud, l, xn, Tf, (int)d))) return rc;
    if (hk && hk->on_linear_in && (rc = hk->on_linear_in(hk->ud, l, SKS_FWD_LIN_FFN, -1, xn, Tf, (int)d))) return rc;
    if (sks_arch_layer_moe(&f->a, l)) {
        /* mixture of experts: the router's top-k, the routed experts only (sks_moe.h) */
        if ((rc = sks_moe_ffn(m, l, xn, Tf, y, f->moe, hk, f->ws, f->ws_floats))) return rc;
    } else {
        if (f->a.ffn_plain) {
            /* GPT-2: gate <- act(x W_up^T + b_up), no gate projection */
            if (!(W = sks__mat(m, SKS_ROLE_W_UP, l))) return SKS_ENOTFOUND;
            if ((rc = sks_matmul_wt(W, xn, Tf, f->gate, f->ws, f->ws_floats))) return rc;
            if ((rc = sks__add_bias(f, SKS_ROLE_B_UP, l, f->gate, Tf, f->f, f->f))) return rc;
        } else {
            if (!(W = sks__mat(m, SKS_ROLE_W_GATE, l))) return SKS_ENOTFOUND;
            if ((rc = sks_matmul_wt(W, xn, Tf, f->gate, f->ws, f->ws_floats))) return rc;
            if (!(W = sks__mat(m, SKS_ROLE_W_UP, l))) return SKS_ENOTFOUND;
            if ((rc = sks_matmul_wt(W, xn, Tf, f->up, f->ws, f->ws_floats))) return rc;
        }
        sks__job j = {sks__swiglu_worker, 0, 1, f, Tf, p0, NULL, NULL, 0, NULL, NULL, NULL, NULL};
        sks__parallel(&j, Tf >= SKS__PAR_MIN_T ? f->n_workers : 1);
        if (hk && hk->on_linear_in && (rc = hk->on_linear_in(hk->ud, l, SKS_FWD_LIN_DOWN, -1, f->gate, Tf, (int)f->f)))
            return rc;
        if (!(W = sks__mat(m, SKS_ROLE_W_DOWN, l))) return SKS_ENOTFOUND;
        if ((rc = sks_matmul_wt(W, f->gate, Tf, y, f->ws, f->ws_floats))) return rc;
        if ((rc = sks__add_bias(f, SKS_ROLE_B_DOWN, l, y, Tf, d, d))) return rc;
    }
    if (hk && hk->on_ffn_out && (rc = hk->on_ffn_out(hk->ud, l, y, Tf, (int)d))) return rc;
    if ((rc = sks__post_norm(f, SKS_ROLE_POST_FFN_NORM, l, Tf, y))) return rc;
    sks__addnorm(f, Tf, x, y, NULL);
    if ((rc = sks__check_finite(x, Tf, d, 2 * l + 2, p0 + t0))) return sks__explain_nonfinite(f, 2 * l + 2, rc);
    if (hk && hk->on_residual && (rc = hk->on_residual(hk->ud, 2 * l + 2, x, Tf, (int)d))) return rc;
    return 0;
}

/* GPT-2: h_0[t] += P[p0 + t], the learned position rows (independent tokens all sit at
 * position 0). Positions past the table are refused: the model has no embedding there. */
static int sks__add_positions(sks_forward *f, int T, int p0, sks_fwd_mode mode) {
    const sks_tensor *P = sks__mat(f->m, SKS_ROLE_POS_EMBED, -1);
    if (!P) return SKS_ENOTFOUND;
    if (mode == SKS_FWD_CAUSAL && (int64_t)p0 + T > sks_tensor_rows(P))
        return sks_fail(SKS_EARG, "forward: position %d is past the model's %lld learned positions", p0 + T - 1,
                        (long long)sks_tensor_rows(P));
    for (int t = 0; t < T; t++) {
        int64_t pos = mode == SKS_FWD_CAUSAL ? (int64_t)p0 + t : 0;
        if (mode == SKS_FWD_CAUSAL || t == 0) {
            int rc = sks_tensor_rows_f32(P, pos, 1, f->nbias);
            if (rc) return rc;
        }
        float *x = f->x + (int64_t)t * f->d;
        for (int64_t c = 0; c < f->d; c++) x[c] += f->nbias[c];
    }
    return 0;
}

/* The whole pass. use_cache: keys/values live in the generation cache at rows p0..;
 * otherwise in the per-pass buffers (p0 must be 0). */
static int sks__pass_run(sks_forward *f, const int32_t *tokens, int T, int p0, int use_cache, sks_fwd_mode mode,
                         const sks_fwd_hooks *hk, float *logits, int last_only) {
    if (!tokens || T <= 0 || (int64_t)p0 + T > f->max_T)
        return sks_fail(SKS_EARG, "forward: %d tokens at position %d do not fit the %d-token workspace", T, p0,
                        f->max_T);
    if (mode != SKS_FWD_CAUSAL && mode != SKS_FWD_INDEPENDENT) return sks_fail(SKS_EARG, "forward: bad mode %d", mode);
    const int64_t d = f->d;
    /* longrope: the long factors once the sequence passes the original context */
    int long_rope = f->rope_cos_x && (int64_t)p0 + T > f->a.rope_original_max_pos;
    f->glob_cos = long_rope ? f->rope_cos_x : f->rope_cos;
    f->glob_sin = long_rope ? f->rope_sin_x : f->rope_sin;
    const sks_tensor *E = sks__mat(f->m, SKS_ROLE_EMBED, -1);
    if (!E) return SKS_ENOTFOUND;
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= f->V)
            return sks_fail(SKS_EARG, "forward: token id %d at position %d outside the vocabulary [0, %lld)",
                            (int)tokens[t], t, (long long)f->V);
        int rc = sks_tensor_rows_f32(E, tokens[t], 1, f->x + (int64_t)t * d);
        if (rc) return rc;
    }
    int rc;
    if (f->a.pos_learned && (rc = sks__add_positions(f, T, p0, mode))) return rc;
    if (f->a.embed_scale) {
        /* Gemma: h_0 = e * sqrt(d), the factor rounded to the embedding's dtype */
        const float s = sks_model_embed_scale(f->m);
        for (int64_t i = 0; i < (int64_t)T * d; i++) f->x[i] *= s;
    }
    if ((rc = sks__check_finite(f->x, T, d, 0, p0))) return sks__explain_nonfinite(f, 0, rc);
    if (hk && hk->on_residual && (rc = hk->on_residual(hk->ud, 0, f->x, T, (int)d))) return rc;
    /* Only the last position's logits and no hook: the other tokens' outputs of the last
     * layer's FFN are never read (its keys and values come before it), so that FFN runs
     * on the last token alone, as llama.cpp does for a prompt whose last logits only are
     * asked. Every other pass computes every token. */
    const int last_ffn_from = logits && last_only && !hk ? T - 1 : 0;
    for (int l = 0; l < f->a.n_layers; l++) {
        float *kc = use_cache ? f->kc + (int64_t)l * f->max_T * f->kd : f->k;
        float *vc = use_cache ? f->vc + (int64_t)l * f->max_T * f->kd : f->v;
        f->ffn_from = l == f->a.n_layers - 1 ? last_ffn_from : 0;
        rc = sks__layer(f, l, T, p0, kc, vc, mode, hk);
        f->ffn_from = 0;
        if (rc) return rc;
    }
    if (!logits) return 0;
    /* logits = W_cls (RMSNorm(h) * gamma_final) */
    int64_t r0 = last_only ? T - 1 : 0, nr = last_only ? 1 : T;
    if ((rc = sks__norm_load(f, SKS_ROLE_FINAL_NORM, -1))) return rc;
    sks__norm_in(f, f->x + r0 * d, d, f->xn, d, f->vec, nr);
    const sks_tensor *C = sks_model_classifier(f->m);
    if (!C) return sks_fail(SKS_ENOTFOUND, "forward: model has no classifier");
    if ((rc = sks_matmul_wt(C, f->xn, (int)nr, logits, f->ws, f->ws_floats))) return rc;
    for (int64_t i = 0; i < nr * f->V; i++)
        if (!isfinite(logits[i]))
            return sks_fail(SKS_ENONFINITE, "forward: non-finite logit (%s) at token %lld, vocabulary id %lld",
                            isnan(logits[i]) ? "NaN" : "Inf", (long long)(p0 + r0 + i / f->V), (long long)(i % f->V));
    if (f->a.final_softcap > 0) {
        /* Gemma 2: logits -> c tanh(z / c) */
        const float c = (float)f->a.final_softcap;
        for (int64_t i = 0; i < nr * f->V; i++) logits[i] = c * tanhf(logits[i] / c);
    }
    return 0;
}

/* With weights that are converted to f32 (any stored type but f32) on the CPU, the pass
 * runs OpenBLAS on one thread and splits every product over its own workers
 * (sks_matmul_wt): each converts its share of the rows and multiplies it, so conversion
 * is parallel too and no OpenBLAS thread spins while the weights are converted. */
static int sks__pass(sks_forward *f, const int32_t *tokens, int T, int p0, int use_cache, sks_fwd_mode mode,
                     const sks_fwd_hooks *hk, float *logits, int last_only) {
    const sks_tensor *wq = sks_model_tensor(f->m, SKS_ROLE_WQ, 0);
    const int own = f->mm_workers > 1 && !sks_qf_backend_default()->gemm_wt && wq && wq->dtype != SKS_DT_F32;
    const int saved = own ? openblas_get_num_threads() : 0, saved_nw = sks__mm_nw;
    if (own) {
        sks__mm_nw = f->mm_workers;
        openblas_set_num_threads(1);
    }
    int rc = sks__pass_run(f, tokens, T, p0, use_cache, mode, hk, logits, last_only);
    if (own) {
        openblas_set_num_threads(saved);
        sks__mm_nw = saved_nw;
    }
    return rc;
}

int sks_forward_run(sks_forward *f, const int32_t *tokens, int T, sks_fwd_mode mode, const sks_fwd_hooks *hooks,
                    float *logits, int last_only) {
    if (!f) return sks_fail(SKS_EARG, "sks_forward_run: NULL forward");
    return sks__pass(f, tokens, T, 0, 0, mode, hooks, logits, last_only);
}

static int sks__argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int)best;
}

int sks_forward_generate(sks_forward *f, const int32_t *prompt, int n_prompt, int n_gen, int stop_at_eos,
                         int32_t *out_ids, int *n_out) {
    return sks_forward_generate_cb(f, prompt, n_prompt, n_gen, stop_at_eos, NULL, NULL, out_ids, n_out);
}

int sks_forward_generate_cb(sks_forward *f, const int32_t *prompt, int n_prompt, int n_gen, int stop_at_eos,
                            sks_fwd_token_fn on_token, void *ud, int32_t *out_ids, int *n_out) {
    if (n_out) *n_out = 0;
    if (!f || !prompt || n_prompt < 1 || n_gen < 0 || (n_gen > 0 && !out_ids) || !n_out)
        return sks_fail(SKS_EARG, "sks_forward_generate: bad arguments");
    /* the last generated token is never fed back: positions < n_prompt + n_gen - 1 */
    if ((int64_t)n_prompt + n_gen - 1 > f->max_T)
        return sks_fail(SKS_EARG, "generate: %d prompt + %d new tokens exceed the %d-token workspace", n_prompt, n_gen,
                        f->max_T);
    if (n_gen == 0) return 0;
    if (!f->kc) {
        size_t n;
        if (sks_mul_size((size_t)f->a.n_layers * (size_t)f->max_T, (size_t)f->kd, &n))
            return sks_fail(SKS_EOVERFLOW, "generate: KV cache size overflows");
        f->kc = sks_malloc_n(n, sizeof(float));
        f->vc = sks_malloc_n(n, sizeof(float));
        if (!f->kc || !f->vc) return sks_fail(SKS_ENOMEM, "generate: out of memory for the KV cache");
    }
    int rc = sks__pass(f, prompt, n_prompt, 0, 1, SKS_FWD_CAUSAL, NULL, f->logit1, 1);
    if (rc) return rc;
    int pos = n_prompt, n = 0;
    for (;;) {
        int32_t next = sks__argmax(f->logit1, f->V);
        out_ids[n++] = next;
        if (on_token && (rc = on_token(ud, next, n - 1))) break;
        if (n >= n_gen || (stop_at_eos && next == f->a.eos_id && f->a.eos_id >= 0)) break;
        if ((rc = sks__pass(f, &next, 1, pos, 1, SKS_FWD_CAUSAL, NULL, f->logit1, 1))) break;
        pos++;
    }
    *n_out = n;
    return rc;
}
