/* tokenizer_spm.c - llama2.c tokenizer.bin and SentencePiece tokenizer.model readers.
 *
 * llama2.c tokenizer.bin (karpathy/llama2.c tokenizer.py export):
 *   int32 max_token_length, then per token: f32 score, int32 len, len bytes.
 *   Pieces carry ' ' where SentencePiece has U+2581; ids 0/1/2 are unk/BOS/EOS and
 *   ids 3..258 the byte pieces <0x00>..<0xFF>.
 *
 * SentencePiece tokenizer.model: a protobuf (proto2) ModelProto, read with a minimal
 * wire-format reader (varint, 64-bit, length-delimited, 32-bit; groups rejected):
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum, default NORMAL=1:
 *                   1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte)
 *   TrainerSpec     3 model_type (1 unigram (default), 2 bpe, 3 word, 4 char; 1 and 2 read),
 *                   24 treat_whitespace_as_suffix, 35 byte_fallback,
 *                   40 unk_id (default 0), 41 bos_id (1), 42 eos_id (2), 43 pad_id (-1)
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix (default true),
 *                   4 remove_extra_whitespaces (true), 5 escape_whitespaces (true)
 * Every length is checked against the bytes that remain in its enclosing message.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static int32_t rd_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, 4);
    return r;
}

static float rd_f32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float r;
    memcpy(&r, &v, 4);
    return r;
}

/* ---- llama2.c -------------------------------------------------------------------- */

/* Walk the records; returns the count, or -1 with *bad_at set to the failing record. */
static long llama2c_count(const uint8_t *buf, size_t len, int strict, long *bad_at) {
    if (len < 4) {
        *bad_at = -1;
        return -1;
    }
    int32_t maxlen = rd_i32(buf);
    if (maxlen <= 0 || maxlen > (1 << 20)) {
        *bad_at = -1;
        return -1;
    }
    size_t off = 4;
    long n = 0;
    while (off < len) {
        if (len - off < 8) break;
        int32_t l = rd_i32(buf + off + 4);
        if (l < 0 || (size_t)l > len - off - 8 || (strict && l > maxlen)) break;
        off += 8 + (size_t)l;
        if (++n > INT32_MAX / 2) break;
    }
    if (off != len || n == 0) {
        *bad_at = n;
        return -1;
    }
    return n;
}

int sks__tok_is_llama2c(const uint8_t *buf, size_t len) {
    long bad;
    return llama2c_count(buf, len, 1, &bad) > 0;
}

int sks__tok_read_llama2c(const uint8_t *buf, size_t len, const char *name, sks_tokenizer **out) {
    *out = NULL;
    long bad = 0;
    long n = llama2c_count(buf, len, 0, &bad);
    if (n < 0) {
        if (bad < 0)
            return sks_fail(SKS_EFORMAT, "%s: max_token_length: not a llama2.c tokenizer (bad header)", name);
        return sks_fail(SKS_EBOUNDS, "%s: token %ld: record runs past the end of the file (truncated?)", name, bad);
    }
    sks_tokenizer *t;
    int rc = sks__tok_new("llama2c", (int)n, &t);
    if (rc) return rc;
    size_t off = 4;
    for (int i = 0; i < (int)n && !rc; i++) {
        float score = rd_f32(buf + off);
        size_t l = (size_t)rd_i32(buf + off + 4);
        const char *s = (const char *)buf + off + 8;
        int type = SKS__PT_NORMAL;
        if (i == 0 && l == 5 && memcmp(s, "<unk>", 5) == 0) type = SKS__PT_UNKNOWN;
        else if ((l == 5 && memcmp(s, "\n<s>\n", 5) == 0) || (l == 6 && memcmp(s, "\n</s>\n", 6) == 0) ||
                 (l == 3 && memcmp(s, "<s>", 3) == 0) || (l == 4 && memcmp(s, "</s>", 4) == 0))
            type = SKS__PT_CONTROL;
        else if (l == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') type = SKS__PT_BYTE;
        rc = sks__tok_set_piece(t, i, s, l, score, type);
        if (rc) rc = sks_fail(rc, "%s: token %d: %s", name, i, sks_last_error());
        off += 8 + l;
    }
    if (!rc) {
        /* llama2.c convention (run.c): 0 unk, 1 BOS, 2 EOS */
        if (t->type[0] == SKS__PT_UNKNOWN) t->unk = 0;
        if (n > 2) {
            t->bos = 1;
            t->eos = 2;
        }
        memcpy(t->space, " ", 2);
        t->add_dummy_prefix = 1;
        t->remove_extra_ws = 0;
        rc = sks__tok_finish(t, name);
    }
    if (rc) {
        sks_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* ---- protobuf wire format ------------------------------------------------------------ */

typedef struct {
    const uint8_t *p, *end;
} pb_buf;

typedef struct {
    uint32_t field;
    int wire;
    uint64_t v;          /* varint / fixed value */
    const uint8_t *data; /* length-delimited payload */
    size_t len;
} pb_field;

static int pb_varint(pb_buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return -1;
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

/* Next field; 1 when done, 0 ok, -1 malformed (what says why). */
static int pb_next(pb_buf *b, pb_field *f, const char **what) {
    if (b->p >= b->end) return 1;
    uint64_t key;
    if (pb_varint(b, &key)) {
        *what = "truncated field key";
        return -1;
    }
    f->field = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->field == 0 || key >> 3 > 0x1fffffff) {
        *what = "invalid field number";
        return -1;
    }
    switch (f->wire) {
    case 0:
        if (pb_varint(b, &f->v)) {
            *what = "truncated varint";
            return -1;
        }
        return 0;
    case 1:
        if (b->end - b->p < 8) {
            *what = "64-bit value past the end";
            return -1;
        }
        f->v = 0;
        for (int i = 7; i >= 0; i--) f->v = f->v << 8 | b->p[i];
        b->p += 8;
        return 0;
    case 2: {
        uint64_t l;
        if (pb_varint(b, &l)) {
            *what = "truncated length";
            return -1;
        }
        if (l > (uint64_t)(b->end - b->p)) {
            *what = "length past the end of the message";
            return -1;
        }
        f->data = b->p;
        f->len = (size_t)l;
        b->p += l;
        return 0;
    }
    case 5:
        if (b->end - b->p < 4) {
            *what = "32-bit value past the end";
            return -1;
        }
        f->v = (uint32_t)rd_i32(b->p);
        b->p += 4;
        return 0;
    default:
        *what = "unsupported wire type (group or invalid)";
        return -1;
    }
}

typedef struct {
    int model_type, byte_fallback, ws_suffix;
    int64_t unk, bos, eos;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len;
} spm_specs;

/* the TrainerSpec fields read */
static void trainer_field(spm_specs *s, const pb_field *f) {
    if (f->wire != 0) return;
    switch (f->field) {
    case 3: s->model_type = (int)f->v; break;
    case 24: s->ws_suffix = f->v != 0; break;
    case 35: s->byte_fallback = f->v != 0; break;
    case 40: s->unk = (int64_t)f->v; break; /* int32: negatives are 10-byte varints */
    case 41: s->bos = (int64_t)f->v; break;
    case 42: s->eos = (int64_t)f->v; break;
    default: break;
    }
}

/* the NormalizerSpec fields read */
static void normalizer_field(spm_specs *s, const pb_field *f) {
    if (f->field == 2 && f->wire == 2) s->charsmap_len = f->len;
    if (f->wire != 0) return;
    if (f->field == 3) s->add_dummy_prefix = f->v != 0;
    else if (f->field == 4) s->remove_extra_ws = f->v != 0;
    else if (f->field == 5) s->escape_ws = f->v != 0;
}

/* Every field of the spec message d[0..len) (msg names it in the message) through fn. */
static int parse_spec(const uint8_t *d, size_t len, void (*fn)(spm_specs *, const pb_field *), spm_specs *s,
                      const char *name, const char *msg) {
    pb_buf b = {d, d + len};
    pb_field f;
    const char *what = NULL;
    int r;
    while ((r = pb_next(&b, &f, &what)) == 0) fn(s, &f);
    if (r < 0) return sks_fail(SKS_EFORMAT, "%s: %s: %s", name, msg, what);
    return 0;
}

static int parse_piece(sks_tokenizer *t, int id, const uint8_t *d, size_t len, const char *name) {
    pb_buf b = {d, d + len};
    pb_field f;
    const char *what = NULL;
    const uint8_t *s = NULL;
    size_t sl = 0;
    float score = 0;
    int type = SKS__PT_NORMAL, r;
    while ((r = pb_next(&b, &f, &what)) == 0) {
        if (f.field == 1 && f.wire == 2) {
            s = f.data;
            sl = f.len;
        } else if (f.field == 2 && f.wire == 5) {
            uint32_t u = (uint32_t)f.v;
            memcpy(&score, &u, 4);
        } else if (f.field == 3 && f.wire == 0) {
            type = (int)f.v;
        }
    }
    if (r < 0) return sks_fail(SKS_EFORMAT, "%s: pieces[%d]: %s", name, id, what);
    if (!s) return sks_fail(SKS_EFORMAT, "%s: pieces[%d]: no piece string", name, id);
    if (type < SKS__PT_NORMAL || type > SKS__PT_BYTE)
        return sks_fail(SKS_EFORMAT, "%s: pieces[%d]: unknown type %d", name, id, type);
    int rc = sks__tok_set_piece(t, id, (const char *)s, sl, score, type);
    if (rc) return sks_fail(rc, "%s: pieces[%d]: %s", name, id, sks_last_error());
    return 0;
}

int sks__tok_read_spm(const uint8_t *buf, size_t len, const char *name, sks_tokenizer **out) {
    *out = NULL;
    spm_specs sp = {.model_type = 1, .unk = 0, .bos = 1, .eos = 2,
                    .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    pb_buf b = {buf, buf + len};
    pb_field f;
    const char *what = NULL;
    long n = 0;
    int r, rc = 0;
    /* pass 1: validate the top level, count pieces, read the specs */
    while ((r = pb_next(&b, &f, &what)) == 0 && !rc) {
        if (f.field == 1 && f.wire == 2) {
            if (++n > INT32_MAX / 2) return sks_fail(SKS_EFORMAT, "%s: pieces: too many", name);
        } else if (f.field == 2 && f.wire == 2) {
            rc = parse_spec(f.data, f.len, trainer_field, &sp, name, "trainer_spec");
        } else if (f.field == 3 && f.wire == 2) {
            rc = parse_spec(f.data, f.len, normalizer_field, &sp, name, "normalizer_spec");
        }
    }
    if (rc) return rc;
    if (r < 0) return sks_fail(SKS_EFORMAT, "%s: ModelProto: %s", name, what);
    if (n == 0) return sks_fail(SKS_EFORMAT, "%s: ModelProto: no pieces (not a SentencePiece model?)", name);
    if (sp.model_type != 1 && sp.model_type != 2)
        return sks_fail(SKS_EUNSUPPORTED, "%s: trainer_spec.model_type %d: only unigram (1) and BPE (2) are supported",
                        name, sp.model_type);
    if (sp.ws_suffix)
        return sks_fail(SKS_EUNSUPPORTED, "%s: trainer_spec.treat_whitespace_as_suffix is not supported", name);
    if (sp.charsmap_len > 0)
        sks_log(SKS_LOG_WARN, "%s: %s: precompiled normalization map ignored (text is not NFKC-normalized)",
                __func__, name);
    sks_tokenizer *t;
    rc = sks__tok_new(sp.model_type == 1 ? "sentencepiece-unigram" : "sentencepiece", (int)n, &t);
    if (rc) return rc;
    b.p = buf;
    int id = 0;
    while (!rc && pb_next(&b, &f, &what) == 0)
        if (f.field == 1 && f.wire == 2) rc = parse_piece(t, id++, f.data, f.len, name);
    if (!rc) {
        t->unk = sp.unk >= 0 && sp.unk < n ? (int)sp.unk : -1;
        t->bos = sp.bos >= 0 && sp.bos < n ? (int)sp.bos : -1;
        t->eos = sp.eos >= 0 && sp.eos < n ? (int)sp.eos : -1;
        t->unigram = sp.model_type == 1;
        t->byte_fallback = sp.byte_fallback;
        t->add_dummy_prefix = sp.add_dummy_prefix;
        t->remove_extra_ws = sp.remove_extra_ws;
        if (!sp.escape_ws) memcpy(t->space, " ", 2);
        rc = sks__tok_finish(t, name);
    }
    if (rc) {
        sks_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
