/* matmul_kernel.h - the product Y = X W^T of sks_matmul_wt over weights stored in another
 * type than f32, without OpenBLAS: W is converted into packed f32 panels and multiplied
 * by a register-blocked AVX2 + FMA kernel that reads X where it is (internal to
 * analysis/; forward.c chooses between this and the convert-then-sgemm path).
 *
 * Why: OpenBLAS has no GEMM with f16 (or quantized) operands, so the other path converts
 * a block of W rows to f32 and calls sgemm on it, which packs all T rows of X again for
 * every block and packs the converted block a second time. Here each (NB, KC) panel of W
 * is converted and packed once, straight from its stored encoding, and X is never copied.
 *
 *   for each panel of rows [o0, o0+NB) and columns [k0, k0+KC) of W:
 *     P = W[o0:o0+NB, k0:k0+KC] as f32, in slivers of 16 rows stored column by column
 *     for each 6 rows t of X, for each sliver s of P:
 *       Y[t:t+6, o0+16s : o0+16s+16] (+)= X[t:t+6, k0:k0+KC] P_s
 * Each Y element is one f32 FMA chain over k within a panel, panels added in order of k0:
 * the result differs from sgemm's by the rounding of another summation order only.
 */
#ifndef SKS_MATMUL_KERNEL_H
#define SKS_MATMUL_KERNEL_H

#include "loaders/sks_model.h"

#include <stddef.h>
#include <stdint.h>

/* Columns of W per panel: a multiple of every block size (1, 32, 256). Each panel adds
 * its products into Y once, so fewer, longer panels cost less Y traffic; the six X rows
 * of a tile (6 KC floats, 12 KiB) stay in L1. */
#define SKS__MMK_KC 512
/* Rows of W per panel (at most; fewer when the workspace is smaller), a multiple of 16:
 * the panel, NB x KC floats (256 KiB), stays in a core's L2 while all T rows pass. */
#define SKS__MMK_NB 128

/* 1 when sks__mmk_rows takes W for T rows of X with a workspace of ws_floats floats: the
 * CPU has AVX2, FMA and F16C (checked at run time), the kernel is enabled, W is a 2-D
 * row-major tensor of a converted type other than f32, and ws holds a panel of 16 rows
 * with its (T, 16) sums and 8 staged rows: 16 (kc + T) + 8 kc floats, kc = min(KC, in). */
int sks__mmk_takes(const sks_tensor *W, int T, size_t ws_floats);

/* Rows [r0, r1) of Y (T, out) = X (T, in) W^T, W (out, in); X, Y row-major with row
 * strides in and out. ws: ws_floats floats (panel, its sums, staging). Conversion errors
 * (a non-finite weight) come back as from sks_tensor_rows_f32. Only when
 * sks__mmk_takes. */
int sks__mmk_rows(const sks_tensor *W, const float *X, int T, float *Y, int64_t r0, int64_t r1, float *ws,
                  size_t ws_floats);

/* Tests: 0 sends every product to the convert-then-sgemm path, 1 (the default) lets the
 * CPU's features decide. Returns the previous setting. Not thread-safe: set it between
 * passes. */
int sks__mmk_set_enabled(int on);

#endif
