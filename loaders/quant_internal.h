/* quant_internal.h - helpers and kernels of the quantized tensor types, shared by the
 * dtype table (dtype.c), the kernels (quant.c), the quantizers (quantize.c) and tests.
 *
 * Every kernel converts n elements (a whole number of blocks) to f32. The plain name is
 * the vectorized kernel, `_ref` its scalar twin written element by element from the
 * block definition; both compute each element with the same f32 operations, so they
 * agree bitwise (test-quant.c checks it; NaN outputs of NaN scales only as NaN).
 */
#ifndef SKS_QUANT_INTERNAL_H
#define SKS_QUANT_INTERNAL_H

#include "sks_model.h"

#include <string.h>

/* Functions written for the auto-vectorizer: on x86-64 with gcc, one clone for AVX2 and
 * one for the baseline, chosen when the library is loaded (ifunc). clang 14 leaves the
 * resolver of an address-taken clone undefined at link time, so clang builds get the
 * baseline only (still vectorized, SSE2). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SKS_NO_CLONES)
#define SKS__VEC __attribute__((target_clones("avx2", "default")))
#else
#define SKS__VEC
#endif

/* F16C (vcvtph2ps) for the f16 kernel: a function compiled for that target, called only
 * when the CPU reports the feature at run time (gcc and clang on x86-64). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SKS_NO_CLONES)
#include <immintrin.h>
#define SKS__HAVE_F16C 1
#define SKS__TARGET_F16C __attribute__((target("avx,f16c")))
static inline int sks__cpu_f16c(void) { return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"); }
#else
#define SKS__HAVE_F16C 0
#endif

/* Elements per super-block of the K-quants and i-quants. */
#define SKS__QK_K 256

static inline float sks__bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half to f32, exact (subnormals, inf and NaN included). */
static inline float sks__f16(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24 */
        return s ? -v : v;
    }
    if (e == 31) return sks__bits_to_f32(s | 0x7f800000u | (m << 13));
    return sks__bits_to_f32(s | ((e + 112) << 23) | (m << 13));
}

/* Little-endian reads from a block (blocks are byte-packed, so never through a cast). */
static inline uint16_t sks__le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t sks__le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline float sks__f16_at(const uint8_t *p) { return sks__f16(sks__le16(p)); }

/* 6-bit scale and min of sub-block j (0..7) of the 12 scale bytes of Q4_K / Q5_K:
 * j < 4: sc = q[j] & 63, m = q[j+4] & 63; else the low 4 bits come from q[j+4] (low /
 * high nibble) and the top 2 bits from the spare top bits of q[j-4] / q[j]. */
static inline void sks__k4_scale_min(const uint8_t *q, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Signed 6-bit scale s (0..15) of Q3_K from its 12 scale bytes, minus the bias 32:
 * low 4 bits are the low (s < 8) or high (s >= 8) nibble of byte s % 8, the top 2 bits
 * are bits 2 (s / 4) .. 2 (s / 4) + 1 of byte 8 + s % 4. */
static inline int sks__q3k_scale(const uint8_t *b, int s) {
    int lo = s < 8 ? (b[s] & 0xf) : (b[s - 8] >> 4);
    int hi = (b[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* The 16 values of IQ4_NL / IQ4_XS (ggml-common.h kvalues_iq4nl). */
extern const int8_t sks__kvalues_iq4nl[16];
/* The 16 e2m1 values of MXFP4, doubled (ggml-common.h kvalues_fp4). */
extern const int8_t sks__kvalues_fp4[16];
/* Grids of the i-quants (quant_grids.c, transcribed from ggml-common.h <name>_grid): entry
 * k holds 8 (or 4) unsigned magnitudes, byte j of the little-endian word is element j. */
typedef struct {
    uint64_t iq2xxs[256];
    uint64_t iq2xs[512];
    uint64_t iq2s[1024];
    uint32_t iq3xxs[256];
    uint32_t iq3s[512];
    uint64_t iq1s[2048]; /* bytes are int8 in {-1, 0, 1} */
} sks__iq_grid_set;
extern const sks__iq_grid_set sks__iq_grids;
/* Delta of IQ1_S / IQ1_M: x = dl (grid + delta), delta = +-1/8. */
#define SKS__IQ1_DELTA 0.125f

/* Sign byte of a 7-bit sign index (IQ2_XXS, IQ2_XS, IQ3_XXS): the 8th bit makes the
 * number of set bits even (ggml's ksigns_iq2xs holds the same 128 bytes). */
static inline uint8_t sks__ksigns(unsigned i7) {
    return (uint8_t)(i7 | ((unsigned)__builtin_parity(i7) << 7));
}

/* Element value (byte j) of a grid word. */
static inline int sks__grid_u8(uint64_t w, int j) { return (int)((w >> (8 * j)) & 0xff); }

#define SKS__DECL_KERNEL(t)                                  \
    void sks__##t##_to_f32(const void *in, float *out, size_t n); \
    void sks__##t##_to_f32_ref(const void *in, float *out, size_t n);
SKS__DECL_KERNEL(f32)
SKS__DECL_KERNEL(f16)
/* The f16 kernel's branch-free loop without F16C (what CPUs without it run; tested too). */
void sks__f16_to_f32_portable_only(const void *in, float *out, size_t n);
SKS__DECL_KERNEL(bf16)
SKS__DECL_KERNEL(q4_0)
SKS__DECL_KERNEL(q4_1)
SKS__DECL_KERNEL(q5_0)
SKS__DECL_KERNEL(q5_1)
SKS__DECL_KERNEL(q8_0)
SKS__DECL_KERNEL(q8_1)
SKS__DECL_KERNEL(q2_k)
SKS__DECL_KERNEL(q3_k)
SKS__DECL_KERNEL(q4_k)
SKS__DECL_KERNEL(q5_k)
SKS__DECL_KERNEL(q6_k)
SKS__DECL_KERNEL(q8_k)
SKS__DECL_KERNEL(iq4_nl)
SKS__DECL_KERNEL(iq4_xs)
SKS__DECL_KERNEL(tq1_0)
SKS__DECL_KERNEL(tq2_0)
SKS__DECL_KERNEL(mxfp4)
SKS__DECL_KERNEL(iq2_xxs)
SKS__DECL_KERNEL(iq2_xs)
SKS__DECL_KERNEL(iq2_s)
SKS__DECL_KERNEL(iq3_xxs)
SKS__DECL_KERNEL(iq3_s)
SKS__DECL_KERNEL(iq1_s)
SKS__DECL_KERNEL(iq1_m)
#undef SKS__DECL_KERNEL

/* Round-to-nearest quantizers (quantize.c): n f32 values (whole blocks) to blocks. */
#define SKS__DECL_QUANT(t) void sks__##t##_from_f32(const float *x, void *out, size_t n);
SKS__DECL_QUANT(f32)
SKS__DECL_QUANT(f16)
SKS__DECL_QUANT(bf16)
SKS__DECL_QUANT(q4_0)
SKS__DECL_QUANT(q4_1)
SKS__DECL_QUANT(q5_0)
SKS__DECL_QUANT(q5_1)
SKS__DECL_QUANT(q8_0)
SKS__DECL_QUANT(q8_1)
SKS__DECL_QUANT(q2_k)
SKS__DECL_QUANT(q3_k)
SKS__DECL_QUANT(q4_k)
SKS__DECL_QUANT(q5_k)
SKS__DECL_QUANT(q6_k)
SKS__DECL_QUANT(q8_k)
SKS__DECL_QUANT(iq4_nl)
SKS__DECL_QUANT(iq4_xs)
SKS__DECL_QUANT(tq1_0)
SKS__DECL_QUANT(tq2_0)
SKS__DECL_QUANT(mxfp4)
SKS__DECL_QUANT(iq2_xxs)
SKS__DECL_QUANT(iq2_xs)
SKS__DECL_QUANT(iq2_s)
SKS__DECL_QUANT(iq3_xxs)
SKS__DECL_QUANT(iq3_s)
SKS__DECL_QUANT(iq1_s)
SKS__DECL_QUANT(iq1_m)
#undef SKS__DECL_QUANT

#endif
