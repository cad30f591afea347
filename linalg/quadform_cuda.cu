/* quadform_cuda.cu - the cuda row of the S_k operator backend table (cuBLAS).
 *
 * Built only with -DSKS_CUDA=ON. One process-wide context (cuBLAS handle, a compute and
 * a copy stream, two pinned staging buffers) is made on first use. Per binding, the
 * layer's G, U, Down live on the GPU in the bound precision (f32 or f64):
 *
 *   upload   host rows -> pinned staging (memcpy on the CPU) -> device staging (async
 *            copy on the copy stream) -> converted to f32/f64 on the GPU (bf16 and f16
 *            decoded there) on the compute stream. Two staging buffers alternate, so
 *            the CPU copy of chunk c+1 and the transfer of chunk c overlap the
 *            conversion (and, in gemm_wt, the GEMM) of chunk c-1.
 *   matvec   P = G V, Q = U V (two GEMMs f x d x m), scaled by D_{ch[i]} on the GPU,
 *            Y = 1/2 G^T Q + 1/2 U^T P (two GEMMs), as quadform.c.
 *   screen   per row block I: the four Gram GEMMs of H_IJ, the Hadamard combination,
 *            P = H_IJ Down_J^T, and the f64 contraction over i in I: the same blocks
 *            and sums as quadform.c, so the partials can be finished or split alike.
 *   traces   w_j = g_j . u_j and tr = Down w, both accumulated in f64 on the GPU.
 *
 * Math mode: FP32 (CUBLAS_DEFAULT_MATH, no tensor-core rounding of the inputs) unless
 * SKS_CUDA_TF32=1 is set in the environment, which allows TF32 tensor cores for the
 * f32 GEMMs (measurement only: docs/linalg.md gives the errors it costs). f64 GEMMs are
 * always f64.
 *
 * Row-major arrays are handed to column-major cuBLAS as their transposes: a row-major
 * X (r, c) with leading dimension c is the column-major X^T (c, r).
 */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sks_linalg.h"

/* ---- context ------------------------------------------------------------------------ */

#define SKS__CU_STAGE ((size_t)32 << 20) /* bytes per staging buffer */

typedef struct {
    int ready, failed;
    cublasHandle_t blas;
    cudaStream_t comp, copy;
    void *pin[2];           /* pinned host staging */
    void *dstage[2];        /* device staging */
    cudaEvent_t copied[2];  /* staging c is on the device */
    cudaEvent_t freed[2];   /* staging c may be overwritten */
    int tf32;
    /* gemm_wt buffers (grown on demand) */
    float *dW, *dX, *dY;
    size_t nW, nX, nY;
} sks__cu_ctx;

static sks__cu_ctx g_cu;

static int sks__cu_err(cudaError_t e, const char *what) {
    return sks_fail(SKS_EINTERNAL, "cuda: %s: %s", what, cudaGetErrorString(e));
}
static int sks__blas_err(cublasStatus_t s, const char *what) {
    return sks_fail(SKS_EINTERNAL, "cuBLAS: %s: status %d", what, (int)s);
}
#define CU(call, what)                                                                 \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) return sks__cu_err(e_, what);                           \
    } while (0)
#define CB(call, what)                                                                 \
    do {                                                                               \
        cublasStatus_t s_ = (call);                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) return sks__blas_err(s_, what);               \
    } while (0)

static int sks__cu_probe(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return sks_fail(SKS_EUNSUPPORTED, "--device cuda: no usable GPU (%s)", cudaGetErrorString(e));
    if (n < 1) return sks_fail(SKS_EUNSUPPORTED, "--device cuda: no GPU found");
    return 0;
}

static int sks__cu_init(void) {
    if (g_cu.ready) return 0;
    if (g_cu.failed) return sks_fail(SKS_EUNSUPPORTED, "cuda: the context could not be made earlier");
    g_cu.failed = 1;
    int rc = sks__cu_probe();
    if (rc) return rc;
    CU(cudaStreamCreateWithFlags(&g_cu.comp, cudaStreamNonBlocking), "stream");
    CU(cudaStreamCreateWithFlags(&g_cu.copy, cudaStreamNonBlocking), "stream");
    for (int i = 0; i < 2; i++) {
        CU(cudaMallocHost(&g_cu.pin[i], SKS__CU_STAGE), "pinned staging buffer");
        CU(cudaMalloc(&g_cu.dstage[i], SKS__CU_STAGE), "device staging buffer");
        CU(cudaEventCreateWithFlags(&g_cu.copied[i], cudaEventDisableTiming), "event");
        CU(cudaEventCreateWithFlags(&g_cu.freed[i], cudaEventDisableTiming), "event");
        CU(cudaEventRecord(g_cu.freed[i], g_cu.comp), "event");
    }
    CB(cublasCreate(&g_cu.blas), "create");
    CB(cublasSetStream(g_cu.blas, g_cu.comp), "stream");
    const char *t = getenv("SKS_CUDA_TF32");
    g_cu.tf32 = t && t[0] == '1';
    CB(cublasSetMathMode(g_cu.blas, g_cu.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "math mode");
    g_cu.failed = 0;
    g_cu.ready = 1;
    return 0;
}

/* grow a device buffer of floats */
static int sks__cu_grow(float **p, size_t *n, size_t need) {
    if (need <= *n) return 0;
    if (*p) cudaFree(*p);
    *p = NULL;
    *n = 0;
    CU(cudaMalloc((void **)p, need * sizeof(float)), "device buffer");
    *n = need;
    return 0;
}

/* ---- kernels -------------------------------------------------------------------------- */

enum { SKS__EL_F32 = SKS_QF_ELEM_F32, SKS__EL_F16 = SKS_QF_ELEM_F16, SKS__EL_BF16 = SKS_QF_ELEM_BF16, SKS__EL_F64 = 7 };

static size_t sks__el_size(int el) { return el == SKS__EL_F64 ? 8 : el == SKS__EL_F32 ? 4 : 2; }

template <typename T>
__global__ void sks__k_convert(const void *src, int el, T *dst, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t step = (size_t)gridDim.x * blockDim.x;
    for (; i < n; i += step) {
        double v;
        if (el == SKS__EL_F32) v = ((const float *)src)[i];
        else if (el == SKS__EL_F64) v = ((const double *)src)[i];
        else if (el == SKS__EL_BF16) v = __uint_as_float((unsigned)((const uint16_t *)src)[i] << 16);
        else v = __half2float(((const __half *)src)[i]);
        dst[i] = (T)v;
    }
}

/* P[j, i] *= Down[ch[i], j], Q likewise; P, Q (f, m) */
template <typename T>
__global__ void sks__k_scale(T *P, T *Q, const T *Down, const int *ch, int f, int m) {
    size_t n = (size_t)f * m;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(t / m), i = (int)(t % m);
        T dk = Down[(size_t)ch[i] * f + j];
        P[t] *= dk;
        Q[t] *= dk;
    }
}

/* A = A o B + C o Ct over (b, nJ), the part right of the diagonal block doubled */
template <typename T>
__global__ void sks__k_hadamard(T *A, const T *B, const T *C, const T *Ct, int b, int nJ) {
    size_t n = (size_t)b * nJ;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(t % nJ);
        T v = A[t] * B[t] + C[t] * Ct[t];
        A[t] = j >= b ? v * 2 : v;
    }
}

/* pk[k] = sum_{i < b} Down[k, i0 + i] P[i, k], f64 */
template <typename T>
__global__ void sks__k_contract(const T *Down, const T *P, int d, int f, int i0, int b, double *pk) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= d) return;
    const T *Dk = Down + (size_t)k * f + i0;
    double s = 0.0;
    for (int i = 0; i < b; i++) s += (double)Dk[i] * (double)P[(size_t)i * d + k];
    pk[k] = s;
}

/* out[r] = sum_c X[r, c] Y[r, c] (rows of length n), f64; one block of 256 per row */
template <typename T>
__global__ void sks__k_rowdot(const T *X, const T *Y, int n, double *out) {
    __shared__ double sh[256];
    const T *x = X + (size_t)blockIdx.x * n, *y = Y + (size_t)blockIdx.x * n;
    double s = 0.0;
    for (int c = threadIdx.x; c < n; c += blockDim.x) s += (double)x[c] * (double)y[c];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

/* out[k] = sum_j Down[k, j] w[j], f64; one block of 256 per k */
template <typename T>
__global__ void sks__k_rowdot_vec(const T *Down, const double *w, int f, double *out) {
    __shared__ double sh[256];
    const T *x = Down + (size_t)blockIdx.x * f;
    double s = 0.0;
    for (int c = threadIdx.x; c < f; c += blockDim.x) s += (double)x[c] * w[c];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w2 = blockDim.x / 2; w2 > 0; w2 >>= 1) {
        if (threadIdx.x < w2) sh[threadIdx.x] += sh[threadIdx.x + w2];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

static int sks__grid(size_t n) {
    size_t g = (n + 255) / 256;
    return (int)(g > 65535 * 4 ? 65535 * 4 : (g < 1 ? 1 : g));
}

/* ---- GEMM in either precision (column-major, as cuBLAS) ------------------------------ */

static cublasStatus_t sks__gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al,
                                const float *A, int lda, const float *B, int ldb, float be, float *C, int ldc) {
    return cublasSgemm(g_cu.blas, ta, tb, m, n, k, &al, A, lda, B, ldb, &be, C, ldc);
}
static cublasStatus_t sks__gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double al,
                                const double *A, int lda, const double *B, int ldb, double be, double *C, int ldc) {
    return cublasDgemm(g_cu.blas, ta, tb, m, n, k, &al, A, lda, B, ldb, &be, C, ldc);
}

/* ---- streamed upload with conversion ------------------------------------------------- */

/* Rows [0, nrow) of a host array (row length ncol, encoding el) into dst (T) on the GPU,
 * chunk by chunk through the two staging buffers; after each chunk's conversion
 * on_chunk(ud, r0, r1) is enqueued on the compute stream (NULL: none). Returns after
 * everything is enqueued; the compute stream orders what follows. */
typedef int (*sks__chunk_fn)(void *ud, int64_t r0, int64_t r1);

template <typename T>
static int sks__upload(T *dst, const void *src, int el, int64_t nrow, int64_t ncol, sks__chunk_fn on_chunk, void *ud) {
    const size_t es = sks__el_size(el), rowb = (size_t)ncol * es;
    int64_t rows = (int64_t)(SKS__CU_STAGE / rowb);
    if (rows < 1) return sks_fail(SKS_EUNSUPPORTED, "cuda: a row of %lld values exceeds the staging buffer", (long long)ncol);
    int c = 0;
    for (int64_t r0 = 0; r0 < nrow; r0 += rows, c ^= 1) {
        int64_t nr = nrow - r0 < rows ? nrow - r0 : rows;
        size_t bytes = (size_t)nr * rowb;
        /* the staging pair c is free once its previous conversion ran */
        CU(cudaEventSynchronize(g_cu.freed[c]), "staging wait");
        memcpy(g_cu.pin[c], (const char *)src + (size_t)r0 * rowb, bytes);
        CU(cudaMemcpyAsync(g_cu.dstage[c], g_cu.pin[c], bytes, cudaMemcpyHostToDevice, g_cu.copy), "upload");
        CU(cudaEventRecord(g_cu.copied[c], g_cu.copy), "event");
        CU(cudaStreamWaitEvent(g_cu.comp, g_cu.copied[c], 0), "event wait");
        size_t n = (size_t)nr * (size_t)ncol;
        sks__k_convert<T><<<sks__grid(n), 256, 0, g_cu.comp>>>(g_cu.dstage[c], el, dst + (size_t)r0 * ncol, n);
        CU(cudaGetLastError(), "convert kernel");
        CU(cudaEventRecord(g_cu.freed[c], g_cu.comp), "event");
        if (on_chunk) {
            int rc = on_chunk(ud, r0, r0 + nr);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ---- bindings ------------------------------------------------------------------------ */

typedef struct {
    int prec, d, f;
    void *G, *U, *D;        /* device (f, d), (f, d), (d, f) */
    void *V, *Y, *P, *Q;    /* matvec buffers, m_cap columns */
    int *ch;
    int m_cap;
    void *S;                /* screen workspace: 4 bs f + bs d values */
    double *part;           /* (d) */
    double *w;              /* (f) trace dots, then (d) traces at w + f */
    int bs_cap;
} sks__cu_op;

static size_t sks__ps(int prec) { return prec == SKS_QF_F64 ? sizeof(double) : sizeof(float); }

static void sks__cu_unbind(void *h) {
    sks__cu_op *o = (sks__cu_op *)h;
    if (!o) return;
    cudaStreamSynchronize(g_cu.comp);
    void *bufs[] = {o->G, o->U, o->D, o->V, o->Y, o->P, o->Q, o->ch, o->S, o->part, o->w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    free(o);
}

template <typename T>
static int sks__cu_load(sks__cu_op *o, const void *G, const void *U, const void *D, int el) {
    int rc = sks__upload<T>((T *)o->G, G, el, o->f, o->d, NULL, NULL);
    if (!rc) rc = sks__upload<T>((T *)o->U, U, el, o->f, o->d, NULL, NULL);
    if (!rc) rc = sks__upload<T>((T *)o->D, D, el, o->d, o->f, NULL, NULL);
    if (!rc) CU(cudaStreamSynchronize(g_cu.comp), "upload");
    return rc;
}

static int sks__cu_alloc_op(int d, int f, int prec, sks__cu_op **out) {
    *out = NULL;
    int rc = sks__cu_init();
    if (rc) return rc;
    sks__cu_op *o = (sks__cu_op *)calloc(1, sizeof *o);
    if (!o) return sks_fail(SKS_ENOMEM, "cuda backend: out of memory");
    o->prec = prec;
    o->d = d;
    o->f = f;
    size_t fd = (size_t)f * d, ps = sks__ps(prec);
    cudaError_t e = cudaMalloc(&o->G, fd * ps);
    if (e == cudaSuccess) e = cudaMalloc(&o->U, fd * ps);
    if (e == cudaSuccess) e = cudaMalloc(&o->D, fd * ps);
    if (e == cudaSuccess) e = cudaMalloc((void **)&o->w, ((size_t)f + d) * sizeof(double));
    if (e == cudaSuccess) e = cudaMalloc((void **)&o->part, (size_t)d * sizeof(double));
    if (e != cudaSuccess) {
        sks__cu_unbind(o);
        return sks_fail(SKS_ENOMEM, "cuda backend: GPU memory for a %d x %d FFN (%s)", f, d, cudaGetErrorString(e));
    }
    *out = o;
    return 0;
}

static int sks__cu_bind(const sks_quadform *q, const sks_quadform64 *q64, const sks_qf_raw *raw, int prec, void **h) {
    int d = q ? q->d : q64 ? q64->d : raw->d, f = q ? q->f : q64 ? q64->f : raw->f;
    sks__cu_op *o = NULL;
    int rc = sks__cu_alloc_op(d, f, prec, &o);
    if (rc) return rc;
    const void *G, *U, *D;
    int el;
    if (q) G = q->G, U = q->U, D = q->Down, el = SKS__EL_F32;
    else if (q64) G = q64->G, U = q64->U, D = q64->Down, el = SKS__EL_F64;
    else G = raw->G, U = raw->U, D = raw->Down, el = raw->elem;
    rc = prec == SKS_QF_F64 ? sks__cu_load<double>(o, G, U, D, el) : sks__cu_load<float>(o, G, U, D, el);
    if (rc) {
        sks__cu_unbind(o);
        return rc;
    }
    *h = o;
    return 0;
}

/* ---- matvec --------------------------------------------------------------------------- */

static int sks__cu_matvec_room(sks__cu_op *o, int m) {
    if (m <= o->m_cap) return 0;
    void *bufs[] = {o->V, o->Y, o->P, o->Q, o->ch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    o->V = o->Y = o->P = o->Q = NULL;
    o->ch = NULL;
    o->m_cap = 0;
    size_t ps = sks__ps(o->prec);
    CU(cudaMalloc(&o->V, (size_t)o->d * m * ps), "matvec buffer");
    CU(cudaMalloc(&o->Y, (size_t)o->d * m * ps), "matvec buffer");
    CU(cudaMalloc(&o->P, (size_t)o->f * m * ps), "matvec buffer");
    CU(cudaMalloc(&o->Q, (size_t)o->f * m * ps), "matvec buffer");
    CU(cudaMalloc((void **)&o->ch, (size_t)m * sizeof(int)), "matvec buffer");
    o->m_cap = m;
    return 0;
}

template <typename T>
static int sks__cu_matvec_t(sks__cu_op *o, const int *ch, int m, const T *V, int ldv, T *Y, int ldy) {
    int rc = sks__cu_matvec_room(o, m);
    if (rc) return rc;
    const int d = o->d, f = o->f;
    T *dV = (T *)o->V, *dY = (T *)o->Y, *P = (T *)o->P, *Q = (T *)o->Q;
    const T *G = (const T *)o->G, *U = (const T *)o->U, *D = (const T *)o->D;
    CU(cudaMemcpy2DAsync(dV, (size_t)m * sizeof(T), V, (size_t)ldv * sizeof(T), (size_t)m * sizeof(T), d,
                         cudaMemcpyHostToDevice, g_cu.comp), "matvec upload");
    CU(cudaMemcpyAsync(o->ch, ch, (size_t)m * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "matvec upload");
    const cublasOperation_t N = CUBLAS_OP_N, Tr = CUBLAS_OP_T;
    /* P^T (m, f) = V^T (m, d) G^T (d, f) */
    CB(sks__gemm(N, N, m, f, d, (T)1, dV, m, G, d, (T)0, P, m), "G V");
    CB(sks__gemm(N, N, m, f, d, (T)1, dV, m, U, d, (T)0, Q, m), "U V");
    sks__k_scale<T><<<sks__grid((size_t)f * m), 256, 0, g_cu.comp>>>(P, Q, D, o->ch, f, m);
    CU(cudaGetLastError(), "scale kernel");
    /* Y^T (m, d) = 1/2 Q^T (m, f) G (f, d) + 1/2 P^T U */
    CB(sks__gemm(N, Tr, m, d, f, (T)0.5, Q, m, G, d, (T)0, dY, m), "G^T Q");
    CB(sks__gemm(N, Tr, m, d, f, (T)0.5, P, m, U, d, (T)1, dY, m), "U^T P");
    CU(cudaMemcpy2DAsync(Y, (size_t)ldy * sizeof(T), dY, (size_t)m * sizeof(T), (size_t)m * sizeof(T), d,
                         cudaMemcpyDeviceToHost, g_cu.comp), "matvec download");
    CU(cudaStreamSynchronize(g_cu.comp), "matvec");
    return 0;
}

static int sks__cu_matvec(void *h, const int *ch, int m, const void *V, int ldv, void *Y, int ldy) {
    sks__cu_op *o = (sks__cu_op *)h;
    if (o->prec == SKS_QF_F64) return sks__cu_matvec_t<double>(o, ch, m, (const double *)V, ldv, (double *)Y, ldy);
    return sks__cu_matvec_t<float>(o, ch, m, (const float *)V, ldv, (float *)Y, ldy);
}

/* ---- screen partials ------------------------------------------------------------------ */

template <typename T>
static int sks__cu_partials_t(sks__cu_op *o, int block, int blk_lo, int blk_hi, double *part) {
    const int d = o->d, f = o->f;
    int bs = block > 0 ? block : 256;
    if (bs > f) bs = f;
    if (bs > o->bs_cap) {
        if (o->S) cudaFree(o->S);
        o->S = NULL;
        o->bs_cap = 0;
        CU(cudaMalloc(&o->S, ((size_t)4 * bs * f + (size_t)bs * d) * sizeof(T)), "screen workspace");
        o->bs_cap = bs;
    }
    T *A = (T *)o->S, *B = A + (size_t)bs * f, *C = B + (size_t)bs * f, *Ct = C + (size_t)bs * f;
    T *P = Ct + (size_t)bs * f;
    const T *G = (const T *)o->G, *U = (const T *)o->U, *D = (const T *)o->D;
    const cublasOperation_t N = CUBLAS_OP_N, Tr = CUBLAS_OP_T;
    for (int blk = blk_lo; blk < blk_hi; blk++) {
        const int i0 = blk * bs, b = i0 + bs < f ? bs : f - i0, nJ = f - i0;
        const T *GI = G + (size_t)i0 * d, *UI = U + (size_t)i0 * d;
        /* (X_I Y_J^T)^T (nJ, b) = Y_J X_I^T; J starts at row i0 too */
        CB(sks__gemm(Tr, N, nJ, b, d, (T)1, GI, d, GI, d, (T)0, A, nJ), "G_I G_J^T");
        CB(sks__gemm(Tr, N, nJ, b, d, (T)1, UI, d, UI, d, (T)0, B, nJ), "U_I U_J^T");
        CB(sks__gemm(Tr, N, nJ, b, d, (T)1, GI, d, UI, d, (T)0, C, nJ), "U_I G_J^T");
        CB(sks__gemm(Tr, N, nJ, b, d, (T)1, UI, d, GI, d, (T)0, Ct, nJ), "G_I U_J^T");
        sks__k_hadamard<T><<<sks__grid((size_t)b * nJ), 256, 0, g_cu.comp>>>(A, B, C, Ct, b, nJ);
        CU(cudaGetLastError(), "hadamard kernel");
        /* P^T (d, b) = Down_J (d, nJ) H^T (nJ, b) */
        CB(sks__gemm(Tr, N, d, b, nJ, (T)1, D + i0, f, A, nJ, (T)0, P, d), "H Down_J^T");
        sks__k_contract<T><<<(d + 255) / 256, 256, 0, g_cu.comp>>>(D, P, d, f, i0, b, o->part);
        CU(cudaGetLastError(), "contraction kernel");
        CU(cudaMemcpyAsync(part + (size_t)(blk - blk_lo) * d, o->part, (size_t)d * sizeof(double),
                           cudaMemcpyDeviceToHost, g_cu.comp), "partials download");
    }
    CU(cudaStreamSynchronize(g_cu.comp), "screen");
    return 0;
}

static int sks__cu_partials(void *h, int block, int blk_lo, int blk_hi, double *part) {
    sks__cu_op *o = (sks__cu_op *)h;
    if (o->prec == SKS_QF_F64) return sks__cu_partials_t<double>(o, block, blk_lo, blk_hi, part);
    return sks__cu_partials_t<float>(o, block, blk_lo, blk_hi, part);
}

/* ---- traces --------------------------------------------------------------------------- */

template <typename T>
static int sks__cu_traces_t(sks__cu_op *o, double *out) {
    sks__k_rowdot<T><<<o->f, 256, 0, g_cu.comp>>>((const T *)o->G, (const T *)o->U, o->d, o->w);
    CU(cudaGetLastError(), "trace kernel");
    sks__k_rowdot_vec<T><<<o->d, 256, 0, g_cu.comp>>>((const T *)o->D, o->w, o->f, o->w + o->f);
    CU(cudaGetLastError(), "trace kernel");
    CU(cudaMemcpyAsync(out, o->w + o->f, (size_t)o->d * sizeof(double), cudaMemcpyDeviceToHost, g_cu.comp),
       "traces download");
    CU(cudaStreamSynchronize(g_cu.comp), "traces");
    return 0;
}

static int sks__cu_traces(void *h, double *out) {
    sks__cu_op *o = (sks__cu_op *)h;
    return o->prec == SKS_QF_F64 ? sks__cu_traces_t<double>(o, out) : sks__cu_traces_t<float>(o, out);
}

/* ---- forward GEMM --------------------------------------------------------------------- */

typedef struct {
    int in, T, out;
} sks__gw;

/* the rows [r0, r1) of W have arrived: Y[:, r0:r1]^T (r1 - r0, T) = W_rows X^T */
static int sks__gw_chunk(void *ud, int64_t r0, int64_t r1) {
    const sks__gw *g = (const sks__gw *)ud;
    CB(sks__gemm(CUBLAS_OP_T, CUBLAS_OP_N, (int)(r1 - r0), g->T, g->in, 1.0f, g_cu.dW + (size_t)r0 * g->in, g->in,
                 g_cu.dX, g->in, 0.0f, g_cu.dY + r0, g->out),
       "X W^T");
    return 0;
}

static int sks__cu_gemm_wt(int elem, const void *W, int out, int in, const float *X, int T, float *Y, int ldy) {
    int rc = sks__cu_init();
    if (rc) return rc;
    if (out <= 0 || in <= 0 || T <= 0 || ldy < out) return sks_fail(SKS_EARG, "cuda gemm_wt: bad arguments");
    if ((rc = sks__cu_grow(&g_cu.dW, &g_cu.nW, (size_t)out * in))) return rc;
    if ((rc = sks__cu_grow(&g_cu.dX, &g_cu.nX, (size_t)T * in))) return rc;
    if ((rc = sks__cu_grow(&g_cu.dY, &g_cu.nY, (size_t)T * out))) return rc;
    CU(cudaMemcpyAsync(g_cu.dX, X, (size_t)T * in * sizeof(float), cudaMemcpyHostToDevice, g_cu.comp), "X upload");
    sks__gw g = {in, T, out};
    rc = sks__upload<float>(g_cu.dW, W, elem, out, in, sks__gw_chunk, &g);
    if (rc) return rc;
    CU(cudaMemcpy2DAsync(Y, (size_t)ldy * sizeof(float), g_cu.dY, (size_t)out * sizeof(float),
                         (size_t)out * sizeof(float), T, cudaMemcpyDeviceToHost, g_cu.comp), "Y download");
    CU(cudaStreamSynchronize(g_cu.comp), "gemm_wt");
    return 0;
}

/* ---- the row ---------------------------------------------------------------------------- */

extern "C" const sks_qf_backend sks_qf_backend_cuda = {
    "cuda",            /* name */
    1,                 /* takes_raw */
    sks__cu_probe,
    sks__cu_bind,
    sks__cu_unbind,
    sks__cu_matvec,
    sks__cu_partials,
    sks__cu_traces,
    sks__cu_gemm_wt,
};

/* ---- benchmark helpers ------------------------------------------------------------------ */

__device__ static uint64_t sks__d_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* sum of four 16-bit uniforms, unit variance */
__device__ static double sks__d_normalish(uint64_t key) {
    uint64_t z = sks__d_mix(key);
    double s = 0.0;
    for (int i = 0; i < 4; i++) s += (double)((z >> (16 * i)) & 0xffff) * (1.0 / 65536.0);
    return (s - 2.0) * 1.7320508075688772;
}

template <typename T>
__global__ void sks__k_fill(T *x, size_t n, uint64_t seed, double scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = (T)(scale * sks__d_normalish(seed * 0x100000001b3ull + i));
}

/* planted channel p: 32 rows of G and U share a direction s_p (0.05 sqrt(d) s / ||s|| with
 * ||s|| ~ sqrt(d)), and Down[k_p, row] = 0.5, k_p = 97 (p + 1) mod d */
template <typename T>
__global__ void sks__k_plant(T *G, T *U, T *Dn, int d, int f, uint64_t seed, int p) {
    int j = blockIdx.x; /* 0..31 */
    int row = (int)(sks__d_mix(seed ^ (0xabcdull * (p + 1)) ^ ((uint64_t)j << 40)) % (uint64_t)f);
    for (int i = threadIdx.x; i < d; i += blockDim.x) {
        double s = 0.05 * sks__d_normalish((seed + 977ull * (p + 1)) * 0x9e37ull + i);
        G[(size_t)row * d + i] = (T)(0.02 * sks__d_normalish(seed * 31 + 7 * ((size_t)row * d + i)) + s);
        U[(size_t)row * d + i] = (T)(0.02 * sks__d_normalish(seed * 37 + 11 * ((size_t)row * d + i)) + s);
    }
    if (threadIdx.x == 0) Dn[(size_t)((97 * (p + 1)) % d) * f + row] = (T)0.5;
}

template <typename T>
static int sks__cu_synth(sks__cu_op *o, uint64_t seed, int plant) {
    size_t fd = (size_t)o->f * o->d;
    sks__k_fill<T><<<sks__grid(fd), 256, 0, g_cu.comp>>>((T *)o->G, fd, seed * 3 + 1, 0.02);
    sks__k_fill<T><<<sks__grid(fd), 256, 0, g_cu.comp>>>((T *)o->U, fd, seed * 3 + 2, 0.02);
    sks__k_fill<T><<<sks__grid(fd), 256, 0, g_cu.comp>>>((T *)o->D, fd, seed * 3 + 3, 0.02);
    for (int p = 0; p < plant; p++)
        sks__k_plant<T><<<32, 256, 0, g_cu.comp>>>((T *)o->G, (T *)o->U, (T *)o->D, o->d, o->f, seed, p);
    CU(cudaGetLastError(), "synthetic weights");
    CU(cudaStreamSynchronize(g_cu.comp), "synthetic weights");
    return 0;
}

extern "C" int sks_qf_cuda_bind_synthetic(int d, int f, uint64_t seed, int plant, int prec, struct sks_qf_op_s *op) {
    memset(op, 0, sizeof *op);
    if (d <= 0 || f <= 0 || (prec != SKS_QF_F32 && prec != SKS_QF_F64)) return sks_fail(SKS_EARG, "%s: bad arguments", __func__);
    sks__cu_op *o = NULL;
    int rc = sks__cu_alloc_op(d, f, prec, &o);
    if (rc) return rc;
    rc = prec == SKS_QF_F64 ? sks__cu_synth<double>(o, seed, plant) : sks__cu_synth<float>(o, seed, plant);
    if (rc) {
        sks__cu_unbind(o);
        return rc;
    }
    op->be = &sks_qf_backend_cuda;
    op->h = o;
    op->prec = prec;
    op->d = d;
    op->f = f;
    return 0;
}

extern "C" int sks_qf_cuda_download(const struct sks_qf_op_s *op, float *G, float *U, float *Down) {
    const sks__cu_op *o = (const sks__cu_op *)op->h;
    if (o->prec != SKS_QF_F32) return sks_fail(SKS_EARG, "%s: f32 bindings only", __func__);
    size_t fd = (size_t)o->f * o->d * sizeof(float);
    CU(cudaStreamSynchronize(g_cu.comp), "download");
    if (G) CU(cudaMemcpy(G, o->G, fd, cudaMemcpyDeviceToHost), "download");
    if (U) CU(cudaMemcpy(U, o->U, fd, cudaMemcpyDeviceToHost), "download");
    if (Down) CU(cudaMemcpy(Down, o->D, fd, cudaMemcpyDeviceToHost), "download");
    return 0;
}

/* GEMM rate of this GPU: n^3 SGEMM (FP32, or TF32 tensor cores) and DGEMM, best of reps */
extern "C" int sks_qf_cuda_gemm_rates(int n, int reps, double *fp32, double *tf32, double *fp64) {
    int rc = sks__cu_init();
    if (rc) return rc;
    size_t nn = (size_t)n * n;
    double *A = NULL, *B = NULL, *C = NULL;
    CU(cudaMalloc((void **)&A, nn * sizeof(double)), "gemm rate buffers");
    CU(cudaMalloc((void **)&B, nn * sizeof(double)), "gemm rate buffers");
    CU(cudaMalloc((void **)&C, nn * sizeof(double)), "gemm rate buffers");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double *outs[3] = {fp32, tf32, fp64};
    for (int mode = 0; mode < 3; mode++) {
        CB(cublasSetMathMode(g_cu.blas, mode == 1 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "math mode");
        if (mode == 0 || mode == 2) { /* operands in the element type of the GEMM */
            if (mode == 0) {
                sks__k_fill<float><<<sks__grid(nn), 256, 0, g_cu.comp>>>((float *)A, nn, 11, 1.0);
                sks__k_fill<float><<<sks__grid(nn), 256, 0, g_cu.comp>>>((float *)B, nn, 12, 1.0);
            } else {
                sks__k_fill<double><<<sks__grid(nn), 256, 0, g_cu.comp>>>(A, nn, 11, 1.0);
                sks__k_fill<double><<<sks__grid(nn), 256, 0, g_cu.comp>>>(B, nn, 12, 1.0);
            }
            CU(cudaGetLastError(), "fill");
        }
        double best = 0;
        for (int r = 0; r <= reps; r++) {
            cudaEventRecord(e0, g_cu.comp);
            if (mode == 2)
                CB(sks__gemm(CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, 1.0, A, n, B, n, 0.0, C, n), "dgemm");
            else
                CB(sks__gemm(CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, 1.0f, (const float *)A, n, (const float *)B, n, 0.0f,
                             (float *)C, n),
                   "sgemm");
            cudaEventRecord(e1, g_cu.comp);
            cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            double g = 2.0 * n * (double)n * n / (ms * 1e-3) * 1e-12;
            if (r > 0 && g > best) best = g; /* r = 0: warm-up */
        }
        if (outs[mode]) *outs[mode] = best;
    }
    CB(cublasSetMathMode(g_cu.blas, g_cu.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "math mode");
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    return 0;
}

extern "C" int sks_qf_cuda_set_tf32(int on) {
    int rc = sks__cu_init();
    if (rc) return rc;
    g_cu.tf32 = on != 0;
    CB(cublasSetMathMode(g_cu.blas, g_cu.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH), "math mode");
    return 0;
}
