/* tokenizer_pre.c - normalizers and pre-tokenizers of Hugging Face tokenizer.json, run
 * exactly: regexes by PCRE2 (UTF + UCP, JIT where available), Unicode categories and
 * normalization forms by utf8proc. The GGUF table (tokenizer_pre_table.c) builds the
 * same steps from a tokenizer.ggml.pre name.
 *
 * A segment of text (between added tokens) goes through the normalizer steps as one
 * string, then through the pre-tokenizer steps as a list of pieces: each step maps
 * every piece to zero or more pieces, as the `tokenizers` library does
 * (PreTokenizedString::split). ByteLevel maps each piece's bytes to GPT-2's printable
 * alphabet, so later steps see that alphabet, as in the library.
 *
 * The library's regexes are Oniguruma's; before PCRE2 compiles one, the few classes
 * that differ are rewritten (see translate_regex): \s also matches U+0085, \w is
 * letters, marks, decimal digits and connector punctuation, \h is a hex digit, and a
 * class nested inside a class is its union. ^ and $ match at line ends (PCRE2_MULTILINE,
 * newline LF), as in Oniguruma's default syntax.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer_internal.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

enum step_kind {
    ST_SPLIT,      /* regex (or literal) matches, then a delimiter behavior */
    ST_CHARS,      /* every character of a class is a match, then a behavior */
    ST_BYTELEVEL,  /* optional prefix space, optional GPT-2 regex split, byte alphabet */
    ST_METASPACE,  /* ' ' -> replacement, optional prepend, optional split */
    N_FORM,        /* normalizer: NFC / NFD / NFKC / NFKD */
    N_LOWER,       /* normalizer: lowercase */
    N_REPLACE,     /* normalizer: every match -> content */
    N_PREPEND,     /* normalizer: prepend a string to non-empty text */
    N_STRIP,       /* normalizer: strip whitespace at the left and/or right */
    N_STRIP_ACCENTS
};

enum { CH_NUMERIC, CH_PUNCT, CH_SPACE };

struct pstep {
    int kind;
    int behavior;           /* SKS__SPLIT_* */
    int invert;
    int chars;              /* CH_* (ST_CHARS) */
    int option;             /* N_FORM: utf8proc options; METASPACE: prepend scheme; BYTELEVEL: prefix space;
                             * N_STRIP: bit 0 left, bit 1 right */
    int split;              /* METASPACE: split on the replacement */
    pcre2_code *re;         /* ST_SPLIT, ST_BYTELEVEL (may be NULL), N_REPLACE */
    char *str;              /* METASPACE replacement, N_REPLACE content, N_PREPEND text */
};

struct sks__textproc {
    struct pstep *norm, *pre;
    int n_norm, n_pre;
    int byte_level;          /* a ByteLevel step exists */
};

/* GPT-2's pattern, which a ByteLevel pre-tokenizer with use_regex applies (the
 * `tokenizers` library's byte_level.rs). */
const char SKS__RE_GPT2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- Unicode ------------------------------------------------------------------------- */

static int char_at(const char *s, size_t len, size_t i, int32_t *cp) {
    utf8proc_ssize_t l = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), cp);
    if (l <= 0) {
        *cp = (unsigned char)s[i];
        return 1;
    }
    return (int)l;
}

static int in_class(int32_t c, int cls) {
    utf8proc_category_t k = utf8proc_category(c);
    switch (cls) {
    case CH_NUMERIC: /* Rust char::is_numeric */
        return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
    case CH_PUNCT: /* the library's is_punctuation: ASCII punctuation or Unicode P* */
        if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
        return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
    default: /* Rust char::is_whitespace: the White_Space property */
        return (c >= 9 && c <= 13) || c == 0x85 || k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL ||
               k == UTF8PROC_CATEGORY_ZP;
    }
}

/* ---- growing buffers ----------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t len) {
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1) cap *= 2;
        char *n = realloc(b->s, cap);
        if (!n) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
        b->s = n;
        b->cap = cap;
    }
    if (len) memcpy(b->s + b->len, s, len);
    b->len += len;
    b->s[b->len] = '\0';
    return 0;
}

typedef struct {
    size_t off, len;
    int first; /* starts at offset 0 of the whole text (Metaspace prepend_scheme "first") */
} span;

typedef struct {
    sbuf text;
    span *sp;
    size_t n, cap;
} plist;

static int pl_add(plist *p, const char *s, size_t len, int first) {
    if (len == 0) return 0; /* the library drops empty pieces */
    span *sp = sks_grow(p->sp, p->n, &p->cap, sizeof *sp, 16);
    if (!sp) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    p->sp = sp;
    p->sp[p->n].off = p->text.len;
    p->sp[p->n].len = len;
    p->sp[p->n].first = first;
    p->n++;
    return sb_put(&p->text, s, len);
}

static void pl_free(plist *p) {
    free(p->text.s);
    free(p->sp);
    memset(p, 0, sizeof *p);
}

/* ---- matches ------------------------------------------------------------------------- */

typedef struct {
    size_t s, e;
    int match;
} mspan;

typedef struct {
    mspan *m;
    size_t n, cap;
} mlist;

static int ml_add(mlist *l, size_t s, size_t e, int match) {
    mspan *m = sks_grow(l->m, l->n, &l->cap, sizeof *m, 32);
    if (!m) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    l->m = m;
    l->m[l->n++] = (mspan){s, e, match};
    return 0;
}

/* Matches of re in s[0..len) with the gaps between them, in order, covering the text
 * (the library's Pattern::find_matches). Empty matches count, except one right at the
 * end of the previous match; after an empty match the search moves on one character. */
static int regex_matches(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t len, mlist *out) {
    out->n = 0;
    size_t pos = 0, prev = 0;
    int have_prev = 0, rc = 0;
    while (pos <= len && !rc) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(r, msg, sizeof msg);
            return sks_fail(SKS_EUNSUPPORTED, "tokenizer: pre-tokenizer regex failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && have_prev && me == prev) {
            if (ms >= len) break;
            int32_t cp;
            pos = ms + (size_t)char_at(s, len, ms, &cp);
            continue;
        }
        size_t gap0 = out->n ? out->m[out->n - 1].e : 0;
        if (ms > gap0) rc = ml_add(out, gap0, ms, 0);
        if (!rc) rc = ml_add(out, ms, me, 1);
        prev = me;
        have_prev = 1;
        if (ms == me) {
            if (ms >= len) break;
            int32_t cp;
            pos = ms + (size_t)char_at(s, len, ms, &cp);
        } else {
            pos = me;
        }
    }
    size_t end = out->n ? out->m[out->n - 1].e : 0;
    if (!rc && end < len) rc = ml_add(out, end, len, 0);
    return rc;
}

/* Every character of class cls is one match (the library's Pattern for Fn(char) -> bool). */
static int char_matches(int cls, const char *s, size_t len, mlist *out) {
    out->n = 0;
    size_t gap0 = 0;
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        int32_t cp;
        int l = char_at(s, len, i, &cp);
        if (in_class(cp, cls)) {
            if (i > gap0) rc = ml_add(out, gap0, i, 0);
            if (!rc) rc = ml_add(out, i, i + (size_t)l, 1);
            gap0 = i + (size_t)l;
        }
        i += (size_t)l;
    }
    if (!rc && gap0 < len) rc = ml_add(out, gap0, len, 0);
    return rc;
}

/* Apply a delimiter behavior to the matches of piece (s, len) and add the resulting
 * pieces to out (the library's NormalizedString::split). */
static int add_split(plist *out, const char *s, int first, mlist *m, int behavior, int invert) {
    if (invert)
        for (size_t i = 0; i < m->n; i++) m->m[i].match = !m->m[i].match;
    size_t k = 0; /* compacted spans: m->m[0..k), match = "remove" */
    int prev_match = 0;
    switch (behavior) {
    case SKS__SPLIT_REMOVED:
        k = m->n;
        break;
    case SKS__SPLIT_ISOLATED:
        for (size_t i = 0; i < m->n; i++) m->m[i].match = 0;
        k = m->n;
        break;
    case SKS__SPLIT_MERGED_PREV:
        for (size_t i = 0; i < m->n; i++) {
            int is = m->m[i].match;
            if (is && !prev_match && k > 0) m->m[k - 1].e = m->m[i].e;
            else m->m[k++] = (mspan){m->m[i].s, m->m[i].e, 0};
            prev_match = is;
        }
        break;
    case SKS__SPLIT_MERGED_NEXT: {
        /* from the end: a match joins the piece after it */
        size_t w = m->n;
        for (size_t i = m->n; i-- > 0;) {
            int is = m->m[i].match;
            if (is && !prev_match && w < m->n) m->m[w].s = m->m[i].s;
            else m->m[--w] = (mspan){m->m[i].s, m->m[i].e, 0};
            prev_match = is;
        }
        memmove(m->m, m->m + w, (m->n - w) * sizeof *m->m);
        k = m->n - w;
        break;
    }
    default: /* SKS__SPLIT_CONTIGUOUS: runs of matches are one piece */
        for (size_t i = 0; i < m->n; i++) {
            int is = m->m[i].match;
            if (is == prev_match && k > 0) m->m[k - 1].e = m->m[i].e;
            else m->m[k++] = (mspan){m->m[i].s, m->m[i].e, 0};
            prev_match = is;
        }
        break;
    }
    for (size_t i = 0; i < k; i++) {
        if (m->m[i].match) continue;
        int rc = pl_add(out, s + m->m[i].s, m->m[i].e - m->m[i].s, first && m->m[i].s == 0);
        if (rc) return rc;
    }
    return 0;
}

/* ---- regex compilation ------------------------------------------------------------------ */

static int put_str(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }

#define W_CLASS "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"
#define S_CLASS "\\s\\x{85}"
#define H_CLASS "0-9a-fA-F"

/* Oniguruma -> PCRE2 (see the file comment). */
static int translate_regex(const char *re, const char *name, sbuf *out) {
    int depth = 0, rc = 0;
    for (size_t i = 0; re[i] && !rc; i++) {
        char c = re[i];
        if (c == '\\' && re[i + 1]) {
            char e = re[++i];
            const char *in = NULL, *pos = NULL, *neg = NULL;
            if (e == 's') in = S_CLASS, pos = "[" S_CLASS "]";
            else if (e == 'S') neg = "[^" S_CLASS "]";
            else if (e == 'w') in = W_CLASS, pos = "[" W_CLASS "]";
            else if (e == 'W') neg = "[^" W_CLASS "]";
            else if (e == 'h') in = H_CLASS, pos = "[" H_CLASS "]";
            else if (e == 'H') neg = "[^" H_CLASS "]";
            if (depth > 0 && in) rc = put_str(out, in);
            else if (depth == 0 && (pos || neg)) rc = put_str(out, pos ? pos : neg);
            else if (depth > 0 && neg)
                rc = sks_fail(SKS_EUNSUPPORTED, "%s: regex \"%.80s\": \\%c inside a class is not supported", name, re, e);
            else {
                char two[2] = {'\\', e};
                rc = sb_put(out, two, 2);
            }
            continue;
        }
        if (c == '[') {
            if (depth == 0) {
                depth = 1;
                rc = sb_put(out, "[", 1);
                if (!rc && re[i + 1] == '^') rc = sb_put(out, "^", 1), i++;
                if (!rc && re[i + 1] == ']') rc = sb_put(out, "\\]", 2), i++; /* a leading ] is literal */
            } else if (re[i + 1] == ':') {
                const char *end = strstr(re + i, ":]");
                if (!end) return sks_fail(SKS_EUNSUPPORTED, "%s: regex \"%.80s\": unterminated [:class:]", name, re);
                rc = sb_put(out, re + i, (size_t)(end + 2 - (re + i)));
                i = (size_t)(end + 1 - re);
            } else if (re[i + 1] == '^') {
                return sks_fail(SKS_EUNSUPPORTED, "%s: regex \"%.80s\": a negated class inside a class is not supported",
                                name, re);
            } else {
                depth++; /* a nested class is its union: drop its brackets */
            }
            continue;
        }
        if (c == ']' && depth > 0) {
            if (depth == 1) rc = sb_put(out, "]", 1);
            depth--;
            continue;
        }
        if (c == '&' && re[i + 1] == '&' && depth > 0)
            return sks_fail(SKS_EUNSUPPORTED, "%s: regex \"%.80s\": class intersection && is not supported", name, re);
        rc = sb_put(out, &c, 1);
    }
    return rc;
}

/* Compile an Oniguruma-style regex (literal: a plain string) for UTF-8 text. */
static int compile(const char *pat, int literal, const char *name, pcre2_code **out) {
    *out = NULL;
    sbuf b = {0};
    int rc = literal ? put_str(&b, pat) : translate_regex(pat, name, &b);
    if (!rc && !b.s) rc = sb_put(&b, "", 0);
    if (rc) {
        free(b.s);
        return rc;
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        free(b.s);
        return sks_fail(SKS_ENOMEM, "%s: out of memory", name);
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int err;
    PCRE2_SIZE eoff;
    uint32_t opt = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.s, b.len, opt, &err, &eoff, cc);
    pcre2_compile_context_free(cc);
    free(b.s);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return sks_fail(SKS_EUNSUPPORTED, "%s: pre-tokenizer regex \"%.80s\": %s (at offset %zu)", name, pat,
                        (const char *)msg, (size_t)eoff);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* where the JIT is missing the interpreter runs */
    *out = re;
    return 0;
}

/* ---- building ------------------------------------------------------------------------ */

void sks__textproc_free(sks__textproc *p) {
    if (!p) return;
    struct pstep *lists[2] = {p->norm, p->pre};
    int ns[2] = {p->n_norm, p->n_pre};
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < ns[k]; i++) {
            pcre2_code_free(lists[k][i].re);
            free(lists[k][i].str);
        }
        free(lists[k]);
    }
    free(p);
}

int sks__textproc_new(sks__textproc **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
}

static struct pstep *add_step(sks__textproc *p, int normalizer, int kind) {
    struct pstep **l = normalizer ? &p->norm : &p->pre;
    int *n = normalizer ? &p->n_norm : &p->n_pre;
    struct pstep *nl = realloc(*l, ((size_t)*n + 1) * sizeof *nl);
    if (!nl) {
        sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    *l = nl;
    struct pstep *s = &nl[(*n)++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    return s;
}

int sks__textproc_add_split(sks__textproc *p, const char *regex, int literal, int behavior, int invert,
                            const char *name) {
    struct pstep *s = add_step(p, 0, ST_SPLIT);
    if (!s) return SKS_ENOMEM;
    s->behavior = behavior;
    s->invert = invert;
    return compile(regex, literal, name, &s->re);
}

int sks__textproc_add_chars(sks__textproc *p, int cls, int behavior) {
    struct pstep *s = add_step(p, 0, ST_CHARS);
    if (!s) return SKS_ENOMEM;
    s->chars = cls;
    s->behavior = behavior;
    return 0;
}

int sks__textproc_add_digits(sks__textproc *p, int individual) {
    return sks__textproc_add_chars(p, CH_NUMERIC, individual ? SKS__SPLIT_ISOLATED : SKS__SPLIT_CONTIGUOUS);
}

int sks__textproc_add_punct(sks__textproc *p, int behavior) {
    return sks__textproc_add_chars(p, CH_PUNCT, behavior);
}

int sks__textproc_add_bytelevel(sks__textproc *p, int add_prefix_space, int use_regex, const char *name) {
    struct pstep *s = add_step(p, 0, ST_BYTELEVEL);
    if (!s) return SKS_ENOMEM;
    s->option = add_prefix_space;
    p->byte_level = 1;
    return use_regex ? compile(SKS__RE_GPT2, 0, name, &s->re) : 0;
}

int sks__textproc_add_form(sks__textproc *p, const char *form) {
    static const char *const names[] = {"NFC", "NFD", "NFKC", "NFKD"};
    static const int opts[] = {UTF8PROC_COMPOSE, UTF8PROC_DECOMPOSE, UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                               UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
    for (int k = 0; k < 4; k++) {
        if (strcmp(form, names[k]) != 0) continue;
        struct pstep *s = add_step(p, 1, N_FORM);
        if (!s) return SKS_ENOMEM;
        s->option = UTF8PROC_STABLE | opts[k];
        return 0;
    }
    return sks_fail(SKS_EUNSUPPORTED, "tokenizer: normalization form \"%s\"", form);
}

static int dup_str(const char *s, char **out) {
    *out = strdup(s ? s : "");
    return *out ? 0 : sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
}

static int behavior_of(json_t *o, const char *name, const char *where, int *out) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    static const int vals[] = {SKS__SPLIT_REMOVED, SKS__SPLIT_ISOLATED, SKS__SPLIT_MERGED_PREV, SKS__SPLIT_MERGED_NEXT,
                               SKS__SPLIT_CONTIGUOUS};
    const char *b = sks__json_str(o, "behavior");
    for (int k = 0; b && k < 5; k++)
        if (strcmp(b, names[k]) == 0) return *out = vals[k], 0;
    return sks_fail(SKS_EFORMAT, "%s: %s.behavior \"%s\": not a split behavior", name, where, b ? b : "(missing)");
}

/* pattern: {"String": s} or {"Regex": r} */
static int pattern_of(json_t *o, const char *name, const char *where, const char **pat, int *literal) {
    json_t *p = json_object_get(o, "pattern");
    *pat = sks__json_str(p, "Regex");
    *literal = 0;
    if (!*pat) {
        *pat = sks__json_str(p, "String");
        *literal = 1;
    }
    if (!*pat) return sks_fail(SKS_EFORMAT, "%s: %s.pattern: want {\"String\": ...} or {\"Regex\": ...}", name, where);
    return 0;
}

static int add_normalizer(sks__textproc *p, json_t *o, const char *name) {
    const char *ty = sks__json_type(o);
    int rc = 0;
    if (!strcmp(ty, "NFC") || !strcmp(ty, "NFD") || !strcmp(ty, "NFKC") || !strcmp(ty, "NFKD"))
        return sks__textproc_add_form(p, ty);
    struct pstep *s = NULL;
    if (strcmp(ty, "Lowercase") == 0) {
        s = add_step(p, 1, N_LOWER);
        return s ? 0 : SKS_ENOMEM;
    }
    if (strcmp(ty, "StripAccents") == 0) {
        s = add_step(p, 1, N_STRIP_ACCENTS);
        return s ? 0 : SKS_ENOMEM;
    }
    if (strcmp(ty, "Strip") == 0) {
        s = add_step(p, 1, N_STRIP);
        if (!s) return SKS_ENOMEM;
        s->option = (sks__json_flag(o, "strip_left", 1) ? 1 : 0) | (sks__json_flag(o, "strip_right", 1) ? 2 : 0);
        return 0;
    }
    if (strcmp(ty, "Prepend") == 0) {
        s = add_step(p, 1, N_PREPEND);
        return s ? dup_str(sks__json_str(o, "prepend"), &s->str) : SKS_ENOMEM;
    }
    if (strcmp(ty, "Replace") == 0) {
        const char *pat;
        int literal;
        rc = pattern_of(o, name, "normalizer Replace", &pat, &literal);
        if (rc) return rc;
        s = add_step(p, 1, N_REPLACE);
        if (!s) return SKS_ENOMEM;
        rc = dup_str(sks__json_str(o, "content"), &s->str);
        return rc ? rc : compile(pat, literal, name, &s->re);
    }
    if (strcmp(ty, "Precompiled") == 0) {
        /* a SentencePiece charsmap: mostly NFKC plus whitespace rules; not run */
        sks_log(SKS_LOG_WARN, "%s: normalizer Precompiled (a SentencePiece charsmap) is not applied", name);
        return 0;
    }
    return sks_fail(SKS_EUNSUPPORTED, "%s: normalizer type \"%s\" is not supported (supported: NFC, NFD, NFKC, NFKD, "
                    "Lowercase, StripAccents, Strip, Prepend, Replace, Sequence)", name, ty);
}

static int add_pretokenizer(sks__textproc *p, json_t *o, const char *name) {
    const char *ty = sks__json_type(o);
    int rc = 0, behavior;
    if (strcmp(ty, "Split") == 0) {
        const char *pat;
        int literal;
        rc = pattern_of(o, name, "pre_tokenizer Split", &pat, &literal);
        if (!rc) rc = behavior_of(o, name, "pre_tokenizer Split", &behavior);
        return rc ? rc : sks__textproc_add_split(p, pat, literal, behavior, sks__json_flag(o, "invert", 0), name);
    }
    if (strcmp(ty, "ByteLevel") == 0)
        return sks__textproc_add_bytelevel(p, sks__json_flag(o, "add_prefix_space", 0), sks__json_flag(o, "use_regex", 1), name);
    if (strcmp(ty, "Digits") == 0) return sks__textproc_add_digits(p, sks__json_flag(o, "individual_digits", 0));
    if (strcmp(ty, "Punctuation") == 0) {
        behavior = SKS__SPLIT_ISOLATED;
        if (json_object_get(o, "behavior")) rc = behavior_of(o, name, "pre_tokenizer Punctuation", &behavior);
        return rc ? rc : sks__textproc_add_punct(p, behavior);
    }
    if (strcmp(ty, "Whitespace") == 0) /* the library's \w+|[^\w\s]+, keeping the matches */
        return sks__textproc_add_split(p, "\\w+|[^\\w\\s]+", 0, SKS__SPLIT_REMOVED, 1, name);
    if (strcmp(ty, "WhitespaceSplit") == 0) return sks__textproc_add_chars(p, CH_SPACE, SKS__SPLIT_REMOVED);
    if (strcmp(ty, "CharDelimiterSplit") == 0) {
        const char *d = sks__json_str(o, "delimiter");
        if (!d) return sks_fail(SKS_EFORMAT, "%s: pre_tokenizer CharDelimiterSplit: no delimiter", name);
        return sks__textproc_add_split(p, d, 1, SKS__SPLIT_REMOVED, 0, name);
    }
    if (strcmp(ty, "Metaspace") == 0) {
        struct pstep *s = add_step(p, 0, ST_METASPACE);
        if (!s) return SKS_ENOMEM;
        const char *scheme = sks__json_str(o, "prepend_scheme");
        if (scheme) s->option = !strcmp(scheme, "never") ? 0 : !strcmp(scheme, "first") ? 2 : 1;
        else s->option = sks__json_flag(o, "add_prefix_space", 1);
        s->split = sks__json_flag(o, "split", 1);
        const char *r = sks__json_str(o, "replacement") ? sks__json_str(o, "replacement") : "\xe2\x96\x81";
        int32_t cp;
        if (!r[0] || (size_t)char_at(r, strlen(r), 0, &cp) != strlen(r)) /* the library's replacement is a char */
            return sks_fail(SKS_EFORMAT, "%s: pre_tokenizer Metaspace.replacement \"%.16s\": want one character", name, r);
        return dup_str(r, &s->str);
    }
    return sks_fail(SKS_EUNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported (supported: Split, ByteLevel, "
                    "Digits, Punctuation, Metaspace, Whitespace, WhitespaceSplit, CharDelimiterSplit, Sequence)",
                    name, ty);
}

/* A component (null: none), or the members of a Sequence of them, in order. */
static int add_tree(sks__textproc *p, json_t *o, const char *name, const char *list_key, int depth,
                    int (*one)(sks__textproc *, json_t *, const char *)) {
    if (!o || json_is_null(o)) return 0;
    if (strcmp(sks__json_type(o), "Sequence") != 0 || depth >= 4) return one(p, o, name);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(o, list_key), i, x) {
        int rc = add_tree(p, x, name, list_key, depth + 1, one);
        if (rc) return rc;
    }
    return 0;
}

int sks__textproc_from_json(struct json_t *normalizer, struct json_t *pre, const char *name, sks__textproc **out) {
    sks__textproc *p;
    int rc = sks__textproc_new(&p);
    if (!rc) rc = add_tree(p, normalizer, name, "normalizers", 0, add_normalizer);
    if (!rc) rc = add_tree(p, pre, name, "pretokenizers", 0, add_pretokenizer);
    if (rc) {
        sks__textproc_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- running ------------------------------------------------------------------------- */

static int replace_all(const struct pstep *st, pcre2_match_data *md, sbuf *text, mlist *m) {
    int rc = regex_matches(st->re, md, text->s, text->len, m);
    if (rc) return rc;
    sbuf o = {0};
    for (size_t i = 0; i < m->n && !rc; i++) {
        if (m->m[i].match && m->m[i].e > m->m[i].s) rc = put_str(&o, st->str);
        else rc = sb_put(&o, text->s + m->m[i].s, m->m[i].e - m->m[i].s);
    }
    if (!rc && !o.s) rc = sb_put(&o, "", 0);
    if (rc) {
        free(o.s);
        return rc;
    }
    free(text->s);
    *text = o;
    return 0;
}

static int normalize(const sks__textproc *p, pcre2_match_data *md, sbuf *text, mlist *m) {
    int rc = 0;
    for (int k = 0; k < p->n_norm && !rc; k++) {
        const struct pstep *st = &p->norm[k];
        sbuf o = {0};
        switch (st->kind) {
        case N_FORM: {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t n = text->len ? utf8proc_map((const utf8proc_uint8_t *)text->s,
                                                          (utf8proc_ssize_t)text->len, &dst, st->option) : 0;
            if (n < 0) return sks_fail(SKS_EFORMAT, "tokenizer: normalization failed: %s", utf8proc_errmsg(n));
            rc = sb_put(&o, dst ? (const char *)dst : "", (size_t)n);
            free(dst);
            break;
        }
        case N_LOWER:
        case N_STRIP_ACCENTS:
            for (size_t i = 0; i < text->len && !rc;) {
                int32_t cp;
                int l = char_at(text->s, text->len, i, &cp);
                if (st->kind == N_LOWER) {
                    utf8proc_uint8_t u[4];
                    utf8proc_ssize_t ul = utf8proc_encode_char(utf8proc_tolower(cp), u);
                    rc = sb_put(&o, (const char *)u, (size_t)ul);
                } else {
                    utf8proc_category_t c = utf8proc_category(cp);
                    if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME)
                        rc = sb_put(&o, text->s + i, (size_t)l);
                }
                i += (size_t)l;
            }
            break;
        case N_STRIP: {
            size_t a = 0, b = text->len;
            int32_t cp;
            while ((st->option & 1) && a < b) {
                int l = char_at(text->s, b, a, &cp);
                if (!in_class(cp, CH_SPACE)) break;
                a += (size_t)l;
            }
            while ((st->option & 2) && b > a) {
                size_t j = b - 1;
                while (j > a && ((unsigned char)text->s[j] & 0xC0) == 0x80) j--;
                char_at(text->s, b, j, &cp);
                if (!in_class(cp, CH_SPACE)) break;
                b = j;
            }
            rc = sb_put(&o, text->s + a, b - a);
            break;
        }
        case N_PREPEND:
            if (text->len) rc = put_str(&o, st->str);
            if (!rc) rc = sb_put(&o, text->s, text->len);
            break;
        default: /* N_REPLACE */
            rc = replace_all(st, md, text, m);
            continue;
        }
        if (rc) {
            free(o.s);
            return rc;
        }
        free(text->s);
        *text = o;
    }
    return rc;
}

static int bytelevel_piece(plist *out, const char *s, size_t len, int first) {
    sbuf b = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        char u[4];
        size_t l = sks__bytelevel_char((unsigned char)s[i], u);
        rc = sb_put(&b, u, l);
    }
    if (!rc) rc = pl_add(out, b.s, b.len, first);
    free(b.s);
    return rc;
}

static int pre_step(const struct pstep *st, pcre2_match_data *md, const plist *in, plist *out, mlist *m) {
    int rc = 0;
    for (size_t k = 0; k < in->n && !rc; k++) {
        const char *s = in->text.s + in->sp[k].off;
        size_t len = in->sp[k].len;
        int first = in->sp[k].first;
        switch (st->kind) {
        case ST_SPLIT:
            rc = regex_matches(st->re, md, s, len, m);
            if (!rc) rc = add_split(out, s, first, m, st->behavior, st->invert);
            break;
        case ST_CHARS:
            rc = char_matches(st->chars, s, len, m);
            if (!rc) rc = add_split(out, s, first, m, st->behavior, 0);
            break;
        case ST_BYTELEVEL: {
            sbuf b = {0};
            if (st->option && s[0] != ' ') rc = sb_put(&b, " ", 1);
            if (!rc) rc = sb_put(&b, s, len);
            if (!rc && st->re) rc = regex_matches(st->re, md, b.s, b.len, m);
            if (!rc && !st->re) {
                m->n = 0;
                rc = ml_add(m, 0, b.len, 0);
            }
            for (size_t i = 0; i < m->n && !rc; i++)
                rc = bytelevel_piece(out, b.s + m->m[i].s, m->m[i].e - m->m[i].s, first && m->m[i].s == 0);
            free(b.s);
            break;
        }
        default: { /* ST_METASPACE */
            sbuf b = {0};
            size_t rl = strlen(st->str);
            int starts = s[0] == ' ' || (len >= rl && memcmp(s, st->str, rl) == 0); /* after ' ' -> replacement */
            if ((st->option == 1 || (st->option == 2 && first)) && !starts) rc = put_str(&b, st->str);
            for (size_t i = 0; i < len && !rc; i++) rc = s[i] == ' ' ? put_str(&b, st->str) : sb_put(&b, s + i, 1);
            if (!rc && st->split) {
                /* split on the replacement, each one joining the piece after it */
                m->n = 0;
                size_t gap0 = 0;
                for (size_t i = 0; i + rl <= b.len && !rc;) {
                    if (memcmp(b.s + i, st->str, rl) == 0) {
                        if (i > gap0) rc = ml_add(m, gap0, i, 0);
                        if (!rc) rc = ml_add(m, i, i + rl, 1);
                        i += rl;
                        gap0 = i;
                    } else {
                        i++;
                    }
                }
                if (!rc && gap0 < b.len) rc = ml_add(m, gap0, b.len, 0);
                if (!rc) rc = add_split(out, b.s, first, m, SKS__SPLIT_MERGED_NEXT, 0);
            } else if (!rc) {
                rc = pl_add(out, b.s, b.len, first);
            }
            free(b.s);
            break;
        }
        }
    }
    return rc;
}

/* Normalize and pre-tokenize one valid UTF-8 run. */
static int run_valid(const sks__textproc *p, pcre2_match_data *md, const char *s, size_t len, int first,
                     sks__word_fn fn, void *ctx) {
    sbuf text = {0};
    plist a = {0}, b = {0};
    mlist m = {0};
    int rc = sb_put(&text, s, len);
    if (!rc) rc = normalize(p, md, &text, &m);
    if (!rc) rc = pl_add(&a, text.s, text.len, first);
    for (int k = 0; k < p->n_pre && !rc; k++) {
        b.n = 0;
        b.text.len = 0;
        rc = pre_step(&p->pre[k], md, &a, &b, &m);
        plist tmp = a;
        a = b;
        b = tmp;
    }
    for (size_t k = 0; k < a.n && !rc; k++) rc = fn(a.text.s + a.sp[k].off, a.sp[k].len, ctx);
    free(text.s);
    free(m.m);
    pl_free(&a);
    pl_free(&b);
    return rc;
}

int sks__textproc_run(const sks__textproc *p, const char *seg, size_t len, int at_start, sks__word_fn fn, void *ctx) {
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md) return sks_fail(SKS_ENOMEM, "tokenizer: out of memory");
    int rc = 0;
    /* valid UTF-8 runs go through the pipeline; a malformed byte is a word of its own
     * (in the byte alphabet when the pipeline is byte-level) */
    size_t run0 = 0;
    for (size_t i = 0; i <= len && !rc;) {
        utf8proc_int32_t cp = 0;
        utf8proc_ssize_t l = i < len ? utf8proc_iterate((const utf8proc_uint8_t *)seg + i,
                                                        (utf8proc_ssize_t)(len - i), &cp) : 0;
        if (i < len && l > 0) {
            i += (size_t)l;
            continue;
        }
        if (i > run0) rc = run_valid(p, md, seg + run0, i - run0, at_start && run0 == 0, fn, ctx);
        if (i == len || rc) break;
        if (p->byte_level) {
            char u[4];
            size_t ul = sks__bytelevel_char((unsigned char)seg[i], u);
            rc = fn(u, ul, ctx);
        } else {
            rc = fn(seg + i, 1, ctx);
        }
        i++;
        run0 = i;
    }
    pcre2_match_data_free(md);
    return rc;
}
