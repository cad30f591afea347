/* bench-dequant.c - dequantization speed of every type in the dtype table.
 *
 * For each convertible type: a buffer of --n elements (default 2^22) of random blocks
 * (random bytes with every f16/f32 scale field replaced by a moderate value, so that no
 * denormal or NaN arithmetic distorts the timing) is converted to f32 --reps times with
 * the table's kernel and with its scalar _ref twin. Reported: GB/s of f32 output (4 n
 * bytes per conversion, best of the repetitions) and the ratio to memcpy of the same
 * output size measured in the same run (the machine's memory yardstick).
 *
 * Usage: bench-dequant [--n N] [--reps R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_util.h"
#include "loaders/sks_model.h"

static uint64_t rng = 88172645463325252ull;
static uint8_t rnd8(void) { return (uint8_t)(bench_xorshift(&rng) >> 24); }

static double best_gbs(sks_to_f32_fn fn, const void *in, float *out, size_t n, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = sks_now();
        fn(in, out, n);
        t = sks_now() - t;
        if (t < best) best = t;
    }
    return 4.0 * (double)n / best / 1e9;
}

static void memcpy_fn(const void *in, float *out, size_t n) { memcpy(out, in, n * 4); }

int main(int argc, char **argv) {
    size_t n = (size_t)1 << 22;
    int reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--n")) n = (size_t)strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    n = (n + 255) / 256 * 256;
    float *out = malloc(n * 4), *src = malloc(n * 4);
    uint8_t *in = malloc(n * 4);
    if (!out || !src || !in) return 1;
    for (size_t i = 0; i < n; i++) src[i] = (float)(i % 97);
    double mc = best_gbs(memcpy_fn, src, out, n, reps);
    printf("n %zu elements, best of %d; memcpy of the f32 output: %.2f GB/s\n", n, reps, mc);
    printf("%-8s %6s %10s %10s %8s %9s\n", "type", "bpw", "GB/s", "ref GB/s", "speedup", "/memcpy");
    for (int d = 0; d < SKS_DT_COUNT; d++) {
        const sks_dtype_info *t = sks_dtype_get((sks_dtype)d);
        if (!t->to_f32 || d == SKS_DT_F32) continue;
        uint64_t nb = 0;
        if (sks_dtype_nbytes((sks_dtype)d, n, &nb)) continue;
        for (uint64_t i = 0; i < nb; i++) in[i] = rnd8();
        /* 0x3c00 = 1.0 in f16; Q8_K's f32 scale 1.0 = 0x3f800000 */
        for (uint64_t b = 0; b < nb; b += t->block_bytes) {
            if (d == SKS_DT_Q8_K) {
                static const uint8_t one[4] = {0, 0, 0x80, 0x3f};
                memcpy(in + b, one, 4);
            } else if (t->block > 1) {
                /* f16 scale fields sit at the start (Q4_0 .. Q8_1, IQ*) or at the end
                 * (Q2_K .. Q6_K, TQ*): set both ends to moderate halves */
                in[b + 1] = 0x2c;
                in[b + t->block_bytes - 1] = 0x2c;
                if (t->block == 32 || d == SKS_DT_Q4_K || d == SKS_DT_Q5_K || d == SKS_DT_Q2_K) in[b + 3] = 0x2c;
            } else {
                in[b + 1] &= 0x3f; /* plain f16/bf16: moderate exponents */
            }
        }
        double v = best_gbs(t->to_f32, in, out, n, reps), r = best_gbs(t->to_f32_ref, in, out, n, reps);
        printf("%-8s %6.3f %10.2f %10.2f %8.2f %9.2f\n", t->name, t->bpw, v, r, v / r, v / mc);
    }
    free(out);
    free(src);
    free(in);
    return 0;
}
