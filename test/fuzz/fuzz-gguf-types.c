/* fuzz-gguf-types.c - libFuzzer target for one quantized tensor type at a time, through
 * the entry points a real file goes through. The type is SKS_FUZZ_TYPE (ggml's name,
 * "Q4_K"), so that each type gets runs of its own; without it, input byte 0 picks one of
 * the convertible types. Input: byte 0 (the type when not fixed), 15 header bytes h[],
 * then the payload P.
 *
 * 1. File. A GGUF v3 image is built with one tensor of the type, blk.0.attn_q.weight:
 *    n_dims = 1 + (h0 & 3); general.alignment (present if h0 & 4) = 1 << (h1 & 7), or
 *    the raw h1 & 0x7f when h1 & 0x80; ne0 = block * (h2 % 17), plus 1 + h3 % (block - 1)
 *    when h0 & 16 (not a whole number of blocks); ne1 = h4 | h5 << 8, ne2 = h6, ne3 = h7;
 *    offset = h8 | h9 << 8, or h8 * alignment when h9 & 0x80; then the aligned data
 *    section is P (so spans can be truncated, misaligned, past the end).
 *    sks__gguf_parse, sks__gguf_tensor_shape (the loader's view rule), an in-memory model
 *    with sks_model_set_tensor, and sks_tensor_rows_f32 / _f64 over rows h10, h11 (all
 *    rows when h11 & 0x80) with the non-finite policy "allow" when h0 & 8.
 *    Invariants: a row of ne0 % block != 0 is refused by the parser; an accepted tensor
 *    lies in the image and is accepted again from an image cut right after it (an exactly
 *    sized heap copy, so that ASan sees any read past the tensor); the view accepts it
 *    unless dimensions 3-4 are not 1 or f32/f16/bf16 data is misaligned, with the
 *    parser's byte size; rows outside the tensor are SKS_EBOUNDS; converted rows equal
 *    the scalar _ref decoder on the same bytes bit for bit; a non-finite value gives
 *    SKS_ENONFINITE, or (allowed) a record whose counts equal the _ref decoder's over the
 *    whole tensor; rows as f64 are the f32 rows widened.
 * 2. Blocks. P cut to whole blocks (an exactly sized heap copy): the kernel equals its
 *    _ref twin bit for bit (a NaN only as a NaN); a block whose scale fields are finite
 *    (and in range, for Q8_K and MXFP4) decodes to finite values; sks_dtype_nbytes
 *    refuses counts that are not whole blocks.
 * 3. Quantizer (h0 & 32): block * (1 + h12 % 4) values from P read as int16 times
 *    2^(h13 % 40 - 40) (subnormal to 2^14), quantized and decoded: finite, kernel ==
 *    _ref.
 * Counts per outcome are printed at exit (docs/fuzzing.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loaders/formats_internal.h"

#define FZ_CHECK(c)                     \
    do {                                \
        if (!(c)) {                     \
            fprintf(stderr, "fuzz-gguf-types: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            __builtin_trap();           \
        }                               \
    } while (0)

enum { FZ_EXECS, FZ_PARSED, FZ_VIEWED, FZ_ROWS, FZ_NONFINITE, FZ_BLOCKS, FZ_QUANT, FZ_N };
static const char *const fz_names[FZ_N] = {"executions", "files accepted", "views accepted", "row conversions",
                                           "non-finite rows", "block decodes", "quantizer round trips"};
static unsigned long long fz_count[SKS_DT_COUNT][FZ_N];
static int fz_fixed = -2;
static sks_arch fz_arch;

static void fz_report(void) {
    for (int d = 0; d < SKS_DT_COUNT; d++) {
        if (!fz_count[d][FZ_EXECS]) continue;
        fprintf(stderr, "fuzz-gguf-types: %s", sks_dtype_name((sks_dtype)d));
        for (int k = 0; k < FZ_N; k++) fprintf(stderr, "%s %s %llu", k ? "," : "", fz_names[k], fz_count[d][k]);
        fprintf(stderr, "\n");
    }
}

static void fz_init(void) {
    sks_log_set_level(-1);
    atexit(fz_report);
    const char *e = getenv("SKS_FUZZ_TYPE");
    fz_fixed = -1;
    if (e && *e) {
        fz_fixed = sks_dtype_from_name(e);
        if (fz_fixed < 0 || !sks_dtype_convertible((sks_dtype)fz_fixed)) {
            fprintf(stderr, "fuzz-gguf-types: SKS_FUZZ_TYPE=%s is not a convertible type\n", e);
            exit(2);
        }
    }
    memset(&fz_arch, 0, sizeof fz_arch);
    FZ_CHECK(sks_arch_set_family(&fz_arch, "llama") == 0);
    fz_arch.n_layers = 1;
    fz_arch.d_model = fz_arch.d_ffn = fz_arch.head_dim = fz_arch.vocab_size = 32;
    fz_arch.n_heads = fz_arch.n_kv_heads = 1;
    fz_arch.norm_eps = 1e-5;
    fz_arch.rope_theta = 10000;
    fz_arch.bos_id = fz_arch.eos_id = -1;
}

/* 1 if the format guarantees finite values for this block: every scale field finite
 * (and small enough where the scale is an f32 or a power of two). */
static int fz_block_finite(sks_dtype dt, const uint8_t *b) {
    static const struct {
        sks_dtype dt;
        int off[2]; /* byte offsets of f16 scale fields; -1: none */
    } f16s[] = {
        {SKS_DT_Q4_0, {0, -1}},    {SKS_DT_Q4_1, {0, 2}},     {SKS_DT_Q5_0, {0, -1}},   {SKS_DT_Q5_1, {0, 2}},
        {SKS_DT_Q8_0, {0, -1}},    {SKS_DT_Q8_1, {0, -1}},    {SKS_DT_Q2_K, {80, 82}},  {SKS_DT_Q3_K, {108, -1}},
        {SKS_DT_Q4_K, {0, 2}},     {SKS_DT_Q5_K, {0, 2}},     {SKS_DT_Q6_K, {208, -1}}, {SKS_DT_IQ2_XXS, {0, -1}},
        {SKS_DT_IQ2_XS, {0, -1}},  {SKS_DT_IQ2_S, {0, -1}},   {SKS_DT_IQ3_XXS, {0, -1}}, {SKS_DT_IQ3_S, {0, -1}},
        {SKS_DT_IQ1_S, {0, -1}},   {SKS_DT_IQ4_NL, {0, -1}},  {SKS_DT_IQ4_XS, {0, -1}}, {SKS_DT_TQ1_0, {52, -1}},
        {SKS_DT_TQ2_0, {64, -1}},  {SKS_DT_F16, {0, -1}},
    };
    for (size_t i = 0; i < sizeof f16s / sizeof f16s[0]; i++) {
        if (f16s[i].dt != dt) continue;
        for (int k = 0; k < 2; k++)
            if (f16s[i].off[k] >= 0 && ((b[f16s[i].off[k] + 1] >> 2) & 0x1f) == 0x1f) return 0;
        return 1;
    }
    uint32_t u;
    switch (dt) {
    case SKS_DT_F32:
        memcpy(&u, b, 4);
        return ((u >> 23) & 0xff) != 0xff;
    case SKS_DT_BF16:
        return ((((uint32_t)b[1] << 8 | b[0]) >> 7) & 0xff) != 0xff;
    case SKS_DT_Q8_K: { /* f32 d times int8 in [-128, 127] */
        float d;
        memcpy(&d, b, 4);
        return fabsf(d) <= 0x1p120f;
    }
    case SKS_DT_MXFP4: /* e8m0 halved, 2^(e - 128), times at most 12 */
        return b[0] <= 252;
    case SKS_DT_IQ1_M: { /* f16 from the top nibbles of the four scale words */
        uint16_t s3 = (uint16_t)(b[54] | b[55] << 8), s2 = (uint16_t)(b[52] | b[53] << 8);
        return (((s3 & 0xf000) | ((s2 >> 4) & 0x0f00)) >> 10 & 0x1f) != 0x1f;
    }
    default:
        FZ_CHECK(!"type without a finiteness rule");
        return 0;
    }
}

static int fz_same(float a, float b) { return isnan(a) ? isnan(b) : memcmp(&a, &b, 4) == 0; }

static void fz_put(uint8_t **w, const void *p, size_t n) {
    memcpy(*w, p, n);
    *w += n;
}
static void fz_u32(uint8_t **w, uint32_t v) { fz_put(w, &v, 4); }
static void fz_u64(uint8_t **w, uint64_t v) { fz_put(w, &v, 8); }
static void fz_str(uint8_t **w, const char *s) {
    fz_u64(w, strlen(s));
    fz_put(w, s, strlen(s));
}

/* Part 1: the file, its view and its rows. */
static void fz_file(sks_dtype dt, const uint8_t *h, const uint8_t *P, size_t np) {
    const sks_dtype_info *ti = sks_dtype_get(dt);
    const uint32_t blk = ti->block;
    uint32_t n_dims = 1 + (h[0] & 3);
    int has_al = (h[0] & 4) != 0;
    uint32_t al = h[1] & 0x80 ? (uint32_t)(h[1] & 0x7f) : 1u << (h[1] & 7);
    uint64_t ne[4] = {(uint64_t)blk * (h[2] % 17), (uint64_t)(h[4] | h[5] << 8), h[6], h[7]};
    if ((h[0] & 16) && blk > 1) ne[0] += 1 + h[3] % (blk - 1);
    uint64_t offset = h[9] & 0x80 ? (uint64_t)h[8] * (has_al ? al : 32) : (uint64_t)(h[8] | h[9] << 8);
    static const char name[] = "blk.0.attn_q.weight";

    uint8_t hdr[256], *w = hdr;
    fz_put(&w, "GGUF", 4);
    fz_u32(&w, 3);
    fz_u64(&w, 1);
    fz_u64(&w, has_al ? 1 : 0);
    if (has_al) {
        fz_str(&w, "general.alignment");
        fz_u32(&w, 4); /* u32 */
        fz_u32(&w, al);
    }
    fz_str(&w, name);
    fz_u32(&w, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) fz_u64(&w, ne[d]);
    fz_u32(&w, (uint32_t)ti->ggml_type);
    fz_u64(&w, offset);
    size_t hl = (size_t)(w - hdr);
    uint32_t eff_al = has_al && al && al <= 128 && !(al & (al - 1)) ? al : 32;
    size_t data_off = (hl + eff_al - 1) / eff_al * eff_al;
    size_t len = data_off + np;
    uint8_t *img = calloc(1, len ? len : 1);
    memcpy(img, hdr, hl);
    memcpy(img + data_off, P, np);

    struct sks_gguf *g = NULL;
    int rc = sks__gguf_parse(img, len, "fuzz.gguf", &g);
    if (ne[0] % blk) FZ_CHECK(rc != 0);
    if (rc) {
        free(img);
        return;
    }
    fz_count[dt][FZ_PARSED]++;
    const sks__gguf_tensor *gt = sks__gguf_tensor_info(g, 0);
    FZ_CHECK(sks__gguf_n_tensors(g) == 1 && gt && gt->ne[0] % blk == 0);
    FZ_CHECK(sks__gguf_data_offset(g) == data_off);
    uint64_t end = data_off + gt->offset + gt->nbytes;
    FZ_CHECK(gt->offset <= len - data_off && gt->nbytes <= len - data_off - gt->offset);
    sks__gguf_free(g);

    /* the same image cut right after the tensor, exactly sized */
    uint8_t *cut = malloc(end ? end : 1);
    memcpy(cut, img, end);
    free(img);
    FZ_CHECK(sks__gguf_parse(cut, end, "fuzz.gguf", &g) == 0);
    gt = sks__gguf_tensor_info(g, 0);
    sks_dtype vdt;
    int ndim;
    int64_t shape[2];
    rc = sks__gguf_tensor_shape(g, 0, "fuzz.gguf", name, &vdt, &ndim, shape);
    int trailing = (n_dims >= 3 && ne[2] != 1) || (n_dims == 4 && ne[3] != 1);
    int misaligned = blk == 1 && (data_off + gt->offset) % ti->block_bytes;
    FZ_CHECK((rc == 0) == (!trailing && !misaligned));
    if (rc) goto done;
    FZ_CHECK(vdt == dt);
    sks_model *m = NULL;
    FZ_CHECK(sks_model_new_memory(&fz_arch, &m) == 0);
    FZ_CHECK(sks_model_set_tensor(m, SKS_ROLE_WQ, 0, vdt, ndim, shape, cut + data_off + gt->offset, name) == 0);
    const sks_tensor *t = sks_model_tensor(m, SKS_ROLE_WQ, 0);
    FZ_CHECK(t && t->nbytes == gt->nbytes && t->data == cut + data_off + gt->offset);
    fz_count[dt][FZ_VIEWED]++;

    int64_t rows = ndim == 2 ? shape[0] : 1, cols = sks_tensor_cols(t);
    size_t rb = (size_t)(cols / blk) * ti->block_bytes;
    int64_t row0 = h[10] % (rows + 2), nrows = h[11] & 0x80 ? rows : h[11] % 5;
    if (h[11] & 0x80) row0 = 0;
    int allow = (h[0] & 8) != 0;
    sks_nonfinite_allow(allow);
    int in_range = row0 + nrows <= rows;
    size_t n = in_range ? (size_t)(nrows * cols) : 0;
    float *out = malloc((n ? n : 1) * sizeof *out), *ref = malloc((n ? n : 1) * sizeof *ref);
    rc = sks_tensor_rows_f32(t, row0, nrows, out);
    if (!in_range) {
        FZ_CHECK(rc == SKS_EBOUNDS);
    } else {
        ti->to_f32_ref(cut + data_off + gt->offset + (size_t)row0 * rb, ref, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += !isfinite(ref[i]);
        if (rc == 0 || rc == SKS_ENONFINITE)
            for (size_t i = 0; i < n; i++) FZ_CHECK(fz_same(out[i], ref[i]));
        if (!bad) {
            FZ_CHECK(rc == 0);
        } else if (!allow) {
            FZ_CHECK(rc == SKS_ENONFINITE);
        } else {
            FZ_CHECK(rc == 0);
            /* the record counts the whole tensor */
            size_t all = (size_t)(rows * cols), nbad = 0;
            float *whole = malloc(all * sizeof *whole);
            ti->to_f32_ref(t->data, whole, all);
            for (size_t i = 0; i < all; i++) nbad += !isfinite(whole[i]);
            free(whole);
            uint64_t cnt = 0, tot = 0;
            FZ_CHECK(sks_nonfinite_n_tensors() == 1);
            FZ_CHECK(strcmp(sks_nonfinite_tensor(0, &cnt, &tot), name) == 0);
            FZ_CHECK(cnt == nbad && tot == all);
        }
        fz_count[dt][bad ? FZ_NONFINITE : FZ_ROWS]++;
        if (rc == 0 && nrows <= 4) {
            double *o64 = malloc((n ? n : 1) * sizeof *o64);
            FZ_CHECK(sks_tensor_rows_f64(t, row0, nrows, o64) == 0);
            for (size_t i = 0; i < n; i++) FZ_CHECK(isnan(ref[i]) ? isnan(o64[i]) : o64[i] == (double)ref[i]);
            free(o64);
        }
    }
    sks_nonfinite_reset();
    sks_nonfinite_allow(0);
    free(out);
    free(ref);
    sks_model_close(m);
done:
    sks__gguf_free(g);
    free(cut);
}

/* Part 2: P as blocks. */
static void fz_blocks(sks_dtype dt, const uint8_t *P, size_t np) {
    const sks_dtype_info *ti = sks_dtype_get(dt);
    uint64_t nb;
    for (uint32_t r = 1; r < ti->block && r < 64; r++) FZ_CHECK(sks_dtype_nbytes(dt, ti->block * 3 + r, &nb) == SKS_ESHAPE);
    size_t nblk = np / ti->block_bytes;
    if (nblk > 64) nblk = 64;
    if (!nblk) return;
    size_t n = nblk * ti->block;
    FZ_CHECK(sks_dtype_nbytes(dt, n, &nb) == 0 && nb == nblk * ti->block_bytes);
    uint8_t *in = malloc(nb);
    memcpy(in, P, nb);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    ti->to_f32(in, a, n);
    ti->to_f32_ref(in, b, n);
    for (size_t i = 0; i < n; i++) FZ_CHECK(fz_same(a[i], b[i]));
    for (size_t k = 0; k < nblk; k++)
        if (fz_block_finite(dt, in + k * ti->block_bytes))
            for (size_t i = 0; i < ti->block; i++) FZ_CHECK(isfinite(a[k * ti->block + i]));
    fz_count[dt][FZ_BLOCKS]++;
    free(in);
    free(a);
    free(b);
}

/* Part 3: the quantizer and back. */
static void fz_quant(sks_dtype dt, const uint8_t *h, const uint8_t *P, size_t np) {
    const sks_dtype_info *ti = sks_dtype_get(dt);
    if (!ti->from_f32) return;
    size_t n = (size_t)ti->block * (1 + h[12] % 4);
    float sc = ldexpf(1.0f, (int)(h[13] % 40) - 40);
    float *x = malloc(n * sizeof *x), *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) {
        int16_t v = 0;
        if (np >= 2) memcpy(&v, P + (2 * i) % (np - 1), 2);
        x[i] = (float)v * sc;
    }
    uint8_t *q = malloc(n / ti->block * ti->block_bytes);
    ti->from_f32(x, q, n);
    ti->to_f32(q, a, n);
    ti->to_f32_ref(q, b, n);
    for (size_t i = 0; i < n; i++) FZ_CHECK(isfinite(a[i]) && fz_same(a[i], b[i]));
    fz_count[dt][FZ_QUANT]++;
    free(x);
    free(a);
    free(b);
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (fz_fixed == -2) fz_init();
    if (size < 16) return 0;
    sks_dtype dt;
    if (fz_fixed >= 0) {
        dt = (sks_dtype)fz_fixed;
    } else {
        int conv[SKS_DT_COUNT], nc = 0;
        for (int d = 0; d < SKS_DT_COUNT; d++)
            if (sks_dtype_convertible((sks_dtype)d)) conv[nc++] = d;
        dt = (sks_dtype)conv[data[0] % nc];
    }
    const uint8_t *h = data + 1, *P = data + 16;
    size_t np = size - 16;
    fz_count[dt][FZ_EXECS]++;
    fz_file(dt, h, P, np);
    fz_blocks(dt, P, np);
    if (h[0] & 32) fz_quant(dt, h, P, np);
    return 0;
}
