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
} sks__slot_key;

struct sks_model {
    sks_arch arch;
    sks_format format;
    char *path;                 /* what the user gave */
    sks__mapping *maps;         /* one per shard */
    int n_maps;
    uint64_t file_bytes;
    sks__slot *slots;           /* SKS_ROLE_COUNT * (n_layers + 1) */
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

/* Format openers (safetensors.c, gguf.c, llama2c.c). Each fills a validated model. */
int sks__open_safetensors(const char *path, sks_model **out); /* file or directory */
int sks__open_gguf(const char *path, sks_model **out);
int sks__open_llama2c(const char *path, sks_model **out);
#endif
