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

/* Byte-level pre-tokenizer splits (regex-free approximations, see docs/tokenizers.md). */
enum { SKS__SPLIT_NONE = 0, SKS__SPLIT_GPT2, SKS__SPLIT_LLAMA3, SKS__SPLIT_LLAMA3_1DIGIT };

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
    int split;             /* SKS__SPLIT_* (byte-level only) */
    int add_prefix_space;  /* byte-level: prepend ' ' to each segment not starting with one */
    int ignore_merges;     /* byte-level: a whole word that is a piece is emitted as is */
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

#endif
