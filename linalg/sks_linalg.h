/* sks_linalg.h - quadratic-form operators, block eigensolvers, SVD and subspace angles.
 *
 * linalg knows matrices, never models. All matrices are row-major with an explicit
 * leading dimension unless stated. Heavy products go through OpenBLAS (f32 GEMM);
 * reductions, Krylov bases and LAPACK calls are f64.
 *
 * The quadratic form of one FFN output channel k (SPEC section 3):
 *   S_k = 1/2 (G^T diag(D_k) U + U^T diag(D_k) G),   G = W_gate (f, d), U = W_up (f, d),
 *   D_k = W_down[k, :] (f).
 * It is never formed densely except by sks_quadform_dense (tests, --dense).
 */
#ifndef SKS_LINALG_H
#define SKS_LINALG_H

#include "../core/sks_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Quadratic-form operator (quadform.c) ---------------------------------------- */

typedef struct {
    int d, f;
    const float *G;     /* (f, d) W_gate, f32 */
    const float *U;     /* (f, d) W_up, f32 */
    const float *Down;  /* (d, f) W_down, f32; row k is D_k */
} sks_quadform;

/* The same operator in f64 (borrowed arrays, same shapes), for the accuracy-critical
 * paths: fill it with sks_quadform_f64_alloc or point it at your own f64 copies. */
typedef struct {
    int d, f;
    const double *G;    /* (f, d) */
    const double *U;    /* (f, d) */
    const double *Down; /* (d, f) */
} sks_quadform64;

/* Fill *q64 with newly allocated f64 copies of q's G, U, Down (3 f d doubles). Release
 * with sks_quadform64_free (only for copies made here; frees and NULLs the pointers). */
int sks_quadform_f64_alloc(const sks_quadform *q, sks_quadform64 *q64);
void sks_quadform64_free(sks_quadform64 *q64);

/* Batched matvec: for m channels ch[0..m-1], each with its own vector V[:, i]
 * (V is (d, m) row-major, ldv >= m), Y[:, i] = S_{ch[i]} V[:, i]. Four GEMMs of
 * (f x d x m) plus an elementwise scaling. ws: at least sks_quadform_ws_size(q, m) floats. */
size_t sks_quadform_ws_size(const sks_quadform *q, int m);
int sks_quadform_matvec_batch(const sks_quadform *q, const int *ch, int m, const float *V, int ldv,
                              float *Y, int ldy, float *ws);

/* f64 twin (dgemm): V, Y (d, m) f64; ws at least sks_quadform64_ws_size(q, m) doubles.
 * Rounding: ~ sqrt(f) eps64 relative. */
size_t sks_quadform64_ws_size(const sks_quadform64 *q, int m);
int sks_quadform64_matvec_batch(const sks_quadform64 *q, const int *ch, int m, const double *V, int ldv,
                                double *Y, int ldy, double *ws);

/* tr(S_k) for all k = 0..d-1: tr = sum_j D_k[j] (g_j . u_j). out: (d) f64. */
int sks_quadform_traces(const sks_quadform *q, double *out);

/* Exact ||S_k||_F for all k by the Gram identity:
 *   A = G G^T, B = U U^T, C = U G^T (f x f);
 *   ||M_k||_F^2 = D_k^T (A o B) D_k, tr(M_k^2) = D_k^T (C o C^T) D_k,
 *   ||S_k||_F^2 = (||M_k||_F^2 + tr(M_k^2)) / 2.
 * Blocked so that memory stays O(block f + (f / block) d). out: (d) f64. */
int sks_quadform_frobenius(const sks_quadform *q, double *out);
/* With an explicit row block (0 = auto, 256): f32 sgemm, ~1e-6 relative (docs/linalg.md).
 * Only the upper block triangle of the symmetric f x f product A o B + C o C^T is formed:
 * sks_quadform_frobenius_flops = 10 d sum_blocks b (f - i0) ~ 5 d f^2 flops. */
int sks_quadform_frobenius_blocked(const sks_quadform *q, int block, double *out);
/* The f64 twin (dgemm), ~1e-14 relative; for tests and small/medium models. */
int sks_quadform64_frobenius(const sks_quadform64 *q, int block, double *out);
double sks_quadform_frobenius_flops(int d, int f, int block);

/* The screen in pieces, for callers that deal its row blocks out (the CLI's MPI ranks):
 * row block b = rows [b bs, min((b + 1) bs, f)) of f, bs = block (0 = 256) capped at f;
 * sks_quadform_frobenius_nblocks(f, block) = ceil(f / bs). For blocks [blk_lo, blk_hi),
 * part (blk_hi - blk_lo, d) f64 receives row (b - blk_lo):
 *   p_bk = sum_{i in b} D_k[i] (H_{b,J} D_{k,J})_i,  J = [b bs, f),
 *   H = A o B + C o C^T with its off-diagonal blocks doubled,
 * so that ||S_k||_F^2 = (sum_b p_bk) / 2. sks_quadform_frobenius_finish adds the rows
 * of part (nblk, d) in block order starting from 0 and takes sqrt(max(0, .) / 2): the
 * whole-screen functions above are exactly partials over all blocks then finish, so
 * partials computed anywhere, with any split of the blocks, and finished in order
 * give the same bits. Cost of block b: 10 bs d (f - b bs) flops (late blocks cheaper). */
int sks_quadform_frobenius_nblocks(int f, int block);
int sks_quadform_frobenius_partials(const sks_quadform *q, int block, int blk_lo, int blk_hi, double *part);
int sks_quadform64_frobenius_partials(const sks_quadform64 *q, int block, int blk_lo, int blk_hi, double *part);
void sks_quadform_frobenius_finish(int d, int nblk, const double *part, double *out);

/* Dense reference: S_k as (d, d) f64 (test reference; d^2 memory). */
int sks_quadform_dense(const sks_quadform *q, int k, double *S);

/* tr(S_k) for all k from the f64 operator: w_j = g_j . u_j (ddot), tr = Down w (dgemv). */
int sks_quadform64_traces(const sks_quadform64 *q, double *out);

/* Dense S_k (d, d) from the f64 operator: rank-one updates 1/2 D_k[j] g_j u_j^T, then
 * symmetrized (test reference and spikes --dense with f64 weights). */
int sks_quadform64_dense(const sks_quadform64 *q, int k, double *S);

/* ---- Backends of the S_k operator (backend.c): where its heavy products run ----------
 *
 * One row per backend: "cpu" (OpenBLAS, the functions above; always present) and "cuda"
 * (cuBLAS, linalg/quadform_cuda.cu, only in a -DSKS_CUDA=ON build). A row binds one
 * operator's weights (a device row uploads them once per layer), then serves the three
 * products of the analyses on that binding: the batched matvec, the Gram-screen
 * partials and the traces, plus (optional) the forward pass's Y = X W^T. Adding a
 * backend = one row here and its file; callers go through sks_qf_* only. */
enum { SKS_QF_F32 = 1, SKS_QF_F64 = 2 };                    /* operator precision */
enum { SKS_QF_ELEM_F32 = 0, SKS_QF_ELEM_F16, SKS_QF_ELEM_BF16 }; /* raw weight encodings */
/* or'ed into an encoding: the weights are frozen model data (sks_tensor.frozen), so a
 * row may keep its own copy keyed by the address until sks_weights_epoch() changes */
enum { SKS_QF_ELEM_KEEP = 0x100 };

/* Weights as stored (row-major, shapes of sks_quadform), for rows that convert them
 * themselves (the CUDA row converts bf16 / f16 on the GPU). */
typedef struct {
    int d, f;
    int elem;                       /* SKS_QF_ELEM_* of all three */
    const void *G, *U, *Down;
} sks_qf_raw;

struct sks_eigs_opts_s;  /* sks_eigs_opts, sks_eigs_extra, sks_eigs_info (below) */
struct sks_eigs_extra_s;
struct sks_eigs_info_s;

typedef struct sks_qf_backend {
    const char *name;
    int takes_raw;                  /* 1: bind accepts raw (encoded) weights */
    /* 0 when the row can run in this process (build and device present), else an SKS_E*
     * code with its message set. */
    int (*probe)(void);
    /* Exactly one of q (f32 host arrays, prec F32), q64 (f64, prec F64) and raw
     * (converted to prec by the row). Host arrays stay borrowed until unbind. */
    int (*bind)(const sks_quadform *q, const sks_quadform64 *q64, const sks_qf_raw *raw, int prec, void **h);
    void (*unbind)(void *h);
    /* Y[:, i] = S_{ch[i]} V[:, i]; V (d, m), Y (d, m) in the bound precision (float or
     * double), leading dimensions ldv, ldy >= m. */
    int (*matvec_batch)(void *h, const int *ch, int m, const void *V, int ldv, void *Y, int ldy);
    /* as sks_quadform_frobenius_partials */
    int (*frobenius_partials)(void *h, int block, int blk_lo, int blk_hi, double *part);
    /* tr(S_k), all k, f64 */
    int (*traces)(void *h, double *out);
    /* Forward-pass GEMM Y (T, out) = X (T, in) W^T, W (out, in) encoded elem, Y with row
     * stride ldy >= out. NULL: the caller keeps its own CPU code (the cpu row). */
    int (*gemm_wt)(int elem, const void *W, int out, int in, const float *X, int T, float *Y, int ldy);
    /* Optional: the whole of sks_qf_top_eigs (same arguments and results; o->block is
     * already resolved) on the row's own device, basis and Rayleigh-Ritz included, so
     * that the host only launches. Returns 1 (no error set) for a problem it does not
     * take, which then runs on the generic solver of eigs.c over matvec_batch. NULL:
     * always the generic solver (the cpu row). */
    int (*top_eigs)(void *h, const int *ch, int m, const struct sks_eigs_opts_s *o, struct sks_eigs_extra_s *x,
                    double *evals, double *evecs, struct sks_eigs_info_s *info);
    /* Optional: the Krylov block and basis size this row's solver is fastest with for r
     * pairs of an n x n operator in precision prec (measured, docs/benchmarks.md); the
     * analyses take them where the user set none. NULL: the analyses' own rule. */
    void (*eig_defaults)(int prec, int n, int r, int *block, int *krylov_dim);
} sks_qf_backend;

/* fn(ud, i, w) for every item i in [0, n) on nw threads (this one among them; w in
 * [0, nw) names the worker, for per-worker workspaces), items handed out in order as
 * workers come free, OpenBLAS on one thread meanwhile. nw <= 1: in order here. After a
 * failure no new item starts; the failure of the lowest item comes back, with its
 * message. */
int sks_parallel_for(int n, int nw, int (*fn)(void *ud, int i, int w), void *ud);

/* The rows: "cpu" always, "cuda" in CUDA builds. NULL for an unknown or unbuilt name. */
const sks_qf_backend *sks_qf_backend_find(const char *name);
/* "cpu", "cuda" or "auto" (cuda when built and a GPU is present, else cpu). A named row
 * that cannot run here is an error (SKS_EUNSUPPORTED with its reason). */
int sks_qf_backend_resolve(const char *device, const sks_qf_backend **out);
/* The process default used by the analyses (initially "cpu"); NULL resets to cpu. */
void sks_qf_backend_set_default(const sks_qf_backend *be);
const sks_qf_backend *sks_qf_backend_default(void);

#ifdef SKS_HAVE_CUDA
/* cuda-row helpers for benchmarks (quadform_cuda.cu): weights generated on the GPU
 * (G, U, Down ~ 0.02 x unit-variance noise, `plant` channels k = 97 (p + 1) mod d with a
 * shared direction in 32 rows, as bench-spikes), for shapes whose checkpoint does not fit
 * a disk; their f32 copy back to the host; the GPU's GEMM rates (TFLOP/s, n^3, best of
 * reps); TF32 tensor cores on or off for the f32 GEMMs (default off, or SKS_CUDA_TF32=1). */
struct sks_qf_op_s;
int sks_qf_cuda_bind_synthetic(int d, int f, uint64_t seed, int plant, int prec, struct sks_qf_op_s *op);
int sks_qf_cuda_download(const struct sks_qf_op_s *op, float *G, float *U, float *Down);
int sks_qf_cuda_gemm_rates(int n, int reps, double *fp32, double *tf32, double *fp64);
int sks_qf_cuda_set_tf32(int on);
/* With SKS_CUDA_EIGS_PROFILE=1: the GPU solver's seconds per phase since the last call
 * (operator, projection, Rayleigh-Ritz, Ritz vectors + residuals, host, restart,
 * expansion + orthogonalization, compaction), then its rounds, into sec[0..n); returns
 * the number of phases (8), or 0 when the profile is off. */
int sks_qf_cuda_eigs_profile(double *sec, int n);
#endif

/* One bound operator. */
typedef struct sks_qf_op_s {
    const sks_qf_backend *be;
    void *h;
    int prec, d, f;
} sks_qf_op;

/* Bind on be (NULL = the default row); exactly one of q, q64, raw as in the row's bind. */
int sks_qf_bind(const sks_qf_backend *be, const sks_quadform *q, const sks_quadform64 *q64, const sks_qf_raw *raw,
                int prec, sks_qf_op *op);
void sks_qf_unbind(sks_qf_op *op);
int sks_qf_matvec_batch(const sks_qf_op *op, const int *ch, int m, const void *V, int ldv, void *Y, int ldy);
int sks_qf_frobenius_partials(const sks_qf_op *op, int block, int blk_lo, int blk_hi, double *part);
int sks_qf_traces(const sks_qf_op *op, double *out);

/* ---- Symmetric eigensolvers (eigs.c) ---------------------------------------------- */

/* Operator callback: Y = A X for a block of nb vectors (X, Y are (n, nb) row-major f64,
 * leading dimension nb). */
typedef int (*sks_symop_fn)(void *ud, int n, int nb, const double *X, double *Y);

typedef struct sks_eigs_opts_s {
    int r;              /* eigenpairs wanted, by magnitude */
    int block;          /* block size of the Krylov method (0 = default: r + 2) */
    int max_iter;       /* block expansions cap (0 = default 1000) */
    double tol;         /* converged when ||A v - lambda v|| <= tol |lambda| (0 = 1e-6) */
    uint64_t seed;      /* start block */
} sks_eigs_opts;

/* Further options and outputs (all optional: pass NULL, or zero-initialize). */
typedef struct sks_eigs_extra_s {
    int krylov_dim;       /* largest basis before a thick restart (0 = auto:
                             max(r + 4 block, 40), capped at n) */
    const double *start;  /* start vectors: (n, block) row-major per problem
                             ((nprob, n, block) for the multi solver); NULL = random */
    int max_restarts;     /* thick restarts allowed per problem (0 = no cap; max_iter still
                             applies): a problem that would restart once more stops with
                             its current estimates, not converged */
    double norm_tol;      /* pair c also counts as converged when ||A y_c - theta_c y_c|| <=
                             norm_tol |theta_1| (theta_1: largest Ritz value by magnitude,
                             ~||A||). An inexact operator (f32 GEMMs) leaves residuals near
                             its rounding times ||A||, which the relative test cannot beat
                             for eigenvalues far below ||A||; 0 = relative test only */
    int threads;          /* > 1: the per-problem work of each round (Rayleigh-Ritz,
                             residuals, expansion) on that many threads with OpenBLAS on
                             one thread each, problem p on thread p % threads; for an
                             operator that does not use OpenBLAS itself (a device row:
                             sks_qf_top_eigs sets it). 0 or 1: in order, OpenBLAS as it is */
    int restarts;         /* out: thick restarts, summed over problems */
    int rounds;           /* out: operator callbacks (lockstep rounds) */
    double op_seconds;    /* out: wall time spent inside the operator callback */
} sks_eigs_extra;

typedef struct sks_eigs_info_s {
    int n_conv;         /* how many of the r pairs converged */
    int iterations;     /* block expansions */
    int matvecs;        /* operator applications (vectors) */
    double *residuals;  /* (r) ||A v - lambda v|| / |lambda|; caller-provided or NULL */
    int spanned;        /* 1: the basis grew to the whole space (Rayleigh-Ritz exact for the
                           operator as applied; residuals then show only its rounding) */
} sks_eigs_info;

/* Top r eigenpairs by |lambda| of a symmetric n x n operator. evals (r) sorted by
 * descending |.|, evecs (n, r) row-major f64, unit norm. Returns SKS_ENOCONV if not all
 * converged (results still filled with the best estimates). */
int sks_eigs_topk(sks_symop_fn op, void *ud, int n, const sks_eigs_opts *o, double *evals,
                  double *evecs, sks_eigs_info *info);
int sks_eigs_topk_ex(sks_symop_fn op, void *ud, int n, const sks_eigs_opts *o, sks_eigs_extra *x,
                     double *evals, double *evecs, sks_eigs_info *info);

/* Many independent problems at once: problem p (0..nprob-1) has its own basis,
 * Rayleigh-Ritz and convergence; the still-active ones are expanded together so that
 * one callback applies all their operators to nact * nb vectors:
 *   X, Y (n, nact * nb) row-major (leading dimension nact * nb); columns
 *   [j * nb, (j + 1) * nb) belong to problem prob[j], j < nact.
 * Unused columns of a block (a problem whose basis is full) are zero. evals (nprob, r),
 * evecs (nprob, n, r), info (nprob) or NULL. Returns SKS_ENOCONV if any problem did not
 * converge. Sign: each eigenvector's largest-|.| component is positive. */
typedef int (*sks_symop_multi_fn)(void *ud, int n, int nact, const int *prob, int nb, const double *X,
                                  double *Y);
int sks_eigs_topk_multi(sks_symop_multi_fn op, void *ud, int n, int nprob, const sks_eigs_opts *o,
                        sks_eigs_extra *x, double *evals, double *evecs, sks_eigs_info *info);

/* Basis size of the thick-restart solver for n-vectors, r pairs and Krylov block nb:
 * krylov_dim, or max(r + 4 nb, 40) when it is 0; at least r + 2 nb, at most n. */
int sks_eigs_basis_dim(int n, int r, int nb, int krylov_dim);
/* Heap bytes sks_eigs_topk_multi allocates for nprob problems (the memory model of
 * --max-memory reads this, docs/scale.md). */
uint64_t sks_eigs_topk_multi_bytes(int n, int nprob, int r, int nb, int krylov_dim);

/* Dense reference: all eigenvalues of a symmetric (n, n) f64 matrix with LAPACKE dsyevr,
 * sorted by descending |.|, eigenvectors as columns of Z (n, n). Z may be NULL. */
int sks_eig_dense(int n, const double *A, double *evals, double *Z);

/* Top r eigenpairs by |lambda| of S_{ch[i]} for the m channels ch[0..m-1], all iterated
 * together (sks_eigs_topk_multi; implemented in quadform.c) so that each operator
 * application is one batched matvec of m * block vectors. Exactly one of q (f32
 * operator: tol >= ~1e-5 on 7B shapes) and q64 (f64 operator: tol down to ~1e-12) is
 * non-NULL. evals (m, r), evecs (m, d, r) row-major per channel, x optional, info (m) or
 * NULL (each info's residuals, when non-NULL, must hold r doubles). Returns SKS_ENOCONV
 * if any channel did not converge (all results still filled). */
int sks_quadform_top_eigs(const sks_quadform *q, const sks_quadform64 *q64, const int *ch, int m,
                          const sks_eigs_opts *o, sks_eigs_extra *x, double *evals, double *evecs,
                          sks_eigs_info *info);
/* Heap bytes of sks_quadform_top_eigs for m channels of a (f, d) FFN (f64: the f64
 * operator), the solver's included. */
uint64_t sks_quadform_top_eigs_bytes(int d, int f, int m, int r, int block, int krylov_dim, int f64);
/* The same on a bound operator (any backend row; f32 or f64 by its precision): every
 * operator application is one sks_qf_matvec_batch. sks_quadform_top_eigs is this on
 * the cpu row. */
int sks_qf_top_eigs(const sks_qf_op *op, const int *ch, int m, const sks_eigs_opts *o, sks_eigs_extra *x,
                    double *evals, double *evecs, sks_eigs_info *info);

/* ---- SVD and subspaces (subspace.c) ----------------------------------------------- */

/* Every LAPACK call checks its input first: 0, or SKS_ENONFINITE with "<what>: NaN or
 * Inf in the input" when one of the n values is not finite. LAPACKE would otherwise
 * answer "argument 5 illegal", which says nothing to a user. */
int sks_lapack_input_check(const char *what, const double *a, size_t n);

/* Thin SVD of X (m, n) f64: s (min(m,n)) descending, Vt (min(m,n), n) right singular
 * vectors as rows (may be NULL), U (m, min(m,n)) (may be NULL). */
int sks_svd(int m, int n, const double *X, double *s, double *U, double *Vt);

/* Effective rank: smallest r with sum_{i<=r} s_i^2 >= frac * sum s_i^2 (frac 0.99 = r99). */
int sks_effective_rank(const double *s, int n, double frac);
/* Participation ratio (sum s^2)^2 / sum s^4. */
double sks_participation_ratio(const double *s, int n);

/* Principal cosines between the subspaces spanned by the rows of A (ka, n) and B (kb, n)
 * (rows need not be orthonormal; they are orthonormalized first). cos: min(ka, kb)
 * values, descending. Each row set is reduced to its numerical rank (singular values
 * above max(k, n) * eps * s_max); cosines beyond min(rank_a, rank_b) are 0. */
int sks_principal_cosines(int n, int ka, const double *A, int kb, const double *B, double *cos);

/* ---- Throughput measurement (bench helper, quadform.c) ---------------------------- */

/* Measured sgemm GFLOP/s of this machine for (n x n x n), best of reps runs. */
double sks_sgemm_gflops(int n, int reps);
/* The same for dgemm: the yardstick of the f64 operator. */
double sks_dgemm_gflops(int n, int reps);

#ifdef __cplusplus
}
#endif
#endif
