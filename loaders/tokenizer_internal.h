/* tokenizer_internal.h - the one in-memory tokenizer that every format loads into.
 *
 * A format reader creates it with sks__tok_new(n), sets every piece (string, score,
 * type), picks the algorithm fields, calls sks__tok_finish() (builds the piece hash,
 * byte tables and verbatim lists) and then, for merge-ranked BPE, adds merges.
 */
#ifndef SKS_TOKENIZER_INTERNAL_H
#define SKS_TOKENIZER_INTERNAL_H

#include "sks_tokenizer.h"

/* Piece types: the SentencePiece enum (also GGUF tokenizer.ggml.token_type). */
enum {
    SKS__PT_NORMAL = 1,
    SKS__PT_UNKNOWN = 2,
    SKS__PT_CONTROL = 3,
    SKS__PT_USER = 4,
    SKS__PT_UNUSED = 5,
    SKS__PT_BYTE = 6
};

/* Delimiter behaviors of a pre-tokenizer split (the `tokenizers` library's
 * SplitDelimiterBehavior). */
enum {
    SKS__SPLIT_REMOVED = 0,
    SKS__SPLIT_ISOLATED,
    SKS__SPLIT_MERGED_PREV,
    SKS__SPLIT_MERGED_NEXT,
    SKS__SPLIT_CONTIGUOUS
};

/* Normalizer + pre-tokenizer pipeline (tokenizer_pre.c). */
typedef struct sks__textproc sks__textproc;
struct json_t;

struct sks_tokenizer {
    const char *kind;      /* static string, see sks_tokenizer_kind */
    int n;                 /* vocabulary size */
    char **piece;          /* (n) NUL-terminated, point into arena */
    uint32_t *plen;        /* (n) byte length of piece */
    float *score;          /* (n) SentencePiece score (higher merges first) */
    uint8_t *type;         /* (n) SKS__PT_* */
    size_t *poff;          /* (n) offsets into arena while building */
    char *arena;
    size_t arena_len, arena_cap;
    int bos, eos, unk;

    /* algorithm */
    int byte_level;        /* 1: GPT-2 byte-to-unicode alphabet, merges by rank */
    int use_merges;        /* 1: pair priority = -merge rank; 0: score of the merged piece */
    sks__textproc *proc;   /* HF BPE and GGUF gpt2: normalizer and pre-tokenizer; words are
                            * then BPE'd from their UTF-8 characters */
    int ignore_merges;     /* proc: a whole word that is a piece is emitted as is */
    int fuse_unk;          /* proc: consecutive unknown characters give one unk */
    int unigram;           /* 1: SentencePiece unigram (Viterbi over piece scores), not BPE */
    float unk_score;       /* unigram: score of an unknown character (lowest score - 10) */
    uint32_t max_plen;     /* longest piece in bytes */
    int add_dummy_prefix;  /* SentencePiece: prepend the space piece; 1 to every segment,
                            * 2 only to the one at the start of the text (Metaspace "first") */
    int remove_extra_ws;   /* SentencePiece: strip and collapse runs of ' ' */
    int byte_fallback;     /* unknown symbols become <0xAB> pieces (else unk) */
    char space[8];         /* what ' ' becomes: U+2581 (SentencePiece) or " " (llama2.c) */

    int byte_piece[256];   /* id of the piece for byte b (<0xAB>, or the byte-level char), -1 */
    int *verbatim;         /* ids matched verbatim before normalization (HF added tokens) */
    int n_verbatim;
    int *atomic;           /* ids matched as one frozen symbol inside the text (SP user-defined) */
    int n_atomic;

    int32_t *htab;         /* open addressing, piece -> id (-1 empty) */
    size_t hcap;
    uint64_t *mkey;        /* merges: key (left id << 32 | right id) */
    int32_t *mrank, *mres; /* rank and resulting id */
    size_t mcap, mcount;
};

int sks__tok_new(const char *kind, int n, sks_tokenizer **out);
/* Copy piece id (len bytes, may hold NUL only if the format allows: we reject). */
int sks__tok_set_piece(sks_tokenizer *t, int id, const char *s, size_t len, float score, int type);
/* Build lookups after every piece is set; name for error messages. */
int sks__tok_finish(sks_tokenizer *t, const char *name);
int sks__tok_lookup(const sks_tokenizer *t, const char *s, size_t len);
/* Merge (a, b) at rank: both pieces and their concatenation must exist; merges whose
 * pieces are missing are skipped (returns 1), as the HF and llama.cpp loaders do. */
int sks__tok_add_merge(sks_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int rank);
int sks__tok_merges_reserve(sks_tokenizer *t, size_t n);

/* Format readers (buf, len: the whole file). */
int sks__tok_read_llama2c(const uint8_t *buf, size_t len, const char *name, sks_tokenizer **out);
int sks__tok_is_llama2c(const uint8_t *buf, size_t len);
int sks__tok_read_spm(const uint8_t *buf, size_t len, const char *name, sks_tokenizer **out);
int sks__tok_read_hf_json(const char *buf, size_t len, const char *name, sks_tokenizer **out);

/* UTF-8 length of the sequence that starts with byte c (1 for invalid lead bytes). */
int sks__utf8_len(unsigned char c);
/* The UTF-8 of byte b's character in GPT-2's byte alphabet (1 or 2 bytes) into o. */
size_t sks__bytelevel_char(unsigned char b, char *o);

/* tokenizer.json helpers (tokenizer_json.c): a component's "type" ("" if none), a
 * boolean member (dflt if absent), a string member (NULL if absent). */
const char *sks__json_type(struct json_t *o);
int sks__json_flag(struct json_t *o, const char *key, int dflt);
const char *sks__json_str(struct json_t *o, const char *key);

/* ---- the pipeline (tokenizer_pre.c) ---- */
typedef int (*sks__word_fn)(const char *w, size_t len, void *ctx);
int sks__textproc_new(sks__textproc **out);
void sks__textproc_free(sks__textproc *p); /* NULL is a no-op */
/* tokenizer.json "normalizer" and "pre_tokenizer" (either may be NULL or null); an
 * unknown type is SKS_EUNSUPPORTED naming it. */
int sks__textproc_from_json(struct json_t *normalizer, struct json_t *pre, const char *name, sks__textproc **out);
/* The steps of a GGUF tokenizer.ggml.pre name (tokenizer_pre_table.c); unknown names are
 * SKS_EUNSUPPORTED naming it. *ignore_merges as the family's tokenizer.json has it. */
int sks__textproc_from_gguf_pre(const char *pre, size_t len, const char *name, sks__textproc **out,
                                int *ignore_merges);
/* Name of GGUF pre-tokenizer row k (tokenizer_pre_table.c), NULL past the end. */
const char *sks__gguf_pre_name(int k);
int sks__textproc_add_split(sks__textproc *p, const char *regex, int literal, int behavior, int invert,
                            const char *name);
int sks__textproc_add_digits(sks__textproc *p, int individual);
int sks__textproc_add_punct(sks__textproc *p, int behavior);
int sks__textproc_add_bytelevel(sks__textproc *p, int add_prefix_space, int use_regex, const char *name);
int sks__textproc_add_form(sks__textproc *p, const char *form); /* "NFC", "NFD", "NFKC", "NFKD" */
/* GPT-2's pattern, which a ByteLevel pre-tokenizer with use_regex applies. */
extern const char SKS__RE_GPT2[];
/* Normalize and pre-tokenize seg[0..len); fn gets every word in order. at_start: seg
 * begins the text (Metaspace prepend_scheme "first"). Malformed UTF-8 bytes skip the
 * pipeline: each is a word of its own (mapped to the byte alphabet when byte-level). */
int sks__textproc_run(const sks__textproc *p, const char *seg, size_t len, int at_start, sks__word_fn fn, void *ctx);

#endif
