/* sks_spikes.h - the directional quadratic amplifier of the FFN (SPEC section 3).
 *
 * For the FFN of layer l with normalized input x (post-RMSNorm, gamma_ffn applied),
 * when SiLU is near identity, out_k(x) ~= x^T S_k x with
 *
 *   S_k = 1/2 (G^T diag(D_k) U + U^T diag(D_k) G),  G = W_gate, U = W_up (f, d),
 *   D_k = W_down[k, :] (f).
 *
 * Per analysed layer: tr(S_k) and ||S_k||_F of EVERY channel (the screen: one pass for
 * the traces, the Gram identity for the norms, never a dense S_k), then for selected
 * channels the top r eigenpairs by |lambda| (lambda_1 = lambda*, s*), dominance
 * |l1|/|l2|, energy fraction l1^2/||S_k||_F^2. The eigenpairs come from linalg's
 * thick-restart block Lanczos (sks_quadform_top_eigs) run for all selected channels of
 * a layer in lockstep, so that every operator application is one batched product (four
 * GEMMs of f x d x (b m) for m channels and block b) and the work is GEMM-bound; Krylov
 * bases, projections and LAPACK are f64.
 *
 * With a forward pass over a prompt: x_spike = the FFN input at the spike token,
 * cos(x_spike, s*), the quadratic prediction x^T S_k x, the rank-one prediction
 * lambda* (s*.x)^2, the true out_k(x), and the activation regime (SiLU or, for GeGLU,
 * gelu_tanh: both are near the identity for large positive z, so S_k is the same
 * bilinear form). Where a norm follows the FFN (Gemma 2/3, OLMo 2), lambda* and s* are
 * those of the raw FFN, and post_gain says how much the norm rescales channel k at the
 * spike token before it reaches the residual: why the residual spike stays bounded. First-token map:
 * W_VO[l] = sum_h W_O[:, h] W_V[g(h)]; its top left singular vector u_1 (linalg's
 * Lanczos, sks_eigs_topk, on W_O (W_V' W_V'^T) W_O^T, never the d x d product) against
 * s*. Delimiter route: n_v = gamma_attn[0] * e_v / rms(e_v) and the vocabulary ranked by
 * ||n_v|| / median_v ||n_v||.
 *
 * Usage: sks_spikes_new -> (sks_spikes_forward) -> sks_spikes_layer per layer ->
 * sks_spikes_delimiter -> sks_spikes_write; sks_spikes_free. Nothing here prints.
 */
#ifndef SKS_SPIKES_H
#define SKS_SPIKES_H

#include "../loaders/sks_model.h"
#include "sks_trace.h"
#include "sks_out.h"
#include "sks_split.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Operator precision. AUTO: f64 when f * d <= SKS_SPK_AUTO_F64_MAX = 16M (f64 copies of
 * 128 MiB each at most), else f32 (OpenBLAS sgemm through sks_quadform). */
enum { SKS_SPK_PREC_AUTO = 0, SKS_SPK_PREC_F32 = 1, SKS_SPK_PREC_F64 = 2 };
#define SKS_SPK_AUTO_F64_MAX ((int64_t)16 << 20)
/* Channels the eigensolver iterates together when opts.channel_block is 0. */
#define SKS_SPK_CHANNEL_BLOCK 64

/* The precision a run uses: precision (SKS_SPK_PREC_*) with AUTO resolved for a (f, d)
 * FFN. The one definition of the AUTO rule. */
int sks_spikes_precision(int precision, int d, int f);

typedef struct {
    int rank;            /* r eigenpairs per channel (default 5, >= 2 for dominance) */
    int top_frob;        /* channels of the Frobenius screen added per layer (default 4) */
    int dense;           /* 1: dense reference path (sks_quadform_dense + LAPACK dsyevr) */
    int precision;       /* SKS_SPK_PREC_* (default AUTO) */
    double tol;          /* ||S v - l v|| <= tol |l|; 0 = auto: 1e-11 (f64), 1e-6 (f32) */
    int krylov_dim;      /* basis vectors per channel before a restart; 0 = auto
                            (linalg's: max(r + 4 block, 40), at most d) */
    int max_restarts;    /* thick restarts per channel (default 200) */
    int channel_block;   /* channels iterated together; 0 = auto (SKS_SPK_CHANNEL_BLOCK) */
    int block;           /* Krylov block per channel; 0 = auto: 1 (fewest operator vectors;
                            the GEMMs are m = channels wide) */
    uint64_t seed;       /* start vectors (default 1) */
    int n_delim_top;     /* delimiter-route vocabulary entries kept (default 50) */
    int first_token_map; /* 1 (default): W_VO singular vectors of layers <= analysed */
} sks_spikes_opts;

void sks_spikes_opts_default(sks_spikes_opts *o);

/* Why a channel is analysed. */
enum { SKS_SPK_SRC_USER = 1, SKS_SPK_SRC_SPIKE = 2, SKS_SPK_SRC_FROB = 4 };

typedef struct {
    int channel;
    int source;           /* SKS_SPK_SRC_* bits */
    int rank;             /* eigenpairs stored (r) */
    double *eigenvalues;  /* (r) by descending |.|; eigenvalues[0] = lambda* */
    double *s_star;       /* (d) unit eigenvector of lambda*, sign fixed (see below) */
    double *residuals;    /* (r) ||S v - l v|| / |l| (explicit, after convergence) */
    int converged;        /* all r pairs within tol */
    int sign_from_input;  /* 1: s*.x_spike >= 0; 0: largest-|.| component positive */
    double frobenius, trace, dominance, energy_fraction;
    /* With a forward pass (NAN otherwise). x = FFN input of this layer at `token`. */
    int token;            /* spike token position (-1 without a forward pass) */
    double x_norm;        /* ||x|| */
    double cos_x_s;       /* cos(x, s*) */
    double quad_pred;     /* x^T S_k x = sum_j D_k[j] (g_j.x)(u_j.x), f64 */
    double rank1_pred;    /* lambda* (s*.x)^2 */
    double true_out;      /* out_k(x) = sum_j D_k[j] SiLU(g_j.x)(u_j.x), f64 from x */
    double true_out_fwd;  /* the forward pass's own f32 FFN output at (token, k) */
    double silu_regime;   /* sum_{j: |act(z_j)-z_j| <= 0.05|z_j|} |z_j| / sum_j |z_j|, z = G x, act
                             the family's activation (SiLU, or gelu_tanh for GeGLU) */
    /* Families with a norm on the FFN output (Gemma 2/3, OLMo 2; NAN for the others):
     * the gain it applies to channel k at the token, gamma_k / rms(y) with y the raw FFN
     * output (d), and what reaches the residual, post_gain * true_out_fwd. */
    double post_gain;
    double post_out;
    double cos_x0_s;      /* cos(FFN input of this layer at position 0, s*) */
    int n_wvo;            /* layer + 1 when the first-token map ran, else 0 */
    double *cos_wvo;      /* (n_wvo) |cos(u_1(W_VO[l']), s*)| for l' = 0..layer */
} sks_spike_channel;

struct sks_spikes_moe;

typedef struct {
    int layer, d;
    double *frobenius;     /* (d) ||S_k||_F of every channel */
    double *trace;         /* (d) tr(S_k) of every channel */
    int n_top;             /* channels ranked by the screen */
    int *top_frob;         /* (n_top) channels by descending ||S_k||_F */
    int n_channels;
    sks_spike_channel *channels;
    int matvecs;           /* operator applications (vectors) */
    int restarts;
    double seconds_screen, seconds_eigs;
    double flops_screen, flops_eigs; /* GEMM flops spent (for the benchmark) */
    int precision;         /* SKS_SPK_PREC_F32 or _F64 actually used */
    /* MoE layers (else NULL): the result above is the active form at the token, and
     * this holds the routing and every expert's forms (analysis/spikes_moe.c) */
    struct sks_spikes_moe *moe;
} sks_spikes_layer_result;

/* A mixture-of-experts layer (SPEC section 6). At the token (the first selected
 * channel's, else the position of the layer's largest |FFN output|), the router picks k
 * experts with weights w_e; the active form of channel k is
 *   S_k^act = sum_e w_e S_k^(e)  (+ g S_k^(shared), g = sigmoid(w_sg . x), Qwen2-MoE),
 * a quadratic form of the stacked routed experts (down rows scaled by w_e): the layer's
 * result holds its lambda*, s* and quadratic prediction against the true output. Every
 * expert (routed or not) gets its own screen (tr, ||S_k^(e)||_F of every channel) and the
 * eigenpairs of the layer's channels plus its own screen's best; share[i][j] is routed
 * expert j's part w_e out_k^(e)(x) of the forward's FFN output at (token, channel i of
 * the active form). */
typedef struct sks_spikes_moe {
    int token;
    int k, n_experts, has_shared;
    int *experts;                        /* (k) routed experts, by descending weight */
    double *weights;                     /* (k) */
    double shared_gate;                  /* g at the token (NAN without a shared expert) */
    int n_per_expert;                    /* n_experts + has_shared (the shared expert last) */
    sks_spikes_layer_result *per_expert; /* (n_per_expert) */
    int n_channels;                      /* the active form's channels */
    double *share;                       /* (n_channels, k + has_shared) */
} sks_spikes_moe;
void sks_spikes_moe_free(sks_spikes_moe *m);

typedef struct sks_spikes sks_spikes;

/* Context for one model. Keeps one layer's weights converted at a time. */
int sks_spikes_new(const sks_model *m, const sks_spikes_opts *o, sks_spikes **out);
void sks_spikes_free(sks_spikes *s);

/* Analyse layer `layer` with the FFN (G, U (f, d), Down (d, f)) instead of the model's
 * W_gate / W_up / W_down (G NULL: back to the model's): one expert of a mixture of
 * experts, or a combined form. The tensors stay the caller's (f32 ones are used in
 * place); the forward quantities still come from the model's own pass (true_out_fwd is
 * the layer's whole FFN output). (Addition for MoE layers, sks_moe_spikes.h.) */
int sks_spikes_set_ffn(sks_spikes *s, int layer, const sks_tensor *G, const sks_tensor *U, const sks_tensor *Down);

/* The forward pass's FFN input (T, d) of layer `layer` and its output (*ffn_out), NULL
 * before sks_spikes_forward; the model of the context. */
const float *sks_spikes_ffn_io(const sks_spikes *s, int layer, const float **ffn_out, int *T);
const sks_model *sks_spikes_model(const sks_spikes *s);

/* A planted MoE mechanism (synth): at `layer` the spike token (position 0 of tokens)
 * is routed to `expert` with the largest weight, and that expert's S_c of each planted
 * channel c carries the planted lambda*_c and the shared planted s*; the active form's
 * lambda* is w lambda*_c. pass: routed, w > 0.9, lambda* within 5%, |cos(s*, planted)|
 * > 0.99, active form within 5%. */
typedef struct {
    int routed;
    double weight, lambda_rel_err, cos_s, active_rel_err;
    int pass;
} sks_moe_plant_check;
int sks_spikes_moe_check_plant(const sks_model *m, const int32_t *tokens, int T, int layer, int expert,
                               const int *channels, const double *lambda, const float *s_star, int n,
                               sks_moe_plant_check *out);

/* Run the forward pass over tokens (T >= 1) once and keep the FFN inputs and outputs of
 * every layer ((L, T, d) f32 each), for the per-channel forward quantities. */
int sks_spikes_forward(sks_spikes *s, const int32_t *tokens, int T);

/* Analyse layer `layer`: the full screen, then the channels ch[0..n-1] (source bits in
 * src[i], may be NULL = USER) plus the opts.top_frob best channels of the screen.
 * tok[i] is the spike token of ch[i] (-1 or tok NULL = auto: argmax_t |out_k| at this
 * layer when a forward pass ran). Fills *out (free with sks_spikes_layer_result_free). */
int sks_spikes_layer(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                     sks_spikes_layer_result *out);
void sks_spikes_layer_result_free(sks_spikes_layer_result *r);

/* One layer split over nparts cooperating processes (the CLI's MPI ranks; the library
 * knows no MPI). Every part calls sks_spikes_layer_split with the same arguments and its
 * own `part`; work is dealt in blocks, block b to part b % nparts:
 *   screen:   the row blocks of the Gram screen (sks_quadform_frobenius_partials; block
 *             256 rows with the f32 operator, 128 with the f64 one); the traces are
 *             cheap and every part computes them;
 *   channels: the channel blocks of the eigensolver (opts.channel_block channels each),
 *             after the selection, which needs the whole screen.
 * share(ud, what, nblk, row0, width, rows, status) is called collectively at both
 * points: rows (row0[nblk], width) f64, rows [row0[b], row0[b + 1]) filled by the owner
 * of block b (zero elsewhere); status is this part's result so far (0 or SKS_E*). It
 * must return the same value on every part: the first failure of any part (then the
 * layer fails everywhere), or 0 with every row holding its owner's values. what is SKS_SPK_SHARE_SCREEN
 * (row b = partial vector of row block b, width d) or SKS_SPK_SHARE_CHANNELS (row i =
 * channel i of the selection: eigenvalues (r), residuals (r), s* (d), converged,
 * matvecs, restarts). Each part then finishes the layer alone, with the same numbers,
 * so the result is bitwise the one-process one on every part. --dense runs every
 * channel on every part (only the screen is split). A part whose own blocks fail still
 * reaches the share and reports it there; what fails before (the layer's weights,
 * allocations sized alike on every part) fails on every part alike. */
enum { SKS_SPK_SHARE_SCREEN = 1, SKS_SPK_SHARE_CHANNELS = 2 };
typedef struct {
    int part, nparts;
    int (*share)(void *ud, int what, int nblk, const int *row0, size_t width, double *rows, int status);
    void *ud;
} sks_spikes_split;

/* sks_spikes_layer with split (NULL or nparts 1: the one-process path). */
int sks_spikes_layer_split(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                           const sks_spikes_split *split, sks_spikes_layer_result *out);

/* An MoE layer (what sks_spikes_layer runs for one): the routing at the token, every
 * expert's forms, the active form as the result (sks_spikes_moe). Needs the forward.
 * split (may be NULL): every expert's form and the active form are each split over the
 * parts as one dense layer is (sks_spikes_layer_split); the routing and the shares are
 * computed on every part alike, so every part ends with the same result. */
int sks_spikes_moe_layer(sks_spikes *s, int layer, const int *ch, const int *src, const int *tok, int n,
                         const sks_spikes_split *split, sks_spikes_layer_result *out);

/* Default selection from a trace: the spike channels at the layers whose FFN is one of
 * their step-up blocks, with the lifecycle's token. Outputs malloc'd arrays of n
 * (layer, channel, token) triples, sorted by (layer, channel). */
int sks_spikes_select_from_trace(const sks_trace_result *tr, int **layers, int **channels, int **tokens, int *n);

/* Trace options of the default spike search: the one spike rule (sks_rule.h), as every
 * command. */
void sks_spikes_trace_opts_default(sks_trace_opts *o);

/* The default selection in one call: trace the prompt (tokens, T) with to (NULL: the
 * defaults above), then sks_spikes_select_from_trace. *tr_out (may be NULL) receives
 * the trace (free with sks_trace_result_free). */
int sks_spikes_default_selection(const sks_model *m, const int32_t *tokens, int T, const sks_trace_opts *to,
                                 sks_trace_result **tr_out, int **layers, int **channels, int **toks, int *n);

/* Top left singular vector and value of W_VO[layer] (d), computed from the factors. */
int sks_spikes_wvo_top(sks_spikes *s, int layer, double *u1, double *sigma1);

/* Delimiter route over the whole vocabulary: n_v = gamma_attn[0] * s e_v / rms(s e_v),
 * gamma the family's gain (1 + w for Gemma), s its embedding scale. */
typedef struct {
    int n_vocab;
    double median_norm;   /* median_v ||n_v|| */
    float *ratio;         /* (V) ||n_v|| / median */
    int n_top;
    int *top_ids;         /* (n_top) by descending ratio */
    double *top_ratio;    /* (n_top) */
    /* 1 when the family has no input norm (OLMo 2): the attention of layer 0 reads the
     * raw embedding, the RMSNorm sparsification step has no counterpart and nothing is
     * ranked (n_vocab = n_top = 0); sks_spikes_no_input_norm_note says so. */
    int no_input_norm;
} sks_delim_result;
/* A plain (non-gated) FFN, W_down act(W_up x + b_up) + b_down (GPT-2), is linear in x
 * where act is near the identity: out_k has no quadratic form S_k, so lambda*, s* and
 * every per-channel quantity above are not defined. sks_spikes_run then analyses no
 * layer (no_quadform set, n_layers 0) and still runs the forward pass, the first-token
 * map's W_VO singular values and the delimiter route; the outputs carry the note. */
int sks_spikes_has_quadform(const sks_arch *a);
extern const char sks_spikes_no_quadform_note[];

/* The sentence the outputs carry for a family without input norms (OLMo 2). */
extern const char sks_spikes_no_input_norm_note[];
int sks_spikes_delimiter(sks_spikes *s, int n_top, sks_delim_result *out);
void sks_delim_result_free(sks_delim_result *r);

/* Everything a run produced, for the writer. */
typedef struct {
    int n_layers;
    sks_spikes_layer_result *layers;     /* (n_layers) */
    int T;
    const int32_t *tokens;               /* (T) input of the forward pass, or NULL */
    const sks_trace_result *trace;       /* spike channels found, or NULL */
    int n_wvo;
    double *wvo_sigma1;                  /* (n_wvo) top singular value of W_VO[l] */
    const sks_delim_result *delim;       /* or NULL */
    double trace_abs, trace_ratio;       /* thresholds the trace used (NAN if none) */
    double trace_outlier;                /* its --outlier (NAN if none; 0 = off) */
    const char *selection;               /* "default", "channels", "top-frob", "from-trace" */
    int no_quadform;                     /* 1: non-gated FFN, written as quadratic_form false + note */
} sks_spikes_report;

/* msgpack, schema "sinkscope.spikes/1" (docs/schema-spikes.md). pieces(id) may be NULL. */
int sks_spikes_write(const sks_spikes_report *rep, const sks_model *m, const sks_spikes_opts *o,
                     const char *(*piece)(void *ud, int id), void *piece_ud, const char *path);

/* ---- the selection (analysis/spikes_run.c) ----------------------------------------- */

typedef struct {
    const int *layers;      /* (n_layers) layers to keep, or NULL: every layer */
    int n_layers;
    const int *channels;    /* (n_channels) user channels at every kept layer, or NULL */
    int n_channels;
    int top_frob_only;      /* 1: every kept layer, with only the screen's best channels */
    const char *from_trace; /* a trace file's spike channels at their step-up layers */
    int token;              /* the spike token of every channel, or -1 (from the trace, else auto) */
    sks_trace_opts trace;   /* thresholds of the default spike search */
} sks_spikes_select_opts;

typedef struct {
    int n;
    int *layer, *channel, *token; /* (n) triples; channel -1: the layer alone */
    int src;                      /* SKS_SPK_SRC_USER with user channels, else _SPIKE */
    const char *name;             /* "channels", "top-frob", "from-trace" or "default" */
    sks_trace_result *trace;      /* the trace the triples came from, or NULL */
    int trace_from_file;          /* 1: read from from_trace (lifecycles and spike channels only) */
} sks_spikes_selection;

/* The (layer, channel, token) triples of a run: user channels (or only the screen's
 * best) at every kept layer; else the spike channels at their step-up layers from a
 * trace file or from tracing tokens (T) with o->trace; when that finds none, every kept
 * layer alone (a warning naming the thresholds and top_frob). Free with
 * sks_spikes_selection_free. */
int sks_spikes_select(const sks_model *m, const int32_t *tokens, int T, const sks_spikes_select_opts *o, int top_frob,
                      sks_spikes_selection *out);
void sks_spikes_selection_free(sks_spikes_selection *s);

/* ---- the driver (analysis/spikes_run.c) ------------------------------------------- */

/* What one run analyses: the forward pass over tokens, and the (layer, channel, token)
 * selection triples; a triple with channel < 0 selects its layer without a channel
 * (only the screen's opts.top_frob best channels). */
typedef struct {
    const int32_t *tokens; /* (T) the prompt, T >= 1 */
    int T;
    const int *sel_l, *sel_c, *sel_t; /* (nsel); sel_t may be NULL (-1: auto) */
    int nsel;
    int src;               /* SKS_SPK_SRC_* bit of the listed channels */
    int keep_noconv;       /* 1: a layer whose channels did not all converge keeps its best
                              estimates (a warning); 0: SKS_ENOCONV */
    int delimiter;         /* 1: the delimiter route too */
} sks_spikes_job;

typedef struct {
    int n_layers;
    sks_spikes_layer_result *layers; /* (n_layers) the selected layers, ascending */
    int n_wvo;                       /* last selected layer + 1 with opts.first_token_map */
    double *wvo_sigma1;              /* (n_wvo) top singular value of W_VO[l] */
    int have_delim;
    sks_delim_result delim;
    int n_resumed;                   /* layers read back from resume parts (this part's) */
    int no_quadform;                 /* 1: non-gated FFN: no layer analysed (sks_spikes_has_quadform) */
} sks_spikes_run_result;

/* The whole analysis: sks_spikes_new, the forward pass, every selected layer through
 * sks_spikes_layer, the delimiter route and the first-token map. sp (sks_split.h) may
 * be NULL (one process); otherwise the layers are dealt out to its parts, or, with
 * fewer layers than parts, each layer is split over all of them
 * (sks_spikes_layer_split); collective then, and *out is filled on part 0 only. The
 * result is bitwise the one-process result. Free with sks_spikes_run_result_free. */
int sks_spikes_run(const sks_model *m, const sks_spikes_opts *o, const sks_spikes_job *job, const sks_split *sp,
                   sks_spikes_run_result *out);
void sks_spikes_run_result_free(sks_spikes_run_result *r);

/* Every input of a run that changes a layer's result (the model, its shape, every
 * field of opts, the tokens and the selection) as one msgpack map: the fingerprint of
 * resume manifests (sks_dist_fingerprint). */
void sks_spikes_inputs(sks_out *o, const sks_model *m, const sks_spikes_opts *so, const sks_spikes_job *job);

/* The memory model of --max-memory (docs/scale.md): *need = the heap bytes of a run on
 * T tokens with n_channels selected channels (weights stay mapped), summed from the
 * allocations of spikes.c, the solver (sks_quadform_top_eigs_bytes) and the forward
 * pass (sks_forward_bytes). With bound > 0, picks the largest channel block that fits
 * (o->channel_block, SKS_SPK_CHANNEL_BLOCK at most) and the f32 operator under AUTO
 * when f64 does not fit, writing both into *o; SKS_ENOMEM naming the estimate when even
 * the smallest setting does not fit. */
int sks_spikes_fit_memory(const sks_arch *a, sks_spikes_opts *o, int T, int n_channels, uint64_t bound,
                          uint64_t *need);

/* One layer result as msgpack and back (analysis/spikes_pack.c), for resume parts and
 * gathers: one array, f64 arrays as raw little-endian bytes so the decoded values are
 * bitwise the computed ones. The unpack decodes the layer at buf[*off..n), advancing
 * *off; every count and length is checked against d (the model width, > 0) and the
 * buffer: a bad part is SKS_EFORMAT naming `name`, never a crash. On success *r owns
 * its arrays. */
void sks_spikes_layer_pack(sks_out *o, const sks_spikes_layer_result *r);
int sks_spikes_layer_unpack(const uint8_t *buf, size_t n, size_t *off, int d, const char *name,
                            sks_spikes_layer_result *r);

#ifdef __cplusplus
}
#endif
#endif
