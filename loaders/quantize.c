/* quantize.c - simple quantizers for the GGUF writer: f32 rows -> blocks of a type.
 *
 * These are plain round-to-nearest quantizers written from the block definitions in
 * quant.c, NOT llama.cpp's optimized quantizers (no importance weights, no search over
 * scales): a file written here decodes exactly by the ggml definition but is somewhat less
 * accurate than one from llama-quantize. Their job is to make test and benchmark models
 * in every type. Super-block scales are rounded to f16 first and the sub-block scales and
 * quants are chosen against the rounded value, so the file encodes what was chosen.
 *
 * Per type (xmax: the element of largest |x| in the group, with its sign):
 *   Q4_0 / Q5_0 / Q8_0 / Q8_1   d = xmax / -8 / -16, amax / 127; q = round(x / d) + offset
 *   Q4_1 / Q5_1                 d = (max - min) / 15 (31), m = min; q = round((x - m) / d)
 *   Q2_K / Q4_K / Q5_K          per sub-block scale (max - min') / qmax and min' = min(min, 0),
 *                               both quantized against d = max scale / smax, dmin likewise
 *   Q3_K / Q6_K                 per 16 a signed scale xmax / -4 (-32), quantized against d
 *   Q8_K                        d = amax / 127 (f32)
 *   IQ4_NL / IQ4_XS             scale xmax / -127, then the nearest of the 16 levels
 *   TQ1_0 / TQ2_0               d = amax, q = round(x / d) in {-1, 0, 1}
 */
#include "quant_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>

#include "sks_gguf.h"

/* Round to nearest; saturates far outside int range (and maps NaN to 0) so that the
 * conversion is always defined. Callers clamp to the type's range. */
static inline int sks__nint(float x) {
    if (!(x == x)) return 0;
    if (x > 1e9f) return 1000000000;
    if (x < -1e9f) return -1000000000;
    return (int)floorf(x + 0.5f);
}
static inline int sks__clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Store v as f16 at p (little-endian) and return the stored value. */
static float sks__put_f16(uint8_t *p, float v) {
    uint16_t h = sks_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
    return sks__f16(h);
}
static inline float sks__inv(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

/* Signed element of largest magnitude of x[0..n). */
static float sks__xmax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > fabsf(m)) m = x[i];
    return m;
}
static void sks__minmax(const float *x, int n, float *mn, float *mx) {
    *mn = *mx = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < *mn) *mn = x[i];
        if (x[i] > *mx) *mx = x[i];
    }
}
static void sks__nib(uint8_t *p, int hi, int v) { *p = (uint8_t)(hi ? (*p & 0x0f) | (v << 4) : (*p & 0xf0) | v); }

void sks__f32_from_f32(const float *x, void *out, size_t n) { memcpy(out, x, n * 4); }
void sks__f16_from_f32(const float *x, void *out, size_t n) {
    uint16_t *o = out;
    for (size_t i = 0; i < n; i++) o[i] = sks_f32_to_f16(x[i]);
}
void sks__bf16_from_f32(const float *x, void *out, size_t n) {
    uint16_t *o = out;
    for (size_t i = 0; i < n; i++) o[i] = sks_f32_to_bf16(x[i]);
}

/* A quantizer from its block function: every block of qk elements into its zeroed bytes. */
static void sks__blocks(const float *x, uint8_t *p, size_t n, size_t qk, size_t bytes,
                        void (*block)(const float *x, uint8_t *p)) {
    for (size_t b = 0; b < n / qk; b++, x += qk, p += bytes) {
        memset(p, 0, bytes);
        block(x, p);
    }
}
#define SKS__QUANT(t, QK, BYTES)                                   \
    void sks__##t##_from_f32(const float *x, void *out, size_t n) { \
        sks__blocks(x, out, n, (QK), (BYTES), sks__##t##_block);    \
    }

/* Q4_0 / Q5_0: x = d (q - 2^(bits-1)), d = xmax / -2^(bits-1). */
static void sks__q_sym32(const float *x, uint8_t *p, size_t n, int five) {
    const int half = five ? 16 : 8, qmax = five ? 31 : 15;
    for (size_t b = 0; b < n / 32; b++, x += 32, p += five ? 22 : 18) {
        memset(p, 0, five ? 22 : 18);
        float d = sks__put_f16(p, sks__xmax(x, 32) / (float)-half), id = sks__inv(d);
        uint8_t *qs = p + (five ? 6 : 2);
        uint32_t qh = 0;
        for (int i = 0; i < 32; i++) {
            int q = sks__clampi(sks__nint(x[i] * id) + half, 0, qmax);
            sks__nib(qs + i % 16, i >= 16, q & 15);
            qh |= (uint32_t)(q >> 4) << i;
        }
        if (five) memcpy(p + 2, &qh, 4); /* little-endian host: x86-64, aarch64 */
    }
}
void sks__q4_0_from_f32(const float *x, void *out, size_t n) { sks__q_sym32(x, out, n, 0); }
void sks__q5_0_from_f32(const float *x, void *out, size_t n) { sks__q_sym32(x, out, n, 1); }

/* Q4_1 / Q5_1: x = d q + m. */
static void sks__q_min32(const float *x, uint8_t *p, size_t n, int five) {
    const int qmax = five ? 31 : 15;
    for (size_t b = 0; b < n / 32; b++, x += 32, p += five ? 24 : 20) {
        memset(p, 0, five ? 24 : 20);
        float mn, mx;
        sks__minmax(x, 32, &mn, &mx);
        float d = sks__put_f16(p, (mx - mn) / (float)qmax), m = sks__put_f16(p + 2, mn), id = sks__inv(d);
        uint8_t *qs = p + (five ? 8 : 4);
        uint32_t qh = 0;
        for (int i = 0; i < 32; i++) {
            int q = sks__clampi(sks__nint((x[i] - m) * id), 0, qmax);
            sks__nib(qs + i % 16, i >= 16, q & 15);
            qh |= (uint32_t)(q >> 4) << i;
        }
        if (five) memcpy(p + 4, &qh, 4);
    }
}
void sks__q4_1_from_f32(const float *x, void *out, size_t n) { sks__q_min32(x, out, n, 0); }
void sks__q5_1_from_f32(const float *x, void *out, size_t n) { sks__q_min32(x, out, n, 1); }

/* Q8_0 (qoff 2) / Q8_1 (qoff 4, s = d sum q). */
static void sks__q8_32(const float *x, uint8_t *p, size_t n, int one) {
    for (size_t b = 0; b < n / 32; b++, x += 32, p += one ? 36 : 34) {
        float d = sks__put_f16(p, fabsf(sks__xmax(x, 32)) / 127.0f), id = sks__inv(d);
        int8_t *q = (int8_t *)(p + (one ? 4 : 2));
        int sum = 0;
        for (int i = 0; i < 32; i++) sum += q[i] = (int8_t)sks__clampi(sks__nint(x[i] * id), -127, 127);
        if (one) sks__put_f16(p + 2, d * (float)sum);
    }
}
void sks__q8_0_from_f32(const float *x, void *out, size_t n) { sks__q8_32(x, out, n, 0); }
void sks__q8_1_from_f32(const float *x, void *out, size_t n) { sks__q8_32(x, out, n, 1); }

/* Sub-block scales sc_f[k] >= 0 and mins mn_f[k] >= 0 (x ~ sc q - mn) of nsub sub-blocks
 * of len elements for quants 0..qmax; then quantize them against d = max sc / smax and
 * dmin = max mn / smax, stored f16 at pd, pdmin. Returns the integer scales and mins. */
static void sks__k_scales(const float *x, int nsub, int len, int qmax, int smax, uint8_t *pd, uint8_t *pdmin, int *sc,
                          int *mn, float *d, float *dmin) {
    float scf[16], mnf[16], msc = 0, mmn = 0;
    for (int k = 0; k < nsub; k++) {
        float lo, hi;
        sks__minmax(x + k * len, len, &lo, &hi);
        if (lo > 0) lo = 0;
        if (hi < lo) hi = lo;
        scf[k] = (hi - lo) / (float)qmax;
        mnf[k] = -lo;
        if (scf[k] > msc) msc = scf[k];
        if (mnf[k] > mmn) mmn = mnf[k];
    }
    *d = sks__put_f16(pd, msc / (float)smax);
    *dmin = sks__put_f16(pdmin, mmn / (float)smax);
    for (int k = 0; k < nsub; k++) {
        sc[k] = sks__clampi(sks__nint(scf[k] * sks__inv(*d)), 0, smax);
        mn[k] = sks__clampi(sks__nint(mnf[k] * sks__inv(*dmin)), 0, smax);
    }
}

/* q of x in a sub-block with step D and offset M (x ~ D q - M). */
static inline int sks__k_q(float x, float D, float M, int qmax) {
    return D > 0 ? sks__clampi(sks__nint((x + M) / D), 0, qmax) : 0;
}

static void sks__q2_k_block(const float *x, uint8_t *p) {
    int sc[16], mn[16];
    float d, dmin;
    sks__k_scales(x, 16, 16, 3, 15, p + 80, p + 82, sc, mn, &d, &dmin);
    for (int k = 0; k < 16; k++) p[k] = (uint8_t)(sc[k] | mn[k] << 4);
    for (int i = 0; i < 256; i++) {
        int k = i / 16, h = i / 128, j = (i % 128) / 32, l = i % 32;
        int q = sks__k_q(x[i], d * (float)sc[k], dmin * (float)mn[k], 3);
        p[16 + 32 * h + l] |= (uint8_t)(q << (2 * j));
    }
}
SKS__QUANT(q2_k, 256, 84)

/* Pack the 8 6-bit scales and mins of Q4_K / Q5_K into 12 bytes (inverse of
 * sks__k4_scale_min). */
static void sks__k4_pack(uint8_t *s12, const int *sc, const int *mn) {
    memset(s12, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s12[j] |= (uint8_t)sc[j];
            s12[j + 4] |= (uint8_t)mn[j];
        } else {
            s12[j + 4] = (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
            s12[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s12[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

static void sks__q45_k(const float *x, uint8_t *p, size_t n, int five) {
    const int qmax = five ? 31 : 15;
    const size_t bytes = five ? 176 : 144;
    for (size_t b = 0; b < n / 256; b++, x += 256, p += bytes) {
        memset(p, 0, bytes);
        int sc[8], mn[8];
        float d, dmin;
        sks__k_scales(x, 8, 32, qmax, 63, p, p + 2, sc, mn, &d, &dmin);
        sks__k4_pack(p + 4, sc, mn);
        uint8_t *qs = p + (five ? 48 : 16), *qh = p + 16;
        for (int i = 0; i < 256; i++) {
            int k = i / 32, g = i / 64, hi = k & 1, l = i % 32;
            int q = sks__k_q(x[i], d * (float)sc[k], dmin * (float)mn[k], qmax);
            sks__nib(qs + 32 * g + l, hi, q & 15);
            if (five) qh[l] |= (uint8_t)((q >> 4) << (2 * g + hi));
        }
    }
}
void sks__q4_k_from_f32(const float *x, void *out, size_t n) { sks__q45_k(x, out, n, 0); }
void sks__q5_k_from_f32(const float *x, void *out, size_t n) { sks__q45_k(x, out, n, 1); }

/* Signed per-16 scales for Q3_K (q in -4..3, scales -32..31) and Q6_K (q in -32..31,
 * int8 scales): s_k = xmax_k / qneg maps the largest element onto the most negative q. */
static float sks__signed_scales(const float *x, int qneg, int smax, uint8_t *pd, int *sc) {
    float sf[16], m = 0;
    for (int k = 0; k < 16; k++) {
        sf[k] = sks__xmax(x + 16 * k, 16) / (float)-qneg;
        if (fabsf(sf[k]) > m) m = fabsf(sf[k]);
    }
    float d = sks__put_f16(pd, m / (float)smax);
    for (int k = 0; k < 16; k++) sc[k] = sks__clampi(sks__nint(sf[k] * sks__inv(d)), -smax - 1, smax);
    return d;
}
static inline int sks__sym_q(float x, float D, int lo, int hi) { return D != 0 ? sks__clampi(sks__nint(x / D), lo, hi) : 0; }

static void sks__q3_k_block(const float *x, uint8_t *p) {
    int sc[16];
    float d = sks__signed_scales(x, 4, 31, p + 108, sc);
    for (int k = 0; k < 16; k++) {
        int u = sc[k] + 32;
        sks__nib(p + 96 + k % 8, k >= 8, u & 15);
        p[104 + k % 4] |= (uint8_t)((u >> 4) << (2 * (k / 4)));
    }
    for (int i = 0; i < 256; i++) {
        int h = i / 128, j = (i % 128) / 32, l = i % 32;
        int q = sks__sym_q(x[i], d * (float)sc[i / 16], -4, 3);
        p[32 + 32 * h + l] |= (uint8_t)((q >= 0 ? q : q + 4) << (2 * j));
        if (q >= 0) p[l] |= (uint8_t)(1 << (4 * h + j));
    }
}
SKS__QUANT(q3_k, 256, 110)

static void sks__q6_k_block(const float *x, uint8_t *p) {
    int sc[16];
    float d = sks__signed_scales(x, 32, 127, p + 208, sc);
    for (int k = 0; k < 16; k++) p[192 + k] = (uint8_t)(int8_t)sc[k];
    for (int i = 0; i < 256; i++) {
        int h = i / 128, k = (i % 128) / 32, l = i % 32;
        int u = sks__sym_q(x[i], d * (float)sc[i / 16], -32, 31) + 32;
        sks__nib(p + 64 * h + 32 * (k & 1) + l, k >= 2, u & 15);
        p[128 + 32 * h + l] |= (uint8_t)((u >> 4) << (2 * k));
    }
}
SKS__QUANT(q6_k, 256, 210)

static void sks__q8_k_block(const float *x, uint8_t *p) {
    float d = fabsf(sks__xmax(x, 256)) / 127.0f, id = sks__inv(d);
    memcpy(p, &d, 4);
    int8_t *q = (int8_t *)(p + 4);
    for (int i = 0; i < 256; i++) q[i] = (int8_t)sks__clampi(sks__nint(x[i] * id), -127, 127);
    for (int k = 0; k < 16; k++) {
        int16_t s = 0;
        for (int i = 0; i < 16; i++) s = (int16_t)(s + q[16 * k + i]);
        memcpy(p + 260 + 2 * k, &s, 2);
    }
}
SKS__QUANT(q8_k, 256, 292)

/* Index of the IQ4 level nearest to v. */
static int sks__iq4_nearest(float v) {
    int best = 0;
    for (int k = 1; k < 16; k++)
        if (fabsf(v - (float)sks__kvalues_iq4nl[k]) < fabsf(v - (float)sks__kvalues_iq4nl[best])) best = k;
    return best;
}

static void sks__iq4_nl_block(const float *x, uint8_t *p) {
    float d = sks__put_f16(p, sks__xmax(x, 32) / -127.0f), id = sks__inv(d);
    for (int j = 0; j < 16; j++)
        p[2 + j] = (uint8_t)(sks__iq4_nearest(x[j] * id) | sks__iq4_nearest(x[j + 16] * id) << 4);
}
SKS__QUANT(iq4_nl, 32, 18)

static void sks__iq4_xs_block(const float *x, uint8_t *p) {
    float sf[8], m = 0;
    for (int ib = 0; ib < 8; ib++) {
        sf[ib] = sks__xmax(x + 32 * ib, 32) / -127.0f;
        if (fabsf(sf[ib]) > m) m = fabsf(sf[ib]);
    }
    float d = sks__put_f16(p, m / 32.0f);
    uint16_t sh = 0;
    for (int ib = 0; ib < 8; ib++) {
        int ls = sks__clampi(sks__nint(sf[ib] * sks__inv(d)) + 32, 0, 63);
        sks__nib(p + 4 + ib / 2, ib % 2, ls & 15);
        sh = (uint16_t)(sh | (ls >> 4) << (2 * ib));
        float idl = sks__inv(d * (float)(ls - 32));
        for (int j = 0; j < 16; j++)
            p[8 + 16 * ib + j] = (uint8_t)(sks__iq4_nearest(x[32 * ib + j] * idl) |
                                           sks__iq4_nearest(x[32 * ib + 16 + j] * idl) << 4);
    }
    p[2] = (uint8_t)sh;
    p[3] = (uint8_t)(sh >> 8);
}
SKS__QUANT(iq4_xs, 256, 136)

static inline int sks__trit(float x, float id) { return sks__clampi(sks__nint(x * id), -1, 1) + 1; }

static void sks__tq2_0_block(const float *x, uint8_t *p) {
    float d = sks__put_f16(p + 64, fabsf(sks__xmax(x, 256))), id = sks__inv(d);
    for (int i = 0; i < 256; i++) p[32 * (i / 128) + i % 32] |= (uint8_t)(sks__trit(x[i], id) << (2 * ((i % 128) / 32)));
}
SKS__QUANT(tq2_0, 256, 66)

/* TQ1_0 byte of the digits t[0..k) (t[0] most significant; k = 4 gets a trailing 0
 * digit): ceil(v 256 / 243), the inverse of the digit read in quant.c. */
static uint8_t sks__tq1_byte(const int *t, int k) {
    int v = 0;
    for (int i = 0; i < k; i++) v = 3 * v + t[i];
    if (k == 4) v *= 3;
    return (uint8_t)((v * 256 + 242) / 243);
}

static void sks__tq1_0_block(const float *x, uint8_t *p) {
    float d = sks__put_f16(p + 52, fabsf(sks__xmax(x, 256))), id = sks__inv(d);
    int t[5];
    for (int m = 0; m < 32; m++) {
        for (int dg = 0; dg < 5; dg++) t[dg] = sks__trit(x[32 * dg + m], id);
        p[m] = sks__tq1_byte(t, 5);
    }
    for (int m = 0; m < 16; m++) {
        for (int dg = 0; dg < 5; dg++) t[dg] = sks__trit(x[160 + 16 * dg + m], id);
        p[32 + m] = sks__tq1_byte(t, 5);
    }
    for (int m = 0; m < 4; m++) {
        for (int dg = 0; dg < 4; dg++) t[dg] = sks__trit(x[240 + 4 * dg + m], id);
        p[48 + m] = sks__tq1_byte(t, 4);
    }
}
SKS__QUANT(tq1_0, 256, 54)

/* ---- type schemes for whole files ------------------------------------------------------ */

/* llama.cpp's rule for the layers that get more bits in its _M mixes: the first and last
 * eighth of the layers and every third layer in between. */
static int sks__more_bits(int layer, int n_layers) {
    return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

int sks_gguf_scheme_parse(const char *name, sks_gguf_scheme *out) {
    static const struct {
        const char *name;
        sks_dtype base;
        int kind;
    } mixes[] = {{"q3_k_m", SKS_DT_Q3_K, 3}, {"q4_k_s", SKS_DT_Q4_K, 1}, {"q4_k_m", SKS_DT_Q4_K, 2},
                 {"q5_k_s", SKS_DT_Q5_K, 1}, {"q5_k_m", SKS_DT_Q5_K, 2}};
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++)
        if (!strcasecmp(name, mixes[i].name)) {
            snprintf(out->name, sizeof out->name, "%s", mixes[i].name);
            out->base = mixes[i].base;
            out->kind = mixes[i].kind;
            return 0;
        }
    int d = sks_dtype_from_name(name);
    if (d < 0 || !sks_dtype_get((sks_dtype)d)->from_f32)
        return sks_fail(SKS_EARG, "gguf: '%s' is neither a type sinkscope writes nor a mix (q3_k_m, q4_k_s, q4_k_m, "
                                  "q5_k_s, q5_k_m)", name);
    snprintf(out->name, sizeof out->name, "%s", sks_dtype_name((sks_dtype)d));
    out->base = (sks_dtype)d;
    return 0;
}

sks_dtype sks_gguf_scheme_type(const sks_gguf_scheme *s, sks_role role, int layer, int n_layers, int ndim,
                               int64_t cols) {
    if (ndim == 1) return SKS_DT_F32; /* norms and biases stay f32, as in llama.cpp's files */
    sks_dtype t = s->base;
    if (s->kind && role == SKS_ROLE_LM_HEAD) t = SKS_DT_Q6_K;
    if (s->kind == 2 && (role == SKS_ROLE_WV || role == SKS_ROLE_W_DOWN) && sks__more_bits(layer, n_layers))
        t = SKS_DT_Q6_K;
    if (s->kind == 3 && (role == SKS_ROLE_WV || role == SKS_ROLE_W_DOWN || role == SKS_ROLE_WO))
        t = layer < 2 && role == SKS_ROLE_WV ? SKS_DT_Q5_K : SKS_DT_Q4_K;
    /* rows that do not tile the type's blocks: llama.cpp's fallbacks, then f16 */
    if (cols % (int64_t)sks_dtype_get(t)->block) {
        switch (t) {
        case SKS_DT_Q4_K: t = SKS_DT_Q5_0; break;
        case SKS_DT_Q5_K: t = SKS_DT_Q5_1; break;
        case SKS_DT_Q6_K: case SKS_DT_Q8_K: t = SKS_DT_Q8_0; break;
        default: t = SKS_DT_IQ4_NL; break;
        }
        if (cols % 32) t = SKS_DT_F16;
    }
    return t;
}

/* ---- grid i-quants: nearest grid point ----------------------------------------------------
 * Scales as for the other types (largest element of a group onto the largest grid value),
 * then for every group of 8 (4 for IQ3) the grid entry nearest to the scaled magnitudes:
 * argmin_k |g_k|^2 - 2 g_k . t over the whole grid (float copies of the grids, made once).
 * Signs: the element's own; where the format stores 7 signs per 8 with even parity, an
 * odd count flips the sign of the element of smallest |x| (its target becomes -|x|). */

/* A grid for the search: entry i's k values transposed (element j at G[j n + i]) so that
 * the search runs along the entries and vectorizes, |g_i|^2, the sorted set of values an
 * element can take, and a map from each point of the full product set (base nv digits)
 * to its entry or -1. The unconstrained nearest point rounds each element on its own; when
 * the grid holds it, it is the answer and the search is skipped. */
typedef struct {
    float *G, *norm;
    int n, k, nv;
    float vals[8];
    int16_t *map;
} sks__qgrid;

static float sks__g2xxs[8 * 256], sks__g2xs[8 * 512], sks__g2s[8 * 1024], sks__g3xxs[4 * 256], sks__g3s[4 * 512],
    sks__g1s[8 * 2048];
static float sks__n2xxs[256], sks__n2xs[512], sks__n2s[1024], sks__n3xxs[256], sks__n3s[512], sks__n1s[2048];
static int16_t sks__m2xxs[6561], sks__m2xs[6561], sks__m2s[6561], sks__m3xxs[4096], sks__m3s[4096], sks__m1s[6561];
static sks__qgrid sks__q2xxs = {sks__g2xxs, sks__n2xxs, 256, 8, 0, {0}, sks__m2xxs},
                  sks__q2xs = {sks__g2xs, sks__n2xs, 512, 8, 0, {0}, sks__m2xs},
                  sks__q2s = {sks__g2s, sks__n2s, 1024, 8, 0, {0}, sks__m2s},
                  sks__q3xxs = {sks__g3xxs, sks__n3xxs, 256, 4, 0, {0}, sks__m3xxs},
                  sks__q3s = {sks__g3s, sks__n3s, 512, 4, 0, {0}, sks__m3s},
                  sks__q1s = {sks__g1s, sks__n1s, 2048, 8, 0, {0}, sks__m1s};
static pthread_once_t sks__grids_once = PTHREAD_ONCE_INIT;

static int sks__val_index(const sks__qgrid *g, float v) {
    for (int i = 0; i < g->nv; i++)
        if (g->vals[i] == v) return i;
    return -1;
}

static void sks__grid_setup(sks__qgrid *g, const uint64_t *w, int is_signed) {
    g->nv = 0;
    for (int i = 0; i < g->n; i++) {
        float s = 0;
        for (int j = 0; j < g->k; j++) {
            int v = (int)((w[i] >> (8 * j)) & 0xff);
            if (is_signed) v = (int8_t)v;
            g->G[j * g->n + i] = (float)v;
            s += (float)v * (float)v;
            if (sks__val_index(g, (float)v) < 0 && g->nv < 8) {
                int at = g->nv++;
                while (at > 0 && g->vals[at - 1] > (float)v) g->vals[at] = g->vals[at - 1], at--;
                g->vals[at] = (float)v;
            }
        }
        g->norm[i] = s;
    }
    int size = 1;
    for (int j = 0; j < g->k; j++) size *= g->nv;
    for (int c = 0; c < size; c++) g->map[c] = -1;
    for (int i = 0; i < g->n; i++) {
        int c = 0, mul = 1;
        for (int j = 0; j < g->k; j++, mul *= g->nv) c += sks__val_index(g, g->G[j * g->n + i]) * mul;
        g->map[c] = (int16_t)i;
    }
}

static void sks__grids_init(void) {
    uint64_t tmp[512];
    sks__grid_setup(&sks__q2xxs, sks__iq_grids.iq2xxs, 0);
    sks__grid_setup(&sks__q2xs, sks__iq_grids.iq2xs, 0);
    sks__grid_setup(&sks__q2s, sks__iq_grids.iq2s, 0);
    sks__grid_setup(&sks__q1s, sks__iq_grids.iq1s, 1);
    for (int i = 0; i < 256; i++) tmp[i] = sks__iq_grids.iq3xxs[i];
    sks__grid_setup(&sks__q3xxs, tmp, 0);
    for (int i = 0; i < 512; i++) tmp[i] = sks__iq_grids.iq3s[i];
    sks__grid_setup(&sks__q3s, tmp, 0);
}

/* The i-quant quantizers: the grids set up once, then as SKS__QUANT. */
static void sks__iq_blocks(const float *x, uint8_t *p, size_t n, size_t bytes,
                           void (*block)(const float *x, uint8_t *p)) {
    pthread_once(&sks__grids_once, sks__grids_init);
    sks__blocks(x, p, n, 256, bytes, block);
}
#define SKS__IQ_QUANT(t, BYTES)                                    \
    void sks__##t##_from_f32(const float *x, void *out, size_t n) { \
        sks__iq_blocks(x, out, n, (BYTES), sks__##t##_block);       \
    }

/* Full search: argmin_i |g_i|^2 - 2 g_i . t. */
SKS__VEC static int sks__grid_search(const float *G, const float *norm, int n, int k, const float *t) {
    float e[2048];
    for (int i = 0; i < n; i++) e[i] = norm[i];
    for (int j = 0; j < k; j++) {
        const float c = 2.0f * t[j], *g = G + (size_t)j * (size_t)n;
        for (int i = 0; i < n; i++) e[i] -= c * g[i];
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (e[i] < e[best]) best = i;
    return best;
}

/* Index of the grid entry nearest to t (k values). */
static int sks__grid_best(const sks__qgrid *g, const float *t) {
    int c = 0, mul = 1;
    for (int j = 0; j < g->k; j++, mul *= g->nv) {
        int vi = 0;
        for (int v = 1; v < g->nv; v++)
            if (fabsf(t[j] - g->vals[v]) < fabsf(t[j] - g->vals[vi])) vi = v;
        c += vi * mul;
    }
    if (g->map[c] >= 0) return g->map[c];
    return sks__grid_search(g->G, g->norm, g->n, g->k, t);
}

static float sks__amax(const float *x, int n) { return fabsf(sks__xmax(x, n)); }

/* Signs of a group of 8: bit j set when element j is taken negative; with parity, the
 * count of set bits is made even by flipping the element of smallest |x|. Fills the
 * targets t_j = (sign_j ? -x_j : x_j) / db. */
static unsigned sks__signs8(const float *x, float db, int parity, float *t) {
    unsigned s = 0;
    int jmin = 0;
    for (int j = 0; j < 8; j++) {
        if (x[j] < 0) s |= 1u << j;
        if (fabsf(x[j]) < fabsf(x[jmin])) jmin = j;
    }
    if (parity && __builtin_popcount(s) % 2) s ^= 1u << jmin;
    float id = sks__inv(db);
    for (int j = 0; j < 8; j++) t[j] = ((s >> j) & 1 ? -x[j] : x[j]) * id;
    return s;
}

/* want_k = amax over sub-block k (ns sub-blocks of len elements) / gmax; returns max_k want_k */
static float sks__sub_amax(const float *x, int ns, int len, float gmax, float *want) {
    float m = 0;
    for (int k = 0; k < ns; k++) {
        want[k] = sks__amax(x + k * len, len) / gmax;
        if (want[k] > m) m = want[k];
    }
    return m;
}

/* Super-block scale d and 4-bit sub-scales s_k (k < ns, each over len elements) for
 * db_k = d (0.5 + s_k) / div (IQ2: div 4, IQ3_XXS: 2) or d (1 + 2 s_k) (div 0, IQ3_S),
 * with db_k about amax_k / gmax. Returns d (stored f16 at pd). */
static float sks__iq_scales(const float *x, int ns, int len, float gmax, float div, uint8_t *pd, int *s) {
    float want[16], m = sks__sub_amax(x, ns, len, gmax, want);
    float d = sks__put_f16(pd, div > 0 ? m * div / 15.5f : m / 31.0f), id = sks__inv(d);
    for (int k = 0; k < ns; k++)
        s[k] = sks__clampi(div > 0 ? sks__nint(want[k] * div * id - 0.5f) : sks__nint((want[k] * id - 1.0f) / 2.0f), 0, 15);
    return d;
}

static void sks__iq2_xxs_block(const float *x, uint8_t *p) {
    int s[8];
    float d = sks__iq_scales(x, 8, 32, 43.0f, 4.0f, p, s);
    for (int ib = 0; ib < 8; ib++) {
        float db = d * (0.5f + (float)s[ib]) * 0.25f, t[8];
        uint32_t aux = (uint32_t)s[ib] << 28;
        for (int l = 0; l < 4; l++) {
            unsigned sg = sks__signs8(x + 32 * ib + 8 * l, db, 1, t);
            p[2 + 8 * ib + l] = (uint8_t)sks__grid_best(&sks__q2xxs, t);
            aux |= (uint32_t)(sg & 127) << (7 * l);
        }
        for (int k = 0; k < 4; k++) p[2 + 8 * ib + 4 + k] = (uint8_t)(aux >> (8 * k));
    }
}
SKS__IQ_QUANT(iq2_xxs, 66)

/* IQ2_XS (9-bit index, 7 signs) and IQ2_S (10-bit index, 8 signs): scales per 16. */
static void sks__iq2_xs_s(const float *x, uint8_t *p, int is_s) {
    int s[16];
    float d = sks__iq_scales(x, 16, 16, 43.0f, 4.0f, p, s);
    for (int ib = 0; ib < 8; ib++) {
        p[(is_s ? 74 : 66) + ib] = (uint8_t)(s[2 * ib] | s[2 * ib + 1] << 4);
        for (int l = 0; l < 4; l++) {
            float db = d * (0.5f + (float)s[2 * ib + l / 2]) * 0.25f, t[8];
            unsigned sg = sks__signs8(x + 32 * ib + 8 * l, db, !is_s, t);
            int idx = is_s ? sks__grid_best(&sks__q2s, t)
                           : sks__grid_best(&sks__q2xs, t);
            if (is_s) {
                p[2 + 4 * ib + l] = (uint8_t)idx;
                p[34 + 4 * ib + l] = (uint8_t)sg;
                p[66 + ib] |= (uint8_t)((idx >> 8) << (2 * l));
            } else {
                uint16_t w = (uint16_t)(idx | (sg & 127) << 9);
                p[2 + 2 * (4 * ib + l)] = (uint8_t)w;
                p[3 + 2 * (4 * ib + l)] = (uint8_t)(w >> 8);
            }
        }
    }
}
static void sks__iq2_xs_block(const float *x, uint8_t *p) { sks__iq2_xs_s(x, p, 0); }
static void sks__iq2_s_block(const float *x, uint8_t *p) { sks__iq2_xs_s(x, p, 1); }
SKS__IQ_QUANT(iq2_xs, 74)
SKS__IQ_QUANT(iq2_s, 82)

/* IQ3_XXS (8-bit index, 7 signs, db = d (0.5 + s) / 2) and IQ3_S (9-bit index, 8 signs,
 * db = d (1 + 2 s)): two 4-wide grid entries per group of 8. */
static void sks__iq3(const float *x, uint8_t *p, int is_s) {
    int s[8];
    float d = sks__iq_scales(x, 8, 32, is_s ? 15.0f : 62.0f, is_s ? 0.0f : 2.0f, p, s);
    for (int ib = 0; ib < 8; ib++) {
        float db = is_s ? d * (float)(1 + 2 * s[ib]) : d * (0.5f + (float)s[ib]) * 0.5f, t[8];
        uint32_t aux = (uint32_t)s[ib] << 28;
        if (is_s) sks__nib(p + 106 + ib / 2, ib % 2, s[ib]);
        for (int l = 0; l < 4; l++) {
            unsigned sg = sks__signs8(x + 32 * ib + 8 * l, db, !is_s, t);
            if (is_s) p[74 + 4 * ib + l] = (uint8_t)sg;
            else aux |= (uint32_t)(sg & 127) << (7 * l);
            for (int half = 0; half < 2; half++) {
                int idx = is_s ? sks__grid_best(&sks__q3s, t + 4 * half)
                               : sks__grid_best(&sks__q3xxs, t + 4 * half);
                p[2 + 8 * ib + 2 * l + half] = (uint8_t)idx;
                if (is_s) p[66 + ib] |= (uint8_t)((idx >> 8) << (2 * l + half));
            }
        }
        if (!is_s)
            for (int k = 0; k < 4; k++) p[66 + 4 * ib + k] = (uint8_t)(aux >> (8 * k));
    }
}
static void sks__iq3_xxs_block(const float *x, uint8_t *p) { sks__iq3(x, p, 0); }
static void sks__iq3_s_block(const float *x, uint8_t *p) { sks__iq3(x, p, 1); }
SKS__IQ_QUANT(iq3_xxs, 98)
SKS__IQ_QUANT(iq3_s, 110)

/* IQ1: x = dl (g + delta), g in {-1, 0, 1}^8, delta = +-1/8; dl = d (2 s + 1). Best grid
 * entry for targets t - delta; returns the squared error. */
static float sks__iq1_group(const float *x, float dl, float delta, int *idx) {
    float t[8], id = sks__inv(dl);
    for (int j = 0; j < 8; j++) t[j] = x[j] * id - delta;
    *idx = sks__grid_best(&sks__q1s, t);
    float e = 0;
    for (int j = 0; j < 8; j++) e += (sks__g1s[j * 2048 + *idx] - t[j]) * (sks__g1s[j * 2048 + *idx] - t[j]);
    return e;
}

/* 3-bit scales s_k of ns sub-blocks of len: dl_k = d (2 s_k + 1) about amax_k / 1.125;
 * returns d (not stored: IQ1_S stores it at p, IQ1_M spreads it over the scale words). */
static float sks__iq1_scales(const float *x, int ns, int len, int *s, uint16_t *dh) {
    float want[16], m = sks__sub_amax(x, ns, len, 1.125f, want);
    *dh = sks_f32_to_f16(m / 15.0f);
    float d = sks__f16(*dh), id = sks__inv(d);
    for (int k = 0; k < ns; k++) s[k] = sks__clampi(sks__nint((want[k] * id - 1.0f) / 2.0f), 0, 7);
    return d;
}

static void sks__iq1_s_block(const float *x, uint8_t *p) {
    int s[8];
    uint16_t dh;
    float d = sks__iq1_scales(x, 8, 32, s, &dh);
    p[0] = (uint8_t)dh;
    p[1] = (uint8_t)(dh >> 8);
    for (int ib = 0; ib < 8; ib++) {
        float dl = d * (float)(2 * s[ib] + 1);
        int best[2][4];
        float err[2] = {0, 0};
        for (int neg = 0; neg < 2; neg++)
            for (int l = 0; l < 4; l++)
                err[neg] += sks__iq1_group(x + 32 * ib + 8 * l, dl, neg ? -SKS__IQ1_DELTA : SKS__IQ1_DELTA, &best[neg][l]);
        int neg = err[1] < err[0];
        uint16_t qh = (uint16_t)(s[ib] << 12 | neg << 15);
        for (int l = 0; l < 4; l++) {
            p[2 + 4 * ib + l] = (uint8_t)best[neg][l];
            qh = (uint16_t)(qh | (best[neg][l] >> 8) << (3 * l));
        }
        p[34 + 2 * ib] = (uint8_t)qh;
        p[35 + 2 * ib] = (uint8_t)(qh >> 8);
    }
}
SKS__IQ_QUANT(iq1_s, 50)

static void sks__iq1_m_block(const float *x, uint8_t *p) {
    int s[16];
    uint16_t dh;
    float d = sks__iq1_scales(x, 16, 16, s, &dh);
    for (int ib = 0; ib < 8; ib++) {
        uint16_t w = (uint16_t)(p[48 + 2 * (ib / 2)] | p[49 + 2 * (ib / 2)] << 8);
        w = (uint16_t)(w | (s[2 * ib] | s[2 * ib + 1] << 3) << (6 * (ib % 2)));
        p[48 + 2 * (ib / 2)] = (uint8_t)w;
        p[49 + 2 * (ib / 2)] = (uint8_t)(w >> 8);
        for (int l = 0; l < 4; l++) {
            float dl = d * (float)(2 * s[2 * ib + l / 2] + 1);
            int ip, im;
            float ep = sks__iq1_group(x + 32 * ib + 8 * l, dl, SKS__IQ1_DELTA, &ip);
            float em = sks__iq1_group(x + 32 * ib + 8 * l, dl, -SKS__IQ1_DELTA, &im);
            int neg = em < ep, idx = neg ? im : ip;
            p[4 * ib + l] = (uint8_t)idx;
            sks__nib(p + 32 + 2 * ib + l / 2, l % 2, (idx >> 8) | neg << 3);
        }
    }
    for (int k = 0; k < 4; k++) p[49 + 2 * k] = (uint8_t)((p[49 + 2 * k] & 0x0f) | ((dh >> (4 * k)) & 15) << 4);
}
SKS__IQ_QUANT(iq1_m, 56)

/* MXFP4: x = kvalues_fp4[q] 2^(e - 128); e puts amax at or below the largest value 12. */
static void sks__mxfp4_block(const float *x, uint8_t *p) {
    float a = sks__amax(x, 32);
    /* a / 12 underflows to 0 for subnormal a: clamp the exponent before converting */
    float l = a > 0 ? ceilf(log2f(a / 12.0f)) : -1000.0f;
    int e = a > 0 ? sks__clampi((int)fmaxf(fminf(l, 200.0f), -200.0f) + 128, 1, 254) : 0;
    float sc = ldexpf(1.0f, e - 128), isc = 1.0f / sc;
    p[0] = (uint8_t)e;
    for (int j = 0; j < 32; j++) {
        float v = x[j] * isc;
        int best = 0;
        for (int k = 1; k < 16; k++)
            if (fabsf(v - (float)sks__kvalues_fp4[k]) < fabsf(v - (float)sks__kvalues_fp4[best])) best = k;
        sks__nib(p + 1 + j % 16, j >= 16, best);
    }
}
SKS__QUANT(mxfp4, 32, 17)
