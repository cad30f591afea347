/* bench_util.h - the clocks and random numbers the benchmarks share (header only: the
 * build makes one program of each bench/bench-*.c). */
#ifndef SKS_BENCH_UTIL_H
#define SKS_BENCH_UTIL_H

#include <stdint.h>
#include <time.h>

/* CPU seconds of the whole process (all threads): with one thread, the work's own time,
 * whatever else the machine runs meanwhile. */
static inline double bench_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* xorshift64 (13, 7, 17): the next state of *s, which must not be 0 */
static inline uint64_t bench_xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* splitmix64: the next value after advancing *s */
static inline uint64_t bench_splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* approximately N(0, 1): the sum of four 16-bit uniforms of one splitmix value, centred
 * and scaled to unit variance (fast; the benchmarks need realistic magnitudes, not exact
 * Gaussian tails) */
static inline float bench_normalish(uint64_t *s) {
    uint64_t z = bench_splitmix(s);
    double sum = 0.0;
    for (int i = 0; i < 4; i++) sum += (double)((z >> (16 * i)) & 0xffff) * (1.0 / 65536.0);
    return (float)((sum - 2.0) * 1.7320508075688772);
}

#endif
