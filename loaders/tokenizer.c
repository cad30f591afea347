/* tokenizer.c - the shared tokenizer core: piece table, BPE, encode, decode, and the
 * search for the tokenizer that belongs to a model. The file formats live in
 * tokenizer_spm.c (llama2.c .bin, SentencePiece protobuf), tokenizer_json.c (HF) and
 * tokenizer_gguf.c (GGUF metadata).
 *
 * BPE, both flavours, as a priority queue over a linked list of symbols (each symbol
 * is a byte span of the normalized text):
 *   score flavour (SentencePiece, llama2.c): priority of an adjacent pair = score of
 *     the piece equal to their concatenation (if it is a normal or user piece);
 *   rank flavour (HF merges, GGUF gpt2): priority = -rank of the merge (a, b).
 * The pair of highest priority merges first, the leftmost on ties; stale queue entries
 * are recognised by the span length they were pushed with. O(n log n) per segment.
 */
#include "tokenizer_internal.h"
#include "sks_gguf.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- piece table --------------------------------------------------------------- */

int sks__tok_new(const char *kind, int n, sks_tokenizer **out) {
    *out = NULL;
    if (n <= 0) return sks_fail(SKS_EFORMAT, "tokenizer: empty vocabulary");
    sks_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n = n;
    t->bos = t->eos = t->unk = -1;
    t->add_dummy_prefix = 1;
    t->byte_fallback = 1;
    memcpy(t->space, "\xe2\x96\x81", 4);
    t->piece = sks_calloc_n((size_t)n, sizeof *t->piece);
    t->plen = sks_calloc_n((size_t)n, sizeof *t->plen);
    t->score = sks_calloc_n((size_t)n, sizeof *t->score);
    t->type = sks_calloc_n((size_t)n, sizeof *t->type);
    t->poff = sks_calloc_n((size_t)n, sizeof *t->poff);
    for (int b = 0; b < 256; b++) t->byte_piece[b] = -1;
    if (!t->piece || !t->plen || !t->score || !t->type || !t->poff) {
        sks_tokenizer_free(t);
        return sks_fail(SKS_ENOMEM, "tokenizer: out of memory for %d pieces", n);
    }
    /* unset pieces stay "" (offset 0 = a NUL at the arena start) */
    t->arena_cap = 4096;
    t->arena = malloc(t->arena_cap);
    if (!t->arena) {
        sks_tokenizer_free(t);
        return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    }
    t->arena[0] = '\0';
    t->arena_len = 1;
    for (int i = 0; i < n; i++) t->type[i] = SKS__PT_UNUSED;
    *out = t;
    return 0;
}

int sks__tok_set_piece(sks_tokenizer *t, int id, const char *s, size_t len, float score, int type) {
    if (id < 0 || id >= t->n) return sks_fail(SKS_EFORMAT, "tokenizer: piece id %d out of range [0, %d)", id, t->n);
    if (len > UINT32_MAX / 2 || memchr(s, '\0', len))
        return sks_fail(SKS_EFORMAT, "tokenizer: piece %d: contains NUL or is too long", id);
    size_t need;
    if (sks_add_size(t->arena_len, len + 1, &need)) return sks_fail(SKS_EOVERFLOW, "tokenizer: arena overflow");
    if (need > t->arena_cap) {
        size_t cap = t->arena_cap;
        while (cap < need) {
            if (sks_mul_size(cap, 2, &cap)) return sks_fail(SKS_EOVERFLOW, "tokenizer: arena overflow");
        }
        char *a = realloc(t->arena, cap);
        if (!a) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = '\0';
    t->poff[id] = t->arena_len;
    t->plen[id] = (uint32_t)len;
    t->arena_len = need;
    /* hostile scores: NaN would make merge and Viterbi comparisons meaningless */
    if (isnan(score)) score = -1e30f;
    else if (isinf(score)) score = score > 0 ? 1e30f : -1e30f;
    t->score[id] = score;
    t->type[id] = (uint8_t)type;
    return 0;
}

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int sks__tok_lookup(const sks_tokenizer *t, const char *s, size_t len) {
    if (!t->htab) return -1;
    size_t mask = t->hcap - 1;
    for (size_t h = (size_t)fnv1a(s, len) & mask;; h = (h + 1) & mask) {
        int32_t id = t->htab[h];
        if (id < 0) return -1;
        if (t->plen[id] == len && memcmp(t->piece[id], s, len) == 0) return id;
    }
}

/* "<0xAB>" -> 0xAB, or -1. */
static int parse_byte_piece(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* GPT-2's reversible byte <-> printable code point table: printable Latin-1 bytes
 * ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) map to themselves, the other 68 bytes in order to
 * U+0100..U+0143, so that no piece holds whitespace or control characters. Tabulated
 * (const, thread-safe); test-tokenizer's byte-level cases exercise it. */
static const uint16_t BYTE_TO_CP[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

static const int16_t CP_TO_BYTE[324] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, -1, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 140, 141,
    142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157,
    158, 159, 160, 173,
};

static int byte_to_cp(int b) { return BYTE_TO_CP[b & 255]; }

static size_t put_utf8(uint32_t cp, char *o);
size_t sks__bytelevel_char(unsigned char b, char *o) { return put_utf8((uint32_t)byte_to_cp(b), o); }

static int cp_to_byte(uint32_t cp) { return cp < 324 ? CP_TO_BYTE[cp] : -1; }

static size_t put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

int sks__utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 1;
}

/* Length of the UTF-8 character at s (rem bytes left); malformed sequences count as
 * one byte so that byte fallback can carry them. */
static size_t char_len(const char *s, size_t rem) {
    size_t l = (size_t)sks__utf8_len((unsigned char)s[0]);
    if (l > rem) return 1;
    for (size_t i = 1; i < l; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) return 1;
    return l;
}

static uint32_t decode_cp(const char *s, size_t l) {
    const unsigned char *u = (const unsigned char *)s;
    switch (l) {
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 63);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 63) << 6) | (u[2] & 63);
    case 4: return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 63) << 12) | ((uint32_t)(u[2] & 63) << 6) | (u[3] & 63);
    default: return u[0];
    }
}

static int push_list(int **list, int *n, int id) {
    int *l = realloc(*list, ((size_t)*n + 1) * sizeof **list);
    if (!l) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    l[(*n)++] = id;
    *list = l;
    return 0;
}

int sks__tok_finish(sks_tokenizer *t, const char *name) {
    for (int i = 0; i < t->n; i++) t->piece[i] = t->arena + t->poff[i];
    size_t cap = 16;
    while (cap < (size_t)t->n * 2) cap *= 2;
    t->htab = sks_malloc_n(cap, sizeof *t->htab);
    if (!t->htab) return sks_fail(SKS_ENOMEM, "%s: out of memory for the piece table", name);
    t->hcap = cap;
    memset(t->htab, 0xff, cap * sizeof *t->htab);
    for (int i = 0; i < t->n; i++) {
        if (t->plen[i] == 0) continue;
        /* the first id of a duplicated piece wins */
        if (sks__tok_lookup(t, t->piece[i], t->plen[i]) >= 0) continue;
        size_t h = (size_t)fnv1a(t->piece[i], t->plen[i]) & (cap - 1);
        while (t->htab[h] >= 0) h = (h + 1) & (cap - 1);
        t->htab[h] = i;
    }
    for (int b = 0; b < 256; b++) {
        if (t->byte_level) {
            char u[4];
            size_t l = put_utf8((uint32_t)byte_to_cp(b), u);
            t->byte_piece[b] = sks__tok_lookup(t, u, l);
        } else {
            char p[7];
            snprintf(p, sizeof p, "<0x%02X>", b);
            int id = sks__tok_lookup(t, p, 6);
            if (id >= 0 && t->type[id] == SKS__PT_BYTE) t->byte_piece[b] = id;
        }
    }
    float lo = 0;
    for (int i = 0; i < t->n; i++) {
        if (t->plen[i] > t->max_plen) t->max_plen = t->plen[i];
        if (t->type[i] == SKS__PT_NORMAL && t->score[i] < lo) lo = t->score[i];
    }
    t->unk_score = lo - 10.0f; /* SentencePiece's unknown-piece penalty */
    for (int i = 0; i < t->n; i++) {
        if (t->type[i] == SKS__PT_USER && t->plen[i] > 0 && !t->byte_level) {
            int rc = push_list(&t->atomic, &t->n_atomic, i);
            if (rc) return rc;
        }
    }
    if (t->bos >= t->n || t->eos >= t->n || t->unk >= t->n)
        return sks_fail(SKS_EFORMAT, "%s: bos/eos/unk id out of range [0, %d)", name, t->n);
    return 0;
}

int sks__tok_merges_reserve(sks_tokenizer *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2 + 2) {
        if (sks_mul_size(cap, 2, &cap)) return sks_fail(SKS_EOVERFLOW, "tokenizer: too many merges");
    }
    t->mkey = sks_malloc_n(cap, sizeof *t->mkey);
    t->mrank = sks_malloc_n(cap, sizeof *t->mrank);
    t->mres = sks_malloc_n(cap, sizeof *t->mres);
    if (!t->mkey || !t->mrank || !t->mres) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory for merges");
    for (size_t i = 0; i < cap; i++) t->mres[i] = -1;
    t->mcap = cap;
    t->mcount = 0;
    return 0;
}

static int merge_find(const sks_tokenizer *t, int a, int b, int32_t *rank, int32_t *res) {
    if (!t->mcap) return 0;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = t->mcap - 1;
    for (size_t h = (size_t)mix64(key) & mask;; h = (h + 1) & mask) {
        if (t->mres[h] < 0) return 0;
        if (t->mkey[h] == key) {
            *rank = t->mrank[h];
            *res = t->mres[h];
            return 1;
        }
    }
}

int sks__tok_add_merge(sks_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, int rank) {
    int ia = sks__tok_lookup(t, a, alen), ib = sks__tok_lookup(t, b, blen);
    if (ia < 0 || ib < 0 || alen + blen > 4096) return 1;
    char tmp[4096];
    memcpy(tmp, a, alen);
    memcpy(tmp + alen, b, blen);
    int ir = sks__tok_lookup(t, tmp, alen + blen);
    if (ir < 0) return 1;
    if (t->mcount * 2 + 2 > t->mcap) return sks_fail(SKS_EINTERNAL, "tokenizer: merge table not reserved");
    int32_t r0, s0;
    if (merge_find(t, ia, ib, &r0, &s0)) return 1; /* the first (best) rank wins */
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    size_t mask = t->mcap - 1, h = (size_t)mix64(key) & mask;
    while (t->mres[h] >= 0) h = (h + 1) & mask;
    t->mkey[h] = key;
    t->mrank[h] = rank;
    t->mres[h] = ir;
    t->mcount++;
    return 0;
}

void sks_tokenizer_free(sks_tokenizer *t) {
    if (!t) return;
    sks__textproc_free(t->proc);
    SKS_FREE_ALL(t->piece, t->plen, t->score, t->type, t->poff, t->arena, t->verbatim, t->atomic, t->htab,
                 t->mkey, t->mrank, t->mres, t);
}

int sks_tokenizer_vocab_size(const sks_tokenizer *t) { return t ? t->n : 0; }
int sks_tokenizer_bos(const sks_tokenizer *t) { return t ? t->bos : -1; }
int sks_tokenizer_eos(const sks_tokenizer *t) { return t ? t->eos : -1; }
const char *sks_tokenizer_kind(const sks_tokenizer *t) { return t ? t->kind : ""; }

const char *sks_tokenizer_piece(const sks_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n) return NULL;
    return t->piece[id];
}

int sks_tokenizer_piece_id(const sks_tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    if (!piece[0]) { /* empty pieces are not hashed (format gaps); find the first one */
        for (int i = 0; i < t->n; i++)
            if (t->plen[i] == 0) return i;
        return -1;
    }
    return sks__tok_lookup(t, piece, strlen(piece));
}

/* ---- BPE ------------------------------------------------------------------------- */

typedef struct {
    size_t start;   /* byte offset in the segment text */
    uint32_t len;   /* 0 once merged into its left neighbour */
    int32_t id;     /* piece id, -1 if the span is no piece */
    int prev, next;
    int frozen;     /* user-defined pieces never merge */
} bpe_sym;

typedef struct {
    double prio;
    int left, right;
    uint32_t len;
    int32_t res;
} bpe_pair;

typedef struct {
    bpe_pair *h;
    size_t n, cap;
} bpe_heap;

static int pair_before(const bpe_pair *a, const bpe_pair *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(bpe_heap *q, bpe_pair p) {
    bpe_pair *h = sks_grow(q->h, q->n, &q->cap, sizeof *h, 64);
    if (!h) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    q->h = h;
    size_t i = q->n++;
    q->h[i] = p;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&q->h[i], &q->h[up])) break;
        bpe_pair tmp = q->h[i];
        q->h[i] = q->h[up];
        q->h[up] = tmp;
        i = up;
    }
    return 0;
}

static bpe_pair heap_pop(bpe_heap *q) {
    bpe_pair top = q->h[0];
    q->h[0] = q->h[--q->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < q->n && pair_before(&q->h[l], &q->h[best])) best = l;
        if (r < q->n && pair_before(&q->h[r], &q->h[best])) best = r;
        if (best == i) break;
        bpe_pair tmp = q->h[i];
        q->h[i] = q->h[best];
        q->h[best] = tmp;
        i = best;
    }
    return top;
}

static int try_pair(const sks_tokenizer *t, const char *text, const bpe_sym *s, int l, int r, bpe_heap *q) {
    if (l < 0 || r < 0 || s[l].frozen || s[r].frozen) return 0;
    bpe_pair p = {0, l, r, s[l].len + s[r].len, -1};
    if (t->use_merges) {
        int32_t rank, res;
        if (s[l].id < 0 || s[r].id < 0 || !merge_find(t, s[l].id, s[r].id, &rank, &res)) return 0;
        p.prio = -(double)rank;
        p.res = res;
    } else {
        int id = sks__tok_lookup(t, text + s[l].start, p.len);
        if (id < 0 || (t->type[id] != SKS__PT_NORMAL && t->type[id] != SKS__PT_USER)) return 0;
        p.prio = t->score[id];
        p.res = id;
    }
    return heap_push(q, p);
}

/* Merge the symbols s[0..n) (a linked chain over text) in place. */
static int bpe_merge(const sks_tokenizer *t, const char *text, bpe_sym *s, int n) {
    bpe_heap q = {0};
    int rc = 0;
    for (int i = 0; i + 1 < n && !rc; i++) rc = try_pair(t, text, s, i, i + 1, &q);
    while (!rc && q.n > 0) {
        bpe_pair p = heap_pop(&q);
        bpe_sym *L = &s[p.left], *R = &s[p.right];
        if (L->len == 0 || R->len == 0 || L->next != p.right || L->len + R->len != p.len) continue;
        L->len += R->len;
        L->id = p.res;
        R->len = 0;
        L->next = R->next;
        if (R->next >= 0) s[R->next].prev = p.left;
        rc = try_pair(t, text, s, L->prev, p.left, &q);
        if (!rc) rc = try_pair(t, text, s, p.left, L->next, &q);
    }
    free(q.h);
    return rc;
}

/* ---- id output ------------------------------------------------------------------- */

typedef struct {
    int32_t *ids;
    size_t n, cap;
} id_vec;

static int emit(id_vec *v, int32_t id) {
    int32_t *ids = sks_grow(v->ids, v->n, &v->cap, sizeof *ids, 64);
    if (!ids) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    v->ids = ids;
    v->ids[v->n++] = id;
    return 0;
}

/* A symbol that is no piece: its bytes as <0xAB> pieces, else one unk. */
static int emit_unknown(const sks_tokenizer *t, const unsigned char *bytes, size_t len, id_vec *v) {
    int all = t->byte_fallback;
    for (size_t i = 0; i < len && all; i++) all = t->byte_piece[bytes[i]] >= 0;
    if (all) {
        for (size_t i = 0; i < len; i++) {
            int rc = emit(v, t->byte_piece[bytes[i]]);
            if (rc) return rc;
        }
        return 0;
    }
    if (t->unk >= 0) return emit(v, t->unk);
    return sks_fail(SKS_EUNSUPPORTED, "tokenizer: text has a character with no piece, no byte piece and no unk");
}

/* ---- unigram ------------------------------------------------------------------------ */

/* SentencePiece unigram: the segmentation of the symbols s[0..n) (characters and frozen
 * user pieces) that maximizes the sum of piece scores (log probabilities), by Viterbi:
 *   best[m] = max over pieces p = s[k..m) of best[k] + score(p),
 * where a lone character that is no piece costs unk_score. Rewrites s into the chain of
 * the winning pieces (id -1 for unknown characters). */
static int unigram_segment(const sks_tokenizer *t, const char *txt, bpe_sym *s, int n) {
    double *best = sks_malloc_n((size_t)n + 1, sizeof *best);
    int *from = sks_malloc_n((size_t)n + 1, sizeof *from);
    int32_t *bid = sks_malloc_n((size_t)n + 1, sizeof *bid);
    int *seg = sks_malloc_n((size_t)n + 1, sizeof *seg);
    if (!best || !from || !bid || !seg) {
        free(best);
        free(from);
        free(bid);
        free(seg);
        return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    }
    for (int m = 0; m <= n; m++) {
        best[m] = -1e300;
        from[m] = -1;
        bid[m] = -1;
    }
    best[0] = 0;
    for (int k = 0; k < n; k++) {
        if (from[k] < 0 && k > 0) continue; /* unreachable: cannot happen, every char relaxes */
        if (s[k].frozen) {
            double c = best[k] + t->score[s[k].id];
            if (c > best[k + 1]) best[k + 1] = c, from[k + 1] = k, bid[k + 1] = s[k].id;
            continue;
        }
        size_t bytes = 0;
        int single = 0;
        for (int m = k; m < n && !s[m].frozen; m++) {
            bytes += s[m].len;
            if (bytes > t->max_plen) break;
            int id = sks__tok_lookup(t, txt + s[k].start, bytes);
            if (id < 0 || (t->type[id] != SKS__PT_NORMAL && t->type[id] != SKS__PT_USER)) continue;
            if (m == k) single = 1;
            double c = best[k] + t->score[id];
            if (c > best[m + 1]) best[m + 1] = c, from[m + 1] = k, bid[m + 1] = id;
        }
        if (!single) {
            double c = best[k] + t->unk_score;
            if (c > best[k + 1]) best[k + 1] = c, from[k + 1] = k, bid[k + 1] = -1;
        }
    }
    /* backtrack: segment ends, last first */
    int ns = 0;
    for (int m = n; m > 0; m = from[m]) seg[ns++] = m;
    for (int j = ns - 1, a = 0; j >= 0; j--) {
        int e = seg[j];
        size_t end = s[e - 1].start + s[e - 1].len;
        s[a].len = (uint32_t)(end - s[a].start);
        s[a].id = bid[e];
        s[a].next = e < n ? e : -1;
        a = e;
    }
    free(best);
    free(from);
    free(bid);
    free(seg);
    return 0;
}

/* ---- longest match among listed pieces (user-defined, added) ---------------------- */

/* first[c] = 1 when one of the pieces ids[0..n) starts with byte c */
static void first_bytes(const sks_tokenizer *t, const int *ids, int n, unsigned char first[256]) {
    memset(first, 0, 256);
    for (int k = 0; k < n; k++) first[(unsigned char)t->piece[ids[k]][0]] = 1;
}

/* The longest of the pieces ids[0..n) that s[0..len) starts with: its id, its length in
 * *plen; -1 (and 0) when none does. first is first_bytes' table of the same pieces. */
static int longest_piece(const sks_tokenizer *t, const int *ids, int n, const unsigned char first[256],
                         const char *s, size_t len, size_t *plen) {
    size_t best = 0;
    int best_id = -1;
    for (int k = 0; k < n && first[(unsigned char)s[0]]; k++) {
        int id = ids[k];
        size_t pl = t->plen[id];
        if (pl > best && pl <= len && memcmp(s, t->piece[id], pl) == 0) {
            best = pl;
            best_id = id;
        }
    }
    *plen = best;
    return best_id;
}

/* ---- SentencePiece-style segment ---------------------------------------------------- */

static int encode_spm_segment(const sks_tokenizer *t, const char *seg, size_t len, int at_start, id_vec *v) {
    /* normalize: optional whitespace cleanup, dummy prefix, ' ' -> space piece */
    size_t b0 = 0, b1 = len;
    if (t->remove_extra_ws) {
        while (b0 < b1 && seg[b0] == ' ') b0++;
        while (b1 > b0 && seg[b1 - 1] == ' ') b1--;
    }
    if (b0 == b1) return 0;
    size_t sl = strlen(t->space), cap;
    if (sks_mul_size(b1 - b0 + 1, sl > 1 ? sl : 1, &cap)) return sks_fail(SKS_EOVERFLOW, "tokenizer: text too long");
    char *txt = malloc(cap + 1);
    bpe_sym *s = sks_malloc_n(cap + 1, sizeof *s);
    if (!txt || !s) {
        free(txt);
        free(s);
        return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    }
    size_t o = 0;
    if (t->add_dummy_prefix == 1 || (t->add_dummy_prefix == 2 && at_start)) {
        memcpy(txt, t->space, sl);
        o = sl;
    }
    for (size_t i = b0; i < b1; i++) {
        if (seg[i] == ' ') {
            if (t->remove_extra_ws && i > b0 && seg[i - 1] == ' ') continue;
            memcpy(txt + o, t->space, sl);
            o += sl;
        } else {
            txt[o++] = seg[i];
        }
    }
    txt[o] = '\0';
    /* initial symbols: user-defined pieces (longest match), else one character */
    unsigned char first[256];
    first_bytes(t, t->atomic, t->n_atomic, first);
    int n = 0;
    for (size_t i = 0; i < o;) {
        size_t best;
        int best_id = longest_piece(t, t->atomic, t->n_atomic, first, txt + i, o - i, &best);
        bpe_sym *y = &s[n];
        y->start = i;
        y->prev = n - 1;
        y->next = -1;
        if (n > 0) s[n - 1].next = n;
        if (best_id >= 0) {
            y->len = (uint32_t)best;
            y->id = best_id;
            y->frozen = 1;
        } else {
            y->len = (uint32_t)char_len(txt + i, o - i);
            y->id = sks__tok_lookup(t, txt + i, y->len);
            if (y->id >= 0 && t->type[y->id] != SKS__PT_NORMAL && t->type[y->id] != SKS__PT_USER) y->id = -1;
            y->frozen = 0;
        }
        i += y->len;
        n++;
    }
    int rc = t->unigram ? unigram_segment(t, txt, s, n) : bpe_merge(t, txt, s, n);
    for (int i = 0; !rc && i >= 0 && n > 0; i = s[i].next) {
        if (s[i].id >= 0) rc = emit(v, s[i].id);
        else rc = emit_unknown(t, (const unsigned char *)txt + s[i].start, s[i].len, v);
    }
    free(txt);
    free(s);
    return rc;
}

/* ---- pipeline words (HF BPE, GGUF gpt2) ----------------------------------------------- */

typedef struct {
    const sks_tokenizer *t;
    id_vec *v;
} word_ctx;

/* One pre-tokenized word: its UTF-8 characters are the initial symbols (a character
 * that is no piece becomes its <0xAB> byte pieces with byte fallback, else unk, runs
 * of unks fused into one with fuse_unk), then merges by rank, as the `tokenizers`
 * library's BPE model does. */
static int encode_word(const char *w, size_t len, void *vctx) {
    word_ctx *c = vctx;
    const sks_tokenizer *t = c->t;
    int whole = t->ignore_merges ? sks__tok_lookup(t, w, len) : -1;
    if (whole >= 0) return emit(c->v, whole);
    bpe_sym *s = sks_malloc_n(len + 1, sizeof *s);
    if (!s) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    int n = 0, rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t l = char_len(w + i, len - i);
        int id = sks__tok_lookup(t, w + i, l);
        int nb = 0;
        if (id < 0 && t->byte_fallback) {
            nb = 1;
            for (size_t k = 0; k < l && nb; k++) nb = t->byte_piece[(unsigned char)w[i + k]] >= 0;
        }
        size_t parts = nb ? l : 1;
        for (size_t k = 0; k < parts; k++) {
            int pid = nb ? t->byte_piece[(unsigned char)w[i + k]] : id;
            if (pid < 0) {
                if (t->unk < 0) {
                    rc = sks_fail(SKS_EUNSUPPORTED, "tokenizer: a character has no piece, no byte piece and no unk");
                    break;
                }
                if (t->fuse_unk && n > 0 && s[n - 1].id == t->unk) {
                    s[n - 1].len += (uint32_t)l;
                    continue;
                }
                pid = t->unk;
            }
            s[n] = (bpe_sym){nb ? i + k : i, nb ? 1u : (uint32_t)l, pid, n - 1, -1, pid == t->unk};
            if (n > 0) s[n - 1].next = n;
            n++;
        }
        i += l;
    }
    if (!rc) rc = bpe_merge(t, w, s, n);
    for (int i = 0; !rc && i >= 0 && n > 0; i = s[i].next) rc = emit(c->v, s[i].id);
    free(s);
    return rc;
}

static int encode_segment(const sks_tokenizer *t, const char *seg, size_t len, int at_start, id_vec *v) {
    if (!t->proc) return encode_spm_segment(t, seg, len, at_start, v);
    word_ctx c = {t, v};
    return sks__textproc_run(t->proc, seg, len, at_start, encode_word, &c);
}

int sks_tokenizer_encode(const sks_tokenizer *t, const char *text, int add_bos, int32_t **ids, int *n) {
    if (!t || !text || !ids || !n) return sks_fail(SKS_EARG, "sks_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    id_vec v = {0};
    int rc = 0;
    if (add_bos && t->bos >= 0) rc = emit(&v, t->bos);
    size_t len = strlen(text), seg0 = 0;
    /* symbol indices and spans are int / uint32: bound the text well below that */
    if (len > ((size_t)1 << 30)) return sks_fail(SKS_EARG, "sks_tokenizer_encode: text of %zu bytes is too long", len);
    unsigned char first[256];
    first_bytes(t, t->verbatim, t->n_verbatim, first);
    /* verbatim (added) tokens split the text first, longest match at each position */
    for (size_t i = 0; i < len && !rc && t->n_verbatim > 0;) {
        size_t best;
        int best_id = longest_piece(t, t->verbatim, t->n_verbatim, first, text + i, len - i, &best);
        if (best_id < 0) {
            i++;
            continue;
        }
        rc = encode_segment(t, text + seg0, i - seg0, seg0 == 0, &v);
        if (!rc) rc = emit(&v, best_id);
        i += best;
        seg0 = i;
    }
    if (!rc) rc = encode_segment(t, text + seg0, len - seg0, seg0 == 0, &v);
    if (!rc && v.n > (size_t)INT32_MAX) rc = sks_fail(SKS_EOVERFLOW, "tokenizer: too many tokens");
    if (rc) {
        free(v.ids);
        return rc;
    }
    if (!v.ids) {
        v.ids = malloc(sizeof *v.ids); /* a valid pointer even for zero tokens */
        if (!v.ids) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    }
    *ids = v.ids;
    *n = (int)v.n;
    return 0;
}

/* ---- decode ---------------------------------------------------------------------- */

const char *sks_tokenizer_decode(const sks_tokenizer *t, int prev, int id, char *buf, size_t cap) {
    if (!buf || cap == 0) return "";
    buf[0] = '\0';
    if (!t || id < 0 || id >= t->n || t->type[id] == SKS__PT_CONTROL) return buf;
    const char *p = t->piece[id];
    size_t len = t->plen[id], o = 0;
    if (!t->byte_level) {
        int b = t->type[id] == SKS__PT_BYTE ? parse_byte_piece(p, len) : -1;
        if (b >= 0) {
            if (cap > 1) {
                buf[0] = (char)b;
                buf[1] = '\0';
            }
            return buf;
        }
        size_t sl = strlen(t->space);
        size_t i = 0;
        /* after BOS SentencePiece drops the dummy-prefix space */
        if (prev >= 0 && prev == t->bos && len >= sl && memcmp(p, t->space, sl) == 0) i = sl;
        while (i < len && o + 1 < cap) {
            if (len - i >= sl && memcmp(p + i, t->space, sl) == 0) {
                buf[o++] = ' ';
                i += sl;
            } else {
                buf[o++] = p[i++];
            }
        }
        buf[o] = '\0';
        return buf;
    }
    int verbatim = t->type[id] == SKS__PT_USER;
    for (size_t i = 0; i < len && o + 1 < cap;) {
        size_t l = char_len(p + i, len - i);
        int b = verbatim ? -1 : cp_to_byte(decode_cp(p + i, l));
        if (b >= 0) {
            buf[o++] = (char)b;
        } else {
            if (o + l >= cap) break;
            memcpy(buf + o, p + i, l);
            o += l;
        }
        i += l;
    }
    buf[o] = '\0';
    return buf;
}

/* ---- opening ------------------------------------------------------------------------ */

static int read_whole(const char *path, uint8_t **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return sks_fail(errno == ENOENT ? SKS_ENOTFOUND : SKS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return sks_fail(SKS_EIO, "%s: not a regular file", path);
    }
    /* tokenizers are small; refuse absurd sizes rather than read gigabytes */
    if (st.st_size < 0 || (uint64_t)st.st_size > ((uint64_t)1 << 31)) {
        fclose(f);
        return sks_fail(SKS_EFORMAT, "%s: %lld bytes is too large for a tokenizer", path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    int rc = sks_fread_all(f, n, path, buf);
    if (rc) return rc;
    *len = n;
    return 0;
}

int sks_tokenizer_open(const char *path, sks_tokenizer **out) {
    if (!path || !out) return sks_fail(SKS_EARG, "sks_tokenizer_open: NULL argument");
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = read_whole(path, &buf, &len);
    if (rc) return rc;
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    if (len < 4) {
        rc = sks_fail(SKS_EFORMAT, "%s: %zu bytes is too short for a tokenizer", path, len);
    } else if (i < len && buf[i] == '{') {
        rc = sks__tok_read_hf_json((const char *)buf, len, path, out);
    } else if (buf[0] == 0x0a && !sks__tok_is_llama2c(buf, len)) {
        /* 0x0a is protobuf field 1 (pieces), length-delimited */
        rc = sks__tok_read_spm(buf, len, path, out);
    } else {
        rc = sks__tok_read_llama2c(buf, len, path, out);
    }
    free(buf);
    return rc;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}
static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Directory part of path ("." if none), malloc'd. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, path, n);
    d[n] = '\0';
    return d;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* llama2.c: tokenizer.bin, then tok*.bin (sorted), the first whose vocabulary equals the
 * model's; if none matches, the first that opens. */
static int find_llama2c(const char *dir, int vocab, sks_tokenizer **out) {
    char **names = NULL;
    size_t nn = 0;
    int rc = 0;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t l = strlen(e->d_name);
            if (strcmp(e->d_name, "tokenizer.bin") == 0) continue;
            if (l < 7 || strncmp(e->d_name, "tok", 3) != 0 || strcmp(e->d_name + l - 4, ".bin") != 0) continue;
            char **nm = realloc(names, (nn + 1) * sizeof *nm);
            if (!nm || !(nm[nn] = strdup(e->d_name))) {
                if (nm) names = nm;
                rc = sks_fail(SKS_ENOMEM, "out of memory");
                break;
            }
            names = nm;
            nn++;
        }
        closedir(d);
    }
    if (!rc && nn > 1) qsort(names, nn, sizeof *names, cmp_str);
    sks_tokenizer *first = NULL;
    for (size_t k = 0; !rc && k <= nn && !*out; k++) {
        char *p = join(dir, k == 0 ? "tokenizer.bin" : names[k - 1]);
        if (!p) {
            rc = sks_fail(SKS_ENOMEM, "out of memory");
            break;
        }
        sks_tokenizer *t = NULL;
        if (is_file(p) && sks_tokenizer_open(p, &t) == 0) {
            if (t->n == vocab) *out = t;
            else if (!first) first = t;
            else sks_tokenizer_free(t);
        }
        free(p);
    }
    for (size_t k = 0; k < nn; k++) free(names[k]);
    free(names);
    if (*out) {
        sks_tokenizer_free(first);
    } else if (first) {
        sks_log(SKS_LOG_WARN, "%s: tokenizer vocabulary %d differs from the model's %d", __func__, first->n, vocab);
        *out = first;
    }
    if (rc) return rc;
    if (!*out)
        return sks_fail(SKS_ENOTFOUND, "%s: no tokenizer.bin or tok*.bin llama2.c tokenizer here (use --tokenizer)", dir);
    sks_clear_error();
    return 0;
}

int sks_tokenizer_open_for_model(const sks_model *m, const char *explicit_path, sks_tokenizer **out) {
    if (!m || !out) return sks_fail(SKS_EARG, "sks_tokenizer_open_for_model: NULL argument");
    *out = NULL;
    if (explicit_path) return sks_tokenizer_open(explicit_path, out);
    const char *path = sks_model_path(m);
    switch (sks_model_format(m)) {
    case SKS_FMT_GGUF: {
        const struct sks_gguf *g = sks_model_gguf(m);
        if (!g) return sks_fail(SKS_ENOTFOUND, "%s: no GGUF metadata for a tokenizer", path);
        return sks_tokenizer_open_gguf(g, path, out);
    }
    case SKS_FMT_SAFETENSORS: {
        char *dir = is_dir(path) ? strdup(path) : dir_of(path);
        if (!dir) return sks_fail(SKS_ENOMEM, "out of memory");
        /* tokenizer.json first; when it exists but cannot be used (say a Unigram model),
         * tokenizer.model still may; the first failure is the one reported */
        static const char *const names[] = {"tokenizer.json", "tokenizer.model"};
        int rc = SKS_ENOTFOUND, first_rc = 0;
        char first_msg[512] = "";
        for (int k = 0; k < 2 && rc != 0; k++) {
            char *p = join(dir, names[k]);
            if (!p) {
                rc = sks_fail(SKS_ENOMEM, "out of memory");
                break;
            }
            if (is_file(p)) {
                rc = sks_tokenizer_open(p, out);
                if (rc && !first_rc) {
                    first_rc = rc;
                    snprintf(first_msg, sizeof first_msg, "%s", sks_last_error());
                }
            }
            free(p);
        }
        if (rc && first_rc) rc = sks_fail(first_rc, "%s", first_msg);
        else if (rc == SKS_ENOTFOUND)
            rc = sks_fail(SKS_ENOTFOUND, "%s: no tokenizer.json or tokenizer.model in %s (use --tokenizer)", path, dir);
        free(dir);
        return rc;
    }
    case SKS_FMT_LLAMA2C: {
        char *dir = dir_of(path);
        if (!dir) return sks_fail(SKS_ENOMEM, "out of memory");
        const sks_arch *a = sks_model_arch(m);
        int rc = find_llama2c(dir, a ? a->vocab_size : -1, out);
        free(dir);
        return rc;
    }
    default:
        return sks_fail(SKS_ENOTFOUND, "%s: an in-memory model has no tokenizer (use --tokenizer)", path);
    }
}
