/* matmul_kernel.c - packed panels of W and the 6 x 16 AVX2 + FMA kernel of
 * sks_matmul_wt (contract and loop structure in matmul_kernel.h).
 *
 * The kernel keeps a (6, 16) tile of Y in 12 ymm accumulators; per k it loads one row of
 * the packed sliver (16 values of W: two ymm, converted from f16 with F16C where the
 * panel holds f16), broadcasts X[t, k] of its 6 rows and issues 12 FMAs: 8 loads per
 * 12 FMAs, no register spills (15 of 16 ymm). The six X rows of a tile (6 KC floats)
 * stay in L1 while the panel's slivers stream from L2. Rows of X past T (a last tile of
 * fewer than 6 rows) and rows of W past the panel (a sliver of fewer than 16 rows,
 * zero-padded in P) are neither computed nor stored.
 */
#include "matmul_kernel.h"

#include "core/sks_core.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define SKS__MMK_X86 1
#define SKS__MMK_TARGET __attribute__((target("avx2,fma,f16c")))
#define SKS__MMK_INLINE static inline __attribute__((always_inline)) SKS__MMK_TARGET
#else
#define SKS__MMK_X86 0
#endif

static int sks__mmk_enabled = 1;

int sks__mmk_set_enabled(int on) {
    int was = sks__mmk_enabled;
    sks__mmk_enabled = on != 0;
    return was;
}

static int64_t sks__mmk_kc(int64_t in) { return in < SKS__MMK_KC ? in : SKS__MMK_KC; }

/* Rows of W per panel that ws_floats hold: nb (kc + T) floats for the panel and its
 * (T, nb) sums, 8 kc for the staging; a multiple of 16, at most SKS__MMK_NB (0: not even
 * one sliver). */
static int64_t sks__mmk_nb(int64_t in, int T, size_t ws_floats) {
    const size_t kc = (size_t)sks__mmk_kc(in);
    if (kc == 0 || T < 1 || ws_floats < 8 * kc) return 0;
    int64_t nb = (int64_t)((ws_floats - 8 * kc) / (kc + (size_t)T)) / 16 * 16;
    return nb < SKS__MMK_NB ? nb : SKS__MMK_NB;
}

int sks__mmk_takes(const sks_tensor *W, int T, size_t ws_floats) {
#if SKS__MMK_X86
    /* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know it */
    unsigned a, b, c, d;
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const int cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (!cpu || !sks__mmk_enabled || !W || W->ndim != 2 || W->tstride > 0 || W->dtype == SKS_DT_F32) return 0;
    const sks_dtype_info *info = sks_dtype_get(W->dtype);
    if (!info || !info->to_f32 || SKS__MMK_KC % info->block) return 0;
    return sks__mmk_nb(W->shape[1], T, ws_floats) > 0;
#else
    (void)W;
    (void)T;
    (void)ws_floats;
    return 0;
#endif
}

#if SKS__MMK_X86
/* P[k 16 + j] = S[j kc + k] for k < kc, j < 8: an (8, kc) block S transposed into one
 * half of a sliver, 8 x 8 at a time in registers (the scalar loop takes a tail of kc). */
static SKS__MMK_TARGET void sks__mmk_transpose8(const float *S, int64_t kc, float *P) {
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        /* rows r0..r7 hold (row j, columns k..k+7); after the three steps, o_i holds
         * column k + i of rows 0..7 */
        __m256 r0 = _mm256_loadu_ps(S + k), r1 = _mm256_loadu_ps(S + kc + k);
        __m256 r2 = _mm256_loadu_ps(S + 2 * kc + k), r3 = _mm256_loadu_ps(S + 3 * kc + k);
        __m256 r4 = _mm256_loadu_ps(S + 4 * kc + k), r5 = _mm256_loadu_ps(S + 5 * kc + k);
        __m256 r6 = _mm256_loadu_ps(S + 6 * kc + k), r7 = _mm256_loadu_ps(S + 7 * kc + k);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
        __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
        __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
        __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
        float *p = P + k * 16;
        _mm256_storeu_ps(p + 0 * 16, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(p + 1 * 16, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(p + 2 * 16, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(p + 3 * 16, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(p + 4 * 16, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(p + 5 * 16, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(p + 6 * 16, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(p + 7 * 16, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < kc; k++)
        for (int j = 0; j < 8; j++) P[k * 16 + j] = S[j * kc + k];
}

/* One sliver of the panel: rows [o, o + nv) (nv <= 16) and columns [k0, k0 + kc) of W,
 * P[k 16 + j] = W[o + j, k0 + k] (rows j >= nv zero), converted 8 rows at a time into
 * stage (8, kc) and transposed from there. */
static int sks__mmk_pack(const sks_tensor *W, int64_t o, int64_t nv, int64_t k0, int64_t kc, float *stage, float *P) {
    for (int64_t h = 0; h < 16; h += 8) {
        const int64_t n = nv - h < 0 ? 0 : nv - h < 8 ? nv - h : 8;
        if (n > 0) {
            int rc = sks_tensor_tile_f32(W, o + h, n, k0, kc, stage);
            if (rc) return rc;
        }
        if (n < 8) memset(stage + n * kc, 0, (size_t)((8 - n) * kc) * sizeof(float));
        sks__mmk_transpose8(stage, kc, P + h);
    }
    return 0;
}

/* The same sliver of an f16 W kept in f16 (P[k 16 + j] = W[o + j, k0 + k], its bits):
 * 8 x 8 blocks of halves transposed in registers, no conversion (the kernel converts
 * with F16C as it loads, which halves the panel's bytes). The weights' exponent bits
 * are checked on the way; where one is NaN or Inf, those rows go through
 * sks_tensor_tile_f32, whose check fails or (with --allow-nonfinite) lets them pass. */
static SKS__MMK_TARGET int sks__mmk_pack16(const sks_tensor *W, int64_t o, int64_t nv, int64_t k0, int64_t kc,
                                           float *stage, uint16_t *P) {
    const int64_t in = W->shape[1];
    const __m128i expo = _mm_set1_epi16(0x7c00);
    for (int64_t h = 0; h < 16; h += 8) {
        const int64_t n = nv - h < 0 ? 0 : nv - h < 8 ? nv - h : 8;
        const uint16_t *row[8];
        for (int64_t j = 0; j < 8; j++) row[j] = j < n ? (const uint16_t *)W->data + (o + h + j) * in + k0 : NULL;
        __m128i bad = _mm_setzero_si128();
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m128i r[8];
            for (int j = 0; j < 8; j++) {
                r[j] = row[j] ? _mm_loadu_si128((const __m128i *)(row[j] + k)) : _mm_setzero_si128();
                bad = _mm_or_si128(bad, _mm_cmpeq_epi16(_mm_and_si128(r[j], expo), expo));
            }
            /* pairs of rows, then quads, then all eight: c_i holds column k + i of rows 0..7 */
            __m128i a0 = _mm_unpacklo_epi16(r[0], r[1]), a1 = _mm_unpackhi_epi16(r[0], r[1]);
            __m128i a2 = _mm_unpacklo_epi16(r[2], r[3]), a3 = _mm_unpackhi_epi16(r[2], r[3]);
            __m128i a4 = _mm_unpacklo_epi16(r[4], r[5]), a5 = _mm_unpackhi_epi16(r[4], r[5]);
            __m128i a6 = _mm_unpacklo_epi16(r[6], r[7]), a7 = _mm_unpackhi_epi16(r[6], r[7]);
            __m128i b0 = _mm_unpacklo_epi32(a0, a2), b1 = _mm_unpackhi_epi32(a0, a2);
            __m128i b2 = _mm_unpacklo_epi32(a1, a3), b3 = _mm_unpackhi_epi32(a1, a3);
            __m128i b4 = _mm_unpacklo_epi32(a4, a6), b5 = _mm_unpackhi_epi32(a4, a6);
            __m128i b6 = _mm_unpacklo_epi32(a5, a7), b7 = _mm_unpackhi_epi32(a5, a7);
            uint16_t *p = P + k * 16 + h;
            _mm_storeu_si128((__m128i *)(p + 0 * 16), _mm_unpacklo_epi64(b0, b4));
            _mm_storeu_si128((__m128i *)(p + 1 * 16), _mm_unpackhi_epi64(b0, b4));
            _mm_storeu_si128((__m128i *)(p + 2 * 16), _mm_unpacklo_epi64(b1, b5));
            _mm_storeu_si128((__m128i *)(p + 3 * 16), _mm_unpackhi_epi64(b1, b5));
            _mm_storeu_si128((__m128i *)(p + 4 * 16), _mm_unpacklo_epi64(b2, b6));
            _mm_storeu_si128((__m128i *)(p + 5 * 16), _mm_unpackhi_epi64(b2, b6));
            _mm_storeu_si128((__m128i *)(p + 6 * 16), _mm_unpacklo_epi64(b3, b7));
            _mm_storeu_si128((__m128i *)(p + 7 * 16), _mm_unpackhi_epi64(b3, b7));
        }
        int tail_bad = 0;
        for (; k < kc; k++)
            for (int64_t j = 0; j < 8; j++) {
                uint16_t v = 0;
                if (row[j]) memcpy(&v, row[j] + k, sizeof v); /* the file's alignment is not checked here */
                tail_bad |= (v & 0x7c00) == 0x7c00;
                P[k * 16 + h + j] = v;
            }
        if ((tail_bad || _mm_movemask_epi8(bad)) && n > 0) {
            int rc = sks_tensor_tile_f32(W, o + h, n, k0, kc, stage);
            if (rc) return rc;
        }
    }
    return 0;
}

/* Z tile (mr, 16) = (accumulate ? Y : 0) + X (mr, kc) P (kc, 16); X, Y, Z row strides
 * ldx, ldy, ldz (Z may be Y); only the first ncols columns of Y and Z are read and
 * written. P holds f32,
 * or f16 (half) converted as it is loaded. mr and half are constants at every call site
 * (the rows past mr and the other load vanish from the code). */
SKS__MMK_INLINE void sks__mmk_tile(int mr, int half, int64_t kc, const float *x, int64_t ldx, const void *P,
                                   const float *y, int64_t ldy, float *z, int64_t ldz, int ncols, int accumulate,
                                   const float *pf) {
    const float *x0 = x, *x1 = mr > 1 ? x + ldx : x, *x2 = mr > 2 ? x + 2 * ldx : x;
    const float *x3 = mr > 3 ? x + 3 * ldx : x, *x4 = mr > 4 ? x + 4 * ldx : x, *x5 = mr > 5 ? x + 5 * ldx : x;
    /* the Y tile is read (accumulate) and written after the k loop: fetched meanwhile */
    for (int i = 0; i < mr; i++) {
        if (accumulate) {
            _mm_prefetch((const char *)(y + i * ldy), _MM_HINT_T0);
            _mm_prefetch((const char *)(y + i * ldy + 15), _MM_HINT_T0);
        }
        if (z != y) {
            _mm_prefetch((const char *)(z + i * ldz), _MM_HINT_T0);
            _mm_prefetch((const char *)(z + i * ldz + 15), _MM_HINT_T0);
        }
    }
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define SKS__MMK_ROW(i)                                          \
    if (mr > i) {                                                \
        const __m256 a = _mm256_broadcast_ss(x##i + k);          \
        c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);               \
        c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);               \
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        if ((k & 15) == 0) _mm_prefetch((const char *)(pf + k), _MM_HINT_T0);
        __m256 b0, b1;
        if (half) {
            const uint16_t *p = (const uint16_t *)P + 16 * k;
            b0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
            b1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
        } else {
            b0 = _mm256_loadu_ps((const float *)P + 16 * k);
            b1 = _mm256_loadu_ps((const float *)P + 16 * k + 8);
        }
        SKS__MMK_ROW(0)
        SKS__MMK_ROW(1)
        SKS__MMK_ROW(2)
        SKS__MMK_ROW(3)
        SKS__MMK_ROW(4)
        SKS__MMK_ROW(5)
    }
#undef SKS__MMK_ROW
    if (ncols == 16) {
#define SKS__MMK_PUT(i)                                                                          \
    if (mr > i) {                                                                                \
        const float *yr = y + i * ldy;                                                           \
        float *zr = z + i * ldz;                                                                 \
        if (accumulate) {                                                                        \
            c##i##0 = _mm256_add_ps(c##i##0, _mm256_loadu_ps(yr));                               \
            c##i##1 = _mm256_add_ps(c##i##1, _mm256_loadu_ps(yr + 8));                           \
        }                                                                                        \
        _mm256_storeu_ps(zr, c##i##0);                                                           \
        _mm256_storeu_ps(zr + 8, c##i##1);                                                       \
    }
        SKS__MMK_PUT(0)
        SKS__MMK_PUT(1)
        SKS__MMK_PUT(2)
        SKS__MMK_PUT(3)
        SKS__MMK_PUT(4)
        SKS__MMK_PUT(5)
#undef SKS__MMK_PUT
        return;
    }
    /* a sliver of fewer than 16 rows of W: lanes < ncols only */
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(ncols - 8), lane);
#define SKS__MMK_PUTM(i)                                                                         \
    if (mr > i) {                                                                                \
        const float *yr = y + i * ldy;                                                           \
        float *zr = z + i * ldz;                                                                 \
        if (accumulate) {                                                                        \
            c##i##0 = _mm256_add_ps(c##i##0, _mm256_maskload_ps(yr, m0));                        \
            c##i##1 = _mm256_add_ps(c##i##1, _mm256_maskload_ps(yr + 8, m1));                    \
        }                                                                                        \
        _mm256_maskstore_ps(zr, m0, c##i##0);                                                    \
        _mm256_maskstore_ps(zr + 8, m1, c##i##1);                                                \
    }
    SKS__MMK_PUTM(0)
    SKS__MMK_PUTM(1)
    SKS__MMK_PUTM(2)
    SKS__MMK_PUTM(3)
    SKS__MMK_PUTM(4)
    SKS__MMK_PUTM(5)
#undef SKS__MMK_PUTM
}

/* The stored bytes of the next panel, fetched into L2 a few lines per tile while this
 * panel is multiplied (so that packing it does not wait on memory): rows of span bytes
 * from base, stride bytes apart; line i of the whole is line i % per of row i / per. */
typedef struct {
    const char *base;
    size_t stride, span;
    int64_t per, lines, next, step; /* lines per row, in all, next to fetch, per tile */
} sks__mmk_ahead;

SKS__MMK_INLINE void sks__mmk_fetch(sks__mmk_ahead *a) {
    for (int64_t i = 0; i < a->step && a->next < a->lines; i++, a->next++)
        _mm_prefetch(a->base + (size_t)(a->next / a->per) * a->stride + (size_t)(a->next % a->per) * 64,
                     _MM_HINT_T1);
}

/* Y[:, o0 : o0 + nb] (+)= X[:, k0 : k0 + kc] P^T for all T rows: x = X + k0, y = Y + o0;
 * P in f32 or (half) f16, element size esz. Tiles of 6 rows of X outside, the panel's
 * slivers inside (the X tile stays in L1 while the panel streams from L2). */
SKS__MMK_INLINE void sks__mmk_panel_of(int half, int T, int64_t kc, const float *x, int64_t ldx, const void *P,
                                       int64_t nb, const float *y, int64_t ldy, float *z, int64_t ldz, int accumulate,
                                       sks__mmk_ahead *ah) {
    const size_t esz = half ? 2 : 4;
    for (int64_t t = 0; t < T; t += 6) {
        const int mr = T - t < 6 ? (int)(T - t) : 6;
        const float *xt = x + t * ldx;
        const float *yt = y + t * ldy;
        float *zt = z + t * ldz;
        for (int64_t s = 0; s < nb; s += 16) {
            const int nc = nb - s < 16 ? (int)(nb - s) : 16;
            const void *Ps = (const char *)P + (size_t)(s * kc) * esz;
            /* the next tile's X row (s / 16) % 6, one line per 16 k, while this one runs */
            const float *pf = t + 6 < T ? xt + (6 + (s / 16) % 6 < T - t ? 6 + (s / 16) % 6 : 6) * ldx : xt;
            sks__mmk_fetch(ah);
            switch (mr) {
            case 6: sks__mmk_tile(6, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            case 5: sks__mmk_tile(5, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            case 4: sks__mmk_tile(4, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            case 3: sks__mmk_tile(3, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            case 2: sks__mmk_tile(2, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            default: sks__mmk_tile(1, half, kc, xt, ldx, Ps, yt + s, ldy, zt + s, ldz, nc, accumulate, pf); break;
            }
        }
    }
}

static SKS__MMK_TARGET void sks__mmk_panel(int half, int T, int64_t kc, const float *x, int64_t ldx, const void *P,
                                           int64_t nb, const float *y, int64_t ldy, float *z, int64_t ldz,
                                           int accumulate, sks__mmk_ahead *ah) {
    if (half) sks__mmk_panel_of(1, T, kc, x, ldx, P, nb, y, ldy, z, ldz, accumulate, ah);
    else sks__mmk_panel_of(0, T, kc, x, ldx, P, nb, y, ldy, z, ldz, accumulate, ah);
}
#endif

int sks__mmk_rows(const sks_tensor *W, const float *X, int T, float *Y, int64_t r0, int64_t r1, float *ws,
                  size_t ws_floats) {
#if SKS__MMK_X86
    const int64_t out = W->shape[0], in = W->shape[1], KC = sks__mmk_kc(in), NB = sks__mmk_nb(in, T, ws_floats);
    if (NB <= 0) return sks_fail(SKS_EARG, "%s: workspace of %zu floats holds no panel", W->name, ws_floats);
    /* f16 weights stay f16 in the panel (half its floats); other types become f32 */
    const int half = W->dtype == SKS_DT_F16;
    /* the panel's sums over the chunks of k accumulate in Ys (T, NB), dense and in L2,
     * not in the rows of Y (out floats apart, a page or more); the last chunk adds its
     * products to them and writes the sums into Y */
    float *P = ws, *stage = ws + NB * KC, *Ys = stage + 8 * KC;
    const sks_dtype_info *info = sks_dtype_get(W->dtype);
    const size_t row_bytes = (size_t)(in / info->block) * info->block_bytes;
    const int64_t tiles = (T + 5) / 6 * ((NB + 15) / 16);
    for (int64_t o0 = r0; o0 < r1; o0 += NB) {
        const int64_t nb = r1 - o0 < NB ? r1 - o0 : NB;
        for (int64_t k0 = 0; k0 < in; k0 += KC) {
            const int64_t kc = in - k0 < KC ? in - k0 : KC;
            /* the next panel: columns k0 + KC of these rows, or the first of the next rows */
            const int64_t o1 = k0 + KC < in ? o0 : o0 + NB, k1 = k0 + KC < in ? k0 + KC : 0;
            const int64_t n1 = o1 < r1 ? (r1 - o1 < NB ? r1 - o1 : NB) : 0, c1 = in - k1 < KC ? in - k1 : KC;
            sks__mmk_ahead ah = {(const char *)W->data + (size_t)o1 * row_bytes +
                                     (size_t)(k1 / info->block) * info->block_bytes,
                                 row_bytes, (size_t)(c1 / info->block) * info->block_bytes, 0, 0, 0, 0};
            ah.per = (int64_t)((ah.span + 63) / 64);
            ah.lines = n1 * ah.per;
            ah.step = (ah.lines + tiles - 1) / tiles;
            for (int64_t s = 0; s < nb; s += 16) {
                const int64_t nv = nb - s < 16 ? nb - s : 16;
                int rc = half ? sks__mmk_pack16(W, o0 + s, nv, k0, kc, stage, (uint16_t *)P + s * kc)
                              : sks__mmk_pack(W, o0 + s, nv, k0, kc, stage, P + s * kc);
                if (rc) return rc;
            }
            const int last = k0 + KC >= in;
            sks__mmk_panel(half, T, kc, X + k0, in, P, nb, Ys, NB, last ? Y + o0 : Ys, last ? out : NB, k0 > 0, &ah);
        }
    }
    return 0;
#else
    (void)X, (void)T, (void)Y, (void)r0, (void)r1, (void)ws, (void)ws_floats;
    return sks_fail(SKS_EUNSUPPORTED, "%s: no packed kernel in this build", W->name);
#endif
}
