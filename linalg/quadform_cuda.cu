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
#include <cusolverDn.h>
#include <cuda_runtime.h>

#include <lapacke.h>
#include <math.h>
#include <pthread.h>
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
    unsigned long long *dbad; /* non-finite values met by the conversion kernel */
    cusolverDnHandle_t solver;     /* made on the first GPU eigensolve */
    cusolverDnParams_t solver_params;
    /* gemm_wt buffers (grown on demand) */
    float *dW, *dX, *dY;
    size_t nW, nX, nY;
} sks__cu_ctx;

static sks__cu_ctx g_cu;

static cudaError_t sks__cu_malloc(void **p, size_t n); /* cudaMalloc, the weight cache given up when full */

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
    CU(cudaMalloc((void **)&g_cu.dbad, sizeof *g_cu.dbad), "counter");
    CU(cudaMemset(g_cu.dbad, 0, sizeof *g_cu.dbad), "counter");
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
    CU(sks__cu_malloc((void **)p, need * sizeof(float)), "device buffer");
    *n = need;
    return 0;
}

/* ---- kernels -------------------------------------------------------------------------- */

enum { SKS__EL_F32 = SKS_QF_ELEM_F32, SKS__EL_F16 = SKS_QF_ELEM_F16, SKS__EL_BF16 = SKS_QF_ELEM_BF16, SKS__EL_F64 = 7 };

static size_t sks__el_size(int el) { return el == SKS__EL_F64 ? 8 : el == SKS__EL_F32 ? 4 : 2; }

/* dst = src converted; with bad, the NaN and Inf values met are added to *bad (one
 * atomic per thread that met any) */
template <typename T>
__global__ void sks__k_convert(const void *src, int el, T *dst, size_t n, unsigned long long *bad) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t step = (size_t)gridDim.x * blockDim.x;
    unsigned long long nb = 0;
    for (; i < n; i += step) {
        double v;
        if (el == SKS__EL_F32) v = ((const float *)src)[i];
        else if (el == SKS__EL_F64) v = ((const double *)src)[i];
        else if (el == SKS__EL_BF16) v = __uint_as_float((unsigned)((const uint16_t *)src)[i] << 16);
        else v = __half2float(((const __half *)src)[i]);
        nb += !isfinite(v);
        dst[i] = (T)v;
    }
    if (bad && nb) atomicAdd(bad, nb);
}

/* The count of non-finite values the conversions since the last call met (waits for
 * the compute stream), and a fresh count. */
static int sks__cu_take_bad(unsigned long long *n) {
    CU(cudaStreamSynchronize(g_cu.comp), "non-finite count");
    CU(cudaMemcpy(n, g_cu.dbad, sizeof *n, cudaMemcpyDeviceToHost), "non-finite count");
    if (*n) CU(cudaMemset(g_cu.dbad, 0, sizeof *g_cu.dbad), "non-finite count");
    return 0;
}

/* PQ holds P = G V then Q = U V, each (f, m) as (m, f) column-major; afterwards it
 * holds D o Q then D o P (the order of the stacked [G; U] in the second GEMM):
 * PQ[t] = D_{ch[i]}[j] Q[t], PQ[f m + t] = D_{ch[i]}[j] P[t], t = j m + i. */
template <typename T>
__global__ void sks__k_scale_swap(T *PQ, const T *Down, const int *ch, int f, int m) {
    size_t n = (size_t)f * m;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        int j = (int)(t / m), i = (int)(t % m);
        T dk = Down[(size_t)ch[i] * f + j];
        T p = PQ[t], q = PQ[n + t];
        PQ[t] = dk * q;
        PQ[n + t] = dk * p;
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

/* sum of v over the block (blockDim.x a power of two, sh of blockDim.x doubles), the same
 * value in every thread */
__device__ static double sks__d_block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    double s = sh[0];
    __syncthreads();
    return s;
}

/* out[r] = sum_c X[r, c] Y[r, c] (rows of length n), f64; one block of 256 per row */
template <typename T>
__global__ void sks__k_rowdot(const T *X, const T *Y, int n, double *out) {
    __shared__ double sh[256];
    const T *x = X + (size_t)blockIdx.x * n, *y = Y + (size_t)blockIdx.x * n;
    double s = 0.0;
    for (int c = threadIdx.x; c < n; c += blockDim.x) s += (double)x[c] * (double)y[c];
    s = sks__d_block_sum(s, sh);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

/* out[k] = sum_j Down[k, j] w[j], f64; one block of 256 per k */
template <typename T>
__global__ void sks__k_rowdot_vec(const T *Down, const double *w, int f, double *out) {
    __shared__ double sh[256];
    const T *x = Down + (size_t)blockIdx.x * f;
    double s = 0.0;
    for (int c = threadIdx.x; c < f; c += blockDim.x) s += (double)x[c] * w[c];
    s = sks__d_block_sum(s, sh);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
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

static cublasStatus_t sks__gemm_sb(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float al,
                                   const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                                   float be, float *C, int ldc, long long sc, int batch) {
    return cublasSgemmStridedBatched(g_cu.blas, ta, tb, m, n, k, &al, A, lda, sa, B, ldb, sb, &be, C, ldc, sc, batch);
}
static cublasStatus_t sks__gemm_sb(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double al,
                                   const double *A, int lda, long long sa, const double *B, int ldb, long long sb,
                                   double be, double *C, int ldc, long long sc, int batch) {
    return cublasDgemmStridedBatched(g_cu.blas, ta, tb, m, n, k, &al, A, lda, sa, B, ldb, sb, &be, C, ldc, sc, batch);
}

/* ---- streamed upload with conversion ------------------------------------------------- */

/* memcpy into a pinned staging buffer on up to 8 threads: one thread's copy (~10 GB/s)
 * would bound the stream of weights below the host-to-device link */
typedef struct {
    char *dst;
    const char *src;
    size_t n;
} sks__cp_job;

static void *sks__cp_worker(void *ud) {
    const sks__cp_job *j = (const sks__cp_job *)ud;
    memcpy(j->dst, j->src, j->n);
    return NULL;
}

static void sks__par_memcpy(void *dst, const void *src, size_t n) {
    enum { NT = 8 };
    const size_t piece = (n / NT + 4095) & ~(size_t)4095;
    if (n < ((size_t)4 << 20) || piece == 0) {
        memcpy(dst, src, n);
        return;
    }
    sks__cp_job jobs[NT];
    pthread_t th[NT];
    int started[NT] = {0}, nj = 0;
    for (size_t off = 0; off < n && nj < NT; off += piece, nj++) {
        jobs[nj] = (sks__cp_job){(char *)dst + off, (const char *)src + off, n - off < piece ? n - off : piece};
        started[nj] = nj > 0 && pthread_create(&th[nj], NULL, sks__cp_worker, &jobs[nj]) == 0;
    }
    for (int t = 0; t < nj; t++)
        if (t == 0 || !started[t]) sks__cp_worker(&jobs[t]);
    for (int t = 1; t < nj; t++)
        if (started[t]) pthread_join(th[t], NULL);
}

/* Rows [0, nrow) of a host array (row length ncol, encoding el) into dst (T) on the GPU,
 * chunk by chunk through the two staging buffers; after each chunk's conversion
 * on_chunk(ud, r0, r1) is enqueued on the compute stream (NULL: none). Returns after
 * everything is enqueued; the compute stream orders what follows. */
typedef int (*sks__chunk_fn)(void *ud, int64_t r0, int64_t r1);

template <typename T>
static int sks__upload(T *dst, const void *src, int el, int64_t nrow, int64_t ncol, sks__chunk_fn on_chunk, void *ud,
                       char *keep) {
    const size_t es = sks__el_size(el), rowb = (size_t)ncol * es;
    int64_t rows = (int64_t)(SKS__CU_STAGE / rowb);
    if (rows < 1) return sks_fail(SKS_EUNSUPPORTED, "cuda: a row of %lld values exceeds the staging buffer", (long long)ncol);
    int c = 0;
    for (int64_t r0 = 0; r0 < nrow; r0 += rows, c ^= 1) {
        int64_t nr = nrow - r0 < rows ? nrow - r0 : rows;
        size_t bytes = (size_t)nr * rowb;
        /* the staging pair c is free once its previous conversion ran */
        CU(cudaEventSynchronize(g_cu.freed[c]), "staging wait");
        sks__par_memcpy(g_cu.pin[c], (const char *)src + (size_t)r0 * rowb, bytes);
        /* into the device staging buffer, or into the kept copy (the weight cache) */
        void *dsrc = keep ? (void *)(keep + (size_t)r0 * rowb) : g_cu.dstage[c];
        CU(cudaMemcpyAsync(dsrc, g_cu.pin[c], bytes, cudaMemcpyHostToDevice, g_cu.copy), "upload");
        CU(cudaEventRecord(g_cu.copied[c], g_cu.copy), "event");
        CU(cudaStreamWaitEvent(g_cu.comp, g_cu.copied[c], 0), "event wait");
        size_t n = (size_t)nr * (size_t)ncol;
        /* stored 16-bit weights are counted for NaN/Inf as the host conversion does */
        unsigned long long *bad = el == SKS__EL_F16 || el == SKS__EL_BF16 ? g_cu.dbad : NULL;
        sks__k_convert<T><<<sks__grid(n), 256, 0, g_cu.comp>>>(dsrc, el, dst + (size_t)r0 * ncol, n, bad);
        CU(cudaGetLastError(), "convert kernel");
        CU(cudaEventRecord(g_cu.freed[c], g_cu.comp), "event");
        if (on_chunk) {
            int rc = on_chunk(ud, r0, r0 + nr);
            if (rc) return rc;
        }
    }
    return 0;
}


/* ---- the weight cache -------------------------------------------------------------------- */

/* Frozen model weights (SKS_QF_ELEM_KEEP) stay on the GPU as stored (f32 / f16 / bf16
 * bytes), keyed by host address and size, the least recently used out first, within a
 * budget: half the GPU memory free at first use, or SKS_CUDA_WCACHE_MB (0 turns it off).
 * A forward pass after spikes, or a second pass, then converts them from GPU memory
 * instead of streaming them over the host link again. Everything is dropped when
 * sks_weights_epoch() moves (a model was closed), before a freed address can hold other
 * weights, and when a GPU allocation fails. */
typedef struct {
    const void *host;
    size_t bytes;
    char *dev;
    uint64_t used;
    int ready;
} sks__wc_ent;

static struct {
    sks__wc_ent *e;
    int n, cap, init;
    size_t total, budget;
    uint64_t tick, epoch;
} g_wc;

static void sks__wc_drop_all(void) {
    if (!g_wc.n) return;
    cudaStreamSynchronize(g_cu.comp);
    cudaStreamSynchronize(g_cu.copy);
    for (int i = 0; i < g_wc.n; i++) cudaFree(g_wc.e[i].dev);
    g_wc.n = 0;
    g_wc.total = 0;
}

static void sks__wc_remove(int i) {
    cudaStreamSynchronize(g_cu.comp);
    cudaStreamSynchronize(g_cu.copy);
    cudaFree(g_wc.e[i].dev);
    g_wc.total -= g_wc.e[i].bytes;
    g_wc.e[i] = g_wc.e[--g_wc.n];
}

/* cudaMalloc that drops the weight cache and tries again when the GPU is full */
static cudaError_t sks__cu_malloc(void **p, size_t n) {
    cudaError_t e = cudaMalloc(p, n);
    if (e == cudaErrorMemoryAllocation && g_wc.n) {
        (void)cudaGetLastError();
        sks__wc_drop_all();
        e = cudaMalloc(p, n);
    }
    return e;
}

/* The kept copy of (host, bytes): *hit = 1 when it holds the bytes already; else a fresh
 * one for the caller to fill (sks__wc_done when filled). NULL: not kept. */
static char *sks__wc_get(const void *host, size_t bytes, int *hit) {
    *hit = 0;
    if (!g_wc.init) {
        const char *e = getenv("SKS_CUDA_WCACHE_MB");
        size_t fr = 0, tot = 0;
        if (e && *e) g_wc.budget = (size_t)strtoull(e, NULL, 10) << 20;
        else if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) g_wc.budget = fr / 2;
        g_wc.epoch = sks_weights_epoch();
        g_wc.init = 1;
    }
    const uint64_t ep = sks_weights_epoch();
    if (ep != g_wc.epoch) {
        sks__wc_drop_all();
        g_wc.epoch = ep;
    }
    if (!g_wc.budget || bytes > g_wc.budget) return NULL;
    for (int i = 0; i < g_wc.n; i++)
        if (g_wc.e[i].host == host && g_wc.e[i].bytes == bytes) {
            if (!g_wc.e[i].ready) {
                sks__wc_remove(i);
                break;
            }
            g_wc.e[i].used = ++g_wc.tick;
            *hit = 1;
            return g_wc.e[i].dev;
        }
    while (g_wc.n && g_wc.total + bytes > g_wc.budget) {
        int lru = 0;
        for (int i = 1; i < g_wc.n; i++)
            if (g_wc.e[i].used < g_wc.e[lru].used) lru = i;
        sks__wc_remove(lru);
    }
    if (g_wc.n == g_wc.cap) {
        int cap = g_wc.cap ? 2 * g_wc.cap : 64;
        sks__wc_ent *ne = (sks__wc_ent *)realloc(g_wc.e, (size_t)cap * sizeof *ne);
        if (!ne) return NULL;
        g_wc.e = ne;
        g_wc.cap = cap;
    }
    char *dev = NULL;
    if (cudaMalloc((void **)&dev, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* not kept: the weights are streamed as without a cache */
        return NULL;
    }
    g_wc.e[g_wc.n++] = (sks__wc_ent){host, bytes, dev, ++g_wc.tick, 0};
    g_wc.total += bytes;
    return dev;
}

/* the copy at dev was filled (ok) or is to be forgotten */
static void sks__wc_done(char *dev, int ok) {
    for (int i = 0; i < g_wc.n; i++)
        if (g_wc.e[i].dev == dev) {
            if (ok) g_wc.e[i].ready = 1;
            else sks__wc_remove(i);
            return;
        }
}

/* Weights (nrow, ncol) encoded el (SKS_QF_ELEM_KEEP or'ed in: frozen model data) into
 * dst on the GPU as sks__upload does, through the weight cache where they may be kept. */
template <typename T>
static int sks__weights_in(T *dst, const void *src, int el, int64_t nrow, int64_t ncol, sks__chunk_fn on_chunk,
                           void *ud) {
    const int keep = el & SKS_QF_ELEM_KEEP;
    el &= ~SKS_QF_ELEM_KEEP;
    if (keep) {
        int hit = 0;
        const size_t n = (size_t)nrow * (size_t)ncol;
        char *dev = sks__wc_get(src, n * sks__el_size(el), &hit);
        if (dev && hit) {
            unsigned long long *bad = el == SKS__EL_F16 || el == SKS__EL_BF16 ? g_cu.dbad : NULL;
            sks__k_convert<T><<<sks__grid(n), 256, 0, g_cu.comp>>>(dev, el, dst, n, bad);
            CU(cudaGetLastError(), "convert kernel");
            return on_chunk ? on_chunk(ud, 0, nrow) : 0;
        }
        if (dev) {
            int rc = sks__upload<T>(dst, src, el, nrow, ncol, on_chunk, ud, dev);
            sks__wc_done(dev, rc == 0);
            return rc;
        }
    }
    return sks__upload<T>(dst, src, el, nrow, ncol, on_chunk, ud, NULL);
}

/* ---- bindings ------------------------------------------------------------------------ */

typedef struct {
    int prec, d, f;
    void *G, *U, *D;        /* device (f, d), (f, d), (d, f); U = G + f d: [G; U] is one (2f, d) array */
    void *V, *Y, *PQ;       /* matvec buffers, m_cap columns: V, Y (d, m), PQ (2f, m) */
    int *ch;
    int m_cap;
    void *YS;               /* split-K partial products of the second GEMM, ys_cap values */
    size_t ys_cap;
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
    void *bufs[] = {o->G, o->D, o->V, o->Y, o->PQ, o->ch, o->S, o->part, o->w, o->YS};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    free(o);
}

template <typename T>
static int sks__cu_load(sks__cu_op *o, const void *G, const void *U, const void *D, int el) {
    int rc = sks__weights_in<T>((T *)o->G, G, el, o->f, o->d, NULL, NULL);
    if (!rc) rc = sks__weights_in<T>((T *)o->U, U, el, o->f, o->d, NULL, NULL);
    if (!rc) rc = sks__weights_in<T>((T *)o->D, D, el, o->d, o->f, NULL, NULL);
    unsigned long long bad = 0;
    if (!rc) rc = sks__cu_take_bad(&bad);
    /* the caller converts on the host instead, where the check names the tensor and
     * --allow-nonfinite applies */
    if (!rc && bad) rc = sks_fail(SKS_ENONFINITE, "cuda: %llu NaN or Inf weights in an FFN", bad);
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
    cudaError_t e = sks__cu_malloc((void **)&o->G, 2 * fd * ps);
    if (e == cudaSuccess) o->U = (char *)o->G + fd * ps;
    if (e == cudaSuccess) e = sks__cu_malloc((void **)&o->D, fd * ps);
    if (e == cudaSuccess) e = sks__cu_malloc((void **)&o->w, ((size_t)f + d) * sizeof(double));
    if (e == cudaSuccess) e = sks__cu_malloc((void **)&o->part, (size_t)d * sizeof(double));
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
    void *bufs[] = {o->V, o->Y, o->PQ, o->ch};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    o->V = o->Y = o->PQ = NULL;
    o->ch = NULL;
    o->m_cap = 0;
    size_t ps = sks__ps(o->prec);
    CU(sks__cu_malloc((void **)&o->V, (size_t)o->d * m * ps), "matvec buffer");
    CU(sks__cu_malloc((void **)&o->Y, (size_t)o->d * m * ps), "matvec buffer");
    CU(sks__cu_malloc((void **)&o->PQ, (size_t)2 * o->f * m * ps), "matvec buffer");
    CU(sks__cu_malloc((void **)&o->ch, (size_t)m * sizeof(int)), "matvec buffer");
    o->m_cap = m;
    return 0;
}

/* Y[t] = sum_j YS[j n + t] */
template <typename T>
__global__ void sks__k_sum_parts(const T *YS, int S, size_t n, T *Y) {
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (size_t)gridDim.x * blockDim.x) {
        T a = YS[t];
        for (int j = 1; j < S; j++) a += YS[(size_t)j * n + t];
        Y[t] = a;
    }
}

/* Split-K factor of the operator's second GEMM for m columns: 8 (SKS_CUDA_OP_SPLIT=S
 * sets it; 0 or 1 = one GEMM), lowered until it divides 2f. Measured on the 7B shape with
 * 64 and 256 columns (bench-cuda --sweep): a few % of the eigenpairs' time. */
static int sks__op_split(int m, int f) {
    (void)m;
    const char *e = getenv("SKS_CUDA_OP_SPLIT");
    int S = e && *e ? atoi(e) : 8;
    if (S < 1) S = 1;
    while (S > 1 && (2 * f) % S) S--;
    return S;
}

/* Y = S_{ch[i]} V[:, i] on the GPU: o->V, o->Y (d, m) row-major, o->ch (m), enqueued on
 * the compute stream. Two GEMMs over the stacked [G; U] (2f, d):
 *   [P; Q] = [G; U] V,  [P; Q] <- [D o Q; D o P],  Y = 1/2 [G; U]^T [D o Q; D o P]. */
template <typename T>
static int sks__cu_apply(sks__cu_op *o, int m) {
    const int d = o->d, f = o->f;
    T *dV = (T *)o->V, *dY = (T *)o->Y, *PQ = (T *)o->PQ;
    const T *GU = (const T *)o->G, *D = (const T *)o->D;
    const cublasOperation_t N = CUBLAS_OP_N, Tr = CUBLAS_OP_T;
    /* [P^T Q^T] (m, 2f) = V^T (m, d) [G; U]^T (d, 2f) */
    CB(sks__gemm(N, N, m, 2 * f, d, (T)1, dV, m, GU, d, (T)0, PQ, m), "[G; U] V");
    sks__k_scale_swap<T><<<sks__grid((size_t)f * m), 256, 0, g_cu.comp>>>(PQ, D, o->ch, f, m);
    CU(cudaGetLastError(), "scale kernel");
    /* Y^T (m, d) = 1/2 [(D o Q)^T (D o P)^T] (m, 2f) [G; U] (2f, d) */
    const int S = sks__op_split(m, f);
    if (S <= 1) {
        CB(sks__gemm(N, Tr, m, d, 2 * f, (T)0.5, PQ, m, GU, d, (T)0, dY, m), "[G; U]^T [Q; P]");
        return 0;
    }
    /* split-K: with few columns the (m, d) product has too few output tiles for the GPU
     * over its long inner dimension 2f; S strided products over 2f / S rows each, then
     * their sum */
    const size_t md = (size_t)m * d, kc = (size_t)2 * f / S;
    if (S * md > o->ys_cap) {
        if (o->YS) cudaFree(o->YS);
        o->YS = NULL;
        o->ys_cap = 0;
        CU(sks__cu_malloc(&o->YS, S * md * sizeof(T)), "split-K buffer");
        o->ys_cap = S * md;
    }
    T *YS = (T *)o->YS;
    CB(sks__gemm_sb(N, Tr, m, d, (int)kc, (T)0.5, PQ, m, (long long)(kc * m), GU, d, (long long)(kc * d), (T)0, YS, m,
                    (long long)md, S),
       "[G; U]^T [Q; P] (split)");
    sks__k_sum_parts<T><<<sks__grid(md), 256, 0, g_cu.comp>>>(YS, S, md, dY);
    CU(cudaGetLastError(), "split-K sum");
    return 0;
}

template <typename T>
static int sks__cu_matvec_t(sks__cu_op *o, const int *ch, int m, const T *V, int ldv, T *Y, int ldy) {
    int rc = sks__cu_matvec_room(o, m);
    if (rc) return rc;
    const int d = o->d;
    CU(cudaMemcpy2DAsync(o->V, (size_t)m * sizeof(T), V, (size_t)ldv * sizeof(T), (size_t)m * sizeof(T), d,
                         cudaMemcpyHostToDevice, g_cu.comp), "matvec upload");
    CU(cudaMemcpyAsync(o->ch, ch, (size_t)m * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "matvec upload");
    if ((rc = sks__cu_apply<T>(o, m))) return rc;
    CU(cudaMemcpy2DAsync(Y, (size_t)ldy * sizeof(T), o->Y, (size_t)m * sizeof(T), (size_t)m * sizeof(T), d,
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
        CU(sks__cu_malloc((void **)&o->S, ((size_t)4 * bs * f + (size_t)bs * d) * sizeof(T)), "screen workspace");
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
    rc = sks__weights_in<float>(g_cu.dW, W, elem, out, in, sks__gw_chunk, &g);
    if (rc) return rc;
    CU(cudaMemcpy2DAsync(Y, (size_t)ldy * sizeof(float), g_cu.dY, (size_t)out * sizeof(float),
                         (size_t)out * sizeof(float), T, cudaMemcpyDeviceToHost, g_cu.comp), "Y download");
    unsigned long long bad = 0;
    if ((rc = sks__cu_take_bad(&bad))) return rc;
    /* the caller redoes the product on the host, where the check names the tensor and
     * --allow-nonfinite applies */
    if (bad) return sks_fail(SKS_ENONFINITE, "cuda gemm_wt: %llu NaN or Inf weights", bad);
    return 0;
}

/* ---- the row ---------------------------------------------------------------------------- */

static int sks__cu_top_eigs(void *h, const int *ch, int m, const sks_eigs_opts *o, sks_eigs_extra *x, double *evals,
                            double *evecs, sks_eigs_info *info);
static void sks__cu_eig_defaults(int prec, int n, int r, int *block, int *krylov_dim);

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
    sks__cu_top_eigs,
    sks__cu_eig_defaults,
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

/* ---- the eigensolver on the GPU ------------------------------------------------------
 *
 * sks_qf_top_eigs for a whole channel block with everything on the GPU: the thick-restart
 * block Lanczos of eigs.c (Rayleigh-Ritz form, expansion by the residuals of the first
 * nb unconverged Ritz pairs, thick restart to the `keep` best Ritz vectors), run for all
 * problems in lockstep. Problems that started together have the same basis size k after
 * every round (each round adds nb vectors, a restart cuts every basis to keep), so one
 * strided-batched DGEMM does a step of all of them; a problem that is done leaves the
 * batch, and the last active one moves into its slot (slots 0 .. nact-1 stay dense).
 *
 * Per slot s: V, W (n, kmax) column-major f64 (basis vectors and W = S V as columns),
 * H = V^T S V (kmax, kmax). One round:
 *   1. the pending nb columns V[:, k:k+nb] of every slot, converted to the operator's
 *      precision, are one batched matvec (sks__cu_apply) of nact nb columns;
 *   2. H[:, k0:k] = V^T W[:, k0:k] (batched DGEMM), symmetrized on its new block;
 *   3. H = Z diag(theta) Z^T by cusolverDnXsyevBatched (f64), pairs sorted by |theta|;
 *   4. Ritz vectors Yb = V Z[:, :nres] and residuals R = W Z[:, :nres] - Yb diag(theta)
 *      (two batched DGEMMs, nres = min(k, r + nb)), their relative norms;
 *   5. theta and the residual norms (nact (r + nb) values) go to the host, which applies
 *      the convergence test of eigs.c (tol relative, or norm_tol |theta_1|), the restart
 *      rule and the restart cap, and picks the expansion pairs;
 *   6. finished problems write their Ritz vectors (sign: largest |.| positive) into the
 *      device result; a restart is V <- V Z[:, :keep], W <- W Z[:, :keep] (W stays S V),
 *      H <- diag(theta); the chosen residuals become V[:, k:k+nb], orthonormalized by
 *      block classical Gram-Schmidt against V twice, each pass followed by modified
 *      Gram-Schmidt inside the block (a third pass when a vector lost more than 1 - 1e-3
 *      of its norm); a vector that lost more than 1 - 1e-8 is replaced by a random one.
 * Only steps 5 and the breakdown check synchronize with the host (two small copies per
 * round). Basis, projections, Rayleigh-Ritz and norms are f64, as on the CPU; only the
 * operator is f32 (or f64 for an f64 binding). A problem is taken when its basis cannot
 * span the space (kmax + nb <= n) and no start vectors are given; otherwise the caller
 * falls back to the generic solver. */

#define SKS__EV_T 256 /* threads of the per-slot kernels */

__device__ static double sks__d_gauss(uint64_t key) {
    uint64_t a = sks__d_mix(key), b = sks__d_mix(key ^ 0x5851f42d4c957f2dull);
    double u1 = ((double)(a >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = ((double)(b >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cospi(2.0 * u2);
}

/* column j of slot s's new block: sel[s nb + j] >= 0 copies residual column sel of R,
 * -1 writes a random vector, -2 keeps the column */
__global__ void sks__k_ev_expand(double *V, const double *R, const double *W, int n, int k, int nb, int kmax,
                                 int nresmax, const int *sel, const int *prob, uint64_t seed, int tag) {
    const int y = blockIdx.y, s = y / nb, j = y % nb, c = sel[y];
    if (c == -2) return;
    double *dst = V + (size_t)s * kmax * n + (size_t)(k + j) * n;
    const double *src = c == -3 ? W + (size_t)s * kmax * n + (size_t)(k - nb + j) * n
                                : R + (size_t)s * nresmax * n + (size_t)(c < 0 ? 0 : c) * n;
    const uint64_t key = sks__d_mix(seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(prob[s] + 1))) ^ ((uint64_t)tag << 40) ^
                         ((uint64_t)j << 32);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        dst[i] = c >= 0 || c == -3 ? src[i] : sks__d_gauss(key + (uint64_t)i);
}

/* nrm0[y] = ||x||, x /= ||x|| when it is positive and finite; x = column k + j of slot s */
__global__ void sks__k_ev_normalize(double *V, int n, int k, int nb, int kmax, double *nrm0) {
    __shared__ double sh[SKS__EV_T];
    const int y = blockIdx.x, s = y / nb, j = y % nb;
    double *x = V + (size_t)s * kmax * n + (size_t)(k + j) * n;
    double a = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) a += x[i] * x[i];
    const double nrm = sqrt(sks__d_block_sum(a, sh));
    if (threadIdx.x == 0) nrm0[y] = nrm;
    if (!(nrm > 0) || !isfinite(nrm)) return;
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] /= nrm;
}

/* modified Gram-Schmidt inside slot s's new block (one block per slot); ratio[s nb + j]
 * = the norm of column j after its projections (the columns come in with unit norm) */
__global__ void sks__k_ev_mgs(double *V, int n, int k, int nb, int kmax, double *ratio) {
    __shared__ double sh[SKS__EV_T];
    const int s = blockIdx.x;
    double *X = V + (size_t)s * kmax * n + (size_t)k * n;
    for (int j = 0; j < nb; j++) {
        double *xj = X + (size_t)j * n;
        for (int i = 0; i < j; i++) {
            const double *xi = X + (size_t)i * n;
            double a = 0;
            for (int t = threadIdx.x; t < n; t += blockDim.x) a += xi[t] * xj[t];
            const double dot = sks__d_block_sum(a, sh);
            for (int t = threadIdx.x; t < n; t += blockDim.x) xj[t] -= dot * xi[t];
            __syncthreads();
        }
        double a = 0;
        for (int t = threadIdx.x; t < n; t += blockDim.x) a += xj[t] * xj[t];
        const double nrm = sqrt(sks__d_block_sum(a, sh));
        if (threadIdx.x == 0 && ratio) ratio[s * nb + j] = nrm;
        if (nrm > 0 && isfinite(nrm))
            for (int t = threadIdx.x; t < n; t += blockDim.x) xj[t] /= nrm;
        __syncthreads();
    }
}

/* the pending columns of every slot to / from the operator's (n, m) row-major buffer:
 * column col = s nb + j of the buffer is column k + j of slot s */
template <typename T>
__global__ void sks__k_ev_gather(const double *V, int n, int k, int nb, int kmax, T *X, int m) {
    const size_t tot = (size_t)n * m;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < tot; t += (size_t)gridDim.x * blockDim.x) {
        const int col = (int)(t % m), i = (int)(t / m), s = col / nb, j = col % nb;
        X[t] = (T)V[(size_t)s * kmax * n + (size_t)(k + j) * n + i];
    }
}
template <typename T>
__global__ void sks__k_ev_scatter(double *W, int n, int k, int nb, int kmax, const T *Y, int m) {
    const size_t tot = (size_t)n * m;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < tot; t += (size_t)gridDim.x * blockDim.x) {
        const int col = (int)(t % m), i = (int)(t / m), s = col / nb, j = col % nb;
        W[(size_t)s * kmax * n + (size_t)(k + j) * n + i] = (double)Y[t];
    }
}

/* H[:, k0:k] and H[k0:k, :] from Hc = V^T W[:, k0:k] (k, nb; the new block's two
 * computed halves averaged), then H[:k, :k] packed (ld k) into Hs for the eigensolver */
__global__ void sks__k_ev_hupdate(double *H, const double *Hc, double *Hs, int k0, int nb, int kmax) {
    const int s = blockIdx.x, k = k0 + nb;
    double *Hs_ = H + (size_t)s * kmax * kmax;
    const double *C = Hc + (size_t)s * kmax * nb;
    for (int t = threadIdx.x; t < k * nb; t += blockDim.x) {
        const int i = t % k, j = t / k, jj = k0 + j;
        const double h = C[i + (size_t)j * kmax];
        if (i < k0) {
            Hs_[i + (size_t)jj * kmax] = Hs_[jj + (size_t)i * kmax] = h;
        } else if (i - k0 <= j) {
            const double v = 0.5 * (h + C[jj + (size_t)(i - k0) * kmax]);
            Hs_[i + (size_t)jj * kmax] = Hs_[jj + (size_t)i * kmax] = v;
        }
    }
    __syncthreads();
    double *P = Hs + (size_t)s * k * k;
    for (int t = threadIdx.x; t < k * k; t += blockDim.x) P[t] = Hs_[t % k + (size_t)(t / k) * kmax];
}

/* eigenpairs of slot s (ascending, from the eigensolver) sorted by |theta| descending,
 * ties by index: Z (kmax, kmax) column c = pair c, theta (kmax) */
__global__ void sks__k_ev_sort(const double *Hs, const double *ev, int k, int kmax, double *Z, double *theta) {
    __shared__ int order[256];
    const int s = blockIdx.x;
    const double *w = ev + (size_t)s * k;
    if (threadIdx.x == 0) {
        for (int i = 0; i < k; i++) order[i] = i;
        for (int i = 1; i < k; i++) {
            int t = order[i], j = i - 1;
            while (j >= 0 && (fabs(w[order[j]]) < fabs(w[t]) || (fabs(w[order[j]]) == fabs(w[t]) && order[j] > t))) {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = t;
        }
    }
    __syncthreads();
    const double *E = Hs + (size_t)s * k * k;
    double *Zs = Z + (size_t)s * kmax * kmax;
    for (int t = threadIdx.x; t < k * k; t += blockDim.x) {
        const int i = t % k, c = t / k;
        Zs[i + (size_t)c * kmax] = E[i + (size_t)order[c] * k];
    }
    for (int c = threadIdx.x; c < k; c += blockDim.x) theta[(size_t)s * kmax + c] = w[order[c]];
}

/* R[:, c] -= theta_c Yb[:, c]; view (slot s) = theta[0:nresmax], rel[0:nresmax] with
 * rel_c = ||R[:, c]|| / |theta_c|; one block per (c, s) */
__global__ void sks__k_ev_resid(double *R, const double *Yb, const double *theta, int n, int nresmax, int kmax,
                                double *view) {
    __shared__ double sh[SKS__EV_T];
    const int c = blockIdx.x, s = blockIdx.y;
    const double th = theta[(size_t)s * kmax + c];
    double *rc = R + (size_t)s * nresmax * n + (size_t)c * n;
    const double *y = Yb + (size_t)s * nresmax * n + (size_t)c * n;
    double a = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const double v = rc[i] - th * y[i];
        rc[i] = v;
        a += v * v;
    }
    const double rn = sqrt(sks__d_block_sum(a, sh));
    if (threadIdx.x == 0) {
        view[(size_t)s * 2 * nresmax + c] = th;
        view[(size_t)s * 2 * nresmax + nresmax + c] = th != 0.0 ? rn / fabs(th) : (rn == 0.0 ? 0.0 : INFINITY);
    }
}

/* Ritz vector c of the finished slot fin[2 e] (problem fin[2 e + 1]) into the result
 * (nprob, n, r): unit norm, largest-|.| component (first of equals) positive */
__global__ void sks__k_ev_finalize(const double *Yb, int n, int r, int nres, int nresmax, const int *fin,
                                   double *evecs) {
    __shared__ double sh[SKS__EV_T];
    __shared__ double bv[SKS__EV_T];
    __shared__ int bi[SKS__EV_T];
    const int c = blockIdx.x, s = fin[2 * blockIdx.y], p = fin[2 * blockIdx.y + 1];
    double *out = evecs + (size_t)p * n * r;
    if (c >= nres) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) out[(size_t)i * r + c] = NAN;
        return;
    }
    const double *y = Yb + (size_t)s * nresmax * n + (size_t)c * n;
    double a = 0, best = -1;
    int bidx = n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        a += y[i] * y[i];
        if (fabs(y[i]) > best) best = fabs(y[i]), bidx = i;
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = bidx;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) {
            const double o = bv[threadIdx.x + w];
            const int oi = bi[threadIdx.x + w];
            if (o > bv[threadIdx.x] || (o == bv[threadIdx.x] && oi < bi[threadIdx.x])) bv[threadIdx.x] = o, bi[threadIdx.x] = oi;
        }
        __syncthreads();
    }
    const double nrm = sqrt(sks__d_block_sum(a, sh));
    const double sc = (y[bi[0]] < 0 ? -1.0 : 1.0) / nrm;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[(size_t)i * r + c] = sc * y[i];
}

/* H <- diag(theta[0:keep]) after a thick restart */
__global__ void sks__k_ev_hrestart(double *H, const double *theta, int keep, int kmax) {
    const int s = blockIdx.x;
    double *Hs = H + (size_t)s * kmax * kmax;
    for (int t = threadIdx.x; t < kmax * kmax; t += blockDim.x) {
        const int i = t % kmax, j = t / kmax;
        Hs[t] = i == j && i < keep ? theta[(size_t)s * kmax + i] : 0.0;
    }
}

static cublasStatus_t sks__dgemm_sb(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double al,
                                    const double *A, int lda, long long sa, const double *B, int ldb, long long sb,
                                    double be, double *C, int ldc, long long sc, int batch) {
    return cublasDgemmStridedBatched(g_cu.blas, ta, tb, m, n, k, &al, A, lda, sa, B, ldb, sb, &be, C, ldc, sc, batch);
}

typedef struct {
    int n, r, nb, kmax, keep, nresmax, P;
    double *V, *W, *tmp, *H, *Z, *Hs, *ev, *theta, *Yb, *R, *Hc, *C, *view, *flag, *evecs;
    int *sel, *fin, *info, *prob; /* device: expansion choice, finished (slot, problem), eigensolver info, slot -> problem */
    void *work;                 /* cusolver device workspace */
    size_t work_n;
    void *hwork;                /* cusolver host workspace */
    size_t hwork_n;
    double *view_h, *flag_h;    /* pinned */
    int *sel_h, *fin_h, *ch_h, *info_h, *prob_h;
    cudaEvent_t e0, e1;
} sks__ev;

static void sks__ev_free(sks__ev *e) {
    cudaStreamSynchronize(g_cu.comp);
    void *d[] = {e->V, e->W, e->tmp, e->H, e->Z, e->Hs, e->ev, e->theta, e->Yb, e->R, e->Hc, e->C, e->view, e->flag,
                 e->evecs, e->sel, e->fin, e->info, e->prob, e->work};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i]) cudaFree(d[i]);
    void *h[] = {e->view_h, e->flag_h, e->sel_h, e->fin_h, e->ch_h, e->info_h, e->prob_h};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        if (h[i]) cudaFreeHost(h[i]);
    free(e->hwork);
    if (e->e0) cudaEventDestroy(e->e0);
    if (e->e1) cudaEventDestroy(e->e1);
}

static int sks__ev_alloc(sks__ev *e) {
    const size_t P = (size_t)e->P, n = (size_t)e->n, km = (size_t)e->kmax, nr = (size_t)e->nresmax, nb = (size_t)e->nb;
    struct {
        double **p;
        size_t cnt;
    } dd[] = {{&e->V, P * km * n},  {&e->W, P * km * n},  {&e->tmp, P * km * n}, {&e->H, P * km * km},
              {&e->Z, P * km * km}, {&e->Hs, P * km * km}, {&e->ev, P * km},     {&e->theta, P * km},
              {&e->Yb, P * nr * n}, {&e->R, P * nr * n},  {&e->Hc, P * km * nb}, {&e->C, P * km * nb},
              {&e->view, P * 2 * nr}, {&e->flag, P * 2 * nb}, {&e->evecs, P * n * (size_t)e->r}};
    for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++) {
        cudaError_t err = sks__cu_malloc((void **)dd[i].p, dd[i].cnt * sizeof(double));
        if (err != cudaSuccess)
            return sks_fail(SKS_ENOMEM, "cuda eigensolver: GPU memory for %zu problems of %zu x %zu (%s)", P, n, km,
                            cudaGetErrorString(err));
    }
    CU(sks__cu_malloc((void **)&e->sel, P * nb * sizeof(int)), "eigensolver buffers");
    CU(sks__cu_malloc((void **)&e->fin, P * 2 * sizeof(int)), "eigensolver buffers");
    CU(sks__cu_malloc((void **)&e->info, P * sizeof(int)), "eigensolver buffers");
    CU(sks__cu_malloc((void **)&e->prob, P * sizeof(int)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->prob_h, P * sizeof(int)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->view_h, P * 2 * nr * sizeof(double)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->flag_h, P * 2 * nb * sizeof(double)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->sel_h, P * nb * sizeof(int)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->fin_h, P * 2 * sizeof(int)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->ch_h, P * nb * sizeof(int)), "eigensolver buffers");
    CU(cudaMallocHost((void **)&e->info_h, P * sizeof(int)), "eigensolver buffers");
    CU(cudaEventCreate(&e->e0), "event");
    CU(cudaEventCreate(&e->e1), "event");
    CU(cudaMemsetAsync(e->H, 0, P * km * km * sizeof(double), g_cu.comp), "eigensolver buffers");
    CU(cudaMemsetAsync(e->info, 0, P * sizeof(int), g_cu.comp), "eigensolver buffers");
    return 0;
}

/* New columns k .. k+nb of the nact slots (as written by sks__k_ev_expand, sel in
 * e->sel) orthonormalized against V[:, :k] and each other; random replacements for
 * columns that were (nearly) in the span. *tag numbers the random draws. */
static int sks__ev_orth(sks__ev *e, int nact, int k, const int *prob_d, uint64_t seed, int *tag) {
    const int n = e->n, nb = e->nb, km = e->kmax, y = nact * nb;
    const long long sV = (long long)km * n, sC = (long long)km * nb;
    double *X = e->V + (size_t)k * n;
    for (int attempt = 0; attempt < 6; attempt++) {
        sks__k_ev_normalize<<<y, SKS__EV_T, 0, g_cu.comp>>>(e->V, n, k, nb, km, e->flag);
        int passes = 2;
        for (int pass = 0; pass < passes; pass++) {
            if (k > 0) {
                CB(sks__dgemm_sb(CUBLAS_OP_T, CUBLAS_OP_N, k, nb, n, 1.0, e->V, n, sV, X, n, sV, 0.0, e->C, km, sC, nact),
                   "V^T X");
                CB(sks__dgemm_sb(CUBLAS_OP_N, CUBLAS_OP_N, n, nb, k, -1.0, e->V, n, sV, e->C, km, sC, 1.0, X, n, sV, nact),
                   "X - V C");
            }
            sks__k_ev_mgs<<<nact, SKS__EV_T, 0, g_cu.comp>>>(e->V, n, k, nb, km, pass == 0 ? e->flag + y : NULL);
            CU(cudaGetLastError(), "orthogonalization kernels");
            if (pass == 0) {
                CU(cudaMemcpyAsync(e->flag_h, e->flag, (size_t)2 * y * sizeof(double), cudaMemcpyDeviceToHost, g_cu.comp),
                   "eigensolver download");
                CU(cudaStreamSynchronize(g_cu.comp), "orthogonalization");
                int bad = 0;
                for (int i = 0; i < y; i++) {
                    const double n0 = e->flag_h[i], q = e->flag_h[y + i];
                    const int b = !(n0 > 0) || !isfinite(n0) || !(q > 1e-8);
                    e->sel_h[i] = b ? -1 : -2;
                    bad |= b;
                    if (!b && q < 1e-3) passes = 3;
                }
                if (bad) break;
            }
        }
        int bad = 0;
        for (int i = 0; i < y; i++) bad |= e->sel_h[i] == -1;
        if (!bad) return 0;
        CU(cudaMemcpyAsync(e->sel, e->sel_h, (size_t)y * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "upload");
        sks__k_ev_expand<<<dim3((n + 255) / 256, y), 256, 0, g_cu.comp>>>(e->V, e->R, e->W, n, k, nb, km, e->nresmax,
                                                                        e->sel, prob_d, seed, (*tag)++);
        CU(cudaGetLastError(), "expansion kernel");
    }
    return sks_fail(SKS_EINTERNAL, "cuda eigensolver: no direction left to extend a basis of %d vectors in R^%d", k, n);
}

/* Rayleigh-Ritz on the host instead of cuSOLVER (SKS_CUDA_RR=host; for comparison):
 * the packed projections (nact, k, k) column-major, LAPACKE_dsyevd on up to 16 threads,
 * the same layout back (eigenvalues ascending, vectors as columns). */
typedef struct {
    double *A, *w;
    int k, s0, s1, info;
} sks__rr_job;

static void *sks__rr_worker(void *ud) {
    sks__rr_job *j = (sks__rr_job *)ud;
    for (int s = j->s0; s < j->s1 && !j->info; s++)
        j->info = (int)LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', j->k, j->A + (size_t)s * j->k * j->k, j->k,
                                      j->w + (size_t)s * j->k);
    return NULL;
}

static int sks__rr_host(double *Hs_d, double *ev_d, int k, int nact, double *hbuf) {
    const size_t kk = (size_t)k * k;
    double *A = hbuf, *w = hbuf + (size_t)nact * kk;
    CU(cudaMemcpyAsync(A, Hs_d, (size_t)nact * kk * sizeof(double), cudaMemcpyDeviceToHost, g_cu.comp), "download");
    CU(cudaStreamSynchronize(g_cu.comp), "Rayleigh-Ritz download");
    enum { NT = 16 };
    sks__rr_job jobs[NT];
    pthread_t th[NT];
    int started[NT] = {0}, nt = nact < NT ? nact : NT;
    for (int t = 0; t < nt; t++) {
        jobs[t] = (sks__rr_job){A, w, k, nact * t / nt, nact * (t + 1) / nt, 0};
        started[t] = t > 0 && pthread_create(&th[t], NULL, sks__rr_worker, &jobs[t]) == 0;
    }
    for (int t = 0; t < nt; t++)
        if (t == 0 || !started[t]) sks__rr_worker(&jobs[t]);
    for (int t = 1; t < nt; t++)
        if (started[t]) pthread_join(th[t], NULL);
    for (int t = 0; t < nt; t++)
        if (jobs[t].info) return sks_fail(SKS_ELAPACK, "cuda eigensolver: dsyevd failed on a %d x %d projection (info %d)", k, k, jobs[t].info);
    CU(cudaMemcpyAsync(Hs_d, A, (size_t)nact * kk * sizeof(double), cudaMemcpyHostToDevice, g_cu.comp), "upload");
    CU(cudaMemcpyAsync(ev_d, w, (size_t)nact * k * sizeof(double), cudaMemcpyHostToDevice, g_cu.comp), "upload");
    CU(cudaStreamSynchronize(g_cu.comp), "Rayleigh-Ritz upload");
    return 0;
}

/* Phase profile of the GPU solver (SKS_CUDA_EIGS_PROFILE=1): the stream is synchronized
 * after every phase and the wall time added to its slot; for finding where a round's
 * time goes, never on by default (the extra synchronizations cost time themselves). */
enum { SKS__EVP_OP, SKS__EVP_PROJ, SKS__EVP_RR, SKS__EVP_RITZ, SKS__EVP_HOST, SKS__EVP_RESTART, SKS__EVP_ORTH,
       SKS__EVP_MOVE, SKS__EVP_N };
static double g_evp[SKS__EVP_N + 1]; /* seconds per phase, then the rounds */
static int g_evp_on = -1;
static double g_evp_t;
static void sks__evp_mark(int phase) {
    if (g_evp_on < 0) {
        const char *e = getenv("SKS_CUDA_EIGS_PROFILE");
        g_evp_on = e && *e && strcmp(e, "0");
    }
    if (!g_evp_on) return;
    cudaStreamSynchronize(g_cu.comp);
    const double t = sks_now();
    if (phase >= 0) g_evp[phase] += t - g_evp_t;
    g_evp_t = t;
}

extern "C" int sks_qf_cuda_eigs_profile(double *sec, int n) {
    if (g_evp_on <= 0) return 0;
    for (int i = 0; i < n && i <= SKS__EVP_N; i++) sec[i] = g_evp[i];
    memset(g_evp, 0, sizeof g_evp);
    return SKS__EVP_N;
}

/* The per-problem state the host keeps (the device holds the bases). */
typedef struct {
    int iterations, matvecs, restarts, converged, nres;
    double theta[64], rel[64]; /* at most r + nb <= 64 pairs (checked) */
} sks__ev_prob;

/* eigs.c's test: pair c meets tol |theta_c|, or the floor norm_tol |theta_1| */
static int sks__ev_ok(const sks__ev_prob *q, int c, double tol, double norm_tol) {
    return q->rel[c] <= tol || q->rel[c] * fabs(q->theta[c]) <= norm_tol * fabs(q->theta[0]);
}

/* The GPU solver's block and basis where the caller chose none (bench-cuda --sweep on
 * the 7B shape, docs/benchmarks.md). */
static void sks__cu_eig_defaults(int prec, int n, int r, int *block, int *krylov_dim) {
    (void)prec;
    (void)r;
    *block = 1 < n ? 1 : n;
    *krylov_dim = 0;
}

/* Rounds per Rayleigh-Ritz: 4 (SKS_CUDA_EIGS_RR=N overrides; 1 = every round). On the
 * 7B shape, block 1, 64 channels: cuSOLVER's batched eigensolver of the projections was
 * 31% of the solver's time with one per round; every 4th round cut the eigenpairs by 24%
 * at +0.4% operator vectors (bench-cuda --sweep, docs/benchmarks.md). */
static int sks__ev_rr_every(int nb) {
    (void)nb;
    const char *e = getenv("SKS_CUDA_EIGS_RR");
    int v = e && *e ? atoi(e) : 4;
    return v < 1 ? 1 : v;
}

template <typename T>
static int sks__cu_eigs_t(sks__cu_op *o, const int *ch, int P, const sks_eigs_opts *op, sks_eigs_extra *x,
                          double *evals, double *evecs, sks_eigs_info *info) {
    const int n = o->d, r = op->r, nb = op->block > 0 ? (op->block < n ? op->block : n) : (op->r + 2 < n ? op->r + 2 : n);
    const int kmax = sks_eigs_basis_dim(n, r, nb, x ? x->krylov_dim : 0);
    int keep = r + nb > kmax / 2 ? r + nb : kmax / 2;
    if (keep > kmax - nb) keep = kmax - nb;
    if (keep < r) keep = r;
    /* the problems this solver takes; the rest go to the generic one */
    if ((x && x->start) || kmax + nb > n || kmax > 256 || r + nb > 64 || keep < r + nb) return 1;
    const double tol = op->tol > 0.0 ? op->tol : 1e-6, norm_tol = x && x->norm_tol > 0.0 ? x->norm_tol : 0.0;
    const int max_iter = op->max_iter > 0 ? op->max_iter : 1000, max_restarts = x && x->max_restarts > 0 ? x->max_restarts : 0;
    int rc = 0;
    if (!g_cu.solver) {
        if (cusolverDnCreate(&g_cu.solver) != CUSOLVER_STATUS_SUCCESS || cusolverDnCreateParams(&g_cu.solver_params) != CUSOLVER_STATUS_SUCCESS ||
            cusolverDnSetStream(g_cu.solver, g_cu.comp) != CUSOLVER_STATUS_SUCCESS) {
            g_cu.solver = NULL;
            return sks_fail(SKS_EINTERNAL, "cuSOLVER: could not create a handle");
        }
    }
    sks__ev e;
    memset(&e, 0, sizeof e);
    e.n = n, e.r = r, e.nb = nb, e.kmax = kmax, e.keep = keep, e.nresmax = r + nb, e.P = P;
    sks__ev_prob *st = (sks__ev_prob *)calloc((size_t)P, sizeof *st);
    int *done = (int *)calloc((size_t)P, sizeof *done);
    if (!st || !done) {
        free(st);
        free(done);
        return sks_fail(SKS_ENOMEM, "cuda eigensolver: out of memory");
    }
    const int km = kmax, nrm = e.nresmax;
    const long long sV = (long long)km * n, sH = (long long)km * km, sR = (long long)nrm * n;
    double op_ms = 0, *rr_buf = NULL;
    int rounds = 0, tag = 1, k = 0, nact = P, since_rr = 0;
    const int rr_every = sks__ev_rr_every(nb);
    const char *rr_env = getenv("SKS_CUDA_RR");
    const int rr_host = rr_env && !strcmp(rr_env, "host");
    if ((rc = sks__ev_alloc(&e)) || (rc = sks__cu_matvec_room(o, P * nb))) goto out;
    if (rr_host && cudaMallocHost((void **)&rr_buf, (size_t)P * (km * km + km) * sizeof(double)) != cudaSuccess) {
        rc = sks_fail(SKS_ENOMEM, "cuda eigensolver: pinned Rayleigh-Ritz buffer");
        goto out;
    }
    for (int s = 0; s < P; s++) {
        e.prob_h[s] = s;
        for (int j = 0; j < nb; j++) e.ch_h[s * nb + j] = ch[s], e.sel_h[s * nb + j] = -1;
    }
/* A status of type T other than OK: rc = ERR(status, what) and on to out. */
#define SKS__EV_TRY(T, call, OK, ERR, what)                                            \
    do {                                                                               \
        T st_ = (call);                                                                \
        if (st_ != (OK)) {                                                             \
            rc = ERR(st_, what);                                                       \
            goto out;                                                                  \
        }                                                                              \
    } while (0)
#define SKS__EV_CU(call, what) SKS__EV_TRY(cudaError_t, call, cudaSuccess, sks__cu_err, what)
#define SKS__EV_CB(call, what) SKS__EV_TRY(cublasStatus_t, call, CUBLAS_STATUS_SUCCESS, sks__blas_err, what)
    SKS__EV_CU(cudaMemcpyAsync(e.prob, e.prob_h, (size_t)P * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "upload");
    SKS__EV_CU(cudaMemcpyAsync(o->ch, e.ch_h, (size_t)P * nb * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "upload");
    SKS__EV_CU(cudaMemcpyAsync(e.sel, e.sel_h, (size_t)P * nb * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp), "upload");
    /* start block: random, orthonormal */
    sks__k_ev_expand<<<dim3((n + 255) / 256, P * nb), 256, 0, g_cu.comp>>>(e.V, e.R, e.W, n, 0, nb, km, nrm, e.sel,
                                                                          e.prob, op->seed, 0);
    if ((rc = sks__ev_orth(&e, P, 0, e.prob, op->seed, &tag))) goto out;

    g_evp_on = -1; /* the environment is read again by every solve */
    sks__evp_mark(-1);
    while (nact > 0) {
        const int m = nact * nb;
        for (int s = 0; s < nact; s++) st[e.prob_h[s]].matvecs += nb;
        g_evp[SKS__EVP_N] += 1;
        rounds++;
        /* 1. the operator on the pending columns */
        sks__k_ev_gather<T><<<sks__grid((size_t)n * m), 256, 0, g_cu.comp>>>(e.V, n, k, nb, km, (T *)o->V, m);
        SKS__EV_CU(cudaEventRecord(e.e0, g_cu.comp), "event");
        if ((rc = sks__cu_apply<T>(o, m))) goto out;
        SKS__EV_CU(cudaEventRecord(e.e1, g_cu.comp), "event");
        sks__k_ev_scatter<T><<<sks__grid((size_t)n * m), 256, 0, g_cu.comp>>>(e.W, n, k, nb, km, (const T *)o->Y, m);
        SKS__EV_CU(cudaGetLastError(), "gather / scatter kernels");
        sks__evp_mark(SKS__EVP_OP);
        const int k0 = k;
        k += nb;
        /* 2. H[:, k0:k] = V^T W[:, k0:k] */
        SKS__EV_CB(sks__dgemm_sb(CUBLAS_OP_T, CUBLAS_OP_N, k, nb, n, 1.0, e.V, n, sV, e.W + (size_t)k0 * n, n, sV, 0.0,
                                 e.Hc, km, (long long)km * nb, nact),
                   "V^T W");
        sks__k_ev_hupdate<<<nact, SKS__EV_T, 0, g_cu.comp>>>(e.H, e.Hc, e.Hs, k0, nb, km);
        SKS__EV_CU(cudaGetLastError(), "projection kernel");
        sks__evp_mark(SKS__EVP_PROJ);
        /* Between Rayleigh-Ritz rounds (rr_every > 1) the next block is the operator's
         * image of the last one, orthogonalized: the block Krylov sequence, the same space
         * the residual expansion below spans (for nb 1 the same direction), without the
         * eigensolve, the Ritz vectors and the host round trip. Rayleigh-Ritz and the
         * convergence test run every rr_every rounds and whenever the basis is full. */
        if (++since_rr < rr_every && k + nb <= km && k < km) {
            for (int y = 0; y < nact * nb; y++) e.sel_h[y] = -3;
            SKS__EV_CU(cudaMemcpyAsync(e.sel, e.sel_h, (size_t)nact * nb * sizeof(int), cudaMemcpyHostToDevice,
                                       g_cu.comp), "upload");
            sks__k_ev_expand<<<dim3((n + 255) / 256, nact * nb), 256, 0, g_cu.comp>>>(e.V, e.R, e.W, n, k, nb, km, nrm,
                                                                                     e.sel, e.prob, op->seed, tag++);
            SKS__EV_CU(cudaGetLastError(), "expansion kernel");
            if ((rc = sks__ev_orth(&e, nact, k, e.prob, op->seed, &tag))) goto out; /* synchronizes */
            sks__evp_mark(SKS__EVP_ORTH);
            float ms = 0;
            cudaEventElapsedTime(&ms, e.e0, e.e1);
            op_ms += ms;
            continue;
        }
        since_rr = 0;
        /* 3. Rayleigh-Ritz */
        if (rr_host) {
            if ((rc = sks__rr_host(e.Hs, e.ev, k, nact, rr_buf))) goto out;
        } else {
            size_t wd = 0, wh = 0;
            if (cusolverDnXsyevBatched_bufferSize(g_cu.solver, g_cu.solver_params, CUSOLVER_EIG_MODE_VECTOR,
                                                  CUBLAS_FILL_MODE_LOWER, k, CUDA_R_64F, e.Hs, k, CUDA_R_64F, e.ev,
                                                  CUDA_R_64F, &wd, &wh, nact) != CUSOLVER_STATUS_SUCCESS) {
                rc = sks_fail(SKS_EINTERNAL, "cuSOLVER: syevBatched workspace query (n %d, batch %d)", k, nact);
                goto out;
            }
            if (wd > e.work_n) {
                if (e.work) cudaFree(e.work);
                e.work = NULL;
                e.work_n = 0;
                SKS__EV_CU(sks__cu_malloc((void **)&e.work, wd), "eigensolver workspace");
                e.work_n = wd;
            }
            if (wh > e.hwork_n) {
                free(e.hwork);
                e.hwork = malloc(wh);
                e.hwork_n = e.hwork ? wh : 0;
                if (!e.hwork) {
                    rc = sks_fail(SKS_ENOMEM, "cuda eigensolver: host workspace");
                    goto out;
                }
            }
            if (cusolverDnXsyevBatched(g_cu.solver, g_cu.solver_params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                       k, CUDA_R_64F, e.Hs, k, CUDA_R_64F, e.ev, CUDA_R_64F, e.work, wd, e.hwork, wh,
                                       e.info, nact) != CUSOLVER_STATUS_SUCCESS) {
                rc = sks_fail(SKS_ELAPACK, "cuSOLVER: syevBatched failed (n %d, batch %d)", k, nact);
                goto out;
            }
        }
        sks__k_ev_sort<<<nact, SKS__EV_T, 0, g_cu.comp>>>(e.Hs, e.ev, k, km, e.Z, e.theta);
        sks__evp_mark(SKS__EVP_RR);
        /* 4. Ritz vectors and residuals of the leading nres pairs */
        const int nres = k < nrm ? k : nrm;
        SKS__EV_CB(sks__dgemm_sb(CUBLAS_OP_N, CUBLAS_OP_N, n, nres, k, 1.0, e.V, n, sV, e.Z, km, sH, 0.0, e.Yb, n, sR, nact),
                   "V Z");
        SKS__EV_CB(sks__dgemm_sb(CUBLAS_OP_N, CUBLAS_OP_N, n, nres, k, 1.0, e.W, n, sV, e.Z, km, sH, 0.0, e.R, n, sR, nact),
                   "W Z");
        sks__k_ev_resid<<<dim3(nres, nact), SKS__EV_T, 0, g_cu.comp>>>(e.R, e.Yb, e.theta, n, nrm, km, e.view);
        SKS__EV_CU(cudaGetLastError(), "Ritz kernels");
        /* 5. to the host: theta, residuals, eigensolver status */
        SKS__EV_CU(cudaMemcpyAsync(e.view_h, e.view, (size_t)nact * 2 * nrm * sizeof(double), cudaMemcpyDeviceToHost,
                                   g_cu.comp), "download");
        SKS__EV_CU(cudaMemcpyAsync(e.info_h, e.info, (size_t)nact * sizeof(int), cudaMemcpyDeviceToHost, g_cu.comp),
                   "download");
        SKS__EV_CU(cudaStreamSynchronize(g_cu.comp), "eigensolver round");
        sks__evp_mark(SKS__EVP_RITZ);
        {
            float ms = 0;
            cudaEventElapsedTime(&ms, e.e0, e.e1);
            op_ms += ms;
        }
        for (int s = 0; s < nact; s++)
            if (e.info_h[s] != 0) {
                rc = sks_fail(SKS_ELAPACK, "cuSOLVER: syevBatched failed on the %d x %d projection of problem %d (info %d)",
                              k, k, e.prob_h[s], e.info_h[s]);
                goto out;
            }
        int nfin = 0, all_done = 1;
        const int restart = k + nb > km && k > keep;
        for (int s = 0; s < nact; s++) {
            const int p = e.prob_h[s];
            sks__ev_prob *q = &st[p];
            const double *th = e.view_h + (size_t)s * 2 * nrm, *rel = th + nrm;
            int nconv = 0;
            q->nres = nres;
            for (int c = 0; c < nres; c++) q->theta[c] = th[c], q->rel[c] = rel[c];
            for (int c = 0; c < nres && c < r; c++) nconv += sks__ev_ok(q, c, tol, norm_tol);
            q->iterations++;
            done[s] = 0;
            if ((k >= r && nconv == r) || q->iterations > max_iter) {
                q->converged = k >= r && nconv == r;
                done[s] = 1;
            } else if (restart && max_restarts > 0 && q->restarts >= max_restarts) {
                q->converged = 0;
                done[s] = 1;
            }
            if (done[s]) {
                e.fin_h[2 * nfin] = s;
                e.fin_h[2 * nfin + 1] = p;
                nfin++;
            } else {
                all_done = 0;
            }
        }
        /* 6. finished problems' Ritz vectors into the result */
        if (nfin) {
            SKS__EV_CU(cudaMemcpyAsync(e.fin, e.fin_h, (size_t)2 * nfin * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp),
                       "upload");
            sks__k_ev_finalize<<<dim3(r, nfin), SKS__EV_T, 0, g_cu.comp>>>(e.Yb, n, r, nres, nrm, e.fin, e.evecs);
            SKS__EV_CU(cudaGetLastError(), "finalize kernel");
        }
        sks__evp_mark(SKS__EVP_HOST);
        if (all_done) break;
        if (restart) {
            double *t;
            SKS__EV_CB(sks__dgemm_sb(CUBLAS_OP_N, CUBLAS_OP_N, n, keep, k, 1.0, e.V, n, sV, e.Z, km, sH, 0.0, e.tmp, n, sV,
                                     nact),
                       "V Z_keep");
            t = e.V, e.V = e.tmp, e.tmp = t;
            SKS__EV_CB(sks__dgemm_sb(CUBLAS_OP_N, CUBLAS_OP_N, n, keep, k, 1.0, e.W, n, sV, e.Z, km, sH, 0.0, e.tmp, n, sV,
                                     nact),
                       "W Z_keep");
            t = e.W, e.W = e.tmp, e.tmp = t;
            sks__k_ev_hrestart<<<nact, SKS__EV_T, 0, g_cu.comp>>>(e.H, e.theta, keep, km);
            SKS__EV_CU(cudaGetLastError(), "restart kernel");
            k = keep;
            for (int s = 0; s < nact; s++)
                if (!done[s]) st[e.prob_h[s]].restarts++;
            sks__evp_mark(SKS__EVP_RESTART);
        }
        /* expansion: residuals of the first nb unconverged pairs (c < nres), random
         * directions where there are fewer */
        for (int s = 0; s < nact; s++) {
            const sks__ev_prob *q = &st[e.prob_h[s]];
            int added = 0;
            for (int c = 0; c < nres && added < nb && !done[s]; c++) {
                if (c < r && sks__ev_ok(q, c, tol, norm_tol)) continue;
                e.sel_h[s * nb + added++] = c;
            }
            while (added < nb) e.sel_h[s * nb + added++] = -1;
        }
        SKS__EV_CU(cudaMemcpyAsync(e.sel, e.sel_h, (size_t)nact * nb * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp),
                   "upload");
        sks__k_ev_expand<<<dim3((n + 255) / 256, nact * nb), 256, 0, g_cu.comp>>>(e.V, e.R, e.W, n, k, nb, km, nrm,
                                                                                 e.sel, e.prob, op->seed, tag++);
        SKS__EV_CU(cudaGetLastError(), "expansion kernel");
        if ((rc = sks__ev_orth(&e, nact, k, e.prob, op->seed, &tag))) goto out;
        sks__evp_mark(SKS__EVP_ORTH);
        /* the finished slots leave: the last active slot moves into each */
        int moved = 0;
        for (int s = nact - 1; s >= 0; s--) {
            if (!done[s]) continue;
            const int last = nact - 1;
            if (s != last) {
                SKS__EV_CU(cudaMemcpyAsync(e.V + (size_t)s * sV, e.V + (size_t)last * sV, (size_t)sV * sizeof(double),
                                           cudaMemcpyDeviceToDevice, g_cu.comp), "compaction");
                SKS__EV_CU(cudaMemcpyAsync(e.W + (size_t)s * sV, e.W + (size_t)last * sV, (size_t)sV * sizeof(double),
                                           cudaMemcpyDeviceToDevice, g_cu.comp), "compaction");
                SKS__EV_CU(cudaMemcpyAsync(e.H + (size_t)s * sH, e.H + (size_t)last * sH, (size_t)sH * sizeof(double),
                                           cudaMemcpyDeviceToDevice, g_cu.comp), "compaction");
                e.prob_h[s] = e.prob_h[last];
                done[s] = done[last];
            }
            nact--;
            moved = 1;
        }
        if (moved && nact > 0) {
            for (int s = 0; s < nact; s++)
                for (int j = 0; j < nb; j++) e.ch_h[s * nb + j] = ch[e.prob_h[s]];
            SKS__EV_CU(cudaMemcpyAsync(e.prob, e.prob_h, (size_t)nact * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp),
                       "upload");
            SKS__EV_CU(cudaMemcpyAsync(o->ch, e.ch_h, (size_t)nact * nb * sizeof(int), cudaMemcpyHostToDevice, g_cu.comp),
                       "upload");
        }
        sks__evp_mark(SKS__EVP_MOVE);
    }
    /* results */
    SKS__EV_CU(cudaMemcpyAsync(evecs, e.evecs, (size_t)P * n * r * sizeof(double), cudaMemcpyDeviceToHost, g_cu.comp),
               "download");
    SKS__EV_CU(cudaStreamSynchronize(g_cu.comp), "eigensolver results");
    {
        int nfail = 0, restarts = 0;
        for (int p = 0; p < P; p++) {
            const sks__ev_prob *q = &st[p];
            for (int c = 0; c < r; c++) evals[(size_t)p * r + c] = c < q->nres ? q->theta[c] : NAN;
            nfail += !q->converged;
            restarts += q->restarts;
            if (!info) continue;
            sks_eigs_info *in = &info[p];
            in->n_conv = 0;
            for (int c = 0; c < r; c++) {
                in->n_conv += c < q->nres && sks__ev_ok(q, c, tol, norm_tol);
                if (in->residuals) in->residuals[c] = c < q->nres ? q->rel[c] : INFINITY;
            }
            in->iterations = q->iterations;
            in->matvecs = q->matvecs;
            in->spanned = 0; /* kmax + nb <= n: the basis never spans */
        }
        if (x) {
            x->op_seconds = op_ms * 1e-3;
            x->rounds = rounds;
            x->restarts = restarts;
        }
        if (nfail) rc = sks_fail(SKS_ENOCONV, "sks_eigs: %d of %d problems did not reach tol %g", nfail, P, tol);
    }
#undef SKS__EV_CU
#undef SKS__EV_CB
#undef SKS__EV_TRY
out:
    sks__ev_free(&e);
    if (rr_buf) cudaFreeHost(rr_buf);
    free(st);
    free(done);
    return rc;
}

static int sks__cu_top_eigs(void *h, const int *ch, int m, const sks_eigs_opts *o, sks_eigs_extra *x, double *evals,
                            double *evecs, sks_eigs_info *info) {
    sks__cu_op *op = (sks__cu_op *)h;
    /* The GPU solver (test-backend cuda passed on an H100, docs/benchmarks.md) unless
     * SKS_CUDA_EIGS=generic asks for the CPU-side solver over the GPU operator. */
    const char *env = getenv("SKS_CUDA_EIGS");
    if (env && !strcmp(env, "generic")) return 1;
    if (op->prec == SKS_QF_F64) return sks__cu_eigs_t<double>(op, ch, m, o, x, evals, evecs, info);
    return sks__cu_eigs_t<float>(op, ch, m, o, x, evals, evecs, info);
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
