/* formats_internal.h - header parsers of the three file formats, shared by the
 * loaders, the hostile-file tests and the fuzz targets.
 *
 * Each parser works on a (ptr, len) image of the whole file (an mmap in the loaders,
 * a plain buffer in the fuzzers) and reads only its header: it validates every length,
 * count, offset and span against len before touching bytes, and never reads tensor
 * data. Errors follow docs/loaders.md ("Error codes").
 */
#ifndef SKS_FORMATS_INTERNAL_H
#define SKS_FORMATS_INTERNAL_H

#include "sks_gguf.h"
#include "sks_model.h"

/* Deepest JSON nesting accepted in safetensors headers and config files. Real headers
 * nest 3 levels (root, tensor, shape); jansson's own limit (2048) is far above. */
#define SKS__JSON_MAX_DEPTH 32
/* Largest safetensors JSON header accepted (the format's own writer caps it near 100 MB). */
#define SKS__ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Most dimensions of one tensor in any format. */
#define SKS__MAX_DIMS 8

/* 1 if s[0..n) holds a control character (< 0x20 or 0x7f). Names and keys with them are
 * refused so that every error message stays one printable line. */
int sks__has_control(const char *s, size_t n);
/* Copy of s for a message: at most cap-1 bytes, control characters replaced by '?'. */
const char *sks__printable(const char *s, char *buf, size_t cap);

/* Nesting depth of the JSON text in buf (brackets outside strings); -1 if it exceeds
 * max_depth (scanning stops there). */
int sks__json_depth(const char *buf, size_t len, int max_depth);

/* ---- safetensors ------------------------------------------------------------------ */
typedef struct {
    char *name;          /* owned, NUL-terminated */
    char st_dtype[12];   /* the file's dtype string ("BF16") */
    int dtype;           /* sks_dtype, or -1 for a valid dtype sinkscope does not convert */
    unsigned elem_size;  /* bytes per element */
    int ndim;            /* 0..SKS__MAX_DIMS */
    int64_t shape[SKS__MAX_DIMS];
    uint64_t begin, end; /* [begin, end) relative to the start of the data section */
} sks__st_entry;

typedef struct {
    sks__st_entry *e;    /* sorted by begin */
    size_t n;
    uint64_t header_len; /* N: JSON bytes after the 8-byte length */
    uint64_t data_off;   /* 8 + N */
    uint64_t data_size;  /* len - 8 - N */
} sks__st_header;

/* Parse and validate the header of a safetensors image buf[0..len). path names the
 * file in messages. On success fills h (free with sks__st_header_free). */
int sks__st_parse(const void *buf, size_t len, const char *path, sks__st_header *h);
void sks__st_header_free(sks__st_header *h);

/* ---- GGUF ------------------------------------------------------------------------- */
typedef struct {
    const char *name;    /* into the image, NOT NUL-terminated */
    size_t name_len;
    uint32_t n_dims;
    uint64_t ne[4];      /* innermost first: ne[0] = columns */
    uint32_t type;       /* ggml type id */
    uint64_t offset;     /* relative to the data section */
    uint64_t nbytes;
} sks__gguf_tensor;

/* Parse and validate a GGUF image: metadata, tensor infos, alignment, spans. The result
 * borrows the image (it must outlive *out). Free with sks__gguf_free. */
int sks__gguf_parse(const void *buf, size_t len, const char *path, struct sks_gguf **out);
void sks__gguf_free(struct sks_gguf *g);
uint64_t sks__gguf_n_tensors(const struct sks_gguf *g);
const sks__gguf_tensor *sks__gguf_tensor_info(const struct sks_gguf *g, uint64_t i);
uint64_t sks__gguf_data_offset(const struct sks_gguf *g); /* aligned start of tensor data */
/* How the model view holds tensor i of a parsed image (name: its NUL-terminated name,
 * for messages): the sks_dtype, 1 or 2 dimensions and the shape (rows, columns).
 * Refuses types sinkscope does not convert, dimensions past the second that are not 1,
 * and f32/f16/bf16 data misaligned for its elements. The loader and fuzz-gguf-types use it. */
int sks__gguf_tensor_shape(const struct sks_gguf *g, uint64_t i, const char *path, const char *name, sks_dtype *dt,
                           int *ndim, int64_t shape[2]);
/* ggml type name ("Q4_K"), or NULL for an id this version does not know. */
const char *sks__ggml_type_name(uint32_t type);

/* ---- config.json ------------------------------------------------------------------- */
/* Fill a from a Hugging Face config.json text (both the classic and the newer
 * `rope_parameters` style). path names the file in messages. Fields the config cannot
 * know (nothing today) are left as set by the caller. */
int sks__config_parse(const char *json, size_t len, const char *path, sks_arch *a);
/* Read and parse the file at path. */
int sks__config_load(const char *path, sks_arch *a);

/* ---- llama2.c ---------------------------------------------------------------------- */
/* Validate a llama2.c v0 image and fill a (no tensors). */
int sks__llama2c_parse(const void *buf, size_t len, const char *path, sks_arch *a, int *shared_classifier);

/* nonfinite.c / dtype.c: the row conversion without the non-finite check, the count of
 * NaN/Inf among n floats, and the check itself (0, or SKS_ENONFINITE unless allowed). */
int sks__tensor_rows_f32_unchecked(const sks_tensor *t, int64_t row0, int64_t nrows, float *out);
size_t sks__count_nonfinite(const float *x, size_t n);
int sks__nonfinite_check(const sks_tensor *t, const float *out, size_t n);

#endif
