/* sks_model.h - one model view over every supported file format.
 *
 * Formats (all memory-mapped, never read whole):
 *   - Hugging Face safetensors: one file, or a directory with config.json and either
 *     model.safetensors or model.safetensors.index.json (sharded). F32, F16, BF16.
 *   - GGUF v2/v3: F32, F16, BF16 and every quantized type llama.cpp writes (the dtype
 *     table, docs/gguf-types.md), dequantized per block on access.
 *   - llama2.c v0 .bin (fp32).
 *
 * The view resolves family quirks once: tensors are addressed by (role, layer) in the
 * Hugging Face orientation, shape[0] = rows = output features, shape[1] = columns =
 * input features (y = W x). Q/K rows are NOT reordered: GGUF `llama` and llama2.c
 * files keep Meta's interleaved RoPE pair order, HF files the rotate-half order, and
 * sks_arch.rope_interleaved says which. Both orders are the same model; analyses that
 * work on subspaces are invariant to the within-head permutation, and the forward pass
 * applies RoPE in the stored order.
 */
#ifndef SKS_MODEL_H
#define SKS_MODEL_H

#include "../core/sks_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types: one row each in the dtype table (loaders/dtype.c, docs/gguf-types.md).
 * The first five keep their values; the rest follow ggml's type list. Block layouts and
 * the dequantization formula of each are in loaders/quant.c. */
typedef enum {
    SKS_DT_F32 = 0,
    SKS_DT_F16,
    SKS_DT_BF16,
    SKS_DT_Q8_0, /* blocks of 32: f16 scale + 32 int8 (34 bytes) */
    SKS_DT_Q4_0, /* blocks of 32: f16 scale + 16 bytes of nibbles (18 bytes) */
    SKS_DT_Q4_1,
    SKS_DT_Q5_0,
    SKS_DT_Q5_1,
    SKS_DT_Q8_1,
    SKS_DT_Q2_K,
    SKS_DT_Q3_K,
    SKS_DT_Q4_K,
    SKS_DT_Q5_K,
    SKS_DT_Q6_K,
    SKS_DT_Q8_K,
    SKS_DT_IQ2_XXS,
    SKS_DT_IQ2_XS,
    SKS_DT_IQ3_XXS,
    SKS_DT_IQ1_S,
    SKS_DT_IQ4_NL,
    SKS_DT_IQ3_S,
    SKS_DT_IQ2_S,
    SKS_DT_IQ4_XS,
    SKS_DT_I8,   /* integer tensors: known to GGUF, never weights, not converted */
    SKS_DT_I16,
    SKS_DT_I32,
    SKS_DT_I64,
    SKS_DT_F64,  /* known to GGUF, not converted */
    SKS_DT_IQ1_M,
    SKS_DT_TQ1_0,
    SKS_DT_TQ2_0,
    SKS_DT_MXFP4,
    SKS_DT_COUNT
} sks_dtype;

/* Convert n elements (a whole number of blocks) from their encoding in `in` to f32. */
typedef void (*sks_to_f32_fn)(const void *in, float *out, size_t n);

/* Quantize n f32 values (a whole number of blocks) into the encoding at out. */
typedef void (*sks_from_f32_fn)(const float *in, void *out, size_t n);

/* One row of the dtype table. */
typedef struct {
    const char *name;        /* ggml's name: "Q4_K" */
    int ggml_type;           /* GGUF tensor type id */
    uint32_t block;          /* elements per block (1 for plain types) */
    uint32_t block_bytes;    /* bytes per block */
    double bpw;              /* bits per weight: 8 * block_bytes / block */
    sks_to_f32_fn to_f32;    /* vectorized kernel; NULL: the type is not converted */
    sks_to_f32_fn to_f32_ref; /* scalar twin, element by element from the definition */
    sks_from_f32_fn from_f32; /* round-to-nearest quantizer for the writer (not llama.cpp's
                               * optimized one); NULL: sinkscope does not write the type */
} sks_dtype_info;

/* The row of dt (NULL outside [0, SKS_DT_COUNT)). */
const sks_dtype_info *sks_dtype_get(sks_dtype dt);
/* The sks_dtype of a GGUF tensor type id, or -1 if the id is unknown. */
int sks_dtype_from_ggml(uint32_t ggml_type);
/* The sks_dtype named name (ggml's name, case-insensitive: "q4_k"), or -1. */
int sks_dtype_from_name(const char *name);
/* 1 if tensors of dt can be read as f32. */
int sks_dtype_convertible(sks_dtype dt);

const char *sks_dtype_name(sks_dtype dt);
/* Bytes for n elements of dt (n must be a multiple of the block);
 * returns SKS_EOVERFLOW / SKS_ESHAPE on failure. */
int sks_dtype_nbytes(sks_dtype dt, uint64_t n, uint64_t *out);

/* Tensor roles, in the names of SPEC section 1. Per-layer roles take layer >= 0;
 * global ones (EMBED, FINAL_NORM, LM_HEAD) take layer -1. */
typedef enum {
    SKS_ROLE_EMBED = 0,  /* (V, d)      model.embed_tokens.weight */
    SKS_ROLE_ATTN_NORM,  /* (d)         input_layernorm.weight (gamma_attn) */
    SKS_ROLE_WQ,         /* (H*dh, d)   q_proj.weight */
    SKS_ROLE_WK,         /* (Hkv*dh, d) k_proj.weight */
    SKS_ROLE_WV,         /* (Hkv*dh, d) v_proj.weight */
    SKS_ROLE_WO,         /* (d, H*dh)   o_proj.weight */
    SKS_ROLE_BQ,         /* (H*dh)      q_proj.bias (qwen2) */
    SKS_ROLE_BK,         /* (Hkv*dh)    k_proj.bias (qwen2) */
    SKS_ROLE_BV,         /* (Hkv*dh)    v_proj.bias (qwen2) */
    SKS_ROLE_Q_NORM,     /* (dh)        q_norm.weight (qwen3, gemma3; OLMo 2: (H*dh)) */
    SKS_ROLE_K_NORM,     /* (dh)        k_norm.weight (qwen3, gemma3; OLMo 2: (Hkv*dh)) */
    SKS_ROLE_FFN_NORM,   /* (d)         post_attention_layernorm.weight (gamma_ffn; Gemma 2/3:
                                        pre_feedforward_layernorm) */
    SKS_ROLE_W_GATE,     /* (f, d)      mlp.gate_proj.weight */
    SKS_ROLE_W_UP,       /* (f, d)      mlp.up_proj.weight */
    SKS_ROLE_W_DOWN,     /* (d, f)      mlp.down_proj.weight */
    SKS_ROLE_FINAL_NORM, /* (d)         model.norm.weight */
    SKS_ROLE_LM_HEAD,    /* (V, d)      lm_head.weight (absent when tied) */
    SKS_ROLE_POST_ATTN_NORM, /* (d)     norm on the attention output (Gemma 2/3, OLMo 2) */
    SKS_ROLE_POST_FFN_NORM,  /* (d)     norm on the FFN output (Gemma 2/3, OLMo 2) */
    /* GPT-2: learned positions, LayerNorm biases, biases on every projection */
    SKS_ROLE_POS_EMBED,      /* (P, d)  wpe.weight, P = max_seq learned positions (global) */
    SKS_ROLE_ATTN_NORM_B,    /* (d)     ln_1.bias (beta_attn) */
    SKS_ROLE_FFN_NORM_B,     /* (d)     ln_2.bias (beta_ffn) */
    SKS_ROLE_FINAL_NORM_B,   /* (d)     ln_f.bias (global) */
    SKS_ROLE_BO,             /* (d)     attn.c_proj.bias */
    SKS_ROLE_B_UP,           /* (f)     mlp.c_fc.bias */
    SKS_ROLE_B_DOWN,         /* (d)     mlp.c_proj.bias */
    /* Mixture of experts (Mixtral, Qwen2/3-MoE), on the layers sks_arch_layer_moe names.
     * The EXP_* roles are per expert: sks_model_expert(m, role, layer, e), never
     * sks_model_tensor. */
    SKS_ROLE_ROUTER,     /* (E, d)      block_sparse_moe.gate / mlp.gate (GGUF ffn_gate_inp) */
    SKS_ROLE_EXP_GATE,   /* (f_e, d)    experts.E.w1 / gate_proj (GGUF ffn_gate_exps[E]) */
    SKS_ROLE_EXP_UP,     /* (f_e, d)    experts.E.w3 / up_proj (GGUF ffn_up_exps[E]) */
    SKS_ROLE_EXP_DOWN,   /* (d, f_e)    experts.E.w2 / down_proj (GGUF ffn_down_exps[E]) */
    SKS_ROLE_SHEXP_GATE, /* (f_s, d)    mlp.shared_expert.gate_proj (Qwen2-MoE; ffn_gate_shexp) */
    SKS_ROLE_SHEXP_UP,   /* (f_s, d)    mlp.shared_expert.up_proj (ffn_up_shexp) */
    SKS_ROLE_SHEXP_DOWN, /* (d, f_s)    mlp.shared_expert.down_proj (ffn_down_shexp) */
    SKS_ROLE_SHEXP_ROUTER, /* (d)       mlp.shared_expert_gate: sigmoid gain (ffn_gate_inp_shexp) */
    SKS_ROLE_COUNT
} sks_role;

const char *sks_role_name(sks_role r); /* "embed", "attn_norm", "wq", ... */
int sks_role_is_per_layer(sks_role r);

/* A borrowed view of one tensor. data points into an mmap (or caller memory for
 * in-memory models) and is valid until the model is closed. */
typedef struct {
    const char *name;   /* name in the file */
    sks_dtype dtype;
    int ndim;           /* 1 or 2 */
    int64_t shape[2];   /* shape[0] rows, shape[1] columns (ndim 1: shape[1] = 1) */
    const void *data;
    uint64_t nbytes;
    int shard;          /* index of the file that holds it (0 for single files) */
    /* (addition) 0, or a transposed view (GPT-2's Conv1D weights, stored (in, out)): view
     * element (r, c) is at element c * tstride + r from data, i.e. view row r is a
     * column of the stored matrix whose rows are tstride elements long. Only F32, F16
     * and BF16; sks_tensor_rows_f32 / _f64 gather the columns, so readers that convert
     * rows see the usual (out, in) layout. Code that reads data itself must check it. */
    int64_t tstride;
    /* (addition) 1: data is the model's own and does not change while the model is open
     * (every tensor of a model from sks_model_open; an in-memory model's after
     * sks_model_freeze), so a device may keep a copy keyed by its address. */
    int frozen;
} sks_tensor;

static inline int64_t sks_tensor_rows(const sks_tensor *t) { return t->shape[0]; }
static inline int64_t sks_tensor_cols(const sks_tensor *t) { return t->ndim == 1 ? t->shape[0] : t->shape[1]; }

/* Convert rows [row0, row0+nrows) of a 2-D tensor (or the whole of a 1-D one with
 * row0 = 0, nrows = 1) to f32 in out, (nrows, cols) row-major. */
int sks_tensor_rows_f32(const sks_tensor *t, int64_t row0, int64_t nrows, float *out);
/* Columns [col0, col0+ncols) of rows [row0, row0+nrows) of a 2-D tensor to f32 in out,
 * (nrows, ncols) row-major: col0 and ncols whole blocks of the dtype. Not for
 * transposed views (SKS_EDTYPE). The same non-finite check as sks_tensor_rows_f32. */
int sks_tensor_tile_f32(const sks_tensor *t, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, float *out);
/* Same for f64 (exact for every supported dtype). */
int sks_tensor_rows_f64(const sks_tensor *t, int64_t row0, int64_t nrows, double *out);

/* Non-finite weights. Every conversion above counts the NaN/Inf values it produced
 * (one pass over the converted rows). On the first one found in a tensor, the whole
 * tensor is counted and, by default, the conversion fails with SKS_ENONFINITE and a
 * message naming the tensor and the count. With sks_nonfinite_allow(1) (the CLI's
 * --allow-nonfinite) the conversion succeeds and the tensor is recorded: every output
 * lists the recorded tensors. The policy and the record are process-wide. */
void sks_nonfinite_allow(int allow);
int sks_nonfinite_allowed(void);
/* Recorded tensors: how many, and the i-th name (valid until sks_nonfinite_reset) with
 * its count of non-finite values. */
int sks_nonfinite_n_tensors(void);
const char *sks_nonfinite_tensor(int i, uint64_t *count, uint64_t *total);
void sks_nonfinite_reset(void);

/* Row conversion kernels (fast) and their scalar reference twins used in tests. */
void sks_bf16_to_f32(const uint16_t *in, float *out, size_t n);
void sks_bf16_to_f32_ref(const uint16_t *in, float *out, size_t n);
void sks_f16_to_f32(const uint16_t *in, float *out, size_t n);
void sks_f16_to_f32_ref(const uint16_t *in, float *out, size_t n);
uint16_t sks_f32_to_bf16(float x);  /* round to nearest even */
uint16_t sks_f32_to_f16(float x);   /* round to nearest even */
/* n must be a multiple of 32 */
void sks_q8_0_to_f32(const void *in, float *out, size_t n);
void sks_q4_0_to_f32(const void *in, float *out, size_t n);

typedef enum {
    SKS_ROPE_SCALING_NONE = 0,
    SKS_ROPE_SCALING_LLAMA3,
    SKS_ROPE_SCALING_LINEAR,
    SKS_ROPE_SCALING_LONGROPE /* Phi-3: per-frequency factors, attention factor on cos / sin */
} sks_rope_scaling_type;
/* Most longrope factors per list (rope_dims / 2). */
#define SKS_ROPE_MAX_FACTORS 256
/* The FFN's activation: SiLU (SwiGLU) or the tanh approximation of GELU (GeGLU). */
typedef enum { SKS_ACT_SILU = 0, SKS_ACT_GELU_TANH } sks_act_kind;
const char *sks_act_name(sks_act_kind k); /* "silu", "gelu_tanh" */

/* Layers that mlp_only_layers / a GGUF's missing router can mark dense. */
#define SKS_MOE_MAX_LAYERS 1024

typedef struct {
    char family[16];      /* "llama", "mistral", "qwen2", "qwen3" */
    int n_layers;         /* L */
    int d_model;          /* d */
    int d_ffn;            /* f */
    int n_heads;          /* H */
    int n_kv_heads;       /* H_kv */
    int head_dim;         /* d_h */
    int vocab_size;       /* V */
    int max_seq;          /* context length from the file (0 if unknown) */
    double norm_eps;
    double rope_theta;
    int rope_interleaved; /* 1: pairs (2i, 2i+1) (GGUF llama, llama2.c); 0: (i, i+dh/2) */
    sks_rope_scaling_type rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int tied_embeddings;  /* classifier reuses EMBED */
    int has_qkv_bias;
    int has_qk_norm;      /* q_norm / k_norm: per head (dh), or over the whole projection */
    int qk_norm_full;     /* 1: q/k norm over H*dh and Hkv*dh before the head split (OLMo 2) */
    int bos_id, eos_id;   /* -1 if unknown */
    /* Family traits (zero = Llama). h_{b+1} = h_b + post_b(F_b(pre_b(h_b))), SPEC section 6. */
    sks_act_kind act;     /* FFN activation */
    int no_input_norms;   /* 1: attention and FFN read the raw residual (OLMo 2) */
    int has_post_norms;   /* 1: POST_ATTN_NORM / POST_FFN_NORM rescale each sublayer's output */
    int norm_unit_offset; /* 1: norms scale by (1 + w) (Gemma in HF files; GGUF stores 1 + w) */
    int embed_scale;      /* 1: embeddings times sqrt(d) rounded to the embedding's dtype (Gemma) */
    double query_pre_attn_scalar; /* scores scaled by its -1/2 power; 0: head_dim */
    double attn_softcap;  /* scores -> c tanh(s / c) before the mask; 0: none */
    double final_softcap; /* logits -> c tanh(z / c); 0: none */
    int sliding_window;   /* keys j > i - window on sliding layers; 0: full attention */
    int swa_full_every;   /* with a window: layer l has full attention when (l + 1) % n == 0;
                             0: every layer slides (Mistral) */
    double rope_theta_local; /* RoPE base of sliding layers (Gemma 3); 0: rope_theta */
    int rope_dims;        /* RoPE rotates the first rope_dims of each head (Phi-3's
                             partial_rotary_factor); 0: head_dim */
    /* longrope: inv_freq_i / short[i] for sequences up to rope_original_max_pos, / long[i]
     * beyond; cos and sin times rope_attn_factor */
    int rope_n_factors;   /* rope_dims / 2 */
    double rope_short[SKS_ROPE_MAX_FACTORS], rope_long[SKS_ROPE_MAX_FACTORS];
    double rope_attn_factor;
    /* GPT-2 traits (zero = Llama): h_0 = E[tok] + P[pos]; sublayers read
     * LayerNorm(h) = (h - mean) / sqrt(var + eps) * w + b; FFN W_down act(W_up x + b_up)
     * + b_down; W_O and the FFN carry biases; no RoPE. */
    int norm_layer;       /* 1: every norm is a LayerNorm with a bias role (*_NORM_B) */
    int ffn_plain;        /* 1: non-gated FFN (no W_gate): no quadratic form */
    int pos_learned;      /* 1: POS_EMBED (max_seq rows) added to the embeddings; no RoPE */
    int has_linear_bias;  /* 1: BO, B_UP, B_DOWN */
    /* Mixture of experts (SPEC section 6); n_experts 0: every FFN is dense. A MoE FFN:
     * p = softmax(W_router x) over the E experts, the k largest (ties: lower index
     * first), weights p_e (renormalized to sum 1 when moe_norm_topk), output
     * sum_e w_e SwiGLU_e(x) + sigmoid(w_sg.x) SwiGLU_shared(x) (Qwen2-MoE). */
    int n_experts;        /* E routed experts per MoE layer */
    int n_experts_used;   /* k experts per token */
    int d_ffn_expert;     /* f_e, each expert's hidden width */
    int d_ffn_shared;     /* f_s, the shared expert's width (Qwen2-MoE); 0: none */
    int moe_norm_topk;    /* 1: the k weights renormalized (Mixtral; norm_topk_prob) */
    int moe_sparse_step;  /* layer l is MoE when (l + 1) % step == 0 (decoder_sparse_step); <= 1: all */
    unsigned char moe_dense[SKS_MOE_MAX_LAYERS / 8]; /* bit l: layer l is dense (mlp_only_layers) */
} sks_arch;

/* 1 if layer l of a has a mixture-of-experts FFN. */
int sks_arch_layer_moe(const sks_arch *a, int l);

/* 1 if layer l of a uses the sliding window. */
int sks_arch_layer_sliding(const sks_arch *a, int l);

/* A plain Llama of these sizes: RMSNorm eps 1e-5, RoPE theta 10000 (halves layout, no
 * scaling), BOS 1, EOS 2, untied, no context length; every trait zero. For models built
 * in memory (synth, tests); callers change what differs. */
void sks_arch_llama(sks_arch *a, int L, int d, int f, int H, int Hkv, int dh, int V);
/* Family table lookups (loaders/family.c): fill family, flags and traits of a known
 * family; SKS_EUNSUPPORTED (message naming what is read) for an unknown name. */
int sks_arch_set_family(sks_arch *a, const char *family);

typedef enum { SKS_FMT_MEMORY = 0, SKS_FMT_SAFETENSORS, SKS_FMT_GGUF, SKS_FMT_LLAMA2C } sks_format;
const char *sks_format_name(sks_format f);

typedef struct sks_model sks_model;

/* Open MODEL: a .safetensors file (config.json beside it), a directory, a .gguf or a
 * llama2.c .bin. On failure returns a negative code and sks_last_error() names the
 * file and the problem. */
int sks_model_open(const char *path, sks_model **out);
void sks_model_close(sks_model *m); /* NULL is a no-op */
/* Declares the borrowed weights of an in-memory model unchanging from now until it is
 * closed (sks_tensor.frozen); sks_model_open does this itself. */
void sks_model_freeze(sks_model *m);

const sks_arch *sks_model_arch(const sks_model *m);
sks_format sks_model_format(const sks_model *m);
const char *sks_model_path(const sks_model *m);
int sks_model_n_shards(const sks_model *m);
const char *sks_model_shard_path(const sks_model *m, int i);
uint64_t sks_model_file_bytes(const sks_model *m); /* all shards */
uint64_t sks_model_n_params(const sks_model *m);

/* The tensor-type mix of the tensors the view uses: per dtype the tensor count,
 * elements and bytes; bpw = 8 total_bytes / total_elements. */
typedef struct {
    uint64_t tensors[SKS_DT_COUNT], elements[SKS_DT_COUNT], bytes[SKS_DT_COUNT];
    uint64_t total_elements, total_bytes;
    double bpw;
} sks_dtype_mix;
void sks_model_dtype_mix(const sks_model *m, sks_dtype_mix *mix);

/* The tensor of (role, layer); NULL if the model has none (e.g. biases of llama,
 * LM_HEAD of a tied model). */
const sks_tensor *sks_model_tensor(const sks_model *m, sks_role role, int layer);
/* Expert e's tensor of a per-expert role (SKS_ROLE_EXP_GATE / _UP / _DOWN) in layer
 * `layer`; NULL when absent. The view points into the file (a slice of a stacked 3-D
 * tensor for GGUF and transformers 5's gate_up_proj): nothing is converted here. */
const sks_tensor *sks_model_expert(const sks_model *m, sks_role role, int layer, int expert);
/* Attach expert e's tensor (in-memory models, synth). */
int sks_model_set_expert(sks_model *m, sks_role role, int layer, int expert, sks_dtype dt, const int64_t shape[2],
                         const void *data, const char *name);
/* 1 if role is one of the per-expert roles. */
int sks_role_is_per_expert(sks_role r);
/* The classifier: LM_HEAD, or EMBED when tied. */
const sks_tensor *sks_model_classifier(const sks_model *m);

/* Iterate all tensors (for inspect). */
size_t sks_model_n_tensors(const sks_model *m);
const sks_tensor *sks_model_tensor_at(const sks_model *m, size_t i, sks_role *role, int *layer);
/* The expert of tensor i (a per-expert role), or -1. */
int sks_model_tensor_expert_at(const sks_model *m, size_t i);

/* GGUF metadata (NULL unless the model is GGUF): for the tokenizer. */
struct sks_gguf;
const struct sks_gguf *sks_model_gguf(const sks_model *m);

/* In-memory models (tests, synth): fill an arch, then attach tensors whose data the
 * caller keeps alive until sks_model_close. sks_model_validate checks every shape
 * against the arch (also run by sks_model_open). */
int sks_model_new_memory(const sks_arch *arch, sks_model **out);
int sks_model_set_tensor(sks_model *m, sks_role role, int layer, sks_dtype dt,
                         int ndim, const int64_t shape[2], const void *data, const char *name);
int sks_model_validate(const sks_model *m);

/* A norm's effective gain, n floats: the weight w, or 1 + w (f32) where the family
 * scales by (1 + w) (Gemma in HF files). SKS_ENOTFOUND when the model has no such norm. */
int sks_model_norm_gain(const sks_model *m, sks_role role, int layer, float *out, int64_t n);
/* The factor on the embeddings: sqrt(d) rounded to the embedding's dtype (f32 for the
 * quantized ones) where the family scales them (Gemma), else 1. */
float sks_model_embed_scale(const sks_model *m);
/* Where the family's norms sit: "pre" (before each sublayer), "sandwich" (before and
 * after), "post" (after only: the sublayers read the raw residual). */
const char *sks_arch_norm_layout(const sks_arch *a);

/* Helpers */
int sks_arch_validate(const sks_arch *a); /* positive sizes, H % Hkv == 0, ... */

#ifdef __cplusplus
}
#endif
#endif
