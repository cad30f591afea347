/* quant.c - dequantization kernels of every GGUF tensor type (the dtype table's kernels).
 *
 * Block layouts and formulas follow ggml's definition (ggml-common.h block_*, ggml-quants.c
 * dequantize_row_*); this is an independent implementation. All multi-byte fields are
 * little-endian; f16 = IEEE half. Within a block, x_i is element i.
 *
 *   Q4_0   32 /  18 B: d f16, qs[16]; byte j = elements j (low nibble), j+16 (high);
 *                      x = d (q - 8)
 *   Q4_1   32 /  20 B: d, m f16, qs[16] as Q4_0; x = d q + m
 *   Q5_0   32 /  22 B: d, qh u32 (bit i = 5th bit of element i), qs[16]; x = d (q - 16)
 *   Q5_1   32 /  24 B: d, m, qh, qs; x = d q + m
 *   Q8_0   32 /  34 B: d, qs int8[32]; x = d q
 *   Q8_1   32 /  36 B: d, s (= d sum q, unused here), qs int8[32]; x = d q
 *   Q2_K  256 /  84 B: scales[16] (low nibble scale, high nibble min of each 16), qs[64],
 *                      d, dmin f16. Element i = 128 h + 32 j + l: q = qs[32 h + l] >> 2 j & 3;
 *                      x = d sc q - dmin m with (sc, m) of sub-block i / 16
 *   Q3_K  256 / 110 B: hmask[32], qs[64], scales[12] (16 signed 6-bit, bias 32), d.
 *                      q as Q2_K, minus 4 unless bit 4 h + j of hmask[l]; x = d s q
 *   Q4_K  256 / 144 B: d, dmin, scales[12] (8 x 6-bit scale and min), qs[128].
 *                      Element i = 64 g + 32 hi + l: nibble hi of qs[32 g + l];
 *                      x = d sc q - dmin m, sub-block i / 32
 *   Q5_K  256 / 176 B: d, dmin, scales[12], qh[32], qs[128]: Q4_K plus 16 x bit
 *                      (2 g + hi) of qh[l]
 *   Q6_K  256 / 210 B: ql[128], qh[64], scales int8[16], d. Element i = 128 n + 32 k + l:
 *                      low 4 bits: nibble (k >= 2) of ql[64 n + 32 (k & 1) + l], high 2:
 *                      bits 2 k of qh[32 n + l]; x = d sc (q - 32), sub-block i / 16
 *   Q8_K  256 / 292 B: d f32, qs int8[256], bsums int16[16] (unused here); x = d q
 *   IQ4_NL 32 /  18 B: d, qs[16] as Q4_0; x = d kvalues_iq4nl[q]
 *   IQ4_XS 256 / 136 B: d, scales_h u16, scales_l[4], qs[128]: per 32 a 6-bit ls (low
 *                      nibble from scales_l, 2 high bits from scales_h), x = d (ls - 32) kv[q]
 *   TQ1_0 256 /  54 B: qs[48], qh[4], d: base-3 digits, 5 per byte (4 in qh), stored as
 *                      ceil(digits * 256 / 243); digit n of byte b = ((b 3^n mod 256) 3) >> 8;
 *                      x = d (digit - 1)
 *   TQ2_0 256 /  66 B: qs[64], d: 2-bit q at bits 2 l of qs[32 c + m]; x = d (q - 1)
 *   MXFP4  32 /  17 B: e (E8M0), qs[16] as Q4_0; x = kvalues_fp4[q] 2^(e - 128)
 *   IQ2_XXS 256 / 66 B: d, 8 x (4 grid bytes, u32 with 4 x 7-bit signs and a 4-bit scale);
 *                      x = d (0.5 + s) / 4 grid sign
 *   IQ2_XS 256 /  74 B: d, qs u16[32] (9-bit grid index, 7-bit sign index), scales[8]
 *   IQ2_S  256 /  82 B: d, qs[32] grid low bits, signs[32], qh[8] (2 high bits), scales[8]
 *   IQ3_XXS 256 / 98 B: d, qs[64] grid indices (4 values each), 8 x u32 signs and scale;
 *                      x = d (0.5 + s) / 2 grid sign
 *   IQ3_S  256 / 110 B: d, qs[64], qh[8] (9th index bit), signs[32], scales[4];
 *                      x = d (1 + 2 s) grid sign
 *   IQ1_S  256 /  50 B: d, qs[32], qh u16[8] (3 x 3 high index bits, 3-bit scale, delta
 *                      sign); x = d (2 s + 1) (grid + delta)
 *   IQ1_M  256 /  56 B: qs[32], qh[16], scales[8] (3-bit scales; the f16 d is spread over
 *                      the top nibbles of the four u16 scale words)
 *
 * The plain kernels are written so that the compiler vectorizes them (this file is
 * compiled with -O3; on x86-64 each is cloned for AVX2 and picked at load time). The
 * _ref twins compute one element at a time from the formulas above with the same f32
 * operations in the same order, so both agree bitwise.
 */
#include "quant_internal.h"

#include <stdlib.h>


/* ggml-common.h kvalues_iq4nl */
const int8_t sks__kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
/* ggml-common.h kvalues_fp4 (e2m1, doubled) */
const int8_t sks__kvalues_fp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* The two kernels of a block type t (QK elements in BYTES bytes): sks__t_to_f32 runs
 * t_block (a whole block, written for the vectorizer; inlined into each clone) over the
 * blocks, sks__t_to_f32_ref fills element i of every block from t_elem(block, i). */
#define SKS__KERNELS(t, QK, BYTES)                                                     \
    SKS__VEC void sks__##t##_to_f32(const void *in, float *restrict out, size_t n) {   \
        const uint8_t *p = in;                                                         \
        for (size_t b = 0; b < n / (QK); b++, p += (BYTES), out += (QK))               \
            t##_block(p, out);                                                         \
    }                                                                                  \
    void sks__##t##_to_f32_ref(const void *in, float *out, size_t n) {                 \
        const uint8_t *p = in;                                                         \
        for (size_t b = 0; b < n / (QK); b++, p += (BYTES))                            \
            for (int i = 0; i < (QK); i++) out[b * (QK) + (size_t)i] = t##_elem(p, i); \
    }

/* ---- plain types ---------------------------------------------------------------------- */

void sks__f32_to_f32(const void *in, float *out, size_t n) { memcpy(out, in, n * 4); }
void sks__f32_to_f32_ref(const void *in, float *out, size_t n) {
    const uint8_t *p = in;
    for (size_t i = 0; i < n; i++) out[i] = sks__bits_to_f32(sks__le32(p + 4 * i));
}

/* bf16: the top 16 bits of an f32, so widening is a shift (exact). */
SKS__VEC void sks__bf16_to_f32(const void *in, float *restrict out, size_t n) {
    const uint16_t *h = in;
    uint32_t *o = (uint32_t *)(void *)out;
    for (size_t i = 0; i < n; i++) o[i] = (uint32_t)h[i] << 16;
}
void sks__bf16_to_f32_ref(const void *in, float *out, size_t n) {
    const uint16_t *h = in;
    for (size_t i = 0; i < n; i++) out[i] = sks__bits_to_f32((uint32_t)h[i] << 16);
}

/* f16, written for the vectorizer (no branch): normal numbers by a shift and an exponent
 * rebias (twice for inf / NaN, exponent 31 -> 255), zero and subnormals as m 2^-24 (exact
 * in f32); the sign is or-ed in last. */
SKS__VEC static void sks__f16_to_f32_portable(const uint16_t *restrict hp, float *restrict out, size_t n) {
    uint32_t *o = (uint32_t *)(void *)out;
    for (size_t i = 0; i < n; i++) {
        const uint32_t h = hp[i], e = h & 0x7c00u;
        /* all-ones masks: exponent 31 (inf, NaN), exponent 0 (zero, subnormal) */
        const uint32_t inf = 0u - (uint32_t)(e == 0x7c00u), sub = 0u - (uint32_t)(e == 0);
        const uint32_t u = ((h & 0x7fffu) << 13) + (112u << 23) + (inf & (112u << 23));
        const float fs = (float)(int32_t)(h & 0x3ffu) * 5.9604644775390625e-8f; /* m 2^-24 */
        uint32_t us;
        memcpy(&us, &fs, 4);
        o[i] = (u & ~sub) | (us & sub) | ((h & 0x8000u) << 16);
    }
}

#if SKS__HAVE_F16C
/* F16C: vcvtph2ps widens 8 halves per instruction, exactly (subnormals, inf and NaN
 * included; a signalling NaN comes out quiet, still a NaN). */
SKS__TARGET_F16C static void sks__f16_to_f32_f16c(const uint16_t *restrict hp, float *restrict out, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(hp + i)));
        __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(hp + i + 8)));
        __m256 c = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(hp + i + 16)));
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(hp + i + 24)));
        _mm256_storeu_ps(out + i, a);
        _mm256_storeu_ps(out + i + 8, b);
        _mm256_storeu_ps(out + i + 16, c);
        _mm256_storeu_ps(out + i + 24, d);
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(hp + i))));
    if (i < n) sks__f16_to_f32_portable(hp + i, out + i, n - i);
}
#endif

/* The F16C kernel where the CPU has it (checked once per call: one load of a flag that
 * the runtime set at start-up), else the portable loop. */
void sks__f16_to_f32(const void *in, float *restrict out, size_t n) {
#if SKS__HAVE_F16C
    if (sks__cpu_f16c()) {
        sks__f16_to_f32_f16c(in, out, n);
        return;
    }
#endif
    sks__f16_to_f32_portable(in, out, n);
}
void sks__f16_to_f32_portable_only(const void *in, float *out, size_t n) { sks__f16_to_f32_portable(in, out, n); }
void sks__f16_to_f32_ref(const void *in, float *out, size_t n) {
    const uint16_t *h = in;
    for (size_t i = 0; i < n; i++) out[i] = sks__f16(h[i]);
}

/* ---- 32-element blocks ------------------------------------------------------------------ */

static inline void q4_0_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    const uint8_t *q = p + 2;
    for (int j = 0; j < 16; j++) {
        out[j] = d * (float)((int)(q[j] & 0xf) - 8);
        out[j + 16] = d * (float)((int)(q[j] >> 4) - 8);
    }
}
static float q4_0_elem(const uint8_t *b, int i) {
    int byte = b[2 + i % 16], q = i < 16 ? byte & 0xf : byte >> 4;
    return sks__f16_at(b) * (float)(q - 8);
}
SKS__KERNELS(q4_0, 32, 18)

static inline void q4_1_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p), m = sks__f16_at(p + 2);
    const uint8_t *q = p + 4;
    for (int j = 0; j < 16; j++) {
        out[j] = (float)(q[j] & 0xf) * d + m;
        out[j + 16] = (float)(q[j] >> 4) * d + m;
    }
}
static float q4_1_elem(const uint8_t *b, int i) {
    int byte = b[4 + i % 16], q = i < 16 ? byte & 0xf : byte >> 4;
    return (float)q * sks__f16_at(b) + sks__f16_at(b + 2);
}
SKS__KERNELS(q4_1, 32, 20)

/* Q5_0 (with_min 0: d at 0, qh at 2, qs at 6; x = d (q - 16)) and Q5_1 (with_min 1: d, m,
 * qh at 4, qs at 8; x = d q + m). */
static inline void sks__q5_block(const uint8_t *p, float *restrict out, int with_min) {
    const float d = sks__f16_at(p), m = with_min ? sks__f16_at(p + 2) : 0.0f;
    const uint32_t qh = sks__le32(p + 2 + 2 * with_min);
    const uint8_t *q = p + 6 + 2 * with_min;
    for (int j = 0; j < 16; j++) {
        int lo = (int)((q[j] & 0xf) | (((qh >> j) & 1) << 4));
        int hi = (int)((q[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        if (with_min) {
            out[j] = (float)lo * d + m;
            out[j + 16] = (float)hi * d + m;
        } else {
            out[j] = (float)(lo - 16) * d;
            out[j + 16] = (float)(hi - 16) * d;
        }
    }
}
static inline void q5_0_block(const uint8_t *p, float *restrict out) { sks__q5_block(p, out, 0); }
static float q5_0_elem(const uint8_t *b, int i) {
    int byte = b[6 + i % 16], q = (i < 16 ? byte & 0xf : byte >> 4) | (int)((sks__le32(b + 2) >> i) & 1) << 4;
    return (float)(q - 16) * sks__f16_at(b);
}
SKS__KERNELS(q5_0, 32, 22)

static inline void q5_1_block(const uint8_t *p, float *restrict out) { sks__q5_block(p, out, 1); }
static float q5_1_elem(const uint8_t *b, int i) {
    int byte = b[8 + i % 16], q = (i < 16 ? byte & 0xf : byte >> 4) | (int)((sks__le32(b + 4) >> i) & 1) << 4;
    return (float)q * sks__f16_at(b) + sks__f16_at(b + 2);
}
SKS__KERNELS(q5_1, 32, 24)

/* Q8_0 (34-byte blocks, quants at 2) and Q8_1 (36 bytes, quants at 4): x = d q. */
static inline void sks__q8_block(const uint8_t *p, float *restrict out, size_t qoff) {
    const float d = sks__f16_at(p);
    const int8_t *q = (const int8_t *)(p + qoff);
    for (int j = 0; j < 32; j++) out[j] = d * (float)q[j];
}
static inline void q8_0_block(const uint8_t *p, float *restrict out) { sks__q8_block(p, out, 2); }
static float q8_0_elem(const uint8_t *b, int i) { return sks__f16_at(b) * (float)(int8_t)b[2 + i]; }
SKS__KERNELS(q8_0, 32, 34)

static inline void q8_1_block(const uint8_t *p, float *restrict out) { sks__q8_block(p, out, 4); }
static float q8_1_elem(const uint8_t *b, int i) { return sks__f16_at(b) * (float)(int8_t)b[4 + i]; }
SKS__KERNELS(q8_1, 32, 36)

static inline void iq4_nl_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    const uint8_t *q = p + 2;
    for (int j = 0; j < 16; j++) {
        out[j] = d * (float)sks__kvalues_iq4nl[q[j] & 0xf];
        out[j + 16] = d * (float)sks__kvalues_iq4nl[q[j] >> 4];
    }
}
static float iq4_nl_elem(const uint8_t *b, int i) {
    int byte = b[2 + i % 16], q = i < 16 ? byte & 0xf : byte >> 4;
    return sks__f16_at(b) * (float)sks__kvalues_iq4nl[q];
}
SKS__KERNELS(iq4_nl, 32, 18)

/* E8M0 scale halved: 2^(e - 128) as an f32 (subnormal for e < 2). */
static inline float sks__e8m0_half(uint8_t e) {
    return sks__bits_to_f32(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

static inline void mxfp4_block(const uint8_t *p, float *restrict out) {
    const float d = sks__e8m0_half(p[0]);
    const uint8_t *q = p + 1;
    for (int j = 0; j < 16; j++) {
        out[j] = (float)sks__kvalues_fp4[q[j] & 0xf] * d;
        out[j + 16] = (float)sks__kvalues_fp4[q[j] >> 4] * d;
    }
}
static float mxfp4_elem(const uint8_t *b, int i) {
    int byte = b[1 + i % 16], q = i < 16 ? byte & 0xf : byte >> 4;
    return (float)sks__kvalues_fp4[q] * sks__e8m0_half(b[0]);
}
SKS__KERNELS(mxfp4, 32, 17)

/* ---- K-quants (256-element super-blocks) ------------------------------------------------- */

static inline void q2_k_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p + 80), dmin = sks__f16_at(p + 82);
    const uint8_t *sc = p, *qs = p + 16;
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int s = 0; s < 2; s++) {
                const int k = 8 * h + 2 * j + s;
                const float dl = d * (float)(sc[k] & 0xf), ml = dmin * (float)(sc[k] >> 4);
                const uint8_t *q = qs + 32 * h + 16 * s;
                float *y = out + 16 * k;
                for (int l = 0; l < 16; l++) y[l] = dl * (float)((q[l] >> (2 * j)) & 3) - ml;
            }
}
static float q2_k_elem(const uint8_t *b, int i) {
    int h = i / 128, j = (i % 128) / 32, l = i % 32, sc = b[i / 16];
    int q = (b[16 + 32 * h + l] >> (2 * j)) & 3;
    float dl = sks__f16_at(b + 80) * (float)(sc & 0xf), ml = sks__f16_at(b + 82) * (float)(sc >> 4);
    return dl * (float)q - ml;
}
SKS__KERNELS(q2_k, 256, 84)

static inline void q3_k_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p + 108);
    const uint8_t *hm = p, *qs = p + 32, *scb = p + 96;
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int s = 0; s < 2; s++) {
                const int k = 8 * h + 2 * j + s;
                const float dl = d * (float)sks__q3k_scale(scb, k);
                const uint8_t *q = qs + 32 * h + 16 * s, *m = hm + 16 * s;
                const int bit = 4 * h + j;
                float *y = out + 16 * k;
                for (int l = 0; l < 16; l++)
                    y[l] = dl * (float)((int)((q[l] >> (2 * j)) & 3) - (((m[l] >> bit) & 1) ? 0 : 4));
            }
}
static float q3_k_elem(const uint8_t *b, int i) {
    int h = i / 128, j = (i % 128) / 32, l = i % 32;
    int q = (b[32 + 32 * h + l] >> (2 * j)) & 3;
    if (!(b[l] & (1 << (4 * h + j)))) q -= 4;
    float dl = sks__f16_at(b + 108) * (float)sks__q3k_scale(b + 96, i / 16);
    return dl * (float)q;
}
SKS__KERNELS(q3_k, 256, 110)

/* Q4_K (five 0: qs at 16) and Q5_K (five 1: qh at 16, qs at 48; bit 2 g + hi of qh[l]
 * is the 5th bit). */
static inline void sks__q45_k_block(const uint8_t *p, float *restrict out, int five) {
    const float d = sks__f16_at(p), dmin = sks__f16_at(p + 2);
    const uint8_t *scb = p + 4, *qh = p + 16, *qs = p + (five ? 48 : 16);
    for (int g = 0; g < 4; g++) {
        int sc1, m1, sc2, m2;
        sks__k4_scale_min(scb, 2 * g, &sc1, &m1);
        sks__k4_scale_min(scb, 2 * g + 1, &sc2, &m2);
        const float d1 = d * (float)sc1, mm1 = dmin * (float)m1, d2 = d * (float)sc2, mm2 = dmin * (float)m2;
        const uint8_t *q = qs + 32 * g;
        for (int l = 0; l < 32; l++)
            out[l] = d1 * (float)((q[l] & 0xf) + (five ? ((qh[l] >> (2 * g)) & 1) << 4 : 0)) - mm1;
        for (int l = 0; l < 32; l++)
            out[32 + l] = d2 * (float)((q[l] >> 4) + (five ? ((qh[l] >> (2 * g + 1)) & 1) << 4 : 0)) - mm2;
        out += 64;
    }
}
static inline void q4_k_block(const uint8_t *p, float *restrict out) { sks__q45_k_block(p, out, 0); }
static float q4_k_elem(const uint8_t *b, int i) {
    int g = i / 64, hi = (i / 32) & 1, byte = b[16 + 32 * g + i % 32], sc, m;
    sks__k4_scale_min(b + 4, i / 32, &sc, &m);
    int q = hi ? byte >> 4 : byte & 0xf;
    return sks__f16_at(b) * (float)sc * (float)q - sks__f16_at(b + 2) * (float)m;
}
SKS__KERNELS(q4_k, 256, 144)

static inline void q5_k_block(const uint8_t *p, float *restrict out) { sks__q45_k_block(p, out, 1); }
static float q5_k_elem(const uint8_t *b, int i) {
    int g = i / 64, hi = (i / 32) & 1, l = i % 32, byte = b[48 + 32 * g + l], sc, m;
    sks__k4_scale_min(b + 4, i / 32, &sc, &m);
    int q = (hi ? byte >> 4 : byte & 0xf) + (((b[16 + l] >> (2 * g + hi)) & 1) << 4);
    return sks__f16_at(b) * (float)sc * (float)q - sks__f16_at(b + 2) * (float)m;
}
SKS__KERNELS(q5_k, 256, 176)

static inline void q6_k_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p + 208);
    const int8_t *sc = (const int8_t *)(p + 192);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = p + 64 * h, *qh = p + 128 + 32 * h;
        for (int k = 0; k < 4; k++) {
            const uint8_t *lq = ql + 32 * (k & 1);
            const int shift = k >= 2 ? 4 : 0;
            for (int s = 0; s < 2; s++) {
                const float ds = d * (float)sc[8 * h + 2 * k + s];
                float *y = out + 128 * h + 32 * k + 16 * s;
                for (int l = 0; l < 16; l++) {
                    int ll = 16 * s + l;
                    int q = (int)(((lq[ll] >> shift) & 0xf) | (((qh[ll] >> (2 * k)) & 3) << 4)) - 32;
                    y[l] = ds * (float)q;
                }
            }
        }
    }
}
static float q6_k_elem(const uint8_t *b, int i) {
    int h = i / 128, k = (i % 128) / 32, l = i % 32;
    int byte = b[64 * h + 32 * (k & 1) + l];
    int q = ((k >= 2 ? byte >> 4 : byte & 0xf) | (((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
    return sks__f16_at(b + 208) * (float)(int8_t)b[192 + i / 16] * (float)q;
}
SKS__KERNELS(q6_k, 256, 210)

static inline void q8_k_block(const uint8_t *p, float *restrict out) {
    const float d = sks__bits_to_f32(sks__le32(p));
    const int8_t *q = (const int8_t *)(p + 4);
    for (int j = 0; j < 256; j++) out[j] = d * (float)q[j];
}
static float q8_k_elem(const uint8_t *b, int i) { return sks__bits_to_f32(sks__le32(b)) * (float)(int8_t)b[4 + i]; }
SKS__KERNELS(q8_k, 256, 292)

static inline int sks__iq4xs_ls(const uint8_t *b, int ib) {
    return ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) | (((sks__le16(b + 2) >> (2 * ib)) & 3) << 4);
}

static inline void iq4_xs_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    for (int ib = 0; ib < 8; ib++, out += 32) {
        const float dl = d * (float)(sks__iq4xs_ls(p, ib) - 32);
        const uint8_t *q = p + 8 + 16 * ib;
        for (int j = 0; j < 16; j++) {
            out[j] = dl * (float)sks__kvalues_iq4nl[q[j] & 0xf];
            out[j + 16] = dl * (float)sks__kvalues_iq4nl[q[j] >> 4];
        }
    }
}
static float iq4_xs_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = i % 32, byte = b[8 + 16 * ib + l % 16], q = l < 16 ? byte & 0xf : byte >> 4;
    return sks__f16_at(b) * (float)(sks__iq4xs_ls(b, ib) - 32) * (float)sks__kvalues_iq4nl[q];
}
SKS__KERNELS(iq4_xs, 256, 136)

/* ---- ternary types ---------------------------------------------------------------------- */

/* Base-3 digit n of a TQ1_0 byte: the byte is ceil(v 256 / 243) for the 5-digit (or 4)
 * number v, so multiplying by 3^n (mod 256) shifts digit n to the top, and (x 3) >> 8
 * reads it. */
static inline int sks__tq1_digit(uint8_t byte, int n) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t q = (uint8_t)(byte * pow3[n]);
    return (int)(((uint16_t)q * 3) >> 8);
}

static inline void tq1_0_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p + 52);
    for (int dg = 0; dg < 5; dg++, out += 32)
        for (int m = 0; m < 32; m++) out[m] = (float)(sks__tq1_digit(p[m], dg) - 1) * d;
    for (int dg = 0; dg < 5; dg++, out += 16)
        for (int m = 0; m < 16; m++) out[m] = (float)(sks__tq1_digit(p[32 + m], dg) - 1) * d;
    for (int dg = 0; dg < 4; dg++, out += 4)
        for (int m = 0; m < 4; m++) out[m] = (float)(sks__tq1_digit(p[48 + m], dg) - 1) * d;
}
static float tq1_0_elem(const uint8_t *b, int i) {
    int byte, dg;
    if (i < 160) byte = b[i % 32], dg = i / 32;
    else if (i < 240) byte = b[32 + (i - 160) % 16], dg = (i - 160) / 16;
    else byte = b[48 + (i - 240) % 4], dg = (i - 240) / 4;
    return (float)(sks__tq1_digit((uint8_t)byte, dg) - 1) * sks__f16_at(b + 52);
}
SKS__KERNELS(tq1_0, 256, 54)

static inline void tq2_0_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p + 64);
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < 4; l++, out += 32)
            for (int m = 0; m < 32; m++) out[m] = (float)((int)((p[32 * c + m] >> (2 * l)) & 3) - 1) * d;
}
static float tq2_0_elem(const uint8_t *b, int i) {
    int c = i / 128, l = (i % 128) / 32, m = i % 32;
    return (float)(((b[32 * c + m] >> (2 * l)) & 3) - 1) * sks__f16_at(b + 64);
}
SKS__KERNELS(tq2_0, 256, 66)

/* ---- grid i-quants ------------------------------------------------------------------------ */

static inline float sks__sgn(unsigned signs, int j) { return (signs >> j) & 1 ? -1.0f : 1.0f; }
/* A group of 8 of the signed-grid types: out[j] = db grid_j sign_j. */
static inline void sks__grid8(float *restrict out, float db, uint64_t w, unsigned s) {
    for (int j = 0; j < 8; j++) out[j] = db * (float)sks__grid_u8(w, j) * sks__sgn(s, j);
}
/* Sub-block scale of IQ2_* and IQ3_XXS: d (0.5 + s) k, k = 1/4 (IQ2) or 1/2 (IQ3_XXS). */
static inline float sks__db(float d, int s, float k) { return d * (0.5f + (float)s) * k; }
/* The u32 of IQ2_XXS / IQ3_XXS: 4-bit scale on top, the 7-bit sign index of group l at 7 l. */
static inline int sks__aux_scale(uint32_t aux) { return (int)(aux >> 28); }
static inline unsigned sks__aux_signs(uint32_t aux, int l) { return sks__ksigns((aux >> (7 * l)) & 127); }

static inline void iq2_xxs_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    for (int ib = 0; ib < 8; ib++) {
        const uint8_t *g = p + 2 + 8 * ib;
        const uint32_t aux = sks__le32(g + 4);
        const float db = sks__db(d, sks__aux_scale(aux), 0.25f);
        for (int l = 0; l < 4; l++, out += 8) {
            const uint64_t w = sks__iq_grids.iq2xxs[g[l]];
            const unsigned s = sks__aux_signs(aux, l);
            sks__grid8(out, db, w, s);
        }
    }
}
static float iq2_xxs_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8;
    uint32_t aux = sks__le32(b + 2 + 8 * ib + 4);
    float db = sks__db(sks__f16_at(b), sks__aux_scale(aux), 0.25f);
    int g = sks__grid_u8(sks__iq_grids.iq2xxs[b[2 + 8 * ib + l]], j);
    return db * (float)g * sks__sgn(sks__aux_signs(aux, l), j);
}
SKS__KERNELS(iq2_xxs, 256, 66)

static inline void iq2_xs_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    for (int ib = 0; ib < 8; ib++) {
        const uint8_t sc = p[66 + ib];
        const float db[2] = {sks__db(d, sc & 0xf, 0.25f), sks__db(d, sc >> 4, 0.25f)};
        for (int l = 0; l < 4; l++, out += 8) {
            const uint16_t q = sks__le16(p + 2 + 2 * (4 * ib + l));
            const uint64_t w = sks__iq_grids.iq2xs[q & 511];
            const unsigned s = sks__ksigns(q >> 9);
            sks__grid8(out, db[l / 2], w, s);
        }
    }
}
static float iq2_xs_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8, sc = b[66 + ib];
    uint16_t q = sks__le16(b + 2 + 2 * (4 * ib + l));
    float db = sks__db(sks__f16_at(b), l < 2 ? sc & 0xf : sc >> 4, 0.25f);
    return db * (float)sks__grid_u8(sks__iq_grids.iq2xs[q & 511], j) * sks__sgn(sks__ksigns(q >> 9), j);
}
SKS__KERNELS(iq2_xs, 256, 74)

static inline void iq2_s_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    const uint8_t *qs = p + 2, *signs = p + 34, *qh = p + 66, *scales = p + 74;
    for (int ib = 0; ib < 8; ib++) {
        const float db[2] = {sks__db(d, scales[ib] & 0xf, 0.25f), sks__db(d, scales[ib] >> 4, 0.25f)};
        for (int l = 0; l < 4; l++, out += 8) {
            const uint64_t w = sks__iq_grids.iq2s[qs[4 * ib + l] | ((qh[ib] << (8 - 2 * l)) & 0x300)];
            const unsigned s = signs[4 * ib + l];
            sks__grid8(out, db[l / 2], w, s);
        }
    }
}
static float iq2_s_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8, sc = b[74 + ib];
    int idx = b[2 + 4 * ib + l] | ((b[66 + ib] << (8 - 2 * l)) & 0x300);
    float db = sks__db(sks__f16_at(b), l < 2 ? sc & 0xf : sc >> 4, 0.25f);
    return db * (float)sks__grid_u8(sks__iq_grids.iq2s[idx], j) * sks__sgn(b[34 + 4 * ib + l], j);
}
SKS__KERNELS(iq2_s, 256, 82)

static inline void iq3_xxs_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    for (int ib = 0; ib < 8; ib++) {
        const uint8_t *qs = p + 2 + 8 * ib;
        const uint32_t aux = sks__le32(p + 66 + 4 * ib);
        const float db = sks__db(d, sks__aux_scale(aux), 0.5f);
        for (int l = 0; l < 4; l++, out += 8) {
            const unsigned s = sks__aux_signs(aux, l);
            const uint32_t *grid = sks__iq_grids.iq3xxs;
            const uint64_t w = (uint64_t)grid[qs[2 * l]] | (uint64_t)grid[qs[2 * l + 1]] << 32;
            sks__grid8(out, db, w, s);
        }
    }
}
static float iq3_xxs_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8;
    uint32_t aux = sks__le32(b + 66 + 4 * ib);
    float db = sks__db(sks__f16_at(b), sks__aux_scale(aux), 0.5f);
    int g = sks__grid_u8(sks__iq_grids.iq3xxs[b[2 + 8 * ib + 2 * l + j / 4]], j % 4);
    return db * (float)g * sks__sgn(sks__aux_signs(aux, l), j);
}
SKS__KERNELS(iq3_xxs, 256, 98)

static inline void iq3_s_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    const uint8_t *qs = p + 2, *qh = p + 66, *signs = p + 74, *scales = p + 106;
    for (int ib = 0; ib < 8; ib++) {
        const int sc = ib % 2 ? scales[ib / 2] >> 4 : scales[ib / 2] & 0xf;
        const float db = d * (float)(1 + 2 * sc);
        for (int l = 0; l < 4; l++, out += 8) {
            const int i1 = qs[8 * ib + 2 * l] | ((qh[ib] << (8 - 2 * l)) & 256);
            const int i2 = qs[8 * ib + 2 * l + 1] | ((qh[ib] << (7 - 2 * l)) & 256);
            const uint64_t w = (uint64_t)sks__iq_grids.iq3s[i1] | (uint64_t)sks__iq_grids.iq3s[i2] << 32;
            const unsigned s = signs[4 * ib + l];
            sks__grid8(out, db, w, s);
        }
    }
}
static float iq3_s_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8, scb = b[106 + ib / 2];
    int sc = ib % 2 ? scb >> 4 : scb & 0xf;
    int idx = b[2 + 8 * ib + 2 * l + j / 4] | ((b[66 + ib] << (8 - 2 * l - j / 4)) & 256);
    float db = sks__f16_at(b) * (float)(1 + 2 * sc);
    return db * (float)sks__grid_u8(sks__iq_grids.iq3s[idx], j % 4) * sks__sgn(b[74 + 4 * ib + l], j);
}
SKS__KERNELS(iq3_s, 256, 110)

static inline int sks__grid_i8(uint64_t w, int j) { return (int)(int8_t)((w >> (8 * j)) & 0xff); }

static inline void iq1_s_block(const uint8_t *p, float *restrict out) {
    const float d = sks__f16_at(p);
    for (int ib = 0; ib < 8; ib++) {
        const uint16_t h = sks__le16(p + 34 + 2 * ib);
        const float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
        const float delta = h & 0x8000 ? -SKS__IQ1_DELTA : SKS__IQ1_DELTA;
        for (int l = 0; l < 4; l++, out += 8) {
            const uint64_t w = sks__iq_grids.iq1s[p[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)];
            for (int j = 0; j < 8; j++) out[j] = dl * ((float)sks__grid_i8(w, j) + delta);
        }
    }
}
static float iq1_s_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8;
    uint16_t h = sks__le16(b + 34 + 2 * ib);
    float dl = sks__f16_at(b) * (float)(2 * ((h >> 12) & 7) + 1);
    float delta = h & 0x8000 ? -SKS__IQ1_DELTA : SKS__IQ1_DELTA;
    int g = sks__grid_i8(sks__iq_grids.iq1s[b[2 + 4 * ib + l] | (((h >> (3 * l)) & 7) << 8)], j);
    return dl * ((float)g + delta);
}
SKS__KERNELS(iq1_s, 256, 50)

/* IQ1_M's super-block scale: an f16 whose 4 nibbles are the top nibbles of the four
 * u16 scale words. */
static inline float sks__iq1m_d(const uint8_t *sc) {
    uint16_t s0 = sks__le16(sc), s1 = sks__le16(sc + 2), s2 = sks__le16(sc + 4), s3 = sks__le16(sc + 6);
    return sks__f16((uint16_t)((s0 >> 12) | ((s1 >> 8) & 0x00f0) | ((s2 >> 4) & 0x0f00) | (s3 & 0xf000)));
}

static inline void iq1_m_block(const uint8_t *p, float *restrict out) {
    const uint8_t *qs = p, *qh = p + 32, *sc = p + 48;
    const float d = sks__iq1m_d(sc);
    for (int ib = 0; ib < 8; ib++) {
        const uint16_t s = sks__le16(sc + 2 * (ib / 2));
        const float dl[2] = {d * (float)(2 * ((s >> (6 * (ib % 2))) & 7) + 1),
                             d * (float)(2 * ((s >> (6 * (ib % 2) + 3)) & 7) + 1)};
        for (int l = 0; l < 4; l++, out += 8) {
            const uint8_t h = qh[2 * ib + l / 2];
            const int idx = qs[4 * ib + l] | (((l % 2 ? h << 4 : h << 8)) & 0x700);
            const float delta = h & (l % 2 ? 0x80 : 0x08) ? -SKS__IQ1_DELTA : SKS__IQ1_DELTA;
            const uint64_t w = sks__iq_grids.iq1s[idx];
            for (int j = 0; j < 8; j++) out[j] = dl[l / 2] * ((float)sks__grid_i8(w, j) + delta);
        }
    }
}
static float iq1_m_elem(const uint8_t *b, int i) {
    int ib = i / 32, l = (i % 32) / 8, j = i % 8;
    uint16_t s = sks__le16(b + 48 + 2 * (ib / 2));
    float dl = sks__iq1m_d(b + 48) * (float)(2 * ((s >> (6 * (ib % 2) + 3 * (l / 2))) & 7) + 1);
    int h = b[32 + 2 * ib + l / 2];
    int idx = b[4 * ib + l] | ((l % 2 ? h << 4 : h << 8) & 0x700);
    float delta = h & (l % 2 ? 0x80 : 0x08) ? -SKS__IQ1_DELTA : SKS__IQ1_DELTA;
    return dl * ((float)sks__grid_i8(sks__iq_grids.iq1s[idx], j) + delta);
}
SKS__KERNELS(iq1_m, 256, 56)
