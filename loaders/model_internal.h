/* model_internal.h - the sks_model struct, shared by the loader files only. */
#ifndef SKS_MODEL_INTERNAL_H
#define SKS_MODEL_INTERNAL_H

#include "sks_model.h"

typedef struct {
    void *addr;     /* mmap base (NULL for in-memory models) */
    size_t size;    /* mapped bytes */
    char *path;
} sks__mapping;

typedef struct {
    sks_tensor t;
    int present;
} sks__slot;

typedef struct {
    sks_role role;
    int layer;
    int expert;                 /* -1 except for the per-expert roles */
} sks__slot_key;

struct sks_model {
    sks_arch arch;
    sks_format format;
    char *path;                 /* what the user gave */
    sks__mapping *maps;         /* one per shard */
    int n_maps;
    uint64_t file_bytes;
    sks__slot *slots;           /* SKS_ROLE_COUNT * (n_layers + 1) */
    sks__slot *xslots;          /* per-expert roles: n_layers * n_experts * 3, or NULL */
    sks__slot_key *order;       /* present tensors, in insertion order */
    size_t n_order;
    char **names;               /* owned copies of tensor names */
    size_t n_names;
    struct sks_gguf *gguf;      /* owned; NULL unless GGUF */
};

/* Allocate an empty model for arch (slots sized from arch->n_layers). */
int sks__model_alloc(const sks_arch *arch, sks_format fmt, const char *path, sks_model **out);
/* Add a mapping (takes ownership of path copy); returns its index or < 0. */
int sks__model_add_map(sks_model *m, void *addr, size_t size, const char *path);
/* Keep a copy of name for the model's lifetime. */
const char *sks__model_intern(sks_model *m, const char *name);
/* Free hook for GGUF metadata (set by the GGUF loader). */
extern void (*sks__gguf_free_hook)(struct sks_gguf *g);

/* Memory-map a whole file read-only. *size is the file size. */
int sks__map_file(const char *path, void **addr, size_t *size);
/* sks__map_file for a weight file: opening reads only its header pages, and the weights
 * are read where a layer needs them, so the kernel is told not to read ahead. */
int sks__map_weights(const char *path, void **addr, size_t *size);



/* Tensor-name tables of a format: a global name, or the suffix after "<prefix><layer>.". */
typedef struct {
    const char *name;
    sks_role role;
} sks__name_role;
/* 1 and (role, layer) when name is one of globals[ng], or prefix + a decimal layer + "." +
 * one of per_layer[nl]'s names; 0 for any other name. layer is -1 for globals and may be
 * out of the model's range (the caller checks it against the architecture). */
int sks__match_tensor_name(const char *name, const sks__name_role *globals, size_t ng, const char *prefix,
                           const sks__name_role *per_layer, size_t nl, sks_role *role, long *layer);

/* ---- the family table (family.c) --------------------------------------------------- */
enum {
    SKS__FAM_QKV_BIAS = 1 << 0,       /* q/k/v projections carry biases (Qwen2) */
    SKS__FAM_QK_NORM = 1 << 1,        /* per-head q_norm / k_norm (Qwen3, Gemma 3) */
    SKS__FAM_QK_NORM_FULL = 1 << 2,   /* q/k norm over the whole projection (OLMo 2) */
    SKS__FAM_NO_INPUT_NORMS = 1 << 3, /* sublayers read the raw residual (OLMo 2) */
    SKS__FAM_POST_NORMS = 1 << 4,     /* norms on the sublayer outputs (Gemma 2/3, OLMo 2) */
    SKS__FAM_UNIT_OFFSET = 1 << 5,    /* HF norms scale by 1 + w (the GGUF converter adds the 1) */
    SKS__FAM_EMBED_SCALE = 1 << 6,    /* embeddings times sqrt(d) (Gemma) */
    SKS__FAM_GGUF_INTERLEAVED = 1 << 7, /* the GGUF converter permutes Q/K rows (llama) */
    SKS__FAM_GGUF_GATE_UP = 1 << 8,     /* GGUF ffn_up holds gate and up rows (Phi-3) */
    SKS__FAM_GPT2 = 1 << 9,             /* LayerNorm, learned positions, plain FFN, biases */
    SKS__FAM_HF_CONV1D = 1 << 10,       /* HF projections stored (in, out); names may lack
                                           the "transformer." prefix */
    SKS__FAM_MOE = 1 << 15              /* mixture-of-experts FFN (loaders/moe.c) */
};

/* A fused tensor: rows of its parts one after another (q, k, v; gate, up). */
enum { SKS__FUSE_QKV = 1, SKS__FUSE_GATE_UP = 2 };
typedef struct {
    const char *name;  /* after "<prefix><layer>." */
    int kind;          /* SKS__FUSE_* */
    int bias;          /* 1: the q/k/v biases */
} sks__fused_name;

typedef struct {
    const char *family;         /* sks_arch.family */
    const char *hf_arch;        /* config.json architectures[0] */
    const char *hf_arch_alt;    /* a second class name of the same text model, or NULL */
    const char *hf_model_type;  /* config.json model_type */
    const char *gguf_arch;      /* GGUF general.architecture, or NULL */
    unsigned flags;             /* SKS__FAM_* */
    sks_act_kind act;           /* activation when the config names none */
    int swa_full_every;         /* sliding-window layer pattern (sks_arch.swa_full_every) */
    const char *hf_prefix;      /* layer prefix: "model.layers." */
    const sks__name_role *hf_globals;
    size_t n_hf_globals;
    const sks__name_role *hf_layer; /* names after "<prefix><layer>.": projections, FFN */
    size_t n_hf_layer;
    const sks__name_role *hf_norms; /* the same for the norms around the sublayers */
    size_t n_hf_norms;
    const sks__fused_name *hf_fused; /* fused projections in HF files, or NULL */
    size_t n_hf_fused;
} sks__family;

/* The row for an HF class name (or, when arch is NULL, a model_type), a GGUF
 * architecture name, or an sks_arch.family name; NULL if none. */
const sks__family *sks__family_hf(const char *arch, const char *model_type);
const sks__family *sks__family_gguf(const char *gguf_arch);
const sks__family *sks__family_named(const char *family);
/* Comma-separated list of what the table reads ("LlamaForCausalLM, ..." or "llama, ..."). */
const char *sks__family_hf_list(void);
const char *sks__family_gguf_list(void);
/* Family name, flags and traits of the row, for a file of format fmt. */
void sks__family_apply(const sks__family *fam, sks_format fmt, sks_arch *a);
/* (role, layer) of an HF / GGUF tensor name for the family: 1 if known, 0 otherwise. */
int sks__family_hf_role(const sks__family *fam, const char *name, sks_role *role, long *layer);
int sks__family_gguf_role(const char *name, sks_role *role, long *layer);
/* A fused tensor of the family (HF: its map; GGUF: attn_qkv, and ffn_up where the row
 * says so): 1, the entry and the layer; 0 otherwise. */
int sks__family_fused(const sks__family *fam, sks_format fmt, const char *name, const sks__fused_name **fu, long *layer);
/* Split a fused (rows, cols) tensor (1-D: elements) at data into its parts' views by the
 * row counts the architecture gives (q, k, v or gate, up); SKS_ESHAPE when the rows do
 * not add up. */
int sks__model_set_fused(sks_model *m, const sks__fused_name *fu, int layer, sks_dtype dt, int ndim,
                         const int64_t shape[2], const uint8_t *data, const char *name);
/* A Conv1D weight (GPT-2 in HF files), stored (in, out) = shape: attached as transposed
 * views (sks_tensor.tstride) of (out, in); a fused one (fu not NULL: c_attn) is split
 * into q, k, v by columns. F32, F16, BF16 only; SKS_ESHAPE when the columns do not add
 * up. */
int sks__model_set_conv1d(sks_model *m, const sks__fused_name *fu, sks_role role, int layer, sks_dtype dt,
                          const int64_t shape[2], const uint8_t *data, const char *name);
/* The file's name of (role, layer), for messages. */
void sks__family_hf_name(const sks__family *fam, sks_role role, int layer, char *out, size_t n);
void sks__family_gguf_name(sks_role role, int layer, char *out, size_t n);
/* Required roles: 1 if a needs (role, any layer), 0 if the role is optional or unused;
 * shape gets the (rows, cols) the tensor must have when present (cols 1 for vectors). */
int sks__role_need(const sks_arch *a, sks_role role, int64_t shape[2]);
/* 1 and the first required (role, layer) that m lacks; 0 when none is missing. */
int sks__first_missing(const sks_model *m, sks_role *role, int *layer);

/* ---- mixture of experts (moe.c) ------------------------------------------------------- */
/* What an MoE tensor name holds: a per-layer role (router, shared expert), one expert's
 * matrix, or all experts stacked in one 3-D tensor (GGUF *_exps, transformers 5's
 * mlp.experts.gate_up_proj / down_proj). */
enum { SKS__MOE_ROLE = 1, SKS__MOE_EXPERT = 2, SKS__MOE_STACK = 3, SKS__MOE_STACK_GATE_UP = 4 };
typedef struct {
    int kind;       /* SKS__MOE_* */
    sks_role role;  /* the role (for STACK_GATE_UP: EXP_GATE, then EXP_UP) */
    long layer;
    long expert;    /* SKS__MOE_EXPERT only */
} sks__moe_name;
/* 1 and what name is when it names an MoE tensor of an MoE family in format fmt. */
int sks__moe_match(const sks__family *fam, sks_format fmt, const char *name, sks__moe_name *out);
/* Attach the tensor: ndim dimensions, shape outermost first (HF order; GGUF's ne
 * reversed), data in the mapping, shard index. Stacked tensors become per-expert views. */
int sks__moe_attach(sks_model *m, const sks__moe_name *nm, sks_dtype dt, int ndim, const int64_t *shape,
                    const uint8_t *data, const char *name, int shard);
/* The view's tensor i (any role), for iterators. */
const sks_tensor *sks__model_order_tensor(const sks_model *m, size_t i);

/* Format openers (safetensors.c, gguf.c, llama2c.c). Each fills a validated model. The
 * single-file ones get the file mapped (sks__map_weights) and own the mapping: they hand
 * it to the model or unmap it when they fail. */
int sks__open_safetensors(const char *path, sks_model **out); /* file or directory */
int sks__open_gguf(const char *path, void *addr, size_t size, sks_model **out);
int sks__open_llama2c(const char *path, void *addr, size_t size, sks_model **out);
#endif
