/* test-quant.c - the dtype table and the dequantization kernel of every GGUF type.
 *
 * For each type, blocks are built here field by field from chosen logical values (integer
 * quants, sub-block scales and mins, grid indices, sign patterns, super-block scales that
 * are exact f16 values), and the value each element must have is computed in double from
 * the type's formula (ggml's definition, restated per type below) - never by calling a
 * kernel. Trials cover random values and the extremes: zero scale, largest quants and
 * scales, negative scales and mins, every grid index and every sign pattern. The kernel
 * and its _ref twin must both match within a few f32 roundings of the terms' magnitude,
 * and agree with each other bitwise on random bytes.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sks_test.h"
#include "loaders/sks_model.h"
#include "loaders/quant_internal.h"

static uint64_t rs = 0x1234567887654321ull;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}
static int rint_in(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }

enum { MODE_RANDOM, MODE_MAX, MODE_ZERO, MODE_NEG, N_MODES };

/* A super-block scale that f16 holds exactly: k 2^e, |k| < 2048. Written little-endian. */
static double put_f16(uint8_t *p, int mode) {
    double v = mode == MODE_ZERO ? 0.0 : ldexp((double)rint_in(1, 2047), -rint_in(14, 22));
    if (mode == MODE_NEG) v = -v;
    if (mode == MODE_MAX) v = 2047.0 * ldexp(1.0, -14);
    uint16_t h = sks_f32_to_f16((float)v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
    return v;
}
static int qv(int mode, int lo, int hi) { return mode == MODE_MAX ? hi : rint_in(lo, hi); }
static void set_nib(uint8_t *p, int hi, int v) { *p = (uint8_t)(hi ? (*p & 0x0f) | (v << 4) : (*p & 0xf0) | v); }
static void set_bit(uint8_t *p, int bit, int v) { p[bit / 8] = (uint8_t)(v ? p[bit / 8] | (1 << (bit % 8)) : p[bit / 8] & ~(1 << (bit % 8))); }

/* The 16 levels of IQ4_NL / IQ4_XS and the doubled e2m1 values of MXFP4, restated from
 * ggml-common.h (kvalues_iq4nl, kvalues_fp4) to check the library's copies. */
static const int kv_iq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
static const int kv_fp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* Sign of element j of an 8-group from a 7-bit sign index: bits 0..6 as given, the 8th
 * element's sign makes the count of negative signs even. */
static double sign7(int s7, int j) {
    int par = 0;
    for (int b = 0; b < 7; b++) par ^= (s7 >> b) & 1;
    int bit = j < 7 ? (s7 >> j) & 1 : par;
    return bit ? -1.0 : 1.0;
}
static double sign8(int s8, int j) { return (s8 >> j) & 1 ? -1.0 : 1.0; }
static int grid8(uint64_t w, int j) { return (int)((w >> (8 * j)) & 0xff); }

/* Build one block of dt in blk (trial t selects grid indices for exhaustive coverage)
 * and the expected values x[i] (double) and magnitudes mag[i] (sum of |terms|). */
static void build(sks_dtype dt, int mode, int t, uint8_t *blk, double *x, double *mag) {
    const sks_dtype_info *info = sks_dtype_get(dt);
    for (uint32_t i = 0; i < info->block_bytes; i++) blk[i] = (uint8_t)rnd();
    int q[256];
    switch (dt) {
    case SKS_DT_Q4_0:
    case SKS_DT_IQ4_NL: {
        double d = put_f16(blk, mode);
        for (int i = 0; i < 32; i++) {
            q[i] = qv(mode, 0, 15);
            set_nib(blk + 2 + i % 16, i >= 16, q[i]);
            double v = dt == SKS_DT_Q4_0 ? q[i] - 8 : kv_iq4[q[i]];
            x[i] = d * v, mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_Q4_1: {
        double d = put_f16(blk, mode), m = put_f16(blk + 2, mode == MODE_ZERO ? MODE_NEG : mode);
        for (int i = 0; i < 32; i++) {
            q[i] = qv(mode, 0, 15);
            set_nib(blk + 4 + i % 16, i >= 16, q[i]);
            x[i] = d * q[i] + m, mag[i] = fabs(d * q[i]) + fabs(m);
        }
        break;
    }
    case SKS_DT_Q5_0:
    case SKS_DT_Q5_1: {
        int one = dt == SKS_DT_Q5_1;
        double d = put_f16(blk, mode), m = one ? put_f16(blk + 2, mode == MODE_ZERO ? MODE_NEG : mode) : 0;
        uint8_t *qh = blk + 2 + 2 * one, *qs = qh + 4;
        for (int i = 0; i < 32; i++) {
            q[i] = qv(mode, 0, 31);
            set_nib(qs + i % 16, i >= 16, q[i] & 15);
            set_bit(qh, i, q[i] >> 4);
            x[i] = one ? d * q[i] + m : d * (q[i] - 16), mag[i] = fabs(d * q[i]) + fabs(m) + fabs(16 * d);
        }
        break;
    }
    case SKS_DT_Q8_0:
    case SKS_DT_Q8_1: {
        double d = put_f16(blk, mode);
        int off = dt == SKS_DT_Q8_0 ? 2 : 4;
        for (int i = 0; i < 32; i++) {
            q[i] = mode == MODE_MAX ? (i % 2 ? 127 : -128) : rint_in(-128, 127);
            blk[off + i] = (uint8_t)(int8_t)q[i];
            x[i] = d * q[i], mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_Q8_K: {
        float d = mode == MODE_ZERO ? 0.0f : (float)rint_in(1, 1000) * 1e-4f * (mode == MODE_NEG ? -1.0f : 1.0f);
        memcpy(blk, &d, 4);
        for (int i = 0; i < 256; i++) {
            q[i] = mode == MODE_MAX ? (i % 2 ? 127 : -128) : rint_in(-128, 127);
            blk[4 + i] = (uint8_t)(int8_t)q[i];
            x[i] = (double)d * q[i], mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_Q2_K: {
        double d = put_f16(blk + 80, mode), dm = put_f16(blk + 82, mode == MODE_ZERO ? MODE_NEG : mode);
        int sc[16], mn[16];
        for (int s = 0; s < 16; s++) sc[s] = qv(mode, 0, 15), mn[s] = qv(mode, 0, 15), blk[s] = (uint8_t)(sc[s] | mn[s] << 4);
        for (int i = 0; i < 256; i++) {
            int h = i / 128, j = (i % 128) / 32, l = i % 32;
            q[i] = qv(mode, 0, 3);
            blk[16 + 32 * h + l] = (uint8_t)((blk[16 + 32 * h + l] & ~(3 << 2 * j)) | q[i] << 2 * j);
            x[i] = d * sc[i / 16] * q[i] - dm * mn[i / 16], mag[i] = fabs(d * sc[i / 16] * q[i]) + fabs(dm * mn[i / 16]);
        }
        break;
    }
    case SKS_DT_Q3_K: {
        double d = put_f16(blk + 108, mode);
        int sc[16];
        for (int s = 0; s < 16; s++) {
            sc[s] = mode == MODE_MAX ? (s % 2 ? 63 : 0) : rint_in(0, 63); /* signed -32 .. 31 */
            set_nib(blk + 96 + s % 8, s >= 8, sc[s] & 15);
            uint8_t *hb = blk + 104 + s % 4;
            *hb = (uint8_t)((*hb & ~(3 << 2 * (s / 4))) | (sc[s] >> 4) << 2 * (s / 4));
        }
        for (int i = 0; i < 256; i++) {
            int h = i / 128, j = (i % 128) / 32, l = i % 32;
            q[i] = mode == MODE_MAX ? (i % 2 ? 3 : -4) : rint_in(-4, 3);
            int low = q[i] >= 0 ? q[i] : q[i] + 4;
            blk[32 + 32 * h + l] = (uint8_t)((blk[32 + 32 * h + l] & ~(3 << 2 * j)) | low << 2 * j);
            set_bit(blk + l, 4 * h + j, q[i] >= 0);
            x[i] = d * (sc[i / 16] - 32) * q[i], mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_Q4_K:
    case SKS_DT_Q5_K: {
        int five = dt == SKS_DT_Q5_K;
        double d = put_f16(blk, mode), dm = put_f16(blk + 2, mode == MODE_ZERO ? MODE_NEG : mode);
        int sc[8], mn[8];
        uint8_t *s12 = blk + 4;
        for (int j = 0; j < 8; j++) {
            sc[j] = qv(mode, 0, 63), mn[j] = qv(mode, 0, 63);
            if (j < 4) {
                s12[j] = (uint8_t)((s12[j] & 0xc0) | sc[j]);
                s12[j + 4] = (uint8_t)((s12[j + 4] & 0xc0) | mn[j]);
            } else {
                s12[j + 4] = (uint8_t)((sc[j] & 15) | (mn[j] & 15) << 4);
                s12[j - 4] = (uint8_t)((s12[j - 4] & 0x3f) | (sc[j] >> 4) << 6);
                s12[j] = (uint8_t)((s12[j] & 0x3f) | (mn[j] >> 4) << 6);
            }
        }
        uint8_t *qs = blk + (five ? 48 : 16), *qh = blk + 16;
        for (int i = 0; i < 256; i++) {
            int g = i / 64, hi = (i / 32) & 1, l = i % 32;
            q[i] = qv(mode, 0, five ? 31 : 15);
            set_nib(qs + 32 * g + l, hi, q[i] & 15);
            if (five) set_bit(qh + l, 2 * g + hi, q[i] >> 4);
            x[i] = d * sc[i / 32] * q[i] - dm * mn[i / 32], mag[i] = fabs(d * sc[i / 32] * q[i]) + fabs(dm * mn[i / 32]);
        }
        break;
    }
    case SKS_DT_Q6_K: {
        double d = put_f16(blk + 208, mode);
        int sc[16];
        for (int s = 0; s < 16; s++) {
            sc[s] = mode == MODE_MAX ? (s % 2 ? 127 : -128) : rint_in(-128, 127);
            blk[192 + s] = (uint8_t)(int8_t)sc[s];
        }
        for (int i = 0; i < 256; i++) {
            int h = i / 128, k = (i % 128) / 32, l = i % 32;
            q[i] = mode == MODE_MAX ? (i % 2 ? 31 : -32) : rint_in(-32, 31);
            int u = q[i] + 32;
            set_nib(blk + 64 * h + 32 * (k & 1) + l, k >= 2, u & 15);
            uint8_t *hb = blk + 128 + 32 * h + l;
            *hb = (uint8_t)((*hb & ~(3 << 2 * k)) | (u >> 4) << 2 * k);
            x[i] = d * sc[i / 16] * q[i], mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_IQ4_XS: {
        double d = put_f16(blk, mode);
        uint16_t sh = 0;
        int ls[8];
        for (int ib = 0; ib < 8; ib++) {
            ls[ib] = mode == MODE_MAX ? (ib % 2 ? 63 : 0) : rint_in(0, 63);
            set_nib(blk + 4 + ib / 2, ib % 2, ls[ib] & 15);
            sh = (uint16_t)(sh | (ls[ib] >> 4) << 2 * ib);
        }
        blk[2] = (uint8_t)sh, blk[3] = (uint8_t)(sh >> 8);
        for (int i = 0; i < 256; i++) {
            int ib = i / 32, l = i % 32;
            q[i] = qv(mode, 0, 15);
            set_nib(blk + 8 + 16 * ib + l % 16, l >= 16, q[i]);
            x[i] = d * (ls[ib] - 32) * kv_iq4[q[i]], mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_MXFP4: {
        int e = mode == MODE_ZERO ? rint_in(0, 1) : mode == MODE_MAX ? 250 : rint_in(100, 150); /* 12 2^(e-128) < FLT_MAX */
        blk[0] = (uint8_t)e;
        for (int i = 0; i < 32; i++) {
            q[i] = qv(mode, 0, 15);
            set_nib(blk + 1 + i % 16, i >= 16, q[i]);
            x[i] = kv_fp4[q[i]] * ldexp(1.0, e - 128), mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_TQ2_0: {
        double d = put_f16(blk + 64, mode);
        for (int i = 0; i < 256; i++) {
            int c = i / 128, l = (i % 128) / 32, m = i % 32;
            q[i] = qv(mode, 0, 3);
            blk[32 * c + m] = (uint8_t)((blk[32 * c + m] & ~(3 << 2 * l)) | q[i] << 2 * l);
            x[i] = d * (q[i] - 1), mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_TQ1_0: {
        /* The definition is the decoder: digit n of byte b is ((b 3^n mod 256) 3) >> 8
         * (5 digits per qs byte, 4 per qh byte); element order: the 32 first qs bytes
         * digit-major, then the 16 others, then the 4 qh bytes. Every byte value is used. */
        double d = put_f16(blk + 52, mode);
        for (int k = 0; k < 52; k++) blk[k] = (uint8_t)(mode == MODE_MAX ? 255 - k : (t * 52 + k) & 0xff);
        static const int p3[5] = {1, 3, 9, 27, 81};
        for (int i = 0; i < 256; i++) {
            int byte, n;
            if (i < 160) byte = blk[i % 32], n = i / 32;
            else if (i < 240) byte = blk[32 + (i - 160) % 16], n = (i - 160) / 16;
            else byte = blk[48 + (i - 240) % 4], n = (i - 240) / 4;
            int digit = (((byte * p3[n]) & 0xff) * 3) >> 8;
            x[i] = d * (digit - 1), mag[i] = fabs(x[i]);
        }
        break;
    }
    case SKS_DT_IQ2_XXS:
    case SKS_DT_IQ2_XS:
    case SKS_DT_IQ2_S: {
        double d = put_f16(blk, mode);
        int ngrid = dt == SKS_DT_IQ2_XXS ? 256 : dt == SKS_DT_IQ2_XS ? 512 : 1024;
        const sks__iq_grid_set *G = &sks__iq_grids;
        const uint64_t *grid = dt == SKS_DT_IQ2_XXS ? G->iq2xxs : dt == SKS_DT_IQ2_XS ? G->iq2xs : G->iq2s;
        for (int ib = 0; ib < 8; ib++) {
            int s_lo = qv(mode, 0, 15), s_hi = qv(mode, 0, 15);
            uint32_t aux = (uint32_t)s_lo << 28;
            for (int l = 0; l < 4; l++) {
                int g = 32 * t + 4 * ib + l, idx = (g * 37) % ngrid; /* t sweeps every index */
                int sg = dt == SKS_DT_IQ2_S ? (g * 7 + t) & 255 : (g * 5 + t) & 127;
                int s = dt == SKS_DT_IQ2_XXS ? s_lo : (l < 2 ? s_lo : s_hi);
                if (dt == SKS_DT_IQ2_XXS) {
                    blk[2 + 8 * ib + l] = (uint8_t)idx;
                    aux |= (uint32_t)sg << (7 * l);
                } else if (dt == SKS_DT_IQ2_XS) {
                    uint16_t w = (uint16_t)(idx | sg << 9);
                    blk[2 + 2 * (4 * ib + l)] = (uint8_t)w, blk[3 + 2 * (4 * ib + l)] = (uint8_t)(w >> 8);
                } else {
                    blk[2 + 4 * ib + l] = (uint8_t)idx;
                    blk[66 + ib] = (uint8_t)((blk[66 + ib] & ~(3 << 2 * l)) | (idx >> 8) << 2 * l);
                    blk[34 + 4 * ib + l] = (uint8_t)sg;
                }
                for (int j = 0; j < 8; j++) {
                    int i = 32 * ib + 8 * l + j;
                    double sgn = dt == SKS_DT_IQ2_S ? sign8(sg, j) : sign7(sg, j);
                    x[i] = d * (0.5 + s) / 4 * grid8(grid[idx], j) * sgn, mag[i] = fabs(x[i]);
                }
            }
            if (dt == SKS_DT_IQ2_XXS) for (int k = 0; k < 4; k++) blk[2 + 8 * ib + 4 + k] = (uint8_t)(aux >> 8 * k);
            else blk[(dt == SKS_DT_IQ2_XS ? 66 : 74) + ib] = (uint8_t)(s_lo | s_hi << 4);
        }
        break;
    }
    case SKS_DT_IQ3_XXS:
    case SKS_DT_IQ3_S: {
        int s3 = dt == SKS_DT_IQ3_S;
        double d = put_f16(blk, mode);
        const uint32_t *grid = s3 ? sks__iq_grids.iq3s : sks__iq_grids.iq3xxs;
        int ngrid = s3 ? 512 : 256;
        for (int ib = 0; ib < 8; ib++) {
            int s = qv(mode, 0, 15);
            uint32_t aux = (uint32_t)s << 28;
            if (s3) set_nib(blk + 106 + ib / 2, ib % 2, s);
            for (int l = 0; l < 4; l++) {
                int g = 32 * t + 4 * ib + l, sg = s3 ? (g * 7 + t) & 255 : (g * 5 + t) & 127;
                if (s3) blk[74 + 4 * ib + l] = (uint8_t)sg;
                else aux |= (uint32_t)sg << (7 * l);
                for (int half = 0; half < 2; half++) {
                    int idx = ((2 * g + half) * 37) % ngrid;
                    blk[2 + 8 * ib + 2 * l + half] = (uint8_t)idx;
                    if (s3) set_bit(blk + 66 + ib, 2 * l + half, idx >> 8);
                    for (int j = 0; j < 4; j++) {
                        int i = 32 * ib + 8 * l + 4 * half + j;
                        double sgn = s3 ? sign8(sg, 4 * half + j) : sign7(sg, 4 * half + j);
                        double db = s3 ? d * (1 + 2 * s) : d * (0.5 + s) / 2;
                        x[i] = db * (double)((grid[idx] >> (8 * j)) & 0xff) * sgn, mag[i] = fabs(x[i]);
                    }
                }
            }
            if (!s3) for (int k = 0; k < 4; k++) blk[66 + 4 * ib + k] = (uint8_t)(aux >> 8 * k);
        }
        break;
    }
    case SKS_DT_IQ1_S:
    case SKS_DT_IQ1_M: {
        int m1 = dt == SKS_DT_IQ1_M;
        double d;
        if (m1) {
            /* d lives in the top nibbles of the 4 scale words */
            uint8_t tmp[2];
            d = put_f16(tmp, mode);
            uint16_t h = (uint16_t)(tmp[0] | tmp[1] << 8);
            for (int k = 0; k < 4; k++) set_nib(blk + 48 + 2 * k + 1, 1, (h >> 4 * k) & 15);
        } else {
            d = put_f16(blk, mode);
        }
        for (int ib = 0; ib < 8; ib++) {
            int sa = qv(mode, 0, 7), sb = m1 ? qv(mode, 0, 7) : sa;
            uint16_t qh16 = 0;
            if (m1) {
                uint8_t *w = blk + 48 + 2 * (ib / 2);
                uint16_t word = (uint16_t)(w[0] | w[1] << 8);
                int sh = 6 * (ib % 2);
                word = (uint16_t)((word & ~(0x3f << sh)) | (sa | sb << 3) << sh);
                w[0] = (uint8_t)word, w[1] = (uint8_t)(word >> 8);
            }
            int dneg_s = mode == MODE_NEG ? 1 : rint_in(0, 1);
            for (int l = 0; l < 4; l++) {
                int g = 32 * t + 4 * ib + l, idx = (g * 37) % 2048;
                int dneg = m1 ? (g + t) & 1 : dneg_s;
                if (m1) {
                    blk[4 * ib + l] = (uint8_t)idx;
                    uint8_t *hb = blk + 32 + 2 * ib + l / 2;
                    set_nib(hb, l % 2, (idx >> 8) | dneg << 3);
                } else {
                    blk[2 + 4 * ib + l] = (uint8_t)idx;
                    qh16 = (uint16_t)(qh16 | (idx >> 8) << 3 * l);
                }
                int s = l < 2 ? sa : sb;
                for (int j = 0; j < 8; j++) {
                    int i = 32 * ib + 8 * l + j;
                    double gv = (double)(int8_t)grid8(sks__iq_grids.iq1s[idx], j);
                    x[i] = d * (2 * s + 1) * (gv + (dneg ? -0.125 : 0.125)), mag[i] = fabs(x[i]) + fabs(d * (2 * s + 1));
                }
            }
            if (!m1) {
                qh16 = (uint16_t)(qh16 | sa << 12 | dneg_s << 15);
                blk[34 + 2 * ib] = (uint8_t)qh16, blk[35 + 2 * ib] = (uint8_t)(qh16 >> 8);
            }
        }
        break;
    }
    default: fail_msg("no builder for %s", sks_dtype_name(dt));
    }
}

/* Trials per type: enough for the grid sweeps (t covers 32 groups of 8 per block). */
static int n_trials(sks_dtype dt) {
    switch (dt) {
    case SKS_DT_IQ1_S: case SKS_DT_IQ1_M: return 2048 / 32 + 8;
    case SKS_DT_IQ2_S: return 1024 / 32 + 8;
    case SKS_DT_IQ2_XS: case SKS_DT_IQ3_S: return 512 / 32 + 8;
    case SKS_DT_TQ1_0: return 8;
    default: return 24;
    }
}

static void check_type(sks_dtype dt) {
    const sks_dtype_info *info = sks_dtype_get(dt);
    assert_non_null(info->to_f32);
    uint8_t blk[400];
    double x[256], mag[256];
    float y[256], yr[256];
    int nt = n_trials(dt);
    for (int t = 0; t < nt; t++) {
        int mode = t % N_MODES;
        build(dt, mode, t, blk, x, mag);
        info->to_f32(blk, y, info->block);
        info->to_f32_ref(blk, yr, info->block);
        for (uint32_t i = 0; i < info->block; i++) {
            double tol = 8.0 * FLT_EPSILON * mag[i] + 1e-44;
            if (fabs((double)y[i] - x[i]) > tol || fabs((double)yr[i] - x[i]) > tol)
                fail_msg("%s trial %d (mode %d) element %u: kernel %.9g ref %.9g, the definition gives %.9g", info->name, t,
                         mode, i, (double)y[i], (double)yr[i], x[i]);
        }
    }
}

#define TYPE_TEST(name, dt) \
    static void test_##name(void **state) { (void)state; check_type(dt); }
TYPE_TEST(q4_0, SKS_DT_Q4_0)
TYPE_TEST(q4_1, SKS_DT_Q4_1)
TYPE_TEST(q5_0, SKS_DT_Q5_0)
TYPE_TEST(q5_1, SKS_DT_Q5_1)
TYPE_TEST(q8_0, SKS_DT_Q8_0)
TYPE_TEST(q8_1, SKS_DT_Q8_1)
TYPE_TEST(q2_k, SKS_DT_Q2_K)
TYPE_TEST(q3_k, SKS_DT_Q3_K)
TYPE_TEST(q4_k, SKS_DT_Q4_K)
TYPE_TEST(q5_k, SKS_DT_Q5_K)
TYPE_TEST(q6_k, SKS_DT_Q6_K)
TYPE_TEST(q8_k, SKS_DT_Q8_K)
TYPE_TEST(iq4_nl, SKS_DT_IQ4_NL)
TYPE_TEST(iq4_xs, SKS_DT_IQ4_XS)
TYPE_TEST(tq1_0, SKS_DT_TQ1_0)
TYPE_TEST(tq2_0, SKS_DT_TQ2_0)
TYPE_TEST(mxfp4, SKS_DT_MXFP4)
TYPE_TEST(iq2_xxs, SKS_DT_IQ2_XXS)
TYPE_TEST(iq2_xs, SKS_DT_IQ2_XS)
TYPE_TEST(iq2_s, SKS_DT_IQ2_S)
TYPE_TEST(iq3_xxs, SKS_DT_IQ3_XXS)
TYPE_TEST(iq3_s, SKS_DT_IQ3_S)
TYPE_TEST(iq1_s, SKS_DT_IQ1_S)
TYPE_TEST(iq1_m, SKS_DT_IQ1_M)

/* Kernel and _ref twin bitwise equal on random bytes (any bytes are a valid block),
 * over several blocks so block strides are exercised. NaN (from NaN or inf scales) is
 * compared as NaN: IEEE leaves the sign and payload of a NaN product to the hardware and
 * the compiler may turn "times -1" into a sign flip in one twin and not the other. */
static int same_value(float a, float b) { return isnan(a) ? isnan(b) : !memcmp(&a, &b, 4); }

static void test_kernel_equals_ref(void **state) {
    (void)state;
    enum { NB = 16 };
    uint8_t *in = malloc(NB * 292);
    float *a = malloc(NB * 256 * 4), *b = malloc(NB * 256 * 4);
    for (int d = 0; d < SKS_DT_COUNT; d++) {
        const sks_dtype_info *info = sks_dtype_get((sks_dtype)d);
        if (!info->to_f32) continue;
        size_t n = NB * (size_t)(info->block > 1 ? info->block : 64);
        for (int rep = 0; rep < 20; rep++) {
            for (size_t i = 0; i < NB * 292; i++) in[i] = (uint8_t)rnd();
            info->to_f32(in, a, n);
            info->to_f32_ref(in, b, n);
            for (size_t i = 0; i < n; i++)
                if (!same_value(a[i], b[i])) fail_msg("%s element %zu: %.9g vs ref %.9g", info->name, i, (double)a[i], (double)b[i]);
        }
    }
    free(in);
    free(a);
    free(b);
}

/* f16: the dispatched kernel (F16C where the CPU has it) and the portable loop that
 * CPUs without F16C run both equal the scalar twin on all 65536 bit patterns, and on
 * lengths that leave a tail after the 32- and 8-wide steps (from an odd offset). */
static void test_f16_paths_exhaustive(void **state) {
    (void)state;
    uint16_t *in = malloc(65536 * 2);
    float *a = malloc(65536 * 4), *b = malloc(65536 * 4), *c = malloc(65536 * 4);
    for (int i = 0; i < 65536; i++) in[i] = (uint16_t)(i * 40503u); /* a permutation of all patterns */
    sks__f16_to_f32_ref(in, b, 65536);
    sks__f16_to_f32(in, a, 65536);
    sks__f16_to_f32_portable_only(in, c, 65536);
    for (int i = 0; i < 65536; i++) {
        if (!same_value(a[i], b[i])) fail_msg("f16 kernel, pattern 0x%04x: %.9g vs ref %.9g", in[i], (double)a[i], (double)b[i]);
        if (!same_value(c[i], b[i])) fail_msg("f16 portable, pattern 0x%04x: %.9g vs ref %.9g", in[i], (double)c[i], (double)b[i]);
    }
    static const size_t lens[] = {1, 7, 8, 9, 31, 33, 47, 1000};
    for (size_t k = 0; k < sizeof lens / sizeof *lens; k++) {
        for (size_t i = 0; i < 1100; i++) a[i] = -1.0f;
        sks__f16_to_f32(in + 3, a, lens[k]);
        for (size_t i = 0; i < lens[k]; i++) assert_true(same_value(a[i], b[i + 3]));
        assert_true(a[lens[k]] == -1.0f); /* nothing written past n */
    }
    free(in);
    free(a);
    free(b);
    free(c);
}

/* The table: ids are ggml's, sizes match the block layouts, bpw = 8 bytes / block,
 * names and ids round-trip. */
static void test_table(void **state) {
    (void)state;
    static const struct { sks_dtype dt; const char *name; int id; unsigned blk, bytes; } want[] = {
        {SKS_DT_F32, "F32", 0, 1, 4},         {SKS_DT_F16, "F16", 1, 1, 2},         {SKS_DT_Q4_0, "Q4_0", 2, 32, 18},
        {SKS_DT_Q4_1, "Q4_1", 3, 32, 20},     {SKS_DT_Q5_0, "Q5_0", 6, 32, 22},     {SKS_DT_Q5_1, "Q5_1", 7, 32, 24},
        {SKS_DT_Q8_0, "Q8_0", 8, 32, 34},     {SKS_DT_Q8_1, "Q8_1", 9, 32, 36},     {SKS_DT_Q2_K, "Q2_K", 10, 256, 84},
        {SKS_DT_Q3_K, "Q3_K", 11, 256, 110},  {SKS_DT_Q4_K, "Q4_K", 12, 256, 144},  {SKS_DT_Q5_K, "Q5_K", 13, 256, 176},
        {SKS_DT_Q6_K, "Q6_K", 14, 256, 210},  {SKS_DT_Q8_K, "Q8_K", 15, 256, 292},  {SKS_DT_IQ2_XXS, "IQ2_XXS", 16, 256, 66},
        {SKS_DT_IQ2_XS, "IQ2_XS", 17, 256, 74}, {SKS_DT_IQ3_XXS, "IQ3_XXS", 18, 256, 98}, {SKS_DT_IQ1_S, "IQ1_S", 19, 256, 50},
        {SKS_DT_IQ4_NL, "IQ4_NL", 20, 32, 18}, {SKS_DT_IQ3_S, "IQ3_S", 21, 256, 110}, {SKS_DT_IQ2_S, "IQ2_S", 22, 256, 82},
        {SKS_DT_IQ4_XS, "IQ4_XS", 23, 256, 136}, {SKS_DT_IQ1_M, "IQ1_M", 29, 256, 56}, {SKS_DT_BF16, "BF16", 30, 1, 2},
        {SKS_DT_TQ1_0, "TQ1_0", 34, 256, 54}, {SKS_DT_TQ2_0, "TQ2_0", 35, 256, 66}, {SKS_DT_MXFP4, "MXFP4", 39, 32, 17},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const sks_dtype_info *r = sks_dtype_get(want[k].dt);
        assert_string_equal(r->name, want[k].name);
        assert_int_equal(r->ggml_type, want[k].id);
        assert_int_equal(r->block, want[k].blk);
        assert_int_equal(r->block_bytes, want[k].bytes);
        assert_true(fabs(r->bpw - 8.0 * want[k].bytes / want[k].blk) < 1e-12);
        assert_int_equal(sks_dtype_from_ggml((uint32_t)want[k].id), want[k].dt);
        assert_non_null(r->to_f32);
    }
    assert_int_equal(sks_dtype_from_name("q4_k"), SKS_DT_Q4_K);
    assert_int_equal(sks_dtype_from_name("Q4_K_M"), -1);
    assert_int_equal(sks_dtype_from_ggml(4), -1); /* Q4_2: removed from ggml */
    assert_int_equal(sks_dtype_from_ggml(200), -1);
    assert_false(sks_dtype_convertible(SKS_DT_I32));
    assert_null(sks_dtype_get(SKS_DT_COUNT));
    uint64_t nb;
    assert_int_equal(sks_dtype_nbytes(SKS_DT_Q4_K, 255, &nb), SKS_ESHAPE);
    assert_int_equal(sks_dtype_nbytes(SKS_DT_Q4_K, 512, &nb), 0);
    assert_int_equal(nb, 288);
}

/* The transcribed grids: sizes, value sets, distinct entries, and the first and last
 * entries of each table as printed in ggml-common.h. kvalues copies equal the spec. */
static void test_grids(void **state) {
    (void)state;
    for (int i = 0; i < 16; i++) {
        assert_int_equal(sks__kvalues_iq4nl[i], kv_iq4[i]);
        assert_int_equal(sks__kvalues_fp4[i], kv_fp4[i]);
    }
    const sks__iq_grid_set *G = &sks__iq_grids;
    struct { const uint64_t *g; int n; } g2[] = {{G->iq2xxs, 256}, {G->iq2xs, 512}, {G->iq2s, 1024}};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < g2[k].n; i++) {
            for (int j = 0; j < 8; j++) {
                int v = grid8(g2[k].g[i], j);
                assert_true(v == 8 || v == 25 || v == 43);
            }
            for (int i2 = 0; i2 < i; i2++) assert_true(g2[k].g[i] != g2[k].g[i2]);
        }
    struct { const uint32_t *g; int n; } g3[] = {{G->iq3xxs, 256}, {G->iq3s, 512}};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < g3[k].n; i++) {
            for (int j = 0; j < 4; j++) {
                int v = (int)((g3[k].g[i] >> (8 * j)) & 0xff);
                assert_true(v >= 1 && v <= 62 && (k == 1 ? v % 2 == 1 : v % 4 == 0 || v == 62));
            }
            for (int i2 = 0; i2 < i; i2++) assert_true(g3[k].g[i] != g3[k].g[i2]);
        }
    for (int i = 0; i < 2048; i++)
        for (int j = 0; j < 8; j++) {
            int v = (int8_t)grid8(G->iq1s[i], j);
            assert_true(v >= -1 && v <= 1);
        }
    /* first and last: the set is laid out positionally, so a grid one row short would
     * shift the rest */
    assert_true(G->iq2xxs[0] == 0x0808080808080808ull && G->iq2xxs[255] == 0x2b2b2b1908081908ull);
    assert_true(G->iq2xs[0] == 0x0808080808080808ull && G->iq2xs[511] == 0x2b2b2b2b2b2b2b2bull);
    assert_true(G->iq2s[0] == 0x0808080808080808ull && G->iq2s[1023] == 0x2b2b2b2b2b2b2b2bull);
    assert_true(G->iq3xxs[0] == 0x04040404u && G->iq3xxs[255] == 0x3e341c04u);
    assert_true(G->iq3s[0] == 0x01010101u && G->iq3s[511] == 0x0f0f0101u);
    assert_true(G->iq1s[0] == 0xffffffffffffffffull && G->iq1s[2047] == 0x0101010101010101ull);
    for (unsigned s = 0; s < 128; s++) {
        int bits = __builtin_popcount(sks__ksigns(s));
        assert_int_equal(bits % 2, 0);
        assert_int_equal(sks__ksigns(s) & 127, s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),   cmocka_unit_test(test_grids),   cmocka_unit_test(test_kernel_equals_ref), cmocka_unit_test(test_f16_paths_exhaustive),
        cmocka_unit_test(test_q4_0),    cmocka_unit_test(test_q4_1),    cmocka_unit_test(test_q5_0),
        cmocka_unit_test(test_q5_1),    cmocka_unit_test(test_q8_0),    cmocka_unit_test(test_q8_1),
        cmocka_unit_test(test_q2_k),    cmocka_unit_test(test_q3_k),    cmocka_unit_test(test_q4_k),
        cmocka_unit_test(test_q5_k),    cmocka_unit_test(test_q6_k),    cmocka_unit_test(test_q8_k),
        cmocka_unit_test(test_iq4_nl),  cmocka_unit_test(test_iq4_xs),  cmocka_unit_test(test_tq1_0),
        cmocka_unit_test(test_tq2_0),   cmocka_unit_test(test_mxfp4),   cmocka_unit_test(test_iq2_xxs),
        cmocka_unit_test(test_iq2_xs),  cmocka_unit_test(test_iq2_s),   cmocka_unit_test(test_iq3_xxs),
        cmocka_unit_test(test_iq3_s),   cmocka_unit_test(test_iq1_s),   cmocka_unit_test(test_iq1_m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
